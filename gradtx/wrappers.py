"""Live hyperparameters: keep them in the optimizer state, read them, change them.

``inject_hyperparams(gradtx.adam)(learning_rate=1e-3)`` stores each numeric
hyperparameter as a float32 array in the state, so changing one is a new
state, not a new program: a jitted train step never recompiles for it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.combine import PartitionState
from gradtx.core import GradientTransformation, extras_filter


class InjectHyperparamsState(NamedTuple):
    """State of :func:`inject_hyperparams`: the count, the hyperparameters and the inner state."""

    count: jax.Array  # int32: updates applied so far (evaluates the schedules)
    hyperparams: dict  # name -> value (float32 for floating ones), settable with set_hyperparams
    scheduled: dict  # name -> float32 value its schedule gave for the latest update
    inner: Any


def _is_array(value: Any) -> bool:
    return hasattr(value, "dtype") and hasattr(value, "shape")


def _int_defaults(factory: Callable) -> set[str]:
    """The factory's arguments whose default is an int: counts and lengths, decided when built."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {
        p.name for p in parameters if isinstance(p.default, int) and not isinstance(p.default, bool)
    }


def _as_state(value: Any) -> jax.Array:
    """A hyperparameter as kept in the state: floating ones as float32, others as they are."""
    if isinstance(value, int | float) or jnp.issubdtype(jnp.result_type(value), jnp.floating):
        return jnp.asarray(value, jnp.float32)
    return jnp.asarray(value)  # an integer or boolean array, or a PRNG key: dtype kept


def inject_hyperparams(learner_factory: Callable[..., GradientTransformation]):
    """Build a learner whose numeric hyperparameters live in its state.

    ``inject_hyperparams(factory)(**kwargs)`` returns a transform that calls
    ``factory(**kwargs)`` with every floating argument (a Python number, or a
    floating array) replaced by a float32 value kept in the state, and every
    schedule replaced by its value at the current step count. Arrays of other
    dtypes (integer or boolean arrays, PRNG keys) are kept in the state as they
    are, as optax does. Python bools, strings, dtypes and Python ints given for
    an argument whose default is an int (a length or count, such as
    ``patience``) pass through unchanged, as static arguments. The factory's
    state must not depend on the hyperparameters' values (true of every gradtx
    learner). Extras reach the inner learner only if its ``update`` takes them.

    Args:
      learner_factory: a function returning a transform, e.g. ``gradtx.sgd``.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)
      >>> grads = {"w": jnp.ones(2)}
      >>> state = gradtx.set_hyperparams(opt.init(grads), learning_rate=0.5)
      >>> updates, state = opt.update(grads, state)
      >>> print(updates["w"])
      [-0.5 -0.5]

    References:
      optax: ``optax.inject_hyperparams``.
    """
    int_defaults = _int_defaults(learner_factory)

    @functools.wraps(learner_factory)
    def build(*args: Any, **kwargs: Any) -> GradientTransformation:
        if args:
            raise TypeError(
                f"inject_hyperparams({learner_factory.__name__}): pass hyperparameters by "
                f"name, e.g. learning_rate=1e-3, so that they can be read and set by name"
            )

        def in_state(name: str, value: Any) -> bool:
            if isinstance(value, bool):
                return False
            if isinstance(value, int):
                return name not in int_defaults
            return isinstance(value, float) or _is_array(value)

        numeric = {k: v for k, v in kwargs.items() if in_state(k, v)}
        schedules = {k: v for k, v in kwargs.items() if callable(v) and not _is_array(v)}
        static = {k: v for k, v in kwargs.items() if k not in numeric and k not in schedules}
        # Validates the concrete values once, under the factory's name; its update's
        # signature says which extras to forward.
        keep = extras_filter(learner_factory(**kwargs).update)

        def learner(hyperparams: Mapping, scheduled: Mapping) -> GradientTransformation:
            return learner_factory(**static, **hyperparams, **scheduled)

        def evaluate(count: jax.Array) -> dict:
            return {k: jnp.asarray(f(count), jnp.float32) for k, f in schedules.items()}

        def init(params):
            count = tree.zeros_count()
            hyperparams = {k: _as_state(v) for k, v in numeric.items()}
            scheduled = evaluate(count)
            inner = learner(hyperparams, scheduled).init(params)
            return InjectHyperparamsState(count, hyperparams, scheduled, inner)

        def update(updates, state, params=None, **extra):
            scheduled = evaluate(state.count)
            new_updates, inner = learner(state.hyperparams, scheduled).update(
                updates, state.inner, params, **keep(extra)
            )
            new_state = InjectHyperparamsState(
                tree.safe_increment(state.count), state.hyperparams, scheduled, inner
            )
            return new_updates, new_state

        return GradientTransformation(init, update)

    return build


