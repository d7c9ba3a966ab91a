"""AdaBelief: Adam whose second moment is the spread of the gradient around its own average."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, recipe, tree
from gradtx.core import GradientTransformation
from gradtx.transforms.adam import (
    SCALE_BY_ADAM,
    corrected_first_moment,
    first_moment_rule,
    moment_scalars,
    next_count,
)

# Adam's scalars and option: only the second moment's rule differs.
SCALE_BY_BELIEF = recipe.rule(
    "scale_by_belief",
    scalars=SCALE_BY_ADAM.scalars,
    options=SCALE_BY_ADAM.options,
    moments=("mu", "nu"),
    kernel="gradtx_belief",
)


class ScaleByBeliefState(NamedTuple):
    """State of :func:`scale_by_belief`: the step count, the mean and the belief's variance."""

    count: jax.Array  # int32 scalar: updates applied so far
    mu: Any  # running mean of the gradients
    nu: Any  # running mean of |g - mu|^2, plus eps_root each step (optax's)


def check_belief(who: str, b1: Any, b2: Any, eps: Any, eps_root: Any, state_dtype: Any) -> Any:
    """Validate a belief-style block's hyperparameters; returns the checked state dtype."""
    checks.check_hyperparams(
        who,
        b1=(b1, checks.DECAY),
        b2=(b2, checks.DECAY),
        eps=(eps, checks.NONNEGATIVE),
        eps_root=(eps_root, checks.NONNEGATIVE),
    )
    return checks.check_state_dtype(who, state_dtype)


def belief_init(state_dtype: Any) -> Any:
    """The ``init`` of AdaBelief's and ACProp's state: a count, the mean, the real spread."""

    def init(params):
        return ScaleByBeliefState(
            tree.zeros_count(),
            tree.state_zeros_like(params, state_dtype),
            tree.real_zeros_like(params, state_dtype),
        )

    return init


def scale_by_belief(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.999,
    eps: float | jax.Array = 1e-16,
    eps_root: float | jax.Array = 1e-16,
    *,
    nesterov: bool = False,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Zhuang et al.'s AdaBelief: divide by how far the gradient strays from its average.

    With :math:`t` the 1-based number of this update:

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        s_t = \\beta_2 s_{t-1} + (1-\\beta_2) (g_t - m_t)^2 + \\epsilon_{root},

    .. math::
        u_t = \\frac{m_t / (1-\\beta_1^t)}{\\sqrt{s_t / (1-\\beta_2^t)} + \\epsilon}.

    :math:`\\epsilon_{root}` is added to the stored :math:`s_t` every step, as optax
    does. With ``nesterov`` the first moment looks one step ahead, as in NAdam:
    :math:`\\hat m_t = \\beta_1 m_t / (1-\\beta_1^{t+1}) + (1-\\beta_1) g_t / (1-\\beta_1^t)`.

    For complex gradients :math:`s` takes :math:`|g - m|^2`, real and kept in the leaf's
    real dtype, and the first moment is complex, as in optax.

    Args:
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, added to :math:`s_t`; keep it positive to
        differentiate through the update (meta-learning).
      nesterov: use NAdam's look-ahead first moment.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype, bfloat16 rounds stochastically. Defaults to the
        params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_belief()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # sign(g) / 0.9: s_hat = (g - 0.1 g)**2
      [ 1.1111 -1.1111]

    References:
      Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
        Gradients", NeurIPS 2020.

      optax: ``optax.scale_by_belief``.
    """
    who = "scale_by_belief"
    state_dtype = check_belief(who, b1, b2, eps, eps_root, state_dtype)
    init = belief_init(state_dtype)

    def update(updates, state, params=None, **extra):
        checks.check_moments(who, updates, state, "mu", "nu")
        count = tree.safe_increment(state.count)
        mu_stored, mu = tree.moment(
            state.mu, updates, state_dtype, first_moment_rule(updates, b1), count
        )

        def belief(s):  # the spread around the new mean, as optax computes it
            surprise = jax.tree.map(lambda g, m: g - m, updates, mu)
            s = tree.update_moment_per_elem_norm(surprise, s, b2, 2)
            return jax.tree.map(lambda v: v + eps_root, s)

        nu_stored, nu = tree.moment(state.nu, updates, state_dtype, belief, count)
        mu_hat = corrected_first_moment(mu, updates, b1, count, nesterov)
        nu_hat = tree.bias_correction(nu, b2, count)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat)
        return updates, ScaleByBeliefState(count, mu_stored, nu_stored)

    def scalars(state, updates):
        return moment_scalars(SCALE_BY_BELIEF, state, b1, b2, eps=eps, eps_root=eps_root)

    tx = GradientTransformation(init, update)
    return recipe.declare(tx, SCALE_BY_BELIEF, scalars, seed=next_count, nesterov=nesterov)
