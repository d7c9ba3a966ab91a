"""What bandwidth a learner's kernel has to beat: triads over working sets of several sizes.

The roofline of ``python -m benchmarks`` is a learner's bytes at the bandwidth of a
triad (``a = a + 0.5 * b``, in place) over as much memory as the learner's arrays take.
This prints, side by side in one run (medians over rounds), the triad's bandwidth over
working sets from 80 to 240 MB, the same pass as ``sign_sgd``'s kernel at those sizes,
and the fused kernels of a few learners on the 10M leaf with their working sets: each
kernel against the triad over the same amount of memory.

    python benchmarks/bench_roofline.py [--rounds 15] [--steps 10]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import gradtx  # noqa: E402
from benchmarks.run import LEARNERS, Triad, gradients_like, single_leaf  # noqa: E402
from benchmarks.timing import JaxStep, interleaved  # noqa: E402

N = 10_000_000
SIZES = (N, 3 * N // 2, 2 * N, 3 * N)  # the triad's (and sign_sgd's) working sets: 8 B each
KERNELS = ("lion", "adam", "adabelief", "optimistic_adam_v2", "adan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    runners, moved, working_set = {}, {}, {}
    for n in SIZES:
        runners[f"triad {n // 10**6}M"] = Triad(n)
        moved[f"triad {n // 10**6}M"], working_set[f"triad {n // 10**6}M"] = 12 * n, 8 * n
    for name, n in [*(("sign_sgd", n) for n in SIZES), *((name, N) for name in KERNELS)]:
        params = single_leaf(n)
        learner = LEARNERS[name]
        key = f"{name} fused {n // 10**6}M"
        runners[key] = JaxStep(
            learner.ours(), gradtx.apply_updates, params, gradients_like(params), fused=True
        )
        moved[key], working_set[key] = learner.ideal_bytes * n, learner.working_set * n
    t = interleaved(runners, args.rounds, args.steps)
    print(f"{'pass':<30}{'working set MB':>15}{'ms':>9}{'GB/s':>8}")
    for key in runners:
        seconds = t.median(key)
        print(
            f"{key:<30}{working_set[key] / 1e6:>15.0f}{seconds * 1e3:>9.2f}"
            f"{moved[key] / seconds / 1e9:>8.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
