"""optax's large-batch and memory-saving learners and gradient operations, against optax.

Adafactor (factored second moments, on rank-2/3/4 leaves and leaves too small to
factor), LAMB, LARS and DP-SGD, and the blocks they are chained from, over 50
steps with and without jit, on real and complex trees; schedules, vmap over the
learning rate, state dtypes, masks, and the errors bad arguments raise.
"""

from __future__ import annotations

import inspect
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from conftest import assert_trees_close, assert_vmap_equals_loop, grads_at, make_params

from gradtx.core import chain
from gradtx.learners.large_batch import adafactor, dpsgd, lamb, lars
from gradtx.transforms import factored as factored_module
from gradtx.transforms.factored import FactoredState, scale_by_factored_rms
from gradtx.transforms.gradient_ops import (
    ZeroNansState,
    adaptive_grad_clip,
    centralize,
    clip_by_block_rms,
    keep_params_nonnegative,
    normalize_by_update_norm,
    unitwise_clip,
    unitwise_norm,
    zero_nans,
)
from gradtx.transforms.private import (
    DifferentiallyPrivateAggregateState,
    differentially_private_aggregate,
    per_example_global_norm_clip,
    per_example_layer_norm_clip,
)
from gradtx.transforms.scaling import scale
from gradtx.transforms.trust_ratio import (
    scale_by_param_block_norm,
    scale_by_param_block_rms,
    scale_by_trust_ratio,
)

STEPS = 50
BATCH = 4  # examples per step for DP-SGD's per-example gradients

# Factored over the two largest axes with min_dim_size_to_factor=3: "matrix", "rank3",
# "rank4", "ties" (two equal largest axes); "small" (second axis 2 < 3), "vector" and
# "scalar" keep full moments.
SHAPES = {
    "matrix": (6, 5),
    "rank3": (3, 7, 5),
    "rank4": (2, 5, 3, 4),
    "ties": (4, 4, 2),
    "small": (2, 3),
    "vector": (7,),
    "scalar": (),
}


def factor_params(seed=0):
    rng = np.random.default_rng(seed)
    return {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in SHAPES.items()}


def complex_params():
    rng = np.random.default_rng(3)
    return {
        "z": jnp.asarray(rng.normal(size=(3, 4)) + 1j * rng.normal(size=(3, 4)), jnp.complex64),
        "y": jnp.asarray(rng.normal(size=(2, 3, 4)) + 1j * rng.normal(size=(2, 3, 4)),
                         jnp.complex64),
        "w": jnp.asarray(rng.normal(size=4), jnp.float32),
    }  # fmt: skip


def complex_grads(p, t):
    """A pull towards 1 + 1j (the conjugate gradient of |p - target|^2, as optax's tests use)."""
    rng = np.random.default_rng([11, t])

    def one(x):
        noise = rng.normal(size=x.shape) + (
            1j * rng.normal(size=x.shape) if x.dtype.kind == "c" else 0
        )
        target = 1 + 1j if x.dtype.kind == "c" else 1.0
        return (x - target) + jnp.asarray(0.1 * noise, x.dtype)

    return jax.tree.map(one, p)


def per_example_grads(p, t):
    """BATCH per-example gradients around :func:`grads_at`: every leaf gains a batch axis 0."""
    rng = np.random.default_rng([7, t])
    mean = grads_at(p, t)
    return jax.tree.map(
        lambda g: (
            g[None] * rng.uniform(0.2, 3.0, (BATCH,) + (1,) * g.ndim).astype(np.float32)
            + rng.normal(size=(BATCH, *g.shape)).astype(np.float32)
        ),
        mean,
    )


def run(opt, params, grads=grads_at, update=None, steps=STEPS, state=None):
    """``steps`` updates of ``opt`` from ``params``; returns (params, state, last updates)."""
    update = update or opt.update
    state = opt.init(params) if state is None else state
    for t in range(steps):
        updates, state = update(grads(params, t), state, params)
        params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)
    return params, state, updates


def then_step(ours, theirs, lr=0.05):
    """A block followed by a plain step, in gradtx and in optax."""
    return (
        lambda: chain(ours(), scale(-lr)),
        lambda: optax.chain(theirs(), optax.scale(-lr)),
    )


def dense_mask(p):
    """A weight-decay mask as a function: only leaves of rank 2 and more."""
    return jax.tree.map(lambda x: x.ndim > 1, p)


MASK = {"dense": [True, False], "conv": [True], "head": [False, True]}  # conftest's tree
TRUST_MASK = {"dense": [True, False], "conv": [True], "head": [True, False]}


def lr_schedule(count):
    return 0.05 * 0.9 ** count.astype(jnp.float32)


