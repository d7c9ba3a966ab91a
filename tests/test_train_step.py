"""make_train_step against hand-written steps."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close

import gradtx


def init_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
        "b": jnp.zeros(3, jnp.float32),
    }


def make_batches(count, n=8, seed=1):
    rng = np.random.default_rng(seed)
    true_w = rng.normal(size=(4, 3))
    batches = []
    for _ in range(count):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        y = (x @ true_w + 0.1 * rng.normal(size=(n, 3))).astype(np.float32)
        batches.append((x, y))
    return batches


def loss_fn(params, batch):
    x, y = batch
    return jnp.mean(jnp.sum((x @ params["w"] + params["b"] - y) ** 2, axis=1))


def loss_with_aux(params, batch):
    x, y = batch
    pred = x @ params["w"] + params["b"]
    return jnp.mean(jnp.sum((pred - y) ** 2, axis=1)), {"mean_pred": jnp.mean(pred)}


def hand_step(opt, params, state, batch, **extra):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, state = opt.update(grads, state, params, **extra)
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])  # noqa: E731
    metrics = {
        "loss": loss,
        "grad_norm": np.linalg.norm(flat(grads)),
        "update_norm": np.linalg.norm(flat(updates)),
    }
    return gradtx.apply_updates(params, updates), state, metrics


LEARNERS = {
    "adamw with injected rate": lambda: gradtx.chain(
        gradtx.clip_by_global_norm(1.0),
        gradtx.inject_hyperparams(gradtx.adamw)(learning_rate=0.05, weight_decay=0.01),
    ),
    "sgd on plateau (reads value)": lambda: gradtx.chain(
        gradtx.sgd(0.05), gradtx.schedules.reduce_on_plateau(factor=0.5, patience=1)
    ),
    "cntk per-sample rate (reads batch_size)": lambda: gradtx.cntk.momentum_sgd(
        gradtx.cntk.learning_rate_schedule(0.01, gradtx.cntk.UnitType.sample),
        gradtx.cntk.momentum_schedule(0.9),
    ),
    "momo (reads value)": lambda: gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.momo()),
    "sophia (reads obj_fn)": lambda: gradtx.sophia(1e-2, update_interval=3),
}
# The extras the hand-written step passes besides value and batch_size.
OBJECTIVE = {"sophia (reads obj_fn)"}


@pytest.mark.parametrize("name", LEARNERS)
def test_train_step_equals_hand_written_step(name):
    opt = LEARNERS[name]()
    step = gradtx.make_train_step(loss_fn, opt, donate=False)
    params = init_params()
    state = opt.init(params)
    ref_params, ref_state = params, state
    for batch in make_batches(12):
        params, state, metrics = step(params, state, batch)
        objective = {"obj_fn": lambda p, b=batch: loss_fn(p, b)} if name in OBJECTIVE else {}
        ref_params, ref_state, ref_metrics = hand_step(
            opt, ref_params, ref_state, batch, value=loss_fn(ref_params, batch), batch_size=8,
            **objective,
        )  # fmt: skip
        for key, value in ref_metrics.items():
            np.testing.assert_allclose(metrics[key], value, rtol=1e-5, err_msg=key)
    assert_trees_close(params, ref_params, rtol=1e-5)
    assert_trees_close(state, ref_state, rtol=1e-5)


def test_train_step_reports_injected_hyperparams_and_aux():
    opt = gradtx.inject_hyperparams(gradtx.sgd)(
        learning_rate=gradtx.schedules.geometric_decay(0.1, 0.5), momentum=0.9
    )
    step = gradtx.make_train_step(loss_with_aux, opt, has_aux=True)
    params, state = init_params(), opt.init(init_params())
    rates = []
    for batch in make_batches(3):
        params, state, metrics = step(params, state, batch)
        rates.append(float(metrics["learning_rate"]))
        assert float(metrics["momentum"]) == pytest.approx(0.9)
        assert set(metrics["aux"]) == {"mean_pred"}
    np.testing.assert_allclose(rates, [0.1, 0.05, 0.025], rtol=1e-6)


def test_train_step_donates_unless_asked_not_to():
    opt = gradtx.adam(1e-2)
    params = init_params()
    kept = gradtx.make_train_step(loss_fn, opt, donate=False)
    kept(params, opt.init(params), make_batches(1)[0])
    assert not params["w"].is_deleted()
    donated = gradtx.make_train_step(loss_fn, opt)
    fresh = jax.tree.map(jnp.array, params)
    donated(fresh, opt.init(fresh), make_batches(1)[0])
    assert fresh["w"].is_deleted()


def test_train_step_rejects_bad_arguments():
    with pytest.raises(TypeError, match="did you forget to call the factory"):
        gradtx.make_train_step(loss_fn, gradtx.adam)
    step = gradtx.make_train_step(loss_fn, gradtx.sgd(0.1), donate=False)
    x, y = make_batches(1)[0]
    params = init_params()
    with pytest.raises(ValueError, match=r"disagree on the number of samples.*\[0\]: 8.*\[1\]: 5"):
        step(params, gradtx.sgd(0.1).init(params), (x, y[:5]))


def test_complex_params_train_and_their_norms_count():
    target = jnp.array([1 + 1j, -2j, 0.5], jnp.complex64)
    params = {"z": jnp.zeros(3, jnp.complex64), "w": jnp.ones(2)}

    def loss(p, batch):
        return jnp.sum(jnp.abs(p["z"] - batch) ** 2) + jnp.sum(p["w"] ** 2)

    opt = gradtx.adam(0.1)
    step = gradtx.make_train_step(loss, opt, donate=False)
    state = opt.init(params)
    grads = jax.grad(loss)(params, target)
    _, _, metrics = step(params, state, target)
    expected = optax.tree.norm(grads)  # optax counts a complex leaf by its moduli
    np.testing.assert_allclose(metrics["grad_norm"], expected, rtol=1e-6)
    manual, _ = opt.update(grads, state, params)
    np.testing.assert_allclose(metrics["update_norm"], optax.tree.norm(manual), rtol=1e-6)


def test_the_norm_metrics_are_optaxs_tree_norm_one_cheap_reduction():
    """Plain float32 sums of squares: inf past float32's range, as optax.tree.norm."""

    def loss(params, scale):
        return jnp.sum(params["w"] * scale) + jnp.sum(jnp.abs(params["z"]) ** 2)

    params = {"w": jnp.ones(3), "z": jnp.asarray([1.0 + 2.0j, -0.5j], jnp.complex64)}
    step = gradtx.make_train_step(loss, gradtx.sgd(1e-40), donate=False)
    opt_state = gradtx.sgd(1e-40).init(params)
    for scale in (2.0, 1e30):
        grads = jax.grad(loss)(params, scale)
        _, _, metrics = step(params, opt_state, jnp.float32(scale))
        np.testing.assert_allclose(metrics["grad_norm"], optax.tree.norm(grads), rtol=1e-6)
    assert np.isinf(metrics["grad_norm"])  # optax's too; clip_by_global_norm's stays finite
    assert np.isfinite(gradtx.tree.global_norm(grads))


