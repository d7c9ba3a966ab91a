"""Mechanic: learn the scale of any learner's updates by betting on it, online."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation, float_leaves, with_extra_args_support
from gradtx.transforms.dadapt import copy_params, scalar_dtype


class MechanicState(NamedTuple):
    """State of :func:`mechanize` (optax's fields)."""

    base_optimizer_state: Any  # the wrapped learner's state
    count: jax.Array  # int32 scalar: updates applied so far
    r: jax.Array  # (num_betas,): the running rewards
    m: jax.Array  # (num_betas,): the running maxima of |h|
    v: jax.Array  # (num_betas,): the running sums of h^2
    s: jax.Array  # (num_betas,): the scales, summed into the one applied
    x0: Any  # the params the first update was taken at


def mechanize(
    base_optimizer: GradientTransformation,
    weight_decay: float | jax.Array = 1e-2,
    eps: float | jax.Array = 1e-8,
    s_init: float | jax.Array = 1e-6,
    num_betas: int = 6,
) -> GradientTransformation:
    """Cutkosky, Defazio and Mehta's Mechanic: a learned scale for ``base_optimizer``'s steps.

    With :math:`x_0` the params of the first update, :math:`\\Delta_t` the sum of the base
    learner's updates so far (:math:`\\Delta_0 = 0`), :math:`S_t = \\sum_i s_{t,i}` and
    :math:`\\beta_i = 1 - 10^{-i}` for :math:`i = 1, \\dots, n` (``num_betas``), each
    update, taken at :math:`x_t = x_0 + S_{t-1} \\Delta_{t-1}`, runs the base learner on
    :math:`g_t` and then

    .. math::
        \\tilde g_t = g_t + \\lambda S_{t-1} \\frac{\\lVert g_t \\rVert}
        {\\lVert x_t \\rVert + \\epsilon} x_t, \\quad
        h_t = \\Big\\langle \\tilde g_t, \\frac{x_0 - x_t}{S_{t-1} + \\epsilon} \\Big\\rangle,

    .. math::
        m_t = \\max(\\beta m_{t-1}, |h_t| + \\epsilon), \\quad
        v_t = \\beta^2 v_{t-1} + h_t^2, \\quad
        r_t = \\beta r_{t-1} + \\operatorname{clip}(h_t, -m_{t-1}, m_{t-1})\\, s_{t-1},

    .. math::
        s_t = \\frac{s_0 m_t / n + \\max(r_t, 0)}{\\sqrt{v_t} + \\epsilon}, \\qquad
        x_{t+1} = x_0 - S_t \\Big(\\frac{x_0 - x_t}{S_{t-1} + \\epsilon} - u^{base}_t\\Big)

    elementwise over the :math:`n` betas, the norms and the inner product over the whole
    tree; the update is :math:`x_{t+1} - x_t`. :math:`x_0` is taken from the first
    ``update``'s params, not ``init``'s (so weights loaded after ``init`` count). Give the
    base learner a learning rate (or schedule) peaking at 1: Mechanic learns the scale.
    Keyword extras (``value``, ...) reach the base learner. ``update`` needs the params.

    For complex leaves :math:`h_t` is the real inner product,
    :math:`\\operatorname{Re}\\sum \\overline{\\tilde g}\\, \\Delta` (the one of
    :math:`\\mathbb{C}` seen as :math:`\\mathbb{R}^2`), and the norms are the moduli's;
    optax's complex :math:`h_t` fails in ``lax.clamp``.

    Args:
      base_optimizer: the learner whose updates are scaled (any gradtx or optax transform).
      weight_decay: :math:`\\lambda \\ge 0`, Mechanic's own decay of the gradient it bets
        with (not the base learner's).
      eps: :math:`\\epsilon > 0`.
      s_init: :math:`s_0 > 0`, the initial scale of each beta.
      num_betas: :math:`n \\ge 1`, the number of decays :math:`1 - 10^{-i}` bet on at once.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> from gradtx.transforms.mechanic import mechanize
      >>> opt = mechanize(gradtx.sgd(1.0))
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(state.s.sum())  # x_1 = x_0, so h_1 = 0: each s is s_0 / n, and S_1 = s_0
      1e-06

    References:
      Cutkosky, Defazio and Mehta, "Mechanic: A Learning Rate Tuner", NeurIPS 2023
        (arXiv:2306.00144).

      optax: ``optax.contrib.mechanize``.
    """
    who = "mechanize"
    checks.check_hyperparams(
        who,
        weight_decay=(weight_decay, checks.NONNEGATIVE),
        eps=(eps, checks.POSITIVE),
        s_init=(s_init, checks.POSITIVE),
    )
    num_betas = checks.check_length(who, "num_betas", num_betas, wording="positive")
    base = with_extra_args_support(base_optimizer)

    def init(params):
        dtype = scalar_dtype(params)
        return MechanicState(
            base_optimizer_state=base.init(params),
            count=tree.zeros_count(),
            r=jnp.zeros([num_betas], dtype),
            m=jnp.zeros([num_betas], dtype),
            v=jnp.zeros([num_betas], dtype),
            s=jnp.ones([num_betas], dtype) * s_init,
            x0=copy_params(params),
        )

    def update(updates, state, params=None, **extra):
        checks.require_params(who, params, "the distance travelled")
        checks.check_trees_match(who, "updates", updates, params=params, **{"state.x0": state.x0})
        count_inc = tree.safe_increment(state.count)
        new_neg_updates, base_optimizer_state = base.update(
            updates, state.base_optimizer_state, params, **extra
        )
        # Training loops often load pretrained weights after init: start from the params
        # the first update is taken at.
        x0 = jax.lax.cond(state.count == 0, lambda: params, lambda: state.x0)
        s_sum = jnp.sum(state.s)
        grad_norm = tree.tree_norm(updates)
        param_norm = tree.tree_norm(params)
        updates = jax.tree.map(
            lambda g, p: g + weight_decay * s_sum * grad_norm / (param_norm + eps) * p,
            updates,
            params,
        )
        # The memory-light form: Delta_{t-1} recomputed from x_t rather than stored.
        delta_prev = jax.tree.map(lambda x, x0: (x0 - x) / (s_sum + eps), params, x0)
        delta = jax.tree.map(lambda d, u: d - u, delta_prev, new_neg_updates)
        h = jnp.real(tree.tree_vdot(updates, delta_prev))
        clipped_h = jax.lax.clamp(-state.m, jnp.ones_like(state.m) * h, state.m)
        betas = jnp.array([1.0 - 0.1**i for i in range(1, num_betas + 1)], dtype=state.s.dtype)
        m = jnp.maximum(betas * state.m, jnp.abs(h) + eps)
        v = (betas**2) * state.v + h**2
        r = betas * state.r + clipped_h * state.s
        wealth = (s_init / jnp.size(betas)) * m + jnp.maximum(0.0, r)
        s = wealth / (jnp.sqrt(v) + eps)
        new_params = jax.tree.map(lambda x0, d: x0 - jnp.sum(s) * d, x0, delta)
        new_updates = jax.tree.map(lambda new, old: new - old, new_params, params)
        return new_updates, MechanicState(
            base_optimizer_state=base_optimizer_state,
            count=count_inc,
            r=r.astype(state.r.dtype),
            m=m.astype(state.m.dtype),
            v=v.astype(state.v.dtype),
            s=s.astype(state.s.dtype),
            x0=x0,
        )

    return float_leaves(GradientTransformation(init, update))
