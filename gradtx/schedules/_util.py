"""Argument checks and count handling shared by the schedules."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def as_count(count: Any) -> jax.Array:
    """The step count as an int32 array (scalar or any shape)."""
    return jnp.asarray(count).astype(jnp.int32)


def as_float(count: Any) -> jax.Array:
    return jnp.asarray(count).astype(jnp.float32)


def power(base: Any, exponent: jax.Array) -> jax.Array:
    """``base ** exponent`` in float32, accurate for a concrete base near 1 and a large exponent.

    ``0.999 ** 5000`` from the float32 base is off by 6e-5 (the base's own rounding,
    raised to the power); ``exp(exponent * log(base))`` with the log taken in float64
    is off by about 1e-7.
    """
    exponent = jnp.asarray(exponent, jnp.float32)
    if isinstance(base, int | float) and base > 0:
        return jnp.exp(exponent * np.float32(math.log(base)))
    return jnp.asarray(base, jnp.float32) ** exponent


def check_length(who: str, name: str, value: Any, allow_zero: bool = False) -> int:
    """A length in steps: a concrete positive (or non-negative) Python integer."""
    if isinstance(value, bool) or not isinstance(value, int | jnp.integer):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{who}: {name} must be an integer number of steps, got {value!r}")
    value = int(value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{who}: {name} must be {bound}, got {value}")
    return value


def check_boundaries(who: str, name: str, values: Any) -> tuple[int, ...]:
    """Non-negative, strictly increasing integer step counts."""
    values = tuple(check_length(who, name, v, allow_zero=True) for v in values)
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"{who}: {name} must be strictly increasing, got {list(values)}")
    return values
