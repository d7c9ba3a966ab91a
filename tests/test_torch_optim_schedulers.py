"""gradtx.torch_optim's schedulers against torch.optim.lr_scheduler itself.

The oracle steps a real torch scheduler on a one-parameter SGD (or Adam) optimizer and
reads ``param_groups[0]["lr"]`` (and the momentum / ``betas[0]``) before every update;
the gradtx schedule is evaluated once on ``jnp.arange(3001)``. Tolerances: rtol 1e-6 in
float32, 1e-10 in float64 under ``jax.enable_x64`` (torch's Python-float recursions
round differently from the closed forms by up to ~1e-12 relative over 3,000 steps).
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradtx.torch_optim import schedulers as S

torch = pytest.importorskip("torch")
lr_scheduler = torch.optim.lr_scheduler

N = 3001
COUNTS = np.arange(N)
RTOL32, RTOL64 = 1e-6, 1e-10
LR = 0.1


def _optimizer(lr=LR, adam=False):
    p = torch.nn.Parameter(torch.zeros(1))
    if adam:
        return torch.optim.Adam([p], lr=lr)
    return torch.optim.SGD([p], lr=lr, momentum=0.9)


def torch_run(make, n=N, steps_per_epoch=1, lr=LR, adam=False):
    """(lrs, momenta) before each of ``n`` updates, stepping once every ``steps_per_epoch``."""
    opt = _optimizer(lr, adam)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make(opt)
        lrs, moms = [], []
        for count in range(n):
            group = opt.param_groups[0]
            lrs.append(float(group["lr"]))
            moms.append(float(group["betas"][0] if adam else group["momentum"]))
            if (count + 1) % steps_per_epoch == 0 and count + 1 < n:
                sched.step()
    return np.asarray(lrs), np.asarray(moms)


def check(schedule_fn, expected, *, atol=0.0, counts=COUNTS, x64=True, rtol32=RTOL32):
    """``schedule_fn()`` on ``counts`` against ``expected`` in float32 and (built there) float64.

    Returns the maximum relative errors (float32, float64).
    """
    got = np.asarray(jax.jit(schedule_fn())(jnp.asarray(counts)), np.float64)
    assert got.shape == expected.shape
    # float32 holds nothing below ~1e-38 (torch's 1e-100 after 100 decays by 0.1).
    tiny = np.abs(expected) < 1e-30
    np.testing.assert_allclose(got[~tiny], expected[~tiny], rtol=rtol32, atol=atol)
    assert np.all(np.abs(got[tiny]) < 1e-29)
    err32 = _rel(got[~tiny], expected[~tiny])
    err64 = None
    if x64:
        with jax.enable_x64(True):
            out = jax.jit(schedule_fn())(jnp.asarray(counts))
            assert out.dtype == jnp.float64
            got64 = np.asarray(out)
        np.testing.assert_allclose(got64, expected, rtol=RTOL64, atol=atol * 1e-6)
        err64 = _rel(got64, expected)
    return err32, err64


def _rel(got, expected):
    scale = np.maximum(np.abs(expected), 1e-300)
    return float(np.max(np.where(expected == got, 0.0, np.abs(got - expected) / scale)))


# ---------------------------------------------------------------------------- simple ones


@pytest.mark.parametrize(
    "step_size, gamma, spe", [(1, 0.999, 1), (30, 0.1, 1), (7, 0.5, 1), (3, 0.9, 17), (100, 2.0, 5)]
)
def test_step_lr(step_size, gamma, spe):
    expected, _ = torch_run(
        lambda o: lr_scheduler.StepLR(o, step_size, gamma=gamma), steps_per_epoch=spe
    )
    check(lambda: S.step_lr(LR, step_size, gamma, steps_per_epoch=spe), expected)


@pytest.mark.parametrize(
    "milestones, gamma, spe",
    [([30, 80], 0.1, 1), ([0, 5, 5, 2000], 0.5, 1), ([900, 10, 300], 0.3, 1), ([3, 8], 0.2, 13)],
)
def test_multi_step_lr(milestones, gamma, spe):
    expected, _ = torch_run(
        lambda o: lr_scheduler.MultiStepLR(o, milestones, gamma=gamma), steps_per_epoch=spe
    )
    check(lambda: S.multi_step_lr(LR, milestones, gamma, steps_per_epoch=spe), expected)


def test_multi_step_lr_default_gamma_and_negative_milestone():
    expected, _ = torch_run(lambda o: lr_scheduler.MultiStepLR(o, [-3, 40]))
    check(lambda: S.multi_step_lr(LR, [-3, 40]), expected)


@pytest.mark.parametrize(
    "factor, total_iters, spe",
    [(1 / 3, 5, 1), (0.5, 1000, 1), (0.25, 0, 1), (1.0, 3, 1), (0.1, 4, 9)],
)
def test_constant_lr(factor, total_iters, spe):
    expected, _ = torch_run(
        lambda o: lr_scheduler.ConstantLR(o, factor, total_iters), steps_per_epoch=spe
    )
    check(lambda: S.constant_lr(LR, factor, total_iters, steps_per_epoch=spe), expected)


def test_constant_lr_defaults():
    expected, _ = torch_run(lambda o: lr_scheduler.ConstantLR(o))
    check(lambda: S.constant_lr(LR), expected)


@pytest.mark.parametrize(
    "start, end, total_iters, spe",
    [
        (1 / 3, 1.0, 5, 1),
        (1.0, 0.0, 2500, 1),
        (0.01, 1.0, 1000, 1),
        (0.5, 0.1, 0, 1),
        (1.0, 0.2, 40, 7),
    ],
)
def test_linear_lr(start, end, total_iters, spe):
    expected, _ = torch_run(
        lambda o: lr_scheduler.LinearLR(o, start, end, total_iters), steps_per_epoch=spe
    )
    check(lambda: S.linear_lr(LR, start, end, total_iters, steps_per_epoch=spe), expected)


def test_linear_lr_defaults():
    expected, _ = torch_run(lambda o: lr_scheduler.LinearLR(o))
    check(lambda: S.linear_lr(LR), expected)


@pytest.mark.parametrize("gamma, spe", [(0.999, 1), (0.99, 1), (0.5, 1), (0.9, 11)])
def test_exponential_lr(gamma, spe):
    expected, _ = torch_run(lambda o: lr_scheduler.ExponentialLR(o, gamma), steps_per_epoch=spe)
    check(lambda: S.exponential_lr(LR, gamma, steps_per_epoch=spe), expected, atol=1e-300)


@pytest.mark.parametrize(
    "total_iters, power, spe",
    [(5, 1.0, 1), (2000, 2.0, 1), (3000, 0.5, 1), (100, 0.9, 1), (0, 1.0, 1), (50, 3.0, 20)],
)
def test_polynomial_lr(total_iters, power, spe):
    expected, _ = torch_run(
        lambda o: lr_scheduler.PolynomialLR(o, total_iters, power), steps_per_epoch=spe
    )
    check(lambda: S.polynomial_lr(LR, total_iters, power, steps_per_epoch=spe), expected)


# ---------------------------------------------------------------------------- cosine


@pytest.mark.parametrize(
    "T_max, eta_min, spe",
    [
        (3000, 0.0, 1),
        (100, 0.0, 1),
        (7, 1e-3, 1),
        (1, 0.0, 1),
        (1000, 0.05, 1),
        (333, 0.0, 1),
        (10, 1e-4, 9),
    ],
)
def test_cosine_annealing_lr_past_t_max(T_max, eta_min, spe):  # noqa: N803
    expected, _ = torch_run(
        lambda o: lr_scheduler.CosineAnnealingLR(o, T_max, eta_min), steps_per_epoch=spe
    )
    # torch keeps going past T_max: the rate climbs back to lr at 2 T_max.
    if 2 * T_max * spe < N:
        assert expected[2 * T_max * spe] == pytest.approx(LR, rel=1e-9)
    # torch's own float arithmetic leaves ~1e-17 where the exact value is eta_min = 0.
    check(
        lambda: S.cosine_annealing_lr(LR, T_max, eta_min, steps_per_epoch=spe), expected, atol=1e-15
    )


@pytest.mark.parametrize(
    "T_0, T_mult, eta_min, spe",
    [
        (10, 1, 0.0, 1),
        (10, 2, 0.0, 1),
        (7, 3, 1e-3, 1),
        (1, 2, 0.0, 1),
        (1, 1, 0.0, 1),
        (50, 1, 0.01, 1),
        (5, 2, 0.0, 4),
    ],
)
def test_cosine_annealing_warm_restarts(T_0, T_mult, eta_min, spe):  # noqa: N803
    expected, _ = torch_run(
        lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0, T_mult, eta_min),
        steps_per_epoch=spe,
    )
    check(
        lambda: S.cosine_annealing_warm_restarts(LR, T_0, T_mult, eta_min, steps_per_epoch=spe),
        expected,
    )


# ---------------------------------------------------------------------------- cyclic


CYCLIC_CASES = [
    dict(base_lr=0.01, max_lr=0.1, step_size_up=200),
    dict(base_lr=0.01, max_lr=0.1, step_size_up=100, step_size_down=300, mode="triangular2"),
    dict(base_lr=0.001, max_lr=0.1, step_size_up=250, mode="exp_range", gamma=0.999),
    dict(base_lr=0.001, max_lr=0.1, step_size_up=7, step_size_down=0),
    # (step sizes 1 and 1 would make torch's 2.0 ** (cycle - 1) overflow at cycle 1025)
    dict(base_lr=0.001, max_lr=0.1, step_size_up=3, step_size_down=2, mode="triangular2"),
    dict(base_lr=0.01, max_lr=0.1, step_size_up=300, base_momentum=0.7, max_momentum=0.95),
    dict(base_lr=0.01, max_lr=0.1, step_size_up=2000),
]


@pytest.mark.parametrize("kwargs", CYCLIC_CASES)
@pytest.mark.parametrize("adam", [False, True])
def test_cyclic_lr(kwargs, adam):
    lrs, moms = torch_run(lambda o: lr_scheduler.CyclicLR(o, **kwargs), adam=adam)
    check(lambda: S.cyclic_lr(**kwargs), lrs)
    check(lambda: S.cyclic_lr(**kwargs).momentum, moms)


@pytest.mark.parametrize("scale_mode", ["cycle", "iterations"])
def test_cyclic_lr_scale_fn(scale_mode):
    def fn(x):
        return 1.0 / (1.0 + 0.01 * x)

    kwargs = dict(
        base_lr=0.01, max_lr=0.1, step_size_up=150, step_size_down=50, scale_mode=scale_mode
    )
    lrs, moms = torch_run(lambda o: lr_scheduler.CyclicLR(o, scale_fn=fn, **kwargs))
    check(lambda: S.cyclic_lr(scale_fn=fn, **kwargs), lrs)
    check(lambda: S.cyclic_lr(scale_fn=fn, **kwargs).momentum, moms)


def test_cyclic_lr_without_momentum():
    schedule = S.cyclic_lr(0.01, 0.1, cycle_momentum=False)
    assert schedule.momentum is None
    lrs, moms = torch_run(lambda o: lr_scheduler.CyclicLR(o, 0.01, 0.1, cycle_momentum=False))
    assert np.all(moms == 0.9)  # torch leaves the momentum alone
    check(lambda: S.cyclic_lr(0.01, 0.1, cycle_momentum=False), lrs)


# ---------------------------------------------------------------------------- one cycle


ONE_CYCLE_CASES = [
    dict(max_lr=0.1, total_steps=3000),  # torch's defaults: two-phase cosine
    dict(max_lr=0.1, total_steps=3000, anneal_strategy="linear"),
    dict(max_lr=0.1, total_steps=3000, three_phase=True),
    dict(max_lr=0.1, total_steps=2999, three_phase=True, anneal_strategy="linear"),
    dict(max_lr=1.0, epochs=10, steps_per_epoch=250, pct_start=0.25, div_factor=10.0),
    dict(max_lr=0.5, total_steps=1000, pct_start=0.0, final_div_factor=100.0),
    dict(max_lr=0.5, total_steps=777, pct_start=1.0),
    dict(max_lr=0.5, total_steps=1001, pct_start=0.45, base_momentum=0.8, max_momentum=0.99),
    dict(max_lr=0.3, total_steps=100, pct_start=0.7, three_phase=True),
]


@pytest.mark.parametrize("kwargs", ONE_CYCLE_CASES)
@pytest.mark.parametrize("adam", [False, True])
def test_one_cycle_lr(kwargs, adam):
    total = kwargs.get("total_steps") or kwargs["epochs"] * kwargs["steps_per_epoch"]
    n = total + 1  # torch raises when stepped past total_steps
    if kwargs.get("pct_start") == 1.0:
        n = total  # ... and divides by zero at total_steps, the last phase having no length
    lrs, moms = torch_run(lambda o: lr_scheduler.OneCycleLR(o, **kwargs), n=n, adam=adam)
    counts = np.arange(n)
    check(lambda: S.one_cycle_lr(**kwargs), lrs, counts=counts)
    check(lambda: S.one_cycle_lr(**kwargs).momentum, moms, counts=counts)
    # Past total_steps: torch's last value, held.
    later = np.asarray(S.one_cycle_lr(**kwargs)([total, total + 1, 10**6, 2**31 - 1]))
    np.testing.assert_allclose(later, lrs[-1], rtol=RTOL32)


def test_one_cycle_lr_defaults_vs_gradtx_one_cycle_note():
    """torch's default OneCycleLR ends near max_lr / 25 / 1e4 = 4e-7 (times max_lr 0.1)."""
    lrs, _ = torch_run(lambda o: lr_scheduler.OneCycleLR(o, 0.1, total_steps=100), n=100)
    got = np.asarray(S.one_cycle_lr(0.1, total_steps=100)(jnp.arange(100)))
    np.testing.assert_allclose(got, lrs, rtol=RTOL32)
    assert got[-1] == pytest.approx(0.1 / 25 / 1e4, rel=1e-5)


