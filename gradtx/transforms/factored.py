"""Adafactor's factored second moment: a row and a column average instead of a full matrix.

For a leaf of shape ``(n, m)`` Adam keeps ``n * m`` second moments; the
factored estimate keeps ``n + m`` (the running means of the squared gradient
over each axis) and reconstructs the full matrix as their outer product divided
by the overall mean. A leaf of higher rank is factored over its two largest
axes; a vector, a scalar or a leaf whose second-largest axis is shorter than
``min_dim_size_to_factor`` keeps a full (unfactored) moment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks, tree
from gradtx.core import GradientTransformation, Scalar


class FactoredState(NamedTuple):
    """State of :func:`scale_by_factored_rms`, optax's fields.

    Per leaf, a factored one holds ``v_row`` (its shape without the largest axis)
    and ``v_col`` (without the second largest) and a one-element placeholder in
    ``v``; an unfactored one holds ``v`` (its own shape) and placeholders in the others.
    """

    count: jax.Array  # int32 scalar: updates applied so far
    v_row: Any
    v_col: Any
    v: Any


def _decay_rate_pow(i: Any, exponent: Any = 0.8) -> jax.Array:
    """Adafactor's decay of the second moment at step ``i`` (0-based): :math:`1 - (i+1)^{-c}`."""
    i = jnp.asarray(i)  # i + 1 in int32 wraps at the int32 maximum: saturate instead
    t = (tree.safe_increment(i) if jnp.issubdtype(i.dtype, jnp.integer) else i + 1).astype(
        jnp.float32
    )
    return 1.0 - t ** (-exponent)


