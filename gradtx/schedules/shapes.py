"""Cycle shapes: functions of progress ``p`` in [0, 1] returning values in [0, 1].

:func:`gradtx.schedules.cyclic` repeats a shape between a low and a high value.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gradtx import checks

Shape = Callable[[jax.Array], jax.Array]


def cosine(progress: jax.Array) -> jax.Array:
    """Half a cosine from 1 down to 0: :math:`(1 + \\cos(\\pi p)) / 2`."""
    return 0.5 * (1.0 + jnp.cos(jnp.pi * progress))


def triangular(inc_fraction: float = 0.5) -> Shape:
    """Linear up from 0 to 1 over the first ``inc_fraction`` of the cycle, then down to 0.

    .. math:: f(p) = p / a \\text{ for } p \\le a, \\quad (1 - p) / (1 - a) \\text{ after}

    Args:
      inc_fraction: :math:`a` in (0, 1); 0.5 is symmetric, other values give the
        slanted triangle of ULMFiT.
    """
    checks.check_interval("triangular", "inc_fraction", inc_fraction, "(0, 1)")

    def shape(progress: jax.Array) -> jax.Array:
        progress = jnp.clip(progress, 0.0, 1.0)
        return jnp.where(
            progress <= inc_fraction,
            progress / inc_fraction,
            (1.0 - progress) / (1.0 - inc_fraction),
        )

    return shape
