"""optax's sign-based, step-size-adapting and other simple learners and their blocks,
against optax 0.2.8 (the oracle): signatures and defaults, 50 steps with and without jit,
complex leaves, schedules, vmap, state dtypes, the loss extra, the noise samples, and the
errors for bad arguments."""

from __future__ import annotations

import functools
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

import gradtx
from gradtx.learners.sign_family import (
    fromage,
    noisy_sgd,
    optimistic_adam,
    optimistic_adam_v2,
    optimistic_gradient_descent,
    polyak_sgd,
    rprop,
    sign_sgd,
    signum,
    sm3,
)
from gradtx.transforms.distance import scale_by_distance_over_gradients
from gradtx.transforms.noise import AddNoiseState, add_noise
from gradtx.transforms.optimistic import scale_by_optimistic_gradient
from gradtx.transforms.polyak import scale_by_polyak
from gradtx.transforms.rprop import ScaleByRpropState, scale_by_rprop
from gradtx.transforms.sign import scale_by_sign
from gradtx.transforms.sm3 import ScaleBySM3State, scale_by_sm3

STEPS = 50

# optimistic_adam warns as optax's does; the tests here build it on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:.*optimistic_adam.*:DeprecationWarning")


def _quiet(factory):
    """``factory`` with the deprecation warnings of optimistic_adam silenced."""

    @functools.wraps(factory)
    def build(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return factory(*args, **kwargs)

    return build


def nested():
    """conftest's nested tree (a scalar leaf included)."""
    return make_params()


def no_scalars():
    """conftest's tree without its scalar leaf: optax's sm3 fails on one."""
    params = make_params()
    params["head"] = params["head"][1:]
    return params


def loss(params):
    """A real loss for Polyak's step, consistent with the gradients (plus an offset)."""
    return 0.25 * sum(jnp.sum(gradtx.tree.abs_sq(p)) for p in jax.tree.leaves(params)) + 0.5


def run(opt, params, update, steps=STEPS, value=False, grads=grads_at):
    """``steps`` updates from ``grads``; the loss is passed as ``value`` where asked."""
    state = opt.init(params)
    for t in range(steps):
        extra = {"value": loss(params)} if value else {}
        updates, state = update(grads(params, t), state, params, **extra)
        params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)
    return params, state


# --- optax's signatures: names, order, kinds and defaults ------------------------------------

NAMESAKES = [
    (sign_sgd, optax.sign_sgd),
    (signum, optax.signum),
    (rprop, optax.rprop),
    (sm3, optax.sm3),
    (polyak_sgd, optax.polyak_sgd),
    (optimistic_gradient_descent, optax.optimistic_gradient_descent),
    (optimistic_adam, optax.optimistic_adam),
    (optimistic_adam_v2, optax.optimistic_adam_v2),
    (fromage, optax.fromage),
    (noisy_sgd, optax.noisy_sgd),
    (scale_by_sign, optax.scale_by_sign),
    (scale_by_rprop, optax.scale_by_rprop),
    (scale_by_sm3, optax.scale_by_sm3),
    (scale_by_polyak, optax.scale_by_polyak),
    (scale_by_optimistic_gradient, optax.scale_by_optimistic_gradient),
    (scale_by_distance_over_gradients, optax.scale_by_distance_over_gradients),
    (add_noise, optax.add_noise),
]


@pytest.mark.parametrize("ours,theirs", NAMESAKES, ids=[f.__name__ for f, _ in NAMESAKES])
def test_optaxs_signature_then_gradtxs_keywords(ours, theirs):
    def described(f):
        return [(p.name, p.kind, p.default) for p in inspect.signature(f).parameters.values()]

    mine, optaxs = described(ours), described(theirs)
    assert mine[: len(optaxs)] == optaxs
    assert all(kind is inspect.Parameter.KEYWORD_ONLY for _, kind, _ in mine[len(optaxs) :])


# --- 50 steps against optax, jit and no jit ------------------------------------------------

