"""gradtx.pack and gradtx.packed: leaves in flat buffers give the per-leaf numbers.

pack keeps the params packed for the whole run; packed packs small leaves inside each step.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from conftest import assert_trees_close, assert_vmap_equals_loop, grads_at, make_params, run
from hypothesis import given, settings
from hypothesis import strategies as st
from test_trees_property import trees as property_trees

import gradtx
from gradtx import packing
from gradtx.testing import check_transform

DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)
leaves = st.tuples(shapes, st.integers(0, 2**16), st.sampled_from(DTYPES)).map(
    lambda a: jnp.asarray(np.random.default_rng(a[1]).normal(size=a[0]), a[2])
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3),
        st.dictionaries(st.text("abxy", min_size=1, max_size=2), children, max_size=3),
    ),
    max_leaves=8,
)


@settings(max_examples=40, deadline=None)
@given(trees)
def test_unpack_gives_the_tree_back_with_one_buffer_per_dtype(tree):
    packed = gradtx.pack(tree)
    chex.assert_trees_all_equal(packed.unpack(), tree)
    chex.assert_trees_all_equal_dtypes(packed.unpack(), tree)
    dtypes = {jnp.dtype(x.dtype).name for x in jax.tree.leaves(tree)}
    assert set(packed.buffers) == dtypes
    assert packed.num_leaves == len(jax.tree.leaves(tree))
    for name, buffer in packed.buffers.items():
        sizes = [x.size for x in jax.tree.leaves(tree) if jnp.dtype(x.dtype).name == name]
        assert buffer.shape == (sum(sizes),) and buffer.dtype == jnp.dtype(name)
    # A pytree of its buffers: through jit and tree maps and back.
    again = jax.jit(lambda p: jax.tree.map(lambda b: b * 2, p))(packed)
    chex.assert_trees_all_equal(again.unpack(), jax.tree.map(lambda x: x * 2, tree))


@settings(max_examples=25, deadline=None)
@given(trees)
def test_the_gradient_of_a_packed_tree_is_the_packed_gradient(tree):
    def loss(t):
        terms = [jnp.sum(jnp.sin(x.astype(jnp.float32))) * i for i, x in enumerate(
            jax.tree.leaves(t))]  # fmt: skip
        return sum(terms, jnp.float32(0))

    packed = gradtx.pack(tree)
    grads = jax.jit(jax.grad(lambda p: loss(p.unpack())))(packed)
    assert isinstance(grads, gradtx.Packed)
    chex.assert_trees_all_equal(grads.unpack(), jax.grad(loss)(tree))


LEARNERS = {
    "sgd momentum": lambda: gradtx.sgd(0.05, 0.9, weight_decay=1e-3),
    "adam": lambda: gradtx.adam(1e-2),
    "adamw": lambda: gradtx.adamw(1e-2, weight_decay=1e-2),
    "rmsprop centered": lambda: gradtx.rmsprop(1e-2, centered=True, momentum=0.5),
    "adagrad": lambda: gradtx.adagrad(0.1),
    "lion": lambda: gradtx.lion(1e-3),
    "clip + adamw": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(0.05), gradtx.adamw(1e-2, weight_decay=1e-2)
    ),
}


def _train(opt, params, update, steps=15):
    state = opt.init(params)
    for t in range(steps):
        leaves = params.unpack() if isinstance(params, gradtx.Packed) else params
        grads = grads_at(leaves, t)
        if isinstance(params, gradtx.Packed):
            grads = params.repack(grads)
        params, state = update(opt, grads, state, params)
    return params, state


def _plain(opt, grads, state, params):
    updates, state = opt.update(grads, state, params)
    return gradtx.apply_updates(params, updates), state


class LearnersOnPackedParamsTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_learners_on_packed_params_equal_the_per_leaf_path(self):
        update = self.variant(_plain, static_argnums=0)
        for make in LEARNERS.values():
            packed, _ = _train(make(), gradtx.pack(make_params()), update)
            tree, _ = _train(make(), make_params(), update)
            assert_trees_close(packed.unpack(), tree, rtol=1e-6, atol=1e-7)


def test_fused_update_on_packed_params_is_one_call_with_the_same_numbers():
    opt = gradtx.adamw(1e-2, weight_decay=1e-2)
    params = gradtx.pack(make_params())
    fused = jax.jit(gradtx.fused_update, static_argnums=0)
    hlo = fused.lower(opt, params, opt.init(params), params).compile().as_text()
    assert hlo.count('custom_call_target="gradtx_adam"') == 1
    ours, _ = _train(opt, params, fused)
    theirs, _ = _train(opt, make_params(), jax.jit(_plain, static_argnums=0))
    assert_trees_close(ours.unpack(), theirs)


def test_vmap_over_learning_rates_on_packed_params():
    params = gradtx.pack(make_params())

    def train(lr):
        return _train(gradtx.adam(lr), params, _plain, steps=5)[0]

    assert_vmap_equals_loop(train, [1e-3, 1e-2, 0.1])


def _decays(tree):
    return jax.tree.map(lambda x: x.ndim > 1, tree)


def test_a_weight_decay_mask_reads_the_unpacked_tree_when_packed_by_it():
    opt = gradtx.adamw(1e-2, weight_decay=0.1, mask=_decays)
    packed = gradtx.pack(make_params(), groups=_decays)
    assert set(packed.buffers) == {"True/float32", "False/float32"}
    ours, _ = _train(opt, packed, _plain)
    theirs, _ = _train(opt, make_params(), _plain)
    assert_trees_close(ours.unpack(), theirs)
    # and optax's adamw with the same mask agrees (it sees the mask per buffer)
    reference = optax.adamw(1e-2, weight_decay=0.1, mask=lambda p: p.buffer_labels(_decays(
        p.unpack())))  # fmt: skip
    assert_trees_close(_train(reference, packed, _plain)[0].unpack(), theirs)


def test_partition_and_masked_read_labels_for_the_unpacked_tree():
    params = make_params()
    labels = jax.tree.map(lambda x: "matrix" if x.ndim > 1 else "vector", params)
    packed = gradtx.pack(params, groups=labels)
    part = gradtx.partition({"matrix": gradtx.adam(1e-2), "vector": gradtx.sgd(0.1)}, labels)
    masked = gradtx.chain(gradtx.masked(gradtx.scale(0.5), _decays), gradtx.sgd(0.1))
    for opt in (part, masked):
        ours, _ = _train(opt, packed, _plain)
        assert_trees_close(ours.unpack(), _train(opt, params, _plain)[0])


def test_labels_that_split_a_buffer_say_to_pack_by_them():
    opt = gradtx.adamw(1e-2, weight_decay=0.1, mask=_decays)
    packed = gradtx.pack(make_params())
    with pytest.raises(
        ValueError,
        match=r"add_decayed_weights: buffer 'float32' .*"
        r"labelled (True|False) \(at \[.*\]\) and (True|False).*groups=labels",
    ):
        opt.update(packed, opt.init(packed), packed)
    with pytest.raises(ValueError, match=r"masked: buffer 'float32'"):
        gradtx.masked(gradtx.scale(0.5), _decays).init(packed)


def test_a_non_floating_leaf_is_named():
    with pytest.raises(TypeError, match=r"pack: the leaf at \['step'\] is dtype int32"):
        gradtx.pack({"w": jnp.ones(3), "step": jnp.int32(0)})
    with pytest.raises(TypeError, match=r"pack: the leaf at \['n'\] is int"):
        gradtx.pack({"w": jnp.ones(3), "n": 3})


def test_groups_not_shaped_like_the_tree_are_refused():
    with pytest.raises(ValueError, match="pack: groups must be shaped like the unpacked tree"):
        gradtx.pack({"a": jnp.ones(2), "b": jnp.ones(2)}, groups={"a": 1})


def test_unpacking_what_is_not_a_packed_array_says_so():
    labels = gradtx.pack({"a": jnp.ones(2)}).buffer_labels({"a": "x"})
    with pytest.raises(TypeError, match="Packed.unpack: buffer 'float32' is str"):
        labels.unpack()


def test_a_train_step_and_a_checkpoint_of_packed_params():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    batch = (x, x @ rng.normal(size=(4, 2)).astype(np.float32))

    def loss(params, batch):
        tree = params.unpack() if isinstance(params, gradtx.Packed) else params
        return jnp.mean((jnp.tanh(batch[0] @ tree["w"] + tree["b"]) - batch[1]) ** 2)

    tree = {"w": jnp.full((4, 2), 0.1), "b": jnp.zeros(2)}
    learner = gradtx.adam(1e-2)
    results = []
    for params, fused in ((tree, False), (gradtx.pack(tree), False), (gradtx.pack(tree), True)):
        step = gradtx.make_train_step(loss, learner, donate=False, fused=fused)
        state = learner.init(params)
        for _ in range(5):
            params, state, metrics = step(params, state, batch)
        results.append((params, state, metrics["loss"]))
    for params, _, value in results[1:]:
        assert_trees_close(params.unpack(), results[0][0])
        np.testing.assert_allclose(value, results[0][2], rtol=1e-6)
    params, state, _ = results[1]
    restored = gradtx.load_state_dict(state, gradtx.state_dict(state))
    chex.assert_trees_all_equal(restored, state)


def test_a_checkpoint_keys_a_packed_moment_by_buffer():
    # float32 first: the buffers' order is not the sorted order of their keys
    tree = {"a": jnp.ones(3), "b": jnp.full(2, 2.0, jnp.bfloat16)}
    params = gradtx.pack(tree)
    opt = gradtx.adam(1e-2)
    state = opt.init(params)
    _, state = opt.update(params.repack({"a": jnp.ones(3), "b": jnp.ones(2)}), state, params)
    saved = gradtx.state_dict(state)
    assert set(saved["0"]["mu"]) == {"float32", "bfloat16"}
    assert saved["0"]["mu"]["float32"].shape == (3,)
    chex.assert_trees_all_equal(gradtx.load_state_dict(state, saved), state)


def test_repack_casts_and_names_a_wrong_shape():
    params = gradtx.pack({"w": jnp.ones((2, 2), jnp.bfloat16), "b": jnp.ones(2)})
    again = params.repack({"w": np.full((2, 2), 3.0), "b": np.zeros(2)})
    assert again.buffers["bfloat16"].dtype == jnp.bfloat16
    chex.assert_trees_all_equal(again.unpack()["w"], jnp.full((2, 2), 3.0, jnp.bfloat16))
    with pytest.raises(ValueError, match=r"repack: the leaf at \['b'\] has shape \(3,\), the "):
        params.repack({"w": np.ones((2, 2)), "b": np.ones(3)})
    with pytest.raises(ValueError, match="repack: the tree must be shaped like the unpacked"):
        params.repack({"w": np.ones((2, 2))})


@pytest.mark.parametrize("name", ["adamw", "clip + adamw", "rmsprop centered"])
def test_learners_on_packed_params_pass_the_property_checks(name):
    check_transform(LEARNERS[name](), gradtx.pack(make_params()), name=name)


# -- packed: small leaves packed inside each step ----------------------------------------------


STEP_LEARNERS = [
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


class PackedEqualsPerLeaf(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*STEP_LEARNERS)
    def test_nested_tree(self, make):
        params = make_params()
        opt, packed = make(), gradtx.packed(make(), max_leaf_size=20)
        expected = run(opt, params, update=self.variant(opt.update))
        assert_trees_close(run(packed, params, update=self.variant(packed.update)), expected)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*STEP_LEARNERS)
    def test_many_chunks_mixed_dtypes(self, make):
        params = many_leaves()
        opt, packed = make(), gradtx.packed(make())
        state = packed.init(params)
        assert len(state.bases) > 3  # 70 vectors make three chunks, plus the other shapes
        expected = run(opt, params, steps=5, update=self.variant(opt.update))
        actual = run(packed, params, steps=5, update=self.variant(packed.update))
        assert_trees_close(
            jax.tree.map(lambda x: x.astype(jnp.float32), actual),
            jax.tree.map(lambda x: x.astype(jnp.float32), expected),
        )


def test_packed_clip_adamw_equals_optax_chain():
    params = many_leaves()
    ours = gradtx.packed(gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-2)))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-2))
    update = jax.jit(ours.update)
    f32 = lambda t: jax.tree.map(lambda x: x.astype(jnp.float32), t)  # noqa: E731
    assert_trees_close(f32(run(ours, params, update=update)), f32(run(theirs, params)))


def test_state_is_packed():
    params = many_leaves()
    state = gradtx.packed(gradtx.adam(1e-3)).init(params)
    mu = state.inner[0].mu
    assert set(mu["packed"]) == {"float32", "bfloat16"}
    assert mu["packed"]["float32"].shape == (70 * 16 + 3 * 15 + 1,)
    assert [x.shape for x in mu["loose"]] == [(80, 80)]


def test_vmap_over_learning_rate():
    params = many_leaves(40)
    lrs = jnp.array([1e-3, 1e-2, 1e-1])
    train = lambda lr: run(gradtx.packed(gradtx.adam(lr)), params, steps=5)  # noqa: E731
    assert_vmap_equals_loop(train, lrs)


@settings(max_examples=25, deadline=None)
@given(params=property_trees)
def test_random_trees(params):
    opt, packed = gradtx.adam(0.1), gradtx.packed(gradtx.adam(0.1), max_leaf_size=6)
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
    treedef = jax.tree.structure([0] * len(signature))
    layout = packing._small_leaves(treedef, signature, 4096)
    assert layout.loose() == [0, 2, 4]
    assert packing._runs(layout) == [[1, 3]]
    assert (layout.keys, layout.size(0)) == (("float32",), 4)


def test_state_from_another_tree_is_an_error():
    opt = gradtx.packed(gradtx.adam(1e-3))
    state = opt.init({"a": jnp.zeros(3)})
    with pytest.raises(ValueError, match="packed: the state was made for a tree packed into 1"):
        opt.update({"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}, state)


def test_updates_and_params_mismatch_names_the_user_path():
    opt = gradtx.packed(gradtx.adamw(1e-3))
    params = {"a": jnp.zeros(3), "b": jnp.zeros(2)}
    with pytest.raises(gradtx.TreeMismatchError, match=r"packed: .*\['b'\]"):
        opt.update({"a": jnp.zeros(3), "b": jnp.zeros(4)}, opt.init(params), params)


def test_the_01_names_still_work_and_say_what_they_are_now():
    params = many_leaves(10)
    with pytest.warns(DeprecationWarning, match="gradtx.grouped is gradtx.packed"):
        old = gradtx.grouped(gradtx.adam(1e-2))
    state = old.init(params)
    assert isinstance(state, gradtx.GroupedState) and gradtx.GroupedState is gradtx.PackedState
    new = gradtx.packed(gradtx.adam(1e-2))
    chex.assert_trees_all_equal(old.update(params, state), new.update(params, new.init(params)))
    packed = gradtx.pack({"a": jnp.ones(2), "b": jnp.ones(3)}, groups={"a": "x", "b": "y"})
    with pytest.warns(DeprecationWarning, match="group_labels is Packed.buffer_labels"):
        labels = packed.group_labels({"a": "x", "b": "y"})
    assert labels.buffers == packed.buffer_labels({"a": "x", "b": "y"}).buffers
