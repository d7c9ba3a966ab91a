"""Schedules against reference implementations written the way torch and MXNet define them.

torch's schedulers are written as their documented closed forms or recurrences;
MXNet's and the MXNet tutorials' schedules as stateful Python objects stepped
iteration by iteration (MXNet's ``num_update`` counts from 1, the tutorials'
``iteration`` from 0). gradtx must match at every count from 0 to 5000.
"""

from __future__ import annotations

import bisect
import inspect
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import examples, sampled
from hypothesis import given, settings
from hypothesis import strategies as st

import gradtx
from gradtx import schedules as S

COUNTS = np.arange(5001)


def check(schedule, reference, counts=COUNTS):
    ours = np.asarray(jax.jit(schedule)(jnp.asarray(counts, jnp.int32)))
    expected = np.array([reference(int(t)) for t in counts], np.float64)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)


# --- MXNet (num_update counts from 1: gradtx count t is num_update t + 1) ---------------


class FactorScheduler:
    def __init__(self, step, factor, base_lr, stop_factor_lr=1e-8):
        self.step, self.factor, self.base_lr, self.stop = step, factor, base_lr, stop_factor_lr
        self.count = 0

    def __call__(self, num_update):
        while num_update > self.count + self.step:
            self.count += self.step
            self.base_lr = max(self.base_lr * self.factor, self.stop)
        return self.base_lr


class MultiFactorScheduler:
    def __init__(self, step, factor, base_lr):
        self.step, self.factor, self.base_lr = step, factor, base_lr
        self.cur = 0

    def __call__(self, num_update):
        while self.cur <= len(self.step) - 1 and num_update > self.step[self.cur]:
            self.cur += 1
            self.base_lr *= self.factor
        return self.base_lr


class PolyScheduler:
    def __init__(self, max_update, base_lr, pwr, final_lr=0.0):
        self.max_update, self.base_lr, self.pwr, self.final = max_update, base_lr, pwr, final_lr

    def __call__(self, num_update):
        if num_update <= self.max_update:
            frac = 1 - num_update / self.max_update
            return self.final + (self.base_lr - self.final) * frac**self.pwr
        return self.final


def test_step_decay_is_mxnet_factor_scheduler():
    ref = FactorScheduler(step=250, factor=0.5, base_lr=1.0)
    check(S.step_decay(1.0, 250, 0.5, min_value=1e-8), lambda t: ref(t + 1))
    values = S.step_decay(1.0, 250, 0.5)(jnp.array([249, 250]))
    np.testing.assert_array_equal(values, [1.0, 0.5])  # the 250th and 251st iterations


def test_multistep_decay_is_mxnet_multifactor_scheduler():
    ref = MultiFactorScheduler(step=[250, 750, 900], factor=0.5, base_lr=1.0)
    check(S.multistep_decay(1.0, [250, 750, 900], 0.5), lambda t: ref(t + 1))


def test_polynomial_decay_is_mxnet_poly_scheduler_counted_from_one():
    ref = PolyScheduler(max_update=1000, base_lr=1.0, pwr=2)
    poly = S.polynomial_decay(1.0, 0.0, 2, 1000)
    check(lambda t: poly(t + 1), lambda t: ref(t + 1))
    np.testing.assert_allclose(poly(1), 0.998001, rtol=1e-6)  # MXNet's first iteration


# --- The MXNet tutorials' schedules (iteration counts from 0) ------------------------


class TriangularSchedule:
    def __init__(self, min_lr, max_lr, cycle_length, inc_fraction=0.5):
        self.min_lr, self.max_lr, self.cycle_length, self.inc = (
            min_lr,
            max_lr,
            cycle_length,
            inc_fraction,
        )

    def __call__(self, iteration):
        if iteration <= self.cycle_length * self.inc:
            unit = iteration / (self.cycle_length * self.inc)
        elif iteration <= self.cycle_length:
            unit = (self.cycle_length - iteration) / (self.cycle_length * (1 - self.inc))
        else:
            unit = 0
        return unit * (self.max_lr - self.min_lr) + self.min_lr


class CosineAnnealingSchedule:
    def __init__(self, min_lr, max_lr, cycle_length):
        self.min_lr, self.max_lr, self.cycle_length = min_lr, max_lr, cycle_length

    def __call__(self, iteration):
        if iteration <= self.cycle_length:
            unit = (1 + math.cos(iteration * math.pi / self.cycle_length)) / 2
            return unit * (self.max_lr - self.min_lr) + self.min_lr
        return self.min_lr


class LinearWarmUp:
    def __init__(self, schedule, start_lr, length):
        self.schedule, self.start_lr, self.length = schedule, start_lr, length
        self.finish_lr = schedule(0)

    def __call__(self, iteration):
        if iteration <= self.length:
            return iteration * (self.finish_lr - self.start_lr) / self.length + self.start_lr
        return self.schedule(iteration - self.length)


