"""Sophia's blocks: a Hutchinson estimate of the Hessian's diagonal, and the clipped Newton step."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks, tree
from gradtx.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    with_extra_args_support,
)


class HutchinsonState(NamedTuple):
    """State of :func:`hutchinson_estimator_diag_hessian`: the PRNG key of the next draw."""

    key: jax.Array


def hutchinson_estimator_diag_hessian(
    random_seed: jax.Array | None = None,
) -> GradientTransformationExtraArgs:
    """Hutchinson's unbiased estimate of the Hessian's diagonal, from one random product.

    With :math:`f` the ``obj_fn`` extra argument and :math:`r` a Rademacher vector
    (entries :math:`\\pm 1`, a fresh draw each step, shaped like the params):

    .. math:: \\hat h = r \\odot (\\nabla^2 f(\\theta)\\, r), \\qquad
        \\mathbb E[\\hat h] = \\operatorname{diag} \\nabla^2 f(\\theta).

    The Hessian-vector product is forward over reverse (``jax.jvp`` of ``jax.grad``);
    the incoming updates are ignored. Each step splits the state's key into the next key
    and the one drawn from, and :math:`r` is drawn leaf by leaf in float32 and cast to the
    params' lowest dtype, as optax does, so the same seed gives optax's draws.

    Args:
      random_seed: the first key (``jax.random.PRNGKey`` or ``jax.random.key``), or an
        integer seed ``s`` for ``jax.random.PRNGKey(s)`` (gradtx's; optax takes keys
        only); None for ``jax.random.PRNGKey(0)``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.contrib.hutchinson_estimator_diag_hessian()
      >>> params = jnp.array([1.0, 2.0])
      >>> obj_fn = lambda p: jnp.sum(p**3)  # diagonal Hessian 6 p: the estimate is exact
      >>> diag, state = tx.update(params, tx.init(params), params, obj_fn=obj_fn)
      >>> print(np.asarray(diag))
      [ 6. 12.]

    References:
      Hutchinson, "A stochastic estimator of the trace of the influence matrix for
        Laplacian smoothing splines", 1989.

      Liu et al., "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
        Pre-training", ICLR 2024 (arXiv:2305.14342).

      optax: ``optax.contrib.hutchinson_estimator_diag_hessian``.
    """
    who = "hutchinson_estimator_diag_hessian"
    if random_seed is None:
        first_key = jax.random.PRNGKey(0)
    elif isinstance(random_seed, int | np.integer) and not isinstance(random_seed, bool):
        first_key = jax.random.PRNGKey(int(random_seed))
    else:
        first_key = random_seed

    def init(params):
        del params
        return HutchinsonState(jnp.copy(first_key))

    def update(updates, state, params=None, obj_fn=None, **extra):
        del updates, extra
        checks.require_params(who, params)
        if obj_fn is None:
            raise ValueError(
                f"{who}: update needs the extra argument obj_fn, the objective of the params "
                f"alone: update(updates, state, params, obj_fn=lambda p: loss(p, batch))"
            )
        tree.reject_complex(who, params, " (a Hessian of a real function of complex numbers)")
        key, subkey = jax.random.split(state.key)
        signs = tree.tree_random_like(subkey, params, jax.random.rademacher, dtype=jnp.float32)
        signs = tree.tree_cast(signs, tree.tree_dtype(params, "lowest"))
        hessian_times_signs = jax.jvp(jax.grad(obj_fn), (params,), (signs,))[1]
        return jax.tree.map(lambda h, r: h * r, hessian_times_signs, signs), HutchinsonState(key)

    return GradientTransformationExtraArgs(init, update)


class SophiaState(NamedTuple):
    """State of :func:`scale_by_sophia` (optax's fields)."""

    count: jax.Array  # int32 scalar: updates applied so far
    mu: Any  # the gradients' running mean
    nu: Any  # the Hessian diagonal's running mean, refreshed every update_interval steps
    hessian_fn_state: Any


def _check_update_interval(who: str, update_interval: Any) -> None:
    if isinstance(update_interval, int | float | np.integer | np.floating):
        checks.check_length(who, "update_interval", update_interval, wording="positive")
    else:
        checks.check_interval(who, "update_interval", update_interval, checks.POSITIVE)


def scale_by_sophia(
    b1: float | jax.Array = 0.965,
    b2: float | jax.Array = 0.99,
    eps: float | jax.Array = 1e-8,
    gamma: float | jax.Array = 0.01,
    clip_threshold: float | jax.Array | None = 1.0,
    update_interval: int | jax.Array = 10,
    hessian_diagonal_fn: GradientTransformation | None = None,
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
    *,
    state_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Sophia's step: momentum over a clipped, running Hessian-diagonal estimate.

    With :math:`t` the 1-based number of this update and :math:`\\hat h` the Hessian
    diagonal estimate of ``hessian_diagonal_fn``, computed at the steps
    :math:`t \\equiv 1 \\pmod k` (:math:`k` = ``update_interval``):

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad
        u_t = \\operatorname{clip}\\left(\\frac{m_t / (1-\\beta_1^t)}
        {\\max(\\gamma\\, h_{t-1}, \\epsilon)}, -\\rho, \\rho\\right),

    .. math:: h_t = \\beta_2 h_{t-1} + (1-\\beta_2)\\, \\hat h_t \\text{ at those steps},
        \\quad h_t = h_{t-1} \\text{ otherwise}.

    The step uses the estimate from before this update (:math:`h_0 = 0`: the first
    steps are :math:`\\pm\\rho`), as optax does; the effective decay of :math:`h` per step
    is :math:`1 - (1-\\beta_2)/k`. Extra arguments (``obj_fn`` for the default estimator)
    go to ``hessian_diagonal_fn``. Complex leaves raise (neither the clip nor the Hessian
    diagonal has a complex rule; optax's clip raises too).

    ``verbose`` prints the win rate (the fraction of entries not clipped, which the
    authors keep between 0.1 and 0.5) every ``print_win_rate_every_n_steps`` updates with
    ``jax.debug.print``; 0 prints nothing (optax, whose docs say the same, prints every
    update for 0). There is no win rate without ``clip_threshold``.

    Args:
      b1: :math:`\\beta_1` in [0, 1), the momentum.
      b2: :math:`\\beta_2` in [0, 1), the decay of the Hessian diagonal's average.
      eps: :math:`\\epsilon \\ge 0`, the denominator's floor.
      gamma: :math:`\\gamma \\ge 0`, the Hessian's scale.
      clip_threshold: :math:`\\rho > 0`, or None for no clipping.
      update_interval: :math:`k`, a positive integer: steps between Hessian estimates.
      hessian_diagonal_fn: the estimator, a transform of (updates, state, params,
        extras); None (and optax's default) is :func:`hutchinson_estimator_diag_hessian`.
      mu_dtype: optax's dtype of the stored momentum, rounded to nearest (None: the
        params'). Not with ``state_dtype``.
      verbose: print the win rate.
      print_win_rate_every_n_steps: how often to print it, an integer >= 0.
      state_dtype: dtype of both stored averages, e.g. ``jnp.bfloat16`` (rounded
        stochastically); arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> from gradtx.transforms.sophia import scale_by_sophia
      >>> tx = scale_by_sophia(update_interval=1)
      >>> params = jnp.array([1.0, -2.0])
      >>> obj_fn = lambda p: 50.0 * jnp.sum(p**2)  # Hessian diagonal 100
      >>> state = tx.init(params)
      >>> for _ in range(2):
      ...     updates, state = tx.update(params, state, params, obj_fn=obj_fn)
      >>> print(np.asarray(updates).round(4))  # m / (0.01 * (1 - 0.99) * 100)
      [ 1. -1.]
      >>> print(np.asarray(state.nu))
      [1.99 1.99]

    References:
      Liu et al., "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
        Pre-training", ICLR 2024 (arXiv:2305.14342).

      optax: ``scale_by_sophia`` of ``optax/contrib/_sophia.py`` (which ``optax.contrib``
        does not export; ``optax.contrib.sophia`` is it chained with the weight decay and
        the learning rate).
    """
    who = "scale_by_sophia"
    checks.check_hyperparams(
        who,
        b1=(b1, checks.DECAY),
        b2=(b2, checks.DECAY),
        eps=(eps, checks.NONNEGATIVE),
        gamma=(gamma, checks.NONNEGATIVE),
        clip_threshold=(clip_threshold, "(0, inf]"),
    )
    _check_update_interval(who, update_interval)
    every = checks.check_length(
        who, "print_win_rate_every_n_steps", print_win_rate_every_n_steps, allow_zero=True,
        wording="integer",
    )  # fmt: skip
    state_dtype = checks.check_state_dtype(who, state_dtype)
    mu_dtype = checks.check_optax_dtype(who, "mu_dtype", mu_dtype, state_dtype)
    if hessian_diagonal_fn is None:
        hessian_diagonal_fn = hutchinson_estimator_diag_hessian()
    hessian_diagonal_fn = with_extra_args_support(hessian_diagonal_fn)

    def init(params):
        return SophiaState(
            count=tree.zeros_count(),
            mu=tree.state_zeros_like(params, state_dtype or mu_dtype),
            nu=tree.state_zeros_like(params, state_dtype),
            hessian_fn_state=hessian_diagonal_fn.init(params),
        )

    def update(updates, state, params=None, **extra):
        checks.require_params(who, params)
        checks.check_moments(who, updates, state, "mu", "nu")
        tree.reject_complex(who, updates, " (Sophia clips each entry, and complex numbers have "
                                          "no order)")  # fmt: skip
        count = tree.safe_increment(state.count)
        grads = updates

        def mu_rule(m):
            return tree.update_moment(grads, m, b1, 1)

        if state_dtype is None:
            mu_stored, mu = tree.plain_moment(state.mu, mu_dtype, mu_rule)
        else:
            mu_stored, mu = tree.moment(state.mu, grads, state_dtype, mu_rule, count)
        mu_hat = tree.bias_correction(mu, b1, count)
        nu = state.nu if state_dtype is None else tree.widen(state.nu, grads)
        updates = jax.tree.map(lambda m, h: m / jnp.maximum(gamma * h, eps), mu_hat, nu)
        if clip_threshold is not None:
            if verbose and every:
                not_clipped = sum(
                    jnp.sum(jnp.abs(u) < clip_threshold) for u in jax.tree.leaves(updates)
                )
                win_rate = not_clipped / tree.tree_size(updates)
                due = count % every == 0
                show = lambda: jax.debug.print("Sophia optimizer win rate: {}", win_rate)  # noqa: E731
                if not checks.is_concrete(due):
                    jax.lax.cond(due, show, lambda: None)
                elif bool(due):
                    show()
            threshold = clip_threshold
            updates = jax.tree.map(lambda u: jnp.clip(u, -threshold, threshold), updates)

        def estimate(hessian_fn_state, stored_nu):
            diagonal, hessian_fn_state = hessian_diagonal_fn.update(
                grads, hessian_fn_state, params, **extra
            )
            rule = lambda h: tree.update_moment(diagonal, h, b2, 1)  # noqa: E731
            if state_dtype is None:
                new_nu = rule(stored_nu)
            else:
                new_nu, _ = tree.moment(stored_nu, grads, state_dtype, rule, count)
            # The branches of the cond must agree: the average keeps its stored dtype.
            return hessian_fn_state, tree.tree_cast_like(new_nu, stored_nu)

        refresh = state.count % update_interval == 0
        if checks.is_concrete(refresh):  # eagerly, a cond would be compiled at every step
            kept = (state.hessian_fn_state, state.nu)
            hessian_fn_state, nu_stored = estimate(*kept) if bool(refresh) else kept
        else:
            hessian_fn_state, nu_stored = jax.lax.cond(
                refresh, estimate, lambda h, n: (h, n), state.hessian_fn_state, state.nu
            )
        return updates, SophiaState(count, mu_stored, nu_stored, hessian_fn_state)

    return GradientTransformationExtraArgs(init, update)
