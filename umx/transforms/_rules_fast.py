"""Derivative and batching rules of the ``mx.fast`` and quantization primitives.

The jvps of the normalizations and attention differentiate the same computation written in plain ops
(``umx.fast``'s ``_composed_*``), so gradients of every order exist and agree with the fused forward pass. Their
vjps are written in closed form (fewer nodes, and no trace of their own per call), from the same ops. RoPE is
linear in its input: its jvp is itself, its vjp the opposite rotation. Quantized products are linear in the input
and, in the affine mode, in the scales and biases jointly; the float modes have no gradient for their scale bytes.
"""

from __future__ import annotations

from .. import dtypes as dt
from .. import fast
from .. import ops as m
from ..array import array, node
from ..devices import resolve_stream
from ..ops._core import cast, sibling_nodes
from ..primitives import (
    Dequantize,
    FromFP8,
    GatherMM,
    GatherQMM,
    LayerNorm,
    NormVJP,
    Quantize,
    QuantizedMatmul,
    RMSNorm,
    RoPE,
    ScaledDotProductAttention,
    ToFP8,
)
from ._batching import _lift, _same, _size
from ._registry import rules
from ._rules import composed, none_jvp, none_vjp, softmax_grad
from ._rules_elementwise import unbroadcast
from .autodiff import needs_gradient


def _stream():
    return resolve_stream(None)


# -- attention: the vjp in closed form (the jvp from the plain-op computation) --------------------------------
def _sdpa_vjp(self, primals, cotangents, outputs):
    # o = p v with p = softmax(s), s = (q scale) k^T (masked); per row: dv = p^T g, dp = g v^T,
    # ds = p * (dp - sum(p dp)) (a sink's column has dp = 0), dq = ds k scale, dk = ds^T (q scale). Grouped heads
    # are summed over the query heads that share a key head.
    q, k, v, *rest = primals
    qa, ka, va, s = fast._sdpa_scores(self, q, k, v, *rest)
    p, p_sink = fast._sdpa_probabilities(self, s, rest)
    ga = cast(cotangents[0], s._dtype)
    grouped = s.ndim == 5
    if grouped:
        ga = m.reshape(ga, s._shape[:4] + (-1,))
    dp = ga @ m.swapaxes(va, -1, -2)
    ds = softmax_grad(p, dp, (p.ndim - 1,))
    dq = (ds @ ka) * self.scale
    dk = m.swapaxes(ds, -1, -2) @ qa
    dv = m.swapaxes(p, -1, -2) @ ga
    if grouped:
        dq = m.reshape(dq, q._shape[:3] + (-1,))
        dk, dv = m.sum(dk, axis=2), m.sum(dv, axis=2)
    grads = [cast(dq, q._dtype), cast(dk, k._dtype), cast(dv, v._dtype)]
    if self.mask in ("bool", "additive"):
        mask = rest[0]
        if self.mask == "additive" and needs_gradient(mask):  # (added to the scores: its gradient is ds's)
            d = m.reshape(ds, q._shape[:3] + (ds._shape[-1],)) if grouped else ds
            d = unbroadcast(d, (1,) * (4 - mask.ndim) + mask._shape)
            grads.append(cast(m.reshape(d, mask._shape), mask._dtype))
        else:
            grads.append(None)
    if self.has_sinks:
        sinks = rest[-1]
        if needs_gradient(sinks):
            d = -(p_sink * m.sum(p * dp, axis=-1, keepdims=True))  # (b, heads..., t_q, 1)
            d = m.sum(d, axis=(0, -2, -1))
            grads.append(cast(m.reshape(d, sinks._shape), sinks._dtype))
        else:
            grads.append(None)
    return grads


rules(ScaledDotProductAttention, vjp=_sdpa_vjp, jvp=composed(fast._composed_sdpa)["jvp"])


# -- the normalizations: vjps in closed form (jvps from the plain-op computation) ------------------------------
def _leading(x: array) -> tuple:
    return tuple(range(x.ndim - 1))


