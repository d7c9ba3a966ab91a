"""D-Adaptation AdamW: Adam whose learning rate is a growing lower bound on the distance to a
solution, estimated from the gradients seen so far."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation, ScalarOrSchedule, float_leaves

# optax's rules square complex gradients (g * g, not |g|^2) and take the maximum of complex
# estimates; there is no complex D-Adaptation to match.
NO_COMPLEX = " (optax's squares complex gradients where Adam needs |g|^2)"


class DAdaptAdamWState(NamedTuple):
    """State of :func:`dadapt_adamw` (optax's fields)."""

    exp_avg: Any  # first moment of the gradients scaled by the step size
    exp_avg_sq: Any  # second moment of the gradients
    grad_sum: Any  # running weighted sum of the scaled gradients, s_t
    estim_lr: jax.Array  # scalar: the distance estimate d_t
    numerator_weighted: jax.Array  # scalar: the running weighted sum of <g, s / (sqrt(v) + eps)>
    count: jax.Array  # int32 scalar: updates applied so far


def unpack_betas(who: str, betas: Any) -> tuple[Any, Any]:
    """``(beta1, beta2)`` from optax's ``betas`` pair, each checked to lie in [0, 1)."""
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        reported, name = checks.reported_name(who, "betas")
        raise ValueError(
            f"{reported}: {name} must be a pair (beta1, beta2), got {betas!r}"
        ) from None
    checks.check_hyperparams(
        who, **{"betas[0]": (beta1, checks.DECAY), "betas[1]": (beta2, checks.DECAY)}
    )
    return beta1, beta2


def scalar_dtype(params: Any) -> Any:
    """The dtype of the scalar estimates: the params' lowest, as optax's (real for complex)."""
    return tree.real_dtype(tree.tree_dtype(params, "lowest"))


def copy_params(params: Any) -> Any:
    """The params kept in the state, in buffers of their own.

    optax keeps the params' own arrays: a train step that donates both the params
    and the state (:func:`gradtx.make_train_step` does) would donate each buffer twice.
    """
    return jax.tree.map(jnp.copy, params)


def dadapt_adamw(
    learning_rate: ScalarOrSchedule = 1.0,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: float | jax.Array = 1e-8,
    estim_lr0: float | jax.Array = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Defazio and Mishchenko's D-Adaptation for AdamW: no learning rate to tune.

    With :math:`t` the 1-based number of this update, :math:`\\eta_t` the schedule at
    :math:`t - 1`, :math:`d_t` the distance estimate (``estim_lr``, :math:`d_1 = d_0`),
    :math:`\\beta = \\sqrt{\\beta_2}` and :math:`\\lambda_t` the decoupled weight decay:

    .. math::
        \\gamma_t = d_t \\eta_t \\frac{\\sqrt{1-\\beta_2^t}}{1-\\beta_1^t}, \\quad
        r_t = \\beta r_{t-1} + (1-\\beta) \\gamma_t
        \\Big\\langle g_t, \\frac{s_{t-1}}{\\sqrt{v_{t-1}} + \\epsilon} \\Big\\rangle,

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) \\gamma_t g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2, \\quad
        s_t = \\beta s_{t-1} + (1-\\beta) \\gamma_t g_t,

    .. math::
        d_{t+1} = \\max\\Big(d_t, \\frac{r_t}{(1-\\beta) \\lVert s_t \\rVert_1}\\Big), \\qquad
        u_t = -\\frac{m_t}{\\sqrt{v_t} + \\epsilon} - \\lambda_t \\gamma_t \\theta_t.

    :math:`d_t` is a lower bound on the infinity-norm distance from the initial point to a
    solution; it only grows. Use a schedule peaking at 1 for ``learning_rate``.

    Complex leaves raise ``ValueError`` naming the leaf: optax squares a complex gradient
    (:math:`g^2`, not :math:`|g|^2`) and compares complex estimates.

    Args:
      learning_rate: :math:`\\eta_t \\ge 0`, a multiplier of the adapted step size, or a
        schedule of it (the authors recommend a warm-up then a linear decay to 0 from 1).
      betas: :math:`(\\beta_1, \\beta_2)`, each in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      estim_lr0: :math:`d_0 > 0`, the initial under-estimate of the distance.
      weight_decay: :math:`\\lambda \\ge 0`, AdamW's decoupled weight decay scaled by
        :math:`\\gamma_t`, or a schedule of it (optax takes a number only).
      state_dtype: dtype of the stored moments :math:`m, v, s` (e.g. ``jnp.bfloat16``);
        arithmetic runs in the gradients' dtype, bfloat16 rounds stochastically. The
        scalars stay in the params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> from gradtx.transforms.dadapt import dadapt_adamw
      >>> opt = dadapt_adamw(estim_lr0=0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # the first step is -d_0 sign(g)
      [-0.1  0.1]
      >>> print(state.estim_lr)  # s_0 = 0: nothing learnt yet
      0.1

    References:
      Defazio and Mishchenko, "Learning-Rate-Free Learning by D-Adaptation", ICML 2023
        (arXiv:2301.07733).

      optax: ``optax.contrib.dadapt_adamw``.
    """
    who = "dadapt_adamw"
    beta1, beta2 = unpack_betas(who, betas)
    checks.check_hyperparams(
        who,
        learning_rate=(learning_rate, checks.NONNEGATIVE),
        eps=(eps, checks.NONNEGATIVE),
        estim_lr0=(estim_lr0, checks.POSITIVE),
        weight_decay=(weight_decay, checks.NONNEGATIVE),
    )
    state_dtype = checks.check_state_dtype(who, state_dtype)

    def init(params):
        tree.reject_complex(who, params, NO_COMPLEX)
        dtype = scalar_dtype(params)
        return DAdaptAdamWState(
            tree.state_zeros_like(params, state_dtype),
            tree.state_zeros_like(params, state_dtype),
            tree.state_zeros_like(params, state_dtype),
            jnp.asarray(estim_lr0, dtype),
            jnp.zeros([], dtype),
            tree.zeros_count(),
        )

    def update(updates, state, params=None, **extra):
        checks.require_params(who, params, "for its weight decay, as optax's")
        tree.reject_complex(who, updates, NO_COMPLEX)
        checks.check_moments(who, updates, state, "exp_avg", "exp_avg_sq", "grad_sum")
        checks.check_trees_match(who, "updates", updates, params=params)
        sb2 = beta2**0.5
        sched = tree.resolve(learning_rate, state.count)
        decay = tree.resolve(weight_decay, state.count)
        count_inc = tree.safe_increment(state.count)
        bc = ((1 - beta2**count_inc) ** 0.5) / (1 - beta1**count_inc)
        dlr = (state.estim_lr * sched * bc).astype(state.numerator_weighted.dtype)
        # The old s and v weigh the new gradient: r_t pairs g_t with s_{t-1}.
        exp_avg_sq_old = tree.widen(state.exp_avg_sq, updates)
        s_weighted = jax.tree.map(
            lambda sk, eas: sk / (jnp.sqrt(eas) + eps),
            tree.widen(state.grad_sum, updates),
            exp_avg_sq_old,
        )
        numerator_acum = tree.tree_vdot(updates, s_weighted)
        exp_avg_stored, exp_avg = tree.moment(
            state.exp_avg, updates, state_dtype,
            lambda m: jax.tree.map(lambda ea, g: beta1 * ea + (1 - beta1) * dlr * g, m, updates),
            count_inc,
        )  # fmt: skip
        exp_avg_sq_stored, exp_avg_sq = tree.store(
            jax.tree.map(
                lambda eas, g: beta2 * eas + (1 - beta2) * g * g, exp_avg_sq_old, updates
            ),
            updates, state_dtype, count_inc,
        )  # fmt: skip
        grad_sum_stored, grad_sum = tree.moment(
            state.grad_sum, updates, state_dtype,
            lambda s: jax.tree.map(lambda sk, g: sb2 * sk + (1 - sb2) * dlr * g, s, updates),
            count_inc,
        )  # fmt: skip
        grad_sum_l1 = tree.tree_sum(jax.tree.map(jnp.abs, grad_sum))
        numerator_weighted = sb2 * state.numerator_weighted + (1 - sb2) * dlr * numerator_acum
        # No gradient seen yet (all zero, or underflowed): 0 / 0, where optax's d turns NaN
        # for good; D-Adaptation's authors skip the estimate then, and so does this.
        d_estimate = numerator_weighted / ((1 - sb2) * grad_sum_l1)
        d_estimate = jnp.where(grad_sum_l1 > 0, d_estimate, state.estim_lr)
        estim_lr = jnp.maximum(state.estim_lr, d_estimate)
        new_updates = jax.tree.map(
            lambda ea, eas, p: -decay * dlr * p - ea / (jnp.sqrt(eas) + eps),
            exp_avg,
            exp_avg_sq,
            params,
        )
        return new_updates, DAdaptAdamWState(
            exp_avg_stored,
            exp_avg_sq_stored,
            grad_sum_stored,
            estim_lr.astype(state.estim_lr.dtype),
            numerator_weighted.astype(state.numerator_weighted.dtype),
            count_inc,
        )

    return float_leaves(GradientTransformation(init, update))
