"""optax 0.2.8's remaining arguments on gradtx's learners and blocks: positions, names,
defaults, state field names and numbers (optax is the oracle)."""

from __future__ import annotations

import inspect

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from conftest import assert_trees_close, grads_at, make_params
from hypothesis import given, settings

import gradtx
from gradtx import recipe


def _decay_only_lists(params):
    """A weight-decay mask: the leaves under "b"-less keys decay (a prefix tree of bools)."""
    return {k: [not k.startswith("b")] * len(v) for k, v in params.items()}


def _mask_tree():
    return _decay_only_lists(make_params())


# name -> (gradtx transform, optax transform), built with the same positional arguments.
CASES = {
    "rmsprop bias_correction": lambda: (
        gradtx.rmsprop(1e-2, 0.9, 1e-8, 0.0, True, False, None, False, True),
        optax.rmsprop(1e-2, 0.9, 1e-8, 0.0, True, False, None, False, True),
    ),
    "rmsprop bias_correction, eps outside, initial scale": lambda: (
        gradtx.rmsprop(1e-2, 0.8, 1e-6, 0.1, False, bias_correction=True),
        optax.rmsprop(1e-2, 0.8, 1e-6, 0.1, False, bias_correction=True),
    ),
    "rmsprop centered bias_correction": lambda: (
        gradtx.rmsprop(1e-2, 0.9, 1e-8, 0.0, True, True, None, False, True),
        optax.rmsprop(1e-2, 0.9, 1e-8, 0.0, True, True, None, False, True),
    ),
    "rmsprop centered nesterov bias_correction": lambda: (
        gradtx.rmsprop(1e-2, 0.9, 1e-8, 0.0, False, True, 0.9, True, True),
        optax.rmsprop(1e-2, 0.9, 1e-8, 0.0, False, True, 0.9, True, True),
    ),
    "rmsprop momentum, scheduled, bias_correction": lambda: (
        gradtx.rmsprop(lambda t: 1e-2 / (1 + t), momentum=0.5, bias_correction=True),
        optax.rmsprop(lambda t: 1e-2 / (1 + t), momentum=0.5, bias_correction=True),
    ),
    "scale_by_rms bias_correction": lambda: (
        gradtx.scale_by_rms(0.9, 1e-8, 0.0, True, True),
        optax.scale_by_rms(0.9, 1e-8, 0.0, True, True),
    ),
    "scale_by_rms bias_correction, eps outside": lambda: (
        gradtx.scale_by_rms(0.99, 1e-8, 0.0, False, True),
        optax.scale_by_rms(0.99, 1e-8, 0.0, False, True),
    ),
    "scale_by_stddev bias_correction": lambda: (
        gradtx.scale_by_stddev(0.9, 1e-8, 0.0, True, True),
        optax.scale_by_stddev(0.9, 1e-8, 0.0, True, True),
    ),
    "scale_by_stddev bias_correction, eps outside, initial scale": lambda: (
        gradtx.scale_by_stddev(0.95, 1e-6, 0.5, False, True),
        optax.scale_by_stddev(0.95, 1e-6, 0.5, False, True),
    ),
    "amsgrad, mu uncorrected": lambda: (
        gradtx.amsgrad(1e-2, 0.9, 0.99, 1e-8, 0.0, None, False, True),
        optax.amsgrad(1e-2, 0.9, 0.99, 1e-8, 0.0, None, False, True),
    ),
    "amsgrad, nu uncorrected": lambda: (
        gradtx.amsgrad(1e-2, 0.9, 0.99, 1e-8, 0.0, None, True, False),
        optax.amsgrad(1e-2, 0.9, 0.99, 1e-8, 0.0, None, True, False),
    ),
    "amsgrad, Reddi et al.'s original": lambda: (
        gradtx.amsgrad(1e-2, bias_correction_mu=False, bias_correction_nu=False),
        optax.amsgrad(1e-2, bias_correction_mu=False, bias_correction_nu=False),
    ),
    "amsgrad, uncorrected, bfloat16 mu": lambda: (
        gradtx.amsgrad(1e-2, 0.9, 0.99, 1e-8, 0.0, jnp.bfloat16, False, False),
        optax.amsgrad(1e-2, 0.9, 0.99, 1e-8, 0.0, jnp.bfloat16, False, False),
    ),
    "scale_by_amsgrad, nu uncorrected": lambda: (
        gradtx.scale_by_amsgrad(0.9, 0.999, 1e-8, 1e-8, None, True, False),
        optax.scale_by_amsgrad(0.9, 0.999, 1e-8, 1e-8, None, True, False),
    ),
    "scale_by_amsgrad, mu uncorrected": lambda: (
        gradtx.scale_by_amsgrad(0.8, 0.99, 1e-8, 0.0, None, False, True),
        optax.scale_by_amsgrad(0.8, 0.99, 1e-8, 0.0, None, False, True),
    ),
    "adadelta, masked weight decay": lambda: (
        gradtx.adadelta(0.5, 0.9, 1e-6, 0.1, _mask_tree()),
        optax.adadelta(0.5, 0.9, 1e-6, 0.1, _mask_tree()),
    ),
    "adadelta, weight decay masked by a function": lambda: (
        gradtx.adadelta(1.0, weight_decay=0.05, weight_decay_mask=_decay_only_lists),
        optax.adadelta(1.0, weight_decay=0.05, weight_decay_mask=_decay_only_lists),
    ),
    "adadelta, every rate optax gives numbers for": lambda: (
        gradtx.adadelta(lambda t: 1.0 / (1 + t), 0.95, 1e-5),
        optax.adadelta(lambda t: 1.0 / (1 + t), 0.95, 1e-5),
    ),
    "adamax by optax's positions": lambda: (
        gradtx.adamax(1e-2, 0.8, 0.99, 1e-7),
        optax.adamax(1e-2, 0.8, 0.99, 1e-7),
    ),
    "adagrad by optax's positions": lambda: (
        gradtx.adagrad(1e-2, 0.2, 1e-6),
        optax.adagrad(1e-2, 0.2, 1e-6),
    ),
    "scale_by_learning_rate(None)": lambda: (
        gradtx.scale_by_learning_rate(),
        optax.scale_by_learning_rate(),
    ),
    "scale_by_learning_rate(None), no sign flip": lambda: (
        gradtx.scale_by_learning_rate(None, flip_sign=False),
        optax.scale_by_learning_rate(None, flip_sign=False),
    ),
}


