"""Schedule-Free SGD and AdamW: plain SGD and momentum-free AdamW made schedule-free."""

from __future__ import annotations

from typing import Any

from gradtx import checks
from gradtx.core import GradientTransformationExtraArgs, Scalar, ScalarOrSchedule, chain
from gradtx.learners.basic import sgd
from gradtx.schedules.optax_schedules import warmup_constant_schedule
from gradtx.transforms import add_decayed_weights, scale_by_learning_rate, scale_by_rms
from gradtx.transforms.schedule_free import schedule_free


def _warmed_up(learning_rate: Scalar, warmup_steps: int | None) -> ScalarOrSchedule:
    if warmup_steps is None:
        return learning_rate
    return warmup_constant_schedule(0, learning_rate, warmup_steps)


def schedule_free_sgd(
    learning_rate: Scalar = 1.0,
    warmup_steps: int | None = None,
    b1: Scalar = 0.9,
    weight_decay: Scalar | None = None,
    weight_lr_power: Scalar = 2.0,
    state_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Schedule-Free SGD: :func:`gradtx.contrib.schedule_free` around plain SGD.

    .. math::
        z_{t+1} = z_t - \\gamma_t (g_t + \\lambda y_t), \\quad
        x_{t+1} = (1 - c_t)\\, x_t + c_t\\, z_{t+1}, \\quad
        y_{t+1} = \\beta_1 x_{t+1} + (1-\\beta_1)\\, z_{t+1}

    with :math:`g_t` the gradient at the params :math:`y_t`, :math:`\\gamma_t` the learning
    rate after a linear warm-up from 0 over ``warmup_steps`` and :math:`c_t` the averaging
    weight of :func:`gradtx.contrib.schedule_free`. Evaluate at :math:`x_t`
    (:func:`gradtx.contrib.schedule_free_eval_params`). The weight decay is coupled (added
    to the gradient, so multiplied by the learning rate, as torch's).

    Args:
      learning_rate: :math:`\\gamma \\ge 0` after the warm-up.
      warmup_steps: steps of the linear warm-up, a positive integer, or None for none.
      b1: :math:`\\beta_1` in (0, 1], the interpolation between :math:`x` and :math:`z`.
      weight_decay: :math:`\\lambda \\ge 0`, or None for no decay.
      weight_lr_power: :math:`r \\ge 0`, down-weighting the averaging during warm-up.
      state_dtype: dtype of :math:`z` (None: the params').

    Examples:
      >>> import jax, jax.numpy as jnp, gradtx
      >>> def f(x): return jnp.sum(x ** 2)
      >>> opt = gradtx.contrib.schedule_free_sgd()
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> for _ in range(3):
      ...     updates, state = opt.update(jax.grad(f)(params), state, params)
      ...     params = gradtx.apply_updates(params, updates)
      ...     eval_params = gradtx.contrib.schedule_free_eval_params(state, params)
      ...     print(f"{f(eval_params):.2E}")
      1.40E+01
      1.75E-14
      9.96E-01

    References:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024 (arXiv:2405.15682).

      optax: ``optax.contrib.schedule_free_sgd``.
    """
    with checks.named("schedule_free_sgd"):
        rate = _warmed_up(learning_rate, warmup_steps)
        optimizer = sgd(rate)
        if weight_decay is not None:
            optimizer = chain(add_decayed_weights(weight_decay), optimizer)
        return schedule_free(optimizer, rate, b1, weight_lr_power, state_dtype)


def schedule_free_adamw(
    learning_rate: Scalar = 0.0025,
    warmup_steps: int | None = None,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    weight_decay: Scalar = 0.0,
    weight_lr_power: Scalar = 2.0,
    state_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Schedule-Free AdamW: :func:`gradtx.contrib.schedule_free` around AdamW without momentum.

    .. math::
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2, \\quad
        z_{t+1} = z_t - \\gamma_t \\left(\\frac{g_t}{\\sqrt{v_t/(1-\\beta_2^t)} + \\epsilon}
        + \\lambda y_t\\right),

    .. math::
        x_{t+1} = (1 - c_t)\\, x_t + c_t\\, z_{t+1}, \\quad
        y_{t+1} = \\beta_1 x_{t+1} + (1-\\beta_1)\\, z_{t+1}

    with :math:`g_t` the gradient at the params :math:`y_t`, :math:`\\gamma_t` the learning
    rate after a linear warm-up from 0 over ``warmup_steps`` and :math:`c_t` the averaging
    weight of :func:`gradtx.contrib.schedule_free`. The base optimizer is optax's:
    ``scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True)`` (Adam with
    ``b1=0``, without the zero first moment), decoupled weight decay, the learning rate.
    For complex gradients :math:`g_t^2` is :math:`|g_t|^2`, as in optax.

    Args:
      learning_rate: :math:`\\gamma \\ge 0` after the warm-up.
      warmup_steps: steps of the linear warm-up, a positive integer, or None for none.
      b1: :math:`\\beta_1` in (0, 1], the interpolation between :math:`x` and :math:`z`.
      b2: :math:`\\beta_2` in [0, 1), the decay of the squared gradients' average.
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      weight_decay: decoupled coefficient :math:`\\lambda \\ge 0`.
      weight_lr_power: :math:`r \\ge 0`, down-weighting the averaging during warm-up.
      state_dtype: dtype of :math:`z` (None: the params').

    Examples:
      >>> import jax, jax.numpy as jnp, gradtx
      >>> def f(x): return jnp.sum(x ** 2)
      >>> opt = gradtx.contrib.schedule_free_adamw(1.0)
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> for _ in range(3):
      ...     updates, state = opt.update(jax.grad(f)(params), state, params)
      ...     params = gradtx.apply_updates(params, updates)
      ...     eval_params = gradtx.contrib.schedule_free_eval_params(state, params)
      ...     print(f"{f(eval_params):.2E}")
      5.00E+00
      3.05E+00
      1.73E+00

    References:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024 (arXiv:2405.15682).

      Loshchilov and Hutter, "Decoupled Weight Decay Regularization", 2019.

      optax: ``optax.contrib.schedule_free_adamw``.
    """
    with checks.named("schedule_free_adamw", scale_by_rms={"decay": "b2"}):
        rate = _warmed_up(learning_rate, warmup_steps)
        optimizer = chain(
            scale_by_rms(b2, eps, 0.0, eps_in_sqrt=False, bias_correction=True),
            add_decayed_weights(weight_decay),
            scale_by_learning_rate(rate),
        )
        return schedule_free(optimizer, rate, b1, weight_lr_power, state_dtype)
