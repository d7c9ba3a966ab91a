"""Small gradient transformations, one family per module, re-exported flat by ``gradtx``."""

from gradtx.transforms.acprop import scale_by_acprop
from gradtx.transforms.adam import (
    ScaleByAdamState,
    ScaleByAmsgradState,
    scale_by_adam,
    scale_by_adamax,
    scale_by_amsgrad,
)
from gradtx.transforms.adan import (
    ScaleByAdanState,
    scale_by_adan,
)
from gradtx.transforms.adaptive import (
    ScaleByAdaDeltaState,
    ScaleByAdadeltaState,
    ScaleByRmsSignStepsState,
    ScaleByRmsState,
    ScaleByRmsWithCountState,
    ScaleByRssState,
    ScaleByRStdDevState,
    ScaleByRStdDevWithCountState,
    ScaleByStddevState,
    scale_by_adadelta,
    scale_by_rms,
    scale_by_rms_sign_steps,
    scale_by_rss,
    scale_by_stddev,
)
from gradtx.transforms.ademamix import (
    ScaleByAdemamixState,
    ScaleBySimplifiedAdEMAMixState,
    scale_by_ademamix,
    scale_by_simplified_ademamix,
)
from gradtx.transforms.adopt import scale_by_adopt
from gradtx.transforms.averages import EmaState, TraceState, ema, trace
from gradtx.transforms.belief import (
    ScaleByBeliefState,
    scale_by_belief,
)
from gradtx.transforms.clipping import clip, clip_by_global_norm
from gradtx.transforms.cocob import (
    COCOBState,
    scale_by_cocob,
)
from gradtx.transforms.dadapt import (
    DAdaptAdamWState,
    dadapt_adamw,
)
from gradtx.transforms.distance import (
    ScaleByDistanceOverGradientsState,
    scale_by_distance_over_gradients,
)
from gradtx.transforms.dog import (
    DoGState,
    DoWGState,
    scale_by_dog,
    scale_by_dowg,
)
from gradtx.transforms.factored import (
    FactoredState,
    scale_by_factored_rms,
)
from gradtx.transforms.gradient_ops import (
    NonNegativeParamsState,
    ZeroNansState,
    adaptive_grad_clip,
    centralize,
    clip_by_block_rms,
    keep_params_nonnegative,
    normalize_by_update_norm,
    zero_nans,
)
from gradtx.transforms.lbfgs import (
    ScaleByLBFGSState,
    scale_by_lbfgs,
)
from gradtx.transforms.linesearch import (
    BacktrackingLinesearchInfo,
    ScaleByBacktrackingLinesearchState,
    ScaleByZoomLinesearchState,
    ZoomLinesearchInfo,
    scale_by_backtracking_linesearch,
    scale_by_zoom_linesearch,
    value_and_grad_from_state,
)
from gradtx.transforms.lion import ScaleByLionState, scale_by_lion
from gradtx.transforms.madgrad import (
    MadgradState,
    scale_by_madgrad,
)
from gradtx.transforms.mechanic import (
    MechanicState,
    mechanize,
)
from gradtx.transforms.minibatch import (
    MomentumState,
    Progress,
    ScaleByFsadagradState,
    ScaleByMinibatchAdamState,
    ScaleByRateState,
    momentum,
    scale_by_fsadagrad,
    scale_by_minibatch_adam,
    scale_by_rate,
)
from gradtx.transforms.momo import (
    MomoAdamState,
    MomoState,
)
from gradtx.transforms.muon import (
    MuonDimensionNumbers,
    MuonState,
    orthogonalize_via_newton_schulz,
    scale_by_muon,
)
from gradtx.transforms.noise import (
    AddNoiseState,
    add_noise,
)
from gradtx.transforms.novograd import (
    ScaleByNovogradState,
    scale_by_novograd,
)
from gradtx.transforms.optimistic import (
    ScaleByOptimisticGradientState,
    scale_by_optimistic_gradient,
)
from gradtx.transforms.polyak import scale_by_polyak
from gradtx.transforms.private import (
    per_example_global_norm_clip,
    per_example_layer_norm_clip,
)
from gradtx.transforms.prodigy import (
    ProdigyState,
    prodigy,
)
from gradtx.transforms.radam import scale_by_radam
from gradtx.transforms.rprop import (
    ScaleByRpropState,
    scale_by_rprop,
)
from gradtx.transforms.sam import (
    NormalizeState,
    SAMState,
    normalize,
    sam,
)
from gradtx.transforms.scaling import (
    ScaleByScheduleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from gradtx.transforms.schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_eval_params,
)
from gradtx.transforms.sign import scale_by_sign
from gradtx.transforms.sm3 import (
    ScaleBySM3State,
    scale_by_sm3,
)
from gradtx.transforms.sophia import (
    HutchinsonState,
    SophiaState,
    hutchinson_estimator_diag_hessian,
)
from gradtx.transforms.trust_ratio import (
    scale_by_param_block_norm,
    scale_by_param_block_rms,
    scale_by_trust_ratio,
)
from gradtx.transforms.weight_decay import AddDecayedWeightsState, add_decayed_weights
from gradtx.transforms.yogi import scale_by_yogi

