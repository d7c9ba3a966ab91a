"""Layer-wise step sizes: each leaf's update rescaled by its own parameter block's size.

A *block* is one leaf of the params (a weight matrix, a bias vector). LARS, LAMB
and Fromage take the step of each block relative to that block's norm, so that
layers of very different scales learn at the same relative rate; Adafactor
scales its steps by each block's root mean square.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation, init_empty_state
from gradtx.utils import safe_norm, safe_root_mean_squares


def _params_of(who: str, updates: Any, params: Any) -> Any:
    """``params``, checked to be given and shaped like ``updates``."""
    checks.require_params(who, params, "each block is scaled by its own")
    checks.check_trees_match(who, "updates", updates, params=params)
    return params


def scale_by_trust_ratio(
    min_norm: float | jax.Array = 0.0,
    trust_coefficient: float | jax.Array = 1.0,
    eps: float | jax.Array = 0.0,
) -> GradientTransformation:
    """Scale each block's update by the trust ratio of its parameter and update norms.

    For each leaf, with :math:`\\lVert\\cdot\\rVert` its L2 (Frobenius) norm floored at
    ``min_norm``:

    .. math::
        r = \\frac{c\\, \\lVert\\theta\\rVert}{\\lVert u\\rVert + \\epsilon}, \\qquad
        u \\leftarrow \\begin{cases} u & \\lVert\\theta\\rVert = 0
        \\text{ or } \\lVert u\\rVert = 0 \\\\ r\\, u & \\text{otherwise} \\end{cases}

    so a block's step has norm :math:`c \\lVert\\theta\\rVert` (for :math:`\\epsilon = 0`),
    whatever the size of its gradient. A block whose params or update are all zero
    (a freshly zeroed bias) keeps its update as it is: the ratio would be 0 or
    undefined. Complex leaves count by their moduli, as in optax.

    Args:
      min_norm: the floor :math:`\\ge 0` of both norms (0: no floor).
      trust_coefficient: :math:`c \\ge 0`, multiplies the ratio.
      eps: :math:`\\epsilon \\ge 0`, added to the update norm in the denominator.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_trust_ratio()
      >>> params = {"w": jnp.array([3.0, 4.0]), "b": jnp.zeros(2)}  # norms 5 and 0
      >>> updates = {"w": jnp.array([0.1, 0.0]), "b": jnp.array([0.1, 0.0])}
      >>> updates, state = tx.update(updates, tx.init(params), params)
      >>> print(np.asarray(updates["w"]).round(4), np.asarray(updates["b"]).round(4))
      [5. 0.] [0.1 0. ]

    References:
      You, Gitman and Ginsburg, "Large Batch Training of Convolutional Networks", 2017.

      You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
        minutes", 2020.

      optax: ``optax.scale_by_trust_ratio``.
    """
    checks.check_hyperparams(
        "scale_by_trust_ratio",
        min_norm=(min_norm, checks.NONNEGATIVE),
        trust_coefficient=(trust_coefficient, checks.NONNEGATIVE),
        eps=(eps, checks.NONNEGATIVE),
    )

    def scaled(u: jax.Array, p: jax.Array) -> jax.Array:
        param_norm = safe_norm(p, min_norm)
        update_norm = safe_norm(u, min_norm)
        ratio = trust_coefficient * param_norm / (update_norm + eps)
        # Either norm zero (possible only without a floor): no ratio to trust, keep u.
        degenerate = (param_norm == 0.0) | (update_norm == 0.0)
        return u * jnp.where(degenerate, jnp.ones((), tree.real_dtype(p.dtype)), ratio)

    def update(updates, state, params=None, **extra):
        params = _params_of("scale_by_trust_ratio", updates, params)
        return jax.tree.map(scaled, updates, params), state

    return GradientTransformation(init_empty_state, update)


def scale_by_param_block_norm(min_scale: float | jax.Array = 1e-3) -> GradientTransformation:
    """Multiply each block's update by the L2 norm of its params, floored at ``min_scale``.

    .. math:: u \\leftarrow u \\cdot \\max(\\lVert\\theta\\rVert_2, s_{min})

    Complex leaves count by their moduli.

    Args:
      min_scale: :math:`s_{min} \\ge 0`, the smallest factor (keeps zero blocks moving).

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_param_block_norm()
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> updates, state = tx.update({"w": jnp.array([1.0, -1.0])}, tx.init(params), params)
      >>> print(np.asarray(updates["w"]).round(4))
      [ 5. -5.]

    References:
      optax: ``optax.scale_by_param_block_norm``.
    """
    checks.check_interval("scale_by_param_block_norm", "min_scale", min_scale, checks.NONNEGATIVE)

    def update(updates, state, params=None, **extra):
        params = _params_of("scale_by_param_block_norm", updates, params)
        return jax.tree.map(lambda u, p: u * safe_norm(p, min_scale), updates, params), state

    return GradientTransformation(init_empty_state, update)


def scale_by_param_block_rms(min_scale: float | jax.Array = 1e-3) -> GradientTransformation:
    """Multiply each block's update by the root mean square of its params, floored.

    .. math::
        u \\leftarrow u \\cdot \\max\\Big(\\sqrt{\\tfrac1n \\textstyle\\sum_i |\\theta_i|^2},
        \\; s_{min}\\Big)

    Adafactor's ``multiply_by_parameter_scale``: the step is relative to the
    block's typical entry. Complex leaves count by their moduli.

    Args:
      min_scale: :math:`s_{min} \\ge 0`, the smallest factor (keeps zero blocks moving).

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_param_block_rms()
      >>> params = {"w": jnp.array([3.0, 4.0, 0.0, 0.0])}  # rms 2.5
      >>> updates, state = tx.update({"w": jnp.ones(4)}, tx.init(params), params)
      >>> print(np.asarray(updates["w"]).round(4))
      [2.5 2.5 2.5 2.5]

    References:
      Shazeer and Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
        2018.

      optax: ``optax.scale_by_param_block_rms``.
    """
    checks.check_interval("scale_by_param_block_rms", "min_scale", min_scale, checks.NONNEGATIVE)

    def update(updates, state, params=None, **extra):
        params = _params_of("scale_by_param_block_rms", updates, params)
        return (
            jax.tree.map(lambda u, p: u * safe_root_mean_squares(p, min_scale), updates, params),
            state,
        )

    return GradientTransformation(init_empty_state, update)
