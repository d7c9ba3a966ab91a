"""Muon's blocks: momentum orthogonalised by a Newton–Schulz iteration, and its shape scaling.

A matrix :math:`G = U S V^\\top` is sent towards its polar factor :math:`U V^\\top` by an
odd matrix polynomial applied a few times; :func:`scale_by_muon` does it to a momentum,
:func:`scale_by_shape` rescales the result for the matrix's width. A leaf of any rank
is one matrix (or a batch of them) as :class:`MuonDimensionNumbers` say; without them a
matrix is ``(fan_in, fan_out)`` and a kernel of rank above 2 (flax's ``(h, w, c_in,
c_out)`` convolution, ``(in, heads, head_dim)`` attention) is the matrix of all its
axes but the last by the last, as Jordan's Muon flattens a convolution.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from gradtx import checks, tree
from gradtx.core import GradientTransformation, ScalarOrSchedule, init_empty_state
from gradtx.labels import spread_labels
from gradtx.transforms.adam import corrected_first_moment

DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
# Ahn et al.'s per-step coefficients, the last five triples of Dion's schedule (optax's 'dion').
DION_NS_COEFFS = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
NS_COEFFS_PRESETS = {"standard": DEFAULT_NS_COEFFS, "dion": DION_NS_COEFFS}
PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a weight form the rows and the columns of the matrix Muon orthogonalises.

    The matrix is :math:`W` in :math:`x W = y`: rows along ``reduction_axis`` (the
    input side, summed over with :math:`x`), columns along ``output_axis``. Several
    axes on one side are flattened together, in the order given; every other axis is
    a batch axis, each of its slices orthogonalised on its own. The default is a
    dense kernel ``(in, out)``.

    Attributes:
      reduction_axis: the input axis, or a sequence of them (negative ones count from the end).
      output_axis: the output axis, or a sequence of them.

    Examples:
      >>> import gradtx
      >>> conv = gradtx.contrib.MuonDimensionNumbers(reduction_axis=(0, 1, 2), output_axis=3)
      >>> heads = gradtx.contrib.MuonDimensionNumbers(0, (1, 2))  # (in, heads, head_dim)
      >>> per_head = gradtx.contrib.MuonDimensionNumbers(0, 2)  # axis 1 is a batch of heads

    References:
      optax: ``optax.contrib.MuonDimensionNumbers``.
    """

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


DimensionNumbersOrFn = MuonDimensionNumbers | Any | Callable[[Any], Any]


class MuonState(NamedTuple):
    """State of :func:`scale_by_muon`: optax's ``count``, momentum ``mu`` and ``ns_coeffs``."""

    count: jax.Array  # int32: updates applied so far
    mu: Any
    ns_coeffs: jax.Array  # (3,) or (steps, 3): the Newton-Schulz coefficients


def is_dimension_numbers(x: Any) -> bool:
    """Whether ``x`` is a :class:`MuonDimensionNumbers`, gradtx's or optax's (the same fields)."""
    return isinstance(x, tuple) and getattr(x, "_fields", None) == MuonDimensionNumbers._fields


def matrix_dimension_numbers(ndim: int) -> MuonDimensionNumbers | None:
    """The default matrix of a leaf of rank ``ndim``: ``(all axes but the last, the last)``.

    ``(0, 1)`` for a matrix, optax's default; ``((0, ..., ndim - 2), ndim - 1)`` for a
    kernel of higher rank (fan-in by fan-out in flax's layouts); None below rank 2.
    """
    if ndim < 2:
        return None
    return (
        MuonDimensionNumbers(0, 1)
        if ndim == 2
        else MuonDimensionNumbers(tuple(range(ndim - 1)), ndim - 1)
    )


def _axes(who: str, name: str, axes: Sequence[int] | int, shape: tuple, where: str) -> tuple:
    axes = (axes,) if isinstance(axes, int) else tuple(axes)
    ndim = len(shape)
    if not axes or any(not -ndim <= ax < ndim for ax in axes):
        raise ValueError(
            f"{who}: {name} {axes} must name axes of the leaf at {where}, of shape {shape}"
        )
    normalized = tuple(ax % ndim for ax in axes)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f"{who}: {name} {axes} repeats an axis (leaf at {where}, shape {shape})")
    return normalized


