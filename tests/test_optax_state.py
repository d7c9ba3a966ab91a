"""A run that switches between optax and gradtx mid-training continues exactly.

For every learner both libraries have (optax's top-level learners, optax.contrib's that
gradtx has, and the common wrappers): 10 optax steps, ``from_optax_state``, 10 gradtx
steps give optax's 20 steps; 10 gradtx steps, ``to_optax_state``, 10 optax steps give
gradtx's 20. The params and the converted states must agree bit for bit, except for the
learners in NOT_BITWISE (rtol 1e-6). The tree is conftest's nested one, with a complex
leaf for every learner that both libraries run on complex params.
"""

from __future__ import annotations

import ast
import functools
import inspect
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import grads_at, make_params

import gradtx
from gradtx import optax_state as module
from gradtx.optax_state import from_optax_state, to_optax_state

SWITCH, STEPS = 10, 20


def MASK(params):  # noqa: N802 (optax's argument, written as the other tests write it)
    return {
        k: True if k == "z" else jax.tree.map(lambda x: x.ndim > 1, v) for k, v in params.items()
    }


def LABELS(params):  # noqa: N802
    return jax.tree.map(lambda x: "a" if x.ndim > 1 else "b", params)


Z = jnp.asarray([[0.5 - 1.0j, 2.0 + 0.25j], [-1.5j, 0.75]], jnp.complex64)


