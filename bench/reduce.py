"""Large reductions. CPU: umx (split across cores) against NumPy (one core), and umx held to one core. GPU (where
there is one): reductions over some axes, as training steps make them, against CuPy and torch.

CPU rows: a 16M-element float32 sum, and a (4096, 4096) float32 sum over axis 0 and over axis 1; the ratio is
NumPy's time over umx's (above 1: umx is faster). Then the routes a batch norm's statistics (the sum over
``(N, H, W)`` of a ``(128, 32, 32, 32)`` activation: 131072 rows of 32 channels) may take on the CPU, each with
the CPU time of all the process's threads meanwhile: their ratio is how many cores the route kept busy (on the
GPU machine's 16 cores, umx's sum kept about one busy inside a CNN's step: bench/cpu_ops.py). GPU rows: a batch
norm's statistics over (N, H, W) of an NHWC activation, a layer's bias gradient over (batch, sequence), a layer
norm's row means, and other sums over rows; each op timed to its result on the device (synchronized), the ratio
torch's time over umx's. Times are medians.

Usage: python bench/reduce.py [--runs N] [--no-routes]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import interleaved_medians, median_time  # noqa: E402

import umx as mx  # noqa: E402
from umx.backends.cpu import reduce_split  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21, help="timed runs per row (default 21)")
    ap.add_argument("--no-routes", action="store_true", help="skip the batch norm statistics' CPU routes")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    flat = rng.random(16 << 20, dtype=np.float32)
    square = rng.random((4096, 4096), dtype=np.float32)
    cases = [("16M sum", flat, None), ("4096^2 sum axis 0", square, 0), ("4096^2 sum axis 1", square, 1)]
    print(f"CPU reductions, float32, {os.cpu_count()} cores, median of {args.runs} runs")
    print(f"{'case':20}  {'NumPy':>9}  {'umx':>9}  {'ratio':>6}  {'umx 1 core':>10}")
    print("-" * 62)
    for name, x, axis in cases:
        t_np, t_mx, t_one = _times(x, axis, args.runs)
        print(f"{name:20}  {t_np * 1e3:7.3f}ms  {t_mx * 1e3:7.3f}ms  {t_np / t_mx:6.2f}  {t_one * 1e3:8.3f}ms")
    if not args.no_routes:
        _routes(args.runs)
    if mx.is_available(mx.gpu):
        _gpu(args.runs)


def _routes(runs: int) -> None:
    """The CPU routes of a batch norm's statistics: umx's ops, NumPy's reduction, products with a row of ones
    (OpenBLAS's threads, or one), and chunks of rows on umx's pool (a product or a reduction each)."""
    from umx.backends.cpu import blas
    from umx.runtime import threads

    rng = np.random.default_rng(0)
    first = rng.random((131072, 32), dtype=np.float32)
    # (copies of the same values in other memory, taken in turn: a run does not read the last run's from cache)
    xs = [first] + [first.copy() for _ in range(_COPIES - 1)]
    arrays = [mx.array(x.reshape(128, 32, 32, 32)) for x in xs]
    mx.eval(arrays)
    ones = np.ones((1, len(first)), np.float32)
    wides = [x.reshape(-1, 256) for x in xs]  # (eight rows of 32 side by side: NumPy reduces short rows slowly)
    rows, wide_rows = len(first), len(wides[0])

    def chunked(fn, parts: int, n: int, fold: bool = False):  # (fn(i, lo, hi): copy i's rows lo:hi)
        bounds = threads.bounds(n, -(-n // parts))

        def run(i):
            total = threads.add_in_order(threads.map_chunks(lambda lo, hi: fn(i, lo, hi), bounds))
            return total.reshape(8, 32).sum(0) if fold else total  # (256-wide partial sums to the 32 channels)

        return run

    def held(fn):  # (OpenBLAS on the caller's thread alone)
        def run(i):
            with blas.one_thread():
                return fn(i)
        return run

    routes = {  # route name -> fn(i), the statistics of copy i
        "umx mx.sum over (0, 1, 2)": lambda i: mx.eval(mx.sum(arrays[i], axis=(0, 1, 2), stream=mx.cpu)),
        "umx mx.var over (0, 1, 2)": lambda i: mx.eval(mx.var(arrays[i], axis=(0, 1, 2), stream=mx.cpu)),
        "NumPy add.reduce, axis 0": lambda i: np.add.reduce(xs[i], axis=0),
        "NumPy add.reduce, 256-wide rows": lambda i: np.add.reduce(wides[i], axis=0).reshape(8, 32).sum(0),
        "ones @ x, OpenBLAS's threads": lambda i: ones @ xs[i],
        "ones @ x, one thread": held(lambda i: ones @ xs[i]),
    }
    for parts in sorted({4, 8, threads.CORES}):
        routes[f"{parts} chunks on the pool: ones @ rows"] = chunked(
            lambda i, lo, hi: ones[:, lo:hi] @ xs[i][lo:hi], parts, rows)
        routes[f"{parts} chunks on the pool: add.reduce"] = chunked(
            lambda i, lo, hi: np.add.reduce(wides[i][lo:hi], axis=0), parts, wide_rows, True)
    nxt = _cycle()
    routes = {name: (lambda fn=fn: fn(nxt())) for name, fn in routes.items()}
    print(f"\nCPU routes of a batch norm's statistics, (131072, 32) float32 summed over rows, median of {runs}")
    print(f"{'route':36}  {'wall':>9}  {'CPU':>9}  {'cores':>5}")
    print("-" * 66)
    # OpenBLAS's own threads spin for about 0.1 s after a product: their route is timed after the others, apart,
    # or that CPU time would count for the routes timed next
    spinning = "ones @ x, OpenBLAS's threads"
    quiet = {name: fn for name, fn in routes.items() if name != spinning}
    walls = interleaved_medians(quiet, runs)
    cpus = interleaved_medians(quiet, runs, clock=time.process_time)  # (all the process's threads)
    walls.update(interleaved_medians({spinning: routes[spinning]}, runs))
    cpus.update(interleaved_medians({spinning: routes[spinning]}, runs, clock=time.process_time))
    for name in routes:
        print(f"{name:36}  {walls[name] * 1e3:7.3f}ms  {cpus[name] * 1e3:7.3f}ms  {cpus[name] / walls[name]:5.1f}")


def _gpu(runs: int) -> None:
    """The GPU rows: umx, CuPy and torch on the same float32 data."""
    import cupy as cp

    try:
        import torch
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    cases = [("bn sum (128,32,32,32)/012", (128, 32, 32, 32), (0, 1, 2), "sum"),
             ("bn mean (128,32,32,32)/012", (128, 32, 32, 32), (0, 1, 2), "mean"),
             ("bn var (128,32,32,32)/012", (128, 32, 32, 32), (0, 1, 2), "var"),
             ("bias grad (16,256,512)/01", (16, 256, 512), (0, 1), "sum"),
             ("ln mean (16,256,512)/2", (16, 256, 512), (2,), "mean"),
             ("4096^2 sum axis 0", (4096, 4096), (0,), "sum"),
             ("(8,4096,64) sum axis 1", (8, 4096, 64), (1,), "sum")]
    print(f"\nGPU reductions, float32, median of {runs} runs (synchronized)")
    print(f"{'case':28}  {'umx':>9}  {'CuPy':>9}  {'torch':>9}  {'torch/umx':>9}")
    print("-" * 74)
    for name, shape, axes, fn in cases:
        t_mx, t_cp, t_t = _gpu_times(rng.standard_normal(shape, dtype=np.float32), axes, fn, runs, cp, torch)
        print(f"{name:28}  {t_mx * 1e3:7.3f}ms  {t_cp * 1e3:7.3f}ms  {t_t * 1e3:7.3f}ms  {t_t / t_mx:9.2f}")


def _gpu_times(x: np.ndarray, axes: tuple, fn: str, runs: int, cp, torch) -> tuple:
    """Seconds for umx's, CuPy's and torch's (NaN without a CUDA torch) reduction ``fn`` of ``x`` on the GPU.
    Each library cycles through ``_COPIES`` copies of ``x``, so that a run does not read the last run's input from
    the GPU's L2 cache (50 MiB on an H100; a batch norm's activation is 16 MiB)."""
    a = [mx.array(x) for _ in range(_COPIES)]
    mx.eval(a)
    c = [cp.asarray(x) for _ in range(_COPIES)]
    nxt = _cycle()
    t_mx = median_time(lambda: mx.eval(getattr(mx, fn)(a[nxt()], axis=axes, stream=mx.gpu)), runs)
    t_cp = median_time(lambda: (getattr(cp, fn)(c[nxt()], axis=axes), cp.cuda.Device().synchronize()), runs)
    if torch is None or not torch.cuda.is_available():
        return t_mx, t_cp, float("nan")
    t = [torch.from_numpy(x).cuda() for _ in range(_COPIES)]
    f = {"sum": lambda i: t[i].sum(dim=axes), "mean": lambda i: t[i].mean(dim=axes),
         "var": lambda i: t[i].var(dim=axes, correction=0)}[fn]
    return t_mx, t_cp, median_time(lambda: (f(nxt()), torch.cuda.synchronize()), runs)


_COPIES = 4


def _cycle():
    """A function giving 0, 1, ..., _COPIES - 1, 0, ... on successive calls."""
    state = [-1]

    def nxt() -> int:
        state[0] = (state[0] + 1) % _COPIES
        return state[0]

    return nxt

def _times(x: np.ndarray, axis, runs: int) -> tuple:
    """Seconds for NumPy's sum, umx's on the CPU, and umx's held to one core."""
    a = mx.array(x)
    mx.eval(a)
    t_np = median_time(lambda: np.sum(x, axis=axis), runs)
    t_mx = median_time(lambda: mx.eval(mx.sum(a, axis=axis, stream=mx.cpu)), runs)
    held, reduce_split.MIN_SIZE = reduce_split.MIN_SIZE, 1 << 62
    try:
        t_one = median_time(lambda: mx.eval(mx.sum(a, axis=axis, stream=mx.cpu)), runs)
    finally:
        reduce_split.MIN_SIZE = held
    return t_np, t_mx, t_one

if __name__ == "__main__":
    main()
