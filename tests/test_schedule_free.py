"""Schedule-Free (schedule_free, schedule_free_sgd, schedule_free_adamw) against optax.contrib.

optax 0.2.8 is the oracle: 50 steps on conftest's nested tree and on a tree with a
complex64 leaf, with and without jit, comparing the params (y), the state's z, the eval
params (x) and the averaging scalars, at the defaults and with every argument moved off
its default; then the eval params found inside other states, vmap over the learning
rate, bfloat16 z, extras, check_transform and argument errors.
"""

from __future__ import annotations

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
from gradtx.learners.schedule_free import schedule_free_adamw, schedule_free_sgd
from gradtx.testing import check_transform
from gradtx.transforms.schedule_free import (
    ScheduleFreeState,
    schedule_free,
    schedule_free_eval_params,
)

STEPS = 50
BF16 = jnp.bfloat16
OC = optax.contrib


def _lr_schedule(count):
    return 0.05 * jnp.minimum(1.0, (count + 1) / 8)


# name -> (ours, optax's): at the defaults, and with every argument moved off its default.
PAIRS = {
    "sgd": (schedule_free_sgd, OC.schedule_free_sgd, (), {}),
    "sgd arguments": (schedule_free_sgd, OC.schedule_free_sgd, (0.2, 5, 0.8, 0.01, 1.5), {}),
    "adamw": (schedule_free_adamw, OC.schedule_free_adamw, (), {}),
    "adamw arguments": (schedule_free_adamw, OC.schedule_free_adamw,
                        (1e-2, 5, 0.8, 0.99, 1e-6, 0.05, 1.0), {}),
    # The wrapper around each library's own Adam without momentum, with a schedule.
    "schedule_free": (
        lambda *a: schedule_free(gradtx.adam(_lr_schedule, b1=0.0), *a),
        lambda *a: OC.schedule_free(optax.adam(_lr_schedule, b1=0.0), *a),
        (_lr_schedule, 0.95, 1.0), {},
    ),
}  # fmt: skip


def _pair(name, **more):
    ours, theirs, args, kwargs = PAIRS[name]
    return ours(*args, **kwargs, **more), theirs(*args, **kwargs, **more)


def _run(variant, tx, eval_params, params, steps=STEPS, gradient=grads_at):
    update, p = variant(tx.update), params
    state = tx.init(p)
    for t in range(steps):
        u, state = update(gradient(p, t), state, p)
        p = optax.apply_updates(p, u)
    return p, state, eval_params(state, p)


def _assert_matches(ours, theirs, rtol=1e-5, atol=1e-6):
    (p1, s1, x1), (p2, s2, x2) = ours, theirs
    assert_trees_close(p1, p2, rtol, atol)  # y
    assert_trees_close(x1, x2, rtol, atol)  # x, the eval params
    assert type(s1).__name__ == type(s2).__name__ and s1._fields == s2._fields
    for field in ("b1", "weight_sum", "step_count", "max_lr", "z"):
        assert_trees_close(getattr(s1, field), getattr(s2, field), rtol, atol)
    # The base optimizers' states: the same leaves (moments and counts) in the same order.
    assert_trees_close(
        jax.tree.leaves(s1.base_optimizer_state), jax.tree.leaves(s2.base_optimizer_state),
        rtol, atol,
    )  # fmt: skip


class MatchesOptax(chex.TestCase, parameterized.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(*((n, n) for n in PAIRS))
    def test_fifty_steps(self, name):
        ours, theirs = _pair(name)
        _assert_matches(
            _run(self.variant, ours, schedule_free_eval_params, make_params()),
            _run(self.variant, theirs, OC.schedule_free_eval_params, make_params()),
        )

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("sgd", "sgd arguments"), ("adamw", "adamw arguments"))
    def test_bfloat16_z_is_optax_state_dtype(self, name):
        """optax's state_dtype stores z rounded to nearest; so does gradtx's."""
        ours, theirs = _pair(name, state_dtype=BF16)
        result = _run(self.variant, ours, schedule_free_eval_params, make_params())
        assert all(z.dtype == BF16 for z in jax.tree.leaves(result[1].z))
        _assert_matches(
            result, _run(self.variant, theirs, OC.schedule_free_eval_params, make_params())
        )

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(("sgd", "sgd arguments"), ("adamw", "adamw"))
    def test_complex_leaf(self, name):
        """The rule is linear: optax's complex numbers, z complex, the scalars real."""
        ours, theirs = _pair(name)
        result = _run(self.variant, ours, schedule_free_eval_params, complex_params(),
                      gradient=complex_gradient)  # fmt: skip
        assert result[1].z["z"].dtype == jnp.complex64 and result[1].b1.dtype == jnp.float32
        _assert_matches(
            result,
            _run(self.variant, theirs, OC.schedule_free_eval_params, complex_params(),
                 gradient=complex_gradient),
        )  # fmt: skip


