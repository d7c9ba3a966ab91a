"""gradtx.fused_update: one pass per step, the same numbers and state as update + apply."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import warnings
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import (
    assert_trees_close,
    assert_vmap_equals_loop,
    grads_at,
    make_params,
    slow_where,
)

import gradtx
import gradtx.fused
from benchmarks.hlo import memory_traffic
from gradtx.fused import build

S = gradtx.schedules


@pytest.fixture
def fresh_kernels():
    """Forget the library's path, whether it loaded and the fallback warning, before and after."""
    build.forget()
    gradtx.fused._warn_fallback.cache_clear()
    yield
    build.forget()
    gradtx.fused._warn_fallback.cache_clear()


@pytest.fixture
def no_compiler(monkeypatch):
    """No C++ compiler can be found: neither $CXX nor anything on PATH."""
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(build.shutil, "which", lambda name: None)


@pytest.fixture
def empty_cache(monkeypatch, tmp_path):
    """Nothing is cached: an empty $GRADTX_CACHE and an empty temporary directory."""
    monkeypatch.setenv("GRADTX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(build.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    return tmp_path / "cache"


def _fallback_warnings(caught):
    return [w for w in caught if issubclass(w.category, gradtx.FusedFallbackWarning)]


# For make_params' tree: two of its five leaves decay.
MASK = {"dense": [True, False], "conv": True, "head": False}


def _not_a_vector(x):  # a mask of the params: three of make_params' five leaves decay
    return x.ndim != 1


FUSED = {
    "adam": lambda: gradtx.adam(1e-2),
    "adam, eps_root, coupled decay": lambda: gradtx.adam(
        1e-2, b1=0.8, eps_root=1e-6, weight_decay=1e-2
    ),
    "adam, scheduled rate and decay": lambda: gradtx.adam(
        S.warmup(S.cosine_decay(1e-2, 20), 5), weight_decay=S.linear(1e-2, 0.0, 20)
    ),
    "adamw": lambda: gradtx.adamw(1e-2, weight_decay=1e-2),
    "adamw, scheduled": lambda: gradtx.adamw(
        S.cosine_decay(1e-2, 30), weight_decay=S.linear(0.1, 0.0, 15)
    ),
    "sgd": lambda: gradtx.sgd(0.1),
    "sgd, coupled decay": lambda: gradtx.sgd(0.1, weight_decay=1e-2),
    "sgd momentum": lambda: gradtx.sgd(0.05, 0.9),
    "sgd nesterov, decay": lambda: gradtx.sgd(0.05, 0.9, nesterov=True, weight_decay=1e-3),
    "sgd unit gain, scheduled momentum": lambda: gradtx.sgd(
        S.linear(0.1, 0.01, 20), S.linear(0.5, 0.9, 20), unit_gain=True
    ),
    "sgd nesterov unit gain": lambda: gradtx.sgd(0.05, 0.9, nesterov=True, unit_gain=True),
    "rmsprop": lambda: gradtx.rmsprop(1e-2),
    "rmsprop, torch's eps, decay": lambda: gradtx.rmsprop(
        1e-2, decay=0.99, eps_in_sqrt=False, initial_scale=0.1, weight_decay=1e-2
    ),
    # Kernels added by one rule declared on the block and its C++ loop.
    "adagrad": lambda: gradtx.adagrad(0.1),
    "adagrad, torch's eps, decay": lambda: gradtx.adagrad(
        0.1, initial_accumulator_value=0.0, eps=1e-10, eps_in_sqrt=False, weight_decay=1e-2
    ),
    "lion": lambda: gradtx.lion(1e-3),
    "lion, scheduled rate and decay": lambda: gradtx.lion(
        S.cosine_decay(1e-3, 30), weight_decay=S.linear(0.1, 0.0, 15)
    ),
    "nadam": lambda: gradtx.nadam(1e-2),
    "adam nesterov, coupled decay": lambda: gradtx.adam(1e-2, nesterov=True, weight_decay=1e-2),
    "adamw nesterov, scheduled": lambda: gradtx.adamw(
        S.cosine_decay(1e-2, 30), weight_decay=S.linear(0.1, 0.0, 15), nesterov=True
    ),
    "amsgrad": lambda: gradtx.amsgrad(1e-2),
    "amsgrad, eps_root, scheduled rate": lambda: gradtx.amsgrad(
        S.cosine_decay(1e-2, 30), b2=0.99, eps_root=1e-8
    ),
    "adamax": lambda: gradtx.adamax(1e-2),
    "adamax, coupled decay": lambda: gradtx.adamax(2e-2, b1=0.8, weight_decay=1e-2),
    "rmsprop centered": lambda: gradtx.rmsprop(1e-2, centered=True),
    "rmsprop centered, torch's eps, decay": lambda: gradtx.rmsprop(
        1e-2, decay=0.99, eps_in_sqrt=False, centered=True, weight_decay=1e-2
    ),
    # rmsprop's momentum is a trace after the rate: the kernel's momentum option.
    "rmsprop momentum": lambda: gradtx.rmsprop(1e-2, momentum=0.9),
    "rmsprop nesterov, torch's eps, decay": lambda: gradtx.rmsprop(
        1e-2, eps_in_sqrt=False, momentum=0.9, nesterov=True, weight_decay=1e-2
    ),
    "rmsprop centered momentum, scheduled": lambda: gradtx.rmsprop(
        S.cosine_decay(1e-2, 30), centered=True, momentum=S.linear(0.5, 0.9, 20)
    ),
    # Weight-decay masks: the leaves each mask leaves out get no decay (one call per kind).
    "adamw, masked": lambda: gradtx.adamw(1e-2, weight_decay=0.1, mask=MASK),
    "adamw, mask of the params": lambda: gradtx.adamw(
        1e-2, weight_decay=S.linear(0.1, 0.0, 15), mask=lambda p: jax.tree.map(_not_a_vector, p)
    ),
    "lion, masked": lambda: gradtx.lion(1e-3, weight_decay=0.1, mask=MASK),
    "masked coupled decay, adam": lambda: gradtx.chain(
        gradtx.add_decayed_weights(1e-2, MASK), gradtx.scale_by_adam(), gradtx.scale(-1e-2)
    ),
    # The common prefix and the wrapper that keeps hyperparameters in the state.
    "clip then adam": lambda: gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(1e-2)),
    "clip then adamw": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-2, weight_decay=1e-2)
    ),
    "clip then sgd nesterov, decay": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(2.0), gradtx.sgd(0.05, 0.9, nesterov=True, weight_decay=1e-3)
    ),
    "injected adam": lambda: gradtx.inject_hyperparams(gradtx.adam)(learning_rate=1e-2),
    "injected adamw, scheduled rate": lambda: gradtx.inject_hyperparams(gradtx.adamw)(
        learning_rate=S.cosine_decay(1e-2, 30), b1=0.8, weight_decay=1e-2
    ),
    "injected sgd momentum": lambda: gradtx.inject_hyperparams(gradtx.sgd)(
        learning_rate=0.05, momentum=0.9
    ),
    "injected rmsprop after clip": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(1.0),
        gradtx.inject_hyperparams(gradtx.rmsprop)(learning_rate=1e-2),
    ),
    "clip then nadam": lambda: gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.nadam(1e-2)),
    "clip then amsgrad": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(1.0), gradtx.amsgrad(1e-2)
    ),
    "clip then adamax": lambda: gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamax(1e-2)),
    "clip then centered rmsprop, nesterov": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(1.0),
        gradtx.rmsprop(1e-2, centered=True, momentum=0.9, nesterov=True),
    ),
    "clip then masked adamw": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-2, weight_decay=0.1, mask=MASK)
    ),
    "injected nadam": lambda: gradtx.inject_hyperparams(gradtx.nadam)(learning_rate=1e-2),
    "injected amsgrad": lambda: gradtx.inject_hyperparams(gradtx.amsgrad)(learning_rate=1e-2),
    "injected adamax": lambda: gradtx.inject_hyperparams(gradtx.adamax)(learning_rate=1e-2),
    "injected centered rmsprop, momentum": lambda: gradtx.inject_hyperparams(gradtx.rmsprop)(
        learning_rate=1e-2, centered=True, momentum=0.9
    ),
    "injected masked adamw": lambda: gradtx.inject_hyperparams(gradtx.adamw)(
        learning_rate=1e-2, weight_decay=0.1, mask=MASK
    ),
    # Blocks chained by hand, in the orders the kernels take.
    "momentum, decoupled decay": lambda: gradtx.chain(
        gradtx.trace(0.9), gradtx.add_decayed_weights(1e-2), gradtx.scale(-0.05)
    ),
    "rms, decoupled decay": lambda: gradtx.chain(
        gradtx.scale_by_rms(), gradtx.add_decayed_weights(1e-2), gradtx.scale_by_learning_rate(1e-2)
    ),
    "adam in nested chains": lambda: gradtx.chain(
        gradtx.chain(gradtx.identity(), gradtx.add_decayed_weights(1e-2)),
        gradtx.chain(gradtx.scale_by_adam(b2=0.99), gradtx.identity()),
        gradtx.float_leaves(gradtx.scale_by_schedule(S.linear(-1e-2, 0.0, 20))),
    ),
    "sgd, then momentum on the scaled steps": lambda: gradtx.chain(
        gradtx.scale(-0.05), gradtx.trace(0.9)
    ),
    "adam, then nesterov unit-gain momentum on the scaled steps": lambda: gradtx.chain(
        gradtx.scale_by_adam(), gradtx.scale(-1e-2), gradtx.trace(0.5, True, unit_gain=True)
    ),
    "amsgrad, decoupled decay, momentum on the scaled steps": lambda: gradtx.chain(
        gradtx.scale_by_amsgrad(), gradtx.add_decayed_weights(1e-2), gradtx.scale(-1e-2),
        gradtx.trace(0.9),
    ),
    # The catalogue's elementwise learners (issue 20).
    "adabelief": lambda: gradtx.adabelief(1e-2),
    "adabelief nesterov, clipped": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(1.0), gradtx.adabelief(1e-2, eps=1e-8, nesterov=True)),
    "yogi": lambda: gradtx.yogi(1e-2),
    "yogi, eps_root, scheduled rate": lambda: gradtx.chain(
        gradtx.scale_by_yogi(b2=0.99, eps_root=1e-6), gradtx.scale_by_learning_rate(
            S.cosine_decay(1e-2, 30))),
    # rho_t passes the threshold at the sixth step: both of RAdam's branches run.
    "radam": lambda: gradtx.radam(1e-2),
    "radam nesterov, coupled decay": lambda: gradtx.chain(
        gradtx.add_decayed_weights(1e-2), gradtx.scale_by_radam(nesterov=True),
        gradtx.scale(-1e-2)),
    "nadamw": lambda: gradtx.nadamw(1e-2, weight_decay=1e-2),
    "adamaxw, masked": lambda: gradtx.adamaxw(1e-2, weight_decay=0.1, mask=MASK),
    "sign_sgd": lambda: gradtx.sign_sgd(1e-3),
    "sign_sgd, scheduled": lambda: gradtx.sign_sgd(S.cosine_decay(1e-3, 30)),
    "signum": lambda: gradtx.signum(1e-3),
    "signum, decoupled decay": lambda: gradtx.chain(
        gradtx.ema(0.8, debias=False), gradtx.scale_by_sign(), gradtx.add_decayed_weights(1e-2),
        gradtx.scale_by_learning_rate(1e-3)),
    "ema, debiased": lambda: gradtx.chain(gradtx.ema(0.9), gradtx.scale(-1e-2)),
    "injected yogi": lambda: gradtx.inject_hyperparams(gradtx.yogi)(learning_rate=1e-2),
    "adan": lambda: gradtx.adan(1e-2),
    "adan, decay, clipped": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(1.0), gradtx.adan(1e-2, b2=0.8, weight_decay=1e-2)),
    "rprop": lambda: gradtx.rprop(1e-2),
    "rprop, torch's unlagged": lambda: gradtx.rprop(1e-2, eta_plus=1.5, lagged=False),
    "optimistic_gradient_descent": lambda: gradtx.optimistic_gradient_descent(1e-2),
    "optimistic, scheduled alpha": lambda: gradtx.optimistic_gradient_descent(
        1e-2, alpha=S.cosine_decay(1.0, 30), beta=0.5),
    # Adam's rule and the optimistic correction of its direction: one composite kernel.
    "optimistic_adam_v2": lambda: gradtx.optimistic_adam_v2(1e-2),
    "optimistic_adam_v2 plain adam, scheduled beta, clipped": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(1.0), gradtx.optimistic_adam_v2(
            S.cosine_decay(1e-2, 30), alpha=0.5, beta=S.linear(2.0, 0.5, 20), nesterov=False)),
    "optimistic_adam, its optimism": lambda: _deprecated(gradtx.optimistic_adam, 1e-2, 5e-3),
    "injected optimistic_adam_v2": lambda: gradtx.inject_hyperparams(gradtx.optimistic_adam_v2)(
        learning_rate=1e-2, beta=0.7),
}  # fmt: skip


