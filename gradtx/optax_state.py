"""Carry a run between optax and gradtx: an optax state as a gradtx state, and back.

:func:`from_optax_state` fills ``learner.init(params)`` (a gradtx learner) with the
values of an optax state of the same learner; :func:`to_optax_state` fills
``optax_learner.init(params)`` with a gradtx state's. Both walk the two states
together and match their parts by name, never by position in the other library's
tree: a NamedTuple by its type name and field names, a dict (a partition's labels,
injected hyperparameters) by its keys, a chain's tuple by the type names of the
blocks that hold arrays, nested chains flattened (a block with no arrays, such as
``EmptyState``, carries nothing). A ``MaskedState`` one library keeps and the other
does not is looked through, and optax's ``MaskedNode`` is gradtx's ``None``. Each value
is cast to the target's dtype (optax keeps a complex leaf's second moment complex, gradtx real).

The fields only gradtx keeps are the step counts of :func:`gradtx.trace` and
:func:`gradtx.scale_by_optimistic_gradient` (for a momentum or ``alpha`` schedule,
which optax takes as numbers only). Going to gradtx they are the number of steps
taken: ``step`` where given, else the one value of the optax state's ``count``
fields; going to optax they are dropped.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import jax
import numpy as np

from gradtx.core import GradientTransformation

__all__ = ["from_optax_state", "to_optax_state"]

# State type -> its fields only gradtx keeps: step counts, filled from the step number.
GRADTX_ONLY_FIELDS = {
    "TraceState": ("count",),
    "ScaleByOptimisticGradientState": ("count",),
}


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _is_masked_node(x: Any) -> bool:
    """optax's placeholder for a masked-out leaf (duck-typed: gradtx never imports optax)."""
    return _is_namedtuple(x) and type(x).__name__ == "MaskedNode" and not x._fields


def _is_masked_state(x: Any) -> bool:
    return _is_namedtuple(x) and type(x).__name__ == "MaskedState" and "inner_state" in x._fields


def _has_arrays(x: Any) -> bool:
    """Whether ``x`` holds arrays, counting masked-out leaves (None, MaskedNode) as arrays."""
    return bool(jax.tree.leaves(x, is_leaf=lambda y: y is None or _is_masked_node(y)))


def _is_chain(x: Any) -> bool:
    """A chain's tuple of states (not a params-shaped list): it holds a state NamedTuple."""
    return (
        isinstance(x, tuple)
        and not _is_namedtuple(x)
        and any((_is_namedtuple(y) and not _is_masked_node(y)) or _is_chain(y) for y in x)
    )


def _blocks(chain: Any, path: str) -> list[tuple[str, Any]]:
    """The states in ``chain`` (nested chains flattened) that hold arrays, by their paths."""
    found = []
    for i, x in enumerate(chain):
        if _is_chain(x):
            found += _blocks(x, f"{path}[{i}]")
        elif _has_arrays(x):
            found.append((f"{path}[{i}]", x))
    return found


def _rebuilt(chain: Any, path: str, converted: dict[str, Any]) -> Any:
    """``chain`` with the states at the paths of ``converted`` replaced."""
    return type(chain)(
        _rebuilt(x, f"{path}[{i}]", converted) if _is_chain(x)
        else converted.get(f"{path}[{i}]", x)
        for i, x in enumerate(chain)
    )  # fmt: skip


def _block_name(x: Any) -> str:
    """What a chain member is matched by: its state's type name, masks looked through."""
    while _is_masked_state(x):
        x = x.inner_state
    return type(x).__name__


def _describe(x: Any) -> str:
    if _is_namedtuple(x):
        return f"{type(x).__name__}{tuple(x._fields)}"
    if isinstance(x, dict):
        return f"a dict with keys {sorted(map(str, x))}"
    if isinstance(x, list | tuple):
        return f"a {type(x).__name__} of {len(x)}"
    if x is None or _is_masked_node(x):
        return "a masked-out leaf"
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"an array of shape {tuple(x.shape)} {x.dtype}"
    return type(x).__name__


