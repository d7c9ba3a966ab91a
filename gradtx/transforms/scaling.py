"""Scaling by a constant, a learning rate, or a schedule."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, recipe, tree
from gradtx.core import (
    GradientTransformation,
    ScalarOrSchedule,
    Schedule,
    identity,
    init_empty_state,
)

# scale and scale_by_schedule, the last block of most learners: u = factor * g.
SCALE = recipe.rule("scale", scalars=("factor",))


class ScaleByScheduleState(NamedTuple):
    """State of :func:`scale_by_schedule`: the step count the schedule is evaluated at."""

    count: jax.Array  # int32 scalar: updates applied so far


def scale(step_size: float | jax.Array) -> GradientTransformation:
    """Multiply updates by a constant: :math:`u \\leftarrow s\\,g`.

    Args:
      step_size: the factor :math:`s` (a number, array or tracer).

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> tx = gradtx.scale(0.5)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(updates["w"])
      [ 0.5 -1. ]

    References:
      optax: ``optax.scale``.
    """

    def update(updates, state, params=None, **extra):
        return jax.tree.map(lambda g: step_size * g, updates), state

    tx = GradientTransformation(init_empty_state, update)
    return recipe.declare(tx, SCALE, lambda state, updates: {"factor": step_size})


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiply updates by a schedule of the step count: :math:`u_t \\leftarrow s(t)\\,g_t`.

    ``t`` counts the updates already applied, so the first update sees ``s(0)``.
    The factor is cast to each update's dtype.

    Args:
      step_size_fn: a schedule, ``count -> factor``.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> tx = gradtx.scale_by_schedule(lambda count: 1.0 / (1 + count))
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> updates, state = tx.update(grads, state)  # the second update sees s(1) = 0.5
      >>> print(updates["w"])
      [ 0.5 -1. ]

    References:
      optax: ``optax.scale_by_schedule``.
    """
    if not callable(step_size_fn):
        raise TypeError(
            f"scale_by_schedule: step_size_fn must be a schedule (a callable of the step "
            f"count), got {step_size_fn!r}; use gradtx.scale for a constant"
        )

    def init(params):
        return ScaleByScheduleState(count=tree.zeros_count())

    def update(updates, state, params=None, **extra):
        step_size = step_size_fn(state.count)
        updates = jax.tree.map(lambda g: jnp.asarray(step_size, dtype=g.dtype) * g, updates)
        return updates, ScaleByScheduleState(count=tree.safe_increment(state.count))

    tx = GradientTransformation(init, update)
    return recipe.declare(tx, SCALE, lambda state, updates: {"factor": step_size_fn(state.count)})


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule | None = None, *, flip_sign: bool = True
) -> GradientTransformation:
    """Scale by the negative learning rate: :math:`u_t \\leftarrow -\\eta_t\\,g_t`.

    Args:
      learning_rate: :math:`\\eta`, a non-negative number, array, tracer or schedule;
        None (optax's default) leaves the updates as they are, sign included
        (:func:`gradtx.identity`).
      flip_sign: if False, scale by :math:`+\\eta` (gradient ascent).

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_learning_rate(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))
      [-0.1  0.2]

    References:
      optax: ``optax.scale_by_learning_rate``.
    """
    if learning_rate is None:  # optax: "None means no scaling"
        return identity()
    checks.check_interval(
        "scale_by_learning_rate", "learning_rate", learning_rate, checks.NONNEGATIVE
    )
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)
