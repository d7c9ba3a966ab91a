"""Pytree helpers shared by transforms: moments, norms, counters, schedules."""

from __future__ import annotations

import functools
import typing  # typing.cast: `cast` here is this module's dtype cast
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.checks import path_name

COUNT_DTYPE = jnp.int32
# The largest int32: where step counters saturate, and the last count a schedule must handle.
INT32_MAX = int(jnp.iinfo(COUNT_DTYPE).max)


def zeros_count() -> jax.Array:
    """A fresh step counter: ``int32`` zero."""
    return jnp.zeros([], COUNT_DTYPE)


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1``, saturating at the int32 maximum instead of wrapping negative."""
    return jnp.where(count < INT32_MAX, count + 1, INT32_MAX).astype(COUNT_DTYPE)


def resolve(hyperparam: Any, count: jax.Array) -> Any:
    """The value of a hyperparameter at ``count``: call it if it is a schedule."""
    return hyperparam(count) if callable(hyperparam) else hyperparam


def real_dtype(dtype: Any) -> Any:
    """The real counterpart of a complex dtype (float32 for complex64); other dtypes as they are."""
    dtype = jnp.dtype(dtype)
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.complexfloating) else dtype


def abs_sq(x: jax.Array) -> jax.Array:
    """:math:`|x|^2`, real: ``x * conj(x)`` for a complex ``x``, ``x**2`` for a real one."""
    return (jnp.conj(x) * x).real if jnp.iscomplexobj(x) else jnp.square(x)


def reject_complex(who: str, tree: Any, why: str = "") -> None:
    """Raise ``ValueError`` naming the first complex leaf: for blocks with no complex rule."""
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if jnp.iscomplexobj(x):
            raise ValueError(
                f"{who}: the leaf at {path_name(path)} is {jnp.result_type(x)}, and {who} has no "
                f"rule for complex numbers{why}; give complex leaves another learner with "
                f"gradtx.partition, or optimize their real and imaginary parts as real leaves"
            )


def _filled(x: Any, value: Any, dtype: Any) -> jax.Array:
    # A select on x instead of jnp.full_like: under jit with automatic sharding, XLA
    # gives the result x's sharding (a constant would come out replicated), so moments
    # made by a jitted init are sharded like their params.
    x = jnp.asarray(x)
    dtype = x.dtype if dtype is None else dtype
    # Casting the model to a real dtype first would warn for complex x; only its layout matters.
    model = x.real if jnp.iscomplexobj(x) and not jnp.issubdtype(dtype, jnp.complexfloating) else x
    return jnp.where(False, model.astype(dtype), jnp.asarray(value, dtype))


def _state_dtype_for(path: Any, x: Any, dtype: Any) -> Any:
    if dtype is not None and jnp.iscomplexobj(x) and not jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError(
            f"state_dtype={jnp.dtype(dtype).name} cannot hold the complex moments of the leaf at "
            f"{path_name(path)} ({jnp.result_type(x)}); use "
            f"state_dtype=None for complex leaves (e.g. give them their own learner with "
            f"gradtx.partition)"
        )
    return dtype


def full_like(tree: Any, value: Any, dtype: Any = None) -> Any:
    """A tree like ``tree`` filled with ``value``, each leaf sharded like its model.

    ``dtype`` (a state dtype) must be complex for complex leaves: a real one
    would drop their imaginary parts, so it raises ``ValueError`` naming the leaf.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, x: _filled(x, value, _state_dtype_for(path, x, dtype)), tree
    )


def zeros_like(tree: Any, dtype: Any = None) -> Any:
    """Zeros like ``tree``, each leaf sharded like its model (see :func:`full_like`)."""
    return full_like(tree, 0, dtype)


def real_full_like(tree: Any, value: Any, dtype: Any = None) -> Any:
    """Like :func:`full_like`, in the real dtype of each leaf: the state of a second moment.

    A second moment of a complex leaf is :math:`|g|^2`, a real number, stored in
    the leaf's real dtype (float32 for complex64): optax stores the same values
    with a zero imaginary part, in twice the memory.
    """
    return jax.tree.map(
        lambda x: _filled(x, value, real_dtype(jnp.result_type(x)) if dtype is None else dtype),
        tree,
    )


def real_zeros_like(tree: Any, dtype: Any = None) -> Any:
    """Zeros in each leaf's real dtype (see :func:`real_full_like`)."""
    return real_full_like(tree, 0, dtype)


