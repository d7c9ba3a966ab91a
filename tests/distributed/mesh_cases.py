"""Multi-device cases, run by tests/test_distributed.py in a process with 8 host devices.

Not collected by the main run (the name does not start with ``test_``): JAX fixes
its device count at import, so these need their own process.
"""

from __future__ import annotations

import itertools
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from dist_model import batches, init_params, loss_fn  # tests/distributed
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import gradtx
from gradtx import torch_optim

if jax.device_count() != 8:
    pytest.skip(
        "run with XLA_FLAGS=--xla_force_host_platform_device_count=8", allow_module_level=True
    )

SPECS = {"w1": P(None, "model"), "b1": P("model"), "w2": P("model", None), "b2": P()}

LEARNERS = {
    "sgd": lambda: gradtx.sgd(0.05, momentum=0.9, nesterov=True),
    "adagrad": lambda: gradtx.adagrad(0.05),
    "rmsprop": lambda: gradtx.rmsprop(1e-3, momentum=0.9, centered=True),
    "adam": lambda: gradtx.adam(1e-2),
    "nadam": lambda: gradtx.nadam(1e-2),
    "adamw": lambda: gradtx.adamw(1e-2, weight_decay=1e-2),
    "amsgrad": lambda: gradtx.amsgrad(1e-2),
    "adamax": lambda: gradtx.adamax(1e-2),
    "adadelta": lambda: gradtx.adadelta(1.0),
    "lion": lambda: gradtx.lion(1e-3, weight_decay=1e-2),
    "adam, bf16 state": lambda: gradtx.adam(1e-2, state_dtype=jnp.bfloat16),
    "clip + adam": lambda: gradtx.chain(gradtx.clip_by_global_norm(0.5), gradtx.adam(1e-2)),
    "packed adamw": lambda: gradtx.packed(gradtx.adamw(1e-2), max_leaf_size=64),
    "apply_if_finite": lambda: gradtx.apply_if_finite(gradtx.adam(1e-2), 3),
    "injected sgd": lambda: gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.05, momentum=0.9),
    "partition": lambda: gradtx.partition(
        {"w": gradtx.adam(1e-2), "b": gradtx.sgd(0.05)},
        lambda params: {k: k[0] for k in params},
    ),
    "lookahead_with_slow_weights": lambda: gradtx.lookahead_with_slow_weights(
        gradtx.adam(1e-2), 5, 0.5
    ),
    "cntk momentum_sgd": lambda: gradtx.cntk.momentum_sgd(
        gradtx.cntk.learning_rate_schedule(0.002, gradtx.cntk.UnitType.sample),
        gradtx.cntk.momentum_as_time_constant_schedule(100),
    ),
    "cntk fsadagrad": lambda: gradtx.cntk.fsadagrad(
        gradtx.cntk.learning_rate_schedule(0.002, gradtx.cntk.UnitType.sample),
        gradtx.cntk.momentum_as_time_constant_schedule(100),
    ),
    "cntk adam": lambda: gradtx.cntk.adam(
        gradtx.cntk.learning_rate_schedule(0.01, gradtx.cntk.UnitType.minibatch),
        gradtx.cntk.momentum_schedule(0.9),
    ),
    "accumulate": lambda: gradtx.accumulate(gradtx.adam(1e-2), 2),
    "ema_params": lambda: gradtx.chain(gradtx.adam(1e-2), gradtx.ema_params(0.9)),
    "masked + freeze": lambda: gradtx.chain(
        gradtx.masked(gradtx.adam(1e-2), {"w1": True, "b1": True, "w2": True, "b2": False}),
        gradtx.partition(
            {"train": gradtx.identity(), "frozen": gradtx.set_to_zero()},
            {"w1": "train", "b1": "frozen", "w2": "train", "b2": "train"},
        ),
    ),
    "plateau": lambda: gradtx.chain(
        gradtx.sgd(0.05), gradtx.schedules.reduce_on_plateau(factor=0.5, patience=2)
    ),
    # The optax learners of issue 20.
    "adabelief": lambda: gradtx.adabelief(1e-2),
    # min_dim_size_to_factor=8 factors both matrices: v_row and v_col are reductions
    # of the params (their specs are the param's with an axis dropped), the biases keep
    # a full v; the momentum is params-shaped.
    "adafactor": lambda: gradtx.adafactor(1e-2, min_dim_size_to_factor=8, momentum=0.9),
    "adamaxw": lambda: gradtx.adamaxw(1e-2, weight_decay=1e-2),
    "adan": lambda: gradtx.adan(1e-2, weight_decay=1e-2),
    "fromage": lambda: gradtx.fromage(1e-2),
    "lamb": lambda: gradtx.lamb(1e-2, weight_decay=1e-2),
    "lars": lambda: gradtx.lars(0.5, weight_decay=1e-4),
    # The Trainer's step passes value, grad and value_fn (the loss on the step's batch),
    # so the zoom line search runs on the mesh as on one device.
    "lbfgs": lambda: gradtx.lbfgs(memory_size=4),
    "nadamw": lambda: gradtx.nadamw(1e-2, weight_decay=1e-2),
    # Its state is a count and a typed PRNG key (0-d, replicated); the noise is the same
    # on the mesh because jax_threefry_partitionable draws it independently of sharding.
    "noisy_sgd": lambda: gradtx.noisy_sgd(0.05, key=0),
    "novograd": lambda: gradtx.novograd(1e-2, weight_decay=1e-2),
    "optimistic_adam": lambda: _deprecated(gradtx.optimistic_adam, 1e-2),
    "optimistic_adam_v2": lambda: gradtx.optimistic_adam_v2(1e-2),
    "optimistic_gradient_descent": lambda: gradtx.optimistic_gradient_descent(0.05),
    "polyak_sgd": lambda: gradtx.polyak_sgd(0.5),  # takes the step's value extra
    "radam": lambda: gradtx.radam(1e-2),
    "rprop": lambda: gradtx.rprop(1e-3),
    "sign_sgd": lambda: gradtx.sign_sgd(1e-3),
    "signum": lambda: gradtx.signum(1e-3),
    "sm3": lambda: gradtx.sm3(1e-2),
    "yogi": lambda: gradtx.yogi(1e-2),
    # gradtx.torch_optim (issue 21): torch's buffers, complex views and bias corrections.
    "torch sgd": lambda: torch_optim.sgd(0.05, momentum=0.9, dampening=0.1, weight_decay=1e-3),
    "torch sgd nesterov": lambda: torch_optim.sgd(0.05, momentum=0.9, nesterov=True),
    "torch adam amsgrad": lambda: torch_optim.adam(1e-2, amsgrad=True, weight_decay=1e-3),
    "torch adamw": lambda: torch_optim.adamw(1e-2, weight_decay=1e-2),
    "torch adagrad": lambda: torch_optim.adagrad(0.05, lr_decay=1e-3),
    "torch adamax": lambda: torch_optim.adamax(1e-2),
    "torch adadelta": lambda: torch_optim.adadelta(1.0),
    "torch rmsprop": lambda: torch_optim.rmsprop(1e-3, momentum=0.9, centered=True),
    "torch nadam": lambda: torch_optim.nadam(1e-2, decoupled_weight_decay=True, weight_decay=1e-2),
    "torch radam": lambda: torch_optim.radam(1e-2),
    "torch rprop": lambda: torch_optim.rprop(1e-3),
    "torch asgd": lambda: torch_optim.asgd(0.05, t0=5),
    "torch adafactor": lambda: torch_optim.adafactor(1e-2),
    # The params flattened into one vector, as torch's _gather_flat_grad does.
    "torch lbfgs": lambda: torch_optim.lbfgs(0.5, max_iter=4, history_size=4),
    # optax.contrib's learners (issue 22). Muon's Newton-Schulz multiplies the sharded
    # matrices as they are (XLA inserts the collectives); the biases go to AdamW.
    "muon": lambda: gradtx.muon(1e-2),
    "torch muon": lambda: _matrices_only(torch_optim.muon(1e-2)),
    "schedule_free_adamw": lambda: gradtx.schedule_free_adamw(1e-2, warmup_steps=5),
    "prodigy": lambda: gradtx.prodigy(),
    "dadapt_adamw": lambda: gradtx.dadapt_adamw(),
    "dog": lambda: gradtx.dog(),
    "dowg": lambda: gradtx.dowg(),
    "cocob": lambda: gradtx.cocob(),
    "mechanize": lambda: gradtx.mechanize(gradtx.adam(1e-2)),
    "adopt": lambda: gradtx.adopt(1e-2),
    "ademamix": lambda: gradtx.ademamix(1e-2, weight_decay=1e-2),
    "simplified_ademamix": lambda: gradtx.simplified_ademamix(1e-2),
    "madgrad": lambda: gradtx.madgrad(1e-2),
    # ACProp divides by the spread of g around its mean (a difference of nearby numbers):
    # at optax's eps=1e-16 the mesh's last-bit differences in g grow to 1e-2 in 20 steps.
    "acprop": lambda: gradtx.acprop(1e-2, eps=1e-8, eps_root=1e-8),
    "momo": lambda: gradtx.momo(),  # takes the step's value extra
    "momo_adam": lambda: gradtx.momo_adam(),
    "sam": lambda: gradtx.sam(gradtx.sgd(0.05), gradtx.chain(gradtx.normalize(), gradtx.sgd(0.01))),
    "sophia": lambda: gradtx.sophia(1e-2, update_interval=3),  # takes the obj_fn extra
}
# Learners that keep no params-shaped moment: plain SGD's plateau scaling, the
# stateless (or count-and-key) optax learners, and torch's L-BFGS (one flat vector).
NO_MOMENT = {"plateau", "fromage", "noisy_sgd", "polyak_sgd", "sign_sgd", "torch lbfgs"}


