"""Small gradient transformations, one family per module, re-exported flat by ``gradtx``."""

from gradtx.transforms.adam import (
    ScaleByAdamState,
    ScaleByAmsgradState,
    scale_by_adam,
    scale_by_adamax,
    scale_by_amsgrad,
)
from gradtx.transforms.adaptive import (
    ScaleByAdadeltaState,
    ScaleByRmsSignStepsState,
    ScaleByRmsState,
    ScaleByRssState,
    ScaleByStddevState,
    scale_by_adadelta,
    scale_by_rms,
    scale_by_rms_sign_steps,
    scale_by_rss,
    scale_by_stddev,
)
from gradtx.transforms.averages import EmaState, TraceState, ema, trace
from gradtx.transforms.clipping import clip, clip_by_global_norm
from gradtx.transforms.lion import ScaleByLionState, scale_by_lion
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
from gradtx.transforms.scaling import (
    ScaleByScheduleState,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)
from gradtx.transforms.weight_decay import AddDecayedWeightsState, add_decayed_weights

__all__ = [
    "MomentumState",
    "Progress",
    "ScaleByFsadagradState",
    "ScaleByMinibatchAdamState",
    "ScaleByRateState",
    "ScaleByRmsSignStepsState",
    "momentum",
    "scale_by_fsadagrad",
    "scale_by_minibatch_adam",
    "scale_by_rate",
    "scale_by_rms_sign_steps",
    "AddDecayedWeightsState",
    "EmaState",
    "ScaleByAdadeltaState",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ScaleByLionState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "ScaleByStddevState",
    "TraceState",
    "add_decayed_weights",
    "clip",
    "clip_by_global_norm",
    "ema",
    "scale",
    "scale_by_adadelta",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_amsgrad",
    "scale_by_learning_rate",
    "scale_by_lion",
    "scale_by_rms",
    "scale_by_rss",
    "scale_by_schedule",
    "scale_by_stddev",
    "trace",
]
