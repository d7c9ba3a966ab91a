"""Every public transform, learner and schedule passes gradtx.testing's checks.

The transforms are read from the public namespace: a new learner whose
arguments gradtx.testing.hyperparameters knows is covered without touching
this file, and one it cannot build makes test_every_public_factory_is_covered
fail until it gets a builder here.
"""

from __future__ import annotations

import inspect
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SLOW, sampled
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradtx
from gradtx import schedules as S
from gradtx.testing import check_schedule, check_transform, hyperparameters, pytrees, to_numpy

EXAMPLES = int(os.environ.get("GRADTX_PROPERTY_EXAMPLES", "2" if SLOW else "1"))
EXTRA = {"value": 1.0, "batch_size": 8}  # the extras a train step passes; others ignore them


LR = gradtx.cntk.learning_rate_schedule(0.01, gradtx.cntk.UnitType.sample)
MOMENTUM = gradtx.cntk.momentum_as_time_constant_schedule(100)


def _odd(step):
    return step % 2 == 1


def _total_abs(tree):
    return sum((jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)), jnp.zeros(()))


def _lookahead_on_a_plain_tree():
    """lookahead's params are LookaheadParams: synced pairs made from the drawn tree."""
    inner = gradtx.lookahead(gradtx.adam(1e-2), 2, 0.5)

    def update(updates, state, params=None, **extra):
        pair = gradtx.LookaheadParams.init_synced(params)
        new, state = inner.update(updates, state, pair, **extra)
        return new.fast, state

    return gradtx.GradientTransformation(inner.init, update)


def _half_square_norm(params):
    """An objective of the float leaves: learners hand their line search those alone."""
    leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return sum((0.5 * jnp.sum(jnp.real(x * jnp.conj(x))) for x in leaves), jnp.float32(0))


def _full_batch(tx):
    """A line search reads the objective's value, gradient and function: the step's extras.

    The updates stand for the gradient; ``batch_size`` is dropped, since a line search
    passes every other extra on to ``value_fn``.
    """

    def update(updates, state, params=None, **extra):
        del extra
        value = _half_square_norm(params)
        return tx.update(
            updates, state, params, value=value, grad=updates, value_fn=_half_square_norm
        )

    return gradtx.GradientTransformation(tx.init, update)


def _with_objective(tx):
    """Sophia's Hessian estimate reads the objective as the ``obj_fn`` extra."""

    def update(updates, state, params=None, **extra):
        return tx.update(updates, state, params, obj_fn=_half_square_norm)

    return gradtx.GradientTransformation(tx.init, update)