def cast(tree: Any, dtype: Any, seed: Any = 0) -> Any:
    """Cast every leaf to the state dtype ``dtype``; ``None`` leaves the tree as it is.

    float32 to bfloat16 rounds stochastically (:func:`stochastic_round`): a
    moment that decays by 0.999 per step moves by less than half a bfloat16 ulp,
    so round-to-nearest would freeze it. ``seed`` (the step count, where the
    transform keeps one) varies the rounding from step to step.
    """
    if dtype is None:
        return tree
    if jnp.dtype(dtype) != jnp.bfloat16:
        return jax.tree.map(lambda x: x.astype(dtype), tree)
    return jax.tree.map(
        lambda x: stochastic_round(x, seed) if x.dtype == jnp.float32 else x.astype(dtype), tree
    )


def stochastic_round(x: jax.Array, seed: Any = 0) -> jax.Array:
    """Round float32 to bfloat16, up or down with odds set by the distance: ``E[round(x)] = x``.

    The 16 random bits are the high half of a multiplicative hash of the
    value's bits and ``seed``: deterministic (a resumed run repeats itself bit
    for bit), and cheap enough (an xor, a multiply, a shift) that a
    memory-bound step stays memory-bound. Infinities and quiet NaNs survive
    because their low 16 bits are zero.
    """
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    key = jnp.asarray(seed).astype(jnp.uint32) * jnp.uint32(0x9E3779B9)
    noise = ((bits ^ key) * jnp.uint32(0xC2B2AE35)) >> 16
    # Adding noise below the kept 16 bits, then truncating, rounds up with the right odds;
    # the truncated float32 is exactly representable, so the final cast is exact.
    truncated = (bits + noise) & jnp.uint32(0xFFFF0000)
    return jax.lax.bitcast_convert_type(truncated, jnp.float32).astype(jnp.bfloat16)


def moment(
    stored: Any, updates: Any, dtype: Any, rule: Callable[[Any], Any], seed: Any = 0
) -> tuple[Any, Any]:
    """One step of a stored moment: widen it, apply ``rule``, store it in ``dtype``.

    The single path every block's moments take through ``state_dtype``, so a
    narrow state is never computed with in its own precision.

    Args:
      stored: the moments as kept in the state.
      updates: the incoming updates, whose dtype the arithmetic runs in.
      dtype: the state dtype (None: the moments' own).
      rule: ``widened old moments -> new moments``.
      seed: for stochastic rounding into ``dtype`` (see :func:`cast`).

    Returns:
      ``(what to store, its value to compute with)``.
    """
    return store(rule(widen(stored, updates)), updates, dtype, seed)


def store(moments: Any, updates: Any, dtype: Any, seed: Any = 0) -> tuple[Any, Any]:
    """Round new moments to the state dtype; return (what to store, its value to compute with).

    Computing the step from the stored value (not the unrounded one) lets XLA
    read the narrow state once instead of keeping a float32 copy in memory.
    """
    if dtype is None:
        return moments, moments
    stored = cast(moments, dtype, seed)
    return stored, widen(stored, updates)


def widen(moments: Any, updates: Any) -> Any:
    """Promote stored moments to the updates' dtype before any arithmetic.

    A bfloat16 moment times a Python float stays bfloat16, so without this
    ``0.999 * nu`` would round to ``nu`` and a low-precision state would freeze.
    """
    # Against the real dtype of g: a real second moment of a complex gradient stays real.
    return jax.tree.map(
        lambda m, g: m.astype(jnp.promote_types(m.dtype, real_dtype(g.dtype))), moments, updates
    )


def update_moment(updates: Any, moments: Any, decay: Any, order: int) -> Any:
    """Exponential moving average of ``g**order``: ``(1 - decay) g^order + decay m``."""
    return jax.tree.map(lambda g, m: (1 - decay) * (g**order) + decay * m, updates, moments)


def update_moment_per_elem_norm(updates: Any, moments: Any, decay: Any, order: int) -> Any:
    """Exponential moving average of ``|g|**order``: real, also for complex ``g`` (as optax)."""

    def norm(g: jax.Array) -> jax.Array:
        if not jnp.iscomplexobj(g):
            return g**order
        return abs_sq(g) if order == 2 else abs_sq(g) ** (order / 2)

    return jax.tree.map(lambda g, m: (1 - decay) * norm(g) + decay * m, updates, moments)


