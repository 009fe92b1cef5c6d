"""Dynamic slices on the GPU by a kernel of umx's own (``sources.dynamic_slice_source``): the block's start is read
and clamped on the device, one thread per element of the block. The shared kernel (``backends/xp/layout.py``)
computes the same with eight or more CuPy calls (a gather or a scatter by index arrays); a decode step writes its
key-value cache this way once per layer and token.
"""

from __future__ import annotations

import functools
import math

from ...primitives import layout as ly
from ._probe import _cupy
from .launch import Launch
from .sources import BLOCK, SIGNATURES, SLICE_MAX_AXES, SLICE_TYPES, dynamic_slice_source
from .strided import contiguous

cp = _cupy()

_START_KINDS = {"i": 1, "l": 2, "q": 2}  # the start array's dtype char -> how the kernel reads it
_MAX_BLOCKS = 4096  # (a grid-stride loop covers the rest)


@functools.cache
def _kernel(itemsize: int, update: bool) -> Launch:
    name = f"umx_dynamic_slice{'_update' if update else ''}_{itemsize}"
    return Launch(cp.RawKernel(dynamic_slice_source(name, itemsize, update), name), SIGNATURES["dynamic_slice"])


def _launch(x, upd, out, start, axes: tuple, block: tuple) -> bool:
    """Run the kernel; False (nothing done) where it does not apply."""
    kind = _START_KINDS.get(start.dtype.char)
    nd = x.ndim
    if kind is None or nd > SLICE_MAX_AXES or x.itemsize not in SLICE_TYPES or start.size not in (1, len(axes)):
        return False
    total = math.prod(block)
    if total == 0:
        return True
    pad = SLICE_MAX_AXES - nd
    slots = {ax: i for i, ax in enumerate(axes)}
    params = []
    for a in range(SLICE_MAX_AXES):
        if a < pad:
            params += (1, 1, -1)
        else:
            params += (block[a - pad], x.shape[a - pad], slots.get(a - pad, -1))
    start = contiguous(start)
    blocks = min(-(-total // BLOCK), _MAX_BLOCKS)
    _kernel(x.itemsize, upd is not None)((blocks,), (BLOCK,), x.data.ptr, (upd if upd is not None else x).data.ptr,
                                         out.data.ptr, start.data.ptr, kind, start.size, total, *params)
    return True


def dynamic_slice(fallback):
    """DynamicSlice's kernel where it applies, else ``fallback``."""

    def run(prim, x, start):
        if type(x) is cp.ndarray and type(start) is cp.ndarray:
            x = contiguous(x)
            out = cp.empty(prim.shape, x.dtype)
            if _launch(x, None, out, start, prim.axes, prim.shape):
                return out
        return fallback(prim, x, start)

    return run


def _update_takes(x, update, start) -> bool:
    """Whether the update kernel takes these operands: device arrays, the update of ``x``'s dtype and rank."""
    return (type(x) is cp.ndarray and type(update) is cp.ndarray and type(start) is cp.ndarray
            and update.dtype == x.dtype and update.ndim == x.ndim)


def _write_update(prim, out, update, start) -> bool:
    """Write ``update`` into ``out`` (C-contiguous, holding the input's values) at ``start``; False where the kernel
    does not apply."""
    return _launch(out, contiguous(update), out, start, prim.axes, update.shape)


def dynamic_slice_update(fallback):
    """DynamicSliceUpdate's kernel where it applies, else ``fallback``."""

    def run(prim, x, update, start):
        if _update_takes(x, update, start):
            out = x.copy()  # (C order; a fraction of cp.array's cost)
            if _write_update(prim, out, update, start):
                return out
        return fallback(prim, x, update, start)

    return run


def update_in_place(prim, x, update, start):
    """DynamicSliceUpdate written into ``x`` itself (a CUDA graph's own input slot, which nothing else reads: see
    ``graphs._in_place``); ``x``, or None where the kernel does not apply."""
    if _update_takes(x, update, start) and x.flags.c_contiguous and _write_update(prim, x, update, start):
        return x
    return None


def install(table: dict) -> None:
    """Put the kernels above in front of the shared ones in the CUDA kernel table."""
    table[ly.DynamicSlice] = dynamic_slice(table[ly.DynamicSlice])
    table[ly.DynamicSliceUpdate] = dynamic_slice_update(table[ly.DynamicSliceUpdate])