def wd_schedule(count):
    return 0.1 / (1.0 + count.astype(jnp.float32))


def capped_decay(step, rate):
    """Zhai et al.'s decay: Adafactor's, capped at 0.9 so the moment keeps moving."""
    return jnp.minimum(1.0 - jnp.asarray(step + 1, jnp.float32) ** (-rate), 0.9)


# name -> (params, gradients, gradtx factory, optax factory); both factories take no arguments.
# Schedules go where optax takes them (learning rates, weight decays); optax's dtype arguments
# (dtype_momentum, and scale_by_adam's mu_dtype and trace's accumulator_dtype, which optax's
# lamb and lars do not pass on) are checked against optax's rounding.
CASES = {
    # Adafactor at optax's defaults: no learning rate, every leaf too small to factor.
    "adafactor_defaults": (make_params, grads_at, adafactor, optax.adafactor),
    "adafactor_factored": (
        factor_params, grads_at,
        lambda: adafactor(0.05, min_dim_size_to_factor=3),
        lambda: optax.adafactor(0.05, min_dim_size_to_factor=3),
    ),
    # Every argument, in optax's positions: schedules, a bfloat16 momentum, a mask function.
    "adafactor_all_arguments": (
        factor_params, grads_at,
        lambda: adafactor(lr_schedule, 3, 0.6, 0, False, 0.5, 0.8, jnp.bfloat16, wd_schedule,
                          1e-20, True, dense_mask),
        lambda: optax.adafactor(lr_schedule, 3, 0.6, 0, False, 0.5, 0.8, jnp.bfloat16,
                                wd_schedule, 1e-20, True, dense_mask),
    ),
    "adafactor_unfactored_mask_tree": (
        make_params, grads_at,
        lambda: adafactor(0.05, 2, momentum=0.9, factored=False, clipping_threshold=None,
                          weight_decay_rate=0.1, weight_decay_mask=MASK),
        lambda: optax.adafactor(0.05, 2, momentum=0.9, factored=False, clipping_threshold=None,
                                weight_decay_rate=0.1, weight_decay_mask=MASK),
    ),
    # optax's lamb has no mu_dtype: its chain of blocks, with scale_by_adam's.
    "lamb_mask_function_mu_dtype": (
        make_params, grads_at,
        lambda: lamb(0.01, weight_decay=0.1, mask=dense_mask, mu_dtype=jnp.bfloat16),
        lambda: optax.chain(
            optax.scale_by_adam(eps=1e-6, mu_dtype=jnp.bfloat16),
            optax.add_decayed_weights(0.1, dense_mask),
            optax.scale_by_trust_ratio(), optax.scale_by_learning_rate(0.01),
        ),
    ),
    "lamb_all_arguments_scheduled": (
        make_params, grads_at,
        lambda: lamb(lr_schedule, 0.8, 0.99, 1e-5, 1e-8, wd_schedule, MASK),
        lambda: optax.lamb(lr_schedule, 0.8, 0.99, 1e-5, 1e-8, wd_schedule, MASK),
    ),
    # optax's lars has no accumulator_dtype: its chain of blocks, with trace's.
    "lars_mask_functions_accumulator_dtype": (
        make_params, grads_at,
        lambda: lars(0.5, 0.01, dense_mask, trust_ratio_mask=dense_mask,
                     accumulator_dtype=jnp.bfloat16),
        lambda: optax.chain(
            optax.add_decayed_weights(0.01, dense_mask),
            optax.masked(optax.scale_by_trust_ratio(trust_coefficient=0.001), dense_mask),
            optax.scale_by_learning_rate(0.5), optax.trace(0.9, accumulator_dtype=jnp.bfloat16),
        ),
    ),
    "lars_all_arguments_scheduled": (
        make_params, grads_at,
        lambda: lars(lr_schedule, wd_schedule, MASK, 0.002, 1e-4, TRUST_MASK, 0.8, True),
        lambda: optax.lars(lr_schedule, wd_schedule, MASK, 0.002, 1e-4, TRUST_MASK, 0.8, True),
    ),
    "dpsgd_nesterov_scheduled": (
        make_params, per_example_grads,
        lambda: dpsgd(lr_schedule, 2.0, 0.3, 7, 0.9, True),
        lambda: optax.contrib.dpsgd(lr_schedule, 2.0, 0.3, 7, 0.9, True),
    ),
    "scale_by_factored_rms_arguments": (
        factor_params, grads_at,
        *then_step(lambda: scale_by_factored_rms(True, 0.5, 0, 3, 1e-3, capped_decay),
                   lambda: optax.scale_by_factored_rms(True, 0.5, 0, 3, 1e-3, capped_decay)),
    ),
    # The gradient operations, several to a chain (one compile for all of them).
    # The gradient operations, several to a chain (one compile for all of them); large
    # steps on non-negative params, so that keep_params_nonnegative binds.
    "zero_nans_centralize_agc_clip_by_block_rms_keep_params_nonnegative": (
        lambda: jax.tree.map(jnp.abs, make_params()), grads_at,
        lambda: chain(zero_nans(), centralize(), adaptive_grad_clip(0.3, 1e-2),
                      clip_by_block_rms(0.7), scale(-0.6), keep_params_nonnegative()),
        lambda: optax.chain(optax.zero_nans(), optax.centralize(),
                            optax.adaptive_grad_clip(0.3, 1e-2), optax.clip_by_block_rms(0.7),
                            optax.scale(-0.6), optax.keep_params_nonnegative()),
    ),
    "trust_ratio_param_block_norm_rms_normalize": (
        make_params, grads_at,
        *then_step(
            lambda: chain(scale_by_trust_ratio(0.5, 0.3, 1e-3), scale_by_param_block_norm(0.5),
                          scale_by_param_block_rms(), normalize_by_update_norm(0.5, 1e-3)),
            lambda: optax.chain(optax.scale_by_trust_ratio(0.5, 0.3, 1e-3),
                                optax.scale_by_param_block_norm(0.5),
                                optax.scale_by_param_block_rms(),
                                optax.normalize_by_update_norm(0.5, 1e-3)),
        ),
    ),
}  # fmt: skip


