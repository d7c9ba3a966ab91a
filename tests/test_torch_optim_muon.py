"""gradtx.torch_optim.muon against torch.optim.Muon.

torch is the oracle, as in test_torch_optim_basic: torch's Muon runs 100 steps on a
dict of matrices with gradients computed in NumPy from its current params; the same
gradients are fed to gradtx (a jitted ``lax.scan``) and the params compared at every
step, to 1e-12 in float64 and 1e-5 in float32. torch orthogonalises in bfloat16, so
this holds only because gradtx rounds where torch's kernels round (fused multiply-adds
included); the Newton-Schulz alone is also compared on random matrices, bit for bit.
"""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_vmap_equals_loop
from test_torch_optim_basic import gradtx_run, max_relative_error

import gradtx
import gradtx.testing
from gradtx.torch_optim.muon import _zeropower_via_newtonschulz, muon

torch = pytest.importorskip("torch")

STEPS = 100
SHAPES = {"wide": (2, 4), "tall": (5, 3), "square": (3, 3)}

CONFIGS = [
    {"lr": 0.02},
    {"lr": 0.02, "nesterov": False},
    {"lr": 0.02, "adjust_lr_fn": "original"},
    {"lr": 0.02, "adjust_lr_fn": "match_rms_adamw"},
    {"lr": 0.02, "weight_decay": 0.0},
    {"lr": 0.05, "weight_decay": 0.3, "momentum": 0.9, "nesterov": False},
    {"lr": 0.01, "momentum": 0.8, "adjust_lr_fn": "match_rms_adamw", "nesterov": False},
    {"lr": 0.02, "ns_coefficients": (3.0, -3.2, 1.2), "ns_steps": 3, "eps": 1e-5},
]


def config_id(kwargs):
    return "-".join(f"{k}={v}" for k, v in kwargs.items())


def initial_params(dtype):
    rng = np.random.default_rng(0)
    return {k: rng.normal(size=s).astype(dtype) for k, s in SHAPES.items()}


def gradient(params, step):
    out = {}
    for i, (k, p) in enumerate(sorted(params.items())):
        target = np.linspace(-1.0, 2.0, p.size).reshape(p.shape) + i
        drift = 0.3 * np.sin(0.7 * step + np.arange(p.size).reshape(p.shape) + i)
        out[k] = ((0.5 + i) * (p - target) + drift).astype(p.dtype)
    return out


def torch_run(kwargs, dtype, steps=STEPS, lr_schedule=None):
    torch_dtype = {np.float64: torch.float64, np.float32: torch.float32}[dtype]
    tensors = {k: torch.tensor(v, dtype=torch_dtype) for k, v in initial_params(dtype).items()}
    opt = torch.optim.Muon(list(tensors.values()), **kwargs)
    grads, trajectory = [], []
    for step in range(steps):
        if lr_schedule is not None:
            opt.param_groups[0]["lr"] = float(lr_schedule(step))
        g = gradient({k: t.detach().numpy() for k, t in tensors.items()}, step)
        for k, t in tensors.items():
            t.grad = torch.tensor(g[k], dtype=torch_dtype)
        opt.step()
        grads.append(g)
        trajectory.append({k: t.detach().numpy().copy() for k, t in tensors.items()})
    stack = lambda trees: {k: np.stack([t[k] for t in trees]) for k in SHAPES}  # noqa: E731
    return stack(grads), stack(trajectory)


def compare(kwargs, dtype, rtol, lr_schedule=None):
    grads, expected = torch_run(kwargs, dtype, lr_schedule=lr_schedule)
    if lr_schedule is not None:
        kwargs = {**kwargs, "lr": lr_schedule}
    actual = gradtx_run(muon(**kwargs), initial_params(dtype), grads)
    for k in expected:
        assert actual[k].dtype == dtype
        np.testing.assert_allclose(actual[k], expected[k], rtol=rtol, atol=rtol, err_msg=k)
    return max_relative_error(actual, expected)


@pytest.mark.parametrize("kwargs", CONFIGS, ids=config_id)
def test_matches_torch_float64(kwargs):
    with jax.enable_x64(True):
        compare(kwargs, np.float64, rtol=1e-12)


@pytest.mark.parametrize("kwargs", CONFIGS, ids=config_id)
def test_matches_torch_float32(kwargs):
    compare(kwargs, np.float32, rtol=1e-5)


def test_scheduled_lr_matches_torch_scheduler():
    with jax.enable_x64(True):
        compare({"weight_decay": 0.2}, np.float64, 1e-12, lambda count: 0.03 * 0.98**count)


