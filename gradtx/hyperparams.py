"""Live hyperparameters: keep them in the optimizer state, read them, change them.

``inject_hyperparams(gradtx.adam)(learning_rate=1e-3)`` stores each numeric
hyperparameter as an array in the state, optax's way (the same state fields,
dtypes and numbers), so changing one is a new state, not a new program: a
jitted train step never recompiles for it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from gradtx import recipe, tree
from gradtx.combine import PartitionState
from gradtx.core import GradientTransformation, extras_filter


class InjectStatefulHyperparamsState(NamedTuple):
    """State of :func:`inject_hyperparams`: the count, the hyperparameters, the schedules' states
    and the inner learner's state (optax's fields)."""

    count: jax.Array  # int32: updates applied so far
    # name -> value: constants as set (settable with set_hyperparams), scheduled ones as
    # their value at the latest update (at count 0 before any)
    hyperparams: dict
    hyperparams_states: dict  # name -> the state of that hyperparameter's schedule
    inner_state: Any


class InjectHyperparamsState(NamedTuple):
    """optax's older state of ``inject_hyperparams``, kept for code that names it.

    :func:`inject_hyperparams` returns :class:`InjectStatefulHyperparamsState`,
    as optax's does; :func:`get_hyperparams` and :func:`set_hyperparams` read both.
    """

    count: jax.Array
    hyperparams: dict
    inner_state: Any


class WrappedScheduleState(NamedTuple):
    """State of a :class:`WrappedSchedule`: the step count it evaluates its schedule at."""

    count: jax.Array


class StatefulSchedule(Protocol):
    """A schedule with a state of its own, as optax's: what :func:`inject_stateful_hyperparams`
    takes for a hyperparameter besides a number or a plain schedule."""

    def init(self) -> Any:
        """The schedule's first state."""

    def update(self, state: Any, **extra_args: Any) -> Any:
        """The state after one update, given its keyword extras (e.g. ``value``)."""

    def __call__(self, state: Any, **extra_args: Any) -> Any:
        """The value at ``state``."""


class WrappedSchedule:
    """A schedule of the step count as a stateful schedule: its state is the count.

    :func:`inject_hyperparams` wraps every plain schedule in one. A stateful
    schedule is any object with ``init() -> state``, ``update(state, **extra)
    -> state`` and ``__call__(state, **extra) -> value`` (optax's
    ``StatefulSchedule``); the extras are the update's keyword extras, e.g. ``value``.

    Args:
      schedule_fn: ``count -> value``.

    Examples:
      >>> import gradtx
      >>> schedule = gradtx.WrappedSchedule(lambda count: 0.5**count)
      >>> state = schedule.update(schedule.update(schedule.init()))
      >>> print(schedule(state))
      0.25

    References:
      optax: ``optax.WrappedSchedule``.
    """

    def __init__(self, schedule_fn: Callable[[jax.Array], Any]) -> None:
        self.schedule_fn = schedule_fn

    def init(self) -> WrappedScheduleState:
        """A fresh state: count 0."""
        return WrappedScheduleState(tree.zeros_count())

    def update(self, state: WrappedScheduleState, **extra_args: Any) -> WrappedScheduleState:
        """The state after one more update (the count, saturating at the int32 maximum).

        Args:
          state: the current state.
          **extra_args: ignored.
        """
        return WrappedScheduleState(tree.safe_increment(state.count))

    def __call__(self, state: WrappedScheduleState, **extra_args: Any) -> Any:
        """The schedule's value at the state's count.

        Args:
          state: the current state.
          **extra_args: ignored.
        """
        return self.schedule_fn(state.count)


def _is_stateful_schedule(value: Any) -> bool:
    return callable(value) and all(callable(getattr(value, m, None)) for m in ("init", "update"))


def _is_array(value: Any) -> bool:
    return hasattr(value, "dtype") and hasattr(value, "shape")


