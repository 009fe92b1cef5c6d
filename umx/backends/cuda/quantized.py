"""Quantized products on the GPU by a kernel of umx's own, where a language model's decode step needs them: a few
rows of ``x`` times an affine-quantized weight (``transpose=True``, 2, 4 or 8 bits, groups of 32, 64 or 128), the
packed words read once (``sources.qmv_source``), on float32 or bfloat16 data as stored (``NATIVE``: the executor
asks before it widens bfloat16). A step's speed is the bytes read, and the shared kernel
(``backends/xp/quantized.py``) first writes the dequantized weight out in full. More rows of bfloat16 (a
prompt's) take the weight written out as bfloat16 by a kernel of umx's own, then cuBLAS's bfloat16 product; the
shared kernel computes the same values in float32 by many CuPy calls and a float32 product. Other products keep
the shared kernel. ``CAPTURE_IF`` says which nodes a CUDA graph may capture (these kernels', and the shared
dequantization's modes that read nothing from the host).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ...dtypes import bfloat16, float32
from ...primitives import quantized as qp
from . import cublas
from ._probe import _cupy
from .launch import Launch
from .sources import (
    BLOCK,
    QMV_MAX_ROWS,
    QMV_WARPS,
    SIGNATURES,
    dequantize_bf16_source,
    matvec_columns,
    qmv_source,
)
from .strided import contiguous

cp = _cupy()

_BITS = (2, 4, 8)
_GROUPS = (32, 64, 128)
_FLOATS = (float32, bfloat16)  # the dtypes of x, the scales and the output the kernel takes (bfloat16 as stored)


@functools.cache
def _kernel(bits: int, rows: int, cols: int, group: int, x_bf16: bool, s_bf16: bool, out_bf16: bool, vec: int):
    name = f"umx_qmv_{bits}_{rows}_{cols}_{group}_{int(x_bf16)}{int(s_bf16)}{int(out_bf16)}_{vec}"
    kernel = cp.RawKernel(qmv_source(name, bits, rows, cols, group, x_bf16, s_bf16, out_bf16, vec), name)
    return Launch(kernel, SIGNATURES["qmv"])


def fits(prim, x_shape: tuple, w_shape: tuple) -> bool:
    """Whether the kernel takes ``x`` and ``w`` of these shapes for ``prim`` (its dtypes checked apart)."""
    if prim.mode != "affine" or prim.bits not in _BITS or not prim.transpose or prim.group_size not in _GROUPS:
        return False
    if len(w_shape) != 2 or not x_shape:
        return False
    k = x_shape[-1]
    rows = math.prod(x_shape[:-1])
    return 0 < rows <= QMV_MAX_ROWS and k > 0 and w_shape[0] > 0 and k % prim.group_size == 0


def _native_qmv(n, args):
    """QuantizedMatmul's output by the kernel for a few rows of ``x`` (:func:`fits`), or for more rows of bfloat16
    by a bfloat16 weight and cuBLAS (:func:`_takes_many`), from its inputs as stored (bfloat16 unwidened), or
    None: the kernel table's (dequantize, then a product) serves."""
    if not _takes(n):
        return _dequantized_product(n, args) if _takes_many(n) else None
    x_dtype, s_dtype = n._inputs[0]._dtype, n._inputs[2]._dtype
    x, w, scales, biases = (contiguous(a) for a in args)
    if w.dtype != np.uint32:
        return None
    prim = n._prim
    k, cols = x.shape[-1], w.shape[0]
    rows = math.prod(x.shape[:-1])
    if x.data.ptr % 16:  # (the kernel reads x 8 or 16 bytes at a time)
        x = x.copy()
    vec = 4 if (w.shape[1] % 4 == 0 and w.data.ptr % 16 == 0) else 1
    per_warp = matvec_columns(cols, 4096)
    warps = -(-cols // per_warp)
    out = cp.empty((rows, cols), np.uint16 if n._dtype is bfloat16 else np.float32)
    kernel = _kernel(prim.bits, rows, per_warp, prim.group_size, x_dtype is bfloat16, s_dtype is bfloat16,
                     n._dtype is bfloat16, vec)
    kernel((-(-warps // QMV_WARPS),), (32 * QMV_WARPS,), x.data.ptr, w.data.ptr, scales.data.ptr, biases.data.ptr,
           out.data.ptr, cols, k)
    return out.reshape(n._shape)


@functools.cache
def _dequantize_kernel(bits: int, group: int) -> Launch:
    name = f"umx_dequantize_bf16_{bits}_{group}"
    return Launch(cp.RawKernel(dequantize_bf16_source(name, bits, group), name), SIGNATURES["dequantize_bf16"])


_MAX_BLOCKS = 8192  # (a grid-stride loop covers the rest)


def _dequantized_product(n, args):
    """``x @ W.T`` for many rows of bfloat16 ``x`` (a prompt's): the weight written out once as bfloat16 by
    umx's kernel (rounded as the shared kernel rounds it), then cuBLAS's bfloat16 product (float32 sums, as the
    shared kernel's float32 product of the same values); None where cuBLAS's bfloat16 product is not at hand."""
    x, w, scales, biases = (contiguous(a) for a in args)
    if w.dtype != np.uint32 or x.dtype != np.uint16:
        return None
    prim = n._prim
    k = x.shape[-1]
    rows, row_words = w.shape
    if row_words * (32 // prim.bits) != k:
        return None
    weight = cp.empty((rows, k), np.uint16)
    total = rows * row_words
    _dequantize_kernel(prim.bits, prim.group_size)((min(-(-total // BLOCK), _MAX_BLOCKS),), (BLOCK,), w.data.ptr,
                                                   scales.data.ptr, biases.data.ptr, weight.data.ptr, total,
                                                   row_words, scales.shape[-1])
    out = cublas.bf16_matmul(x.reshape(-1, k), weight.T)
    return None if out is None else out.reshape(n._shape)


#: primitive class -> ``(node, its inputs' data as stored) -> output or None`` (see fast.NATIVE)
NATIVE = {qp.QuantizedMatmul: _native_qmv}


def _takes(n) -> bool:
    """Whether QuantizedMatmul node ``n`` is the kernel's (shapes, and dtypes of x, scales, biases, output): it runs
    it, and a CUDA graph may capture it."""
    ins = n._inputs
    return (len(ins) == 4 and n._dtype in _FLOATS and ins[0]._dtype in _FLOATS and ins[2]._dtype in _FLOATS
            and ins[3]._dtype is ins[2]._dtype and fits(n._prim, ins[0]._shape, ins[1]._shape))


def _takes_many(n) -> bool:
    """Whether QuantizedMatmul node ``n`` is :func:`_dequantized_product`'s: bfloat16 throughout, more rows of x
    than the few-row kernel takes, a 2-D weight; it runs it (cuBLAS through umx's handle), and a graph may capture
    it."""
    ins = n._inputs
    if len(ins) != 4 or any(d._dtype is not bfloat16 for d in (n, ins[0], ins[2], ins[3])):
        return False
    prim, x_shape, w_shape = n._prim, ins[0]._shape, ins[1]._shape
    return (prim.mode == "affine" and prim.bits in _BITS and prim.transpose and prim.group_size in _GROUPS
            and len(w_shape) == 2 and len(x_shape) >= 2 and math.prod(x_shape[:-1]) > QMV_MAX_ROWS
            and x_shape[-1] % prim.group_size == 0 and cublas.available())


def _dequantize_captures(n) -> bool:
    # the shared kernel's affine codes of 1, 2, 4 or 8 bits are CuPy's elementwise work and a gather from a
    # table of codes that the first (eager) run put on the device: nothing reads the host (3, 5 and 6 bits
    # copy their bit offsets from the host on each call)
    p = n._prim
    return p.mode == "affine" and p.bits in (1, 2, 4, 8) and not p.has_global


#: primitive class -> whether a node of it runs as kernels that only enqueue (a CUDA graph may capture it)
CAPTURE_IF = {qp.QuantizedMatmul: lambda n: _takes(n) or _takes_many(n), qp.Dequantize: _dequantize_captures}