def _norm_vjp(self, primals, cotangents, outputs):
    # One NormVJP node gives dx (and, for the weight's gradient, g * xhat per row, summed over the rows here);
    # the bias's gradient is the sum of g over the rows
    x = primals[0]
    layer = type(self) is LayerNorm
    has_bias = layer and self.has_bias
    w = primals[1] if self.has_weight else None
    b = primals[-1] if has_bias else None
    want_w = w is not None and needs_gradient(w)
    acc = fast._acc(outputs[0]._dtype)
    g = cotangents[0]
    prim = NormVJP(self.eps, layer, self.has_weight, want_w)
    ins = (x, w, g) if w is not None else (x, g)
    out = node(prim, ins, ((2,) if want_w else ()) + x._shape, acc, _stream())
    grads = [cast(out[0] if want_w else out, x._dtype)]
    lead = _leading(x)
    if w is not None:
        grads.append(cast(m.sum(out[1], axis=lead), w._dtype) if want_w else None)
    if has_bias:
        grads.append(cast(m.sum(cast(g, acc), axis=lead), b._dtype) if needs_gradient(b) else None)
    return grads


def _norm_grad_plain(self, x, *rest):
    # NormVJP in plain ops (its derivatives differentiate these): per row, xhat = (x - mean) * r with
    # r = rsqrt(mean((x - mean)^2) + eps) (no mean for RMSNorm), gw = g w:
    # dx = r * (gw - mean(gw) - xhat mean(gw xhat)) (no mean(gw) for RMSNorm), and g xhat for the weight
    acc = dt.float64 if any(a._dtype is dt.float64 for a in (x, *rest)) else dt.float32  # (as the kernels')
    xa, ga = cast(x, acc), cast(rest[-1], acc)
    centered = xa - m.mean(xa, axis=-1, keepdims=True) if self.centered else xa
    r = m.rsqrt(m.mean(m.square(centered), axis=-1, keepdims=True) + self.eps)
    xhat = centered * r
    gw = ga * cast(rest[0], acc) if self.has_weight else ga
    inner = gw - xhat * m.mean(gw * xhat, axis=-1, keepdims=True)
    if self.centered:
        inner = inner - m.mean(gw, axis=-1, keepdims=True)
    dx = r * inner
    return m.stack([dx, ga * xhat]) if self.weight_rows else dx


rules(RMSNorm, vjp=_norm_vjp, jvp=composed(fast._composed_rms_norm)["jvp"])
rules(LayerNorm, vjp=_norm_vjp, jvp=composed(fast._composed_layer_norm)["jvp"])
rules(NormVJP, **composed(_norm_grad_plain))


# -- RoPE -----------------------------------------------------------------------------------------------------
def _rope_jvp(self, primals, tangents, outputs):
    t = tangents[0]
    if t is None:
        return [None]
    return [node(self, (t, *primals[1:]), t._shape, outputs[0]._dtype, _stream())]


def _rope_vjp(self, primals, cotangents, outputs):
    c = cotangents[0]
    back = RoPE(self.dims, self.traditional, self.base, self.scale, self.offset, not self.inverse)
    return [node(back, (c, *primals[1:]), c._shape, primals[0]._dtype, _stream())] + [None] * (len(primals) - 1)


rules(RoPE, vjp=_rope_vjp, jvp=_rope_jvp)


# -- quantized products ---------------------------------------------------------------------------------------
def _packed(self, primals: list, at: int) -> tuple:
    """``(w, scales, biases or None)`` starting at input ``at``."""
    biases = primals[at + 2] if self.mode == "affine" else None
    return primals[at], primals[at + 1], biases


def _packed_grad_check(self, w) -> None:
    # (MLX raises too: a gradient of packed codes means nothing, and one of zeros would let an optimizer turn the
    # codes into floats; a quantized layer keeps them frozen)
    if needs_gradient(w):
        raise RuntimeError(f"{self.name}: no gradient with respect to the quantized (packed) matrix; freeze it, "
                           "as QuantizedLinear does, or train the layer before quantizing it")


def _scales_grad_check(self, scales) -> None:
    if self.mode != "affine" and needs_gradient(scales):
        raise ValueError(f"{self.name}: no gradient with respect to the scales in mode {self.mode!r} (only the "
                         "affine mode's scales and biases are differentiable)")


def _affine_tangents(self, scales, biases, tangents: list, at: int) -> tuple | None:
    """The tangents of the scales and biases at inputs ``at + 1`` and ``at + 2`` (zeros for one without), or None
    if neither has one; a ValueError in the float modes, whose scales have no derivative."""
    ts = tangents[at + 1]
    tb = tangents[at + 2] if biases is not None else None
    if ts is None and tb is None:
        return None
    if self.mode != "affine":
        raise ValueError(f"{self.name}: no derivative with respect to the scales in mode {self.mode!r}")
    return (m.zeros_like(scales) if ts is None else ts), (m.zeros_like(biases) if tb is None else tb)