# ---------------------------------------------------------------------------- lambdas


def test_lambda_lr():
    # 0.95 ** e is the user's function: in float32 it is off by ~1e-5 at e = 3000.
    expected, _ = torch_run(lambda o: lr_scheduler.LambdaLR(o, lambda e: 0.95**e))
    check(lambda: S.lambda_lr(LR, lambda e: 0.95**e), expected, atol=1e-300, rtol32=3e-5)
    expected, _ = torch_run(
        lambda o: lr_scheduler.LambdaLR(o, lambda e: 1.0 / (1.0 + 0.01 * e)), steps_per_epoch=3
    )
    check(lambda: S.lambda_lr(LR, lambda e: 1.0 / (1.0 + 0.01 * e), steps_per_epoch=3), expected)


def test_multiplicative_lr():
    def torch_fn(e):
        return 0.999 if e % 2 else 1.0005

    def jax_fn(e):
        return jnp.where(e % 2 == 1, 0.999, 1.0005)

    # A running product of float32-rounded factors: ~e * 6e-8 relative in float32 (the
    # docstring says so); float64 under enable_x64 is torch's product.
    expected, _ = torch_run(lambda o: lr_scheduler.MultiplicativeLR(o, torch_fn))
    check(lambda: S.multiplicative_lr(LR, jax_fn), expected, rtol32=2e-4)
    expected, _ = torch_run(
        lambda o: lr_scheduler.MultiplicativeLR(o, lambda e: 0.99), steps_per_epoch=4
    )
    check(lambda: S.multiplicative_lr(LR, lambda e: 0.99, steps_per_epoch=4), expected, rtol32=1e-4)


