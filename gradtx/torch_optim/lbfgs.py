"""torch.optim.LBFGS: a whole ``step(closure)`` of torch's L-BFGS as one gradtx update.

torch's ``LBFGS.step(closure)`` runs up to ``max_iter`` inner iterations, each a
two-loop recursion for the direction and either a fixed step or torch's own strong
Wolfe line search (``_strong_wolfe`` and ``_cubic_interpolate`` in
``torch/optim/lbfgs.py``). This module reproduces that step operation for operation
on the params flattened into one vector (as torch's ``_gather_flat_grad`` does), with
fixed-size history buffers and ``lax.while_loop`` s, so that it runs under ``jit``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformationExtraArgs
from gradtx.transforms.linesearch import value_fn_kwargs

# torch's _strong_wolfe constants: LBFGS.step never passes its own, so these hold whatever
# the optimizer's tolerance_change is.
_C1 = 1e-4
_C2 = 0.9
_LS_TOLERANCE_CHANGE = 1e-9
# torch's curvature test before a pair (s, y) enters the history.
_CURVATURE_EPS = 1e-10


class LBFGSState(NamedTuple):
    """torch.optim.LBFGS's ``state``, with the history in fixed-size buffers.

    Attributes:
      func_evals: closure evaluations over all steps (torch's ``func_evals``).
      n_iter: inner iterations over all steps (torch's ``n_iter``).
      d: the last search direction, flat.
      t: the last step size along ``d``.
      old_dirs: ``(history_size, n)``; rows ``[:history_count]`` are torch's ``old_dirs``
        (gradient differences :math:`y`), oldest first.
      old_stps: the same for torch's ``old_stps`` (steps :math:`s`).
      ro: ``(history_size,)``, torch's ``ro`` (:math:`1 / y^\\top s`).
      history_count: how many rows of the buffers are in use.
      H_diag: torch's ``H_diag``, the scale of the initial inverse Hessian.
      prev_flat_grad: the flat gradient at the start of the last iteration.
      prev_loss: the loss at the start of the last iteration.
    """

    func_evals: jax.Array
    n_iter: jax.Array
    d: jax.Array
    t: jax.Array
    old_dirs: jax.Array
    old_stps: jax.Array
    ro: jax.Array
    history_count: jax.Array
    H_diag: jax.Array
    prev_flat_grad: jax.Array
    prev_loss: jax.Array


# --- The params as one flat vector (torch's _gather_flat_grad / _add_grad) -------------------


class _Flat(NamedTuple):
    """How a params tree maps to torch's flat vector: float leaves, complex ones as (re, im)."""

    treedef: Any
    shapes: tuple
    dtypes: tuple
    kinds: tuple  # "real", "complex" or None (integer, bool: left alone)
    dtype: Any  # the flat vector's dtype (torch.cat's promotion of the leaves' real dtypes)


def _plan(params: Any) -> _Flat:
    leaves, treedef = jax.tree.flatten(params)
    kinds, reals = [], []
    for x in leaves:
        dt = jnp.result_type(x)
        if jnp.issubdtype(dt, jnp.complexfloating):
            kinds.append("complex")
            reals.append(tree.real_dtype(dt))
        elif jnp.issubdtype(dt, jnp.floating):
            kinds.append("real")
            reals.append(dt)
        else:
            kinds.append(None)
    if not reals:
        raise ValueError("torch_optim.lbfgs: params have no floating or complex leaf to optimize")
    return _Flat(
        treedef,
        tuple(jnp.shape(x) for x in leaves),
        tuple(jnp.result_type(x) for x in leaves),
        tuple(kinds),
        jnp.result_type(*reals),
    )


def _flatten(plan: _Flat, values: Any, *, conj: bool) -> jax.Array:
    """The float leaves of ``values`` as one vector; complex ones as (re, im) pairs.

    ``conj`` turns JAX's gradient of a complex leaf (the conjugate of the ascent
    direction) into torch's ``.grad``.
    """
    leaves = plan.treedef.flatten_up_to(values)
    parts = []
    for x, kind in zip(leaves, plan.kinds, strict=True):
        if kind is None:
            continue
        x = jnp.asarray(x)
        if tree.is_split(x):  # explicit sharding: torch's flat view is whole on every device
            x = jax.sharding.reshard(x, jax.sharding.PartitionSpec())
        if kind == "complex":
            x = jnp.conj(x) if conj else x
            x = jnp.stack([x.real, x.imag], axis=-1)
        parts.append(jnp.ravel(x).astype(plan.dtype))
    return jnp.concatenate(parts)


def _unflatten(plan: _Flat, flat: jax.Array, like: Any) -> Any:
    """Cut ``flat`` back into the tree; non-float leaves are taken from ``like``."""
    out, offset = [], 0
    for x, shape, dtype, kind in zip(
        plan.treedef.flatten_up_to(like), plan.shapes, plan.dtypes, plan.kinds, strict=True
    ):
        if kind is None:
            out.append(x)
            continue
        size = math.prod(shape)
        size *= 2 if kind == "complex" else 1
        piece = flat[offset : offset + size]
        offset += size
        if kind == "complex":
            piece = piece.reshape((*shape, 2))
            piece = jax.lax.complex(piece[..., 0], piece[..., 1]).astype(dtype)
        else:
            piece = piece.reshape(shape).astype(dtype)
        out.append(
            jax.sharding.reshard(piece, jax.typeof(x).sharding.spec) if tree.is_split(x) else piece
        )
    return jax.tree.unflatten(plan.treedef, out)


# --- Python's min and max on two values, with their NaN behaviour ------------------------------


def _pymax(a: Any, b: Any) -> Any:
    """Python's ``max(a, b)``: ``b`` if ``b > a`` else ``a`` (what torch's code calls)."""
    return jnp.where(b > a, b, a)


def _pymin(a: Any, b: Any) -> Any:
    """Python's ``min(a, b)``: ``b`` if ``b < a`` else ``a``."""
    return jnp.where(b < a, b, a)


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """torch's ``_cubic_interpolate``: the minimiser of the cubic through two points.

    With :math:`d_1 = g_1 + g_2 - 3 (f_1 - f_2) / (x_1 - x_2)` and
    :math:`d_2 = \\sqrt{d_1^2 - g_1 g_2}` (for :math:`x_1 \\le x_2`)
    :math:`x_2 - (x_2 - x_1) (g_2 + d_2 - d_1) / (g_2 - g_1 + 2 d_2)`, clipped to the
    bounds; the bounds' midpoint when :math:`d_1^2 < g_1 g_2`.
    """
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        ordered = x1 <= x2
        xmin_bound = jnp.where(ordered, x1, x2)
        xmax_bound = jnp.where(ordered, x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    real = d2_square >= 0
    d2 = jnp.sqrt(jnp.where(real, d2_square, 0))
    min_pos = jnp.where(
        x1 <= x2,
        x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2)),
        x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2)),
    )
    return jnp.where(
        real, _pymin(_pymax(min_pos, xmin_bound), xmax_bound), (xmin_bound + xmax_bound) / 2.0
    )


