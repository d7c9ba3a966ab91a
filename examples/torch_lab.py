"""The PyTorch optimizer lab on scikit-learn's digits, in gradtx.torch_optim and in torch.

A 64-64-10 MLP trains for 15 epochs of minibatches (the same shuffled batches in every
run) with, in turn: SGD with momentum 0.9 and weight decay 5e-4; RMSprop; Adam; SGD with
``MultiStepLR([6, 11], 0.1)`` stepped once per epoch; SGD with a three-epoch linear
warm-up joined to a cosine (``SequentialLR``), per epoch; and SGD under ``CyclicLR``
(stepped per batch) with the momentum cycling against the rate. Each configuration is a
``gradtx.torch_optim`` call with torch's arguments next to the torch code it replaces.

Where torch is installed, every configuration also trains in torch from the same
initial weights on the same batches, and the table shows the largest difference
between the two runs' final params (relative to each weight's or bias's largest entry). The lab
runs in float64 (``--float32`` for float32), where the two agree to rounding.

    python examples/torch_lab.py [--epochs 15] [--float32]
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from digits_data import accuracy, epoch_batches, init_mlp, loss_fn, split

import gradtx
from gradtx import torch_optim

try:
    import torch
except ImportError:  # gradtx trains without it; only the side-by-side comparison needs torch
    torch = None

EPOCHS = 15


class Config(NamedTuple):
    """One run of the lab: the gradtx learner and the torch optimizer and scheduler it replaces.

    Both builders take the updates per epoch; ``torch_setup(params, steps_per_epoch)``
    returns ``(optimizer, scheduler or None)``, the scheduler stepped per ``scheduler_step``.
    """

    name: str
    learner: Callable[[int], gradtx.GradientTransformation]
    torch_setup: Callable[[list, int], tuple[Any, Any]]
    scheduler_step: str | None = None  # "epoch" or "batch"


# --8<-- [start:sgd]
def sgd(steps_per_epoch):
    return torch_optim.sgd(lr=0.1, momentum=0.9, weight_decay=5e-4)


def torch_sgd(params, steps_per_epoch):
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4), None


# --8<-- [end:sgd]


# --8<-- [start:adaptive]
def rmsprop(steps_per_epoch):
    return torch_optim.rmsprop(lr=1e-3, alpha=0.99, eps=1e-8)


def torch_rmsprop(params, steps_per_epoch):
    return torch.optim.RMSprop(params, lr=1e-3, alpha=0.99, eps=1e-8), None


def adam(steps_per_epoch):
    return torch_optim.adam(lr=1e-3, betas=(0.9, 0.999))


def torch_adam(params, steps_per_epoch):
    return torch.optim.Adam(params, lr=1e-3, betas=(0.9, 0.999)), None


# --8<-- [end:adaptive]


# --8<-- [start:multi_step]
def multi_step(steps_per_epoch):
    # scheduler.step() once per epoch: the rate changes when an epoch's last update is done.
    schedule = torch_optim.multi_step_lr(0.1, [6, 11], 0.1, steps_per_epoch=steps_per_epoch)
    return torch_optim.sgd(lr=schedule, momentum=0.9, weight_decay=5e-4)


def torch_multi_step(params, steps_per_epoch):
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, [6, 11], 0.1)


# --8<-- [end:multi_step]


# --8<-- [start:warmup]
def warmup_cosine(steps_per_epoch):
    k = steps_per_epoch
    warmup = torch_optim.linear_lr(0.1, start_factor=0.1, total_iters=3, steps_per_epoch=k)
    cosine = torch_optim.cosine_annealing_lr(0.1, T_max=EPOCHS - 3, steps_per_epoch=k)
    schedule = torch_optim.sequential_lr([warmup, cosine], milestones=[3], steps_per_epoch=k)
    return torch_optim.sgd(lr=schedule, momentum=0.9, weight_decay=5e-4)


def torch_warmup_cosine(params, steps_per_epoch):
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    lr_scheduler = torch.optim.lr_scheduler
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=3)
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS - 3)
    return optimizer, lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[3])


# --8<-- [end:warmup]


# --8<-- [start:cyclic]
def cyclic(steps_per_epoch):
    # Stepped per batch: up for two epochs, down for three, the height halved every cycle.
    up, down = 2 * steps_per_epoch, 3 * steps_per_epoch
    schedule = torch_optim.cyclic_lr(0.01, 0.1, up, down, mode="triangular2")
    # The momentum cycles against the rate, between base_momentum 0.8 and max_momentum 0.9.
    return torch_optim.sgd(lr=schedule, momentum=schedule.momentum, weight_decay=5e-4)


def torch_cyclic(params, steps_per_epoch):
    up, down = 2 * steps_per_epoch, 3 * steps_per_epoch
    optimizer = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CyclicLR(optimizer, 0.01, 0.1, up, down, "triangular2")
    return optimizer, scheduler


# --8<-- [end:cyclic]


CONFIGS = (
    Config("SGD momentum 0.9, weight decay 5e-4", sgd, torch_sgd),
    Config("RMSprop", rmsprop, torch_rmsprop),
    Config("Adam", adam, torch_adam),
    Config("SGD + MultiStepLR([6, 11], 0.1)", multi_step, torch_multi_step, "epoch"),
    Config("SGD + LinearLR warm-up, cosine", warmup_cosine, torch_warmup_cosine, "epoch"),
    Config("SGD + CyclicLR, cycled momentum", cyclic, torch_cyclic, "batch"),
)


# --8<-- [start:gradtx_loop]
def train_gradtx(config, params, data, epochs):
    x_train, y_train = data
    steps_per_epoch = len(epoch_batches(x_train, y_train))
    learner = config.learner(steps_per_epoch)

    @jax.jit
    def step(params, state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)  # zero_grad(); loss.backward()
        updates, state = learner.update(grads, state, params)  # optimizer.step() ...
        return gradtx.apply_updates(params, updates), state, loss  # ... changes the params

    state = learner.init(params)
    for epoch in range(epochs):
        for batch in epoch_batches(x_train, y_train, seed=epoch):
            params, state, loss = step(params, state, batch)
    return params  # the schedules follow the update count: nothing to step


# --8<-- [end:gradtx_loop]


# --8<-- [start:torch_loop]
def torch_loss(params, x, y):
    for layer in params[:-1]:
        x = torch.relu(x @ layer["w"] + layer["b"])
    return torch.nn.functional.cross_entropy(x @ params[-1]["w"] + params[-1]["b"], y)


def train_torch(config, params, data, epochs):
    x_train, y_train = data
    steps_per_epoch = len(epoch_batches(x_train, y_train))
    params = [{k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in layer.items()}
              for layer in params]  # fmt: skip
    optimizer, scheduler = config.torch_setup(
        [p for layer in params for p in layer.values()], steps_per_epoch
    )
    for epoch in range(epochs):
        for x, y in epoch_batches(x_train, y_train, seed=epoch):
            optimizer.zero_grad()
            torch_loss(params, torch.from_numpy(x), torch.from_numpy(y)).backward()
            optimizer.step()
            if config.scheduler_step == "batch":
                scheduler.step()
        if config.scheduler_step == "epoch":
            scheduler.step()
    return [{k: v.detach().numpy() for k, v in layer.items()} for layer in params]


# --8<-- [end:torch_loop]


@contextlib.contextmanager
def one_torch_thread():
    """torch on one thread: matrices this small run fastest there; a pool crawls on few cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def relative_difference(ours, theirs) -> float:
    """The largest entry of |ours - theirs| over the largest |theirs|, worst layer and leaf."""
    gaps = jax.tree.map(
        lambda a, b: np.max(np.abs(np.asarray(a) - b)) / np.max(np.abs(b)), ours, theirs
    )
    return float(max(jax.tree.leaves(gaps)))


