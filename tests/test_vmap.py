"""vmap over hyperparameters: each slice of a batched run equals the unbatched run."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_vmap_equals_loop, make_params, run

import gradtx

LEARNERS = {
    "sgd": lambda lr: gradtx.sgd(lr),
    "sgd_momentum": lambda lr: gradtx.sgd(lr, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adagrad": lambda lr: gradtx.adagrad(lr),
    "rmsprop": lambda lr: gradtx.rmsprop(lr, centered=True, momentum=0.5),
    "adam": lambda lr: gradtx.adam(lr),
    "adamw": lambda lr: gradtx.adamw(lr, weight_decay=0.1),
    "amsgrad": lambda lr: gradtx.amsgrad(lr),
    "adamax": lambda lr: gradtx.adamax(lr),
    "nadam": lambda lr: gradtx.nadam(lr),
    "adadelta": lambda lr: gradtx.adadelta(lr),
    "lion": lambda lr: gradtx.lion(lr),
}
LRS = np.geomspace(1e-3, 1e-1, 8).astype(np.float32)


def _batched_equals_loop(make_opt, values, steps=10):
    params = make_params()
    assert_vmap_equals_loop(lambda v: run(make_opt(v), params, steps), values)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_vmap_over_learning_rate(name):
    _batched_equals_loop(LEARNERS[name], LRS)


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda m: gradtx.sgd(0.01, momentum=m),
        lambda b1: gradtx.adam(0.01, b1=b1),
        lambda b2: gradtx.adam(0.01, b2=b2),
        lambda d: gradtx.rmsprop(0.01, decay=d),
        lambda wd: gradtx.adamw(0.01, weight_decay=wd),
        # A schedule's parameter is a hyperparameter too.
        lambda peak: gradtx.adam(lambda c: peak * jnp.minimum(1.0, (c + 1) / 5)),
    ],
    ids=["sgd_momentum", "adam_b1", "adam_b2", "rmsprop_decay", "adamw_wd", "schedule_peak"],
)
def test_vmap_over_other_hyperparameters(make_opt):
    _batched_equals_loop(make_opt, np.linspace(0.1, 0.95, 4).astype(np.float32))