# ---------------------------------------------------------------------------- combinations


def test_sequential_lr():
    def make(o):
        warm = lr_scheduler.LinearLR(o, start_factor=0.01, total_iters=100)
        cos = lr_scheduler.CosineAnnealingLR(o, T_max=1000, eta_min=1e-4)
        step = lr_scheduler.StepLR(o, 300, 0.5)
        return lr_scheduler.SequentialLR(o, [warm, cos, step], milestones=[100, 1500])

    expected, _ = torch_run(make)

    def ours():
        return S.sequential_lr(
            [
                S.linear_lr(LR, start_factor=0.01, total_iters=100),
                S.cosine_annealing_lr(LR, T_max=1000, eta_min=1e-4),
                S.step_lr(LR, 300, 0.5),
            ],
            milestones=[100, 1500],
        )

    check(ours, expected)


@pytest.mark.parametrize(
    ("milestones", "spe"), [([5, 8], 1), ([5, 8], 3), ([0, 4], 1), ([3, 3], 2)]
)
def test_sequential_lr_continues_a_multiplicative_lr(milestones, spe):
    # torch's MultiplicativeLR has no closed form: after a milestone it multiplies the
    # rate it takes over by lr_lambda(0), then by lr_lambda(1), ... (at milestone 0 it
    # starts from the base rate, as alone).
    def factors(e):
        return {0: 0.9, 1: 0.7}.get(e, 0.95)

    def make(o):
        first = lr_scheduler.StepLR(o, 2, 0.5)
        second = lr_scheduler.MultiplicativeLR(o, factors)
        third = lr_scheduler.MultiplicativeLR(o, lambda e: 0.8)
        return lr_scheduler.SequentialLR(o, [first, second, third], milestones=milestones)

    expected, _ = torch_run(make, steps_per_epoch=spe)

    def ours():
        return S.sequential_lr(
            [
                S.step_lr(LR, 2, 0.5, steps_per_epoch=spe),
                S.multiplicative_lr(
                    LR,
                    lambda e: jnp.where(e == 0, 0.9, jnp.where(e == 1, 0.7, 0.95)),
                    steps_per_epoch=spe,
                ),
                S.multiplicative_lr(LR, lambda e: 0.8, steps_per_epoch=spe),
            ],
            milestones=milestones,
            steps_per_epoch=spe,
        )

    check(ours, expected, atol=1e-300, rtol32=2e-4)


