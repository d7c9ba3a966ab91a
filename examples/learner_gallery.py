"""A convergence gallery: every gradtx learner on the digits MLP, and a few on Rosenbrock.

    python examples/learner_gallery.py [--out outputs/learner_gallery.png] [--steps 300]

Every learner of ``gradtx.learners.__all__`` trains the same 64-32-10 ReLU MLP
on scikit-learn's digits from the same initialisation, on the same 300
minibatches of 64, through ``gradtx.make_train_step`` (which hands
``polyak_sgd`` its loss and ``lbfgs`` its line-search extras). Each learner
keeps its default hyperparameters except the learning rate, which is the one
of a 5-point grid (half a decade apart, a decade either side of a centre
picked per learner) with the lowest final loss on the whole training set
(the legends give it, and the final loss); the rates of a grid train side by
side in one ``jax.vmap``, and all learners in one compiled program.
``polyak_sgd``'s tuned rate is its ``max_learning_rate``; ``lbfgs`` takes the
step its line search accepts and has no rate to tune.

Two learners train full-batch (all 1347 training images every step):
``lbfgs``, whose line search must see the same objective at every evaluation
of a step, and ``rprop``, whose sign-agreement rule reads minibatch noise as
oscillation (on these minibatches it ends above its starting loss at every
rate of the grid). ``polyak_sgd`` is the stochastic Polyak step and trains on
the minibatches.

The picture has one panel per family (training loss, log scale, against the
step) and one of Rosenbrock paths from (-1.5, 2) to the minimum (1, 1) for
five learners, their rates tuned the same way on the final value.
"""

from __future__ import annotations

import argparse
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from digits_data import init_mlp, loss_fn, split  # noqa: E402

import gradtx  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "outputs" / "learner_gallery.png"
SIZES = (64, 32, 10)
BATCH_SIZE = 64
EVERY = 10  # steps between two evaluations of the whole-training-set loss


class Learner(NamedTuple):
    """``gradtx.<name>(**{rate_arg: rate}, **kwargs)`` at rates around ``centre``."""

    name: str
    centre: float | None  # None: no rate to tune (lbfgs's line search picks the step)
    kwargs: dict[str, Any] | None = None
    full_batch: bool = False
    rate_arg: str = "learning_rate"

    def make(self, rate: Any) -> gradtx.GradientTransformation:
        rate_kwargs = {} if self.centre is None else {self.rate_arg: rate}
        with warnings.catch_warnings():  # optimistic_adam is deprecated, as in optax: shown anyway
            warnings.filterwarnings("ignore", "optimistic_adam is deprecated", DeprecationWarning)
            return getattr(gradtx, self.name)(**rate_kwargs, **(self.kwargs or {}))

    def grid(self, points: int) -> np.ndarray:
        if self.centre is None:
            return np.array([np.nan])
        return self.centre * np.geomspace(0.1, 10.0, points)  # 5 points: half a decade apart

    @property
    def label(self) -> str:
        args = ", ".join(
            f"{k}={'True' if v is True else v}"
            for k, v in (self.kwargs or {}).items()
            if k != "key"
        )
        return f"{self.name}({args})" if args else self.name


FAMILIES: dict[str, list[Learner]] = {
    "SGD and its step sizes": [
        Learner("sgd", 0.3),
        Learner("sgd", 0.1, {"momentum": 0.9}),
        Learner("sgd", 0.1, {"momentum": 0.9, "nesterov": True}),
        Learner("noisy_sgd", 0.3, {"key": 0}),
        Learner("polyak_sgd", 1.0, rate_arg="max_learning_rate"),
    ],
    "Adam and its relatives": [
        Learner("adam", 0.01),
        Learner("adamw", 0.01),
        Learner("nadam", 0.01),
        Learner("nadamw", 0.01),
        Learner("amsgrad", 0.03),
        Learner("adamax", 0.03),
        Learner("adamaxw", 0.03),
        Learner("radam", 0.03),
        Learner("adabelief", 0.01),
        Learner("adan", 0.01),
    ],
    "Adaptive per coordinate": [
        Learner("adagrad", 0.1),
        Learner("rmsprop", 0.01),
        Learner("adadelta", 10.0),
        Learner("sm3", 0.3),
        Learner("yogi", 0.03),
    ],
    "Sign-based": [
        Learner("sign_sgd", 3e-3),
        Learner("signum", 3e-3),
        Learner("lion", 3e-3),
        Learner("rprop", 1e-3, full_batch=True),
    ],
    "Trust ratio and factored moments": [
        Learner("lamb", 3e-3),
        Learner("lars", 3.0),
        Learner("fromage", 0.01),
        Learner("adafactor", 0.03),
        Learner("novograd", 0.1),
    ],
    "Optimistic, and quasi-Newton": [
        Learner("optimistic_gradient_descent", 0.1),
        Learner("optimistic_adam", 0.01),
        Learner("optimistic_adam_v2", 0.01),
        Learner("lbfgs", None, full_batch=True),
    ],
}
ROSENBROCK = [
    Learner("sgd", 3e-4, {"momentum": 0.9}),
    Learner("adam", 0.3),
    Learner("yogi", 0.3),
    Learner("rprop", 1e-3),
    Learner("lbfgs", None),
]
START = (-1.5, 2.0)
STYLES = {  # lbfgs takes few long steps; adam's path lies on yogi's until near the minimum
    "lbfgs": {"ls": "-", "marker": "o", "ms": 4, "lw": 1.2, "zorder": 3},
    "adam": {"ls": "--", "lw": 1.6, "zorder": 3},
}


