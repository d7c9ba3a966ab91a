"""scikit-learn's digits for the training-tool examples: the split, minibatches and a small MLP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


def split(seed: int = 0):
    """``x_train, x_test, y_train, y_test``: pixels scaled to [0, 1], a stratified 75/25 split."""
    x, y = load_digits(return_X_y=True)
    return train_test_split(
        (x / 16.0).astype(np.float32), y, test_size=0.25, random_state=seed, stratify=y
    )


def epoch_batches(x, y, batch_size: int = 64, seed: int = 0) -> list[tuple]:
    """One epoch of full minibatches in a shuffled order (the remainder is dropped)."""
    order = np.random.default_rng(seed).permutation(len(x))
    return [
        (x[order[i : i + batch_size]], y[order[i : i + batch_size]])
        for i in range(0, len(x) - batch_size + 1, batch_size)
    ]


def init_mlp(key: jax.Array, sizes=(64, 64, 10)) -> list[dict]:
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def predict(params: list[dict], x: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def loss_fn(params: list[dict], batch: tuple) -> jax.Array:
    """Mean cross-entropy of a ``(x, y)`` minibatch."""
    x, y = batch
    logp = jax.nn.log_softmax(predict(params, x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def accuracy(params: list[dict], x, y) -> float:
    return float(jnp.mean(jnp.argmax(predict(params, x), axis=1) == y))
