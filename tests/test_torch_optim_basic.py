"""gradtx.torch_optim's SGD, Adam, AdamW, Adagrad, Adamax, Adadelta and RMSprop against torch.optim.

torch itself is the oracle: each configuration runs torch's optimizer for 200 steps on
a dict of three tensors, with gradients computed in NumPy from torch's current params;
the same gradients are then fed to the gradtx learner (a jitted ``lax.scan``), and the
params are compared at every step.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from conftest import assert_vmap_equals_loop, make_params, run

import gradtx
import gradtx.testing
from gradtx.torch_optim import basic as T

torch = pytest.importorskip("torch")

STEPS = 200
SHAPES = {"bias": (3,), "kernel": (2, 4), "conv": (2, 1, 3)}
CLASSES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "adagrad": "Adagrad",
    "adamax": "Adamax",
    "adadelta": "Adadelta",
    "rmsprop": "RMSprop",
}

# (learner, keyword arguments given to both torch's class and gradtx's function).
CONFIGS = [
    ("sgd", {"lr": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "dampening": 0.3}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("sgd", {"lr": 0.05, "weight_decay": 0.1}),
    (
        "sgd",
        {"lr": 0.05, "momentum": 0.8, "dampening": 0.5, "weight_decay": 0.05, "maximize": True},
    ),
    (
        "sgd",
        {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01, "maximize": True},
    ),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "amsgrad": True}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1}),
    ("adam", {"lr": 0.01, "maximize": True}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1, "maximize": True}),
    (
        "adam",
        {
            "lr": 0.02,
            "betas": (0.8, 0.99),
            "eps": 1e-6,
            "amsgrad": True,
            "weight_decay": 0.1,
            "decoupled_weight_decay": True,
            "maximize": True,
        },
    ),
    ("adamw", {"lr": 0.01}),
    ("adamw", {"lr": 0.01, "amsgrad": True}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.2, "maximize": True}),
    ("adamw", {"lr": 0.01, "betas": (0.5, 0.9), "amsgrad": True, "maximize": True}),
    ("adagrad", {"lr": 0.05}),
    ("adagrad", {"lr": 0.05, "lr_decay": 0.01}),
    ("adagrad", {"lr": 0.05, "initial_accumulator_value": 0.5}),
    ("adagrad", {"lr": 0.05, "weight_decay": 0.1, "maximize": True}),
    (
        "adagrad",
        {
            "lr": 0.1,
            "lr_decay": 0.05,
            "weight_decay": 0.05,
            "initial_accumulator_value": 0.2,
            "eps": 1e-6,
        },
    ),  # fmt: skip
    ("adamax", {"lr": 0.01}),
    ("adamax", {"lr": 0.01, "weight_decay": 0.1}),
    ("adamax", {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-4, "maximize": True}),
    ("adadelta", {}),
    ("adadelta", {"lr": 0.5, "rho": 0.8, "eps": 1e-5, "weight_decay": 0.1}),
    ("adadelta", {"maximize": True}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "centered": True}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.9}),
    ("rmsprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
    ("rmsprop", {"lr": 0.01, "weight_decay": 0.1, "maximize": True}),
    (
        "rmsprop",
        {
            "lr": 0.005,
            "alpha": 0.9,
            "eps": 1e-6,
            "centered": True,
            "momentum": 0.9,
            "weight_decay": 0.05,
        },
    ),  # fmt: skip
]


def config_id(config):
    name, kwargs = config
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


def initial_params(dtype):
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}


def gradient(params, step, sign):
    """A pull towards a target plus a drift that changes with the step, in NumPy.

    ``sign`` is -1 for ``maximize``: the gradient of the objective to ascend, so that
    every run stays bounded.
    """
    out = {}
    for i, (k, p) in enumerate(sorted(params.items())):
        target = np.linspace(-1.0, 2.0, p.size).reshape(p.shape) + i
        drift = 0.3 * np.sin(0.7 * step + np.arange(p.size).reshape(p.shape) + i)
        out[k] = (sign * ((0.5 + i) * (p - target) + drift)).astype(p.dtype)
    return out


def torch_run(name, kwargs, dtype, steps=STEPS, lr_schedule=None):
    """torch's params after every step, and the gradients it was given."""
    torch_dtype = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    tensors = {k: torch.tensor(v, dtype=torch_dtype) for k, v in initial_params(dtype).items()}
    opt = getattr(torch.optim, CLASSES[name])(list(tensors.values()), **kwargs)
    sign = -1.0 if kwargs.get("maximize") else 1.0
    grads, trajectory = [], []
    for step in range(steps):
        if lr_schedule is not None:  # a scheduler setting this step's rate
            opt.param_groups[0]["lr"] = float(lr_schedule(step))
        g = gradient({k: t.detach().numpy() for k, t in tensors.items()}, step, sign)
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k], dtype=torch_dtype)
        opt.step()
        grads.append(g)
        trajectory.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
    stack = lambda trees: {k: np.stack([t[k] for t in trees]) for k in SHAPES}  # noqa: E731
    return stack(grads), stack(trajectory)


