"""inject_hyperparams / get_hyperparams / set_hyperparams: live values without recompiling."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from conftest import assert_trees_close, assert_vmap_equals_loop, grads_at, make_params, run

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
    assert_vmap_equals_loop(train, lrs)


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


class ApplyIfFiniteTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_nan_steps_are_as_if_they_never_happened(self):
        params = make_params()
        opt = gradtx.apply_if_finite(gradtx.adam(1e-2), max_consecutive_errors=3)
        update = self.variant(opt.update)
        state, p = opt.init(params), params
        for t in range(10):
            g = grads_at(p, t)
            if t in (3, 4):
                g = jax.tree.map(
                    lambda x: x.at[...].set(jnp.nan) if x.ndim == 0 else x.at[0].set(jnp.nan), g
                )
            u, state = update(g, state, p)
            p = gradtx.apply_updates(p, u)
            if t == 4:
                assert int(state.consecutive_errors) == 2 and not bool(state.last_finite)
        assert int(state.consecutive_errors) == 0 and int(state.total_errors) == 2
        ref_opt, ref = gradtx.adam(1e-2), params
        ref_state, ref_update = ref_opt.init(ref), self.variant(ref_opt.update)
        for t in range(10):
            if t in (3, 4):
                continue
            u, ref_state = ref_update(grads_at(ref, t), ref_state, ref)
            ref = gradtx.apply_updates(ref, u)
        chex.assert_trees_all_equal(p, ref)

    def test_gives_up_after_too_many(self):
        opt = gradtx.apply_if_finite(gradtx.sgd(0.1), max_consecutive_errors=1)
        params = {"w": jnp.ones(2)}
        state = opt.init(params)
        bad = {"w": jnp.array([jnp.inf, 1.0])}
        u, state = opt.update(bad, state, params)
        np.testing.assert_array_equal(u["w"], [0.0, 0.0])  # first: skipped
        u, state = opt.update(bad, state, params)
        assert np.isinf(u["w"][0])  # second in a row: applied, as in optax
        u, state = opt.update({"w": jnp.ones(2)}, state, params)
        assert int(state.consecutive_errors) == 0 and int(state.total_errors) == 2

    def test_vmap_over_learning_rate(self):
        params = make_params()

        def train(lr):
            return run(gradtx.apply_if_finite(gradtx.adam(lr), 2), params, steps=5)

        lrs = jnp.array([1e-3, 1e-1])
        assert_vmap_equals_loop(train, lrs)


class AccumulateTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_four_micro_batches_equal_one_step_on_their_concatenation(self):
        rng = np.random.default_rng(0)
        x, y = rng.normal(size=(32, 5)).astype(np.float32), rng.normal(size=32).astype(np.float32)
        loss = lambda p, xb, yb: jnp.mean((xb @ p["w"] + p["b"] - yb) ** 2)  # noqa: E731
        params = {"w": jnp.zeros(5), "b": jnp.zeros(())}

        big = gradtx.adam(0.1)
        s_big = big.init(params)
        u, _ = big.update(jax.grad(loss)(params, x, y), s_big, params)
        expected = gradtx.apply_updates(params, u)

        opt = gradtx.accumulate(gradtx.adam(0.1), every_k=4)
        update = self.variant(opt.update)
        state, p = opt.init(params), params
        for i in range(4):
            g = jax.grad(loss)(p, x[8 * i : 8 * i + 8], y[8 * i : 8 * i + 8])
            u, state = update(g, state, p)
            if i < 3:
                chex.assert_trees_all_equal(u, jax.tree.map(jnp.zeros_like, u))
            p = gradtx.apply_updates(p, u)
        chex.assert_trees_all_close(p, expected, rtol=1e-5, atol=1e-6)
        assert int(state.micro_step) == 0

    def test_bad_every_k(self):
        with pytest.raises(ValueError, match="accumulate: every_k must be an integer >= 1"):
            gradtx.accumulate(gradtx.sgd(0.1), 0)
        with pytest.raises(ValueError, match="apply_if_finite: max_consecutive_errors must be"):
            gradtx.apply_if_finite(gradtx.sgd(0.1), -1)


class LookaheadAndEmaTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_lookahead_is_zhang_et_al(self):
        params = make_params()
        opt = gradtx.lookahead(gradtx.sgd(0.1), sync_period=3, slow_step_size=0.5)
        update = self.variant(opt.update)
        state, p = opt.init(params), params
        for t in range(8):
            u, state = update(grads_at(p, t), state, p)
            p = gradtx.apply_updates(p, u)
        # NumPy: k fast SGD steps from the slow weights, then slow += alpha * (fast - slow).
        leaves, treedef = jax.tree.flatten(params)
        slow = [np.asarray(x, np.float64) for x in leaves]
        fast = [x.copy() for x in slow]
        for t in range(8):
            grads = jax.tree.leaves(grads_at(jax.tree.unflatten(treedef, fast), t))
            fast = [f - 0.1 * np.asarray(g, np.float64) for f, g in zip(fast, grads, strict=True)]
            if (t + 1) % 3 == 0:
                slow = [s + 0.5 * (f - s) for s, f in zip(slow, fast, strict=True)]
                fast = [s.copy() for s in slow]
        for actual, expected in zip(jax.tree.leaves(p), fast, strict=True):
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
        for actual, expected in zip(jax.tree.leaves(state.slow), slow, strict=True):
            np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_ema_params_tracks_the_params(self):
        params = {"w": jnp.array([1.0, -1.0])}
        opt = gradtx.chain(gradtx.sgd(0.1), gradtx.ema_params(0.9))
        update = self.variant(opt.update)
        state, p = opt.init(params), params
        ema = np.array([1.0, -1.0])
        for t in range(6):
            g = {"w": jnp.array([1.0, 2.0]) * (t + 1)}
            u, state = update(g, state, p)
            p = gradtx.apply_updates(p, u)
            ema = 0.9 * ema + 0.1 * np.asarray(p["w"])
        np.testing.assert_allclose(state[1].ema["w"], ema, rtol=1e-6)

    def test_need_params(self):
        opt = gradtx.ema_params(0.9)
        with pytest.raises(ValueError, match="ema_params: update needs the params"):
            opt.update({"w": jnp.ones(2)}, opt.init({"w": jnp.ones(2)}))
        with pytest.raises(ValueError, match="lookahead: sync_period must be an integer >= 1"):
            gradtx.lookahead(gradtx.sgd(0.1), 0, 0.5)


def test_clip_by_global_norm_across_a_named_axis():
    """Two shards of one gradient: with axis_name the norm is the whole gradient's."""
    full = jnp.array([3.0, 0.0, 0.0, 4.0])  # norm 5
    shards = full.reshape(2, 2)
    opt = gradtx.clip_by_global_norm(1.0, axis_name="devices")
    clipped = jax.vmap(lambda g: opt.update(g, opt.init(g))[0], axis_name="devices")(shards)
    np.testing.assert_allclose(clipped.reshape(-1), full / 5.0, rtol=1e-6)
    local = gradtx.clip_by_global_norm(1.0)
    shard_wise = jax.vmap(lambda g: local.update(g, local.init(g))[0])(shards)
    np.testing.assert_allclose(shard_wise, [[1.0, 0.0], [0.0, 1.0]], rtol=1e-6)  # local norms


