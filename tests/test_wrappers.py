"""apply_if_finite, accumulate, lookahead_with_slow_weights, ema_params: closed forms, oracles."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close, assert_vmap_equals_loop, grads_at, make_params, run

import gradtx

S = gradtx.schedules


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
                assert int(state.notfinite_count) == 2 and not bool(state.last_finite)
        assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 2
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
        assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 2

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
    def test_lookahead_with_slow_weights_is_zhang_et_al(self):
        params = make_params()
        opt = gradtx.lookahead_with_slow_weights(gradtx.sgd(0.1), sync_period=3, slow_step_size=0.5)
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
        with pytest.raises(
            ValueError, match="lookahead_with_slow_weights: update needs the params"
        ):
            opt = gradtx.lookahead_with_slow_weights(gradtx.sgd(0.1), 2, 0.5)
            opt.update({"w": jnp.ones(2)}, opt.init({"w": jnp.ones(2)}))


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
        lambda lr: gradtx.lookahead_with_slow_weights(gradtx.sgd(lr), 2, slow_step_size=0.5),
        lambda lr: gradtx.chain(gradtx.adam(lr), gradtx.ema_params(0.9)),
        lambda lr: gradtx.masked(gradtx.adam(lr), lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
    ],
    ids=["accumulate", "lookahead_with_slow_weights", "ema_params", "masked"],
)
def test_wrappers_under_vmap_over_learning_rate(make):
    params = make_params()
    lrs = jnp.array([1e-3, 1e-2, 1e-1])
    train = lambda lr: run(make(lr), params, steps=6)  # noqa: E731
    assert_vmap_equals_loop(train, lrs)


# --- Wrapper orders, the scheduled-rate multiplier, and torch's AveragedModel EMA ---------------


def _micro_steps(opt, grads):
    params = {"w": jnp.zeros(2)}
    state, out = opt.init(params), []
    for g in grads:
        u, state = opt.update({"w": jnp.full(2, g)}, state, params)
        out.append(float(u["w"][0]))
    return out, state


def test_apply_if_finite_around_accumulate_drops_the_non_finite_micro_step():
    """docs/learners.md: the NaN micro-batch is not counted; later boundaries shift by one."""
    opt = gradtx.apply_if_finite(gradtx.accumulate(gradtx.sgd(1.0), every_k=2), 3)
    out, state = _micro_steps(opt, [1.0, jnp.nan, 2.0, 3.0, 4.0, 5.0])
    # Cycles are (1, 2) and (3, 4): the mean steps -1.5 and -3.5 land one micro-step late.
    assert out == [0.0, 0.0, -1.5, 0.0, -3.5, 0.0]
    assert int(state.total_notfinite) == 1 and int(state.inner_state.micro_step) == 1


def test_accumulate_around_apply_if_finite_skips_the_whole_accumulated_step():
    """docs/learners.md: the NaN enters the sum and the boundary's step is skipped."""
    opt = gradtx.accumulate(gradtx.apply_if_finite(gradtx.sgd(1.0), 3), every_k=2)
    out, state = _micro_steps(opt, [1.0, jnp.nan, 2.0, 3.0, 4.0, 5.0])
    # Cycles are (1, NaN), (2, 3), (4, 5): the first, with its finite gradient 1, is lost.
    assert out == [0.0, 0.0, 0.0, -2.5, 0.0, -4.5]
    assert int(state.inner.total_notfinite) == 1 and int(state.micro_step) == 0


def test_a_schedule_inside_accumulate_counts_updates_not_micro_steps():
    opt = gradtx.accumulate(gradtx.sgd(lambda count: 1.0 + count), every_k=2)
    out, _ = _micro_steps(opt, [1.0] * 6)
    assert out == [0.0, -1.0, 0.0, -2.0, 0.0, -3.0]  # rates 1, 2, 3 at updates 0, 1, 2


