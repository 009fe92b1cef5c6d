"""Memory: where each array's data lives, its copies at other locations, and the statistics and limits.

An evaluated array holds its data at its home location (``array._data``: a NumPy array on the host, a device
array on a GPU) and, once some op on another device has needed it, a copy there (``array._copies``). Copies are made
by the backend that owns the data (registered here with :func:`register_location`), at most once per location.
The keys of ``array._copies`` are Devices and :class:`CopyPlace` objects (the host's copy, a backend's copy in
progress); nothing else.

Host bytes are counted here as arrays gain and lose data; device backends report their own pools.
"""

from __future__ import annotations

import os
import threading
import weakref

import numpy as np

from . import host_malloc, host_pool
from . import tracing as _tracing

__all__ = [
    "get_active_memory", "get_peak_memory", "reset_peak_memory", "get_cache_memory", "set_memory_limit",
    "get_memory_limit", "set_cache_limit", "clear_cache", "set_wired_limit", "get_array_buffer_size",
]

_memory_limit = 0  # 0: no limit set
_cache_limit: int | None = None  # None: the default, the memory limit


class CopyPlace:
    """A key of ``array._copies`` that is not a Device: the host (``HOST_COPY``), or a place a backend declares
    for a copy on its way (the GPU's pending copy to the host, a kernel's mirror). Its repr is its name."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: the key of an array's copy on the host
HOST_COPY = CopyPlace("host")

# type of a device array -> object with to_host(data, array), location(data), active(), peak(), cache(), ...
_locations: dict[type, object] = {}


def register_location(data_type: type, handler) -> None:
    """Called by a device backend: arrays of ``data_type`` live on ``handler``'s devices."""
    _locations[data_type] = handler


_pinned_empty = []  # [fn(shape, dtype) -> NumPy array in pinned memory], registered by a device backend


def register_pinned_allocator(fn) -> None:
    """Called by a device backend: ``fn(shape, dtype)`` gives host arrays its devices copy from fastest."""
    _pinned_empty[:] = [fn]


def pinned_empty(shape: tuple, dtype):
    """An uninitialised host array in pinned memory, or None when no device backend provides it."""
    return _pinned_empty[0](shape, dtype) if _pinned_empty else None


_uploader = []  # [fn(device, pinned host array) -> Upload or None], registered by a device backend


def register_uploader(fn) -> None:
    """Called by a device backend: ``fn(device, host)`` starts sending pinned ``host`` (being filled) to
    ``device``; its result has ``part(lo, hi)`` (bytes ready to send) and ``finish(array)`` (record the copy)."""
    _uploader[:] = [fn]


def start_upload(device, host):
    """An upload of pinned ``host`` to ``device`` (see :func:`register_uploader`), or None."""
    return _uploader[0](device, host) if _uploader else None


def handler_for(data):
    """The location handler of a device array (None for host data)."""
    return _locations.get(type(data))


# Host buffers that arrays' data lives in: id(buffer) -> a weak reference to it. A buffer counts once, from the
# first array that gets it (or a view of it) to its release: counting buffers, not arrays, costs nothing when an
# array is freed (no finalizer per node), and a view keeps its whole buffer alive, so the buffer is what occupies
# memory.
_tracked: dict[int, object] = {}
# A freed buffer's reference is appended here by ``list.append`` itself (no Python frame, so a Ctrl-C cannot
# land in it and leave the bytes counted), and un-counted by the next reader of the counts (``_uncount_freed``).
_dead: list = []
_on_free = _dead.append  # (one bound method for every reference)
# MUST be held to change _tracked and HOST: workers fill arrays and free buffers at once. Reentrant: a buffer may
# be freed on a thread that holds it, and a signal handler may run there.
_lock = threading.RLock()


class _HostBytes:
    """Bytes of host buffers holding arrays' data, and the most held at once."""

    __slots__ = ("active", "peak")

    def __init__(self):
        self.active = 0
        self.peak = 0


HOST = _HostBytes()


class _Counted(weakref.ref):
    """The weak reference to a counted buffer, with what it counts."""

    __slots__ = ("key", "nbytes")


