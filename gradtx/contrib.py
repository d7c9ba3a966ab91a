"""The learners optax keeps in ``optax.contrib``, under the same names, so optax code ports.

Each lives in gradtx's own modules like every other learner; this namespace only
re-exports them. optax 0.2.x still answers ``optax.dpsgd`` and
``optax.differentially_private_aggregate`` with a ``DeprecationWarning`` that
points here; ``gradtx`` does the same.
"""

from gradtx.learners.large_batch import dpsgd
from gradtx.transforms.private import (
    DifferentiallyPrivateAggregateState,
    differentially_private_aggregate,
)

__all__ = [
    "DifferentiallyPrivateAggregateState",
    "differentially_private_aggregate",
    "dpsgd",
]