# name -> (gradtx transform, optax transform, params, whether update takes the loss). Each
# learner once, with arguments off their defaults where that takes another path; the blocks
# that a learner leaves at its defaults or never reaches.
CASES = {
    "sign_sgd": (lambda: sign_sgd(0.01), lambda: optax.sign_sgd(0.01), nested, False),
    "signum": (lambda: signum(0.01, 0.8), lambda: optax.signum(0.01, 0.8), nested, False),
    "signum, bfloat16 accumulator": (
        lambda: signum(0.01, 0.5, jnp.bfloat16),
        lambda: optax.signum(0.01, 0.5, jnp.bfloat16),
        nested,
        False,
    ),
    "rprop": (
        lambda: rprop(0.01, 0.3, 1.5, 1e-4, 0.05),
        lambda: optax.rprop(0.01, 0.3, 1.5, 1e-4, 0.05),
        nested,
        False,
    ),
    "sm3": (lambda: sm3(0.1, 0.5), lambda: optax.sm3(0.1, 0.5), no_scalars, False),
    "polyak_sgd": (lambda: polyak_sgd(), lambda: optax.polyak_sgd(), nested, True),
    "polyak_sgd, sps+": (
        lambda: polyak_sgd(0.5, 0.8, 0.6, 1e-3, "sps+"),
        lambda: optax.polyak_sgd(0.5, 0.8, 0.6, 1e-3, "sps+"),
        nested,
        True,
    ),
    "optimistic_gradient_descent": (
        lambda: optimistic_gradient_descent(0.05, 0.5, 2.0),
        lambda: optax.optimistic_gradient_descent(0.05, 0.5, 2.0),
        nested,
        False,
    ),
    "optimistic_adam": (
        lambda: _quiet(optimistic_adam)(0.01, 0.05, 0.8, 0.99, 1e-7, 1e-8, nesterov=False),
        lambda: _quiet(optax.optimistic_adam)(0.01, 0.05, 0.8, 0.99, 1e-7, 1e-8, nesterov=False),
        nested,
        False,
    ),
    "optimistic_adam_v2, bfloat16 mu": (
        lambda: optimistic_adam_v2(
            0.01,
            alpha=0.5,
            beta=2.0,
            b1=0.8,
            b2=0.99,
            eps=1e-7,
            eps_root=1e-8,
            mu_dtype=jnp.bfloat16,
        ),
        lambda: optax.optimistic_adam_v2(
            0.01,
            alpha=0.5,
            beta=2.0,
            b1=0.8,
            b2=0.99,
            eps=1e-7,
            eps_root=1e-8,
            mu_dtype=jnp.bfloat16,
        ),
        nested,
        False,
    ),  # fmt: skip
    "fromage": (lambda: fromage(0.05, 1e-3), lambda: optax.fromage(0.05, 1e-3), nested, False),
    "noisy_sgd": (
        lambda: noisy_sgd(0.01, 0.1, 0.3, jax.random.key(5)),
        lambda: optax.noisy_sgd(0.01, 0.1, 0.3, jax.random.key(5)),
        nested,
        False,
    ),
    # Blocks, each followed by a step so that the params move.
    "scale_by_rprop": (
        lambda: gradtx.chain(scale_by_rprop(0.02, 0.4, 1.1, 1e-3, 1.0), gradtx.scale(-1.0)),
        lambda: optax.chain(optax.scale_by_rprop(0.02, 0.4, 1.1, 1e-3, 1.0), optax.scale(-1.0)),
        nested,
        False,
    ),
    "scale_by_sm3, decaying": (
        lambda: gradtx.chain(scale_by_sm3(0.8, 0.9, 1e-6), gradtx.scale(-0.05)),
        lambda: optax.chain(optax.scale_by_sm3(0.8, 0.9, 1e-6), optax.scale(-0.05)),
        no_scalars,
        False,
    ),
    "scale_by_polyak": (
        lambda: gradtx.chain(scale_by_polyak(0.2, 0.5, 1e-4), gradtx.scale(-0.5)),
        lambda: optax.chain(optax.scale_by_polyak(0.2, 0.5, 1e-4), optax.scale(-0.5)),
        nested,
        True,
    ),
    "scale_by_distance_over_gradients": (
        lambda: scale_by_distance_over_gradients(1e-2, 1e-8, jnp.float32, -1.0),
        lambda: optax.scale_by_distance_over_gradients(1e-2, 1e-8, jnp.float32, -1.0),
        no_scalars,  # optax gives a scalar leaf a (1,)-shaped update: tested on its own
        False,
    ),
}


class MatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(name, name) for name in CASES])
    def test_fifty_steps(self, name):
        # optax in the same variant: jit rounds bfloat16 moments (and fuses x + s * y)
        # differently from eager.
        ours, theirs, params, value = CASES[name]
        actual, _ = run(ours(), params(), self.variant(ours().update), value=value)
        expected, _ = run(theirs(), params(), self.variant(theirs().update), value=value)
        assert_trees_close(actual, expected)