def test_sequential_lr_per_epoch_and_milestone_zero():
    def make(o):
        c = lr_scheduler.ConstantLR(o, 0.1, 3)
        e = lr_scheduler.ExponentialLR(o, 0.9)
        p = lr_scheduler.PolynomialLR(o, 20, 2.0)
        return lr_scheduler.SequentialLR(o, [c, e, p], milestones=[0, 40])

    expected, _ = torch_run(make, steps_per_epoch=10)
    spe = 10

    def ours():
        return S.sequential_lr(
            [
                S.constant_lr(LR, 0.1, 3, steps_per_epoch=spe),
                S.exponential_lr(LR, 0.9, steps_per_epoch=spe),
                S.polynomial_lr(LR, 20, 2.0, steps_per_epoch=spe),
            ],
            milestones=[0, 40],
            steps_per_epoch=spe,
        )

    check(ours, expected)


def test_chained_scheduler():
    def make(o):
        return lr_scheduler.ChainedScheduler(
            [
                lr_scheduler.ConstantLR(o, 0.1, 50),
                lr_scheduler.ExponentialLR(o, 0.999),
                lr_scheduler.MultiStepLR(o, [500, 1000], 0.5),
                lr_scheduler.LinearLR(o, 0.2, 1.0, 300),
                lr_scheduler.CosineAnnealingLR(o, T_max=3000),
            ]
        )

    expected, _ = torch_run(make)

    def ours():
        return S.chained_scheduler(
            [
                S.constant_lr(LR, 0.1, 50),
                S.exponential_lr(LR, 0.999),
                S.multi_step_lr(LR, [500, 1000], 0.5),
                S.linear_lr(LR, 0.2, 1.0, 300),
                S.cosine_annealing_lr(LR, T_max=3000),
            ]
        )

    check(ours, expected, atol=1e-15)


