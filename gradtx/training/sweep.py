"""``sweep``: a hyperparameter grid evaluated as one vmapped program."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks


@dataclass(frozen=True)
class SweepResult:
    """A grid's metrics and its best point.

    Attributes:
      grid: each hyperparameter's values, in the order given.
      metrics: what ``train_fn`` returned, each leaf with leading axes of the
        grid's shape ``tuple(len(v) for v in grid.values())``.
      objective: the metric that ranked the points.
      best: the best point's hyperparameters (lowest objective, or highest
        with ``maximize``; non-finite values never win), None if none is finite.
      best_index: its index into the grid's axes.
    """

    grid: dict[str, np.ndarray]
    metrics: Any
    objective: np.ndarray
    best: dict[str, Any] | None
    best_index: tuple[int, ...] | None

    def table(self) -> str:
        """One line per grid point: its hyperparameters and every scalar metric."""
        names = list(self.grid)
        scalars = {
            k: np.asarray(v)
            for k, v in (self.metrics.items() if isinstance(self.metrics, dict) else [])
            if np.ndim(v) == len(names)
        } or {"objective": self.objective}
        header = names + list(scalars)
        lines = ["  ".join(f"{h:>12}" for h in header)]
        for index in itertools.product(*(range(len(v)) for v in self.grid.values())):
            row = [self.grid[n][i] for n, i in zip(names, index, strict=True)]
            row += [v[index] for v in scalars.values()]
            mark = "  <- best" if index == self.best_index else ""
            lines.append("  ".join(f"{float(x):>12.5g}" for x in row) + mark)
        return "\n".join(lines)


def _axis(name: str, values: Any) -> jax.Array:
    if isinstance(values, str) or not isinstance(values, Sequence | np.ndarray | jax.Array):
        raise ValueError(
            f"sweep: {name} must be a list or 1-D array of values to try, got "
            f"{type(values).__name__}"
        )
    if len(values) == 0:
        raise ValueError(f"sweep: {name} has no values")
    shapes = {np.shape(v) for v in values}
    if len(shapes) > 1:
        raise ValueError(
            f"sweep: the values of {name} have different shapes {sorted(shapes)}; each point "
            f"of one axis must have the same shape"
        )
    return jnp.asarray(np.asarray(values))


def sweep(
    train_fn: Callable[..., Any],
    /,
    *,
    batch_size: int | None = None,
    objective: str | Callable[[Any], jax.Array] | None = None,
    maximize: bool = False,
    **grid: Any,
) -> SweepResult:
    """Evaluate ``train_fn(**point)`` at every point of a Cartesian grid, as one program.

    The grid's points are flattened into one batch and ``jax.vmap(train_fn)``
    runs them together under one ``jit``: one trace, one compilation. With
    ``batch_size`` the batch is processed ``batch_size`` points at a time by
    ``lax.map``, bounding memory to that many concurrent runs.

    Args:
      train_fn: a pure function of the hyperparameters (by keyword) returning
        metrics: a scalar or a dict (any pytree) of arrays.
      batch_size: points evaluated at once; None for all of them.
      objective: what ranks the points: a key of the metrics dict (default
        ``"loss"`` when the metrics are a dict, the metric itself when a
        scalar), or a function of the metrics returning a scalar.
      maximize: rank the highest objective best instead of the lowest.
      **grid: each hyperparameter's values, e.g. ``learning_rate=[1e-3, 1e-2]``.

    Raises:
      ValueError: for an empty grid or axis, axes whose values differ in
        shape, or an objective the metrics do not have.
    """
    if not callable(train_fn):
        raise TypeError(f"sweep: train_fn must be callable, got {type(train_fn).__name__}")
    if not grid:
        raise ValueError("sweep: give at least one hyperparameter axis, e.g. learning_rate=[...]")
    if batch_size is not None:
        batch_size = checks.check_length(
            "sweep", "batch_size", batch_size, wording="positive", or_none=True
        )
    axes = {name: _axis(name, values) for name, values in grid.items()}
    shape = tuple(len(v) for v in axes.values())
    mesh = jnp.meshgrid(*[jnp.arange(n) for n in shape], indexing="ij")
    points = {name: v[m.ravel()] for (name, v), m in zip(axes.items(), mesh, strict=True)}
    metrics = _evaluate(train_fn, batch_size, points)
    metrics = jax.tree.map(lambda x: np.asarray(x).reshape(shape + x.shape[1:]), metrics)
    score = _objective(metrics, objective, shape)
    ranked = np.where(np.isfinite(score), -score if maximize else score, np.inf)
    best_index = best = None
    if np.isfinite(ranked).any():
        best_index = tuple(int(i) for i in np.unravel_index(np.argmin(ranked), shape))
        best = {
            name: np.asarray(v)[i].item() if np.ndim(v) == 1 else np.asarray(v)[i]
            for (name, v), i in zip(axes.items(), best_index, strict=True)
        }
    grid_values = {name: np.asarray(v) for name, v in axes.items()}
    return SweepResult(grid_values, metrics, score, best, best_index)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _evaluate(train_fn: Callable, batch_size: int | None, points: dict) -> Any:
    def one(point):
        return train_fn(**point)

    if batch_size is None:
        return jax.vmap(one)(points)
    return jax.lax.map(one, points, batch_size=batch_size)


def _objective(metrics: Any, objective: Any, shape: tuple[int, ...]) -> np.ndarray:
    if callable(objective):
        score = np.asarray(objective(metrics))
    elif isinstance(metrics, dict):
        key = "loss" if objective is None else objective
        if key not in metrics:
            raise ValueError(
                f"sweep: objective {key!r} is not among the metrics {sorted(metrics)}; "
                f"pass objective=<one of them>"
            )
        score = np.asarray(metrics[key])
    elif objective is None and not jax.tree.structure(metrics).num_nodes > 1:
        score = np.asarray(metrics)
    else:
        raise ValueError(
            "sweep: the metrics are not a dict or a scalar; pass objective=fn(metrics) -> score"
        )
    if score.shape != shape:
        raise ValueError(
            f"sweep: the objective must be one number per grid point (shape {shape}), "
            f"got shape {score.shape}"
        )
    return score.astype(np.float64)