def _half_square_norm(params):
    leaves = [x for x in jax.tree.leaves(params) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return sum((0.5 * jnp.sum(jnp.real(x * jnp.conj(x))) for x in leaves), jnp.float32(0))


# The extras each kind of learner reads, as the other optax comparison tests pass them.
EXTRAS = {
    None: lambda g, p: {},
    "value": lambda g, p: {"value": _half_square_norm(p)},
    "linesearch": lambda g, p: {
        "value": _half_square_norm(p), "grad": g, "value_fn": _half_square_norm,
    },
    "obj_fn": lambda g, p: {"obj_fn": _half_square_norm},
}  # fmt: skip


def _quiet(factory):
    def built(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return factory(*args, **kwargs)

    return built


# name -> source (``L`` is optax or gradtx, ``C`` its contrib), or (gradtx's, optax's) where
# the gradtx learner needs an argument to be optax's; then the extras it reads.
CASES = {
    "adam": ("L.adam(1e-2)", None),
    "adamw": ("L.adamw(1e-2, weight_decay=1e-2, mask=MASK)", None),
    "sgd": ("L.sgd(0.05)", None),
    "sgd momentum": ("L.sgd(0.05, 0.9, nesterov=True)", None),
    "rmsprop": ("L.rmsprop(1e-2, centered=True, momentum=0.9)", None),
    "adagrad": ("L.adagrad(0.1)", None),
    "adafactor": ("L.adafactor(0.05, min_dim_size_to_factor=3)", None),
    "adafactor momentum": ("L.adafactor(0.05, 3, momentum=0.9, dtype_momentum=None)", None),
    "lamb": ("L.lamb(1e-2, weight_decay=1e-2, mask=MASK)", None),
    "lars": ("L.lars(0.5, 0.01)", None),
    "lion": ("L.lion(1e-3, weight_decay=1e-3)", None),
    "novograd": ("L.novograd(1e-2)", None),
    "radam": ("L.radam(1e-2)", None),
    "sm3": ("L.sm3(0.1, 0.5)", None),
    "yogi": ("L.yogi(1e-2)", None),
    "adabelief": ("L.adabelief(1e-2)", None),
    "amsgrad": ("L.amsgrad(1e-2)", None),
    "adamax": ("L.adamax(1e-2)", None),
    "adamaxw": ("L.adamaxw(1e-2)", None),
    "nadam": ("L.nadam(1e-2)", None),
    "nadamw": ("L.nadamw(1e-2)", None),
    "fromage": ("L.fromage(0.05, 1e-3)", None),
    "noisy_sgd": ("L.noisy_sgd(0.01, 0.1, 0.3, jax.random.key(5))", None),
    "sign_sgd": ("L.sign_sgd(0.01)", None),
    "signum": ("L.signum(0.01, 0.8)", None),
    "polyak_sgd": ("L.polyak_sgd()", "value"),
    "rprop": ("L.rprop(0.01)", None),
    "optimistic_gradient_descent": ("L.optimistic_gradient_descent(0.05, 0.5, 2.0)", None),
    "optimistic_adam": ("quiet(L.optimistic_adam)(0.01, 0.05)", None),
    "optimistic_adam_v2": ("L.optimistic_adam_v2(0.01, alpha=0.5, beta=2.0)", None),
    "lbfgs": ("L.lbfgs()", "linesearch"),
    "adan": ("L.adan(1e-2)", None),
    "adadelta": ("L.adadelta(1.0)", None),
    # optax.contrib's learners that gradtx has
    "muon": (("C.muon(0.02, orthogonalize_higher_rank=False)", "C.muon(0.02)"), None),
    "schedule_free_adamw": ("C.schedule_free_adamw(1e-2)", None),
    "schedule_free_sgd": ("C.schedule_free_sgd(0.1)", None),
    "prodigy": ("C.prodigy()", None),
    "dadapt_adamw": ("C.dadapt_adamw()", None),
    "dog": ("C.dog()", None),
    "dowg": ("C.dowg()", None),
    "cocob": ("C.cocob()", None),
    "mechanize": ("C.mechanize(L.adam(1e-2))", None),
    "adopt": ("C.adopt(1e-2)", None),
    "ademamix": ("C.ademamix(1e-2)", None),
    "simplified_ademamix": ("C.simplified_ademamix(1e-2)", None),
    "madgrad": ("C.madgrad(1e-2)", None),
    "acprop": ("C.acprop(1e-2)", None),
    "momo": ("C.momo()", "value"),
    "momo_adam": ("C.momo_adam()", "value"),
    "sophia": ("C.sophia(1e-2)", "obj_fn"),
    "sam": ("C.sam(L.adam(1e-2), L.chain(C.normalize(), L.sgd(0.05)))", None),
    # wrappers and combinators
    "chain clip_by_global_norm": ("L.chain(L.clip_by_global_norm(1.0), L.adam(1e-2))", None),
    "inject_hyperparams": ("L.inject_hyperparams(L.adam)(learning_rate=1e-2, b1=0.8)", None),
    "inject_hyperparams schedule": (
        "L.inject_hyperparams(L.sgd)(L.linear_schedule(0.1, 0.01, 50), 0.9)", None,
    ),
    "apply_if_finite": ("L.apply_if_finite(L.adam(1e-2), 3)", None),
    "MultiSteps": ("L.MultiSteps(L.adam(1e-2), every_k_schedule=3)", None),
    "lookahead": ("L.lookahead(L.adam(1e-2), 2, 0.5)", None),
    "partition": ("L.partition({'a': L.adam(1e-2), 'b': L.sgd(0.1)}, LABELS)", None),
    "masked": ("L.masked(L.adam(1e-2), MASK)", None),
}  # fmt: skip

# Learners one of the libraries has no complex rule for (sign rules, clipping to an
# interval, SM3, the learning-rate-free ones: a ValueError naming the leaf, or optax's
# lax.clamp or cbrt failing), or whose complex rules differ on purpose
# (docs/migrating/optax.md): MultiSteps' accumulator; inject_hyperparams, whose
# hyperparameters optax makes complex, and with them every leaf's moments; momo, whose
# step size optax keeps complex. They run on the real tree.
REAL_ONLY = {"adadelta", "lion", "sign_sgd", "signum", "rprop", "sm3", "prodigy",
             "dadapt_adamw", "cocob", "mechanize", "adopt", "madgrad", "sophia",
             "simplified_ademamix", "momo_adam", "MultiSteps", "momo", "inject_hyperparams",
             "inject_hyperparams schedule"}  # fmt: skip
# optax's SM3 has no rule for a scalar leaf (an IndexError): its tree has none.
NO_SCALARS = {"sm3"}
# Learners whose gradtx steps are optax's to rtol 1e-6 but not bit for bit (the plain
# 20-step runs differ in the last bits too, test_bitwise_exactly_where_the_runs_agree):
# apply_if_finite selects with jnp.where where optax branches with lax.cond, MultiSteps
# runs its inner update only on the k-th micro-step, lookahead and simplified_ademamix
# write their updates as other (equal) expressions. On a complex leaf the second moments
# are real in gradtx and complex in optax, so that leaf's values are compared to rtol 1e-6.
NOT_BITWISE = {"apply_if_finite", "MultiSteps", "lookahead", "simplified_ademamix"}
# simplified_ademamix's numbers are optax's to 1e-5 (its tests/test_adam_variants.py tolerance).
RTOL = {"simplified_ademamix": 1e-5}
# The learners whose gradtx state keeps a step count optax's has no value for and no
# count to infer it from: from_optax_state needs step=.
NEEDS_STEP = {"sgd momentum", "rmsprop", "lars", "optimistic_gradient_descent"}


def _build(name, library):
    source = CASES[name][0]
    if isinstance(source, tuple):
        source = source[library is optax]
    names = {"L": library, "C": library.contrib, "MASK": MASK, "LABELS": LABELS, "jax": jax,
             "quiet": _quiet}  # fmt: skip
    return _quiet(eval)(source, names)


def _tree(name):
    tree = make_params()
    if name in NO_SCALARS:
        tree["head"] = tree["head"][1:]
    return tree if name in REAL_ONLY else {**tree, "z": Z}


def _params(name, library, tree):
    return library.LookaheadParams(tree, tree) if name == "lookahead" else tree


def _fast(params):
    return params.fast if type(params).__name__ == "LookaheadParams" else params


@functools.cache
def _update(name, library):
    tx, extras = _build(name, library), EXTRAS[CASES[name][1]]

    @jax.jit
    def step(params, state, t_grads):
        grads = t_grads
        updates, state = tx.update(grads, state, params, **extras(grads, _fast(params)))
        return jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates), state

    return tx, step


def _steps(name, library, params, state, start, stop):
    _, step = _update(name, library)
    for t in range(start, stop):
        params, state = step(params, state, grads_at(_fast(params), t))
    return params, state


@functools.cache
def _runs(name):
    """Each library's 20 steps, with its params and state at the switch."""
    runs = {}
    for library in (optax, gradtx):
        tx, _ = _update(name, library)
        params = _params(name, library, _tree(name))
        at_switch = _steps(name, library, params, tx.init(params), 0, SWITCH)
        runs[library.__name__] = at_switch, _steps(name, library, *at_switch, SWITCH, STEPS)
    return runs


def _assert_same(name, ours, theirs):
    """Bit for bit, but rtol 1e-6 for NOT_BITWISE and the complex leaf's own values."""
    flat = [jax.tree_util.tree_flatten_with_path(x)[0] for x in (ours, theirs)]
    for (path, a), (_, b) in zip(*flat, strict=True):
        a, b = (jax.random.key_data(x) if module._is_key(x) else x for x in (a, b))
        if name in NOT_BITWISE or "'z'" in jax.tree_util.keystr(path):
            np.testing.assert_allclose(a, b, rtol=RTOL.get(name, 1e-6), atol=1e-7)
        else:
            np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def _other(params, library):
    """The params as ``library`` takes them: lookahead's pair is each library's own class."""
    if type(params).__name__ == "LookaheadParams":
        return library.LookaheadParams(params.fast, params.slow)
    return params


@pytest.mark.parametrize("name", CASES)
def test_optax_then_gradtx_continues_optaxs_run(name):
    (params, optax_state), (expected_params, expected_state) = _runs(name)["optax"]
    learner, _ = _update(name, gradtx)
    ours = _other(params, gradtx)
    if name in NEEDS_STEP:
        with pytest.raises(ValueError, match="pass step="):
            from_optax_state(learner, optax_state, ours)
    step = {"step": SWITCH} if name in NEEDS_STEP else {}
    state = from_optax_state(learner, optax_state, ours, **step)
    assert jax.tree.structure(state) == jax.tree.structure(learner.init(ours))
    params, state = _steps(name, gradtx, ours, state, SWITCH, STEPS)
    _assert_same(name, _fast(params), _fast(expected_params))
    step = {"step": STEPS} if name in NEEDS_STEP else {}
    _assert_same(name, state, from_optax_state(learner, expected_state, params, **step))


@pytest.mark.parametrize("name", CASES)
def test_gradtx_then_optax_continues_gradtxs_run(name):
    (params, state), (expected_params, expected_state) = _runs(name)["gradtx"]
    theirs, _ = _update(name, optax)
    params = _other(params, optax)
    optax_state = to_optax_state(theirs, state, params)
    assert jax.tree.structure(optax_state) == jax.tree.structure(theirs.init(params))
    params, optax_state = _steps(name, optax, params, optax_state, SWITCH, STEPS)
    _assert_same(name, _fast(params), _fast(expected_params))
    _assert_same(name, optax_state, to_optax_state(theirs, expected_state, params))


@pytest.mark.parametrize("name", CASES)
def test_bitwise_exactly_where_the_runs_agree(name):
    """NOT_BITWISE is the learners whose plain runs differ in the last bits, no more."""
    runs = _runs(name)
    ours, theirs = (_fast(runs[lib][1][0]) for lib in ("gradtx", "optax"))
    flat = [jax.tree_util.tree_flatten_with_path(x)[0] for x in (ours, theirs)]
    real = [(a, b) for (path, a), (_, b) in zip(*flat, strict=True) if "'z'" not in str(path)]
    assert all(np.array_equal(a, b) for a, b in real) == (name not in NOT_BITWISE)
    _assert_same("", ours, theirs) if name not in NOT_BITWISE else None


def test_every_shared_learner_is_covered():
    """optax's learners (optax._src.alias) and optax.contrib's that gradtx has, all in CASES."""
    top = {
        n for n in dir(optax) if getattr(getattr(optax, n), "__module__", "") == "optax._src.alias"
    }
    top |= {"nadam", "nadamw"}  # functools.partial of adam and adamw
    contrib = {n for n in dir(optax.contrib) if inspect.isfunction(getattr(optax.contrib, n))
               and not n.startswith("scale_by") and hasattr(gradtx.contrib, n)}  # fmt: skip
    not_learners = {"normalize", "hutchinson_estimator_diag_hessian", "schedule_free_eval_params",
                    "differentially_private_aggregate"}  # fmt: skip
    # dpsgd steps on per-example gradients and schedule_free on a base learner, both covered
    # by their learners' states here (schedule_free_adamw, adam).
    composite = {"dpsgd", "schedule_free"}
    shared = {n for n in top if hasattr(gradtx, n)} | (contrib - not_learners - composite)
    assert shared - set(CASES) == set(), shared - set(CASES)


def test_a_gradtx_chain_of_other_blocks_takes_the_optax_learners_state():
    """Blocks are matched by their state's type names, nested chains flattened."""
    (params, optax_state), (expected, _) = _runs("adam")["optax"]
    learner = gradtx.chain(
        gradtx.clip_by_global_norm(1e3), gradtx.chain(gradtx.scale_by_adam()), gradtx.scale(-1e-2)
    )
    state = from_optax_state(learner, optax_state, params)
    step = jax.jit(learner.update)
    for t in range(SWITCH, STEPS):
        updates, state = step(grads_at(params, t), state, params)
        params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)
    _assert_same("lookahead", params, expected)  # one program more: rtol 1e-6