def test_chained_scheduler_with_step_polynomial_multiplicative():
    def make(o):
        return lr_scheduler.ChainedScheduler(
            [
                lr_scheduler.StepLR(o, 100, 0.8),
                lr_scheduler.PolynomialLR(o, 2500, 1.5),
                lr_scheduler.MultiplicativeLR(o, lambda e: 1.0001),
            ]
        )

    expected, _ = torch_run(make)

    def ours():
        inner = S.chained_scheduler([S.step_lr(LR, 100, 0.8), S.polynomial_lr(LR, 2500, 1.5)])
        return S.chained_scheduler([inner, S.multiplicative_lr(LR, lambda e: 1.0001)])

    check(ours, expected, rtol32=2e-4)  # multiplicative_lr's float32 product


# ---------------------------------------------------------------------------- plateau


def _losses(n, mode, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    trend = 1.0 / (1.0 + 0.05 * t) + 0.2
    noisy = trend * (1.0 + 0.03 * rng.standard_normal(n))
    noisy[n // 2 : n // 2 + 40] = noisy[n // 2]  # a long plateau
    return noisy if mode == "min" else 1.0 - noisy


PLATEAU_CASES = [
    dict(mode="min"),
    dict(mode="max"),
    dict(mode="min", threshold_mode="abs", threshold=1e-3, patience=3),
    dict(mode="max", threshold_mode="abs", threshold=1e-3, patience=2, cooldown=4),
    dict(mode="min", patience=0, factor=0.5, cooldown=2, min_lr=1e-3),
    dict(mode="max", patience=1, factor=0.7, min_lr=0.0, eps=1e-3),
    dict(mode="min", patience=2, factor=0.5, eps=0.02),
]


@pytest.mark.parametrize("kwargs", PLATEAU_CASES)
@pytest.mark.parametrize("x64", [False, True])
def test_reduce_lr_on_plateau(kwargs, x64):
    n = 400
    losses = _losses(n, kwargs["mode"], seed=len(str(kwargs)))
    opt = _optimizer(lr=LR)
    sched = lr_scheduler.ReduceLROnPlateau(opt, **kwargs)
    expected = []
    for v in losses:  # the value given to update k counts for update k
        sched.step(float(v))
        expected.append(opt.param_groups[0]["lr"])
    expected = np.asarray(expected)
    assert len(set(expected)) >= 3  # the sequence does trigger reductions

    import contextlib

    context = jax.enable_x64(True) if x64 else contextlib.nullcontext()
    with context:
        tx = S.reduce_lr_on_plateau(LR, **kwargs)
        state = tx.init(jnp.zeros(3))

        @jax.jit
        def run(state, values):
            def body(state, v):
                upd, state = tx.update(jnp.ones(3), state, value=v)
                return state, (state.lr, upd[0])

            return jax.lax.scan(body, state, values)

        _, (rates, scaled) = run(state, jnp.asarray(losses))
        rates, scaled = np.asarray(rates), np.asarray(scaled)
    rtol = RTOL64 if x64 else RTOL32
    np.testing.assert_allclose(rates, expected, rtol=rtol)
    np.testing.assert_allclose(scaled, expected / LR, rtol=rtol)


def test_reduce_lr_on_plateau_needs_value():
    tx = S.reduce_lr_on_plateau(LR)
    with pytest.raises(ValueError, match="value"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


# ---------------------------------------------------------------------------- jit / vmap


def test_jit_vmap_and_scalar_counts():
    for schedule in [
        S.step_lr(LR, 7),
        S.cosine_annealing_lr(LR, 50),
        S.cosine_annealing_warm_restarts(LR, 5, 2),
        S.cyclic_lr(0.01, 0.1, 20),
        S.cyclic_lr(0.01, 0.1, 20).momentum,
        S.one_cycle_lr(0.1, 300),
        S.multiplicative_lr(LR, lambda e: 0.99),
        S.sequential_lr([S.constant_lr(LR), S.exponential_lr(LR, 0.9)], [10]),
    ]:
        counts = jnp.arange(200)
        full = np.asarray(schedule(counts))
        np.testing.assert_allclose(np.asarray(jax.vmap(schedule)(counts)), full, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(schedule))(counts)), full, rtol=1e-6)
        assert float(jax.jit(schedule)(37)) == pytest.approx(float(full[37]), rel=1e-6)
        assert np.isfinite(np.asarray(schedule(jnp.asarray([0, 2**31 - 1])))).all()


def test_vmap_over_lr():
    lrs = jnp.asarray([0.1, 0.2, 0.4])
    out = jax.vmap(lambda lr: S.cosine_annealing_lr(lr, 10)(jnp.arange(5)))(lrs)
    np.testing.assert_allclose(out[2], 4 * out[0], rtol=1e-6)


# ---------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: S.one_cycle_lr(0.1, total_steps=0), "total_steps"),
        (lambda: S.one_cycle_lr(0.1, total_steps=10.0), "total_steps"),
        (lambda: S.one_cycle_lr(0.1), "total_steps OR"),
        (lambda: S.one_cycle_lr(0.1, epochs=0, steps_per_epoch=3), "epochs"),
        (lambda: S.one_cycle_lr(0.1, epochs=2, steps_per_epoch=-1), "steps_per_epoch"),
        (lambda: S.one_cycle_lr(0.1, 100, pct_start=1.5), "pct_start"),
        (lambda: S.one_cycle_lr(0.1, 100, anneal_strategy="exp"), "anneal_strategy"),
        (lambda: S.one_cycle_lr(0.1, 10, pct_start=0.1), "pct_start"),
        (lambda: S.cosine_annealing_warm_restarts(0.1, 0), "T_0"),
        (lambda: S.cosine_annealing_warm_restarts(0.1, 5, 0), "T_mult"),
        (lambda: S.cosine_annealing_lr(0.1, 0), "T_max"),
        (lambda: S.step_lr(0.1, 0), "step_size"),
        (lambda: S.step_lr(0.1, 5, steps_per_epoch=0), "steps_per_epoch"),
        (lambda: S.constant_lr(0.1, factor=1.5), "factor"),
        (lambda: S.linear_lr(0.1, start_factor=0.0), "start_factor"),
        (lambda: S.linear_lr(0.1, end_factor=2.0), "end_factor"),
        (lambda: S.polynomial_lr(0.1, power=-1.0), "power"),
        (lambda: S.cyclic_lr(0.01, 0.1, mode="sine"), "mode"),
        (lambda: S.cyclic_lr(0.01, 0.1, step_size_up=0), "step_size_up"),
        (lambda: S.cyclic_lr(0.01, 0.1, scale_fn=abs, scale_mode="epoch"), "scale_mode"),
        (lambda: S.sequential_lr([S.step_lr(0.1, 2)], [3]), "milestones"),
        (lambda: S.sequential_lr([], []), "at least one"),
        (lambda: S.chained_scheduler([S.cyclic_lr(0.1, 1.0)]), "chainable"),
        (lambda: S.chained_scheduler([S.step_lr(0.1, 2), S.step_lr(0.2, 2)]), "same base lr"),
        (lambda: S.multi_step_lr(0.1, 5), "milestones"),
        (lambda: S.reduce_lr_on_plateau(0.1, factor=1.0), "factor"),
        (lambda: S.reduce_lr_on_plateau(0.1, mode="up"), "mode"),
        (lambda: S.reduce_lr_on_plateau(0.1, threshold_mode="pct"), "threshold"),
        (lambda: S.reduce_lr_on_plateau(0.1, patience=-1), "patience"),
        (lambda: S.reduce_lr_on_plateau(0.1, eps=-1.0), "eps"),
        (lambda: S.reduce_lr_on_plateau(0.1, min_lr=-1.0), "min_lr"),
    ],
)
def test_bad_arguments(build, name):
    with pytest.raises(ValueError, match=name):
        build()