class _Walk(NamedTuple):
    who: str
    source_name: str
    target_name: str
    fill_count: Any  # (target path) -> the step count, for a gradtx-only count field

    def error(self, source_path: str, target_path: str, message: str) -> ValueError:
        return ValueError(
            f"{self.who}: {self.source_name}{source_path} does not match "
            f"{self.target_name}{target_path}: {message}"
        )

    def convert(self, source: Any, target: Any, sp: str, tp: str) -> Any:
        """``target``'s structure and dtypes holding ``source``'s values."""
        if _is_masked_state(source) and not _is_masked_state(target):
            return self.convert(source.inner_state, target, f"{sp}.inner_state", tp)
        if _is_masked_state(target) and not _is_masked_state(source):
            inner = self.convert(source, target.inner_state, sp, f"{tp}.inner_state")
            return target._replace(inner_state=inner)
        if target is None or _is_masked_node(target):
            if source is None or _is_masked_node(source):
                return target
            raise self.error(sp, tp, f"expected a masked-out leaf, found {_describe(source)}")
        if source is None or _is_masked_node(source):
            raise self.error(sp, tp, f"expected {_describe(target)}, found a masked-out leaf")
        if _is_namedtuple(target):
            return self.namedtuple(source, target, sp, tp)
        if isinstance(target, dict):
            if not isinstance(source, dict) or set(source) != set(target):
                raise self.error(sp, tp, f"expected {_describe(target)}, found {_describe(source)}")
            return {
                k: self.convert(source[k], v, f"{sp}[{k!r}]", f"{tp}[{k!r}]")
                for k, v in target.items()
            }
        if isinstance(target, list | tuple):
            return self.sequence(source, target, sp, tp)
        return self.leaf(source, target, sp, tp)

    def namedtuple(self, source: Any, target: Any, sp: str, tp: str) -> Any:
        name = type(target).__name__
        if not _is_namedtuple(source) or type(source).__name__ != name:
            raise self.error(sp, tp, f"expected {_describe(target)}, found {_describe(source)}")
        only = set(GRADTX_ONLY_FIELDS.get(name, ()))
        unknown = [f for f in source._fields if f not in target._fields and f not in only]
        if unknown:
            raise self.error(
                sp, tp, f"{name} has field {unknown[0]!r} here only, expected {_describe(target)}"
            )
        fields = {}
        for field in target._fields:
            value, where = getattr(target, field), f"{tp}.{field}"
            if field in source._fields:
                fields[field] = self.convert(getattr(source, field), value, f"{sp}.{field}", where)
            elif field in only:
                fields[field] = self.leaf(np.asarray(self.fill_count(where)), value, sp, where)
            else:
                raise self.error(
                    sp, tp, f"{name} has no field {field!r} here, expected {_describe(target)}"
                )
        return type(target)(**fields)

    def sequence(self, source: Any, target: Any, sp: str, tp: str) -> Any:
        if not isinstance(source, list | tuple) or _is_namedtuple(source):
            raise self.error(sp, tp, f"expected {_describe(target)}, found {_describe(source)}")
        if not _is_chain(target):  # a params-shaped list: there, position is identity
            if len(source) != len(target) or _is_chain(source):
                raise self.error(sp, tp, f"expected {_describe(target)}, found {_describe(source)}")
            return type(target)(
                self.convert(x, y, f"{sp}[{i}]", f"{tp}[{i}]")
                for i, (x, y) in enumerate(zip(source, target, strict=True))
            )
        # A chain's states (chains of chains flattened): the blocks that hold arrays, in
        # order, matched by their state's type names.
        held, wanted = _blocks(source, sp), _blocks(target, tp)
        names = [_block_name(x) for _, x in held], [_block_name(y) for _, y in wanted]
        if names[0] != names[1]:
            raise self.error(sp, tp, f"expected the chain of states {names[1]}, found {names[0]}")
        converted = {
            path: self.convert(x, y, where, path)
            for (where, x), (path, y) in zip(held, wanted, strict=True)
        }
        return _rebuilt(target, tp, converted)

    def leaf(self, source: Any, target: Any, sp: str, tp: str) -> Any:
        is_number = isinstance(source, int | float | complex | bool | np.generic)
        if isinstance(source, dict | list | tuple) or not (hasattr(source, "shape") or is_number):
            raise self.error(sp, tp, f"expected {_describe(target)}, found {_describe(source)}")
        if _is_key(target) or _is_key(source):  # a typed PRNG key: its raw data, then rewrapped
            data = jax.random.key_data(cast(Any, source)) if _is_key(source) else source
            raw = jax.random.key_data(cast(Any, target)) if _is_key(target) else target
            value = self.leaf(data, raw, sp, tp)
            if not _is_key(target):
                return value
            return jax.random.wrap_key_data(value, impl=jax.random.key_impl(target))
        value: Any = np.asarray(source)
        dtype = _dtype(target)
        if value.shape != np.shape(target):
            raise self.error(sp, tp, f"expected {_describe(target)}, found {_describe(value)}")
        if np.iscomplexobj(value) and not np.issubdtype(dtype, np.complexfloating):
            if np.any(value.imag != 0):
                raise self.error(sp, tp, f"a real {dtype} cannot hold the complex values found")
            value = value.real
        value = value.astype(dtype)
        if isinstance(target, jax.Array) and target.weak_type and not value.shape:
            value = jax.lax.full_like(target, value)  # weakly typed as init's
        if getattr(target, "committed", False):  # placed by init: placed alike (sharded, say)
            return jax.device_put(value, target.sharding)
        return jax.numpy.asarray(value)  # uncommitted as init's, so a jitted update reuses its code


