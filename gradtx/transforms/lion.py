"""Lion: the sign of an interpolated momentum."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, recipe, tree
from gradtx.core import GradientTransformation

_NO_COMPLEX = " (a sign rule; optax's lion has none either)"

SCALE_BY_LION = recipe.rule(
    "scale_by_lion",
    scalars=("b1", "one_minus_b1", "b2", "one_minus_b2"),
    moments=("mu",),
    kernel="gradtx_lion",
)


class ScaleByLionState(NamedTuple):
    """State of :func:`scale_by_lion`: the step count and the momentum."""

    count: jax.Array
    mu: Any


def scale_by_lion(
    b1: float | jax.Array = 0.9, b2: float | jax.Array = 0.99, *, state_dtype: Any = None
) -> GradientTransformation:
    """Lion (evoLved sIgn mOmeNtum).

    .. math::
        u_t = \\operatorname{sign}(\\beta_1 m_{t-1} + (1-\\beta_1) g_t), \\qquad
        m_t = \\beta_2 m_{t-1} + (1-\\beta_2) g_t

    A complex leaf raises ``ValueError`` naming it: the sign of a complex number is not a
    step direction, and optax's Lion has no complex rule either.

    Args:
      b1: :math:`\\beta_1` in [0, 1), the interpolation for the step.
      b2: :math:`\\beta_2` in [0, 1), the momentum decay.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype. Defaults to the params' dtype.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> tx = gradtx.scale_by_lion()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(updates["w"])  # sign(0.1 * g)
      [ 1. -1.]

    References:
      Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023.

      optax: ``optax.scale_by_lion``.
    """
    checks.check_hyperparams("scale_by_lion", b1=(b1, checks.DECAY), b2=(b2, checks.DECAY))
    state_dtype = checks.check_state_dtype("scale_by_lion", state_dtype)

    def init(params):
        tree.reject_complex("scale_by_lion", params, _NO_COMPLEX)
        return ScaleByLionState(tree.zeros_count(), tree.zeros_like(params, state_dtype))

    def update(updates, state, params=None, **extra):
        tree.reject_complex("scale_by_lion", updates, _NO_COMPLEX)
        checks.check_moments("scale_by_lion", updates, state, "mu")
        new_updates = jax.tree.map(
            lambda g, m: jnp.sign((1.0 - b1) * g + b1 * m), updates, tree.widen(state.mu, updates)
        )
        mu, _ = tree.moment(
            state.mu,
            updates,
            state_dtype,
            lambda m: tree.update_moment(updates, m, b2, 1),
            state.count,
        )
        return new_updates, ScaleByLionState(tree.safe_increment(state.count), mu)

    scalars = {"b1": b1, "one_minus_b1": 1.0 - b1, "b2": b2, "one_minus_b2": 1 - b2}
    tx = GradientTransformation(init, update)
    return recipe.declare(tx, SCALE_BY_LION, lambda s, u: scalars, seed=lambda s: s.count)
