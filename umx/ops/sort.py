"""Sorting and searching: sort, argsort, partition, argpartition, topk, searchsorted, unique and
count_nonzero."""

from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..primitives import ArgPartition, ArgSort, Partition, SearchSorted, Sort, Unique
from ._core import array, as_array, axes_of, axis_of, cast, int_of, node, reshape_node, resolve_stream, sibling_nodes
from .elementwise import not_equal
from .indexing import getitem
from .reduction import sum as sum_

__all__ = ["sort", "argsort", "partition", "argpartition", "topk", "searchsorted", "unique", "count_nonzero"]


def _along(name: str, a, axis, st):
    """``a`` (flattened when ``axis`` is None) and the axis to work along."""
    a = as_array(a, name)
    if axis is None:
        return reshape_node(a, (a.size,), st), 0
    if a.ndim == 0:
        raise ValueError(f"{name}: a 0-d array has no axis {axis}; pass axis=None")
    return a, axis_of(axis, a.ndim, name)


def sort(a, /, axis: int | None = -1, *, stream=None) -> array:
    """Values sorted along ``axis`` (of the flattened array when None), NaNs last. See ``numpy.sort``.

    Args:
        a (array): input.
        axis (int, optional): the axis (default -1).

    Returns:
        array: the sorted values.
    """
    st = resolve_stream(stream)
    a, ax = _along("sort", a, axis, st)
    return node(Sort(ax), (a,), a._shape, a._dtype, st)


def argsort(a, /, axis: int | None = -1, *, stream=None) -> array:
    """The indices that sort ``a`` along ``axis`` (equal values keep their order), as uint32. See
    ``numpy.argsort``.

    Args:
        a (array): input.
        axis (int, optional): the axis (default -1); None sorts the flattened array.

    Returns:
        array: uint32 indices.
    """
    st = resolve_stream(stream)
    a, ax = _along("argsort", a, axis, st)
    return node(ArgSort(ax), (a,), a._shape, dt.uint32, st)


def _kth(name: str, kth, n: int) -> int:
    if not isinstance(kth, (int, np.integer)):
        raise TypeError(f"{name}: kth must be an int, got {type(kth).__name__}")
    if not -n <= kth < n and n:
        raise ValueError(f"{name}: kth {kth} is out of range for an axis of size {n}")
    return int(kth) % n if n else 0


def partition(a, /, kth: int, axis: int | None = -1, *, stream=None) -> array:
    """``a`` rearranged along ``axis`` so that position ``kth`` holds the value a sort would put there, with
    no larger value before it and no smaller after. See ``numpy.partition``.

    Args:
        a (array): input.
        kth (int): the position (negative counts from the end).
        axis (int, optional): the axis (default -1); None uses the flattened array.

    Returns:
        array: the partitioned values.
    """
    st = resolve_stream(stream)
    a, ax = _along("partition", a, axis, st)
    return node(Partition(_kth("partition", kth, a._shape[ax]), ax), (a,), a._shape, a._dtype, st)


def argpartition(a, /, kth: int, axis: int | None = -1, *, stream=None) -> array:
    """The indices that partition ``a`` along ``axis`` around ``kth``, as uint32. See ``numpy.argpartition``.

    Args:
        a (array): input.
        kth (int): the position (negative counts from the end).
        axis (int, optional): the axis (default -1); None uses the flattened array.

    Returns:
        array: uint32 indices.
    """
    st = resolve_stream(stream)
    a, ax = _along("argpartition", a, axis, st)
    return node(ArgPartition(_kth("argpartition", kth, a._shape[ax]), ax), (a,), a._shape, dt.uint32, st)


def topk(a, /, k: int, axis: int | None = -1, *, stream=None) -> array:
    """The ``k`` largest values along ``axis``, in no particular order (as in MLX).

    Args:
        a (array): input.
        k (int): how many values, from 0 to the axis' size.
        axis (int, optional): the axis (default -1); None uses the flattened array.

    Returns:
        array: ``a``'s shape with ``k`` along ``axis``.
    """

    st = resolve_stream(stream)
    a, ax = _along("topk", a, axis, st)
    n = a._shape[ax]
    k = int_of(k, "topk", "k")  # (a TypeError for a float or a string, as MLX's index protocol)
    if not 0 <= k <= n:
        raise ValueError(f"topk: k must be in [0, {n}] for an axis of size {n}, got {k!r}")
    p = node(Partition(n - k, ax), (a,), a._shape, a._dtype, st) if k else a  # (k = 0: nothing to order)
    return getitem(p, (slice(None),) * ax + (slice(n - k, None),), st)


