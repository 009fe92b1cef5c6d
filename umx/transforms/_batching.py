"""Batching rules: ``prim.vmap(inputs, axes, outputs)`` for the primitives that ``vmap`` replays, registered on
their classes (``_registry.rules``).

``vmap`` traces the function once on one slice, then replays the graph on the whole batch: a node whose
inputs are all unbatched is kept as it is; otherwise its primitive's rule builds the batched node. In a rule,
each entry of ``axes`` is 0 (that input carries the batch as its first axis) or None (it is the unbatched
input), and ``outputs`` are the traced (unbatched) outputs, for their shapes and dtypes. A rule returns the
batched outputs, batch first. A primitive without a rule raises NotImplementedError and ``vmap`` falls back
to its loop.
"""

from __future__ import annotations

from .. import dtypes as dt
from .. import ops as m
from ..array import array, node
from ..devices import resolve_stream
from ..ops._core import sibling_nodes
from ..primitives import (
    FFT,
    ISTFT,
    LU,
    QR,
    STFT,
    SVD,
    ArgPartition,
    ArgReduce,
    ArgSort,
    AsStrided,
    AsType,
    Binary,
    BroadcastTo,
    Cholesky,
    CholeskyInv,
    Concatenate,
    Copy,
    Cross,
    Custom,
    Depends,
    Det,
    Diag,
    Diagonal,
    DynamicSlice,
    DynamicSliceUpdate,
    Eig,
    Eigh,
    Einsum,
    FFTShift,
    Gather,
    Inv,
    LUFactor,
    Matmul,
    Median,
    NanToNum,
    Pad,
    Partition,
    Pinv,
    PutAlongAxis,
    Reduce,
    Repeat,
    Reshape,
    Roll,
    Round,
    Scan,
    Scatter,
    SearchSorted,
    SlogDet,
    Softmax,
    SoftmaxVJP,
    Solve,
    SolveTriangular,
    Sort,
    Split,
    StopGradient,
    TakeAlongAxis,
    Tile,
    Transpose,
    TriInv,
    Tril,
    Triu,
    Unary,
    Var,
    View,
    Where,
)
from ..primitives.base import param_names
from ..primitives.linalg import matmul_operands
from ..primitives.random import CovarianceFactor
from . import _trees
from ._registry import rules
from ._rules import gathered_shape


def _size(inputs, axes) -> int:
    return next(x._shape[0] for x, a in zip(inputs, axes) if a is not None)


def _lift(x: array, batched, nd: int) -> array:
    """A batched input with size-1 axes after the batch so that it has ``nd`` axes besides the batch; an
    unbatched one as it is (it broadcasts from the right)."""
    if batched is None or x.ndim - 1 == nd:
        return x
    return m.reshape(x, (x._shape[0],) + (1,) * (nd - x.ndim + 1) + x._shape[1:])


def _same(self, inputs, axes, outputs):
    """Elementwise primitives: the batch broadcasts like any leading axis."""
    o = outputs[0]
    b = _size(inputs, axes)
    xs = tuple(_lift(x, a, o.ndim) for x, a in zip(inputs, axes))
    return [node(self, xs, (b,) + o._shape, o._dtype, resolve_stream(None))]


def _shifted(self, inputs, axes, outputs):
    """Primitives with ``axis``/``axes`` parameters and one input: the same primitive one axis further."""
    new = object.__new__(type(self))
    for s in param_names(type(self)):
        v = getattr(self, s)
        if s == "axes" and v is not None:
            v = tuple(a + 1 for a in v)
        elif s == "axis" and v is not None:
            v = v + 1
        setattr(new, s, v)
    x = inputs[0]
    o = outputs[0]
    return [node(new, (x,), (x._shape[0],) + o._shape, o._dtype, resolve_stream(None))]


def _softmax_vjp(self, inputs, axes, outputs):
    """Both inputs with the batch first (an unbatched one broadcast along it), the axes one further."""
    b = _size(inputs, axes)
    y, c = (x if a is not None else m.broadcast_to(x, (b,) + x._shape) for x, a in zip(inputs, axes))
    o = outputs[0]
    prim = SoftmaxVJP(tuple(a + 1 for a in self.axes))
    return [node(prim, (y, c), (b,) + o._shape, o._dtype, resolve_stream(None))]


def _reshape(self, inputs, axes, outputs):
    x = inputs[0]
    return [m.reshape(x, (x._shape[0],) + self.shape)]


