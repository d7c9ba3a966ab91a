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

__all__ = [
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "amsgrad",
    "lion",
    "nadam",
    "rmsprop",
    "sgd",
]
