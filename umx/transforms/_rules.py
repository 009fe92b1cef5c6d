"""Derivative rules of the non-elementwise primitives, registered on their classes (``_registry.rules``).

Linear primitives (reshapes, transposes, gathers, pads, sums...) share one forward rule: the tangent goes
through the same primitive. Their backward rules are written one by one (each is the transpose of the map).
"""

from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from .. import ops as m
from ..array import array, node
from ..devices import resolve_stream
from ..ops._core import cast, sibling_nodes
from ..primitives import (
    FFT,
    All,
    Any,
    ArgPartition,
    ArgReduce,
    ArgSort,
    AsStrided,
    AsType,
    BroadcastTo,
    Concatenate,
    Copy,
    Depends,
    Det,
    Diag,
    Diagonal,
    DynamicSlice,
    DynamicSliceUpdate,
    Einsum,
    FFTShift,
    Gather,
    Inv,
    LogSumExp,
    Matmul,
    Max,
    Mean,
    Median,
    Min,
    NanToNum,
    Pad,
    Partition,
    Prod,
    PutAlongAxis,
    Repeat,
    Reshape,
    Roll,
    Scan,
    Scatter,
    SearchSorted,
    Softmax,
    SoftmaxVJP,
    Solve,
    Sort,
    Split,
    StopGradient,
    Sum,
    TakeAlongAxis,
    Tile,
    Transpose,
    Tril,
    Triu,
    Var,
    fill_key,
)
from ._registry import rules
from ._rules_elementwise import unbroadcast
from .autodiff import _marker, backward, forward, made_here, needs_gradient, shared


def _stream():
    return resolve_stream(None)


def _linear_jvp(self, primals, tangents, outputs):
    """The same primitive applied to the tangent of the first input (the others are parameters)."""
    t = tangents[0]
    if t is None:
        return [None] * len(outputs)
    if self.moves_bits:  # a tangent in another dtype would be read as the wrong bits; others convert it themselves
        t = cast(t, primals[0]._dtype)
    if len(outputs) == 1:
        o = outputs[0]
        return [node(self, (t, *primals[1:]), o._shape, o._dtype, _stream())]
    return sibling_nodes(self, (t, *primals[1:]), [(o._shape, o._dtype) for o in outputs], _stream())


def _all_linear_jvp(self, primals, tangents, outputs):
    """For primitives linear in every input jointly (concatenation): zeros stand in for missing tangents."""
    o = outputs[0]
    ts = [m.zeros_like(p) if t is None else cast(t, o._dtype) for p, t in zip(primals, tangents)]
    return [node(self, tuple(ts), o._shape, o._dtype, _stream())]


def composed(compose) -> dict:
    """``vjp`` and ``jvp`` rules that differentiate ``compose(prim, *inputs)``, the primitive's computation written
    in plain ops (so gradients of every order exist and agree with the fused kernel), as keywords of ``rules``."""

    def vjp(self, primals, cotangents, outputs):
        markers = [_marker(p) for p in primals]
        return backward([compose(self, *markers)], cotangents[:1], markers)

    def jvp(self, primals, tangents, outputs):
        markers = [_marker(p) for p in primals]
        return forward([compose(self, *markers)], markers, list(tangents))

    return {"vjp": vjp, "jvp": jvp}


def _keep(c: array, x: array, axes: tuple, keepdims: bool) -> array:
    """A reduction's result or cotangent with the reduced axes back as size 1 (broadcasts against ``x``)."""
    shape = c._shape if keepdims else tuple(1 if i in axes else s for i, s in enumerate(x._shape))
    return c if c._shape == shape else m.reshape(c, shape)


def _count(x: array, axes: tuple) -> int:
    n = 1
    for a in axes:
        n *= x._shape[a]
    return n


def _spread(self, c: array, x: array) -> array:
    """A sum's or mean's cotangent ready to broadcast against ``x``: over leading axes (a loss's mean) it already
    is, without the reduced axes back as size 1."""
    axes = self.axes
    if not self.keepdims and axes == tuple(range(len(axes))):
        return c
    return _keep(c, x, axes, self.keepdims)


def _sum_vjp(self, primals, cotangents, outputs):
    x = primals[0]
    return [m.broadcast_to(_spread(self, cotangents[0], x), x._shape)]


def _mean_vjp(self, primals, cotangents, outputs):
    x = primals[0]
    return [m.broadcast_to(_spread(self, cotangents[0], x) / max(_count(x, self.axes), 1), x._shape)]


def _weights(self, x: array, y: array) -> array:
    """d(reduction)/dx for the nonlinear reductions, broadcastable against ``x``."""
    yk = _keep(y, x, self.axes, self.keepdims)
    if isinstance(self, (Max, Min)):  # ties share the gradient equally
        mask = m.equal(x, yk).astype(x.dtype)
        return mask / m.sum(mask, axis=self.axes, keepdims=True)
    if isinstance(self, LogSumExp):
        return m.exp(x - yk)
    if isinstance(self, Prod):
        return others_product(x, self.axes)
    mu = m.mean(x, axis=self.axes, keepdims=True)  # Var
    return (x - mu) * (2.0 / max(_count(x, self.axes) - self.ddof, 1))


