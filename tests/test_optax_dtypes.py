"""optax's mu_dtype and accumulator_dtype: optax's positions, state dtypes and numbers."""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from conftest import assert_trees_close, grads_at, make_params

import gradtx
from gradtx import recipe

BF16 = jnp.bfloat16

# name -> (gradtx transform, optax transform), built with the same positional arguments.
CASES = {
    "adam": lambda: (
        gradtx.adam(1e-2, 0.9, 0.99, 1e-8, 0.0, BF16),
        optax.adam(1e-2, 0.9, 0.99, 1e-8, 0.0, BF16),
    ),
    "adam nesterov": lambda: (
        gradtx.adam(1e-2, mu_dtype=BF16, nesterov=True),
        optax.adam(1e-2, mu_dtype=BF16, nesterov=True),
    ),
    "adamw": lambda: (
        gradtx.adamw(1e-2, 0.9, 0.99, 1e-8, 0.0, BF16, 0.1),
        optax.adamw(1e-2, 0.9, 0.99, 1e-8, 0.0, BF16, 0.1),
    ),
    "nadam": lambda: (
        gradtx.nadam(1e-2, 0.9, 0.99, 1e-8, 0.0, BF16),
        optax.nadam(1e-2, 0.9, 0.99, 1e-8, 0.0, BF16),
    ),
    "nadam without nesterov": lambda: (
        gradtx.nadam(1e-2, mu_dtype=BF16, nesterov=False),
        optax.nadam(1e-2, mu_dtype=BF16, nesterov=False),
    ),
    "amsgrad": lambda: (
        gradtx.amsgrad(1e-2, 0.9, 0.99, 1e-8, 0.0, BF16),
        optax.amsgrad(1e-2, 0.9, 0.99, 1e-8, 0.0, BF16),
    ),
    "lion": lambda: (
        gradtx.lion(1e-3, 0.9, 0.99, BF16, 0.01),
        optax.lion(1e-3, 0.9, 0.99, BF16, 0.01),
    ),
    "sgd": lambda: (gradtx.sgd(1e-2, 0.9, False, BF16), optax.sgd(1e-2, 0.9, False, BF16)),
    "sgd nesterov": lambda: (gradtx.sgd(1e-2, 0.9, True, BF16), optax.sgd(1e-2, 0.9, True, BF16)),
    "sgd, float16 momentum": lambda: (
        gradtx.sgd(1e-2, 0.9, True, jnp.float16),
        optax.sgd(1e-2, 0.9, True, jnp.float16),
    ),
    "scale_by_adam": lambda: (
        gradtx.scale_by_adam(0.9, 0.99, 1e-8, 0.0, BF16),
        optax.scale_by_adam(0.9, 0.99, 1e-8, 0.0, BF16),
    ),
    "scale_by_amsgrad": lambda: (
        gradtx.scale_by_amsgrad(0.9, 0.99, 1e-8, 0.0, BF16),
        optax.scale_by_amsgrad(0.9, 0.99, 1e-8, 0.0, BF16),
    ),
    "scale_by_lion": lambda: (
        gradtx.scale_by_lion(0.9, 0.99, BF16),
        optax.scale_by_lion(0.9, 0.99, BF16),
    ),
    "trace": lambda: (gradtx.trace(0.9, False, BF16), optax.trace(0.9, False, BF16)),
    "trace nesterov": lambda: (gradtx.trace(0.9, True, BF16), optax.trace(0.9, True, BF16)),
    "ema": lambda: (gradtx.ema(0.9, True, BF16), optax.ema(0.9, True, BF16)),
    "ema without debias": lambda: (gradtx.ema(0.8, False, BF16), optax.ema(0.8, False, BF16)),
}


def _moments(state):
    return [x for x in jax.tree.leaves(state) if jnp.ndim(x) > 0]


class SameAsOptaxTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((name, name) for name in CASES))
    def test_fifty_steps_give_optax_numbers_and_dtypes(self, name):
        ours, theirs = CASES[name]()
        # The oracle runs under the same variant: under jit XLA computes a bfloat16 moment's
        # products in float32 without rounding between them, in optax's program as in ours.
        update, reference = self.variant(ours.update), self.variant(theirs.update)
        p1 = p2 = make_params()
        s1, s2 = ours.init(p1), theirs.init(p2)
        for t in range(50):
            u1, s1 = update(grads_at(p1, t), s1, p1)
            u2, s2 = reference(grads_at(p2, t), s2, p2)
            p1, p2 = gradtx.apply_updates(p1, u1), optax.apply_updates(p2, u2)
        assert_trees_close(p1, p2, rtol=1e-6)
        # The moment optax narrows is narrowed here too, and only that one.
        assert [m.dtype for m in _moments(s1)] == [m.dtype for m in _moments(s2)]
        assert any(m.dtype != jnp.float32 for m in _moments(s1))
        assert_trees_close(_moments(s1), _moments(s2), rtol=1e-6)


def test_a_narrow_first_moment_is_rounded_to_nearest_not_stochastically():
    """optax casts with astype: the stored moment is the float32 one rounded to nearest."""
    tx = gradtx.scale_by_adam(mu_dtype=BF16)
    g = {"w": jnp.linspace(-1.0, 1.0, 101) / 3}
    _, state = tx.update(g, tx.init(g))
    np.testing.assert_array_equal(state.mu["w"], (0.1 * g["w"]).astype(BF16))
    stochastic = gradtx.scale_by_adam(state_dtype=BF16)
    _, other = stochastic.update(g, stochastic.init(g))
    assert not np.array_equal(np.asarray(other.mu["w"]), np.asarray(state.mu["w"]))


def test_the_argument_positions_are_optax():
    """optax's arguments up to the dtype, by position, with optax's defaults; gradtx's own
    options (unit_gain, weight_decay, state_dtype) only by keyword."""
    for name in ("adam", "adamw", "nadam", "amsgrad", "lion", "sgd", "scale_by_adam",
                 "scale_by_amsgrad", "scale_by_lion", "trace", "ema"):  # fmt: skip
        theirs = list(inspect.signature(getattr(optax, name)).parameters.values())
        ours = list(inspect.signature(getattr(gradtx, name)).parameters.values())
        last = next(i for i, p in enumerate(theirs) if p.name.endswith("_dtype"))
        for mine, their in zip(ours[: last + 1], theirs[: last + 1], strict=True):
            assert (mine.name, mine.kind, mine.default) == (their.name, their.kind, their.default)
        for mine in ours[last + 1 :]:
            their = next((p for p in theirs if p.name == mine.name), None)
            if their is None:  # a gradtx option
                assert mine.kind is mine.KEYWORD_ONLY, (name, mine.name)
            else:
                assert (mine.kind, mine.default) == (their.kind, their.default), (name, mine.name)


@pytest.mark.parametrize(
    "build",
    [
        lambda dtype: gradtx.adam(1e-2, mu_dtype=dtype),
        lambda dtype: gradtx.adamw(1e-2, mu_dtype=dtype),
        lambda dtype: gradtx.amsgrad(1e-2, mu_dtype=dtype),
        lambda dtype: gradtx.lion(1e-3, mu_dtype=dtype),
        lambda dtype: gradtx.sgd(1e-2, 0.9, accumulator_dtype=dtype),
    ],
)
def test_a_learner_with_an_optax_dtype_never_reaches_a_fused_kernel(build):
    assert gradtx.is_fused(build(None))  # the same learner without it fuses
    assert not gradtx.is_fused(build(BF16))
    for block in (
        gradtx.scale_by_adam(mu_dtype=BF16),
        gradtx.scale_by_amsgrad(mu_dtype=BF16),
        gradtx.scale_by_lion(mu_dtype=BF16),
        gradtx.trace(0.9, accumulator_dtype=BF16),
    ):
        assert recipe.recipe_of(block) is None


def test_the_fused_update_of_such_a_learner_is_its_plain_update():
    tx = gradtx.adam(1e-2, mu_dtype=BF16)
    params = make_params()
    state = tx.init(params)
    grads = grads_at(params, 0)
    p1, s1 = gradtx.fused_update(tx, grads, state, params)
    updates, s2 = tx.update(grads, state, params)
    chex.assert_trees_all_equal((p1, s1), (gradtx.apply_updates(params, updates), s2))


