"""mx.fast and quantized products: each fused op against the same computation written with plain umx ops, and
against torch, measured in the same run.

Rows: rms_norm and layer_norm of (32, 512, 1024); softmax over the last axis of attention-shaped scores (64, 8, 256,
256) and logsumexp over a vocabulary's logits (4096, 8192); RoPE of (1, 32, 512, 128); attention with a causal mask
over 512 queries and keys (32 query heads, 8 key heads, head size 128) and one decoding query over 4096 keys; a
4096x4096 weight times a vector, 4-bit affine (group 64) against float32 and bfloat16 weights. Each on the CPU and,
where there is one, the GPU. Times are medians of interleaved rounds (``_util.timed_apart``: on the CPU, torch's
columns are timed apart, after the others). The two decoding rows (attention over 4096 keys, the matvec) cycle
through copies of their keys and values or weights that together exceed the caches, so each call reads them from
memory, as a decoding step does. GPU work is synchronized inside the timed region. The last column is the plain-op
(or float32) time over the fused (or quantized) one: above 1, the fused op is faster.

Usage: python bench/fast.py [--quick]
"""

from __future__ import annotations

import argparse
import glob
import itertools
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import suite  # noqa: E402
from _util import cell, timed_apart  # noqa: E402

import umx as mx  # noqa: E402


def _cache_bytes() -> int:
    """The host's last-level caches, all instances together (0 where sysfs does not say)."""
    seen, total = set(), 0
    for d in glob.glob("/sys/devices/system/cpu/cpu*/cache/index*"):
        try:
            with open(f"{d}/level") as f:
                level = int(f.read())
            with open(f"{d}/shared_cpu_list") as f:
                shared = f.read().strip()
            with open(f"{d}/size") as f:
                size = f.read().strip()
        except (OSError, ValueError):
            continue
        if level >= 3 and (level, shared) not in seen:
            seen.add((level, shared))
            unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1])
            total += int(size) if unit is None else int(size[:-1]) * unit
    return total


# What the copies of a decoding row's operands add up to: twice the host's caches, and more than a GPU's L2
COLD_BYTES = max(2 * _cache_bytes(), 256 << 20)