def main(epochs: int = EPOCHS, float64: bool = True, verbose: bool = True) -> dict:
    """Train every configuration; ``{name: {"accuracy", "torch_accuracy", "difference"}}``.

    The torch entries are None where torch is not installed.
    """
    dtype = np.float64 if float64 else np.float32
    results = {}
    with jax.enable_x64(float64):
        x_train, x_test, y_train, y_test = split()
        data = (x_train.astype(dtype), y_train)
        initial = jax.tree.map(lambda p: p.astype(dtype), init_mlp(jax.random.key(0)))
        for config in CONFIGS:
            params = train_gradtx(config, initial, data, epochs)
            result = {
                "accuracy": accuracy(params, x_test.astype(dtype), y_test),
                "torch_accuracy": None,
                "difference": None,
            }
            if torch is not None:
                with one_torch_thread():
                    theirs = train_torch(config, initial, data, epochs)
                result["torch_accuracy"] = accuracy(theirs, x_test.astype(dtype), y_test)
                result["difference"] = relative_difference(params, theirs)
            results[config.name] = result
    if verbose:
        print(f"{epochs} epochs in {np.dtype(dtype).name}; test accuracy on 450 digits")
        print(f"{'':38} {'gradtx':>7} {'torch':>7} {'params differ by':>17}")
        for name, r in results.items():
            theirs = "-" if r["torch_accuracy"] is None else f"{r['torch_accuracy']:.3f}"
            gap = "(no torch)" if r["difference"] is None else f"{r['difference']:.1e}"
            print(f"{name:38} {r['accuracy']:>7.3f} {theirs:>7} {gap:>17}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--float32", action="store_true", help="run in float32, not float64")
    args = parser.parse_args()
    main(args.epochs, float64=not args.float32)