def _scales_biases_grads(self, w, scales, biases, dw: array) -> list:
    """Cotangents of the affine scales and biases from that of the dequantized matrix ``dw``."""
    codes = m.dequantize(w, m.ones(scales._shape), m.zeros(biases._shape), self.group_size, self.bits,
                         dtype=dt.float32)
    groups = dw._shape[:-1] + (scales._shape[-1], self.group_size)
    ds = m.sum(m.reshape(dw * codes, groups), axis=-1)
    db = m.sum(m.reshape(dw, groups), axis=-1)
    return [ds.astype(scales._dtype), db.astype(biases._dtype)]


def _quantized_matmul_vjp(self, primals, cotangents, outputs):
    x = primals[0]
    w, scales, biases = _packed(self, primals, 1)
    _packed_grad_check(self, w)
    _scales_grad_check(self, scales)
    c = cotangents[0]
    dx = m.quantized_matmul(c, w, scales, biases, not self.transpose, self.group_size, self.bits, self.mode)
    grads = [unbroadcast(dx, x._shape).astype(x._dtype), None]
    if self.mode != "affine":
        return grads + [None]
    unpacked = w._shape[:-1] + (w._shape[-1] * 32 // self.bits,)
    xa = x.astype(c._dtype)
    dw = m.swapaxes(c, -1, -2) @ xa if self.transpose else m.swapaxes(xa, -1, -2) @ c
    return grads + _scales_biases_grads(self, w, scales, biases, unbroadcast(dw, unpacked))


def _packed_tangent_check(self, tangents: list) -> None:
    if tangents[1] is not None:
        raise RuntimeError(f"{self.name}: no derivative with respect to the quantized (packed) matrix")


def _quantized_matmul_jvp(self, primals, tangents, outputs):
    x = primals[0]
    w, scales, biases = _packed(self, primals, 1)
    _packed_tangent_check(self, tangents)
    tx = tangents[0]
    out = None
    if tx is not None:
        out = m.quantized_matmul(tx, w, scales, biases, self.transpose, self.group_size, self.bits, self.mode)
    affine = _affine_tangents(self, scales, biases, tangents, 1)
    if affine is not None:
        t = m.quantized_matmul(x, w, *affine, self.transpose, self.group_size, self.bits)
        out = t if out is None else out + t
    return [out]


rules(QuantizedMatmul, vjp=_quantized_matmul_vjp, jvp=_quantized_matmul_jvp)


def _flat_batches(a: array) -> array:
    return m.reshape(a, (-1,) + a._shape[-2:])


def _scatter_batches(shape: tuple, index: array, values: array) -> array:
    """``values`` (one matrix per index entry) added into zeros of ``shape`` at the flat batch ``index``."""
    flat = m.zeros((_count(shape[:-2]),) + shape[-2:], dtype=values._dtype)
    summed = flat.at[m.reshape(index, (-1,))].add(m.reshape(values, (-1,) + values._shape[-2:]))
    return m.reshape(summed, shape)


def _count(shape: tuple) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _gather_qmm_vjp(self, primals, cotangents, outputs):
    x = primals[0]
    w, scales, biases = _packed(self, primals, 1)
    batch = outputs[0]._shape[:-2]
    lhs, rhs = m.broadcast_to(primals[-2], batch), m.broadcast_to(primals[-1], batch)
    _packed_grad_check(self, w)
    _scales_grad_check(self, scales)
    c = cotangents[0]
    per_entry = m.gather_qmm(c, w, scales, biases, None, rhs, not self.transpose, self.group_size, self.bits,
                             self.mode)
    grads = [_scatter_batches(x._shape, lhs, per_entry).astype(x._dtype), None]
    if self.mode != "affine":
        return grads + [None, None, None]
    xg = m.take(_flat_batches(x), m.reshape(lhs, (-1,)), axis=0).astype(c._dtype)
    cf = _flat_batches(c)
    dw = m.swapaxes(cf, -1, -2) @ xg if self.transpose else m.swapaxes(xg, -1, -2) @ cf
    unpacked = w._shape[:-1] + (w._shape[-1] * 32 // self.bits,)
    return grads + _scales_biases_grads(self, w, scales, biases, _scatter_batches(unpacked, rhs, dw)) + [None, None]


def _gather_qmm_jvp(self, primals, tangents, outputs):
    x = primals[0]
    w, scales, biases = _packed(self, primals, 1)
    _packed_tangent_check(self, tangents)
    lhs, rhs = primals[-2], primals[-1]
    tx = tangents[0]
    out = None
    if tx is not None:
        out = m.gather_qmm(tx, w, scales, biases, lhs, rhs, self.transpose, self.group_size, self.bits, self.mode)
    affine = _affine_tangents(self, scales, biases, tangents, 1)
    if affine is not None:
        t = m.gather_qmm(x, w, *affine, lhs, rhs, self.transpose, self.group_size, self.bits)
        out = t if out is None else out + t
    return [out]


rules(GatherQMM, vjp=_gather_qmm_vjp, jvp=_gather_qmm_jvp)


def _gather_mm_vjp(self, primals, cotangents, outputs):
    a, b = primals[:2]
    batch = outputs[0]._shape[:-2]
    lhs, rhs = m.broadcast_to(primals[2], batch), m.broadcast_to(primals[3], batch)
    c = cotangents[0]
    da = m.gather_mm(c, m.swapaxes(b, -1, -2), None, rhs)
    ag = m.take(_flat_batches(a), m.reshape(lhs, (-1,)), axis=0)
    db = m.swapaxes(ag, -1, -2) @ _flat_batches(c)
    return [_scatter_batches(a._shape, lhs, da), _scatter_batches(b._shape, rhs, db), None, None]


def _gather_mm_jvp(self, primals, tangents, outputs):
    a, b, lhs, rhs = primals
    ta, tb = tangents[0], tangents[1]
    out = None if ta is None else m.gather_mm(ta, b, lhs, rhs)
    if tb is not None:
        t = m.gather_mm(a, tb, lhs, rhs)
        out = t if out is None else out + t
    return [out]


rules(GatherMM, vjp=_gather_mm_vjp, jvp=_gather_mm_jvp)


def _dequantize_vjp(self, primals, cotangents, outputs):
    w, scales, biases = _packed(self, primals, 0)
    _scales_grad_check(self, scales)
    if self.mode != "affine":
        return [None] * len(primals)
    return [None] + _scales_biases_grads(self, w, scales, biases, cotangents[0].astype(dt.float32))


def _dequantize_jvp(self, primals, tangents, outputs):
    w, scales, biases = _packed(self, primals, 0)
    affine = _affine_tangents(self, scales, biases, tangents, 0)
    if affine is None:
        return [None]
    return [m.dequantize(w, *affine, self.group_size, self.bits, dtype=self.dtype)]


rules(Dequantize, vjp=_dequantize_vjp, jvp=_dequantize_jvp)


# Codes are integers: nothing differentiates through them.
rules(Quantize, ToFP8, FromFP8, vjp=none_vjp, jvp=none_jvp)


# -- batching -------------------------------------------------------------------------------------------------
def _batched(x: array, axis, size: int) -> array:
    """``x`` with the batch first: broadcast along a new first axis if it has none."""
    return x if axis is not None else m.broadcast_to(x, (size,) + x._shape)


def _norm_vmap(self, inputs, axes, outputs):
    x, *params = inputs
    b = _size(inputs, axes)
    x = _batched(x, axes[0], b)
    o = outputs[0]
    if all(a is None for a in axes[1:]):
        return [node(self, (x, *params), (b,) + o._shape, o._dtype, _stream())]
    # batched weights or biases: normalize, then scale and shift with them lifted against x
    y = fast.rms_norm(x, None, self.eps) if type(self) is RMSNorm else fast.layer_norm(x, None, None, self.eps)
    lifted = [_lift(p, a, x.ndim - 1) for p, a in zip(params, axes[1:])]
    if getattr(self, "has_weight", True):
        y = y * lifted.pop(0)
    if lifted:
        y = y + lifted[0]
    return [y.astype(o._dtype)]


def _norm_vjp_vmap(self, inputs, axes, outputs):
    x, *rest = inputs
    b = _size(inputs, axes)
    x, g = _batched(x, axes[0], b), _batched(rest[-1], axes[-1], b)
    if self.has_weight and axes[1] is not None:  # a batched weight: the plain ops, with it lifted against x
        y = _norm_grad_plain(self, x, _lift(rest[0], axes[1], x.ndim - 1), g)
    else:
        shape = ((2,) if self.weight_rows else ()) + x._shape
        y = node(self, (x, *rest[:-1], g), shape, outputs[0]._dtype, _stream())
    return [m.moveaxis(y, 1, 0) if self.weight_rows else y]


def _rope_vmap(self, inputs, axes, outputs):
    if self.base is None and axes[-1] is not None:
        raise NotImplementedError("RoPE has no vmap rule for batched frequencies")
    x, *rest = inputs
    v = _size(inputs, axes)
    x = _batched(x, axes[0], v)
    o = outputs[0]
    if self.offset is not None or (axes[1] is None and rest[0].size == 1):  # one offset for every entry
        return [node(self, (x, *rest), x._shape, o._dtype, _stream())]
    # an offset per batch entry, or per mapped slice: merge the mapped axis into the batch entries
    b = x._shape[1]
    off = rest[0]
    off = m.reshape(off, (v, -1)) if axes[1] is not None else m.reshape(off, (1, -1))
    off = m.reshape(m.broadcast_to(off, (v, b)), (v * b,))
    merged = m.reshape(x, (v * b,) + x._shape[2:])
    y = node(self, (merged, off, *rest[1:]), merged._shape, o._dtype, _stream())
    return [m.reshape(y, x._shape)]


def _sdpa_vmap(self, inputs, axes, outputs):
    if self.has_sinks and axes[-1] is not None:
        raise NotImplementedError("ScaledDotProductAttention has no vmap rule for batched sinks")
    v = _size(inputs, axes)
    q, k, val = (_batched(x, a, v) for x, a in zip(inputs[:3], axes[:3]))
    b = q._shape[1]
    merged = [m.reshape(x, (v * b,) + x._shape[2:]) for x in (q, k, val)]
    rest = list(inputs[3:])
    if self.mask in ("bool", "additive"):
        mask, batched = rest[0], axes[3] is not None
        lead = (v,) if batched else ()
        mask = m.reshape(mask, lead + (1,) * (4 + len(lead) - mask.ndim) + mask._shape[len(lead):])
        if batched or mask._shape[0] != 1:  # the mask varies along the merged axis: give it that axis whole
            mask = m.reshape(m.broadcast_to(mask if batched else m.expand_dims(mask, 0), (v, b) + mask._shape[-3:]),
                             (v * b,) + mask._shape[-3:])
        rest[0] = mask
    o = outputs[0]
    y = node(self, (*merged, *rest), (v * b,) + o._shape[1:], o._dtype, _stream())
    return [m.reshape(y, (v,) + o._shape)]


def _quantize_vmap(self, inputs, axes, outputs):
    if len(inputs) > 1 and axes[1] is not None:
        raise NotImplementedError("Quantize has no vmap rule for a batched global scale")
    v = _size(inputs, axes)
    w = _batched(inputs[0], axes[0], v)
    return sibling_nodes(self, (w, *inputs[1:]), [((v,) + o._shape, o._dtype) for o in outputs], _stream())


def _dequantize_vmap(self, inputs, axes, outputs):
    if self.has_global and axes[-1] is not None:
        raise NotImplementedError("Dequantize has no vmap rule for a batched global scale")
    v = _size(inputs, axes)
    n = len(inputs) - self.has_global
    packed = [_batched(x, a, v) for x, a in zip(inputs[:n], axes[:n])]
    o = outputs[0]
    return [node(self, (*packed, *inputs[n:]), (v,) + o._shape, o._dtype, _stream())]


def _quantized_matmul_vmap(self, inputs, axes, outputs):
    v = _size(inputs, axes)
    x, packed = inputs[0], list(inputs[1:])
    o = outputs[0]
    if all(a is None for a in axes[1:]) and packed[0].ndim == 2:  # one matrix: x's rows, whatever their batch
        x = _batched(x, axes[0], v)
        return [node(self, (x, *packed), x._shape[:-1] + o._shape[-1:], o._dtype, _stream())]
    # batches of matrices: align the batch axes of x and of the packed arrays (which carry the batch together)
    if any(a is not None for a in axes[1:]):
        packed = [_batched(p, a, v) for p, a in zip(packed, axes[1:])]
        nd = max(x.ndim - (axes[0] is not None), packed[0].ndim - 1)
        packed = [_lift(p, 0, nd) for p in packed]
    else:
        nd = max(x.ndim - (axes[0] is not None), packed[0].ndim)
    x = _lift(_batched(x, axes[0], v), 0, nd)
    shape = m.broadcast_shapes(x._shape[:-2], packed[0]._shape[:-2]) + o._shape[-2:]
    return [node(self, (x, *packed), shape, o._dtype, _stream())]


rules(RMSNorm, LayerNorm, vmap=_norm_vmap)
rules(NormVJP, vmap=_norm_vjp_vmap)
rules(RoPE, vmap=_rope_vmap)
rules(ScaledDotProductAttention, vmap=_sdpa_vmap)
rules(Quantize, vmap=_quantize_vmap)
rules(Dequantize, vmap=_dequantize_vmap)
rules(QuantizedMatmul, vmap=_quantized_matmul_vmap)
rules(ToFP8, FromFP8, vmap=_same)