def _normalize(who: str, shape: tuple, dims: MuonDimensionNumbers, where: str):
    """``(reduction axes, output axes)`` as non-negative tuples, checked against ``shape``."""
    if len(shape) < 2:
        raise ValueError(
            f"{who}: the leaf at {where} has shape {shape}; Muon orthogonalises leaves of rank "
            f">= 2 (muon gives lower ranks to its AdamW branch)"
        )
    reduction = _axes(who, "reduction_axis", dims.reduction_axis, shape, where)
    output = _axes(who, "output_axis", dims.output_axis, shape, where)
    if set(reduction) & set(output):
        raise ValueError(
            f"{who}: reduction axes {reduction} and output axes {output} overlap for the "
            f"leaf at {where} of shape {shape} ({dims})"
        )
    return reduction, output


def _fans(shape: tuple, reduction: tuple, output: tuple) -> tuple[int, int]:
    return math.prod(shape[ax] for ax in reduction), math.prod(shape[ax] for ax in output)


class _Box:
    """A leaf for ``jax.tree``: keeps a dimension number (a NamedTuple) or None whole."""

    def __init__(self, value: Any):
        self.value = value


def _spread(
    who: str, given: Any, updates: Any, is_entry: Callable[[Any], bool], what: str
) -> list[Any]:
    """One entry of ``given`` (a tree of entries shaped like ``updates`` or a prefix of it)
    per leaf of ``updates``, in leaf order; None (at the root or at a leaf) stays None."""
    boxed = jax.tree.map(_Box, given, is_leaf=lambda x: x is None or is_entry(x))
    spread = spread_labels(boxed, updates, who, what=what, target="updates")
    return [box.value for box in jax.tree.leaves(spread)]


def dimension_numbers_per_leaf(
    who: str, weight_dimension_numbers: DimensionNumbersOrFn | None, updates: Any
) -> list[MuonDimensionNumbers | None]:
    """One :class:`MuonDimensionNumbers` (or None) per leaf of ``updates``, in leaf order.

    ``weight_dimension_numbers`` is a tree of them shaped like ``updates`` or a prefix
    of it (one for a whole subtree), or a function of ``updates`` returning one; None
    (at the root or at a leaf) is the leaf's default, :func:`matrix_dimension_numbers`.
    """
    dims = weight_dimension_numbers
    if callable(dims) and not is_dimension_numbers(dims):
        dims = dims(updates)
    return _spread(who, dims, updates, is_dimension_numbers, "weight_dimension_numbers")


def specs_per_leaf(who: str, param_specs: Any, updates: Any) -> list[Any]:
    """One ``PartitionSpec`` (or None: whole) per leaf of ``updates``, in leaf order.

    ``param_specs`` takes :func:`gradtx.make_train_step`'s forms: None, one
    ``PartitionSpec`` for every leaf, a tree of them shaped like ``updates`` or a prefix
    of it, or a function ``(path, leaf) -> PartitionSpec``.
    """
    flat = jax.tree_util.tree_flatten_with_path(updates)[0]
    if param_specs is None or isinstance(param_specs, PartitionSpec):
        return [param_specs] * len(flat)
    if callable(param_specs):
        return [param_specs(path, x) for path, x in flat]
    return _spread(who, param_specs, updates, lambda x: isinstance(x, PartitionSpec), "param_specs")


