"""Line searches: a step size along the update, found by evaluating the objective on the line.

A line search is the last block before the params move: it takes the update
direction :math:`u` from the blocks before it and returns :math:`\\eta u`, with
:math:`\\eta` chosen by calling the objective at :math:`w + \\eta u`. It needs three
keyword extras on every ``update``, which :func:`gradtx.chain` hands it (its
``update`` takes ``**extra``) and :func:`gradtx.make_train_step` passes:

* ``value``: :math:`f(w)`, the objective at the current params;
* ``grad``: :math:`\\nabla f(w)`;
* ``value_fn``: :math:`f`, called as ``value_fn(params, **fn_kwargs)``.

Every other extra goes to ``value_fn``, which must name it among its parameters
(the batch, say); one it does not name raises ``TypeError``, as in optax. (The
``value_fn`` that :func:`gradtx.make_train_step` passes names ``batch_size``, the
extra it passes for the CNTK learners, and ignores it.) Inside ``optax.chain`` a
line search gets no extras at all: optax hands them only to members that are
its own ``optax.GradientTransformationExtraArgs``; ``update`` then says so.

Both searches keep the value (and the zoom search the gradient) at the step they
accept, so a full-batch loop can start the next iteration from them instead of
evaluating the objective again: :func:`value_and_grad_from_state`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks, tree
from gradtx.core import GradientTransformationExtraArgs


def _check_extras(who: str, value: Any, grad: Any, value_fn: Any) -> None:
    """A line search cannot run without its three extras: say which are missing, and why."""
    missing = [
        n for n, v in (("value", value), ("grad", grad), ("value_fn", value_fn)) if v is None
    ]
    if missing:
        raise TypeError(
            f"{who}: update needs the keyword extras value, grad and value_fn (missing: "
            f"{', '.join(missing)}); gradtx.chain, its wrappers and gradtx.make_train_step "
            f"pass them on, but optax.chain drops every extra of a transform that is not an "
            f"optax.GradientTransformationExtraArgs"
        )


def value_fn_kwargs(who: str, value_fn: Callable[..., Any], extra_args: dict) -> dict:
    """The extras named by ``value_fn``'s parameters; any other is a ``TypeError`` (optax's rule).

    A ``value_fn`` that takes ``**kwargs`` still gets only the extras it names, as in
    optax: an extra no one reads is more likely a typo than an argument.
    """
    if not callable(value_fn):
        raise TypeError(f"{who}: value_fn must be the objective, a callable, got {value_fn!r}")
    try:
        names = set(inspect.signature(value_fn).parameters)
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        names = set()
    remaining = sorted(k for k in extra_args if k not in names)
    if remaining:
        raise TypeError(
            f"Unexpected keyword arguments passed to `{who}.update`. These arguments were "
            f"not consumed by `value_fn`: {remaining}. Ensure that all extra keyword "
            f"arguments are accepted by `value_fn`."
        )
    return {k: v for k, v in extra_args.items() if k in names}


def _value_dtype(params: Any) -> Any:
    """The dtype of the objective's value: the real dtype of the params' first leaf.

    float32 for a tree with no leaves (optax's init raises ``IndexError`` on one).
    """
    leaves = jax.tree.leaves(params)
    return tree.real_dtype(jnp.result_type(leaves[0])) if leaves else jnp.dtype(jnp.float32)


def _check_steps(who: str, name: str, value: Any, at_least: int) -> None:
    """A step budget is an integer ``>= at_least``; an array or a tracer is not inspected."""
    if isinstance(value, jax.Array) and not checks.is_concrete(value):
        return
    if isinstance(value, jax.Array) and value.ndim == 0 and jnp.issubdtype(value, jnp.integer):
        value = int(value)
    checks.check_length(who, name, value, at_least=at_least, wording="integer")


def _cond_print(condition: Any, message: str, **kwargs: Any) -> None:
    jax.lax.cond(
        condition,
        lambda _: jax.debug.print(message, **kwargs, ordered=True),
        lambda _: None,
        None,
    )


def _compiled_when_eager(loop: Callable[..., Any]) -> Callable[..., Any]:
    """``loop(value_fn, *args)``, compiled once per ``value_fn`` when called outside ``jit``.

    Called eagerly, ``lax.while_loop`` traces and compiles its body anew on every
    call (the body's closures are new each time): seconds per iteration. Outside a
    trace, with array arguments, the loop runs as ``jax.jit(loop, static_argnums=0)``
    instead, so an eager loop that passes the same ``value_fn`` each time compiles
    its search once. It is the same computation either way (eagerly too, XLA
    compiles the while loop whole); under ``jit`` or ``vmap``, or with a ``value_fn``
    argument that is not an array, ``loop`` is called as it is.
    """
    compiled = jax.jit(loop, static_argnums=0)

    def run(value_fn: Callable[..., Any], *args: Any, fn_kwargs: dict) -> Any:
        eager = checks.is_concrete((args, fn_kwargs)) and all(
            isinstance(x, jax.Array | np.ndarray) for x in jax.tree.leaves(fn_kwargs)
        )
        try:
            hash(value_fn)
        except TypeError:
            eager = False
        return (compiled if eager else loop)(value_fn, *args, fn_kwargs)

    return run


# --- Backtracking (Armijo) ---------------------------------------------------------------------


class BacktrackingLinesearchInfo(NamedTuple):
    """What the last backtracking search did, for debugging.

    Attributes:
      num_linesearch_steps: the objective evaluations it made.
      decrease_error: how far the accepted step is from sufficient decrease
        (0: it decreases enough; positive: the search ran out of steps).
    """

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array


class ScaleByBacktrackingLinesearchState(NamedTuple):
    """State of :func:`scale_by_backtracking_linesearch`.

    Attributes:
      learning_rate: the step size the last search accepted (the next one starts from it).
      value: the objective at the accepted step, for :func:`value_and_grad_from_state`.
      grad: its gradient with ``store_grad=True``, else None.
      info: a :class:`BacktrackingLinesearchInfo`.
    """

    learning_rate: jax.Array
    value: jax.Array
    grad: Any
    info: BacktrackingLinesearchInfo


class BacktrackingLineSearchState(NamedTuple):
    """The carry of the backtracking search's loop (internal)."""

    learning_rate: jax.Array
    new_value: jax.Array
    new_grad: Any
    decrease_error: jax.Array
    iter_num: jax.Array


def scale_by_backtracking_linesearch(
    max_backtracking_steps: int,
    slope_rtol: Any = 1e-4,
    decrease_factor: Any = 0.8,
    increase_factor: Any = 1.5,
    max_learning_rate: Any = 1.0,
    atol: Any = 0.0,
    rtol: Any = 0.0,
    store_grad: bool = False,
    verbose: bool = False,
) -> GradientTransformationExtraArgs:
    """Scale the update by the largest tried step that decreases :math:`f` enough (Armijo).

    Starting from :math:`\\eta = \\min(\\gamma\\, \\eta_{prev}, \\eta_{max})`, the step is
    multiplied by the decrease factor :math:`\\beta` until

    .. math::
        f(w + \\eta u) \\le (1 + \\delta) f(w) + c\\, \\eta \\,
        \\operatorname{Re}\\langle u, \\overline{\\nabla f(w)} \\rangle + \\epsilon

    or ``max_backtracking_steps`` reductions were made; then :math:`u \\leftarrow \\eta u`.
    A step whose value is NaN or infinite never satisfies it; if even the last
    one is, the step is 0. :math:`u` must be a descent direction
    (:math:`\\langle u, \\nabla f \\rangle < 0`, e.g. after :func:`gradtx.sgd`).

    ``update`` takes the keyword extras ``value`` (:math:`f(w)`), ``grad``
    (:math:`\\nabla f(w)`), ``value_fn`` (:math:`f`) and any argument of
    ``value_fn`` (the batch, say); see :mod:`gradtx.transforms.linesearch`.

    Args:
      max_backtracking_steps: the most reductions of the step, an integer :math:`\\ge 0`.
      slope_rtol: :math:`c` in [0, 1), the fraction of the linear decrease required.
      decrease_factor: :math:`\\beta` in (0, 1).
      increase_factor: :math:`\\gamma \\ge 1`: how much larger than the last
        accepted step the first guess is (``math.inf``: always start at :math:`\\eta_{max}`).
      max_learning_rate: :math:`\\eta_{max} > 0`.
      atol: :math:`\\epsilon \\ge 0`, the absolute tolerance of the criterion.
      rtol: :math:`\\delta \\ge 0`, its relative tolerance.
      store_grad: also compute and keep :math:`\\nabla f` at the accepted step, for
        :func:`value_and_grad_from_state`.
      verbose: print a diagnosis when the search fails.

    Examples:
      >>> import jax, jax.numpy as jnp, gradtx
      >>> from gradtx.transforms.linesearch import scale_by_backtracking_linesearch
      >>> def f(w): return jnp.sum(w ** 2)
      >>> opt = gradtx.chain(gradtx.sgd(1.0), scale_by_backtracking_linesearch(15))
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> for _ in range(3):
      ...     value, grad = jax.value_and_grad(f)(params)
      ...     updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
      ...     params = gradtx.apply_updates(params, updates)
      ...     print(f"{f(params):.2E}")
      5.04E+00
      1.81E+00
      6.53E-01

    References:
      Armijo, "Minimization of functions having Lipschitz continuous first partial
        derivatives", 1966.

      Vaswani et al., "Painless Stochastic Gradient", 2019.

      optax: ``optax.scale_by_backtracking_linesearch``.
    """
    who = "scale_by_backtracking_linesearch"
    _check_steps(who, "max_backtracking_steps", max_backtracking_steps, 0)
    checks.check_hyperparams(
        who,
        slope_rtol=(slope_rtol, "[0, 1)"),
        decrease_factor=(decrease_factor, "(0, 1)"),
        increase_factor=(increase_factor, "[1, inf]"),
        max_learning_rate=(max_learning_rate, checks.POSITIVE),
        atol=(atol, checks.NONNEGATIVE),
        rtol=(rtol, checks.NONNEGATIVE),
    )

    def init(params):
        val_dtype = _value_dtype(params)
        return ScaleByBacktrackingLinesearchState(
            learning_rate=jnp.array(1.0, dtype=val_dtype),
            value=jnp.array(jnp.inf, dtype=val_dtype),
            grad=tree.tree_zeros_like(params) if store_grad else None,
            info=BacktrackingLinesearchInfo(
                num_linesearch_steps=tree.zeros_count(),
                decrease_error=jnp.array(jnp.inf, dtype=val_dtype),
            ),
        )

    def decrease_error_at(stepsize, slope, value, new_value):
        error = new_value - (1.0 + rtol) * value - stepsize * slope_rtol * slope
        error = jnp.where(jnp.isnan(error), jnp.inf, error)
        return jnp.maximum(error, 0.0)

    def searching(carry):
        return (~(carry.decrease_error <= atol)) & (carry.iter_num <= max_backtracking_steps)

    def search(value_fn, carry, params, updates, slope, value, fn_kwargs):
        objective = functools.partial(value_fn, **fn_kwargs)

        def body(carry):
            iter_num = carry.iter_num
            # The first evaluation is at the guess itself; each further one is a reduction.
            learning_rate = jnp.where(
                iter_num > 0, decrease_factor * carry.learning_rate, carry.learning_rate
            )
            new_params = tree.tree_add_scale(params, learning_rate, updates)
            new_grad = carry.new_grad
            if store_grad:
                # Linearize once: the value now, the gradient (by transposing) only at the end.
                new_value, jvp = jax.linearize(objective, new_params)
                error = decrease_error_at(learning_rate, slope, value, new_value)
                new_grad = jax.lax.cond(
                    (error <= atol) | (iter_num == max_backtracking_steps),
                    lambda p: jax.linear_transpose(jvp, p)(1.0)[0],
                    lambda *_: new_grad,
                    new_params,
                )
            else:
                new_value = objective(new_params)
                error = decrease_error_at(learning_rate, slope, value, new_value)
            new_carry = BacktrackingLineSearchState(
                learning_rate, new_value, new_grad, error, iter_num + 1
            )
            return tree.tree_cast_like(new_carry, carry)

        return jax.lax.while_loop(searching, body, carry)

    run_search = _compiled_when_eager(search)

    def update(
        updates,
        state,
        params=None,
        *,
        value: Any = None,
        grad: Any = None,
        value_fn: Any = None,
        **extra_args,
    ):
        _check_extras(who, value, grad, value_fn)
        fn_kwargs = value_fn_kwargs(who, value_fn, extra_args)
        # The slope of eta -> f(w + eta u) at 0: negative for a descent direction.
        slope = tree.tree_real(tree.tree_vdot(updates, tree.tree_conj(grad)))
        carry = BacktrackingLineSearchState(
            learning_rate=jnp.minimum(increase_factor * state.learning_rate, max_learning_rate),
            new_value=value,
            new_grad=tree.tree_zeros_like(params),
            decrease_error=jnp.array(jnp.inf),
            iter_num=jnp.asarray(0),
        )
        carry = run_search(value_fn, carry, params, updates, slope, value, fn_kwargs=fn_kwargs)

        # No finite step found: do not move (a step would give NaN or inf params).
        learning_rate = jnp.where(jnp.isinf(carry.decrease_error), 0.0, carry.learning_rate)
        if verbose:
            _cond_print(
                carry.decrease_error > atol,
                "INFO: scale_by_backtracking_linesearch: no step size with sufficient "
                "decrease found.\nValue at current params: {value}\nSlope along update "
                "direction: {slope}\nStepsize: {stepsize}\nDecrease Error: {decrease_error}",
                stepsize=carry.learning_rate,
                decrease_error=carry.decrease_error,
                value=value,
                slope=slope,
            )
            _cond_print(
                jnp.isinf(carry.decrease_error),
                "Using a stepsize of 0 to avoid infinite or nan values.",
            )
        new_state = ScaleByBacktrackingLinesearchState(
            learning_rate=learning_rate,
            value=carry.new_value,
            grad=carry.new_grad if store_grad else None,
            info=BacktrackingLinesearchInfo(carry.iter_num, carry.decrease_error),
        )
        return tree.tree_scale(learning_rate, updates), tree.tree_cast_like(new_state, state)

    return GradientTransformationExtraArgs(init, update)


# --- Zoom (strong Wolfe) -----------------------------------------------------------------------

FLAG_INTERVAL_NOT_FOUND = (
    "No interval satisfying curvature condition. "
    "Consider increasing maximal possible stepsize of the linesearch."
)
FLAG_INTERVAL_TOO_SMALL = "Length of searched interval has been reduced below threshold."
FLAG_CURVATURE_COND_NOT_SATISFIED = (
    "Returning stepsize with sufficient decrease but curvature condition not satisfied."
)
FLAG_NO_STEPSIZE_FOUND = "Linesearch failed, no stepsize satisfying sufficient decrease found."
FLAG_NOT_A_DESCENT_DIRECTION = (
    "The linesearch failed because the provided direction is not a descent direction. "
)


class ZoomLinesearchState(NamedTuple):
    """The carry of the zoom search's loop (internal): the point being tried, the
    bracketing interval and the best step with sufficient decrease so far.

    ``low`` and ``high`` are the interval's ends by value (:math:`f(low) \\le f(high)`),
    not by position.
    """

    count: jax.Array
    # Fixed for the search.
    params: Any
    updates: Any
    stepsize_guess: jax.Array
    # At the current trial step.
    stepsize: jax.Array
    value: jax.Array
    grad: Any
    slope: jax.Array
    # At step 0, for the criteria.
    value_init: jax.Array
    slope_init: jax.Array
    # The criteria at the current step.
    decrease_error: jax.Array
    curvature_error: jax.Array
    error: jax.Array
    # Phase (searching for an interval, then zooming into it) and stop flags.
    interval_found: jax.Array
    done: jax.Array
    failed: jax.Array
    # The interval, and the third point of the cubic interpolation.
    low: jax.Array
    value_low: jax.Array
    slope_low: jax.Array
    high: jax.Array
    value_high: jax.Array
    slope_high: jax.Array
    cubic_ref: jax.Array
    value_cubic_ref: jax.Array
    # A step with sufficient decrease, returned if the curvature criterion cannot be met.
    safe_stepsize: jax.Array
    safe_value: jax.Array
    safe_grad: Any


def _cubicmin(a, fa, fpa, b, fb, c, fc):
    """The critical point of the cubic through (a, fa), (b, fb), (c, fc) with slope fpa at a.

    NaN when there is none (a negative radical): the caller then does not use it.
    """
    C = fpa  # noqa: N806 (the polynomial's coefficients, as scipy names them)
    db = b - a
    dc = c - a
    denom = (db * dc) ** 2 * (db - dc)
    d1 = jnp.array([[dc**2, -(db**2)], [-(dc**3), db**3]])
    A, B = (  # noqa: N806
        jnp.dot(
            d1,
            jnp.array([fb - fa - C * db, fc - fa - C * dc]),
            precision=jax.lax.Precision.HIGHEST,
        )
        / denom
    )
    radical = B * B - 3.0 * A * C
    return a + (-B + jnp.sqrt(radical)) / (3.0 * A)


def _quadmin(a, fa, fpa, b, fb):
    """The critical point of the quadratic through (a, fa), (b, fb) with slope fpa at a."""
    db = b - a
    B = (fb - fa - fpa * db) / (db**2)  # noqa: N806
    return a - fpa / (2.0 * B)


def zoom_linesearch(
    max_linesearch_steps: int,
    max_stepsize: Any = None,
    tol: Any = 0.0,
    increase_factor: Any = 2.0,
    slope_rtol: Any = 1e-4,
    curv_rtol: Any = 0.9,
    approx_dec_rtol: Any = 1e-6,
    interval_threshold: Any = 1e-5,
    verbose: bool = False,
) -> tuple[Callable[..., ZoomLinesearchState], Callable[..., ZoomLinesearchState], Callable]:
    """The zoom search's loop as ``(init, step, cond)``; :func:`scale_by_zoom_linesearch` runs it.

    ``init(updates, params, *, value, grad, prev_stepsize, initial_guess_strategy)``
    starts a search, ``step(state, *, value_and_grad_fn, fn_kwargs)`` makes one
    evaluation, ``cond(state)`` says whether to go on. The arguments are
    :func:`scale_by_zoom_linesearch`'s (``max_stepsize`` is its ``max_learning_rate``,
    ``interval_threshold`` its ``stepsize_precision``).

    Args:
      max_linesearch_steps: the most evaluations of the objective.
      max_stepsize: the largest step, or None.
      tol: the tolerance of both criteria.
      increase_factor: the growth of the step while searching for an interval.
      slope_rtol: :math:`c_1` of the decrease criterion.
      curv_rtol: :math:`c_2` of the curvature criterion.
      approx_dec_rtol: :math:`c_3` of the approximate decrease criterion, or None.
      interval_threshold: the interval length below which a safe step is taken.
      verbose: print a diagnosis when the search fails.
    """

    def on_line(value_and_grad_fn, params, stepsize, updates, fn_kwargs):
        step = tree.tree_add_scale(params, stepsize, updates)
        value_step, grad_step = value_and_grad_fn(step, **fn_kwargs)
        slope_step = tree.tree_real(tree.tree_vdot(tree.tree_conj(grad_step), updates))
        return step, value_step, grad_step, slope_step

    def decrease_error_at(stepsize, value_step, slope_step, value_init, slope_init):
        # Armijo's sufficient decrease (Nocedal and Wright, eq. 3.7a) ...
        error = value_step - value_init - slope_rtol * stepsize * slope_init
        if approx_dec_rtol is not None:
            # ... or, close enough to a minimum for f's rounding to hide the decrease,
            # Hager and Zhang's approximate one (their eqs. 23, 26-27): whichever holds.
            approx_error = slope_step - (2 * slope_rtol - 1.0) * slope_init
            delta_values = value_step - value_init - approx_dec_rtol * jnp.abs(value_init)
            approx_error = jnp.maximum(approx_error, delta_values)
            error = jnp.minimum(approx_error, error)
        error = jnp.maximum(error, 0.0)
        return jnp.where(jnp.isnan(error), jnp.inf, error)

    def curvature_error_at(slope_step, slope_init):
        # The strong Wolfe curvature criterion (Nocedal and Wright, eq. 3.7b).
        error = jnp.maximum(jnp.abs(slope_step) - curv_rtol * jnp.abs(slope_init), 0.0)
        return jnp.where(jnp.isnan(error), jnp.inf, error)

    def failure_diagnostic(state):
        jax.debug.print(FLAG_NO_STEPSIZE_FOUND)
        slope_init = state.slope_init
        is_descent_dir = slope_init < 0.0
        _cond_print(
            ~is_descent_dir,
            FLAG_NOT_A_DESCENT_DIRECTION
            + "The slope (={slope_init}) at stepsize=0 should be negative",
            slope_init=slope_init,
        )
        _cond_print(
            is_descent_dir, "Consider augmenting the maximal number of linesearch iterations."
        )
        eps = jnp.finfo(jnp.float32).eps
        _cond_print(
            (state.stepsize < eps) & is_descent_dir,
            "Computed stepsize (={stepsize}) is below machine precision (={eps}), consider "
            "passing to higher precision like x64, using "
            "jax.config.update('jax_enable_x64', True).",
            stepsize=state.stepsize,
            eps=eps,
        )
        _cond_print(
            (jnp.abs(slope_init) > 1e16) & is_descent_dir,
            "Very large absolute slope at stepsize=0. (|slope|={abs_slope_init}). The "
            "objective is badly conditioned. Consider reparameterizing objective (e.g., "
            "normalizing parameters) or finding a better guess for the initial parameters "
            "for the solver.",
            abs_slope_init=jnp.abs(slope_init),
        )
        outside_domain = jnp.isinf(state.decrease_error)
        _cond_print(
            outside_domain,
            "Cannot even make a step without getting Inf or Nan. The linesearch won't make "
            "a step and the optimizer is stuck.",
        )
        _cond_print(
            ~outside_domain,
            "Making an unsafe step, not decreasing enough the objective. Convergence of the "
            "solver is compromised as it does not reduce values.",
        )

    def try_safe_step(state):
        """Out of steps: fall back to the safe step, if there is one (or no finite one)."""
        outside_domain = jnp.isinf(state.decrease_error)
        final_stepsize, final_value, final_grad = tree.tree_where(
            (state.safe_stepsize > 0.0) | outside_domain,
            [state.safe_stepsize, state.safe_value, state.safe_grad],
            [state.stepsize, state.value, state.grad],
        )
        if verbose:
            jax.debug.print(
                "INFO: scale_by_zoom_linesearch:\nValue at current params: {value_init}\n"
                "Slope along update direction: {slope_init}\nStepsize reached: {stepsize}\n"
                "Decrease Error: {decrease_error}\nCurvature Error: {curvature_error}",
                value_init=state.value_init,
                slope_init=state.slope_init,
                stepsize=state.stepsize,
                decrease_error=state.decrease_error,
                curvature_error=state.curvature_error,
                ordered=True,
            )
            interval_length = jnp.abs(state.low - state.high)
            _cond_print(
                interval_length <= interval_threshold,
                FLAG_INTERVAL_TOO_SMALL + " Interval length: {interval_length}.",
                interval_length=interval_length,
            )
            jax.lax.cond(
                state.safe_stepsize > 0.0,
                lambda _: jax.debug.print(
                    FLAG_CURVATURE_COND_NOT_SATISFIED
                    + " Stepsize ensuring sufficient decrease: {safe_stepsize}.",
                    safe_stepsize=state.safe_stepsize,
                ),
                failure_diagnostic,
                state,
            )
        final = state._replace(stepsize=final_stepsize, grad=final_grad, value=final_value)
        return tree.tree_cast_like(final, state)

    def search_interval(state, value_and_grad_fn, fn_kwargs):
        """Grow the step until an interval holding a good one is found (Algorithm 3.5)."""
        iter_num = state.count
        prev_stepsize, prev_value, prev_slope = state.stepsize, state.value, state.slope

        new_stepsize = jnp.where(
            iter_num == 0, state.stepsize_guess, increase_factor * prev_stepsize
        )
        if max_stepsize is not None:
            max_stepsize_reached = new_stepsize >= max_stepsize
            new_stepsize = jnp.minimum(new_stepsize, max_stepsize)
        else:
            max_stepsize_reached = jnp.asarray(False)

        _, new_value, new_grad, new_slope = on_line(
            value_and_grad_fn, state.params, new_stepsize, state.updates, fn_kwargs
        )
        decrease_error = decrease_error_at(
            new_stepsize, new_value, new_slope, state.value_init, state.slope_init
        )
        curvature_error = curvature_error_at(new_slope, state.slope_init)
        new_error = jnp.maximum(decrease_error, curvature_error)

        # Keep a step with sufficient decrease, in case the curvature criterion is never met.
        safe_stepsize, safe_value, safe_grad = tree.tree_where(
            decrease_error <= tol,
            [new_stepsize, new_value, new_grad],
            [state.safe_stepsize, state.safe_value, state.safe_grad],
        )

        # The new point ends the interval on the high side if it did not decrease enough
        # or rose; on the low side if the function rises past it; else the search goes on.
        set_high_to_new = (decrease_error > 0.0) | ((new_value >= prev_value) & (iter_num > 0))
        set_low_to_new = (new_slope >= 0.0) & (~set_high_to_new)
        low, value_low, slope_low, high, value_high, slope_high = tree.tree_where(
            set_low_to_new,
            [new_stepsize, new_value, new_slope, prev_stepsize, prev_value, prev_slope],
            [prev_stepsize, prev_value, prev_slope, new_stepsize, new_value, new_slope],
        )

        interval_found = set_high_to_new | set_low_to_new | (new_error <= tol)
        # At the largest step with no interval found, sufficient decrease holds there but a
        # larger step would be needed for the curvature criterion: take it, and stop.
        done = (new_error <= tol) | (max_stepsize_reached & ~interval_found)
        if verbose:
            _cond_print(
                max_stepsize_reached & ~interval_found,
                "INFO: scale_by_zoom_linesearch:\nValue at current params: {value_init}\n"
                "Slope along update direction: {slope_init}\nStepsize reached: {stepsize}\n"
                "Decrease Error: {decrease_error}\nCurvature Error: {curvature_error}"
                + FLAG_INTERVAL_NOT_FOUND
                + "\n"
                + FLAG_CURVATURE_COND_NOT_SATISFIED,
                value_init=state.value_init,
                slope_init=state.slope_init,
                stepsize=new_stepsize,
                decrease_error=decrease_error,
                curvature_error=curvature_error,
            )
        failed = (iter_num + 1 >= max_linesearch_steps) & (~done)

        new_state = state._replace(
            count=tree.safe_increment(iter_num),
            stepsize=new_stepsize,
            value=new_value,
            grad=new_grad,
            slope=new_slope,
            decrease_error=decrease_error,
            curvature_error=curvature_error,
            error=new_error,
            interval_found=jnp.asarray(interval_found),
            done=jnp.asarray(done),
            failed=jnp.asarray(failed),
            low=low,
            value_low=value_low,
            slope_low=slope_low,
            high=high,
            value_high=value_high,
            slope_high=slope_high,
            cubic_ref=low,
            value_cubic_ref=value_low,
            safe_stepsize=safe_stepsize,
            safe_value=safe_value,
            safe_grad=safe_grad,
        )
        return tree.tree_cast_like(new_state, state)

    def zoom_into_interval(state, value_and_grad_fn, fn_kwargs):
        """Shrink the interval around a good step by interpolation (Algorithm 3.6)."""
        iter_num = state.count
        low, value_low, slope_low = state.low, state.value_low, state.slope_low
        high, value_high, slope_high = state.high, state.value_high, state.slope_high
        cubic_ref, value_cubic_ref = state.cubic_ref, state.value_cubic_ref

        delta = jnp.abs(high - low)
        left = jnp.minimum(high, low)
        right = jnp.maximum(high, low)
        cubic_chk = 0.2 * delta
        quad_chk = 0.1 * delta
        # A threshold well above machine precision: once the interval is that small, a
        # step with sufficient decrease is taken rather than chasing the curvature criterion.
        too_small_int = delta <= interval_threshold

        # The next point: the cubic's minimum, else the quadratic's, else the midpoint,
        # whichever first lies well inside the interval.
        middle_cubic = _cubicmin(
            low, value_low, slope_low, high, value_high, cubic_ref, value_cubic_ref
        )
        use_cubic = (middle_cubic > left + cubic_chk) & (middle_cubic < right - cubic_chk)
        middle_quad = _quadmin(low, value_low, slope_low, high, value_high)
        use_quad = (~use_cubic) & (middle_quad > left + quad_chk) & (middle_quad < right - quad_chk)
        use_bisection = (~use_cubic) & (~use_quad)
        middle = jnp.where(use_cubic, middle_cubic, cubic_ref)
        middle = jnp.where(use_quad, middle_quad, middle)
        middle = jnp.where(use_bisection, (low + high) / 2.0, middle)

        _, value_middle, grad_middle, slope_middle = on_line(
            value_and_grad_fn, state.params, middle, state.updates, fn_kwargs
        )
        decrease_error = decrease_error_at(
            middle, value_middle, slope_middle, state.value_init, state.slope_init
        )
        curvature_error = curvature_error_at(slope_middle, state.slope_init)
        new_error = jnp.maximum(decrease_error, curvature_error)

        # The safe step is the lowest with sufficient decrease seen so far.
        better_safe = (decrease_error <= tol) & (value_middle < state.safe_value)
        safe_stepsize, safe_value, safe_grad = tree.tree_where(
            better_safe,
            [middle, value_middle, grad_middle],
            [state.safe_stepsize, state.safe_value, state.safe_grad],
        )
        done = new_error <= tol

        set_high_to_middle = (decrease_error > 0.0) | (value_middle >= value_low)
        set_high_to_low = (slope_middle * (high - low) >= 0.0) & (~set_high_to_middle)
        set_low_to_middle = ~set_high_to_middle
        new_high, new_value_high, new_slope_high = tree.tree_where(
            set_high_to_middle, [middle, value_middle, slope_middle], [high, value_high, slope_high]
        )
        new_high, new_value_high, new_slope_high = tree.tree_where(
            set_high_to_low, [low, value_low, slope_low], [new_high, new_value_high, new_slope_high]
        )
        new_low, new_value_low, new_slope_low = tree.tree_where(
            set_low_to_middle, [middle, value_middle, slope_middle], [low, value_low, slope_low]
        )
        # The end that was dropped becomes the cubic's third point.
        new_cubic_ref, new_value_cubic_ref = tree.tree_where(
            set_high_to_middle | set_high_to_low, [high, value_high], [low, value_low]
        )
        # Stop when out of steps, or when the interval is too small and a safe step exists
        # (with none, go on: very steep objectives need very small steps).
        max_iter_reached = (iter_num + 1) >= max_linesearch_steps
        presumably_failed = jnp.asarray(max_iter_reached) | (too_small_int & (safe_stepsize > 0.0))
        failed = presumably_failed & ~done

        new_state = state._replace(
            count=tree.safe_increment(iter_num),
            stepsize=middle,
            value=value_middle,
            grad=grad_middle,
            slope=slope_middle,
            decrease_error=decrease_error,
            curvature_error=curvature_error,
            error=new_error,
            done=done,
            failed=failed,
            low=new_low,
            value_low=new_value_low,
            slope_low=new_slope_low,
            high=new_high,
            value_high=new_value_high,
            slope_high=new_slope_high,
            cubic_ref=new_cubic_ref,
            value_cubic_ref=new_value_cubic_ref,
            safe_stepsize=safe_stepsize,
            safe_value=safe_value,
            safe_grad=safe_grad,
        )
        return tree.tree_cast_like(new_state, state)

    def init(
        updates, params, *, value, grad, prev_stepsize=1.0, initial_guess_strategy="one"
    ) -> ZoomLinesearchState:
        if initial_guess_strategy == "one":
            stepsize_guess = jnp.asarray(1.0)
        elif initial_guess_strategy == "keep":
            stepsize_guess = jnp.asarray(prev_stepsize)
        else:
            raise ValueError(
                f"zoom_linesearch: initial_guess_strategy must be 'one' or 'keep', "
                f"got {initial_guess_strategy!r}"
            )
        val_dtype = _value_dtype(params)
        slope = tree.tree_real(tree.tree_vdot(updates, grad))
        inf = jnp.asarray(jnp.inf)
        return ZoomLinesearchState(
            count=tree.zeros_count(),
            params=params,
            updates=updates,
            stepsize_guess=stepsize_guess,
            stepsize=jnp.asarray(0.0, dtype=val_dtype),
            value=jnp.array(value, dtype=val_dtype),
            grad=grad,
            slope=slope,
            value_init=value,
            slope_init=slope,
            decrease_error=inf,
            curvature_error=inf,
            error=inf,
            interval_found=jnp.asarray(False),
            done=jnp.asarray(False),
            failed=jnp.asarray(False),
            low=jnp.asarray(0.0),
            value_low=value,
            slope_low=slope,
            high=jnp.asarray(0.0),
            value_high=value,
            slope_high=slope,
            cubic_ref=jnp.asarray(0.0),
            value_cubic_ref=value,
            safe_stepsize=jnp.asarray(0.0),
            safe_value=value,
            safe_grad=grad,
        )

    def step(state, *, value_and_grad_fn, fn_kwargs) -> ZoomLinesearchState:
        new_state = jax.lax.cond(
            state.interval_found,
            functools.partial(
                zoom_into_interval, value_and_grad_fn=value_and_grad_fn, fn_kwargs=fn_kwargs
            ),
            functools.partial(
                search_interval, value_and_grad_fn=value_and_grad_fn, fn_kwargs=fn_kwargs
            ),
            state,
        )
        new_state = jax.lax.cond(new_state.failed, try_safe_step, lambda x: x, new_state)
        return tree.tree_cast_like(new_state, state)

    def cond(state) -> jax.Array:
        return ~(state.done | state.failed)

    return init, step, cond


class ZoomLinesearchInfo(NamedTuple):
    """What the last zoom search did, for debugging.

    A positive curvature error is benign (the largest step may be too small to
    meet it); a positive decrease error means the values may not decrease.

    Attributes:
      num_linesearch_steps: the objective evaluations it made.
      decrease_error: how far the accepted step is from sufficient decrease (0: met).
      curvature_error: how far it is from the curvature criterion (0: met).
    """

    num_linesearch_steps: jax.Array
    decrease_error: jax.Array
    curvature_error: jax.Array


class ScaleByZoomLinesearchState(NamedTuple):
    """State of :func:`scale_by_zoom_linesearch`.

    Attributes:
      learning_rate: the step size the last search accepted.
      value: the objective at the accepted step, for :func:`value_and_grad_from_state`.
      grad: its gradient, for :func:`value_and_grad_from_state`.
      info: a :class:`ZoomLinesearchInfo`.
    """

    learning_rate: jax.Array
    value: jax.Array
    grad: Any
    info: ZoomLinesearchInfo


def scale_by_zoom_linesearch(
    max_linesearch_steps: int,
    max_learning_rate: Any = None,
    tol: Any = 0.0,
    increase_factor: Any = 2.0,
    slope_rtol: Any = 1e-4,
    curv_rtol: Any = 0.9,
    approx_dec_rtol: Any = 1e-6,
    stepsize_precision: Any = 1e-5,
    initial_guess_strategy: str = "keep",
    verbose: bool = False,
) -> GradientTransformationExtraArgs:
    """Scale the update by a step meeting the strong Wolfe conditions, found by zooming.

    The step :math:`\\eta` satisfies sufficient decrease and small curvature:

    .. math::
        f(w + \\eta u) \\le f(w) + c_1 \\eta \\langle u, \\nabla f(w) \\rangle + \\epsilon,
        \\qquad
        |\\langle \\nabla f(w + \\eta u), u \\rangle| \\le c_2 |\\langle \\nabla f(w), u \\rangle|
        + \\epsilon,

    where close to a minimum (:math:`f(w + \\eta u) \\le f(w) + c_3 |f(w)|`) the first
    may be replaced by Hager and Zhang's approximate decrease
    :math:`\\langle \\nabla f(w + \\eta u), u \\rangle \\le (2 c_1 - 1)
    \\langle \\nabla f(w), u \\rangle + \\epsilon`, which still sees a decrease that
    :math:`f`'s rounding hides. The search grows the step by ``increase_factor``
    from the initial guess until an interval holding such a step is found, then
    shrinks it by cubic, quadratic or bisection steps; out of evaluations, it
    takes the lowest step with sufficient decrease. Then :math:`u \\leftarrow \\eta u`.
    Inner products of complex leaves are real parts, as in optax.

    ``update`` takes the keyword extras ``value``, ``grad``, ``value_fn`` and any
    argument of ``value_fn``; see :mod:`gradtx.transforms.linesearch`. The value
    and gradient at the accepted step are kept in the state for
    :func:`value_and_grad_from_state`.

    Args:
      max_linesearch_steps: the most evaluations of the objective, an integer :math:`\\ge 1`.
      max_learning_rate: the largest step (> 0), or None for no bound.
      tol: :math:`\\epsilon \\ge 0`, the tolerance of both criteria.
      increase_factor: :math:`\\ge 1`, the growth of the step while searching for an interval.
      slope_rtol: :math:`c_1` in [0, 1).
      curv_rtol: :math:`c_2 \\ge 0` (``jnp.inf`` drops the curvature criterion: a
        backtracking search by interpolation).
      approx_dec_rtol: :math:`c_3 \\ge 0`, or None for Armijo's criterion only.
      stepsize_precision: :math:`\\ge 0`: once the interval is this short, a step with
        sufficient decrease is taken even if the curvature criterion is not met.
      initial_guess_strategy: ``"one"`` (start at 1: for quasi-Newton directions such
        as L-BFGS's) or ``"keep"`` (start at the last accepted step: for SGD).
      verbose: print a diagnosis when the search fails.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> from gradtx.transforms.linesearch import (
      ...     scale_by_zoom_linesearch, value_and_grad_from_state)
      >>> def f(w): return jnp.sum(w ** 2)
      >>> opt = gradtx.chain(gradtx.sgd(1.0), scale_by_zoom_linesearch(15))
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> value_and_grad = value_and_grad_from_state(f)
      >>> value, grad = value_and_grad(params, state=state)
      >>> updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
      >>> params = gradtx.apply_updates(params, updates)
      >>> print(f"{f(params):.2E}", int(state[1].info.num_linesearch_steps))
      0.00E+00 2

    References:
      Nocedal and Wright, "Numerical Optimization", 1999, Algorithms 3.5 and 3.6.

      Hager and Zhang, "Algorithm 851: CG_DESCENT, a Conjugate Gradient Method with
        Guaranteed Descent", 2006.

      optax: ``optax.scale_by_zoom_linesearch``.
    """
    who = "scale_by_zoom_linesearch"
    _check_steps(who, "max_linesearch_steps", max_linesearch_steps, 1)
    checks.check_hyperparams(
        who,
        max_learning_rate=(max_learning_rate, checks.POSITIVE),
        tol=(tol, checks.NONNEGATIVE),
        increase_factor=(increase_factor, "[1, inf)"),
        slope_rtol=(slope_rtol, "[0, 1)"),
        curv_rtol=(curv_rtol, "[0, inf]"),
        approx_dec_rtol=(approx_dec_rtol, checks.NONNEGATIVE),
        stepsize_precision=(stepsize_precision, checks.NONNEGATIVE),
    )
    if initial_guess_strategy not in ("one", "keep"):
        reported, name = checks.reported_name(who, "initial_guess_strategy")
        raise ValueError(
            f"{reported}: {name} must be 'one' or 'keep', got {initial_guess_strategy!r}"
        )
    init_search, step_search, searching = zoom_linesearch(
        max_linesearch_steps=max_linesearch_steps,
        max_stepsize=max_learning_rate,
        tol=tol,
        increase_factor=increase_factor,
        slope_rtol=slope_rtol,
        curv_rtol=curv_rtol,
        approx_dec_rtol=approx_dec_rtol,
        interval_threshold=stepsize_precision,
        verbose=verbose,
    )

    def search(value_fn, start, fn_kwargs):
        step = functools.partial(
            step_search, value_and_grad_fn=jax.value_and_grad(value_fn), fn_kwargs=fn_kwargs
        )
        return jax.lax.while_loop(searching, step, start)

    run_search = _compiled_when_eager(search)

    def init(params):
        val_dtype = _value_dtype(params)
        # Each leaf its own buffer: a donated state must not hold the same array twice
        # (optax's holds one inf twice, so jit(step, donate_argnums=...) refuses it).
        return ScaleByZoomLinesearchState(
            learning_rate=jnp.asarray(1.0, dtype=val_dtype),
            value=jnp.asarray(jnp.inf, dtype=val_dtype),
            grad=tree.tree_zeros_like(params),
            info=ZoomLinesearchInfo(tree.zeros_count(), jnp.asarray(jnp.inf), jnp.asarray(jnp.inf)),
        )

    def update(
        updates,
        state,
        params=None,
        *,
        value: Any = None,
        grad: Any = None,
        value_fn: Any = None,
        **extra_args,
    ):
        _check_extras(who, value, grad, value_fn)
        fn_kwargs = value_fn_kwargs(who, value_fn, extra_args)
        start = init_search(
            updates,
            params,
            value=value,
            grad=grad,
            prev_stepsize=state.learning_rate,
            initial_guess_strategy=initial_guess_strategy,
        )
        final = run_search(value_fn, start, fn_kwargs=fn_kwargs)
        new_state = ScaleByZoomLinesearchState(
            learning_rate=final.stepsize,
            value=final.value,
            grad=final.grad,
            info=ZoomLinesearchInfo(final.count, final.decrease_error, final.curvature_error),
        )
        return tree.tree_scale(final.stepsize, updates), tree.tree_cast_like(new_state, state)

    return GradientTransformationExtraArgs(init, update)


# --- Reusing the line search's last evaluation -------------------------------------------------


def value_and_grad_from_state(
    value_fn: Callable[..., Any],
) -> Callable[..., tuple[jax.Array, Any]]:
    """:func:`jax.value_and_grad` of ``value_fn`` that reuses the line search's last evaluation.

    The returned ``value_and_grad(params, *args, state=opt_state, **kwargs)`` finds the
    ``value`` and ``grad`` fields in ``opt_state`` (anywhere in it:
    :func:`gradtx.tree.get`, through chains, named chains, wrappers and optax's
    states) and returns them, where the line search stored them at the step it
    accepted, which are the params now. While the stored value is not finite (the
    first iteration, whose state holds :math:`+\\infty`) it computes
    ``jax.value_and_grad(value_fn)(params, *args, **kwargs)`` instead. For
    full-batch objectives only: with a new batch each step the stored pair is stale.

    .. math:: (f(w_k), \\nabla f(w_k)) = \\begin{cases}
        (v, g) \\text{ from the state} & v \\text{ finite} \\\\
        \\text{value\\_and\\_grad}(f)(w_k) & \\text{otherwise}\\end{cases}

    Args:
      value_fn: the objective, returning a scalar.

    Raises:
      ValueError: (when called) the state holds no ``value`` or no ``grad``, e.g.
        :func:`scale_by_backtracking_linesearch` without ``store_grad``.
      KeyError: (when called) the state holds more than one of them.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> from gradtx.learners.lbfgs import lbfgs
      >>> from gradtx.transforms.linesearch import value_and_grad_from_state
      >>> def f(w): return jnp.sum(w ** 2)
      >>> opt = lbfgs()
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> state = opt.init(params)
      >>> value_and_grad = value_and_grad_from_state(f)
      >>> for _ in range(2):
      ...     value, grad = value_and_grad(params, state=state)
      ...     updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
      ...     params = gradtx.apply_updates(params, updates)
      ...     print(f"{f(params):.2E}")
      7.52E+00
      7.46E-14

    References:
      optax: ``optax.value_and_grad_from_state``.
    """

    # Both branches are made once, so that eager calls reuse the compiled cond.
    def stored(params, fn_args, fn_kwargs, value, grad):
        return value, grad

    def computed(params, fn_args, fn_kwargs, value, grad):
        return jax.value_and_grad(value_fn)(params, *fn_args, **fn_kwargs)

    def value_and_grad(params, *fn_args, state, **fn_kwargs):
        value = tree.tree_get(state, "value")
        grad = tree.tree_get(state, "grad")
        if value is None or grad is None:
            raise ValueError(
                "value_and_grad_from_state: value or gradient not found in the state. "
                "Make sure that these values are stored in the state by the optimizer "
                "(a line search; scale_by_backtracking_linesearch needs store_grad=True)."
            )
        return jax.lax.cond(
            (~jnp.isinf(value)) & (~jnp.isnan(value)),
            stored,
            computed,
            params,
            fn_args,
            fn_kwargs,
            value,
            grad,
        )

    return value_and_grad
