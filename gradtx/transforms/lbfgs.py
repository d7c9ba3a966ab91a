"""L-BFGS: the update multiplied by an inverse-Hessian estimate built from past steps."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation


class ScaleByLBFGSState(NamedTuple):
    """State of :func:`scale_by_lbfgs`: the last params and updates, and the memory of differences.

    The memories hold ``memory_size`` differences stacked on a new leading axis of
    every leaf (a traced index can pick a row of an array, not an entry of a list);
    row :math:`k \\bmod m` is the difference made at iteration :math:`k`.
    """

    count: jax.Array  # int32 scalar: updates applied so far
    params: Any  # the params of the last update
    updates: Any  # the incoming updates (gradients) of the last update
    diff_params_memory: Any  # rows of w_{k+1} - w_k
    diff_updates_memory: Any  # rows of u_{k+1} - u_k
    weights_memory: jax.Array  # (memory_size,): rho_k = 1 / <du_k, dw_k>, 0 where undefined


def _right_product(carry: tuple, idx: jax.Array) -> tuple[tuple, jax.Array]:
    vec, diff_params_memory, diff_updates_memory, rhos = carry
    dw, du = jax.tree.map(lambda x: x[idx], (diff_params_memory, diff_updates_memory))
    alpha = rhos[idx] * tree.tree_real(tree.tree_vdot(dw, vec))
    vec = tree.tree_cast_like(tree.tree_add_scale(vec, -alpha, du), vec)
    return (vec, diff_params_memory, diff_updates_memory, rhos), alpha


def _left_product(carry: tuple, idx_alpha: tuple[jax.Array, jax.Array]) -> tuple[tuple, jax.Array]:
    vec, diff_params_memory, diff_updates_memory, rhos = carry
    idx, alpha = idx_alpha
    dw, du = jax.tree.map(lambda x: x[idx], (diff_params_memory, diff_updates_memory))
    beta = rhos[idx] * tree.tree_real(tree.tree_vdot(du, vec))
    vec = tree.tree_cast_like(tree.tree_add_scale(vec, alpha - beta, dw), vec)
    return (vec, diff_params_memory, diff_updates_memory, rhos), beta


def precondition_by_lbfgs(
    updates: Any,
    diff_params_memory: Any,
    diff_updates_memory: Any,
    weights_memory: jax.Array,
    identity_scale: Any,
    memory_idx: jax.Array,
) -> Any:
    """:math:`P_k u`: the two-loop recursion (Nocedal and Wright, Algorithm 7.4).

    The rows are visited newest to oldest, then oldest to newest, starting from
    ``memory_idx`` (the oldest row). Rows still zero have weight 0 and change nothing.

    Args:
      updates: the vector :math:`u` to precondition.
      diff_params_memory: the stacked :math:`\\delta w` rows.
      diff_updates_memory: the stacked :math:`\\delta u` rows.
      weights_memory: :math:`\\rho` for each row.
      identity_scale: :math:`\\gamma_k`, the scale of the initial estimate :math:`\\gamma_k I`.
      memory_idx: the row of the oldest difference.
    """
    # The memories ride in the scans' carries, not in closures, and the bodies are
    # module-level functions: called eagerly, each scan is then traced and compiled
    # once per shape instead of on every update (seconds each). The arithmetic is optax's.
    memory_size = weights_memory.shape[0]
    indices = (memory_idx + jnp.arange(memory_size)) % memory_size
    memories = (diff_params_memory, diff_updates_memory, weights_memory)
    (vec, *_), alphas = jax.lax.scan(_right_product, (updates, *memories), indices, reverse=True)
    vec = tree.tree_scale(identity_scale, vec)
    (vec, *_), _ = jax.lax.scan(_left_product, (vec, *memories), (indices, alphas))
    return vec


def scale_by_lbfgs(
    memory_size: int = 10, scale_init_precond: bool = True
) -> GradientTransformation:
    """Multiply the update by L-BFGS's inverse-Hessian estimate: :math:`u \\leftarrow P_k g_k`.

    With :math:`w_k` the params and :math:`g_k` the incoming updates (gradients) at
    iteration :math:`k`, and :math:`m` = ``memory_size``:

    .. math::
        \\delta w_j = w_{j+1} - w_j, \\quad \\delta g_j = g_{j+1} - g_j, \\quad
        \\rho_j = 1 / \\langle \\delta g_j, \\delta w_j \\rangle,

    .. math::
        P_{k,k-m} = \\gamma_k I, \\quad
        P_{k,j+1} = V_j^\\top P_{k,j} V_j + \\rho_j\\, \\delta w_j \\delta w_j^\\top, \\quad
        V_j = I - \\rho_j\\, \\delta g_j \\delta w_j^\\top, \\quad P_k = P_{k,k},

    .. math::
        \\gamma_k = \\frac{\\langle \\delta w_{k-1}, \\delta g_{k-1} \\rangle}
        {\\lVert \\delta g_{k-1} \\rVert^2}
        \\text{ with } \\texttt{scale\\_init\\_precond}, \\text{ else } 1; \\quad
        \\gamma_0 = \\min(1, 1 / \\lVert g_0 \\rVert).

    The memory is updated first with the params and updates it is given, then the
    updates are preconditioned, so that in a chain with a line search the memory
    only ever holds steps the line search accepted. :math:`P_k g_k` is a
    descent direction for a minimiser (a chain negates it, e.g. :func:`gradtx.lbfgs`);
    :math:`\\gamma_0` caps the first step to the unit ball (optax's heuristic).
    Complex leaves use :math:`\\operatorname{Re}\\langle a, b\\rangle` as the inner
    product, as optax does. ``update`` needs ``params``.

    Args:
      memory_size: :math:`m \\ge 1`, the number of past differences kept.
      scale_init_precond: start each recursion from :math:`\\gamma_k I` (else :math:`I`).

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.transforms.lbfgs import scale_by_lbfgs
      >>> tx = scale_by_lbfgs()
      >>> params = jnp.array([3.0, 4.0])
      >>> updates, state = tx.update(2 * params, tx.init(params), params)
      >>> print(updates)  # the first step: the gradient scaled to unit norm
      [0.6 0.8]

    References:
      Nocedal and Wright, "Numerical Optimization", 1999, Algorithms 7.4 and 7.5.

      Liu and Nocedal, "On the limited memory BFGS method for large scale
        optimization", 1989.

      optax: ``optax.scale_by_lbfgs``.
    """
    memory_size = checks.check_length(
        "scale_by_lbfgs", "memory_size", memory_size, wording="integer"
    )

    def init(params):
        # Two separate buffers: a donated state must not hold the same array twice.
        def stacked(leaf):
            leaf = jnp.asarray(leaf)
            return tree.state_zeros_like(jnp.broadcast_to(leaf, (memory_size, *leaf.shape)))

        return ScaleByLBFGSState(
            count=tree.zeros_count(),
            params=tree.tree_zeros_like(params),
            updates=tree.tree_zeros_like(params),
            diff_params_memory=jax.tree.map(stacked, params),
            diff_updates_memory=jax.tree.map(stacked, params),
            weights_memory=jnp.zeros(memory_size),
        )

    def update(updates, state, params=None, **extra):
        if params is None:
            raise ValueError("scale_by_lbfgs: update needs params (its memory is of their steps)")
        checks.check_moments("scale_by_lbfgs", updates, state, "params", "updates")
        memory_idx = state.count % memory_size  # the row of iteration k: now the oldest
        prev_memory_idx = (state.count - 1) % memory_size  # the row of k - 1: written now
        started = state.count > 0  # before the first step there is no difference to store

        diff_params = tree.tree_sub(params, state.params)
        diff_updates = tree.tree_sub(updates, state.updates)
        curvature = tree.tree_real(tree.tree_vdot(diff_updates, diff_params))
        weight = jnp.where(curvature == 0.0, 0.0, 1.0 / curvature)
        diff_params, diff_updates, weight = jax.tree.map(
            lambda x: jnp.where(started, x, jnp.zeros_like(x)), (diff_params, diff_updates, weight)
        )
        diff_params_memory, diff_updates_memory, weights_memory = jax.tree.map(
            lambda memory, new: memory.at[prev_memory_idx].set(new),
            (state.diff_params_memory, state.diff_updates_memory, state.weights_memory),
            (diff_params, diff_updates, weight),
        )

        if scale_init_precond:
            numerator = tree.tree_real(tree.tree_vdot(diff_updates, diff_params))
            denominator = tree.tree_norm(diff_updates, squared=True)
            identity_scale = jnp.where(denominator > 0.0, numerator / denominator, 1.0)
            # The first step has no curvature to go by: a step of norm at most 1.
            capped_inv_norm = jnp.minimum(1.0, 1.0 / tree.tree_norm(jax.lax.stop_gradient(updates)))
            identity_scale = jnp.where(started, identity_scale, capped_inv_norm)
        else:
            identity_scale = 1.0

        preconditioned = precondition_by_lbfgs(
            updates,
            diff_params_memory,
            diff_updates_memory,
            weights_memory,
            identity_scale,
            memory_idx,
        )
        return preconditioned, ScaleByLBFGSState(
            count=tree.safe_increment(state.count),
            params=params,
            updates=updates,
            diff_params_memory=diff_params_memory,
            diff_updates_memory=diff_updates_memory,
            weights_memory=weights_memory,
        )

    return GradientTransformation(init, update)
