"""The bfloat16 product of a few rows by a linear layer's weight (``x @ w.T``, ``w`` stored row by row), by a
kernel of umx's own (``sources.bf16_matvec_source``): a decode step's products, whose speed is the weight's bytes
read. A block takes a few weight rows and its warps share their length, so that long rows (a down projection's)
keep enough loads in flight; ``bench/matvec.py`` compares it with cuBLAS's bfloat16 product of the same operands,
which takes more rows of ``x`` and whatever this kernel does not. ``UMX_OWN_MATVEC=0`` leaves every product to
cuBLAS.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from ._probe import _cupy
from .launch import Launch
from .sources import SIGNATURES, bf16_matvec_source
from .strided import contiguous

cp = _cupy()

#: whether the executor asks this kernel first (``bf16_matvec`` itself runs whenever it is called)
ENABLED = os.environ.get("UMX_OWN_MATVEC", "1") != "0"
#: rows of ``x`` -> (weight rows per block, warps per block); more rows than listed go to cuBLAS
SHAPES = {1: (2, 8), 2: (4, 2), 3: (4, 2), 4: (4, 2)}


@functools.cache
def _kernel(rows: int, cols: int, warps: int) -> Launch:
    name = f"umx_bf16_matvec_{rows}_{cols}_{warps}"
    return Launch(cp.RawKernel(bf16_matvec_source(name, rows, cols, warps), name), SIGNATURES["bf16_matvec"])


def bf16_matvec(a, b, shape: tuple):
    """``a @ b`` of bfloat16 storage (uint16) ``a`` ``(..., K)`` of at most ``max(SHAPES)`` rows and ``b``
    ``(K, N)``, the transpose of a C-contiguous ``(N, K)`` weight, as ``shape``'s bfloat16 storage; None where this
    does not apply."""
    if b.ndim != 2 or not a.ndim or a.dtype != np.uint16 or b.dtype != np.uint16:
        return None
    k, n = b.shape
    if a.shape[-1] != k or k % 8 or not k or not n or not b.flags.f_contiguous:
        return None
    rows = a.size // k
    launch = SHAPES.get(rows)
    if launch is None:
        return None
    a = contiguous(a)
    w = b.T
    if a.data.ptr % 16 or w.data.ptr % 16:  # (16-byte loads)
        return None
    cols, warps = launch
    out = cp.empty(shape, np.uint16)
    _kernel(rows, cols, warps)((-(-n // cols),), (32 * warps,), a.data.ptr, w.data.ptr, out.data.ptr, n, k)
    return out
