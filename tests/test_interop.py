"""gradtx and optax compose both ways; gradtx learners drive flax.nnx models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from conftest import assert_trees_close, make_params, run

import gradtx


def test_gradtx_learner_inside_optax_chain():
    ours = optax.chain(optax.clip_by_global_norm(1.0), gradtx.adam(1e-2))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    params = make_params()
    assert_trees_close(run(ours, params), run(theirs, params))
    assert_trees_close(run(ours, params, update=jax.jit(ours.update)), run(theirs, params))


def test_optax_learner_inside_gradtx_chain():
    ours = gradtx.chain(gradtx.clip_by_global_norm(1.0), optax.adam(1e-2), gradtx.clip(5e-3))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2), optax.clip(5e-3))
    params = make_params()
    assert_trees_close(run(ours, params, update=jax.jit(ours.update)), run(theirs, params))


def test_chain_forwards_extras_only_to_members_that_accept_them():
    seen = {}

    def reads_batch_size(updates, params, *, batch_size):
        seen["batch_size"] = batch_size
        return jax.tree.map(lambda g: g / batch_size, updates)

    def extra_args_update(updates, state, params=None, **extra_args):
        seen["optax_extra"] = dict(extra_args)
        return updates, state

    optax_with_extras = optax.GradientTransformationExtraArgs(
        lambda p: optax.EmptyState(), extra_args_update
    )
    opt = gradtx.chain(
        optax.scale(2.0),  # plain optax: update(updates, state, params) takes no extras
        gradtx.stateless(reads_batch_size),
        optax_with_extras,
        gradtx.adam(0.1),  # gradtx: accepts and ignores unknown extras
    )
    params = {"w": jnp.ones(3)}
    updates, _ = opt.update(
        {"w": jnp.full(3, 4.0)}, opt.init(params), params, batch_size=4, value=1.5
    )
    assert seen["batch_size"] == 4
    assert seen["optax_extra"] == {"batch_size": 4, "value": 1.5}
    expected, _ = optax.adam(0.1).update({"w": jnp.full(3, 2.0)}, optax.adam(0.1).init(params))
    assert_trees_close(updates, expected)


def test_gradtx_transform_receives_extras_from_optax_chain_as_plain_call():
    # optax.chain calls members without extras unless they declare support; ours still run.
    opt = optax.chain(gradtx.scale_by_adam(), gradtx.scale_by_learning_rate(0.1))
    params = make_params()
    assert_trees_close(run(opt, params), run(optax.adam(0.1), params))


def test_flax_nnx_optimizer_with_gradtx_adam():
    from flax import nnx

    def train(tx, steps=5):
        model = nnx.Linear(4, 2, rngs=nnx.Rngs(0))
        optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
        x = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
        y = jnp.ones((3, 2))

        @nnx.jit
        def step(model, optimizer):
            loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(x) - y) ** 2))(model)
            optimizer.update(model, grads)
            return loss

        losses = [float(step(model, optimizer)) for _ in range(steps)]
        return losses, nnx.state(model, nnx.Param)

    ours_losses, ours = train(gradtx.adam(0.05))
    theirs_losses, theirs = train(optax.adam(0.05))
    assert ours_losses[-1] < ours_losses[0]
    assert_trees_close(jax.tree.leaves(ours), jax.tree.leaves(theirs))
