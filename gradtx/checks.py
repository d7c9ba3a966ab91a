"""Argument validation that never touches a tracer, and tree-mismatch errors.

Validation runs once, when a transform is built, and only on concrete values:
a hyperparameter that is a tracer (inside ``jax.vmap`` or ``jax.jit``) or a
schedule passes through unchecked, so sweeps over hyperparameters need no
special wrappers.

Each hyperparameter is checked in one place: the block that uses it. A learner
builds its chain inside :func:`named`, so the blocks' errors name the learner
and the learner's argument (``"adam: b1 must be in [0, 1), got 1.5"``) without
the learner checking the value a second time.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import jax
import jax.core  # for jax.core.Tracer: pyright does not see jax.core after `import jax` alone
import numpy as np

# Intervals used across the library, written as they appear in error messages.
NONNEGATIVE = "[0, inf)"
POSITIVE = "(0, inf)"
DECAY = "[0, 1)"


class TreeMismatchError(ValueError):
    """Two trees that must have the same structure and shapes do not."""


# The names being built, outermost first: (who, {block: {block's argument: who's argument}}).
_NAMED: contextvars.ContextVar[tuple[tuple[str, Mapping[str, Mapping[str, str]]], ...]] = (
    contextvars.ContextVar("gradtx_checks_named", default=())
)


@contextlib.contextmanager
def named(who: str, /, **renames: Mapping[str, str]) -> Iterator[None]:
    """Report the checks made while building ``who`` under ``who``'s name.

    A learner builds its chain of blocks inside ``with checks.named("adam"):``;
    each block checks its own arguments as usual, and an error reads
    ``"adam: b1 ..."`` instead of ``"scale_by_adam: b1 ..."``. ``renames`` maps
    a block's argument names to the learner's where they differ:
    ``named("sgd", trace={"decay": "momentum"})``. Nested names compose, so the
    outermost one is reported (``nadam`` builds ``adam`` builds ``scale_by_adam``).
    """
    token = _NAMED.set((*_NAMED.get(), (who, renames)))
    try:
        yield
    finally:
        _NAMED.reset(token)


def require_params(
    who: str, params: Any, why: str | None = None, call: str = "update(updates, state, params)"
) -> None:
    """Raise ``ValueError`` naming ``who`` (and ``why``) unless ``update`` got the params."""
    if params is None:
        because = f" ({why})" if why else ""
        raise ValueError(f"{who}: update needs the params{because}; call {call}")


def reported_name(who: str, name: str) -> tuple[str, str]:
    """The function and argument an error about ``who``'s argument ``name`` names.

    ``(who, name)`` itself outside :func:`named`; inside, the outermost name
    being built and its argument.
    """
    for outer, renames in reversed(_NAMED.get()):
        name = renames.get(who, {}).get(name, name)
        who = outer
    return who, name


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
    who, name = reported_name(who, name)
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
        who, name = reported_name(who, "state_dtype")
        raise ValueError(
            f"{who}: {name} must be a floating dtype such as jnp.bfloat16, got {dtype!r}"
        )
    return canonical


def check_optax_dtype(who: str, name: str, dtype: Any, state_dtype: Any = None) -> Any:
    """Return optax's ``mu_dtype`` / ``accumulator_dtype`` canonical (as optax does), or raise.

    It must be a floating or complex dtype (or None), and not given together
    with gradtx's ``state_dtype``: both say how the same moment is stored.
    """
    if dtype is None:
        return None
    reported, argument = reported_name(who, name)
    if state_dtype is not None:
        raise ValueError(
            f"{reported}: give {argument} or state_dtype, not both ({argument} stores the "
            f"moment rounded to nearest, as optax; state_dtype stores every moment, rounding "
            f"bfloat16 stochastically)"
        )
    try:
        canonical = jax.numpy.dtype(dtype)
    except TypeError:
        canonical = None
    if canonical is None or not jax.numpy.issubdtype(canonical, jax.numpy.inexact):
        raise ValueError(
            f"{reported}: {argument} must be a floating or complex dtype such as "
            f"jnp.bfloat16, got {dtype!r}"
        )
    return jax.dtypes.canonicalize_dtype(canonical)


def check_hyperparams(who: str, **specs: tuple[Any, str]) -> None:
    """Validate several hyperparameters: ``check_hyperparams("adam", b1=(0.9, "[0, 1)"))``."""
    for name, (value, interval) in specs.items():
        check_interval(who, name, value, interval)


def check_at_most(who: str, name: str, value: Any, bound_name: str, bound: Any) -> None:
    """Raise ``ValueError`` if the concrete argument ``value`` exceeds the argument ``bound``."""
    if callable(value) or callable(bound) or not is_concrete((value, bound)):
        return
    if float(value) <= float(bound):
        return
    reported, name = reported_name(who, name)
    _, bound_name = reported_name(who, bound_name)
    raise ValueError(
        f"{reported}: {name} must be at most {bound_name}, "
        f"got {name}={value} > {bound_name}={bound}"
    )


def check_length(
    who: str,
    name: str,
    value: Any,
    allow_zero: bool = False,
    at_most: int | None = None,
    *,
    at_least: int | None = None,
    wording: Literal["steps", "integer", "positive"] = "steps",
    or_none: bool = False,
) -> int:
    """Return ``value`` as a Python ``int`` if it is a whole number in range, else raise.

    The one check for integer arguments: lengths in steps, periods, counts,
    sizes. Python and NumPy integers and whole floats (``10.0``) pass; bools,
    other floats, arrays and strings do not. The smallest valid value is 1,
    0 with ``allow_zero``, or ``at_least``; ``at_most`` bounds a value that is
    kept in an int32 counter (a state field).

    ``wording`` only chooses how the error reads: ``"steps"`` (``"linear:
    transition_steps must be an integer number of steps, got 2.5"`` or ``"... must
    be > 0, got 0"``), ``"integer"`` (``"accumulate: every_k must be an integer
    >= 1, got 0"``) or ``"positive"`` (``"... must be a positive integer, got 0"``).
    ``or_none`` adds " or None" for a caller that also takes ``None`` (and
    handles it before calling).
    """
    low = at_least if at_least is not None else 0 if allow_zero else 1
    who, name = reported_name(who, name)
    if wording == "steps":
        expected = "an integer number of steps"
    elif wording == "integer":
        expected = f"an integer >= {low}"
    else:
        expected = "a positive integer" if low == 1 else f"an integer >= {low}"
    expected += " or None" if or_none else ""

    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        if not (isinstance(value, float) and value.is_integer()):
            raise ValueError(f"{who}: {name} must be {expected}, got {value!r}")
    number = int(value)
    if number < low:
        if wording == "steps":
            bound = "> 0" if low == 1 else f">= {low}"
            raise ValueError(f"{who}: {name} must be {bound}, got {number}")
        raise ValueError(f"{who}: {name} must be {expected}, got {number}")
    if at_most is not None and number > at_most:
        raise ValueError(
            f"{who}: {name} must be <= {at_most} (it is kept in an int32 counter), got {number}"
        )
    return number


def _fmt(x: Any) -> str:
    x = float(x)
    return repr(int(x)) if math.isfinite(x) and x == int(x) else repr(x)


def path_name(path: tuple) -> str:
    """A leaf's path as errors write it: ``['layer'][0]``, or ``<root>`` for the whole tree."""
    return jax.tree_util.keystr(path) or "<root>"


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
