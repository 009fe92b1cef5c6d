"""Matrix products."""

from __future__ import annotations

import os

from .. import dtypes as dt
from ..devices import _thread
from ..primitives import MATMUL, MATMULS, Transpose
from ._core import array, as_array, broadcast_shapes, cast, describe, node, resolve_stream

__all__ = ["matmul"]

#: whether a product reads a transposed operand through (see _product); UMX_READ_TRANSPOSES=0: never (to measure)
READ_THROUGH = os.environ.get("UMX_READ_TRANSPOSES", "1") != "0"


def matmul(a, b, /, *, stream=None) -> array:
    """Matrix product with NumPy's rules: 1-d operands are promoted to matrices, batch axes broadcast.

    Args:
        a (array): left operand, at least 1-d.
        b (array): right operand, at least 1-d.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: ``a @ b``.
    """
    if a.__class__ is array and b.__class__ is array:  # the common case, in one call: matrices of one dtype
        sa, sb = a._shape, b._shape
        d = a._dtype
        if len(sa) == 2 and len(sb) == 2 and d is b._dtype and sa[1] == sb[0]:
            return _product(a, b, (sa[0], sb[1]), d, _thread.resolved.get(id(stream)) or resolve_stream(stream))
        if (len(sa) >= 2 and len(sb) >= 2 and d is b._dtype and sa[-1] == sb[-2]
                and (len(sb) == 2 or sa[:-2] == sb[:-2])):
            # (a stack of matrices times one matrix, a Linear on [batch, length, features]; or equal batches)
            return _product(a, b, sa[:-1] + sb[-1:], d, _thread.resolved.get(id(stream)) or resolve_stream(stream))
    a = as_array(a, "matmul")
    b = as_array(b, "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must be at least 1-d, got {describe(a, b)}")
    ka = a._shape[-1]
    kb = b._shape[-2] if b.ndim >= 2 else b._shape[0]
    if ka != kb:
        raise ValueError(f"matmul: inner dimensions differ ({ka} and {kb}) for shapes {describe(a, b)}")
    d = dt.promote(a._dtype, b._dtype)
    st = resolve_stream(stream)
    a, b = cast(a, d, st), cast(b, d, st)
    ba, bb = a._shape[:-2], b._shape[:-2]
    batch = ba if ba == bb else broadcast_shapes(ba, bb, op="matmul")
    shape = batch + (a._shape[-2],) if a.ndim >= 2 else batch
    if b.ndim >= 2:
        shape = shape + (b._shape[-1],)
    return _product(a, b, shape, d, st)


def _product(a: array, b: array, shape: tuple, dtype, stream) -> array:
    """The product's node; an operand that is a transpose not yet computed of its last two axes (``w.T``) is read
    through: the node reads the array it transposes, with Matmul's flag for it (no transpose task)."""
    if not READ_THROUGH or len(a._shape) < 2 or len(b._shape) < 2:  # (a vector: NumPy's promotion rules)
        return node(MATMUL, (a, b), shape, dtype, stream)
    ta = tb = False
    p = a._prim
    if p is not None and p.__class__ is Transpose and a._data is None and p.swaps_last_two():
        a = a._inputs[0]
        ta = True
    p = b._prim
    if p is not None and p.__class__ is Transpose and b._data is None and p.swaps_last_two():
        b = b._inputs[0]
        tb = True
    return node(MATMULS[ta, tb] if ta or tb else MATMUL, (a, b), shape, dtype, stream)
