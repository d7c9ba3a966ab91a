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


def _np_stochastic_round(x, seed):
    """The documented rule, in NumPy: add hashed noise below the kept 16 bits, truncate."""
    with np.errstate(over="ignore"):
        bits = x.astype(np.float32).view(np.uint32)
        key = np.uint32(seed) * np.uint32(0x9E3779B9)
        noise = ((bits ^ key) * np.uint32(0xC2B2AE35)) >> np.uint32(16)
        truncated = ((bits + noise) & np.uint32(0xFFFF0000)).view(np.float32)
    return truncated.astype(ml_dtypes.bfloat16)


class StochasticRoundTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_numpy_rule_bitwise(self):
        x = np.random.default_rng(0).normal(size=(7, 33)).astype(np.float32) * 1e-3
        x[0, :4] = [np.inf, -np.inf, np.nan, 0.0]
        ours = self.variant(tree.stochastic_round)(jnp.asarray(x), 5)
        expected = _np_stochastic_round(x, 5)
        np.testing.assert_array_equal(np.asarray(ours).view(np.uint16), expected.view(np.uint16))

    def test_specials_survive(self):
        x = jnp.array([jnp.inf, -jnp.inf, jnp.nan, 0.0, -0.0])
        out = np.asarray(tree.stochastic_round(x, 7), np.float32)
        assert np.isposinf(out[0]) and np.isneginf(out[1]) and np.isnan(out[2])
        assert out[3] == 0 and out[4] == 0

    def test_unbiased_over_steps_and_between_neighbours(self):
        x = jnp.float32(1.0 + 1.0 / 512)  # a quarter of the way from 1 to the next bfloat16
        draws = jax.vmap(lambda s: tree.stochastic_round(x, s))(jnp.arange(100_000))
        draws = np.asarray(draws, np.float32)
        assert set(np.unique(draws)) == {1.0, 1.0078125}
        # Binomial with p = 1/4: the mean is within 5 standard errors of x.
        assert abs(draws.mean() - float(x)) < 5 * 0.0078125 * np.sqrt(0.25 * 0.75 / 100_000)


@pytest.mark.parametrize("name", sorted(MOMENT_LEARNERS))
def test_bfloat16_state_tracks_float32_on_digits(name):
    """Documented tolerance: over 1000 steps, the mean loss of the last 100 steps is within
    3% of the float32 run and the test accuracy within 0.5 points."""
    make = MOMENT_LEARNERS[name]
    state = make(BF16).init(digits.init())
    moments = [x for x in jax.tree.leaves(state) if x.ndim > 0]
    assert moments and all(x.dtype == BF16 for x in moments)
    _, loss32, acc32 = digits.train(make(None))
    _, loss16, acc16 = digits.train(make(BF16))
    tail32, tail16 = float(loss32[-100:].mean()), float(loss16[-100:].mean())
    assert abs(tail16 / tail32 - 1) < 0.03
    assert abs(acc16 - acc32) <= 0.005


def test_bad_state_dtype_names_the_learner():
    with pytest.raises(ValueError, match="adam: state_dtype must be a floating dtype"):
        gradtx.adam(1e-3, state_dtype=jnp.int32)
    with pytest.raises(ValueError, match="trace: state_dtype must be a floating dtype"):
        gradtx.trace(0.9, state_dtype="not a dtype")
