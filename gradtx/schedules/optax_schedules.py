"""optax's schedules under optax's names, positional order, keywords and defaults.

``import gradtx as optax`` ports code that builds these: each gives optax's
numbers at every count (the tests compare counts 0 to 10,000 with optax at
rtol 1e-6). They follow optax's arithmetic where its float32 rounding shows:
``1 - t/T`` rather than ``(T - t)/T``, ``cos(pi * t / T)`` in that order, and
``decay_rate ** p`` from the float32 rate. Near the end of a decay those
roundings move the value by up to 3e-4 relatively from the exact one, which
gradtx's own base schedules (:func:`~gradtx.schedules.polynomial_decay`,
:func:`~gradtx.schedules.cosine_decay`, :func:`~gradtx.schedules.geometric_decay`)
avoid; these keep optax's values instead.

As in optax, a float count keeps its fraction (``linear_schedule(0, 1, 10)(2.5)``
is 0.25); integer counts are exact int32, lengths and boundaries concrete
integers of any size (see :mod:`gradtx.schedules._util`). Where optax quietly
turns an argument that can only be a mistake into a constant or a NaN, these
raise ``ValueError`` instead; each docstring says where.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from gradtx import checks
from gradtx.core import Scalar, Schedule
from gradtx.schedules._util import (
    as_count,
    as_count_with_fraction,
    boundaries_passed,
    bounded_by_end_value,
    check_boundaries,
    clamped_progress,
    floor_divide,
    is_float,
    length_float,
    on_whole_counts,
    since,
    since_with_fraction,
)
from gradtx.schedules.base import constant, piecewise_constant
from gradtx.schedules.wrappers import check_join, switch
from gradtx.tree import INT32_MAX


def constant_schedule(value: Scalar) -> Schedule:
    """:math:`v_t = v`: the value at every count (gradtx's :func:`~gradtx.schedules.constant`).

    Args:
      value: the value.

    References:
      optax: ``optax.constant_schedule``.

    Example:
      >>> import gradtx
      >>> gradtx.constant_schedule(5.0)(100)
      Array(5., dtype=float32)
    """
    return constant(value)


def polynomial_schedule(
    init_value: Scalar,
    end_value: Scalar,
    power: Scalar,
    transition_steps: int,
    transition_begin: int = 0,
) -> Schedule:
    """Polynomial from ``init_value`` to ``end_value`` over ``transition_steps``, after a delay.

    .. math:: v_t = (v_0 - v_1) \\left(1 - \\frac{\\min(\\max(t - B, 0), T)}{T}\\right)^p + v_1

    ``transition_steps=0`` holds ``init_value`` at every count, as in optax.

    Args:
      init_value: :math:`v_0`, up to count :math:`B`.
      end_value: :math:`v_1`, from count :math:`B + T` on.
      power: :math:`p > 0`.
      transition_steps: :math:`T \\ge 0`. optax also takes a negative one (a
        constant, with a log message); gradtx raises, as it comes from a wrong
        subtraction.
      transition_begin: :math:`B \\ge 0`. optax replaces a negative one by 0 (with a
        log message); gradtx raises.

    References:
      optax: ``optax.polynomial_schedule``.

    Example:
      >>> import gradtx
      >>> schedule = gradtx.polynomial_schedule(
      ...     init_value=1.0, end_value=0.01, transition_steps=100, transition_begin=5, power=2)
      >>> print(*[f"{float(schedule(t)):.4f}" for t in [0, 5, 6, 104, 105, 110]])
      1.0000 1.0000 0.9803 0.0101 0.0100 0.0100
    """
    who = "polynomial_schedule"
    steps = checks.check_length(who, "transition_steps", transition_steps, allow_zero=True)
    begin = checks.check_length(who, "transition_begin", transition_begin, allow_zero=True)
    checks.check_interval(who, "power", power, checks.POSITIVE)
    if steps == 0:
        return constant(init_value)

    def schedule(count):
        elapsed = since_with_fraction(as_count_with_fraction(count), begin)
        # optax's 1 - t/T, not the exact (T - t)/T: its rounding near the end is its number.
        # Held at 0 from below: under jit XLA may divide by multiplying with 1/T, and T/T
        # can come out above 1 (optax's own jitted polynomial_schedule(1, 0, 0.5, 3) is NaN
        # from count 3 on).
        frac = jnp.maximum(1 - clamped_progress(elapsed, steps), 0.0)
        return (init_value - end_value) * frac**power + end_value

    return schedule


def linear_schedule(
    init_value: Scalar, end_value: Scalar, transition_steps: int, transition_begin: int = 0
) -> Schedule:
    """Linear from ``init_value`` to ``end_value`` over ``transition_steps``, after a delay.

    .. math:: v_t = v_0 + (v_1 - v_0) \\frac{\\min(\\max(t - B, 0), T)}{T}

    :func:`polynomial_schedule` with power 1 (as optax computes it).
    ``transition_steps=0`` holds ``init_value`` at every count.

    Args:
      init_value: :math:`v_0`, up to count :math:`B`.
      end_value: :math:`v_1`, from count :math:`B + T` on.
      transition_steps: :math:`T \\ge 0`; negative raises (optax: a constant).
      transition_begin: :math:`B \\ge 0`; negative raises (optax: 0).

    References:
      optax: ``optax.linear_schedule``.

    Example:
      >>> import gradtx
      >>> import jax.numpy as jnp
      >>> schedule = gradtx.linear_schedule(init_value=1.0, end_value=0.01, transition_steps=100)
      >>> print(schedule(jnp.array([0, 50, 100])))
      [1.    0.505 0.01 ]
    """
    with checks.named("linear_schedule"):
        return polynomial_schedule(init_value, end_value, 1, transition_steps, transition_begin)


def exponential_decay(
    init_value: Scalar,
    transition_steps: int,
    decay_rate: Scalar,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Scalar | None = None,
) -> Schedule:
    """``init_value`` times ``decay_rate`` per ``transition_steps``, from ``transition_begin`` on.

    .. math:: v_t = v_0\\, r^{\\max(t - B, 0) / T}
              \\quad (\\lfloor \\max(t - B, 0) / T \\rfloor \\text{ with staircase}),

    bounded by ``end_value`` when given: from below when :math:`r < 1`, from above
    otherwise. This is also Keras' ``ExponentialDecay(v0, T, r, staircase)``. The
    power is taken of the float32 :math:`r`, as optax and Keras take it (the rate's
    own rounding, raised to :math:`t/T`, is part of their numbers: ``0.999`` is off
    by 1.3e-8 relatively, ``0.999 ** 5000`` by 6e-5); torch's ``ExponentialLR`` is
    :func:`~gradtx.schedules.geometric_decay`, which has the rate second.

    A rate above 1 without ``end_value`` grows, as asked, until it overflows to inf
    (at about :math:`t = 88\\,T / \\ln r`). ``transition_steps=0`` holds
    ``init_value`` at every count, as in optax.

    Args:
      init_value: :math:`v_0`.
      transition_steps: :math:`T \\ge 0`; negative raises (optax: a constant).
      decay_rate: :math:`r > 0`. optax turns 0 into a constant ``init_value`` (with a
        log message) and a negative rate into NaN between transitions; gradtx raises.
      transition_begin: :math:`B \\ge 0`; negative raises (optax: 0).
      staircase: decay in whole transitions.
      end_value: the bound, or None.

    References:
      optax: ``optax.exponential_decay``.

    Example:
      >>> import gradtx
      >>> import jax.numpy as jnp
      >>> schedule = gradtx.exponential_decay(init_value=32.0, transition_steps=1, decay_rate=0.5)
      >>> print(schedule(jnp.arange(5)))
      [32. 16.  8.  4.  2.]
    """
    who = "exponential_decay"
    steps = checks.check_length(who, "transition_steps", transition_steps, allow_zero=True)
    begin = checks.check_length(who, "transition_begin", transition_begin, allow_zero=True)
    checks.check_interval(who, "decay_rate", decay_rate, checks.POSITIVE)
    if steps == 0:
        return constant(init_value)

    def schedule(count):
        if staircase:  # whole transitions: a count's fraction does not change them
            exponent = floor_divide(since(as_count(count), begin), steps)
        else:
            elapsed = since_with_fraction(as_count_with_fraction(count), begin)
            exponent = elapsed.astype(jnp.float32) / length_float(steps)
        value = init_value * jnp.power(decay_rate, exponent.astype(jnp.float32))
        return bounded_by_end_value(value, decay_rate, end_value)

    return schedule


def cosine_decay_schedule(
    init_value: Scalar, decay_steps: int, alpha: Scalar = 0.0, exponent: Scalar = 1.0
) -> Schedule:
    """Cosine decay from ``init_value`` to ``alpha * init_value`` over ``decay_steps``, then held.

    .. math:: v_t = v_0 \\left((1 - \\alpha)
              \\left(\\frac{1 + \\cos(\\pi \\min(t, T) / T)}{2}\\right)^p + \\alpha\\right)

    gradtx's :func:`~gradtx.schedules.cosine_decay` is the same curve (for
    :math:`p = 1`) named by its end value; this one rounds as optax does.

    Args:
      init_value: :math:`v_0`.
      decay_steps: :math:`T > 0` (optax raises too).
      alpha: :math:`\\alpha`, the final value as a fraction of ``init_value``.
      exponent: :math:`p`, applied to the cosine factor.

    References:
      optax: ``optax.cosine_decay_schedule``. Loshchilov and Hutter, "SGDR:
      Stochastic Gradient Descent with Warm Restarts", 2017.

    Example:
      >>> import gradtx
      >>> import jax.numpy as jnp
      >>> schedule = gradtx.cosine_decay_schedule(init_value=0.1, decay_steps=100, exponent=2)
      >>> print(schedule(jnp.array([0, 50, 100])))
      [0.1   0.025 0.   ]
    """
    steps = length_float(checks.check_length("cosine_decay_schedule", "decay_steps", decay_steps))

    def schedule(count):
        count = jnp.minimum(as_count_with_fraction(count).astype(jnp.float32), steps)
        # optax's order, pi * t first, then / T: its rounding near the end is its number.
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * count / steps))
        return init_value * ((1 - alpha) * cosine**exponent + alpha)

    return schedule


def _scale_table(
    who: str, boundaries_and_scales: Mapping[int, Scalar] | None
) -> tuple[tuple[int, ...], list[Scalar]]:
    """The sorted boundaries, checked, and their scales: optax's ``{step: scale}``."""
    items = sorted((boundaries_and_scales or {}).items())
    bounds = check_boundaries(who, "boundaries_and_scales", [b for b, _ in items])
    scales = [s for _, s in items]
    for scale in scales:
        checks.check_interval(who, "scales in boundaries_and_scales", scale, checks.NONNEGATIVE)
    return bounds, scales


