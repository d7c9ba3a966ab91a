"""Read memory traffic off the optimized HLO: kernels that touch large arrays, and their bytes."""

from __future__ import annotations

import re

import numpy as np

_DEF = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\w+)\[([\d,]*)\]\S* (\S+?)\((.*?)\)")
# A kernel with several outputs (a custom call) has a tuple shape: (f32[10]{0}, f32[10]{0}).
_TUPLE_DEF = re.compile(r"^\s*(?:ROOT )?%(\S+) = \(([^()]*)\) (custom-call)\((.*?)\)")
_ARRAY = re.compile(r"(\w+)\[([\d,]*)\]")
_OPERAND = re.compile(r"%([\w.\-]+)")
_NOT_KERNELS = {"parameter", "constant", "tuple", "get-tuple-element", "bitcast"}
_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "f64": 8, "pred": 1, "s8": 1}


def _nbytes(dtype: str, dims: str) -> int:
    elements = int(np.prod([int(d) for d in dims.split(",") if d])) if dims else 1
    return elements * _BYTES.get(dtype, 4)


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
        if match:
            name, dtype, dims, opcode, operands = match.groups()
            nbytes = _nbytes(dtype, dims)
        elif match := _TUPLE_DEF.match(line):
            name, outputs, opcode, operands = match.groups()
            nbytes = sum(_nbytes(dtype, dims) for dtype, dims in _ARRAY.findall(outputs))
        else:
            continue
        shapes[name] = nbytes
        if opcode in _NOT_KERNELS:
            continue
        inputs = [shapes.get(op, 0) for op in _OPERAND.findall(operands)]
        if max([nbytes, *inputs]) >= min_bytes:
            kernels += 1
            moved += nbytes + sum(inputs)
    return kernels, moved / num_params
