"""optax's ``MultiSteps``: a learner run once per ``k`` micro-steps on their accumulated gradients.

:func:`gradtx.accumulate` is the short form (a fixed ``k``, the mean, no
skipping); :class:`MultiSteps` adds a schedule of ``k``, sums, a rule that
rejects micro-steps, and optax's state and numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.conditional import cond
from gradtx.core import GradientTransformation, extras_filter


class ShouldSkipUpdateFunction(Protocol):
    """``fn(updates, gradient_step, params) -> (skip, skip_state)`` for :class:`MultiSteps`.

    ``skip`` is a bool scalar array: True rejects the micro-step (nothing of it
    is accumulated or counted). ``skip_state`` is any tree of arrays, kept in
    ``MultiStepsState.skip_state`` for monitoring; its structure must not change
    from step to step.
    """

    def __call__(self, updates: Any, gradient_step: jax.Array, params: Any) -> tuple[Any, Any]:
        """Whether to reject ``updates``, and what to record.

        Args:
          updates: the micro-step's gradients.
          gradient_step: the number of inner updates so far (``MultiStepsState.gradient_step``).
          params: the params, or None.
        """
        ...


def skip_not_finite(updates: Any, gradient_step: Any, params: Any) -> tuple[jax.Array, dict]:
    """Reject a micro-step whose updates hold a NaN or an Inf.

    Args:
      updates: the micro-step's gradients.
      gradient_step: unused.
      params: unused.

    Returns:
      ``(skip, {"should_skip": skip, "num_not_finite": the count of NaN and Inf entries})``.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> skip, info = gradtx.skip_not_finite({"w": jnp.array([1.0, jnp.inf])}, 0, None)
      >>> print(bool(skip), int(info["num_not_finite"]))
      True 1

    References:
      optax: ``optax.skip_not_finite``.
    """
    del gradient_step, params
    counts = [jnp.sum(~jnp.isfinite(x)) for x in jax.tree.leaves(updates)]
    num_not_finite = jnp.sum(jnp.array(counts))  # sum of [] is 0: an empty tree is finite
    skip = num_not_finite > 0
    return skip, {"should_skip": skip, "num_not_finite": num_not_finite}


def skip_large_updates(
    updates: Any, gradient_step: Any, params: Any, max_squared_norm: float | jax.Array
) -> tuple[jax.Array, dict]:
    """Reject a micro-step whose squared global norm is not below ``max_squared_norm``.

    .. math:: \\text{skip} = \\lnot\\left(\\textstyle\\sum_i \\|g_i\\|^2 < c\\right)

    A NaN norm is rejected too. Pass it with the bound bound:
    ``functools.partial(skip_large_updates, max_squared_norm=42.0)``.

    Args:
      updates: the micro-step's gradients.
      gradient_step: unused.
      params: unused.
      max_squared_norm: :math:`c`: a micro-step is kept only if its squared norm is below it.

    Returns:
      ``(skip, {"should_skip": skip, "norm_squared": the squared global norm})``.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> skip, info = gradtx.skip_large_updates(jnp.array([3.0, 4.0]), 0, None, 20.0)
      >>> print(bool(skip), float(info["norm_squared"]))
      True 25.0

    References:
      optax: ``optax.skip_large_updates``.
    """
    del gradient_step, params
    norm_squared = jnp.sum(jnp.array([jnp.sum(x**2) for x in jax.tree.leaves(updates)]))
    skip = ~(norm_squared < max_squared_norm)
    return skip, {"should_skip": skip, "norm_squared": norm_squared}


def _never_skip(updates: Any, gradient_step: Any, params: Any) -> tuple[jax.Array, tuple]:
    return jnp.array(False), ()


def _floating_or_none(dtype: Any) -> Any:
    try:
        canonical = None if dtype is None else jnp.dtype(dtype)
    except TypeError:
        canonical = jnp.dtype(object)
    if canonical is not None and not jnp.issubdtype(canonical, jnp.inexact):
        raise ValueError(
            f"MultiSteps: accumulator_dtype must be a floating dtype or None, got {dtype!r}"
        )
    return canonical


class MultiStepsState(NamedTuple):
    """State of :class:`MultiSteps`: the micro-step, the update count, inner state, accumulator."""

    mini_step: jax.Array  # int32: accepted micro-steps of this cycle, in [0, k)
    gradient_step: jax.Array  # int32: inner updates so far, what every_k_schedule is called with
    inner_opt_state: Any
    acc_grads: Any  # the cycle's running mean (or sum) of gradients, in accumulator_dtype
    skip_state: Any = ()  # what should_skip_update_fn returned last


class MultiSteps:
    """Run ``opt`` once per ``k`` micro-steps, on their mean (or sum) gradient: optax's MultiSteps.

    With :math:`n` the micro-step within the cycle, :math:`k` its length
    (``every_k_schedule`` at the current ``gradient_step``) and :math:`a` the
    accumulator:

    .. math::
        a \\leftarrow a + \\frac{g - a}{n + 1} \\text{ (mean) or } a + g \\text{ (sum)}, \\qquad
        u = \\begin{cases} \\mathrm{opt}(a) & n = k - 1 \\\\ 0 & \\text{otherwise} \\end{cases}

    On the cycle's last micro-step ``opt`` runs on the accumulator (cast to the
    gradients' dtype), its updates are returned and the accumulator restarts;
    on the others the updates are zeros. ``opt``'s update runs inside a
    ``lax.cond``, so it costs nothing on the other micro-steps (under ``vmap``
    over the state both branches run, as for any ``cond``; eagerly, the branch
    is called directly). One accumulator
    per param; a complex leaf gets a complex accumulator of
    ``accumulator_dtype``'s precision. A micro-step that
    ``should_skip_update_fn`` rejects leaves the state as it was, except
    ``skip_state``: as if it had never been fed.

    Use ``MultiSteps(...)`` itself as a transform (it has ``init`` and
    ``update``) or take :meth:`gradient_transformation`.

    Args:
      opt: the learner to run on the accumulated gradients.
      every_k_schedule: micro-steps per update, :math:`\\ge 1`: an int, or a function of
        ``gradient_step`` (the number of updates so far) returning one.
      use_grad_mean: average the micro-steps' gradients (True) or sum them.
      should_skip_update_fn: a :class:`ShouldSkipUpdateFunction` rejecting micro-steps,
        such as :func:`skip_not_finite`; None accepts every one.
      accumulator_dtype: the accumulator's dtype.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> opt = gradtx.MultiSteps(gradtx.sgd(1.0), every_k_schedule=2)
      >>> state = opt.init({"w": jnp.zeros(1)})
      >>> first, state = opt.update({"w": jnp.array([1.0])}, state)
      >>> second, state = opt.update({"w": jnp.array([3.0])}, state)
      >>> print(first["w"], second["w"], bool(opt.has_updated(state)))
      [0.] [-2.] True

    References:
      optax: ``optax.MultiSteps``.
    """

    def __init__(
        self,
        opt: GradientTransformation,
        every_k_schedule: int | Callable[[jax.Array], Any],
        use_grad_mean: bool = True,
        should_skip_update_fn: ShouldSkipUpdateFunction | None = None,
        accumulator_dtype: Any = jnp.float32,
    ):
        if callable(every_k_schedule):
            self._every_k_schedule = every_k_schedule
        else:
            k = checks.check_length(
                "MultiSteps",
                "every_k_schedule",
                every_k_schedule,
                at_most=tree.INT32_MAX,
                wording="integer",
            )
            self._every_k_schedule = lambda gradient_step: k
        self._opt = opt
        self._keep = extras_filter(opt.update)
        self._use_grad_mean = use_grad_mean
        self._should_skip_update_fn = should_skip_update_fn or _never_skip
        # None: each param's own dtype, as optax's (a canonicalised None).
        self._accumulator_dtype = _floating_or_none(accumulator_dtype)

    @property
    def inner_opt(self) -> GradientTransformation:
        """The wrapped learner."""
        return self._opt

    def _accumulator_dtype_for(self, x: Any) -> Any:
        dtype = jnp.result_type(x)
        if self._accumulator_dtype is None:
            return dtype
        if jnp.issubdtype(dtype, jnp.complexfloating):  # a real accumulator would drop the imag
            return jnp.promote_types(self._accumulator_dtype, jnp.complex64)
        return self._accumulator_dtype

    def init(self, params: Any) -> MultiStepsState:
        """The state before the first micro-step.

        Args:
          params: the params (the accumulator is shaped like them).
        """
        acc_grads = jax.tree.map(
            lambda p: tree.zeros_like(p, self._accumulator_dtype_for(p)), params
        )
        gradient_step = tree.zeros_count()
        _, skip_state = self._should_skip_update_fn(tree.zeros_like(params), gradient_step, params)
        return MultiStepsState(
            tree.zeros_count(), gradient_step, self._opt.init(params), acc_grads, skip_state
        )

    def update(
        self, updates: Any, state: MultiStepsState, params: Any = None, **extra: Any
    ) -> tuple[Any, MultiStepsState]:
        """Accumulate one micro-step; run ``opt`` if it closes the cycle.

        Args:
          updates: the micro-step's gradients.
          state: from :meth:`init` or the last update.
          params: the params, handed to ``opt`` and ``should_skip_update_fn``.
          **extra: extras, handed to ``opt`` if its update takes them.
        """
        k = self._every_k_schedule(state.gradient_step)
        skip, skip_state = self._should_skip_update_fn(updates, state.gradient_step, params)
        skip = jnp.asarray(skip)
        if (skip.dtype, skip.shape) != (jnp.bool_, ()):
            raise ValueError(
                "MultiSteps: should_skip_update_fn must return a bool scalar array first, got "
                f"dtype {skip.dtype} and shape {skip.shape}"
            )
        n = state.mini_step
        if self._use_grad_mean:  # Welford's running mean: no sum that grows k times
            step = lambda g, a: a + (g - a) / (n + 1)  # noqa: E731
        else:
            step = lambda g, a: a + g  # noqa: E731
        acc = jax.tree.map(step, updates, state.acc_grads)
        emit = ~skip & (n == k - 1)
        extra = self._keep(extra)

        def run(acc, inner_state):
            cast = jax.tree.map(lambda a, g: a.astype(jnp.result_type(g)), acc, updates)
            out, new_inner = self._opt.update(cast, inner_state, params, **extra)
            # cond needs both branches' states alike: keep each leaf's dtype.
            return out, jax.tree.map(lambda new, old: new.astype(old.dtype), new_inner, inner_state)

        def wait(acc, inner_state):
            shapes, _ = jax.eval_shape(run, acc, inner_state)  # zeros like opt's updates
            return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), inner_state

        new_updates, inner_state = cond(emit, run, wait, acc, state.inner_opt_state)
        # where, not optax's 0/1 products: a NaN cycle does not poison the next one.
        acc_grads = jax.tree.map(
            lambda new, old: jnp.where(skip, old, jnp.where(emit, 0, new)).astype(old.dtype),
            acc,
            state.acc_grads,
        )
        mini_step = jnp.where(skip, n, tree.safe_increment(n) % k).astype(jnp.int32)
        gradient_step = jnp.where(
            emit, tree.safe_increment(state.gradient_step), state.gradient_step
        )
        return new_updates, MultiStepsState(
            mini_step, gradient_step, inner_state, acc_grads, skip_state
        )

    def has_updated(self, state: MultiStepsState) -> jax.Array:
        """Whether a cycle has just closed: the inner learner ran at the last accepted micro-step.

        As optax's: True from the micro-step that ran the inner learner until the
        next accepted one (a rejected micro-step in between changes nothing).

        Args:
          state: a :class:`MultiStepsState` (or anything with its two counters).
        """
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> GradientTransformation:
        """This accumulator as a plain :class:`gradtx.GradientTransformation`."""
        return GradientTransformation(self.init, self.update)