def _matrices_only(learner):
    """torch's Muon takes matrices only: the test model's biases go to SGD."""
    return gradtx.partition(
        {"muon": learner, "sgd": gradtx.sgd(0.05)},
        {"w1": "muon", "b1": "sgd", "w2": "muon", "b2": "sgd"},
    )


def _deprecated(factory, *args, **kwargs):
    with warnings.catch_warnings():  # optimistic_adam warns, as optax's does
        warnings.simplefilter("ignore", DeprecationWarning)
        return factory(*args, **kwargs)


# "i/n": this process runs every n-th learner from the i-th (test_distributed runs the
# cases in n processes side by side, each on one core, so no one of them is the suite's tail).
_INDEX, _COUNT = map(int, os.environ.get("GRADTX_MESH_SHARD", "0/1").split("/"))
SHARD = [name for k, name in enumerate(LEARNERS) if k % _COUNT == _INDEX]


def explicit_loss_fn(params, batch):
    """The same loss written for explicit sharding: the model gathers its hidden layer."""
    x, y = batch
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    h = jax.sharding.reshard(h, P("data", None))
    return jnp.mean((h @ params["w2"] + params["b2"] - y) ** 2)


def mesh(kind=AxisType.Auto):
    return jax.make_mesh((4, 2), ("data", "model"), axis_types=(kind, kind))


