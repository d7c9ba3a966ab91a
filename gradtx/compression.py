"""Compressed gradient exchange over a data axis: MXNet's 2bit, 1-bit SGD, int8, fp16, bf16.

:func:`compressed_mean` replaces ``jax.lax.pmean`` of the gradients inside
``jax.shard_map`` or ``jax.pmap``. It is built on JAX's own collectives: for
bf16 one ``psum`` in bfloat16; for the other schemes the two-phase compressed
all-reduce of 1-bit Adam, one ``all_to_all`` and one ``all_gather`` of packed
``uint8`` bytes per step for the whole tree (the leaves are bucketed into one
buffer), with error feedback on both sides (2bit: on the workers, as MXNet's).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradtx import checks
from gradtx.core import GradientTransformation
from gradtx.powersgd import powersgd_mean
from gradtx.tree import bound_axis_size, check_not_yet_reduced, tracks_varying

SCHEMES = ("bf16", "fp16", "int8", "2bit", "1bit")
EXCHANGES = (*SCHEMES, "powersgd")  # what compression= takes: powersgd is gradtx.powersgd_mean
_WHO = "compressed_mean"
_FLOAT16_MAX = float(np.finfo(np.float16).max)  # 65504
_INT8_LEVELS = 127.0  # symmetric: -127..127, so that -x encodes as the negation of x
_DEFAULT_THRESHOLD = 0.5  # MXNet's compression_params default for type '2bit'
# Values per packed byte; fp16 takes two bytes per value, int8 one.
_PER_BYTE = {"fp16": 1, "int8": 1, "2bit": 4, "1bit": 8}
_BYTES_PER_VALUE = {"fp16": 2, "int8": 1, "2bit": 1, "1bit": 1}  # per packed unit
# MXNet's 2bit codes: 0b11 is +threshold, 0b10 is -threshold, 0b00 is zero; the first
# value sits in the byte's two highest bits (its posbits 0xc0, negbits 0x80).
_TWO_BIT_SHIFTS = np.array([6, 4, 2, 0], np.uint8)
_ONE_BIT_SHIFTS = np.array([7, 6, 5, 4, 3, 2, 1, 0], np.uint8)  # np.packbits' bit order


class CompressedMeanState(NamedTuple):
    """State of :func:`compressed_mean`: the error-feedback residuals, one row per device.

    Each leaf has a leading axis of length 1 on every device, so that inside
    ``shard_map`` the spec ``PartitionSpec(axis_name)`` (a prefix for the whole
    state) stacks the devices' rows into a global array of ``axis_size`` rows; a
    param also split over other mesh axes takes ``PartitionSpec(axis_name,
    *param_spec)`` for its worker residual and ``PartitionSpec(axis_name, those
    axes)`` for its server residual. Both fields are ``()`` for ``"bf16"`` and
    for ``error_feedback=False``.
    """

    # Per leaf, float32 (complex64 for complex leaves) of shape (1, *leaf.shape): what this
    # device's compression left out so far; shape (1, 0) for leaves that are not floating.
    worker_residual: Any
    # Per leaf, float32 of shape (1, chunk): the residual of the chunk of the flattened,
    # padded leaf (its float view) that this device averages and recompresses.
    server_residual: Any


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How one leaf is laid out: ``size`` real entries, padded to ``devices * chunk``."""

    size: int
    chunk: int
    devices: int
    scales_per_row: int  # f32 scales sent with each chunk (0: fp16 and 2bit send none)
    payload_per_row: int  # packed bytes per chunk
    gathered_per_row: int  # bytes per chunk of the all_gather (2bit's: its vote counts)

    @property
    def row_bytes(self) -> int:
        return self.payload_per_row + 4 * self.scales_per_row

    @property
    def gathered_row_bytes(self) -> int:
        return self.gathered_per_row + 4 * self.scales_per_row


