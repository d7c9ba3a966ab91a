"""torch.optim's learning-rate schedulers as gradtx schedules, with torch's names and defaults.

Each function takes the base learning rate first (torch reads it from the
optimizer: ``StepLR(opt, step_size)`` on ``SGD(params, lr=0.1)`` is
``step_lr(0.1, step_size)``), then torch's arguments with torch's names and
defaults, and returns a schedule ``count -> lr``: a pure function of the
update count (0 for the first update), jit- and vmap-able, evaluated in O(1)
per count (``multiplicative_lr`` excepted, see there).

Counts and epochs. torch's ``last_epoch`` is the number of ``scheduler.step()``
calls made. A scheduler stepped once per update has ``last_epoch = count``
(the default ``steps_per_epoch=1``); one stepped once per epoch of ``k``
updates takes ``steps_per_epoch=k`` and has ``last_epoch = count // k``, so it
changes only at epoch boundaries, as torch's loop does. ``cyclic_lr`` and
``one_cycle_lr`` are stepped per batch in torch and have no such option
(``one_cycle_lr``'s own ``steps_per_epoch`` is torch's: it sizes the cycle).
Negative counts evaluate as 0, counts beyond the int32 maximum as the int32
maximum (gradtx's step counters saturate there).

Numbers. torch runs its recursive ("chainable") updates in Python floats;
these are the closed forms those recursions compute, written so that float32
keeps full relative precision (``(1 + cos(pi p)) / 2`` as ``sin^2`` near the
cosine's minimum, linear blends of non-negative terms, exact integer phases).
The result is float32, or float64 inside ``with jax.enable_x64(True):``.

Momentum. ``cyclic_lr`` and ``one_cycle_lr`` also set the optimizer's momentum
(or Adam's ``beta1``) when ``cycle_momentum`` is true. Every function here
returns a :class:`TorchSchedule`: it *is* the learning-rate schedule (call it
with a count, pass it wherever a learning rate goes), and its ``momentum``
attribute is the momentum schedule (None where torch leaves momentum alone).
One call, one set of arguments, both schedules, and the rate stays a drop-in
schedule: ``s = cyclic_lr(0.01, 0.1); sgd(s, momentum=s.momentum)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks
from gradtx.core import GradientTransformation, Scalar
from gradtx.schedules._util import _widen
from gradtx.tree import INT32_MAX, safe_increment

__all__ = [
    "ReduceLROnPlateauState",
    "TorchSchedule",
    "chained_scheduler",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "exponential_lr",
    "lambda_lr",
    "linear_lr",
    "multi_step_lr",
    "multiplicative_lr",
    "one_cycle_lr",
    "polynomial_lr",
    "reduce_lr_on_plateau",
    "sequential_lr",
    "step_lr",
]

_FLOAT32_BELOW_2_31 = float(np.nextafter(np.float32(2.0**31), np.float32(0)))


class TorchSchedule:
    """A learning-rate schedule ``count -> lr`` built by :mod:`gradtx.torch_optim`.

    Calling it gives the learning rate at the count (a scalar or an array of
    counts). Attributes:

    - ``momentum``: the schedule torch's scheduler gives the momentum (SGD's
      ``momentum``, Adam's ``betas[0]``), or None where it leaves momentum alone.
    - ``base_lr``: the optimizer's learning rate the schedule was built with.
    - ``multiplier``: for the schedulers torch chains multiplicatively (each
      ``step()`` multiplies the current rate by a factor), the schedule of the
      rate divided by ``base_lr``; None otherwise. :func:`chained_scheduler`
      multiplies these.
    - ``lr_lambda``: :func:`multiplicative_lr`'s factor function, None for the
      others: :func:`sequential_lr` continues it from the rate it takes over.
    """

    __slots__ = ("__weakref__", "_fn", "base_lr", "lr_lambda", "momentum", "multiplier", "name")

    def __init__(self, fn, base_lr, name, *, momentum=None, multiplier=None, lr_lambda=None):
        self._fn = fn
        self.base_lr = base_lr
        self.name = name
        self.momentum = momentum
        self.multiplier = multiplier
        self.lr_lambda = lr_lambda

    def __call__(self, count: Any) -> jax.Array:
        return self._fn(count)

    def __repr__(self) -> str:
        return f"<gradtx.torch_optim.{self.name} schedule>"


# ---------------------------------------------------------------------------- helpers


def _dtype() -> Any:
    """float64 inside ``jax.enable_x64``, else float32 (decided when the schedule is traced)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _count(count: Any) -> jax.Array:
    """The count as int32, clipped to [0, int32 max]; a float count is truncated."""
    count = jnp.asarray(_widen(count))
    if jnp.issubdtype(count.dtype, jnp.floating):
        count = jnp.clip(jnp.trunc(count), 0.0, _FLOAT32_BELOW_2_31)
        return count.astype(jnp.int32)
    if count.dtype == jnp.bool_:
        count = count.astype(jnp.int32)
    return jnp.clip(count, 0, INT32_MAX).astype(jnp.int32)


def _epoch(count: Any, steps_per_epoch: int) -> jax.Array:
    """torch's ``last_epoch``: completed ``scheduler.step()`` calls before this update."""
    count = _count(count)
    return count if steps_per_epoch == 1 else count // steps_per_epoch


def _steps_per_epoch(who: str, steps_per_epoch: Any) -> int:
    return checks.check_length(who, "steps_per_epoch", steps_per_epoch, at_most=INT32_MAX)


def _int(who: str, name: str, value: Any, *, low: int, torch_text: str | None = None) -> int:
    """A concrete Python integer ``>= low`` (bools rejected), else ValueError naming ``name``."""
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= low
    if not ok:
        text = torch_text or f"{name} must be an integer >= {low}"
        raise ValueError(f"{who}: {text}, got {value!r}")
    return int(value)


def _pow(base: Any, exponent: jax.Array, dtype: Any) -> jax.Array:
    """``base ** exponent`` for a whole exponent, to float32 (float64) precision.

    In float32 a concrete ``base`` is split into its float32 rounding ``b`` and the
    factor :math:`1 + \\delta` that rounding lost: :math:`b^k (1 + \\delta)^k`, the
    first from XLA's correctly rounded ``pow`` (exact for ``0.5 ** k``), the second as
    :math:`\\exp(k \\log(1 + \\delta))` (``0.999 ** 3000`` is then off by 6e-8, not the
    1e-4 of the float32 base raised to the power).
    """
    exponent = exponent.astype(dtype)
    if dtype != jnp.float32 or not isinstance(base, int | float | np.floating):
        return jnp.asarray(base, dtype) ** exponent
    rounded = np.float32(base)
    value = jnp.asarray(rounded) ** exponent
    if base != 0 and float(rounded) != float(base) and math.isfinite(float(rounded)):
        value = value * jnp.exp(exponent * np.float32(math.log1p(float(base) / float(rounded) - 1)))
    return value


