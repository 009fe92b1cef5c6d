"""Softmax over the last axis of a large float array, in blocks of rows: each block small enough to stay in a
core's cache through the kernel's five passes (max, subtract, exp, sum, divide), and the blocks spread over the
pool's threads (NumPy releases the GIL inside its loops). Each block takes the shared kernel's own calls
(``backends/xp/reduction.softmax_into``), row by row the same, so the results are the same bits."""

from __future__ import annotations

import numpy as np

from ...primitives import reduction as r
from ...runtime.threads import chunks, map_chunks
from ..xp.reduction import softmax_into

#: the elements of one block of rows (float32: 256 KiB, a core's L2 holds it and its output)
BLOCK_ELEMENTS = 1 << 16
#: smaller inputs take the shared kernel as is
MIN_SIZE = 1 << 18


def blocked_softmax(table: dict) -> dict:
    """Wrap the Softmax kernel of CPU kernel table ``table`` (in place) for large inputs."""
    kernel = table[r.Softmax]

    def run(prim, x):
        if (x.__class__ is not np.ndarray or x.dtype.kind != "f" or x.itemsize < 4 or x.size < MIN_SIZE
                or not x.flags.c_contiguous or prim.axes != (x.ndim - 1,) or x.shape[-1] > BLOCK_ELEMENTS):
            return kernel(prim, x)
        n = x.shape[-1]
        rows = x.reshape(-1, n)
        out = np.empty_like(rows)
        per = BLOCK_ELEMENTS // n

        def blocks(lo: int, hi: int) -> None:
            for a in range(lo, hi, per):
                b = min(hi, a + per)
                softmax_into(np, rows[a:b], (1,), out[a:b])

        map_chunks(blocks, chunks(rows.shape[0], n * x.itemsize))  # (one chunk on one core)
        return out.reshape(x.shape)

    table[r.Softmax] = run
    return table
