"""Softmax, its gradient and log-sum-exp over the last axis of a large float array, in blocks of rows: each block
small enough to stay in a core's cache through the kernel's passes (max, subtract, exp, sum, then divide or log),
and the blocks spread over the pool's threads (NumPy releases the GIL inside its loops). Each block makes the shared
kernel's own calls, row by row the same, so the results are the same bits. A log-sum-exp (a cross-entropy's) also
never allocates the exponentials of the whole input: a block's go to a scratch buffer of the block's size."""

from __future__ import annotations

import numpy as np

from ...primitives import reduction as r
from ...runtime import host_pool
from ...runtime.threads import block_elements, chunks, map_chunks
from ..xp.reduction import lse_into, softmax_into, softmax_vjp_into

#: the longest rows taken in blocks (float32: 256 KiB); a block holds ``threads.block_elements()``, at least a row
MAX_ROW = 1 << 16
#: smaller inputs take the shared kernel as is
MIN_SIZE = 1 << 18


def _blocked(prim, x) -> bool:
    """Whether ``prim`` over ``x`` runs in blocks of rows: a large float32 or float64 ``x``, C-contiguous, reduced
    over its last axis, rows that fit a block."""
    return (x.__class__ is np.ndarray and x.dtype.kind == "f" and x.itemsize >= 4 and x.size >= MIN_SIZE
            and x.flags.c_contiguous and prim.axes == (x.ndim - 1,) and x.shape[-1] <= MAX_ROW)


def _in_row_blocks(rows, out, step, scratch: bool = False, beside=None) -> None:
    """``step(x, out, buf)`` over blocks of ``rows`` (a C-contiguous matrix) and the same rows of ``out``, a chunk
    of blocks per core; ``buf`` is a block-sized buffer of the chunk's own where ``scratch``, else None. With
    ``beside`` (a matrix of as many rows), ``step(x, out, buf, same rows of beside)``."""
    n = rows.shape[1]
    per = max(1, block_elements() // n)

    def blocks(lo: int, hi: int) -> None:
        buf = np.empty((min(per, hi - lo), n), rows.dtype) if scratch else None
        for a in range(lo, hi, per):
            b = min(hi, a + per)
            if beside is None:
                step(rows[a:b], out[a:b], None if buf is None else buf[:b - a])
            else:
                step(rows[a:b], out[a:b], None if buf is None else buf[:b - a], beside[a:b])

    map_chunks(blocks, chunks(rows.shape[0], n * rows.itemsize))


def blocked_softmax(table: dict) -> dict:
    """Wrap the Softmax and LogSumExp kernels of CPU kernel table ``table`` (in place) for large inputs."""
    kernel = table[r.Softmax]
    lse_kernel = table[r.LogSumExp]

    def lse(prim, x):
        if not _blocked(prim, x):
            return lse_kernel(prim, x)
        rows = x.reshape(-1, x.shape[-1])
        out = np.empty((rows.shape[0], 1), x.dtype)
        _in_row_blocks(rows, out, lambda xb, ob, buf: lse_into(np, xb, (1,), buf, ob), scratch=True)
        return out.reshape(x.shape[:-1] + (1,) * prim.keepdims)

    def run(prim, x):
        if not _blocked(prim, x):
            return kernel(prim, x)
        rows = x.reshape(-1, x.shape[-1])
        out = host_pool.empty(rows.shape, rows.dtype)
        _in_row_blocks(rows, out, lambda xb, ob, _: softmax_into(np, xb, (1,), ob))
        return out.reshape(x.shape)

    vjp_kernel = table[r.SoftmaxVJP]

    def vjp(prim, y, c):
        if not (_blocked(prim, y) and c.__class__ is np.ndarray and c.dtype == y.dtype and c.shape == y.shape
                and c.flags.c_contiguous):
            return vjp_kernel(prim, y, c)
        rows = y.reshape(-1, y.shape[-1])
        out = host_pool.empty(rows.shape, rows.dtype)
        _in_row_blocks(rows, out, lambda yb, ob, _, cb: softmax_vjp_into(np, yb, cb, (1,), ob),
                       beside=c.reshape(rows.shape))
        return out.reshape(y.shape)

    table[r.Softmax] = run
    table[r.LogSumExp] = lse
    table[r.SoftmaxVJP] = vjp
    return table