def rosenbrock(xy: jax.Array, batch: Any = None) -> jax.Array:
    del batch  # make_train_step's signature: the objective has no data
    return (1.0 - xy[0]) ** 2 + 100.0 * (xy[1] - xy[0] ** 2) ** 2


def losses(learner: Learner, rate: jax.Array, params, batches, full) -> jax.Array:
    """The whole-training-set loss at the start and after every ``EVERY`` steps."""
    opt = learner.make(rate)
    step = gradtx.make_train_step(loss_fn, opt, donate=False)

    def one_step(carry, batch):
        params, state = carry
        params, state, _ = step(params, state, full if learner.full_batch else batch)
        return (params, state), None

    def chunk(carry, batches):
        carry, _ = jax.lax.scan(one_step, carry, batches)
        return carry, loss_fn(carry[0], full)

    _, curve = jax.lax.scan(chunk, (params, opt.init(params)), batches)
    return jnp.concatenate([loss_fn(params, full)[None], curve])


def path(learner: Learner, rate: jax.Array, steps: int) -> jax.Array:
    """The ``steps + 1`` points of ``learner`` on Rosenbrock's function from ``START``."""
    opt = learner.make(rate)
    step = gradtx.make_train_step(rosenbrock, opt, donate=False)

    def one_step(carry, _):
        xy, state, _ = step(*carry, None)
        return (xy, state), xy

    start = jnp.asarray(START)
    _, points = jax.lax.scan(one_step, (start, opt.init(start)), None, length=steps)
    return jnp.concatenate([start[None], points])


def best(values: np.ndarray) -> int:
    return int(np.argmin(np.where(np.isfinite(values), values, np.inf)))


