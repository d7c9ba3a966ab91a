"""grouped(): packing small leaves gives the per-leaf results, with jit, vmap and any tree."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from conftest import assert_trees_close, assert_vmap_equals_loop, make_params, run
from hypothesis import given, settings
from test_trees_property import trees

import gradtx
from gradtx import grouping

LEARNERS = [
    ("sgd", lambda: gradtx.sgd(0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("adagrad", lambda: gradtx.adagrad(0.1)),
    ("rmsprop", lambda: gradtx.rmsprop(0.01, centered=True, momentum=0.5)),
    ("adam", lambda: gradtx.adam(0.01)),
    ("adamw", lambda: gradtx.adamw(0.01, weight_decay=0.1)),
    ("nadam", lambda: gradtx.nadam(0.01)),
    ("amsgrad", lambda: gradtx.amsgrad(0.01)),
    ("adamax", lambda: gradtx.adamax(0.01)),
    ("adadelta", lambda: gradtx.adadelta(0.5)),
    ("lion", lambda: gradtx.lion(0.003)),
    ("clip_adamw", lambda: gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(0.01))),
    ("optax_member", lambda: gradtx.chain(optax.clip(0.5), gradtx.adam(0.01))),
]


def many_leaves(n=70):
    """Enough same-shape leaves for several chunks, plus other shapes, a large leaf and bf16."""
    rng = np.random.default_rng(3)
    tree = {f"v{i:02d}": jnp.asarray(rng.normal(size=16), jnp.float32) for i in range(n)}
    tree["mat"] = [jnp.asarray(rng.normal(size=(3, 5)), jnp.float32) for _ in range(3)]
    tree["big"] = jnp.asarray(rng.normal(size=(80, 80)), jnp.float32)
    tree["half"] = jnp.asarray(rng.normal(size=(4,)), jnp.bfloat16)
    tree["scalar"] = jnp.asarray(0.5, jnp.float32)
    return tree


class GroupedEqualsPerLeaf(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*LEARNERS)
    def test_nested_tree(self, make):
        params = make_params()
        opt, packed = make(), gradtx.grouped(make(), max_leaf_size=20)
        expected = run(opt, params, update=self.variant(opt.update))
        assert_trees_close(run(packed, params, update=self.variant(packed.update)), expected)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*LEARNERS)
    def test_many_chunks_mixed_dtypes(self, make):
        params = many_leaves()
        opt, packed = make(), gradtx.grouped(make())
        state = packed.init(params)
        assert len(state.bases) > 3  # 70 vectors make three chunks, plus the other shapes
        expected = run(opt, params, steps=5, update=self.variant(opt.update))
        actual = run(packed, params, steps=5, update=self.variant(packed.update))
        assert_trees_close(
            jax.tree.map(lambda x: x.astype(jnp.float32), actual),
            jax.tree.map(lambda x: x.astype(jnp.float32), expected),
        )


def test_grouped_clip_adamw_equals_optax_chain():
    params = many_leaves()
    ours = gradtx.grouped(gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-2)))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
    update = jax.jit(ours.update)
    f32 = lambda t: jax.tree.map(lambda x: x.astype(jnp.float32), t)  # noqa: E731
    assert_trees_close(f32(run(ours, params, update=update)), f32(run(theirs, params)))


def test_state_is_packed():
    params = many_leaves()
    state = gradtx.grouped(gradtx.adam(1e-3)).init(params)
    mu = state.inner[1].mu
    assert set(mu["packed"]) == {"float32", "bfloat16"}
    assert mu["packed"]["float32"].shape == (70 * 16 + 3 * 15 + 1,)
    assert [x.shape for x in mu["loose"]] == [(80, 80)]


def test_vmap_over_learning_rate():
    params = many_leaves(40)
    lrs = jnp.array([1e-3, 1e-2, 1e-1])
    train = lambda lr: run(gradtx.grouped(gradtx.adam(lr)), params, steps=5)  # noqa: E731
    assert_vmap_equals_loop(train, lrs)


@settings(max_examples=25, deadline=None)
@given(params=trees)
def test_random_trees(params):
    opt, packed = gradtx.adam(0.1), gradtx.grouped(gradtx.adam(0.1), max_leaf_size=6)
    grads = jax.tree.map(lambda x: jnp.cos(3.0 * x), params)
    s_opt, s_packed = opt.init(params), packed.init(params)
    for _ in range(3):
        u_opt, s_opt = opt.update(grads, s_opt, params)
        u_packed, s_packed = packed.update(grads, s_packed, params)
        chex.assert_trees_all_equal_shapes_and_dtypes(u_packed, params)
        chex.assert_trees_all_close(u_packed, u_opt, rtol=1e-6, atol=1e-7)


def test_layout_keeps_non_floating_large_and_split_leaves_loose():
    signature = (
        ((3,), "int32", False),
        ((2,), "float32", False),
        ((5000,), "float32", False),
        ((2,), "float32", False),
        ((8,), "float32", True),  # split over a mesh axis (explicit sharding)
    )
    layout = grouping._layout(signature, 4096)
    assert layout.loose == (0, 2, 4)
    assert [c.leaves for c in layout.chunks] == [(1, 3)]
    assert layout.sizes == (("float32", 4),)


def test_state_from_another_tree_is_an_error():
    opt = gradtx.grouped(gradtx.adam(1e-3))
    state = opt.init({"a": jnp.zeros(3)})
    with pytest.raises(ValueError, match="grouped: the state was made for a tree packed into 1"):
        opt.update({"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}, state)


def test_updates_and_params_mismatch_names_the_user_path():
    opt = gradtx.grouped(gradtx.adamw(1e-3))
    params = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
    with pytest.raises(gradtx.TreeMismatchError, match=r"grouped: .*\['b'\]"):
        opt.update({"a": jnp.zeros(3), "b": jnp.zeros(4)}, opt.init(params), params)