Q = {"w": jnp.ones(3), "b": jnp.zeros(2)}
MISMATCHES = [
    (lambda: gradtx.sgd(0.1, 0.9), lambda: optax.adam(0.1), Q,
     r"optax_state does not match state: expected the chain of states \['TraceState'\], found "
     r"\['ScaleByAdamState'\]"),
    (lambda: gradtx.amsgrad(0.1), lambda: optax.adam(0.1), Q, r"\['ScaleByAmsgradState'\]"),
    # gradtx's muon also orthogonalises the conv kernel, optax's gives it to AdamW.
    (lambda: gradtx.contrib.muon(0.1), lambda: optax.contrib.muon(0.1), make_params(),
     r"optax_state.inner_states\['muon'\].inner_state\[0\].mu\['conv'\]\[0\] does not match "
     r"state.inner_states\['muon'\].inner_state\[0\].mu\['conv'\]\[0\]: expected an array of "
     r"shape \(2, 3, 3, 2\) float32, found a masked-out leaf"),
    (lambda: gradtx.partition({"a": gradtx.adam(0.1), "b": gradtx.sgd(0.1)}, {"w": "a", "b": "b"}),
     lambda: optax.partition({"a": optax.adam(0.1), "c": optax.sgd(0.1)}, {"w": "a", "b": "c"}), Q,
     r"optax_state.inner_states does not match state.inner_states: expected a dict with keys "
     r"\['a', 'b'\], found a dict with keys \['a', 'c'\]"),
    (lambda: gradtx.adam(0.1), lambda: optax.adam(0.1), {"w": jnp.ones(3), "b": jnp.zeros(3)},
     r"optax_state\[0\].mu\['b'\] does not match state\[0\].mu\['b'\]: expected an array of "
     r"shape \(2,\) float32, found an array of shape \(3,\) float32"),
    (lambda: gradtx.sgd(0.1, 0.9), lambda: optax.sgd(0.1, 0.9), Q,
     r"step count at state\[0\].count that optax's state has no value for, and it keeps none: "
     r"pass step="),
]  # fmt: skip