def tolerance(name):
    # bfloat16 moments round stochastically: a last-bit difference in a float32 sum
    # can flip a rounding, and 20 Adam steps of 1e-2 then differ by a few 1e-3.
    if "bf16" in name:
        return (0, 5e-3)
    # torch's L-BFGS takes its dot products over one flat vector, which the mesh sums in
    # another order; 80 inner iterations carry that last-bit difference to a few 1e-6.
    return (0, 1e-5) if name == "torch lbfgs" else (1e-5, 1e-6)


def single_device_run(make):
    trainer = gradtx.Trainer(loss_fn, make(), init_params(), progress=False)
    trainer.fit(batches())
    return trainer


def param_shaped(trainer):
    """(state leaf, its param) for every state leaf shaped like a param (shapes are unique)."""
    by_shape = {p.shape: p for p in jax.tree.leaves(trainer.params)}
    assert len(by_shape) == len(jax.tree.leaves(trainer.params))
    return [
        (x, by_shape[x.shape]) for x in jax.tree.leaves(trainer.opt_state) if x.shape in by_shape
    ]


def expected_spec(x, param):
    """The spec of a state leaf ``x`` kept for ``param``; None if its shape relates to no rule.

    A moment shaped like the param has its spec. A reduction of it (Adafactor's
    ``v_row``/``v_col``, SM3's per-axis accumulators, NovoGrad's per-layer scalar) keeps
    the spec of the axes that survive. A stack of them (L-BFGS's memory, a new leading
    axis) is split like the param and whole along the stack.
    """
    spec = tuple(param.sharding.spec) + (None,) * (param.ndim - len(param.sharding.spec))
    if x.shape == param.shape:
        return P(*spec)
    if x.ndim == param.ndim + 1 and x.shape[1:] == param.shape:
        return P(None, *spec)
    candidates = {
        tuple(spec[i] for i in kept)
        for kept in itertools.combinations(range(param.ndim), x.ndim)
        if tuple(param.shape[i] for i in kept) == x.shape
    }
    assert len(candidates) <= 1, (x.shape, param.shape)  # the test's shapes are unambiguous
    return P(*candidates.pop()) if candidates else None