def _deprecated(make, *args):
    with pytest.warns(DeprecationWarning):
        return make(*args)


def _plain(opt, grads, state, params):
    updates, state = opt.update(grads, state, params)
    return gradtx.apply_updates(params, updates), state


def _trajectory(opt, step, steps=20):
    params = make_params()
    state = opt.init(params)
    for t in range(steps):
        params, state = step(opt, grads_at(params, t), state, params)
    return params, state


@pytest.mark.parametrize("name", FUSED)
def test_fused_learners_equal_update_then_apply(name):
    opt = FUSED[name]()
    assert gradtx.is_fused(opt)
    plain = jax.jit(_plain, static_argnums=0)
    fused = jax.jit(gradtx.fused_update, static_argnums=0)
    ours, theirs = _trajectory(opt, fused), _trajectory(opt, plain)
    chex.assert_trees_all_equal_structs(ours, theirs)
    assert_trees_close(ours, theirs, rtol=1e-6, atol=1e-7)


def _flat64(tree):
    return np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree.leaves(tree)])


# Every third learner by default (each kernel's sums are the same loop); all in the whole suite.
@pytest.mark.parametrize("name", slow_where(FUSED, lambda name: name not in list(FUSED)[::3]))
def test_the_kernels_norms_are_those_of_the_gradients_and_updates(name):
    """update_and_apply's norms, summed in the kernel's pass, against NumPy's of the plain step."""
    opt = FUSED[name]()
    params = make_params()
    state = opt.init(params)
    grads = jax.tree.map(lambda x: jnp.cos(3.0 * x), params)
    step = jax.jit(gradtx.fused.update_and_apply, static_argnums=0)
    for _ in range(3):
        updates, _ = opt.update(grads, state, params)
        applied = step(opt, grads, state, params)
        assert _kernel_calls(opt, params)
        np.testing.assert_allclose(applied.grad_norm, np.linalg.norm(_flat64(grads)), rtol=1e-6)
        np.testing.assert_allclose(applied.update_norm, np.linalg.norm(_flat64(updates)), rtol=1e-5)
        params, state = applied.params, applied.state


class BitwiseTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_fused_adam_is_bitwise_the_plain_step(self):
        opt = gradtx.adam(1e-2)
        params = {"w": jax.random.normal(jax.random.key(0), (1000,))}
        grads = {"w": jax.random.normal(jax.random.key(1), (1000,)) * 1e-3}
        fused = self.variant(lambda g, s, p: gradtx.fused_update(opt, g, s, p))
        plain = jax.jit(lambda g, s, p: _plain(opt, g, s, p))
        a = b = (params, opt.init(params))
        for _ in range(3):
            a, b = fused(grads, a[1], a[0]), plain(grads, b[1], b[0])
        chex.assert_trees_all_equal(a, b)


def test_a_mixed_run_equals_either_path():
    """The state is the learner's own: steps may alternate between the two paths."""
    opt = gradtx.sgd(0.05, 0.9, weight_decay=1e-3)
    plain = jax.jit(_plain, static_argnums=0)
    fused = jax.jit(gradtx.fused_update, static_argnums=0)
    calls = iter(range(100))

    def mixed(o, g, s, p):
        return (fused if next(calls) % 2 else plain)(o, g, s, p)

    assert_trees_close(_trajectory(opt, mixed), _trajectory(opt, plain))


def test_the_step_is_one_kernel_of_one_pass():
    n = 100_000
    opt = gradtx.adam(1e-3)
    params = {"w": jnp.zeros(n), "b": jnp.zeros((250, 400))}
    step = jax.jit(lambda p, s, g: gradtx.fused_update(opt, g, s, p), donate_argnums=(0, 1))
    hlo = step.lower(params, opt.init(params), params).compile().as_text()
    # Params, grads and two moments read, params and moments written: 28 bytes, once.
    kernels, traffic = memory_traffic(hlo, 2 * n)
    assert kernels == 1 and round(traffic, 2) == 28.0  # (plus 40 bytes of scalars)
    plain = jax.jit(lambda p, s, g: _plain(opt, g, s, p), donate_argnums=(0, 1))
    plain_hlo = plain.lower(params, opt.init(params), params).compile().as_text()
    kernels, traffic = memory_traffic(plain_hlo, 2 * n)
    assert kernels > 1 and traffic > 28.0  # what XLA:CPU makes of the same step


BF16 = {
    "adam": lambda dtype: gradtx.adam(1e-2, state_dtype=dtype),
    "adamw, clipped": lambda dtype: gradtx.chain(
        gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-2, weight_decay=1e-2, state_dtype=dtype)
    ),
    "nadam": lambda dtype: gradtx.nadam(1e-2, state_dtype=dtype),
    "amsgrad": lambda dtype: gradtx.amsgrad(1e-2, state_dtype=dtype),
    "adamax": lambda dtype: gradtx.adamax(1e-2, state_dtype=dtype),
    "adamw, masked": lambda dtype: gradtx.adamw(
        1e-2, weight_decay=1e-2, mask=MASK, state_dtype=dtype
    ),
    "sgd momentum": lambda dtype: gradtx.sgd(0.05, 0.9, state_dtype=dtype),
    "sgd nesterov unit gain": lambda dtype: gradtx.sgd(
        0.05, 0.9, nesterov=True, unit_gain=True, state_dtype=dtype
    ),
    "lion": lambda dtype: gradtx.lion(1e-3, weight_decay=1e-2, state_dtype=dtype),
    "rmsprop": lambda dtype: gradtx.rmsprop(1e-2, state_dtype=dtype),
    "rmsprop centered, torch's eps": lambda dtype: gradtx.rmsprop(
        1e-2, centered=True, eps_in_sqrt=False, state_dtype=dtype
    ),
    "rmsprop momentum": lambda dtype: gradtx.rmsprop(1e-2, momentum=0.9, state_dtype=dtype),
    "adagrad": lambda dtype: gradtx.adagrad(0.1, state_dtype=dtype),
    "adabelief": lambda dtype: gradtx.adabelief(1e-2, state_dtype=dtype),
    "yogi": lambda dtype: gradtx.yogi(1e-2, state_dtype=dtype),
    "radam": lambda dtype: gradtx.radam(1e-2, state_dtype=dtype),
    "signum": lambda dtype: gradtx.signum(1e-3, state_dtype=dtype),
    "adan": lambda dtype: gradtx.adan(1e-2, state_dtype=dtype),
    "rprop": lambda dtype: gradtx.rprop(1e-2, lagged=False, state_dtype=dtype),
    "optimistic_gradient_descent": lambda dtype: gradtx.optimistic_gradient_descent(
        1e-2, state_dtype=dtype
    ),
    "optimistic_adam_v2": lambda dtype: gradtx.optimistic_adam_v2(
        1e-2, beta=0.5, state_dtype=dtype
    ),
}
# Where a moment's float32 value is computed as XLA computes it, its bfloat16 bits are the
# plain path's. Elsewhere it can differ in the last float32 bit (the clip's scale contracted
# into another product; AMSGrad's maximum of nu times, not divided by, its bias correction;
# a trace after XLA's rsqrt, which is a hardware estimate refined by Newton steps, not the
# correctly rounded 1/sqrt; Adan's second moment on a 0-d leaf, whose sum XLA contracts as it
# does in float32, not as in the arrays widened from bfloat16; optimistic Adam's stored last
# direction, Adam's step, which in float32 can differ from the plain path's in the last bit
# where Adam's moments do not), and the stochastic rounding's hash of those bits then picks
# either bfloat16 neighbour: one bfloat16 ulp apart, each as likely as it should be.
WITHIN_AN_ULP = {"adamw, clipped", "amsgrad", "rmsprop momentum", "adan", "optimistic_adam_v2"}


def _bf16_ulps(a, b):
    """|a - b| in units of the bfloat16 spacing at b (both widened to float32)."""
    a, b = (np.asarray(x, np.float32) for x in (a, b))
    spacing = np.spacing(np.abs(b).astype(np.float32)) * 2.0**16  # bfloat16 keeps 8 of 24 bits
    return np.abs(a - b) / np.where(b == 0, np.finfo(np.float32).tiny, spacing)