def whole_matrix(
    who: str, fn: Callable[[jax.Array], jax.Array], x: jax.Array, spec: Any, where: str
):
    """``fn`` on the whole matrix of which ``x`` may be a ``shard_map`` block (``spec``).

    Raises, rather than orthogonalise a block as if it were the matrix, when ``x``
    differs across a manual mesh axis that ``spec`` does not split over.
    """
    split = {name for _, names in tree.manual_split(spec, where) for name in names}
    stray = tree.varying_axes(x) - split
    if stray:
        raise ValueError(
            f"{who}: inside shard_map, the update at {where} differs across mesh axes "
            f"{sorted(stray)}, which its param_specs entry {spec} does not split: for a "
            f"matrix split over them, pass param_specs= (the PartitionSpecs of the "
            f"shard_map's in_specs); for per-device gradients, average them first "
            f"(jax.lax.pmean)"
        )
    return tree.gathered(fn, x, spec, where)


def _check_ns_coeffs(who: str, ns_coeffs: Any, ns_steps: int) -> Any:
    """The coefficients as given (a triple or a sequence of triples), checked; a preset by name."""
    if isinstance(ns_coeffs, str):
        if ns_coeffs not in NS_COEFFS_PRESETS:
            who, name = checks.reported_name(who, "ns_coeffs")
            raise ValueError(
                f"{who}: {name} must be a triple, a sequence of triples or one of "
                f"{sorted(NS_COEFFS_PRESETS)}, got {ns_coeffs!r}"
            )
        ns_coeffs = NS_COEFFS_PRESETS[ns_coeffs]
    shape = jnp.shape(jnp.asarray(ns_coeffs))
    reported, name = checks.reported_name(who, "ns_coeffs")
    if len(shape) not in (1, 2) or shape[-1] != 3:
        raise ValueError(
            f"{reported}: {name} must have shape (3,) or (n, 3), got shape {tuple(shape)}"
        )
    if len(shape) == 2 and shape[0] > ns_steps:
        _, steps_name = checks.reported_name(who, "ns_steps")
        raise ValueError(
            f"{reported}: {name} has {shape[0]} triples, more than {steps_name}={ns_steps}; "
            f"each triple is one Newton-Schulz step (optax raises here too)"
        )
    return ns_coeffs


def _first_step_rescaled(x: jax.Array, coeffs: jax.Array, eps: Any, preconditioning: str):
    """The first step of the 'aol' and 'schatten' preconditionings, which also normalise."""
    a = x @ x.T.conj()
    if preconditioning == "aol":
        # Turbo-Muon: scale row i by (sum_j |A_ij|)^-1/2, which bounds the spectral norm by 1.
        s = jnp.expand_dims(jax.lax.rsqrt(jnp.clip(jnp.abs(a).sum(axis=-1), min=eps)), -1)
        x, a = x * s, a * s * s.T
    else:
        # ||X||_{S4}^2 = ||X X^H||_F, an upper bound on the spectral norm squared.
        s = jax.lax.rsqrt(jnp.clip(jnp.linalg.norm(a, ord="fro"), min=eps))
        x, a = x * s, a * s**2
    b = coeffs[1] * a + coeffs[2] * a @ a
    return coeffs[0] * x + b @ x


def _newton_schulz_step(x: jax.Array, coeffs: jax.Array) -> jax.Array:
    # f(X) = c0 X + (c1 A + c2 A^2) X with A = X X^H: odd in the singular values of X.
    a = x @ x.T.conj()
    b = coeffs[1] * a + coeffs[2] * a @ a
    return coeffs[0] * x + b @ x


def _orthogonalize_matrix(
    x: jax.Array, ns_coeffs: jax.Array, ns_steps: int, preconditioning: str, eps: Any
) -> jax.Array:
    # f(X^T) = f(X)^T: iterate on the wide orientation, whose Gram matrix is the smaller.
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    if preconditioning == "frobenius":
        x = x / (jnp.linalg.norm(x, ord="fro") + eps)
    elif preconditioning == "spectral":
        x = x / (jnp.linalg.norm(x, ord=2) + eps)
    coeffs = ns_coeffs.astype(x.dtype)
    per_step = [coeffs] * ns_steps if coeffs.ndim == 1 else [coeffs[i] for i in range(len(coeffs))]
    for i, c in enumerate(per_step):  # unrolled: the number of steps is static
        if i == 0 and preconditioning in ("aol", "schatten"):
            x = _first_step_rescaled(x, c, eps, preconditioning)
        else:
            x = _newton_schulz_step(x, c)
    return x.T if transposed else x


