"""A small MLP on scikit-learn's digits, trained in one ``lax.scan`` (for learner-level tests)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import gradtx


@functools.cache
def data():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


def init(seed=0, sizes=(64, 64, 10)):
    keys = jax.random.split(jax.random.key(seed), len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def predict(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def loss(params, x, y):
    logp = jax.nn.log_softmax(predict(params, x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def train(opt, steps=1000, batch=64, seed=0):
    """Train with minibatches in a fixed order; return (params, per-step losses, test accuracy)."""
    (xtr, ytr), (xte, yte) = (tuple(map(jnp.asarray, pair)) for pair in data())
    idx = np.random.default_rng(seed).integers(0, len(xtr), size=(steps, batch))
    params = init(seed)

    def step(carry, i):
        params, state = carry
        value, grads = jax.value_and_grad(loss)(params, xtr[i], ytr[i])
        updates, state = opt.update(grads, state, params)
        return (gradtx.apply_updates(params, updates), state), value

    (params, _), losses = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), idx))(params)
    accuracy = jnp.mean(jnp.argmax(predict(params, xte), axis=1) == yte)
    return params, losses, float(accuracy)
