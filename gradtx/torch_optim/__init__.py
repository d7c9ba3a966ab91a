"""torch.optim's learners and schedulers with torch's names, defaults and numbers.

Each learner is a chain of gradtx blocks that reproduces the torch.optim class of the
same name step for step (lowercase, ``lr`` first, torch's argument names and order);
each scheduler is a pure function of the update count. They are checked against real
torch: 200 steps of every learner and flag at 1e-12 in float64, every scheduler at
every count to 3,000. See :mod:`gradtx.torch_optim.basic` (SGD, Adam, AdamW, Adagrad,
Adamax, Adadelta, RMSprop), :mod:`gradtx.torch_optim.adaptive` (NAdam, RAdam, Rprop,
ASGD, Adafactor), :mod:`gradtx.torch_optim.lbfgs`, :mod:`gradtx.torch_optim.schedulers` and
:mod:`gradtx.torch_optim.swa` (AveragedModel and SWALR); a torch optimizer's
``state_dict()`` becomes the matching learner's state with
:func:`gradtx.torch_optim.from_torch_state_dict`.

A complex parameter is updated as torch updates it: JAX's gradient of it is the
conjugate of torch's ``.grad``, and the learners conjugate it first.
"""

from gradtx.torch_optim.adaptive import (
    AdafactorState,
    ASGDState,
    NAdamState,
    RAdamState,
    adafactor,
    asgd,
    asgd_averaged_params,
    nadam,
    radam,
    rprop,
)
from gradtx.torch_optim.basic import (
    DecoupledDecayState,
    SGDMomentumState,
    TorchAdamState,
    adadelta,
    adagrad,
    adam,
    adamax,
    adamw,
    rmsprop,
    sgd,
)
from gradtx.torch_optim.convert import from_torch_state_dict
from gradtx.torch_optim.lbfgs import LBFGSState, lbfgs, lbfgs_step
from gradtx.torch_optim.muon import TorchMuonState, muon
from gradtx.torch_optim.schedulers import (
    ReduceLROnPlateauState,
    TorchSchedule,
    chained_scheduler,
    constant_lr,
    cosine_annealing_lr,
    cosine_annealing_warm_restarts,
    cyclic_lr,
    exponential_lr,
    lambda_lr,
    linear_lr,
    multi_step_lr,
    multiplicative_lr,
    one_cycle_lr,
    polynomial_lr,
    reduce_lr_on_plateau,
    sequential_lr,
    step_lr,
)
from gradtx.torch_optim.swa import (
    AveragedModelState,
    averaged_model,
    averaged_model_params,
    swalr,
)

__all__ = [
    "ASGDState",
    "AveragedModelState",
    "AdafactorState",
    "DecoupledDecayState",
    "LBFGSState",
    "NAdamState",
    "RAdamState",
    "ReduceLROnPlateauState",
    "SGDMomentumState",
    "TorchAdamState",
    "TorchMuonState",
    "TorchSchedule",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "asgd",
    "asgd_averaged_params",
    "averaged_model",
    "averaged_model_params",
    "chained_scheduler",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "exponential_lr",
    "from_torch_state_dict",
    "lambda_lr",
    "lbfgs",
    "lbfgs_step",
    "linear_lr",
    "multi_step_lr",
    "multiplicative_lr",
    "muon",
    "nadam",
    "one_cycle_lr",
    "polynomial_lr",
    "radam",
    "reduce_lr_on_plateau",
    "rmsprop",
    "rprop",
    "sequential_lr",
    "sgd",
    "step_lr",
    "swalr",
]
