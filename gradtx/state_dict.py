"""torch-style ``state_dict`` / ``load_state_dict`` for optimizer states.

``state_dict(state)`` turns any optimizer state into nested dicts of NumPy
arrays with readable keys: NamedTuple field names (``mu``, ``count``), dict
keys, and sequence positions as ``"0"``, ``"1"``; a :class:`gradtx.Packed`
moment is saved as its buffers (``"float32"``). ``load_state_dict(template,
d)`` rebuilds a state of the template's exact structure, checking every key,
shape and dtype and naming the first mismatch.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.packing import Packed


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def state_dict(state: Any) -> Any:
    """A nested dict of NumPy arrays and plain values, with readable keys.

    Args:
      state: any optimizer state (NamedTuples, dicts, tuples, lists of arrays).
    """
    if isinstance(state, Packed):
        return state_dict(state.buffers)
    if _is_namedtuple(state):
        return {field: state_dict(getattr(state, field)) for field in state._fields}
    if isinstance(state, dict):
        return {str(key): state_dict(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return {str(i): state_dict(value) for i, value in enumerate(state)}
    if state is None:
        return None
    return np.asarray(state)


def _keys(template: Any) -> list[tuple[str, Any]]:
    if _is_namedtuple(template):
        return [(f, getattr(template, f)) for f in template._fields]
    if isinstance(template, dict):
        return [(str(k), v) for k, v in template.items()]
    return [(str(i), v) for i, v in enumerate(template)]


def load_state_dict(template: Any, d: Any) -> Any:
    """Rebuild a state shaped exactly like ``template`` from ``d`` (made by :func:`state_dict`).

    Args:
      template: a state of the structure to restore, e.g. ``opt.init(params)``.
      d: the saved dict.

    Raises:
      ValueError: naming the first path whose keys, shape or dtype differ.
    """
    return _load(template, d, "state")


def _load(template: Any, d: Any, path: str) -> Any:
    if template is None:
        if d is not None:
            raise ValueError(
                f"load_state_dict: {path}: expected nothing (None), got {type(d).__name__}"
            )
        return None
    if isinstance(template, Packed):
        buffers = _load(template.buffers, d, path)
        return jax.tree.unflatten(jax.tree.structure(template), [buffers[k] for k in buffers])
    if isinstance(template, list | tuple | dict):
        if not isinstance(d, dict):
            raise ValueError(
                f"load_state_dict: {path}: expected a dict of entries, got {type(d).__name__}"
            )
        entries = _keys(template)
        expected = [k for k, _ in entries]
        missing = [k for k in expected if k not in d]
        extra = [k for k in d if k not in expected]
        if missing or extra:
            what = f"missing {path}.{missing[0]}" if missing else f"unexpected {path}.{extra[0]}"
            raise ValueError(f"load_state_dict: {what}; expected keys {expected}")
        values = [_load(v, d[k], f"{path}.{k}") for k, v in entries]
        if _is_namedtuple(template):
            return type(template)(*values)
        if isinstance(template, dict):
            return dict(zip(template.keys(), values, strict=True))
        return type(template)(values)
    want = np.asarray(template)
    got = np.asarray(d)
    if got.shape != want.shape or got.dtype != want.dtype:
        raise ValueError(
            f"load_state_dict: {path}: expected shape {want.shape} {want.dtype}, "
            f"got shape {got.shape} {got.dtype}"
        )
    if isinstance(template, jax.Array):
        return jnp.asarray(got)
    return got
