"""flax linen's TrainState with a gradtx learner: ``apply_gradients`` gives optax's numbers."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from digits import data
from flax.training import train_state

import gradtx


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32)(x))
        return nn.Dense(10)(x)


MODEL = MLP()


def train(tx, steps: int = 20):
    (x, y), _ = data()
    params = MODEL.init(jax.random.key(0), x[:1])["params"]
    state = train_state.TrainState.create(apply_fn=MODEL.apply, params=params, tx=tx)

    @jax.jit
    def step(state, batch):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, batch[0])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    losses = []
    for i in range(steps):
        state, loss = step(state, (x[i * 64 : (i + 1) * 64], y[i * 64 : (i + 1) * 64]))
        losses.append(loss)
    return state, np.asarray(losses)


def leaves_at_paths(tree):
    return {jax.tree_util.keystr(p): x for p, x in jax.tree.leaves_with_path(tree)}


LEARNERS = {
    "adamw": lambda lib: lib.adamw(1e-2, weight_decay=0.1),
    "sgd with momentum, clipped": lambda lib: lib.chain(
        lib.clip_by_global_norm(1.0), lib.sgd(0.1, momentum=0.9)
    ),
}


@pytest.mark.parametrize("name", list(LEARNERS))
def test_train_state_apply_gradients_is_optax_bit_for_bit(name):
    make = LEARNERS[name]
    ours, our_losses = train(make(gradtx))
    theirs, their_losses = train(make(optax))
    assert int(ours.step) == int(theirs.step) == 20
    assert our_losses[-5:].mean() < 0.6 * our_losses[0]  # it trains
    np.testing.assert_array_equal(our_losses, their_losses)
    for part in ("params", "opt_state"):  # every param and every array of optax's state
        ours_flat = leaves_at_paths(getattr(ours, part))
        theirs_flat = leaves_at_paths(getattr(theirs, part))
        assert theirs_flat.keys() <= ours_flat.keys()  # gradtx's sgd also counts its steps
        for path, theirs_leaf in theirs_flat.items():
            np.testing.assert_array_equal(ours_flat[path], theirs_leaf, err_msg=path)


def test_train_state_checkpoints_through_gradtx_state_dict():
    state, _ = train(gradtx.adamw(3e-3, weight_decay=0.1), steps=3)
    fresh = train_state.TrainState.create(
        apply_fn=MODEL.apply, params=jax.tree.map(jnp.zeros_like, state.params), tx=state.tx
    )
    restored = gradtx.load_state_dict(fresh.opt_state, gradtx.state_dict(state.opt_state))
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state.opt_state), strict=True):
        np.testing.assert_array_equal(a, b)
