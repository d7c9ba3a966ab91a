"""Per-coordinate step sizes from squared-gradient statistics: RMSProp, Adagrad, AdaDelta.

``eps_in_sqrt`` names the one place frameworks disagree: optax and Keras put
eps inside the square root, torch and MXNet outside it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, recipe, tree
from gradtx.core import GradientTransformation

SCALE_BY_RMS = recipe.rule(
    "scale_by_rms",
    scalars=("decay", "one_minus_decay", "eps"),
    options=("eps_in_sqrt",),
    moments=("nu",),
    kernel="gradtx_rmsprop",
)

SCALE_BY_STDDEV = recipe.rule(
    "scale_by_stddev",
    scalars=("decay", "one_minus_decay", "eps"),
    options=("eps_in_sqrt",),
    moments=("mu", "nu"),
    kernel="gradtx_rmsprop_centered",
)

SCALE_BY_RSS = recipe.rule(
    "scale_by_rss",
    scalars=("eps",),
    options=("eps_in_sqrt",),
    moments=("sum_of_squares",),
    kernel="gradtx_adagrad",
)


def _inverse_root(v: jax.Array, eps: Any, eps_in_sqrt: bool) -> jax.Array:
    """:math:`1/\\sqrt{v + \\epsilon}` or :math:`1/(\\sqrt{v} + \\epsilon)`."""
    return jax.lax.rsqrt(v + eps) if eps_in_sqrt else 1 / (jnp.sqrt(v) + eps)


class ScaleByRmsState(NamedTuple):
    """State of :func:`scale_by_rms`: the running mean of the squared gradients."""

    nu: Any


class ScaleByRmsWithCountState(NamedTuple):
    """State of :func:`scale_by_rms` with ``bias_correction``: the step count and the mean."""

    count: jax.Array  # int32 scalar: updates applied so far
    nu: Any


def _bias_corrected(moments: Any, decay: Any, count: Any, bias_correction: bool) -> Any:
    """``moments / (1 - decay**count)`` where optax's ``bias_correction`` asks for it."""
    return tree.bias_correction(moments, decay, count) if bias_correction else moments


