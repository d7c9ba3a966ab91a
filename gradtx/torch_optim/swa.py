"""torch's stochastic weight averaging (``torch.optim.swa_utils``) as gradtx pieces.

:func:`averaged_model` is ``AveragedModel`` with its ``update_parameters`` calls:
a transform placed last in a chain that keeps the average of the params in its
state. :func:`swalr` is ``SWALR`` with the scheduler that runs before it: a
schedule of the update count. Both take torch's canonical loop's ``swa_start``
and gradtx's ``steps_per_epoch``::

    for epoch in range(epochs):
        for batch in loader:                      # steps_per_epoch batches
            ...; optimizer.step()
        if epoch > swa_start:
            swa_model.update_parameters(model)    # averaged_model(swa_start=...)
            swa_scheduler.step()                  # swalr(..., swa_start=...)
        else:
            scheduler.step()

is ``chain(torch_optim.sgd(swalr(scheduler, swa_lr, swa_start=swa_start,
steps_per_epoch=k)), averaged_model(swa_start=swa_start, steps_per_epoch=k))``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks, tree
from gradtx.core import GradientTransformation, Scalar, float_leaves
from gradtx.torch_optim.schedulers import (
    TorchSchedule,
    _count,
    _dtype,
    _half_cosine,
    _int,
    _steps_per_epoch,
)
from gradtx.tree import INT32_MAX

__all__ = ["AveragedModelState", "averaged_model", "averaged_model_params", "swalr"]


def _swa_start(who: str, swa_start: Any) -> int:
    return checks.check_length(
        who, "swa_start", swa_start, at_least=-1, at_most=INT32_MAX - 1, wording="integer"
    )


class AveragedModelState(NamedTuple):
    """State of :func:`averaged_model`, with torch's ``n_averaged``."""

    count: jax.Array  # int32: updates seen
    n_averaged: jax.Array  # int32: update_parameters calls so far (torch's n_averaged)
    averaged_params: Any  # params-shaped: torch's swa_model parameters


def averaged_model(
    ema_decay: Scalar | None = None,
    *,
    swa_start: int = -1,
    average_every: int = 1,
    steps_per_epoch: int = 1,
) -> GradientTransformation:
    """torch's ``AveragedModel``: a running average of the params, kept in the state.

    Updates pass through unchanged; place it last in a chain. After update
    :math:`t` (params :math:`\\theta_t`), when it ends an epoch :math:`e` that
    torch's loop averages, ``update_parameters`` runs (:math:`n` calls before):

    .. math::
        \\bar\\theta \\leftarrow \\theta_t \\ (n = 0), \\qquad
        \\bar\\theta \\leftarrow \\bar\\theta + \\frac{\\theta_t - \\bar\\theta}{n + 1}
        \\ \\text{(equal average)}, \\qquad
        \\bar\\theta \\leftarrow \\beta\\bar\\theta + (1 - \\beta)\\theta_t
        \\ \\text{(EMA)}

    and :math:`n \\leftarrow n + 1`. Before the first call :math:`\\bar\\theta` is
    the params given to ``init`` (torch's deep copy of the model). The epochs
    averaged are those of this torch loop::

        swa_model = AveragedModel(model)          # or multi_avg_fn=get_ema_multi_avg_fn(beta)
        for epoch in itertools.count():           # with steps_per_epoch=1: every update
            for batch in range(steps_per_epoch):
                optimizer.step()
            if epoch > swa_start and (epoch - swa_start - 1) % average_every == 0:
                swa_model.update_parameters(model)

    so the defaults average after every update from the first (EMA's usual
    loop), ``swa_start=s`` is torch's canonical ``if epoch > swa_start``, and
    ``average_every=k`` averages every :math:`k`-th epoch from the first one
    after ``swa_start``. Read the average with :func:`averaged_model_params`
    (or ``state.averaged_params``). The equal average is torch's default
    ``avg_fn`` as its CPU path computes it; the EMA is
    ``get_ema_multi_avg_fn(beta)``'s ``lerp`` (``get_ema_avg_fn(beta)`` is the
    same rule, equal up to rounding). Complex leaves are averaged as complex
    numbers; integer and boolean leaves are not averaged (None in the average).

    Args:
      ema_decay: None for the equal average (SWA, torch's default); :math:`\\beta`
        in [0, 1] for the EMA of ``get_ema_multi_avg_fn(beta)``.
      swa_start: the last epoch not averaged, an integer >= -1 (-1: from the first).
      average_every: average every this many epochs, a positive integer.
      steps_per_epoch: updates per epoch, a positive integer (keyword-only, gradtx's).

    References:
      torch: ``torch.optim.swa_utils.AveragedModel``, ``get_swa_avg_fn``,
        ``get_ema_multi_avg_fn``.

      Izmailov, Podoprikhin, Garipov, Vetrov and Wilson, "Averaging Weights Leads
        to Wider Optima and Better Generalization", UAI 2018.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> from gradtx import torch_optim
      >>> from gradtx.torch_optim.swa import averaged_model, averaged_model_params
      >>> opt = gradtx.chain(torch_optim.sgd(1.0), averaged_model(swa_start=0))
      >>> params = {"w": jnp.zeros(1)}
      >>> state = opt.init(params)
      >>> for g in [1.0, 1.0, 1.0]:  # params -1, -2, -3; the last two are averaged
      ...     updates, state = opt.update({"w": jnp.array([g])}, state, params)
      ...     params = gradtx.apply_updates(params, updates)
      >>> print(np.asarray(averaged_model_params(state)["w"]))
      [-2.5]
    """
    who = "averaged_model"
    if ema_decay is not None:
        checks.check_interval(who, "ema_decay", ema_decay, "[0, 1]")
    start = _swa_start(who, swa_start)
    every = checks.check_length(who, "average_every", average_every, wording="positive")
    spe = _steps_per_epoch(who, steps_per_epoch)

    def average(avg, p, n_averaged):
        if ema_decay is None:
            return avg + (p - avg) / (n_averaged + 1).astype(tree.real_dtype(avg.dtype))
        weight = 1 - ema_decay if checks.is_concrete(ema_decay) else 1 - jnp.asarray(ema_decay)
        weight = jnp.asarray(weight, tree.real_dtype(avg.dtype))
        # torch._foreach_lerp_: the formula from the nearer end, exact at weights 0 and 1.
        return jnp.where(weight < 0.5, avg + weight * (p - avg), p - (p - avg) * (1 - weight))

    def init(params):
        return AveragedModelState(
            tree.zeros_count(), tree.zeros_count(), jax.tree.map(jnp.copy, params)
        )

    def update(updates, state, params=None, **extra):
        del extra
        checks.require_params(who, params)
        checks.check_trees_match(who, "updates", updates, params=params)
        count = tree.safe_increment(state.count)
        epoch = count // spe - 1
        since = epoch - (start + 1)
        averages = (count % spe == 0) & (since >= 0) & (since % every == 0)
        first = state.n_averaged == 0

        def one(avg, p, u):
            p = jnp.asarray(p + u).astype(avg.dtype)
            new = jnp.where(first, p, average(avg, p, state.n_averaged)).astype(avg.dtype)
            return jnp.where(averages, new, avg)

        averaged = jax.tree.map(one, state.averaged_params, params, updates)
        n_averaged = jnp.where(averages, tree.safe_increment(state.n_averaged), state.n_averaged)
        return updates, AveragedModelState(count, n_averaged, averaged)

    return float_leaves(GradientTransformation(init, update))