def _uncount_freed() -> None:
    """Un-count the buffers freed since the last call. Each is taken off ``_dead`` only once un-counted, and
    nothing between the two can be interrupted (no call), so an interrupt loses none."""
    with _lock:
        while _dead:
            ref = _dead[-1]
            if _tracked.get(ref.key) is ref:
                del _tracked[ref.key]
                HOST.active -= ref.nbytes
            _dead.pop()


def _buffer(data: np.ndarray) -> np.ndarray:
    """The NumPy array that owns the memory ``data`` views."""
    while type(data.base) is np.ndarray:
        data = data.base
    return data


def acquire(data) -> None:
    """Count ``data``, an array's newly set result, if it is host memory not counted yet."""
    if type(data) is np.ndarray:
        if _dead:  # (first: a freed buffer's id may already be this one's)
            _uncount_freed()
        buf = data if data.base is None else _buffer(data)
        key = id(buf)
        if key in _tracked:
            return
        with _lock:
            if key in _tracked:
                return
            ref = _Counted(buf, _on_free)
            ref.key = key
            ref.nbytes = n = buf.nbytes
            _tracked[key] = ref
            h = HOST
            h.active += n
            if h.active > h.peak:
                h.peak = h.active


def user_memory_limit() -> int:
    """The limit set by :func:`set_memory_limit`, or 0 if none is set (for caches that yield under it)."""
    return _memory_limit


def check_host_limit(nbytes: int) -> None:
    """Refuse a host allocation of ``nbytes`` that would take live arrays above the limit set by the user.

    The CPU has no allocator to wait on: an op whose result would not fit fails with MemoryError (naming
    the request, the usage and the limit), which reaches ``eval`` like any kernel error. Without a user
    limit, only the operating system limits the host.
    """
    lim = _memory_limit
    if _dead:
        _uncount_freed()
    if lim and HOST.active + nbytes > lim:
        raise MemoryError(f"cannot allocate {nbytes} bytes: {HOST.active} bytes are in use and the memory "
                          f"limit is {lim} bytes (see set_memory_limit)")


def host_copy(a) -> np.ndarray:
    """The data of evaluated array ``a`` on the host, copied there (once) if it lives on a device."""
    d = a._data
    if type(d) is np.ndarray or isinstance(d, np.generic):
        return d
    copies = a._copies
    if copies is not None:
        h = copies.get(HOST_COPY)
        if h is not None:
            return h
    handler = _locations.get(type(d))
    if handler is None:
        np.asarray(d)  # a failure placeholder raises its error here
        raise TypeError(f"cannot read data of type {type(d).__name__} on the host")
    tr = _tracing.active  # only copies pay for this check
    if tr is None:
        h = handler.to_host(a)
    else:
        t0 = _tracing.now()
        h = handler.to_host(a)
        src = repr(a._stream.device) if a._stream is not None else type(d).__name__
        tr.copy(h.nbytes, src, "host", t0, _tracing.now(), {"array": f"{a._dtype.name}{list(a._shape)}"})
    set_copy(a, HOST_COPY, h)
    return h


def host_in_parts(a):
    """``(host, ready)``: evaluated ``a``'s data on the host, possibly still arriving. ``ready`` is None when it is
    all there; otherwise ``ready(lo, hi)`` blocks until bytes ``lo:hi`` have arrived, and a reader MUST call it
    before reading them (a device's copy in parts: a reader of the first bytes need not wait for the last)."""
    d = a._data
    if type(d) is not np.ndarray and not isinstance(d, np.generic):
        handler = _locations.get(type(d))
        parts = getattr(handler, "host_in_parts", None)
        if parts is not None:
            r = parts(a)
            if r is not None:
                return r
    return host_copy(a), None


def set_copy(a, location, data) -> None:
    """Record ``data`` as ``a``'s copy at ``location`` (a Device or a :class:`CopyPlace`)."""
    copies = a._copies
    if copies is None:
        a._copies = {location: data}
    else:
        copies[location] = data


