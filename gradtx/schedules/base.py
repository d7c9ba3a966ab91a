"""Base schedules: pure functions of the step count ``t`` (0 for the first update).

Every schedule accepts a scalar or an array of counts, costs O(1) (at most
O(log n)) per count, and stays finite up to the int32 maximum. Float
arguments may be tracers (``vmap``/``grad`` over them works); lengths and
boundaries are concrete integers of any size: one beyond the int32 range
enters float arithmetic, as in optax. Integer counts are evaluated exactly;
float counts, and integers beyond int32, in float32 (see
:mod:`gradtx.schedules._util`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp

from gradtx import checks
from gradtx.core import Scalar, Schedule
from gradtx.schedules import shapes
from gradtx.schedules._util import (
    as_count,
    as_float,
    boundaries_passed,
    bounded_by_end_value,
    check_boundaries,
    clamped_progress,
    floor_divide,
    length_float,
    on_whole_counts,
    power,
)
from gradtx.tree import INT32_MAX


def constant(value: Scalar) -> Schedule:
    """:math:`v_t = v`.

    Args:
      value: the value at every count.
    """

    def schedule(count):
        return jnp.full(as_count(count).shape, value, jnp.float32)

    return schedule


def linear(init_value: Scalar, end_value: Scalar, transition_steps: int) -> Schedule:
    """Linear from ``init_value`` to ``end_value`` over ``transition_steps``, then constant.

    .. math:: v_t = v_0 + (v_1 - v_0) \\min(t / T, 1)

    Args:
      init_value: :math:`v_0`, at count 0.
      end_value: :math:`v_1`, from count :math:`T` on.
      transition_steps: :math:`T > 0`.
    """
    steps = length_float(checks.check_length("linear", "transition_steps", transition_steps))

    def schedule(count):
        progress = jnp.clip(as_float(count) / steps, 0.0, 1.0)
        return init_value + (end_value - init_value) * progress

    return schedule


def piecewise_constant(boundaries: Sequence[int], values: Sequence[Scalar]) -> Schedule:
    """``values[i]`` on ``[boundaries[i-1], boundaries[i])``: the value changes at each boundary.

    .. math:: v_t = \\text{values}[\\#\\{b \\in \\text{boundaries} : b \\le t\\}]

    Args:
      boundaries: strictly increasing non-negative counts.
      values: ``len(boundaries) + 1`` values.
    """
    bounds = check_boundaries("piecewise_constant", "boundaries", boundaries)
    if len(values) != len(bounds) + 1:
        raise ValueError(
            f"piecewise_constant: values must have len(boundaries) + 1 = {len(bounds) + 1} "
            f"entries, got {len(values)}"
        )
    passed = boundaries_passed(bounds)

    def schedule(count):
        index = passed(as_count(count))
        return jnp.asarray(jnp.stack([jnp.asarray(v, jnp.float32) for v in values]))[index]

    return schedule


def step_decay(init_value: Scalar, step_size: int, factor: Scalar, min_value: Scalar = 0.0):
    """Multiply by ``factor`` every ``step_size`` steps (MXNet's FactorScheduler, torch's StepLR).

    .. math:: v_t = \\max(v_0 \\gamma^{\\lfloor t / s \\rfloor}, v_{min})

    MXNet's ``FactorScheduler(step=250, factor=0.5)`` with base 1 is 1 at its
    250th iteration (count 249) and 0.5 at its 251st (count 250).

    Args:
      init_value: :math:`v_0`.
      step_size: :math:`s > 0`.
      factor: :math:`\\gamma` in [0, 1].
      min_value: :math:`v_{min}` (MXNet's ``stop_factor_lr``).
    """
    size = checks.check_length("step_decay", "step_size", step_size)
    checks.check_interval("step_decay", "factor", factor, "[0, 1]")

    def schedule(count):
        decays = floor_divide(as_count(count), size).astype(jnp.float32)
        return jnp.maximum(init_value * power(factor, decays), min_value)

    return schedule


def multistep_decay(init_value: Scalar, milestones: Sequence[int], factor: Scalar) -> Schedule:
    """Multiply by ``factor`` at each milestone (MXNet's MultiFactorScheduler, torch's MultiStepLR).

    .. math:: v_t = v_0 \\gamma^{\\#\\{m \\in \\text{milestones} : m \\le t\\}}

    Args:
      init_value: :math:`v_0`.
      milestones: strictly increasing counts at which the value drops.
      factor: :math:`\\gamma` in [0, 1].
    """
    passed = boundaries_passed(check_boundaries("multistep_decay", "milestones", milestones))
    checks.check_interval("multistep_decay", "factor", factor, "[0, 1]")

    def schedule(count):
        return init_value * power(factor, passed(as_count(count)).astype(jnp.float32))

    return schedule


def geometric_decay(
    init_value: Scalar,
    decay_rate: Scalar,
    transition_steps: int = 1,
    staircase: bool = False,
    end_value: Scalar | None = None,
) -> Schedule:
    """Multiply by ``decay_rate`` every ``transition_steps`` steps: a geometric sequence.

    .. math:: v_t = v_0 r^{t / T} \\quad (\\lfloor t / T \\rfloor \\text{ with staircase}),

    bounded by ``end_value`` when given (from below when :math:`r < 1`, from above when
    :math:`r > 1`). With the default :math:`T = 1` this is torch's
    ``ExponentialLR(gamma=r)``: the rate argument comes second, as torch's ``gamma``
    does. :math:`r^{t/T}` is computed from :math:`\\log r` in float64, so
    ``geometric_decay(1, 0.999)(5000)`` is :math:`0.999^{5000}` to float32
    precision, as torch's float64 arithmetic gives it. (:func:`exponential_decay`
    is optax's: ``transition_steps`` before ``decay_rate``, and optax's float32
    rounding of :math:`r`.)

    Args:
      init_value: :math:`v_0`.
      decay_rate: :math:`r > 0`; above 1 needs ``end_value`` to stay finite.
      transition_steps: :math:`T > 0`.
      staircase: decay in whole steps of :math:`T`.
      end_value: the bound, or None.

    References:
      torch: ``torch.optim.lr_scheduler.ExponentialLR``. This was gradtx's
      ``exponential_decay`` before that name took optax's meaning.

    Example:
      >>> from gradtx import schedules as S
      >>> S.geometric_decay(1.0, 0.5)(3)  # 1 * 0.5**3
      Array(0.125, dtype=float32)
    """
    steps = checks.check_length("geometric_decay", "transition_steps", transition_steps)
    checks.check_interval("geometric_decay", "decay_rate", decay_rate, checks.POSITIVE)
    if end_value is None and not callable(decay_rate) and checks.is_concrete(decay_rate):
        if float(decay_rate) > 1:
            raise ValueError(
                f"geometric_decay: decay_rate {decay_rate} > 1 grows without bound; give end_value"
            )

    def schedule(count):
        if staircase:
            exponent = floor_divide(as_count(count), steps)
        else:
            exponent = as_float(count) / length_float(steps)
        value = init_value * power(decay_rate, exponent)
        return bounded_by_end_value(value, decay_rate, end_value)

    return schedule


def polynomial_decay(
    init_value: Scalar, end_value: Scalar, power: Scalar, transition_steps: int
) -> Schedule:
    """Polynomial decay to ``end_value`` (torch's PolynomialLR, MXNet's PolyScheduler).

    .. math:: v_t = v_1 + (v_0 - v_1) (1 - \\min(t, T) / T)^p

    MXNet's ``PolyScheduler`` numbers iterations from 1: its value at iteration
    ``i`` is this schedule at count ``i``, i.e. ``lambda t: schedule(t + 1)`` in
    gradtx's 0-based counting (0.998001 at its first iteration for
    ``max_update=1000, pwr=2``).

    Args:
      init_value: :math:`v_0`.
      end_value: :math:`v_1`.
      power: :math:`p > 0`.
      transition_steps: :math:`T > 0`.
    """
    steps = checks.check_length("polynomial_decay", "transition_steps", transition_steps)
    checks.check_interval("polynomial_decay", "power", power, checks.POSITIVE)

    total = length_float(steps)

    def exact_left(count):
        if steps > INT32_MAX:  # an int32 count never reaches the end
            return total - count.astype(jnp.float32)
        return (steps - jnp.minimum(count, steps)).astype(jnp.float32)

    def schedule(count):
        # Steps left, then divided: exact 0 at the end even where XLA divides by
        # multiplying with 1/steps (1 - t/steps left ~4e-9 there, and its root 6e-5).
        left = on_whole_counts(as_count(count), exact_left, lambda t: total - jnp.minimum(t, total))
        remaining = left / total
        return end_value + (init_value - end_value) * remaining**power

    return schedule


def cosine_decay(init_value: Scalar, decay_steps: int, end_value: Scalar = 0.0) -> Schedule:
    """Cosine annealing from ``init_value`` to ``end_value`` over ``decay_steps``, then constant.

    .. math:: v_t = v_1 + (v_0 - v_1) \\frac{1 + \\cos(\\pi \\min(t, T) / T)}{2}

    Equals torch's CosineAnnealingLR (``T_max = T``, ``eta_min = v_1``) up to
    :math:`T`; torch then rises again, this holds :math:`v_1`.

    Args:
      init_value: :math:`v_0`.
      decay_steps: :math:`T > 0`.
      end_value: :math:`v_1`.
    """
    steps = checks.check_length("cosine_decay", "decay_steps", decay_steps)

    def schedule(count):
        progress = clamped_progress(as_count(count), steps)
        return end_value + (init_value - end_value) * shapes.cosine(progress)

    return schedule


def triangular(
    min_value: Scalar, max_value: Scalar, cycle_length: int, inc_fraction: float = 0.5
) -> Schedule:
    """One triangle: up from ``min_value`` to ``max_value``, back down, then ``min_value``.

    .. math:: v_t = v_{min} + (v_{max} - v_{min})\\, f(\\min(t, L) / L)

    with :math:`f` = :func:`gradtx.schedules.shapes.triangular` (rising for
    ``inc_fraction`` of the cycle). This is the MXNet tutorial's
    ``TriangularSchedule``; ``inc_fraction != 0.5`` gives the slanted triangle.

    Args:
      min_value: :math:`v_{min}`.
      max_value: :math:`v_{max}`.
      cycle_length: :math:`L > 0`.
      inc_fraction: the rising fraction of the cycle, in (0, 1).
    """
    length = checks.check_length("triangular", "cycle_length", cycle_length)
    shape = shapes.triangular(inc_fraction)

    def schedule(count):
        progress = clamped_progress(as_count(count), length)
        return min_value + (max_value - min_value) * shape(progress)

    return schedule


def inverse_sqrt(init_value: Scalar, warmup_steps: int) -> Schedule:
    """The transformer schedule: linear warm-up to ``init_value``, then :math:`1/\\sqrt{t}` decay.

    .. math:: v_t = v_0 \\min\\left(\\frac{t + 1}{W}, \\sqrt{\\frac{W}{t + 1}}\\right)

    (Vaswani et al.'s rate with its step counted from 1, scaled to peak at
    :math:`v_0` at count :math:`W - 1`.)

    Args:
      init_value: :math:`v_0`, the peak.
      warmup_steps: :math:`W > 0`.
    """
    warmup = length_float(checks.check_length("inverse_sqrt", "warmup_steps", warmup_steps))

    def schedule(count):
        step = as_count(count).astype(jnp.float32) + 1.0
        return init_value * jnp.minimum(step / warmup, jnp.sqrt(warmup / step))

    return schedule