def _dtype(x: Any) -> np.dtype:
    return np.dtype(x.dtype) if hasattr(x, "dtype") else np.result_type(x)


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.numpy.issubdtype(x.dtype, jax.dtypes.prng_key)


def _counts(state: Any) -> set[int]:
    """The values of every integer scalar ``count`` field in ``state``."""
    found = set()
    for path, leaf in jax.tree_util.tree_flatten_with_path(state, is_leaf=_is_masked_node)[0]:
        last = path[-1] if path else None
        if getattr(last, "name", None) == "count" and np.ndim(leaf) == 0:
            if np.issubdtype(_dtype(leaf), np.integer):
                found.add(int(leaf))
    return found


def from_optax_state(
    learner: GradientTransformation, optax_state: Any, params: Any, *, step: int | None = None
) -> Any:
    """The state of the gradtx ``learner`` that continues an optax run from ``optax_state``.

    ``learner`` is the gradtx learner built with the optax learner's arguments
    (``gradtx.adam(1e-3)`` for ``optax.adam(1e-3)``, ``gradtx.contrib.muon`` for
    ``optax.contrib.muon``), ``params`` the params the run has now. The result is
    ``learner.init(params)`` holding the optax state's values, found by name: each
    NamedTuple by its type name and fields, dicts by key, a chain's blocks by their
    state's type names (see the module's docstring). The next gradtx update is then
    the optax learner's next update: bit for bit where gradtx computes as optax does.

    The step counts that only gradtx keeps (``TraceState.count``, for SGD's or
    RMSprop's momentum; ``ScaleByOptimisticGradientState.count``) are ``step``, the
    number of updates optax made, or, without it, the one value all of the optax
    state's ``count`` fields agree on.

    Args:
      learner: the gradtx learner matching the optax learner.
      optax_state: the optax learner's state (from its ``update``, or a restored
        checkpoint of it); arrays may be JAX or NumPy.
      params: the params to continue from.
      step: the number of updates optax made, where ``learner`` keeps a count that
        optax's state has no value for.

    Returns:
      The learner's state, of ``learner.init(params)``'s structure and dtypes.

    Raises:
      ValueError: naming the path in both states and what was expected there, where
        the states do not match (a learner built with other arguments, another
        learner), or a count gradtx keeps has no value.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> import optax
      >>> import gradtx
      >>> from gradtx.optax_state import from_optax_state
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> theirs = optax.adam(0.1)  # three steps in optax
      >>> optax_state = theirs.init(params)
      >>> for _ in range(3):
      ...     _, optax_state = theirs.update({"w": jnp.array([0.5, -1.0])}, optax_state)
      >>> ours = gradtx.adam(0.1)
      >>> state = from_optax_state(ours, optax_state, params)
      >>> print(int(state[0].count), np.asarray(state[0].mu["w"]))
      3 [ 0.1355 -0.271 ]
      >>> updates, state = ours.update({"w": jnp.array([0.5, -1.0])}, state, params)

    References:
      optax: the state NamedTuples of each ``optax`` and ``optax.contrib`` learner.
    """

    def fill_count(where: str) -> int:
        if step is not None:
            return int(np.minimum(step, np.iinfo(np.int32).max))
        counts = _counts(optax_state)
        if len(counts) == 1:
            return counts.pop()
        found = f"its count fields disagree ({sorted(counts)})" if counts else "it keeps none"
        raise ValueError(
            f"from_optax_state: the learner keeps a step count at state{where} that optax's "
            f"state has no value for, and {found}: pass step=, the number of updates made by the "
            f"learner that holds it (its count in optax; MultiSteps' gradient_step)"
        )

    _check_step(step)
    walk = _Walk("from_optax_state", "optax_state", "state", fill_count)
    return walk.convert(optax_state, learner.init(params), "", "")


