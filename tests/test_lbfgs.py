"""L-BFGS and its line searches against optax: iterates, states, extras and errors.

A free-running L-BFGS trajectory amplifies rounding (Rosenbrock's valley most of
all), and XLA rounds a jitted step and an eager one differently, so a trajectory
is only comparable with optax's run the same way. optax called eagerly compiles
its line search's loop anew on every update (seconds each), so the eager check
is per step instead: at each of optax's 30 jitted iterates, gradtx's eager
update from optax's state gives optax's update.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import assert_trees_close, assert_vmap_equals_loop, load_script
from digits import data as digits_data

import gradtx
from gradtx.learners.lbfgs import lbfgs
from gradtx.transforms import lbfgs as lbfgs_block
from gradtx.transforms import linesearch
from gradtx.transforms.lbfgs import scale_by_lbfgs
from gradtx.transforms.linesearch import (
    scale_by_backtracking_linesearch,
    scale_by_zoom_linesearch,
    value_and_grad_from_state,
)

ITERATIONS = 30
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# --- The problems ------------------------------------------------------------------------------


def rosenbrock(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


@functools.cache
def _digits():
    (x, y), _ = digits_data()
    return np.asarray(x), np.asarray(y)  # NumPy: constants wherever they are first used


def digits_loss(params):
    """L2-regularised multinomial logistic regression on 1400 of the digits."""
    x, y = _digits()
    logp = jax.nn.log_softmax(x @ params["w"] + params["b"])
    nll = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
    return nll + 0.5e-3 * jnp.sum(params["w"] ** 2)


# What 30 iterations reach, as a fraction of the first value (Rosenbrock's minimum is 0,
# the regression's about 0.26 of 2.30).
PROGRESS = {"rosenbrock": 0.01, "digits": 0.15}
PROBLEMS = {
    "rosenbrock": (rosenbrock, lambda: jnp.zeros(5)),
    "digits": (digits_loss, lambda: {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}),
}
# (gradtx line search, optax line search); None is lbfgs's default, the zoom search.
LINESEARCHES = {
    "zoom": (lambda: None, lambda: None),
    "backtracking": (
        lambda: scale_by_backtracking_linesearch(20, store_grad=True),
        lambda: optax.scale_by_backtracking_linesearch(20, store_grad=True),
    ),
}


def _learner(library, search):
    ours, theirs = LINESEARCHES[search]
    if library == "gradtx":
        return lbfgs() if ours() is None else lbfgs(linesearch=ours())
    return optax.lbfgs() if theirs() is None else optax.lbfgs(linesearch=theirs())


def _step(library, opt, fun, conj=False, stores=True):
    """One iteration ``step(params, state, from_state)``: the value and gradient (from the
    state, or fresh from jax.value_and_grad), the update, the move.

    ``from_state`` is a traced switch, so that one compiled step serves both ways (the
    line search's compile is most of this file's time). ``conj``: the gradient is
    conjugated, optax's convention for complex params (JAX's gradient of a real
    function of complex params is the conjugate of the ascent direction). ``stores``:
    the state holds a line search's value and gradient (else ``from_state`` is ignored).
    """
    ours = library == "gradtx"
    stored = (value_and_grad_from_state if ours else optax.value_and_grad_from_state)(fun)
    fresh = jax.value_and_grad(fun)

    def step(params, state, from_state):
        if stores:
            value, grad = jax.lax.cond(
                from_state, lambda: stored(params, state=state), lambda: fresh(params)
            )
        else:
            value, grad = fresh(params)
        if conj:
            grad = gradtx.tree.conj(grad)
        updates, new_state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        return gradtx.apply_updates(params, updates), new_state, (value, grad, updates)

    return step


@functools.cache
def _compiled(library, problem, search):
    fun, _ = PROBLEMS[problem]
    opt = _learner(library, search)
    return opt, jax.jit(_step(library, opt, fun))


@functools.cache
def trajectory(library, problem, search, from_state):
    """The jitted run: per iteration, the (params, state, (value, grad, updates)) it began at."""
    _, init = PROBLEMS[problem]
    opt, step = _compiled(library, problem, search)
    params = init()
    state = opt.init(params)
    out = []
    for _ in range(ITERATIONS):
        new_params, new_state, seen = step(params, state, from_state)
        out.append((params, state, seen))
        params, state = new_params, new_state
    out.append((params, state, None))
    return out


def as_ours(opt, params, optax_state):
    """optax's state as gradtx's: the same fields in the same order, so the same leaves."""
    return jax.tree.unflatten(
        jax.tree.structure(opt.init(params), is_leaf=lambda x: x is None),
        jax.tree.leaves(optax_state, is_leaf=lambda x: x is None),
    )


CASES = [
    (problem, search, from_state)
    for problem in PROBLEMS
    for search in LINESEARCHES
    for from_state in (True, False)
]


def _case_id(case):
    problem, search, from_state = case
    return f"{problem}-{search}-{'value_and_grad_from_state' if from_state else 'value_and_grad'}"


# --- Iterates against optax --------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_jitted_iterates_match_optax(case):
    ours, theirs = trajectory("gradtx", *case), trajectory("optax", *case)
    for (p, _, _), (q, _, _) in zip(ours, theirs, strict=True):
        assert_trees_close(p, q, rtol=1e-5, atol=1e-6)
    s, t = ours[-1][1], theirs[-1][1]
    assert_trees_close(jax.tree.leaves(s), jax.tree.leaves(t), rtol=1e-5, atol=1e-6)  # the states
    # The run gets somewhere: far below the starting value.
    fun, init = PROBLEMS[case[0]]
    assert fun(ours[-1][0]) < PROGRESS[case[0]] * fun(init())


@pytest.mark.parametrize(
    "case", [c for c in CASES if c[2]], ids=lambda c: _case_id(c).rsplit("-", 1)[0]
)
def test_each_eager_update_matches_optax(case):
    """Without jit: gradtx's eager value_and_grad_from_state and update at each optax iterate."""
    problem, search, _ = case
    fun, _ = PROBLEMS[problem]
    opt = _learner("gradtx", search)
    value_and_grad = value_and_grad_from_state(fun)
    for params, optax_state, seen in trajectory("optax", *case)[:-1]:
        state = as_ours(opt, params, optax_state)
        value, grad = value_and_grad(params, state=state)
        updates, _ = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        assert_trees_close((value, grad, updates), seen, rtol=1e-5, atol=1e-6)


