"""Schedule wrappers: schedules (or shapes) in, schedule out.

Warm-up, cool-down, cyclic repetition with length and magnitude decay, one
cycle, SGDR, torch's CyclicLR, and joining. All closed form or O(log t).
Lengths and boundaries may lie beyond the int32 range; counts follow
:mod:`gradtx.schedules._util` (an inner schedule gets a float count when the
wrapper got one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks
from gradtx.core import Scalar, Schedule
from gradtx.schedules import shapes
from gradtx.schedules._util import (
    as_count,
    check_boundaries,
    count_like,
    floor_divide,
    is_float,
    length_float,
    on_whole_counts,
    power,
    reached,
    remainder,
    since,
)
from gradtx.tree import INT32_MAX


def warmup(schedule: Schedule, length: int, start_value: Scalar = 0.0) -> Schedule:
    """Linear from ``start_value`` to ``schedule(0)`` over ``length`` steps, then the schedule.

    .. math:: v_t = \\begin{cases} s_0 + (f(0) - s_0)\\, t / W & t < W \\\\ f(t - W) & t \\ge W
              \\end{cases}

    Continuous at :math:`t = W`. The MXNet tutorial's ``LinearWarmUp``.

    Args:
      schedule: :math:`f`, started from its own count 0 after the warm-up.
      length: :math:`W > 0`.
      start_value: :math:`s_0`.
    """
    length = checks.check_length("warmup", "length", length)

    def wrapped(count):
        count = as_count(count)
        ramp = start_value + (schedule(jnp.zeros_like(count)) - start_value) * (
            count.astype(jnp.float32) / length_float(length)
        )
        if length > INT32_MAX and not is_float(count):  # no int32 count ends the warm-up
            return ramp
        return jnp.where(reached(count, length), schedule(since(count, length)), ramp)

    return wrapped


def cooldown(schedule: Schedule, start: int, length: int, end_value: Scalar) -> Schedule:
    """The schedule up to ``start``, then linear to ``end_value`` over ``length`` steps.

    .. math:: v_t = \\begin{cases} f(t) & t \\le S \\\\
              f(S) + (e - f(S)) (t - S) / C & S < t < S + C \\\\ e & t \\ge S + C \\end{cases}

    The MXNet tutorial's ``LinearCoolDown``.

    Args:
      schedule: :math:`f`.
      start: :math:`S \\ge 0`, the last count that follows the schedule.
      length: :math:`C > 0`.
      end_value: :math:`e`.
    """
    start = checks.check_length("cooldown", "start", start, allow_zero=True)
    length = checks.check_length("cooldown", "length", length)

    def exact_elapsed(count):
        if start > INT32_MAX:  # such a count is before the start, where this value is unused
            return count.astype(jnp.float32) - length_float(start)
        return (count - start).astype(jnp.float32)

    def wrapped(count):
        count = as_count(count)
        if start > INT32_MAX and not is_float(count):  # no int32 count passes the start
            return schedule(count)
        top = schedule(count_like(count, start))
        elapsed = on_whole_counts(count, exact_elapsed, lambda t: t - length_float(start))
        progress = jnp.clip(elapsed / length_float(length), 0.0, 1.0)
        after = reached(count, start + 1)
        return jnp.where(after, top + (end_value - top) * progress, schedule(count))

    return wrapped


def _cycle_table(first: int, length_decay: float) -> tuple[np.ndarray, np.ndarray, bool]:
    """Starts and lengths of cycles, grown with ``ceil``, until they pass the int32 range.

    Lengths either grow (by at least one per cycle once ``ceil`` moves them), or
    reach a fixed point (``ceil(L * decay) == L``): the table stops there and
    the cycles after it are closed form. The flag says which: True for the
    fixed point (the last length repeats forever), False when the last cycle
    straddles the int32 maximum.
    """
    starts, lengths = [0], [first]
    settled = False
    while starts[-1] + lengths[-1] <= INT32_MAX:
        nxt = math.ceil(lengths[-1] * length_decay)
        if nxt == lengths[-1]:
            settled = True
            break
        starts.append(starts[-1] + lengths[-1])
        lengths.append(nxt)
    return np.asarray(starts, np.int64), np.asarray(lengths, np.int64), settled


def _cycle_locator(first: int, length_decay: float):
    """A function of the count: (cycle index, offset within it, its length as float32).

    O(log cycles), exact for int32 counts. Float counts beyond int32 continue in
    float32: forever where the lengths are constant from some cycle on
    (``length_decay`` 1, or a fixed point of ``ceil``); where they keep growing,
    to the end of the cycle that crosses the int32 maximum (the table stops
    there), and later counts hold that cycle's last value.
    """
    if length_decay == 1:

        def constant_lengths(count):
            length = jnp.full(count.shape, length_float(first), jnp.float32)
            return floor_divide(count, first), remainder(count, first), length

        return constant_lengths

    starts, lengths, settled = _cycle_table(first, length_decay)
    starts_j = jnp.asarray(np.minimum(starts, INT32_MAX), jnp.int32)
    lengths_j = jnp.asarray(np.minimum(lengths, INT32_MAX), jnp.int32)
    # The divisor of the progress: the true length, also for a last cycle beyond int32.
    lengths_f = jnp.asarray(lengths.astype(np.float32))

    def exact(count):
        if first > INT32_MAX:  # every int32 count is in the first cycle
            index = floor_divide(count, first)
            return index, remainder(count, first), jnp.full(count.shape, lengths_f[0])
        index = jnp.searchsorted(starts_j, count, side="right") - 1
        offset = count - starts_j[index]
        length = lengths_j[index]
        progress_length = lengths_f[index]
        # Past the fixed point every cycle has the same length: closed form from there.
        beyond = offset // length
        return index + beyond, offset - beyond * length, progress_length

    def approximate(count):
        offset = count - float(starts[-1])
        length = length_float(int(lengths[-1]))
        last = jnp.full(count.shape, lengths_f[-1])
        if settled:  # every later cycle has the last length
            index = len(starts) - 1 + jnp.floor_divide(offset, length)
            return index, jnp.remainder(offset, length), last
        # Growing lengths: the table ends with the cycle that crosses the int32
        # maximum; later counts hold its last value.
        index = jnp.full(count.shape, len(starts) - 1, jnp.float32)
        return index, jnp.clip(offset, 0.0, length - 1.0), last

    def locate(count):
        index, offset, length = on_whole_counts(count, exact, approximate)
        return index, offset.astype(jnp.float32), length

    return locate


def cyclic(
    shape: shapes.Shape,
    cycle_length: int,
    min_value: Scalar,
    max_value: Scalar,
    length_decay: float = 1.0,
    magnitude_decay: Scalar = 1.0,
) -> Schedule:
    """Repeat a shape forever, each cycle longer or shorter and smaller than the last.

    Cycle :math:`i` has length :math:`L_i = \\lceil L_{i-1} \\rho \\rceil` (:math:`L_0` =
    ``cycle_length``) and, at offset :math:`k` into it,

    .. math:: v_t = \\mu^i \\left(v_{min} + (v_{max} - v_{min})\\, f(k / L_i)\\right)

    with :math:`f` a shape from :mod:`gradtx.schedules.shapes`. This is the MXNet
    tutorial's ``CyclicalSchedule``; ``shapes.triangular()`` gives cyclical
    learning rates, ``shapes.cosine`` SGDR. Evaluation is O(log t), exact for
    any integer ``cycle_length``.

    Args:
      shape: :math:`f`, from progress in [0, 1] to [0, 1].
      cycle_length: :math:`L_0 > 0`.
      min_value: :math:`v_{min}`.
      max_value: :math:`v_{max}`.
      length_decay: :math:`\\rho > 0`, a concrete number (2 doubles each cycle).
      magnitude_decay: :math:`\\mu` in (0, 1] (min included in the scaling).
    """
    first = checks.check_length("cyclic", "cycle_length", cycle_length)
    checks.check_interval("cyclic", "length_decay", length_decay, checks.POSITIVE)
    if not isinstance(length_decay, int | float):
        raise ValueError(f"cyclic: length_decay must be a concrete number, got {length_decay!r}")
    checks.check_interval("cyclic", "magnitude_decay", magnitude_decay, "(0, 1]")

    locate = _cycle_locator(first, float(length_decay))

    def schedule(count):
        index, offset, length = locate(as_count(count))
        value = min_value + (max_value - min_value) * shape(offset / length)
        return value * power(magnitude_decay, index)

    return schedule


def one_cycle(
    start_value: Scalar,
    max_value: Scalar,
    cycle_length: int,
    cooldown_length: int = 0,
    end_value: Scalar | None = None,
) -> Schedule:
    """One symmetric triangle from ``start_value`` up to ``max_value`` and back, then a cool-down.

    The MXNet tutorial's ``OneCycleSchedule``: :func:`triangular` over
    ``cycle_length``, then :func:`cooldown` to ``end_value`` over
    ``cooldown_length``. Without a cool-down it ends at ``start_value``.

    Args:
      start_value: the value at count 0 and at the end of the cycle.
      max_value: the peak, at ``cycle_length / 2``.
      cycle_length: :math:`> 0`.
      cooldown_length: :math:`\\ge 0`; needs ``end_value`` when positive.
      end_value: the final value; only with a cool-down.
    """
    from gradtx.schedules.base import triangular

    cooldown_length = checks.check_length("one_cycle", "cooldown_length", cooldown_length, True)
    if cooldown_length > 0 and end_value is None:
        raise ValueError("one_cycle: cooldown_length > 0 needs end_value")
    if cooldown_length == 0 and end_value is not None:
        raise ValueError("one_cycle: end_value needs cooldown_length > 0")
    cycle = triangular(start_value, max_value, cycle_length)
    if cooldown_length == 0:
        return cycle
    assert end_value is not None  # a cool-down without end_value was rejected above
    return cooldown(cycle, cycle_length, cooldown_length, end_value)


def cosine_restarts(
    init_value: Scalar,
    first_cycle: int,
    cycle_mult: int = 1,
    min_value: Scalar = 0.0,
    magnitude_decay: Scalar = 1.0,
) -> Schedule:
    """SGDR: cosine annealing from ``init_value`` to ``min_value``, restarted every cycle.

    Cycle :math:`i` lasts ``first_cycle * cycle_mult**i`` steps; with
    ``magnitude_decay`` 1 this is torch's
    ``CosineAnnealingWarmRestarts(T_0=first_cycle, T_mult=cycle_mult, eta_min=min_value)``.
    :func:`cyclic` with ``shapes.cosine``.

    Args:
      init_value: the value at each restart.
      first_cycle: :math:`T_0 > 0`.
      cycle_mult: :math:`T_{mult} \\ge 1`, an integer.
      min_value: :math:`\\eta_{min}`.
      magnitude_decay: each cycle's values are scaled by this, in (0, 1].
    """
    mult = checks.check_length("cosine_restarts", "cycle_mult", cycle_mult)
    return cyclic(shapes.cosine, first_cycle, min_value, init_value, mult, magnitude_decay)


_CLR_MODES = ("triangular", "triangular2", "exp_range")


def cyclic_lr(
    base_value: Scalar,
    max_value: Scalar,
    step_size_up: int,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: Scalar = 1.0,
) -> Schedule:
    """torch's ``CyclicLR``: triangles between ``base_value`` and ``max_value``.

    With :math:`T = u + d`, cycle :math:`c = \\lfloor 1 + t / T \\rfloor`,
    :math:`x = 1 + t / T - c` and :math:`h = x / (u / T)` rising or
    :math:`(x - 1) / (u / T - 1)` falling,

    .. math:: v_t = b + (m - b)\\, h\\, s_t, \\quad s_t = 1,\\; 2^{1 - c},\\; \\gamma^t

    for modes ``triangular``, ``triangular2`` and ``exp_range``.

    Args:
      base_value: :math:`b`.
      max_value: :math:`m`.
      step_size_up: :math:`u > 0`.
      step_size_down: :math:`d > 0`; defaults to :math:`u`.
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
      gamma: :math:`\\gamma` in (0, 1], for ``exp_range``.
    """
    up = checks.check_length("cyclic_lr", "step_size_up", step_size_up)
    down = (
        up
        if step_size_down is None
        else checks.check_length("cyclic_lr", "step_size_down", step_size_down)
    )
    if mode not in _CLR_MODES:
        raise ValueError(f"cyclic_lr: mode must be one of {_CLR_MODES}, got {mode!r}")
    checks.check_interval("cyclic_lr", "gamma", gamma, "(0, 1]")
    total = up + down
    ratio = up / total

    def torch_height(count):
        x = remainder(count, total) / length_float(total)
        return jnp.where(x <= ratio, x / ratio, (x - 1.0) / (ratio - 1.0))

    def long_cycle_height(count):
        # A cycle beyond int32: torch's x - 1 near the end of it, in float32, would be
        # all rounding; the steps left, (u - t) + d, are exact for an int32 count
        # (all in the first cycle).
        def exact(c):
            rising = c.astype(jnp.float32) / length_float(up)
            if up > INT32_MAX:  # no int32 count gets past the peak
                return rising
            falling = ((up - c).astype(jnp.float32) + length_float(down)) / length_float(down)
            return jnp.where(c <= up, rising, falling)

        def approximate(c):
            offset = remainder(c, total)
            falling = (length_float(total) - offset) / length_float(down)
            height = jnp.where(offset <= length_float(up), offset / length_float(up), falling)
            return jnp.clip(height, 0.0, 1.0)  # float32 rounding of t and T, not past the peak

        return on_whole_counts(count, exact, approximate)

    height_of = torch_height if total <= INT32_MAX else long_cycle_height

    def schedule(count):
        count = as_count(count)
        cycle = floor_divide(count, total) + 1
        height = height_of(count)
        if mode == "triangular":
            scale = 1.0
        elif mode == "triangular2":
            scale = 0.5 ** (cycle - 1).astype(jnp.float32)
        else:
            scale = power(gamma, count)
        return base_value + (max_value - base_value) * height * scale

    return schedule


def check_join(who: str, schedules: Sequence[Schedule], boundaries: Sequence[int]) -> tuple:
    """The boundaries of a join, checked: strictly increasing, one fewer than the schedules."""
    bounds = check_boundaries(who, "boundaries", boundaries)
    if len(schedules) != len(bounds) + 1:
        raise ValueError(
            f"{who}: schedules must have len(boundaries) + 1 = {len(bounds) + 1} entries, "
            f"got {len(schedules)}"
        )
    return bounds


def switch(schedules: Sequence[Schedule], bounds: Sequence[int], count, shift) -> jax.Array:
    """Each schedule from its boundary on, given the count shifted by ``shift(count, boundary)``."""
    value = schedules[0](count)
    for f, start in zip(schedules[1:], bounds, strict=True):
        if start > INT32_MAX and not is_float(count):
            break  # no int32 count reaches this boundary (nor the later ones)
        value = jnp.where(reached(count, start), f(shift(count, start)), value)
    return value


def join(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Switch schedules at the boundaries; each starts from its own count 0 (torch's SequentialLR).

    .. math:: v_t = f_i(t - b_{i-1}) \\text{ for } b_{i-1} \\le t < b_i \\quad (b_{-1} = 0)

    Args:
      schedules: :math:`f_0, \\dots, f_n`.
      boundaries: :math:`n` strictly increasing positive counts.
    """
    bounds = check_join("join", schedules, boundaries)

    def schedule(count):
        return switch(schedules, bounds, as_count(count), since)

    return schedule