def factored_dims(
    shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int
) -> tuple[int, int] | None:
    """The axes a leaf of ``shape`` is factored over: (second largest, largest), or None.

    None for ``factored=False``, rank below 2, or a second-largest axis shorter
    than ``min_dim_size_to_factor``. Ties go as NumPy's ``argsort`` orders them
    (as in optax, so the same axes are chosen).
    """
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _zeros_without_axis(x: Any, axis: int, dtype: Any) -> jax.Array:
    # Zeros shaped, and under jit sharded, like the reduction (a select on it: tree._filled).
    return tree.real_zeros_like(jnp.sum(jnp.asarray(x), axis=axis), dtype)


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: float | jax.Array = 0.8,
    step_offset: int | Scalar = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: float | jax.Array = 1e-30,
    decay_rate_fn: Callable[[Any, Any], Any] = _decay_rate_pow,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Scale by the inverse root of a factored estimate of the squared gradients (Adafactor).

    With :math:`t` the number of updates already applied, the decay is
    :math:`\\hat\\beta_t = f(t - t_0, c)`, by default :math:`1 - (t - t_0 + 1)^{-c}`
    (so the first update sees :math:`\\hat\\beta = 0`). With :math:`G = |g|^2 + \\epsilon`,
    a factored leaf (axes :math:`r` the second largest and :math:`k` the largest) keeps

    .. math::
        R_t = \\hat\\beta_t R_{t-1} + (1-\\hat\\beta_t) \\operatorname{mean}_k G, \\qquad
        C_t = \\hat\\beta_t C_{t-1} + (1-\\hat\\beta_t) \\operatorname{mean}_r G,

    .. math::
        u_t = g \\Big/ \\sqrt{\\frac{R_t}{\\operatorname{mean}_r R_t}\\, C_t}
        \\quad\\text{(broadcast back over the reduced axes)},

    and any other leaf keeps the full :math:`V_t = \\hat\\beta_t V_{t-1} + (1-\\hat\\beta_t) G`,
    :math:`u_t = g / \\sqrt{V_t}`. For complex gradients :math:`|g|^2 = g\\bar g`; the
    moments are real and kept in the leaf's real dtype (optax keeps the same values in
    the complex dtype). Params are not needed.

    Args:
      factored: factor the moments of leaves of rank 2 and more (False: full moments).
      decay_rate: :math:`c \\ge 0`, the exponent of the decay schedule (``decay_rate_fn``'s
        second argument).
      step_offset: :math:`t_0`: for fine-tuning, the step the new phase starts at (the
        restored state's count must have reached it: before, the decay is undefined).
      min_dim_size_to_factor: factor only leaves whose second-largest axis has at least
        this many entries.
      epsilon: :math:`\\epsilon \\ge 0`, added to every squared gradient.
      decay_rate_fn: :math:`f(\\text{step}, c)`, the decay at a 0-based step; the default
        is Adafactor's :math:`1 - (\\text{step}+1)^{-c}`. A capped one (Zhai et al.) keeps
        the moment from freezing as the decay nears 1.
      state_dtype: dtype of the stored moments (e.g. ``jnp.bfloat16``); arithmetic runs in
        the gradients' dtype, bfloat16 rounds stochastically. Defaults to the params' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.scale_by_factored_rms(min_dim_size_to_factor=2)
      >>> grads = {"w": jnp.ones((2, 3)), "b": jnp.array([2.0, -2.0])}
      >>> state = tx.init(grads)
      >>> state.v_row["w"].shape, state.v_col["w"].shape, state.v["b"].shape
      ((2,), (3,), (2,))
      >>> updates, state = tx.update(grads, state)
      >>> print(np.asarray(updates["b"]).round(4))  # the first step is g / |g|
      [ 1. -1.]

    References:
      Shazeer and Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
        2018.

      Zhai, Kolesnikov, Houlsby and Beyer, "Scaling Vision Transformers", 2021.

      optax: ``optax.scale_by_factored_rms``.
    """
    who = "scale_by_factored_rms"
    checks.check_hyperparams(
        who,
        decay_rate=(decay_rate, checks.NONNEGATIVE),
        step_offset=(step_offset, "(-inf, inf)"),
        epsilon=(epsilon, checks.NONNEGATIVE),
    )
    min_dim_size_to_factor = checks.check_length(
        who, "min_dim_size_to_factor", min_dim_size_to_factor, allow_zero=True, wording="integer"
    )
    if not callable(decay_rate_fn):
        reported, name = checks.reported_name(who, "decay_rate_fn")
        raise TypeError(
            f"{reported}: {name} must be a function (step, decay_rate) -> decay, "
            f"got {decay_rate_fn!r}"
        )
    state_dtype = checks.check_state_dtype(who, state_dtype)

    def dims(x: Any) -> tuple[int, int] | None:
        return factored_dims(np.shape(x), factored, min_dim_size_to_factor)

    def init(params):
        def one(x):
            dtype = state_dtype or tree.real_dtype(jnp.result_type(x))
            placeholder = lambda: jnp.zeros((1,), dtype)  # noqa: E731  (one buffer each)
            if (axes := dims(x)) is None:
                return placeholder(), placeholder(), tree.real_zeros_like(x, state_dtype)
            second, largest = axes
            row, col = _zeros_without_axis(x, largest, dtype), _zeros_without_axis(x, second, dtype)
            return row, col, placeholder()

        per_leaf = [one(x) for x in jax.tree.leaves(params)]
        treedef = jax.tree.structure(params)
        fields = [jax.tree.unflatten(treedef, column) for column in zip(*per_leaf, strict=True)]
        if not per_leaf:
            fields = [params, params, params]
        return FactoredState(tree.zeros_count(), *fields)

    def check(updates, state):
        def expected(g):
            placeholder = np.broadcast_to(np.empty((), bool), (1,))
            full = np.broadcast_to(np.empty((), bool), np.shape(g))
            if (axes := dims(g)) is None:
                return placeholder, placeholder, full
            second, largest = axes
            shape = np.shape(g)

            def without(axis):
                return np.broadcast_to(np.empty((), bool), shape[:axis] + shape[axis + 1 :])

            return without(largest), without(second), placeholder

        treedef = jax.tree.structure(updates)
        columns = zip(*[expected(g) for g in jax.tree.leaves(updates)], strict=True)
        for field, column in zip(("v_row", "v_col", "v"), columns, strict=False):
            checks.check_trees_match(
                who,
                f"{field} for the updates",
                jax.tree.unflatten(treedef, column),
                **{f"state.{field}": getattr(state, field)},
            )

    def update(updates, state, params=None, **extra):
        check(updates, state)
        decay = decay_rate_fn(state.count - step_offset, decay_rate)
        seed = tree.safe_increment(state.count)

        def stored(new: jax.Array, old: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
            """(what to keep, the value to compute with), optax's cast or ``state_dtype``'s."""
            if state_dtype is None:  # optax: cast to the state's dtype, compute with that
                kept = new.astype(old.dtype)
                return kept, kept
            kept = tree.state_cast(new, state_dtype, seed)
            return kept, kept.astype(jnp.promote_types(kept.dtype, tree.real_dtype(g.dtype)))

        def one(g, v_row, v_col, v):
            squares = tree.abs_sq(g) + epsilon

            def widen(m):  # a narrow stored moment, in the gradient's (real) precision
                return m.astype(jnp.promote_types(m.dtype, tree.real_dtype(g.dtype)))

            if (axes := dims(g)) is None:
                new_v = decay * widen(v) + (1.0 - decay) * squares
                v, v_now = stored(new_v, v, g)
                return g * v_now**-0.5, v_row, v_col, v
            second, largest = axes
            new_row = decay * widen(v_row) + (1.0 - decay) * jnp.mean(squares, axis=largest)
            new_col = decay * widen(v_col) + (1.0 - decay) * jnp.mean(squares, axis=second)
            v_row, row = stored(new_row, v_row, g)
            v_col, col = stored(new_col, v_col, g)
            # ``second`` indexes the full shape; in v_row (the largest axis gone) it shifts
            # down by one if it came after the largest.
            row_axis = second - 1 if second > largest else second
            row_factor = (row / jnp.mean(row, axis=row_axis, keepdims=True)) ** -0.5
            col_factor = col**-0.5
            u = g * jnp.expand_dims(row_factor, largest) * jnp.expand_dims(col_factor, second)
            return u, v_row, v_col, v

        leaves, treedef = jax.tree.flatten(updates)
        per_leaf = [
            one(*args)
            for args in zip(
                leaves,
                treedef.flatten_up_to(state.v_row),
                treedef.flatten_up_to(state.v_col),
                treedef.flatten_up_to(state.v),
                strict=True,
            )
        ]
        if not per_leaf:
            return updates, FactoredState(seed, state.v_row, state.v_col, state.v)
        out, v_row, v_col, v = (
            jax.tree.unflatten(treedef, column) for column in zip(*per_leaf, strict=True)
        )
        return out, FactoredState(seed, v_row, v_col, v)

    return GradientTransformation(init, update)