# ---------------------------------------------------------------------------- hypothesis


def _torch_at(make, counts, steps_per_epoch=1):
    """torch's lr at each of ``counts`` (sorted, unique), stepping up to the largest."""
    lrs, _ = torch_run(make, n=int(max(counts)) + 1, steps_per_epoch=steps_per_epoch)
    return lrs[np.asarray(counts)]


_counts = st.lists(st.integers(0, 2500), min_size=1, max_size=6).map(lambda c: sorted(set(c)))


@settings(max_examples=15, deadline=None)
@given(
    step_size=st.integers(1, 400),
    gamma=st.floats(0.05, 1.0),
    spe=st.integers(1, 4),
    counts=_counts,
)
def test_step_lr_property(step_size, gamma, spe, counts):
    expected = _torch_at(lambda o: lr_scheduler.StepLR(o, step_size, gamma), counts, spe)
    got = np.asarray(S.step_lr(LR, step_size, gamma, steps_per_epoch=spe)(jnp.asarray(counts)))
    np.testing.assert_allclose(got, expected, rtol=RTOL32, atol=1e-30)


@settings(max_examples=15, deadline=None)
@given(
    t_max=st.integers(1, 1000),
    eta_min=st.floats(0.0, 0.05),
    spe=st.integers(1, 3),
    counts=_counts,
)
def test_cosine_annealing_lr_property(t_max, eta_min, spe, counts):
    expected = _torch_at(lambda o: lr_scheduler.CosineAnnealingLR(o, t_max, eta_min), counts, spe)
    got = np.asarray(
        S.cosine_annealing_lr(LR, t_max, eta_min, steps_per_epoch=spe)(jnp.asarray(counts))
    )
    np.testing.assert_allclose(got, expected, rtol=RTOL32, atol=1e-15)


