"""Argument checks and count handling shared by the schedules.

Counts. An integer count (an integer array, or a Python or NumPy integer within
the int32 range) is evaluated in exact int32 arithmetic, as an optimizer state's
int32 count is. A float count, and an integer beyond the int32 range such as
``3 * 10**9``, is truncated to a whole number and evaluated in float32
arithmetic, as optax evaluates every count. It gives the int32 count's value
below 2**24, where float32 holds every integer; up to the int32 maximum the
floor divisions, remainders and boundary tests stay exact (a wrapper's shifted
count ``t - s`` is rounded to float32 before its inner schedule sees it), and
beyond that range the result has float32 precision. optax's schedules under
optax's names keep a float count's fraction instead, as optax does
(:func:`as_count_with_fraction`, :func:`since_with_fraction`).

Lengths. Lengths and boundaries are concrete Python integers of any size. One
beyond the int32 range is never reached by an int32 count; it enters the
arithmetic as a float (``t / T`` with ``T = 1e10`` is a float32 division), never
as an int32 constant, which could not hold it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks
from gradtx.tree import INT32_MAX

INT32_MIN = int(np.iinfo(np.int32).min)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_TWO_31 = 2.0**31  # float32 counts below this in magnitude convert to int32 exactly


def _widen(count: Any) -> Any:
    """Concrete integers that int32 cannot hold, as float64 NumPy values.

    ``jnp.asarray`` raises OverflowError on a Python int beyond int32 and silently
    wraps a NumPy int64 one; as floats they take the float32 path instead.
    """
    if isinstance(count, bool):
        return count
    if isinstance(count, int):
        return count if INT32_MIN <= count <= INT32_MAX else float(count)
    if isinstance(count, list | tuple) and all(
        isinstance(c, int | float) and not isinstance(c, bool) for c in count
    ):
        count = np.asarray(count)
    if isinstance(count, np.ndarray | np.generic) and np.issubdtype(count.dtype, np.integer):
        if count.size and (count.min() < INT32_MIN or count.max() > INT32_MAX):
            return np.asarray(count, np.float64)
    return count


def as_count(count: Any) -> jax.Array:
    """The step count as an array: int32 for an integer count that fits int32, else whole float32.

    See the module docstring for what each dtype means.
    """
    count = jnp.asarray(_widen(count))
    if jnp.issubdtype(count.dtype, jnp.floating):
        # Whole numbers, as the int32 conversion of a float count has always truncated.
        return jnp.trunc(count.astype(jnp.float32))
    return count.astype(jnp.int32)


def as_count_with_fraction(count: Any) -> jax.Array:
    """The step count as an array, int32 as :func:`as_count` gives it, or float32 fractions kept.

    optax's schedules interpolate between counts (``linear_schedule(0, 1, 10)(2.5)``
    is 0.25); the schedules under optax's names do the same. Integer counts are
    exact int32, as everywhere.
    """
    count = jnp.asarray(_widen(count))
    if jnp.issubdtype(count.dtype, jnp.floating):
        return count.astype(jnp.float32)
    return count.astype(jnp.int32)


def as_float(count: Any) -> jax.Array:
    """The count as float32, fractions kept (linear and exponential interpolate between counts)."""
    return jnp.asarray(_widen(count)).astype(jnp.float32)


def is_float(count: jax.Array) -> bool:
    """Whether ``as_count`` gave the float32 path (a static property of the count's dtype)."""
    return bool(jnp.issubdtype(count.dtype, jnp.floating))


def length_float(length: int) -> float:
    """A length as a Python float for float32 arithmetic (infinite beyond the float32 range)."""
    return float(length) if length <= _FLOAT32_MAX else math.inf


def float32_at_least(value: int) -> np.float32:
    """The smallest float32 that is ``>= value``.

    A whole float32 count ``t`` has ``t >= value`` exactly when ``t >=`` this, so
    boundary tests stay exact although ``value`` itself may not be a float32.
    """
    if value > _FLOAT32_MAX:
        return np.float32(np.inf)
    nearest = np.float32(value)
    if int(nearest) < value:
        nearest = np.nextafter(nearest, np.float32(np.inf))
    return nearest


def on_whole_counts(count: jax.Array, exact: Callable, approximate: Callable) -> Any:
    """``exact`` (int32 arithmetic) on the counts that fit int32, ``approximate`` (float32) beyond.

    An int32 count goes to ``exact`` alone. For a float count both run and the
    result is float32; ``exact`` then gives what the count converted to int32
    would have given, and ``approximate`` covers the counts int32 cannot hold.
    Both may return a tuple of arrays.
    """
    if not is_float(count):
        return exact(count)
    fits = jnp.abs(count) < _TWO_31
    as_int = jnp.where(fits, count, 0.0).astype(jnp.int32)
    return jax.tree.map(
        lambda e, a: jnp.where(fits, e.astype(jnp.float32), a), exact(as_int), approximate(count)
    )


def clamped_progress(count: jax.Array, length: int) -> jax.Array:
    """:math:`\\min(t, T) / T` in float32, for a count from ``as_count`` and a length of any size.

    Clamped in float32: rounding is monotonic, so this equals clamping the int32
    count first and converting, and it needs no int32 constant for :math:`T`.
    """
    total = length_float(length)
    return jnp.minimum(count.astype(jnp.float32), total) / total


def floor_divide(count: jax.Array, length: int) -> jax.Array:
    """:math:`\\lfloor t / n \\rfloor` for a length :math:`n > 0` of any size, count dtype."""

    def exact(c):
        if length > INT32_MAX:  # |c| < n: the quotient is 0 or, for a negative count, -1
            return jnp.where(c < 0, -1, 0).astype(jnp.int32)
        return c // length

    # jnp.floor_divide on floats goes through the exact remainder, so multiples of
    # n give whole quotients even where XLA divides by multiplying with 1/n.
    return on_whole_counts(count, exact, lambda c: jnp.floor_divide(c, length_float(length)))


def remainder(count: jax.Array, length: int) -> jax.Array:
    """:math:`t \\bmod n` in [0, n) as float32, for a length :math:`n > 0` of any size."""

    def exact(c):
        if length > INT32_MAX:  # |c| < n
            c = c.astype(jnp.float32)
            return jnp.where(c < 0, c + length_float(length), c)
        return (c % length).astype(jnp.float32)

    return on_whole_counts(count, exact, lambda c: jnp.remainder(c, length_float(length)))


def reached(count: jax.Array, value: int) -> jax.Array:
    """``count >= value``, exact for whole counts of either dtype and a ``value`` of any size."""
    if is_float(count):
        return count >= float32_at_least(value)
    if value > INT32_MAX:
        return jnp.zeros(count.shape, bool)
    return count >= value


def since(count: jax.Array, start: int) -> jax.Array:
    """:math:`\\max(t - s, 0)`: the count of a schedule started at :math:`s \\ge 0`, same dtype."""

    def exact(c):
        if start > INT32_MAX:  # not started at any int32 count
            return jnp.zeros_like(c)
        return jnp.maximum(c - start, 0)

    return on_whole_counts(
        count, exact, lambda c: jnp.maximum(c - length_float(start), 0.0).astype(jnp.float32)
    )


def since_with_fraction(count: jax.Array, start: int) -> jax.Array:
    """:func:`since` for a count from :func:`as_count_with_fraction`: a float keeps its fraction.

    The whole part is shifted exactly, as :func:`since` shifts it; the fraction is
    added back once the whole count has reached ``start`` (before that the result is 0).
    """
    if not is_float(count):
        return since(count, start)
    whole = jnp.floor(count)
    return since(whole, start) + jnp.where(reached(whole, start), count - whole, 0.0)


def bounded_by_end_value(value: jax.Array, decay_rate: Any, end_value: Any) -> jax.Array:
    """An exponential schedule's value bounded by ``end_value``: from below when it decays.

    From below when ``decay_rate < 1``, from above otherwise (a tracer rate chooses
    at run time); ``value`` itself when ``end_value`` is None.
    """
    if end_value is None:
        return value
    return jnp.where(decay_rate < 1, jnp.maximum(value, end_value), jnp.minimum(value, end_value))


def count_like(count: jax.Array, value: int) -> jax.Array:
    """The count ``value`` in ``count``'s shape: int32 where it fits (exact), else float32."""
    if value <= INT32_MAX:
        return jnp.full(count.shape, value, jnp.int32)
    return jnp.full(count.shape, length_float(value), jnp.float32)


def boundaries_passed(boundaries: Sequence[int]) -> Callable[[jax.Array], jax.Array]:
    """A function of the count: :math:`\\#\\{b : b \\le t\\}` for sorted non-negative boundaries.

    Boundaries beyond int32 are never passed by an int32 count and are left out
    of its table; float counts compare against each boundary rounded up to a
    float32, which keeps the comparison exact.
    """
    reachable = jnp.asarray([b for b in boundaries if b <= INT32_MAX], jnp.int32)
    rounded_up = jnp.asarray([float32_at_least(b) for b in boundaries], jnp.float32)

    def passed(count: jax.Array) -> jax.Array:
        table = rounded_up if is_float(count) else reachable
        return jnp.searchsorted(table, count, side="right")

    return passed


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


def check_boundaries(who: str, name: str, values: Any) -> tuple[int, ...]:
    """Non-negative, strictly increasing integer step counts."""
    values = tuple(checks.check_length(who, name, v, allow_zero=True) for v in values)
    if any(b <= a for a, b in zip(values, values[1:], strict=False)):
        raise ValueError(f"{who}: {name} must be strictly increasing, got {list(values)}")
    return values
