"""CNTK's learners with CNTK's rules, each a chain of gradtx blocks.

Every learner reads the minibatch size from the extra keyword ``batch_size``
at each update (``opt.update(g, state, params, batch_size=32)``) and expects
the gradient summed over the minibatch's samples, as CNTK computes it.
``lr`` is a :func:`learning_rate_schedule` or a bare number (a rate per
minibatch); ``momentum`` is a :func:`momentum_schedule`,
:func:`momentum_as_time_constant_schedule`, :func:`momentum_schedule_per_sample`
or a bare number (a momentum per minibatch). A :mod:`gradtx.schedules`
schedule counts as a bare number that changes with the update count.
Below, :math:`\\eta_t` is the rate per sample after the unit rule,
:math:`m_t` the momentum for this minibatch and :math:`k = 1 - m_t` with
``unit_gain`` (CNTK's default), else 1.
"""

from __future__ import annotations

from typing import Any

from gradtx import checks, tree
from gradtx.cntk.schedules import (
    UnitType,
    as_learning_rate,
    as_momentum,
    learning_rate_schedule,
    momentum_as_time_constant_schedule,
)
from gradtx.core import GradientTransformation, chain, float_leaves
from gradtx.transforms.adaptive import scale_by_adadelta, scale_by_rms_sign_steps, scale_by_rss
from gradtx.transforms.minibatch import (
    momentum as momentum_block,
)
from gradtx.transforms.minibatch import (
    scale_by_fsadagrad,
    scale_by_minibatch_adam,
    scale_by_rate,
)

# CNTK's default variance momentum for FSAdaGrad and Adam: a time constant of 720000 samples.
DEFAULT_VARIANCE_MOMENTUM = momentum_as_time_constant_schedule(720000)
# CNTK's AdaDelta default: a rate of 1 per sample.
DEFAULT_ADADELTA_RATE = learning_rate_schedule(1.0, UnitType.sample)


def _learner(who: str, *blocks: GradientTransformation) -> GradientTransformation:
    """CNTK's learners are defined on real numbers: a complex leaf raises, naming its path."""
    inner = float_leaves(chain(*blocks))
    why = " (CNTK's learners are defined for real parameters)"

    def init(params):
        tree.reject_complex(f"cntk.{who}", params, why)
        return inner.init(params)

    def update(updates, state, params=None, **extra):
        tree.reject_complex(f"cntk.{who}", updates, why)
        return inner.update(updates, state, params, **extra)

    return GradientTransformation(init, update)


def sgd(lr: Any) -> GradientTransformation:
    """Plain SGD on the summed gradient: :math:`\\theta \\leftarrow \\theta - \\eta_t g_t`.

    Args:
      lr: learning rate (schedule, or a bare number per minibatch).

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx.cntk as C
      >>> opt = C.sgd(0.1)  # a bare number: 0.1 per minibatch, 0.025 per sample
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads), batch_size=4)
      >>> print(np.asarray(updates["w"]).round(4))
      [-0.025  0.05 ]

    References:
      CNTK, ``cntk.learners.sgd`` (Learner.cpp, ``LearnerSGD``).
    """
    with checks.named("sgd"):
        return _learner("sgd", scale_by_rate(as_learning_rate("sgd", lr)))


def momentum_sgd(lr: Any, momentum: Any, unit_gain: bool = True) -> GradientTransformation:
    """CNTK's momentum SGD, with the learning rate folded into the buffer.

    .. math:: v_t = m_t v_{t-1} + k\\, \\eta_t g_t, \\qquad \\theta \\leftarrow \\theta - v_t

    Because :math:`\\eta_t` enters the buffer, a rate that changes mid-training
    acts on new gradients only; :func:`gradtx.sgd` scales the whole buffer by
    the current rate instead. The two agree while the rate is constant.

    Args:
      lr: learning rate (schedule, or a bare number per minibatch).
      momentum: momentum schedule, or a bare number per minibatch.
      unit_gain: :math:`k = 1 - m_t` (True, CNTK's default) or 1.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx.cntk as C
      >>> opt = C.momentum_sgd(0.4, 0.9)  # 0.1 per sample for batches of 4
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads), batch_size=4)
      >>> updates, state = opt.update(grads, state, batch_size=4)
      >>> print(np.asarray(updates["w"]).round(4))  # v = 0.9 * 0.01 * g + 0.1 * 0.1 * g
      [-0.019  0.038]

    References:
      CNTK, ``cntk.learners.momentum_sgd`` (Learner.cpp, ``LearnerMomentumSGD``).
    """
    with checks.named("momentum_sgd"):
        return _learner(
            "momentum_sgd",
            scale_by_rate(as_learning_rate("momentum_sgd", lr)),
            momentum_block(as_momentum("momentum_sgd", "momentum", momentum), unit_gain),
        )