def _named_states(state):
    """Every NamedTuple in a (chain's) state, by class name, in order."""
    found = {}

    def visit(x):
        if isinstance(x, tuple) and hasattr(x, "_fields"):
            found.setdefault(type(x).__name__, []).append(x)
        if isinstance(x, tuple | list):
            for child in x:
                visit(child)

    visit(state)
    return found


def assert_same_named_states(state, expected_state):
    """The states' NamedTuples of the same class hold optax's values in optax's fields."""
    ours, theirs = _named_states(state), _named_states(expected_state)
    compared = 0
    for name in ours.keys() & theirs.keys() - {"EmptyState", "MaskedState"}:
        assert len(ours[name]) == len(theirs[name]), name
        for mine, expected in zip(ours[name], theirs[name], strict=True):
            for field in set(mine._fields) & set(expected._fields):
                a = jax.tree.map(_key_data, getattr(mine, field))
                b = jax.tree.map(_key_data, getattr(expected, field))
                chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-7)
                compared += 1
    return compared


def _key_data(x):
    return jax.random.key_data(x) if jnp.issubdtype(x.dtype, jax.dtypes.prng_key) else x


def _compare(variant, case):
    """``case`` in gradtx and in optax, both run through ``variant`` (jit or not: optax's own
    jitted and eager runs differ by rounding, which 50 steps grow past 1e-6)."""
    make, grads, ours, theirs = case
    mine, state, updates = run(ours(), make(), grads, variant(ours().update))
    expected, expected_state, _ = run(theirs(), make(), grads, variant(theirs().update))
    assert_trees_close(mine, expected)
    return state, expected_state, updates


class MatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((name, name) for name in CASES))
    def test_fifty_steps(self, name):
        state, expected_state, _ = _compare(self.variant, CASES[name])
        assert_same_named_states(state, expected_state)
        if "dtype" in name or name == "adafactor_all_arguments":  # optax's bfloat16 storage
            narrow = [x for x in jax.tree.leaves(state) if x.dtype == jnp.bfloat16]
            assert narrow and len(narrow) == sum(
                x.dtype == jnp.bfloat16 for x in jax.tree.leaves(expected_state)
            )


def test_factored_state_has_optaxs_fields_and_shapes():
    assert FactoredState._fields == optax.FactoredState._fields
    params = factor_params()
    for kwargs in (dict(min_dim_size_to_factor=3), {}, dict(factored=False)):
        ours = scale_by_factored_rms(**kwargs).init(params)
        theirs = optax.scale_by_factored_rms(**kwargs).init(params)
        assert jax.tree.map(jnp.shape, tuple(ours)) == jax.tree.map(jnp.shape, tuple(theirs))
    state = scale_by_factored_rms(min_dim_size_to_factor=3).init(params)
    # The two largest axes are reduced: v_row drops the largest, v_col the second largest.
    assert state.v_row["rank4"].shape == (2, 3, 4) and state.v_col["rank4"].shape == (2, 5, 3)
    assert state.v_row["rank3"].shape == (3, 5) and state.v_col["rank3"].shape == (3, 7)
    assert state.v["small"].shape == (2, 3) and state.v_row["small"].shape == (1,)
    assert state.v["scalar"].shape == () and state.v_row["scalar"].shape == (1,)