@pytest.mark.parametrize("name", BF16)
def test_bfloat16_moments_are_the_plain_paths_stochastically_rounded_bits(name):
    """state_dtype=bfloat16 runs the kernel with bfloat16 moments, rounded as the blocks do.

    Each step starts from the plain path's state, so one moment that rounds the other way
    (see AFTER_A_ROOT) does not carry into the next steps' comparison.
    """
    opt = BF16[name](jnp.bfloat16)
    assert gradtx.is_fused(opt)
    assert any(t.endswith("_bf16") for t in _kernel_calls(opt, make_params()))
    fused = jax.jit(gradtx.fused_update, static_argnums=0)
    plain = jax.jit(_plain, static_argnums=0)
    params = make_params()
    state = opt.init(params)
    for t in range(20):
        grads = grads_at(params, t)
        (p1, s1), (p2, s2) = fused(opt, grads, state, params), plain(opt, grads, state, params)
        chex.assert_trees_all_equal_dtypes(s1, s2)
        for ours, theirs in zip(jax.tree.leaves(s1), jax.tree.leaves(s2), strict=True):
            if name in WITHIN_AN_ULP:
                assert _bf16_ulps(ours, theirs).max() <= 1
            else:
                np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
        # The params move by what the stored moments give: equal to float32 rounding, or
        # (a moment an ulp apart) the steps equal to a bfloat16 ulp.
        if name in WITHIN_AN_ULP:
            steps = [jax.tree.map(jnp.subtract, new, params) for new in (p1, p2)]
            assert_trees_close(*steps, rtol=2.0**-6, atol=1e-6)
        else:
            assert_trees_close(p1, p2, rtol=1e-6, atol=1e-7)
        params, state = p2, s2


@pytest.mark.parametrize("seed", [0, 1, 12_345, 2**31 - 1])
def test_the_bfloat16_kernels_round_as_stochastic_round(seed):
    """A trace from zero stores the gradient itself: its bits are tree.stochastic_round's."""
    build.register()
    rng = np.random.default_rng(seed % 1000)
    g = jnp.asarray(rng.normal(size=4096) * 10.0 ** rng.integers(-30, 30, 4096), jnp.float32)
    g = g.at[:3].set(jnp.asarray([jnp.inf, -jnp.inf, 0.0]))
    hyper = jnp.zeros(len(gradtx.fused.layout.scalars(gradtx.transforms.averages.TRACE)))
    seeds = jnp.zeros(gradtx.fused.layout.SEEDS, jnp.uint32).at[0].set(seed)
    _, (trace,), _ = gradtx.fused._call(
        "gradtx_sgd_momentum_bf16", 0, hyper, seeds, jnp.zeros_like(g), g,
        (jnp.zeros(g.shape, jnp.bfloat16),),
    )  # fmt: skip
    expected = gradtx.tree.stochastic_round(g, seed)
    np.testing.assert_array_equal(
        jax.lax.bitcast_convert_type(trace, jnp.uint16),
        jax.lax.bitcast_convert_type(expected, jnp.uint16),
    )


def test_fused_adam_with_bfloat16_moments_moves_20_bytes_per_parameter():
    n = 100_000
    opt = gradtx.adam(1e-3, state_dtype=jnp.bfloat16)
    params = {"w": jnp.zeros(n), "b": jnp.zeros((250, 400))}
    step = jax.jit(lambda p, s, g: gradtx.fused_update(opt, g, s, p), donate_argnums=(0, 1))
    hlo = step.lower(params, opt.init(params), params).compile().as_text()
    # float32 params and grads read, params written (12 bytes), two bfloat16 moments read and
    # written (8 bytes): once.
    kernels, traffic = memory_traffic(hlo, 2 * n)
    assert kernels == 1 and round(traffic, 2) == 20.0


def test_a_large_tree_is_one_call_per_32_leaves_with_the_same_numbers():
    opt = gradtx.adamw(1e-2, weight_decay=1e-2)
    params = {f"p{i:02d}": jnp.full((i % 5 + 1, 3), 0.1 * i) for i in range(70)}
    grads = jax.tree.map(lambda p: jnp.cos(p) * 1e-2, params)
    state = opt.init(params)
    fused = jax.jit(lambda g, s, p: gradtx.fused_update(opt, g, s, p))
    hlo = fused.lower(grads, state, params).compile().as_text()
    assert hlo.count('custom_call_target="gradtx_adam"') == 3  # 32 + 32 + 6 leaves
    assert_trees_close(fused(grads, state, params), _plain(opt, grads, state, params))


def _kernel_calls(opt, params):
    """The fused step's custom calls in the compiled HLO, by target."""
    step = jax.jit(lambda g, s, p: gradtx.fused_update(opt, g, s, p))
    hlo = step.lower(grads_at(params, 0), opt.init(params), params).compile().as_text()
    targets = re.findall(r'custom_call_target="(gradtx_\w+)"', hlo)
    return {t: targets.count(t) for t in targets}


@pytest.mark.parametrize("name", ["clip then adamw", "injected adamw, scheduled rate"])
def test_clip_then_adamw_and_injected_adamw_are_one_kernel_call(name):
    params = make_params()
    assert len(jax.tree.leaves(params)) <= gradtx.buffers.LEAVES_PER_RUN
    assert gradtx.tree.global_norm(grads_at(params, 0)) > 1.0  # the clip scales the gradients
    assert _kernel_calls(FUSED[name](), params) == {"gradtx_adam": 1}  # numbers: the test above


@pytest.mark.parametrize(
    ("name", "calls"),
    [
        ("nadam", {"gradtx_adam": 1}),
        ("amsgrad", {"gradtx_amsgrad": 1}),
        ("adamax", {"gradtx_adamax": 1}),
        ("rmsprop centered", {"gradtx_rmsprop_centered": 1}),
        ("rmsprop momentum", {"gradtx_rmsprop": 1}),
        ("rmsprop centered momentum, scheduled", {"gradtx_rmsprop_centered": 1}),
        ("sgd, then momentum on the scaled steps", {"gradtx_sgd": 1}),
        ("clip then centered rmsprop, nesterov", {"gradtx_rmsprop_centered": 1}),
        ("injected amsgrad", {"gradtx_amsgrad": 1}),
        ("optimistic_adam_v2", {"gradtx_optimistic_adam": 1}),
        ("injected optimistic_adam_v2", {"gradtx_optimistic_adam": 1}),
        # A mask splits the leaves in two kinds: one call for each.
        ("adamw, masked", {"gradtx_adam": 2}),
        ("adamw, mask of the params", {"gradtx_adam": 2}),
        ("clip then masked adamw", {"gradtx_adam": 2}),
        ("injected masked adamw", {"gradtx_adam": 2}),
    ],
)
def test_each_learner_runs_its_kernel(name, calls):
    assert _kernel_calls(FUSED[name](), make_params()) == calls  # numbers: the tests above