def test_complex_leaf_matches_optax():
    """optax's lbfgs takes complex params (inner products are real parts): so does gradtx's."""
    mat = jnp.array([[1, -2], [3, 4], [-4 + 2j, 5 - 3j], [-2 - 2j, 6]], jnp.complex64)

    def fun(p):
        return jnp.sum(jnp.abs(mat @ p["z"]) ** 1.5) + jnp.sum((p["x"] - 1.0) ** 2)

    params0 = {"z": jnp.array([1 - 1j, 1j], jnp.complex64), "x": jnp.zeros(3)}
    runs = []
    for library, opt in (("gradtx", lbfgs()), ("optax", optax.lbfgs())):
        step = jax.jit(_step(library, opt, fun, conj=True))
        params, state = params0, opt.init(params0)
        path = []
        for _ in range(20):
            params, state, _ = step(params, state, False)
            path.append(params)
        runs.append(path)
    assert runs[0][-1]["z"].dtype == jnp.complex64
    assert_trees_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)
    assert fun(runs[0][-1]) < 0.05 * fun(params0)


def _schedule(count):
    return 0.5 * 0.95 ** count.astype(jnp.float32)


@pytest.mark.parametrize("learning_rate", [0.3, _schedule], ids=["constant", "schedule"])
def test_learning_rate_without_line_search_matches_optax(learning_rate):
    fun, init = PROBLEMS["rosenbrock"]
    runs = []
    for library, opt in (
        ("gradtx", lbfgs(learning_rate, memory_size=4, linesearch=None)),
        ("optax", optax.lbfgs(learning_rate, memory_size=4, linesearch=None)),
    ):
        step = jax.jit(_step(library, opt, fun, stores=False))
        params, state = init(), opt.init(init())
        path = []
        for _ in range(ITERATIONS):
            params, state, _ = step(params, state, False)
            path.append(params)
        runs.append(path)
    assert_trees_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)


def test_vmap_over_the_learning_rate():
    """A sweep over learning rates, the line search's while loop batched, equals the loop."""
    fun = rosenbrock

    def train(learning_rate):
        opt = lbfgs(learning_rate, linesearch=scale_by_backtracking_linesearch(10))
        step = _step("gradtx", opt, fun, stores=False)
        params = jnp.zeros(5)
        state = opt.init(params)
        for _ in range(3):
            params, state, _ = step(params, state, False)
        return params

    assert_vmap_equals_loop(train, [0.5, 1.0, 2.0], rtol=1e-5, atol=1e-6)


