"""Bytes on the wire for gradtx.compressed_mean and powersgd_mean, read off the HLO (no timing).

For each scheme, the data-parallel exchange of one gradient tree inside
``shard_map`` over 8 host devices is lowered, its collectives read from the HLO
text (operation, element type, shape), and their bytes per device per step
estimated with the usual bandwidth-optimal algorithms: a ring all-reduce moves
``2 (n - 1) / n`` of its buffer, an all-to-all ``(n - 1) / n`` of its buffer, an
all-gather ``(n - 1) / n`` of its result. The ratio is against a float32
``pmean`` of the same tree. Trees: the 16-32-8 MLP of the distributed tests
(808 parameters: small leaves, padding shows) and a 1M-parameter tree.

The program's HLO (``lower(...).as_text(dialect="hlo")``) is what gradtx asks
XLA to send; the CPU compiler widens a bfloat16 all-reduce to float32 (its
runtime reduces in f32), so on CPU bf16 runs at the f32 cost, while the packed
uint8 exchanges of the other schemes are sent as they are.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/bench_compression.py
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

import numpy as np

_COLLECTIVE = re.compile(
    r"^\s*(?:ROOT )?%?\S+ = (\(.*?\)|\w+\[[\d,]*\]\S*) "
    r"(all-reduce|all-gather|all-to-all|reduce-scatter|collective-permute)(-start)?\("
)
_ARRAY = re.compile(r"(\w+)\[([\d,]*)\]")
_GROUPS = re.compile(r"replica_groups=(?:\{\{([\d,]*)\}|\[\d+,(\d+)\]<=)")
ITEM_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f16": 2, "bf16": 2, "s16": 2, "u16": 2,
              "f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8,
              "c128": 16}  # fmt: skip
# Of its buffer, the fraction of bytes each device sends (ring algorithms, n devices).
_WIRE_SHARE = {"all-reduce": lambda n: 2 * (n - 1) / n, "all-gather": lambda n: (n - 1) / n,
               "all-to-all": lambda n: (n - 1) / n, "reduce-scatter": lambda n: (n - 1) / n,
               "collective-permute": lambda n: 1.0}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective of an HLO module: its operation, element types, elements and bytes."""

    op: str
    dtypes: tuple[str, ...]
    elements: int
    nbytes: int  # the buffer: the result (all-gather), or what one device contributes
    devices: int

    @property
    def wire_bytes(self) -> float:
        """Bytes one device sends for it, with the bandwidth-optimal algorithm."""
        return self.nbytes * _WIRE_SHARE[self.op](self.devices)


def collectives(hlo_text: str) -> list[Collective]:
    """Every collective in an HLO module's text (the program's or a compiled one).

    A tuple-shaped collective (XLA combines the all-reduces of several leaves,
    and the CPU compiler splits an all-to-all into one array per peer) counts as
    one, with all its arrays; an asynchronous ``-start`` counts its result only.
    """
    found = []
    for line in hlo_text.splitlines():
        match = _COLLECTIVE.match(line)
        if not match:
            continue
        shape, op, start = match.groups()
        arrays = _ARRAY.findall(shape)
        if start and op == "all-gather" and len(arrays) > 1:
            arrays = arrays[len(arrays) // 2 :]  # (operands..., results...)
        groups = _GROUPS.search(line)
        if groups is None:
            devices = 1
        elif groups.group(1) is not None:
            devices = len(groups.group(1).split(","))
        else:
            devices = int(groups.group(2))
        sizes = [int(np.prod([int(d) for d in dims.split(",") if d])) for _, dims in arrays]
        nbytes = sum(s * ITEM_BYTES[t] for s, (t, _) in zip(sizes, arrays, strict=True))
        dtypes = tuple(sorted({t for t, _ in arrays}))
        found.append(Collective(op, dtypes, sum(sizes), nbytes, devices))
    return found


def wire_bytes(found: list[Collective]) -> float:
    """Bytes one device sends per step over all the collectives found."""
    return sum(c.wire_bytes for c in found)


def describe(found: list[Collective]) -> str:
    """``all-to-all u8[1088] + all-gather u8[1088]``: each collective's types and elements."""
    return " + ".join(f"{c.op} {'/'.join(c.dtypes)}[{c.elements}]" for c in found)


def exchange_hlo(tx_or_none, grads, mesh, axis: str = "data", compiled: bool = False) -> str:
    """The HLO of one exchange of ``grads`` (one copy per device of ``mesh``'s ``axis``).

    ``tx_or_none`` is a ``compressed_mean`` or ``powersgd_mean`` transform, or None for a float32
    ``pmean``. The state is initialised inside the same ``shard_map``.
    """
    import jax
    from jax.sharding import PartitionSpec as P

    def exchange(stacked):
        local = jax.tree.map(lambda x: x[0], stacked)
        if tx_or_none is None:
            return jax.lax.pmean(local, axis)
        return tx_or_none.update(local, tx_or_none.init(local))[0]

    stacked = jax.tree.map(lambda x: np.broadcast_to(x, (mesh.shape[axis], *x.shape)), grads)
    step = jax.jit(jax.shard_map(exchange, mesh=mesh, in_specs=P(axis), out_specs=P()))
    lowered = step.lower(stacked)
    return lowered.compile().as_text() if compiled else lowered.as_text(dialect="hlo")


SCHEMES = {
    "f32 pmean": None,
    "bf16": ("bf16", {}),
    "fp16": ("fp16", {}),
    "int8": ("int8", {}),
    "int8, blocks of 256": ("int8", {"block_size": 256}),
    "2bit": ("2bit", {}),
    "1bit": ("1bit", {}),
    "powersgd, rank 1": ("powersgd", {"rank": 1, "start_step": 0}),
    "powersgd, rank 4": ("powersgd", {"rank": 4, "start_step": 0}),
}


def trees() -> dict[str, dict[str, np.ndarray]]:
    """The distributed tests' MLP, and a 1M-parameter tree of four layers."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "distributed"))
    from dist_model import init_params

    mlp = {k: np.asarray(v) for k, v in init_params().items()}
    rng = np.random.default_rng(0)
    shapes = {"w1": (512, 1024), "b1": (1024,), "w2": (1024, 512), "b2": (512,), "w3": (512, 3)}
    large = {k: rng.normal(size=s).astype(np.float32) for k, s in shapes.items()}
    return {"MLP 16-32-8": mlp, "1M tree": large}


def main() -> None:
    os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import jax
    from jax.sharding import AxisType

    from gradtx.compression import compression_from

    mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
    print(f"jax {jax.__version__}, {jax.device_count()} devices, one data axis of 8")
    for label, grads in trees().items():
        count = sum(x.size for x in grads.values())
        print(f"\n{label}: {count} parameters in {len(grads)} leaves")
        print(f"{'scheme':<22}{'collective ops':<66}{'bytes per step':>15}{'ratio to f32':>14}")
        baseline = None
        for name, spec in SCHEMES.items():
            tx = spec and compression_from("bench", {"type": spec[0], **spec[1]}, "data")
            found = collectives(exchange_hlo(tx, grads, mesh))
            sent = wire_bytes(found)
            baseline = baseline or sent
            print(f"{name:<22}{describe(found):<66}{sent:>15.0f}{sent / baseline:>14.4f}")


if __name__ == "__main__":
    main()