class LinearCoolDown:
    def __init__(self, schedule, finish_lr, start_idx, length):
        self.schedule, self.finish_lr, self.start_idx = schedule, finish_lr, start_idx
        self.start_lr = schedule(start_idx)
        self.finish_idx = start_idx + length

    def __call__(self, iteration):
        if iteration <= self.start_idx:
            return self.schedule(iteration)
        if iteration <= self.finish_idx:
            frac = (iteration - self.start_idx) / (self.finish_idx - self.start_idx)
            return self.start_lr + frac * (self.finish_lr - self.start_lr)
        return self.finish_lr


class OneCycleSchedule:
    def __init__(self, start_lr, max_lr, cycle_length, cooldown_length=0, finish_lr=None):
        finish_lr = finish_lr if cooldown_length > 0 else start_lr
        cycle = TriangularSchedule(start_lr, max_lr, cycle_length)
        self.schedule = LinearCoolDown(cycle, finish_lr, cycle_length, cooldown_length)

    def __call__(self, iteration):
        return self.schedule(iteration)


class CyclicalSchedule:
    def __init__(
        self, schedule_class, cycle_length, cycle_length_decay=1, cycle_magnitude_decay=1, **kwargs
    ):
        self.schedule_class, self.length = schedule_class, cycle_length
        self.length_decay, self.magnitude_decay, self.kwargs = (
            cycle_length_decay,
            cycle_magnitude_decay,
            kwargs,
        )

    def __call__(self, iteration):
        cycle_idx, cycle_length, idx = 0, self.length, self.length
        while idx <= iteration:
            cycle_length = math.ceil(cycle_length * self.length_decay)
            cycle_idx += 1
            idx += cycle_length
        offset = iteration - idx + cycle_length
        schedule = self.schedule_class(cycle_length=cycle_length, **self.kwargs)
        return schedule(offset) * self.magnitude_decay**cycle_idx


@pytest.mark.parametrize("inc_fraction", [0.5, 0.3])
def test_triangular_is_tutorial_triangular(inc_fraction):
    ref = TriangularSchedule(0.1, 1.0, 1000, inc_fraction)
    check(S.triangular(0.1, 1.0, 1000, inc_fraction), ref)


def test_cosine_decay_is_tutorial_cosine_annealing():
    check(S.cosine_decay(1.0, 1000, 0.05), CosineAnnealingSchedule(0.05, 1.0, 1000))


def test_warmup_and_cooldown_are_tutorial_wrappers():
    # The wrapped schedule is evaluated out of order (the cool-down reads it at its start),
    # so the reference base is the stateless form of MultiFactorScheduler.
    ref_base = lambda t: 0.5 ** bisect.bisect_right([1000, 2000], t)  # noqa: E731
    ours_base = S.multistep_decay(1.0, [1000, 2000], 0.5)
    check(S.warmup(ours_base, 300, 0.1), LinearWarmUp(ref_base, 0.1, 300))
    check(S.cooldown(ours_base, 2500, 1000, 0.01), LinearCoolDown(ref_base, 0.01, 2500, 1000))


def test_one_cycle_is_tutorial_one_cycle():
    check(S.one_cycle(0.1, 1.0, 2000, 1000, 0.001), OneCycleSchedule(0.1, 1.0, 2000, 1000, 0.001))
    check(S.one_cycle(0.1, 1.0, 2000), OneCycleSchedule(0.1, 1.0, 2000))


@pytest.mark.parametrize("length_decay", [1, 2, 0.5, 1.5, 0.999])
@pytest.mark.parametrize("magnitude_decay", [1.0, 0.7])
def test_cyclic_is_tutorial_cyclical_schedule(length_decay, magnitude_decay):
    tri = CyclicalSchedule(
        TriangularSchedule,
        300,
        length_decay,
        magnitude_decay,
        min_lr=0.1,
        max_lr=1.0,
        inc_fraction=0.25,
    )
    check(S.cyclic(S.shapes.triangular(0.25), 300, 0.1, 1.0, length_decay, magnitude_decay), tri)
    cos = CyclicalSchedule(
        CosineAnnealingSchedule, 300, length_decay, magnitude_decay, min_lr=0.05, max_lr=1.0
    )
    check(S.cyclic(S.shapes.cosine, 300, 0.05, 1.0, length_decay, magnitude_decay), cos)


# --- torch.optim.lr_scheduler (last_epoch counts from 0, as gradtx's count) -----------


