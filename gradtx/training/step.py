"""``make_train_step``: one jitted step of gradient descent, with the metrics a loop logs."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from gradtx.compression import CompressedMeanState, compression_from
from gradtx.core import GradientTransformation, apply_updates, extras_filter
from gradtx.fused import after, runs_kernel, update_and_apply
from gradtx.hyperparams import get_hyperparams
from gradtx.powersgd import PowerSGDState
from gradtx.training import sharding
from gradtx.tree import metric_norm, varying_axes, varying_over

TrainStep = Callable[[Any, Any, Any], tuple[Any, Any, dict]]

# What equinox's ``is_array`` calls an array: what jit traces and the optimizer trains.
ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)


def is_array(x: Any) -> bool:
    """Whether a params leaf is trained (a JAX or NumPy array) or static (anything else)."""
    return isinstance(x, ARRAY_TYPES)


class _Identity:
    """An unhashable static leaf, equal only to itself: a step compiled for it is its own."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)


def _static_key(x: Any) -> Any:
    try:
        hash(x)
    except TypeError:
        return _Identity(x)
    return type(x), x  # 1, 1.0 and True are equal, but trace differently


class Static:
    """The part of a params tree that is not arrays: its structure and its other leaves.

    Hashable, and equal for two trees whose structures are equal and whose
    non-array leaves are equal (by type and value; unhashable ones by identity),
    so a jitted step keyed on it compiles once per model architecture, not per
    call. :meth:`combine` puts arrays (a tree with None at the static leaves,
    as :func:`split` gives) back into the whole tree.
    """

    __slots__ = ("treedef", "leaves", "trained", "_key")

    def __init__(self, treedef: Any, leaves: tuple, trained: tuple[bool, ...]):
        self.treedef, self.leaves, self.trained = treedef, leaves, trained
        self._key = (treedef, trained, tuple(_static_key(x) for x in leaves))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Static) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    def combine(self, arrays: Any) -> Any:
        """The whole tree: the leaves of ``arrays`` at its array positions, the rest static."""
        trained, static = iter(jax.tree.leaves(arrays)), iter(self.leaves)
        return self.treedef.unflatten(
            [next(trained) if is_trained else next(static) for is_trained in self.trained]
        )


def split(params: Any) -> tuple[Any, Static | None]:
    """``(arrays, static)``: the params' array leaves (None elsewhere) and the rest of them.

    ``arrays`` is what ``eqx.filter(params, eqx.is_array)`` gives, the tree the
    optimizer sees; ``static`` is None when every leaf is an array (``arrays`` is
    then ``params`` itself), else a :class:`Static` with ``static.combine(arrays)
    == params``. Python numbers are static, as in equinox.
    """
    leaves, treedef = jax.tree.flatten(params)
    trained = tuple(map(is_array, leaves))
    if all(trained):
        return params, None
    arrays = treedef.unflatten([x if t else None for x, t in zip(leaves, trained, strict=True)])
    static = tuple(x for x, t in zip(leaves, trained, strict=True) if not t)
    return arrays, Static(treedef, static, trained)


def combine(arrays: Any, static: Static | None) -> Any:
    """The inverse of :func:`split`: ``combine(*split(params))`` is ``params``."""
    return arrays if static is None else static.combine(arrays)


def split_checked(who: str, params: Any) -> tuple[Any, Static | None]:
    """:func:`split`, rejecting params with nothing to train."""
    arrays, static = split(params)
    if static is not None and not any(static.trained):
        kinds = sorted({type(x).__name__ for x in static.leaves})
        raise TypeError(
            f"{who}: params have no array leaf to train (leaves of type {', '.join(kinds)}); "
            f"Python numbers, functions and other non-arrays are static, as in equinox: "
            f"make trained values arrays, e.g. jnp.asarray(1.0)"
        )
    return arrays, static