def piecewise_constant_schedule(
    init_value: Scalar, boundaries_and_scales: Mapping[int, Scalar] | None = None
) -> Schedule:
    """``init_value`` times the scales of every boundary reached.

    .. math:: v_t = v_0 \\prod_{b \\le t} s_b

    for the entries :math:`b: s_b` of ``boundaries_and_scales``: at the boundary
    itself the value is already scaled. gradtx's
    :func:`~gradtx.schedules.piecewise_constant` with the products as its values.

    Args:
      init_value: :math:`v_0`.
      boundaries_and_scales: ``{count: scale}``, counts :math:`\\ge 0` (optax also
        takes negative ones, which scale from the start: gradtx raises), scales
        :math:`\\ge 0` (optax raises too); None or empty for a constant.

    References:
      optax: ``optax.piecewise_constant_schedule``.

    Example:
      >>> import gradtx
      >>> schedule = gradtx.piecewise_constant_schedule(1.0, {100: 0.1, 200: 0.01})
      >>> print(*[f"{float(schedule(t)):.4g}" for t in [50, 100, 150, 250]])
      1 0.1 0.1 0.001
    """
    bounds, scales = _scale_table("piecewise_constant_schedule", boundaries_and_scales)
    values = [init_value]
    for scale in scales:  # one product after the other, as optax multiplies them
        values.append(jnp.asarray(values[-1], jnp.float32) * scale)
    return piecewise_constant(bounds, values)


