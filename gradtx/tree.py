"""Pytree helpers: optax's tree utilities by their names, and the ones gradtx's blocks share.

The public part is optax's ``optax.tree`` / ``optax.tree_utils`` surface, each
function under both of optax's names (``tree_get`` and ``get``, ``tree_norm``
and ``norm``, ...), so ``optax.tree.get(state, "learning_rate")`` and
``optax.tree_utils.tree_get(...)`` port by changing the import; the module is
also reachable as ``gradtx.tree_utils``.

The rest serves gradtx's blocks: step counters, moments kept in a state dtype
(:func:`state_zeros_like`, :func:`state_cast`, :func:`moment`), the
overflow-safe :func:`global_norm` and the train step's :func:`metric_norm`.
"""

from __future__ import annotations

import builtins  # this module defines optax's sum, set, max and min
import dataclasses
import functools
import inspect
import operator
import typing  # typing.cast: `cast` here is optax's dtype cast
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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


def _state_dtype_for(path: Any, x: Any, dtype: Any, name: str = "state_dtype") -> Any:
    if dtype is not None and jnp.iscomplexobj(x) and not jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError(
            f"{name}={jnp.dtype(dtype).name} cannot hold the complex moments of the leaf at "
            f"{path_name(path)} ({jnp.result_type(x)}); use "
            f"{name}=None for complex leaves (e.g. give them their own learner with "
            f"gradtx.partition)"
        )
    return dtype


def state_full_like(tree: Any, value: Any, dtype: Any = None, name: str = "state_dtype") -> Any:
    """A moment tree like ``tree`` filled with ``value``, each leaf sharded like its model.

    ``dtype`` (a state dtype; ``name`` is the argument that gave it, for the
    error) must be complex for complex leaves: a real one would drop their
    imaginary parts, so it raises ``ValueError`` naming the leaf. optax's
    :func:`tree_full_like` makes such a tree without complaint.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, x: _filled(x, value, _state_dtype_for(path, x, dtype, name)), tree
    )


def state_zeros_like(tree: Any, dtype: Any = None, name: str = "state_dtype") -> Any:
    """Zero moments like ``tree``, each leaf sharded like its model (:func:`state_full_like`)."""
    return state_full_like(tree, 0, dtype, name)


def real_full_like(tree: Any, value: Any, dtype: Any = None) -> Any:
    """Like :func:`state_full_like`, in the real dtype of each leaf: the state of a second moment.

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


def state_cast(tree: Any, dtype: Any, seed: Any = 0) -> Any:
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
      seed: for stochastic rounding into ``dtype`` (see :func:`state_cast`).

    Returns:
      ``(what to store, its value to compute with)``.
    """
    return store(rule(widen(stored, updates)), updates, dtype, seed)


def plain_moment(stored: Any, dtype: Any, rule: Callable[[Any], Any]) -> tuple[Any, Any]:
    """One step of a moment kept in optax's ``mu_dtype`` or ``accumulator_dtype``.

    optax's arithmetic, for optax's numbers: ``rule`` on the stored moment as it
    is (so a bfloat16 moment times a Python decay rounds to bfloat16, as in
    optax), and a round-to-nearest cast into ``dtype`` for the state. The step
    is computed from the value before the cast, as optax does.

    Returns:
      ``(what to store, its value to compute with)``.
    """
    new = rule(stored)
    return tree_cast(new, dtype), new


def store(moments: Any, updates: Any, dtype: Any, seed: Any = 0) -> tuple[Any, Any]:
    """Round new moments to the state dtype; return (what to store, its value to compute with).

    Computing the step from the stored value (not the unrounded one) lets XLA
    read the narrow state once instead of keeping a float32 copy in memory.
    """
    if dtype is None:
        return moments, moments
    stored = state_cast(moments, dtype, seed)
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
def bias_correction(moment: Any, decay: Any, count: jax.Array) -> Any:
    """Adam's bias correction: every leaf of ``moment`` divided by :math:`1 - d^t`.

    The factor is computed in float32, then cast to each leaf's dtype, so a
    bfloat16 moment stays bfloat16 without :math:`d^t` rounding to 1.

    Args:
      moment: a pytree of running averages (the ``mu`` or ``nu`` of a state).
      decay: their decay :math:`d`.
      count: the 1-based step :math:`t`.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.bias_correction({"m": jnp.array([0.5, 1.0])}, 0.5, jnp.array(1))
      {'m': Array([1., 2.], dtype=float32)}

    References:
      optax: ``optax.tree.bias_correction`` (``optax.tree_utils.tree_bias_correction``).
    """
    (correction,) = bias_corrections((decay,), count)
    return jax.tree.map(lambda m: m / correction.astype(m.dtype), moment)


@functools.partial(jax.jit, inline=True)
def bias_corrections(decays: tuple, count: jax.Array) -> list[jax.Array]:
    """``1 - decay**count`` for each decay: the one formula the jax.numpy and fused paths share."""
    return [1 - decay**count for decay in decays]


def is_split(x: Any) -> bool:
    """Whether ``x`` is split over a mesh axis that tracing can see (explicit sharding)."""
    spec = getattr(getattr(jax.typeof(x), "sharding", None), "spec", None)
    return spec is not None and any(axis is not None for axis in spec)


def manual_split(spec: Any, where: str = "") -> list[tuple[int, tuple[str, ...]]]:
    """``(dim, mesh axes)`` for each dimension of a leaf that ``shard_map`` splits.

    ``spec`` is the leaf's ``PartitionSpec`` in the ``shard_map``'s ``in_specs``; only
    the axes that are manual in this trace count, so the same spec means nothing outside
    ``shard_map``, where the leaf is whole. Raises for an axis the mesh does not have.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if spec is None or mesh.empty:
        return []
    manual = frozenset(getattr(mesh, "manual_axes", ()))
    out = []
    for dim, entry in enumerate(spec):
        names = tuple(a for a in (entry if isinstance(entry, tuple) else (entry,)) if a)
        unknown = [a for a in names if a not in mesh.axis_names]
        if unknown:
            raise ValueError(
                f"param_specs{where} names mesh axis {unknown[0]!r}, but the mesh's axes "
                f"are {tuple(mesh.axis_names)}"
            )
        names = tuple(a for a in names if a in manual)
        if names:
            out.append((dim, names))
    return out


