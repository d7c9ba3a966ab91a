"""Step wrappers: skip non-finite steps, accumulate gradients, look ahead, average the params.

Each wraps a transform (or follows one in a chain) and changes when or how
its updates are applied, not what it computes; live hyperparameters are
:mod:`gradtx.hyperparams`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks, tree
from gradtx.core import GradientTransformation, extras_filter


def _select(keep_new: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda n, o: jnp.where(keep_new, n, o), new, old)


class ApplyIfFiniteState(NamedTuple):
    """State of :func:`apply_if_finite`: error counters, the last verdict, the inner state."""

    notfinite_count: jax.Array  # int32: non-finite steps in a row, 0 after a finite one
    last_finite: jax.Array  # bool: whether the latest updates were finite
    total_notfinite: jax.Array  # int32: non-finite steps skipped or given up on, in all
    inner_state: Any


def apply_if_finite(
    inner: GradientTransformation, max_consecutive_errors: int, *, axis_name: Any = None
) -> GradientTransformation:
    """Skip steps whose updates contain NaN or Inf, leaving the inner state untouched.

    A skipped step returns zero updates and keeps ``inner``'s state as it
    was, so a run with skipped steps equals the run in which they never
    happened. Once more than ``max_consecutive_errors`` steps in a row are not
    finite, they are applied anyway (the inner transform decides what NaN does),
    as in optax; ``notfinite_count`` resets after a finite step. The numbers
    are optax's. Written with ``jnp.where``, not optax's ``lax.cond``, so it
    runs the same under ``jit``, ``vmap`` and ``shard_map`` (a collective in
    ``inner`` never waits on a device that took the other branch); the price
    is that ``inner``'s update is computed on skipped steps too.

    Inside ``shard_map`` or ``pmap`` with the updates split across devices,
    pass ``axis_name``: the step is finite only if every device's part is, so
    all devices skip or apply together. Without it each device would judge its
    own part and the copies could drift apart.

    Args:
      inner: the transform to protect.
      max_consecutive_errors: non-finite steps skipped in a row before giving up,
        :math:`\\ge 0`.
      axis_name: the mapped axis (or axes) to agree across, or None.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.apply_if_finite(gradtx.sgd(0.1), max_consecutive_errors=3)
      >>> grads = {"w": jnp.array([1.0, jnp.nan])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(updates["w"], int(state.total_notfinite))
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

    keep = extras_filter(inner.update)

    def init(params):
        # Separate counters: a donated state must not hold one buffer twice.
        return ApplyIfFiniteState(
            tree.zeros_count(), jnp.array(True), tree.zeros_count(), inner.init(params)
        )

    def update(updates, state, params=None, **extra):
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(updates)]))
        if axis_name is not None:
            finite = jax.lax.pmin(finite.astype(jnp.int32), axis_name) > 0
        new_updates, inner_state = inner.update(updates, state.inner_state, params, **keep(extra))
        notfinite = jnp.where(finite, 0, tree.safe_increment(state.notfinite_count))
        apply = finite | (notfinite > max_consecutive_errors)
        new_updates = jax.tree.map(lambda u: jnp.where(apply, u, jnp.zeros_like(u)), new_updates)
        total = jnp.where(finite, state.total_notfinite, tree.safe_increment(state.total_notfinite))
        return new_updates, ApplyIfFiniteState(
            notfinite.astype(jnp.int32),
            finite,
            total,
            _select(apply, inner_state, state.inner_state),
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
    micro-step and kept only on the last). :class:`gradtx.MultiSteps` is the
    full form: optax's state and numbers, a schedule of ``k``, sums, skip rules,
    and the inner update only on the last micro-step.

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


class ApplyEvery(NamedTuple):
    """State of :func:`apply_every`: the micro-step in the cycle and the gradients' sum."""

    count: jax.Array  # int32: micro-steps since the last emitted sum, in [0, k)
    grad_acc: Any  # this cycle's sum of updates, in the params' dtypes