def others_product(x: array, axes: tuple) -> array:
    """For each element of ``x``, the product of the other elements of its group along ``axes``: exact where
    elements are zero (no division), as the product of an exclusive running product from each side."""
    nd = x.ndim
    rest = [a for a in range(nd) if a not in axes]
    perm = rest + list(axes)
    xt = m.transpose(x, tuple(perm)) if perm != list(range(nd)) else x
    n = _count(x, axes)
    flat = m.reshape(xt, xt._shape[:len(rest)] + (n,))
    before = m.cumprod(flat, axis=-1, inclusive=False)
    after = m.cumprod(flat, axis=-1, reverse=True, inclusive=False)
    out = m.reshape(before * after, xt._shape)
    return m.transpose(out, tuple(np.argsort(perm))) if perm != list(range(nd)) else out


def _reduce_vjp(self, primals, cotangents, outputs):
    x = primals[0]
    if x._dtype is dt.bool_:
        return [None]
    if isinstance(self, (Max, Min)):  # the share of each tie taken on the reduced shape: one full-size product
        mask = m.equal(x, _keep(outputs[0], x, self.axes, self.keepdims)).astype(x.dtype)
        share = _keep(cotangents[0], x, self.axes, self.keepdims) / m.sum(mask, axis=self.axes, keepdims=True)
        return [mask * share]
    w = _weights(self, x, outputs[0])
    if x._dtype.kind == "c":
        w = m.conjugate(w)
    return [w * _keep(cotangents[0], x, self.axes, self.keepdims)]


def _reduce_jvp(self, primals, tangents, outputs):
    x = primals[0]
    if x._dtype is dt.bool_:
        return [None]
    return [m.sum(tangents[0] * _weights(self, x, outputs[0]), axis=self.axes, keepdims=self.keepdims)]


def softmax_grad(y: array, c: array, axes: tuple) -> array:
    """Softmax's gradient ``y * (c - sum(c * y))`` over ``axes`` from its output ``y`` and the output's cotangent
    ``c``: one node (``SoftmaxVJP``) where the plain ops are three passes over the rows."""
    dtype = dt.promote(y._dtype, c._dtype)
    y, c = cast(y, dtype), cast(c, dtype)
    if c._shape != y._shape:
        shape = m.broadcast_shapes(y._shape, c._shape)
        y, c = m.broadcast_to(y, shape), m.broadcast_to(c, shape)
    return node(SoftmaxVJP(axes), (y, c), y._shape, dtype, resolve_stream(None))


def _softmax_vjp(self, primals, cotangents, outputs):
    return [softmax_grad(outputs[0], cotangents[0], self.axes)]


def _softmax_grad_plain(self, y, c):
    return y * (c - m.sum(c * y, axis=self.axes, keepdims=True))


def _softmax_jvp(self, primals, tangents, outputs):
    y, t = outputs[0], tangents[0]
    return [y * (t - m.sum(t * y, axis=self.axes, keepdims=True))]


rules(Sum, Mean, jvp=_linear_jvp)
rules(Sum, vjp=_sum_vjp)
rules(Mean, vjp=_mean_vjp)
rules(Max, Min, LogSumExp, Prod, Var, vjp=_reduce_vjp, jvp=_reduce_jvp)
rules(Softmax, vjp=_softmax_vjp, jvp=_softmax_jvp)
rules(SoftmaxVJP, **composed(_softmax_grad_plain))


# -- shape ---------------------------------------------------------------------------------------------------
def _astype_vjp(self, primals, cotangents, outputs):
    x = primals[0]
    if x._dtype is dt.bool_:
        return [None]
    return [m.astype(cotangents[0], x._dtype)]  # (integer casts too, as in MLX)


def _astype_jvp(self, primals, tangents, outputs):
    return [m.astype(tangents[0], self.dtype)]


def _concatenate_vjp(self, primals, cotangents, outputs):
    bounds = np.cumsum([x._shape[self.axis] for x in primals])[:-1]
    return m.split(cotangents[0], [int(b) for b in bounds], axis=self.axis)


def _pass_first(self, primals, cotangents, outputs):
    return [cotangents[0]] + [None] * (len(primals) - 1)


def _pass_first_jvp(self, primals, tangents, outputs):
    return [tangents[0]]


def none_vjp(self, primals, cotangents, outputs):
    """No gradient flows to any input (integer or bool outputs, ``stop_gradient``): the walk counts None as 0."""
    return [None] * len(primals)


def none_jvp(self, primals, tangents, outputs):
    return [None] * len(outputs)


rules(Reshape, vjp=lambda self, p, c, o: [m.reshape(c[0], p[0]._shape)], jvp=_linear_jvp)


