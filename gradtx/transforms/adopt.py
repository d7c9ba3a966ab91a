"""ADOPT: Adam whose step is normalised by the second moment of the gradients before this one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation
from gradtx.transforms.adam import ScaleByAdamState, init_adam_moments


def _default_clip_value(count: jax.Array) -> jax.Array:
    return count**0.25


def _clip(x: jax.Array, bound: jax.Array) -> jax.Array:
    # A complex entry is two real coordinates sharing one second moment: each is clipped.
    if jnp.iscomplexobj(x):
        return jax.lax.complex(jnp.clip(x.real, -bound, bound), jnp.clip(x.imag, -bound, bound))
    return jnp.clip(x, -bound, bound)


def scale_by_adopt(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 0.9999,
    eps: float | jax.Array = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: Callable[[jax.Array], jax.Array] = _default_clip_value,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Taniguchi et al.'s ADOPT: the gradient is normalised by the previous second moment.

    With :math:`t` the number of updates already applied (0 for the first) and
    :math:`c_t` = ``clip_value_fn(t)``:

    .. math::
        v_0 = g_0^2, \\quad m_0 = 0, \\qquad \\text{and for } t \\ge 1: \\quad
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) \\operatorname{clip}\\Big(
        \\frac{g_t}{\\max(\\sqrt{v_{t-1}}, \\epsilon)}, -c_t, c_t\\Big), \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,

    and :math:`u_t = m_t` (the first update is 0: it only measures :math:`v_0`). With
    ``nesterov`` the update looks one step ahead,
    :math:`u_t = \\beta_1 m_t + (1-\\beta_1) \\operatorname{clip}(\\dots)`. Because
    :math:`v_{t-1}` does not contain :math:`g_t`, the normalised gradient is an unbiased
    direction and ADOPT converges for any :math:`\\beta_2`; no bias correction is needed.

    For complex gradients :math:`g^2` is :math:`|g|^2 = g\\bar g`, real and kept in the
    leaf's real dtype, as in optax. optax's clip raises on a complex leaf; here the real
    and imaginary parts are each clipped to :math:`[-c_t, c_t]` (the two real coordinates
    of the entry, which share its second moment).

    Args:
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, the floor of :math:`\\sqrt{v}`.
      mu_dtype: optax's dtype of the stored first moment, rounded to nearest (None:
        the params'). Not with ``state_dtype``.
      nesterov: the look-ahead update.
      use_clipping: clip the normalised gradient to :math:`[-c_t, c_t]`.
      clip_value_fn: :math:`t \\mapsto c_t`, of the int32 count; :math:`t^{1/4}` by
        default (so the first update's clip is 0).
      state_dtype: dtype of both stored moments (e.g. ``jnp.bfloat16``); arithmetic runs
        in the gradients' dtype, bfloat16 rounds stochastically. Defaults to the params'.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> from gradtx.transforms.adopt import scale_by_adopt
      >>> tx = scale_by_adopt()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(updates["w"], state.nu["w"])  # the first step only measures v_0 = g**2
      [0. 0.] [1. 4.]
      >>> updates, state = tx.update(grads, state)
      >>> print(np.asarray(updates["w"]).round(4))  # (1 - b1) * clip(g / |g|, -1, 1)
      [ 0.1 -0.1]

    References:
      Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any beta_2 with the Optimal
        Rate", NeurIPS 2024 (arXiv:2411.02853).

      optax: ``optax.contrib.scale_by_adopt``.
    """
    who = "scale_by_adopt"
    checks.check_hyperparams(
        who, b1=(b1, checks.DECAY), b2=(b2, checks.DECAY), eps=(eps, checks.NONNEGATIVE)
    )
    if use_clipping and not callable(clip_value_fn):
        reported, name = checks.reported_name(who, "clip_value_fn")
        raise ValueError(
            f"{reported}: {name} must be a function of the step count, got {clip_value_fn!r}"
        )
    state_dtype = checks.check_state_dtype(who, state_dtype)
    mu_dtype = checks.check_optax_dtype(who, "mu_dtype", mu_dtype, state_dtype)

    def update(updates, state, params=None, **extra):
        checks.check_moments(who, updates, state, "mu", "nu")
        count = tree.safe_increment(state.count)
        started = state.count > 0
        # The first step: v_0 = g_0^2 and m stays 0.
        decay1, decay2 = jnp.where(started, b1, 1), jnp.where(started, b2, 0)
        normalised = jax.tree.map(
            lambda g, v: g / jnp.maximum(jnp.sqrt(v), eps), updates, tree.widen(state.nu, updates)
        )
        if use_clipping:
            bound = clip_value_fn(state.count)
            normalised = jax.tree.map(lambda x: _clip(x, bound), normalised)
        rule = lambda m: tree.update_moment(normalised, m, decay1, 1)  # noqa: E731
        if mu_dtype is not None:
            mu_stored, mu = tree.plain_moment(state.mu, mu_dtype, rule)
        else:
            mu_stored, mu = tree.moment(state.mu, updates, state_dtype, rule, count)
        nu_stored, _ = tree.moment(
            state.nu, updates, state_dtype,
            lambda v: tree.update_moment_per_elem_norm(updates, v, decay2, 2), count,
        )  # fmt: skip
        if nesterov:
            mu = tree.update_moment(normalised, mu, decay1, 1)
        return mu, ScaleByAdamState(count, mu_stored, nu_stored)

    return GradientTransformation(
        lambda params: init_adam_moments(params, state_dtype, mu_dtype), update
    )
