"""Large CPU reductions: umx (split across cores) against NumPy (one core), and umx held to one core.

Rows: a 16M-element float32 sum, and a (4096, 4096) float32 sum over axis 0 and over axis 1. Times are medians;
the ratio is NumPy's time over umx's (above 1: umx is faster).

Usage: python bench/reduce.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import median_time  # noqa: E402

import umx as mx  # noqa: E402
from umx.backends.cpu import reduce_split  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21, help="timed runs per row (default 21)")
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
