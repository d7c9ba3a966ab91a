"""Side-by-side timing: runners take turns round by round, and medians are reported."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import gradtx


class JaxStep:
    """One library's jitted, donated ``(params, state, data) -> (params, state)`` step.

    ``data`` is the gradients, or, given ``loss``, a batch whose gradient
    ``jax.grad(loss)(params, batch)`` the step takes first (a whole training
    step). With ``fused``, the update is :func:`gradtx.fused_update`. With
    ``objective``, the update gets the extras a line search or Polyak's step reads:
    ``value=objective(params)``, ``grad`` (the gradients) and ``value_fn=objective``.
    """

    def __init__(
        self, opt: Any, apply_updates: Callable, params: Any, data: Any, fused: bool = False,
        loss: Callable | None = None, objective: Callable | None = None,
    ):  # fmt: skip
        def step(params, state, data):
            grads = data if loss is None else jax.grad(loss)(params, data)
            if fused:
                return gradtx.fused_update(opt, grads, state, params)
            extra = {}
            if objective is not None:
                extra = dict(value=objective(params), grad=grads, value_fn=objective)
            updates, state = opt.update(grads, state, params, **extra)
            return apply_updates(params, updates), state

        self.params = jax.tree.map(jnp.copy, params)
        # A copy of each leaf: optax.lbfgs's state holds one array twice, which donation refuses.
        self.state = jax.tree.map(jnp.copy, opt.init(self.params))
        self.data = data
        start = time.perf_counter()
        self.jitted = jax.jit(step, donate_argnums=(0, 1))
        lowered = self.jitted.lower(self.params, self.state, data)
        traced = time.perf_counter()
        self.compiled = lowered.compile()
        self.trace_s, self.compile_s = traced - start, time.perf_counter() - traced
        self.run(1)  # warm-up

    def run(self, steps: int) -> None:
        # The jitted function, as users call it (C++ dispatch; it reuses the executable built
        # above): the Compiled object's Python call costs about 1 us more per buffer.
        for _ in range(steps):
            self.params, self.state = self.jitted(self.params, self.state, self.data)
        jax.block_until_ready((self.params, self.state))


class TorchStep:
    """A torch.optim optimizer stepping a tensor per leaf of ``params`` with fixed gradients."""

    def __init__(self, make_opt: Callable, params: Any):
        import torch

        self.params = [torch.zeros(x.shape, requires_grad=True) for x in jax.tree.leaves(params)]
        for p in self.params:
            p.grad = torch.randn(p.shape) * 1e-3
        self.opt = make_opt(self.params)
        self.run(1)

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.opt.step()


class Timings(dict):
    """Seconds per step of each runner, one entry per round (rounds alternate the order)."""

    def median(self, name: str) -> float:
        return statistics.median(self[name])

    def ratio(self, a: str, b: str) -> float:
        """Median over rounds of a's time over b's in the same round.

        Rounds of a pair run back to back, so slow drifts of a shared machine
        cancel in each quotient before the median is taken.
        """
        return statistics.median(x / y for x, y in zip(self[a], self[b], strict=True))


def interleaved(runners: dict[str, Any], rounds: int, steps: int) -> Timings:
    """Time every runner for ``rounds`` rounds of ``steps`` steps, in alternating order."""
    times = Timings({name: [] for name in runners})
    order = list(runners)
    for r in range(rounds):
        for name in order if r % 2 == 0 else reversed(order):
            start = time.perf_counter()
            runners[name].run(steps)
            times[name].append((time.perf_counter() - start) / steps)
    return times
