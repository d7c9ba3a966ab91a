"""What users call: ``make_train_step`` and ``Trainer.step`` against the optax step a user writes.

The optax step is ``value_and_grad``, ``update`` and ``apply_updates``, jitted
and donated. The first executable a process builds can run slower than the
second, so each build order (gradtx's first, optax's first) runs in a fresh
process; a ratio is the geometric mean of the two orders' medians of
per-round quotients. Each row also gives the build (trace and compile) time
and the compiled step's temporary allocation (``memory_analysis``).

    python -m benchmarks.bench_user_step [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradtx
from benchmarks.bench_train import narrow, wide
from benchmarks.timing import interleaved

BATCH = 16


def linear(size: int) -> tuple[dict, Any, int]:
    """One leaf of ``size`` parameters and an elementwise loss: the update is all the work."""

    def loss(params, x):
        return jnp.mean((params["w"] * jnp.mean(x) - 1.0) ** 2)

    return {"w": jnp.full(size, 0.5, jnp.float32)}, loss, 8


def models(quick: bool) -> dict[str, tuple[dict, Any, int]]:
    if quick:
        return {
            "linear, 1 leaf, 1M": linear(1_000_000),
            "wide, 60 leaves, 0.4M": (*wide(20, 128), 128),
            "narrow, 100 leaves, 0.05M": (*narrow(50, 32), 32),
        }
    return {
        "linear, 1 leaf, 10M": linear(10_000_000),
        "wide, 300 leaves, 8M": (*wide(100, 256), 256),
        "narrow, 400 leaves, 0.2M": (*narrow(200, 32), 32),
    }


class _Compiled:
    """A jitted step built now: its build time, temporary memory, and a runner for interleaved."""

    def __init__(self, jitted: Any, params: Any, state: Any, batch: Any, metrics: bool):
        start = time.perf_counter()
        compiled = jitted.lower(params, state, batch).compile()
        self.build_s = time.perf_counter() - start
        analysis = compiled.memory_analysis()
        self.temp_mb = getattr(analysis, "temp_size_in_bytes", float("nan")) / 1e6
        # Run what users call, the jitted function (its fast C++ dispatch path; it reuses the
        # executable just built), not the Compiled object, whose Python call costs per buffer.
        self.step, self.batch, self.metrics = jitted, batch, metrics
        self.params, self.state = jax.tree.map(jnp.copy, (params, state))
        self.run(1)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            out = self.step(self.params, self.state, self.batch)
            self.params, self.state = out[0], out[1]
        jax.block_until_ready((self.params, self.state))


class _TrainerSteps:
    """``Trainer.step(batch)`` as a user calls it, metrics and all."""

    def __init__(self, loss: Any, params: Any, batch: Any):
        start = time.perf_counter()
        self.trainer = gradtx.Trainer(loss, gradtx.adam(1e-3), params, progress=False)
        self.batch = batch
        self.run(1)  # the first step builds it
        self.build_s = time.perf_counter() - start
        self.temp_mb = float("nan")

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.trainer.step(self.batch)
        jax.block_until_ready(self.trainer.params)


def _optax_step(loss: Any) -> Any:
    opt = optax.adam(1e-3)

    def step(params, state, batch):
        value, grads = jax.value_and_grad(loss)(params, batch)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    return jax.jit(step, donate_argnums=(0, 1)), opt


def worker(name: str, gradtx_first: bool, quick: bool, rounds: int, steps: int) -> dict:
    """One build order in this process: medians and quotients for each of gradtx's calls."""
    params, loss, width = models(quick)[name]
    batch = jnp.asarray(np.random.default_rng(1).normal(size=(BATCH, width)), jnp.float32)
    optax_jit, opt = _optax_step(loss)
    learner = gradtx.adam(1e-3)

    def build_optax():
        return _Compiled(optax_jit, params, opt.init(params), batch, False)

    def build_gradtx():
        step = gradtx.make_train_step(loss, learner)
        return _Compiled(step, params, learner.init(params), batch, True)

    order = [("make_train_step", build_gradtx), ("optax", build_optax)]
    runners = dict((n, build()) for n, build in (order if gradtx_first else order[::-1]))
    runners["Trainer.step"] = _TrainerSteps(loss, params, batch)
    t = interleaved(runners, rounds, steps)
    return {
        call: {
            "ms": t.median(call) * 1e3,
            "ratio": t.ratio(call, "optax"),
            "build_s": runner.build_s,
            "temp_mb": runner.temp_mb,
        }
        for call, runner in runners.items()
    }


def _mb(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"  # Trainer.step runs make_train_step's


def table(quick: bool, rounds: int, steps: int) -> None:
    print(
        f"{'model':<28}{'call':<18}{'ms':>8}{'/optax':>8}{'(g 1st':>8}{'o 1st)':>8}"
        f"{'build/optax':>13}{'temp MB':>9}{'optax MB':>9}"
    )
    for name in models(quick):
        orders = []
        for gradtx_first in (True, False):
            command = [sys.executable, "-m", "benchmarks.bench_user_step", "--worker", name,
                       "--rounds", str(rounds), "--steps", str(steps)]  # fmt: skip
            command += ["--gradtx-first"] if gradtx_first else []
            command += ["--quick"] if quick else []
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            orders.append(json.loads(result.stdout.strip().splitlines()[-1]))
        base = orders[0]["optax"]
        for call in ("make_train_step", "Trainer.step"):
            ratios = [o[call]["ratio"] for o in orders]
            builds = [o[call]["build_s"] / o["optax"]["build_s"] for o in orders]
            print(
                f"{name:<28}{call:<18}{orders[0][call]['ms']:>8.2f}"
                f"{math.sqrt(ratios[0] * ratios[1]):>8.3f}{ratios[0]:>8.3f}{ratios[1]:>8.3f}"
                f"{math.sqrt(builds[0] * builds[1]):>13.3f}"
                f"{_mb(orders[0][call]['temp_mb']):>9}{_mb(base['temp_mb']):>9}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker")
    parser.add_argument("--gradtx-first", action="store_true")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    if args.worker:
        found = worker(args.worker, args.gradtx_first, args.quick, args.rounds, args.steps)
        print(json.dumps(found))
        return
    print(__doc__.split("\n\n")[0])
    table(args.quick, args.rounds, args.steps)


if __name__ == "__main__":
    main()
