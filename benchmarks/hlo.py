"""Read memory traffic off the optimized HLO: kernels that touch large arrays, and their bytes."""

from __future__ import annotations

import re

import numpy as np

_DEF = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\w+)\[([\d,]*)\]\S* (\S+?)\((.*?)\)")
_OPERAND = re.compile(r"%([\w.\-]+)")
_NOT_KERNELS = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}
_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f64": 8, "pred": 1, "s8": 1}


def memory_traffic(hlo_text: str, num_params: int, min_bytes: int = 4096) -> tuple[int, float]:
    """Return (kernels touching an array of at least ``min_bytes``, bytes moved per parameter).

    Bytes are the sizes of each such kernel's operands plus its output, summed
    over the entry computation: what the kernels must read and write if nothing
    stays in cache.
    """
    entry = hlo_text[hlo_text.index("\nENTRY") :]
    shapes: dict[str, int] = {}
    kernels, moved = 0, 0
    for line in entry.splitlines():
        match = _DEF.match(line)
        if not match:
            continue
        name, dtype, dims, opcode, operands = match.groups()
        elements = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
        nbytes = elements * _BYTES.get(dtype, 4)
        shapes[name] = nbytes
        if opcode in _NOT_KERNELS:
            continue
        inputs = [shapes.get(op, 0) for op in _OPERAND.findall(operands)]
        if max([nbytes, *inputs]) >= min_bytes:
            kernels += 1
            moved += nbytes + sum(inputs)
    return kernels, moved / num_params
