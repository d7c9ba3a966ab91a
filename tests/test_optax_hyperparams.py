"""inject_hyperparams as optax has it: arguments, state fields, dtypes, schedules and numbers."""

from __future__ import annotations

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from conftest import assert_trees_close, grads_at, make_params

import gradtx

# name -> (factory name in both libraries, positional args, keyword args); the same callables
# (optax schedules) drive both sides.
CASES = {
    "adam, positional": ("adam", (1e-2, 0.8), {}),
    "adam, scheduled b1": ("adam", (1e-2,), dict(b1=optax.linear_schedule(0.5, 0.9, 20))),
    "adamw, cosine rate": ("adamw", (optax.cosine_decay_schedule(1e-2, 30),), dict(mask=None)),
    "sgd, nesterov": ("sgd", (0.05, 0.9, True), {}),
    "sgd, scheduled momentum": ("sgd", (0.05,), dict(momentum=optax.linear_schedule(0.0, 0.9, 10))),
    "nadam": ("nadam", (1e-3,), {}),
    "amsgrad": ("amsgrad", (1e-3,), dict(eps=1e-6)),
    "lion": ("lion", (1e-3, 0.9, 0.99), dict(weight_decay=0.01)),
    "scale_by_adam": ("scale_by_adam", (0.8, 0.99), {}),
    "trace": ("trace", (optax.exponential_decay(0.9, 5, 0.5),), dict(nesterov=True)),
    "ema": ("ema", (0.9,), {}),
}  # fmt: skip


def _run(opt, params, steps, update=None):
    update = update or opt.update
    state, p, trail = opt.init(params), params, []
    for t in range(steps):
        u, state = update(grads_at(p, t), state, p)
        p = optax.apply_updates(p, u)
        trail.append(state.hyperparams)
    return p, state, trail


class SameAsOptaxTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((name, name) for name in CASES))
    def test_fifty_steps_give_optax_numbers_state_and_hyperparameters(self, name):
        factory, args, kwargs = CASES[name]
        ours = gradtx.inject_hyperparams(getattr(gradtx, factory))(*args, **kwargs)
        theirs = optax.inject_hyperparams(getattr(optax, factory))(*args, **kwargs)
        params = make_params()
        p1, s1, trail1 = _run(ours, params, 50, self.variant(ours.update))
        p2, s2, trail2 = _run(theirs, params, 50, self.variant(theirs.update))
        assert_trees_close(p1, p2, rtol=1e-6)
        assert type(s1).__name__ == type(s2).__name__ == "InjectStatefulHyperparamsState"
        assert s1._fields == s2._fields
        # The same hyperparameters (defaults included), values step by step, and dtypes.
        for h1, h2 in zip(trail1, trail2, strict=True):
            assert set(h1) == set(h2)
            for k in h2:
                assert jnp.result_type(h1[k]) == jnp.result_type(h2[k]), k
                np.testing.assert_allclose(h1[k], h2[k], rtol=1e-6, err_msg=k)
        assert set(s1.hyperparams_states) == set(s2.hyperparams_states)
        for k, v in s2.hyperparams_states.items():
            assert type(s1.hyperparams_states[k]).__name__ == type(v).__name__
            np.testing.assert_array_equal(s1.hyperparams_states[k].count, v.count)
        np.testing.assert_array_equal(s1.count, s2.count)


def test_static_args_keep_a_callable_from_being_a_schedule():
    params = {"w": jnp.arange(3.0), "b": jnp.ones(2)}
    mask = lambda p: {"w": True, "b": False}  # noqa: E731
    ours = gradtx.inject_hyperparams(gradtx.adamw, static_args="mask")(0.1, mask=mask)
    theirs = optax.inject_hyperparams(optax.adamw, static_args=("mask",))(0.1, mask=mask)
    s1, s2 = ours.init(params), theirs.init(params)
    assert "mask" not in s1.hyperparams and set(s1.hyperparams) == set(s2.hyperparams)
    for t in range(5):
        u1, s1 = ours.update(grads_at(params, t), s1, params)
        u2, s2 = theirs.update(grads_at(params, t), s2, params)
        assert_trees_close(u1, u2, rtol=1e-6)
    # Without static_args the mask would be read as a schedule of the count.
    with pytest.raises(ValueError, match="static_args must name arguments of 'adamw'"):
        gradtx.inject_hyperparams(gradtx.adamw, static_args=["mask", "masks"])