def step_extras(
    loss: jax.Array, size: int | None, grads: Any, objective: Callable[..., jax.Array]
) -> dict[str, Any]:
    """Every extra a training step offers: the loss, the batch size when known, the gradient.

    ``value`` is what ``reduce_on_plateau`` and MoMo read, ``batch_size`` the CNTK
    learners' minibatch size. A line search (lbfgs's) also evaluates the loss along the
    update, and Sophia's Hessian estimate differentiates it twice: they get the gradient
    and ``objective``, the loss as a function of the params on this batch (``value_fn``;
    ``obj_fn`` in optax's Sophia).
    """
    sized = {} if size is None else {"batch_size": size}
    return {"value": loss, **sized, "grad": grads, "value_fn": objective, "obj_fn": objective}


def objective_on(
    loss_fn: Callable[..., Any], batch: Any, has_aux: bool, axis_name: Any = None
) -> Callable[..., jax.Array]:
    """The loss as a function of the params on this step's ``batch``: a line search's ``value_fn``.

    It returns the scalar loss only (without ``aux``), averaged over ``axis_name``
    inside ``shard_map``/``pmap``, as the step's own loss is. It names ``batch_size``
    and ``obj_fn`` so that a line search, which hands ``value_fn`` the extras it names
    and rejects the rest (optax's rule), takes the step's other extras and ignores them.
    """

    def value_fn(params: Any, batch_size: Any = None, obj_fn: Any = None) -> jax.Array:
        del batch_size, obj_fn  # the batch is fixed: the extras are accepted to be dropped
        out = loss_fn(params, batch)
        loss = out[0] if has_aux else out
        return jax.lax.pmean(loss, axis_name) if axis_name is not None else loss

    return value_fn


def leading_size(batch: Any, who: str) -> int | None:
    """The batch's number of samples: the leading dimension shared by its array leaves."""
    paths = jax.tree_util.tree_flatten_with_path(batch)[0]
    sizes = {jax.tree_util.keystr(p): jnp.shape(x)[0] for p, x in paths if jnp.ndim(x) > 0}
    if not sizes:
        return None
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"batch{k or ''}: {n}" for k, n in sizes.items())
        raise ValueError(f"{who}: the batch's leaves disagree on the number of samples ({listed})")
    return next(iter(sizes.values()))


def _mean_over(axis_name: Any, loss: jax.Array, grads: Any) -> tuple[jax.Array, Any]:
    """Average the loss and gradients over a ``shard_map``/``pmap`` axis.

    With ``shard_map``'s varying-axis types on, autodiff has already summed the
    gradients of replicated params over the axis (the transpose of their
    implicit broadcast), so those are divided by the axis size; gradients that
    still vary, and everything when types are off, are averaged with ``pmean``.
    """
    axes = set(axis_name if isinstance(axis_name, tuple) else (axis_name,))

    def varies(x: Any) -> bool:
        return axes <= varying_axes(x)

    typed = varies(loss)  # the loss of a split batch varies, if varying types are tracked
    size = jax.lax.psum(1, axis_name)

    def mean(g: jax.Array) -> jax.Array:
        return jax.lax.pmean(g, axis_name) if varies(g) or not typed else g / size

    return jax.lax.pmean(loss, axis_name), jax.tree.map(mean, grads)


@jax.custom_vjp
def _backward_after(loss: jax.Array) -> jax.Array:
    return loss


def _backward_after_fwd(loss: jax.Array) -> tuple[jax.Array, jax.Array]:
    return loss, loss


def _backward_after_bwd(loss: jax.Array, cotangent: jax.Array) -> tuple[jax.Array]:
    return (after(cotangent, loss),)


_backward_after.defvjp(_backward_after_fwd, _backward_after_bwd)


def _settled(loss_fn: Callable[..., Any], has_aux: bool) -> Callable[..., Any]:
    """``loss_fn``, whose backward pass starts once its loss is computed.

    Without the order XLA:CPU runs the end of the forward pass beside the
    backward pass, and the buffers of both are alive at once; with it, a
    fused step of a 10M-parameter elementwise model needs 40 MB of temporary
    memory, as optax's does, instead of 80.
    """

    def settled(params: Any, batch: Any) -> Any:
        out = loss_fn(params, batch)
        if not has_aux:
            return _backward_after(out)
        if not (isinstance(out, tuple | list) and len(out) == 2):
            return out  # jax.value_and_grad says what is wrong with it
        return _backward_after(out[0]), out[1]

    return settled


