"""gradtx's benchmark suite: step time against optax, torch's fused kernels and the roofline.

    python -m benchmarks            # the full table (about 25 minutes)
    python -m benchmarks --quick    # smaller arrays and trees, about 75 s

Every figure is a median over rounds in which the contenders take turns, so
machine noise hits them alike; read ratios, not single timings. Nothing here is
asserted: the test suite never times anything.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradtx
from benchmarks import bench_buffers, bench_user_step
from benchmarks.bench_train import narrow, train_table, wide
from benchmarks.hlo import memory_traffic
from benchmarks.timing import JaxStep, TorchStep, interleaved

HAVE_TORCH = importlib.util.find_spec("torch") is not None


@dataclass(frozen=True)
class Learner:
    ours: Callable[[], Any]
    theirs: Callable[[], Any]
    torch: Callable[[list], Any] | None
    ideal_bytes: int  # bytes per float32 parameter of a single pass: reads plus writes
    packs: bool = True  # whether it runs on gradtx.pack's buffers (a per-leaf mask does not)

    @property
    def working_set(self) -> int:
        """Bytes per parameter of the arrays a single pass touches.

        The gradient is read once and every other array (params, each moment) read and
        written once, so the arrays' bytes are half of ``ideal_bytes`` plus the gradient's.
        """
        return (self.ideal_bytes + 4) // 2


def _torch(name: str, **kwargs: Any) -> Callable[[list], Any]:
    def make(params: list) -> Any:
        import torch

        return getattr(torch.optim, name)(params, **kwargs)

    return make


LEARNERS = {
    # Adam reads params, grads and two moments and writes params and two moments.
    "adam": Learner(
        lambda: gradtx.adam(1e-3),
        lambda: optax.adam(1e-3),
        _torch("Adam", lr=1e-3, fused=True),
        28,
    ),
    "adamw": Learner(
        lambda: gradtx.adamw(1e-3, weight_decay=1e-2),
        lambda: optax.adamw(1e-3, weight_decay=1e-2),
        _torch("AdamW", lr=1e-3, weight_decay=1e-2, fused=True),
        28,
    ),
    "sgd_momentum": Learner(
        lambda: gradtx.sgd(1e-3, momentum=0.9),
        lambda: optax.sgd(1e-3, momentum=0.9),
        _torch("SGD", lr=1e-3, momentum=0.9, fused=True),
        20,
    ),
    "rmsprop": Learner(
        lambda: gradtx.rmsprop(1e-3),
        lambda: optax.rmsprop(1e-3),
        _torch("RMSprop", lr=1e-3, alpha=0.9, foreach=True),
        20,
    ),
    # torch's Adagrad has a fused CPU kernel (with eps outside the root: the same cost).
    "adagrad": Learner(
        lambda: gradtx.adagrad(1e-3),
        lambda: optax.adagrad(1e-3),
        _torch("Adagrad", lr=1e-3, fused=True),
        20,
    ),
    "lion": Learner(
        lambda: gradtx.lion(1e-4, weight_decay=1e-2),
        lambda: optax.lion(1e-4, weight_decay=1e-2),
        None,
        20,
    ),
    "nadam": Learner(
        lambda: gradtx.nadam(1e-3), lambda: optax.nadam(1e-3), _torch("NAdam", lr=1e-3), 28
    ),
    # AMSGrad keeps a third moment, the running maximum: 20 bytes read, 16 written.
    "amsgrad": Learner(
        lambda: gradtx.amsgrad(1e-3),
        lambda: optax.amsgrad(1e-3),
        _torch("Adam", lr=1e-3, amsgrad=True, fused=True),
        36,
    ),
    "adamax": Learner(
        lambda: gradtx.adamax(1e-3), lambda: optax.adamax(1e-3), _torch("Adamax", lr=1e-3), 28
    ),
    "rmsprop_centered": Learner(
        lambda: gradtx.rmsprop(1e-3, centered=True),
        lambda: optax.rmsprop(1e-3, centered=True),
        _torch("RMSprop", lr=1e-3, alpha=0.9, centered=True, foreach=True),
        28,
    ),
    "rmsprop_momentum": Learner(
        lambda: gradtx.rmsprop(1e-3, momentum=0.9),
        lambda: optax.rmsprop(1e-3, momentum=0.9),
        _torch("RMSprop", lr=1e-3, alpha=0.9, momentum=0.9, foreach=True),
        28,
    ),
    # Weight decay on the matrices only: the mask splits the kernel calls by kind.
    "adamw_masked": Learner(
        lambda: gradtx.adamw(1e-3, weight_decay=1e-2, mask=_matrices),
        lambda: optax.adamw(1e-3, weight_decay=1e-2, mask=_matrices),
        None,
        28,
        packs=False,
    ),
    # The catalogue's elementwise learners with kernels (issue 20).
    "adabelief": Learner(lambda: gradtx.adabelief(1e-3), lambda: optax.adabelief(1e-3), None, 28),
    "yogi": Learner(lambda: gradtx.yogi(1e-3), lambda: optax.yogi(1e-3), None, 28),
    # torch's RAdam adds eps to the uncorrected root: another rule, the same traffic.
    "radam": Learner(
        lambda: gradtx.radam(1e-3), lambda: optax.radam(1e-3), _torch("RAdam", lr=1e-3), 28
    ),
    "nadamw": Learner(
        lambda: gradtx.nadamw(1e-3, weight_decay=1e-2),
        lambda: optax.nadamw(1e-3, weight_decay=1e-2),
        _torch("NAdam", lr=1e-3, weight_decay=1e-2, decoupled_weight_decay=True),
        28,
    ),
    "adamaxw": Learner(
        lambda: gradtx.adamaxw(1e-3, weight_decay=1e-2),
        lambda: optax.adamaxw(1e-3, weight_decay=1e-2),
        None,
        28,
    ),
    # No moment: params and grads read, params written.
    "sign_sgd": Learner(lambda: gradtx.sign_sgd(1e-4), lambda: optax.sign_sgd(1e-4), None, 12),
    "signum": Learner(lambda: gradtx.signum(1e-4), lambda: optax.signum(1e-4), None, 20),
    # Four moments (three averages and the last gradient): 24 bytes read, 20 written.
    "adan": Learner(lambda: gradtx.adan(1e-3), lambda: optax.adan(1e-3), None, 44),
    # Step sizes and last steps: 16 bytes read, 12 written.
    "rprop": Learner(lambda: gradtx.rprop(1e-3), lambda: optax.rprop(1e-3), None, 28),
    # The last gradient: 12 bytes read, 8 written.
    "optimistic_gd": Learner(
        lambda: gradtx.optimistic_gradient_descent(1e-3),
        lambda: optax.optimistic_gradient_descent(1e-3),
        None,
        20,
    ),
    # Adam's two moments and its last direction: 20 bytes read, 16 written.
    "optimistic_adam_v2": Learner(
        lambda: gradtx.optimistic_adam_v2(1e-3), lambda: optax.optimistic_adam_v2(1e-3), None, 36
    ),
    # Moments in bfloat16: 4 + 4 + 2 + 2 read, 4 + 2 + 2 written.
    "adam_bf16_state": Learner(
        lambda: gradtx.adam(1e-3, state_dtype=jnp.bfloat16),
        lambda: optax.adam(1e-3),
        None,
        20,
    ),
}


def _matrices(params: Any) -> Any:
    """Decay the weights, not the biases (the single leaf is a weight)."""
    return jax.tree.map(lambda x: x.size > 1024, params)


def single_leaf(n: int) -> dict[str, jax.Array]:
    return {"w": jnp.zeros(n, jnp.float32)}


def layered_tree(blocks: int, width: int) -> dict[str, jax.Array]:
    """``3 * blocks`` leaves: a square matrix, a thin matrix and a bias per block."""
    tree = {}
    for i in range(blocks):
        tree[f"block{i:03d}/w"] = jnp.zeros((width, width), jnp.float32)
        tree[f"block{i:03d}/proj"] = jnp.zeros((width, width * 7 // 32), jnp.float32)
        tree[f"block{i:03d}/b"] = jnp.zeros((width,), jnp.float32)
    return tree


def small_leaves(count: int) -> dict[str, jax.Array]:
    return {f"p{i:05d}": jnp.zeros(16, jnp.float32) for i in range(count)}


def gradients_like(params: Any) -> Any:
    """Normal gradients of standard deviation 1e-3 shaped like ``params``, seed 0."""
    rng = np.random.default_rng(0)
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 1e-3, x.dtype), params)


class Triad:
    """A single-pass streaming kernel, ``a = a + s * b``: measures usable memory bandwidth.

    It reads two arrays and writes one (12 bytes per element), in place. Its two arrays
    of ``n`` float32 elements take ``8 * n`` bytes: the bandwidth it measures is that of
    a working set of that size (here the last-level cache serves 80 MB faster than 160).
    """

    def __init__(self, n: int):
        self.step = jax.jit(lambda a, b: (a + 0.5 * b, b), donate_argnums=(0, 1))
        self.args = (jnp.zeros(n), jnp.ones(n))
        self.bytes = 12 * n
        self.run(1)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.args = self.step(*self.args)
        jax.block_until_ready(self.args)


def _row(cells: list[Any], widths: list[int]) -> str:
    return "".join(
        (f"{c:<{w}}" if i == 0 else f"{c:>{w}}")
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


# The learners --quick times: Adam, a three-moment kernel, momentum after the rate, a mask.
QUICK = ("adam", "amsgrad", "rmsprop_momentum", "adamw_masked")


def step_table(
    cases: dict[str, Any], rounds: int, steps: int, learners: tuple[str, ...] = tuple(LEARNERS)
) -> None:
    """Each learner's step, plain (update + apply) and fused, against optax, torch, the roofline.

    All runners of a case and learner take turns in the same rounds.
    """
    widths = [16, 16, 10, 9, 10, 10, 9, 9, 9, 9, 9, 8, 9]
    header = ["case", "learner", "path", "ms", "optax ms", "torch ms", "roof ms", "/optax",
              "/torch", "/roof", "/triad", "kernels", "B/param"]  # fmt: skip
    print(_row(header, widths))
    floors = {}
    for case, params in cases.items():
        size = sum(x.size for x in jax.tree.leaves(params))
        leaves = len(jax.tree.leaves(params))
        grads = gradients_like(params)
        floors[case] = _dispatch_floor(params, grads, rounds, steps)
        for name in learners:
            learner = LEARNERS[name]
            ours = learner.ours()
            paths = {"plain": JaxStep(ours, gradtx.apply_updates, params, grads)}
            if gradtx.is_fused(ours):
                paths["fused"] = JaxStep(ours, gradtx.apply_updates, params, grads, fused=True)
            if leaves > 1 and learner.packs:  # params, grads kept by gradtx.pack: one buffer
                packed = gradtx.pack(params), gradtx.pack(grads)
                paths["packed"] = JaxStep(ours, gradtx.apply_updates, *packed)
                if gradtx.is_fused(ours):
                    paths["pk fused"] = JaxStep(ours, gradtx.apply_updates, *packed, fused=True)
            runners: dict[str, Any] = {
                **paths,
                "optax": JaxStep(learner.theirs(), optax.apply_updates, params, grads),
                # The roofline's bandwidth over the learner's own working set, and the
                # case's triad (two arrays of the case's size) as a second reference.
                "roof": Triad(size * learner.working_set // 8),
                "triad": Triad(size),
            }
            if HAVE_TORCH and learner.torch is not None:
                runners["torch"] = TorchStep(learner.torch, params)
            t = interleaved(runners, rounds, steps)
            roof, triad = (
                learner.ideal_bytes * size * t.median(kind) / runners[kind].bytes
                for kind in ("roof", "triad")
            )
            torch_t = t.median("torch") if "torch" in t else None
            for path, runner in paths.items():
                kernels, per_param = memory_traffic(runner.compiled.as_text(), size)
                cells = [
                    case,
                    name,
                    path,
                    _fmt(t.median(path) * 1e3),
                    _fmt(t.median("optax") * 1e3),
                    _fmt(torch_t and torch_t * 1e3),
                    _fmt(roof * 1e3),
                    _fmt(t.ratio(path, "optax"), ".3f"),
                    _fmt(torch_t and t.ratio(path, "torch"), ".3f"),
                    _fmt(t.median(path) / roof, ".3f"),
                    _fmt(t.median(path) / triad, ".3f"),
                    _fmt(kernels / (leaves if path == "plain" else 1), ".1f"),
                    _fmt(per_param, ".1f"),
                ]
                print(_row(cells, widths), flush=True)
    for case, (floor, buffers) in floors.items():
        print(
            f"{case}: a jitted step that only takes and returns Adam's {buffers} buffers "
            f"costs {floor * 1e3:.2f} ms (JAX's dispatch, in every row)"
        )


def _dispatch_floor(params: Any, grads: Any, rounds: int, steps: int) -> tuple[float, str]:
    """Seconds of a step with Adam's inputs and outputs that computes nothing."""
    adam = optax.adam(1e-3)
    nothing = optax.GradientTransformation(adam.init, lambda updates, state, _: (updates, state))
    runner = JaxStep(nothing, lambda params, updates: params, params, grads)
    state_leaves = len(jax.tree.leaves(runner.state))
    leaves = len(jax.tree.leaves(params))
    buffers = f"{2 * leaves + state_leaves} in, {leaves + state_leaves} out"
    return interleaved({"floor": runner}, rounds, steps).median("floor"), buffers


