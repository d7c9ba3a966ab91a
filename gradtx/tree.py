"""Pytree helpers shared by transforms: moments, norms, counters, schedules."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

COUNT_DTYPE = jnp.int32


def zeros_count() -> jax.Array:
    """A fresh step counter: ``int32`` zero."""
    return jnp.zeros([], COUNT_DTYPE)


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the int32 maximum instead of wrapping negative."""
    limit = jnp.iinfo(COUNT_DTYPE).max
    return jnp.where(count < limit, count + 1, limit).astype(COUNT_DTYPE)


def resolve(hyperparam: Any, count: jax.Array) -> Any:
    """The value of a hyperparameter at ``count``: call it if it is a schedule."""
    return hyperparam(count) if callable(hyperparam) else hyperparam


def full_like(tree: Any, value: Any, dtype: Any = None) -> Any:
    return jax.tree.map(lambda x: jnp.full_like(x, value, dtype=dtype), tree)


def zeros_like(tree: Any, dtype: Any = None) -> Any:
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)


def update_moment(updates: Any, moments: Any, decay: Any, order: int) -> Any:
    """Exponential moving average of ``g**order``: ``(1 - decay) g^order + decay m``."""
    return jax.tree.map(lambda g, m: (1 - decay) * (g**order) + decay * m, updates, moments)


# Jitted so that eager and jitted updates compute ``decay**count`` with the same
# XLA kernel (eager ``pow`` differs by an ulp, which ``1 - b**t`` amplifies).
@functools.partial(jax.jit, inline=True)
def bias_correction(moments: Any, decay: Any, count: jax.Array) -> Any:
    """Divide by ``1 - decay**count``; the factor is computed in float32 then cast per leaf."""
    correction = 1 - decay**count
    return jax.tree.map(lambda m: m / correction.astype(m.dtype), moments)


def global_norm(tree: Any) -> jax.Array:
    """The L2 norm of all leaves taken together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))