# Factories whose arguments are transforms, functions or CNTK schedules: built by hand.
BUILDERS = {
    "accumulate": lambda: gradtx.accumulate(gradtx.adam(1e-2), 2),
    "apply_if_finite": lambda: gradtx.apply_if_finite(gradtx.adam(1e-2), 2),
    "chain": lambda: gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.sgd(0.1)),
    "float_leaves": lambda: gradtx.float_leaves(gradtx.scale_by_adam()),
    "packed": lambda: gradtx.packed(gradtx.adamw(1e-2), max_leaf_size=8),
    "inject_hyperparams": lambda: gradtx.inject_hyperparams(gradtx.adam)(learning_rate=1e-2),
    "inject_stateful_hyperparams": lambda: gradtx.inject_stateful_hyperparams(gradtx.sgd)(
        gradtx.WrappedSchedule(S.cosine_decay(0.1, 10)), 0.9
    ),
    "lookahead": lambda: _lookahead_on_a_plain_tree(),
    "lookahead_with_slow_weights": lambda: gradtx.lookahead_with_slow_weights(
        gradtx.adam(1e-2), 2, 0.5
    ),
    "MultiSteps": lambda: gradtx.MultiSteps(gradtx.adam(1e-2), 2),  # a class, not a function
    "apply_every": lambda: gradtx.apply_every(3),
    "conditionally_mask": lambda: gradtx.conditionally_mask(gradtx.adam(1e-2), _odd),
    "conditionally_transform": lambda: gradtx.conditionally_transform(gradtx.adam(1e-2), _odd),
    "freeze": lambda: gradtx.freeze(lambda p: jax.tree.map(lambda x: x.ndim > 1, p)),
    "selective_transform": lambda: gradtx.selective_transform(gradtx.adam(1e-2), freeze_mask=False),
    "named_chain": lambda: gradtx.named_chain(
        ("clip", gradtx.clip_by_global_norm(1.0)), ("sgd", gradtx.sgd(0.1))
    ),
    "with_extra_args_support": lambda: gradtx.with_extra_args_support(gradtx.adam(1e-2)),
    "stateless_with_tree_map": lambda: gradtx.stateless_with_tree_map(lambda g, p: 2 * g),
    "snapshot": lambda: gradtx.snapshot("total", _total_abs),
    "monitor": lambda: gradtx.monitor({"total": _total_abs, "big": lambda u: _total_abs(u) > 1}),
    "measure_with_ema": lambda: gradtx.monitor({"ema": gradtx.measure_with_ema(_total_abs, 0.9)}),
    "masked": lambda: gradtx.masked(
        gradtx.adam(1e-2), lambda p: jax.tree.map(lambda x: x.ndim > 1, p)
    ),
    "multi_transform": lambda: gradtx.multi_transform(
        {"weights": gradtx.adam(1e-2)}, lambda p: jax.tree.map(lambda _: "weights", p)
    ),
    "partition": lambda: gradtx.partition(
        {"weights": gradtx.adam(1e-2)}, lambda p: jax.tree.map(lambda _: "weights", p)
    ),
    "stateless": lambda: gradtx.stateless(lambda g, p: jax.tree.map(lambda x: 2 * x, g)),
    "scale_by_schedule": lambda: gradtx.scale_by_schedule(S.cosine_decay(1.0, 10)),
    "scale_by_rate": lambda: gradtx.scale_by_rate(0.1),
    "scale_by_fsadagrad": lambda: gradtx.scale_by_fsadagrad(0.99),
    "scale_by_minibatch_adam": lambda: gradtx.scale_by_minibatch_adam(0.9, 0.999),
    "scale_by_rms_sign_steps": lambda: gradtx.scale_by_rms_sign_steps(0.9, 1.2, 0.7, 10, 0.1),
    "reduce_on_plateau": lambda: S.reduce_on_plateau(factor=0.5, patience=1),
    "adaptive_grad_clip": lambda: gradtx.adaptive_grad_clip(0.1),
    "add_noise": lambda: gradtx.add_noise(0.01, 0.55, seed=0),
    "clip_by_block_rms": lambda: gradtx.clip_by_block_rms(0.5),
    "lbfgs": lambda: _full_batch(gradtx.lbfgs()),
    "scale_by_backtracking_linesearch": lambda: _full_batch(
        gradtx.scale_by_backtracking_linesearch(15)
    ),
    "scale_by_zoom_linesearch": lambda: _full_batch(gradtx.scale_by_zoom_linesearch(15)),
    "cntk.sgd": lambda: gradtx.cntk.sgd(LR),
    "cntk.momentum_sgd": lambda: gradtx.cntk.momentum_sgd(LR, MOMENTUM),
    "cntk.nesterov": lambda: gradtx.cntk.nesterov(LR, MOMENTUM),
    "cntk.adagrad": lambda: gradtx.cntk.adagrad(LR),
    "cntk.rmsprop": lambda: gradtx.cntk.rmsprop(LR, 0.9, 1.2, 0.7, 10.0, 0.1),
    "cntk.fsadagrad": lambda: gradtx.cntk.fsadagrad(LR, MOMENTUM),
    "cntk.adam": lambda: gradtx.cntk.adam(LR, MOMENTUM),
    # optax.contrib's learners (issue 22) that take transforms, objectives or a kind.
    "mechanize": lambda: gradtx.mechanize(gradtx.adam(1e-2)),
    # scale_by_muon takes matrices only (muon sends the rest to AdamW).
    "scale_by_muon": lambda: gradtx.masked(
        gradtx.scale_by_muon(), lambda p: jax.tree.map(lambda x: jnp.ndim(x) >= 2, p)
    ),
    "scale_by_dog": lambda: gradtx.scale_by_dog(("learning_rate", 0.1)),
    "schedule_free": lambda: gradtx.schedule_free(gradtx.sgd(0.1), 0.1),
    "schedule_free_sgd": lambda: gradtx.schedule_free_sgd(0.1),  # a drawn b1 may be 0
    "schedule_free_adamw": lambda: gradtx.schedule_free_adamw(1e-2),
    "sam": lambda: gradtx.sam(gradtx.sgd(0.1), gradtx.chain(gradtx.normalize(), gradtx.sgd(0.05))),
    "sophia": lambda: _with_objective(gradtx.sophia(1e-2)),
    "hutchinson_estimator_diag_hessian": lambda: _with_objective(
        gradtx.hutchinson_estimator_diag_hessian(0)
    ),
    "cntk.adadelta": lambda: gradtx.cntk.adadelta(),
}

