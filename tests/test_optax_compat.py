"""optax code ports by changing the import: each call below, written as optax's docs write it,
runs with ``optax`` bound to gradtx and gives optax's numbers (rtol 1e-6 over 50 steps).

The modules of each part hold the detailed tests (test_optax_schedules, test_optax_wrappers,
test_multi_steps, test_optax_dtypes, test_optax_hyperparams, test_optax_arguments,
test_tree_utils); this one is the port: the same source text, run twice.
"""

from __future__ import annotations

import inspect
import typing

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import grads_at, make_params

import gradtx

# Each entry is optax code, evaluated once with ``optax`` the real optax and once with it
# gradtx. ``mask`` and ``labels`` fit conftest.make_params' tree.
MASK = {"dense": [True, False], "conv": True, "head": [False, True]}
LABELS = {"dense": ["a", "b"], "conv": "a", "head": ["b", "a"]}

LEARNERS = [
    "optax.sgd(0.1)",
    "optax.sgd(learning_rate=0.05, momentum=0.9, nesterov=True)",
    "optax.sgd(0.05, 0.9, False, jnp.float32)",
    "optax.adam(1e-2)",
    "optax.adam(learning_rate=1e-2, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8)",
    "optax.adam(1e-2, 0.9, 0.999, 1e-8, 0.0, jnp.float32, nesterov=True)",
    "optax.adamw(1e-2, weight_decay=1e-2)",
    "optax.adamw(1e-2, 0.9, 0.999, 1e-8, 0.0, None, 1e-3, MASK)",
    "optax.adamw(optax.cosine_decay_schedule(1e-2, 50), weight_decay=1e-4, mask=MASK)",
    "optax.nadam(1e-2)",
    "optax.amsgrad(1e-2, b1=0.8)",
    "optax.adamax(1e-2)",
    "optax.rmsprop(1e-2)",
    "optax.rmsprop(1e-2, decay=0.95, eps=1e-6, initial_scale=0.1, centered=True)",
    "optax.rmsprop(1e-2, momentum=0.9, nesterov=True)",
    "optax.adagrad(0.1, initial_accumulator_value=0.1, eps=1e-7)",
    "optax.lion(1e-3, b1=0.9, b2=0.99, weight_decay=1e-3)",
    "optax.adadelta(learning_rate=1.0, rho=0.9, eps=1e-6)",
]
BLOCKS = [
    "optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))",
    "optax.chain(optax.clip(0.5), optax.scale_by_adam(), optax.scale(-1e-2))",
    "optax.chain(optax.scale_by_rms(decay=0.9), optax.scale_by_learning_rate(1e-2))",
    "optax.chain(optax.scale_by_stddev(), optax.trace(decay=0.9, nesterov=False), "
    "optax.scale(-1e-2))",
    "optax.chain(optax.ema(decay=0.9, debias=True), optax.scale(-0.1))",
    "optax.chain(optax.scale_by_rss(), optax.scale(-0.1))",
    "optax.chain(optax.scale_by_amsgrad(), optax.scale_by_schedule("
    "optax.linear_schedule(1e-2, 1e-3, 50)), optax.scale(-1.0))",
    "optax.chain(optax.scale_by_adamax(), optax.add_decayed_weights(1e-2), optax.scale(-1e-2))",
    "optax.chain(optax.scale_by_lion(), optax.scale(-1e-3))",
    "optax.chain(optax.identity(), optax.sgd(0.1))",
]
COMBINATORS = [
    "optax.masked(optax.adam(1e-2), MASK)",
    "optax.partition({'a': optax.adam(1e-2), 'b': optax.sgd(0.1)}, LABELS)",
    "optax.multi_transform({'a': optax.adam(1e-2), 'b': optax.set_to_zero()}, LABELS)",
    "optax.chain(optax.freeze(MASK), optax.sgd(0.1))",
    "optax.selective_transform(optax.adam(1e-2), freeze_mask=MASK)",
    "optax.named_chain(('clip', optax.clip_by_global_norm(1.0)), ('adam', optax.adam(1e-2)))",
    "optax.inject_hyperparams(optax.adam)(learning_rate=1e-2, b1=0.8)",
    "optax.inject_hyperparams(optax.sgd)(optax.linear_schedule(0.1, 0.01, 50), 0.9)",
    "optax.inject_hyperparams(optax.adamw, static_args='mask')(1e-2, mask=MASK)",
    "optax.apply_if_finite(optax.sgd(0.1), max_consecutive_errors=3)",
    "optax.MultiSteps(optax.adam(1e-2), every_k_schedule=3)",
    "optax.MultiSteps(optax.sgd(0.1), 2, use_grad_mean=False)",
    "optax.chain(optax.apply_every(k=2), optax.scale(-0.1))",
    "optax.conditionally_transform(optax.adam(1e-2), lambda step: step % 2 == 0)",
    "optax.conditionally_mask(optax.sgd(0.1), lambda step: step >= 3)",
    "optax.chain(optax.stateless(lambda u, p: jax.tree.map(lambda x: -0.1 * x, u)))",
    "optax.chain(optax.stateless_with_tree_map(lambda g, p: -0.1 * g))",
    "optax.with_extra_args_support(optax.adam(1e-2))",
]
CASES = LEARNERS + BLOCKS + COMBINATORS