def _transpose(self, inputs, axes, outputs):
    return [m.transpose(inputs[0], (0,) + tuple(a + 1 for a in self.axes))]


def _broadcast_to(self, inputs, axes, outputs):
    x = inputs[0]
    return [m.broadcast_to(_lift(x, 0, len(self.shape)), (x._shape[0],) + self.shape)]


def _concatenate(self, inputs, axes, outputs):
    b = _size(inputs, axes)
    xs = [x if a is not None else m.broadcast_to(x, (b,) + x._shape) for x, a in zip(inputs, axes)]
    return [m.concatenate(xs, axis=self.axis + 1)]


def _split(self, inputs, axes, outputs):
    return m.split(inputs[0], list(self.indices), axis=self.axis + 1)


def _matmul(self, inputs, axes, outputs):
    # (the operands as the product reads them, see Matmul: a batch axis is first, so the last two are the matrix's)
    a, b = matmul_operands(self, *inputs)
    nda, ndb = a.ndim - (axes[0] is not None), b.ndim - (axes[1] is not None)
    squeeze = []  # vectors become matrices (a row on the left, a column on the right), then lose that axis
    if nda == 1:
        a, nda = m.expand_dims(a, -2), 2
        squeeze.append(-2)
    if ndb == 1:
        b, ndb = m.expand_dims(b, -1), 2
        squeeze.append(-1)
    nd = max(nda, ndb)
    out = m.matmul(_lift(a, axes[0], nd), _lift(b, axes[1], nd))
    return [m.squeeze(out, axis=tuple(squeeze)) if squeeze else out]


def _gather(self, inputs, axes, outputs):
    if any(a is not None for a in axes[1:]):
        raise NotImplementedError("Gather has no vmap rule for batched indices yet")
    # NumPy puts the axes of non-adjacent index arrays first, which would move the batch axis.
    arrays = [i for i, k in enumerate(self.key) if type(k) is str]
    if arrays and arrays[-1] - arrays[0] + 1 != len(arrays):
        raise NotImplementedError("Gather has no vmap rule for separated index arrays yet")
    x = inputs[0]
    o = outputs[0]
    key = (slice(None),) + self.key
    return [node(Gather(key), (x, *inputs[1:]), (x._shape[0],) + o._shape, o._dtype, resolve_stream(None))]


def _scatter(self, inputs, axes, outputs):
    x, v, *idx = inputs
    if any(a is not None for a in axes[2:]):
        raise NotImplementedError("Scatter has no vmap rule for batched indices yet")
    arrays = [i for i, k in enumerate(self.key) if type(k) is str]
    if arrays and arrays[-1] - arrays[0] + 1 != len(arrays):
        raise NotImplementedError("Scatter has no vmap rule for separated index arrays yet")
    o = outputs[0]
    b = _size(inputs, axes)
    if axes[0] is None:
        x = m.broadcast_to(x, (b,) + x._shape)
    if axes[1] is not None:  # the values broadcast against the indexed block, batch first
        nd = len(gathered_shape(o, self.key, idx))
        if v.ndim - 1 > nd:
            raise NotImplementedError("Scatter has no vmap rule for values with extra leading axes yet")
        v = _lift(v, 0, nd)
    key = (slice(None),) + self.key
    return [node(type(self)(key, self.op), (x, v, *idx), (b,) + o._shape, o._dtype, resolve_stream(None))]


def _pad(self, inputs, axes, outputs):
    if axes[1] is not None:  # (as in MLX: one fill value for the whole batch)
        raise ValueError("vmap: pad's constant value must be the same for every slice, not mapped")
    x, fill = inputs
    o = outputs[0]
    prim = type(self)(((0, 0),) + tuple(self.pad_width), self.mode)
    return [node(prim, (x, fill), (x._shape[0],) + o._shape, o._dtype, resolve_stream(None))]


def _tile(self, inputs, axes, outputs):
    x = inputs[0]
    reps = tuple(self.reps)
    nd = max(x.ndim - 1, len(reps))
    x = _lift(x, 0, nd)
    return [m.tile(x, (1,) + (1,) * (nd - len(reps)) + reps)]


def _roll(self, inputs, axes, outputs):
    x = inputs[0]
    if self.axis is None:
        flat = m.reshape(x, (x._shape[0], -1))
        return [m.reshape(m.roll(flat, self.shift, axis=1), x._shape)]
    return [m.roll(x, self.shift, axis=tuple(a + 1 for a in self.axis))]


