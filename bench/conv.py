"""Convolutions, one table: umx against torch, forward and forward+backward, on the CPU and, where there is one, the
GPU.

Rows: conv2d for ResNet/CNN-like layers (batch 32, or 128 on a GPU or with --full; 32x32 and 56x56 inputs; 3x3
and 1x1 kernels; 64 to 256 channels; a strided and a depthwise layer) and a conv1d layer. Both libraries get the
same memory layout: umx's channels-last arrays, torch's channels-last tensors (NCHW views of the same NHWC data).
Forward+backward is the output and both gradients for a random cotangent (``mx.vjp``, ``torch.autograd.grad``).
Times are medians, umx and torch timed in interleaved rounds; GPU work is synchronized inside the timed region.
The ratio is umx's time over torch's (below 1: umx is faster). On the GPU both take float32 products as TF32
(umx's default, MLX's rule; torch's cuDNN default) or, with ``MLX_ENABLE_TF32=0``, both in full float32.

With --one-core both libraries run on one thread (OpenBLAS's and torch's pools set to one before they load): on a
shared or small machine, where threads of a BLAS call wait on each other, this compares the lowerings themselves.

Usage: python bench/conv.py [--runs N] [--full] [--budget MIB] [--one-core] [--devices cpu,gpu]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "--one-core" in sys.argv:  # before NumPy (OpenBLAS) and torch (OpenMP) start their thread pools
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import cell as _cell  # noqa: E402
from _util import timed_apart  # noqa: E402

import umx as mx  # noqa: E402
from umx.backends.cpu import kernels as cpu_kernels  # noqa: E402
from umx.backends.cuda import tf32_enabled  # noqa: E402
from umx.backends.xp import conv as conv_kernel  # noqa: E402

# (name, input shape NHWC or NLC, weight shape, stride, padding, groups)
LAYERS = [
    ("conv2d 32x32 64->64 3x3", (32, 32, 32, 64), (64, 3, 3, 64), 1, 1, 1),
    ("conv2d 32x32 64->128 3x3 s2", (32, 32, 32, 64), (128, 3, 3, 64), 2, 1, 1),
    ("conv2d 32x32 256->256 1x1", (32, 32, 32, 256), (256, 1, 1, 256), 1, 0, 1),
    ("conv2d 56x56 64->64 3x3", (32, 56, 56, 64), (64, 3, 3, 64), 1, 1, 1),
    ("conv2d 56x56 256->64 1x1", (32, 56, 56, 256), (64, 1, 1, 256), 1, 0, 1),
    ("conv2d 56x56 128 dw 3x3", (32, 56, 56, 128), (128, 3, 3, 1), 1, 1, 128),
    ("conv1d L1024 128->128 k5", (32, 1024, 128), (128, 5, 128), 1, 2, 1),
]


def _torch():
    try:
        import torch
    except Exception:
        return None
    return torch


def cases(dev: str, big_batch: bool):
    """(name, {library: (forward fn, forward+backward fn)}) for device ``dev``."""
    rng = np.random.default_rng(0)
    s = mx.cpu if dev == "cpu" else mx.gpu
    torch = _torch()
    if torch is not None and dev == "gpu" and not torch.cuda.is_available():
        torch = None
    tdev = "cuda" if dev == "gpu" else "cpu"
    sync = (lambda: torch.cuda.synchronize()) if torch is not None and dev == "gpu" else (lambda: None)
    out = []
    for name, xs, ws, stride, padding, groups in LAYERS:
        if big_batch:
            xs = (128,) + xs[1:]
        x = rng.standard_normal(xs, dtype=np.float32)
        w = (rng.standard_normal(ws) / np.sqrt(np.prod(ws[1:]))).astype(np.float32)
        op = mx.conv2d if len(xs) == 4 else mx.conv1d
        xm, wm = mx.array(x), mx.array(w)
        mx.eval(mx.add(xm, 0, stream=s), mx.add(wm, 0, stream=s))  # copies on the device, made once

        def f(a, b, op=op, stride=stride, padding=padding, groups=groups):
            return op(a, b, stride=stride, padding=padding, groups=groups, stream=s)

        ct = mx.array(rng.standard_normal(f(xm, wm).shape, dtype=np.float32))
        mx.eval(mx.add(ct, 0, stream=s))

        def fwd(f=f, xm=xm, wm=wm):
            mx.eval(f(xm, wm))

        def both(f=f, xm=xm, wm=wm, ct=ct):
            with mx.stream(s):
                y, grads = mx.vjp(f, [xm, wm], [ct])
                mx.eval(y, grads)

        fns = {"umx": (fwd, both)}
        if torch is not None:
            fns["torch"] = _torch_fns(torch, tdev, sync, x, w, np.asarray(ct), stride, padding, groups)
        out.append((f"{name} N={xs[0]}", fns))
    return out


def _torch_fns(torch, tdev, sync, x, w, ct, stride, padding, groups):
    import torch.nn.functional as F

    def nchw(a):  # channels-last memory, seen as NCHW / NCL
        return torch.from_numpy(a).to(tdev).movedim(-1, 1)

    conv = F.conv2d if x.ndim == 4 else F.conv1d
    xt, wt, ctt = nchw(x), nchw(w), nchw(ct)

    def fwd():
        with torch.no_grad():
            conv(xt, wt, stride=stride, padding=padding, groups=groups)
        sync()

    xg, wg = xt.detach().requires_grad_(), wt.detach().requires_grad_()

    def both():
        y = conv(xg, wg, stride=stride, padding=padding, groups=groups)
        torch.autograd.grad(y, (xg, wg), ctt)
        sync()

    return fwd, both


def _ratio(a, b) -> str:
    return f"{a / b:6.2f}" if a is not None and b is not None else f"{'-':>6}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="timed runs per cell (default 7)")
    ap.add_argument("--full", action="store_true", help="batch 128 on the CPU too (the GPU always takes 128)")
    ap.add_argument("--budget", type=float, default=None, help="umx's bound on a chunk's temporaries, in MiB")
    ap.add_argument("--one-core", action="store_true", help="one thread for umx's BLAS and for torch")
    ap.add_argument("--devices", default="cpu,gpu", help="comma-separated subset of cpu,gpu (default both)")
    args = ap.parse_args()
    if args.budget is not None:
        conv_kernel.BUDGET = cpu_kernels.CONV_BUDGET = int(args.budget * (1 << 20))
    torch = _torch()
    if args.one_core and torch is not None:
        torch.set_num_threads(1)
    if torch is not None:  # (GPU products at umx's precision: TF32 unless MLX_ENABLE_TF32=0, as bench/train.py)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32_enabled()
    threads = "one thread each" if args.one_core else f"{os.cpu_count()} CPU cores"
    wanted = args.devices.split(",")
    devices = [d for d in ("cpu", "gpu") if d in wanted and (d == "cpu" or mx.is_available(mx.gpu))]
    print(f"umx {mx.__version__}; {threads}; devices: {', '.join(devices)}; float32; medians of "
          f"{args.runs}; umx's chunks under {cpu_kernels.CONV_BUDGET / (1 << 20):g} MiB on the CPU, "
          f"{conv_kernel.BUDGET / (1 << 20):g} MiB on a GPU\n")
    head = (f"{'case':34} {'dev':4} {'umx fwd':>10} {'torch fwd':>10} {'ratio':>6} {'umx f+b':>10} "
            f"{'torch f+b':>10} {'ratio':>6}")
    print(head)
    print("-" * len(head))
    for dev in devices:
        if dev == "gpu":
            time.sleep(5)  # (the host runs slower for a while after the CPU rows' all-core work)
        for name, fns in cases(dev, args.full or dev == "gpu"):
            fwd = timed_apart({k: v[0] for k, v in fns.items()}, args.runs, dev == "cpu")
            both = timed_apart({k: v[1] for k, v in fns.items()}, args.runs, dev == "cpu")
            print(f"{name:34} {dev:4} {_cell(fwd['umx'])} {_cell(fwd.get('torch'))} "
                  f"{_ratio(fwd['umx'], fwd.get('torch'))} {_cell(both['umx'])} {_cell(both.get('torch'))} "
                  f"{_ratio(both['umx'], both.get('torch'))}")
    if "gpu" in wanted and not mx.is_available(mx.gpu):
        print("\nno CUDA GPU here: GPU rows skipped")


if __name__ == "__main__":
    main()