@settings(max_examples=10, deadline=None)
@given(
    total=st.integers(10, 2000),
    pct=st.floats(0.05, 0.95),
    three_phase=st.booleans(),
    linear=st.booleans(),
    counts=st.lists(st.floats(0, 1), min_size=1, max_size=6),
)
def test_one_cycle_lr_property(total, pct, three_phase, linear, counts):
    kwargs = dict(
        total_steps=total,
        pct_start=pct,
        three_phase=three_phase,
        anneal_strategy="linear" if linear else "cos",
    )
    try:
        schedule = S.one_cycle_lr(0.1, **kwargs)
    except ValueError:  # a phase of length 0: torch divides by zero there
        with pytest.raises(ZeroDivisionError):
            torch_run(lambda o: lr_scheduler.OneCycleLR(o, 0.1, **kwargs), n=total + 1)
        return
    counts = sorted({int(c * total) for c in counts})
    lrs, moms = torch_run(lambda o: lr_scheduler.OneCycleLR(o, 0.1, **kwargs), n=total + 1)
    got = jnp.asarray(counts)
    np.testing.assert_allclose(np.asarray(schedule(got)), lrs[counts], rtol=RTOL32)
    np.testing.assert_allclose(np.asarray(schedule.momentum(got)), moms[counts], rtol=RTOL32)


