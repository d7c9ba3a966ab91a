"""torch.optim's NAdam, RAdam, Rprop, ASGD and Adafactor, with torch's arguments and numbers.

Each learner follows the single-tensor code of its torch class (``_single_tensor_nadam``
and its siblings in ``torch/optim/``), the path torch takes for CPU tensors, operation
for operation where the order changes the numbers. Below, :math:`t` is the 1-based
number of the update (gradtx's count plus one) and :math:`\\eta_t` the learning rate
at gradtx's count :math:`t - 1`.

Common to all of them:

- ``lr`` is a number, an array, a tracer (``jax.vmap`` over it works) or a schedule of
  the update count, where torch's is a number that a scheduler changes between steps.
- ``maximize=True`` negates the gradient first, as torch does.
- ``foreach``, ``capturable`` and ``differentiable`` are torch's implementation flags,
  accepted with torch's defaults; they change nothing here: XLA compiles the whole
  update into one program (gradtx's own fused path is :func:`gradtx.fused_update`), and
  every gradtx update is differentiable.
- torch keeps a few per-step scalars in state tensors of its default dtype (NAdam's
  ``mu_product``, ASGD's ``eta`` and ``mu``): float32, or float64 after
  ``torch.set_default_dtype(torch.float64)``. gradtx keeps them in JAX's default float
  dtype, which is float64 under ``jax.enable_x64``; the other scalars (bias
  corrections, RAdam's :math:`\\rho_t`, ...) are computed in that dtype too, where torch
  uses Python floats.
- A complex parameter is two real ones, as torch's ``view_as_real`` makes it (NAdam,
  RAdam and Rprop square, and take the sign of, the real and imaginary parts
  separately), and JAX's gradient of it is the conjugate of torch's ``.grad``, so it
  is conjugated first; torch's Adafactor refuses complex parameters, and so does this one.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation
from gradtx.torch_optim._torch import (
    conjugate_gradient,
    learner,
    negate_if,
    one_minus_power,
    pair,
    scalar_dtype,
)
from gradtx.transforms.rprop import scale_by_rprop
from gradtx.transforms.scaling import scale, scale_by_learning_rate
from gradtx.transforms.weight_decay import add_decayed_weights

__all__ = [
    "ASGDState",
    "AdafactorState",
    "NAdamState",
    "RAdamState",
    "adafactor",
    "asgd",
    "asgd_averaged_params",
    "nadam",
    "radam",
    "rprop",
]


# --- shared pieces -------------------------------------------------------------------


def _step_number(count: jax.Array) -> jax.Array:
    """torch's ``step`` after its ``step_t += 1``: this update's 1-based number, as a float."""
    return tree.safe_increment(count).astype(scalar_dtype())


def _power(base: Any, exponent: jax.Array) -> jax.Array:
    """``base ** exponent`` in the scalar dtype, accurate where float32 is too coarse.

    torch computes these scalars in Python floats. In float32, ``0.999 ** t`` from the
    rounded ``0.999`` is off by ``t`` ulps of the rounding, which moves RAdam's
    :math:`\\rho_t` by hundredths; from a concrete base the logarithm is taken in double
    precision instead, which keeps the result to a few float32 ulps.
    """
    if scalar_dtype() == jnp.float64 or not checks.is_concrete(base) or callable(base):
        return base**exponent  # pyright: ignore[reportOperatorIssue]
    base = float(base)
    if base <= 0:
        return base**exponent
    return jnp.exp(exponent * math.log(base))


def _lerp(start: jax.Array, end: jax.Array, weight: Any) -> jax.Array:
    """``torch.lerp``: two formulas, chosen by the weight, so both ends are exact."""
    weight = jnp.asarray(weight, start.dtype)
    return jnp.where(
        jnp.abs(weight) < 0.5,
        start + weight * (end - start),
        end - (end - start) * (1 - weight),
    )


def _check_betas(who: str, betas: Any) -> tuple[Any, Any]:
    beta1, beta2 = pair(who, "betas", betas)
    checks.check_interval(who, "betas[0]", beta1, checks.DECAY)
    checks.check_interval(who, "betas[1]", beta2, checks.DECAY)
    return beta1, beta2


def _coupled_decay(weight_decay: Any) -> GradientTransformation:
    """torch's default weight decay, ``grad = grad + weight_decay * param``."""
    return add_decayed_weights(weight_decay)


