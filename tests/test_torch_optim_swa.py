"""gradtx.torch_optim's averaged_model and swalr against torch.optim.swa_utils.

torch itself is the oracle: its canonical SWA loop (SGD with momentum on a dict of three
tensors, gradients computed in NumPy from torch's current params, CosineAnnealingLR or a
constant rate before ``swa_start``, SWALR after, ``AveragedModel.update_parameters`` at
the end of the averaged epochs) runs for 100 updates; the same gradients are fed to
``chain(torch_optim.sgd(swalr(...), momentum=...), averaged_model(...))`` (a jitted
``lax.scan``), and the params, the averaged params and the rate are compared at every
update.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from conftest import make_params

import gradtx
import gradtx.testing
from gradtx.torch_optim import basic as T
from gradtx.torch_optim import schedulers as S
from gradtx.torch_optim.swa import (
    AveragedModelState,
    averaged_model,
    averaged_model_params,
    swalr,
)

torch = pytest.importorskip("torch")
swa_utils = torch.optim.swa_utils

STEPS = 100
SHAPES = {"bias": (3,), "kernel": (2, 4), "conv": (2, 1, 3)}
TORCH_DTYPES = {np.float64: torch.float64, np.float32: torch.float32}


def initial_params(dtype):
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}


def gradient(params, step):
    """A pull towards a target plus a drift that changes with the step, in NumPy."""
    out = {}
    for i, (k, p) in enumerate(sorted(params.items())):
        target = np.linspace(-1.0, 2.0, p.size).reshape(p.shape) + i
        drift = 0.3 * np.sin(0.7 * step + np.arange(p.size).reshape(p.shape) + i)
        out[k] = ((0.5 + i) * (p - target) + drift).astype(p.dtype)
    return out


class Model(torch.nn.Module):
    def __init__(self, values, dtype):
        super().__init__()
        self.p = torch.nn.ParameterDict(
            {k: torch.nn.Parameter(torch.tensor(v, dtype=dtype)) for k, v in values.items()}
        )


def torch_loop(dtype, cfg, steps=STEPS):
    """torch's SWA loop: the gradients, and the params, averaged params and rate per update."""
    spe = cfg.get("steps_per_epoch", 1)
    swa_start, every = cfg.get("swa_start", -1), cfg.get("average_every", 1)
    model = Model(initial_params(dtype), TORCH_DTYPES[dtype])
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
    scheduler = None
    if "T_max" in cfg:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["T_max"])
    if cfg.get("ema") == "multi":
        swa_model = swa_utils.AveragedModel(
            model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(cfg["ema_decay"])
        )
    elif cfg.get("ema") == "single":
        swa_model = swa_utils.AveragedModel(
            model, avg_fn=swa_utils.get_ema_avg_fn(cfg["ema_decay"])
        )
    else:
        swa_model = swa_utils.AveragedModel(model)
    swa_scheduler = swa_utils.SWALR(opt, **cfg["swalr"]) if "swalr" in cfg else None
    grads, params, averaged, rates = [], [], [], []
    for epoch in range(steps // spe):
        for batch in range(spe):
            current = {k: t.detach().numpy() for k, t in model.p.items()}
            g = gradient(current, epoch * spe + batch)
            for k, t in model.p.items():
                t.grad = torch.tensor(g[k], dtype=TORCH_DTYPES[dtype])
            rates.append(opt.param_groups[0]["lr"])
            opt.step()
            if batch == spe - 1:
                if epoch > swa_start and (epoch - swa_start - 1) % every == 0:
                    swa_model.update_parameters(model)
                if swa_scheduler is not None and epoch > swa_start:
                    swa_scheduler.step()
                elif scheduler is not None:
                    scheduler.step()
            grads.append(g)
            params.append({k: t.detach().numpy().copy() for k, t in model.p.items()})
            averaged.append({k: t.detach().numpy().copy() for k, t in swa_model.module.p.items()})
    stack = lambda trees: {k: np.stack([t[k] for t in trees]) for k in SHAPES}  # noqa: E731
    return stack(grads), stack(params), stack(averaged), np.asarray(rates)


def gradtx_schedule(cfg):
    spe = cfg.get("steps_per_epoch", 1)
    before = cfg["lr"]
    if "T_max" in cfg:
        before = S.cosine_annealing_lr(cfg["lr"], cfg["T_max"], steps_per_epoch=spe)
    if "swalr" not in cfg:
        return before
    return swalr(before, **cfg["swalr"], swa_start=cfg["swa_start"], steps_per_epoch=spe)


def gradtx_averaging(cfg, ema_decay=None):
    keys = ("swa_start", "average_every", "steps_per_epoch")
    decay = cfg.get("ema_decay") if ema_decay is None else ema_decay
    return averaged_model(decay, **{k: cfg[k] for k in keys if k in cfg})


def gradtx_loop(opt, params, grads):
    """gradtx's params and averaged params after every update (a jitted scan)."""

    def step(carry, g):
        params, state = carry
        updates, state = opt.update(g, state, params)
        params = gradtx.apply_updates(params, updates)
        return (params, state), (params, averaged_model_params(state))

    @jax.jit
    def trajectory(params, grads):
        return jax.lax.scan(step, (params, opt.init(params)), grads)[1]

    return jax.tree.map(np.asarray, trajectory(params, grads))


def compare(cfg, dtype, rtol):
    grads, params, averaged, rates = torch_loop(dtype, cfg)
    schedule = gradtx_schedule(cfg)
    opt = gradtx.chain(T.sgd(schedule, momentum=cfg["momentum"]), gradtx_averaging(cfg))
    ours, ours_averaged = gradtx_loop(opt, initial_params(dtype), grads)
    if callable(schedule):
        np.testing.assert_allclose(schedule(jnp.arange(STEPS)), rates, rtol=rtol, err_msg="lr")
    for k in SHAPES:
        assert ours[k].dtype == ours_averaged[k].dtype == dtype
        # atol = rtol: a value crossing 0 keeps the rounding of the O(1) values around it.
        np.testing.assert_allclose(ours[k], params[k], rtol=rtol, atol=rtol, err_msg=k)
        np.testing.assert_allclose(
            ours_averaged[k], averaged[k], rtol=rtol, atol=rtol, err_msg=f"averaged {k}"
        )


BASE = {"lr": 0.05, "momentum": 0.9}
SPE = 5  # updates per epoch in the per-epoch loops: 20 epochs of 5
CONFIGS = {
    "equal-from-step-29": {**BASE, "swa_start": 29},
    "equal-every-7-steps": {**BASE, "swa_start": 19, "average_every": 7},
    "equal-every-step": {**BASE},
    "equal-per-epoch": {**BASE, "swa_start": 7, "steps_per_epoch": SPE},
    "equal-every-3-epochs": {**BASE, "swa_start": 4, "average_every": 3, "steps_per_epoch": SPE},
    "ema-multi-every-step": {**BASE, "ema": "multi", "ema_decay": 0.9},
    "ema-multi-decay-0.3": {**BASE, "ema": "multi", "ema_decay": 0.3, "swa_start": 9},
    "ema-single-every-2-from-10": {
        **BASE, "ema": "single", "ema_decay": 0.8, "swa_start": 9, "average_every": 2,
    },
    "ema-per-epoch": {
        **BASE, "ema": "multi", "ema_decay": 0.7, "swa_start": 3, "steps_per_epoch": SPE,
    },
}  # fmt: skip
for _before, _extra in (
    ("constant", {}),
    ("cosine", {"T_max": 15}),
    ("cosine-short", {"T_max": 6}),
):
    for _strategy in ("cos", "linear"):
        for _anneal in (0, 3):
            if _before == "cosine-short" and _anneal == 0:
                continue  # past T_max torch's restart adds to a rebased rate: see swalr
            CONFIGS[f"swalr-{_strategy}-anneal{_anneal}-after-{_before}"] = {
                **BASE, **_extra, "lr": 0.1, "swa_start": 7, "steps_per_epoch": SPE,
                "swalr": {"swa_lr": 0.02, "anneal_epochs": _anneal, "anneal_strategy": _strategy},
            }  # fmt: skip
CONFIGS["swalr-cos-anneal10-per-step"] = {
    **BASE, "lr": 0.1, "T_max": 60, "swa_start": 39,
    "swalr": {"swa_lr": 0.01, "anneal_epochs": 10, "anneal_strategy": "cos"},
}  # fmt: skip
CONFIGS["swalr-ema-every-2-epochs"] = {
    **BASE, "lr": 0.1, "T_max": 12, "swa_start": 5, "steps_per_epoch": 4, "average_every": 2,
    "ema": "multi", "ema_decay": 0.5,
    "swalr": {"swa_lr": 0.03, "anneal_epochs": 4, "anneal_strategy": "linear"},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_torch_float64(name):
    with jax.enable_x64(True):
        compare(CONFIGS[name], np.float64, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_torch_float32(name):
    compare(CONFIGS[name], np.float32, rtol=1e-5)


# --- swalr alone, and after other schedulers: the rate at every count --------------------------


def torch_rates(lr, swalr_kwargs, counts, *, steps_per_epoch=1, swa_start=-1, before=None):
    """The rate torch's loop gives each of ``counts`` updates (no params: a zero gradient)."""
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=lr)
    scheduler = before(opt) if before is not None else None
    swa_scheduler = swa_utils.SWALR(opt, **swalr_kwargs)
    rates = []
    for count in range(counts):
        rates.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros_like(p)
        opt.step()
        if (count + 1) % steps_per_epoch == 0:
            epoch = count // steps_per_epoch
            if epoch > swa_start:
                swa_scheduler.step()
            elif scheduler is not None:
                scheduler.step()
    return np.asarray(rates)


SWALR_ALONE = [
    (0.1, {"swa_lr": 0.05}, 1),
    (0.1, {"swa_lr": 0.05, "anneal_epochs": 0}, 1),
    (0.1, {"swa_lr": 0.3, "anneal_epochs": 1, "anneal_strategy": "linear"}, 1),
    (0.2, {"swa_lr": 0.01, "anneal_epochs": 37, "anneal_strategy": "linear"}, 1),
    (0.2, {"swa_lr": 0.01, "anneal_epochs": 37, "anneal_strategy": "cos"}, 1),
    (0.05, {"swa_lr": 0.05, "anneal_epochs": 5}, 1),
    (0.1, {"swa_lr": 0.0, "anneal_epochs": 8}, 3),
    (0.1, {"swa_lr": 0.02, "anneal_epochs": 0, "anneal_strategy": "linear"}, 4),
]


@pytest.mark.parametrize("lr, kwargs, spe", SWALR_ALONE)
def test_swalr_alone_matches_torch_at_every_count(lr, kwargs, spe):
    counts = 400
    expected = torch_rates(lr, kwargs, counts, steps_per_epoch=spe)
    with jax.enable_x64(True):
        schedule = swalr(lr, **kwargs, steps_per_epoch=spe)
        np.testing.assert_allclose(schedule(jnp.arange(counts)), expected, rtol=1e-13, atol=0)
        jitted = jax.jit(schedule)
        for count in (0, 1, spe, 7 * spe + 1, counts - 1):
            np.testing.assert_allclose(jitted(count), expected[count], rtol=1e-13)
    # float32: a few ulps
    np.testing.assert_allclose(schedule(jnp.arange(counts)), expected, rtol=5e-7, atol=0)


BEFORE = {
    "cosine": (lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 12),
               lambda lr, spe: S.cosine_annealing_lr(lr, 12, steps_per_epoch=spe)),
    "exponential": (lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9),
                    lambda lr, spe: S.exponential_lr(lr, 0.9, steps_per_epoch=spe)),
    "step": (lambda o: torch.optim.lr_scheduler.StepLR(o, 4, 0.5),
             lambda lr, spe: S.step_lr(lr, 4, 0.5, steps_per_epoch=spe)),
    "lambda": (lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / (1 + e)),
               lambda lr, spe: S.lambda_lr(lr, lambda e: 1.0 / (1.0 + e), steps_per_epoch=spe)),
}  # fmt: skip


