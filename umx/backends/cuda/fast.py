"""``mx.fast``'s normalizations, rotary embedding and attention as kernels of umx's own on the GPU (``sources.py``
has their text), for float32 data (bfloat16 arrives widened); attention over many queries is two cuBLAS products
around a softmax kernel. Other dtypes and the frequencies-as-input form of rope take the shared kernels of
``backends/xp/fast.py``, several CuPy calls each.

These kernels only enqueue device work, so a CUDA graph may capture a node that one of them runs: ``CAPTURE_IF``
tells ``graphs.py`` which nodes those are (the shared kernels' products go through CuPy's cuBLAS, which refuses
capture)."""

from __future__ import annotations

import functools
import math

import numpy as np

from ...dtypes import bfloat16, float32
from ...primitives import fast as fp
from . import cublas
from ._probe import _cupy
from .sources import (
    BLOCK,
    SDPA_BLOCK,
    SDPA_MAX_HEAD,
    layer_norm_source,
    rms_norm_source,
    rope_source,
    sdpa_softmax_source,
    sdpa_source,
)

cp = _cupy()


@functools.cache
def _kernel(which: str):
    source = {"rms_norm": rms_norm_source, "layer_norm": layer_norm_source, "rope": rope_source,
              "sdpa": sdpa_source, "sdpa_softmax": sdpa_softmax_source}[which]
    return cp.RawKernel(source(f"umx_{which}"), f"umx_{which}")


