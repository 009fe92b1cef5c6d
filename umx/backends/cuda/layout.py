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
def _kernel(itemsize: int, update: bool, part: str = "") -> Launch:
    name = f"umx_dynamic_slice{'_update' if update else ''}_{itemsize}"
    return Launch(cp.RawKernel(dynamic_slice_source(name, itemsize, update), name + part),
                  SIGNATURES["dynamic_slice" + part])


def _params(x, start, axes: tuple, block: tuple) -> list | None:
    """The kernel's parameters from ``start_kind`` on, for a block of ``block`` in ``x`` at ``start`` along
    ``axes``; None where the kernel does not apply."""
    kind = _START_KINDS.get(start.dtype.char)
    nd = x.ndim
    if kind is None or nd > SLICE_MAX_AXES or x.itemsize not in SLICE_TYPES or start.size not in (1, len(axes)):
        return None
    pad = SLICE_MAX_AXES - nd
    slots = {ax: i for i, ax in enumerate(axes)}
    params = [kind, start.size, math.prod(block)]
    for a in range(SLICE_MAX_AXES):
        if a < pad:
            params += (1, 1, -1)
        else:
            params += (block[a - pad], x.shape[a - pad], slots.get(a - pad, -1))
    return params


def _launch(x, upd, out, start, axes: tuple, block: tuple) -> bool:
    """Run the kernel; False (nothing done) where it does not apply."""
    params = _params(x, start, axes, block)
    if params is None:
        return False
    total = params[2]
    if total == 0:
        return True
    start = contiguous(start)
    blocks = min(-(-total // BLOCK), _MAX_BLOCKS)
    _kernel(x.itemsize, upd is not None)((blocks,), (BLOCK,), x.data.ptr, (upd if upd is not None else x).data.ptr,
                                         out.data.ptr, start.data.ptr, *params)
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


def update_pair_in_place(prim, x, update, start, prim2, x2, update2, start2) -> bool:
    """Two DynamicSliceUpdates, each written into its ``x`` itself (as :func:`update_in_place`), by one launch: a
    decode step's keys and values, written at one position into caches of one shape. False (neither written)
    where they differ in shape, dtype, axes or start, or the kernel does not apply."""
    if (start2 is not start or prim2.axes != prim.axes or x2.shape != x.shape or x2.dtype != x.dtype
            or update2.shape != update.shape or not _update_takes(x, update, start)
            or not _update_takes(x2, update2, start) or not x.flags.c_contiguous or not x2.flags.c_contiguous):
        return False
    params = _params(x, start, prim.axes, update.shape)
    if params is None or not params[2]:
        return False
    blocks = min(-(-2 * params[2] // BLOCK), _MAX_BLOCKS)
    _kernel(x.itemsize, True, "_pair")((blocks,), (BLOCK,), contiguous(update).data.ptr, x.data.ptr,
                                       contiguous(update2).data.ptr, x2.data.ptr, contiguous(start).data.ptr,
                                       *params)
    return True


def install(table: dict) -> None:
    """Put the kernels above in front of the shared ones in the CUDA kernel table."""
    table[ly.DynamicSlice] = dynamic_slice(table[ly.DynamicSlice])
    table[ly.DynamicSliceUpdate] = dynamic_slice_update(table[ly.DynamicSliceUpdate])