def train_all(steps: int, points: int) -> dict[str, list[dict]]:
    """Every family's learners at every rate of their grids, in one compiled program."""
    x_train, _, y_train, _ = split()
    idx = np.random.default_rng(0).integers(0, len(x_train), size=(steps, BATCH_SIZE))
    idx = idx.reshape(steps // EVERY, EVERY, BATCH_SIZE)
    batches = (jnp.asarray(x_train[idx]), jnp.asarray(y_train[idx]))
    full = (jnp.asarray(x_train), jnp.asarray(y_train))
    params = init_mlp(jax.random.key(0), SIZES)

    @jax.jit
    def run(params, batches, full):
        curves = {}
        for family, learners in FAMILIES.items():
            for i, learner in enumerate(learners):
                rates = jnp.asarray(learner.grid(points), jnp.float32)
                grid = jax.vmap(partial(losses, learner), in_axes=(0, None, None, None))
                curves[family, i] = grid(rates, params, batches, full)
        return curves

    curves = jax.device_get(run(params, batches, full))
    results = {}
    for family, learners in FAMILIES.items():
        results[family] = []
        for i, learner in enumerate(learners):
            grid, curve = learner.grid(points), np.asarray(curves[family, i])
            k = best(curve[:, -1])
            results[family].append(
                {"learner": learner, "rate": grid[k], "curve": curve[k], "grid_final": curve[:, -1]}
            )
    return results


def rosenbrock_paths(steps: int, points: int) -> list[dict]:
    @jax.jit
    def run():
        grids = [jnp.asarray(learner.grid(points), jnp.float32) for learner in ROSENBROCK]
        return [
            jax.vmap(partial(path, learner, steps=steps))(rates)
            for learner, rates in zip(ROSENBROCK, grids, strict=True)
        ]

    results = []
    for learner, paths in zip(ROSENBROCK, jax.device_get(run()), strict=True):
        finals = np.array([float(rosenbrock(p[-1])) for p in paths])
        k = best(finals)
        results.append({"learner": learner, "rate": learner.grid(points)[k], "path": paths[k]})
    return results


def rate_text(learner: Learner, rate: float) -> str:
    if learner.centre is None:
        return "line search"
    name = "max lr" if learner.rate_arg == "max_learning_rate" else "lr"
    return f"{name} {rate:.2g}"


def draw(results: dict, paths: list[dict], steps: int, out: Path) -> None:
    fig = plt.figure(figsize=(20, 10.5))
    grid = fig.add_gridspec(2, 4)
    cells = [grid[0, 0], grid[0, 1], grid[0, 2], grid[0, 3], grid[1, 0], grid[1, 1]]
    x = np.arange(0, steps + 1, EVERY)
    bottom = 1e-4
    for n, (cell, (family, runs)) in enumerate(zip(cells, results.items(), strict=True)):
        ax = fig.add_subplot(cell)
        for i, run in enumerate(runs):
            learner, final = run["learner"], run["curve"][-1]
            batch = ", full batch" if learner.full_batch else ""
            below = " (off the axis)" if final < bottom else ""
            label = f"{learner.label}: {rate_text(learner, run['rate'])}{batch}; {final:.2g}{below}"
            twin = [r["learner"].label for r in runs[:i] if np.allclose(r["curve"], run["curve"])]
            if twin:  # a curve under an earlier one: dashed, so that both show
                label += f" (same as {twin[0]})"
            ax.plot(x, run["curve"], "--" if twin else "-", label=label, lw=1.5)
        ax.set_yscale("log")
        ax.set_ylim(bottom, 4)
        ax.set_title(family, fontsize=11)
        ax.set_xlabel("step")
        if n % 4 == 0:
            ax.set_ylabel("training loss (all 1347 images)")
        ax.grid(alpha=0.3, which="major")
        ax.legend(
            fontsize=7.5,
            loc="lower left",
            framealpha=0.9,
            title="rate; final loss",
            title_fontsize=7.5,
        )

    ax = fig.add_subplot(grid[1, 2:])
    xs, ys = np.meshgrid(np.linspace(-2, 2, 200), np.linspace(-1, 3.2, 200))
    zs = (1 - xs) ** 2 + 100 * (ys - xs**2) ** 2
    ax.contour(xs, ys, zs, levels=np.geomspace(0.05, 2000, 12), colors="0.6", linewidths=0.6)
    for run in paths:
        learner, xy = run["learner"], run["path"]
        miss = np.linalg.norm(xy[-1] - 1.0)
        label = f"{learner.label}: {rate_text(learner, run['rate'])}; ends {miss:.1e} from (1, 1)"
        (line,) = ax.plot(xy[:, 0], xy[:, 1], label=label, **STYLES.get(learner.name, {"lw": 1}))
        ax.plot(*xy[-1], "X", color=line.get_color(), ms=8, zorder=4)  # where the path ends
    ax.plot(*START, "ko", ms=7, zorder=4)
    ax.plot(1, 1, "r*", ms=15, zorder=4)
    ax.set_xlim(-2, 2)
    ax.set_ylim(-1, 3.2)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(
        f"Rosenbrock (1 - x)² + 100 (y - x²)², {len(paths[0]['path']) - 1} steps from {START}",
        fontsize=11,
    )
    ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    fig.suptitle(
        f"Every gradtx learner: the digits MLP {'-'.join(map(str, SIZES))}, {steps} steps on the "
        f"same minibatches of {BATCH_SIZE} from the same start, each at the best rate of its grid",
        fontsize=13,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    print(f"gallery written to {out}")


def main(
    out: Path = OUT, steps: int = 300, points: int = 5, rosenbrock_steps: int = 1000
) -> dict[str, Any]:
    """Train, draw, and return ``{"digits": {label: ...}, "rosenbrock": {label: ...}}``.

    Each digits entry has the chosen ``rate``, the ``initial`` and ``final``
    training loss; each Rosenbrock entry the ``rate`` and the path's ``end``.
    """
    if steps % EVERY:
        raise ValueError(f"steps must be a multiple of {EVERY}, got {steps}")
    start = time.perf_counter()
    results = train_all(steps, points)
    paths = rosenbrock_paths(rosenbrock_steps, points)
    count = sum(map(len, FAMILIES.values()))
    seconds = time.perf_counter() - start
    print(f"{count} learners x {points} rates x {steps} steps, {len(ROSENBROCK)} Rosenbrock grids:")
    print(f"{seconds:.1f} s, compilation included")
    digits = {}
    print(f"{'learner':<50} {'rate':>12} {'final loss':>10}")
    for runs in results.values():
        for run in runs:
            learner = run["learner"]
            digits[learner.label] = {
                "name": learner.name,
                "rate": float(run["rate"]),
                "initial": float(run["curve"][0]),
                "final": float(run["curve"][-1]),
            }
            rate = rate_text(learner, run["rate"])
            print(f"{learner.label:<50} {rate:>12} {run['curve'][-1]:>10.3g}")
    ends = {}
    for run in paths:
        ends[run["learner"].label] = {"rate": float(run["rate"]), "end": run["path"][-1]}
    draw(results, paths, steps, out)
    return {"digits": digits, "rosenbrock": ends}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    main(args.out, args.steps)