# LambdaLR with anneal_epochs=0 is not reproduced: see test_swalr_rejects_what_it_cannot_reproduce.
AFTER_A_SCHEDULER = [
    (before, anneal, strategy, spe)
    for before in sorted(BEFORE)
    for anneal in (0, 1, 6)
    for strategy in ("cos", "linear")
    for spe in (1, 3)
    if not (before == "lambda" and anneal == 0)
]


@pytest.mark.parametrize("before, anneal_epochs, strategy, spe", AFTER_A_SCHEDULER)
def test_swalr_after_a_scheduler_matches_torch_at_every_count(before, anneal_epochs, strategy, spe):
    make_torch, make_ours = BEFORE[before]
    kwargs = {"swa_lr": 0.03, "anneal_epochs": anneal_epochs, "anneal_strategy": strategy}
    swa_start, counts = 9, 300
    expected = torch_rates(
        0.1, kwargs, counts, steps_per_epoch=spe, swa_start=swa_start, before=make_torch
    )
    with jax.enable_x64(True):
        schedule = swalr(make_ours(0.1, spe), **kwargs, swa_start=swa_start, steps_per_epoch=spe)
        np.testing.assert_allclose(schedule(jnp.arange(counts)), expected, rtol=1e-13, atol=0)


def test_swalr_is_finite_at_every_count_and_takes_a_traced_count():
    schedule = swalr(S.cosine_annealing_lr(0.1, 7), 0.02, 5, swa_start=100)
    counts = jnp.array([-3, 0, 101, 106, 2**31 - 1])
    values = np.asarray(jax.jit(schedule)(counts))
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values[[0, 1]], 0.1, rtol=1e-7)
    np.testing.assert_allclose(values[-1], 0.02, rtol=1e-7)
    np.testing.assert_allclose(schedule(2.0**40), 0.02, rtol=1e-7)
    assert isinstance(schedule, S.TorchSchedule) and schedule.base_lr == 0.1


