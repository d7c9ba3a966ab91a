"""Building blocks against optax's blocks and against closed forms or NumPy loops."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl.testing import parameterized
from conftest import assert_trees_close, make_params, run

import gradtx

BLOCKS = [
    ("adam", gradtx.scale_by_adam(), optax.scale_by_adam()),
    ("nadam", gradtx.scale_by_adam(nesterov=True), optax.scale_by_adam(nesterov=True)),
    ("amsgrad", gradtx.scale_by_amsgrad(0.8, 0.9), optax.scale_by_amsgrad(0.8, 0.9)),
    ("adamax", gradtx.scale_by_adamax(), optax.scale_by_adamax()),
    ("adadelta", gradtx.scale_by_adadelta(0.8), optax.scale_by_adadelta(0.8)),
    ("lion", gradtx.scale_by_lion(), optax.scale_by_lion()),
    ("rms", gradtx.scale_by_rms(), optax.scale_by_rms()),
    (
        "rms_outside",
        gradtx.scale_by_rms(0.5, 1e-3, 0.1, False),
        optax.scale_by_rms(0.5, 1e-3, 0.1, False),
    ),
    ("stddev", gradtx.scale_by_stddev(), optax.scale_by_stddev()),
    ("rss", gradtx.scale_by_rss(), optax.scale_by_rss()),
    ("trace", gradtx.trace(0.9), optax.trace(0.9)),
    ("trace_nesterov", gradtx.trace(0.9, nesterov=True), optax.trace(0.9, nesterov=True)),
    ("ema", gradtx.ema(0.7), optax.ema(0.7)),
    ("ema_no_debias", gradtx.ema(0.7, debias=False), optax.ema(0.7, debias=False)),
    ("clip", gradtx.clip(0.3), optax.clip(0.3)),
    ("clip_by_global_norm", gradtx.clip_by_global_norm(1.0), optax.clip_by_global_norm(1.0)),
    ("decayed_weights", gradtx.add_decayed_weights(0.1), optax.add_decayed_weights(0.1)),
    ("scale", gradtx.scale(-0.3), optax.scale(-0.3)),
]


class BlocksMatchOptax(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*BLOCKS)
    def test_block(self, ours, theirs):
        # The block's output is used directly as the step, scaled down to stay stable.
        ours = gradtx.chain(ours, gradtx.scale(-0.01))
        theirs = optax.chain(theirs, optax.scale(-0.01))
        params = make_params()
        assert_trees_close(
            run(ours, params, update=self.variant(ours.update)),
            run(theirs, params, update=self.variant(theirs.update)),
        )


def _stream(n=8, shape=(5,), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(np.float32) for _ in range(n)]


def _apply(opt, grads, variant, params=None, **extra):
    params = params if params is not None else jnp.zeros_like(grads[0])
    state = opt.init(params)
    update = variant(opt.update)
    out = []
    for g in grads:
        u, state = update(jnp.asarray(g), state, params, **extra)
        out.append(np.asarray(u))
    return out, state


class ClosedFormTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.product(nesterov=[False, True], unit_gain=[False, True])
    def test_trace_numpy(self, nesterov, unit_gain):
        grads = _stream()
        out, _ = _apply(gradtx.trace(0.8, nesterov, unit_gain=unit_gain), grads, self.variant)
        k = 0.2 if unit_gain else 1.0
        m = np.zeros(5)
        for g, u in zip(grads, out, strict=True):
            m = 0.8 * m + k * g
            np.testing.assert_allclose(u, 0.8 * m + k * g if nesterov else m, rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_trace_decay_schedule(self):
        grads = _stream()
        out, _ = _apply(gradtx.trace(lambda c: 0.1 * c.astype(jnp.float32)), grads, self.variant)
        m = np.zeros(5)
        for t, (g, u) in enumerate(zip(grads, out, strict=True)):
            m = 0.1 * t * m + g
            np.testing.assert_allclose(u, m, rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_scale_by_schedule_counts_from_zero(self):
        grads = _stream(4)
        out, state = _apply(gradtx.scale_by_schedule(lambda c: c + 1.0), grads, self.variant)
        for t, (g, u) in enumerate(zip(grads, out, strict=True)):
            np.testing.assert_allclose(u, (t + 1.0) * g, rtol=1e-6)
        assert int(state.count) == 4 and state.count.dtype == jnp.int32

    @chex.variants(with_jit=True, without_jit=True)
    def test_learning_rate_schedule_flips_sign(self):
        grads = _stream(3)
        out, _ = _apply(gradtx.scale_by_learning_rate(lambda c: 0.5**c), grads, self.variant)
        for t, (g, u) in enumerate(zip(grads, out, strict=True)):
            np.testing.assert_allclose(u, -(0.5**t) * g, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(True, False)
    def test_rms_numpy(self, eps_in_sqrt):
        grads = _stream()
        out, _ = _apply(gradtx.scale_by_rms(0.9, 1e-2, 0.0, eps_in_sqrt), grads, self.variant)
        nu = np.zeros(5)
        for g, u in zip(grads, out, strict=True):
            nu = 0.9 * nu + 0.1 * g * g
            d = np.sqrt(nu + 1e-2) if eps_in_sqrt else np.sqrt(nu) + 1e-2
            np.testing.assert_allclose(u, g / d, rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_rss_zero_gradients_give_zero_not_nan(self):
        grads = [np.zeros(5, np.float32)] * 3
        for eps_in_sqrt in (True, False):
            opt = gradtx.scale_by_rss(
                initial_accumulator_value=0.0, eps=0.0, eps_in_sqrt=eps_in_sqrt
            )
            out, _ = _apply(opt, grads, self.variant)
            np.testing.assert_array_equal(out[-1], np.zeros(5))

    @chex.variants(with_jit=True, without_jit=True)
    def test_clip_by_global_norm_closed_form(self):
        tree = {"a": jnp.array([3.0, 0.0]), "b": [jnp.array([[4.0]])]}  # norm 5
        opt = gradtx.clip_by_global_norm(2.0)
        out, _ = self.variant(opt.update)(tree, opt.init(tree))
        chex.assert_trees_all_close(out, jax.tree.map(lambda x: x * 2.0 / 5.0, tree))
        opt = gradtx.clip_by_global_norm(10.0)
        out, _ = self.variant(opt.update)(tree, opt.init(tree))
        chex.assert_trees_all_close(out, tree)

    @chex.variants(with_jit=True, without_jit=True)
    def test_weight_decay_mask_and_schedule(self):
        params = {"w": jnp.array([1.0, 2.0]), "b": jnp.array([3.0])}
        grads = jax.tree.map(jnp.zeros_like, params)
        for mask in ({"w": True, "b": False}, lambda p: {"w": True, "b": False}):
            opt = gradtx.add_decayed_weights(lambda c: 0.1 * (c + 1), mask)
            state = opt.init(params)
            update = self.variant(opt.update)
            u, state = update(grads, state, params)
            np.testing.assert_allclose(u["w"], [0.1, 0.2], rtol=1e-6)
            np.testing.assert_array_equal(u["b"], [0.0])
            u, state = update(grads, state, params)
            np.testing.assert_allclose(u["w"], [0.2, 0.4], rtol=1e-6)
