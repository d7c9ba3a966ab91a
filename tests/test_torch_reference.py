"""Learners configured as torch.optim against plain NumPy loops of torch's documented rules.

Each reference below is written from the algorithm box in torch.optim's docs,
in float64, one parameter array at a time; gradtx runs in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import grads_at, make_params

import gradtx

STEPS = 20


def torch_sgd(p, grads, lr, momentum=0.0, weight_decay=0.0, nesterov=False, momentum_at=None):
    buf = None
    for t in range(STEPS):
        g = grads(p, t) + weight_decay * p
        mu = momentum_at(t) if momentum_at else momentum
        if mu:
            buf = g.copy() if buf is None else mu * buf + g
            g = g + mu * buf if nesterov else buf
        p = p - lr * g
    return p


def torch_rmsprop(
    p,
    grads,
    lr,
    alpha=0.99,
    eps=1e-8,
    weight_decay=0.0,
    momentum=0.0,
    centered=False,
    momentum_at=None,
):
    square_avg = np.zeros_like(p)
    grad_avg = np.zeros_like(p)
    buf = np.zeros_like(p)
    for t in range(STEPS):
        g = grads(p, t) + weight_decay * p
        square_avg = alpha * square_avg + (1 - alpha) * g * g
        if centered:
            grad_avg = alpha * grad_avg + (1 - alpha) * g
            avg = np.sqrt(square_avg - grad_avg**2) + eps
        else:
            avg = np.sqrt(square_avg) + eps
        mu = momentum_at(t) if momentum_at else momentum
        if mu:
            buf = mu * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
    return p


def torch_adagrad(
    p, grads, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10
):
    state_sum = np.full_like(p, initial_accumulator_value)
    for t in range(STEPS):
        g = grads(p, t) + weight_decay * p
        clr = lr / (1 + t * lr_decay)  # torch: step counted from 1, (step - 1) * lr_decay
        state_sum = state_sum + g * g
        p = p - clr * g / (np.sqrt(state_sum) + eps)
    return p


def torch_adam(p, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for step in range(1, STEPS + 1):
        g = grads(p, step - 1)
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = np.sqrt(v) / np.sqrt(1 - b2**step) + eps
        p = p - lr / (1 - b1**step) * m / denom
    return p


def torch_adamax(p, grads, lr=2e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0):
    m = np.zeros_like(p)
    u = np.zeros_like(p)
    for step in range(1, STEPS + 1):
        g = grads(p, step - 1) + weight_decay * p
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g) + eps)
        p = p - lr / (1 - b1**step) * m / u
    return p


def torch_adadelta(p, grads, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
    square_avg = np.zeros_like(p)
    acc_delta = np.zeros_like(p)
    for t in range(STEPS):
        g = grads(p, t) + weight_decay * p
        square_avg = rho * square_avg + (1 - rho) * g * g
        delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
        acc_delta = rho * acc_delta + (1 - rho) * delta * delta
        p = p - lr * delta
    return p


def _grad(p, t, leaf_index):
    # Same formula as conftest.grads_at, evaluated in float64 on one leaf.
    leaves = jax.tree.leaves(make_params())
    rng = np.random.default_rng(1000 + t)
    noise = [rng.normal(size=np.shape(x)).astype(np.float32) for x in leaves]
    return 0.5 * p + noise[leaf_index].astype(np.float64)


def _run_gradtx(opt):
    params = make_params()
    state = opt.init(params)
    update = jax.jit(opt.update)
    for t in range(STEPS):
        updates, state = update(grads_at(params, t), state, params)
        params = gradtx.apply_updates(params, updates)
    return params


def _check_against(opt, reference, rtol=2e-5, atol=2e-6, **kwargs):
    actual = jax.tree.leaves(_run_gradtx(opt))
    for i, start in enumerate(jax.tree.leaves(make_params())):
        grads = lambda p, t, i=i: _grad(p, t, i)  # noqa: E731
        expected = reference(np.asarray(start, np.float64), grads, **kwargs)
        np.testing.assert_allclose(actual[i], expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=0.05),
        dict(lr=0.05, momentum=0.9),
        dict(lr=0.05, momentum=0.9, nesterov=True),
        dict(lr=0.05, momentum=0.9, weight_decay=1e-2),
        dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True),
    ],
)
def test_sgd_as_torch(kwargs):
    opt = gradtx.sgd(
        kwargs["lr"],
        kwargs.get("momentum"),
        kwargs.get("nesterov", False),
        weight_decay=kwargs.get("weight_decay", 0.0),
    )
    _check_against(opt, torch_sgd, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=0.01),
        dict(lr=0.01, alpha=0.9, eps=1e-6, weight_decay=1e-2),
        dict(lr=0.01, centered=True),
        dict(lr=0.01, momentum=0.9),
        dict(lr=0.01, momentum=0.9, centered=True, weight_decay=1e-2),
    ],
)
def test_rmsprop_as_torch(kwargs):
    opt = gradtx.rmsprop(
        kwargs["lr"],
        decay=kwargs.get("alpha", 0.99),
        eps=kwargs.get("eps", 1e-8),
        eps_in_sqrt=False,
        centered=kwargs.get("centered", False),
        momentum=kwargs.get("momentum"),
        weight_decay=kwargs.get("weight_decay", 0.0),
    )
    _check_against(opt, torch_rmsprop, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(lr=0.1),
        dict(lr=0.1, initial_accumulator_value=0.5, weight_decay=1e-2),
        dict(lr=0.1, lr_decay=0.05),
    ],
)
def test_adagrad_as_torch(kwargs):
    lr, lr_decay = kwargs["lr"], kwargs.get("lr_decay", 0.0)
    learning_rate = (lambda t: lr / (1 + t * lr_decay)) if lr_decay else lr
    opt = gradtx.adagrad(
        learning_rate,
        initial_accumulator_value=kwargs.get("initial_accumulator_value", 0.0),
        eps=1e-10,
        eps_in_sqrt=False,
        weight_decay=kwargs.get("weight_decay", 0.0),
    )
    _check_against(opt, torch_adagrad, **kwargs)


def test_adam_as_torch_defaults():
    _check_against(gradtx.adam(1e-3), torch_adam)


def test_adam_as_torch_with_l2():
    _check_against(gradtx.adam(1e-2, weight_decay=0.1), torch_adam, lr=1e-2, weight_decay=0.1)


def test_adamw_as_torch_defaults():
    _check_against(
        gradtx.adamw(1e-3, weight_decay=1e-2), torch_adam, weight_decay=1e-2, decoupled=True
    )


def test_adamax_as_torch():
    _check_against(gradtx.adamax(2e-3), torch_adamax)
    _check_against(gradtx.adamax(2e-2, weight_decay=0.1), torch_adamax, lr=2e-2, weight_decay=0.1)


def test_adadelta_as_torch():
    _check_against(gradtx.adadelta(1.0), torch_adadelta)
    _check_against(gradtx.adadelta(0.5, weight_decay=0.1), torch_adadelta, lr=0.5, weight_decay=0.1)


@pytest.mark.parametrize("learner", ["sgd", "rmsprop"])
def test_momentum_schedule(learner):
    """A momentum schedule switches the decay mid-run; the buffer carries over."""
    momentum_at = lambda t: 0.5 if t < 10 else 0.9  # noqa: E731
    schedule = lambda count: jnp.where(count < 10, 0.5, 0.9)  # noqa: E731
    if learner == "sgd":
        _check_against(gradtx.sgd(0.05, schedule), torch_sgd, lr=0.05, momentum_at=momentum_at)
    else:
        opt = gradtx.rmsprop(0.01, decay=0.99, eps_in_sqrt=False, momentum=schedule)
        _check_against(opt, torch_rmsprop, lr=0.01, momentum_at=momentum_at)
