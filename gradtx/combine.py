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
from gradtx.labels import is_label_function, labels_for

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
            f"Add it to the transforms (or map it to gradtx.set_to_zero())"
        )
    idle = [l for l in transforms if l not in used]
    if idle and used:  # an empty tree leaves every transform idle, and that is fine
        raise ValueError(
            f"{who}: transform {idle[0]!r} has no leaves; labels in use are "
            f"{sorted(map(str, used))}"
        )


class MaskedState(NamedTuple):
    """State of :func:`masked`: the inner transform's, kept for the masked leaves only."""

    inner_state: Any


class PartitionState(NamedTuple):
    """State of :func:`partition`: each label's :class:`MaskedState`, as in optax."""

    inner_states: dict  # label -> MaskedState(that transform's state)


def _merge(labels: Any, outputs: Mapping[Hashable, Any]) -> Any:
    """One tree from each label's output, which holds that label's leaves in tree order."""
    flat_labels, treedef = jax.tree.flatten(labels)
    per_label = {label: iter(jax.tree.leaves(out)) for label, out in outputs.items()}
    return jax.tree.unflatten(treedef, [next(per_label[l]) for l in flat_labels])


def _masked_extras(extra: dict, updates: Any, tree: Any, label: Hashable) -> dict:
    """The extras shaped like the updates, cut to the leaves labelled ``label``."""
    structure = jax.tree.structure(updates)
    return {
        k: _only(v, tree, label) if jax.tree.structure(v) == structure else v
        for k, v in extra.items()
    }


