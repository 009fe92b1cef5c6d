"""CPU kernels that read bfloat16's storage directly, where widening a whole input first costs more than the op.

Other kernels get bfloat16 inputs widened to float32 by the executor (``runtime.executor.kernel_args``). A
matrix-vector product (a decode step's every linear layer) would then write a float32 copy of the whole weight
and read it back: three times the bytes of the weight itself, for a product whose speed is the bytes it reads.
Here the weight is widened a block of rows at a time into a buffer that stays in cache, each block's product
taken at once, and large weights split across cores (the widening, not the product, is the work).
"""

from __future__ import annotations

import numpy as np

from ...dtypes import widen_bf16
from ...runtime import threads

#: products with at most this many rows on the left read the weight in blocks (a decode step's, a short prompt's;
#: for more rows the widened weight's one GEMM costs no more)
ROWS_MAX = 64
#: ... when the weight has at least this many elements (smaller: widened whole, it stays in the caches; a
#: small model's layers are larger, and widened whole on every call they cost more than their product)
WEIGHT_MIN = 1 << 16
#: the elements of one widened block (float32: 512 KiB, well inside a core's L2 cache, where the product reads it
#: back; larger blocks spill, smaller ones cost more Python per row)
BLOCK = 1 << 17
#: weights of at least this many elements are split across cores
SPLIT_MIN = 1 << 22


def matmul(x: np.ndarray, y: np.ndarray):
    """``x @ y`` in float32 for bfloat16 storage ``x`` (``(..., K)``, at most ``ROWS_MAX`` rows) and ``y``
    (``(K, N)``, a transposed view of a contiguous ``(N, K)`` weight, as ``x @ w.T`` gives); None where the shapes
    or layouts are others'."""
    if y.ndim != 2 or x.ndim < 1 or y.size < WEIGHT_MIN or x.shape[-1] != y.shape[0]:
        return None
    w = y.T
    if not w.flags.c_contiguous:
        return None
    k = x.shape[-1]
    m = x.size // k if k else 0
    if m == 0 or m > ROWS_MAX:
        return None
    n = w.shape[0]
    xt = widen_bf16(np, x.reshape(m, k)).T
    out = np.empty((n, m), np.float32)  # (rows of w's products: each block writes contiguous rows)
    step = max(1, BLOCK // k)

    def rows(lo: int, hi: int) -> None:  # out[lo:hi], a block of step rows at a time
        buf = np.empty((min(step, hi - lo), k), np.uint32)
        wide = buf.view(np.float32)
        for r0 in range(lo, hi, step):
            r1 = min(hi, r0 + step)
            # (widen_bf16 into a buffer that stays in cache: the bits shifted into float32's high half, exact)
            np.left_shift(w[r0:r1], np.uint32(16), out=buf[:r1 - r0], casting="safe")
            np.matmul(wide[:r1 - r0], xt, out=out[r0:r1])

    per = -(-n // max(1, min(threads.CORES, w.size // SPLIT_MIN)))  # rows per core (one part below SPLIT_MIN)
    per = -(-per // step) * step  # (whole blocks)
    threads.map_chunks(rows, threads.bounds(n, per))  # (BLAS on one thread meanwhile: see blas.py)
    return out.T.reshape(x.shape[:-1] + (n,))