def assert_state_follows_params(trainer):
    """Every moment sharded like its param (or its reduction), everything else replicated.

    A state leaf belongs to the param whose key is on its path (``mu['w1']``,
    ``v_col['w1']``, ``mu['w1'][1]``). A leaf under no param key (a count, a PRNG key, a
    packed buffer) is replicated if it is a scalar, and sharded like the param of its
    shape if it has one (the test's param shapes are unique).
    """
    params = trainer.params
    by_shape = {p.shape: p for p in jax.tree.leaves(params)}
    for path, x in jax.tree_util.tree_flatten_with_path(trainer.opt_state)[0]:
        where = jax.tree_util.keystr(path)
        assert x.sharding.mesh.shape == trainer.mesh.shape, where  # nothing left on one device
        keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey) and k.key in params]
        if keys:
            spec = expected_spec(x, params[keys[-1]])
        elif x.shape in by_shape:
            spec = expected_spec(x, by_shape[x.shape])
        else:
            spec = P() if x.ndim == 0 else None
        if spec is None and keys:  # a placeholder (Adafactor's (1,) fields)
            assert x.sharding.is_fully_replicated, (where, x.shape, x.sharding)
        elif spec is not None:
            want = NamedSharding(trainer.mesh, spec)
            assert x.sharding.is_equivalent_to(want, x.ndim), (where, x.sharding, want)


@pytest.mark.parametrize("name", SHARD)
def test_mesh_4x2_equals_single_device(name):
    make = LEARNERS[name]
    expected = single_device_run(make)
    trainer = gradtx.Trainer(
        loss_fn, make(), init_params(), progress=False, mesh=mesh(), param_specs=SPECS
    )
    assert_state_follows_params(trainer)
    trainer.fit(batches())
    assert_state_follows_params(trainer)
    for key, spec in SPECS.items():
        want = NamedSharding(trainer.mesh, spec)
        assert trainer.params[key].sharding.is_equivalent_to(want, trainer.params[key].ndim)
    rtol, atol = tolerance(name)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol),
        trainer.params,
        expected.params,
    )
    np.testing.assert_allclose(
        trainer.history["loss"], expected.history["loss"], rtol=max(rtol, 1e-5), atol=atol
    )
    # A learner that keeps moments keeps them params-shaped: the checks above saw them.
    assert bool(param_shaped(trainer)) == (name not in NO_MOMENT)