def _diagonal(self, inputs, axes, outputs):
    return [m.diagonal(inputs[0], self.offset, self.axis1 + 1, self.axis2 + 1)]


_LETTERS = "zyxwvutsrqponmlkjihgfedcbaZYXWVUTSRQPONMLKJIHGFEDCBA"


def _einsum(self, inputs, axes, outputs):
    ins, out = self.subscripts.split("->")
    subs = ins.split(",")
    letter = next(ch for ch in _LETTERS if ch not in self.subscripts)
    subs = [letter + s if a is not None else s for s, a in zip(subs, axes)]
    return [m.einsum(",".join(subs) + "->" + letter + out, *inputs)]


def _custom(self, inputs, axes, outputs):
    """A ``custom_function``'s own vmap rule, given its arguments (not the traced outputs) as MLX does: a single
    argument and its axis, or tuples of them (see ``custom_function``)."""
    call = self.fn
    rule = call.fn._vmap
    if rule is None:
        raise NotImplementedError("this custom_function has no vmap rule")
    outs, oaxes = rule(call.primals(inputs[self.n:]), call.primals(axes[self.n:]))
    outs = [outs] if type(outs) is array else _trees.flatten(outs)
    oaxes = _axes_leaves(oaxes, len(outs))
    b = _size(inputs, axes)
    return [m.broadcast_to(o, (b,) + o.shape) if a is None else o if a % o.ndim == 0 else m.moveaxis(o, a, 0)
            for o, a in zip(outs, oaxes)]


def _axes_leaves(axes, n: int) -> list:
    """A rule's output axes (an int or None for all outputs, or a tree of them) as one per output."""
    if axes is None or isinstance(axes, int):
        return [axes] * n
    out: list = []
    stack = [axes]
    while stack:
        a = stack.pop()
        if isinstance(a, (list, tuple)):
            stack.extend(reversed(a))
        elif isinstance(a, dict):
            stack.extend(reversed(list(a.values())))
        else:
            out.append(a)
    if len(out) != n:
        raise ValueError(f"custom_function: the vmap rule gave {len(out)} output axes for {n} outputs")
    return out


def _first(self, inputs, axes, outputs):
    if any(a is not None for a in axes[1:]):
        raise NotImplementedError(f"{self.name} has no vmap rule for batched dependencies yet")
    return [inputs[0]]


def _searchsorted(self, inputs, axes, outputs):
    if axes[0] is not None:  # as MLX: one sorted sequence, the values elementwise
        raise ValueError("searchsorted: cannot vmap over the sorted sequence (only over the values)")
    v = inputs[1]
    return [node(self, tuple(inputs), v._shape, outputs[0]._dtype, resolve_stream(None))]


def _nodes(prim, inputs: tuple, specs: list) -> list:
    """Nodes of ``prim`` on ``inputs``, one per ``(shape, dtype)`` in ``specs`` (several: siblings)."""
    st = resolve_stream(None)
    if len(specs) == 1:
        (shape, dtype), = specs
        return [node(prim, inputs, shape, dtype, st)]
    return sibling_nodes(prim, inputs, specs, st)


def _leading(self, inputs, axes, outputs):
    """Primitives that batch over leading axes (matrix factorizations and solvers, views of the last axis): the
    same primitive with the batch first, given to every input."""
    b = _size(inputs, axes)
    xs = tuple(x if a is not None else m.broadcast_to(x, (b,) + x._shape) for x, a in zip(inputs, axes))
    return _nodes(self, xs, [((b,) + o._shape, o._dtype) for o in outputs])


def _leading_first(self, inputs, axes, outputs):
    """Transforms of a signal's last axes whose other inputs (a window) are one for every slice."""
    if any(a is not None for a in axes[1:]):
        raise NotImplementedError(f"{self.name} has no vmap rule for a batched window yet")
    b = inputs[0]._shape[0]
    return _nodes(self, tuple(inputs), [((b,) + o._shape, o._dtype) for o in outputs])


def _cross(self, inputs, axes, outputs):
    b = _size(inputs, axes)
    xs = tuple(x if a is not None else m.broadcast_to(x, (b,) + x._shape) for x, a in zip(inputs, axes))
    prim = type(self)(self.axis + 1 if self.axis >= 0 else self.axis)
    o = outputs[0]
    return [node(prim, xs, (b,) + o._shape, o._dtype, resolve_stream(None))]