def test_swalr_rejects_what_it_cannot_reproduce():
    with pytest.raises(ValueError, match=r"swalr: with anneal_epochs=0.*\.multiplier"):
        swalr(S.lambda_lr(0.1, lambda e: 0.9**e), 0.05, anneal_epochs=0, swa_start=3)


# --- the transform's contract -------------------------------------------------------------


class MatchesTorchWithAndWithoutJit(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("equal_per_epoch", "equal-every-3-epochs"),
        ("ema_every_2", "ema-single-every-2-from-10"),
        ("swalr", "swalr-cos-anneal3-after-cosine"),
    )
    def test_step_by_step(self, name):
        cfg = CONFIGS[name]
        steps = 40
        grads, expected, expected_averaged, _ = torch_loop(np.float64, cfg, steps=steps)
        with jax.enable_x64(True):
            opt = gradtx.chain(
                T.sgd(gradtx_schedule(cfg), momentum=cfg["momentum"]), gradtx_averaging(cfg)
            )
            update = self.variant(opt.update)
            params = {k: jnp.asarray(v) for k, v in initial_params(np.float64).items()}
            state = opt.init(params)
            for step in range(steps):
                g = {k: jnp.asarray(v[step]) for k, v in grads.items()}
                updates, state = update(g, state, params)
                params = gradtx.apply_updates(params, updates)
                averaged = averaged_model_params(state)
                for k in SHAPES:
                    np.testing.assert_allclose(params[k], expected[k][step], rtol=1e-12, atol=1e-12)
                    np.testing.assert_allclose(
                        averaged[k], expected_averaged[k][step], rtol=1e-12, atol=1e-12
                    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: averaged_model(),
        lambda: averaged_model(0.9, swa_start=0, average_every=2),
        lambda: gradtx.chain(T.sgd(0.1, momentum=0.9), averaged_model(swa_start=1)),
        lambda: gradtx.chain(
            T.sgd(swalr(0.1, 0.05, 1, swa_start=0)), averaged_model(steps_per_epoch=2)
        ),
    ],
    ids=["equal", "ema", "after-sgd", "after-swalr-per-epoch"],
)
def test_check_transform(make):
    gradtx.testing.check_transform(make(), make_params(), steps=4)


