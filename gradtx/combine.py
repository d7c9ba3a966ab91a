"""Parameter groups: a transform per label, frozen leaves, masks, labels from path patterns.

A group's transform sees only its own leaves: the other leaves are ``None``
(an empty subtree to ``jax.tree``), so it keeps state for, and spends work on,
nothing else.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks
from gradtx.core import GradientTransformation, extras_filter, init_empty_state
from gradtx.labels import labels_for

Labels = Any | Callable[[Any], Any]


def _only(tree: Any, labels: Any, label: Hashable) -> Any:
    """``tree`` with every leaf not labelled ``label`` replaced by None."""
    return jax.tree.map(lambda x, l: x if l == label else None, tree, labels)


def _paths(labels: Any, label: Hashable) -> list[str]:
    flat = jax.tree_util.tree_flatten_with_path(labels)[0]
    return [jax.tree_util.keystr(p) for p, l in flat if l == label]


def _check_labels(who: str, labels: Any, transforms: Mapping) -> None:
    used = set(jax.tree.leaves(labels))
    missing = [l for l in used if l not in transforms]
    if missing:
        label = missing[0]
        raise ValueError(
            f"{who}: label {label!r} has no transform; it labels {_paths(labels, label)[:5]}. "
            f"Add it to the transforms (or map it to gradtx.freeze())"
        )
    idle = [l for l in transforms if l not in used]
    if idle and used:  # an empty tree leaves every transform idle, and that is fine
        raise ValueError(
            f"{who}: transform {idle[0]!r} has no leaves; labels in use are "
            f"{sorted(map(str, used))}"
        )


class PartitionState(NamedTuple):
    """State of :func:`partition` and :func:`masked`: each label's transform state."""

    inner: dict  # label -> that transform's state


def partition(transforms: Mapping[Hashable, GradientTransformation], labels: Labels):
    """Give each labelled group of leaves its own transform (torch's param groups).

    .. math:: u_i = T_{\\ell(i)}(g)_i

    Every leaf goes to exactly one transform, chosen by its label; each
    transform sees, and keeps state for, only its own leaves (the others are
    ``None`` in the trees it gets).

    Args:
      transforms: maps each label to a transform; ``freeze()`` leaves a group untouched.
      labels: a tree of labels shaped like the params, or a prefix of it (a label on
        a subtree labels all its leaves: ``["body", "head"]`` for a two-layer list), or
        a function of the params returning one (see :func:`groups_by_path`).

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.partition({"body": gradtx.sgd(0.1), "head": gradtx.sgd(1.0)},
      ...                        {"w": "body", "b": "head"})
      >>> grads = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(updates["w"], updates["b"])
      [-0.1 -0.1] [-1. -1.]

    References:
      optax: ``optax.partition`` (formerly ``optax.multi_transform``); torch: the
        ``param_groups`` of ``torch.optim.Optimizer``.
    """
    if not transforms:
        raise ValueError("partition: transforms must map at least one label to a transform")
    keep = {label: extras_filter(t.update) for label, t in transforms.items()}

    def init(params):
        tree = labels_for("partition", labels, params)
        _check_labels("partition", tree, transforms)
        return PartitionState(
            {label: t.init(_only(params, tree, label)) for label, t in transforms.items()}
        )

    def update(updates, state, params=None, **extra):
        tree = labels_for("partition", labels, updates if params is None else params)
        if params is not None:
            checks.check_trees_match("partition", "params", params, updates=updates)
        _check_labels("partition", tree, transforms)
        outputs, inner = {}, {}
        for label, t in transforms.items():
            sub_params = None if params is None else _only(params, tree, label)
            outputs[label], inner[label] = t.update(
                _only(updates, tree, label), state.inner[label], sub_params, **keep[label](extra)
            )
        # Each output holds its group's leaves in tree order: deal them back by label.
        flat_labels, treedef = jax.tree.flatten(tree)
        per_label = {label: iter(jax.tree.leaves(out)) for label, out in outputs.items()}
        leaves = [next(per_label[l]) for l in flat_labels]
        return jax.tree.unflatten(treedef, leaves), PartitionState(inner)

    return GradientTransformation(init, update)


def freeze() -> GradientTransformation:
    """Zero updates, no state (:math:`u = 0`): map a label to it to keep its params as they are.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.partition({"train": gradtx.sgd(0.1), "frozen": gradtx.freeze()},
      ...                        {"w": "train", "b": "frozen"})
      >>> grads = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(updates["w"], updates["b"])
      [-0.1 -0.1] [0. 0.]

    References:
      optax: ``optax.set_to_zero`` (``optax.transforms.freeze`` takes the mask itself).
    """

    def update(updates, state, params=None, **extra):
        return jax.tree.map(jnp.zeros_like, updates), state

    return GradientTransformation(init_empty_state, update)


def masked(transform: GradientTransformation, mask: Labels) -> GradientTransformation:
    """Apply ``transform`` where ``mask`` is True and pass the other updates through.

    Args:
      transform: run on the masked leaves only (it sees the rest as ``None``).
      mask: a tree of bools shaped like the params (or a prefix of it), or a function
        of the params.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.masked(gradtx.scale(10.0), {"w": True, "b": False})
      >>> grads = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(updates["w"], updates["b"])
      [10. 10.] [1. 1.]

    References:
      optax: ``optax.masked``.
    """

    keep = extras_filter(transform.update)

    def labels(params):
        return jax.tree.map(bool, labels_for("masked", mask, params, what="mask"))

    def pass_through(updates, state, params=None, **extra):
        return updates, state

    both = partition(
        {True: transform, False: GradientTransformation(init_empty_state, pass_through)}, labels
    )

    def init(params):
        used = set(jax.tree.leaves(labels(params)))
        if used == {True}:  # nothing to pass through: the transform sees every leaf
            return PartitionState({True: transform.init(params)})
        if used == {False} or not used:
            return PartitionState({})
        return both.init(params)

    def update(updates, state, params=None, **extra):
        if set(state.inner) == {True, False}:
            return both.update(updates, state, params, **extra)
        labels(updates if params is None else params)  # a mask that no longer fits raises
        if True in state.inner:
            new, inner = transform.update(updates, state.inner[True], params, **keep(extra))
            return new, PartitionState({True: inner})
        return updates, state

    return GradientTransformation(init, update)


@functools.lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _path_string(path: tuple) -> str:
    parts = []
    for key in path:
        for attr in ("key", "idx", "name"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def groups_by_path(patterns: Mapping[str, Hashable], params: Any, default: Hashable) -> Any:
    """A label tree from glob patterns on each leaf's path; the first match wins.

    Paths join dict keys, sequence indices and attribute names with ``/``
    (``{"encoder": [{"w": ...}]}`` has ``encoder/0/w``). ``*`` matches within
    one segment, ``**`` across segments (``**/bias`` matches every ``bias``).

    Args:
      patterns: glob pattern to label, tried in order.
      params: the parameter tree.
      default: the label of leaves that match no pattern.
    """
    compiled = [(_glob(p), label) for p, label in patterns.items()]

    def label_of(path, _):
        text = _path_string(path)
        return next((label for rx, label in compiled if rx.match(text)), default)

    return jax.tree_util.tree_map_with_path(label_of, params)