# --- Complex leaves: optax's numbers where its rule applies, an error naming the leaf else ---


def complex_params():
    rng = np.random.default_rng(3)
    return {
        "z": jnp.asarray(rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2)), jnp.complex64),
        "w": jnp.asarray(rng.normal(size=4), jnp.float32),
    }


def complex_grads(p, t):
    """A pull towards 1 + 1j (conjugate gradients, as optax's tests), plus noise."""
    rng = np.random.default_rng([11, t])
    noise = {
        "z": jnp.asarray(rng.normal(size=(3, 2)) + 1j * rng.normal(size=(3, 2)), jnp.complex64),
        "w": jnp.asarray(rng.normal(size=4), jnp.float32),
    }
    return jax.tree.map(lambda x, n, c: (x - c) + 0.1 * n, p, noise, {"z": 1 + 1j, "w": 1.0})


COMPLEX = {
    "optimistic_gradient_descent": (
        lambda: optimistic_gradient_descent(0.05, 0.5, 2.0),
        lambda: optax.optimistic_gradient_descent(0.05, 0.5, 2.0),
        False,
    ),
    "optimistic_adam_v2": (
        lambda: optimistic_adam_v2(0.01, beta=0.5),
        lambda: optax.optimistic_adam_v2(0.01, beta=0.5),
        False,
    ),
    "polyak_sgd": (lambda: polyak_sgd(0.5), lambda: optax.polyak_sgd(0.5), True),
    "fromage": (lambda: fromage(0.05), lambda: optax.fromage(0.05), False),
    "noisy_sgd": (lambda: noisy_sgd(0.05, key=1), lambda: optax.noisy_sgd(0.05, key=1), False),
}


class ComplexMatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(name, name) for name in COMPLEX])
    def test_fifty_steps(self, name):
        ours, theirs, value = COMPLEX[name]
        grads = complex_grads
        actual, _ = run(
            ours(), complex_params(), self.variant(ours().update), value=value, grads=grads
        )
        expected, _ = run(
            theirs(), complex_params(), self.variant(theirs().update), value=value, grads=grads
        )
        assert actual["z"].dtype == jnp.complex64
        assert_trees_close(actual, expected)


@pytest.mark.parametrize(
    "make,who",
    [
        (lambda: sign_sgd(0.1), "scale_by_sign"),
        (lambda: signum(0.1), "scale_by_sign"),
        (lambda: rprop(0.1), "scale_by_rprop"),
        (lambda: sm3(0.1), "scale_by_sm3"),
        (lambda: scale_by_distance_over_gradients(), "scale_by_distance_over_gradients"),
    ],
)
def test_no_complex_rule_names_the_leaf(make, who):
    opt = make()
    with pytest.raises(ValueError, match=rf"{who}: the leaf at \['z'\] is complex64"):
        opt.init(complex_params())
    # Also when only the gradients are complex (a state made for real params).
    params = {"z": jnp.zeros((3, 2)), "w": jnp.zeros(4)}
    with pytest.raises(ValueError, match=rf"{who}: the leaf at \['z'\]"):
        opt.update(complex_grads(complex_params(), 0), opt.init(params), params)


# --- Schedules ----------------------------------------------------------------------------


def _lr(count):
    return 0.02 * 0.95 ** count.astype(jnp.float32)


def _rising(count):
    return 0.5 + 0.05 * count.astype(jnp.float32)


def _inject(factory, **hyperparams):
    """optax's oracle for a schedule optax does not take itself: the value at each count.

    Only the schedules are injected: an injected constant would become a float32 array,
    and ``1 - b1`` of one rounds differently from ``1 - b1`` of a Python float.
    """
    static = tuple(name for name in inspect.signature(factory).parameters
                   if not callable(hyperparams.get(name)))  # fmt: skip
    return lambda: optax.inject_hyperparams(_quiet(factory), static_args=static)(**hyperparams)


