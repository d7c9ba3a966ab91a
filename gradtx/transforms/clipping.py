"""Clipping updates elementwise or by their global norm."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradtx import checks, recipe, tree
from gradtx.core import GradientTransformation, init_empty_state

# u = grad_scale * g, one scale for the whole tree (so only first in a chain, on the gradients).
CLIP_BY_GLOBAL_NORM = recipe.rule("clip_by_global_norm", scalars=("grad_scale",))


def clip(max_delta: float | jax.Array) -> GradientTransformation:
    """Clip each coordinate to :math:`[-c, c]`: :math:`u \\leftarrow \\min(\\max(g, -c), c)`.

    A complex leaf raises ``ValueError`` naming it: complex numbers have no order to clip to.

    Args:
      max_delta: :math:`c > 0`.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> tx = gradtx.clip(1.0)
      >>> updates, state = tx.update({"w": jnp.array([0.5, -3.0])}, tx.init(None))
      >>> print(updates["w"])
      [ 0.5 -1. ]

    References:
      optax: ``optax.clip``; torch: ``torch.nn.utils.clip_grad_value_``.
    """
    checks.check_interval("clip", "max_delta", max_delta, checks.POSITIVE)

    def update(updates, state, params=None, **extra):
        tree.reject_complex("clip", updates, " (complex numbers have no order to clip to)")
        return jax.tree.map(lambda g: jnp.clip(g, -max_delta, max_delta), updates), state

    return GradientTransformation(init_empty_state, update)


def clip_by_global_norm(
    max_norm: float | jax.Array, axis_name: str | None = None
) -> GradientTransformation:
    """Rescale all updates together so that their joint L2 norm is at most :math:`c`.

    .. math:: u \\leftarrow g \\cdot \\min\\left(1, \\frac{c}{\\lVert g \\rVert_2}\\right)

    where :math:`\\lVert g \\rVert_2` is taken over every leaf at once.

    Inside ``shard_map``, ``pmap`` or a named ``vmap``, each device holds only
    its shard: without ``axis_name`` the norm is the local shard's and silently
    differs from the global one. With ``axis_name`` the squared norms are summed
    across that axis first.

    Complex leaves count by their moduli, as in optax.

    Args:
      max_norm: :math:`c > 0`.
      axis_name: the mapped axis (or tuple of axes) to reduce the norm over.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.clip_by_global_norm(1.0)
      >>> grads = {"a": jnp.array([3.0]), "b": jnp.array([4.0])}  # norm 5
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["a"]).round(4), np.asarray(updates["b"]).round(4))
      [0.6] [0.8]

    References:
      Pascanu, Mikolov and Bengio, "On the difficulty of training recurrent neural
        networks", 2013.

      optax: ``optax.clip_by_global_norm``; torch: ``torch.nn.utils.clip_grad_norm_``.
    """
    checks.check_interval("clip_by_global_norm", "max_norm", max_norm, checks.POSITIVE)

    def update(updates, state, params=None, **extra):
        norm = tree.global_norm(updates, axis_name)
        keep = norm < max_norm
        updates = jax.tree.map(
            lambda g: jnp.where(keep, g, (g / norm.astype(g.dtype)) * max_norm), updates
        )
        return updates, state

    def grad_scale(state, updates):
        norm = tree.global_norm(updates, axis_name)
        return {"grad_scale": jnp.where(norm < max_norm, 1.0, max_norm / norm)}

    tx = GradientTransformation(init_empty_state, update)
    return recipe.declare(tx, CLIP_BY_GLOBAL_NORM, grad_scale)
