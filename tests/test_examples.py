"""The examples run and reach the figures their docs promise."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

import gradtx

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))  # as when run as scripts: they share examples/digits_data.py


def _load(name: str):
    return load_script(EXAMPLES / f"{name}.py")


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


def test_lr_finder_example_suggests_a_rate_that_trains(tmp_path, capsys):
    out = tmp_path / "lr_finder.png"
    suggestion, accuracy = _load("lr_finder").main(out, epochs=10)
    assert 0.05 < suggestion < 0.6  # SGD with momentum 0.9 trains well from 0.1 to 0.3 here
    assert accuracy > 0.95
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "suggested learning rate" in capsys.readouterr().out


def test_trainer_example_decays_the_rate_and_round_trips(tmp_path, capsys):
    trainer = _load("trainer").main(tmp_path / "trainer.png", epochs=4)
    text = capsys.readouterr().out
    assert "after trainer.set_learning_rate(0.05): 0.05" in text
    assert "params identical True" in text
    rates = [s["learning_rate"] for s in trainer.epochs]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.05, 0.05], rtol=1e-6)
    assert trainer.epochs[-1]["test_accuracy"] > 0.93


def test_equinox_example_trains_the_mlp_with_its_static_leaves(capsys):
    accuracy = _load("equinox_digits").main(epochs=6)  # measured: 0.938 (0.967 after 20)
    assert accuracy > 0.9
    assert f"test accuracy {accuracy:.4f}" in capsys.readouterr().out


def test_sweep_example_chooses_on_validation_and_reports_test(tmp_path, capsys):
    result = _load("sweep").main(tmp_path / "sweep.png", steps=300)
    metrics = result.metrics
    assert metrics["test_accuracy"].shape == (32, 2)
    i, j = result.best_index
    # Chosen on the validation loss, never on the test set.
    assert (i, j) == np.unravel_index(np.argmin(metrics["val_loss"]), (32, 2))
    assert metrics["test_accuracy"][i, j] > 0.95
    assert metrics["val_accuracy"][0, 0] < 0.5  # the smallest rate has not trained yet
    out = capsys.readouterr().out
    assert "64 configurations x 3 seeds of 300 steps in one sweep call" in out
    assert f"test accuracy {metrics['test_accuracy'][i, j]:.4f}" in out
    assert (tmp_path / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _run_example(*args: str, script: str = "data_parallel.py") -> str:
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_data_parallel_example_one_and_two_processes():
    one = _run_example("--steps", "30")
    assert "mesh {'data': 4, 'model': 2} over 8 devices, 1 process(es) with 8 each" in one
    assert "its Adam moment P(None, 'model')" in one
    two = _run_example("--steps", "30", "--processes", "2")
    assert "2 process(es) with 4 each" in two
    assert "[Gloo]" not in two  # gloo's connection log is not the example's output
    losses = lambda text: [line for line in text.splitlines() if line.startswith("step")]  # noqa: E731
    assert losses(one) == losses(two)  # the same run, printed to 4 decimals


@pytest.mark.slow  # 8 devices on 2 cores, six runs of 10 epochs: with GRADTX_SLOW=1
def test_compressed_training_keeps_2bit_1bit_and_powersgd_within_a_point(tmp_path):
    out = _run_example("--out", str(tmp_path / "c.png"), script="compressed_training.py")
    accuracy = {
        line.split()[0]: float(line.split("test accuracy ")[1].split("%")[0])
        for line in out.splitlines()
        if "test accuracy" in line
    }
    assert set(accuracy) == {"float32", "bf16", "int8", "2bit,", "1bit", "PowerSGD,"}, out
    assert accuracy["float32"] > 94, out
    for scheme in ("2bit,", "1bit", "PowerSGD,"):
        assert abs(accuracy[scheme] - accuracy["float32"]) <= 1.0, out
    assert abs(accuracy["int8"] - accuracy["float32"]) <= 0.3, out
    assert (tmp_path / "c.png").stat().st_size > 10_000


def test_custom_transform_example_reports_the_impure_one(capsys):
    report = _load("custom_transform").main()
    out = capsys.readouterr().out
    assert out.count("all checks pass") == 3
    assert "check_transform(impure_warmup): 5 properties failed" in report
    assert "update is pure" in report and "jit agrees with no jit" in report


@pytest.mark.slow
def test_learner_gallery_trains_every_learner(tmp_path):
    out = tmp_path / "learner_gallery.png"
    result = _load("learner_gallery").main(out, steps=100, points=3, rosenbrock_steps=100)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    digits = result["digits"]
    assert {run["name"] for run in digits.values()} == set(gradtx.learners.__all__)
    initial = {run["initial"] for run in digits.values()}
    assert len(initial) == 1 and 2.2 < initial.pop() < 2.5  # one start for all, near log(10)
    for label, run in digits.items():  # at its best rate, every learner halves the loss at least
        assert run["final"] < 0.5 * run["initial"], (label, run)
    np.testing.assert_allclose(result["rosenbrock"]["lbfgs"]["end"], [1.0, 1.0], atol=1e-3)


def test_torch_lab_trains_every_configuration_as_torch_does():
    example = _load("torch_lab")
    float64 = example.main(verbose=False)
    assert list(float64) == [config.name for config in example.CONFIGS]
    for name, run in float64.items():
        assert run["accuracy"] > 0.93, (name, run)  # 0.94 (Adam) to 0.98 (warm-up, cosine)
    if example.torch is None:
        assert all(run["difference"] is None for run in float64.values())
        return
    for name, run in float64.items():  # measured: 2e-15 at most after 315 updates
        assert run["difference"] < 1e-12 and run["torch_accuracy"] == run["accuracy"], (name, run)
    for name, run in example.main(float64=False, verbose=False).items():  # measured: 1e-6
        assert run["difference"] < 1e-5 and run["accuracy"] > 0.93, (name, run)
    # The comparison sees a schedule stepped at the wrong time: MultiStepLR per update, not epoch.
    per_update = example.Config(
        "per update",
        lambda k: example.torch_optim.sgd(
            lr=example.torch_optim.multi_step_lr(0.1, [6, 11], 0.1), momentum=0.9, weight_decay=5e-4
        ),
        example.torch_multi_step,
        "epoch",
    )
    x_train, _, y_train, _ = example.split()
    initial = example.init_mlp(example.jax.random.key(0))
    ours = example.train_gradtx(per_update, initial, (x_train, y_train), epochs=2)
    with example.one_torch_thread():
        theirs = example.train_torch(per_update, initial, (x_train, y_train), epochs=2)
    assert example.relative_difference(ours, theirs) > 1e-2


@pytest.mark.slow  # about 50 s / 15 s of CPU: with GRADTX_SLOW=1
def test_modern_learners_example_trains_every_contrib_learner(tmp_path):
    out = tmp_path / "modern_learners.png"
    figures = _load("modern_learners").main(out, epochs=10)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {"adamw", "prodigy", "dadapt_adamw", "dog", "cocob", "mechanize(adam(1.0))", "muon",
            "schedule_free_adamw", "adopt", "ademamix", "madgrad", "acprop(eps_root=1e-8)",
            "sophia", "momo", "momo_adam"} <= set(figures)  # fmt: skip
    initial = [run["initial"] for run in figures.values()]  # one start for all, near log(10)
    assert np.ptp(initial) < 1e-5 and 2.2 < initial[0] < 2.5
    # What docs/modern_learners.md says fails here: optax's ACProp diverges (704 after 210
    # steps), DoWG blows up to 4.3 and ends at chance (10%), and the range test's rate for
    # Sophia (0.028) is ten times the best of a sweep (0.36 against 0.024, 88% against 97%).
    # If one of them trains, fix the page.
    failing = {"acprop (optax's defaults)", "dowg", "sophia"}
    assert figures["acprop (optax's defaults)"]["final"] > 100
    assert figures["dowg"]["highest"] > 3 and figures["dowg"]["test_accuracy"] < 0.3
    assert figures["sophia"]["rate_from"] == "finder" and figures["sophia"]["final"] > 0.2
    for label, run in figures.items():  # measured: 0.0066 (ademamix) to 0.21 (dog), 92% or more
        if label not in failing:
            assert run["final"] < 0.15 * run["initial"], (label, run)
            assert run["test_accuracy"] > 0.88, (label, run)
    for label in ("adamw", "prodigy", "cocob", "ademamix", "madgrad", "momo_adam",
                  "schedule_free_adamw"):  # fmt: skip  # measured: 97.1% to 98.2%
        assert figures[label]["test_accuracy"] > 0.95, (label, figures[label])
    assert figures["adamw"]["rate_from"] == "sweep" and 0.01 < figures["adamw"]["rate"] < 0.2
    assert figures["prodigy"]["rate"] is None  # the learning-rate-free ones keep their defaults
    assert all(1e-4 < run["rate"] < 2 for run in figures.values() if run["rate_from"] == "finder")
    schedule_free = figures["schedule_free_adamw"]  # its eval params differ from the trained ones
    assert schedule_free["final"] != schedule_free["trained_final"]
    assert figures["adamw"]["final"] == figures["adamw"]["trained_final"]


PICTURE_EXAMPLES = [
    "schedules_gallery", "lr_finder", "trainer", "sweep", "learner_gallery", "modern_learners",
    "compressed_training",
]  # fmt: skip


@pytest.mark.parametrize("name", PICTURE_EXAMPLES)
def test_examples_write_untracked_outputs_by_default(name):
    import shutil
    import subprocess

    out = _load(name).OUT
    root = EXAMPLES.parent
    assert out.parent == root / "outputs", out  # never the tracked docs/assets/
    if shutil.which("git") and (root / ".git").exists():
        ignored = subprocess.run(["git", "check-ignore", "-q", str(out)], cwd=root)
        assert ignored.returncode == 0, f"{out} is not gitignored"
    regenerate = load_script(root / "docs" / "regenerate_assets.py")
    assert regenerate.EXAMPLES[out.name] == f"{name}.py"  # and the docs' copy is redrawn there
