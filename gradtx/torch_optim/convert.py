"""Resume a torch.optim run in gradtx: a torch optimizer's ``state_dict()`` as a learner's state.

:func:`from_torch_state_dict` fills the state of a :mod:`gradtx.torch_optim` learner,
built with the torch optimizer's arguments, from that optimizer's ``state_dict()``:
each of the learner's state blocks, found by its type, takes its fields from torch's
per-param state, and every ``count`` the step count. The next gradtx update is then
torch's next ``optimizer.step()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from gradtx.core import GradientTransformation
from gradtx.torch_optim.adaptive import AdafactorState, ASGDState, NAdamState, RAdamState
from gradtx.torch_optim.basic import DecoupledDecayState, SGDMomentumState, TorchAdamState
from gradtx.transforms import (
    ScaleByAdaDeltaState,
    ScaleByAdamState,
    ScaleByRmsState,
    ScaleByRssState,
    ScaleByRStdDevState,
    TraceState,
)
from gradtx.transforms.rprop import ScaleByRpropState

__all__ = ["from_torch_state_dict"]

_WHO = "from_torch_state_dict"

# What each field is filled from: the step count, a params-shaped buffer of torch's per-param
# state, a per-param scalar torch keeps once per param (one value here, the same for all),
# or Adafactor's buffers, kept only for params of 2 or more dimensions ("factored") or
# only for the others ("unfactored"); the other leaves keep the template's placeholder.
_COUNT = ("count", None)


def _buffer(key: str) -> tuple[str, str]:
    return ("buffer", key)


_FIELDS: dict[type, dict[str, tuple[str, str | None]]] = {
    SGDMomentumState: {"count": _COUNT, "momentum_buffer": _buffer("momentum_buffer")},
    TorchAdamState: {
        "count": _COUNT,
        "exp_avg": _buffer("exp_avg"),
        "exp_avg_sq": _buffer("exp_avg_sq"),
        "max_exp_avg_sq": _buffer("max_exp_avg_sq"),
    },
    DecoupledDecayState: {"count": _COUNT},
    ScaleByRmsState: {"nu": _buffer("square_avg")},
    ScaleByRStdDevState: {"mu": _buffer("grad_avg"), "nu": _buffer("square_avg")},
    TraceState: {"count": _COUNT, "trace": _buffer("momentum_buffer")},
    ScaleByRssState: {"sum_of_squares": _buffer("sum")},
    ScaleByAdamState: {"count": _COUNT, "mu": _buffer("exp_avg"), "nu": _buffer("exp_inf")},
    ScaleByAdaDeltaState: {"e_g": _buffer("square_avg"), "e_x": _buffer("acc_delta")},
    NAdamState: {
        "count": _COUNT,
        "mu_product": ("scalar", "mu_product"),
        "exp_avg": _buffer("exp_avg"),
        "exp_avg_sq": _buffer("exp_avg_sq"),
    },
    RAdamState: {
        "count": _COUNT,
        "exp_avg": _buffer("exp_avg"),
        "exp_avg_sq": _buffer("exp_avg_sq"),
    },
    ScaleByRpropState: {"step_sizes": _buffer("step_size"), "prev_updates": _buffer("prev")},
    ASGDState: {
        "count": _COUNT,
        "eta": ("scalar", "eta"),
        "mu": ("scalar", "mu"),
        "ax": _buffer("ax"),
    },
    AdafactorState: {
        "count": _COUNT,
        "row_var": ("factored", "row_var"),
        "col_var": ("factored", "col_var"),
        "variance": ("unfactored", "variance"),
    },
}

# The torch argument that makes torch keep a key, for the error when only one side has it.
_FLAG_OF_KEY = {
    "max_exp_avg_sq": "amsgrad=True",
    "momentum_buffer": "momentum != 0",
    "grad_avg": "centered=True",
}


def _flags_of(block: Any) -> dict[str, bool]:
    """The torch flags a block says its learner was built with: ``{group key: on}``."""
    if isinstance(block, TorchAdamState):
        return {"amsgrad": bool(jax.tree.leaves(block.max_exp_avg_sq))}
    if isinstance(block, SGDMomentumState):
        return {"momentum": True}
    if isinstance(block, ScaleByRStdDevState | ScaleByRmsState):
        return {"centered": isinstance(block, ScaleByRStdDevState)}
    return {}


def _numpy(value: Any) -> np.ndarray:
    """A torch tensor (duck-typed: no torch import), NumPy array or number as NumPy."""
    if hasattr(value, "detach"):
        value = value.detach()
        if str(getattr(value, "dtype", "")) == "torch.bfloat16":  # NumPy has no bfloat16
            value = value.float()
        value = value.cpu()
    return np.asarray(value)


def _name(path: tuple) -> str:
    """A leaf's name for ``order``: its keys joined by ``/``, as :func:`gradtx.groups_by_path`."""
    parts = []
    for key in path:
        for attribute in ("key", "idx", "name"):
            if hasattr(key, attribute):
                parts.append(str(getattr(key, attribute)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def _torch_indices(state_dict: Any) -> tuple[list[int], dict[int, dict]]:
    """torch's param indices in order across its groups, and each index's group."""
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
        raise ValueError(
            f"{_WHO}: state_dict must be a torch optimizer's state_dict(), a mapping with "
            f"'state' and 'param_groups', got {type(state_dict).__name__}"
            + (
                f" with keys {sorted(map(str, state_dict))}"
                if isinstance(state_dict, Mapping)
                else ""
            )
        )
    indices, group_of = [], {}
    for group in state_dict["param_groups"]:
        for index in group["params"]:
            if int(index) in group_of:
                raise ValueError(f"{_WHO}: state_dict lists torch param {index} in two groups")
            indices.append(int(index))
            group_of[int(index)] = group
    return indices, group_of


def _assign(
    params: Any, indices: list[int], order: Sequence[str] | Mapping[str, int] | None
) -> dict[str, tuple[int, str, Any]]:
    """Each optimized leaf's path (``keystr``) -> (torch index, name, param)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    leaves = [
        (path, leaf)
        for path, leaf in flat
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)  # what torch_optim updates
    ]
    names = [_name(path) for path, _ in leaves]
    if order is None:
        if len(leaves) != len(indices):
            raise ValueError(
                f"{_WHO}: params has {len(leaves)} floating leaves but the state_dict's "
                f"param_groups list {len(indices)} torch params"
            )
        index_of = dict(zip(names, indices, strict=True))
    else:
        if isinstance(order, Mapping):
            index_of = {str(name): int(index) for name, index in order.items()}
        else:
            if isinstance(order, str) or len(order) != len(indices):
                raise ValueError(
                    f"{_WHO}: order must list the {len(indices)} params' names in torch's order "
                    f"(as given to the torch optimizer), got {order!r}"
                )
            index_of = dict(zip(map(str, order), indices, strict=True))
            if len(index_of) != len(order):
                raise ValueError(f"{_WHO}: order names a param twice: {list(order)}")
        unknown = sorted(set(index_of) - set(names))
        if unknown:
            raise ValueError(
                f"{_WHO}: order names {unknown}, which are not floating leaves of params "
                f"(their names: {names})"
            )
        missing = [n for n in names if n not in index_of]
        if missing:
            raise ValueError(f"{_WHO}: order gives no torch index for params {missing}")
        stray = sorted(set(index_of.values()) - set(indices))
        if stray or len(set(index_of.values())) != len(index_of):
            raise ValueError(
                f"{_WHO}: order must map each param to a distinct torch index among "
                f"{indices}, got {dict(index_of)}"
            )
    return {
        jax.tree_util.keystr(path): (index_of[name], name, leaf)
        for (path, leaf), name in zip(leaves, names, strict=True)
    }


def _torch_state(state_dict: Any, index: int) -> dict:
    state = state_dict["state"]
    found = state.get(index, state.get(str(index)))  # str keys: a state_dict saved as JSON
    return {} if found is None else {k: v for k, v in found.items() if v is not None}


def _step_count(per_param: dict[int, dict], step: int | None) -> int | None:
    """The one step count of every param: torch's ``step``, or ``step`` where torch has none."""
    steps = {}
    for index, state in per_param.items():
        if "step" in state:
            value = float(_numpy(state["step"]))
            if value != int(value) or value < 0:
                raise ValueError(f"{_WHO}: torch param {index} has step {value}, not a count")
            steps[index] = int(value)
    if len(set(steps.values())) > 1:
        raise ValueError(
            f"{_WHO}: torch's params took different numbers of steps ({steps}); a gradtx "
            f"learner keeps one count, so every param must have been stepped together"
        )
    torch_step = next(iter(steps.values()), None)
    if step is not None:
        if isinstance(step, bool) or int(step) != step or step < 0:
            raise ValueError(f"{_WHO}: step must be a nonnegative integer, got {step!r}")
        if torch_step is not None and torch_step != step:
            raise ValueError(f"{_WHO}: step={step}, but torch's state says {torch_step} steps")
        return int(step)
    if torch_step is None and not any(per_param.values()):
        return 0  # torch never stepped: the learner's fresh state is torch's
    return torch_step


def from_torch_state_dict(
    learner: GradientTransformation,
    state_dict: Any,
    params: Any,
    *,
    order: Sequence[str] | Mapping[str, int] | None = None,
    step: int | None = None,
) -> Any:
    """The state of ``learner`` that continues a torch optimizer from its ``state_dict()``.

    ``learner`` is the :mod:`gradtx.torch_optim` learner of the torch optimizer, built
    with the same arguments (a schedule for ``lr`` where torch had a scheduler, or a
    :func:`gradtx.partition` of learners for several param groups), and ``params`` the
    params torch has now. Its state blocks are found in ``learner.init(params)`` by type,
    wherever they sit, and filled from torch's per-param state:

    ==============================  =============================================
    block                           torch's per-param state
    ==============================  =============================================
    ``SGDMomentumState``            ``momentum_buffer`` (SGD)
    ``TorchAdamState``              ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``
    ``ScaleByRmsState``             ``square_avg`` (RMSprop)
    ``ScaleByRStdDevState``         ``grad_avg``, ``square_avg`` (centered RMSprop)
    ``TraceState``                  ``momentum_buffer`` (RMSprop's momentum)
    ``ScaleByRssState``             ``sum`` (Adagrad)
    ``ScaleByAdamState``            ``exp_avg``, ``exp_inf`` (Adamax)
    ``ScaleByAdaDeltaState``        ``square_avg``, ``acc_delta`` (Adadelta)
    ``NAdamState``                  ``mu_product``, ``exp_avg``, ``exp_avg_sq``
    ``RAdamState``                  ``exp_avg``, ``exp_avg_sq``
    ``ScaleByRpropState``           ``step_size``, ``prev`` (Rprop)
    ``ASGDState``                   ``eta``, ``mu``, ``ax``
    ``AdafactorState``              ``row_var``, ``col_var``, ``variance``
    ==============================  =============================================

    and every ``count`` in the state (a block's, a schedule's, the decoupled decay's) is
    :math:`k`, the number of steps torch took (its ``step``). torch's SGD keeps no step:
    give it as ``step`` when a schedule needs it (an ``lr`` schedule, for which this
    raises without it); otherwise SGD's momentum count is 1 once torch has set the buffers
    (all the momentum rule reads from it, unless the momentum itself is a schedule: give
    ``step`` then too). An optimizer torch never stepped gives ``learner.init(params)``.

    Params are matched to torch's by position: the floating leaves of ``params`` in
    ``jax.tree.leaves`` order (dict keys sorted) are torch's params in the order of its
    ``param_groups``, unless ``order`` says otherwise. A complex param's buffers, complex
    in torch, become the ``(..., 2)`` real views the learner keeps. Values are cast to the
    template's dtypes.

    Checked: every buffer's shape against its param's, that every param torch stepped
    has the buffers the learner keeps and no others (a learner built without torch's
    ``amsgrad``, ``centered`` or ``momentum`` is caught by this), that all params took the
    same number of steps, and that the learner's state holds nothing torch does not keep.

    Args:
      learner: the gradtx.torch_optim learner matching the torch optimizer.
      state_dict: ``optimizer.state_dict()``; its tensors may be torch tensors, NumPy
        arrays or numbers (a state_dict saved and reloaded).
      params: the params to continue from (JAX or NumPy arrays), as torch has them now.
      order: the params' names in torch's order (the order they were given to the
        torch optimizer, across its param groups), or a mapping from name to torch
        index; a name is the leaf's keys joined by ``/`` (``"encoder/0/kernel"``).
      step: the number of ``optimizer.step()`` calls torch made, where it keeps no step
        (SGD) and a schedule needs one; checked against torch's ``step`` where it has one.

    Returns:
      The learner's state, of ``learner.init(params)``'s structure and dtypes.

    Raises:
      ValueError: naming the param (path and torch index) and the key or shapes at fault.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> from gradtx.torch_optim.convert import from_torch_state_dict
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> saved = {  # torch.optim.Adam([w], lr=0.1).state_dict() after 3 steps, as NumPy
      ...     "state": {0: {"step": np.array(3.0), "exp_avg": np.array([0.3, -0.5]),
      ...                   "exp_avg_sq": np.array([0.01, 0.02])}},
      ...     "param_groups": [{"lr": 0.1, "amsgrad": False, "params": [0]}],
      ... }
      >>> opt = torch_optim.adam(0.1)
      >>> state = from_torch_state_dict(opt, saved, params)
      >>> print(int(state[0].count), np.asarray(state[0].exp_avg["w"]))
      3 [ 0.3 -0.5]
      >>> updates, state = opt.update({"w": jnp.array([0.5, -1.0])}, state, params)

    References:
      torch: ``torch.optim.Optimizer.state_dict`` and the per-param ``state`` of each
        ``torch.optim`` class.
    """
    indices, group_of = _torch_indices(state_dict)
    assigned = _assign(params, indices, order)
    per_param = {index: _torch_state(state_dict, index) for index in indices}
    count = _step_count(per_param, step)
    used: dict[int, set[str]] = {index: set() for index in indices}

    def count_leaf(template: Any, where: str, fallback: int | None = None) -> jax.Array:
        steps = count if count is not None else fallback
        if steps is None:
            raise ValueError(
                f"{_WHO}: the learner keeps a step count at {where} (a schedule's) and "
                f"torch's state has no 'step' (SGD keeps none): pass step=, the number of "
                f"optimizer.step() calls torch made"
            )
        return jnp.asarray(min(steps, np.iinfo(np.int32).max), jnp.result_type(template))

    def torch_value(path: str, key: str, template: Any) -> Any:
        index, name, param = assigned[path]
        state = per_param[index]
        if not any(per_param.values()):
            return template  # torch never stepped: its fresh state is the learner's init
        if not state:
            raise ValueError(
                f"{_WHO}: torch param {index} (params{path}) has no state: torch never "
                f"stepped it, while it stepped others"
            )
        if key not in state:
            flag = _FLAG_OF_KEY.get(key)
            hint = f": was the torch optimizer built with {flag}?" if flag else ""
            raise ValueError(
                f"{_WHO}: torch's state for param {index} (params{path}) has no {key!r} "
                f"(it has {sorted(state)}), which the learner keeps{hint}"
            )
        used[index].add(key)
        value = _numpy(state[key])
        torch_shape = value.shape
        if np.iscomplexobj(value) != jnp.iscomplexobj(param):
            raise ValueError(
                f"{_WHO}: {key!r} of torch param {index} is {value.dtype} but params{path} is "
                f"{jnp.result_type(param)}"
            )
        if np.iscomplexobj(value) and not jnp.iscomplexobj(template):  # a view_as_real
            value = np.stack([np.real(value), np.imag(value)], axis=-1)
        if value.shape != np.shape(template):
            raise ValueError(
                f"{_WHO}: {key!r} of torch param {index} has shape {torch_shape}, but "
                f"params{path} ({name!r}) has shape {np.shape(param)} (torch numbers params "
                f"in the order given to it; jax.tree.leaves sorts dict keys: pass order=)"
            )
        return value

    def scalar_value(paths: list[str], key: str, template: Any, where: str) -> Any:
        values = [torch_value(path, key, template) for path in paths]
        if not values:
            return template
        first = np.asarray(values[0]).reshape(np.shape(template))
        for path, value in zip(paths[1:], values[1:], strict=True):
            if not np.array_equal(np.asarray(value).reshape(first.shape), first):
                raise ValueError(
                    f"{_WHO}: torch's {key!r} differs between params{paths[0]} and "
                    f"params{path}, but the learner keeps one at {where}"
                )
        return first

    def buffer_leaf(path: str, template: Any, kind: str, key: str, where: str) -> Any:
        if path not in assigned:
            raise ValueError(
                f"{_WHO}: {where} has a leaf at {path or '<root>'} that is no floating leaf "
                f"of params: was the learner initialized with these params?"
            )
        ndim = jnp.ndim(assigned[path][2])
        if (kind == "factored" and ndim < 2) or (kind == "unfactored" and ndim > 1):
            return template  # Adafactor's placeholder: torch keeps nothing for it
        return _cast(torch_value(path, key, template), template)

    def fill_block(block_path: tuple, block: Any) -> Any:
        where = f"state{jax.tree_util.keystr(block_path)}"
        spec = _FIELDS[type(block)]
        buffer_field = next((f for f, (kind, _) in spec.items() if kind == "buffer"), None)
        block_params = [  # the params this block keeps state for (one group's, in a partition)
            jax.tree_util.keystr(p)
            for p, _ in jax.tree_util.tree_flatten_with_path(
                () if buffer_field is None else getattr(block, buffer_field)
            )[0]
        ]
        for flag, on in _flags_of(block).items():
            for path in block_params:
                index = assigned[path][0]
                if flag in group_of[index] and bool(group_of[index][flag]) != on:
                    raise ValueError(
                        f"{_WHO}: torch's param group of param {index} (params{path}) has "
                        f"{flag}={group_of[index][flag]!r}, which the learner's {where} "
                        f"({type(block).__name__}) does not match: build the learner with "
                        f"the torch optimizer's arguments"
                    )
        fields = {}
        for field, (kind, key) in spec.items():
            template = getattr(block, field)
            if kind == "count":
                # SGD's buffers are set once torch stepped, all its rule reads from the count.
                first_set = 1 if type(block) is SGDMomentumState else None
                fields[field] = count_leaf(template, f"{where}.{field}", first_set)
            elif kind == "scalar":
                fields[field] = _cast(
                    scalar_value(block_params, cast(str, key), template, f"{where}.{field}"),
                    template,
                )
            else:
                fields[field] = jax.tree_util.tree_map_with_path(
                    lambda path, leaf, kind=kind, key=key, where=f"{where}.{field}": buffer_leaf(
                        jax.tree_util.keystr(path), leaf, kind, cast(str, key), where
                    ),
                    template,
                )
        return type(block)(**fields)

    def fill(path: tuple, node: Any) -> Any:
        if type(node) in _FIELDS:
            return fill_block(path, node)
        last = path[-1] if path else None
        if getattr(last, "name", None) == "count" and jnp.issubdtype(
            jnp.result_type(node), jnp.integer
        ):
            return count_leaf(node, f"state{jax.tree_util.keystr(path)}")
        raise ValueError(
            f"{_WHO}: the learner's state holds a leaf at state{jax.tree_util.keystr(path)} "
            f"that torch's state_dict has nothing for; only gradtx.torch_optim learners "
            f"(and gradtx.partition of them) convert"
        )

    template = learner.init(params)
    state = jax.tree_util.tree_map_with_path(
        fill, template, is_leaf=lambda node: type(node) in _FIELDS
    )
    path_of = {index: path for path, (index, _, _) in assigned.items()}
    for index, keys in used.items():
        stray = sorted(set(per_param[index]) - keys - {"step"})
        if stray:
            flags = [_FLAG_OF_KEY[k] for k in stray if k in _FLAG_OF_KEY]
            hint = f": build it with torch's {', '.join(flags)}" if flags else ""
            raise ValueError(
                f"{_WHO}: torch's state for param {index} (params{path_of[index]}) has "
                f"{stray}, which the learner keeps nothing for; it must match the torch "
                f"optimizer{hint}"
            )
    return state


def _cast(value: Any, template: Any) -> jax.Array:
    dtype = jnp.result_type(template)
    value = np.asarray(value).astype(dtype)
    sharding = getattr(template, "sharding", None)
    return jax.device_put(value, sharding) if sharding is not None else jnp.asarray(value)