def _half_cosine(a: jax.Array, b: jax.Array, length: Any) -> tuple[jax.Array, jax.Array]:
    """:math:`w = (1 + \\cos(\\pi a / L)) / 2` and :math:`1 - w`, for :math:`a + b = L`.

    :math:`w = \\cos^2(\\pi a / 2L) = \\sin^2(\\pi b / 2L)` and
    :math:`1 - w = \\sin^2(\\pi a / 2L) = \\cos^2(\\pi b / 2L)`: from the nearer end,
    both keep full relative precision where :math:`1 \\pm \\cos` would cancel, so
    :math:`x w + y (1 - w)` is accurate to a few ulps for :math:`x, y \\ge 0`.
    """
    scale = math.pi / (2.0 * length) if not isinstance(length, jax.Array) else jnp.pi / (2 * length)
    near_start = jnp.abs(a) <= jnp.abs(b)
    angle = jnp.where(near_start, a, b) * scale
    c, s = jnp.cos(angle), jnp.sin(angle)
    c, s = c * c, s * s
    middle = a == b  # cos(pi / 4) ** 2 is 0.49999997 in float32
    w = jnp.where(middle, 0.5, jnp.where(near_start, c, s))
    return w, jnp.where(middle, 0.5, jnp.where(near_start, s, c))


def _split(value: float) -> tuple[int, float]:
    """``value`` as an integer part and a fraction in [0, 1)."""
    whole = math.floor(value)
    return int(whole), value - whole


def _from_factor(who, lr, factor_fn, steps_per_epoch, *, chainable=True) -> TorchSchedule:
    """A schedule ``lr * factor(epoch)``; ``factor_fn(epoch, dtype)`` is the multiplier."""

    def multiplier(count):
        dtype = _dtype()
        return factor_fn(_epoch(count, steps_per_epoch), dtype).astype(dtype)

    def schedule(count):
        return jnp.asarray(lr, _dtype()) * multiplier(count)

    return TorchSchedule(schedule, lr, who, multiplier=multiplier if chainable else None)


# ---------------------------------------------------------------------------- schedulers