def memory_by_location() -> dict:
    """Active, peak and cached bytes per location: ``{"host": {"active", "peak", "cache"}, ...}``.

    A device handler reports per device through ``memory_stats()`` (location name -> that dict) if it has one,
    else its totals go under its ``name`` (default ``"gpu"``).
    """
    _uncount_freed()
    out = {"host": {"active": HOST.active, "peak": HOST.peak, "cache": host_pool.cached_bytes()}}
    for h in _locations.values():
        stats = getattr(h, "memory_stats", None)
        if stats is not None:
            out.update(stats())
        else:
            out[getattr(h, "name", "gpu")] = {"active": h.active(), "peak": h.peak(), "cache": h.cache()}
    return out


def get_active_memory() -> int:
    """Bytes held by live arrays, on the host and every device."""
    _uncount_freed()
    return HOST.active + sum(h.active() for h in _locations.values())


def get_peak_memory() -> int:
    """The most bytes held at once since the start or the last :func:`reset_peak_memory`."""
    return HOST.peak + sum(h.peak() for h in _locations.values())


def reset_peak_memory() -> None:
    """Reset the peak to zero, as MLX does: the next allocation makes it the usage then."""
    _uncount_freed()
    with _lock:
        HOST.peak = 0
    for h in _locations.values():
        h.reset_peak()


def get_cache_memory() -> int:
    """Bytes kept in allocator caches for reuse: device pools, and the host's pool of large buffers."""
    return host_pool.cached_bytes() + sum(h.cache() for h in _locations.values())


def set_memory_limit(limit: int) -> int:
    """Set the memory limit in bytes, returning the previous one (0 removes the limit).

    On the CPU, an op whose result would take the bytes held by live arrays above the limit fails with
    MemoryError when evaluated; ``eval`` raises it, naming the op, and the runtime stays usable.
    """
    global _memory_limit
    if not isinstance(limit, (int, np.integer)) or isinstance(limit, bool):
        raise TypeError(f"set_memory_limit: the limit must be an int, got {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"set_memory_limit: the limit must be non-negative, got {limit}")
    prev = get_memory_limit()
    _memory_limit = int(limit)
    for h in _locations.values():
        h.set_limit(_memory_limit)
    if _cache_limit is None:  # (the cache limit's default follows the memory limit)
        host_malloc.set_cache_limit(get_memory_limit())
    return prev


def get_memory_limit() -> int:
    """The memory limit in bytes (by default, the machine's physical memory)."""
    return _memory_limit or physical_memory()


def set_cache_limit(limit: int) -> int:
    """Set the allocator cache limit in bytes, returning the previous one (0: nothing is cached).

    On the host it bounds the pool of large buffers and the freed memory the C library's heap keeps mapped (see
    ``runtime/host_malloc.py``); on a GPU, the device pool.

    Args:
        limit (int): the most bytes of freed buffers kept for reuse; by default the memory limit.

    Returns:
        int: the previous limit.
    """
    global _cache_limit
    if not isinstance(limit, (int, np.integer)) or isinstance(limit, bool):
        raise TypeError(f"set_cache_limit: the limit must be an int, got {type(limit).__name__}")
    if limit < 0:
        raise ValueError(f"set_cache_limit: the limit must be non-negative, got {limit}")
    prev = get_memory_limit() if _cache_limit is None else _cache_limit
    _cache_limit = int(limit)
    host_pool.set_limit(_cache_limit)
    host_malloc.set_cache_limit(_cache_limit)
    return prev


def set_wired_limit(limit: int) -> int:
    """Accepted for MLX compatibility; wiring memory has no meaning here. Returns the previous value (0)."""
    if limit < 0:
        raise ValueError(f"set_wired_limit: the limit must be non-negative, got {limit}")
    return 0


def clear_cache() -> None:
    """Return cached, unused blocks of the host's and the devices' pools, and the heap's free memory, to the
    system."""
    host_pool.clear()
    host_malloc.trim()
    for h in _locations.values():
        h.clear_cache()


def get_array_buffer_size(a) -> int:
    """The bytes of ``a``'s data buffer."""
    return a.nbytes


def physical_memory() -> int:
    """The host's physical memory in bytes (0 if the system does not say): the one probe of it."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


host_malloc.set_cache_limit(get_memory_limit())  # (the default cache limit, from the start)
