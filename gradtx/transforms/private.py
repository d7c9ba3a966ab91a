"""Differential privacy: clip each example's gradient, sum, add Gaussian noise (DP-SGD).

The functions here take *per-example* gradients: every leaf carries the batch
on its axis 0 (``jax.vmap(jax.grad(loss), in_axes=(None, 0))`` gives them).
:func:`differentially_private_aggregate` turns them into one noised mean
gradient, so it goes first in a chain; gradient accumulation (``MultiSteps``,
``apply_every``) does not compose with it, since the clipping is per example.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation


def _check_batch_axis(who: str, grads: Any) -> None:
    """Raise ``ValueError`` naming the first leaf without the first leaf's batch axis 0."""
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    if not flat:
        return
    first_path, first = flat[0]
    if jnp.ndim(first) < 1:
        raise ValueError(
            f"{who}: expects per-example gradients, each leaf with the batch on axis 0; "
            f"the leaf at {checks.path_name(first_path)} is a scalar"
        )
    batch = jnp.shape(first)[0]
    for path, g in flat[1:]:
        if jnp.ndim(g) < 1 or jnp.shape(g)[0] != batch:
            raise ValueError(
                f"{who}: expects per-example gradients, each leaf with the batch on axis 0; "
                f"the leaf at {checks.path_name(first_path)} has {batch} examples "
                f"(shape {jnp.shape(first)}) and the leaf at {checks.path_name(path)} has "
                f"shape {jnp.shape(g)}"
            )


def per_example_global_norm_clip(
    grads: Any, l2_norm_clip: float | jax.Array
) -> tuple[Any, jax.Array]:
    """Clip each example's gradient to global L2 norm :math:`C`, and sum over the examples.

    .. math::
        \\sum_i g_i \\min\\left(1, \\frac{C}{\\lVert g_i\\rVert_2}\\right)

    where :math:`\\lVert g_i\\rVert_2` is taken over every leaf of example :math:`i`
    (complex leaves by their moduli); an example with a zero gradient counts as unclipped.
    A function of per-example gradients, not a transformation.

    Args:
      grads: per-example gradients: a tree whose every leaf has the batch on axis 0.
      l2_norm_clip: :math:`C \\ge 0` (``jnp.inf``: no clipping).

    Returns:
      ``(sum of the clipped gradients, number of examples that were clipped)``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.transforms.private import per_example_global_norm_clip
      >>> grads = [jnp.array([[0.0, 0.0, 0.0], [0.0, 3.0, 4.0], [4.0, 0.0, 3.0]])]
      >>> total, clipped = per_example_global_norm_clip(grads, 2.5)
      >>> print(total[0], int(clipped))  # two examples of norm 5, each halved
      [2.  1.5 3.5] 2

    References:
      Abadi et al., "Deep Learning with Differential Privacy", 2016.

      optax: ``optax.per_example_global_norm_clip``.
    """
    checks.check_interval("per_example_global_norm_clip", "l2_norm_clip", l2_norm_clip, "[0, inf]")
    _check_batch_axis("per_example_global_norm_clip", grads)
    norms = jax.vmap(tree.tree_norm)(grads)
    # 0 / 0 (a zero clip of a zero gradient) is NaN: such an example is not scaled.
    multipliers = jnp.nan_to_num(jnp.minimum(l2_norm_clip / norms, 1.0), nan=1.0)
    clipped_sum = jax.tree.map(lambda g: jnp.tensordot(multipliers, g, axes=1), grads)
    return clipped_sum, jnp.sum(multipliers < 1.0)


def per_example_layer_norm_clip(
    grads: Any, global_l2_norm_clip: float | jax.Array, uniform: bool = True
) -> tuple[Any, Any]:
    """Clip each example's gradient leaf by leaf (layer by layer), and sum over the examples.

    Leaf :math:`k` of :math:`K` is clipped on its own (as
    :func:`per_example_global_norm_clip`) to

    .. math::
        C_k = C / \\sqrt{K} \\;\\text{ (uniform)}, \\qquad
        C_k = C \\sqrt{D_k / D} \\;\\text{ (otherwise)},

    with :math:`D_k` the leaf's entries per example and :math:`D` their total, so that
    :math:`\\sum_k C_k^2 = C^2`: the whole clipped gradient has norm at most :math:`C`.

    Args:
      grads: per-example gradients: a tree whose every leaf has the batch on axis 0.
      global_l2_norm_clip: :math:`C \\ge 0`, the overall bound (``jnp.inf``: none).
      uniform: the same bound for every leaf (False: in proportion to its size).

    Returns:
      ``(sum of the clipped gradients, number of examples clipped)``, each a tree
      like ``grads`` (one count per leaf).

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx.transforms.private import per_example_layer_norm_clip
      >>> grads = {"a": jnp.array([[3.0, 4.0], [0.3, 0.4]]), "b": jnp.array([[1.0], [0.0]])}
      >>> total, clipped = per_example_layer_norm_clip(grads, 2**0.5)  # 1 per leaf
      >>> print(np.asarray(total["a"]).round(4), int(clipped["a"]), total["b"], int(clipped["b"]))
      [0.9 1.2] 1 [1.] 0

    References:
      McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private Recurrent
        Language Models", 2018.

      optax: ``optax.per_example_layer_norm_clip``.
    """
    who = "per_example_layer_norm_clip"
    checks.check_interval(who, "global_l2_norm_clip", global_l2_norm_clip, "[0, inf]")
    _check_batch_axis(who, grads)
    if uniform:
        count = len(jax.tree.leaves(grads))
        bounds = jax.tree.map(lambda _: global_l2_norm_clip * (1.0 / count) ** 0.5, grads)
    else:
        total = sum(g[0].size for g in jax.tree.leaves(grads))
        bounds = jax.tree.map(lambda g: global_l2_norm_clip * (g[0].size / total) ** 0.5, grads)
    result = jax.tree.map(per_example_global_norm_clip, grads, bounds)
    return jax.tree.transpose(jax.tree.structure(grads), jax.tree.structure((0, 0)), result)


