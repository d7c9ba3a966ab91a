"""gradtx: composable gradient transformations for JAX.

A learner is a pure ``(init, update)`` pair built by chaining small blocks::

    import gradtx
    opt = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(1e-3))
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = gradtx.apply_updates(params, updates)
"""

from gradtx import cntk, schedules, training, transforms
from gradtx.checks import TreeMismatchError
from gradtx.combine import PartitionState, freeze, groups_by_path, masked, partition
from gradtx.core import (
    EmptyState,
    GradientTransformation,
    Params,
    ScalarOrSchedule,
    Schedule,
    State,
    Updates,
    apply_updates,
    chain,
    float_leaves,
    identity,
    init_empty_state,
    stateless,
)
from gradtx.fused import (
    FusedFallbackWarning,
    FusedKernelsUnavailable,
    fused_available,
    fused_update,
    is_fused,
)
from gradtx.hyperparams import (
    InjectHyperparamsState,
    get_hyperparams,
    inject_hyperparams,
    set_hyperparams,
)
from gradtx.learners import (
    adadelta,
    adagrad,
    adam,
    adamax,
    adamw,
    amsgrad,
    lion,
    nadam,
    rmsprop,
    sgd,
)
from gradtx.packing import GroupedState, Packed, PackedState, grouped, pack, packed
from gradtx.state_dict import load_state_dict, state_dict
from gradtx.training import (
    LRFinderResult,
    SweepResult,
    Trainer,
    find_learning_rate,
    make_train_step,
    sweep,
    zero_shardings,
)
from gradtx.transforms import *  # noqa: F403
from gradtx.wrappers import (
    AccumulateState,
    ApplyIfFiniteState,
    EmaParamsState,
    LookaheadState,
    accumulate,
    apply_if_finite,
    ema_params,
    lookahead,
)

__version__ = "0.1.0"

__all__ = [
    "AccumulateState",
    "ApplyIfFiniteState",
    "EmaParamsState",
    "LookaheadState",
    "LRFinderResult",
    "SweepResult",
    "Trainer",
    "EmptyState",
    "FusedFallbackWarning",
    "FusedKernelsUnavailable",
    "GradientTransformation",
    "InjectHyperparamsState",
    "GroupedState",
    "Packed",
    "PackedState",
    "PartitionState",
    "Params",
    "ScalarOrSchedule",
    "Schedule",
    "State",
    "TreeMismatchError",
    "Updates",
    "accumulate",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "amsgrad",
    "apply_if_finite",
    "apply_updates",
    "chain",
    "cntk",
    "ema_params",
    "find_learning_rate",
    "float_leaves",
    "freeze",
    "fused_available",
    "fused_update",
    "get_hyperparams",
    "groups_by_path",
    "identity",
    "init_empty_state",
    "is_fused",
    "inject_hyperparams",
    "lion",
    "load_state_dict",
    "lookahead",
    "make_train_step",
    "masked",
    "nadam",
    "grouped",
    "pack",
    "packed",
    "partition",
    "rmsprop",
    "schedules",
    "set_hyperparams",
    "sgd",
    "state_dict",
    "stateless",
    "sweep",
    "training",
    "zero_shardings",
]
__all__ += transforms.__all__  # a form pyright reads, unlike a starred list entry
