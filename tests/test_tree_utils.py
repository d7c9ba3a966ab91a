"""gradtx.tree (also gradtx.tree_utils) and gradtx's numerical utilities against optax's."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradtx
from gradtx.testing import pytrees

trees = pytrees(max_leaves=5, allow_none=False)


def same(ours, theirs, rtol=1e-6):
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        assert jnp.result_type(a) == jnp.result_type(b)
        np.testing.assert_allclose(
            np.asarray(a, np.complex128), np.asarray(b, np.complex128), rtol=rtol
        )


def test_every_optax_tree_name_is_here_under_both_of_optax_s_names():
    random = {"random_like", "split_key_like", "unwrap_random_key_data"}  # not provided
    for name in set(dir(optax.tree)) - random:
        if not name.startswith("_") and callable(getattr(optax.tree, name)):
            assert getattr(gradtx.tree, name) is getattr(gradtx.tree, f"tree_{name}"), name
            assert getattr(gradtx.tree_utils, f"tree_{name}") is getattr(gradtx.tree, name)
    assert importlib.import_module("gradtx.tree_utils").tree_get is gradtx.tree.get
    assert gradtx.tree_map_params is gradtx.tree.map_params
    assert set(gradtx.tree.__all__) <= set(dir(gradtx.tree))


@settings(max_examples=12, deadline=None)
@given(trees, st.floats(-3, 3), st.sampled_from([None, 1, 2, jnp.inf, "inf"]), st.booleans())
def test_tree_math_is_optax_s(tree, scalar, ord, squared):  # noqa: A002
    other = jax.tree.map(lambda x: x * 0.5 + 1.0, tree)
    for name in ("add", "sub", "mul", "div", "vdot", "cast_like"):
        same(getattr(gradtx.tree, name)(tree, other), getattr(optax.tree, name)(tree, other))
    same(gradtx.tree.add(tree, other, tree), optax.tree.add(tree, other, tree))
    same(gradtx.tree.scale(scalar, tree), optax.tree.scale(scalar, tree))
    same(gradtx.tree.add_scale(tree, scalar, other), optax.tree.add_scale(tree, scalar, other))
    for name in ("sum", "max", "min", "conj", "real"):
        same(getattr(gradtx.tree, name)(tree), getattr(optax.tree, name)(tree))
    same(gradtx.tree.sum(tree, True), optax.tree.sum(tree, True))
    assert gradtx.tree.size(tree) == optax.tree.size(tree)
    same(gradtx.tree.norm(tree, ord, squared), optax.tree.norm(tree, ord, squared))
    same(gradtx.global_norm(tree), optax.tree.norm(tree))
    same(gradtx.tree.clip(tree, -0.5, 0.7), optax.tree.clip(tree, -0.5, 0.7))
    same(gradtx.tree.clip(tree, max_value=0.1), optax.tree.clip(tree, max_value=0.1))
    for condition in (True, False):
        same(gradtx.tree.where(condition, tree, other), optax.tree.where(condition, tree, other))
    same(gradtx.tree.batch_shape(tree, (2,)), optax.tree.batch_shape(tree, (2,)))
    assert bool(gradtx.tree.allclose(tree, other)) == bool(optax.tree.allclose(tree, other))
    assert bool(gradtx.tree.allclose(tree, tree)) and bool(optax.tree.allclose(tree, tree))
    for dtype in (None, jnp.bfloat16, jnp.int32):
        same(gradtx.tree.zeros_like(tree, dtype), optax.tree.zeros_like(tree, dtype))
        same(gradtx.tree.ones_like(tree, dtype), optax.tree.ones_like(tree, dtype))
        same(gradtx.tree.full_like(tree, scalar, dtype), optax.tree.full_like(tree, scalar, dtype))
        same(gradtx.tree.cast(tree, dtype), optax.tree.cast(tree, dtype))
    same(
        gradtx.tree.update_moment(tree, other, 0.9, 2),
        optax.tree.update_moment(tree, other, 0.9, 2),
    )
    same(
        gradtx.tree.update_moment_per_elem_norm(tree, other, 0.9, 2),
        optax.tree.update_moment_per_elem_norm(tree, other, 0.9, 2),
    )
    same(
        gradtx.tree.update_infinity_moment(tree, other, 0.9, 1e-3),
        optax.tree.update_infinity_moment(tree, other, 0.9, 1e-3),
    )
    count = jnp.asarray(3)
    same(
        gradtx.tree.bias_correction(tree, 0.9, count), optax.tree.bias_correction(tree, 0.9, count)
    )


def test_complex_and_integer_leaves():
    tree = {"z": jnp.array([1 + 2j, 3 - 1j]), "i": jnp.array([1, -4])}
    for name in ("conj", "real", "sum", "size"):
        same(getattr(gradtx.tree, name)(tree), getattr(optax.tree, name)(tree))
    for ord in (None, 1, jnp.inf):  # noqa: A001
        same(gradtx.tree.norm(tree, ord), optax.tree.norm(tree, ord))
    same(gradtx.tree.vdot(tree, tree), optax.tree.vdot(tree, tree))
    same(gradtx.tree.zeros_like(tree, jnp.float32), optax.tree.zeros_like(tree, jnp.float32))
    with pytest.raises(ValueError, match="tree_norm: ord must be None, 1, 2 or inf, got 3"):
        gradtx.tree.norm(tree, 3)
    # The state version refuses what the optax one allows: a real dtype for complex moments.
    with pytest.raises(ValueError, match=r"state_dtype=float32 cannot hold .*\['z'\]"):
        gradtx.tree.state_zeros_like(tree, jnp.float32)


def test_tree_dtype_is_optax_s():
    mixed = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(2), "c": jnp.ones(2, jnp.int32)}
    for handler in ("promote", "highest", "lowest"):
        assert gradtx.tree.dtype(mixed, handler) == optax.tree.dtype(mixed, handler)
    assert gradtx.tree.dtype({"a": jnp.ones(2)}) == optax.tree.dtype({"a": jnp.ones(2)})
    assert gradtx.tree.dtype({}) == optax.tree.dtype({})
    with pytest.raises(ValueError, match=r"Expected dtype=bfloat16 for \['b'\] but got float32"):
        gradtx.tree.dtype(mixed)
    with jax.enable_x64(True), pytest.raises(ValueError, match="neither of int32 and uint32"):
        gradtx.tree.dtype({"a": jnp.ones(2, jnp.int32), "b": jnp.ones(2, jnp.uint32)}, "highest")
    with pytest.raises(ValueError, match="mixed_dtype_handler must be"):
        gradtx.tree.dtype(mixed, "widest")


def _states():
    params = {"w": jnp.ones(3), "b": jnp.zeros(2)}
    sched = optax.linear_schedule(1.0, 0.1, 10)
    yield "adam", lambda lib: lib.adam(0.1), params
    yield "chain", lambda lib: lib.chain(lib.add_noise(1.0, 0.9, 0), lib.scale_by_adam()), params
    yield "injected", lambda lib: lib.inject_hyperparams(lib.sgd)(learning_rate=sched), params
    yield "injected adam", lambda lib: lib.inject_hyperparams(lib.scale_by_adam)(b1=0.8), params


@pytest.mark.parametrize(
    "name,build,params", list(_states()), ids=lambda x: x if isinstance(x, str) else ""
)
def test_get_set_and_get_all_with_path_find_what_optax_finds(name, build, params):
    # Both functions search the same state (optax's, and gradtx's where it has the
    # transforms): the paths and values must be the same.
    libraries = [optax] + ([gradtx] if hasattr(gradtx, "add_noise") or name != "chain" else [])
    for lib in libraries:
        _same_search(build(lib).init(params))


def _same_search(state):
    keys = ["count", "mu", "learning_rate", "b1", "hyperparams", "ScaleByAdamState", "absent"]
    for key in keys:
        ours = gradtx.tree.get_all_with_path(state, key)
        theirs = optax.tree.get_all_with_path(state, key)
        assert [jax.tree_util.keystr(p) for p, _ in ours] == [
            jax.tree_util.keystr(p) for p, _ in theirs
        ]
        assert [str(p[-1]) for p, _ in ours if p] == [str(p[-1]) for p, _ in theirs if p]
        for (_, a), (_, b) in zip(ours, theirs, strict=True):
            assert jax.tree.structure(a) == jax.tree.structure(b)
        if len(theirs) == 1:
            chex_equal(gradtx.tree.get(state, key), optax.tree.get(state, key))
        elif len(theirs) > 1:
            with pytest.raises(KeyError, match="Found multiple values"):
                gradtx.tree.get(state, key)
        else:
            assert gradtx.tree.get(state, key, default="none") == "none"
    arrays = lambda path, value: isinstance(value, jax.Array)  # noqa: E731
    for key in keys[:4]:
        a = gradtx.tree.get_all_with_path(state, key, arrays)
        b = optax.tree.get_all_with_path(state, key, arrays)
        assert [jax.tree_util.keystr(p) for p, _ in a] == [jax.tree_util.keystr(p) for p, _ in b]
        new = {key: jnp.asarray(7.0)}
        if optax.tree.get_all_with_path(state, key):
            chex_equal(gradtx.tree.set(state, **new), optax.tree.set(state, **new))
        if b:
            chex_equal(gradtx.tree.set(state, arrays, **new), optax.tree.set(state, arrays, **new))
    with pytest.raises(KeyError, match="Found no values matching 'absent'"):
        gradtx.tree.set(state, absent=1.0)


def chex_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jnp.issubdtype(jnp.result_type(x), jax.dtypes.prng_key):
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_set_replaces_a_whole_state_by_its_class_name():
    state = optax.adam(0.1).init({"w": jnp.ones(2)})
    fresh = optax.scale_by_adam().init({"w": jnp.full(2, 5.0)})
    chex_equal(
        gradtx.tree.set(state, ScaleByAdamState=fresh),
        optax.tree.set(state, ScaleByAdamState=fresh),
    )
    ours = gradtx.adam(0.1)
    mine = gradtx.tree.set(ours.init({"w": jnp.ones(2)}), mu={"w": jnp.full(2, 3.0)})
    np.testing.assert_array_equal(gradtx.tree.get(mine, "mu")["w"], 3.0)
    assert str(gradtx.tree.NamedTupleKey("ScaleByAdamState", "mu")) == "ScaleByAdamState.mu"


@pytest.mark.parametrize(
    "build",
    [
        lambda lib: lib.adam(0.1),
        lambda lib: lib.sgd(0.1, 0.9),
        lambda lib: lib.chain(lib.clip_by_global_norm(1.0), lib.adamw(0.1)),
        lambda lib: lib.inject_hyperparams(lib.adam)(0.1),
    ],
)
def test_map_params_maps_the_moments_and_leaves_the_rest(build):
    params, specs = {"w": jnp.ones(3), "b": jnp.zeros(2)}, {"w": "w-spec", "b": "b-spec"}
    for opt in (build(gradtx), build(optax)):  # ours over both libraries' states
        state = opt.init(params)
        ours = gradtx.tree.map_params(
            opt, lambda _, s: s, state, specs, transform_non_params=lambda _: "-"
        )
        theirs = optax.tree_utils.tree_map_params(
            opt, lambda _, s: s, state, specs, transform_non_params=lambda _: "-"
        )
        assert ours == theirs
        assert "w-spec" in jax.tree.leaves(ours)
        doubled = gradtx.tree.map_params(opt.init, lambda x: 2 * x + 1, state)
        chex_equal(doubled, optax.tree_utils.tree_map_params(opt.init, lambda x: 2 * x + 1, state))


# --- gradtx.utils -------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(trees, st.floats(0.0, 1.0))
def test_incremental_update_is_optax_s(tree, step_size):
    old = jax.tree.map(jnp.cos, tree)
    same(
        gradtx.incremental_update(tree, old, step_size),
        optax.incremental_update(tree, old, step_size),
    )


def test_periodic_update_copies_every_period_also_when_traced():
    new, old = {"w": jnp.ones(2)}, {"w": jnp.zeros(2)}
    traced = jax.jit(gradtx.periodic_update)
    for steps in range(7):
        expected = optax.periodic_update(new, old, steps, 3)
        chex_equal(gradtx.periodic_update(new, old, steps, 3), expected)
        chex_equal(traced(new, old, jnp.asarray(steps), jnp.asarray(3)), expected)


@pytest.mark.parametrize("scale", [0.0, 1.0, 0.5, -2.0])
def test_scale_gradient_scales_only_the_backward_pass(scale):
    x = {"a": jnp.array([1.0, -2.0]), "b": jnp.array(3.0)}
    loss = lambda f: lambda x: gradtx.tree.sum(jax.tree.map(jnp.square, f(x, scale)))  # noqa: E731
    chex_equal(gradtx.scale_gradient(x, scale), x)
    same(jax.grad(loss(gradtx.scale_gradient))(x), jax.grad(loss(optax.scale_gradient))(x))
    # A traced scale works too (optax's `scale == 1.0` check needs a concrete one).
    traced = jax.jit(
        lambda s: jax.grad(lambda x: jnp.sum(gradtx.scale_gradient(x, s) ** 2))(x["a"])
    )
    np.testing.assert_allclose(traced(scale), 2 * x["a"] * scale)


@pytest.mark.parametrize(
    "x,kwargs",
    [
        (np.array([3.0, 4.0]), {}),
        (np.zeros(3), {}),
        (np.array([[1e-4, 0.0], [3.0, 4.0]]), {"axis": 1}),
        (np.array([[1e-4, 0.0], [3.0, 4.0]]), {"axis": 1, "keepdims": True}),
        (np.array([[1e-4, 0.0], [3.0, 4.0]]), {"ord": 1, "axis": 0}),
        (np.array([[1.0, 2.0], [3.0, 4.0]]), {"ord": "fro"}),
        (np.array([0.0, 1e-3, -2.0]), {"ord": np.inf}),
    ],
)
def test_safe_norm_values_and_gradients_are_optax_s(x, kwargs):
    x = jnp.asarray(x, jnp.float32)
    for min_norm in (0.0, 1e-2, 10.0):
        ours = lambda v, m=min_norm: jnp.sum(gradtx.safe_norm(v, m, **kwargs))  # noqa: E731
        theirs = lambda v, m=min_norm: jnp.sum(optax.safe_norm(v, m, **kwargs))  # noqa: E731
        same(gradtx.safe_norm(x, min_norm, **kwargs), optax.safe_norm(x, min_norm, **kwargs))
        same(jax.grad(ours)(x), jax.grad(theirs)(x))
    grad_at_zero = jax.grad(lambda v: gradtx.safe_norm(v, 1e-6))(jnp.zeros(3))
    np.testing.assert_array_equal(grad_at_zero, 0.0)  # where jnp.maximum(norm, eps) gives NaN
    assert np.isnan(jax.grad(lambda v: jnp.maximum(jnp.linalg.norm(v), 1e-6))(jnp.zeros(3))).all()


@pytest.mark.parametrize(
    "x", [np.array([3.0, 4.0, 0.0, 0.0]), np.zeros(4), np.array([1 + 1j, -2j], np.complex64)]
)
def test_safe_root_mean_squares_values_and_gradients_are_optax_s(x):
    x = jnp.asarray(x)
    for min_rms in (0.0, 1e-3, 5.0):
        same(gradtx.safe_root_mean_squares(x, min_rms), optax.safe_root_mean_squares(x, min_rms))
        if not jnp.iscomplexobj(x):
            same(
                jax.grad(lambda v, m=min_rms: gradtx.safe_root_mean_squares(v, m))(x),
                jax.grad(lambda v, m=min_rms: optax.safe_root_mean_squares(v, m))(x),
            )


def test_global_norm_is_optax_s_and_the_overflow_safe_one_stays():
    big = {"a": jnp.full(3, 1e20, jnp.float32)}
    assert np.isinf(gradtx.global_norm(big)) and np.isinf(optax.tree.norm(big))
    np.testing.assert_allclose(gradtx.tree.global_norm(big), np.sqrt(3) * 1e20, rtol=1e-6)
    # The train step's metric norm skips integer leaves and sums bfloat16 in float32.
    grads = {"w": jnp.full(4, 3.0, jnp.bfloat16), "step": jnp.asarray(5)}
    assert gradtx.tree.metric_norm(grads).dtype == jnp.float32
    np.testing.assert_allclose(gradtx.tree.metric_norm(grads), 6.0)
