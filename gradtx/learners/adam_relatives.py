"""Adam's relatives: AdaBelief, RAdam, Yogi, Adan, NovoGrad, AdamaxW and NAdamW."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradtx import checks
from gradtx.core import GradientTransformation, Scalar, ScalarOrSchedule, chain, float_leaves
from gradtx.transforms import (
    add_decayed_weights,
    scale_by_adam,
    scale_by_adamax,
    scale_by_learning_rate,
)
from gradtx.transforms.adan import scale_by_adan
from gradtx.transforms.belief import scale_by_belief
from gradtx.transforms.novograd import scale_by_novograd
from gradtx.transforms.radam import scale_by_radam
from gradtx.transforms.yogi import scale_by_yogi


def adabelief(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-16,
    eps_root: Scalar = 1e-16,
    *,
    nesterov: bool = False,
    state_dtype: Any = None,
) -> GradientTransformation:
    """AdaBelief: Adam divided by the gradient's spread around its average.

    .. math::
        s_t = \\beta_2 s_{t-1} + (1-\\beta_2)(g_t - m_t)^2 + \\epsilon_{root}, \\qquad
        \\theta_{t+1} = \\theta_t - \\eta_t\\, \\hat m_t / (\\sqrt{\\hat s_t} + \\epsilon)

    (see :func:`gradtx.scale_by_belief`). optax: ``optax.adabelief`` at the defaults.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, added to :math:`s_t`.
      nesterov: NAdam's look-ahead first moment.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.adabelief(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * sign(g) / 0.9
      [-0.1111  0.1111]

    References:
      Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
        Gradients", NeurIPS 2020.

      optax: ``optax.adabelief``.
    """
    with checks.named("adabelief"):
        return float_leaves(
            chain(
                scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov, state_dtype=state_dtype),
                scale_by_learning_rate(learning_rate),
            )
        )


def radam(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    threshold: Scalar = 5.0,
    *,
    nesterov: bool = False,
    state_dtype: Any = None,
) -> GradientTransformation:
    """RAdam: momentum alone for the first steps, then Adam times the rectifier :math:`r_t`.

    .. math::
        \\theta_{t+1} = \\theta_t - \\eta_t \\begin{cases}
        r_t\\, \\hat m_t / (\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon) &
        \\rho_t \\ge \\text{threshold} \\\\ \\hat m_t & \\text{otherwise} \\end{cases}

    (see :func:`gradtx.scale_by_radam` for :math:`\\rho_t` and :math:`r_t`).
    optax: ``optax.radam`` at the defaults. torch's ``RAdam`` rectifies where
    :math:`\\rho_t > 5` and adds eps to the uncorrected :math:`\\sqrt{v_t}`, so its
    numbers differ from these by about eps.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      threshold: the :math:`\\rho_t` from which the rectified step is taken, in [0, inf].
      nesterov: NAdam's look-ahead first moment.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.radam(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # not rectified yet: -0.1 * g
      [-0.1  0.2]

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.

      optax: ``optax.radam``.
    """
    with checks.named("radam"):
        return float_leaves(
            chain(
                scale_by_radam(
                    b1, b2, eps, eps_root, threshold, nesterov=nesterov, state_dtype=state_dtype
                ),
                scale_by_learning_rate(learning_rate),
            )
        )


def yogi(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-3,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Yogi: Adam with an additive, sign-controlled second moment.

    .. math::
        v_t = v_{t-1} - (1-\\beta_2) \\operatorname{sign}(v_{t-1} - g_t^2) g_t^2, \\qquad
        \\theta_{t+1} = \\theta_t - \\eta_t\\, \\hat m_t / (\\sqrt{\\hat v_t} + \\epsilon)

    with both moments starting at 1e-6 (see :func:`gradtx.scale_by_yogi`).
    optax: ``optax.yogi`` at the defaults.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.yogi(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(3))  # about -0.1 * sign(g), eps = 1e-3 aside
      [-0.1  0.1]

    References:
      Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018.

      optax: ``optax.yogi``.
    """
    with checks.named("yogi"):
        return float_leaves(
            chain(
                scale_by_yogi(b1, b2, eps, state_dtype=state_dtype),
                scale_by_learning_rate(learning_rate),
            )
        )