# Jitted so that eager and jitted updates compute ``decay**count`` with the same
# XLA kernel (eager ``pow`` differs by an ulp, which ``1 - b**t`` amplifies).
@functools.partial(jax.jit, inline=True)
def bias_correction(moments: Any, decay: Any, count: jax.Array) -> Any:
    """Divide by ``1 - decay**count``; the factor is computed in float32 then cast per leaf."""
    (correction,) = bias_corrections((decay,), count)
    return jax.tree.map(lambda m: m / correction.astype(m.dtype), moments)


@functools.partial(jax.jit, inline=True)
def bias_corrections(decays: tuple, count: jax.Array) -> list[jax.Array]:
    """``1 - decay**count`` for each decay: the one formula the jax.numpy and fused paths share."""
    return [1 - decay**count for decay in decays]


def is_split(x: Any) -> bool:
    """Whether ``x`` is split over a mesh axis that tracing can see (explicit sharding)."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
    return spec is not None and any(axis is not None for axis in spec)


def global_norm(tree: Any, axis_name: Any = None) -> jax.Array:
    """The L2 norm of all leaves taken together, summed across ``axis_name`` when given.

    Squares overflow float32 once an entry passes about 1.8e19; the norm is then
    recomputed on the leaves divided by their largest magnitude, so gradients
    of 1e30 still give their true (finite) norm. That second pass is a
    ``lax.cond`` branch (over one concatenated buffer unless a leaf is split
    across devices): it costs nothing unless taken, and little to compile.
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.zeros((), jnp.float32)
    # An array, never sum's start value 0: there is at least one leaf.
    squares = typing.cast(jax.Array, sum(jnp.sum(abs_sq(x)) for x in leaves))
    if axis_name is not None:
        squares = jax.lax.psum(squares, axis_name)

    def rescaled(leaves: list[Any]) -> jax.Array:
        # A complex leaf is rescaled by its moduli: the norm is theirs.
        leaves = [jnp.abs(x) if jnp.iscomplexobj(x) else x for x in leaves]
        if any(is_split(x) for x in leaves):  # explicit sharding cannot ravel a split leaf
            parts = [jnp.abs(x).astype(squares.dtype) for x in leaves]
            peak = jnp.max(jnp.stack([jnp.max(p, initial=0) for p in parts]))
        else:
            parts = [jnp.concatenate([jnp.ravel(x).astype(squares.dtype) for x in leaves])]
            peak = jnp.max(jnp.abs(parts[0]), initial=0)  # empty leaves have no max
        if axis_name is not None:
            peak = jax.lax.pmax(peak, axis_name)
        safe = jnp.where((peak > 0) & jnp.isfinite(peak), peak, 1)
        # The barrier keeps XLA from fusing the whole peak computation into every
        # leaf's division, which made compiles quadratic in the leaf count.
        inverse = jax.lax.optimization_barrier(1 / safe)
        sums = sum(jnp.sum(jnp.square(p * inverse)) for p in parts)
        if axis_name is not None:
            sums = jax.lax.psum(sums, axis_name)
        return jnp.where(jnp.isfinite(peak), safe * jnp.sqrt(sums), peak)

    return jax.lax.cond(jnp.isinf(squares), rescaled, lambda _: jnp.sqrt(squares), leaves)


def norm(tree: Any) -> jax.Array:
    """The global L2 norm of a tree's floating and complex leaves, accumulated in float32.

    One reduction over each leaf, which XLA fuses with whatever computes the
    leaf: the metric costs about one extra read of the gradients and updates.
    Like ``optax.tree.norm`` it overflows to inf once the sum of squares passes
    float32's range (entries beyond about 1.8e19). The overflow-safe
    :func:`gradtx.tree.global_norm`, which ``clip_by_global_norm`` uses, runs a
    ``lax.cond`` whose operands XLA must materialise: as a metric it made a
    4M-parameter Adam step 3.3x slower (26.7 ms against 8.0 ms without
    metrics; this form: 9.8 ms).
    """
    squares = [
        jnp.sum(abs_sq(x.astype(jnp.complex64 if jnp.iscomplexobj(x) else jnp.float32)))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.result_type(x), jnp.inexact)
    ]
    return jnp.sqrt(sum(squares, jnp.zeros((), jnp.float32)))
