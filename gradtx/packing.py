"""Params kept packed, one flat buffer per dtype, from step to step.

A step over a tree of 300 leaves hands JAX and XLA 300 params, 300 gradients
and a moment or two per leaf to pass in, alias and return, and that per-buffer
cost is paid on every step, however the arithmetic is fused. :func:`pack`
stores the whole tree as one buffer per dtype (and per group, when leaves are
grouped) for the whole run; the model reads its leaves through
:meth:`Packed.unpack`, and ``jax.grad`` returns the gradient packed the same
way. A learner then sees a handful of leaves whatever the tree.

Unlike flattening inside every step (``optax.flatten``), the optimizer's
arrays are never copied into or out of a flat vector. The model pays instead:
its leaves are slices of the buffer (XLA fuses a slice into an elementwise op
that reads it, but copies one that feeds a matrix product), their gradients
are written into one concatenation, and each slice, having its own constant
offset, is a kernel of its own for XLA to compile. docs/performance.md
measures when that pays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks

Groups = Any | Callable[[Any], Any]


@dataclasses.dataclass(frozen=True)
class _Layout:
    """Where each leaf of the unpacked tree lives; static, so it is part of jit's cache key."""

    treedef: Any  # of the unpacked tree
    keys: tuple[str, ...]  # one per buffer: its dtype, or "group/dtype"
    slots: tuple[tuple[int, tuple[int, ...]], ...]  # per leaf: (buffer, shape), in buffer order

    def leaves_of(self, buffer: int) -> list[int]:
        """Indices of the leaves stored in ``buffer``, in the order they are stored."""
        return [i for i, (b, _) in enumerate(self.slots) if b == buffer]


@jax.tree_util.register_pytree_with_keys_class
class Packed:
    """A tree of floating arrays stored as one flat buffer per dtype (and per group).

    To ``jax.tree`` functions, ``jax.grad``, learners and checkpoints a packed
    tree is a small tree whose leaves are its buffers; :meth:`unpack` gives
    back the tree it was made from. Make one with :func:`pack`.

    Attributes:
      buffers: ``{key: 1-D array}``, keyed by dtype (``"float32"``), or by
        ``"group/dtype"`` for a grouped pack.
    """

    def __init__(self, buffers: dict[str, Any], layout: _Layout):
        self.buffers = buffers
        self._layout = layout

    def tree_flatten_with_keys(self):
        keys = self._layout.keys
        return [(jax.tree_util.DictKey(k), self.buffers[k]) for k in keys], self._layout

    @classmethod
    def tree_unflatten(cls, layout: _Layout, children: Any) -> Packed:
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
            sizes = [int(np.prod(layout.slots[i][1])) for i in indices]
            # split, not slices: its gradient is one concatenate, not a sum of padded copies.
            pieces = jax.lax.split(buffer, sizes) if len(sizes) > 1 else [buffer]
            for i, piece in zip(indices, pieces, strict=True):
                leaves[i] = piece.reshape(layout.slots[i][1])
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
        for i, (x, (b, shape)) in enumerate(zip(leaves, layout.slots, strict=True)):
            if jnp.shape(x) != shape:
                path = _leaf_paths(layout.treedef)[i]
                raise ValueError(
                    f"Packed.repack: the leaf at {path} has shape {jnp.shape(x)}, "
                    f"the packed one {shape}"
                )
            leaves[i] = jnp.asarray(x, self._dtype(b))
        return _packed(layout, leaves)

    def _dtype(self, buffer: int) -> Any:
        return jnp.dtype(self._layout.keys[buffer].rsplit("/", 1)[-1])

    def group_labels(self, labels: Any, who: str = "Packed.group_labels") -> Packed:
        """One label per buffer, from labels for the unpacked tree (or a prefix of it).

        This is how ``partition``, ``masked`` and weight-decay masks read labels
        written for the unpacked tree. A buffer whose leaves disagree raises:
        pack with ``groups=`` the same labels.
        """
        layout = self._layout
        full = _broadcast_prefix(who, "labels", labels, layout.treedef)
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
        labels = treedef.flatten_up_to(_broadcast_prefix("pack", "groups", resolved, treedef))
    keys: list[tuple[Hashable, str]] = []  # (label, dtype) per buffer, in order of appearance
    slots = []
    for (_, x), label in zip(paths_leaves, labels, strict=True):
        key = (label, jnp.dtype(x.dtype).name)
        if key not in keys:
            keys.append(key)
        slots.append((keys.index(key), tuple(x.shape)))
    names = tuple(d if groups is None else f"{g}/{d}" for g, d in keys)
    layout = _Layout(treedef, names, tuple(slots))
    return _packed(layout, [x for _, x in paths_leaves])


