"""Gradient noise: Gaussian noise added to the updates, its variance annealed over the steps."""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation


class AddNoiseState(NamedTuple):
    """State of :func:`add_noise`: the step count (for the annealing) and the random key."""

    count: jax.Array  # int32 scalar: updates applied so far
    rng_key: jax.Array  # a typed key (jax.random.key), split once per update


def _as_key(key: Any) -> jax.Array:
    """A typed key from a typed key, raw ``uint32`` key data, or an integer seed.

    optax's rule (a typed key as it is, anything else a seed for ``jax.random.key``),
    plus raw key data such as ``jax.random.PRNGKey(0)``, which optax's rule rejects.
    """
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if jnp.ndim(key) > 0 and jnp.result_type(key) == jnp.uint32:
        return jax.random.wrap_key_data(jnp.asarray(key))
    return jax.random.key(key)


def add_noise(
    eta: float | jax.Array,
    gamma: float | jax.Array,
    key: jax.Array | int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    """Add Gaussian noise whose variance decays with the step count.

    With :math:`t` the 1-based number of this update:

    .. math::
        u_t = g_t + \\sigma_t\\, \\xi_t, \\qquad \\sigma_t^2 = \\frac{\\eta}{t^\\gamma}, \\qquad
        \\xi_t \\sim \\mathcal N(0, I).

    Each update splits the key in the state into the next state's key and this step's
    sampling key, then draws one independent normal array per leaf
    (``gradtx.tree.random_like``), in each leaf's dtype: optax's samples, draw for draw,
    for the same key. A complex leaf gets complex normal noise
    (:math:`E|\\xi|^2 = 1`), as in optax.

    Args:
      eta: :math:`\\eta \\ge 0`, the variance of the first step's noise.
      gamma: :math:`\\gamma \\ge 0`, the exponent of its decay (0.55 in the paper).
      key: a typed key (``jax.random.key(0)``), raw key data (``jax.random.PRNGKey(0)``)
        or an integer seed. None (deprecated, as in optax) warns and uses seed 0.
      seed: optax's deprecated name for an integer ``key``; not with ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gradtx.transforms.noise import add_noise
      >>> tx = add_noise(eta=0.01, gamma=0.55, key=jax.random.key(0))
      >>> updates, state = tx.update({"w": jnp.zeros(3)}, tx.init({"w": jnp.zeros(3)}))
      >>> updates["w"].shape, int(state.count)  # noise of standard deviation 0.1
      ((3,), 1)

    References:
      Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep
        Networks", 2015.

      optax: ``optax.add_noise``.
    """
    checks.check_hyperparams(
        "add_noise", eta=(eta, checks.NONNEGATIVE), gamma=(gamma, checks.NONNEGATIVE)
    )
    if seed is not None:
        warnings.warn(
            "add_noise: seed is deprecated (as in optax); pass the key or seed as key",
            DeprecationWarning,
            stacklevel=2,
        )
        if key is not None:
            who, _ = checks.reported_name("add_noise", "key")
            raise ValueError(f"{who}: give key or seed, not both")
        key = seed
    if key is None:
        warnings.warn(
            "add_noise: no key given, so the noise is seeded with 0 (optax's default, "
            "deprecated there); pass key=jax.random.key(seed)",
            UserWarning,
            stacklevel=2,
        )
        key = 0

    def init(params):
        return AddNoiseState(tree.zeros_count(), _as_key(key))

    def update(updates, state, params=None, **extra):
        count = tree.safe_increment(state.count)
        standard_deviation = jnp.sqrt(eta / count**gamma)
        rng_key, sample_key = jax.random.split(state.rng_key)
        noise = tree.tree_random_like(sample_key, updates, jax.random.normal)
        updates = tree.tree_add_scale(updates, standard_deviation, noise)
        return updates, AddNoiseState(count, rng_key)

    return GradientTransformation(init, update)
