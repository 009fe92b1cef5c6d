"""Shapeless ``compile``: a tape recorded for some input shapes, replayed for others of the same ranks.

Each step's output shape (and the parameters that carry shapes: a reshape's target, a broadcast's, a pad's
result) is derived again from its inputs' new shapes by a rule per primitive, as the op would have inferred it.
Shapes the function computed in Python from its inputs' shapes stay as traced (``x.reshape(x.shape[0], -1)``
keeps the traced first dimension and infers the -1 again), as in MLX. A primitive without a rule, shapes that do not fit
(the ops raise their errors then), or a step that depends on no input yet has an axis of a length that changed
(``zeros_like(x)`` is made from ``x.shape`` alone) make the caller trace the function again for the new shapes
instead (``derive`` returns None).
"""

from __future__ import annotations

from math import prod

import numpy as np

from ..ops.reduction import _out_shape
from ..primitives import (
    ArgPartition,
    ArgReduce,
    ArgSort,
    AsType,
    Binary,
    BroadcastTo,
    Concatenate,
    Copy,
    Custom,
    Depends,
    DynamicSlice,
    DynamicSliceUpdate,
    Gather,
    Matmul,
    NanToNum,
    Pad,
    Partition,
    PutAlongAxis,
    RandomBits,
    Reduce,
    Reshape,
    Round,
    Scan,
    Scatter,
    Softmax,
    SoftmaxVJP,
    Sort,
    StopGradient,
    TakeAlongAxis,
    Transpose,
    Unary,
    Var,
    Where,
)
from ..primitives.linalg import matmul_shapes
from ._replay import Tape, _getter
from ._rules import gathered_shape

__all__ = ["derive"]


class _NoRule(Exception):
    """This step's shape cannot be derived: trace again."""


class _Refused(ValueError):
    """The new shapes do not fit the graph as MLX's shapeless compile reads it (a reshape's -1 that does not
    divide): raised to the caller. Any other misfit traces again, so that the ops raise their own errors."""


def _elementwise(prim, shapes, traced):
    return prim, np.broadcast_shapes(*shapes)


def _first(prim, shapes, traced):
    return prim, shapes[0]


def _reduce(prim, shapes, traced):
    return prim, _out_shape(shapes[0], prim.axes, prim.keepdims)


def _arg_reduce(prim, shapes, traced):
    x = shapes[0]
    ax = prim.axis
    if prim.keepdims:
        return prim, x[:ax] + (1,) + x[ax + 1:]
    return prim, x[:ax] + x[ax + 1:]


def _transpose(prim, shapes, traced):
    return prim, tuple(shapes[0][a] for a in prim.axes)


def _matmul(prim, shapes, traced):
    a, b = matmul_shapes(prim, *shapes)
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ValueError(f"compile (shapeless): matmul of shapes {a} and {b}")
    out = np.broadcast_shapes(a2[:-2], b2[:-2]) + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return prim, out


