"""bfloat16 optimizer state: stochastic rounding; learners stay near their float32 runs."""

from __future__ import annotations

import chex
import digits
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

import gradtx
from gradtx import tree

BF16 = jnp.bfloat16
MOMENT_LEARNERS = {
    "sgd": lambda d: gradtx.sgd(0.05, momentum=0.9, state_dtype=d),
    "adagrad": lambda d: gradtx.adagrad(0.05, state_dtype=d),
    "rmsprop": lambda d: gradtx.rmsprop(1e-3, centered=True, momentum=0.5, state_dtype=d),
    "adam": lambda d: gradtx.adam(1e-3, state_dtype=d),
    "adamw": lambda d: gradtx.adamw(1e-3, state_dtype=d),
    "nadam": lambda d: gradtx.nadam(1e-3, state_dtype=d),
    "amsgrad": lambda d: gradtx.amsgrad(1e-3, state_dtype=d),
    "adamax": lambda d: gradtx.adamax(2e-3, state_dtype=d),
    "adadelta": lambda d: gradtx.adadelta(1.0, state_dtype=d),
    "lion": lambda d: gradtx.lion(3e-4, state_dtype=d),
}


def _np_mix(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x7FEB352D)
    h = h ^ (h >> np.uint32(15))
    h = h * np.uint32(0x846CA68B)
    return h ^ (h >> np.uint32(16))


def _np_stochastic_round(x, seed, stream):
    """The documented rule, in NumPy: add hashed noise below the kept 16 bits, truncate."""
    with np.errstate(over="ignore"):
        bits = x.astype(np.float32).view(np.uint32)
        key = _np_mix(np.uint32(seed) * np.uint32(0x9E3779B9) + np.uint32(stream))
        position = np.arange(x.size, dtype=np.uint32).reshape(x.shape)
        noise = _np_mix(bits ^ _np_mix(position ^ key)) & np.uint32(0xFFFF)
        truncated = ((bits + noise) & np.uint32(0xFFFF0000)).view(np.float32)
    return np.where(np.isfinite(x), truncated, x).astype(ml_dtypes.bfloat16)


class StochasticRoundTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_numpy_rule_bitwise(self):
        x = np.random.default_rng(0).normal(size=(7, 33)).astype(np.float32) * 1e-3
        x[0, :4] = [np.inf, -np.inf, np.nan, 0.0]
        ours = self.variant(tree.stochastic_round, static_argnums=2)(jnp.asarray(x), 5, 3)
        expected = _np_stochastic_round(x, 5, 3)
        np.testing.assert_array_equal(
            np.asarray(ours).view(np.uint16), expected.view(np.uint16)
        )

    def test_unbiased_and_between_neighbours(self):
        x = np.float32(1.0 + 1.0 / 512)  # a quarter of the way from 1 to the next bfloat16
        rounded = np.asarray(tree.stochastic_round(jnp.full(200_000, x), 0, 0), np.float32)
        assert set(np.unique(rounded)) == {1.0, 1.0078125}
        # Binomial with p = 1/4: the mean is within 5 standard errors of x.
        assert abs(rounded.mean() - x) < 5 * 0.0078125 * np.sqrt(0.25 * 0.75 / 200_000)

    def test_seed_changes_the_draw(self):
        x = jnp.full(1000, 1.0 + 1.0 / 512)
        assert not np.array_equal(tree.stochastic_round(x, 1), tree.stochastic_round(x, 2))


@pytest.mark.parametrize("name", sorted(MOMENT_LEARNERS))
def test_bfloat16_state_tracks_float32_on_digits(name):
    """Documented tolerance: over 1000 steps, the mean loss of the last 100 steps is within
    2% of the float32 run and the test accuracy within 0.5 points."""
    make = MOMENT_LEARNERS[name]
    state = make(BF16).init(digits.init())
    moments = [x for x in jax.tree.leaves(state) if x.ndim > 0]
    assert moments and all(x.dtype == BF16 for x in moments)
    _, loss32, acc32 = digits.train(make(None))
    _, loss16, acc16 = digits.train(make(BF16))
    tail32, tail16 = float(loss32[-100:].mean()), float(loss16[-100:].mean())
    assert abs(tail16 / tail32 - 1) < 0.02
    assert abs(acc16 - acc32) <= 0.005


def test_bad_state_dtype_names_the_learner():
    with pytest.raises(ValueError, match="adam: state_dtype must be a floating dtype"):
        gradtx.adam(1e-3, state_dtype=jnp.int32)
    with pytest.raises(ValueError, match="trace: state_dtype must be a floating dtype"):
        gradtx.trace(0.9, state_dtype="not a dtype")
