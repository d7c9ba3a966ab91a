"""An equinox MLP on scikit-learn's digits, trained by ``gradtx.Trainer`` with no glue.

The model is the params: ``eqx.nn.MLP`` holds its activation functions and
sizes beside its weights, and the Trainer trains the array leaves and keeps
the rest as they are (the optimizer sees ``eqx.filter(model, eqx.is_array)``,
as in an equinox loop). The weights get AdamW with weight decay, the biases
plain Adam: one ``gradtx.partition`` whose labels come from the model's paths.

    python examples/equinox_digits.py [--epochs 20]   # equinox comes with gradtx[examples]
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
from digits_data import epoch_batches, split

import gradtx


def loss_fn(model: eqx.nn.MLP, batch: tuple) -> jax.Array:
    """Mean cross-entropy of a ``(x, y)`` minibatch."""
    x, y = batch
    logp = jax.nn.log_softmax(jax.vmap(model)(x))
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def accuracy(model: eqx.nn.MLP, x, y) -> float:
    return float(jnp.mean(jnp.argmax(jax.vmap(model)(x), axis=1) == y))


def main(epochs: int = 20, seed: int = 0) -> float:
    """Train for ``epochs`` epochs, printing each one; returns the final test accuracy."""
    x_train, x_test, y_train, y_test = split(seed)
    model = eqx.nn.MLP(64, 10, width_size=64, depth=1, key=jax.random.key(seed))
    labels = gradtx.groups_by_path({"**/weight": "weights"}, model, default="biases")
    learner = gradtx.partition(
        {"weights": gradtx.adamw(3e-3, weight_decay=1e-2), "biases": gradtx.adam(3e-3)}, labels
    )
    trainer = gradtx.Trainer(loss_fn, learner, model, progress=False)
    print(f"{'epoch':>5}  {'loss':>8}  {'test acc':>8}")
    for epoch in range(epochs):
        summary = trainer.fit(
            epoch_batches(x_train, y_train, seed=epoch),
            eval_fn=lambda m: {"test_accuracy": accuracy(m, x_test, y_test)},
        )[0]
        print(f"{epoch + 1:>5}  {summary['loss']:>8.4f}  {summary['test_accuracy']:>8.4f}")
    assert trainer.params.activation is model.activation  # the static part is the model's own
    final = trainer.epochs[-1]["test_accuracy"]
    print(f"test accuracy {final:.4f}")
    return final


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    main(parser.parse_args().epochs)
