"""AdEMAMix: Adam whose numerator mixes a fast and a slow average of the gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation, ScalarOrSchedule
from gradtx.transforms.adam import first_moment_rule


class ScaleByAdemamixState(NamedTuple):
    """State of :func:`scale_by_ademamix`: two step counts, two averages and the second moment."""

    count: jax.Array  # int32 scalar: updates applied so far (the fast average and nu)
    count_m2: jax.Array  # int32 scalar: the same count, at which b3 and alpha are evaluated
    m1: Any  # fast average of the gradients
    m2: Any  # slow average of the gradients
    nu: Any  # average of |g|^2


class ScaleBySimplifiedAdEMAMixState(NamedTuple):
    """State of :func:`scale_by_simplified_ademamix`: the step count, the sum and the moment."""

    t: jax.Array  # int32 scalar: updates applied so far
    m: Any  # discounted sum of the gradients, m_t = b1 m_{t-1} + g_t
    n: Any  # average of |g|^2


def scale_by_ademamix(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    b3: ScalarOrSchedule = 0.9999,
    alpha: ScalarOrSchedule = 6.0,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    mu_dtype: Any = None,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Pagliardini et al.'s AdEMAMix: Adam's step plus :math:`\\alpha` times a slow average.

    With :math:`t` the 1-based number of this update and :math:`\\beta_3`, :math:`\\alpha`
    evaluated at :math:`t - 1` where they are schedules:

    .. math::
        m^{(1)}_t = \\beta_1 m^{(1)}_{t-1} + (1-\\beta_1) g_t, \\quad
        m^{(2)}_t = \\beta_3 m^{(2)}_{t-1} + (1-\\beta_3) g_t, \\quad
        \\nu_t = \\beta_2 \\nu_{t-1} + (1-\\beta_2) g_t^2,

    .. math::
        u_t = \\frac{m^{(1)}_t / (1-\\beta_1^t) + \\alpha\\, m^{(2)}_t}
        {\\sqrt{\\nu_t / (1-\\beta_2^t) + \\epsilon_{root}} + \\epsilon}.

    The slow average is not bias-corrected: it fills slowly, which is why the paper warms
    up :math:`\\alpha` and :math:`\\beta_3` (give them as schedules).

    For complex gradients :math:`g^2` is :math:`|g|^2 = g\\bar g`; :math:`\\nu` is real and
    kept in the leaf's real dtype, the averages are complex, as in optax.

    Args:
      b1: :math:`\\beta_1` in [0, 1), the fast average's decay.
      b2: :math:`\\beta_2` in [0, 1), the second moment's decay.
      b3: :math:`\\beta_3` in [0, 1) or a schedule, the slow average's decay.
      alpha: :math:`\\alpha \\ge 0` or a schedule, the slow average's weight.
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      mu_dtype: dtype of the two stored averages, rounded to nearest (None: the params').
        optax makes all three moments in it and stores them back in the gradients' dtype
        (so its state changes dtype after the first step); here :math:`m^{(1)}` and
        :math:`m^{(2)}` stay in it, :math:`\\nu` stays in the params'. Not with
        ``state_dtype``.
      state_dtype: dtype of the three stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype, bfloat16 rounds stochastically. Defaults to the params'.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx.transforms.ademamix import scale_by_ademamix
      >>> tx = scale_by_ademamix(alpha=5.0)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # (1 + 5 * 1e-4) * sign(g)
      [ 1.0005 -1.0005]

    References:
      Pagliardini, Ablin and Grangier, "The AdEMAMix Optimizer: Better, Faster, Older",
        ICLR 2025 (arXiv:2409.03137).

      optax: ``optax.contrib.scale_by_ademamix``.
    """
    who = "scale_by_ademamix"
    checks.check_hyperparams(
        who,
        b1=(b1, checks.DECAY),
        b2=(b2, checks.DECAY),
        b3=(b3, checks.DECAY),
        alpha=(alpha, checks.NONNEGATIVE),
        eps=(eps, checks.NONNEGATIVE),
        eps_root=(eps_root, checks.NONNEGATIVE),
    )
    state_dtype = checks.check_state_dtype(who, state_dtype)
    mu_dtype = checks.check_optax_dtype(who, "mu_dtype", mu_dtype, state_dtype)
    averages_dtype = state_dtype if mu_dtype is None else mu_dtype
    averages_name = "state_dtype" if mu_dtype is None else "mu_dtype"  # for a complex leaf's error

    def init(params):
        return ScaleByAdemamixState(
            tree.zeros_count(),
            tree.zeros_count(),
            tree.state_zeros_like(params, averages_dtype, averages_name),
            tree.state_zeros_like(params, averages_dtype, averages_name),
            tree.real_zeros_like(params, state_dtype),
        )

    def average(stored, updates, decay, count):
        rule = first_moment_rule(updates, decay)
        if mu_dtype is not None:
            return tree.plain_moment(stored, mu_dtype, rule)
        return tree.moment(stored, updates, state_dtype, rule, count)

    def update(updates, state, params=None, **extra):
        checks.check_moments(who, updates, state, "m1", "m2", "nu")
        count = tree.safe_increment(state.count)
        slow_decay, mix = tree.resolve(b3, state.count_m2), tree.resolve(alpha, state.count_m2)
        m1_stored, m1 = average(state.m1, updates, b1, count)
        m2_stored, m2 = average(state.m2, updates, slow_decay, count)
        nu_stored, nu = tree.moment(
            state.nu, updates, state_dtype,
            lambda v: tree.update_moment_per_elem_norm(updates, v, b2, 2), count,
        )  # fmt: skip
        updates = jax.tree.map(
            lambda fast, slow, v: (fast + mix * slow) / (jnp.sqrt(v + eps_root) + eps),
            tree.bias_correction(m1, b1, count),
            m2,
            tree.bias_correction(nu, b2, count),
        )
        new_state = ScaleByAdemamixState(
            count, tree.safe_increment(state.count_m2), m1_stored, m2_stored, nu_stored
        )
        return updates, new_state

    return GradientTransformation(init, update)


