"""optax.contrib's Adam variants: ADOPT, AdEMAMix, simplified AdEMAMix, MADGRAD, ACProp, MoMo."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from gradtx import checks
from gradtx.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Scalar,
    ScalarOrSchedule,
    chain,
    float_leaves,
)
from gradtx.transforms import add_decayed_weights, scale_by_learning_rate
from gradtx.transforms.acprop import scale_by_acprop
from gradtx.transforms.ademamix import scale_by_ademamix, scale_by_simplified_ademamix
from gradtx.transforms.adopt import _default_clip_value, scale_by_adopt
from gradtx.transforms.madgrad import scale_by_madgrad
from gradtx.transforms.momo import scale_by_momo, scale_by_momo_adam


def adopt(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.9999,
    eps: Scalar = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = _default_clip_value,
    state_dtype: Any = None,
) -> GradientTransformation:
    """ADOPT: Adam normalised by the second moment of the previous gradients, then averaged.

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) \\operatorname{clip}\\Big(
        \\frac{g_t}{\\max(\\sqrt{v_{t-1}}, \\epsilon)}, -c_t, c_t\\Big), \\qquad
        \\theta_{t+1} = \\theta_t - \\eta_t m_t

    with :math:`v_0 = g_0^2`, a zero first update and :math:`c_t = t^{1/4}` (see
    :func:`gradtx.transforms.adopt.scale_by_adopt`). optax: ``optax.contrib.adopt`` at
    the defaults.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, the floor of :math:`\\sqrt{v}`.
      mu_dtype: optax's dtype of the stored first moment, rounded to nearest (None:
        the params'). Not with ``state_dtype``.
      nesterov: the look-ahead update,
        :math:`\\beta_1 m_t + (1-\\beta_1)\\operatorname{clip}(\\dots)`.
      use_clipping: clip the normalised gradient.
      clip_value_fn: :math:`t \\mapsto c_t` (:math:`t^{1/4}` by default).
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.contrib.adopt(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))  # measures v_0 only
      >>> updates, state = opt.update(grads, state)
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * (1 - b1) * sign(g)
      [-0.01  0.01]

    References:
      Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal
        Rate", NeurIPS 2024 (arXiv:2411.02853).

      optax: ``optax.contrib.adopt``.
    """
    with checks.named("adopt"):
        return float_leaves(
            chain(
                scale_by_adopt(
                    b1, b2, eps, mu_dtype, nesterov=nesterov, use_clipping=use_clipping,
                    clip_value_fn=clip_value_fn, state_dtype=state_dtype,
                ),
                scale_by_learning_rate(learning_rate),
            )
        )  # fmt: skip


def ademamix(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 5.0,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """AdEMAMix: AdamW whose numerator adds :math:`\\alpha` times a slow average.

    .. math::
        \\theta_{t+1} = \\theta_t - \\eta_t \\left(\\frac{\\hat m^{(1)}_t + \\alpha\\, m^{(2)}_t}
        {\\sqrt{\\hat \\nu_t + \\epsilon_{root}} + \\epsilon} + \\lambda_t \\theta_t\\right)

    with :math:`m^{(2)}` averaged with :math:`\\beta_3` and not bias-corrected (see
    :func:`gradtx.transforms.ademamix.scale_by_ademamix`). optax:
    ``optax.contrib.ademamix`` at the defaults (note its alpha, 5, is not its
    ``scale_by_ademamix``'s 6). The paper warms up :math:`\\alpha` and :math:`\\beta_3`;
    give them as schedules.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1), the fast average's decay.
      b2: :math:`\\beta_2` in [0, 1), the second moment's decay.
      b3: :math:`\\beta_3` in [0, 1) or a schedule, the slow average's decay.
      alpha: :math:`\\alpha \\ge 0` or a schedule, the slow average's weight.
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      mu_dtype: dtype of the two stored averages, rounded to nearest (None: the
        params'). Not with ``state_dtype``.
      weight_decay: decoupled coefficient :math:`\\lambda \\ge 0` or a schedule.
      mask: tree of bools (or function of params) saying which leaves decay.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> opt = gradtx.contrib.ademamix(0.1, weight_decay=0.5)
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * (1.0005 sign(g) + 0.5 * params)
      [-0.15  0.2 ]

    References:
      Pagliardini, Ablin and Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
        ICLR 2025 (arXiv:2409.03137).

      optax: ``optax.contrib.ademamix``.
    """
    with checks.named("ademamix"):
        return float_leaves(
            chain(
                scale_by_ademamix(
                    b1, b2, b3, alpha, eps, eps_root, mu_dtype, state_dtype=state_dtype
                ),
                add_decayed_weights(weight_decay, mask),
                scale_by_learning_rate(learning_rate),
            )
        )


def simplified_ademamix(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.99,
    b2: Scalar = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Simplified AdEMAMix: one undamped momentum plus :math:`\\alpha g_t`, over Adam's root.

    .. math::
        m_t = \\beta_1 m_{t-1} + g_t, \\qquad
        \\theta_{t+1} = \\theta_t - \\eta_t \\left(\\frac{m_t + \\alpha g_t}
        {\\sqrt{\\hat n_t + \\epsilon_{root}} + \\epsilon} + \\lambda_t \\theta_t\\right)

    (see :func:`gradtx.transforms.ademamix.scale_by_simplified_ademamix`). optax:
    ``optax.contrib.simplified_ademamix`` at the defaults, for real params (for complex
    ones optax squares :math:`g` where this takes :math:`|g|^2`).

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1), the momentum's discount.
      b2: :math:`\\beta_2` in [0, 1), the second moment's decay.
      alpha: :math:`\\alpha \\ge 0` or a schedule, the current gradient's extra weight.
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      weight_decay: decoupled coefficient :math:`\\lambda \\ge 0` or a schedule.
      mask: tree of bools (or function of params) saying which leaves decay.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.contrib.simplified_ademamix(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * g / |g|
      [-0.1  0.1]

    References:
      Morwani, Vyas, Zhang and Kakade, "Connections between Schedule-Free Optimizers,
        AdEMAMix, and Accelerated SGD Variants", 2025 (arXiv:2502.02431).

      optax: ``optax.contrib.simplified_ademamix``.
    """
    with checks.named("simplified_ademamix"):
        return float_leaves(
            chain(
                scale_by_simplified_ademamix(b1, b2, alpha, eps, eps_root, state_dtype=state_dtype),
                add_decayed_weights(weight_decay, mask),
                scale_by_learning_rate(learning_rate),
            )
        )


def madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: Scalar = 0.9,
    weight_decay: ScalarOrSchedule = 0.0,
    eps: Scalar = 1e-6,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """MADGRAD: momentumised dual averaging, with coupled (L2) weight decay.

    .. math::
        g_k \\leftarrow g_k + \\lambda_k x_k, \\quad
        z_{k+1} = x_0 - \\frac{\\sum_{i \\le k} \\lambda_i g_i}{(\\sum_{i \\le k} \\lambda_i
        g_i^2)^{1/3} + \\epsilon}, \\quad x_{k+1} = \\beta x_k + (1-\\beta) z_{k+1}

    with :math:`\\lambda_i = (\\eta_i + \\epsilon)\\sqrt{i + 1}` (see
    :func:`gradtx.transforms.madgrad.scale_by_madgrad`). optax:
    ``optax.contrib.madgrad`` at the defaults. ``update`` needs the params.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      momentum: :math:`\\beta` in [0, 1).
      weight_decay: :math:`\\lambda \\ge 0` or a schedule, added to the gradient.
      eps: :math:`\\epsilon \\ge 0`.
      state_dtype: dtype of the stored sums, e.g. ``jnp.bfloat16`` to halve their
        memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.contrib.madgrad(1.0, momentum=0.0, eps=0.0)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update({"w": jnp.array([8.0, 1.0])}, opt.init(params), params)
      >>> print(updates["w"])  # -g / (g**2)**(1/3) = -g**(1/3)
      [-2. -1.]

    References:
      Defazio and Jelassi, "Adaptivity without Compromise: A Momentumized, Adaptive, Dual
        Averaged Gradient Method for Stochastic Optimization", JMLR 2022 (arXiv:2101.11075).

      optax: ``optax.contrib.madgrad``.
    """
    with checks.named("madgrad"):
        return float_leaves(
            chain(
                add_decayed_weights(weight_decay),
                scale_by_madgrad(learning_rate, momentum, eps, state_dtype=state_dtype),
            )
        )


def acprop(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-16,
    eps_root: Scalar = 1e-16,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """ACProp: the gradient over the belief's spread measured before this step.

    .. math::
        s_t = \\beta_2 s_{t-1} + (1-\\beta_2)(g_t - m_{t-1})^2 + \\epsilon_{root}, \\qquad
        \\theta_{t+1} = \\theta_t - \\eta_t \\left(\\frac{g_t}{\\sqrt{\\hat s_{t-1}} + \\epsilon}
        + \\lambda_t \\theta_t\\right)

    (see :func:`gradtx.transforms.acprop.scale_by_acprop`). optax:
    ``optax.contrib.acprop`` at the defaults.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, added to :math:`s_t`.
      weight_decay: decoupled coefficient :math:`\\lambda \\ge 0` or a schedule.
      mask: tree of bools (or function of params) saying which leaves decay.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.contrib.acprop(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # the first step is -0.1 * g
      [-0.1  0.2]

    References:
      Zhuang, Ding, Tang, Dvornek, Tatikonda and Duncan, "Momentum Centering and
        Asynchronous Update for Adaptive Gradient Methods", NeurIPS 2021
        (arXiv:2110.05454).

      optax: ``optax.contrib.acprop``.
    """
    with checks.named("acprop"):
        return float_leaves(
            chain(
                scale_by_acprop(b1, b2, eps, eps_root, state_dtype=state_dtype),
                add_decayed_weights(weight_decay, mask),
                scale_by_learning_rate(learning_rate),
            )
        )


def momo(
    learning_rate: ScalarOrSchedule = 1.0,
    beta: Scalar = 0.9,
    lower_bound: Scalar = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    adapt_lower_bound: bool = False,
    *,
    state_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """MoMo: SGD with momentum at the Polyak-type step that reaches the loss's lower bound.

    .. math::
        \\tau_t = \\min\\Big(\\eta_t, \\frac{\\big((1+\\eta_t\\lambda_t)(\\bar f_t - f_* -
        \\gamma_t) + \\langle d_t, x_t\\rangle\\big)_+}{\\|d_t\\|^2}\\Big), \\qquad
        x_{t+1} = \\frac{x_t}{1 + \\eta_t\\lambda_t} - \\tau_t d_t

    with :math:`d_t`, :math:`\\bar f_t`, :math:`\\gamma_t` the averages of the gradients,
    the losses and :math:`\\langle g_t, x_t\\rangle` (see
    :func:`gradtx.transforms.momo.scale_by_momo` for the exact update). ``update`` takes
    the loss as the keyword extra ``value``: ``update(grads, state, params, value=loss)``;
    :func:`gradtx.chain` hands it on. optax: ``optax.contrib.momo`` at the defaults.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule: the cap of the step size
        (chosen large; 1 by default).
      beta: :math:`\\beta` in [0, 1), the averages' decay.
      lower_bound: :math:`f_*`, a lower bound of the loss.
      weight_decay: :math:`\\lambda \\ge 0` or a schedule, decoupled.
      adapt_lower_bound: estimate the lower bound on the fly (MoMo*).
      state_dtype: dtype of the stored gradient average, e.g. ``jnp.bfloat16`` to halve
        its memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax, jax.numpy as jnp, gradtx
      >>> opt = gradtx.contrib.momo()
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> loss, grads = jax.value_and_grad(lambda x: jnp.sum(x**2))(params)
      >>> updates, state = opt.update(grads, opt.init(params), params, value=loss)
      >>> print(gradtx.apply_updates(params, updates))  # tau = 1/4: half way to 0
      [0.5 1.  1.5]

    References:
      Schaipp, Ohana, Eickenberg, Defazio and Gower, "MoMo: Momentum Models for Adaptive
        Learning Rates", ICML 2024 (arXiv:2305.07583).

      optax: ``optax.contrib.momo``.
    """
    with checks.named("momo"):
        tx = float_leaves(
            scale_by_momo(
                learning_rate, beta, lower_bound, weight_decay, adapt_lower_bound,
                state_dtype=state_dtype,
            )
        )  # fmt: skip
    # optax's return type: code that asks isinstance(..., GradientTransformationExtraArgs)
    # learns that update takes the loss.
    return GradientTransformationExtraArgs(tx.init, tx.update)


def momo_adam(
    learning_rate: ScalarOrSchedule = 1e-2,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    lower_bound: Scalar = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    adapt_lower_bound: bool = False,
    *,
    state_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """MoMo-Adam: Adam(W)'s direction at the Polyak-type step that reaches the lower bound.

    .. math::
        \\tau_t = \\min\\Big(\\frac{\\eta_t}{b_1}, \\frac{\\big((1+\\eta_t\\lambda_t)
        (\\bar f_t - b_1 f_* - \\gamma_t) + \\langle d_t, x_t\\rangle\\big)_+}
        {\\langle d_t, d_t / D_t\\rangle}\\Big), \\qquad
        u_t = -\\frac{\\eta_t\\lambda_t}{1+\\eta_t\\lambda_t} x_t - \\tau_t \\frac{d_t}{D_t}

    with :math:`D_t = \\epsilon + \\sqrt{\\hat v_t}` Adam's denominator and
    :math:`b_1 = 1 - \\beta_1^t` (see :func:`gradtx.transforms.momo.scale_by_momo_adam`).
    ``update`` takes the loss as the keyword extra ``value``. optax:
    ``optax.contrib.momo_adam`` at the defaults.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule: the cap of the step size.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, added to the root.
      lower_bound: :math:`f_*`, a lower bound of the loss.
      weight_decay: :math:`\\lambda \\ge 0` or a schedule, decoupled as in AdamW.
      adapt_lower_bound: estimate the lower bound on the fly.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.contrib.momo_adam()
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> loss, grads = jax.value_and_grad(lambda x: jnp.sum(x**2))(params)
      >>> updates, state = opt.update(grads, opt.init(params), params, value=loss)
      >>> print(np.asarray(updates).round(4))  # capped: -(eta / b_1) * d / D = -0.01 sign(g)
      [-0.01 -0.01 -0.01]

    References:
      Schaipp, Ohana, Eickenberg, Defazio and Gower, "MoMo: Momentum Models for Adaptive
        Learning Rates", ICML 2024 (arXiv:2305.07583).

      optax: ``optax.contrib.momo_adam``.
    """
    with checks.named("momo_adam"):
        tx = float_leaves(
            scale_by_momo_adam(
                learning_rate, b1, b2, eps, lower_bound, weight_decay, adapt_lower_bound,
                state_dtype=state_dtype,
            )
        )  # fmt: skip
    return GradientTransformationExtraArgs(tx.init, tx.update)
