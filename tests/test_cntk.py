"""gradtx.cntk against NumPy loops written from CNTK's update code (CPUMatrix.cpp, Learner.cpp).

The references step a float64 parameter with summed gradients over minibatches
whose sizes change from step to step, resolving rates and momenta by CNTK's
unit rules themselves.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_vmap_equals_loop

import gradtx
from gradtx import cntk as C

BATCHES = [2, 10, 32, 7, 1, 16, 10, 3, 25, 8, 4, 12]
SHAPE = (3, 5)


def gradients():
    rng = np.random.default_rng(7)
    return [rng.normal(size=SHAPE) * b for b in BATCHES]  # sums over b samples


# Reference unit rules. A spec is (unit or kind, values, epoch_size).
def rate(spec, minibatches, samples, batch):
    unit, values, epoch = spec
    progress = samples if unit == "sample" else minibatches
    value = values[min(progress // epoch, len(values) - 1)]
    return value / batch if unit == "minibatch" else value


def momentum(spec, minibatches, samples, batch):
    kind, values, epoch = spec
    progress = minibatches if kind == "minibatch" else samples
    value = values[min(progress // epoch, len(values) - 1)]
    if kind == "time_constant":
        return math.exp(-batch / value) if value > 0 else 0.0
    return value**batch if kind == "sample" else value


def to_lr(spec):
    unit, values, epoch = spec
    return C.learning_rate_schedule(values, unit, epoch)


def to_momentum(spec):
    kind, values, epoch = spec
    make = {
        "minibatch": C.momentum_schedule,
        "sample": C.momentum_schedule_per_sample,
        "time_constant": C.momentum_as_time_constant_schedule,
    }[kind]
    return make(values, epoch)


def reference(step, lr_spec, state):
    """Run a reference ``step(p, g, eta, batch, minibatches, samples, state)`` over BATCHES."""
    p = np.linspace(-1.0, 1.0, np.prod(SHAPE)).reshape(SHAPE)
    minibatches = samples = 0
    for g, batch in zip(gradients(), BATCHES, strict=True):
        eta = rate(lr_spec, minibatches, samples, batch)
        p = step(p, g.copy(), eta, batch, minibatches, samples, state)
        minibatches += 1
        samples += batch
    return p


def run(opt, jit=True):
    p = {"w": jnp.asarray(np.linspace(-1.0, 1.0, np.prod(SHAPE)).reshape(SHAPE), jnp.float32)}
    state = opt.init(p)
    update = jax.jit(opt.update) if jit else opt.update
    for g, batch in zip(gradients(), BATCHES, strict=True):
        updates, state = update({"w": jnp.asarray(g, jnp.float32)}, state, p, batch_size=batch)
        p = gradtx.apply_updates(p, updates)
    return np.asarray(p["w"])


LR_SPECS = [("minibatch", [0.05, 0.02], 5), ("sample", [0.002, 0.001], 60)]
MOMENTUM_SPECS = [
    ("minibatch", [0.9], 1),
    ("time_constant", [300.0, 100.0], 50),
    ("sample", [0.99], 1),
]


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("lr_spec", LR_SPECS)
@pytest.mark.parametrize("jit", [False, True])
def test_sgd(lr_spec, jit):
    def step(p, g, eta, *_):
        return p - eta * g

    close(run(C.sgd(to_lr(lr_spec)), jit), reference(step, lr_spec, {}))


@pytest.mark.parametrize("lr_spec", LR_SPECS)
@pytest.mark.parametrize("m_spec", MOMENTUM_SPECS)
@pytest.mark.parametrize("unit_gain", [True, False])
@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_sgd_and_nesterov(lr_spec, m_spec, unit_gain, nesterov):
    def step(p, g, eta, batch, minibatches, samples, state):
        m = momentum(m_spec, minibatches, samples, batch)
        k = 1 - m if unit_gain else 1.0
        v = state["v"] = m * state.get("v", 0.0) + k * eta * g
        return p - (m * v + k * eta * g if nesterov else v)

    learner = C.nesterov if nesterov else C.momentum_sgd
    opt = learner(to_lr(lr_spec), to_momentum(m_spec), unit_gain)
    close(run(opt), reference(step, lr_spec, {}))


@pytest.mark.parametrize("lr_spec", LR_SPECS)
@pytest.mark.parametrize("need_ave", [True, False])
def test_adagrad(lr_spec, need_ave):
    def step(p, g, eta, batch, minibatches, samples, state):
        acc = state["acc"] = state.get("acc", 0.0) + g * g
        a = 1 / np.sqrt(acc + 1e-16)
        ave = a.mean() if need_ave else 1.0
        return p - eta / ave * g * a

    close(run(C.adagrad(to_lr(lr_spec), need_ave)), reference(step, lr_spec, {}))


# CNTK's own tutorial calls rmsprop with max=inf (no upper clamp) and min=1e-30.
RMSPROP_SETTINGS = [(0.9, 1.2, 0.6, 0.05, 0.001), (0.999, 1 + 1e-9, 1 - 1e-9, np.inf, 1e-30)]


@pytest.mark.parametrize("lr_spec", LR_SPECS)
@pytest.mark.parametrize("need_ave", [True, False])
@pytest.mark.parametrize("settings", RMSPROP_SETTINGS)
def test_rmsprop(lr_spec, need_ave, settings):
    gamma, inc, dec, top, bottom = settings

    def step(p, g, eta, batch, minibatches, samples, state):
        if "avars" not in state:  # CNTK seeds the mean square with the first gradient
            state.update(avars=g * g, signs=np.zeros_like(g), steps=np.full_like(g, 0.02))
        avars = state["avars"] = gamma * state["avars"] + (1 - gamma) * g * g
        sign = np.sign(g)
        steps = state["steps"] = np.where(
            state["signs"] * sign > 0,
            np.minimum(state["steps"] * inc, top),
            np.maximum(state["steps"] * dec, bottom),
        )
        a = steps / np.sqrt(avars + 1e-6)
        state["signs"] = sign
        ave = a.mean() if need_ave else 1.0
        return p - eta / ave * g * a

    # The random gradients change sign between steps, so both branches of the step rule run.
    opt = C.rmsprop(to_lr(lr_spec), gamma, inc, dec, top, bottom, need_ave)
    close(run(opt), reference(step, lr_spec, {}))


@pytest.mark.parametrize("lr_spec", LR_SPECS)
@pytest.mark.parametrize("m_spec", MOMENTUM_SPECS[:2])
@pytest.mark.parametrize("unit_gain", [True, False])
def test_fsadagrad(lr_spec, m_spec, unit_gain):
    vm_spec = ("time_constant", [720000.0], 1)

    def step(p, g, eta, batch, minibatches, samples, state):
        vm = momentum(vm_spec, minibatches, samples, batch)
        m = momentum(m_spec, minibatches, samples, batch)
        c = state["c"] = vm * state.get("c", 0.0) + (1 - vm) * batch
        ada = state["ada"] = vm * state.get("ada", 0.0) + (1 - vm) * g * g
        w = np.where(ada != 0, np.minimum(np.sqrt(c) / np.sqrt(ada), 10.0), 1.0)
        g = g * w
        if m > 0:
            g = state["mom"] = m * state.get("mom", 0.0) + (1 - m if unit_gain else 1.0) * g
        return p - eta * g

    opt = C.fsadagrad(to_lr(lr_spec), to_momentum(m_spec), unit_gain)
    close(run(opt), reference(step, lr_spec, {}))


@pytest.mark.parametrize("lr_spec", LR_SPECS)
@pytest.mark.parametrize("m_spec", MOMENTUM_SPECS)
@pytest.mark.parametrize("unit_gain", [True, False])
@pytest.mark.parametrize("adamax", [False, True])
def test_adam(lr_spec, m_spec, unit_gain, adamax):
    vm_spec = ("time_constant", [720000.0], 1)

    def step(p, g, eta, batch, minibatches, samples, state):
        b1 = momentum(m_spec, minibatches, samples, batch)
        b2 = momentum(vm_spec, minibatches, samples, batch)
        t = minibatches + 1
        if adamax:
            ada = state["ada"] = np.maximum(b2 * state.get("ada", 0.0), np.abs(g))
            correction, denom = 1 / (1 - b1**t), ada
        else:
            ada = state["ada"] = b2 * state.get("ada", 0.0) + (1 - b2) * g * g
            correction, denom = math.sqrt(1 - b2**t) / (1 - b1**t), np.sqrt(ada)
        mom = state["mom"] = b1 * state.get("mom", 0.0) + (1 - b1 if unit_gain else 1.0) * g
        return p - eta * mom * correction / (denom + 1e-8)

    opt = C.adam(to_lr(lr_spec), to_momentum(m_spec), unit_gain, adamax=adamax)
    close(run(opt), reference(step, lr_spec, {}))


@pytest.mark.parametrize("lr_spec", [("sample", [1.0], 1), ("minibatch", [0.5], 1)])
def test_adadelta(lr_spec):
    rho, eps = 0.95, 1e-8

    def step(p, g, eta, batch, minibatches, samples, state):
        ada = state["ada"] = rho * state.get("ada", 0.0) + (1 - rho) * g * g
        x2 = state.get("x2", 0.0)
        dx = -np.sqrt(x2 + eps) / np.sqrt(ada + eps) * g
        state["x2"] = rho * x2 + (1 - rho) * dx * dx
        return p + eta * dx

    opt = C.adadelta() if lr_spec[0] == "sample" else C.adadelta(to_lr(lr_spec))
    close(run(opt), reference(step, lr_spec, {}))


def test_tutorial_learning_rate_schedule():
    schedule = C.learning_rate_schedule(
        [0.05] * 3 + [0.025] * 2 + [0.0125], C.UnitType.minibatch, epoch_size=100
    )
    minibatches = jnp.arange(800)
    per_minibatch = schedule(minibatches, minibatches * 0, jnp.ones_like(minibatches))
    expected = np.where(np.arange(800) < 300, 0.05, np.where(np.arange(800) < 500, 0.025, 0.0125))
    np.testing.assert_allclose(per_minibatch, expected, rtol=1e-7)
    # A per-minibatch rate is divided by the minibatch size.
    np.testing.assert_allclose(schedule(0, 0, 32), 0.05 / 32, rtol=1e-7)


def test_time_constant_equals_its_momentum():
    """momentum_as_time_constant_schedule(300) at batch 10 is momentum_schedule(exp(-10/300))."""

    def run_fixed(m):
        opt = C.momentum_sgd(0.1, m)
        p = {"w": jnp.ones(4)}
        state = opt.init(p)
        out = []
        for i in range(6):
            u, state = opt.update({"w": jnp.full(4, 1.0 + i)}, state, p, batch_size=10)
            out.append(np.asarray(u["w"]))
        return np.array(out)

    np.testing.assert_allclose(
        run_fixed(C.momentum_as_time_constant_schedule(300)),
        run_fixed(C.momentum_schedule(math.exp(-10 / 300))),
        rtol=1e-6,
    )
    assert math.isclose(C.momentum_from_time_constant(300, 10), math.exp(-10 / 300))
    assert math.isclose(C.time_constant_from_momentum(math.exp(-10 / 300), 10), 300)


def test_unit_gain_with_scaled_rate_equals_plain_momentum():
    """For a constant gradient, unit gain with rate 1/(1-m) equals no unit gain with rate 1."""
    m = 0.9

    def final(opt):
        p = {"w": jnp.zeros(3)}
        state = opt.init(p)
        for _ in range(20):
            u, state = opt.update({"w": jnp.ones(3)}, state, p, batch_size=1)
            p = gradtx.apply_updates(p, u)
        return p["w"]

    np.testing.assert_allclose(
        final(C.momentum_sgd(1 / (1 - m), m, unit_gain=True)),
        final(C.momentum_sgd(1.0, m, unit_gain=False)),
        rtol=1e-5,
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda lr: C.sgd(lr),
        lambda lr: C.momentum_sgd(lr, 0.9),
        lambda lr: C.nesterov(lr, 0.9),
        lambda lr: C.adagrad(lr),
        lambda lr: C.rmsprop(lr, 0.9, 1.2, 0.6, 0.05, 0.001),
        lambda lr: C.fsadagrad(lr, 0.9),
        lambda lr: C.adam(lr, 0.9),
        lambda lr: C.adadelta(lr),
    ],
)
def test_vmap_over_learning_rate(make):
    lrs = jnp.array([0.01, 0.05, 0.1])

    def train(lr):
        opt = make(lr)
        p = {"w": jnp.ones(3)}
        state = opt.init(p)
        for b in (2, 10, 5):
            u, state = opt.update({"w": jnp.arange(3.0) * b}, state, p, batch_size=b)
            p = gradtx.apply_updates(p, u)
        return p["w"]

    assert_vmap_equals_loop(train, lrs, atol=0)


BAD = [
    (
        lambda: C.momentum_as_time_constant_schedule(-5),
        "momentum_as_time_constant_schedule: time_constant must be in [0, inf), got -5",
    ),
    (
        lambda: C.rmsprop(0.1, 1.5, 1.2, 0.6, 0.05, 0.001),
        "rmsprop: gamma must be in (0, 1), got 1.5",
    ),
    (lambda: C.rmsprop(0.1, 0.9, 1.2, 0.6, 0.001, 0.05), "rmsprop: min must be at most max"),
    (lambda: C.learning_rate_schedule(0.1, "epoch"), "learning_rate_schedule: unit must be"),
    (
        lambda: C.learning_rate_schedule([0.1, 0.2], "sample", epoch_size=0),
        "learning_rate_schedule: epoch_size must be a positive integer",
    ),
    (lambda: C.sgd(-0.1), "sgd: lr must be in [0, inf), got -0.1"),
    (lambda: C.momentum_sgd(0.1, 1.2), "momentum_sgd: momentum must be in [0, 1), got 1.2"),
    (lambda: C.adam(0.1, 0.9, epsilon=-1.0), "adam: epsilon must be in [0, inf), got -1"),
]


@pytest.mark.parametrize("build, message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_arguments(build, message):
    with pytest.raises(ValueError) as info:
        build()
    assert str(info.value).startswith(message)


def test_missing_batch_size_says_how_to_pass_it():
    opt = C.adam(0.1, 0.9)
    p = {"w": jnp.ones(2)}
    with pytest.raises(
        ValueError, match="update needs the minibatch size as the extra keyword batch_size"
    ):
        opt.update(p, opt.init(p), p)


def test_a_gradtx_schedule_is_a_rate_per_minibatch():
    """gradtx.schedules.piecewise_constant as lr equals the stepwise CNTK schedule."""
    stepwise = C.learning_rate_schedule([0.05, 0.02], C.UnitType.minibatch, epoch_size=5)
    schedule = gradtx.schedules.piecewise_constant([5], [0.05, 0.02])
    np.testing.assert_allclose(
        run(C.momentum_sgd(schedule, 0.9)), run(C.momentum_sgd(stepwise, 0.9)), rtol=1e-6
    )
    momentum = gradtx.schedules.constant(0.9)
    np.testing.assert_allclose(
        run(C.nesterov(stepwise, momentum)), run(C.nesterov(stepwise, 0.9)), rtol=1e-6
    )
