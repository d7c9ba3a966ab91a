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

__all__ = [
    "adabelief",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "adan",
    "amsgrad",
    "fromage",
    "lamb",
    "lars",
    "lbfgs",
    "lion",
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
    "sgd",
    "sign_sgd",
    "signum",
    "sm3",
    "yogi",
]
