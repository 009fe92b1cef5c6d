"""Large CPU kernels cut into chunks on umx's thread pool: what a chunk's hand-off costs on this host, and how fast
a fused elementwise region and a reduction run with chunks of each size (``runtime.threads.CHUNK_BYTES``).

Rows: the hand-off of empty chunks to 2, 4, 8 and all cores (the pool's threads idle before each call, as between
a step's ops); then ``(x * 2 - y) * y`` and a batch norm's sum over (N, H, W) at several sizes, float32, NumPy on
one thread beside umx with each chunk size. Times are medians; a ratio is NumPy's time over the best umx column's.
Then blocks: a split region's chunk (and a row-blocked softmax's or log-sum-exp's) calls NumPy a block at a time;
a ReLU's gradient, a softmax and a log-sum-exp with each ``BLOCK_PER_CORE`` (a block holds that many elements per
core: larger blocks hold the GIL less often, smaller ones stay in cache). Then the products of bench/train.py's
models: NumPy's matmul (OpenBLAS on its own threads, timed last for each
shape: its threads spin for a while after a call and would slow what runs next), OpenBLAS on one thread, and umx's
split (``backends/cpu/blas.py``) with each ``CHUNK_WORK``.

Usage: python bench/cpu_split.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import median_time  # noqa: E402

import umx as mx  # noqa: E402
from umx.runtime import threads  # noqa: E402

SIZES = (1 << 20, 1 << 22, 1 << 24)  # elements
CHUNKS = (1 << 20, 2 << 20, 4 << 20, 8 << 20)  # bytes


def _hand_offs(runs: int) -> None:
    print(f"hand-off of empty chunks to the pool ({threads.CORES} cores), median of {runs}, after 1 ms idle")
    print(f"{'chunks':>7}  {'us':>8}")
    for n in sorted({2, 4, 8, threads.CORES}):
        if n > threads.CORES:
            continue
        bounds = [(i, i + 1) for i in range(n)]

        def call(bounds=bounds):
            time.sleep(0.001)
            t = time.perf_counter()
            threads.map_chunks(lambda lo, hi: None, bounds)
            return time.perf_counter() - t

        call()
        print(f"{n:7}  {sorted(call() for _ in range(runs))[runs // 2] * 1e6:8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15, help="timed runs per cell (default 15)")
    args = ap.parse_args()
    _hand_offs(args.runs)
    rng = np.random.default_rng(0)
    head = "".join(f"  {'umx ' + str(c >> 20) + ' MiB':>11}" for c in CHUNKS)
    print(f"\nfloat32, ms; umx columns: CHUNK_BYTES (default {threads.CHUNK_BYTES >> 20} MiB)")
    print(f"{'case':30}  {'NumPy':>9}{head}  {'ratio':>6}")
    print("-" * (50 + 13 * len(CHUNKS)))
    saved = threads.CHUNK_BYTES
    for size in SIZES:
        for name, numpy_fn, umx_fn in _cases(rng, size):
            t_np = median_time(numpy_fn, args.runs)
            for _ in range(5):  # (the first calls of a new shape are slow: plans, the pool's threads starting)
                umx_fn()
            times = []
            try:
                for c in CHUNKS:
                    threads.CHUNK_BYTES = c
                    times.append(median_time(umx_fn, args.runs))
            finally:
                threads.CHUNK_BYTES = saved
            cells = "".join(f"  {t * 1e3:11.3f}" for t in times)
            print(f"{name:30}  {t_np * 1e3:9.3f}{cells}  {t_np / min(times):6.2f}", flush=True)
    _blocks(rng, args.runs)
    _products(rng, args.runs)


BLOCKS = (1 << 14, 1 << 16, 1 << 18)  # elements per core


def _blocks(rng, runs: int) -> None:
    cpu = mx.cpu
    x, g = (mx.array(rng.standard_normal((1 << 22,), dtype=np.float32)) for _ in range(2))
    logits = mx.array(rng.standard_normal((2048, 8192), dtype=np.float32))
    mx.eval(x, g, logits)
    cases = (("ReLU gradient 4M", lambda: mx.eval(mx.where(mx.greater(x, 0.0, stream=cpu), g, 0.0, stream=cpu))),
             ("softmax 2048 x 8192", lambda: mx.eval(mx.softmax(logits, axis=-1, stream=cpu))),
             ("logsumexp 2048 x 8192", lambda: mx.eval(mx.logsumexp(logits, axis=-1, stream=cpu))))
    head = "".join(f"  {str(b >> 10) + 'K':>9}" for b in BLOCKS)
    print(f"\nfloat32, ms; columns: BLOCK_PER_CORE elements (default {threads.BLOCK_PER_CORE >> 10}K, "
          f"{threads.CORES} cores)")
    print(f"{'case':30}{head}")
    print("-" * (30 + 11 * len(BLOCKS)))
    saved = threads.BLOCK_PER_CORE
    for name, fn in cases:
        times = []
        try:
            for b in BLOCKS:
                threads.BLOCK_PER_CORE = b
                fn()
                times.append(median_time(fn, runs))
        finally:
            threads.BLOCK_PER_CORE = saved
        print(f"{name:30}" + "".join(f"  {t * 1e3:9.3f}" for t in times), flush=True)


#: (m, k, n) products of bench/train.py's models: the MLP's layers and gradients, the LM's projections, its
#: feed-forward layers and their weight gradients (512 x 4096 x 512: a projection's, cut along its contraction
#: where partial results cost little)
PRODUCTS = ((256, 784, 512), (512, 256, 784), (256, 512, 512), (4096, 512, 512), (4096, 512, 2048),
            (4096, 2048, 512), (512, 4096, 2048), (512, 4096, 512))
WORKS = (1 << 22, 1 << 24, 1 << 26)


def _products(rng, runs: int) -> None:
    from umx.backends.cpu import blas

    head = "".join(f"  {'umx ' + str(w >> 20) + 'M':>9}" for w in WORKS)
    print(f"\nfloat32 products, ms; umx columns: CHUNK_WORK multiply-adds (default {blas.CHUNK_WORK >> 20}M)")
    print(f"{'m x k x n':20}  {'1 thread':>9}{head}  {'NumPy':>9}  {'ratio':>6}")
    print("-" * (54 + 11 * len(WORKS)))
    saved = blas.CHUNK_WORK, blas.QUIET
    blas.QUIET = float("inf")  # (always cut, as in a step whose other work is cut on the pool too)
    for m, k, n in PRODUCTS:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        with blas.one_thread():
            t_one = median_time(lambda a=a, b=b: a @ b, runs)
        times = []
        try:
            for w in WORKS:
                blas.CHUNK_WORK = w
                times.append(median_time(lambda a=a, b=b: blas.matmul(a, b), runs))
        finally:
            blas.CHUNK_WORK = saved[0]
        t_np = median_time(lambda a=a, b=b: a @ b, runs)
        time.sleep(0.3)  # (OpenBLAS's threads asleep again)
        cells = "".join(f"  {t * 1e3:9.3f}" for t in times)
        print(f"{f'{m} x {k} x {n}':20}  {t_one * 1e3:9.3f}{cells}  {t_np * 1e3:9.3f}  {t_np / min(times):6.2f}",
              flush=True)
    blas.QUIET = saved[1]


def _cases(rng, size: int) -> list:
    """``(name, NumPy's call, umx's call)`` of the two cases at ``size`` elements."""
    cpu = mx.cpu
    x, y = rng.standard_normal((2, size), dtype=np.float32)
    bn = rng.standard_normal((size // 64, 64), dtype=np.float32)
    X, Y, BN = mx.array(x), mx.array(y), mx.array(bn)
    mx.eval(X, Y, BN)
    return [(f"(x*2-y)*y {size >> 20}M", lambda: (x * 2 - y) * y,
             lambda: mx.eval(mx.multiply(mx.subtract(mx.multiply(X, 2, stream=cpu), Y, stream=cpu), Y, stream=cpu))),
            (f"sum over rows {size >> 20}M x 64", lambda: bn.sum(axis=0),
             lambda: mx.eval(mx.sum(BN, axis=0, stream=cpu)))]


if __name__ == "__main__":
    main()
