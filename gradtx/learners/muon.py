"""Muon: orthogonalised momentum for the weight matrices, AdamW for every other leaf."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Literal

import jax

from gradtx import checks
from gradtx.combine import MaskedState, PartitionState, _merge, _only
from gradtx.core import GradientTransformation, ScalarOrSchedule, chain, float_leaves
from gradtx.learners.basic import adamw
from gradtx.transforms import add_decayed_weights, scale_by_learning_rate
from gradtx.transforms.muon import (
    DEFAULT_NS_COEFFS,
    DimensionNumbersOrFn,
    dimension_numbers_per_leaf,
    matrix_dimension_numbers,
    scale_by_muon,
    scale_by_shape,
)

_ADAM = {
    "b1": "adam_b1",
    "b2": "adam_b2",
    "eps_root": "adam_eps_root",
    "weight_decay": "adam_weight_decay",
    "learning_rate": "adam_learning_rate",
}


def _by_label(
    transforms: Mapping[Hashable, GradientTransformation], labels: Callable[[Any], Any]
) -> GradientTransformation:
    """optax's ``partition`` for two fixed groups, either of which may be empty.

    :func:`gradtx.partition` rejects a transform with no leaves; a model of matrices
    alone leaves Muon's AdamW branch empty, which optax allows. The state is
    :class:`gradtx.PartitionState`, as optax's: ``state.inner_states['muon']``.
    """

    def init(params):
        tree = labels(params)
        return PartitionState(
            {
                label: MaskedState(t.init(_only(params, tree, label)))
                for label, t in transforms.items()
            }
        )

    def update(updates, state, params=None, **extra):
        tree = labels(updates if params is None else params)
        outputs, inner = {}, {}
        for label, t in transforms.items():
            outputs[label], new = t.update(
                _only(updates, tree, label),
                state.inner_states[label].inner_state,
                None if params is None else _only(params, tree, label),
            )
            inner[label] = MaskedState(new)
        return _merge(tree, outputs), PartitionState(inner)

    return GradientTransformation(init, update)


def muon(
    learning_rate: ScalarOrSchedule,
    ns_coeffs: Any = DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: ScalarOrSchedule = 0.95,
    eps: float | jax.Array = 1e-8,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: Any | Callable[[Any], Any] | None = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: Literal["frobenius", "spectral", "aol", "schatten"] = "frobenius",
    adam_b1: float | jax.Array = 0.9,
    adam_b2: float | jax.Array = 0.999,
    adam_eps_root: float | jax.Array = 0.0,
    adam_weight_decay: ScalarOrSchedule = 0.0,
    adam_learning_rate: ScalarOrSchedule | None = None,
    muon_weight_dimension_numbers: DimensionNumbersOrFn | None = None,
    consistent_rms: float | jax.Array | None = None,
    orthogonalize_higher_rank: bool = True,
    param_specs: Any = None,
) -> GradientTransformation:
    """Muon: MomentUm Orthogonalized by Newton–Schulz, for the matrices; AdamW for the rest.

    On a weight matrix :math:`W` (``fan_in x fan_out``), with :math:`\\hat m_t` the
    (Nesterov) momentum of :func:`gradtx.contrib.scale_by_muon`:

    .. math::
        W_{t+1} = W_t - \\eta_t \\left( s\\, \\mathrm{NS}(\\hat m_t) + \\lambda_t W_t \\right),
        \\qquad s = \\sqrt{\\max(1, n_{out}/n_{in})}
        \\ \\text{or}\\ \\rho \\sqrt{\\max(n_{in}, n_{out})}\\ \\text{(consistent\\_rms)},

    :math:`\\mathrm{NS}` pushing every singular value of the momentum to about 1 (the
    steepest descent direction in the spectral norm). Every other leaf takes
    ``adamw(adam_learning_rate, adam_b1, adam_b2, eps, adam_eps_root, mu_dtype,
    adam_weight_decay, nesterov=nesterov)``.

    Which leaves are Muon's: with ``muon_weight_dimension_numbers`` (a tree of
    :class:`gradtx.contrib.MuonDimensionNumbers` shaped like the params or a prefix of
    it, or a function of the params returning one), the leaves given dimension numbers,
    the ones given None going to AdamW, exactly as in optax. Without them, every leaf
    of rank 2, ``(fan_in, fan_out)``, as in optax, and (gradtx's
    ``orthogonalize_higher_rank``, on by default) every leaf of higher rank as the
    matrix of all its axes but the last by the last: flax's ``Conv`` kernel ``(h, w,
    c_in, c_out)`` is the ``(h w c_in, c_out)`` matrix, flax's ``DenseGeneral``
    ``(in, heads, head_dim)`` the ``(in heads, head_dim)`` one (give dimension
    numbers for another grouping), as Jordan's Muon flattens a convolution. optax
    gives those kernels to AdamW; ``orthogonalize_higher_rank=False`` does too.
    Scalars and vectors (biases, norms' scales) always go to AdamW, as in optax.

    Args:
      learning_rate: :math:`\\eta \\ge 0` or a schedule (Muon's; AdamW's too unless
        ``adam_learning_rate`` is given).
      ns_coeffs: the Newton–Schulz :math:`(a, b, c)`, a sequence of triples (one per
        step), or a preset name: ``'standard'`` (Jordan's), ``'dion'``.
      ns_steps: Newton–Schulz steps with a single triple.
      beta: Muon's momentum decay :math:`\\beta` in [0, 1).
      eps: :math:`\\epsilon \\ge 0`, in the preconditioning's denominator and AdamW's.
      weight_decay: Muon's decoupled decay :math:`\\lambda \\ge 0` (times the learning
        rate, as in torch), or a schedule.
      weight_decay_mask: a tree of bools (or a function of the params) saying which of
        Muon's leaves decay.
      mu_dtype: dtype of the stored first moments of both branches (optax's rounding).
      nesterov: Nesterov momentum in both branches (NAdamW for the rest).
      adaptive: scale Muon's direction by the dual norm of the momentum.
      preconditioning: ``'frobenius'``, ``'spectral'``, ``'aol'`` or ``'schatten'``
        (see :func:`gradtx.contrib.orthogonalize_via_newton_schulz`).
      adam_b1: AdamW's :math:`\\beta_1` in [0, 1).
      adam_b2: AdamW's :math:`\\beta_2` in [0, 1).
      adam_eps_root: AdamW's :math:`\\epsilon_{root} \\ge 0`.
      adam_weight_decay: AdamW's decoupled decay, or a schedule.
      adam_learning_rate: AdamW's learning rate or schedule; None: ``learning_rate``.
      muon_weight_dimension_numbers: which leaves are Muon's and which axes are their
        matrices (see above); None: the default rule.
      consistent_rms: :math:`\\rho \\ge 0` (0.2 matches AdamW's RMS); None: Jordan's
        width scaling.
      orthogonalize_higher_rank: without ``muon_weight_dimension_numbers``, Muon also
        takes the leaves of rank above 2 (gradtx's default); False: AdamW takes them,
        as in optax.
      param_specs: inside ``jax.shard_map``, the params' ``PartitionSpec`` in its
        ``in_specs`` (one, a tree or a prefix, or ``(path, leaf) -> spec``): a matrix
        split over manual mesh axes is gathered, orthogonalised whole on every device,
        and each device keeps its block; shape scaling uses the whole matrix's fans.
        Not needed under ``jit`` with sharded arrays (XLA partitions the iteration).

    Examples:
      >>> import jax.numpy as jnp, numpy as np, gradtx
      >>> opt = gradtx.contrib.muon(0.1)
      >>> grads = {"w": jnp.array([[2.0, 0.0], [0.0, -0.1]]), "b": jnp.array([1.0, -2.0])}
      >>> updates, state = opt.update(grads, opt.init(grads))
      >>> print(np.diag(updates["w"]).round(2))  # -0.1 * about U V^T = -0.1 * sign(diag)
      [-0.07  0.08]
      >>> print(np.asarray(updates["b"]).round(4))  # NAdamW: -0.1 * (1 + 0.9 / 1.9) * sign(g)
      [-0.1474  0.1474]

    References:
      Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
        (https://kellerjordan.github.io/posts/muon/).

      Liu et al., "Muon is Scalable for LLM Training", 2025 (arXiv:2502.16982), for
        ``consistent_rms`` and the weight decay.

      Bernstein and Newhouse, "Old Optimizer, New Norm: An Anthology", 2024
        (arXiv:2409.20325), for ``adaptive``.

      Boissin et al., "Turbo-Muon", 2025 (arXiv:2512.04632), for ``'aol'``; Grishina et
        al., 2025 (arXiv:2506.10935), for ``'schatten'``; Ahn et al., "Dion", 2025
        (arXiv:2504.05295), and Amsel et al., "The Polar Express", 2025
        (arXiv:2505.16932), for per-step coefficients.

      optax: ``optax.contrib.muon``.
    """
    who = "muon"

    def leaf_dims(params):
        """Each leaf's dimension numbers, None for AdamW's leaves, as a list in leaf order."""
        if muon_weight_dimension_numbers is not None:
            return dimension_numbers_per_leaf(who, muon_weight_dimension_numbers, params)
        return [
            matrix_dimension_numbers(x.ndim) if x.ndim == 2 or orthogonalize_higher_rank else None
            for x in jax.tree.leaves(params)
        ]

    def labels(params):
        names = ["adam" if d is None else "muon" for d in leaf_dims(params)]
        return jax.tree.unflatten(jax.tree.structure(params), names)

    def muon_dims(muon_updates):
        # Muon's branch sees AdamW's leaves as None: its leaves' dims, in its leaf order.
        return [d for d in leaf_dims(muon_updates) if d is not None]

    def muon_branch_dims(muon_updates):
        return jax.tree.unflatten(jax.tree.structure(muon_updates), muon_dims(muon_updates))

    with checks.named(who, adamw=_ADAM):
        muon_branch = chain(
            scale_by_muon(
                ns_coeffs,
                ns_steps,
                beta,
                eps,
                mu_dtype,
                nesterov=nesterov,
                adaptive=adaptive,
                preconditioning=preconditioning,
                weight_dimension_numbers=muon_branch_dims,
                param_specs=param_specs,
            ),
            scale_by_shape(muon_branch_dims, consistent_rms, param_specs),
            add_decayed_weights(weight_decay, weight_decay_mask),
            scale_by_learning_rate(learning_rate),
        )
        adam_branch = adamw(
            learning_rate if adam_learning_rate is None else adam_learning_rate,
            adam_b1,
            adam_b2,
            eps,
            adam_eps_root,
            mu_dtype,
            adam_weight_decay,
            nesterov=nesterov,
        )
    return float_leaves(_by_label({"muon": muon_branch, "adam": adam_branch}, labels))
