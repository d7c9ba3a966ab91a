"""Sophia: a clipped, diagonal Newton step from a running Hessian estimate (Sophia-H)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from gradtx import checks
from gradtx.core import GradientTransformation, Scalar, ScalarOrSchedule, chain, float_leaves
from gradtx.transforms import add_decayed_weights, scale_by_learning_rate
from gradtx.transforms.sophia import hutchinson_estimator_diag_hessian, scale_by_sophia

# optax's default, built once as in optax's signature: the state holds the key, so one
# estimator serves every learner built with it.
_HUTCHINSON = hutchinson_estimator_diag_hessian()


def sophia(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.965,
    b2: Scalar = 0.99,
    eps: Scalar = 1e-8,
    weight_decay: ScalarOrSchedule = 1e-4,
    weight_decay_mask: Any | Callable[[Any], Any] | None = None,
    gamma: Scalar = 0.01,
    clip_threshold: Scalar | None = 1.0,
    update_interval: int | jax.Array = 10,
    hessian_diagonal_fn: GradientTransformation = _HUTCHINSON,
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Sophia: momentum divided by a running Hessian-diagonal estimate, clipped per entry.

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad
        \\theta_{t+1} = \\theta_t - \\eta_t \\left(\\operatorname{clip}\\left(
        \\frac{m_t / (1-\\beta_1^t)}{\\max(\\gamma h_{t-1}, \\epsilon)}, -\\rho, \\rho\\right)
        + \\lambda_t \\theta_t\\right)

    with :math:`h` the running mean (decay :math:`\\beta_2`) of the Hessian diagonal
    estimated every ``update_interval`` steps by ``hessian_diagonal_fn`` (see
    :func:`gradtx.transforms.sophia.scale_by_sophia`). The default estimator is
    Hutchinson's (:func:`gradtx.contrib.hutchinson_estimator_diag_hessian`), which needs
    the objective as the extra argument ``obj_fn``, a function of the params alone::

        obj_fn = lambda params: loss_fn(params, batch)
        updates, state = opt.update(grads, state, params, obj_fn=obj_fn)

    Every extra argument reaches ``hessian_diagonal_fn``, also through
    :func:`gradtx.chain`. With data parallelism, average the estimate across devices in
    ``hessian_diagonal_fn`` (the default does not). On a tree with integer leaves,
    ``obj_fn`` receives the params with those leaves as None (the learner updates the
    floating ones only). Complex leaves raise (optax's clip raises too).

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1), the momentum.
      b2: :math:`\\beta_2` in [0, 1), the decay of the Hessian diagonal's average (per
        estimate: per step it is :math:`1 - (1-\\beta_2)/k`).
      eps: :math:`\\epsilon \\ge 0`, the denominator's floor.
      weight_decay: decoupled coefficient :math:`\\lambda \\ge 0` or a schedule.
      weight_decay_mask: tree of bools (or function of params) saying which leaves decay.
      gamma: :math:`\\gamma \\ge 0`, the Hessian's scale.
      clip_threshold: :math:`\\rho > 0`, or None for no clipping.
      update_interval: :math:`k`, a positive integer: steps between Hessian estimates.
      hessian_diagonal_fn: the estimator (Hutchinson's with ``jax.random.PRNGKey(0)``).
      mu_dtype: optax's dtype of the stored momentum, rounded to nearest (None: the
        params'). Not with ``state_dtype``.
      verbose: print the win rate (the fraction of entries not clipped) with
        ``jax.debug.print``.
      print_win_rate_every_n_steps: how often, an integer >= 0; 0 prints nothing.
      state_dtype: dtype of both stored averages, e.g. ``jnp.bfloat16`` (rounded
        stochastically); arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.contrib.sophia(0.1, weight_decay=0.0)
      >>> params = jnp.array([1.0, -2.0])
      >>> obj_fn = lambda p: jnp.sum(p**2)
      >>> updates, state = opt.update(jax.grad(obj_fn)(params), opt.init(params), params,
      ...                             obj_fn=obj_fn)
      >>> print(np.asarray(updates))  # no estimate before the first step: clipped to 1
      [-0.1  0.1]
      >>> print(np.asarray(state[0].nu))  # (1 - 0.99) * 2
      [0.02 0.02]

    References:
      Liu et al., "Sophia: A Scalable Stochastic Second-order Optimizer for Language Model
        Pre-training", ICLR 2024 (arXiv:2305.14342).

      optax: ``optax.contrib.sophia``.
    """
    with checks.named("sophia"):
        return float_leaves(
            chain(
                scale_by_sophia(
                    b1,
                    b2,
                    eps,
                    gamma,
                    clip_threshold,
                    update_interval,
                    hessian_diagonal_fn,
                    mu_dtype,
                    verbose,
                    print_win_rate_every_n_steps,
                    state_dtype=state_dtype,
                ),
                add_decayed_weights(weight_decay, weight_decay_mask),
                scale_by_learning_rate(learning_rate),
            )
        )
