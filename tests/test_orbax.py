"""orbax-checkpoint saves gradtx states and Trainers; a restored run resumes bit for bit.

``Trainer.save``/``load`` keep their ``.npz`` format (gradtx depends on jax, jaxlib,
chex and numpy only); orbax is the recipe of docs/checkpointing.md: save
``{"params": ..., "opt_state": ...}`` with ``ocp.StandardCheckpointer``, restore
with a target of ``jax.ShapeDtypeStruct`` leaves made from ``opt.init`` (so that the
NamedTuple states come back as themselves), assign. The 8-device cases (a sharded
Trainer restored onto its mesh) are in tests/distributed/orbax_cases.py.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import make_params

import gradtx

LEARNERS = {
    "adam": lambda: gradtx.adam(1e-2),
    "adam, bf16 state": lambda: gradtx.adam(1e-2, state_dtype=jnp.bfloat16),
    "clip + injected adam": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(0.5), gradtx.inject_hyperparams(gradtx.adam)(learning_rate=1e-2)
    ),
    # PartitionState of MaskedStates, whose moments hold None for the other group's leaves.
    "partition": lambda: gradtx.partition(
        {"adam": gradtx.adam(1e-2), "sgd": gradtx.sgd(0.05, momentum=0.9)},
        lambda params: jax.tree.map(lambda x: "adam" if x.ndim > 1 else "sgd", params),
    ),
    "noisy_sgd": lambda: gradtx.noisy_sgd(0.05, key=0),  # an int32 count and a typed PRNG key
    "sophia": lambda: gradtx.sophia(1e-2, update_interval=2),  # a raw uint32 key; obj_fn
    "schedule_free_adamw": lambda: gradtx.schedule_free_adamw(1e-2, warmup_steps=2),
}
SAVED_AT, MORE = 3, 3  # steps before the checkpoint, steps after it


def abstract(tree):
    """What a fresh process knows of a tree: each leaf's shape, dtype and sharding, no values."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def save(path, tree):
    with ocp.StandardCheckpointer() as checkpointer:  # leaving the block waits for the write
        checkpointer.save(path, tree)


def restore(path, like):
    with ocp.StandardCheckpointer() as checkpointer:
        return checkpointer.restore(path, abstract(like))


def host(x):
    """A leaf's values on the host; a typed PRNG key's as its uint32 key data."""
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.array(x)


def assert_same(restored, expected):
    """The same tree (NamedTuple types included), leaf dtypes and values, bit for bit."""
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    flat = jax.tree_util.tree_flatten_with_path(restored)[0]
    for (path, got), want in zip(flat, jax.tree.leaves(expected), strict=True):
        where = jax.tree_util.keystr(path)
        assert isinstance(got, jax.Array) and got.dtype == want.dtype, (where, type(got), got.dtype)
        np.testing.assert_array_equal(host(got), host(want), err_msg=where)


def _objective(params, t):
    """A quadratic pulled towards a target that moves with the step ``t``."""
    pulls = [jnp.sum((x - 0.1 * t * jnp.sin(jnp.arange(x.size) + i).reshape(x.shape)) ** 2)
             for i, x in enumerate(jax.tree.leaves(params))]  # fmt: skip
    return 0.5 * sum(pulls)


def _learner_step(opt):
    @jax.jit
    def step(params, state, t):
        objective = lambda p: _objective(p, t)  # noqa: E731
        grads = jax.grad(objective)(params)
        updates, state = opt.update(grads, state, params, obj_fn=objective)
        return gradtx.apply_updates(params, updates), state

    return step


@pytest.mark.parametrize("name", LEARNERS)
def test_learner_state_round_trips_and_the_run_resumes_bitwise(name, tmp_path):
    opt = LEARNERS[name]()
    step = _learner_step(opt)
    params = make_params()
    state = opt.init(params)
    for t in range(SAVED_AT):
        params, state = step(params, state, t)
    path = tmp_path / "ckpt"
    save(path, {"params": params, "opt_state": state})
    uninterrupted = params, state
    for t in range(SAVED_AT, SAVED_AT + MORE):
        uninterrupted = step(*uninterrupted, t)

    # A fresh start: params from the model's init, a state from opt.init, as the target.
    fresh = make_params(seed=1)
    restored = restore(path, {"params": fresh, "opt_state": opt.init(fresh)})
    assert_same(restored, {"params": params, "opt_state": state})
    resumed = restored["params"], restored["opt_state"]
    for t in range(SAVED_AT, SAVED_AT + MORE):
        resumed = step(*resumed, t)
    assert_same(resumed, uninterrupted)


