"""Whether BLAS products called from several threads at once run at once: the question behind umx's CPU products
and convolutions, which cut a product into chunks and run each on a pool thread with OpenBLAS held to one thread.

An earlier 16-core run found such chunks taking one core's worth of CPU time, as long as one thread's product.
Either NumPy keeps the GIL through its product, or the OpenBLAS it bundles serializes calls from several threads.
This script tells them apart: T plain threads each run the same number of products on operands of their own,
through NumPy (``np.matmul`` with ``out=``) and through OpenBLAS's ``cblas_sgemm`` called by ctypes (which lets go
of the GIL around the call), with OpenBLAS held to one thread. For each, the wall time of the round against one
thread's (``speedup``: T for calls that run at once, 1 for calls that take turns) and the threads' CPU time over the
wall time (``busy``: the cores kept busy). A NumPy elementwise add (which lets go of the GIL) is the control.

Then whole products by route: NumPy's call on OpenBLAS's own threads, umx's cut into chunks on its pool (as a busy
step's products are; each chunk NumPy's call, or gemm called through ctypes: ``blas.chunk_matmul``), and one
thread.

Usage: python bench/blas_threads.py [--threads 1,2,4,8,16] [--repeats N]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from umx.backends.cpu import blas  # noqa: E402
from umx.runtime import threads  # noqa: E402

# (matrices, rows, contraction, columns) of one thread's product: a convolution's chunk of windows by its weight,
# an MLP's chunk of rows, a batch norm's sum as a product with a row of ones, a square product, and a chunk of an
# attention's batch of products (through ctypes, one gemm a matrix)
SHAPES = {
    "conv chunk 2048x288 @ 288x64": (1, 2048, 288, 64),
    "MLP rows 256x512 @ 512x512": (1, 256, 512, 512),
    "ones 1x8192 @ 8192x32": (1, 1, 8192, 32),
    "square 512x512 @ 512x512": (1, 512, 512, 512),
    "attention 16 x 256x64 @ 64x256": (16, 256, 64, 256),
}
ROUTES = {  # whole products, by route
    "conv 32768x288 @ 288x64": (32768, 288, 64),
    "MLP 256x784 @ 784x512": (256, 784, 512),
    "ones 1x131072 @ 131072x32": (1, 131072, 32),
}


def _cblas():
    """OpenBLAS's ``cblas_sgemm`` (row major, no transposes) as ``sgemm(a, b, out)``, or None where not found."""
    paths = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "openblas" in line.lower() and ".so" in line:
                paths.add(line.split()[-1])
    for path in sorted(paths):
        lib = ctypes.CDLL(path)
        for name, wide in (("scipy_cblas_sgemm64_", True), ("cblas_sgemm64_", True), ("scipy_cblas_sgemm", False),
                           ("cblas_sgemm", False)):
            fn = getattr(lib, name, None)
            if fn is None:
                continue
            i = ctypes.c_int64 if wide else ctypes.c_int32
            fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i, i, i, ctypes.c_float, ctypes.c_void_p, i,
                           ctypes.c_void_p, i, ctypes.c_float, ctypes.c_void_p, i]
            fn.restype = None

            def sgemm(a, b, out, fn=fn):
                m, k = a.shape
                n = b.shape[1]
                fn(101, 111, 111, m, n, k, 1.0, a.ctypes.data, k, b.ctypes.data, n, 0.0, out.ctypes.data, n)

            return sgemm
    return None


def _round(work, t: int, reps: int) -> tuple:
    """Wall seconds of ``t`` threads each calling ``work(i)`` ``reps`` times after a barrier, and their CPU
    seconds summed."""
    barrier = threading.Barrier(t + 1)
    cpu = [0.0] * t

    def body(i):
        barrier.wait()
        c = time.thread_time()
        for _ in range(reps):
            work(i)
        cpu[i] = time.thread_time() - c
        barrier.wait()

    ts = [threading.Thread(target=body, args=(i,)) for i in range(t)]
    for th in ts:
        th.start()
    barrier.wait()
    start = time.perf_counter()
    barrier.wait()
    wall = time.perf_counter() - start
    for th in ts:
        th.join()
    return wall, sum(cpu)


