"""CNTK's learners and schedules with their exact semantics (``gradtx.cntk``).

See :mod:`gradtx.cntk.schedules` for the unit rules and
:mod:`gradtx.cntk.learners` for the update rules.
"""

from gradtx.cntk.learners import (
    DEFAULT_VARIANCE_MOMENTUM,
    adadelta,
    adagrad,
    adam,
    fsadagrad,
    momentum_sgd,
    nesterov,
    rmsprop,
    sgd,
)
from gradtx.cntk.schedules import (
    LearningRateSchedule,
    MomentumSchedule,
    UnitType,
    learning_rate_schedule,
    momentum_as_time_constant_schedule,
    momentum_from_time_constant,
    momentum_schedule,
    momentum_schedule_per_sample,
    time_constant_from_momentum,
)

__all__ = [
    "DEFAULT_VARIANCE_MOMENTUM",
    "LearningRateSchedule",
    "MomentumSchedule",
    "UnitType",
    "adadelta",
    "adagrad",
    "adam",
    "fsadagrad",
    "learning_rate_schedule",
    "momentum_as_time_constant_schedule",
    "momentum_from_time_constant",
    "momentum_schedule",
    "momentum_schedule_per_sample",
    "momentum_sgd",
    "nesterov",
    "rmsprop",
    "sgd",
    "time_constant_from_momentum",
]