def _block_states(state):
    """The blocks' ScaleBy* states, in order. The wrappers' states (a mask's, trace's step
    count) are gradtx's own and checked elsewhere."""
    found = []

    def visit(node):
        if isinstance(node, tuple) and type(node).__name__.startswith("ScaleBy"):
            found.append(node)
        elif isinstance(node, tuple | list):
            for child in node:
                visit(child)

    visit(state)
    return found


class SameAsOptaxTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((name, name) for name in CASES))
    def test_fifty_steps_give_optax_numbers_and_state(self, name):
        ours, theirs = CASES[name]()
        update, reference = self.variant(ours.update), self.variant(theirs.update)
        p1 = p2 = make_params()
        s1, s2 = ours.init(p1), theirs.init(p2)
        for t in range(50):
            u1, s1 = update(grads_at(p1, t), s1, p1)
            u2, s2 = reference(grads_at(p2, t), s2, p2)
            p1, p2 = gradtx.apply_updates(p1, u1), optax.apply_updates(p2, u2)
        assert_trees_close(p1, p2, rtol=1e-6)
        # The state optax users read: the same NamedTuples by name and field, the same values.
        ours_states, their_states = _block_states(s1), _block_states(s2)
        assert [(type(x).__name__, x._fields) for x in ours_states] == [
            (type(x).__name__, x._fields) for x in their_states
        ]
        assert_trees_close(
            [tuple(x) for x in ours_states], [tuple(x) for x in their_states], rtol=1e-6
        )


@pytest.mark.parametrize(
    "build, optax_state",
    [
        (lambda: gradtx.scale_by_rms(bias_correction=True), "ScaleByRmsWithCountState"),
        (lambda: gradtx.scale_by_stddev(bias_correction=True), "ScaleByRStdDevWithCountState"),
        (lambda: gradtx.rmsprop(0.1, bias_correction=True), "ScaleByRmsWithCountState"),
    ],
)
def test_a_bias_corrected_state_counts_the_steps_as_optax_does(build, optax_state):
    tx, params = build(), make_params()
    state = tx.init(params)
    assert gradtx.tree.get(state, optax_state).count.dtype == jnp.int32
    for t in range(3):
        _, state = tx.update(grads_at(params, t), state, params)
    assert int(gradtx.tree.get(state, "count")) == 3
    assert optax_state in dir(gradtx)


