"""Smith's learning-rate range test, as in MXNet's tutorial, run as one compiled ``lax.scan``."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks
from gradtx.core import GradientTransformation, apply_updates, extras_filter
from gradtx.training.step import leading_size, objective_on, step_extras


@dataclass(frozen=True)
class LRFinderResult:
    """What a range test saw.

    Attributes:
      learning_rates: the rate used at each recorded step, shape ``(n,)``.
      losses: the loss at each step before its update; ``(n,)`` for one run,
        ``(num_seeds, n)`` for several, NaN after a run stopped.
      smoothed_losses: the running mean the stopping rule watched, same shape.
      suggestion: the rate where the smoothed loss falls fastest on the
        log-log plot (the median over seeds); None if a run stopped before two
        finite losses.
      suggestions: each seed's suggestion, or None for a single run.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    smoothed_losses: np.ndarray
    suggestion: float | None
    suggestions: np.ndarray | None = None

    @property
    def spread(self) -> tuple[float, float] | None:
        """The lowest and highest per-seed suggestion (None for a single run)."""
        if self.suggestions is None:
            return None
        return float(np.nanmin(self.suggestions)), float(np.nanmax(self.suggestions))

    def plot(self, ax: Any = None) -> Any:
        """Loss against learning rate on log axes, suggestion marked; returns the axes."""
        import matplotlib.pyplot as plt

        ax = plt.gca() if ax is None else ax
        raw, smooth = np.atleast_2d(self.losses), np.atleast_2d(self.smoothed_losses)
        for i, (r, s) in enumerate(zip(raw, smooth, strict=True)):
            label = "" if len(raw) > 1 else "loss"
            ax.plot(self.learning_rates, r, color="0.75", lw=0.8, label=label)
            ax.plot(
                self.learning_rates, s, color=f"C{i % 10}", label=f"smoothed{label and ' loss'}"
            )
        if self.suggestion is not None:
            ax.axvline(
                self.suggestion, color="k", ls="--", lw=1, label=f"suggestion {self.suggestion:.3g}"
            )
        ax.set_xscale("log")
        if np.nanmin(raw) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("loss")
        ax.legend()
        return ax