def _mse(p, batch):
    return jnp.mean((batch @ p["w"]) ** 2)


@pytest.mark.parametrize(
    ("compression", "match"),
    [
        ("zip", r"make_train_step: compression's scheme must be one of 'bf16'.*got 'zip'"),
        ({"threshold": 0.5}, r"compression as a dict needs its scheme under 'type'"),
        ({"type": "2bit", "treshold": 0.5}, r"compression has unknown keys \['treshold'\]"),
        ({"type": "2bit", "threshold": 0.0}, r"threshold"),
        ({"type": "2bit", "threshold": -1.0}, r"threshold"),
        ({"type": "int8", "threshold": 0.5}, r"threshold applies to scheme '2bit' only"),
        (3, r"compression must be a scheme name"),
        ({"type": "powersgd", "rank": 0}, r"powersgd_mean: rank must be a positive integer"),
        ({"type": "powersgd", "rank": 1.5}, r"powersgd_mean: rank must be"),
        ({"type": "powersgd", "start_step": -1}, r"start_step must be an integer >= 0"),
        ({"type": "powersgd", "min_compression_rate": 0}, r"min_compression_rate"),
        ({"type": "powersgd", "orthogonalization_epsilon": -1e-8}, r"orthogonalization_epsilon"),
        ({"type": "powersgd", "warm_start": "yes"}, r"warm_start must be True or False"),
        ({"type": "powersgd", "threshold": 0.5}, r"unknown keys \['threshold'\]; with type 'po"),
    ],
)
def test_bad_compression_is_refused_naming_it(compression, match):
    mesh = jax.make_mesh((1,), ("data",))
    with pytest.raises(ValueError, match=match):
        gradtx.make_train_step(_mse, gradtx.sgd(0.1), mesh=mesh, compression=compression)


def test_compression_without_a_data_axis_is_refused():
    with pytest.raises(ValueError, match=r"compression exchanges the gradients over a data axis"):
        gradtx.make_train_step(_mse, gradtx.sgd(0.1), compression="int8")
    with pytest.raises(ValueError, match=r"compression exchanges the gradients over a data axis"):
        gradtx.Trainer(_mse, gradtx.sgd(0.1), {"w": jnp.ones((2, 2))}, compression="1bit")
    with pytest.raises(ValueError, match=r"axis_name must name the one data axis"):
        gradtx.make_train_step(_mse, gradtx.sgd(0.1), axis_name=("a", "b"), compression="1bit")


def test_step_init_is_the_optimizers_init_on_one_device():
    step = gradtx.make_train_step(_mse, gradtx.adam(1e-2))
    params = {"w": jnp.ones((2, 2))}
    chex.assert_trees_all_equal(step.init(params), gradtx.adam(1e-2).init(params))
