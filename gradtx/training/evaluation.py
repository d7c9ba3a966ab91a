"""The params to evaluate with: what a learner's state says the model is, not always the params."""

from __future__ import annotations

from typing import Any

from gradtx.training.step import combine, split
from gradtx.transforms.schedule_free import find_schedule_free_states, schedule_free_eval_params


def eval_params(opt_state: Any, params: Any) -> Any:
    """The params to evaluate, predict and export with, for this optimizer state.

    A schedule-free learner (:func:`gradtx.schedule_free`, :func:`gradtx.schedule_free_sgd`,
    :func:`gradtx.schedule_free_adamw`) trains the point :math:`y_t` at which it takes
    gradients, while the model to use is the average :math:`x_t = (y_t - (1 - \\beta_1)
    z_t) / \\beta_1` (:func:`gradtx.schedule_free_eval_params`), found by type anywhere in
    ``opt_state``. For every other learner it is ``params`` itself. :class:`gradtx.Trainer`
    evaluates with it (``fit``'s ``eval_fn``, :meth:`gradtx.Trainer.evaluate`) and writes
    it into its checkpoints; with :func:`gradtx.make_train_step`, call it before evaluating.
    ``params`` may be a model with leaves that are not arrays (an equinox ``Module``): the
    average replaces its array leaves, the others stay as they are.

    Args:
      opt_state: the optimizer's state.
      params: the params being trained, or the model holding them.

    Raises:
      ValueError: if ``opt_state`` holds several schedule-free states.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> for opt in (gradtx.sgd(0.5), gradtx.schedule_free_sgd(0.5)):
      ...     params = jnp.array([1.0, -2.0])
      ...     state = opt.init(params)
      ...     for _ in range(2):  # the gradient of |params|^2 / 2 is params
      ...         updates, state = opt.update(params, state, params)
      ...         params = gradtx.apply_updates(params, updates)
      ...     x = gradtx.eval_params(state, params)
      ...     print(np.asarray(params).round(4), np.asarray(x).round(4))
      [ 0.25 -0.5 ] [ 0.25 -0.5 ]
      [ 0.3625 -0.725 ] [ 0.375 -0.75 ]

    References:
      Defazio et al., "The Road Less Scheduled", NeurIPS 2024 (arXiv:2405.15682).
    """
    if not has_eval_params(opt_state):
        return params
    arrays, static = split(params)
    return combine(schedule_free_eval_params(opt_state, arrays), static)


def has_eval_params(opt_state: Any) -> bool:
    """Whether ``opt_state`` says to evaluate somewhere other than the trained params."""
    return bool(find_schedule_free_states(opt_state))
