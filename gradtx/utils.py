"""optax's small numerical utilities: averaged and periodic copies, norms with safe gradients.

Each has optax's name, arguments and numbers; they are re-exported flat by
``gradtx`` (``gradtx.incremental_update``, ``gradtx.safe_norm``, ...).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks, tree

__all__ = [
    "global_norm",
    "incremental_update",
    "periodic_update",
    "safe_norm",
    "safe_root_mean_squares",
    "scale_gradient",
]


def incremental_update(new_tensors: Any, old_tensors: Any, step_size: Any) -> Any:
    """Polyak averaging: move a running average of the params towards their latest value.

    .. math:: \\bar\\theta \\leftarrow s\\, \\theta + (1 - s)\\, \\bar\\theta

    Args:
      new_tensors: the latest values :math:`\\theta` (e.g. the params).
      old_tensors: the average :math:`\\bar\\theta`, a tree of the same structure.
      step_size: :math:`s`, the weight of the latest values (a number or an array).

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> average = gradtx.incremental_update({"w": jnp.array(1.0)}, {"w": jnp.array(0.0)}, 0.1)
      >>> print(average["w"])
      0.1

    References:
      Polyak and Juditsky, "Acceleration of Stochastic Approximation by Averaging", 1992.

      optax: ``optax.incremental_update``.
    """
    return jax.tree.map(
        lambda new, old: None if new is None else step_size * new + (1.0 - step_size) * old,
        new_tensors,
        old_tensors,
        is_leaf=lambda x: x is None,
    )


def periodic_update(new_tensors: Any, old_tensors: Any, steps: Any, update_period: Any) -> Any:
    """A slow copy of the params: ``new_tensors`` every ``update_period`` steps, else the old.

    .. math:: \\bar\\theta \\leftarrow
        \\theta \\text{ if } t \\bmod K = 0 \\text{ else } \\bar\\theta

    Args:
      new_tensors: the latest values (the "online" params).
      old_tensors: the slow copy (the "target" params), a tree of the same structure.
      steps: :math:`t`, the number of updates of the online params (may be traced).
      update_period: :math:`K`, every how many steps to copy.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> new, old = {"w": jnp.array(1.0)}, {"w": jnp.array(0.0)}
      >>> print([float(gradtx.periodic_update(new, old, t, 2)["w"]) for t in (3, 4)])
      [0.0, 1.0]

    References:
      Mnih et al., "Human-level control through deep reinforcement learning", 2015.

      optax: ``optax.periodic_update``.
    """
    return jax.lax.cond(
        jnp.mod(steps, update_period) == 0, lambda: new_tensors, lambda: old_tensors
    )


@jax.custom_vjp
def _scale_gradient(inputs: Any, scale: Any) -> Any:
    return inputs


def _scale_gradient_forward(inputs: Any, scale: Any) -> tuple[Any, Any]:
    return inputs, scale


def _scale_gradient_backward(scale: Any, cotangents: Any) -> tuple[Any, None]:
    return jax.tree.map(lambda g: g * scale, cotangents), None


_scale_gradient.defvjp(_scale_gradient_forward, _scale_gradient_backward)


def scale_gradient(inputs: Any, scale: Any) -> Any:
    """The identity going forward; multiplies the gradient by ``scale`` going backward.

    .. math:: f(x) = x, \\qquad \\partial f / \\partial x = s

    Args:
      inputs: a tree of arrays.
      scale: :math:`s`, the factor of the gradient flowing back through ``inputs``
        (a number, an array or a tracer; a concrete 0 stops the gradient).

    Examples:
      >>> import jax, jax.numpy as jnp, gradtx
      >>> print(jax.grad(lambda x: gradtx.scale_gradient(x, 0.5) ** 2)(3.0))
      3.0

    References:
      optax: ``optax.scale_gradient``.
    """
    if checks.is_concrete(scale) and not callable(scale) and jnp.ndim(scale) == 0:
        # optax's shortcuts for the two common factors; a traced scale takes the general path.
        if scale == 1.0:
            return inputs
        if scale == 0.0:
            return jax.lax.stop_gradient(inputs)
    return _scale_gradient(inputs, scale)


def global_norm(updates: Any) -> jax.Array:
    """The L2 norm of all leaves taken together: optax's ``global_norm``, ``gradtx.tree.norm``.

    .. math:: \\|u\\| = \\sqrt{\\textstyle\\sum_i |u_i|^2}

    As in optax the squares are summed in the leaves' dtype, so the norm is inf
    once their sum passes its range (float32 entries beyond about 1.8e19).
    :func:`gradtx.tree.global_norm`, which ``clip_by_global_norm`` uses, gives
    the true norm there.

    Args:
      updates: a tree of arrays.

    Examples:
      >>> import jax.numpy as jnp, gradtx
      >>> print(gradtx.global_norm({"a": jnp.array([3.0, 4.0]), "b": jnp.array(12.0)}))
      13.0

    References:
      optax: ``optax.global_norm`` (deprecated there for ``optax.tree.norm``).
    """
    return tree.tree_norm(updates)


def safe_norm(
    x: Any,
    min_norm: Any,
    ord: int | float | str | None = None,  # noqa: A002
    axis: None | tuple[int, ...] | int = None,
    keepdims: bool = False,
) -> jax.Array:
    """``max(norm(x), min_norm)``, whose gradient is 0 (not NaN) where the norm is below it.

    .. math:: \\max(\\|x\\|, n_{min})

    ``jnp.maximum(jnp.linalg.norm(x), min_norm)`` has a NaN gradient at
    :math:`x = 0`: the norm's derivative there is 0/0, and JAX differentiates
    both branches. Here the norm is taken of ones wherever the result is
    ``min_norm``, so that branch's gradient is 0.

    Args:
      x: an array.
      min_norm: :math:`n_{min}`, the smallest value returned.
      ord: the norm's order, as ``jnp.linalg.norm`` takes it (None: 2, or Frobenius).
      axis: the axis or the two axes of matrices to take the norm over; None: all.
      keepdims: keep the reduced axes with size one.

    Examples:
      >>> import jax, jax.numpy as jnp, gradtx
      >>> print(gradtx.safe_norm(jnp.array([3.0, 4.0]), 1.0))
      5.0
      >>> print(jax.grad(lambda x: gradtx.safe_norm(x, 1e-6))(jnp.zeros(2)))
      [0. 0.]

    References:
      optax: ``optax.safe_norm``.
    """
    norm = jnp.linalg.norm(x, ord=ord, axis=axis, keepdims=True)
    small = norm <= min_norm
    masked = jnp.where(small, jnp.ones_like(x), x)
    norm = norm if keepdims else jnp.squeeze(norm, axis=axis)
    small = norm <= min_norm
    return jnp.where(
        small, min_norm, jnp.linalg.norm(masked, ord=ord, axis=axis, keepdims=keepdims)
    )


def safe_root_mean_squares(x: Any, min_rms: Any) -> jax.Array:
    """``max(sqrt(mean(|x|^2)), min_rms)``, whose gradient is 0 (not NaN) below ``min_rms``.

    .. math:: \\max\\Big(\\sqrt{\\tfrac1n \\textstyle\\sum_i |x_i|^2},\\; r_{min}\\Big)

    Args:
      x: an array (complex ones by their moduli).
      min_rms: :math:`r_{min}`, the smallest value returned.

    Examples:
      >>> import jax, jax.numpy as jnp, gradtx
      >>> print(gradtx.safe_root_mean_squares(jnp.array([3.0, 4.0, 0.0, 0.0]), 1.0))
      2.5
      >>> print(jax.grad(lambda x: gradtx.safe_root_mean_squares(x, 1e-6))(jnp.zeros(2)))
      [0. 0.]

    References:
      optax: ``optax.safe_root_mean_squares``.
    """
    x = jnp.asarray(x)
    rms = jnp.sqrt(jnp.mean(tree.abs_sq(x)))
    masked = jnp.where(rms <= min_rms, jnp.ones_like(x), x)
    return jnp.where(rms <= min_rms, min_rms, jnp.sqrt(jnp.mean(tree.abs_sq(masked))))