def test_a_leaf_the_mask_leaves_out_gets_no_decay_at_all():
    """Not a decay of 0: an infinite param times 0 is NaN, where the plain path keeps it."""
    params = {"w": jnp.linspace(-1.0, 1.0, 6), "b": jnp.array([jnp.inf, -jnp.inf, 0.5])}
    grads = jax.tree.map(lambda p: jnp.where(jnp.isfinite(p), 0.5 * p + 0.1, 1.0), params)
    for opt in (
        gradtx.adamw(1e-2, weight_decay=0.1, mask={"w": True, "b": False}),
        gradtx.chain(  # a coupled decay, its mask a function of the params
            gradtx.add_decayed_weights(0.1, lambda p: {"w": True, "b": False}),
            gradtx.scale_by_adam(),
            gradtx.scale(-1e-2),
        ),
    ):
        assert _kernel_calls(opt, params) == {"gradtx_adam": 2}
        state = opt.init(params)
        fused = jax.jit(lambda g, s, p, opt=opt: gradtx.fused_update(opt, g, s, p))
        ours, theirs = fused(grads, state, params), _plain(opt, grads, state, params)
        assert_trees_close(ours, theirs)
        np.testing.assert_array_equal(ours[0]["b"][:2], [jnp.inf, -jnp.inf])


def test_a_large_masked_tree_is_the_fewest_calls_with_the_same_numbers():
    params = {f"p{i:02d}": jnp.full((i % 5 + 1, 3), 0.1 * i) for i in range(70)}
    mask = {name: i % 3 == 0 for i, name in enumerate(params)}  # 24 leaves decay, 46 do not
    opt = gradtx.adamw(1e-2, weight_decay=1e-2, mask=mask)
    grads = jax.tree.map(lambda p: jnp.cos(p) * 1e-2, params)
    state = opt.init(params)
    assert _kernel_calls(opt, params) == {"gradtx_adam": 1 + 2}  # 24; 32 + 14
    fused = jax.jit(lambda g, s, p: gradtx.fused_update(opt, g, s, p))
    assert_trees_close(fused(grads, state, params), _plain(opt, grads, state, params))


def _adam_blocks(lr=1e-2, wd=1e-2):
    return gradtx.scale_by_adam(), gradtx.add_decayed_weights(wd), gradtx.scale(-lr)


# Adam's blocks in other orders and wrappers: (learner, whether a kernel may run it).
REORDERED = {
    "decay after adam (adamw)": (lambda: gradtx.chain(*_adam_blocks()), True),
    "decay before adam": (lambda: gradtx.chain(*_adam_blocks()[1::-1], gradtx.scale(-1e-2)), True),
    "decay after the rate": (lambda: gradtx.chain(*_adam_blocks()[::2], _adam_blocks()[1]), False),
    "rate first": (lambda: gradtx.chain(gradtx.scale(-1e-2), gradtx.scale_by_adam()), False),
    "two decays after adam": (
        lambda: gradtx.chain(*_adam_blocks()[:2], *_adam_blocks()[1:]), False),
    "two rates": (lambda: gradtx.chain(*_adam_blocks(), gradtx.scale(0.5)), False),
    "adam twice": (
        lambda: gradtx.chain(gradtx.scale_by_adam(b1=0.5), *_adam_blocks()), False),
    "rms then adam": (lambda: gradtx.chain(gradtx.scale_by_rms(), *_adam_blocks()), False),
    "clip after the decay": (
        lambda: gradtx.chain(gradtx.add_decayed_weights(1e-2), gradtx.clip_by_global_norm(1.0),
                             gradtx.scale_by_adam(), gradtx.scale(-1e-2)), False),
    "clip between adam and the rate": (
        lambda: gradtx.chain(gradtx.scale_by_adam(), gradtx.clip_by_global_norm(1.0),
                             gradtx.scale(-1e-2)), False),
    # A trace after the rate is momentum on the scaled steps (rmsprop's); anywhere else not.
    "a trace after the rate": (lambda: gradtx.chain(*_adam_blocks(), gradtx.trace(0.9)), True),
    "a trace between adam and the rate": (
        lambda: gradtx.chain(gradtx.scale_by_adam(), gradtx.trace(0.9), gradtx.scale(-1e-2)),
        False),
    "a decay after the trace": (
        lambda: gradtx.chain(gradtx.scale_by_adam(), gradtx.scale(-1e-2), gradtx.trace(0.9),
                             gradtx.add_decayed_weights(1e-2)), False),
    "a rate after the trace": (
        lambda: gradtx.chain(*_adam_blocks(), gradtx.trace(0.9), gradtx.scale(0.5)), False),
    "two traces after the rate": (
        lambda: gradtx.chain(*_adam_blocks(), gradtx.trace(0.9), gradtx.trace(0.5)), False),
    "an ema after the rate": (lambda: gradtx.chain(*_adam_blocks(), gradtx.ema(0.9)), False),
    "a masked decay after adam": (
        lambda: gradtx.chain(gradtx.scale_by_adam(), gradtx.add_decayed_weights(1e-2, MASK),
                             gradtx.scale(-1e-2)), True),
    "a masked decay after the rate": (
        lambda: gradtx.chain(gradtx.scale_by_adam(), gradtx.scale(-1e-2),
                             gradtx.add_decayed_weights(1e-2, MASK)), False),
    "masked": (
        lambda: gradtx.masked(gradtx.adam(1e-2), {"dense": True, "conv": False, "head": True}),
        False),
    "apply_if_finite": (lambda: gradtx.apply_if_finite(gradtx.adam(1e-2), 3), False),
    "lookahead_with_slow_weights": (
        lambda: gradtx.lookahead_with_slow_weights(gradtx.adam(1e-2), 2, 0.5), False),
    "optax.chain of gradtx blocks": (lambda: optax.chain(*_adam_blocks()), False),
    "injected, in another order": (
        lambda: gradtx.inject_hyperparams(
            lambda learning_rate: gradtx.chain(gradtx.scale(-learning_rate), gradtx.scale_by_adam())
        )(learning_rate=1e-2), False),
    "injected inside a chain, wrongly ordered": (
        lambda: gradtx.chain(gradtx.inject_hyperparams(gradtx.scale)(step_size=-1e-2),
                             gradtx.scale_by_adam()), False),
}  # fmt: skip


@pytest.mark.parametrize("name", REORDERED)
def test_a_reordered_or_wrapped_adam_fuses_right_or_not_at_all(name):
    make, fuses = REORDERED[name]
    opt = make()
    params = make_params()
    assert gradtx.is_fused(opt) == fuses
    assert bool(_kernel_calls(opt, params)) == fuses
    plain = jax.jit(_plain, static_argnums=0)
    fused = jax.jit(gradtx.fused_update, static_argnums=0)
    ours, theirs = _trajectory(opt, fused), _trajectory(opt, plain)
    chex.assert_trees_all_equal_structs(ours, theirs)  # every moment where the learner keeps it
    assert_trees_close(ours, theirs, rtol=1e-6, atol=1e-7)


