"""Measurements of the updates kept in the state, for debugging a chain: optax's monitors.

Each passes the updates through unchanged and records what it measured in its
state, where ``gradtx.tree.tree_get(state, name)`` (optax's ``tree.get``) finds it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import tree
from gradtx.core import GradientTransformation, chain, extras_filter, stateless
from gradtx.transforms.averages import ema


class SnapshotState(NamedTuple):
    """State of :func:`snapshot`: ``{name: the last measurement}``."""

    measurement: dict[str, Any]


def snapshot(measure_name: str, measure: Callable[[Any], Any]) -> GradientTransformation:
    """Record ``measure(updates)`` in the state under ``measure_name``; pass the updates on.

    ``init`` records ``measure(params)``, so the state has its shape from the start.

    Args:
      measure_name: the key of the measurement in the state.
      measure: a function of the updates (the transformed gradients up to here in a chain).

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.chain(gradtx.snapshot("before", lambda u: jnp.max(jnp.abs(u))),
      ...                    gradtx.clip(1.0))
      >>> updates, state = opt.update(jnp.array([3.0, -0.5]), opt.init(jnp.zeros(2)))
      >>> print(updates, state[0].measurement["before"])
      [ 1.  -0.5] 3.0

    References:
      optax: ``optax.snapshot``.
    """

    def init(params):
        return SnapshotState({measure_name: measure(params)})

    def update(updates, state, params=None, **extra):
        return updates, SnapshotState({measure_name: measure(updates)})

    return GradientTransformation(init, update)


class MonitorState(NamedTuple):
    """State of :func:`monitor`: the last measurements by name, and the measures' own states."""

    measurements: dict[str, Any]
    measure_states: tuple[Any, ...]


def monitor(measures: Mapping[str, GradientTransformation | Callable[[Any], Any]]):
    """Record several measurements of the updates, some with state (an EMA); pass the updates on.

    A measure is a function of the updates, or a transform whose "updates" are
    the measurement (such as :func:`measure_with_ema`). ``init`` fills the
    measurements with zeros of their shapes and dtypes, so the state keeps one
    structure from the first step on (optax starts with an empty dict).

    Args:
      measures: maps each name to a function of the updates or a transform.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.chain(
      ...     gradtx.monitor({"max": lambda u: jnp.max(u),
      ...                     "max_ema": gradtx.measure_with_ema(jnp.max, decay=0.5)}),
      ...     gradtx.scale(-1.0))
      >>> state = opt.init(jnp.zeros(2))
      >>> for g in (2.0, 4.0):
      ...     updates, state = opt.update(jnp.full(2, g), state)
      >>> print(state[0].measurements["max"], round(float(state[0].measurements["max_ema"]), 4))
      4.0 3.3333

    References:
      optax: ``optax.monitor``.
    """
    transforms = {
        name: stateless(lambda updates, params, m=m: m(updates)) if callable(m) else m
        for name, m in measures.items()
    }
    filters = {name: extras_filter(t.update) for name, t in transforms.items()}

    def measure_all(updates, states, params, extra):
        measurements, new_states = {}, []
        for (name, t), s in zip(transforms.items(), states, strict=True):
            measurements[name], s = t.update(updates, s, params, **filters[name](extra))
            new_states.append(s)
        return measurements, tuple(new_states)

    def init(params):
        states = tuple(t.init(params) for t in transforms.values())
        shapes, _ = jax.eval_shape(lambda p, s: measure_all(p, s, p, {}), params, states)
        zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
        return MonitorState(zeros, states)

    def update(updates, state, params=None, **extra):
        measurements, states = measure_all(updates, state.measure_states, params, extra)
        return updates, MonitorState(measurements, states)

    return GradientTransformation(init, update)


def measure_with_ema(
    measure: Callable[[Any], Any],
    decay: float | jax.Array,
    debias: bool = True,
    accumulator_dtype: Any = None,
) -> GradientTransformation:
    """A measure for :func:`monitor`: an exponential moving average of ``measure(updates)``.

    .. math::
        m_t = \\beta m_{t-1} + (1 - \\beta)\\, f(g_t), \\qquad
        u_t = m_t / (1 - \\beta^{t+1}) \\text{ if debias, else } m_t

    Its "updates" are the averaged measurement :math:`u_t`, so use it inside
    :func:`monitor`, not in a chain of the updates. A bool or integer
    measurement (``norm > threshold``) is averaged in a floating dtype, which
    the state holds from ``init`` on.

    Args:
      measure: a function of the updates.
      decay: :math:`\\beta` in [0, 1).
      debias: divide by :math:`1 - \\beta^{t+1}` to undo the zero start.
      accumulator_dtype: the stored average's dtype (a plain cast, as optax's); None
        keeps the measurement's (floating) dtype.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> tx = gradtx.measure_with_ema(lambda u: jnp.max(u) > 1.0, decay=0.9, debias=False)
      >>> state = tx.init(jnp.zeros(2))
      >>> average, state = tx.update(jnp.array([2.0, 0.0]), state)
      >>> print(round(float(average), 4))  # 0.9 * 0 + 0.1 * True
      0.1

    References:
      optax: ``optax.measure_with_ema``.
    """
    average = ema(decay, debias)

    def floating(x: Any) -> Any:
        dtype = jnp.result_type(x)
        return (
            dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.promote_types(dtype, jnp.float32)
        )

    def stored(value: Any) -> Any:
        if accumulator_dtype is not None:
            return jax.tree.map(lambda x: x.astype(accumulator_dtype), value)
        return jax.tree.map(lambda x: x.astype(floating(x)), value)

    def init(params):
        # The average's zeros are shaped like the measurement, not like the params.
        state = average.init(tree.zeros_like(measure(params)))
        return state._replace(ema=stored(state.ema))

    def update(updates, state, params=None, **extra):
        updates, state = average.update(updates, state, params)
        return updates, state._replace(ema=stored(state.ema))

    return chain(
        stateless(lambda updates, params: measure(updates)), GradientTransformation(init, update)
    )
