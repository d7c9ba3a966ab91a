"""Step wrappers: skip non-finite steps, accumulate gradients, look ahead, average the params.

Each wraps a transform (or follows one in a chain) and changes when or how
its updates are applied, not what it computes; live hyperparameters are
:mod:`gradtx.hyperparams`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation, extras_filter


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