def scale_by_rms(
    decay: float | jax.Array = 0.9,
    eps: float | jax.Array = 1e-8,
    initial_scale: float | jax.Array = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Divide by a running root mean square of the gradients (Hinton's RMSProp).

    .. math::
        \\nu_t = \\rho\\, \\nu_{t-1} + (1-\\rho)\\, g_t^2, \\qquad
        u_t = g_t / \\sqrt{\\hat\\nu_t + \\epsilon} \\;\\text{ or }\\;
        g_t / (\\sqrt{\\hat\\nu_t} + \\epsilon)

    with :math:`\\hat\\nu_t = \\nu_t / (1-\\rho^t)` if ``bias_correction`` (then the
    state is :class:`ScaleByRmsWithCountState`, which counts :math:`t`) and
    :math:`\\hat\\nu_t = \\nu_t` otherwise. ``scale_by_rms(b2, eps, 0.0, False, True)``
    is ``scale_by_adam(0.0, b2, eps)`` without the first moment's memory.

    For complex gradients the second moment is :math:`|g|^2 = g\\bar g`, real and kept in
    the leaf's real dtype, and the first moment is complex, as in optax.

    Args:
      decay: :math:`\\rho` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`.
      initial_scale: :math:`\\nu_0` (0 in optax and torch, 1 in TensorFlow 1).
      eps_in_sqrt: True puts eps inside the root (optax); False outside (torch).
      bias_correction: divide :math:`\\nu_t` by :math:`1-\\rho^t`, as Adam does.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype. Defaults to the params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_rms()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # g / sqrt(0.1 * g**2)
      [ 3.1623 -3.1623]
      >>> tx = gradtx.scale_by_rms(bias_correction=True)  # nu / (1 - 0.9): g**2 at step 1
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4), int(state.count))
      [ 1. -1.] 1

    References:
      Tieleman and Hinton, "Lecture 6.5 - rmsprop: Divide the gradient by a running average
        of its recent magnitude", COURSERA: Neural Networks for Machine Learning, 2012.

      optax: ``optax.scale_by_rms``.
    """
    state_dtype = checks.check_state_dtype("scale_by_rms", state_dtype)
    checks.check_hyperparams(
        "scale_by_rms",
        decay=(decay, checks.DECAY),
        eps=(eps, checks.NONNEGATIVE),
        initial_scale=(initial_scale, checks.NONNEGATIVE),
    )

    def init(params):
        nu = tree.real_full_like(params, initial_scale, state_dtype)
        if bias_correction:
            return ScaleByRmsWithCountState(tree.zeros_count(), nu)
        return ScaleByRmsState(nu=nu)

    def update(updates, state, params=None, **extra):
        checks.check_moments("scale_by_rms", updates, state, "nu")
        count: Any = tree.safe_increment(state.count) if bias_correction else 0
        nu_stored, nu = tree.moment(
            state.nu, updates, state_dtype,
            lambda v: tree.update_moment_per_elem_norm(updates, v, decay, 2), count,
        )  # fmt: skip
        nu = _bias_corrected(nu, decay, count, bias_correction)
        updates = jax.tree.map(lambda g, n: _inverse_root(n, eps, eps_in_sqrt) * g, updates, nu)
        if bias_correction:
            return updates, ScaleByRmsWithCountState(count, nu_stored)
        return updates, ScaleByRmsState(nu=nu_stored)

    tx = GradientTransformation(init, update)
    if bias_correction:  # a per-step factor no fused kernel applies: no recipe
        return tx
    scalars = {"decay": decay, "one_minus_decay": 1 - decay, "eps": eps}
    return recipe.declare(tx, SCALE_BY_RMS, lambda s, u: scalars, eps_in_sqrt=eps_in_sqrt)


class ScaleByRStdDevState(NamedTuple):
    """State of :func:`scale_by_stddev`: running means of the gradients and their squares."""

    mu: Any
    nu: Any


ScaleByStddevState = ScaleByRStdDevState  # gradtx's earlier name; optax's is the class's


class ScaleByRStdDevWithCountState(NamedTuple):
    """State of :func:`scale_by_stddev` with ``bias_correction``: the step count and means."""

    count: jax.Array  # int32 scalar: updates applied so far
    mu: Any
    nu: Any


def scale_by_stddev(
    decay: float | jax.Array = 0.9,
    eps: float | jax.Array = 1e-8,
    initial_scale: float | jax.Array = 0.0,
    eps_in_sqrt: bool = True,
    bias_correction: bool = False,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Divide by a running standard deviation of the gradients (centered RMSProp).

    .. math::
        \\mu_t = \\rho \\mu_{t-1} + (1-\\rho) g_t, \\quad
        \\nu_t = \\rho \\nu_{t-1} + (1-\\rho) g_t^2, \\quad
        u_t = g_t / \\sqrt{\\hat\\nu_t - \\hat\\mu_t^2 + \\epsilon}
        \\;\\text{ or }\\; g_t / (\\sqrt{\\hat\\nu_t - \\hat\\mu_t^2} + \\epsilon)

    with :math:`\\hat\\mu_t, \\hat\\nu_t` the moments divided by :math:`1-\\rho^t` if
    ``bias_correction`` (then the state is :class:`ScaleByRStdDevWithCountState`,
    which counts :math:`t`) and the moments themselves otherwise, and
    :math:`\\hat\\nu_t - \\hat\\mu_t^2` clamped at 0: rounding can push it slightly
    below (always with :math:`\\rho = 0`), where optax and torch return NaN.

    For complex gradients the second moment is :math:`|g|^2 = g\\bar g`, real and kept in
    the leaf's real dtype, and the first moment is complex, as in optax.

    Args:
      decay: :math:`\\rho` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`.
      initial_scale: :math:`\\nu_0`.
      eps_in_sqrt: True puts eps inside the root (optax); False outside (torch).
      bias_correction: divide both moments by :math:`1-\\rho^t`, as Adam does.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype. Defaults to the params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_stddev()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # g / sqrt(0.1 * g**2 - (0.1 * g)**2)
      [ 3.3333 -3.3333]

    References:
      Graves, "Generating Sequences With Recurrent Neural Networks", 2013.

      optax: ``optax.scale_by_stddev``.
    """
    state_dtype = checks.check_state_dtype("scale_by_stddev", state_dtype)
    checks.check_hyperparams(
        "scale_by_stddev",
        decay=(decay, checks.DECAY),
        eps=(eps, checks.NONNEGATIVE),
        initial_scale=(initial_scale, checks.NONNEGATIVE),
    )

    def init(params):
        mu = tree.state_zeros_like(params, state_dtype)
        nu = tree.real_full_like(params, initial_scale, state_dtype)
        if bias_correction:
            return ScaleByRStdDevWithCountState(tree.zeros_count(), mu, nu)
        return ScaleByRStdDevState(mu, nu)

    def update(updates, state, params=None, **extra):
        checks.check_moments("scale_by_stddev", updates, state, "mu", "nu")
        count: Any = tree.safe_increment(state.count) if bias_correction else 0
        mu_stored, mu = tree.moment(
            state.mu, updates, state_dtype, lambda m: tree.update_moment(updates, m, decay, 1),
            count,
        )  # fmt: skip
        nu_stored, nu = tree.moment(
            state.nu, updates, state_dtype,
            lambda v: tree.update_moment_per_elem_norm(updates, v, decay, 2), count,
        )  # fmt: skip
        mu = _bias_corrected(mu, decay, count, bias_correction)
        nu = _bias_corrected(nu, decay, count, bias_correction)
        # Rounding can leave nu - mu^2 a hair below 0 (always, when decay = 0); the
        # variance is clamped there instead of turning into NaN under the root.
        updates = jax.tree.map(
            lambda g, m, n: _inverse_root(jnp.maximum(n - tree.abs_sq(m), 0), eps, eps_in_sqrt) * g,
            updates,
            mu,
            nu,
        )
        if bias_correction:
            return updates, ScaleByRStdDevWithCountState(count, mu_stored, nu_stored)
        return updates, ScaleByRStdDevState(mu_stored, nu_stored)

    tx = GradientTransformation(init, update)
    if bias_correction:  # a per-step factor no fused kernel applies: no recipe
        return tx
    scalars = {"decay": decay, "one_minus_decay": 1 - decay, "eps": eps}
    return recipe.declare(tx, SCALE_BY_STDDEV, lambda s, u: scalars, eps_in_sqrt=eps_in_sqrt)


class ScaleByRssState(NamedTuple):
    """State of :func:`scale_by_rss`: the sum of all squared gradients so far."""

    sum_of_squares: Any


def scale_by_rss(
    initial_accumulator_value: float | jax.Array = 0.1,
    eps: float | jax.Array = 1e-7,
    *,
    eps_in_sqrt: bool = True,
    normalize: bool = False,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Divide by the root of the sum of all squared gradients so far (Adagrad).

    .. math::
        s_t = s_{t-1} + g_t^2, \\quad a_t = 1 / \\sqrt{s_t + \\epsilon}
        \\;\\text{ or }\\; 1 / (\\sqrt{s_t} + \\epsilon), \\quad
        u_t = a_t g_t \\;\\; (\\text{or } a_t g_t / \\overline{a_t} \\text{ with normalize})

    with :math:`u_t = 0` where :math:`s_t = 0` (no 0/0), and
    :math:`\\overline{a_t}` the mean of the factors over each leaf.

    For complex gradients the second moment is :math:`|g|^2 = g\\bar g`, real and kept in
    the leaf's real dtype, and the first moment is complex, as in optax.

    Args:
      initial_accumulator_value: :math:`s_0 \\ge 0` (0.1 in optax, 0 in torch).
      eps: :math:`\\epsilon \\ge 0` (1e-7 in optax, 1e-10 in torch).
      eps_in_sqrt: True puts eps inside the root (optax); False outside (torch).
      normalize: divide each leaf's factors by their mean, so the average step
        follows the learning rate (CNTK's ``need_ave_multiplier``).
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype. Defaults to the params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_rss()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # g / sqrt(0.1 + g**2)
      [ 0.9535 -0.9877]

    References:
      Duchi, Hazan and Singer, "Adaptive Subgradient Methods for Online Learning and
        Stochastic Optimization", JMLR, 2011.

      optax: ``optax.scale_by_rss``.
    """
    state_dtype = checks.check_state_dtype("scale_by_rss", state_dtype)
    checks.check_hyperparams(
        "scale_by_rss",
        initial_accumulator_value=(initial_accumulator_value, checks.NONNEGATIVE),
        eps=(eps, checks.NONNEGATIVE),
    )

    def init(params):
        return ScaleByRssState(tree.real_full_like(params, initial_accumulator_value, state_dtype))

    def update(updates, state, params=None, **extra):
        checks.check_moments("scale_by_rss", updates, state, "sum_of_squares")
        sums_stored, sums = tree.moment(
            state.sum_of_squares, updates, state_dtype,
            lambda s: jax.tree.map(lambda g, s: tree.abs_sq(g) + s, updates, s),
        )  # fmt: skip

        def scaled(g, s):
            factor = _inverse_root(s, eps, eps_in_sqrt)
            u = jnp.where(s > 0, factor, 0.0) * g
            return u / jnp.mean(factor) if normalize and g.size else u

        return jax.tree.map(scaled, updates, sums), ScaleByRssState(sums_stored)

    tx = GradientTransformation(init, update)
    if normalize:  # the mean over each leaf is not a per-element rule
        return tx
    return recipe.declare(tx, SCALE_BY_RSS, lambda s, u: {"eps": eps}, eps_in_sqrt=eps_in_sqrt)


class ScaleByAdaDeltaState(NamedTuple):
    """State of :func:`scale_by_adadelta`: running means of the squared gradients and steps."""

    e_g: Any  # running mean of squared gradients
    e_x: Any  # running mean of squared steps


ScaleByAdadeltaState = ScaleByAdaDeltaState  # gradtx's earlier name; optax's is the class's


def scale_by_adadelta(
    rho: float | jax.Array = 0.9, eps: float | jax.Array = 1e-6, *, state_dtype: Any = None
) -> GradientTransformation:
    """Zeiler's AdaDelta: a step whose units match the parameters'.

    .. math::
        E[g^2]_t = \\rho E[g^2]_{t-1} + (1-\\rho) g_t^2, \\quad
        u_t = \\frac{\\sqrt{E[\\Delta^2]_{t-1} + \\epsilon}}{\\sqrt{E[g^2]_t + \\epsilon}}\\, g_t,
        \\quad E[\\Delta^2]_t = \\rho E[\\Delta^2]_{t-1} + (1-\\rho) u_t^2

    A complex leaf raises ``ValueError`` naming it: optax's AdaDelta has no complex rule either.

    Args:
      rho: :math:`\\rho` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype. Defaults to the params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_adadelta()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # about sqrt(1e-6 / (0.1 * g**2)) * g
      [ 0.0032 -0.0032]

    References:
      Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012.

      optax: ``optax.scale_by_adadelta``.
    """
    state_dtype = checks.check_state_dtype("scale_by_adadelta", state_dtype)
    checks.check_hyperparams(
        "scale_by_adadelta", rho=(rho, checks.DECAY), eps=(eps, checks.NONNEGATIVE)
    )

    def init(params):
        tree.reject_complex("scale_by_adadelta", params, " (optax's adadelta has none either)")
        return ScaleByAdaDeltaState(
            tree.state_zeros_like(params, state_dtype), tree.state_zeros_like(params, state_dtype)
        )

    def update(updates, state, params=None, **extra):
        tree.reject_complex("scale_by_adadelta", updates, " (optax's adadelta has none either)")
        checks.check_moments("scale_by_adadelta", updates, state, "e_g", "e_x")
        e_g_stored, e_g = tree.moment(
            state.e_g, updates, state_dtype, lambda m: tree.update_moment(updates, m, rho, 2)
        )
        updates = jax.tree.map(
            lambda g, eg, ex: (jnp.sqrt(ex + eps) / jnp.sqrt(eg + eps)) * g,
            updates,
            e_g,
            tree.widen(state.e_x, updates),
        )
        e_x, _ = tree.moment(
            state.e_x, updates, state_dtype, lambda m: tree.update_moment(updates, m, rho, 2)
        )
        return updates, ScaleByAdaDeltaState(e_g_stored, e_x)

    return GradientTransformation(init, update)


class ScaleByRmsSignStepsState(NamedTuple):
    """State of :func:`scale_by_rms_sign_steps`: count, mean square, last signs, step sizes."""

    count: jax.Array  # int32: the first update seeds the mean square with g**2
    mean_square: Any
    signs: Any  # sign of the previous gradient
    steps: Any  # per-element step sizes


def scale_by_rms_sign_steps(
    gamma: float | jax.Array,
    inc: float | jax.Array,
    dec: float | jax.Array,
    max_step: float | jax.Array,
    min_step: float | jax.Array,
    normalize: bool = True,
    floor: float = 1e-6,
) -> GradientTransformation:
    """RMS scaling with per-element step sizes that grow while the gradient keeps its sign.

    CNTK's RMSProp (not Hinton's): with :math:`\\nu_0 = g_1^2` and :math:`s_0 = 0.02`,

    .. math::
        \\nu_t = \\gamma \\nu_{t-1} + (1-\\gamma) g_t^2, \\quad
        s_t = \\begin{cases} \\min(s_{t-1}\\, inc, s_{max}) & \\operatorname{sign}(g_t)
        \\operatorname{sign}(g_{t-1}) > 0 \\\\ \\max(s_{t-1}\\, dec, s_{min}) & \\text{otherwise}
        \\end{cases}, \\quad
        a_t = s_t / \\sqrt{\\nu_t + 10^{-6}}, \\quad u_t = a_t g_t

    divided by the mean of :math:`a_t` over the leaf with ``normalize``.

    A complex leaf raises ``ValueError`` naming it: CNTK's sign rule is defined for real numbers.

    Args:
      gamma: :math:`\\gamma` in (0, 1).
      inc: growth factor, :math:`\\ge 1`.
      dec: shrink factor, in (0, 1].
      max_step: :math:`s_{max} > 0`; ``inf`` for no upper clamp.
      min_step: :math:`s_{min}`, at most ``max_step``.
      normalize: divide by the mean factor (CNTK's ``need_ave_multiplier``).
      floor: the constant inside the root.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_rms_sign_steps(0.9, 1.2, 0.5, 1.0, 0.001, normalize=False)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))  # no sign yet: 0.02 * dec
      >>> updates, state = tx.update(grads, state)  # the signs agree: 0.01 * inc
      >>> print(np.asarray(state.steps["w"]).round(4))
      [0.012 0.012]

    References:
      CNTK, ``cntk.learners.rmsprop`` (Learner.cpp, ``LearnerRMSProp``, which calls
        ``Matrix::RmsProp``).

      Riedmiller and Braun, "A direct adaptive method for faster backpropagation learning:
        the RPROP algorithm", 1993 (step sizes that grow while the sign holds).
    """
    checks.check_hyperparams(
        "scale_by_rms_sign_steps",
        gamma=(gamma, "(0, 1)"),
        inc=(inc, "[1, inf)"),
        dec=(dec, "(0, 1]"),
        max_step=(max_step, "(0, inf]"),  # inf: no upper clamp, as in CNTK
        min_step=(min_step, checks.NONNEGATIVE),
    )
    checks.check_at_most("scale_by_rms_sign_steps", "min_step", min_step, "max_step", max_step)

    def init(params):
        tree.reject_complex("scale_by_rms_sign_steps", params, " (a sign rule)")
        return ScaleByRmsSignStepsState(
            tree.zeros_count(),
            tree.zeros_like(params),
            tree.zeros_like(params),
            tree.full_like(params, 0.02),
        )

    def update(updates, state, params=None, **extra):
        tree.reject_complex("scale_by_rms_sign_steps", updates, " (a sign rule)")
        checks.check_moments(
            "scale_by_rms_sign_steps", updates, state, "mean_square", "signs", "steps"
        )
        first = state.count == 0
        mean_square = jax.tree.map(
            lambda g, ms: gamma * jnp.where(first, g * g, ms) + (1 - gamma) * (g * g),
            updates,
            state.mean_square,
        )
        signs = jax.tree.map(jnp.sign, updates)
        steps = jax.tree.map(
            lambda sign, prev, step: jnp.where(
                sign * prev > 0,
                jnp.minimum(step * inc, max_step),
                jnp.maximum(step * dec, min_step),
            ),
            signs,
            state.signs,
            state.steps,
        )

        def scaled(g, ms, step):
            factor = step / jnp.sqrt(ms + floor)
            return g * factor / jnp.mean(factor) if normalize and g.size else g * factor

        new_updates = jax.tree.map(scaled, updates, mean_square, steps)
        return new_updates, ScaleByRmsSignStepsState(
            tree.safe_increment(state.count), mean_square, signs, steps
        )

    return GradientTransformation(init, update)
