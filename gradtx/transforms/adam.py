"""The Adam family: bias-corrected first and second moments (Adam, NAdam, AMSGrad, Adamax)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, recipe, tree
from gradtx.core import GradientTransformation

# inv_bias_correction1 is 1 / (1 - b1^t) at this step's t; NAdam's look-ahead also
# reads it at t + 1 (inv_next_bias_correction1).
SCALE_BY_ADAM = recipe.rule(
    "scale_by_adam",
    scalars=("b1", "one_minus_b1", "b2", "one_minus_b2", "inv_next_bias_correction1",
             "inv_bias_correction1", "inv_bias_correction2", "eps", "eps_root"),
    options=("nesterov",),
    moments=("mu", "nu"),
    kernel="gradtx_adam",
)  # fmt: skip

SCALE_BY_AMSGRAD = recipe.rule(
    "scale_by_amsgrad",
    scalars=("b1", "one_minus_b1", "b2", "one_minus_b2", "inv_bias_correction1",
             "inv_bias_correction2", "eps", "eps_root"),
    moments=("mu", "nu", "nu_max"),
    kernel="gradtx_amsgrad",
)  # fmt: skip

SCALE_BY_ADAMAX = recipe.rule(
    "scale_by_adamax",
    scalars=("b1", "one_minus_b1", "b2", "eps", "inv_bias_correction1"),
    moments=("mu", "nu"),
    kernel="gradtx_adamax",
)


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam` and :func:`scale_by_adamax`: step count and two moments."""

    count: jax.Array  # int32 scalar: updates applied so far
    mu: Any
    nu: Any


def _check(
    who: str, b1: Any, b2: Any, eps: Any, eps_root: Any, state_dtype: Any, mu_dtype: Any = None
) -> tuple[Any, Any]:
    """Validate the shared hyperparameters; return the canonical state dtype and mu dtype."""
    checks.check_hyperparams(
        who,
        b1=(b1, checks.DECAY),
        b2=(b2, checks.DECAY),
        eps=(eps, checks.NONNEGATIVE),
        eps_root=(eps_root, checks.NONNEGATIVE),
    )
    state_dtype = checks.check_state_dtype(who, state_dtype)
    return state_dtype, checks.check_optax_dtype(who, "mu_dtype", mu_dtype, state_dtype)


def first_moment_rule(updates: Any, b1: Any) -> Any:
    """The first moment's rule: an average of the gradients."""
    return lambda m: tree.update_moment(updates, m, b1, 1)


def _second(updates: Any, b2: Any) -> Any:
    """The second moment's rule: an average of their squared moduli (real for complex ones)."""
    return lambda v: tree.update_moment_per_elem_norm(updates, v, b2, 2)


def moment_scalars(rule: recipe.Rule, state: Any, b1: Any, b2: Any, **given: Any) -> dict[str, Any]:
    """``rule``'s scalars for the step ``state`` is about to take: the decays, one minus each,
    and the inverse bias corrections (XLA multiplies by them where the blocks divide)."""
    count = tree.safe_increment(state.count)
    correction1, correction2 = tree.bias_corrections((b1, b2), count)
    (next_correction1,) = tree.bias_corrections((b1,), tree.safe_increment(count))
    given.update(b1=b1, one_minus_b1=1 - b1, b2=b2, one_minus_b2=1 - b2,
                 inv_bias_correction1=1 / correction1, inv_bias_correction2=1 / correction2,
                 inv_next_bias_correction1=1 / next_correction1)  # fmt: skip
    return {name: given[name] for name in rule.scalars}


def _first_moment(
    state: Any, updates: Any, b1: Any, state_dtype: Any, mu_dtype: Any, count: Any
) -> tuple[Any, Any]:
    """The new first moment: (what to store, the value to compute with).

    With optax's ``mu_dtype`` it is optax's arithmetic on the stored moment as it
    is, then a round-to-nearest cast; otherwise it goes through ``state_dtype``.
    """
    if mu_dtype is not None:
        return tree.plain_moment(state.mu, mu_dtype, first_moment_rule(updates, b1))
    return tree.moment(state.mu, updates, state_dtype, first_moment_rule(updates, b1), count)


def corrected_first_moment(mu: Any, updates: Any, b1: Any, count: Any, nesterov: bool) -> Any:
    """The bias-corrected first moment at step ``count``, or NAdam's look-ahead one."""
    if not nesterov:
        return tree.bias_correction(mu, b1, count)
    return jax.tree.map(
        lambda m, g: b1 * m + (1 - b1) * g,
        tree.bias_correction(mu, b1, tree.safe_increment(count)),
        tree.bias_correction(updates, b1, count),
    )