def orthogonalize_via_newton_schulz(
    x: jax.Array,
    ns_coeffs: jax.Array,
    ns_steps: int = 5,
    preconditioning: Literal["frobenius", "spectral", "aol", "schatten"] = "frobenius",
    eps: float | jax.Array = 1e-8,
    dimension_numbers: MuonDimensionNumbers | None = None,
) -> jax.Array:
    """Send a matrix (or a batch of them) towards its polar factor :math:`U V^\\top`.

    With :math:`X_0` the matrix normalised by the preconditioning, each step is

    .. math::
        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k, \\qquad A_k = X_k X_k^{\\mathsf H},

    an odd polynomial in the singular values: with :math:`X_0 = U S V^{\\mathsf H}`,
    :math:`X_K = U p(S) V^{\\mathsf H}`. Jordan's coefficients (3.4445, -4.775, 2.0315)
    maximise the slope at 0, so five steps bring every singular value into roughly
    [0.7, 1.2] instead of exactly 1, which trains as well as :math:`U V^\\top`.

    Preconditionings, so that the singular values of :math:`X_0` are at most 1:
    ``'frobenius'`` :math:`X_0 = X / (\\|X\\|_F + \\epsilon)`; ``'spectral'``
    :math:`X / (\\|X\\|_2 + \\epsilon)` (an SVD: exact, costly); ``'aol'`` scales row
    :math:`i` by :math:`(\\sum_j |A_{ij}|)^{-1/2}` and ``'schatten'`` by
    :math:`\\|A\\|_F^{-1/2}`, both inside the first step (its Gram matrix reused, so
    nearly free), each denominator clipped below at :math:`\\epsilon`.

    Args:
      x: the array to orthogonalise: a matrix, or any rank with ``dimension_numbers``.
      ns_coeffs: :math:`(a, b, c)`, shape (3,) for the same every step, or (n, 3) for
        one triple per step (then ``ns_steps`` is not used).
      ns_steps: the number of steps with a single triple.
      preconditioning: ``'frobenius'``, ``'spectral'``, ``'aol'`` or ``'schatten'``.
      eps: :math:`\\epsilon`, in the preconditioning's denominator.
      dimension_numbers: which axes are the matrix (:class:`MuonDimensionNumbers`);
        None: ``(0, 1)`` for a matrix, all axes but the last by the last above rank 2.

    Returns:
      The orthogonalised array, shaped like ``x``.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> x = jnp.array([[3.0, 0.0], [0.0, 0.5]])
      >>> o = gradtx.contrib.orthogonalize_via_newton_schulz(x, jnp.array([1.5, -0.5, 0.0]), 20)
      >>> print(np.asarray(o).round(3))  # cubic Newton-Schulz: converges to U V^T = I
      [[1. 0.]
       [0. 1.]]

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
        (https://kellerjordan.github.io/posts/muon/).

      Boissin et al., "Turbo-Muon: Accelerating Orthogonality-Based Optimization with
        Pre-Conditioning", 2025 (arXiv:2512.04632), for ``'aol'``; Grishina et al.,
        "Accelerating Newton-Schulz Iteration for Orthogonalization via Chebyshev-type
        Polynomials", 2025 (arXiv:2506.10935), for ``'schatten'``.

      optax: ``optax.contrib._muon.orthogonalize_via_newton_schulz``.
    """
    who = "orthogonalize_via_newton_schulz"
    if preconditioning not in PRECONDITIONINGS:
        raise ValueError(
            f"{who}: preconditioning must be one of {PRECONDITIONINGS}, got {preconditioning!r}"
        )
    ns_coeffs = jnp.asarray(ns_coeffs)
    if ns_coeffs.ndim not in (1, 2) or ns_coeffs.shape[-1] != 3:
        raise ValueError(f"{who}: ns_coeffs must have shape (3,) or (n, 3), got {ns_coeffs.shape}")
    dims = dimension_numbers or matrix_dimension_numbers(x.ndim)
    if dims is None:
        raise ValueError(f"{who}: x must have rank >= 2, got shape {x.shape}")
    reduction, output = _normalize(who, x.shape, dims, "x")
    batch = tuple(ax for ax in range(x.ndim) if ax not in reduction + output)
    order = batch + reduction + output
    sizes = lambda axes: tuple(x.shape[ax] for ax in axes)  # noqa: E731
    flat = x.transpose(order).reshape(
        math.prod(sizes(batch)), math.prod(sizes(reduction)), math.prod(sizes(output))
    )
    flat = jax.vmap(lambda m: _orthogonalize_matrix(m, ns_coeffs, ns_steps, preconditioning, eps))(
        flat
    )
    inverse = tuple(sorted(range(x.ndim), key=order.__getitem__))
    return flat.reshape(sizes(batch) + sizes(reduction) + sizes(output)).transpose(inverse)