class LossDrivenRate:
    """A stateful schedule: the rate halves after every update whose loss (value) exceeds 1."""

    def init(self):
        return {"rate": jnp.asarray(0.1, jnp.float32)}

    def update(self, state, value=None, **extra):
        return {"rate": jnp.where(value > 1.0, state["rate"] / 2, state["rate"])}

    def __call__(self, state, **extra):
        return state["rate"]


def test_a_stateful_schedule_follows_the_extras_as_in_optax():
    params = make_params()
    ours = gradtx.inject_stateful_hyperparams(gradtx.sgd)(learning_rate=LossDrivenRate())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        theirs = optax.inject_stateful_hyperparams(optax.sgd)(learning_rate=LossDrivenRate())
    s1, s2, p1, p2 = ours.init(params), theirs.init(params), params, params
    losses = [2.0, 0.5, 3.0, 3.0, 0.1]
    for t, loss in enumerate(losses):
        u1, s1 = ours.update(grads_at(p1, t), s1, p1, value=loss)
        u2, s2 = theirs.update(grads_at(p2, t), s2, p2, value=loss)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
        np.testing.assert_allclose(s1.hyperparams["learning_rate"], s2.hyperparams["learning_rate"])
    assert_trees_close(p1, p2, rtol=1e-6)
    np.testing.assert_allclose(s1.hyperparams_states["learning_rate"]["rate"], 0.1 / 8)
    # In a chain the extras still reach it; a rate that needs them has no fused kernel.
    assert not gradtx.is_fused(ours)
    assert gradtx.is_fused(gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=lambda c: 0.1))
    chained = gradtx.chain(gradtx.clip_by_global_norm(1.0), ours)
    _, state = chained.update(grads_at(params, 0), chained.init(params), params, value=5.0)
    np.testing.assert_allclose(state[1].hyperparams_states["learning_rate"]["rate"], 0.05)


def test_wrapped_schedule_is_optax_s():
    schedule = optax.cosine_decay_schedule(1.0, 10)
    ours, theirs = gradtx.WrappedSchedule(schedule), optax.WrappedSchedule(schedule)
    s1, s2 = ours.init(), theirs.init()
    assert s1._fields == s2._fields == ("count",) and s1.count.dtype == jnp.int32
    for _ in range(12):
        np.testing.assert_allclose(ours(s1, value=1.0), theirs(s2, value=1.0))
        s1, s2 = ours.update(s1, value=1.0), theirs.update(s2, value=1.0)
    saturated = ours.update(gradtx.hyperparams.WrappedScheduleState(jnp.asarray(2**31 - 1)))
    assert int(saturated.count) == 2**31 - 1


def test_optax_idioms_read_and_change_the_state():
    """optax's docs change a hyperparameter in place (state.hyperparams['b2'] = 0.95) or with
    optax.tree.set; both work here and give optax's numbers."""
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    ours = gradtx.inject_hyperparams(gradtx.scale_by_adam)(b1=optax.linear_schedule(0.1, 0.9, 5))
    theirs = optax.inject_hyperparams(optax.scale_by_adam)(b1=optax.linear_schedule(0.1, 0.9, 5))
    s1, s2 = ours.init(params), theirs.init(params)
    u1, s1 = ours.update(params, s1)
    u2, s2 = theirs.update(params, s2)
    s1.hyperparams["b2"] = 0.95
    s2.hyperparams["b2"] = 0.95
    u1, s1 = ours.update(u1, s1)
    u2, s2 = theirs.update(u2, s2)
    assert_trees_close(u1, u2, rtol=1e-6)
    assert s1.hyperparams["b2"].dtype == jnp.float32  # an array again, in the state's dtype
    s1 = gradtx.tree.set(s1, eps=jnp.asarray(1e-3))
    s2 = optax.tree.set(s2, eps=jnp.asarray(1e-3))
    np.testing.assert_allclose(gradtx.tree.get(s1, "eps"), optax.tree.get(s2, "eps"))
    assert_trees_close(ours.update(u1, s1)[0], theirs.update(u2, s2)[0], rtol=1e-6)
    # A scheduled value is not settable: its schedule owns it.
    with pytest.raises(ValueError, match="b1 is driven by a schedule"):
        gradtx.set_hyperparams(s1, b1=0.5)


