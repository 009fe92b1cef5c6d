"""Strided views made contiguous by a kernel of umx's own (``sources.strided_copy_source``).

A model's views are slices of rows and transposes that keep the last axis: the query, key and value heads split
out of one projection, the halves of a joined gate and up projection, heads merged back before the output
projection. CuPy's copy kernel works out every element's position from the view's shape, one division per axis
per element, which leaves a copy of 2-byte elements far below the memory's bandwidth. Here the view's axes are
merged where they can be, its rows' units (16 bytes where the row, the strides and the address allow) are
copied by one thread each, and a row's place is worked out once per unit. Views whose last axis is not
contiguous, of more axes, or of 2**31 units or more, go to CuPy as before.

``reshape`` gives a view where the strides allow one, as NumPy's does, and copies through ``contiguous`` where
not. The kernel only enqueues device work, so CUDA graphs capture it.

``copy_list`` makes many whole-buffer copies in one launch (``sources.copy_list_source``): a CUDA graph's inputs
into their slots and its held values into its export area, which were a copy each.
"""

from __future__ import annotations

import ctypes
import functools
import struct
import threading

from ...primitives import shape as sp
from ._probe import _cupy
from .launch import Launch
from .sources import (
    BLOCK,
    COPY_LIST_BYTES,
    COPY_LIST_CHUNK,
    COPY_LIST_MAX,
    COPY_ROW_AXES,
    COPY_UNITS,
    SIGNATURES,
    copy_list_source,
    merged_axes,
    strided_copy_source,
    view_strides,
)

cp = _cupy()

_MAX_BLOCKS = 4096  # (a grid-stride loop covers the rest)
_MAX_UNITS = 2**31 - 1
_LIST = struct.Struct(f"<{3 * COPY_LIST_MAX}Q{COPY_LIST_MAX + 1}I")
_ZEROS = (0,) * COPY_LIST_MAX  # (a short list's unused entries)
_launch = cp.cuda.driver.launchKernel


@functools.cache
def _kernel(unit: int) -> Launch:
    name = f"umx_strided_copy_{unit}"
    return Launch(cp.RawKernel(strided_copy_source(name, unit), name), SIGNATURES["strided_copy"])


def _plan(x):
    """``(unit, total, inner, n1, n2, n3, s0, s1, s2, s3)`` of the kernel's launch for view ``x``, or None."""
    axes = merged_axes(x.shape, x.strides)
    itemsize = x.itemsize
    if not axes or axes[-1][1] != itemsize or len(axes) > COPY_ROW_AXES + 1:
        return None
    inner = axes[-1][0] * itemsize  # (bytes)
    rows = axes[:-1]
    ptr = x.data.ptr
    for unit in COPY_UNITS:  # (widest first)
        if inner % unit == 0 and ptr % unit == 0 and all(s % unit == 0 for _, s in rows):
            break
    total = x.size * itemsize // unit
    if total > _MAX_UNITS:
        return None
    rows = [(1, 0)] * (COPY_ROW_AXES - len(rows)) + rows
    (_, s0), (n1, s1), (n2, s2), (n3, s3) = rows
    return unit, total, inner // unit, n1, n2, n3, s0 // unit, s1 // unit, s2 // unit, s3 // unit


def contiguous(x, out=None):
    """``x`` if it is a C-contiguous CuPy array, else a C-contiguous copy on the device: by umx's kernel where
    ``x`` is a view whose last axis is contiguous (see the module's docstring), else by CuPy (which takes host
    data and scalars too, as ``cupy.ascontiguousarray`` does). ``out``: a C-contiguous array of ``x``'s shape
    and dtype to copy into (always copied, even from contiguous ``x``)."""
    if type(x) is not cp.ndarray:
        return cp.ascontiguousarray(x) if out is None else _copy_into(out, x)
    if x.flags.c_contiguous:
        return x if out is None else _copy_into(out, x)
    plan = _plan(x) if x.size else None
    if plan is None:
        return cp.ascontiguousarray(x) if out is None else _copy_into(out, x)
    unit, total, *params = plan
    if out is None:
        out = cp.empty(x.shape, x.dtype)
    _kernel(unit)((min(-(-total // BLOCK), _MAX_BLOCKS),), (BLOCK,), x.data.ptr, out.data.ptr, total, *params)
    return out


def _copy_into(out, x):
    cp.copyto(out, x)
    return out


def reshape(x, shape: tuple):
    """``x`` reshaped: a view where its strides allow one, else a copy through :func:`contiguous`."""
    if x.flags.c_contiguous or not x.size:
        return x.reshape(shape)
    strides = view_strides(x.shape, x.strides, shape)
    if strides is not None:
        return cp.ndarray(shape, x.dtype, memptr=x.data, strides=strides)
    return contiguous(x).reshape(shape)


def _reshape(prim, x):
    return reshape(x, prim.shape) if type(x) is cp.ndarray else x.reshape(prim.shape)


def _copy(prim, x):
    if type(x) is not cp.ndarray:
        return cp.array(x, copy=True)
    return x.copy() if x.flags.c_contiguous else contiguous(x)


def install(table: dict) -> None:
    """Put the reshape and copy kernels in the CUDA kernel table."""
    table[sp.Reshape] = _reshape
    table[sp.Copy] = _copy


class _ListParams(threading.local):
    """One thread's copy-list parameter (``sources.copy_list_source``'s struct), its count, and the
    ``kernelParams`` array that points at both."""

    def __init__(self):
        self.values = bytearray(COPY_LIST_BYTES + 4)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.values))
        self.pointers = (ctypes.c_uint64 * 2)(base, base + COPY_LIST_BYTES)
        self.address = ctypes.addressof(self.pointers)


_params = _ListParams()


@functools.cache
def _list_kernel():
    name = "umx_copy_list"
    return cp.RawKernel(copy_list_source(name), name)  # (kept: it holds the loaded module)


@functools.cache
def _list_function(device: int) -> int:
    return _list_kernel().kernel.ptr  # (the current device's)


def load_copy_list() -> None:
    """Compile and load the copy-list kernel on the current device now (not under a stream's capture)."""
    _list_function(cp.cuda.runtime.getDevice())


def copy_list(copies: list, stream) -> None:
    """Make ``copies``, ``(destination address, source address, bytes)`` of device memory that does not overlap,
    on CuPy stream ``stream`` (the current device's): ``COPY_LIST_MAX`` of them a launch."""
    copies = [c for c in copies if c[2]]
    fn = _list_function(cp.cuda.runtime.getDevice())
    params = _params
    zeros = _ZEROS
    for at in range(0, len(copies), COPY_LIST_MAX):
        part = copies[at:at + COPY_LIST_MAX]
        first, blocks = [], 0
        for _, _, n in part:
            first.append(blocks)
            blocks += -(-n // COPY_LIST_CHUNK)
        pad = COPY_LIST_MAX - len(part)
        first += [blocks] * (pad + 1)
        _LIST.pack_into(params.values, 0, *[c[1] for c in part], *zeros[:pad], *[c[0] for c in part], *zeros[:pad],
                        *[c[2] for c in part], *zeros[:pad], *first)
        struct.pack_into("<i", params.values, COPY_LIST_BYTES, len(part))
        _launch(fn, blocks, 1, 1, BLOCK, 1, 1, 0, stream.ptr, params.address, 0)