@pytest.mark.parametrize("name", SHARD)
def test_explicit_sharding_raises_no_sharding_type_error(name):
    make = LEARNERS[name]
    expected = gradtx.Trainer(loss_fn, make(), init_params(), progress=False)
    expected.fit(batches(3))
    trainer = gradtx.Trainer(
        explicit_loss_fn,
        make(),
        init_params(),
        progress=False,
        mesh=mesh(AxisType.Explicit),
        param_specs=SPECS,
    )
    trainer.fit(batches(3))
    assert_state_follows_params(trainer)
    rtol, atol = tolerance(name)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol),
        trainer.params,
        expected.params,
    )


def test_zero_style_state_sharding_over_the_data_axis():
    m = mesh()
    replicated = gradtx.Trainer(loss_fn, gradtx.adam(1e-2), init_params(), progress=False, mesh=m)
    zero = gradtx.Trainer(loss_fn, gradtx.adam(1e-2), init_params(), progress=False, mesh=m)
    zero.opt_state = jax.device_put(
        zero.opt_state, gradtx.training.zero_shardings(zero.opt_state, m, "data")
    )

    def per_device_bytes(tree):
        return sum(x.addressable_shards[0].data.nbytes for x in jax.tree.leaves(tree))

    assert per_device_bytes(zero.opt_state) < per_device_bytes(replicated.opt_state) / 3
    replicated.fit(batches())
    zero.fit(batches())
    assert zero.opt_state[0].mu["w1"].sharding.spec[0] == "data"  # the steps kept the split
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        zero.params,
        replicated.params,
    )


@pytest.mark.parametrize("check_vma", [True, False])
def test_shard_map_step_with_axis_name_equals_the_global_step(check_vma):
    m = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    opt = gradtx.chain(gradtx.clip_by_global_norm(0.1), gradtx.adam(1e-2))
    local = gradtx.make_train_step(loss_fn, opt, axis_name="data", donate=False)
    mapped = jax.jit(
        jax.shard_map(
            local,
            mesh=m,
            in_specs=(P(), P(), P("data")),
            out_specs=(P(), P(), P()),
            check_vma=check_vma,
        )
    )
    reference = gradtx.make_train_step(loss_fn, opt, donate=False)
    params = init_params()
    state = opt.init(params)
    ref_params, ref_state = params, state
    with jax.set_mesh(m):
        for batch in batches(5):
            params, state, metrics = mapped(params, state, batch)
            ref_params, ref_state, ref_metrics = reference(ref_params, ref_state, batch)
            for key in ("loss", "grad_norm", "update_norm"):
                np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params, ref_params
    )


def test_apply_if_finite_agrees_across_devices():
    m = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    opt = gradtx.apply_if_finite(gradtx.sgd(0.1), 2, axis_name="data")

    def update(grads, state):
        return opt.update(grads, state)

    mapped = jax.jit(
        jax.shard_map(update, mesh=m, in_specs=(P("data"), P()), out_specs=(P("data"), P()))
    )
    grads = np.ones(16, np.float32)
    grads[3] = np.nan  # only device 1's slice is bad
    with jax.set_mesh(m):
        updates, state = mapped(grads, opt.init(jnp.zeros(16)))
    np.testing.assert_array_equal(updates, np.zeros(16))  # every device skipped
    assert not bool(state.last_finite)
    assert int(state.total_notfinite) == 1
    unguarded = gradtx.apply_if_finite(gradtx.sgd(0.1), 2)  # each device judges its own slice
    mapped = jax.jit(
        jax.shard_map(
            lambda g, s: unguarded.update(g, s),
            mesh=m,
            in_specs=(P("data"), P()),
            out_specs=(P("data"), P()),
            check_vma=False,
        )
    )
    with jax.set_mesh(m):
        updates, _ = mapped(grads, unguarded.init(jnp.zeros(16)))
    assert np.count_nonzero(np.asarray(updates)) == 14  # the other devices stepped: drift