def _strong_wolfe(obj_func, t, d, f, g, gtd, max_ls):
    """torch's ``_strong_wolfe`` (c1=1e-4, c2=0.9, tolerance_change=1e-9), as two while loops.

    ``obj_func(t)`` returns the loss and flat gradient at ``x + t d``. Returns
    ``(f_new, g_new, t, ls_func_evals)`` as torch does.
    """
    dtype = g.dtype
    d_norm = jnp.max(jnp.abs(d))
    f_new, g_new = obj_func(t)
    gtd_new = jnp.dot(g_new, d)
    zero = jnp.zeros([], dtype)
    i32 = functools.partial(jnp.asarray, dtype=jnp.int32)

    # Bracketing. status: 0 still searching, 1 bracket [t_prev, t], 2 t satisfies Wolfe.
    def bracket_cond(c):
        return (c["status"] == 0) & (c["ls_iter"] < max_ls)

    def bracket_body(c):
        armijo = (c["f_new"] > f + _C1 * c["t"] * gtd) | (
            (c["ls_iter"] > 1) & (c["f_new"] >= c["f_prev"])
        )
        wolfe = jnp.abs(c["gtd_new"]) <= -_C2 * gtd
        status = jnp.where(armijo, 1, jnp.where(wolfe, 2, jnp.where(c["gtd_new"] >= 0, 1, 0)))

        def advance(c):
            t, t_prev = c["t"], c["t_prev"]
            min_step = t + 0.01 * (t - t_prev)
            max_step = t * 10
            t_next = _cubic_interpolate(
                t_prev,
                c["f_prev"],
                c["gtd_prev"],
                t,
                c["f_new"],
                c["gtd_new"],
                bounds=(min_step, max_step),
            )
            f_next, g_next = obj_func(t_next)
            return {
                **c,
                "t": t_next,
                "t_prev": t,
                "f_prev": c["f_new"],
                "g_prev": c["g_new"],
                "gtd_prev": c["gtd_new"],
                "f_new": f_next,
                "g_new": g_next,
                "gtd_new": jnp.dot(g_next, d),
                "evals": c["evals"] + 1,
                "ls_iter": c["ls_iter"] + 1,
            }

        c = {**c, "status": i32(status)}
        return jax.lax.cond(status == 0, advance, lambda c: c, c)

    c = jax.lax.while_loop(
        bracket_cond,
        bracket_body,
        {
            "t": jnp.asarray(t, dtype),
            "f_new": f_new,
            "g_new": g_new,
            "gtd_new": gtd_new,
            "t_prev": zero,
            "f_prev": f,
            "g_prev": g,
            "gtd_prev": gtd,
            "ls_iter": i32(0),
            "evals": i32(1),
            "status": i32(0),
        },
    )
    status, t = c["status"], c["t"]
    found = status == 2
    # status 0 here: max_ls reached, torch's bracket [0, t] (no zoom follows).
    searched = status == 1
    bracket = jnp.stack([jnp.where(found, t, jnp.where(searched, c["t_prev"], zero)), t])
    bracket_f = jnp.stack(
        [jnp.where(found, c["f_new"], jnp.where(searched, c["f_prev"], f)), c["f_new"]]
    )
    bracket_g = jnp.stack(
        [jnp.where(found, c["g_new"], jnp.where(searched, c["g_prev"], g)), c["g_new"]]
    )
    bracket_gtd = jnp.stack([jnp.where(searched, c["gtd_prev"], gtd), c["gtd_new"]])
    low = i32(jnp.where(bracket_f[0] <= bracket_f[-1], 0, 1))

    # Zoom.
    def zoom_cond(z):
        return ~z["done"] & ~z["stop"] & (z["ls_iter"] < max_ls)

    def zoom_body(z):
        b = z["bracket"]
        small = jnp.abs(b[1] - b[0]) * d_norm < _LS_TOLERANCE_CHANGE

        def zoom(z):
            b, bf, bg, bgtd = z["bracket"], z["bracket_f"], z["bracket_g"], z["bracket_gtd"]
            low = z["low"]
            high = 1 - low
            t = _cubic_interpolate(b[0], bf[0], bgtd[0], b[1], bf[1], bgtd[1])
            b_max, b_min = _pymax(b[0], b[1]), _pymin(b[0], b[1])
            eps = 0.1 * (b_max - b_min)
            near = _pymin(b_max - t, t - b_min) < eps
            at_edge = z["insuf_progress"] | (t >= b_max) | (t <= b_min)
            moved = jnp.where(jnp.abs(t - b_max) < jnp.abs(t - b_min), b_max - eps, b_min + eps)
            t = jnp.where(near & at_edge, moved, t)
            insuf_progress = near & ~at_edge

            f_new, g_new = obj_func(t)
            gtd_new = jnp.dot(g_new, d)

            worse = (f_new > f + _C1 * t * gtd) | (f_new >= bf[low])
            # Armijo fails or no lower than the low point: t replaces the high end.
            wb = b.at[high].set(t)
            wbf = bf.at[high].set(f_new)
            wbg = bg.at[high].set(g_new)
            wbgtd = bgtd.at[high].set(gtd_new)
            wlow = i32(jnp.where(wbf[0] <= wbf[1], 0, 1))
            # Otherwise t is the new low end, the old low moving to high if it is downhill.
            done = jnp.abs(gtd_new) <= -_C2 * gtd
            shift = ~done & (gtd_new * (b[high] - b[low]) >= 0)
            sb = jnp.where(shift, b.at[high].set(b[low]), b).at[low].set(t)
            sbf = jnp.where(shift, bf.at[high].set(bf[low]), bf).at[low].set(f_new)
            sbg = jnp.where(shift, bg.at[high].set(bg[low]), bg).at[low].set(g_new)
            sbgtd = jnp.where(shift, bgtd.at[high].set(bgtd[low]), bgtd).at[low].set(gtd_new)
            return {
                **z,
                "bracket": jnp.where(worse, wb, sb),
                "bracket_f": jnp.where(worse, wbf, sbf),
                "bracket_g": jnp.where(worse, wbg, sbg),
                "bracket_gtd": jnp.where(worse, wbgtd, sbgtd),
                "low": jnp.where(worse, wlow, low),
                "done": ~worse & done,
                "insuf_progress": insuf_progress,
                "ls_iter": z["ls_iter"] + 1,
                "evals": z["evals"] + 1,
            }

        return jax.lax.cond(small, lambda z: {**z, "stop": jnp.asarray(True)}, zoom, z)

    z = jax.lax.while_loop(
        zoom_cond,
        zoom_body,
        {
            "bracket": bracket,
            "bracket_f": bracket_f,
            "bracket_g": bracket_g,
            "bracket_gtd": bracket_gtd,
            "low": low,
            "done": found,
            "stop": jnp.asarray(False),
            "insuf_progress": jnp.asarray(False),
            "ls_iter": c["ls_iter"],
            "evals": c["evals"],
        },
    )
    low = z["low"]
    return z["bracket_f"][low], z["bracket_g"][low], z["bracket"][low], z["evals"]