# Public functions that are not transform factories.
NOT_TRANSFORMS = {
    "grouped",  # packed's deprecated name: tests/test_packing.py checks that it is packed
    "apply_updates", "find_learning_rate", "fused_available", "fused_update", "get_hyperparams",
    "groups_by_path", "init_empty_state", "is_fused", "load_state_dict", "make_train_step", "pack",
    "set_hyperparams", "state_dict", "sweep", "zero_shardings",
    "skip_large_updates", "skip_not_finite",  # MultiSteps' skip rules
    "per_example_global_norm_clip", "per_example_layer_norm_clip",  # DP-SGD's tree functions
    "value_and_grad_from_state",  # the line searches' value_and_grad
    "schedule_free_eval_params", "eval_params",  # schedule-free's params to evaluate at
    "from_optax_state", "to_optax_state",  # converting optax checkpoints
    "compressed_mean", "powersgd_mean",  # need a bound data axis: distributed/compression_cases
    "orthogonalize_via_newton_schulz",  # Muon's iteration on one matrix
    "global_norm", "incremental_update", "periodic_update", "safe_norm",  # gradtx.utils
    "safe_root_mean_squares", "scale_gradient", "tree_map_params",
    *gradtx.schedules.optax_schedules.__all__,  # optax's schedules, at the top level as in optax
}  # fmt: skip


def public_factories() -> list[str]:
    names = [n for n in gradtx.__all__ if inspect.isfunction(getattr(gradtx, n))]
    return sorted(n for n in names if n not in NOT_TRANSFORMS)


def automatic(name: str) -> bool:
    """Whether hyperparameters() can build ``name`` from its signature alone."""
    try:
        hyperparameters(getattr(gradtx, name))
    except ValueError:
        return False
    return True


FACTORIES = [n for n in public_factories() if n not in BUILDERS] + sorted(BUILDERS)


def test_every_public_factory_is_covered():
    for name in public_factories():
        assert name in BUILDERS or automatic(name), (
            f"gradtx.{name}: hyperparameters() cannot build it; add a builder to BUILDERS"
        )
    cntk = {f"cntk.{n}" for n in gradtx.cntk.__all__ if n in BUILDERS_CNTK}
    assert cntk <= set(BUILDERS)


BUILDERS_CNTK = {"sgd", "momentum_sgd", "nesterov", "adagrad", "rmsprop", "fsadagrad", "adam",
                 "adadelta"}  # fmt: skip


@pytest.mark.parametrize("name", FACTORIES)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=pytrees(max_leaves=4), data=st.data())
def test_transform_passes_the_checks(name, params, data):
    check_transform(build(name, data), params, extra=EXTRA, name=name)


def build(name, data, **fixed):
    """The factory's transform: by hand, or with drawn hyperparameters (``fixed`` overrides)."""
    if name in BUILDERS:
        return BUILDERS[name]()
    drawn = data.draw(hyperparameters(getattr(gradtx, name)))
    return getattr(gradtx, name)(**{**drawn, **fixed})