def _as_hyperparam(value: Any, dtype: Any) -> Any:
    """optax's conversion: floating values (Python floats, weakly typed arrays) in ``dtype``;
    arrays of a definite dtype, integers and keys as they are."""
    if isinstance(value, jax.Array) and not getattr(value, "weak_type", False):
        return value
    if jnp.issubdtype(getattr(value, "dtype", type(value)), jnp.floating):
        return jnp.asarray(value, dtype)
    return value


def _hyperparam_dtype(given: Any, params: Any) -> Any:
    """``hyperparam_dtype``, or inferred as optax does from the params' highest dtype, but
    never narrower than float32.

    optax keeps the hyperparameters of bfloat16 params in bfloat16, where
    Adam's ``b2 = 0.999`` rounds to 1 (its second moment never moves) and
    ``1e-3`` to 0.0010004; float16 ones likewise. Complex params give their real
    dtype, integer params float32.
    """
    if given is not None:
        return given
    dtype = jnp.dtype(tree.tree_dtype(params, "highest"))
    if jnp.issubdtype(dtype, jnp.complexfloating):
        dtype = tree.real_dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(jnp.float32)
    return jnp.promote_types(dtype, jnp.float32)


def _arguments(
    signature: inspect.Signature, args: tuple, kwargs: dict
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The factory's arguments by name: (those given, the defaults optax would inject too).

    The defaults are those of the positional-or-keyword parameters; keyword-only ones are
    gradtx's own options, injected only when given (``weight_decay=0.0`` would turn from a
    no-op into a decay that needs the params).
    """
    bound = signature.bind(*args, **kwargs)
    arguments: dict[str, Any] = {}
    defaults: dict[str, Any] = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind is parameter.VAR_KEYWORD:
            arguments.update(bound.arguments.get(name, {}))
        elif parameter.kind is parameter.VAR_POSITIONAL:
            if bound.arguments.get(name):
                raise TypeError(
                    f"inject_hyperparams: pass the hyperparameters of a factory with *{name} "
                    f"by name, so that they can be read and set by name"
                )
        elif name in bound.arguments:
            arguments[name] = bound.arguments[name]
        elif parameter.kind is parameter.POSITIONAL_OR_KEYWORD:
            if parameter.default is not parameter.empty:
                defaults[name] = parameter.default
    return arguments, defaults


def inject_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    """Build a learner whose numeric hyperparameters live in its state, as optax's does.

    ``inject_hyperparams(factory)(*args, **kwargs)`` takes ``factory``'s
    arguments (positional or by name) and returns a transform whose state is an
    :class:`InjectStatefulHyperparamsState`. Each update calls
    ``factory(...)`` with

    - every numeric argument (a number, or an array: also the defaults of the
      factory's positional-or-keyword parameters, e.g. adam's ``b1``) taken from
      ``state.hyperparams``. Floating ones are kept in ``hyperparam_dtype``,
      else in the params' highest floating dtype as in optax, but at least
      float32 (optax's bfloat16 rounds Adam's ``b2 = 0.999`` to 1); an array of
      a definite dtype (a float32 array, an integer array, a PRNG key) keeps it;
    - every callable argument treated as a schedule of the step count (wrapped
      in :class:`WrappedSchedule`) or, if it has ``init`` and ``update``, as a
      stateful schedule; its value at this update replaces it, and is kept in
      ``hyperparams`` too;
    - the rest as given: bools, None, strings, dtypes, masks, ``static_args``.

    Two gradtx rules on top of optax's: a Python int for an argument whose
    default is an int (a length or a count, such as ``patience``) stays static,
    and other Python ints become floating hyperparameters (optax keeps an
    int32, which ``set_hyperparams`` could then not set to 0.5); and the
    defaults of keyword-only parameters (gradtx's own options, such as
    ``weight_decay``) are injected only when given. The factory's state must
    not depend on the hyperparameters' values (true of every gradtx learner).
    Extras reach the inner learner only if its ``update`` takes them, and
    every stateful schedule.

    Args:
      inner_factory: a function returning a transform, e.g. ``gradtx.sgd`` or an optax one.
      static_args: the name, or names, of arguments to pass through as they are:
        callables that are not schedules, numbers the factory needs as Python values.
      hyperparam_dtype: the dtype of the floating hyperparameters; None infers it
        from the params.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)
      >>> grads = {"w": jnp.ones(2)}
      >>> state = gradtx.set_hyperparams(opt.init(grads), learning_rate=0.5)
      >>> updates, state = opt.update(grads, state)
      >>> print(updates["w"])
      [-0.5 -0.5]
      >>> print(state.hyperparams["learning_rate"], state.count)
      0.5 1

    References:
      optax: ``optax.inject_hyperparams``.
    """
    static_names = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    if not static_names <= set(signature.parameters):
        raise ValueError(
            f"inject_hyperparams: static_args must name arguments of "
            f"{getattr(inner_factory, '__name__', inner_factory)!r}, got "
            f"{sorted(static_names - set(signature.parameters))}; it takes "
            f"{list(signature.parameters)}"
        )
    int_defaults = {
        p.name
        for p in signature.parameters.values()
        if isinstance(p.default, int) and not isinstance(p.default, bool)
    }

    @functools.wraps(inner_factory)
    def build(*args: Any, **kwargs: Any) -> GradientTransformation:
        given, defaults = _arguments(signature, args, kwargs)
        schedules: dict[str, Any] = {}
        # A default is injected only if it is a floating number or an array: a default
        # callable (e.g. a CNTK schedule object of other arguments) is left to the factory.
        static: dict[str, Any] = {
            k: v
            for k, v in defaults.items()
            if k in static_names or isinstance(v, bool) or not isinstance(v, float | jax.Array)
        }
        numeric = {k: v for k, v in defaults.items() if k not in static}
        for name, value in given.items():
            if name in static_names or isinstance(value, bool):
                static[name] = value
            elif _is_stateful_schedule(value):
                schedules[name] = value
            elif callable(value) and not _is_array(value):
                schedules[name] = WrappedSchedule(value)
            elif isinstance(value, int) and name in int_defaults:
                static[name] = value  # a length or a count: decided when the learner is built
            elif isinstance(value, int):
                numeric[name] = float(value)
            elif isinstance(value, float) or _is_array(value):
                numeric[name] = value
            else:
                static[name] = value
        # Validates the concrete values once, under the factory's name; its update's
        # signature says which extras to forward.
        built = inner_factory(*args, **kwargs)
        keep = extras_filter(built.update)

        def learner(hyperparams: Mapping) -> GradientTransformation:
            return inner_factory(**static, **hyperparams)

        def init(params):
            dtype = _hyperparam_dtype(hyperparam_dtype, params)
            hyperparams = {k: jnp.asarray(_as_hyperparam(v, dtype)) for k, v in numeric.items()}
            schedule_states = {k: s.init() for k, s in schedules.items()}
            for k, s in schedules.items():
                hyperparams[k] = jnp.asarray(_as_hyperparam(s(schedule_states[k]), dtype))
            return InjectStatefulHyperparamsState(
                tree.zeros_count(), hyperparams, schedule_states, learner(hyperparams).init(params)
            )

        def current(state, dtype, extra) -> dict:
            """The hyperparameters this update uses: the constants, then the schedules' values."""
            # Arrays: the state holds no Python numbers, even where a user put one in the dict.
            hyperparams = {
                k: jnp.asarray(_as_hyperparam(v, dtype)) for k, v in state.hyperparams.items()
            }
            for k, s in schedules.items():  # every scheduled name is overwritten here
                value = s(state.hyperparams_states[k], **extra)
                hyperparams[k] = jnp.asarray(_as_hyperparam(value, dtype))
            return hyperparams

        def update(updates, state, params=None, **extra):
            hyperparams = current(state, _hyperparam_dtype(hyperparam_dtype, params), extra)
            schedule_states = {
                k: s.update(state.hyperparams_states[k], **extra) for k, s in schedules.items()
            }
            new_updates, inner_state = learner(hyperparams).update(
                updates, state.inner_state, params, **keep(extra)
            )
            new_state = InjectStatefulHyperparamsState(
                tree.safe_increment(state.count), hyperparams, schedule_states, inner_state
            )
            return new_updates, new_state

        def inner_stages(state):
            # The learner this state's hyperparameters build, as update builds it. The fused
            # path runs on float32 trees only, where the inferred dtype is float32.
            dtype = jnp.float32 if hyperparam_dtype is None else hyperparam_dtype
            found = recipe.recipe_of(learner(current(state, dtype, {})))
            return None if found is None else recipe.nested(found, _inner, _with_inner)(state)

        transform = GradientTransformation(init, update)
        # A stateful schedule of the extras has no value without them: the plain path.
        has_recipe = recipe.recipe_of(built) is not None and all(
            isinstance(s, WrappedSchedule) for s in schedules.values()
        )
        return recipe.with_recipe(transform, inner_stages if has_recipe else None)

    return build


