"""Hostile inputs: every learner meets them with the documented outcome (docs/testing.md)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

INT32_MAX = np.iinfo(np.int32).max
LR = gradtx.cntk.learning_rate_schedule(0.01, gradtx.cntk.UnitType.minibatch)
MOMENTUM = gradtx.cntk.momentum_schedule(0.9)

LEARNERS = {
    "sgd": lambda: gradtx.sgd(1e-2, momentum=0.9),
    "adagrad": lambda: gradtx.adagrad(1e-2),
    "rmsprop": lambda: gradtx.rmsprop(1e-2),
    "rmsprop centered": lambda: gradtx.rmsprop(1e-2, centered=True, momentum=0.9),
    "adam": lambda: gradtx.adam(1e-2),
    "nadam": lambda: gradtx.nadam(1e-2),
    "adamw": lambda: gradtx.adamw(1e-2),
    "amsgrad": lambda: gradtx.amsgrad(1e-2),
    "adamax": lambda: gradtx.adamax(1e-2),
    "adadelta": lambda: gradtx.adadelta(1.0),
    "lion": lambda: gradtx.lion(1e-3),
    "cntk.momentum_sgd": lambda: gradtx.cntk.momentum_sgd(LR, MOMENTUM),
    "cntk.adagrad": lambda: gradtx.cntk.adagrad(LR),
    "cntk.rmsprop": lambda: gradtx.cntk.rmsprop(LR, 0.9, 1.2, 0.7, 10.0, 0.1),
    "cntk.fsadagrad": lambda: gradtx.cntk.fsadagrad(LR, MOMENTUM),
    "cntk.adam": lambda: gradtx.cntk.adam(LR, MOMENTUM),
    "cntk.adadelta": lambda: gradtx.cntk.adadelta(),
}
# Learners that keep a running mean of squared gradients (they overflow at |g| ~ 1e19).
SECOND_MOMENT = {"adagrad", "rmsprop", "rmsprop centered", "adam", "nadam", "adamw", "amsgrad",
                 "adadelta", "cntk.adagrad", "cntk.rmsprop", "cntk.fsadagrad", "cntk.adam",
                 "cntk.adadelta"}  # fmt: skip
EXTRA = {"batch_size": 4}


def params(dtype=jnp.float32):
    return {"w": jnp.linspace(-1, 1, 6, dtype=dtype).reshape(2, 3), "b": jnp.ones(3, dtype)}


def run(opt, p, grads, steps=3):
    update = jax.jit(lambda g, s: opt.update(g, s, p, **EXTRA))
    state = opt.init(p)
    for _ in range(steps):
        u, state = update(grads, state)
    return u, state


def finite(tree):
    return all(
        bool(jnp.all(jnp.isfinite(x)))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    )


@pytest.mark.parametrize("name", LEARNERS)
def test_nan_and_inf_gradients_propagate(name):
    for bad in (jnp.nan, jnp.inf):
        grads = {"w": jnp.ones((2, 3)).at[0, 0].set(bad), "b": jnp.ones(3)}
        u, state = run(LEARNERS[name](), params(), grads, steps=1)
        if name == "lion" and bad == jnp.inf:
            # Lion steps by the sign: an infinite gradient is a step of -lr, but its
            # momentum is infinite from then on (documented; apply_if_finite skips it).
            assert finite(u) and not finite(state)
            continue
        assert not bool(jnp.all(jnp.isfinite(u["w"]))), "a bad gradient must not vanish"


@pytest.mark.parametrize("name", ["adam", "rmsprop centered", "cntk.adam"])
def test_apply_if_finite_skips_nan_and_inf_and_loses_nothing(name):
    opt = gradtx.apply_if_finite(LEARNERS[name](), 5)
    good = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    state = opt.init(params())
    _, state = opt.update(good, state, params(), **EXTRA)
    before = state.inner_state
    for bad in (jnp.nan, jnp.inf):
        grads = jax.tree.map(lambda x, bad=bad: x * bad, good)
        u, state = opt.update(grads, state, params(), **EXTRA)
        assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(u))
        jax.tree.map(np.testing.assert_array_equal, state.inner_state, before)
    assert int(state.total_notfinite) == 2


@pytest.mark.parametrize("name", LEARNERS)
def test_ten_thousand_zero_gradients_give_no_nan(name):
    opt, p = LEARNERS[name](), params()
    zeros = jax.tree.map(jnp.zeros_like, p)

    def step(state, _):
        u, state = opt.update(zeros, state, p, **EXTRA)
        return state, u

    state, updates = jax.jit(lambda s: jax.lax.scan(step, s, None, length=10_000))(opt.init(p))
    assert finite(state) and finite(updates)


@pytest.mark.parametrize("name", LEARNERS)
def test_tiny_gradients_stay_finite(name):
    u, state = run(LEARNERS[name](), params(), jax.tree.map(lambda x: x * 0 + 1e-30, params()))
    assert finite(u) and finite(state)


@pytest.mark.parametrize("name", LEARNERS)
def test_huge_gradients(name):
    huge = {"w": jnp.full((2, 3), 1e30), "b": jnp.ones(3)}
    u, _ = run(LEARNERS[name](), params(), huge)
    if name in ("cntk.adagrad", "cntk.rmsprop"):
        assert np.isnan(np.asarray(u["w"])).all()  # their normalisation divides inf by inf
    elif name in SECOND_MOMENT:
        # The squares overflow to inf: those coordinates stop moving (weight decay aside).
        assert finite(u) and np.all(np.abs(np.asarray(u["w"])) < 1e-4)
    else:
        assert finite(u) and np.all(np.asarray(u["w"]) != 0)
    clipped = gradtx.chain(gradtx.clip_by_global_norm(1.0), LEARNERS[name]())
    u, state = run(clipped, params(), huge)
    assert finite(u) and finite(state) and np.all(np.asarray(u["w"]) != 0)


@pytest.mark.parametrize("name", LEARNERS)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_params(name, dtype):
    p = params(dtype)
    grads = jax.tree.map(lambda x: (x * 0.01).astype(dtype), p)
    u, state = run(LEARNERS[name](), p, grads, steps=5)
    assert finite(u) and finite(state)
    assert all(x.dtype == dtype for x in jax.tree.leaves(u))
    zero = jax.tree.map(jnp.zeros_like, p)  # float16 alone would lose eps and divide 0 by 0
    u, state = run(LEARNERS[name](), p, zero, steps=5)
    assert finite(u) and finite(state)


@pytest.mark.parametrize("name", LEARNERS)
def test_integer_and_boolean_leaves_pass_through_untouched(name):
    p = {**params(), "step": jnp.arange(3), "mask": jnp.array([True, False])}
    opt = LEARNERS[name]()
    grads = jax.grad(lambda q: jnp.sum(q["w"] ** 2) + jnp.sum(q["b"]), allow_int=True)(p)
    u, state = run(opt, p, grads)
    new = gradtx.apply_updates(p, u)
    np.testing.assert_array_equal(new["step"], p["step"])
    np.testing.assert_array_equal(new["mask"], p["mask"])
    assert not np.allclose(new["w"], p["w"])


@pytest.mark.parametrize("name", LEARNERS)
def test_empty_trees_and_none_leaves(name):
    for empty in ({}, [], ()):
        opt = LEARNERS[name]()
        u, _ = opt.update(empty, opt.init(empty), empty, **EXTRA)
        assert u == empty
    p = {"w": jnp.ones(3), "gone": None}
    u, _ = run(LEARNERS[name](), p, {"w": jnp.ones(3), "gone": None})
    assert u["gone"] is None and finite(u)


@pytest.mark.parametrize("name", LEARNERS)
def test_mismatched_trees_name_the_path(name):
    opt = LEARNERS[name]()
    state = opt.init(params())
    wrong = {"w": jnp.ones((2, 3)), "b": jnp.ones(4)}
    with pytest.raises(gradtx.TreeMismatchError, match=r"\['b'\]"):
        opt.update(wrong, state, params(), **EXTRA)


@pytest.mark.parametrize("name", LEARNERS)
def test_counts_at_the_int32_maximum(name):
    opt, p = LEARNERS[name](), params()
    state = jax.tree.map(
        lambda x: jnp.full_like(x, INT32_MAX) if x.dtype == jnp.int32 else x, opt.init(p)
    )
    u, state = jax.jit(lambda g, s: opt.update(g, s, p, **EXTRA))(
        jax.tree.map(jnp.ones_like, p), state
    )
    assert finite(u)
    for x in jax.tree.leaves(state):
        if x.dtype == jnp.int32:
            assert int(jnp.max(x)) == INT32_MAX  # saturated, not wrapped to negative


@pytest.mark.parametrize("name", LEARNERS)
def test_empty_array_leaves(name):
    # Zero-size leaves: no entries to reduce (the norm's overflow branch has no max).
    p = {"empty": jnp.zeros((0, 3)), "w": jnp.ones(3)}
    opt = gradtx.chain(gradtx.clip_by_global_norm(1.0), LEARNERS[name]())
    u, state = run(opt, p, {"empty": jnp.zeros((0, 3)), "w": jnp.ones(3)})
    assert u["empty"].shape == (0, 3) and finite(u) and finite(state)