def steepest_descent(learning_rates: np.ndarray, smoothed: np.ndarray) -> float | None:
    """The rate where the smoothed loss falls fastest on the log-log plot, before its minimum.

    At each recorded rate up to the lowest smoothed loss, the slope of
    :math:`\\log m` against :math:`\\log \\eta` is taken across a quarter of a
    decade of rates on either side (narrower when the descent is short), which
    looks through minibatch noise; the suggestion is the rate of the most negative slope.
    Losses that are not all positive are used as they are, not logged. None if
    fewer than two finite losses were recorded or the loss never went down.
    """
    finite = np.isfinite(smoothed)
    n = len(smoothed) if finite.all() else int(np.argmin(finite))
    if n < 2:
        return None
    stop = int(np.argmin(smoothed[:n])) + 1  # the descent ends at the lowest loss
    if stop < 2:
        return None
    curve = np.log(smoothed[:stop]) if (smoothed[:stop] > 0).all() else smoothed[:stop]
    x = np.log(learning_rates[:stop])
    per_step = (np.log(learning_rates[n - 1]) - np.log(learning_rates[0])) / (n - 1)
    # Interior points only: a window ending at the minimum would always look steep.
    k = max(1, min(round(np.log(10**0.25) / per_step), (stop - 1) // 2))
    i = np.arange(k, stop - k) if stop > 2 else np.arange(1)
    hi, lo = np.minimum(i + k, stop - 1), np.maximum(i - k, 0)
    slope = (curve[hi] - curve[lo]) / (x[hi] - x[lo])
    return float(learning_rates[i[int(np.argmin(slope))]])


def _scan(loss_fn, factory, params, batches, order, rates, smoothing, min_steps, stop_factor):
    """One range test; returns each step's loss, smoothed loss and whether it counts."""
    grad_fn = jax.value_and_grad(loss_fn)
    opt = factory(rates[0])
    keep = extras_filter(opt.update)

    def body(carry, xs):
        params, state, mean, first, stopped = carry
        i, rate, index = xs
        batch = jax.tree.map(lambda x: x[index], batches)
        size = leading_size(batch, "find_learning_rate")
        loss, grads = grad_fn(params, batch)
        loss = loss.astype(jnp.float32)
        first = jnp.where(i == 0, loss, first)
        mean = jnp.where(i == 0, loss, (1 - smoothing) * loss + smoothing * mean)
        counts = ~stopped & jnp.isfinite(loss)
        diverged = (mean > stop_factor * first) & (i + 1 >= min_steps)
        stopped = stopped | ~jnp.isfinite(mean) | diverged
        objective = objective_on(loss_fn, batch, has_aux=False)
        updates, new_state = factory(rate).update(
            grads, state, params, **keep(step_extras(loss, size, grads, objective))
        )
        new_params = apply_updates(params, updates)
        # A stopped run keeps its last params: masking, not leaving the scan, ends it.
        params, state = jax.tree.map(
            lambda new, old: jnp.where(stopped, old, new), (new_params, new_state), (params, state)
        )
        return (params, state, mean, first, stopped), (loss, mean, counts)

    zero = jnp.zeros((), jnp.float32)
    carry = (params, opt.init(params), zero, zero, jnp.zeros((), bool))
    steps = jnp.arange(rates.shape[0])
    _, (losses, smoothed, counts) = jax.lax.scan(body, carry, (steps, rates, order))
    return losses, smoothed, counts


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _range_test(loss_fn, factory, seeds, params, batches, orders, rates, *hyper):
    run = functools.partial(_scan, loss_fn, factory)
    if seeds:
        return jax.vmap(run, in_axes=(0, None, 0, None, None, None, None))(
            params, batches, orders, rates, *hyper
        )
    return run(params, batches, orders, rates, *hyper)


def _stack(batches: Iterable[Any], num_steps: int) -> tuple[Any, int]:
    if not isinstance(batches, Iterable):
        raise TypeError(
            f"find_learning_rate: batches must be an iterable of batches (a list, a generator, "
            f"a data loader), got {type(batches).__name__}"
        )
    taken = list(itertools.islice(iter(batches), num_steps))
    if not taken:
        raise ValueError("find_learning_rate: batches yielded no batch")
    structure = jax.tree.structure(taken[0])
    shapes = [np.shape(x) for x in jax.tree.leaves(taken[0])]
    for i, batch in enumerate(taken[1:], start=1):
        if (
            jax.tree.structure(batch) != structure
            or [np.shape(x) for x in jax.tree.leaves(batch)] != shapes
        ):
            raise ValueError(
                f"find_learning_rate: batch {i} differs from batch 0 in structure or shapes "
                f"({[np.shape(x) for x in jax.tree.leaves(batch)]} vs {shapes}); the range "
                f"test stacks its batches, so they must all match"
            )
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *taken), len(taken)


def find_learning_rate(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    optimizer_factory: Callable[[jax.Array], GradientTransformation],
    batches: Iterable[Any],
    start_lr: float = 1e-6,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smoothing: float = 0.3,
    min_steps: int = 20,
    stop_factor: float = 2.0,
    *,
    num_seeds: int | None = None,
    key: jax.Array | None = None,
) -> LRFinderResult:
    """Smith's range test: train with a geometrically growing rate and watch the loss.

    Step :math:`i` (from 0) uses :math:`\\eta_i = \\eta_0 (\\eta_1/\\eta_0)^{i/(N-1)}`
    and records the loss :math:`\\ell_i` before its update. The stopping rule
    watches :math:`m_0 = \\ell_0`, :math:`m_i = (1 - s)\\,\\ell_i + s\\,m_{i-1}`
    and ends the run after step :math:`i` once :math:`m_i > c\\,\\ell_0` and
    :math:`i + 1 \\ge` ``min_steps`` (or at the first non-finite loss). The
    suggestion is the recorded rate, before the smoothed loss's minimum, where
    :math:`d\\log m/d\\log\\eta` is most negative (taken over a quarter of a
    decade each side): the steepest descent of the smoothed loss on the
    log-log plot (:func:`steepest_descent`). Taking the slope in log loss makes
    the rule blind to the loss's scale, so an early drop of a large loss does
    not outweigh a faster relative drop later; on a quadratic of curvature
    :math:`c` it lands near :math:`1/c`, the rate that would solve it in one
    step.

    All ``num_steps`` steps are one compiled ``lax.scan``; a stopped run is
    masked, not left. Nothing of the caller's is modified: the params are
    copied into the scan and the optimizer state lives only inside it.

    Args:
      loss_fn: ``loss_fn(params, batch) -> scalar loss``.
      params: the starting params, or a function ``key -> params`` (then each
        seed starts from its own initialisation).
      optimizer_factory: ``learning_rate -> transform``, e.g.
        ``lambda lr: gradtx.sgd(lr, momentum=0.9)``; it is called with a traced
        scalar, and its state must not depend on the rate (true of gradtx and
        optax learners).
      batches: an iterable of batches of equal shapes; the first ``num_steps``
        are stacked on the device, and fewer are cycled through.
      start_lr: :math:`\\eta_0 > 0`.
      end_lr: :math:`\\eta_1 > \\eta_0`, the rate of the last step.
      num_steps: :math:`N \\ge 2`, the most steps the test takes.
      smoothing: :math:`s` in [0, 1), the weight of the previous mean.
      min_steps: steps taken before the divergence rule may stop the run.
      stop_factor: :math:`c > 1`.
      num_seeds: run this many tests in one ``vmap``: seed 0 sees the batches
        in the given order, the others in random orders (and from their own
        initialisation when ``params`` is a function).
      key: the PRNG key for orders and initialisations (default ``key(0)``).

    Raises:
      ValueError: for bad arguments, no batches, or a loss that is not finite
        at the first step (before any update: the model or data is at fault,
        not the rate).
    """
    who = "find_learning_rate"
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        checks.check_interval(who, name, value, checks.POSITIVE)
    if not start_lr < end_lr:
        raise ValueError(f"{who}: start_lr must be below end_lr, got {start_lr} >= {end_lr}")
    num_steps = checks.check_length(who, "num_steps", num_steps, at_least=2, wording="integer")
    min_steps = checks.check_length(who, "min_steps", min_steps, allow_zero=True, wording="integer")
    checks.check_interval(who, "smoothing", smoothing, checks.DECAY)
    if not stop_factor > 1:
        raise ValueError(f"{who}: stop_factor must be in (1, inf), got {stop_factor}")
    if num_seeds is not None:
        num_seeds = checks.check_length(
            who, "num_seeds", num_seeds, wording="positive", or_none=True
        )
    if not callable(optimizer_factory) or hasattr(optimizer_factory, "update"):
        raise TypeError(
            f"{who}: optimizer_factory must be a function learning_rate -> transform, e.g. "
            f"lambda lr: gradtx.sgd(lr); got {type(optimizer_factory).__name__}"
        )

    stacked, available = _stack(batches, num_steps)
    order = np.arange(num_steps, dtype=np.int32) % available
    rates = start_lr * (end_lr / start_lr) ** (np.arange(num_steps) / (num_steps - 1))
    rates = rates.astype(np.float32)
    hyper = (np.float32(smoothing), np.int32(min_steps), np.float32(stop_factor))
    if num_seeds is None:
        start = params(jax.random.key(0) if key is None else key) if callable(params) else params
        losses, smoothed, counts = _range_test(
            loss_fn, optimizer_factory, False, start, stacked, order, rates, *hyper
        )
    else:
        keys = jax.random.split(jax.random.key(0) if key is None else key, num_seeds)
        starts = [params(k) if callable(params) else params for k in keys]
        start = jax.tree.map(lambda *xs: jnp.stack(xs), *starts)
        orders = np.stack(
            [order] + [np.asarray(jax.random.permutation(k, order)) for k in keys[1:]]
        )
        losses, smoothed, counts = _range_test(
            loss_fn, optimizer_factory, True, start, stacked, orders, rates, *hyper
        )
    losses, smoothed, counts = (np.asarray(x) for x in (losses, smoothed, counts))
    losses, smoothed, counts = np.atleast_2d(losses), np.atleast_2d(smoothed), np.atleast_2d(counts)
    if not counts[:, 0].all():
        seed = int(np.argmin(counts[:, 0]))
        where = f" (seed {seed})" if num_seeds is not None else ""
        raise ValueError(
            f"{who}: the loss is {losses[seed, 0]} at the first step{where}, before any update, "
            f"so no learning rate is to blame; check loss_fn, the params and the data"
        )
    losses = np.where(counts, losses, np.nan)
    smoothed = np.where(counts, smoothed, np.nan)
    length = int(counts.sum(axis=1).max())
    rates = rates[:length].astype(np.float64)
    losses, smoothed = losses[:, :length], smoothed[:, :length]
    suggestions = np.array(
        [steepest_descent(rates, s) or np.nan for s in smoothed], dtype=np.float64
    )
    if num_seeds is None:
        suggestion = None if np.isnan(suggestions[0]) else float(suggestions[0])
        return LRFinderResult(rates, losses[0], smoothed[0], suggestion)
    finite = suggestions[np.isfinite(suggestions)]
    # The median of an even count is a mean of two rates; take it in log space.
    suggestion = float(np.exp(np.median(np.log(finite)))) if finite.size else None
    return LRFinderResult(rates, losses, smoothed, suggestion, suggestions)