def test_accumulate_and_apply_if_finite_inside_shard_map():
    from jax.sharding import Mesh, PartitionSpec

    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    opt = gradtx.apply_if_finite(gradtx.accumulate(gradtx.sgd(0.1), every_k=2), 1)
    params = {"w": jnp.ones(4)}
    state = opt.init(params)

    def step(g, s, p):
        return opt.update(g, s, p)

    sharded = jax.jit(
        jax.shard_map(step, mesh=mesh, in_specs=PartitionSpec(), out_specs=PartitionSpec())
    )
    u1, state = sharded({"w": jnp.full(4, 1.0)}, state, params)
    u2, state = sharded({"w": jnp.full(4, 3.0)}, state, params)
    np.testing.assert_array_equal(u1["w"], 0.0)
    np.testing.assert_allclose(u2["w"], -0.1 * 2.0, rtol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda lr: gradtx.accumulate(gradtx.adam(lr), every_k=2),
        lambda lr: gradtx.lookahead(gradtx.sgd(lr), sync_period=2, slow_step_size=0.5),
        lambda lr: gradtx.chain(gradtx.adam(lr), gradtx.ema_params(0.9)),
        lambda lr: gradtx.masked(gradtx.adam(lr), lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
    ],
    ids=["accumulate", "lookahead", "ema_params", "masked"],
)
def test_wrappers_under_vmap_over_learning_rate(make):
    params = make_params()
    lrs = jnp.array([1e-3, 1e-2, 1e-1])
    train = lambda lr: run(make(lr), params, steps=6)  # noqa: E731
    assert_vmap_equals_loop(train, lrs)
