"""gradtx.testing catches what it promises to catch, and reports all of it at once."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import make_params
from hypothesis import given, settings

import gradtx
from gradtx.testing import CheckFailed, check_schedule, check_transform, hyperparameters, pytrees


def transform(init, update):
    return gradtx.GradientTransformation(init, update)


def failed(tx, **kwargs) -> list[str]:
    with pytest.raises(CheckFailed) as info:
        check_transform(tx, make_params(), **kwargs)
    return [name for name, _ in info.value.failures]


def test_a_correct_transform_passes():
    check_transform(gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.adam(1e-2)), make_params())


def test_hidden_python_state_is_impure():
    calls = itertools.count(1)
    tx = transform(
        lambda p: gradtx.EmptyState(),
        lambda u, s, p=None: (jax.tree.map(lambda x: x * next(calls), u), s),
    )
    names = failed(tx)
    assert "update is pure (same inputs, same outputs)" in names
    assert "jit agrees with no jit" in names  # traced once: the counter froze


def test_state_mutated_in_place_is_caught():
    def update(u, s, p=None):
        s["sum"] += 1.0  # a NumPy buffer changed under the caller's feet
        return u, s

    names = failed(transform(lambda p: {"sum": np.zeros(())}, update))
    assert "update leaves the state it is given unchanged" in names


def test_wrong_dtype_shape_and_growing_state_are_caught():
    def update(u, s, p=None):
        return jax.tree.map(lambda x: x.astype(jnp.float16).reshape(-1), u), {
            "log": jnp.concatenate([s["log"], jnp.ones(1)])
        }

    names = failed(transform(lambda p: {"log": jnp.zeros(0)}, update))
    assert "updates keep the gradients' structure, shapes and dtypes" in names
    assert "the state keeps its structure, shapes and dtypes" in names
    assert "jit agrees with no jit" not in names  # consistent, just wrong


def test_a_buffer_shared_by_two_state_leaves_is_caught():
    # torch_optim.adam's init once gave exp_avg and exp_avg_sq one zeros tree: a training
    # step that donates the state then failed with "Attempt to donate the same buffer twice".
    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return {"mu": zeros, "nu": zeros}

    def update(u, s, p=None):
        return u, {"mu": u, "nu": u}

    with pytest.raises(CheckFailed) as info:
        check_transform(transform(init, update), make_params())
    (message,) = [m for name, m in info.value.failures if "shares a buffer" in name]
    assert "['nu']" in message and "the buffer of ['mu']" in message
    names = [name for name, _ in info.value.failures]
    assert "the state keeps its structure, shapes and dtypes" in names  # update's state too


def test_a_state_leaf_holding_a_params_buffer_is_caught():
    # optax's prodigy keeps the params' own arrays as params0: a step that donates both
    # the params and the state cannot donate that buffer twice.
    tx = transform(lambda params: {"start": params}, lambda u, s, p=None: (u, s))
    with pytest.raises(CheckFailed) as info:
        check_transform(tx, make_params())
    (message,) = [m for name, m in info.value.failures if "shares a buffer" in name]
    assert "(the buffer of params['dense'][0])" in message


def test_init_failure_stops_early_and_names_it():
    def init(p):
        raise RuntimeError("no")

    with pytest.raises(CheckFailed, match=r"1 property failed\n  - init runs: RuntimeError: no"):
        check_transform(transform(init, lambda u, s, p=None: (u, s)), make_params(), name="mine")


def test_eval_shape_and_vmap_failures_are_reported():
    def init(p):  # reads a value on the host: fine eagerly, impossible under eval_shape
        return {"n": jnp.float32(np.asarray(jax.tree.leaves(p)[0]).sum())}

    def update(u, s, p=None):
        if float(s["n"]) > 0:  # Python branching on the state: vmap and jit fail
            return jax.tree.map(lambda x: -x, u), s
        return u, s

    names = failed(transform(init, update))
    assert "jax.eval_shape(tx.init, params) works" in names
    assert "vmap over states and gradients agrees with a loop" in names
    assert "jit agrees with no jit" in names


def test_schedule_checks():
    check_schedule(gradtx.schedules.cosine_decay(1.0, 1000))
    with pytest.raises(CheckFailed, match="finite at max_count"):
        check_schedule(lambda count: 1.0 / (2**31 - 1 - count).astype(jnp.float32))
    with pytest.raises(CheckFailed, match="returns a float scalar"):
        check_schedule(lambda count: count * 2)
    with pytest.raises(CheckFailed, match="array evaluation equals scalar evaluation"):
        check_schedule(
            lambda count: (
                jnp.sum(jnp.atleast_1d(count).astype(jnp.float32)) * 0 + 1.0
                if jnp.ndim(count) == 0
                else jnp.zeros(jnp.shape(count))
            )
        )


@settings(max_examples=20, deadline=None)
@given(tree=pytrees())
def test_pytrees_strategy_makes_trees_jax_can_map(tree):
    assert tree is not None
    doubled = jax.tree.map(lambda x: 2 * x, tree)
    assert jax.tree.structure(doubled) == jax.tree.structure(tree)


@settings(max_examples=20, deadline=None)
@given(kwargs=hyperparameters(gradtx.rmsprop, learning_rate=0.1))
def test_hyperparameters_strategy_draws_valid_arguments(kwargs):
    assert kwargs["learning_rate"] == 0.1
    assert 0.5 <= kwargs["decay"] <= 0.99
    gradtx.rmsprop(**kwargs)


def test_hyperparameters_strategy_asks_for_unknown_required_arguments():
    with pytest.raises(
        ValueError, match="no strategy for lookahead's required argument 'fast_optimizer'"
    ):
        hyperparameters(gradtx.lookahead)
