"""equinox models as the params: the equinox loop with gradtx, make_train_step, Trainer, groups."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from digits import data

import gradtx

STEPS = 15


def digits_model(seed: int = 0) -> eqx.nn.MLP:
    return eqx.nn.MLP(64, 10, 32, 1, key=jax.random.key(seed))


def loss_fn(model, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(jax.vmap(model)(x), y).mean()


def batches(n: int = STEPS, size: int = 64) -> list[tuple]:
    (x, y), _ = data()
    return [(x[i * size : (i + 1) * size], y[i * size : (i + 1) * size]) for i in range(n)]


def arrays(model):
    return eqx.filter(model, eqx.is_array)


def equinox_loop(model, opt, steps: int = STEPS):
    """The loop of equinox's docs: filter_value_and_grad, opt.update on the filtered model."""
    state = opt.init(arrays(model))

    @eqx.filter_jit
    def step(model, state, batch):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(model, batch)
        updates, state = opt.update(grads, state, arrays(model))
        return eqx.apply_updates(model, updates), state, loss, optax.tree.norm(grads)

    norms = []
    for batch in batches(steps):
        model, state, _, norm = step(model, state, batch)
        norms.append(norm)
    return model, state, np.asarray(norms)


def assert_trees_equal(ours, theirs, rtol: float = 0.0):
    """Leaf for leaf at the same paths (gradtx's state classes are its own, optax's fields)."""
    paths = lambda tree: [jax.tree_util.keystr(p) for p, _ in jax.tree.leaves_with_path(tree)]  # noqa: E731
    assert paths(ours) == paths(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        if rtol:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-7)
        else:
            np.testing.assert_array_equal(a, b)


def test_the_equinox_loop_with_gradtx_adamw_is_optax_adamw_bit_for_bit():
    model = digits_model()
    ours, our_state, _ = equinox_loop(model, gradtx.adamw(3e-3, weight_decay=0.1))
    theirs, their_state, _ = equinox_loop(model, optax.adamw(3e-3, weight_decay=0.1))
    assert_trees_equal(arrays(ours), arrays(theirs))
    assert_trees_equal(our_state, their_state)
    assert ours.activation is model.activation  # the static part is the model's own


@pytest.mark.parametrize("fused", [False, None])
def test_make_train_step_trains_an_equinox_model_as_the_equinox_loop_does(fused):
    model = digits_model()
    opt = gradtx.adamw(3e-3, weight_decay=0.1)
    step = gradtx.make_train_step(loss_fn, opt, fused=fused)
    ours = jax.tree.map(lambda x: x.copy() if eqx.is_array(x) else x, model)  # step donates
    state = opt.init(arrays(ours))
    norms = []
    for batch in batches():
        ours, state, metrics = step(ours, state, batch)
        norms.append(metrics["grad_norm"])
    theirs, their_state, their_norms = equinox_loop(model, optax.adamw(3e-3, weight_decay=0.1))
    assert isinstance(ours, eqx.nn.MLP) and ours.activation is model.activation
    # Unfused: optax's numbers bit for bit; the fused kernel to float32 rounding (its docs).
    rtol = 0.0 if fused is False else 1e-5
    assert_trees_equal(arrays(ours), arrays(theirs), rtol)
    assert_trees_equal(state, their_state, rtol)
    np.testing.assert_allclose(norms, their_norms, rtol=rtol or 1e-7)


class Scaled(eqx.Module):
    """Every kind of static leaf equinox keeps in a model that is not a static field."""

    body: eqx.nn.Sequential
    scale: float  # a Python float: static, as in equinox
    power: int
    name: str
    squash: object  # a Python callable

    def __call__(self, x):
        return self.squash(self.body(x) * self.scale) ** self.power


def scaled_model(scale: float = 0.5, seed: int = 0) -> Scaled:
    k1, k2 = jax.random.split(jax.random.key(seed))
    body = eqx.nn.Sequential(
        [eqx.nn.Linear(64, 16, key=k1), eqx.nn.Lambda(jax.nn.relu), eqx.nn.Linear(16, 10, key=k2)]
    )
    return Scaled(body, scale, 1, "scaled", jnp.tanh)


