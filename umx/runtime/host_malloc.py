"""The C library's heap as a cache of freed host memory.

NumPy takes array buffers from ``malloc``. glibc serves a buffer above its mmap threshold from fresh pages and
returns the free top of its heap to the system once it passes the trim threshold; both start at 128 KiB and move
only as buffers come and go. A training step frees and asks again for buffers of a few MiB each time, so every
step would fault in megabytes of new pages, each page zeroed by the kernel on first touch: the step's kernels
would pay for the pages they write, again and again (bench/train.py's CPU rows with ``UMX_HOST_MALLOC=system``
show the cost).

So on glibc umx sets the mmap threshold to glibc's own ceiling for it (32 MiB) and the trim threshold to the
cache limit (``mx.set_cache_limit``, at most ``HEAP_CACHE_MAX``): freed memory up to that much stays mapped for
the next buffer, as a GPU allocator's cache does (glibc applies the trim threshold to each of its arenas: the
main one and those of threads that allocate). ``mx.set_cache_limit(0)`` puts back glibc's starting values and
``mx.clear_cache()`` trims the heap. Set ``UMX_HOST_MALLOC=system`` (or any of glibc's own malloc settings, in
``MALLOC_*_`` variables or ``GLIBC_TUNABLES``) and umx leaves the allocator as it is.
"""

from __future__ import annotations

import ctypes
import os

#: the most freed heap memory kept mapped for reuse
HEAP_CACHE_MAX = 128 << 20
#: buffers above this come from fresh pages: glibc's ceiling for its own moving threshold
MMAP_THRESHOLD = 32 << 20
#: glibc's starting values of both thresholds (``mx.set_cache_limit(0)`` puts them back)
GLIBC_DEFAULT = 128 << 10

_M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


def _libc():
    """glibc's functions, or None where the C library is another one, or the user has set malloc up."""
    if os.environ.get("UMX_HOST_MALLOC", "").lower() == "system":
        return None
    if "malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
            k.startswith("MALLOC_") and k.endswith("_") for k in os.environ):
        return None
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # (TypeError: Windows, where there is no process-wide library to open)
        return None
    # (only glibc has gnu_get_libc_version: musl's mallopt is a stub)
    return libc if all(hasattr(libc, f) for f in ("gnu_get_libc_version", "mallopt", "malloc_trim")) else None


_lib = _libc()
_trim_threshold = [GLIBC_DEFAULT]


def managed() -> bool:
    """Whether umx sets the C library's malloc thresholds in this process."""
    return _lib is not None


def set_cache_limit(limit: int) -> None:
    """Keep up to ``min(limit, HEAP_CACHE_MAX)`` bytes of freed heap memory mapped (0: glibc's starting values);
    a lower limit than before returns the free memory now."""
    if _lib is None:
        return
    threshold = min(limit, HEAP_CACHE_MAX)
    if threshold < GLIBC_DEFAULT:
        threshold = mmap = GLIBC_DEFAULT
    else:
        mmap = max(min(MMAP_THRESHOLD, threshold), GLIBC_DEFAULT)
    _lib.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap))
    _lib.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(threshold))
    lower = threshold < _trim_threshold[0]
    _trim_threshold[0] = threshold
    if lower:
        trim()


def trim() -> None:
    """Return the heap's free memory to the system."""
    if _lib is not None:
        _lib.malloc_trim(ctypes.c_size_t(0))
