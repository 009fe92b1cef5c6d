"""Whether CuPy imports and sees a CUDA device: the one place the backend asks, once."""

from __future__ import annotations

import functools


@functools.cache
def _cupy():
    """CuPy if it imports and sees a CUDA device, else None."""
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
    except Exception:  # no CuPy, no driver, or no device: the GPU is simply unavailable
        return None
    return None
