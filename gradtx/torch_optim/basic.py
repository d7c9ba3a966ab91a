"""torch.optim's SGD, Adam, AdamW, Adagrad, Adamax, Adadelta and RMSprop as chains of gradtx blocks.

Each function takes its torch class's arguments, in torch's order and with torch's
defaults, less ``params``: ``torch.optim.Adam(model.parameters(), lr=1e-3)`` is
``gradtx.torch_optim.adam(lr=1e-3)``. The numbers follow the class's single-tensor
code (``_single_tensor_sgd`` and its siblings in ``torch/optim/``). Below,
:math:`t` is the 1-based number of the update (gradtx's count plus one) and
:math:`\\eta_t` the learning rate at gradtx's count :math:`t - 1`.

Common to all of them:

- ``lr`` (and ``weight_decay``, and SGD's and RMSprop's ``momentum``) is a number, an
  array, a tracer (``jax.vmap`` over it works) or a schedule of the update count,
  where torch's is a number that a scheduler changes between steps.
- ``maximize=True`` negates the gradient first, before the weight decay, as torch does.
- torch's implementation flags ``foreach``, ``fused``, ``capturable`` and
  ``differentiable`` are accepted with torch's defaults and change nothing: XLA
  compiles the whole update into one program whatever they say (gradtx's own fused
  path is :func:`gradtx.fused_update`), it runs under ``jax.jit`` and CUDA graphs
  alike, and every gradtx update is differentiable.
- Gradients come as ``jax.grad`` gives them. A complex parameter is two real ones, as
  torch's ``view_as_real`` makes it, and its JAX gradient is the conjugate of torch's
  ``.grad`` (as for :func:`gradtx.torch_optim.lbfgs`), so it is conjugated first.
- torch computes its per-step scalars (bias corrections, Adagrad's decayed rate, AdamW's
  ``1 - lr * weight_decay``) in Python floats; gradtx computes them in the params'
  precision, Adam's bias corrections as ``-expm1(t log1p(-(1 - beta)))`` so that float32
  keeps torch's accuracy (``1 - 0.999**t`` in float32 is off by about 1e-5 after 100 steps).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation
from gradtx.learners.basic import coupled_decay
from gradtx.torch_optim._torch import learner, negate_if, one_minus_power, pair
from gradtx.transforms import (
    scale_by_adadelta,
    scale_by_learning_rate,
    scale_by_rms,
    scale_by_rss,
    scale_by_stddev,
    trace,
)
from gradtx.transforms.adam import ScaleByAdamState

__all__ = [
    "SGDMomentumState",
    "DecoupledDecayState",
    "TorchAdamState",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "rmsprop",
    "sgd",
]

# The blocks' argument names, as torch calls them; each learner builds its chain inside
# checks.named(...) with these, so an error reads "adam: betas[0] must be in [0, 1), got 1.5".
_LR = {"learning_rate": "lr"}


# --- shared pieces -------------------------------------------------------------------


def _is_zero(value: Any) -> bool:
    """A concrete Python zero: torch's ``if weight_decay != 0`` skips the term entirely."""
    return type(value) in (int, float) and value == 0


# --- SGD's momentum --------------------------------------------------------------------


class SGDMomentumState(NamedTuple):
    """State of torch's SGD momentum: the update count and ``momentum_buffer``."""

    count: jax.Array  # int32: updates applied so far (0: the buffer is not set yet)
    momentum_buffer: Any


def _sgd_momentum(momentum: Any, dampening: Any, nesterov: bool) -> GradientTransformation:
    """torch's SGD buffer: the first gradient itself, then :math:`\\mu b + (1 - \\tau) g`.

    :func:`gradtx.trace` has no dampening and starts from a zero buffer (the same
    thing without dampening); torch's first buffer is never dampened.
    """

    def init(params):
        return SGDMomentumState(tree.zeros_count(), tree.state_zeros_like(params))

    def update(updates, state, params=None, **extra):
        checks.check_moments("sgd", updates, state, "momentum_buffer")
        mu = tree.resolve(momentum, state.count)
        first = state.count == 0

        def buffer(g, b):
            return jnp.where(first, g, b * mu + (1 - dampening) * g)

        buf = jax.tree.map(buffer, updates, state.momentum_buffer)
        out = jax.tree.map(lambda g, b: g + mu * b, updates, buf) if nesterov else buf
        # torch skips the buffer when momentum is 0 (a tracer or schedule may be 0).
        out = jax.tree.map(lambda g, o: jnp.where(mu == 0, g, o), updates, out)
        return out, SGDMomentumState(tree.safe_increment(state.count), buf)

    return GradientTransformation(init, update)


