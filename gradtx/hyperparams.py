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

from gradtx import recipe, tree
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
        built = learner_factory(**kwargs)
        keep = extras_filter(built.update)

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

        def inner_stages(state):
            # The learner this state's hyperparameters build, as update builds it.
            found = recipe.recipe_of(learner(state.hyperparams, evaluate(state.count)))
            return None if found is None else recipe.nested(found, _inner, _with_inner)(state)

        transform = GradientTransformation(init, update)
        has_recipe = recipe.recipe_of(built) is not None
        return recipe.with_recipe(transform, inner_stages if has_recipe else None)

    return build


def _inner(state: InjectHyperparamsState) -> Any:
    return state.inner


def _with_inner(state: InjectHyperparamsState, inner: Any) -> InjectHyperparamsState:
    return state._replace(inner=inner)


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
