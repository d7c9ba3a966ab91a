"""MultiSteps against optax.MultiSteps micro-step by micro-step; the inner update runs at k only."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from conftest import assert_trees_close, assert_vmap_equals_loop, grads_at, make_params, run

import gradtx

MICRO_STEPS = 40


def _gradients(params, t, dtype=None, poison=()):
    g = grads_at(params, t)
    if t in poison:  # a NaN in one leaf: a micro-step a skip function must reject
        g["dense"][0] = g["dense"][0].at[0, 0].set(jnp.nan)
    return g if dtype is None else jax.tree.map(lambda x: x.astype(dtype), g)


def _both(ours, theirs, params, update_ours, dtype=None, poison=()):
    """Run both over MICRO_STEPS micro-steps; compare updates, states and has_updated."""
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    p_ours = p_theirs = params
    # The oracle jitted: eagerly its lax.cond compiles at every call. Eager and jitted
    # arithmetic round differently (XLA fuses, and computes float16 in float32), so the
    # tolerance is a few ulps of the dtype: float32's rtol 1e-6, float16's eps 2**-10.
    update_theirs = jax.jit(theirs.update)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype is None else dict(rtol=2**-10, atol=2**-10)
    for t in range(MICRO_STEPS):
        u_ours, s_ours = update_ours(_gradients(p_ours, t, dtype, poison), s_ours, p_ours)
        u_theirs, s_theirs = update_theirs(
            _gradients(p_theirs, t, dtype, poison), s_theirs, p_theirs
        )
        chex.assert_trees_all_equal_dtypes(u_ours, u_theirs)
        assert_trees_close(u_ours, u_theirs, **tol)
        assert int(s_ours.mini_step) == int(s_theirs.mini_step), t
        assert int(s_ours.gradient_step) == int(s_theirs.gradient_step), t
        assert bool(ours.has_updated(s_ours)) == bool(theirs.has_updated(s_theirs)), t
        assert_trees_close(s_ours.acc_grads, s_theirs.acc_grads, **tol)
        inner_ours, inner_theirs = (jax.tree.leaves(s.inner_opt_state) for s in (s_ours, s_theirs))
        assert_trees_close(inner_ours, inner_theirs, **tol)
        assert_trees_close(s_ours.skip_state, s_theirs.skip_state)
        p_ours = gradtx.apply_updates(p_ours, u_ours)
        p_theirs = optax.apply_updates(p_theirs, u_theirs)
    assert int(s_ours.gradient_step) > 3  # the inner learner really ran, several times
    assert_trees_close(p_ours, p_theirs, **tol)


def _every_third_then_every_second(gradient_step):
    return jnp.where(gradient_step < 4, 3, 2)


CASES = [
    ("k3_mean", dict(every_k_schedule=3)),
    ("k3_sum", dict(every_k_schedule=3, use_grad_mean=False)),
    ("schedule_mean", dict(every_k_schedule=_every_third_then_every_second)),
    ("schedule_sum", dict(every_k_schedule=_every_third_then_every_second, use_grad_mean=False)),
    ("k1", dict(every_k_schedule=1)),
    ("accumulator_in_params_dtype", dict(every_k_schedule=4, accumulator_dtype=None)),
]


class MultiStepsOptaxTest(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*CASES)
    def test_equals_optax(self, kwargs):
        ours = gradtx.MultiSteps(optax.adam(1e-2), **kwargs)
        theirs = optax.MultiSteps(optax.adam(1e-2), **kwargs)
        _both(ours, theirs, make_params(), self.variant(ours.update))

    @chex.variants(with_jit=True, without_jit=True)
    def test_a_gradtx_inner_learner_equals_optax(self):
        ours = gradtx.MultiSteps(gradtx.adamw(1e-2, weight_decay=1e-2), every_k_schedule=3)
        theirs = optax.MultiSteps(optax.adamw(1e-2, weight_decay=1e-2), every_k_schedule=3)
        _both(ours, theirs, make_params(), self.variant(ours.update))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("mean", True), ("sum", False))
    def test_skip_not_finite_equals_optax(self, use_grad_mean):
        kwargs = dict(every_k_schedule=3, use_grad_mean=use_grad_mean)
        ours = gradtx.MultiSteps(
            optax.adam(1e-2), should_skip_update_fn=gradtx.skip_not_finite, **kwargs
        )
        theirs = optax.MultiSteps(
            optax.adam(1e-2), should_skip_update_fn=optax.skip_not_finite, **kwargs
        )
        _both(ours, theirs, make_params(), self.variant(ours.update), poison=(2, 7, 8, 20))

    @chex.variants(with_jit=True, without_jit=True)
    def test_skip_large_updates_equals_optax(self):
        def make(module):
            skip = functools.partial(module.skip_large_updates, max_squared_norm=68.0)
            inner = optax.sgd(1e-2, momentum=0.9)
            return module.MultiSteps(inner, every_k_schedule=2, should_skip_update_fn=skip)

        ours = make(gradtx)
        params = make_params()
        _both(ours, make(optax), params, self.variant(ours.update))
        # The bound rejects some micro-steps and keeps others: both branches were exercised.
        norms = [float(optax.tree.norm(grads_at(params, t), squared=True)) for t in range(10)]
        assert min(norms) < 68.0 < max(norms)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("mean", True), ("sum", False))
    def test_float16_gradients_equal_optax(self, use_grad_mean):
        kwargs = dict(every_k_schedule=3, use_grad_mean=use_grad_mean)
        ours = gradtx.MultiSteps(optax.sgd(1e-1, momentum=0.5), **kwargs)
        theirs = optax.MultiSteps(optax.sgd(1e-1, momentum=0.5), **kwargs)
        params = make_params(dtype=jnp.float16)
        _both(ours, theirs, params, self.variant(ours.update), dtype=jnp.float16)
        state = ours.init(params)
        assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.acc_grads))


def test_the_state_has_optaxs_fields_and_works_in_both_chains():
    assert gradtx.MultiStepsState._fields == optax.MultiStepsState._fields
    params = {"w": jnp.ones(3)}
    ms = gradtx.MultiSteps(gradtx.sgd(1.0), every_k_schedule=2)
    for opt in (ms, ms.gradient_transformation(), gradtx.chain(ms), optax.chain(ms)):
        state = opt.init(params)
        first, state = opt.update({"w": jnp.full(3, 1.0)}, state, params)
        second, state = opt.update({"w": jnp.full(3, 3.0)}, state, params)
        np.testing.assert_array_equal(first["w"], 0.0)
        np.testing.assert_allclose(second["w"], -2.0)
    assert ms.inner_opt is not None and ms.has_updated(ms.init(params)).dtype == jnp.bool_


def test_the_inner_update_runs_only_on_the_kth_micro_step():
    calls = []

    def update(updates, state, params=None):
        jax.debug.callback(lambda: calls.append(1))
        return jax.tree.map(lambda g: -g, updates), state

    counting = gradtx.GradientTransformation(lambda p: gradtx.EmptyState(), update)
    params = {"w": jnp.zeros(2)}
    for step in (
        gradtx.MultiSteps(counting, 3).update,
        jax.jit(gradtx.MultiSteps(counting, 3).update),
    ):
        calls.clear()
        ms = gradtx.MultiSteps(counting, 3)
        state = ms.init(params)
        for _ in range(9):
            _, state = step({"w": jnp.ones(2)}, state)
        jax.effects_barrier()
        assert len(calls) == 3  # 9 micro-steps, k = 3: three inner updates, no more
    # optax's MultiSteps runs the inner update at every micro-step and keeps it at the k-th.
    calls.clear()
    theirs = optax.MultiSteps(counting, 3)
    state = theirs.init(params)
    for _ in range(9):
        _, state = theirs.update({"w": jnp.ones(2)}, state)
    jax.effects_barrier()
    assert len(calls) == 9


def test_the_compiled_update_has_a_conditional():
    ms = gradtx.MultiSteps(gradtx.adam(1e-2), every_k_schedule=4)
    params = make_params()
    hlo = jax.jit(ms.update).lower(params, ms.init(params), params).compile().as_text()
    assert "conditional" in hlo


def test_a_complex_leaf_keeps_its_imaginary_part():
    params = {"z": jnp.zeros(2, jnp.complex64)}
    ms = gradtx.MultiSteps(gradtx.sgd(1.0), every_k_schedule=2)
    state = ms.init(params)
    assert state.acc_grads["z"].dtype == jnp.complex64  # optax's float32 would drop it
    g1, g2 = jnp.array([1 + 2j, -1j], jnp.complex64), jnp.array([3 - 2j, 1 + 1j], jnp.complex64)
    _, state = ms.update({"z": g1}, state, params)
    second, _ = ms.update({"z": g2}, state, params)
    np.testing.assert_allclose(second["z"], -(np.asarray(g1) + np.asarray(g2)) / 2, rtol=1e-6)


def test_a_nan_cycle_does_not_poison_the_next_one():
    """optax resets its accumulator with 0 * acc, so one NaN cycle makes every later one NaN."""
    ms = gradtx.MultiSteps(gradtx.sgd(1.0), every_k_schedule=2)
    params = {"w": jnp.zeros(1)}
    state, out = ms.init(params), []
    for g in (jnp.nan, 1.0, 2.0, 4.0):
        u, state = ms.update({"w": jnp.array([g])}, state, params)
        out.append(float(u["w"][0]))
    assert np.isnan(out[1]) and out[2:] == [0.0, -3.0]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="MultiSteps: every_k_schedule must be an integer >= 1"):
        gradtx.MultiSteps(gradtx.sgd(0.1), 0)
    with pytest.raises(ValueError, match="MultiSteps: accumulator_dtype must be a floating"):
        gradtx.MultiSteps(gradtx.sgd(0.1), 2, accumulator_dtype=jnp.int32)
    ms = gradtx.MultiSteps(
        gradtx.sgd(0.1), 2, should_skip_update_fn=lambda u, s, p: (jnp.zeros(2, bool), ())
    )
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="should_skip_update_fn must return a bool scalar"):
        ms.update(params, ms.init(params), params)


def test_skip_functions_equal_optaxs():
    g = {"a": jnp.array([1.0, jnp.inf, jnp.nan]), "b": jnp.array([3.0])}
    for ours, theirs in (
        (gradtx.skip_not_finite(g, 0, None), optax.skip_not_finite(g, 0, None)),
        (
            gradtx.skip_large_updates({"b": g["b"]}, 0, None, 9.5),
            optax.skip_large_updates({"b": g["b"]}, 0, None, 9.5),
        ),
        (gradtx.skip_large_updates(g, 0, None, 1e9), optax.skip_large_updates(g, 0, None, 1e9)),
    ):
        assert bool(ours[0]) == bool(theirs[0])
        assert set(ours[1]) == set(theirs[1])
        chex.assert_trees_all_equal(ours[1], theirs[1])


def test_vmap_over_learning_rate():
    params = make_params()
    train = lambda lr: run(gradtx.MultiSteps(gradtx.adam(lr), 3), params, steps=9)  # noqa: E731
    assert_vmap_equals_loop(train, jnp.array([1e-3, 1e-2, 1e-1]))


def test_gradtx_accumulate_stays_the_short_form():
    """accumulate(tx, k) and MultiSteps(tx, k) take the same steps (the mean two ways)."""
    params = make_params()
    short = run(gradtx.accumulate(gradtx.adam(1e-2), 3), params, steps=12)
    full = run(gradtx.MultiSteps(gradtx.adam(1e-2), 3), params, steps=12)
    assert_trees_close(short, full, rtol=1e-5, atol=1e-6)
