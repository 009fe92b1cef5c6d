"""A shared pool of helper threads for splitting one large kernel or copy into chunks run in parallel.

NumPy releases the GIL inside its loops and memcpy, so chunks of one large elementwise op or host copy run on
several cores at once; the first touch of a fresh output's pages is spread over the cores too.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from time import monotonic

import numpy as np

from . import host_pool

#: below this many bytes, one thread is faster than handing out chunks
MIN_BYTES = 4 << 20
#: the cores this process may run on (its affinity: ``taskset``, a container's CPU set), not the machine's
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
#: the least bytes a chunk of a split kernel writes (or, for a reduction, reads): handing a chunk to a pool thread
#: costs more than a smaller chunk saves (bench/cpu_split.py times both)
CHUNK_BYTES = 2 << 20
#: the elements of a chunk's block of work (the unit it calls NumPy on) for each core of the pool: the Python between
#: NumPy's calls holds the GIL, which all the pool's threads contend for, so blocks grow with the pool; smaller
#: blocks stay in a core's cache (bench/cpu_split.py times both)
BLOCK_PER_CORE = 1 << 16
_pool: list = []  # the executor for work handed out a piece at a time (``workers``)
_chunk_pool: list = []  # the threads that take a split's chunks (``map_chunks``)
_local = threading.local()
_last_split = [-1e9]  # when map_chunks last ran marked work
_held = [contextlib.nullcontext]  # entered around every split (see hold_during_splits)


def _init_thread() -> None:
    np.seterr(all="ignore")  # per thread: the same values as the stream's worker, without warnings
    _local.in_pool = True


def hold_during_splits(context) -> None:
    """Enter ``context()`` around every split of :func:`map_chunks` from now on. The CPU backend's holds the BLAS
    under NumPy to one thread meanwhile: a chunk's product must not spread over threads of BLAS's own, which
    would contend with the pool's for the cores."""
    _held[0] = context


