"""One pass over memory per step: ``update`` and ``apply_updates`` fused in a CPU kernel.

XLA:CPU compiles an Adam step written in jax.numpy to three loops over memory
(first moment, second moment, params): 40 bytes per float32 parameter, where
one loop needs 28. :func:`fused_update` runs the whole step, update and
``apply_updates``, in one hand-written loop per learner (``kernels.cc``), in
place on donated buffers, one kernel call per 32 leaves of a tree
(``gradtx.buffers.LEAVES_PER_RUN``) that share their options.

Which kernel runs is read from the learner's recipe (:mod:`gradtx.recipe`):
the blocks it chains and their hyperparameters, as data. A recipe of the shape

    [clip_by_global_norm] [add_decayed_weights] [rule] [scale_by_sign]
        [add_decayed_weights] scale [trace]

(brackets: optional; ``identity`` blocks anywhere; the second decay only after
a rule; the sign only after plain SGD's rule or ``ema``'s, the rules with a
``sign`` option; the last ``trace`` is momentum on the scaled steps, as in
rmsprop) runs the kernel of its rule, or the plain SGD kernel where it has
none. The rules with kernels are ``scale_by_adam`` (also with ``nesterov``),
``scale_by_amsgrad``, ``scale_by_adamax``, ``scale_by_belief``,
``scale_by_radam``, ``scale_by_yogi``, ``scale_by_adan``, ``scale_by_rprop``,
``scale_by_optimistic_gradient``, ``trace``, ``ema``, ``scale_by_rms``,
``scale_by_stddev`` (centered RMSProp), ``scale_by_rss`` (Adagrad) and
``scale_by_lion``. A weight decay with a mask runs as one call per set of
leaves that decay alike: a leaf it leaves out gets no decay at all.
Moments kept in bfloat16 (``state_dtype=jnp.bfloat16``) run the same loops
with each moment widened on the way in and rounded on the way out exactly as
:func:`gradtx.tree.stochastic_round` rounds it, with the seed each block
declares (its ``recipe.declare(seed=...)``): the bits the plain path stores
wherever the float32 value before rounding is the plain path's.
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
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import buffers, recipe, tree
from gradtx.core import IDENTITY, GradientTransformation, apply_updates, extras_filter
from gradtx.fused import build, layout
from gradtx.fused.build import FusedKernelsUnavailable, registration_error
from gradtx.transforms.averages import TRACE
from gradtx.transforms.clipping import CLIP_BY_GLOBAL_NORM
from gradtx.transforms.scaling import SCALE
from gradtx.transforms.sign import SCALE_BY_SIGN
from gradtx.transforms.weight_decay import ADD_DECAYED_WEIGHTS

__all__ = [
    "FusedFallbackWarning",
    "Applied",
    "FusedKernelsUnavailable",
    "after",
    "fused_available",
    "fused_update",
    "is_fused",
    "runs_kernel",
    "update_and_apply",
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
    then: recipe.Stage | None  # the second block of a composite rule (recipe.composite)
    sign: bool  # a scale_by_sign after the rule: a signed rule's "sign" option
    clip: recipe.Stage | None
    coupled: recipe.Stage | None
    decoupled: recipe.Stage | None
    rate: recipe.Stage
    momentum: recipe.Stage | None  # a trace after the rate: momentum on the scaled steps

    @property
    def _stages(self) -> tuple[recipe.Stage, ...]:
        """The stages with moments, in the kernel's order of moments."""
        return tuple(s for s in (self.core, self.then, self.momentum) if s is not None)

    @property
    def moments(self) -> tuple[Any, ...]:
        """The kernel's moment trees: the rule's, then the momentum's trace."""
        return tuple(m for s in self._stages for m in s.moments)

    @property
    def seeds(self) -> jax.Array:
        """The stochastic-rounding seed of each of the rule's moment places (0 where unused),
        then the trace's, as uint32[layout.SEEDS]: each moment rounds with its block's."""
        rule = [s.seed for s in (self.core, self.then) if s is not None for _ in s.moments]
        trace = 0 if self.momentum is None else self.momentum.seed
        seeds = [*rule, *[0] * (layout.MOMENT_PLACES - len(rule)), trace]
        return jnp.stack([jnp.asarray(seed).astype(jnp.uint32) for seed in seeds])

    @property
    def moment_dtype(self) -> str | None:
        """The dtype all the kernel's moments are kept in (float32 if none); None if mixed."""
        dtypes = {jnp.result_type(m).name for m in jax.tree.leaves(self.moments)} or {"float32"}
        return dtypes.pop() if len(dtypes) == 1 else None

    @property
    def symbol(self) -> str:
        """The kernel's FFI target, for the dtype its moments are kept in."""
        return layout.symbol(self.rule, str(self.moment_dtype))

    def put(self, state: Any, moments: tuple[Any, ...]) -> Any:
        """``state`` with the kernel's new moments (in :attr:`moments`' order) put back."""
        for stage in self._stages:
            mine, moments = moments[: len(stage.moments)], moments[len(stage.moments) :]
            state = stage.put(state, mine)
        return state


