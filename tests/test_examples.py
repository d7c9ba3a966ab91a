"""The examples run and reach the figures their docs promise."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

import gradtx

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_reaches_ninety_percent():
    accuracy = _load("quickstart").main(epochs=20)
    assert accuracy > 0.9


def test_schedules_gallery_writes_its_png(tmp_path):
    out = tmp_path / "gallery.png"
    _load("schedules_gallery").main(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cntk_walkthrough_matches_closed_forms(capsys):
    example = _load("cntk_learners")
    example.main()
    assert "momentum time constant 300 samples" in capsys.readouterr().out
    learners = example.learners(300)
    for b in example.BATCH_SIZES:
        # A rate of 0.1 per minibatch on the mean gradient 1: -0.1 per update.
        np.testing.assert_allclose(
            example.trajectory(learners["sgd"], b), -0.1 * np.arange(1, 11), rtol=1e-5
        )
        np.testing.assert_allclose(
            example.trajectory(learners["expression: sgd / samples"], b),
            -0.1 * np.arange(1, 11),
            rtol=1e-5,
        )
        # Momentum without unit gain: v_t = m v_{t-1} + 0.1, p_n = -sum_t v_t.
        m = math.exp(-b / 300)
        v = 0.1 * (1 - m ** np.arange(1, 11)) / (1 - m)
        np.testing.assert_allclose(
            example.trajectory(learners["momentum_sgd (unit_gain=False)"], b),
            -np.cumsum(v),
            rtol=1e-5,
        )


def test_param_groups_example():
    example = _load("param_groups")
    _, state, accuracy = example.torch_lab(epochs=12)
    rates = gradtx.get_hyperparams(state)
    np.testing.assert_allclose(rates["group2/learning_rate"], 0.05 * 0.01, rtol=1e-5)
    np.testing.assert_allclose(rates["group1/learning_rate"], 0.05)
    assert accuracy > 0.9
    params, _, accuracy = example.cntk_learners(epochs=12)
    assert accuracy > 0.85
    assert not np.any(params["layer1"]["b"]) and not np.any(params["layer2"]["b"])
