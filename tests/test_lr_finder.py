"""find_learning_rate against a NumPy loop of the MXNet tutorial's range test."""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

DIM = 8


def quadratic(curvature):
    def loss_fn(params, target):
        return 0.5 * curvature * jnp.sum((params["x"] - target) ** 2)

    return loss_fn


def noisy_targets(count=100, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    return [(noise * rng.normal(size=DIM)).astype(np.float32) for _ in range(count)]


START = {"x": jnp.full(DIM, 3.0, jnp.float32)}


def numpy_range_test(curvature, targets, start_lr, end_lr, num_steps, smoothing, min_steps, factor):
    """The tutorial's loop: record, smooth, stop; plain SGD on 0.5 c |x - t|^2."""
    x = np.full(DIM, 3.0)
    rates, losses, means = [], [], []
    mean = first = None
    for i in range(num_steps):
        lr = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))
        t = targets[i % len(targets)]
        loss = 0.5 * curvature * np.sum((x - t) ** 2)
        first = loss if first is None else first
        mean = loss if mean is None else (1 - smoothing) * loss + smoothing * mean
        rates.append(lr), losses.append(loss), means.append(mean)
        if mean > factor * first and i + 1 >= min_steps:
            break
        x = x - lr * curvature * (x - t)
    return np.array(rates), np.array(losses), np.array(means)


