"""torch.optim's Muon, with torch's arguments, defaults and numbers (``_single_tensor_muon``).

torch's Muon takes matrices only, and orthogonalises in bfloat16: the momentum is
rounded to bfloat16 and every product of the Newton–Schulz iteration is summed in
float32 and rounded to bfloat16 again, as torch's CPU and CUDA kernels do. gradtx
does the same roundings (``jax.lax.reduce_precision``, which XLA keeps where it
could drop a ``float32 -> bfloat16 -> float32`` round trip), so its steps are
torch's to the last bit of the bfloat16 direction on the matrices tested, and the
params agree to 1e-12 in float64. For gradtx's own Muon, in the params' precision,
see :func:`gradtx.contrib.muon`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradtx import checks, tree
from gradtx.core import GradientTransformation
from gradtx.torch_optim._torch import learner
from gradtx.transforms.muon import specs_per_leaf, whole_matrix

__all__ = ["TorchMuonState", "muon"]

_ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


class TorchMuonState(NamedTuple):
    """State of torch's Muon: the update count and each matrix's ``momentum_buffer``."""

    count: jax.Array  # int32: updates applied so far
    momentum_buffer: Any


def _bf16(x: jax.Array) -> jax.Array:
    """``x`` rounded to bfloat16 as torch's ``.bfloat16()`` does, kept in float32.

    A float64 value goes through float32 first, as c10::BFloat16 converts it.
    """
    return jax.lax.reduce_precision(x.astype(jnp.float32), exponent_bits=8, mantissa_bits=7)


_BITS = {2: jnp.int16, 4: jnp.int32, 8: jnp.int64}


def _rounded(x: jax.Array, opaque_zero: jax.Array) -> jax.Array:
    """``x`` as it is, through an integer add of a zero that XLA cannot see is zero.

    XLA contracts a product and a sum into a fused multiply-add wherever it fuses
    them ("always allow FMA fusion" on CPU; GPUs too), which skips the product's
    rounding; a product that passes through an integer op is rounded first.
    """
    bits = jax.lax.bitcast_convert_type(x, _BITS[x.dtype.itemsize])
    return jax.lax.bitcast_convert_type(bits + opaque_zero.astype(bits.dtype), x.dtype)


def _fma(a: Any, x: jax.Array, y: jax.Array, opaque_zero: jax.Array) -> jax.Array:
    """:math:`a x + y` with one rounding, as the fused multiply-adds of torch's kernels.

    Dekker's product (Veltkamp's split of each factor into halves whose products are
    exact) and Knuth's two-sum give :math:`a x + y` as a rounded sum and its error;
    adding the errors back rounds as the fused multiply-add does except when that last
    sum ties. The rounded intermediates go through :func:`_rounded`, so that XLA's own
    contractions cannot change them.
    """
    dtype = jnp.result_type(x, y)
    a, x, y = (jnp.asarray(v, dtype) for v in (a, x, y))
    factor = 2.0 ** ((jnp.finfo(dtype).nmant + 2) // 2) + 1

    def split(v):
        t = _rounded(factor * v, opaque_zero)
        high = t - (t - v)
        return high, v - high

    (a_high, a_low), (x_high, x_low) = split(a), split(x)
    product = _rounded(a * x, opaque_zero)
    product_error = ((a_high * x_high - product) + a_high * x_low + a_low * x_high) + a_low * x_low
    total = product + y
    virtual = total - product
    sum_error = (product - (total - virtual)) + (y - virtual)
    return total + (product_error + sum_error)


def _zeropower_via_newtonschulz(
    g: jax.Array, ns_coefficients: tuple, ns_steps: int, eps: Any, opaque_zero: jax.Array
) -> jax.Array:
    """torch's ``_zeropower_via_newtonschulz``, rounded where torch's bfloat16 kernels round.

    ``torch.addmm(C, A, B, beta=b, alpha=c)`` on bfloat16 sums :math:`AB` in float32,
    rounds :math:`c(AB)` to float32, adds :math:`bC` to it in one fused multiply-add
    and rounds the result to bfloat16. The products of bfloat16 values are exact in
    float32, so the matrix products need no special precision.
    """
    a, b, c = (jnp.asarray(k, jnp.float32) for k in ns_coefficients)
    x = _bf16(g)
    transposed = g.shape[0] > g.shape[1]
    if transposed:
        x = x.T
    norm = _bf16(jnp.sqrt(jnp.sum(jnp.square(x))))
    x = _bf16(x / _bf16(jnp.maximum(norm, jnp.asarray(eps, jnp.float32))))
    for _ in range(ns_steps):
        gram = _bf16(x @ x.T)
        gram_update = _bf16(_fma(b, gram, _rounded(c * (gram @ gram), opaque_zero), opaque_zero))
        x = _bf16(_fma(a, x, gram_update @ x, opaque_zero))
    return x.T if transposed else x


def _lerp(start: jax.Array, end: jax.Array, weight: Any, opaque_zero: jax.Array) -> jax.Array:
    """torch's ``lerp``: a fused multiply-add from the nearer end (weight 1 gives ``end``)."""
    weight = jnp.asarray(weight, start.dtype)
    small = jnp.abs(weight) < 0.5
    return _fma(
        jnp.where(small, weight, weight - 1), end - start, jnp.where(small, start, end), opaque_zero
    )


