"""The learners gradtx started with: SGD, Adagrad, RMSProp, the Adam family, Adadelta, Lion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradtx import checks
from gradtx.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    chain,
    float_leaves,
    identity,
)
from gradtx.transforms import (
    add_decayed_weights,
    scale_by_adadelta,
    scale_by_adam,
    scale_by_adamax,
    scale_by_amsgrad,
    scale_by_learning_rate,
    scale_by_lion,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
    trace,
)

# Each block checks the arguments it uses; building it inside checks.named(learner) makes its
# errors name the learner and the learner's argument: "adam: b1 must be in [0, 1), got 1.5".
# A learner argument that a block calls differently is renamed: trace's decay is momentum.
_MOMENTUM = {"decay": "momentum"}


def coupled_decay(weight_decay: Any) -> tuple[GradientTransformation, ...]:
    """torch's coupled L2 decay before the rule, or no block for a concrete zero (the default).

    Without it the learner's state is optax's, block for block (``state[0].mu`` of
    ``adam`` is the first moment in both); a tracer or a schedule keeps the block.
    """
    zero = type(weight_decay) in (int, float) and weight_decay == 0
    return () if zero else (add_decayed_weights(weight_decay),)


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: ScalarOrSchedule | None = None,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
    *,
    unit_gain: bool = False,
    weight_decay: ScalarOrSchedule = 0.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Stochastic gradient descent, optionally with (Nesterov) momentum.

    .. math::
        g'_t = g_t + \\lambda \\theta_{t}, \\quad
        m_t = \\mu m_{t-1} + k g'_t, \\quad
        \\theta_{t+1} = \\theta_t - \\eta_t \\cdot
        \\begin{cases} \\mu m_t + k g'_t & \\text{nesterov} \\\\ m_t & \\text{otherwise}\\end{cases}

    with :math:`k = 1-\\mu` if ``unit_gain`` else 1. Without momentum,
    :math:`\\theta_{t+1} = \\theta_t - \\eta_t g'_t`.

    optax: ``optax.sgd(lr, momentum, nesterov, accumulator_dtype)`` at the defaults.
    torch: ``torch.optim.SGD(lr, momentum, weight_decay, nesterov, dampening=0)``
    is ``sgd(lr, momentum, nesterov, weight_decay=weight_decay)``.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      momentum: :math:`\\mu` in [0, 1) or a schedule; ``None`` for plain SGD.
      nesterov: Nesterov's look-ahead momentum.
      accumulator_dtype: optax's dtype of the stored momentum, rounded to nearest
        (None: the params'). Not with ``state_dtype``.
      unit_gain: scale the gradient by :math:`1-\\mu` inside the momentum (CNTK).
      weight_decay: coupled L2 coefficient :math:`\\lambda \\ge 0` (torch's).
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory (rounded stochastically); arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.sgd(0.1, momentum=0.9)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> updates, state = opt.update(grads, state)  # the momentum adds 0.9 of the last step
      >>> print(np.asarray(updates["w"]).round(4))
      [-0.19  0.38]

    References:
      Robbins and Monro, "A Stochastic Approximation Method", 1951.

      Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.

      Nesterov, "A method of solving a convex programming problem with convergence rate
        O(1/k^2)", 1983.

      Sutskever, Martens, Dahl and Hinton, "On the importance of initialization and momentum
        in deep learning", 2013.

      optax: ``optax.sgd``; torch: ``torch.optim.SGD``.
    """
    with checks.named("sgd", trace=_MOMENTUM):
        if momentum is None:  # no block keeps moments, so none checks the dtypes
            checks.check_state_dtype("sgd", state_dtype)
            checks.check_optax_dtype("sgd", "accumulator_dtype", accumulator_dtype, state_dtype)
        return float_leaves(
            chain(
                *coupled_decay(weight_decay),
                (
                    trace(
                        momentum,
                        nesterov,
                        accumulator_dtype,
                        unit_gain=unit_gain,
                        state_dtype=state_dtype,
                    )
                    if momentum is not None
                    else identity()
                ),
                scale_by_learning_rate(learning_rate),
            )
        )


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: Scalar = 0.1,
    eps: Scalar = 1e-7,
    *,
    eps_in_sqrt: bool = True,
    weight_decay: ScalarOrSchedule = 0.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Adagrad: per-coordinate rates from the sum of all squared gradients.

    .. math::
        s_t = s_{t-1} + g_t^2, \\qquad
        \\theta_{t+1} = \\theta_t - \\eta_t\\, g_t / \\sqrt{s_t + \\epsilon}
        \\;\\text{ (or } g_t/(\\sqrt{s_t} + \\epsilon) \\text{ without eps_in_sqrt)}

    optax: ``optax.adagrad(lr)`` at the defaults.
    torch: ``torch.optim.Adagrad(lr, weight_decay=wd, initial_accumulator_value=a,
    eps=1e-10)`` is ``adagrad(lr, initial_accumulator_value=a, eps=1e-10,
    eps_in_sqrt=False, weight_decay=wd)`` (torch's ``lr_decay`` is a schedule:
    ``lambda t: lr / (1 + t * lr_decay)``).

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      initial_accumulator_value: :math:`s_0 \\ge 0`.
      eps: :math:`\\epsilon \\ge 0`.
      eps_in_sqrt: eps inside the root (optax) or outside (torch).
      weight_decay: coupled L2 coefficient (torch's).
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.adagrad(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * g / sqrt(0.1 + g**2)
      [-0.0953  0.0988]

    References:
      Duchi, Hazan and Singer, "Adaptive Subgradient Methods for Online Learning and
        Stochastic Optimization", JMLR, 2011.

      optax: ``optax.adagrad``; torch: ``torch.optim.Adagrad``.
    """
    with checks.named("adagrad"):
        return float_leaves(
            chain(
                *coupled_decay(weight_decay),
                scale_by_rss(
                    initial_accumulator_value, eps, eps_in_sqrt=eps_in_sqrt, state_dtype=state_dtype
                ),
                scale_by_learning_rate(learning_rate),
            )
        )


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: Scalar = 0.9,
    eps: Scalar = 1e-8,
    initial_scale: Scalar = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: ScalarOrSchedule | None = None,
    nesterov: bool = False,
    bias_correction: bool = False,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    """RMSProp, optionally centered and with momentum.

    .. math::
        \\nu_t = \\rho \\nu_{t-1} + (1-\\rho) g_t^2, \\quad
        d_t = \\sqrt{\\nu_t - c\\,\\bar g_t^2 + \\epsilon}
        \\;\\text{ (or } \\sqrt{\\nu_t - c\\,\\bar g_t^2} + \\epsilon\\text{)}, \\quad
        \\theta_{t+1} = \\theta_t - \\eta_t g_t / d_t

    where :math:`\\bar g_t = \\rho \\bar g_{t-1} + (1-\\rho) g_t` and :math:`c = 1`
    if ``centered`` else 0; with ``bias_correction`` both averages are divided by
    :math:`1-\\rho^t` first. With momentum the step :math:`-\\eta_t g_t/d_t` is
    fed through :func:`gradtx.trace`, as optax does; for a constant learning rate
    this equals torch's buffer :math:`b_t = \\mu b_{t-1} + g_t/d_t`,
    :math:`\\theta_{t+1} = \\theta_t - \\eta b_t`.

    optax: ``optax.rmsprop(lr, decay, eps, ...)`` at the defaults.
    torch: ``torch.optim.RMSprop(lr, alpha, eps, weight_decay, momentum, centered)``
    is ``rmsprop(lr, decay=alpha, eps=eps, eps_in_sqrt=False, centered=centered,
    momentum=momentum or None, weight_decay=weight_decay)``; torch's default
    alpha is 0.99.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      decay: :math:`\\rho` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`.
      initial_scale: :math:`\\nu_0 \\ge 0`.
      eps_in_sqrt: eps inside the root (optax) or outside (torch).
      centered: divide by the standard deviation instead of the RMS.
      momentum: :math:`\\mu` in [0, 1) or a schedule; ``None`` for none.
      nesterov: Nesterov momentum (only with ``momentum``).
      bias_correction: divide the running averages by :math:`1-\\rho^t`, as Adam does.
      weight_decay: coupled L2 coefficient (torch's).
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.rmsprop(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * g / sqrt(0.1 * g**2)
      [-0.3162  0.3162]

    References:
      Tieleman and Hinton, "Lecture 6.5 - rmsprop: Divide the gradient by a running average
        of its recent magnitude", COURSERA: Neural Networks for Machine Learning, 2012.

      Graves, "Generating Sequences With Recurrent Neural Networks", 2013 (``centered``).

      optax: ``optax.rmsprop``; torch: ``torch.optim.RMSprop``.
    """
    scale_by_second_moment = scale_by_stddev if centered else scale_by_rms
    with checks.named("rmsprop", trace=_MOMENTUM):
        return float_leaves(
            chain(
                *coupled_decay(weight_decay),
                scale_by_second_moment(
                    decay, eps, initial_scale, eps_in_sqrt, bias_correction, state_dtype=state_dtype
                ),
                scale_by_learning_rate(learning_rate),
                (
                    trace(momentum, nesterov, state_dtype=state_dtype)
                    if momentum is not None
                    else identity()
                ),
            )
        )


def adam(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    weight_decay: ScalarOrSchedule = 0.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Adam (see :func:`gradtx.scale_by_adam` for the moments).

    .. math::
        \\theta_{t+1} = \\theta_t
        - \\eta_t\\, \\hat m_t / (\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon)

    optax: ``optax.adam(lr, b1, b2, eps, eps_root, mu_dtype, nesterov=...)`` at the defaults.
    torch: ``torch.optim.Adam(lr, betas=(b1, b2), eps, weight_decay)`` is
    ``adam(lr, b1, b2, eps, weight_decay=weight_decay)``; torch's
    ``sqrt(v)/sqrt(1-b2^t)`` equals :math:`\\sqrt{\\hat v_t}` up to rounding.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      mu_dtype: optax's dtype of the stored first moment, rounded to nearest
        (None: the params'). Not with ``state_dtype``.
      nesterov: NAdam's look-ahead first moment.
      weight_decay: coupled L2 coefficient (torch's Adam); see :func:`adamw`.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.adam(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # the first step is -lr * sign(g)
      [-0.1  0.1]

    References:
      Kingma and Ba, "Adam: A Method for Stochastic Optimization", 2014.

      optax: ``optax.adam``; torch: ``torch.optim.Adam``.
    """
    with checks.named("adam"):
        return float_leaves(
            chain(
                *coupled_decay(weight_decay),
                scale_by_adam(
                    b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, state_dtype=state_dtype
                ),
                scale_by_learning_rate(learning_rate),
            )
        )


def nadam(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    weight_decay: ScalarOrSchedule = 0.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    """NAdam: Adam with Nesterov momentum, :func:`adam` with ``nesterov=True``.

    .. math::
        \\hat m_t = \\frac{\\beta_1 m_t}{1-\\beta_1^{t+1}} + \\frac{(1-\\beta_1) g_t}{1-\\beta_1^t},
        \\qquad \\theta_{t+1} = \\theta_t
        - \\eta_t\\, \\hat m_t / (\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon)

    optax: ``optax.nadam`` at the defaults. torch's ``NAdam`` adds a momentum
    decay schedule (``momentum_decay``) and is not this rule.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      mu_dtype: optax's dtype of the stored first moment, rounded to nearest
        (None: the params'). Not with ``state_dtype``.
      nesterov: the look-ahead first moment (optax's switch: False is :func:`adam`).
      weight_decay: coupled L2 coefficient.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.nadam(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * (0.9 * 0.1 / 0.19 + 1) * sign(g)
      [-0.1474  0.1474]

    References:
      Dozat, "Incorporating Nesterov Momentum into Adam", 2016.

      optax: ``optax.nadam``.
    """
    with checks.named("nadam"):  # adam's blocks check the arguments, under this name
        return adam(
            learning_rate,
            b1,
            b2,
            eps,
            eps_root,
            mu_dtype,
            nesterov=nesterov,
            weight_decay=weight_decay,
            state_dtype=state_dtype,
        )


def adamw(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    nesterov: bool = False,
    state_dtype: Any = None,
) -> GradientTransformation:
    """AdamW: Adam with decoupled weight decay.

    .. math::
        \\theta_{t+1} = \\theta_t - \\eta_t \\left(\\hat m_t / (\\sqrt{\\hat v_t + \\epsilon_{root}}
        + \\epsilon) + \\lambda_t \\theta_t\\right)

    optax: ``optax.adamw`` at the defaults (weight decay 1e-4).
    torch: ``torch.optim.AdamW(lr, betas=(b1, b2), eps, weight_decay)`` is
    ``adamw(lr, b1, b2, eps, weight_decay=weight_decay)``; torch's default
    weight decay is 1e-2.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      mu_dtype: optax's dtype of the stored first moment, rounded to nearest
        (None: the params'). Not with ``state_dtype``.
      weight_decay: decoupled coefficient :math:`\\lambda \\ge 0` or a schedule.
      mask: tree of bools (or function of params) saying which leaves decay.
      nesterov: NAdam's look-ahead first moment (NAdamW).
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> opt = gradtx.adamw(0.1, weight_decay=0.5)
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * (sign(g) + 0.5 * params)
      [-0.15  0.2 ]

    References:
      Loshchilov and Hutter, "Decoupled Weight Decay Regularization", 2019.

      optax: ``optax.adamw``; torch: ``torch.optim.AdamW``.
    """
    with checks.named("adamw"):
        return float_leaves(
            chain(
                scale_by_adam(
                    b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, state_dtype=state_dtype
                ),
                add_decayed_weights(weight_decay, mask),
                scale_by_learning_rate(learning_rate),
            )
        )


def amsgrad(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """AMSGrad: Adam with a running maximum of the bias-corrected second moment.

    .. math::
        \\theta_{t+1} = \\theta_t - \\eta_t\\, \\hat m_t / (\\sqrt{\\max_{s \\le t} \\hat v_s
        + \\epsilon_{root}} + \\epsilon)

    optax: ``optax.amsgrad`` at the defaults. torch's ``Adam(amsgrad=True)``
    takes the maximum before bias correction, so it differs in early steps.
    ``bias_correction_mu=False, bias_correction_nu=False`` is Reddi et al.'s original.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      mu_dtype: optax's dtype of the stored first moment, rounded to nearest
        (None: the params'). Not with ``state_dtype``.
      bias_correction_mu: divide :math:`m_t` by :math:`1-\\beta_1^t`.
      bias_correction_nu: divide :math:`v_t` by :math:`1-\\beta_2^t` before the maximum.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.amsgrad(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> updates, state = opt.update({"w": jnp.array([0.1, -0.2])}, state)
      >>> print(np.asarray(updates["w"]).round(4))  # divided by the larger, first v_hat
      [-0.0526  0.0526]

    References:
      Reddi, Kale and Kumar, "On the Convergence of Adam and Beyond", 2018.

      optax: ``optax.amsgrad``.
    """
    with checks.named("amsgrad"):
        return float_leaves(
            chain(
                scale_by_amsgrad(
                    b1,
                    b2,
                    eps,
                    eps_root,
                    mu_dtype,
                    bias_correction_mu,
                    bias_correction_nu,
                    state_dtype=state_dtype,
                ),
                scale_by_learning_rate(learning_rate),
            )
        )


def adamax(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    weight_decay: ScalarOrSchedule = 0.0,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Adamax: Adam with an infinity-norm second moment (see :func:`gradtx.scale_by_adamax`).

    .. math::
        \\theta_{t+1} = \\theta_t - \\frac{\\eta_t}{1-\\beta_1^t} \\frac{m_t}{u^{\\infty}_t}

    optax: ``optax.adamax`` at the defaults.
    torch: ``torch.optim.Adamax(lr, betas=(b1, b2), eps, weight_decay)`` is
    ``adamax(lr, b1, b2, eps, weight_decay=weight_decay)``; torch's default lr is 2e-3.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`.
      weight_decay: coupled L2 coefficient (torch's).
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.adamax(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # the first step is -lr * sign(g)
      [-0.1  0.1]

    References:
      Kingma and Ba, "Adam: A Method for Stochastic Optimization", 2014, section 7.1 (AdaMax).

      optax: ``optax.adamax``; torch: ``torch.optim.Adamax``.
    """
    with checks.named("adamax"):
        return float_leaves(
            chain(
                *coupled_decay(weight_decay),
                scale_by_adamax(b1, b2, eps, state_dtype=state_dtype),
                scale_by_learning_rate(learning_rate),
            )
        )


def adadelta(
    learning_rate: ScalarOrSchedule | None = None,
    rho: Scalar = 0.9,
    eps: Scalar = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Any | Callable[[Any], Any] | None = None,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """AdaDelta (see :func:`gradtx.scale_by_adadelta`), scaled by a learning rate.

    .. math:: \\theta_{t+1} = \\theta_t - \\eta_t\\, \\frac{\\sqrt{E[\\Delta^2]_{t-1} + \\epsilon}}
        {\\sqrt{E[g^2]_t + \\epsilon}}\\, g_t

    optax: ``optax.adadelta(lr, rho, eps, weight_decay, weight_decay_mask)`` for
    every rate. Without a rate optax skips the learning-rate block, sign flip
    included, so its updates climb the loss; gradtx raises ``ValueError`` there
    instead of ascending silently.
    torch: ``torch.optim.Adadelta(lr=1.0, rho=0.9, eps=1e-6, weight_decay)`` is
    ``adadelta(lr, rho, eps, weight_decay)``; pass torch's ``lr=1.0``.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule; Zeiler's original is 1.
        Required: None (optax's default) raises ``ValueError``.
      rho: :math:`\\rho` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`.
      weight_decay: coupled L2 coefficient (torch's).
      weight_decay_mask: tree of bools (or function of params) saying which leaves decay.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.adadelta(1.0)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # about -sqrt(1e-6 / (0.1 * g**2)) * g
      [-0.0032  0.0032]

    References:
      Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012.

      optax: ``optax.adadelta``; torch: ``torch.optim.Adadelta``.
    """
    with checks.named("adadelta"):
        blocks = (
            add_decayed_weights(weight_decay, weight_decay_mask),
            scale_by_adadelta(rho, eps, state_dtype=state_dtype),
        )
    if learning_rate is None:  # after the blocks: their errors about rho and eps come first
        raise ValueError(
            "adadelta: learning_rate is required; optax's default None leaves AdaDelta's "
            "step unsigned, so its updates ascend the loss. Pass learning_rate=1.0 for "
            "Zeiler's AdaDelta (torch's default)"
        )
    with checks.named("adadelta"):
        return float_leaves(chain(*blocks, scale_by_learning_rate(learning_rate)))


def lion(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.99,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-3,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Lion, with decoupled weight decay (see :func:`gradtx.scale_by_lion`).

    .. math::
        \\theta_{t+1} = \\theta_t - \\eta_t \\left(\\operatorname{sign}(\\beta_1 m_{t-1}
        + (1-\\beta_1) g_t) + \\lambda_t \\theta_t\\right)

    optax: ``optax.lion`` at the defaults. Lion wants a learning rate 3-10x
    smaller than AdamW's and a weight decay 3-10x larger.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      mu_dtype: optax's dtype of the stored momentum, rounded to nearest
        (None: the params'). Not with ``state_dtype``.
      weight_decay: decoupled coefficient :math:`\\lambda \\ge 0` or a schedule.
      mask: tree of bools (or function of params) saying which leaves decay.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> opt = gradtx.lion(0.1, weight_decay=0.5)
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * (sign(g) + 0.5 * params)
      [-0.15  0.2 ]

    References:
      Chen et al., "Symbolic Discovery of Optimization Algorithms", 2023.

      optax: ``optax.lion``.
    """
    with checks.named("lion"):
        return float_leaves(
            chain(
                scale_by_lion(b1, b2, mu_dtype, state_dtype=state_dtype),
                add_decayed_weights(weight_decay, mask),
                scale_by_learning_rate(learning_rate),
            )
        )