def test_bad_mesh_input():
    m = mesh()
    with pytest.raises(
        ValueError,
        match=r"data_axis 'batch' is not an axis of the mesh; its "
        r"axes are \('data', 'model'\)",
    ):
        gradtx.make_train_step(loss_fn, gradtx.adam(1e-3), mesh=m, data_axis="batch")
    with pytest.raises(ValueError, match=r"param_specs\['w1'\] names mesh axis 'tensor'"):
        gradtx.Trainer(
            loss_fn,
            gradtx.adam(1e-3),
            init_params(),
            mesh=m,
            param_specs={**SPECS, "w1": P("tensor")},
        )
    trainer = gradtx.Trainer(loss_fn, gradtx.adam(1e-3), init_params(), mesh=m, progress=False)
    before = jax.tree.map(np.asarray, trainer.params)
    with pytest.raises(
        ValueError,
        match=r"batch\[0\] has 30 samples, which do not split evenly "
        r"over the 4 devices of mesh axis 'data'",
    ):
        trainer.step(batches(1, size=30)[0])
    jax.tree.map(np.testing.assert_array_equal, before, jax.tree.map(np.asarray, trainer.params))


def test_pmap_step_with_axis_name_equals_the_global_step():
    opt = gradtx.chain(gradtx.clip_by_global_norm(0.1), gradtx.adam(1e-2))
    local = gradtx.make_train_step(loss_fn, opt, axis_name="i", donate=False)
    mapped = jax.pmap(local, axis_name="i", in_axes=(None, None, 0), out_axes=(None, None, None))
    reference = gradtx.make_train_step(loss_fn, opt, donate=False)
    params = init_params()
    state = opt.init(params)
    ref_params, ref_state = params, state
    for x, y in batches(5):
        split = (x.reshape(8, 4, -1), y.reshape(8, 4, -1))
        params, state, metrics = mapped(params, state, split)
        ref_params, ref_state, ref_metrics = reference(ref_params, ref_state, (x, y))
        for key in ("loss", "grad_norm", "update_norm"):
            np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params, ref_params
    )


def test_fused_update_with_explicit_sharding_takes_the_plain_path():
    """A custom call cannot be split over a mesh: split arrays keep XLA's partitioned step."""
    m = mesh(AxisType.Explicit)
    opt = gradtx.adam(1e-2)
    shardings = {k: NamedSharding(m, s) for k, s in SPECS.items()}
    params = jax.device_put(init_params(), shardings)
    grads = jax.tree.map(lambda p: 0.1 * p + 0.01, params)
    with jax.set_mesh(m):
        state = jax.jit(opt.init)(params)
        step = jax.jit(lambda g, s, p: gradtx.fused_update(opt, g, s, p))
        assert "gradtx_adam" not in step.lower(grads, state, params).as_text()
        fused = step(grads, state, params)
        updates, plain_state = jax.jit(opt.update)(grads, state, params)
    plain = (gradtx.apply_updates(params, updates), plain_state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), fused, plain)
    new_params, new_state = fused
    assert new_params["w1"].sharding.spec == P(None, "model")
    assert new_state[0].mu["w1"].sharding.spec == P(None, "model")


MUON_SPECS = {
    "w1": P(None, "model"),
    "b1": P("model"),
    "w2": P("model", None),
    "conv": P(None, None, "model", None),  # (h, w, c_in, c_out): split along c_in
    "b2": P(),
}
SHARD_MAP_MUONS = {
    "muon": lambda specs: gradtx.muon(1e-2, weight_decay=1e-2, param_specs=specs),
    "muon adaptive, consistent rms": lambda specs: gradtx.muon(
        1e-2, adaptive=True, consistent_rms=0.2, param_specs=specs
    ),
    "torch muon": lambda specs: gradtx.partition(
        {
            "muon": torch_optim.muon(1e-2, adjust_lr_fn="match_rms_adamw", param_specs=specs),
            "sgd": gradtx.sgd(0.05),
        },
        {"w1": "muon", "b1": "sgd", "w2": "muon", "conv": "sgd", "b2": "sgd"},
    ),
}