def _plan(stages: tuple[recipe.Stage, ...] | None) -> _Plan | None:
    """Match ``[clip] [decay] [rule [then]] [sign] [decay] scale [trace]``, identities dropped,
    or None; ``rule then`` is two blocks whose rules make a composite rule."""
    if stages is None:
        return None
    rest = [s for s in stages if s.rule is not IDENTITY]

    def take(wanted: Callable[[recipe.Rule], bool]) -> recipe.Stage | None:
        return rest.pop(0) if rest and wanted(rest[0].rule) else None

    clip = take(lambda r: r is CLIP_BY_GLOBAL_NORM)
    coupled = take(lambda r: r is ADD_DECAYED_WEIGHTS)
    core = take(lambda r: r.kernel is not None)
    rule = layout.SGD if core is None else core.rule
    then = None if core is None else take(lambda r: recipe.composed(rule, r) is not None)
    if then is not None:
        rule = recipe.composed(rule, then.rule) or rule
    sign = take(lambda r: r is SCALE_BY_SIGN) is not None
    decoupled = take(lambda r: r is ADD_DECAYED_WEIGHTS) if core is not None or sign else None
    rate = take(lambda r: r is SCALE)
    momentum = take(lambda r: r is TRACE)
    if rate is None or rest or (sign and not rule.signed):
        return None
    return _Plan(rule, core, then, sign, clip, coupled, decoupled, rate, momentum)


def _fusable(learner: GradientTransformation, state: Any) -> _Plan | None:
    """The plan for ``learner`` at ``state``, if its recipe has one and its moments are all
    float32 or all bfloat16 (a ``state_dtype``, rounded stochastically as the blocks do)."""
    found = recipe.recipe_of(learner)
    plan = None if found is None else _plan(found(state))
    return plan if plan is not None and plan.moment_dtype in layout.MOMENT_DTYPES else None


