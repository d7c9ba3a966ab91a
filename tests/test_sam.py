"""SAM and normalize against optax.contrib.

optax 0.2.8 is the oracle: 50 steps in transparent and opaque mode (opaque mode's
grad_fn is the same function for both), on conftest's nested tree and on a tree with a
complex64 leaf, with and without jit, at the defaults and with every argument moved off
its default; then pmean over a mapped batch axis, vmap over the learning rate,
extras through gradtx.chain, check_transform and argument errors.
"""

from __future__ import annotations

import functools
import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized
from conftest import assert_trees_close, assert_vmap_equals_loop, grads_at, make_params
from test_complex import gradient as complex_gradient
from test_complex import params as complex_params

import gradtx
from gradtx.testing import check_transform
from gradtx.transforms.sam import NormalizeState, SAMState, normalize, sam

STEPS = 50
OC = optax.contrib


def _lr_schedule(count):
    return 0.05 * 0.98 ** count.astype(jnp.float32)


def _grad_fn(gradient):
    """grad_fn(params, k): the stream's gradient at the adversarial params, shifted by k."""
    return lambda p, k: gradient(p, 1000 + k)


# name -> arguments after (optimizer, adv_optimizer), and the optimizers in each library.
# The outer ones keep state (Adam's moments), so resetting and keeping states differ.
def _optimizers(lib):
    unit = normalize() if lib is gradtx else OC.normalize()
    return (lib.adam(_lr_schedule), lib.chain(unit, lib.sgd(0.05, 0.5)))


CONFIGS = {
    "defaults": {},
    "arguments": dict(sync_period=3, reset_state=False),
    "sync_every_step": dict(sync_period=1),
    "opaque": dict(opaque_mode=True),
    "opaque arguments": dict(sync_period=4, reset_state=False, opaque_mode=True),
}


@functools.cache
def _pair(name):
    return (
        sam(*_optimizers(gradtx), **CONFIGS[name]),
        OC.sam(*_optimizers(optax), **CONFIGS[name]),
    )


def _run(variant, tx, params, gradient, steps=STEPS):
    grad_fn = _grad_fn(gradient)
    update = variant(lambda g, s, p: tx.update(g, s, p, grad_fn=grad_fn))
    state = tx.init(params)
    for t in range(steps):
        u, state = update(gradient(params, t), state, params)
        params = optax.apply_updates(params, u)
    return params, state


def _assert_matches(ours, theirs):
    (p1, s1), (p2, s2) = ours, theirs
    assert_trees_close(p1, p2, rtol=1e-5, atol=1e-6)
    assert type(s1).__name__ == type(s2).__name__ and s1._fields == s2._fields
    assert int(s1.steps_since_sync) == int(s2.steps_since_sync)
    assert_trees_close(s1.cache, s2.cache, rtol=1e-5, atol=1e-6)
    for field in ("opt_state", "adv_state"):  # the same moments in order (gradtx's trace
        a, b = (_moments(getattr(s, field)) for s in (s1, s2))  # also keeps a count)
        assert a and len(a) == len(b)
        assert_trees_close(a, b, rtol=1e-5, atol=1e-6)


def _moments(state):
    return [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]


class MatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((n, n) for n in CONFIGS))
    def test_fifty_steps(self, name):
        ours, theirs = _pair(name)
        _assert_matches(
            _run(self.variant, ours, make_params(), grads_at),
            _run(self.variant, theirs, make_params(), grads_at),
        )

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("transparent", "defaults"), ("opaque", "opaque"))
    def test_complex_leaf(self, name):
        ours, theirs = _pair(name)
        result = _run(self.variant, ours, complex_params(), complex_gradient)
        assert result[0]["z"].dtype == jnp.complex64
        _assert_matches(result, _run(self.variant, theirs, complex_params(), complex_gradient))

    @chex.variants(with_jit=True, without_jit=True)
    def test_normalize(self):
        tx, theirs = normalize(), OC.normalize()
        for params, gradient in ((make_params(), grads_at), (complex_params(), complex_gradient)):
            g = gradient(params, 0)
            u1, s1 = self.variant(tx.update)(g, tx.init(params), params)
            u2, _ = theirs.update(g, theirs.init(params), params)
            assert_trees_close(u1, u2)
            assert s1 == NormalizeState()


