"""GPU memory pressure: what umx does when a device allocation fails, before it gives up.

In order, until the request fits:

1. return the pool's cached, unused blocks to the driver, and drop cached CUDA graphs (``graphs.py``);
2. drop device *copies* of arrays whose data lives on the host (they are made again on demand);
3. *spill*: move the data of arrays that live only on the device to host memory, oldest first. The array keeps
   its values and its place in the graph; its data is now on the host, and the next GPU op that reads it copies it
   back (once, as for any host array);
4. raise MemoryError naming the request, the device's usage and the limit.

Only buffers of at least ``SPILL_MIN_BYTES`` are tracked: small ones would free little and cost a registration
each. Spilling synchronizes the device first, so every buffer it moves is complete. A kernel that read a spilled
array just before the move still holds the device buffer, so the memory is not reused under it.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from ...runtime import memory as _memory
from ...runtime.node import move_to_host
from ._probe import _cupy

cp = _cupy()

#: device buffers smaller than this are neither tracked nor spilled
SPILL_MIN_BYTES = 1 << 20

_lock = threading.RLock()  # MUST be held to change the registries or to spill; an allocation may recurse here
_resident: dict = {}  # id(array) -> weakref: arrays whose data is a device buffer, oldest first
_copies: dict = {}  # (id(array), device) -> weakref: arrays with a device copy of host data


class SpillStats:
    """What pressure handling has done since start: counters for ``memory_report`` and tests."""

    __slots__ = ("cache_frees", "copies_dropped", "spills", "spilled_bytes", "failures")

    def __init__(self):
        self.cache_frees = self.copies_dropped = self.spills = self.spilled_bytes = self.failures = 0

    def as_dict(self) -> dict:
        return {s: getattr(self, s) for s in self.__slots__}


STATS = SpillStats()
#: called at the first spill (no arguments): from then on GPU executors fetch every input, one may be on the host
SPILL_LISTENERS: list = []
_has_spilled = False


def has_spilled() -> bool:
    """Whether any array was ever spilled to the host (see SPILL_LISTENERS)."""
    return _has_spilled


def _first_spill() -> None:
    global _has_spilled
    if not _has_spilled:
        _has_spilled = True
        for listener in SPILL_LISTENERS:
            listener()


#: callables that free device memory held for speed (cached CUDA graphs), returning the bytes freed
RELEASERS: list = []


def track(a) -> None:
    """Register array ``a``, whose data is a device buffer of at least SPILL_MIN_BYTES, as spillable."""
    with _lock:
        if len(_resident) > 1024 and len(_resident) & 1023 == 0:
            _prune(_resident)
        _resident[id(a)] = weakref.ref(a)


def track_copy(a, device) -> None:
    """Register ``a``'s copy on ``device`` (of data that lives elsewhere) as droppable."""
    with _lock:
        if len(_copies) > 1024 and len(_copies) & 1023 == 0:
            _prune(_copies)
        _copies[(id(a), device)] = weakref.ref(a)


def _prune(registry: dict) -> None:
    for k in [k for k, r in registry.items() if r() is None]:
        del registry[k]


def allocate(pool, nbytes: int, device_index: int):
    """``pool.malloc(nbytes)`` after freeing what can be freed; MemoryError if even that is not enough."""
    with _lock:
        STATS.cache_frees += 1
        ptr = _retry(pool, nbytes)
        if ptr is None and sum(release() for release in RELEASERS):
            ptr = _retry(pool, nbytes)
        if ptr is None and _drop_copies(device_index):
            ptr = _retry(pool, nbytes)
        while ptr is None and _spill_one(device_index):
            ptr = _retry(pool, nbytes)
        if ptr is not None:
            return ptr
        STATS.failures += 1
        limit = _memory.get_memory_limit()
        raise MemoryError(f"cannot allocate {nbytes} bytes on gpu:{device_index}: {pool.used_bytes()} bytes are "
                          f"in use by arrays that cannot move (the memory limit is {limit} bytes; host memory "
                          f"in use: {_memory.HOST.active} bytes)")


def _retry(pool, nbytes: int):
    """The allocation once the pool's cached blocks are returned to the driver, or None if it still fails."""
    pool.free_all_blocks()
    try:
        return pool.malloc(nbytes)
    except cp.cuda.memory.OutOfMemoryError:
        return None


def _drop_copies(device_index: int) -> bool:
    """Forget the device copies of host data on this device; whether any was dropped."""
    dropped = False
    for key, ref in list(_copies.items()):
        a = ref()
        del _copies[key]
        copies = a._copies if a is not None else None
        if not copies:
            continue
        for loc in [loc for loc in copies if getattr(loc, "index", None) == device_index]:
            data = copies[loc]
            data = data[0] if type(data) is tuple else data
            if type(data) is cp.ndarray:
                del copies[loc]
                STATS.copies_dropped += 1
                dropped = True
    return dropped


def _spill_one(device_index: int) -> bool:
    """Move the oldest device-only array on this device to the host; whether one was moved."""
    while _resident:
        key = next(iter(_resident))
        a = _resident.pop(key)()
        if a is None:
            continue
        d = a._data
        if (type(d) is not cp.ndarray or d.base is not None or d.device.id != device_index
                or not d.flags.c_contiguous):  # (a view frees nothing: its base holds the memory)
            continue
        host = a._copies.get(_memory.HOST_COPY) if a._copies else None
        if host is None:
            _memory.check_host_limit(d.nbytes)  # past the host's limit too: MemoryError, naming both
            cp.cuda.Device(device_index).synchronize()  # every enqueued kernel, this buffer's producer included
            host = np.empty(d.shape, d.dtype)
            if d.nbytes:
                cp.cuda.runtime.memcpy(host.ctypes.data, d.data.ptr, d.nbytes, cp.cuda.runtime.memcpyDeviceToHost)
        _first_spill()
        _memory.acquire(host)
        # The array now lives on the host: its planner checks (`_exec` None: by the data's type) and every
        # reader (host_copy; a GPU's fetch) see host data from here on.
        move_to_host(a, host)
        STATS.spills += 1
        STATS.spilled_bytes += d.nbytes
        return True
    return False