def _reshape(prim, shapes, traced):
    x, (x0,), out0 = shapes[0], traced[0], traced[1]
    size = prod(x)
    if prim.infer is not None:  # the caller's -1: inferred again, the other dimensions as traced
        known = prod(d for i, d in enumerate(prim.shape) if i != prim.infer)
        if known == 0 or size % known:
            raise _Refused(f"compile (shapeless): cannot reshape an input of shape {x} into {prim.shape} "
                             f"with dimension {prim.infer} inferred")
        shape = prim.shape[:prim.infer] + (size // known,) + prim.shape[prim.infer + 1:]
        return Reshape(shape, prim.infer), shape
    if size == prod(x0) and x == x0:
        return prim, out0
    # Only axes of length 1 put in or taken out (expand_dims, squeeze, vmap's alignments): the traced input's
    # axes are matched with the output's from the right, as broadcasting matches them, and keep their lengths.
    i, o = len(x0) - 1, len(out0) - 1
    shape = list(out0)
    while i >= 0 or o >= 0:
        if i >= 0 and o >= 0 and x0[i] == out0[o]:
            shape[o] = x[i]
            i, o = i - 1, o - 1
        elif o >= 0 and out0[o] == 1:  # put in
            o -= 1
        elif i >= 0 and x0[i] == 1 and x[i] == 1:  # taken out
            i -= 1
        else:
            raise _NoRule
    shape = tuple(shape)
    return Reshape(shape), shape


def _broadcast_to(prim, shapes, traced):
    x, x0 = shapes[0], traced[0][0]
    target = list(prim.shape)
    for k in range(1, len(x0) + 1):  # dimensions the input gave (not 1, equal to the target's) follow it
        if x0[-k] != 1 and x0[-k] == target[-k]:
            target[-k] = x[-k]
    target = tuple(target)
    if np.broadcast_shapes(x, target) != target:
        raise ValueError(f"compile (shapeless): cannot broadcast shape {x} to {target}")
    return BroadcastTo(target), target


def _gather(prim, shapes, traced):

    class _Shaped:  # (gathered_shape reads shapes and dims only)
        def __init__(self, s):
            self._shape = s
            self.ndim = len(s)

    try:
        return prim, gathered_shape(_Shaped(shapes[0]), prim.key, [_Shaped(s) for s in shapes[1:]])
    except IndexError as e:
        raise ValueError(f"compile (shapeless): index {prim.key} out of range for shape {shapes[0]}") from e


def _concatenate(prim, shapes, traced):
    ax = prim.axis
    first = shapes[0]
    return prim, first[:ax] + (sum(s[ax] for s in shapes),) + first[ax + 1:]


def _pad(prim, shapes, traced):
    return prim, tuple(d + lo + hi for d, (lo, hi) in zip(shapes[0], prim.pad_width))


def _take_along_axis(prim, shapes, traced):
    x, idx = shapes
    ax = prim.axis
    return prim, np.broadcast_shapes(x[:ax] + (1,) + x[ax + 1:], idx)


def _same_axis_length(prim, shapes, traced):
    """Sorts and partitions: the output has the input's shape; a partition's kth needs its axis as traced."""
    ax = getattr(prim, "axis", None)
    if hasattr(prim, "kth") and shapes[0][ax] != traced[0][0][ax]:
        raise _NoRule
    return prim, shapes[0]


def _fixed(prim, shapes, traced):
    return prim, traced[1]


_RULES: dict = {}
for _classes, _rule in [
    ((Unary, Binary, Where, AsType, Round, Copy, StopGradient, NanToNum), _elementwise),
    ((Depends, Softmax, SoftmaxVJP, Scan, Scatter, PutAlongAxis, DynamicSliceUpdate), _first),
    ((Reduce, Var), _reduce),
    ((ArgReduce,), _arg_reduce),
    ((Transpose,), _transpose),
    ((Matmul,), _matmul),
    ((Reshape,), _reshape),
    ((BroadcastTo,), _broadcast_to),
    ((Gather,), _gather),
    ((Concatenate,), _concatenate),
    ((Pad,), _pad),
    ((TakeAlongAxis,), _take_along_axis),
    ((Sort, ArgSort, Partition, ArgPartition), _same_axis_length),
    ((RandomBits, DynamicSlice), _fixed),
]:
    for _cls in _classes:
        _RULES[_cls] = _rule


def _rule_of(prim):
    for cls in type(prim).__mro__:
        rule = _RULES.get(cls)
        if rule is not None:
            return rule
    raise _NoRule


def derive(tape, shapes: tuple):
    """``tape`` rebuilt for input leaves of ``shapes`` (same ranks and dtypes as traced), or None where a step's
    shape cannot be derived (trace again). Raises ValueError where the shapes do not fit the graph (as the ops
    would have)."""

    n_consts = len(tape.consts)
    value_shapes = [c._shape for c in tape.consts] + list(shapes) + [(2,)] * tape.n_keys
    depends = [False] * n_consts + [True] * tape.n_ins + [False] * tape.n_keys
    # lengths of input axes that changed: a step that depends on no input but has one of them in its shape was
    # likely made from an input's shape in Python (zeros_like(x), a gradient's broadcast of its seed)
    stale = {d0 for s0, s1 in zip(tape.in_shapes, shapes) for d0, d1 in zip(s0, s1) if d0 != d1}
    traced_shapes = [c._shape for c in tape.consts] + list(tape.in_shapes) + [(2,)] * tape.n_keys
    steps = []
    try:
        for (prim, _, shape, dtype, stream, group), refs in zip(tape.steps, tape.refs):
            ins = [value_shapes[r] for r in refs]
            dep = any(depends[r] for r in refs)
            if not dep:
                if stale.intersection(shape):
                    return None
                new_prim, new_shape = prim, shape
            elif prim.__class__ is Custom:  # output j passes input j through: j counts the group's steps so far
                j = 0
                while j < len(steps) and steps[-1 - j][0] is prim:
                    j += 1
                new_prim, new_shape = prim, ins[j]
            else:
                traced = ([traced_shapes[r] for r in refs], shape)
                new_prim, new_shape = _rule_of(prim)(prim, ins, traced)
                new_shape = tuple(int(d) for d in new_shape)
            steps.append((new_prim, _getter(refs), new_shape, dtype, stream, group))
            value_shapes.append(new_shape)
            traced_shapes.append(shape)
            depends.append(dep)
    except _Refused:
        raise
    except (_NoRule, ValueError):
        return None
    out = Tape(tape.consts, tape.n_ins, tape.n_keys, steps, tape.refs, tape.out_refs, tape.template, tape.n_out)
    out.in_shapes = tuple(shapes)
    return out
