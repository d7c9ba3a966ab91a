"""The learners optax keeps in ``optax.contrib``, under the same names, so optax code ports.

Each lives in gradtx's own modules like every other learner; this namespace only
re-exports them. optax 0.2.x still answers ``optax.dpsgd`` and
``optax.differentially_private_aggregate`` with a ``DeprecationWarning`` that
points here; ``gradtx`` does the same.
"""

from gradtx.learners.adam_variants import (
    acprop,
    ademamix,
    adopt,
    madgrad,
    momo,
    momo_adam,
    simplified_ademamix,
)
from gradtx.learners.large_batch import dpsgd
from gradtx.learners.lr_free import (
    cocob,
    dog,
    dowg,
)
from gradtx.learners.muon import muon
from gradtx.learners.schedule_free import (
    schedule_free_adamw,
    schedule_free_sgd,
)
from gradtx.learners.sophia import sophia
from gradtx.transforms.acprop import scale_by_acprop
from gradtx.transforms.ademamix import (
    ScaleByAdemamixState,
    ScaleBySimplifiedAdEMAMixState,
    scale_by_ademamix,
    scale_by_simplified_ademamix,
)
from gradtx.transforms.adopt import scale_by_adopt
from gradtx.transforms.cocob import (
    COCOBState,
    scale_by_cocob,
)
from gradtx.transforms.dadapt import (
    DAdaptAdamWState,
    dadapt_adamw,
)
from gradtx.transforms.dog import (
    DoGState,
    DoWGState,
    scale_by_dog,
    scale_by_dowg,
)
from gradtx.transforms.madgrad import (
    MadgradState,
    scale_by_madgrad,
)
from gradtx.transforms.mechanic import (
    MechanicState,
    mechanize,
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
from gradtx.transforms.private import (
    DifferentiallyPrivateAggregateState,
    differentially_private_aggregate,
)
from gradtx.transforms.prodigy import (
    ProdigyState,
    prodigy,
)
from gradtx.transforms.sam import (
    NormalizeState,
    SAMState,
    normalize,
    sam,
)
from gradtx.transforms.schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_eval_params,
)
from gradtx.transforms.sophia import (
    HutchinsonState,
    SophiaState,
    hutchinson_estimator_diag_hessian,
)

__all__ = [
    "acprop",
    "ademamix",
    "adopt",
    "cocob",
    "COCOBState",
    "dadapt_adamw",
    "DAdaptAdamWState",
    "differentially_private_aggregate",
    "DifferentiallyPrivateAggregateState",
    "dog",
    "DoGState",
    "dowg",
    "DoWGState",
    "dpsgd",
    "hutchinson_estimator_diag_hessian",
    "HutchinsonState",
    "madgrad",
    "MadgradState",
    "MechanicState",
    "mechanize",
    "momo",
    "momo_adam",
    "MomoAdamState",
    "MomoState",
    "muon",
    "MuonDimensionNumbers",
    "MuonState",
    "normalize",
    "NormalizeState",
    "orthogonalize_via_newton_schulz",
    "prodigy",
    "ProdigyState",
    "sam",
    "SAMState",
    "scale_by_acprop",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_cocob",
    "scale_by_dog",
    "scale_by_dowg",
    "scale_by_madgrad",
    "scale_by_muon",
    "scale_by_simplified_ademamix",
    "ScaleByAdemamixState",
    "ScaleBySimplifiedAdEMAMixState",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_sgd",
    "ScheduleFreeState",
    "simplified_ademamix",
    "sophia",
    "SophiaState",
]
