"""gradtx.torch_optim.lbfgs against torch.optim.LBFGS itself, step call by step call."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx.testing
from gradtx.torch_optim.lbfgs import lbfgs, lbfgs_step

torch = pytest.importorskip("torch")

STEPS = 20
TOL = 1e-8


def rosenbrock_jax(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosenbrock_torch(x):
    return torch.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def torch_run(loss_fn, params0, steps, **kwargs):
    """torch's params, func_evals and n_iter after each of ``steps`` step calls, and its state."""
    params = [torch.tensor(np.asarray(p), dtype=torch.float64, requires_grad=True) for p in params0]
    opt = torch.optim.LBFGS(params, **kwargs)

    def closure():
        opt.zero_grad()
        loss = loss_fn(*params)
        loss.backward()
        return loss

    history = []
    for _ in range(steps):
        loss = opt.step(closure)
        state = opt.state[params[0]]
        history.append(
            (
                [p.detach().numpy().copy() for p in params],
                state["func_evals"],
                state["n_iter"],
                float(loss.detach()),
            )
        )
    return history, opt.state[params[0]]


def gradtx_run(loss_fn, params0, steps, jit=False, **kwargs):
    """The same with gradtx, in float64; params is a tuple of arrays."""
    with jax.enable_x64(True):
        opt = lbfgs(**kwargs)
        params = tuple(jnp.asarray(p, jnp.float64) for p in params0)
        state = opt.init(params)
        vg = jax.value_and_grad(lambda ps: loss_fn(*ps))

        def step(params, state):
            return lbfgs_step(opt, params, state, vg)

        if jit:
            step = jax.jit(step)
        history = []
        for _ in range(steps):
            params, state, loss = step(params, state)
            history.append(
                (
                    [np.asarray(p) for p in params],
                    int(state.func_evals),
                    int(state.n_iter),
                    float(loss),
                )
            )
        return history, jax.tree.map(np.asarray, state)


def compare(ours, theirs, tol=TOL):
    """Max error over the runs; every step's evaluation and iteration counts equal torch's."""
    worst = 0.0
    for k, ((p, fe, it, loss), (tp, tfe, tit, tloss)) in enumerate(zip(ours, theirs, strict=True)):
        assert (fe, it) == (tfe, tit), f"step {k}: (func_evals, n_iter) {(fe, it)} != {(tfe, tit)}"
        for a, b in zip(p, tp, strict=True):
            err = float(np.max(np.abs(a - b)))
            worst = max(worst, err)
            assert err <= tol, f"step {k}: params differ by {err}"
        assert abs(loss - tloss) <= tol * max(1.0, abs(tloss)), f"step {k}: loss {loss} != {tloss}"
    return worst