def apply_every(k: int | jax.Array = 1) -> GradientTransformation:
    """Sum the updates of ``k`` micro-steps and emit the sum on the ``k``-th; zeros before.

    .. math::
        a_t = [t \\bmod k \\ne 0]\\, a_{t-1} + g_t, \\qquad
        u_t = [t \\bmod k = k - 1]\\, a_t

    A block in a chain: the transforms before it still update their state at
    every micro-step, so it is not a larger batch; :class:`MultiSteps` (or
    :func:`accumulate`) runs a whole learner once per ``k`` micro-steps.
    Updates come back in the gradients' dtype; the sum is kept in the
    params' dtype.

    Args:
      k: micro-steps per emitted sum, :math:`\\ge 1`.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.apply_every(2)
      >>> state = opt.init(jnp.zeros(1))
      >>> first, state = opt.update(jnp.array([1.0]), state)
      >>> second, state = opt.update(jnp.array([3.0]), state)
      >>> print(first, second)
      [0.] [4.]

    References:
      optax: ``optax.apply_every``.
    """
    if isinstance(k, jax.Array | np.ndarray):
        checks.check_interval("apply_every", "k", k, "[1, inf)")
    else:
        k = checks.check_length("apply_every", "k", k, at_most=tree.INT32_MAX, wording="integer")

    def init(params):
        return ApplyEvery(tree.zeros_count(), tree.zeros_like(params))

    def update(updates, state, params=None, **extra):
        cycle = state.count % k
        # where, not optax's 0/1 products: a NaN micro-step stays in its own cycle.
        sums = jax.tree.map(lambda g, a: jnp.where(cycle != 0, a + g, g), updates, state.grad_acc)
        emit = cycle == k - 1
        new_updates = jax.tree.map(
            lambda s, g: jnp.where(emit, s, jnp.zeros_like(s)).astype(jnp.result_type(g)),
            sums,
            updates,
        )
        grad_acc = jax.tree.map(lambda s, a: s.astype(a.dtype), sums, state.grad_acc)
        count = (tree.safe_increment(state.count) % k).astype(jnp.int32)
        return new_updates, ApplyEvery(count, grad_acc)

    return GradientTransformation(init, update)


class LookaheadParams(NamedTuple):
    """The params of :func:`lookahead`: the fast ones (for gradients) and the slow ones (for eval).

    Attributes:
      fast: the params the fast learner moves; compute gradients with them.
      slow: the slow params, which generalise better: evaluate with them.
    """

    fast: Any
    slow: Any

    @classmethod
    def init_synced(cls, params: Any) -> LookaheadParams:
        """Fast and slow params that start equal.

        Args:
          params: the starting params, used for both.
        """
        return cls(fast=params, slow=params)


class LookaheadState(NamedTuple):
    """State of :func:`lookahead`: the fast learner's state and its steps since the last sync."""

    fast_state: Any
    steps_since_sync: jax.Array  # int32, in [0, sync_period)


def lookahead(
    fast_optimizer: GradientTransformation,
    sync_period: int,
    slow_step_size: float | jax.Array,
    reset_state: bool = False,
) -> GradientTransformation:
    """Lookahead (Zhang et al., 2019) on :class:`LookaheadParams`: fast steps, then a slow step.

    The params are a ``LookaheadParams(fast, slow)`` pair and the updates are
    one too. ``fast_optimizer`` moves the fast params; on every
    ``sync_period``-th step the slow params move towards the fast ones and the
    fast params jump there:

    .. math::
        \\phi \\leftarrow \\phi + \\alpha(\\theta + u - \\phi), \\qquad
        \\theta \\leftarrow \\phi

    Apply the updates unchanged (``apply_updates(params, updates)``), or fast and
    slow fall out of step. :func:`lookahead_with_slow_weights` keeps the slow
    weights in the state instead, for a plain params tree.

    Args:
      fast_optimizer: the inner learner, run on the fast params.
      sync_period: fast steps per slow step, :math:`k \\ge 1`.
      slow_step_size: :math:`\\alpha` in [0, 1].
      reset_state: re-initialise ``fast_optimizer``'s state after each sync.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.lookahead(gradtx.sgd(1.0), sync_period=2, slow_step_size=0.5)
      >>> params = gradtx.LookaheadParams.init_synced(jnp.zeros(1))
      >>> state = opt.init(params)
      >>> for _ in range(2):
      ...     updates, state = opt.update(-jnp.ones(1), state, params)
      ...     params = gradtx.apply_updates(params, updates)
      >>> print(params.fast, params.slow)  # the fast steps reach 2; the slow step goes half way
      [1.] [1.]

    References:
      Zhang, Lucas, Hinton and Ba, "Lookahead Optimizer: k steps forward, 1 step back", 2019.

      optax: ``optax.lookahead``.
    """
    sync_period = checks.check_length(
        "lookahead", "sync_period", sync_period, at_most=tree.INT32_MAX, wording="integer"
    )
    checks.check_interval("lookahead", "slow_step_size", slow_step_size, "[0, 1]")
    keep = extras_filter(fast_optimizer.update)

    def is_pair(params):  # LookaheadParams, or another (fast, slow) pair such as optax's
        return hasattr(params, "fast") and hasattr(params, "slow")

    def init(params):
        # optax's init takes the fast params alone too ("only fast parameters were passed").
        fast_params = params.fast if is_pair(params) else params
        return LookaheadState(fast_optimizer.init(fast_params), tree.zeros_count())

    def update(updates, state, params=None, **extra):
        if not is_pair(params):
            raise ValueError(
                "lookahead: update needs the params as gradtx.LookaheadParams(fast, slow), got "
                f"{type(params).__name__}; start from LookaheadParams.init_synced(params), or "
                "use gradtx.lookahead_with_slow_weights for a plain params tree"
            )
        pair: Any = params  # a (fast, slow) pair
        fast_updates, fast_state = fast_optimizer.update(
            updates, state.fast_state, pair.fast, **keep(extra)
        )
        sync = state.steps_since_sync == sync_period - 1
        # The last fast step and the sync in one update: with d = fast + u - slow,
        # slow moves by alpha * d and fast by u - (1 - alpha) * d.
        gap = jax.tree.map(lambda f, u, s: f + u - s, pair.fast, fast_updates, pair.slow)
        slow = jax.tree.map(lambda d: jnp.where(sync, slow_step_size * d, jnp.zeros_like(d)), gap)
        fast = jax.tree.map(
            lambda u, d: jnp.where(sync, u - (1 - slow_step_size) * d, u), fast_updates, gap
        )
        if reset_state:
            fresh = fast_optimizer.init(pair.fast)
            fast_state = jax.tree.map(
                lambda now, new: jnp.where(sync, new, now).astype(now.dtype), fast_state, fresh
            )
        steps = ((state.steps_since_sync + 1) % sync_period).astype(jnp.int32)
        # The params' own pair type, so that apply_updates sees matching trees.
        return type(pair)(fast=fast, slow=slow), LookaheadState(fast_state, steps)

    return GradientTransformation(init, update)


