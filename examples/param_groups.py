"""Parameter groups on scikit-learn's digits: the torch lab's two-group SGD, CNTK's learners.

1. torch lab: SGD with momentum 0.9; the first layer's group has weight decay
   5e-4, the second's 1e-3; the second group's learning rate is cut by 10 at
   epochs 6 and 11 with ``set_hyperparams`` (no recompilation).
2. CNTK: two learners on two disjoint subsets (momentum SGD on the first
   layer, Adam on the second) and the biases frozen; the loss is summed over
   the minibatch, as CNTK's learners expect.

Each epoch logs the current learning rates read with ``get_hyperparams``.

    python examples/param_groups.py [--epochs 15]
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import gradtx


def data(seed: int = 0):
    x, y = load_digits(return_X_y=True)
    return train_test_split(
        (x / 16.0).astype(np.float32), y, test_size=0.25, random_state=seed, stratify=y
    )


def init_mlp(seed: int = 0) -> dict:
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "layer1": {"w": jax.random.normal(k1, (64, 64)) * jnp.sqrt(2 / 64), "b": jnp.zeros(64)},
        "layer2": {"w": jax.random.normal(k2, (64, 10)) * jnp.sqrt(2 / 64), "b": jnp.zeros(10)},
    }


def loss_fn(params, x, y):
    h = jax.nn.relu(x @ params["layer1"]["w"] + params["layer1"]["b"])
    logits = h @ params["layer2"]["w"] + params["layer2"]["b"]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], axis=1))


def accuracy(params, x, y) -> float:
    h = jax.nn.relu(x @ params["layer1"]["w"] + params["layer1"]["b"])
    return float(jnp.mean(jnp.argmax(h @ params["layer2"]["w"] + params["layer2"]["b"], 1) == y))


def train(learner, epochs: int, on_epoch=None, batch_size: int = 64, seed: int = 0, summed=False):
    """Train; ``summed`` hands the learner the gradient of the summed loss (CNTK's convention)."""
    x_train, x_test, y_train, y_test = data(seed)
    params = init_mlp(seed)
    state = learner.init(params)

    @jax.jit
    def step(params, state, xb, yb):
        scale = xb.shape[0] if summed else 1
        loss, grads = jax.value_and_grad(lambda p: scale * loss_fn(p, xb, yb))(params)
        loss = loss / scale
        updates, state = learner.update(grads, state, params, batch_size=xb.shape[0])
        return gradtx.apply_updates(params, updates), state, loss

    rng = np.random.default_rng(seed)
    for epoch in range(1, epochs + 1):
        if on_epoch is not None:
            state = on_epoch(epoch, state)
        order = rng.permutation(len(x_train))
        for i in range(len(x_train) // batch_size):
            idx = order[i * batch_size : (i + 1) * batch_size]
            params, state, loss = step(params, state, x_train[idx], y_train[idx])
        rates = {
            k: round(float(v), 6)
            for k, v in gradtx.get_hyperparams(state).items()
            if k.endswith(("learning_rate", "lr"))
        }
        print(f"  epoch {epoch:2d}  loss {float(loss):.4f}  learning rates {rates}")
    return params, state, accuracy(params, x_test, y_test), step


def torch_lab(epochs: int):
    print("torch lab: SGD(momentum=0.9), two groups, group 2's rate x0.1 at epochs 6 and 11")
    group = lambda wd: gradtx.inject_hyperparams(gradtx.sgd)(  # noqa: E731
        learning_rate=0.05, momentum=0.9, weight_decay=wd
    )
    labels = gradtx.groups_by_path({"layer1/**": "group1"}, init_mlp(), default="group2")
    learner = gradtx.partition({"group1": group(5e-4), "group2": group(1e-3)}, labels)

    def on_epoch(epoch, state):
        if epoch in (6, 11):
            rate = gradtx.get_hyperparams(state)["group2/learning_rate"]
            state = gradtx.set_hyperparams(state, "group2/learning_rate", rate * 0.1)
        return state

    params, state, acc, step = train(learner, epochs, on_epoch)
    print(f"  test accuracy {acc:.4f}; the train step compiled {step._cache_size()} time(s)")
    return params, state, acc


def cntk_learners(epochs: int):
    print("CNTK: momentum SGD on layer 1, Adam on layer 2, biases frozen")
    lr = gradtx.cntk.learning_rate_schedule(0.05, gradtx.cntk.UnitType.minibatch)
    learner = gradtx.partition(
        {
            "sgd": gradtx.cntk.momentum_sgd(
                lr, gradtx.cntk.momentum_as_time_constant_schedule(600)
            ),
            # A bare number is a rate per minibatch: 0.1 / 64 per sample here.
            "adam": gradtx.inject_hyperparams(gradtx.cntk.adam)(lr=0.1, momentum=0.9),
            "frozen": gradtx.set_to_zero(),
        },
        gradtx.groups_by_path({"**/b": "frozen", "layer1/**": "sgd"}, init_mlp(), default="adam"),
    )
    params, state, acc, _ = train(learner, epochs, summed=True)
    print(
        f"  test accuracy {acc:.4f}; biases still zero: "
        f"{bool(jnp.all(params['layer1']['b'] == 0) & jnp.all(params['layer2']['b'] == 0))}"
    )
    return params, state, acc


def main(epochs: int = 15) -> tuple[float, float]:
    _, _, lab = torch_lab(epochs)
    _, _, cntk = cntk_learners(epochs)
    return lab, cntk


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    main(parser.parse_args().epochs)
