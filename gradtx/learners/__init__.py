"""Named learners, each a visible chain of building blocks, one family per module.

Conventions shared by every learner here:

* ``learning_rate`` (and ``momentum`` where present) is a number, an array, a
  tracer or a schedule of the step count.
* ``weight_decay`` in a learner without "w" in its name is torch's coupled L2:
  :math:`\\lambda\\theta` is added to the gradient before anything else. In
  ``adamw`` and ``lion`` it is decoupled: added after the adaptive scaling.
* With the default arguments each learner gives the same numbers as its optax
  namesake; the docstring says which arguments reproduce torch.optim.
"""

from gradtx.learners.adam_relatives import (
    adabelief,
    adamaxw,
    adan,
    nadamw,
    novograd,
    radam,
    yogi,
)
from gradtx.learners.adam_variants import (
    acprop,
    ademamix,
    adopt,
    madgrad,
    momo,
    momo_adam,
    simplified_ademamix,
)
from gradtx.learners.basic import (
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
from gradtx.learners.large_batch import (
    adafactor,
    lamb,
    lars,
)
from gradtx.learners.lbfgs import (
    lbfgs,
)
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
from gradtx.learners.sign_family import (
    fromage,
    noisy_sgd,
    optimistic_adam,
    optimistic_adam_v2,
    optimistic_gradient_descent,
    polyak_sgd,
    rprop,
    sign_sgd,
    signum,
    sm3,
)
from gradtx.learners.sophia import sophia

__all__ = [
    "acprop",
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "adan",
    "ademamix",
    "adopt",
    "amsgrad",
    "cocob",
    "dog",
    "dowg",
    "fromage",
    "lamb",
    "lars",
    "lbfgs",
    "lion",
    "madgrad",
    "momo",
    "momo_adam",
    "muon",
    "nadam",
    "nadamw",
    "noisy_sgd",
    "novograd",
    "optimistic_adam",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "polyak_sgd",
    "radam",
    "rmsprop",
    "rprop",
    "schedule_free_adamw",
    "schedule_free_sgd",
    "sgd",
    "sign_sgd",
    "signum",
    "simplified_ademamix",
    "sm3",
    "sophia",
    "yogi",
]
