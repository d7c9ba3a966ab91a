"""The small MLP and data the distributed cases and the multi-process worker share."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

STEPS = 20


def init_params():
    rng = np.random.default_rng(0)
    return {
        "w1": jnp.asarray(rng.normal(size=(16, 32)) / 4, jnp.float32),
        "b1": jnp.zeros(32, jnp.float32),
        "w2": jnp.asarray(rng.normal(size=(32, 8)) / 6, jnp.float32),
        "b2": jnp.zeros(8, jnp.float32),
    }


def batches(count=STEPS, size=32):
    rng = np.random.default_rng(1)
    target = rng.normal(size=(16, 8))
    out = []
    for _ in range(count):
        x = rng.normal(size=(size, 16)).astype(np.float32)
        out.append((x, np.tanh(x @ target).astype(np.float32)))
    return out


def loss_fn(params, batch):
    x, y = batch
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"] + params["b2"] - y) ** 2)
