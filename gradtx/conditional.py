"""Run a transform only at the steps a condition picks: optax's conditional wrappers.

The inner update runs inside a ``lax.cond``, so it costs nothing at the
steps it is skipped (under ``vmap`` over the state both branches run, as for
any ``cond``; eagerly, with a known condition, the branch is called directly).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation, extras_filter

ConditionFn = Callable[..., Any]  # (step, **extras) -> bool scalar


def cond(pred: Any, true_fn: Callable, false_fn: Callable, *operands: Any) -> Any:
    """``lax.cond``, or the one branch called directly when ``pred`` is a concrete value.

    Eagerly a ``lax.cond`` compiles both branches at every call (they close over
    new arrays each time); with a known predicate there is nothing to decide.
    Under ``jit``, ``vmap`` or ``grad`` the predicate is a tracer and this is ``lax.cond``.

    Args:
      pred: a bool scalar.
      true_fn: the branch taken when ``pred`` is True.
      false_fn: the branch taken otherwise.
      *operands: the branches' arguments.
    """
    if checks.is_concrete(pred):
        return true_fn(*operands) if bool(pred) else false_fn(*operands)
    return jax.lax.cond(pred, true_fn, false_fn, *operands)


class ConditionallyTransformState(NamedTuple):
    """State of :func:`conditionally_transform`: the inner state and the step count."""

    inner_state: Any
    step: jax.Array  # int32: updates so far, what the condition is called with


class ConditionallyMaskState(NamedTuple):
    """State of :func:`conditionally_mask`: the step count and the inner state."""

    step: jax.Array  # int32: updates so far, what the condition is called with
    inner_state: Any


def _conditional(
    who: str,
    inner: GradientTransformation,
    should_transform_fn: ConditionFn,
    forward_extra_args: bool,
    otherwise: Callable[[Any], Any],
    make_state: Callable[[jax.Array, Any], Any],
) -> GradientTransformation:
    keep = extras_filter(inner.update)
    keep_for_condition = extras_filter(should_transform_fn, slots=1)

    def init(params):
        return make_state(tree.zeros_count(), inner.init(params))

    def update(updates, state, params=None, **extra):
        condition_extra = keep_for_condition(extra) if forward_extra_args else {}
        go = jnp.asarray(should_transform_fn(state.step, **condition_extra))
        if go.shape != () or not (go.dtype == jnp.bool_ or jnp.issubdtype(go.dtype, jnp.integer)):
            raise ValueError(
                f"{who}: should_transform_fn must return a bool scalar, got dtype {go.dtype} "
                f"and shape {go.shape}"
            )

        def run(inner_state):
            out, new_state = inner.update(updates, inner_state, params, **keep(extra))
            # Both branches of the cond must agree: the gradients' dtypes, the state's own.
            out = jax.tree.map(lambda u, g: u.astype(jnp.result_type(g)), out, updates)
            return out, jax.tree.map(lambda n, o: n.astype(o.dtype), new_state, inner_state)

        def skip(inner_state):
            return otherwise(updates), inner_state

        new_updates, inner_state = cond(go, run, skip, state.inner_state)
        return new_updates, make_state(tree.safe_increment(state.step), inner_state)

    return GradientTransformation(init, update)


def conditionally_transform(
    inner: GradientTransformation,
    should_transform_fn: ConditionFn,
    forward_extra_args: bool = False,
) -> GradientTransformation:
    """Run ``inner`` at the steps ``should_transform_fn`` picks; pass the updates through otherwise.

    .. math::
        u_t = \\begin{cases} T(g_t) & c(t) \\\\ g_t & \\text{otherwise} \\end{cases}

    where :math:`t` counts this wrapper's updates from 0. ``inner``'s state
    is kept as it was at the other steps; its updates come back in the
    gradients' dtypes.

    Args:
      inner: the transform to run.
      should_transform_fn: ``c(step) -> bool scalar``, ``step`` an int32 count.
      forward_extra_args: also hand ``c`` the update's extras (those it accepts).

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.conditionally_transform(gradtx.scale(10.0), lambda step: step % 2 == 1)
      >>> state = opt.init(None)
      >>> for _ in range(3):
      ...     updates, state = opt.update(jnp.ones(1), state)
      ...     print(updates)
      [1.]
      [10.]
      [1.]

    References:
      optax: ``optax.conditionally_transform``.
    """
    return _conditional(
        "conditionally_transform",
        inner,
        should_transform_fn,
        forward_extra_args,
        lambda updates: updates,
        lambda step, inner_state: ConditionallyTransformState(inner_state, step),
    )


def conditionally_mask(
    inner: GradientTransformation,
    should_transform_fn: ConditionFn,
    forward_extra_args: bool = False,
) -> GradientTransformation:
    """Run ``inner`` at the steps ``should_transform_fn`` picks; zero the updates otherwise.

    .. math::
        u_t = \\begin{cases} T(g_t) & c(t) \\\\ 0 & \\text{otherwise} \\end{cases}

    where :math:`t` counts this wrapper's updates from 0. ``inner``'s state
    is kept as it was at the other steps; its updates come back in the
    gradients' dtypes.

    Args:
      inner: the transform to run.
      should_transform_fn: ``c(step) -> bool scalar``, ``step`` an int32 count.
      forward_extra_args: also hand ``c`` the update's extras (those it accepts).

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.conditionally_mask(gradtx.sgd(1.0), lambda step: step >= 1)
      >>> state = opt.init(jnp.zeros(1))
      >>> first, state = opt.update(jnp.ones(1), state)
      >>> second, state = opt.update(jnp.ones(1), state)
      >>> print(first, second)
      [0.] [-1.]

    References:
      optax: ``optax.conditionally_mask``.
    """
    return _conditional(
        "conditionally_mask",
        inner,
        should_transform_fn,
        forward_extra_args,
        lambda updates: jax.tree.map(jnp.zeros_like, updates),
        ConditionallyMaskState,
    )