def test_scale_by_rms_with_bias_correction_is_adam_without_a_first_moment():
    """optax's note: scale_by_rms(b2, eps, 0, False, True) matches scale_by_adam(0, b2, eps)."""
    rms, adam = gradtx.scale_by_rms(0.99, 1e-8, 0.0, False, True), gradtx.scale_by_adam(0.0, 0.99)
    params = make_params()
    s1, s2 = rms.init(params), adam.init(params)
    for t in range(20):
        u1, s1 = rms.update(grads_at(params, t), s1)
        u2, s2 = adam.update(grads_at(params, t), s2)
        assert_trees_close(u1, u2, rtol=1e-5)


def test_only_the_default_settings_keep_the_fused_recipe():
    """A bias correction the kernels do not apply takes the plain path, as mu_dtype does."""
    assert gradtx.is_fused(gradtx.rmsprop(1e-2)) and gradtx.is_fused(gradtx.amsgrad(1e-2))
    assert gradtx.is_fused(gradtx.rmsprop(1e-2, centered=True))
    for learner in (
        gradtx.rmsprop(1e-2, bias_correction=True),
        gradtx.rmsprop(1e-2, centered=True, bias_correction=True),
        gradtx.amsgrad(1e-2, bias_correction_mu=False),
        gradtx.amsgrad(1e-2, bias_correction_nu=False),
    ):
        assert not gradtx.is_fused(learner)
    for block in (
        gradtx.scale_by_rms(bias_correction=True),
        gradtx.scale_by_stddev(bias_correction=True),
        gradtx.scale_by_amsgrad(bias_correction_mu=False),
        gradtx.scale_by_amsgrad(bias_correction_nu=False),
    ):
        assert recipe.recipe_of(block) is None
    tx, params = gradtx.rmsprop(1e-2, bias_correction=True), make_params()
    state, grads = tx.init(params), grads_at(params, 0)
    p1, s1 = gradtx.fused_update(tx, grads, state, params)
    updates, s2 = tx.update(grads, state, params)
    chex.assert_trees_all_equal((p1, s1), (gradtx.apply_updates(params, updates), s2))


def test_adadelta_without_a_rate_is_refused_not_run_uphill():
    """optax.adadelta() skips the learning-rate block, sign flip included: its updates are
    +Delta and climb the loss. gradtx refuses that call and names the rate to pass."""
    params = make_params()
    theirs, grads = optax.adadelta(), grads_at(params, 0)
    updates, _ = theirs.update(grads, theirs.init(params), params)
    descent, _ = optax.adadelta(1.0).update(grads, theirs.init(params), params)
    assert_trees_close(updates, jax.tree.map(jnp.negative, descent))  # optax's step ascends
    with pytest.raises(ValueError, match="adadelta: learning_rate is required.*learning_rate=1.0"):
        gradtx.adadelta()
    with pytest.raises(ValueError, match="adadelta: rho must be in"):  # the blocks check first
        gradtx.adadelta(rho=1.0)


def test_inject_hyperparams_injects_optax_s_numeric_arguments_only():
    """gradtx-only options are keyword-only, so inject_hyperparams does not inject them."""
    params = make_params()
    for name in ("adagrad", "rmsprop", "adamax", "amsgrad", "adadelta"):
        ours = gradtx.inject_hyperparams(getattr(gradtx, name))(learning_rate=0.1).init(params)
        theirs = optax.inject_hyperparams(getattr(optax, name))(learning_rate=0.1).init(params)
        assert sorted(ours.hyperparams) == sorted(theirs.hyperparams), name


OPTAX_SURFACE = (
    ("sgd", "adagrad", "rmsprop", "adam", "nadam", "adamw", "amsgrad", "adamax", "adadelta",
     "lion", "scale_by_rms", "scale_by_stddev", "scale_by_amsgrad", "scale_by_rss",
     "scale_by_adadelta", "scale_by_adamax", "scale_by_adam", "scale_by_learning_rate")
)  # fmt: skip