# --- The two-loop recursion -----------------------------------------------------------------


def _two_loop(g, old_dirs, old_stps, ro, count, H_diag):
    """torch's direction :math:`-H g`: the two-loop recursion (Nocedal & Wright, Alg. 7.4)."""

    def backward(j, carry):
        q, al = carry
        i = count - 1 - j
        a = jnp.dot(old_stps[i], q) * ro[i]
        return q - a * old_dirs[i], al.at[i].set(a)

    q, al = jax.lax.fori_loop(0, count, backward, (-g, jnp.zeros_like(ro)))
    r = q * H_diag

    def forward(i, r):
        be_i = jnp.dot(old_dirs[i], r) * ro[i]
        return r + (al[i] - be_i) * old_stps[i]

    return jax.lax.fori_loop(0, count, forward, r)


def _add_count(count: jax.Array, n: Any) -> jax.Array:
    """``count + n`` for ``n >= 0``, saturating at the int32 maximum."""
    return jnp.where(count <= tree.INT32_MAX - n, count + n, tree.INT32_MAX).astype(jnp.int32)


# --- One torch step ---------------------------------------------------------------------------


class _Config(NamedTuple):
    max_iter: int
    max_eval: int
    history_size: int
    line_search: bool


def _step(
    config, kind, fn, params, state, value, grad, lr, tolerance_grad, tolerance_change, fn_kwargs
):
    """torch's ``LBFGS.step``: the flat params after it and the new state."""
    plan = _plan(params)
    dtype = plan.dtype
    vg = fn if kind == "value_and_grad" else jax.value_and_grad(fn, allow_int=True)

    def evaluate(x):
        loss, grads = vg(_unflatten(plan, x, params), **fn_kwargs)
        return jnp.asarray(loss, dtype), _flatten(plan, grads, conj=True)

    x0 = _flatten(plan, params, conj=False)
    if value is None or grad is None:
        loss, flat_grad = evaluate(x0)
    else:
        loss, flat_grad = jnp.asarray(value, dtype), _flatten(plan, grad, conj=True)
    lr = jnp.asarray(lr, dtype)
    max_iter, max_eval = config.max_iter, config.max_eval
    history_size = config.history_size

    opt_cond = jnp.max(jnp.abs(flat_grad)) <= tolerance_grad
    carry = {
        "x": x0,
        "loss": loss,
        "flat_grad": flat_grad,
        "opt_cond": opt_cond,
        "done": opt_cond,
        "n_iter": jnp.asarray(0, jnp.int32),
        "current_evals": jnp.asarray(1, jnp.int32),
        "state": state._replace(func_evals=_add_count(state.func_evals, 1)),
    }

    def cond(c):
        return ~c["done"] & (c["n_iter"] < max_iter)

    def body(c):
        s = c["state"]
        n_iter = c["n_iter"] + 1
        global_iter = tree.safe_increment(s.n_iter)
        first = global_iter == 1
        flat_grad, loss = c["flat_grad"], c["loss"]

        # The memory: (s, y) enters when y.s > 1e-10, the oldest leaving when it is full.
        def remember(s):
            y = flat_grad - s.prev_flat_grad
            step = s.d * s.t
            ys = jnp.dot(y, step)

            def push(s):
                full = s.history_count == history_size
                at = jnp.where(full, history_size - 1, s.history_count)

                def shifted(buf):
                    return jnp.where(full, jnp.roll(buf, -1, axis=0), buf)

                return s._replace(
                    old_dirs=shifted(s.old_dirs).at[at].set(y),
                    old_stps=shifted(s.old_stps).at[at].set(step),
                    ro=shifted(s.ro).at[at].set(1.0 / ys),
                    history_count=jnp.minimum(s.history_count + 1, history_size),
                    H_diag=ys / jnp.dot(y, y),
                )

            return jax.lax.cond(ys > _CURVATURE_EPS, push, lambda s: s, s)

        def forget(s):
            return s._replace(
                history_count=jnp.zeros_like(s.history_count), H_diag=jnp.ones_like(s.H_diag)
            )

        s = jax.lax.cond(first, forget, remember, s)
        # With an empty history the recursion gives -g * 1, torch's first direction.
        d = _two_loop(flat_grad, s.old_dirs, s.old_stps, s.ro, s.history_count, s.H_diag)
        t = jnp.where(
            first, _pymin(jnp.asarray(1.0, dtype), 1.0 / jnp.sum(jnp.abs(flat_grad))) * lr, lr
        )
        s = s._replace(n_iter=global_iter, d=d, t=t, prev_flat_grad=flat_grad, prev_loss=loss)
        gtd = jnp.dot(flat_grad, d)
        c = {**c, "n_iter": n_iter, "state": s}

        def stalled(c):  # directional derivative below tolerance: torch breaks here
            return {**c, "done": jnp.asarray(True)}

        def move(c):
            x = c["x"]
            if config.line_search:
                max_ls = max_eval - c["current_evals"]
                new_loss, new_grad, t_ls, ls_evals = _strong_wolfe(
                    lambda step: evaluate(x + step * d), t, d, loss, flat_grad, gtd, max_ls
                )
                x = x + t_ls * d
                opt = jnp.max(jnp.abs(new_grad)) <= tolerance_grad
                s = c["state"]._replace(t=t_ls)
            else:
                x = x + t * d
                s = c["state"]

                def again(_):  # torch re-evaluates except after the last iteration
                    lo, gr = evaluate(x)
                    return lo, gr, jnp.max(jnp.abs(gr)) <= tolerance_grad, jnp.asarray(1, jnp.int32)

                def last(_):
                    return loss, flat_grad, c["opt_cond"], jnp.asarray(0, jnp.int32)

                new_loss, new_grad, opt, ls_evals = jax.lax.cond(
                    n_iter != max_iter, again, last, None
                )
            current_evals = c["current_evals"] + ls_evals
            s = s._replace(func_evals=_add_count(s.func_evals, ls_evals))
            done = (
                (n_iter == max_iter)
                | (current_evals >= max_eval)
                | opt
                | (jnp.max(jnp.abs(d * s.t)) <= tolerance_change)
                | (jnp.abs(new_loss - loss) < tolerance_change)
            )
            return {
                "x": x,
                "loss": new_loss,
                "flat_grad": new_grad,
                "opt_cond": opt,
                "done": done,
                "n_iter": n_iter,
                "current_evals": current_evals,
                "state": s,
            }

        return jax.lax.cond(gtd > -tolerance_change, stalled, move, c)

    c = jax.lax.while_loop(cond, body, carry)
    return c["x"], c["state"], loss


