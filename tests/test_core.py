"""The protocol: chain, identity, stateless, apply_updates, tree-mismatch errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_params

import gradtx


class CoreTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_identity_and_chain_of_scales(self):
        params = {"a": jnp.arange(3.0), "b": [jnp.ones((2, 2))]}
        opt = gradtx.chain(gradtx.identity(), gradtx.scale(2.0), gradtx.scale(-0.25))
        state = opt.init(params)
        assert isinstance(state, tuple) and len(state) == 3
        updates, _ = self.variant(opt.update)(params, state, params)
        chex.assert_trees_all_close(updates, jax.tree.map(lambda x: -0.5 * x, params))

    @chex.variants(with_jit=True, without_jit=True)
    def test_stateless_sees_params_and_extras(self):
        def decay_toward_zero(updates, params, scale=1.0):
            return jax.tree.map(lambda g, p: g + scale * p, updates, params)

        opt = gradtx.stateless(decay_toward_zero)
        params = {"w": jnp.array([1.0, -2.0])}
        grads = {"w": jnp.array([0.5, 0.5])}
        updates, state = self.variant(lambda g, s, p: opt.update(g, s, p, scale=3.0, value=9.0))(
            grads, opt.init(params), params
        )
        np.testing.assert_allclose(updates["w"], [3.5, -5.5])
        assert state == gradtx.EmptyState()


def test_apply_updates_keeps_dtypes():
    params = {"bf16": jnp.array([1.0, 2.0], jnp.bfloat16), "f32": jnp.array([1.0, 2.0])}
    updates = {"bf16": jnp.array([0.5, 0.25], jnp.float32), "f32": jnp.array([0.5, 0.25])}
    out = gradtx.apply_updates(params, updates)
    assert out["bf16"].dtype == jnp.bfloat16 and out["f32"].dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(out["bf16"], np.float32), [1.5, 2.25])


def test_bfloat16_params_stay_bfloat16_through_a_learner():
    params = make_params(dtype=jnp.bfloat16)
    opt = gradtx.adamw(1e-2)
    state = opt.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    for _ in range(3):
        updates, state = jax.jit(opt.update)(grads, state, params)
        params = gradtx.apply_updates(params, updates)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))


def test_chain_rejects_a_factory_that_was_not_called():
    with pytest.raises(TypeError, match=r"chain: argument 1 .*scale_by_adam\(\)"):
        gradtx.chain(gradtx.identity(), gradtx.scale_by_adam)


def test_chain_rejects_a_state_of_the_wrong_length():
    opt = gradtx.chain(gradtx.scale(1.0), gradtx.scale(2.0))
    with pytest.raises(ValueError, match="state has 1 entries but the chain has 2"):
        opt.update({"w": jnp.ones(2)}, (gradtx.EmptyState(),))


class TreeMismatchTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_missing_leaf_names_the_path(self):
        params = {"layer": [jnp.ones((3, 4)), jnp.ones(4)]}
        opt = gradtx.adam(0.1)
        state = opt.init(params)
        grads = {"layer": [jnp.ones((3, 4))]}
        with pytest.raises(gradtx.TreeMismatchError, match=r"\['layer'\]\[1\]"):
            self.variant(opt.update)(grads, state, params)

    @chex.variants(with_jit=True, without_jit=True)
    def test_shape_mismatch_names_path_and_both_shapes(self):
        params = {"layer": [jnp.ones((3, 4)), jnp.ones(4)]}
        opt = gradtx.sgd(0.1, momentum=0.9)
        state = opt.init(params)
        grads = {"layer": [jnp.ones((4, 3)), jnp.ones(4)]}
        with pytest.raises(
            gradtx.TreeMismatchError,
            match=r"trace: .*\['layer'\]\[0\]: updates has shape \(4, 3\), "
            r"state.trace has shape \(3, 4\)",
        ):
            self.variant(opt.update)(grads, state, params)

    def test_broadcastable_shapes_are_still_an_error(self):
        params = {"w": jnp.ones(3)}
        opt = gradtx.rmsprop(0.1)
        with pytest.raises(gradtx.TreeMismatchError, match=r"\['w'\]"):
            opt.update({"w": jnp.ones((1, 3))}, opt.init(params), params)

    def test_apply_updates_mismatch(self):
        with pytest.raises(gradtx.TreeMismatchError, match=r"apply_updates: .*\['b'\]"):
            gradtx.apply_updates({"a": jnp.ones(2), "b": jnp.ones(2)}, {"a": jnp.ones(2)})

    def test_weight_decay_checks_params_against_updates(self):
        opt = gradtx.adamw(0.1, weight_decay=0.1)
        params = {"w": jnp.ones(2)}
        state = opt.init(params)
        with pytest.raises(gradtx.TreeMismatchError, match=r"add_decayed_weights: .*\['v'\]"):
            opt.update(params, state, {"w": jnp.ones(2), "v": jnp.ones(2)})

    def test_weight_decay_needs_params(self):
        opt = gradtx.adamw(0.1)
        params = {"w": jnp.ones(2)}
        with pytest.raises(ValueError, match="add_decayed_weights: update needs params"):
            opt.update(params, opt.init(params))