def nesterov(lr: Any, momentum: Any, unit_gain: bool = True) -> GradientTransformation:
    """CNTK's Nesterov momentum.

    .. math:: v_t = m_t v_{t-1} + k\\, \\eta_t g_t, \\qquad
              \\theta \\leftarrow \\theta - m_t v_t - k\\, \\eta_t g_t

    Args:
      lr: learning rate (schedule, or a bare number per minibatch).
      momentum: momentum schedule, or a bare number per minibatch.
      unit_gain: :math:`k = 1 - m_t` (True, CNTK's default) or 1.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx.cntk as C
      >>> opt = C.nesterov(0.4, 0.9)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads), batch_size=4)
      >>> print(np.asarray(updates["w"]).round(4))  # -(0.9 * 0.01 * g + 0.1 * 0.1 * g)
      [-0.019  0.038]

    References:
      CNTK, ``cntk.learners.nesterov`` (Learner.cpp, ``LearnerNesterov``).

      Sutskever, Martens, Dahl and Hinton, "On the importance of initialization and momentum
        in deep learning", 2013.
    """
    with checks.named("nesterov"):
        return _learner(
            "nesterov",
            scale_by_rate(as_learning_rate("nesterov", lr)),
            momentum_block(as_momentum("nesterov", "momentum", momentum), unit_gain, nesterov=True),
        )


def adagrad(lr: Any, need_ave_multiplier: bool = True) -> GradientTransformation:
    """CNTK's AdaGrad.

    .. math::
        s_t = s_{t-1} + g_t^2, \\quad a_t = 1/\\sqrt{s_t + 10^{-16}}, \\quad
        \\theta \\leftarrow \\theta - \\eta_t\\, a_t g_t / \\bar a_t

    with :math:`\\bar a_t` the mean of :math:`a_t` over the parameter when
    ``need_ave_multiplier``, else 1.

    Args:
      lr: learning rate (schedule, or a bare number per minibatch).
      need_ave_multiplier: normalise the factors by their mean.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx.cntk as C
      >>> opt = C.adagrad(0.4)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads), batch_size=4)
      >>> print(np.asarray(updates["w"]).round(4))  # factors 1/|g|, divided by their mean
      [-0.1333  0.1333]

    References:
      CNTK, ``cntk.learners.adagrad`` (Learner.cpp, ``LearnerAdaGrad``).

      Duchi, Hazan and Singer, "Adaptive Subgradient Methods for Online Learning and
        Stochastic Optimization", JMLR, 2011.
    """
    with checks.named("adagrad"):
        return _learner(
            "adagrad",
            scale_by_rss(0.0, 1e-16, eps_in_sqrt=True, normalize=need_ave_multiplier),
            scale_by_rate(as_learning_rate("adagrad", lr)),
        )


def rmsprop(
    lr: Any,
    gamma: float,
    inc: float,
    dec: float,
    max: float,  # noqa: A002 - CNTK's argument name
    min: float,  # noqa: A002
    need_ave_multiplier: bool = True,
) -> GradientTransformation:
    """CNTK's RMSProp: per-element step sizes adapted by sign agreement (not Hinton's RMSProp).

    See :func:`gradtx.scale_by_rms_sign_steps`:
    :math:`\\theta \\leftarrow \\theta - \\eta_t\\, a_t g_t / \\bar a_t` with
    :math:`a_t = s_t / \\sqrt{\\nu_t + 10^{-6}}`, the step :math:`s_t` growing by
    ``inc`` while the gradient keeps its sign, shrinking by ``dec`` otherwise,
    within ``[min, max]``.

    Args:
      lr: learning rate (schedule, or a bare number per minibatch).
      gamma: the mean-square decay, in (0, 1).
      inc: step growth factor, :math:`\\ge 1`.
      dec: step shrink factor, in (0, 1].
      max: largest step; ``np.inf`` for no upper clamp (as in CNTK).
      min: smallest step, at most ``max``.
      need_ave_multiplier: normalise the factors by their mean.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx.cntk as C
      >>> opt = C.rmsprop(0.4, gamma=0.9, inc=1.2, dec=0.5, max=1.0, min=0.001)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads), batch_size=4)
      >>> print(np.asarray(updates["w"]).round(4))
      [-0.1333  0.1333]

    References:
      CNTK, ``cntk.learners.rmsprop`` (Learner.cpp, ``LearnerRMSProp``).
    """
    # The block checks gamma, inc, dec, max and min (its max_step and min_step).
    with checks.named("rmsprop", scale_by_rms_sign_steps={"max_step": "max", "min_step": "min"}):
        return _learner(
            "rmsprop",
            scale_by_rms_sign_steps(gamma, inc, dec, max, min, need_ave_multiplier),
            scale_by_rate(as_learning_rate("rmsprop", lr)),
        )


