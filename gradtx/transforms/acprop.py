"""ACProp: the gradient divided by the belief's spread as it was before this step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation
from gradtx.transforms.adam import first_moment_rule
from gradtx.transforms.belief import ScaleByBeliefState, belief_init, check_belief


def scale_by_acprop(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-16,
    eps_root: float | jax.Array = 1e-16,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Zhuang et al.'s ACProp: AdaBelief's centred second moment, used one step late.

    With :math:`t` the 1-based number of this update:

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        s_t = \\beta_2 s_{t-1} + (1-\\beta_2) (g_t - m_{t-1})^2 + \\epsilon_{root},

    .. math::
        u_t = \\frac{g_t}{\\sqrt{s_{t-1} / (1-\\beta_2^{t-1})} + \\epsilon}
        \\quad (t \\ge 2), \\qquad u_1 = \\frac{g_1}{1 + \\epsilon}.

    The denominator does not contain :math:`g_t` (the "asynchronous" update), and the
    numerator is the gradient itself, as in optax. The prediction error is taken against
    the mean before this step, :math:`m_{t-1}`, as optax's code does (its docstring writes
    :math:`m_t`).

    For complex gradients the square is :math:`|g - m|^2`, real and kept in the leaf's
    real dtype, as in optax.

    Args:
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, added to :math:`s_t` at every step.
      state_dtype: dtype of both stored moments (e.g. ``jnp.bfloat16``); arithmetic runs
        in the gradients' dtype, bfloat16 rounds stochastically. Defaults to the params'.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx.transforms.acprop import scale_by_acprop
      >>> tx = scale_by_acprop()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(updates["w"])  # no spread measured yet: the gradient itself
      [ 1. -2.]
      >>> updates, state = tx.update(grads, state)
      >>> print(np.asarray(updates["w"]).round(4))  # g / |g - m_0|: sign(g)
      [ 1. -1.]

    References:
      Zhuang, Ding, Tang, Dvornek, Tatikonda and Duncan, "Momentum Centering and
        Asynchronous Update for Adaptive Gradient Methods", NeurIPS 2021
        (arXiv:2110.05454).

      optax: ``optax.contrib.scale_by_acprop``.
    """
    who = "scale_by_acprop"
    state_dtype = check_belief(who, b1, b2, eps, eps_root, state_dtype)
    init = belief_init(state_dtype)

    def update(updates, state, params=None, **extra):
        checks.check_moments(who, updates, state, "mu", "nu")
        count = tree.safe_increment(state.count)
        previous_mu, previous_nu = tree.widen(state.mu, updates), tree.widen(state.nu, updates)
        mu_stored, _ = tree.moment(
            state.mu, updates, state_dtype, first_moment_rule(updates, b1), count
        )
        error = jax.tree.map(lambda g, m: g - m, updates, previous_mu)
        nu_stored, _ = tree.moment(
            state.nu, updates, state_dtype,
            lambda s: jax.tree.map(
                lambda v: v + eps_root, tree.update_moment_per_elem_norm(error, s, b2, 2)
            ),
            count,
        )  # fmt: skip
        first = state.count == 0
        # The first step has no spread yet: its denominator is 1 (1 + eps).
        nu_hat = tree.bias_correction(previous_nu, b2, jnp.where(first, count, state.count))
        nu_hat = jax.tree.map(lambda v: jnp.where(first, jnp.ones_like(v), v), nu_hat)
        updates = jax.tree.map(lambda g, v: g / (jnp.sqrt(v) + eps), updates, nu_hat)
        return updates, ScaleByBeliefState(count, mu_stored, nu_stored)

    return GradientTransformation(init, update)