def _transpose_vjp(self, primals, cotangents, outputs):
    c = cotangents[0]
    x = c._inputs[0] if c._prim.__class__ is Transpose and c._prim.axes == self.axes else None
    if x is not None and made_here(c) and made_here(x):
        return [x]  # (the rule's transpose undoes c's: ``x @ w.T``'s rule gives w.T's cotangent as one)
    inverse = _INVERSES.get(self.axes)
    if inverse is None:
        inverse = _INVERSES[self.axes] = tuple(int(i) for i in np.argsort(self.axes))
    return [m.transpose(c, inverse)]


_INVERSES: dict = {}  # a Transpose's axes -> the inverse permutation (a step's transposes are a few, over and over)


rules(Transpose, vjp=_transpose_vjp, jvp=_linear_jvp)
rules(BroadcastTo, vjp=lambda self, p, c, o: [unbroadcast(c[0], p[0]._shape)], jvp=_linear_jvp)
rules(Concatenate, vjp=_concatenate_vjp, jvp=_all_linear_jvp)
rules(Split, vjp=lambda self, p, c, o: [m.concatenate(c, axis=self.axis)], jvp=_linear_jvp)
rules(AsType, vjp=_astype_vjp, jvp=_astype_jvp)
rules(Copy, Depends, vjp=_pass_first, jvp=_pass_first_jvp)
rules(StopGradient, vjp=none_vjp, jvp=none_jvp)
# integer and bool results (indices, truth values) carry no derivative: the gradient through them is zero, as in MLX
rules(All, Any, ArgReduce, ArgSort, ArgPartition, SearchSorted, vjp=none_vjp, jvp=none_jvp)


# -- indexing ------------------------------------------------------------------------------------------------
def _gather_vjp(self, primals, cotangents, outputs):
    x, *idx = primals  # (indices computed from a differentiated input are refused by the walk: _check_indices)
    if self.key == (Ellipsis,):  # the whole array (``array.alias``'s view node): the cotangent as it is
        return [cotangents[0]]
    zeros = m.zeros_like(x)
    return [node(Scatter(self.key, "add"), (zeros, cotangents[0], *idx), x._shape, x._dtype, _stream())]


def _scatter_vjp(self, primals, cotangents, outputs):
    x, v, *idx = primals
    c = cotangents[0]
    op = self.op
    if op not in (None, "add", "subtract", "multiply", "maximum", "minimum"):
        raise NotImplementedError(f"Scatter({op!r}) has no vjp rule yet")

    def pick(a: array) -> array:  # a[key], the block the values went to
        return node(Gather(self.key), (a, *idx), gathered_shape(x, self.key, idx), a._dtype, _stream())

    picked = pick(c)
    if op in ("add", "subtract"):
        dv = picked if op == "add" else -picked
        dx = c
    elif op is None:
        dv = picked
        dx = node(Scatter(self.key, None), (c, m.zeros_like(picked), *idx), x._shape, x._dtype, _stream())
    elif op == "multiply":  # (the values' rule assumes the index has no repeats)
        dx = node(self, (c, v, *idx), x._shape, x._dtype, _stream())
        dv = picked * pick(x)
    else:  # maximum, minimum: the gradient goes to whichever gave the result (x on a tie, as maximum(x, v))
        y = outputs[0]
        won = m.logical_and(m.equal(pick(y), v), m.not_equal(pick(x), v))
        dv = m.where(won, picked, 0)
        dx = m.where(m.equal(y, x), c, 0)
    dv = unbroadcast(dv, v._shape) if dv._shape != v._shape else dv
    return [dx, dv] + [None] * len(idx)


def gathered_shape(x: array, key: tuple, idx: list) -> tuple:

    probe = np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), x._shape, (0,) * x.ndim)
    return probe[fill_key(key, [np.zeros(i._shape, np.intp) for i in idx])].shape


def _scatter_jvp(self, primals, tangents, outputs):
    x, v, *idx = primals
    tx, tv = tangents[0], tangents[1]
    if self.op not in (None, "add", "subtract"):
        raise NotImplementedError(f"Scatter({self.op!r}) has no jvp rule yet")
    tx = m.zeros_like(x) if tx is None else tx
    tv = m.zeros_like(v) if tv is None else tv
    o = outputs[0]
    return [node(self, (tx, tv, *idx), o._shape, o._dtype, _stream())]


rules(Gather, vjp=_gather_vjp, jvp=_linear_jvp)
rules(Scatter, vjp=_scatter_vjp, jvp=_scatter_jvp)


# -- layout --------------------------------------------------------------------------------------------------
def _pad_vjp(self, primals, cotangents, outputs):
    x, fill = primals
    c = cotangents[0]
    if self.mode != "constant":  # every output element copies one input element: sum them back, axis by axis
        for ax, ((lo, hi), n) in enumerate(zip(self.pad_width, x._shape)):
            if lo or hi:
                src = np.pad(np.arange(n), (lo, hi), mode=self.mode)
                one_hot = (src[:, None] == np.arange(n)).astype(c.dtype.compute)
                c = m.moveaxis(m.moveaxis(c, ax, -1) @ array(one_hot, c.dtype), -1, ax)
        return [c, m.zeros_like(fill)]
    inner = c[tuple(slice(lo, lo + s) for (lo, _), s in zip(self.pad_width, x._shape))]
    return [inner, m.sum(c) - m.sum(inner)]


