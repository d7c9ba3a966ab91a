"""Gradient operations that recipes put around a learner: per-block and unit-wise clipping,
centralisation, NaN removal, normalisation, and keeping params non-negative."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import EmptyState, GradientTransformation, init_empty_state

# optax's name for keep_params_nonnegative's (empty) state.
NonNegativeParamsState = EmptyState


def _needs_params(who: str, updates: Any, params: Any) -> None:
    checks.require_params(who, params)
    checks.check_trees_match(who, "updates", updates, params=params)


def clip_by_block_rms(threshold: float | jax.Array) -> GradientTransformation:
    """Rescale each leaf (block) so that its root mean square is at most :math:`c`.

    .. math::
        u \\leftarrow \\frac{g}{\\max\\left(1, \\operatorname{rms}(g) / c\\right)}, \\qquad
        \\operatorname{rms}(g) = \\sqrt{\\tfrac1n \\textstyle\\sum_i |g_i|^2}

    taken per leaf, so one exploding layer is clipped without shrinking the others
    (Adafactor's update clipping). Complex leaves count by their moduli.

    Args:
      threshold: :math:`c > 0`, the largest rms a block keeps.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.clip_by_block_rms(1.0)
      >>> grads = {"big": jnp.array([3.0, -3.0]), "small": jnp.array([0.5, 0.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["big"]).round(4), np.asarray(updates["small"]).round(4))
      [ 1. -1.] [0.5 0. ]

    References:
      Shazeer and Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
        2018, section 6.

      optax: ``optax.clip_by_block_rms``.
    """
    checks.check_interval("clip_by_block_rms", "threshold", threshold, checks.POSITIVE)

    def clipped(g: jax.Array) -> jax.Array:
        return g / jnp.maximum(1.0, jnp.sqrt(jnp.mean(tree.abs_sq(g))) / threshold)

    def update(updates, state, params=None, **extra):
        return jax.tree.map(clipped, updates), state

    return GradientTransformation(init_empty_state, update)


# The axes a unit's norm is taken over, by rank, for the usual layouts (optax's table).
_UNIT_AXES = {2: 0, 3: 0, 4: (0, 1, 2), 5: (0, 1, 2, 3)}


def unitwise_norm(x: jax.Array, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """The L2 norm of each unit of ``x`` (an output channel, a neuron), broadcast to ``x``'s shape.

    Without ``axis`` the units follow the common layouts: a scalar or vector (also one
    with size-one axes) is one unit; a rank-2 ``(in, out)`` or rank-3 multi-head kernel
    is reduced over axis 0; a rank-4 ``HWIO`` convolution over ``(0, 1, 2)``; a rank-5
    ``DHWIO`` one over ``(0, 1, 2, 3)``. Other ranks need ``axis``.

    Args:
      x: an array (complex ones by their moduli).
      axis: the axis or axes to reduce over, instead of the layout's.

    Examples:
      >>> import jax.numpy as jnp, gradtx.transforms.gradient_ops as ops
      >>> print(ops.unitwise_norm(jnp.array([[3.0, 1.0], [4.0, 0.0]])))
      [[5. 1.]
       [5. 1.]]

    References:
      Brock, De, Smith and Simonyan, "High-Performance Large-Scale Image Recognition
        Without Normalization", 2021.

      optax: ``optax.transforms.unitwise_norm``.
    """
    x = jnp.asarray(x)
    if axis is not None:
        squares = jnp.sum(tree.abs_sq(x), axis=axis, keepdims=True)
    elif jnp.squeeze(x).ndim <= 1:
        squares = jnp.sum(tree.abs_sq(x), keepdims=True)
    elif x.ndim in _UNIT_AXES:
        squares = jnp.sum(tree.abs_sq(x), axis=_UNIT_AXES[x.ndim], keepdims=True)
    else:
        raise ValueError(
            f"unitwise_norm: no default units for a rank-{x.ndim} array of shape {x.shape} "
            f"(ranks 1 to 5 have one); pass axis= to say which axes a unit spans"
        )
    return jnp.broadcast_to(jnp.sqrt(squares), x.shape)


def unitwise_clip(
    g_norm: jax.Array, max_norm: jax.Array, grad: jax.Array, div_eps: float = 1e-6
) -> jax.Array:
    """Rescale the units of ``grad`` whose norm ``g_norm`` reaches ``max_norm`` down to it.

    .. math::
        g \\leftarrow \\begin{cases} g & \\lVert g\\rVert < m \\\\
        g\\, m / \\max(\\lVert g\\rVert, \\delta) & \\text{otherwise} \\end{cases}

    Args:
      g_norm: the unit norms of ``grad``, broadcast to its shape (:func:`unitwise_norm`).
      max_norm: the largest norm each unit keeps, of the same shape.
      grad: the gradient.
      div_eps: :math:`\\delta`, guards the division (it cannot engage for a positive
        ``max_norm``).

    Examples:
      >>> import jax.numpy as jnp, gradtx.transforms.gradient_ops as ops
      >>> g = jnp.array([3.0, 4.0])
      >>> print(ops.unitwise_clip(ops.unitwise_norm(g), jnp.full(2, 1.0), g))
      [0.6 0.8]

    References:
      optax: ``optax.transforms.unitwise_clip``.
    """
    shapes = {jnp.shape(g_norm), jnp.shape(max_norm), jnp.shape(grad)}
    if len(shapes) != 1:
        raise ValueError(
            f"unitwise_clip: g_norm, max_norm and grad must have one shape, got "
            f"{jnp.shape(g_norm)}, {jnp.shape(max_norm)} and {jnp.shape(grad)}"
        )
    clipped = grad * (max_norm / jnp.maximum(g_norm, div_eps))
    return jnp.where(g_norm < max_norm, grad, clipped)


def adaptive_grad_clip(
    clipping: float | jax.Array,
    eps: float | jax.Array = 1e-3,
    axis: int | tuple[int, ...] | None = None,
) -> GradientTransformation:
    """Adaptive gradient clipping (AGC): clip each unit's gradient relative to its weights.

    For each unit (:func:`unitwise_norm`: an output channel of a kernel, a whole vector):

    .. math::
        g \\leftarrow \\begin{cases} g & \\lVert g\\rVert < \\lambda \\max(\\lVert\\theta\\rVert,
        \\epsilon) \\\\ g\\, \\lambda \\max(\\lVert\\theta\\rVert, \\epsilon) / \\lVert g\\rVert
        & \\text{otherwise} \\end{cases}

    Args:
      clipping: :math:`\\lambda > 0`, the largest ratio of gradient norm to weight norm.
      eps: :math:`\\epsilon \\ge 0`, the weight norm zero-initialised units are measured at.
      axis: the axes a unit spans, for every leaf (None: by rank, see :func:`unitwise_norm`).

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.adaptive_grad_clip(0.1)
      >>> params = {"w": jnp.array([3.0, 4.0])}  # norm 5: gradients up to norm 0.5 pass
      >>> updates, state = tx.update({"w": jnp.array([6.0, 8.0])}, tx.init(params), params)
      >>> print(np.asarray(updates["w"]).round(4))
      [0.3 0.4]

    References:
      Brock, De, Smith and Simonyan, "High-Performance Large-Scale Image Recognition
        Without Normalization", 2021.

      optax: ``optax.adaptive_grad_clip``.
    """
    checks.check_hyperparams(
        "adaptive_grad_clip",
        clipping=(clipping, checks.POSITIVE),
        eps=(eps, checks.NONNEGATIVE),
    )

    def clipped(path: Any, g: jax.Array, p: jax.Array) -> jax.Array:
        try:
            g_norm, p_norm = unitwise_norm(g, axis), unitwise_norm(p, axis)
        except ValueError as error:
            raise ValueError(
                f"adaptive_grad_clip: the leaf at {checks.path_name(path)}: {error}"
            ) from None
        return unitwise_clip(g_norm, clipping * jnp.maximum(p_norm, eps), g)

    def update(updates, state, params=None, **extra):
        _needs_params("adaptive_grad_clip", updates, params)
        return jax.tree_util.tree_map_with_path(clipped, updates, params), state

    return GradientTransformation(init_empty_state, update)


def centralize() -> GradientTransformation:
    """Gradient centralisation: subtract from each leaf its mean over all axes but the first.

    .. math:: g_{i,\\ldots} \\leftarrow g_{i,\\ldots} - \\operatorname{mean}_{\\ldots} g_{i,\\ldots}

    for leaves of rank 2 and more; scalars and vectors (biases) pass unchanged.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> tx = gradtx.centralize()
      >>> updates, state = tx.update(jnp.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), tx.init(None))
      >>> print(updates)
      [[-1.  0.  1.]
       [-1.  0.  1.]]

    References:
      Yong, Huang, Hua and Zhang, "Gradient Centralization: A New Optimization Technique
        for Deep Neural Networks", 2020.

      optax: ``optax.centralize``.
    """

    def centred(g: jax.Array) -> jax.Array:
        if g.ndim < 2:
            return g
        return g - g.mean(tuple(range(1, g.ndim)), keepdims=True)

    def update(updates, state, params=None, **extra):
        return jax.tree.map(centred, updates), state

    return GradientTransformation(init_empty_state, update)


def keep_params_nonnegative() -> GradientTransformation:
    """Shorten the updates that would take a parameter below zero so that it lands on zero.

    .. math:: u \\leftarrow \\begin{cases} -\\theta & \\theta + u < 0 \\\\ u & \\text{otherwise}
        \\end{cases}

    Put it last in a chain (it sees the final step). Params that are already negative
    are moved to 0. A complex leaf (of the params or the updates) raises ``ValueError``
    naming it: complex numbers have no sign (optax compares them lexicographically).

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.keep_params_nonnegative()
      >>> params = {"w": jnp.array([1.0, 0.5])}
      >>> updates, state = tx.update({"w": jnp.array([-0.5, -2.0])}, tx.init(params), params)
      >>> print(np.asarray(updates["w"]).round(4))
      [-0.5 -0.5]

    References:
      optax: ``optax.keep_params_nonnegative``.
    """

    def update(updates, state, params=None, **extra):
        _needs_params("keep_params_nonnegative", updates, params)
        for part in (params, updates):
            tree.reject_complex("keep_params_nonnegative", part, " (complex numbers have no sign)")
        updates = jax.tree.map(
            lambda p, u: None if p is None else jnp.where((p + u) < 0.0, -p, u),
            params,
            updates,
            is_leaf=lambda x: x is None,
        )
        return updates, state

    return GradientTransformation(init_empty_state, update)


class ZeroNansState(NamedTuple):
    """State of :func:`zero_nans`: per leaf, whether the last update held a NaN."""

    found_nan: Any  # a tree like the params of boolean scalars


def zero_nans() -> GradientTransformation:
    """Replace NaN entries of the updates by zero, and record which leaves had one.

    .. math:: u_i \\leftarrow \\begin{cases} 0 & g_i \\text{ is NaN} \\\\ g_i & \\text{otherwise}
        \\end{cases}

    The state's ``found_nan`` holds, per leaf, whether the last update had a NaN
    (a complex entry counts if either part is NaN); it is for monitoring only.
    Infinities pass unchanged.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> tx = gradtx.zero_nans()
      >>> grads = {"w": jnp.array([1.0, jnp.nan]), "b": jnp.array([2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(updates["w"], bool(state.found_nan["w"]), bool(state.found_nan["b"]))
      [1. 0.] True False

    References:
      optax: ``optax.zero_nans``.
    """

    def init(params):
        return ZeroNansState(jax.tree.map(lambda _: jnp.array(False), params))

    def update(updates, state, params=None, **extra):
        found = jax.tree.map(lambda g: jnp.any(jnp.isnan(g)), updates)
        updates = jax.tree.map(lambda g: jnp.where(jnp.isnan(g), jnp.zeros_like(g), g), updates)
        return updates, ZeroNansState(found)

    return GradientTransformation(init, update)


def normalize_by_update_norm(
    scale_factor: float | jax.Array = 1.0, eps: float | jax.Array = 1e-6
) -> GradientTransformation:
    """Divide the updates by their joint L2 norm: a step of fixed length :math:`s`.

    .. math:: u \\leftarrow s\\, \\frac{g}{\\lVert g\\rVert_2 + \\epsilon}

    with the norm taken over every leaf at once (complex leaves by their moduli).

    Args:
      scale_factor: :math:`s`, the step's length and sign (-1 for descent without a
        learning rate block); any finite number.
      eps: :math:`\\epsilon \\ge 0`, keeps a zero update finite.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.normalize_by_update_norm(eps=0.0)
      >>> updates, state = tx.update({"w": jnp.array([3.0, 4.0])}, tx.init(None))
      >>> print(np.asarray(updates["w"]).round(4))
      [0.6 0.8]

    References:
      optax: ``optax.normalize_by_update_norm``.
    """
    checks.check_hyperparams(
        "normalize_by_update_norm",
        scale_factor=(scale_factor, "(-inf, inf)"),
        eps=(eps, checks.NONNEGATIVE),
    )

    def update(updates, state, params=None, **extra):
        norm = (tree.tree_norm(updates) + eps) / scale_factor
        return jax.tree.map(lambda g: g / norm, updates), state

    return GradientTransformation(init_empty_state, update)
