"""``make_train_step``: one jitted step of gradient descent, with the metrics a loop logs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx.core import GradientTransformation, _extras_filter, apply_updates
from gradtx.wrappers import get_hyperparams

TrainStep = Callable[[Any, Any, Any], tuple[Any, Any, dict]]


def norm(tree: Any) -> jax.Array:
    """The global L2 norm of a tree, accumulated in float32 whatever the leaves' dtype."""
    leaves = jax.tree.leaves(tree)
    squares = sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)
    return jnp.sqrt(jnp.asarray(squares, jnp.float32))


def leading_size(batch: Any, who: str) -> int | None:
    """The batch's number of samples: the leading dimension shared by its array leaves."""
    paths = jax.tree_util.tree_flatten_with_path(batch)[0]
    sizes = {jax.tree_util.keystr(p): jnp.shape(x)[0] for p, x in paths if jnp.ndim(x) > 0}
    if not sizes:
        return None
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"batch{k or ''}: {n}" for k, n in sizes.items())
        raise ValueError(f"{who}: the batch's leaves disagree on the number of samples ({listed})")
    return next(iter(sizes.values()))


def make_train_step(
    loss_fn: Callable[..., Any],
    optimizer: GradientTransformation,
    *,
    has_aux: bool = False,
    donate: bool = True,
) -> TrainStep:
    """A jitted ``step(params, opt_state, batch) -> (params, opt_state, metrics)``.

    One step computes :math:`\\ell, g = \\text{value\\_and\\_grad}(f)(\\theta, b)`,
    then ``u, s = optimizer.update(g, s, θ, value=ℓ, batch_size=n)`` and
    :math:`\\theta \\leftarrow \\theta + u`, where :math:`n` is the leading
    dimension of the batch's leaves. The extras let ``reduce_on_plateau`` see
    the loss and the CNTK learners see the minibatch size; members that do not
    take them never receive them.

    ``metrics`` is a dict with ``loss``, ``grad_norm`` and ``update_norm``
    (global L2 norms), every hyperparameter the optimizer keeps in its state
    (:func:`gradtx.inject_hyperparams`, by the paths of
    :func:`gradtx.get_hyperparams`) and, with ``has_aux``, ``aux``.

    Args:
      loss_fn: ``loss_fn(params, batch) -> loss`` (a scalar), or
        ``-> (loss, aux)`` with ``has_aux=True``.
      optimizer: any gradtx or optax gradient transformation.
      has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
      donate: donate the params and state buffers to the step, so they are
        updated in place; the arrays passed in must not be used afterwards.
    """
    if not callable(loss_fn):
        raise TypeError(f"make_train_step: loss_fn must be callable, got {type(loss_fn).__name__}")
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            f"make_train_step: optimizer must be a gradient transformation with init and update, "
            f"got {type(optimizer).__name__}; did you forget to call the factory, e.g. "
            f"gradtx.adam(1e-3) instead of gradtx.adam?"
        )
    keep = _extras_filter(optimizer.update)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=has_aux)

    def step(params, opt_state, batch):
        size = leading_size(batch, "make_train_step")
        out, grads = grad_fn(params, batch)
        loss, aux = out if has_aux else (out, None)
        extra = {"value": loss}
        if size is not None:
            extra["batch_size"] = size
        updates, opt_state = optimizer.update(grads, opt_state, params, **keep(extra))
        params = apply_updates(params, updates)
        metrics = {"loss": loss, "grad_norm": norm(grads), "update_norm": norm(updates)}
        metrics.update(get_hyperparams(opt_state))
        if has_aux:
            metrics["aux"] = aux
        return params, opt_state, metrics

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())