def _adjusted_ratio(adjust_lr_fn: str | None, shape: tuple) -> float:
    """torch's ``_adjust_lr`` without the ``lr``: a Python float of the matrix's shape."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


def _check_matrices(params: Any) -> None:
    for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
        where = checks.path_name(path)
        if jnp.ndim(p) != 2:
            raise ValueError(
                f"muon: the param at {where} has shape {jnp.shape(p)}; torch's Muon only "
                f"supports 2D parameters (give the others AdamW, e.g. with gradtx.partition)"
            )
        if jnp.iscomplexobj(p):
            raise ValueError(
                f"muon: the param at {where} is {jnp.result_type(p)}; torch's Muon does not "
                f"support complex parameters"
            )


def _torch_muon(
    lr: Any,
    weight_decay: Any,
    momentum: Any,
    nesterov: bool,
    ns_coefficients: tuple,
    eps: Any,
    ns_steps: int,
    adjust_lr_fn: str | None,
    param_specs: Any,
) -> GradientTransformation:
    def init(params):
        _check_matrices(params)
        return TorchMuonState(tree.zeros_count(), tree.state_zeros_like(params))

    def update(updates, state, params=None, **extra):
        checks.check_moments("muon", updates, state, "momentum_buffer")
        _check_matrices(updates)
        checks.require_params("muon", params, "to decay", "update(grads, state, params)")
        checks.check_trees_match("muon", "updates", updates, params=params)
        opaque_zero = jnp.minimum(state.count, 0)  # zero, but not to XLA (see _rounded)
        rate = tree.resolve(lr, state.count)
        mu = tree.resolve(momentum, state.count)
        decay = tree.resolve(weight_decay, state.count)
        # torch's buf.lerp_(grad, 1 - momentum), and grad.lerp(buf, momentum) for Nesterov.
        buffers = jax.tree.map(
            lambda b, g: _lerp(b, g, 1 - mu, opaque_zero), state.momentum_buffer, updates
        )
        directions = (
            jax.tree.map(lambda g, b: _lerp(g, b, mu, opaque_zero), updates, buffers)
            if nesterov
            else buffers
        )

        def step(path, d, p, spec):
            where = checks.path_name(path)
            ortho = whole_matrix(
                "muon",
                lambda d: _zeropower_via_newtonschulz(
                    d, ns_coefficients, ns_steps, eps, opaque_zero
                ),
                d,
                spec,
                where,
            ).astype(p.dtype)
            # param.mul_(1 - lr * weight_decay), then param.add_(ortho, alpha=-adjusted_lr),
            # a fused multiply-add; the difference from p is exact for a step below |p|.
            decayed = _rounded(p * jnp.asarray(1 - rate * decay, p.dtype), opaque_zero)
            ratio = _adjusted_ratio(adjust_lr_fn, tree.global_shape(p, spec, where))
            return _fma(-(rate * ratio), ortho, decayed, opaque_zero) - p

        flat, treedef = jax.tree_util.tree_flatten_with_path(directions)
        specs = specs_per_leaf("muon", param_specs, directions)
        out = jax.tree.unflatten(
            treedef,
            [
                step(path, d, p, spec)
                for (path, d), p, spec in zip(flat, jax.tree.leaves(params), specs, strict=True)
            ],
        )
        return out, TorchMuonState(tree.safe_increment(state.count), buffers)

    return GradientTransformation(init, update)


def muon(
    lr: Any = 1e-3,
    weight_decay: Any = 0.1,
    momentum: Any = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.775, 2.0315),
    eps: float = 1e-07,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
    *,
    param_specs: Any = None,
) -> GradientTransformation:
    """torch's Muon: momentum orthogonalised by a bfloat16 Newton–Schulz iteration, for matrices.

    .. math::
        B_t = \\mu B_{t-1} + (1-\\mu) g_t, \\quad
        \\tilde B_t = \\begin{cases} \\mu B_t + (1-\\mu) g_t & \\text{nesterov} \\\\
        B_t & \\text{otherwise} \\end{cases}, \\quad
        O_t = \\mathrm{NS}^{(a,b,c)}_k(\\tilde B_t; \\epsilon),

    .. math::
        \\theta_t = (1 - \\eta_t \\lambda)\\, \\theta_{t-1} - \\eta_t\\, r\\, O_t, \\qquad
        r = \\sqrt{\\max(1, A/B)}\\ \\text{(None, "original")}\\ \\text{or}\\
        0.2 \\sqrt{\\max(A, B)}\\ \\text{("match\\_rms\\_adamw")}

    for a param of shape :math:`(A, B)` (torch's ``(out, in)`` layout: ``"original"``
    scales up tall matrices, as Jordan's code). :math:`\\mathrm{NS}` normalises
    :math:`\\tilde B_t` by its Frobenius norm (at least :math:`\\epsilon`), iterates
    :math:`X \\leftarrow aX + (bA + cA^2)X`, :math:`A = XX^\\top`, :math:`k` times on the
    wide orientation, in bfloat16 as torch does (see the module). torch's buffer is
    ``lerp`` towards the gradient, so its momentum is an average, not a sum.

    Every param must be a real matrix: torch raises for others at construction, gradtx
    at ``init`` (a ``ValueError`` naming the leaf); give biases and norms another
    learner with :func:`gradtx.partition`, as torch's docs do with two optimizers.
    ``lr``, ``weight_decay`` and ``momentum`` are numbers, arrays, tracers (``jax.vmap``
    over them works) or schedules of the update count.

    Args:
      lr: :math:`\\eta \\ge 0`, or a schedule.
      weight_decay: decoupled decay :math:`\\lambda \\ge 0`, or a schedule.
      momentum: :math:`\\mu \\ge 0`, or a schedule.
      nesterov: orthogonalise the look-ahead :math:`\\tilde B_t`.
      ns_coefficients: :math:`(a, b, c)`, three numbers.
      eps: :math:`\\epsilon \\ge 0`, the least norm divided by.
      ns_steps: :math:`k`, an integer in [0, 100).
      adjust_lr_fn: None or ``"original"`` (Jordan's), or ``"match_rms_adamw"`` (Liu et al.).
      param_specs: gradtx's, for ``jax.shard_map``: the params' ``PartitionSpec`` in its
        ``in_specs`` (as :func:`gradtx.contrib.muon`'s): a matrix split over manual mesh
        axes is gathered, orthogonalised whole, and each device keeps its block.

    Examples:
      >>> import jax.numpy as jnp, numpy as np
      >>> from gradtx import torch_optim
      >>> opt = torch_optim.muon(lr=0.1, weight_decay=0.0)
      >>> params = {"w": jnp.array([[1.0, 0.0], [0.0, 1.0]])}
      >>> grads = {"w": jnp.array([[2.0, 0.0], [0.0, -0.1]])}
      >>> updates, state = opt.update(grads, opt.init(params), params)
      >>> print(np.diag(updates["w"]).round(2))  # -0.1 * about sign(diag)
      [-0.07  0.08]

    References:
      torch: ``torch.optim.Muon`` (``_single_tensor_muon``).

      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
        (https://kellerjordan.github.io/posts/muon/).

      Liu et al., "Muon is Scalable for LLM Training", 2025 (arXiv:2502.16982), for
        ``"match_rms_adamw"``.
    """
    who = "muon"
    checks.check_hyperparams(
        who,
        lr=(lr, checks.NONNEGATIVE),
        weight_decay=(weight_decay, checks.NONNEGATIVE),
        momentum=(momentum, checks.NONNEGATIVE),
        eps=(eps, checks.NONNEGATIVE),
    )
    if adjust_lr_fn not in _ADJUST_LR_FNS:
        raise ValueError(
            f"{who}: adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got "
            f"{adjust_lr_fn!r} (torch: 'Adjust learning rate function {adjust_lr_fn} is not "
            f"supported')"
        )
    ns_steps = checks.check_length(who, "ns_steps", ns_steps, allow_zero=True, wording="integer")
    if ns_steps >= 100:
        raise ValueError(
            f"{who}: ns_steps must be less than 100 for computational efficiency (as torch), "
            f"got {ns_steps}"
        )
    if isinstance(ns_coefficients, str) or len(ns_coefficients) != 3:
        raise ValueError(
            f"{who}: ns_coefficients must be a tuple of exactly 3 values, got {ns_coefficients!r}"
        )
    return learner(
        _torch_muon(
            lr, weight_decay, momentum, nesterov, tuple(ns_coefficients), eps, ns_steps,
            adjust_lr_fn, param_specs,
        ),
        real_view=False,
    )  # fmt: skip
