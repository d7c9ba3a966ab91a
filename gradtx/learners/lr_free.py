"""Learning-rate-free learners that optax chains from a block: DoG, DoWG and COCOB.

Prodigy and D-Adaptation AdamW are blocks that are their own learners
(:mod:`gradtx.transforms.prodigy`, :mod:`gradtx.transforms.dadapt`); Mechanic wraps
another learner (:mod:`gradtx.transforms.mechanic`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gradtx import checks
from gradtx.core import GradientTransformation, ScalarOrSchedule, chain, float_leaves, identity
from gradtx.transforms import add_decayed_weights, scale_by_learning_rate
from gradtx.transforms.cocob import scale_by_cocob
from gradtx.transforms.dog import scale_by_dog, scale_by_dowg


def dog(
    learning_rate: ScalarOrSchedule = 1.0,
    init_step: tuple[str, Any] = ("heuristic", 1e-6),
    eps: Any = 1e-8,
    weight_decay: ScalarOrSchedule | None = None,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    """DoG: SGD whose step size is the distance travelled over the root sum of squared
    gradient norms (see :func:`gradtx.contrib.scale_by_dog`).

    .. math::
        \\bar r_t = \\max_{k \\le t} \\lVert x_k - x_0 \\rVert, \\quad
        G_t = \\sum_{k \\le t} \\lVert g_k + \\lambda_k x_k \\rVert^2, \\quad
        x_{t+1} = x_t - \\eta_t \\frac{\\bar r_t}{\\sqrt{G_t + \\epsilon}} (g_t + \\lambda_t x_t)

    with the weight decay :math:`\\lambda_t` added to the gradient first (when given).
    optax: ``optax.contrib.dog`` at the defaults. ``init`` needs the real params for the
    ``"heuristic"`` start, and ``update`` needs them always. The authors recommend
    averaging the iterates.

    Args:
      learning_rate: :math:`\\eta_t \\ge 0`, a factor of DoG's step size, or a schedule.
      init_step: ``(kind, value)``: ``("distance", r)`` starts :math:`\\bar r_0 = r`,
        ``("heuristic", alpha)`` starts :math:`\\bar r_0 = \\alpha (1 + \\lVert x_0
        \\rVert)` and ``("learning_rate", eta)`` takes a first step size :math:`\\eta`.
        The value must be small enough that the first step does not diverge: 1e-6, or
        1e-4 with batch norm, for the heuristic.
      eps: :math:`\\epsilon \\ge 0`, added to :math:`G_t`.
      weight_decay: :math:`\\lambda \\ge 0` or a schedule, added to the gradient before
        DoG sees it; None adds nothing.
      mask: tree of bools (or function of params) saying which leaves decay.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> from gradtx.learners.lr_free import dog
      >>> opt = dog(init_step=("learning_rate", 0.1))
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # the first step is -0.1 g
      [-0.1  0.2]

    References:
      Ivgi, Hinder and Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step
        Size Schedule", ICML 2023 (arXiv:2302.12022).

      optax: ``optax.contrib.dog``.
    """
    with checks.named("dog"):
        return float_leaves(
            chain(
                identity() if weight_decay is None else add_decayed_weights(weight_decay, mask),
                scale_by_dog(init_step, eps),
                scale_by_learning_rate(learning_rate),
            )
        )


def dowg(
    learning_rate: ScalarOrSchedule = 1.0,
    init_estim_sq_dist: Any = None,
    eps: Any = 1e-4,
    weight_decay: ScalarOrSchedule | None = None,
    mask: Any | Callable[[Any], Any] | None = None,
) -> GradientTransformation:
    """DoWG: DoG with each squared gradient norm weighted by the squared distance so far
    (see :func:`gradtx.contrib.scale_by_dowg`).

    .. math::
        \\bar r_t^2 = \\max_{k \\le t} \\lVert x_k - x_0 \\rVert^2, \\quad
        v_t = \\sum_{k \\le t} \\bar r_k^2 \\lVert g_k \\rVert^2, \\quad
        x_{t+1} = x_t - \\eta_t \\frac{\\bar r_t^2}{\\sqrt{v_t} + \\epsilon} g_t

    with :math:`g_t` the gradient plus the weight decay :math:`\\lambda_t x_t` (when given).
    optax: ``optax.contrib.dowg`` at the defaults. ``update`` needs the params.

    Args:
      learning_rate: :math:`\\eta_t \\ge 0`, a factor of DoWG's step size, or a schedule.
      init_estim_sq_dist: :math:`\\bar r_0^2 > 0`, the initial guess of the squared
        distance to a solution, or None for :math:`\\epsilon`.
      eps: :math:`\\epsilon`, added to the root (and the initial squared distance when
        ``init_estim_sq_dist`` is None, then :math:`> 0`).
      weight_decay: :math:`\\lambda \\ge 0` or a schedule, added to the gradient before
        DoWG sees it; None adds nothing.
      mask: tree of bools (or function of params) saying which leaves decay.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> from gradtx.learners.lr_free import dowg
      >>> opt = dowg(init_estim_sq_dist=0.25, eps=0.0)
      >>> params = {"w": jnp.array([3.0, -4.0])}
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # -0.25 / sqrt(0.25 * 25) g
      [-0.3  0.4]

    References:
      Khaled, Mishchenko and Jin, "DoWG Unleashed: An Efficient Universal Parameter-Free
        Gradient Descent Method", NeurIPS 2023 (arXiv:2305.16284).

      optax: ``optax.contrib.dowg``.
    """
    with checks.named("dowg"):
        return float_leaves(
            chain(
                identity() if weight_decay is None else add_decayed_weights(weight_decay, mask),
                scale_by_dowg(init_estim_sq_dist, eps),
                scale_by_learning_rate(learning_rate),
            )
        )


def cocob(
    learning_rate: ScalarOrSchedule = 1.0,
    alpha: Any = 100.0,
    eps: Any = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Any | Callable[[Any], Any] | None = None,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """COCOB-Backprop: coin betting per coordinate on the scaled, decayed gradients
    (see :func:`gradtx.contrib.scale_by_cocob`).

    .. math::
        \\tilde g_t = \\eta_t (g_t + \\lambda_t x_t), \\qquad
        x_{t+1} = x_1 + \\frac{-\\sum_{k \\le t} \\tilde g_k}{L_t \\max(G_t + L_t,
        \\alpha L_t)} (L_t + R_t)

    with :math:`L_t` the largest :math:`|\\tilde g|` so far, :math:`G_t` their sum and
    :math:`R_t` the reward. optax: ``optax.contrib.cocob`` at the defaults; its
    learning rate multiplies the gradients before the bet (not the step). The bet is
    blind to the gradients' scale, so a constant learning rate changes nothing (but its
    ratio to :math:`\\epsilon`); a schedule's shape does. ``update`` needs the params.

    Args:
      learning_rate: :math:`\\eta_t \\ge 0` or a schedule, a factor of the gradients.
      alpha: :math:`\\alpha > 0`; the first steps bet at most :math:`1/\\alpha` of the wealth.
      eps: :math:`\\epsilon > 0`, the initial :math:`L_0`.
      weight_decay: :math:`\\lambda \\ge 0` or a schedule, an L2 penalty's gradient.
      mask: tree of bools (or function of params) saying which leaves decay.
      state_dtype: dtype of the stored accumulators, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> from gradtx.learners.lr_free import cocob
      >>> opt = cocob()
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # -sign(g) / alpha on the first step
      [-0.01  0.01]

    References:
      Orabona and Tommasi, "Training Deep Networks without Learning Rates Through Coin
        Betting", NeurIPS 2017 (arXiv:1705.07795).

      optax: ``optax.contrib.cocob``.
    """
    with checks.named("cocob"):
        return float_leaves(
            chain(
                add_decayed_weights(weight_decay, mask),
                scale_by_learning_rate(learning_rate, flip_sign=False),
                scale_by_cocob(alpha, eps, state_dtype=state_dtype),
            )
        )