def _diag(self, inputs, axes, outputs):
    """Each vector on the diagonal of its own matrix: a select against the identity (NaNs stay on the diagonal),
    then the offset as padding."""
    x = inputs[0]
    n, k = x._shape[1], self.k
    on = m.where(m.eye(n, dtype=dt.bool_), m.expand_dims(x, -1), m.zeros((), x.dtype))
    rows, cols = ((0, k), (k, 0)) if k >= 0 else ((-k, 0), (0, -k))
    return [m.pad(on, ((0, 0), rows, cols)) if k else on]


def _take_along_axis(self, inputs, axes, outputs):
    x, idx = (v if a is not None else m.expand_dims(v, 0) for v, a in zip(inputs, axes))
    return [m.take_along_axis(x, idx, axis=self.axis + 1)]


def _put_along_axis(self, inputs, axes, outputs):
    x, idx, v = inputs
    b = _size(inputs, axes)
    nd = outputs[0].ndim
    x = x if axes[0] is not None else m.broadcast_to(x, (b,) + x._shape)
    idx = idx if axes[1] is not None else m.expand_dims(idx, 0)
    v = _lift(v, 0, nd) if axes[2] is not None else v
    return [m.put_along_axis(x, idx, v, axis=self.axis + 1)]


def _dynamic_slice(self, inputs, axes, outputs):
    if axes[1] is not None:
        raise NotImplementedError("DynamicSlice has no vmap rule for batched starts yet")
    x, start = inputs
    shape = (x._shape[0],) + self.shape
    prim = type(self)(tuple(a + 1 for a in self.axes), shape)
    return [node(prim, (x, start), shape, outputs[0]._dtype, resolve_stream(None))]


def _dynamic_slice_update(self, inputs, axes, outputs):
    if axes[2] is not None:
        raise NotImplementedError("DynamicSliceUpdate has no vmap rule for batched starts yet")
    b = _size(inputs, axes)
    # (the update is written from 0 along the batch: an unbatched one is repeated over the whole batch)
    x, u = (v if a is not None else m.broadcast_to(v, (b,) + v._shape) for v, a in zip(inputs[:2], axes[:2]))
    prim = type(self)(tuple(a + 1 for a in self.axes))
    o = outputs[0]
    return [node(prim, (x, u, inputs[2]), (b,) + o._shape, o._dtype, resolve_stream(None))]


def _as_strided(self, inputs, axes, outputs):
    """Strides address the flat slice; slice ``i`` of the flat batch starts ``i`` slices further."""
    x = inputs[0]
    per_slice = 1
    for s in x._shape[1:]:
        per_slice *= s
    shape = (x._shape[0],) + self.shape
    prim = type(self)(shape, (per_slice,) + tuple(self.strides), self.offset)
    return [node(prim, (x,), shape, outputs[0]._dtype, resolve_stream(None))]


rules(Unary, Binary, Where, AsType, Round, Copy, StopGradient, NanToNum, Tril, Triu, vmap=_same)
rules(Reduce, Var, Softmax, ArgReduce, Scan, Sort, ArgSort, Partition, ArgPartition, Median, Repeat, FFT, FFTShift,
      vmap=_shifted)
rules(View, Inv, Pinv, TriInv, Cholesky, CholeskyInv, Det, SlogDet, QR, SVD, Eigh, Eig, LUFactor, LU, Solve,
      SolveTriangular, CovarianceFactor, vmap=_leading)
rules(STFT, ISTFT, vmap=_leading_first)
rules(Cross, vmap=_cross)
rules(SoftmaxVJP, vmap=_softmax_vjp)
rules(Diag, vmap=_diag)
rules(TakeAlongAxis, vmap=_take_along_axis)
rules(PutAlongAxis, vmap=_put_along_axis)
rules(DynamicSlice, vmap=_dynamic_slice)
rules(DynamicSliceUpdate, vmap=_dynamic_slice_update)
rules(AsStrided, vmap=_as_strided)
rules(Reshape, vmap=_reshape)
rules(Transpose, vmap=_transpose)
rules(BroadcastTo, vmap=_broadcast_to)
rules(Concatenate, vmap=_concatenate)
rules(Split, vmap=_split)
rules(Matmul, vmap=_matmul)
rules(Gather, vmap=_gather)
rules(Depends, vmap=_first)
rules(Custom, vmap=_custom)
rules(Scatter, vmap=_scatter)
rules(Pad, vmap=_pad)
rules(Tile, vmap=_tile)
rules(Roll, vmap=_roll)
rules(Diagonal, vmap=_diagonal)
rules(Einsum, vmap=_einsum)
rules(SearchSorted, vmap=_searchsorted)
