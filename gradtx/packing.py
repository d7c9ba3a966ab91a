"""Leaves in flat buffers: params for the whole run (``pack``), or in each step (``packed``).

A step over a tree of 300 leaves hands JAX and XLA 300 params, 300 gradients
and a moment or two per leaf to pass in, alias and return, and that per-buffer
cost is paid on every step, however the arithmetic is fused. :func:`pack`
stores the whole tree as one buffer per dtype (and per group, with
``pack(groups=)``) for the whole run; the model reads its leaves through
:meth:`Packed.unpack`, and ``jax.grad`` returns the gradient packed the same
way. A learner then sees a handful of leaves whatever the tree.

Unlike flattening inside every step (``optax.flatten``), the optimizer's
arrays are never copied into or out of a flat vector. The model pays instead:
its leaves are slices of the buffer (XLA fuses a slice into an elementwise op
that reads it, but copies one that feeds a matrix product), their gradients
are written into one concatenation, and each slice, having its own constant
offset, is a kernel of its own for XLA to compile. docs/performance.md
measures when that pays. :func:`packed` packs only the small leaves, inside
every step, for learners that cost per leaf on trees of many small ones.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import buffers, checks
from gradtx import tree as tree_util
from gradtx.core import GradientTransformation, extras_filter
from gradtx.labels import is_label_function, register_container, spread_labels

Groups = Any | Callable[[Any], Any]


@jax.tree_util.register_pytree_with_keys_class
class Packed:
    """A tree of floating arrays stored as one flat buffer per dtype (and per group).

    To ``jax.tree`` functions, ``jax.grad``, learners and checkpoints a packed
    tree is a small tree whose leaves are its buffers; :meth:`unpack` gives
    back the tree it was made from. Make one with :func:`pack`.

    Attributes:
      buffers: ``{key: 1-D array}``, keyed by dtype (``"float32"``), or by
        ``"group/dtype"`` for a pack with ``groups=``.
    """

    def __init__(self, buffers: dict[str, Any], layout: buffers.Layout):
        self.buffers = buffers
        self._layout = layout

    def tree_flatten_with_keys(self):
        keys = self._layout.keys
        return [(jax.tree_util.DictKey(k), self.buffers[k]) for k in keys], self._layout

    @classmethod
    def tree_unflatten(cls, layout: buffers.Layout, children: Any) -> Packed:
        return cls(dict(zip(layout.keys, children, strict=True)), layout)

    def unpack(self) -> Any:
        """The tree this was packed from, with the current values: slices of the buffers."""
        layout = self._layout
        leaves: list[Any] = [None] * len(layout.slots)
        for b, key in enumerate(layout.keys):
            buffer = self.buffers[key]
            if not hasattr(buffer, "shape") or jnp.ndim(buffer) != 1:
                raise TypeError(
                    f"Packed.unpack: buffer {key!r} is {type(buffer).__name__} "
                    f"{getattr(buffer, 'shape', '')}, not a 1-D array: only a Packed whose "
                    "leaves are its buffers (params, gradients, moments) can be unpacked"
                )
            indices = layout.leaves_of(b)
            slots = [layout.slot(i) for i in indices]
            # split, not slices: its gradient is one concatenate, not a sum of padded copies.
            pieces = jax.lax.split(buffer, [s.size for s in slots]) if len(slots) > 1 else [buffer]
            for i, slot, piece in zip(indices, slots, pieces, strict=True):
                leaves[i] = piece.reshape(slot.shape)
        return jax.tree.unflatten(layout.treedef, leaves)

    def repack(self, tree: Any) -> Packed:
        """``tree``, shaped like the unpacked tree, packed into this layout.

        For values computed on the unpacked tree, e.g. gradients of a loss that
        takes the tree: ``params.repack(jax.grad(loss)(params.unpack()))``.
        Each leaf is cast to its buffer's dtype.
        """
        layout = self._layout
        try:
            leaves = layout.treedef.flatten_up_to(tree)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"Packed.repack: the tree must be shaped like the unpacked tree "
                f"({layout.treedef}); got {jax.tree.structure(tree)}"
            ) from e
        for i, x in enumerate(leaves):
            slot = layout.slot(i)
            if jnp.shape(x) != slot.shape:
                path = _leaf_paths(layout.treedef)[i]
                raise ValueError(
                    f"Packed.repack: the leaf at {path} has shape {jnp.shape(x)}, "
                    f"the packed one {slot.shape}"
                )
            leaves[i] = jnp.asarray(x, self._dtype(slot.buffer))
        return _packed(layout, leaves)

    def _dtype(self, buffer: int) -> Any:
        return jnp.dtype(self._layout.keys[buffer].rsplit("/", 1)[-1])

    def buffer_labels(self, labels: Any, who: str = "Packed.buffer_labels") -> Packed:
        """One label per buffer, from labels for the unpacked tree (or a prefix of it).

        This is how ``partition``, ``masked`` and weight-decay masks read labels
        written for the unpacked tree. A buffer whose leaves disagree raises:
        pack with ``groups=`` the same labels.
        """
        layout = self._layout
        full = _spread_over(who, "labels", labels, layout.treedef)
        flat = layout.treedef.flatten_up_to(full)
        per_buffer = []
        for b, key in enumerate(layout.keys):
            seen = {}  # label -> its first leaf in the buffer
            for i in layout.leaves_of(b):
                seen.setdefault(flat[i], i)
            if len(seen) > 1:
                paths = _leaf_paths(layout.treedef)
                (l1, i1), (l2, i2) = list(seen.items())[:2]
                p1, p2 = paths[i1], paths[i2]
                raise ValueError(
                    f"{who}: buffer {key!r} of the packed params holds leaves labelled {l1!r} "
                    f"(at {p1}) and {l2!r} (at {p2}); a block can only treat a buffer as a "
                    "whole: pack the params with gradtx.pack(params, groups=labels), using "
                    "the same labels (or mask)"
                )
            per_buffer.append(next(iter(seen)))
        return Packed(dict(zip(layout.keys, per_buffer, strict=True)), layout)

    def group_labels(self, labels: Any, who: str = "Packed.group_labels") -> Packed:
        """Deprecated: :meth:`buffer_labels` under its 0.1 name."""
        warnings.warn(
            "Packed.group_labels is Packed.buffer_labels; group_labels will be removed in 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.buffer_labels(labels, who)

    @property
    def num_leaves(self) -> int:
        """How many leaves the unpacked tree has."""
        return len(self._layout.slots)

    def __repr__(self) -> str:
        parts = ", ".join(f"{k}: {getattr(v, 'shape', v)}" for k, v in self.buffers.items())
        return f"Packed({{{parts}}}, {self.num_leaves} leaves)"


def _leaf_paths(treedef: Any) -> list[str]:
    dummy = jax.tree.unflatten(treedef, [0] * treedef.num_leaves)
    return [checks.path_name(p) for p, _ in jax.tree.leaves_with_path(dummy)]


def pack(tree: Any, groups: Groups | None = None) -> Packed:
    """Store a tree of floating arrays as one flat buffer per dtype, for the whole run.

    Pack the params once, before ``learner.init``, and unpack them inside the
    loss; gradients, learner state and updates are then packed too:

    .. code-block:: python

        params = gradtx.pack(params)
        state = learner.init(params)
        grads = jax.grad(lambda p: loss(p.unpack(), batch))(params)   # a Packed
        params, state = gradtx.fused_update(learner, grads, state, params)

    Elementwise learners give the same numbers as on the unpacked tree, with a
    per-step cost that no longer grows with the number of leaves. Blocks that
    treat leaves differently (``partition``, ``masked``, weight-decay masks)
    read labels written for the unpacked tree, provided each buffer's leaves
    share one label: pack with ``groups=`` those labels.

    Args:
      tree: the params, a tree of floating arrays (float32, bfloat16, ...).
      groups: ``None``, or labels shaped like ``tree`` (or a prefix of it, or a
        function of ``tree`` returning them): leaves with different labels go to
        different buffers, keyed ``"label/dtype"``.

    Returns:
      a :class:`Packed`; ``packed.unpack()`` gives ``tree`` back.
    """
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    for path, x in paths_leaves:
        dtype = getattr(x, "dtype", None)
        if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
            what = f"dtype {dtype}" if dtype is not None else type(x).__name__
            raise TypeError(
                f"pack: the leaf at {checks.path_name(path)} is {what}; "
                "pack holds floating arrays only: keep other leaves out of the packed tree"
            )
    if groups is None:
        labels = [None] * len(paths_leaves)
    else:
        resolved = groups(tree) if is_label_function(groups) else groups
        labels = treedef.flatten_up_to(_spread_over("pack", "groups", resolved, treedef))
    dtypes = [jnp.dtype(x.dtype).name for _, x in paths_leaves]
    keys = dtypes if groups is None else [f"{g}/{d}" for g, d in zip(labels, dtypes, strict=True)]
    shapes = [tuple(x.shape) for _, x in paths_leaves]
    layout = buffers.lay_out(treedef, shapes, keys)
    return _packed(layout, [x for _, x in paths_leaves])


def _packed(layout: buffers.Layout, leaves: list[Any]) -> Packed:
    return Packed(dict(zip(layout.keys, layout.concatenate(leaves), strict=True)), layout)


def _spread_over(who: str, what: str, labels: Any, treedef: Any) -> Any:
    """``labels`` spread over the leaves of ``treedef``; a clear error if they do not fit."""
    like = jax.tree.unflatten(treedef, [0] * treedef.num_leaves)
    return spread_labels(labels, like, who, what, target="unpacked tree")


# partition, masked and weight-decay masks read labels for packed params through this hook.
register_container(Packed, Packed.unpack, Packed.buffer_labels)


# -- packed: small leaves packed inside each step -----------------------------------------------

# Leaves up to this many elements are packed; larger ones pay for their own kernels.
MAX_LEAF_SIZE = 4096


class PackedState(NamedTuple):
    """State of :func:`packed`: the transform's state over the packed tree, its runs' offsets."""

    inner: Any  # the wrapped transform's state, over the packed tree
    # Start offset of each run of one shape in its buffer. Runtime values on purpose:
    # constant offsets would give every leaf its own compiled kernel.
    bases: tuple[jax.Array, ...]


@functools.lru_cache(maxsize=256)
def _small_leaves(
    treedef: Any, signature: tuple[tuple[tuple[int, ...], str, bool], ...], max_size: int
) -> buffers.Layout:
    def key(shape: tuple[int, ...], dtype: str, split: bool) -> str | None:
        # A leaf split across devices stays whole: packing would gather it onto each device.
        small_float = jnp.issubdtype(dtype, jnp.floating) and int(np.prod(shape)) <= max_size
        return dtype if small_float and not split else None

    shapes = [shape for shape, _, _ in signature]
    # Same-shape leaves side by side, so that each run of leaves holds one shape.
    return buffers.lay_out(
        treedef, shapes, [key(*leaf) for leaf in signature], lambda i: (shapes[i], i)
    )


def _runs(layout: buffers.Layout) -> list[list[int]]:
    return [run for b in range(len(layout.keys)) for run in layout.runs(b)]


def _pack_small(layout: buffers.Layout, leaves: list[Any]) -> dict[str, Any]:
    return {
        "loose": [leaves[i] for i in layout.loose()],
        "packed": dict(zip(layout.keys, layout.concatenate(leaves), strict=True)),
    }


def _unpack_small(layout: buffers.Layout, tree: dict[str, Any], bases: tuple) -> list[Any]:
    out: list[Any] = [None] * len(layout.slots)
    for i, x in zip(layout.loose(), tree["loose"], strict=True):
        out[i] = x
    for run, base in zip(_runs(layout), bases, strict=True):
        first = layout.slot(run[0])
        buffer = tree["packed"][layout.keys[first.buffer]]
        # Leaf j of a run at base + j * size: XLA compiles one kernel per (shape, j) and
        # shares it between runs, instead of one kernel per leaf.
        for j, i in enumerate(run):
            piece = jax.lax.dynamic_slice(buffer, (base + j * first.size,), (first.size,))
            out[i] = piece.reshape(first.shape)
    return out


def packed(transform: GradientTransformation, max_leaf_size: int = MAX_LEAF_SIZE):
    """Run ``transform`` on small leaves packed into one flat buffer per dtype, in each step.

    Per-leaf optimizers cost per leaf, not per byte, once leaves are small: a
    tree of 1000 vectors of 16 floats makes XLA compile and dispatch thousands
    of tiny kernels. Every floating leaf with at most ``max_leaf_size``
    elements is raveled and concatenated with the others of its dtype; larger
    leaves and non-floating leaves pass to ``transform`` as they are.
    ``transform`` sees the tree ``{"loose": [...], "packed": {dtype: buffer}}``
    for updates and params, keeps its state over that tree, and its updates are
    cut back into the original structure. The result equals running
    ``transform`` leaf by leaf (up to the summation order of global reductions
    such as ``clip_by_global_norm``). :func:`pack` instead keeps the params
    packed for the whole run.

    Use it around transforms that treat every coordinate alike apart from global
    reductions (all of gradtx's learners and blocks); a transform that needs the
    original tree (a weight-decay ``mask`` given as a tree, per-layer norms)
    belongs outside it.

    Args:
      transform: the transform to run on the packed tree.
      max_leaf_size: leaves with more elements stay unpacked: their own kernels
        cost little next to their memory traffic, and packing would copy them.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.packed(gradtx.sgd(0.1, momentum=0.9))
      >>> grads = {f"b{i}": jnp.ones(3) for i in range(100)}  # 100 small leaves
      >>> state = opt.init(grads)
      >>> state.inner[0].trace["packed"]["float32"].shape  # one momentum buffer for all
      (300,)
      >>> updates, state = opt.update(grads, state)
      >>> print(updates["b7"])
      [-0.1 -0.1 -0.1]

    References:
      optax: ``optax.flatten``, which packs every leaf into one buffer.
    """
    max_leaf_size = checks.check_length(
        "packed", "max_leaf_size", max_leaf_size, allow_zero=True, wording="integer"
    )
    keep = extras_filter(transform.update)

    def layout_of(tree: Any) -> tuple[buffers.Layout, list[Any], Any]:
        leaves, treedef = jax.tree.flatten(tree)
        signature = tuple(
            (tuple(np.shape(x)), jnp.result_type(x).name, tree_util.is_split(x)) for x in leaves
        )
        return _small_leaves(treedef, signature, max_leaf_size), leaves, treedef

    def init(params):
        layout, leaves, _ = layout_of(params)
        bases = tuple(jnp.asarray(layout.slot(run[0]).offset, jnp.int32) for run in _runs(layout))
        return PackedState(transform.init(_pack_small(layout, leaves)), bases)

    def update(updates, state, params=None, **extra):
        if params is not None:
            checks.check_trees_match("packed", "updates", updates, params=params)
        layout, leaves, treedef = layout_of(updates)
        runs = len(_runs(layout))
        if len(state.bases) != runs:
            raise ValueError(
                f"packed: the state was made for a tree packed into {len(state.bases)} runs of "
                f"leaves, but these updates pack into {runs}; call init with params of the same "
                f"structure, shapes and dtypes as the updates"
            )
        packed_params = None if params is None else _pack_small(layout, jax.tree.leaves(params))
        new, inner = transform.update(
            _pack_small(layout, leaves), state.inner, packed_params, **keep(extra)
        )
        return jax.tree.unflatten(treedef, _unpack_small(layout, new, state.bases)), PackedState(
            inner, state.bases
        )

    return GradientTransformation(init, update)


def grouped(transform: GradientTransformation, max_leaf_size: int = MAX_LEAF_SIZE):
    """Deprecated: :func:`packed` under its 0.1 name ("group" now means a parameter group only).

    Args:
      transform: the transform to run on the packed tree.
      max_leaf_size: see :func:`packed`.
    """
    warnings.warn(
        "gradtx.grouped is gradtx.packed (and gradtx.GroupedState gradtx.PackedState): the same "
        "transform and state under a name that does not say 'group', which in gradtx means a "
        "parameter group; grouped will be removed in 0.3",
        DeprecationWarning,
        stacklevel=2,
    )
    return packed(transform, max_leaf_size)


GroupedState = PackedState  # its 0.1 name, kept so that 0.1 code and pickles load
