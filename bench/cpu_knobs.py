"""CPU training steps under each setting of the CPU backend's knobs, one table: which setting scales on this host.

Each setting runs in a process of its own (the pool and OpenBLAS's threads start fresh), on bench/train.py's MLP
and CNN steps on the CPU stream, eager and compiled, each the median of ``--repeats`` steps after 3 warm-up steps.
The settings, each a module constant changed before the first step:

- ``base``: as shipped;
- ``blas-own``: products always on OpenBLAS's own threads (``blas.QUIET = 0``), never cut on umx's pool;
- ``blas-pool``: products always cut on umx's pool (``blas.QUIET`` infinite), OpenBLAS held to one thread;
- ``gemm-ctypes``: a chunk's product on the pool (products' and convolutions') calls OpenBLAS's gemm through ctypes
  rather than NumPy (``blas.GEMM_BY_CTYPES``); ``gemm-ctypes-pool``: that, and products always cut on the pool;
- ``conv1``: a convolution's blocks of at most 1 MiB of windows whatever the cores (``kernels.CONV_BUDGET_MAX``
  of 1 MiB), where the shipped ones are its windows over the cores, 1-8 MiB;
- ``conv4``: blocks of at least 4 MiB (``CONV_BUDGET``);
- ``conv-whole``: a convolution's windows gathered whole (up to 64 MiB, as on the GPU) by the pool, then one
  product, cut as any large product is (``blas.matmul``), rather than blocks each with its own product;
- ``pool8``, ``pool4``: umx's pool cut to that many threads (``threads.CORES``);
- ``block256``: split elementwise work in blocks of 256K elements per core (``threads.BLOCK_PER_CORE``);
- ``split256k``, ``split128k``: fused regions of at least 256K (128K) elements cut over the cores
  (``fused.SPLIT_MIN_SIZE``), in chunks of at least 256 KiB (128 KiB) (``threads.CHUNK_BYTES``), where the
  shipped ones cut from 1M elements in chunks of 2 MiB: an MLP's updates and activations of 512 x 512 run on one
  thread;
- ``chunk512k``: chunks of at least 512 KiB for every split (``threads.CHUNK_BYTES``), regions cut as shipped.

``base`` runs first and last: the spread of the two is the host's noise. Ratios are against the first.

Usage: python bench/cpu_knobs.py [--settings a,b,...] [--cases mlp,cnn] [--repeats N]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys

SETTINGS = ("base", "blas-own", "blas-pool", "gemm-ctypes", "gemm-ctypes-pool", "conv1", "conv4", "conv-whole",
            "pool8", "pool4", "block256", "split256k", "split128k", "chunk512k", "base")


def _apply(setting: str) -> None:
    """Change the knob ``setting`` names (see the module's docstring), before any step."""
    import numpy as np

    from umx.backends.cpu import blas
    from umx.backends.cpu import fused as cpu_fused
    from umx.backends.cpu import kernels as cpu_kernels
    from umx.backends.xp import conv as xp_conv
    from umx.runtime import threads

    if setting == "blas-own":
        blas.QUIET = 0.0
    elif setting == "blas-pool":
        blas.QUIET = math.inf
    elif setting.startswith("gemm-ctypes"):
        blas.GEMM_BY_CTYPES = True
        if setting.endswith("-pool"):
            blas.QUIET = math.inf
    elif setting == "conv4":
        cpu_kernels.CONV_BUDGET = 4 << 20
    elif setting.startswith("pool"):
        threads.CORES = int(setting[4:])
    elif setting.startswith("split"):
        elements = int(setting[5:-1]) << 10
        cpu_fused.SPLIT_MIN_SIZE = elements
        threads.CHUNK_BYTES = elements  # (in bytes: the smallest region cut, of 4-byte elements, in four chunks)
    elif setting == "chunk512k":
        threads.CHUNK_BYTES = 512 << 10
    elif setting.startswith("block"):
        threads.BLOCK_PER_CORE = int(setting[5:]) << 10
    elif setting == "conv1":
        cpu_kernels.CONV_BUDGET_MAX = 1 << 20
    elif setting == "conv-whole":
        convolution = xp_conv.convolution

        def whole(xp, prim, x, w, budget=None, **kw):
            if xp is np:
                budget, kw = 64 << 20, dict(kw, parallel=None)
            return convolution(xp, prim, x, w, budget, **kw)

        xp_conv.convolution = whole
    elif setting != "base":
        raise SystemExit(f"unknown setting {setting!r}")


def _steps(setting: str, cases: list, repeats: int) -> None:
    """In this process: apply ``setting``, time the steps, print ``case column milliseconds`` lines."""
    sys.modules["mlx"] = None  # (umx's steps only: bench/train.py times MLX and torch)
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:0] = [os.path.join(here, ".."), here]
    import train
    from _util import median_time

    import umx as mx
    import umx.nn as nn
    import umx.optimizers as optim

    _apply(setting)
    for case in cases:
        sizes = train.FULL[case]
        steps = train._mlx_api_steps((mx, nn, optim), case, sizes, train._data(case, sizes),
                                     mx.default_stream(mx.cpu))
        for name, fn in steps.items():
            print(case, (name or " eager").strip(), median_time(fn, repeats) * 1e3, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated, from the docstring's list")
    ap.add_argument("--cases", default="mlp,cnn", help="comma-separated subset of mlp,lm,cnn")
    ap.add_argument("--repeats", type=int, default=7, help="timed steps per column (default 7)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # (a child process: one setting)
    args = ap.parse_args()
    cases = args.cases.split(",")
    if args.one:
        _steps(args.one, cases, args.repeats)
        return
    print(f"{len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} cores; "
          f"median of {args.repeats} steps, ms; ratio: the first base's time over the setting's (above 1: faster)\n")
    columns = [f"{c} {k}" for c in cases for k in ("eager", "compiled")]
    head = f"{'setting':17}" + "".join(f"{c:>16}" for c in columns)
    print(head)
    print("-" * len(head))
    first = None
    for setting in args.settings.split(","):
        done = subprocess.run([sys.executable, __file__, "--one", setting, "--cases", args.cases,
                               "--repeats", str(args.repeats)], capture_output=True, text=True)
        if done.returncode:
            print(f"{setting:17} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        times = {}
        for line in done.stdout.splitlines():
            case, column, ms = line.split()
            times[f"{case} {column}"] = float(ms)
        first = first or times
        print(f"{setting:17}" + "".join(
            f"{times[c]:9.2f} {first[c] / times[c]:5.2f}x" if c in times else f"{'-':>16}" for c in columns))


if __name__ == "__main__":
    main()
