"""Output shapes of primitives on new input shapes: what a shapeless imported function needs.

umx's ops infer shapes before building a node, so primitives carry no shape rule of their own. A function
exported with ``shapeless=True`` is rebuilt on inputs of other shapes (same ranks and dtypes) by these rules, one
per primitive family, given the input shapes and dtypes (``ins``). A primitive without a rule can only be rebuilt
on the shapes it was traced with.

Shapes baked into parameters follow MLX where it has a rule and stay fixed otherwise (``Full``, ``RandomBits``,
``Arange``: the sizes the trace saw). Two umx rules go further than MLX's, which needs ``-1`` in the reshape:

- ``Reshape`` keeps the grouping of axes the trace saw: input and output axes are split into consecutive groups
  of equal size (``(B, T, E) -> (B * T, E)`` has the groups ``[B, T] -> [B * T]`` and ``[E] -> [E]``), and a
  group whose size changes gives the change to its last output axis that is not 1.
- ``BroadcastTo`` keeps the sizes it broadcast to and follows the input along the axes it did not broadcast.
"""

from __future__ import annotations

import math

import numpy as np

from ..primitives import Binary, Reduce, Unary, fill_key
from ..primitives.linalg import matmul_shapes

ELEMENTWISE = frozenset({"Where", "AsType", "Round", "Copy", "StopGradient", "NanToNum"})
SAME_SHAPE = frozenset({"Scan", "Sort", "ArgSort", "Partition", "ArgPartition", "Roll", "Tril", "Triu",
                        "Cholesky", "Inv", "FFTShift", "Softmax", "Depends", "Scatter", "PutAlongAxis"})


class NoRule(ValueError):
    """No shape rule covers this primitive (or these shapes)."""


def infer(prim, ins: list, traced_ins: list, traced_outs: list) -> tuple:
    """``(prim, output shapes)`` of ``prim`` on inputs ``ins`` (``(shape, dtype)`` pairs); ``traced_ins`` and
    ``traced_outs`` are the shapes the trace saw, for the primitives whose parameters hold shapes (which the
    returned ``prim`` then has adjusted). Raises NoRule, or ValueError for shapes the primitive cannot take."""
    name = type(prim).__name__
    shapes = [s for s, _ in ins]
    if name in ("Reshape", "BroadcastTo") and tuple(prim.shape) != tuple(traced_outs[0]):
        raise ValueError(f"{name} to {prim.shape} cannot give the shape {traced_outs[0]}")
    if name == "Reshape":
        new = reshaped(traced_ins[0], traced_outs[0], shapes[0])
        return type(prim)(new), [new]
    if name == "BroadcastTo":
        new = broadcast(traced_ins[0], traced_outs[0], shapes[0])
        return type(prim)(new), [new]
    rule = _RULES.get(name)
    if rule is None:
        if isinstance(prim, (Unary, Binary)) or name in ELEMENTWISE:
            rule = _elementwise
        elif name in SAME_SHAPE:
            rule = _same
        elif isinstance(prim, Reduce) or name in ("Var", "Median"):
            rule = _reduce
        else:
            raise NoRule(f"{name} has no shape rule: it runs only on the shapes it was exported with")
    try:
        outs = rule(prim, shapes, ins)
    except (IndexError, TypeError) as e:
        raise ValueError(f"{name} cannot take inputs of shapes {shapes}: {e}") from None
    return prim, [tuple(int(n) for n in s) for s in outs]


def _elementwise(prim, shapes, ins):
    return [np.broadcast_shapes(*shapes)]


def _same(prim, shapes, ins):
    return [shapes[0]]


def _axes_in(axes, nd: int, name: str):
    if any(a >= nd for a in axes):
        raise ValueError(f"{name} over axes {axes} of an input of {nd} dimensions")


def _reduce(prim, shapes, ins):
    s = shapes[0]
    _axes_in(prim.axes, len(s), type(prim).__name__)
    if prim.keepdims:
        return [tuple(1 if i in prim.axes else n for i, n in enumerate(s))]
    return [tuple(n for i, n in enumerate(s) if i not in prim.axes)]


def _arg_reduce(prim, shapes, ins):
    s = shapes[0]
    _axes_in((prim.axis,), len(s), type(prim).__name__)
    return [s[:prim.axis] + ((1,) if prim.keepdims else ()) + s[prim.axis + 1:]]


def _matmul(prim, shapes, ins):
    a, b = matmul_shapes(prim, *shapes[:2])
    a2, b2 = (a if len(a) > 1 else (1,) + a), (b if len(b) > 1 else b + (1,))
    if a2[-1] != b2[-2]:
        raise ValueError(f"Matmul of shapes {a} and {b}: the inner dimensions differ")
    out = np.broadcast_shapes(a2[:-2], b2[:-2]) + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return [out]


def _transpose(prim, shapes, ins):
    return [tuple(shapes[0][a] for a in prim.axes)]


def _concatenate(prim, shapes, ins):
    ax = prim.axis
    rest = {s[:ax] + s[ax + 1:] for s in shapes}
    if len(rest) != 1:
        raise ValueError(f"Concatenate along axis {ax} of shapes {shapes}")
    first = shapes[0]
    return [first[:ax] + (sum(s[ax] for s in shapes),) + first[ax + 1:]]


def _split(prim, shapes, ins):
    s, ax = shapes[0], prim.axis
    bounds = (0, *prim.indices, s[ax])
    return [s[:ax] + (len(range(s[ax])[lo:hi]),) + s[ax + 1:] for lo, hi in zip(bounds, bounds[1:])]


