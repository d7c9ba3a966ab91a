"""The sign of the gradient: signSGD's and Signum's one-bit step direction."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradtx import recipe, tree
from gradtx.core import EmptyState, GradientTransformation

# No kernel of its own: the kernels of the signed rules it may follow (plain SGD's, ema's)
# take it as their "sign" option (gradtx/fused).
SCALE_BY_SIGN = recipe.rule("scale_by_sign")

_NO_COMPLEX = " (a sign rule; optax's sign_sgd and signum have none either)"


def scale_by_sign() -> GradientTransformation:
    """Replace each entry of the updates by its sign.

    .. math:: u_i \\leftarrow \\operatorname{sign}(g_i) \\in \\{-1, 0, 1\\}

    A complex leaf raises ``ValueError`` naming it: ``jnp.sign`` of a complex number
    is :math:`z/|z|`, not a one-bit direction, and optax's sign learners have no complex
    rule either.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.transforms.sign import scale_by_sign
      >>> tx = scale_by_sign()
      >>> grads = {"w": jnp.array([0.3, -2.0, 0.0])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(updates["w"])
      [ 1. -1.  0.]

    References:
      Bernstein, Wang, Azizzadenesheli and Anandkumar, "signSGD: Compressed Optimisation
        for Non-Convex Problems", 2018.

      optax: ``optax.scale_by_sign``.
    """

    def init(params):
        tree.reject_complex("scale_by_sign", params, _NO_COMPLEX)
        return EmptyState()

    def update(updates, state, params=None, **extra):
        tree.reject_complex("scale_by_sign", updates, _NO_COMPLEX)
        return jax.tree.map(jnp.sign, updates), state

    return recipe.declare(GradientTransformation(init, update), SCALE_BY_SIGN)
