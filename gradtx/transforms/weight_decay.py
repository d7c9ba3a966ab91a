"""Adding decayed weights: L2 regularisation or decoupled weight decay, by position in a chain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from gradtx import checks, labels, recipe, tree
from gradtx.core import IDENTITY, EmptyState, GradientTransformation, ScalarOrSchedule

# u = g + weight_decay * params. With a mask, weight_decay is given per leaf (a tree
# shaped like the updates): the decay where the mask is True, None where the leaf has none.
ADD_DECAYED_WEIGHTS = recipe.rule("add_decayed_weights", scalars=("weight_decay",))


class AddDecayedWeightsState(NamedTuple):
    """State of :func:`add_decayed_weights` with a scheduled decay: the step count."""

    count: jax.Array  # int32 scalar: evaluates a weight-decay schedule (only kept for one)


def add_decayed_weights(
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    """Add :math:`\\lambda_t \\theta` to the updates: :math:`u \\leftarrow g + \\lambda_t \\theta`.

    Placed first in a chain this is torch's coupled ``weight_decay`` (L2 added
    to the gradient); placed after the adaptive scaling and before the learning
    rate it is AdamW's decoupled weight decay.

    Args:
      weight_decay: :math:`\\lambda \\ge 0`, or a schedule of the step count.
      mask: a tree of Python bools shaped like the params (or a function of the
        params returning one); decay applies only where it is True.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.add_decayed_weights(0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = tx.update({"w": jnp.zeros(2)}, tx.init(params), params)
      >>> print(np.asarray(updates["w"]).round(4))  # 0 + 0.1 * params
      [ 0.1 -0.2]

    References:
      Loshchilov and Hutter, "Decoupled Weight Decay Regularization", 2019 (placed after
        the adaptive scaling).

      optax: ``optax.add_decayed_weights``; torch: the ``weight_decay`` of
        ``torch.optim.SGD`` and ``torch.optim.Adam`` (placed first).
    """
    checks.check_interval("add_decayed_weights", "weight_decay", weight_decay, checks.NONNEGATIVE)

    # Only a schedule needs a step count; a constant keeps no state, as in optax.
    scheduled = callable(weight_decay)
    # A literal zero is a no-op that needs no params, so learners can always chain it.
    is_zero = isinstance(weight_decay, int | float) and weight_decay == 0

    def init(params):
        return AddDecayedWeightsState(tree.zeros_count()) if scheduled else EmptyState()

    def decay_at(state):
        return weight_decay(state.count) if callable(weight_decay) else weight_decay

    def update(updates, state, params=None, **extra):
        new_state = AddDecayedWeightsState(tree.safe_increment(state.count)) if scheduled else state
        if is_zero:
            return updates, new_state
        if params is None:
            raise ValueError(
                "add_decayed_weights: update needs params to decay; call "
                "update(updates, state, params)"
            )
        checks.check_trees_match("add_decayed_weights", "updates", updates, params=params)
        decay = decay_at(state)
        decayed = lambda g, p: g + decay * p  # noqa: E731
        if mask is None:
            updates = jax.tree.map(decayed, updates, params)
        else:
            where = labels.labels_for("add_decayed_weights", mask, params, what="mask")
            # Compare structure only: mask leaves are scalars standing for whole arrays.
            checks.check_trees_match(
                "add_decayed_weights", "params", jax.tree.map(lambda _: 0, params), mask=where
            )
            updates = jax.tree.map(
                lambda m, g, p: decayed(g, p) if _as_bool(m) else g, where, updates, params
            )
        return updates, new_state

    def scalars(state, updates):
        decay = decay_at(state)
        if mask is None:
            return {"weight_decay": decay}
        where = labels.labels_for("add_decayed_weights", mask, updates, what="mask")
        per_leaf = lambda m, _: decay if _as_bool(m) else None  # noqa: E731
        return {"weight_decay": jax.tree.map(per_leaf, where, updates)}

    tx = GradientTransformation(init, update)
    if is_zero:
        return recipe.declare(tx, IDENTITY)
    return recipe.declare(tx, ADD_DECAYED_WEIGHTS, scalars)


def _as_bool(flag: Any) -> bool:
    if not isinstance(flag, bool | np.bool_):
        raise TypeError(
            f"add_decayed_weights: mask leaves must be Python bools (decided when tracing), "
            f"got {type(flag).__name__}"
        )
    return bool(flag)