@pytest.mark.parametrize("ours,theirs,params,match", MISMATCHES)
def test_a_state_that_does_not_match_names_both_paths(ours, theirs, params, match):
    target = Q if "shape" in match and "conv" not in match else params  # a tree of other shapes
    with pytest.raises(ValueError, match=match):
        from_optax_state(ours(), theirs().init(params), target)
    if "step" not in match:  # and the reverse names the paths the other way round
        with pytest.raises(ValueError, match=r"to_optax_state: state"):
            to_optax_state(theirs(), ours().init(params), target)


def test_bad_arguments_are_named():
    z = {"z": jnp.ones(2, jnp.complex64)}
    state = optax.rmsprop(0.1).init(z)
    state = (state[0]._replace(nu={"z": jnp.array([1 + 1j, 0], jnp.complex64)}), *state[1:])
    with pytest.raises(ValueError, match=r"optax_state\[0\].nu\['z'\] .* a real float32 cannot "
                       r"hold the complex values found"):  # fmt: skip
        from_optax_state(gradtx.rmsprop(0.1), state, z)
    for step in (-1, 2.5, True):
        with pytest.raises(ValueError, match=f"step must be a nonnegative integer, got {step}"):
            from_optax_state(gradtx.sgd(0.1, 0.9), optax.sgd(0.1, 0.9).init(Q), Q, step=step)
    with pytest.raises(TypeError, match="optax_learner must be an optax GradientTransformation"):
        to_optax_state(optax.adam, gradtx.adam(0.1).init(Q), Q)