def test_step_and_multistep_are_torch():
    check(S.step_decay(0.1, 30, 0.1), lambda t: 0.1 * 0.1 ** (t // 30))
    milestones = [30, 80, 400]
    check(
        S.multistep_decay(0.1, milestones, 0.2),
        lambda t: 0.1 * 0.2 ** bisect.bisect_right(milestones, t),
    )


def test_geometric_decay_is_torch_exponential_lr():
    check(S.geometric_decay(0.1, 0.999), lambda t: 0.1 * 0.999**t)
    check(
        S.geometric_decay(0.1, 0.5, 100, staircase=True, end_value=1e-3),
        lambda t: max(0.1 * 0.5 ** (t // 100), 1e-3),
    )


def test_polynomial_is_torch_polynomial_lr():
    check(S.polynomial_decay(0.1, 0.0, 1.5, 4000), lambda t: 0.1 * (1 - min(t, 4000) / 4000) ** 1.5)


def test_cosine_decay_is_torch_cosine_annealing_until_t_max():
    check(
        S.cosine_decay(0.1, 5000, 1e-3),
        lambda t: 1e-3 + (0.1 - 1e-3) * (1 + math.cos(math.pi * t / 5000)) / 2,
    )


@pytest.mark.parametrize("t_mult", [1, 2, 3])
def test_cosine_restarts_is_torch_warm_restarts(t_mult):
    def reference():  # torch's recurrence, stepped once per count
        t_cur, t_i = 0, 50
        for _ in COUNTS:
            yield 0.01 + (1.0 - 0.01) * (1 + math.cos(math.pi * t_cur / t_i)) / 2
            t_cur += 1
            if t_cur >= t_i:
                t_cur -= t_i
                t_i *= t_mult

    values = list(reference())
    check(S.cosine_restarts(1.0, 50, t_mult, min_value=0.01), lambda t: values[t])


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
@pytest.mark.parametrize("down", [None, 300])
def test_cyclic_lr_is_torch_cyclic_lr(mode, down):
    up, gamma = 200, 0.999

    def reference(t):  # torch.optim.lr_scheduler.CyclicLR.get_lr
        total = up + (down if down is not None else up)
        ratio = up / total
        cycle = math.floor(1 + t / total)
        x = 1.0 + t / total - cycle
        scale = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        height = (1.0 - 0.1) * scale
        factor = {"triangular": 1.0, "triangular2": 1 / 2.0 ** (cycle - 1), "exp_range": gamma**t}[
            mode
        ]
        return 0.1 + height * factor

    check(S.cyclic_lr(0.1, 1.0, up, down, mode, gamma), reference)


def test_join_is_torch_sequential_lr():
    warm = S.linear(0.01, 0.1, 100)
    decay = S.geometric_decay(0.1, 0.99)
    check(
        S.join([warm, decay], [100]),
        lambda t: 0.01 + 0.09 * t / 100 if t < 100 else 0.1 * 0.99 ** (t - 100),
    )


class TorchReduceLROnPlateau:
    """torch's ReduceLROnPlateau in mode min, on a multiplier that starts at 1."""

    def __init__(self, factor, patience, threshold, threshold_mode, cooldown, min_lr):
        self.factor, self.patience, self.threshold = factor, patience, threshold
        self.mode, self.cooldown, self.min_lr = threshold_mode, cooldown, min_lr
        self.best, self.bad, self.cooldown_counter, self.lr = math.inf, 0, 0, 1.0

    def step(self, value):
        better = (
            value < self.best * (1 - self.threshold)
            if self.mode == "rel"
            else value < self.best - self.threshold
        )
        if better:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.bad = 0
        if self.bad > self.patience:
            self.lr = max(self.lr * self.factor, self.min_lr)
            self.cooldown_counter = self.cooldown
            self.bad = 0
        return self.lr


@pytest.mark.parametrize("mode", ["rel", "abs"])
def test_reduce_on_plateau_is_torch(mode):
    rng = np.random.default_rng(0)
    losses = np.concatenate([np.linspace(1, 0.5, 30), 0.5 + 0.01 * rng.random(200)]).astype(
        np.float32
    )
    opt = S.reduce_on_plateau(
        factor=0.5, patience=5, threshold=1e-3, threshold_mode=mode, cooldown=3, min_scale=0.01
    )
    ref = TorchReduceLROnPlateau(0.5, 5, 1e-3, mode, 3, 0.01)
    params = {"w": jnp.ones(2)}
    state = opt.init(params)
    update = jax.jit(opt.update)
    for loss in losses:
        updates, state = update({"w": jnp.ones(2)}, state, params, value=loss)
        expected = ref.step(float(loss))
        np.testing.assert_allclose(updates["w"], [expected] * 2, rtol=1e-6)
    assert ref.lr < 0.5  # the plateau did reduce it


def test_reduce_on_plateau_needs_value():
    opt = S.reduce_on_plateau()
    with pytest.raises(ValueError, match="reduce_on_plateau: update needs the monitored loss"):
        opt.update({"w": jnp.ones(2)}, opt.init(None))


def test_reduce_on_plateau_in_a_chain_gets_value():
    opt = gradtx.chain(gradtx.sgd(0.1), S.reduce_on_plateau(factor=0.5, patience=0))
    params = {"w": jnp.ones(2)}
    state = opt.init(params)
    for loss in [1.0, 1.0, 1.0]:
        updates, state = opt.update({"w": jnp.ones(2)}, state, params, value=loss)
    np.testing.assert_allclose(updates["w"], [-0.1 * 0.25] * 2, rtol=1e-6)


# --- transformations of schedules --------------------------------------------------------


def test_grad_and_vmap_over_float_parameters():
    grad = jax.grad(lambda v: S.cosine_decay(v, 100, 0.0)(25))(2.0)
    np.testing.assert_allclose(grad, (1 + math.cos(math.pi / 4)) / 2, rtol=1e-6)
    peaks = jnp.array([0.1, 0.2, 0.4])
    values = jax.vmap(lambda p: S.warmup(S.cosine_decay(p, 100), 10)(jnp.arange(200)))(peaks)
    for i, p in enumerate(peaks):
        np.testing.assert_allclose(
            values[i], S.warmup(S.cosine_decay(float(p), 100), 10)(jnp.arange(200)), rtol=1e-6
        )


def test_a_schedule_drives_a_learner():
    schedule = S.warmup(S.cosine_decay(0.1, 50), 10)
    opt = gradtx.sgd(schedule)
    params = {"w": jnp.zeros(())}
    state = opt.init(params)
    for t in range(20):
        updates, state = opt.update({"w": jnp.ones(())}, state, params)
        np.testing.assert_allclose(updates["w"], -schedule(t), rtol=1e-6)


BAD = [
    (lambda: S.linear(1.0, 0.0, 0), "linear: transition_steps must be > 0, got 0"),
    (lambda: S.step_decay(1.0, -5, 0.5), "step_decay: step_size must be > 0, got -5"),
    (lambda: S.cosine_decay(1.0, 10.5), "cosine_decay: decay_steps must be an integer"),
    (
        lambda: S.piecewise_constant([10, 5], [1, 2, 3]),
        "piecewise_constant: boundaries must be strictly increasing, got [10, 5]",
    ),
    (lambda: S.piecewise_constant([-1], [1, 2]), "piecewise_constant: boundaries must be >= 0"),
    (
        lambda: S.piecewise_constant([10], [1, 2, 3]),
        "piecewise_constant: values must have len(boundaries) + 1 = 2 entries, got 3",
    ),
    (lambda: S.multistep_decay(1.0, [5, 5], 0.5), "multistep_decay: milestones must be strictly"),
    (lambda: S.triangular(0.0, 1.0, 100, 1.0), "triangular: inc_fraction must be in (0, 1)"),
    (lambda: S.shapes.triangular(0.0), "triangular: inc_fraction must be in (0, 1), got 0"),
    (lambda: S.cyclic(S.shapes.cosine, 0, 0.0, 1.0), "cyclic: cycle_length must be > 0, got 0"),
    (
        lambda: S.cyclic(S.shapes.cosine, 10, 0.0, 1.0, length_decay=0),
        "cyclic: length_decay must be in (0, inf), got 0",
    ),
    (
        lambda: S.cyclic(S.shapes.cosine, 10, 0.0, 1.0, magnitude_decay=1.5),
        "cyclic: magnitude_decay must be in (0, 1], got 1.5",
    ),
    (
        lambda: S.one_cycle(0.1, 1.0, 100, cooldown_length=50),
        "one_cycle: cooldown_length > 0 needs end_value",
    ),
    (
        lambda: S.one_cycle(0.1, 1.0, 100, end_value=0.01),
        "one_cycle: end_value needs cooldown_length > 0",
    ),
    (lambda: S.cyclic_lr(0.1, 1.0, 100, mode="sawtooth"), "cyclic_lr: mode must be one of"),
    (
        lambda: S.join([S.constant(1.0)], [10]),
        "join: schedules must have len(boundaries) + 1 = 2 entries, got 1",
    ),
    (lambda: S.geometric_decay(1.0, 1.5), "geometric_decay: decay_rate 1.5 > 1 grows"),
    (lambda: S.warmup(S.constant(1.0), 0), "warmup: length must be > 0, got 0"),
    (lambda: S.reduce_on_plateau(threshold_mode="max"), "reduce_on_plateau: threshold_mode must"),
    (lambda: S.cosine_restarts(1.0, 10, 0), "cosine_restarts: cycle_mult must be > 0, got 0"),
]


@pytest.mark.parametrize("build, message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_arguments_name_the_argument(build, message):
    with pytest.raises(ValueError) as info:
        build()
    assert str(info.value).startswith(message)


def test_constant_linear_piecewise_and_inverse_sqrt_closed_forms():
    check(S.constant(0.3), lambda t: 0.3)
    check(S.linear(0.1, 0.01, 3000), lambda t: 0.1 + (0.01 - 0.1) * min(t / 3000, 1.0))
    # gradtx switches at the boundary itself: count b already has the next value.
    bounds, vals = [100, 1000, 3000], [1.0, 0.5, 0.1, 0.01]
    check(S.piecewise_constant(bounds, vals), lambda t: vals[bisect.bisect_right(bounds, t)])
    # Vaswani et al.: d**-0.5 * min(step**-0.5, step * W**-1.5), step = t + 1, scaled to peak v0.
    w = 400
    check(
        S.inverse_sqrt(2.0, w),
        lambda t: 2.0 * math.sqrt(w) * min((t + 1) ** -0.5, (t + 1) * w**-1.5),
    )


# --- lengths and counts beyond the int32 range -------------------------------------------
#
# A length beyond int32 is legal: an int32 count never reaches it, and it enters the
# arithmetic as a float, as optax's cosine_decay_schedule does. The references are the
# closed forms in float64, and optax where optax computes such lengths (its
# linear_schedule, polynomial_schedule and exponential_decay raise OverflowError for
# transition_steps=10**10 themselves).

INT32_MAX = int(np.iinfo(np.int32).max)
BEYOND_INT32 = st.integers(INT32_MAX + 1, 10**15)
INT32_COUNTS = st.lists(st.integers(0, INT32_MAX), min_size=1, max_size=6)


def cosine_shape(p):
    return (1 + np.cos(np.pi * p)) / 2


def triangle_shape(p, rise=0.5):
    return np.where(p <= rise, p / rise, (1 - p) / (1 - rise))


def linear_1000(t):  # S.linear(1.0, 0.5, 1000)
    return 1.0 - 0.5 * np.minimum(t / 1000, 1.0)


def cyclic_lr_reference(base, top, up, down, t, halving=False):
    total = up + down
    cycle, x = t // total + 1, (t % total) / total
    ratio = up / total
    height = np.where(x <= ratio, x / ratio, (x - 1) / (ratio - 1))
    return base + (top - base) * height * (0.5 ** (cycle - 1) if halving else 1.0)


def onecycle_reference(bounds, values, t, cosine):
    """optax's piecewise interpolation from 0 through ``bounds`` between ``values``, in float64."""
    t = np.asarray(t, np.float64)
    result = np.full(t.shape, values[-1])
    for start, end, a, b in zip([0, *bounds[:-1]], bounds, values[:-1], values[1:], strict=True):
        p = (t - start) / max(end - start, 1)
        between = b + (a - b) * (np.cos(np.pi * p) + 1) / 2 if cosine else a + (b - a) * p
        result = np.where((start <= t) & (t < end), between, result)
    return result


# Every length argument of every public schedule: (schedule of a length n, closed form of
# (n, t) in float64, valid for t < n).
LONG_LENGTHS = {
    "linear(transition_steps)": (
        lambda n: S.linear(0.3, 0.01, n),
        lambda n, t: 0.3 + (0.01 - 0.3) * np.minimum(t / n, 1.0),
    ),
    "piecewise_constant(boundaries)": (
        lambda n: S.piecewise_constant([100, n], [1.0, 0.5, 0.1]),
        lambda n, t: np.where(t < 100, 1.0, np.where(t < n, 0.5, 0.1)),
    ),
    "step_decay(step_size)": (
        lambda n: S.step_decay(1.0, n, 0.5),
        lambda n, t: 0.5 ** (t // n),
    ),
    "multistep_decay(milestones)": (
        lambda n: S.multistep_decay(1.0, [100, n], 0.5),
        lambda n, t: 0.5 ** (np.asarray(t >= 100, float) + np.asarray(t >= n, float)),
    ),
    "geometric_decay(transition_steps)": (
        lambda n: S.geometric_decay(2.0, 0.5, n),
        lambda n, t: 2.0 * 0.5 ** (t / n),
    ),
    "geometric_decay(transition_steps, staircase)": (
        lambda n: S.geometric_decay(2.0, 0.5, n, staircase=True),
        lambda n, t: 2.0 * 0.5 ** (t // n),
    ),
    "polynomial_decay(transition_steps)": (
        lambda n: S.polynomial_decay(1.0, 0.1, 2.0, n),
        lambda n, t: 0.1 + 0.9 * (1 - np.minimum(t, n) / n) ** 2,
    ),
    "cosine_decay(decay_steps)": (
        lambda n: S.cosine_decay(1000.0, n, 1.0),
        lambda n, t: 1.0 + 999.0 * cosine_shape(np.minimum(t, n) / n),
    ),
    "triangular(cycle_length)": (
        lambda n: S.triangular(0.1, 1.0, n, 0.3),
        lambda n, t: 0.1 + 0.9 * triangle_shape(np.minimum(t, n) / n, 0.3),
    ),
    "inverse_sqrt(warmup_steps)": (
        lambda n: S.inverse_sqrt(2.0, n),
        lambda n, t: 2.0 * np.minimum((t + 1) / n, np.sqrt(n / (t + 1))),
    ),
    "warmup(length)": (
        lambda n: S.warmup(S.linear(1.0, 0.5, 1000), n, 0.1),
        lambda n, t: np.where(t < n, 0.1 + 0.9 * t / n, linear_1000(t - n)),
    ),
    "cooldown(start)": (
        lambda n: S.cooldown(S.linear(1.0, 0.5, 1000), n, 100, 0.0),
        lambda n, t: np.where(t <= n, linear_1000(t), 0.5 - 0.5 * np.minimum((t - n) / 100, 1)),
    ),
    "cooldown(length)": (
        lambda n: S.cooldown(S.linear(1.0, 0.5, 1000), 2000, n, 0.0),
        lambda n, t: np.where(t <= 2000, linear_1000(t), 0.5 - 0.5 * np.minimum((t - 2000) / n, 1)),
    ),
    "cyclic(cycle_length)": (
        lambda n: S.cyclic(S.shapes.cosine, n, 0.1, 1.0),
        lambda n, t: 0.1 + 0.9 * cosine_shape((t % n) / n),
    ),
    "cyclic(cycle_length, growing)": (
        lambda n: S.cyclic(S.shapes.triangular(0.3), n, 0.1, 1.0, 2.0, 0.5),
        lambda n, t: 0.1 + 0.9 * triangle_shape(t / n, 0.3),  # the first cycle
    ),
    "cosine_restarts(first_cycle)": (
        lambda n: S.cosine_restarts(1.0, n, 2, 0.01),
        lambda n, t: 0.01 + 0.99 * cosine_shape(t / n),  # the first cycle
    ),
    "cyclic_lr(step_size_up)": (
        lambda n: S.cyclic_lr(0.1, 1.0, n),
        lambda n, t: cyclic_lr_reference(0.1, 1.0, n, n, t),
    ),
    "cyclic_lr(step_size_down)": (
        lambda n: S.cyclic_lr(0.1, 1.0, 1000, n, "triangular2"),
        lambda n, t: cyclic_lr_reference(0.1, 1.0, 1000, n, t, halving=True),
    ),
    "one_cycle(cycle_length)": (
        lambda n: S.one_cycle(0.1, 1.0, n),
        lambda n, t: 0.1 + 0.9 * triangle_shape(np.minimum(t, n) / n),
    ),
    "one_cycle(cooldown_length)": (
        lambda n: S.one_cycle(0.1, 1.0, 1000, n, 0.01),
        lambda n, t: np.where(
            t <= 1000,
            0.1 + 0.9 * triangle_shape(np.minimum(t, 1000) / 1000),
            0.1 - 0.09 * np.minimum((t - 1000) / n, 1),
        ),
    ),
    "join(boundaries)": (
        lambda n: S.join([S.constant(1.0), S.linear(1.0, 0.5, 1000), S.constant(5.0)], [100, n]),
        lambda n, t: np.where(t < 100, 1.0, np.where(t < n, linear_1000(t - 100), 5.0)),
    ),
    # optax's schedules under optax's names (tests/test_optax_schedules.py compares them
    # with optax itself where optax computes such lengths).
    "linear_schedule(transition_steps)": (
        lambda n: S.linear_schedule(0.3, 0.01, n),
        lambda n, t: 0.3 + (0.01 - 0.3) * np.minimum(t / n, 1.0),
    ),
    "polynomial_schedule(transition_steps)": (
        lambda n: S.polynomial_schedule(1.0, 0.1, 2.0, n),
        lambda n, t: 0.1 + 0.9 * (1 - np.minimum(t, n) / n) ** 2,
    ),
    "exponential_decay(transition_steps)": (
        lambda n: S.exponential_decay(2.0, n, 0.5),
        lambda n, t: 2.0 * 0.5 ** (t / n),
    ),
    "exponential_decay(transition_steps, staircase)": (
        lambda n: S.exponential_decay(2.0, n, 0.5, staircase=True),
        lambda n, t: 2.0 * 0.5 ** (t // n),
    ),
    "cosine_decay_schedule(decay_steps)": (
        lambda n: S.cosine_decay_schedule(1000.0, n, 0.001),
        lambda n, t: 1000.0 * (0.999 * cosine_shape(np.minimum(t, n) / n) + 0.001),
    ),
    "warmup_constant_schedule(warmup_steps)": (
        lambda n: S.warmup_constant_schedule(0.1, 1.0, n),
        lambda n, t: 0.1 + 0.9 * np.minimum(t / n, 1.0),
    ),
    "warmup_cosine_decay_schedule(warmup_steps)": (
        lambda n: S.warmup_cosine_decay_schedule(0.1, 1.0, n, n + 1000, 0.01),
        lambda n, t: 0.1 + 0.9 * t / n,
    ),
    "warmup_cosine_decay_schedule(decay_steps)": (
        lambda n: S.warmup_cosine_decay_schedule(0.1, 1.0, 1000, n, 0.01),
        lambda n, t: np.where(
            t < 1000, 0.1 + 0.9 * t / 1000, 0.99 * cosine_shape((t - 1000) / (n - 1000)) + 0.01
        ),
    ),
    "warmup_exponential_decay_schedule(warmup_steps)": (
        lambda n: S.warmup_exponential_decay_schedule(0.1, 1.0, n, 100, 0.5),
        lambda n, t: 0.1 + 0.9 * t / n,
    ),
    "warmup_exponential_decay_schedule(transition_steps)": (
        lambda n: S.warmup_exponential_decay_schedule(0.1, 1.0, 1000, n, 0.5),
        lambda n, t: np.where(t < 1000, 0.1 + 0.9 * t / 1000, 0.5 ** ((t - 1000) / n)),
    ),
    "linear_onecycle_schedule(transition_steps)": (
        lambda n: S.linear_onecycle_schedule(n, 1.0),
        lambda n, t: onecycle_reference(
            [int(0.3 * n), int(0.85 * n), n], [0.04, 1.0, 0.04, 4e-6], t, cosine=False
        ),
    ),
    "cosine_onecycle_schedule(transition_steps)": (
        lambda n: S.cosine_onecycle_schedule(n, 1.0),
        lambda n, t: onecycle_reference([int(0.3 * n), n], [0.04, 1.0, 4e-6], t, cosine=True),
    ),
    "join_schedules(boundaries)": (
        lambda n: S.join_schedules(
            [S.constant(1.0), S.linear(1.0, 0.5, 1000), S.constant(5.0)], [100, n]
        ),
        lambda n, t: np.where(t < 100, 1.0, np.where(t < n, linear_1000(t - 100), 5.0)),
    ),
}


def test_every_public_schedule_with_a_length_is_covered():
    lengths = {"transition_steps", "boundaries", "step_size", "milestones", "decay_steps",
               "cycle_length", "warmup_steps", "length", "start", "cooldown_length",
               "first_cycle", "step_size_up", "step_size_down"}  # fmt: skip
    covered = {re.match(r"(\w+)\((\w+)", key).groups() for key in LONG_LENGTHS}
    for name in S.__all__:
        factory = getattr(S, name)
        if not inspect.isfunction(factory) or name in ("plot_schedule", "reduce_on_plateau"):
            continue
        for arg in inspect.signature(factory).parameters:
            if arg in lengths:
                assert (name, arg) in covered, f"LONG_LENGTHS lacks {name}({arg})"


# Each of these two checks takes half the schedules by default, the other half the other.
@pytest.mark.parametrize("name", sampled(sorted(LONG_LENGTHS), 2, 0))
@settings(max_examples=examples(15), deadline=None)  # a compilation per example
@given(n=BEYOND_INT32, ts=INT32_COUNTS)
def test_lengths_beyond_int32_give_the_closed_form(name, n, ts):
    build, reference = LONG_LENGTHS[name]
    counts = np.array([0, 1, 10**9, INT32_MAX, *ts], np.int64)
    expected = reference(n, counts.astype(np.float64))
    for length in (n, float(n)):  # a float length that is a whole number is accepted too
        schedule = build(length)
        values = np.asarray(jax.jit(schedule)(jnp.asarray(counts, jnp.int32)))
        np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        schedule(int(ts[0])), reference(n, float(ts[0])), rtol=1e-5, atol=1e-6
    )


def test_cosine_decay_of_1e10_steps_is_optax():
    # The example: this raised OverflowError when called.
    theirs = optax.cosine_decay_schedule(1000, decay_steps=1e10)(1e9)
    np.testing.assert_allclose(S.cosine_decay(1000, decay_steps=1e10)(1e9), theirs, rtol=1e-6)
    np.testing.assert_allclose(theirs, 975.52826, rtol=1e-6)


@settings(max_examples=40, deadline=None)
@given(n=BEYOND_INT32, t=st.integers(0, INT32_MAX))
def test_long_cosine_decay_is_optax(n, t):
    ours, theirs = S.cosine_decay(2.0, n, 0.5), optax.cosine_decay_schedule(2.0, n, alpha=0.25)
    for count in (t, float(t), jnp.int32(t)):
        np.testing.assert_allclose(ours(count), theirs(count), rtol=1e-6, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(n=BEYOND_INT32, t=st.integers(0, INT32_MAX))
def test_warmup_cosine_with_a_long_decay_is_optax(n, t):
    theirs = optax.warmup_cosine_decay_schedule(0.0, 1.0, 1000, n, end_value=0.01)
    ours = S.warmup(S.cosine_decay(1.0, n - 1000, 0.01), 1000, 0.0)  # docs/migrating/optax.md
    for count in (t, jnp.int32(t)):
        np.testing.assert_allclose(ours(count), theirs(count), rtol=1e-6, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(n=BEYOND_INT32, t=st.integers(0, INT32_MAX))
def test_piecewise_constant_with_a_boundary_beyond_int32_is_optax(n, t):
    theirs = optax.piecewise_constant_schedule(1.0, {100: 0.5, n: 0.2})
    ours = S.piecewise_constant([100, n], [1.0, 0.5, 0.1])
    # optax takes a float count here (an int one overflows in its `threshold - count`).
    for count in (t, jnp.int32(t), float(t)):
        np.testing.assert_allclose(ours(count), theirs(float(t)), rtol=1e-6)


def test_cyclic_lr_whose_cycle_is_beyond_int32():
    # Both halves fit int32, their sum does not.
    up, down = INT32_MAX - 100, 1000
    counts = np.array([0, 10**9, INT32_MAX - 101, INT32_MAX - 100, INT32_MAX], np.int64)
    values = S.cyclic_lr(0.1, 1.0, up, down)(jnp.asarray(counts, jnp.int32))
    expected = cyclic_lr_reference(0.1, 1.0, up, down, counts.astype(np.float64))
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6)


def test_cntk_epoch_size_beyond_int32():
    lr = gradtx.cntk.learning_rate_schedule([0.05, 0.025], "minibatch", epoch_size=10**10)
    np.testing.assert_allclose(lr(jnp.int32(INT32_MAX), jnp.int32(10**9), 4), 0.05 / 4)
    momentum = gradtx.cntk.momentum_schedule([0.9, 0.5], epoch_size=10**10)
    np.testing.assert_allclose(momentum(jnp.int32(INT32_MAX), 0, 4), 0.9, rtol=1e-6)


# A count beyond int32 is evaluated in float32, as optax evaluates it, whatever its type.
COUNT_FORMS = [
    pytest.param(lambda t: t, id="python int"),
    pytest.param(float, id="python float"),
    pytest.param(np.int64, id="numpy int64"),
    pytest.param(lambda t: np.array([t]), id="numpy int64 array"),
    pytest.param(jnp.float32, id="float32 array"),
    pytest.param(lambda t: [t, t], id="list"),
]


@pytest.mark.parametrize("form", COUNT_FORMS)
@pytest.mark.parametrize("name", sampled(sorted(LONG_LENGTHS), 2, 1))
def test_counts_beyond_int32_are_evaluated_in_float(name, form):
    build, reference = LONG_LENGTHS[name]
    schedule, t = build(10**10), 3 * 10**9  # both whole float32 numbers
    expected = reference(10**10, float(t))
    np.testing.assert_allclose(schedule(form(t)), np.full(np.shape(form(t)), expected), rtol=1e-5)
    if not isinstance(form(t), list):
        np.testing.assert_allclose(jax.jit(schedule)(jnp.float32(t)), expected, rtol=1e-5)


@pytest.mark.parametrize("form", COUNT_FORMS)
def test_counts_beyond_int32_pass_normal_boundaries(form):
    t = 3 * 10**9
    cases = [
        (S.cosine_decay(2.0, 10**10), optax.cosine_decay_schedule(2.0, 10**10)(float(t))),
        (S.step_decay(1.0, 10**9, 0.5), 0.125),
        (S.multistep_decay(1.0, [10, 2_500_000_000, 4 * 10**9], 0.5), 0.25),
        (S.piecewise_constant([2_500_000_000], [1.0, 0.5]), 0.5),
        (S.join([S.constant(1.0), S.linear(1.0, 0.0, 10**9)], [2_500_000_000]), 0.5),
        (S.warmup(S.cosine_decay(1.0, 4 * 10**9), 10**9), cosine_shape(0.5)),
        (S.cyclic(S.shapes.cosine, 10**9, 0.0, 1.0, 1.0, 0.5), 0.125),  # the 4th cycle's start
        (S.cyclic_lr(0.0, 1.0, 10**9, mode="triangular2"), 0.5),  # the 2nd cycle's peak
        (S.constant(0.3), 0.3),
    ]
    for schedule, expected in cases:
        np.testing.assert_allclose(
            schedule(form(t)), np.full(np.shape(form(t)), expected), rtol=1e-5
        )
