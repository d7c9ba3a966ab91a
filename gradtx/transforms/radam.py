"""Rectified Adam: momentum alone until the second moment has seen enough steps to trust."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks, recipe, tree
from gradtx.core import GradientTransformation
from gradtx.transforms.adam import (
    SCALE_BY_ADAM,
    ScaleByAdamState,
    corrected_first_moment,
    first_moment_rule,
    init_adam_moments,
    moment_scalars,
    next_count,
)

# Adam's, plus this step's rectifier and whether it applies (1 or 0: rho_t >= threshold).
SCALE_BY_RADAM = recipe.rule(
    "scale_by_radam",
    scalars=(*SCALE_BY_ADAM.scalars, "rectifier", "rectified"),
    options=SCALE_BY_ADAM.options,
    moments=("mu", "nu"),
    kernel="gradtx_radam",
)


def scale_by_radam(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    threshold: float | jax.Array = 5.0,
    *,
    nesterov: bool = False,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Liu et al.'s RAdam: Adam with the adaptive step rectified by its variance.

    With :math:`t` the 1-based number of this update, :math:`\\hat m_t, \\hat v_t` Adam's
    bias-corrected moments (see :func:`gradtx.scale_by_adam`), and the length of the
    approximated simple moving average

    .. math::
        \\rho_\\infty = \\frac{2}{1-\\beta_2} - 1, \\qquad
        \\rho_t = \\rho_\\infty - \\frac{2 t \\beta_2^t}{1-\\beta_2^t},

    .. math::
        u_t = \\begin{cases}
        r_t\\, \\hat m_t / (\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon) &
        \\rho_t \\ge \\text{threshold} \\\\
        \\hat m_t & \\text{otherwise} \\end{cases}, \\quad
        r_t = \\sqrt{\\frac{(\\rho_t - 4)(\\rho_t - 2)\\rho_\\infty}
        {(\\rho_\\infty - 4)(\\rho_\\infty - 2)\\rho_t}}.

    :math:`\\rho_t` grows from 1 by about one per step, so with the default threshold
    the first five steps are plain momentum. It is computed in float32 as optax does
    (an ulp of :math:`\\beta_2^t` moves :math:`\\rho_1` by a few hundredths). With
    ``nesterov`` the first moment looks one step ahead, as in NAdam.

    For complex gradients the second moment is :math:`|g|^2 = g\\bar g`, real and kept in
    the leaf's real dtype, and the first moment is complex, as in optax.

    Args:
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      threshold: the :math:`\\rho_t` from which the adaptive step is taken, in [0, inf]
        (optax and torch: 5; the paper: 4); below 4 :math:`r_t` is not real.
      nesterov: use NAdam's look-ahead first moment.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype, bfloat16 rounds stochastically. Defaults to the
        params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_radam()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # rho_1 < 5: the momentum m_hat = g
      [ 1. -2.]

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.

      optax: ``optax.scale_by_radam``.
    """
    who = "scale_by_radam"
    checks.check_hyperparams(
        who,
        b1=(b1, checks.DECAY),
        b2=(b2, checks.DECAY),
        eps=(eps, checks.NONNEGATIVE),
        eps_root=(eps_root, checks.NONNEGATIVE),
        threshold=(threshold, "[0, inf]"),
    )
    state_dtype = checks.check_state_dtype(who, state_dtype)
    rho_inf = 2.0 / (1.0 - b2) - 1.0

    def rectification(count):
        # optax's float32 expressions, operation for operation: rho_t is 1999 - 1998 at
        # t = 1, so any other rounding of b2**t moves it (and the rectified step) visibly.
        b2_t = b2**count
        rho = rho_inf - 2 * count * b2_t / (1 - b2_t)
        rectifier = jnp.sqrt(
            (rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)
        )
        return rho, rectifier

    def update(updates, state, params=None, **extra):
        checks.check_moments(who, updates, state, "mu", "nu")
        count = tree.safe_increment(state.count)
        mu_stored, mu = tree.moment(
            state.mu, updates, state_dtype, first_moment_rule(updates, b1), count
        )
        nu_stored, nu = tree.moment(
            state.nu, updates, state_dtype,
            lambda v: tree.update_moment_per_elem_norm(updates, v, b2, 2), count,
        )  # fmt: skip
        rho, rectifier = rectification(count)
        mu_hat = corrected_first_moment(mu, updates, b1, count, nesterov)
        nu_hat = tree.bias_correction(nu, b2, count)
        # Below the threshold rho_t < 4 can make the rectifier NaN; the select drops it.
        updates = jax.tree.map(
            lambda m, v: jnp.where(
                rho >= threshold,
                rectifier.astype(m.dtype) * m / (jnp.sqrt(v + eps_root) + eps),
                m,
            ),
            mu_hat,
            nu_hat,
        )
        return updates, ScaleByAdamState(count, mu_stored, nu_stored)

    def scalars(state, updates):
        rho, rectifier = rectification(tree.safe_increment(state.count))
        rectified = jnp.where(rho >= threshold, 1.0, 0.0)
        # Where the step is not rectified the rectifier may be NaN, which the kernel never reads.
        return moment_scalars(
            SCALE_BY_RADAM, state, b1, b2, eps=eps, eps_root=eps_root,
            rectifier=rectifier, rectified=rectified,
        )  # fmt: skip

    tx = GradientTransformation(lambda params: init_adam_moments(params, state_dtype), update)
    return recipe.declare(tx, SCALE_BY_RADAM, scalars, seed=next_count, nesterov=nesterov)