def _interpolate_linear(start, end, pct):
    return (end - start) * pct + start


def _interpolate_cosine(start, end, pct):
    return end + (start - end) / 2.0 * (jnp.cos(jnp.pi * pct) + 1)


_INTERPOLATIONS = {"linear": _interpolate_linear, "cosine": _interpolate_cosine}


def piecewise_interpolate_schedule(
    interpolate_type: str,
    init_value: Scalar,
    boundaries_and_scales: Mapping[int, Scalar] | None = None,
) -> Schedule:
    """From boundary to boundary, linear or cosine between the accumulated scaled values.

    With boundaries :math:`0 = b_0 \\le b_1 < \\dots < b_n` and values
    :math:`v_0` = ``init_value``, :math:`v_k = v_{k-1} s_{b_k}`, for
    :math:`b_{k-1} \\le t < b_k`

    .. math:: v_t = v_{k-1} + (v_k - v_{k-1})\\,
              g\\!\\left(\\frac{t - b_{k-1}}{b_k - b_{k-1}}\\right)

    with :math:`g(p) = p` (``"linear"``) or :math:`(1 - \\cos \\pi p)/2` (``"cosine"``),
    and :math:`v_n` from :math:`b_n` on. A boundary at 0 scales the start.

    Args:
      interpolate_type: ``"linear"`` or ``"cosine"``.
      init_value: :math:`v_0`.
      boundaries_and_scales: ``{count: scale}``, counts :math:`\\ge 0` (gradtx raises
        for a negative one, which optax takes), scales :math:`\\ge 0`; None or empty
        for a constant.

    References:
      optax: ``optax.piecewise_interpolate_schedule``.

    Example:
      >>> import gradtx
      >>> schedule = gradtx.piecewise_interpolate_schedule("linear", 1.0, {4: 0.1, 8: 0.01})
      >>> print(*[f"{float(schedule(t)):.6f}" for t in range(0, 11, 2)])
      1.000000 0.550000 0.100000 0.050500 0.001000 0.001000
    """
    who = "piecewise_interpolate_schedule"
    if interpolate_type not in _INTERPOLATIONS:
        raise ValueError(
            f"{who}: interpolate_type must be 'linear' or 'cosine', got {interpolate_type!r}"
        )
    interpolate = _INTERPOLATIONS[interpolate_type]
    bounds, scales = _scale_table(who, boundaries_and_scales)
    if not bounds:
        return constant(init_value)
    last = len(bounds) - 1
    # Piece k runs from starts[k] to bounds[k]. Its start as int32 (an int32 count only
    # reaches starts within int32) and as float32; its length exact, then rounded once
    # (optax's max(length, 1): an empty piece, after a boundary at 0, is never selected).
    starts = (0, *bounds[:-1])
    starts_int = jnp.asarray(np.minimum(starts, INT32_MAX), jnp.int32)
    starts_float = jnp.asarray([length_float(s) for s in starts], jnp.float32)
    sizes = jnp.asarray([length_float(max(b - s, 1)) for s, b in zip(starts, bounds, strict=True)])
    passed = boundaries_passed(bounds)

    def offset(count):  # t - starts[piece], exact for whole counts that fit int32
        def exact(t):
            return (t - starts_int[jnp.minimum(passed(t), last)]).astype(jnp.float32)

        return on_whole_counts(
            count, exact, lambda t: t - starts_float[jnp.minimum(passed(t), last)]
        )

    def schedule(count):
        count = as_count_with_fraction(count)
        whole = jnp.floor(count) if is_float(count) else count
        reached = passed(whole)  # boundaries reached: t is in piece `reached`, or past the last
        piece = jnp.minimum(reached, last)
        elapsed = offset(whole) + (count - whole if is_float(count) else 0.0)
        values = jnp.cumprod(
            jnp.stack([jnp.asarray(v, jnp.float32) for v in (init_value, *scales)])
        )
        between = interpolate(values[piece], values[piece + 1], elapsed / sizes[piece])
        return jnp.where(reached > last, values[-1], between)

    return schedule