def test_counts_come_from_step_or_from_optaxs_counts():
    optax_state = optax.sgd(0.1, 0.9).init(Q)
    assert int(from_optax_state(gradtx.sgd(0.1, 0.9), optax_state, Q, step=7)[0].count) == 7
    chained = optax.chain(optax.scale_by_adam(), optax.trace(0.9))
    learner = gradtx.chain(gradtx.scale_by_adam(), gradtx.trace(0.9))
    state = chained.init(Q)
    state = (state[0]._replace(count=jnp.int32(4)), state[1])
    assert int(from_optax_state(learner, state, Q)[1].count) == 4
    two = optax.chain(optax.scale_by_adam(), optax.scale_by_adam(), optax.trace(0.9)).init(Q)
    two = (two[0]._replace(count=jnp.int32(4)), *two[1:])
    with pytest.raises(ValueError, match=r"its count fields disagree \(\[0, 4\]\)"):
        from_optax_state(
            gradtx.chain(gradtx.scale_by_adam(), gradtx.scale_by_adam(), gradtx.trace(0.9)), two, Q
        )


def test_gradtx_does_not_import_optax():
    tree = ast.parse(inspect.getsource(module))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}  # fmt: skip
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}  # fmt: skip
    assert imported <= {"__future__", "typing", "jax", "numpy", "gradtx"}, imported
