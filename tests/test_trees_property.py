"""Hypothesis: on random nested trees every learner keeps structure and agrees with optax."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import given, settings
from hypothesis import strategies as st

import gradtx

shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)
leaves = st.tuples(shapes, st.integers(0, 2**16)).map(
    lambda a: jnp.asarray(np.random.default_rng(a[1]).normal(size=a[0]), jnp.float32)
)
trees = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3),
        st.tuples(children, children),
        st.dictionaries(
            st.text("abcxyz", min_size=1, max_size=3), children, min_size=1, max_size=3
        ),
    ),
    max_leaves=6,
)

PAIRS = {
    "sgd": (gradtx.sgd(0.1, momentum=0.9), optax.sgd(0.1, momentum=0.9)),
    "adam": (gradtx.adam(0.1), optax.adam(0.1)),
    "adamw": (gradtx.adamw(0.1), optax.adamw(0.1)),
    "rmsprop": (gradtx.rmsprop(0.1, centered=True), optax.rmsprop(0.1, centered=True)),
    "adagrad": (gradtx.adagrad(0.1), optax.adagrad(0.1)),
    "lion": (gradtx.lion(0.1), optax.lion(0.1)),
}


@settings(max_examples=25, deadline=None)
@given(params=trees, name=st.sampled_from(sorted(PAIRS)))
def test_learners_on_random_trees(params, name):
    ours, theirs = PAIRS[name]
    grads = jax.tree.map(lambda x: jnp.cos(3.0 * x), params)
    s_ours, s_theirs = ours.init(params), theirs.init(params)
    for _ in range(3):
        u_ours, s_ours = ours.update(grads, s_ours, params)
        u_theirs, s_theirs = theirs.update(grads, s_theirs, params)
        chex.assert_trees_all_equal_structs(u_ours, params)
        chex.assert_trees_all_equal_shapes_and_dtypes(u_ours, params)
        chex.assert_trees_all_close(u_ours, u_theirs, rtol=1e-6, atol=1e-7)
    new = gradtx.apply_updates(params, u_ours)
    chex.assert_trees_all_close(new, jax.tree.map(lambda p, u: p + u, params, u_ours))
