"""CNTK's learning-rate and momentum schedules, with their units.

CNTK hands a learner the SUM of the per-sample gradients of a minibatch, and
reads rates and momenta in units:

- a learning rate per **minibatch** is divided by the minibatch size before
  use (so it applies to the mean gradient); a rate per **sample** is used as is;
- ``momentum_schedule(m)`` is a momentum per minibatch, used as is;
  ``momentum_schedule_per_sample(m)`` means ``m ** batch_size``;
  ``momentum_as_time_constant_schedule(tc)`` means ``exp(-batch_size / tc)``.

A list of values with ``epoch_size`` holds value ``i`` for ``epoch_size``
units of progress, then the last value forever. Progress counts updates for a
per-minibatch schedule and samples seen (the running sum of ``batch_size``)
for a per-sample one. The tutorial's
``learning_rate_schedule([0.05]*3 + [0.025]*2 + [0.0125], UnitType.minibatch, epoch_size=100)``
is 0.05 for the first 300 minibatches, 0.025 for the next 200 and 0.0125 from
then on. Every schedule is a function ``(minibatches, samples, batch_size)``
of the progress before the current update, as the blocks of
:mod:`gradtx.transforms.minibatch` expect.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks
from gradtx.schedules._util import as_count, floor_divide


class UnitType(enum.StrEnum):
    """The unit of a CNTK learning rate: per sample or per minibatch."""

    sample = "sample"
    minibatch = "minibatch"


def _unit(who: str, unit: Any) -> UnitType:
    try:
        return UnitType(unit)
    except ValueError:
        raise ValueError(
            f"{who}: unit must be UnitType.sample or UnitType.minibatch (or the strings "
            f"'sample' / 'minibatch'), got {unit!r}"
        ) from None


def _values(who: str, name: str, values: Any, interval: str) -> tuple[Any, ...]:
    values = tuple(values) if isinstance(values, Sequence) else (values,)
    if not values:
        raise ValueError(f"{who}: {name} must not be empty")
    for v in values:
        checks.check_interval(who, name, v, interval)
    return values


def _epoch_size(who: str, epoch_size: Any) -> int:
    if epoch_size is None:
        return 1
    return checks.check_length(who, "epoch_size", epoch_size, wording="positive")


def _pick(values: tuple[Any, ...], epoch_size: int, progress: jax.Array) -> jax.Array:
    if len(values) == 1 and callable(values[0]):  # a gradtx schedule of the progress
        return jnp.asarray(values[0](progress), jnp.float32)
    if len(values) == 1:
        return jnp.asarray(values[0], jnp.float32)
    # floor_divide takes an epoch_size beyond int32 (never completed by an int32 progress).
    epochs = floor_divide(as_count(progress), epoch_size)
    index = jnp.minimum(epochs, len(values) - 1).astype(jnp.int32)
    return jnp.stack([jnp.asarray(v, jnp.float32) for v in values])[index]


@dataclasses.dataclass(frozen=True)
class LearningRateSchedule:
    """A CNTK learning rate (values, unit, epoch size); calling it gives the rate per sample."""

    values: tuple[Any, ...]
    unit: UnitType
    epoch_size: int

    def __call__(self, minibatches, samples, batch_size) -> jax.Array:
        progress = samples if self.unit is UnitType.sample else minibatches
        rate = _pick(self.values, self.epoch_size, progress)
        if self.unit is UnitType.minibatch:
            rate = rate / jnp.asarray(batch_size, jnp.float32)
        return rate


def learning_rate_schedule(
    lr: float | Sequence[float], unit: UnitType | str, epoch_size: int | None = None
) -> LearningRateSchedule:
    """CNTK's ``learning_rate_schedule``: a rate per sample or per minibatch, possibly stepwise.

    Args:
      lr: a rate, or a list of rates each held for ``epoch_size`` units of progress.
      unit: ``UnitType.sample`` (used as is) or ``UnitType.minibatch`` (divided
        by the minibatch size at each update).
      epoch_size: units of progress per list entry (updates for the minibatch
        unit, samples for the sample unit); 1 when omitted.
    """
    who = "learning_rate_schedule"
    return LearningRateSchedule(
        _values(who, "lr", lr, checks.NONNEGATIVE), _unit(who, unit), _epoch_size(who, epoch_size)
    )


@dataclasses.dataclass(frozen=True)
class MomentumSchedule:
    """A CNTK momentum: per minibatch, per sample, or as a time constant in samples."""

    values: tuple[Any, ...]
    kind: str  # "minibatch", "sample" or "time_constant"
    epoch_size: int

    def log_value(self, minibatches, samples, batch_size) -> jax.Array:
        """:math:`\\log m` of this minibatch's momentum, exact for time constants."""
        progress = minibatches if self.kind == "minibatch" else samples
        batch = jnp.asarray(batch_size, jnp.float32)
        if self.kind == "time_constant":
            tc = _pick(self.values, self.epoch_size, progress)
            return jnp.where(tc > 0, -batch / jnp.where(tc > 0, tc, 1.0), -jnp.inf)
        if callable(self.values[0]):  # a gradtx schedule of the progress
            log_m = jnp.log(_pick(self.values, self.epoch_size, progress))
        else:
            logs = tuple(
                np.float32(math.log(v) if v > 0 else -np.inf)
                if isinstance(v, int | float)
                else jnp.log(v)
                for v in self.values
            )
            log_m = _pick(logs, self.epoch_size, progress)
        return log_m * batch if self.kind == "sample" else log_m

    def __call__(self, minibatches, samples, batch_size) -> jax.Array:
        return jnp.exp(self.log_value(minibatches, samples, batch_size))