# Scalars that switch a branch on (any nonzero value) or off (0).
SWITCHES = {"rectified", "initial", "first"}
VALID_SCALARS = {"scale_by_rprop": {"eta_minus": 0.5, "eta_plus": 1.2, "min_step_size": 0.01,
                                    "max_step_size": 50.0}}  # fmt: skip


@pytest.mark.parametrize("rule", gradtx.fused.layout.kernels(), ids=lambda rule: rule.name)
def test_each_kernel_reads_every_scalar_and_option_of_its_layout(rule):
    """The layout both sides share (gradtx_layout.h is generated from it) has nothing unread."""
    build.register()
    scalars, options = gradtx.fused.layout.scalars(rule), gradtx.fused.layout.options(rule)
    rng = np.random.default_rng(0)
    # Gradients of both signs (a sign rule must be able to flip), moments in (0.1, 1): the
    # rule's, then the trace the momentum option keeps.
    p, g = (jnp.asarray(rng.normal(size=64), jnp.float32) for _ in range(2))
    moments = tuple(
        jnp.asarray(rng.uniform(0.1, 1.0, 64), jnp.float32) for _ in (*rule.moments, "trace")
    )
    # In (0, 1): a valid value of each, but Rprop's, whose step sizes would all clip to 0.3.
    valid = {**dict.fromkeys(scalars, 0.3), **VALID_SCALARS.get(rule.name, {})}
    hyper = np.array([valid[name] for name in scalars], np.float32)
    every = 2 ** len(options) - 1
    momentum = 1 << options.index("momentum")
    # A sign after the rule hides how large its direction is (ema's bias correction).
    unsigned = every & ~(1 << options.index("sign")) if "sign" in options else every

    def run(hyper, flags):
        new_p, new_moments, squares = gradtx.fused._call(
            rule.kernel,
            flags,
            jnp.asarray(hyper),
            jnp.zeros(gradtx.fused.layout.SEEDS, jnp.uint32),
            p,
            g,
            moments[: None if flags & momentum else -1],
        )
        # The sums of squares of the gradients as given and of the updates applied.
        np.testing.assert_allclose(squares[0], np.sum(np.square(g, dtype=np.float64)), rtol=1e-6)
        np.testing.assert_allclose(squares[1], np.sum(np.square(new_p - p)), rtol=1e-4)
        return np.concatenate([new_p, *new_moments])

    base = run(hyper, unsigned)
    assert np.isfinite(base).all()  # so that a change below is a change, not a NaN
    for i, name in enumerate(scalars):
        changed = np.where(np.arange(len(hyper)) == i, 0.0 if name in SWITCHES else 0.7, hyper)
        assert not np.array_equal(run(changed, unsigned), base), name
    base = run(hyper, every)
    for bit, name in enumerate(options):
        assert not np.array_equal(run(hyper, every ^ (1 << bit)), base), name
    with pytest.raises(Exception, match="wrong number of scalars"):
        run(hyper[:-1], every)
    with pytest.raises(Exception, match="unknown option bits"):
        run(hyper, every + 1)


def test_the_layout_is_generated_from_the_rules_and_keys_the_library(monkeypatch):
    header = gradtx.fused.layout.header()
    for rule in gradtx.fused.layout.kernels():
        assert f"struct {rule.name} {{  // {rule.kernel}" in header
    # scale_by_adam's b1 sits after the shared scalars, in the order the rule declares.
    assert "kOneMinusMomentum, kB1, kOneMinusB1, kB2" in header
    key = build.cache_key()
    monkeypatch.setattr(gradtx.fused.layout, "header", lambda: header.replace("kB1, ", ""))
    assert build.cache_key() != key  # another layout is another library, never a stale one


CONCURRENT_CALLS = """
import jax, jax.numpy as jnp, numpy as np, gradtx, gradtx.buffers
# 300 leaves of three sizes in 19 calls that XLA may run at once, each big enough to
# split over the pool (the first scheduler hung here within a few steps).
gradtx.buffers.LEAVES_PER_RUN = 16
params = {}
for i in range(100):
    params.update({f"{i:03d}w": jnp.ones((256, 256)), f"{i:03d}p": jnp.ones((256, 56)),
                   f"{i:03d}b": jnp.ones(256)})
grads = jax.tree.map(lambda p: p * 0.5, params)
opt = gradtx.sgd(0.1, 0.9)
step = jax.jit(lambda p, s, g: gradtx.fused_update(opt, g, s, p), donate_argnums=(0, 1))
state = opt.init(params)
for _ in range(50):
    params, state = step(params, state, grads)
expected = 1 - 0.1 * 0.5 * sum(sum(0.9**k for k in range(t + 1)) for t in range(50))
np.testing.assert_allclose(params["099w"][0, :3], expected, rtol=1e-5)
print("ok")
"""


