"""The learning-rate range test on the digits MLP with SGD, then training at the suggested rate.

As in MXNet's "Learning Rate Finder" tutorial: the rate grows geometrically
from 1e-6 to 10 over at most 100 minibatches, the loss is smoothed, and the
test stops once the smoothed loss doubles. Here the whole test is one compiled
``lax.scan``, and four more tests with other data orders run in one ``vmap`` to
show how much the suggestion moves.

    python examples/lr_finder.py [--out outputs/lr_finder.png] [--epochs 10]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from digits_data import accuracy, epoch_batches, init_mlp, loss_fn, split  # noqa: E402

import gradtx  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "outputs" / "lr_finder.png"


def sgd(learning_rate):
    return gradtx.sgd(learning_rate, momentum=0.9)


def main(out: Path = OUT, epochs: int = 10) -> tuple[float, float]:
    x_train, x_test, y_train, y_test = split()
    params = init_mlp(jax.random.key(0))
    batches = epoch_batches(x_train, y_train, seed=0)  # 16 minibatches of 64, cycled

    result = gradtx.find_learning_rate(loss_fn, params, sgd, batches)
    print(
        f"range test: {len(result.learning_rates)} steps, stopped at rate "
        f"{result.learning_rates[-1]:.3g}; suggested learning rate {result.suggestion:.3g}"
    )
    seeds = gradtx.find_learning_rate(loss_fn, params, sgd, batches, num_seeds=5)
    low, high = seeds.spread
    print(
        f"5 data orders: suggestions from {low:.3g} to {high:.3g} (median {seeds.suggestion:.3g})"
    )

    fig, ax = plt.subplots(figsize=(6, 4))
    result.plot(ax)
    ax.set_title("Range test: digits MLP, SGD with momentum 0.9")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"plot written to {out}")

    trainer = gradtx.Trainer(loss_fn, sgd(result.suggestion), params, progress=False)
    trainer.fit(lambda epoch: epoch_batches(x_train, y_train, seed=epoch), epochs=epochs)
    acc = accuracy(trainer.params, x_test, y_test)
    print(f"{epochs} epochs at the suggested rate: test accuracy {acc:.4f}")
    return result.suggestion, acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    main(args.out, args.epochs)