def test_states_have_optax_fields_and_leaves():
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    for ours, theirs in [
        (lbfgs(), optax.lbfgs()),
        (
            lbfgs(linesearch=scale_by_backtracking_linesearch(5, store_grad=True)),
            optax.lbfgs(linesearch=optax.scale_by_backtracking_linesearch(5, store_grad=True)),
        ),
        (scale_by_backtracking_linesearch(5), optax.scale_by_backtracking_linesearch(5)),
    ]:
        a, b = ours.init(params), theirs.init(params)
        names = lambda s: [type(x).__name__ for x in jax.tree.leaves(s, is_leaf=_is_state)]  # noqa: E731
        assert names(a) == names(b)
        for x, y in zip(
            jax.tree.leaves(a, is_leaf=_is_state),
            jax.tree.leaves(b, is_leaf=_is_state),
            strict=True,
        ):
            if _is_state(x):
                assert x._fields == y._fields
        assert [(jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(a)] == [
            (jnp.shape(x), jnp.result_type(x)) for x in jax.tree.leaves(b)
        ]
    assert lbfgs_block.ScaleByLBFGSState._fields == optax.ScaleByLBFGSState._fields
    assert linesearch.ZoomLinesearchInfo._fields == optax.ZoomLinesearchInfo._fields


def _is_state(x):
    return isinstance(x, tuple) and hasattr(x, "_fields") and type(x).__name__.endswith("State")


# --- Extras: through chain and wrappers, into value_fn -------------------------------------------


def _regression():
    x = jnp.array([[3.0, 2.0, 1.0], [1.0, -1.0, 2.0], [0.5, 0.0, -1.0]])
    y = jnp.array([1.0, -2.0, 0.5])

    def fn(params, x, y):
        return jnp.mean((x @ params - y) ** 2)

    return fn, x, y


def test_data_extras_reach_value_fn_through_chain_and_float_leaves():
    """optax's docstring loop: value_fn(params, x, y), x and y passed as extras to the chain."""
    fn, x, y = _regression()
    runs = []
    for opt, apply in (
        (
            gradtx.float_leaves(
                gradtx.chain(gradtx.sgd(1.0), scale_by_backtracking_linesearch(15))
            ),
            gradtx.apply_updates,
        ),
        (
            optax.chain(optax.sgd(1.0), optax.scale_by_backtracking_linesearch(15)),
            optax.apply_updates,
        ),
    ):

        @jax.jit
        def step(params, state, opt=opt, apply=apply):
            value, grad = jax.value_and_grad(fn)(params, x, y)
            updates, state = opt.update(
                grad, state, params, value=value, grad=grad, value_fn=fn, x=x, y=y
            )
            return apply(params, updates), state

        params = jnp.array([1.0, 2.0, 3.0])
        state = opt.init(params)
        path = []
        for _ in range(5):
            params, state = step(params, state)
            path.append(params)
        runs.append(path)
    assert_trees_close(runs[0], runs[1], rtol=1e-5, atol=1e-6)
    assert fn(runs[0][-1], x, y) < 0.25 * fn(jnp.array([1.0, 2.0, 3.0]), x, y)


@pytest.mark.parametrize("search", ["zoom", "backtracking"])
def test_an_extra_value_fn_does_not_take_is_a_type_error(search):
    fn, x, y = _regression()
    tx = scale_by_zoom_linesearch(5) if search == "zoom" else scale_by_backtracking_linesearch(5)
    opt = gradtx.chain(gradtx.scale(-1.0), tx)
    params = jnp.zeros(3)
    value, grad = jax.value_and_grad(fn)(params, x, y)
    extras = dict(value=value, grad=grad, value_fn=fn, x=x, y=y)
    with pytest.raises(TypeError, match=r"not consumed by `value_fn`: \['batch_size', 'z'\]"):
        opt.update(grad, opt.init(params), params, **extras, z=1.0, batch_size=3)
    with pytest.raises(TypeError, match=r"needs the keyword extras .*\(missing: value_fn\)"):
        opt.update(grad, opt.init(params), params, value=value, grad=grad)
    # optax.chain hands extras only to its own GradientTransformationExtraArgs: none arrive.
    with pytest.raises(TypeError, match=r"missing: value, grad, value_fn\); .*optax.chain drops"):
        inside_optax = optax.chain(tx)
        inside_optax.update(grad, inside_optax.init(params), params, **extras)


def _full_batch_loss(params, batch):
    x, y = batch
    logp = jax.nn.log_softmax(x @ params["w"] + params["b"])
    nll = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
    return nll + 0.5e-3 * jnp.sum(params["w"] ** 2)


@pytest.mark.parametrize("which", ["gradtx lbfgs, has_aux", "optax lbfgs"])
def test_make_train_step_drives_lbfgs(which):
    """The step passes value, grad and value_fn (its batch_size is absorbed): the hand loop."""
    batch = _digits()
    if which == "optax lbfgs":
        opt, loss_fn, has_aux = optax.lbfgs(), _full_batch_loss, False
    else:
        opt, has_aux = lbfgs(), True

        def loss_fn(params, batch):
            return _full_batch_loss(params, batch), {"twice": 2 * _full_batch_loss(params, batch)}

    step = gradtx.make_train_step(loss_fn, opt, has_aux=has_aux, donate=False)
    expected = trajectory("optax", "digits", "zoom", False)
    params, state = expected[0][0], opt.init(expected[0][0])
    for k in range(10):
        params, state, metrics = step(params, state, batch)
        assert_trees_close(params, expected[k + 1][0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(metrics["loss"], expected[k][2][0], rtol=1e-6)
    if has_aux:
        np.testing.assert_allclose(metrics["aux"]["twice"], 2 * metrics["loss"], rtol=1e-6)


# --- value_and_grad_from_state -------------------------------------------------------------------


def test_value_and_grad_from_state_finds_the_pair_wherever_it_is_nested():
    fun = rosenbrock
    params = jnp.array([0.5, -0.5, 1.0])
    fresh = jax.value_and_grad(fun)(params)
    stored_grad = jnp.array([1.0, 2.0, 3.0])
    states = {
        "lbfgs": lbfgs().init(params),
        "named_chain": gradtx.named_chain(
            ("sgd", gradtx.sgd(1.0)), ("search", scale_by_zoom_linesearch(5))
        ).init(params),
        "optax.chain": optax.chain(
            optax.sgd(1.0), scale_by_backtracking_linesearch(5, store_grad=True)
        ).init(params),
        "inject_hyperparams": gradtx.inject_hyperparams(lbfgs)(learning_rate=0.5).init(params),
    }
    value_and_grad = value_and_grad_from_state(fun)
    for name, state in states.items():
        # A fresh state holds value inf: the pair is computed.
        assert_trees_close(value_and_grad(params, state=state), fresh)
        # Once a search has stored a finite value, its pair is returned as it is.
        stored = gradtx.tree.set(state, value=jnp.asarray(7.0), grad=stored_grad)
        value, grad = value_and_grad(params, state=stored)
        assert float(value) == 7.0 and np.array_equal(grad, stored_grad), name


def test_value_and_grad_from_state_errors():
    params = jnp.zeros(2)
    value_and_grad = value_and_grad_from_state(lambda p: jnp.sum(p**2))
    with pytest.raises(ValueError, match="value or gradient not found"):
        value_and_grad(params, state=gradtx.adam(0.1).init(params))
    with pytest.raises(ValueError, match="store_grad=True"):  # the backtracking search keeps none
        value_and_grad(params, state=scale_by_backtracking_linesearch(5).init(params))
    two = gradtx.chain(scale_by_zoom_linesearch(5), scale_by_zoom_linesearch(5))
    with pytest.raises(KeyError, match="multiple values for 'value'"):
        value_and_grad(params, state=two.init(params))


# --- Hyperparameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: lbfgs(memory_size=0), r"lbfgs: memory_size must be an integer >= 1, got 0"),
        (lambda: lbfgs(memory_size=2.5), r"lbfgs: memory_size must be an integer >= 1, got 2.5"),
        (lambda: lbfgs(learning_rate=-1.0), r"lbfgs: learning_rate must be in \[0, inf\)"),
        (lambda: scale_by_lbfgs(0), r"scale_by_lbfgs: memory_size must be an integer >= 1"),
        (
            lambda: scale_by_zoom_linesearch(0),
            r"scale_by_zoom_linesearch: max_linesearch_steps must be an integer >= 1, got 0",
        ),
        (
            lambda: scale_by_zoom_linesearch(10, max_learning_rate=0.0),
            r"max_learning_rate must be in \(0, inf\), got 0",
        ),
        (lambda: scale_by_zoom_linesearch(10, tol=-1e-3), r"tol must be in \[0, inf\)"),
        (lambda: scale_by_zoom_linesearch(10, increase_factor=0.5), r"increase_factor must be in"),
        (lambda: scale_by_zoom_linesearch(10, slope_rtol=1.0), r"slope_rtol must be in \[0, 1\)"),
        (lambda: scale_by_zoom_linesearch(10, curv_rtol=-0.1), r"curv_rtol must be in \[0, inf\]"),
        (lambda: scale_by_zoom_linesearch(10, approx_dec_rtol=-1.0), r"approx_dec_rtol must be"),
        (lambda: scale_by_zoom_linesearch(10, stepsize_precision=-1.0), r"stepsize_precision"),
        (
            lambda: scale_by_zoom_linesearch(10, initial_guess_strategy="half"),
            r"initial_guess_strategy must be 'one' or 'keep', got 'half'",
        ),
        (
            lambda: scale_by_backtracking_linesearch(-1),
            r"scale_by_backtracking_linesearch: max_backtracking_steps must be an integer >= 0",
        ),
        (
            lambda: scale_by_backtracking_linesearch(10, decrease_factor=1.0),
            r"decrease_factor must be in \(0, 1\), got 1",
        ),
        (
            lambda: scale_by_backtracking_linesearch(10, increase_factor=0.9),
            r"increase_factor must be in \[1, inf\], got 0.9",
        ),
        (lambda: scale_by_backtracking_linesearch(10, slope_rtol=-0.1), r"slope_rtol must be in"),
        (
            lambda: scale_by_backtracking_linesearch(10, max_learning_rate=-1.0),
            r"max_learning_rate",
        ),
        (lambda: scale_by_backtracking_linesearch(10, atol=-1.0), r"atol must be in \[0, inf\)"),
        (lambda: scale_by_backtracking_linesearch(10, rtol=-1.0), r"rtol must be in \[0, inf\)"),
    ],
)
def test_bad_hyperparameters_name_the_argument(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_linesearch_is_a_type_error():
    with pytest.raises(TypeError, match="lbfgs: linesearch must be a gradient transformation"):
        lbfgs(linesearch="zoom")


def test_edge_values_optax_accepts_still_build():
    """No more than optax's domain is rejected: inf factors, no curvature criterion, no cap."""
    import math

    scale_by_backtracking_linesearch(0, increase_factor=math.inf)  # one try, from the cap
    scale_by_zoom_linesearch(1, curv_rtol=jnp.inf, approx_dec_rtol=None, max_learning_rate=None)
    lbfgs(learning_rate=jnp.asarray(0.5), memory_size=1, scale_init_precond=False)


def test_update_without_params_names_the_block():
    tx = scale_by_lbfgs()
    with pytest.raises(ValueError, match="scale_by_lbfgs: update needs params"):
        tx.update(jnp.ones(2), tx.init(jnp.ones(2)))


# --- The example ---------------------------------------------------------------------------------


def test_digits_example_reaches_scipys_optimum(capsys):
    example = load_script(EXAMPLES / "lbfgs_digits.py")
    result = example.main()
    ours, theirs, stepped = result["gradtx"], result["scipy"], result["train_step"]
    # Convex: one minimum value. gradtx's float32 point, valued in float64, is scipy's minimum.
    x, y = example.data()
    objective = example.float64_objective(x, y)
    for r in (ours, stepped):
        np.testing.assert_allclose(
            objective(example.flat(r["params"]))[0], theirs["loss"], rtol=1e-7
        )
    assert ours["grad_norm"] < 1e-5
    # W is unique (the decay fixes it); the biases only up to a common shift, in a flat valley.
    np.testing.assert_allclose(ours["params"]["w"], theirs["params"]["w"], atol=2e-3)
    centred = [np.asarray(r["params"]["b"]) - np.mean(r["params"]["b"]) for r in (ours, theirs)]
    np.testing.assert_allclose(*centred, atol=1e-2)
    # Reusing the search's evaluations: about one evaluation per iteration, as scipy's.
    assert ours["evaluations"] < 1.5 * ours["iterations"]
    assert "scipy L-BFGS-B" in capsys.readouterr().out


@pytest.mark.parametrize("search", ["zoom", "backtracking"])
def test_a_donated_step_takes_the_state_init_made(search):
    """No array twice in the state: jit refuses to donate one buffer for two arguments
    (optax.lbfgs's state holds one inf twice, so a donated optax step fails at once)."""
    linesearch_tx = (
        scale_by_zoom_linesearch(15)
        if search == "zoom"
        else scale_by_backtracking_linesearch(15, store_grad=True)
    )
    opt = lbfgs(linesearch=linesearch_tx)
    batch = _digits()
    params = {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}
    state = opt.init(params)
    pointers = [x.unsafe_buffer_pointer() for x in jax.tree.leaves(state)]
    assert len(set(pointers)) == len(pointers)
    step = gradtx.make_train_step(_full_batch_loss, opt)  # donates params and state
    first = _full_batch_loss(params, batch)
    for _ in range(3):
        params, state, metrics = step(params, state, batch)
    assert float(metrics["loss"]) < float(first)