def is_fused(learner: GradientTransformation) -> bool:
    """Whether :func:`fused_update` has a single-pass kernel for ``learner``.

    True where the learner's recipe (see :mod:`gradtx.fused`) matches a kernel
    and its moments are all float32 or all bfloat16: ``gradtx.adam``,
    ``gradtx.adamw``, ``gradtx.nadam`` and ``gradtx.nadamw`` (``nesterov`` and ``mask``
    included), ``gradtx.amsgrad``, ``gradtx.adamax``, ``gradtx.adamaxw``,
    ``gradtx.adabelief``, ``gradtx.radam``, ``gradtx.yogi``, ``gradtx.sgd``,
    ``gradtx.sign_sgd``, ``gradtx.signum``, ``gradtx.adan``, ``gradtx.rprop``,
    ``gradtx.optimistic_gradient_descent``, ``gradtx.optimistic_adam``,
    ``gradtx.optimistic_adam_v2``,
    ``gradtx.rmsprop`` (centered or not, with or without momentum),
    ``gradtx.adagrad`` and ``gradtx.lion`` (with or without ``mask``), with
    ``state_dtype`` None, float32 or bfloat16, and the same blocks chained by hand, after
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
        stacklevel=_outside_gradtx(),
    )


def _outside_gradtx() -> int:
    """The ``stacklevel`` of the first caller outside the gradtx package (the user's code)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(2), 2  # 1 is the caller's frame: the one that warns
    while frame is not None and frame.f_code.co_filename.startswith(package + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def _kernel_plan(
    learner: GradientTransformation, updates: Any, state: Any, params: Any
) -> _Plan | None:
    """The plan of the kernel that will run for this update, or None for the plain path."""
    plan = _fusable(learner, state)
    fusable = (
        plan is not None
        and jax.default_backend() == "cpu"
        and jax.tree.structure(updates) == jax.tree.structure(params)
        and _float32_trees(updates, params)
        # A custom call cannot be split over a mesh: XLA would gather the arrays.
        and not any(tree.is_split(x) for x in jax.tree.leaves((updates, state, params)))
    )
    return plan if fusable and _kernels_registered() else None


def runs_kernel(learner: GradientTransformation, state: Any, params: Any) -> bool:
    """Whether :func:`update_and_apply` runs a kernel for gradients shaped and typed as ``params``.

    Tells a training step, before it takes the gradients, that the params will
    be written in place (so :func:`after` can order the work around it).
    """
    return _kernel_plan(learner, params, state, params) is not None


def after(value: jax.Array, deps: Any) -> jax.Array:
    """``value``, unchanged, but computed only once every array of ``deps`` is.

    XLA orders work by data dependence alone and, on CPU, runs independent
    work side by side, keeping the buffers of both alive. A training step
    whose backward pass starts only once the loss is computed frees the
    forward pass's buffers first: for a 10M-parameter elementwise model that
    halves the step's temporary memory (80 MB to 40 MB). A custom call that
    copies nothing (its result is its operand's buffer), which XLA cannot
    see through; ``value`` as it is where the kernels are unavailable.
    """
    if registration_error() is not None:
        return value
    call = jax.ffi.ffi_call(
        build.AFTER,
        jax.ShapeDtypeStruct(jnp.shape(value), jnp.result_type(value)),
        input_output_aliases={0: 0},
        vmap_method="broadcast_all",
    )
    return call(value, *jax.tree.leaves(deps))


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
    applied = update_and_apply(learner, updates, state, params, extra)
    return applied.params, applied.state


class Applied(NamedTuple):
    """What :func:`update_and_apply` returns: the step, and the norms a training loop logs."""

    params: Any
    state: Any
    grad_norm: jax.Array  # of the gradients given, as gradtx.tree.metric_norm computes it
    update_norm: jax.Array  # of the updates applied, likewise


def update_and_apply(
    learner: GradientTransformation,
    updates: Any,
    state: Any,
    params: Any,
    extra: Mapping[str, Any] | None = None,
    wait_for: Any = (),
) -> Applied:
    """:func:`fused_update`, with the global L2 norms of the gradients and of the updates.

    ``extra`` holds the keyword extras for ``learner.update``. The kernels
    write the params in place, so XLA copies every parameter that something
    else may still read. ``wait_for`` is a tree of arrays computed from the
    params (the loss, say) that the kernels then take as operands they never
    read: nothing that reads the params can come after them, and the copies
    go (in a training step of a 10M-parameter leaf, two 40 MB copies).

    The kernels sum both squares in the pass that updates the params (in
    float64 within each call, in float32 across calls), so the norms cost no
    pass over memory of their own; the plain path computes them with
    :func:`gradtx.tree.metric_norm`. Either way they agree with
    ``tree.metric_norm(updates)`` and the norm of ``learner.update``'s updates to
    float32 rounding, and overflow to inf past float32's range as it does.
    Under ``jit`` a norm that is not used costs nothing on the plain path.
    """
    extra = extras_filter(learner.update)(dict(extra or {}))  # an optax learner takes none
    plan = _kernel_plan(learner, updates, state, params)
    if (
        plan is None
        # None where a hyperparameter is not a scalar: the plain path broadcasts it.
        or (hyper := _scalars(plan, updates)) is None
    ):
        new_updates, new_state = learner.update(updates, state, params, **extra)
        new_params = apply_updates(params, new_updates)
        return Applied(
            new_params, new_state, tree.metric_norm(updates), tree.metric_norm(new_updates)
        )
    # The learner's own update gives every count and scalar of the new state;
    # its moment arithmetic is unused and XLA removes it.
    _, new_state = learner.update(updates, state, params, **extra)
    new_params, new_moments, squares = _call(
        plan.symbol, _flags(plan, updates), hyper, plan.seeds, params, updates, plan.moments,
        wait_for,
    )  # fmt: skip
    new_state = plan.put(new_state, new_moments)
    grad_norm, update_norm = jnp.sqrt(squares)
    return Applied(new_params, new_state, grad_norm, update_norm)


def _decay(stage: recipe.Stage | None, updates: Any) -> tuple[Any, list[bool]]:
    """A weight decay's coefficient and, for each leaf, whether it decays (a mask's say).

    The coefficient is None where the decayed leaves' coefficients differ.
    """
    treedef = jax.tree.structure(updates)
    if stage is None:
        return 0.0, [False] * treedef.num_leaves
    (given,) = stage.values(updates)
    # One coefficient for every leaf, or one per leaf with None where it has no decay.
    one = jax.tree_util.all_leaves([given])
    per_leaf = [given] * treedef.num_leaves if one else treedef.flatten_up_to(given)
    decays = [d for d in per_leaf if d is not None]
    same = all(d is decays[0] for d in decays)
    return (decays[0] if decays else 0.0) if same else None, [d is not None for d in per_leaf]


def _scalars(plan: _Plan, updates: Any) -> jax.Array | None:
    """The kernel's scalar operand, in its layout's order; None if one is not a scalar."""
    (coupled, _), (decoupled, _) = _decay(plan.coupled, updates), _decay(plan.decoupled, updates)
    trace = (
        {}
        if plan.momentum is None
        else dict(zip(TRACE.scalars, plan.momentum.values(updates), strict=True))
    )
    given = {
        "grad_scale": 1.0 if plan.clip is None else plan.clip.values(updates)[0],
        "coupled_decay": coupled,
        "decoupled_decay": decoupled,
        "rate": plan.rate.values(updates)[0],
        "momentum": trace.get("decay", 0.0),
        "one_minus_momentum": trace.get("one_minus_decay", 0.0),
    }
    values = [given[name] for name in layout.SHARED_SCALARS]
    values += [] if plan.core is None else plan.core.values(updates)
    # The second rule's scalars never read its incoming updates (recipe.composite).
    values += [] if plan.then is None else plan.then.values(None)
    if any(v is None or jnp.shape(v) != () for v in values):
        return None
    return jnp.stack([jnp.asarray(v, jnp.float32) for v in values])


def _flags(plan: _Plan, updates: Any) -> list[int]:
    """The kernel's option bits for each leaf, in its layout's order (a mask sets them per leaf)."""
    momentum = {} if plan.momentum is None else plan.momentum.options
    given = {
        "grad_scale": plan.clip is not None,
        "momentum": plan.momentum is not None,
        "momentum_nesterov": momentum.get("nesterov", False),
        "momentum_unit_gain": momentum.get("unit_gain", False),
        **({} if plan.core is None else plan.core.options),
        **({} if plan.then is None else plan.then.options),
    }
    if plan.rule.signed:
        given["sign"] = plan.sign
    coupled, decoupled = (_decay(stage, updates)[1] for stage in (plan.coupled, plan.decoupled))
    names, flags = layout.options(plan.rule), []
    for c, d in zip(coupled, decoupled, strict=True):
        on = {**given, "coupled_decay": c, "decoupled_decay": d}
        flags.append(sum(1 << bit for bit, name in enumerate(names) if on[name]))
    return flags


def _call(
    kernel: str,
    flags: int | list[int],
    hyper: jax.Array,
    seeds: jax.Array,
    params: Any,
    updates: Any,
    moments: tuple[Any, ...],
    wait_for: Any = (),
) -> tuple[Any, tuple[Any, ...], jax.Array]:
    """Run ``kernel`` in place, each call after the arrays of ``wait_for``: new params, new
    moments (in its rule's order), and the sums of squares of the gradients and updates.

    ``flags``: the option bits of every leaf, or a list of each leaf's. ``seeds``: the
    rounding seeds of the rule's moments and the trace's (uint32[layout.SEEDS], see
    ``_Plan.seeds``; read for bfloat16 moments only).
    """
    param_leaves, treedef = jax.tree.flatten(params)
    grad_leaves = jax.tree.leaves(updates)
    moment_leaves = [treedef.flatten_up_to(m) for m in moments]
    if isinstance(flags, int):
        flags = [flags] * len(param_leaves)
    per_leaf = 2 + len(moments)
    stride = per_leaf - 1
    outputs: list[Any] = [None] * len(param_leaves)  # each leaf's new params and moments
    squares = jnp.zeros(2, jnp.float32)
    for bits, group in _runs(flags):
        operands = [hyper, seeds]
        results = [jax.ShapeDtypeStruct((2,), jnp.float32)]  # the run's two sums of squares
        for i in group:
            p, g = param_leaves[i], grad_leaves[i]
            own = [m[i] for m in moment_leaves]
            operands += [p, g, *own]
            results += [jax.ShapeDtypeStruct(x.shape, jnp.result_type(x)) for x in (p, *own)]
        # Each leaf's params and moments are written over its inputs (result 0 is the sums).
        aliases = {
            2 + k * per_leaf + j: 1 + k * stride + (j - 1 if j else 0)
            for k in range(len(group))
            for j in [0, *range(2, per_leaf)]
        }
        call = jax.ffi.ffi_call(
            kernel, results, input_output_aliases=aliases, vmap_method="sequential"
        )
        run_squares, *run_outputs = call(
            *operands, *jax.tree.leaves(wait_for), threads=_threads(), flags=bits
        )
        squares = squares + run_squares
        for k, i in enumerate(group):
            outputs[i] = run_outputs[k * stride : (k + 1) * stride]
    new_params = jax.tree.unflatten(treedef, [leaf[0] for leaf in outputs])
    new_moments = tuple(
        jax.tree.unflatten(treedef, [leaf[1 + k] for leaf in outputs]) for k in range(len(moments))
    )
    return new_params, new_moments, squares


def _runs(flags: list[int]) -> list[tuple[int, list[int]]]:
    """The kernel calls for leaves with these option bits: (bits, the leaves' indices) each.

    The leaves of a call share their bits (a weight-decay mask splits them), in tree
    order, at most ``LEAVES_PER_RUN`` to a call: the fewest calls there can be.
    """
    # In a training step each call starts as soon as its leaves' gradients exist, so the
    # update overlaps the rest of the backward pass; one call for a whole 300-leaf tree
    # waited for all of it and made the step 5-20% slower than optax's per-leaf loops
    # (measured in docs/performance.md).
    run = buffers.LEAVES_PER_RUN
    alike: dict[int, list[int]] = {}
    for i, bits in enumerate(flags):
        alike.setdefault(bits, []).append(i)
    return [
        (bits, leaves[j : j + run])
        for bits, leaves in alike.items()
        for j in range(0, len(leaves), run)
    ]


def _threads() -> int:
    # 0: as many ranges as XLA's intra-op pool has threads; GRADTX_FUSED_THREADS caps them.
    return int(os.environ.get("GRADTX_FUSED_THREADS", 0))
