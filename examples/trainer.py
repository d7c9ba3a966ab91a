"""MXNet's Trainer tutorial, in gradtx: step by hand, read and set the rate, then a step decay.

1. One step on one minibatch: the forward pass (the loss), the backward pass
   (``jax.grad``), then ``trainer.step(batch)``, which does both and the update
   in one jitted call. Read ``trainer.learning_rate`` and change it with
   ``trainer.set_learning_rate`` (no recompilation).
2. Ten epochs with a step-decay schedule (MXNet's ``FactorScheduler``: halve
   the rate every two epochs), printing the rate, the training loss and the
   test accuracy each epoch; then a checkpoint round trip and a plot of the
   per-step loss and rate.

    python examples/trainer.py [--out outputs/trainer.png]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from digits_data import accuracy, epoch_batches, init_mlp, loss_fn, split  # noqa: E402

import gradtx  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "outputs" / "trainer.png"


def one_step_by_hand(params, batch) -> None:
    print("== 1. one step by hand ==")
    learner = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)
    trainer = gradtx.Trainer(loss_fn, learner, params)
    loss, grads = jax.value_and_grad(loss_fn)(trainer.params, batch)  # forward and backward
    print(
        f"forward: loss {float(loss):.4f}; backward: gradient norm "
        f"{float(gradtx.tree.norm(grads)):.4f}"
    )
    metrics = trainer.step(batch)  # forward, backward and update, one jitted call
    print(
        f"trainer.step: loss {float(metrics['loss']):.4f} before the update, "
        f"{float(loss_fn(trainer.params, batch)):.4f} after"
    )
    print(f"trainer.learning_rate = {trainer.learning_rate:g}")
    trainer.set_learning_rate(0.05)
    print(f"after trainer.set_learning_rate(0.05): {trainer.learning_rate:g}")


def step_decay(params, data, epochs: int) -> gradtx.Trainer:
    print(f"== 2. {epochs} epochs, rate halved every 2 epochs ==")
    x_train, x_test, y_train, y_test = data
    steps_per_epoch = len(x_train) // 64
    schedule = gradtx.schedules.step_decay(0.1, 2 * steps_per_epoch, 0.5)
    learner = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=schedule, momentum=0.9)
    trainer = gradtx.Trainer(loss_fn, learner, params)
    print(f"{'epoch':>5}  {'rate':>8}  {'loss':>8}  {'test acc':>8}")
    for epoch in range(epochs):
        summary = trainer.fit(
            epoch_batches(x_train, y_train, seed=epoch),
            eval_fn=lambda p: {"test_accuracy": accuracy(p, x_test, y_test)},
        )[0]
        print(
            f"{epoch + 1:>5}  {summary['learning_rate']:>8.4f}  {summary['loss']:>8.4f}  "
            f"{summary['test_accuracy']:>8.4f}"
        )
    return trainer


def checkpoint_round_trip(trainer: gradtx.Trainer, params) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.npz"
        trainer.save(path)
        restored = gradtx.Trainer(loss_fn, trainer.optimizer, params, progress=False)
        restored.load(path)
    same = all(
        np.array_equal(a, b)
        for a, b in zip(
            jax.tree.leaves(trainer.params), jax.tree.leaves(restored.params), strict=True
        )
    )
    print(
        f"saved and loaded {path.name}: params identical {same}, "
        f"learning rate {restored.learning_rate:g}"
    )


def plot(trainer: gradtx.Trainer, out: Path) -> None:
    history = trainer.history
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 4.5), sharex=True)
    top.plot(history["loss"], lw=0.8)
    top.set_yscale("log")
    top.set_ylabel("training loss")
    bottom.plot(history["learning_rate"])
    bottom.set_ylabel("learning rate")
    bottom.set_xlabel("step")
    top.set_title("Trainer on digits: SGD with momentum, step decay")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"plot written to {out}")


def main(out: Path = OUT, epochs: int = 10) -> gradtx.Trainer:
    data = split()
    params = init_mlp(jax.random.key(0))
    one_step_by_hand(params, epoch_batches(data[0], data[2])[0])
    trainer = step_decay(params, data, epochs)
    checkpoint_round_trip(trainer, params)
    plot(trainer, out)
    return trainer


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    main(args.out, args.epochs)
