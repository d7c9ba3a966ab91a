"""L-BFGS: a quasi-Newton direction, scaled to a descent step, then a line search along it."""

from __future__ import annotations

from gradtx import checks
from gradtx.core import (
    GradientTransformation,
    ScalarOrSchedule,
    chain,
    float_leaves,
    identity,
)
from gradtx.transforms.lbfgs import scale_by_lbfgs
from gradtx.transforms.linesearch import scale_by_zoom_linesearch
from gradtx.transforms.scaling import scale, scale_by_learning_rate

# optax's default, built once as optax builds it: a transform is pure, so sharing it is safe.
# "one": a quasi-Newton direction is already scaled, so each search starts at the full step.
DEFAULT_LINESEARCH = scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")


def lbfgs(
    learning_rate: ScalarOrSchedule | None = None,
    memory_size: int = 10,
    scale_init_precond: bool = True,
    linesearch: GradientTransformation | None = DEFAULT_LINESEARCH,
) -> GradientTransformation:
    """L-BFGS with a line search: a full-batch quasi-Newton minimiser.

    With :math:`P_k` the inverse-Hessian estimate of :func:`gradtx.scale_by_lbfgs`
    (built from the last ``memory_size`` differences of params and gradients) and
    :math:`\\eta_k` the step the line search accepts along the direction:

    .. math::
        d_k = -\\alpha_k P_k \\nabla f(w_k), \\qquad w_{k+1} = w_k + \\eta_k d_k,

    where :math:`\\alpha_k` is the learning rate (1 without one) and :math:`\\eta_k` is
    1 without a line search. It is the chain
    ``scale_by_lbfgs(memory_size, scale_init_precond)``, ``scale(-1.0)`` (or
    ``scale_by_learning_rate(learning_rate)``), ``linesearch``.

    The line search calls the objective, so every ``update`` takes the keyword extras
    ``value`` (:math:`f(w_k)`), ``grad`` (:math:`\\nabla f(w_k)`) and ``value_fn``
    (:math:`f`), plus any argument of ``value_fn``;
    :func:`gradtx.transforms.linesearch.value_and_grad_from_state` reuses the value
    and gradient the search computed at the accepted step, so each iteration costs
    only the search's evaluations. :func:`gradtx.make_train_step` passes the extras
    itself (``value_fn`` is the loss on the step's batch). Complex leaves are
    supported, as in optax. Memory is :math:`2m + 3` copies of the params (with the
    default zoom search): for small and medium problems.

    Args:
      learning_rate: :math:`\\alpha_k`, a number, array, tracer or schedule, or None
        (the line search sets the step).
      memory_size: :math:`m \\ge 1`, the past differences kept.
      scale_init_precond: start each recursion from the scaled identity
        :math:`\\gamma_k I` (see :func:`gradtx.scale_by_lbfgs`), else from :math:`I`.
      linesearch: the line search, e.g.
        :func:`gradtx.transforms.linesearch.scale_by_backtracking_linesearch`; None
        for none. The default is
        ``scale_by_zoom_linesearch(max_linesearch_steps=20, initial_guess_strategy="one")``.

    Examples:
      >>> import jax, jax.numpy as jnp, gradtx
      >>> from gradtx.learners.lbfgs import lbfgs
      >>> def f(w): return jnp.sum((w - jnp.array([1.0, -2.0])) ** 2)
      >>> opt = lbfgs()
      >>> params = jnp.zeros(2)
      >>> state = opt.init(params)
      >>> for _ in range(3):
      ...     value, grad = jax.value_and_grad(f)(params)
      ...     updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=f)
      ...     params = gradtx.apply_updates(params, updates)
      >>> print(params)
      [ 1. -2.]

    References:
      Liu and Nocedal, "On the limited memory BFGS method for large scale
        optimization", 1989.

      Nocedal and Wright, "Numerical Optimization", 1999, Algorithms 7.4 and 7.5.

      optax: ``optax.lbfgs``.
    """
    if linesearch is not None and not (
        callable(getattr(linesearch, "init", None))
        and callable(getattr(linesearch, "update", None))
    ):
        raise TypeError(
            f"lbfgs: linesearch must be a gradient transformation (a line search such as "
            f"scale_by_zoom_linesearch(20)) or None, got {type(linesearch).__name__}"
        )
    with checks.named("lbfgs"):
        return float_leaves(
            chain(
                scale_by_lbfgs(memory_size, scale_init_precond),
                scale(-1.0) if learning_rate is None else scale_by_learning_rate(learning_rate),
                identity() if linesearch is None else linesearch,
            )
        )