SCHEDULES = {
    "sign_sgd": (lambda: sign_sgd(_lr), lambda: optax.sign_sgd(_lr), False),
    "signum": (lambda: signum(_lr), lambda: optax.signum(_lr), False),
    "polyak_sgd scaling": (
        lambda: polyak_sgd(0.5, _lr),
        lambda: optax.polyak_sgd(0.5, _lr),
        True,
    ),
    "optimistic_adam_v2": (
        lambda: optimistic_adam_v2(_lr),
        lambda: optax.optimistic_adam_v2(_lr),
        False,
    ),
    "fromage": (lambda: fromage(_lr), lambda: optax.fromage(_lr), False),
    # (noisy_sgd's learning rate is the same block as sign_sgd's; its noise, with its costly
    # compile, is checked above and below.)
    # optax annotates alpha and beta as schedules but fails on them: inject_hyperparams
    # evaluates them for it.
    "optimistic_gradient_descent learning_rate, alpha and beta": (
        lambda: optimistic_gradient_descent(_lr, _rising, lambda c: 2.0 - _rising(c)),
        _inject(
            optax.optimistic_gradient_descent,
            learning_rate=_lr,
            alpha=_rising,
            beta=lambda c: 2.0 - _rising(c),
        ),
        False,
    ),
    # optax raises for these schedules; gradtx evaluates them at the step count.
    "optimistic_adam (the optimism follows)": (
        lambda: _quiet(optimistic_adam)(_lr),
        _inject(optax.optimistic_adam, learning_rate=_lr),
        False,
    ),
    "sm3": (lambda: sm3(_lr), _inject(optax.sm3, learning_rate=_lr), False),
}


class SchedulesMatchOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*[(name, name) for name in SCHEDULES])
    def test_fifty_steps(self, name):
        ours, theirs, value = SCHEDULES[name]
        params = no_scalars if name == "sm3" else nested
        actual, _ = run(ours(), params(), self.variant(ours().update), value=value)
        expected, _ = run(theirs(), params(), self.variant(theirs().update), value=value)
        assert_trees_close(actual, expected)


def test_rprops_learning_rate_is_no_schedule():
    with pytest.raises(TypeError, match="rprop: learning_rate is Rprop's initial step size"):
        rprop(_lr)


# --- vmap over the learning rate and the other float hyperparameters ------------------------


def small():
    """A small tree: vmap's compiles are the cost here, not the arithmetic."""
    return {"w": jnp.asarray(np.random.default_rng(2).normal(size=(3, 2)), jnp.float32),
            "b": jnp.asarray([0.3, -0.4], jnp.float32)}  # fmt: skip


VMAPPED = {
    "sign_sgd": (sign_sgd, False),
    "signum beta": (lambda b: signum(0.01, b), False),
    "rprop": (rprop, False),
    "rprop eta_plus": (lambda e: rprop(0.01, eta_plus=1.0 + e), False),
    "sm3": (sm3, False),
    "polyak_sgd max_learning_rate": (polyak_sgd, True),
    "polyak_sgd scaling": (lambda s: polyak_sgd(1.0, s), True),
    "optimistic_gradient_descent beta": (lambda b: optimistic_gradient_descent(b, 1.0, b), False),
    "optimistic_adam": (_quiet(optimistic_adam), False),
    "optimistic_adam_v2 alpha": (lambda a: optimistic_adam_v2(a, alpha=a), False),
    "fromage": (fromage, False),
    "noisy_sgd": (lambda lr: noisy_sgd(lr, lr, key=0), False),
    "scale_by_distance_over_gradients reps_rel": (
        lambda r: scale_by_distance_over_gradients(r, global_scale=-1.0),
        False,
    ),
}


@pytest.mark.parametrize("name", list(VMAPPED))
def test_vmap_over_a_hyperparameter_equals_a_loop(name):
    factory, value = VMAPPED[name]

    def train(h):
        return run(factory(h), small(), factory(h).update, steps=3, value=value)[0]

    assert_vmap_equals_loop(train, jnp.array([0.01, 0.1, 0.5]))


def test_vmap_over_sm3s_b2_matches_optax_at_each_value():
    # b2 = 1 takes optax's Python branch (a plain sum); a traced b2 takes a select instead.
    def train(b2):
        tx = gradtx.chain(scale_by_sm3(0.9, b2), gradtx.scale(-0.1))
        return run(tx, small(), tx.update, steps=4)[0]

    values = [0.5, 1.0]
    batched = jax.jit(jax.vmap(train))(jnp.array(values))
    for i, b2 in enumerate(values):
        tx = optax.chain(optax.scale_by_sm3(0.9, b2), optax.scale(-0.1))
        expected = run(tx, small(), jax.jit(tx.update), steps=4)[0]
        assert_trees_close(jax.tree.map(lambda x, i=i: x[i], batched), expected)


# --- State dtypes --------------------------------------------------------------------------

