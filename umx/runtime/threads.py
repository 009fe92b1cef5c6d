"""A shared pool of helper threads for splitting one large kernel or copy into chunks run in parallel.

NumPy releases the GIL inside its loops and memcpy, so chunks of one large elementwise op or host copy run on
several cores at once; the first touch of a fresh output's pages is spread over the cores too.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

#: below this many bytes, one thread is faster than handing out chunks
MIN_BYTES = 4 << 20
CORES = os.cpu_count() or 1
_pool: list = []


def _init_thread() -> None:
    np.seterr(all="ignore")  # per thread: the same values as the stream's worker, without warnings


def workers() -> ThreadPoolExecutor:
    """The shared pool (made on first use), one thread per core."""
    if not _pool:
        _pool.append(ThreadPoolExecutor(max_workers=CORES, thread_name_prefix="umx-chunk",
                                        initializer=_init_thread))
    return _pool[0]


def map_chunks(fn, bounds: list) -> list:
    """``[fn(lo, hi) for lo, hi in bounds]``, the chunks on the pool; this thread takes the first rather than only
    waiting."""
    futures = [workers().submit(fn, lo, hi) for lo, hi in bounds[1:]]
    first = fn(*bounds[0])
    return [first] + [f.result() for f in futures]


def chunks(n: int, itemsize: int) -> list:
    """``(start, stop)`` element ranges splitting ``n`` items into about one chunk per core (at least 1 MiB each)."""
    parts = max(1, min(CORES, n * itemsize // (1 << 20)))
    step = -(-n // parts)
    return [(s, min(n, s + step)) for s in range(0, n, step)]
