"""mx.fast and quantized products: each fused op against the same computation written with plain umx ops, and
against torch, measured in the same run.

Rows: rms_norm and layer_norm of (32, 512, 1024); RoPE of (1, 32, 512, 128); attention with a causal mask over
512 queries and keys (32 query heads, 8 key heads, head size 128) and one decoding query over 4096 keys; a
4096x4096 weight times a vector, 4-bit affine (group 64) against float32 and bfloat16 weights. Each on the CPU
and, where there is one, the GPU. Times are medians of interleaved rounds (see ``_util.interleaved_medians``);
GPU work is synchronized inside the timed region. The last column is the plain-op (or float32) time over the
fused (or quantized) one: above 1, the fused op is faster.

Usage: python bench/fast.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _util import interleaved_medians  # noqa: E402

import umx as mx  # noqa: E402


def _try(name):
    try:
        return __import__(name)
    except Exception:
        return None


# -- the same computations in plain umx ops ------------------------------------------------------------------
def rms_norm_ops(x, w, eps):
    return w * (x * mx.rsqrt(mx.mean(mx.square(x), axis=-1, keepdims=True) + eps))


def layer_norm_ops(x, w, b, eps):
    mu = mx.mean(x, axis=-1, keepdims=True)
    return (x - mu) * mx.rsqrt(mx.var(x, axis=-1, keepdims=True) + eps) * w + b


def rope_ops(x, dims, base, offset):
    t, half = x.shape[-2], dims // 2
    inv = mx.exp(-mx.arange(half, dtype=mx.float32) * (math.log(base) / half))
    theta = mx.expand_dims(mx.arange(offset, offset + t, dtype=mx.float32), -1) * inv
    c, s = mx.cos(theta), mx.sin(theta)
    x1, x2 = x[..., :half], x[..., half:dims]
    return mx.concatenate([x1 * c - x2 * s, x1 * s + x2 * c, x[..., dims:]], axis=-1)


def sdpa_ops(q, k, v, scale, causal):
    rep = q.shape[1] // k.shape[1]
    k, v = mx.repeat(k, rep, axis=1), mx.repeat(v, rep, axis=1)
    s = (q * scale) @ mx.swapaxes(k, -1, -2)
    if causal:
        tq, tk = q.shape[2], k.shape[2]
        s = mx.where(mx.expand_dims(mx.arange(tq) + tk - tq, -1) >= mx.arange(tk), s, -1e30)
    return mx.softmax(s, axis=-1) @ v


def _rope_torch(torch, x, dims, base, offset):
    t, half = x.shape[-2], dims // 2
    inv = torch.exp(-torch.arange(half, dtype=torch.float32, device=x.device) * (math.log(base) / half))
    theta = torch.arange(offset, offset + t, dtype=torch.float32, device=x.device)[:, None] * inv
    c, s = torch.cos(theta), torch.sin(theta)
    x1, x2 = x[..., :half], x[..., half:dims]
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c, x[..., dims:]], dim=-1)


# -- the cases -------------------------------------------------------------------------------------------------
def cases(dev: str, quick: bool) -> list:
    """(name, {column: fn}, runs) for device ``dev``; columns 'fused', 'plain ops', 'torch'."""
    rng = np.random.default_rng(0)
    s = mx.cpu if dev == "cpu" else mx.gpu
    torch = _try("torch")
    if torch is not None and dev == "gpu" and not torch.cuda.is_available():
        torch = None
    tdev = "cuda" if dev == "gpu" else "cpu"
    sync = (lambda: torch.cuda.synchronize()) if torch is not None and dev == "gpu" else (lambda: None)
    scale_n = 4 if quick else 1
    out = []

    def arr(*shape, scale=1.0):
        h = (rng.standard_normal(shape, dtype=np.float32) * scale)
        a = mx.array(h)
        mx.eval(mx.add(a, 0, stream=s))
        return a, (torch.from_numpy(h).to(tdev) if torch is not None else None)

    def row(name, fused, plain, torch_fn, runs):
        fns = {"fused": lambda: mx.eval(fused()), "plain ops": lambda: mx.eval(plain())}
        if torch_fn is not None:
            fns["torch"] = lambda: (torch_fn(), sync())
        out.append((name, fns, runs))

    x, xt = arr(32 // scale_n, 512, 1024)
    w, wt = arr(1024)
    b, bt = arr(1024)
    row(f"rms_norm {tuple(x.shape)}", lambda: mx.fast.rms_norm(x, w, 1e-5), lambda: rms_norm_ops(x, w, 1e-5),
        (lambda: torch.nn.functional.rms_norm(xt, (1024,), wt, 1e-5)) if torch is not None else None, 10)
    row(f"layer_norm {tuple(x.shape)}", lambda: mx.fast.layer_norm(x, w, b, 1e-5),
        lambda: layer_norm_ops(x, w, b, 1e-5),
        (lambda: torch.nn.functional.layer_norm(xt, (1024,), wt, bt, 1e-5)) if torch is not None else None, 10)
    r, rt = arr(1, 32 // scale_n, 512, 128)
    row(f"rope {tuple(r.shape)}",
        lambda: mx.fast.rope(r, 128, traditional=False, base=10000.0, scale=1.0, offset=7),
        lambda: rope_ops(r, 128, 10000.0, 7),
        (lambda: _rope_torch(torch, rt, 128, 10000.0, 7)) if torch is not None else None, 10)
    sc = 128**-0.5
    for name, tq, tk, causal in (("attention causal 512x512", 512 // scale_n, 512 // scale_n, True),
                                 ("attention decode 1x4096", 1, 4096 // scale_n, False)):
        q, qt = arr(1, 32, tq, 128)
        k, kt = arr(1, 8, tk, 128)
        v, vt = arr(1, 8, tk, 128)
        tfn = None
        if torch is not None:
            def tfn(qt=qt, kt=kt, vt=vt, causal=causal):
                return torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=causal, scale=sc,
                                                                        enable_gqa=True)
        row(f"{name} (32/8 heads)",
            lambda q=q, k=k, v=v, causal=causal: mx.fast.scaled_dot_product_attention(
                q, k, v, scale=sc, mask="causal" if causal else None),
            lambda q=q, k=k, v=v, causal=causal: sdpa_ops(q, k, v, sc, causal), tfn, 5)
    wd, wdt = arr(4096, 4096, scale=0.02)
    xv, xvt = arr(1, 4096)
    wq, ws, wb = mx.quantize(wd, 64, 4)  # (out, in) packed: y = x @ W.T, as a linear layer's weight
    wk = mx.contiguous(wd.T)  # the float weights as (in, out), so that no row times a transposed copy
    wbf = wk.astype(mx.bfloat16)
    xbf = xv.astype(mx.bfloat16)
    mx.eval(wq, ws, wb, wk, wbf, xbf)
    qfns = {"fused": lambda: mx.eval(mx.quantized_matmul(xv, wq, ws, wb, True, 64, 4)),
            "plain ops": lambda: mx.eval(xv @ wk),
            "bf16": lambda: mx.eval(xbf @ wbf)}
    if torch is not None:
        wkt = wdt.T.contiguous()
        wbt, xbt = wkt.to(torch.bfloat16), xvt.to(torch.bfloat16)
        qfns["torch"] = lambda: (xvt @ wkt, sync())
        qfns["torch bf16"] = lambda: (xbt @ wbt, sync())
    out.append(("matvec 4096^2: 4-bit vs float32", qfns, 10))
    return out


COLS = ["fused", "plain ops", "torch", "bf16", "torch bf16"]


def _cell(seconds) -> str:
    if seconds is None:
        return f"{'-':>10}"
    return f"{seconds * 1e6:>8.1f}us" if seconds < 1e-3 else f"{seconds * 1e3:>8.3f}ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller arrays and fewer runs")
    args = ap.parse_args()
    devices = ["cpu"] + (["gpu"] if mx.is_available(mx.gpu) else [])
    print(f"umx {mx.__version__}; {os.cpu_count()} CPU cores; devices: {', '.join(devices)}; medians")
    print("fused: the mx.fast op (or the 4-bit quantized_matmul); plain ops: the same in plain umx ops (or the "
          "float32 matvec); bf16: umx's bfloat16 matvec\n")
    head = f"{'case':42} {'dev':4} " + " ".join(f"{c:>10}" for c in COLS) + "  plain/fused"
    print(head)
    print("-" * len(head))
    for dev in devices:
        with mx.stream(mx.cpu if dev == "cpu" else mx.gpu):  # the rows' ops run where the row says
            for name, fns, runs in cases(dev, args.quick):
                times = interleaved_medians(fns, max(3, runs // 3) if args.quick else runs)
                cells = " ".join(_cell(times.get(c)) for c in COLS)
                print(f"{name:42} {dev:4} {cells}  {times['plain ops'] / times['fused']:10.2f}", flush=True)


if __name__ == "__main__":
    main()