def _walk(state: Any, prefix: str, visit: Callable[[str, InjectHyperparamsState], Any]) -> Any:
    """Rebuild ``state`` with ``visit(path_prefix, s)`` applied to every injected state in it."""
    if isinstance(state, InjectHyperparamsState):
        return visit(prefix, state)
    if isinstance(state, PartitionState):
        return PartitionState(
            {label: _walk(s, f"{prefix}{label}/", visit) for label, s in state.inner.items()}
        )
    if isinstance(state, tuple) and not hasattr(state, "_fields"):
        return tuple(_walk(s, prefix, visit) for s in state)
    if isinstance(state, tuple):  # another NamedTuple: look inside its fields
        return type(state)(*(_walk(s, prefix, visit) for s in state))
    if isinstance(state, dict):
        return {k: _walk(s, prefix, visit) for k, s in state.items()}
    return state


def get_hyperparams(state: Any) -> dict[str, jax.Array]:
    """Every injected hyperparameter in ``state``, by readable path (``"slow/learning_rate"``).

    Values are those used for the most recent update (a schedule's value at it).
    Chains add nothing to the path; partitions add their labels.

    Args:
      state: any optimizer state (nested in chains and partitions).
    """
    found: dict[str, jax.Array] = {}

    def visit(prefix, s):
        for name, value in {**s.hyperparams, **s.scheduled}.items():
            found[f"{prefix}{name}"] = value
        return s

    _walk(state, "", visit)
    return found


def set_hyperparams(state: Any, path: str | None = None, value: Any = None, **by_name: Any):
    """Return ``state`` with hyperparameters changed; the next update uses the new values.

    ``set_hyperparams(state, learning_rate=0.01)`` changes every hyperparameter
    named ``learning_rate``; ``set_hyperparams(state, "slow/learning_rate", 0.01)``
    changes one (the paths of :func:`get_hyperparams`). Values keep their float32
    scalar shape, so a jitted step does not recompile. A hyperparameter driven
    by a schedule cannot be set: the schedule owns it (multiply the schedule by
    an injected factor instead).

    Args:
      state: the optimizer state.
      path: one hyperparameter's path, or None to set by name.
      value: the new value for ``path``.
      **by_name: new values for every hyperparameter of these names.
    """
    if (path is None) == (not by_name):
        raise TypeError("set_hyperparams: give either a path and a value, or name=value pairs")
    wanted = {path: value} if path is not None else by_name
    done: set[str] = set()

    def visit(prefix, s):
        hyperparams = dict(s.hyperparams)
        for key, new in wanted.items():
            for name in list(hyperparams) + list(s.scheduled):
                if key not in (name, f"{prefix}{name}"):
                    continue
                if name in s.scheduled:
                    raise ValueError(
                        f"set_hyperparams: {prefix}{name} is driven by a schedule and cannot be "
                        f"set; build the learner with a constant, or scale the schedule"
                    )
                hyperparams[name] = _replacement(f"{prefix}{name}", s.hyperparams[name], new)
                done.add(key)
        return s._replace(hyperparams=hyperparams)

    new_state = _walk(state, "", visit)
    unknown = set(wanted) - done
    if unknown:
        raise KeyError(
            f"set_hyperparams: no hyperparameter {sorted(unknown)[0]!r}; the state has "
            f"{sorted(get_hyperparams(state))}"
        )
    return new_state