def _step_from(new_params: Any, params: Any) -> Any:
    # torch writes the new param in place; handing back new - old makes apply_updates give
    # that value exactly (the difference of two floats within a factor of 2 is exact).
    return jax.tree.map(lambda n, p: (n - p).astype(p.dtype), new_params, params)


# --- NAdam ---------------------------------------------------------------------------


class NAdamState(NamedTuple):
    """State of torch's NAdam direction: ``step``, ``mu_product``, ``exp_avg``, ``exp_avg_sq``."""

    count: jax.Array  # int32: updates applied so far (torch's step)
    mu_product: jax.Array  # scalar: the product of the momentum schedule so far
    exp_avg: Any
    exp_avg_sq: Any


def _momentum_decay_power(momentum_decay: Any, step: jax.Array) -> jax.Array:
    """Dozat's :math:`0.96^{t\\psi}`, with the exponent's factor in double where concrete."""
    if scalar_dtype() == jnp.float64 or not checks.is_concrete(momentum_decay):
        return 0.96 ** (step * momentum_decay)
    return jnp.exp(step * (float(momentum_decay) * math.log(0.96)))


def _scale_by_torch_nadam(
    beta1: Any, beta2: Any, eps: Any, momentum_decay: Any
) -> GradientTransformation:
    """NAdam's direction, before ``-lr``: the momentum-decay schedule and its running product."""

    def init(params):
        return NAdamState(
            tree.zeros_count(),
            jnp.ones([], scalar_dtype()),
            tree.state_zeros_like(params),
            tree.state_zeros_like(params),
        )

    def update(updates, state, params=None, **extra):
        checks.check_moments("nadam", updates, state, "exp_avg", "exp_avg_sq")
        step = _step_number(state.count)
        b1 = tree.resolve(beta1, state.count)  # torch reads betas[0] at every step
        bias_correction2 = one_minus_power(beta2, step)
        mu = b1 * (1.0 - 0.5 * _momentum_decay_power(momentum_decay, step))
        mu_next = b1 * (1.0 - 0.5 * _momentum_decay_power(momentum_decay, step + 1))
        mu_product = (state.mu_product * mu).astype(scalar_dtype())
        mu_product_next = mu_product * mu_next
        grad_coefficient = (1.0 - mu) / (1.0 - mu_product)
        avg_coefficient = mu_next / (1.0 - mu_product_next)
        exp_avg = jax.tree.map(lambda m, g: _lerp(m, g, 1 - b1), state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(
            lambda v, g: v * beta2 + (1 - beta2) * (g * g), state.exp_avg_sq, updates
        )

        def direction(g, m, v):
            denom = jnp.sqrt(v / bias_correction2.astype(v.dtype)) + eps
            return grad_coefficient.astype(g.dtype) * (g / denom) + avg_coefficient.astype(
                g.dtype
            ) * (m / denom)

        out = jax.tree.map(direction, updates, exp_avg, exp_avg_sq)
        return out, NAdamState(tree.safe_increment(state.count), mu_product, exp_avg, exp_avg_sq)

    return GradientTransformation(init, update)


def nadam(
    lr: Any = 2e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 0,
    momentum_decay: Any = 4e-3,
    decoupled_weight_decay: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
) -> GradientTransformation:
    """torch's NAdam: Adam with Nesterov momentum on Dozat's momentum-decay schedule.

    With :math:`g_t` the gradient (plus :math:`\\lambda\\theta` unless decoupled),

    .. math::
        \\mu_t = \\beta_1 \\big(1 - \\tfrac12\\, 0.96^{t\\psi}\\big), \\quad
        \\Pi_t = \\prod_{i \\le t} \\mu_i, \\quad
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2,

    .. math::
        \\theta_t = \\theta_{t-1} - \\eta_t \\Big(
            \\frac{1-\\mu_t}{1-\\Pi_t} g_t + \\frac{\\mu_{t+1}}{1-\\Pi_t\\mu_{t+1}} m_t \\Big)
            \\Big/ \\Big(\\sqrt{v_t / (1-\\beta_2^t)} + \\epsilon\\Big)

    and with ``decoupled_weight_decay`` also :math:`-\\eta_t\\lambda\\theta_{t-1}` (NAdamW).
    gradtx's :func:`gradtx.nadam` is optax's, with a constant :math:`\\beta_1` instead.

    Args:
      lr: learning rate :math:`\\eta \\ge 0`, or a schedule.
      betas: :math:`(\\beta_1, \\beta_2)`, each in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      weight_decay: :math:`\\lambda \\ge 0`.
      momentum_decay: :math:`\\psi \\ge 0`, the momentum schedule's decay.
      decoupled_weight_decay: decay the params directly (AdamW's way) instead of
        adding :math:`\\lambda\\theta` to the gradient.
      foreach: torch's implementation flag; changes nothing here.
      maximize: ascend the objective (negate the gradient).
      capturable: torch's implementation flag; changes nothing here.
      differentiable: torch's implementation flag; changes nothing here.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.nadam(lr=0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update({"w": jnp.array([0.5, -1.0])}, opt.init(params), params)
      >>> print(np.asarray(updates["w"]).round(4))  # -lr (1 + 0.1 mu_2 / (1 - mu_1 mu_2)) sign(g)
      [-0.1056  0.1056]

    References:
      torch: ``torch.optim.NAdam``.

      Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop, 2016.
    """
    del foreach, capturable, differentiable  # implementation flags: one XLA program here
    who = "nadam"
    with checks.named(who, scale_by_learning_rate={"learning_rate": "lr"}):
        beta1, beta2 = _check_betas(who, betas)
        checks.check_hyperparams(
            who,
            eps=(eps, checks.NONNEGATIVE),
            weight_decay=(weight_decay, checks.NONNEGATIVE),
            momentum_decay=(momentum_decay, checks.NONNEGATIVE),
        )
        direction = _scale_by_torch_nadam(beta1, beta2, eps, momentum_decay)
        if decoupled_weight_decay:
            blocks = (direction, add_decayed_weights(weight_decay))
        else:
            blocks = (_coupled_decay(weight_decay), direction)
        return learner(negate_if(maximize), *blocks, scale_by_learning_rate(lr))


# --- RAdam ---------------------------------------------------------------------------


class RAdamState(NamedTuple):
    """State of torch's RAdam direction: torch's ``step``, ``exp_avg``, ``exp_avg_sq``."""

    count: jax.Array  # int32: updates applied so far (torch's step)
    exp_avg: Any
    exp_avg_sq: Any


# torch's fixed threshold: the adaptive step is taken once rho_t > 5.
_RADAM_THRESHOLD = 5.0


def _scale_by_torch_radam(beta1: Any, beta2: Any, eps: Any) -> GradientTransformation:
    """RAdam's direction, before ``-lr``, with torch's eps (added to the raw root)."""

    def init(params):
        return RAdamState(
            tree.zeros_count(), tree.state_zeros_like(params), tree.state_zeros_like(params)
        )

    def update(updates, state, params=None, **extra):
        checks.check_moments("radam", updates, state, "exp_avg", "exp_avg_sq")
        step = _step_number(state.count)
        b1 = tree.resolve(beta1, state.count)  # torch reads betas[0] at every step
        exp_avg = jax.tree.map(lambda m, g: _lerp(m, g, 1 - b1), state.exp_avg, updates)
        exp_avg_sq = jax.tree.map(
            lambda v, g: v * beta2 + (1 - beta2) * (g * g), state.exp_avg_sq, updates
        )
        bias_correction1 = one_minus_power(b1, step)
        bias_correction2 = one_minus_power(beta2, step)
        rho_inf = 2 / (1 - beta2) - 1  # a Python float when beta2 is one, as in torch
        rho_t = rho_inf - 2 * step * _power(beta2, step) / bias_correction2
        rectified = rho_t > _RADAM_THRESHOLD
        # Below the threshold the rectifier is not needed (and below 4 not real): keep it finite.
        safe_rho = jnp.where(rectified, rho_t, rho_inf)
        rect = (
            (safe_rho - 4) * (safe_rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe_rho)
        ) ** 0.5

        def direction(m, v):
            corrected = m / bias_correction1.astype(m.dtype)
            adaptive = bias_correction2.astype(v.dtype) ** 0.5 / (jnp.sqrt(v) + eps)
            return jnp.where(rectified, corrected * adaptive * rect.astype(m.dtype), corrected)

        out = jax.tree.map(direction, exp_avg, exp_avg_sq)
        return out, RAdamState(tree.safe_increment(state.count), exp_avg, exp_avg_sq)

    return GradientTransformation(init, update)


def radam(
    lr: Any = 1e-3,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: Any = 1e-8,
    weight_decay: Any = 0,
    decoupled_weight_decay: bool = False,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
    capturable: bool = False,
    differentiable: bool = False,
) -> GradientTransformation:
    """torch's RAdam: Adam whose adaptive step waits until its variance is tractable.

    With :math:`m_t, v_t` Adam's moments of :math:`g_t` (plus :math:`\\lambda\\theta`
    unless decoupled), :math:`\\rho_\\infty = 2/(1-\\beta_2) - 1` and
    :math:`\\rho_t = \\rho_\\infty - 2t\\beta_2^t/(1-\\beta_2^t)`,

    .. math::
        \\hat m_t = \\frac{m_t}{1-\\beta_1^t}, \\qquad
        \\theta_t = \\theta_{t-1} - \\eta_t \\begin{cases}
            \\hat m_t\\, \\dfrac{\\sqrt{1-\\beta_2^t}}{\\sqrt{v_t} + \\epsilon}\\, r_t
                & \\rho_t > 5 \\\\
            \\hat m_t & \\text{otherwise} \\end{cases}, \\quad
        r_t = \\sqrt{\\frac{(\\rho_t-4)(\\rho_t-2)\\rho_\\infty}
            {(\\rho_\\infty-4)(\\rho_\\infty-2)\\rho_t}}

    and with ``decoupled_weight_decay`` also :math:`-\\eta_t\\lambda\\theta_{t-1}` (RAdamW).
    Unlike :func:`gradtx.radam` (optax's), :math:`\\epsilon` is added to :math:`\\sqrt{v_t}`
    before the bias correction, and the threshold is strict.

    Args:
      lr: learning rate :math:`\\eta \\ge 0`, or a schedule.
      betas: :math:`(\\beta_1, \\beta_2)`, each in [0, 1).
      eps: :math:`\\epsilon \\ge 0`.
      weight_decay: :math:`\\lambda \\ge 0`.
      decoupled_weight_decay: decay the params directly instead of adding
        :math:`\\lambda\\theta` to the gradient.
      foreach: torch's implementation flag; changes nothing here.
      maximize: ascend the objective (negate the gradient).
      capturable: torch's implementation flag; changes nothing here.
      differentiable: torch's implementation flag; changes nothing here.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.radam(lr=0.1)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update({"w": jnp.array([0.5, -1.0])}, opt.init(params), params)
      >>> print(np.asarray(updates["w"]).round(4))  # rho_1 = 1: plain momentum, -lr * g
      [-0.05  0.1 ]

    References:
      torch: ``torch.optim.RAdam``.

      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
    """
    del foreach, capturable, differentiable  # implementation flags: one XLA program here
    who = "radam"
    with checks.named(who, scale_by_learning_rate={"learning_rate": "lr"}):
        beta1, beta2 = _check_betas(who, betas)
        checks.check_hyperparams(
            who, eps=(eps, checks.NONNEGATIVE), weight_decay=(weight_decay, checks.NONNEGATIVE)
        )
        direction = _scale_by_torch_radam(beta1, beta2, eps)
        if decoupled_weight_decay:
            blocks = (direction, add_decayed_weights(weight_decay))
        else:
            blocks = (_coupled_decay(weight_decay), direction)
        return learner(negate_if(maximize), *blocks, scale_by_learning_rate(lr))


# --- Rprop ---------------------------------------------------------------------------


def rprop(
    lr: Any = 1e-2,
    etas: tuple[Any, Any] = (0.5, 1.2),
    step_sizes: tuple[Any, Any] = (1e-6, 50),
    *,
    capturable: bool = False,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
) -> GradientTransformation:
    """torch's Rprop: a step size per entry, grown while its gradient keeps its sign.

    With :math:`s_t = \\operatorname{sign}(g_t\\, g'_{t-1})`, :math:`g'` the last gradient
    as torch stores it (0 where it flipped), and :math:`\\delta_0 = \\eta` the learning rate:

    .. math::
        \\delta_t = \\operatorname{clip}\\big(\\delta_{t-1} \\cdot
            \\{\\eta^+, \\eta^-, 1\\}_{s_t = 1, -1, 0},\\ \\delta_{min}, \\delta_{max}\\big), \\quad
        g'_t = \\begin{cases} 0 & s_t < 0 \\\\ g_t & \\text{otherwise} \\end{cases}, \\quad
        \\theta_t = \\theta_{t-1} - \\delta_t \\operatorname{sign}(g'_t).

    It is :func:`gradtx.scale_by_rprop` with ``lagged=False`` (Riedmiller and Braun's
    rule), started from :math:`\\operatorname{clip}(\\eta, \\delta_{min}, \\delta_{max})`:
    torch clips every step size at every step, so its first step already uses the
    clipped rate. As in torch, ``lr`` only sets the initial step sizes: a schedule is
    read once, at count 0.

    Args:
      lr: the initial step size :math:`\\eta \\ge 0` (a schedule is read at count 0).
      etas: :math:`(\\eta^-, \\eta^+)` with :math:`0 < \\eta^- < 1 < \\eta^+`.
      step_sizes: :math:`(\\delta_{min}, \\delta_{max})`, with
        :math:`0 \\le \\delta_{min} \\le \\delta_{max}` and :math:`\\delta_{max} > 0`.
      capturable: torch's implementation flag; changes nothing here.
      foreach: torch's implementation flag; changes nothing here.
      maximize: ascend the objective (negate the gradient).
      differentiable: torch's implementation flag; changes nothing here.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.rprop(lr=0.1)
      >>> state = opt.init({"w": jnp.zeros(2)})
      >>> updates, state = opt.update({"w": jnp.array([1.0, -1.0])}, state)
      >>> updates, state = opt.update({"w": jnp.array([2.0, 1.0])}, state)  # kept, flipped
      >>> print(np.asarray(updates["w"]).round(4))
      [-0.12 -0.  ]

    References:
      torch: ``torch.optim.Rprop``.

      Riedmiller and Braun, "A Direct Adaptive Method for Faster Backpropagation Learning:
        The RPROP Algorithm", 1993.
    """
    del capturable, foreach, differentiable  # implementation flags: one XLA program here
    who = "rprop"
    eta_minus, eta_plus = pair(who, "etas", etas)
    step_size_min, step_size_max = pair(who, "step_sizes", step_sizes)
    checks.check_interval(who, "lr", lr, checks.NONNEGATIVE)
    checks.check_interval(who, "etas[0]", eta_minus, "(0, 1)")
    checks.check_interval(who, "etas[1]", eta_plus, "(1, inf)")
    renames = {
        "learning_rate": "lr",
        "eta_minus": "etas[0]",
        "eta_plus": "etas[1]",
        "min_step_size": "step_sizes[0]",
        "max_step_size": "step_sizes[1]",
    }
    with checks.named(who, scale_by_rprop=renames):
        initial: Any = lr(0) if callable(lr) else lr
        if checks.is_concrete((initial, step_size_min, step_size_max)):
            # Checked by the block; clipping first would hide a bad step_sizes pair.
            checks.check_interval(who, "step_sizes[0]", step_size_min, checks.NONNEGATIVE)
            checks.check_interval(who, "step_sizes[1]", step_size_max, checks.POSITIVE)
            checks.check_at_most(
                "scale_by_rprop", "min_step_size", step_size_min, "max_step_size", step_size_max
            )
            initial = min(max(float(initial), float(step_size_min)), float(step_size_max))
        else:
            initial = jnp.clip(initial, step_size_min, step_size_max)
        return learner(
            negate_if(maximize),
            scale_by_rprop(
                initial, eta_minus, eta_plus, step_size_min, step_size_max, lagged=False
            ),
            scale(-1.0),
        )


# --- ASGD ----------------------------------------------------------------------------


class ASGDState(NamedTuple):
    """State of torch's ASGD: torch's ``step``, ``eta``, ``mu`` and the averaged params ``ax``."""

    count: jax.Array  # int32: updates applied so far (torch's step)
    eta: jax.Array  # scalar: the rate of the next update
    mu: jax.Array  # scalar: the averaging weight of the next update
    ax: Any  # params-shaped: the averaged params (read them with asgd_averaged_params)


def _scale_by_torch_asgd(lr: Any, lambd: Any, alpha: Any, t0: Any) -> GradientTransformation:
    """ASGD's step and average; needs the params (the decay and the average read them)."""

    def init(params):
        return ASGDState(
            tree.zeros_count(),
            jnp.asarray(tree.resolve(lr, tree.zeros_count()), scalar_dtype()),
            jnp.ones([], scalar_dtype()),
            tree.state_zeros_like(params),
        )

    def update(updates, state, params=None, **extra):
        checks.require_params("asgd", params)
        checks.check_moments("asgd", updates, state, "ax")
        eta, mu = state.eta, state.mu

        def new_param(p, g):
            return p * (1 - lambd * eta).astype(p.dtype) - eta.astype(p.dtype) * g

        new_params = jax.tree.map(new_param, params, updates)
        ax = jax.tree.map(
            lambda a, p: jnp.where(mu == 1, p, a + (p - a) * mu.astype(a.dtype)),
            state.ax,
            new_params,
        )
        # The next update's eta and mu, from this update's number and rate, as torch does.
        step = _step_number(state.count)
        rate = tree.resolve(lr, state.count)
        next_eta = jnp.asarray(rate / ((1 + lambd * rate * step) ** alpha), scalar_dtype())
        next_mu = jnp.asarray(1 / jnp.maximum(1, step - t0), scalar_dtype())
        new_state = ASGDState(tree.safe_increment(state.count), next_eta, next_mu, ax)
        return _step_from(new_params, params), new_state

    return GradientTransformation(init, update)


def asgd(
    lr: Any = 1e-2,
    lambd: Any = 1e-4,
    alpha: Any = 0.75,
    t0: Any = 1e6,
    weight_decay: Any = 0,
    foreach: bool | None = None,
    maximize: bool = False,
    differentiable: bool = False,
    capturable: bool = False,
) -> GradientTransformation:
    """torch's ASGD: SGD with a decaying rate and a running average of the params.

    With :math:`g_t` the gradient plus :math:`\\lambda_w\\theta_{t-1}`, :math:`e_1 = \\eta_0`
    and :math:`\\mu_1 = 1`:

    .. math::
        \\theta_t = \\theta_{t-1}(1 - \\lambda e_t) - e_t g_t, \\qquad
        \\bar\\theta_t = \\bar\\theta_{t-1} + \\mu_t(\\theta_t - \\bar\\theta_{t-1}),

    .. math::
        e_{t+1} = \\frac{\\eta_{t}}{(1 + \\lambda\\eta_{t} t)^{\\alpha}}, \\qquad
        \\mu_{t+1} = \\frac{1}{\\max(1, t - t_0)}

    (:math:`\\eta_t` the rate at count :math:`t - 1`). The average :math:`\\bar\\theta`
    (torch's ``state["ax"]``) copies the params until step :math:`t_0 + 1`, then averages
    them equally from there on; read it with :func:`asgd_averaged_params`. A complex
    param's average is complex, as torch's is (every step is linear, so torch's real
    view of it is the complex rule). Note the order of torch's arguments: its flags
    are positional too.

    Args:
      lr: learning rate :math:`\\eta \\ge 0`, or a schedule.
      lambd: :math:`\\lambda \\ge 0`, the decay term.
      alpha: :math:`\\alpha \\ge 0`, the power of the rate's decay.
      t0: :math:`t_0 \\ge 0`, the step from which the params are averaged.
      weight_decay: :math:`\\lambda_w \\ge 0`, added to the gradient.
      foreach: torch's implementation flag; changes nothing here.
      maximize: ascend the objective (negate the gradient).
      differentiable: torch's implementation flag; changes nothing here.
      capturable: torch's implementation flag; changes nothing here.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.asgd(lr=0.1, lambd=0.0, t0=0)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update({"w": jnp.array([0.5, -1.0])}, opt.init(params), params)
      >>> print(np.asarray(updates["w"]).round(4))
      [-0.05  0.1 ]
      >>> print(np.asarray(torch_optim.asgd_averaged_params(state)["w"]).round(4))
      [ 0.95 -1.9 ]

    References:
      torch: ``torch.optim.ASGD``.

      Polyak and Juditsky, "Acceleration of Stochastic Approximation by Averaging",
        SIAM Journal on Control and Optimization, 1992.
    """
    del foreach, differentiable, capturable  # implementation flags: one XLA program here
    who = "asgd"
    checks.check_hyperparams(
        who,
        lr=(lr, checks.NONNEGATIVE),
        lambd=(lambd, checks.NONNEGATIVE),
        alpha=(alpha, checks.NONNEGATIVE),
        t0=(t0, "[0, inf]"),
        weight_decay=(weight_decay, checks.NONNEGATIVE),
    )
    with checks.named(who):
        # Every step of ASGD is linear in the params and the gradient, so a complex
        # param's real view is the complex rule itself: the average stays complex.
        return learner(
            conjugate_gradient(),
            negate_if(maximize),
            _coupled_decay(weight_decay),
            _scale_by_torch_asgd(lr, lambd, alpha, t0),
            real_view=False,
        )


def asgd_averaged_params(state: Any) -> Any:
    """The averaged params kept in an :func:`asgd` state: torch's ``state["ax"]``.

    Args:
      state: the state of :func:`asgd`, or of a transform containing it (a chain).

    Raises:
      ValueError: if ``state`` holds no ASGD state.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.asgd()
      >>> torch_optim.asgd_averaged_params(opt.init({"w": jnp.ones(3)}))["w"].shape
      (3,)
    """
    found = [
        node
        for node in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, ASGDState))
        if isinstance(node, ASGDState)
    ]
    if not found:
        raise ValueError("asgd_averaged_params: the state holds no torch_optim.asgd state")
    if len(found) > 1:
        raise ValueError(
            f"asgd_averaged_params: the state holds {len(found)} asgd states; pass the one you mean"
        )
    return found[0].ax


