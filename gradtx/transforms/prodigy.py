"""Prodigy: D-Adaptation AdamW whose distance estimate weighs recent gradients more."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation, ScalarOrSchedule, float_leaves
from gradtx.transforms.dadapt import (
    NO_COMPLEX,
    copy_params,
    scalar_dtype,
    unpack_betas,
)


class ProdigyState(NamedTuple):
    """State of :func:`prodigy` (optax's fields)."""

    exp_avg: Any  # first moment of d_t g_t
    exp_avg_sq: Any  # second moment of d_t g_t
    grad_sum: Any  # running weighted sum of the scaled gradients, s_t
    params0: Any  # the params at init, x_0
    estim_lr: jax.Array  # scalar: the distance estimate d_t
    numerator_weighted: jax.Array  # scalar: the running weighted sum of <g_t, x_0 - x_t>
    count: jax.Array  # int32 scalar: updates applied so far


def prodigy(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[Any, Any] = (0.9, 0.999),
    beta3: float | jax.Array | None = None,
    eps: float | jax.Array = 1e-8,
    estim_lr0: float | jax.Array = 1e-6,
    estim_lr_coef: float | jax.Array = 1.0,
    weight_decay: ScalarOrSchedule = 0.0,
    safeguard_warmup: bool = False,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Mishchenko and Defazio's Prodigy: AdamW with an adapted, learning-rate-free step size.

    With :math:`t` the 1-based number of this update, :math:`\\eta_t` the schedule at
    :math:`t - 1`, :math:`d_t` the distance estimate (``estim_lr``, :math:`d_1 = d_0`),
    :math:`x_0` the params at init, :math:`c` the ``estim_lr_coef`` and :math:`\\lambda_t`
    the decoupled weight decay:

    .. math::
        \\gamma_t = d_t \\eta_t \\frac{\\sqrt{1-\\beta_2^t}}{1-\\beta_1^t}, \\quad
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) d_t g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) d_t^2 g_t^2,

    .. math::
        s_t = \\beta_3 s_{t-1} + \\frac{\\gamma_t d_t}{d_0} g_t, \\quad
        r_t = \\beta_3 r_{t-1} + \\frac{\\gamma_t d_t}{d_0} \\langle g_t, x_0 - x_t \\rangle,
        \\quad d_{t+1} = \\max\\Big(d_t, \\frac{c\\, r_t}{\\lVert s_t \\rVert_1}\\Big),

    .. math::
        u_t = -\\gamma_t \\Big(\\frac{m_t}{\\sqrt{v_t} + d_{t+1} \\epsilon}
        + \\lambda_t \\theta_t\\Big)

    with :math:`\\beta_3 = \\sqrt{\\beta_2}` unless given. ``safeguard_warmup`` weighs
    :math:`s_t`'s new term by :math:`d_t^2 / d_0` instead (no :math:`\\eta_t`), so a warm-up
    that starts the schedule near 0 does not inflate the estimate. Use a schedule peaking
    at 1 for ``learning_rate``. ``update`` needs the params.

    Complex leaves raise ``ValueError`` naming the leaf: optax squares a complex gradient
    (:math:`g^2`, not :math:`|g|^2`) and compares complex estimates.

    Args:
      learning_rate: :math:`\\eta_t \\ge 0`, a multiplier of the adapted step size, or a
        schedule of it (the authors recommend a warm-up then a linear decay to 0 from 1).
      betas: :math:`(\\beta_1, \\beta_2)`, each in [0, 1), Adam's decays.
      beta3: :math:`\\beta_3` in [0, 1), the decay of :math:`s_t` and :math:`r_t`, or None
        for :math:`\\sqrt{\\beta_2}`.
      eps: :math:`\\epsilon \\ge 0`, outside the root, scaled by :math:`d_{t+1}`.
      estim_lr0: :math:`d_0 > 0`, the initial under-estimate of the distance.
      estim_lr_coef: :math:`c \\ge 0`, a factor of every new estimate.
      weight_decay: :math:`\\lambda \\ge 0`, AdamW's decoupled weight decay scaled by
        :math:`\\gamma_t`, or a schedule of it (optax takes a number only).
      safeguard_warmup: leave :math:`\\eta_t` out of :math:`s_t`'s new term.
      state_dtype: dtype of the stored moments :math:`m, v, s` (e.g. ``jnp.bfloat16``);
        arithmetic runs in the gradients' dtype, bfloat16 rounds stochastically.
        :math:`x_0` keeps the params' dtype (its rounding would swamp the distance
        travelled) and the scalars the params' lowest.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> from gradtx.transforms.prodigy import prodigy
      >>> opt = prodigy(estim_lr0=0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # the first step is -d_0 sign(g)
      [-0.1  0.1]
      >>> print(state.estim_lr)  # x_1 = x_0: no distance travelled yet
      0.1

    References:
      Mishchenko and Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free
        Learner", ICML 2024 (arXiv:2306.06101).

      optax: ``optax.contrib.prodigy``.
    """
    who = "prodigy"
    beta1, beta2 = unpack_betas(who, betas)
    checks.check_hyperparams(
        who,
        learning_rate=(learning_rate, checks.NONNEGATIVE),
        beta3=(beta3, checks.DECAY),
        eps=(eps, checks.NONNEGATIVE),
        estim_lr0=(estim_lr0, checks.POSITIVE),
        estim_lr_coef=(estim_lr_coef, checks.NONNEGATIVE),
        weight_decay=(weight_decay, checks.NONNEGATIVE),
    )
    state_dtype = checks.check_state_dtype(who, state_dtype)
    if beta3 is None:
        beta3 = beta2**0.5

    def init(params):
        tree.reject_complex(who, params, NO_COMPLEX)
        dtype = scalar_dtype(params)
        return ProdigyState(
            tree.state_zeros_like(params, state_dtype),
            tree.state_zeros_like(params, state_dtype),
            tree.state_zeros_like(params, state_dtype),
            copy_params(params),
            jnp.asarray(estim_lr0, dtype),
            jnp.zeros((), dtype),
            tree.zeros_count(),
        )

    def update(updates, state, params=None, **extra):
        checks.require_params(who, params, "the distance from the initial params")
        tree.reject_complex(who, updates, NO_COMPLEX)
        checks.check_moments(who, updates, state, "exp_avg", "exp_avg_sq", "grad_sum")
        checks.check_trees_match(
            who, "updates", updates, params=params, **{"state.params0": state.params0}
        )
        count_inc = tree.safe_increment(state.count)
        sched = tree.resolve(learning_rate, state.count)
        decay = tree.resolve(weight_decay, state.count)
        estim_lr = state.estim_lr
        bc = ((1 - beta2**count_inc) ** 0.5) / (1 - beta1**count_inc)
        dlr = jnp.asarray(estim_lr * sched * bc, dtype=estim_lr.dtype)
        dg = jax.tree.map(lambda g: estim_lr * g, updates)
        param_diff = jax.tree.map(lambda p0, p: p0 - p, state.params0, params)
        numerator_acum = tree.tree_vdot(updates, param_diff)
        exp_avg_stored, exp_avg = tree.moment(
            state.exp_avg, updates, state_dtype,
            lambda m: jax.tree.map(lambda ea, d: beta1 * ea + (1 - beta1) * d, m, dg),
            count_inc,
        )  # fmt: skip
        exp_avg_sq_stored, exp_avg_sq = tree.moment(
            state.exp_avg_sq, updates, state_dtype,
            lambda v: jax.tree.map(lambda eas, d: beta2 * eas + (1 - beta2) * d * d, v, dg),
            count_inc,
        )  # fmt: skip
        weight = estim_lr if safeguard_warmup else dlr
        grad_sum_stored, grad_sum = tree.moment(
            state.grad_sum, updates, state_dtype,
            lambda s: jax.tree.map(lambda sk, d: beta3 * sk + weight * d / estim_lr0, s, dg),
            count_inc,
        )  # fmt: skip
        numerator_weighted = beta3 * state.numerator_weighted
        numerator_weighted += (estim_lr / estim_lr0) * dlr * numerator_acum
        denominator = tree.tree_sum(jax.tree.map(jnp.abs, grad_sum))
        # No gradient seen yet (all zero, or underflowed): 0 / 0, where optax's d turns NaN
        # for good; Prodigy's authors skip the estimate then, and so does this.
        lr_estimate = estim_lr_coef * numerator_weighted / denominator
        lr_estimate = jnp.where(denominator > 0, lr_estimate, state.estim_lr)
        estim_lr = jnp.maximum(state.estim_lr, lr_estimate)
        new_updates = jax.tree.map(
            lambda ea, eas, p: -decay * dlr * p - dlr * ea / (jnp.sqrt(eas) + estim_lr * eps),
            exp_avg,
            exp_avg_sq,
            params,
        )
        return new_updates, ProdigyState(
            exp_avg_stored,
            exp_avg_sq_stored,
            grad_sum_stored,
            state.params0,
            estim_lr.astype(state.estim_lr.dtype),
            numerator_weighted.astype(state.numerator_weighted.dtype),
            count_inc,
        )

    return float_leaves(GradientTransformation(init, update))
