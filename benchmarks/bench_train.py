"""Whole training steps (loss, gradient, update) on two models, per-leaf and packed.

A faster update only matters inside a training step, where it shares the
machine with the backward pass, and packing the params (``gradtx.pack``)
changes how the model reads them: every leaf becomes a slice of one buffer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradtx
from benchmarks.timing import JaxStep, interleaved


def wide(blocks: int, width: int) -> tuple[dict, Any]:
    """Residual blocks of a square and a thin matrix and a bias: 3 leaves a block, dot-heavy."""
    rng = np.random.default_rng(0)
    params = {}
    for i in range(blocks):
        params[f"block{i:03d}/w"] = rng.normal(size=(width, width)) / width
        params[f"block{i:03d}/proj"] = rng.normal(size=(width, width * 7 // 32)) / width
        params[f"block{i:03d}/b"] = np.zeros(width)

    def loss(params, x):
        for i in range(blocks):
            w, proj, b = (params[f"block{i:03d}/{k}"] for k in ("w", "proj", "b"))
            x = x + jnp.tanh(x @ w + b) + 0.1 * (x @ proj) @ proj.T
        return jnp.mean(x**2)

    return _float32(params), loss


def narrow(layers: int, width: int) -> tuple[dict, Any]:
    """A deep, narrow tanh MLP: many small leaves, little arithmetic per leaf."""
    rng = np.random.default_rng(0)
    params = {
        f"layer{i:03d}": {"w": rng.normal(size=(width, width)) / width**0.5, "b": np.zeros(width)}
        for i in range(layers)
    }

    def loss(params, x):
        for i in range(layers):
            x = jnp.tanh(x @ params[f"layer{i:03d}"]["w"] + params[f"layer{i:03d}"]["b"])
        return jnp.mean(x**2)

    return _float32(params), loss


def _float32(tree: Any) -> Any:
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def train_table(models: dict[str, tuple[dict, Any, int]], rounds: int, steps: int) -> None:
    """Adam training steps: optax, and gradtx plain, fused, packed and packed + fused."""
    header = f"{'model':<28}{'path':<12}{'ms':>9}{'/optax':>9}{'build s':>9}"
    print(header)
    for name, (params, loss, width) in models.items():
        batch = jnp.asarray(np.random.default_rng(1).normal(size=(16, width)), jnp.float32)
        adam = gradtx.adam(1e-3)
        packed = gradtx.pack(params)

        def packed_loss(p, batch, loss=loss):
            return loss(p.unpack(), batch)

        runners = {
            "optax": JaxStep(optax.adam(1e-3), optax.apply_updates, params, batch, loss=loss),
            "plain": JaxStep(adam, gradtx.apply_updates, params, batch, loss=loss),
            "fused": JaxStep(adam, gradtx.apply_updates, params, batch, True, loss),
            "packed": JaxStep(adam, gradtx.apply_updates, packed, batch, loss=packed_loss),
            "pk fused": JaxStep(adam, gradtx.apply_updates, packed, batch, True, packed_loss),
        }
        t = interleaved(runners, rounds, steps)
        for path, runner in runners.items():
            print(
                f"{name:<28}{path:<12}{t.median(path) * 1e3:>9.2f}"
                f"{t.ratio(path, 'optax'):>9.3f}{runner.trace_s + runner.compile_s:>9.1f}",
                flush=True,
            )
