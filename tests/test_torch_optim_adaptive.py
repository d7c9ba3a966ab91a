"""gradtx.torch_optim's NAdam, RAdam, Rprop, ASGD and Adafactor against torch.optim itself.

Both sides take the same gradient rule, computed from their own current params
(a quadratic pull to 0 plus a fixed noise sequence), for 200 steps; the params are
compared at every step: relative 1e-12 in float64 (torch's default dtype float64, so
its scalar state is float64 too; gradtx under ``jax.enable_x64``), 1e-5 in float32.
"""

from __future__ import annotations

import contextlib
import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from conftest import assert_vmap_equals_loop, make_params, run

import gradtx
from gradtx import testing
from gradtx.torch_optim import adaptive as T

torch = pytest.importorskip("torch")

STEPS = 200
SHAPES = {"matrix": (4, 3), "vector": (5,), "cube": (2, 3, 4)}
TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5}

TORCH_CLASSES = {
    "nadam": torch.optim.NAdam,
    "radam": torch.optim.RAdam,
    "rprop": torch.optim.Rprop,
    "asgd": torch.optim.ASGD,
    "adafactor": torch.optim.Adafactor,
}
LEARNERS = {"nadam": T.nadam, "radam": T.radam, "rprop": T.rprop, "asgd": T.asgd,
            "adafactor": T.adafactor}  # fmt: skip


def decaying(c):
    """A learning-rate schedule, written so that it runs on a count and on a Python int."""
    return 0.02 * 0.99**c


# Every learner with its flags: (name, keyword arguments, the same for torch and gradtx).
CONFIGS = [
    ("nadam", {}),
    ("nadam", {"lr": 0.01, "weight_decay": 0.1}),
    ("nadam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True,
               "maximize": True}),
    ("nadam", {"lr": 0.01, "betas": (0.8, 0.99), "momentum_decay": 0.1, "foreach": True}),
    ("nadam", {"lr": decaying, "eps": 1e-3}),
    ("radam", {}),
    ("radam", {"lr": 0.01, "weight_decay": 0.1}),
    ("radam", {"lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True,
               "maximize": True}),
    ("radam", {"lr": decaying, "betas": (0.5, 0.9), "eps": 1e-3, "foreach": True}),
    ("rprop", {}),
    ("rprop", {"etas": (0.3, 1.5), "step_sizes": (1e-3, 0.05), "maximize": True}),
    ("rprop", {"lr": 1e-4, "step_sizes": (1e-3, 1.0), "foreach": True}),  # lr below the clip
    ("rprop", {"lr": decaying, "step_sizes": (0.0, 0.1)}),
    ("asgd", {}),
    ("asgd", {"lr": 0.05, "lambd": 1e-2, "alpha": 0.5, "t0": 50, "weight_decay": 0.01}),
    ("asgd", {"t0": 0, "maximize": True, "foreach": True}),
    ("asgd", {"lr": decaying, "lambd": 0.1, "t0": 20}),
    ("adafactor", {}),
    ("adafactor", {"lr": 0.05, "weight_decay": 0.1, "d": 1.5}),
    ("adafactor", {"beta2_decay": -0.5, "eps": (1e-20, 1e-2), "maximize": True,
                   "foreach": True}),
    ("adafactor", {"lr": decaying, "eps": (1e-3, 1e-3)}),
]  # fmt: skip
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CONFIGS)]


def initial_params(dtype):
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}


def noise(dtype, steps=STEPS):
    rng = np.random.default_rng(1)
    return {k: rng.normal(size=(steps, *s)).astype(dtype) for k, s in SHAPES.items()}


def gradient(p, n, sign):
    """The gradient rule both sides use: in the params' dtype, so both round alike."""
    return sign * (0.5 * p + n)


