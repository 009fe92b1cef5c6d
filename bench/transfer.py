"""Unified memory under load: a 64 MiB float32 array through 4 round trips between the GPU and the CPU.

Each round is a multiply on the GPU, then a multiply on the CPU; the scheduler copies the array across each time
(4 copies to the host, 3 back: the first GPU op reads data already there), through pinned memory on copy streams.
Timed as ``eval`` of the last result, median of several runs, beside a plain pinned memcpy of the same size in both
directions measured in the same run, and the 8 multiplies on one device alone.

Usage: python bench/transfer.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import median_ms  # noqa: E402

import umx as mx  # noqa: E402

N = 16 << 20  # float32 elements: 64 MiB
ROUNDS = 4
TARGET_MS = 20.0
MLX_MS = 101.0  # reference: MLX 0.32.4, CUDA backend, H100



def rounds(x, d_gpu, d_cpu):
    for _ in range(ROUNDS):
        x = mx.multiply(x, 1.0001, stream=d_gpu)
        x = mx.multiply(x, 0.9999, stream=d_cpu)
    return x


def pinned_memcpy_ms(runs: int) -> tuple:
    """Milliseconds for one 64 MiB copy host->device and device->host with pinned memory (CuPy, by hand)."""
    import cupy

    nbytes = N * 4
    dev = cupy.empty(N, np.float32)
    mem = cupy.cuda.alloc_pinned_memory(nbytes)
    host = np.frombuffer(mem, np.float32, N)
    host[:] = 1.0
    s = cupy.cuda.Stream(non_blocking=True)
    rt = cupy.cuda.runtime

    def h2d():
        rt.memcpyAsync(dev.data.ptr, host.ctypes.data, nbytes, rt.memcpyHostToDevice, s.ptr)
        s.synchronize()

    def d2h():
        rt.memcpyAsync(host.ctypes.data, dev.data.ptr, nbytes, rt.memcpyDeviceToHost, s.ptr)
        s.synchronize()

    return median_ms(h2d, runs), median_ms(d2h, runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    host = rng.random(N, dtype=np.float32) + 0.5
    mib = N * 4 / 2**20
    if not mx.is_available(mx.gpu):
        print("no CUDA GPU here (need CuPy and a CUDA device): skipped the gpu<->cpu round trips")
        x = mx.array(host)
        t_cpu = median_ms(lambda: mx.eval(rounds(x, mx.cpu, mx.cpu)), args.runs)
        print(f"{2 * ROUNDS} multiplies of {mib:.0f} MiB on the CPU alone: {t_cpu:.1f} ms")
        return
    x = mx.multiply(mx.array(host), 1.0, stream=mx.gpu)  # lives on the GPU
    mx.eval(x)
    out = rounds(x, mx.gpu, mx.cpu)
    expect = host.astype(np.float64) * (1.0001 * 0.9999) ** ROUNDS
    err = np.max(np.abs(np.asarray(out) - expect) / expect)
    t = median_ms(lambda: mx.eval(rounds(x, mx.gpu, mx.cpu)), args.runs)
    t_gpu = median_ms(lambda: mx.eval(rounds(x, mx.gpu, mx.gpu)), args.runs)
    xc = mx.array(host)
    t_cpu = median_ms(lambda: mx.eval(rounds(xc, mx.cpu, mx.cpu)), args.runs)
    h2d, d2h = pinned_memcpy_ms(args.runs)
    copies_d2h, copies_h2d = ROUNDS, ROUNDS - 1
    moved = (copies_d2h + copies_h2d) * N * 4
    copy_floor = copies_d2h * d2h + copies_h2d * h2d
    print(f"{mib:.0f} MiB float32, {ROUNDS} round trips gpu->cpu ({copies_d2h} copies to the host, {copies_h2d} back),"
          f" median of {args.runs} runs; max relative error {err:.1e}")
    print()
    print(f"{'what':44} {'ms':>8} {'GB/s':>8}")
    print("-" * 62)
    print(f"{'umx: 4 round trips (8 multiplies, 7 copies)':44} {t:8.2f} {moved / t / 1e6:8.1f}")
    print(f"{'pinned memcpy by hand, host->device':44} {h2d:8.2f} {N * 4 / h2d / 1e6:8.1f}")
    print(f"{'pinned memcpy by hand, device->host':44} {d2h:8.2f} {N * 4 / d2h / 1e6:8.1f}")
    print(f"{'  the 7 copies alone at that speed':44} {copy_floor:8.2f} {moved / copy_floor / 1e6:8.1f}")
    print(f"{'umx: the 8 multiplies on the GPU alone':44} {t_gpu:8.2f}")
    print(f"{'umx: the 8 multiplies on the CPU alone':44} {t_cpu:8.2f}")
    verdict = "ok" if t <= TARGET_MS else "MISS"
    print(f"\ntarget: at most {TARGET_MS:.0f} ms: {verdict} ({t:.1f} ms; MLX on H100: {MLX_MS:.0f} ms); "
          f"achieved {moved / t / 1e6:.1f} GB/s of copies against {N * 8 / (h2d + d2h) / 1e6:.1f} GB/s pinned")


if __name__ == "__main__":
    main()
