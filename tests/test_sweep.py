"""sweep: one vmapped program equal to the runs one by one."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import assert_trees_close, grads_at, make_params
from hypothesis import given, settings
from hypothesis import strategies as st

import gradtx


def train(learning_rate, weight_decay, steps=15):
    """AdamW with warm-up-cosine on the conftest tree, with gradients from a quadratic pull."""
    schedule = gradtx.schedules.warmup(gradtx.schedules.cosine_decay(learning_rate, steps - 3), 3)
    opt = gradtx.adamw(schedule, weight_decay=weight_decay)
    params = make_params()
    noise = [grads_at(params, t) for t in range(steps)]

    def step(carry, noise_t):
        params, state = carry
        grads = jax.tree.map(lambda p, n: p + n, params, noise_t)
        updates, state = opt.update(grads, state, params)
        return (gradtx.apply_updates(params, updates), state), None

    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *noise)
    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), stacked)
    loss = sum(jnp.sum(x**2) for x in jax.tree.leaves(params))
    return {"loss": loss, "params": params}


RATES = [1e-3, 1e-2, 3e-2, 1e-1]
DECAYS = [0.0, 1e-2, 1e-1, 1.0]


@pytest.mark.parametrize("batch_size", [None, 5])
def test_sixteen_point_sweep_equals_sixteen_runs(batch_size):
    result = gradtx.sweep(train, batch_size=batch_size, learning_rate=RATES, weight_decay=DECAYS)
    single = jax.jit(train)
    losses = np.zeros((4, 4))
    for (i, lr), (j, wd) in itertools.product(enumerate(RATES), enumerate(DECAYS)):
        expected = single(jnp.float32(lr), jnp.float32(wd))
        got = jax.tree.map(lambda x, i=i, j=j: x[i, j], result.metrics)
        assert_trees_close(got, expected, rtol=1e-5, atol=1e-6)
        losses[i, j] = expected["loss"]
    assert result.objective.shape == (4, 4)
    best = np.unravel_index(np.argmin(losses), losses.shape)
    assert result.best_index == best
    assert result.best == {
        "learning_rate": pytest.approx(RATES[best[0]]),
        "weight_decay": pytest.approx(DECAYS[best[1]]),
    }
    assert "<- best" in result.table().splitlines()[1 + best[0] * 4 + best[1]]


def test_one_trace_for_the_whole_grid():
    traces = []

    def counted(a, b):
        traces.append(1)
        return a * b

    result = gradtx.sweep(counted, a=np.arange(7.0), b=np.arange(3.0))
    assert len(traces) == 1
    np.testing.assert_array_equal(result.metrics, np.outer(np.arange(7.0), np.arange(3.0)))


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.integers(1, 4), min_size=1, max_size=3),
    st.booleans(),
    st.one_of(st.none(), st.integers(1, 5)),
)
def test_grid_shapes_and_values(lengths, maximize, batch_size):
    rng = np.random.default_rng(sum(lengths))
    axes = {f"h{k}": rng.normal(size=n).astype(np.float32) for k, n in enumerate(lengths)}

    def f(**h):
        return {"loss": sum((k + 1) * jnp.sin(v) for k, v in enumerate(h.values()))}

    result = gradtx.sweep(f, batch_size=batch_size, maximize=maximize, **axes)
    expected = np.zeros(lengths)
    for index in itertools.product(*(range(n) for n in lengths)):
        point = [axes[f"h{k}"][i] for k, i in enumerate(index)]
        expected[index] = sum((k + 1) * np.sin(v) for k, v in enumerate(point))
    np.testing.assert_allclose(result.metrics["loss"], expected, rtol=1e-5, atol=1e-6)
    best = np.unravel_index(np.argmax(expected) if maximize else np.argmin(expected), lengths)
    assert result.best_index == tuple(int(i) for i in best)


def test_nan_points_never_win_and_objectives_can_be_chosen():
    result = gradtx.sweep(
        lambda lr: {"loss": jnp.where(lr > 0.5, jnp.nan, -lr), "accuracy": lr},
        lr=[0.1, 0.4, 0.9],
    )
    assert result.best == {"lr": pytest.approx(0.4)}
    by_accuracy = gradtx.sweep(
        lambda lr: {"loss": lr, "accuracy": -((lr - 0.4) ** 2)},
        objective="accuracy",
        maximize=True,
        lr=[0.1, 0.4, 0.9],
    )
    assert by_accuracy.best_index == (1,)
    all_nan = gradtx.sweep(lambda lr: lr * jnp.nan, lr=[0.1, 0.2])
    assert all_nan.best is None and all_nan.best_index is None


def test_bad_grids():
    f = lambda **h: {"loss": jnp.float32(0.0)}  # noqa: E731
    with pytest.raises(ValueError, match="the values of lr have different shapes"):
        gradtx.sweep(f, lr=[np.zeros(2), np.zeros(3)])
    with pytest.raises(ValueError, match="sweep: lr has no values"):
        gradtx.sweep(f, lr=[])
    with pytest.raises(ValueError, match="lr must be a list or 1-D array"):
        gradtx.sweep(f, lr=0.1)
    with pytest.raises(ValueError, match="at least one hyperparameter axis"):
        gradtx.sweep(f)
    with pytest.raises(ValueError, match=r"objective 'acc' is not among the metrics \['loss'\]"):
        gradtx.sweep(f, objective="acc", lr=[0.1])
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        gradtx.sweep(f, batch_size=0, lr=[0.1])