@contextlib.contextmanager
def torch_default_dtype(dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if dtype == np.float64 else torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def run_torch(name, kwargs, dtype, steps=STEPS):
    """torch's params (and ASGD's ``ax``) after every step, as arrays of shape (steps, ...)."""
    sign = -1.0 if kwargs.get("maximize") else 1.0
    lr = kwargs.get("lr")
    kwargs = {k: v for k, v in kwargs.items() if not (k == "lr" and callable(v))}
    with torch_default_dtype(dtype):
        params = {k: torch.tensor(v) for k, v in initial_params(dtype).items()}
        optimizer = TORCH_CLASSES[name](list(params.values()), **kwargs)
        n = noise(dtype, steps)
        history = {k: [] for k in params}
        averages = {k: [] for k in params}
        for t in range(steps):
            if callable(lr):  # a scheduler's work: the rate for the step about to be taken
                for group in optimizer.param_groups:
                    group["lr"] = lr(t)
            for k, p in params.items():
                p.grad = torch.tensor(gradient(p.detach().numpy(), n[k][t], sign))
            optimizer.step()
            for k, p in params.items():
                history[k].append(p.detach().numpy().copy())
                if name == "asgd":
                    averages[k].append(optimizer.state[p]["ax"].numpy().copy())
    stack = lambda d: {k: np.stack(v) for k, v in d.items()}  # noqa: E731
    return stack(history), stack(averages) if name == "asgd" else None


def run_gradtx(name, kwargs, dtype, steps=STEPS):
    """gradtx's params (and ASGD's averages) after every step: one jitted scan."""
    sign = -1.0 if kwargs.get("maximize") else 1.0
    context = jax.enable_x64(True) if dtype == np.float64 else contextlib.nullcontext()
    with context:
        opt = LEARNERS[name](**kwargs)

        def step(carry, n):
            p, s = carry
            updates, s = opt.update(jax.tree.map(lambda p, n: gradient(p, n, sign), p, n), s, p)
            p = gradtx.apply_updates(p, updates)
            average = T.asgd_averaged_params(s) if name == "asgd" else p
            return (p, s), (p, average)

        @jax.jit
        def trajectory(params, n):
            return jax.lax.scan(step, (params, opt.init(params)), n)[1]

        params = {k: jnp.asarray(v) for k, v in initial_params(dtype).items()}
        history, averages = trajectory(params, {k: jnp.asarray(v) for k, v in noise(dtype).items()})
        assert all(x.dtype == dtype for x in jax.tree.leaves(history))
        history = jax.tree.map(np.asarray, history)
        return history, (jax.tree.map(np.asarray, averages) if name == "asgd" else None)


def max_relative_error(ours, theirs):
    """The largest error relative to the size of each leaf's entries at that step."""
    worst = 0.0
    for k in theirs:
        scale = np.max(np.abs(theirs[k]), axis=tuple(range(1, theirs[k].ndim)), keepdims=True)
        worst = max(worst, float(np.max(np.abs(ours[k] - theirs[k]) / scale)))
    return worst


def assert_every_step_close(ours, theirs, dtype):
    """Each step's params within ``rtol`` of torch's, relative to the leaf's largest entry.

    Entries that pass near zero on their way (the noise keeps them moving) are held to
    the same absolute error as the leaf's largest entry, not to a relative one.
    """
    rtol = TOLERANCE[dtype]
    for k in theirs:
        scale = np.max(np.abs(theirs[k]), axis=tuple(range(1, theirs[k].ndim)), keepdims=True)
        error = np.abs(ours[k] - theirs[k]) / scale
        step, *_ = np.unravel_index(np.argmax(error), error.shape)
        assert error.max() <= rtol, f"{k}: relative error {error.max():.3g} at step {step + 1}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=IDS)
def test_matches_torch_at_every_step(name, kwargs, dtype):
    ours, our_averages = run_gradtx(name, kwargs, dtype)
    theirs, their_averages = run_torch(name, kwargs, dtype)
    assert_every_step_close(ours, theirs, dtype)
    if name == "asgd":  # torch's state["ax"], step by step
        assert_every_step_close(our_averages, their_averages, dtype)


def test_the_runs_exercise_the_rules():
    """The configurations reach the branches they are there for."""
    # RAdam: rho_t crosses 5 within the run (b2 = 0.999: at step 6).
    _, b2 = 0.9, 0.999
    rho = lambda t: 2 / (1 - b2) - 1 - 2 * t * b2**t / (1 - b2**t)  # noqa: E731
    assert rho(5) < 5 < rho(6)
    # Rprop: gradients flip sign, so step sizes both grow and shrink.
    n = noise(np.float64)["vector"]
    assert np.any(np.sign(n[1:]) != np.sign(n[:-1]))
    # ASGD with t0 = 50: the average differs from the params after step 51.
    ours, averages = run_gradtx("asgd", dict(CONFIGS[14][1]), np.float64)
    np.testing.assert_allclose(averages["vector"][:51], ours["vector"][:51], rtol=1e-15)
    assert not np.allclose(ours["vector"][100:], averages["vector"][100:])
    # Adafactor with d = 1 clips: some update's RMS exceeds d on the first step.
    with jax.enable_x64(True):
        opt = T.adafactor()
        p = {"w": jnp.ones((3, 4))}
        g = {"w": jnp.asarray(np.random.default_rng(2).normal(size=(3, 4)))}
        updates, _ = opt.update(g, opt.init(p), p)
        # Unclipped, the first factored update would be g / sqrt(V) with RMS above 1.
        assert float(jnp.sqrt(jnp.mean(jnp.square(updates["w"])))) == pytest.approx(0.01)


class WithAndWithoutJit(chex.TestCase, parameterized.TestCase):
    """Each learner, stepped update by update, jitted and not: torch's float32 numbers."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        ("nadam", "nadam", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
        ("radam", "radam", {"lr": 0.01}),
        ("rprop", "rprop", {"maximize": True}),
        ("asgd", "asgd", {"t0": 5}),
        ("adafactor", "adafactor", {"weight_decay": 0.1}),
    )
    def test_thirty_steps(self, name, kwargs):
        steps, dtype = 30, np.float32
        sign = -1.0 if kwargs.get("maximize") else 1.0
        opt = LEARNERS[name](**kwargs)
        update = self.variant(opt.update)
        params = {k: jnp.asarray(v) for k, v in initial_params(dtype).items()}
        state = opt.init(params)
        n = noise(dtype, steps)
        theirs, _ = run_torch(name, kwargs, dtype, steps=steps)
        for t in range(steps):
            grads = {k: gradient(params[k], n[k][t], sign) for k in params}
            updates, state = update(grads, state, params)
            params = gradtx.apply_updates(params, updates)
            for k in params:
                np.testing.assert_allclose(params[k], theirs[k][t], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_check_transform(name):
    params = {k: jnp.asarray(v) for k, v in initial_params(np.float32).items()}
    testing.check_transform(LEARNERS[name](), params, name=name)


@pytest.mark.parametrize("name", sorted(LEARNERS))
def test_vmap_over_lr_equals_a_loop(name):
    params = {**make_params(), "cube": jnp.asarray(initial_params(np.float32)["cube"])}
    lrs = np.geomspace(1e-3, 1e-1, 4).astype(np.float32)
    assert_vmap_equals_loop(lambda lr: run(LEARNERS[name](lr), params, 5), lrs)


def test_asgd_averaged_params_reads_the_chain():
    opt = T.asgd(0.1, t0=0, maximize=True, weight_decay=0.1)  # a chain of three blocks
    params = {"w": jnp.array([1.0, -2.0])}
    state = opt.init(params)
    _, state = opt.update({"w": jnp.array([0.5, -1.0])}, state, params)
    assert isinstance(T.asgd_averaged_params(state)["w"], jax.Array)
    with pytest.raises(ValueError, match="holds no torch_optim.asgd state"):
        T.asgd_averaged_params(T.nadam().init(params))


def test_complex_params_are_real_pairs_as_in_torch():
    """torch's view_as_real: each part squared (NAdam, RAdam) or signed (Rprop) on its own."""
    z = np.array([1.0 + 2.0j, -0.5 + 0.25j])
    g = np.array([0.3 - 1.0j, 2.0 + 0.5j])
    for name, kwargs in (("nadam", {}), ("radam", {}), ("rprop", {}), ("asgd", {"t0": 0})):
        with torch_default_dtype(np.float64):  # NAdam's mu_product in float64, as gradtx's
            p = torch.tensor(z, dtype=torch.complex128)
            optimizer = TORCH_CLASSES[name]([p], **kwargs)
            with jax.enable_x64(True):
                opt = LEARNERS[name](**kwargs)
                params = {"z": jnp.asarray(z)}
                state = opt.init(params)
                for t in range(8):
                    grad = g * (t + 1) * (-1) ** t
                    p.grad = torch.tensor(grad)
                    optimizer.step()
                    # JAX's gradient of a complex parameter is the conjugate of torch's .grad.
                    updates, state = opt.update({"z": jnp.asarray(np.conj(grad))}, state, params)
                    params = gradtx.apply_updates(params, updates)
            np.testing.assert_allclose(np.asarray(params["z"]), p.detach().numpy(), rtol=1e-12)
            if name == "asgd":  # torch's ax is complex, like the param: so is gradtx's
                ax = T.asgd_averaged_params(state)["z"]
                assert jnp.iscomplexobj(ax) and ax.shape == z.shape
                np.testing.assert_allclose(
                    np.asarray(ax), optimizer.state[p]["ax"].numpy(), rtol=1e-12
                )
    with pytest.raises(ValueError, match="adafactor: the leaf at"):
        T.adafactor().init({"z": jnp.asarray(z.astype(np.complex64))})


def test_lr_tracer_and_integer_leaves():
    """An integer leaf passes through untouched; lr may be a traced value under jit."""
    params = {"w": jnp.ones(3), "step": jnp.array(4)}
    grads = {"w": jnp.ones(3), "step": jnp.array(4)}
    for name in LEARNERS:
        opt = jax.jit(lambda lr, g, p, name=name: LEARNERS[name](lr).update(
            g, LEARNERS[name](lr).init(p), p)[0])  # fmt: skip
        updates = opt(0.01, grads, params)
        assert int(updates["step"]) == 4 and np.all(np.isfinite(updates["w"]))


BAD_ARGUMENTS = [
    (T.nadam, {"lr": -1.0}, r"nadam: lr must be in \[0, inf\), got -1"),
    (T.nadam, {"betas": (1.0, 0.999)}, r"nadam: betas\[0\] must be in \[0, 1\), got 1"),
    (T.nadam, {"betas": (0.9, -0.1)}, r"nadam: betas\[1\] must be in \[0, 1\)"),
    (T.nadam, {"betas": 0.9}, r"nadam: betas must be a pair"),
    (T.nadam, {"eps": -1e-8}, r"nadam: eps must be in"),
    (T.nadam, {"weight_decay": -1}, r"nadam: weight_decay must be in \[0, inf\), got -1"),
    (T.nadam, {"momentum_decay": -1}, r"nadam: momentum_decay must be in \[0, inf\), got -1"),
    (T.radam, {"lr": -0.1}, r"radam: lr must be in"),
    (T.radam, {"betas": (0.9, 1.0)}, r"radam: betas\[1\] must be in \[0, 1\), got 1"),
    (T.radam, {"weight_decay": -1}, r"radam: weight_decay must be in"),
    (T.rprop, {"lr": -0.1}, r"rprop: lr must be in"),
    (T.rprop, {"etas": (1.0, 1.2)}, r"rprop: etas\[0\] must be in \(0, 1\), got 1"),
    (T.rprop, {"etas": (0.5, 1.0)}, r"rprop: etas\[1\] must be in \(1, inf\), got 1"),
    (T.rprop, {"step_sizes": (-1.0, 50)}, r"rprop: step_sizes\[0\] must be in \[0, inf\)"),
    (T.rprop, {"step_sizes": (1.0, 0.5)}, r"rprop: step_sizes\[0\] must be at most step_siz"),
    (T.rprop, {"step_sizes": (0.0, 0.0)}, r"rprop: step_sizes\[1\] must be in \(0, inf\)"),
    (T.asgd, {"lr": -1}, r"asgd: lr must be in"),
    (T.asgd, {"lambd": -1}, r"asgd: lambd must be in \[0, inf\), got -1"),
    (T.asgd, {"alpha": -0.5}, r"asgd: alpha must be in"),
    (T.asgd, {"t0": -1}, r"asgd: t0 must be in \[0, inf\], got -1"),
    (T.asgd, {"weight_decay": -1}, r"asgd: weight_decay must be in"),
    (T.adafactor, {"lr": -1}, r"adafactor: lr must be in"),
    (T.adafactor, {"beta2_decay": 0.5}, r"adafactor: beta2_decay must be in \(-inf, 0\]"),
    (T.adafactor, {"eps": (-1.0, 1e-3)}, r"adafactor: eps\[0\] must be in \[0, inf\)"),
    (T.adafactor, {"eps": (None, -1.0)}, r"adafactor: eps\[1\] must be in \[0, inf\)"),
    (T.adafactor, {"eps": 1e-3}, r"adafactor: eps must be a pair"),
    (T.adafactor, {"d": 0.5}, r"adafactor: d must be in \[1, inf\), got 0.5"),
    (T.adafactor, {"weight_decay": -1}, r"adafactor: weight_decay must be in"),
]  # fmt: skip


@pytest.mark.parametrize(("make", "kwargs", "message"), BAD_ARGUMENTS)
def test_bad_arguments_name_torchs_argument(make, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_torch_signatures():
    """Argument names, order and defaults are torch's own."""
    for name, cls in TORCH_CLASSES.items():
        theirs = inspect.signature(cls.__init__).parameters
        ours = inspect.signature(LEARNERS[name]).parameters
        assert list(ours) == [p for p in theirs if p not in ("self", "params")], name
        for p in ours:
            assert ours[p].default == theirs[p].default, (name, p)
            assert ours[p].kind == theirs[p].kind, (name, p)
