"""GPU memory: the device pool, the pinned host pool, and copies between the host and a GPU.

umx allocates device memory from a CuPy ``MemoryPool`` of its own (installed as the thread-local allocator of its
dispatcher threads, so the user's CuPy allocator is untouched) and stages host transfers through pinned host memory
from CuPy's pinned pool. Copies run on a copy stream, asynchronously, and are ordered with CUDA events; page-fault
migration of managed memory is never used (page faults move data far more slowly than pinned copies).

Reuse: CuPy's pool hands a freed block to the next allocation on the stream it was allocated on, which is safe in
that stream's order. Data read by another stream, or by a copy, is held by the reader's executor until an event
recorded after the read has passed (``CudaExecutor.marks``), so no block is reused under in-flight work.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from ...runtime import memory as _memory
from ...runtime.executor import WorkerExecutor
from ...runtime.threads import MIN_BYTES, chunks, workers
from . import pressure
from ._probe import _cupy

cp = _cupy()
_runtime = cp.cuda.runtime
_H2D = _runtime.memcpyHostToDevice
_D2H = _runtime.memcpyDeviceToHost
#: key in ``array._copies`` of a device-to-host copy that was started but may not have finished:
#: ``(host, event, arrivals)``, arrivals None or per part (see ``start_to_host_in_parts``)
PENDING_HOST = _memory.CopyPlace("pending-host")
#: key in ``array._copies`` of a small output its kernel also writes to the host (a ``direct.MirrorRead``)
MIRROR = _memory.CopyPlace("mirror")
#: device-to-host copies up to this size go straight to pageable memory, in one synchronous call
SMALL_COPY_BYTES = 1 << 16

POOL = cp.cuda.MemoryPool()
_pinned_pool = cp.get_default_pinned_memory_pool()
_lock = threading.RLock()  # MUST be held to change the pinned counters (any thread stages copies; reentrant)
_pinned_live = 0
_peak = 0
_active_at_reset = -1  # the usage when the peak was last reset (see peak)


def malloc(nbytes: int):
    """The allocator of umx's dispatcher threads: umx's own pool; under pressure, see ``pressure.allocate``."""
    try:
        return POOL.malloc(nbytes)
    except cp.cuda.memory.OutOfMemoryError:
        return pressure.allocate(POOL, nbytes, _runtime.getDevice())


# CuPy's per-thread allocator, set and restored directly: ``cupy.cuda.using_allocator`` is a generator-based
# context manager, a few microseconds per eval run on the caller's thread.
_get_thread_allocator = getattr(cp.cuda.memory, "_get_thread_local_allocator", None)
_set_thread_allocator = getattr(cp.cuda.memory, "_set_thread_local_allocator", None)


def use_allocator(allocator=malloc):
    """Make ``allocator`` (umx's pool) this thread's CuPy allocator; returns what to pass to
    :func:`restore_allocator`."""
    if _set_thread_allocator is None:
        ctx = cp.cuda.using_allocator(allocator)
        ctx.__enter__()
        return ctx
    prev = _get_thread_allocator()
    _set_thread_allocator(allocator)
    return prev


def restore_allocator(prev) -> None:
    """Give this thread back the allocator it had before :func:`use_allocator`."""
    if _set_thread_allocator is None:
        prev.__exit__(None, None, None)
    else:
        _set_thread_allocator(prev)


def _unpin(nbytes: int) -> None:
    global _pinned_live
    with _lock:
        _pinned_live -= nbytes


def pinned_empty(shape: tuple, dtype) -> np.ndarray:
    """An uninitialised NumPy array in pinned host memory (from the pool; returned there when freed)."""
    global _pinned_live
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    mem = cp.cuda.alloc_pinned_memory(max(n, 1))
    raw = np.frombuffer(mem, np.uint8, n)  # every view of it keeps it, and so the pinned block, alive
    with _lock:
        _pinned_live += n
    weakref.finalize(raw, _unpin, n)
    return raw.view(dtype).reshape(shape)


def is_pinned(host: np.ndarray) -> bool:
    """Whether ``host`` views memory from the pinned pool (``pinned_empty``)."""
    b = host
    while isinstance(b, np.ndarray):
        b = b.base
    if isinstance(b, memoryview):
        b = b.obj
    return isinstance(b, cp.cuda.PinnedMemoryPointer)


def to_device(host, stream, copy_stream):
    """Start copying host data to the current device on ``copy_stream``: ``(device_array, event, stage)``.

    The result is allocated for ``stream`` (the current stream), so the pool may hand out a block that work
    already queued there still reads; the copy therefore starts after that work. The pinned ``stage`` must be
    kept alive until ``event`` has passed. Called on a dispatcher thread.
    """
    if not host.flags.c_contiguous:
        host = np.ascontiguousarray(host)  # (never for 0-d arrays: it would make them 1-d)
    out = cp.empty(host.shape, host.dtype)
    if host.nbytes and is_pinned(host):
        # already in pinned memory (a CPU result written there for us): one DMA, no stage to fill
        queued = cp.cuda.Event(disable_timing=True)
        queued.record(stream)
        copy_stream.wait_event(queued)
        _runtime.memcpyAsync(out.data.ptr, host.ctypes.data, host.nbytes, _H2D, copy_stream.ptr)
        event = cp.cuda.Event(disable_timing=True)
        event.record(copy_stream)
        return out, event, host
    n = host.nbytes
    if n:
        queued = cp.cuda.Event(disable_timing=True)
        queued.record(stream)
        copy_stream.wait_event(queued)
    stage = None
    if n:
        stage = pinned_empty((n,), np.uint8)
        src = host.reshape(-1).view(np.uint8)
        dst, sp, s = out.data.ptr, stage.ctypes.data, copy_stream.ptr
        if n < MIN_BYTES:
            stage[:] = src
            _runtime.memcpyAsync(dst, sp, n, _H2D, s)
        else:
            # the stage fills in parallel chunks; each chunk's DMA starts as soon as it is filled
            parts = chunks(n, 1)
            fills = [workers().submit(np.copyto, stage[a:b], src[a:b]) for a, b in parts]
            for (a, b), f in zip(parts, fills):
                f.result()
                _runtime.memcpyAsync(dst + a, sp + a, b - a, _H2D, s)
    event = cp.cuda.Event(disable_timing=True)
    event.record(copy_stream)
    return out, event, stage


def start_to_host(data, copy_stream):
    """Start copying device ``data`` (complete once ``copy_stream`` reaches this point) into pinned memory.

    Returns ``(host, event)``: ``host`` may be read once ``event`` has passed; ``data`` must be kept alive till then.
    """
    host = pinned_empty(data.shape, data.dtype)
    if host.nbytes:
        _runtime.memcpyAsync(host.ctypes.data, data.data.ptr, host.nbytes, _D2H, copy_stream.ptr)
    event = cp.cuda.Event(disable_timing=True)
    event.record(copy_stream)
    return host, event


def start_to_host_in_parts(data, copy_stream, parts: int):
    """:func:`start_to_host` in ``parts`` copies, each with its event: a reader may start on the first bytes
    while the rest is in flight. Returns ``(host, event, arrivals)``, ``arrivals`` a list of ``(end, event)``:
    bytes up to ``end`` are on the host once ``event`` has passed."""
    host = pinned_empty(data.shape, data.dtype)
    n = host.nbytes
    step = -(-n // parts)
    dst, src = host.ctypes.data, data.data.ptr
    arrivals = []
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        _runtime.memcpyAsync(dst + lo, src + lo, hi - lo, _D2H, copy_stream.ptr)
        event = cp.cuda.Event(disable_timing=True)
        event.record(copy_stream)
        arrivals.append((hi, event))
    return host, arrivals[-1][1], arrivals


class Upload:
    """A pinned host array sent to a device part by part, as its producer (a CPU kernel) writes it.

    Made by the CPU stream's worker, for a result the planner says a GPU reads next; ``part`` is called by the
    threads that compute the parts, ``finish`` once all are written. The device buffer comes from umx's pool;
    the copies run on the device's upload stream, so they overlap the computation of the next parts.
    """

    __slots__ = ("device", "index", "host", "data", "stream")

    def __init__(self, device, host: np.ndarray):
        self.device = device
        self.index = device.index
        self.host = host
        with cp.cuda.Device(self.index):
            self.data = cp.ndarray(host.shape, host.dtype, memptr=malloc(max(host.nbytes, 1)))
        self.stream = _stream_of(_upload_streams, self.index)

    def part(self, lo: int, hi: int) -> None:
        """Bytes ``lo:hi`` of the host array are written: send them."""
        if hi > lo:
            prev = _runtime.getDevice()
            if prev != self.index:  # (the thread may be the user's: a CPU batch runs inline on the caller)
                _runtime.setDevice(self.index)
            try:
                _runtime.memcpyAsync(self.data.data.ptr + lo, self.host.ctypes.data + lo, hi - lo, _H2D,
                                     self.stream.ptr)
            finally:
                if prev != self.index:
                    _runtime.setDevice(prev)

    def finish(self, array) -> None:
        """Every part is sent: record the device copy as ``array``'s, complete once its event has passed."""
        with cp.cuda.Device(self.index):
            event = cp.cuda.Event(disable_timing=True)
            event.record(self.stream)
        _memory.set_copy(array, self.device, (self.data, event, None))
        if self.data.nbytes >= pressure.SPILL_MIN_BYTES:
            pressure.track_copy(array, self.device)


_upload_streams: dict = {}  # device index -> the stream CPU results are uploaded on
_side_streams: dict = {}  # device index -> the stream for synchronous copies made outside the dispatchers


def _stream_of(streams: dict, index: int):
    """The non-blocking stream ``streams`` keeps for device ``index`` (made on first use)."""
    s = streams.get(index)
    if s is None:
        with cp.cuda.Device(index):
            s = streams.setdefault(index, cp.cuda.Stream(non_blocking=True))
    return s


class GpuLocation:
    """The memory handler of CuPy arrays (see ``umx.runtime.memory.register_location``)."""

    def to_host(self, a) -> np.ndarray:
        """A host copy of evaluated array ``a``'s device data: waits for the data, then copies it (once)."""
        copies = a._copies
        if copies:
            mirror = copies.pop(MIRROR, None)  # (popped: one reader copies the slot out before it is reused)
            if mirror is not None:
                d = a._data
                return mirror.read(d.shape, d.dtype)
            pending = copies.get(PENDING_HOST)
            if pending is not None:
                host, event, _ = pending
                event.synchronize()
                return host
        ex = a._exec
        d = a._data
        if (ex is not None and d.nbytes <= SMALL_COPY_BYTES and d.flags.c_contiguous
                and getattr(ex, "index", -1) == _runtime.getDevice()):
            # Small (an item(), a print): one copy on the producer's stream, after its kernel. To pageable
            # memory the call returns once the copy is done, so no event or synchronize is needed.
            WorkerExecutor.wait(ex, a._seq)  # dispatched: its kernel is on the stream
            host = np.empty(d.shape, d.dtype)
            if d.nbytes:
                # Behind a mark that precedes later work (a decode loop's next step), the copy goes on a side
                # stream after that mark only, so the read does not wait for what was queued after the node.
                event = ex.marks.before_later_work(a._seq, ex.done)
                if event is False:
                    with ex.marks.lock:  # (never into a CUDA graph the stream is capturing)
                        _runtime.memcpyAsync(host.ctypes.data, d.data.ptr, d.nbytes, _D2H, ex.cuda_stream.ptr)
                else:
                    side = _stream_of(_side_streams, ex.index)
                    if event is not None:
                        side.wait_event(event)
                    _runtime.memcpyAsync(host.ctypes.data, d.data.ptr, d.nbytes, _D2H, side.ptr)
            return host
        if ex is not None:
            ex.wait(a._seq)
        index = d.device.id
        side = _stream_of(_side_streams, index)
        # explicit device, stream and allocator on this thread, restored after: the user's state is untouched.
        # (Not ``with side:``: CuPy's stream context falls back to the null stream, not to one set by use().)
        with cp.cuda.Device(index), cp.cuda.using_allocator(malloc):
            prev = cp.cuda.get_current_stream()
            side.use()
            try:
                if not d.flags.c_contiguous:
                    d = cp.ascontiguousarray(d)
                host, _ = start_to_host(d, side)
                side.synchronize()
            finally:
                prev.use()
        return host

    def memory_stats(self) -> dict:
        """``{"gpu": {"active", "peak", "cache", and what memory pressure made umx do (see pressure.py)}}``."""
        return {"gpu": {"active": self.active(), "peak": self.peak(), "cache": self.cache(),
                        **pressure.STATS.as_dict(), "graph_bytes": GRAPHS.nbytes(),
                        **{f"graph_{k}": v for k, v in GRAPHS.stats().items()}}}

    def host_in_parts(self, a):
        """``(host, ready)`` while ``a``'s copy to the host arrives in parts (see ``start_to_host_in_parts``):
        ``ready(lo, hi)`` blocks until bytes ``lo:hi`` of ``host`` have arrived. None if there is no such copy."""
        copies = a._copies
        pending = copies.get(PENDING_HOST) if copies else None
        if pending is None or pending[2] is None:
            return None
        host, _, arrivals = pending

        def ready(lo: int, hi: int) -> None:
            for end, event in arrivals:
                if end > lo:
                    event.synchronize()
                    if end >= hi:
                        return

        return host, ready

    def active(self) -> int:
        return _all_devices(POOL.used_bytes) + _pinned_live

    def peak(self) -> int:
        now = self.active()
        # (as MLX: zero after a reset until something is allocated or freed; then at least the usage now)
        return _peak if now == _active_at_reset else max(_peak, now)

    def reset_peak(self) -> None:
        global _peak, _active_at_reset
        _peak = 0
        _active_at_reset = self.active()

    def sample_peak(self) -> None:
        """Fold the current usage into the peak (called by the dispatchers after each batch)."""
        global _peak
        now = POOL.used_bytes() + _pinned_live
        if now > _peak:
            _peak = now

    def cache(self) -> int:
        """Bytes umx holds on the devices outside live arrays: the pool's free blocks and the CUDA graphs."""
        return _all_devices(POOL.free_bytes) + GRAPHS.nbytes()

    def set_limit(self, limit: int) -> None:
        """Limit umx's pool on every device to ``limit`` bytes (0: none), less what cached CUDA graphs hold there:
        their memory is charged to the limit (graphs.py applies it again whenever they change)."""
        held = GRAPHS.bytes_per_device() if limit else {}
        for i in range(_DEVICES):
            with cp.cuda.Device(i):
                # (CuPy reads a limit of 0 as none: a limit the graphs fill entirely is one byte)
                POOL.set_limit(size=max(limit - held.get(i, 0), 1) if limit else 0)

    def clear_cache(self) -> None:
        GRAPHS.release_all()
        _all_devices(lambda: POOL.free_all_blocks() or 0)
        _pinned_pool.free_all_blocks()


class _Graphs:
    """What the memory location needs of the CUDA graphs' memory: graphs.py, which imports this module, fills it in
    (until then, there are no graphs)."""

    @staticmethod
    def nbytes() -> int:
        return 0

    @staticmethod
    def bytes_per_device() -> dict:
        return {}

    @staticmethod
    def release_all() -> int:
        return 0

    @staticmethod
    def stats() -> dict:
        return {}


GRAPHS = _Graphs()
LOCATION = GpuLocation()
_DEVICES = _runtime.getDeviceCount()


def _all_devices(measure) -> int:
    """``measure()`` (a statistic of umx's pool, which CuPy keeps per device) summed over every device."""
    if _DEVICES == 1:
        return measure()
    total = 0
    for i in range(_DEVICES):
        with cp.cuda.Device(i):
            total += measure()
    return total