def test_factored_dims_choose_optaxs_axes():
    for shape in [(6, 5), (3, 7, 5), (2, 5, 3, 4), (4, 4, 2), (2, 3), (5,), (), (3, 3, 3, 3)]:
        for minimum in (0, 3, 128):
            expected = optax._src.factorized._factored_dims(shape, True, minimum)
            assert factored_module.factored_dims(shape, True, minimum) == expected
        assert factored_module.factored_dims(shape, False, 0) is None


def test_factored_rms_fine_tuning_offset():
    """step_offset counts from a restored step: the decay restarts where fine-tuning starts."""
    params = factor_params()
    ours = scale_by_factored_rms(step_offset=30, min_dim_size_to_factor=3)
    theirs = optax.scale_by_factored_rms(step_offset=30, min_dim_size_to_factor=3)
    state = ours.init(params)._replace(count=jnp.asarray(30, jnp.int32))
    expected_state = theirs.init(params)._replace(count=jnp.asarray(30, jnp.int32))
    mine, state, _ = run(ours, params, state=state, steps=4)
    expected, expected_state, _ = run(theirs, params, state=expected_state, steps=4)
    assert_trees_close(mine, expected)
    assert_same_named_states(state, expected_state)
    assert int(state.count) == 34


def test_factored_rms_needs_no_params():
    grads = factor_params()
    tx = scale_by_factored_rms(min_dim_size_to_factor=3)
    with_params, _ = jax.jit(tx.update)(grads, tx.init(grads), grads)
    without, _ = jax.jit(tx.update)(grads, tx.init(grads))
    assert_trees_close(with_params, without, rtol=0, atol=0)


def test_factored_state_for_another_tree_names_the_leaf():
    tx = scale_by_factored_rms(min_dim_size_to_factor=3)
    state = tx.init(factor_params())
    other = {**factor_params(), "rank3": jnp.ones((3, 7, 6))}
    with pytest.raises(
        ValueError,
        match=r"v_row .* differ at \['rank3'\]: .* \(3, 6\), state.v_row has shape \(3, 5\)",
    ):
        tx.update(other, state)


# --- Complex leaves -----------------------------------------------------------------------

COMPLEX_CASES = {
    "adafactor": (
        lambda: adafactor(0.05, 3, momentum=0.9, dtype_momentum=None, weight_decay_rate=0.1),
        lambda: optax.adafactor(0.05, 3, momentum=0.9, dtype_momentum=None,
                                weight_decay_rate=0.1),
    ),
    "lamb": (lambda: lamb(0.02, weight_decay=0.1), lambda: optax.lamb(0.02, weight_decay=0.1)),
    "lars": (lambda: lars(0.5, 0.01), lambda: optax.lars(0.5, 0.01)),
    "zero_nans_centralize_agc_clip_by_block_rms": then_step(
        lambda: chain(zero_nans(), centralize(), adaptive_grad_clip(0.1), clip_by_block_rms(0.5)),
        lambda: optax.chain(optax.zero_nans(), optax.centralize(), optax.adaptive_grad_clip(0.1),
                            optax.clip_by_block_rms(0.5)),
    ),
    "trust_ratio_param_block_norm_rms_normalize": then_step(
        lambda: chain(scale_by_trust_ratio(), scale_by_param_block_norm(),
                      scale_by_param_block_rms(), normalize_by_update_norm()),
        lambda: optax.chain(optax.scale_by_trust_ratio(), optax.scale_by_param_block_norm(),
                            optax.scale_by_param_block_rms(), optax.normalize_by_update_norm()),
    ),
}  # fmt: skip


def per_example_complex_grads(p, t):
    return jax.tree.map(lambda x: jnp.stack([x, 0.5 * x, -2.0 * x]), complex_grads(p, t))


class ComplexMatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((name, *pair) for name, pair in COMPLEX_CASES.items()))
    def test_fifty_steps(self, ours, theirs):
        _, _, updates = _compare(self.variant, (complex_params, complex_grads, ours, theirs))
        assert updates["z"].dtype == updates["y"].dtype == jnp.complex64

    def test_dpsgd_fifty_steps(self):
        ours = lambda: dpsgd(0.05, 1.0, 0.5, 3, 0.9)  # noqa: E731
        theirs = lambda: optax.contrib.dpsgd(0.05, 1.0, 0.5, 3, 0.9)  # noqa: E731
        case = (complex_params, per_example_complex_grads, ours, theirs)
        _, _, updates = _compare(jax.jit, case)
        assert updates["z"].dtype == jnp.complex64


def test_complex_second_moments_are_real():
    state = scale_by_factored_rms(min_dim_size_to_factor=3).init(complex_params())
    assert state.v_row["z"].dtype == state.v_col["y"].dtype == jnp.float32
    assert state.v["w"].dtype == jnp.float32


