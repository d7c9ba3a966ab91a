"""gradtx: composable gradient transformations for JAX.

A learner is a pure ``(init, update)`` pair built by chaining small blocks::

    import gradtx
    opt = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(1e-3))
    state = opt.init(params)
    updates, state = opt.update(grads, state, params)
    params = gradtx.apply_updates(params, updates)
"""

from gradtx import cntk, contrib, learners, schedules, torch_optim, training, transforms
from gradtx import tree as tree  # optax.tree's helpers; gradtx.tree_utils is optax.tree_utils
from gradtx import tree_utils as tree_utils
from gradtx.checks import TreeMismatchError
from gradtx.combine import (
    MaskedState,
    PartitionState,
    freeze,
    groups_by_path,
    masked,
    multi_transform,
    partition,
    selective_transform,
    set_to_zero,
)
from gradtx.compression import CompressedMeanState, compressed_mean
from gradtx.conditional import (
    ConditionallyMaskState,
    ConditionallyTransformState,
    conditionally_mask,
    conditionally_transform,
)
from gradtx.core import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
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
    named_chain,
    stateless,
    stateless_with_tree_map,
    with_extra_args_support,
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
    InjectStatefulHyperparamsState,
    WrappedSchedule,
    get_hyperparams,
    inject_hyperparams,
    inject_stateful_hyperparams,
    set_hyperparams,
)
from gradtx.learners import *  # noqa: F403
from gradtx.monitoring import MonitorState, SnapshotState, measure_with_ema, monitor, snapshot
from gradtx.multi_steps import (
    MultiSteps,
    MultiStepsState,
    ShouldSkipUpdateFunction,
    skip_large_updates,
    skip_not_finite,
)
from gradtx.optax_state import from_optax_state, to_optax_state
from gradtx.packing import GroupedState, Packed, PackedState, grouped, pack, packed
from gradtx.powersgd import PowerSGDState, powersgd_mean
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
from gradtx.state_dict import load_state_dict, state_dict
from gradtx.training import (
    LRFinderResult,
    SweepResult,
    Trainer,
    eval_params,
    find_learning_rate,
    make_train_step,
    sweep,
    zero_shardings,
)
from gradtx.transforms import *  # noqa: F403
from gradtx.tree import tree_map_params
from gradtx.utils import (
    global_norm,
    incremental_update,
    periodic_update,
    safe_norm,
    safe_root_mean_squares,
    scale_gradient,
)
from gradtx.wrappers import (
    AccumulateState,
    ApplyEvery,
    ApplyIfFiniteState,
    EmaParamsState,
    LookaheadParams,
    LookaheadState,
    LookaheadWithSlowWeightsState,
    accumulate,
    apply_every,
    apply_if_finite,
    ema_params,
    lookahead,
    lookahead_with_slow_weights,
)

__version__ = "0.1.0"

__all__ = [
    "AccumulateState",
    "CompressedMeanState",
    "PowerSGDState",
    "ApplyEvery",
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "GradientTransformationExtraArgs",
    "LookaheadParams",
    "LookaheadWithSlowWeightsState",
    "MonitorState",
    "MultiSteps",
    "MultiStepsState",
    "ShouldSkipUpdateFunction",
    "SnapshotState",
    "apply_every",
    "conditionally_mask",
    "conditionally_transform",
    "lookahead_with_slow_weights",
    "measure_with_ema",
    "monitor",
    "named_chain",
    "selective_transform",
    "set_to_zero",
    "skip_large_updates",
    "skip_not_finite",
    "snapshot",
    "stateless_with_tree_map",
    "with_extra_args_support",
    "ApplyIfFiniteState",
    "EmaParamsState",
    "LookaheadState",
    "LRFinderResult",
    "SweepResult",
    "Trainer",
    "eval_params",
    "EmptyState",
    "FusedFallbackWarning",
    "FusedKernelsUnavailable",
    "GradientTransformation",
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "WrappedSchedule",
    "global_norm",
    "incremental_update",
    "inject_stateful_hyperparams",
    "periodic_update",
    "safe_norm",
    "safe_root_mean_squares",
    "scale_gradient",
    "tree_map_params",
    "GroupedState",
    "Packed",
    "PackedState",
    "PartitionState",
    "MaskedState",
    "Params",
    "ScalarOrSchedule",
    "Schedule",
    "State",
    "TreeMismatchError",
    "Updates",
    "accumulate",
    "apply_if_finite",
    "apply_updates",
    "chain",
    "cntk",
    "contrib",
    "learners",
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
    "load_state_dict",
    "lookahead",
    "make_train_step",
    "masked",
    "grouped",
    "pack",
    "packed",
    "partition",
    "multi_transform",
    "schedules",
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
    "set_hyperparams",
    "state_dict",
    "compressed_mean",
    "powersgd_mean",
    "from_optax_state",
    "to_optax_state",
    "stateless",
    "sweep",
    "torch_optim",
    "training",
    "zero_shardings",
]
__all__ += learners.__all__  # a form pyright reads, unlike a starred list entry
__all__ += transforms.__all__


_MOVED_TO_CONTRIB = (
    "DifferentiallyPrivateAggregateState",
    "differentially_private_aggregate",
    "dpsgd",
)


def __getattr__(name: str):
    # optax 0.2.x still answers these at its top level, with this warning.
    if name in _MOVED_TO_CONTRIB:
        import warnings

        warnings.warn(
            f"gradtx.{name} is deprecated: use gradtx.contrib.{name}, as optax.contrib.{name}.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(contrib, name)
    raise AttributeError(f"module 'gradtx' has no attribute {name!r}")
