"""Polyak's step size: the step that would reach a known lower bound of the loss, capped."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformationExtraArgs, init_empty_state

_VARIANTS = ("sps", "sps+")


def scale_by_polyak(
    f_min: float | jax.Array = 0.0,
    max_learning_rate: float | jax.Array = 1.0,
    eps: float | jax.Array = 0.0,
    variant: str = "sps",
) -> GradientTransformationExtraArgs:
    """Scale the updates by Polyak's step size, from the loss ``value`` of this step.

    .. math::
        \\gamma_t = \\min\\Big(\\frac{f(\\theta_t) - f^\\star}{\\lVert g_t\\rVert^2 + \\epsilon},
        \\gamma_{max}\\Big), \\qquad u_t = \\gamma_t\\, g_t,

    with :math:`\\gamma_t = 0` where :math:`\\lVert g_t\\rVert^2 + \\epsilon` is at most
    float64's machine epsilon (a zero gradient), and :math:`f - f^\\star` replaced by its
    positive part :math:`(f - f^\\star)_+` for ``variant="sps+"``. The norm is over the
    whole tree; complex leaves count by their moduli, as in optax.

    ``update`` takes the loss as the keyword extra ``value``
    (``update(grads, state, params, value=loss)``); :func:`gradtx.chain` hands it to this
    block. The update points up the gradient: follow it by a negative scale
    (:func:`gradtx.learners.sign_family.polyak_sgd` puts SGD before it).

    Args:
      f_min: :math:`f^\\star`, a lower bound of the loss (0 for a model that can fit
        its data exactly).
      max_learning_rate: :math:`\\gamma_{max} \\ge 0`, the largest step size.
      eps: :math:`\\epsilon \\ge 0`, added to the squared norm.
      variant: ``"sps"`` (Loizou et al.) or ``"sps+"`` (Garrigos et al.: the gap's
        positive part, so a loss below ``f_min`` takes no step instead of a step uphill).

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.transforms.polyak import scale_by_polyak
      >>> tx = scale_by_polyak()
      >>> grads = {"w": jnp.array([3.0, 4.0])}  # squared norm 25
      >>> updates, state = tx.update(grads, tx.init(grads), value=5.0)
      >>> print(updates["w"])  # (5 - 0) / 25 * g
      [0.6 0.8]

    References:
      Loizou, Vaswani, Laradji and Lacoste-Julien, "Stochastic Polyak Step-size for SGD:
        An Adaptive Learning Rate for Fast Convergence", 2021.

      Garrigos, Gower and Schaipp, "Function Value Learning: Adaptive Learning Rates
        Based on the Polyak Stepsize and Function Splitting in ERM", 2023.

      optax: ``optax.scale_by_polyak``.
    """
    checks.check_hyperparams(
        "scale_by_polyak",
        max_learning_rate=(max_learning_rate, checks.NONNEGATIVE),
        eps=(eps, checks.NONNEGATIVE),
    )
    if variant not in _VARIANTS:
        who, name = checks.reported_name("scale_by_polyak", "variant")
        raise ValueError(f"{who}: {name} must be 'sps' or 'sps+', got {variant!r}")

    def update(updates, state, params=None, *, value: Any = None, **extra):
        if value is None:
            raise ValueError(
                "scale_by_polyak: update needs this step's loss; call "
                "update(grads, state, params, value=loss)"
            )
        grad_sq_norm = tree.tree_norm(updates, squared=True)
        gap = jnp.array(value - f_min).astype(grad_sq_norm.dtype)
        if variant == "sps+":
            gap = jax.nn.relu(gap)
        # float64's epsilon, as optax (jnp.finfo(float)): below it the gradient is zero.
        step = jnp.where(
            grad_sq_norm + eps <= jnp.finfo(float).eps,
            jnp.array(0.0),
            jnp.minimum(gap / (grad_sq_norm + eps), max_learning_rate),
        )
        return tree.tree_scale(step, updates), state

    return GradientTransformationExtraArgs(init_empty_state, update)