# name -> (factory, a params-shaped field of its state, how far bfloat16 may move the params).
STATE_DTYPE = {
    "signum": (lambda **kw: signum(0.01, **kw), "ema", 0.15),
    "rprop": (lambda **kw: rprop(0.01, **kw), "step_sizes", 0.05),
    "sm3": (lambda **kw: sm3(0.1, **kw), "nu", 0.02),
    "optimistic_gradient_descent": (
        lambda **kw: optimistic_gradient_descent(0.05, **kw),
        "previous_gradient",
        0.02,
    ),
    "optimistic_adam_v2": (lambda **kw: optimistic_adam_v2(0.01, **kw), "mu", 0.02),
}


@pytest.mark.parametrize("name", list(STATE_DTYPE))
def test_bfloat16_state_runs_close_to_float32(name):
    factory, field, atol = STATE_DTYPE[name]
    params = no_scalars()
    narrow = factory(state_dtype=jnp.bfloat16)
    wide = factory()
    got, state = run(narrow, params, jax.jit(narrow.update))
    expected, _ = run(wide, params, jax.jit(wide.update))
    assert_trees_close(got, expected, rtol=0.0, atol=atol)
    for leaf in jax.tree.leaves(gradtx.tree.get_all_with_path(state, field)[0][1]):
        assert leaf.dtype == jnp.bfloat16, (field, leaf.dtype)
    # The params and updates keep their dtype.
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(got))


def test_every_params_shaped_field_takes_the_state_dtype():
    params = no_scalars()
    state = sm3(0.1, state_dtype=jnp.bfloat16).init(params)
    assert isinstance(state[0], ScaleBySM3State)
    assert {x.dtype for x in jax.tree.leaves(state[0])} == {jnp.dtype(jnp.bfloat16)}
    state = rprop(0.1, state_dtype=jnp.bfloat16).init(params)
    assert isinstance(state[0], ScaleByRpropState)
    assert {x.dtype for x in jax.tree.leaves(state[0])} == {jnp.dtype(jnp.bfloat16)}
    state = _quiet(optimistic_adam)(0.1, state_dtype=jnp.bfloat16).init(params)
    for field in ("mu", "nu", "previous_gradient"):
        leaves = jax.tree.leaves(gradtx.tree.get(state, field))
        assert {x.dtype for x in leaves} == {jnp.dtype(jnp.bfloat16)}, field


def test_the_states_have_optaxs_fields():
    params = nested()
    assert gradtx.tree.get(rprop(0.1).init(params), "ScaleByRpropState")._fields == (
        "step_sizes",
        "prev_updates",
    )
    assert sm3(0.1).init(params)[0]._fields == ("mu", "nu")
    state = optimistic_gradient_descent(0.1).init(params)[0]
    assert state._fields[:2] == optax.optimistic_gradient_descent(0.1).init(params)[0]._fields
    assert type(add_noise(0.1, 0.5, 0).init(params)) is AddNoiseState
    assert AddNoiseState._fields == optax.add_noise(0.1, 0.5, 0).init(params)._fields
    assert (
        scale_by_distance_over_gradients().init(params)._fields
        == optax.scale_by_distance_over_gradients().init(params)._fields
    )


# --- Leaves optax has no rule for ---------------------------------------------------------


def test_sm3_treats_a_scalar_leaf_as_a_vector_of_one():
    # optax's scale_by_sm3 fails on a scalar leaf (an empty list of accumulators).
    opt = sm3(0.1)
    scalar, _ = run(opt, {"s": jnp.array(0.7)}, opt.update, steps=10)
    reference = optax.sm3(0.1)
    vector, _ = run(reference, {"s": jnp.array([0.7])}, reference.update, steps=10)
    np.testing.assert_allclose(scalar["s"], vector["s"][0], rtol=1e-6)
    assert scalar["s"].shape == ()


def test_distance_over_gradients_keeps_a_scalar_leafs_shape():
    params = nested()
    ours = scale_by_distance_over_gradients(global_scale=-1.0)
    theirs = optax.scale_by_distance_over_gradients(global_scale=-1.0)
    grads = grads_at(params, 0)
    u, _ = ours.update(grads, ours.init(params), params)
    v, _ = theirs.update(grads, theirs.init(params), params)
    assert u["head"][0].shape == () and v["head"][0].shape == (1,)
    assert_trees_close(jax.tree.map(jnp.ravel, u), jax.tree.map(jnp.ravel, v))


def test_distance_over_gradients_needs_the_params():
    tx = scale_by_distance_over_gradients()
    params = nested()
    with pytest.raises(ValueError, match="scale_by_distance_over_gradients: update needs"):
        tx.update(params, tx.init(params))