def _norm(which: str, fallback):
    """A normalization's kernel (``which``: "rms_norm" or "layer_norm"): one block per row where ``x`` and its
    weight (and bias) are float32, else ``fallback``."""

    def run(prim, x, *params):
        if x.dtype != np.float32 or any(p.dtype != np.float32 for p in params) or x.size == 0 or x.ndim == 0:
            return fallback(prim, x, *params)
        d = x.shape[-1]
        x = cp.ascontiguousarray(x)
        out = cp.empty_like(x)
        w = cp.ascontiguousarray(params[0]) if prim.has_weight else x  # (any pointer: not read)
        args = [x, w]
        if which == "layer_norm":
            args.append(cp.ascontiguousarray(params[-1]) if prim.has_bias else x)
        args += [out, np.int32(d), np.float32(prim.eps), np.int32(prim.has_weight)]
        if which == "layer_norm":
            args.append(np.int32(prim.has_bias))
        _kernel(which)((x.size // d,), (BLOCK,), tuple(args))
        return out

    return run


def rope(fallback):
    """RoPE's kernel: one thread per element where ``x`` is float32 and the frequencies come from ``base``, else
    ``fallback``."""

    def run(prim, x, *rest):
        if x.dtype != np.float32 or prim.base is None or x.size == 0 or x.ndim < 2:
            return fallback(prim, x, *rest)
        b, t, d = x.shape[0], x.shape[-2], x.shape[-1]
        heads = x.size // max(b * t * d, 1)
        if prim.offset is not None:
            offsets = cp.full((1,), prim.offset, dtype=cp.float32)
        else:
            offsets = cp.ascontiguousarray(rest[0].astype(cp.float32).reshape(-1))
        x = cp.ascontiguousarray(x)
        out = cp.empty_like(x)
        half = prim.dims // 2
        blocks = -(-x.size // BLOCK)
        _kernel("rope")((blocks,), (BLOCK,), (
            x, out, offsets, np.int32(offsets.size), np.int64(x.size), np.int32(t), np.int32(d),
            np.int32(prim.dims), np.int32(heads), np.float32(prim.scale),
            np.float32(-math.log(prim.base) / half), np.int32(1 if prim.traditional else 0),
            np.int32(1 if prim.inverse else 0)))
        return out

    return run


#: attention over at most this many query positions runs as the kernel (one block per query row, each reading the
#: keys of its head); longer query blocks take the shared kernel, whose products are cuBLAS GEMMs
SDPA_MAX_QUERIES = 16
_MASK_KINDS = {"none": 0, "causal": 1, "bool": 2, "additive": 3}


def sdpa_fits(prim, q_shape: tuple, k_shape: tuple, v_shape: tuple) -> bool:
    """Whether the attention kernel takes queries, keys and values of these shapes (float32 data)."""
    return (len(q_shape) == 4 and 0 < q_shape[2] <= SDPA_MAX_QUERIES and q_shape[3] <= SDPA_MAX_HEAD
            and v_shape[3] <= SDPA_MAX_HEAD and k_shape[2] > 0 and math.prod(q_shape) > 0)


def sdpa(fallback):
    """Attention's kernels where ``q``, ``k`` and ``v`` are float32: few queries (:func:`sdpa_fits`) as one
    kernel, more as two cuBLAS products around a softmax kernel; else ``fallback``."""

    def run(prim, q, k, v, *rest):
        if (q.dtype != np.float32 or k.dtype != np.float32 or v.dtype != np.float32 or q.ndim != 4
                or q.size == 0 or k.shape[2] == 0):
            return fallback(prim, q, k, v, *rest)
        mask, strides = q, (0, 0, 0, 0)  # (no mask: any pointer, not read)
        if prim.mask in ("bool", "additive"):
            m = rest[0]
            m = m.reshape((1,) * (4 - m.ndim) + m.shape)
            mask = cp.ascontiguousarray(m if prim.mask == "bool" else m.astype(cp.float32, copy=False))
            strides = tuple(0 if n == 1 else s // mask.itemsize for n, s in zip(mask.shape, mask.strides))
        sinks = cp.ascontiguousarray(rest[-1].astype(cp.float32, copy=False)) if prim.has_sinks else None
        if sdpa_fits(prim, q.shape, k.shape, v.shape):
            return _sdpa_rows(prim, q, k, v, mask, strides, sinks)
        h = cublas.current()
        out = _sdpa_products(h, prim, q, k, v, mask, strides, sinks) if h is not None else None
        return out if out is not None else fallback(prim, q, k, v, *rest)

    return run


def _sdpa_rows(prim, q, k, v, mask, strides: tuple, sinks):
    """Few queries: one block per query row (``sources.sdpa_source``)."""
    batch, n_q, t_q, d = q.shape
    n_kv, t_k, d_v = k.shape[1], k.shape[2], v.shape[3]
    q, k, v = cp.ascontiguousarray(q), cp.ascontiguousarray(k), cp.ascontiguousarray(v)
    out = cp.empty((batch, n_q, t_q, d_v), cp.float32)
    _kernel("sdpa")((batch * n_q * t_q,), (SDPA_BLOCK,), (
        q, k, v, mask, sinks if sinks is not None else np.uint64(0), out, np.int32(n_q), np.int32(n_kv),
        np.int32(t_q), np.int32(t_k), np.int32(d), np.int32(d_v), np.float32(prim.scale),
        np.int32(_MASK_KINDS[prim.mask]), *(np.int64(s) for s in strides)))
    return out


#: the most bytes of scores the products' path holds at once (longer query blocks run in parts)
SCORES_BYTES = 256 << 20


def _sdpa_products(h, prim, q, k, v, mask, strides: tuple, sinks):
    """More queries: the scores of each key head's group of query heads by one batched product (cuBLAS, through
    umx's handle: a CUDA graph captures it), softmax in place (``sources.sdpa_softmax_source``), then the
    weighted values by a second product; in parts of query positions whose scores fit ``SCORES_BYTES``. None if
    cuBLAS does not take the operands."""
    batch, n_q, t_q, d = q.shape
    n_kv, t_k, d_v = k.shape[1], k.shape[2], v.shape[3]
    rep = n_q // n_kv
    kt = cp.ascontiguousarray(cp.swapaxes(k, -1, -2))  # (B, Hkv, D, Tk)
    v = cp.ascontiguousarray(v)
    step = max(1, min(t_q, SCORES_BYTES // (4 * batch * n_q * t_k)))
    out = None if step == t_q else cp.empty((batch, n_q, t_q, d_v), cp.float32)
    mask_kind = np.int32(_MASK_KINDS[prim.mask])
    for t0 in range(0, t_q, step):
        n = min(t_q, t0 + step) - t0
        # (a key head's query heads are neighbours: (B, Hkv, rep * n, D) rows, in the order of q's rows)
        qc = cp.ascontiguousarray(q[:, :, t0:t0 + n]).reshape(batch, n_kv, rep * n, d)
        scores = cublas.matmul(h, qc, kt)
        if scores is None:
            return None
        _kernel("sdpa_softmax")((batch * n_q * n,), (BLOCK,), (
            scores, mask, sinks if sinks is not None else np.uint64(0), np.int32(n_q), np.int32(n),
            np.int32(t0), np.int32(t_q), np.int32(t_k), np.float32(prim.scale), mask_kind,
            *(np.int64(s) for s in strides)))
        part = cublas.matmul(h, scores, v)
        if part is None:
            return None
        part = part.reshape(batch, n_q, n, d_v)
        if out is None:
            return part
        out[:, :, t0:t0 + n] = part
    return out


def install(table: dict) -> None:
    """Put the kernels above in front of the shared ones in the CUDA kernel table."""
    table[fp.RMSNorm] = _norm("rms_norm", table[fp.RMSNorm])
    table[fp.LayerNorm] = _norm("layer_norm", table[fp.LayerNorm])
    table[fp.RoPE] = rope(table[fp.RoPE])
    table[fp.ScaledDotProductAttention] = sdpa(table[fp.ScaledDotProductAttention])


_FLOAT = (float32, bfloat16)  # (bfloat16 reaches the kernels widened to float32)


def _all_float(n) -> bool:
    for x in n._inputs:
        if x._dtype not in _FLOAT:
            return False
    return n._dtype in _FLOAT


def _sdpa_captures(n) -> bool:
    ins = n._inputs
    for x in ins[:3]:
        if x._dtype not in _FLOAT:
            return False
    q, k, v = ins[0]._shape, ins[1]._shape, ins[2]._shape
    if len(q) != 4 or math.prod(q) == 0 or k[2] == 0:
        return False  # (the shared kernel's zeros)
    return sdpa_fits(n._prim, q, k, v) or cublas.available()


#: primitive class -> whether a node of it runs as one of the kernels above (a CUDA graph may capture those)
CAPTURE_IF = {
    fp.RMSNorm: lambda n: _all_float(n) and n._shape != () and math.prod(n._shape) > 0,
    fp.LayerNorm: lambda n: _all_float(n) and n._shape != () and math.prod(n._shape) > 0,
    fp.RoPE: lambda n: (n._prim.base is not None and n._inputs[0]._dtype in _FLOAT and n._dtype in _FLOAT
                        and len(n._shape) >= 2 and math.prod(n._shape) > 0),
    fp.ScaledDotProductAttention: _sdpa_captures,
}