def _check_pct(who: str, name: str, value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"{who}: {name} must be a Python number in [0, 1], got {value!r}")
    checks.check_interval(who, name, value, "[0, 1]")
    return float(value)


def linear_onecycle_schedule(
    transition_steps: int,
    peak_value: Scalar,
    pct_start: float = 0.3,
    pct_final: float = 0.85,
    div_factor: Scalar = 25.0,
    final_div_factor: Scalar = 1e4,
) -> Schedule:
    """Smith's one cycle, linear: up to ``peak_value``, back down, then on to a far lower value.

    With :math:`v_0` = ``peak_value / div_factor``: linear from :math:`v_0` to the peak
    until count ``int(pct_start * T)``, back to :math:`v_0` until
    ``int(pct_final * T)``, then to :math:`v_0 /` ``final_div_factor`` at :math:`T`,
    held after. :func:`piecewise_interpolate_schedule` with optax's boundaries (where
    two of them coincide, the later scale wins, as in optax's dict).

    Args:
      transition_steps: :math:`T > 0` (optax raises too).
      peak_value: the peak.
      pct_start: the rising fraction of :math:`T`, in [0, 1].
      pct_final: where the fall back to :math:`v_0` ends, in [``pct_start``, 1]
        (optax takes a smaller one and rises again: gradtx raises).
      div_factor: :math:`> 0`; :math:`v_0` = ``peak_value / div_factor``.
      final_div_factor: :math:`> 0`; the final value is :math:`v_0 /` ``final_div_factor``.

    References:
      optax: ``optax.linear_onecycle_schedule``. Smith and Topin, "Super-Convergence:
      Very Fast Training of Neural Networks Using Large Learning Rates", 2017.

    Example:
      >>> import gradtx
      >>> schedule = gradtx.linear_onecycle_schedule(10, 1000.0, 0.3, 0.7, 10.0, 100.0)
      >>> print(*[round(float(schedule(t)), 3) for t in range(12)])
      100.0 400.0 700.0 1000.0 775.0 550.0 325.0 100.0 67.0 34.0 1.0 1.0
    """
    who = "linear_onecycle_schedule"
    steps = checks.check_length(who, "transition_steps", transition_steps)
    start, final = _check_pct(who, "pct_start", pct_start), _check_pct(who, "pct_final", pct_final)
    if final < start:
        raise ValueError(f"{who}: pct_final must be >= pct_start, got {final} < {start}")
    checks.check_hyperparams(
        who,
        div_factor=(div_factor, checks.POSITIVE),
        final_div_factor=(final_div_factor, checks.POSITIVE),
    )
    with checks.named(who):
        return piecewise_interpolate_schedule(
            "linear",
            peak_value / div_factor,
            {
                int(start * steps): div_factor,
                int(final * steps): 1.0 / div_factor,
                steps: 1.0 / final_div_factor,
            },
        )