def _probe(shape: tuple, dtype=np.int8) -> np.ndarray:
    """A read-only array of ``shape`` that takes no memory (every element is the same byte)."""
    return np.broadcast_to(np.zeros((), dtype), shape)


def _gather(prim, shapes, ins):

    return [_probe(shapes[0])[fill_key(prim.key, [_probe(s, np.intp) for s in shapes[1:]])].shape]


def _take_along_axis(prim, shapes, ins):
    return [np.take_along_axis(_probe(shapes[0]), _probe(shapes[1], np.intp), prim.axis).shape]


def _pad(prim, shapes, ins):
    return [tuple(n + lo + hi for n, (lo, hi) in zip(shapes[0], prim.pad_width))]


def _tile(prim, shapes, ins):
    s, reps = shapes[0], tuple(prim.reps)
    d = max(len(s), len(reps))
    s, reps = (1,) * (d - len(s)) + s, (1,) * (d - len(reps)) + reps
    return [tuple(a * b for a, b in zip(s, reps))]


def _repeat(prim, shapes, ins):
    s = shapes[0]
    return [s[:prim.axis] + (s[prim.axis] * prim.repeats,) + s[prim.axis + 1:]]


def _view(prim, shapes, ins):
    s, d = shapes[0], ins[0][1]
    if not s:
        return [s]
    last = s[-1] * d.size // prim.dtype.size
    return [s[:-1] + (last,)]


def _convolution(prim, shapes, ins):
    x, w = shapes[:2]
    return [(x[0], *(prim.out_size(i, n, k) for i, (n, k) in enumerate(zip(x[1:-1], w[1:-1]))), w[0])]


def _quantized_matmul(prim, shapes, ins):
    x, w = shapes[:2]
    n = w[-2] if prim.transpose else w[-1] * 32 // prim.bits
    return [np.broadcast_shapes(x[:-2], w[:-2]) + x[-2:-1] + (n,)]


def _creation(prim, shapes, ins):
    return [tuple(prim.shape)]


_RULES = {
    "Full": _creation, "RandomBits": _creation,
    "Eye": lambda prim, shapes, ins: [(prim.n, prim.m)], "Tri": lambda prim, shapes, ins: [(prim.n, prim.m)],
    "Linspace": lambda prim, shapes, ins: [(prim.num,)],
    "ArgMax": _arg_reduce, "ArgMin": _arg_reduce, "Matmul": _matmul, "Transpose": _transpose,
    "Concatenate": _concatenate, "Split": _split, "Gather": _gather, "TakeAlongAxis": _take_along_axis,
    "Pad": _pad, "Tile": _tile, "Repeat": _repeat, "View": _view, "Convolution": _convolution,
    "QuantizedMatmul": _quantized_matmul,
}


# -- the two rules that adjust a shape parameter --------------------------------------------------------------------

def _groups(src: tuple, dst: tuple) -> list | None:
    """Consecutive groups ``(src axes, dst axes)`` of equal sizes, or None when sizes do not tell (a zero)."""
    if 0 in src or 0 in dst:
        return None
    groups, i, j = [], 0, 0
    while i < len(src) and j < len(dst):
        a, b, pa, pb = [i], [j], src[i], dst[j]
        i, j = i + 1, j + 1
        while pa != pb:
            if pa < pb and i < len(src):
                pa, i = pa * src[i], i + 1
                a.append(i - 1)
            elif pb < pa and j < len(dst):
                pb, j = pb * dst[j], j + 1
                b.append(j - 1)
            else:
                return None
        groups.append((a, b))
    if not groups:
        return None
    groups[-1][0].extend(range(i, len(src)))  # trailing axes of size 1
    groups[-1][1].extend(range(j, len(dst)))
    return groups


def reshaped(src: tuple, dst: tuple, new: tuple) -> tuple:
    """The shape a reshape traced as ``src -> dst`` gives for an input of shape ``new`` (see the module
    docstring)."""
    if math.prod(src) != math.prod(dst):
        raise ValueError(f"Reshape from {src} to {dst} changes the size")
    if new == src:
        return dst
    groups = _groups(src, dst)
    if groups is None:
        raise ValueError(f"Reshape from {src} to {dst} has no axis groups to follow a new input shape {new}")
    out = list(dst)
    for a, b in groups:
        size = math.prod(new[k] for k in a)
        if size == math.prod(dst[k] for k in b):
            continue
        free = [k for k in b if dst[k] != 1] or b
        k = free[-1]
        rest = math.prod(dst[m] for m in b if m != k)
        if rest == 0 or size % rest:
            raise ValueError(f"Reshape traced from {src} to {dst} cannot take an input of shape {new}")
        out[k] = size // rest
    return tuple(out)


def broadcast(src: tuple, dst: tuple, new: tuple) -> tuple:
    """The shape a broadcast traced as ``src -> dst`` gives for an input of shape ``new``."""
    lead = len(dst) - len(src)
    if lead < 0 or any(a != b and a != 1 for a, b in zip(src, dst[lead:])):
        raise ValueError(f"BroadcastTo from {src} to {dst} is not a broadcast")
    out = list(dst)
    for i, (was, now) in enumerate(zip(src, new)):
        if was == dst[lead + i]:
            out[lead + i] = now
        elif now != 1:
            raise ValueError(f"BroadcastTo traced from {src} to {dst} cannot take an input of shape {new}")
    return tuple(out)


__all__ = ["NoRule", "broadcast", "infer", "reshaped"]