def test_complex_leaves_without_a_rule_name_the_leaf():
    p = complex_params()
    with pytest.raises(ValueError, match=r"keep_params_nonnegative: the leaf at \['y'\]"):
        keep_params_nonnegative().update(p, (), p)
    # optax's float32 momentum would drop the imaginary parts; gradtx names the argument.
    with pytest.raises(ValueError, match=r"adafactor: dtype_momentum=float32 .* \['y'\]"):
        adafactor(0.1, momentum=0.9).init(p)


# --- vmap, state dtypes --------------------------------------------------------------------


def scanned_training(factory, params, per_example=False, steps=8):
    """``value -> params after steps updates of factory(value)``, one ``lax.scan`` (one compile)."""
    rng = np.random.default_rng(5)
    draw = lambda *shape: jnp.asarray(rng.normal(size=(steps, *shape)), jnp.float32)  # noqa: E731
    noise = jax.tree.map(lambda p: draw(*p.shape), params)
    examples = jax.tree.map(lambda p: draw(BATCH, *p.shape), params) if per_example else noise

    def train(value):
        opt = factory(value)

        def step(carry, xs):
            p, state = carry
            grads = jax.tree.map(lambda p, n: 0.5 * p + n, p, xs[0])
            if per_example:
                grads = jax.tree.map(lambda g, e: g[None] + e, grads, xs[1])
            updates, state = opt.update(grads, state, p)
            return (jax.tree.map(lambda p, u: p + u, p, updates), state), None

        (params_out, _), _ = jax.lax.scan(step, (params, opt.init(params)), (noise, examples))
        return params_out

    return train


VMAPPED = {
    # With the learning rate sweep other hyperparameters: Adafactor's decay and clipping,
    # LARS's trust coefficient.
    "adafactor": (
        factor_params, False,
        lambda lr: adafactor(lr, 3, 0.5 + lr, clipping_threshold=0.5 + lr, momentum=0.5),
    ),
    "lamb": (make_params, False, lambda lr: lamb(lr, weight_decay=0.1)),
    "lars": (make_params, False, lambda lr: lars(lr, 0.01, True, lr / 10)),
    "dpsgd": (make_params, True, lambda lr: dpsgd(lr, 1.0, 0.5, 0, 0.9)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(VMAPPED))
def test_vmap_over_hyperparameters(name):
    make, per_example, factory = VMAPPED[name]
    values = np.asarray([0.01, 0.05, 0.3], np.float32)
    assert_vmap_equals_loop(scanned_training(factory, make(), per_example), values)


BF16_STATE = {
    "adafactor": (factor_params, grads_at, lambda d: adafactor(0.05, 3, state_dtype=d)),
    "lamb": (make_params, grads_at, lambda d: lamb(0.01, state_dtype=d)),
    "lars": (make_params, grads_at, lambda d: lars(0.5, state_dtype=d)),
}


@pytest.mark.parametrize("name", sorted(BF16_STATE))
def test_bfloat16_state_runs_close_to_float32(name):
    make, grads, factory = BF16_STATE[name]
    params = make()
    narrow, state, _ = run(
        factory(jnp.bfloat16), params, grads, jax.jit(factory(jnp.bfloat16).update)
    )
    wide, _, _ = run(factory(None), params, grads, jax.jit(factory(None).update))
    moments = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert moments and all(x.dtype == jnp.bfloat16 for x in moments)
    pairs = list(zip(jax.tree.leaves(narrow), jax.tree.leaves(wide), strict=True))
    for a, b in pairs:
        assert a.dtype == jnp.float32
        # The runs drift apart by bfloat16's rounding only: 2% of the params' scale.
        np.testing.assert_allclose(a, b, atol=0.02 * max(1.0, float(np.max(np.abs(b)))))
    assert not all(np.array_equal(a, b) for a, b in pairs)  # the state dtype made a difference


# --- The gradient operations on their own ---------------------------------------------------


def test_zero_nans_matches_optax_on_nans():
    assert ZeroNansState._fields == optax.ZeroNansState._fields
    grads = {"a": jnp.array([1.0, jnp.nan, jnp.inf]), "b": jnp.ones(2),
             "c": jnp.array([1 + 1j, jnp.nan * 1j], jnp.complex64)}  # fmt: skip
    ours, theirs = zero_nans(), optax.zero_nans()
    mine, state = jax.jit(ours.update)(grads, ours.init(grads))
    expected, expected_state = theirs.update(grads, theirs.init(grads))
    assert_trees_close(mine, expected, rtol=0, atol=0)
    assert jax.tree.map(bool, state.found_nan) == {"a": True, "b": False, "c": True}
    assert jax.tree.map(bool, state.found_nan) == jax.tree.map(bool, expected_state.found_nan)
    assert jax.tree.map(bool, ours.init(grads).found_nan) == {"a": False, "b": False, "c": False}


def test_keep_params_nonnegative_lands_on_zero():
    params = {"w": jnp.array([1.0, 0.5, -0.25])}
    updates, _ = keep_params_nonnegative().update({"w": jnp.array([-0.5, -2.0, 0.1])}, (), params)
    np.testing.assert_array_equal(updates["w"], [-0.5, -0.5, 0.25])


def test_unitwise_norm_and_clip_match_optax():
    rng = np.random.default_rng(0)
    for shape in [(), (5,), (1, 5), (4, 3), (2, 3, 4), (3, 3, 2, 4), (2, 2, 2, 3, 4)]:
        x = jnp.asarray(rng.normal(size=shape), jnp.float32)
        np.testing.assert_array_equal(unitwise_norm(x), optax.transforms.unitwise_norm(x))
    x = jnp.asarray(rng.normal(size=(2, 3, 4, 5, 6, 2)), jnp.float32)
    np.testing.assert_array_equal(
        unitwise_norm(x, (0, 5)), optax.transforms.unitwise_norm(x, (0, 5))
    )
    with pytest.raises(ValueError, match="rank-6 .* pass axis="):
        unitwise_norm(x)
    g = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    norm, bound = unitwise_norm(g), jnp.full((4, 3), 1.0)
    np.testing.assert_array_equal(
        unitwise_clip(norm, bound, g), optax.transforms.unitwise_clip(norm, bound, g)
    )


def test_adaptive_grad_clip_axis_matches_optax():
    rng = np.random.default_rng(1)
    params = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)}  # fmt: skip
    grads = jax.tree.map(lambda x: 3.0 * x[::-1], params)
    for axis in (0, 1, (0, 1)):
        ours, theirs = (
            adaptive_grad_clip(0.5, 1e-3, axis),
            optax.adaptive_grad_clip(0.5, 1e-3, axis),
        )
        assert_trees_close(ours.update(grads, (), params)[0], theirs.update(grads, (), params)[0])
    deep = {"k": jnp.ones((1, 2, 1, 2, 1, 2))}
    with pytest.raises(ValueError, match=r"adaptive_grad_clip: the leaf at \['k'\].*rank-6"):
        adaptive_grad_clip(0.5).update(deep, (), deep)


