"""orbax checkpoints of a Trainer sharded over 8 host devices, run by tests/test_distributed.py.

Saved on the 4x2 mesh (params split over ``model`` by mesh_cases.SPECS, the state
sharded like its params), restored onto the mesh with the original shardings
(targets of ``jax.ShapeDtypeStruct(shape, dtype, sharding=...)``) and onto other
layouts; the resumed run equals the uninterrupted one bit for bit.
"""

from __future__ import annotations

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from dist_model import batches, init_params, loss_fn  # tests/distributed
from jax.sharding import NamedSharding, SingleDeviceSharding
from mesh_cases import SPECS, mesh

import gradtx

if jax.device_count() != 8:
    pytest.skip(
        "run with XLA_FLAGS=--xla_force_host_platform_device_count=8", allow_module_level=True
    )

LEARNERS = {
    "adam": lambda: gradtx.adam(1e-2),
    # v_row and v_col are reductions of the split matrices: sharded like the axes they keep.
    "adafactor": lambda: gradtx.adafactor(1e-2, min_dim_size_to_factor=8, momentum=0.9),
    "clip + injected adam": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(0.5), gradtx.inject_hyperparams(gradtx.adam)(learning_rate=1e-2)
    ),
    "partition": lambda: gradtx.partition(
        {"w": gradtx.adam(1e-2), "b": gradtx.sgd(0.05, momentum=0.9)},
        lambda params: {k: k[0] for k in params},
    ),
    "noisy_sgd": lambda: gradtx.noisy_sgd(0.05, key=0),  # a replicated typed PRNG key
    "schedule_free_adamw": lambda: gradtx.schedule_free_adamw(1e-2, warmup_steps=2),
}
SAVED_AT, MORE = 3, 3


def abstract(tree, shardings=None):
    """Restore targets: each leaf's shape and dtype, placed by ``shardings`` (default: its own)."""
    shardings = jax.tree.map(lambda x: x.sharding, tree) if shardings is None else shardings
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def host(x):
    if jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key):
        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


def assert_same(restored, expected, shardings=None):
    """Tree (NamedTuple types included), dtypes, values bit for bit, and each leaf's sharding."""
    assert jax.tree.structure(restored) == jax.tree.structure(expected)
    shardings = jax.tree.map(lambda x: x.sharding, expected) if shardings is None else shardings
    flat = jax.tree_util.tree_flatten_with_path(restored)[0]
    leaves = zip(flat, jax.tree.leaves(expected), jax.tree.leaves(shardings), strict=True)
    for (path, got), want, sharding in leaves:
        where = jax.tree_util.keystr(path)
        assert got.dtype == want.dtype, (where, got.dtype, want.dtype)
        assert got.sharding.is_equivalent_to(sharding, got.ndim), (where, got.sharding, sharding)
        np.testing.assert_array_equal(host(got), host(want), err_msg=where)


def sharded_trainer(name, m):
    return gradtx.Trainer(
        loss_fn, LEARNERS[name](), init_params(), progress=False, mesh=m, param_specs=SPECS
    )


def state(trainer):
    return {"params": trainer.params, "opt_state": trainer.opt_state}


@pytest.mark.parametrize("name", LEARNERS)
def test_sharded_trainer_restores_onto_its_mesh_and_resumes_bitwise(name, tmp_path):
    m, data = mesh(), batches(SAVED_AT + MORE)
    trainer = sharded_trainer(name, m)
    trainer.fit(data[:SAVED_AT])
    saved = state(trainer)
    at_save = jax.tree.map(lambda x: x.copy(), saved)  # copies keep their shardings
    for key, spec in SPECS.items():  # the params really are split as SPECS says
        assert saved["params"][key].sharding.is_equivalent_to(NamedSharding(m, spec), 2)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", saved)  # in the background, while training goes on
    trainer.fit(data[SAVED_AT:])
    checkpointer.wait_until_finished()
    checkpointer.close()

    resumed = sharded_trainer(name, m)  # its params and opt.init state give the targets
    with ocp.StandardCheckpointer() as checkpointer:
        restored = checkpointer.restore(tmp_path / "ckpt", abstract(state(resumed)))
    assert_same(restored, at_save)
    split = [
        x for x in jax.tree.leaves(restored["opt_state"]) if not x.sharding.is_fully_replicated
    ]
    assert bool(split) == (name != "noisy_sgd")  # the moments came back split like their params
    resumed.params, resumed.opt_state = restored["params"], restored["opt_state"]
    resumed.fit(data[SAVED_AT:])
    assert_same(state(resumed), state(trainer))
    np.testing.assert_array_equal(resumed.history["loss"], trainer.history["loss"][SAVED_AT:])


def test_a_mesh_checkpoint_restores_onto_one_device_and_onto_zero_shardings(tmp_path):
    m = mesh()
    trainer = sharded_trainer("adam", m)
    trainer.fit(batches(SAVED_AT))
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "ckpt", state(trainer))
    one = jax.tree.map(lambda x: SingleDeviceSharding(jax.devices()[0]), state(trainer))
    zero = {
        "params": jax.tree.map(lambda x: x.sharding, trainer.params),
        "opt_state": gradtx.training.zero_shardings(trainer.opt_state, m, "data"),
    }
    assert zero["opt_state"][0].mu["w1"].spec[0] == "data"  # the moments split over data too
    with ocp.StandardCheckpointer() as checkpointer:
        for shardings in (one, zero):
            target = abstract(state(trainer), shardings)
            restored = checkpointer.restore(tmp_path / "ckpt", target)
            assert_same(restored, state(trainer), shardings)
