"""Run a transform on small leaves packed into one buffer per dtype.

Per-leaf optimizers cost per leaf, not per byte, once leaves are small: a tree
of 1000 vectors of 16 floats makes XLA compile and dispatch thousands of tiny
kernels. :func:`grouped` packs every small floating leaf into one flat buffer
per dtype, so the wrapped transform's arithmetic (and its state) is a handful
of arrays whatever the leaf count, and unpacks the updates at the end.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks, tree
from gradtx.core import GradientTransformation, extras_filter

# Leaves up to this many elements are packed; larger ones pay for their own kernels.
MAX_LEAF_SIZE = 4096
# Unpacking reads leaf j of a chunk at ``base + j * size``: XLA then compiles one kernel
# per (shape, j) and shares it between chunks, instead of one kernel per leaf.
CHUNK = 32


class GroupedState(NamedTuple):
    """The wrapped transform's state over the packed tree, and where each chunk starts."""

    inner: Any  # the wrapped transform's state, over the packed tree
    # Start offset of each chunk in its buffer. Runtime values on purpose: constant
    # offsets would give every leaf its own compiled kernel.
    bases: tuple[jax.Array, ...]


@dataclasses.dataclass(frozen=True)
class _Chunk:
    dtype: str
    start: int  # offset of the chunk's first element in its dtype's buffer
    shape: tuple[int, ...]
    leaves: tuple[int, ...]  # flat indices of the chunk's leaves, in order


@dataclasses.dataclass(frozen=True)
class _Layout:
    num_leaves: int
    loose: tuple[int, ...]  # leaves passed through unpacked: large, not floating, or split
    chunks: tuple[_Chunk, ...]
    sizes: tuple[tuple[str, int], ...]  # total packed elements per dtype


@functools.lru_cache(maxsize=256)
def _layout(signature: tuple[tuple[tuple[int, ...], str, bool], ...], max_size: int) -> _Layout:
    loose, small = [], {}
    for i, (shape, dtype, split) in enumerate(signature):
        # A leaf split across devices stays whole: packing would gather it onto each device.
        small_float = jnp.issubdtype(dtype, jnp.floating) and int(np.prod(shape)) <= max_size
        packable = small_float and not split
        if packable:
            small.setdefault(dtype, []).append(i)
        else:
            loose.append(i)
    chunks, sizes = [], []
    for dtype, indices in small.items():
        offset = 0
        # Same-shape leaves side by side, so that chunks hold one shape each.
        indices.sort(key=lambda i: (signature[i][0], i))
        run: list[int] = []
        for i in indices + [None]:
            if run and (i is None or signature[i][0] != signature[run[0]][0] or len(run) == CHUNK):
                shape = signature[run[0]][0]
                chunks.append(_Chunk(dtype, offset, shape, tuple(run)))
                offset += len(run) * int(np.prod(shape))
                run = []
            if i is not None:
                run.append(i)
        sizes.append((dtype, offset))
    return _Layout(len(signature), tuple(loose), tuple(chunks), tuple(sizes))


def _signature(leaves: list[Any]) -> tuple[tuple[tuple[int, ...], str, bool], ...]:
    return tuple((tuple(np.shape(x)), jnp.result_type(x).name, tree.is_split(x)) for x in leaves)


def _pack(layout: _Layout, leaves: list[Any]) -> dict[str, Any]:
    pieces: dict[str, list[jax.Array]] = {dtype: [] for dtype, _ in layout.sizes}
    for chunk in layout.chunks:
        pieces[chunk.dtype].extend(jnp.ravel(leaves[i]) for i in chunk.leaves)
    return {
        "loose": [leaves[i] for i in layout.loose],
        "packed": {dtype: jnp.concatenate(parts) for dtype, parts in pieces.items()},
    }


def _unpack(layout: _Layout, tree: dict[str, Any], bases: tuple[jax.Array, ...]) -> list[Any]:
    out: list[Any] = [None] * layout.num_leaves
    for i, x in zip(layout.loose, tree["loose"], strict=True):
        out[i] = x
    for chunk, base in zip(layout.chunks, bases, strict=True):
        size = int(np.prod(chunk.shape))
        buffer = tree["packed"][chunk.dtype]
        for j, i in enumerate(chunk.leaves):
            piece = jax.lax.dynamic_slice(buffer, (base + j * size,), (size,))
            out[i] = piece.reshape(chunk.shape)
    return out


def grouped(transform: GradientTransformation, max_leaf_size: int = MAX_LEAF_SIZE):
    """Run ``transform`` on small leaves packed into one flat buffer per dtype.

    Every floating leaf with at most ``max_leaf_size`` elements is raveled and
    concatenated with the others of its dtype; larger leaves and non-floating
    leaves pass to ``transform`` as they are. ``transform`` sees the tree
    ``{"loose": [...], "packed": {dtype: buffer}}`` for updates and params, keeps
    its state over that tree, and its updates are cut back into the original
    structure. The result equals running ``transform`` leaf by leaf (up to the
    summation order of global reductions such as ``clip_by_global_norm``).

    Use it around transforms that treat every coordinate alike apart from global
    reductions (all of gradtx's learners and blocks); a transform that needs the
    original tree (a weight-decay ``mask`` given as a tree, per-layer norms)
    belongs outside it.

    Args:
      transform: the transform to run on the packed tree.
      max_leaf_size: leaves with more elements stay unpacked: their own kernels
        cost little next to their memory traffic, and packing would copy them.
    """
    max_leaf_size = checks.check_length(
        "grouped", "max_leaf_size", max_leaf_size, allow_zero=True, wording="integer"
    )
    keep = extras_filter(transform.update)

    def layout_of(tree: Any) -> tuple[_Layout, list[Any], Any]:
        leaves, treedef = jax.tree.flatten(tree)
        return _layout(_signature(leaves), max_leaf_size), leaves, treedef

    def init(params):
        layout, leaves, _ = layout_of(params)
        bases = tuple(jnp.asarray(chunk.start, jnp.int32) for chunk in layout.chunks)
        return GroupedState(transform.init(_pack(layout, leaves)), bases)

    def update(updates, state, params=None, **extra):
        if params is not None:
            checks.check_trees_match("grouped", "updates", updates, params=params)
        layout, leaves, treedef = layout_of(updates)
        if len(state.bases) != len(layout.chunks):
            raise ValueError(
                f"grouped: the state was made for a tree packed into {len(state.bases)} chunks, "
                f"but these updates pack into {len(layout.chunks)}; call init with params of "
                f"the same structure, shapes and dtypes as the updates"
            )
        packed_params = None if params is None else _pack(layout, jax.tree.leaves(params))
        new, inner = transform.update(
            _pack(layout, leaves), state.inner, packed_params, **keep(extra)
        )
        return jax.tree.unflatten(treedef, _unpack(layout, new, state.bases)), GroupedState(
            inner, state.bases
        )

    return GradientTransformation(init, update)