def test_static_leaves_stay_put_and_a_step_compiles_once_per_model():
    traces = []

    def counted_loss(model, batch):
        traces.append(type(model).__name__)  # runs when the step is traced, not when it runs
        return loss_fn(model, batch)

    opt = gradtx.sgd(0.1)
    step = gradtx.make_train_step(counted_loss, opt, donate=False)
    model = scaled_model()
    state = opt.init(arrays(model))
    assert jax.tree.structure(state) == jax.tree.structure(opt.init(arrays(model)))
    trained, state, _ = step(model, state, batches(1)[0])
    trained, state, _ = step(trained, state, batches(2)[1])
    # A fresh model with the same architecture and equal static values (a float of its own)
    # compiles nothing new.
    fresh = scaled_model(scale=float("0.5"), seed=1)
    assert fresh.scale is not model.scale
    _, _, metrics = step(fresh, opt.init(arrays(model)), batches(1)[0])
    assert traces == ["Scaled"]
    for name in ("scale", "power", "name", "squash"):
        assert getattr(trained, name) is getattr(model, name)
    assert trained.body.layers[1].fn is jax.nn.relu
    # The same two steps by hand, with the static part closed over.
    grad = jax.grad(lambda a, b: loss_fn(eqx.combine(a, eqx.filter(model, eqx.is_array, True)), b))
    expected = arrays(model)
    for batch in batches(2):
        expected = jax.tree.map(lambda p, g: p - 0.1 * g, expected, grad(expected, batch))
    assert_trees_equal(arrays(trained), expected, rtol=1e-6)
    # Another static value is another program, and its value is the one used.
    other = scaled_model(scale=2.0, seed=1)
    _, _, other_metrics = step(other, opt.init(arrays(other)), batches(1)[0])
    assert traces == ["Scaled", "Scaled"]
    np.testing.assert_allclose(other_metrics["loss"], loss_fn(other, batches(1)[0]), rtol=1e-6)
    assert not np.isclose(other_metrics["loss"], metrics["loss"])


def test_plain_array_trees_keep_their_jitted_step():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    opt = gradtx.adam(1e-2)
    step = gradtx.make_train_step(lambda p, x: jnp.sum((x @ p["w"] + p["b"]) ** 2), opt)
    state = opt.init(params)
    for _ in range(3):
        params, state, _ = step(params, state, jnp.ones((4, 3)))
    assert step._cache_size() == 1  # the jitted step's own cache, as before


def test_params_without_any_array_are_rejected():
    step = gradtx.make_train_step(lambda p, b: p["w"] ** 2, gradtx.sgd(0.1))
    with pytest.raises(TypeError, match=r"make_train_step: params have no array leaf.*float"):
        step({"w": 1.0}, (), jnp.ones(2))
    with pytest.raises(TypeError, match=r"Trainer: params have no array leaf"):
        gradtx.Trainer(lambda p, b: p["w"] ** 2, gradtx.sgd(0.1), {"w": 1.0})


def test_trainer_trains_evaluates_and_checkpoints_an_equinox_model(tmp_path):
    model = digits_model()
    trainer = gradtx.Trainer(loss_fn, gradtx.adamw(3e-3, weight_decay=0.1), model, fused=False)
    summary = trainer.fit(batches(), eval_fn=lambda m: {"train_loss": loss_fn(m, batches(1)[0])})
    theirs, their_state, their_norms = equinox_loop(model, optax.adamw(3e-3, weight_decay=0.1))
    assert isinstance(trainer.params, eqx.nn.MLP)
    assert_trees_equal(arrays(trainer.params), arrays(theirs))
    assert_trees_equal(trainer.opt_state, their_state)
    np.testing.assert_allclose(trainer.history["grad_norm"], their_norms, rtol=1e-6)
    assert summary[0]["train_loss"] == pytest.approx(float(loss_fn(theirs, batches(1)[0])))
    assert_trees_equal(arrays(model), arrays(digits_model()))  # the caller's model is not donated
    path = tmp_path / "mlp.npz"
    trainer.save(path)
    assert "params/.layers[0].weight" in np.load(path).files
    restored = gradtx.Trainer(loss_fn, trainer.optimizer, digits_model(seed=3), fused=False)
    restored.load(path)
    assert restored.params.activation is model.activation
    for t in (trainer, restored):
        t.fit(batches(3))
    assert_trees_equal(arrays(restored.params), arrays(trainer.params))
    assert_trees_equal(restored.opt_state, trainer.opt_state)


