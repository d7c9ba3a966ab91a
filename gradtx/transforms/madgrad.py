"""MADGRAD: momentumised dual averaging with a cube-root adaptive scale."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation, ScalarOrSchedule


class MadgradState(NamedTuple):
    """State of :func:`scale_by_madgrad`: the step count, two weighted sums and the start."""

    count: jax.Array  # int32 scalar: updates applied so far
    grad_sum_sq: Any  # sum of lambda_k |g_k|^2
    s: Any  # sum of lambda_k g_k
    x0: Any  # the params at the first update


def scale_by_madgrad(
    learning_rate: ScalarOrSchedule,
    momentum: float | jax.Array = 0.9,
    eps: float | jax.Array = 1e-6,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Defazio and Jelassi's MADGRAD step: the update is :math:`x_{k+1} - x_k`.

    With :math:`k` the number of updates already applied (0 for the first), :math:`\\eta_k`
    the learning rate at :math:`k` and :math:`x_0` the params at the first update:

    .. math::
        \\lambda_k = (\\eta_k + \\epsilon) \\sqrt{k + 1}, \\quad
        s_{k+1} = s_k + \\lambda_k g_k, \\quad
        G_{k+1} = G_k + \\lambda_k g_k^2,

    .. math::
        z_{k+1} = x_0 - \\frac{s_{k+1}}{G_{k+1}^{1/3} + \\epsilon}, \\quad
        x_{k+1} = \\beta x_k + (1 - \\beta) z_{k+1}, \\quad u_k = x_{k+1} - x_k.

    The learning rate is inside the block (it weights the sums), so the update already
    points downhill: chain no ``scale_by_learning_rate`` after it. The :math:`+\\epsilon`
    on the learning rate is the authors' PyTorch code's (and optax's).

    For complex gradients :math:`g^2` is :math:`|g|^2 = g\\bar g`, so :math:`G` is real and
    kept in the leaf's real dtype; :math:`s` and :math:`x_0` are complex. optax squares
    the complex gradient and then fails in ``jnp.cbrt``.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      momentum: :math:`\\beta` in [0, 1), the weight of the current point.
      eps: :math:`\\epsilon \\ge 0`, added to the cube root and to the learning rate.
      state_dtype: dtype of the stored sums :math:`s` and :math:`G` (e.g.
        ``jnp.bfloat16``); arithmetic runs in the gradients' dtype, bfloat16 rounds
        stochastically. :math:`x_0` always keeps the params' dtype. Defaults to the params'.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx.transforms.madgrad import scale_by_madgrad
      >>> tx = scale_by_madgrad(1.0, momentum=0.0, eps=0.0)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> grads = {"w": jnp.array([8.0, 1.0])}
      >>> updates, state = tx.update(grads, tx.init(params), params)
      >>> print(updates["w"])  # -s / G**(1/3) = -g / (g**2)**(1/3) = -g**(1/3)
      [-2. -1.]

    References:
      Defazio and Jelassi, "Adaptivity without Compromise: A Momentumized, Adaptive, Dual
        Averaged Gradient Method for Stochastic Optimization", JMLR 2022 (arXiv:2101.11075).

      optax: ``optax.contrib.scale_by_madgrad``.
    """
    who = "scale_by_madgrad"
    checks.check_hyperparams(
        who,
        learning_rate=(learning_rate, checks.NONNEGATIVE),
        momentum=(momentum, checks.DECAY),
        eps=(eps, checks.NONNEGATIVE),
    )
    state_dtype = checks.check_state_dtype(who, state_dtype)
    reported, _ = checks.reported_name(who, "params")  # the learner's name, known while built

    def init(params):
        return MadgradState(
            tree.zeros_count(),
            tree.real_zeros_like(params, state_dtype),
            tree.state_zeros_like(params, state_dtype),
            jax.tree.map(jnp.copy, params),  # its own buffer: the params may be donated
        )

    def update(updates, state, params=None, **extra):
        checks.require_params(
            reported, params, "MADGRAD steps from them", "update(grads, state, params)"
        )
        checks.check_moments(who, updates, state, "grad_sum_sq", "s", "x0")
        count = tree.safe_increment(state.count)
        # In float: count + 1 in int32 wraps negative at the int32 maximum.
        root = jnp.sqrt(state.count.astype(jnp.float32) + 1)
        weight = (tree.resolve(learning_rate, state.count) + eps) * root
        squares_stored, squares = tree.moment(
            state.grad_sum_sq, updates, state_dtype,
            lambda total: jax.tree.map(
                lambda t, g: t + (weight * tree.abs_sq(g)).astype(t.dtype), total, updates
            ),
            count,
        )  # fmt: skip
        sums_stored, sums = tree.moment(
            state.s, updates, state_dtype,
            lambda total: jax.tree.map(
                lambda t, g: t + (weight * g).astype(g.dtype), total, updates
            ),
            count,
        )  # fmt: skip

        def step(x0, s, total, x):
            z = x0 - s / (jnp.cbrt(total) + eps)
            return (1 - momentum) * z + momentum * x - x

        updates = jax.tree.map(step, state.x0, sums, squares, params)
        return updates, MadgradState(count, squares_stored, sums_stored, state.x0)

    return GradientTransformation(init, update)
