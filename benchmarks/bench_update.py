"""Time one jitted, buffer-donated Adam step (update plus apply): gradtx against optax.

Both libraries run in the same process, interleaved round by round so that
machine noise hits them alike; the figures are medians over rounds and the
ratio is the median over rounds of gradtx time / optax time in the same round
(below 1 means gradtx is faster). The full
suite, with more learners, torch and the roofline, is ``python -m benchmarks``.

    python benchmarks/bench_update.py [--rounds 15] [--steps 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import gradtx  # noqa: E402
from benchmarks.run import layered_tree, single_leaf  # noqa: E402
from benchmarks.timing import JaxStep, interleaved  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, optax {optax.__version__}, device {jax.devices()[0]}")
    print(f"{'case':<26}{'params':>12}{'gradtx ms':>12}{'optax ms':>12}{'gradtx/optax':>14}")
    cases = {
        "adam, 1 leaf of 10M": single_leaf(10_000_000),
        "adam, 300 leaves, 8M": layered_tree(100, 256),
    }
    for name, params in cases.items():
        runners = {
            "gradtx": JaxStep(gradtx.adam(1e-3), gradtx.apply_updates, params, params),
            "optax": JaxStep(optax.adam(1e-3), optax.apply_updates, params, params),
        }
        t = interleaved(runners, args.rounds, args.steps)
        size = sum(x.size for x in jax.tree.leaves(params))
        ours, theirs = t.median("gradtx") * 1e3, t.median("optax") * 1e3
        ratio = t.ratio("gradtx", "optax")
        print(f"{name:<26}{size:>12,}{ours:>12.2f}{theirs:>12.2f}{ratio:>14.3f}")


if __name__ == "__main__":
    main()