def inject_stateful_hyperparams(
    inner_factory: Callable[..., GradientTransformation],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformation]:
    """:func:`inject_hyperparams` under optax's older name (the two are one in optax too).

    A stateful schedule (``init``, ``update`` and ``__call__``, see
    :class:`WrappedSchedule`) can drive a hyperparameter from the update's
    extras, e.g. a rate that follows the loss passed as ``value=``.

    Args:
      inner_factory: a function returning a transform.
      static_args: the name, or names, of arguments to pass through as they are.
      hyperparam_dtype: the dtype of the floating hyperparameters; None infers it
        from the params.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> class HalveOnLoss:  # a stateful schedule of the loss, the extra ``value``
      ...     def init(self):
      ...         return jnp.asarray(0.1)
      ...     def update(self, state, value=None, **extra):
      ...         return jnp.where(value > 1.0, state / 2, state)
      ...     def __call__(self, state, **extra):
      ...         return state
      >>> opt = gradtx.inject_stateful_hyperparams(gradtx.sgd)(learning_rate=HalveOnLoss())
      >>> grads = {"w": jnp.ones(2)}
      >>> _, state = opt.update(grads, opt.init(grads), value=2.0)
      >>> updates, state = opt.update(grads, state, value=2.0)
      >>> print(updates["w"])  # the rate halved once, after the first update
      [-0.05 -0.05]

    References:
      optax: ``optax.inject_stateful_hyperparams`` (deprecated there in favour of
        ``optax.inject_hyperparams``, which takes the same arguments).
    """
    return inject_hyperparams(inner_factory, static_args, hyperparam_dtype)


