"""PowerSGD: the mean of the devices' gradients as a low-rank product, torch's DDP hook.

:func:`powersgd_mean` replaces ``jax.lax.pmean`` of the gradients inside
``jax.shard_map`` or ``jax.pmap``, as :func:`gradtx.compressed_mean` does for
the byte-level schemes: each matrix goes over the wire as two thin float32
factors, ``psum``\\ ed, instead of itself.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks
from gradtx.core import GradientTransformation
from gradtx.tree import bound_axis_size, check_not_yet_reduced, tracks_varying, varying_over

_WHO = "powersgd_mean"


class PowerSGDState(NamedTuple):
    """State of :func:`powersgd_mean`, every leaf with a leading axis of one row per device.

    Inside ``shard_map`` the spec ``PartitionSpec(axis_name)`` for the whole state
    stacks the devices' rows, as for :class:`gradtx.CompressedMeanState`.
    """

    count: jax.Array  # int32 (1,): steps taken, compressed or not (torch's state.iter)
    # Per leaf, float32 (complex64 for complex leaves) of shape (1, *leaf.shape): torch's
    # error_dict, what this device's (gradient + error) and the returned mean differ by;
    # shape (1, 0) for leaves that are not floating. () with error_feedback=False.
    error: Any
    # Per leaf, float32 (1, m, r): the right factor Q carried to the next step (warm
    # start), identical on every device; (1, 0) for a leaf sent whole. () without warm start.
    q: Any


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _matrix_shape(x: Any) -> tuple[int, int]:
    """torch's ``tensor.view(tensor.shape[0], -1)`` of the leaf's float view (complex as pairs)."""
    shape = tuple(jnp.shape(x)) + ((2,) if jnp.iscomplexobj(x) else ())
    return (shape[0], math.prod(shape[1:])) if len(shape) > 0 else (1, 1)


def _as_matrix(x: jax.Array) -> jax.Array:
    if jnp.iscomplexobj(x):
        x = jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)
    return x.astype(jnp.float32).reshape(_matrix_shape(x))


def _from_matrix(m: jax.Array, like: Any, dtype: Any) -> jax.Array:
    if jnp.issubdtype(dtype, jnp.complexfloating):
        pairs = m.reshape(*jnp.shape(like), 2)
        return jax.lax.complex(pairs[..., 0], pairs[..., 1]).astype(dtype)
    return m.reshape(jnp.shape(like)).astype(dtype)


def _residual_dtype(x: Any) -> Any:
    return jnp.complex64 if jnp.iscomplexobj(x) else jnp.float32


def _normalized(col: jax.Array, epsilon: float) -> jax.Array:
    norm = jnp.linalg.norm(col, axis=0, keepdims=True)
    if epsilon:
        return col / (norm + epsilon)
    # torch divides by zero into NaN here (and logs that epsilon would help); a column of
    # zeros stays zero instead, which makes a zero gradient's product zero.
    return jnp.where(norm > 0, col / jnp.where(norm > 0, norm, 1), 0)


def _orthogonalize(matrix: jax.Array, epsilon: float) -> jax.Array:
    """torch's ``_orthogonalize``: Gram-Schmidt for rank <= 2, else a QR's orthonormal factor."""
    rank = matrix.shape[1]
    if rank > 2:
        return jnp.linalg.qr(matrix)[0]
    cols = []
    rest = matrix
    for i in range(rank):
        col = _normalized(rest[:, :1], epsilon)
        cols.append(col)
        rest = rest[:, 1:]
        if i + 1 < rank:
            rest = rest - jnp.sum(col * rest, axis=0, keepdims=True) * col
    return jnp.concatenate(cols, axis=1)


def powersgd_mean(
    axis_name: Any,
    rank: int = 1,
    *,
    start_step: int = 1000,
    min_compression_rate: float = 2.0,
    error_feedback: bool = True,
    warm_start: bool = True,
    orthogonalization_epsilon: float = 0.0,
    seed: int = 0,
) -> GradientTransformation:
    r"""The mean of each device's gradients over ``axis_name``, by PowerSGD's low-rank exchange.

    torch's DDP communication hook ``powerSGD_hook`` (``PowerSGDState``'s
    arguments under the names in parentheses), for ``jax.shard_map``/``jax.pmap``
    in place of ``jax.lax.pmean(grads, axis_name)``. The first ``start_step``
    steps are a plain float32 mean. After them, each floating leaf is viewed as
    the matrix :math:`M_i` of :math:`n \times m` = (its first dimension, the rest)
    (complex leaves as their (real, imaginary) pairs), plus its error with error
    feedback. A leaf is sent whole (``psum``) unless
    :math:`(n + m)\, r\, \rho < n m`, with :math:`r = \min(n, m, \text{rank})`
    and :math:`\rho` = ``min_compression_rate``; every other one, on device
    :math:`i` of :math:`N`, with :math:`Q` orthonormalized first:

    .. math::

        P = \mathrm{orth}\Big(\textstyle\sum_i M_i Q\Big), \quad
        Q \leftarrow \tfrac1N \textstyle\sum_i M_i^\top P, \quad
        \text{mean} = P Q^\top, \quad
        e_i \leftarrow M_i - \text{mean}

    with one ``psum`` for all whole leaves, one for all :math:`P` and one for all
    :math:`Q`, float32, :math:`(n + m) r` numbers per matrix instead of
    :math:`n m`. As in torch, the error of a leaf sent whole is also
    :math:`M_i` minus the mean: those errors add up to zero over the devices, so
    they leave the mean unchanged. :math:`Q` starts as a standard normal matrix,
    the same on every device, and with ``warm_start`` it carries over to the
    next step (one power iteration per step); without, a new one is drawn each
    step. :math:`\mathrm{orth}` is Gram-Schmidt for :math:`r \le 2` and a QR
    factorization above, as in torch, where a column of zeros stays zero (torch
    gives NaN there; ``orthogonalization_epsilon`` is torch's remedy and
    divides by :math:`\|c\| + \epsilon`).

    Error-feedback bound: as for :func:`gradtx.compressed_mean`, the sum of the
    returned means over :math:`K` steps differs from the sum of the exact means
    by the mean of the current errors, :math:`-\frac1N\sum_i e_{i,K}`, not by a
    sum over steps (the errors telescope).

    Args:
      axis_name: the data axis of the enclosing ``shard_map`` or ``pmap`` (one name).
      rank: the rank :math:`r` of the approximation (``matrix_approximation_rank``).
      start_step: steps of the plain mean before PowerSGD starts
        (``start_powerSGD_iter``; torch's default 1000 and its advice: about 10% of
        the run, no fewer than the warm-up steps). 0 compresses from the first step.
      min_compression_rate: the :math:`\rho` above (``min_compression_rate``).
      error_feedback: keep each device's error and add it to the next gradient
        (``use_error_feedback``).
      warm_start: keep :math:`Q` from step to step (``warm_start``).
      orthogonalization_epsilon: the :math:`\epsilon` above.
      seed: the seed of the starting :math:`Q` (``random_seed``). gradtx draws it
        with ``jax.random``, torch with its own generator, so the two start from
        different matrices; set ``state.q`` to compare them step for step.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jax.sharding import PartitionSpec as P
      >>> from gradtx.powersgd import powersgd_mean
      >>> mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
      >>> tx = powersgd_mean("data", rank=1, start_step=0)
      >>> def step(stacked):
      ...     grads = stacked[0]  # this device's own gradient
      ...     return tx.update(grads, tx.init(grads))[0]
      >>> mean = jax.shard_map(step, mesh=mesh, in_specs=P("data"), out_specs=P())
      >>> g = jnp.outer(jnp.arange(1.0, 5.0), jnp.arange(1.0, 7.0))  # rank 1: sent exactly
      >>> bool(jnp.allclose(jax.jit(mean)(g[None]), g))
      True

    References:
      Vogels, Karimireddy, Jaggi (2019), "PowerSGD: Practical Low-Rank Gradient
      Compression for Distributed Optimization", NeurIPS, arXiv:1905.13727.

      PyTorch: ``torch.distributed.algorithms.ddp_comm_hooks.powerSGD_hook``.
    """
    if axis_name is None or isinstance(axis_name, tuple | list):
        raise ValueError(
            f"{_WHO}: axis_name must name the one data axis of the enclosing shard_map or "
            f"pmap to average over, got {axis_name!r}"
        )
    rank = checks.check_length(_WHO, "rank", rank, wording="positive")
    start_step = checks.check_length(
        _WHO, "start_step", start_step, allow_zero=True, at_most=2**31 - 1, wording="integer"
    )
    checks.check_interval(_WHO, "min_compression_rate", min_compression_rate, checks.POSITIVE)
    checks.check_interval(
        _WHO, "orthogonalization_epsilon", orthogonalization_epsilon, checks.NONNEGATIVE
    )
    for name, flag in (("error_feedback", error_feedback), ("warm_start", warm_start)):
        if not isinstance(flag, bool | np.bool_):
            raise ValueError(f"{_WHO}: {name} must be True or False, got {flag!r}")
    epsilon = float(orthogonalization_epsilon)

    def ranks_for(leaves: list[Any]) -> dict[int, int]:
        """The rank of each leaf that is worth compressing, by its index."""
        out = {}
        for i, x in enumerate(leaves):
            if not _is_float(x) or jnp.ndim(x) == 0:
                continue
            n, m = _matrix_shape(x)
            r = min(n, m, rank)
            if (n + m) * r * min_compression_rate < n * m:
                out[i] = r
        return out

    def starting_q(leaves: list[Any], ranks: dict[int, int], draw: Any) -> list[Any]:
        key = jax.random.fold_in(jax.random.key(seed), draw)
        return [
            jax.random.normal(jax.random.fold_in(key, i), (_matrix_shape(x)[1], ranks[i]))
            if i in ranks
            else None
            for i, x in enumerate(leaves)
        ]

    def init(params):
        bound_axis_size(_WHO, axis_name)
        leaves, treedef = jax.tree.flatten(params)
        ranks = ranks_for(leaves)
        placeholder = jnp.zeros((1, 0), jnp.float32)
        error = ()
        if error_feedback:
            error = treedef.unflatten(
                [
                    jnp.zeros((1, *jnp.shape(x)), _residual_dtype(x))
                    if _is_float(x)
                    else placeholder
                    for x in leaves
                ]
            )
        q = ()
        if warm_start:
            drawn = starting_q(leaves, ranks, 0)
            q = treedef.unflatten([placeholder if d is None else d[None] for d in drawn])
        return varying_over(axis_name, PowerSGDState(jnp.zeros((1,), jnp.int32), error, q))

    def compressed(leaves, state, ranks, devices):
        """Means and new state fields after ``start_step``: torch's hook, leaf by leaf."""
        errors: list[Any] = jax.tree.leaves(state.error) if error_feedback else [None] * len(leaves)
        matrices = {}
        for i, g in enumerate(leaves):
            if _is_float(g):
                m = _as_matrix(g)
                if errors[i] is not None:
                    m = m + _as_matrix(errors[i][0])
                matrices[i] = m
        if warm_start:
            qs = {i: q[0] for i, q in enumerate(jax.tree.leaves(state.q)) if i in ranks}
        else:
            qs = dict(enumerate(starting_q(leaves, ranks, state.count[0])))
        qs = {i: _orthogonalize(qs[i], epsilon) for i in ranks}
        whole = [i for i in matrices if i not in ranks]
        means = {}
        if whole:
            flat = jnp.concatenate([matrices[i].reshape(-1) for i in whole])
            total = jax.lax.psum(flat, axis_name) / devices
            offset = 0
            for i in whole:
                size = matrices[i].size
                means[i] = total[offset : offset + size].reshape(matrices[i].shape)
                offset += size
        if ranks:
            order = list(ranks)
            ps = jax.lax.psum([matrices[i] @ qs[i] for i in order], axis_name)
            ps = {i: _orthogonalize(p, epsilon) for i, p in zip(order, ps, strict=True)}
            new_qs = jax.lax.psum([matrices[i].T @ ps[i] for i in order], axis_name)
            for i, q in zip(order, new_qs, strict=True):
                qs[i] = q / devices
                means[i] = ps[i] @ qs[i].T
        new_errors = [
            None if e is None else (matrices[i] - means[i]) if i in matrices else e
            for i, e in enumerate(errors)
        ]
        return means, new_errors, qs

    def update(updates, state, params=None, **extra):
        del params, extra
        devices = bound_axis_size(_WHO, axis_name)
        check_not_yet_reduced(_WHO, axis_name, updates)
        leaves, treedef = jax.tree.flatten(updates)
        ranks = ranks_for(leaves)
        _check_state(leaves, treedef, state, ranks, error_feedback, warm_start)
        # A state set from outside (a replicated Q) is per device too.
        state = varying_over(axis_name, state)

        def plain(_):
            means = {i: jax.lax.pmean(g, axis_name) for i, g in enumerate(leaves) if _is_float(g)}
            return means, state.error, state.q

        def low_rank(_):
            means, errors, qs = compressed(leaves, state, ranks, devices)
            means = {i: _from_matrix(m, leaves[i], leaves[i].dtype) for i, m in means.items()}
            error = state.error
            if error_feedback:
                olds = jax.tree.leaves(state.error)
                error = treedef.unflatten(
                    [
                        old if new is None else _from_matrix(new, leaves[i], old.dtype)[None]
                        for i, (old, new) in enumerate(zip(olds, errors, strict=True))
                    ]
                )
            q = state.q
            if warm_start:
                olds = jax.tree.leaves(state.q)
                q = treedef.unflatten(
                    [
                        varying_over(axis_name, qs[i][None]) if i in qs else old
                        for i, old in enumerate(olds)
                    ]
                )
            return means, error, q  # the errors vary per device already, as the state does

        if start_step == 0:
            means, error, q = low_rank(None)
        else:
            count = state.count[0]
            if tracks_varying(axis_name):  # the same everywhere, but typed per device:
                count = jax.lax.pmax(count, axis_name)  # cond needs one predicate for all
            means, error, q = jax.lax.cond(count < start_step, plain, low_rank, None)
        out = [means.get(i, g) for i, g in enumerate(leaves)]
        return treedef.unflatten(out), PowerSGDState(state.count + 1, error, q)

    return GradientTransformation(init, update)


