"""The plain step (update plus apply, jitted, donated) of each learner: gradtx against optax.

Both libraries run in the same process, interleaved round by round so that
machine noise hits them alike; the ratio is the median over rounds of gradtx
time / optax time in the same round (below 1 means gradtx is faster). Which
executable is built second can move a ratio by 10% on trees of hundreds of
leaves, so each pair is built in both orders and both ratios are printed,
with their geometric mean. The learners are the benchmark suite's (those with
fused kernels) and the rest of optax's catalogue; ``--only`` picks some. The
full suite, with the fused and packed paths, torch and the roofline, is
``python -m benchmarks``.

    python benchmarks/bench_update.py [--rounds 21] [--steps 10] [--only adam lamb ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import gradtx  # noqa: E402
from benchmarks.run import LEARNERS, gradients_like, layered_tree, single_leaf  # noqa: E402
from benchmarks.timing import JaxStep, interleaved  # noqa: E402


def _half_square_norm(params: Any) -> jax.Array:
    """The objective that line searches and Polyak's step evaluate: 0.5 |params|^2."""
    return 0.5 * sum(jnp.sum(x * x) for x in jax.tree.leaves(params))


# The catalogue's learners without kernels: (gradtx's, optax's, whether update needs the
# objective's extras). Both get the same hyperparameters.
CATALOGUE: dict[str, tuple[Callable[[], Any], Callable[[], Any], bool]] = {
    "adafactor": (lambda: gradtx.adafactor(1e-3), lambda: optax.adafactor(1e-3), False),
    "fromage": (lambda: gradtx.fromage(1e-3), lambda: optax.fromage(1e-3), False),
    "lamb": (lambda: gradtx.lamb(1e-3), lambda: optax.lamb(1e-3), False),
    "lars": (lambda: gradtx.lars(1e-3), lambda: optax.lars(1e-3), False),
    "lbfgs": (lambda: gradtx.lbfgs(), lambda: optax.lbfgs(), True),
    "noisy_sgd": (
        lambda: gradtx.noisy_sgd(1e-3, key=jax.random.key(0)),
        lambda: optax.noisy_sgd(1e-3, key=jax.random.key(0)),
        False,
    ),
    "novograd": (lambda: gradtx.novograd(1e-3), lambda: optax.novograd(1e-3), False),
    "polyak_sgd": (lambda: gradtx.polyak_sgd(), lambda: optax.polyak_sgd(), True),
    "sm3": (lambda: gradtx.sm3(1e-3), lambda: optax.sm3(1e-3), False),
}


def _pairs() -> dict[str, tuple[Callable[[], Any], Callable[[], Any], bool]]:
    pairs = {n: (l.ours, l.theirs, False) for n, l in LEARNERS.items() if n != "adam_bf16_state"}
    return {**pairs, **CATALOGUE}


def main() -> None:
    pairs = _pairs()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--only", nargs="+", choices=sorted(pairs), default=sorted(pairs))
    args = parser.parse_args()
    print(f"jax {jax.__version__}, optax {optax.__version__}, device {jax.devices()[0]}")
    print(
        f"{'case':<18}{'learner':<20}{'gradtx ms':>10}{'optax ms':>10}"
        f"{'gradtx 1st':>12}{'optax 1st':>11}{'mean':>8}"
    )
    cases = {"1 leaf, 10M": single_leaf(10_000_000), "300 leaves, 8M": layered_tree(100, 256)}
    for case, zeros in cases.items():
        # Params away from 0 (trust ratios and line searches take their usual branches) and
        # gradients of another size, the same for both libraries.
        params = jax.tree.map(lambda g: 1.0 + 1e3 * g, gradients_like(zeros))
        grads = gradients_like(zeros)
        for name in [n for n in pairs if n in args.only]:
            make_ours, make_theirs, needs_objective = pairs[name]
            objective = _half_square_norm if needs_objective else None

            def ours(make=make_ours, objective=objective, params=params, grads=grads):
                return JaxStep(make(), gradtx.apply_updates, params, grads, objective=objective)

            def theirs(make=make_theirs, objective=objective, params=params, grads=grads):
                return JaxStep(make(), optax.apply_updates, params, grads, objective=objective)

            # construction order: gradtx then optax, then optax then gradtx
            runners = {"g1": ours(), "o1": theirs()}
            runners["o2"] = theirs()
            runners["g2"] = ours()
            t = interleaved(runners, args.rounds, args.steps)
            first, second = t.ratio("g1", "o1"), t.ratio("g2", "o2")
            ms = [statistics.median(t[a] + t[b]) * 1e3 for a, b in (("g1", "g2"), ("o1", "o2"))]
            print(
                f"{case:<18}{name:<20}{ms[0]:>10.2f}{ms[1]:>10.2f}"
                f"{first:>12.3f}{second:>11.3f}{(first * second) ** 0.5:>8.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