def test_get_and_set_hyperparams_read_optax_s_injected_states_too():
    params = {"a": jnp.ones(2), "b": jnp.ones(3)}
    opt = gradtx.partition(
        {
            "x": optax.inject_hyperparams(optax.sgd)(learning_rate=0.1),
            "y": gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=optax.constant_schedule(0.2)),
        },
        {"a": "x", "b": "y"},
    )
    state = gradtx.set_hyperparams(opt.init(params), "x/learning_rate", 0.5)
    found = gradtx.get_hyperparams(state)
    np.testing.assert_allclose([found["x/learning_rate"], found["y/learning_rate"]], [0.5, 0.2])
    updates, _ = opt.update(params, state, params)
    np.testing.assert_allclose(updates["a"], -0.5)
    np.testing.assert_allclose(updates["b"], -0.2)
    with pytest.raises(ValueError, match="y/learning_rate is driven by a schedule"):
        gradtx.set_hyperparams(state, learning_rate=0.3)


def test_inside_optax_chain_and_with_an_optax_factory():
    params = make_params()
    ours = optax.chain(
        optax.clip_by_global_norm(1.0),
        gradtx.inject_hyperparams(optax.adam)(optax.warmup_cosine_decay_schedule(0, 1e-2, 5, 40)),
    )
    theirs = optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.inject_hyperparams(optax.adam)(optax.warmup_cosine_decay_schedule(0, 1e-2, 5, 40)),
    )
    s1, s2, p1, p2 = ours.init(params), theirs.init(params), params, params
    for t in range(50):
        u1, s1 = ours.update(grads_at(p1, t), s1, p1)
        u2, s2 = theirs.update(grads_at(p2, t), s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    assert_trees_close(p1, p2, rtol=1e-6)


def test_float64_params_give_float64_hyperparameters_as_in_optax():
    with jax.enable_x64(True):
        params = {"w": jnp.ones(3, jnp.float64)}
        ours = gradtx.inject_hyperparams(gradtx.adam)(1e-3).init(params)
        theirs = optax.inject_hyperparams(optax.adam)(1e-3).init(params)
        for k, v in theirs.hyperparams.items():
            assert ours.hyperparams[k].dtype == v.dtype == jnp.float64, k


def test_a_jitted_step_does_not_recompile_when_hyperparameters_change():
    params = make_params()
    opt = gradtx.inject_hyperparams(gradtx.adamw)(1e-2, weight_decay=0.1)
    step = jax.jit(opt.update)
    state = opt.init(params)
    for lr in (1e-2, 1e-3, 0.5):
        state = gradtx.set_hyperparams(state, learning_rate=lr, b2=0.99)
        _, state = step(grads_at(params, 0), state, params)
    assert step._cache_size() == 1


def test_tree_map_params_reaches_inside_an_injected_state():
    params = {"w": jnp.ones(3)}
    for lib in (gradtx, optax):  # the same state, block for block
        opt = lib.inject_hyperparams(lib.adam)(1e-2)
        specs = lib.tree_map_params(
            opt, lambda _: "spec", opt.init(params), transform_non_params=lambda _: None
        )
        assert specs.count is None and set(specs.hyperparams.values()) == {None}
        assert specs.inner_state[0].mu == specs.inner_state[0].nu == {"w": "spec"}