def averaged_model_params(state: Any) -> Any:
    """The averaged params in an :func:`averaged_model` state: torch's ``swa_model``'s.

    Args:
      state: the state of :func:`averaged_model`, or of a chain containing it.

    Raises:
      ValueError: if ``state`` holds no averaged_model state, or several.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> from gradtx import torch_optim
      >>> from gradtx.torch_optim.swa import averaged_model, averaged_model_params
      >>> opt = gradtx.chain(torch_optim.adam(), averaged_model())
      >>> averaged_model_params(opt.init({"w": jnp.ones(3)}))["w"]
      Array([1., 1., 1.], dtype=float32)
    """

    def is_state(x):
        return isinstance(x, AveragedModelState)

    found = [node for node in jax.tree.leaves(state, is_leaf=is_state) if is_state(node)]
    if not found:
        raise ValueError(
            "averaged_model_params: the state holds no torch_optim.averaged_model state"
        )
    if len(found) > 1:
        raise ValueError(
            f"averaged_model_params: the state holds {len(found)} averaged_model states; "
            "pass the one you mean"
        )
    return found[0].averaged_params


def _rate_from_swa_lr(who: str, lr: Any, swa_lr: Any) -> Any:
    """The rate before ``swa_start`` once SWALR(anneal_epochs=0) has been built.

    Its init-time step sets the optimizer's rate to ``swa_lr``; a constant rate stays
    there, and torch's chainable schedulers multiply it by their factors from then on.
    """
    if not callable(lr):
        return swa_lr
    multiplier = getattr(lr, "multiplier", None)
    if multiplier is None:
        raise ValueError(
            f"{who}: with anneal_epochs=0, torch's SWALR sets the lr to swa_lr when it is "
            "built, and the scheduler before swa_start goes on from there; that is "
            "reproduced for a constant lr and for the chainable torch_optim schedules "
            f"(those with a .multiplier), got {lr!r}"
        )
    return lambda count: jnp.asarray(swa_lr, _dtype()) * multiplier(count)