def fsadagrad(
    lr: Any,
    momentum: Any,
    unit_gain: bool = True,
    variance_momentum: Any = DEFAULT_VARIANCE_MOMENTUM,
) -> GradientTransformation:
    """CNTK's FSAdaGrad: a smoothed per-sample RMS, capped at 10, then momentum.

    .. math::
        u_t = g_t \\min(\\sqrt{c_t / v_t}, 10), \\quad
        b_t = m_t b_{t-1} + k u_t, \\quad \\theta \\leftarrow \\theta - \\eta_t b_t

    with :math:`c_t, v_t` the smoothed sample count and mean square of
    :func:`gradtx.scale_by_fsadagrad`.

    Args:
      lr: learning rate (schedule, or a bare number per minibatch).
      momentum: momentum schedule, or a bare number per minibatch.
      unit_gain: :math:`k = 1 - m_t` (True) or 1.
      variance_momentum: the mean-square decay; CNTK's default is a time
        constant of 720000 samples.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx.cntk as C
      >>> opt = C.fsadagrad(0.4, 0.9)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads), batch_size=4)
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * 0.1 * g * min(2 / |g|, 10)
      [-0.02  0.02]

    References:
      CNTK, ``cntk.learners.fsadagrad`` (Learner.cpp, ``LearnerFSAdaGrad``).
    """
    who = "fsadagrad"
    with checks.named(who):
        return _learner(
            who,
            scale_by_fsadagrad(as_momentum(who, "variance_momentum", variance_momentum)),
            momentum_block(as_momentum(who, "momentum", momentum), unit_gain),
            scale_by_rate(as_learning_rate(who, lr)),
        )


def adam(
    lr: Any,
    momentum: Any,
    unit_gain: bool = True,
    variance_momentum: Any = DEFAULT_VARIANCE_MOMENTUM,
    epsilon: float = 1e-8,
    adamax: bool = False,
) -> GradientTransformation:
    """CNTK's Adam (and Adamax): see :func:`gradtx.scale_by_minibatch_adam`.

    .. math:: \\theta \\leftarrow \\theta - \\eta_t
              \\frac{\\sqrt{1-\\beta_{2,t}^t}}{1-\\beta_{1,t}^t}\\frac{m_t}{\\sqrt{v_t} + \\epsilon}

    with :math:`t` counted in minibatches, :math:`\\beta_{1,t}` the momentum and
    :math:`\\beta_{2,t}` the variance momentum for this minibatch (a time
    constant raises it to the power of the minibatch size).

    Args:
      lr: learning rate (schedule, or a bare number per minibatch).
      momentum: :math:`\\beta_1`: a momentum schedule, or a bare number per minibatch.
      unit_gain: :math:`k = 1 - \\beta_{1,t}` on the gradient (True) or 1.
      variance_momentum: :math:`\\beta_2`; CNTK's default is a time constant of 720000 samples.
      epsilon: added outside the root.
      adamax: :math:`v_t = \\max(\\beta_2 v_{t-1}, |g_t|)`, first moment corrected only.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx.cntk as C
      >>> opt = C.adam(0.4, 0.9)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads), batch_size=4)
      >>> print(np.asarray(updates["w"]).round(4))  # the first step is -0.1 * sign(g)
      [-0.1  0.1]

    References:
      CNTK, ``cntk.learners.adam`` (Learner.cpp, ``LearnerAdam``).

      Kingma and Ba, "Adam: A Method for Stochastic Optimization", 2014.
    """
    who = "adam"
    with checks.named(who):  # the block checks epsilon
        return _learner(
            who,
            scale_by_minibatch_adam(
                as_momentum(who, "momentum", momentum),
                as_momentum(who, "variance_momentum", variance_momentum),
                unit_gain,
                epsilon,
                adamax,
            ),
            scale_by_rate(as_learning_rate(who, lr)),
        )


def adadelta(
    lr: Any = DEFAULT_ADADELTA_RATE,
    rho: float = 0.95,
    epsilon: float = 1e-8,
) -> GradientTransformation:
    """CNTK's AdaDelta: the learning rate scales only the applied step.

    .. math::
        E[g^2]_t = \\rho E[g^2]_{t-1} + (1-\\rho) g_t^2, \\quad
        \\Delta_t = \\frac{\\sqrt{E[\\Delta^2]_{t-1} + \\epsilon}}
                         {\\sqrt{E[g^2]_t + \\epsilon}} g_t,
        \\quad \\theta \\leftarrow \\theta - \\eta_t \\Delta_t

    Args:
      lr: learning rate; the default is 1.0 per sample (a bare number is per minibatch).
      rho: decay in [0, 1).
      epsilon: :math:`\\epsilon \\ge 0`.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx.cntk as C
      >>> opt = C.adadelta()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads), batch_size=4)
      >>> print(np.asarray(updates["w"]).round(6))  # about -sqrt(1e-8 / (0.05 * g**2)) * g
      [-0.000447  0.000447]

    References:
      CNTK, ``cntk.learners.adadelta`` (Learner.cpp, ``LearnerAdaDelta``).

      Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012.
    """
    with checks.named("adadelta", scale_by_adadelta={"eps": "epsilon"}):
        return _learner(
            "adadelta",
            scale_by_adadelta(rho, epsilon),
            scale_by_rate(as_learning_rate("adadelta", lr)),
        )
