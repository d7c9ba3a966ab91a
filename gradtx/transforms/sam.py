"""SAM (sharpness-aware minimization): adversarial steps, then an outer step from where they led."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    apply_updates,
    extras_filter,
    init_empty_state,
)

NormalizeState = EmptyState


def normalize() -> GradientTransformation:
    """Divide the updates by their global L2 norm: :math:`u \\leftarrow g / \\|g\\|_2`.

    The norm is taken over every leaf together (:math:`|g|^2 = g\\bar g` for complex
    ones). A zero gradient stays zero, where optax's 0/0 gives NaN.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.contrib.normalize()
      >>> updates, _ = tx.update({"w": jnp.array([3.0, -4.0])}, tx.init(None))
      >>> print(np.asarray(updates["w"]).round(4))
      [ 0.6 -0.8]

    References:
      Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization",
        ICLR 2021 (arXiv:2010.01412).

      optax: ``optax.contrib.normalize``.
    """

    def update(updates, state, params=None, **extra):
        norm = tree.tree_norm(updates)
        safe = jnp.where(norm == 0, 1, norm)
        return jax.tree.map(lambda g: g / safe.astype(tree.real_dtype(g.dtype)), updates), state

    return GradientTransformation(init_empty_state, update)


class SAMState(NamedTuple):
    """State of :func:`sam` (optax's fields)."""

    steps_since_sync: jax.Array  # int32 scalar: adversarial steps since the last outer step
    opt_state: Any  # the outer optimizer's state
    adv_state: Any  # the adversarial optimizer's state
    cache: Any  # the params of the last outer step (None in opaque mode)


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _on_floats(f: Callable[..., Any], updates: Any, *trees: Any) -> Any:
    """``f`` on the floating and complex leaves; integer and float0 ones keep their update."""
    return jax.tree.map(lambda g, *xs: f(g, *xs) if _is_float(g) else g, updates, *trees)


def _pick(condition: jax.Array, if_true: Any, if_false: Any) -> Any:
    # A select, where optax's cond * a + (1 - cond) * b turns an inf in the branch not taken
    # into NaN; the two agree on finite values.
    return jax.tree.map(lambda a, b: jnp.where(condition, a, b), if_true, if_false)


def sam(
    optimizer: GradientTransformation,
    adv_optimizer: GradientTransformation,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: str | None = None,
) -> GradientTransformationExtraArgs:
    """SAM: ``sync_period - 1`` adversarial ascent steps, then one outer step from their end.

    With :math:`A` the adversarial optimizer and :math:`O` the outer one, a cycle starting
    at the params :math:`\\theta` (the cache) is, for :math:`k = 1, \\dots, K-1`
    (:math:`K` = ``sync_period``):

    .. math::
        \\tilde\\theta_k = \\tilde\\theta_{k-1} - A(g(\\tilde\\theta_{k-1})), \\quad
        \\tilde\\theta_0 = \\theta, \\qquad
        \\theta' = \\theta + O(g(\\tilde\\theta_{K-1})).

    SAM of the paper is ``sam(sgd(lr), chain(normalize(), sgd(rho)))``:
    :math:`\\tilde\\theta = \\theta + \\rho\\, g/\\|g\\|`, then a gradient step from
    :math:`\\theta` with the gradient at :math:`\\tilde\\theta`.

    In the default (transparent) mode each ``update`` is one step of the cycle: the
    adversarial ones hand back :math:`-A(g)`, the last one moves the params from
    :math:`\\tilde\\theta_{K-1}` back to :math:`\\theta'`. With ``opaque_mode`` one
    ``update`` runs the whole cycle, calling ``grad_fn(params, k)`` (an extra argument)
    for the gradients at the adversarial points, so only outer steps reach the params
    (needed when each update has side effects, such as batch-norm statistics).

    Other extras reach both optimizers (each gets those it accepts), where optax's sam
    takes none. Integer and float0 leaves keep their incoming update.

    Args:
      optimizer: the outer optimizer :math:`O`.
      adv_optimizer: the adversarial optimizer :math:`A`, whose updates are negated.
      sync_period: :math:`K \\ge 1`, the steps of a cycle (``K - 1`` adversarial ones).
      reset_state: re-initialize the adversarial optimizer's state after each outer step.
      opaque_mode: run the whole cycle in each ``update`` (needs the ``grad_fn`` extra).
      batch_axis_name: in opaque mode, the mapped axis over which ``grad_fn``'s gradients
        are averaged (``jax.lax.pmean``), for data-parallel training.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, gradtx
      >>> adv = gradtx.chain(gradtx.contrib.normalize(), gradtx.sgd(0.1))
      >>> opt = gradtx.contrib.sam(gradtx.sgd(0.5), adv, opaque_mode=True)
      >>> loss = lambda p: jnp.sum(p**2)
      >>> params = jnp.array([3.0, 4.0])
      >>> grad_fn = lambda p, _: jax.grad(loss)(p)  # the gradient at the adversarial point
      >>> updates, state = opt.update(grad_fn(params, 0), opt.init(params), params,
      ...                             grad_fn=grad_fn)
      >>> print(np.asarray(updates).round(4))  # -0.5 * 2 * (params + 0.1 * params / 5)
      [-3.06 -4.08]

    References:
      Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization",
        ICLR 2021 (arXiv:2010.01412).

      optax: ``optax.contrib.sam``.
    """
    who = "sam"
    sync_period = checks.check_length(who, "sync_period", sync_period, wording="integer",
                                      at_most=tree.INT32_MAX)  # fmt: skip
    keep_opt, keep_adv = extras_filter(optimizer.update), extras_filter(adv_optimizer.update)

    def init(params):
        return SAMState(
            steps_since_sync=tree.zeros_count(),
            opt_state=optimizer.init(params),
            adv_state=adv_optimizer.init(params),
            # A copy: the cache and the params are distinct buffers, so both can be donated.
            cache=None if opaque_mode else jax.tree.map(lambda p: jnp.array(p, copy=True), params),
        )

    def transparent_update(updates, state, params=None, *, grad_fn=None, **extra):
        del grad_fn  # the caller computes each gradient
        checks.require_params(who, params)
        first_step = state.steps_since_sync == 0
        last_step = state.steps_since_sync == sync_period - 1
        adv_updates, adv_state = adv_optimizer.update(
            updates, state.adv_state, params, **keep_adv(extra)
        )
        adv_updates = _on_floats(lambda u: -u, adv_updates)
        opt_updates, opt_state = optimizer.update(
            updates, state.opt_state, state.cache, **keep_opt(extra)
        )
        # From the adversarial point back to the cache, then the outer step.
        opt_updates = _on_floats(lambda u, c, p: c - p + u, opt_updates, state.cache, params)
        cache = _pick(first_step, params, state.cache)
        updates = _pick(last_step, opt_updates, adv_updates)
        kept_adv_state = adv_optimizer.init(params) if reset_state else state.adv_state
        return updates, SAMState(
            steps_since_sync=(state.steps_since_sync + 1) % sync_period,
            opt_state=_pick(last_step, opt_state, state.opt_state),
            adv_state=_pick(last_step, kept_adv_state, adv_state),
            cache=cache,
        )

    def opaque_update(updates, state, params=None, *, grad_fn=None, **extra):
        if grad_fn is None:
            raise ValueError(
                f"{who}: opaque_mode=True needs the extra argument grad_fn(params, k), the "
                f"gradient at the k-th adversarial point: update(updates, state, params, "
                f"grad_fn=grad_fn)"
            )
        checks.require_params(who, params)
        adv_params, adv_grads, adv_state = params, updates, state.adv_state
        for k in range(sync_period - 1):
            adv_updates, adv_state = adv_optimizer.update(
                adv_grads, adv_state, adv_params, **keep_adv(extra)
            )
            adv_params = apply_updates(adv_params, _on_floats(lambda u: -u, adv_updates))
            adv_grads = grad_fn(adv_params, k)
            if batch_axis_name is not None:
                adv_grads = jax.lax.pmean(adv_grads, axis_name=batch_axis_name)
        if reset_state:
            adv_state = adv_optimizer.init(params)
        updates, opt_state = optimizer.update(adv_grads, state.opt_state, params, **keep_opt(extra))
        return updates, SAMState(tree.zeros_count(), opt_state, adv_state, None)

    return GradientTransformationExtraArgs(
        init, opaque_update if opaque_mode else transparent_update
    )