def test_errors_name_the_arguments():
    with pytest.raises(ValueError, match="adam: give mu_dtype or state_dtype, not both"):
        gradtx.adam(1e-2, mu_dtype=BF16, state_dtype=BF16)
    with pytest.raises(ValueError, match="sgd: give accumulator_dtype or state_dtype, not both"):
        gradtx.sgd(1e-2, 0.9, accumulator_dtype=BF16, state_dtype=BF16)
    with pytest.raises(ValueError, match="sgd: give accumulator_dtype or state_dtype"):
        gradtx.sgd(1e-2, None, accumulator_dtype=BF16, state_dtype=BF16)  # no momentum
    with pytest.raises(ValueError, match="ema: accumulator_dtype must be a floating or complex"):
        gradtx.ema(0.9, accumulator_dtype=jnp.int8)
    with pytest.raises(ValueError, match="lion: mu_dtype must be a floating or complex dtype"):
        gradtx.lion(1e-3, mu_dtype="not a dtype")
    with pytest.raises(ValueError, match="scale_by_amsgrad: give mu_dtype or state_dtype"):
        gradtx.scale_by_amsgrad(mu_dtype=BF16, state_dtype=jnp.float32)


def test_complex_params_take_a_complex_mu_dtype_and_reject_a_real_one():
    """optax would store a complex first moment in a real dtype, dropping its imaginary part
    with only a ComplexWarning; gradtx names the leaf instead."""
    rng = np.random.default_rng(0)
    params = {"z": jnp.asarray(rng.normal(size=4) + 1j * rng.normal(size=4), jnp.complex64)}
    with pytest.raises(ValueError, match=r"mu_dtype=bfloat16 cannot hold .*\['z'\]"):
        gradtx.adam(1e-2, mu_dtype=BF16).init(params)
    ours, theirs = (
        gradtx.adam(1e-2, mu_dtype=jnp.complex64),
        optax.adam(1e-2, mu_dtype=jnp.complex64),
    )
    s1, s2, p1, p2 = ours.init(params), theirs.init(params), params, params
    for t in range(50):
        g = {"z": jnp.conj(p1["z"]) * (1 + 0.1 * t)}
        u1, s1 = ours.update(g, s1, p1)
        u2, s2 = theirs.update({"z": jnp.conj(p2["z"]) * (1 + 0.1 * t)}, s2, p2)
        p1, p2 = gradtx.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    assert_trees_close(p1, p2, rtol=1e-5, atol=1e-6)


def test_vmap_over_the_learning_rate_with_a_narrow_moment():
    params = make_params()

    def train(lr):
        tx = gradtx.adamw(lr, mu_dtype=BF16)
        state, p = tx.init(params), params
        for t in range(5):
            u, state = tx.update(grads_at(p, t), state, p)
            p = gradtx.apply_updates(p, u)
        return p

    lrs = jnp.array([1e-3, 1e-2])
    batched = jax.jit(jax.vmap(train))(lrs)
    for i, lr in enumerate(lrs):
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], batched), jax.jit(train)(lr))


@pytest.mark.parametrize("mode", ["hard", "smooth", "refined"])
def test_scale_by_lion_s_other_optax_options_give_optax_numbers(mode):
    ours = gradtx.scale_by_lion(0.9, 0.99, mode=mode, smooth_beta=3.0)
    theirs = optax.scale_by_lion(0.9, 0.99, mode=mode, smooth_beta=3.0)
    params = make_params()
    s1, s2 = ours.init(params), theirs.init(params)
    for t in range(50):
        g = jax.tree.map(lambda x, t=t: 0.3 * x, grads_at(params, t))
        u1, s1 = ours.update(g, s1)
        u2, s2 = theirs.update(g, s2)
        assert_trees_close(u1, u2, rtol=1e-6)
    assert (recipe.recipe_of(ours) is None) is (mode != "hard")  # kernels take the hard sign
    with pytest.raises(ValueError, match="scale_by_lion: mode must be one of"):
        gradtx.scale_by_lion(mode="soft")
