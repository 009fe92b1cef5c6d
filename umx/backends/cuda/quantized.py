"""Quantized products on the GPU by a kernel of umx's own, where a language model's decode step needs them: a few
rows of ``x`` times an affine-quantized weight (``transpose=True``, 2, 4 or 8 bits), the packed words read once
(``sources.qmv_source``). A step's speed is the bytes read, and the shared kernel (``backends/xp/quantized.py``)
first writes the dequantized weight out in full. Other products keep the shared kernel. ``CAPTURE_IF`` says which
nodes a CUDA graph may capture (this kernel's, and the shared dequantization's modes that read nothing from the
host).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ...dtypes import bfloat16, float32
from ...primitives import quantized as qp
from ._probe import _cupy
from .sources import QMV_MAX_ROWS, QMV_WARPS, qmv_source

cp = _cupy()

_BITS = (2, 4, 8)
_ROUND = {float32: 0, bfloat16: 1}  # weight dtype -> whether its values are rounded to bfloat16


@functools.cache
def _kernel(bits: int, rows: int):
    name = f"umx_qmv_{bits}_{rows}"
    return cp.RawKernel(qmv_source(name, bits, rows), name)


def fits(prim, x_shape: tuple, w_shape: tuple) -> bool:
    """Whether the kernel takes ``x`` and ``w`` of these shapes for ``prim`` (its dtypes checked apart)."""
    if prim.mode != "affine" or prim.bits not in _BITS or not prim.transpose or prim.wdtype not in _ROUND:
        return False
    if len(w_shape) != 2 or not x_shape:
        return False
    k = x_shape[-1]
    rows = math.prod(x_shape[:-1])
    return 0 < rows <= QMV_MAX_ROWS and k > 0 and w_shape[0] > 0 and k % prim.group_size == 0 and k % 32 == 0


def quantized_matmul(fallback):
    """QuantizedMatmul's kernel for a few rows (:func:`fits`) of float32 ``x``; else ``fallback``."""

    def run(prim, x, w, scales, *biases):
        if (not biases or x.dtype != np.float32 or scales.dtype != np.float32 or biases[0].dtype != np.float32
                or w.dtype != np.uint32 or not fits(prim, x.shape, w.shape)):
            return fallback(prim, x, w, scales, *biases)
        k, n = x.shape[-1], w.shape[0]
        rows = math.prod(x.shape[:-1])
        out = cp.empty((rows, n), cp.float32)
        x2 = cp.ascontiguousarray(x).reshape(rows, k)
        _kernel(prim.bits, rows)((-(-n // QMV_WARPS),), (32 * QMV_WARPS,), (
            x2, cp.ascontiguousarray(w), cp.ascontiguousarray(scales), cp.ascontiguousarray(biases[0]), out,
            np.int32(n), np.int32(k), np.int32(prim.group_size), np.int32(_ROUND[prim.wdtype])))
        return out.reshape(x.shape[:-1] + (n,))

    return run


def install(table: dict) -> None:
    """Put the kernel above in front of the shared one in the CUDA kernel table."""
    table[qp.QuantizedMatmul] = quantized_matmul(table[qp.QuantizedMatmul])


def _captures(n) -> bool:
    ins = n._inputs
    return (len(ins) == 4 and ins[0]._dtype in _ROUND and ins[2]._dtype in _ROUND and ins[3]._dtype in _ROUND
            and fits(n._prim, ins[0]._shape, ins[1]._shape))


def _dequantize_captures(n) -> bool:
    # the shared kernel's affine codes of 1, 2, 4 or 8 bits are CuPy's elementwise work and a gather from a
    # table of codes that the first (eager) run put on the device: nothing reads the host (3, 5 and 6 bits
    # copy their bit offsets from the host on each call)
    p = n._prim
    return p.mode == "affine" and p.bits in (1, 2, 4, 8) and not p.has_global


#: primitive class -> whether a node of it runs as kernels that only enqueue (a CUDA graph may capture it)
CAPTURE_IF = {qp.QuantizedMatmul: _captures, qp.Dequantize: _dequantize_captures}
