"""Products on the CPU's cores: umx's thread pool splits them, and the BLAS under NumPy runs each piece on one
thread.

OpenBLAS (bundled by NumPy's wheels) spreads each call over threads of its own, which spin for a while after the
call before they sleep. Those threads and umx's pool (which splits elementwise ops and reductions) then contend
for the same cores, and the ops near a product run slower. Here a large product is cut into chunks that umx's
pool runs while OpenBLAS is held to one thread (``openblas_set_num_threads(1)``; the library is found in the
process's memory map), so its own threads stay asleep; a product too small to split runs on the caller's thread,
one thread too. A batch of small products (an attention's 128 of 256 x 64 x 256) gains most: OpenBLAS's hand-offs
cost more than their arithmetic (10.7 ms through NumPy, 2.5 ms one chunk of matrices per core, on the GPU
machine's 16 cores).

OpenBLAS's own threads are faster on a single product of moderate size (256 x 784 x 512: 0.29 ms against 0.65
cut on the pool, whose hand-offs cost more): where nothing else has been cut on the pool lately (an MLP's step,
whose other ops are small), products that would be cut run on OpenBLAS's threads instead, as NumPy calls them.

The thread count is the process's: a BLAS call another thread makes meanwhile (the user's own NumPy, another
stream) runs on one thread too: slower, no less right. Where no OpenBLAS is found (another BLAS, another
platform) or there is one core, products are NumPy's calls as they are.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading

import numpy as np

from ...runtime import host_pool, threads

# (NumPy's wheels bundle OpenBLAS with prefixed 64-bit-integer names; a system OpenBLAS has the plain ones)
_NAMES = (("scipy_openblas", "64_"), ("openblas", "64_"), ("scipy_openblas", ""), ("openblas", ""))

#: products of at most this many multiply-adds are NumPy's calls as they are (OpenBLAS keeps them on one thread)
SMALL_WORK = 1 << 18
#: the least multiply-adds of a chunk handed to a pool thread: a hand-off costs 15-20 us on a 16-core VM, and each
#: chunk packs its operands again (bench/cpu_split.py)
CHUNK_WORK = 1 << 24
#: what an element of a contraction cut's partial results costs against one that a chunk packs: it is written, then
#: read back and added by the pool (Python between NumPy's calls, lines other cores wrote), where packing is BLAS's
#: own copy (bench/cpu_split.py's products table times the cut products against NumPy's calls)
PARTIAL_COST = 8
#: a product that would be cut runs on OpenBLAS's own threads when no other work was cut on the pool in this many
#: seconds (see above)
QUIET = 1.0
#: whether a pool thread's chunk of a product calls BLAS's gemm through ctypes rather than NumPy (see
#: ``chunk_matmul``); UMX_BLAS_CTYPES=0 turns it off, 1 on
GEMM_BY_CTYPES = os.environ.get("UMX_BLAS_CTYPES", "0") == "1"


def _library():
    """``(lib, prefix, suffix)`` of the OpenBLAS loaded in this process (its names are ``prefix + name + suffix``),
    or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in _NAMES:
            if getattr(lib, f"{prefix}_set_num_threads{suffix}", None) is not None:
                return lib, prefix, suffix
    return None


def _openblas(found):
    """``(set_num_threads, get_num_threads)`` of the OpenBLAS ``found`` (``_library()``'s), or None."""
    if found is None:
        return None
    lib, prefix, suffix = found
    set_n = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
    get_n = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
    if set_n is None or get_n is None:
        return None
    set_n.argtypes, get_n.restype = [ctypes.c_int], ctypes.c_int
    return set_n, get_n