def test_sam_is_the_paper_step_by_hand():
    """sam(sgd(lr), chain(normalize(), sgd(rho))): ascend to p + rho g/|g|, step from p."""
    lr, rho = 0.1, 0.05
    tx = sam(gradtx.sgd(lr), gradtx.chain(normalize(), gradtx.sgd(rho)))
    params = jnp.array([3.0, 4.0])
    grad = lambda p: 2 * p  # noqa: E731
    state = tx.init(params)
    u, state = tx.update(grad(params), state, params)
    adversarial = params + u
    np.testing.assert_allclose(adversarial, params + rho * params / 5, rtol=1e-6)
    u, state = tx.update(grad(adversarial), state, adversarial)
    np.testing.assert_allclose(adversarial + u, params - lr * grad(adversarial), rtol=1e-6)
    assert int(state.steps_since_sync) == 0


def test_normalize_keeps_a_zero_gradient_zero():
    """optax divides 0 by 0 (NaN); no adversarial step is what a zero gradient means."""
    tx = normalize()
    u, _ = tx.update({"w": jnp.zeros(3)}, tx.init(None))
    np.testing.assert_array_equal(u["w"], 0.0)
    assert np.isnan(OC.normalize().update({"w": jnp.zeros(3)}, None)[0]["w"]).all()


@pytest.mark.parametrize("sync_period", [2, 3])
def test_batch_axis_name_averages_the_adversarial_gradients(sync_period):
    """Under a mapped axis, each replica's grad_fn gradients are averaged, as optax."""
    params = make_params()
    batch = jnp.arange(2.0)

    def run(tx):
        def one(shift):
            grad_fn = lambda p, k: jax.tree.map(lambda x: 0.5 * x + shift + k, p)  # noqa: E731
            state = tx.init(params)
            p = params
            for t in range(5):
                g = jax.tree.map(lambda x, t=t: 0.5 * x + shift + t, p)
                u, state = tx.update(g, state, p, grad_fn=grad_fn)
                p = gradtx.apply_updates(p, u)
            return p

        return jax.jit(jax.vmap(one, axis_name="batch"))(batch)

    ours = sam(*_optimizers(gradtx), sync_period, opaque_mode=True, batch_axis_name="batch")
    theirs = OC.sam(*_optimizers(optax), sync_period, opaque_mode=True, batch_axis_name="batch")
    assert_trees_close(run(ours), run(theirs), rtol=1e-5, atol=1e-6)
    plain = sam(*_optimizers(gradtx), sync_period, opaque_mode=True)
    with pytest.raises(AssertionError):  # without the mean the replicas differ
        assert_trees_close(run(ours), run(plain), rtol=1e-5, atol=1e-6)


def test_extras_flow_through_chain_to_sam_and_its_optimizers():
    """grad_fn reaches sam inside gradtx.chain; other extras reach the inner optimizers."""
    seen = []

    def record(updates, params, *, value):
        seen.append(value)
        return updates

    outer = gradtx.chain(gradtx.stateless(record), gradtx.sgd(0.1))
    opt = gradtx.chain(
        gradtx.clip_by_global_norm(1e6), sam(outer, gradtx.sgd(0.05), opaque_mode=True)
    )
    params = {"w": jnp.array([1.0, -2.0])}
    grad_fn = lambda p, k: jax.tree.map(lambda x: 2 * x, p)  # noqa: E731
    u, _ = opt.update(grad_fn(params, 0), opt.init(params), params, grad_fn=grad_fn, value=3.0)
    # The adversarial point is p + 0.05 * 2p; the outer step uses the gradient there.
    np.testing.assert_allclose(u["w"], -0.1 * 2 * 1.1 * params["w"], rtol=1e-6)
    assert seen == [3.0]


def test_opaque_mode_needs_grad_fn():
    tx = sam(gradtx.sgd(0.1), gradtx.sgd(0.1), opaque_mode=True)
    params = {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match="sam: opaque_mode=True needs the extra argument grad_fn"):
        tx.update(params, tx.init(params), params)


