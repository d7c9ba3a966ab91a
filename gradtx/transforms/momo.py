"""MoMo: momentum (or Adam) steps of the size that reaches a model's lower bound of the loss."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformationExtraArgs, ScalarOrSchedule

# float64's epsilon, as optax (jnp.finfo(float)): below it the averaged gradient is zero.
_TINY = float(jnp.finfo(float).eps)


class MomoState(NamedTuple):
    """State of :func:`scale_by_momo`: the averages of the gradients, losses and products."""

    exp_avg: Any  # average of the gradients, d_t
    barf: jax.Array  # scalar: average of the losses
    gamma: jax.Array  # scalar: average of <g_s, x_s>
    lb: jax.Array  # scalar: the lower bound of the loss in use
    count: jax.Array  # int32 scalar: updates applied so far


class MomoAdamState(NamedTuple):
    """State of :func:`scale_by_momo_adam`: :class:`MomoState` plus Adam's second moment."""

    exp_avg: Any  # average of the gradients, d_t
    exp_avg_sq: Any  # average of |g|^2
    barf: jax.Array  # scalar: average of the losses
    gamma: jax.Array  # scalar: average of <g_s, x_s>
    lb: jax.Array  # scalar: the lower bound of the loss in use
    count: jax.Array  # int32 scalar: updates applied so far


def _inner(x: Any, y: Any) -> jax.Array:
    # The real inner product: a complex entry is two real coordinates (Re <x, y> over C).
    return jnp.real(tree.tree_vdot(x, y))


def _check(reported: str, *, value: Any, params: Any) -> None:
    checks.require_params(
        reported,
        params,
        "the step's model is linear in them",
        "update(grads, state, params, value=loss)",
    )
    if value is None:
        raise ValueError(
            f"{reported}: update needs this step's loss; call update(grads, state, params, "
            f"value=loss), e.g. with the loss from jax.value_and_grad"
        )


def _scalar_dtype(params: Any) -> Any:
    # The params' lowest dtype (as optax), so the update does not promote them; real.
    return tree.real_dtype(tree.tree_dtype(params, "lowest"))


def _check_args(who: str, learning_rate: Any, lower_bound: Any, weight_decay: Any, **decays):
    checks.check_hyperparams(
        who,
        learning_rate=(learning_rate, checks.NONNEGATIVE),
        lower_bound=(lower_bound, "[-inf, inf]"),
        weight_decay=(weight_decay, checks.NONNEGATIVE),
        **{name: (decay, checks.DECAY) for name, decay in decays.items()},
    )


