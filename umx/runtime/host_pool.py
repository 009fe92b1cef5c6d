"""A pool of large host buffers, reused for the outputs of large CPU kernels.

A fresh 64 MiB NumPy array costs 16,384 page faults on its first write, each one a trip into the kernel to map
and zero a page: several times the cost of the multiply that fills it (bench/suite.py). Buffers
of at least ``MIN_BYTES`` are therefore handed out from here and, once the last array viewing one is freed, kept
(pages mapped) for the next output of that size, up to the cache limit.

Arrays view a block through one NumPy array whose finalizer returns the block to the pool, so the pool sees a
block come back only when every view of it is gone.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref

import numpy as np

#: outputs smaller than this come from NumPy's allocator, as usual
MIN_BYTES = 4 << 20
_GRAIN = 1 << 20  # block sizes are rounded up to this, so that near sizes share blocks

# RLock: a finalizer returning a block may run (from the garbage collector) on a thread that holds the lock
_lock = threading.RLock()
_free: dict[int, list] = {}  # block size -> free blocks of that size
_cached = [0]  # bytes in free blocks
_limit = [None]  # at most this many bytes cached (None: until set, an eighth of physical memory)
# id(owner) -> a weak reference to it, for every live owner of a block (see ``owns``)
_owners: dict[int, weakref.ref] = {}


def empty(shape: tuple, dtype, min_bytes: int = MIN_BYTES) -> np.ndarray:
    """An uninitialised host array, from a reused block when it has at least ``min_bytes``."""
    dtype = np.dtype(dtype)
    n = dtype.itemsize
    for s in shape:
        n *= s
    if n < min_bytes:
        return np.empty(shape, dtype)
    size = -(-n // _GRAIN) * _GRAIN
    block = None
    with _lock:
        blocks = _free.get(size)
        if blocks:
            block = blocks.pop()
            _cached[0] -= size
    if block is None:
        block = np.empty(size, np.uint8)  # (pages mapped on first touch: by the kernel's threads, in parallel)
    # The owner views the block through a memoryview, so NumPy stops collapsing bases at it: every view of the
    # result has the owner as its base, and the block returns to the pool when the last view is gone.
    owner = np.frombuffer(memoryview(block), np.uint8, n)
    key = id(owner)
    _owners[key] = weakref.ref(owner)
    weakref.finalize(owner, _give_back, block, key)
    return owner.view(dtype).reshape(shape)


def owns(owner: np.ndarray) -> bool:
    """Whether ``owner`` (an array whose base is not an array) is the one view of a block of this pool: nothing
    but arrays that view ``owner`` reaches the block, so that a reader may take it over (see cpu/donate.py)."""
    ref = _owners.get(id(owner))
    return ref is not None and ref() is owner


def _give_back(block: np.ndarray, key: int) -> None:
    _owners.pop(key, None)
    size = block.nbytes
    with _lock:
        if _cached[0] + size > (_limit[0] if _limit[0] is not None else _default_limit()):
            return  # over the cache limit: freed now
        _free.setdefault(size, []).append(block)
        _cached[0] += size


def cached_bytes() -> int:
    """Bytes held in free blocks."""
    return _cached[0]


def set_limit(limit: int) -> None:
    """Cache at most ``limit`` bytes (0: none), freeing blocks above it now."""
    _limit[0] = cap = limit
    with _lock:
        for size in sorted(_free, reverse=True):
            blocks = _free[size]
            while blocks and _cached[0] > cap:
                blocks.pop()
                _cached[0] -= size


def clear() -> None:
    """Free every cached block."""
    with _lock:
        _free.clear()
        _cached[0] = 0


@functools.cache
def _default_limit() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8
    except (ValueError, OSError, AttributeError):
        return 1 << 30
