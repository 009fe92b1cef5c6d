"""Batches of small products split over umx's thread pool, with the BLAS under NumPy held to one thread.

NumPy's ``matmul`` of stacked matrices calls BLAS once per matrix, and OpenBLAS spreads each call over all its
threads: for an attention's products (128 matrices of 256 x 64 x 256) the threads' hand-offs cost more than the
arithmetic, and the batch takes 4x the time of the same products run one matrix per core (bench/cpu_split.py's
rows on a 16-core host). Here a batch is cut into one chunk per core of whole matrices, each chunk a NumPy call on
a pool thread, while OpenBLAS runs every call on its caller's thread (``openblas_set_num_threads(1)`` for the
duration: the BLAS is found in the process's memory map, as NumPy's wheels bundle it). Where no OpenBLAS is found
(another BLAS, another platform) nothing is split.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from ...runtime import threads

#: a batch's products are split when each has at most this many multiply-adds (larger ones keep BLAS's threads)
SMALL_MATRIX = 1 << 24
#: ... and the batch has at least this many in all (less is not worth the hand-offs)
SPLIT_MIN = 1 << 22


# (NumPy's wheels bundle OpenBLAS with prefixed 64-bit-integer names; a system OpenBLAS has the plain ones)
_NAMES = (("scipy_openblas", "64_"), ("openblas", "64_"), ("scipy_openblas", ""), ("openblas", ""))


def _openblas():
    """``(set_num_threads, get_num_threads)`` of the OpenBLAS loaded in this process, or None."""
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
            set_n = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
            get_n = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            if set_n is not None and get_n is not None:
                set_n.argtypes, get_n.restype = [ctypes.c_int], ctypes.c_int
                return set_n, get_n
    return None


_BLAS = _openblas() if threads.CORES > 1 else None
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


def split(fn, n: int) -> list | None:
    """``[fn(lo, hi), ...]`` over chunks of ``range(n)``, one per core, run on the pool with BLAS on one thread
    each; None (nothing run) where BLAS's threads cannot be held (no OpenBLAS found, one core) or ``n < 2``."""
    if _BLAS is None or n < 2:
        return None
    step = -(-n // min(n, threads.CORES))
    with _one_thread:
        return threads.map_chunks(fn, [(lo, min(n, lo + step)) for lo in range(0, n, step)])


def batched_matmul(a, b):
    """``a @ b`` of two stacks of matrices with the same batch axes, split over the cores (see the module's
    docstring), or None where that does not apply: other shapes, other dtypes than BLAS's float types, large
    matrices (BLAS's threads serve them better), small batches."""
    if (a.__class__ is not np.ndarray or b.__class__ is not np.ndarray or a.ndim < 3 or a.ndim != b.ndim
            or a.shape[:-2] != b.shape[:-2] or a.dtype != b.dtype or a.dtype.char not in "fdFD"):
        return None
    m, k = a.shape[-2:]
    n = b.shape[-1]
    count = a.size // max(m * k, 1)
    work = m * k * n
    if not work or work > SMALL_MATRIX or work * count < SPLIT_MIN:
        return None
    a3, b3 = a.reshape(count, m, k), b.reshape(count, k, n)  # (views where the stacks allow, else copies)
    out = np.empty((count, m, n), a.dtype)
    if split(lambda lo, hi: np.matmul(a3[lo:hi], b3[lo:hi], out=out[lo:hi]), count) is None:
        return None
    return out.reshape(a.shape[:-1] + (n,))


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