def cosine_onecycle_schedule(
    transition_steps: int,
    peak_value: Scalar,
    pct_start: float = 0.3,
    div_factor: Scalar = 25.0,
    final_div_factor: Scalar = 1e4,
) -> Schedule:
    """Smith's one cycle, cosine: up to ``peak_value``, then down to a far lower value.

    With :math:`v_0` = ``peak_value / div_factor``: a half cosine from :math:`v_0` up
    to the peak until count ``int(pct_start * T)``, then one down to
    :math:`v_0 /` ``final_div_factor`` at :math:`T`, held after.
    :func:`piecewise_interpolate_schedule` with optax's boundaries.

    Args:
      transition_steps: :math:`T > 0` (optax raises too).
      peak_value: the peak.
      pct_start: the rising fraction of :math:`T`, in [0, 1].
      div_factor: :math:`> 0`; :math:`v_0` = ``peak_value / div_factor``.
      final_div_factor: :math:`> 0`; the final value is :math:`v_0 /` ``final_div_factor``.

    References:
      optax: ``optax.cosine_onecycle_schedule``. Smith and Topin, "Super-Convergence:
      Very Fast Training of Neural Networks Using Large Learning Rates", 2017.

    Example:
      >>> import gradtx
      >>> schedule = gradtx.cosine_onecycle_schedule(5, 1000.0, 0.4, 10.0, 100.0)
      >>> print(*[round(float(schedule(t)), 2) for t in range(7)])
      100.0 550.0 1000.0 750.25 250.75 1.0 1.0
    """
    who = "cosine_onecycle_schedule"
    steps = checks.check_length(who, "transition_steps", transition_steps)
    start = _check_pct(who, "pct_start", pct_start)
    checks.check_hyperparams(
        who,
        div_factor=(div_factor, checks.POSITIVE),
        final_div_factor=(final_div_factor, checks.POSITIVE),
    )
    with checks.named(who):
        return piecewise_interpolate_schedule(
            "cosine",
            peak_value / div_factor,
            {int(start * steps): div_factor, steps: 1.0 / (div_factor * final_div_factor)},
        )


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Switch schedules at the boundaries; each gets the count since its boundary.

    .. math:: v_t = f_i(t - b_{i-1}) \\text{ for } b_{i-1} \\le t < b_i \\quad (b_{-1} = 0)

    gradtx's :func:`~gradtx.schedules.join`, passing a float count's fraction on as
    optax does.

    Args:
      schedules: :math:`f_0, \\dots, f_n`.
      boundaries: :math:`n` strictly increasing counts :math:`\\ge 0`. optax takes
        any, and silently drops schedules beyond ``len(boundaries) + 1``; gradtx
        raises for those and for unsorted or repeated boundaries.

    References:
      optax: ``optax.join_schedules``.

    Example:
      >>> import gradtx
      >>> schedule = gradtx.join_schedules(
      ...     [gradtx.constant_schedule(1.0), gradtx.linear_schedule(1.0, 0.0, 10)], [5])
      >>> print(*[float(schedule(t)) for t in [0, 4, 5, 10, 15]])
      1.0 1.0 1.0 0.5 0.0
    """
    bounds = check_join("join_schedules", schedules, boundaries)

    def schedule(count):
        return switch(schedules, bounds, as_count_with_fraction(count), since_with_fraction)

    return schedule


def warmup_constant_schedule(init_value: Scalar, peak_value: Scalar, warmup_steps: int) -> Schedule:
    """Linear from ``init_value`` to ``peak_value`` over ``warmup_steps``, then ``peak_value``.

    .. math:: v_t = v_0 + (v_p - v_0) \\min(t / W, 1)

    :func:`linear_schedule` ``(init_value, peak_value, warmup_steps)``.

    Args:
      init_value: :math:`v_0`, at count 0.
      peak_value: :math:`v_p`, from count :math:`W` on.
      warmup_steps: :math:`W > 0`. optax takes 0 and then holds ``init_value``
        forever, never reaching ``peak_value``; gradtx raises (without a warm-up,
        use ``constant_schedule(peak_value)``).

    References:
      optax: ``optax.warmup_constant_schedule``.

    Example:
      >>> import gradtx
      >>> schedule = gradtx.warmup_constant_schedule(0.0, 1.0, 4)
      >>> print(*[float(schedule(t)) for t in range(6)])
      0.0 0.25 0.5 0.75 1.0 1.0
    """
    who = "warmup_constant_schedule"
    steps = checks.check_length(who, "warmup_steps", warmup_steps)
    return linear_schedule(init_value, peak_value, steps)


def _end_over_peak(end_value: Scalar, peak_value: Scalar) -> Any:
    """optax's ``alpha``: 0 for a zero peak, else ``end / peak``; tracers choose at run time."""
    if isinstance(peak_value, int | float) and isinstance(end_value, int | float):
        return 0.0 if peak_value == 0.0 else end_value / peak_value  # Python floats, as optax
    zero = jnp.asarray(peak_value) == 0
    return jnp.where(zero, 0.0, end_value / jnp.where(zero, 1.0, peak_value))


