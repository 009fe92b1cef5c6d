"""Kernels of quantization in MLX's packed layout (see ``primitives.quantized``), against NumPy's API.

Codes are unpacked by table where a byte holds whole codes (1, 2, 4 and 8 bits: one gather per byte gives the
codes as floats), by 64-bit windows otherwise. Products dequantize the weight a block of rows at a time into a
bounded float temporary and multiply it with BLAS; on a GPU one block is the whole matrix. Affine values are
computed in the scales' dtype (rounded after the product and after the sum), as ``dequantize`` returns them.
"""

from __future__ import annotations

import numpy as np

from ...dtypes import round_bf16
from ...primitives import quantized as qp
from . import kernel

_BLOCK = 1 << 19  # elements of dequantized weight a CPU product holds at once
_FEW = 8  # products with at most this many input rows scale per-group results, not the weight (see _qmm_few)
# (MLX's rule for x @ W, not transposed: from 4 rows its kernels multiply by the weight's values rounded to its
# dtype, as dequantize returns them, and its tests hold bfloat16 products to that within less than an ulp)
_FEW_NOT_TRANSPOSED = 3
#: elements of unpacked codes such a product holds at once: a block small enough to stay in a core's cache
#: between its unpacking and the products that read it (bench/llm.py's 4-bit decode on the CPU)
_FEW_BLOCK = 1 << 16
_FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
# Magnitudes between two E2M1 values round to the nearer; a tie goes to the smaller, as MLX's encoder does.
_FP4_BOUNDS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)
_E4M3_MAX = 448.0
_AFFINE_EPS = 1e-7  # the smallest scale (a constant group would divide by zero)
_NVFP4_RANGE = 448.0 * 6.0  # the largest E4M3 scale times the largest E2M1 value: a global scale maps to it


# -- tables ---------------------------------------------------------------------------------------------------
def _e4m3_table(xp):
    """The 256 E4M3 (fn) values as float32, NaN at 0x7f and 0xff."""
    b = xp.arange(256, dtype=xp.int32)
    e, m = (b >> 3) & 15, (b & 7).astype(xp.float32)
    mag = xp.where(e == 0, m * np.float32(2.0**-9), xp.ldexp(m + 8, e - 10).astype(xp.float32))
    mag = xp.where((b & 127) == 127, np.float32(np.nan), mag)
    return xp.where(b >= 128, -mag, mag).astype(xp.float32)


def _fp4_table(xp):
    return xp.asarray(_FP4_VALUES + tuple(-v for v in _FP4_VALUES), dtype=xp.float32)


def _fp4_bytes(xp):
    """Byte -> its two E2M1 values (low nibble first), (256, 2) float32."""
    b = xp.arange(256, dtype=xp.int32)
    t = _fp4_table(xp)
    return xp.stack([t[b & 15], t[b >> 4]], axis=-1)


def _code_bytes(bits: int):
    """Byte -> its ``8 // bits`` codes (lowest bits first) as float32."""

    def build(xp):
        b = xp.arange(256, dtype=xp.int32)[:, None]
        return ((b >> xp.arange(0, 8, bits, dtype=xp.int32)) & ((1 << bits) - 1)).astype(xp.float32)

    return build


_BUILDERS = {"e4m3": _e4m3_table, "fp4_bytes": _fp4_bytes,
             1: _code_bytes(1), 2: _code_bytes(2), 4: _code_bytes(4)}
_HOST_TABLES: dict = {}


def _table(xp, name):
    """A constant table on ``xp``: built once on the host; rebuilt per call elsewhere (a few tiny kernels, and no
    copy from the host that would stall a GPU stream)."""
    if xp is np:
        t = _HOST_TABLES.get(name)
        if t is None:
            t = _HOST_TABLES[name] = _BUILDERS[name](np)
        return t
    return _BUILDERS[name](xp)


# -- packing --------------------------------------------------------------------------------------------------
def _windows(bits: int):
    """For a period of 32 codes in ``bits`` words: each code's word and bit offset (host ints)."""
    pos = np.arange(32) * bits
    return pos // 32, pos % 32


