"""Bad hyperparameters fail at construction, naming the argument; tracers pass; counts saturate."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradtx

BAD = [
    (lambda: gradtx.adam(0.1, b1=1.5), "adam: b1 must be in [0, 1), got 1.5"),
    (lambda: gradtx.adam(-1e-3), "adam: learning_rate must be in [0, inf), got -0.001"),
    (
        lambda: gradtx.adamw(1e-3, weight_decay=-1),
        "adamw: weight_decay must be in [0, inf), got -1",
    ),
    (lambda: gradtx.sgd(0.1, momentum=1.0), "sgd: momentum must be in [0, 1), got 1"),
    (lambda: gradtx.rmsprop(0.1, decay=-0.1), "rmsprop: decay must be in [0, 1), got -0.1"),
    (lambda: gradtx.rmsprop(0.1, eps=-1e-8), "rmsprop: eps must be in [0, inf), got -1e-08"),
    (
        lambda: gradtx.adagrad(0.1, initial_accumulator_value=-1),
        "adagrad: initial_accumulator_value must be in [0, inf), got -1",
    ),
    (lambda: gradtx.adadelta(rho=1.0), "adadelta: rho must be in [0, 1), got 1"),
    (lambda: gradtx.lion(1e-4, b2=2.0), "lion: b2 must be in [0, 1), got 2"),
    (lambda: gradtx.nadam(float("nan")), "nadam: learning_rate must be in [0, inf), got nan"),
    (lambda: gradtx.amsgrad(1e-3, eps_root=-1.0), "amsgrad: eps_root must be in [0, inf), got -1"),
    (lambda: gradtx.adamax(1e-3, b2=jnp.array(1.0)), "adamax: b2 must be in [0, 1), got 1"),
    (
        lambda: gradtx.clip_by_global_norm(0.0),
        "clip_by_global_norm: max_norm must be in (0, inf), got 0",
    ),
    (lambda: gradtx.clip(-1.0), "clip: max_delta must be in (0, inf), got -1"),
    (lambda: gradtx.trace(1.2), "trace: decay must be in [0, 1), got 1.2"),
    (lambda: gradtx.ema(-0.5), "ema: decay must be in [0, 1), got -0.5"),
    (lambda: gradtx.scale_by_adam(b2=1.0), "scale_by_adam: b2 must be in [0, 1), got 1"),
    (lambda: gradtx.scale_by_rss(eps=-1.0), "scale_by_rss: eps must be in [0, inf), got -1"),
    (
        lambda: gradtx.scale_by_learning_rate(-0.1),
        "scale_by_learning_rate: learning_rate must be in [0, inf), got -0.1",
    ),
]


@pytest.mark.parametrize(
    "build, message", BAD, ids=[m.split(":")[0] + str(i) for i, (_, m) in enumerate(BAD)]
)
def test_bad_hyperparameter_names_argument_and_range(build, message):
    with pytest.raises(ValueError) as info:
        build()
    assert str(info.value) == message


def test_non_numeric_hyperparameter():
    with pytest.raises(TypeError, match="adam: learning_rate must be a number"):
        gradtx.adam("fast")


def test_tracers_are_never_inspected():
    # Negative values would fail validation if they were concrete; as tracers they pass.
    def build_and_step(lr):
        opt = gradtx.adam(lr, b1=lr + 0.5)
        params = {"w": jnp.ones(2)}
        updates, _ = opt.update(params, opt.init(params), params)
        return updates["w"]

    out = jax.vmap(build_and_step)(jnp.array([-0.1, 0.1]))
    assert out.shape == (2, 2)


def test_schedules_are_not_called_at_construction():
    def exploding(count):
        raise AssertionError("schedule called at construction")

    gradtx.adam(exploding)
    gradtx.sgd(0.1, momentum=exploding)


MAX = np.iinfo(np.int32).max

COUNTED = {
    "adam": gradtx.adam(lambda c: 1e-3 * jnp.ones_like(c, jnp.float32)),
    "nadam": gradtx.nadam(1e-3),
    "amsgrad": gradtx.amsgrad(1e-3),
    "adamax": gradtx.adamax(1e-3),
    "lion": gradtx.lion(1e-3),
    "sgd": gradtx.sgd(lambda c: 0.1 / (1.0 + c), momentum=lambda c: 0.9 * jnp.ones_like(c, float)),
    "adamw": gradtx.adamw(1e-3, weight_decay=lambda c: 1e-4 * jnp.ones_like(c, jnp.float32)),
    "ema": gradtx.ema(0.9),
}


@pytest.mark.parametrize("name", sorted(COUNTED))
@pytest.mark.parametrize("jit", [False, True])
def test_count_saturates_at_int32_max(name, jit):
    opt = COUNTED[name]
    params = {"w": jnp.array([1.0, -2.0])}
    state = opt.init(params)

    def near_max(x):
        is_count = isinstance(x, jax.Array) and x.dtype == jnp.int32 and x.shape == ()
        return jnp.asarray(MAX - 1, jnp.int32) if is_count else x

    state = jax.tree.map(near_max, state)
    update = jax.jit(opt.update) if jit else opt.update
    for _ in range(3):
        updates, state = update({"w": jnp.array([0.3, -0.1])}, state, params)
        assert np.all(np.isfinite(updates["w"]))
    counts = [x for x in jax.tree.leaves(state) if x.dtype == jnp.int32]
    assert counts and all(int(c) == MAX for c in counts)


# Each hyperparameter is checked once, by the block that uses it; the error names the learner.

NONNEG, DECAY = "[0, inf)", "[0, 1)"

# learner -> (arguments that switch every block on, {argument: valid interval})
LEARNER_ARGUMENTS = {
    "sgd": (
        {"momentum": 0.9, "nesterov": True},
        {"learning_rate": NONNEG, "momentum": DECAY, "weight_decay": NONNEG},
    ),
    "adagrad": (
        {},
        {
            "learning_rate": NONNEG,
            "initial_accumulator_value": NONNEG,
            "eps": NONNEG,
            "weight_decay": NONNEG,
        },
    ),
    "rmsprop": (
        {"centered": True, "momentum": 0.9},
        {
            "learning_rate": NONNEG,
            "decay": DECAY,
            "eps": NONNEG,
            "initial_scale": NONNEG,
            "momentum": DECAY,
            "weight_decay": NONNEG,
        },
    ),
    **{
        name: (
            {},
            {
                "learning_rate": NONNEG,
                "b1": DECAY,
                "b2": DECAY,
                "eps": NONNEG,
                "eps_root": NONNEG,
                "weight_decay": NONNEG,
            },
        )
        for name in ("adam", "nadam", "adamw")
    },
    "amsgrad": (
        {},
        {"learning_rate": NONNEG, "b1": DECAY, "b2": DECAY, "eps": NONNEG, "eps_root": NONNEG},
    ),
    "adamax": (
        {},
        {"learning_rate": NONNEG, "b1": DECAY, "b2": DECAY, "eps": NONNEG, "weight_decay": NONNEG},
    ),
    "adadelta": (
        {},
        {"learning_rate": NONNEG, "rho": DECAY, "eps": NONNEG, "weight_decay": NONNEG},
    ),
    "lion": ({}, {"learning_rate": NONNEG, "b1": DECAY, "b2": DECAY, "weight_decay": NONNEG}),
}


@pytest.mark.parametrize("name", sorted(LEARNER_ARGUMENTS))
def test_each_hyperparameter_is_checked_once(name, monkeypatch):
    base, intervals = LEARNER_ARGUMENTS[name]
    # A distinct valid value per argument, so each check call can be traced to its argument.
    values = {arg: 0.0101 * (i + 1) for i, arg in enumerate(intervals)}
    seen, dtypes = [], []
    check_interval, check_state_dtype = (
        gradtx.checks.check_interval,
        gradtx.checks.check_state_dtype,
    )

    def counting_interval(who, arg, value, interval):
        seen.append(value)
        return check_interval(who, arg, value, interval)

    def counting_dtype(who, dtype):
        dtypes.append(dtype)
        return check_state_dtype(who, dtype)

    monkeypatch.setattr(gradtx.checks, "check_interval", counting_interval)
    monkeypatch.setattr(gradtx.checks, "check_state_dtype", counting_dtype)
    getattr(gradtx, name)(**{**base, **values}, state_dtype=jnp.bfloat16)
    calls = {arg: sum(v is value for v in seen) for arg, value in values.items()}
    assert calls == dict.fromkeys(values, 1)
    # state_dtype: once per block that keeps moments (rmsprop with momentum has two), never
    # again by the learner.
    assert dtypes == [jnp.bfloat16] * (2 if name == "rmsprop" else 1)


def test_sgd_without_momentum_still_checks_state_dtype_once(monkeypatch):
    dtypes = []
    check_state_dtype = gradtx.checks.check_state_dtype
    monkeypatch.setattr(
        gradtx.checks,
        "check_state_dtype",
        lambda who, dtype: dtypes.append(dtype) or check_state_dtype(who, dtype),
    )
    gradtx.sgd(0.1, state_dtype=jnp.bfloat16)
    assert dtypes == [jnp.bfloat16]
    with pytest.raises(ValueError, match="sgd: state_dtype must be a floating dtype"):
        gradtx.sgd(0.1, state_dtype=jnp.int32)


LEARNER_MESSAGES = [
    (name, arg, -1.0 if interval == NONNEG else 1.5, interval)
    for name, (_, intervals) in sorted(LEARNER_ARGUMENTS.items())
    for arg, interval in intervals.items()
]


@pytest.mark.parametrize(
    "name, arg, bad, interval",
    LEARNER_MESSAGES,
    ids=[f"{n}-{a}" for n, a, _, _ in LEARNER_MESSAGES],
)
def test_bad_learner_argument_names_the_learner_and_argument(name, arg, bad, interval):
    base, _ = LEARNER_ARGUMENTS[name]
    shown = "-1" if bad == -1.0 else "1.5"
    with pytest.raises(ValueError) as info:
        getattr(gradtx, name)(**{"learning_rate": 0.1, **base, arg: bad})
    assert str(info.value) == f"{name}: {arg} must be in {interval}, got {shown}"
    with pytest.raises(TypeError, match=f"^{name}: {arg} must be a number"):
        getattr(gradtx, name)(**{"learning_rate": 0.1, **base, arg: "x"})
    with pytest.raises(ValueError, match=f"^{name}: state_dtype must be a floating dtype"):
        getattr(gradtx, name)(**{"learning_rate": 0.1, **base, "state_dtype": jnp.int32})


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_decay_and_momentum_are_told_apart(centered):
    # Both reach a block as its `decay`: scale_by_rms / scale_by_stddev's, and trace's.
    with pytest.raises(ValueError, match=r"^rmsprop: decay must be in \[0, 1\), got 1.5$"):
        gradtx.rmsprop(0.1, decay=1.5, centered=centered, momentum=0.9)
    with pytest.raises(ValueError, match=r"^rmsprop: momentum must be in \[0, 1\), got 1.5$"):
        gradtx.rmsprop(0.1, centered=centered, momentum=1.5)


def test_blocks_built_alone_name_themselves():
    with pytest.raises(ValueError, match="^adam: b1"):
        gradtx.adam(0.1, b1=1.5)
    # The learner's name ends with its construction, even when that raised.
    with pytest.raises(ValueError, match=r"^scale_by_adam: b1 must be in \[0, 1\), got 1.5$"):
        gradtx.scale_by_adam(b1=1.5)
    with pytest.raises(ValueError, match=r"^trace: decay must be in \[0, 1\), got 1.5$"):
        gradtx.trace(1.5)
    with pytest.raises(ValueError, match="^trace: state_dtype must be a floating dtype"):
        gradtx.trace(0.9, state_dtype=jnp.int32)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: gradtx.cntk.adadelta(rho=1.0), "adadelta: rho must be in [0, 1), got 1"),
        (
            lambda: gradtx.cntk.adadelta(epsilon=-1.0),
            "adadelta: epsilon must be in [0, inf), got -1",
        ),
        (
            lambda: gradtx.cntk.rmsprop(0.1, 0.9, 0.5, 0.6, 1.0, 0.001),
            "rmsprop: inc must be in [1, inf), got 0.5",
        ),
        (
            lambda: gradtx.cntk.rmsprop(0.1, 0.9, 1.2, 0.6, -1.0, 0.001),
            "rmsprop: max must be in (0, inf], got -1",
        ),
        (
            lambda: gradtx.cntk.rmsprop(0.1, 0.9, 1.2, 0.6, 1.0, -1.0),
            "rmsprop: min must be in [0, inf), got -1",
        ),
        (
            lambda: gradtx.cntk.rmsprop(0.1, 0.9, 1.2, 0.6, 0.001, 0.05),
            "rmsprop: min must be at most max, got min=0.05 > max=0.001",
        ),
        (
            lambda: gradtx.scale_by_rms_sign_steps(0.9, 1.2, 0.6, 0.001, 0.05),
            "scale_by_rms_sign_steps: min_step must be at most max_step, "
            "got min_step=0.05 > max_step=0.001",
        ),
    ],
)
def test_cntk_learners_name_their_own_arguments(build, message):
    with pytest.raises(ValueError) as info:
        build()
    assert str(info.value) == message


# One integer check for every integer argument.

SGD = gradtx.sgd(0.1)
INTEGER_ARGUMENTS = {
    "accumulate": ("every_k", 1, lambda k: gradtx.accumulate(SGD, k)),
    "lookahead": ("sync_period", 1, lambda k: gradtx.lookahead(SGD, k, 0.5)),
    "apply_if_finite": ("max_consecutive_errors", 0, lambda k: gradtx.apply_if_finite(SGD, k)),
    "packed": ("max_leaf_size", 0, lambda k: gradtx.packed(SGD, max_leaf_size=k)),
}
NOT_INTEGERS = [(True, "True"), (2.5, "2.5"), (-1, "-1"), (-3.0, "-3"), ("3", "'3'")]
INTEGER_CASES = [
    (who, value, shown)
    for who, (_, low, _) in INTEGER_ARGUMENTS.items()
    for value, shown in [*NOT_INTEGERS, *([(0, "0")] if low == 1 else [])]
]


@pytest.mark.parametrize(
    "who, value, shown", INTEGER_CASES, ids=[f"{w}-{v!r}" for w, v, _ in INTEGER_CASES]
)
def test_integer_arguments_reject_non_integers_and_out_of_range(who, value, shown):
    name, low, build = INTEGER_ARGUMENTS[who]
    with pytest.raises(ValueError) as info:
        build(value)
    assert str(info.value) == f"{who}: {name} must be an integer >= {low}, got {shown}"


@pytest.mark.parametrize("who", sorted(INTEGER_ARGUMENTS))
@pytest.mark.parametrize("value", [1, 3, 3.0, np.int64(3)])
def test_integer_arguments_take_whole_numbers(who, value):
    _, _, build = INTEGER_ARGUMENTS[who]
    build(value)


@pytest.mark.parametrize("who", ["accumulate", "lookahead", "apply_if_finite"])
def test_integer_arguments_kept_in_int32_counters_fit_them(who):
    name, _, build = INTEGER_ARGUMENTS[who]
    build(2**31 - 1)
    with pytest.raises(ValueError) as info:
        build(2**31)
    assert str(info.value) == (
        f"{who}: {name} must be <= 2147483647 (it is kept in an int32 counter), got 2147483648"
    )


def test_accumulate_with_a_whole_float_period_matches_the_integer_one():
    params = {"w": jnp.array([1.0, -2.0])}
    results = []
    for every_k in (2, 2.0, np.int64(2)):
        opt = gradtx.accumulate(gradtx.sgd(0.1), every_k)
        state = opt.init(params)
        for t in range(4):
            updates, state = opt.update({"w": jnp.array([1.0, 3.0]) * (t + 1)}, state, params)
        results.append(np.asarray(updates["w"]))
    np.testing.assert_array_equal(results[0], results[1])
    np.testing.assert_array_equal(results[0], results[2])


def test_check_length_wordings():
    check = gradtx.checks.check_length
    with pytest.raises(ValueError, match=r"^f: n must be an integer number of steps, got 2.5$"):
        check("f", "n", 2.5)
    with pytest.raises(ValueError, match="^f: n must be > 0, got 0$"):
        check("f", "n", 0)
    with pytest.raises(ValueError, match="^f: n must be >= 0, got -1$"):
        check("f", "n", -1, allow_zero=True)
    with pytest.raises(ValueError, match=r"^f: n must be <= 10 \(it is kept in an int32 counter\)"):
        check("f", "n", 11, at_most=10)
    with pytest.raises(ValueError, match="^f: n must be an integer >= 2, got 1$"):
        check("f", "n", 1, at_least=2, wording="integer")
    with pytest.raises(ValueError, match="^f: n must be a positive integer or None, got False$"):
        check("f", "n", False, wording="positive", or_none=True)
    assert check("f", "n", 10**12) == 10**12
    assert type(check("f", "n", np.int32(4))) is int
