"""optax.contrib's learners on the digits MLP: the learning-rate-free ones, and the others tuned.

    python examples/modern_learners.py [--out outputs/modern_learners.png] [--epochs 10]

Every learner trains the 64-64-10 ReLU MLP of ``examples/digits_data.py`` from
the same initialisation on the same minibatches (``epochs`` shuffled epochs of
21 minibatches of 64) through ``gradtx.make_train_step``, which hands MoMo the
loss (``value``) and Sophia the objective on the minibatch (``obj_fn``). Three
times an epoch the example records the loss on all 1347 training images and the
accuracy on the 450 test images, both at ``gradtx.eval_params(state, params)``:
for the schedule-free learners that is their average :math:`x_t`, not the point
:math:`y_t` they take gradients at (the loss at :math:`y_t` is drawn too, dotted).

How each learner gets its learning rate:

- the learning-rate-free ones (Prodigy, D-Adaptation, DoG, DoWG, COCOB, Mechanic
  around ``adam(1.0)``) keep their defaults;
- the others take the suggestion of ``gradtx.find_learning_rate`` (the range test
  of ``docs/lr_finder.md``: up to 100 steps from the same start, cycling the
  minibatches of the first epoch);
- AdamW, the reference in every panel, takes the best of a five-point sweep: 1e-3
  to 0.1 half a decade apart, the best being the lowest final training loss (the
  rates of a sweep train side by side in one ``jax.vmap``).

ACProp is drawn twice: at optax's defaults (``eps_root=1e-16``), which diverge
here (a pixel that is blank in the first minibatches leaves its weights a second
moment of 1e-16, and the next non-zero gradient is divided by 1e-8), and with
``eps_root=1e-8``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from digits_data import epoch_batches, init_mlp, loss_fn, predict, split  # noqa: E402

import gradtx  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "outputs" / "modern_learners.png"
EVALS_PER_EPOCH = 3  # 21 minibatches an epoch: every 7 steps
SWEEP = 1e-3 * np.sqrt(10.0) ** np.arange(5)  # 1e-3, 3.2e-3, 1e-2, 3.2e-2, 0.1
LOSS_RANGE = (3e-3, 5.0)
ACCURACY_RANGE = (0.8, 1.0)
FIGURES = ("initial", "final", "highest", "test_accuracy", "trained_final", "trained_test_accuracy")


class Learner(NamedTuple):
    """``make(rate)`` builds the learner; ``rate`` says where the rate comes from."""

    label: str
    make: Callable[[Any], gradtx.GradientTransformation]
    rate: str  # "default", "finder" or "sweep"


GROUPS: dict[str, list[Learner]] = {
    "Learning-rate-free, at their defaults": [
        Learner("prodigy", lambda _: gradtx.prodigy(), "default"),
        Learner("dadapt_adamw", lambda _: gradtx.dadapt_adamw(), "default"),
        Learner("dog", lambda _: gradtx.dog(), "default"),
        Learner("dowg", lambda _: gradtx.dowg(), "default"),
        Learner("cocob", lambda _: gradtx.cocob(), "default"),
        Learner("mechanize(adam(1.0))", lambda _: gradtx.mechanize(gradtx.adam(1.0)), "default"),
    ],
    "Adam's relatives, at the range test's rate": [
        Learner("adopt", gradtx.adopt, "finder"),
        Learner("ademamix", gradtx.ademamix, "finder"),
        Learner("simplified_ademamix", gradtx.simplified_ademamix, "finder"),
        Learner("madgrad", gradtx.madgrad, "finder"),
        Learner("momo_adam", gradtx.momo_adam, "finder"),
        Learner("acprop (optax's defaults)", gradtx.acprop, "finder"),
        Learner("acprop(eps_root=1e-8)", lambda lr: gradtx.acprop(lr, eps_root=1e-8), "finder"),
    ],
    "Muon, schedule-free, MoMo and Sophia": [
        Learner("muon", gradtx.muon, "finder"),
        Learner("schedule_free_adamw", gradtx.schedule_free_adamw, "finder"),
        Learner("schedule_free_sgd", gradtx.schedule_free_sgd, "finder"),
        Learner("momo", gradtx.momo, "finder"),
        Learner("sophia", gradtx.sophia, "finder"),
    ],
}
REFERENCE = Learner("adamw", gradtx.adamw, "sweep")


def digits(epochs: int) -> dict[str, Any]:
    """The data, the start and the minibatches, stacked ``(evaluations, steps between, ...)``."""
    x_train, x_test, y_train, y_test = split()
    batches = [b for e in range(epochs) for b in epoch_batches(x_train, y_train, seed=e)]
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *batches)
    chunks = epochs * EVALS_PER_EPOCH
    return {
        "params": init_mlp(jax.random.key(0)),
        "batches": jax.tree.map(lambda x: x.reshape(chunks, -1, *x.shape[1:]), stacked),
        "first_epoch": epoch_batches(x_train, y_train, seed=0),
        "train": (jnp.asarray(x_train), jnp.asarray(y_train)),
        "test": (jnp.asarray(x_test), jnp.asarray(y_test)),
        "steps": len(batches),
    }


def curves(learner: Learner, rates: np.ndarray, data: dict) -> dict[str, np.ndarray]:
    """Training loss (at the eval params and at the trained ones) and test accuracy, per rate."""
    train, (x_test, y_test) = data["train"], data["test"]

    def accuracy(params):
        return jnp.mean(jnp.argmax(predict(params, x_test), axis=1) == y_test)

    def one_rate(rate):
        opt = learner.make(rate)
        step = gradtx.make_train_step(loss_fn, opt, donate=False)

        def measure(params, state):
            evaluated = gradtx.eval_params(state, params)
            return (
                loss_fn(evaluated, train),
                loss_fn(params, train),
                accuracy(evaluated),
                accuracy(params),
            )

        def chunk(carry, batches):
            carry, _ = jax.lax.scan(lambda c, b: (step(*c, b)[:2], None), carry, batches)
            return carry, measure(*carry)

        state = opt.init(data["params"])
        _, later = jax.lax.scan(chunk, (data["params"], state), data["batches"])
        first = measure(data["params"], state)
        return [jnp.concatenate([a[None], b]) for a, b in zip(first, later, strict=True)]

    names = ("loss", "trained_loss", "accuracy", "trained_accuracy")
    runs = jax.jit(jax.vmap(one_rate))(jnp.asarray(rates, jnp.float32))
    return dict(zip(names, runs, strict=True))


def train(learner: Learner, data: dict) -> dict[str, Any]:
    """One learner at the rate it gets: its default, the range test's, or the sweep's best."""
    if learner.rate == "finder":
        found = gradtx.find_learning_rate(
            loss_fn, data["params"], learner.make, data["first_epoch"]
        )
        if found.suggestion is None:
            raise RuntimeError(f"{learner.label}: the range test suggested no learning rate")
        rates = np.array([found.suggestion])
    else:
        rates = SWEEP if learner.rate == "sweep" else np.array([np.nan])
    runs = jax.device_get(curves(learner, rates, data))
    finals = np.where(np.isfinite(runs["loss"][:, -1]), runs["loss"][:, -1], np.inf)
    k = int(np.argmin(finals))
    run = {key: np.asarray(value[k]) for key, value in runs.items()}
    return {
        "learner": learner,
        "rate": None if learner.rate == "default" else float(rates[k]),
        **run,
        "initial": float(run["loss"][0]),
        "final": float(run["loss"][-1]),
        "highest": float(np.nanmax(run["loss"])),
        "test_accuracy": float(run["accuracy"][-1]),
        "trained_final": float(run["trained_loss"][-1]),
        "trained_test_accuracy": float(run["trained_accuracy"][-1]),
    }


def rate_text(run: dict) -> str:
    source = run["learner"].rate
    if source == "default":
        return "defaults"
    return f"lr {run['rate']:.2g} ({'range test' if source == 'finder' else 'best of sweep'})"


def legend_text(run: dict) -> str:
    text = f"{run['learner'].label}: {rate_text(run)}; loss {run['final']:.2g}"
    text += f", {100 * run['test_accuracy']:.1f}%"
    notes = []
    if run["highest"] > LOSS_RANGE[1]:
        notes.append(f"diverges: loss up to {run['highest']:.2g}, off the chart (the triangle)")
    if run["test_accuracy"] < ACCURACY_RANGE[0]:
        notes.append("accuracy below the chart")
    if notes:
        text += "\n    " + "; ".join(notes)
    return text


def draw(results: dict[str, list[dict]], reference: dict, steps: int, out: Path) -> None:
    rows = len(results)
    fig, axes = plt.subplots(
        rows, 3, figsize=(18, 4.4 * rows), squeeze=False, width_ratios=(1, 1, 0.72)
    )
    x = np.linspace(0, steps, len(reference["loss"]))
    colours = plt.get_cmap("tab10").colors
    for row, (group, runs) in enumerate(results.items()):
        loss_ax, acc_ax, legend_ax = axes[row]
        for i, run in enumerate(runs):
            style = {"color": colours[i], "lw": 1.6}
            loss_ax.plot(x, run["loss"], label=legend_text(run), **style)
            acc_ax.plot(x, run["accuracy"], **style)
            if run["highest"] > LOSS_RANGE[1]:  # where it leaves the chart: a marker on the edge
                leaves = int(np.argmax(run["loss"] > LOSS_RANGE[1]))
                loss_ax.plot(x[leaves], LOSS_RANGE[1], "^", color=colours[i], ms=10, clip_on=False)
                loss_ax.annotate(
                    f"{run['learner'].label} leaves the chart",
                    xy=(x[leaves], LOSS_RANGE[1]),
                    xytext=(x[leaves] + 0.1 * steps, 0.5 * LOSS_RANGE[1]),
                    fontsize=8.5,
                    color=colours[i],
                    arrowprops={"arrowstyle": "->", "color": colours[i]},
                )
            if np.any(run["trained_loss"] != run["loss"]):
                loss_ax.plot(
                    x,
                    run["trained_loss"],
                    ":",
                    color=colours[i],
                    lw=1.4,
                    label=f"  the same at the trained params y_t, not gradtx.eval_params: "
                    f"loss {run['trained_final']:.2g}",
                )
        style = {"color": "black", "ls": "--", "lw": 1.8}
        loss_ax.plot(x, reference["loss"], label=legend_text(reference), **style)
        acc_ax.plot(x, reference["accuracy"], **style)

        loss_ax.set_yscale("log")
        loss_ax.set_ylim(*LOSS_RANGE)
        loss_ax.set_ylabel("training loss (all 1347 images)")
        loss_ax.set_title(f"{group}: training loss", fontsize=11)
        acc_ax.set_ylim(*ACCURACY_RANGE)
        acc_ax.set_ylabel("test accuracy (450 images)")
        acc_ax.set_title(f"{group}: test accuracy", fontsize=11)
        for ax in (loss_ax, acc_ax):
            ax.set_xlim(0, steps)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3, which="major")
        legend_ax.axis("off")
        legend_ax.legend(
            *loss_ax.get_legend_handles_labels(),
            fontsize=9,
            loc="center left",
            framealpha=0.9,
            title="learner: rate; final training loss, test accuracy",
            title_fontsize=9,
        )
    fig.suptitle(
        f"optax.contrib's learners in gradtx on the digits MLP 64-64-10: {steps} steps on the same "
        "minibatches of 64 from the same start; AdamW (dashed) at the best rate of a sweep",
        fontsize=13,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    print(f"picture written to {out}")


def main(out: Path = OUT, epochs: int = 10) -> dict[str, dict[str, Any]]:
    """Train every learner, draw the picture, and return ``{label: figures}``.

    Each entry has ``group``, ``rate`` (None for the defaults), ``rate_from``
    (``"default"``, ``"finder"`` or ``"sweep"``), the ``initial``, ``final`` and
    ``highest`` training loss and the final ``test_accuracy`` (at
    ``gradtx.eval_params``), and ``trained_final`` and ``trained_test_accuracy``, the
    same at the trained params (they differ for the schedule-free learners only);
    AdamW's group is ``"reference"``.
    """
    start = time.perf_counter()
    data = digits(epochs)
    reference = train(REFERENCE, data)
    results = {
        group: [train(learner, data) for learner in learners] for group, learners in GROUPS.items()
    }
    print(
        f"{sum(map(len, GROUPS.values())) + 1} learners, {data['steps']} steps each: "
        f"{time.perf_counter() - start:.1f} s, range tests and compilation included"
    )
    figures = {}
    print(f"{'learner':<28} {'rate':>28} {'final loss':>10} {'test acc':>8}")
    for group, runs in [("reference", [reference]), *results.items()]:
        for run in runs:
            learner = run["learner"]
            figures[learner.label] = {
                "group": group,
                "rate": run["rate"],
                "rate_from": learner.rate,
                **{key: run[key] for key in FIGURES},
            }
            print(
                f"{learner.label:<28} {rate_text(run):>28} {run['final']:>10.3g} "
                f"{run['test_accuracy']:>8.4f}"
            )
    draw(results, reference, data["steps"], out)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    main(args.out, args.epochs)