def warmup_cosine_decay_schedule(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: int,
    decay_steps: int,
    end_value: Scalar = 0.0,
    exponent: Scalar = 1.0,
) -> Schedule:
    """Linear warm-up to ``peak_value``, then cosine decay to ``end_value`` at ``decay_steps``.

    .. math:: v_t = \\begin{cases} v_0 + (v_p - v_0)\\, t / W & t < W \\\\
              v_p \\left((1 - \\alpha) c_{t - W}^{\\,p} + \\alpha\\right) & t \\ge W
              \\end{cases}

    with :math:`\\alpha = v_1 / v_p` (0 for a zero peak) and :math:`c_s` the cosine
    factor of :func:`cosine_decay_schedule` over :math:`D - W` steps: optax's
    :func:`join_schedules` of :func:`linear_schedule` and
    :func:`cosine_decay_schedule`. ``decay_steps`` counts the warm-up too.

    Args:
      init_value: :math:`v_0`, at count 0.
      peak_value: :math:`v_p`, at count :math:`W`.
      warmup_steps: :math:`W \\ge 0` (0: no warm-up, as in optax).
      decay_steps: :math:`D > W`, the count where :math:`v_1` is reached (optax
        raises too).
      end_value: :math:`v_1`.
      exponent: :math:`p`, applied to the cosine factor.

    References:
      optax: ``optax.warmup_cosine_decay_schedule``. Loshchilov and Hutter, "SGDR:
      Stochastic Gradient Descent with Warm Restarts", 2017.

    Example:
      >>> import gradtx
      >>> schedule = gradtx.warmup_cosine_decay_schedule(0.0, 1.0, 100, 1000, end_value=0.1)
      >>> print(*[round(float(schedule(t)), 4) for t in [0, 50, 100, 550, 1000]])
      0.0 0.5 1.0 0.55 0.1
    """
    who = "warmup_cosine_decay_schedule"
    warmup = checks.check_length(who, "warmup_steps", warmup_steps, allow_zero=True)
    decay = checks.check_length(who, "decay_steps", decay_steps)
    if decay <= warmup:
        raise ValueError(
            f"{who}: decay_steps must be > warmup_steps (it counts the warm-up too), "
            f"got decay_steps={decay}, warmup_steps={warmup}"
        )
    alpha = _end_over_peak(end_value, peak_value)
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, warmup),
            cosine_decay_schedule(peak_value, decay - warmup, alpha, exponent),
        ],
        [warmup],
    )


