"""Sophia and Hutchinson's Hessian-diagonal estimator against optax.contrib.

optax 0.2.8 is the oracle: 50 steps on conftest's nested tree, with and without jit,
with the same PRNG keys and the same obj_fn (one whose Hessian is not diagonal, so the
estimate depends on the random signs and the keys must match draw for draw), at the
defaults and with every argument moved off its default (schedules, a mask, mu_dtype, no
clipping); then the win-rate printout, vmap over the learning rate, state dtypes, extras
through gradtx.chain, check_transform, complex leaves and argument errors.
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
from conftest import assert_trees_close, assert_vmap_equals_loop, grads_at, make_params, run
from test_complex import params as complex_params

import gradtx
from gradtx.learners.sophia import sophia
from gradtx.testing import check_transform
from gradtx.transforms.sophia import (
    HutchinsonState,
    SophiaState,
    hutchinson_estimator_diag_hessian,
    scale_by_sophia,
)

STEPS = 50
BF16 = jnp.bfloat16
OC = optax.contrib
MASK = {"dense": [True, False], "conv": True, "head": [False, True]}


def obj_fn(params):
    """A loss whose Hessian couples the entries of each leaf (through the squared sum)."""
    return sum(
        0.25 * jnp.sum(x**2) + 0.1 * jnp.sum(jnp.tanh(x)) ** 2 + 0.05 * jnp.sum(jnp.cos(x))
        for x in jax.tree.leaves(params)
    )


def _lr_schedule(count):
    return 0.02 * 0.97 ** count.astype(jnp.float32)


def _wd_schedule(count):
    return 0.1 * jnp.minimum(1.0, (count + 1) / 10)


def _hutchinson(lib, seed):
    factory = (
        hutchinson_estimator_diag_hessian if lib is gradtx else OC.hutchinson_estimator_diag_hessian
    )
    return factory(seed)


# name -> (positional arguments, keyword arguments); the estimator is each library's own.
CONFIGS = {
    "defaults": ((_lr_schedule,), {}),
    "arguments": ((1e-2, 0.9, 0.95, 1e-6, _wd_schedule, MASK, 0.05, 0.5, 3),
                  dict(hessian_seed=jax.random.PRNGKey(7))),
    # Unclipped, the first steps are m / eps (no estimate yet): a large eps keeps them sane.
    "no clipping": ((1e-2,), dict(clip_threshold=None, update_interval=2, gamma=1.0, eps=0.5,
                                  hessian_seed=jax.random.key(11))),
    "mu_dtype": ((1e-2,), dict(mu_dtype=BF16, weight_decay_mask=lambda p: jax.tree.map(
        lambda x: x.ndim > 1, p))),
}  # fmt: skip


def _build(lib, name, **more):
    args, kwargs = CONFIGS[name]
    kwargs = {**kwargs, **more}
    if "hessian_seed" in kwargs:
        kwargs["hessian_diagonal_fn"] = _hutchinson(lib, kwargs.pop("hessian_seed"))
    return (sophia if lib is gradtx else OC.sophia)(*args, **kwargs)


@functools.cache
def _pair(name):
    return _build(gradtx, name), _build(optax, name)


def _run(variant, tx, params, steps=STEPS):
    """``steps`` updates of ``tx`` under ``variant``; the final params and state."""
    update = variant(lambda g, s, p: tx.update(g, s, p, obj_fn=obj_fn))
    state = tx.init(params)
    for t in range(steps):
        u, state = update(grads_at(params, t), state, params)
        params = optax.apply_updates(params, u)
    return params, state


def _keys(state):
    key = state.key
    return jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key


class MatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((n, n) for n in CONFIGS if n != "mu_dtype"))
    def test_fifty_steps(self, name):
        self._fifty_steps(name)

    # A bfloat16 momentum times a Python b1 rounds to bfloat16 eagerly but not under jit
    # (XLA computes it in float32), so an eager run and the jitted oracle part ways; an
    # eager oracle compiles optax's lax.cond at every step (2 s each): jit only.
    @chex.variants(with_jit=True)
    def test_fifty_steps_mu_dtype(self):
        self._fifty_steps("mu_dtype")

    def _fifty_steps(self, name):
        ours, theirs = _pair(name)
        # The oracle runs jitted: eagerly, optax compiles its lax.cond anew at every step
        # (2 s each); gradtx branches in Python where the count is concrete.
        (p1, s1), (p2, s2) = (
            _run(self.variant, ours, make_params()),
            _run(jax.jit, theirs, make_params()),
        )
        assert_trees_close(p1, p2, rtol=1e-5, atol=1e-6)
        assert type(s1[0]).__name__ == type(s2[0]).__name__ and s1[0]._fields == s2[0]._fields
        assert int(s1[0].count) == int(s2[0].count) == STEPS
        assert_trees_close(s1[0].mu, s2[0].mu, rtol=1e-5, atol=1e-6)
        assert_trees_close(s1[0].nu, s2[0].nu, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(_keys(s1[0].hessian_fn_state), _keys(s2[0].hessian_fn_state))
        if name == "mu_dtype":
            assert all(m.dtype == BF16 for m in jax.tree.leaves(s1[0].mu))

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("default_seed", None), ("raw_key", jax.random.PRNGKey(5)),
                                    ("typed_key", jax.random.key(5)))  # fmt: skip
    def test_hutchinson_fifty_draws(self, seed):
        """The estimates and the keys, draw by draw, at params that move."""
        ours, theirs = _hutchinson(gradtx, seed), _hutchinson(optax, seed)
        params = make_params()
        s1, s2 = ours.init(params), theirs.init(params)
        update = self.variant(lambda s, p: ours.update(p, s, p, obj_fn=obj_fn))
        for t in range(STEPS):
            h1, s1 = update(s1, params)
            h2, s2 = theirs.update(params, s2, params, obj_fn=obj_fn)
            assert_trees_close(h1, h2, rtol=1e-5, atol=1e-6)
            params = jax.tree.map(lambda p, g: p - 0.05 * g, params, grads_at(params, t))
        np.testing.assert_array_equal(_keys(s1), _keys(s2))


def test_hutchinson_is_unbiased():
    """The mean of many estimates is the Hessian's diagonal (computed in full here)."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=5), jnp.float32)
    f = lambda p: obj_fn([p])  # noqa: E731
    exact = jnp.diag(jax.hessian(f)(x))
    tx = hutchinson_estimator_diag_hessian(jax.random.key(1))
    draw = jax.jit(lambda s: tx.update(x, s, x, obj_fn=f))
    state, total = tx.init(x), 0.0
    for _ in range(2000):
        h, state = draw(state)
        total = total + h
    np.testing.assert_allclose(total / 2000, exact, atol=0.02)
    assert float(jnp.std(exact)) > 0.02  # the diagonal is not flat, so the check is sharp


