"""Write your own transform, check it with gradtx.testing, and see what a broken one reports.

1. ``centralize``: gradient centralization (subtract each weight matrix's mean
   gradient over its inputs), stateless.
2. ``scale_by_sign_momentum``: a momentum of the gradients' signs, with state.
3. ``impure_warmup``: the same idea written wrong, with a Python counter as its
   state. ``check_transform`` reports everything it breaks in one error.

    python examples/custom_transform.py
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp

import gradtx
from gradtx.testing import CheckFailed, check_transform


def centralize() -> gradtx.GradientTransformation:
    """u = g - mean(g) over all axes but the last, for leaves with 2 or more dimensions."""

    def center(g):
        if g.ndim < 2:
            return g
        return g - jnp.mean(g, axis=tuple(range(g.ndim - 1)), keepdims=True)

    return gradtx.stateless(lambda updates, params: jax.tree.map(center, updates))


class SignMomentumState(NamedTuple):
    momentum: dict


def scale_by_sign_momentum(decay: float = 0.9) -> gradtx.GradientTransformation:
    """m_t = decay m_{t-1} + (1 - decay) sign(g_t); u_t = m_t."""

    def init(params):
        return SignMomentumState(jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        momentum = jax.tree.map(
            lambda m, g: decay * m + (1 - decay) * jnp.sign(g), state.momentum, updates
        )
        return momentum, SignMomentumState(momentum)

    return gradtx.GradientTransformation(init, update)


# --8<-- [start:impure]
def impure_warmup(steps: int = 10) -> gradtx.GradientTransformation:
    """Scales updates by t / steps, counting t in Python: the mistake this example shows."""
    counter = itertools.count(1)

    def update(updates, state, params=None):
        scale = min(next(counter) / steps, 1.0)
        return jax.tree.map(lambda g: (g * scale).astype(jnp.float16), updates), state

    return gradtx.GradientTransformation(lambda params: (), update)


# --8<-- [end:impure]


def main() -> str:
    params = {"dense": {"w": jnp.ones((4, 3)), "b": jnp.zeros(3)}, "scale": jnp.ones(())}
    learner = gradtx.chain(centralize(), scale_by_sign_momentum(), gradtx.scale(-0.01))
    for name, tx in [
        ("centralize", centralize()),
        ("scale_by_sign_momentum", scale_by_sign_momentum()),
        ("the chained learner", learner),
    ]:
        check_transform(tx, params, name=name)
        print(f"{name}: all checks pass")
    try:
        check_transform(impure_warmup(), params, name="impure_warmup")
    except CheckFailed as report:
        print(report)
        return str(report)
    raise AssertionError("impure_warmup should have failed its checks")


if __name__ == "__main__":
    main()
