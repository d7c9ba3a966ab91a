"""NovoGrad: momentum on gradients normalised by a per-layer (per-leaf) second moment."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation, ScalarOrSchedule


class ScaleByNovogradState(NamedTuple):
    """State of :func:`scale_by_novograd`: the step count, the momentum, one norm per leaf."""

    count: jax.Array  # int32 scalar: updates applied so far
    mu: Any  # momentum of the normalised gradients (shaped like the params)
    nu: Any  # running mean of each leaf's squared L2 norm (a scalar per leaf)


def scale_by_novograd(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.25,
    eps: float | jax.Array = 1e-8,
    eps_root: float | jax.Array = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mu_dtype: Any = None,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Ginsburg et al.'s NovoGrad: layer-wise normalised gradients, then momentum.

    For each leaf (a layer), with :math:`\\|g_t\\|` the L2 norm of its whole gradient:

    .. math::
        v_1 = \\|g_1\\|^2, \\quad v_t = \\beta_2 v_{t-1} + (1-\\beta_2) \\|g_t\\|^2,

    .. math::
        a_t = \\frac{g_t}{\\sqrt{v_t + \\epsilon_{root}} + \\epsilon} + \\lambda_t \\theta_t,
        \\quad m_1 = a_1, \\quad m_t = \\beta_1 m_{t-1} + a_t, \\quad u_t = m_t.

    The momentum sums without a :math:`1-\\beta_1` factor, as in the paper and optax.
    The second moment is one scalar per leaf; for a complex leaf it is real (the
    squared norm), kept in the leaf's real dtype, and the momentum is complex.

    Args:
      b1: :math:`\\beta_1` in [0, 1), the momentum.
      b2: :math:`\\beta_2` in [0, 1), the decay of the squared norms.
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      weight_decay: :math:`\\lambda \\ge 0`, added to the normalised gradient inside the
        momentum. A schedule is evaluated at the number of updates already applied
        (optax takes only a number here). Any value but a literal 0 needs the params.
      mu_dtype: optax's dtype of the stored momentum, cast to it with round-to-nearest
        as optax does; the update is that stored momentum. Not with ``state_dtype``.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic
        runs in the gradients' dtype, bfloat16 rounds stochastically. Defaults to the
        params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_novograd()
      >>> grads = {"w": jnp.array([3.0, -4.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(4), state.nu["w"])  # g / ||g||, ||g||**2
      [ 0.6 -0.8] 25.0

    References:
      Ginsburg et al., "Stochastic Gradient Methods with Layer-wise Adaptive Moments for
        Training of Deep Networks", 2019 (arXiv:1905.11286).

      optax: ``optax.scale_by_novograd``.
    """
    who = "scale_by_novograd"
    checks.check_hyperparams(
        who,
        b1=(b1, checks.DECAY),
        b2=(b2, checks.DECAY),
        eps=(eps, checks.NONNEGATIVE),
        eps_root=(eps_root, checks.NONNEGATIVE),
        weight_decay=(weight_decay, checks.NONNEGATIVE),
    )
    state_dtype = checks.check_state_dtype(who, state_dtype)
    mu_dtype = checks.check_optax_dtype(who, "mu_dtype", mu_dtype, state_dtype)
    # A literal zero adds nothing, so update needs no params (optax always wants them).
    decays = not (isinstance(weight_decay, int | float) and weight_decay == 0)

    # The cond's branches, built once: an eager cond compiles a branch once per function.
    def one_norm(first_step, g, v):
        s = jnp.linalg.norm(g) ** 2  # the squared norm of the whole leaf, real also if complex
        return (s if first_step else (1 - b2) * s + b2 * v).astype(v.dtype)

    def one_momentum(first_step, g, p, m, v, decay):
        a = g / (jnp.sqrt(v + eps_root) + eps)
        a = a + decay * p if decays else a
        return (a if first_step else b1 * m + a).astype(jnp.promote_types(m.dtype, a.dtype))

    def start_norms(g, v):  # the first step starts the average at ||g_1||^2
        return jax.tree.map(lambda g, v: one_norm(True, g, v), g, v)

    def average_norms(g, v):
        return jax.tree.map(lambda g, v: one_norm(False, g, v), g, v)

    def start_momentum(g, p, m, v, decay):  # ... and the momentum at a_1
        return jax.tree.map(lambda *x: one_momentum(True, *x, decay=decay), g, p, m, v)

    def accumulate_momentum(g, p, m, v, decay):
        return jax.tree.map(lambda *x: one_momentum(False, *x, decay=decay), g, p, m, v)

    def init(params):
        if mu_dtype is None:
            mu = tree.state_zeros_like(params, state_dtype)
        else:
            mu = tree.state_zeros_like(params, mu_dtype, "mu_dtype")
        # One real scalar per leaf: the running squared norm of the whole leaf.
        nu = jax.tree.map(
            lambda p: jnp.zeros(
                [], tree.real_dtype(jnp.result_type(p)) if state_dtype is None else state_dtype
            ),
            params,
        )
        return ScaleByNovogradState(tree.zeros_count(), mu, nu)

    def update(updates, state, params=None, **extra):
        checks.check_moments(who, updates, state, "mu")
        checks.check_trees_match(
            who, "updates", jax.tree.map(lambda _: 0, updates), **{"state.nu": state.nu}
        )
        if decays and params is None:
            raise ValueError(
                f"{who}: update needs params for its weight decay; call "
                f"update(updates, state, params)"
            )
        if decays:
            checks.check_trees_match(who, "updates", updates, params=params)
        count = tree.safe_increment(state.count)
        # lax.cond on the first step, as optax: each branch compiles as its own computation,
        # so XLA rounds the norms and sums as in optax's program (a select is 1 ulp off).
        first = state.count == 0
        nu_stored, nu = tree.moment(  # `updates` gives the dtypes: a scalar per leaf of it
            state.nu, updates, state_dtype,
            lambda v: jax.lax.cond(first, start_norms, average_norms, updates, v), count,
        )  # fmt: skip
        decay = tree.resolve(weight_decay, state.count) if decays else None
        decayed = params if decays else updates  # without a decay the params are not read

        def momentum(mu):
            return jax.lax.cond(
                first, start_momentum, accumulate_momentum, updates, decayed, mu, nu, decay
            )

        if mu_dtype is not None:  # optax's cast; the update is the moment as stored
            mu_stored, _ = tree.plain_moment(state.mu, mu_dtype, momentum)
            return mu_stored, ScaleByNovogradState(count, mu_stored, nu_stored)
        mu_stored, mu = tree.moment(state.mu, updates, state_dtype, momentum, count)
        return mu, ScaleByNovogradState(count, mu_stored, nu_stored)

    return GradientTransformation(init, update)