@pytest.mark.parametrize("smoothing,min_steps", [(0.3, 20), (0.0, 5), (0.9, 40)])
def test_matches_numpy_loop(smoothing, min_steps):
    targets = noisy_targets(37)  # fewer batches than steps: they are cycled
    result = gradtx.find_learning_rate(
        quadratic(4.0),
        START,
        lambda lr: gradtx.sgd(lr),
        targets,
        start_lr=1e-4,
        end_lr=100.0,
        num_steps=80,
        smoothing=smoothing,
        min_steps=min_steps,
    )
    rates, losses, means = numpy_range_test(4.0, targets, 1e-4, 100.0, 80, smoothing, min_steps, 2)
    assert len(result.learning_rates) == len(rates) < 80  # it stopped, at the same step
    np.testing.assert_allclose(result.learning_rates, rates, rtol=1e-6)
    np.testing.assert_allclose(result.losses, losses, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(result.smoothed_losses, means, rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize("curvature", [0.5, 4.0, 50.0])
@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_suggestion_on_a_quadratic_is_near_one_over_curvature(curvature, noise):
    result = gradtx.find_learning_rate(
        quadratic(curvature), START, lambda lr: gradtx.sgd(lr), noisy_targets(noise=noise)
    )
    assert 1 / 3 < result.suggestion * curvature < 3


def test_steepest_descent_rule_sees_through_a_dip_at_the_minimum():
    steepest = gradtx.training.lr_finder.steepest_descent
    rates = np.geomspace(1e-4, 1.0, 41)  # ten per decade: the window is 2 points each side
    x = np.log(rates)
    log_m = np.ones(41)
    log_m[15:26] = 1 - 2.0 * (x[15:26] - x[15])  # the steep descent, slope -2 on log-log axes
    log_m[26:34] = log_m[25] - 0.5 * (x[26:34] - x[25])  # a gentle one, slope -0.5
    log_m[33] -= 1.0  # a one-step noisy dip that makes the minimum
    log_m[34:] = log_m[32] + 3.0 * (x[34:] - x[33])  # then divergence
    smoothed = np.exp(log_m)
    assert np.argmin(smoothed) == 33
    assert 15 <= np.searchsorted(rates, steepest(rates, smoothed)) <= 25
    # Central differences of the raw curve would have picked the dip instead:
    assert np.argmin(np.gradient(log_m, x)) in (32, 33)
    assert steepest(rates[:1], smoothed[:1]) is None
    assert steepest(rates, np.linspace(1.0, 2.0, 41)) is None  # it never went down
    assert steepest(rates[:2], np.array([2.0, 1.0])) == rates[0]


def test_one_compilation_and_no_per_step_python(caplog):
    calls = []

    def loss_fn(params, target):
        calls.append(1)
        return quadratic(2.0)(params, target)

    factory = lambda lr: gradtx.sgd(lr, momentum=0.9)  # noqa: E731
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        gradtx.find_learning_rate(loss_fn, START, factory, noisy_targets(), num_steps=100)
        gradtx.find_learning_rate(
            loss_fn, START, factory, noisy_targets(seed=1), start_lr=1e-3, smoothing=0.5
        )
    compiles = [r for r in caplog.records if "Compiling jit(_range_test)" in r.getMessage()]
    assert len(compiles) == 1
    assert len(calls) == 1  # traced once for 200 steps


def test_leaves_the_callers_params_alone():
    params = {"x": jnp.full(DIM, 3.0, jnp.float32)}
    gradtx.find_learning_rate(quadratic(1.0), params, lambda lr: gradtx.adam(lr), noisy_targets())
    np.testing.assert_array_equal(params["x"], np.full(DIM, 3.0))


def test_seeds_run_in_one_vmap_and_seed_zero_is_the_single_run():
    targets = noisy_targets(noise=0.3)
    single = gradtx.find_learning_rate(quadratic(4.0), START, lambda lr: gradtx.sgd(lr), targets)
    many = gradtx.find_learning_rate(
        quadratic(4.0), START, lambda lr: gradtx.sgd(lr), targets, num_seeds=4
    )
    assert many.losses.shape == (4, len(many.learning_rates))
    n = len(single.learning_rates)
    np.testing.assert_allclose(many.losses[0, :n], single.losses, rtol=1e-5)
    assert np.isnan(many.losses[0, n:]).all()
    assert many.suggestions[0] == pytest.approx(single.suggestion)
    low, high = many.spread
    assert low <= many.suggestion <= high
    assert not np.allclose(many.losses[1, :20], many.losses[0, :20])  # other data orders


def test_seeds_start_from_their_own_initialisation():
    def init(key):
        return {"x": 3.0 + jax.random.normal(key, (DIM,))}

    result = gradtx.find_learning_rate(
        quadratic(1.0), init, lambda lr: gradtx.sgd(lr), [np.zeros(DIM, np.float32)], num_seeds=3
    )
    keys = jax.random.split(jax.random.key(0), 3)
    first_losses = [0.5 * float(jnp.sum(init(k)["x"] ** 2)) for k in keys]
    np.testing.assert_allclose(result.losses[:, 0], first_losses, rtol=1e-5)


def test_plot_has_log_axes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = gradtx.find_learning_rate(
        quadratic(4.0), START, lambda lr: gradtx.sgd(lr), noisy_targets()
    )
    fig, ax = plt.subplots()
    assert result.plot(ax) is ax
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    xs = ax.lines[1].get_xdata()
    np.testing.assert_array_equal(xs, result.learning_rates)
    plt.close(fig)


def test_bad_input():
    sgd = lambda lr: gradtx.sgd(lr)  # noqa: E731
    loss_fn = quadratic(1.0)
    with pytest.raises(ValueError, match="start_lr must be below end_lr, got 1.0 >= 0.1"):
        gradtx.find_learning_rate(loss_fn, START, sgd, noisy_targets(), start_lr=1.0, end_lr=0.1)
    with pytest.raises(ValueError, match="batches yielded no batch"):
        gradtx.find_learning_rate(loss_fn, START, sgd, iter([]))
    with pytest.raises(ValueError, match="num_steps must be an integer >= 2"):
        gradtx.find_learning_rate(loss_fn, START, sgd, noisy_targets(), num_steps=1)
    with pytest.raises(ValueError, match=r"smoothing must be in \[0, 1\)"):
        gradtx.find_learning_rate(loss_fn, START, sgd, noisy_targets(), smoothing=1.0)
    with pytest.raises(ValueError, match=r"stop_factor must be in \(1, inf\)"):
        gradtx.find_learning_rate(loss_fn, START, sgd, noisy_targets(), stop_factor=0.5)
    with pytest.raises(ValueError, match="batch 2 differs from batch 0"):
        batches = noisy_targets(3)
        batches[2] = np.zeros(DIM + 1, np.float32)
        gradtx.find_learning_rate(loss_fn, START, sgd, batches)
    with pytest.raises(TypeError, match="function learning_rate -> transform"):
        gradtx.find_learning_rate(loss_fn, START, gradtx.sgd(0.1), noisy_targets())


def test_a_loss_that_is_nan_from_the_start_is_reported_not_suggested():
    def nan_loss(params, target):
        return jnp.sum(params["x"] - target) * jnp.nan

    with pytest.raises(ValueError, match="loss is nan at the first step, before any update"):
        gradtx.find_learning_rate(nan_loss, START, lambda lr: gradtx.sgd(lr), noisy_targets())


def test_divergence_to_nan_ends_the_run_before_the_nan():
    # From lr > 2/c the quadratic blows up; with a huge curvature it overflows to inf, then NaN.
    result = gradtx.find_learning_rate(
        quadratic(1e6), START, lambda lr: gradtx.sgd(lr), noisy_targets(), min_steps=100
    )
    assert np.isfinite(result.losses).all() and np.isfinite(result.smoothed_losses).all()
    assert len(result.learning_rates) < 100
    assert 1 / 3 < result.suggestion * 1e6 < 3