class EmaTorchAveragedModelTest(chex.TestCase):
    @staticmethod
    def _numpy_sgd_with_averages(params, decay, steps):
        """SGD(lr=0.1) in NumPy with torch's AveragedModel EMA and gradtx's default EMA.

        torch (swa_utils.AveragedModel with multi_avg_fn=get_ema_multi_avg_fn(decay),
        update_parameters after every optimizer.step()): while n_averaged == 0 the
        params are copied, afterwards avg.lerp_(param, 1 - decay); n_averaged += 1.
        """
        leaves, treedef = jax.tree.flatten(params)
        theta = [np.asarray(x, np.float64) for x in leaves]
        torch_avg = [x.copy() for x in theta]  # deepcopy(model) at construction
        from_params = [x.copy() for x in theta]
        n_averaged, history = 0, []
        for t in range(steps):
            grads = jax.tree.leaves(grads_at(jax.tree.unflatten(treedef, theta), t))
            theta = [p - 0.1 * np.asarray(g, np.float64) for p, g in zip(theta, grads, strict=True)]
            for i, p in enumerate(theta):
                a = torch_avg[i]
                torch_avg[i] = p.copy() if n_averaged == 0 else a + (1 - decay) * (p - a)
                from_params[i] = decay * from_params[i] + (1 - decay) * p
            n_averaged += 1
            history.append(([x.copy() for x in theta], list(torch_avg), list(from_params)))
        return history

    def _run(self, opt, params, steps):
        update = self.variant(opt.update)
        state = opt.init(params)
        init_state, p, emas = state, params, []
        for t in range(steps):
            u, state = update(grads_at(p, t), state, p)
            p = gradtx.apply_updates(p, u)
            chex.assert_trees_all_equal_shapes_and_dtypes(state, init_state)  # fixed state
            emas.append(state[1].ema)
        return emas

    @chex.variants(with_jit=True, without_jit=True)
    def test_first_update_is_torch_averaged_model(self):
        params, decay, steps = make_params(), 0.9, 10
        emas = self._run(
            gradtx.chain(gradtx.sgd(0.1), gradtx.ema_params(decay, start_from="first_update")),
            params,
            steps,
        )
        history = self._numpy_sgd_with_averages(params, decay, steps)
        for ema, (_, torch_avg, _) in zip(emas, history, strict=True):
            for actual, expected in zip(jax.tree.leaves(ema), torch_avg, strict=True):
                np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
        for actual, expected in zip(jax.tree.leaves(emas[0]), history[0][0], strict=True):
            np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)  # a copy of theta_1

    @chex.variants(with_jit=True, without_jit=True)
    def test_default_start_from_params_is_unchanged(self):
        params, decay, steps = make_params(), 0.9, 10
        default = self._run(gradtx.chain(gradtx.sgd(0.1), gradtx.ema_params(decay)), params, steps)
        named = self._run(
            gradtx.chain(gradtx.sgd(0.1), gradtx.ema_params(decay, start_from="params")),
            params,
            steps,
        )
        chex.assert_trees_all_equal(default, named)
        history = self._numpy_sgd_with_averages(params, decay, steps)
        for ema, (_, _, from_params) in zip(default, history, strict=True):
            for actual, expected in zip(jax.tree.leaves(ema), from_params, strict=True):
                np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
        # The rules differ: after one update torch holds theta_1, the default
        # 0.9 theta_0 + 0.1 theta_1 (a gap of 0.9 |theta_1 - theta_0|).
        gaps = [
            np.max(np.abs(np.asarray(e) - a))
            for e, a in zip(jax.tree.leaves(default[0]), history[0][1], strict=True)
        ]
        assert max(gaps) > 1e-2

    def test_start_from_is_checked_and_the_state_keeps_its_dtype(self):
        with pytest.raises(ValueError, match="ema_params: start_from must be 'params' or"):
            gradtx.ema_params(0.9, start_from="theta_1")
        params = {"w": jnp.ones(3, jnp.bfloat16)}
        for start_from in ("params", "first_update"):
            opt = gradtx.ema_params(jnp.float32(0.9), start_from=start_from)
            _, state = opt.update(params, opt.init(params), params)
            assert state.ema["w"].dtype == jnp.bfloat16


