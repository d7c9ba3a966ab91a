"""optax's simple learners: sign steps, Rprop, SM3, Polyak steps, optimism, Fromage, noisy SGD.

Each is a chain of gradtx blocks with optax's signature, defaults, state and numbers.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax

from gradtx import checks, tree
from gradtx.core import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    Scalar,
    ScalarOrSchedule,
    chain,
    float_leaves,
)
from gradtx.learners.basic import sgd
from gradtx.transforms.adam import scale_by_adam
from gradtx.transforms.averages import ema
from gradtx.transforms.noise import add_noise
from gradtx.transforms.optimistic import scale_by_optimistic_gradient
from gradtx.transforms.polyak import scale_by_polyak
from gradtx.transforms.rprop import scale_by_rprop
from gradtx.transforms.scaling import scale, scale_by_learning_rate
from gradtx.transforms.sign import scale_by_sign
from gradtx.transforms.sm3 import scale_by_sm3
from gradtx.transforms.trust_ratio import scale_by_trust_ratio
from gradtx.transforms.weight_decay import AddDecayedWeightsState


def sign_sgd(learning_rate: ScalarOrSchedule) -> GradientTransformation:
    """signSGD: a step of the same size along the sign of every gradient entry.

    .. math:: \\theta_{t+1} = \\theta_t - \\eta_t \\operatorname{sign}(g_t)

    optax: ``optax.sign_sgd``. Complex leaves raise ``ValueError`` naming them
    (see :func:`gradtx.transforms.sign.scale_by_sign`).

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.learners.sign_family import sign_sgd
      >>> opt = sign_sgd(0.1)
      >>> grads = {"w": jnp.array([0.5, -3.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(updates["w"])
      [-0.1  0.1]

    References:
      Bernstein, Wang, Azizzadenesheli and Anandkumar, "signSGD: Compressed Optimisation
        for Non-Convex Problems", 2018.

      Balles and Hennig, "The Geometry of Sign Gradient Descent", 2020.

      optax: ``optax.sign_sgd``.
    """
    with checks.named("sign_sgd"):
        return float_leaves(chain(scale_by_sign(), scale_by_learning_rate(learning_rate)))


def signum(
    learning_rate: ScalarOrSchedule,
    beta: Scalar = 0.9,
    accumulator_dtype: Any = None,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Signum: signSGD on a moving average of the gradients.

    .. math::
        m_t = \\beta m_{t-1} + (1-\\beta) g_t, \\qquad
        \\theta_{t+1} = \\theta_t - \\eta_t \\operatorname{sign}(m_t)

    The average is not debiased: its sign is the same. optax: ``optax.signum``.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      beta: :math:`\\beta` in [0, 1), the average's decay.
      accumulator_dtype: optax's dtype of the stored average, rounded to nearest
        (None: the params'). Not with ``state_dtype``.
      state_dtype: dtype of the stored average, e.g. ``jnp.bfloat16`` (rounded
        stochastically); arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.learners.sign_family import signum
      >>> opt = signum(0.1)
      >>> state = opt.init({"w": jnp.zeros(2)})
      >>> updates, state = opt.update({"w": jnp.array([1.0, -1.0])}, state)
      >>> updates, state = opt.update({"w": jnp.array([-0.5, -1.0])}, state)  # m = (0.04, -0.19)
      >>> print(updates["w"])
      [-0.1  0.1]

    References:
      Bernstein, Wang, Azizzadenesheli and Anandkumar, "signSGD: Compressed Optimisation
        for Non-Convex Problems", 2018.

      Zhao et al., "Deconstructing What Makes a Good Optimizer for Language Models", 2024.

      optax: ``optax.signum``.
    """
    with checks.named("signum", ema={"decay": "beta"}):
        return float_leaves(
            chain(
                ema(beta, False, accumulator_dtype, state_dtype=state_dtype),
                scale_by_sign(),
                scale_by_learning_rate(learning_rate),
            )
        )


def rprop(
    learning_rate: Scalar,
    eta_minus: Scalar = 0.5,
    eta_plus: Scalar = 1.2,
    min_step_size: Scalar = 1e-6,
    max_step_size: Scalar = 50.0,
    *,
    lagged: bool = True,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Rprop: per-entry step sizes that grow while the gradient keeps its sign.

    .. math:: \\theta_{t+1} = \\theta_t - p_t
        \\quad\\text{or, lagged (optax's), }\\quad
        \\theta_{t+1} = \\theta_t - [s_t \\ge 0]\\, p_{t-1}

    with :math:`p_t = \\delta_t \\operatorname{sign}(g_t)`, or 0 where the gradient just
    flipped sign (:math:`s_t = g_t p_{t-1} < 0`), and :math:`\\delta_t` each entry's step
    size, started at ``learning_rate`` and multiplied by ``eta_plus`` or ``eta_minus`` (see
    :func:`gradtx.transforms.rprop.scale_by_rprop`).

    optax: ``optax.rprop`` at the defaults: optax 0.2.8 takes each step one update late
    (its first update is 0). torch: ``torch.optim.Rprop(lr, etas=(eta_minus, eta_plus),
    step_sizes=(min_step_size, max_step_size))`` is ``rprop(..., lagged=False)`` whenever
    ``lr`` lies within the step-size bounds (torch also clips the initial step size).

    Args:
      learning_rate: :math:`\\delta_0 \\ge 0`, the initial step size (not a schedule).
      eta_minus: in (0, 1], the factor of a step size whose gradient flipped sign.
      eta_plus: at least 1, the factor of a step size whose gradient kept its sign.
      min_step_size: the smallest step size, :math:`\\ge 0`.
      max_step_size: the largest step size, :math:`> 0`.
      lagged: take the last update's step (optax 0.2.8's numbers); False: this one's
        (Riedmiller and Braun's, and torch's).
      state_dtype: dtype of the stored step sizes and steps, e.g. ``jnp.bfloat16``
        (rounded stochastically); arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.learners.sign_family import rprop
      >>> opt = rprop(0.1, lagged=False)
      >>> grads = {"w": jnp.array([2.0, -0.5])}
      >>> state = opt.init(grads)
      >>> updates, state = opt.update(grads, state)
      >>> updates, state = opt.update(grads, state)  # same signs: steps grow by 1.2
      >>> print(updates["w"])
      [-0.12  0.12]

    References:
      Riedmiller and Braun, "A Direct Adaptive Method for Faster Backpropagation Learning:
        The RPROP Algorithm", 1993.

      Igel and Hüsken, "Empirical evaluation of the improved Rprop learning algorithms", 2003.

      optax: ``optax.rprop``; torch: ``torch.optim.Rprop``.
    """
    with checks.named("rprop"):
        return float_leaves(
            chain(
                scale_by_rprop(
                    learning_rate,
                    eta_minus,
                    eta_plus,
                    min_step_size,
                    max_step_size,
                    lagged=lagged,
                    state_dtype=state_dtype,
                ),
                scale(-1.0),
            )
        )


def sm3(
    learning_rate: ScalarOrSchedule,
    momentum: Scalar | None = 0.9,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """SM3: Adagrad's per-entry step sizes kept in one vector per tensor axis.

    .. math:: \\theta_{t+1} = \\theta_t - \\eta_t m_t, \\qquad
        m_t = \\mu m_{t-1} + (1-\\mu) \\frac{g_t}{\\sqrt{\\nu_t + \\epsilon}}

    with :math:`\\nu_t` SM3's cover of Adagrad's sum of squares
    (:func:`gradtx.transforms.sm3.scale_by_sm3` with ``b1=momentum``, ``b2=1``).
    optax: ``optax.sm3``, which takes no schedule; here ``learning_rate`` may be one.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      momentum: :math:`\\mu` in [0, 1); None: no momentum (:math:`\\mu = 0`).
      state_dtype: dtype of the stored accumulators and momentum, e.g. ``jnp.bfloat16``
        (rounded stochastically); arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.learners.sign_family import sm3
      >>> opt = sm3(1.0)
      >>> grads = {"w": jnp.array([[3.0, -4.0]])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(updates["w"])  # -(1 - 0.9) * g / |g| at the first step
      [[-0.1  0.1]]

    References:
      Anil, Gupta, Koren and Singer, "Memory-Efficient Adaptive Optimization", 2019.

      optax: ``optax.sm3``.
    """
    with checks.named("sm3", scale_by_sm3={"b1": "momentum"}):
        return float_leaves(
            chain(
                scale_by_sm3(0.0 if momentum is None else momentum, state_dtype=state_dtype),
                scale_by_learning_rate(learning_rate),
            )
        )


def polyak_sgd(
    max_learning_rate: Scalar = 1.0,
    scaling: ScalarOrSchedule = 1.0,
    f_min: Scalar = 0.0,
    eps: Scalar = 0.0,
    variant: str = "sps",
) -> GradientTransformationExtraArgs:
    """SGD with Polyak's step size, from the loss passed to ``update`` as ``value``.

    .. math::
        \\theta_{t+1} = \\theta_t - s_t \\min\\Big(\\frac{f(\\theta_t) - f^\\star}
        {\\lVert g_t\\rVert^2 + \\epsilon}, \\gamma_{max}\\Big) g_t

    (see :func:`gradtx.transforms.polyak.scale_by_polyak`; ``variant="sps+"`` takes the
    positive part of :math:`f - f^\\star`). Call
    ``update(grads, state, params, value=loss)``. optax: ``optax.polyak_sgd``, the same
    chain (SGD with learning rate ``scaling``, then the Polyak step).

    Args:
      max_learning_rate: :math:`\\gamma_{max} \\ge 0`, the largest step size.
      scaling: :math:`s \\ge 0`, a factor of every step, or a schedule.
      f_min: :math:`f^\\star`, a lower bound of the loss.
      eps: :math:`\\epsilon \\ge 0`, added to the squared gradient norm.
      variant: ``"sps"`` or ``"sps+"``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gradtx.learners.sign_family import polyak_sgd
      >>> f = lambda x: jnp.sum(x**2)
      >>> opt = polyak_sgd()
      >>> params = jnp.array([1.0, 2.0, 3.0])
      >>> value, grads = jax.value_and_grad(f)(params)
      >>> updates, state = opt.update(grads, opt.init(params), params, value=value)
      >>> print(f(params + updates))  # a step of 14 / 56 along -g halves the params
      3.5

    References:
      Loizou, Vaswani, Laradji and Lacoste-Julien, "Stochastic Polyak Step-size for SGD:
        An Adaptive Learning Rate for Fast Convergence", 2021.

      Berrada, Zisserman and Kumar, "Training Neural Networks for and by Interpolation", 2020.

      Garrigos, Gower and Schaipp, "Function Value Learning: Adaptive Learning Rates
        Based on the Polyak Stepsize and Function Splitting in ERM", 2023.

      optax: ``optax.polyak_sgd``.
    """
    with checks.named("polyak_sgd", sgd={"learning_rate": "scaling"}):
        tx = float_leaves(
            chain(
                sgd(learning_rate=scaling),
                scale_by_polyak(f_min, max_learning_rate, eps, variant),
            )
        )
    # optax's return type: code that asks isinstance(..., GradientTransformationExtraArgs)
    # learns that update takes extras. (optax's own chain asks about optax's class only.)
    return GradientTransformationExtraArgs(tx.init, tx.update)


def optimistic_gradient_descent(
    learning_rate: ScalarOrSchedule,
    alpha: ScalarOrSchedule = 1.0,
    beta: ScalarOrSchedule = 1.0,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Optimistic gradient descent: a step along the gradient corrected by its last change.

    .. math:: \\theta_{t+1} = \\theta_t - \\eta_t \\big((\\alpha_t + \\beta_t) g_t
        - \\beta_t g_{t-1}\\big), \\qquad g_0 = g_1

    Converges in the last iterate on min-max games where plain gradient descent cycles.
    optax: ``optax.optimistic_gradient_descent`` (whose ``alpha`` and ``beta`` schedules
    fail in optax; here they are evaluated at the step count).

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      alpha: :math:`\\alpha \\ge 0` or a schedule, the weight of the gradient.
      beta: :math:`\\beta \\ge 0` or a schedule, the weight of its change.
      state_dtype: dtype of the stored last gradient, e.g. ``jnp.bfloat16``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from gradtx.learners.sign_family import optimistic_gradient_descent
      >>> opt = optimistic_gradient_descent(0.1)
      >>> state = opt.init({"w": jnp.zeros(2)})
      >>> updates, state = opt.update({"w": jnp.array([1.0, 1.0])}, state)
      >>> updates, state = opt.update({"w": jnp.array([2.0, 0.0])}, state)  # -0.1 (2 g_2 - g_1)
      >>> print(updates["w"])
      [-0.3  0.1]

    References:
      Mokhtari, Ozdaglar and Pattathil, "A Unified Analysis of Extra-gradient and
        Optimistic Gradient Methods for Saddle Point Problems: Proximal Point Approach", 2020.

      optax: ``optax.optimistic_gradient_descent``.
    """
    with checks.named("optimistic_gradient_descent"):
        return float_leaves(
            chain(
                scale_by_optimistic_gradient(alpha, beta, state_dtype=state_dtype),
                scale_by_learning_rate(learning_rate),
            )
        )


def optimistic_adam(
    learning_rate: ScalarOrSchedule,
    optimism: ScalarOrSchedule | None = None,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-08,
    eps_root: Scalar = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Optimistic Adam, optax's first interface (deprecated there for :func:`optimistic_adam_v2`).

    With :math:`r_t` Adam's step (:func:`gradtx.scale_by_adam`, NAdam's by default):

    .. math:: \\theta_{t+1} = \\theta_t - \\eta_t r_t - o_t (r_t - r_{t-1}), \\qquad r_0 = r_1

    that is :func:`gradtx.transforms.optimistic.scale_by_optimistic_gradient` with
    ``alpha=learning_rate`` and ``beta=optimism``. It warns ``DeprecationWarning``, as
    optax's. optax raises for a ``learning_rate`` schedule; here it is evaluated at the
    step count (and is the optimism too when ``optimism`` is None).

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      optimism: :math:`o \\ge 0` or a schedule; None: ``learning_rate``, as in the paper.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      mu_dtype: optax's dtype of Adam's stored first moment, rounded to nearest
        (None: the params'). Not with ``state_dtype``.
      nesterov: NAdam's look-ahead first moment (optax's default here).
      state_dtype: dtype of the stored moments and last step, e.g. ``jnp.bfloat16``
        (rounded stochastically); arithmetic stays in the gradients' dtype.

    Examples:
      >>> import warnings, jax.numpy as jnp, numpy as np
      >>> from gradtx.learners.sign_family import optimistic_adam
      >>> with warnings.catch_warnings():
      ...     warnings.simplefilter("ignore", DeprecationWarning)
      ...     opt = optimistic_adam(0.1)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * NAdam's first step
      [-0.1474  0.1474]

    References:
      Daskalakis, Ilyas, Syrgkanis and Zeng, "Training GANs with Optimism", 2018.

      optax: ``optax.optimistic_adam``.
    """
    warnings.warn(
        "optimistic_adam is deprecated (as in optax); use optimistic_adam_v2",
        DeprecationWarning,
        stacklevel=2,
    )
    if optimism is None:
        optimism = learning_rate
    renames = {"scale_by_optimistic_gradient": {"alpha": "learning_rate", "beta": "optimism"}}
    with checks.named("optimistic_adam", **renames):
        return float_leaves(
            chain(
                scale_by_adam(
                    b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, state_dtype=state_dtype
                ),
                scale_by_optimistic_gradient(learning_rate, optimism, state_dtype=state_dtype),
                scale_by_learning_rate(1.0),  # flips the sign
            )
        )


def optimistic_adam_v2(
    learning_rate: ScalarOrSchedule,
    *,
    alpha: Scalar = 1.0,
    beta: Scalar = 1.0,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-08,
    eps_root: Scalar = 0.0,
    mu_dtype: Any = None,
    nesterov: bool = True,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Optimistic Adam: Adam's step, corrected by its change since the last step.

    With :math:`r_t` Adam's step (:func:`gradtx.scale_by_adam`, NAdam's by default):

    .. math:: \\theta_{t+1} = \\theta_t - \\eta_t \\big(\\alpha r_t + \\beta (r_t - r_{t-1})\\big),
        \\qquad r_0 = r_1

    optax: ``optax.optimistic_adam_v2``.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      alpha: :math:`\\alpha \\ge 0`, the weight of Adam's step (a schedule works too).
      beta: :math:`\\beta \\ge 0`, the weight of its change, the optimism (a schedule works too).
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      mu_dtype: optax's dtype of Adam's stored first moment, rounded to nearest
        (None: the params'). Not with ``state_dtype``.
      nesterov: NAdam's look-ahead first moment (optax's default here).
      state_dtype: dtype of the stored moments and last step, e.g. ``jnp.bfloat16``
        (rounded stochastically); arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx.learners.sign_family import optimistic_adam_v2
      >>> opt = optimistic_adam_v2(0.1, alpha=1.0, beta=1.0)
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * NAdam's first step
      [-0.1474  0.1474]

    References:
      Daskalakis, Ilyas, Syrgkanis and Zeng, "Training GANs with Optimism", 2018.

      optax: ``optax.optimistic_adam_v2``.
    """
    with checks.named("optimistic_adam_v2"):
        return float_leaves(
            chain(
                scale_by_adam(
                    b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, state_dtype=state_dtype
                ),
                scale_by_optimistic_gradient(alpha, beta, state_dtype=state_dtype),
                scale_by_learning_rate(learning_rate),
            )
        )


def _add_scaled_params(factor: ScalarOrSchedule) -> GradientTransformation:
    """:math:`u \\leftarrow u + c_t\\,\\theta` for any real :math:`c` (Fromage's :math:`c < 0`).

    ``add_decayed_weights`` with optax's state (none for a constant, a step count for a
    schedule), without its check that the decay is non-negative: Fromage's factor
    :math:`1/\\sqrt{1+\\eta^2} - 1` is negative (it shrinks the params).
    """
    scheduled = callable(factor)

    def init(params):
        return AddDecayedWeightsState(tree.zeros_count()) if scheduled else EmptyState()

    def update(updates, state, params=None, **extra):
        checks.require_params("fromage", params, call="update(grads, state, params)")
        checks.check_trees_match("fromage", "updates", updates, params=params)
        if callable(factor):
            c, state = factor(state.count), AddDecayedWeightsState(tree.safe_increment(state.count))
        elif isinstance(factor, int | float) and factor == 0.0:  # a zero learning rate
            return updates, state
        else:
            c = factor
        return jax.tree.map(lambda g, p: g + c * p, updates, params), state

    return GradientTransformation(init, update)


def fromage(learning_rate: ScalarOrSchedule, min_norm: Scalar = 1e-6) -> GradientTransformation:
    """Fromage: steps of a fixed size relative to each layer's norm, then a shrink.

    For each leaf (a layer's weights), with :math:`\\lVert\\cdot\\rVert` its norm floored
    at ``min_norm``:

    .. math::
        \\theta_{t+1} = \\frac{1}{\\sqrt{1+\\eta_t^2}}\\Big(\\theta_t - \\eta_t
        \\frac{\\lVert\\theta_t\\rVert}{\\lVert g_t\\rVert}\\, g_t\\Big)

    so each step moves a layer by :math:`\\eta_t` of its own norm and the division keeps
    the norms from growing. Computed as optax's chain:
    :func:`gradtx.transforms.trust_ratio.scale_by_trust_ratio`, the learning rate
    :math:`\\eta_t/\\sqrt{1+\\eta_t^2}`, then :math:`(1/\\sqrt{1+\\eta_t^2} - 1)\\,\\theta_t`
    added. optax: ``optax.fromage``.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      min_norm: the floor :math:`\\ge 0` of both norms (keeps a zero layer from dividing by 0).

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx.learners.sign_family import fromage
      >>> opt = fromage(0.75)  # 1 / sqrt(1 + 0.75**2) = 0.8
      >>> params = {"w": jnp.array([3.0, 4.0])}  # norm 5
      >>> updates, state = opt.update({"w": jnp.array([1.0, 0.0])}, opt.init(params), params)
      >>> print(np.asarray(params["w"] + updates["w"]).round(4))  # 0.8 * (p - 0.75 * 5 * g)
      [-0.6  3.2]

    References:
      Bernstein, Vahdat, Yue and Liu, "On the distance between two neural networks and the
        stability of learning", 2020.

      optax: ``optax.fromage``.
    """
    with checks.named("fromage"):
        checks.check_interval("fromage", "learning_rate", learning_rate, checks.NONNEGATIVE)
        if callable(learning_rate):
            shrink = lambda count: 1 / (1 + learning_rate(count) ** 2) ** 0.5  # noqa: E731
            rate: ScalarOrSchedule = lambda count: shrink(count) * learning_rate(count)  # noqa: E731
            factor: ScalarOrSchedule = lambda count: shrink(count) - 1  # noqa: E731
        else:
            shrink = 1 / (1 + learning_rate**2) ** 0.5
            rate, factor = learning_rate * shrink, shrink - 1
        return float_leaves(
            chain(
                scale_by_trust_ratio(min_norm),
                scale_by_learning_rate(rate),
                _add_scaled_params(factor),
            )
        )


def noisy_sgd(
    learning_rate: ScalarOrSchedule,
    eta: Scalar = 0.01,
    gamma: Scalar = 0.55,
    key: jax.Array | int | None = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    """SGD on gradients with added Gaussian noise of decaying variance.

    .. math::
        \\theta_{t+1} = \\theta_t - \\eta_t \\big(g_t + \\sigma_t \\xi_t\\big), \\qquad
        \\sigma_t^2 = \\frac{\\eta}{t^\\gamma}, \\qquad \\xi_t \\sim \\mathcal N(0, I)

    with :math:`t` the 1-based step (see :func:`gradtx.transforms.noise.add_noise`: the
    same samples as optax's for the same key). optax: ``optax.noisy_sgd``.

    Args:
      learning_rate: :math:`\\eta_t \\ge 0` or a schedule.
      eta: the noise's initial variance :math:`\\eta \\ge 0`.
      gamma: :math:`\\gamma \\ge 0`, the exponent of the variance's decay.
      key: a typed key, raw key data or an integer seed; None (deprecated, as in optax)
        warns and uses seed 0.
      seed: optax's deprecated name for an integer ``key``.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from gradtx.learners.sign_family import noisy_sgd
      >>> opt = noisy_sgd(0.1, eta=0.0, key=jax.random.key(0))  # no noise: plain SGD
      >>> grads = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(updates["w"])
      [-0.1  0.2]

    References:
      Neelakantan et al., "Adding Gradient Noise Improves Learning for Very Deep
        Networks", 2015.

      optax: ``optax.noisy_sgd``.
    """
    with checks.named("noisy_sgd"):
        return float_leaves(
            chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate))
        )