def test_a_bfloat16_inner_state_stays_bfloat16():
    tx = sam(
        gradtx.adam(1e-2, state_dtype=jnp.bfloat16), gradtx.sgd(0.05, 0.9, state_dtype=jnp.bfloat16)
    )
    params = make_params()
    state = tx.init(params)
    for t in range(4):
        u, state = tx.update(grads_at(params, t), state, params)
        params = gradtx.apply_updates(params, u)
    moments = [x for x in jax.tree.leaves((state.opt_state, state.adv_state))
               if jnp.issubdtype(x.dtype, jnp.floating)]  # fmt: skip
    assert moments and all(x.dtype == jnp.bfloat16 for x in moments)


def test_integer_leaves_keep_their_update():
    tx = sam(gradtx.sgd(0.1), gradtx.sgd(0.05))
    params = {"w": jnp.array([1.0, -2.0]), "step": jnp.array(3)}
    grads = {"w": params["w"], "step": jnp.array(0)}
    state = tx.init(params)
    for _ in range(2):
        u, state = tx.update(grads, state, params)
        assert int(u["step"]) == 0 and u["step"].dtype == jnp.int32


# vmap over the learning rate, check_transform.
def _scan_run(opt, steps=10):
    params = {"w": make_params()["dense"][0], "b": make_params()["head"][0]}
    grad_fn = lambda p, k: jax.tree.map(lambda x: 0.5 * x + jnp.sin(x + k), p)  # noqa: E731

    def step(carry, t):
        p, state = carry
        u, state = opt.update(grad_fn(p, t), state, p, grad_fn=grad_fn)
        return (gradtx.apply_updates(p, u), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
    return params


@pytest.mark.parametrize("opaque_mode", [False, True], ids=["transparent", "opaque"])
def test_vmap_over_learning_rate(opaque_mode):
    lrs = np.geomspace(1e-3, 1e-1, 4).astype(np.float32)
    make = lambda lr: sam(gradtx.adam(lr), gradtx.chain(normalize(), gradtx.sgd(lr)),  # noqa: E731
                          opaque_mode=opaque_mode)  # fmt: skip
    assert_vmap_equals_loop(lambda lr: _scan_run(make(lr)), lrs)


@pytest.mark.parametrize("config", ["defaults", "arguments", "opaque"])
def test_check_transform(config):
    tx = sam(*_optimizers(gradtx), **CONFIGS[config])
    grad_fn = lambda p, k: jax.tree.map(lambda x: 0.5 * x + 0.1 * k, p)  # noqa: E731
    check_transform(tx, make_params(), extra={"grad_fn": grad_fn}, steps=4, name=config)
    tree = {"z": complex_params()["z"], "w": jnp.ones(3)}
    check_transform(tx, tree, extra={"grad_fn": grad_fn}, steps=4, name=f"{config}, complex")


# Arguments: optax's positions, names and defaults; state fields; errors.
def test_signature_is_optax():
    for ours, theirs in ((sam, OC.sam), (normalize, OC.normalize)):
        mine = [(p.name, p.kind, p.default) for p in inspect.signature(ours).parameters.values()]
        their = [(p.name, p.kind, p.default) for p in inspect.signature(theirs).parameters.values()]
        assert mine == their


def test_state_fields_are_optax():
    assert SAMState._fields == OC.SAMState._fields
    assert NormalizeState._fields == OC.NormalizeState._fields


@pytest.mark.parametrize("sync_period", [0, -1, 1.5, True])
def test_bad_sync_period_is_named(sync_period):
    with pytest.raises(ValueError, match="sam: sync_period must be an integer >= 1"):
        sam(gradtx.sgd(0.1), gradtx.sgd(0.1), sync_period)


def test_update_needs_params():
    tx = sam(gradtx.sgd(0.1), gradtx.sgd(0.1))
    with pytest.raises(ValueError, match="sam: update needs the params"):
        tx.update({"w": jnp.ones(2)}, tx.init({"w": jnp.ones(2)}))