def sgd(
    lr: Any = 1e-3,
    momentum: Any = 0,
    dampening: Any = 0,
    weight_decay: Any = 0,
    nesterov: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    differentiable: bool = False,
    fused: bool | None = None,
) -> GradientTransformation:
    """torch's SGD, with momentum, dampening, Nesterov and coupled weight decay.

    .. math::
        g_t \\leftarrow \\pm g_t + \\lambda \\theta_{t-1}, \\quad
        b_t = \\begin{cases} g_t & t = 1 \\\\ \\mu b_{t-1} + (1 - \\tau) g_t & t > 1
        \\end{cases}, \\quad
        \\theta_t = \\theta_{t-1} - \\eta_t \\cdot
        \\begin{cases} g_t + \\mu b_t & \\text{nesterov} \\\\ b_t & \\text{otherwise}
        \\end{cases}

    and :math:`\\theta_t = \\theta_{t-1} - \\eta_t g_t` when :math:`\\mu = 0`. The
    first buffer is the gradient itself: dampening starts at the second update.

    Args:
      lr: :math:`\\eta \\ge 0`, or a schedule of the update count.
      momentum: :math:`\\mu \\ge 0`, or a schedule; 0 for plain SGD.
      dampening: :math:`\\tau`, the share of the gradient held back from the buffer.
      weight_decay: coupled L2 coefficient :math:`\\lambda \\ge 0`, or a schedule.
      nesterov: Nesterov momentum; needs a momentum and zero dampening.
      maximize: ascend: negate the gradient first.
      foreach: torch's implementation flag; changes nothing (see the module).
      differentiable: torch's implementation flag; changes nothing.
      fused: torch's implementation flag; changes nothing.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.sgd(0.1, momentum=0.9, dampening=0.5)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))  # the buffer is g
      >>> updates, state = opt.update(grads, state)  # 0.9 * g + 0.5 * g
      >>> print(np.asarray(updates["w"]).round(4))
      [-0.14  0.28]

    References:
      torch: ``torch.optim.SGD`` (``_single_tensor_sgd``).

      Sutskever, Martens, Dahl and Hinton, "On the importance of initialization and momentum
        in deep learning", 2013.
    """
    del foreach, differentiable, fused  # implementation flags: nothing to choose under XLA
    who = "sgd"
    checks.check_interval(who, "momentum", momentum, checks.NONNEGATIVE)
    concrete = not callable(momentum) and checks.is_concrete((momentum, dampening))
    if nesterov and concrete and not (float(momentum) > 0 and float(dampening) == 0):  # pyright: ignore[reportArgumentType]
        raise ValueError(
            f"{who}: nesterov requires a momentum > 0 and zero dampening (torch: "
            f"'Nesterov momentum requires a momentum and zero dampening'), got "
            f"momentum={momentum!r}, dampening={dampening!r}"
        )
    with checks.named(who, scale_by_learning_rate=_LR):
        momentum_blocks = (
            () if _is_zero(momentum) else (_sgd_momentum(momentum, dampening, nesterov),)
        )
        return learner(
            negate_if(maximize),
            *coupled_decay(weight_decay),
            *momentum_blocks,
            scale_by_learning_rate(lr),
        )


# --- Adam and AdamW --------------------------------------------------------------------


class TorchAdamState(NamedTuple):
    """State of torch's Adam direction: ``step``, ``exp_avg``, ``exp_avg_sq``, and
    ``max_exp_avg_sq`` (with ``amsgrad``; an empty tuple without)."""

    count: jax.Array  # int32: updates applied so far (torch's step)
    exp_avg: Any
    exp_avg_sq: Any
    max_exp_avg_sq: Any