def to_optax_state(optax_learner: Any, state: Any, params: Any) -> Any:
    """The state of ``optax_learner`` that continues a gradtx run from ``state``.

    The reverse of :func:`from_optax_state`: ``optax_learner`` is the optax learner
    (an ``optax.GradientTransformation``; gradtx does not import optax, it calls the
    learner's ``init``) built with the gradtx learner's arguments. The result is
    ``optax_learner.init(params)`` holding ``state``'s values, matched by name; the
    step counts only gradtx keeps are dropped (optax's momentum is a number, so it
    reads none).

    Args:
      optax_learner: the optax learner matching the gradtx learner of ``state``.
      state: the gradtx learner's state.
      params: the params to continue from.

    Returns:
      The optax learner's state, of ``optax_learner.init(params)``'s structure and dtypes.

    Raises:
      ValueError: naming the path in both states and what was expected there.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import gradtx
      >>> from gradtx.optax_state import to_optax_state
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> ours = gradtx.sgd(0.1, momentum=0.9)
      >>> state = ours.update({"w": jnp.array([0.5, 1.0])}, ours.init(params), params)[1]
      >>> optax_state = to_optax_state(optax.sgd(0.1, momentum=0.9), state, params)
      >>> optax_state[0].trace["w"].tolist()  # optax's TraceState keeps no count
      [0.5, 1.0]

    References:
      optax: the state NamedTuples of each ``optax`` and ``optax.contrib`` learner.
    """

    def no_count(where: str) -> int:
        raise ValueError(
            f"to_optax_state: the optax learner's state{where} is a step count gradtx's "
            f"state has no value for"
        )

    init = getattr(optax_learner, "init", None)
    if not callable(init):
        raise TypeError(
            f"to_optax_state: optax_learner must be an optax GradientTransformation (with "
            f"init and update), got {type(optax_learner).__name__}"
        )
    walk = _Walk("to_optax_state", "state", "optax_state", no_count)
    return walk.convert(state, init(params), "", "")


def _check_step(step: Any) -> None:
    if step is not None and (isinstance(step, bool) or int(step) != step or step < 0):
        raise ValueError(f"from_optax_state: step must be a nonnegative integer, got {step!r}")