def adan(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.98,
    b2: Scalar = 0.92,
    b3: Scalar = 0.99,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Adan, with decoupled weight decay (see :func:`gradtx.scale_by_adan`).

    .. math::
        \\theta_{t+1} = \\theta_t - \\eta_t \\left(\\frac{\\hat m_t + (1-\\beta_2)\\hat v_t}
        {\\sqrt{\\hat n_t + \\epsilon_{root}} + \\epsilon} + \\lambda_t \\theta_t\\right)

    optax: ``optax.adan`` at the defaults. The paper's weight decay is a proximal step,
    :math:`\\theta_{t+1} = (\\theta_t - \\eta u_t) / (1 + \\lambda\\eta)`; optax's, and so
    this one, adds :math:`\\lambda\\theta_t` to the update instead (equal to first order).

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1), the decay of the gradients' average.
      b2: :math:`\\beta_2` in [0, 1), the decay of the differences' average.
      b3: :math:`\\beta_3` in [0, 1), the decay of the squared term's average.
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      weight_decay: decoupled coefficient :math:`\\lambda \\ge 0` or a schedule.
      mask: tree of bools (or function of params) saying which leaves decay.
      state_dtype: dtype of the stored averages and previous gradient, e.g.
        ``jnp.bfloat16`` to halve their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> opt = gradtx.adan(0.1, weight_decay=0.5)
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * (sign(g) + 0.5 * params)
      [-0.15  0.2 ]

    References:
      Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
        Models", 2022 (arXiv:2208.06677).

      optax: ``optax.adan``.
    """
    with checks.named("adan"):
        return float_leaves(
            chain(
                scale_by_adan(b1, b2, b3, eps, eps_root, state_dtype=state_dtype),
                add_decayed_weights(weight_decay, mask),
                scale_by_learning_rate(learning_rate),
            )
        )


def novograd(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.25,
    eps: Scalar = 1e-6,
    eps_root: Scalar = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """NovoGrad: momentum on gradients normalised per leaf (see :func:`gradtx.scale_by_novograd`).

    .. math::
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2)\\|g_t\\|^2, \\quad
        m_t = \\beta_1 m_{t-1} + \\frac{g_t}{\\sqrt{v_t + \\epsilon_{root}} + \\epsilon}
        + \\lambda_t \\theta_t, \\quad \\theta_{t+1} = \\theta_t - \\eta_t m_t

    with :math:`v_1 = \\|g_1\\|^2` and :math:`\\|\\cdot\\|` the L2 norm of a whole leaf.
    optax: ``optax.novograd`` at the defaults (note its eps, 1e-6, is not its
    ``scale_by_novograd``'s 1e-8). A ``weight_decay`` schedule works here (evaluated
    at the number of updates already applied); in optax it raises.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1), the momentum.
      b2: :math:`\\beta_2` in [0, 1), the decay of the squared norms.
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      weight_decay: :math:`\\lambda \\ge 0` or a schedule, inside the momentum; any
        value but a literal 0 needs the params in ``update``.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.novograd(0.1)
      >>> grads = {"w": jnp.array([3.0, -4.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * g / ||g||
      [-0.06  0.08]

    References:
      Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments for
        Training of Deep Networks", 2019 (arXiv:1905.11286).

      optax: ``optax.novograd``.
    """
    with checks.named("novograd"):
        return float_leaves(
            chain(
                scale_by_novograd(b1, b2, eps, eps_root, weight_decay, state_dtype=state_dtype),
                scale_by_learning_rate(learning_rate),
            )
        )


def adamaxw(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """AdamaxW: Adamax with decoupled weight decay.

    .. math::
        \\theta_{t+1} = \\theta_t - \\eta_t \\left(\\frac{m_t}{(1-\\beta_1^t)\\, u^{\\infty}_t}
        + \\lambda_t \\theta_t\\right)

    (see :func:`gradtx.scale_by_adamax`). optax: ``optax.adamaxw`` at the defaults
    (weight decay 1e-4).

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`.
      weight_decay: decoupled coefficient :math:`\\lambda \\ge 0` or a schedule.
      mask: tree of bools (or function of params) saying which leaves decay.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> opt = gradtx.adamaxw(0.1, weight_decay=0.5)
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * (sign(g) + 0.5 * params)
      [-0.15  0.2 ]

    References:
      Kingma and Ba, "Adam: A Method for Stochastic Optimization", 2014, section 7.1 (AdaMax).

      Loshchilov and Hutter, "Decoupled Weight Decay Regularization", 2019.

      optax: ``optax.adamaxw``.
    """
    with checks.named("adamaxw"):
        return float_leaves(
            chain(
                scale_by_adamax(b1, b2, eps, state_dtype=state_dtype),
                add_decayed_weights(weight_decay, mask),
                scale_by_learning_rate(learning_rate),
            )
        )


def nadamw(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    eps_root: Scalar = 0.0,
    mu_dtype: Any = None,
    weight_decay: ScalarOrSchedule = 1e-4,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    nesterov: bool = True,
    state_dtype: Any = None,
) -> GradientTransformation:
    """NAdamW: NAdam with decoupled weight decay, :func:`gradtx.adamw` with ``nesterov=True``.

    .. math::
        \\hat m_t = \\frac{\\beta_1 m_t}{1-\\beta_1^{t+1}} + \\frac{(1-\\beta_1) g_t}{1-\\beta_1^t},
        \\qquad \\theta_{t+1} = \\theta_t - \\eta_t \\left(\\frac{\\hat m_t}
        {\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon} + \\lambda_t \\theta_t\\right)

    optax: ``optax.nadamw`` (``functools.partial(optax.adamw, nesterov=True)``) at the
    defaults (weight decay 1e-4).

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
      nesterov: the look-ahead first moment (optax's switch: False is :func:`gradtx.adamw`).
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> opt = gradtx.nadamw(0.1, weight_decay=0.5)
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * (1.4737 sign(g) + 0.5 * params)
      [-0.1974  0.2474]

    References:
      Dozat, "Incorporating Nesterov Momentum into Adam", 2016.

      Loshchilov and Hutter, "Decoupled Weight Decay Regularization", 2019.

      optax: ``optax.nadamw``.
    """
    with checks.named("nadamw"):
        return float_leaves(
            chain(
                scale_by_adam(
                    b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, state_dtype=state_dtype
                ),
                add_decayed_weights(weight_decay, mask),
                scale_by_learning_rate(learning_rate),
            )
        )