def swalr(
    lr: Any,
    swa_lr: Scalar,
    anneal_epochs: int = 10,
    anneal_strategy: str = "cos",
    *,
    swa_start: int = -1,
    steps_per_epoch: int = 1,
) -> TorchSchedule:
    """torch's ``SWALR`` after the scheduler it takes over from: a schedule of the count.

    torch's loop (``scheduler`` drives the rate until ``swa_start``, SWALR after)::

        swa_scheduler = SWALR(optimizer, swa_lr, anneal_epochs, anneal_strategy)
        for epoch in range(epochs):
            for batch in range(steps_per_epoch):
                optimizer.step()
            if epoch > swa_start:
                swa_scheduler.step()
            else:
                scheduler.step()

    With :math:`\\eta(e)` the rate ``lr`` gives epoch :math:`e`, :math:`E` =
    ``swa_start + 1`` (the first epoch after which SWALR steps: it runs at
    :math:`\\eta(E)`, set by ``scheduler``'s last step), :math:`A` =
    ``anneal_epochs`` and :math:`\\alpha(x) = x` (``"linear"``) or
    :math:`(1 - \\cos \\pi x) / 2` (``"cos"``), the rate in epoch :math:`e` is

    .. math::
        \\eta_e = \\eta(e) \\ (e \\le E), \\qquad
        \\eta_e = \\alpha_s\\, \\eta_{swa} + (1 - \\alpha_s)\\, \\eta(E), \\quad
        \\alpha_s = \\alpha(\\min(1, s / A)), \\ s = e - E \\ (e > E):

    SWALR anneals from the rate it finds to ``swa_lr`` over :math:`A` epochs
    and holds it (torch recovers :math:`\\eta(E)` from the current rate at each
    step, ``_get_initial_lr``; this is the closed form of that recursion). With
    :math:`A = 0` the rate is :math:`\\eta_{swa}` from epoch :math:`E + 1` on,
    and SWALR's init-time step has already set it to :math:`\\eta_{swa}` before
    training: a constant ``lr`` then trains at :math:`\\eta_{swa}` throughout,
    and a chainable ``scheduler`` (one with ``.multiplier``: StepLR,
    ExponentialLR, CosineAnnealingLR with ``eta_min=0`` up to ``T_max``, ...)
    runs as :math:`\\eta_{swa}` times its factors, as torch's does. With
    :math:`A > 0` the init-time step changes nothing. The epoch is
    ``count // steps_per_epoch``: build ``lr`` with the same ``steps_per_epoch``.

    Args:
      lr: the rate before SWA: the optimizer's constant ``lr``, or the schedule of
        the scheduler before it (e.g. ``cosine_annealing_lr(0.1, T_max,
        steps_per_epoch=k)``).
      swa_lr: :math:`\\eta_{swa} \\ge 0`, the rate annealed to.
      anneal_epochs: :math:`A`, an integer >= 0.
      anneal_strategy: ``"cos"`` or ``"linear"``.
      swa_start: torch's loop's ``swa_start``, an integer >= -1 (-1: SWALR steps
        from the first epoch, with no scheduler before it).
      steps_per_epoch: updates per epoch (keyword-only, gradtx's).

    References:
      torch: ``torch.optim.swa_utils.SWALR``.

    Example:
      >>> from gradtx.torch_optim.swa import swalr
      >>> swalr(0.1, 0.05, anneal_epochs=2, anneal_strategy="linear")([0, 1, 2, 3])
      Array([0.1  , 0.075, 0.05 , 0.05 ], dtype=float32)
    """
    who = "swalr"
    checks.check_interval(who, "lr", lr, checks.NONNEGATIVE)
    checks.check_interval(who, "swa_lr", swa_lr, checks.NONNEGATIVE)
    if anneal_strategy not in ("cos", "linear"):
        raise ValueError(
            f"{who}: anneal_strategy must be one of 'cos' or 'linear', instead got "
            f"{anneal_strategy!r}"
        )
    anneal = _int(
        who, "anneal_epochs", anneal_epochs, low=0,
        torch_text="anneal_epochs must be equal or greater than 0",
    )  # fmt: skip
    if anneal > INT32_MAX:
        raise ValueError(f"{who}: anneal_epochs must be at most 2**31 - 1, got {anneal}")
    first = _swa_start(who, swa_start) + 1
    spe = _steps_per_epoch(who, steps_per_epoch)
    before = _rate_from_swa_lr(who, lr, swa_lr) if anneal == 0 else lr
    found_at = min(first * spe, INT32_MAX)  # a count in epoch E

    def rate_before(count, dt):
        value = before(count) if callable(before) else before
        return jnp.broadcast_to(jnp.asarray(value, dt), jnp.shape(count))

    def schedule(count):
        dt = _dtype()
        t = _count(count)
        epoch = t if spe == 1 else t // spe
        target = jnp.asarray(swa_lr, dt)
        if anneal == 0:
            annealed = jnp.broadcast_to(target, t.shape)
        else:
            found = rate_before(np.int32(found_at), dt)
            a = jnp.clip(epoch - first, 0, anneal)
            b = (anneal - a).astype(dt)
            a = a.astype(dt)
            if anneal_strategy == "cos":
                rest, alpha = _half_cosine(a, b, float(anneal))
            else:
                rest, alpha = b / float(anneal), a / float(anneal)
            annealed = found * rest + target * alpha
        return jnp.where(epoch > first, annealed, rate_before(t, dt))

    return TorchSchedule(schedule, getattr(lr, "base_lr", lr), who)
