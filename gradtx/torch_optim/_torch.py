"""What every ``gradtx.torch_optim`` learner shares: torch's pairs, ``maximize``, complex views."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradtx.core import GradientTransformation, chain, float_leaves, stateless_with_tree_map
from gradtx.transforms.scaling import scale


def scalar_dtype() -> Any:
    """JAX's default float dtype: the counterpart of torch's ``_get_scalar_dtype()``."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def one_minus_power(base: Any, exponent: jax.Array) -> jax.Array:
    """A bias correction ``1 - base ** exponent``, as accurate as torch's Python floats.

    In float32, ``1 - 0.999 ** t`` from the rounded 0.999 loses about ``t * 1e-8`` of
    ``0.999 ** t`` (a relative error near 1e-5 in the correction after 100 steps).
    ``-expm1(t * log1p(-(1 - base)))`` keeps it to a few ulps: ``1 - base`` is exact
    for a concrete base (a Python float) and by Sterbenz's lemma for a traced one (a
    schedule's ``betas[0]``). With float64 enabled the formula is torch's own.
    """
    if scalar_dtype() == jnp.float64:
        return 1 - base**exponent  # pyright: ignore[reportOperatorIssue]
    return -jnp.expm1(exponent * jnp.log1p(-jnp.asarray(1 - base)))


def pair(who: str, name: str, value: Any) -> tuple[Any, Any]:
    """torch's tuple arguments (``betas``, ``etas``, ``step_sizes``, ``eps``): two values."""
    if isinstance(value, str) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{who}: {name} must be a pair of two values, got {value!r}")
    return value[0], value[1]


def negate_if(maximize: bool) -> GradientTransformation | None:
    """torch's ``maximize``: ``grad = -grad`` before anything else, weight decay included."""
    return scale(-1.0) if maximize else None


def conjugate_gradient() -> GradientTransformation:
    """JAX's gradient of a complex param into torch's ``.grad`` (its conjugate); reals pass."""
    return stateless_with_tree_map(lambda g, p: jnp.conj(g) if jnp.iscomplexobj(g) else g)


def _as_real(x: Any, conjugate: bool = False) -> Any:
    """``torch.view_as_real``: a complex array as (real, imaginary) pairs on a new last axis."""
    if not jnp.iscomplexobj(x):
        return x
    x = jnp.conj(x) if conjugate else x
    return jnp.stack([x.real, x.imag], axis=-1)


def _as_complex(u: Any, like: Any) -> Any:
    return jax.lax.complex(u[..., 0], u[..., 1]) if jnp.iscomplexobj(like) else u


def _real_view(inner: GradientTransformation) -> GradientTransformation:
    """Run ``inner`` on complex leaves as torch does: each entry two independent reals.

    JAX's gradient of a complex parameter is the conjugate of torch's ``.grad``: it is
    conjugated into torch's before the real view, and the step comes back as it is.
    """

    def init(params):
        return inner.init(jax.tree.map(_as_real, params))

    def update(updates, state, params=None, **extra):
        real_params = None if params is None else jax.tree.map(_as_real, params)
        real_updates = jax.tree.map(lambda g: _as_real(g, True), updates)
        out, state = inner.update(real_updates, state, real_params, **extra)
        return jax.tree.map(_as_complex, out, updates), state

    return GradientTransformation(init, update)


def learner(
    *blocks: GradientTransformation | None, real_view: bool = True
) -> GradientTransformation:
    """The blocks (None: left out) in a chain, on float leaves, complex ones as real views."""
    present = [b for b in blocks if b is not None]
    inner = present[0] if len(present) == 1 else chain(*present)
    return float_leaves(_real_view(inner) if real_view else inner)
