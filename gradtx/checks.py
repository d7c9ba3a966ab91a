"""Argument validation that never touches a tracer, and tree-mismatch errors.

Validation runs once, when a transform is built, and only on concrete values:
a hyperparameter that is a tracer (inside ``jax.vmap`` or ``jax.jit``) or a
schedule passes through unchecked, so sweeps over hyperparameters need no
special wrappers.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.core  # for jax.core.Tracer: pyright does not see jax.core after `import jax` alone
import numpy as np

# Intervals used across the library, written as they appear in error messages.
NONNEGATIVE = "[0, inf)"
POSITIVE = "(0, inf)"
DECAY = "[0, 1)"


class TreeMismatchError(ValueError):
    """Two trees that must have the same structure and shapes do not."""


@functools.cache
def _parse_interval(interval: str) -> tuple[float, float, bool, bool]:
    low, high = (s.strip() for s in interval[1:-1].split(","))
    return float(low), float(high), interval[0] == "(", interval[-1] == ")"


def is_concrete(value: Any) -> bool:
    """True when no leaf of ``value`` is a tracer, so its numbers can be checked now."""
    leaves = jax.tree.leaves(value)
    return not any(isinstance(x, jax.core.Tracer) for x in leaves)


def check_interval(who: str, name: str, value: Any, interval: str) -> None:
    """Raise ``ValueError`` if a concrete ``value`` lies outside ``interval``.

    ``interval`` is written like ``"[0, 1)"``; ``inf`` is allowed as a bound.
    ``None``, callables (schedules) and tracers are not inspected.
    """
    if value is None or callable(value) or not is_concrete(value):
        return
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{who}: {name} must be a number, an array or a schedule, got {value!r}"
        ) from None
    low, high, low_open, high_open = _parse_interval(interval)
    above = array > low if low_open else array >= low
    below = array < high if high_open else array <= high
    if not np.all(above & below):  # also rejects NaN
        bad = array if array.ndim == 0 else array[~(above & below)].flat[0]
        raise ValueError(f"{who}: {name} must be in {interval}, got {_fmt(bad)}")


def check_state_dtype(who: str, dtype: Any) -> Any:
    """Return ``dtype`` as a NumPy dtype if it is a floating dtype (or None), else raise."""
    if dtype is None:
        return None
    try:
        canonical = jax.numpy.dtype(dtype)
    except TypeError:
        canonical = None
    if canonical is None or not jax.numpy.issubdtype(canonical, jax.numpy.floating):
        raise ValueError(
            f"{who}: state_dtype must be a floating dtype such as jnp.bfloat16, got {dtype!r}"
        )
    return canonical


def check_hyperparams(who: str, **specs: tuple[Any, str]) -> None:
    """Validate several hyperparameters: ``check_hyperparams("adam", b1=(0.9, "[0, 1)"))``."""
    for name, (value, interval) in specs.items():
        check_interval(who, name, value, interval)


def _fmt(x: Any) -> str:
    x = float(x)
    return repr(int(x)) if math.isfinite(x) and x == int(x) else repr(x)


def check_trees_match(who: str, reference_name: str, reference: Any, **others: Any) -> None:
    """Check that each tree in ``others`` has ``reference``'s structure and leaf shapes.

    The check runs on Python-side structure only (free under ``jit``). On a
    mismatch the error names the first offending path and both shapes.
    """
    ref_leaves, ref_def = jax.tree.flatten(reference)
    for name, tree in others.items():
        leaves, treedef = jax.tree.flatten(tree)
        if treedef == ref_def and all(
            np.shape(a) == np.shape(b) for a, b in zip(leaves, ref_leaves, strict=True)
        ):
            continue
        raise TreeMismatchError(_describe_mismatch(who, reference_name, reference, name, tree))


def check_moments(who: str, updates: Any, state: Any, *fields: str) -> None:
    """Check that the named fields of a transform's state are shaped like ``updates``."""
    check_trees_match(who, "updates", updates, **{f"state.{f}": getattr(state, f) for f in fields})


def _describe_mismatch(who: str, name_a: str, tree_a: Any, name_b: str, tree_b: Any) -> str:
    flat_a = jax.tree_util.tree_flatten_with_path(tree_a)[0]
    flat_b = jax.tree_util.tree_flatten_with_path(tree_b)[0]
    shapes_a = {jax.tree_util.keystr(p): np.shape(x) for p, x in flat_a}
    shapes_b = {jax.tree_util.keystr(p): np.shape(x) for p, x in flat_b}
    for path, shape in shapes_a.items():
        if path not in shapes_b:
            return (
                f"{who}: {name_a} and {name_b} differ in structure: {name_a} has a leaf of shape "
                f"{shape} at {path or '<root>'}, {name_b} has none"
            )
        if shapes_b[path] != shape:
            return (
                f"{who}: {name_a} and {name_b} differ at {path or '<root>'}: "
                f"{name_a} has shape {shape}, {name_b} has shape {shapes_b[path]}"
            )
    for path, shape in shapes_b.items():
        if path not in shapes_a:
            return (
                f"{who}: {name_a} and {name_b} differ in structure: {name_b} has a leaf of shape "
                f"{shape} at {path or '<root>'}, {name_a} has none"
            )
    return (
        f"{who}: {name_a} and {name_b} have the same paths but different container types: "
        f"{jax.tree.structure(tree_a)} vs {jax.tree.structure(tree_b)}"
    )