def warmup_exponential_decay_schedule(
    init_value: Scalar,
    peak_value: Scalar,
    warmup_steps: int,
    transition_steps: int,
    decay_rate: Scalar,
    transition_begin: int = 0,
    staircase: bool = False,
    end_value: Scalar | None = None,
) -> Schedule:
    """Linear warm-up to ``peak_value``, then :func:`exponential_decay` from it.

    .. math:: v_t = \\begin{cases} v_0 + (v_p - v_0)\\, t / W & t < W \\\\
              e(t - W) & t \\ge W \\end{cases}

    with :math:`e` = ``exponential_decay(peak_value, transition_steps, decay_rate,
    transition_begin, staircase, end_value)``: optax's :func:`join_schedules` of the two.

    Args:
      init_value: :math:`v_0`, at count 0.
      peak_value: :math:`v_p`, at count :math:`W`.
      warmup_steps: :math:`W \\ge 0` (0: no warm-up, as in optax).
      transition_steps: as in :func:`exponential_decay`.
      decay_rate: as in :func:`exponential_decay`.
      transition_begin: counted from the end of the warm-up.
      staircase: as in :func:`exponential_decay`.
      end_value: as in :func:`exponential_decay`.

    References:
      optax: ``optax.warmup_exponential_decay_schedule``.

    Example:
      >>> import gradtx
      >>> schedule = gradtx.warmup_exponential_decay_schedule(0.0, 1.0, 2, 1, 0.5)
      >>> print(*[float(schedule(t)) for t in range(6)])
      0.0 0.5 1.0 0.5 0.25 0.125
    """
    who = "warmup_exponential_decay_schedule"
    warmup = checks.check_length(who, "warmup_steps", warmup_steps, allow_zero=True)
    with checks.named(who):
        decayed = exponential_decay(
            peak_value, transition_steps, decay_rate, transition_begin, staircase, end_value
        )
    return join_schedules([linear_schedule(init_value, peak_value, warmup), decayed], [warmup])