_step_jit = jax.jit(_step, static_argnums=(0, 1, 2))


def lbfgs(
    lr: Any = 1,
    max_iter: int = 20,
    max_eval: int | None = None,
    tolerance_grad: Any = 1e-7,
    tolerance_change: Any = 1e-9,
    history_size: int = 100,
    line_search_fn: str | None = None,
) -> GradientTransformationExtraArgs:
    """torch.optim.LBFGS: each ``update`` is one whole ``optimizer.step(closure)``.

    On the params flattened into one vector :math:`x` (complex leaves as real and
    imaginary parts, integer and boolean leaves left alone), with gradient
    :math:`g_k` and the pairs :math:`s_i = t_i d_i`, :math:`y_i = g_{i+1} - g_i` kept
    (at most ``history_size``, oldest dropped first) when :math:`y_i^\\top s_i > 10^{-10}`,
    each inner iteration is

    .. math::
        d_k = -H_k g_k, \\qquad x_{k+1} = x_k + t_k d_k,

    where :math:`H_k g_k` is the two-loop recursion from :math:`H^0 = \\gamma I`,
    :math:`\\gamma = y^\\top s / y^\\top y` of the last pair kept (1 before any);
    the very first iteration (``n_iter`` 1) takes :math:`d = -g` and
    :math:`t = \\min(1, 1/\\|g\\|_1)\\,\\mathrm{lr}`, every later one starts from
    :math:`t = \\mathrm{lr}`. Without a line search :math:`t_k` is that start;
    with ``"strong_wolfe"`` it is torch's strong Wolfe search
    (:math:`c_1 = 10^{-4}`, :math:`c_2 = 0.9`, cubic interpolation, at most
    ``max_eval`` evaluations in the step). A step stops, in torch's order, when
    :math:`\\max|g| \\le` ``tolerance_grad`` at its start, when
    :math:`g^\\top d > -` ``tolerance_change``, after ``max_iter`` iterations, after
    ``max_eval`` evaluations, when :math:`\\max|g| \\le` ``tolerance_grad``, when
    :math:`\\max|t d| \\le` ``tolerance_change``, or when the loss changed by less
    than ``tolerance_change``.

    ``update(updates, state, params, *, value_and_grad_fn=..., **fn_kwargs)`` takes
    torch's closure as ``value_and_grad_fn(params, **fn_kwargs) -> (loss, grads)``
    (``jax.value_and_grad(f)``; gradients as JAX gives them, complex ones conjugated
    here into torch's ``.grad``), or gradtx's line-search extra ``value_fn`` (the loss
    alone, differentiated here), so that :func:`gradtx.make_train_step` drives it. The
    extras ``value`` and ``grad``, when both are given, stand for the closure's first
    evaluation at ``params`` (still counted in ``func_evals``, as torch counts it); the
    incoming ``updates`` are not read. Every other extra goes to the function, which
    must name it. It returns the change of the params over the whole step.
    :func:`lbfgs_step` is the torch-like loop.

    Args:
      lr: learning rate, :math:`\\ge 0` (a number, array or tracer).
      max_iter: inner iterations per step, :math:`\\ge 1`.
      max_eval: function evaluations per step; None for torch's ``max_iter * 5 // 4``.
      tolerance_grad: termination tolerance on :math:`\\max|g|`.
      tolerance_change: termination tolerance on changes of the loss and the params.
      history_size: the pairs :math:`(s, y)` kept, :math:`\\ge 1`.
      line_search_fn: None (the fixed step ``t``) or ``"strong_wolfe"``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gradtx import torch_optim
      >>> from gradtx.torch_optim.lbfgs import lbfgs, lbfgs_step
      >>> def f(w): return jnp.sum((w - jnp.array([1.0, -2.0])) ** 2) + w[0] ** 4
      >>> opt = lbfgs(line_search_fn="strong_wolfe")
      >>> params = jnp.zeros(2)
      >>> state = opt.init(params)
      >>> params, state, loss = lbfgs_step(opt, params, state, jax.value_and_grad(f))
      >>> print(float(loss), params.round(4), int(state.func_evals))
      5.0 [ 0.5897 -2.    ] 8

    References:
      PyTorch, ``torch.optim.LBFGS`` (``torch/optim/lbfgs.py``: ``step``,
        ``_strong_wolfe``, ``_cubic_interpolate``).

      Nocedal and Wright, "Numerical Optimization", 2nd ed., 2006, Algorithm 7.4
        (the two-loop recursion) and Algorithms 3.5 and 3.6 (the strong Wolfe line
        search and its zoom).
    """
    who = "lbfgs"
    checks.check_hyperparams(
        who,
        lr=(lr, "[0, inf)"),
        tolerance_grad=(tolerance_grad, "[-inf, inf]"),
        tolerance_change=(tolerance_change, "[-inf, inf]"),
    )
    if callable(lr):
        raise TypeError(f"{who}: lr must be a number or an array, got {lr!r}")
    max_iter = checks.check_length(who, "max_iter", max_iter, wording="integer")
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    else:
        max_eval = checks.check_length(who, "max_eval", max_eval, wording="integer")
    history_size = checks.check_length(who, "history_size", history_size, wording="integer")
    if line_search_fn not in (None, "strong_wolfe"):
        raise ValueError(
            f"{who}: line_search_fn must be None or 'strong_wolfe' (torch: only "
            f"'strong_wolfe' is supported), got {line_search_fn!r}"
        )
    config = _Config(max_iter, max_eval, history_size, line_search_fn == "strong_wolfe")

    def init(params):
        plan = _plan(params)
        n = sum(
            (2 if k == "complex" else 1) * math.prod(s)
            for s, k in zip(plan.shapes, plan.kinds, strict=True)
            if k is not None
        )
        return LBFGSState(
            func_evals=tree.zeros_count(),
            n_iter=tree.zeros_count(),
            d=jnp.zeros(n, plan.dtype),
            t=jnp.zeros([], plan.dtype),
            old_dirs=jnp.zeros((history_size, n), plan.dtype),
            old_stps=jnp.zeros((history_size, n), plan.dtype),
            ro=jnp.zeros(history_size, plan.dtype),
            history_count=tree.zeros_count(),
            H_diag=jnp.ones([], plan.dtype),
            prev_flat_grad=jnp.zeros(n, plan.dtype),
            prev_loss=jnp.zeros([], plan.dtype),
        )

    def update(
        updates,
        state,
        params=None,
        *,
        value_and_grad_fn: Callable[..., Any] | None = None,
        value_fn: Callable[..., Any] | None = None,
        value: Any = None,
        grad: Any = None,
        **fn_kwargs: Any,
    ):
        del updates  # the gradient comes from the function (or the grad extra), as in torch
        if params is None:
            raise ValueError(f"{who}: update needs params (L-BFGS evaluates the objective at them)")
        if value_and_grad_fn is not None:
            kind, fn = "value_and_grad", value_and_grad_fn
        elif value_fn is not None:
            kind, fn = "value", value_fn
        else:
            raise TypeError(
                f"{who}: update needs the keyword extra value_and_grad_fn (torch's closure: "
                f"params -> (loss, grads)) or value_fn (the loss, differentiated here)"
            )
        fn_kwargs = value_fn_kwargs(who, fn, fn_kwargs)
        args = (params, state, value, grad, lr, tolerance_grad, tolerance_change, fn_kwargs)
        eager = checks.is_concrete(args)
        try:
            hash(fn)
        except TypeError:
            eager = False
        run = _step_jit if eager else _step
        x, state, _ = run(config, kind, fn, *args)
        plan = _plan(params)
        new_params = _unflatten(plan, x, params)
        out = jax.tree.map(
            lambda new, old, k: (new - old) if k else jnp.zeros_like(old),
            new_params,
            params,
            jax.tree.unflatten(plan.treedef, list(plan.kinds)),
        )
        return out, state

    return GradientTransformationExtraArgs(init, update)