def test_first_step_is_clipped_and_the_hessian_is_refreshed_every_interval():
    tx = scale_by_sophia(update_interval=3, hessian_diagonal_fn=hutchinson_estimator_diag_hessian())
    params = {"w": jnp.array([1.0, -2.0])}
    state = tx.init(params)
    u, state = tx.update(params, state, params, obj_fn=obj_fn)
    np.testing.assert_array_equal(u["w"], [1.0, -1.0])  # nu = 0: clipped to the threshold
    seen = [np.asarray(state.nu["w"])]
    for _ in range(6):
        _, state = tx.update(params, state, params, obj_fn=obj_fn)
        seen.append(np.asarray(state.nu["w"]))
    changed = [not np.array_equal(a, b) for a, b in zip(seen, seen[1:], strict=False)]
    assert changed == [False, False, True, False, False, True]  # at counts 3 and 6


@pytest.mark.parametrize("every", [1, 3])
def test_verbose_prints_optax_win_rate(every, capfd):
    """The same lines as optax's, every n updates; the win rate is the unclipped fraction."""
    printed = []
    for lib, variant in ((optax, jax.jit), (gradtx, jax.jit), (gradtx, lambda f: f)):
        tx = _build(
            lib,
            "defaults",
            gamma=20.0,
            update_interval=1,
            verbose=True,
            print_win_rate_every_n_steps=every,
        )
        _run(variant, tx, make_params(), steps=7)
        jax.effects_barrier()
        printed.append(capfd.readouterr().out)
    assert printed[1] == printed[0] and printed[2] == printed[0]
    lines = printed[0].splitlines()
    assert len(lines) == 7 // every and all(
        line.startswith("Sophia optimizer win rate: ") for line in lines
    )
    assert float(lines[-1].rsplit(" ", 1)[1]) > 0


