"""Optimistic gradients: this step's gradient plus a correction by its change since the last."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, recipe, tree
from gradtx.core import GradientTransformation, ScalarOrSchedule
from gradtx.transforms.adam import SCALE_BY_ADAM

# `initial` switches the last gradient for this one (the first step).
SCALE_BY_OPTIMISTIC_GRADIENT = recipe.rule(
    "scale_by_optimistic_gradient",
    scalars=("alpha_plus_beta", "beta", "initial"),
    moments=("previous_gradient",),
    kernel="gradtx_optimistic",
)
# optimistic_adam and optimistic_adam_v2: Adam's direction and its correction in one pass.
OPTIMISTIC_ADAM = recipe.composite(
    "optimistic_adam", SCALE_BY_ADAM, SCALE_BY_OPTIMISTIC_GRADIENT, kernel="gradtx_optimistic_adam"
)


class ScaleByOptimisticGradientState(NamedTuple):
    """State of :func:`scale_by_optimistic_gradient`: the last gradient, and whether there was one.

    ``is_initial_step`` and ``previous_gradient`` are optax's fields; ``count``
    (gradtx's) evaluates an ``alpha`` or ``beta`` schedule.
    """

    is_initial_step: jax.Array  # bool scalar: no gradient seen yet
    previous_gradient: Any  # params-shaped: the last incoming update
    count: jax.Array  # int32 scalar: updates applied so far


def scale_by_optimistic_gradient(
    alpha: ScalarOrSchedule = 1.0,
    beta: ScalarOrSchedule = 1.0,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Generalized optimistic gradient: a step along :math:`g_t` and against :math:`g_{t-1}`.

    .. math:: u_t = (\\alpha_t + \\beta_t)\\, g_t - \\beta_t\\, g_{t-1}
        = \\alpha_t g_t + \\beta_t (g_t - g_{t-1}),

    with :math:`g_0 = g_1` (the first step has no correction: :math:`u_1 = \\alpha_1 g_1`),
    as optax. Linear in the gradients, so complex leaves are updated as real ones.

    Args:
      alpha: :math:`\\alpha \\ge 0`, the weight of the gradient, or a schedule of the
        step count.
      beta: :math:`\\beta \\ge 0`, the weight of its change (the optimism, a negative
        momentum), or a schedule of the step count.
      state_dtype: dtype of the stored last gradient (e.g. ``jnp.bfloat16``); bfloat16
        rounds stochastically. Defaults to the params' dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.transforms.optimistic import scale_by_optimistic_gradient
      >>> tx = scale_by_optimistic_gradient()
      >>> state = tx.init({"w": jnp.zeros(2)})
      >>> updates, state = tx.update({"w": jnp.array([1.0, 2.0])}, state)  # no last gradient
      >>> updates, state = tx.update({"w": jnp.array([2.0, 2.0])}, state)  # 2 g_2 - g_1
      >>> print(updates["w"])
      [3. 2.]

    References:
      Daskalakis, Ilyas, Syrgkanis and Zeng, "Training GANs with Optimism", 2018.

      Mokhtari, Ozdaglar and Pattathil, "A Unified Analysis of Extra-gradient and
        Optimistic Gradient Methods for Saddle Point Problems: Proximal Point Approach", 2020.

      optax: ``optax.scale_by_optimistic_gradient``.
    """
    checks.check_hyperparams(
        "scale_by_optimistic_gradient",
        alpha=(alpha, checks.NONNEGATIVE),
        beta=(beta, checks.NONNEGATIVE),
    )
    state_dtype = checks.check_state_dtype("scale_by_optimistic_gradient", state_dtype)

    def init(params):
        return ScaleByOptimisticGradientState(
            jnp.array(True), tree.state_zeros_like(params, state_dtype), tree.zeros_count()
        )

    def update(updates, state, params=None, **extra):
        checks.check_moments("scale_by_optimistic_gradient", updates, state, "previous_gradient")
        a = tree.resolve(alpha, state.count)
        b = tree.resolve(beta, state.count)

        def step(g, previous):
            # The first step has no last gradient: optax uses this one (optax issue 1082).
            previous = jnp.where(state.is_initial_step, g, previous)
            return (a + b) * g - b * previous

        new_updates = jax.tree.map(step, updates, tree.widen(state.previous_gradient, updates))
        stored, _ = tree.store(updates, updates, state_dtype, state.count)
        new_state = ScaleByOptimisticGradientState(
            jnp.array(False), stored, tree.safe_increment(state.count)
        )
        return new_updates, new_state

    def scalars(state, updates):
        a, b = tree.resolve(alpha, state.count), tree.resolve(beta, state.count)
        return {"alpha_plus_beta": a + b, "beta": b, "initial": state.is_initial_step}

    tx = GradientTransformation(init, update)
    return recipe.declare(tx, SCALE_BY_OPTIMISTIC_GRADIENT, scalars, seed=lambda state: state.count)