def _gemms(found) -> dict:
    """OpenBLAS's ``cblas_sgemm`` and ``cblas_dgemm`` of ``found`` by NumPy dtype character, as ctypes functions
    (which let go of the GIL around the call); empty where not found."""
    if found is None:
        return {}
    lib, prefix, suffix = found
    index = ctypes.c_int64 if suffix == "64_" else ctypes.c_int
    out = {}
    for char, name, real in (("f", "sgemm", ctypes.c_float), ("d", "dgemm", ctypes.c_double)):
        fn = getattr(lib, f"{'scipy_cblas' if prefix == 'scipy_openblas' else 'cblas'}_{name}{suffix}", None)
        if fn is None:
            continue
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, index, index, index, real, ctypes.c_void_p, index,
                       ctypes.c_void_p, index, real, ctypes.c_void_p, index]
        fn.restype = None
        out[char] = fn
    return out


_FOUND = _library() if threads.CORES > 1 else None
_BLAS = _openblas(_FOUND)
_GEMM = _gemms(_FOUND)
_lock = threading.Lock()
_single = [0, 0]  # callers inside one_thread now, and the thread count to put back after the last


class _OneThread:
    """While any caller is inside, BLAS calls run on their caller's thread alone."""

    def __enter__(self):
        with _lock:
            if not _single[0]:
                _single[1] = _BLAS[1]()
                _BLAS[0](1)
            _single[0] += 1

    def __exit__(self, *exc):
        with _lock:
            _single[0] -= 1
            if not _single[0]:
                _BLAS[0](_single[1])


_one_thread = _OneThread()


def one_thread():
    """A context in which BLAS calls run on their caller's thread alone (no effect where BLAS's threads cannot be
    held)."""
    return _one_thread if _BLAS is not None else contextlib.nullcontext()


threads.hold_during_splits(one_thread)  # (every chunk on the pool: products, convolutions, reductions, copies)


def _ld(x: np.ndarray, rows: int, cols: int):
    """``(transposed, leading dimension)`` of matrix ``x`` (``rows`` x ``cols``) as BLAS reads it in row-major
    order, or None where BLAS cannot read it in place (neither axis of unit stride)."""
    item = x.itemsize
    s0, s1 = x.strides
    if s1 == item and s0 % item == 0 and s0 // item >= max(cols, 1):
        return False, s0 // item
    if s0 == item and s1 % item == 0 and s1 // item >= max(rows, 1):
        return True, s1 // item
    return None


