"""Kernels of ``mx.fast``: normalizations, rotary embeddings and attention, against NumPy's API.

They compute in float32 (float64 for float64 input), so half-precision input loses nothing between steps; the
executor rounds the result to the node's dtype. On the host they work a block of rows at a time: temporaries stay
in cache, and attention never holds more than a block of its score matrix (queries, heads and batch entries are
split until a block's scores fit). On a GPU one block is the whole problem.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ...primitives import fast as fp
from . import each, kernel

_BLOCK = 1 << 18  # elements a host kernel's block of work holds (one temporary of it stays in cache)
_SCORES = 1 << 20  # scores an attention block holds on the host
_SMALL = 1 << 12  # host inputs of at most this many elements take the paths of fewest NumPy calls


def _acc(xp, *arrays):
    """float64 if any input is, else float32: the dtype a kernel computes in."""
    return xp.float64 if any(a.dtype == np.float64 for a in arrays) else xp.float32


def _rows(x):
    """``x`` as a matrix: one row per entry of the last axis' leading axes."""
    return x.reshape((math.prod(x.shape[:-1]), x.shape[-1]))


def _blocks(xp, n: int, size: int, budget: int | None = None):
    """Slices of ``range(n)`` whose items (of ``size`` elements each) fit ``budget`` (default ``_BLOCK``); one
    slice off the host."""
    budget = _BLOCK if budget is None else budget
    step = n if xp is not np else max(1, min(n, budget // max(size, 1)))
    return [slice(i, i + step) for i in range(0, n, step)] or [slice(0, 0)]


def _inv_rms(xp, rows, eps):
    """``1 / sqrt(mean(rows**2, -1) + eps)`` as a column (einsum: no squared temporary; a few rows on the host,
    a square and a sum, whose calls cost less than einsum's)."""
    d = rows.dtype.type(rows.shape[-1])
    if xp is np and rows.size <= _SMALL:
        squares = np.add.reduce(np.multiply(rows, rows), axis=-1, keepdims=True)
        return np.reciprocal(np.sqrt(squares / d + eps, out=squares), out=squares)
    return (1 / xp.sqrt(xp.einsum("ij,ij->i", rows, rows) / d + eps))[:, None]


@kernel(fp.RMSNorm)
def _rms_norm(xp, prim, x, *weight):
    return rms_norm(xp, prim, x, *weight)


def rms_norm(xp, prim, x, *weight, parallel=None):
    """``prim`` (an RMSNorm) of ``x`` with its weight, if any, in blocks of rows. ``parallel(fn, n)``: ``fn(lo,
    hi)`` over chunks of ``range(n)`` at once, or None where it cannot (the CPU's runs the blocks on its cores)."""
    acc = _acc(xp, x, *weight)
    d = x.shape[-1]
    if xp is np and 0 < x.size <= _SMALL and d:  # a few host rows: the same steps, without blocks or buffers
        rows = _rows(x).astype(acc, copy=False)
        out = np.multiply(rows, _inv_rms(np, rows, acc(prim.eps)))
        if prim.has_weight:
            np.multiply(out, weight[0].astype(acc, copy=False), out=out)
        return out.reshape(x.shape)
    rows = _rows(x)
    out = xp.empty(rows.shape, dtype=acc)
    w = weight[0].astype(acc, copy=False) if prim.has_weight else None
    eps = acc(prim.eps)

    def block(sl) -> None:
        xb = rows[sl].astype(acc, copy=False)
        ob = xp.multiply(xb, _inv_rms(xp, xb, eps), out=out[sl])
        if w is not None:
            xp.multiply(ob, w, out=ob)

    each(_blocks(xp, rows.shape[0] if d else 0, d), block, parallel)
    return out.reshape(x.shape)


@kernel(fp.LayerNorm)
def _layer_norm(xp, prim, x, *params):
    return layer_norm(xp, prim, x, *params)


def layer_norm(xp, prim, x, *params, parallel=None):
    """``prim`` (a LayerNorm) of ``x`` with its weight and bias, if any, in blocks of rows; ``parallel`` as
    :func:`rms_norm`'s."""
    acc = _acc(xp, x, *params)
    d = x.shape[-1]
    rows = _rows(x)
    out = xp.empty(rows.shape, dtype=acc)
    params = [p.astype(acc, copy=False) for p in params]
    w = params[0] if prim.has_weight else None
    b = params[-1] if prim.has_bias else None
    eps = acc(prim.eps)

    def block(sl) -> None:
        xb = rows[sl].astype(acc, copy=False)
        ob = xp.subtract(xb, xp.mean(xb, axis=-1, keepdims=True), out=out[sl])
        xp.multiply(ob, _inv_rms(xp, ob, eps), out=ob)
        if w is not None:
            xp.multiply(ob, w, out=ob)
        if b is not None:
            xp.add(ob, b, out=ob)

    each(_blocks(xp, rows.shape[0] if d else 0, d), block, parallel)
    return out.reshape(x.shape)


@kernel(fp.NormVJP)
def _norm_vjp(xp, prim, x, *rest):
    return norm_vjp(xp, prim, x, *rest)


def norm_vjp(xp, prim, x, *rest, parallel=None):
    """``prim`` (a NormVJP) of ``x``, its weight if any and the cotangent ``g`` (the last of ``rest``), in blocks of
    rows; ``parallel`` as :func:`rms_norm`'s. Per row, with ``xhat = (x - mean) * r`` (no mean for RMSNorm),
    ``r = rsqrt(mean((x - mean)**2) + eps)`` and ``gw = g * w``: ``dx = r * (gw - mean(gw) - xhat * mean(gw *
    xhat))`` (no ``mean(gw)`` for RMSNorm), and with ``weight_rows`` also ``g * xhat``."""
    g = rest[-1]
    acc = _acc(xp, x, *rest)
    d = x.shape[-1]
    rows, grows = _rows(x), _rows(g)
    n = rows.shape[0]
    out = xp.empty((2, n, d) if prim.weight_rows else (n, d), dtype=acc)
    dx = out[0] if prim.weight_rows else out
    w = rest[0].astype(acc, copy=False) if prim.has_weight else None
    eps = acc(prim.eps)

    def block(sl) -> None:
        xb = rows[sl].astype(acc, copy=False)  # (may be x itself: never written)
        gb = grows[sl].astype(acc, copy=False)
        xhat = xp.subtract(xb, xp.mean(xb, axis=-1, keepdims=True)) if prim.centered else xb.copy()
        r = _inv_rms(xp, xhat, eps)
        xp.multiply(xhat, r, out=xhat)
        gw = gb * w if w is not None else gb
        ob = xp.multiply(gw, xhat, out=dx[sl])
        shift = xp.mean(ob, axis=-1, keepdims=True)
        xp.multiply(xhat, shift, out=ob)
        xp.subtract(gw, ob, out=ob)
        if prim.centered:
            xp.subtract(ob, xp.mean(gw, axis=-1, keepdims=True), out=ob)
        xp.multiply(ob, r, out=ob)
        if prim.weight_rows:
            xp.multiply(gb, xhat, out=out[1][sl])

    each(_blocks(xp, n if d else 0, d), block, parallel)
    return out.reshape(((2,) if prim.weight_rows else ()) + x.shape)


def _rope_angles(xp, prim, acc, t: int, rest: list):
    """cos and sin of every position's angles, (1 or B, T, dims/2): positions in float32 whatever x's dtype."""
    half = prim.dims // 2
    if prim.base is not None:
        inv_freq = _inv_freq(prim.base, half, acc) if xp is np else \
            xp.exp(xp.arange(half, dtype=acc) * acc(-math.log(prim.base) / half))
    else:
        inv_freq = acc(1) / rest[-1].astype(acc)
    if prim.offset is not None:
        start = xp.full((1, 1), prim.offset, dtype=acc)
    else:
        start = rest[0].astype(acc).reshape(-1, 1)
    positions = (start + xp.arange(t, dtype=acc)) * acc(prim.scale)
    theta = positions[..., None] * inv_freq
    sin = xp.sin(theta)
    return xp.cos(theta), (-sin if prim.inverse else sin)


@functools.lru_cache(maxsize=64)
def _inv_freq(base: float, half: int, acc) -> np.ndarray:
    """RoPE's frequencies on the host (the same for every call of a model's layers), read-only."""
    out = np.exp(np.arange(half, dtype=acc) * acc(-math.log(base) / half))
    out.flags.writeable = False
    return out


_TABLE_MIN = 256  # positions a host table of angles starts with (it doubles as positions grow)
_tables: dict = {}  # (base, dims, scale, traditional, inverse, dtype) -> (cos, signed sin), rows of positions


def _rope_table(prim, acc, end: int) -> tuple:
    """cos and signed sin of positions ``0 .. end-1`` (at least) laid out over a row's ``dims`` features, so that
    a row turns as ``x * cos + swapped(x) * sin`` (``swapped``: each feature's partner): the same angles, and the
    same rounding, as :func:`_rope_angles` computes per call."""
    key = (prim.base, prim.dims, prim.scale, prim.traditional, prim.inverse, acc)
    table = _tables.get(key)
    if table is None or table[0].shape[0] < end:
        n = max(_TABLE_MIN, 1 << (end - 1).bit_length())
        theta = (np.arange(n, dtype=acc) * acc(prim.scale))[:, None] * _inv_freq(prim.base, prim.dims // 2, acc)
        cos, sin = np.cos(theta), np.sin(theta)
        first = -sin if not prim.inverse else sin  # (the first of a pair takes minus its partner's turn)
        if prim.traditional:
            cos, sin = np.repeat(cos, 2, axis=1), np.stack((first, -first), axis=-1).reshape(n, -1)
        else:
            cos, sin = np.concatenate((cos, cos), axis=1), np.concatenate((first, -first), axis=1)
        table = _tables[key] = (cos, sin)
    return table


def _rope_small(prim, x, rest, acc):
    """RoPE on a few host rows with one offset over all features (``dims == d``), from the cached table: six
    NumPy calls instead of twenty. None where that does not apply."""
    if prim.offset is not None:
        start = prim.offset
    elif rest[0].size == 1:
        start = int(rest[0].reshape(-1)[0])
    else:
        return None
    t, d = x.shape[-2], x.shape[-1]
    if start < 0 or start + t > 1 << 24:  # (float32 positions are exact below 2**24)
        return None
    cos, sin = _rope_table(prim, acc, start + t)
    x = x.astype(acc, copy=False)
    if prim.traditional:
        swapped = x.reshape(x.shape[:-1] + (d // 2, 2))[..., ::-1].reshape(x.shape)
    else:
        swapped = np.concatenate((x[..., d // 2:], x[..., :d // 2]), axis=-1)
    out = np.multiply(x, cos[start:start + t])
    out += np.multiply(swapped, sin[start:start + t])
    return out


@kernel(fp.RoPE)
def _rope(xp, prim, x, *rest):
    acc = _acc(xp, x)
    if xp is np and x.size <= _SMALL and prim.dims == x.shape[-1] and prim.base is not None and x.ndim >= 2:
        out = _rope_small(prim, x, rest, acc)
        if out is not None:
            return out
    b, t, d = x.shape[0], x.shape[-2], x.shape[-1]
    heads = math.prod(x.shape[1:-2])
    rows = x.reshape(b * heads, t, d)
    cos, sin = _rope_angles(xp, prim, acc, t, list(rest))
    dims, half = prim.dims, prim.dims // 2
    first, second = (slice(0, dims, 2), slice(1, dims, 2)) if prim.traditional else \
        (slice(0, half), slice(half, dims))
    out = xp.empty(rows.shape, dtype=acc)
    for sl in _blocks(xp, rows.shape[0], t * d):
        xb = rows[sl].astype(acc, copy=False)
        if cos.shape[0] == 1:
            c, s = cos[0], sin[0]
        else:  # one offset per batch entry: the rows of this block are entries row // heads
            entry = xp.arange(sl.start, min(sl.stop, rows.shape[0])) // heads
            c, s = cos[entry], sin[entry]
        x1, x2 = xb[..., first], xb[..., second]
        ob = out[sl]
        ob[..., first] = x1 * c - x2 * s
        ob[..., second] = x1 * s + x2 * c
        if dims < d:
            ob[..., dims:] = xb[..., dims:]
    return out.reshape(x.shape)


def _sdpa_blocks(xp, batch: int, kv_heads: int, t_q: int, per_query: int) -> tuple:
    """Block sizes (batch entries, kv heads, query positions) whose scores fit the host's budget."""
    if xp is not np:
        return batch, kv_heads, t_q
    per_query = max(per_query, 1)
    tc = max(1, min(t_q, _SCORES // per_query))
    hc = min(kv_heads, max(1, _SCORES // (per_query * tc)))
    bc = min(batch, max(1, _SCORES // (per_query * tc * hc)))
    return bc, hc, tc


def _part(m, index: tuple):
    """``m[index]``, leaving whole the axes along which ``m`` broadcasts (size 1)."""
    return m[tuple(ix if n > 1 else slice(None) for ix, n in zip(index, m.shape))]


@kernel(fp.ScaledDotProductAttention)
def _sdpa(xp, prim, q, k, v, *rest):
    acc = _acc(xp, q, k, v)
    batch, n_q, t_q, d = q.shape
    n_kv, t_k, d_v = k.shape[1], k.shape[2], v.shape[3]
    rep = n_q // n_kv
    lowest = acc(np.finfo(np.float32).min)  # a masked score: a fully masked row averages the values, as in MLX
    q5 = q.reshape(batch, n_kv, rep, t_q, d)
    mask = sinks = None
    if prim.mask in ("bool", "additive"):
        m = rest[0].reshape((1,) * (4 - rest[0].ndim) + rest[0].shape)
        heads = (n_kv, rep) if m.shape[1] == n_q else (1, 1)
        mask = m.reshape(m.shape[:1] + heads + m.shape[2:])
    if prim.has_sinks:
        sinks = rest[-1].astype(acc).reshape(1, n_kv, rep, 1, 1)
    if t_k == 0 or q.size == 0:  # no keys: every weight is 0 (MLX gives zeros too)
        return xp.zeros((batch, n_q, t_q, d_v), dtype=acc)
    out = xp.empty((batch, n_kv, rep, t_q, d_v), dtype=acc)
    bc, hc, tc = _sdpa_blocks(xp, batch, n_kv, t_q, rep * t_k)
    for b in range(0, batch, bc):
        for h in range(0, n_kv, hc):
            bs, hs = slice(b, b + bc), slice(h, h + hc)
            kt = xp.swapaxes(k[bs, hs].astype(acc, copy=False), -1, -2)
            vb = v[bs, hs].astype(acc, copy=False)
            for t in range(0, t_q, tc):
                ts = slice(t, t + tc)
                qb = xp.multiply(q5[bs, hs, :, ts], acc(prim.scale), dtype=acc)
                n_t = qb.shape[3]
                shape5 = qb.shape[:3] + (n_t, t_k)
                s = (qb.reshape(qb.shape[:2] + (-1, d)) @ kt).reshape(shape5)
                if prim.mask == "causal":
                    last = xp.arange(t, t + n_t)[:, None] + (t_k - t_q)  # lower right aligned
                    xp.copyto(s, lowest, where=xp.arange(t_k)[None, :] > last)
                elif prim.mask == "bool":
                    xp.copyto(s, lowest, where=~_part(mask, (bs, hs, slice(None), ts)))
                elif prim.mask == "additive":
                    s += _part(mask, (bs, hs, slice(None), ts)).astype(acc, copy=False)
                top = s.max(axis=-1, keepdims=True)
                if sinks is not None:
                    top = xp.maximum(top, sinks[:, hs])
                s = xp.exp(xp.subtract(s, top, out=s), out=s)
                total = s.sum(axis=-1, keepdims=True)
                if sinks is not None:
                    total += xp.exp(sinks[:, hs] - top)
                o = (s.reshape(shape5[:2] + (-1, t_k)) @ vb).reshape(shape5[:4] + (d_v,))
                out[bs, hs, :, ts] = o / total
    return out.reshape(batch, n_q, t_q, d_v)