def lbfgs_step(
    optimizer: Any,
    params: Any,
    state: LBFGSState,
    value_and_grad_fn: Callable[..., Any],
    **fn_kwargs: Any,
) -> tuple[Any, LBFGSState, jax.Array]:
    """One ``optimizer.step(closure)``: ``(new_params, new_state, loss)``.

    ``loss`` is the closure's first value, at ``params``, which torch's ``step``
    returns. The evaluation is made here and handed to ``update`` as the extras
    ``value`` and ``grad``, so the step costs torch's evaluations, no more.

    Args:
      optimizer: :func:`lbfgs`'s transformation.
      params: the params.
      state: its state.
      value_and_grad_fn: ``params, **fn_kwargs -> (loss, grads)``, e.g.
        ``jax.value_and_grad(f)``: torch's closure.
      **fn_kwargs: passed on to ``value_and_grad_fn`` (the data, say).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gradtx.torch_optim.lbfgs import lbfgs, lbfgs_step
      >>> def f(w, a): return jnp.sum((w - a) ** 2)
      >>> opt = lbfgs(max_iter=5)
      >>> w = jnp.zeros(2)
      >>> w, state, loss = lbfgs_step(opt, w, opt.init(w), jax.value_and_grad(f), a=jnp.ones(2))
      >>> print(float(loss), w)
      2.0 [1. 1.]
    """
    from gradtx.core import apply_updates

    value, grad = value_and_grad_fn(params, **fn_kwargs)
    updates, state = optimizer.update(
        grad,
        state,
        params,
        value_and_grad_fn=value_and_grad_fn,
        value=value,
        grad=grad,
        **fn_kwargs,
    )
    return apply_updates(params, updates), state, value