def varying_axes(x: Any) -> frozenset:
    """The manual mesh axes over which ``x`` differs from device to device (``shard_map``'s
    varying-manual-axes type; empty with ``check_vma=False`` or outside ``shard_map``)."""
    aval = jax.typeof(x)
    manual_type = getattr(aval, "manual_axis_type", None)
    return frozenset(getattr(manual_type, "varying", None) or getattr(aval, "vma", ()))


def bound_axis_size(who: str, axis_name: Any) -> int:
    """The size of ``axis_name`` where it is bound (inside ``shard_map`` or ``pmap``), else a
    ValueError saying where to call ``who``'s ``init`` and ``update``."""
    try:
        return jax.lax.axis_size(axis_name)
    except NameError:
        raise ValueError(
            f"{who}: axis_name {axis_name!r} is not bound here: call init and update inside "
            f"jax.shard_map (with {axis_name!r} a manual axis of its mesh) or "
            f"jax.pmap(..., axis_name={axis_name!r})"
        ) from None


def tracks_varying(axis_name: Any) -> bool:
    """Whether shard_map types values as varying over ``axis_name`` here (not with
    ``check_vma=False``, nor in ``pmap``)."""
    return axis_name in varying_axes(jax.lax.axis_index(axis_name))


def varying_over(axis_name: Any, tree: Any) -> Any:
    """``tree`` typed as varying over ``axis_name`` (where shard_map tracks varying types).

    Differentiating at these params leaves each device its own gradient, which
    :func:`gradtx.compressed_mean` and :func:`gradtx.powersgd_mean` need, instead of
    autodiff's sum over the axis.
    """
    if not tracks_varying(axis_name):
        return tree  # pmap, or check_vma=False: every value is per device already

    def per_device(x: Any) -> Any:
        if not isinstance(x, jax.Array | np.ndarray) or axis_name in varying_axes(x):
            return x
        return jax.lax.pcast(x, axis_name, to="varying")

    return jax.tree.map(per_device, tree)


def check_not_yet_reduced(who: str, axis_name: Any, grads: Any) -> None:
    """Raise, naming the path, where a floating gradient no longer varies over ``axis_name``.

    For an exchange that averages each device's own gradient: with ``check_vma=True``,
    ``shard_map``'s autodiff already sums the gradients of replicated params.
    """
    if not tracks_varying(axis_name):
        return  # without varying-axis types autodiff sums nothing: nothing to see
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        inexact = jnp.issubdtype(jnp.result_type(g), jnp.inexact)
        if inexact and axis_name not in varying_axes(g):
            raise ValueError(
                f"{who}: the gradient at {path_name(path)} does not "
                f"vary over axis {axis_name!r}: it is already reduced over the axis (with "
                f"check_vma=True, shard_map's autodiff sums the gradients of replicated "
                f"params), and averaging it would average a sum. Make the params "
                f"varying before taking the gradient (jax.lax.pvary, in this JAX "
                f"jax.grad(loss)(jax.lax.pcast(params, {axis_name!r}, to='varying'), "
                f"batch)) so that each device keeps its own, or use check_vma=False"
            )


def global_shape(x: Any, spec: Any, where: str = "") -> tuple[int, ...]:
    """The shape of the whole leaf of which ``x`` is a ``shard_map`` block (see manual_split)."""
    shape = list(jnp.shape(x))
    for dim, names in manual_split(spec, where):
        shape[dim] *= jax.lax.axis_size(names)
    return tuple(shape)


def gathered(fn: Any, x: jax.Array, spec: Any = None, where: str = "") -> jax.Array:
    """``fn(x)`` on the whole of ``x``, split back as ``x`` is.

    A whole-matrix computation (Muon's Newton-Schulz iteration) cannot run on a block.
    Inside ``shard_map``, ``spec`` (the leaf's ``PartitionSpec`` there) says which
    dimensions the manual axes split: the blocks are all-gathered over those axes,
    ``fn`` runs on the whole matrix on every device, and each device keeps its block.
    Under explicit sharding, which refuses to guess an output sharding for a contraction
    over split axes, the matrix is resharded whole and back. Otherwise ``fn(x)`` as it
    is (XLA places automatic shardings itself).
    """
    split = manual_split(spec, where)
    if split:
        whole = x
        for dim, names in split:
            whole = jax.lax.all_gather(whole, names, axis=dim, tiled=True)
        out = fn(whole)
        for dim, names in split:
            size = x.shape[dim]
            out = jax.lax.dynamic_slice_in_dim(out, jax.lax.axis_index(names) * size, size, dim)
        return out
    if not is_split(x):
        return fn(x)
    explicit = jax.typeof(x).sharding.spec
    whole = jax.sharding.reshard(x, jax.sharding.PartitionSpec())
    return jax.sharding.reshard(fn(whole), explicit)


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
    squares = typing.cast(jax.Array, builtins.sum(jnp.sum(abs_sq(x)) for x in leaves))
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
        sums = builtins.sum(jnp.sum(jnp.square(p * inverse)) for p in parts)
        if axis_name is not None:
            sums = jax.lax.psum(sums, axis_name)
        return jnp.where(jnp.isfinite(peak), safe * jnp.sqrt(sums), peak)

    return jax.lax.cond(jnp.isinf(squares), rescaled, lambda _: jnp.sqrt(squares), leaves)