class LookaheadWithSlowWeightsState(NamedTuple):
    """State of :func:`lookahead_with_slow_weights`: the step count, slow weights, fast state."""

    count: jax.Array  # int32: fast steps taken
    slow: Any  # the slow weights
    fast: Any  # the fast transform's state


def lookahead_with_slow_weights(
    fast: GradientTransformation, sync_period: int, slow_step_size: float | jax.Array
) -> GradientTransformation:
    """Lookahead (Zhang et al., 2019) on a plain params tree, the slow weights in the state.

    The fast transform updates the params as usual; every ``sync_period``-th
    step the slow weights move towards the fast ones and the params jump there:

    .. math::
        \\phi \\leftarrow \\phi + \\alpha(\\theta_{fast} - \\phi), \\qquad \\theta \\leftarrow \\phi

    The slow weights live in the state (initialised to the params, read as
    ``state.slow``), so the params stay an ordinary tree; :func:`lookahead`
    is optax's form, with :class:`LookaheadParams`. Both give the same params.

    Args:
      fast: the inner learner.
      sync_period: fast steps per slow step, :math:`k \\ge 1`.
      slow_step_size: :math:`\\alpha` in [0, 1].

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.lookahead_with_slow_weights(gradtx.sgd(1.0), 2, slow_step_size=0.5)
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
    who = "lookahead_with_slow_weights"
    sync_period = checks.check_length(
        who, "sync_period", sync_period, at_most=tree.INT32_MAX, wording="integer"
    )
    checks.check_interval(who, "slow_step_size", slow_step_size, "[0, 1]")

    keep = extras_filter(fast.update)

    def init(params):
        return LookaheadWithSlowWeightsState(
            tree.zeros_count(), jax.tree.map(jnp.copy, params), fast.init(params)
        )

    def update(updates, state, params=None, **extra):
        checks.require_params(who, params)
        fast_updates, fast_state = fast.update(updates, state.fast, params, **keep(extra))
        count = tree.safe_increment(state.count)
        sync = count % sync_period == 0
        fast_params = jax.tree.map(lambda p, u: p + u, params, fast_updates)
        synced = jax.tree.map(lambda s, f: s + slow_step_size * (f - s), state.slow, fast_params)
        slow = _select(sync, synced, state.slow)
        new_updates = jax.tree.map(
            lambda u, s, p: jnp.where(sync, s - p, u), fast_updates, synced, params
        )
        return new_updates, LookaheadWithSlowWeightsState(count, slow, fast_state)

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
        checks.require_params("ema_params", params)
        new_params = jax.tree.map(lambda p, u: p + u, params, updates)
        first = state.count == 0  # torch's n_averaged == 0: copy instead of averaging
        copy_first = start_from == "first_update"

        def average(e, p):
            mixed = decay * e + (1 - decay) * p
            return (jnp.where(first, p, mixed) if copy_first else mixed).astype(e.dtype)

        ema = jax.tree.map(average, state.ema, new_params)
        return updates, EmaParamsState(tree.safe_increment(state.count), ema)

    return GradientTransformation(init, update)