def _speedups(work, counts: list, reps: int, repeats: int) -> list:
    """Per thread count ``t``: ``"speedup / busy"``, ``t`` times one thread's wall time over ``t`` threads' (the
    medians), and the threads' CPU time over their wall time. The counts run in turns, one round each per
    repeat, so a host whose speed drifts slows them alike."""
    rounds: dict = {t: [] for t in sorted({1, *counts})}
    for _ in range(repeats):
        for t in rounds:
            rounds[t].append(_round(work, t, reps))
    one = statistics.median(w for w, _ in rounds[1])
    return [f"{t * one / statistics.median(w for w, _ in rounds[t]):.1f}x / "
            f"{statistics.median(c / w for w, c in rounds[t]):.1f}" for t in counts]


def _config() -> str:
    for path in sorted({line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line.lower()
                        and ".so" in line}):
        lib = ctypes.CDLL(path)
        for name in ("scipy_openblas_get_config64_", "openblas_get_config64_", "scipy_openblas_get_config",
                     "openblas_get_config"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return "no OpenBLAS found"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default=None, help="thread counts (default 1, 2, 4, ... up to the cores)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    counts = ([int(t) for t in args.threads.split(",")] if args.threads
              else sorted({1, *[c for c in (2, 4, 8, 16, 32) if c <= threads.CORES], threads.CORES}))
    print(f"NumPy {np.__version__}, Python {sys.version.split()[0]}, {threads.CORES} cores; {_config()}")
    if blas._BLAS is None:
        print("no OpenBLAS to hold to one thread: nothing to measure")
        return
    sgemm = _cblas()
    rng = np.random.default_rng(0)
    top = max(counts)
    with blas.one_thread():
        print("\nT threads at once, each its own products (OpenBLAS held to one thread): speedup over one thread "
              "(T when they run at once) / cores busy")
        head = ["shape", "route"] + [f"T={t}" for t in counts]
        print("| " + " | ".join(head) + " |")
        print("|" + " --- |" * len(head))
        for label, (batch, m, k, n) in SHAPES.items():
            lead = (batch,) if batch > 1 else ()
            ops = [(rng.standard_normal(lead + (m, k), np.float32), rng.standard_normal(lead + (k, n), np.float32),
                    np.empty(lead + (m, n), np.float32)) for _ in range(top)]
            reps = max(2, int(4e7 / (batch * m * k * n)))
            routes = {"np.matmul": lambda i, ops=ops: np.matmul(ops[i][0], ops[i][1], out=ops[i][2])}
            if sgemm is not None and batch > 1:
                routes["cblas_sgemm (ctypes)"] = lambda i, ops=ops: [sgemm(a, b, o) for a, b, o in zip(*ops[i])]
            elif sgemm is not None:
                routes["cblas_sgemm (ctypes)"] = lambda i, ops=ops: sgemm(*ops[i])
            for name, work in routes.items():
                print(f"| {label} | {name} | " + " | ".join(_speedups(work, counts, reps, args.repeats)) + " |")
        xs = [(rng.standard_normal(1 << 20, np.float32), np.empty(1 << 20, np.float32)) for _ in range(top)]
        work = lambda i: np.add(xs[i][0], 1.0, out=xs[i][1])  # noqa: E731
        print("| add 1M float32 (control) | np.add | " + " | ".join(_speedups(work, counts, 20, args.repeats)) + " |")

    print("\nWhole products by route, ms (median of repeats)")
    print("| product | OpenBLAS's threads | umx's pool (NumPy's calls) | umx's pool (gemm by ctypes) | one thread |")
    print("| --- | --- | --- | --- | --- |")
    quiet = blas.QUIET
    for label, (m, k, n) in ROUTES.items():
        a = rng.standard_normal((m, k), np.float32)
        b = rng.standard_normal((k, n), np.float32)

        def timed(fn):
            fn()
            ts = []
            for _ in range(max(args.repeats, 7)):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            return f"{statistics.median(ts) * 1e3:.2f}"

        native = timed(lambda a=a, b=b: np.matmul(a, b))
        blas.QUIET = float("inf")  # (as in a step whose other work is cut on the pool)
        threads.map_chunks(lambda lo, hi: None, [(0, 1), (1, 2)])
        by_ctypes = blas.GEMM_BY_CTYPES
        try:
            pool = {}
            for flag in (False, True):
                blas.GEMM_BY_CTYPES = flag
                pool[flag] = timed(lambda a=a, b=b: blas.matmul(a, b))
        finally:
            blas.QUIET, blas.GEMM_BY_CTYPES = quiet, by_ctypes
        with blas.one_thread():
            single = timed(lambda a=a, b=b: np.matmul(a, b))
        print(f"| {label} | {native} | {pool[False]} | {pool[True]} | {single} |")


if __name__ == "__main__":
    main()
