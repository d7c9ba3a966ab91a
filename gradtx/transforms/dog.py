"""DoG and DoWG: one global step size, the distance travelled from the initial params over
the gradients' (weighted) root sum of squares."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation
from gradtx.transforms.dadapt import copy_params, scalar_dtype

INIT_STEPS = ("distance", "learning_rate", "heuristic")


class DoGState(NamedTuple):
    """State of :func:`scale_by_dog` (optax's fields)."""

    is_init_step: jax.Array  # bool scalar: no update applied yet
    init_params: Any  # the params at init, x_0
    max_dist: jax.Array  # scalar: the largest distance from x_0 so far, r_t
    sum_sq_norm_grads: jax.Array  # scalar: the sum of the squared gradient norms, G_t


class DoWGState(NamedTuple):
    """State of :func:`scale_by_dowg` (optax's fields)."""

    init_params: Any  # the params at init, x_0
    weighted_sq_norm_grads: jax.Array  # scalar: sum of r_k^2 ||g_k||^2, v_t
    estim_sq_dist: jax.Array  # scalar: the largest squared distance from x_0 so far, r_t^2


def _init_step(who: str, init_step: Any) -> tuple[str, Any]:
    try:
        kind, value = init_step
    except (TypeError, ValueError):
        kind, value = None, None
    if not isinstance(kind, str) or kind not in INIT_STEPS:
        reported, name = checks.reported_name(who, "init_step")
        raise ValueError(
            f"{reported}: {name} must be a pair (kind, value) with kind one of "
            f"{', '.join(map(repr, INIT_STEPS))}, got {init_step!r}"
        )
    checks.check_interval(who, "init_step[1]", value, checks.POSITIVE)
    return kind, value


def scale_by_dog(
    init_step: tuple[str, Any], eps: float | jax.Array = 1e-8
) -> GradientTransformation:
    """Ivgi, Hinder and Carmon's DoG: scale by the distance travelled over the gradients.

    With :math:`x_0` the params at init and :math:`x_t` those this update is taken at:

    .. math::
        \\bar r_t = \\max(\\bar r_{t-1}, \\lVert x_t - x_0 \\rVert), \\quad
        G_t = G_{t-1} + \\lVert g_t \\rVert^2, \\quad
        u_t = \\frac{\\bar r_t}{\\sqrt{G_t + \\epsilon}}\\, g_t,

    the norms taken over the whole tree. ``init_step`` sets the start: ``("distance",
    r)`` gives :math:`\\bar r_0 = r`; ``("heuristic", \\alpha)`` gives :math:`\\bar r_0 =
    \\alpha (1 + \\lVert x_0 \\rVert)` (so ``init`` needs the real params); and
    ``("learning_rate", \\eta)`` gives :math:`\\bar r_0 = 0` and a first step size of
    :math:`\\eta`. The update points up the gradient; follow it by a negative scale (as
    :func:`gradtx.contrib.dog` does). ``update`` needs the params.

    Complex leaves follow optax: their norms are the moduli's (the estimates stay real).

    Args:
      init_step: ``(kind, value)`` with kind ``"distance"``, ``"learning_rate"`` or
        ``"heuristic"`` and value :math:`> 0` (the authors suggest ``("heuristic", 1e-6)``,
        or 1e-4 for models with batch norm).
      eps: :math:`\\epsilon \\ge 0`, inside the root.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx.transforms.dog import scale_by_dog
      >>> tx = scale_by_dog(("distance", 0.5))
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> updates, state = tx.update({"w": jnp.array([1.0, 0.0])}, tx.init(params), params)
      >>> print(np.asarray(updates["w"]).round(4))  # 0.5 / sqrt(1) * g
      [0.5 0. ]

    References:
      Ivgi, Hinder and Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
        Size Schedule", ICML 2023 (arXiv:2302.12022).

      optax: ``optax.contrib.scale_by_dog``.
    """
    who = "scale_by_dog"
    kind, value = _init_step(who, init_step)
    checks.check_hyperparams(who, eps=(eps, checks.NONNEGATIVE))

    def init(params):
        if kind == "distance":
            r_epsilon = value
        elif kind == "heuristic":
            r_epsilon = value * (1 + tree.tree_norm(params))
        else:
            r_epsilon = 0.0
        dtype = scalar_dtype(params)
        return DoGState(
            is_init_step=jnp.asarray(True),
            init_params=copy_params(params),
            max_dist=jnp.asarray(r_epsilon, dtype),
            sum_sq_norm_grads=jnp.asarray(0.0, dtype),
        )

    def update(updates, state, params=None, **extra):
        checks.require_params(who, params, "the distance travelled")
        checks.check_trees_match(
            who, "updates", updates, params=params, **{"state.init_params": state.init_params}
        )
        dist = tree.tree_norm(tree.tree_sub(state.init_params, params))
        max_dist = jnp.maximum(state.max_dist, dist)
        sum_sq_norm_grads = state.sum_sq_norm_grads + tree.tree_norm(updates, squared=True)
        learning_rate = max_dist / jnp.sqrt(sum_sq_norm_grads + eps)
        if kind == "learning_rate":
            learning_rate = jnp.where(state.is_init_step, value, learning_rate)
        return tree.tree_scale(learning_rate, updates), DoGState(
            is_init_step=jnp.asarray(False),
            init_params=state.init_params,
            max_dist=max_dist.astype(state.max_dist.dtype),
            sum_sq_norm_grads=sum_sq_norm_grads.astype(state.sum_sq_norm_grads.dtype),
        )

    return GradientTransformation(init, update)


def scale_by_dowg(
    init_estim_sq_dist: float | jax.Array | None = None, eps: float | jax.Array = 1e-4
) -> GradientTransformation:
    """Khaled, Mishchenko and Jin's DoWG: DoG with gradients weighted by the distance.

    With :math:`x_0` the params at init and :math:`x_t` those this update is taken at:

    .. math::
        \\bar r_t^2 = \\max(\\bar r_{t-1}^2, \\lVert x_t - x_0 \\rVert^2), \\quad
        v_t = v_{t-1} + \\bar r_t^2 \\lVert g_t \\rVert^2, \\quad
        u_t = \\frac{\\bar r_t^2}{\\sqrt{v_t} + \\epsilon}\\, g_t,

    the norms taken over the whole tree, :math:`\\bar r_0^2` the ``init_estim_sq_dist``
    (:math:`\\epsilon` when None) and :math:`v_0 = 0`. The update points up the gradient;
    follow it by a negative scale (as :func:`gradtx.contrib.dowg` does). ``update`` needs
    the params.

    Complex leaves follow optax: their norms are the moduli's (the estimates stay real).

    Args:
      init_estim_sq_dist: :math:`\\bar r_0^2 > 0`, the initial guess of the squared
        distance to a solution, or None for :math:`\\epsilon`.
      eps: :math:`\\epsilon \\ge 0` added to the root (:math:`> 0` when it is also the
        initial squared distance).

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx.transforms.dog import scale_by_dowg
      >>> tx = scale_by_dowg(init_estim_sq_dist=4.0, eps=0.0)
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> updates, state = tx.update({"w": jnp.array([1.0, 0.0])}, tx.init(params), params)
      >>> print(np.asarray(updates["w"]).round(4))  # 4 / sqrt(4 * 1) * g
      [2. 0.]

    References:
      Khaled, Mishchenko and Jin, "DoWG Unleashed: An Efficient Universal Parameter-Free
        Gradient Descent Method", NeurIPS 2023 (arXiv:2305.16284).

      optax: ``optax.contrib.scale_by_dowg``.
    """
    who = "scale_by_dowg"
    checks.check_hyperparams(
        who,
        init_estim_sq_dist=(init_estim_sq_dist, checks.POSITIVE),
        eps=(eps, checks.POSITIVE if init_estim_sq_dist is None else checks.NONNEGATIVE),
    )
    start = eps if init_estim_sq_dist is None else init_estim_sq_dist

    def init(params):
        dtype = scalar_dtype(params)
        return DoWGState(
            init_params=copy_params(params),
            weighted_sq_norm_grads=jnp.asarray(0.0, dtype),
            estim_sq_dist=jnp.asarray(start, dtype),
        )

    def update(updates, state, params=None, **extra):
        checks.require_params(who, params, "the distance travelled")
        checks.check_trees_match(
            who, "updates", updates, params=params, **{"state.init_params": state.init_params}
        )
        curr_sq_dist = tree.tree_norm(tree.tree_sub(state.init_params, params), squared=True)
        estim_sq_dist = jnp.maximum(state.estim_sq_dist, curr_sq_dist)
        step_sq_norm_grads = tree.tree_norm(updates, squared=True)
        weighted_sq_norm_grads = estim_sq_dist * step_sq_norm_grads + state.weighted_sq_norm_grads
        learning_rate = estim_sq_dist / (jnp.sqrt(weighted_sq_norm_grads) + eps)
        return tree.tree_scale(learning_rate, updates), state._replace(
            estim_sq_dist=estim_sq_dist.astype(state.estim_sq_dist.dtype),
            weighted_sq_norm_grads=weighted_sq_norm_grads.astype(
                state.weighted_sq_norm_grads.dtype
            ),
        )

    return GradientTransformation(init, update)