def test_schedule_is_evaluated_at_step_count_from_one():
    """optax evaluates schedule_free's learning rate at step_count, which starts at 1."""
    seen = []
    tx = schedule_free(gradtx.sgd(0.1), lambda count: seen.append(int(count)) or 0.1)
    params = {"w": jnp.ones(2)}
    state = tx.init(params)
    for _ in range(3):
        _, state = tx.update(params, state, params)
    assert seen == [1, 2, 3] and int(state.step_count) == 4


def test_zero_learning_rate_does_not_divide_zero_by_zero():
    """During a warm-up from 0 the averaging weight is 0, not NaN (as optax)."""
    tx = schedule_free(gradtx.sgd(0.0), 0.0)
    params = {"w": jnp.ones(2)}
    updates, state = tx.update(params, tx.init(params), params)
    np.testing.assert_array_equal(updates["w"], 0.0)
    assert float(state.weight_sum) == 0.0


# The eval params: found by type anywhere in a state.
def test_eval_params_find_the_state_inside_other_states():
    params = make_params()
    grads = grads_at(params, 0)
    alone = schedule_free_sgd(0.1)
    u, state = alone.update(grads, alone.init(params), params)
    expected = schedule_free_eval_params(state, gradtx.apply_updates(params, u))
    for wrapped in (
        gradtx.chain(gradtx.identity(), schedule_free_sgd(0.1)),
        gradtx.named_chain(("clip", gradtx.clip_by_global_norm(1e6)),
                           ("sf", schedule_free_sgd(0.1))),
        gradtx.chain(gradtx.chain(schedule_free_sgd(0.1)), gradtx.scale(1.0)),
    ):  # fmt: skip
        u, s = wrapped.update(grads, wrapped.init(params), params)
        assert_trees_close(schedule_free_eval_params(s, gradtx.apply_updates(params, u)), expected)


def test_eval_params_are_x_from_y_and_z():
    """x = (y - (1 - b1) z) / b1, by hand."""
    tx = schedule_free_sgd(0.3, b1=0.7)
    params = {"w": jnp.array([1.0, -2.0])}
    u, state = tx.update(params, tx.init(params), params)
    y = gradtx.apply_updates(params, u)["w"]
    np.testing.assert_allclose(
        schedule_free_eval_params(state, {"w": y})["w"], (y - 0.3 * state.z["w"]) / 0.7, rtol=1e-6
    )


@pytest.mark.parametrize(
    "state,found",
    [
        (gradtx.adam(0.1).init({"w": jnp.ones(2)}), "none"),
        (gradtx.chain(schedule_free_sgd(), schedule_free_sgd()).init({"w": jnp.ones(2)}),
         "2 of them"),
    ],
    ids=["none", "two"],
)  # fmt: skip
def test_eval_params_without_one_state_raise(state, found):
    with pytest.raises(ValueError, match=f"exactly one ScheduleFreeState.*found {found}"):
        schedule_free_eval_params(state, {"w": jnp.ones(2)})


def test_integer_leaves_are_left_alone():
    params = {"w": jnp.array([1.0, -2.0]), "step": jnp.array(3), "h": jnp.array([0.5], jnp.float16)}
    tx = schedule_free_adamw(0.1)
    grads = {"w": params["w"], "step": jnp.array(0), "h": jnp.array([0.25], jnp.float16)}
    u, state = tx.update(grads, tx.init(params), params)
    assert int(u["step"]) == 0 and u["h"].dtype == jnp.float16
    new = gradtx.apply_updates(params, u)
    x = schedule_free_eval_params(state, new)
    assert int(x["step"]) == 3 and np.all(np.isfinite(np.asarray(x["w"])))


# vmap over the learning rate, extras, check_transform.
def _scan_run(opt, steps=10):
    params = {"w": make_params()["dense"][0], "b": make_params()["head"][0]}
    zeros = jax.tree.map(jnp.zeros_like, params)
    noise = jax.tree.map(lambda *n: jnp.stack(n), *(grads_at(zeros, t) for t in range(steps)))

    def step(carry, noise):
        p, state = carry
        u, state = opt.update(jax.tree.map(lambda p, n: 0.5 * p + n, p, noise), state, p)
        return (gradtx.apply_updates(p, u), state), None

    (params, state), _ = jax.lax.scan(step, (params, opt.init(params)), noise)
    return params, schedule_free_eval_params(state, params)


@pytest.mark.parametrize(
    "make",
    [lambda lr: schedule_free_sgd(lr, 3), lambda lr: schedule_free_adamw(lr, 3, weight_decay=0.1),
     lambda lr: schedule_free(gradtx.sgd(lr), lr)],
    ids=["sgd", "adamw", "schedule_free"],
)  # fmt: skip
def test_vmap_over_learning_rate(make):
    lrs = np.geomspace(1e-3, 1e-1, 4).astype(np.float32)
    assert_vmap_equals_loop(lambda lr: _scan_run(make(lr)), lrs)