def test_float_counts_truncate():
    schedule = S.step_lr(1.0, 10, 0.5)
    np.testing.assert_allclose(
        np.asarray(schedule(jnp.asarray([9.9, 10.0, -3.0]))), [1.0, 0.5, 1.0]
    )
    assert math.isfinite(float(schedule(3 * 10**9)))


# ---------------------------------------------------------------------------- momentum


@pytest.mark.parametrize(
    ("name", "torch_name", "driven"),
    [
        ("sgd", "SGD", "momentum"),
        ("rmsprop", "RMSprop", "momentum"),
        ("adam", "Adam", "betas"),
        ("adamw", "AdamW", "betas"),
        ("adamax", "Adamax", "betas"),
        ("nadam", "NAdam", "betas"),
        ("radam", "RAdam", "betas"),
    ],
)
@pytest.mark.parametrize("scheduler", ["cyclic", "one_cycle"])
def test_cycled_momentum_drives_the_learners_as_in_torch(name, torch_name, driven, scheduler):
    """``.momentum`` given as the learner's momentum (or ``betas[0]``), against torch's loop.

    torch's CyclicLR and OneCycleLR write ``momentum`` or ``betas[0]`` into the param group
    at every ``step()``; each learner reads it at its next update.
    """
    from gradtx import torch_optim

    steps, rng = 120, np.random.default_rng(0)
    start = rng.normal(size=(2, 3))
    grads = rng.normal(size=(steps, 2, 3))

    def make(opt):
        if scheduler == "cyclic":
            return lr_scheduler.CyclicLR(opt, 1e-3, 1e-2, step_size_up=7, mode="triangular2")
        return lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps)

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch's scalar state (NAdam's mu_product) too
    try:
        weights = torch.tensor(start, requires_grad=True)
        extra = {"momentum": 0.9} if driven == "momentum" else {}
        opt = getattr(torch.optim, torch_name)([weights], lr=1e-3, **extra)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sched = make(opt)
        expected = []
        for g in grads:
            weights.grad = torch.tensor(g)
            opt.step()
            sched.step()
            expected.append(weights.detach().numpy().copy())
    finally:
        torch.set_default_dtype(previous)

    with jax.enable_x64(True):
        if scheduler == "cyclic":
            s = S.cyclic_lr(1e-3, 1e-2, step_size_up=7, mode="triangular2")
        else:
            s = S.one_cycle_lr(1e-2, total_steps=steps)
        assert s.momentum is not None
        kwargs = (
            {"momentum": s.momentum} if driven == "momentum" else {"betas": (s.momentum, 0.999)}
        )
        learner = getattr(torch_optim, name)(s, **kwargs)
        params = jnp.asarray(start)
        state = learner.init(params)
        update = jax.jit(learner.update)
        for t, g in enumerate(grads):
            updates, state = update(jnp.asarray(g), state, params)
            params = params + updates
            np.testing.assert_allclose(params, expected[t], rtol=1e-12, atol=1e-12, err_msg=str(t))