def momentum_schedule(momentum: float | Sequence[float], epoch_size: int | None = None):
    """A momentum per minibatch, used as is (a list steps every ``epoch_size`` updates).

    Args:
      momentum: in [0, 1), or a list of such values.
      epoch_size: updates per list entry; 1 when omitted.
    """
    who = "momentum_schedule"
    return MomentumSchedule(
        _values(who, "momentum", momentum, checks.DECAY), "minibatch", _epoch_size(who, epoch_size)
    )


def momentum_schedule_per_sample(momentum: float | Sequence[float], epoch_size: int | None = None):
    """A momentum per sample: the minibatch uses ``momentum ** batch_size``.

    Args:
      momentum: in [0, 1), or a list of such values.
      epoch_size: samples per list entry; 1 when omitted.
    """
    who = "momentum_schedule_per_sample"
    return MomentumSchedule(
        _values(who, "momentum", momentum, checks.DECAY), "sample", _epoch_size(who, epoch_size)
    )


def momentum_as_time_constant_schedule(
    time_constant: float | Sequence[float], epoch_size: int | None = None
):
    """A momentum given as a time constant in samples: ``m = exp(-batch_size / time_constant)``.

    A time constant of 0 means no momentum.

    Args:
      time_constant: samples over which the momentum decays by a factor e, :math:`\\ge 0`.
      epoch_size: samples per list entry; 1 when omitted.
    """
    who = "momentum_as_time_constant_schedule"
    return MomentumSchedule(
        _values(who, "time_constant", time_constant, checks.NONNEGATIVE),
        "time_constant",
        _epoch_size(who, epoch_size),
    )


def momentum_from_time_constant(time_constant: float, batch_size: int) -> float:
    """The per-minibatch momentum of a time constant: :math:`m = e^{-B / \\tau}`.

    Args:
      time_constant: :math:`\\tau \\ge 0` in samples (0 gives no momentum).
      batch_size: :math:`B > 0`.
    """
    checks.check_interval(
        "momentum_from_time_constant", "time_constant", time_constant, checks.NONNEGATIVE
    )
    checks.check_interval("momentum_from_time_constant", "batch_size", batch_size, checks.POSITIVE)
    return math.exp(-batch_size / time_constant) if time_constant > 0 else 0.0


def time_constant_from_momentum(momentum: float, batch_size: int) -> float:
    """The time constant of a per-minibatch momentum: :math:`\\tau = -B / \\log m`.

    Args:
      momentum: :math:`m` in [0, 1) (0 gives a time constant of 0).
      batch_size: :math:`B > 0`.
    """
    checks.check_interval("time_constant_from_momentum", "momentum", momentum, checks.DECAY)
    checks.check_interval("time_constant_from_momentum", "batch_size", batch_size, checks.POSITIVE)
    return -batch_size / math.log(momentum) if momentum > 0 else 0.0


def as_learning_rate(who: str, lr: Any) -> LearningRateSchedule:
    """A bare number (array, tracer, or gradtx schedule of the update count): per minibatch."""
    if isinstance(lr, LearningRateSchedule):
        return lr
    checks.check_interval(who, "lr", lr, checks.NONNEGATIVE)
    return LearningRateSchedule((lr,), UnitType.minibatch, 1)


def as_momentum(who: str, name: str, momentum: Any) -> MomentumSchedule:
    """A bare number (array, tracer, or gradtx schedule of the update count) is a momentum
    per minibatch."""
    if isinstance(momentum, MomentumSchedule):
        return momentum
    checks.check_interval(who, name, momentum, checks.DECAY)
    return MomentumSchedule((momentum,), "minibatch", 1)
