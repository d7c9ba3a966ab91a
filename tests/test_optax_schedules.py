"""optax's schedules under optax's names: the same calls give optax's numbers.

Every case below is one call written once and made on both libraries (``lib`` is
``optax`` or ``gradtx``), positionally or by keyword as optax's docs and tests
write it, so the positional order, the keyword names and the defaults are checked
along with the values at every count from 0 to 10,000.
"""

from __future__ import annotations

import inspect
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

import gradtx
from gradtx import schedules as S
from gradtx.schedules import optax_schedules

INT32_MAX = int(np.iinfo(np.int32).max)
COUNTS = np.arange(10_001, dtype=np.int32)


def sgdr_cycles(lrs):  # optax's SGDRTest
    return [
        {"decay_steps": int(s), "peak_value": lr, "init_value": 0, "end_value": 0.0,
         "warmup_steps": 500}
        for s, lr in zip([2e3, 3e3, 5e3], lrs, strict=True)
    ]  # fmt: skip


# (id, the call on a library). Each schedule has several settings, optax's examples among them.
CASES = [
    ("constant", lambda lib: lib.constant_schedule(5)),
    ("constant-kw", lambda lib: lib.constant_schedule(value=0.3)),
    ("linear-doc", lambda lib: lib.linear_schedule(
        init_value=1.0, end_value=0.01, transition_steps=100)),
    ("linear-begin", lambda lib: lib.linear_schedule(1e-3, 0.0, 7000, 500)),
    ("linear-rising", lambda lib: lib.linear_schedule(0.0, 1.0, 10_000)),
    ("linear-zero-steps", lambda lib: lib.linear_schedule(0.5, 1.0, 0)),
    ("polynomial-doc", lambda lib: lib.polynomial_schedule(
        init_value=1.0, end_value=0.01, transition_steps=100, power=2)),
    ("polynomial-doc-begin", lambda lib: lib.polynomial_schedule(
        init_value=1.0, end_value=0.01, transition_steps=100, transition_begin=5, power=2)),
    ("polynomial-sqrt", lambda lib: lib.polynomial_schedule(1.0, 0.0, 0.5, 9999, 3)),
    ("polynomial-test", lambda lib: lib.polynomial_schedule(
        init_value=30.0, end_value=10.0, power=2, transition_steps=10, transition_begin=4)),
    ("polynomial-zero-steps", lambda lib: lib.polynomial_schedule(
        init_value=10.0, end_value=20.0, power=1, transition_steps=0)),
    ("exponential-test", lambda lib: lib.exponential_decay(
        init_value=32.0, transition_steps=1, decay_rate=0.5)),
    ("exponential-0.999", lambda lib: lib.exponential_decay(1.0, 1, 0.999)),
    ("exponential-staircase", lambda lib: lib.exponential_decay(0.1, 1000, 0.96, staircase=True)),
    ("exponential-begin-end", lambda lib: lib.exponential_decay(
        init_value=1.0, transition_steps=37, decay_rate=0.9, transition_begin=250,
        end_value=1e-3)),
    ("exponential-growing-capped", lambda lib: lib.exponential_decay(
        1e-3, 100, 1.05, end_value=1.0)),
    ("exponential-growing", lambda lib: lib.exponential_decay(
        init_value=1.0, transition_steps=2, decay_rate=2.0, transition_begin=5, staircase=True)),
    ("exponential-rate-1", lambda lib: lib.exponential_decay(
        init_value=1.0, transition_steps=15, decay_rate=1.0)),
    ("exponential-zero-steps", lambda lib: lib.exponential_decay(1.0, 0, 0.5)),
    ("exponential-end-staircase", lambda lib: lib.exponential_decay(
        1.0, 2, 0.2, 3, True, 0.1)),
    ("cosine-test", lambda lib: lib.cosine_decay_schedule(0.1, 10, 0.0)),
    ("cosine-exponent", lambda lib: lib.cosine_decay_schedule(
        init_value=0.1, decay_steps=100, alpha=0.0, exponent=2)),
    ("cosine-alpha", lambda lib: lib.cosine_decay_schedule(1.0, 3333, 0.1, 2.0)),
    ("cosine-long", lambda lib: lib.cosine_decay_schedule(2.0, 10_000)),
    ("piecewise-constant-doc", lambda lib: lib.piecewise_constant_schedule(
        init_value=1.0, boundaries_and_scales={100: 0.1, 200: 0.01})),
    ("piecewise-constant-test", lambda lib: lib.piecewise_constant_schedule(
        -0.1, {3: 2.0, 6: 0.5, 7000: 0.3})),
    ("piecewise-constant-at-0", lambda lib: lib.piecewise_constant_schedule(
        1.0, {0: 0.5, 9000: 3.0})),
    ("piecewise-constant-none", lambda lib: lib.piecewise_constant_schedule(0.5)),
    ("interpolate-doc", lambda lib: lib.piecewise_interpolate_schedule(
        interpolate_type="linear", init_value=1.0, boundaries_and_scales={4: 0.1, 8: 0.01})),
    ("interpolate-test-linear", lambda lib: lib.piecewise_interpolate_schedule(
        "linear", 200.0, {5: 1.5, 10: 0.25})),
    ("interpolate-test-cosine", lambda lib: lib.piecewise_interpolate_schedule(
        "cosine", 400.0, {5000: 1.2, 3: 0.6, 7: 1.0})),
    ("interpolate-at-0", lambda lib: lib.piecewise_interpolate_schedule(
        "linear", 13.0, {0: 2.0, 5000: 3.0})),
    ("interpolate-empty", lambda lib: lib.piecewise_interpolate_schedule("linear", 13.0, {})),
    ("interpolate-none", lambda lib: lib.piecewise_interpolate_schedule("cosine", 17.0)),
    ("interpolate-long", lambda lib: lib.piecewise_interpolate_schedule(
        "cosine", 1.0, {2500: 0.1, 7500: 10.0})),
    ("linear-onecycle-test", lambda lib: lib.linear_onecycle_schedule(
        transition_steps=10, peak_value=1000, pct_start=0.3, pct_final=0.7, div_factor=10.0,
        final_div_factor=100.0)),
    ("linear-onecycle-defaults", lambda lib: lib.linear_onecycle_schedule(10_000, 1e-3)),
    ("linear-onecycle-pct-final-1", lambda lib: lib.linear_onecycle_schedule(
        777, 0.1, 0.25, 1.0)),
    ("cosine-onecycle-test", lambda lib: lib.cosine_onecycle_schedule(
        transition_steps=5, peak_value=1000.0, pct_start=0.4, div_factor=10.0,
        final_div_factor=100.0)),
    ("cosine-onecycle-defaults", lambda lib: lib.cosine_onecycle_schedule(10_000, 0.1)),
    ("cosine-onecycle-pct-start-1", lambda lib: lib.cosine_onecycle_schedule(555, 2.0, 1.0)),
    ("warmup-constant", lambda lib: lib.warmup_constant_schedule(0.0, 1e-3, 1000)),
    ("warmup-constant-kw", lambda lib: lib.warmup_constant_schedule(
        init_value=0.5, peak_value=1.0, warmup_steps=1)),
    ("warmup-cosine", lambda lib: lib.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=1.0, warmup_steps=1000, decay_steps=9000, end_value=0.0)),
    ("warmup-cosine-test-end", lambda lib: lib.warmup_cosine_decay_schedule(
        init_value=10, peak_value=0.5, warmup_steps=100, decay_steps=1000, end_value=1e-4)),
    ("warmup-cosine-test-exponent", lambda lib: lib.warmup_cosine_decay_schedule(
        init_value=0.2, peak_value=1.21, end_value=-3.0, warmup_steps=50, decay_steps=100,
        exponent=2)),
    ("warmup-cosine-zero-peak", lambda lib: lib.warmup_cosine_decay_schedule(
        0.2, 0, 50, 100, -3.0, 2)),
    ("warmup-cosine-no-warmup", lambda lib: lib.warmup_cosine_decay_schedule(0.0, 1.0, 0, 5000)),
    ("warmup-exponential", lambda lib: lib.warmup_exponential_decay_schedule(
        0.0, 1.0, 100, 100, 0.9)),
    ("warmup-exponential-kw", lambda lib: lib.warmup_exponential_decay_schedule(
        init_value=0.0, peak_value=1.0, warmup_steps=100, transition_steps=1000, decay_rate=0.5,
        transition_begin=50, staircase=True, end_value=0.01)),
    ("sgdr-step-decay", lambda lib: lib.sgdr_schedule(sgdr_cycles([1.6, 0.8, 0.4]))),
    ("sgdr-no-step-decay", lambda lib: lib.sgdr_schedule(cosine_kwargs=sgdr_cycles([1.6] * 3))),
    ("join", lambda lib: lib.join_schedules(
        [lib.constant_schedule(1.0), lib.linear_schedule(1.0, 0.0, 100)], [5000])),
    ("join-three", lambda lib: lib.join_schedules(
        schedules=[lib.linear_schedule(0.0, 1.0, 100), lib.cosine_decay_schedule(1.0, 900),
                   lib.constant_schedule(0.1)],
        boundaries=[100, 1000])),
]  # fmt: skip
BUILD = dict(CASES)

