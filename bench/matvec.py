"""A decode step's products on the GPU, kernel by kernel: the weight's bytes read per second by umx's bfloat16
matvec (``backends/cuda/matvec.py``), by cuBLAS's bfloat16 product of the same operands, by umx's 4-bit matvec
(``backends/cuda/quantized.py``, group 64, bfloat16 scales), and by torch's bfloat16 ``x @ w.T`` where importable.

Shapes are the linear layers of ``bench/llm.py``'s 1.2B Llama (d_model 2048, FFN 8192, 8 KV heads of 64, vocabulary
32000) for one and four rows of ``x``. Each kernel is called on CuPy arrays (no umx op or planning), ``--launches``
calls captured in one CUDA graph and the graph's replays timed by CUDA events (device time: called one by one
from Python, a small product's time is the host's), the median of ``--runs``; the calls cycle through enough
copies of the weight that none is read from the L2 cache. Columns are GB/s of weight read (packed words,
scales and biases for 4-bit) and the fraction of ``--bandwidth`` (TB/s: by default 4.8 on an H200, else 3.35,
an H100's).

With ``--configs``, instead, umx's bfloat16 kernel for one row of ``x`` under each shape of its blocks (weight rows
and warps a block), to choose ``matvec.SHAPES`` on a new GPU. With ``--attention``, instead, a decode step's
attention (bfloat16, one query of 32 heads over 8 key heads of 64 features, as the 1.2B model's) for several
cache lengths: umx's grouped kernel under each smallest chunk of keys a block takes (``ATTENTION_CHUNKS``), its
chunks merged in the kernel or by a second one, and torch's ``scaled_dot_product_attention`` where importable, in
microseconds a call as the device runs them (the caches cycled as the weights are).

Usage: python bench/matvec.py [--runs 5] [--launches 200] [--bandwidth TB/s] [--configs | --attention]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

import umx as mx  # noqa: E402

SHAPES = [("q/o proj", 2048, 2048), ("k/v proj", 512, 2048), ("gate/up", 8192, 2048), ("down", 2048, 8192),
          ("lm head", 32000, 2048)]
L2_BYTES = 64 << 20  # (larger than an H100's or H200's L2: a weight cycled through this much is read from memory)


def _time(cp, launch, copies: int, launches: int, runs: int, torch=None) -> float:
    """Seconds per launch of ``launch(i)`` over copies ``i`` in turn, as the device runs them: ``launches`` launches
    captured in one CUDA graph (CuPy's, or torch's for torch's kernels), its replays timed by CUDA events, the
    median of ``runs``. (Launched one by one from Python, a small product's time is the host's.)"""
    if torch is not None:
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            for i in range(copies):
                launch(i)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            for j in range(launches):
                launch(j % copies)
        replay = graph.replay
        start_ev, stop_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(runs + 1):
            start_ev.record()
            replay()
            stop_ev.record()
            stop_ev.synchronize()
            times.append(start_ev.elapsed_time(stop_ev) / 1e3 / launches)
        return statistics.median(times[1:])
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        for i in range(copies):  # (first calls outside the capture: kernels compiled, cuBLAS's handle made)
            launch(i)
        stream.synchronize()
        stream.begin_capture()
        for j in range(launches):
            launch(j % copies)
        graph = stream.end_capture()
        times = []
        for _ in range(runs + 1):
            start, stop = cp.cuda.Event(), cp.cuda.Event()
            start.record(stream)
            graph.launch(stream)
            stop.record(stream)
            stop.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3 / launches)
    return statistics.median(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--launches", type=int, default=200)
    ap.add_argument("--bandwidth", type=float, default=None,
                    help="memory bandwidth in TB/s (default: 4.8 on an H200, else 3.35, an H100 SXM's)")
    ap.add_argument("--configs", action="store_true",
                    help="instead: umx's bfloat16 kernel for one row of x under each (weight rows, warps) a block")
    ap.add_argument("--attention", action="store_true",
                    help="instead: a decode step's attention under each smallest chunk of keys, and torch's")
    args = ap.parse_args()
    if not mx.is_available(mx.gpu):
        print("no CUDA GPU here: nothing to measure")
        return
    import cupy as cp

    import umx.backends.cuda.kernels  # noqa: F401 (registers bfloat16's device conversions)
    from umx.backends.cuda import cublas, matvec, quantized
    from umx.dtypes import bfloat16, narrow_bf16
    from umx.primitives.quantized import QuantizedMatmul

    try:
        import torch

        torch = torch if torch.cuda.is_available() else None
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    name = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    if args.bandwidth is None:
        args.bandwidth = 4.8 if "H200" in name else 3.35
    peak = args.bandwidth * 1e12
    cols = ["umx bf16", "cuBLAS bf16", "umx 4-bit"] + (["torch bf16"] if torch is not None else [])
    print(f"umx {mx.__version__}; {name}; GB/s of weight read "
          f"(fraction of {args.bandwidth} TB/s); medians of {args.runs} x {args.launches} launches")
    if args.configs:
        _configs(cp, matvec, narrow_bf16, rng, args, peak)
        return
    if args.attention:
        _attention(cp, narrow_bf16, rng, args, torch)
        return
    head = f"{'layer':9} {'rows':>4} {'N x K':>12} " + " ".join(f"{c:>18}" for c in cols)
    print(head)
    print("-" * len(head))
    with mx.stream(mx.gpu):
        for layer, n, k in SHAPES:
            dense_bytes = n * k * 2
            copies = max(2, -(-L2_BYTES // dense_bytes))
            ws = [cp.asarray(rng.standard_normal((n, k), dtype=np.float32) * 0.02) for _ in range(copies)]
            wbf = [narrow_bf16(cp, w) for w in ws]
            packed = []
            for w in ws:
                q, s, b = mx.quantize(mx.array(cp.asnumpy(w)).astype(mx.bfloat16), 64, 4)
                mx.eval(q, s, b)
                packed.append(tuple(cp.asarray(_storage(a)) for a in (q, s, b)))
            q_bytes = sum(a.nbytes for a in packed[0])
            tw = [torch.as_tensor(w, device="cuda").to(torch.bfloat16) for w in ws] if torch is not None else None
            for rows in (1, 4):
                x = narrow_bf16(cp, cp.asarray(rng.standard_normal((rows, k), dtype=np.float32)))
                node = _QmvNode(QuantizedMatmul(True, 64, 4, "affine", bfloat16, bfloat16), rows, n, k, bfloat16)
                cells = {
                    "umx bf16": (lambda i, x=x, w=wbf, s=(rows, n): matvec.bf16_matvec(x, w[i].T, s), dense_bytes),
                    # (the handle of the stream current at the call: the capturing one)
                    "cuBLAS bf16": (lambda i, x=x, w=wbf: cublas.matmul(cublas.current(), x, w[i].T,
                                                                        cublas.BFLOAT16), dense_bytes),
                    "umx 4-bit": (lambda i, x=x, node=node, p=packed: quantized._native_qmv(node, [x, *p[i]]),
                                  q_bytes),
                }
                if torch is not None:
                    tx = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16)
                    cells["torch bf16"] = (lambda i, tx=tx, tw=tw: tx @ tw[i].T, dense_bytes)
                out = []
                for c in cols:
                    launch, nbytes = cells[c]
                    assert launch(0) is not None, c
                    sec = _time(cp, launch, copies, args.launches, args.runs, torch if c.startswith("torch") else None)
                    out.append(f"{nbytes / sec / 1e9:8.0f} ({nbytes / sec / peak:4.0%}) ")
                print(f"{layer:9} {rows:4} {f'{n}x{k}':>12} " + " ".join(f"{o:>18}" for o in out), flush=True)


#: (weight rows, warps) a block of umx's bfloat16 kernel for one row of x, timed by ``--configs``
CONFIGS = ((1, 8), (2, 4), (2, 8), (2, 16), (4, 4), (4, 8), (8, 4))


def _configs(cp, matvec, narrow_bf16, rng, args, peak: float) -> None:
    """GB/s of umx's bfloat16 kernel for one row of x, per layer shape and ``CONFIGS`` entry (the shipped one is
    ``matvec.SHAPES[1]``)."""
    shipped = matvec.SHAPES[1]
    print(f"one row of x; shipped {shipped}; GB/s (fraction of {args.bandwidth} TB/s)")
    print(f"{'layer':9} {'N x K':>12} " + " ".join(f"{str(c):>14}" for c in CONFIGS))
    x_rows = {}
    try:
        for layer, n, k in SHAPES:
            nbytes = n * k * 2
            copies = max(2, -(-L2_BYTES // nbytes))
            ws = [narrow_bf16(cp, cp.asarray(rng.standard_normal((n, k), dtype=np.float32) * 0.02))
                  for _ in range(copies)]
            x = x_rows.setdefault(k, narrow_bf16(cp, cp.asarray(rng.standard_normal((1, k), dtype=np.float32))))
            cells = []
            for config in CONFIGS:
                matvec.SHAPES[1] = config
                sec = _time(cp, lambda i, w=ws, x=x, n=n: matvec.bf16_matvec(x, w[i].T, (1, n)), copies, args.launches,
                            args.runs)
                cells.append(f"{nbytes / sec / 1e9:6.0f} ({nbytes / sec / peak:3.0%})")
            print(f"{layer:9} {f'{n}x{k}':>12} " + " ".join(f"{c:>14}" for c in cells), flush=True)
    finally:
        matvec.SHAPES[1] = shipped


#: the smallest chunks of keys a block of the grouped decode attention takes, timed by ``--attention`` (the
#: shipped one is ``fast.SDPA_GROUP_MIN_CHUNK``; the largest is bounded by its tile)
ATTENTION_CHUNKS = (16, 32, 64)
#: cache lengths ``--attention`` times
ATTENTION_KEYS = (128, 640, 2048, 8192)


def _attention(cp, narrow_bf16, rng, args, torch) -> None:
    """Microseconds a call of a decode step's attention, per cache length: umx's grouped kernel under each
    ``ATTENTION_CHUNKS`` entry, merged in the kernel ("in") or by the second kernel ("2nd"), and torch's."""
    from umx.backends.cuda import fast
    from umx.primitives.fast import ScaledDotProductAttention

    n_q, n_kv, d = 32, 8, 64
    prim = ScaledDotProductAttention(d ** -0.5, "none", False)
    kept = fast.SDPA_GROUP_MIN_CHUNK, fast.MERGE
    cols = [f"{c} {m}" for c in ATTENTION_CHUNKS for m in ("in", "2nd")] + (["torch"] if torch is not None else [])
    print(f"decode attention, bfloat16, {n_q} query heads over {n_kv} key heads of {d}; us a call "
          f"(shipped: smallest chunk {kept[0]}, merge {'in' if kept[1] else '2nd'})")
    print(f"{'keys':>6} {'MB':>6} " + " ".join(f"{c:>8}" for c in cols))
    try:
        for t_k in ATTENTION_KEYS:
            nbytes = 2 * n_kv * t_k * d * 2
            copies = max(2, -(-L2_BYTES // nbytes))
            q = narrow_bf16(cp, cp.asarray(rng.standard_normal((1, n_q, 1, d), dtype=np.float32)))
            kvs = [tuple(narrow_bf16(cp, cp.asarray(rng.standard_normal((1, n_kv, t_k, d), dtype=np.float32)))
                         for _ in range(2)) for _ in range(copies)]
            cells = []
            for chunk in ATTENTION_CHUNKS:
                for merge in (True, False):
                    fast.SDPA_GROUP_MIN_CHUNK, fast.MERGE = chunk, merge
                    def call(i, kv=kvs, q=q):  # (q as the mask: with none, any pointer, unread, as _sdpa passes)
                        return fast._sdpa_rows(prim, q, *kv[i], q, (0, 0, 0, 0), None, fast._BF)

                    sec = _time(cp, call, copies, args.launches, args.runs)
                    cells.append(f"{sec * 1e6:8.2f}")
            if torch is not None:
                tq = torch.randn(1, n_q, 1, d, device="cuda", dtype=torch.bfloat16)
                tkv = [(torch.randn(1, n_kv, t_k, d, device="cuda", dtype=torch.bfloat16),
                        torch.randn(1, n_kv, t_k, d, device="cuda", dtype=torch.bfloat16)) for _ in range(copies)]
                sdpa = torch.nn.functional.scaled_dot_product_attention
                sec = _time(cp, lambda i, f=sdpa, tq=tq, kv=tkv: f(tq, *kv[i], enable_gqa=True), copies,
                            args.launches, args.runs, torch)
                cells.append(f"{sec * 1e6:8.2f}")
            print(f"{t_k:6} {nbytes / 1e6:6.2f} " + " ".join(cells), flush=True)
    finally:
        fast.SDPA_GROUP_MIN_CHUNK, fast.MERGE = kept


def _storage(a):
    """A umx array's data as stored (bfloat16 as its uint16 bits)."""
    from umx.dtypes import narrow_bf16

    return narrow_bf16(np, np.asarray(a.astype(mx.float32))) if a.dtype == mx.bfloat16 else np.asarray(a)


class _QmvNode:
    """The parts of a QuantizedMatmul node ``quantized._native_qmv`` reads."""

    class _In:
        def __init__(self, shape, dtype):
            self._shape, self._dtype = shape, dtype

    def __init__(self, prim, rows, n, k, dtype):
        from umx.dtypes import uint32

        self._prim = prim
        self._dtype = dtype
        self._shape = (rows, n)
        self._inputs = (self._In((rows, k), dtype), self._In((n, k // 8), uint32), self._In((n, k // 64), dtype),
                        self._In((n, k // 64), dtype))


if __name__ == "__main__":
    main()