def _copies(make, nbytes: int) -> list:
    """``make()`` called for as many copies (at least 2) as ``COLD_BYTES`` takes, at ``nbytes`` each."""
    return [make() for _ in range(max(2, -(-COLD_BYTES // nbytes)))]


def _cycling(fn, operands: list):
    """``fn`` called on the next tuple of ``operands`` at each call, round and round."""
    turn = itertools.cycle(operands)
    return lambda: fn(*next(turn))


# -- the same computations in plain umx ops ------------------------------------------------------------------
def rms_norm_ops(x, w, eps):
    return w * (x * mx.rsqrt(mx.mean(mx.square(x), axis=-1, keepdims=True) + eps))


def layer_norm_ops(x, w, b, eps):
    mu = mx.mean(x, axis=-1, keepdims=True)
    return (x - mu) * mx.rsqrt(mx.var(x, axis=-1, keepdims=True) + eps) * w + b


def softmax_ops(x):
    e = mx.exp(x - mx.max(x, axis=-1, keepdims=True))
    return e / mx.sum(e, axis=-1, keepdims=True)


def logsumexp_ops(x):
    m = mx.max(x, axis=-1, keepdims=True)
    return mx.log(mx.sum(mx.exp(x - m), axis=-1)) + mx.squeeze(m, -1)


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
    torch = suite._try("torch")
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
    sm, smt = arr(64 // scale_n, 8, 256, 256, scale=4.0)  # (134 MB: larger than a GPU's L2, read from memory)
    row(f"softmax {tuple(sm.shape)}", lambda: mx.softmax(sm, axis=-1), lambda: softmax_ops(sm),
        (lambda: torch.softmax(smt, -1)) if torch is not None else None, 10)
    lg, lgt = arr(4096 // scale_n, 8192, scale=4.0)
    row(f"logsumexp {tuple(lg.shape)}", lambda: mx.logsumexp(lg, axis=-1), lambda: logsumexp_ops(lg),
        (lambda: torch.logsumexp(lgt, -1)) if torch is not None else None, 10)
    r, rt = arr(1, 32 // scale_n, 512, 128)
    row(f"rope {tuple(r.shape)}",
        lambda: mx.fast.rope(r, 128, traditional=False, base=10000.0, scale=1.0, offset=7),
        lambda: rope_ops(r, 128, 10000.0, 7),
        (lambda: _rope_torch(torch, rt, 128, 10000.0, 7)) if torch is not None else None, 10)
    sc = 128**-0.5
    for name, tq, tk, causal in (("attention causal 512x512", 512 // scale_n, 512 // scale_n, True),
                                 ("attention decode 1x4096", 1, 4096 // scale_n, False)):
        q, qt = arr(1, 32, tq, 128)

        def kv(q=q, qt=qt, tk=tk):
            (k, kt), (v, vt) = arr(1, 8, tk, 128), arr(1, 8, tk, 128)
            return (q, k, v), (qt, kt, vt)

        kvs = [kv()] if causal else _copies(kv, 2 * 8 * tk * 128 * 4)  # (decoding: another cache each call)
        ops = [u for u, _ in kvs]
        tfn = None
        if torch is not None:
            tfn = _cycling(lambda qt, kt, vt, causal=causal: torch.nn.functional.scaled_dot_product_attention(
                qt, kt, vt, is_causal=causal, scale=sc, enable_gqa=True), [t for _, t in kvs])
        # (the plain ops start half the copies later: the fused call just before has not warmed theirs)
        row(f"{name} (32/8 heads)",
            _cycling(lambda q, k, v, causal=causal: mx.fast.scaled_dot_product_attention(
                q, k, v, scale=sc, mask="causal" if causal else None), ops),
            _cycling(lambda q, k, v, causal=causal: sdpa_ops(q, k, v, sc, causal),
                     ops[len(ops) // 2:] + ops[:len(ops) // 2]), tfn, 5)

    # the matvec: each column cycles through weights of its own, each made from a new random (out, in) matrix
    xv, xvt = arr(1, 4096)
    xbf = xv.astype(mx.bfloat16)
    mx.eval(xbf)

    def packed():
        q = mx.quantize(arr(4096, 4096, scale=0.02)[0], 64, 4)  # (out, in) packed: y = x @ W.T, as a linear layer
        mx.eval(*q)
        return q

    def dense(dtype):
        wk = mx.contiguous(arr(4096, 4096, scale=0.02)[0].T).astype(dtype)  # (in, out): no transposed copy per row
        mx.eval(wk)
        return (wk,)

    n = 4096 * 4096
    qfns = {"fused": _cycling(lambda w, s_, b_: mx.eval(mx.quantized_matmul(xv, w, s_, b_, True, 64, 4)),
                              _copies(packed, n // 2 + 2 * (n // 64) * 4)),
            "plain ops": _cycling(lambda w: mx.eval(xv @ w), _copies(lambda: dense(mx.float32), 4 * n)),
            "bf16": _cycling(lambda w: mx.eval(xbf @ w), _copies(lambda: dense(mx.bfloat16), 2 * n))}
    if torch is not None:
        xbt = xvt.to(torch.bfloat16)

        def dense_torch(dtype):
            h = rng.standard_normal((4096, 4096), dtype=np.float32) * 0.02
            return (torch.from_numpy(h.T.copy()).to(tdev).to(dtype),)

        qfns["torch"] = _cycling(lambda w: (xvt @ w, sync()), _copies(lambda: dense_torch(torch.float32), 4 * n))
        qfns["torch bf16"] = _cycling(lambda w: (xbt @ w, sync()),
                                      _copies(lambda: dense_torch(torch.bfloat16), 2 * n))
    out.append(("matvec 4096^2: 4-bit vs float32", qfns, 10))
    return out


COLS = ["fused", "plain ops", "torch", "bf16", "torch bf16"]


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
                times = timed_apart(fns, max(3, runs // 3) if args.quick else runs, dev == "cpu")
                cells = " ".join(cell(times[c]) if c in times else f"{'-':>10}" for c in COLS)
                print(f"{name:42} {dev:4} {cells}  {times['plain ops'] / times['fused']:10.2f}", flush=True)


if __name__ == "__main__":
    main()