def _muon_params():
    params = dict(init_params())
    params["conv"] = jnp.asarray(np.random.default_rng(2).normal(size=(3, 3, 16, 4)), jnp.float32)
    return params


def _muon_grads(count):
    rng = np.random.default_rng(3)
    return [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), _muon_params())
        for _ in range(count)
    ]


def _shard_mapped_muon_step(opt, m, specs, param_specs):
    """``opt``'s step inside ``shard_map``; its state specs read from an init on the mesh."""
    placed = jax.device_put(_muon_params(), jax.tree.map(lambda s: NamedSharding(m, s), specs))
    state_specs = jax.tree.map(lambda x: x.sharding.spec, jax.jit(opt.init)(placed))

    def step(grads, state, params):
        updates, state = opt.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    return jax.jit(
        jax.shard_map(
            step,
            mesh=m,
            in_specs=(param_specs, state_specs, param_specs),
            out_specs=(param_specs, state_specs),
        )
    )


@pytest.mark.parametrize("name", SHARD_MAP_MUONS)
@pytest.mark.parametrize(
    "layout",
    [
        # One model axis: the two-axis layout below covers it; 20 s of the default run.
        pytest.param(((8,), ("model",), MUON_SPECS), marks=pytest.mark.slow),
        # Both axes of the mesh split one dimension, and a matrix along both of its own.
        (
            (2, 4),
            ("data", "model"),
            {**MUON_SPECS, "w1": P("data", "model"), "w2": P(("data", "model"), None)},
        ),
    ],
    ids=["model8", "data2 x model4"],
)
def test_muon_inside_shard_map_equals_the_single_device_update(name, layout):
    shape, names, specs = layout
    m = jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(names))
    reference = SHARD_MAP_MUONS[name](None)
    opt = SHARD_MAP_MUONS[name](specs)
    mapped = _shard_mapped_muon_step(opt, m, specs, specs)

    @jax.jit
    def reference_step(grads, state, params):
        updates, state = reference.update(grads, state, params)
        return gradtx.apply_updates(params, updates), state

    params = ref_params = _muon_params()
    state, ref_state = opt.init(params), reference.init(params)
    with jax.checking_leaks():
        for grads in _muon_grads(20):
            params, state = mapped(grads, state, params)
            ref_params, ref_state = reference_step(grads, ref_state, ref_params)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), params, ref_params
    )
    assert params["w1"].sharding.spec == specs["w1"]  # the update kept each device's block


def test_muon_inside_shard_map_without_param_specs_says_what_to_pass():
    m = jax.make_mesh((8,), ("model",), axis_types=(AxisType.Auto,))
    params, grads = _muon_params(), _muon_grads(1)[0]
    opt = gradtx.muon(1e-2)
    mapped = _shard_mapped_muon_step(opt, m, MUON_SPECS, MUON_SPECS)
    with pytest.raises(
        ValueError,
        match=r"scale_by_muon: inside shard_map, the update at \['conv'\] differs across mesh "
        r"axes \['model'\], .*pass param_specs=",
    ):
        mapped(grads, opt.init(params), params)
    typo = gradtx.muon(1e-2, param_specs={**MUON_SPECS, "w1": P(None, "modle")})
    mapped = _shard_mapped_muon_step(typo, m, MUON_SPECS, MUON_SPECS)
    with pytest.raises(ValueError, match=r"param_specs\['w1'\] names mesh axis 'modle'"):
        mapped(grads, typo.init(params), params)
