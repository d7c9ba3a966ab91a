"""Reduce the step size when a monitored value stops improving (torch's or optax's rule)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks
from gradtx.core import GradientTransformation
from gradtx.tree import INT32_MAX, safe_increment

RULES = ("torch", "optax")


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
    *,
    rule: str = "torch",
) -> GradientTransformation:
    """Scale updates down by ``factor`` when ``value`` has stopped improving.

    Each ``update`` reads the loss :math:`v` from the extra keyword ``value`` and
    updates the best value :math:`b` (:math:`+\\infty` at first), the count
    :math:`n` of updates since the last improvement, the cool-down counter
    :math:`c` and the scale :math:`s` (1 at first), in this order:

    1. :math:`v` improves when :math:`v < b (1 - \\tau)` (``threshold_mode="rel"``)
       or :math:`v < b - \\tau` (``"abs"``); then :math:`b \\leftarrow v,\\ n \\leftarrow 0`,
       else :math:`n \\leftarrow n + 1`.
    2. During a cool-down (:math:`c > 0`): :math:`c \\leftarrow c - 1,\\ n \\leftarrow 0`,
       and no reduction.
    3. Otherwise the scale is reduced, :math:`s \\leftarrow \\max(s \\gamma, s_{min})`,
       :math:`c \\leftarrow` ``cooldown``, :math:`n \\leftarrow 0`, when

       - ``rule="torch"``: :math:`n > p`, i.e. on the :math:`(p + 1)`-th update in
         a row without improvement (torch's ``num_bad_epochs > patience``);
       - ``rule="optax"``: :math:`n = p`, i.e. on the :math:`p`-th one (optax's
         ``plateau_count == patience``). optax also applies
         :math:`s \\leftarrow \\max(s, s_{min})` at every update outside a
         cool-down. With :math:`p = 0` the test holds on the improving updates:
         optax then reduces after every improvement, never on a plateau.

    For :math:`p \\ge 1` the optax rule with patience :math:`p` is the torch rule
    with patience :math:`p - 1` (when :math:`s_{min} \\le 1`). The update is
    scaled by :math:`s` after this value is taken into account.

    torch: with ``rule="torch"`` this is
    ``ReduceLROnPlateau(opt, mode="min", factor, patience, threshold, threshold_mode,
    cooldown, min_lr)`` with one ``step(value)`` per update, acting on a multiplier
    of the learning rate: ``min_scale`` is ``min_lr`` divided by the initial rate,
    and torch's ``eps`` (skip reductions smaller than ``eps``) is not covered.

    optax: with ``rule="optax"`` this is
    ``optax.contrib.reduce_on_plateau(factor, patience, rtol, atol, cooldown,
    min_scale=min_scale)`` with ``accumulation_size=1``: ``rtol=threshold, atol=0``
    is ``threshold_mode="rel"``, ``rtol=0, atol=threshold`` is
    ``threshold_mode="abs"``. Not covered: optax's combined test
    :math:`v < (1 - r) b - a` with both ``rtol`` and ``atol`` positive, and an
    ``accumulation_size`` above 1 (the mean of several values per test); optax's
    scale has the parameters' lowest float dtype, this one is float32.

    Args:
      factor: :math:`\\gamma` in [0, 1).
      patience: :math:`p \\ge 0`, updates without improvement tolerated (see ``rule``);
        at most the int32 maximum.
      threshold: :math:`\\tau \\ge 0`.
      threshold_mode: ``"rel"`` or ``"abs"``.
      cooldown: updates to wait after a reduction, :math:`\\ge 0`; at most the int32
        maximum.
      min_scale: :math:`s_{min} \\ge 0`.
      rule: ``"torch"`` (reduce when :math:`n > p`) or ``"optax"`` (reduce when
        :math:`n = p`, and keep :math:`s \\ge s_{min}`).
    """
    who = "reduce_on_plateau"
    checks.check_interval(who, "factor", factor, checks.DECAY)
    # Both are compared with int32 counters in the state.
    patience = checks.check_length(who, "patience", patience, allow_zero=True, at_most=INT32_MAX)
    checks.check_interval(who, "threshold", threshold, checks.NONNEGATIVE)
    cooldown_steps = checks.check_length(
        who, "cooldown", cooldown, allow_zero=True, at_most=INT32_MAX
    )
    checks.check_interval(who, "min_scale", min_scale, checks.NONNEGATIVE)
    if threshold_mode not in ("rel", "abs"):
        raise ValueError(f"{who}: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
    if rule not in RULES:
        raise ValueError(f"{who}: rule must be one of {RULES}, got {rule!r}")

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
                f"{who}: update needs the monitored loss as the extra keyword "
                "value, e.g. opt.update(grads, state, params, value=loss)"
            )
        value = jnp.asarray(value, jnp.float32)
        if threshold_mode == "rel":
            better = value < state.best * (1.0 - threshold)
        else:
            better = value < state.best - threshold
        best = jnp.where(better, value, state.best)
        # Saturating: under the optax rule with patience 0 the count is never reset
        # on a plateau, and must not wrap to a negative number.
        bad = jnp.where(better, 0, safe_increment(state.bad_steps))
        in_cooldown = state.cooldown > 0
        cooling = jnp.where(in_cooldown, state.cooldown - 1, 0)
        bad = jnp.where(in_cooldown, 0, bad)
        if rule == "torch":
            reduce = bad > patience  # bad is 0 during a cool-down
            scale = state.scale
        else:
            reduce = ~in_cooldown & (bad == patience)
            scale = jnp.where(in_cooldown, state.scale, jnp.maximum(state.scale, min_scale))
        scale = jnp.where(reduce, jnp.maximum(state.scale * factor, min_scale), scale)
        cooling = jnp.where(reduce, cooldown_steps, cooling)
        bad = jnp.where(reduce, 0, bad)
        updates = jax.tree.map(lambda g: scale.astype(g.dtype) * g, updates)
        return updates, ReduceOnPlateauState(
            scale, best, bad.astype(jnp.int32), cooling.astype(jnp.int32)
        )

    return GradientTransformation(init, update)