def scale_by_simplified_ademamix(
    b1: float | jax.Array = 0.99,
    b2: float | jax.Array = 0.95,
    alpha: ScalarOrSchedule = 0.0,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Morwani et al.'s simplified AdEMAMix: one undamped momentum plus :math:`\\alpha g_t`.

    With :math:`t` the 1-based number of this update and :math:`\\alpha` evaluated at
    :math:`t - 1` where it is a schedule:

    .. math::
        m_t = \\beta_1 m_{t-1} + g_t, \\quad
        n_t = \\beta_2 n_{t-1} + (1-\\beta_2) g_t^2, \\quad
        u_t = \\frac{m_t + \\alpha g_t}{\\sqrt{n_t / (1-\\beta_2^t) + \\epsilon_{root}}
        + \\epsilon}.

    :math:`m_t` is a sum (no :math:`1-\\beta_1` factor), so its scale grows to
    :math:`1/(1-\\beta_1)`; :math:`\\alpha = 0` is Adam with the learning rate times
    :math:`1/(1-\\beta_1)` and no first-moment correction.

    For complex gradients :math:`g^2` is :math:`|g|^2 = g\\bar g`, real and kept in the
    leaf's real dtype. optax squares the complex gradient (:math:`g \\cdot g`), which
    turns the update's direction; here the second moment is the modulus's, as in every
    other Adam-like block.

    Args:
      b1: :math:`\\beta_1` in [0, 1), the momentum's discount.
      b2: :math:`\\beta_2` in [0, 1), the second moment's decay.
      alpha: :math:`\\alpha \\ge 0` or a schedule, the current gradient's extra weight.
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      state_dtype: dtype of both stored moments (e.g. ``jnp.bfloat16``); arithmetic runs
        in the gradients' dtype, bfloat16 rounds stochastically. Defaults to the params'.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx.transforms.ademamix import scale_by_simplified_ademamix
      >>> tx = scale_by_simplified_ademamix(alpha=1.0)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # (g + g) / |g|
      [ 2. -2.]

    References:
      Morwani, Vyas, Zhang and Kakade, "Connections between Schedule-Free Optimizers,
        AdEMAMix, and Accelerated SGD Variants", 2025 (arXiv:2502.02431).

      optax: ``optax.contrib.scale_by_simplified_ademamix``.
    """
    who = "scale_by_simplified_ademamix"
    checks.check_hyperparams(
        who,
        b1=(b1, checks.DECAY),
        b2=(b2, checks.DECAY),
        alpha=(alpha, checks.NONNEGATIVE),
        eps=(eps, checks.NONNEGATIVE),
        eps_root=(eps_root, checks.NONNEGATIVE),
    )
    state_dtype = checks.check_state_dtype(who, state_dtype)

    def init(params):
        return ScaleBySimplifiedAdEMAMixState(
            tree.zeros_count(),
            tree.state_zeros_like(params, state_dtype),
            tree.real_zeros_like(params, state_dtype),
        )

    def update(updates, state, params=None, **extra):
        checks.check_moments(who, updates, state, "m", "n")
        t = tree.safe_increment(state.t)
        mix = tree.resolve(alpha, state.t)
        m_stored, m = tree.moment(
            state.m, updates, state_dtype,
            lambda m: jax.tree.map(lambda g, m: g + b1 * m, updates, m), t,
        )  # fmt: skip
        n_stored, n = tree.moment(
            state.n, updates, state_dtype,
            lambda n: tree.update_moment_per_elem_norm(updates, n, b2, 2), t,
        )  # fmt: skip
        updates = jax.tree.map(
            lambda m, g, n: (m + mix * g) / (jnp.sqrt(n + eps_root) + eps),
            m,
            updates,
            tree.bias_correction(n, b2, t),
        )
        return updates, ScaleBySimplifiedAdEMAMixState(t, m_stored, n_stored)

    return GradientTransformation(init, update)