# --- The loss as the `value` extra ----------------------------------------------------------


def test_the_loss_reaches_polyak_through_gradtx_chains():
    params = nested()
    grads = grads_at(params, 0)
    value = loss(params)
    expected, _ = optax.polyak_sgd(0.5).update(grads, optax.polyak_sgd(0.5).init(params), params,
                                               value=value)  # fmt: skip
    # (optax's chain hands extras only to optax's own GradientTransformationExtraArgs.)
    for opt in (
        polyak_sgd(0.5),
        gradtx.chain(gradtx.sgd(1.0), scale_by_polyak(max_learning_rate=0.5)),
        gradtx.chain(optax.sgd(1.0), scale_by_polyak(max_learning_rate=0.5)),
        gradtx.chain(gradtx.clip(1e9), polyak_sgd(0.5)),
        gradtx.named_chain(("polyak", polyak_sgd(0.5))),
    ):
        updates, _ = opt.update(grads, opt.init(params), params, value=value)
        assert_trees_close(updates, expected)


def test_polyak_without_the_loss_says_how_to_pass_it():
    opt = polyak_sgd()
    params = nested()
    with pytest.raises(ValueError, match="value=loss"):
        opt.update(params, opt.init(params), params)


def test_polyak_takes_no_step_on_a_zero_gradient():
    opt = polyak_sgd()
    params = {"w": jnp.ones(3)}
    updates, _ = opt.update({"w": jnp.zeros(3)}, opt.init(params), params, value=1.0)
    np.testing.assert_array_equal(updates["w"], np.zeros(3))


# --- The noise: optax's samples for the same key -------------------------------------------


_NOISE, _OPTAX_NOISE = add_noise(0.3, 0.55, 0), optax.add_noise(0.3, 0.55, 0)
# The updates do not depend on the key (it is in the state): one compile serves every key.
_NOISE_UPDATES = {False: (_NOISE.update, _OPTAX_NOISE.update),
                  True: (jax.jit(_NOISE.update), jax.jit(_OPTAX_NOISE.update))}  # fmt: skip


@pytest.mark.parametrize("key", [0, 7, jax.random.key(11)], ids=["seed 0", "seed 7", "typed key"])
@pytest.mark.parametrize("jit", [False, True], ids=["no jit", "jit"])
def test_the_noise_is_optaxs_sample_for_sample(key, jit):
    params = {"a": jnp.zeros((3, 4)), "b": [jnp.zeros(5), jnp.zeros((), jnp.float32)]}
    # Both jitted or both eager: XLA fuses x + s * y into one rounding under jit.
    update, reference = _NOISE_UPDATES[jit]
    s, r = add_noise(0.3, 0.55, key).init(params), optax.add_noise(0.3, 0.55, key).init(params)
    for _ in range(5):
        u, s = update(params, s, None)
        v, r = reference(params, r, None)
        jax.tree.map(np.testing.assert_array_equal, u, v)
        np.testing.assert_array_equal(
            jax.random.key_data(s.rng_key), jax.random.key_data(r.rng_key)
        )
        assert int(s.count) == int(r.count)
    # Noise, not zeros: a standard deviation of sqrt(0.3 / 5**0.55) at the fifth step.
    assert 0.1 < float(jnp.std(u["a"])) < 0.6


def test_raw_key_data_and_the_deprecated_seed_give_the_same_noise():
    params = {"a": jnp.zeros(6)}
    expected, _ = add_noise(0.3, 0.5, jax.random.key(4)).update(
        params, add_noise(0.3, 0.5, 4).init(params)
    )
    raw = add_noise(0.3, 0.5, jax.random.PRNGKey(4))
    np.testing.assert_array_equal(raw.update(params, raw.init(params))[0]["a"], expected["a"])
    with pytest.warns(DeprecationWarning, match="seed is deprecated"):
        seeded = add_noise(0.3, 0.5, seed=4)
    np.testing.assert_array_equal(seeded.update(params, seeded.init(params))[0]["a"], expected["a"])
    with pytest.warns(UserWarning, match="no key given"):
        unseeded = noisy_sgd(1.0, 0.3, 0.5)
    reference = optax.noisy_sgd(1.0, 0.3, 0.5, key=0)
    np.testing.assert_array_equal(
        unseeded.update(params, unseeded.init(params))[0]["a"],
        reference.update(params, reference.init(params))[0]["a"],
    )


