"""Shape ops: reshape, transpose, squeeze, expand_dims, concatenate, stack, split, broadcast_to and friends."""

from __future__ import annotations

import math
import threading

import numpy as np

from .. import array as _array
from .. import dtypes as dt
from ..array import from_data, view_of
from ..devices import DeviceType
from ..primitives import Concatenate, Reshape, Split, Transpose, View
from ..runtime.executor import Failure
from . import _core
from ._core import (
    array,
    as_array,
    axes_of,
    axis_of,
    broadcast_node,
    cast,
    check_dims,
    describe,
    new_object,
    node,
    reshape_node,
    resolve_stream,
    shape_of,
)

__all__ = ["reshape", "transpose", "permute_dims", "matrix_transpose", "squeeze", "expand_dims", "concatenate",
           "concat", "stack", "split", "broadcast_to", "broadcast_shapes", "broadcast_arrays", "flatten",
           "moveaxis", "swapaxes", "astype", "view", "unflatten", "atleast_1d", "atleast_2d", "atleast_3d"]


def reshape(a, /, shape, *, stream=None) -> array:
    """``a`` with a new shape of the same size; one dimension may be -1. See ``numpy.reshape``.

    Args:
        a (array): input.
        shape (int | Sequence[int]): the new shape.

    Returns:
        array: the same values in the new shape.
    """
    if a.__class__ is array and shape.__class__ is tuple:
        # The common case in one pass (a gradient's reshapes are many): a tuple of in-range Python ints, one of
        # them perhaps -1
        known, infer, i = 1, None, 0
        for s in shape:
            if s.__class__ is not int:
                break
            if 0 <= s <= _DIM_MAX:
                known *= s
            elif s == -1 and infer is None:
                infer = i
            else:
                break
            i += 1
        else:
            size = a.size
            if infer is None:
                full = shape if known == size else None
            else:
                full = shape[:infer] + (size // known,) + shape[infer + 1:] if known and not size % known else None
            if full is not None and full != a._shape:
                key = (full, infer)
                prim = _RESHAPES.get(key)
                if prim is None:
                    if len(_RESHAPES) > 1024:
                        _RESHAPES.clear()
                    prim = _RESHAPES[key] = Reshape(full, infer)
                return node(prim, (a,), full, a._dtype, resolve_stream(stream))
    a = as_array(a, "reshape")
    shape = _core.dims_of(shape, "reshape")  # (a float or a string is refused, as by MLX)
    size = a.size
    if shape.count(-1) > 1:
        raise ValueError(f"reshape: only one dimension can be -1, got {shape}")
    infer = shape.index(-1) if -1 in shape else None
    if -1 in shape:
        known = 1
        for s in shape:
            if s != -1:
                known *= s
        if known == 0 or size % known:
            raise ValueError(f"reshape: cannot reshape an array of shape {a.shape} into {shape}")
        shape = tuple(size // known if s == -1 else s for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"reshape: invalid shape {shape}")
    if math.prod(shape) != size:
        raise ValueError(f"reshape: cannot reshape an array of shape {a.shape} (size {size}) into {shape}")
    if infer is not None and a._shape != shape:
        return node(Reshape(shape, infer), (a,), shape, a._dtype, resolve_stream(stream))
    return new_object(reshape_node(a, shape, resolve_stream(stream)), a)


_RESHAPES: dict = {}  # (shape, inferred axis) -> its Reshape (immutable: a step builds the same few again and again)
_DIM_MAX = _array.DIM_MAX


def transpose(a, /, axes=None, *, stream=None) -> array:
    """Permute the axes of ``a`` (reverse them by default). See ``numpy.transpose``."""
    a = as_array(a, "transpose")
    nd = len(a._shape)
    if axes is None:
        axes = tuple(range(nd - 1, -1, -1))
    else:
        axes = tuple([axis_of(x, nd, "transpose") for x in axes])
        if sorted(axes) != list(range(nd)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of the {nd} axes of shape {a.shape}")
    return _permuted(a, axes, stream)


def _permuted(a: array, axes: tuple, stream) -> array:
    """``a`` with its axes in the order ``axes``, a permutation already checked (the step of the public ops
    that permute: a gradient's swapaxes make many)."""
    prim = _TRANSPOSES.get(axes)
    if prim is None:
        if axes == tuple(range(len(axes))):
            return new_object(a, a)
        if len(_TRANSPOSES) > 1024:
            _TRANSPOSES.clear()
        prim = _TRANSPOSES[axes] = Transpose(axes)
    st = resolve_stream(stream)
    data = a._data
    if data is not None and a._prim is None and not a._copies and not getattr(views_as_nodes, "on", False):
        # A view of evaluated data that nothing copied elsewhere computes nothing: made now it costs no node and
        # no task (a weight's ``.T`` in every eager step). (Not for a value read inside a transform, which keeps
        # its graph: _prim is set; nor while a backward walk is recorded, see views_as_nodes.)
        if type(data) is np.ndarray:
            if st.device.type is DeviceType.cpu:
                return from_data(data.transpose(axes), a._dtype)
        elif _device_data(a, st):
            return view_of(a, data.transpose(axes))
    shape = a._shape
    return node(prim, (a,), tuple([shape[i] for i in axes]), a._dtype, st)


def _device_data(a: array, st) -> bool:
    """Whether evaluated ``a`` holds the data that a GPU stream of ``st``'s device made (a view of it is a view
    for ``st`` too), not a failure or host data."""
    ex = a._exec
    return (ex is not None and st.device.type is DeviceType.gpu and ex.device == st.device
            and a._data.__class__ is not Failure)


#: ``views_as_nodes.on``: this thread records a graph to rebuild on other inputs (``transforms._grad_tapes``), so
#: a transpose of evaluated data is a node too, not a view made at once of this input's data
views_as_nodes = threading.local()
_TRANSPOSES: dict = {}  # axes -> its Transpose (one per permutation but the identity: a step builds the same few)


def permute_dims(a, /, axes=None, *, stream=None) -> array:
    """Same as :func:`transpose`."""
    return transpose(a, axes, stream=stream)


def matrix_transpose(a, /, *, stream=None) -> array:
    """Swap the last two axes of ``a``."""
    a = as_array(a, "matrix_transpose")
    if a.ndim < 2:
        raise ValueError(f"matrix_transpose: needs at least 2 dimensions, got shape {a.shape}")
    return swapaxes(a, -1, -2, stream=stream)


def squeeze(a, /, axis=None, *, stream=None) -> array:
    """Remove axes of size 1 (all of them, or those in ``axis``). See ``numpy.squeeze``."""
    a = as_array(a, "squeeze")
    if axis is None:
        shape = tuple(s for s in a._shape if s != 1)
    else:
        axes = axes_of(axis, a.ndim, "squeeze")
        for ax in axes:
            if a._shape[ax] != 1:
                raise ValueError(f"squeeze: cannot squeeze axis {ax} of size {a._shape[ax]} (shape {a.shape})")
        shape = tuple(s for i, s in enumerate(a._shape) if i not in axes)
    return new_object(reshape_node(a, shape, resolve_stream(stream)), a)


def expand_dims(a, /, axis, *, stream=None) -> array:
    """Insert axes of size 1 at the positions ``axis`` (an int or a sequence). See ``numpy.expand_dims``."""
    a = as_array(a, "expand_dims")
    axis = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    nd = a.ndim + len(axis)
    axes = axes_of(axis, nd, "expand_dims")
    it = iter(a._shape)
    shape = tuple(1 if i in axes else next(it) for i in range(nd))
    return new_object(reshape_node(a, shape, resolve_stream(stream)), a)


def _arrays(arrays, op: str) -> list:
    if isinstance(arrays, array) or not isinstance(arrays, (list, tuple)):
        raise TypeError(f"{op}: expected a list or tuple of arrays, got {type(arrays).__name__}")
    if not arrays:
        raise ValueError(f"{op}: needs at least one array")
    xs = [as_array(x, op) for x in arrays]
    d = xs[0]._dtype
    for x in xs[1:]:
        d = dt.promote(d, x._dtype)
    return xs, d


def concatenate(arrays, /, axis: int | None = 0, *, stream=None) -> array:
    """Join arrays along ``axis`` (flattened first when None). See ``numpy.concatenate``."""
    xs, d = _arrays(arrays, "concatenate")
    st = resolve_stream(stream)
    if axis is None:
        xs = [reshape(x, (-1,), stream=st) for x in xs]
        axis = 0
    nd = xs[0].ndim
    if nd == 0:
        raise ValueError("concatenate: zero-dimensional arrays cannot be concatenated")
    ax = axis_of(axis, nd, "concatenate")
    for x in xs[1:]:
        if x.ndim != nd or any(s != t for i, (s, t) in enumerate(zip(x._shape, xs[0]._shape)) if i != ax):
            raise ValueError(f"concatenate: all arrays must match except along axis {ax}; "
                             f"got {describe(xs[0], x)}")
    ins = xs
    xs = [cast(x, d, st) for x in xs]
    if len(xs) == 1:
        return new_object(xs[0], ins[0])
    shape = list(xs[0]._shape)
    shape[ax] = sum(x._shape[ax] for x in xs)
    return node(Concatenate(ax), tuple(xs), check_dims(tuple(shape), "concatenate"), d, st)


concat = concatenate


def stack(arrays, /, axis: int = 0, *, stream=None) -> array:
    """Join arrays of one shape along a new axis. See ``numpy.stack``."""
    xs, _ = _arrays(arrays, "stack")
    for x in xs[1:]:
        if x._shape != xs[0]._shape:
            raise ValueError(f"stack: all arrays must have the same shape, got {describe(xs[0], x)}")
    st = resolve_stream(stream)
    return concatenate([expand_dims(x, axis, stream=st) for x in xs], axis, stream=st)


def split(a, /, indices_or_sections, axis: int = 0, *, stream=None) -> list:
    """Split ``a`` along ``axis`` into equal sections (an int) or at ``indices``. See ``numpy.split``.

    Returns:
        list[array]: the pieces.
    """
    a = as_array(a, "split")
    ax = axis_of(axis, a.ndim, "split")
    n = a._shape[ax]
    if isinstance(indices_or_sections, (int, np.integer)):
        k = int(indices_or_sections)
        if k <= 0 or n % k:
            raise ValueError(f"split: cannot split axis {ax} of size {n} into {k} equal sections")
        idx = tuple(n // k * i for i in range(1, k))
    else:
        idx = tuple(int(i) for i in indices_or_sections)
    bounds = [0, *(min(max(i if i >= 0 else i + n, 0), n) for i in idx), n]
    st = resolve_stream(stream)
    specs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        shape = list(a._shape)
        shape[ax] = max(hi - lo, 0)
        specs.append((tuple(shape), a._dtype))
    return _core.sibling_nodes(Split(idx, ax), (a,), specs, st)


def broadcast_to(a, /, shape, *, stream=None) -> array:
    """``a`` broadcast to ``shape``. See ``numpy.broadcast_to``."""
    a = as_array(a, "broadcast_to")
    shape = shape_of(shape, "broadcast_to")
    if _core.broadcast_shapes(a._shape, shape, op="broadcast_to") != shape:
        raise ValueError(f"broadcast_to: cannot broadcast shape {a.shape} to {shape}")
    return new_object(broadcast_node(a, shape, resolve_stream(stream)), a)


def broadcast_shapes(*shapes) -> tuple:
    """The shape that broadcasting ``shapes`` (tuples of ints) gives. See ``numpy.broadcast_shapes``."""
    if not shapes:
        raise ValueError("broadcast_shapes: needs at least one shape")
    return _core.broadcast_shapes(*(shape_of(s, "broadcast_shapes") for s in shapes))


def broadcast_arrays(*arrays, stream=None) -> list:
    """Broadcast arrays to a common shape. See ``numpy.broadcast_arrays``."""
    xs = [as_array(x, "broadcast_arrays") for x in arrays]
    shape = _core.broadcast_shapes(*(x._shape for x in xs), op="broadcast_arrays")
    st = resolve_stream(stream)
    return [broadcast_node(x, shape, st) for x in xs]


def flatten(a, /, start_axis: int = 0, end_axis: int = -1, *, stream=None) -> array:
    """Merge axes ``start_axis`` to ``end_axis`` (inclusive) into one."""
    a = as_array(a, "flatten")
    if a.ndim == 0:
        return reshape(a, (1,), stream=stream)
    s = axis_of(start_axis, a.ndim, "flatten")
    e = axis_of(end_axis, a.ndim, "flatten")
    if s > e:
        raise ValueError(f"flatten: start_axis {start_axis} is after end_axis {end_axis}")
    mid = int(np.prod(a._shape[s:e + 1], dtype=np.int64))
    return reshape(a, a._shape[:s] + (mid,) + a._shape[e + 1:], stream=stream)


def unflatten(a, /, axis: int, shape, *, stream=None) -> array:
    """Split axis ``axis`` into several axes.

    Args:
        a (array): input.
        axis (int): the axis to split.
        shape (Sequence[int]): the new axes' sizes, whose product is the axis' size; one may be -1 (the axis'
            size over the others' product, even when another axis of ``a`` is empty).

    Returns:
        array: ``a`` with ``axis`` replaced by ``shape``.
    """
    a = as_array(a, "unflatten")
    ax = axis_of(axis, a.ndim, "unflatten")
    shape, n = tuple(int(s) for s in shape), a._shape[ax]
    if not shape or shape.count(-1) > 1:
        raise ValueError(f"unflatten: the shape must be non-empty with at most one -1, got {shape}")
    if -1 in shape:
        known = math.prod(s for s in shape if s != -1)
        if known == 0:
            raise ValueError(f"unflatten: cannot infer the -1 in {shape} with another size 0")
        shape = tuple(n // known if s == -1 else s for s in shape)
    if math.prod(shape) != n:
        raise ValueError(f"unflatten: cannot unflatten axis {ax} of size {n} into shape {shape}")
    return reshape(a, a._shape[:ax] + shape + a._shape[ax + 1:], stream=stream)


def moveaxis(a, /, source: int, destination: int, *, stream=None) -> array:
    """Move axis ``source`` to position ``destination``. See ``numpy.moveaxis``."""
    a = as_array(a, "moveaxis")
    nd = len(a._shape)
    s = axis_of(source, nd, "moveaxis")
    d = axis_of(destination, nd, "moveaxis")
    order = [i for i in range(nd) if i != s]
    order.insert(d, s)
    return _permuted(a, tuple(order), stream)


def swapaxes(a, /, axis1: int, axis2: int, *, stream=None) -> array:
    """Exchange two axes. See ``numpy.swapaxes``."""
    a = as_array(a, "swapaxes")
    nd = len(a._shape)
    if axis1.__class__ is int and axis2.__class__ is int and -nd <= axis1 < nd and -nd <= axis2 < nd:
        i, j = axis1 % nd, axis2 % nd  # (the common case: axis_of's checks, passed)
    else:
        i = axis_of(axis1, nd, "swapaxes")
        j = axis_of(axis2, nd, "swapaxes")
    order = list(range(nd))
    order[i], order[j] = order[j], order[i]
    return _permuted(a, tuple(order), stream)


def astype(a, /, dtype, *, stream=None) -> array:
    """``a`` converted to ``dtype``."""
    a = as_array(a, "astype")
    return new_object(cast(a, dt.to_dtype(dtype), resolve_stream(stream)), a)


def _atleast(nd: int, arrays, stream):
    out = []
    for x in arrays:
        x = as_array(x, f"atleast_{nd}d")
        if x.ndim < nd:
            shape = {1: (1,), 2: (1, 1), 3: (1, 1, 1)}[nd] if x.ndim == 0 else x._shape
            if nd == 2 and x.ndim == 1:
                shape = (1,) + x._shape
            elif nd == 3 and x.ndim == 1:
                shape = (1,) + x._shape + (1,)
            elif nd == 3 and x.ndim == 2:
                shape = x._shape + (1,)
            x = reshape(x, shape, stream=stream)
        else:
            x = new_object(x, x)
        out.append(x)
    return out[0] if len(out) == 1 else out


def atleast_1d(*arrays, stream=None):
    """Arrays with at least one dimension. See ``numpy.atleast_1d``."""
    return _atleast(1, arrays, stream)


def atleast_2d(*arrays, stream=None):
    """Arrays with at least two dimensions. See ``numpy.atleast_2d``."""
    return _atleast(2, arrays, stream)


def atleast_3d(*arrays, stream=None):
    """Arrays with at least three dimensions. See ``numpy.atleast_3d``."""
    return _atleast(3, arrays, stream)


def view(a, /, dtype, *, stream=None) -> array:
    """The bytes of ``a`` reinterpreted as ``dtype``; the last axis scales by the ratio of item sizes."""
    a = as_array(a, "view")
    d = dt.to_dtype(dtype)
    if d.size == a._dtype.size:
        shape = a._shape
    else:
        if a.ndim == 0 or (a._shape[-1] * a._dtype.size) % d.size:
            raise ValueError(f"view: cannot view {describe(a)} as {d.name}: the last axis does not divide evenly")
        shape = a._shape[:-1] + (a._shape[-1] * a._dtype.size // d.size,)
    return node(View(d), (a,), shape, d, resolve_stream(stream))


_array.install(stack=stack)  # (mx.array of a list of arrays stacks them; array.py sits below the ops)
