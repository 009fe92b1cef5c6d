"""The attention kernel's batch split over umx's thread pool, with the BLAS under NumPy held to one thread.

The shared attention kernel computes a batch of small products (an attention's 128 of 256 x 64 x 256 and back)
through NumPy's ``matmul``, which calls BLAS once per matrix, and OpenBLAS spreads each call over all its
threads: their hand-offs cost more than the arithmetic (such a batch took 10.7 ms through NumPy and 2.5 ms one
chunk of matrices per core, on the GPU machine's 16 cores). Here the kernel runs on chunks of the batch on the
pool's threads, while OpenBLAS runs every call on its caller's thread (``openblas_set_num_threads(1)`` for the
duration: the BLAS is found in the process's memory map, as NumPy's wheels bundle it). Where no OpenBLAS is found
(another BLAS, another platform) nothing is split. The thread count is the process's: a BLAS call another thread
makes meanwhile (the user's own NumPy, another stream) runs on one thread too: slower, no less right. (Batched
``Matmul`` nodes split the same way made a whole LM training step slower on a 2-core host, so they keep NumPy's
call.)
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from ...runtime import threads

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