def test_trainer_evaluates_a_schedule_free_equinox_model_at_its_average(tmp_path):
    model = digits_model()
    trainer = gradtx.Trainer(loss_fn, gradtx.schedule_free_adamw(3e-3), model, fused=False)
    trainer.fit(batches(10))
    theirs, their_state, _ = equinox_loop(model, optax.contrib.schedule_free_adamw(3e-3), 10)
    expected = optax.contrib.schedule_free_eval_params(their_state, arrays(theirs))
    evaluated = trainer.evaluate(lambda m: m)
    assert isinstance(evaluated, eqx.nn.MLP) and evaluated.activation is model.activation
    assert_trees_equal(arrays(evaluated), expected, rtol=1e-6)
    assert_trees_equal(
        arrays(gradtx.eval_params(trainer.opt_state, trainer.params)), expected, 1e-6
    )
    trainer.save(tmp_path / "sf.npz")
    saved = np.load(tmp_path / "sf.npz")
    np.testing.assert_allclose(
        saved["eval_params/.layers[0].weight"], expected.layers[0].weight, rtol=1e-6
    )


def test_trainer_on_a_mesh_trains_an_equinox_model_as_on_one_device():
    mesh = jax.make_mesh((len(jax.devices()),), ("data",))
    model = digits_model()
    one, meshed = (
        gradtx.Trainer(loss_fn, gradtx.adam(3e-3), model, mesh=m, fused=False) for m in (None, mesh)
    )
    for t in (one, meshed):
        t.fit(batches(5))
    assert isinstance(meshed.params, eqx.nn.MLP) and meshed.params.activation is model.activation
    assert_trees_equal(arrays(meshed.params), arrays(one.params), rtol=1e-5)


def is_weight(model) -> object:
    """True at the weights of every Linear, False at the biases (and at the static leaves)."""
    mask = jax.tree.map(lambda _: False, model)
    weights = lambda m: [layer.weight for layer in m.layers]  # noqa: E731
    return eqx.tree_at(weights, mask, [True] * len(model.layers))


LABELS = {
    "a function of the filtered model": lambda m: jax.tree.map(
        lambda w: "decayed" if w else "plain", is_weight(m)
    ),
    "a tree shaped like the whole model": jax.tree.map(
        lambda w: "decayed" if w else "plain", is_weight(digits_model())
    ),
    "groups_by_path on the model": gradtx.groups_by_path(
        {"**/weight": "decayed"}, digits_model(), default="plain"
    ),
}


@pytest.mark.parametrize("form", list(LABELS))
def test_partition_adamw_weights_and_sgd_biases_as_two_optax_learners_by_hand(form):
    model = digits_model()
    learner = gradtx.partition(
        {"decayed": gradtx.adamw(3e-3, weight_decay=0.1), "plain": gradtx.sgd(0.05)},
        LABELS[form],
    )
    step = gradtx.make_train_step(loss_fn, learner, donate=False, fused=False)
    ours, state = model, learner.init(arrays(model))
    for batch in batches(10):
        ours, state, _ = step(ours, state, batch)
    # By hand: the weights alone (None elsewhere) to optax's adamw, the biases to its sgd.
    mask = is_weight(arrays(model))
    only = lambda tree, keep: jax.tree.map(lambda x, w: x if w == keep else None, tree, mask)  # noqa: E731
    adamw, sgd = optax.adamw(3e-3, weight_decay=0.1), optax.sgd(0.05)

    @eqx.filter_jit  # as the train step is: one program, so XLA rounds alike
    def by_hand(model, w_state, b_state, batch):
        grads, params = eqx.filter_grad(loss_fn)(model, batch), arrays(model)
        w_updates, w_state = adamw.update(only(grads, True), w_state, only(params, True))
        b_updates, b_state = sgd.update(only(grads, False), b_state, only(params, False))
        return eqx.apply_updates(model, eqx.combine(w_updates, b_updates)), w_state, b_state

    theirs = model
    w_state, b_state = adamw.init(only(arrays(model), True)), sgd.init(only(arrays(model), False))
    for batch in batches(10):
        theirs, w_state, b_state = by_hand(theirs, w_state, b_state, batch)
    assert_trees_equal(arrays(ours), arrays(theirs))
    assert_trees_equal(state.inner_states["decayed"].inner_state, w_state)


def test_a_weight_decay_mask_written_for_the_model_is_optax_masks():
    model = digits_model()
    ours, our_state, _ = equinox_loop(
        model, gradtx.adamw(3e-3, weight_decay=0.5, mask=is_weight), 5
    )
    theirs, their_state, _ = equinox_loop(
        model, optax.adamw(3e-3, weight_decay=0.5, mask=is_weight), 5
    )
    assert_trees_equal(arrays(ours), arrays(theirs))
    assert_trees_equal(our_state, their_state)
    unmasked, _, _ = equinox_loop(model, optax.adamw(3e-3, weight_decay=0.5), 5)
    assert not np.array_equal(ours.layers[0].bias, unmasked.layers[0].bias)  # the mask matters
