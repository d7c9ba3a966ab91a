"""Time one jitted, buffer-donated Adam step (update plus apply): gradtx against optax.

Both libraries run in the same process, interleaved round by round so that
machine noise hits them alike; the figures are medians over rounds and the
ratio is gradtx time / optax time (below 1 means gradtx is faster).

    python benchmarks/bench_update.py [--rounds 15] [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradtx


def single_leaf(n: int = 10_000_000) -> dict[str, jax.Array]:
    return {"w": jnp.zeros(n, jnp.float32)}


def many_leaves() -> dict[str, jax.Array]:
    """300 leaves, about 8M parameters: 100 blocks of a square, a thin matrix and a bias."""
    tree = {}
    for i in range(100):
        tree[f"block{i:03d}/w"] = jnp.zeros((256, 256), jnp.float32)
        tree[f"block{i:03d}/proj"] = jnp.zeros((256, 56), jnp.float32)
        tree[f"block{i:03d}/b"] = jnp.zeros((256,), jnp.float32)
    return tree


def make_step(opt, apply_updates):
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


class Runner:
    """Holds one library's step, its live (donated) buffers, and its timings."""

    def __init__(self, opt, apply_updates, params, grads):
        self.step = make_step(opt, apply_updates)
        self.params = jax.tree.map(jnp.copy, params)
        self.state = opt.init(self.params)
        self.grads = grads
        self.params, self.state = self.step(self.params, self.state, grads)  # compile
        jax.block_until_ready(self.params)
        self.times: list[float] = []

    def round(self, steps: int) -> None:
        start = time.perf_counter()
        for _ in range(steps):
            self.params, self.state = self.step(self.params, self.state, self.grads)
        jax.block_until_ready((self.params, self.state))
        self.times.append((time.perf_counter() - start) / steps)


def bench(name: str, params, rounds: int, steps: int) -> tuple[str, int, float, float]:
    rng = np.random.default_rng(0)
    grads = jax.tree.map(
        lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32) * 1e-3, params
    )
    ours = Runner(gradtx.adam(1e-3), gradtx.apply_updates, params, grads)
    theirs = Runner(optax.adam(1e-3), optax.apply_updates, params, grads)
    for r in range(rounds):
        # Alternate who goes first so that neither always runs on a warmer cache.
        pair = (ours, theirs) if r % 2 == 0 else (theirs, ours)
        for runner in pair:
            runner.round(steps)
    size = sum(x.size for x in jax.tree.leaves(params))
    return name, size, statistics.median(ours.times), statistics.median(theirs.times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, optax {optax.__version__}, device {jax.devices()[0]}")
    print(f"{'case':<26}{'params':>12}{'gradtx ms':>12}{'optax ms':>12}{'gradtx/optax':>14}")
    cases = [("adam, 1 leaf of 10M", single_leaf()), ("adam, 300 leaves, 8M", many_leaves())]
    for name, params in cases:
        name, size, ours, theirs = bench(name, params, args.rounds, args.steps)
        ratio = ours / theirs
        print(f"{name:<26}{size:>12,}{ours * 1e3:>12.2f}{theirs * 1e3:>12.2f}{ratio:>14.3f}")


if __name__ == "__main__":
    main()