# Extras reach a member only if its update takes them: a plain optax transform takes none.
WRAPPERS = {
    "chain": lambda t: gradtx.chain(t),
    "partition": lambda t: gradtx.partition({"x": t}, lambda p: jax.tree.map(lambda _: "x", p)),
    "masked": lambda t: gradtx.masked(t, lambda p: jax.tree.map(lambda _: True, p)),
    "masked_half": lambda t: gradtx.masked(t, {"a": True, "b": False}),
    "apply_if_finite": lambda t: gradtx.apply_if_finite(t, 2),
    "accumulate": lambda t: gradtx.accumulate(t, 1),
    "lookahead_with_slow_weights": lambda t: gradtx.lookahead_with_slow_weights(t, 5, 0.5),
    "MultiSteps": lambda t: gradtx.MultiSteps(t, 1),
    "named_chain": lambda t: gradtx.named_chain(("only", t)),
    "conditionally_transform": lambda t: gradtx.conditionally_transform(t, lambda step: True),
    "with_extra_args_support": gradtx.with_extra_args_support,
    "packed": lambda t: gradtx.packed(t),
    "float_leaves": gradtx.float_leaves,
}


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_extras_reach_only_members_that_take_them(wrapper):
    params = {"a": jnp.arange(3.0), "b": jnp.ones(2)}
    grads = {"a": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array([1.0, -3.0])}
    # scale_by_adam's update takes no extras (optax.adam's chain would swallow them).
    tx = WRAPPERS[wrapper](optax.scale_by_adam())
    ours, _ = tx.update(grads, tx.init(params), params, value=1.0, batch_size=8)
    adam = optax.scale_by_adam()
    expected, _ = adam.update(grads, adam.init(params), params)
    if wrapper == "masked_half":
        expected["b"] = grads["b"]
    assert_trees_close(ours, expected, rtol=1e-6)


def test_the_issues_chain_partition_of_optax_then_reduce_on_plateau():
    params = {"w": jnp.arange(3.0), "b": jnp.ones(2)}
    opt = gradtx.chain(
        gradtx.partition(
            {"adam": optax.adam(0.1), "clip": optax.clip_by_global_norm(1.0)},
            {"w": "adam", "b": "clip"},
        ),
        gradtx.schedules.reduce_on_plateau(),
    )
    ours, _ = opt.update(params, opt.init(params), params, value=2.0)
    w = {"w": params["w"]}
    adam, _ = optax.adam(0.1).update(w, optax.adam(0.1).init(w), w)
    np.testing.assert_allclose(ours["w"], adam["w"], rtol=1e-6)
    np.testing.assert_allclose(ours["b"], params["b"] / np.sqrt(2.0), rtol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_accumulate_returns_updates_in_the_gradients_dtype(dtype):
    params = {"w": jnp.array([1.0, -2.0, 3.0])}  # float32
    g1, g2 = ({"w": jnp.asarray(v, dtype)} for v in ([0.5, 1.0, -1.0], [1.5, -3.0, 2.0]))
    acc = gradtx.accumulate(gradtx.sgd(1.0), 2)
    state = acc.init(params)
    first, state = acc.update(g1, state, params)
    second, _ = acc.update(g2, state, params)
    assert first["w"].dtype == dtype and second["w"].dtype == dtype
    mean = (np.asarray(g1["w"], np.float32) + np.asarray(g2["w"], np.float32)) / 2
    np.testing.assert_array_equal(np.asarray(second["w"], np.float32), -mean.astype(dtype))
    np.testing.assert_array_equal(np.asarray(first["w"], np.float32), 0.0)