def compile_table(counts: list[int], rounds: int, steps: int) -> None:
    """chain(clip_by_global_norm, adamw) on many 16-float leaves: per-leaf vs packed."""
    widths = [26, 10, 12, 10, 12, 12]
    print(
        _row(
            [
                "clip+adamw, 16-float leaves",
                "leaves",
                "trace+comp s",
                "step ms",
                "compile/optax",
                "step/optax",
            ],
            widths,
        )
    )
    for count in counts:
        params = small_leaves(count)
        grads = gradients_like(params)
        runners = {
            "optax": JaxStep(
                optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)),
                optax.apply_updates,
                params,
                grads,
            ),
            "gradtx per-leaf": JaxStep(
                gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-3)),
                gradtx.apply_updates,
                params,
                grads,
            ),
            "gradtx packed": JaxStep(
                gradtx.packed(gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adamw(1e-3))),
                gradtx.apply_updates,
                params,
                grads,
            ),
        }
        t = interleaved(runners, rounds, steps)
        base = runners["optax"]
        for name, runner in runners.items():
            build = runner.trace_s + runner.compile_s
            print(
                _row(
                    [
                        name,
                        count,
                        _fmt(build),
                        _fmt(t.median(name) * 1e3),
                        _fmt(build / (base.trace_s + base.compile_s), ".3f"),
                        _fmt(t.ratio(name, "optax"), ".3f"),
                    ],
                    widths,
                ),
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, about 75 s")
    args = parser.parse_args()
    torch_note = "torch not importable" if not HAVE_TORCH else "torch fused kernels"
    print(f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0]}, {torch_note}")
    if args.quick:
        cases = {"1 leaf, 2M": single_leaf(2_000_000), "300 leaves, 2M": layered_tree(100, 128)}
        rounds, steps, counts = 5, 5, [200]
        models = {"wide, 60 leaves, 0.4M": (*wide(20, 128), 128)}
    else:
        cases = {"1 leaf, 10M": single_leaf(10_000_000), "300 leaves, 8M": layered_tree(100, 256)}
        rounds, steps, counts = 11, 10, [1000, 3000]
        models = {
            "wide, 300 leaves, 8M": (*wide(100, 256), 256),
            "narrow, 400 leaves, 0.2M": (*narrow(200, 32), 32),
        }
    print(
        "\nOne jitted, donated step (update + apply). plain: learner.update + apply_updates; "
        "fused: gradtx.fused_update; packed: params, grads and state kept by gradtx.pack "
        "(trees only);\npk fused: both. kernels: per leaf (plain) or per step (the others); "
        "B/param: bytes read and written per parameter, from the HLO."
    )
    step_table(cases, rounds, steps, QUICK if args.quick else tuple(LEARNERS))
    print()
    compile_table(counts, rounds, steps)
    print("\nA whole training step (gradient of the loss, then Adam), batch of 16.")
    train_table(models, rounds, steps)
    print("\nWhat users call, Adam, batch of 16, each build order in a fresh process:")
    bench_user_step.table(args.quick, rounds, steps)
    print("\nWhat a jitted step pays per buffer in and out, computing nothing:")
    bench_buffers.table(args.quick, rounds, steps)
    print("\nCompressed gradient exchange (compression=), bytes per step from the HLO:")
    sys.stdout.flush()
    # It needs 8 host devices, which are fixed when JAX starts: its own process.
    subprocess.run(
        [sys.executable, str(Path(__file__).with_name("bench_compression.py"))],
        env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
        check=True,
    )


if __name__ == "__main__":
    main()
