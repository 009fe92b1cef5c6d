"""Layout ops: padding, tiling, repeats, rolls, flips, diagonals and triangles, grids, strided views, gathers
and scatters along an axis, and slices whose start is held in an array."""

from __future__ import annotations

import builtins

import numpy as np

from .. import dtypes as dt
from ..primitives import (
    COPY,
    AsStrided,
    Diag,
    Diagonal,
    DynamicSlice,
    DynamicSliceUpdate,
    Pad,
    PutAlongAxis,
    Repeat,
    Roll,
    TakeAlongAxis,
    Tile,
    Tri,
    Tril,
    Triu,
)
from ._core import (
    alias,
    array,
    as_array,
    axes_of,
    axis_of,
    broadcast_node,
    broadcast_shapes,
    cast,
    check_dims,
    describe,
    int_of,
    node,
    reshape_node,
    resolve_stream,
    shape_of,
)
from .indexing import _scatter as scatter
from .indexing import getitem

__all__ = ["pad", "tile", "repeat", "roll", "flip", "diag", "diagonal", "tri", "tril", "triu", "meshgrid",
           "as_strided", "unstack", "contiguous", "take", "take_along_axis", "put_along_axis", "slice",
           "slice_update"]

_INT = (int, np.integer)


def _pad_width(pad_width, nd: int) -> tuple:
    """``pad_width`` in any of NumPy's forms as one ``(before, after)`` pair per axis."""
    pw = np.asarray(pad_width)
    if pw.size == 0 and pw.ndim == 1 and nd == 0:  # no pair for no axis (as in MLX)
        return ()
    if pw.dtype.kind not in "iu" or pw.ndim > 2:
        raise ValueError(f"pad: pad_width must be an int, a pair or pairs of ints, got {pad_width!r}")
    try:
        pw = np.broadcast_to(pw, (nd, 2))
    except ValueError:
        raise ValueError(f"pad: pad_width {pad_width!r} does not fit an array of {nd} dimensions") from None
    if (pw < 0).any():
        raise ValueError(f"pad: pad widths must be non-negative, got {pad_width!r}")
    return tuple((int(lo), int(hi)) for lo, hi in pw)


_PAD_MODES = ("constant", "edge", "reflect", "symmetric")


def pad(a, pad_width, mode: str = "constant", constant_values=0, *, stream=None) -> array:
    """Pad ``a`` along every axis. See ``numpy.pad``.

    Args:
        a (array): input.
        pad_width (int | tuple | list[tuple]): ``n`` (n before and after every axis), ``(before, after)`` for
            every axis, or one ``(before, after)`` pair per axis.
        mode (str): ``'constant'`` (fill with ``constant_values``), ``'edge'`` (repeat the edge values),
            ``'reflect'`` (mirror about the edge values, which are not repeated) or ``'symmetric'`` (mirror,
            the edge values repeated).
        constant_values (scalar | array): the 0-d fill value of ``'constant'`` mode (default 0).

    Returns:
        array: the padded array, of ``a``'s dtype.
    """
    a = as_array(a, "pad")
    if mode not in _PAD_MODES:
        raise ValueError(f"pad: mode must be 'constant', 'edge', 'reflect' or 'symmetric', got {mode!r}")
    if a.ndim == 0:
        _pad_width(pad_width, 0)  # still checked
        return alias(a)
    pw = _pad_width(pad_width, a.ndim)
    st = resolve_stream(stream)
    v = as_array(constant_values, "pad", a._dtype)
    if v.ndim:
        raise ValueError(f"pad: constant_values must be a scalar or a 0-d array, got shape {v.shape}")
    if mode != "constant" and any(n == 0 and (lo or hi) for n, (lo, hi) in zip(a._shape, pw)):
        raise ValueError(f"pad: {mode!r} mode cannot pad an empty axis (shape {a.shape})")
    shape = check_dims(tuple(n + lo + hi for n, (lo, hi) in zip(a._shape, pw)), "pad")
    return node(Pad(pw, mode), (a, cast(v, a._dtype, st)), shape, a._dtype, st)