def _inner(state: Any) -> Any:
    return state.inner_state


def _with_inner(state: Any, inner: Any) -> Any:
    return state._replace(inner_state=inner)


def _is_injected(state: Any) -> bool:
    """An injected state: gradtx's, or optax's (either of its two NamedTuples)."""
    fields = getattr(state, "_fields", ())
    return isinstance(state, tuple) and {"count", "hyperparams", "inner_state"} <= set(fields)


def _scheduled(state: Any) -> Mapping:
    """The names in ``state.hyperparams`` that a schedule drives."""
    return getattr(state, "hyperparams_states", {})


def _walk(state: Any, prefix: str, visit: Callable[[str, Any], Any]) -> Any:
    """Rebuild ``state`` with ``visit(path_prefix, s)`` applied to every injected state in it."""
    if _is_injected(state):
        return visit(prefix, state)
    if isinstance(state, PartitionState):  # its dicts are by label: the labels join the path
        return state._replace(
            **{
                field: {k: _walk(s, f"{prefix}{k}/", visit) for k, s in value.items()}
                if isinstance(value, dict)
                else _walk(value, prefix, visit)
                for field, value in zip(state._fields, state, strict=True)
            }
        )
    if isinstance(state, tuple) and not hasattr(state, "_fields"):
        return tuple(_walk(s, prefix, visit) for s in state)
    if isinstance(state, tuple):  # another NamedTuple: look inside its fields
        return type(state)(*(_walk(s, prefix, visit) for s in state))
    if isinstance(state, dict):  # type(state): named_chain's OrderedDict stays one
        return type(state)((k, _walk(s, prefix, visit)) for k, s in state.items())
    return state