# --- Adafactor -----------------------------------------------------------------------


class AdafactorState(NamedTuple):
    """State of torch's Adafactor, its names: ``row_var``, ``col_var`` and ``variance``.

    A leaf of 2 or more dimensions keeps ``row_var`` (its shape with the last axis 1)
    and ``col_var`` (the second last axis 1), and a one-element placeholder in
    ``variance``; any other leaf keeps ``variance`` (its own shape) and placeholders in
    the other two.
    """

    count: jax.Array  # int32: updates applied so far (torch's step)
    row_var: Any
    col_var: Any
    variance: Any


def _placeholder(x: Any) -> jax.Array:
    return jnp.zeros([1], jnp.result_type(x))


def _norm(x: jax.Array) -> jax.Array:
    return jnp.sqrt(jnp.sum(x * x))


def _torch_adafactor(
    lr: Any, beta2_decay: Any, eps1: Any, eps2: Any, d: Any, weight_decay: Any
) -> GradientTransformation:
    """Adafactor's whole step (torch's variant): it reads the params for its relative step."""

    def init(params):
        tree.reject_complex("adafactor", params)

        def zeros_with_axis_one(x, axis):
            shape = list(jnp.shape(x))
            shape[axis] = 1
            return jnp.zeros(shape, jnp.result_type(x))

        factored = lambda x: jnp.ndim(x) > 1  # noqa: E731
        return AdafactorState(
            tree.zeros_count(),
            jax.tree.map(
                lambda x: zeros_with_axis_one(x, -1) if factored(x) else _placeholder(x), params
            ),
            jax.tree.map(
                lambda x: zeros_with_axis_one(x, -2) if factored(x) else _placeholder(x), params
            ),
            jax.tree.map(
                lambda x: _placeholder(x) if factored(x) else tree.state_zeros_like(x), params
            ),
        )

    def update(updates, state, params=None, **extra):
        checks.require_params("adafactor", params)
        tree.reject_complex("adafactor", updates)
        checks.check_trees_match("adafactor", "updates", updates, params=params)
        step = _step_number(state.count)
        rate = tree.resolve(lr, state.count)
        one_minus_beta2_t = step**beta2_decay
        rho_t = jnp.minimum(rate, 1 / step**0.5)

        def one(g, p, row_var, col_var, variance):
            dtype = g.dtype
            tiny = jnp.finfo(dtype).eps if eps1 is None else eps1
            size = max(g.size, 1)
            alpha = jnp.maximum(eps2, _norm(p) / size**0.5) * rho_t
            decayed = p * jnp.asarray(1 - rate * weight_decay, dtype) if weight_decay_on else p
            w = one_minus_beta2_t.astype(dtype)
            if g.ndim > 1:
                row_var = _lerp(row_var, jnp.sum(g * g, axis=-1, keepdims=True) / g.shape[-1], w)
                col_var = _lerp(col_var, jnp.sum(g * g, axis=-2, keepdims=True) / g.shape[-2], w)
                row_mean = jnp.maximum(jnp.mean(row_var, axis=-2, keepdims=True), tiny)
                estimate = row_var * col_var / row_mean
            else:
                variance = _lerp(variance, g * g, w)
                estimate = variance
            scaled = jax.lax.rsqrt(jnp.maximum(estimate, tiny * tiny)) * g
            denom = jnp.maximum(1.0, _norm(scaled) / (size**0.5 * d))
            new_p = decayed - (alpha / denom).astype(dtype) * scaled
            return new_p, row_var, col_var, variance

        weight_decay_on = not (isinstance(weight_decay, int | float) and weight_decay == 0)
        treedef = jax.tree.structure(updates)
        results = [
            one(*leaves)
            for leaves in zip(
                treedef.flatten_up_to(updates),
                treedef.flatten_up_to(params),
                treedef.flatten_up_to(state.row_var),
                treedef.flatten_up_to(state.col_var),
                treedef.flatten_up_to(state.variance),
                strict=True,
            )
        ]
        new_params, row_var, col_var, variance = (
            jax.tree.unflatten(treedef, [r[i] for r in results]) for i in range(4)
        )
        new_state = AdafactorState(tree.safe_increment(state.count), row_var, col_var, variance)
        return _step_from(new_params, params), new_state

    return GradientTransformation(init, update)