def next_count(state: Any) -> Any:
    """The seed the Adam family's moments round with (see ``tree.moment``): the new count."""
    return tree.safe_increment(state.count)


def init_adam_moments(params: Any, dtype: Any, mu_dtype: Any = None) -> ScaleByAdamState:
    # Two separate buffers: a donated state must not hold the same array twice.
    # nu holds |g|^2: real for complex params (their real dtype), as optax's values.
    if mu_dtype is None:
        mu = tree.state_zeros_like(params, dtype)
    else:
        mu = tree.state_zeros_like(params, mu_dtype, "mu_dtype")
    return ScaleByAdamState(tree.zeros_count(), mu, tree.real_zeros_like(params, dtype))


def scale_by_adam(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Kingma and Ba's Adam, or Dozat's NAdam with ``nesterov=True``.

    With :math:`t` the 1-based number of this update:

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2, \\quad
        \\hat m_t = \\frac{m_t}{1-\\beta_1^t}, \\quad \\hat v_t = \\frac{v_t}{1-\\beta_2^t},

    .. math::
        u_t = \\hat m_t / (\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon).

    With ``nesterov`` the first moment looks one step ahead:
    :math:`\\hat m_t = \\beta_1 m_t / (1-\\beta_1^{t+1}) + (1-\\beta_1) g_t / (1-\\beta_1^t)`.

    For complex gradients the second moment is :math:`|g|^2 = g\\bar g`, real and kept in
    the leaf's real dtype, and the first moment is complex, as in optax.

    Args:
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      mu_dtype: optax's dtype of the stored first moment only, cast to it with
        round-to-nearest as optax does (None: the params' dtype). Not with ``state_dtype``.
      nesterov: use NAdam's look-ahead first moment.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype, bfloat16 rounds stochastically. Defaults to the
        params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_adam()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # the first step is sign(g)
      [ 1. -1.]
      >>> int(state.count)
      1

    References:
      Kingma and Ba, "Adam: A Method for Stochastic Optimization", 2014.

      Dozat, "Incorporating Nesterov Momentum into Adam", 2016.

      optax: ``optax.scale_by_adam``.
    """
    state_dtype, mu_dtype = _check("scale_by_adam", b1, b2, eps, eps_root, state_dtype, mu_dtype)

    def update(updates, state, params=None, **extra):
        checks.check_moments("scale_by_adam", updates, state, "mu", "nu")
        count = tree.safe_increment(state.count)
        mu_stored, mu = _first_moment(state, updates, b1, state_dtype, mu_dtype, count)
        nu_stored, nu = tree.moment(state.nu, updates, state_dtype, _second(updates, b2), count)
        mu_hat = corrected_first_moment(mu, updates, b1, count, nesterov)
        nu_hat = tree.bias_correction(nu, b2, count)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), mu_hat, nu_hat)
        return updates, ScaleByAdamState(count, mu_stored, nu_stored)

    def scalars(state, updates):
        return moment_scalars(SCALE_BY_ADAM, state, b1, b2, eps=eps, eps_root=eps_root)

    tx = GradientTransformation(
        lambda params: init_adam_moments(params, state_dtype, mu_dtype), update
    )
    if mu_dtype is not None:  # optax's rounding, which no fused kernel does: no recipe
        return tx
    return recipe.declare(tx, SCALE_BY_ADAM, scalars, seed=next_count, nesterov=nesterov)


class ScaleByAmsgradState(NamedTuple):
    """State of :func:`scale_by_amsgrad`: the step count, two moments and the running maximum."""

    count: jax.Array
    mu: Any
    nu: Any
    nu_max: Any


def scale_by_amsgrad(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """AMSGrad: Adam with a non-decreasing second moment.

    .. math::
        \\hat v^{max}_t = \\max(\\hat v^{max}_{t-1}, \\hat v_t), \\qquad
        u_t = \\hat m_t / (\\sqrt{\\hat v^{max}_t + \\epsilon_{root}} + \\epsilon)

    with :math:`\\hat m_t = m_t / (1-\\beta_1^t)` and :math:`\\hat v_t = v_t / (1-\\beta_2^t)`
    as in :func:`scale_by_adam`, or the moments as they are where ``bias_correction_mu``
    or ``bias_correction_nu`` is False (both False: Reddi et al.'s original). As in
    optax, the maximum is taken over the bias-corrected :math:`\\hat v`; torch's
    ``Adam(amsgrad=True)`` takes it over the raw :math:`v` and corrects afterwards.

    For complex gradients the second moment is :math:`|g|^2 = g\\bar g`, real and kept in
    the leaf's real dtype, and the first moment is complex, as in optax.

    Args:
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      mu_dtype: optax's dtype of the stored first moment only, cast to it with
        round-to-nearest as optax does (None: the params' dtype). Not with ``state_dtype``.
      bias_correction_mu: divide :math:`m_t` by :math:`1-\\beta_1^t`.
      bias_correction_nu: divide :math:`v_t` by :math:`1-\\beta_2^t` before the maximum.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype, bfloat16 rounds stochastically. Defaults to the
        params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_amsgrad()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> updates, state = tx.update({"w": jnp.array([0.1, -0.2])}, state)
      >>> print(np.asarray(state.nu_max["w"]).round(3))  # still the first step's g**2
      [1. 4.]

    References:
      Reddi, Kale and Kumar, "On the Convergence of Adam and Beyond", 2018.

      optax: ``optax.scale_by_amsgrad``.
    """
    state_dtype, mu_dtype = _check("scale_by_amsgrad", b1, b2, eps, eps_root, state_dtype, mu_dtype)

    def init(params):
        return ScaleByAmsgradState(
            *init_adam_moments(params, state_dtype, mu_dtype),
            tree.real_zeros_like(params, state_dtype),
        )

    def update(updates, state, params=None, **extra):
        checks.check_moments("scale_by_amsgrad", updates, state, "mu", "nu", "nu_max")
        count = tree.safe_increment(state.count)
        mu_stored, mu = _first_moment(state, updates, b1, state_dtype, mu_dtype, count)
        nu_stored, nu = tree.moment(state.nu, updates, state_dtype, _second(updates, b2), count)
        nu_hat = tree.bias_correction(nu, b2, count) if bias_correction_nu else nu
        nu_max_stored, nu_max = tree.moment(
            state.nu_max,
            updates,
            state_dtype,
            lambda m: jax.tree.map(jnp.maximum, m, nu_hat),
            count,
        )
        mu_hat = tree.bias_correction(mu, b1, count) if bias_correction_mu else mu
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), mu_hat, nu_max)
        return updates, ScaleByAmsgradState(count, mu_stored, nu_stored, nu_max_stored)

    def scalars(state, updates):
        return moment_scalars(SCALE_BY_AMSGRAD, state, b1, b2, eps=eps, eps_root=eps_root)

    tx = GradientTransformation(init, update)
    # optax's rounding, or a moment left uncorrected: rules the fused kernel lacks, no recipe.
    if mu_dtype is not None or not (bias_correction_mu and bias_correction_nu):
        return tx
    return recipe.declare(tx, SCALE_BY_AMSGRAD, scalars, seed=next_count)


def scale_by_adamax(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Adamax: Adam with the infinity norm in place of the second moment.

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        u^{\\infty}_t = \\max(\\beta_2 u^{\\infty}_{t-1}, |g_t| + \\epsilon), \\quad
        u_t = \\frac{m_t}{(1-\\beta_1^t)\\, u^{\\infty}_t}

    For complex gradients :math:`u^{\\infty}` takes the modulus :math:`|g|`, real and kept in
    the leaf's real dtype, and the first moment is complex, as in optax.

    Args:
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, keeps the denominator positive.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype. Defaults to the params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_adamax()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # the first step is sign(g)
      [ 1. -1.]

    References:
      Kingma and Ba, "Adam: A Method for Stochastic Optimization", 2014, section 7.

      optax: ``optax.scale_by_adamax``.
    """
    state_dtype, _ = _check("scale_by_adamax", b1, b2, eps, 0.0, state_dtype)

    def update(updates, state, params=None, **extra):
        checks.check_moments("scale_by_adamax", updates, state, "mu", "nu")
        count = tree.safe_increment(state.count)
        mu_stored, mu = tree.moment(
            state.mu, updates, state_dtype, first_moment_rule(updates, b1), count
        )
        infinity_norm = lambda n: jax.tree.map(  # noqa: E731
            lambda g, n: jnp.maximum(jnp.abs(g) + eps, b2 * n), updates, n
        )
        nu_stored, nu = tree.moment(state.nu, updates, state_dtype, infinity_norm, count)
        updates = jax.tree.map(lambda m, n: m / n, tree.bias_correction(mu, b1, count), nu)
        return updates, ScaleByAdamState(count, mu_stored, nu_stored)

    def scalars(state, updates):
        return moment_scalars(SCALE_BY_ADAMAX, state, b1, b2, eps=eps)

    tx = GradientTransformation(lambda params: init_adam_moments(params, state_dtype), update)
    return recipe.declare(tx, SCALE_BY_ADAMAX, scalars, seed=next_count)