def _pad_jvp(self, primals, tangents, outputs):
    tx, tf = tangents
    o = outputs[0]
    tx = m.zeros_like(primals[0]) if tx is None else tx
    tf = m.zeros_like(primals[1]) if tf is None else tf
    return [node(self, (tx, tf), o._shape, o._dtype, _stream())]


def _tile_vjp(self, primals, cotangents, outputs):
    x, c = primals[0], cotangents[0]
    d = max(x.ndim, len(self.reps))
    shape = (1,) * (d - x.ndim) + x._shape
    reps = (1,) * (d - len(self.reps)) + tuple(self.reps)
    split = tuple(v for r, s in zip(reps, shape) for v in (r, s))
    g = m.sum(m.reshape(c, split), axis=tuple(range(0, 2 * d, 2)))
    return [m.reshape(g, x._shape)]


def _repeat_vjp(self, primals, cotangents, outputs):
    x, c = primals[0], cotangents[0]
    ax = self.axis
    shape = x._shape[:ax] + (x._shape[ax], self.repeats) + x._shape[ax + 1:]
    return [m.sum(m.reshape(c, shape), axis=ax + 1)]


def _roll_vjp(self, primals, cotangents, outputs):
    shift = tuple(-s for s in self.shift) if isinstance(self.shift, tuple) else -self.shift
    x = primals[0]
    return [node(Roll(shift, self.axis), (cast(cotangents[0], x._dtype),), x._shape, x._dtype, _stream())]


def _diagonal_vjp(self, primals, cotangents, outputs):
    x, c = primals[0], cotangents[0]
    k, i, j = self.offset, self.axis1, self.axis2
    n = c._shape[-1]
    rows = m.arange(n) + max(-k, 0)
    cols = m.arange(n) + max(k, 0)
    # Move the two axes last, scatter the diagonal into zeros there, and move them back.
    rest = [a for a in range(x.ndim) if a not in (i, j)]
    perm = rest + [i, j]
    zeros = m.zeros(tuple(x._shape[a] for a in perm), x.dtype)
    key = (Ellipsis, rows, cols)
    placed = zeros.at[key].add(c)
    return [m.transpose(placed, tuple(np.argsort(perm)))]


def _diag_vjp(self, primals, cotangents, outputs):
    return [m.diagonal(cotangents[0], offset=self.k)]


def _take_along_axis_vjp(self, primals, cotangents, outputs):
    x, idx = primals
    c = cotangents[0]
    ax, shape = self.axis, c._shape
    n = x._shape[ax]
    if idx._shape[ax] == 1 and shape[:ax] + (n,) + shape[ax + 1:] == x._shape:
        # One index per row (a loss picking each target's logit): the cotangent goes where the row's index points,
        # a select that fuses with whatever the rest of the gradient adds to it, instead of zeros and a scatter.
        pos = m.reshape(m.arange(n, dtype=idx.dtype), tuple(n if d == ax else 1 for d in range(x.ndim)))
        return [m.where(pos == m.remainder(idx, n), c, 0), None]
    key = []
    for d in range(c.ndim):
        if d == ax:
            key.append(m.broadcast_to(idx, shape))
            continue
        pos = m.arange(shape[d]) if x._shape[d] == shape[d] else m.zeros((shape[d],), dt.int32)
        key.append(m.reshape(pos, tuple(shape[d] if e == d else 1 for e in range(c.ndim))))
    return [m.zeros_like(x).at[tuple(key)].add(c), None]


def _put_along_axis_vjp(self, primals, cotangents, outputs):
    x, idx, v = primals
    c = cotangents[0]
    dx = m.put_along_axis(c, idx, m.zeros((), c.dtype), axis=self.axis)
    return [dx, None, unbroadcast(m.take_along_axis(c, idx, axis=self.axis), v._shape)]


def _put_along_axis_jvp(self, primals, tangents, outputs):
    x, idx, v = primals
    tx = m.zeros_like(x) if tangents[0] is None else tangents[0]
    tv = m.zeros_like(v) if tangents[2] is None else tangents[2]
    return [node(self, (tx, idx, tv), x._shape, x._dtype, _stream())]


def _dynamic_slice_vjp(self, primals, cotangents, outputs):
    x, start = primals
    zeros = m.zeros_like(x)
    c = cast(cotangents[0], x._dtype)
    return [node(DynamicSliceUpdate(self.axes), (zeros, c, start), x._shape, x._dtype, _stream()), None]