def test_blocks_that_need_params_say_so():
    grads = {"w": jnp.ones(2)}
    for tx in (scale_by_trust_ratio(), scale_by_param_block_norm(), scale_by_param_block_rms(),
               adaptive_grad_clip(0.1), keep_params_nonnegative()):  # fmt: skip
        with pytest.raises(ValueError, match="needs the params"):
            tx.update(grads, tx.init(grads))
    with pytest.raises(ValueError, match=r"scale_by_trust_ratio: .*\['w'\]"):
        scale_by_trust_ratio().update(grads, (), {"w": jnp.ones(3)})


# --- Differential privacy ------------------------------------------------------------------


def test_per_example_clipping_matches_optax():
    rng = np.random.default_rng(2)
    grads = {"a": jnp.asarray(rng.normal(size=(5, 3, 2)), jnp.float32),
             "b": jnp.asarray(rng.normal(size=(5,)), jnp.float32),
             "c": jnp.asarray(rng.normal(size=(5, 2)) + 1j * rng.normal(size=(5, 2)),
                              jnp.complex64)}  # fmt: skip
    doc = [jnp.array([[0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]])]  # optax's doctest, ints
    for tree in (grads, doc):
        for clip in (0.0, 0.5, 1.25, 2.0, jnp.inf):
            chex.assert_trees_all_equal(
                per_example_global_norm_clip(tree, clip),
                optax.per_example_global_norm_clip(tree, clip),
            )
            for uniform in (True, False):
                chex.assert_trees_all_equal(
                    per_example_layer_norm_clip(tree, clip, uniform),
                    optax.per_example_layer_norm_clip(tree, clip, uniform),
                )
    total, clipped = per_example_global_norm_clip(doc, 1.25)
    np.testing.assert_array_equal(total[0], [1.75, 1.75, 1.75])
    assert int(clipped) == 3


def test_per_example_functions_need_a_batch_axis():
    ragged = {"a": jnp.ones((4, 2)), "b": jnp.ones((3,))}
    for f in (per_example_global_norm_clip, per_example_layer_norm_clip):
        with pytest.raises(ValueError, match=r"\['a'\] has 4 examples.*\['b'\] has shape \(3,\)"):
            f(ragged, 1.0)
    with pytest.raises(ValueError, match=r"\['s'\] is a scalar"):
        per_example_global_norm_clip({"s": jnp.ones(())}, 1.0)
    tx = differentially_private_aggregate(1.0, 0.1, 0)
    with pytest.raises(ValueError, match=r"differentially_private_aggregate: .*\['b'\]"):
        tx.update(ragged, tx.init(None))