def adafactor(
    lr: Any = 1e-2,
    beta2_decay: Any = -0.8,
    eps: tuple[Any, Any] = (None, 1e-3),
    d: Any = 1.0,
    weight_decay: Any = 0.0,
    *,
    foreach: bool | None = None,
    maximize: bool = False,
) -> GradientTransformation:
    """torch's Adafactor: a factored second moment, a relative step size and update clipping.

    With :math:`\\hat\\beta_t = 1 - t^{c}` (:math:`c` = ``beta2_decay``),
    :math:`\\rho_t = \\min(\\eta_t, 1/\\sqrt t)` and
    :math:`a_t = \\max(\\epsilon_2, \\operatorname{RMS}(\\theta_{t-1}))\\, \\rho_t`, a leaf of
    two or more dimensions is factored over its last two axes:

    .. math::
        R_t = \\hat\\beta_t R_{t-1} + (1-\\hat\\beta_t) \\operatorname{mean}_{-1} g_t^2, \\quad
        C_t = \\hat\\beta_t C_{t-1} + (1-\\hat\\beta_t) \\operatorname{mean}_{-2} g_t^2, \\quad
        V_t = \\frac{R_t C_t}{\\max(\\operatorname{mean}_{-2} R_t, \\epsilon_1)},

    any other leaf keeps the full :math:`V_t = \\hat\\beta_t V_{t-1} + (1-\\hat\\beta_t) g_t^2`, and

    .. math::
        U_t = \\frac{g_t}{\\sqrt{\\max(V_t, \\epsilon_1^2)}}, \\qquad
        \\theta_t = \\theta_{t-1}(1 - \\eta_t\\lambda)
            - \\frac{a_t}{\\max(1, \\operatorname{RMS}(U_t)/d)}\\, U_t.

    This is torch's variant, not :func:`gradtx.adafactor` (optax's and the paper's): no
    first moment, the last two axes are factored whatever their sizes, the second
    moment starts from zero with :math:`\\hat\\beta_1 = 0`, and the weight decay uses the
    learning rate itself.

    Args:
      lr: learning rate :math:`\\eta \\ge 0`, or a schedule; it caps the relative step.
      beta2_decay: :math:`c \\le 0`, the exponent of the second moment's decay.
      eps: :math:`(\\epsilon_1, \\epsilon_2)`: :math:`\\epsilon_1 \\ge 0` bounds the second
        moment (None: the machine epsilon of each param's dtype), :math:`\\epsilon_2 \\ge 0`
        the params' RMS.
      d: :math:`d \\ge 1`, the clipping threshold of the update's RMS.
      weight_decay: :math:`\\lambda \\ge 0`.
      foreach: torch's implementation flag; changes nothing here.
      maximize: ascend the objective (negate the gradient).

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.adafactor(lr=0.1)
      >>> params = {"w": jnp.ones((2, 3)), "b": jnp.array([1.0, -1.0])}
      >>> grads = {"w": jnp.full((2, 3), 0.5), "b": jnp.array([2.0, 2.0])}
      >>> updates, state = opt.update(grads, opt.init(params), params)
      >>> state.row_var["w"].shape, state.col_var["w"].shape
      ((2, 1), (1, 3))
      >>> print(np.asarray(updates["b"]).round(4))  # -rho_1 * RMS(params) * sign(g)
      [-0.1 -0.1]

    References:
      torch: ``torch.optim.Adafactor``.

      Shazeer and Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
        ICML 2018.
    """
    del foreach  # an implementation flag: one XLA program here
    who = "adafactor"
    eps1, eps2 = pair(who, "eps", eps)
    checks.check_hyperparams(
        who,
        lr=(lr, checks.NONNEGATIVE),
        beta2_decay=(beta2_decay, "(-inf, 0]"),
        d=(d, "[1, inf)"),
        weight_decay=(weight_decay, checks.NONNEGATIVE),
    )
    if eps1 is not None:
        checks.check_interval(who, "eps[0]", eps1, checks.NONNEGATIVE)
    checks.check_interval(who, "eps[1]", eps2, checks.NONNEGATIVE)
    with checks.named(who):
        return learner(
            negate_if(maximize),
            # It refuses complex leaves and factors the last two axes: no real view.
            _torch_adafactor(lr, beta2_decay, eps1, eps2, d, weight_decay),
            real_view=False,
        )