def step_lr(lr: Scalar, step_size: int, gamma: Scalar = 0.1, *, steps_per_epoch: int = 1):
    """Decay the rate by ``gamma`` every ``step_size`` epochs (torch's StepLR).

    .. math:: \\eta_e = \\eta_0 \\gamma^{\\lfloor e / s \\rfloor}

    with :math:`e` torch's ``last_epoch`` (``count // steps_per_epoch``).

    Args:
      lr: :math:`\\eta_0`, the optimizer's learning rate.
      step_size: :math:`s > 0`, the period of the decay in epochs.
      gamma: :math:`\\gamma`, the multiplicative factor.
      steps_per_epoch: updates per ``scheduler.step()`` (keyword-only, gradtx's).

    References:
      ``torch.optim.lr_scheduler.StepLR``.

    Example:
      >>> from gradtx.torch_optim.schedulers import step_lr
      >>> step_lr(0.1, step_size=30)([0, 29, 30, 60])
      Array([0.1  , 0.1  , 0.01 , 0.001], dtype=float32)
    """
    who = "step_lr"
    size = _int(who, "step_size", step_size, low=1, torch_text="step_size must be a positive int")
    spe = _steps_per_epoch(who, steps_per_epoch)
    return _from_factor(who, lr, lambda e, dt: _pow(gamma, e // size, dt), spe)


def multi_step_lr(
    lr: Scalar, milestones: Sequence[int], gamma: Scalar = 0.1, *, steps_per_epoch: int = 1
):
    """Decay the rate by ``gamma`` at each milestone epoch (torch's MultiStepLR).

    .. math:: \\eta_e = \\eta_0 \\gamma^{\\#\\{m \\in \\text{milestones} : 0 \\le m \\le e\\}}

    counted with multiplicity, as torch's ``Counter`` does (a milestone given
    twice decays by :math:`\\gamma^2`). Milestones need not be sorted; negative
    ones are never reached by torch's stepping and are ignored.

    Args:
      lr: :math:`\\eta_0`, the optimizer's learning rate.
      milestones: epoch indices (integers).
      gamma: :math:`\\gamma`, the multiplicative factor.
      steps_per_epoch: updates per ``scheduler.step()`` (keyword-only, gradtx's).

    References:
      ``torch.optim.lr_scheduler.MultiStepLR``.

    Example:
      >>> from gradtx.torch_optim.schedulers import multi_step_lr
      >>> multi_step_lr(1.0, [2, 4], gamma=0.5)([0, 2, 3, 4])
      Array([1.  , 0.5 , 0.5 , 0.25], dtype=float32)
    """
    who = "multi_step_lr"
    if isinstance(milestones, str | bytes) or not isinstance(milestones, Sequence | set):
        raise ValueError(f"{who}: milestones must be a list of integers, got {milestones!r}")
    values = sorted(_int(who, "milestones", m, low=-(2**63)) for m in milestones)
    table = np.asarray([m for m in values if 0 <= m <= INT32_MAX], np.int32)
    spe = _steps_per_epoch(who, steps_per_epoch)

    def factor(e, dt):
        passed = jnp.searchsorted(jnp.asarray(table), e, side="right")
        return _pow(gamma, passed, dt)

    return _from_factor(who, lr, factor, spe)


def constant_lr(
    lr: Scalar, factor: Scalar = 1.0 / 3, total_iters: int = 5, *, steps_per_epoch: int = 1
):
    """Scale the rate by ``factor`` until epoch ``total_iters`` (torch's ConstantLR).

    .. math:: \\eta_e = \\eta_0 \\cdot (f \\text{ if } e < T \\text{ else } 1)

    As torch's stepping does: the factor is applied at epoch 0 and undone at
    epoch :math:`T`, so with :math:`T \\le 0` it is never undone (torch's
    closed form, used only by ``step(epoch)``, would give :math:`\\eta_0`).

    Args:
      lr: :math:`\\eta_0`, the optimizer's learning rate.
      factor: :math:`f` in [0, 1].
      total_iters: :math:`T`, the epoch at which the factor is undone.
      steps_per_epoch: updates per ``scheduler.step()`` (keyword-only, gradtx's).

    References:
      ``torch.optim.lr_scheduler.ConstantLR``.

    Example:
      >>> from gradtx.torch_optim.schedulers import constant_lr
      >>> constant_lr(0.3, factor=0.5, total_iters=2)([0, 1, 2])
      Array([0.15, 0.15, 0.3 ], dtype=float32)
    """
    who = "constant_lr"
    if checks.is_concrete(factor) and not (0.0 <= float(np.asarray(factor)) <= 1.0):
        raise ValueError(
            f"{who}: Constant multiplicative factor expected to be between 0 and 1 "
            f"(factor), got {factor!r}"
        )
    total = _int(who, "total_iters", total_iters, low=-(2**63))
    spe = _steps_per_epoch(who, steps_per_epoch)

    def mult(e, dt):
        f = jnp.asarray(factor, dt)
        if total <= 0:
            return jnp.broadcast_to(f, e.shape)
        return jnp.where(e < min(total, INT32_MAX), f, jnp.ones((), dt))

    return _from_factor(who, lr, mult, spe)


def linear_lr(
    lr: Scalar,
    start_factor: Scalar = 1.0 / 3,
    end_factor: Scalar = 1.0,
    total_iters: int = 5,
    *,
    steps_per_epoch: int = 1,
):
    """Scale the rate by a factor going linearly from ``start_factor`` to ``end_factor`` (LinearLR).

    .. math:: \\eta_e = \\eta_0 \\frac{f_0 (T - m) + f_1 m}{T}, \\quad m = \\min(e, T)

    which is the product torch's recursive steps compute. With :math:`T \\le 0`
    torch never leaves ``start_factor``.

    Args:
      lr: :math:`\\eta_0`, the optimizer's learning rate.
      start_factor: :math:`f_0` in (0, 1], the factor at epoch 0.
      end_factor: :math:`f_1` in [0, 1], the factor from epoch :math:`T` on.
      total_iters: :math:`T`, the epochs of the linear change.
      steps_per_epoch: updates per ``scheduler.step()`` (keyword-only, gradtx's).

    References:
      ``torch.optim.lr_scheduler.LinearLR``.

    Example:
      >>> from gradtx.torch_optim.schedulers import linear_lr
      >>> linear_lr(1.0, start_factor=0.5, total_iters=4)([0, 2, 4, 9])
      Array([0.5 , 0.75, 1.  , 1.  ], dtype=float32)
    """
    who = "linear_lr"
    if checks.is_concrete(start_factor) and not (0.0 < float(np.asarray(start_factor)) <= 1.0):
        raise ValueError(
            f"{who}: Starting multiplicative factor expected to be greater than 0 and less or "
            f"equal to 1 (start_factor), got {start_factor!r}"
        )
    if checks.is_concrete(end_factor) and not (0.0 <= float(np.asarray(end_factor)) <= 1.0):
        raise ValueError(
            f"{who}: Ending multiplicative factor expected to be between 0 and 1 (end_factor), "
            f"got {end_factor!r}"
        )
    total = _int(who, "total_iters", total_iters, low=-(2**63))
    spe = _steps_per_epoch(who, steps_per_epoch)

    def mult(e, dt):
        f0 = jnp.asarray(start_factor, dt)
        if total <= 0:
            return jnp.broadcast_to(f0, e.shape)
        f1 = jnp.asarray(end_factor, dt)
        t = float(total)
        done = jnp.minimum(e, min(total, INT32_MAX)).astype(dt)
        return (f0 * (t - done) + f1 * done) / t

    return _from_factor(who, lr, mult, spe)


def exponential_lr(lr: Scalar, gamma: Scalar, *, steps_per_epoch: int = 1):
    """Decay the rate by ``gamma`` every epoch (torch's ExponentialLR).

    .. math:: \\eta_e = \\eta_0 \\gamma^e

    Args:
      lr: :math:`\\eta_0`, the optimizer's learning rate.
      gamma: :math:`\\gamma`, the multiplicative factor.
      steps_per_epoch: updates per ``scheduler.step()`` (keyword-only, gradtx's).

    References:
      ``torch.optim.lr_scheduler.ExponentialLR``.

    Example:
      >>> from gradtx.torch_optim.schedulers import exponential_lr
      >>> exponential_lr(1.0, gamma=0.5)([0, 1, 3])
      Array([1.   , 0.5  , 0.125], dtype=float32)
    """
    who = "exponential_lr"
    spe = _steps_per_epoch(who, steps_per_epoch)
    return _from_factor(who, lr, lambda e, dt: _pow(gamma, e, dt), spe)


def polynomial_lr(
    lr: Scalar, total_iters: int = 5, power: Scalar = 1.0, *, steps_per_epoch: int = 1
):
    """Polynomial decay to 0 over ``total_iters`` epochs, then 0 (torch's PolynomialLR).

    .. math:: \\eta_e = \\eta_0 \\left(\\frac{T - \\min(e, T)}{T}\\right)^p

    With :math:`T \\le 0` torch never changes the rate.

    Args:
      lr: :math:`\\eta_0`, the optimizer's learning rate.
      total_iters: :math:`T`, the epochs of the decay.
      power: :math:`p \\ge 0` (torch divides by zero at epoch :math:`T` for :math:`p < 0`).
      steps_per_epoch: updates per ``scheduler.step()`` (keyword-only, gradtx's).

    References:
      ``torch.optim.lr_scheduler.PolynomialLR``.

    Example:
      >>> from gradtx.torch_optim.schedulers import polynomial_lr
      >>> polynomial_lr(1.0, total_iters=4, power=2.0)([0, 2, 4, 5])
      Array([1.  , 0.25, 0.  , 0.  ], dtype=float32)
    """
    who = "polynomial_lr"
    checks.check_interval(who, "power", power, checks.NONNEGATIVE)
    total = _int(who, "total_iters", total_iters, low=-(2**63))
    spe = _steps_per_epoch(who, steps_per_epoch)

    def mult(e, dt):
        if total <= 0:
            return jnp.ones(e.shape, dt)
        left = (min(total, INT32_MAX) - jnp.minimum(e, min(total, INT32_MAX))).astype(dt)
        if total > INT32_MAX:
            left = left + float(total - INT32_MAX)
        return (left / float(total)) ** jnp.asarray(power, dt)

    return _from_factor(who, lr, mult, spe)


def cosine_annealing_lr(
    lr: Scalar,
    T_max: int,  # noqa: N803 (torch's name)
    eta_min: Scalar = 0.0,
    *,
    steps_per_epoch: int = 1,
):
    """Cosine annealing from ``lr`` to ``eta_min`` over ``T_max`` epochs and on (CosineAnnealingLR).

    .. math:: \\eta_e = \\eta_{min} + (\\eta_0 - \\eta_{min})
       \\frac{1 + \\cos(\\pi e / T_{max})}{2}

    for every epoch :math:`e`, also past :math:`T_{max}`: torch's recursive
    steps do not hold :math:`\\eta_{min}` there but rise again (its
    ``(last_epoch - 1 - T_max) % (2 T_max) == 0`` branch restarts the climb), so
    the rate is a cosine of period :math:`2 T_{max}` epochs, back at
    :math:`\\eta_0` at epochs :math:`2 T_{max}, 4 T_{max}, \\dots`. (gradtx's
    :func:`gradtx.schedules.cosine_decay` holds the end value instead.)

    Args:
      lr: :math:`\\eta_0`, the optimizer's learning rate.
      T_max: :math:`T_{max} > 0`, the epochs of the half period.
      eta_min: :math:`\\eta_{min}`, the minimum.
      steps_per_epoch: updates per ``scheduler.step()`` (keyword-only, gradtx's).

    References:
      ``torch.optim.lr_scheduler.CosineAnnealingLR``; I. Loshchilov and F. Hutter,
      *SGDR: Stochastic Gradient Descent with Warm Restarts*, ICLR 2017.

    Example:
      >>> from gradtx.torch_optim.schedulers import cosine_annealing_lr
      >>> cosine_annealing_lr(1.0, T_max=4)([0, 2, 4, 6, 8])
      Array([1. , 0.5, 0. , 0.5, 1. ], dtype=float32)
    """
    who = "cosine_annealing_lr"
    t_max = _int(who, "T_max", T_max, low=1, torch_text="T_max must be a positive integer")
    spe = _steps_per_epoch(who, steps_per_epoch)
    period = 2 * t_max

    def shape(e, dt):
        if period > INT32_MAX:
            r = e
        else:
            r = e % period
        d = jnp.minimum(r, period - r) if period <= INT32_MAX else r
        a = d.astype(dt)
        return _half_cosine(a, float(t_max) - a, float(t_max))

    def schedule(count):
        dt = _dtype()
        w, rest = shape(_epoch(count, spe), dt)
        return jnp.asarray(lr, dt) * w + jnp.asarray(eta_min, dt) * rest

    multiplier = None
    if not callable(eta_min) and checks.is_concrete(eta_min) and float(np.asarray(eta_min)) == 0:

        def cosine_multiplier(count):
            return shape(_epoch(count, spe), _dtype())[0]

        multiplier = cosine_multiplier

    return TorchSchedule(schedule, lr, who, multiplier=multiplier)


def cosine_annealing_warm_restarts(
    lr: Scalar, T_0: int, T_mult: int = 1, eta_min: Scalar = 0.0, *, steps_per_epoch: int = 1
):  # noqa: N803 (torch's names)
    """SGDR: cosine annealing restarted after ``T_0``, ``T_0 T_mult``, ... epochs.

    .. math:: \\eta_e = \\eta_{min} + (\\eta_0 - \\eta_{min})
       \\frac{1 + \\cos(\\pi T_{cur} / T_i)}{2}

    where cycle :math:`i` lasts :math:`T_i = T_0 T_{mult}^i` epochs and
    :math:`T_{cur}` is the epochs since its start (the cycles start at
    :math:`T_0 (T_{mult}^i - 1) / (T_{mult} - 1)`, or :math:`i T_0` for
    :math:`T_{mult} = 1`), as torch's ``step()`` without an epoch counts them.

    Args:
      lr: :math:`\\eta_0`, the optimizer's learning rate.
      T_0: epochs until the first restart, a positive integer.
      T_mult: the factor by which :math:`T_i` grows after a restart, an integer >= 1.
      eta_min: :math:`\\eta_{min}`, the minimum.
      steps_per_epoch: updates per ``scheduler.step()`` (keyword-only, gradtx's).

    References:
      ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``; I. Loshchilov and
      F. Hutter, *SGDR: Stochastic Gradient Descent with Warm Restarts*, ICLR 2017.

    Example:
      >>> from gradtx.torch_optim.schedulers import cosine_annealing_warm_restarts
      >>> cosine_annealing_warm_restarts(1.0, T_0=2, T_mult=2)([0, 1, 2, 3, 4, 6])
      Array([1.        , 0.5       , 1.        , 0.85355335, 0.5       ,
             1.        ], dtype=float32)
    """
    who = "cosine_annealing_warm_restarts"
    t0 = _int(who, "T_0", T_0, low=1, torch_text="Expected positive integer T_0")
    mult = _int(who, "T_mult", T_mult, low=1, torch_text="Expected integer T_mult >= 1")
    if not callable(eta_min) and checks.is_concrete(eta_min):
        try:
            float(np.asarray(eta_min))
        except (TypeError, ValueError):
            raise ValueError(f"{who}: Expected float or int eta_min, got {eta_min!r}") from None
    spe = _steps_per_epoch(who, steps_per_epoch)

    if mult == 1:
        starts = np.asarray([0], np.int64)
        lengths = np.asarray([float(t0)])
    else:
        starts_list, lengths_list, start, length = [], [], 0, t0
        while start <= INT32_MAX:
            starts_list.append(start)
            lengths_list.append(float(length))
            start, length = start + length, length * mult
        starts = np.asarray(starts_list, np.int64)
        lengths = np.asarray(lengths_list)

    def schedule(count):
        dt = _dtype()
        e = _epoch(count, spe)
        if mult == 1:
            t_cur = (e % t0 if t0 <= INT32_MAX else e).astype(dt)
            t_i = jnp.asarray(float(t0), dt)
        else:
            index = jnp.searchsorted(jnp.asarray(starts.astype(np.int32)), e, side="right") - 1
            t_cur = (e - jnp.asarray(starts.astype(np.int32))[index]).astype(dt)
            t_i = jnp.asarray(lengths, dt)[index]
        w, rest = _half_cosine(t_cur, t_i - t_cur, t_i)
        return jnp.asarray(lr, dt) * w + jnp.asarray(eta_min, dt) * rest

    return TorchSchedule(schedule, lr, who)


_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def cyclic_lr(
    base_lr: Scalar,
    max_lr: Scalar,
    step_size_up: int = 2000,
    step_size_down: int | None = None,
    mode: str = "triangular",
    gamma: Scalar = 1.0,
    scale_fn: Callable[[jax.Array], jax.Array] | None = None,
    scale_mode: str = "cycle",
    cycle_momentum: bool = True,
    base_momentum: Scalar = 0.8,
    max_momentum: Scalar = 0.9,
) -> TorchSchedule:
    """Cyclical learning rate (torch's CyclicLR), with its momentum schedule as ``.momentum``.

    With :math:`S = u + d` the cycle length in updates, :math:`r = t \\bmod S`,
    the cycle :math:`c = \\lfloor t / S \\rfloor + 1` and the triangle
    :math:`h = r / u` for :math:`r \\le u`, :math:`(S - r) / d` after,

    .. math:: \\eta_t = \\eta_{base} + (\\eta_{max} - \\eta_{base})\\, h\\, \\sigma, \\qquad
       m_t = m_{max} - (m_{max} - m_{base})\\, h\\, \\sigma

    with the scale :math:`\\sigma` = 1 (``"triangular"``), :math:`2^{1 - c}`
    (``"triangular2"``), :math:`\\gamma^t` (``"exp_range"``), or ``scale_fn(c)``
    (``scale_mode="cycle"``) / ``scale_fn(t)`` (``"iterations"``). torch steps
    CyclicLR once per batch: ``t`` is the update count. The optimizer's own
    learning rate is not used (torch overwrites it with ``base_lr``).

    The momentum schedule (SGD's ``momentum`` or Adam's ``betas[0]``, which
    torch sets at every step when ``cycle_momentum`` is true) is the returned
    schedule's ``momentum`` attribute, None when ``cycle_momentum`` is false: the
    returned object stays a plain learning-rate schedule, and both schedules
    come from one set of arguments.

    Args:
      base_lr: :math:`\\eta_{base}`, the lower boundary of the cycle.
      max_lr: :math:`\\eta_{max}`, the upper boundary.
      step_size_up: :math:`u > 0`, updates in the rising half.
      step_size_down: :math:`d \\ge 0`, updates in the falling half; None: :math:`u`.
      mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``; ignored with ``scale_fn``.
      gamma: :math:`\\gamma` of ``"exp_range"``.
      scale_fn: a custom scale, a ``jax.numpy`` function of an array (the cycle
        number from 1, or the update count, as a float array); overrides ``mode``.
      scale_mode: ``"cycle"`` or ``"iterations"``: what ``scale_fn`` receives.
      cycle_momentum: give the momentum schedule.
      base_momentum: :math:`m_{base}`, the momentum at the rate's peak.
      max_momentum: :math:`m_{max}`, the momentum at the cycle's start.

    References:
      ``torch.optim.lr_scheduler.CyclicLR``; L. N. Smith, *Cyclical Learning
      Rates for Training Neural Networks*, WACV 2017.

    Example:
      >>> from gradtx.torch_optim.schedulers import cyclic_lr
      >>> s = cyclic_lr(0.1, 1.0, step_size_up=2)
      >>> s([0, 1, 2, 3, 4])
      Array([0.1 , 0.55, 1.  , 0.55, 0.1 ], dtype=float32)
      >>> s.momentum([0, 2])
      Array([0.9, 0.8], dtype=float32)
    """
    who = "cyclic_lr"
    up = _int(who, "step_size_up", step_size_up, low=1, torch_text="step_size_up must be >= 1")
    if step_size_down is None:
        down = up
    else:
        down = _int(
            who, "step_size_down", step_size_down, low=0, torch_text="step_size_down must be >= 0"
        )
    total = up + down
    if total > INT32_MAX:
        raise ValueError(f"{who}: step_size_up + step_size_down must be at most 2**31 - 1")
    if scale_fn is None:
        if mode not in _CYCLIC_MODES:
            raise ValueError(
                f"{who}: mode is invalid and scale_fn is None: mode must be one of "
                f"{_CYCLIC_MODES}, got {mode!r}"
            )
        scale_mode = "cycle" if mode in ("triangular", "triangular2") else "iterations"
    else:
        if not callable(scale_fn):
            raise ValueError(f"{who}: scale_fn must be a function or None, got {scale_fn!r}")
        if scale_mode not in ("cycle", "iterations"):
            raise ValueError(
                f"{who}: scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}"
            )

    def height(count):
        """The triangle times the scale, :math:`h \\sigma`."""
        dt = _dtype()
        t = _count(count)
        r = t % total
        cycle = t // total + 1
        rising = r <= up
        h = jnp.where(
            rising, r.astype(dt) / float(up), (total - r).astype(dt) / float(max(down, 1))
        )
        if scale_fn is not None:
            x = cycle if scale_mode == "cycle" else t
            sigma = jnp.asarray(scale_fn(x.astype(dt)), dt)
        elif mode == "triangular":
            sigma = jnp.ones((), dt)
        elif mode == "triangular2":
            sigma = jnp.exp2(-(cycle - 1).astype(dt))
        else:
            sigma = _pow(gamma, t, dt).astype(dt)
        return h * sigma

    def schedule(count):
        dt = _dtype()
        low = jnp.asarray(base_lr, dt)
        return low + (jnp.asarray(max_lr, dt) - low) * height(count)

    momentum = None
    if cycle_momentum:

        def cycled_momentum(count):
            dt = _dtype()
            top = jnp.asarray(max_momentum, dt)
            return top - (top - jnp.asarray(base_momentum, dt)) * height(count)

        momentum = TorchSchedule(cycled_momentum, base_lr, who + ".momentum")

    return TorchSchedule(schedule, base_lr, who, momentum=momentum)


def one_cycle_lr(
    max_lr: Scalar,
    total_steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    cycle_momentum: bool = True,
    base_momentum: Scalar = 0.85,
    max_momentum: Scalar = 0.95,
    div_factor: Scalar = 25.0,
    final_div_factor: Scalar = 1e4,
    three_phase: bool = False,
) -> TorchSchedule:
    """The 1cycle policy (torch's OneCycleLR), with its momentum schedule as ``.momentum``.

    With :math:`N` = ``total_steps`` (or ``epochs * steps_per_epoch``),
    :math:`\\eta_{init} = \\eta_{max} / \\text{div\\_factor}` and
    :math:`\\eta_{min} = \\eta_{init} / \\text{final\\_div\\_factor}`, the phases end at

    - two phases: :math:`e_1 = pN - 1` (:math:`\\eta_{init} \\to \\eta_{max}`,
      :math:`m_{max} \\to m_{base}`), :math:`e_2 = N - 1` (:math:`\\eta_{max} \\to
      \\eta_{min}`, :math:`m_{base} \\to m_{max}`);
    - ``three_phase``: :math:`e_1 = pN - 1` (as above), :math:`e_2 = 2pN - 2`
      (:math:`\\eta_{max} \\to \\eta_{init}`, :math:`m_{base} \\to m_{max}`),
      :math:`e_3 = N - 1` (:math:`\\eta_{init} \\to \\eta_{min}`, :math:`m_{max}`).

    At update :math:`t` the first phase with :math:`t \\le e_i` (else the last)
    runs from :math:`e_{i-1}` (:math:`e_0 = 0`) with progress
    :math:`q = (t - e_{i-1}) / (e_i - e_{i-1})`, and goes from :math:`a` to :math:`b` as

    .. math:: b + (a - b) \\frac{1 + \\cos(\\pi q)}{2} \\ (\\texttt{"cos"}),
       \\qquad a + (b - a) q \\ (\\texttt{"linear"}).

    torch steps OneCycleLR once per batch and raises after :math:`N` steps; here
    counts past :math:`N` keep the value at :math:`N` (torch's last, where the
    last phase's :math:`q` is slightly above 1; where that phase has no length,
    as with ``pct_start=1``, torch divides by zero at :math:`N` and the value at
    :math:`N - 1` is held instead).

    The momentum schedule is the returned schedule's ``momentum`` attribute
    (None when ``cycle_momentum`` is false), as in :func:`cyclic_lr`.

    Args:
      max_lr: :math:`\\eta_{max}`. The optimizer's own rate is not used.
      total_steps: :math:`N`, a positive integer; or None to use the next two.
      epochs: with ``steps_per_epoch``, :math:`N` = ``epochs * steps_per_epoch``.
      steps_per_epoch: see ``epochs`` (torch's argument: it only sizes the cycle).
      pct_start: :math:`p` in [0, 1], the fraction of the cycle spent rising.
      anneal_strategy: ``"cos"`` or ``"linear"``.
      cycle_momentum: give the momentum schedule.
      base_momentum: :math:`m_{base}`, the momentum at the peak rate.
      max_momentum: :math:`m_{max}`, the momentum at the start and end.
      div_factor: :math:`\\eta_{init} = \\eta_{max}` / ``div_factor``.
      final_div_factor: :math:`\\eta_{min} = \\eta_{init}` / ``final_div_factor``.
      three_phase: torch's (and the paper's) three phases instead of fastai's two.

    References:
      ``torch.optim.lr_scheduler.OneCycleLR``; L. N. Smith and N. Topin,
      *Super-Convergence: Very Fast Training of Neural Networks Using Large
      Learning Rates*, 2017 (arXiv:1708.07120).

    Example:
      >>> from gradtx.torch_optim.schedulers import one_cycle_lr
      >>> s = one_cycle_lr(1.0, total_steps=10, pct_start=0.5, anneal_strategy="linear",
      ...                  div_factor=10.0, final_div_factor=1.0)
      >>> s([0, 2, 4, 9])
      Array([0.1 , 0.55, 1.  , 0.1 ], dtype=float32)
      >>> s.momentum([0, 4])
      Array([0.95, 0.85], dtype=float32)
    """
    who = "one_cycle_lr"
    if total_steps is not None:
        ok = isinstance(total_steps, int | np.integer) and not isinstance(total_steps, bool)
        if not ok or total_steps <= 0:
            raise ValueError(
                f"{who}: Expected positive integer total_steps, but got {total_steps!r}"
            )
        n = int(total_steps)
    elif epochs is not None and steps_per_epoch is not None:
        for name, v in (("epochs", epochs), ("steps_per_epoch", steps_per_epoch)):
            ok = isinstance(v, int | np.integer) and not isinstance(v, bool)
            if not ok or v <= 0:
                raise ValueError(f"{who}: Expected positive integer {name}, but got {v!r}")
        n = int(epochs) * int(steps_per_epoch)
    else:
        raise ValueError(
            f"{who}: You must define either total_steps OR (epochs AND steps_per_epoch)"
        )
    if n > INT32_MAX:
        raise ValueError(f"{who}: total_steps must be at most 2**31 - 1, got {n}")
    real = isinstance(pct_start, int | float | np.floating) and not isinstance(pct_start, bool)
    if not real or not (0.0 <= float(pct_start) <= 1.0):
        raise ValueError(f"{who}: Expected float between 0 and 1 pct_start, but got {pct_start!r}")
    pct = float(pct_start)
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(
            f"{who}: anneal_strategy must be one of 'cos' or 'linear', instead got "
            f"{anneal_strategy!r}"
        )

    # (end_step, lr from, lr to, momentum from, momentum to): names resolved per call.
    if three_phase:
        phases = [
            (float(pct * n) - 1, "initial", "max", "max_m", "base_m"),
            (float(2 * pct * n) - 2, "max", "initial", "base_m", "max_m"),
            (float(n - 1), "initial", "min", "max_m", "max_m"),
        ]
    else:
        phases = [
            (float(pct * n) - 1, "initial", "max", "max_m", "base_m"),
            (float(n - 1), "max", "min", "base_m", "max_m"),
        ]
    # torch divides by the phase's length: a phase of length 0 that some update of the
    # cycle selects is an error; one selected only at count N (torch's last step, past
    # the cycle, e.g. pct_start=1) is not, and the value at N - 1 is held from there.
    start = 0.0
    taken = np.zeros(n + 1, bool)
    steps = np.arange(n + 1)
    hold_from = n
    for i, (end, *_) in enumerate(phases):
        chosen = ~taken & ((steps <= end) | (i == len(phases) - 1))
        if end == start and chosen[:n].any():
            raise ValueError(
                f"{who}: pct_start={pct_start!r} with total_steps={n} gives phase {i + 1} no "
                "length (torch divides by zero there); choose another pct_start"
            )
        if end == start and chosen[n]:
            hold_from = n - 1
        taken |= chosen
        start = end

    def values(dt):
        lr_max = jnp.asarray(max_lr, dt)
        initial = lr_max / jnp.asarray(div_factor, dt)
        return {
            "max": lr_max,
            "initial": initial,
            "min": initial / jnp.asarray(final_div_factor, dt),
            "max_m": jnp.asarray(max_momentum, dt),
            "base_m": jnp.asarray(base_momentum, dt),
        }

    def anneal(a, b, frm, to, length):
        length = length or 1.0  # a phase of no length is never selected (see above)
        if anneal_strategy == "cos":
            w, rest = _half_cosine(a, b, length)
            return frm * w + to * rest
        return frm * (b / length) + to * (a / length)

    def evaluate(count, first, second):
        dt = _dtype()
        v = values(dt)
        t = jnp.minimum(_count(count), hold_from)
        result = None
        begin = 0.0
        pieces = []
        for end, lr_from, lr_to, m_from, m_to in phases:
            s_whole, s_frac = _split(begin)
            e_whole, e_frac = _split(end)
            a = (t - s_whole).astype(dt) - s_frac  # t - start, exactly rounded
            b = (e_whole - t).astype(dt) + e_frac  # end - t
            names = (lr_from, lr_to) if first else (m_from, m_to)
            pieces.append((end, anneal(a, b, v[names[0]], v[names[1]], end - begin)))
            begin = end
        result = pieces[-1][1]
        for end, value in reversed(pieces[:-1]):
            result = jnp.where(t <= math.floor(end), value, result)
        del second
        return result

    def schedule(count):
        return evaluate(count, True, None)

    momentum = None
    if cycle_momentum:
        momentum = TorchSchedule(
            lambda count: evaluate(count, False, None), max_lr, who + ".momentum"
        )
    return TorchSchedule(schedule, max_lr, who, momentum=momentum)


def lambda_lr(lr: Scalar, lr_lambda: Callable[[jax.Array], Any], *, steps_per_epoch: int = 1):
    """The base rate times a function of the epoch (torch's LambdaLR).

    .. math:: \\eta_e = \\eta_0 \\lambda(e)

    ``lr_lambda`` receives the epoch as an int32 array (torch passes a Python
    int) and must be written with ``jax.numpy`` so the schedule stays jit- and
    vmap-able; ``lambda e: 0.95 ** e`` works in both. The factor is as precise
    as ``lr_lambda`` is in the schedule's dtype (``0.95 ** e`` in float32 is off
    by 1e-5 at :math:`e = 3000`; use :func:`exponential_lr` for that one, or
    float64 under ``jax.enable_x64(True)``).

    Args:
      lr: :math:`\\eta_0`, the optimizer's learning rate.
      lr_lambda: :math:`\\lambda`, epoch -> factor.
      steps_per_epoch: updates per ``scheduler.step()`` (keyword-only, gradtx's).

    References:
      ``torch.optim.lr_scheduler.LambdaLR``.

    Example:
      >>> from gradtx.torch_optim.schedulers import lambda_lr
      >>> lambda_lr(1.0, lambda e: 1.0 / (e + 1))([0, 1, 3])
      Array([1.  , 0.5 , 0.25], dtype=float32)
    """
    who = "lambda_lr"
    if not callable(lr_lambda):
        raise ValueError(f"{who}: lr_lambda must be a function, got {lr_lambda!r}")
    spe = _steps_per_epoch(who, steps_per_epoch)

    def factor(e, dt):
        return jnp.broadcast_to(jnp.asarray(lr_lambda(e), dt), e.shape)

    return _from_factor(who, lr, factor, spe, chainable=False)


def multiplicative_lr(
    lr: Scalar, lr_lambda: Callable[[jax.Array], Any], *, steps_per_epoch: int = 1
):
    """The rate multiplied by ``lr_lambda(e)`` at every epoch from 1 on (MultiplicativeLR).

    .. math:: \\eta_e = \\eta_0 \\prod_{k=1}^{e} \\lambda(k)

    ``lr_lambda`` receives the epoch as an int32 scalar array and must be written
    with ``jax.numpy``. A running product of arbitrary factors has no closed form:
    this schedule loops over the epochs up to the largest one asked for (O(e)
    per evaluation, one loop for a whole array of counts), the one exception to
    gradtx's O(1) schedules. For a constant factor use :func:`exponential_lr`,
    which is O(1) and the same numbers. In float32 each factor carries its own
    rounding (``0.999`` is off by 3e-8) into the product, so after :math:`e`
    epochs the rate is off by up to about :math:`e \\cdot 6 \\cdot 10^{-8}`
    relative; under ``jax.enable_x64(True)`` it is torch's float64 product.

    Args:
      lr: :math:`\\eta_0`, the optimizer's learning rate.
      lr_lambda: :math:`\\lambda`, epoch -> factor.
      steps_per_epoch: updates per ``scheduler.step()`` (keyword-only, gradtx's).

    References:
      ``torch.optim.lr_scheduler.MultiplicativeLR``.

    Example:
      >>> from gradtx.torch_optim.schedulers import multiplicative_lr
      >>> multiplicative_lr(1.0, lambda e: 0.5)([0, 1, 3])
      Array([1.   , 0.5  , 0.125], dtype=float32)
    """
    who = "multiplicative_lr"
    if not callable(lr_lambda):
        raise ValueError(f"{who}: lr_lambda should be a function, got {lr_lambda!r}")
    spe = _steps_per_epoch(who, steps_per_epoch)

    def factor(e, dt):
        def body(k, acc):
            f = jnp.asarray(lr_lambda(k), dt)
            return jnp.where(k <= e, acc * f, acc)

        last = jnp.max(e, initial=0)
        return jax.lax.fori_loop(1, last + 1, body, jnp.ones(e.shape, dt))

    schedule = _from_factor(who, lr, factor, spe)
    schedule.lr_lambda = lr_lambda
    return schedule


def _schedules(who: str, schedulers: Any) -> list:
    if isinstance(schedulers, Callable):
        schedulers = [schedulers]
    schedulers = list(schedulers)
    if not schedulers:
        raise ValueError(f"{who}: expects at least one scheduler, but got no scheduler")
    for i, s in enumerate(schedulers):
        if not callable(s):
            raise ValueError(f"{who}: schedulers[{i}] must be a schedule, got {s!r}")
        if getattr(s, "name", None) == "reduce_lr_on_plateau":
            raise ValueError(f"{who}: does not support reduce_lr_on_plateau (schedulers[{i}])")
    return schedulers


def sequential_lr(
    schedulers: Sequence[Callable], milestones: Sequence[int], *, steps_per_epoch: int = 1
) -> TorchSchedule:
    """Run ``schedulers[i]`` from epoch ``milestones[i-1]`` on, each from its start (SequentialLR).

    .. math:: \\eta_e = s_i(e - m_{i-1}), \\quad i = \\#\\{m \\in \\text{milestones} : m \\le e\\}

    (:math:`m_{-1} = 0`), which is what torch's SequentialLR does: at a
    milestone it restarts the next scheduler at its epoch 0 from the base rate
    (``_get_closed_form_lr`` at 0). A :func:`multiplicative_lr` has no closed
    form and continues instead, from the rate it takes over:
    :math:`\\eta_e = \\eta_{m-1} \\prod_{k=0}^{e-m} \\lambda(k)` (torch's
    ``step(0)`` multiplies by :math:`\\lambda(0)`). Build every scheduler with the
    same base rate and the same ``steps_per_epoch`` (torch's all read one
    optimizer); ``schedulers`` may be any gradtx schedules. Not reproduced: the
    momentum of a ``cyclic_lr`` or ``one_cycle_lr`` inside (``momentum`` is None:
    torch leaves the momentum where the last cycling scheduler put it).

    Args:
      schedulers: the schedules, at least one.
      milestones: ``len(schedulers) - 1`` non-decreasing epochs.
      steps_per_epoch: updates per ``scheduler.step()`` (keyword-only, gradtx's).

    References:
      ``torch.optim.lr_scheduler.SequentialLR``.

    Example:
      >>> from gradtx.torch_optim.schedulers import sequential_lr, constant_lr, exponential_lr
      >>> s = sequential_lr([constant_lr(1.0, 0.1, 2), exponential_lr(1.0, 0.5)], milestones=[2])
      >>> s([0, 1, 2, 3])
      Array([0.1, 0.1, 1. , 0.5], dtype=float32)
    """
    who = "sequential_lr"
    schedulers = _schedules(who, schedulers)
    milestones = [_int(who, "milestones", m, low=0) for m in milestones]
    if len(milestones) != len(schedulers) - 1:
        raise ValueError(
            f"{who}: expects number of schedulers provided to be one more than the number of "
            f"milestone points, but got number of schedulers {len(schedulers)} and the number "
            f"of milestones to be equal to {len(milestones)}"
        )
    if milestones != sorted(milestones):
        raise ValueError(f"{who}: milestones must be non-decreasing, got {milestones}")
    spe = _steps_per_epoch(who, steps_per_epoch)
    shifts = [0] + [min(m * spe, INT32_MAX) for m in milestones]
    table = np.asarray([min(m, INT32_MAX) for m in milestones], np.int32)

    def segment(i, t):
        """Scheduler ``i``'s rate at the counts ``t`` (of the whole sequence)."""
        s, since = schedulers[i], jnp.maximum(t - shifts[i], 0)
        # At milestone 0 there is no rate to take over: torch runs it from the base rate.
        if shifts[i] == 0 or getattr(s, "lr_lambda", None) is None:
            return jnp.asarray(s(since), _dtype())
        return (
            taken_over(i) * jnp.asarray(s.lr_lambda(jnp.int32(0)), _dtype()) * s.multiplier(since)
        )

    def taken_over(i):
        """The rate at the last update before scheduler ``i``'s milestone."""
        last = shifts[i] - 1
        return segment(int(np.searchsorted(table, last // spe, side="right")), jnp.int32(last))

    def schedule(count):
        t = _count(count)
        index = jnp.searchsorted(jnp.asarray(table), t // spe, side="right")
        choices = [jnp.broadcast_to(segment(i, t), t.shape) for i in range(len(schedulers))]
        return jnp.choose(index, choices, mode="clip")

    return TorchSchedule(schedule, getattr(schedulers[0], "base_lr", None), who)


def chained_scheduler(schedulers: Sequence[TorchSchedule]) -> TorchSchedule:
    """Step several schedulers at every step, each multiplying the rate (torch's ChainedScheduler).

    .. math:: \\eta_t = \\eta_0 \\prod_i \\mu_i(t)

    with :math:`\\mu_i` = ``schedulers[i].multiplier``, the factor by which
    scheduler :math:`i` has multiplied the rate by then: torch's chainable
    schedulers each multiply the current rate at every step. Accepted: the
    schedules of ``step_lr``, ``multi_step_lr``, ``constant_lr``, ``linear_lr``,
    ``exponential_lr``, ``polynomial_lr``, ``multiplicative_lr``,
    ``cosine_annealing_lr`` with ``eta_min=0`` and chains of these; all built
    with the same base rate :math:`\\eta_0` (torch's share one optimizer).
    ``cosine_annealing_lr`` in a chain is exact up to ``T_max``: past it torch's
    restart step adds to the rate instead of multiplying, which drops the other
    schedulers' factors accumulated so far; that is not reproduced.

    Args:
      schedulers: the schedules, at least one.

    References:
      ``torch.optim.lr_scheduler.ChainedScheduler``.

    Example:
      >>> from gradtx.torch_optim.schedulers import chained_scheduler, constant_lr, exponential_lr
      >>> s = chained_scheduler([constant_lr(1.0, 0.1, 2), exponential_lr(1.0, 0.5)])
      >>> s([0, 1, 2, 3])
      Array([0.1  , 0.05 , 0.25 , 0.125], dtype=float32)
    """
    who = "chained_scheduler"
    schedulers = _schedules(who, schedulers)
    for i, s in enumerate(schedulers):
        if getattr(s, "multiplier", None) is None:
            raise ValueError(
                f"{who}: schedulers[{i}] ({getattr(s, 'name', s)!r}) is not a chainable "
                "torch_optim scheduler (see the docstring for the accepted ones)"
            )
    base = schedulers[0].base_lr
    if all(checks.is_concrete(s.base_lr) and not callable(s.base_lr) for s in schedulers):
        bases = {float(np.asarray(s.base_lr)) for s in schedulers}
        if len(bases) > 1:
            raise ValueError(
                f"{who}: every scheduler must be built with the same base lr (torch's share one "
                f"optimizer), got {sorted(bases)}"
            )

    def multiplier(count):
        value = schedulers[0].multiplier(count)
        for s in schedulers[1:]:
            value = value * s.multiplier(count)
        return value

    def schedule(count):
        return jnp.asarray(base, _dtype()) * multiplier(count)

    return TorchSchedule(schedule, base, who, multiplier=multiplier)


# ---------------------------------------------------------------------------- plateau


class ReduceLROnPlateauState(NamedTuple):
    """State of :func:`reduce_lr_on_plateau`, with torch's attribute names."""

    lr: jax.Array  # the current learning rate (float64 under enable_x64, else float32)
    best: jax.Array  # the best value seen, same dtype
    num_bad_epochs: jax.Array  # int32
    cooldown_counter: jax.Array  # int32


def reduce_lr_on_plateau(
    lr: Scalar,
    mode: str = "min",
    factor: float = 0.1,
    patience: int = 10,
    threshold: float = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_lr: float = 0.0,
    eps: float = 1e-8,
) -> GradientTransformation:
    """Reduce the learning rate when a metric stops improving (torch's ReduceLROnPlateau).

    A gradient transformation: each ``update`` reads the metric :math:`v` from the
    extra keyword ``value`` (``opt.update(g, state, params, value=loss)``), does
    torch's ``step(v)`` on the state, then scales the updates by
    :math:`\\eta / \\eta_0`, the current rate over ``lr``. Chain it after a
    learner built with the same ``lr``:
    ``chain(torch_optim.sgd(lr), reduce_lr_on_plateau(lr))``; the rate is
    ``state.lr``. ``step(v)`` (best :math:`b`, :math:`\\pm\\infty` at first):

    1. :math:`v` is better when :math:`v < b (1 - \\tau)` (``mode="min"``, ``"rel"``),
       :math:`v < b - \\tau` (min, abs), :math:`v > b (1 + \\tau)` (max, rel),
       :math:`v > b + \\tau` (max, abs); then :math:`b \\leftarrow v`, the bad
       count :math:`n \\leftarrow 0`, else :math:`n \\leftarrow n + 1`.
    2. In a cool-down (counter :math:`c > 0`): :math:`c \\leftarrow c - 1,\\ n \\leftarrow 0`.
    3. If :math:`n >` ``patience``: :math:`\\eta' = \\max(\\eta \\gamma, \\eta_{min})`,
       taken only when :math:`\\eta - \\eta' > \\epsilon`; :math:`c \\leftarrow`
       ``cooldown``, :math:`n \\leftarrow 0`.

    The value given to update :math:`k` counts for update :math:`k` itself, as
    torch's loop ``optimizer.step(); scheduler.step(val_loss)`` has the loss of
    the parameters the next steps start from. torch computes in Python floats;
    this state is float32, float64 when built and run inside
    ``jax.enable_x64(True)``. (:func:`gradtx.schedules.reduce_on_plateau` is the
    same rule on a multiplier, without ``mode="max"`` and ``eps``.)

    Args:
      lr: :math:`\\eta_0`, the learner's learning rate, positive.
      mode: ``"min"`` or ``"max"``.
      factor: :math:`\\gamma` in [0, 1).
      patience: epochs without improvement tolerated, an integer >= 0.
      threshold: :math:`\\tau \\ge 0`.
      threshold_mode: ``"rel"`` or ``"abs"``.
      cooldown: epochs to wait after a reduction, an integer >= 0.
      min_lr: :math:`\\eta_{min} \\ge 0`, in learning-rate units.
      eps: :math:`\\epsilon \\ge 0`: smaller reductions are skipped.

    References:
      ``torch.optim.lr_scheduler.ReduceLROnPlateau``.

    Example:
      >>> import jax.numpy as jnp
      >>> from gradtx.torch_optim.schedulers import reduce_lr_on_plateau
      >>> opt = reduce_lr_on_plateau(1.0, patience=1)
      >>> state = opt.init(jnp.zeros(2))
      >>> for loss in [3.0, 2.0, 2.5, 2.5, 2.5]:
      ...     _, state = opt.update(jnp.ones(2), state, value=loss)
      >>> state.lr
      Array(0.1, dtype=float32)
    """
    who = "reduce_lr_on_plateau"
    checks.check_interval(who, "lr", lr, checks.POSITIVE)
    if mode not in ("min", "max"):
        raise ValueError(f"{who}: mode {mode!r} is unknown! (mode must be 'min' or 'max')")
    if threshold_mode not in ("rel", "abs"):
        raise ValueError(
            f"{who}: threshold mode {threshold_mode!r} is unknown! (threshold_mode must be "
            "'rel' or 'abs')"
        )
    if checks.is_concrete(factor) and float(np.asarray(factor)) >= 1.0:
        raise ValueError(f"{who}: Factor should be < 1.0 (factor), got {factor!r}")
    checks.check_interval(who, "factor", factor, checks.DECAY)
    patience = _int(who, "patience", patience, low=0)
    cooldown = _int(who, "cooldown", cooldown, low=0)
    if patience >= INT32_MAX or cooldown > INT32_MAX:
        raise ValueError(f"{who}: patience and cooldown must be below 2**31 - 1")
    checks.check_interval(who, "threshold", threshold, checks.NONNEGATIVE)
    checks.check_interval(who, "min_lr", min_lr, checks.NONNEGATIVE)
    checks.check_interval(who, "eps", eps, checks.NONNEGATIVE)

    def init(params):
        del params
        dt = _dtype()
        worst = jnp.inf if mode == "min" else -jnp.inf
        return ReduceLROnPlateauState(
            jnp.asarray(lr, dt),
            jnp.full([], worst, dt),
            jnp.zeros([], jnp.int32),
            jnp.zeros([], jnp.int32),
        )

    def update(updates, state, params=None, *, value=None, **extra):
        del params, extra
        if value is None:
            raise ValueError(
                f"{who}: update needs the monitored metric as the extra keyword value, e.g. "
                "opt.update(grads, state, params, value=loss)"
            )
        dt = state.lr.dtype
        current = jnp.asarray(value, dt)
        best = state.best
        if mode == "min" and threshold_mode == "rel":
            better = current < best * (1.0 - jnp.asarray(threshold, dt))
        elif mode == "min":
            better = current < best - jnp.asarray(threshold, dt)
        elif threshold_mode == "rel":
            better = current > best * (jnp.asarray(threshold, dt) + 1.0)
        else:
            better = current > best + jnp.asarray(threshold, dt)
        best = jnp.where(better, current, best)
        bad = jnp.where(better, 0, safe_increment(state.num_bad_epochs))
        in_cooldown = state.cooldown_counter > 0
        counter = jnp.where(in_cooldown, state.cooldown_counter - 1, state.cooldown_counter)
        bad = jnp.where(in_cooldown, 0, bad)
        reduce = bad > patience
        old = state.lr
        new = jnp.maximum(old * jnp.asarray(factor, dt), jnp.asarray(min_lr, dt))
        rate = jnp.where(reduce & (old - new > jnp.asarray(eps, dt)), new, old)
        counter = jnp.where(reduce, cooldown, counter)
        bad = jnp.where(reduce, 0, bad)
        scale = rate / jnp.asarray(lr, dt)
        updates = jax.tree.map(lambda g: (scale * g).astype(g.dtype), updates)
        return updates, ReduceLROnPlateauState(
            rate, best, bad.astype(jnp.int32), counter.astype(jnp.int32)
        )

    return GradientTransformation(init, update)