def make_train_step(
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    *,
    has_aux: bool = False,
    donate: bool = True,
    mesh: Mesh | None = None,
    data_axis: str = "data",
    axis_name: Any = None,
    fused: bool | None = None,
    compression: str | Mapping[str, Any] | None = None,
) -> TrainStep:
    """A jitted ``step(params, opt_state, batch) -> (params, opt_state, metrics)``.

    One step computes :math:`\\ell, g = \\text{value\\_and\\_grad}(f)(\\theta, b)`,
    then ``u, s = optimizer.update(g, s, θ, value=ℓ, batch_size=n, grad=g,
    value_fn=f_b, obj_fn=f_b)`` and :math:`\\theta \\leftarrow \\theta + u`, where :math:`n` is
    the leading dimension of the batch's leaves and :math:`f_b(\\theta')` the loss
    (without ``aux``) at other params on the same batch. The extras let
    ``reduce_on_plateau`` and MoMo see the loss, the CNTK learners see the minibatch
    size, a line search (:func:`gradtx.lbfgs`'s, or optax's) evaluate the loss along
    the update, so L-BFGS trains full-batch with no glue (pass the whole data set
    as the batch), and :func:`gradtx.sophia` estimate the Hessian's diagonal.
    Members that do not take the extras never receive them.

    ``metrics`` is a dict with ``loss``, ``grad_norm`` and ``update_norm``
    (global L2 norms), every hyperparameter the optimizer keeps in its state
    (:func:`gradtx.inject_hyperparams`, by the paths of
    :func:`gradtx.get_hyperparams`) and, with ``has_aux``, ``aux``.

    On one device (no ``mesh`` or ``axis_name``) the update and its
    application run as :func:`gradtx.fused_update`: on CPU, for a learner
    with a kernel (:func:`gradtx.is_fused`), one pass over memory that also
    sums the squares behind both norms; for any other learner, or where the
    kernels cannot be built or loaded (no C++ compiler and nothing cached:
    then one :class:`gradtx.FusedFallbackWarning` says so), ``optimizer.update``
    and ``apply_updates``. The params, state and metrics are the same either
    way (to float32 rounding, rtol 1e-6), and so are the state's layout and
    checkpoints. ``fused=False`` always runs ``optimizer.update`` and
    ``apply_updates``, e.g. to differentiate through the step.

    The params may be a model whose leaves are not all arrays, such as an
    equinox ``Module``: its JAX and NumPy array leaves (equinox's ``is_array``)
    are traced and trained, and the rest (functions, ``eqx.nn.Lambda``'s
    function, Python numbers, strings) stays static and comes back as it was.
    ``loss_fn`` gets the whole model; the optimizer, the gradients and the
    norms see the array leaves alone, with None elsewhere (what
    ``eqx.filter(model, eqx.is_array)`` gives), so ``opt_state`` is
    ``optimizer.init(eqx.filter(model, eqx.is_array))``. The step compiles once
    per structure and static values (equal by type and value, unhashable ones
    by identity), not per call or per fresh model of the same architecture; a
    tree of arrays alone takes the jitted step as it always has.

    A schedule-free learner (:func:`gradtx.schedule_free_adamw`, ...) trains the
    point where it takes gradients; evaluate and export with
    ``gradtx.eval_params(opt_state, params)``, its average (:class:`gradtx.Trainer`
    does so by itself).

    Data parallelism, two ways:

    - ``mesh``: the step runs on the mesh with global arrays. The batch's
      leading dimension is split over ``data_axis`` (in a multi-process run,
      each process passes its own samples); params and state keep the
      shardings they arrive with (leaves not on the mesh are replicated), and
      the step returns them with the same shardings. The loss is the global
      mean and XLA averages the gradients across devices; ``n`` is the global
      batch size.
    - ``axis_name``: the step is called inside ``shard_map`` or ``pmap`` over
      that axis, each device with its own slice of the batch and a whole copy
      of the params. The loss and gradients are averaged over the axis
      before the update, so every copy takes the same step and the norms are
      global; ``n`` is the local batch size.

    ``compression`` (with either) exchanges the gradients compressed, by
    :func:`gradtx.compressed_mean` over the data axis (``data_axis``, or
    ``axis_name``), in place of the float32 mean: a scheme name (``"bf16"``,
    ``"fp16"``, ``"int8"``, ``"2bit"``, ``"1bit"``) or MXNet's
    ``compression_params`` dict, ``{"type": "2bit", "threshold": 0.5}``, whose
    other keys are ``compressed_mean``'s (``threshold``, ``block_size``,
    ``error_feedback``); ``"powersgd"`` is torch's low-rank DDP hook,
    :func:`gradtx.powersgd_mean`, with its arguments as the keys
    (``{"type": "powersgd", "rank": 2, "start_step": 100}``). Each device
    differentiates its own slice of the batch; the optimizer gets the compressed
    mean. The state is then ``(residuals, optimizer state)``, what
    ``chain(compressed_mean(...), optimizer)`` keeps, the error-feedback residuals
    (PowerSGD's errors and factors) one row per device
    (``PartitionSpec(data_axis)``): make it with ``step.init(params)``. On a mesh
    the loss and ``aux`` are the means over the devices of their slices'
    (integers as float means).

    Args:
      loss_fn: ``loss_fn(params, batch) -> loss`` (a scalar), or
        ``-> (loss, aux)`` with ``has_aux=True``.
      optimizer: any gradtx or optax gradient transformation.
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
      donate: donate the params and state buffers to the step, so they are
        updated in place; the arrays passed in must not be used afterwards.
      mesh: a ``jax.sharding.Mesh`` to run data-parallel on.
      data_axis: the mesh axis the batch is split over.
      axis_name: the ``shard_map``/``pmap`` axis to average over.
      fused: None (the default) fuses where it can on one device; True asks for
        :func:`gradtx.fused_update` and rejects ``mesh`` and ``axis_name``;
        False never fuses.
      compression: None (float32 gradients), or the scheme (above).

    ``step.init(params)`` makes the state the step takes: ``optimizer.init`` of
    the params' arrays, made on the mesh (each moment sharded like its param),
    with the residuals when compressing.

    Raises:
      ValueError: ``data_axis`` not in the mesh, ``compression`` unknown, with
        bad options or without ``mesh``/``axis_name``, or (at call time) a batch that
        does not split evenly over it, or whose leaves disagree on ``n``.
      TypeError: (at call time) params with no array leaf to train.
    """
    who = "make_train_step"
    if not callable(loss_fn):
        raise TypeError(f"{who}: loss_fn must be callable, got {type(loss_fn).__name__}")
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            f"{who}: optimizer must be a gradient transformation with init and update, "
            f"got {type(optimizer).__name__}; did you forget to call the factory, e.g. "
            f"gradtx.adam(1e-3) instead of gradtx.adam?"
        )
    if mesh is not None and axis_name is not None:
        raise ValueError(
            f"{who}: give mesh (a jitted step on global arrays) or axis_name (a step inside "
            f"shard_map or pmap), not both"
        )
    if fused is True and (mesh is not None or axis_name is not None):
        raise ValueError(
            f"{who}: fused=True runs a one-device CPU kernel; drop it to train with "
            f"{'mesh' if mesh is not None else 'axis_name'}"
        )
    compress = None
    if compression is not None:
        if mesh is None and axis_name is None:
            raise ValueError(
                f"{who}: compression exchanges the gradients over a data axis, and there is "
                f"none: pass mesh= (data parallel over data_axis={data_axis!r}) or axis_name= "
                f"(a step inside shard_map or pmap)"
            )
        compress = compression_from(who, compression, axis_name if mesh is None else data_axis)
    fusing = fused is True or (fused is None and mesh is None and axis_name is None)
    keep = extras_filter(optimizer.update)

    def exchanged(loss_of: Callable, params: Any, residuals: Any, batch: Any) -> tuple:
        """Loss, aux, the compressed mean gradient and the new residuals, on the mesh."""
        exchange = cast(GradientTransformation, compress)

        def local(params, residuals, batch):
            own = varying_over(data_axis, params)  # this device's gradient, not autodiff's sum
            out, grads = jax.value_and_grad(loss_of, has_aux=has_aux)(own, batch)
            loss, aux = out if has_aux else (out, None)
            grads, residuals = exchange.update(grads, residuals)
            return _pmean(loss, data_axis), _pmean(aux, data_axis), grads, residuals

        split_batch = jax.tree.map(lambda x: P(data_axis) if jnp.ndim(x) else P(), batch)
        return jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(P(), P(data_axis), split_batch),
            out_specs=(P(), P(), P(), P(data_axis)),
            axis_names=frozenset({data_axis}),
        )(params, residuals, batch)

    def step(static, params, opt_state, batch):
        # With a static part, params are the arrays alone: the loss sees the whole model.
        loss_of = loss_fn if static is None else lambda a, b: loss_fn(static.combine(a), b)
        size = leading_size(batch, who)
        if compress is not None:
            residuals, opt_state = _with_residuals(who, opt_state)
        in_place = fusing and runs_kernel(optimizer, opt_state, params)
        settled = _settled(loss_of, has_aux) if in_place else loss_of
        if compress is not None and mesh is not None:
            loss, aux, grads, residuals = exchanged(loss_of, params, residuals, batch)
            out = loss
        else:
            own = params if compress is None else varying_over(axis_name, params)
            out, grads = jax.value_and_grad(settled, has_aux=has_aux)(own, batch)
            loss, aux = out if has_aux else (out, None)
        if axis_name is not None and compress is None:
            loss, grads = _mean_over(axis_name, loss, grads)
        elif axis_name is not None:
            loss = jax.lax.pmean(loss, axis_name)
            grads, residuals = cast(GradientTransformation, compress).update(grads, residuals)
        extras = keep(
            step_extras(loss, size, grads, objective_on(loss_of, batch, has_aux, axis_name))
        )
        if fusing:
            applied = update_and_apply(optimizer, grads, opt_state, params, extras, wait_for=out)
            params, opt_state = applied.params, applied.state
            grad_norm, update_norm = applied.grad_norm, applied.update_norm
        else:
            updates, opt_state = optimizer.update(grads, opt_state, params, **extras)
            params = apply_updates(params, updates)
            grad_norm, update_norm = metric_norm(grads), metric_norm(updates)
        metrics = {"loss": loss, "grad_norm": grad_norm, "update_norm": update_norm}
        metrics.update(get_hyperparams(opt_state))
        if has_aux:
            metrics["aux"] = aux
        if compress is not None:
            opt_state = residuals, opt_state
        return params, opt_state, metrics

    def init_here(params):
        arrays = split_checked(who, params)[0]
        if compress is None:
            return optimizer.init(arrays)
        return compress.init(arrays), optimizer.init(arrays)

    donated = (0, 1) if donate else ()
    if mesh is None:
        plain = jax.jit(functools.partial(step, None), donate_argnums=donated)
        with_static = jax.jit(step, static_argnums=0, donate_argnums=tuple(i + 1 for i in donated))

        arrays_only: bool | None = None  # whether params are all arrays, seen on the first call

        def train_step(params, opt_state, batch):
            nonlocal arrays_only
            if arrays_only is None:
                arrays_only = all(map(is_array, jax.tree.leaves(params)))
            if arrays_only:
                # Later calls skip that look at every leaf (70 us for 400 leaves): a model
                # passed after all still fails here, in jit, before it traces or donates.
                try:
                    return plain(params, opt_state, batch)
                except TypeError:
                    if all(map(is_array, jax.tree.leaves(params))):
                        raise
                    arrays_only = False
            arrays, static = split_checked(who, params)
            arrays, opt_state, metrics = with_static(static, arrays, opt_state, batch)
            return combine(arrays, static), opt_state, metrics

        return _TrainStep(train_step, init_here, plain)

    sharding.check_axis(who, mesh, data_axis, "data_axis")
    compiled: dict[Any, Callable] = {}
    lockstep = jax.process_count() > 1 and mesh.devices.flat[0].platform == "cpu"

    def sharded_step(params, opt_state, batch):
        params, static = split_checked(who, params)
        batch = sharding.place_batch(who, mesh, data_axis, batch)
        shardings = (sharding.shardings_of(params, mesh), sharding.shardings_of(opt_state, mesh))
        params, opt_state = sharding.place((params, opt_state), shardings)
        key = jax.tree.structure(shardings), tuple(jax.tree.leaves(shardings)), static
        if key not in compiled:
            compiled[key] = jax.jit(
                functools.partial(step, static),
                out_shardings=(*shardings, None),
                donate_argnums=donated,
            )
        with jax.set_mesh(mesh):
            out = compiled[key](params, opt_state, batch)
        if lockstep:
            # Across processes on CPU, gloo collectives of steps in flight at once can
            # deadlock when one process runs ahead; wait for each step to finish.
            jax.block_until_ready(out)
        params, opt_state, metrics = out
        return combine(params, static), opt_state, metrics

    def init_on_mesh(params):
        arrays = split_checked(who, params)[0]
        arrays = sharding.place(arrays, sharding.shardings_of(arrays, mesh))
        with jax.set_mesh(mesh):
            inner = jax.jit(optimizer.init)(arrays)
            if compress is None:
                return inner
            per_device = jax.shard_map(
                compress.init,
                mesh=mesh,
                in_specs=P(),
                out_specs=P(data_axis),
                axis_names=frozenset({data_axis}),
            )
            return jax.jit(per_device)(arrays), inner

    return _TrainStep(sharded_step, init_on_mesh)