def test_print_every_zero_prints_nothing(capfd):
    """optax's docs say 0 turns the printout off; optax prints every update instead."""
    tx = sophia(1e-2, verbose=True, print_win_rate_every_n_steps=0)
    _run(jax.jit, tx, make_params(), steps=3)
    _run(lambda f: f, tx, make_params(), steps=3)
    jax.effects_barrier()
    assert capfd.readouterr().out == ""


def test_obj_fn_flows_through_chain():
    opt = gradtx.chain(gradtx.clip_by_global_norm(1.0), sophia(1e-2), gradtx.scale(0.5))
    ref = optax.chain(optax.clip_by_global_norm(1.0), OC.sophia(1e-2), optax.scale(0.5))
    ours, expected = (
        run(tx, make_params(), 12, update=jax.jit(functools.partial(tx.update, obj_fn=obj_fn)))
        for tx in (opt, ref)
    )  # fmt: skip
    assert_trees_close(ours, expected, rtol=1e-5, atol=1e-6)


def test_missing_obj_fn_is_named():
    tx = sophia(1e-2)
    params = make_params()
    with pytest.raises(ValueError, match="needs the extra argument obj_fn"):
        tx.update(params, tx.init(params), params)


def test_complex_leaf_raises_naming_it():
    """optax raises too (jnp.clip has no complex rule), with no leaf named."""
    tx = sophia(1e-2)
    params = complex_params()
    loss = lambda p: jnp.sum(jnp.abs(p["z"]) ** 2)  # noqa: E731
    with pytest.raises(ValueError, match=r"the leaf at \['z'\] is complex64"):
        tx.update(params, tx.init(params), params, obj_fn=loss)


# vmap over the learning rate, state dtypes, check_transform.
def _scan_run(opt, steps=10):
    params = {"w": make_params()["dense"][0], "b": make_params()["head"][0]}

    def step(carry, t):
        p, state = carry
        g = jax.grad(obj_fn)(p)
        u, state = opt.update(jax.tree.map(lambda x: x + 0.1 * jnp.sin(t + 0.0), g), state, p,
                              obj_fn=obj_fn)  # fmt: skip
        return (gradtx.apply_updates(p, u), state), None

    (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
    return params


@pytest.mark.parametrize(
    "make",
    [lambda lr: sophia(lr), lambda lr: sophia(lr, weight_decay=0.1, update_interval=2,
                                              clip_threshold=None)],
    ids=["defaults", "arguments"],
)  # fmt: skip
def test_vmap_over_learning_rate(make):
    lrs = np.geomspace(1e-3, 1e-1, 4).astype(np.float32)
    assert_vmap_equals_loop(lambda lr: _scan_run(make(lr)), lrs)


def test_bfloat16_state_runs_close_to_float32():
    opt16, opt32 = (sophia(1e-2, update_interval=2, state_dtype=s) for s in (BF16, None))
    p16, s16 = _run(jax.jit, opt16, make_params())
    p32, _ = _run(jax.jit, opt32, make_params())
    floats = [x for x in jax.tree.leaves((s16[0].mu, s16[0].nu))]
    assert floats and all(x.dtype == BF16 for x in floats)
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(p32), jax.tree.leaves(make_params()), strict=True))  # fmt: skip
    gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
        jax.tree.leaves(p16), jax.tree.leaves(p32), strict=True))  # fmt: skip
    assert moved > 0.1 and gap < 0.02 * moved, (gap, moved)


