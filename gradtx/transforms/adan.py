"""Adan: adaptive Nesterov momentum from averages of the gradient and of its changes."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, recipe, tree
from gradtx.core import GradientTransformation

# The kernel's first-step switch: no difference before there is a previous gradient.
SCALE_BY_ADAN = recipe.rule(
    "scale_by_adan",
    scalars=("b1", "one_minus_b1", "b2", "one_minus_b2", "b3", "one_minus_b3",
             "inv_bias_correction1", "inv_bias_correction2", "inv_bias_correction3",
             "eps", "eps_root", "first"),
    moments=("m", "v", "n", "g"),
    kernel="gradtx_adan",
)  # fmt: skip


class ScaleByAdanState(NamedTuple):
    """State of :func:`scale_by_adan`: three averages, the last gradient and the step count."""

    m: Any  # running mean of the gradients
    v: Any  # running mean of the gradient differences g_t - g_{t-1}
    n: Any  # running mean of |g_t + (1 - b2)(g_t - g_{t-1})|^2
    g: Any  # the previous gradient
    t: jax.Array  # int32 scalar: updates applied so far (optax's name)


def scale_by_adan(
    b1: float | jax.Array = 0.98,
    b2: float | jax.Array = 0.92,
    b3: float | jax.Array = 0.99,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Xie et al.'s Adan: Nesterov momentum estimated from gradient differences.

    With :math:`t` the 1-based number of this update and :math:`d_t = g_t - g_{t-1}`
    (:math:`d_1 = 0`):

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) d_t, \\quad
        n_t = \\beta_3 n_{t-1} + (1-\\beta_3) |g_t + (1-\\beta_2) d_t|^2,

    .. math::
        u_t = \\frac{\\hat m_t + (1-\\beta_2) \\hat v_t}{\\sqrt{\\hat n_t + \\epsilon_{root}}
        + \\epsilon}

    with each hatted average divided by :math:`1-\\beta^t` for its own decay, as optax
    does (Algorithm 1 of the paper's v4; the paper's :math:`\\beta`'s are one minus these).

    For complex gradients :math:`n` is real, kept in the leaf's real dtype; the other
    averages and the stored gradient are complex, as in optax.

    Args:
      b1: :math:`\\beta_1` in [0, 1), the decay of the gradients' average.
      b2: :math:`\\beta_2` in [0, 1), the decay of the differences' average.
      b3: :math:`\\beta_3` in [0, 1), the decay of the squared term's average.
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      state_dtype: dtype of the stored averages and previous gradient (e.g.
        ``jnp.bfloat16``); arithmetic runs in the gradients' dtype, bfloat16 rounds
        stochastically. Defaults to the params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_adan()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # d_1 = 0: the first step is sign(g)
      [ 1. -1.]

    References:
      Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
        Models", 2022 (arXiv:2208.06677).

      optax: ``optax.scale_by_adan``.
    """
    who = "scale_by_adan"
    checks.check_hyperparams(
        who,
        b1=(b1, checks.DECAY),
        b2=(b2, checks.DECAY),
        b3=(b3, checks.DECAY),
        eps=(eps, checks.NONNEGATIVE),
        eps_root=(eps_root, checks.NONNEGATIVE),
    )
    state_dtype = checks.check_state_dtype(who, state_dtype)

    def init(params):
        return ScaleByAdanState(
            tree.state_zeros_like(params, state_dtype),
            tree.state_zeros_like(params, state_dtype),
            tree.real_zeros_like(params, state_dtype),
            tree.state_zeros_like(params, state_dtype),
            tree.zeros_count(),
        )

    def update(updates, state, params=None, **extra):
        checks.check_moments(who, updates, state, "m", "v", "n", "g")
        t = tree.safe_increment(state.t)
        # No difference before there is a previous gradient.
        diff = jax.tree.map(
            lambda g, prev: jnp.where(state.t == 0, jnp.zeros_like(g), g - prev),
            updates,
            tree.widen(state.g, updates),
        )
        m_stored, m = tree.moment(
            state.m, updates, state_dtype, lambda m: tree.update_moment(updates, m, b1, 1), t
        )
        v_stored, v = tree.moment(
            state.v, updates, state_dtype, lambda v: tree.update_moment(diff, v, b2, 1), t
        )
        sq = jax.tree.map(lambda g, d: g + (1 - b2) * d, updates, diff)
        n_stored, n = tree.moment(
            state.n, updates, state_dtype,
            lambda n: tree.update_moment_per_elem_norm(sq, n, b3, 2), t,
        )  # fmt: skip
        g_stored, _ = tree.store(updates, updates, state_dtype, t)
        m_hat = tree.bias_correction(m, b1, t)
        v_hat = tree.bias_correction(v, b2, t)
        n_hat = tree.bias_correction(n, b3, t)
        updates = jax.tree.map(
            lambda m, v, n: (m + (1 - b2) * v) / (jnp.sqrt(n + eps_root) + eps),
            m_hat,
            v_hat,
            n_hat,
        )
        return updates, ScaleByAdanState(m_stored, v_stored, n_stored, g_stored, t)

    def scalars(state, updates):
        t = tree.safe_increment(state.t)
        corrections = tree.bias_corrections((b1, b2, b3), t)
        inverses = {f"inv_bias_correction{k}": 1 / c for k, c in enumerate(corrections, 1)}
        return dict(b1=b1, one_minus_b1=1 - b1, b2=b2, one_minus_b2=1 - b2, b3=b3,
                    one_minus_b3=1 - b3, eps=eps, eps_root=eps_root, first=state.t == 0,
                    **inverses)  # fmt: skip

    tx = GradientTransformation(init, update)
    return recipe.declare(
        tx, SCALE_BY_ADAN, scalars, seed=lambda state: tree.safe_increment(state.t)
    )
