"""A hyperparameter sweep in one call: 32 learning rates x 2 weight decays of AdamW on digits.

Each of the 64 configurations trains the digits MLP for 300 steps with a
warm-up-cosine schedule, from 3 initialisations and minibatch orders (the
seeds), the same for every configuration. ``gradtx.sweep`` runs them as one
vmapped program (one compilation), ranks the configurations by their mean
validation loss (a fifth of the training set, held out), then the script prints
every configuration's validation loss and accuracy and the test accuracy, names
the best one, and saves a heat map. The test set never chooses anything.

    python examples/sweep.py [--out outputs/sweep.png] [--steps 300]
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
from sklearn.model_selection import train_test_split  # noqa: E402

import gradtx  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "outputs" / "sweep.png"
LEARNING_RATES = np.geomspace(1e-4, 3e-1, 32)
WEIGHT_DECAYS = [0.0, 1e-1]
SEEDS = 3
SHOWN_FROM = 0.9  # the heat map's colours start here; lower accuracies are grey


# --8<-- [start:train_fn]
def make_train_fn(steps: int, batch_size: int = 64, seeds: int = SEEDS):
    x_train, x_test, y_train, y_test = split()
    x_train, x_val, y_train, y_val = train_test_split(
        x_train, y_train, test_size=0.2, random_state=0, stratify=y_train
    )
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(x_train), size=(seeds, steps, batch_size))
    xs, ys = jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx])
    keys = jax.random.split(jax.random.key(0), seeds)
    warmup = steps // 10

    def train_fn(learning_rate, weight_decay):
        schedule = gradtx.schedules.warmup(
            gradtx.schedules.cosine_decay(learning_rate, steps - warmup), warmup
        )
        opt = gradtx.adamw(schedule, weight_decay=weight_decay)

        def one_seed(key, xs, ys):
            def step(carry, batch):
                params, state = carry
                grads = jax.grad(loss_fn)(params, batch)
                updates, state = opt.update(grads, state, params)
                return (gradtx.apply_updates(params, updates), state), None

            params = init_mlp(key)
            (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), (xs, ys))

            def accuracy(x, y):
                return jnp.mean(jnp.argmax(predict(params, x), axis=1) == y)

            return {
                "val_loss": loss_fn(params, (x_val, y_val)),
                "val_accuracy": accuracy(x_val, y_val),
                "test_accuracy": accuracy(x_test, y_test),
            }

        # The mean over seeds: one lucky initialisation does not pick the configuration.
        return jax.tree.map(jnp.mean, jax.vmap(one_seed)(keys, xs, ys))

    return train_fn


# --8<-- [end:train_fn]


def heat_map(result: gradtx.SweepResult, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 2.8))
    cmap = plt.get_cmap("viridis").with_extremes(under="lightgrey")
    accuracy = result.metrics["val_accuracy"].T
    image = ax.imshow(accuracy, aspect="auto", cmap=cmap, vmin=SHOWN_FROM, vmax=1.0)
    ticks = np.arange(0, len(LEARNING_RATES), 4)
    ax.set_xticks(ticks, [f"{LEARNING_RATES[i]:.1e}" for i in ticks])
    ax.set_yticks(range(len(WEIGHT_DECAYS)), [f"wd {w:g}" for w in WEIGHT_DECAYS])
    ax.set_xlabel("peak learning rate")
    i, j = result.best_index
    ax.plot(i, j, "r*", ms=12)
    test = float(result.metrics["test_accuracy"][i, j])
    ax.annotate(
        f"best on validation: test accuracy {test:.3f}",
        (i, j),
        xytext=(-8, 0),
        textcoords="offset points",
        ha="right",
        va="center",
        color="white",
        fontsize=9,
    )
    fig.colorbar(
        image, ax=ax, extend="min", label=f"validation accuracy\n(grey: below {SHOWN_FROM:g})"
    )
    ax.set_title(
        f"AdamW, warm-up-cosine, 300 steps, mean of {SEEDS} seeds: 64 configurations in one "
        "sweep\n(star: lowest validation loss)",
        fontsize=10,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"heat map written to {out}")


def main(out: Path = OUT, steps: int = 300) -> gradtx.SweepResult:
    train_fn = make_train_fn(steps)
    start = time.perf_counter()
    result = gradtx.sweep(
        train_fn, objective="val_loss", learning_rate=LEARNING_RATES, weight_decay=WEIGHT_DECAYS
    )
    seconds = time.perf_counter() - start
    print(
        f"{result.objective.size} configurations x {SEEDS} seeds of {steps} steps in one sweep "
        f"call: {seconds:.1f} s (compilation included)"
    )
    metrics = result.metrics
    columns = [("val loss", "val_loss"), ("val acc", "val_accuracy"), ("test acc", "test_accuracy")]
    header = "".join(f"{f'{name} wd={w:g}':>18}" for w in WEIGHT_DECAYS for name, _ in columns)
    print(f"{'learning rate':>13}{header}")
    for i, lr in enumerate(LEARNING_RATES):
        cells = "".join(
            f"{metrics[key][i, j]:>18.4f}" for j in range(len(WEIGHT_DECAYS)) for _, key in columns
        )
        mark = "  <- best" if result.best_index[0] == i else ""
        print(f"{lr:>13.2e}{cells}{mark}")
    best = result.best
    i, j = result.best_index
    print(
        f"best (lowest validation loss): learning_rate {best['learning_rate']:.3g}, "
        f"weight_decay {best['weight_decay']:g}: validation loss {metrics['val_loss'][i, j]:.4f}, "
        f"test accuracy {metrics['test_accuracy'][i, j]:.4f}"
    )
    heat_map(result, out)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    main(args.out, args.steps)
