"""The bfloat16 product of a few rows by a linear layer's weight (``x @ w.T``, ``w`` stored row by row), by a
kernel of umx's own (``sources.bf16_matvec_source``): a decode step's products, whose speed is the weight's bytes
read. Off unless ``UMX_OWN_MATVEC=1``: in device time it matches cuBLAS's bfloat16 product overall (faster for
short weights and the vocabulary's, slower for long rows, where too few warps share the work; ``bench/matvec.py``),
so cuBLAS serves every bfloat16 product by default.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from ._probe import _cupy
from .sources import QMV_MAX_ROWS, QMV_WARPS, bf16_matvec_source, matvec_columns
from .strided import contiguous

cp = _cupy()

#: whether the executor asks this kernel first (``bf16_matvec`` itself runs whenever it is called)
ENABLED = os.environ.get("UMX_OWN_MATVEC", "0") == "1"


@functools.cache
def _kernel(rows: int, cols: int):
    name = f"umx_bf16_matvec_{rows}_{cols}"
    return cp.RawKernel(bf16_matvec_source(name, rows, cols), name)


def bf16_matvec(a, b, shape: tuple):
    """``a @ b`` of bfloat16 storage (uint16) ``a`` ``(..., K)`` of at most ``QMV_MAX_ROWS`` rows and ``b``
    ``(K, N)``, the transpose of a C-contiguous ``(N, K)`` weight, as ``shape``'s bfloat16 storage; None where this
    does not apply."""
    if b.ndim != 2 or not a.ndim or a.dtype != np.uint16 or b.dtype != np.uint16:
        return None
    k, n = b.shape
    if a.shape[-1] != k or k % 8 or not k or not n or not b.flags.f_contiguous:
        return None
    rows = a.size // k
    if not 0 < rows <= QMV_MAX_ROWS:
        return None
    a = contiguous(a)
    w = b.T
    if a.data.ptr % 16 or w.data.ptr % 16:  # (16-byte loads)
        return None
    cols = matvec_columns(n, 8192)
    warps = -(-n // cols)
    out = cp.empty(shape, np.uint16)
    _kernel(rows, cols)((-(-warps // QMV_WARPS),), (32 * QMV_WARPS,), (a, w, out, np.int32(n), np.int32(k)))
    return out