def metric_norm(tree: Any) -> jax.Array:
    """The global L2 norm of a tree's floating and complex leaves, accumulated in float32.

    The norm ``make_train_step`` reports as ``grad_norm`` and ``update_norm``:
    unlike optax's :func:`tree_norm` it skips integer, boolean and ``float0``
    leaves (what ``jax.grad(..., allow_int=True)`` gives) and sums bfloat16
    leaves in float32.

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
    return jnp.sqrt(builtins.sum(squares, jnp.zeros((), jnp.float32)))


# --- optax's tree utilities, by optax's names ------------------------------------------------
#
# Each is defined under its optax.tree_utils name (tree_get) and bound under its optax.tree
# name (get) at the end of the module. Their semantics are optax 0.2.8's; the helpers above
# with other meanings (state_zeros_like, state_cast, metric_norm) keep their own names.


def _filled_like(tree: Any, value: Any, dtype: Any) -> Any:
    return jax.tree.map(lambda x: _filled(x, value, dtype), tree)


def tree_zeros_like(tree: Any, dtype: Any = None) -> Any:
    """A tree of zeros shaped like ``tree``: ``jnp.zeros_like`` on every leaf.

    Each leaf is sharded like its model under ``jit`` (a select on it, not a constant).

    Args:
      tree: a pytree of arrays.
      dtype: the zeros' dtype; None keeps each leaf's.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.zeros_like({"w": jnp.ones(2)}, jnp.bfloat16)
      {'w': Array([0, 0], dtype=bfloat16)}

    References:
      optax: ``optax.tree.zeros_like`` (``optax.tree_utils.tree_zeros_like``).
    """
    return _filled_like(tree, 0, dtype)


def tree_ones_like(tree: Any, dtype: Any = None) -> Any:
    """A tree of ones shaped like ``tree``: ``jnp.ones_like`` on every leaf.

    Args:
      tree: a pytree of arrays.
      dtype: the ones' dtype; None keeps each leaf's.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.ones_like({"w": jnp.zeros(2)})
      {'w': Array([1., 1.], dtype=float32)}

    References:
      optax: ``optax.tree.ones_like`` (``optax.tree_utils.tree_ones_like``).
    """
    return _filled_like(tree, 1, dtype)


def tree_full_like(tree: Any, fill_value: Any, dtype: Any = None) -> Any:
    """A tree shaped like ``tree`` with every entry ``fill_value``: ``jnp.full_like`` per leaf.

    Args:
      tree: a pytree of arrays.
      fill_value: the value of every entry.
      dtype: the result's dtype; None keeps each leaf's.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.full_like({"w": jnp.zeros(2)}, 0.5)
      {'w': Array([0.5, 0.5], dtype=float32)}

    References:
      optax: ``optax.tree.full_like`` (``optax.tree_utils.tree_full_like``).
    """
    return _filled_like(tree, fill_value, dtype)


def tree_cast(tree: Any, dtype: Any) -> Any:
    """Cast every leaf to ``dtype`` (round to nearest); None returns ``tree`` as it is.

    Unlike :func:`state_cast`, which rounds float32 to bfloat16 stochastically
    for gradtx's ``state_dtype``, this is ``x.astype(dtype)``: optax's cast,
    which ``mu_dtype`` and ``accumulator_dtype`` use.

    Args:
      tree: a pytree of arrays.
      dtype: the dtype to cast to, or None.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.cast({"w": jnp.array([1.0, 2.5])}, jnp.bfloat16)
      {'w': Array([1, 2.5], dtype=bfloat16)}

    References:
      optax: ``optax.tree.cast`` (``optax.tree_utils.tree_cast``).
    """
    return tree if dtype is None else jax.tree.map(lambda x: x.astype(dtype), tree)


def tree_cast_like(tree: Any, other_tree: Any) -> Any:
    """Cast each leaf of ``tree`` to the dtype of the matching leaf of ``other_tree``.

    Args:
      tree: the tree to cast.
      other_tree: a tree of the same structure whose leaves give the dtypes.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.cast_like({"w": jnp.array(1.0)}, {"w": jnp.array(0, jnp.bfloat16)})
      {'w': Array(1, dtype=bfloat16)}

    References:
      optax: ``optax.tree.cast_like`` (``optax.tree_utils.tree_cast_like``).
    """
    return jax.tree.map(
        lambda x, o: x.astype(o.dtype) if hasattr(o, "dtype") else x, tree, other_tree
    )


def _lower_dtype(a: Any, b: Any) -> Any:
    promoted = jnp.promote_types(a, b)
    if promoted == a:
        return b
    if promoted == b:
        return a
    raise ValueError(
        f"tree_dtype: neither of {jnp.dtype(a).name} and {jnp.dtype(b).name} promotes to the "
        f"other, so neither is the higher or the lower; use mixed_dtype_handler='promote'"
    )


def _higher_dtype(a: Any, b: Any) -> Any:
    return b if _lower_dtype(a, b) == a else a


def tree_dtype(tree: Any, mixed_dtype_handler: str | None = None) -> Any:
    """The dtype of a tree's leaves; JAX's default float dtype for an empty tree.

    Args:
      tree: a pytree of arrays.
      mixed_dtype_handler: what leaves of several dtypes give: None raises
        ``ValueError`` naming the leaves that differ; ``"promote"`` their
        promoted dtype; ``"highest"`` / ``"lowest"`` the one every other
        promotes to / that promotes to every other (``ValueError`` if there is none).

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> tree = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(2)}
      >>> gradtx.tree.dtype(tree, "highest"), gradtx.tree.dtype(tree, "lowest")
      (dtype('float32'), dtype(bfloat16))

    References:
      optax: ``optax.tree.dtype`` (``optax.tree_utils.tree_dtype``).
    """
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.asarray(leaves).dtype
    dtypes = [jnp.asarray(x).dtype for x in leaves]
    if mixed_dtype_handler is None:
        wrong = [
            f"Expected dtype={dtypes[0]} for {path_name(path)} but got {d}."
            for (path, _), d in zip(
                jax.tree_util.tree_flatten_with_path(tree)[0], dtypes, strict=True
            )
            if d != dtypes[0]
        ]
        if wrong:
            raise ValueError("\n".join(wrong))
        return dtypes[0]
    reducers = {"promote": jnp.promote_types, "highest": _higher_dtype, "lowest": _lower_dtype}
    if mixed_dtype_handler not in reducers:
        raise ValueError(
            f"tree_dtype: mixed_dtype_handler must be None, 'promote', 'highest' or 'lowest', "
            f"got {mixed_dtype_handler!r}"
        )
    return functools.reduce(reducers[mixed_dtype_handler], dtypes)


def tree_add(tree_x: Any, tree_y: Any, *other_trees: Any) -> Any:
    """Leafwise sum of two or more trees: :math:`x + y + \\dots`.

    Args:
      tree_x: the first tree.
      tree_y: the second tree, of the same structure.
      *other_trees: more trees to add.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> x, y, z = {"w": jnp.array(1.0)}, {"w": jnp.array(2.0)}, {"w": jnp.array(3.0)}
      >>> print(gradtx.tree.add(x, y, z)["w"])
      6.0

    References:
      optax: ``optax.tree.add`` (``optax.tree_utils.tree_add``).
    """
    return jax.tree.map(
        lambda *xs: functools.reduce(operator.add, xs), tree_x, tree_y, *other_trees
    )


def tree_sub(tree_x: Any, tree_y: Any) -> Any:
    """Leafwise difference :math:`x - y`.

    Args:
      tree_x: the first tree.
      tree_y: the tree to subtract, of the same structure.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> print(gradtx.tree.sub({"w": jnp.array(3.0)}, {"w": jnp.array(1.0)})["w"])
      2.0

    References:
      optax: ``optax.tree.sub`` (``optax.tree_utils.tree_sub``).
    """
    return jax.tree.map(operator.sub, tree_x, tree_y)


def tree_mul(tree_x: Any, tree_y: Any) -> Any:
    """Leafwise product :math:`x y`.

    Args:
      tree_x: the first tree.
      tree_y: the second tree, of the same structure.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> print(gradtx.tree.mul({"w": jnp.array(3.0)}, {"w": jnp.array(2.0)})["w"])
      6.0

    References:
      optax: ``optax.tree.mul`` (``optax.tree_utils.tree_mul``).
    """
    return jax.tree.map(operator.mul, tree_x, tree_y)


def tree_div(tree_x: Any, tree_y: Any) -> Any:
    """Leafwise quotient :math:`x / y`.

    Args:
      tree_x: the dividends.
      tree_y: the divisors, a tree of the same structure.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> print(gradtx.tree.div({"w": jnp.array(3.0)}, {"w": jnp.array(2.0)})["w"])
      1.5

    References:
      optax: ``optax.tree.div`` (``optax.tree_utils.tree_div``).
    """
    return jax.tree.map(operator.truediv, tree_x, tree_y)


def tree_scale(scalar: Any, tree: Any) -> Any:
    """Every leaf times a scalar: :math:`s\\, x`.

    Args:
      scalar: the factor.
      tree: the tree to scale.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.scale(2.0, {"w": jnp.array([1.0, -1.0])})
      {'w': Array([ 2., -2.], dtype=float32)}

    References:
      optax: ``optax.tree.scale`` (``optax.tree_utils.tree_scale``).
    """
    return jax.tree.map(lambda x: scalar * x, tree)


def tree_add_scale(tree_x: Any, scalar: Any, tree_y: Any) -> Any:
    """:math:`x + s\\, y`, leafwise; a None leaf of ``tree_x`` stays None.

    Args:
      tree_x: the first tree.
      scalar: the factor of ``tree_y``.
      tree_y: the tree to scale and add, of the same structure.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> print(gradtx.tree.add_scale({"w": jnp.array(1.0)}, 0.5, {"w": jnp.array(4.0)})["w"])
      3.0

    References:
      optax: ``optax.tree.add_scale`` (``optax.tree_utils.tree_add_scale``).
    """
    scalar = jnp.asarray(scalar)
    return jax.tree.map(
        lambda x, y: None if x is None else x + scalar * y,
        tree_x,
        tree_y,
        is_leaf=lambda x: x is None,
    )


def _vdot(a: Any, b: Any) -> jax.Array:
    # A tensordot over every axis, not jnp.vdot, which ravels (a copy, and an error under
    # explicit sharding); the highest precision keeps TF32 out of it on GPUs, as in optax.
    a, b = jnp.asarray(a), jnp.asarray(b)
    if jnp.iscomplexobj(a):
        a = jnp.conj(a)
    if is_split(a) or is_split(b):  # explicit sharding: say the scalar is replicated
        mesh = jax.typeof(a if is_split(a) else b).sharding.mesh
        whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        return jnp.tensordot(a, b, a.ndim, precision=jax.lax.Precision.HIGHEST, out_sharding=whole)
    return jnp.tensordot(a, b, a.ndim, precision=jax.lax.Precision.HIGHEST)


def tree_vdot(tree_x: Any, tree_y: Any) -> Any:
    """The inner product of two trees: :math:`\\sum_i \\bar x_i y_i` over all leaves.

    Args:
      tree_x: the first tree (conjugated where complex).
      tree_y: the second tree, of the same structure.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.vdot({"a": jnp.array([1, 2]), "b": jnp.array([1, 2])},
      ...                  {"a": jnp.array([-1, -1]), "b": jnp.array([1, 1])})
      Array(0, dtype=int32)

    References:
      optax: ``optax.tree.vdot`` (``optax.tree_utils.tree_vdot``).
    """
    return jax.tree.reduce(operator.add, jax.tree.map(_vdot, tree_x, tree_y), initializer=0)


def tree_sum(tree: Any, associative_reduction: bool = False) -> Any:
    """The sum of every entry of every leaf.

    Args:
      tree: a pytree of arrays.
      associative_reduction: add the leaves' sums as a balanced tree
        (``jax.tree.reduce_associative``: quicker to compile for many leaves,
        rounded differently) instead of left to right.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.sum({"a": jnp.array([1.0, 2.0]), "b": jnp.array(3.0)})
      Array(6., dtype=float32)

    References:
      optax: ``optax.tree.sum`` (``optax.tree_utils.tree_sum``).
    """
    sums = jax.tree.map(jnp.sum, tree)
    if associative_reduction:
        return jax.tree.reduce_associative(operator.add, sums, identity=0)
    return jax.tree.reduce(operator.add, sums, initializer=0)


def _nonempty(reduce: Callable[[jax.Array], jax.Array]) -> Callable[[Any], Any]:
    return lambda x: None if jnp.size(x) == 0 else reduce(x)


def tree_max(tree: Any) -> Any:
    """The largest entry of any leaf; ``-inf`` for a tree with no entries.

    Args:
      tree: a pytree of arrays.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.max({"a": jnp.array([1.0, 5.0]), "b": jnp.array(3.0)})
      Array(5., dtype=float32)

    References:
      optax: ``optax.tree.max`` (``optax.tree_utils.tree_max``).
    """
    maxes = jax.tree.map(_nonempty(jnp.max), tree)
    return jax.tree.reduce(jnp.maximum, maxes, initializer=-float("inf"))


def tree_min(tree: Any) -> Any:
    """The smallest entry of any leaf; ``inf`` for a tree with no entries.

    Args:
      tree: a pytree of arrays.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.min({"a": jnp.array([1.0, 5.0]), "b": jnp.array(3.0)})
      Array(1., dtype=float32)

    References:
      optax: ``optax.tree.min`` (``optax.tree_utils.tree_min``).
    """
    mins = jax.tree.map(_nonempty(jnp.min), tree)
    return jax.tree.reduce(jnp.minimum, mins, initializer=float("inf"))


def tree_size(tree: Any) -> int:
    """The number of entries in all leaves together.

    Args:
      tree: a pytree of arrays.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.size({"a": jnp.ones((2, 3)), "b": jnp.ones(4)})
      10

    References:
      optax: ``optax.tree.size`` (``optax.tree_utils.tree_size``).
    """
    return builtins.sum(jnp.size(x) for x in jax.tree.leaves(tree))


def tree_conj(tree: Any) -> Any:
    """The complex conjugate of every leaf.

    Args:
      tree: a pytree of arrays.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> print(gradtx.tree.conj({"z": jnp.array(1 + 2j)})["z"])
      (1-2j)

    References:
      optax: ``optax.tree.conj`` (``optax.tree_utils.tree_conj``).
    """
    return jax.tree.map(jnp.conj, tree)


def tree_real(tree: Any) -> Any:
    """The real part of every leaf.

    Args:
      tree: a pytree of arrays.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> print(gradtx.tree.real({"z": jnp.array(1 + 2j)})["z"])
      1.0

    References:
      optax: ``optax.tree.real`` (``optax.tree_utils.tree_real``).
    """
    return jax.tree.map(jnp.real, tree)


def tree_norm(tree: Any, ord: int | str | float | None = None, squared: bool = False) -> jax.Array:  # noqa: A002
    """A vector norm of all leaves taken together.

    .. math:: \\|x\\|_2 = \\sqrt{\\textstyle\\sum_i |x_i|^2}, \\quad
        \\|x\\|_1 = \\textstyle\\sum_i |x_i|, \\quad \\|x\\|_\\infty = \\max_i |x_i|

    Sums in the leaves' dtype: the L2 norm overflows to inf once the sum of
    squares passes the dtype's range (see :func:`global_norm` for one that
    does not).

    Args:
      tree: a pytree of arrays.
      ord: the norm's order: None or 2, 1, or ``jnp.inf`` (also ``"inf"``, ``"infinity"``).
      squared: return the norm squared.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> tree = {"a": jnp.array([3.0, -4.0]), "b": jnp.array(12.0)}
      >>> norm = gradtx.tree.norm
      >>> print(norm(tree), norm(tree, ord=1), norm(tree, ord="inf"))
      13.0 19.0 12.0
      >>> print(gradtx.tree.norm(tree, squared=True))
      169.0

    References:
      optax: ``optax.tree.norm`` (``optax.tree_utils.tree_norm``).
    """
    if ord is None or ord == 2:
        sum_of_squares = tree_sum(
            jax.tree.map(lambda x: jnp.square(x.real) + jnp.square(x.imag), tree)
        )
        return jnp.array(sum_of_squares if squared else jnp.sqrt(sum_of_squares))
    if ord == 1:
        result = tree_sum(jax.tree.map(jnp.abs, tree))
    elif ord == jnp.inf or ord in ("inf", "infinity"):
        result = tree_max(jax.tree.map(jnp.abs, tree))
    else:
        raise ValueError(f"tree_norm: ord must be None, 1, 2 or inf, got {ord!r}")
    return jnp.array(jnp.square(result) if squared else result)


def tree_where(condition: Any, tree_x: Any, tree_y: Any) -> Any:
    """``jnp.where(condition, x, y)`` leafwise: ``tree_x`` where ``condition`` holds, else ``y``.

    Args:
      condition: a boolean (scalar or broadcastable to each leaf).
      tree_x: the values where it is true.
      tree_y: the values where it is false, a tree of the same structure.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> print(gradtx.tree.where(False, {"w": jnp.array(1.0)}, {"w": jnp.array(2.0)})["w"])
      2.0

    References:
      optax: ``optax.tree.where`` (``optax.tree_utils.tree_where``).
    """
    return jax.tree.map(lambda x, y: jnp.where(condition, x, y), tree_x, tree_y)


def tree_clip(tree: Any, min_value: Any = None, max_value: Any = None) -> Any:
    """Every entry clipped to ``[min_value, max_value]`` (None: no bound on that side).

    Args:
      tree: a pytree of arrays.
      min_value: the lower bound, or None.
      max_value: the upper bound, or None.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.clip({"w": jnp.array([-2.0, 0.5, 3.0])}, -1.0, 1.0)
      {'w': Array([-1. ,  0.5,  1. ], dtype=float32)}

    References:
      optax: ``optax.tree.clip`` (``optax.tree_utils.tree_clip``).
    """
    return jax.tree.map(lambda x: jnp.clip(x, min_value, max_value), tree)


def tree_allclose(
    a: Any, b: Any, rtol: Any = 1e-05, atol: Any = 1e-08, equal_nan: bool = False
) -> Any:
    """Whether every leaf of ``a`` is ``jnp.allclose`` to the matching leaf of ``b``.

    Args:
      a: a pytree of arrays.
      b: a tree of the same structure.
      rtol: the relative tolerance.
      atol: the absolute tolerance.
      equal_nan: count NaNs in the same places as equal.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> bool(gradtx.tree.allclose({"w": jnp.array(1.0)}, {"w": jnp.array(1.0 + 1e-7)}))
      True

    References:
      optax: ``optax.tree.allclose`` (``optax.tree_utils.tree_allclose``).
    """
    close = jax.tree.map(
        lambda x, y: jnp.allclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan), a, b
    )
    return functools.reduce(operator.and_, jax.tree.leaves(close), True)


def tree_batch_shape(tree: Any, shape: tuple[int, ...] = ()) -> Any:
    """Every leaf broadcast to leading batch dimensions ``shape``.

    Args:
      tree: a pytree of arrays.
      shape: the batch dimensions to put in front.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> gradtx.tree.batch_shape({"w": jnp.ones(3)}, (2,))["w"].shape
      (2, 3)

    References:
      optax: ``optax.tree.batch_shape`` (``optax.tree_utils.tree_batch_shape``).
    """
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (*shape, *jnp.shape(x))), tree)


def tree_update_infinity_moment(updates: Any, moments: Any, decay: Any, eps: Any) -> Any:
    """Adamax's moving maximum: :math:`\\max(|g| + \\epsilon, \\beta\\, u)`, leafwise.

    Args:
      updates: the gradients :math:`g`.
      moments: the previous maxima :math:`u`, shaped like ``updates``.
      decay: :math:`\\beta`.
      eps: :math:`\\epsilon`.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> g, u = {"w": jnp.array(-1.0)}, {"w": jnp.array(4.0)}
      >>> print(gradtx.tree.update_infinity_moment(g, u, 0.5, 0.0)["w"])
      2.0

    References:
      optax: ``optax.tree.update_infinity_moment``.
    """
    return jax.tree.map(
        lambda g, u: g if g is None else jnp.maximum(jnp.abs(g) + eps, decay * u),
        updates,
        moments,
        is_leaf=lambda x: x is None,
    )


# --- Finding values by key in a state tree (optax.tree.get, set, get_all_with_path) ----------


@dataclasses.dataclass(frozen=True)
class NamedTupleKey:
    """A path entry for a NamedTuple's field that also names the tuple (``ScaleByAdamState.mu``).

    The paths :func:`tree_get_all_with_path` gives, and that the ``filtering``
    functions of :func:`tree_get` and :func:`tree_set` receive, use it for
    every NamedTuple field, so a filter can tell fields of the same name in
    different states apart.

    Attributes:
      tuple_name: the NamedTuple's class name.
      name: the field's name.
    """

    tuple_name: str
    name: str

    def __str__(self) -> str:
        return f"{self.tuple_name}.{self.name}"


KeyPath = tuple[Any, ...]


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _has_key(node: Any, keys: Iterable[Any]) -> bool:
    """Whether ``node`` (a NamedTuple or a dict) has a field, key or class name in ``keys``."""
    if _is_namedtuple(node):
        return any(k in node._fields or k == type(node).__name__ for k in keys)
    return isinstance(node, dict) and any(k in node for k in keys)


def _named_leaves(tree: Any, stop: Callable[[Any], bool]) -> list[tuple[KeyPath, Any]]:
    """``tree_leaves_with_path``, with NamedTuple fields as :class:`NamedTupleKey` entries and
    every node where ``stop`` holds kept whole."""
    found = []
    for path, node in jax.tree_util.tree_leaves_with_path(
        tree, is_leaf=lambda x: stop(x) or _is_namedtuple(x)
    ):
        if stop(node) or not _is_namedtuple(node):
            found.append((path, node))
            continue
        for field in node._fields:
            key = NamedTupleKey(type(node).__name__, field)
            found += [
                ((*path, key, *rest), x) for rest, x in _named_leaves(getattr(node, field), stop)
            ]
    return found


def _children(path: KeyPath, node: Any) -> list[tuple[KeyPath, Any]]:
    if _is_namedtuple(node):
        name = type(node).__name__
        return [((*path, NamedTupleKey(name, f)), getattr(node, f)) for f in node._fields]
    return [((*path, jax.tree_util.DictKey(k)), v) for k, v in node.items()]


def _all_with_path(tree: Any, key: Any) -> list[tuple[KeyPath, Any]]:
    holders = [
        (p, n) for p, n in _named_leaves(tree, lambda n: _has_key(n, (key,))) if _has_key(n, (key,))
    ]
    found = []
    for path, node in holders:
        if _is_namedtuple(node) and type(node).__name__ == key:
            found.append((path, node))  # the state itself, found by its class name
        elif _is_namedtuple(node):
            found.append(((*path, NamedTupleKey(type(node).__name__, key)), getattr(node, key)))
        else:
            found.append(((*path, jax.tree_util.DictKey(key)), node[key]))
    # Then the matches inside the holders' children, after all of the outer ones (optax's order).
    for path, node in holders:
        for child_path, child in _children(path, node):
            found += [((*child_path, *p), x) for p, x in _all_with_path(child, key)]
    return found


def tree_get_all_with_path(
    tree: Any, key: Any, filtering: Callable[[KeyPath, Any], bool] | None = None
) -> list[tuple[KeyPath, Any]]:
    """Every value under ``key`` (a dict key, a NamedTuple field or class name), with its path.

    Paths name NamedTuple fields with :class:`NamedTupleKey`; read them with
    ``jax.tree_util.keystr``.

    Args:
      tree: the tree to search, e.g. an optimizer state.
      key: the dict key, NamedTuple field name or NamedTuple class name to find.
      filtering: ``filtering(path, value) -> bool`` keeps only some of the matches.

    Examples:
      >>> import jax, jax.numpy as jnp, gradtx
      >>> state = gradtx.adam(0.1).init(jnp.zeros(2))
      >>> [jax.tree_util.keystr(path) for path, _ in gradtx.tree.get_all_with_path(state, "count")]
      ['[0]ScaleByAdamState.count']

    References:
      optax: ``optax.tree.get_all_with_path`` (``optax.tree_utils.tree_get_all_with_path``).
    """
    found = _all_with_path(tree, key)
    return [(p, v) for p, v in found if filtering(p, v)] if filtering else found


def tree_get(
    tree: Any,
    key: Any,
    default: Any = None,
    filtering: Callable[[KeyPath, Any], bool] | None = None,
) -> Any:
    """The one value in ``tree`` under ``key``, e.g. ``tree_get(state, "learning_rate")``.

    ``key`` is a dict key, a NamedTuple field or a NamedTuple class name (which
    gives the whole state). Raises ``KeyError`` if ``key`` is found more than
    once (narrow it with ``filtering``).

    Args:
      tree: the tree to search, e.g. an optimizer state.
      key: what to find.
      default: returned when ``key`` is not in ``tree``.
      filtering: ``filtering(path, value) -> bool`` keeps only some of the matches.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)
      >>> print(gradtx.tree.get(opt.init(jnp.zeros(2)), "learning_rate"))
      0.1

    References:
      optax: ``optax.tree.get`` (``optax.tree_utils.tree_get``).
    """
    found = tree_get_all_with_path(tree, key, filtering=filtering)
    if len(found) > 1:
        raise KeyError(f"Found multiple values for '{key}' in {tree}.")
    return found[0][1] if found else default


def _entry_key(entry: Any) -> Any:
    """A path entry as the key it stands for: a dict key, a field name or an index."""
    if isinstance(entry, jax.tree_util.DictKey):
        if isinstance(entry.key, str | int):
            return entry.key
        raise KeyError(f"tree_set: dict keys must be str or int, got {entry.key!r}")
    for attribute in ("name", "key", "idx"):  # NamedTupleKey, GetAttrKey, FlattenedIndexKey, ...
        if hasattr(entry, attribute):
            return getattr(entry, attribute)
    raise KeyError(f"Tree key '{entry}' of type '{type(entry)}' not valid.")


def tree_set(
    tree: Any, filtering: Callable[[KeyPath, Any], bool] | None = None, /, **kwargs: Any
) -> Any:
    """A copy of ``tree`` with the values under each key of ``kwargs`` replaced.

    Keys are found as in :func:`tree_get` (a NamedTuple class name replaces
    the whole state). Raises ``KeyError`` for a key with no value in ``tree``.
    Within a dict or NamedTuple that holds one of the keys, the search goes on
    into its dict and NamedTuple children, not into its lists or tuples (as in optax).

    Args:
      tree: the tree, e.g. an optimizer state.
      filtering: ``filtering(path, value) -> bool``: replace only the matches it keeps.
      **kwargs: the new value for each key.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)
      >>> state = gradtx.tree.set(opt.init(jnp.zeros(2)), learning_rate=jnp.asarray(0.5))
      >>> print(state.hyperparams["learning_rate"])
      0.5

    References:
      optax: ``optax.tree.set`` (``optax.tree_utils.tree_set``).
    """
    for key in kwargs:
        if not tree_get_all_with_path(tree, key, filtering):
            given = " given the filtering operation" if filtering else ""
            raise KeyError(f"Found no values matching '{key}'{given} in {tree}")
    keys = tuple(kwargs)
    chosen = lambda path, value: filtering is None or filtering(path, value)  # noqa: E731

    def replace(path: KeyPath, node: Any) -> Any:
        if not _has_key(node, keys):
            return node
        if _is_namedtuple(node) and type(node).__name__ in kwargs and chosen(path, node):
            return kwargs[type(node).__name__]
        new = {}
        for child_path, child in _children(path, node):
            name = _entry_key(child_path[-1])
            if name in kwargs and chosen(child_path, child):
                new[name] = kwargs[name]
            elif isinstance(child, dict | list | tuple):
                new[name] = replace(child_path, child)
            else:
                new[name] = child
        return node._replace(**new) if _is_namedtuple(node) else new

    stop = lambda node: _has_key(node, keys)  # noqa: E731
    treedef = jax.tree.structure(tree, is_leaf=stop)
    return treedef.unflatten(replace(path, node) for path, node in _named_leaves(tree, stop))


@jax.tree_util.register_pytree_node_class
class _ParamsPlaceholder:
    """A leafless stand-in for the params: what ``init`` builds from it marks the params' places."""

    def tree_flatten(self) -> tuple[tuple, None]:
        return (), None

    @classmethod
    def tree_unflatten(cls, aux: Any, children: Any) -> _ParamsPlaceholder:
        return cls()


