"""Training tools: a jitted train step, a Trainer loop, a learning-rate finder and sweeps."""

from gradtx.training.evaluation import eval_params
from gradtx.training.lr_finder import LRFinderResult, find_learning_rate
from gradtx.training.sharding import zero_shardings
from gradtx.training.step import make_train_step
from gradtx.training.sweep import SweepResult, sweep
from gradtx.training.trainer import Trainer

__all__ = [
    "LRFinderResult",
    "SweepResult",
    "Trainer",
    "eval_params",
    "find_learning_rate",
    "make_train_step",
    "sweep",
    "zero_shardings",
]