class DifferentiallyPrivateAggregateState(NamedTuple):
    """State of :func:`differentially_private_aggregate`: the key of the next step's noise."""

    rng_key: jax.Array  # a typed key (jax.random.key)


def _as_key(key: Any) -> jax.Array:
    """A typed key from a typed key, an old-style raw ``uint32`` key, or an integer seed."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if isinstance(key, jax.Array) and key.dtype == jnp.uint32 and key.ndim == 1:
        return jax.random.wrap_key_data(key)
    return jax.random.key(key)


def differentially_private_aggregate(
    l2_norm_clip: float | jax.Array,
    noise_multiplier: float | jax.Array,
    key: jax.Array | int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    """DP-SGD's aggregation: per-example clipping, a sum, Gaussian noise, the mean.

    For a batch of :math:`B` per-example gradients :math:`g_i`:

    .. math::
        u = \\frac1B \\Big( \\sum_i g_i \\min\\big(1, \\tfrac{C}{\\lVert g_i\\rVert_2}\\big)
        + \\mathcal N(0, \\sigma^2 C^2 I) \\Big)

    The noise of each leaf is drawn with its own key, split off the state's key each
    step as optax splits it, so a run repeats optax's noise for the same key. It must
    come first in a chain (it removes the batch axis); the updates it returns have the
    params' shapes.

    Args:
      l2_norm_clip: :math:`C > 0`, the largest norm of one example's gradient.
      noise_multiplier: :math:`\\sigma \\ge 0`, the noise's standard deviation over :math:`C`.
      key: the key of the noise (``jax.random.key``), or an integer seed for one. None
        uses ``jax.random.key(0)`` with a warning: noise from a known key can be
        subtracted, so pass a secret one.
      seed: optax's deprecated spelling of an integer ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.contrib.differentially_private_aggregate(1.0, 0.0, jax.random.key(0))
      >>> per_example = {"w": jnp.array([[3.0, 4.0], [0.3, 0.4]])}  # two examples
      >>> updates, state = tx.update(per_example, tx.init({"w": jnp.zeros(2)}))
      >>> print(np.asarray(updates["w"]).round(4))  # (g_1 / 5 + g_2) / 2, no noise
      [0.45 0.6 ]

    References:
      Abadi et al., "Deep Learning with Differential Privacy", 2016.

      optax: ``optax.contrib.differentially_private_aggregate``.
    """
    who = "differentially_private_aggregate"
    checks.check_hyperparams(
        who,
        l2_norm_clip=(l2_norm_clip, checks.POSITIVE),
        noise_multiplier=(noise_multiplier, checks.NONNEGATIVE),
    )
    if seed is not None:
        if key is not None:
            raise ValueError(f"{who}: give key or seed, not both (seed is optax's deprecated key)")
        warnings.warn(
            f"{who}: seed is deprecated (as in optax); pass key=jax.random.key(seed)",
            DeprecationWarning,
            stacklevel=2,
        )
        key = seed
    if key is None:
        warnings.warn(
            f"{who}: no key given, so the noise comes from jax.random.key(0); anyone who "
            f"knows the key can subtract the noise: pass a secret key",
            stacklevel=2,
        )
        key = 0
    key = _as_key(key)
    noise_std = l2_norm_clip * noise_multiplier

    def init(params):
        return DifferentiallyPrivateAggregateState(rng_key=key)

    def update(updates, state, params=None, **extra):
        leaves, treedef = jax.tree.flatten(updates)
        _check_batch_axis(who, updates)
        if not leaves:
            return updates, state
        batch = leaves[0].shape[0]
        clipped, _ = per_example_global_norm_clip(leaves, l2_norm_clip)
        next_key, *keys = jax.random.split(state.rng_key, len(leaves) + 1)
        noised = [
            (g + noise_std * jax.random.normal(k, g.shape, g.dtype)) / batch
            for g, k in zip(clipped, keys, strict=True)
        ]
        return jax.tree.unflatten(treedef, noised), DifferentiallyPrivateAggregateState(next_key)

    return GradientTransformation(init, update)