def sgdr_schedule(cosine_kwargs: Iterable[Mapping[str, Any]]) -> Schedule:
    """SGDR: warm-up-and-cosine cycles one after the other, each its own.

    Cycle :math:`i` is ``warmup_cosine_decay_schedule(**cosine_kwargs[i])`` and lasts
    its ``decay_steps``; the last one holds its end value after it. optax's
    :func:`join_schedules` of the cycles.

    Args:
      cosine_kwargs: one dict of :func:`warmup_cosine_decay_schedule`'s keyword
        arguments per cycle (``init_value``, ``peak_value``, ``warmup_steps``,
        ``decay_steps``, optionally ``end_value`` and ``exponent``); at least one
        (optax builds a schedule that fails when called).

    References:
      optax: ``optax.sgdr_schedule``. Loshchilov and Hutter, "SGDR: Stochastic
      Gradient Descent with Warm Restarts", 2017.

    Example:
      >>> import gradtx
      >>> cycle = dict(init_value=0.0, peak_value=1.0, warmup_steps=2, decay_steps=4)
      >>> schedule = gradtx.sgdr_schedule([cycle, dict(cycle, peak_value=0.5)])
      >>> print(*[round(float(schedule(t)), 3) for t in range(9)])
      0.0 0.5 1.0 0.5 0.0 0.25 0.5 0.25 0.0
    """
    who = "sgdr_schedule"
    cycles = [dict(kwargs) for kwargs in cosine_kwargs]
    if not cycles:
        raise ValueError(f"{who}: cosine_kwargs must hold at least one cycle's arguments")
    schedules, boundaries, end = [], [], 0
    for kwargs in cycles:
        if "decay_steps" not in kwargs:
            raise ValueError(f"{who}: each entry of cosine_kwargs needs decay_steps, got {kwargs}")
        with checks.named(who):
            schedules.append(warmup_cosine_decay_schedule(**kwargs))
        end += checks.check_length(who, "decay_steps", kwargs["decay_steps"])
        boundaries.append(end)
    return join_schedules(schedules, boundaries[:-1])


__all__ = [
    "constant_schedule",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "exponential_decay",
    "join_schedules",
    "linear_onecycle_schedule",
    "linear_schedule",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "polynomial_schedule",
    "sgdr_schedule",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]
