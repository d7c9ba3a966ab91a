"""state_dict / load_state_dict: readable keys, strict checks, bit-identical resume."""

from __future__ import annotations

import dataclasses
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import grads_at, make_params

import gradtx
from gradtx.state_dict import load_npz, save_npz


def _learner():
    labels = {"dense": ["a", "a"], "conv": ["b"], "head": ["a", "frozen"]}
    return gradtx.chain(
        gradtx.clip_by_global_norm(1.0),
        gradtx.partition(
            {
                "a": gradtx.inject_hyperparams(gradtx.adamw)(learning_rate=1e-2),
                "b": gradtx.sgd(0.05, momentum=0.9),
                "frozen": gradtx.set_to_zero(),
            },
            labels,
        ),
    )


def _train(opt, params, state, steps, start=0):
    step = jax.jit(opt.update)
    for t in range(start, start + steps):
        updates, state = step(grads_at(params, t), state, params)
        params = gradtx.apply_updates(params, updates)
    return params, state


def test_keys_are_readable_and_values_numpy():
    opt = _learner()
    d = gradtx.state_dict(opt.init(make_params()))
    group = d["1"]["inner_states"]["a"]["inner_state"]  # optax's field names
    adam = group["inner_state"]["0"]
    assert set(adam) == {"count", "mu", "nu"} and isinstance(adam["count"], np.ndarray)
    assert group["hyperparams"]["learning_rate"] == np.float32(1e-2)
    assert isinstance(adam["mu"]["dense"]["0"], np.ndarray)


def test_resume_is_bit_identical():
    opt, params = _learner(), make_params()
    p_full, s_full = _train(opt, params, opt.init(params), 10)

    p_half, s_half = _train(opt, params, opt.init(params), 5)
    saved = pickle.dumps((gradtx.state_dict(s_half), jax.tree.map(np.asarray, p_half)))
    d, p_saved = pickle.loads(saved)
    restored = gradtx.load_state_dict(opt.init(params), d)
    p_resumed, s_resumed = _train(opt, jax.tree.map(jnp.asarray, p_saved), restored, 5, start=5)

    for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_resumed), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    for a, b in zip(jax.tree.leaves(s_full), jax.tree.leaves(s_resumed), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


def test_mismatches_name_the_first_path():
    opt, params = gradtx.adam(1e-3), {"w": jnp.zeros(3)}
    d = gradtx.state_dict(opt.init(params))
    template = opt.init({"w": jnp.zeros(4)})
    with pytest.raises(
        ValueError,
        match=r"state\.0\.mu\.w: expected shape \(4,\) float32, "
        r"got shape \(3,\) float32",
    ):
        gradtx.load_state_dict(template, d)
    del d["0"]["nu"]
    with pytest.raises(ValueError, match=r"missing state\.0\.nu"):
        gradtx.load_state_dict(opt.init(params), d)
    d = gradtx.state_dict(opt.init(params))
    d["0"]["count"] = np.asarray(0, np.int64)
    with pytest.raises(
        ValueError,
        match=r"state\.0\.count: expected shape \(\) int32, got shape "
        r"\(\) int64",
    ):
        gradtx.load_state_dict(opt.init(params), d)


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class _Moments:
    """A custom pytree node in a state, as an equinox or flax.struct state would be."""

    fast: jax.Array
    slow: jax.Array


def test_any_pytree_node_is_saved_by_its_keys_and_restored_as_itself():
    state = (_Moments(jnp.ones(2), jnp.zeros(3)), gradtx.pack({"w": jnp.ones((2, 2))}))
    saved = gradtx.state_dict(state)
    assert set(saved["0"]) == {"fast", "slow"} and set(saved["1"]) == {"float32"}
    restored = gradtx.load_state_dict(jax.tree.map(jnp.zeros_like, state), saved)
    assert isinstance(restored[0], _Moments) and isinstance(restored[1], gradtx.Packed)
    np.testing.assert_array_equal(restored[0].fast, np.ones(2))
    np.testing.assert_array_equal(restored[1].unpack()["w"], np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"missing state\.0\.slow; expected keys"):
        gradtx.load_state_dict(state, {"0": {"fast": saved["0"]["fast"]}, "1": saved["1"]})


def test_the_npz_checkpoint_round_trips_and_checks_every_entry(tmp_path):
    learner = _learner()
    params = make_params()
    state = learner.init(params)
    _, state = learner.update(grads_at(params, 0), state, params)
    path = tmp_path / "checkpoint.npz"
    save_npz(path, params, state)
    with np.load(path) as f:
        assert (
            "params/['dense'][0]" in f.files
            and "state/1/inner_states/a/inner_state/inner_state/0/mu/dense/0" in f.files
        )
    new_params, new_state = load_npz(
        path, jax.tree.map(jnp.zeros_like, params), learner.init(params)
    )
    jax.tree.map(np.testing.assert_array_equal, (new_params, new_state), (params, state))
    wrong = {**params, "head": [jnp.zeros(()), jnp.zeros(6)]}
    with pytest.raises(
        ValueError, match=r"load_npz: params/\['head'\]\[1\]: expected shape \(6,\)"
    ):
        load_npz(path, wrong, learner.init(params))
