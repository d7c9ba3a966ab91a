"""Muon's plain step (update plus apply, jitted, donated): gradtx against optax.contrib.muon.

Both run in the same process, interleaved round by round, each pair built in both
orders (the ratio is gradtx time / optax time in the same round, median over
rounds; below 1 means gradtx is faster), with each executable's trace+compile
time. Cases: one 4096x4096 matrix (five Newton-Schulz iterations of three
matrix products each: about 2 TFLOP a step, seconds on a CPU), and a 300-leaf
transformer-shaped tree (100 blocks of a 256x256 matrix, a 256x56 projection
and a bias: the biases go to Muon's AdamW branch). With torch installed, torch's
own ``torch.optim.Muon`` on the matrices is timed too.

    python benchmarks/bench_muon.py [--rounds 5] [--steps 2] [--only matrix tree]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

import gradtx  # noqa: E402
from benchmarks.run import HAVE_TORCH, gradients_like, layered_tree  # noqa: E402
from benchmarks.timing import JaxStep, interleaved  # noqa: E402

CASES = {
    "matrix": ("4096x4096", lambda: {"w": jnp.zeros((4096, 4096), jnp.float32)}),
    "tree": ("300 leaves, 2.4M", lambda: layered_tree(100, 256)),
}


def _torch_seconds(params: Any, grads: Any, rounds: int, steps: int) -> float:
    """Median seconds of one ``torch.optim.Muon.step()`` on the matrices (biases left out)."""
    import numpy as np
    import torch

    matrices = [k for k, x in params.items() if x.ndim == 2]
    tensors = [torch.tensor(np.asarray(params[k]), requires_grad=True) for k in matrices]
    for t, k in zip(tensors, matrices, strict=True):
        t.grad = torch.tensor(np.asarray(grads[k]))
    opt = torch.optim.Muon(tensors, lr=1e-3)
    opt.step()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            opt.step()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    args = parser.parse_args()
    print(f"jax {jax.__version__}, optax {optax.__version__}, device {jax.devices()[0]}")
    header = ["case", "gradtx ms", "optax ms", "gradtx 1st", "optax 1st", "mean"]
    header += ["build gradtx s", "build optax s", "torch ms"]
    print("".join(f"{h:>15}" if i else f"{h:<18}" for i, h in enumerate(header)))
    for key in args.only:
        label, make = CASES[key]
        zeros = make()
        params = jax.tree.map(lambda g: 1.0 + 1e3 * g, gradients_like(zeros))
        grads = gradients_like(zeros)

        def ours(params=params, grads=grads):
            return JaxStep(gradtx.muon(1e-3), gradtx.apply_updates, params, grads)

        def theirs(params=params, grads=grads):
            return JaxStep(optax.contrib.muon(1e-3), optax.apply_updates, params, grads)

        runners = {"g1": ours(), "o1": theirs()}  # built gradtx first, then optax first
        runners["o2"] = theirs()
        runners["g2"] = ours()
        t = interleaved(runners, args.rounds, args.steps)
        first, second = t.ratio("g1", "o1"), t.ratio("g2", "o2")
        ms = [statistics.median(t[a] + t[b]) * 1e3 for a, b in (("g1", "g2"), ("o1", "o2"))]
        build = [
            statistics.median(r.trace_s + r.compile_s for r in (runners[a], runners[b]))
            for a, b in (("g1", "g2"), ("o1", "o2"))
        ]
        torch_ms = (
            _torch_seconds(params, grads, args.rounds, args.steps) * 1e3 if HAVE_TORCH else None
        )
        cells = [label, f"{ms[0]:.1f}", f"{ms[1]:.1f}", f"{first:.3f}", f"{second:.3f}"]
        cells += [f"{(first * second) ** 0.5:.3f}", f"{build[0]:.2f}", f"{build[1]:.2f}"]
        cells += [f"{torch_ms:.1f}" if torch_ms is not None else "-"]
        print("".join(f"{c:>15}" if i else f"{c:<18}" for i, c in enumerate(cells)), flush=True)


if __name__ == "__main__":
    main()
