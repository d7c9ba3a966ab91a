"""Learners for large batches and little memory: Adafactor, LAMB, LARS, and DP-SGD.

LAMB and LARS rescale each layer's step by a trust ratio (the layer's weight norm
over its update norm) so that very large batches can take large learning rates;
Adafactor keeps factored second moments (memory linear, not quadratic, in a
matrix's sides); DP-SGD clips and noises per-example gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradtx import checks
from gradtx.combine import masked
from gradtx.core import (
    GradientTransformation,
    Scalar,
    ScalarOrSchedule,
    chain,
    float_leaves,
    identity,
)
from gradtx.transforms.adam import scale_by_adam
from gradtx.transforms.averages import ema, trace
from gradtx.transforms.factored import scale_by_factored_rms
from gradtx.transforms.gradient_ops import clip_by_block_rms
from gradtx.transforms.private import differentially_private_aggregate
from gradtx.transforms.scaling import scale, scale_by_learning_rate
from gradtx.transforms.trust_ratio import scale_by_param_block_rms, scale_by_trust_ratio
from gradtx.transforms.weight_decay import add_decayed_weights

Mask = Any | Callable[[Any], Any] | None


def adafactor(
    learning_rate: ScalarOrSchedule | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: Scalar = 0.8,
    decay_offset: int | Scalar = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: Scalar | None = 1.0,
    momentum: Scalar | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: ScalarOrSchedule | None = None,
    eps: Scalar = 1e-30,
    factored: bool = True,
    weight_decay_mask: Mask = None,
    *,
    state_dtype: Any = None,
) -> GradientTransformation:
    """Adafactor: factored second moments, update clipping, steps relative to the params.

    With :math:`\\hat v_t` the factored estimate of the squared gradients
    (:func:`gradtx.scale_by_factored_rms`, decay :math:`1 - (t+1-t_0)^{-c}`):

    .. math::
        u_t = g_t / \\sqrt{\\hat v_t}, \\quad
        u_t \\leftarrow \\frac{u_t}{\\max(1, \\operatorname{rms}(u_t) / d)}, \\quad
        u_t \\leftarrow \\eta_t \\max(\\operatorname{rms}(\\theta_t), 10^{-3})\\, u_t,

    .. math::
        m_t = \\beta m_{t-1} + (1-\\beta) u_t, \\qquad
        \\theta_{t+1} = \\theta_t - (m_t + \\lambda_t \\theta_t)

    per leaf (the rms is the leaf's), each stage only where its argument is given:
    no clipping for ``clipping_threshold=None``, no learning rate for None, no parameter
    scale for ``multiply_by_parameter_scale=False``, no momentum (:math:`m_t = u_t`) for
    ``momentum=None``, no decay for ``weight_decay_rate=None``.

    optax: ``optax.adafactor`` at the defaults (its chain, block for block).

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule; None: no scaling (the parameter
        scale then sets the step size alone).
      min_dim_size_to_factor: factor a leaf's moments only if its second-largest axis has
        at least this many entries.
      decay_rate: :math:`c \\ge 0`, the exponent of the second moment's decay schedule.
      decay_offset: :math:`t_0`, for fine-tuning: the step the new phase starts at.
      multiply_by_parameter_scale: scale each leaf's step by the rms of its params.
      clipping_threshold: :math:`d > 0`, the largest rms of a leaf's update (Adafactor's
        paper uses 1); None: no clipping.
      momentum: :math:`\\beta` in [0, 1) for an average of the updates (uses memory like
        the params); None: none.
      dtype_momentum: optax's dtype of the stored momentum, rounded to nearest (None:
        the params'; complex params need None or a complex dtype).
      weight_decay_rate: :math:`\\lambda \\ge 0` or a schedule, decoupled (not scaled by
        the learning rate); None: none.
      eps: :math:`\\epsilon \\ge 0`, added to the squared gradients.
      factored: factor the second moments (False: full ones, as RMSProp without momentum).
      weight_decay_mask: tree of bools (or function of params) saying which leaves decay.
      state_dtype: dtype of the stored second-moment statistics, e.g. ``jnp.bfloat16``
        (rounded stochastically); the momentum is stored in ``dtype_momentum``.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.adafactor(0.1, multiply_by_parameter_scale=False)
      >>> params = {"w": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # the first step is -lr * sign(g)
      [-0.1  0.1]

    References:
      Shazeer and Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
        2018.

      optax: ``optax.adafactor``.
    """
    renames = dict(
        scale_by_factored_rms={"step_offset": "decay_offset", "epsilon": "eps"},
        clip_by_block_rms={"threshold": "clipping_threshold"},
        ema={"decay": "momentum", "accumulator_dtype": "dtype_momentum"},
        add_decayed_weights={"weight_decay": "weight_decay_rate", "mask": "weight_decay_mask"},
    )
    with checks.named("adafactor", **renames):
        blocks = [
            scale_by_factored_rms(
                factored,
                decay_rate,
                decay_offset,
                min_dim_size_to_factor,
                eps,
                state_dtype=state_dtype,
            )
        ]
        if clipping_threshold is not None:
            blocks.append(clip_by_block_rms(clipping_threshold))
        if learning_rate is not None:
            blocks.append(scale_by_learning_rate(learning_rate, flip_sign=False))
        if multiply_by_parameter_scale:
            blocks.append(scale_by_param_block_rms())
        if momentum is not None:
            blocks.append(_momentum(momentum, dtype_momentum))
        else:  # no block stores in it, so none checks it
            checks.check_optax_dtype("adafactor", "dtype_momentum", dtype_momentum)
        if weight_decay_rate is not None:
            blocks.append(add_decayed_weights(weight_decay_rate, weight_decay_mask))
        # Descent: every stage above kept the sign of the gradient.
        blocks.append(scale(-1))
        return float_leaves(chain(*blocks))


def _momentum(momentum: Any, dtype_momentum: Any) -> GradientTransformation:
    """Adafactor's momentum: an average of the updates, without debiasing, kept in
    ``dtype_momentum``, whose init names adafactor's argument for a complex leaf it
    cannot hold (optax would drop the leaf's imaginary parts)."""
    average = ema(momentum, debias=False, accumulator_dtype=dtype_momentum)
    real = dtype_momentum is not None and not jnp.issubdtype(dtype_momentum, jnp.complexfloating)

    def init(params):
        for path, x in jax.tree_util.tree_flatten_with_path(params)[0]:
            if real and jnp.iscomplexobj(x):
                raise ValueError(
                    f"adafactor: dtype_momentum={jnp.dtype(dtype_momentum).name} cannot hold "
                    f"the momentum of the complex leaf at {checks.path_name(path)} "
                    f"({jnp.result_type(x)}); pass dtype_momentum=None (the params' dtype)"
                )
        return average.init(params)

    return GradientTransformation(init, average.update)


def lamb(
    learning_rate: ScalarOrSchedule,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-6,
    eps_root: Scalar = 0.0,
    weight_decay: ScalarOrSchedule = 0.0,
    mask: Mask = None,
    *,
    mu_dtype: Any = None,
    state_dtype: Any = None,
) -> GradientTransformation:
    """LAMB: AdamW's direction with each layer's step set by its trust ratio.

    With :math:`\\hat m_t, \\hat v_t` Adam's bias-corrected moments
    (:func:`gradtx.scale_by_adam`), per leaf:

    .. math::
        r_t = \\frac{\\hat m_t}{\\sqrt{\\hat v_t + \\epsilon_{root}} + \\epsilon}
        + \\lambda_t \\theta_t, \\qquad
        \\theta_{t+1} = \\theta_t
        - \\eta_t \\frac{\\lVert\\theta_t\\rVert}{\\lVert r_t\\rVert}\\, r_t

    (the ratio is 1 for a leaf whose params or :math:`r_t` are zero; see
    :func:`gradtx.scale_by_trust_ratio`).

    optax: ``optax.lamb`` at the defaults.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      b1: :math:`\\beta_1` in [0, 1).
      b2: :math:`\\beta_2` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, outside the root.
      eps_root: :math:`\\epsilon_{root} \\ge 0`, inside the root.
      weight_decay: decoupled coefficient :math:`\\lambda \\ge 0` or a schedule.
      mask: tree of bools (or function of params) saying which leaves decay.
      mu_dtype: optax's dtype of Adam's stored first moment, rounded to nearest
        (optax's ``scale_by_adam``'s; None: the params'). Not with ``state_dtype``.
      state_dtype: dtype of the stored moments, e.g. ``jnp.bfloat16`` to halve
        their memory; arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.lamb(0.1)
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # norm 0.1 * |params| = 0.5
      [-0.3536 -0.3536]

    References:
      You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
        minutes", 2020.

      optax: ``optax.lamb``.
    """
    with checks.named("lamb"):
        return float_leaves(
            chain(
                scale_by_adam(b1, b2, eps, eps_root, mu_dtype, state_dtype=state_dtype),
                add_decayed_weights(weight_decay, mask),
                scale_by_trust_ratio(),
                scale_by_learning_rate(learning_rate),
            )
        )


def lars(
    learning_rate: ScalarOrSchedule,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Mask = True,
    trust_coefficient: Scalar = 0.001,
    eps: Scalar = 0.0,
    trust_ratio_mask: Mask = True,
    momentum: ScalarOrSchedule = 0.9,
    nesterov: bool = False,
    *,
    accumulator_dtype: Any = None,
    state_dtype: Any = None,
) -> GradientTransformation:
    """LARS: SGD with momentum, each layer's step scaled by its trust ratio.

    Per leaf, with :math:`c` the trust coefficient:

    .. math::
        r_t = g_t + \\lambda_t \\theta_t, \\quad
        s_t = \\eta_t \\frac{c\\, \\lVert\\theta_t\\rVert}{\\lVert r_t\\rVert + \\epsilon}\\, r_t,
        \\quad m_t = \\mu m_{t-1} + s_t, \\quad \\theta_{t+1} = \\theta_t - m_t

    (or :math:`-(\\mu m_t + s_t)` with Nesterov). The ratio is 1 for a leaf whose params
    or :math:`r_t` are zero and for the leaves ``trust_ratio_mask`` leaves out; the decay
    applies where ``weight_decay_mask`` is True.

    optax: ``optax.lars`` at the defaults.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      weight_decay: coupled coefficient :math:`\\lambda \\ge 0` or a schedule.
      weight_decay_mask: tree of bools (or function of params): which leaves decay.
      trust_coefficient: :math:`c \\ge 0`.
      eps: :math:`\\epsilon \\ge 0`, added to the update norm.
      trust_ratio_mask: tree of bools (or function of params): which leaves get the
        trust ratio (commonly not the biases and norm scales).
      momentum: :math:`\\mu` in [0, 1) or a schedule.
      nesterov: Nesterov's look-ahead momentum.
      accumulator_dtype: optax's dtype of the stored momentum, rounded to nearest
        (None: the params'). Not with ``state_dtype``.
      state_dtype: dtype of the stored momentum, e.g. ``jnp.bfloat16`` (rounded
        stochastically); arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.lars(1.0, trust_coefficient=0.1)
      >>> params = {"w": jnp.array([3.0, 4.0])}
      >>> updates, state = opt.update(params, opt.init(params), params)  # grads = params
      >>> print(np.asarray(updates["w"]).round(4))  # 0.1 * |params| / |g| * g
      [-0.3 -0.4]

    References:
      You, Gitman and Ginsburg, "Large Batch Training of Convolutional Networks", 2017.

      optax: ``optax.lars``.
    """
    with checks.named("lars", trace={"decay": "momentum"}):
        return float_leaves(
            chain(
                add_decayed_weights(weight_decay, weight_decay_mask),
                masked(scale_by_trust_ratio(trust_coefficient=trust_coefficient, eps=eps),
                       trust_ratio_mask),
                scale_by_learning_rate(learning_rate),
                trace(momentum, nesterov, accumulator_dtype, state_dtype=state_dtype),
            )
        )  # fmt: skip


def dpsgd(
    learning_rate: ScalarOrSchedule,
    l2_norm_clip: Scalar,
    noise_multiplier: Scalar,
    seed: int,
    momentum: ScalarOrSchedule | None = None,
    nesterov: bool = False,
    *,
    accumulator_dtype: Any = None,
    state_dtype: Any = None,
) -> GradientTransformation:
    """DP-SGD: SGD on per-example gradients clipped, summed and noised for privacy.

    For a batch of :math:`B` per-example gradients :math:`g_i` (every leaf with the
    batch on axis 0) and clip norm :math:`C`:

    .. math::
        \\bar g_t = \\frac1B \\Big( \\sum_i g_i \\min\\big(1, \\tfrac{C}{\\lVert g_i\\rVert}\\big)
        + \\mathcal N(0, \\sigma^2 C^2 I) \\Big), \\qquad
        \\theta_{t+1} = \\theta_t - \\eta_t \\bar g_t

    with heavy-ball (or Nesterov) momentum on :math:`\\bar g_t` when ``momentum`` is
    given. The noise is optax's for the same seed (see
    :func:`gradtx.contrib.differentially_private_aggregate`).

    optax: ``optax.contrib.dpsgd``.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule.
      l2_norm_clip: :math:`C > 0`, the largest norm of one example's gradient.
      noise_multiplier: :math:`\\sigma \\ge 0`, the noise's standard deviation over :math:`C`.
      seed: the integer seed of the noise's key (a ``jax.random.key`` also works); keep
        it secret.
      momentum: :math:`\\mu` in [0, 1) or a schedule; None: plain SGD.
      nesterov: Nesterov's look-ahead momentum.
      accumulator_dtype: optax's dtype of the stored momentum, rounded to nearest
        (None: the params'). Not with ``state_dtype``.
      state_dtype: dtype of the stored momentum, e.g. ``jnp.bfloat16`` (rounded
        stochastically); arithmetic stays in the gradients' dtype.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.contrib.dpsgd(0.1, l2_norm_clip=1.0, noise_multiplier=0.0, seed=0)
      >>> per_example = {"w": jnp.array([[3.0, 4.0], [0.3, 0.4]])}  # two examples
      >>> updates, state = opt.update(per_example, opt.init({"w": jnp.zeros(2)}))
      >>> print(np.asarray(updates["w"]).round(4))  # -0.1 * (g_1 / 5 + g_2) / 2
      [-0.045 -0.06 ]

    References:
      Abadi et al., "Deep Learning with Differential Privacy", 2016.

      optax: ``optax.contrib.dpsgd``.
    """
    with checks.named("dpsgd", trace={"decay": "momentum"}):
        if momentum is None:  # no block keeps moments, so none checks the dtypes
            checks.check_state_dtype("dpsgd", state_dtype)
            checks.check_optax_dtype("dpsgd", "accumulator_dtype", accumulator_dtype, state_dtype)
        return float_leaves(
            chain(
                differentially_private_aggregate(l2_norm_clip, noise_multiplier, seed),
                (
                    trace(momentum, nesterov, accumulator_dtype, state_dtype=state_dtype)
                    if momentum is not None
                    else identity()
                ),
                scale_by_learning_rate(learning_rate),
            )
        )