def tree_map_params(
    initable: Any,
    f: Callable[..., Any],
    state: Any,
    /,
    *rest: Any,
    transform_non_params: Callable[..., Any] | None = None,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """Map ``f`` over every params-shaped tree in an optimizer state (moments, traces, ...).

    The places are found by running ``initable``'s init on a stand-in for the
    params: whatever it builds from the params (``zeros_like(params)``) is
    params-shaped. Useful to give a state the params' sharding specs.

    Args:
      initable: the transform (anything with ``init``) or its ``init`` function.
      f: applied leafwise to each params-shaped tree (and the leaves of ``rest``).
      state: the state to map over, made by that ``init``.
      *rest: trees shaped like the params, passed to ``f`` as further arguments.
      transform_non_params: applied to every other leaf of the state (None: kept).
      is_leaf: passed to ``jax.tree.map`` over the params-shaped trees.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.adam(0.1)
      >>> state = opt.init({"w": jnp.ones(2)})
      >>> shifted = gradtx.tree.map_params(opt, lambda x: x + 1, state)
      >>> adam_state = gradtx.tree.get(shifted, "ScaleByAdamState")
      >>> print(adam_state.mu["w"], adam_state.count)
      [1. 1.] 0

    References:
      optax: ``optax.tree_map_params`` (``optax.tree_utils.tree_map_params``).
    """
    placeholder = _ParamsPlaceholder()
    init = initable.init if callable(getattr(initable, "init", None)) else initable
    marked = init(placeholder)

    def one(mark: Any, value: Any) -> Any:
        if isinstance(mark, _ParamsPlaceholder):
            return jax.tree.map(f, value, *rest, is_leaf=is_leaf)
        return value if transform_non_params is None else transform_non_params(value)

    return jax.tree.map(one, marked, state, is_leaf=lambda x: isinstance(x, _ParamsPlaceholder))


# --- Random trees (optax.tree.random_like, split_key_like, unwrap_random_key_data) -----------


def tree_split_key_like(rng_key: Any, target_tree: Any) -> Any:
    """One independent key per leaf of ``target_tree``, in a tree of its structure.

    Args:
      rng_key: the key to split (``jax.random.key`` or a raw ``PRNGKey``).
      target_tree: the tree whose structure to match.

    Examples:
      >>> import jax, gradtx
      >>> keys = gradtx.tree.split_key_like(jax.random.key(0), {"a": 1.0, "b": 2.0})
      >>> sorted(keys), keys["a"].shape
      (['a', 'b'], ())

    References:
      optax: ``optax.tree.split_key_like`` (``optax.tree_utils.tree_split_key_like``).
    """
    treedef = jax.tree.structure(target_tree)
    return jax.tree.unflatten(treedef, jax.random.split(rng_key, treedef.num_leaves))


def tree_random_like(
    rng_key: Any,
    target_tree: Any,
    sampler: Callable[..., Any] = jax.random.normal,
    dtype: Any = None,
) -> Any:
    """A tree shaped like ``target_tree`` with entries drawn by ``sampler``, one key per leaf.

    Each leaf is ``sampler(key, leaf.shape, dtype or leaf.dtype)``, placed with the
    leaf's sharding where the sampler takes ``out_sharding`` (as ``jax.random``'s do).

    Args:
      rng_key: the key, split into one per leaf (:func:`tree_split_key_like`).
      target_tree: a pytree of arrays whose shapes (and dtypes) to match.
      sampler: ``(key, shape, dtype) -> array``; ``jax.random.normal`` by default.
      dtype: the dtype to sample in; None uses each leaf's.

    Examples:
      >>> import jax, jax.numpy as jnp, gradtx
      >>> noise = gradtx.tree.random_like(jax.random.key(0), {"w": jnp.zeros((2, 3))})
      >>> noise["w"].shape, noise["w"].dtype
      ((2, 3), dtype('float32'))

    References:
      optax: ``optax.tree.random_like`` (``optax.tree_utils.tree_random_like``).
    """
    keys = tree_split_key_like(rng_key, target_tree)
    if "out_sharding" in inspect.signature(sampler).parameters:
        draw = lambda key, leaf: sampler(  # noqa: E731
            key, leaf.shape, dtype or leaf.dtype, out_sharding=jax.typeof(leaf).sharding
        )
    else:  # a sampler of (key, shape, dtype) only, as optax also accepts
        draw = lambda key, leaf: sampler(key, leaf.shape, dtype or leaf.dtype)  # noqa: E731
    return jax.tree.map(lambda leaf, key: draw(key, leaf), target_tree, keys)


def tree_unwrap_random_key_data(input_tree: Any) -> Any:
    """Replace every typed key (``jax.random.key``) in a tree by its raw ``uint32`` data.

    Keys cannot be compared numerically; their data can (``tree_allclose``).

    Args:
      input_tree: a pytree of arrays and typed keys.

    Examples:
      >>> import jax, gradtx
      >>> gradtx.tree.unwrap_random_key_data({"key": jax.random.key(0)})["key"].dtype
      dtype('uint32')

    References:
      optax: ``optax.tree.unwrap_random_key_data``
        (``optax.tree_utils.tree_unwrap_random_key_data``).
    """

    def unwrap(x: Any) -> Any:
        is_key = isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
        return jax.random.key_data(x) if is_key else x

    return jax.tree.map(unwrap, input_tree)


# optax's moment helpers are the ones gradtx's blocks use (same formulas).
tree_update_moment = update_moment
tree_update_moment_per_elem_norm = update_moment_per_elem_norm
tree_bias_correction = bias_correction

# optax.tree's short names, bound to the same functions.
add = tree_add
add_scale = tree_add_scale
allclose = tree_allclose
batch_shape = tree_batch_shape
cast = tree_cast
cast_like = tree_cast_like
clip = tree_clip
conj = tree_conj
div = tree_div
dtype = tree_dtype
full_like = tree_full_like
get = tree_get
get_all_with_path = tree_get_all_with_path
map_params = tree_map_params
max = tree_max  # noqa: A001
min = tree_min  # noqa: A001
mul = tree_mul
random_like = tree_random_like
split_key_like = tree_split_key_like
unwrap_random_key_data = tree_unwrap_random_key_data
norm = tree_norm
ones_like = tree_ones_like
real = tree_real
scale = tree_scale
set = tree_set  # noqa: A001
size = tree_size
sub = tree_sub
sum = tree_sum  # noqa: A001
update_infinity_moment = tree_update_infinity_moment
vdot = tree_vdot
where = tree_where
zeros_like = tree_zeros_like

__all__ = [
    "NamedTupleKey",
    "add", "add_scale", "allclose", "batch_shape", "bias_correction", "cast", "cast_like",
    "clip", "conj", "div", "dtype", "full_like", "get", "get_all_with_path", "map_params",
    "max", "min", "mul", "norm", "ones_like", "random_like", "real", "scale", "set", "size",
    "split_key_like", "sub", "sum", "unwrap_random_key_data", "update_infinity_moment",
    "update_moment", "update_moment_per_elem_norm", "vdot", "where", "zeros_like",
    "tree_add", "tree_add_scale", "tree_allclose", "tree_batch_shape", "tree_bias_correction",
    "tree_cast", "tree_cast_like", "tree_clip", "tree_conj", "tree_div", "tree_dtype",
    "tree_full_like", "tree_get", "tree_get_all_with_path", "tree_map_params", "tree_max",
    "tree_min", "tree_mul", "tree_norm", "tree_ones_like", "tree_random_like", "tree_real",
    "tree_scale", "tree_set", "tree_size", "tree_split_key_like", "tree_sub", "tree_sum",
    "tree_unwrap_random_key_data", "tree_update_infinity_moment", "tree_update_moment",
    "tree_update_moment_per_elem_norm", "tree_vdot", "tree_where", "tree_zeros_like",
]  # fmt: skip