def test_updates_pass_through_and_the_state_counts():
    params = {"w": jnp.array([1.0, 2.0])}
    opt = averaged_model(swa_start=1, average_every=2)
    state = opt.init(params)
    assert isinstance(state, AveragedModelState)
    calls = []
    for step in range(8):
        u = {"w": jnp.array([0.5, -1.0]) * (step + 1)}
        out, state = opt.update(u, state, params)
        np.testing.assert_array_equal(out["w"], u["w"])
        params = gradtx.apply_updates(params, out)
        calls.append(int(state.n_averaged))
    # torch: epoch > 1 and (epoch - 2) % 2 == 0 -> update_parameters after updates 2, 4, 6
    assert calls == [0, 0, 1, 1, 2, 2, 3, 3]
    assert int(state.count) == 8 and state.count.dtype == jnp.int32


def run_averaged(opt, steps=10):
    params = make_params()
    state = opt.init(params)
    for step in range(steps):
        grads = jax.tree.map(lambda p, step=step: 0.5 * p + jnp.sin(step + p), params)
        updates, state = opt.update(grads, state, params)
        params = gradtx.apply_updates(params, updates)
    return averaged_model_params(state)


def loop_equals_vmap(train, values):
    batched = jax.jit(jax.vmap(train))(jnp.asarray(values))
    for i, v in enumerate(values):
        single = train(v)  # a plain Python loop, no jit
        jax.tree.map(
            lambda b, s, i=i: np.testing.assert_allclose(b[i], s, rtol=1e-6, atol=1e-7),
            batched,
            single,
        )


