"""Schedule-Free learning: a base optimizer's steps on z, interpolated and averaged into y and x."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.checks import path_name
from gradtx.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    Scalar,
    ScalarOrSchedule,
    float_leaves,
    with_extra_args_support,
)


class ScheduleFreeState(NamedTuple):
    """State of :func:`schedule_free` (optax's fields).

    ``x`` is not stored: it is recomputed from the params ``y`` and ``z`` (see
    :func:`schedule_free_eval_params`), so the memory is the base optimizer's plus ``z``.
    """

    b1: jax.Array  # the interpolation weight, kept so that the eval params need only the state
    weight_sum: jax.Array  # sum of max_lr**weight_lr_power over the steps so far
    step_count: jax.Array  # int32 scalar: 1 + updates applied (optax starts it at 1)
    max_lr: jax.Array  # the largest learning rate seen so far
    base_optimizer_state: Any
    z: Any  # the base optimizer's iterate, in state_dtype


def find_schedule_free_states(state: Any) -> list[ScheduleFreeState]:
    """Every :class:`ScheduleFreeState` in an optimizer state, wherever it sits."""
    is_state = lambda x: isinstance(x, ScheduleFreeState)  # noqa: E731
    return [x for x in jax.tree.leaves(state, is_leaf=is_state) if is_state(x)]


def schedule_free_eval_params(state: Any, params: Any) -> Any:
    """The params to evaluate a :func:`schedule_free` model at: its average :math:`x_t`.

    .. math:: x_t = \\frac{y_t - (1-\\beta_1) z_t}{\\beta_1}

    with :math:`y_t` the params being trained and :math:`z_t`, :math:`\\beta_1` read from the
    :class:`ScheduleFreeState`. ``state`` may be that state or any optimizer state holding
    exactly one (a chain's tuple, ``inject_hyperparams``' inner state, ...): it is found by
    its type, wherever it sits. Leaves the schedule-free learner left alone (integer ones)
    come back as they are.

    Args:
      state: the optimizer state, or the :class:`ScheduleFreeState` itself.
      params: the params :math:`y_t` the optimizer is training.

    Raises:
      ValueError: if ``state`` holds no :class:`ScheduleFreeState`, or several.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.chain(gradtx.clip_by_global_norm(1.0), gradtx.contrib.schedule_free_sgd(0.5))
      >>> params = jnp.array([1.0, -2.0])
      >>> state = opt.init(params)
      >>> updates, state = opt.update(params, state, params)  # grads = params
      >>> params = gradtx.apply_updates(params, updates)
      >>> print(np.asarray(gradtx.contrib.schedule_free_eval_params(state, params)).round(4))
      [ 0.7764 -1.5528]

    References:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024 (arXiv:2405.15682).

      optax: ``optax.contrib.schedule_free_eval_params``.
    """
    found = find_schedule_free_states(state)
    if len(found) != 1:
        what = "none" if not found else f"{len(found)} of them"
        raise ValueError(
            f"schedule_free_eval_params: state must hold exactly one ScheduleFreeState (the "
            f"state of schedule_free, schedule_free_sgd or schedule_free_adamw), found {what} "
            f"in a {type(state).__name__}"
        )
    (sf_state,) = found
    b1 = sf_state.b1
    treedef = jax.tree.structure(params)
    # z is None where float_leaves kept a leaf from the schedule-free arithmetic.
    z = treedef.flatten_up_to(sf_state.z)
    evaluated = [
        y if zi is None else (y - (1.0 - b1) * zi) / b1
        for y, zi in zip(treedef.flatten_up_to(params), z, strict=True)
    ]
    return jax.tree.unflatten(treedef, evaluated)


def _check_state_dtype_holds(params: Any, state_dtype: Any) -> None:
    if state_dtype is None or jnp.issubdtype(state_dtype, jnp.complexfloating):
        return
    for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
        if jnp.iscomplexobj(x):
            who, name = checks.reported_name("schedule_free", "state_dtype")
            raise ValueError(
                f"{who}: {name}={jnp.dtype(state_dtype).name} cannot hold z for the complex "
                f"leaf at {path_name(path)} ({jnp.result_type(x)}); use a complex dtype or None"
            )


def schedule_free(
    base_optimizer: GradientTransformation,
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    weight_lr_power: Scalar = 2.0,
    state_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Make ``base_optimizer`` schedule-free: its steps move :math:`z`; the params are :math:`y`.

    With :math:`u_t` the base optimizer's update (at the gradient taken at the params
    :math:`y_t`), :math:`\\gamma_t` the learning rate, :math:`c_t = w_t / \\sum_{s\\le t} w_s`
    and :math:`w_t = (\\max_{s \\le t} \\gamma_s)^{r}`:

    .. math::
        z_{t+1} = z_t + u_t, \\quad
        x_{t+1} = (1 - c_t)\\, x_t + c_t\\, z_{t+1}, \\quad
        y_{t+1} = \\beta_1 x_{t+1} + (1-\\beta_1)\\, z_{t+1},

    with :math:`x_t = (y_t - (1-\\beta_1) z_t)/\\beta_1` recomputed from the params (so a
    transform chained after this one that changes :math:`y` keeps :math:`x` consistent).
    The update is :math:`y_{t+1} - y_t`; evaluate the model at :math:`x_t`
    (:func:`schedule_free_eval_params`). Switch the base optimizer's momentum off
    (``b1=0`` for Adam): the interpolation replaces it.

    As in optax, a ``learning_rate`` schedule is evaluated here at ``step_count``, which
    starts at 1 (one ahead of the base optimizer's own count), and :math:`c_t` is 0 (not
    0/0) while every learning rate so far is 0. ``state_dtype`` stores :math:`z`
    rounded to nearest, as optax does. Every floating and complex leaf takes part (the
    rule is linear); integer leaves are left alone.

    Args:
      base_optimizer: the transform whose updates move :math:`z` (it gets the extras).
      learning_rate: :math:`\\gamma \\ge 0` or a schedule, with warm-up but no decay:
        it sets the averaging weights (the base optimizer applies its own).
      b1: :math:`\\beta_1` in (0, 1], the interpolation between :math:`x` and :math:`z`.
      weight_lr_power: :math:`r \\ge 0`, down-weighting the averaging during warm-up.
      state_dtype: dtype of :math:`z` (None: the params').

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.contrib.schedule_free(gradtx.sgd(0.5), 0.5)
      >>> params = jnp.array([1.0, -2.0])
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(state.z).round(4), np.asarray(updates).round(4))  # z = p - 0.5 g
      [ 0.5 -1. ] [-0.5  1. ]

    References:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024 (arXiv:2405.15682).

      optax: ``optax.contrib.schedule_free``.
    """
    who = "schedule_free"
    checks.check_hyperparams(
        who,
        learning_rate=(learning_rate, checks.NONNEGATIVE),
        b1=(b1, "(0, 1]"),
        weight_lr_power=(weight_lr_power, checks.NONNEGATIVE),
    )
    if state_dtype is not None:
        state_dtype = checks.check_optax_dtype(who, "state_dtype", state_dtype)
    base_optimizer = with_extra_args_support(base_optimizer)

    def init(params):
        _check_state_dtype_holds(params, state_dtype)
        # The averaging scalars in the params' lowest dtype, as optax, so that they do not
        # promote bfloat16 params; real, also for complex ones.
        scalar_dtype = tree.real_dtype(tree.tree_dtype(params, "lowest"))
        # A copy: z and the params are distinct buffers, so both can be donated.
        z = jax.tree.map(lambda p: jnp.array(p, dtype=state_dtype, copy=True), params)
        return ScheduleFreeState(
            b1=jnp.asarray(b1, scalar_dtype),
            weight_sum=jnp.zeros([], scalar_dtype),
            step_count=jnp.ones([], tree.COUNT_DTYPE),
            max_lr=jnp.zeros([], scalar_dtype),
            base_optimizer_state=base_optimizer.init(params),
            z=z,
        )

    def update(updates, state, params=None, **extra):
        checks.require_params(who, params, "y")
        checks.check_trees_match(who, "updates", updates, params=params, **{"state.z": state.z})
        rate = learning_rate(state.step_count) if callable(learning_rate) else learning_rate
        lr = jnp.asarray(rate, state.max_lr.dtype)
        max_lr = jnp.maximum(state.max_lr, lr)
        weight = max_lr**weight_lr_power
        weight_sum = state.weight_sum + weight
        # 0 (not 0/0) while every learning rate so far is 0; a NaN weight stays NaN.
        ck = jnp.where(
            jnp.isnan(weight) | jnp.isnan(weight_sum),
            jnp.full(weight.shape, jnp.nan),
            jnp.nan_to_num(weight / weight_sum, nan=0.0, posinf=jnp.inf),
        )
        base_updates, base_state = base_optimizer.update(
            updates, state.base_optimizer_state, params, **extra
        )
        z = jax.tree.map(lambda zi, u: jnp.asarray(zi + u).astype(zi.dtype), state.z, base_updates)
        prev_x = jax.tree.map(lambda y, zi: (y - (1.0 - b1) * zi) / b1, params, state.z)
        x = jax.tree.map(lambda xi, zi: (1.0 - ck) * xi + ck * zi, prev_x, z)
        new_params = jax.tree.map(lambda xi, zi: b1 * xi + (1.0 - b1) * zi, x, z)
        updates = jax.tree.map(lambda new, y: new - y, new_params, params)
        return updates, ScheduleFreeState(
            b1=state.b1,
            weight_sum=weight_sum,
            step_count=tree.safe_increment(state.step_count),
            max_lr=max_lr,
            base_optimizer_state=base_state,
            z=z,
        )

    tx = float_leaves(GradientTransformation(init, update))
    return GradientTransformationExtraArgs(tx.init, tx.update)
