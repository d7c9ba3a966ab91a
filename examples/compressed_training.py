"""Compressed gradient exchange on the digits MLP, data parallel over 8 host devices.

    python examples/compressed_training.py [--out outputs/compressed_training.png] [--epochs 10]

The 64-128-10 ReLU MLP of ``examples/digits_data.py`` trains with SGD
(momentum 0.9, the rate from 0.05 down a cosine to 0 over the run: the setting of
MXNet's and CNTK's data-parallel recipes) for
``epochs`` shuffled epochs of 21 minibatches of 64, split over a ``data`` axis of
8 devices (8 samples each), once with the float32 mean of the gradients and once
per compression scheme (``gradtx.Trainer(..., compression=...)``). Every run
starts from the same initialisation and sees the same minibatches. 2bit uses
MXNet's threshold scheme at MXNet's default ``threshold`` of 0.5 for a gradient
summed over each device's 8 samples, which is 0.5 / 8 = 0.0625 for the gradient
of the mean loss that gradtx differentiates (``--threshold``); 1bit is 1-bit
SGD's sign with a per-tensor scale. PowerSGD (torch's DDP hook) sends each
weight matrix as two rank-2 factors after one epoch of plain means. All three
keep error-feedback residuals in the optimizer state, so what one step's
compression leaves out is sent later.

The script prints each run's final training loss and test accuracy (450 held-out
images), and draws the training loss of every run per step (a 21-step moving
average) beside the accuracy after each epoch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

if "jax" not in sys.modules:  # 8 host devices, as on a host with 8 accelerators
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=8".strip()

import jax  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from digits_data import accuracy, epoch_batches, init_mlp, loss_fn, split  # noqa: E402

import gradtx  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "outputs" / "compressed_training.png"
DEVICES = 8


def schemes(threshold: float) -> dict[str, object]:
    """The runs: a label and its ``compression=`` (None: the float32 mean)."""
    return {
        "float32 (uncompressed)": None,
        "bf16": "bf16",
        "int8": "int8",
        f"2bit, threshold {threshold:g}": {"type": "2bit", "threshold": threshold},
        "1bit": "1bit",
        # torch's advice: plain means for about the first 10% of the run (one epoch here)
        "PowerSGD, rank 2": {"type": "powersgd", "rank": 2, "start_step": 21},
    }


def train(compression: object, epochs: int, learning_rate: float) -> dict[str, object]:
    mesh = jax.make_mesh((DEVICES,), ("data",))
    x_train, x_test, y_train, y_test = split()
    params = init_mlp(jax.random.key(0), sizes=(64, 128, 10))
    steps = epochs * len(epoch_batches(x_train, y_train, 64))
    trainer = gradtx.Trainer(
        loss_fn,
        gradtx.sgd(gradtx.cosine_decay_schedule(learning_rate, steps), momentum=0.9),
        params,
        progress=False,
        mesh=mesh,
        compression=compression,
    )
    accuracies = []
    for epoch in range(epochs):
        trainer.fit(epoch_batches(x_train, y_train, 64, seed=epoch))
        accuracies.append(accuracy(trainer.params, x_test, y_test))
    return {
        "loss": trainer.history["loss"],
        "train_loss": float(loss_fn(trainer.params, (x_train, y_train))),
        "accuracy": np.array(accuracies),
    }


def draw(results: dict[str, dict], out: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    window = 21
    for label, run in results.items():
        loss = np.asarray(run["loss"])
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        # bf16 and int8 lie on the float32 curve: dashed over it, so all three show.
        style = {"color": "black", "lw": 3.0, "alpha": 0.45} if "float32" in label else {}
        if label in ("bf16", "int8"):
            style = {"ls": (0, (4, 3)) if label == "bf16" else (2, (4, 3)), "lw": 1.4}
        steps = np.arange(window, len(loss) + 1)
        left.plot(steps, smooth, label=label, **style)
        epochs = np.arange(1, len(run["accuracy"]) + 1)
        right.plot(epochs, 100 * run["accuracy"], marker="o", ms=3, label=label, **style)
    left.set(
        yscale="log",
        xlabel="step",
        ylabel=f"training loss ({window}-step moving average)",
        title="Digits MLP, SGD momentum, 8 devices: training loss",
    )
    right.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy after each epoch")
    lowest = min(100 * run["accuracy"].min() for run in results.values())
    right.set_ylim(max(5 * (lowest // 5) - 5, 0), 100)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    right.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"picture written to {out}")


def main(
    out: Path = OUT, epochs: int = 10, threshold: float = 0.0625, learning_rate: float = 0.05
) -> dict[str, dict]:
    if jax.device_count() < DEVICES:
        raise SystemExit(
            f"this example needs {DEVICES} devices and JAX sees {jax.device_count()}: run it as "
            f"a script, or set XLA_FLAGS=--xla_force_host_platform_device_count={DEVICES} "
            f"before JAX starts"
        )
    results = {}
    for label, compression in schemes(threshold).items():
        results[label] = run = train(compression, epochs, learning_rate)
        print(
            f"{label:<24} final training loss {run['train_loss']:.4f}  "
            f"test accuracy {100 * run['accuracy'][-1]:.1f}% "
            f"(last 3 epochs: {', '.join(f'{100 * a:.1f}' for a in run['accuracy'][-3:])})",
            flush=True,
        )
    draw(results, out)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=0.0625, help="2bit's threshold")
    parser.add_argument("--learning-rate", type=float, default=0.05)
    args = parser.parse_args()
    main(args.out, args.epochs, args.threshold, args.learning_rate)