def gradtx_run(opt, params, grads):
    """gradtx's params after every step, fed ``grads`` (stacked along the first axis)."""

    def step(carry, g):
        params, state = carry
        updates, state = opt.update(g, state, params)
        params = gradtx.apply_updates(params, updates)
        return (params, state), params

    @jax.jit
    def trajectory(params, grads):
        return jax.lax.scan(step, (params, opt.init(params)), grads)[1]

    return jax.tree.map(np.asarray, trajectory(params, grads))


def max_relative_error(actual, expected):
    """The largest error relative to the value, or to 1 for values below 1 (params are O(1))."""
    return max(
        float(np.max(np.abs(actual[k] - expected[k]) / np.maximum(np.abs(expected[k]), 1.0)))
        for k in expected
    )


ERRORS = {}  # (configuration, dtype) -> max relative error, printed with -s by the last test


def compare(name, kwargs, dtype, rtol, lr_schedule=None):
    grads, expected = torch_run(name, kwargs, dtype, lr_schedule=lr_schedule)
    if lr_schedule is not None:
        kwargs = {**kwargs, "lr": lr_schedule}
    opt = getattr(T, name)(**kwargs)
    actual = gradtx_run(opt, initial_params(dtype), grads)
    for k in expected:
        assert actual[k].dtype == dtype
        # atol = rtol: a param crossing 0 keeps the rounding of the O(1) values around it.
        np.testing.assert_allclose(actual[k], expected[k], rtol=rtol, atol=rtol, err_msg=k)
    error = max_relative_error(actual, expected)
    ERRORS[(config_id((name, kwargs)), np.dtype(dtype).name)] = error
    return error


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_matches_torch_float64(config):
    with jax.enable_x64(True):
        compare(*config, np.float64, rtol=1e-12)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
def test_matches_torch_float32(config):
    compare(*config, np.float32, rtol=1e-5)


def decaying_lr(count):
    return 0.02 * 0.98**count


@pytest.mark.parametrize(
    "config",
    [
        ("rmsprop", {"momentum": 0.9}),
        ("rmsprop", {"momentum": 0.5, "centered": True, "weight_decay": 0.1}),
        ("sgd", {"momentum": 0.9, "dampening": 0.2}),
        ("adamw", {"amsgrad": True}),
        ("adagrad", {"lr_decay": 0.02}),
    ],
    ids=config_id,
)
def test_scheduled_lr_matches_torch_scheduler(config):
    """torch changes ``param_group["lr"]`` before each step; gradtx takes a schedule."""
    with jax.enable_x64(True):
        compare(*config, np.float64, rtol=1e-12, lr_schedule=decaying_lr)


# One configuration per learner with every flag it has on, for the remaining checks.
FULL = {
    "sgd": {"lr": 0.05, "momentum": 0.8, "dampening": 0.5, "weight_decay": 0.05, "maximize": True},
    "adam": {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1, "maximize": True},
    "adamw": {"lr": 0.01, "amsgrad": True, "maximize": True},
    "adagrad": {
        "lr": 0.1,
        "lr_decay": 0.05,
        "weight_decay": 0.05,
        "initial_accumulator_value": 0.2,
    },
    "adamax": {"lr": 0.01, "weight_decay": 0.1, "maximize": True},
    "adadelta": {"lr": 0.5, "rho": 0.8, "weight_decay": 0.1, "maximize": True},
    "rmsprop": {"lr": 0.01, "centered": True, "momentum": 0.5, "weight_decay": 0.1},
}
VARIANT_STEPS = 20


