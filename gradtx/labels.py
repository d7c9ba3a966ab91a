"""Labels and masks for params: one per leaf, from a tree, a prefix of it, or a function.

``partition``, ``masked`` and weight-decay masks read their labels here, in
one way: :func:`labels_for`. A container that keeps params in leaves of its own
(:class:`gradtx.Packed`) answers for them through :func:`register_container`,
so no transform needs to know it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from gradtx import checks


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
    """Labels (or a mask) for ``params``, one per leaf, as ``partition`` and ``masked`` read them.

    ``labels`` is a tree shaped like the params, a prefix of it, or a function of
    the params returning either; a tree that fits neither raises
    :class:`gradtx.TreeMismatchError` naming the first missing or extra path.
    For a container registered with :func:`register_container` (a
    :class:`gradtx.Packed`), a function is called on the tree it holds, and
    the result has one label per leaf of the container.
    """
    container = _CONTAINERS.get(type(params))
    held = params if container is None else container.unpack(params)
    tree = labels(held) if is_label_function(labels) else labels
    if container is not None:
        return container.relabel(params, tree, who)
    return spread_labels(tree, params, who, what)


class _Container(NamedTuple):
    unpack: Callable[[Any], Any]  # the container -> the tree of params it holds
    relabel: Callable[[Any, Any, str], Any]  # (container, labels for that tree, who) -> its own


_CONTAINERS: dict[type, _Container] = {}


def register_container(
    kind: type, unpack: Callable[[Any], Any], relabel: Callable[[Any, Any, str], Any]
) -> None:
    """Let labels written for the params a ``kind`` holds apply to the container's own leaves.

    Args:
      kind: a pytree class that holds params in leaves of its own, e.g. :class:`gradtx.Packed`.
      unpack: ``container -> params``, the tree users write labels for.
      relabel: ``(container, labels, who) -> labels``, one per leaf of the container;
        raises naming ``who`` where the labels cannot apply.
    """
    _CONTAINERS[kind] = _Container(unpack, relabel)