@pytest.mark.parametrize("name", FACTORIES)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fused_update_is_update_then_apply(name, data):
    """A block declaring another block's rule, or a recipe misreading a state, shows here."""
    tx = build(name, data)
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.full(3, 0.5)}
    for opt in (tx, gradtx.chain(tx, gradtx.scale(-1e-2))):  # a block, then as a learner
        fused = plain = (params, opt.init(params))
        for t in range(3):
            grads = jax.tree.map(lambda p, t=t: jnp.sin(p * (t + 2)) + 0.1 * t, params)
            fused = gradtx.fused_update(opt, grads, fused[1], fused[0], **EXTRA)
            updates, state = opt.update(grads, plain[1], plain[0], **EXTRA)
            plain = (gradtx.apply_updates(plain[0], updates), state)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-6),
            fused,
            plain,
        )


# Transforms with no rule for complex numbers (sign rules, CNTK's learners, clipping
# to an interval): a complex leaf raises naming its path, never comes back as its gradient.
NO_COMPLEX_RULE = {"adadelta", "clip", "lion", "scale_by_adadelta", "scale_by_fsadagrad",
                   "scale_by_lion", "scale_by_minibatch_adam", "scale_by_rms_sign_steps",
                   "keep_params_nonnegative", "rprop", "scale_by_rprop", "scale_by_sign",
                   "sign_sgd", "signum", "scale_by_distance_over_gradients", "sm3",
                   "scale_by_sm3", *(f"cntk.{n}" for n in BUILDERS_CNTK),
                   # optax.contrib's (issue 22): optax's own numbers are wrong on complex leaves
                   "prodigy", "dadapt_adamw", "cocob", "scale_by_cocob", "sophia",
                   "hutchinson_estimator_diag_hessian"}  # fmt: skip
# adafactor keeps its momentum in float32 by default, which raises naming dtype_momentum for
# a complex leaf; with the params' dtype it has a complex rule.
COMPLEX_DRAWS = {"adafactor": {"dtype_momentum": None}}
COMPLEX_LEAF = jnp.asarray([[0.5 - 1.0j, 2.0 + 0.25j], [-1.5j, 0.75]], jnp.complex64)


# Half the factories by default (tests/test_complex.py compares every learner that takes a
# complex leaf with optax's), all of them with GRADTX_SLOW=1.
@pytest.mark.parametrize("name", sampled(FACTORIES))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=pytrees(max_leaves=3), data=st.data())
def test_transform_passes_the_checks_on_a_tree_with_a_complex_leaf(name, params, data):
    tx = build(name, data, **COMPLEX_DRAWS.get(name, {}))
    tree = {"model": params, "z": COMPLEX_LEAF}
    if name in NO_COMPLEX_RULE:
        with pytest.raises(ValueError, match=r"the leaf at \['z'\] is complex64"):
            tx.update(tree, tx.init(tree), tree, **EXTRA)
        return
    check_transform(tx, tree, extra=EXTRA, name=name)


values = st.floats(1e-3, 10.0)
lengths = st.integers(1, 10_000)
decays = st.floats(0.05, 1.0)
scales = st.dictionaries(st.integers(0, 10**6), st.floats(0, 2), max_size=3)  # {count: scale}

