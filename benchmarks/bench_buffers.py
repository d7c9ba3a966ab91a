"""What a jitted step pays per buffer it takes and returns, whatever it computes.

A training step over a tree passes every parameter and every moment as a
buffer of its own: 1,201 in and out for Adam on a 400-leaf model. This table
times a donated jitted call that computes nothing (each output is its input)
for growing numbers of 4 KB buffers, against one buffer holding them all, and
then splits the narrow model's step into that floor, the model's gradient and
the optimizer.

    python -m benchmarks.bench_buffers [--quick]
"""

from __future__ import annotations

import argparse
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import gradtx
from benchmarks.bench_train import narrow
from benchmarks.timing import interleaved


class _Call:
    """A jitted, donated ``(*buffers) -> (*buffers)`` call, for :func:`interleaved`."""

    def __init__(self, fn: Any, args: tuple):
        self.fn = jax.jit(fn, donate_argnums=tuple(range(len(args))))
        self.args = tuple(jnp.copy(x) for x in args)
        self.run(1)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.args = self.fn(*self.args)
        jax.block_until_ready(self.args)


def _pass_through(*buffers: Any) -> tuple:
    return buffers


def floor_table(counts: list[int], rounds: int, steps: int) -> None:
    print(f"{'buffers in and out':>20}{'ms':>9}{'us/buffer':>11}{'one buffer ms':>15}")
    for count in counts:
        leaves = tuple(jnp.full((1024,), 1.0, jnp.float32) for _ in range(count))
        runners = {
            "leaves": _Call(_pass_through, leaves),
            "one": _Call(_pass_through, (jnp.full((1024 * count,), 1.0, jnp.float32),)),
        }
        t = interleaved(runners, rounds, steps)
        ms = t.median("leaves") * 1e3
        print(f"{count:>20}{ms:>9.3f}{ms * 1e3 / count:>11.2f}{t.median('one') * 1e3:>15.3f}")


class _Step:
    """A jitted, donated ``(params, state, batch)`` step with its own copies of the inputs."""

    def __init__(self, step: Any, params: Any, state: Any, batch: Any):
        self.step, self.batch = step, batch
        self.params, self.state = jax.tree.map(jnp.copy, (params, state))
        self.run(1)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            out = self.step(self.params, self.state, self.batch)
            self.params, self.state = out[0], out[1]
        jax.block_until_ready((self.params, self.state))


def narrow_split(layers: int, rounds: int, steps: int) -> None:
    """The narrow model's step: the buffer floor, the gradient alone, optax's and gradtx's step."""
    params, loss = narrow(layers, 32)
    batch = jnp.asarray(np.random.default_rng(1).normal(size=(16, 32)), jnp.float32)
    adam, learner = optax.adam(1e-3), gradtx.adam(1e-3)

    def nothing(params, state, batch):
        return params, state

    def gradient_only(params, state, batch):  # the same buffers in and out, and the gradient
        grads = jax.grad(loss)(params, batch)
        return jax.tree.map(lambda p, g: p - 0.0 * g, params, grads), state

    def optax_step(params, state, batch):
        grads = jax.grad(loss)(params, batch)
        updates, state = adam.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    donated = dict(donate_argnums=(0, 1))
    state = adam.init(params)
    runners = {
        "buffers only": _Step(jax.jit(nothing, **donated), params, state, batch),
        "gradient only": _Step(jax.jit(gradient_only, **donated), params, state, batch),
        "optax step": _Step(jax.jit(optax_step, **donated), params, state, batch),
        "make_train_step": _Step(
            gradtx.make_train_step(loss, learner), params, learner.init(params), batch
        ),
    }
    t = interleaved(runners, rounds, steps)
    count = len(jax.tree.leaves((params, state)))
    print(f"\nnarrow, {len(jax.tree.leaves(params))} leaves, Adam: {count} buffers in and out")
    for name in runners:
        ms = t.median(name) * 1e3
        print(f"{name:<18}{ms:>9.3f} ms{t.ratio(name, 'optax step'):>8.3f}x optax")


def table(quick: bool, rounds: int, steps: int) -> None:
    floor_table([1, 100, 400, 1200] if quick else [1, 100, 400, 1200, 2400], rounds, steps)
    narrow_split(50 if quick else 200, rounds, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    table(args.quick, 5 if args.quick else 11, 5 if args.quick else 10)


if __name__ == "__main__":
    main()
