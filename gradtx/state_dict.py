"""torch-style ``state_dict`` / ``load_state_dict`` for optimizer states.

``state_dict(state)`` turns any optimizer state into nested dicts of NumPy
arrays with readable keys: NamedTuple field names (``mu``, ``count``), dict
keys, and sequence positions as ``"0"``, ``"1"``; any other pytree node (a
:class:`gradtx.Packed` moment, an equinox Module) by its keys one level down,
e.g. a Packed's buffers (``"float32"``). ``load_state_dict(template, d)``
rebuilds a state of the template's exact structure, checking every key, shape
and dtype and naming the first mismatch.

:func:`save_npz` and :func:`load_npz` are the checkpoint format built on them
(what ``gradtx.Trainer.save`` writes): params and optimizer state as one
``.npz`` file of flat ``params/...`` and ``state/...`` entries.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey and the rest
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def _children(node: Any) -> tuple[list[tuple[str, Any]], Any] | None:
    """A custom pytree node's children by key, and its one-level structure; None for a leaf."""
    if isinstance(node, jax.Array | np.ndarray | np.generic | int | float | complex | bool):
        return None
    flat, structure = jax.tree_util.tree_flatten_with_path(node, is_leaf=lambda x: x is not node)
    if jax.tree_util.treedef_is_leaf(structure):
        return None
    return [(_key_name(path[-1]), child) for path, child in flat], structure


def state_dict(state: Any) -> Any:
    """A nested dict of NumPy arrays and plain values, with readable keys.

    Args:
      state: any optimizer state (NamedTuples, dicts, tuples, lists of arrays).
    """
    if _is_namedtuple(state):
        return {field: state_dict(getattr(state, field)) for field in state._fields}
    if isinstance(state, dict):
        return {str(key): state_dict(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return {str(i): state_dict(value) for i, value in enumerate(state)}
    if state is None:
        return None
    children = _children(state)
    if children is not None:
        return {key: state_dict(child) for key, child in children[0]}
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
    children = None if isinstance(template, list | tuple | dict) else _children(template)
    if children is not None:
        entries, structure = children
        loaded = _load(dict(entries), d, path)
        return jax.tree.unflatten(structure, [loaded[k] for k, _ in entries])
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
    got = _checked("load_state_dict", path, template, d)
    if isinstance(template, jax.Array):
        return jnp.asarray(got)
    return got


def _checked(who: str, path: str, template: Any, value: Any) -> np.ndarray:
    """``value`` as an array, if it has the template's shape and dtype; else an error naming it."""
    want, got = np.asarray(template), np.asarray(value)
    if got.shape != want.shape or got.dtype != want.dtype:
        raise ValueError(
            f"{who}: {path}: expected shape {want.shape} {want.dtype}, "
            f"got shape {got.shape} {got.dtype}"
        )
    return got


# -- the .npz checkpoint format -------------------------------------------------------------------


def _flatten(d: Any, prefix: str, out: dict[str, np.ndarray]) -> None:
    """Flatten a :func:`state_dict` into ``{"a/b/c": array}``; ``None`` and empty dicts vanish."""
    if isinstance(d, dict):
        for key, value in d.items():
            _flatten(value, f"{prefix}/{key}", out)
    elif d is not None:
        out[prefix] = d


def _unflatten(
    who: str, template: Any, prefix: str, arrays: dict[str, np.ndarray], used: set
) -> Any:
    """Rebuild a :func:`state_dict` shaped like ``template`` from the flat ``arrays``."""
    if isinstance(template, dict):
        return {k: _unflatten(who, v, f"{prefix}/{k}", arrays, used) for k, v in template.items()}
    if template is None:
        return None
    if prefix not in arrays:
        raise ValueError(f"{who}: the file has no entry {prefix!r}")
    used.add(prefix)
    return arrays[prefix]


def _param_paths(params: Any) -> list[tuple[str, Any]]:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return [(f"params/{jax.tree_util.keystr(p)}", x) for p, x in leaves]


def save_npz(path: str | os.PathLike, params: Any, state: Any, *, eval_params: Any = None) -> None:
    """Write params and an optimizer state to one ``.npz`` file, atomically.

    Entries are ``params/<key path>`` (``params/['w']``) and ``state/...`` (the
    keys of :func:`state_dict`, joined by ``/``), and with ``eval_params``
    ``eval_params/<key path>``: the params to use for a model whose learner
    evaluates elsewhere than it trains (schedule-free's average, see
    :func:`gradtx.eval_params`), for whoever reads the file without gradtx.
    The file is written next to ``path`` and renamed into place, so a failed
    save leaves any earlier file intact. Arrays must be addressable from this
    process.

    Args:
      path: the file to write.
      params: the params tree.
      state: the optimizer state.
      eval_params: the params to evaluate with, when they are not ``params``.
    """
    arrays = {name: np.asarray(x) for name, x in _param_paths(params)}
    if eval_params is not None:
        arrays.update({"eval_" + name: np.asarray(x) for name, x in _param_paths(eval_params)})
    _flatten(state_dict(state), "state", arrays)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            # The keys start with params/ or state/, so none is savez's allow_pickle.
            np.savez(f, **cast(dict[str, Any], arrays))
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def load_npz(
    path: str | os.PathLike, params: Any, state: Any, *, who: str = "load_npz"
) -> tuple[Any, Any]:
    """Read params and an optimizer state written by :func:`save_npz`, shaped like the templates.

    Every entry is checked against ``params`` and ``state`` (names, shapes,
    dtypes) before anything is returned. ``eval_params/`` entries are not read:
    they follow from the params and the state.

    Args:
      path: the file to read.
      params: a params tree of the structure, shapes and dtypes to restore.
      state: an optimizer state likewise, e.g. ``learner.init(params)``.
      who: the caller that errors name (``"Trainer.load"``).

    Returns:
      ``(params, state)`` as JAX arrays.

    Raises:
      ValueError: naming the first entry that is missing, unexpected or misshapen.
    """
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    used: set[str] = set()
    leaves = []
    for name, want in _param_paths(params):
        if name not in arrays:
            raise ValueError(f"{who}: the file has no entry {name!r}")
        leaves.append(jnp.asarray(_checked(who, name, want, arrays[name])))
        used.add(name)
    saved = _unflatten(who, state_dict(state), "state", arrays, used)
    new_state = load_state_dict(state, saved)
    extra = sorted(k for k in set(arrays) - used if not k.startswith("eval_params/"))
    if extra:
        raise ValueError(f"{who}: unexpected entry {extra[0]!r} in {os.fspath(path)!r}")
    new_params = jax.tree.unflatten(jax.tree.structure(params), leaves)
    return new_params, jax.tree.map(jnp.asarray, new_state)