def _model_params():
    rng = np.random.default_rng(0)
    return {
        "w": jnp.asarray(rng.normal(size=(6, 4)) / 3, jnp.float32),
        "b": jnp.zeros(4, jnp.float32),
    }


def _loss(params, batch):
    x, y = batch
    return jnp.mean((jnp.tanh(x @ params["w"] + params["b"]) - y) ** 2)


def _batches(count=SAVED_AT + MORE):
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(count, 16, 6)).astype(np.float32)
    return [(x, np.sin(x[:, :4]).astype(np.float32)) for x in xs]


def _trainer(name):
    return gradtx.Trainer(_loss, LEARNERS[name](), _model_params(), progress=False)


@pytest.mark.parametrize("name", ["clip + injected adam", "noisy_sgd", "schedule_free_adamw"])
def test_trainer_saves_asynchronously_while_it_trains_and_resumes_bitwise(name, tmp_path):
    data = _batches()
    trainer = _trainer(name)
    trainer.fit(data[:SAVED_AT])
    if name == "clip + injected adam":
        trainer.set_learning_rate(3e-2)  # a changed hyperparameter is part of the state
    saved = {"params": trainer.params, "opt_state": trainer.opt_state}
    at_save = jax.tree.map(lambda x: x.copy(), saved)
    checkpointer = ocp.StandardCheckpointer()  # saves in a background thread
    checkpointer.save(tmp_path / "ckpt", saved)
    trainer.fit(data[SAVED_AT:])  # training goes on while the checkpoint is written
    checkpointer.wait_until_finished()
    checkpointer.close()

    resumed = _trainer(name)  # a fresh Trainer: its opt.init state is the restore target
    restored = restore(
        tmp_path / "ckpt", {"params": resumed.params, "opt_state": resumed.opt_state}
    )
    assert_same(restored, at_save)
    resumed.params, resumed.opt_state = restored["params"], restored["opt_state"]
    if name == "clip + injected adam":
        assert resumed.learning_rate == np.float32(3e-2)
    resumed.fit(data[SAVED_AT:])
    assert_same(resumed.params, trainer.params)
    assert_same(resumed.opt_state, trainer.opt_state)
    assert_same(resumed.eval_params, trainer.eval_params)  # schedule-free's average x
    np.testing.assert_array_equal(resumed.history["loss"], trainer.history["loss"][SAVED_AT:])


def test_checkpoint_manager_saves_asynchronously_every_other_step_and_resumes(tmp_path):
    data = _batches(6)
    trainer = _trainer("clip + injected adam")
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=2, max_to_keep=2, enable_async_checkpointing=True
    )
    snapshots = {}
    with ocp.CheckpointManager(tmp_path / "run", options=options) as manager:
        for step, batch in enumerate(data[:5], start=1):
            trainer.step(batch)
            item = {"params": trainer.params, "opt_state": trainer.opt_state}
            if manager.save(step, args=ocp.args.StandardSave(item)):
                snapshots[step] = jax.tree.map(lambda x: x.copy(), item)
        manager.wait_until_finished()
        # The first step is always saved (orbax's InitialSavePolicy); max_to_keep drops it.
        assert sorted(snapshots) == [1, 2, 4] and manager.all_steps() == [2, 4]
        resumed = _trainer("clip + injected adam")
        target = abstract({"params": resumed.params, "opt_state": resumed.opt_state})
        for step in (2, 4):
            restored = manager.restore(step, args=ocp.args.StandardRestore(target))
            assert_same(restored, snapshots[step])
        latest = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(target))
    uninterrupted = _trainer("clip + injected adam")
    uninterrupted.fit(data)
    resumed.params, resumed.opt_state = latest["params"], latest["opt_state"]
    resumed.fit(data[4:])
    assert_same(resumed.params, uninterrupted.params)
    assert_same(resumed.opt_state, uninterrupted.opt_state)