def _dynamic_slice_update_vjp(self, primals, cotangents, outputs):
    x, u, start = primals
    c = cast(cotangents[0], x._dtype)
    dx = node(self, (c, m.zeros_like(u), start), x._shape, x._dtype, _stream())
    du = node(DynamicSlice(self.axes, u._shape), (c, start), u._shape, x._dtype, _stream())
    return [dx, cast(du, u._dtype), None]


def _dynamic_slice_update_jvp(self, primals, tangents, outputs):
    x, u, start = primals
    tx = m.zeros_like(x) if tangents[0] is None else cast(tangents[0], x._dtype)
    tu = m.zeros_like(u, dtype=x._dtype) if tangents[1] is None else cast(tangents[1], x._dtype)
    return [node(self, (tx, tu, start), x._shape, x._dtype, _stream())]


def _order(self, x: array) -> array:
    """The permutation a Sort or Partition applied along its axis (no gradient flows to it)."""
    arg = ArgSort(self.axis) if isinstance(self, Sort) else ArgPartition(self.kth, self.axis)
    return m.stop_gradient(node(arg, (x,), x._shape, dt.uint32, _stream()))


def _sort_vjp(self, primals, cotangents, outputs):
    x = primals[0]
    return _take_along_axis_vjp(TakeAlongAxis(self.axis), (x, _order(self, x)), cotangents, outputs)[:1]


def _sort_jvp(self, primals, tangents, outputs):
    return [m.take_along_axis(tangents[0], _order(self, primals[0]), axis=self.axis)]


rules(Sort, Partition, vjp=_sort_vjp, jvp=_sort_jvp)
rules(TakeAlongAxis, vjp=_take_along_axis_vjp, jvp=_linear_jvp)
rules(PutAlongAxis, vjp=_put_along_axis_vjp, jvp=_put_along_axis_jvp)
rules(DynamicSlice, vjp=_dynamic_slice_vjp, jvp=_linear_jvp)
rules(DynamicSliceUpdate, vjp=_dynamic_slice_update_vjp, jvp=_dynamic_slice_update_jvp)
rules(Pad, vjp=_pad_vjp, jvp=_pad_jvp)
rules(Tile, vjp=_tile_vjp, jvp=_linear_jvp)
rules(Repeat, vjp=_repeat_vjp, jvp=_linear_jvp)
rules(Roll, vjp=_roll_vjp, jvp=_linear_jvp)
rules(Diagonal, vjp=_diagonal_vjp, jvp=_linear_jvp)
rules(Diag, vjp=_diag_vjp, jvp=_linear_jvp)
rules(Tril, vjp=lambda self, p, c, o: [m.tril(c[0], self.k)], jvp=_linear_jvp)
rules(Triu, vjp=lambda self, p, c, o: [m.triu(c[0], self.k)], jvp=_linear_jvp)
rules(FFT, FFTShift, jvp=_linear_jvp)


def _fftshift_vjp(self, primals, cotangents, outputs):
    c = cotangents[0]  # a roll's adjoint is the roll back
    return [node(FFTShift(self.axes, not self.inverse), (c,), c._shape, c._dtype, _stream())]


rules(FFTShift, vjp=_fftshift_vjp)


def _as_strided_vjp(self, primals, cotangents, outputs):
    # each output element reads one flat input element (several may read the same one): their cotangents add up
    x, c = primals[0], cotangents[0]
    flat = np.full(self.shape, self.offset, np.int64)
    for axis, (n, stride) in enumerate(zip(self.shape, self.strides)):
        flat += (np.arange(n) * stride).reshape((n,) + (1,) * (len(self.shape) - axis - 1))
    total = m.zeros((x.size,), c._dtype).at[array(flat.reshape(-1), dt.int64)].add(m.reshape(c, (-1,)))
    return [m.reshape(total, x._shape)]


rules(AsStrided, vjp=_as_strided_vjp, jvp=_linear_jvp)

_ADJOINT_NORM = {"backward": "forward", "forward": "backward", "ortho": "ortho"}


