"""DoG: a step size from the distance travelled so far over the gradients' sum of squares."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation

_NO_COMPLEX = " (optax's takes squares, not squared moduli, of complex numbers)"


class ScaleByDistanceOverGradientsState(NamedTuple):
    """State of :func:`scale_by_distance_over_gradients`, per leaf of the params."""

    max_dist: Any  # per leaf, a scalar: the largest distance from the initial params so far
    grad_sum_of_squares: Any  # per leaf, shape (1,) as optax's: the sum of all squared gradients
    init_params: Any  # params-shaped, in param_dtype: the params at init


def _distance(x: jax.Array, y: Any = 0.0) -> jax.Array:
    """The L2 distance :math:`\\lVert x - y\\rVert` of two whole leaves."""
    return jnp.sqrt(jnp.square(x - y).sum())


def scale_by_distance_over_gradients(
    reps_rel: float | jax.Array = 1e-6,
    eps: float | jax.Array = 1e-8,
    param_dtype: Any = jnp.float32,
    global_scale: float | jax.Array = 1.0,
) -> GradientTransformation:
    """Layer-wise DoG: each leaf's step size is its largest distance travelled over its
    gradients' root sum of squares.

    For each leaf, with :math:`\\theta_0` its value at init:

    .. math::
        r_t = \\max\\big(r_{t-1}, \\lVert\\theta_t - \\theta_0\\rVert\\big), \\quad
        r_0 = \\rho\\,(1 + \\lVert\\theta_0\\rVert), \\quad
        G_t = G_{t-1} + \\lVert g_t\\rVert^2,

    .. math:: u_t = s\\, \\frac{r_t}{\\sqrt{G_t + \\epsilon}}\\, g_t.

    No learning rate to tune: :math:`r_0` only starts the distance off. The update
    points up the gradient for :math:`s = 1`; use ``global_scale=-1`` or follow it by a
    negative scale. ``update`` needs the params.

    A complex leaf raises ``ValueError`` naming it (optax's squares complex numbers
    where a norm needs their moduli). A scalar leaf gets a scalar update (optax's
    comes back with shape (1,)).

    Args:
      reps_rel: :math:`\\rho > 0`, the initial distance relative to
        :math:`1 + \\lVert\\theta_0\\rVert` (the authors suggest 1e-6, or 1e-4 for models
        with batch norm).
      eps: :math:`\\epsilon \\ge 0`, inside the root.
      param_dtype: the dtype :math:`\\theta_0` is stored in (None: the params').
      global_scale: :math:`s`, a factor of every update (typically 1 or -1).

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.transforms.distance import scale_by_distance_over_gradients
      >>> tx = scale_by_distance_over_gradients(reps_rel=0.1)
      >>> params = {"w": jnp.array([3.0, 4.0])}  # r_0 = 0.1 * (1 + 5)
      >>> updates, state = tx.update({"w": jnp.array([1.0, 0.0])}, tx.init(params), params)
      >>> print(updates["w"])  # 0.6 / sqrt(1) * g
      [0.6 0. ]

    References:
      Ivgi, Hinder and Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
        Size Schedule", 2023.

      optax: ``optax.scale_by_distance_over_gradients``.
    """
    checks.check_hyperparams(
        "scale_by_distance_over_gradients",
        reps_rel=(reps_rel, checks.POSITIVE),
        eps=(eps, checks.NONNEGATIVE),
    )
    if param_dtype is not None:
        param_dtype = checks.check_optax_dtype(
            "scale_by_distance_over_gradients", "param_dtype", param_dtype
        )

    def init(params):
        tree.reject_complex("scale_by_distance_over_gradients", params, _NO_COMPLEX)
        return ScaleByDistanceOverGradientsState(
            jax.tree.map(lambda x: reps_rel * (1 + _distance(x)), params),
            jax.tree.map(lambda x: jnp.zeros(1), params),
            # A copy: a train step donates the params and the state, not one buffer twice.
            jax.tree.map(jnp.copy, tree.tree_cast(params, param_dtype)),
        )

    def update(updates, state, params=None, **extra):
        checks.require_params("scale_by_distance_over_gradients", params, "the distance travelled")
        tree.reject_complex("scale_by_distance_over_gradients", updates, _NO_COMPLEX)
        checks.check_trees_match(
            "scale_by_distance_over_gradients",
            "updates",
            updates,
            params=params,
            **{"state.init_params": state.init_params},
        )
        max_dist = jax.tree.map(
            lambda d, x, x0: jnp.maximum(d, _distance(x, x0)),
            state.max_dist,
            params,
            state.init_params,
        )
        sum_of_squares = jax.tree.map(
            lambda s, g: s + jnp.square(g).sum(), state.grad_sum_of_squares, updates
        )

        def step(g, d, s):
            eta = global_scale * (d / jnp.sqrt(s + eps))
            return jnp.reshape(eta, ()) * g  # the (1,)-shaped factor would give scalars a shape

        new_updates = jax.tree.map(step, updates, max_dist, sum_of_squares)
        return new_updates, ScaleByDistanceOverGradientsState(
            max_dist, sum_of_squares, state.init_params
        )

    return GradientTransformation(init, update)