# Schedules interpolating between scaled values: near a small end value, (v1 - v0) p + v0
# cancels, and optax's own value moves by ~1e-7 of the scale between its evaluations
# (vmapped, jitted or count by count). Compared with that absolute slack over the whole
# range, and without it, count by count, below.
INTERPOLATED = ("interpolate", "onecycle")


def tolerance(case, theirs):
    if any(kind in case for kind in INTERPOLATED):
        return {"rtol": 1e-6, "atol": 2e-7 * float(np.max(np.abs(theirs)))}
    return {"rtol": 1e-6, "atol": 0.0}


class MatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(case, case) for case, _ in CASES])
    def test_every_count_from_0_to_10000(self, case):
        # optax's piecewise_interpolate_schedule takes one count at a time: vmapped.
        theirs = np.asarray(self.variant(jax.vmap(BUILD[case](optax)))(COUNTS))
        ours = np.asarray(self.variant(BUILD[case](gradtx))(COUNTS))
        assert ours.shape == COUNTS.shape and ours.dtype == np.float32
        np.testing.assert_allclose(
            ours, np.broadcast_to(theirs, ours.shape), **tolerance(case, theirs)
        )

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(case, case) for case, _ in CASES])
    def test_fractional_counts_interpolate_as_in_optax(self, case):
        counts = np.linspace(0.0, 10_000.0, 4001, dtype=np.float32) + np.float32(0.3)
        theirs = np.asarray(self.variant(jax.vmap(BUILD[case](optax)))(counts))
        ours = np.asarray(self.variant(BUILD[case](gradtx))(counts))
        np.testing.assert_allclose(
            ours, np.broadcast_to(theirs, ours.shape), **tolerance(case, theirs)
        )

    @chex.variants(with_jit=True, without_jit=True)
    def test_drives_a_learner_as_optax_does(self):
        """50 steps of SGD with momentum on a warm-up and cosine schedule, as optax takes them."""

        def run(lib):
            opt = lib.sgd(lib.warmup_cosine_decay_schedule(0.0, 0.1, 10, 50, 1e-3), momentum=0.9)
            update = self.variant(opt.update)
            params = {"w": jnp.linspace(-1.0, 1.0, 6)}
            state = opt.init(params)
            for t in range(50):
                grads = jax.tree.map(lambda p, t=t: 0.5 * p + 0.1 * t, params)
                updates, state = update(grads, state, params)
                params = lib.apply_updates(params, updates)
            return params

        chex.assert_trees_all_close(run(gradtx), run(optax), rtol=1e-6)