def test_the_noise_variance_is_eta_over_t_to_the_gamma():
    # Zero updates: the outputs are sigma_t * xi_t with sigma_t^2 = 1 / t here.
    params = {"a": jnp.zeros(2000)}
    tx = add_noise(1.0, 1.0, 0)
    state = tx.init(params)
    for t in range(1, 4):
        u, state = tx.update(params, state)
        # E[xi^2] = 1: the sample variance is close to 1 / t.
        np.testing.assert_allclose(float(jnp.var(u["a"])) * t, 1.0, atol=0.1)


# --- Rprop: optax's one-step lag, and the rule itself ---------------------------------------


def test_rprop_lagged_is_optaxs_and_unlagged_is_the_rule():
    # optax pull request 1725's example: gradients 1, 1, 1, -1, 1 from step size 0.1.
    def updates(tx):
        state, out = tx.init(jnp.zeros(1)), []
        for g in (1.0, 1.0, 1.0, -1.0, 1.0):
            u, state = tx.update(jnp.array([g]), state)
            out.append(float(u[0]))
        return out

    np.testing.assert_allclose(updates(scale_by_rprop(0.1)), [0, 0.1, 0.12, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(updates(optax.scale_by_rprop(0.1)), [0, 0.1, 0.12, 0, 0], rtol=1e-6)
    np.testing.assert_allclose(
        updates(scale_by_rprop(0.1, lagged=False)), [0.1, 0.12, 0.144, 0, 0.072], rtol=1e-6
    )


# --- torch's Rprop --------------------------------------------------------------------------


def test_rprop_takes_torchs_steps():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    start = rng.normal(size=(5, 4)).astype(np.float32)
    theirs = torch.tensor(start.copy(), requires_grad=True)
    torch_opt = torch.optim.Rprop([theirs], lr=0.01, etas=(0.4, 1.3), step_sizes=(1e-4, 0.1))
    opt = rprop(0.01, 0.4, 1.3, 1e-4, 0.1, lagged=False)
    update = jax.jit(opt.update)
    ours = jnp.asarray(start)
    state = opt.init(ours)
    for t in range(STEPS):
        noise = np.random.default_rng(t).normal(size=start.shape).astype(np.float32)
        theirs.grad = torch.tensor(0.5 * theirs.detach().numpy() + noise)
        torch_opt.step()
        updates, state = update(jnp.asarray(0.5 * np.asarray(ours) + noise), state, ours)
        ours = ours + updates
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-6, atol=1e-7)


# --- Bad hyperparameters name the argument ---------------------------------------------------

BAD = [
    (lambda: sign_sgd(-0.1), "sign_sgd: learning_rate must be in [0, inf), got -0.1"),
    (lambda: signum(0.1, 1.5), "signum: beta must be in [0, 1), got 1.5"),
    (lambda: signum(-0.1), "signum: learning_rate must be in [0, inf)"),
    (lambda: signum(0.1, state_dtype=jnp.int32), "signum: state_dtype must be a floating dtype"),
    (lambda: rprop(-0.1), "rprop: learning_rate must be in [0, inf), got -0.1"),
    (lambda: rprop(0.1, eta_minus=1.5), "rprop: eta_minus must be in (0, 1], got 1.5"),
    (lambda: rprop(0.1, eta_minus=0.0), "rprop: eta_minus must be in (0, 1], got 0"),
    (lambda: rprop(0.1, eta_plus=0.5), "rprop: eta_plus must be in [1, inf), got 0.5"),
    (lambda: rprop(0.1, min_step_size=-1.0), "rprop: min_step_size must be in [0, inf)"),
    (lambda: rprop(0.1, max_step_size=0.0), "rprop: max_step_size must be in (0, inf), got 0"),
    (
        lambda: rprop(0.1, min_step_size=1.0, max_step_size=0.5),
        "rprop: min_step_size must be at most max_step_size",
    ),
    (lambda: sm3(-0.1), "sm3: learning_rate must be in [0, inf)"),
    (lambda: sm3(0.1, 1.0), "sm3: momentum must be in [0, 1), got 1"),
    (lambda: scale_by_sm3(b2=1.5), "scale_by_sm3: b2 must be in [0, 1], got 1.5"),
    (lambda: scale_by_sm3(eps=-1.0), "scale_by_sm3: eps must be in [0, inf)"),
    (lambda: polyak_sgd(-1.0), "polyak_sgd: max_learning_rate must be in [0, inf), got -1"),
    (lambda: polyak_sgd(scaling=-1.0), "polyak_sgd: scaling must be in [0, inf), got -1"),
    (lambda: polyak_sgd(eps=-1.0), "polyak_sgd: eps must be in [0, inf)"),
    (lambda: polyak_sgd(variant="sps-"), "polyak_sgd: variant must be 'sps' or 'sps+', got 'sps-'"),
    (
        lambda: optimistic_gradient_descent(-0.1),
        "optimistic_gradient_descent: learning_rate must be in [0, inf)",
    ),
    (
        lambda: optimistic_gradient_descent(0.1, -1.0),
        "optimistic_gradient_descent: alpha must be in [0, inf), got -1",
    ),
    (
        lambda: optimistic_gradient_descent(0.1, 1.0, -1.0),
        "optimistic_gradient_descent: beta must be in [0, inf), got -1",
    ),
    (lambda: _quiet(optimistic_adam)(-0.1), "optimistic_adam: learning_rate must be in [0, inf)"),
    (lambda: _quiet(optimistic_adam)(0.1, -1.0), "optimistic_adam: optimism must be in [0, inf)"),
    (lambda: _quiet(optimistic_adam)(0.1, b1=1.0), "optimistic_adam: b1 must be in [0, 1), got 1"),
    (
        lambda: _quiet(optimistic_adam)(0.1, mu_dtype=jnp.bfloat16, state_dtype=jnp.bfloat16),
        "optimistic_adam: give mu_dtype or state_dtype, not both",
    ),
    (lambda: optimistic_adam_v2(-0.1), "optimistic_adam_v2: learning_rate must be in [0, inf)"),
    (lambda: optimistic_adam_v2(0.1, alpha=-1.0), "optimistic_adam_v2: alpha must be in [0, inf)"),
    (lambda: optimistic_adam_v2(0.1, b2=2.0), "optimistic_adam_v2: b2 must be in [0, 1), got 2"),
    (lambda: fromage(-0.1), "fromage: learning_rate must be in [0, inf), got -0.1"),
    (lambda: fromage(0.1, -1.0), "fromage: min_norm must be in [0, inf), got -1"),
    (lambda: noisy_sgd(-0.1, key=0), "noisy_sgd: learning_rate must be in [0, inf)"),
    (lambda: noisy_sgd(0.1, -1.0, key=0), "noisy_sgd: eta must be in [0, inf), got -1"),
    (lambda: noisy_sgd(0.1, 0.1, -1.0, key=0), "noisy_sgd: gamma must be in [0, inf), got -1"),
    (lambda: add_noise(0.1, 0.5, 0, seed=1), "add_noise: give key or seed, not both"),
    (
        lambda: scale_by_distance_over_gradients(0.0),
        "scale_by_distance_over_gradients: reps_rel must be in (0, inf), got 0",
    ),
    (
        lambda: scale_by_distance_over_gradients(eps=-1.0),
        "scale_by_distance_over_gradients: eps must be in [0, inf)",
    ),
    (
        lambda: scale_by_distance_over_gradients(param_dtype=jnp.int32),
        "scale_by_distance_over_gradients: param_dtype must be a floating or complex dtype",
    ),
    (lambda: scale_by_polyak(variant="x"), "scale_by_polyak: variant must be 'sps' or 'sps+'"),
    (lambda: scale_by_rprop(0.1, 0.5, 0.9), "scale_by_rprop: eta_plus must be in [1, inf)"),
    (
        lambda: scale_by_optimistic_gradient(state_dtype="int8"),
        "scale_by_optimistic_gradient: state_dtype must be a floating dtype",
    ),
]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("make,message", BAD, ids=[m for _, m in BAD])
def test_bad_hyperparameters_name_the_argument(make, message):
    with pytest.raises(ValueError) as raised:
        make()
    assert message in str(raised.value)


def test_tracers_and_schedules_are_not_inspected():
    # Under jit the learning rate is a tracer: the checks leave it alone, and it runs.
    params = {"w": jnp.ones(2)}
    for factory in (sign_sgd, sm3, fromage, optimistic_gradient_descent, optimistic_adam_v2):
        out = jax.jit(lambda lr, f=factory: f(lr).update(params, f(lr).init(params), params)[0])(
            jnp.asarray(0.1)
        )
        assert np.all(np.isfinite(out["w"]))
    assert callable(fromage(lambda c: -1.0).update)


def test_optimistic_adam_warns_as_optax():
    with pytest.warns(DeprecationWarning, match="optimistic_adam_v2"):
        optimistic_adam(0.1)
