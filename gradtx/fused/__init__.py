"""One pass over memory per step: ``update`` and ``apply_updates`` fused in a CPU kernel.

XLA:CPU compiles an Adam step written in jax.numpy to three loops over memory
(first moment, second moment, params): 40 bytes per float32 parameter, where
one loop needs 28. :func:`fused_update` runs the whole step, update and
``apply_updates``, in one hand-written loop per learner (``kernels.cc``), in
place on donated buffers, one kernel call per 32 leaves of a tree
(``gradtx.buffers.LEAVES_PER_RUN``).

Which kernel runs is read from the learner's recipe (:mod:`gradtx.recipe`):
the blocks it chains and their hyperparameters, as data. A recipe of the shape

    [clip_by_global_norm] [add_decayed_weights] [rule] [add_decayed_weights] scale

(brackets: optional; ``identity`` blocks anywhere; the second decay only after
a rule) runs the kernel of its rule, or the plain SGD kernel where it has none.
The rules with kernels are ``scale_by_adam``, ``trace``, ``scale_by_rms``,
``scale_by_rss`` (Adagrad) and ``scale_by_lion``.
Each block's moments are found through the recipe, so a chain in another order,
or inside a wrapper that keeps no recipe, takes the plain path; it never feeds
a kernel the wrong state.

The state it returns is the learner's own state, computed by the learner's own
``update`` for everything but the moments (under ``jit`` XLA drops the unused
moment arithmetic), so the fused and the plain path can be mixed freely, and
checkpoints do not care which one ran.

Where no kernel can be built or loaded (no C++ compiler and nothing cached),
:func:`fused_update` takes the plain path and says so once per process with a
:class:`FusedFallbackWarning`; :func:`fused_available` asks beforehand.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import buffers, recipe, tree
from gradtx.core import IDENTITY, GradientTransformation, apply_updates, extras_filter
from gradtx.fused import layout
from gradtx.fused.build import FusedKernelsUnavailable, registration_error
from gradtx.transforms.clipping import CLIP_BY_GLOBAL_NORM
from gradtx.transforms.scaling import SCALE
from gradtx.transforms.weight_decay import ADD_DECAYED_WEIGHTS

__all__ = [
    "FusedFallbackWarning",
    "FusedKernelsUnavailable",
    "fused_available",
    "fused_update",
    "is_fused",
]


class FusedFallbackWarning(RuntimeWarning):
    """:func:`fused_update` ran the plain path because its kernels could not be built or loaded.

    Emitted once per process, with the reason (a :class:`FusedKernelsUnavailable`
    message: usually that no C++ compiler was found). The numbers are the same;
    only the single pass over memory is lost. Silence it with
    ``warnings.filterwarnings("ignore", category=gradtx.FusedFallbackWarning)``,
    or make it an error with ``"error"`` instead of ``"ignore"``.
    """


class _Plan(NamedTuple):
    """A recipe matched to a kernel: its rule's stage and the shared stages around it."""

    rule: recipe.Rule
    core: recipe.Stage | None  # the stage of the rule; None for plain SGD
    clip: recipe.Stage | None
    coupled: recipe.Stage | None
    decoupled: recipe.Stage | None
    rate: recipe.Stage


def _plan(stages: tuple[recipe.Stage, ...] | None) -> _Plan | None:
    """Match ``[clip] [decay] [rule] [decay] scale`` (identities dropped), or None."""
    if stages is None:
        return None
    rest = [s for s in stages if s.rule is not IDENTITY]

    def take(wanted: Callable[[recipe.Rule], bool]) -> recipe.Stage | None:
        return rest.pop(0) if rest and wanted(rest[0].rule) else None

    clip = take(lambda r: r is CLIP_BY_GLOBAL_NORM)
    coupled = take(lambda r: r is ADD_DECAYED_WEIGHTS)
    core = take(lambda r: r.kernel is not None)
    decoupled = take(lambda r: r is ADD_DECAYED_WEIGHTS) if core is not None else None
    rate = take(lambda r: r is SCALE)
    if rate is None or rest:
        return None
    rule = layout.SGD if core is None else core.rule
    return _Plan(rule, core, clip, coupled, decoupled, rate)


def _fusable(learner: GradientTransformation, state: Any) -> _Plan | None:
    """The plan for ``learner`` at ``state``, if its recipe has one with float32 moments."""
    found = recipe.recipe_of(learner)
    plan = None if found is None else _plan(found(state))
    moments = [] if plan is None or plan.core is None else plan.core.moments
    if any(jnp.result_type(m) != jnp.float32 for m in jax.tree.leaves(moments)):
        return None
    return plan