@pytest.mark.parametrize("name", ["defaults", "arguments"])
def test_check_transform(name):
    check_transform(_build(gradtx, name), make_params(), extra={"obj_fn": obj_fn}, steps=4,
                    name=name)  # fmt: skip


def test_hutchinson_check_transform():
    check_transform(hutchinson_estimator_diag_hessian(), make_params(), extra={"obj_fn": obj_fn})


# Arguments: optax's positions, names and defaults; state fields; errors.
def test_signature_is_optax_then_state_dtype():
    mine = list(inspect.signature(sophia).parameters.values())
    their = list(inspect.signature(OC.sophia).parameters.values())
    same = lambda p: (p.name, p.kind, p.default)  # noqa: E731
    # The default estimator is each library's own Hutchinson's (same seed, same draws).
    assert [same(p) for p in mine[: len(their)] if p.name != "hessian_diagonal_fn"] == [
        same(p) for p in their if p.name != "hessian_diagonal_fn"
    ]
    assert [p.name for p in mine[len(their) :]] == ["state_dtype"]
    assert all(p.kind is p.KEYWORD_ONLY for p in mine[len(their) :])
    mine = inspect.signature(hutchinson_estimator_diag_hessian).parameters
    their = inspect.signature(OC.hutchinson_estimator_diag_hessian).parameters
    assert [same(p) for p in mine.values()] == [same(p) for p in their.values()]


def test_state_fields_are_optax():
    assert SophiaState._fields == OC.SophiaState._fields
    assert HutchinsonState._fields == OC.HutchinsonState._fields


BAD = [
    (lambda: sophia(-0.1), "sophia: learning_rate must be in [0, inf), got -0.1"),
    (lambda: sophia(0.1, b1=1.0), "sophia: b1 must be in [0, 1), got 1"),
    (lambda: sophia(0.1, b2=-0.5), "sophia: b2 must be in [0, 1), got -0.5"),
    (lambda: sophia(0.1, eps=-1.0), "sophia: eps must be in [0, inf), got -1"),
    (lambda: sophia(0.1, weight_decay=-1.0), "sophia: weight_decay must be in [0, inf), got -1"),
    (lambda: sophia(0.1, gamma=-0.01), "sophia: gamma must be in [0, inf), got -0.01"),
    (lambda: sophia(0.1, clip_threshold=0.0), "sophia: clip_threshold must be in (0, inf], got 0"),
    (lambda: sophia(0.1, update_interval=0), "sophia: update_interval must be a positive integer"),
    (lambda: sophia(0.1, update_interval=2.5),
     "sophia: update_interval must be a positive integer, got 2.5"),
    (lambda: sophia(0.1, print_win_rate_every_n_steps=-1),
     "sophia: print_win_rate_every_n_steps must be an integer >= 0, got -1"),
    (lambda: sophia(0.1, mu_dtype=jnp.int32), "sophia: mu_dtype must be a floating or complex"),
    (lambda: sophia(0.1, mu_dtype=BF16, state_dtype=BF16),
     "sophia: give mu_dtype or state_dtype, not both"),
    (lambda: sophia(0.1, state_dtype=jnp.int8), "sophia: state_dtype must be a floating dtype"),
]  # fmt: skip


@pytest.mark.parametrize("build,message", BAD, ids=[m.split(" must")[0] for _, m in BAD])
def test_bad_hyperparameters_name_the_argument(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert message in str(error.value)


def test_a_tree_mismatch_names_the_path():
    tx = sophia(0.1)
    params = make_params()
    other = {**params, "head": [params["head"][0], jnp.zeros(4)]}
    with pytest.raises(ValueError, match=r"\['head'\]\[1\]"):
        tx.update(other, tx.init(params), other, obj_fn=obj_fn)