def _plan(scheme: str, size: int, devices: int, block_size: int | None) -> _Plan:
    quantum = _PER_BYTE[scheme]  # a chunk holds whole packed bytes
    chunk = -(-size // (devices * quantum)) * quantum
    if scheme in ("fp16", "2bit"):
        scales = 0  # fp16's scale is global (a pmax), 2bit's is the threshold
    else:
        scales = -(-chunk // block_size) if block_size else 1
    payload = chunk // _PER_BYTE[scheme] * _BYTES_PER_VALUE[scheme]
    gathered = chunk * jnp.dtype(_vote_dtype(devices)).itemsize if scheme == "2bit" else payload
    return _Plan(size, chunk, devices, scales, payload, gathered)


def _vote_dtype(devices: int) -> Any:
    """The integer that holds a sum of ``devices`` 2bit codes in {-1, 0, 1}."""
    return jnp.int8 if devices <= 127 else jnp.int16


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def _real_size(x: Any) -> int:
    return math.prod(jnp.shape(x)) * (2 if jnp.iscomplexobj(x) else 1)


def _residual_dtype(x: Any) -> Any:
    return jnp.complex64 if jnp.iscomplexobj(x) else jnp.float32


def _as_real(x: jax.Array) -> jax.Array:
    """The flat float32 view of a leaf: complex entries as (real, imaginary) pairs."""
    if jnp.iscomplexobj(x):
        x = jnp.stack([jnp.real(x), jnp.imag(x)], axis=-1)
    return jnp.ravel(x).astype(jnp.float32)


def _from_real(flat: jax.Array, shape: tuple[int, ...], dtype: Any) -> jax.Array:
    if jnp.issubdtype(dtype, jnp.complexfloating):
        pairs = flat.reshape(*shape, 2)
        return jax.lax.complex(pairs[..., 0], pairs[..., 1]).astype(dtype)
    return flat.reshape(shape).astype(dtype)


def _safe_inverse(scale: jax.Array) -> jax.Array:
    return jnp.where(scale > 0, 1 / jnp.where(scale > 0, scale, 1), 0)


def _scales(scheme: str, rows: jax.Array, count: Any, block_size: int | None) -> jax.Array:
    """The f32 scales of one tensor laid out as ``rows`` (r, c): shape (r, scales per row).

    int8: max |x| / 127 per block of ``block_size`` consecutive entries of a row (the
    last block of a row may be shorter), or over the whole tensor; 1bit:
    ||x||_2 / sqrt(count), ``count`` the tensor's entries that are not padding.
    """
    r, c = rows.shape
    if scheme == "int8":
        if block_size:
            blocks = -(-c // block_size)
            padded = jnp.pad(jnp.abs(rows), ((0, 0), (0, blocks * block_size - c)))
            return jnp.max(padded.reshape(r, blocks, block_size), -1) / _INT8_LEVELS
        return jnp.broadcast_to(jnp.max(jnp.abs(rows)) / _INT8_LEVELS, (r, 1))
    norm = jnp.sqrt(jnp.sum(jnp.square(rows)))
    return jnp.broadcast_to(norm / jnp.sqrt(jnp.maximum(count, 1).astype(jnp.float32)), (r, 1))


def _per_entry(scales: jax.Array, chunk: int, block_size: int | None) -> jax.Array:
    """int8's scales (r, blocks) repeated over their blocks: (r, chunk); (r, 1) per tensor."""
    if not block_size:
        return scales
    return jnp.repeat(scales, block_size, axis=1)[:, :chunk]


def _pack(codes: jax.Array, shifts: np.ndarray) -> jax.Array:
    r, c = codes.shape
    grouped = codes.astype(jnp.uint8).reshape(r, c // len(shifts), len(shifts))
    return jnp.sum(grouped << shifts, axis=-1, dtype=jnp.uint8)  # the bits do not overlap


def _unpack(packed: jax.Array, shifts: np.ndarray, width: int) -> jax.Array:
    r, b = packed.shape
    return ((packed[..., None] >> shifts) & (2**width - 1)).reshape(r, b * len(shifts))


def _encode(
    scheme: str, rows: jax.Array, scales: jax.Array, threshold: Any, block_size: int | None
) -> tuple[jax.Array, jax.Array]:
    """``(payload, decoded)``: ``rows`` (r, c) packed into uint8 (r, payload bytes), and
    what :func:`_decode` makes of that payload (the sender keeps it for its residual)."""
    r, c = rows.shape
    if scheme == "int8":
        step = _per_entry(scales, c, block_size)
        q = jnp.clip(jnp.round(rows * _safe_inverse(step)), -127, 127)
        payload = jax.lax.bitcast_convert_type(q.astype(jnp.int8), jnp.uint8)
        return payload, q * step
    if scheme == "fp16":
        half = (rows * scales).astype(jnp.float16)
        payload = jax.lax.bitcast_convert_type(half, jnp.uint8).reshape(r, 2 * c)
        return payload, half.astype(jnp.float32) / scales
    if scheme == "2bit":
        codes = jnp.where(rows >= threshold, 3, jnp.where(rows <= -threshold, 2, 0))
        return _pack(codes, _TWO_BIT_SHIFTS), _decode_codes(scheme, codes, scales, threshold)
    bits = rows >= 0  # sign(0) = +1
    return _pack(bits, _ONE_BIT_SHIFTS), _decode_codes(scheme, bits, scales, threshold)


def _decode_codes(scheme: str, codes: jax.Array, scales: jax.Array, threshold: Any) -> jax.Array:
    if scheme == "2bit":
        t = jnp.asarray(threshold, jnp.float32)
        return jnp.where(codes == 3, t, jnp.where(codes == 2, -t, jnp.float32(0)))
    return jnp.where(codes != 0, scales, -scales)  # 1bit: bit 1 is +scale


def _decode(
    scheme: str,
    payload: jax.Array,
    scales: jax.Array,
    threshold: Any,
    chunk: int,
    block_size: int | None,
) -> jax.Array:
    """The f32 values (r, chunk) of a payload (r, payload bytes) that :func:`_encode` made."""
    r = payload.shape[0]
    if scheme == "int8":
        q = jax.lax.bitcast_convert_type(payload, jnp.int8).astype(jnp.float32)
        return q * _per_entry(scales, chunk, block_size)
    if scheme == "fp16":
        half = jax.lax.bitcast_convert_type(payload.reshape(r, chunk, 2), jnp.float16)
        return half.astype(jnp.float32) / scales
    if scheme == "2bit":
        return _decode_codes(scheme, _unpack(payload, _TWO_BIT_SHIFTS, 2), scales, threshold)
    return _decode_codes(scheme, _unpack(payload, _ONE_BIT_SHIFTS, 1), scales, threshold)


def _votes(payload: jax.Array, devices: int) -> jax.Array:
    """2bit's aggregate: the sum over the devices' rows of their codes (+1, -1, 0), as bytes.

    The sum of n codes is an integer in [-n, n], so the mean ``votes * threshold / n``
    is exactly the mean of the decompressed pushes (MXNet's server sum), in one byte.
    """
    codes = _unpack(payload, _TWO_BIT_SHIFTS, 2)
    votes = jnp.sum(jnp.where(codes == 3, 1, jnp.where(codes == 2, -1, 0)), axis=0)
    return jax.lax.bitcast_convert_type(votes.astype(_vote_dtype(devices)), jnp.uint8).reshape(-1)


def _scale_bytes(scales: jax.Array) -> jax.Array:
    r = scales.shape[0]
    return jax.lax.bitcast_convert_type(scales, jnp.uint8).reshape(r, -1)


def _bytes_scales(raw: jax.Array, count: int) -> jax.Array:
    return jax.lax.bitcast_convert_type(raw.reshape(raw.shape[0], count, 4), jnp.float32)


def _power_of_two_scale(peak: jax.Array, devices: int) -> jax.Array:
    """2^floor(log2(65504 / (2 n peak))): n scaled values sum below float16's max / 2."""
    usable = (peak > 0) & jnp.isfinite(peak)
    exponent = jnp.floor(jnp.log2(_FLOAT16_MAX / (2 * devices * jnp.where(usable, peak, 1))))
    return jnp.where(usable, jnp.exp2(exponent), 1.0)


def _check_state(
    updates: Any, state: CompressedMeanState, plans: dict[int, _Plan], servers: bool
) -> None:
    leaves = jax.tree_util.tree_flatten_with_path(updates)[0]
    fields = [("worker_residual", state.worker_residual)]
    if servers:
        fields.append(("server_residual", state.server_residual))
    for name, tree in fields:
        got = jax.tree.leaves(tree)
        if len(got) != len(leaves):
            raise ValueError(
                f"{_WHO}: state.{name} has {len(got)} leaves but the updates have "
                f"{len(leaves)}: init the state from params shaped like the gradients"
            )
        for i, ((path, g), r) in enumerate(zip(leaves, got, strict=True)):
            plan = plans.get(i)
            if plan is None:
                continue
            want = (1, *jnp.shape(g)) if name == "worker_residual" else (1, plan.chunk)
            if jnp.shape(r) != want:
                raise ValueError(
                    f"{_WHO}: state.{name}{checks.path_name(path)} has shape {jnp.shape(r)}, "
                    f"expected {want} for the update of shape {jnp.shape(g)} over "
                    f"{plan.devices} devices: init the state inside the same shard_map/pmap"
                )


def compressed_mean(
    scheme: str,
    axis_name: Any,
    *,
    threshold: Any = None,
    block_size: int | None = None,
    error_feedback: bool = True,
) -> GradientTransformation:
    r"""The mean of each device's gradients over ``axis_name``, exchanged compressed.

    The head of a chain inside ``jax.shard_map`` or ``jax.pmap`` over a data
    axis, in place of ``jax.lax.pmean(grads, axis_name)``: ``update`` takes this
    device's own gradients and returns, identical on every device, the mean
    over the axis of their compressed forms. Named for what it returns (a mean,
    like ``pmean``); the compression is the argument.

    ``"bf16"`` casts to bfloat16 and ``psum``\ s in bfloat16 (the program's
    all-reduce carries bf16; XLA's CPU compiler widens it to f32, GPU and TPU
    keep it), then divides by :math:`n` in float32; it keeps no residual.
    Every other scheme runs 1-bit Adam's two-phase compressed all-reduce on
    :math:`n` devices, for each leaf's flat float view :math:`g_i` (complex
    leaves as their (real, imaginary) pairs), zero-padded to :math:`n` chunks:

    .. math::

        x_i = g_i + e_i, \quad c_i = C(x_i), \quad e_i \leftarrow x_i - c_i
        \qquad \text{(worker } i\text{; } c_i \text{'s chunk } j
        \text{ goes to device } j \text{ by all\_to\_all)}

        y_j = \tfrac1n \textstyle\sum_i c_{i,j} + s_j, \quad
        o_j = C(y_j), \quad s_j \leftarrow y_j - o_j
        \qquad \text{(server } j\text{; all\_gather gives every device all } o_j)

    with the compressor :math:`C`:

    - ``"fp16"``: :math:`C(x) = \mathrm{fp16}(x \sigma) / \sigma`, one power of two
      :math:`\sigma = 2^{\lfloor \log_2(65504 / (2 n \max|x|)) \rfloor}` per leaf
      from the global max (a ``pmax`` of one f32 per leaf), so that a sum over the
      :math:`n` devices cannot overflow float16 and small values keep float16's
      relative precision; scaling by a power of two is exact.
    - ``"int8"``: :math:`C(x) = \delta\, \mathrm{round}(x / \delta)`,
      :math:`\delta = \max|x| / 127`, over the tensor (the worker's leaf, the
      server's chunk), or per ``block_size`` consecutive entries; the f32 scales
      travel with the bytes.
    - ``"2bit"`` (MXNet's): :math:`C(x) = \tau` where :math:`x \ge \tau`,
      :math:`-\tau` where :math:`x \le -\tau`, else 0 (:math:`\tau` = ``threshold``),
      4 values per byte with MXNet's codes (0b11, 0b10, 0b00; first value in the
      high bits). Its server step is MXNet's exact aggregation instead of a
      recompression: server :math:`j` adds up the codes of its chunk, an integer
      :math:`k \in [-n, n]` per entry, sent back in one byte (int8; int16 beyond
      127 devices), and every device decodes :math:`o = \tau k / n`, exactly the mean
      of the :math:`c_i` (MXNet sums the decompressed pushes and pulls the sum
      uncompressed). So 2bit keeps worker residuals only.
    - ``"1bit"`` (1-bit SGD, 1-bit Adam): :math:`C(x) = \lambda\, \mathrm{sign}(x)`,
      :math:`\mathrm{sign}(0) = +1`, :math:`\lambda = \|x\|_2 / \sqrt{d}` over the
      :math:`d` real entries, 8 values per byte. Padding is decoded as 0 and not
      counted in :math:`d` (DeepSpeed's 1-bit Adam counts it), so a leaf's result
      does not depend on how much padding the axis size asks for.

    Error-feedback bound. Summing :math:`o = \frac1n\sum_i (g_i + e_i - e_i') + s
    - s'` over steps telescopes: after :math:`K` steps from zero residuals,

    .. math::

        \sum_{k \le K} o_k - \sum_{k \le K} \tfrac1n \textstyle\sum_i g_{i,k}
        = -\Big(\tfrac1n \textstyle\sum_i e_{i,K} + s_K\Big),

    so the accumulated error is the current residuals, not a sum over steps. If
    every compression satisfies :math:`\|x - C(x)\| \le q\|x\|` with :math:`q < 1`
    and :math:`\|g_{i,k}\| \le G`, induction gives :math:`\|e\| \le \frac{q}{1-q} G`
    and, since :math:`\|\frac1n\sum_i c_i\| \le (1+q)(G + \|e\|)`,
    :math:`\|s\| \le \frac{q}{1-q}\cdot\frac{1+q}{1-q} G`: the error stays below
    :math:`\frac{q}{1-q}(1 + \frac{1+q}{1-q})\,G` at every step (Karimireddy et
    al.). In the max norm, int8 has :math:`q = 1/254` and fp16
    :math:`q = 2^{-11}` (plus float16's subnormal spacing); 1bit has
    :math:`q^2 = 2(1 - \|x\|_1 / (\sqrt d \|x\|_2))` in the 2-norm, with
    equality: 0.64 for a Gaussian vector, but about 0.9 once the residual
    dominates :math:`x`, so its bound is data-dependent and loose. 2bit is no
    contraction, but with :math:`|g| \le \tau` every worker residual stays in
    :math:`(-\tau, \tau)` and there is no server residual, so the error is below
    :math:`\tau` entrywise. Without error feedback (the residuals dropped) the
    errors add up step after step instead.

    Bytes per device and step, for :math:`P` entries: all_to_all and all_gather
    of :math:`P/8` (1bit), :math:`P` (int8, plus 4 bytes per scale) or :math:`2P`
    bytes (fp16), for 2bit an all_to_all of :math:`P/4` and an all_gather of
    :math:`P`, against :math:`4P` for a float32 all-reduce (twice that on the wire:
    a reduce-scatter and an all-gather).

    MXNet's threshold applies to its gradients, sums over each device's batch
    (``loss.backward()`` of the per-sample losses; ``Trainer.step(batch_size)``
    rescales after the exchange). gradtx differentiates a mean loss, so MXNet's
    ``threshold`` :math:`\tau` on :math:`b` samples per device is :math:`\tau / b`
    here, and gives MXNet's numbers.

    Args:
      scheme: ``"bf16"``, ``"fp16"``, ``"int8"``, ``"2bit"`` or ``"1bit"``.
      axis_name: the data axis of the enclosing ``shard_map`` or ``pmap``, over
        which ``update``'s gradients differ (one axis name).
      threshold: 2bit's :math:`\tau > 0`; default 0.5 (MXNet's). Only for ``"2bit"``.
      block_size: int8 only: one scale per this many consecutive entries of the
        flattened leaf, instead of one per tensor. Blocks restart at each device's
        chunk (a leaf's size over the axis size, rounded up): the last block of a
        chunk may be shorter, so small leaves are not padded to whole blocks.
      error_feedback: keep the worker and server residuals (default). False sends
        each step's gradients compressed, with no memory of what was lost.

    The gradients must differ across ``axis_name``: with ``shard_map``'s
    varying-axis types on, autodiff sums the gradients of replicated params over
    the axis, and that sum is refused (take the gradient at
    ``jax.lax.pcast(params, axis_name, to="varying")``, formerly ``jax.lax.pvary``,
    or use ``check_vma=False``). Integer,
    boolean and ``float0`` leaves are passed through untouched.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> from jax.sharding import PartitionSpec as P
      >>> from gradtx.compression import compressed_mean
      >>> mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
      >>> tx = compressed_mean("int8", "data")
      >>> def step(grads):
      ...     return tx.update(grads, tx.init(grads))[0]
      >>> mean = jax.shard_map(step, mesh=mesh, in_specs=P("data"), out_specs=P())
      >>> print(jax.jit(mean)(jnp.array([1.0, -0.5, 0.25, 0.0])))
      [ 1.        -0.503937   0.2519685  0.       ]

    References:
      MXNet: "Gradient Compression" (docs/faq/gradient_compression.md),
      ``kvstore.set_gradient_compression({'type': '2bit', 'threshold': 0.5})``.

      Seide, Fu, Droppo, Li, Yu (2014), "1-Bit Stochastic Gradient Descent and its
      Application to Data-Parallel Distributed Training of Speech DNNs", Interspeech.

      Tang, Gan, Rajbhandari, Zhang, Lian, Liu, He (2021), "1-bit Adam: Communication
      Efficient Large-Scale Training with Adam's Convergence Speed", ICML,
      arXiv:2102.02888 (its compressed allreduce with worker and server error feedback).

      Karimireddy, Rebjock, Stich, Jaggi (2019), "Error Feedback Fixes SignSGD and
      other Gradient Compression Schemes", ICML (the error-feedback bound).
    """
    if scheme not in SCHEMES:
        listed = ", ".join(map(repr, SCHEMES))
        raise ValueError(f"{_WHO}: scheme must be one of {listed}, got {scheme!r}")
    if axis_name is None or isinstance(axis_name, tuple | list):
        raise ValueError(
            f"{_WHO}: axis_name must name the one data axis of the enclosing shard_map or "
            f"pmap to average over, got {axis_name!r}"
        )
    if threshold is not None and scheme != "2bit":
        raise ValueError(
            f"{_WHO}: threshold applies to scheme '2bit' only, got threshold={threshold!r} "
            f"with scheme {scheme!r}"
        )
    threshold = _DEFAULT_THRESHOLD if threshold is None else threshold
    checks.check_interval(_WHO, "threshold", threshold, checks.POSITIVE)
    if block_size is not None:
        if scheme != "int8":
            raise ValueError(
                f"{_WHO}: block_size applies to scheme 'int8' only, got "
                f"block_size={block_size!r} with scheme {scheme!r}"
            )
        block_size = checks.check_length(_WHO, "block_size", block_size, wording="positive")
    if not isinstance(error_feedback, bool | np.bool_):
        raise ValueError(f"{_WHO}: error_feedback must be True or False, got {error_feedback!r}")
    keeps_residuals = scheme != "bf16" and bool(error_feedback)
    # 2bit's servers add the codes up exactly (MXNet's aggregation): nothing left to keep.
    server_feedback = keeps_residuals and scheme != "2bit"

    def plans_for(leaves: list[Any], devices: int) -> dict[int, _Plan]:
        return {
            i: _plan(scheme, _real_size(x), devices, block_size)
            for i, x in enumerate(leaves)
            if _is_float(x) and _real_size(x) > 0
        }

    def init(params):
        devices = bound_axis_size(_WHO, axis_name)
        if not keeps_residuals:
            return CompressedMeanState((), ())
        leaves, treedef = jax.tree.flatten(params)
        plans = plans_for(leaves, devices)
        placeholder = jnp.zeros((1, 0), jnp.float32)
        worker = [
            jnp.zeros((1, *jnp.shape(x)), _residual_dtype(x)) if i in plans else placeholder
            for i, x in enumerate(leaves)
        ]
        server = [
            jnp.zeros((1, plans[i].chunk), jnp.float32) if i in plans else placeholder
            for i in range(len(leaves))
        ]
        servers = treedef.unflatten(server) if server_feedback else ()
        state = CompressedMeanState(treedef.unflatten(worker), servers)
        if tracks_varying(axis_name):  # each device's residuals are its own, like the updates
            state = jax.lax.pcast(state, axis_name, to="varying")
        return state

    def bf16_mean(g: jax.Array, devices: int) -> jax.Array:
        total = jax.lax.psum(_as_real(g).astype(jnp.bfloat16), axis_name)
        return _from_real(total.astype(jnp.float32) / devices, jnp.shape(g), g.dtype)

    def update(updates, state, params=None, **extra):
        del params, extra
        devices = bound_axis_size(_WHO, axis_name)
        check_not_yet_reduced(_WHO, axis_name, updates)
        leaves, treedef = jax.tree.flatten(updates)
        if scheme == "bf16":
            means = [bf16_mean(g, devices) if _is_float(g) else g for g in leaves]
            return treedef.unflatten(means), state
        plans = plans_for(leaves, devices)
        workers: list[Any] = [None] * len(leaves)
        servers: list[Any] = [None] * len(leaves)
        if keeps_residuals:
            _check_state(updates, state, plans, server_feedback)
            workers = jax.tree.leaves(state.worker_residual)
        if server_feedback:
            servers = jax.tree.leaves(state.server_residual)
        me = jax.lax.axis_index(axis_name)

        # Worker side: compress (gradient + residual), chunk j of every leaf to device j.
        inputs = {}
        for i, plan in plans.items():
            x = _as_real(leaves[i])
            if workers[i] is not None:
                x = x + _as_real(workers[i][0])
            padded = jnp.pad(x, (0, plan.devices * plan.chunk - plan.size))
            inputs[i] = padded.reshape(plan.devices, plan.chunk)
        fp16_scales = {}
        if scheme == "fp16" and plans:
            peaks = jax.lax.pmax(
                jnp.stack([jnp.max(jnp.abs(x)) for x in inputs.values()]), axis_name
            )
            fp16_scales = dict(zip(plans, _power_of_two_scale(peaks, devices), strict=True))

        def scales_of(i: int, rows: jax.Array, count: Any) -> jax.Array:
            if scheme == "fp16":
                return fp16_scales[i]
            if scheme == "2bit":
                return jnp.zeros((rows.shape[0], 0), jnp.float32)
            return _scales(scheme, rows, count, block_size)

        def sent_scales(i: int, plan: _Plan, cols: jax.Array) -> jax.Array:
            if plan.scales_per_row:
                return _bytes_scales(cols[:, plan.payload_per_row :], plan.scales_per_row)
            return scales_of(i, cols, 0)

        sent, new_workers = [], list(workers)
        for i, plan in plans.items():
            scales = scales_of(i, inputs[i], plan.size)
            payload, decoded = _encode(scheme, inputs[i], scales, threshold, block_size)
            if workers[i] is not None:
                left = (inputs[i] - decoded).reshape(-1)[: plan.size]
                new_workers[i] = _from_real(left, jnp.shape(leaves[i]), workers[i].dtype)[None]
            sent.append(payload)
            if plan.scales_per_row:
                sent.append(_scale_bytes(scales))
        if not plans:
            return updates, state
        received = jax.lax.all_to_all(jnp.concatenate(sent, axis=1), axis_name, 0, 0)

        # Server side: average this device's chunk in f32, recompress it with its residual.
        offset, gathered_rows, new_servers = 0, [], list(servers)
        for i, plan in plans.items():
            cols = received[:, offset : offset + plan.row_bytes]
            offset += plan.row_bytes
            if scheme == "2bit":
                gathered_rows.append(_votes(cols[:, : plan.payload_per_row], devices))
                continue
            scales = sent_scales(i, plan, cols)
            valid = me * plan.chunk + jnp.arange(plan.chunk) < plan.size
            chunk = _decode(
                scheme, cols[:, : plan.payload_per_row], scales, threshold, plan.chunk, block_size
            )
            y = jnp.mean(jnp.where(valid, chunk, 0), axis=0)
            if servers[i] is not None:
                y = y + servers[i][0]
            count = jnp.clip(plan.size - me * plan.chunk, 0, plan.chunk)
            scales = scales_of(i, y[None], count)
            payload, decoded = _encode(scheme, y[None], scales, threshold, block_size)
            if servers[i] is not None:
                new_servers[i] = (y - jnp.where(valid, decoded[0], 0))[None]
            gathered_rows.append(payload[0])
            if plan.scales_per_row:
                gathered_rows.append(_scale_bytes(scales)[0])
        gathered = jax.lax.all_gather(jnp.concatenate(gathered_rows), axis_name, to="invarying")

        means, offset = list(leaves), 0
        for i, plan in plans.items():
            cols = gathered[:, offset : offset + plan.gathered_row_bytes]
            offset += plan.gathered_row_bytes
            if scheme == "2bit":
                votes = jax.lax.bitcast_convert_type(
                    cols.reshape(devices, plan.chunk, -1), _vote_dtype(devices)
                ).reshape(devices, plan.chunk)
                flat = votes.astype(jnp.float32) * jnp.float32(threshold) / devices
            else:
                scales = sent_scales(i, plan, cols)
                flat = _decode(
                    scheme,
                    cols[:, : plan.payload_per_row],
                    scales,
                    threshold,
                    plan.chunk,
                    block_size,
                )
            g = leaves[i]
            means[i] = _from_real(flat.reshape(-1)[: plan.size], jnp.shape(g), g.dtype)
        if keeps_residuals:
            state = CompressedMeanState(
                treedef.unflatten(new_workers),
                treedef.unflatten(new_servers) if server_feedback else (),
            )
        return treedef.unflatten(means), state

    return GradientTransformation(init, update)


_OPTIONS = ("threshold", "block_size", "error_feedback")
_POWERSGD_OPTIONS = (
    "rank",
    "start_step",
    "min_compression_rate",
    "error_feedback",
    "warm_start",
    "orthogonalization_epsilon",
    "seed",
)


def compression_from(who: str, compression: Any, axis_name: Any) -> GradientTransformation:
    """The exchange that a ``compression=`` argument asks for, over ``axis_name``.

    ``compression`` is a scheme name (``"2bit"``) or MXNet's ``compression_params``
    dict, ``{"type": "2bit", "threshold": 0.5}``, whose other keys are
    :func:`compressed_mean`'s keyword arguments; ``"powersgd"`` is
    :func:`gradtx.powersgd_mean`, with its keyword arguments as the keys.
    """
    if isinstance(compression, str):
        scheme, options = compression, {}
    elif isinstance(compression, Mapping):
        options = dict(compression)
        if "type" not in options:
            raise ValueError(
                f"{who}: compression as a dict needs its scheme under 'type', as MXNet's "
                f"compression_params, e.g. {{'type': '2bit', 'threshold': 0.5}}; got "
                f"{compression!r}"
            )
        scheme = options.pop("type")
        allowed = _POWERSGD_OPTIONS if scheme == "powersgd" else _OPTIONS
        unknown = sorted(set(options) - set(allowed), key=str)
        if unknown:
            raise ValueError(
                f"{who}: compression has unknown keys {unknown}; with type {scheme!r} it takes "
                f"'type' and {', '.join(map(repr, allowed))}"
            )
    else:
        raise ValueError(
            f"{who}: compression must be a scheme name ({', '.join(map(repr, EXCHANGES))}) or "
            f"a dict like {{'type': '2bit', 'threshold': 0.5}}, got {compression!r}"
        )
    if scheme not in EXCHANGES:
        raise ValueError(
            f"{who}: compression's scheme must be one of {', '.join(map(repr, EXCHANGES))}, "
            f"got {scheme!r}"
        )
    if scheme == "powersgd":
        return powersgd_mean(axis_name, **options)
    return compressed_mean(scheme, axis_name, **options)