def tile(a, reps, /, *, stream=None) -> array:
    """``a`` repeated ``reps`` times along each axis. See ``numpy.tile``.

    Args:
        a (array): input.
        reps (int | Sequence[int]): repetitions per axis, aligned with the last axes.

    Returns:
        array: of ``max(a.ndim, len(reps))`` dimensions.
    """
    a = as_array(a, "tile")
    reps = shape_of(reps, "tile")
    nd = builtins.max(a.ndim, len(reps))
    s = (1,) * (nd - a.ndim) + a._shape
    r = (1,) * (nd - len(reps)) + reps
    shape = check_dims(tuple(x * y for x, y in zip(s, r)), "tile")
    return node(Tile(r), (a,), shape, a._dtype, resolve_stream(stream))


def repeat(array, repeats: int, axis: int | None = None, *, stream=None):  # noqa: A002 (MLX's name)
    """Repeat each element ``repeats`` times along ``axis`` (of the flattened array when None). See
    ``numpy.repeat``.

    Args:
        array (array): input.
        repeats (int): the number of copies of each element.
        axis (int, optional): the axis; default: flatten first.

    Returns:
        array: the repeated array.
    """
    a = as_array(array, "repeat")
    if not isinstance(repeats, _INT) or repeats < 0:
        raise ValueError(f"repeat: repeats must be a non-negative int, got {repeats!r}")
    st = resolve_stream(stream)
    if axis is None:
        a = reshape_node(a, (a.size,), st)
        axis = 0
    ax = axis_of(axis, a.ndim, "repeat")
    shape = check_dims(a._shape[:ax] + (a._shape[ax] * int(repeats),) + a._shape[ax + 1:], "repeat")
    return node(Repeat(int(repeats), ax), (a,), shape, a._dtype, st)


def roll(a, shift, axis=None, *, stream=None):
    """Shift elements along ``axis`` with wrap-around (the flattened array when ``axis`` is None). See
    ``numpy.roll``.

    Args:
        a (array): input.
        shift (int | Sequence[int]): the shift, one per axis when ``axis`` is a sequence (without an axis,
            several shifts add up).
        axis (int | Sequence[int], optional): the axes.

    Returns:
        array: same shape as ``a``.
    """
    a = as_array(a, "roll")
    sh = tuple(int_of(s, "roll", "shift") for s in np.atleast_1d(shift).reshape(-1))
    if axis is None:  # the flattened array, shifted by the shifts' total (as NumPy and MLX)
        return node(Roll(builtins.sum(sh), None), (a,), a._shape, a._dtype, resolve_stream(stream))
    axes = (axis,) if isinstance(axis, _INT) else tuple(axis)
    axes = tuple(axis_of(x, a.ndim, "roll") for x in axes)
    if len(sh) != len(axes) and len(sh) != 1 and len(axes) != 1:
        raise ValueError(f"roll: shift {shift!r} and axis {axis!r} have different lengths")
    if not axes:  # rolled along no axis: unchanged
        return alias(a)
    sh, axes = np.broadcast_arrays(np.array(sh), np.array(axes))
    prim = Roll(tuple(map(int, sh)), tuple(map(int, axes)))
    return node(prim, (a,), a._shape, a._dtype, resolve_stream(stream))


def flip(a, /, axis=None, *, stream=None) -> array:
    """Reverse the order of elements along ``axis`` (all axes by default). See ``numpy.flip``.

    Args:
        a (array): input.
        axis (int | Sequence[int], optional): the axes to reverse.

    Returns:
        array: same shape as ``a``.
    """

    a = as_array(a, "flip")
    axes = axes_of(axis, a.ndim, "flip")
    if not axes:
        return alias(a)
    key = tuple(builtins.slice(None, None, -1) if d in axes else builtins.slice(None) for d in range(a.ndim))
    return getitem(a, key, resolve_stream(stream))


def _diag_len(d1: int, d2: int, k: int) -> int:
    return builtins.max(0, builtins.min(d1, d2 - k) if k >= 0 else builtins.min(d1 + k, d2))