def test_vmap_over_the_ema_decay_equals_a_loop():
    loop_equals_vmap(
        lambda d: run_averaged(gradtx.chain(T.sgd(0.05, momentum=0.9), averaged_model(d))),
        [0.0, 0.5, 0.9, 1.0],
    )


def test_vmap_over_swa_lr_equals_a_loop():
    def train(swa_lr):
        schedule = swalr(S.cosine_annealing_lr(0.1, 6), swa_lr, 3, swa_start=2)
        return run_averaged(
            gradtx.chain(T.sgd(schedule, momentum=0.9), averaged_model(swa_start=2)), 12
        )

    loop_equals_vmap(train, [0.0, 0.01, 0.05])


@pytest.mark.parametrize("ema", [None, 0.8])
def test_complex_leaf_matches_torch(ema):
    """A complex param averaged as a complex number; JAX's gradient is torch's conjugated."""
    rng = np.random.default_rng(3)
    z0 = rng.normal(size=(4,)) + 1j * rng.normal(size=(4,))
    target = np.array([1 + 2j, -1j, 0.5, 2 - 1j])
    z = torch.nn.Parameter(torch.tensor(z0, dtype=torch.complex128))
    module = torch.nn.ParameterList([z])
    opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.8)
    multi = None if ema is None else swa_utils.get_ema_multi_avg_fn(ema)
    swa_model = swa_utils.AveragedModel(module, multi_avg_fn=multi)
    grads, expected = [], []
    for step in range(30):
        g = (z.detach().numpy() - target) + 0.1j * np.sin(step)  # torch's .grad
        z.grad = torch.tensor(g)
        opt.step()
        if step > 4:
            swa_model.update_parameters(module)
        grads.append(np.conj(g))
        expected.append(swa_model.module[0].detach().numpy().copy())
    with jax.enable_x64(True):
        ours = gradtx.chain(T.sgd(0.1, momentum=0.8), averaged_model(ema, swa_start=4))
        _, averaged = gradtx_loop(ours, {"z": jnp.asarray(z0)}, {"z": np.stack(grads)})
    assert averaged["z"].dtype == np.complex128
    np.testing.assert_allclose(averaged["z"], np.stack(expected), rtol=1e-12, atol=1e-14)