def _packed(layout: _Layout, leaves: list[Any]) -> Packed:
    buffers = {
        name: jnp.concatenate([jnp.ravel(leaves[i]) for i in layout.leaves_of(b)])
        for b, name in enumerate(layout.keys)
    }
    return Packed(buffers, layout)


def spread_labels(
    labels: Any, like: Any, who: str, what: str = "labels", target: str = "params"
) -> Any:
    """``labels``, ``like``'s structure or a prefix of it, with each subtree's label on its leaves.

    Raises :class:`gradtx.TreeMismatchError` (a ``ValueError``) naming the first
    leaf of ``like`` that no label covers, or the first label with nothing under
    it, when ``labels`` is neither ``like``'s structure nor a prefix of it.

    Args:
      labels: one label (or mask bool) per leaf or per subtree of ``like``.
      like: the tree to label, e.g. the params.
      who: the caller, for the error (``"partition"``).
      what: what ``labels`` are called in the error (``"labels"``, ``"mask"``).
      target: what ``like`` is called in the error (``"params"``, ``"unpacked tree"``).
    """
    try:
        return jax.tree.map(lambda label, sub: jax.tree.map(lambda _: label, sub), labels, like)
    except (ValueError, TypeError):
        pass
    label_paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(labels)[0]]
    like_paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(like)[0]]

    def covers(prefix: tuple, path: tuple) -> bool:
        return path[: len(prefix)] == prefix

    def has(subject: str) -> str:
        return f"{subject} have" if subject.endswith("s") else f"{subject} has"

    missing = next((p for p in like_paths if not any(covers(q, p) for q in label_paths)), None)
    extra = next((q for q in label_paths if not any(covers(q, p) for p in like_paths)), None)
    below = next((p for p in like_paths if extra is not None and covers(p, extra)), None)
    plural = target.endswith("s")
    subject = target if plural else f"the {target}"
    if below is not None and extra is not None:  # a leaf is only found below an extra label
        problem = (
            f"{has(what)} a label at {checks.path_name(extra)}, inside the leaf at "
            f"{checks.path_name(below)}; label the leaf itself"
        )
    elif missing is not None:
        problem = f"{has(subject)} a leaf at {checks.path_name(missing)} and {has(what)} none"
    elif extra is not None:
        where = checks.path_name(extra)
        problem = f"{has(what)} a label at {where} and {has(subject)} no leaf there"
    else:
        problem = (
            f"their containers differ: {jax.tree.structure(like)} vs {jax.tree.structure(labels)}"
        )
    whole = "them" if plural else "it"
    raise checks.TreeMismatchError(
        f"{who}: {what} must be shaped like the {target}, or label whole subtrees of "
        f"{whole}: {problem}"
    )


def _broadcast_prefix(who: str, what: str, labels: Any, treedef: Any) -> Any:
    """``labels`` spread over the leaves of ``treedef``; a clear error if they do not fit."""
    like = jax.tree.unflatten(treedef, [0] * treedef.num_leaves)
    return spread_labels(labels, like, who, what, target="unpacked tree")


def is_label_function(labels: Any) -> bool:
    """Whether ``labels`` is a function of the params rather than a tree of labels.

    A callable pytree, such as an equinox ``Module`` of bools, is a tree: only a
    callable that ``jax.tree`` sees as one leaf (or a ``jax.tree_util.Partial``)
    is a function.
    """
    if isinstance(labels, jax.tree_util.Partial):
        return True
    return callable(labels) and jax.tree_util.treedef_is_leaf(jax.tree.structure(labels))


def labels_for(who: str, labels: Any, params: Any, what: str = "labels") -> Any:
    """Labels (or a mask) for ``params``, one per leaf: called on the unpacked tree if packed.

    ``labels`` is a tree shaped like the params, a prefix of it, or a function of
    the params returning either; a tree that fits neither raises
    :class:`gradtx.TreeMismatchError` naming the first missing or extra path.
    For packed params the result holds one label per buffer.
    """
    unpacked = params.unpack() if isinstance(params, Packed) else params
    tree = labels(unpacked) if is_label_function(labels) else labels
    if isinstance(params, Packed):
        return params.group_labels(tree, who)
    return spread_labels(tree, params, who, what)
