"""Rprop: a step size per entry, grown while the gradient keeps its sign, cut when it flips."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, recipe, tree
from gradtx.core import GradientTransformation

_NO_COMPLEX = " (a rule on the signs of gradients; optax's rprop has none either)"


SCALE_BY_RPROP = recipe.rule(
    "scale_by_rprop",
    scalars=("eta_minus", "eta_plus", "min_step_size", "max_step_size"),
    options=("lagged",),
    moments=("step_sizes", "prev_updates"),
    kernel="gradtx_rprop",
)


class ScaleByRpropState(NamedTuple):
    """State of :func:`scale_by_rprop`: each entry's step size and its last step."""

    step_sizes: Any  # params-shaped: the current step size of each entry
    prev_updates: Any  # params-shaped: the last step, 0 where the gradient flipped


def scale_by_rprop(
    learning_rate: float | jax.Array,
    eta_minus: float | jax.Array = 0.5,
    eta_plus: float | jax.Array = 1.2,
    min_step_size: float | jax.Array = 1e-6,
    max_step_size: float | jax.Array = 50.0,
    *,
    lagged: bool = True,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Rprop, the variant without weight backtracking (iRprop-).

    With :math:`s_t = g_t\\, p_{t-1}` the agreement of the gradient with the last step
    (entrywise) and :math:`\\delta_0 = \\eta` the learning rate:

    .. math::
        \\delta_t = \\begin{cases}
            \\operatorname{clip}(\\eta^+ \\delta_{t-1}, \\delta_{min}, \\delta_{max}) & s_t > 0 \\\\
            \\operatorname{clip}(\\eta^- \\delta_{t-1}, \\delta_{min}, \\delta_{max}) & s_t < 0 \\\\
            \\delta_{t-1} & s_t = 0 \\end{cases}, \\qquad
        u_t = p_t = \\begin{cases} 0 & s_t < 0 \\\\
            \\delta_t \\operatorname{sign}(g_t) & \\text{otherwise} \\end{cases}

    An entry whose gradient flipped sign takes no step, and its next step counts as a
    fresh start (:math:`p_t = 0`). The update points up the gradient, as optax's block:
    :func:`gradtx.learners.sign_family.rprop` follows it with ``scale(-1)``.

    ``lagged`` (the default) gives optax 0.2.8's numbers, which lag one step behind the
    rule: the update is the last step, :math:`u_t = p_{t-1}`, zeroed where
    :math:`s_t < 0` (so the first update is 0); optax pull request 1725 proposes the fix.
    ``lagged=False`` gives :math:`u_t = p_t`: Riedmiller and Braun's rule, and torch's
    ``Rprop``.

    A complex leaf raises ``ValueError`` naming it (the rule compares signs).

    Args:
      learning_rate: :math:`\\eta \\ge 0`, the initial step size of every entry (it is
        stored in the state by ``init``, so it cannot be a schedule).
      eta_minus: :math:`\\eta^-` in (0, 1], the factor of a step size whose gradient flipped.
      eta_plus: :math:`\\eta^+ \\ge 1`, the factor of a step size whose gradient kept its sign.
      min_step_size: :math:`\\delta_{min} \\ge 0`, the smallest step size.
      max_step_size: :math:`\\delta_{max} > 0`, the largest step size (at least ``min_step_size``).
      lagged: hand back the last step (optax 0.2.8's numbers) instead of this one
        (Rprop's and torch's); both store the same state.
      state_dtype: dtype of the stored step sizes and steps (e.g. ``jnp.bfloat16``);
        arithmetic runs in the gradients' dtype, bfloat16 rounds stochastically.
        Defaults to the params' dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.transforms.rprop import scale_by_rprop
      >>> tx = scale_by_rprop(0.1, lagged=False)
      >>> params = {"w": jnp.zeros(2)}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.array([1.0, -1.0])}, state)  # a first step
      >>> updates, state = tx.update({"w": jnp.array([2.0, 1.0])}, state)  # same sign, flipped
      >>> print(updates["w"], state.step_sizes["w"])
      [0.12 0.  ] [0.12 0.05]
      >>> lagged = scale_by_rprop(0.1)  # optax's: the step before, where the sign held
      >>> updates, state = lagged.update({"w": jnp.array([1.0, -1.0])}, lagged.init(params))
      >>> print(updates["w"])
      [0. 0.]

    References:
      Riedmiller and Braun, "A Direct Adaptive Method for Faster Backpropagation Learning:
        The RPROP Algorithm", 1993.

      Igel and Hüsken, "Empirical evaluation of the improved Rprop learning algorithms", 2003.

      optax: ``optax.scale_by_rprop``.
    """
    checks.check_hyperparams(
        "scale_by_rprop",
        learning_rate=(learning_rate, checks.NONNEGATIVE),
        eta_minus=(eta_minus, "(0, 1]"),
        eta_plus=(eta_plus, "[1, inf)"),
        min_step_size=(min_step_size, checks.NONNEGATIVE),
        max_step_size=(max_step_size, checks.POSITIVE),
    )
    checks.check_at_most(
        "scale_by_rprop", "min_step_size", min_step_size, "max_step_size", max_step_size
    )
    if callable(learning_rate):
        who, name = checks.reported_name("scale_by_rprop", "learning_rate")
        raise TypeError(
            f"{who}: {name} is Rprop's initial step size, stored in the state by init, so it "
            f"cannot be a schedule; got {learning_rate!r}"
        )
    state_dtype = checks.check_state_dtype("scale_by_rprop", state_dtype)

    def init(params):
        tree.reject_complex("scale_by_rprop", params, _NO_COMPLEX)
        return ScaleByRpropState(
            tree.state_full_like(params, learning_rate, state_dtype),
            tree.state_zeros_like(params, state_dtype),
        )

    def update(updates, state, params=None, **extra):
        tree.reject_complex("scale_by_rprop", updates, _NO_COMPLEX)
        checks.check_moments("scale_by_rprop", updates, state, "step_sizes", "prev_updates")
        agreement = jax.tree.map(
            lambda g, p: g * p, updates, tree.widen(state.prev_updates, updates)
        )

        def resize(step_sizes):
            return jax.tree.map(
                lambda s, d: jnp.where(
                    s == 0,
                    d,
                    jnp.clip(
                        d * jnp.where(s > 0, eta_plus, eta_minus),
                        min=min_step_size,
                        max=max_step_size,
                    ),
                ),
                agreement,
                step_sizes,
            )

        sizes_stored, step_sizes = tree.moment(state.step_sizes, updates, state_dtype, resize)
        # A flipped sign takes no step; the zero also makes the next agreement 0 (a restart).
        steps = jax.tree.map(
            lambda s, g, d: jnp.where(s < 0, jnp.zeros_like(g), d * jnp.sign(g)),
            agreement,
            updates,
            step_sizes,
        )
        steps_stored, steps = tree.store(steps, updates, state_dtype)
        if lagged:  # optax 0.2.8 hands back the last step, masked by this step's flips
            last = tree.widen(state.prev_updates, updates)
            steps = jax.tree.map(
                lambda s, p: jnp.where(s < 0, jnp.zeros_like(p), p), agreement, last
            )
        return steps, ScaleByRpropState(sizes_stored, steps_stored)

    def scalars(state, updates):
        return dict(eta_minus=eta_minus, eta_plus=eta_plus, min_step_size=min_step_size,
                    max_step_size=max_step_size)  # fmt: skip

    tx = GradientTransformation(init, update)
    return recipe.declare(tx, SCALE_BY_RPROP, scalars, lagged=lagged)