def _offset(k, rows: int, cols: int, op: str) -> int:
    """A diagonal offset as an int, clamped to where diagonals end (beyond, every diagonal is empty)."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise TypeError(f"{op}: the offset must be an int, got {type(k).__name__}")
    return max(-rows - 1, min(int(k), cols + 1))


def diagonal(a, offset: int = 0, axis1: int = 0, axis2: int = 1, *, stream=None) -> array:
    """The ``offset`` diagonal of the planes spanned by ``axis1`` and ``axis2``, as the last axis. See
    ``numpy.diagonal``.

    Args:
        a (array): input, at least 2-d.
        offset (int): the diagonal: above the main one when positive, below when negative (default 0).
        axis1 (int): the first axis of the planes (default 0).
        axis2 (int): the second axis (default 1).

    Returns:
        array: the other axes, then the diagonal.
    """
    a = as_array(a, "diagonal")
    if a.ndim < 2:
        raise ValueError(f"diagonal: needs at least 2 dimensions, got shape {a.shape}")
    i = axis_of(axis1, a.ndim, "diagonal")
    j = axis_of(axis2, a.ndim, "diagonal")
    if i == j:
        raise ValueError(f"diagonal: axis1 and axis2 must differ, got {axis1} and {axis2}")
    rest = tuple(s for d, s in enumerate(a._shape) if d not in (i, j))
    offset = _offset(offset, a._shape[i], a._shape[j], "diagonal")
    n = _diag_len(a._shape[i], a._shape[j], int(offset))
    return node(Diagonal(int(offset), i, j), (a,), rest + (n,), a._dtype, resolve_stream(stream))


def diag(a, /, k: int = 0, *, stream=None) -> array:
    """A matrix with the 1-d ``a`` on diagonal ``k``, or diagonal ``k`` of the 2-d ``a``. See ``numpy.diag``.

    Args:
        a (array): a 1-d or 2-d array.
        k (int): the diagonal (default 0, the main one).

    Returns:
        array: 2-d for 1-d input, 1-d for 2-d input.
    """
    a = as_array(a, "diag")
    if a.ndim == 2:
        return diagonal(a, k, 0, 1, stream=stream)
    if a.ndim != 1:
        raise ValueError(f"diag: input must be 1-d or 2-d, got shape {a.shape}")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise TypeError(f"diag: k must be an int, got {type(k).__name__}")
    if abs(int(k)) >= 2**31:
        raise ValueError(f"diag: the offset {k} makes a matrix too large")
    n = a._shape[0] + abs(int(k))
    return node(Diag(int(k)), (a,), (n, n), a._dtype, resolve_stream(stream))


def tri(n: int, m: int | None = None, k: int = 0, dtype=dt.float32, *, stream=None) -> array:
    """An ``n`` by ``m`` matrix with ones on and below diagonal ``k``. See ``numpy.tri``.

    Args:
        n (int): rows.
        m (int, optional): columns; default ``n``.
        k (int): the diagonal (default 0).
        dtype (Dtype): default float32.

    Returns:
        array: the matrix.
    """
    m = n if m is None else m
    n, m = shape_of((n, m), "tri")
    d = dt.to_dtype(dtype)
    k = builtins.min(builtins.max(int_of(k, "tri", "k"), -n - 1), m + 1)
    return node(Tri(n, m, k, d), (), (n, m), d, resolve_stream(stream))


def _triangle(cls, name, x, k, stream):
    x = as_array(x, name)
    if x.ndim < 2:
        raise ValueError(f"{name}: needs at least 2 dimensions, got shape {x.shape}")
    # a diagonal past the matrix's corners selects all or nothing: clamped there, so kernels see a small int
    edge = builtins.max(x._shape[-2:]) + 1
    k = builtins.min(builtins.max(int_of(k, name, "k"), -edge), edge)
    return node(cls(k), (x,), x._shape, x._dtype, resolve_stream(stream))


def tril(x, k: int = 0, *, stream=None) -> array:
    """``x`` with the elements above diagonal ``k`` of its last two axes zeroed. See ``numpy.tril``."""
    return _triangle(Tril, "tril", x, k, stream)


def triu(x, k: int = 0, *, stream=None) -> array:
    """``x`` with the elements below diagonal ``k`` of its last two axes zeroed. See ``numpy.triu``."""
    return _triangle(Triu, "triu", x, k, stream)


def meshgrid(*arrays, sparse: bool = False, indexing: str = "xy", stream=None) -> tuple:
    """Coordinate grids from 1-d coordinate arrays. See ``numpy.meshgrid``.

    Args:
        *arrays (array): the coordinates along each axis (flattened).
        sparse (bool): return broadcastable arrays instead of full grids (default False).
        indexing (str): ``'xy'`` (Cartesian, default) or ``'ij'`` (matrix).

    Returns:
        tuple[array, ...]: one grid per input.
    """
    if indexing not in ("xy", "ij"):
        raise ValueError(f"meshgrid: indexing must be 'xy' or 'ij', got {indexing!r}")
    xs = [as_array(x, "meshgrid") for x in arrays]
    st = resolve_stream(stream)
    nd = len(xs)
    out = []
    for i, x in enumerate(xs):
        shape = [1] * nd
        shape[i] = x.size
        if indexing == "xy" and nd >= 2 and i < 2:
            shape[0], shape[1] = shape[1], shape[0]
        out.append(reshape_node(x, tuple(shape), st))
    if not sparse and out:
        full = broadcast_shapes(*(o._shape for o in out), op="meshgrid")
        out = [broadcast_node(o, full, st) for o in out]
    return tuple(out)


def as_strided(a, /, shape=None, strides=None, offset: int = 0, *, stream=None) -> array:
    """A view of ``a``'s elements in row-major order with the given shape and strides (in elements, not
    bytes). See ``numpy.lib.stride_tricks.as_strided``; umx checks that every element read lies inside ``a``.

    Args:
        a (array): input.
        shape (Sequence[int], optional): the result's shape; default ``a.shape``.
        strides (Sequence[int], optional): the step in elements along each axis; default: row-major.
        offset (int): the flat position of the first element (default 0).

    Returns:
        array: the strided array.
    """
    a = as_array(a, "as_strided")
    shape = a._shape if shape is None else shape_of(shape, "as_strided")
    if strides is None:
        strides = tuple(int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape)))
    strides = tuple(int(s) for s in strides)
    if len(strides) != len(shape):
        raise ValueError(f"as_strided: {len(strides)} strides for a shape of {len(shape)} dimensions")
    if 0 not in shape:
        lo = offset + builtins.sum((n - 1) * s for n, s in zip(shape, strides) if s < 0)
        hi = offset + builtins.sum((n - 1) * s for n, s in zip(shape, strides) if s > 0)
        if lo < 0 or hi >= a.size:
            raise ValueError(f"as_strided: shape {shape}, strides {strides} and offset {offset} read outside "
                             f"an array of {a.size} elements")
    return node(AsStrided(shape, strides, int(offset)), (a,), shape, a._dtype, resolve_stream(stream))


def unstack(x, /, axis: int = 0, *, stream=None) -> list:
    """Split ``x`` along ``axis`` into its slices, dropping that axis.

    Args:
        x (array): input, at least 1-d.
        axis (int): the axis (default 0).

    Returns:
        list[array]: ``x.shape[axis]`` arrays.
    """

    x = as_array(x, "unstack")
    if x.ndim == 0:
        raise ValueError("unstack: cannot unstack a 0-d array")
    ax = axis_of(axis, x.ndim, "unstack")
    lead = (builtins.slice(None),) * ax
    return [getitem(x, lead + (i,), stream) for i in range(x._shape[ax])]


def contiguous(a, /, allow_col_major: bool = False, *, stream=None) -> array:
    """A copy of ``a`` in fresh row-major memory (umx arrays are always usable as is; this forces a copy).

    Args:
        a (array): input.
        allow_col_major (bool): accepted for MLX compatibility.

    Returns:
        array: the same values.
    """
    a = as_array(a, "contiguous")
    return node(COPY, (a,), a._shape, a._dtype, resolve_stream(stream))


def _index_array(indices, op: str, empty_any: bool = False) -> array:
    i = as_array(indices, op)
    if i._dtype.kind not in "iu" and not (empty_any and i.size == 0):
        raise TypeError(f"{op}: indices must be integers, got {i.dtype.name}")
    return i


def take(a, /, indices, axis: int | None = None, *, stream=None) -> array:
    """Elements of ``a`` at ``indices`` along ``axis`` (of the flattened array when None). See ``numpy.take``.

    Args:
        a (array): input.
        indices (int | array): integer indices; negative ones count from the end.
        axis (int, optional): the axis.

    Returns:
        array: ``a``'s axis replaced by the indices' shape.
    """

    a = as_array(a, "take")
    st = resolve_stream(stream)
    if axis is None:
        a = reshape_node(a, (a.size,), st)
        axis = 0
    ax = axis_of(axis, a.ndim, "take")
    idx = int(indices) if isinstance(indices, _INT) else _index_array(indices, "take")
    if a._shape[ax] == 0 and (isinstance(idx, int) or idx.size):
        raise ValueError(f"take: cannot take elements from the empty axis {ax} of an array of shape {a.shape}")
    if isinstance(idx, int) and not -a._shape[ax] <= idx < a._shape[ax]:
        raise IndexError(f"take: index {idx} is out of bounds for axis {ax} with size {a._shape[ax]}")
    return getitem(a, (builtins.slice(None),) * ax + (idx,), st)


def _along_axis(name, a, indices, axis, st):
    a = as_array(a, name)
    idx = _index_array(indices, name, empty_any=name == "put_along_axis")  # (an empty scatter writes nothing)
    if axis is None:
        a = reshape_node(a, (a.size,), st)
        idx = reshape_node(idx, (idx.size,), st)
        axis = 0
    ax = axis_of(axis, a.ndim, name)
    if idx.ndim != a.ndim:
        raise ValueError(f"{name}: indices must have as many dimensions as the array, got {describe(a, idx)}")
    return a, idx, ax


def take_along_axis(a, /, indices, axis: int | None = None, *, stream=None) -> array:
    """Values of ``a`` at ``indices`` along ``axis``, the other axes broadcast. See ``numpy.take_along_axis``.

    Args:
        a (array): input.
        indices (array): integer indices with as many dimensions as ``a``.
        axis (int, optional): the axis; default: both flattened.

    Returns:
        array: the gathered values.
    """
    st = resolve_stream(stream)
    a, idx, ax = _along_axis("take_along_axis", a, indices, axis, st)
    rest = broadcast_shapes(a._shape[:ax] + (1,) + a._shape[ax + 1:],
                            idx._shape[:ax] + (1,) + idx._shape[ax + 1:], op="take_along_axis")
    shape = rest[:ax] + (idx._shape[ax],) + rest[ax + 1:]
    return node(TakeAlongAxis(ax), (a, idx), shape, a._dtype, st)


def put_along_axis(a, /, indices, values, axis: int | None = None, *, stream=None) -> array:
    """A copy of ``a`` with ``values`` written at ``indices`` along ``axis``. See ``numpy.put_along_axis``.

    Args:
        a (array): input.
        indices (array): integer indices with as many dimensions as ``a``, broadcastable to it off ``axis``.
        values (array | scalar): the values, broadcast to the indices' shape.
        axis (int, optional): the axis; default: both flattened.

    Returns:
        array: same shape and dtype as ``a``.
    """
    st = resolve_stream(stream)
    orig = as_array(a, "put_along_axis")
    a, idx, ax = _along_axis("put_along_axis", orig, indices, axis, st)
    target = a._shape[:ax] + (idx._shape[ax],) + a._shape[ax + 1:]
    v = as_array(values, "put_along_axis", a._dtype)
    for s in (idx._shape, v._shape):
        if broadcast_shapes(s, target, op="put_along_axis") != target:
            raise ValueError(f"put_along_axis: cannot broadcast {s} to {target} (array {describe(orig)})")
    out = node(PutAlongAxis(ax), (a, idx, cast(v, a._dtype, st)), a._shape, a._dtype, st)
    return reshape_node(out, orig._shape, st)


def _static_key(name: str, a: array, start_indices, axes, size: tuple):
    """The basic-indexing key of the block of ``size`` at Python int starts (an int, or one per axis), clamped so
    that the block fits as the array starts are; None if the starts are not Python ints."""
    starts = (start_indices,) if type(start_indices) is int else start_indices
    if type(starts) not in (tuple, list) or not starts or any(type(s) is not int for s in starts):
        return None
    axes = _slice_axes(name, a, axes, len(starts))
    key = [builtins.slice(0, n) for n in size]
    for s, ax in zip(starts, axes):
        n = a._shape[ax]
        s = min(max(s + n if s < 0 else s, 0), n - size[ax])  # (negative starts count from the end)
        key[ax] = builtins.slice(s, s + size[ax])
    return tuple(key)


def _slice_axes(name: str, a: array, axes, starts: int) -> tuple:
    """``axes`` of ``a`` as non-negative ints, checked: distinct, and one for each of ``starts`` start indices."""
    axes = tuple(axis_of(x, a.ndim, name) for x in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name}: repeated axis in {axes}")
    if starts != len(axes):
        raise ValueError(f"{name}: {starts} start indices for {len(axes)} axes")
    return axes


def _dynamic(name, a, start_indices, axes):
    start = _index_array(start_indices, name)
    return start, _slice_axes(name, a, axes, start.size)


def slice(a, /, start_indices, axes, slice_size, *, stream=None) -> array:  # noqa: A001 (MLX's name)
    """The block of ``slice_size`` whose start along ``axes`` is read from the array ``start_indices``, so
    that the start can be computed without evaluating it. Starts are clamped so that the block fits inside
    ``a``.

    Args:
        a (array): input.
        start_indices (array | int | Sequence[int]): integer starts, one per entry of ``axes``. Python ints
            (umx's addition) make a basic slice, with no start array to read.
        axes (Sequence[int]): the axes the starts apply to (other axes start at 0).
        slice_size (Sequence[int]): the block's full shape (one size per axis of ``a``).

    Returns:
        array: of shape ``slice_size``.
    """
    a = as_array(a, "slice")
    st = resolve_stream(stream)
    size = shape_of(slice_size, "slice")
    if len(size) != a.ndim or any(s > n for s, n in zip(size, a._shape)):
        raise ValueError(f"slice: slice_size {size} does not fit an array of shape {a.shape}")
    key = _static_key("slice", a, start_indices, axes, size)
    if key is not None:  # starts known now: a basic slice (a view)
        return getitem(a, key, stream=st)
    start, axes = _dynamic("slice", a, start_indices, axes)
    return node(DynamicSlice(axes, size), (a, start), size, a._dtype, st)


def slice_update(a, /, update, start_indices, axes, *, stream=None) -> array:
    """A copy of ``a`` with ``update`` written at the start along ``axes`` read from ``start_indices``
    (clamped so that the block fits).

    Args:
        a (array): input.
        update (array): the block, with as many dimensions as ``a`` and no larger; cast to ``a``'s dtype.
        start_indices (array | int | Sequence[int]): integer starts, one per entry of ``axes``. Python ints
            (umx's addition) write a basic slice, with no start array to move to a device.
        axes (Sequence[int]): the axes the starts apply to (other axes start at 0).

    Returns:
        array: same shape and dtype as ``a``.
    """
    a = as_array(a, "slice_update")
    u = as_array(update, "slice_update", a._dtype)
    st = resolve_stream(stream)
    if u.ndim != a.ndim or any(s > n for s, n in zip(u._shape, a._shape)):
        raise ValueError(f"slice_update: an update of shape {u.shape} does not fit shape {a.shape}")
    key = _static_key("slice_update", a, start_indices, axes, u._shape)
    if key is not None:  # starts known now: a write of a basic slice, with no start array to move to a device
        return scatter(a, key, u, None, "slice_update", st)
    start, axes = _dynamic("slice_update", a, start_indices, axes)
    return node(DynamicSliceUpdate(axes), (a, cast(u, a._dtype, st), start), a._shape, a._dtype, st)
