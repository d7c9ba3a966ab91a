"""Leaves laid out in flat buffers: the one layout that ``pack`` and ``packed`` share.

A :class:`Layout` gives each leaf of a tree either a slot in a flat buffer
(which buffer, where in it, what shape) or none, in which case the leaf stays
an array of its own. Each buffer holds one dtype. :func:`gradtx.pack` keeps
params in such buffers for a whole run; :func:`gradtx.packed` packs small
leaves into them inside each step. Both lay leaves out here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# Leaves that XLA handles together: one fused kernel call (gradtx.fused_update) starts as
# soon as its leaves' gradients exist, and one unpacking kernel is shared between the
# same-shape runs of this many leaves (gradtx.packed), instead of one kernel per leaf.
LEAVES_PER_RUN = 32


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one leaf lives: its buffer, its offset in the buffer and its shape."""

    buffer: int
    offset: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where each leaf of a tree lives; static and hashable, so it can key jit's cache."""

    treedef: Any
    keys: tuple[str, ...]  # one name per buffer
    slots: tuple[Slot | None, ...]  # one per leaf; None: the leaf stays an array of its own

    def leaves_of(self, buffer: int) -> list[int]:
        """The leaves stored in ``buffer``, by offset."""
        inside = [i for i, s in enumerate(self.slots) if s is not None and s.buffer == buffer]
        return sorted(inside, key=lambda i: self.slot(i).offset)

    def loose(self) -> list[int]:
        """The leaves that stay arrays of their own, in tree order."""
        return [i for i, s in enumerate(self.slots) if s is None]

    def size(self, buffer: int) -> int:
        return sum(self.slot(i).size for i in self.leaves_of(buffer))

    def runs(self, buffer: int) -> list[list[int]]:
        """``buffer``'s leaves in runs of one shape, at most :data:`LEAVES_PER_RUN` each."""
        runs: list[list[int]] = []
        for i in self.leaves_of(buffer):
            run = runs[-1] if runs else []
            if run and self.slot(run[0]).shape == self.slot(i).shape and len(run) < LEAVES_PER_RUN:
                run.append(i)
            else:
                runs.append([i])
        return runs

    def concatenate(self, leaves: Sequence[Any]) -> list[jax.Array]:
        """The buffers, in order, from the tree's leaves."""
        return [
            jnp.concatenate([jnp.ravel(leaves[i]) for i in self.leaves_of(b)])
            for b in range(len(self.keys))
        ]

    def slot(self, leaf: int) -> Slot:
        """Where ``leaf`` lives, for a leaf that is in a buffer."""
        slot = self.slots[leaf]
        if slot is None:
            raise ValueError(f"gradtx.buffers: leaf {leaf} is not in a buffer")
        return slot


def lay_out(
    treedef: Any,
    shapes: Sequence[tuple[int, ...]],
    keys: Sequence[str | None],
    order: Callable[[int], Any] = lambda i: i,
) -> Layout:
    """Lay out leaves by buffer key: leaf ``i`` goes to the buffer named ``keys[i]``.

    Args:
      treedef: the tree's structure.
      shapes: each leaf's shape.
      keys: each leaf's buffer name (buffers in order of first appearance), or
        None for a leaf that stays an array of its own.
      order: a sort key for the leaves within a buffer (tree order by default).
    """
    names = list(dict.fromkeys(k for k in keys if k is not None))
    slots: list[Slot | None] = [None] * len(keys)
    for b, name in enumerate(names):
        offset = 0
        for i in sorted((i for i, k in enumerate(keys) if k == name), key=order):
            slots[i] = Slot(b, offset, tuple(shapes[i]))
            offset += int(np.prod(shapes[i]))
    return Layout(treedef, tuple(names), tuple(slots))