def chunk_matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)`` for a chunk on a pool thread: a product of two matrices that BLAS reads in
    place calls its gemm through ctypes, as NumPy calls it (row-major, each operand transposed or not, so the
    same bits), without NumPy between; anything else is NumPy's call. (Whether NumPy's products from several
    threads run at once is what ``bench/blas_threads.py`` asks.)"""
    fn = _GEMM.get(a.dtype.char) if GEMM_BY_CTYPES else None
    if fn is None or a.ndim != 2 or b.ndim != 2 or b.dtype != a.dtype:
        return np.matmul(a, b, out=out)
    m, k = a.shape
    n = b.shape[1]
    pa, pb = a.ctypes.data, b.ctypes.data
    if m < 2 or n < 2 or k < 2 or b.shape[0] != k or pa == pb:  # (NumPy's own routes)
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty((m, n), a.dtype)
    elif out.shape != (m, n) or out.dtype != a.dtype or np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return np.matmul(a, b, out=out)
    la, lb, lo = _ld(a, m, k), _ld(b, k, n), _ld(out, m, n)
    if la is None or lb is None or lo is None or lo[0]:
        return np.matmul(a, b, out=out)
    fn(101, 112 if la[0] else 111, 112 if lb[0] else 111, m, n, k, 1.0, pa, la[1], pb, lb[1], 0.0, out.ctypes.data,
       lo[1])
    return out


def split(fn, n: int) -> list | None:
    """``[fn(lo, hi), ...]`` over chunks of ``range(n)``, one per core, run on the pool with BLAS on one thread
    each; None (nothing run) where BLAS's threads cannot be held (no OpenBLAS found, one core) or ``n < 2``."""
    if _BLAS is None or n < 2:
        return None
    return threads.split(fn, n)


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)``, a large product cut into chunks on the pool's threads (see above): along
    the batch, else along the rows of ``a``, the columns of ``b`` or the contraction (partial products summed),
    whichever copies the fewest elements."""
    if _BLAS is None or a.ndim < 2 or b.ndim < 2:
        return np.matmul(a, b, out=out)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    if a.ndim == 2 and b.ndim == 2:  # (the commonest, and small ones on a decode's path: no broadcast to work out)
        batch: tuple = ()
        work = m * n * k
    else:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        work = math.prod(batch) * m * n * k
    if work <= SMALL_WORK or a.dtype != b.dtype or a.dtype.char not in "fdFD":
        return np.matmul(a, b, out=out)
    if out is None:  # (a large result from the pool's mapped blocks: see runtime/host_pool.py)
        out = host_pool.empty(batch + (m, n), a.dtype)
    # (a product with few rows or columns is as slow as reading its operands: those bytes count too; on a pool
    # thread, a chunk of a split op, no further split)
    parts = 1 if threads.in_pool() else min(
        threads.CORES, max(work // CHUNK_WORK, (a.nbytes + b.nbytes) // threads.CHUNK_BYTES))
    axis: int | None = None
    if batch and batch[0] >= parts:
        axis = 0
    else:
        # Each chunk packs (copies) what it reads of both operands: rows re-read all of b per chunk, columns all
        # of a, and the contraction writes and adds a partial result per chunk. The cut that copies least wins.
        cuts = [(parts * k * n, -2, m), (parts * m * k, -1, n)]
        if not batch:
            cuts.append((PARTIAL_COST * parts * m * n, 1, k))
        axis = min(((cost, a) for cost, a, size in cuts if size >= 8 * parts), default=(0, None))[1]
    if parts < 2 or axis is None:
        with _one_thread:
            return np.matmul(a, b, out=out)
    if not threads.split_lately(QUIET):  # (nothing on the pool for OpenBLAS's spinning threads to slow)
        return np.matmul(a, b, out=out)
    if axis == 1:  # partial products over chunks of the contraction, summed
        partials = threads.map_chunks(lambda lo, hi: chunk_matmul(a[:, lo:hi], b[lo:hi]),
                                      threads.bounds(k, -(-k // parts)), False)
        return threads.add_in_order(partials, out)
    size = out.shape[axis]
    if axis == 0:
        def chunk(lo: int, hi: int) -> None:  # (an operand without the batch axis is broadcast: taken whole)
            chunk_matmul(a[lo:hi] if a.ndim == out.ndim and a.shape[0] > 1 else a,
                         b[lo:hi] if b.ndim == out.ndim and b.shape[0] > 1 else b, out=out[lo:hi])
    elif axis == -2:
        def chunk(lo: int, hi: int) -> None:
            chunk_matmul(a[..., lo:hi, :], b, out=out[..., lo:hi, :])
    else:
        def chunk(lo: int, hi: int) -> None:
            chunk_matmul(a, b[..., lo:hi], out=out[..., lo:hi])
    threads.map_chunks(chunk, threads.bounds(size, -(-size // parts)), False)
    return out


def batched_attention(kernel, prim, q, k, v, *rest):
    """The shared attention kernel ``kernel`` over chunks of the batch (its products are batches of small
    matrices), split over the cores; None where that does not apply (a batch of one, no OpenBLAS found)."""
    batch = q.shape[0]
    if batch < 2 or q.__class__ is not np.ndarray or _BLAS is None:
        return None
    mask = rest[0] if prim.mask in ("bool", "additive") else None
    per_example = mask is not None and mask.ndim == 4 and mask.shape[0] == batch

    def part(lo: int, hi: int):
        extra = list(rest)
        if per_example:
            extra[0] = mask[lo:hi]
        return kernel(prim, q[lo:hi], k[lo:hi], v[lo:hi], *extra)

    parts = split(part, batch)
    return None if parts is None else np.concatenate(parts, axis=0)