def is_fused(learner: GradientTransformation) -> bool:
    """Whether :func:`fused_update` has a single-pass kernel for ``learner``.

    True where the learner's recipe (see :mod:`gradtx.fused`) matches a kernel
    and its moments are float32: ``gradtx.adam``, ``gradtx.adamw`` (without
    ``nesterov`` or ``mask``), ``gradtx.sgd``, ``gradtx.rmsprop`` (not
    centered, without momentum), ``gradtx.adagrad`` and ``gradtx.lion``
    (without ``mask``), with float32 moments (``state_dtype`` None or
    float32), and the same blocks chained by hand, after
    ``clip_by_global_norm``, or built by ``inject_hyperparams``. A property of
    the learner only: whether a kernel can run on this machine (CPU, a
    compiler or a cached library) is :func:`fused_available`'s question.

    Args:
      learner: any gradient transformation.
    """
    if recipe.recipe_of(learner) is None:
        return False
    found = []
    # Recipes read states; an abstract one of a single float32 parameter costs nothing.
    jax.eval_shape(lambda: found.append(_fusable(learner, learner.init(jnp.zeros(()))) is not None))
    return found[0]


def fused_available() -> bool:
    """Whether :func:`fused_update`'s kernels can run here.

    True when JAX's default backend is the CPU and the kernel library is
    cached for this CPU or can be built (this builds it if needed: a few
    seconds, once per machine) and loads. Never raises and never warns; where
    it is False, :func:`fused_update` and ``fused=True`` training take the
    plain path (with one :class:`FusedFallbackWarning` for a missing library).
    ``gradtx.fused.build.registration_error()`` gives the reason.
    """
    return jax.default_backend() == "cpu" and registration_error() is None


def _kernels_registered() -> bool:
    """Register the kernels; if they cannot be, warn (once per reason) and say False."""
    error = registration_error()
    if error is not None:
        _warn_fallback(str(error))
    return error is None


@functools.cache
def _warn_fallback(reason: str) -> None:
    # Cached so that every trace of every fused step of the process warns once in all.
    warnings.warn(
        FusedFallbackWarning(
            f"gradtx.fused_update runs the plain learner.update and apply_updates (the same "
            f"numbers, without the single pass over memory): its CPU kernels are unavailable. "
            f"{reason}"
        ),
        stacklevel=4,  # fused_update's caller
    )


def _float32_trees(*trees: Any) -> bool:
    leaves = [x for t in trees for x in jax.tree.leaves(t)]
    return bool(leaves) and all(jnp.result_type(x) == jnp.float32 for x in leaves)


def fused_update(
    learner: GradientTransformation, updates: Any, state: Any, params: Any, **extra: Any
) -> tuple[Any, Any]:
    """``learner.update`` then ``apply_updates``, in one pass over memory where possible.

    .. math:: (\\theta_{t+1}, s_{t+1}) = (\\theta_t + u_t, s_{t+1}),
              \\quad (u_t, s_{t+1}) = \\text{learner.update}(g_t, s_t, \\theta_t)

    On CPU, for a learner with a kernel (see :func:`is_fused`) and a tree of
    float32 params and gradients, one compiled C++ loop reads every parameter,
    gradient and moment once and writes params and moments once: 28 bytes per
    parameter for Adam instead of the 40 of XLA's three loops. Jit the calling
    step and donate ``params`` and ``state`` so the kernel writes in place.
    Anything else (another learner, other dtypes, another backend) runs
    ``learner.update`` and ``apply_updates``: the same numbers either way (to
    float32 rounding, rtol 1e-6).

    The kernels are built once per machine with its C++ compiler (a few
    seconds, cached under ``~/.cache/gradtx`` for the CPU they were built for);
    a cached library needs no compiler. Where none is cached and none can be
    built, the plain path runs and a :class:`FusedFallbackWarning` (once per
    process) says why; :func:`fused_available` tells beforehand. They run on one device:
    arrays split over a mesh with explicit sharding take the plain path; under
    automatic sharding the split is invisible while tracing, so for params
    sharded over a mesh call ``learner.update`` and ``apply_updates``.
    Not differentiable.

    Args:
      learner: the learner, e.g. ``gradtx.adam(1e-3)``.
      updates: the gradients, shaped like ``params``.
      state: the learner's state.
      params: the params to update.
      **extra: keyword extras for ``learner.update``.

    Returns:
      ``(new_params, new_state)``.
    """
    extra = extras_filter(learner.update)(extra)  # an optax learner takes none
    plan = _fusable(learner, state)
    fusable = (
        plan is not None
        and jax.default_backend() == "cpu"
        and jax.tree.structure(updates) == jax.tree.structure(params)
        and _float32_trees(updates, params)
        # A custom call cannot be split over a mesh: XLA would gather the arrays.
        and not any(tree.is_split(x) for x in jax.tree.leaves((updates, state, params)))
    )
    if (
        plan is None
        or not fusable
        or not _kernels_registered()
        # None where a hyperparameter is not a scalar: the plain path broadcasts it.
        or (hyper := _scalars(plan, updates)) is None
    ):
        new_updates, new_state = learner.update(updates, state, params, **extra)
        return apply_updates(params, new_updates), new_state
    # The learner's own update gives every count and scalar of the new state;
    # its moment arithmetic is unused and XLA removes it.
    _, new_state = learner.update(updates, state, params, **extra)
    moments = () if plan.core is None else plan.core.moments
    new_params, new_moments = _call(
        str(plan.rule.kernel), _flags(plan), hyper, params, updates, moments
    )
    return new_params, new_state if plan.core is None else plan.core.put(new_state, new_moments)