def _fft_vjp(self, primals, cotangents, outputs):
    # A transform's adjoint is the opposite one with the opposite scaling (conjugate transpose: cotangents
    # follow MLX's convention, df/dre + i df/dim); the inputs' padding or cutting is undone afterwards.
    x, c = primals[0], cotangents[0]
    axes, sizes, norm = self.axes, self.sizes, _ADJOINT_NORM[self.norm]
    st = _stream()
    if not self.real:
        g = node(FFT(axes, sizes, not self.inverse, False, norm), (c,), c._shape, dt.complex64, st)
    elif not self.inverse:  # rfftn: the dropped negative frequencies come back as zeros; the input was real
        pad = [(0, 0)] * c.ndim
        pad[axes[-1]] = (0, sizes[-1] - c._shape[axes[-1]])
        full = m.pad(c, pad)
        g = m.real(node(FFT(axes, sizes, True, False, norm), (full,), full._shape, dt.complex64, st))
    else:  # irfftn, real-linear: each bin but the zero and Nyquist ones stands for a conjugate pair
        n = sizes[-1]
        shape = list(c._shape)
        shape[axes[-1]] = n // 2 + 1
        g = node(FFT(axes, sizes, False, True, norm), (c,), tuple(shape), dt.complex64, st)
        w = np.full(n // 2 + 1, 2.0, np.float32)
        w[0] = 1.0
        if n % 2 == 0:
            w[-1] = 1.0
        g = g * array(w.reshape((-1,) + (1,) * (c.ndim - 1 - axes[-1])))
    for ax in axes:  # back to the input's sizes: the adjoint of zero-padding is cutting, and of cutting padding
        have, want = g._shape[ax], x._shape[ax]
        if have > want:
            g = g[(slice(None),) * ax + (slice(0, want),)]
        elif have < want:
            pad = [(0, 0)] * g.ndim
            pad[ax] = (0, want - have)
            g = m.pad(g, pad)
    return [g]


rules(FFT, vjp=_fft_vjp)


def _shift(v: array, axis: int, d: int, later: bool) -> array:
    """``v`` moved ``d`` places along ``axis``: toward the end (``out[i] = v[i - d]``) if ``later``, else toward
    the start (``out[i] = v[i + d]``); zeros come in."""
    n = v._shape[axis]
    if d >= n:
        return m.zeros_like(v)
    width = [(0, 0)] * v.ndim
    width[axis] = (d, 0) if later else (0, d)
    part = v[(slice(None),) * axis + ((slice(0, n - d) if later else slice(d, n)),)]
    return m.pad(part, width)


def _recurrence(a: array, b: array, axis: int, forward: bool) -> array:
    """``r`` with ``r[i] = b[i] + a[i] * r[i - 1]`` along ``axis`` (``r[i + 1]`` unless ``forward``; none is 0):
    log2(n) doubling steps of elementwise ops, each composing spans twice as long, with no division."""
    n = a._shape[axis]
    d = 1
    while d < n:
        b = b + a * _shift(b, axis, d, forward)
        if 2 * d < n:
            a = a * _shift(a, axis, d, forward)
        d *= 2
    return b


def _extreme_index(self, x: array) -> array:
    """For a running max or min, the index along the axis that each inclusive output took its value from (the
    latest such in scan order on ties, as MLX routes them); no gradient flows to it."""
    ax = self.axis
    n = x._shape[ax]
    pos = m.reshape(m.arange(n), tuple(n if d == ax else 1 for d in range(x.ndim)))
    y = node(Scan(self.op, ax, self.reverse, True), (x,), x._shape, x._dtype, _stream())
    hit = m.equal(x, y)
    if self.reverse:
        idx = m.cummin(m.where(hit, pos, n), axis=ax, reverse=True)
    else:
        idx = m.cummax(m.where(hit, pos, -1), axis=ax)
    return m.stop_gradient(m.clip(idx, 0, max(n - 1, 0)))


def _check_scan(self, what: str) -> None:
    if self.op == "logaddexp" and not self.inclusive:
        raise NotImplementedError(f"Scan('logaddexp', exclusive) has no {what} rule yet")


def _scan_vjp(self, primals, cotangents, outputs):
    _check_scan(self, "vjp")
    x, c = primals[0], cotangents[0]
    ax, rev = self.axis, self.reverse
    if self.op == "sum":
        return [m.cumsum(c, axis=ax, reverse=not rev, inclusive=self.inclusive)]
    if not self.inclusive:  # an exclusive output is the inclusive one of the element before it in scan order
        c = _shift(c, ax, 1, rev)
    if self.op in ("max", "min"):
        return _take_along_axis_vjp(TakeAlongAxis(ax), (x, _extreme_index(self, x)), [c], outputs)[:1]
    if self.op == "prod":
        # g[j] = (product before j) * s[j], s[j] = c[j] + x[next] * s[next]: exact at zeros, no division
        before = m.cumprod(x, axis=ax, reverse=rev, inclusive=False)
        return [before * _recurrence(_shift(x, ax, 1, rev), c, ax, rev)]
    # logaddexp: dy_i/dx_j = exp(x_j - y_i), j up to i. As u_j = sum over i from j of c_i exp(y_j - y_i), by
    # u_j = c_j + exp(y_j - y_next) u_next: every exponent is at most 0, so nothing overflows (exp(x) would)
    y = outputs[0]
    step = m.exp(m.minimum(y - _shift(y, ax, 1, rev), 0))
    return [m.exp(x - y) * _recurrence(step, c, ax, rev)]


def _scan_jvp(self, primals, tangents, outputs):
    _check_scan(self, "jvp")
    x, t = primals[0], tangents[0]
    ax, rev = self.axis, self.reverse
    if self.op == "sum":
        return _linear_jvp(self, primals, tangents, outputs)
    if self.op in ("max", "min"):
        out = m.take_along_axis(t, _extreme_index(self, x), axis=ax)
    elif self.op == "prod":
        before = m.cumprod(x, axis=ax, reverse=rev, inclusive=False)
        out = _recurrence(x, t * before, ax, not rev)
    else:
        # r_i = sum over j up to i of exp(x_j - y_i) t_j, by r_i = exp(x_i - y_i) t_i + exp(y_prev - y_i) r_prev:
        # exponents at most 0, where exp(-y) * cumsum(exp(x) t) overflows
        y = outputs[0]
        step = m.exp(m.minimum(_shift(y, ax, 1, not rev) - y, 0))
        return [_recurrence(step, m.exp(x - y) * t, ax, not rev)]
    return [out if self.inclusive else _shift(out, ax, 1, not rev)]


rules(Scan, vjp=_scan_vjp, jvp=_scan_jvp)


def _nan_to_num_vjp(self, primals, cotangents, outputs):
    return [m.where(m.isfinite(primals[0]), cotangents[0], 0)]


def _nan_to_num_jvp(self, primals, tangents, outputs):
    return [m.where(m.isfinite(primals[0]), tangents[0], 0)]


rules(NanToNum, vjp=_nan_to_num_vjp, jvp=_nan_to_num_jvp)


def _median_in_ops(self, x: array) -> array:
    """The median over ``self.axes`` as plain ops (the mean of the middle one or two sorted values), whose
    rules route the cotangent to the elements the median took."""
    rest = [a for a in range(x.ndim) if a not in self.axes]
    n = _count(x, self.axes)
    moved = m.transpose(x, tuple(rest + list(self.axes)))
    ordered = m.sort(m.reshape(moved, moved._shape[:len(rest)] + (n,)), axis=-1)
    mid = (ordered[..., (n - 1) // 2] + ordered[..., n // 2]) * 0.5
    return _keep(mid, x, self.axes, False) if self.keepdims else mid


rules(Median, **composed(_median_in_ops))


# -- products ------------------------------------------------------------------------------------------------
def _matmul_vjp(self, primals, cotangents, outputs):
    if self.ta or self.tb:
        return _read_through_vjp(self, primals, cotangents[0])
    a, b = primals
    c = cotangents[0]
    a2 = m.reshape(a, (1,) + a._shape) if a.ndim == 1 else a
    b2 = m.reshape(b, b._shape + (1,)) if b.ndim == 1 else b
    if a.ndim == 1:
        c = m.expand_dims(c, -2 if b.ndim > 1 else -1)
    if b.ndim == 1:
        c = m.expand_dims(c, -1)
    # An operand that is a transposed view (the weight in ``x @ w.T``) gets its cotangent as a transposed view
    # too, (b @ c^T)^T rather than c @ b^T: the transpose's own rule then hands back a contiguous array, the
    # weight's layout, which the optimizer reads without striding.
    da = db = None
    if needs_gradient(a):
        da = _swap(b2 @ _unswap(c)) if _swapped(a2) else c @ _unswap(b2)
        da = unbroadcast(da, a2._shape)
        # (reshaped only where an operand was a vector: a public reshape to an array's own shape makes an alias)
        da = da if da._shape == a._shape else m.reshape(da, a._shape)
    if needs_gradient(b):
        a_rows, c_rows = _rows(a2, c) if b2.ndim == 2 and c.ndim > 2 else (a2, c)
        db = _swap(_unswap(c_rows) @ a_rows) if _swapped(b2) else _unswap(a_rows) @ c_rows
        db = unbroadcast(db, b2._shape)
        db = db if db._shape == b._shape else m.reshape(db, b._shape)
    return [da, db]


def _read_through_vjp(self, primals, c) -> list:
    """Matmul's vjp where it reads an operand transposed (``ta``/``tb``; both operands at least 2-d): with
    ``A = op(a)`` and ``B = op(b)``, ``dA = c B^T`` and ``dB = A^T c``, each written in its operand's own layout
    (``x @ w.T``: ``dx = c w`` and ``dw = c^T x``, one product each, no transpose node: products read swapped
    operands through)."""
    a, b = primals
    da = db = None
    if needs_gradient(a):
        if self.ta:  # a = A^T: da = dA^T = B c^T
            da = (_swap(b) if self.tb else b) @ _swap(c)
        else:
            da = c @ (b if self.tb else _swap(b))
        da = unbroadcast(da, a._shape)
    if needs_gradient(b):
        a_rows, c_rows = _rows(a, c) if b.ndim == 2 and c.ndim > 2 and not self.ta else (a, c)
        big_a = _swap(a_rows) if self.ta else a_rows
        if self.tb:  # b = B^T: db = dB^T = c^T A
            db = _swap(c_rows) @ big_a
        else:
            db = _swap(big_a) @ c_rows
        db = unbroadcast(db, b._shape)
    return [da, db]


def _rows(a: array, c: array) -> tuple:
    """A product's left operand ``a`` and cotangent ``c`` as matrices of all their rows, where its right operand
    is a matrix shared by a stack of products (a Linear layer on [batch, length, features]): that operand's
    cotangent is then one product over all the stack's rows, not a product per matrix summed afterwards."""
    return shared(("rows", id(a)), lambda: m.reshape(a, (-1, a._shape[-1]))), m.reshape(c, (-1, c._shape[-1]))


def _swap(x: array) -> array:
    return m.swapaxes(x, -1, -2)


def _unswap(x: array) -> array:
    """``x`` with its last two axes exchanged: the array it is a swapped view of, if it is one (a view of that
    view would have its very layout)."""
    return x._inputs[0] if _swapped(x) else _swap(x)


def _swapped(x: array) -> bool:
    """Whether ``x`` is a view of another array with its last two axes exchanged (``w.T`` in ``x @ w.T``)."""
    p = x._prim
    return p is not None and p.__class__ is Transpose and p.swaps_last_two()


def _matmul_jvp(self, primals, tangents, outputs):
    a, b = primals
    ta, tb = tangents
    if self.ta:  # (the operands as the product reads them: see Matmul)
        a, ta = _swap(a), (None if ta is None else _swap(ta))
    if self.tb:
        b, tb = _swap(b), (None if tb is None else _swap(tb))
    out = None if ta is None else m.matmul(ta, b)
    if tb is not None:
        t = m.matmul(a, tb)
        out = t if out is None else out + t
    return [out]


def _einsum_vjp(self, primals, cotangents, outputs):
    ins, out = self.subscripts.split("->")
    subs = ins.split(",")
    c = cotangents[0]
    grads = []
    for i, x in enumerate(primals):
        s = subs[i]
        if len(set(s)) != len(s):
            raise NotImplementedError("Einsum has no vjp rule for repeated indices in one operand yet")
        others = [(subs[j], primals[j]) for j in range(len(primals)) if j != i]
        present = set(out).union(*(set(t) for t, _ in others))
        kept = "".join(ch for ch in s if ch in present)
        g = m.einsum(",".join([out] + [t for t, _ in others]) + "->" + kept, c, *(p for _, p in others))
        if kept != s:  # indices only this operand had were summed away: the gradient is constant along them
            kept_shape = tuple(x._shape[k] if ch in present else 1 for k, ch in enumerate(s))
            g = m.broadcast_to(m.reshape(g, kept_shape), x._shape)
        grads.append(g)
    return grads


def multilinear_jvp(self, primals, tangents, outputs):
    """The product rule of a primitive linear in each input (einsum, cross, convolution): per input with a
    tangent, the primitive again with that tangent in its place; the terms summed."""
    o = outputs[0]
    st = _stream()
    total = None
    for i, t in enumerate(tangents):
        if t is None:
            continue
        args = tuple(t if j == i else p for j, p in enumerate(primals))
        term = node(self, args, o._shape, o._dtype, st)
        total = term if total is None else total + term
    return [total]


def _inv_vjp(self, primals, cotangents, outputs):
    yt = m.swapaxes(outputs[0], -1, -2)
    return [-(yt @ cotangents[0] @ yt)]


def _inv_jvp(self, primals, tangents, outputs):
    y = outputs[0]
    return [-(y @ tangents[0] @ y)]


def _solve_vjp(self, primals, cotangents, outputs):
    a, b = primals
    x, c = outputs[0], cotangents[0]
    db = m.linalg.solve(m.swapaxes(a, -1, -2), c)
    if b.ndim == 1:  # a vector right-hand side
        da = -(m.expand_dims(db, -1) * m.expand_dims(x, -2))
    else:
        da = -(db @ m.swapaxes(x, -1, -2))
    return [unbroadcast(da, a._shape), unbroadcast(db, b._shape)]


def _solve_jvp(self, primals, tangents, outputs):
    a, b = primals
    ta, tb = tangents
    x = outputs[0]
    rhs = m.zeros_like(x) if tb is None else tb
    if ta is not None:
        rhs = rhs - (m.squeeze(ta @ m.expand_dims(x, -1), -1) if b.ndim == 1 else ta @ x)
    return [m.linalg.solve(a, rhs)]


def _det_vjp(self, primals, cotangents, outputs):
    a = primals[0]
    scale = m.expand_dims(cotangents[0] * outputs[0], (-1, -2))
    return [scale * m.swapaxes(m.linalg.inv(a), -1, -2)]


def _det_jvp(self, primals, tangents, outputs):
    return [outputs[0] * m.sum(m.swapaxes(m.linalg.inv(primals[0]), -1, -2) * tangents[0], axis=(-1, -2))]


rules(Solve, vjp=_solve_vjp, jvp=_solve_jvp)
rules(Det, vjp=_det_vjp, jvp=_det_jvp)
rules(Matmul, vjp=_matmul_vjp, jvp=_matmul_jvp)
rules(Einsum, vjp=_einsum_vjp, jvp=multilinear_jvp)
rules(Inv, vjp=_inv_vjp, jvp=_inv_jvp)
