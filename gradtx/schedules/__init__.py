"""Schedules: pure functions of the step count ``count`` (0 for the first update).

Base schedules, wrappers that take schedules and return one, cycle shapes in
:mod:`gradtx.schedules.shapes`, and :func:`reduce_on_plateau`, a transform that
reacts to the loss.
"""

from gradtx.schedules import shapes
from gradtx.schedules.base import (
    constant,
    cosine_decay,
    exponential_decay,
    inverse_sqrt,
    linear,
    multistep_decay,
    piecewise_constant,
    polynomial_decay,
    step_decay,
    triangular,
)
from gradtx.schedules.plateau import ReduceOnPlateauState, reduce_on_plateau
from gradtx.schedules.plot import plot_schedule
from gradtx.schedules.wrappers import (
    cooldown,
    cosine_restarts,
    cyclic,
    cyclic_lr,
    join,
    one_cycle,
    warmup,
)

__all__ = [
    "ReduceOnPlateauState",
    "constant",
    "cooldown",
    "cosine_decay",
    "cosine_restarts",
    "cyclic",
    "cyclic_lr",
    "exponential_decay",
    "inverse_sqrt",
    "join",
    "linear",
    "multistep_decay",
    "one_cycle",
    "piecewise_constant",
    "plot_schedule",
    "polynomial_decay",
    "reduce_on_plateau",
    "shapes",
    "step_decay",
    "triangular",
    "warmup",
]
