"""Schedules: pure functions of the step count ``count`` (0 for the first update).

Base schedules, wrappers that take schedules and return one, cycle shapes in
:mod:`gradtx.schedules.shapes`, optax's schedules under optax's names (also at
gradtx's top level), and :func:`reduce_on_plateau`, a transform that reacts to
the loss.
"""

# Where optax.schedules has them too (documented, and listed, at gradtx's top level).
from gradtx.core import Schedule as Schedule
from gradtx.hyperparams import InjectHyperparamsState as InjectHyperparamsState
from gradtx.hyperparams import InjectStatefulHyperparamsState as InjectStatefulHyperparamsState
from gradtx.hyperparams import StatefulSchedule as StatefulSchedule
from gradtx.hyperparams import WrappedSchedule as WrappedSchedule
from gradtx.hyperparams import inject_hyperparams as inject_hyperparams
from gradtx.hyperparams import inject_stateful_hyperparams as inject_stateful_hyperparams
from gradtx.schedules import shapes
from gradtx.schedules.base import (
    constant,
    cosine_decay,
    geometric_decay,
    inverse_sqrt,
    linear,
    multistep_decay,
    piecewise_constant,
    polynomial_decay,
    step_decay,
    triangular,
)
from gradtx.schedules.optax_schedules import (
    constant_schedule,
    cosine_decay_schedule,
    cosine_onecycle_schedule,
    exponential_decay,
    join_schedules,
    linear_onecycle_schedule,
    linear_schedule,
    piecewise_constant_schedule,
    piecewise_interpolate_schedule,
    polynomial_schedule,
    sgdr_schedule,
    warmup_constant_schedule,
    warmup_cosine_decay_schedule,
    warmup_exponential_decay_schedule,
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
    "constant_schedule",
    "cooldown",
    "cosine_decay",
    "cosine_decay_schedule",
    "cosine_onecycle_schedule",
    "cosine_restarts",
    "cyclic",
    "cyclic_lr",
    "exponential_decay",
    "geometric_decay",
    "inverse_sqrt",
    "join",
    "join_schedules",
    "linear",
    "linear_onecycle_schedule",
    "linear_schedule",
    "multistep_decay",
    "one_cycle",
    "piecewise_constant",
    "piecewise_constant_schedule",
    "piecewise_interpolate_schedule",
    "plot_schedule",
    "polynomial_decay",
    "polynomial_schedule",
    "reduce_on_plateau",
    "sgdr_schedule",
    "shapes",
    "step_decay",
    "triangular",
    "warmup",
    "warmup_constant_schedule",
    "warmup_cosine_decay_schedule",
    "warmup_exponential_decay_schedule",
]
