"""Quantized products on the GPU by a kernel of umx's own, where a language model's decode step needs them: a few
rows of ``x`` times an affine-quantized weight (``transpose=True``, 2, 4 or 8 bits, groups of 32, 64 or 128), the
packed words read once (``sources.qmv_source``), on float32 or bfloat16 data as stored (``NATIVE``: the executor
asks before it widens bfloat16). A step's speed is the bytes read, and the shared kernel
(``backends/xp/quantized.py``) first writes the dequantized weight out in full. Other products keep the shared
kernel. ``CAPTURE_IF`` says which nodes a CUDA graph may capture (this kernel's, and the shared dequantization's
modes that read nothing from the host).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ...dtypes import bfloat16, float32
from ...primitives import quantized as qp
from ._probe import _cupy
from .launch import Launch
from .sources import QMV_MAX_ROWS, QMV_WARPS, SIGNATURES, matvec_columns, qmv_source

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
    """QuantizedMatmul's output by the kernel for a few rows of ``x`` (:func:`fits`), from its inputs as stored
    (bfloat16 unwidened), or None: the kernel table's (dequantize, then a product) serves."""
    if not _takes(n):
        return None
    x_dtype, s_dtype = n._inputs[0]._dtype, n._inputs[2]._dtype
    x, w, scales, biases = (cp.ascontiguousarray(a) for a in args)
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


#: primitive class -> ``(node, its inputs' data as stored) -> output or None`` (see fast.NATIVE)
NATIVE = {qp.QuantizedMatmul: _native_qmv}


def _takes(n) -> bool:
    """Whether QuantizedMatmul node ``n`` is the kernel's (shapes, and dtypes of x, scales, biases, output): it runs
    it, and a CUDA graph may capture it."""
    ins = n._inputs
    return (len(ins) == 4 and n._dtype in _FLOATS and ins[0]._dtype in _FLOATS and ins[2]._dtype in _FLOATS
            and ins[3]._dtype is ins[2]._dtype and fits(n._prim, ins[0]._shape, ins[1]._shape))


def _dequantize_captures(n) -> bool:
    # the shared kernel's affine codes of 1, 2, 4 or 8 bits are CuPy's elementwise work and a gather from a
    # table of codes that the first (eager) run put on the device: nothing reads the host (3, 5 and 6 bits
    # copy their bit offsets from the host on each call)
    p = n._prim
    return p.mode == "affine" and p.bits in (1, 2, 4, 8) and not p.has_global


#: primitive class -> whether a node of it runs as kernels that only enqueue (a CUDA graph may capture it)
CAPTURE_IF = {qp.QuantizedMatmul: _takes, qp.Dequantize: _dequantize_captures}
