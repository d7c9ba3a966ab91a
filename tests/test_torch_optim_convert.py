"""from_torch_state_dict: a torch run resumed in gradtx ends where torch's own run ends.

torch is the oracle: one torch run takes 20 steps on a dict of three tensors, with
gradients computed in NumPy from its current params; a second takes the first 10 of
them, and its ``state_dict()`` and params are converted; gradtx continues for 10 steps
(a jitted ``lax.scan``) on the same gradients and must end on torch's 20-step params.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx
from gradtx import torch_optim as T
from gradtx.torch_optim.convert import from_torch_state_dict

torch = pytest.importorskip("torch")

STEPS, RESUME = 20, 10
# In jax.tree.leaves order (sorted keys), so the default param order is torch's.
SHAPES = {"bias": (3,), "conv": (2, 1, 3), "kernel": (2, 4)}
CLASSES = {
    "sgd": "SGD",
    "adam": "Adam",
    "adamw": "AdamW",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
    "adamax": "Adamax",
    "adadelta": "Adadelta",
    "nadam": "NAdam",
    "radam": "RAdam",
    "rprop": "Rprop",
    "asgd": "ASGD",
    "adafactor": "Adafactor",
}
TORCH_DTYPES = {np.float64: torch.float64, np.float32: torch.float32}

REQUIRED = [
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "dampening": 0.5, "weight_decay": 0.05}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True, "maximize": True}),
    ("adam", {"lr": 0.01}),
    ("adam", {"lr": 0.01, "amsgrad": True}),
    ("adam", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.1, "maximize": True}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("adamw", {"lr": 0.01}),
    ("adamw", {"lr": 0.01, "amsgrad": True, "weight_decay": 0.2}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "centered": True}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.9}),
    ("rmsprop", {"lr": 0.005, "centered": True, "momentum": 0.5, "weight_decay": 0.05}),
]
OTHERS = [
    ("sgd", {"lr": 0.05}),  # no state at all
    ("adagrad", {"lr": 0.05, "lr_decay": 0.02, "initial_accumulator_value": 0.2}),
    ("adamax", {"lr": 0.01, "weight_decay": 0.1}),
    ("adadelta", {"lr": 0.5, "rho": 0.8}),
    ("nadam", {"lr": 0.01}),
    ("nadam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("radam", {"lr": 0.01}),
    ("radam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("rprop", {"lr": 0.01}),
    ("asgd", {"lr": 0.05, "lambd": 1e-3, "t0": 5}),  # the average starts before the resume
    ("adafactor", {"lr": 0.05, "weight_decay": 0.1}),
]


def config_id(config):
    name, kwargs = config
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


def initial_params(dtype):
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}


def gradient(params, step, sign=1.0):
    """A pull towards a target plus a drift that changes with the step (torch's ``.grad``)."""
    out = {}
    for i, (k, p) in enumerate(sorted(params.items())):
        target = np.linspace(-1.0, 2.0, p.size).reshape(p.shape) + i
        drift = 0.3 * np.sin(0.7 * step + np.arange(p.size).reshape(p.shape) + i)
        out[k] = sign * ((0.5 + i) * (p - target) + drift)
    return out


@contextlib.contextmanager
def torch_default_dtype(dtype):
    """torch keeps NAdam's mu_product and ASGD's eta and mu in its default dtype; gradtx in
    JAX's (float64 under x64)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def torch_run(name, kwargs, dtype, steps, *, names=None, groups=None, scheduler=None, init=None):
    """torch's optimizer after ``steps`` steps: (optimizer, params, the gradients it took).

    ``names`` is the order the tensors are given to torch (default: SHAPES's); ``groups``
    a list of (names, extra kwargs) param groups; ``scheduler`` builds an LR scheduler
    stepped after every step; ``init`` the initial params (default: SHAPES's, random).
    """
    params = initial_params(dtype) if init is None else init
    tensors = {k: torch.tensor(v, dtype=torch.from_numpy(v).dtype) for k, v in params.items()}
    if groups is None:
        arguments = [tensors[k] for k in names or tensors]
    else:
        arguments = [{"params": [tensors[k] for k in ks], **extra} for ks, extra in groups]
    opt = getattr(torch.optim, CLASSES[name])(arguments, **kwargs)
    schedule = None if scheduler is None else scheduler(opt)
    sign = -1.0 if kwargs.get("maximize") else 1.0
    grads = []
    with torch_default_dtype(dtype):
        for step in range(steps):
            g = gradient({k: t.detach().numpy() for k, t in tensors.items()}, step, sign)
            for k, t in tensors.items():
                t.grad = torch.tensor(g[k], dtype=t.dtype)
            opt.step()
            if schedule is not None:
                schedule.step()
            grads.append(g)
    return opt, {k: t.detach().numpy().copy() for k, t in tensors.items()}, grads


def continue_in_gradtx(opt, params, state, grads):
    """gradtx's params after the updates of ``grads`` (a list of dicts), jitted."""

    def step(carry, g):
        params, state = carry
        updates, state = opt.update(g, state, params)
        return (gradtx.apply_updates(params, updates), state), None

    stacked = jax.tree.map(lambda *g: jnp.stack(g), *grads)
    (params, _), _ = jax.jit(lambda p, s, g: jax.lax.scan(step, (p, s), g))(params, state, stacked)
    return jax.tree.map(np.asarray, params)


def resume(name, kwargs, dtype, *, learner=None, convert=None, jax_grads=None, **run_options):
    """torch's 20-step params, and gradtx's after 10 torch steps converted and 10 of its own."""
    _, expected, grads = torch_run(name, kwargs, dtype, STEPS, **run_options)
    torch_opt, params, _ = torch_run(name, kwargs, dtype, RESUME, **run_options)
    learner = learner or getattr(T, name)(**kwargs)
    params = {k: jnp.asarray(v) for k, v in params.items()}
    state = (convert or from_torch_state_dict)(learner, torch_opt.state_dict(), params)
    jax.tree.map(
        lambda a, b: np.testing.assert_equal(a.dtype, b.dtype), state, learner.init(params)
    )
    later = [(jax_grads or (lambda g: g))(g) for g in grads[RESUME:]]
    return continue_in_gradtx(learner, params, state, later), expected


def assert_close(actual, expected, rtol):
    for k in expected:
        assert actual[k].dtype == expected[k].dtype, k
        # atol = rtol: a param crossing 0 keeps the rounding of the O(1) values around it.
        np.testing.assert_allclose(actual[k], expected[k], rtol=rtol, atol=rtol, err_msg=k)


@pytest.mark.parametrize("config", REQUIRED + OTHERS, ids=config_id)
def test_resumed_run_matches_torch_float64(config):
    with jax.enable_x64(True):
        assert_close(*resume(*config, np.float64), rtol=1e-12)


@pytest.mark.parametrize("config", REQUIRED + OTHERS[1:2] + OTHERS[4:5], ids=config_id)
def test_resumed_run_matches_torch_float32(config):
    assert_close(*resume(*config, np.float32), rtol=1e-5)


def test_a_reloaded_numpy_state_dict_converts_the_same():
    """A state_dict saved and reloaded as NumPy arrays (and str keys) gives the same state."""
    with jax.enable_x64(True):
        opt, params, _ = torch_run("adam", {"lr": 0.01, "amsgrad": True}, np.float64, RESUME)
        saved = opt.state_dict()
        as_numpy = {
            "state": {
                str(i): {k: v.numpy() for k, v in s.items()} for i, s in saved["state"].items()
            },
            "param_groups": saved["param_groups"],
        }
        learner = T.adam(0.01, amsgrad=True)
        a = from_torch_state_dict(learner, saved, params)
        b = from_torch_state_dict(learner, as_numpy, params)
        jax.tree.map(np.testing.assert_array_equal, a, b)
        assert int(a[0].count) == RESUME


# --- schedules, param groups, param order, complex leaves ------------------------------


def step_lr(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)


def test_a_schedule_resumes_at_torch_count():
    """The scheduler's 10 steps carry over: gradtx's step_lr continues at count 10."""
    with jax.enable_x64(True):
        learner = T.adam(T.step_lr(0.02, 3, 0.5), amsgrad=True)
        actual, expected = resume(
            "adam", {"lr": 0.02, "amsgrad": True}, np.float64, learner=learner, scheduler=step_lr
        )
        assert_close(actual, expected, rtol=1e-12)


def test_sgd_takes_its_step_count_as_an_argument():
    """torch's SGD keeps no step: a schedule's count comes from ``step``."""
    with jax.enable_x64(True):
        learner = T.sgd(T.step_lr(0.05, 3, 0.5), momentum=0.9, dampening=0.2)
        actual, expected = resume(
            "sgd",
            {"lr": 0.05, "momentum": 0.9, "dampening": 0.2},
            np.float64,
            learner=learner,
            convert=lambda *a: from_torch_state_dict(*a, step=RESUME),
            scheduler=step_lr,
        )
        assert_close(actual, expected, rtol=1e-12)
        opt, params, _ = torch_run("sgd", {"lr": 0.05, "momentum": 0.9}, np.float64, RESUME)
        state = from_torch_state_dict(T.sgd(0.05, momentum=0.9), opt.state_dict(), params)
        assert int(state[0].count) == 1  # buffers set: all SGD's rule reads from the count
        with pytest.raises(ValueError, match=r"pass step="):
            from_torch_state_dict(learner, opt.state_dict(), params)


def test_param_groups_convert_into_a_partition():
    groups = [(["bias", "conv"], {}), (["kernel"], {"lr": 0.05, "amsgrad": True})]
    with jax.enable_x64(True):
        learner = gradtx.partition(
            {"a": T.adam(0.01), "b": T.adam(0.05, amsgrad=True)},
            {"bias": "a", "conv": "a", "kernel": "b"},
        )
        actual, expected = resume("adam", {"lr": 0.01}, np.float64, learner=learner, groups=groups)
        assert_close(actual, expected, rtol=1e-12)


@pytest.mark.parametrize("as_mapping", [False, True])
def test_an_explicit_order_maps_torch_params_to_leaves(as_mapping):
    names = ["kernel", "bias", "conv"]  # torch's order; jax.tree.leaves sorts them
    order = {n: i for i, n in enumerate(names)} if as_mapping else names
    with jax.enable_x64(True):
        actual, expected = resume(
            "rmsprop",
            {"lr": 0.01, "momentum": 0.5, "centered": True},
            np.float64,
            names=names,
            convert=lambda *a: from_torch_state_dict(*a, order=order),
        )
        assert_close(actual, expected, rtol=1e-12)
        opt, params, _ = torch_run("rmsprop", {"lr": 0.01}, np.float64, RESUME, names=names)
        with pytest.raises(
            ValueError,
            match=r"torch param 0 has shape \(2, 4\), but params\['bias'\].*\(3,\).*order=",
        ):
            from_torch_state_dict(T.rmsprop(0.01), opt.state_dict(), params)


def test_nested_names_are_joined_with_slashes():
    names = ["layer/1/w", "layer/0/w"]
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        params = {"layer": [{"w": rng.normal(size=2)}, {"w": rng.normal(size=3)}]}
        w0, w1 = (torch.tensor(p["w"]) for p in params["layer"])
        opt = torch.optim.Adam([w1, w0], lr=0.01)
        w0.grad, w1.grad = torch.ones_like(w0), torch.full_like(w1, 2.0)
        opt.step()
        state_dict = opt.state_dict()
        state = from_torch_state_dict(T.adam(0.01), state_dict, params, order=names)
        for i, leaf in enumerate([state[0].exp_avg["layer"][1], state[0].exp_avg["layer"][0]]):
            np.testing.assert_array_equal(leaf["w"], state_dict["state"][i]["exp_avg"])
        assert jax.tree.structure(state) == jax.tree.structure(T.adam(0.01).init(params))


@pytest.mark.parametrize(
    "config",
    [
        ("adam", {"lr": 0.01, "amsgrad": True}),
        ("sgd", {"lr": 0.05, "momentum": 0.9}),
        ("rmsprop", {"lr": 0.01, "centered": True, "momentum": 0.5}),
    ],
    ids=config_id,
)
def test_complex_buffers_become_real_views(config):
    """torch's complex buffers are the learner's (..., 2) views; JAX's gradient of a complex
    param is the conjugate of torch's ``.grad``."""
    rng = np.random.default_rng(1)
    init = {"w": rng.normal(size=3), "z": rng.normal(size=4) + 1j * rng.normal(size=4)}
    with jax.enable_x64(True):
        actual, expected = resume(
            *config,
            np.float64,
            init=init,
            jax_grads=lambda g: {k: np.conj(v) for k, v in g.items()},
        )
        assert_close(actual, expected, rtol=1e-12)


def test_an_optimizer_torch_never_stepped_gives_the_fresh_state():
    params = {k: jnp.asarray(v) for k, v in initial_params(np.float32).items()}
    opt = torch.optim.Adagrad(
        [torch.tensor(np.asarray(v)) for v in params.values()], initial_accumulator_value=0.3
    )
    learner = T.adagrad(initial_accumulator_value=0.3)
    state = from_torch_state_dict(learner, opt.state_dict(), params)
    jax.tree.map(np.testing.assert_array_equal, state, learner.init(params))


# --- errors ------------------------------------------------------------------------------


def adam_after(steps, amsgrad=False, skip=()):
    """torch's Adam after ``steps`` steps, ``skip`` maps a param name to the steps it sat out."""
    params = initial_params(np.float64)
    tensors = {k: torch.tensor(v) for k, v in params.items()}
    opt = torch.optim.Adam(list(tensors.values()), lr=0.01, amsgrad=amsgrad)
    for step in range(steps):
        g = gradient(params, step)
        for k, t in tensors.items():
            t.grad = None if step in dict(skip).get(k, ()) else torch.tensor(g[k])
        opt.step()
    return opt.state_dict(), {k: t.detach().numpy() for k, t in tensors.items()}


@pytest.mark.parametrize(
    "learner, amsgrad, match",
    [
        (T.adam(0.01, amsgrad=True), False, r"param 0 .*has amsgrad=False.*TorchAdamState"),
        (T.adam(0.01), True, r"param 0 .*has amsgrad=True.*TorchAdamState"),
        (T.rmsprop(0.01), False, r"has no 'square_avg'"),
        (T.sgd(0.01, momentum=0.9), False, r"no 'momentum_buffer'.*momentum != 0"),
        (T.sgd(0.01), False, r"\['exp_avg', 'exp_avg_sq'\].*keeps nothing for"),
        (gradtx.chain(T.adam(0.01), gradtx.scale_by_lion()), False, r"state\[1\]\.mu"),
    ],
)
def test_a_learner_not_matching_the_optimizer_is_refused(learner, amsgrad, match):
    state_dict, params = adam_after(2, amsgrad=amsgrad)
    with jax.enable_x64(True), pytest.raises(ValueError, match=match):
        from_torch_state_dict(learner, state_dict, params)


@pytest.mark.parametrize(
    "learner, amsgrad, match",
    [
        (T.adam(0.01, amsgrad=True), False, r"param 0 .*no 'max_exp_avg_sq'.*amsgrad=True"),
        (T.adam(0.01), True, r"\['max_exp_avg_sq'\].*keeps nothing for.*amsgrad=True"),
    ],
)
def test_a_state_dict_without_its_flags_is_checked_by_its_keys(learner, amsgrad, match):
    state_dict, params = adam_after(2, amsgrad=amsgrad)
    groups = [{k: v for k, v in g.items() if k != "amsgrad"} for g in state_dict["param_groups"]]
    with jax.enable_x64(True), pytest.raises(ValueError, match=match):
        from_torch_state_dict(learner, {**state_dict, "param_groups": groups}, params)


@pytest.mark.parametrize(
    "torch_class, kwargs, learner, match",
    [
        ("RMSprop", {"centered": True}, T.rmsprop(), r"centered=True.*ScaleByRmsState"),
        ("SGD", {"lr": 0.1}, T.sgd(0.1, momentum=0.9), r"momentum=0.*SGDMomentumState"),
    ],
)
def test_flags_are_checked_before_torch_steps(torch_class, kwargs, learner, match):
    params = initial_params(np.float32)
    opt = getattr(torch.optim, torch_class)([torch.tensor(v) for v in params.values()], **kwargs)
    with pytest.raises(ValueError, match=match):
        from_torch_state_dict(learner, opt.state_dict(), params)


def test_a_param_torch_never_stepped_is_refused():
    state_dict, params = adam_after(3, skip={"conv": range(3)})
    with jax.enable_x64(True), pytest.raises(ValueError, match=r"param 1 \(params\['conv'\]\)"):
        from_torch_state_dict(T.adam(0.01), state_dict, params)


def test_params_stepped_different_numbers_of_times_are_refused():
    state_dict, params = adam_after(3, skip={"kernel": [0]})
    with jax.enable_x64(True), pytest.raises(ValueError, match=r"different numbers of steps"):
        from_torch_state_dict(T.adam(0.01), state_dict, params)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"step": 4}, r"step=4, but torch's state says 3 steps"),
        ({"step": -1}, r"step must be a nonnegative integer, got -1"),
        ({"order": ["bias", "conv"]}, r"order must list the 3 params' names"),
        ({"order": ["bias", "conv", "dense"]}, r"order names \['dense'\]"),
        ({"order": {"bias": 0, "conv": 1}}, r"no torch index for params \['kernel'\]"),
        ({"order": {"bias": 0, "conv": 1, "kernel": 1}}, r"distinct torch index"),
    ],
)
def test_bad_arguments_are_refused(change, match):
    state_dict, params = adam_after(3)
    with jax.enable_x64(True), pytest.raises(ValueError, match=match):
        from_torch_state_dict(T.adam(0.01), state_dict, params, **change)


def test_a_tree_of_other_params_is_refused():
    state_dict, params = adam_after(3)
    with jax.enable_x64(True):
        with pytest.raises(ValueError, match=r"params has 2 floating leaves but .* 3 torch"):
            from_torch_state_dict(
                T.adam(0.01), state_dict, {"bias": params["bias"], "n": params["conv"][0, 0]}
            )
        with pytest.raises(ValueError, match=r"'exp_avg' of torch param 0 has shape \(3,\)"):
            from_torch_state_dict(T.adam(0.01), state_dict, {**params, "bias": np.zeros(4)})
        with pytest.raises(ValueError, match=r"state_dict must be a torch optimizer's state_dict"):
            from_torch_state_dict(T.adam(0.01), state_dict["state"], params)