def split(fn, n: int) -> list | None:
    """``[fn(lo, hi), ...]`` over chunks of ``range(n)``, at most one per core, run on the pool; None (nothing
    run) where there is one core or ``n < 2``."""
    if CORES < 2 or n < 2:
        return None
    return map_chunks(fn, bounds(n, -(-n // min(n, CORES))))


def in_pool() -> bool:
    """Whether this thread is one of the pool's, or is running its own chunk of a split (work it splits runs on
    it alone: a pool thread waiting on chunks queued behind it could wait for ever, and the splitting thread's
    chunks would queue behind the busy pool)."""
    return getattr(_local, "in_pool", False)


def workers() -> ThreadPoolExecutor:
    """The shared executor (made on first use), one thread per core, for work handed out a piece at a time whose
    pieces the caller waits for one by one (a staging copy's chunks, each sent on as it is filled)."""
    if not _pool:
        _pool.append(ThreadPoolExecutor(max_workers=CORES, thread_name_prefix="umx-chunk",
                                        initializer=_init_thread))
    return _pool[0]


class Chunks:
    """One split's chunks: the caller runs the first, and whoever is free takes the next of the others (the
    caller too, after its first), and the last to finish wakes the caller. A chunk's error is kept, and raised by
    ``map_chunks`` once every chunk has run."""

    __slots__ = ("fn", "bounds", "results", "take", "left", "lock", "done", "error")

    def __init__(self, fn, bounds: list):
        self.fn = fn
        self.bounds = bounds
        self.results = [None] * len(bounds)
        self.take = itertools.count(1).__next__  # (one call, atomic under the GIL: each index goes to one thread)
        self.left = len(bounds)
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.error = None

    def run(self) -> None:
        """Run chunks until none is left to take."""
        n = len(self.bounds)
        while True:
            i = self.take()
            if i >= n:
                return
            self.run_one(i)

    def run_one(self, i: int) -> None:
        """Run chunk ``i``, keep its result or error, and count it done."""
        try:
            self.results[i] = self.fn(*self.bounds[i])
        except BaseException as e:  # (raised on the caller's thread, after the other chunks)
            if self.error is None:
                self.error = e
        with self.lock:
            self.left -= 1
            last = not self.left
        if last:
            self.done.set()


class ChunkPool:
    """``threads`` threads that take the chunks of posted splits, oldest split first. A post wakes one thread per
    chunk beyond the caller's own; a thread with nothing to take sleeps on the pool's condition (``idle``)."""

    def __init__(self, threads: int):
        self.threads = threads
        self.ready = threading.Condition()
        self.jobs: collections.deque = collections.deque()
        for i in range(threads):
            threading.Thread(target=self._serve, name=f"umx-chunk_{i}", daemon=True).start()

    def post(self, job: Chunks) -> None:
        with self.ready:  # (appended under the lock a sleeping thread checks the jobs under: no wake is lost)
            self.jobs.append(job)
            self.ready.notify(len(job.bounds) - 1)

    def idle(self) -> None:
        """Wait until a split is posted. Caller holds ``ready``."""
        while not self.jobs:
            self.ready.wait()

    def _serve(self) -> None:
        _init_thread()
        jobs = self.jobs
        while True:
            with self.ready:
                self.idle()
                job = jobs[0]
            job.run()
            with self.ready:
                if jobs and jobs[0] is job:  # (every chunk taken: the next split's turn)
                    jobs.popleft()
            job = None  # (asleep, a thread holds no split: its outputs return to their pools once the caller's go)


def chunk_pool() -> ChunkPool:
    """The threads that take splits' chunks (made on first use), one fewer than the cores: the caller is one."""
    if not _chunk_pool:
        _chunk_pool.append(ChunkPool(max(CORES - 1, 1)))
    return _chunk_pool[0]


if hasattr(os, "register_at_fork"):  # a forked child has none of the pool's threads: it makes its own
    os.register_at_fork(after_in_child=_chunk_pool.clear)


def map_chunks(fn, bounds: list, mark: bool = True) -> list:
    """``[fn(lo, hi) for lo, hi in bounds]``, the chunks on the pool; this thread takes chunks too rather than only
    waiting, and returns once every chunk has run (raising the first error a chunk raised). On a pool thread,
    and inside this thread's own chunks, all of them in turn on that thread. ``mark``: the time is noted for
    :func:`split_lately` (a product cut into chunks is not counted: see ``backends/cpu/blas.py``)."""
    if getattr(_local, "in_pool", False) or len(bounds) < 2:
        return [fn(lo, hi) for lo, hi in bounds]
    if mark:
        _last_split[0] = monotonic()
    job = Chunks(fn, bounds)
    with _held[0]():
        chunk_pool().post(job)
        # This thread's chunks' own splits (a product inside a reduction's chunk) run on it: queued behind the
        # pool's busy threads, their chunks would wait for the others to finish.
        _local.in_pool = True
        try:
            job.run_one(0)
            job.run()
        finally:
            _local.in_pool = False
        job.done.wait()
    # (a split its caller is done with may wait in the pool's queue till a thread passes: it keeps nothing)
    results, error, job.results, job.fn, job.error = job.results, job.error, None, None, None
    if error is not None:
        raise error
    return results


def split_lately(seconds: float) -> bool:
    """Whether work other than products was cut into chunks on the pool in the last ``seconds``."""
    return monotonic() - _last_split[0] < seconds


def parts(nbytes: int) -> int:
    """How many chunks to cut work of ``nbytes`` into: one per ``CHUNK_BYTES``, at most one per core."""
    return max(1, min(CORES, nbytes // CHUNK_BYTES))


def block_elements() -> int:
    """The elements a pool thread's block of work holds (``BLOCK_PER_CORE`` for each core)."""
    return BLOCK_PER_CORE * CORES


def bounds(n: int, step: int) -> list:
    """``(start, stop)`` ranges of ``step`` items covering ``range(n)`` (the last one shorter)."""
    return [(s, min(n, s + step)) for s in range(0, n, step)]


def chunks(n: int, itemsize: int) -> list:
    """``(start, stop)`` element ranges splitting ``n`` items of ``itemsize`` bytes into :func:`parts` chunks."""
    return bounds(n, -(-n // parts(n * itemsize)))


def add_in_order(partials: list, out: np.ndarray | None = None) -> np.ndarray:
    """``partials[0] + partials[1] + ...`` (arrays of one shape), each element added in that order, so the bits of
    NumPy's reduction over the stacked partials; into ``out`` (default: ``partials[0]``, in place). A large sum
    runs by blocks of its first axis on the pool (``np.add.reduce`` over the list would stack the partials into
    one array first, on one core)."""
    first = partials[0]
    out = first if out is None else out
    if len(partials) < 2:
        if out is not first:
            np.copyto(out, first)
        return out

    def add(key) -> None:
        o = out[key]
        np.add(first[key], partials[1][key], out=o)
        for p in partials[2:]:
            np.add(o, p[key], out=o)

    n = parts(out.nbytes * len(partials))
    if n < 2 or out.ndim == 0 or out.shape[0] < 2 or in_pool():
        add(...)
    else:
        size = out.shape[0]
        map_chunks(lambda lo, hi: add(slice(lo, hi)), bounds(size, -(-size // min(n, size))), False)
    return out


def contiguous(x: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of view ``x`` (``x`` itself where it is one), large copies cut along the first axis
    long enough to give each chunk a part, and run on the pool (NumPy's strided copies run on one core)."""
    if x.flags.c_contiguous:
        return x
    n = parts(x.nbytes)
    axis = next((a for a, size in enumerate(x.shape) if size >= n), None)
    if n < 2 or axis is None or in_pool():
        return np.ascontiguousarray(x)
    # (into a reused block, its pages mapped: the chunks faulting fresh pages in at once contend in the kernel and
    # ran slower than one thread's copy)
    out = host_pool.empty(x.shape, x.dtype)
    lead = (slice(None),) * axis
    size = x.shape[axis]

    def copy(lo: int, hi: int) -> None:
        key = lead + (slice(lo, hi),)
        np.copyto(out[key], x[key])

    map_chunks(copy, bounds(size, -(-size // n)))
    return out
