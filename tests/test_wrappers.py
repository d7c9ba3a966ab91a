"""inject_hyperparams / get_hyperparams / set_hyperparams: live values without recompiling."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from conftest import assert_trees_close, grads_at, make_params, run

import gradtx

S = gradtx.schedules


class InjectTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("sgd", gradtx.sgd, dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
        ("adam", gradtx.adam, dict(learning_rate=1e-2, b1=0.8)),
        (
            "adamw_schedule",
            gradtx.adamw,
            dict(learning_rate=S.warmup(S.cosine_decay(1e-2, 20), 5), weight_decay=0.1),
        ),
        ("rmsprop", gradtx.rmsprop, dict(learning_rate=1e-2, centered=True, momentum=0.5)),
    )
    def test_same_numbers_as_the_plain_learner(self, factory, kwargs):
        params = make_params()
        injected = gradtx.inject_hyperparams(factory)(**kwargs)
        assert_trees_close(
            run(injected, params, update=self.variant(injected.update)),
            run(factory(**kwargs), params),
        )


def test_paths_through_chains_and_partitions():
    params = {"a": jnp.ones(3), "b": jnp.ones(2)}
    opt = gradtx.chain(
        gradtx.clip_by_global_norm(1.0),
        gradtx.partition(
            {
                "slow": gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1, momentum=0.9),
                "fast": gradtx.inject_hyperparams(gradtx.adam)(learning_rate=S.linear(0.1, 0.0, 4)),
            },
            {"a": "slow", "b": "fast"},
        ),
    )
    state = opt.init(params)
    for _ in range(3):
        _, state = opt.update(params, state, params)
    found = gradtx.get_hyperparams(state)
    assert set(found) == {"slow/learning_rate", "slow/momentum", "fast/learning_rate"}
    np.testing.assert_allclose(found["fast/learning_rate"], 0.1 - 0.1 * 2 / 4)  # used at count 2
    assert all(v.dtype == jnp.float32 for v in found.values())


def test_set_changes_the_next_update_without_recompiling():
    params = {"w": jnp.ones(3)}
    opt = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)
    step = jax.jit(lambda g, s, p: opt.update(g, s, p))
    state = opt.init(params)
    updates, state = step(params, state, params)
    np.testing.assert_allclose(updates["w"], -0.1)
    for lr in (0.01, 0.5, 2.0):
        state = gradtx.set_hyperparams(state, learning_rate=lr)
        updates, state = step(params, state, params)
        np.testing.assert_allclose(updates["w"], -lr, rtol=1e-6)
    assert step._cache_size() == 1


def test_torch_lab_two_groups_with_a_learning_rate_cut():
    """SGD(momentum=0.9): group 1 weight decay 5e-4, group 2 1e-3; group 2's lr x0.1 at
    steps 6 and 11, against torch's SGD rule written in NumPy."""
    params = make_params()
    labels = {"dense": ["g1", "g1"], "conv": ["g2"], "head": ["g2", "g1"]}
    group = lambda wd: gradtx.inject_hyperparams(gradtx.sgd)(  # noqa: E731
        learning_rate=0.05, momentum=0.9, weight_decay=wd
    )
    opt = gradtx.partition({"g1": group(5e-4), "g2": group(1e-3)}, labels)
    state = opt.init(params)
    step = jax.jit(opt.update)
    p = params
    for t in range(15):
        if t in (6, 11):
            lr = gradtx.get_hyperparams(state)["g2/learning_rate"]
            state = gradtx.set_hyperparams(state, "g2/learning_rate", lr * 0.1)
        updates, state = step(grads_at(p, t), state, p)
        p = gradtx.apply_updates(p, updates)
    assert step._cache_size() == 1

    leaves, treedef = jax.tree.flatten(params)
    group_of = jax.tree.leaves(labels)
    ref = [np.asarray(x, np.float64) for x in leaves]
    bufs = [None] * len(ref)
    lrs = {"g1": 0.05, "g2": 0.05}
    for t in range(15):
        if t in (6, 11):
            lrs["g2"] *= 0.1
        grads = jax.tree.leaves(grads_at(jax.tree.unflatten(treedef, ref), t))
        for i, (x, g) in enumerate(zip(ref, grads, strict=True)):
            g = np.asarray(g, np.float64) + (5e-4 if group_of[i] == "g1" else 1e-3) * x
            bufs[i] = g if bufs[i] is None else 0.9 * bufs[i] + g
            ref[i] = x - lrs[group_of[i]] * bufs[i]
    for actual, expected in zip(jax.tree.leaves(p), ref, strict=True):
        np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=1e-6)


def test_hyperparameters_stay_float32_for_bfloat16_params():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    state = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=1e-3).init(params)
    assert gradtx.get_hyperparams(state)["learning_rate"].dtype == jnp.float32


def test_vmap_over_an_injected_learning_rate():
    params = make_params()

    def train(lr):
        return run(gradtx.inject_hyperparams(gradtx.adam)(learning_rate=lr), params, steps=5)

    lrs = jnp.array([1e-3, 1e-2, 1e-1])
    batched = jax.jit(jax.vmap(train))(lrs)
    for i, lr in enumerate(lrs):
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], batched), jax.jit(train)(lr))


def test_errors():
    state = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=S.constant(0.1)).init(
        {"w": jnp.ones(2)}
    )
    with pytest.raises(ValueError, match="learning_rate is driven by a schedule"):
        gradtx.set_hyperparams(state, learning_rate=0.2)
    with pytest.raises(KeyError, match="no hyperparameter 'momentum'"):
        gradtx.set_hyperparams(state, momentum=0.2)
    with pytest.raises(TypeError, match="pass hyperparameters by name"):
        gradtx.inject_hyperparams(gradtx.adam)(0.1)
    with pytest.raises(ValueError, match="adam: b1 must be in"):
        gradtx.inject_hyperparams(gradtx.adam)(learning_rate=0.1, b1=2.0)
