"""Launches of umx's own RawKernels with their parameters packed by one ``struct`` call.

CuPy's ``RawKernel.__call__`` inspects every argument (a device array, a NumPy scalar of some width) at every
launch: for a kernel of twenty parameters that is most of its host time, paid by every eager op that launches
one (a norm, a rotary embedding, an attention step). A :class:`Launch` knows its kernel's parameter types from its
declaration, so a launch packs plain Python values (pointers as ints) into a per-thread buffer and calls
``cuLaunchKernel`` on the current CuPy stream, as ``direct.py`` does for its generated kernels; CUDA graphs
capture it like any launch on the stream.
"""

from __future__ import annotations

import ctypes
import struct
import threading

from ._probe import _cupy

cp = _cupy()
_launch = cp.cuda.driver.launchKernel
_device = cp.cuda.runtime.getDevice
_stream = cp.cuda.get_current_stream
#: a parameter's code in a signature -> its 8-byte slot: a pointer, a 32-bit int or float (padded), a 64-bit int
_SLOTS = {"p": "Q", "i": "i4x", "f": "f4x", "q": "q"}
_MAX_PARAMS = 64


class _Slots(threading.local):
    """One thread's parameter buffer and the pointers to its 8-byte slots (``kernelParams``)."""

    def __init__(self):
        self.values = bytearray(8 * _MAX_PARAMS)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self.values))
        self.pointers = (ctypes.c_uint64 * _MAX_PARAMS)(*range(base, base + 8 * _MAX_PARAMS, 8))
        self.address = ctypes.addressof(self.pointers)


_slots = _Slots()


class Launch:
    """Launches of ``kernel`` (a ``cupy.RawKernel``) whose parameters are ``signature``: one code per parameter,
    ``p`` a pointer (a device address, or 0), ``i`` int32, ``f`` float32, ``q`` int64.

    ``launch(grid, block, *values)`` enqueues it on the calling thread's current CuPy stream and device."""

    __slots__ = ("kernel", "_pack", "_functions")

    def __init__(self, kernel, signature: str):
        if len(signature) > _MAX_PARAMS:
            raise ValueError(f"Launch: {len(signature)} parameters, at most {_MAX_PARAMS}")
        self.kernel = kernel
        self._pack = struct.Struct("<" + "".join(_SLOTS[c] for c in signature)).pack_into
        self._functions: dict = {}  # device -> the kernel's function there (compiled at first use)

    def __call__(self, grid: tuple, block: tuple, *values) -> None:
        dev = _device()
        fn = self._functions.get(dev)
        if fn is None:
            fn = self._functions[dev] = self.kernel.kernel.ptr
        slots = _slots
        self._pack(slots.values, 0, *values)
        gx, gy, gz = (grid + (1, 1))[:3]
        bx, by, bz = (block + (1, 1))[:3]
        _launch(fn, gx, gy, gz, bx, by, bz, 0, _stream().ptr, slots.address, 0)