SCHEDULES = {
    "constant": st.builds(S.constant, values),
    "linear": st.builds(S.linear, values, values, lengths),
    "step_decay": st.builds(S.step_decay, values, lengths, decays),
    "multistep_decay": st.builds(
        lambda v, ms, f: S.multistep_decay(v, sorted(set(ms)), f),
        values, st.lists(st.integers(0, 10**6), min_size=1, max_size=4), decays,
    ),
    "piecewise_constant": st.builds(
        lambda bs, vs: S.piecewise_constant(sorted(set(bs)), vs[: len(set(bs)) + 1]),
        st.lists(st.integers(1, 10**6), min_size=1, max_size=3),
        st.lists(values, min_size=4, max_size=4),
    ),
    "polynomial_decay": st.builds(S.polynomial_decay, values, values, st.floats(0.5, 3), lengths),
    "geometric_decay": st.builds(S.geometric_decay, values, st.floats(0.1, 0.99), lengths,
                                 st.booleans()),
    "cosine_decay": st.builds(S.cosine_decay, values, lengths, st.floats(0, 1e-3)),
    "inverse_sqrt": st.builds(S.inverse_sqrt, values, lengths),
    "triangular": st.builds(S.triangular, st.floats(0, 1), values, st.integers(2, 10_000),
                            st.floats(0.1, 0.9)),
    "warmup": st.builds(lambda v, n: S.warmup(S.cosine_decay(v, 1000), n), values, lengths),
    "cooldown": st.builds(lambda v, a, n: S.cooldown(S.constant(v), a, n, 0.0), values, lengths,
                          lengths),
    "join": st.builds(lambda v, n: S.join([S.constant(v), S.linear(v, 0.0, n)], [n]), values,
                      lengths),
    "cyclic": st.builds(
        lambda n, lo, d, m: S.cyclic(S.shapes.cosine, n, lo, lo + 1.0, d, m),
        st.integers(2, 5000), st.floats(0, 1), st.floats(1.0, 2.0), decays,
    ),
    "cyclic_lr": st.builds(lambda n, mode: S.cyclic_lr(0.1, 1.0, n, mode=mode, gamma=0.999),
                           st.integers(1, 5000),
                           st.sampled_from(["triangular", "triangular2", "exp_range"])),
    "cosine_restarts": st.builds(lambda n, mult, m: S.cosine_restarts(1.0, n, mult,
                                                                      magnitude_decay=m),
                                 st.integers(1, 5000), st.integers(1, 3), decays),
    "one_cycle": st.builds(lambda n, c: S.one_cycle(0.1, 1.0, n, c, 0.01),
                           st.integers(2, 5000), st.integers(1, 5000)),
    # optax's schedules under optax's names
    "constant_schedule": st.builds(S.constant_schedule, values),
    "linear_schedule": st.builds(S.linear_schedule, values, values, lengths, st.integers(0, 10**6)),
    "polynomial_schedule": st.builds(S.polynomial_schedule, values, values, st.floats(0.5, 3),
                                     lengths, st.integers(0, 10**6)),
    "exponential_decay": st.builds(S.exponential_decay, values, lengths, st.floats(0.1, 1.0),
                                   st.integers(0, 10**6), st.booleans()),
    "cosine_decay_schedule": st.builds(S.cosine_decay_schedule, values, lengths, st.floats(0, 1),
                                       st.floats(0.5, 3)),
    "piecewise_constant_schedule": st.builds(S.piecewise_constant_schedule, values, scales),
    "piecewise_interpolate_schedule": st.builds(S.piecewise_interpolate_schedule,
                                                st.sampled_from(["linear", "cosine"]), values,
                                                scales),
    "linear_onecycle_schedule": st.builds(S.linear_onecycle_schedule, lengths, values),
    "cosine_onecycle_schedule": st.builds(S.cosine_onecycle_schedule, lengths, values),
    "warmup_constant_schedule": st.builds(S.warmup_constant_schedule, values, values, lengths),
    "warmup_cosine_decay_schedule": st.builds(
        lambda a, b, w, d: S.warmup_cosine_decay_schedule(a, b, w, w + d), values, values,
        lengths, lengths),
    "warmup_exponential_decay_schedule": st.builds(S.warmup_exponential_decay_schedule, values,
                                                   values, lengths, lengths, st.floats(0.1, 0.99)),
    "sgdr_schedule": st.builds(
        lambda w, d: S.sgdr_schedule(
            [dict(init_value=0.0, peak_value=1.0, warmup_steps=w, decay_steps=w + d)] * 2),
        lengths, lengths),
    "join_schedules": st.builds(
        lambda v, n: S.join_schedules([S.constant_schedule(v), S.linear_schedule(v, 0.0, n)], [n]),
        values, lengths),
}  # fmt: skip

NOT_SCHEDULES = {"plot_schedule", "reduce_on_plateau"}


def test_every_public_schedule_is_covered():
    names = {n for n in S.__all__ if inspect.isfunction(getattr(S, n))} - NOT_SCHEDULES
    assert names == set(SCHEDULES), names ^ set(SCHEDULES)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(data=st.data())
def test_schedule_passes_the_checks(name, data):
    check_schedule(data.draw(SCHEDULES[name]))


def test_checks_accept_float16_and_bfloat16_trees():
    params = {"h": jnp.ones((3, 2), jnp.float16), "b": jnp.ones(4, jnp.bfloat16)}
    check_transform(gradtx.sgd(0.1, momentum=0.9), params, rtol=1e-2, atol=1e-3)