def scale_by_momo(
    learning_rate: ScalarOrSchedule = 1.0,
    beta: float | jax.Array = 0.9,
    lower_bound: float | jax.Array = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    adapt_lower_bound: bool = False,
    *,
    state_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Schaipp et al.'s MoMo: SGD with momentum at a Polyak-type step size, the whole step.

    ``update`` takes the loss :math:`f_t` at the params as the keyword extra ``value``
    (``update(grads, state, params, value=loss)``); :func:`gradtx.chain` hands it on. With
    :math:`t` the number of updates already applied, :math:`\\rho = \\beta` (0 at
    :math:`t = 0`, where each average starts at its first value), :math:`\\eta_t`,
    :math:`\\lambda_t` the learning rate and weight decay at :math:`t` and
    :math:`\\langle\\cdot,\\cdot\\rangle` the inner product over the whole tree:

    .. math::
        d_t = \\rho d_{t-1} + (1-\\rho) g_t, \\quad
        \\bar f_t = \\rho \\bar f_{t-1} + (1-\\rho) f_t, \\quad
        \\gamma_t = \\rho \\gamma_{t-1} + (1-\\rho) \\langle g_t, x_t\\rangle,

    .. math::
        \\tau_t = \\min\\Big(\\eta_t, \\frac{\\big((1+\\eta_t\\lambda_t)(\\bar f_t - f_* -
        \\gamma_t) + \\langle d_t, x_t\\rangle\\big)_+}{\\|d_t\\|^2}\\Big), \\quad
        u_t = -\\frac{\\eta_t\\lambda_t}{1+\\eta_t\\lambda_t} x_t - \\tau_t d_t,

    with :math:`\\tau_t = 0` where :math:`\\|d_t\\|^2` is at most float64's epsilon. The
    update includes the step size and the sign: chain no learning rate after it. With
    ``adapt_lower_bound`` the bound :math:`f_*` starts at ``lower_bound`` and is moved to
    the model's estimate each step (the paper's MoMo*), never below ``lower_bound``.

    For complex params the inner product is the real one, :math:`\\operatorname{Re}
    \\sum \\bar x y`, which makes MoMo on a complex leaf MoMo on its real and imaginary
    parts. optax adds the complex :math:`\\sum \\bar g x` to :math:`\\gamma`, so its state
    turns complex after the first step.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule: the cap of the step size.
      beta: :math:`\\beta` in [0, 1), the averages' decay.
      lower_bound: :math:`f_*`, a lower bound of the loss (0 for most losses).
      weight_decay: :math:`\\lambda \\ge 0` or a schedule, decoupled.
      adapt_lower_bound: estimate the lower bound on the fly.
      state_dtype: dtype of the stored gradient average (e.g. ``jnp.bfloat16``);
        arithmetic runs in the gradients' dtype, bfloat16 rounds stochastically.
        The scalars keep the params' lowest dtype.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gradtx.transforms.momo import scale_by_momo
      >>> tx = scale_by_momo()
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> loss, grads = jax.value_and_grad(lambda x: jnp.sum(x**2))(params)
      >>> updates, state = tx.update(grads, tx.init(params), params, value=loss)
      >>> print(params + updates)  # tau = (14 - 0 - 28 + 28) / 56: half way to the minimum
      [0.5 1.  1.5]

    References:
      Schaipp, Ohana, Eickenberg, Defazio and Gower, "MoMo: Momentum Models for Adaptive
        Learning Rates", ICML 2024 (arXiv:2305.07583).

      optax: ``optax.contrib.momo``.
    """
    who = "scale_by_momo"
    _check_args(who, learning_rate, lower_bound, weight_decay, beta=beta)
    reported, _ = checks.reported_name(who, "value")  # the learner's name, known while built
    state_dtype = checks.check_state_dtype(who, state_dtype)

    def init(params):
        dtype = _scalar_dtype(params)
        return MomoState(
            tree.state_zeros_like(params, state_dtype), jnp.zeros([], dtype),
            jnp.zeros([], dtype), jnp.asarray(lower_bound, dtype), tree.zeros_count(),
        )  # fmt: skip

    def update(updates, state, params=None, *, value=None, **extra):
        _check(reported, value=value, params=params)
        checks.check_moments(who, updates, state, "exp_avg")
        count = state.count
        decay = jnp.where(count == 0, 0.0, beta)
        barf = decay * state.barf + (1 - decay) * jnp.asarray(value, state.barf.dtype)
        exp_avg_stored, exp_avg = tree.moment(
            state.exp_avg, updates, state_dtype,
            lambda d: jax.tree.map(lambda d, g: decay * d + (1 - decay) * g, d, updates),
            tree.safe_increment(count),
        )  # fmt: skip
        gamma = decay * state.gamma + (1 - decay) * _inner(updates, params)
        norm = tree.tree_norm(exp_avg, squared=True)
        product = _inner(exp_avg, params)
        lr, wd = tree.resolve(learning_rate, count), tree.resolve(weight_decay, count)
        shrink = 1 + lr * wd
        if adapt_lower_bound:
            cap = shrink * (barf - gamma) + product
            bound = jnp.where(
                cap < shrink * state.lb, jnp.maximum(cap / (2 * shrink), lower_bound), state.lb
            )
        else:
            bound = state.lb
        polyak = jnp.maximum(shrink * (barf - bound - gamma) + product, 0.0) / norm
        tau = jnp.minimum(lr, jnp.where(norm <= _TINY, 0.0, polyak))
        updates = jax.tree.map(lambda d, x: -(lr * wd) / shrink * x - tau * d, exp_avg, params)
        if adapt_lower_bound:
            new_bound = jnp.maximum((barf + product - gamma) - 0.5 * tau * norm, lower_bound)
        else:
            new_bound = state.lb
        dtype = state.lb.dtype  # a bfloat16 leaf beside float32 ones must not promote it
        new_state = MomoState(
            exp_avg_stored, barf.astype(dtype), gamma.astype(dtype), new_bound.astype(dtype),
            tree.safe_increment(count),
        )  # fmt: skip
        return updates, new_state

    return GradientTransformationExtraArgs(init, update)


def scale_by_momo_adam(
    learning_rate: ScalarOrSchedule = 1e-2,
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    lower_bound: float | jax.Array = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    adapt_lower_bound: bool = False,
    *,
    state_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Schaipp et al.'s MoMo-Adam: Adam(W) at a Polyak-type step size, the whole step.

    ``update`` takes the loss :math:`f_t` as the keyword extra ``value``. With :math:`t`
    the 1-based number of this update, :math:`b_i = 1 - \\beta_i^t`, :math:`\\eta_t`,
    :math:`\\lambda_t` the learning rate and weight decay at :math:`t - 1`:

    .. math::
        d_t = \\beta_1 d_{t-1} + (1-\\beta_1) g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2, \\quad
        D_t = \\epsilon + \\sqrt{v_t / b_2},

    with :math:`\\bar f_t`, :math:`\\gamma_t` averaged with :math:`\\beta_1` as in
    :func:`scale_by_momo` (from zero, hence the :math:`b_1`'s below), and

    .. math::
        \\tau_t = \\min\\Big(\\frac{\\eta_t}{b_1}, \\frac{\\big((1+\\eta_t\\lambda_t)
        (\\bar f_t - b_1 f_* - \\gamma_t) + \\langle d_t, x_t\\rangle\\big)_+}
        {\\langle d_t, d_t / D_t\\rangle}\\Big), \\quad
        u_t = -\\frac{\\eta_t\\lambda_t}{1+\\eta_t\\lambda_t} x_t - \\tau_t \\frac{d_t}{D_t}.

    The update includes the step size and the sign: chain no learning rate after it.

    For complex params :math:`g^2` is :math:`|g|^2 = g\\bar g` (real, kept in the leaf's
    real dtype) and the inner products are real, :math:`\\operatorname{Re} \\sum \\bar x
    y`. optax squares the complex gradient (:math:`g \\cdot g`) and adds complex inner
    products to its scalar state.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule: the cap of the step size.
      b1: :math:`\\beta_1` in [0, 1), the decay of the averages.
      b2: :math:`\\beta_2` in [0, 1), the second moment's decay.
      eps: :math:`\\epsilon \\ge 0`, added to the root.
      lower_bound: :math:`f_*`, a lower bound of the loss (0 for most losses).
      weight_decay: :math:`\\lambda \\ge 0` or a schedule, decoupled as in AdamW.
      adapt_lower_bound: estimate the lower bound on the fly.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic runs
        in the gradients' dtype, bfloat16 rounds stochastically. The scalars keep the
        params' lowest dtype.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np
      >>> from gradtx.transforms.momo import scale_by_momo_adam
      >>> tx = scale_by_momo_adam()
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> loss, grads = jax.value_and_grad(lambda x: jnp.sum(x**2))(params)
      >>> updates, state = tx.update(grads, tx.init(params), params, value=loss)
      >>> print(np.asarray(updates).round(4))  # the cap eta / b_1 = 0.1 times d / D = 0.1 sign(g)
      [-0.01 -0.01 -0.01]

    References:
      Schaipp, Ohana, Eickenberg, Defazio and Gower, "MoMo: Momentum Models for Adaptive
        Learning Rates", ICML 2024 (arXiv:2305.07583).

      optax: ``optax.contrib.momo_adam``.
    """
    who = "scale_by_momo_adam"
    _check_args(who, learning_rate, lower_bound, weight_decay, b1=b1, b2=b2)
    reported, _ = checks.reported_name(who, "value")  # the learner's name, known while built
    checks.check_interval(who, "eps", eps, checks.NONNEGATIVE)
    state_dtype = checks.check_state_dtype(who, state_dtype)

    def init(params):
        dtype = _scalar_dtype(params)
        return MomoAdamState(
            tree.state_zeros_like(params, state_dtype), tree.real_zeros_like(params, state_dtype),
            jnp.zeros([], dtype), jnp.zeros([], dtype), jnp.asarray(lower_bound, dtype),
            tree.zeros_count(),
        )  # fmt: skip

    def update(updates, state, params=None, *, value=None, **extra):
        _check(reported, value=value, params=params)
        checks.check_moments(who, updates, state, "exp_avg", "exp_avg_sq")
        count = tree.safe_increment(state.count)
        barf = b1 * state.barf + (1 - b1) * jnp.asarray(value, state.barf.dtype)
        exp_avg_stored, exp_avg = tree.moment(
            state.exp_avg, updates, state_dtype,
            lambda d: jax.tree.map(lambda d, g: b1 * d + (1 - b1) * g, d, updates), count,
        )  # fmt: skip
        exp_avg_sq_stored, exp_avg_sq = tree.moment(
            state.exp_avg_sq, updates, state_dtype,
            # optax's order of products; the real part is |g|^2 for a complex g.
            lambda v: jax.tree.map(
                lambda v, g: b2 * v + ((1 - b2) * g * jnp.conj(g)).real, v, updates
            ),
            count,
        )  # fmt: skip
        # Inline powers, as optax: an eager and a jitted b**t differ by an ulp.
        correction1 = jnp.asarray(1 - b1**count, barf.dtype)
        correction2 = jnp.asarray(1 - b2**count, barf.dtype)
        precond = jax.tree.map(lambda v: eps + jnp.sqrt(v / correction2), exp_avg_sq)
        norm = _inner(exp_avg, jax.tree.map(lambda d, p: d / p, exp_avg, precond))
        gamma = b1 * state.gamma + (1 - b1) * _inner(updates, params)
        product = _inner(exp_avg, params)
        lr, wd = tree.resolve(learning_rate, state.count), tree.resolve(weight_decay, state.count)
        shrink = 1 + lr * wd
        if adapt_lower_bound:
            cap = shrink * (barf - gamma) + product
            bound = jnp.where(
                cap < shrink * correction1 * state.lb,
                jnp.maximum(cap / (2 * correction1 * shrink), lower_bound),
                state.lb,
            )
        else:
            bound = state.lb
        polyak = jnp.maximum(shrink * (barf - correction1 * bound - gamma) + product, 0.0) / norm
        tau = jnp.minimum(lr / correction1, jnp.where(norm <= _TINY, 0.0, polyak))
        updates = jax.tree.map(
            lambda d, p, x: -(lr * wd) / shrink * x - tau * d / p, exp_avg, precond, params
        )
        if adapt_lower_bound:
            new_bound = ((barf + product - gamma) - 0.5 * tau * norm) / correction1
            new_bound = jnp.maximum(new_bound, lower_bound)
        else:
            new_bound = state.lb
        dtype = state.lb.dtype  # a bfloat16 leaf beside float32 ones must not promote it
        new_state = MomoAdamState(
            exp_avg_stored, exp_avg_sq_stored, barf.astype(dtype), gamma.astype(dtype),
            new_bound.astype(dtype), count,
        )  # fmt: skip
        return updates, new_state

    return GradientTransformationExtraArgs(init, update)