def searchsorted(sorted_sequence, values, /, side: str = "left", *, stream=None) -> array:
    """Where to insert ``values`` into the ascending 1-d ``sorted_sequence`` to keep it sorted. See
    ``numpy.searchsorted``.

    Args:
        sorted_sequence (array): a 1-d array in ascending order.
        values (array | scalar): the values to place, of any shape.
        side (str): ``'left'`` (the first suitable index: the count of smaller elements) or ``'right'`` (the
            last: the count of smaller or equal elements). Default ``'left'``.

    Returns:
        array: uint32 indices in ``[0, sorted_sequence.size]``, of ``values``' shape.
    """
    s = as_array(sorted_sequence, "searchsorted")
    if s.ndim != 1:
        raise ValueError(f"searchsorted: sorted_sequence must be 1-d, got shape {s.shape}")
    if side not in ("left", "right"):
        raise ValueError(f"searchsorted: side must be 'left' or 'right', got {side!r}")
    weak = dt.weak_scalar_dtype(values, s._dtype) if isinstance(values, (bool, int, float, complex)) else None
    v = as_array(values, "searchsorted", weak)
    st = resolve_stream(stream)
    d = dt.promote(s._dtype, v._dtype)
    return node(SearchSorted(side), (cast(s, d, st), cast(v, d, st)), v._shape, dt.uint32, st)


def unique(a, /, size: int, return_index: bool = False, return_inverse: bool = False,
           return_counts: bool = False, fill_value=None, *, stream=None):
    """The ``size`` smallest unique values of the flattened ``a``, in ascending order. See ``numpy.unique``.

    As in MLX, the output's size is given, never inferred from the values, so ``a`` is not evaluated. Entries
    past the last unique value hold ``fill_value`` (default: the smallest unique value) and have a count of 0;
    a truncated output keeps the smallest ``size`` values, and the inverse indices of dropped values are
    clamped to the last entry. NaNs count as one value.

    Args:
        a (array): input.
        size (int): the output's length.
        return_index (bool): also return the flat index of each value's first occurrence (uint32).
        return_inverse (bool): also return, for each element of ``a``, the index of its value (uint32, ``a``'s
            shape).
        return_counts (bool): also return how often each value occurs (uint32).
        fill_value (scalar | array, optional): the padding.

    Returns:
        array | tuple[array, ...]: the values, then the requested extras in the order above.
    """
    a = as_array(a, "unique")
    if not isinstance(size, (int, np.integer)) or size < 0:
        raise ValueError(f"unique: size must be a non-negative int, got {size!r}")
    size = int(size)
    st = resolve_stream(stream)
    inputs = (a,)
    if fill_value is not None:
        f = as_array(fill_value, "unique", a._dtype)
        if f.ndim:
            raise ValueError(f"unique: fill_value must be a scalar or a 0-d array, got shape {f.shape}")
        inputs = (a, cast(f, a._dtype, st))
    specs = [((size,), a._dtype), ((size,), dt.uint32), (a._shape, dt.uint32), ((size,), dt.uint32)]
    outs = sibling_nodes(Unique(size), inputs, specs, st)
    extra = [o for o, want in zip(outs[1:], (return_index, return_inverse, return_counts)) if want]
    return outs[0] if not extra else (outs[0], *extra)


def count_nonzero(a, /, *, axis=None, keepdims: bool = False, stream=None) -> array:
    """The number of non-zero elements over ``axis`` (all axes by default), as int32. See
    ``numpy.count_nonzero``.

    Args:
        a (array): input.
        axis (int | Sequence[int], optional): the axes to count over.
        keepdims (bool): keep the counted axes as size 1 (default False).

    Returns:
        array: int32 counts.
    """

    a = as_array(a, "count_nonzero")
    axes = axes_of(axis, a.ndim, "count_nonzero")
    st = resolve_stream(stream)
    return sum_(not_equal(a, 0, stream=st), axes, keepdims, stream=st)

