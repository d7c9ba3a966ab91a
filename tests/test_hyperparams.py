"""inject_hyperparams / get_hyperparams / set_hyperparams: live values without recompiling."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
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
    def test_same_numbers_as_optax_injected(self, factory, kwargs):
        # The defaults (adam's b2, eps, ...) are injected as float32 arrays too, as in optax, so
        # the oracle is optax's injected learner, not the plain one (1 - b2 rounds differently).
        params = make_params()
        injected = gradtx.inject_hyperparams(factory)(**kwargs)
        theirs = optax.inject_hyperparams(getattr(optax, factory.__name__))(**kwargs)
        assert_trees_close(
            run(injected, params, steps=50, update=self.variant(injected.update)),
            run(theirs, params, steps=50),
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
    # adam's defaults are injected, as optax injects them; sgd's keyword-only ones are not.
    assert set(found) == {"slow/learning_rate", "slow/momentum", "fast/learning_rate"} | {
        f"fast/{name}" for name in ("b1", "b2", "eps", "eps_root")
    }
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


def test_hyperparameter_dtypes_follow_optax_but_never_narrower_than_float32():
    """optax infers the params' highest dtype; for bfloat16 params that rounds Adam's
    b2 = 0.999 to 1, so gradtx keeps them float32 there, and float64 for float64 params."""
    params = {"w": jnp.ones(3, jnp.bfloat16), "step": jnp.zeros((), jnp.int32)}
    state = gradtx.inject_hyperparams(gradtx.adam)(learning_rate=1e-3).init(params)
    reference = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3).init(params)
    assert reference.hyperparams["b2"].dtype == jnp.bfloat16 and reference.hyperparams["b2"] == 1
    assert {v.dtype for v in state.hyperparams.values()} == {jnp.dtype(jnp.float32)}
    # An explicit hyperparam_dtype is optax's: every floating hyperparameter in it.
    f32 = {"w": jnp.ones(3)}
    for dtype in (jnp.float32, jnp.float16):
        ours = gradtx.inject_hyperparams(gradtx.sgd, hyperparam_dtype=dtype)(0.1, 0.9)
        theirs = optax.inject_hyperparams(optax.sgd, hyperparam_dtype=dtype)(0.1, 0.9)
        s1, s2 = ours.init(f32), theirs.init(f32)
        assert {k: v.dtype for k, v in s1.hyperparams.items()} == {
            k: v.dtype for k, v in s2.hyperparams.items()
        }
        u1, _ = ours.update(f32, s1, f32)
        u2, _ = theirs.update(f32, s2, f32)
        assert_trees_close(u1, u2, rtol=1e-6)
    # set_hyperparams keeps the dtype, so a jitted step sees the same types.
    changed = gradtx.set_hyperparams(s1, learning_rate=0.5)
    assert changed.hyperparams["learning_rate"].dtype == jnp.float16


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
    with pytest.raises(ValueError, match="static_args must name arguments of 'adam'"):
        gradtx.inject_hyperparams(gradtx.adam, static_args="lr")
    with pytest.raises(ValueError, match="adam: b1 must be in"):
        gradtx.inject_hyperparams(gradtx.adam)(learning_rate=0.1, b1=2.0)


def _adam_steps(learner, grads, step_size_from=None, step_size=1.0):
    """The updates of ``learner``; ``step_size`` is set just before step ``step_size_from``."""
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    state, out = learner.init(params), []
    for t, g in enumerate(grads):
        if t == step_size_from:
            state = gradtx.set_hyperparams(state, step_size=step_size)
        u, state = learner.update(g, state, params)
        params = gradtx.apply_updates(params, u)
        out.append(np.asarray(u["w"]))
    return np.stack(out)


def test_a_multiplier_after_a_scheduled_adam_scales_its_step_and_one_before_does_not():
    """docs/hyperparameters.md: the injected factor goes after the learner, not before."""
    schedule = S.cosine_decay(1e-2, 100)
    grads = [{"w": jnp.array([0.3, -1.0, 2.0]) * (t + 1)} for t in range(6)]
    factor = gradtx.inject_hyperparams(gradtx.scale)(step_size=1.0)
    after = gradtx.chain(gradtx.adam(schedule), factor)
    before = gradtx.chain(factor, gradtx.adam(schedule))

    full = _adam_steps(after, grads)
    halved = _adam_steps(after, grads, step_size_from=3, step_size=0.5)
    np.testing.assert_array_equal(halved[:3], full[:3])
    np.testing.assert_array_equal(halved[3:], 0.5 * full[3:])  # exactly half from step 3 on
    # Closed form of the first step: -lr(0) * g / (|g| + eps), Adam's bias-corrected first step
    # (to float32's rounding of 1 - b2 in the bias correction, as in optax).
    g0 = np.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(full[0], -1e-2 * g0 / (np.abs(g0) + 1e-8), rtol=1e-4)

    # Before the learner the factor scales the gradients, and Adam divides it out again: set
    # from the start it changes nothing (to eps); set mid-run it only disturbs the steps while
    # the moments still hold the old gradients (for ~1/(1 - b2) steps), and never halves them.
    unscaled = _adam_steps(before, grads)
    np.testing.assert_allclose(unscaled, full, rtol=1e-6)
    from_start = _adam_steps(before, grads, step_size_from=0, step_size=0.5)
    np.testing.assert_allclose(from_start, unscaled, rtol=1e-6)  # unchanged: not halved
    mid_run = _adam_steps(before, grads, step_size_from=3, step_size=0.5)
    assert not np.allclose(mid_run[3:], 0.5 * unscaled[3:], rtol=1e-2)


def test_inject_hyperparams_of_an_optax_factory_gives_it_no_extras():
    params = {"a": jnp.arange(3.0)}
    tx = gradtx.inject_hyperparams(optax.scale_by_adam)(b1=0.8)
    ours, _ = tx.update(params, tx.init(params), params, value=1.0, batch_size=8)
    adam = optax.inject_hyperparams(optax.scale_by_adam)(b1=0.8)
    expected, _ = adam.update(params, adam.init(params), params)
    assert_trees_close(ours, expected, rtol=1e-6)


def test_inject_hyperparams_keeps_keys_and_integers_as_they_are():
    params = {"w": jnp.zeros(4)}
    key = jax.random.key(3)
    ours = gradtx.inject_hyperparams(optax.noisy_sgd)(learning_rate=0.1, eta=0.5, key=key)
    theirs = optax.inject_hyperparams(optax.noisy_sgd)(learning_rate=0.1, eta=0.5, key=key)
    s1, s2 = ours.init(params), theirs.init(params)
    assert s1.hyperparams["key"].dtype == key.dtype  # a typed key, not float32
    for _ in range(3):
        u1, s1 = ours.update(params, s1, params)
        u2, s2 = theirs.update(params, s2, params)
        assert_trees_close(u1, u2, rtol=1e-6)
    # Integer arrays stay integers; a Python int for an int-defaulted argument stays static.
    steps = jnp.asarray(3, jnp.int32)
    tx = gradtx.inject_hyperparams(lambda scale, steps: optax.scale(scale * steps))(
        scale=0.5, steps=steps
    )
    state = tx.init(params)
    assert state.hyperparams["steps"].dtype == jnp.int32
    u, _ = tx.update({"w": jnp.ones(4)}, state, params)
    np.testing.assert_array_equal(u["w"], 1.5)
    plateau = gradtx.inject_hyperparams(gradtx.schedules.reduce_on_plateau)(factor=0.5, patience=2)
    # patience and cooldown default to ints: static; the floats are injected, as in optax.
    assert set(plateau.init(params).hyperparams) == {"factor", "threshold", "min_scale"}
    with pytest.raises(TypeError, match="steps is int32"):
        gradtx.set_hyperparams(state, steps=2.5)
    changed = gradtx.set_hyperparams(state, steps=jnp.asarray(4, jnp.int32))
    u, _ = tx.update({"w": jnp.ones(4)}, changed, params)
    np.testing.assert_array_equal(u["w"], 2.0)