def test_concurrent_calls_splitting_work_over_the_pool_do_not_deadlock():
    # Each call hands ranges to XLA's pool, whose workers may be running the other call:
    # a caller must never wait for a range nobody has started (that hung on 2 cores).
    result = subprocess.run(
        [sys.executable, "-c", CONCURRENT_CALLS], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_vmap_over_learning_rates_equals_a_loop():
    def train(lr):
        opt = gradtx.adam(lr)
        params = make_params()
        state = opt.init(params)
        for t in range(5):
            params, state = gradtx.fused_update(opt, grads_at(make_params(), t), state, params)
        return params

    assert_vmap_equals_loop(train, [1e-3, 1e-2, 1e-1])


@pytest.mark.parametrize(
    "make",
    [
        lambda: gradtx.adam(1e-2, state_dtype=jnp.float16),  # no float16 kernels
        # Moments in two dtypes: the kernel keeps the rule's and the trace's alike.
        lambda: gradtx.chain(
            gradtx.scale_by_rms(state_dtype=jnp.bfloat16), gradtx.scale(-0.1), gradtx.trace(0.9)
        ),
        lambda: gradtx.adadelta(1.0),
        lambda: gradtx.chain(gradtx.scale_by_rss(normalize=True), gradtx.scale(-0.1)),
    ],
)
def test_other_learners_run_update_then_apply(make):
    opt = make()
    assert not gradtx.is_fused(opt)
    params = {"w": jnp.linspace(-1.0, 1.0, 6), "b": jnp.ones(2)}
    grads = jax.tree.map(lambda p: 0.5 * p + 0.1, params)
    state = opt.init(params)
    chex.assert_trees_all_equal(
        gradtx.fused_update(opt, grads, state, params), _plain(opt, grads, state, params)
    )


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_other_dtypes_run_update_then_apply(dtype):
    opt = gradtx.adam(1e-2)
    params = make_params(dtype=dtype)
    grads = grads_at(params, 0)
    state = opt.init(params)
    chex.assert_trees_all_equal(
        gradtx.fused_update(opt, grads, state, params), _plain(opt, grads, state, params)
    )


def test_without_a_compiler_the_error_says_what_to_do(no_compiler, empty_cache, fresh_kernels):
    with pytest.raises(build.FusedKernelsUnavailable, match="needs a C\\+\\+ compiler"):
        build.library_path()


def test_a_compile_error_is_reported_with_the_command(monkeypatch, empty_cache, fresh_kernels):
    monkeypatch.setattr(build, "FLAGS", ("-this-flag-does-not-exist",))
    with pytest.raises(build.FusedKernelsUnavailable, match="building the CPU kernels failed"):
        build.library_path()
    assert not list(empty_cache.glob("*.so"))  # nothing half-built is left to load


def test_a_cached_library_is_used_without_a_compiler(monkeypatch, fresh_kernels):
    built = build.library_path()  # built here now, unless an earlier test or run cached it
    build.forget()
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(build.FusedKernelsUnavailable):
        build._compiler()  # truly none to be found
    assert build.library_path() == built
    assert gradtx.fused_available()
    opt = gradtx.sgd(0.05, 0.9, weight_decay=1e-3)
    fused = jax.jit(gradtx.fused_update, static_argnums=0)
    params = make_params()
    hlo = fused.lower(opt, grads_at(params, 0), opt.init(params), params).as_text()
    assert "gradtx_sgd" in hlo  # the kernel ran, not the plain path
    with warnings.catch_warnings():
        warnings.simplefilter("error", gradtx.FusedFallbackWarning)
        ours = _trajectory(opt, fused)
    assert_trees_close(ours, _trajectory(opt, jax.jit(_plain, static_argnums=0)))


CORE = "processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\nflags\t\t: fpu sse2 avx2\ncpu MHz\t\t: {mhz}\n\n"  # noqa: E501


def test_the_cpu_description_is_the_model_and_flags(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(build, "CPUINFO", cpuinfo)
    cpuinfo.write_text(CORE.format(n=0, mhz=2000) + CORE.format(n=1, mhz=3100))
    two_cores = build.cpu_description()
    assert "model name: Xeon" in two_cores and "flags: fpu sse2 avx2" in two_cores
    cpuinfo.write_text(CORE.format(n=0, mhz=2500))
    assert build.cpu_description() == two_cores  # the number of cores and clocks don't count
    cpuinfo.write_text(CORE.replace("avx2", "avx2 avx512f").format(n=0, mhz=2500))
    assert build.cpu_description() != two_cores
    cpuinfo.write_text(CORE.replace("Xeon", "Xeon Phi").format(n=0, mhz=2500))
    assert build.cpu_description() != two_cores
    monkeypatch.setattr(build, "CPUINFO", tmp_path / "missing")  # not Linux: no crash
    assert build.cpu_description().startswith(platform.system())


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="no /proc/cpuinfo")
def test_the_cpu_description_reads_this_machines_cpuinfo():
    fields = [line.partition(":") for line in build.CPUINFO.read_text().splitlines()]
    described = [(k.strip(), v) for k, _, v in fields if k.strip() in build.CPUINFO_FIELDS]
    assert described  # x86 and Arm kernels both list some
    for name, value in described:
        assert f"{name}: {' '.join(value.split())}" in build.cpu_description()


def test_the_cache_key_and_path_follow_the_cpu(monkeypatch, empty_cache, fresh_kernels):
    """A home shared by two machines never hands one the library built for the other's CPU."""
    compiles = []

    def fake_compiler(compiler, *commands):  # records the build instead of running it (seconds)
        for command in commands:
            compiles.append("-shared" in command)  # the link: one per library built
            Path(command[command.index("-o") + 1]).write_text(f"built on {cpu}")

    monkeypatch.setattr(build, "_run", fake_compiler)
    paths = {}
    amd_cpu, intel_cpu = "AMD EPYC\nflags: avx2", "Intel Xeon\nflags: avx2 avx512f"
    for cpu in (amd_cpu, intel_cpu, amd_cpu):
        monkeypatch.setattr(build, "cpu_description", lambda cpu=cpu: cpu)
        build.forget()
        paths.setdefault(cpu, set()).add((build.cache_key(), build.library_path()))
    (amd,), (intel,) = paths.values()  # the same CPU: the same key and path, both times
    assert amd[0] != intel[0] and amd[1] != intel[1]
    assert amd[1].read_text() == f"built on {amd_cpu}"
    assert intel[1].read_text() == f"built on {intel_cpu}"
    assert sum(compiles) == 2  # the second AMD process found its library in the cache


def test_a_library_that_does_not_load_is_reported_and_not_used(empty_cache, fresh_kernels):
    empty_cache.mkdir()
    broken = empty_cache / f"fused-{build.cache_key()}.so"
    broken.write_text("not a shared library")
    assert not gradtx.fused_available()
    with pytest.raises(build.FusedKernelsUnavailable, match="could not be loaded.*delete the file"):
        build.register()


def test_without_kernels_fused_update_falls_back_with_one_warning(
    no_compiler, empty_cache, fresh_kernels
):
    opt = gradtx.adam(1e-2, weight_decay=1e-2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not gradtx.fused_available()  # asking does not warn
        assert not _fallback_warnings(caught)
        ours = _trajectory(opt, gradtx.fused_update, steps=5)  # unjitted: a trace per step
    (warning,) = _fallback_warnings(caught)
    assert "needs a C++ compiler" in str(warning.message)
    assert "install one (e.g. g++)" in str(warning.message)
    assert warning.filename == __file__  # it points at the call of fused_update
    chex.assert_trees_all_equal(ours, _trajectory(opt, _plain, steps=5))
    params = make_params()
    fused = jax.jit(gradtx.fused_update, static_argnums=0)
    # The plain path, even where an earlier test registered the kernels with XLA.
    assert "custom_call" not in fused.lower(opt, params, opt.init(params), params).as_text()


def test_without_kernels_fused_training_falls_back_with_one_warning(
    no_compiler, empty_cache, fresh_kernels
):
    params = {"w": jnp.full((8, 3), 0.1), "b": jnp.zeros(3)}
    batches = [_digits_like(i) for i in range(5)]
    batches.append(tuple(x[:16] for x in _digits_like(5)))  # another shape: a second trace
    learner = gradtx.adamw(1e-2, weight_decay=1e-2)
    plain = gradtx.make_train_step(_mse, learner, donate=False, fused=False)
    expected = (params, learner.init(params))
    for batch in batches:
        *expected, plain_metrics = plain(*expected, batch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fused = gradtx.make_train_step(_mse, learner, donate=False, fused=True)
        state = (params, learner.init(params))
        for batch in batches:
            *state, metrics = fused(*state, batch)
    assert len(_fallback_warnings(caught)) == 1
    assert_trees_close(state, expected)
    for name in ("loss", "grad_norm", "update_norm"):  # the same metrics as the fused path
        np.testing.assert_allclose(metrics[name], plain_metrics[name], rtol=1e-6)
    gradtx.fused._warn_fallback.cache_clear()  # a fresh process: the Trainer warns once too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = gradtx.Trainer(_mse, learner, params, progress=False, fused=True)
        trainer.fit(batches)
        trainer.fit(batches)
    assert len(_fallback_warnings(caught)) == 1
    trainer_expected = expected
    for batch in batches:
        *trainer_expected, _ = plain(*trainer_expected, batch)
    assert_trees_close(trainer.params, trainer_expected[0])


def test_fused_available_is_false_off_the_cpu(monkeypatch):
    assert gradtx.fused_available()  # this machine: CPU, and a compiler or a cached library
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert not gradtx.fused_available()


def test_params_are_updated_in_place_when_donated():
    opt = gradtx.sgd(0.1, 0.9)
    params = {"w": jnp.ones(1000)}
    state = opt.init(params)
    step = jax.jit(lambda p, s, g: gradtx.fused_update(opt, g, s, p), donate_argnums=(0, 1))
    pointer = params["w"].unsafe_buffer_pointer()
    new_params, _ = step(params, state, {"w": jnp.full(1000, 2.0)})
    assert new_params["w"].unsafe_buffer_pointer() == pointer
    np.testing.assert_allclose(new_params["w"], 1.0 - 0.1 * 2.0)


def test_zero_size_and_scalar_leaves():
    opt = gradtx.adam(1e-2)
    params = {"empty": jnp.zeros((0, 3)), "scalar": jnp.float32(1.0), "w": jnp.ones(4)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
    state = opt.init(params)
    fused = jax.jit(lambda g, s, p: gradtx.fused_update(opt, g, s, p))
    chex.assert_trees_all_close(fused(grads, state, params), _plain(opt, grads, state, params))


def _digits_like(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 8)).astype(np.float32)
    return x, (x @ rng.normal(size=(8, 3))).astype(np.float32)


def _mse(params, batch):
    x, y = batch
    return jnp.mean((jnp.tanh(x @ params["w"] + params["b"]) - y) ** 2)


@pytest.mark.parametrize("fused", [None, True])
def test_train_step_and_trainer_fuse_by_default_with_the_same_numbers_and_metrics(fused):
    params = {"w": jnp.full((8, 3), 0.1), "b": jnp.zeros(3)}
    batches = [_digits_like(i) for i in range(5)]
    learner = gradtx.adamw(1e-2, weight_decay=1e-2)
    plain = gradtx.make_train_step(_mse, learner, donate=False, fused=False)
    step = gradtx.make_train_step(_mse, learner, donate=False, fused=fused)
    lowered = step.lower(params, learner.init(params), batches[0]).as_text()
    assert "gradtx_adam" in lowered
    assert "gradtx_adam" not in plain.lower(params, learner.init(params), batches[0]).as_text()
    a = b = (params, learner.init(params))
    for batch in batches:
        *a, plain_metrics = plain(*a, batch)
        *b, fused_metrics = step(*b, batch)
        assert set(plain_metrics) == set(fused_metrics)
        for name in plain_metrics:
            np.testing.assert_allclose(fused_metrics[name], plain_metrics[name], rtol=1e-6)
    assert_trees_close(a, b)
    trainer = gradtx.Trainer(_mse, learner, params, progress=False, fused=fused)
    trainer.fit(batches)
    assert_trees_close(trainer.params, a[0])
    off = gradtx.Trainer(_mse, learner, params, progress=False, fused=False)
    off.fit(batches)
    assert_trees_close(off.params, a[0])
    assert set(trainer.history) == set(off.history)


def test_fused_train_step_refuses_a_mesh():
    mesh = jax.make_mesh((1,), ("data",))
    with pytest.raises(ValueError, match="fused=True runs a one-device CPU kernel; drop it"):
        gradtx.make_train_step(_mse, gradtx.adam(1e-2), mesh=mesh, fused=True)


def test_moments_of_another_dtype_take_the_plain_path():
    opt = gradtx.sgd(0.1, 0.9)
    params = {"w": jnp.ones(4)}
    state = opt.init({"w": jnp.ones(4, jnp.bfloat16)})  # bfloat16 trace
    grads = {"w": jnp.full(4, 0.5)}
    chex.assert_trees_all_equal(
        gradtx.fused_update(opt, grads, state, params), _plain(opt, grads, state, params)
    )


@pytest.mark.slow  # a rebuild of the whole library
def test_an_unwritable_cache_falls_back_to_the_temporary_directory(
    monkeypatch, tmp_path, fresh_kernels
):
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # no directory can be made below a file, not even by root
    monkeypatch.setenv("GRADTX_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(build.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    path = build.library_path()
    assert path.parent == tmp_path / "tmp" / f"gradtx-{os.getuid()}" and path.exists()
    build.forget()
    assert build.library_path() == path  # found there again, without building


def test_a_temporary_directory_others_can_write_to_is_not_loaded_from(
    monkeypatch, tmp_path, fresh_kernels
):
    monkeypatch.setenv("GRADTX_CACHE", str(tmp_path / "a-file" / "cache"))
    (tmp_path / "a-file").write_text("")  # an unwritable cache
    monkeypatch.setattr(build.tempfile, "gettempdir", lambda: str(tmp_path))
    planted = tmp_path / f"gradtx-{os.getuid()}" / f"fused-{build.cache_key()}.so"
    planted.parent.mkdir()
    planted.parent.chmod(0o777)  # as if another user of a shared /tmp had made it
    planted.write_text("someone else's library")
    monkeypatch.setattr(build.shutil, "which", lambda name: None)
    with pytest.raises(build.FusedKernelsUnavailable, match="needs a C\\+\\+ compiler"):
        build.library_path()


def test_an_optax_learner_gets_no_extras():
    params = {"w": jnp.arange(4.0)}
    opt = optax.scale_by_adam()  # its update takes no extras
    new, _ = gradtx.fused_update(opt, params, opt.init(params), params, value=1.0, batch_size=2)
    expected, _ = opt.update(params, opt.init(params), params)
    np.testing.assert_array_equal(new["w"], params["w"] + expected["w"])


@pytest.mark.parametrize(
    "make",
    [
        lambda: gradtx.sign_sgd(1e-2),
        lambda: gradtx.signum(1e-2),
        lambda: gradtx.lion(1e-2),
        lambda: gradtx.yogi(1e-2),
        lambda: gradtx.adamax(1e-2),
        lambda: gradtx.amsgrad(1e-2),
        lambda: gradtx.rmsprop(1e-2, centered=True),
    ],
    ids=["sign_sgd", "signum", "lion", "yogi", "adamax", "amsgrad", "rmsprop_centered"],
)
def test_signs_and_maxima_of_zeros_nans_and_infinities_are_the_plain_paths(make):
    """The kernels' sign and maximum select between values computed both ways (no branch
    on random signs); zeros, NaNs and infinities come out as jnp.sign and jnp.maximum."""
    opt = make()
    specials = [0.0, -0.0, np.nan, np.inf, -np.inf, 1e-30, -1e-30, 3.0, -2.0]
    g = jnp.asarray(np.tile(specials, 8), jnp.float32)
    params = {"w": jnp.linspace(-1.0, 1.0, g.size)}
    fused = jax.jit(gradtx.fused_update, static_argnums=0)
    plain = jax.jit(_plain, static_argnums=0)
    state = opt.init(params)
    ours, theirs = (params, state), (params, state)
    for t in range(3):
        grads = {"w": g * (t + 1)}
        ours, theirs = fused(opt, grads, *ours[::-1]), plain(opt, grads, *theirs[::-1])
    assert _kernel_calls(opt, params)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
