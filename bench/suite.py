"""Everyday work, one table: umx against NumPy, CuPy and torch (where they import), measured in the same run.

Rows: 1,000 dependent scalar adds then one eval; a scalar add then ``item()``; a 64 MiB float32 elementwise
chain of 8 ops; a 16M-element sum; 1024^3 and 4096^3 float32 matmuls; an MLP forward pass (batch 256,
784-512-512-10, relu). Each on the CPU and, where there is one, the GPU; and first the seed's example per
placement (``bench/seed.py``). Times are medians, umx and its baselines timed in interleaved rounds (see
``_util.interleaved_medians``); GPU work is synchronized inside the timed region.

Usage: python bench/suite.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import cell as _cell  # noqa: E402
from _util import timed_apart  # noqa: E402

import umx as mx  # noqa: E402


def _try(name):
    try:
        return __import__(name)
    except Exception:
        return None


def cases(dev: str, quick: bool):
    """(name, umx fn, {baseline: fn}) for device ``dev``."""
    rng = np.random.default_rng(0)
    s = mx.cpu if dev == "cpu" else mx.gpu
    cp = _try("cupy") if dev == "gpu" else None
    torch = _try("torch")
    tdev = "cuda" if dev == "gpu" else "cpu"
    if torch is not None and dev == "gpu" and not torch.cuda.is_available():
        torch = None
    sync_t = (lambda: torch.cuda.synchronize()) if torch is not None and dev == "gpu" else (lambda: None)
    sync_c = (lambda: cp.cuda.Device().synchronize()) if cp is not None else (lambda: None)
    xp = cp if dev == "gpu" else np
    out = []

    one = mx.array(1.0)
    mx.eval(one)

    def adds():
        x = one
        for _ in range(1000):
            x = mx.add(x, 1.0, stream=s)
        mx.eval(x)

    def adds_xp():
        x = xp.asarray(np.float32(1.0))
        for _ in range(1000):
            x = x + np.float32(1.0)
        sync_c()

    base = {("CuPy" if dev == "gpu" else "NumPy"): adds_xp} if xp is not None else {}
    if torch is not None:
        def adds_t():
            x = torch.tensor(1.0, device=tdev)
            for _ in range(1000):
                x = x + 1.0
            sync_t()
        base["torch"] = adds_t
    out.append(("1000 scalar adds, eval", adds, base, 10))

    def item():
        return mx.add(one, 1.0, stream=s).item()

    base = {}
    if xp is not None:
        xo = xp.asarray(np.float32(1.0))
        base["CuPy" if dev == "gpu" else "NumPy"] = lambda: float(xo + np.float32(1.0))
    if torch is not None:
        to = torch.tensor(1.0, device=tdev)
        base["torch"] = lambda: (to + 1.0).item()
    out.append(("scalar add + item()", item, base, 200))

    n = (16 << 20) if not quick else (1 << 20)  # 16M float32 elements: the 64 MiB chain and the 16M-element sum
    host = rng.standard_normal(n, dtype=np.float32)
    xa = mx.array(host)
    mx.eval(mx.add(xa, 0, stream=s))  # a copy on the device, made once

    def chain(x, lib):
        return lib.tanh(lib.exp(x * 0.5) - 1.0) * 2.0 + lib.sin(x) - x * x

    def chain_umx():
        mx.eval(chain(xa, _MX(s)))

    base = {}
    if xp is not None:
        xh = xp.asarray(host)
        base["CuPy" if dev == "gpu" else "NumPy"] = lambda: (chain(xh, xp), sync_c())
    if torch is not None:
        xt = torch.from_numpy(host).to(tdev)
        base["torch"] = lambda: (chain(xt, torch), sync_t())
    out.append((f"{n * 4 >> 20} MiB chain of 8 ops", chain_umx, base, 10))

    def sum_umx():
        mx.eval(mx.sum(xa, stream=s))

    base = {}
    if xp is not None:
        base["CuPy" if dev == "gpu" else "NumPy"] = lambda: (xp.sum(xh), sync_c())
    if torch is not None:
        base["torch"] = lambda: (torch.sum(xt), sync_t())
    out.append((f"{n >> 20}M-element sum", sum_umx, base, 10))

    sizes = [1024] + ([4096] if dev == "gpu" or (os.cpu_count() or 1) >= 8 else [])
    for k in sizes:
        ah = rng.standard_normal((k, k), dtype=np.float32)
        bh = rng.standard_normal((k, k), dtype=np.float32)
        am, bm = mx.array(ah), mx.array(bh)
        mx.eval(mx.add(am, 0, stream=s), mx.add(bm, 0, stream=s))

        def mm(am=am, bm=bm):
            mx.eval(mx.matmul(am, bm, stream=s))

        base = {}
        if xp is not None:
            ax, bx = xp.asarray(ah), xp.asarray(bh)
            base["CuPy" if dev == "gpu" else "NumPy"] = lambda ax=ax, bx=bx: (ax @ bx, sync_c())
        if torch is not None:
            at, bt = torch.from_numpy(ah).to(tdev), torch.from_numpy(bh).to(tdev)
            base["torch"] = lambda at=at, bt=bt: (at @ bt, sync_t())
        out.append((f"matmul {k}^3", mm, base, 5 if k == 4096 else 10))

    dims = [784, 512, 512, 10]
    ws = [rng.standard_normal((i, o), dtype=np.float32) * 0.05 for i, o in zip(dims, dims[1:])]
    bs = [np.zeros(o, np.float32) for o in dims[1:]]
    xin = rng.standard_normal((256, 784), dtype=np.float32)

    def mlp(x, W, B, lib):
        for i, (w, b) in enumerate(zip(W, B)):
            x = x @ w + b
            if i < len(W) - 1:
                x = lib.maximum(x, 0.0)
        return x

    wm, bmx, xm = [mx.array(w) for w in ws], [mx.array(b) for b in bs], mx.array(xin)
    mx.eval(wm, bmx, xm)
    mlib = _MX(s)

    def mlp_umx():
        mx.eval(mlp(xm, wm, bmx, mlib))

    base = {}
    if xp is not None:
        wx, bx_, xx = [xp.asarray(w) for w in ws], [xp.asarray(b) for b in bs], xp.asarray(xin)
        base["CuPy" if dev == "gpu" else "NumPy"] = lambda: (mlp(xx, wx, bx_, xp), sync_c())
    if torch is not None:
        wt = [torch.from_numpy(w).to(tdev) for w in ws]
        bt_ = [torch.from_numpy(b).to(tdev) for b in bs]
        xt_ = torch.from_numpy(xin).to(tdev)
        base["torch"] = lambda: (mlp(xt_, wt, bt_, _TorchLib(torch)), sync_t())
    out.append(("MLP forward, batch 256", mlp_umx, base, 20))
    return out


def seed_rows(devices: list) -> list:
    """The seed's example per placement (see bench/seed.py): (placement, umx seconds, {baseline: seconds}).
    The hand-written baseline of a mixed placement uses NumPy for the CPU part and CuPy for the GPU part."""
    import seed

    places = [("cpu", "cpu")] + ([("gpu", "gpu"), ("gpu", "cpu"), ("cpu", "gpu")] if "gpu" in devices else [])
    dev = {"cpu": mx.cpu, "gpu": mx.gpu}
    rows = []
    for p1, p2 in places:
        fns = {"umx": seed.umx_case(dev[p1], dev[p2])}
        for col, make in (("CuPy" if "gpu" in (p1, p2) else "NumPy", seed.numpy_cupy_case),
                          ("torch", seed.torch_case)):
            try:
                fns[col] = make(p1, p2)
            except Exception:  # the library is missing here
                pass
        hand = timed_apart(fns, 20, "cpu" in (p1, p2))
        rows.append((f"{p1}/{p2}", hand.pop("umx"), hand))
    return rows


class _MX:
    """``mx`` with every op bound to one stream, so that the same expression serves umx and the baselines."""

    def __init__(self, s):
        self.s = s

    def tanh(self, x):
        return mx.tanh(x, stream=self.s)

    def exp(self, x):
        return mx.exp(x, stream=self.s)

    def sin(self, x):
        return mx.sin(x, stream=self.s)

    def maximum(self, x, y):
        return mx.maximum(x, y, stream=self.s)


class _TorchLib:
    def __init__(self, torch):
        self.torch = torch

    def maximum(self, x, y):
        return self.torch.clamp_min(x, y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller arrays and fewer runs (CI-sized machines)")
    args = ap.parse_args()
    devices = ["cpu"] + (["gpu"] if mx.is_available(mx.gpu) else [])
    cols = ["NumPy", "CuPy", "torch"]
    print(f"umx {mx.__version__}; {os.cpu_count()} CPU cores; devices: {', '.join(devices)}; medians\n")
    head = f"{'case':30} {'dev':4} {'umx':>10} " + " ".join(f"{c:>10}" for c in cols) + "  umx/best"
    print(head)
    print("-" * len(head))
    for name, t, hand in seed_rows(devices):
        cells = " ".join(_cell(hand[c]) if hand.get(c) else f"{'-':>10}" for c in cols)
        best = min((v for v in hand.values() if v), default=None)
        ratio = f"{t / best:8.2f}x" if best else "       -"
        print(f"{'seed ' + name:30} {'':4} {_cell(t)} {cells}  {ratio}")
    for dev in devices:
        if dev == "gpu":
            # After the CPU rows' all-core work the lent host ran slower for a while: a GPU item() timed in a fresh
            # process took 13.9 us, and 16.9 right after 8 s of BLAS on every core.
            time.sleep(5)
        with mx.stream(mx.cpu if dev == "cpu" else mx.gpu):
            for name, fn, base, runs in cases(dev, args.quick):
                runs = max(3, runs // 3) if args.quick else runs
                # Calls of microseconds go in blocks of 200 in a row (three rounds), as a loop makes them and as
                # bench/latency.py times them: in blocks of 20, each library's first calls after another's are
                # slower (its code and data evicted), which weighs most on the one with most Python on the path.
                block = 200 if runs >= 100 else 1
                times = timed_apart({"umx": fn, **base}, 3 * block if runs >= 100 else runs, dev == "cpu", block)
                t = times.pop("umx")
                cells = " ".join(_cell(times[c]) if c in times else f"{'-':>10}" for c in cols)
                best = min(times.values()) if times else None
                ratio = f"{t / best:8.2f}x" if best else "       -"
                print(f"{name:30} {dev:4} {_cell(t)} {cells}  {ratio}")
    if not mx.is_available(mx.gpu):
        print("\nno CUDA GPU here: GPU rows skipped")


if __name__ == "__main__":
    main()