class _TrainStep:
    """The step: a function with ``init``, and (on one device) the jitted step's ``lower``, etc."""

    __slots__ = ("_call", "_init", "_plain", "__weakref__")  # pmap holds it by weak reference

    def __init__(self, call: TrainStep, init: Callable[[Any], Any], plain: Any = None):
        self._call, self._init, self._plain = call, init, plain

    def __call__(self, params: Any, opt_state: Any, batch: Any) -> tuple[Any, Any, dict]:
        return self._call(params, opt_state, batch)

    def init(self, params: Any) -> Any:
        """The state this step takes for ``params``: ``optimizer.init`` of their arrays.

        On a mesh it is made there, each moment sharded like its param. With
        ``compression`` it is ``(residuals, optimizer's state)``, the state of
        ``chain(compressed_mean(...), optimizer)``, the residuals one row per device
        of the data axis (inside ``shard_map``/``pmap``, call it there).
        """
        return self._init(params)

    def __getattr__(self, name: str) -> Any:
        if self._plain is None:
            raise AttributeError(f"a step on a mesh has no attribute {name!r}")
        return getattr(self._plain, name)


def _pmean(tree: Any, axis_name: Any) -> Any:
    """The mean over the axis of every leaf (integers and booleans as float32 means)."""

    def mean(x: Any) -> Any:
        if not jnp.issubdtype(jnp.result_type(x), jnp.inexact):
            x = jnp.asarray(x, jnp.float32)
        return jax.lax.pmean(x, axis_name)

    return jax.tree.map(mean, tree)


def _with_residuals(who: str, opt_state: Any) -> tuple[Any, Any]:
    if (
        isinstance(opt_state, tuple)
        and len(opt_state) == 2
        and isinstance(opt_state[0], CompressedMeanState | PowerSGDState)
    ):
        return opt_state
    raise ValueError(
        f"{who}: with compression, opt_state holds the error-feedback residuals beside the "
        f"optimizer's state (the state of chain(compressed_mean(...), optimizer)); make it "
        f"with step.init(params), not optimizer.init(params)"
    )
