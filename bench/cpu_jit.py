"""The CPU's compiled fused regions (``backends/cpu/jit.py``, Numba) against its NumPy passes, in one process.

First three regions of a CNN's step over 128x32x32x32 float32 (a batch norm's scale and shift over channels, a
ReLU, a ReLU's gradient), a batch norm's statistics (compiled column sums in float64) and a max pool's window
maxima (the chain of maxima compiled), each as umx with
compiled kernels on and off, torch's eager ops on all its threads, and NumPy on one thread; then
``bench/train.py``'s MLP and CNN training steps on the CPU, eager and compiled, with compiled kernels on and off in
interleaved rounds (torch's eager step beside them). Everything is compiled (or loaded from the disk cache) before
anything is timed. Medians; ratios are the other path's time over the compiled one's.

With ``--native``, also whether the hand-off of chunks to umx's pool (Python threads, each taking the GIL to start
its chunk) is what holds the compiled loops back on many cores: a ReLU's gradient and an SGD update (``w - lr *
g``) of 4M and 256K elements, as umx's compiled region (eval included; 256K is one chunk, no hand-off), as the same
loop written for Numba's own threads (``prange``, one call, its thread-safe OpenMP or TBB layer) and on one thread
(one call), and torch's; a lone ReLU too, which umx runs as NumPy's ufunc (one op is no fused region). The loops
write into one buffer throughout, umx's 4M results come from its pool of reused buffers and its 256K ones from
NumPy's allocator; every column reads the same inputs again (cache-warm where they fit).

Usage: python bench/cpu_jit.py [--repeats N] [--cases mlp,cnn] [--small] [--native]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train  # noqa: E402
from _util import interleaved_medians, median_time  # noqa: E402

import umx as mx  # noqa: E402
import umx.nn as nn  # noqa: E402
import umx.optimizers as optim  # noqa: E402
from umx.backends.cpu import jit  # noqa: E402


def _switched(fn, on: bool):
    def call():
        jit.ENABLED = on
        try:
            fn()
        finally:
            jit.ENABLED = True
    return call


def _regions(repeats: int, torch) -> None:
    rng = np.random.default_rng(0)
    shape = (128, 32, 32, 32)
    x, g = (rng.standard_normal(shape, dtype=np.float32) for _ in range(2))
    m, s, b = (rng.standard_normal(32, dtype=np.float32) for _ in range(3))
    X, G, M, S, B = (mx.array(a) for a in (x, g, m, s, b))
    windows = (128, 16, 2, 16, 2, 32)
    cases = {
        "batch norm (x - m) * s * g + b": (lambda: (X - M) * S * G + B, lambda: (x - m) * s * g + b,
                                           lambda t: (t[0] - t[2]) * t[3] * t[1] + t[4]),
        "relu max(x, 0)": (lambda: mx.maximum(X, 0.0), lambda: np.maximum(x, np.float32(0)),
                           lambda t: torch.relu(t[0])),
        "relu grad where(x > 0, g, 0)": (lambda: mx.where(X > 0, G, 0.0), lambda: np.where(x > 0, g, np.float32(0)),
                                         lambda t: torch.ops.aten.threshold_backward(t[1], t[0], 0)),
        "sum over (N, H, W)": (lambda: mx.sum(X, axis=(0, 1, 2)), lambda: x.sum(axis=(0, 1, 2)),
                               lambda t: t[0].sum(dim=(0, 1, 2))),
        "variance over (N, H, W)": (lambda: mx.var(X, axis=(0, 1, 2)), lambda: x.var(axis=(0, 1, 2)),
                                    lambda t: t[0].var(dim=(0, 1, 2), unbiased=False)),
        "max pool's 2x2 window maxima": (lambda: mx.max(X.reshape(windows), axis=(2, 4)),
                                         lambda: x.reshape(windows).max(axis=(2, 4)),
                                         lambda t: t[0].view(windows).amax(dim=(2, 4))),
    }
    tt = [torch.from_numpy(a) for a in (x, g, m, s, b)] if torch is not None else None
    print(f"ops over {'x'.join(map(str, shape))} float32, median of {repeats} (ms)")
    print(f"{'op':32} {'compiled':>9} {'NumPy path':>11} {'torch':>8} {'NumPy':>8} {'ratio':>7}")
    for name, (umx_fn, np_fn, torch_fn) in cases.items():
        def run(umx_fn=umx_fn):
            mx.eval(umx_fn())
        times = interleaved_medians({"on": _switched(run, True), "off": _switched(run, False)}, repeats)
        t_torch = median_time(lambda torch_fn=torch_fn: torch_fn(tt), repeats) if torch is not None else None
        t_np = median_time(np_fn, repeats)
        cell = f"{t_torch * 1e3:8.2f}" if t_torch else f"{'n/a':>8}"
        print(f"{name:32} {times['on'] * 1e3:9.2f} {times['off'] * 1e3:11.2f} {cell} {t_np * 1e3:8.2f} "
              f"{times['off'] / times['on']:6.2f}x")


def _native_kernels():
    """``{name: (serial, parallel)}``: each loop compiled for one thread and for Numba's threads (``prange`` is
    ``range`` where ``parallel`` is off)."""
    import numba

    numba.config.THREADING_LAYER = "threadsafe"  # (OpenMP or TBB: the workqueue layer aborts on concurrent calls)
    prange = numba.prange

    def relu(x, out):
        for i in prange(x.size):
            out[i] = x[i] if x[i] > 0 else np.float32(0)

    def relu_grad(x, g, out):
        for i in prange(x.size):
            out[i] = g[i] if x[i] > 0 else np.float32(0)

    def sgd(w, g, lr, out):
        for i in prange(w.size):
            out[i] = w[i] - lr * g[i]

    return {name: tuple(numba.njit(fn, nogil=True, parallel=p) for p in (False, True))
            for name, fn in (("relu", relu), ("relu_grad", relu_grad), ("sgd", sgd))}


def _native(repeats: int, torch) -> None:
    """umx's compiled regions against the same loops on Numba's own threads (see the module's docstring)."""
    import numba

    try:
        kernels = _native_kernels()
        rng = np.random.default_rng(0)
        probe = rng.standard_normal(1024, dtype=np.float32)
        kernels["relu"][1](probe, np.empty_like(probe))
    except Exception as e:  # (no thread-safe layer: neither OpenMP nor TBB)
        print(f"\nNumba's own threads: not available ({type(e).__name__}: {str(e)[:120]})")
        return
    print(f"\nthe same loops on Numba's threads ({numba.threading_layer()}, {numba.get_num_threads()} threads), "
          f"median of {repeats} (ms)")
    print(f"{'op':36} {'umx pool':>9} {'prange':>8} {'one call':>9} {'torch':>8}")
    for n in (1 << 22, 1 << 18):
        _native_rows(n, kernels, rng, repeats, torch)


def _native_rows(n: int, kernels: dict, rng, repeats: int, torch) -> None:
    """``_native``'s rows for arrays of ``n`` elements."""
    x, g, w = (rng.standard_normal(n, dtype=np.float32) for _ in range(3))
    out = np.empty(n, np.float32)
    lr = np.float32(0.01)
    X, G, W = (mx.array(a) for a in (x, g, w))
    cases = {  # (row: its kernel's name, umx's op, the kernel's call, torch's op)
        "relu (umx: NumPy's ufunc)": ("relu", lambda: mx.maximum(X, 0.0), lambda k: k(x, out),
                                      lambda t: torch.relu(t[0])),
        "relu grad": ("relu_grad", lambda: mx.where(X > 0, G, 0.0), lambda k: k(x, g, out),
                      lambda t: torch.ops.aten.threshold_backward(t[1], t[0], 0)),
        "sgd w - lr * g": ("sgd", lambda: W - 0.01 * G, lambda k: k(w, g, lr, out), lambda t: t[2] - 0.01 * t[1]),
    }
    tt = [torch.from_numpy(a) for a in (x, g, w)] if torch is not None else None
    for name, (kernel, umx_fn, native_fn, torch_fn) in cases.items():
        pair = kernels[kernel]
        times = interleaved_medians({"umx": lambda f=umx_fn: mx.eval(f()),
                                     "prange": lambda f=native_fn, k=pair[1]: f(k),
                                     "one": lambda f=native_fn, k=pair[0]: f(k)}, repeats)
        t_torch = median_time(lambda f=torch_fn: f(tt), repeats) if torch is not None else None
        cell = f"{t_torch * 1e3:8.3f}" if t_torch else f"{'n/a':>8}"
        print(f"{name + f' ({n >> 10}K)':36} {times['umx'] * 1e3:9.3f} {times['prange'] * 1e3:8.3f} "
              f"{times['one'] * 1e3:9.3f} {cell}")


def _steps(cases: list, sizes: dict, repeats: int, torch) -> None:
    print(f"\ntraining steps on the CPU ({os.cpu_count()} cores), median of {repeats} (ms)")
    print(f"{'case':40} {'eager':>8} {'eager off':>10} {'compiled':>9} {'comp. off':>10} {'torch':>8}")
    data_of = {c: train._data(c, sizes[c]) for c in cases}
    for case in cases:
        steps = train._mlx_api_steps((mx, nn, optim), case, sizes[case], data_of[case], mx.default_stream(mx.cpu))
        fns = {}
        for name, fn in steps.items():
            fns[name + " on"] = _switched(fn, True)
            fns[name + " off"] = _switched(fn, False)
        times = interleaved_medians(fns, repeats)
        t_torch = None
        if torch is not None:
            t_torch = median_time(train._torch_steps(torch, case, sizes[case], data_of[case], "cpu", False)["torch"],
                                  repeats)
            time.sleep(0.5)  # (torch's OpenMP threads spin for a while after its work)
        cell = f"{t_torch * 1e3:8.2f}" if t_torch else f"{'n/a':>8}"
        print(f"{train._describe(case, sizes[case]):40} {times[' on'] * 1e3:8.2f} {times[' off'] * 1e3:10.2f} "
              f"{times[' compiled on'] * 1e3:9.2f} {times[' compiled off'] * 1e3:10.2f} {cell}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9, help="timed runs per cell (default 9)")
    ap.add_argument("--cases", default="mlp,cnn", help="comma-separated subset of mlp,lm,cnn")
    ap.add_argument("--small", action="store_true", help="bench/train.py's small models")
    ap.add_argument("--native", action="store_true",
                    help="also the compiled loops on Numba's own threads (prange) against umx's pool")
    args = ap.parse_args()
    if not jit.available():
        print("Numba is not importable (pip install 'umx[cpu-jit]'): nothing to compare")
        return
    try:
        import torch
    except ImportError:
        torch = None
    mx.set_default_device(mx.cpu)  # (a GPU machine's default is its GPU)
    jit.WAIT = True  # (compiled, or read from the disk cache, at the first sighting: nothing timed compiles)
    _regions(args.repeats, torch)
    if args.native:
        _native(args.repeats, torch)
    _steps(args.cases.split(","), train.SMALL if args.small else train.FULL, args.repeats, torch)
    print(f"\ncompiled path: {jit.STATS}")


if __name__ == "__main__":
    main()
