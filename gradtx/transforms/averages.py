"""Momentum: a decaying trace of past updates, and exponential moving averages."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from gradtx import checks, recipe, tree
from gradtx.core import GradientTransformation, ScalarOrSchedule

TRACE = recipe.rule(
    "trace",
    scalars=("decay", "one_minus_decay"),
    options=("nesterov", "unit_gain"),
    moments=("trace",),
    kernel="gradtx_sgd_momentum",
)


# inv_bias_correction is 1 / (1 - decay^t) at this step's t, or 1 without debiasing (a
# product by 1 is exact: one loop for both); signed: the sign of the average (Signum), from
# a scale_by_sign after it.
EMA = recipe.rule(
    "ema",
    scalars=("decay", "one_minus_decay", "inv_bias_correction"),
    moments=("ema",),
    kernel="gradtx_ema",
    signed=True,
)


class TraceState(NamedTuple):
    """State of :func:`trace`: the step count (for a momentum schedule) and the trace."""

    count: jax.Array  # int32 scalar: evaluates a momentum schedule
    trace: Any


def trace(
    decay: ScalarOrSchedule,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
    *,
    unit_gain: bool = False,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Heavy-ball momentum.

    .. math::
        m_t = \\mu_t\\, m_{t-1} + k\\, g_t, \\qquad
        u_t = \\begin{cases} \\mu_t m_t + k\\, g_t & \\text{nesterov} \\\\
                             m_t & \\text{otherwise} \\end{cases}

    with :math:`k = 1 - \\mu_t` when ``unit_gain`` (CNTK's default, an EMA of
    the updates) and :math:`k = 1` otherwise (optax's ``trace`` and torch's SGD
    with dampening 0). :math:`m_0 = 0`.

    Args:
      decay: the momentum :math:`\\mu` in [0, 1), or a schedule of the step count.
      nesterov: use Nesterov's look-ahead form.
      accumulator_dtype: optax's dtype of the stored trace, cast to it with
        round-to-nearest as optax does (None: the params' dtype). Not with ``state_dtype``.
      unit_gain: scale the incoming update by :math:`1 - \\mu`.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype, bfloat16 rounds stochastically. Defaults to the
        params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.trace(0.9)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> updates, state = tx.update(grads, state)  # g + 0.9 * g
      >>> print(np.asarray(updates["w"]).round(4))
      [ 1.9 -3.8]

    References:
      Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.

      Sutskever, Martens, Dahl and Hinton, "On the importance of initialization and momentum
        in deep learning", 2013.

      optax: ``optax.trace``; torch: the momentum buffer of ``torch.optim.SGD``.
    """
    checks.check_interval("trace", "decay", decay, checks.DECAY)
    state_dtype = checks.check_state_dtype("trace", state_dtype)
    accumulator_dtype = checks.check_optax_dtype(
        "trace", "accumulator_dtype", accumulator_dtype, state_dtype
    )

    def init(params):
        if accumulator_dtype is not None:
            zeros = tree.state_zeros_like(params, accumulator_dtype, "accumulator_dtype")
        else:
            zeros = tree.state_zeros_like(params, state_dtype)
        return TraceState(tree.zeros_count(), zeros)

    def update(updates, state, params=None, **extra):
        checks.check_moments("trace", updates, state, "trace")
        mu = tree.resolve(decay, state.count)
        if unit_gain:
            step = lambda g, m: (1 - mu) * g + mu * m  # noqa: E731
        else:
            step = lambda g, m: g + mu * m  # noqa: E731
        rule = lambda m: jax.tree.map(step, updates, m)  # noqa: E731
        if accumulator_dtype is not None:  # optax's arithmetic on the trace as stored
            stored, new_trace = tree.plain_moment(state.trace, accumulator_dtype, rule)
        else:
            stored, new_trace = tree.moment(state.trace, updates, state_dtype, rule, state.count)
        updates = jax.tree.map(step, updates, new_trace) if nesterov else new_trace
        return updates, TraceState(tree.safe_increment(state.count), stored)

    def scalars(state, updates):
        mu = tree.resolve(decay, state.count)
        return {"decay": mu, "one_minus_decay": 1 - mu}

    tx = GradientTransformation(init, update)
    if accumulator_dtype is not None:  # optax's rounding, which no fused kernel does: no recipe
        return tx
    return recipe.declare(
        tx, TRACE, scalars, seed=lambda s: s.count, nesterov=nesterov, unit_gain=unit_gain
    )


class EmaState(NamedTuple):
    """State of :func:`ema`: the step count (for the debiasing) and the moving average."""

    count: jax.Array
    ema: Any


def ema(
    decay: float | jax.Array,
    debias: bool = True,
    accumulator_dtype: Any = None,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Exponential moving average of the updates.

    .. math::
        m_t = \\beta m_{t-1} + (1-\\beta) g_t, \\qquad
        u_t = m_t / (1 - \\beta^{t+1}) \\text{ if debias, else } m_t

    Args:
      decay: :math:`\\beta` in [0, 1).
      debias: divide by :math:`1 - \\beta^{t+1}` to undo the zero start.
      accumulator_dtype: optax's dtype of the stored average, cast to it with
        round-to-nearest as optax does (None: the params' dtype). Not with ``state_dtype``.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype, bfloat16 rounds stochastically. Defaults to the
        params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.ema(0.9)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # debiased: at first the update itself
      [ 1. -2.]

    References:
      optax: ``optax.ema``.
    """
    checks.check_interval("ema", "decay", decay, checks.DECAY)
    state_dtype = checks.check_state_dtype("ema", state_dtype)
    accumulator_dtype = checks.check_optax_dtype(
        "ema", "accumulator_dtype", accumulator_dtype, state_dtype
    )

    def init(params):
        if accumulator_dtype is not None:
            zeros = tree.state_zeros_like(params, accumulator_dtype, "accumulator_dtype")
        else:
            zeros = tree.state_zeros_like(params, state_dtype)
        return EmaState(tree.zeros_count(), zeros)

    def update(updates, state, params=None, **extra):
        checks.check_moments("ema", updates, state, "ema")
        count = tree.safe_increment(state.count)
        rule = lambda m: tree.update_moment(updates, m, decay, 1)  # noqa: E731
        if accumulator_dtype is not None:  # optax's arithmetic on the average as stored
            stored, new_ema = tree.plain_moment(state.ema, accumulator_dtype, rule)
        else:
            stored, new_ema = tree.moment(state.ema, updates, state_dtype, rule, count)
        updates = tree.bias_correction(new_ema, decay, count) if debias else new_ema
        return updates, EmaState(count, stored)

    def scalars(state, updates):
        (correction,) = tree.bias_corrections((decay,), tree.safe_increment(state.count))
        inverse = 1 / correction if debias else 1.0
        return {"decay": decay, "one_minus_decay": 1 - decay, "inv_bias_correction": inverse}

    tx = GradientTransformation(init, update)
    if accumulator_dtype is not None:  # optax's rounding, which no fused kernel does: no recipe
        return tx
    return recipe.declare(tx, EMA, scalars, seed=lambda s: tree.safe_increment(s.count))
