"""Placing params, batches and optimizer state on a device mesh for data-parallel training."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SpecTree = Any  # None, a PartitionSpec, a tree of them, or a function (path, leaf) -> spec


def check_axis(who: str, mesh: Mesh, axis: str, argument: str) -> None:
    if axis not in mesh.axis_names:
        raise ValueError(
            f"{who}: {argument} {axis!r} is not an axis of the mesh; its axes are "
            f"{tuple(mesh.axis_names)}"
        )


def _check_spec(who: str, mesh: Mesh, spec: Any, where: str) -> PartitionSpec:
    if not isinstance(spec, PartitionSpec):
        raise TypeError(f"{who}: {where} must be a jax.sharding.PartitionSpec, got {spec!r}")
    for entry in spec:
        for axis in entry if isinstance(entry, tuple) else (entry,):
            if axis is not None and axis not in mesh.axis_names:
                raise ValueError(
                    f"{who}: {where} names mesh axis {axis!r}, but the mesh's axes are "
                    f"{tuple(mesh.axis_names)}"
                )
    return spec


def param_shardings(who: str, mesh: Mesh, params: Any, specs: SpecTree) -> Any:
    """One ``NamedSharding`` per param leaf from ``specs`` (None: replicated)."""
    paths = jax.tree_util.tree_flatten_with_path(params)
    leaves, treedef = paths
    if specs is None or isinstance(specs, PartitionSpec):
        spec = _check_spec(who, mesh, specs or PartitionSpec(), "param_specs")
        out = [NamedSharding(mesh, spec) for _ in leaves]
    elif callable(specs):
        out = []
        for path, leaf in leaves:
            where = f"param_specs(params{jax.tree_util.keystr(path)})"
            out.append(NamedSharding(mesh, _check_spec(who, mesh, specs(path, leaf), where)))
    else:
        is_spec = lambda x: isinstance(x, PartitionSpec) or x is None  # noqa: E731
        flat_specs, spec_def = jax.tree.flatten(specs, is_leaf=is_spec)
        if spec_def != treedef:
            raise ValueError(
                f"{who}: param_specs must have the params' structure {treedef}, got {spec_def}"
            )
        out = []
        for (path, _), spec in zip(leaves, flat_specs, strict=True):
            where = f"param_specs{jax.tree_util.keystr(path)}"
            out.append(NamedSharding(mesh, _check_spec(who, mesh, spec or PartitionSpec(), where)))
    for (path, leaf), sharding in zip(leaves, out, strict=True):
        shape = np.shape(leaf)
        for dim, entry in enumerate(sharding.spec):
            size = _axis_size(mesh, entry)
            if dim >= len(shape) or shape[dim] % size:
                raise ValueError(
                    f"{who}: params{jax.tree_util.keystr(path)} of shape {shape} cannot be "
                    f"split as {sharding.spec}: dimension {dim} is not a multiple of {size}"
                )
    return jax.tree.unflatten(treedef, out)


def _axis_size(mesh: Mesh, entry: Any) -> int:
    axes = entry if isinstance(entry, tuple) else (entry,)
    return int(np.prod([mesh.shape[a] for a in axes if a is not None]))


def place(tree: Any, shardings: Any) -> Any:
    """Put every leaf on its sharding, from host values that every process holds whole."""

    def one(x: Any, sharding: NamedSharding) -> jax.Array:
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if isinstance(x, jax.Array) and x.is_fully_addressable and jax.process_count() == 1:
            return jax.device_put(x, sharding)
        value = np.asarray(x)
        return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

    return jax.tree.map(one, tree, shardings)


def place_batch(who: str, mesh: Mesh, data_axis: str, batch: Any) -> Any:
    """Split the batch's leading dimension over ``data_axis`` (each process gives its own part).

    In a multi-process run every process passes its local samples and the global
    batch is their concatenation, in process order.
    """
    devices = mesh.shape[data_axis]
    split = NamedSharding(mesh, PartitionSpec(data_axis))
    whole = NamedSharding(mesh, PartitionSpec())

    def one(path: Any, x: Any) -> jax.Array:
        if np.ndim(x) == 0:
            return place(x, whole)
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            samples = x.shape[0]  # already a global array
        else:
            samples = np.shape(x)[0] * jax.process_count()
        if samples % devices:
            raise ValueError(
                f"{who}: batch{jax.tree_util.keystr(path)} has {samples} samples, which do not "
                f"split evenly over the {devices} devices of mesh axis {data_axis!r}; use a "
                f"batch size that is a multiple of {devices}"
            )
        if isinstance(x, jax.Array) and (x.sharding == split or not x.is_fully_addressable):
            return x
        return jax.make_array_from_process_local_data(split, np.asarray(x))

    return jax.tree_util.tree_map_with_path(one, batch)


def zero_shardings(tree: Any, mesh: Mesh, axis: str = "data") -> Any:
    """Shardings that also split each array over ``axis``: ZeRO-style optimizer state.

    Each leaf keeps its current split (over a ``model`` axis, say) and is
    further split over ``axis`` along its first dimension that is not split
    yet and divides evenly; leaves with none (scalars, odd sizes) keep their
    sharding. With params replicated over ``axis``, ``jax.device_put(state,
    zero_shardings(state, mesh))`` stores each moment once across the data
    devices instead of once per device; XLA then reduces and gathers around
    the update.

    Args:
      tree: the optimizer state (arrays on ``mesh``).
      mesh: the mesh.
      axis: the mesh axis to split over.
    """
    check_axis("zero_shardings", mesh, axis, "axis")
    size = mesh.shape[axis]

    def one(x: Any) -> NamedSharding:
        current = getattr(x, "sharding", None)
        spec = list(current.spec) if isinstance(current, NamedSharding) else []
        spec += [None] * (np.ndim(x) - len(spec))
        used = {a for e in spec for a in (e if isinstance(e, tuple) else (e,))}
        if axis not in used:
            for dim, entry in enumerate(spec):
                if entry is None and np.shape(x)[dim] % size == 0:
                    spec[dim] = axis
                    break
        return NamedSharding(mesh, PartitionSpec(*spec))

    return jax.tree.map(one, tree)


def shardings_of(tree: Any, mesh: Mesh) -> Any:
    """Each leaf's sharding if it lives on ``mesh``, else replicated over it."""
    whole = NamedSharding(mesh, PartitionSpec())

    def one(x: Any) -> NamedSharding:
        sharding = getattr(x, "sharding", None)
        if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
            return sharding
        return whole

    return jax.tree.map(one, tree)
