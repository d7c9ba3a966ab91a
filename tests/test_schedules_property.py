"""Hypothesis: every schedule is finite from count 0 to the int32 maximum, stays in its
documented bounds, evaluates the same on arrays as on scalars, and the wrappers keep
their promises (continuity of warm-up, periodicity of cyclic schedules without decay)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gradtx import schedules as S

INT32_MAX = np.iinfo(np.int32).max
values = st.floats(1e-4, 10.0)
lengths = st.integers(1, 10_000)
fractions = st.floats(0.05, 0.95)
decays = st.floats(0.05, 1.0)
counts = st.lists(st.integers(0, INT32_MAX), min_size=1, max_size=8)


def _bounded(lo, hi):
    return lambda schedule: (schedule, min(lo, hi), max(lo, hi))


def schedule_cases(lengths, offsets, cooldowns):
    """(schedule, lower bound, upper bound) of every kind, lengths and start counts (milestones,
    a cool-down's start) drawn from these, and a one-cycle's cool-down from ``cooldowns``."""
    return st.one_of(
        st.builds(lambda v: (S.constant(v), v, v), values),
        st.builds(
            lambda a, b, n: (S.linear(a, b, n), min(a, b), max(a, b)), values, values, lengths
        ),
        st.builds(
            lambda v, n, f, m: (S.step_decay(v, n, f, m), min(m, v), max(m, v)),
            values,
            lengths,
            decays,
            st.floats(0, 1e-3),
        ),
        st.builds(
            lambda v, ms, f: (S.multistep_decay(v, sorted(set(ms)), f), 0.0, v),
            values,
            st.lists(offsets, min_size=1, max_size=5),
            decays,
        ),
        st.builds(
            lambda v, r, n, s: (S.geometric_decay(v, r, n, s), 0.0, v),
            values,
            st.floats(0.5, 1.0),
            lengths,
            st.booleans(),
        ),
        st.builds(
            lambda a, b, p, n: (S.polynomial_decay(a, b, p, n), min(a, b), max(a, b)),
            values,
            values,
            st.floats(0.5, 3.0),
            lengths,
        ),
        st.builds(
            lambda a, n, b: (S.cosine_decay(a, n, b), min(a, b), max(a, b)), values, lengths, values
        ),
        st.builds(
            lambda a, b, n, f: (S.triangular(a, b, n, f), min(a, b), max(a, b)),
            values,
            values,
            lengths,
            fractions,
        ),
        st.builds(lambda v, w: (S.inverse_sqrt(v, w), 0.0, v), values, lengths),
        st.builds(
            lambda a, b, n, ld, md, f: (
                S.cyclic(S.shapes.triangular(f), n, a, b, ld, md),
                0.0,
                max(a, b),
            ),
            values,
            values,
            lengths,
            st.sampled_from([0.5, 1, 1.5, 2, 3]),
            decays,
            fractions,
        ),
        st.builds(
            lambda a, b, n, m, md: (S.cosine_restarts(a, n, m, b, md), 0.0, max(a, b)),
            values,
            values,
            lengths,
            st.integers(1, 3),
            decays,
        ),
        st.builds(
            lambda a, b, u, d, mode, g: (S.cyclic_lr(a, b, u, d, mode, g), min(a, b), max(a, b)),
            values,
            values,
            lengths,
            lengths,
            st.sampled_from(["triangular", "triangular2", "exp_range"]),
            decays,
        ),
        st.builds(
            lambda a, b, n, c, e: (
                S.one_cycle(a, b, n, c, e if c else None),
                min(a, b, e),
                max(a, b, e),
            ),
            values,
            values,
            lengths,
            cooldowns,
            values,
        ),
        st.builds(
            lambda a, w, s0: (S.warmup(S.cosine_decay(a, 1000), w, s0), 0.0, max(a, s0)),
            values,
            lengths,
            values,
        ),
        st.builds(
            lambda a, s, n, e: (S.cooldown(S.constant(a), s, n, e), min(a, e), max(a, e)),
            values,
            offsets,
            lengths,
            values,
        ),
        st.builds(
            lambda a, b, n: (S.join([S.constant(a), S.linear(a, b, n)], [n]), min(a, b), max(a, b)),
            values,
            values,
            lengths,
        ),
    )


cases = schedule_cases(lengths, st.integers(0, 10**6), st.integers(0, 1000))


@settings(max_examples=150, deadline=None)
@given(case=cases, ts=counts)
def test_finite_bounded_and_array_equals_scalar(case, ts):
    schedule, lo, hi = case
    ts = [0, INT32_MAX, *ts]
    batch = np.asarray(schedule(jnp.asarray(ts, jnp.int32)))
    assert batch.dtype == np.float32 and batch.shape == (len(ts),)
    assert np.all(np.isfinite(batch))
    slack = 1e-5 * max(abs(lo), abs(hi), 1.0)
    assert np.all(batch >= lo - slack) and np.all(batch <= hi + slack)
    for t, v in zip(ts, batch, strict=True):
        np.testing.assert_allclose(
            schedule(t), v, rtol=1e-5, atol=1e-7
        )  # XLA pow/cos differ by ulps


# Lengths and start counts beyond int32 as well: an int32 count never reaches them.
long_lengths = st.one_of(lengths, st.integers(INT32_MAX - 2, 10**13))
long_cases = schedule_cases(long_lengths, st.integers(0, 10**13), long_lengths)


@settings(max_examples=150, deadline=None)
@given(case=long_cases, ts=counts)
def test_lengths_beyond_int32_are_finite_bounded_and_array_equals_scalar(case, ts):
    test_finite_bounded_and_array_equals_scalar.hypothesis.inner_test(case, ts)


@settings(max_examples=100, deadline=None)
@given(case=st.one_of(cases, long_cases), ts=st.lists(st.integers(0, 2**24), min_size=1))
def test_float_counts_below_2_24_equal_int32_counts(case, ts):
    """A float count takes the float32 path; below 2**24 every count is a float32, and its
    integer steps (floor division, boundaries) must be exactly those of the int32 count."""
    schedule, _, _ = case
    np.testing.assert_array_equal(
        schedule(jnp.asarray(ts, jnp.float32)), schedule(jnp.asarray(ts, jnp.int32))
    )


@settings(max_examples=60, deadline=None)
@given(peak=values, length=lengths, start=values, after=st.integers(0, 10**6))
def test_warmup_is_continuous_and_then_follows_the_schedule(peak, length, start, after):
    inner = S.cosine_decay(peak, 5000)
    wrapped = S.warmup(inner, length, start)
    np.testing.assert_allclose(wrapped(0), start, rtol=1e-6)
    np.testing.assert_allclose(wrapped(length), inner(0), rtol=1e-6)
    step = abs(float(inner(0)) - start) / length
    assert abs(float(wrapped(length - 1)) - float(inner(0))) <= step * (1 + 1e-4) + 1e-6
    np.testing.assert_allclose(wrapped(length + after), inner(after), rtol=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    lo=values,
    hi=values,
    length=lengths,
    frac=fractions,
    t=st.integers(0, INT32_MAX // 2),
    k=st.integers(1, 1000),
)
def test_cyclic_without_decay_is_periodic(lo, hi, length, frac, t, k):
    schedule = S.cyclic(S.shapes.triangular(frac), length, lo, hi)
    np.testing.assert_allclose(schedule(t), schedule(t + k * length), rtol=1e-6, atol=1e-6)
    cosine = S.cosine_restarts(hi, length, 1, lo)
    np.testing.assert_allclose(cosine(t), cosine(t + k * length), rtol=1e-6, atol=1e-6)