def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Labels,
    *,
    mask_compatible_extra_args: bool = False,
):
    """Give each labelled group of leaves its own transform (torch's param groups).

    .. math:: u_i = T_{\\ell(i)}(g)_i

    Every leaf goes to exactly one transform, chosen by its label; each
    transform sees, and keeps state for, only its own leaves (the others are
    ``None`` in the trees it gets).

    Args:
      transforms: maps each label to a transform; ``set_to_zero()`` leaves a group untouched.
      param_labels: a tree of labels shaped like the params, or a prefix of it (a label
        on a subtree labels all its leaves: ``["body", "head"]`` for a two-layer list), or
        a function of the params returning one (see :func:`groups_by_path`).
      mask_compatible_extra_args: also cut every keyword extra shaped like the updates
        to each group's leaves.

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
        tree = labels_for("partition", param_labels, params)
        _check_labels("partition", tree, transforms)
        return PartitionState(
            {
                label: MaskedState(t.init(_only(params, tree, label)))
                for label, t in transforms.items()
            }
        )

    def update(updates, state, params=None, **extra):
        tree = labels_for("partition", param_labels, updates if params is None else params)
        if params is not None:
            checks.check_trees_match("partition", "params", params, updates=updates)
        _check_labels("partition", tree, transforms)
        outputs, inner = {}, {}
        for label, t in transforms.items():
            sub_params = None if params is None else _only(params, tree, label)
            given = (
                _masked_extras(extra, updates, tree, label) if mask_compatible_extra_args else extra
            )
            outputs[label], new = t.update(
                _only(updates, tree, label),
                state.inner_states[label].inner_state,
                sub_params,
                **keep[label](given),
            )
            inner[label] = MaskedState(new)
        return _merge(tree, outputs), PartitionState(inner)

    return GradientTransformation(init, update)


multi_transform = partition  # optax's earlier name, which optax still exports


def set_to_zero() -> GradientTransformation:
    """Zero updates, no state (:math:`u = 0`): map a label to it to keep its params as they are.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.partition({"train": gradtx.sgd(0.1), "frozen": gradtx.set_to_zero()},
      ...                        {"w": "train", "b": "frozen"})
      >>> grads = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(updates["w"], updates["b"])
      [-0.1 -0.1] [0. 0.]

    References:
      optax: ``optax.set_to_zero``.
    """

    def update(updates, state, params=None, **extra):
        return jax.tree.map(jnp.zeros_like, updates), state

    return GradientTransformation(init_empty_state, update)


def freeze(mask: Labels) -> GradientTransformation:
    """Zero the updates where ``mask`` is True, pass the others: :math:`u_i = [\\neg m_i]\\, g_i`.

    ``masked(set_to_zero(), mask)``: frozen params stay as they are, the other
    updates are left for the rest of a chain.

    Args:
      mask: True to freeze: one bool for the whole tree, a tree of bools shaped
        like the params (or a prefix of it), or a function of the params returning one.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.chain(gradtx.freeze({"w": False, "b": True}), gradtx.scale(0.5))
      >>> grads = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(updates["w"], updates["b"])
      [0.5 0.5] [0. 0.]

    References:
      optax: ``optax.freeze``.
    """
    return masked(set_to_zero(), mask)


def selective_transform(
    optimizer: GradientTransformation, *, freeze_mask: Any
) -> GradientTransformation:
    """Run ``optimizer`` on the leaves ``freeze_mask`` leaves unfrozen and zero the frozen ones.

    .. math:: u_i = \\begin{cases} 0 & m_i \\\\ T(g)_i & \\text{otherwise} \\end{cases}

    Unlike :func:`freeze` before a learner, ``optimizer`` keeps no state for,
    and spends no work on, the frozen leaves (a :func:`partition` into
    ``"train"`` and ``"freeze"``).

    Args:
      optimizer: the transform of the trained leaves.
      freeze_mask: True to freeze: one bool for the whole tree, or a tree of bools
        shaped like the params (or a prefix of it).

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.selective_transform(gradtx.sgd(0.1), freeze_mask={"w": False, "b": True})
      >>> grads = {"w": jnp.ones(2), "b": jnp.ones(2)}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(updates["w"], updates["b"])
      [-0.1 -0.1] [0. 0.]

    References:
      optax: ``optax.selective_transform``.
    """
    if is_label_function(freeze_mask):
        # optax would take the function for one truthy leaf and freeze every param.
        raise ValueError(
            "selective_transform: freeze_mask must be a bool or a tree of bools, got a function; "
            "call it on the params first, or use gradtx.freeze(fn) before the optimizer"
        )
    frozen = {bool(m) for m in jax.tree.leaves(freeze_mask)}
    # partition refuses a label with no leaves, so a mask that is all one way is that one transform.
    if frozen == {True}:
        return set_to_zero()
    if frozen != {False, True}:
        return optimizer
    labels = jax.tree.map(lambda m: "freeze" if m else "train", freeze_mask)
    return partition({"train": optimizer, "freeze": set_to_zero()}, labels)


def masked(
    inner: GradientTransformation, mask: Labels, *, mask_compatible_extra_args: bool = False
) -> GradientTransformation:
    """Apply ``inner`` where ``mask`` is True and pass the other updates through.

    Args:
      inner: run on the masked leaves only (it sees the rest as ``None``).
      mask: a tree of bools shaped like the params (or a prefix of it), or a function
        of the params.
      mask_compatible_extra_args: also cut every keyword extra shaped like the updates
        to the masked leaves.

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

    keep = extras_filter(inner.update)

    def labels(params):
        return jax.tree.map(bool, labels_for("masked", mask, params, what="mask"))

    def init(params):
        # With no leaf masked, inner sees none: its state is that of an empty tree.
        return MaskedState(inner.init(_only(params, labels(params), True)))

    def update(updates, state, params=None, **extra):
        tree = labels(updates if params is None else params)
        if params is not None:
            checks.check_trees_match("masked", "params", params, updates=updates)
        given = _masked_extras(extra, updates, tree, True) if mask_compatible_extra_args else extra
        new, inner_state = inner.update(
            _only(updates, tree, True),
            state.inner_state,
            None if params is None else _only(params, tree, True),
            **keep(given),
        )
        passed = _only(updates, tree, False)
        return _merge(tree, {True: new, False: passed}), MaskedState(inner_state)

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