class MatchesTorchWithAndWithoutJit(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(name, name) for name in sorted(FULL)])
    def test_step_by_step(self, name):
        grads, expected = torch_run(name, FULL[name], np.float64, steps=VARIANT_STEPS)
        with jax.enable_x64(True):
            opt = getattr(T, name)(**FULL[name])
            update = self.variant(opt.update)
            params = {k: jnp.asarray(v) for k, v in initial_params(np.float64).items()}
            state = opt.init(params)
            for step in range(VARIANT_STEPS):
                g = {k: jnp.asarray(v[step]) for k, v in grads.items()}
                updates, state = update(g, state, params)
                params = gradtx.apply_updates(params, updates)
                for k in SHAPES:
                    np.testing.assert_allclose(params[k], expected[k][step], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", sorted(FULL))
def test_check_transform(name):
    gradtx.testing.check_transform(getattr(T, name)(**FULL[name]), make_params())


@pytest.mark.parametrize("name", sorted(FULL))
def test_vmap_over_lr_equals_loop(name):
    kwargs = {k: v for k, v in FULL[name].items() if k != "lr"}
    make = lambda lr: getattr(T, name)(lr, **kwargs)  # noqa: E731
    params = make_params()
    assert_vmap_equals_loop(lambda lr: run(make(lr), params, 10), [0.001, 0.01, 0.05])


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad", "sgd"])
def test_complex_params_match_torch(name):
    """A complex parameter is two real ones (torch's view_as_real); JAX's gradient is the
    conjugate of torch's ``.grad``."""
    kwargs = {k: v for k, v in FULL[name].items() if k != "maximize"}
    rng = np.random.default_rng(3)
    z0 = rng.normal(size=(4,)) + 1j * rng.normal(size=(4,))
    target = np.array([1 + 2j, -1j, 0.5, 2 - 1j])
    z = torch.tensor(z0, dtype=torch.complex128)
    opt = getattr(torch.optim, CLASSES[name])([z], **kwargs)
    torch_grads, expected = [], []
    for step in range(30):
        g = (z.detach().numpy() - target) + 0.1j * np.sin(step)  # torch's .grad
        z.grad = torch.tensor(g)
        opt.step()
        torch_grads.append(g)
        expected.append(z.detach().numpy().copy())
    with jax.enable_x64(True):
        ours = getattr(T, name)(**kwargs)
        actual = gradtx_run(ours, {"z": jnp.asarray(z0)}, {"z": np.conj(np.stack(torch_grads))})
    np.testing.assert_allclose(actual["z"], np.stack(expected), rtol=1e-12, atol=1e-14)


def test_implementation_flags_are_accepted_and_change_nothing():
    grads = {"w": jnp.array([1.0, -2.0])}
    flags = {
        "sgd": {"foreach": True, "differentiable": True, "fused": True},
        "adam": {"foreach": True, "capturable": True, "differentiable": True, "fused": True},
        "adamw": {"foreach": True, "capturable": True, "differentiable": True, "fused": True},
        "adagrad": {"foreach": True, "differentiable": True, "fused": True},
        "adamax": {"foreach": True, "differentiable": True, "capturable": True},
        "adadelta": {"foreach": True, "differentiable": True, "capturable": True},
        "rmsprop": {"foreach": True, "differentiable": True, "capturable": True},
    }
    for name, kw in flags.items():
        plain, flagged = getattr(T, name)(), getattr(T, name)(**kw)
        a, _ = plain.update(grads, plain.init(grads), grads)
        b, _ = flagged.update(grads, flagged.init(grads), grads)
        np.testing.assert_array_equal(a["w"], b["w"])


def test_adam_decoupled_equals_adamw():
    params = make_params()
    a = run(T.adam(0.01, weight_decay=0.1, amsgrad=True, decoupled_weight_decay=True), params)
    b = run(T.adamw(0.01, weight_decay=0.1, amsgrad=True), params)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_torch_defaults():
    import inspect

    for name, cls in CLASSES.items():
        ours = inspect.signature(getattr(T, name)).parameters
        theirs = dict(inspect.signature(getattr(torch.optim, cls).__init__).parameters)
        theirs.pop("self"), theirs.pop("params")
        assert list(ours) == list(theirs), name
        for k, p in theirs.items():
            assert ours[k].default == p.default, (name, k)
            assert ours[k].kind == p.kind, (name, k)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: T.sgd(-0.1), r"sgd: lr must be in \[0, inf\), got -0.1"),
        (lambda: T.sgd(0.1, momentum=-0.5), r"sgd: momentum must be in \[0, inf\)"),
        (lambda: T.sgd(0.1, weight_decay=-1.0), r"sgd: weight_decay must be in \[0, inf\)"),
        (lambda: T.sgd(0.1, nesterov=True), r"sgd: nesterov requires a momentum"),
        (lambda: T.sgd(0.1, 0.9, 0.1, nesterov=True), r"zero dampening.*dampening=0.1"),
        (lambda: T.adam(betas=(1.5, 0.999)), r"adam: betas\[0\] must be in \[0, 1\), got 1.5"),
        (lambda: T.adam(betas=(0.9, 1.0)), r"adam: betas\[1\] must be in \[0, 1\), got 1"),
        (lambda: T.adam(betas=(1.5, 0.9), amsgrad=True), r"adam: betas\[0\] must be in \[0, 1\)"),
        (lambda: T.adam(betas=0.9), r"adam: betas must be a pair"),
        (lambda: T.adam(eps=-1e-8), r"adam: eps must be in \[0, inf\)"),
        (lambda: T.adam(lr=-1.0), r"adam: lr must be in \[0, inf\)"),
        (lambda: T.adam(weight_decay=-1.0), r"adam: weight_decay must be in \[0, inf\)"),
        (
            lambda: T.adam(weight_decay=-1.0, decoupled_weight_decay=True),
            r"adam: weight_decay must be in \[0, inf\)",
        ),
        (lambda: T.adamw(betas=(0.9, -0.1)), r"adamw: betas\[1\] must be in \[0, 1\)"),
        (lambda: T.adamw(weight_decay=-0.1), r"adamw: weight_decay must be in \[0, inf\)"),
        (lambda: T.adagrad(lr_decay=-1.0), r"adagrad: lr_decay must be in \[0, inf\)"),
        (lambda: T.adagrad(-1.0, lr_decay=0.1), r"adagrad: lr must be in \[0, inf\)"),
        (lambda: T.adagrad(-1.0), r"adagrad: lr must be in \[0, inf\)"),
        (
            lambda: T.adagrad(initial_accumulator_value=-1.0),
            r"adagrad: initial_accumulator_value must be in \[0, inf\)",
        ),
        (lambda: T.adagrad(eps=-1.0), r"adagrad: eps must be in \[0, inf\)"),
        (lambda: T.adamax(betas=(1.0, 0.9)), r"adamax: betas\[0\] must be in \[0, 1\)"),
        (lambda: T.adamax(eps=-1.0), r"adamax: eps must be in \[0, inf\)"),
        (lambda: T.adadelta(rho=1.5), r"adadelta: rho must be in \[0, 1\), got 1.5"),
        (lambda: T.adadelta(eps=-1.0), r"adadelta: eps must be in \[0, inf\)"),
        (lambda: T.adadelta(lr=-1.0), r"adadelta: lr must be in \[0, inf\)"),
        (lambda: T.rmsprop(alpha=-0.5), r"rmsprop: alpha must be in \[0, 1\)"),
        (lambda: T.rmsprop(alpha=1.5, centered=True), r"rmsprop: alpha must be in \[0, 1\)"),
        (lambda: T.rmsprop(momentum=-0.5), r"rmsprop: momentum must be in \[0, 1\)"),
        (lambda: T.rmsprop(eps=-1.0), r"rmsprop: eps must be in \[0, inf\)"),
        (lambda: T.rmsprop(weight_decay=-1.0), r"rmsprop: weight_decay must be in \[0, inf\)"),
    ],
)
def test_bad_arguments_name_torchs_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_traced_hyperparameters_are_not_checked():
    """Under vmap the values are tracers: nothing is inspected, nothing raises."""
    params = make_params()
    out = jax.vmap(lambda m: run(T.sgd(0.01, momentum=m, nesterov=True), params, 3)[
        "head"][0])(jnp.array([0.5, 0.9]))  # fmt: skip
    assert out.shape == (2,)


def test_report_errors(capsys):
    """Prints the largest errors measured above (run with -s to see them)."""
    with capsys.disabled():
        for dtype in ("float64", "float32"):
            errors = {c: e for (c, d), e in ERRORS.items() if d == dtype}
            for config in sorted(errors, key=errors.get)[-3:]:
                print(f"\n{dtype}: max relative error {errors[config]:.3g} ({config})")