def test_private_aggregate_keys_are_optaxs():
    assert DifferentiallyPrivateAggregateState._fields == (
        optax.contrib.DifferentiallyPrivateAggregateState._fields
    )
    grads = per_example_grads(make_params(), 0)
    expected, expected_state = optax.contrib.differentially_private_aggregate(
        1.0, 0.5, jax.random.key(9)
    ).update(grads, optax.contrib.differentially_private_aggregate(1.0, 0.5, 9).init(None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a key (typed, raw or an integer) warns of nothing
        txs = [differentially_private_aggregate(1.0, 0.5, k)
               for k in (jax.random.key(9), 9, jax.random.PRNGKey(9))]  # fmt: skip
    with pytest.warns(DeprecationWarning, match="seed is deprecated"):
        txs.append(differentially_private_aggregate(1.0, 0.5, seed=9))
    for tx in txs:
        updates, state = tx.update(grads, tx.init(None))
        assert_trees_close(updates, expected, rtol=0, atol=0)
        np.testing.assert_array_equal(
            jax.random.key_data(state.rng_key), jax.random.key_data(expected_state.rng_key)
        )
    with pytest.warns(UserWarning, match="no key given"):
        default = differentially_private_aggregate(1.0, 0.5)
    np.testing.assert_array_equal(
        jax.random.key_data(default.init(None).rng_key), jax.random.key_data(jax.random.key(0))
    )
    with pytest.raises(ValueError, match="key or seed, not both"):
        differentially_private_aggregate(1.0, 0.5, 1, seed=1)


def test_private_aggregate_noise_has_the_stated_scale():
    """With every example clipped to norm C, the noise is N(0, (sigma C)^2) / B."""
    tx = differentially_private_aggregate(1.0, 2.0, 0)
    grads = {"w": jnp.zeros((10, 20_000))}
    updates, _ = tx.update(grads, tx.init(None))
    np.testing.assert_allclose(np.std(updates["w"]), 2.0 / 10, rtol=0.02)
    np.testing.assert_allclose(np.mean(updates["w"]), 0.0, atol=0.005)


# --- Signatures and bad arguments ---------------------------------------------------------

NAMESAKES = [
    (adafactor, optax.adafactor), (lamb, optax.lamb), (lars, optax.lars),
    (dpsgd, optax.contrib.dpsgd), (scale_by_factored_rms, optax.scale_by_factored_rms),
    (scale_by_trust_ratio, optax.scale_by_trust_ratio),
    (scale_by_param_block_norm, optax.scale_by_param_block_norm),
    (scale_by_param_block_rms, optax.scale_by_param_block_rms),
    (clip_by_block_rms, optax.clip_by_block_rms), (adaptive_grad_clip, optax.adaptive_grad_clip),
    (centralize, optax.centralize), (keep_params_nonnegative, optax.keep_params_nonnegative),
    (zero_nans, optax.zero_nans), (normalize_by_update_norm, optax.normalize_by_update_norm),
    (per_example_global_norm_clip, optax.per_example_global_norm_clip),
    (per_example_layer_norm_clip, optax.per_example_layer_norm_clip),
    (differentially_private_aggregate, optax.contrib.differentially_private_aggregate),
    (unitwise_norm, optax.transforms.unitwise_norm),
    (unitwise_clip, optax.transforms.unitwise_clip),
]  # fmt: skip


@pytest.mark.parametrize("ours,theirs", NAMESAKES, ids=[o.__name__ for o, _ in NAMESAKES])
def test_signature_is_optaxs_then_keyword_only_options(ours, theirs):
    mine = inspect.signature(ours).parameters
    expected = inspect.signature(theirs).parameters
    assert list(mine)[: len(expected)] == list(expected)
    for name, parameter in expected.items():
        assert mine[name].kind == parameter.kind, name
        if name != "decay_rate_fn":  # optax's own private function is the default there
            assert mine[name].default == parameter.default, name
    assert all(p.kind == p.KEYWORD_ONLY for n, p in mine.items() if n not in expected)


BAD = [
    (lambda: adafactor(momentum=1.5), "adafactor: momentum must be in \\[0, 1\\), got 1.5"),
    (lambda: adafactor(clipping_threshold=0.0), "adafactor: clipping_threshold must be in"),
    (lambda: adafactor(eps=-1.0), "adafactor: eps must be in"),
    (lambda: adafactor(decay_rate=-0.5), "adafactor: decay_rate must be in"),
    (lambda: adafactor(decay_offset=float("nan")), "adafactor: decay_offset must be in"),
    (lambda: adafactor(learning_rate=-1.0), "adafactor: learning_rate must be in"),
    (lambda: adafactor(weight_decay_rate=-1.0), "adafactor: weight_decay_rate must be in"),
    (lambda: adafactor(min_dim_size_to_factor=2.5), "adafactor: min_dim_size_to_factor must be"),
    (lambda: adafactor(dtype_momentum=jnp.int32), "adafactor: dtype_momentum must be a floating"),
    (lambda: adafactor(momentum=0.9, dtype_momentum=jnp.int8), "adafactor: dtype_momentum must"),
    (lambda: adafactor(state_dtype=jnp.int32), "adafactor: state_dtype must be a floating"),
    (lambda: scale_by_factored_rms(epsilon=-1.0), "scale_by_factored_rms: epsilon must be in"),
    (lambda: scale_by_factored_rms(min_dim_size_to_factor=-1), "min_dim_size_to_factor must be"),
    (lambda: lamb(0.1, b1=1.0), "lamb: b1 must be in \\[0, 1\\), got 1"),
    (lambda: lamb(0.1, b2=-0.1), "lamb: b2 must be in"),
    (lambda: lamb(0.1, eps=-1e-6), "lamb: eps must be in"),
    (lambda: lamb(0.1, weight_decay=-0.1), "lamb: weight_decay must be in"),
    (lambda: lamb(-0.1), "lamb: learning_rate must be in"),
    (lambda: lamb(0.1, mu_dtype=jnp.bfloat16, state_dtype=jnp.bfloat16), "lamb: give mu_dtype"),
    (lambda: lars(0.1, momentum=1.0), "lars: momentum must be in \\[0, 1\\), got 1"),
    (lambda: lars(0.1, trust_coefficient=-1.0), "lars: trust_coefficient must be in"),
    (lambda: lars(0.1, eps=-1.0), "lars: eps must be in"),
    (lambda: lars(0.1, weight_decay=-1.0), "lars: weight_decay must be in"),
    (lambda: lars(0.1, state_dtype=jnp.int32), "lars: state_dtype must be a floating"),
    (lambda: dpsgd(0.1, 0.0, 1.0, 0), "dpsgd: l2_norm_clip must be in \\(0, inf\\), got 0"),
    (lambda: dpsgd(0.1, 1.0, -1.0, 0), "dpsgd: noise_multiplier must be in"),
    (lambda: dpsgd(-0.1, 1.0, 1.0, 0), "dpsgd: learning_rate must be in"),
    (lambda: dpsgd(0.1, 1.0, 1.0, 0, momentum=1.0), "dpsgd: momentum must be in"),
    (lambda: dpsgd(0.1, 1.0, 1.0, 0, state_dtype=jnp.int32), "dpsgd: state_dtype must be"),
    (lambda: scale_by_trust_ratio(min_norm=-1.0), "scale_by_trust_ratio: min_norm must be in"),
    (lambda: scale_by_trust_ratio(eps=-1.0), "scale_by_trust_ratio: eps must be in"),
    (lambda: scale_by_param_block_norm(-1.0), "scale_by_param_block_norm: min_scale must be"),
    (lambda: scale_by_param_block_rms(-1.0), "scale_by_param_block_rms: min_scale must be"),
    (lambda: clip_by_block_rms(0.0), "clip_by_block_rms: threshold must be in \\(0, inf\\)"),
    (lambda: adaptive_grad_clip(-1.0), "adaptive_grad_clip: clipping must be in"),
    (lambda: adaptive_grad_clip(0.1, -1.0), "adaptive_grad_clip: eps must be in"),
    (lambda: normalize_by_update_norm(jnp.inf), "normalize_by_update_norm: scale_factor must"),
    (lambda: normalize_by_update_norm(1.0, -1.0), "normalize_by_update_norm: eps must be in"),
    (lambda: per_example_global_norm_clip([jnp.ones((2, 1))], -1.0), "l2_norm_clip must be in"),
    (lambda: per_example_layer_norm_clip([jnp.ones((2, 1))], -1.0), "global_l2_norm_clip must"),
    (lambda: differentially_private_aggregate(1.0, -2.0, 0), "noise_multiplier must be in"),
]


@pytest.mark.parametrize("make,match", BAD, ids=[m.split(" must")[0] for _, m in BAD])
def test_bad_hyperparameter_names_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_decay_rate_fn_that_is_not_a_function_is_refused():
    with pytest.raises(TypeError, match="scale_by_factored_rms: decay_rate_fn must be a function"):
        scale_by_factored_rms(decay_rate_fn=0.8)