def test_integer_leaves_are_left_alone():
    params = {"w": jnp.array([1.0, 2.0]), "steps": jnp.array(3)}
    opt = averaged_model()
    state = opt.init(params)
    updates, state = opt.update({"w": jnp.array([1.0, 1.0]), "steps": jnp.array(0)}, state, params)
    assert int(updates["steps"]) == 0
    np.testing.assert_array_equal(averaged_model_params(state)["w"], [2.0, 3.0])
    assert averaged_model_params(state)["steps"] is None


def test_averaged_params_are_found_by_type_not_position():
    inner = gradtx.chain(T.sgd(0.1), averaged_model())
    opt = gradtx.chain(gradtx.clip_by_global_norm(1.0), inner)
    params = {"w": jnp.ones(2)}
    np.testing.assert_array_equal(averaged_model_params(opt.init(params))["w"], [1.0, 1.0])
    with pytest.raises(ValueError, match="averaged_model_params: the state holds no"):
        averaged_model_params(T.sgd(0.1).init(params))
    doubled = gradtx.chain(averaged_model(), averaged_model())
    with pytest.raises(ValueError, match="holds 2 averaged_model states"):
        averaged_model_params(doubled.init(params))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: averaged_model(1.5), r"averaged_model: ema_decay must be in \[0, 1\], got 1.5"),
        (lambda: averaged_model(-0.1), r"averaged_model: ema_decay must be in \[0, 1\]"),
        (lambda: averaged_model(swa_start=-2), r"averaged_model: swa_start must be an integer >= "),
        (lambda: averaged_model(swa_start=2.5), r"averaged_model: swa_start must be an integer"),
        (lambda: averaged_model(average_every=0), r"averaged_model: average_every must be a posi"),
        (lambda: averaged_model(steps_per_epoch=0), r"averaged_model: steps_per_epoch must be"),
        (lambda: swalr(0.1, -0.05), r"swalr: swa_lr must be in \[0, inf\), got -0.05"),
        (lambda: swalr(-0.1, 0.05), r"swalr: lr must be in \[0, inf\)"),
        (lambda: swalr(0.1, 0.05, -1), r"swalr: anneal_epochs must be equal or greater than 0"),
        (lambda: swalr(0.1, 0.05, 2.5), r"swalr: anneal_epochs must be equal or greater than 0"),
        (lambda: swalr(0.1, 0.05, True), r"swalr: anneal_epochs"),
        (lambda: swalr(0.1, 0.05, anneal_strategy="exp"), r"swalr: anneal_strategy must be one"),
        (lambda: swalr(0.1, 0.05, swa_start=-5), r"swalr: swa_start must be an integer >= -1"),
        (lambda: swalr(0.1, 0.05, steps_per_epoch=0), r"swalr: steps_per_epoch must be"),
    ],
)
def test_bad_arguments_name_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_torch_rejects_the_same_arguments():
    """The ranges checked above are torch's own (decay in [0, 1], anneal_epochs >= 0)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError):
        swa_utils.get_ema_multi_avg_fn(1.5)
    with pytest.raises(ValueError, match="anneal_epochs"):
        swa_utils.SWALR(opt, 0.05, anneal_epochs=-1)
    with pytest.raises(ValueError, match="anneal_strategy"):
        swa_utils.SWALR(opt, 0.05, anneal_strategy="exp")
    swa_utils.get_ema_multi_avg_fn(1.0)  # the closed end is allowed by both
    averaged_model(1.0)


def test_update_without_params_raises():
    opt = averaged_model()
    with pytest.raises(ValueError, match="averaged_model: update needs the params"):
        opt.update({"w": jnp.ones(2)}, opt.init({"w": jnp.ones(2)}))