def _gaps(theirs, ours):
    """What an optax call could get wrong: a missing, moved, re-kinded or re-defaulted
    argument of optax's, or a gradtx argument an optax positional call could reach."""
    their_params = list(inspect.signature(theirs).parameters.values())
    our_params = list(inspect.signature(ours).parameters.values())
    our_names = [p.name for p in our_params]
    gaps = []
    for i, their in enumerate(their_params):
        if their.name not in our_names:
            gaps.append(f"missing {their.name}")
            continue
        j = our_names.index(their.name)
        mine = our_params[j]
        if their.kind is not their.KEYWORD_ONLY and j != i:
            gaps.append(f"{their.name} at {j}, not {i}")
        if mine.kind != their.kind or mine.default != their.default:
            gaps.append(f"{their.name}: {mine.kind} {mine.default!r}")
    their_names = {p.name for p in their_params}
    gaps += [f"{p.name} is positional" for p in our_params
             if p.name not in their_names and p.kind is not p.KEYWORD_ONLY]  # fmt: skip
    return gaps


@pytest.mark.parametrize("name", OPTAX_SURFACE)
def test_the_signature_is_optax_s(name):
    assert _gaps(getattr(optax, name), getattr(gradtx, name)) == []


@pytest.mark.parametrize(
    "name", ["bias_correction", "random_like", "split_key_like", "unwrap_random_key_data"]
)
def test_the_tree_helpers_have_optax_s_signatures_under_both_names(name):
    assert _gaps(getattr(optax.tree, name), getattr(gradtx.tree, name)) == []
    long_name = f"tree_{name}"
    assert _gaps(getattr(optax.tree_utils, long_name), getattr(gradtx.tree_utils, long_name)) == []
    assert long_name in gradtx.tree_utils.__all__ and name in gradtx.tree.__all__


def test_tree_bias_correction_takes_optax_s_keyword():
    moment = make_params()
    count = jnp.asarray(3)
    assert_trees_close(
        gradtx.tree_utils.tree_bias_correction(moment=moment, decay=0.9, count=count),
        optax.tree_utils.tree_bias_correction(moment=moment, decay=0.9, count=count),
    )


SHAPES = st.lists(st.lists(st.integers(0, 4), max_size=3).map(tuple), min_size=1, max_size=5)


@settings(max_examples=25, deadline=None)
@given(shapes=SHAPES, seed=st.integers(0, 2**31 - 1), typed=st.booleans())
def test_random_trees_are_optax_s(shapes, seed, typed):
    target = {f"x{i}": jnp.zeros(shape) for i, shape in enumerate(shapes)}
    key = jax.random.key(seed) if typed else jax.random.PRNGKey(seed)
    ours = gradtx.tree.split_key_like(key, target)
    theirs = optax.tree.split_key_like(key, target)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    chex.assert_trees_all_equal(
        gradtx.tree.unwrap_random_key_data(ours), optax.tree.unwrap_random_key_data(theirs)
    )
    chex.assert_trees_all_equal(
        gradtx.tree.random_like(key, target), optax.tree.random_like(key, target)
    )


def test_random_like_passes_the_dtype_and_takes_a_sampler_without_out_sharding():
    key, target = jax.random.key(1), make_params()
    uniform = lambda k, shape, dtype: jax.random.uniform(k, shape, dtype, -1.0, 1.0)  # noqa: E731
    for sampler, dtype in ((uniform, None), (jax.random.normal, jnp.bfloat16)):
        ours = gradtx.tree_utils.tree_random_like(key, target, sampler, dtype)
        theirs = optax.tree_utils.tree_random_like(key, target, sampler, dtype)
        chex.assert_trees_all_equal(ours, theirs)
    assert {x.dtype for x in jax.tree.leaves(ours)} == {jnp.dtype(jnp.bfloat16)}
    # Different leaves get different keys, so different draws.
    first, second = jax.tree.leaves(gradtx.tree.random_like(key, {"a": jnp.zeros(4),
                                                                 "b": jnp.zeros(4)}))  # fmt: skip
    assert not np.array_equal(first, second)


def test_unwrap_random_key_data_leaves_other_leaves_alone():
    tree = {"key": jax.random.key(0), "x": jnp.arange(3.0), "raw": jax.random.PRNGKey(0)}
    unwrapped = gradtx.tree.unwrap_random_key_data(tree)
    chex.assert_trees_all_equal(unwrapped, optax.tree.unwrap_random_key_data(tree))
    assert unwrapped["key"].dtype == jnp.uint32 and unwrapped["x"] is tree["x"]
