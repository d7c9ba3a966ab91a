"""A hyperparameter sweep in one call: 32 learning rates x 2 weight decays of AdamW on digits.

Each of the 64 configurations trains the digits MLP for 300 steps with a
warm-up-cosine schedule, on the same minibatches from the same initialisation.
``gradtx.sweep`` runs them as one vmapped program (one compilation), then the
script prints the test loss and accuracy of every configuration, names the
best one, and saves a heat map.

    python examples/sweep.py [--out docs/assets/sweep.png] [--steps 300]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from digits_data import init_mlp, loss_fn, predict, split  # noqa: E402

import gradtx  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "assets" / "sweep.png"
LEARNING_RATES = np.geomspace(1e-4, 3e-1, 32)
WEIGHT_DECAYS = [0.0, 1e-1]


# --8<-- [start:train_fn]
def make_train_fn(steps: int, batch_size: int = 64):
    x_train, x_test, y_train, y_test = split()
    idx = np.random.default_rng(0).integers(0, len(x_train), size=(steps, batch_size))
    xs, ys = jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx])
    x_test, y_test = jnp.asarray(x_test), jnp.asarray(y_test)
    warmup = steps // 10

    def train_fn(learning_rate, weight_decay):
        schedule = gradtx.schedules.warmup(
            gradtx.schedules.cosine_decay(learning_rate, steps - warmup), warmup
        )
        opt = gradtx.adamw(schedule, weight_decay=weight_decay)
        params = init_mlp(jax.random.key(0))

        def step(carry, batch):
            params, state = carry
            grads = jax.grad(loss_fn)(params, batch)
            updates, state = opt.update(grads, state, params)
            return (gradtx.apply_updates(params, updates), state), None

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), (xs, ys))
        accuracy = jnp.mean(jnp.argmax(predict(params, x_test), axis=1) == y_test)
        return {"loss": loss_fn(params, (x_test, y_test)), "accuracy": accuracy}

    return train_fn


# --8<-- [end:train_fn]


def heat_map(result: gradtx.SweepResult, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 2.6))
    image = ax.imshow(result.metrics["accuracy"].T, aspect="auto", cmap="viridis", vmin=0.5)
    ticks = np.arange(0, len(LEARNING_RATES), 4)
    ax.set_xticks(ticks, [f"{LEARNING_RATES[i]:.1e}" for i in ticks])
    ax.set_yticks(range(len(WEIGHT_DECAYS)), [f"wd {w:g}" for w in WEIGHT_DECAYS])
    ax.set_xlabel("peak learning rate")
    i, j = result.best_index
    ax.plot(i, j, "r*", ms=12)
    fig.colorbar(image, ax=ax, label="test accuracy")
    ax.set_title("AdamW, warm-up-cosine, 300 steps: 64 runs in one sweep (star: lowest test loss)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"heat map written to {out}")


def main(out: Path = OUT, steps: int = 300) -> gradtx.SweepResult:
    train_fn = make_train_fn(steps)
    start = time.perf_counter()
    result = gradtx.sweep(train_fn, learning_rate=LEARNING_RATES, weight_decay=WEIGHT_DECAYS)
    seconds = time.perf_counter() - start
    print(
        f"{result.objective.size} runs of {steps} steps in one sweep call: {seconds:.1f} s "
        f"(compilation included)"
    )
    loss, acc = result.metrics["loss"], result.metrics["accuracy"]
    header = "".join(f"{f'loss wd={w:g}':>15}{f'acc wd={w:g}':>15}" for w in WEIGHT_DECAYS)
    print(f"{'learning rate':>13}{header}")
    for i, lr in enumerate(LEARNING_RATES):
        cells = "".join(f"{loss[i, j]:>15.4f}{acc[i, j]:>15.4f}" for j in range(len(WEIGHT_DECAYS)))
        mark = "  <- best" if result.best_index[0] == i else ""
        print(f"{lr:>13.2e}{cells}{mark}")
    best = result.best
    i, j = result.best_index
    print(
        f"best (lowest test loss): learning_rate {best['learning_rate']:.3g}, weight_decay "
        f"{best['weight_decay']:g}: test loss {loss[i, j]:.4f}, accuracy {acc[i, j]:.4f}"
    )
    heat_map(result, out)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    main(args.out, args.steps)
