"""Yogi: Adam whose second moment moves additively, by at most (1 - b2) g^2 per step."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks, recipe, tree
from gradtx.core import GradientTransformation
from gradtx.transforms.adam import ScaleByAdamState, moment_scalars, next_count

# b2 enters only as 1 - b2.
SCALE_BY_YOGI = recipe.rule(
    "scale_by_yogi",
    scalars=("b1", "one_minus_b1", "one_minus_b2", "inv_bias_correction1",
             "inv_bias_correction2", "eps", "eps_root"),
    moments=("mu", "nu"),
    kernel="gradtx_yogi",
)  # fmt: skip


def scale_by_yogi(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-3,
    eps_root: float | jax.Array = 0.0,
    initial_accumulator_value: float | jax.Array = 1e-6,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Zaheer et al.'s Yogi: Adam with a sign-controlled second moment.

    With :math:`t` the 1-based number of this update and :math:`m_0 = v_0` the initial
    accumulator value (both moments start there, as in optax):

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        v_t = v_{t-1} - (1-\\beta_2)\\, \\operatorname{sign}(v_{t-1} - g_t^2)\\, g_t^2,

    .. math::
        u_t = \\frac{m_t / (1-\\beta_1^t)}{\\sqrt{v_t / (1-\\beta_2^t) + \\epsilon_{root}}
        + \\epsilon}.

    Adam's :math:`v_t - v_{t-1} = (1-\\beta_2)(g_t^2 - v_{t-1})` can collapse the second
    moment after one large gradient; Yogi's step is at most :math:`(1-\\beta_2) g_t^2`.

    For complex gradients :math:`g^2` is :math:`|g|^2 = g\\bar g` and the second moment is
    real, kept in the leaf's real dtype; the first moment is complex, as in optax.

    Args:
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root (1e-3, as in the paper).
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      initial_accumulator_value: :math:`m_0 = v_0 \\ge 0`.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype, bfloat16 rounds stochastically. Defaults to the
        params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_yogi()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(state.nu["w"]).round(4))  # 1e-6 + 0.001 * g**2
      [0.001 0.004]

    References:
      Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018.

      optax: ``optax.scale_by_yogi``.
    """
    who = "scale_by_yogi"
    checks.check_hyperparams(
        who,
        b1=(b1, checks.DECAY),
        b2=(b2, checks.DECAY),
        eps=(eps, checks.NONNEGATIVE),
        eps_root=(eps_root, checks.NONNEGATIVE),
        initial_accumulator_value=(initial_accumulator_value, checks.NONNEGATIVE),
    )
    state_dtype = checks.check_state_dtype(who, state_dtype)

    def init(params):
        return ScaleByAdamState(
            tree.zeros_count(),
            tree.state_full_like(params, initial_accumulator_value, state_dtype),
            tree.real_full_like(params, initial_accumulator_value, state_dtype),
        )

    def update(updates, state, params=None, **extra):
        checks.check_moments(who, updates, state, "mu", "nu")
        count = tree.safe_increment(state.count)
        mu_stored, mu = tree.moment(
            state.mu, updates, state_dtype, lambda m: tree.update_moment(updates, m, b1, 1), count
        )
        nu_stored, nu = tree.moment(
            state.nu, updates, state_dtype,
            lambda n: jax.tree.map(  # the sign of v - g^2 picks the direction, g^2 the size
                lambda g, v: v - (1 - b2) * jnp.sign(v - tree.abs_sq(g)) * tree.abs_sq(g),
                updates, n,
            ),
            count,
        )  # fmt: skip
        mu_hat = tree.bias_correction(mu, b1, count)
        nu_hat = tree.bias_correction(nu, b2, count)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), mu_hat, nu_hat)
        return updates, ScaleByAdamState(count, mu_stored, nu_stored)

    def scalars(state, updates):
        return moment_scalars(SCALE_BY_YOGI, state, b1, b2, eps=eps, eps_root=eps_root)

    tx = GradientTransformation(init, update)
    return recipe.declare(tx, SCALE_BY_YOGI, scalars, seed=next_count)