def rosen_start(n):
    x = np.tile([-1.2, 1.0], n // 2 + 1)[:n].astype(np.float64)
    return (x,)


CONFIGS = {
    "wolfe_default": {"line_search_fn": "strong_wolfe"},
    "wolfe_short": {"line_search_fn": "strong_wolfe", "max_iter": 3, "history_size": 2},
    "wolfe_few_evals": {"line_search_fn": "strong_wolfe", "max_iter": 6, "max_eval": 7},
    "wolfe_lr": {"line_search_fn": "strong_wolfe", "lr": 0.5, "max_iter": 5, "history_size": 4},
    "fixed_default": {},
    "fixed_lr": {"lr": 0.05, "max_iter": 5, "history_size": 3},
    "fixed_tol": {"lr": 0.2, "tolerance_change": 1e-5, "tolerance_grad": 1e-4},
}


# Rosenbrock's iterates are sensitive to rounding: torch's own iterates move by up to
# 1e-7 when its start moves by 1e-16 (test_rosenbrock_10d_within_torchs_own_noise). These
# cases are those whose trajectory is stable enough for 1e-8; some stop on each of torch's
# tests (max_iter, max_eval, tolerance_grad at the start and inside, tolerance_change).
CASES = [
    (2, "wolfe_default"),
    (2, "wolfe_short"),
    (2, "wolfe_few_evals"),
    (2, "wolfe_lr"),
    (2, "fixed_default"),
    (2, "fixed_lr"),
    (6, "wolfe_default"),
    (6, "wolfe_short"),
    (6, "wolfe_few_evals"),
    (6, "fixed_lr"),
    (6, "fixed_tol"),
]


@pytest.mark.parametrize(("n", "name"), CASES)
def test_rosenbrock_matches_torch(name, n):
    kwargs = CONFIGS[name]
    x0 = rosen_start(n)
    theirs, torch_state = torch_run(rosenbrock_torch, x0, STEPS, **kwargs)
    ours, state = gradtx_run(rosenbrock_jax, x0, STEPS, **kwargs)
    compare(ours, theirs)
    # The state is torch's: the direction, the step, the history and its scale.
    if "d" in torch_state:
        np.testing.assert_allclose(state.d, torch_state["d"].numpy(), atol=TOL)
        np.testing.assert_allclose(state.t, float(torch_state["t"]), atol=TOL)
        # H_diag is y.s / y.y of tiny differences near the minimum: cancellation, so relative.
        np.testing.assert_allclose(state.H_diag, float(torch_state["H_diag"]), rtol=1e-4)
        count = int(state.history_count)
        assert count == len(torch_state["old_dirs"])
        if count:
            np.testing.assert_allclose(
                state.old_dirs[:count], torch.stack(torch_state["old_dirs"]).numpy(), atol=1e-6
            )
            np.testing.assert_allclose(
                state.old_stps[:count], torch.stack(torch_state["old_stps"]).numpy(), atol=1e-6
            )
        np.testing.assert_allclose(
            state.prev_flat_grad, torch_state["prev_flat_grad"].numpy(), atol=1e-6
        )


@pytest.mark.parametrize(("n", "name"), [(2, "wolfe_default"), (6, "wolfe_short"), (6, "fixed_lr")])
def test_jit_matches_torch(n, name):
    x0 = rosen_start(n)
    theirs, _ = torch_run(rosenbrock_torch, x0, STEPS, **CONFIGS[name])
    ours, _ = gradtx_run(rosenbrock_jax, x0, STEPS, jit=True, **CONFIGS[name])
    compare(ours, theirs)


def digits_problem(classes=4, samples=300):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    keep = y < classes
    x, y = (x[keep] / 16.0)[:samples], y[keep][:samples]
    rng = np.random.default_rng(0)
    w0 = 0.01 * rng.standard_normal((64, classes))
    b0 = np.zeros(classes)

    def loss_jax(w, b):
        logp = jax.nn.log_softmax(jnp.asarray(x) @ w + b)
        nll = -jnp.mean(jnp.take_along_axis(logp, jnp.asarray(y)[:, None], axis=1))
        return nll + 1e-3 * jnp.sum(w**2)

    xt, yt = torch.tensor(x), torch.tensor(y)

    def loss_torch(w, b):
        logp = torch.log_softmax(xt @ w + b, dim=1)
        nll = -torch.mean(torch.take_along_dim(logp, yt[:, None], dim=1))
        return nll + 1e-3 * torch.sum(w**2)

    return loss_jax, loss_torch, (w0, b0)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_logistic_regression_matches_torch(line_search_fn):
    loss_jax, loss_torch, p0 = digits_problem()
    kwargs = {"line_search_fn": line_search_fn, "history_size": 10}  # torch's lr=1
    theirs, _ = torch_run(loss_torch, p0, 4, **kwargs)
    ours, _ = gradtx_run(loss_jax, p0, 4, **kwargs)
    compare(ours, theirs)
    assert theirs[-1][3] < 0.5 * theirs[0][3]  # it did optimise


def test_complex_params_match_torch():
    a = np.array([1.0 + 2.0j, -0.5 + 0.25j])

    def loss_torch(z):
        return torch.sum(torch.abs(z - torch.tensor(a)) ** 4)

    z = torch.zeros(2, dtype=torch.complex128, requires_grad=True)
    opt = torch.optim.LBFGS([z], line_search_fn="strong_wolfe", max_iter=5)

    def closure():
        opt.zero_grad()
        loss = loss_torch(z)
        loss.backward()
        return loss

    with jax.enable_x64(True):
        ours = lbfgs(line_search_fn="strong_wolfe", max_iter=5)
        w = jnp.zeros(2, jnp.complex128)
        state = ours.init(w)
        vg = jax.value_and_grad(lambda w: jnp.sum(jnp.abs(w - jnp.asarray(a)) ** 4))
        for _ in range(4):
            opt.step(closure)
            w, state, _ = lbfgs_step(ours, w, state, vg)
            np.testing.assert_allclose(np.asarray(w), z.detach().numpy(), atol=TOL)
            assert int(state.func_evals) == opt.state[z]["func_evals"]


def test_integer_leaves_left_alone_and_value_fn_extra():
    """Integer leaves pass through; ``value_fn`` and the data extras work as in a line search."""
    opt = lbfgs(line_search_fn="strong_wolfe", max_iter=10)

    def f(params, target):
        return jnp.sum((params["w"] - target) ** 2)

    params = {"w": jnp.zeros(3), "count": jnp.array(7)}
    target = jnp.array([1.0, 2.0, -1.0])
    state = opt.init(params)
    updates, state = opt.update(params, state, params, value_fn=f, target=target)
    assert updates["count"].dtype == params["count"].dtype and int(updates["count"]) == 0
    np.testing.assert_allclose(params["w"] + updates["w"], target, atol=1e-5)
    with pytest.raises(TypeError, match="other"):
        opt.update(params, state, params, value_fn=f, target=target, other=1)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_check_transform(line_search_fn):
    def value_fn(params):
        return sum(jnp.sum(jnp.abs(x) ** 2) for x in jax.tree.leaves(params))

    params = {"w": jnp.linspace(-1.0, 1.0, 6).reshape(2, 3), "b": jnp.array([0.5, -0.25])}
    opt = lbfgs(lr=0.5, max_iter=3, history_size=2, line_search_fn=line_search_fn)
    gradtx.testing.check_transform(opt, params, extra={"value_fn": value_fn}, name="lbfgs")


def test_vmap_over_lr():
    def run(lr):
        opt = lbfgs(lr=lr, max_iter=3)
        x = jnp.array([-1.2, 1.0])
        state = opt.init(x)
        vg = jax.value_and_grad(rosenbrock_jax)
        for _ in range(3):
            x, state, _ = lbfgs_step(opt, x, state, vg)
        return x

    lrs = jnp.array([0.01, 0.05])
    batched = jax.jit(jax.vmap(run))(lrs)
    for lr, row in zip(lrs, batched, strict=True):
        np.testing.assert_allclose(row, run(float(lr)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"line_search_fn": "backtracking"}, "line_search_fn"),
        ({"lr": -1.0}, "lr"),
        ({"max_iter": 0}, "max_iter"),
        ({"max_eval": 0}, "max_eval"),
        ({"history_size": 0}, "history_size"),
        ({"tolerance_grad": float("nan")}, "tolerance_grad"),
        ({"tolerance_change": float("nan")}, "tolerance_change"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        lbfgs(**kwargs)


def test_bad_line_search_message_is_torchs():
    with pytest.raises(ValueError, match="only 'strong_wolfe' is supported"):
        lbfgs(line_search_fn="backtracking")


def test_update_without_a_function_raises():
    opt = lbfgs()
    x = jnp.zeros(2)
    with pytest.raises(TypeError, match="value_and_grad_fn"):
        opt.update(x, opt.init(x), x)


def test_rosenbrock_10d_within_torchs_own_noise():
    """10-D from (-1.2, 1, ...): gradtx is as close to torch as torch is to itself.

    Moving torch's start by a few units in the 16th digit moves its iterates by
    ~1e-7 over the first steps: that is the trajectory's sensitivity to rounding, and
    gradtx (whose dot products and gradients round differently) stays within it,
    with the same evaluations and iterations at every step.
    """
    kwargs = {"line_search_fn": "strong_wolfe"}
    x0 = rosen_start(10)
    theirs, _ = torch_run(rosenbrock_torch, x0, 6, **kwargs)
    nudged, _ = torch_run(rosenbrock_torch, (x0[0] * (1 + 1e-16 * np.arange(1, 11)),), 6, **kwargs)
    noise = max(
        float(np.max(np.abs(a[0][0] - b[0][0]))) for a, b in zip(theirs, nudged, strict=True)
    )
    ours, _ = gradtx_run(rosenbrock_jax, x0, 6, **kwargs)
    compare(ours, theirs, tol=max(TOL, 10 * noise))
