"""COCOB-Backprop: per-coordinate coin betting, a step size from the gradients' wealth."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation
from gradtx.transforms.dadapt import copy_params

# optax's reward is the maximum of a complex number and 0; a bet on a complex coordinate
# has no defined sign.
_NO_COMPLEX = " (a coin bet's reward needs a real sign; optax compares complex numbers)"


class COCOBState(NamedTuple):
    """State of :func:`scale_by_cocob` (optax's fields), shaped like the params."""

    init_particles: Any  # the params at init, w_1
    cumulative_gradients: Any  # minus the sum of the gradients, theta_t
    scale: Any  # the largest gradient magnitude so far, L_t (eps at init)
    subgradients: Any  # the sum of the gradient magnitudes, G_t
    reward: Any  # the wealth won so far, R_t


def scale_by_cocob(
    alpha: float | jax.Array = 100.0,
    eps: float | jax.Array = 1e-8,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Orabona and Tommasi's COCOB-Backprop (Algorithm 2): a bet per coordinate.

    With :math:`w_1` the params at init, :math:`w_t` those this update is taken at and
    every operation elementwise:

    .. math::
        L_t = \\max(L_{t-1}, |g_t|), \\quad G_t = G_{t-1} + |g_t|, \\quad
        R_t = \\max\\big(R_{t-1} - g_t (w_t - w_1), 0\\big), \\quad
        \\theta_t = \\theta_{t-1} - g_t,

    .. math::
        w_{t+1} = w_1 + \\frac{\\theta_t}{L_t \\max(G_t + L_t, \\alpha L_t)} (L_t + R_t),
        \\qquad u_t = w_{t+1} - w_t,

    with :math:`L_0 = \\epsilon` and :math:`G_0 = R_0 = \\theta_0 = 0`. The update is
    already a descent step (no negative scale after it). ``update`` needs the params.

    Complex leaves raise ``ValueError`` naming the leaf: the reward's clipping at 0 needs
    a real bet (optax compares complex numbers there).

    Args:
      alpha: :math:`\\alpha > 0`; the first steps bet at most :math:`1/\\alpha` of the wealth.
      eps: :math:`\\epsilon > 0`, the initial :math:`L_0`, which keeps 0/0 out of the
        first steps.
      state_dtype: dtype of the stored accumulators :math:`\\theta, L, G, R` (e.g.
        ``jnp.bfloat16``); arithmetic runs in the gradients' dtype, bfloat16 rounds
        stochastically. :math:`w_1` keeps the params' dtype (its rounding would swamp
        the distance travelled).

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx.transforms.cocob import scale_by_cocob
      >>> tx = scale_by_cocob()
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update({"w": jnp.array([0.5, -4.0])}, tx.init(params), params)
      >>> print(np.asarray(updates["w"]).round(4))  # -sign(g) / alpha on the first step
      [-0.01  0.01]

    References:
      Orabona and Tommasi, "Training Deep Networks without Learning Rates Through Coin
        Betting", NeurIPS 2017 (arXiv:1705.07795).

      optax: ``optax.contrib.scale_by_cocob``.
    """
    who = "scale_by_cocob"
    checks.check_hyperparams(who, alpha=(alpha, checks.POSITIVE), eps=(eps, checks.POSITIVE))
    state_dtype = checks.check_state_dtype(who, state_dtype)

    def init(params):
        tree.reject_complex(who, params, _NO_COMPLEX)
        return COCOBState(
            init_particles=copy_params(params),
            cumulative_gradients=tree.state_zeros_like(params, state_dtype),
            scale=tree.state_full_like(params, eps, state_dtype),
            subgradients=tree.state_zeros_like(params, state_dtype),
            reward=tree.state_zeros_like(params, state_dtype),
        )

    def update(updates, state, params=None, **extra):
        checks.require_params(who, params, "the bet is on the distance travelled")
        tree.reject_complex(who, updates, _NO_COMPLEX)
        checks.check_moments(
            who, updates, state, "cumulative_gradients", "scale", "subgradients", "reward"
        )
        checks.check_trees_match(
            who, "updates", updates, params=params, **{"state.init_particles": state.init_particles}
        )
        scale_stored, scale = tree.moment(
            state.scale, updates, state_dtype,
            lambda s: jax.tree.map(lambda L, c: jnp.maximum(L, jnp.abs(c)), s, updates),
        )  # fmt: skip
        subgradients_stored, subgradients = tree.moment(
            state.subgradients, updates, state_dtype,
            lambda s: jax.tree.map(lambda G, c: G + jnp.abs(c), s, updates),
        )  # fmt: skip
        reward_stored, reward = tree.moment(
            state.reward, updates, state_dtype,
            lambda r: jax.tree.map(
                lambda R, c, p, p0: jnp.maximum(R - c * (p - p0), 0),
                r, updates, params, state.init_particles,
            ),
        )  # fmt: skip
        cumulative_stored, cumulative = tree.moment(
            state.cumulative_gradients, updates, state_dtype,
            lambda s: jax.tree.map(lambda C, c: C - c, s, updates),
        )  # fmt: skip
        new_updates = jax.tree.map(
            lambda p, p0, C, L, G, R: -p + (p0 + C / (L * jnp.maximum(G + L, alpha * L)) * (L + R)),
            params, state.init_particles, cumulative, scale, subgradients, reward,
        )  # fmt: skip
        return new_updates, COCOBState(
            init_particles=state.init_particles,
            cumulative_gradients=cumulative_stored,
            scale=scale_stored,
            subgradients=subgradients_stored,
            reward=reward_stored,
        )

    return GradientTransformation(init, update)