def _scale_by_torch_adam(
    who: str, beta1: Any, beta2: Any, eps: Any, amsgrad: bool
) -> GradientTransformation:
    """torch's Adam direction, before ``-lr``, with AMSGrad's maximum of the raw moment.

    :func:`gradtx.scale_by_amsgrad` is optax's, which keeps the maximum of the
    bias-corrected moment; torch keeps it before the correction. The corrections
    are computed as accurately as torch's (see :func:`one_minus_power`).
    """
    checks.check_hyperparams(
        who,
        **{
            "betas[0]": (beta1, checks.DECAY),
            "betas[1]": (beta2, checks.DECAY),
            "eps": (eps, checks.NONNEGATIVE),
        },
    )

    def init(params):
        # One buffer per moment: a donated state may not hold the same buffer twice.
        zeros = lambda: tree.state_zeros_like(params)  # noqa: E731
        return TorchAdamState(tree.zeros_count(), zeros(), zeros(), zeros() if amsgrad else ())

    def update(updates, state, params=None, **extra):
        checks.check_moments(who, updates, state, "exp_avg", "exp_avg_sq")
        count = tree.safe_increment(state.count)
        # torch reads betas[0] at every step: cyclic_lr's .momentum may drive it.
        b1 = tree.resolve(beta1, state.count)
        bias_correction1 = one_minus_power(b1, count)
        bias_correction2_sqrt = jnp.sqrt(one_minus_power(beta2, count))
        # torch's lerp_(grad, 1 - beta1) and mul_(beta2).addcmul_(grad, grad, 1 - beta2).
        exp_avg = jax.tree.map(lambda m, g: m + (1 - b1) * (g - m), state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(
            lambda v, g: v * beta2 + (1 - beta2) * g * g, state.exp_avg_sq, updates
        )
        if amsgrad:
            max_exp_avg_sq = jax.tree.map(jnp.maximum, state.max_exp_avg_sq, exp_avg_sq)
            second = max_exp_avg_sq
        else:
            max_exp_avg_sq, second = (), exp_avg_sq

        def direction(m, v):
            denom = jnp.sqrt(v) / bias_correction2_sqrt.astype(v.dtype) + eps
            return m / denom / bias_correction1.astype(m.dtype)

        out = jax.tree.map(direction, exp_avg, second)
        return out, TorchAdamState(count, exp_avg, exp_avg_sq, max_exp_avg_sq)

    return GradientTransformation(init, update)


def _scale_by_torch_adamax(beta1: Any, beta2: Any, eps: Any) -> GradientTransformation:
    """torch's Adamax direction, before ``-lr``, reading ``betas[0]`` at every step.

    :func:`gradtx.scale_by_adamax` is the same rule with constant betas; torch's
    ``CyclicLR``/``OneCycleLR`` may cycle ``betas[0]`` (a ``.momentum`` schedule).
    """
    checks.check_hyperparams(
        "adamax",
        **{
            "betas[0]": (beta1, checks.DECAY),
            "betas[1]": (beta2, checks.DECAY),
            "eps": (eps, checks.NONNEGATIVE),
        },
    )

    def init(params):
        zeros = lambda: tree.state_zeros_like(params)  # noqa: E731
        return ScaleByAdamState(tree.zeros_count(), zeros(), zeros())

    def update(updates, state, params=None, **extra):
        checks.check_moments("adamax", updates, state, "mu", "nu")
        count = tree.safe_increment(state.count)
        b1 = tree.resolve(beta1, state.count)
        bias_correction = one_minus_power(b1, count)
        # torch's exp_avg.lerp_(grad, 1 - beta1) and maximum(exp_inf * beta2, |grad| + eps).
        exp_avg = jax.tree.map(lambda m, g: m + (1 - b1) * (g - m), state.mu, updates)
        exp_inf = jax.tree.map(
            lambda n, g: jnp.maximum(n * beta2, jnp.abs(g) + eps), state.nu, updates
        )
        out = jax.tree.map(lambda m, n: m / n / bias_correction.astype(m.dtype), exp_avg, exp_inf)
        return out, ScaleByAdamState(count, exp_avg, exp_inf)

    return GradientTransformation(init, update)


class DecoupledDecayState(NamedTuple):
    """State of AdamW's decay: the update count, for a scheduled ``lr`` or ``weight_decay``."""

    count: jax.Array


def _decoupled_decay(lr: Any, weight_decay: Any) -> GradientTransformation:
    """AdamW's ``p *= 1 - lr * weight_decay``, added to the step as ``p * factor - p``.

    The factor is rounded to the params' dtype as torch rounds it, and
    ``p * factor - p`` is exact, so the decay gives torch's numbers even in float32
    (where :func:`gradtx.add_decayed_weights` before the rate would give
    :math:`-\\eta\\lambda p`, the exact product, off by the factor's rounding each step).
    """
    checks.check_interval("add_decayed_weights", "weight_decay", weight_decay, checks.NONNEGATIVE)

    def init(params):
        return DecoupledDecayState(tree.zeros_count())

    def update(updates, state, params=None, **extra):
        checks.require_params("adamw", params, "to decay", "update(grads, state, params)")
        checks.check_trees_match("adamw", "updates", updates, params=params)
        factor = 1 - tree.resolve(lr, state.count) * tree.resolve(weight_decay, state.count)

        def decayed(u, p):
            return u + (p * jnp.asarray(factor, p.dtype) - p)

        out = jax.tree.map(decayed, updates, params)
        return out, DecoupledDecayState(tree.safe_increment(state.count))

    return GradientTransformation(init, update)


def _adam(
    who: str,
    lr: Any,
    betas: Any,
    eps: Any,
    weight_decay: Any,
    amsgrad: bool,
    maximize: bool,
    decoupled_weight_decay: bool,
) -> GradientTransformation:
    beta1, beta2 = pair(who, "betas", betas)
    with checks.named(who, scale_by_learning_rate=_LR):
        direction = _scale_by_torch_adam(who, beta1, beta2, eps, amsgrad)
        if decoupled_weight_decay:
            decay = () if _is_zero(weight_decay) else (_decoupled_decay(lr, weight_decay),)
            blocks = (direction, scale_by_learning_rate(lr), *decay)
        else:
            blocks = (*coupled_decay(weight_decay), direction, scale_by_learning_rate(lr))
        return learner(negate_if(maximize), *blocks)


def adam(
    lr: Any = 1e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 0,
    amsgrad: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
    decoupled_weight_decay: bool = False,
) -> GradientTransformation:
    """torch's Adam, with AMSGrad and coupled or decoupled weight decay.

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2, \\quad
        \\theta_t = \\theta_{t-1} - \\frac{\\eta_t}{1-\\beta_1^t}
        \\frac{m_t}{\\sqrt{\\hat v_t} / \\sqrt{1-\\beta_2^t} + \\epsilon}

    with :math:`g_t \\leftarrow \\pm g_t + \\lambda \\theta_{t-1}` (coupled decay),
    :math:`\\hat v_t = \\max(\\hat v_{t-1}, v_t)` with ``amsgrad`` (the maximum of
    the raw moment, before the bias correction) and :math:`\\hat v_t = v_t` without.
    With ``decoupled_weight_decay`` the decay is AdamW's instead:
    :math:`\\theta_{t-1} \\leftarrow (1 - \\eta_t \\lambda) \\theta_{t-1}` before
    the step, and the gradient is left alone (this is :func:`adamw`).

    Args:
      lr: :math:`\\eta \\ge 0`, or a schedule of the update count.
      betas: :math:`(\\beta_1, \\beta_2)`, each in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      weight_decay: :math:`\\lambda \\ge 0`, or a schedule.
      amsgrad: divide by the running maximum of the second moment.
      foreach: torch's implementation flag; changes nothing (see the module).
      maximize: ascend: negate the gradient first.
      capturable: torch's implementation flag; changes nothing.
      differentiable: torch's implementation flag; changes nothing.
      fused: torch's implementation flag; changes nothing.
      decoupled_weight_decay: AdamW's decay instead of the coupled one.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.adam(0.1, amsgrad=True)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # the first step is -lr * sign(g)
      [-0.1  0.1]

    References:
      torch: ``torch.optim.Adam`` (``_single_tensor_adam``).

      Kingma and Ba, "Adam: A Method for Stochastic Optimization", 2014.

      Reddi, Kale and Kumar, "On the Convergence of Adam and Beyond", 2018 (``amsgrad``).
    """
    del foreach, capturable, differentiable, fused  # implementation flags
    return _adam("adam", lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay)


def adamw(
    lr: Any = 1e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 1e-2,
    amsgrad: bool = False,
    *,
    maximize: bool = False,
    foreach: bool | None = None,
    capturable: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
) -> GradientTransformation:
    """torch's AdamW: Adam with the decay taken off the weights, not added to the gradient.

    .. math::
        \\theta_{t-1} \\leftarrow (1 - \\eta_t \\lambda)\\, \\theta_{t-1}, \\quad
        \\theta_t = \\theta_{t-1} - \\frac{\\eta_t}{1-\\beta_1^t}
        \\frac{m_t}{\\sqrt{\\hat v_t} / \\sqrt{1-\\beta_2^t} + \\epsilon}

    with :math:`m_t, v_t, \\hat v_t` as in :func:`adam` (from :math:`\\pm g_t`, the
    gradient alone). This is ``adam(..., decoupled_weight_decay=True)``; note
    torch's default decay of 1e-2.

    Args:
      lr: :math:`\\eta \\ge 0`, or a schedule of the update count.
      betas: :math:`(\\beta_1, \\beta_2)`, each in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      weight_decay: :math:`\\lambda \\ge 0`, or a schedule.
      amsgrad: divide by the running maximum of the second moment.
      maximize: ascend: negate the gradient first.
      foreach: torch's implementation flag; changes nothing (see the module).
      capturable: torch's implementation flag; changes nothing.
      differentiable: torch's implementation flag; changes nothing.
      fused: torch's implementation flag; changes nothing.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.adamw(0.1, weight_decay=0.5)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * sign(g) - 0.1 * 0.5 * params
      [-0.15  0.2 ]

    References:
      torch: ``torch.optim.AdamW`` (``_single_tensor_adam`` with ``decoupled_weight_decay``).

      Loshchilov and Hutter, "Decoupled Weight Decay Regularization", 2019.
    """
    del foreach, capturable, differentiable, fused  # implementation flags
    return _adam("adamw", lr, betas, eps, weight_decay, amsgrad, maximize, True)


# --- Adagrad, Adamax, Adadelta, RMSprop ------------------------------------------------


def adagrad(
    lr: Any = 1e-2,
    lr_decay: Any = 0,
    weight_decay: Any = 0,
    initial_accumulator_value: Any = 0,
    eps: Any = 1e-10,
    foreach: bool | None = None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    fused: bool | None = None,
) -> GradientTransformation:
    """torch's Adagrad, with its decaying rate and eps outside the root.

    .. math::
        s_t = s_{t-1} + g_t^2, \\quad
        \\theta_t = \\theta_{t-1} - \\frac{\\eta_t}{1 + (t - 1)\\, \\delta}
        \\frac{g_t}{\\sqrt{s_t} + \\epsilon}

    with :math:`g_t \\leftarrow \\pm g_t + \\lambda \\theta_{t-1}` and :math:`s_0` the
    initial accumulator value.

    Args:
      lr: :math:`\\eta \\ge 0`, or a schedule of the update count.
      lr_decay: :math:`\\delta \\ge 0`.
      weight_decay: coupled L2 coefficient :math:`\\lambda \\ge 0`, or a schedule.
      initial_accumulator_value: :math:`s_0 \\ge 0`.
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      foreach: torch's implementation flag; changes nothing (see the module).
      maximize: ascend: negate the gradient first.
      differentiable: torch's implementation flag; changes nothing.
      fused: torch's implementation flag; changes nothing.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.adagrad(0.1, lr_decay=1.0)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))  # -0.1 * g / |g|
      >>> updates, state = opt.update(grads, state)  # -0.1 / 2 * g / sqrt(2 g**2)
      >>> print(np.asarray(updates["w"]).round(4))
      [-0.0354  0.0354]

    References:
      torch: ``torch.optim.Adagrad`` (``_single_tensor_adagrad``).

      Duchi, Hazan and Singer, "Adaptive Subgradient Methods for Online Learning and
        Stochastic Optimization", JMLR, 2011.
    """
    del foreach, differentiable, fused  # implementation flags
    who = "adagrad"
    checks.check_interval(who, "lr_decay", lr_decay, checks.NONNEGATIVE)
    rate = lr
    if not _is_zero(lr_decay):
        checks.check_interval(who, "lr", lr, checks.NONNEGATIVE)  # the schedule hides it below

        def rate(count):  # torch's clr = lr / (1 + (step - 1) * lr_decay), step = count + 1
            return tree.resolve(lr, count) / (1 + count * lr_decay)

    with checks.named(who, scale_by_learning_rate=_LR):
        return learner(
            negate_if(maximize),
            *coupled_decay(weight_decay),
            scale_by_rss(initial_accumulator_value, eps, eps_in_sqrt=False),
            scale_by_learning_rate(rate),
        )


def adamax(
    lr: Any = 2e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 0,
    foreach: bool | None = None,
    *,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
) -> GradientTransformation:
    """torch's Adamax: Adam with a decaying infinity norm for the second moment.

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        u_t = \\max(\\beta_2 u_{t-1}, |g_t| + \\epsilon), \\quad
        \\theta_t = \\theta_{t-1} - \\frac{\\eta_t}{1-\\beta_1^t} \\frac{m_t}{u_t}

    with :math:`g_t \\leftarrow \\pm g_t + \\lambda \\theta_{t-1}`: eps goes into the
    maximum, not the division.

    Args:
      lr: :math:`\\eta \\ge 0`, or a schedule of the update count.
      betas: :math:`(\\beta_1, \\beta_2)`, each in [0, 1).
      eps: :math:`\\epsilon \\ge 0`.
      weight_decay: coupled L2 coefficient :math:`\\lambda \\ge 0`, or a schedule.
      foreach: torch's implementation flag; changes nothing (see the module).
      maximize: ascend: negate the gradient first.
      differentiable: torch's implementation flag; changes nothing.
      capturable: torch's implementation flag; changes nothing.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.adamax(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # the first step is -lr * sign(g)
      [-0.1  0.1]

    References:
      torch: ``torch.optim.Adamax`` (``_single_tensor_adamax``).

      Kingma and Ba, "Adam: A Method for Stochastic Optimization", 2014, section 7.
    """
    del foreach, differentiable, capturable  # implementation flags
    who = "adamax"
    beta1, beta2 = pair(who, "betas", betas)
    with checks.named(who, scale_by_learning_rate=_LR):
        return learner(
            negate_if(maximize),
            *coupled_decay(weight_decay),
            _scale_by_torch_adamax(beta1, beta2, eps),
            scale_by_learning_rate(lr),
        )


def adadelta(
    lr: Any = 1.0,
    rho: Any = 0.9,
    eps: Any = 1e-6,
    weight_decay: Any = 0,
    foreach: bool | None = None,
    *,
    capturable: bool = False,
    maximize: bool = False,
    differentiable: bool = False,
) -> GradientTransformation:
    """torch's Adadelta: Zeiler's rule, scaled by a learning rate.

    .. math::
        v_t = \\rho v_{t-1} + (1-\\rho) g_t^2, \\quad
        \\Delta_t = \\frac{\\sqrt{u_{t-1} + \\epsilon}}{\\sqrt{v_t + \\epsilon}}\\, g_t, \\quad
        u_t = \\rho u_{t-1} + (1-\\rho) \\Delta_t^2, \\quad
        \\theta_t = \\theta_{t-1} - \\eta_t \\Delta_t

    with :math:`g_t \\leftarrow \\pm g_t + \\lambda \\theta_{t-1}`.

    Args:
      lr: :math:`\\eta \\ge 0`, or a schedule of the update count.
      rho: :math:`\\rho` in [0, 1) (torch also takes 1, where nothing is averaged and
        the step is :math:`\\eta g`; use :func:`sgd` for that).
      eps: :math:`\\epsilon \\ge 0`.
      weight_decay: coupled L2 coefficient :math:`\\lambda \\ge 0`, or a schedule.
      foreach: torch's implementation flag; changes nothing (see the module).
      capturable: torch's implementation flag; changes nothing.
      maximize: ascend: negate the gradient first.
      differentiable: torch's implementation flag; changes nothing.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.adadelta()
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # about -sqrt(1e-6 / (0.1 * g**2)) * g
      [-0.0032  0.0032]

    References:
      torch: ``torch.optim.Adadelta`` (``_single_tensor_adadelta``).

      Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012.
    """
    del foreach, capturable, differentiable  # implementation flags
    with checks.named("adadelta", scale_by_learning_rate=_LR):
        return learner(
            negate_if(maximize),
            *coupled_decay(weight_decay),
            scale_by_adadelta(rho, eps),
            scale_by_learning_rate(lr),
        )


def rmsprop(
    lr: Any = 1e-2,
    alpha: Any = 0.99,
    eps: Any = 1e-8,
    weight_decay: Any = 0,
    momentum: Any = 0,
    centered: bool = False,
    capturable: bool = False,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
) -> GradientTransformation:
    """torch's RMSprop, centered or not, with torch's momentum buffer and eps outside the root.

    .. math::
        v_t = \\alpha v_{t-1} + (1-\\alpha) g_t^2, \\quad
        \\bar g_t = \\alpha \\bar g_{t-1} + (1-\\alpha) g_t, \\quad
        d_t = \\sqrt{v_t - c\\, \\bar g_t^2} + \\epsilon, \\quad
        b_t = \\mu b_{t-1} + g_t / d_t, \\quad
        \\theta_t = \\theta_{t-1} - \\eta_t b_t

    with :math:`g_t \\leftarrow \\pm g_t + \\lambda \\theta_{t-1}`, :math:`c = 1` if
    ``centered`` else 0, and :math:`b_t = g_t / d_t` without momentum. The buffer
    holds unscaled steps and the rate multiplies the whole of it, so a changing
    rate gives torch's numbers (:func:`gradtx.rmsprop` puts the rate inside the
    buffer, optax's order). Where rounding leaves :math:`v_t - \\bar g_t^2` a hair
    below 0 it is clamped at 0; torch's root gives NaN there.

    Args:
      lr: :math:`\\eta \\ge 0`, or a schedule of the update count.
      alpha: :math:`\\alpha` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      weight_decay: coupled L2 coefficient :math:`\\lambda \\ge 0`, or a schedule.
      momentum: :math:`\\mu` in [0, 1), or a schedule; 0 for none.
      centered: divide by the standard deviation instead of the RMS.
      capturable: torch's implementation flag; changes nothing (see the module).
      foreach: torch's implementation flag; changes nothing.
      maximize: ascend: negate the gradient first.
      differentiable: torch's implementation flag; changes nothing.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.rmsprop(0.01)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # -0.01 * g / sqrt(0.01 * g**2)
      [-0.1  0.1]

    References:
      torch: ``torch.optim.RMSprop`` (``_single_tensor_rmsprop``).

      Tieleman and Hinton, "Lecture 6.5 - rmsprop: Divide the gradient by a running average
        of its recent magnitude", COURSERA: Neural Networks for Machine Learning, 2012.

      Graves, "Generating Sequences With Recurrent Neural Networks", 2013 (``centered``).
    """
    del capturable, foreach, differentiable  # implementation flags
    second_moment = scale_by_stddev if centered else scale_by_rms
    renames = {
        "scale_by_learning_rate": _LR,
        "scale_by_rms": {"decay": "alpha"},
        "scale_by_stddev": {"decay": "alpha"},
        "trace": {"decay": "momentum"},
    }
    with checks.named("rmsprop", **renames):
        # trace's buffer is torch's: g / d_t + mu * b, the rate applied after it.
        momentum_blocks = () if _is_zero(momentum) else (trace(momentum),)
        return learner(
            negate_if(maximize),
            *coupled_decay(weight_decay),
            second_moment(alpha, eps, 0.0, eps_in_sqrt=False),
            *momentum_blocks,
            scale_by_learning_rate(lr),
        )
