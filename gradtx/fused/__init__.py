"""One pass over memory per step: ``update`` and ``apply_updates`` fused in a CPU kernel.

XLA:CPU compiles an Adam step written in jax.numpy to three loops over memory
(first moment, second moment, params): 40 bytes per float32 parameter, where
one loop needs 28. :func:`fused_update` runs the whole step, update and
``apply_updates``, in one hand-written loop per learner (``kernels.cc``), in
place on donated buffers, one kernel call per 32 leaves of a tree.

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

from gradtx import tree
from gradtx.core import GradientTransformation, apply_updates, extras_filter
from gradtx.fused.build import FusedKernelsUnavailable, registration_error

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


class _Spec(NamedTuple):
    target: str  # the FFI kernel
    flags: int
    hyper: Callable[[Any], list[Any]]  # old state -> the kernel's scalars
    moments: Callable[[Any], list[Any]]  # old state -> moment trees, in kernel order
    replace: Callable[[Any, list[Any]], Any]  # (new state, new moments) -> new state


_ATTRIBUTE = "_gradtx_fused"

# Leaves per kernel call. In a training step each call starts as soon as its
# leaves' gradients exist, so the update overlaps the rest of the backward
# pass; one call for a whole 300-leaf tree waited for all of it and made the
# step 5-20% slower than optax's per-leaf loops (measured in docs/performance.md).
LEAVES_PER_CALL = 32


def attach(learner: GradientTransformation, spec: _Spec) -> GradientTransformation:
    """Mark ``learner`` (built by a factory in gradtx/learners.py) as having a kernel."""
    setattr(learner.update, _ATTRIBUTE, spec)
    return learner


def is_fused(learner: GradientTransformation) -> bool:
    """Whether :func:`fused_update` has a single-pass kernel for ``learner``.

    True for ``gradtx.adam`` and ``gradtx.adamw`` (without ``nesterov``, ``mask``
    or ``state_dtype``), ``gradtx.sgd`` (with or without momentum; without
    ``state_dtype``) and ``gradtx.rmsprop`` (not centered, without momentum or
    ``state_dtype``), built directly by their factories. A property of the
    learner only: whether a kernel can run on this machine (CPU, a compiler or
    a cached library) is :func:`fused_available`'s question.

    Args:
      learner: any gradient transformation.
    """
    return getattr(learner.update, _ATTRIBUTE, None) is not None


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
    spec: _Spec | None = getattr(learner.update, _ATTRIBUTE, None)
    moments = [] if spec is None else spec.moments(state)
    plain = (
        spec is None
        or jax.default_backend() != "cpu"
        or jax.tree.structure(updates) != jax.tree.structure(params)
        or not _float32_trees(updates, params)
        or any(jnp.result_type(m) != jnp.float32 for m in jax.tree.leaves(moments))
        # A custom call cannot be split over a mesh: XLA would gather the arrays.
        or any(tree.is_split(x) for x in jax.tree.leaves((updates, state, params)))
    )
    if spec is None or plain or not _kernels_registered():  # spec is None: narrows its type
        new_updates, new_state = learner.update(updates, state, params, **extra)
        return apply_updates(params, new_updates), new_state
    # The learner's own update gives every count and scalar of the new state;
    # its moment arithmetic is unused and XLA removes it.
    _, new_state = learner.update(updates, state, params, **extra)
    hyper = jnp.stack([jnp.asarray(x, jnp.float32) for x in spec.hyper(state)])
    param_leaves, treedef = jax.tree.flatten(params)
    grad_leaves = jax.tree.leaves(updates)
    moment_leaves = [treedef.flatten_up_to(m) for m in moments]
    per_leaf = 2 + len(moments)
    stride = per_leaf - 1
    outputs = []
    for group in _groups(len(param_leaves)):  # leaves in calls of LEAVES_PER_CALL
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
            spec.target, results, input_output_aliases=aliases, vmap_method="sequential"
        )
        outputs += call(*operands, threads=_threads(), flags=spec.flags)
    new_params = jax.tree.unflatten(treedef, outputs[::stride])
    new_moments = [
        jax.tree.unflatten(treedef, outputs[1 + k :: stride]) for k in range(len(moments))
    ]
    return new_params, spec.replace(new_state, new_moments)


def _groups(n: int) -> list[range]:
    return [range(i, min(n, i + LEAVES_PER_CALL)) for i in range(0, n, LEAVES_PER_CALL)]


def _threads() -> int:
    # 0: as many ranges as XLA's intra-op pool has threads; GRADTX_FUSED_THREADS caps them.
    return int(os.environ.get("GRADTX_FUSED_THREADS", 0))


# Specs for the learners in gradtx/learners.py: each knows its learner's chain layout.


def _at(hyperparam: Any, block_state: Any) -> Any:
    """A hyperparameter's value at its block's count; a constant's block keeps no count."""
    return hyperparam(block_state.count) if callable(hyperparam) else hyperparam


