"""Lion: the sign of an interpolated momentum."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

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


# Lion's sign and optax's two softer variants, given smooth_beta (used by "smooth" only).
_SIGNS: dict[str, Callable[[Any, jax.Array], jax.Array]] = {
    "hard": lambda beta, x: jnp.sign(x),
    "smooth": lambda beta, x: jnp.tanh(beta * x),
    "refined": lambda beta, x: jnp.where(jnp.abs(x) < 1.0, x, jnp.sign(x)),
}


class ScaleByLionState(NamedTuple):
    """State of :func:`scale_by_lion`: the step count and the momentum."""

    count: jax.Array
    mu: Any


def scale_by_lion(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.99,
    mu_dtype: Any = None,
    *,
    mode: Literal["hard", "smooth", "refined"] = "hard",
    smooth_beta: float = 1.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Lion (evoLved sIgn mOmeNtum).

    .. math::
        u_t = \\sigma(\\beta_1 m_{t-1} + (1-\\beta_1) g_t), \\qquad
        m_t = \\beta_2 m_{t-1} + (1-\\beta_2) g_t

    with :math:`\\sigma = \\operatorname{sign}` (``mode="hard"``, Lion's),
    :math:`\\tanh(\\beta_s x)` (``"smooth"``) or :math:`x` where :math:`|x| < 1`
    and :math:`\\operatorname{sign}(x)` elsewhere (``"refined"``), as in optax.

    A complex leaf raises ``ValueError`` naming it: the sign of a complex number is not a
    step direction, and optax's Lion has no complex rule either.

    Args:
      b1: :math:`\\beta_1` in [0, 1), the interpolation for the step.
      b2: :math:`\\beta_2` in [0, 1), the momentum decay.
      mu_dtype: optax's dtype of the stored momentum, cast to it with round-to-nearest
        as optax does (None: the params' dtype). Not with ``state_dtype``.
      mode: the sign variant, ``"hard"``, ``"smooth"`` or ``"refined"``.
      smooth_beta: :math:`\\beta_s`, the slope of ``"smooth"``'s tanh.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype, bfloat16 rounds stochastically. Defaults to the
        params' dtype.

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
    mu_dtype = checks.check_optax_dtype("scale_by_lion", "mu_dtype", mu_dtype, state_dtype)
    if mode not in _SIGNS:
        raise ValueError(f"scale_by_lion: mode must be one of {sorted(_SIGNS)}, got {mode!r}")
    sign = functools.partial(_SIGNS[mode], smooth_beta)

    def init(params):
        tree.reject_complex("scale_by_lion", params, _NO_COMPLEX)
        dtype = state_dtype if mu_dtype is None else mu_dtype
        return ScaleByLionState(tree.zeros_count(), tree.state_zeros_like(params, dtype))

    def update(updates, state, params=None, **extra):
        tree.reject_complex("scale_by_lion", updates, _NO_COMPLEX)
        checks.check_moments("scale_by_lion", updates, state, "mu")
        # With mu_dtype, optax's arithmetic on the momentum as stored; else widened first.
        old = state.mu if mu_dtype is not None else tree.widen(state.mu, updates)
        new_updates = jax.tree.map(lambda g, m: sign((1.0 - b1) * g + b1 * m), updates, old)
        momentum = lambda m: tree.update_moment(updates, m, b2, 1)  # noqa: E731
        if mu_dtype is not None:
            mu, _ = tree.plain_moment(state.mu, mu_dtype, momentum)
        else:
            mu, _ = tree.moment(state.mu, updates, state_dtype, momentum, state.count)
        return new_updates, ScaleByLionState(tree.safe_increment(state.count), mu)

    scalars = {"b1": b1, "one_minus_b1": 1.0 - b1, "b2": b2, "one_minus_b2": 1 - b2}
    tx = GradientTransformation(init, update)
    if mu_dtype is not None or mode != "hard":  # no fused kernel rounds or signs so: no recipe
        return tx
    return recipe.declare(tx, SCALE_BY_LION, lambda s, u: scalars, seed=lambda s: s.count)