class MatchesTorchWithAndWithoutJit(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_step_by_step(self):
        kwargs = {"lr": 0.05, "weight_decay": 0.2, "adjust_lr_fn": "match_rms_adamw"}
        grads, expected = torch_run(kwargs, np.float64, steps=20)
        with jax.enable_x64(True):
            opt = muon(**kwargs)
            update = self.variant(opt.update)
            params = {k: jnp.asarray(v) for k, v in initial_params(np.float64).items()}
            state = opt.init(params)
            for step in range(20):
                updates, state = update({k: jnp.asarray(v[step]) for k, v in grads.items()},
                                        state, params)  # fmt: skip
                params = gradtx.apply_updates(params, updates)
                for k in SHAPES:
                    np.testing.assert_allclose(params[k], expected[k][step], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_newton_schulz_is_torchs_bit_for_bit(jit):
    """The bfloat16 iteration on 4 x 1000 random matrices: every entry equal.

    With plain products and sums where torch's addmm kernels fuse multiply-adds, or
    with the ones XLA makes on its own, a few entries in 10^5 move by a bfloat16 ulp."""
    from torch.optim._muon import _zeropower_via_newtonschulz as torchs

    rng = np.random.default_rng(1)
    coefficients = (3.4445, -4.775, 2.0315)

    def ours(g):
        return _zeropower_via_newtonschulz(g, coefficients, 5, 1e-7, jnp.int32(0))

    batched = jax.jit(jax.vmap(ours)) if jit else jax.vmap(ours)
    for shape in [(4, 3), (2, 4), (3, 3), (8, 5)]:
        g = rng.normal(size=(1000, *shape)).astype(np.float32)
        expected = np.stack([torchs(torch.tensor(m), coefficients, 5, 1e-7).float().numpy()
                             for m in g])  # fmt: skip
        np.testing.assert_array_equal(np.asarray(batched(jnp.asarray(g))), expected)


def _matrices():
    params = initial_params(np.float32)
    return {k: jnp.asarray(v) for k, v in params.items()}


def test_check_transform():
    gradtx.testing.check_transform(muon(0.02, adjust_lr_fn="match_rms_adamw"), _matrices())


def _scan_run(opt, steps=10):
    """10 steps in one lax.scan, gradients from conftest's rule (0.5 p + noise)."""
    params = _matrices()
    noise = np.random.default_rng(2).normal(size=(steps, 1, 1)).astype(np.float32)

    def step(carry, n):
        p, state = carry
        u, state = opt.update(jax.tree.map(lambda x: 0.5 * x + n, p), state, p)
        return (gradtx.apply_updates(p, u), state), None

    return jax.lax.scan(step, (params, opt.init(params)), noise)[0][0]


def test_vmap_over_lr_equals_loop():
    assert_vmap_equals_loop(lambda lr: _scan_run(muon(lr)), [0.001, 0.01, 0.05])


def test_vmap_over_momentum_and_weight_decay_equals_loop():
    make = lambda m: muon(0.02, momentum=m, weight_decay=m / 10)  # noqa: E731
    assert_vmap_equals_loop(lambda m: _scan_run(make(m)), [0.5, 0.9])


def test_torch_defaults():
    ours = inspect.signature(muon).parameters
    theirs = dict(inspect.signature(torch.optim.Muon.__init__).parameters)
    theirs.pop("self"), theirs.pop("params")
    assert list(ours) == [*theirs, "param_specs"]  # gradtx's, for shard_map
    assert ours["param_specs"].kind is inspect.Parameter.KEYWORD_ONLY
    for k, p in theirs.items():
        assert ours[k].default == p.default, k
        assert ours[k].kind == p.kind, k


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: muon(-0.1), r"muon: lr must be in \[0, inf\), got -0.1"),
        (lambda: muon(momentum=-0.5), r"muon: momentum must be in \[0, inf\)"),
        (lambda: muon(weight_decay=-1.0), r"muon: weight_decay must be in \[0, inf\)"),
        (lambda: muon(eps=-1.0), r"muon: eps must be in \[0, inf\)"),
        (lambda: muon(adjust_lr_fn="spectral"), r"muon: adjust_lr_fn must be None, 'original'"),
        (lambda: muon(ns_steps=100), r"muon: ns_steps must be less than 100"),
        (lambda: muon(ns_steps=-1), r"muon: ns_steps must be an integer >= 0"),
        (lambda: muon(ns_coefficients=(1.0, 2.0)), r"muon: ns_coefficients must be a tuple of "),
    ],
)
def test_bad_arguments_name_torchs_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_torch_raises_where_gradtx_raises():
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        torch.optim.Muon([torch.zeros(3)])
    with pytest.raises(ValueError, match="Adjust learning rate function"):
        torch.optim.Muon([torch.zeros(2, 2)], adjust_lr_fn="spectral")


@pytest.mark.parametrize(
    "params, match",
    [
        ({"w": jnp.ones((2, 3)), "b": jnp.ones(3)}, r"param at \['b'\] has shape \(3,\).*2D"),
        ({"k": jnp.ones((3, 3, 2, 4))}, r"param at \['k'\] has shape \(3, 3, 2, 4\)"),
        ({"z": jnp.ones((2, 2), jnp.complex64)}, r"param at \['z'\] is complex64.*complex"),
    ],
)
def test_params_torch_rejects_raise_at_init_naming_the_leaf(params, match):
    with pytest.raises(ValueError, match=match):
        muon().init(params)


def test_integer_leaves_pass_through():
    params = {"w": jnp.ones((3, 2)), "step": jnp.array(3)}
    opt = muon(0.1)
    updates, _ = opt.update({"w": jnp.ones((3, 2)), "step": jnp.array(7)}, opt.init(params), params)
    assert int(updates["step"]) == 7