@pytest.mark.parametrize("case", [c for c, _ in CASES if any(k in c for k in INTERPOLATED)])
def test_interpolated_schedules_count_by_count(case):
    """optax's own eager value at each count, without the slack of the vectorised comparison."""
    ours, theirs = BUILD[case](gradtx), BUILD[case](optax)
    rng = np.random.default_rng(0)
    edges = [*range(12), 75, 76, 77, 232, 233, 234, 538, 539, 776, 777, 2499, 2500, 9919, 9992]
    counts = sorted({*edges, 9999, 10_000, *rng.integers(0, 10_001, 20).tolist()})
    for count in counts:
        np.testing.assert_allclose(ours(int(count)), theirs(int(count)), rtol=1e-6, err_msg=count)


@pytest.mark.parametrize("case", [c for c, _ in CASES])
def test_python_int_counts(case):
    ours, theirs = BUILD[case](gradtx), BUILD[case](optax)
    for count in (0, 7, 100, 5000, 10_000):
        np.testing.assert_allclose(ours(count), theirs(count), rtol=1e-6, err_msg=count)


def test_every_optax_schedule_is_covered_and_at_both_places():
    optax_names = {
        n for n in dir(optax.schedules) if n.endswith(("schedule", "decay")) and n[0] != "_"
    }
    optax_names |= {"join_schedules"}
    assert optax_names <= set(optax_schedules.__all__), optax_names - set(optax_schedules.__all__)
    covered = set()

    class Recording:  # gradtx, noting which names a case calls
        def __getattr__(self, name):
            covered.add(name)
            return getattr(gradtx, name)

    for build in BUILD.values():
        build(Recording())
    assert covered == set(optax_schedules.__all__), set(optax_schedules.__all__) ^ covered
    for name in optax_schedules.__all__:
        assert getattr(gradtx, name) is getattr(S, name) is getattr(optax_schedules, name)
        assert name in gradtx.__all__ and name in S.__all__
        assert hasattr(optax, name), f"optax has no top-level {name}"


