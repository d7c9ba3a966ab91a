"""Blocks for gradients summed over a minibatch whose size arrives with every update.

A hyperparameter here is a number or a function ``(minibatches, samples,
batch_size) -> value`` of the progress so far (updates and samples before this
one) and this update's minibatch size, read from the extra keyword
``batch_size``. CNTK's learners are chains of these blocks
(:mod:`gradtx.cntk`); they are as useful for any rule that scales with the
minibatch, such as a rate per sample applied to a summed gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol, TypeGuard

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks, tree
from gradtx.core import GradientTransformation

PerUpdate = float | jax.Array | Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


class _LogValued(Protocol):
    """A decay schedule that also gives its logarithm exactly (CNTK's momentum schedules)."""

    def log_value(
        self, minibatches: jax.Array, samples: jax.Array, batch_size: jax.Array
    ) -> jax.Array: ...


def _has_log_value(hyperparam: object) -> TypeGuard[_LogValued]:
    return hasattr(hyperparam, "log_value")


class Progress(NamedTuple):
    """Training progress before this update: minibatches and samples seen so far."""

    minibatches: jax.Array  # int32: updates applied so far
    samples: jax.Array  # int32: samples seen so far (the sum of batch_size)


def start() -> Progress:
    return Progress(tree.zeros_count(), tree.zeros_count())


def batch_size_of(who: str, extra: dict[str, Any]) -> jax.Array:
    """This update's minibatch size from the extras, or an error that says how to pass it."""
    if extra.get("batch_size") is None:
        raise ValueError(
            f"{who}: update needs the minibatch size as the extra keyword batch_size, "
            f"e.g. opt.update(grads, state, params, batch_size=32)"
        )
    return jnp.asarray(extra["batch_size"], jnp.int32)


def value_at(hyperparam: PerUpdate, progress: Progress, batch_size: jax.Array) -> jax.Array:
    if callable(hyperparam):
        return hyperparam(progress.minibatches, progress.samples, batch_size)
    return jnp.asarray(hyperparam, jnp.float32)


def log_decay_at(hyperparam: PerUpdate, progress: Progress, batch_size: jax.Array) -> jax.Array:
    """:math:`\\log m` for a decay :math:`m` in [0, 1), without rounding :math:`m` first.

    A decay close to 1 (CNTK's variance momentum is exp(-batch/720000)) loses
    most of ``1 - m`` to float32 rounding; schedules that know the logarithm
    (``log_value``, as CNTK's momentum schedules do) give it exactly, and a
    Python number has its log taken in float64.
    """
    if _has_log_value(hyperparam):
        return hyperparam.log_value(progress.minibatches, progress.samples, batch_size)
    if isinstance(hyperparam, int | float):
        return jnp.float32(math.log(hyperparam) if hyperparam > 0 else -np.inf)
    return jnp.log(value_at(hyperparam, progress, batch_size))


def advance(progress: Progress, batch_size: jax.Array) -> Progress:
    samples = jnp.where(
        progress.samples <= tree.INT32_MAX - batch_size,
        progress.samples + batch_size,
        tree.INT32_MAX,
    )
    return Progress(tree.safe_increment(progress.minibatches), samples.astype(jnp.int32))


class ScaleByRateState(NamedTuple):
    """State of :func:`scale_by_rate`: the progress its rate is evaluated at."""

    progress: Progress


def scale_by_rate(rate: PerUpdate, *, flip_sign: bool = True) -> GradientTransformation:
    """Scale by a rate that may depend on progress and minibatch size: :math:`u = -\\eta_t g`.

    Args:
      rate: :math:`\\eta_t`, a number or ``(minibatches, samples, batch_size) -> rate``.
      flip_sign: scale by :math:`-\\eta_t` (descent); False for :math:`+\\eta_t`.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_rate(lambda minibatches, samples, batch_size: 0.1 / batch_size)
      >>> grads = {"w": jnp.array([32.0, -64.0])}  # summed over 32 samples
      >>> updates, state = tx.update(grads, tx.init(grads), batch_size=32)
      >>> print(np.asarray(updates["w"]).round(4), int(state.progress.samples))
      [-0.1  0.2] 32

    References:
      CNTK, ``cntk.learners.sgd`` (Learner.cpp, ``LearnerSGD``) and
        ``cntk.learners.learning_rate_schedule``.
    """
    checks.check_interval("scale_by_rate", "rate", rate, checks.NONNEGATIVE)
    sign = -1.0 if flip_sign else 1.0

    def init(params):
        return ScaleByRateState(start())

    def update(updates, state, params=None, **extra):
        batch = batch_size_of("scale_by_rate", extra)
        eta = sign * value_at(rate, state.progress, batch)
        updates = jax.tree.map(lambda g: (eta * g).astype(g.dtype), updates)
        return updates, ScaleByRateState(advance(state.progress, batch))

    return GradientTransformation(init, update)


class MomentumState(NamedTuple):
    """State of :func:`momentum`: the progress and the velocity."""

    progress: Progress
    velocity: Any


def momentum(
    momentum: PerUpdate, unit_gain: bool = True, nesterov: bool = False
) -> GradientTransformation:
    """Momentum whose coefficient may depend on progress and minibatch size.

    .. math::
        v_t = m_t v_{t-1} + k u_t, \\qquad
        u'_t = v_t \\;\\text{ or, with nesterov, }\\; m_t v_t + k u_t

    with :math:`k = 1 - m_t` for ``unit_gain`` (CNTK's default) and 1 otherwise.

    Args:
      momentum: :math:`m_t` in [0, 1): a number or ``(minibatches, samples,
        batch_size) -> m`` (e.g. a CNTK momentum schedule).
      unit_gain: scale the incoming update by :math:`1 - m_t`.
      nesterov: return the look-ahead :math:`m_t v_t + k u_t`.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.momentum(0.9)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads), batch_size=4)
      >>> updates, state = tx.update(grads, state, batch_size=4)  # 0.9 * 0.1 * g + 0.1 * g
      >>> print(np.asarray(updates["w"]).round(4))
      [ 0.19 -0.38]

    References:
      CNTK, ``cntk.learners.momentum_sgd`` and ``cntk.learners.nesterov`` (Learner.cpp,
        ``LearnerMomentumSGD``, ``LearnerNesterov``).

      Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
    """
    checks.check_interval("momentum", "momentum", momentum, checks.DECAY)

    def init(params):
        return MomentumState(start(), tree.zeros_like(params))

    def update(updates, state, params=None, **extra):
        checks.check_moments("momentum", updates, state, "velocity")
        batch = batch_size_of("momentum", extra)
        log_m = log_decay_at(momentum, state.progress, batch)
        m, k = jnp.exp(log_m), (-jnp.expm1(log_m) if unit_gain else 1.0)
        velocity = jax.tree.map(lambda u, v: m * v + k * u, updates, state.velocity)
        if nesterov:
            updates = jax.tree.map(lambda u, v: m * v + k * u, updates, velocity)
        else:
            updates = velocity
        return updates, MomentumState(advance(state.progress, batch), velocity)

    return GradientTransformation(init, update)


class ScaleByFsadagradState(NamedTuple):
    """State of :func:`scale_by_fsadagrad`: progress, smoothed sample count, mean square."""

    progress: Progress
    smoothed_count: jax.Array  # float32: samples in the running mean square, smoothed
    mean_square: Any


def scale_by_fsadagrad(
    variance_momentum: PerUpdate, max_multiplier: float = 10.0
) -> GradientTransformation:
    """FSAdaGrad's scaling (Frank Seide's AdaGrad fix, CNTK): a smoothed per-sample RMS.

    With the variance momentum :math:`\\rho_t` for this minibatch of :math:`B_t` samples,

    .. math::
        c_t = \\rho_t c_{t-1} + (1-\\rho_t) B_t, \\quad
        v_t = \\rho_t v_{t-1} + (1-\\rho_t) g_t^2, \\quad
        u_t = g_t \\min\\left(\\sqrt{c_t / v_t}, w_{max}\\right)

    (:math:`u_t = g_t` where :math:`v_t = 0`).

    Args:
      variance_momentum: :math:`\\rho_t`: a number or a per-update function (CNTK's
        default is ``momentum_as_time_constant_schedule(720000)``).
      max_multiplier: :math:`w_{max}` (10 in CNTK).

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_fsadagrad(0.9)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads), batch_size=4)
      >>> print(np.asarray(updates["w"]).round(4))  # g * min(sqrt(0.4 / (0.1 * g**2)), 10)
      [ 2. -2.]

    References:
      CNTK, ``cntk.learners.fsadagrad`` (Learner.cpp, ``LearnerFSAdaGrad``).
    """
    checks.check_interval(
        "scale_by_fsadagrad", "variance_momentum", variance_momentum, checks.DECAY
    )

    def init(params):
        tree.reject_complex("scale_by_fsadagrad", params)
        return ScaleByFsadagradState(start(), jnp.zeros([], jnp.float32), tree.zeros_like(params))

    def update(updates, state, params=None, **extra):
        tree.reject_complex("scale_by_fsadagrad", updates)
        checks.check_moments("scale_by_fsadagrad", updates, state, "mean_square")
        batch = batch_size_of("scale_by_fsadagrad", extra)
        log_rho = log_decay_at(variance_momentum, state.progress, batch)
        rho, one_minus = jnp.exp(log_rho), -jnp.expm1(log_rho)
        count = rho * state.smoothed_count + one_minus * batch.astype(jnp.float32)
        mean_square = jax.tree.map(
            lambda g, v: rho * v + one_minus * (g * g), updates, state.mean_square
        )
        root_count = jnp.sqrt(count)

        def scaled(g, v):
            w = jnp.minimum(root_count * (1.0 / jnp.sqrt(v)), max_multiplier)
            return jnp.where(v != 0, g * w, g)

        updates = jax.tree.map(scaled, updates, mean_square)
        return updates, ScaleByFsadagradState(advance(state.progress, batch), count, mean_square)

    return GradientTransformation(init, update)


class ScaleByMinibatchAdamState(NamedTuple):
    """State of :func:`scale_by_minibatch_adam`: progress and the two moments."""

    progress: Progress
    momentum: Any
    mean_square: Any


def scale_by_minibatch_adam(
    momentum: PerUpdate,
    variance_momentum: PerUpdate,
    unit_gain: bool = True,
    epsilon: float = 1e-8,
    adamax: bool = False,
) -> GradientTransformation:
    """CNTK's Adam: momenta per minibatch, eps outside the root, bias correction in minibatches.

    With :math:`\\beta_{1,t}, \\beta_{2,t}` this minibatch's momenta, :math:`t` the
    1-based minibatch number and :math:`k = 1 - \\beta_{1,t}` for ``unit_gain``, else 1:

    .. math::
        v_t = \\beta_{2,t} v_{t-1} + (1-\\beta_{2,t}) g_t^2, \\quad
        m_t = \\beta_{1,t} m_{t-1} + k g_t, \\quad
        u_t = \\frac{\\sqrt{1-\\beta_{2,t}^t}}{1-\\beta_{1,t}^t}
              \\frac{m_t}{\\sqrt{v_t} + \\epsilon}

    and with ``adamax``: :math:`v_t = \\max(\\beta_{2,t} v_{t-1}, |g_t|)`,
    :math:`u_t = m_t / ((1-\\beta_{1,t}^t)(v_t + \\epsilon))`. The powers use
    ``expm1`` of :math:`t \\log\\beta`, so momenta close to 1 keep their precision.

    Args:
      momentum: :math:`\\beta_1` per minibatch: a number or per-update function.
      variance_momentum: :math:`\\beta_2` per minibatch, likewise.
      unit_gain: scale the gradient by :math:`1 - \\beta_1` in the first moment.
      epsilon: :math:`\\epsilon \\ge 0`, outside the root.
      adamax: use the infinity norm and correct only the first moment.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_minibatch_adam(0.9, 0.999)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads), batch_size=4)
      >>> print(np.asarray(updates["w"]).round(4))  # the first step is sign(g)
      [ 1. -1.]

    References:
      CNTK, ``cntk.learners.adam`` (Learner.cpp, ``LearnerAdam``).

      Kingma and Ba, "Adam: A Method for Stochastic Optimization", 2014.
    """
    checks.check_hyperparams(
        "scale_by_minibatch_adam",
        momentum=(momentum, checks.DECAY),
        variance_momentum=(variance_momentum, checks.DECAY),
        epsilon=(epsilon, checks.NONNEGATIVE),
    )

    def init(params):
        tree.reject_complex("scale_by_minibatch_adam", params)
        return ScaleByMinibatchAdamState(start(), tree.zeros_like(params), tree.zeros_like(params))

    def update(updates, state, params=None, **extra):
        tree.reject_complex("scale_by_minibatch_adam", updates)
        checks.check_moments("scale_by_minibatch_adam", updates, state, "momentum", "mean_square")
        batch = batch_size_of("scale_by_minibatch_adam", extra)
        log_b1 = log_decay_at(momentum, state.progress, batch)
        log_b2 = log_decay_at(variance_momentum, state.progress, batch)
        b1, b2 = jnp.exp(log_b1), jnp.exp(log_b2)
        k = -jnp.expm1(log_b1) if unit_gain else 1.0
        t = state.progress.minibatches.astype(jnp.float32) + 1  # in float: int32 + 1 can wrap
        correction = 1.0 / -jnp.expm1(t * log_b1)
        if adamax:
            mean_square = jax.tree.map(
                lambda g, v: jnp.maximum(b2 * v, jnp.abs(g)), updates, state.mean_square
            )
            denominator = mean_square
        else:
            correction = correction * jnp.sqrt(-jnp.expm1(t * log_b2))
            mean_square = jax.tree.map(
                lambda g, v: b2 * v + -jnp.expm1(log_b2) * (g * g), updates, state.mean_square
            )
            denominator = jax.tree.map(jnp.sqrt, mean_square)
        moment = jax.tree.map(lambda g, m: b1 * m + k * g, updates, state.momentum)
        updates = jax.tree.map(lambda m, d: m * (correction / (d + epsilon)), moment, denominator)
        return updates, ScaleByMinibatchAdamState(
            advance(state.progress, batch), moment, mean_square
        )

    return GradientTransformation(init, update)
