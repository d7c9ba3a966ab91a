"""Hostile inputs: every learner meets them with the documented outcome (docs/testing.md)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import sampled, slow_where

import gradtx

INT32_MAX = np.iinfo(np.int32).max
LR = gradtx.cntk.learning_rate_schedule(0.01, gradtx.cntk.UnitType.minibatch)
MOMENTUM = gradtx.cntk.momentum_schedule(0.9)
LINE_SEARCH = ("value", "grad", "value_fn")  # the extras L-BFGS and Polyak's step read

OLD = {"sgd", "adagrad", "rmsprop", "rmsprop centered", "adam", "nadam", "adamw", "amsgrad",
       "adamax", "adadelta", "lion", "cntk"}  # fmt: skip
LEARNERS = {
    "sgd": lambda: gradtx.sgd(1e-2, momentum=0.9),
    "adagrad": lambda: gradtx.adagrad(1e-2),
    "rmsprop": lambda: gradtx.rmsprop(1e-2),
    "rmsprop centered": lambda: gradtx.rmsprop(1e-2, centered=True, momentum=0.9),
    "adam": lambda: gradtx.adam(1e-2),
    "nadam": lambda: gradtx.nadam(1e-2),
    "adamw": lambda: gradtx.adamw(1e-2),
    "amsgrad": lambda: gradtx.amsgrad(1e-2),
    "adamax": lambda: gradtx.adamax(1e-2),
    "adadelta": lambda: gradtx.adadelta(1.0),
    "lion": lambda: gradtx.lion(1e-3),
    "cntk.momentum_sgd": lambda: gradtx.cntk.momentum_sgd(LR, MOMENTUM),
    "cntk.adagrad": lambda: gradtx.cntk.adagrad(LR),
    "cntk.rmsprop": lambda: gradtx.cntk.rmsprop(LR, 0.9, 1.2, 0.7, 10.0, 0.1),
    "cntk.fsadagrad": lambda: gradtx.cntk.fsadagrad(LR, MOMENTUM),
    "cntk.adam": lambda: gradtx.cntk.adam(LR, MOMENTUM),
    "cntk.adadelta": lambda: gradtx.cntk.adadelta(),
    # The optax learners of issue 20.
    "adabelief": lambda: gradtx.adabelief(1e-2),
    # Factors w (2, 3); b keeps a full second moment.
    "adafactor": lambda: gradtx.adafactor(1e-2, min_dim_size_to_factor=2),
    "adamaxw": lambda: gradtx.adamaxw(1e-2),
    "adan": lambda: gradtx.adan(1e-2),
    "fromage": lambda: gradtx.fromage(1e-2),
    "lamb": lambda: gradtx.lamb(1e-2),
    "lars": lambda: gradtx.lars(0.1),
    "lbfgs": lambda: _with_objective(gradtx.lbfgs(memory_size=3), *LINE_SEARCH),
    "nadamw": lambda: gradtx.nadamw(1e-2),
    "noisy_sgd": lambda: gradtx.noisy_sgd(1e-2, key=0),
    "novograd": lambda: gradtx.novograd(1e-2),
    "optimistic_adam": lambda: _deprecated(gradtx.optimistic_adam, 1e-2),
    "optimistic_adam_v2": lambda: gradtx.optimistic_adam_v2(1e-2),
    "optimistic_gradient_descent": lambda: gradtx.optimistic_gradient_descent(1e-2),
    "polyak_sgd": lambda: _with_objective(gradtx.polyak_sgd(0.1), *LINE_SEARCH),
    "radam": lambda: gradtx.radam(1e-2),
    "rprop": lambda: gradtx.rprop(1e-2),
    "sign_sgd": lambda: gradtx.sign_sgd(1e-2),
    "signum": lambda: gradtx.signum(1e-2),
    "sm3": lambda: gradtx.sm3(1e-2),
    "yogi": lambda: gradtx.yogi(1e-2),
    # optax.contrib's learners of issue 22 (with three of gradtx.transforms: prodigy,
    # dadapt_adamw, mechanize).
    "acprop": lambda: gradtx.acprop(1e-2),
    "ademamix": lambda: gradtx.ademamix(1e-2),
    "adopt": lambda: gradtx.adopt(1e-2),
    "cocob": lambda: gradtx.cocob(),
    "dadapt_adamw": lambda: gradtx.transforms.dadapt_adamw(),
    # DoG's and Prodigy's first steps are 1e-6 at their defaults, Mechanic's 1e-6 of its
    # base's: starts of 1e-3 make three steps visible in float32 and complex64.
    "dog": lambda: gradtx.dog(init_step=("heuristic", 1e-3)),
    "dowg": lambda: gradtx.dowg(),
    "madgrad": lambda: gradtx.madgrad(1e-2),
    "mechanize": lambda: gradtx.transforms.mechanize(gradtx.adam(1.0), s_init=1e-3),
    "momo": lambda: _with_objective(gradtx.momo(), "value"),
    "momo_adam": lambda: _with_objective(gradtx.momo_adam(), "value"),
    # Orthogonalizes w (2, 3); b takes Adam's step.
    "muon": lambda: gradtx.muon(1e-2),
    "prodigy": lambda: gradtx.transforms.prodigy(estim_lr0=1e-3),
    "schedule_free_adamw": lambda: gradtx.schedule_free_adamw(1e-2),
    "schedule_free_sgd": lambda: gradtx.schedule_free_sgd(1e-2),
    "simplified_ademamix": lambda: gradtx.simplified_ademamix(1e-2),
    # A Hessian estimate at every step (update_interval=1), from the objective's obj_fn.
    "sophia": lambda: _with_objective(gradtx.sophia(1e-2, update_interval=1), "obj_fn"),
}
NEW = [name for name in LEARNERS if name.split(".")[0] not in OLD]  # issues 20 and 22

# L-BFGS's zoom line search takes seconds to compile per case: the whole suite's (GRADTX_SLOW).
CASES, NEW_CASES = (slow_where(names, lambda name: name == "lbfgs") for names in (LEARNERS, NEW))
# Each per-learner check runs on half the learners by default, the checks taking turns, so
# that every learner meets half of them; GRADTX_SLOW=1 runs every learner through every one.
EVEN, ODD = sampled(CASES, 2, 0), sampled(CASES, 2, 1)

# At gradients of 1e30 (float32) each learner is in exactly one of these.
# A running mean of squared gradients (overflows at |g| ~ 1e19) stops those coordinates.
SECOND_MOMENT = {"adagrad", "rmsprop", "rmsprop centered", "adam", "nadam", "adamw", "amsgrad",
                 "adadelta", "cntk.fsadagrad", "cntk.adam", "cntk.adadelta",
                 "adabelief", "adan", "lamb", "nadamw", "novograd", "optimistic_adam",
                 "optimistic_adam_v2", "sm3",
                 # AdEMAMix (both), ADOPT, MADGRAD (its cube root of the sum of squares),
                 # schedule-free AdamW, and D-Adaptation's and Prodigy's Adam: their own v.
                 # AdaBelief's relative ACProp: its first step, with no v yet, is lr * g.
                 "acprop", "ademamix", "adopt", "dadapt_adamw", "madgrad", "prodigy",
                 "schedule_free_adamw", "simplified_ademamix",
                 # Momo-Adam preconditions by Adam's v: w stops, b's Polyak step goes on.
                 "momo_adam"}  # fmt: skip
# A squared norm of the gradient (Polyak's step size, LARS's trust ratio) or an inner
# product with it (L-BFGS's curvature, its line search's slope) overflows: a step of 0.
ZERO_STEP = {"lars", "lbfgs", "polyak_sgd",
             # Momo's Polyak step divides by |d|^2; DoG's and DoWG's step sizes by the sum
             # of |g|^2 over the tree (every leaf stops, b too); COCOB's bet by
             # max|g| * (sum|g| + max|g|); Muon's Newton-Schulz starts from w / |w|_F.
             "cocob", "dog", "dowg", "momo", "muon"}  # fmt: skip
# inf / inf: CNTK's normalisation, Adafactor's factored reconstruction (row times column
# over their mean), Yogi's sign(v - g^2) once v is inf. As optax's adafactor and yogi.
NAN_STEP = {"cntk.adagrad", "cntk.rmsprop", "adafactor", "yogi",
            # Mechanic's weight-decay term scales p by |g| (inf); its inner product h with
            # the first step's distance 0 is inf * 0: NaN in every leaf and in its scalar
            # scale s from then on, as optax's mechanize (tree.global_norm would not overflow).
            "mechanize"}  # fmt: skip
# No square of the gradient: finite, nonzero steps. RAdam's first five steps (rho_t <= 5)
# are momentum steps of lr * g, ~1e28; from the sixth its coordinates stop as Adam's.
FINITE_STEP = {"sgd", "adamax", "lion", "cntk.momentum_sgd", "adamaxw", "fromage",
               "noisy_sgd", "optimistic_gradient_descent", "radam", "rprop", "sign_sgd",
               "signum",
               # Schedule-free SGD: no square; its steps mix lr * g into the averaged point.
               # Sophia clips m / max(gamma * h, eps) to [-1, 1]: a step of lr per coordinate.
               "schedule_free_sgd", "sophia"}  # fmt: skip
# Sign rules: an Inf gradient is a step of -lr (sign(inf) = 1). Lion and Signum keep an
# Inf momentum from then on; sign_sgd keeps no state, and Rprop only step sizes and signs,
# so nothing of the Inf is left (apply_if_finite skips such steps).
SIGN_RULES = {"lion": False, "signum": False, "sign_sgd": True, "rprop": True,  # state finite
              # Sophia clips m / max(gamma * h, eps) to [-1, 1]: an Inf momentum, a step
              # of -lr (a NaN gradient still gives NaN), as optax's sophia.
              "sophia": False}  # fmt: skip
# No complex rule: a complex leaf raises ValueError naming it (test_complex.py checks the
# older learners against optax; test_complex_leaves here checks the new ones).
NO_COMPLEX_RULE = {"rprop", "sign_sgd", "signum", "sm3",
                   # COCOB's reward needs a real sign, Sophia's clip an order; D-Adaptation
                   # and Prodigy square complex gradients in optax, where Adam needs |g|^2.
                   "cocob", "dadapt_adamw", "prodigy", "sophia"}  # fmt: skip
# No per-leaf state and no use of the params: nothing to compare a gradient tree with,
# so the updates mirror it and apply_updates names the mismatch.
NO_TREE_CHECK = {"noisy_sgd", "polyak_sgd", "sign_sgd"}
EXTRA = {"batch_size": 4}


def _deprecated(factory, *args):
    with warnings.catch_warnings():  # optimistic_adam warns, as optax's does
        warnings.simplefilter("ignore", DeprecationWarning)
        return factory(*args)


def _with_objective(tx, *names):
    """The extras ``names`` of the loss, as a train step hands them, for any gradient.

    The loss is f(q) = 1 + <g, q - p> + |q - p|^2 / 2 on the float leaves (those a
    learner hands its line search, and Sophia its ``obj_fn``): its value at the params
    is 1 (``value``), its gradient the hostile gradient g itself (``grad``), its Hessian
    the identity. ``batch_size`` reaches ``value_fn``, as in a train step; ``obj_fn`` is
    the same loss of the params alone. A line search's ``value_fn`` refuses extras it
    does not take, so each learner gets only the extras it names.
    """

    def update(updates, state, params=None, **extra):
        def floats(tree):
            return [x for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]

        def value_fn(q, batch_size=None):
            total = jnp.float32(1)
            for x, g, p in zip(floats(q), floats(updates), floats(params), strict=True):
                d = x - p.astype(x.dtype)
                total += jnp.sum(
                    jnp.real(jnp.conj(g.astype(x.dtype)) * d) + 0.5 * gradtx.tree.abs_sq(d)
                )
            return total

        objective = {"value": jnp.float32(1), "grad": updates, "value_fn": value_fn,
                     "obj_fn": value_fn}  # fmt: skip
        return tx.update(updates, state, params, **extra, **{n: objective[n] for n in names})

    return gradtx.GradientTransformation(tx.init, update)


def test_every_learner_meets_them():
    assert set(gradtx.learners.__all__) <= set(LEARNERS)


def params(dtype=jnp.float32):
    return {"w": jnp.linspace(-1, 1, 6, dtype=dtype).reshape(2, 3), "b": jnp.ones(3, dtype)}


def run(opt, p, grads, steps=3):
    update = jax.jit(lambda g, s: opt.update(g, s, p, **EXTRA))
    state = opt.init(p)
    for _ in range(steps):
        u, state = update(grads, state)
    return u, state


def finite(tree):
    return all(
        bool(jnp.all(jnp.isfinite(x)))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    )


@pytest.mark.parametrize("name", EVEN)
def test_nan_and_inf_gradients_propagate(name):
    # optax's Rprop takes each step one update late; ADOPT's first step is 0 by design
    # (it only sets v = g^2), so an Inf gradient shows at the second.
    steps = 2 if name in ("rprop", "adopt") else 1
    for bad in (jnp.nan, jnp.inf):
        grads = {"w": jnp.ones((2, 3)).at[0, 0].set(bad), "b": jnp.ones(3)}
        u, state = run(LEARNERS[name](), params(), grads, steps=steps)
        if name in SIGN_RULES and bad == jnp.inf:
            # A step of -lr where the gradient is infinite (documented; apply_if_finite
            # skips it); Lion's and Signum's momentum is infinite from then on.
            assert finite(u) and float(u["w"][0, 0]) < 0  # a step along -sign(inf)
            assert finite(state) == SIGN_RULES[name]
            continue
        assert not bool(jnp.all(jnp.isfinite(u["w"]))), "a bad gradient must not vanish"


@pytest.mark.parametrize("name", ["adam", "rmsprop centered", "cntk.adam"])
def test_apply_if_finite_skips_nan_and_inf_and_loses_nothing(name):
    opt = gradtx.apply_if_finite(LEARNERS[name](), 5)
    good = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    state = opt.init(params())
    _, state = opt.update(good, state, params(), **EXTRA)
    before = state.inner_state
    for bad in (jnp.nan, jnp.inf):
        grads = jax.tree.map(lambda x, bad=bad: x * bad, good)
        u, state = opt.update(grads, state, params(), **EXTRA)
        assert all(not np.any(np.asarray(x)) for x in jax.tree.leaves(u))
        jax.tree.map(np.testing.assert_array_equal, state.inner_state, before)
    assert int(state.total_notfinite) == 2


@pytest.mark.parametrize("name", ODD)
def test_ten_thousand_zero_gradients_give_no_nan(name):
    opt, p = LEARNERS[name](), params()
    zeros = jax.tree.map(jnp.zeros_like, p)

    def step(state, _):
        u, state = opt.update(zeros, state, p, **EXTRA)
        return state, u

    state, updates = jax.jit(lambda s: jax.lax.scan(step, s, None, length=10_000))(opt.init(p))
    assert finite(state) and finite(updates)


@pytest.mark.parametrize("name", EVEN)
def test_tiny_gradients_stay_finite(name):
    u, state = run(LEARNERS[name](), params(), jax.tree.map(lambda x: x * 0 + 1e-30, params()))
    assert finite(u) and finite(state)


@pytest.mark.parametrize("name", ODD)
def test_huge_gradients(name):
    huge = {"w": jnp.full((2, 3), 1e30), "b": jnp.ones(3)}
    u, _ = run(LEARNERS[name](), params(), huge)
    kinds = [k for k in (SECOND_MOMENT, ZERO_STEP, NAN_STEP, FINITE_STEP) if name in k]
    assert len(kinds) == 1, "classify the learner's outcome at 1e30 (docs/testing.md)"
    if name in NAN_STEP:
        assert np.isnan(np.asarray(u["w"])).all()
    elif name in ZERO_STEP:
        assert finite(u) and np.all(np.asarray(u["w"]) == 0)
    elif name in SECOND_MOMENT:
        # The squares overflow to inf: those coordinates stop moving (weight decay aside).
        assert finite(u) and np.all(np.abs(np.asarray(u["w"])) < 1e-4)
    else:
        assert finite(u) and np.all(np.asarray(u["w"]) != 0)
    clipped = gradtx.chain(gradtx.clip_by_global_norm(1.0), LEARNERS[name]())
    u, state = run(clipped, params(), huge)
    assert finite(u) and finite(state) and np.all(np.asarray(u["w"]) != 0)


@pytest.mark.parametrize("name", EVEN)
# float16 in the whole suite: the same code path as bfloat16's, another rounding.
@pytest.mark.parametrize("dtype", [jnp.bfloat16, pytest.param(jnp.float16, marks=pytest.mark.slow)])
def test_half_precision_params(name, dtype):
    p = params(dtype)
    grads = jax.tree.map(lambda x: (x * 0.01).astype(dtype), p)
    u, state = run(LEARNERS[name](), p, grads, steps=5)
    assert finite(u) and finite(state)
    assert all(x.dtype == dtype for x in jax.tree.leaves(u))
    zero = jax.tree.map(jnp.zeros_like, p)  # float16 alone would lose eps and divide 0 by 0
    u, state = run(LEARNERS[name](), p, zero, steps=5)
    assert finite(u) and finite(state)


@pytest.mark.parametrize("name", sampled(LEARNERS, 2, 1))
def test_integer_and_boolean_leaves_pass_through_untouched(name):
    p = {**params(), "step": jnp.arange(3), "mask": jnp.array([True, False])}
    opt = LEARNERS[name]()
    grads = jax.grad(lambda q: jnp.sum(q["w"] ** 2) + jnp.sum(q["b"]), allow_int=True)(p)
    u, state = run(opt, p, grads)
    new = gradtx.apply_updates(p, u)
    np.testing.assert_array_equal(new["step"], p["step"])
    np.testing.assert_array_equal(new["mask"], p["mask"])
    assert not np.allclose(new["w"], p["w"])


@pytest.mark.parametrize("name", NEW_CASES)
def test_complex_leaves(name):
    p = {"z": (params()["w"] + 0.5j).astype(jnp.complex64), "b": jnp.ones(3)}
    grads = {"z": jnp.full((2, 3), 0.1 + 0.2j, jnp.complex64), "b": jnp.ones(3)}
    if name in NO_COMPLEX_RULE:
        with pytest.raises(ValueError, match=r"the leaf at \['z'\] is complex64"):
            run(LEARNERS[name](), p, grads)
        return
    u, state = run(LEARNERS[name](), p, grads)
    assert u["z"].dtype == jnp.complex64 and finite(u) and finite(state)
    assert np.all(np.asarray(u["z"]) != 0)


@pytest.mark.parametrize("name", ODD)
def test_empty_trees_and_none_leaves(name):
    for empty in ({}, [], ()):
        opt = LEARNERS[name]()
        u, _ = opt.update(empty, opt.init(empty), empty, **EXTRA)
        assert u == empty
    p = {"w": jnp.ones(3), "gone": None}
    u, _ = run(LEARNERS[name](), p, {"w": jnp.ones(3), "gone": None})
    assert u["gone"] is None and finite(u)


@pytest.mark.parametrize("name", EVEN)
def test_mismatched_trees_name_the_path(name):
    opt = LEARNERS[name]()
    state = opt.init(params())
    wrong = {"w": jnp.ones((2, 3)), "b": jnp.ones(4)}
    if name in NO_TREE_CHECK:
        u, _ = opt.update(wrong, state, params(), **EXTRA)
        assert u["b"].shape == (4,)
        with pytest.raises(gradtx.TreeMismatchError, match=r"\['b'\]"):
            gradtx.apply_updates(params(), u)
        return
    with pytest.raises(gradtx.TreeMismatchError, match=r"\['b'\]"):
        opt.update(wrong, state, params(), **EXTRA)


@pytest.mark.parametrize("name", ODD)
def test_counts_at_the_int32_maximum(name):
    opt, p = LEARNERS[name](), params()
    state = jax.tree.map(
        lambda x: jnp.full_like(x, INT32_MAX) if x.dtype == jnp.int32 else x, opt.init(p)
    )
    u, state = jax.jit(lambda g, s: opt.update(g, s, p, **EXTRA))(
        jax.tree.map(jnp.ones_like, p), state
    )
    assert finite(u)
    for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
        if x.dtype != jnp.int32:
            continue
        if ".info" in jax.tree_util.keystr(path):  # a line search's report of its last search
            assert 0 <= int(x) <= 20  # L-BFGS's zoom search: at most 20 evaluations
        else:
            assert int(jnp.max(x)) == INT32_MAX  # saturated, not wrapped to negative


@pytest.mark.parametrize("name", EVEN)
def test_empty_array_leaves(name):
    # Zero-size leaves: no entries to reduce (the norm's overflow branch has no max).
    p = {"empty": jnp.zeros((0, 3)), "w": jnp.ones(3)}
    opt = gradtx.chain(gradtx.clip_by_global_norm(1.0), LEARNERS[name]())
    u, state = run(opt, p, {"empty": jnp.zeros((0, 3)), "w": jnp.ones(3)})
    assert u["empty"].shape == (0, 3) and finite(u) and finite(state)