def _check_state(leaves, treedef, state, ranks, error_feedback, warm_start) -> None:
    if not isinstance(state, PowerSGDState):
        raise ValueError(f"{_WHO}: state must be a PowerSGDState, got {type(state).__name__}")
    fields = []
    if error_feedback:
        fields.append(("error", state.error, lambda i, x: (1, *jnp.shape(x))))
    if warm_start:
        fields.append(("q", state.q, lambda i, x: (1, _matrix_shape(x)[1], ranks[i])))
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(treedef.unflatten(leaves))[0]]
    for name, tree, want_of in fields:
        got = jax.tree.leaves(tree)
        if len(got) != len(leaves):
            raise ValueError(
                f"{_WHO}: state.{name} has {len(got)} leaves but the updates have "
                f"{len(leaves)}: init the state from params shaped like the gradients"
            )
        for i, (x, r) in enumerate(zip(leaves, got, strict=True)):
            if not _is_float(x) or (name == "q" and i not in ranks):
                continue
            want = want_of(i, x)
            if jnp.shape(r) != want:
                raise ValueError(
                    f"{_WHO}: state.{name}{checks.path_name(paths[i])} has shape "
                    f"{jnp.shape(r)}, expected {want} for the update of shape {jnp.shape(x)}: "
                    f"init the state from params shaped like the gradients, inside the same "
                    f"shard_map/pmap"
                )
