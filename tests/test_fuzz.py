"""Fuzz: random chains of the catalogue's transforms and random schedules, same checks.

Off by default (it is slow); run with ``GRADTX_FUZZ=1`` (and ``GRADTX_FUZZ_EXAMPLES=N``,
200 by default) e.g. ``GRADTX_FUZZ=1 python -m pytest tests/test_fuzz.py``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_catalogue import BUILDERS, EXTRA, FACTORIES, SCHEDULES

import gradtx
from gradtx.testing import check_schedule, check_transform, hyperparameters, pytrees

pytestmark = pytest.mark.skipif(not os.environ.get("GRADTX_FUZZ"), reason="set GRADTX_FUZZ=1")
EXAMPLES = int(os.environ.get("GRADTX_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


def build(name, data):
    if name in BUILDERS:
        return BUILDERS[name]()
    return getattr(gradtx, name)(**data.draw(hyperparameters(getattr(gradtx, name))))


@FUZZ
@given(
    params=pytrees(max_leaves=5),
    names=st.lists(st.sampled_from(FACTORIES), min_size=1, max_size=3),
    data=st.data(),
)
def test_random_chains(params, names, data):
    tx = gradtx.chain(*(build(n, data) for n in names))
    check_transform(tx, params, extra=EXTRA, name=" -> ".join(names))


@FUZZ
@given(
    params=pytrees(max_leaves=4),
    schedule_name=st.sampled_from(sorted(SCHEDULES)),
    learner=st.sampled_from(["sgd", "adam", "adamw", "rmsprop", "adagrad", "lion"]),
    data=st.data(),
)
def test_random_schedules_drive_learners(params, schedule_name, learner, data):
    schedule = data.draw(SCHEDULES[schedule_name])
    check_schedule(schedule)
    check_transform(getattr(gradtx, learner)(schedule), params, extra=EXTRA, name=learner)