def scale_by_muon(
    ns_coeffs: Any = DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: ScalarOrSchedule = 0.95,
    eps: float | jax.Array = 1e-8,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: Literal["frobenius", "spectral", "aol", "schatten"] = "frobenius",
    weight_dimension_numbers: DimensionNumbersOrFn | None = None,
    param_specs: Any = None,
) -> GradientTransformation:
    """Muon's direction: a momentum, orthogonalised by Newton–Schulz (steepest descent in
    the spectral norm).

    With :math:`t` the 1-based number of this update:

    .. math::
        m_t = \\beta m_{t-1} + (1-\\beta) g_t, \\quad
        \\hat m_t = \\frac{\\beta\\, m_t}{1-\\beta^{t+1}} + \\frac{(1-\\beta)\\, g_t}{1-\\beta^t}
        \\ \\text{(nesterov; else } \\hat m_t = m_t / (1-\\beta^t)\\text{)}, \\quad
        u_t = \\mathrm{NS}(\\hat m_t),

    :math:`\\mathrm{NS}` being :func:`orthogonalize_via_newton_schulz` on each leaf's
    matrix. With ``adaptive``, :math:`u_t \\leftarrow \\langle \\hat m_t, u_t\\rangle\\, u_t`
    (the dual norm of the momentum times the direction, Bernstein and Newhouse); for a
    complex leaf the real part of :math:`\\operatorname{tr}(\\hat m_t^{\\mathsf H} u_t)`.

    Every leaf must be of rank >= 2: a leaf's ``weight_dimension_numbers`` say which axes
    are its matrix; without them (None, the default, at the root or at a leaf) a matrix
    is ``(fan_in, fan_out)`` and a kernel of higher rank is all its axes but the last by
    the last (flax's ``(h, w, c_in, c_out)`` convolution is the ``(h w c_in, c_out)``
    matrix; optax raises for it). :func:`gradtx.contrib.muon` sends lower ranks to AdamW.

    Args:
      ns_coeffs: :math:`(a, b, c)`, a sequence of triples (one Newton–Schulz step each,
        at most ``ns_steps`` of them), or a preset: ``'standard'``, ``'dion'``.
      ns_steps: Newton–Schulz steps with a single triple, an integer >= 0.
      beta: :math:`\\beta` in [0, 1), or a schedule.
      eps: :math:`\\epsilon \\ge 0`, in the preconditioning's denominator.
      mu_dtype: optax's dtype of the stored momentum (rounded to nearest; None: the params').
      nesterov: Nesterov's look-ahead momentum.
      adaptive: scale by the dual norm :math:`\\langle \\hat m_t, u_t\\rangle`.
      preconditioning: ``'frobenius'``, ``'spectral'``, ``'aol'`` or ``'schatten'`` (see
        :func:`orthogonalize_via_newton_schulz`).
      weight_dimension_numbers: a tree of :class:`MuonDimensionNumbers` (or None) shaped
        like the params or a prefix of it, or a function of the updates returning one.
      param_specs: inside ``jax.shard_map``, the ``PartitionSpec`` of each leaf in its
        ``in_specs`` (one for all, a tree or a prefix of it, or ``(path, leaf) -> spec``):
        a leaf split over manual axes is all-gathered, orthogonalised whole on every
        device, and each device keeps its block. Ignored outside ``shard_map``, where
        XLA partitions the iteration itself. None: every leaf is whole.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.contrib.scale_by_muon(ns_coeffs="dion")
      >>> grads = {"w": jnp.array([[2.0, 0.0], [0.0, -0.1]])}
      >>> updates, state = tx.update(grads, tx.init(grads))
      >>> print(np.asarray(updates["w"]).round(1))  # about U V^T = sign of the diagonal
      [[ 1.  0.]
       [ 0. -1.]]

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
        (https://kellerjordan.github.io/posts/muon/; code: github.com/KellerJordan/Muon).

      Bernstein and Newhouse, "Old Optimizer, New Norm: An Anthology", 2024
        (arXiv:2409.20325), for ``adaptive``.

      Ahn et al., "Dion: Distributed Orthonormalized Updates", 2025 (arXiv:2504.05295);
        Amsel et al., "The Polar Express: Optimal Matrix Sign Methods and Their Application
        to the Muon Algorithm", 2025 (arXiv:2505.16932), for per-step coefficients.

      optax: ``optax.contrib.scale_by_muon``.
    """
    who = "scale_by_muon"
    ns_steps = checks.check_length(who, "ns_steps", ns_steps, allow_zero=True, wording="integer")
    checks.check_hyperparams(who, beta=(beta, checks.DECAY), eps=(eps, checks.NONNEGATIVE))
    if preconditioning not in PRECONDITIONINGS:
        reported, name = checks.reported_name(who, "preconditioning")
        raise ValueError(
            f"{reported}: {name} must be one of {PRECONDITIONINGS}, got {preconditioning!r}"
        )
    coeffs = _check_ns_coeffs(who, ns_coeffs, ns_steps)
    mu_dtype = checks.check_optax_dtype(who, "mu_dtype", mu_dtype)

    def init(params):
        _all_leaf_dims(params)  # a leaf Muon cannot take fails here, not at the first update
        return MuonState(
            tree.zeros_count(),
            tree.state_zeros_like(params, mu_dtype, "mu_dtype"),
            jnp.asarray(coeffs),
        )

    def _leaf_dims(path, x, dims):
        dims = dims or matrix_dimension_numbers(jnp.ndim(x))
        if dims is None:
            raise ValueError(
                f"{who}: the leaf at {checks.path_name(path)} has shape {jnp.shape(x)}; Muon "
                f"orthogonalises leaves of rank >= 2 (muon gives lower ranks to its AdamW "
                f"branch; or give this leaf another transform with gradtx.partition)"
            )
        _normalize(who, jnp.shape(x), dims, checks.path_name(path))
        return dims

    def _all_leaf_dims(tree_):
        flat = jax.tree_util.tree_flatten_with_path(tree_)[0]
        given = dimension_numbers_per_leaf(who, weight_dimension_numbers, tree_)
        return [_leaf_dims(path, x, d) for (path, x), d in zip(flat, given, strict=True)]

    def update(updates, state, params=None, **extra):
        checks.check_moments(who, updates, state, "mu")
        dims = _all_leaf_dims(updates)
        count = tree.safe_increment(state.count)
        decay = tree.resolve(beta, state.count)
        mu_stored, mu = tree.plain_moment(
            state.mu, mu_dtype, lambda m: tree.update_moment(updates, m, decay, 1)
        )
        mu_hat = corrected_first_moment(mu, updates, decay, count, nesterov)

        def direction(m, d):
            o = orthogonalize_via_newton_schulz(
                m, state.ns_coeffs, ns_steps, preconditioning, eps, d
            )
            if not adaptive:
                return o
            if jnp.iscomplexobj(o):
                return jnp.real(jnp.sum(jnp.conj(m) * o)).astype(o.dtype) * o
            return jnp.sum(m * o) * o

        flat = jax.tree_util.tree_flatten_with_path(mu_hat)[0]
        specs = specs_per_leaf(who, param_specs, updates)
        out = [
            whole_matrix(who, functools.partial(direction, d=d), m, spec, checks.path_name(path))
            for (path, m), d, spec in zip(flat, dims, specs, strict=True)
        ]
        out = jax.tree.unflatten(jax.tree.structure(updates), out)
        return out, MuonState(count, mu_stored, state.ns_coeffs)

    return GradientTransformation(init, update)