def get_hyperparams(state: Any) -> dict[str, jax.Array]:
    """Every injected hyperparameter in ``state``, by readable path (``"slow/learning_rate"``).

    Values are those the next update uses, or for a scheduled one the value
    its schedule gave the most recent update. Chains add nothing to the path;
    partitions add their labels. optax's injected states are read too.

    Args:
      state: any optimizer state (nested in chains and partitions).

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1, momentum=0.9)
      >>> found = gradtx.get_hyperparams(opt.init({"w": jnp.ones(2)}))
      >>> print({name: round(float(value), 3) for name, value in found.items()})
      {'learning_rate': 0.1, 'momentum': 0.9}
    """
    found: dict[str, jax.Array] = {}

    def visit(prefix, s):
        for name, value in s.hyperparams.items():
            found[f"{prefix}{name}"] = value
        return s

    _walk(state, "", visit)
    return found


def set_hyperparams(state: Any, path: str | None = None, value: Any = None, **by_name: Any):
    """Return ``state`` with hyperparameters changed; the next update uses the new values.

    ``set_hyperparams(state, learning_rate=0.01)`` changes every hyperparameter
    named ``learning_rate``; ``set_hyperparams(state, "slow/learning_rate", 0.01)``
    changes one (the paths of :func:`get_hyperparams`). Values keep their dtype
    and shape, so a jitted step does not recompile. A hyperparameter driven
    by a schedule cannot be set: the schedule owns it (multiply the schedule by
    an injected factor instead).

    Args:
      state: the optimizer state.
      path: one hyperparameter's path, or None to set by name.
      value: the new value for ``path``.
      **by_name: new values for every hyperparameter of these names.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.inject_hyperparams(gradtx.sgd)(learning_rate=0.1)
      >>> state = gradtx.set_hyperparams(opt.init({"w": jnp.ones(2)}), learning_rate=0.01)
      >>> print(gradtx.get_hyperparams(state)["learning_rate"])
      0.01
    """
    if (path is None) == (not by_name):
        raise TypeError("set_hyperparams: give either a path and a value, or name=value pairs")
    wanted = {path: value} if path is not None else by_name
    done: set[str] = set()

    def visit(prefix, s):
        hyperparams = dict(s.hyperparams)
        for key, new in wanted.items():
            for name in s.hyperparams:
                if key not in (name, f"{prefix}{name}"):
                    continue
                if name in _scheduled(s):
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


def _replacement(path: str, old: Any, new: Any) -> jax.Array:
    """``new`` shaped and typed like ``old``, so that a jitted step does not recompile."""
    old = jnp.asarray(old)
    if jnp.issubdtype(old.dtype, jnp.inexact):
        return jnp.asarray(new, old.dtype).reshape(jnp.shape(old))
    new = jnp.asarray(new)
    if new.dtype != old.dtype or new.shape != old.shape:
        raise TypeError(
            f"set_hyperparams: {path} is {old.dtype}{list(old.shape)}; the new value must be "
            f"too, got {new.dtype}{list(new.shape)}"
        )
    return new


__all__ = [
    "InjectHyperparamsState",
    "InjectStatefulHyperparamsState",
    "WrappedSchedule",
    "WrappedScheduleState",
    "get_hyperparams",
    "inject_hyperparams",
    "inject_stateful_hyperparams",
    "set_hyperparams",
]
