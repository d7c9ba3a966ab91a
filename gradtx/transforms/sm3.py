"""SM3: Adagrad-like step sizes from one accumulator per row, column, ... of each tensor."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation

_NO_COMPLEX = " (optax's sm3 has none either)"


class ScaleBySM3State(NamedTuple):
    """State of :func:`scale_by_sm3`: the per-axis accumulators and the momentum."""

    mu: Any  # per leaf, a list of one vector per axis: the accumulated maxima of g**2
    nu: Any  # params-shaped: the momentum of the preconditioned gradients


def _gain(b2: Any) -> Any:
    """The factor of :math:`g^2`: :math:`1-\\beta_2`, or 1 for :math:`\\beta_2 = 1` (a plain sum).

    A Python branch on a concrete ``b2``, as optax's (the same float); a select on a tracer
    (a ``vmap`` over ``b2``).
    """
    if checks.is_concrete(b2) and jnp.ndim(b2) == 0:
        return (1.0 - b2) if b2 != 1.0 else 1.0
    return jnp.where(b2 == 1.0, 1.0, 1.0 - b2)


def scale_by_sm3(
    b1: float | jax.Array = 0.9,
    b2: float | jax.Array = 1.0,
    eps: float | jax.Array = 1e-8,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """SM3-II: Adagrad's step sizes from sublinear memory, with momentum.

    Each axis :math:`r` of a tensor keeps a vector :math:`\\mu^{(r)}` (one entry per
    row, column, ...). An entry :math:`i` is covered by one entry of each axis'
    vector, and its accumulator is the smallest of them plus its new square:

    .. math::
        \\nu_t(i) = (1-\\beta_2)\\, g_t(i)^2 + \\beta_2 \\min_{r} \\mu^{(r)}_{t-1}(i), \\qquad
        \\mu^{(r)}_t(j) = \\max_{i \\text{ in slice } j \\text{ of axis } r} \\nu_t(i),

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1)\\, \\frac{g_t}{\\sqrt{\\nu_t + \\epsilon}},
        \\qquad u_t = m_t,

    with :math:`1-\\beta_2` read as 1 for :math:`\\beta_2 = 1` (the default: a sum, as
    Adagrad) and :math:`g/\\sqrt{\\nu + \\epsilon}` read as 0 where :math:`\\nu = 0`. A
    vector or scalar leaf keeps a full accumulator (it is its own cover); optax's
    ``scale_by_sm3`` fails on a scalar leaf.

    A complex leaf raises ``ValueError`` naming it, as optax rejects complex params.

    Args:
      b1: :math:`\\beta_1` in [0, 1), the momentum's decay (0: none).
      b2: :math:`\\beta_2` in [0, 1], the accumulators' decay (1: a plain sum).
      eps: :math:`\\epsilon \\ge 0`, inside the root.
      state_dtype: dtype of the stored accumulators and momentum (e.g. ``jnp.bfloat16``);
        arithmetic runs in the gradients' dtype, bfloat16 rounds stochastically.
        Defaults to the params' dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.transforms.sm3 import scale_by_sm3
      >>> tx = scale_by_sm3()
      >>> params = {"w": jnp.zeros((2, 3))}
      >>> updates, state = tx.update({"w": jnp.ones((2, 3))}, tx.init(params))
      >>> [v.shape for v in state.mu["w"]]  # 2 + 3 numbers, not 2 x 3
      [(2,), (3,)]
      >>> print(updates["w"][0])  # (1 - 0.9) * g / sqrt(g**2)
      [0.1 0.1 0.1]

    References:
      Anil, Gupta, Koren and Singer, "Memory-Efficient Adaptive Optimization", 2019.

      optax: ``optax.scale_by_sm3``.
    """
    checks.check_hyperparams(
        "scale_by_sm3", b1=(b1, checks.DECAY), b2=(b2, "[0, 1]"), eps=(eps, checks.NONNEGATIVE)
    )
    state_dtype = checks.check_state_dtype("scale_by_sm3", state_dtype)

    def init(params):
        tree.reject_complex("scale_by_sm3", params, _NO_COMPLEX)

        def zeros(p):
            p = jnp.asarray(p)
            dtype = p.dtype if state_dtype is None else state_dtype
            if p.ndim == 0:
                return [jnp.zeros((), dtype)]
            others = lambda i: tuple(a for a in range(p.ndim) if a != i)  # noqa: E731
            return [tree.state_zeros_like(jnp.sum(p, axis=others(i)), dtype) for i in range(p.ndim)]

        return ScaleBySM3State(
            jax.tree.map(zeros, params), tree.state_zeros_like(params, state_dtype)
        )

    def accumulate(g, mu):
        """This step's :math:`\\nu` of one leaf, from its per-axis vectors."""
        wide = [m.astype(jnp.promote_types(m.dtype, g.dtype)) for m in mu]
        if g.ndim < 2:
            return _gain(b2) * g**2 + b2 * jnp.reshape(wide[0], g.shape)
        expanded = [
            jnp.reshape(m, [1] * i + [g.shape[i]] + [1] * (g.ndim - i - 1))
            for i, m in enumerate(wide)
        ]
        return _gain(b2) * g**2 + b2 * functools.reduce(jnp.minimum, expanded)

    def covers(accum):
        """The per-axis vectors of one leaf: its accumulator's maxima over the other axes."""
        if accum.ndim < 2:
            return [accum]
        return [
            jnp.max(accum, axis=[a for a in range(accum.ndim) if a != i], initial=0)
            for i in range(accum.ndim)
        ]

    def update(updates, state, params=None, **extra):
        tree.reject_complex("scale_by_sm3", updates, _NO_COMPLEX)
        checks.check_moments("scale_by_sm3", updates, state, "nu")
        accum = jax.tree.map(accumulate, updates, state.mu)
        inv_sqrt = jax.tree.map(lambda t: jnp.where(t > 0, jax.lax.rsqrt(t + eps), 0.0), accum)
        preconditioned = jax.tree.map(lambda g, a: g * a, updates, inv_sqrt)
        nu_stored, nu = tree.moment(
            state.nu,
            updates,
            state_dtype,
            lambda m: tree.update_moment(preconditioned, m, b1, 1),
        )
        mu = jax.tree.map(covers, accum)
        return nu, ScaleBySM3State(tree.state_cast(mu, state_dtype), nu_stored)

    return GradientTransformation(init, update)