def scale_by_shape(
    weight_dimension_numbers: DimensionNumbersOrFn | None = None,
    consistent_rms: float | jax.Array | None = None,
    param_specs: Any = None,
) -> GradientTransformation:
    """Scale each leaf by a factor of its matrix's shape, so one learning rate fits all widths.

    With :math:`n_{in}, n_{out}` the products of the reduction and output axes:

    .. math::
        u \\leftarrow \\sqrt{\\max(1, n_{out} / n_{in})}\\; u \\quad\\text{(Jordan's width
        scaling)}, \\qquad
        u \\leftarrow \\rho \\sqrt{\\max(n_{in}, n_{out})}\\; u
        \\quad\\text{(consistent RMS } \\rho\\text{)}.

    An orthogonal :math:`n_{in} \\times n_{out}` matrix has RMS
    :math:`1/\\sqrt{\\max(n_{in}, n_{out})}`; ``consistent_rms`` = 0.2 makes Muon's
    update as large as AdamW's typically is (Liu et al.), so AdamW's learning rate and
    weight decay can be reused.

    Args:
      weight_dimension_numbers: as in :func:`scale_by_muon` (None: the leaf's default matrix).
      consistent_rms: :math:`\\rho \\ge 0`; None: Jordan's width scaling.
      param_specs: inside ``jax.shard_map``, the leaves' ``PartitionSpec`` (as in
        :func:`scale_by_muon`): the fans are the whole matrix's, not a block's.

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> tx = gradtx.transforms.muon.scale_by_shape()
      >>> updates, _ = tx.update({"w": jnp.ones((2, 8))}, tx.init(None))
      >>> float(updates["w"][0, 0])  # sqrt(8 / 2)
      2.0

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024.

      Liu et al., "Muon is Scalable for LLM Training", 2025 (arXiv:2502.16982).

      optax: ``optax.contrib._muon.scale_by_shape``.
    """
    who = "scale_by_shape"
    checks.check_interval(who, "consistent_rms", consistent_rms, checks.NONNEGATIVE)

    def update(updates, state, params=None, **extra):
        flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
        out = []
        for (path, u), dims, spec in zip(
            flat,
            dimension_numbers_per_leaf(who, weight_dimension_numbers, updates),
            specs_per_leaf(who, param_specs, updates),
            strict=True,
        ):
            where = checks.path_name(path)
            dims = dims or matrix_dimension_numbers(u.ndim)
            if dims is None:
                raise ValueError(f"{who}: the leaf at {where} has rank < 2")
            shape = tree.global_shape(u, spec, where)
            fan_in, fan_out = _fans(shape, *_normalize(who, shape, dims, where))
            if u.size == 0:  # an empty matrix: nothing to scale (and no ratio of fans)
                out.append(u)
                continue
            if consistent_rms is None:
                scale = jnp.sqrt(jnp.maximum(1, fan_out / fan_in))
            else:
                scale = jnp.sqrt(jnp.maximum(fan_in, fan_out)) * consistent_rms
            out.append(scale * u)
        return jax.tree.unflatten(treedef, out), state

    return GradientTransformation(init_empty_state, update)


__all__ = [
    "DEFAULT_NS_COEFFS",
    "MuonDimensionNumbers",
    "MuonState",
    "matrix_dimension_numbers",
    "orthogonalize_via_newton_schulz",
    "scale_by_muon",
    "scale_by_shape",
]