@pytest.mark.parametrize("name", optax_schedules.__all__)
def test_signature_is_optaxs(name):
    ours = inspect.signature(getattr(gradtx, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    assert list(ours) == list(theirs)
    for key, param in theirs.items():
        assert ours[key].default == param.default, key
        assert ours[key].kind == param.kind, key


# --- where gradtx is stricter than optax, and where both raise ----------------------------

# (call on a library, gradtx's message, whether optax raises too)
STRICTER = [
    (lambda lib: lib.polynomial_schedule(10.0, 20.0, 1, -1),
     "polynomial_schedule: transition_steps must be >= 0, got -1", False),
    (lambda lib: lib.linear_schedule(1.0, 0.0, 10, transition_begin=-1),
     "linear_schedule: transition_begin must be >= 0, got -1", False),
    (lambda lib: lib.linear_schedule(1.0, 0.0, 10.5),
     "linear_schedule: transition_steps must be an integer number of steps, got 10.5", False),
    (lambda lib: lib.polynomial_schedule(1.0, 0.0, 0.0, 10),
     "polynomial_schedule: power must be in (0, inf), got 0", False),
    (lambda lib: lib.exponential_decay(1.0, -1, 0.5),
     "exponential_decay: transition_steps must be >= 0, got -1", False),
    (lambda lib: lib.exponential_decay(1.0, 2, 0.0),
     "exponential_decay: decay_rate must be in (0, inf), got 0", False),
    (lambda lib: lib.exponential_decay(1.0, 2, -0.5),
     "exponential_decay: decay_rate must be in (0, inf), got -0.5", False),
    (lambda lib: lib.exponential_decay(1.0, 2, 0.5, transition_begin=-3),
     "exponential_decay: transition_begin must be >= 0, got -3", False),
    (lambda lib: lib.cosine_decay_schedule(1.0, 0),
     "cosine_decay_schedule: decay_steps must be > 0, got 0", True),
    (lambda lib: lib.piecewise_constant_schedule(1.0, {5: -0.5}),
     "piecewise_constant_schedule: scales in boundaries_and_scales must be in [0, inf), got -0.5",
     True),
    (lambda lib: lib.piecewise_constant_schedule(1.0, {-5: 0.5}),
     "piecewise_constant_schedule: boundaries_and_scales must be >= 0, got -5", False),
    (lambda lib: lib.piecewise_interpolate_schedule("linar", 13.0),
     "piecewise_interpolate_schedule: interpolate_type must be 'linear' or 'cosine', got 'linar'",
     True),
    (lambda lib: lib.piecewise_interpolate_schedule("linear", 13.0, {5: -3}),
     "piecewise_interpolate_schedule: scales in boundaries_and_scales must be in [0, inf)", True),
    (lambda lib: lib.piecewise_interpolate_schedule("linear", 13.0, {-5: 3.0}),
     "piecewise_interpolate_schedule: boundaries_and_scales must be >= 0, got -5", False),
    (lambda lib: lib.linear_onecycle_schedule(transition_steps=0, peak_value=5.0),
     "linear_onecycle_schedule: transition_steps must be > 0, got 0", True),
    (lambda lib: lib.cosine_onecycle_schedule(transition_steps=0, peak_value=5.0),
     "cosine_onecycle_schedule: transition_steps must be > 0, got 0", True),
    (lambda lib: lib.linear_onecycle_schedule(100, 1.0, pct_start=0.9, pct_final=0.5),
     "linear_onecycle_schedule: pct_final must be >= pct_start, got 0.5 < 0.9", False),
    (lambda lib: lib.cosine_onecycle_schedule(100, 1.0, pct_start=1.5),
     "cosine_onecycle_schedule: pct_start must be in [0, 1], got 1.5", False),
    (lambda lib: lib.linear_onecycle_schedule(100, 1.0, div_factor=-5.0),
     "linear_onecycle_schedule: div_factor must be in (0, inf), got -5", True),
    (lambda lib: lib.warmup_constant_schedule(0.0, 1.0, 0),
     "warmup_constant_schedule: warmup_steps must be > 0, got 0", False),
    (lambda lib: lib.warmup_cosine_decay_schedule(0.2, 1.2, 10, 10, 0.0),
     "warmup_cosine_decay_schedule: decay_steps must be > warmup_steps", True),
    (lambda lib: lib.warmup_exponential_decay_schedule(0.0, 1.0, 10, 10, 0.0),
     "warmup_exponential_decay_schedule: decay_rate must be in (0, inf), got 0", False),
    (lambda lib: lib.join_schedules([lib.constant_schedule(1.0)] * 3, [10]),
     "join_schedules: schedules must have len(boundaries) + 1 = 2 entries, got 3", False),
    (lambda lib: lib.join_schedules([lib.constant_schedule(1.0)] * 3, [20, 10]),
     "join_schedules: boundaries must be strictly increasing, got [20, 10]", False),
    (lambda lib: lib.sgdr_schedule([]),
     "sgdr_schedule: cosine_kwargs must hold at least one cycle's arguments", False),
]  # fmt: skip


@pytest.mark.parametrize("build, message, optax_raises", STRICTER, ids=[m for _, m, _ in STRICTER])
def test_bad_arguments_raise_naming_the_argument(build, message, optax_raises):
    with pytest.raises(ValueError) as info:
        build(gradtx)
    assert str(info.value).startswith(message), str(info.value)
    if optax_raises:
        with pytest.raises(ValueError):
            build(optax)
    else:  # optax builds something (a constant, a NaN, a schedule that fails when called)
        build(optax)


def test_optax_jit_nan_is_finite_here():
    """optax's jitted polynomial with a root power is NaN once t/T rounds above 1."""
    counts = jnp.arange(10)
    theirs = jax.jit(optax.polynomial_schedule(1.0, 0.0, 0.5, 3))(counts)
    ours = jax.jit(gradtx.polynomial_schedule(1.0, 0.0, 0.5, 3))(counts)
    assert np.isnan(theirs[3:]).all()  # if optax fixes this, the comparison below still holds
    np.testing.assert_allclose(ours, optax.polynomial_schedule(1.0, 0.0, 0.5, 3)(counts), rtol=1e-6)


def test_giant_lengths_are_optaxs():
    # optax's test_with_giant_int_steps: decay_steps beyond int32.
    schedule = gradtx.cosine_decay_schedule(init_value=1000.0, decay_steps=int(1e10), alpha=0.0)
    np.testing.assert_allclose(jax.jit(schedule)(int(1e9)), 975.52826, rtol=1e-6)
    theirs = optax.warmup_cosine_decay_schedule(0.0, 1.0, 10**9, 10**10, 0.01)
    ours = gradtx.warmup_cosine_decay_schedule(0.0, 1.0, 10**9, 10**10, 0.01)
    for count in (0, 10**8, 2 * 10**9, INT32_MAX):
        np.testing.assert_allclose(ours(jnp.int32(count)), theirs(float(count)), rtol=1e-6)


# --- vmap and grad over the float arguments -------------------------------------------------

VMAPPED = [
    ("warmup_cosine_decay_schedule(peak_value)", [0.0, 0.5, 1.0, 3.0],
     lambda lib, x: lib.warmup_cosine_decay_schedule(0.1, x, 100, 1000, end_value=0.01)),
    ("exponential_decay(decay_rate)", [0.5, 0.9, 1.0, 1.5],
     lambda lib, x: lib.exponential_decay(1.0, 100, x, 10, end_value=0.2)),
    ("cosine_decay_schedule(alpha)", [0.0, 0.1, 0.5],
     lambda lib, x: lib.cosine_decay_schedule(2.0, 1000, x, 2.0)),
    ("polynomial_schedule(power)", [0.5, 1.0, 3.0],
     lambda lib, x: lib.polynomial_schedule(1.0, 0.1, x, 1000, 50)),
    ("linear_onecycle_schedule(peak_value)", [0.1, 1.0, 2.0],
     lambda lib, x: lib.linear_onecycle_schedule(1000, x)),
    ("cosine_onecycle_schedule(div_factor)", [5.0, 25.0],
     lambda lib, x: lib.cosine_onecycle_schedule(1000, 1.0, div_factor=x)),
    ("piecewise_constant_schedule(init_value)", [0.1, -1.0],
     lambda lib, x: lib.piecewise_constant_schedule(x, {10: 0.5, 500: 0.1})),
    ("warmup_exponential_decay_schedule(init_value)", [0.0, 0.3],
     lambda lib, x: lib.warmup_exponential_decay_schedule(x, 1.0, 100, 100, 0.9)),
]  # fmt: skip


@pytest.mark.parametrize("name, xs, build", VMAPPED, ids=[v[0] for v in VMAPPED])
def test_vmap_over_a_float_argument(name, xs, build):
    counts = jnp.arange(0, 1500, 7)
    ours = jax.vmap(lambda x: build(gradtx, x)(counts))(jnp.asarray(xs))
    for x, row in zip(xs, ours, strict=True):
        theirs = jax.vmap(build(optax, x))(counts)
        np.testing.assert_allclose(row, theirs, rtol=2e-6, atol=1e-7, err_msg=f"{name}={x}")


def test_grad_over_float_arguments():
    grad = jax.grad(lambda v: gradtx.linear_schedule(v, 0.0, 100)(25))(1.0)
    np.testing.assert_allclose(grad, 0.75, rtol=1e-6)  # d/dv0 of v0 (1 - t/T)
    grad = jax.grad(lambda r: gradtx.exponential_decay(1.0, 10, r)(30))(0.5)
    np.testing.assert_allclose(grad, 3 * 0.5**2, rtol=1e-6)  # d/dr of r**3
    grad = jax.grad(lambda a: gradtx.cosine_decay_schedule(2.0, 100, a)(50))(0.1)
    np.testing.assert_allclose(grad, 2.0 * (1 - 0.5), rtol=1e-6)  # v0 (1 - c) at c = 1/2


# --- hypothesis: finite and in range up to the int32 maximum ---------------------------------

values = st.floats(1e-4, 10.0)
lengths = st.integers(1, 10_000)
long_lengths = st.one_of(lengths, st.integers(INT32_MAX - 2, 10**13))
begins = st.one_of(st.integers(0, 10**6), st.integers(INT32_MAX - 2, 10**13))
scales = st.dictionaries(st.integers(0, 10**6), st.floats(0.0, 3.0), max_size=4)


def _span(*xs):
    return min(xs), max(xs)


def _cumulative(v, table):
    out = [v]
    for _, s in sorted(table.items()):
        out.append(out[-1] * s)
    return _span(*out)


def _exponential(v, n, r, b, stair, e):
    schedule = S.exponential_decay(v, n, r, b, stair, e)
    return schedule, *(_span(v, e) if e is not None else (0.0, v))


def _sgdr(cycles):
    schedule = S.sgdr_schedule(
        [
            dict(init_value=a, peak_value=p, warmup_steps=w, decay_steps=w + d, end_value=e)
            for a, p, w, d, e in cycles
        ]  # fmt: skip
    )
    return schedule, *_span(*(x for a, p, _, _, e in cycles for x in (a, p, e)))


cases = st.one_of(
    st.builds(lambda v: (S.constant_schedule(v), v, v), values),
    st.builds(lambda a, b, n, s: (S.linear_schedule(a, b, n, s), *_span(a, b)),
              values, values, long_lengths, begins),
    st.builds(lambda a, b, p, n, s: (S.polynomial_schedule(a, b, p, n, s), *_span(a, b)),
              values, values, st.floats(0.3, 3.0), long_lengths, begins),
    st.builds(_exponential, values, long_lengths, st.floats(0.05, 1.0), begins, st.booleans(),
              st.none() | values),
    st.builds(_exponential, values, long_lengths, st.floats(1.0, 3.0), begins, st.booleans(),
              values),  # a growing one is finite with an end value
    st.builds(lambda v, n, a, p: (S.cosine_decay_schedule(v, n, a, p), v * a, v),
              values, long_lengths, st.floats(0.0, 1.0), st.floats(0.3, 3.0)),
    st.builds(lambda v, d: (S.piecewise_constant_schedule(v, d), *_cumulative(v, d)), values,
              scales),
    st.builds(lambda k, v, d: (S.piecewise_interpolate_schedule(k, v, d), *_cumulative(v, d)),
              st.sampled_from(["linear", "cosine"]), values, scales),
    st.builds(lambda n, p, a, b, dv, fdv: (
        S.linear_onecycle_schedule(n, p, min(a, b), max(a, b), dv, fdv), 0.0, p),
        long_lengths, values, st.floats(0, 1), st.floats(0, 1), st.floats(1, 100),
        st.floats(1, 1e4)),
    st.builds(lambda n, p, a, dv, fdv: (S.cosine_onecycle_schedule(n, p, a, dv, fdv), 0.0, p),
              long_lengths, values, st.floats(0, 1), st.floats(1, 100), st.floats(1, 1e4)),
    st.builds(lambda a, p, w: (S.warmup_constant_schedule(a, p, w), *_span(a, p)),
              values, values, long_lengths),
    st.builds(lambda a, p, w, d, e, x: (
        S.warmup_cosine_decay_schedule(a, p, w, w + d, e, x), *_span(a, p, e)),
        values, values, st.integers(0, 10**13), long_lengths, values, st.floats(0.3, 3.0)),
    st.builds(lambda a, p, w, n, r, b, stair, e: (
        S.warmup_exponential_decay_schedule(a, p, w, n, r, b, stair, e), *_span(a, p, e)),
        values, values, st.integers(0, 10**13), long_lengths, st.floats(0.05, 1.0), begins,
        st.booleans(), values),
    st.builds(_sgdr, st.lists(st.tuples(values, values, st.integers(0, 10**6), long_lengths,
                                        values), min_size=1, max_size=3)),
    st.builds(lambda a, b, n: (
        S.join_schedules([S.constant_schedule(a), S.linear_schedule(a, b, n)], [n]), *_span(a, b)),
        values, values, long_lengths),
)  # fmt: skip
counts = st.lists(st.integers(0, INT32_MAX), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None)
@given(case=cases, ts=counts)
def test_finite_in_range_and_array_equals_scalar(case, ts):
    schedule, lo, hi = case
    ts = [0, 1, INT32_MAX - 1, INT32_MAX, *ts]
    batch = np.asarray(schedule(jnp.asarray(ts, jnp.int32)))
    assert batch.dtype == np.float32 and batch.shape == (len(ts),)
    assert np.all(np.isfinite(batch)), batch
    slack = 1e-5 * max(abs(lo), abs(hi), 1.0)
    assert np.all(batch >= lo - slack) and np.all(batch <= hi + slack), (batch, lo, hi)
    for t, v in zip(ts, batch, strict=True):
        np.testing.assert_allclose(schedule(t), v, rtol=1e-5, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(case=cases, ts=st.lists(st.integers(0, 2**24), min_size=1))
def test_float_counts_below_2_24_equal_int32_counts(case, ts):
    schedule, _, _ = case
    np.testing.assert_array_equal(
        schedule(jnp.asarray(ts, jnp.float32)), schedule(jnp.asarray(ts, jnp.int32))
    )


@settings(max_examples=25, deadline=None)
@given(
    init=values, peak=values, end=st.floats(0.0, 1e-2), warmup=st.integers(0, 3000),
    decay=lengths, t=st.integers(0, 20_000),
)  # fmt: skip
def test_warmup_cosine_decay_is_optaxs_for_drawn_arguments(init, peak, end, warmup, decay, t):
    ours = S.warmup_cosine_decay_schedule(init, peak, warmup, warmup + decay, end)
    theirs = optax.warmup_cosine_decay_schedule(init, peak, warmup, warmup + decay, end)
    np.testing.assert_allclose(ours(t), theirs(t), rtol=1e-6, atol=1e-7 * max(init, peak))


def test_math_reference_for_exponential_rounding():
    """optax raises the float32 rate; gradtx's geometric_decay raises the exact one."""
    t = 5000
    optax_like = gradtx.exponential_decay(1.0, 1, 0.999)(t)
    exact = gradtx.schedules.geometric_decay(1.0, 0.999)(t)
    np.testing.assert_allclose(optax_like, float(np.float32(0.999)) ** t, rtol=1e-6)
    np.testing.assert_allclose(exact, math.pow(0.999, t), rtol=1e-6)
