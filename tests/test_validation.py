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
