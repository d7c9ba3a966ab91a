"""The plain step (update plus apply, jitted, donated) of each learner: gradtx against optax.

Both libraries run in the same process, interleaved round by round so that
machine noise hits them alike; the ratio is the median over rounds of gradtx
time / optax time in the same round (below 1 means gradtx is faster). Which
executable is built second can move a ratio by 10% on trees of hundreds of
leaves, so each pair is built in both orders and both ratios are printed,
with their geometric mean. The full suite, with the fused and packed paths,
torch and the roofline, is ``python -m benchmarks``.

    python benchmarks/bench_update.py [--rounds 21] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import jax
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import gradtx  # noqa: E402
from benchmarks.run import LEARNERS, layered_tree, single_leaf  # noqa: E402
from benchmarks.timing import JaxStep, interleaved  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, optax {optax.__version__}, device {jax.devices()[0]}")
    print(
        f"{'case':<18}{'learner':<14}{'gradtx ms':>10}{'optax ms':>10}"
        f"{'gradtx 1st':>12}{'optax 1st':>11}{'mean':>8}"
    )
    cases = {"1 leaf, 10M": single_leaf(10_000_000), "300 leaves, 8M": layered_tree(100, 256)}
    for case, params in cases.items():
        for name, learner in LEARNERS.items():
            if name == "adam_bf16_state":
                continue

            def ours(params=params, learner=learner):
                return JaxStep(learner.ours(), gradtx.apply_updates, params, params)

            def theirs(params=params, learner=learner):
                return JaxStep(learner.theirs(), optax.apply_updates, params, params)

            # construction order: gradtx then optax, then optax then gradtx
            runners = {"g1": ours(), "o1": theirs()}
            runners["o2"] = theirs()
            runners["g2"] = ours()
            t = interleaved(runners, args.rounds, args.steps)
            first, second = t.ratio("g1", "o1"), t.ratio("g2", "o2")
            ms = [statistics.median(t[a] + t[b]) * 1e3 for a, b in (("g1", "g2"), ("o1", "o2"))]
            print(
                f"{case:<18}{name:<14}{ms[0]:>10.2f}{ms[1]:>10.2f}"
                f"{first:>12.3f}{second:>11.3f}{(first * second) ** 0.5:>8.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