def _replacement(path: str, old: jax.Array, new: Any) -> jax.Array:
    """``new`` shaped and typed like ``old``, so that a jitted step does not recompile."""
    if jnp.issubdtype(old.dtype, jnp.floating):
        return jnp.asarray(new, jnp.float32).reshape(jnp.shape(old))
    new = jnp.asarray(new)
    if new.dtype != old.dtype or new.shape != old.shape:
        raise TypeError(
            f"set_hyperparams: {path} is {old.dtype}{list(old.shape)}; the new value must be "
            f"too, got {new.dtype}{list(new.shape)}"
        )
    return new


def _select(keep_new: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(keep_new, n, o), new, old)


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite`: error counters, the last verdict, the inner state."""

    consecutive_errors: jax.Array  # int32: non-finite steps in a row, 0 after a finite one
    total_errors: jax.Array  # int32: non-finite steps skipped or given up on, in all
    last_finite: jax.Array  # bool: whether the latest updates were finite
    inner: Any


def apply_if_finite(
    transform: GradientTransformation, max_consecutive_errors: int, axis_name: Any = None
) -> GradientTransformation:
    """Skip steps whose updates contain NaN or Inf, leaving the inner state untouched.

    A skipped step returns zero updates and keeps ``transform``'s state as it
    was, so a run with skipped steps equals the run in which they never
    happened. Once more than ``max_consecutive_errors`` steps in a row are not
    finite, they are applied anyway (the inner transform decides what NaN does),
    as in optax; ``consecutive_errors`` resets after a finite step. Written with
    ``jnp.where``, not ``lax.cond``, so it runs the same under ``jit``, ``vmap``
    and ``shard_map``.

    Inside ``shard_map`` or ``pmap`` with the updates split across devices,
    pass ``axis_name``: the step is finite only if every device's part is, so
    all devices skip or apply together. Without it each device would judge its
    own part and the copies could drift apart.

    Args:
      transform: the transform to protect.
      max_consecutive_errors: non-finite steps skipped in a row before giving up,
        :math:`\\ge 0`.
      axis_name: the mapped axis (or axes) to agree across, or None.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.apply_if_finite(gradtx.sgd(0.1), max_consecutive_errors=3)
      >>> grads = {"w": jnp.array([1.0, jnp.nan])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(updates["w"], int(state.total_errors))
      [0. 0.] 1

    References:
      optax: ``optax.apply_if_finite``.
    """
    max_consecutive_errors = checks.check_length(
        "apply_if_finite",
        "max_consecutive_errors",
        max_consecutive_errors,
        allow_zero=True,
        at_most=tree.INT32_MAX,
        wording="integer",
    )

    keep = extras_filter(transform.update)

    def init(params):
        # Separate counters: a donated state must not hold one buffer twice.
        return ApplyIfFiniteState(
            tree.zeros_count(), tree.zeros_count(), jnp.array(True), transform.init(params)
        )

    def update(updates, state, params=None, **extra):
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(updates)]))
        if axis_name is not None:
            finite = jax.lax.pmin(finite.astype(jnp.int32), axis_name) > 0
        new_updates, inner = transform.update(updates, state.inner, params, **keep(extra))
        consecutive = jnp.where(finite, 0, tree.safe_increment(state.consecutive_errors))
        apply = finite | (consecutive > max_consecutive_errors)
        new_updates = jax.tree.map(lambda u: jnp.where(apply, u, jnp.zeros_like(u)), new_updates)
        total = jnp.where(finite, state.total_errors, tree.safe_increment(state.total_errors))
        return new_updates, ApplyIfFiniteState(
            consecutive.astype(jnp.int32), total, finite, _select(apply, inner, state.inner)
        )

    return GradientTransformation(init, update)


class AccumulateState(NamedTuple):
    """State of :func:`accumulate`: the micro-step, the gradient sum and the inner state."""

    micro_step: jax.Array  # int32: micro-steps since the last real update, in [0, every_k)
    gradients: Any  # the sum of this cycle's gradients
    inner: Any


def accumulate(transform: GradientTransformation, every_k: int) -> GradientTransformation:
    """Gradient accumulation: ``transform`` sees the mean of every ``every_k`` micro-steps.

    Updates are zero on the first ``every_k - 1`` micro-steps of each cycle; on
    the last, ``transform`` runs on the mean gradient and its updates are
    returned, in the gradients' dtype (the sum is kept in the params' dtype, so
    bfloat16 gradients accumulate in float32 params' precision). Memory: one
    extra buffer per parameter. No ``lax.cond``, so it
    works inside ``jit`` and ``shard_map`` (the inner update is computed every
    micro-step and kept only on the last).

    Args:
      transform: the transform to run on the accumulated mean.
      every_k: micro-steps per update, :math:`\\ge 1`.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.accumulate(gradtx.sgd(1.0), every_k=2)
      >>> state = opt.init({"w": jnp.zeros(1)})
      >>> first, state = opt.update({"w": jnp.array([1.0])}, state)
      >>> second, state = opt.update({"w": jnp.array([3.0])}, state)
      >>> print(first["w"], second["w"])  # nothing, then -1.0 * the mean
      [0.] [-2.]

    References:
      optax: ``optax.MultiSteps`` (``every_k_schedule=every_k``).
    """
    every_k = checks.check_length(
        "accumulate", "every_k", every_k, at_most=tree.INT32_MAX, wording="integer"
    )

    keep = extras_filter(transform.update)

    def init(params):
        return AccumulateState(tree.zeros_count(), tree.zeros_like(params), transform.init(params))

    def update(updates, state, params=None, **extra):
        sums = jax.tree.map(lambda a, g: a + g, state.gradients, updates)
        last = state.micro_step == every_k - 1
        mean = jax.tree.map(lambda s: s / every_k, sums)
        new_updates, inner = transform.update(mean, state.inner, params, **keep(extra))
        new_updates = jax.tree.map(
            lambda u, g: jnp.where(last, u, jnp.zeros_like(u)).astype(jnp.result_type(g)),
            new_updates,
            updates,
        )
        return new_updates, AccumulateState(
            jnp.where(last, 0, state.micro_step + 1).astype(jnp.int32),
            jax.tree.map(lambda s: jnp.where(last, jnp.zeros_like(s), s), sums),
            _select(last, inner, state.inner),
        )

    return GradientTransformation(init, update)


def _needs_params(who: str, params: Any) -> None:
    if params is None:
        raise ValueError(f"{who}: update needs the params; call update(updates, state, params)")


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`: the fast-step count, the slow weights, the fast state."""

    count: jax.Array  # int32: fast steps taken
    slow: Any  # the slow weights
    fast: Any  # the fast transform's state


def lookahead(
    fast: GradientTransformation, sync_period: int, slow_step_size: float | jax.Array
) -> GradientTransformation:
    """Lookahead (Zhang et al., 2019): ``sync_period`` fast steps, then a slow step back.

    The fast transform updates the params as usual; every ``sync_period``-th
    step the slow weights move towards the fast ones and the params jump there:

    .. math::
        \\phi \\leftarrow \\phi + \\alpha(\\theta_{fast} - \\phi), \\qquad \\theta \\leftarrow \\phi

    The slow weights live in the state (initialised to the params), so the
    params themselves stay an ordinary tree.

    Args:
      fast: the inner learner.
      sync_period: fast steps per slow step, :math:`k \\ge 1`.
      slow_step_size: :math:`\\alpha` in [0, 1].

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.lookahead(gradtx.sgd(1.0), sync_period=2, slow_step_size=0.5)
      >>> params = {"w": jnp.zeros(1)}
      >>> state = opt.init(params)
      >>> for _ in range(2):
      ...     updates, state = opt.update({"w": -jnp.ones(1)}, state, params)
      ...     params = gradtx.apply_updates(params, updates)
      >>> print(params["w"])  # the fast steps reach 2; the slow step goes half way
      [1.]

    References:
      Zhang, Lucas, Hinton and Ba, "Lookahead Optimizer: k steps forward, 1 step back", 2019.

      optax: ``optax.lookahead`` (which keeps the slow weights in the params instead).
    """
    sync_period = checks.check_length(
        "lookahead", "sync_period", sync_period, at_most=tree.INT32_MAX, wording="integer"
    )
    checks.check_interval("lookahead", "slow_step_size", slow_step_size, "[0, 1]")

    keep = extras_filter(fast.update)

    def init(params):
        return LookaheadState(tree.zeros_count(), jax.tree.map(jnp.copy, params), fast.init(params))

    def update(updates, state, params=None, **extra):
        _needs_params("lookahead", params)
        fast_updates, fast_state = fast.update(updates, state.fast, params, **keep(extra))
        count = tree.safe_increment(state.count)
        sync = count % sync_period == 0
        fast_params = jax.tree.map(lambda p, u: p + u, params, fast_updates)
        synced = jax.tree.map(lambda s, f: s + slow_step_size * (f - s), state.slow, fast_params)
        slow = _select(sync, synced, state.slow)
        new_updates = jax.tree.map(
            lambda u, s, p: jnp.where(sync, s - p, u), fast_updates, synced, params
        )
        return new_updates, LookaheadState(count, slow, fast_state)

    return GradientTransformation(init, update)


class EmaParamsState(NamedTuple):
    """State of :func:`ema_params`: the update count and the averaged params."""

    count: jax.Array  # int32: updates seen (the first one starts the average with "first_update")
    ema: Any  # the shadow params, for evaluation


def ema_params(decay: float | jax.Array, *, start_from: str = "params") -> GradientTransformation:
    """Keep an exponential moving average of the params (after each update) in the state.

    Updates pass through unchanged; read the shadow copy as ``state.ema`` (of
    this transform's state) to evaluate with it. With
    :math:`\\theta_t = \\theta_{t-1} + u_t` the params after the
    :math:`t`-th update (:math:`t = 1, 2, \\dots`):

    ``start_from="params"`` (the default) starts from the params given to
    ``init`` and mixes in every update's params, so no bias correction is
    needed:

    .. math::
        \\bar\\theta_0 = \\theta_0, \\qquad
        \\bar\\theta_t = \\beta \\bar\\theta_{t-1} + (1 - \\beta)\\theta_t \\quad (t \\ge 1)

    ``start_from="first_update"`` is torch's
    ``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))`` with
    ``update_parameters(model)`` after every ``optimizer.step()``: the first
    call copies the params, later calls average:

    .. math::
        \\bar\\theta_1 = \\theta_1, \\qquad
        \\bar\\theta_t = \\beta \\bar\\theta_{t-1} + (1 - \\beta)\\theta_t \\quad (t \\ge 2)

    (before the first update ``state.ema`` holds :math:`\\theta_0`). Place it
    last in a chain.

    Args:
      decay: :math:`\\beta` in [0, 1).
      start_from: ``"params"`` or ``"first_update"``, as above.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.ema_params(0.9)
      >>> params = {"w": jnp.zeros(1)}
      >>> updates, state = opt.update({"w": jnp.ones(1)}, opt.init(params), params)
      >>> print(np.asarray(state.ema["w"]).round(4))  # 0.9 * 0 + 0.1 * 1
      [0.1]

    References:
      torch: ``torch.optim.swa_utils.AveragedModel`` with
        ``multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(decay)``.
    """
    checks.check_interval("ema_params", "decay", decay, checks.DECAY)
    if start_from not in ("params", "first_update"):
        raise ValueError(
            f"ema_params: start_from must be 'params' or 'first_update', got {start_from!r}"
        )

    def init(params):
        return EmaParamsState(tree.zeros_count(), jax.tree.map(jnp.copy, params))

    def update(updates, state, params=None, **extra):
        _needs_params("ema_params", params)
        new_params = jax.tree.map(lambda p, u: p + u, params, updates)
        first = state.count == 0  # torch's n_averaged == 0: copy instead of averaging
        copy_first = start_from == "first_update"

        def average(e, p):
            mixed = decay * e + (1 - decay) * p
            return (jnp.where(first, p, mixed) if copy_first else mixed).astype(e.dtype)

        ema = jax.tree.map(average, state.ema, new_params)
        return updates, EmaParamsState(tree.safe_increment(state.count), ema)

    return GradientTransformation(init, update)
