"""Reduce the step size when a monitored value stops improving (torch's ReduceLROnPlateau)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks
from gradtx.core import GradientTransformation
from gradtx.schedules._util import check_length


class ReduceOnPlateauState(NamedTuple):
    scale: jax.Array  # float32: the factor applied to updates
    best: jax.Array  # float32: the best value seen
    bad_steps: jax.Array  # int32: updates since the last improvement
    cooldown: jax.Array  # int32: updates left before bad steps count again


def reduce_on_plateau(
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_scale: float = 0.0,
) -> GradientTransformation:
    """Scale updates down by ``factor`` when ``value`` has not improved for ``patience`` updates.

    Each ``update`` reads the loss from the extra keyword ``value``. It is an
    improvement when :math:`v < b (1 - \\tau)` (``rel``) or :math:`v < b - \\tau`
    (``abs``), :math:`b` the best value so far. After more than ``patience``
    updates without one, the scale becomes :math:`\\max(s \\gamma, s_{min})` and
    ``cooldown`` updates pass before bad updates count again. The update is
    scaled by the scale after this value is taken into account. This is
    torch's ``ReduceLROnPlateau(mode="min")`` with one ``step(value)`` per update,
    acting on a multiplier of the learning rate.

    Args:
      factor: :math:`\\gamma` in [0, 1).
      patience: updates without improvement tolerated, :math:`\\ge 0`.
      threshold: :math:`\\tau \\ge 0`.
      threshold_mode: ``"rel"`` or ``"abs"``.
      cooldown: updates to wait after a reduction, :math:`\\ge 0`.
      min_scale: :math:`s_{min} \\ge 0`.
    """
    checks.check_interval("reduce_on_plateau", "factor", factor, checks.DECAY)
    patience = check_length("reduce_on_plateau", "patience", patience, allow_zero=True)
    checks.check_interval("reduce_on_plateau", "threshold", threshold, checks.NONNEGATIVE)
    cooldown_steps = check_length("reduce_on_plateau", "cooldown", cooldown, allow_zero=True)
    checks.check_interval("reduce_on_plateau", "min_scale", min_scale, checks.NONNEGATIVE)
    if threshold_mode not in ("rel", "abs"):
        raise ValueError(
            f"reduce_on_plateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}"
        )

    def init(params):
        return ReduceOnPlateauState(
            jnp.ones([], jnp.float32),
            jnp.full([], jnp.inf, jnp.float32),
            jnp.zeros([], jnp.int32),
            jnp.zeros([], jnp.int32),
        )

    def update(updates, state, params=None, *, value=None, **extra):
        if value is None:
            raise ValueError(
                "reduce_on_plateau: update needs the monitored loss as the extra keyword "
                "value, e.g. opt.update(grads, state, params, value=loss)"
            )
        value = jnp.asarray(value, jnp.float32)
        if threshold_mode == "rel":
            better = value < state.best * (1.0 - threshold)
        else:
            better = value < state.best - threshold
        best = jnp.where(better, value, state.best)
        bad = jnp.where(better, 0, state.bad_steps + 1)
        in_cooldown = state.cooldown > 0
        cooling = jnp.where(in_cooldown, state.cooldown - 1, 0)
        bad = jnp.where(in_cooldown, 0, bad)
        reduce = bad > patience
        scale = jnp.where(reduce, jnp.maximum(state.scale * factor, min_scale), state.scale)
        cooling = jnp.where(reduce, cooldown_steps, cooling)
        bad = jnp.where(reduce, 0, bad)
        updates = jax.tree.map(lambda g: scale.astype(g.dtype) * g, updates)
        return updates, ReduceOnPlateauState(
            scale, best, bad.astype(jnp.int32), cooling.astype(jnp.int32)
        )

    return GradientTransformation(init, update)