def test_extras_reach_the_base_optimizer_through_chain():
    base = gradtx.stateless(lambda g, p, *, value: jax.tree.map(lambda x: -value * x, g))
    opt = gradtx.chain(gradtx.identity(), schedule_free(base, 1.0))
    params = {"w": jnp.array([1.0, -2.0])}
    _, state = opt.update(params, opt.init(params), params, value=0.5)
    np.testing.assert_allclose(state[1].z["w"], [0.5, -1.0])


@pytest.mark.parametrize(
    "make",
    [schedule_free_sgd, lambda: schedule_free_adamw(1e-2, 2, weight_decay=0.1),
     lambda: schedule_free(gradtx.adam(1e-2, b1=0.0), 1e-2, 0.95, 1.0)],
    ids=["sgd", "adamw", "schedule_free"],
)  # fmt: skip
def test_check_transform(make):
    check_transform(make(), make_params(), name="schedule_free")
    tree = {"z": complex_params()["z"], "w": jnp.ones(3)}
    check_transform(make(), tree, name="schedule_free on a complex leaf")


# Arguments: optax's positions, names and defaults; state fields; errors.
@pytest.mark.parametrize(
    "ours,theirs",
    [(schedule_free, OC.schedule_free), (schedule_free_sgd, OC.schedule_free_sgd),
     (schedule_free_adamw, OC.schedule_free_adamw)],
    ids=["schedule_free", "sgd", "adamw"],
)  # fmt: skip
def test_signature_is_optax(ours, theirs):
    mine = [(p.name, p.kind, p.default) for p in inspect.signature(ours).parameters.values()]
    their = [(p.name, p.kind, p.default) for p in inspect.signature(theirs).parameters.values()]
    assert mine == their


def test_state_fields_are_optax():
    assert ScheduleFreeState._fields == OC.ScheduleFreeState._fields


BAD = [
    (lambda: schedule_free(gradtx.sgd(0.1), 0.1, b1=0.0),
     "schedule_free: b1 must be in (0, 1], got 0"),
    (lambda: schedule_free(gradtx.sgd(0.1), -0.1),
     "schedule_free: learning_rate must be in [0, inf)"),
    (lambda: schedule_free(gradtx.sgd(0.1), 0.1, weight_lr_power=-1.0),
     "schedule_free: weight_lr_power must be in [0, inf), got -1"),
    (lambda: schedule_free(gradtx.sgd(0.1), 0.1, state_dtype=jnp.int32),
     "schedule_free: state_dtype must be a floating or complex dtype"),
    (lambda: schedule_free_sgd(warmup_steps=0),
     "schedule_free_sgd: warmup_steps must be > 0, got 0"),
    (lambda: schedule_free_sgd(b1=1.5), "schedule_free_sgd: b1 must be in (0, 1], got 1.5"),
    (lambda: schedule_free_sgd(weight_decay=-1.0),
     "schedule_free_sgd: weight_decay must be in [0, inf)"),
    (lambda: schedule_free_sgd(-1.0), "schedule_free_sgd: learning_rate must be in [0, inf)"),
    (lambda: schedule_free_adamw(b2=1.0), "schedule_free_adamw: b2 must be in [0, 1), got 1"),
    (lambda: schedule_free_adamw(eps=-1.0), "schedule_free_adamw: eps must be in [0, inf), got -1"),
    (lambda: schedule_free_adamw(warmup_steps=2.5),
     "schedule_free_adamw: warmup_steps must be an integer number of steps, got 2.5"),
    (lambda: schedule_free_adamw(b1=0.0), "schedule_free_adamw: b1 must be in (0, 1], got 0"),
]  # fmt: skip


@pytest.mark.parametrize("build,message", BAD, ids=[m.split(" must")[0] for _, m in BAD])
def test_bad_hyperparameters_name_the_argument(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert message in str(error.value)


def test_a_real_state_dtype_for_a_complex_leaf_raises_naming_it():
    tx = schedule_free_sgd(state_dtype=BF16)
    with pytest.raises(ValueError, match=r"state_dtype=bfloat16 cannot hold z .*\['z'\]"):
        tx.init(complex_params())


def test_update_needs_params_and_matching_trees():
    tx = schedule_free_sgd()
    params = make_params()
    with pytest.raises(ValueError, match="schedule_free: update needs the params"):
        tx.update(params, tx.init(params))
    other = {**params, "head": [params["head"][0], jnp.zeros(4)]}
    with pytest.raises(ValueError, match=r"\['head'\]\[1\]"):
        tx.update(other, tx.init(params), other)