def _scalars(plan: _Plan, updates: Any) -> jax.Array | None:
    """The kernel's scalar operand, in its layout's order; None if one is not a scalar."""
    given = {
        "grad_scale": 1.0 if plan.clip is None else plan.clip.values(updates)[0],
        "coupled_decay": 0.0 if plan.coupled is None else plan.coupled.values(updates)[0],
        "decoupled_decay": 0.0 if plan.decoupled is None else plan.decoupled.values(updates)[0],
        "rate": plan.rate.values(updates)[0],
    }
    values = [given[name] for name in layout.SHARED_SCALARS]
    values += [] if plan.core is None else plan.core.values(updates)
    if any(jnp.shape(v) != () for v in values):
        return None
    return jnp.stack([jnp.asarray(v, jnp.float32) for v in values])


def _flags(plan: _Plan) -> int:
    """The kernel's option bits, in its layout's order."""
    given = {
        "grad_scale": plan.clip is not None,
        "coupled_decay": plan.coupled is not None,
        "decoupled_decay": plan.decoupled is not None,
    }
    given.update({} if plan.core is None else plan.core.options)
    return sum(1 << bit for bit, name in enumerate(layout.options(plan.rule)) if given[name])


def _call(
    kernel: str, flags: int, hyper: jax.Array, params: Any, updates: Any, moments: tuple[Any, ...]
) -> tuple[Any, tuple[Any, ...]]:
    """Run ``kernel`` in place: new params and new moments (in its rule's order)."""
    param_leaves, treedef = jax.tree.flatten(params)
    grad_leaves = jax.tree.leaves(updates)
    moment_leaves = [treedef.flatten_up_to(m) for m in moments]
    per_leaf = 2 + len(moments)
    stride = per_leaf - 1
    outputs = []
    for group in _runs(len(param_leaves)):
        operands, results = [hyper], []
        for i in group:
            p, g = param_leaves[i], grad_leaves[i]
            own = [m[i] for m in moment_leaves]
            operands += [p, g, *own]
            results += [jax.ShapeDtypeStruct(p.shape, jnp.float32)] * (1 + len(own))
        aliases = {
            1 + k * per_leaf + j: k * stride + (j - 1 if j else 0)
            for k in range(len(group))
            for j in [0, *range(2, per_leaf)]
        }
        call = jax.ffi.ffi_call(
            kernel, results, input_output_aliases=aliases, vmap_method="sequential"
        )
        outputs += call(*operands, threads=_threads(), flags=flags)
    new_params = jax.tree.unflatten(treedef, outputs[::stride])
    new_moments = tuple(
        jax.tree.unflatten(treedef, outputs[1 + k :: stride]) for k in range(len(moments))
    )
    return new_params, new_moments


def _runs(n: int) -> list[range]:
    # In a training step each call starts as soon as its leaves' gradients exist, so the
    # update overlaps the rest of the backward pass; one call for a whole 300-leaf tree
    # waited for all of it and made the step 5-20% slower than optax's per-leaf loops
    # (measured in docs/performance.md).
    run = buffers.LEAVES_PER_RUN
    return [range(i, min(n, i + run)) for i in range(0, n, run)]


def _threads() -> int:
    # 0: as many ranges as XLA's intra-op pool has threads; GRADTX_FUSED_THREADS caps them.
    return int(os.environ.get("GRADTX_FUSED_THREADS", 0))