__all__ = [
    "adaptive_grad_clip",
    "add_decayed_weights",
    "add_noise",
    "AddDecayedWeightsState",
    "AddNoiseState",
    "BacktrackingLinesearchInfo",
    "centralize",
    "clip",
    "clip_by_block_rms",
    "clip_by_global_norm",
    "COCOBState",
    "dadapt_adamw",
    "DAdaptAdamWState",
    "DoGState",
    "DoWGState",
    "ema",
    "EmaState",
    "FactoredState",
    "hutchinson_estimator_diag_hessian",
    "HutchinsonState",
    "keep_params_nonnegative",
    "MadgradState",
    "MechanicState",
    "mechanize",
    "momentum",
    "MomentumState",
    "MomoAdamState",
    "MomoState",
    "MuonDimensionNumbers",
    "MuonState",
    "NonNegativeParamsState",
    "normalize",
    "normalize_by_update_norm",
    "NormalizeState",
    "orthogonalize_via_newton_schulz",
    "per_example_global_norm_clip",
    "per_example_layer_norm_clip",
    "prodigy",
    "ProdigyState",
    "Progress",
    "sam",
    "SAMState",
    "scale",
    "scale_by_acprop",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_adan",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_amsgrad",
    "scale_by_backtracking_linesearch",
    "scale_by_belief",
    "scale_by_cocob",
    "scale_by_distance_over_gradients",
    "scale_by_dog",
    "scale_by_dowg",
    "scale_by_factored_rms",
    "scale_by_fsadagrad",
    "scale_by_lbfgs",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_madgrad",
    "scale_by_minibatch_adam",
    "scale_by_muon",
    "scale_by_novograd",
    "scale_by_optimistic_gradient",
    "scale_by_param_block_norm",
    "scale_by_param_block_rms",
    "scale_by_polyak",
    "scale_by_radam",
    "scale_by_rate",
    "scale_by_rms",
    "scale_by_rms_sign_steps",
    "scale_by_rprop",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_sign",
    "scale_by_simplified_ademamix",
    "scale_by_sm3",
    "scale_by_stddev",
    "scale_by_trust_ratio",
    "scale_by_yogi",
    "scale_by_zoom_linesearch",
    "ScaleByAdaDeltaState",
    "ScaleByAdadeltaState",
    "ScaleByAdamState",
    "ScaleByAdanState",
    "ScaleByAdemamixState",
    "ScaleByAmsgradState",
    "ScaleByBacktrackingLinesearchState",
    "ScaleByBeliefState",
    "ScaleByDistanceOverGradientsState",
    "ScaleByFsadagradState",
    "ScaleByLBFGSState",
    "ScaleByLionState",
    "ScaleByMinibatchAdamState",
    "ScaleByNovogradState",
    "ScaleByOptimisticGradientState",
    "ScaleByRateState",
    "ScaleByRmsSignStepsState",
    "ScaleByRmsState",
    "ScaleByRmsWithCountState",
    "ScaleByRpropState",
    "ScaleByRssState",
    "ScaleByRStdDevState",
    "ScaleByRStdDevWithCountState",
    "ScaleByScheduleState",
    "ScaleBySimplifiedAdEMAMixState",
    "ScaleBySM3State",
    "ScaleByStddevState",
    "ScaleByZoomLinesearchState",
    "schedule_free",
    "schedule_free_eval_params",
    "ScheduleFreeState",
    "SophiaState",
    "trace",
    "TraceState",
    "value_and_grad_from_state",
    "zero_nans",
    "ZeroNansState",
    "ZoomLinesearchInfo",
]
