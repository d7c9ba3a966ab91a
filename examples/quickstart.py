"""Quick start: a small MLP on scikit-learn's digits, trained with a chained gradtx learner.

The learner clips the global gradient norm, then runs AdamW whose learning rate
is a schedule (linear warm-up, then cosine decay). Run it with
``python examples/quickstart.py``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import gradtx


def init_mlp(key: jax.Array, sizes: list[int]) -> list[dict[str, jax.Array]]:
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        {"w": jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def predict(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def loss_fn(params, x, y):
    logits = predict(params, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def main(epochs: int = 20, batch_size: int = 64, seed: int = 0) -> float:
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        (x / 16.0).astype(np.float32), y, test_size=0.25, random_state=seed, stratify=y
    )
    steps_per_epoch = len(x_train) // batch_size
    total_steps = epochs * steps_per_epoch

    # Linear warm-up over 50 steps, then cosine decay to 0: a plain function of the step count.
    schedule = gradtx.schedules.warmup(gradtx.schedules.cosine_decay(3e-3, total_steps - 50), 50)
    learner = gradtx.chain(
        gradtx.clip_by_global_norm(1.0),
        gradtx.adamw(schedule, weight_decay=1e-4),
    )
    params = init_mlp(jax.random.key(seed), [64, 128, 10])
    state = learner.init(params)

    @jax.jit
    def train_step(params, state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, state = learner.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state, loss

    # Compile before the bar starts, so that its rate and time estimate are the steps' own.
    start = time.perf_counter()
    train_step = train_step.lower(
        params, state, x_train[:batch_size], y_train[:batch_size]
    ).compile()
    print(f"compiled the training step in {time.perf_counter() - start:.1f} s")

    rng = np.random.default_rng(seed)
    with tqdm(total=total_steps, desc="training", unit="step") as bar:
        for epoch in range(epochs):
            order = rng.permutation(len(x_train))
            for i in range(steps_per_epoch):
                idx = order[i * batch_size : (i + 1) * batch_size]
                params, state, loss = train_step(params, state, x_train[idx], y_train[idx])
                bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{float(loss):.4f}")

    accuracy = float(jnp.mean(jnp.argmax(predict(params, x_test), axis=1) == y_test))
    print(f"test accuracy: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.epochs, args.batch_size, args.seed)