def unpack(xp, w, bits: int, n: int):
    """The ``n`` codes of each row of packed ``w`` (..., n * bits / 32), as float32 (..., n)."""
    w = xp.ascontiguousarray(w)
    lead = w.shape[:-1]
    if bits == 8:
        return w.view(xp.uint8).reshape(lead + (n,)).astype(xp.float32)
    if bits in (1, 2, 4):
        return xp.take(_table(xp, bits), w.view(xp.uint8), axis=0).reshape(lead + (n,))
    words = w.reshape(lead + (n // 32, bits)).astype(xp.uint64)
    lo, off = _windows(bits)
    hi = np.minimum(lo + 1, bits - 1)  # the last code of a period never spills past its word
    pairs = words[..., xp.asarray(lo)] | (words[..., xp.asarray(hi)] << xp.uint64(32))
    codes = (pairs >> xp.asarray(off, dtype=xp.uint64)) & xp.uint64((1 << bits) - 1)
    return codes.reshape(lead + (n,)).astype(xp.float32)


def pack(xp, codes, bits: int):
    """Codes (..., n) of ``bits`` bits packed into uint32 words (..., n * bits / 32)."""
    lead, n = codes.shape[:-1], codes.shape[-1]
    if bits in (1, 2, 4, 8):
        c = codes.astype(xp.uint32).reshape(lead + (n * bits // 32, 32 // bits))
        return xp.sum(c << xp.arange(0, 32, bits, dtype=xp.uint32), axis=-1, dtype=xp.uint32)
    lo, off = _windows(bits)
    shifted = codes.astype(xp.uint64).reshape(lead + (n // 32, 32)) << xp.asarray(off, dtype=xp.uint64)
    low = shifted & xp.uint64(0xFFFFFFFF)
    high = shifted >> xp.uint64(32)
    words = []
    for k in range(bits):  # each word: the low parts of its codes, plus the part that spilled from the word before
        mine = np.nonzero(lo == k)[0]
        word = xp.sum(low[..., mine[0]:mine[-1] + 1], axis=-1, dtype=xp.uint64)
        if k > 0:
            word = word + high[..., np.nonzero(lo == k - 1)[0][-1]]
        words.append(word)
    return xp.stack(words, axis=-1).astype(xp.uint32).reshape(lead + (n * bits // 32,))


# -- float codes ----------------------------------------------------------------------------------------------
def encode_e4m3(xp, x):
    """E4M3 bytes of float ``x``: saturated to +-448 (NaN to +448, as MLX does), rounded to nearest even."""
    x = x.astype(xp.float32, copy=False)
    a = xp.minimum(xp.abs(xp.where(x != x, np.float32(_E4M3_MAX), x)), np.float32(_E4M3_MAX))
    _, e = xp.frexp(a)  # a = m * 2**e, m in [0.5, 1): the exponent of 1.m is e - 1
    normal = a >= np.float32(2.0**-6)
    # Normal: ((e-1) + 7) << 3 plus the mantissa's three bits, i.e. (e + 5) * 8 + rint(a * 2**(4-e)) with the
    # rounded part in [8, 16]; a carry into the exponent falls out of the sum. Subnormal: rint(a * 2**9).
    scaled = xp.where(normal, xp.ldexp(a, 4 - e), a * np.float32(512.0))
    code = xp.rint(scaled).astype(xp.int32) + xp.where(normal, (e + 5) * 8, 0)
    return (code + xp.where(xp.signbit(x) & (x == x), 128, 0)).astype(xp.uint8)


def encode_fp4(xp, v):
    """E2M1 codes (uint8, 0..15) of float ``v``, saturated to +-6; a value that rounds to zero keeps no sign."""
    mag = xp.searchsorted(xp.asarray(_FP4_BOUNDS, dtype=v.dtype), xp.abs(v), side="left")
    return (mag + xp.where((v < 0) & (mag > 0), 8, 0)).astype(xp.uint8)


def _e8m0(xp, amax, top: float):
    """Power-of-two scale bytes: 127 + ceil(log2(amax / top)) (0 for amax 0), wrapped to a byte as MLX's are."""
    m, e = xp.frexp(amax / np.float32(top))
    e = e - (m == np.float32(0.5))
    return ((xp.where(amax == 0, 0, e) + 127) & 255).astype(xp.uint8)


def _fp_scale_values(xp, s, mode: str, global_scale):
    """The float32 scale each scale byte stands for (times the nvfp4 global factor)."""
    if mode == "nvfp4":
        v = _table(xp, "e4m3")[s]
        if global_scale is not None:
            v = v * (global_scale.astype(xp.float32) / np.float32(_NVFP4_RANGE))
        return v
    return xp.ldexp(xp.ones((), xp.float32), s.astype(xp.int32) - 127).astype(xp.float32)


# -- quantize / dequantize ------------------------------------------------------------------------------------
def _work_dtype(xp, dtype):
    """What a kernel computes in: float64 for float64, float32 for the other floats (half precision accumulates
    in float32); integers as they are."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return dtype
    return xp.float64 if dtype == np.float64 else xp.float32


def _affine_quantize(xp, w, gs: int, bits: int):
    acc = _work_dtype(xp, w.dtype)
    g = w.astype(acc, copy=False).reshape(w.shape[:-1] + (w.shape[-1] // gs, gs))
    w_max, w_min = g.max(axis=-1), g.min(axis=-1)
    n_bins = (1 << bits) - 1
    if bits == 1:
        scale = xp.maximum(w_max - w_min, acc(_AFFINE_EPS))
        bias = w_min
    else:
        # The group's larger-magnitude edge gets an exact code: the scale is nudged so that edge / scale is an
        # integer, and the bias is that edge (the smallest code at the minimum, the largest at a larger maximum).
        delta = xp.maximum((w_max - w_min) / acc(n_bins), acc(_AFFINE_EPS))
        low = xp.abs(w_min) > xp.abs(w_max)
        scale = xp.where(low, delta, -delta)
        edge = xp.where(low, w_min, w_max)
        q0 = xp.rint(edge / scale)
        scale = xp.where(q0 != 0, edge / xp.where(q0 != 0, q0, 1), scale)
        bias = xp.where(q0 == 0, acc(0), edge)
    q = xp.clip(xp.rint((g - bias[..., None]) / scale[..., None]), 0, n_bins)
    return pack(xp, q.reshape(w.shape), bits), scale, bias


def _fp_quantize(xp, w, gs: int, mode: str, global_scale):
    g = w.astype(xp.float32, copy=False).reshape(w.shape[:-1] + (w.shape[-1] // gs, gs))
    amax = xp.abs(g).max(axis=-1)
    if mode == "nvfp4":
        target = amax / np.float32(6.0)
        if global_scale is not None:
            target = target / (global_scale.astype(xp.float32) / np.float32(_NVFP4_RANGE))
        s = encode_e4m3(xp, target)
    else:
        s = _e8m0(xp, amax, 6.0 if mode == "mxfp4" else _E4M3_MAX)
    scale = _fp_scale_values(xp, s, mode, global_scale)[..., None]
    v = xp.where(scale == 0, np.float32(0), g / xp.where(scale == 0, np.float32(1), scale)).reshape(w.shape)
    codes = encode_e4m3(xp, v) if mode == "mxfp8" else encode_fp4(xp, v)
    return pack(xp, codes, 8 if mode == "mxfp8" else 4), s


def _round_to(xp, x, dtype):
    """``x`` rounded to the precision of umx ``dtype``, in its storage type."""
    if dtype.name == "bfloat16":
        return round_bf16(xp, x)
    return x.astype(dtype.np, copy=False)


def _quantize_rows(xp, prim, w, global_scale) -> tuple:
    if prim.mode == "affine":
        wq, scale, bias = _affine_quantize(xp, w, prim.group_size, prim.bits)
        return wq, _round_to(xp, scale, prim.dtype), _round_to(xp, bias, prim.dtype)
    return _fp_quantize(xp, w, prim.group_size, prim.mode, global_scale)


@kernel(qp.Quantize)
def _quantize(xp, prim, w, *global_scale):
    # a block of rows at a time on the host: the temporaries (codes, windows of 64 bits) stay bounded
    n = w.shape[-1]
    rows = w.reshape((int(np.prod(w.shape[:-1])), n))
    step = _row_block(xp, rows.shape[0], n)
    g = global_scale[0] if global_scale else None
    parts = [_quantize_rows(xp, prim, rows[r:r + step], g) for r in range(0, max(rows.shape[0], 1), step)]
    joined = parts[0] if len(parts) == 1 else [xp.concatenate(p, axis=0) for p in zip(*parts)]
    return tuple(p.reshape(w.shape[:-1] + p.shape[-1:]) for p in joined)


def _n_codes(prim, w) -> int:
    bits = 4 if prim.mode in ("mxfp4", "nvfp4") else 8 if prim.mode == "mxfp8" else prim.bits
    return w.shape[-1] * 32 // bits


def _values(xp, prim, w, groups: int):
    """The unscaled values of packed rows ``w`` (..., n_packed), float32 (..., groups, group size): affine codes,
    or the float modes' E2M1/E4M3 values."""
    n = _n_codes(prim, w)
    lead = w.shape[:-1]
    if prim.mode == "affine":
        q = unpack(xp, w, prim.bits, n)
    else:
        table = _table(xp, "e4m3" if prim.mode == "mxfp8" else "fp4_bytes")
        q = xp.take(table, xp.ascontiguousarray(w).view(xp.uint8), axis=0)
    return q.reshape(lead + (groups, n // groups))


def _exact(dtype, acc) -> bool:
    """Whether values computed in ``acc`` need no rounding to umx ``dtype``."""
    return dtype.compute == acc and dtype.name != "bfloat16"


def dequantize_rows(xp, prim, w, scales, biases, global_scale, dtype, acc):
    """The values of packed rows ``w`` (..., n_packed) as ``acc`` floats (rounded to umx ``dtype``, whose storage
    ``acc`` is or holds exactly)."""
    q = _values(xp, prim, w, scales.shape[-1])
    if acc == np.float64:
        q = q.astype(acc)
    if prim.mode == "affine":
        out = xp.multiply(q, scales[..., None].astype(acc, copy=False), out=q)
        if not _exact(dtype, acc):
            out = _round_to(xp, out, dtype).astype(acc, copy=False)
        out = xp.add(out, biases[..., None].astype(acc, copy=False), out=out)
    else:
        out = xp.multiply(q, _fp_scale_values(xp, scales, prim.mode, global_scale)[..., None], out=q)
    if not _exact(dtype, acc):
        out = _round_to(xp, out, dtype).astype(acc, copy=False)
    return out.reshape(w.shape[:-1] + (-1,))


def _row_block(xp, rows: int, row_size: int, block: int | None = None) -> int:
    if xp is not np:
        return max(rows, 1)
    return max(1, min(rows, (_BLOCK if block is None else block) // max(row_size, 1)))


@kernel(qp.Dequantize)
def _dequantize(xp, prim, w, scales, *rest):
    biases = rest[0] if prim.mode == "affine" else None
    global_scale = rest[-1] if prim.has_global else None
    acc = _work_dtype(xp, prim.dtype.compute)
    n = _n_codes(prim, w)
    lead = w.shape[:-1]
    w2, s2 = w.reshape(-1, w.shape[-1]), scales.reshape(-1, scales.shape[-1])
    b2 = biases.reshape(-1, biases.shape[-1]) if biases is not None else None
    out = xp.empty((w2.shape[0], n), dtype=prim.dtype.compute)
    step = _row_block(xp, w2.shape[0], n)
    for r in range(0, w2.shape[0], step):
        rows = slice(r, r + step)
        vals = dequantize_rows(xp, prim, w2[rows], s2[rows], None if b2 is None else b2[rows], global_scale,
                               prim.dtype, acc)
        out[rows] = vals
    return out.reshape(lead + (n,))


# -- products -------------------------------------------------------------------------------------------------
def _qmm_2d(xp, prim, x, w, scales, biases, acc):
    """``x @ W.T`` (transpose) or ``x @ W`` for one packed matrix ``w``: x is (R, K) in ``acc``; the weight is
    dequantized a block of rows at a time."""
    if x.shape[0] <= (_FEW if prim.transpose else _FEW_NOT_TRANSPOSED):
        # (as MLX's GPU kernels: per-group sums, no rounded weights; the GPU's kernel too)
        return _qmm_few(xp, prim, x, w, scales, biases, acc)
    n = _n_codes(prim, w)
    rows = w.shape[0]
    step = _row_block(xp, rows, n)
    if prim.transpose:  # W is (N, K): each block of rows gives a block of output columns
        out = xp.empty((x.shape[0], rows), dtype=acc)
        for r in range(0, rows, step):
            sl = slice(r, r + step)
            wd = dequantize_rows(xp, prim, w[sl], scales[sl], None if biases is None else biases[sl], None,
                                 prim.wdtype, acc)
            out[:, sl] = x @ wd.T
        return out
    out = xp.zeros((x.shape[0], n), dtype=acc)  # W is (K, N): each block of rows takes its slice of x's columns
    for r in range(0, rows, step):
        sl = slice(r, r + step)
        wd = dequantize_rows(xp, prim, w[sl], scales[sl], None if biases is None else biases[sl], None,
                             prim.wdtype, acc)
        out += x[:, sl] @ wd
    return out


def _qmm_few(xp, prim, x, w, scales, biases, acc):
    """``_qmm_2d`` for a few rows of x: the weight's values are made once (one pass) and never scaled; products
    are taken per group, and the scales and biases multiply those much smaller per-group results."""
    n, m = _n_codes(prim, w), x.shape[0]
    groups = scales.shape[-1]
    gs = n // groups
    rows = w.shape[0]
    step = _row_block(xp, rows, n, _FEW_BLOCK)  # (read at the call: tests shrink it)
    if prim.transpose:  # W (N, K), groups along K: out[:, j] = sum_g s[j, g] * (x_g . q[j, g])
        xg = x.reshape(m, -1, gs)
        xt = xp.ascontiguousarray(xg.transpose(1, 2, 0))  # (groups, gs, m)
        out = xp.empty((m, rows), dtype=acc)
        for r in range(0, rows, step):
            sl = slice(r, r + step)
            q = _values(xp, prim, w[sl], groups).astype(acc, copy=False)
            per_group = xp.matmul(q.transpose(1, 0, 2), xt)  # (groups, rows, m)
            s = _scale_block(xp, prim, scales[sl], acc)
            out[:, sl] = (per_group * s.T[:, :, None]).sum(axis=0).T
        if biases is not None:
            out += xg.sum(axis=-1) @ biases.astype(acc, copy=False).T
        return out
    out = xp.zeros((m, groups, gs), dtype=acc)  # W (K, N), groups along N: scale x's columns per group instead
    for r in range(0, rows, step):
        sl = slice(r, r + step)
        q = _values(xp, prim, w[sl], groups).astype(acc, copy=False)  # (k rows, groups, gs)
        xs = x[:, sl][None] * _scale_block(xp, prim, scales[sl], acc).T[:, None, :]  # (groups, m, k rows)
        out += xp.matmul(xs, q.transpose(1, 0, 2)).transpose(1, 0, 2)
    if biases is not None:
        out += (x @ biases.astype(acc, copy=False))[..., None]
    return out.reshape(m, n)


def _scale_block(xp, prim, scales, acc):
    if prim.mode == "affine":
        return scales.astype(acc, copy=False)
    return _fp_scale_values(xp, scales, prim.mode, None).astype(acc, copy=False)


def _pairs(xp, lhs, rhs):
    """The index arrays broadcast and flattened, and the output's batch shape."""
    lhs, rhs = xp.broadcast_arrays(lhs, rhs)
    return lhs.reshape(-1), rhs.reshape(-1), lhs.shape


def _gathered(xp, x, lhs, rhs, n: int, dtype, one_product):
    """``one_product(e, rows)`` (rows: (count, K) of x, giving (count, n)) for each distinct right index ``e``,
    placed in the output: each right matrix is prepared once for all the products that use it."""
    li, ri, batch = _pairs(xp, lhs, rhs)
    m, k = x.shape[-2:]
    xf = _flat(x)
    out = xp.zeros((li.shape[0], m, n), dtype=dtype)
    if m * n:
        for e in xp.unique(ri).tolist():
            sel = xp.nonzero(ri == e)[0]
            out[sel] = one_product(e, xf[li[sel]].reshape(-1, k)).reshape(-1, m, n)
    return out.reshape(batch + (m, n))


def _flat(a):
    """``a`` with its batch axes merged into one."""
    return a.reshape((int(np.prod(a.shape[:-2])),) + a.shape[-2:])


def _qmm(xp, prim, x, w, scales, biases, lhs, rhs):
    acc = _work_dtype(xp, prim.dtype.compute)
    x = x.astype(acc, copy=False)
    if lhs is None:
        y = _qmm_2d(xp, prim, x.reshape(-1, x.shape[-1]), w, scales, biases, acc)
        out = y.reshape(x.shape[:-1] + (y.shape[-1],))
    else:
        wf, sf = _flat(w), _flat(scales)
        bf = None if biases is None else _flat(biases)
        n = w.shape[-2] if prim.transpose else _n_codes(prim, w)
        out = _gathered(xp, x, lhs, rhs, n, acc,
                        lambda e, rows: _qmm_2d(xp, prim, rows, wf[e], sf[e], None if bf is None else bf[e], acc))
    return out.astype(prim.dtype.compute, copy=False)


def _batch_indices(xp, x_batch: tuple, w_batch: tuple):
    """Index arrays that make a batched product a gathered one: each batch entry's flat index in x and in w."""
    shape = np.broadcast_shapes(x_batch, w_batch)
    lhs = xp.broadcast_to(xp.arange(int(np.prod(x_batch)), dtype=xp.int64).reshape(x_batch), shape)
    rhs = xp.broadcast_to(xp.arange(int(np.prod(w_batch)), dtype=xp.int64).reshape(w_batch), shape)
    return lhs, rhs


@kernel(qp.QuantizedMatmul)
def _quantized_matmul(xp, prim, x, w, scales, *biases):
    b = biases[0] if biases else None
    if w.ndim == 2:
        return _qmm(xp, prim, x, w, scales, b, None, None)
    lhs, rhs = _batch_indices(xp, x.shape[:-2], w.shape[:-2])
    return _qmm(xp, prim, x, w, scales, b, lhs, rhs)


@kernel(qp.GatherQMM)
def _gather_qmm(xp, prim, x, w, scales, *rest):
    *biases, lhs, rhs = rest
    return _qmm(xp, prim, x, w, scales, biases[0] if biases else None, lhs, rhs)


@kernel(qp.GatherMM)
def _gather_mm(xp, prim, a, b, lhs, rhs):
    acc = _work_dtype(xp, a.dtype)  # half-precision products accumulate in float32
    bf = _flat(b)
    out = _gathered(xp, a.astype(acc, copy=False), lhs, rhs, b.shape[-1], acc,
                    lambda e, rows: rows @ bf[e].astype(acc, copy=False))
    return out.astype(a.dtype, copy=False)


@kernel(qp.ToFP8)
def _to_fp8(xp, prim, x):
    return encode_e4m3(xp, x)


@kernel(qp.FromFP8)
def _from_fp8(xp, prim, x):
    return _round_to(xp, _table(xp, "e4m3")[x], prim.dtype)