def _is_zero(x: Any) -> bool:
    # The test add_decayed_weights uses to skip a literal zero.
    return isinstance(x, int | float) and x == 0


def adam_spec(learning_rate, b1, b2, eps, eps_root, weight_decay, *, decoupled: bool) -> _Spec:
    """The spec of ``adam`` (chain: decay, scale_by_adam, rate) or ``adamw`` (adam, decay, rate)."""
    adam_at, wd_at = (0, 1) if decoupled else (1, 0)
    mode = 0 if _is_zero(weight_decay) else (2 if decoupled else 1)

    def hyper(state):
        count = tree.safe_increment(state[adam_at].count)
        corrections = [1 / c for c in tree.bias_corrections((b1, b2), count)]
        wd = 0.0 if mode == 0 else _at(weight_decay, state[wd_at])
        rate = -1 * _at(learning_rate, state[2])  # as scale_by_learning_rate signs it
        return [rate, b1, 1 - b1, b2, 1 - b2, *corrections, eps, eps_root, wd]

    def replace(new_state, moments):
        parts = list(new_state)
        parts[adam_at] = parts[adam_at]._replace(mu=moments[0], nu=moments[1])
        return tuple(parts)

    return _Spec("gradtx_adam", mode, hyper, lambda s: [s[adam_at].mu, s[adam_at].nu], replace)


def sgd_spec(learning_rate, momentum, nesterov, unit_gain, weight_decay) -> _Spec:
    """The spec of ``sgd`` (chain: decay, trace or identity, rate)."""
    flags = (
        (0 if _is_zero(weight_decay) else 1)
        | (2 if momentum is not None else 0)
        | (4 if nesterov else 0)
        | (8 if unit_gain else 0)
    )

    def hyper(state):
        mu = 0.0 if momentum is None else tree.resolve(momentum, state[1].count)
        wd = 0.0 if flags & 1 == 0 else _at(weight_decay, state[0])
        return [-1 * _at(learning_rate, state[2]), mu, 1 - mu, wd]

    if momentum is None:
        return _Spec("gradtx_sgd", flags, hyper, lambda s: [], lambda new, moments: new)

    def replace(new_state, moments):
        return (new_state[0], new_state[1]._replace(trace=moments[0]), *new_state[2:])

    return _Spec("gradtx_sgd", flags, hyper, lambda s: [s[1].trace], replace)


def rmsprop_spec(learning_rate, decay, eps, eps_in_sqrt, weight_decay) -> _Spec:
    """The spec of ``rmsprop`` without centering or momentum (chain: decay, rms, rate, identity)."""
    flags = (0 if _is_zero(weight_decay) else 1) | (2 if eps_in_sqrt else 0)

    def hyper(state):
        wd = 0.0 if flags & 1 == 0 else _at(weight_decay, state[0])
        return [-1 * _at(learning_rate, state[2]), decay, 1 - decay, eps, wd]

    def replace(new_state, moments):
        return (new_state[0], new_state[1]._replace(nu=moments[0]), *new_state[2:])

    return _Spec("gradtx_rmsprop", flags, hyper, lambda s: [s[1].nu], replace)
