"""Latency of small evals: a scalar op, a loss-sized sum or a loss (``mean(square(v - 1))``) then ``item()`` or
``eval``, umx against CuPy, torch and NumPy.

Hosts of the lent machine vary by tens of percent from minute to minute, so the cases are timed in interleaved
rounds (each round times every case once, 2,000 calls each) and the table gives each case's median over the
rounds: the ratios compare runs that shared the host's state.

Usage: python bench/latency.py [--rounds N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import umx as mx  # noqa: E402


def _median_us(fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def cases() -> list:
    """(name, fn, is a baseline) rows; GPU rows only where there is a GPU."""
    out = []
    one = mx.array(1.0)
    mx.eval(one)
    c = mx.cpu
    out.append(("umx cpu: add + item()", lambda: mx.add(one, 1.0, stream=c).item(), False))
    x_np = np.float32(1.0)
    out.append(("NumPy: add + item()", lambda: (x_np + np.float32(1.0)).item(), True))
    v_np = np.random.default_rng(0).standard_normal(256).astype(np.float32)  # a batch's losses
    v = mx.array(v_np)
    out.append(("umx cpu: sum + item()", lambda: mx.sum(v, stream=c).item(), False))
    out.append(("NumPy: sum + item()", lambda: v_np.sum().item(), True))
    out.append(("umx cpu: loss + item()", lambda: mx.mean(mx.square(mx.subtract(v, 1.0, stream=c), stream=c),
                                                          stream=c).item(), False))
    out.append(("NumPy: loss + item()", lambda: np.mean(np.square(v_np - np.float32(1.0))).item(), True))
    if not mx.is_available(mx.gpu):
        return out
    g = mx.gpu
    on_gpu = mx.add(one, 0.0, stream=g)
    mx.eval(on_gpu)
    out += [
        ("umx gpu: add + item() (host input)", lambda: mx.add(one, 1.0, stream=g).item(), False),
        ("umx gpu: add + item() (GPU input)", lambda: mx.add(on_gpu, 1.0, stream=g).item(), False),
        ("umx gpu: add + eval", lambda: mx.eval(mx.add(on_gpu, 1.0, stream=g)), False),
        ("umx gpu: (x + 1) * 2 + item()", lambda: mx.multiply(mx.add(on_gpu, 1.0, stream=g), 2.0, stream=g).item(),
         False),
    ]
    v_gpu = mx.add(v, 0.0, stream=g)
    mx.eval(v_gpu)
    out.append(("umx gpu: sum + item()", lambda: mx.sum(v_gpu, stream=g).item(), False))
    out.append(("umx gpu: loss + item()", lambda: mx.mean(mx.square(mx.subtract(v_gpu, 1.0, stream=g), stream=g),
                                                          stream=g).item(), False))
    try:
        import cupy

        x_cp = cupy.asarray(np.float32(1.0))
        out.append(("CuPy: add + float()", lambda: float(x_cp + np.float32(1.0)), True))
        v_cp = cupy.asarray(v_np)
        out.append(("CuPy: sum + float()", lambda: float(v_cp.sum()), True))
        out.append(("CuPy: loss + float()", lambda: float(cupy.mean(cupy.square(v_cp - np.float32(1.0)))), True))
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            x_t = torch.tensor(1.0, device="cuda")
            out.append(("torch cuda: add + item()", lambda: (x_t + 1.0).item(), True))
            v_t = torch.as_tensor(v_np, device="cuda")
            out.append(("torch cuda: sum + item()", lambda: v_t.sum().item(), True))
            out.append(("torch cuda: loss + item()", lambda: ((v_t - 1.0) ** 2).mean().item(), True))
    except ImportError:
        pass
    return out


def _best_baseline(name: str, rows: list, med: dict):
    """The fastest baseline timing the same work as row ``name`` on the same kind of device, or None."""
    work = next((w for w in ("sum", "loss") if w in name), "add")  # (the fused (x + 1) * 2 against one add)
    on_cpu = name.startswith("umx cpu")
    times = [med[n] for n, _, base in rows
             if base and n.split(": ", 1)[1].startswith(work) and n.startswith("NumPy") == on_cpu]
    return min(times, default=None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    rows = cases()
    for _, fn, _ in rows:  # warm-up: kernels compiled, copies made, caches filled
        for _ in range(300):
            fn()
    results: dict = {name: [] for name, _, _ in rows}
    for _ in range(args.rounds):
        for name, fn, _ in rows:
            results[name].append(_median_us(fn, args.calls))
    med = {name: statistics.median(v) for name, v in results.items()}
    width = max(len(n) for n in med)
    print(f"median over {args.rounds} interleaved rounds of {args.calls} calls each (us)\n")
    print(f"{'case':{width}}  {'us':>8}  {'vs best baseline':>16}")
    print("-" * (width + 28))
    for name, _, base in rows:
        ref = _best_baseline(name, rows, med)
        ratio = f"{med[name] / ref:15.2f}x" if ref and not base else f"{'':>16}"
        print(f"{name:{width}}  {med[name]:8.1f}  {ratio}")


if __name__ == "__main__":
    main()