def _build(source: str, module):
    return eval(source, {"optax": module, "jnp": jnp, "jax": jax, "MASK": MASK, "LABELS": LABELS})


def _trajectory(opt, steps: int = 50, jit: bool = True):
    params = make_params()
    state = opt.init(params)
    update = jax.jit(opt.update) if jit else opt.update
    for t in range(steps):
        updates, state = update(grads_at(params, t), state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params


@pytest.mark.parametrize("source", CASES)
def test_optax_code_gives_optaxs_numbers(source):
    theirs = _trajectory(_build(source, optax))
    ours = _trajectory(_build(source, gradtx))
    chex.assert_trees_all_close(ours, theirs, rtol=1e-6, atol=1e-6)


class EagerAndJitted(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_a_chain_with_a_schedule_ports_with_and_without_jit(self):
        source = (
            "optax.chain(optax.clip_by_global_norm(1.0), optax.adamw("
            "optax.warmup_cosine_decay_schedule(0.0, 1e-2, 5, 50, 1e-4), weight_decay=1e-2))"
        )
        results = []
        for module in (optax, gradtx):
            opt = _build(source, module)
            params = make_params()
            state = opt.init(params)
            update = self.variant(opt.update)
            for t in range(10):
                updates, state = update(grads_at(params, t), state, params)
                params = jax.tree.map(lambda p, u: p + u, params, updates)
            results.append(params)
        chex.assert_trees_all_close(*results, rtol=1e-6, atol=1e-7)


def _state_after_a_step(source: str):
    opt = _build(source, gradtx)
    params = make_params()
    state = opt.init(params)
    return opt.update(grads_at(params, 0), state, params)[1]


# Where optax users read a state: the same expression on both libraries' states.
FIELDS = [
    ("optax.adam(1e-2)", "state[0].count", "state[0].mu", "state[0].nu"),
    (
        "optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)",
        "state.count",
        "state.hyperparams['learning_rate']",
        "state.inner_state[0].mu",
    ),
    (
        "optax.apply_if_finite(optax.sgd(0.1, 0.9), 3)",
        "state.notfinite_count",
        "state.last_finite",
        "state.total_notfinite",
        "state.inner_state[0].trace",  # a TraceState also keeps a count: see the docs
    ),
    (
        "optax.MultiSteps(optax.adam(1e-2), every_k_schedule=3)",
        "state.mini_step",
        "state.gradient_step",
        "state.acc_grads",
        "state.inner_opt_state[0].nu",
    ),
    (
        "optax.partition({'a': optax.inject_hyperparams(optax.adam)(learning_rate=1e-2), "
        "'b': optax.sgd(0.1)}, LABELS)",
        "state.inner_states['a'].inner_state.hyperparams['learning_rate']",
        "state.inner_states['a'].inner_state.count",
    ),
    ("optax.masked(optax.sgd(0.1, 0.9), MASK)", "state.inner_state[0].trace"),
]


@pytest.mark.parametrize("case", FIELDS, ids=lambda case: case[0])
def test_state_fields_are_read_under_optaxs_names(case):
    source, *fields = case
    states = []
    for module in (optax, gradtx):
        opt = _build(source, module)
        params = make_params()
        states.append(opt.update(grads_at(params, 0), opt.init(params), params)[1])
    for field in fields:
        theirs, ours = (eval(field, {"state": s}) for s in states)
        # A masked-out leaf is optax's MaskedNode and gradtx's None: compare the arrays.
        theirs = [x for x in jax.tree.leaves(theirs) if not isinstance(x, optax.MaskedNode)]
        chex.assert_trees_all_close(jax.tree.leaves(ours), theirs, rtol=1e-6, atol=1e-7)


def test_optax_tree_helpers_port():
    state = _build("optax.inject_hyperparams(optax.adam)(learning_rate=1e-2)", gradtx).init(
        make_params()
    )
    assert float(gradtx.tree_utils.tree_get(state, "learning_rate")) == pytest.approx(1e-2)
    state = gradtx.tree_utils.tree_set(state, learning_rate=jnp.float32(3e-3))
    assert float(gradtx.tree.get(state, "learning_rate")) == pytest.approx(3e-3)
    grads = grads_at(make_params(), 0)
    np.testing.assert_allclose(gradtx.tree.norm(grads), optax.tree.norm(grads), rtol=1e-6)
    np.testing.assert_allclose(gradtx.global_norm(grads), optax.global_norm(grads), rtol=1e-6)


# Every name both libraries have at the top level, and in optax.schedules and optax.tree.
SHARED = [
    (optax, gradtx, name)
    for name in dir(optax)
    if not name.startswith("_") and hasattr(gradtx, name)
] + [
    (getattr(optax, module), getattr(gradtx, module), name)
    for module in ("schedules", "tree", "tree_utils")
    for name in dir(getattr(optax, module))
    if not name.startswith("_") and callable(getattr(getattr(optax, module), name))
]


def _parameters(fn):
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None


@pytest.mark.parametrize(
    ("theirs", "ours", "name"),
    [s for s in SHARED if callable(getattr(s[0], s[2]))],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_every_shared_name_takes_optaxs_arguments(theirs, ours, name):
    """optax's positional order, keyword names and defaults; gradtx's own after, keyword-only."""
    assert hasattr(ours, name), f"{ours.__name__} has no {name}"
    given, ported = _parameters(getattr(theirs, name)), _parameters(getattr(ours, name))
    if given is None or ported is None or isinstance(getattr(theirs, name), type(NotImplemented)):
        return
    if isinstance(getattr(theirs, name), type) and issubclass(getattr(theirs, name), tuple):
        return  # a state NamedTuple: its fields are checked where users read them (FIELDS)
    names = [p.name for p in ported]
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for i, p in enumerate(given):
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        assert p.name in names, f"{name}: no argument {p.name}"
        mine = ported[names.index(p.name)]
        if p.kind in positional:
            assert names.index(p.name) == i and mine.kind in positional, f"{name}: {p.name}'s place"
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    extra = [p for p in ported if p.name not in {q.name for q in given} and p.kind not in variadic]
    assert all(
        p.kind == inspect.Parameter.KEYWORD_ONLY or p.default is not inspect.Parameter.empty
        for p in extra
    ), f"{name}: gradtx's own arguments {[p.name for p in extra]} must have defaults"


def test_annotations_resolve_to_real_types():
    """typing.get_type_hints works on every public function: tools see the types, not strings."""
    failures = []
    for module in (gradtx, gradtx.schedules, gradtx.tree):
        for name in getattr(module, "__all__", dir(module)):
            fn = getattr(module, name, None)
            if inspect.isfunction(fn) or inspect.isclass(fn):
                try:
                    typing.get_type_hints(fn)
                except Exception as error:  # noqa: BLE001 - listed below, all at once
                    failures.append(f"{module.__name__}.{name}: {error}")
    assert not failures, "\n".join(failures)
    hints = typing.get_type_hints(gradtx.adam)
    assert hints["learning_rate"] == gradtx.ScalarOrSchedule
