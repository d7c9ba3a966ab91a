"""partition, freeze, masked and groups_by_path against optax run on each group separately."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close, assert_vmap_equals_loop, grads_at, make_params

import gradtx


def _steps(opt, params, steps=10, update=None):
    update = update or opt.update
    state = opt.init(params)
    for t in range(steps):
        updates, state = update(grads_at(params, t), state, params)
        params = gradtx.apply_updates(params, updates)
    return params


def _sub(tree, keys):
    return {k: tree[k] for k in keys}


class PartitionTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_each_group_equals_its_learner_alone(self):
        params = make_params()  # keys: conv, dense, head
        labels = {"dense": ["fast", "fast"], "conv": ["slow"], "head": ["fast", "none"]}
        opt = gradtx.partition(
            {
                "fast": gradtx.adam(1e-2),
                "slow": gradtx.sgd(1e-2, momentum=0.9),
                "none": gradtx.set_to_zero(),
            },
            labels,
        )
        ours = _steps(opt, params, update=self.variant(opt.update))
        # Oracle: optax on each group's leaves alone, driven by the same gradients.
        fast = {"dense": params["dense"], "head": [params["head"][0]]}
        ref_fast = optax.adam(1e-2)
        ref_slow = optax.sgd(1e-2, momentum=0.9)
        s_fast, s_slow = ref_fast.init(fast), ref_slow.init({"conv": params["conv"]})
        p = params
        for t in range(10):
            g = grads_at(p, t)
            u_fast, s_fast = ref_fast.update({"dense": g["dense"], "head": [g["head"][0]]}, s_fast)
            u_slow, s_slow = ref_slow.update({"conv": g["conv"]}, s_slow)
            p = {
                "dense": optax.apply_updates(p["dense"], u_fast["dense"]),
                "head": [p["head"][0] + u_fast["head"][0], p["head"][1]],
                "conv": optax.apply_updates(p["conv"], u_slow["conv"]),
            }
        assert_trees_close(ours, p)
        np.testing.assert_array_equal(ours["head"][1], params["head"][1])

    def test_cntk_pattern_frozen_leaves_are_bitwise_unchanged(self):
        params = make_params(3)
        labels = lambda p: {"dense": ["a", "a"], "conv": ["b"], "head": ["frozen", "frozen"]}  # noqa: E731
        opt = gradtx.partition(
            {
                "a": gradtx.cntk.momentum_sgd(0.1, 0.9),
                "b": gradtx.cntk.adam(0.01, 0.9),
                "frozen": gradtx.set_to_zero(),
            },
            labels,
        )
        state = opt.init(params)
        update = jax.jit(lambda g, s, p: opt.update(g, s, p, batch_size=8))
        p = params
        for t in range(10):
            u, state = update(grads_at(p, t), state, p)
            p = gradtx.apply_updates(p, u)
        for before, after in zip(params["head"], p["head"], strict=True):
            assert np.asarray(before).tobytes() == np.asarray(after).tobytes()
        assert not np.allclose(p["dense"][0], params["dense"][0])
        assert not np.allclose(p["conv"][0], params["conv"][0])

    def test_state_holds_only_each_groups_leaves(self):
        params = {"a": jnp.ones(3), "b": jnp.ones(4)}
        opt = gradtx.partition(
            {"x": gradtx.adam(0.1), "y": gradtx.set_to_zero()}, {"a": "x", "b": "y"}
        )
        state = opt.init(params)
        mu = state.inner_states["x"].inner_state[0].mu  # optax's field names
        assert jax.tree.leaves(mu)[0].shape == (3,) and len(jax.tree.leaves(mu)) == 1
        assert jax.tree.leaves(state.inner_states["y"]) == []

    def test_vmap_over_a_groups_learning_rate(self):
        params = make_params()
        labels = {"dense": ["u", "u"], "conv": ["v"], "head": ["u", "v"]}

        def train(lr):
            return _steps(
                gradtx.partition({"u": gradtx.adam(lr), "v": gradtx.sgd(0.01)}, labels),
                params,
                steps=5,
            )

        lrs = jnp.array([1e-3, 1e-2, 1e-1])
        assert_vmap_equals_loop(train, lrs)


class MaskedTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_masked_equals_optax_masked(self):
        params = make_params()
        mask = {"dense": [True, False], "conv": [True], "head": [False, True]}
        for m in (mask, lambda p: mask):
            ours = gradtx.masked(gradtx.adam(1e-2), m)
            theirs = optax.masked(optax.adam(1e-2), m)
            assert_trees_close(
                _steps(ours, params, update=self.variant(ours.update)), _steps(theirs, params)
            )

    def test_all_true_and_all_false_masks(self):
        params = make_params()
        everywhere = jax.tree.map(lambda _: True, params)
        nowhere = jax.tree.map(lambda _: False, params)
        assert_trees_close(
            _steps(gradtx.masked(gradtx.adam(1e-2), everywhere), params),
            _steps(gradtx.adam(1e-2), params),
        )
        unchanged = _steps(gradtx.masked(gradtx.adam(1e-2), nowhere), params, steps=1)
        g = grads_at(params, 0)
        assert_trees_close(unchanged, jax.tree.map(lambda p, u: p + u, params, g))


def test_groups_by_path_first_match_wins():
    params = {
        "encoder": [{"w": 1.0, "bias": 2.0}],
        "decoder": {"norm": {"scale": 3.0}, "w": 4.0},
        "bias": 5.0,
    }
    labels = gradtx.groups_by_path(
        {"encoder/**": "slow", "**/bias": "no_decay", "decoder/*/scale": "no_decay"},
        params,
        default="main",
    )
    assert labels == {
        "encoder": [{"w": "slow", "bias": "slow"}],
        "decoder": {"norm": {"scale": "no_decay"}, "w": "main"},
        "bias": "no_decay",
    }
    single = gradtx.groups_by_path({"decoder/*": "d"}, params, default="other")
    assert single["decoder"] == {"norm": {"scale": "other"}, "w": "d"}


def test_label_without_transform_names_label_and_paths():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    opt = gradtx.partition({"x": gradtx.sgd(0.1)}, {"a": "x", "b": "y"})
    with pytest.raises(
        ValueError,
        match=r"partition: label 'y' has no transform; it labels "
        r"\[\"\['b'\]\"\]",
    ):
        opt.init(params)


def test_transform_without_leaves_names_it():
    opt = gradtx.partition({"x": gradtx.sgd(0.1), "z": gradtx.adam(0.1)}, {"a": "x"})
    with pytest.raises(ValueError, match="partition: transform 'z' has no leaves"):
        opt.init({"a": jnp.ones(2)})


def test_label_tree_must_match_params():
    opt = gradtx.partition({"x": gradtx.sgd(0.1)}, {"a": "x"})
    with pytest.raises(gradtx.TreeMismatchError, match=r"partition: .*\['b'\]"):
        opt.init({"a": jnp.ones(2), "b": jnp.ones(2)})


def test_label_on_a_subtree_labels_its_leaves():
    params = [{"w": jnp.ones((2, 3)), "b": jnp.ones(3)}, {"w": jnp.ones((3, 1)), "b": jnp.ones(1)}]
    grads = jax.tree.map(lambda p: p * 2.0, params)
    transforms = {"body": gradtx.sgd(0.1), "head": gradtx.adam(0.01)}
    prefix = gradtx.partition(transforms, ["body", "head"])
    full = gradtx.partition(transforms, [{"w": "body", "b": "body"}, {"w": "head", "b": "head"}])
    ours, _ = prefix.update(grads, prefix.init(params), params)
    expected, _ = full.update(grads, full.init(params), params)
    assert_trees_close(ours, expected, rtol=0)
    np.testing.assert_allclose(ours[0]["w"], -0.2)  # sgd: -lr * g
    np.testing.assert_allclose(ours[1]["w"], -0.01, rtol=1e-5)  # Adam's first step
    masked = gradtx.masked(gradtx.scale(0.0), [True, False])
    out, _ = masked.update(grads, masked.init(params), params)
    assert not out[0]["w"].any() and (out[1]["w"] == 2.0).all()


def test_label_mismatch_names_the_path_without_inventing_shapes():
    opt = gradtx.partition({"x": gradtx.sgd(0.1)}, {"a": "x", "c": "x"})
    with pytest.raises(gradtx.TreeMismatchError) as error:
        opt.init({"a": jnp.ones(2), "b": jnp.ones(2)})
    assert str(error.value) == (
        "partition: labels must be shaped like the params, or label whole subtrees of them: "
        "params have a leaf at ['b'] and labels have none"
    )


# Masks and labels that do not fit the params raise, as optax does, naming the path.
TWO_LAYERS = {"layer1": jnp.ones(2), "layer2": jnp.full(2, 2.0)}


@pytest.mark.parametrize(
    "mask, path",
    [
        ({"layer1": True}, "params have a leaf at ['layer2'] and mask has none"),
        ({"layer1": False}, "params have a leaf at ['layer2'] and mask has none"),
        (
            {"layer1": True, "layer2": False, "layer3": True},
            "mask has a label at ['layer3'] and params have no leaf there",
        ),
        (
            {"layer1": {"w": True}, "layer2": True},
            "mask has a label at ['layer1']['w'], inside the leaf at ['layer1']",
        ),
    ],
)
def test_a_mask_that_does_not_fit_raises_naming_the_path(mask, path):
    for make in (
        lambda m: gradtx.masked(gradtx.set_to_zero(), m),
        lambda m: gradtx.adamw(0.1, mask=m),
        lambda m: gradtx.add_decayed_weights(0.1, m),
    ):
        tx = make(mask)
        with pytest.raises(gradtx.TreeMismatchError) as error:
            tx.update(TWO_LAYERS, tx.init(TWO_LAYERS), TWO_LAYERS)
        assert path in str(error.value)
    # The oracle: optax refuses the same masks (it used to freeze layer2 here as well).
    with pytest.raises(ValueError):
        opt = optax.masked(optax.set_to_zero(), mask)
        opt.update(TWO_LAYERS, opt.init(TWO_LAYERS), TWO_LAYERS)


def test_masked_with_a_fitting_mask_freezes_only_what_it_says():
    tx = gradtx.masked(gradtx.set_to_zero(), {"layer1": True, "layer2": False})
    ours, _ = tx.update(TWO_LAYERS, tx.init(TWO_LAYERS), TWO_LAYERS)
    opt = optax.masked(optax.set_to_zero(), {"layer1": True, "layer2": False})
    theirs, _ = opt.update(TWO_LAYERS, opt.init(TWO_LAYERS), TWO_LAYERS)
    assert_trees_close(ours, theirs, rtol=0)
    np.testing.assert_array_equal(ours["layer2"], 2.0)  # passed through
    nothing = gradtx.masked(gradtx.set_to_zero(), {"layer1": False, "layer2": False})
    out, _ = nothing.update(TWO_LAYERS, nothing.init(TWO_LAYERS), TWO_LAYERS)
    assert_trees_close(out, TWO_LAYERS, rtol=0)


def test_partition_labels_that_do_not_fit_raise_naming_the_path():
    opt = gradtx.partition({"a": gradtx.sgd(0.1), "b": gradtx.set_to_zero()}, {"layer1": "a"})
    with pytest.raises(gradtx.TreeMismatchError, match=r"params have a leaf at \['layer2'\]"):
        opt.init(TWO_LAYERS)
    with pytest.raises(ValueError):
        optax.partition({"a": optax.sgd(0.1), "b": optax.set_to_zero()}, {"layer1": "a"}).init(
            TWO_LAYERS
        )


def test_an_equinox_module_is_a_mask_tree_not_a_mask_function():
    eqx = pytest.importorskip("equinox")
    model = eqx.nn.MLP(3, 2, 8, 2, key=jax.random.PRNGKey(0))
    params = eqx.filter(model, eqx.is_array)
    mask = jax.tree.map(lambda x: x.ndim > 1, params)  # an MLP of bools: callable, and a tree
    assert callable(mask)
    grads = jax.tree.map(jnp.ones_like, params)

    frozen = gradtx.masked(gradtx.set_to_zero(), mask)
    out, _ = frozen.update(grads, frozen.init(params), params)
    for w, u in zip(jax.tree.leaves(params), jax.tree.leaves(out), strict=True):
        np.testing.assert_array_equal(u, 0.0 if w.ndim > 1 else 1.0)

    # adamw's decay mask, and partition's labels: optax's numbers, with the mask as a function.
    ours = gradtx.adamw(0.1, weight_decay=0.5, mask=mask)
    theirs = optax.adamw(0.1, weight_decay=0.5, mask=lambda _: mask)
    u1, _ = ours.update(grads, ours.init(params), params)
    u2, _ = theirs.update(grads, theirs.init(params), params)
    assert_trees_close(u1, u2, rtol=0)
    labels = jax.tree.map(lambda x: "w" if x.ndim > 1 else "b", params)
    split = gradtx.partition({"w": gradtx.sgd(0.1), "b": gradtx.set_to_zero()}, labels)
    u3, _ = split.update(grads, split.init(params), params)
    for w, u in zip(jax.tree.leaves(params), jax.tree.leaves(u3), strict=True):
        np.testing.assert_allclose(u, -0.1 if w.ndim > 1 else 0.0)
