"""Indexing: ``a[key]``, ``a[key] = v`` and ``a.at[key].add(v)`` with NumPy's rules for ints, slices, None,
Ellipsis and integer arrays. Boolean masks are refused, as in MLX: the result's shape would depend on the data."""

from __future__ import annotations

import gc
import sys

import numpy as np

from .. import dtypes as dt
from ..primitives import ARRAY, Gather, Scatter
from ._core import array, as_array, cast, node, resolve_stream

__all__ = ["getitem", "setitem", "ArrayAt"]

_BASIC = (int, slice, type(None), type(Ellipsis))


def _parse(a: array, key, op: str):
    """(template, index arrays, result shape) for ``a[key]``."""
    if not isinstance(key, tuple):
        key = (key,)
    template, arrays, probe = [], [], []
    for k in key:
        if isinstance(k, bool) or isinstance(k, np.bool_):
            raise ValueError(f"{op}: boolean indices are not yet supported")
        if isinstance(k, (int, np.integer)):
            template.append(int(k))
            probe.append(int(k))
        elif isinstance(k, (slice, type(None), type(Ellipsis))):
            template.append(k)
            probe.append(k)
        else:
            idx = k if type(k) is array else as_array(k, op)
            if idx.dtype is dt.bool_:
                raise ValueError(f"{op}: boolean indices are not yet supported")
            if idx.dtype.kind not in "iu":
                raise TypeError(f"{op}: index arrays must be integers, got {idx.dtype.name}")
            template.append(ARRAY)
            arrays.append(idx)
            probe.append(np.zeros(idx.shape, np.intp))
    n_ellipsis = sum(1 for k in template if k is Ellipsis)
    if n_ellipsis > 1:
        raise IndexError(f"{op}: an index can only have a single ellipsis")
    n_used = sum(1 for k in template if k is not None and k is not Ellipsis)
    if n_used > a.ndim:
        raise IndexError(f"{op}: too many indices ({n_used}) for an array of shape {a.shape}")
    # Bounds of int indices, checked at the call (index arrays are checked by the kernel).
    dims = _dims_of(template, a.ndim)
    for k, d in zip(template, dims):
        if isinstance(k, int) and d is not None and not -a._shape[d] <= k < a._shape[d]:
            raise IndexError(f"{op}: index {k} is out of bounds for axis {d} with size {a._shape[d]}")
    if not arrays:
        return tuple(template), arrays, _basic_shape(template, dims, a._shape)
    dummy = np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), a._shape, (0,) * a.ndim)
    if any(s == 0 for s in a._shape):
        dummy = np.zeros(a._shape, np.int8)
    try:
        shape = dummy[tuple(probe)].shape
    except IndexError as e:
        raise IndexError(f"{op}: {e} (array of shape {a.shape})") from None
    return tuple(template), arrays, shape


def _basic_shape(template, dims, shape) -> tuple:
    """The shape of ``a[key]`` for a key of ints, slices, None and Ellipsis (NumPy's basic indexing)."""
    out = []
    last = -1
    for k, d in zip(template, dims):
        if k is None:
            out.append(1)
        elif k is Ellipsis:
            n_used = sum(1 for x in template if x is not None and x is not Ellipsis)
            out.extend(shape[last + 1:last + 1 + len(shape) - n_used])
            last += len(shape) - n_used
        else:
            last = d
            if type(k) is slice:
                out.append(len(range(*k.indices(shape[d]))))
    out.extend(shape[last + 1:])
    return tuple(out)


def _dims_of(template, ndim):
    """The axis of ``a`` each key entry addresses (None for None/Ellipsis)."""
    out, d = [], 0
    n_used = sum(1 for k in template if k is not None and k is not Ellipsis)
    for k in template:
        if k is None:
            out.append(None)
        elif k is Ellipsis:
            out.append(None)
            d += ndim - n_used
        else:
            out.append(d)
            d += 1
    return out


def _is_full_slice(template) -> bool:
    return all(k is Ellipsis or (type(k) is slice and k == slice(None)) for k in template)


def getitem(a: array, key, stream=None) -> array:
    """``a[key]``: NumPy basic and integer-array indexing."""
    template, arrays, shape = _parse(a, key, "getitem")
    if _is_full_slice(template):
        return a
    st = resolve_stream(stream)
    return node(Gather(template), (a, *arrays), shape, a._dtype, st)


def _scatter(a: array, key, values, op: str | None, name: str, stream=None) -> array:
    template, arrays, shape = _parse(a, key, name)
    st = resolve_stream(stream)
    v = values if type(values) is array else as_array(values, name, a._dtype)
    from .shape import broadcast_to

    try:
        np.broadcast_shapes(v.shape, shape)
    except ValueError:
        raise ValueError(f"{name}: cannot assign values of shape {v.shape} to an index of shape {shape} "
                         f"(array of shape {a.shape})") from None
    v = cast(v, a._dtype, st)
    if v.ndim > len(shape):  # NumPy drops leading 1s of the values
        v = broadcast_to(v, shape, stream=st) if v.size == int(np.prod(shape)) else v
    return node(Scatter(template, op), (a, v, *arrays), a._shape, a._dtype, st)


def setitem(a: array, key, values) -> None:
    """``a[key] = values``: ``a`` becomes a new graph node, its old value kept for the ops that already read it."""
    new = _scatter(a, key, values, None, "setitem")
    from ..scheduler import _plan_lock

    # `a` is about to become another node, so no worker may still be computing it (the worker would write the
    # old value into the new node), and no eval may be planning it meanwhile.
    while True:
        with _plan_lock:
            ex, seq = a._exec, a._seq
            if ex is None or ex.done >= seq:
                _rebind(a, new)
                return
        ex.wait(seq)


# References to `a` that the interpreter and umx's own frames hold inside _rebind while `a[key] = v` runs,
# when one variable holds `a`: measured by `calibrate`, as it varies with the Python version. More references
# mean other holders, maybe nodes that read `a`, and only then is the heap scanned for them.
_own_refs = 5
_last_refs = 0


def calibrate() -> None:
    """Measure ``_own_refs`` through ``array.__setitem__`` (called once, when the operators are installed)."""
    global _own_refs
    _own_refs = sys.maxsize  # no scan while measuring
    probe = array(np.zeros(1, np.int8))
    probe[0] = 0
    _own_refs = _last_refs


def _rebind(a: array, new: array) -> None:
    """Give the Python object ``a`` the state of ``new``; nodes that already read ``a`` keep reading the old value."""
    if a._data is None and a._exec is not None:
        # Scheduled (by async_eval or an eval on another thread): its worker will store the result in this
        # very object, so let it finish before the object becomes another node.
        a._exec.wait(a._seq)
    old = array.__new__(array)
    for s in ("_prim", "_inputs", "_shape", "_dtype", "_stream", "_data", "_copies", "_exec", "_seq", "_siblings"):
        setattr(old, s, getattr(a, s))
    if old._siblings is not None:
        old._siblings = tuple(old if x is a else x for x in old._siblings)
        for x in old._siblings:
            x._siblings = old._siblings
    # Other nodes reading `a` must now read `old`. Only `new` (and our frames) hold `a` in the common case;
    # otherwise find the readers, an O(heap) scan that only aliased updates pay.
    global _last_refs
    refs = _last_refs = sys.getrefcount(a)
    if refs > _own_refs:
        for ref in gc.get_referrers(a):
            if type(ref) is tuple:
                for owner in gc.get_referrers(ref):
                    if type(owner) is array and owner._inputs is ref and owner is not new:
                        if owner._data is None and owner._exec is not None:
                            # In flight: its worker may hold `a` already (e.g. while it waits for another
                            # stream) and must read the value `a` had at the call, so let it finish first.
                            owner._exec.wait(owner._seq)
                        owner._inputs = tuple(old if x is a else x for x in ref)
    new._inputs = tuple(old if x is a else x for x in new._inputs)
    a._data = None  # `a` no longer owns the data: `old` does (and releases it)
    for s in ("_prim", "_inputs", "_shape", "_dtype", "_stream", "_data", "_copies", "_exec", "_seq", "_siblings"):
        setattr(a, s, getattr(new, s))
    new._data = None  # so that freeing `new` does not un-count data it never owned
    new._prim = None


class ArrayAt:
    """``a.at[key]``: functional updates that accumulate over repeated indices, e.g. ``a.at[idx].add(v)``."""

    __slots__ = ("_a", "_key")

    def __init__(self, a: array, key=None):
        self._a = a
        self._key = key

    def __getitem__(self, key) -> ArrayAt:
        return ArrayAt(self._a, key)

    def add(self, values, *, stream=None) -> array:
        """A copy of the array with ``values`` added at the index (repeated indices accumulate)."""
        return _scatter(self._a, self._key, values, "add", "at.add", stream)

    def subtract(self, values, *, stream=None) -> array:
        """A copy with ``values`` subtracted at the index."""
        return _scatter(self._a, self._key, values, "subtract", "at.subtract", stream)

    def multiply(self, values, *, stream=None) -> array:
        """A copy with the index multiplied by ``values``."""
        return _scatter(self._a, self._key, values, "multiply", "at.multiply", stream)

    def divide(self, values, *, stream=None) -> array:
        """A copy with the index divided by ``values``."""
        op = "divide" if self._a.dtype.kind in "fc" else "floor_divide"
        return _scatter(self._a, self._key, values, op, "at.divide", stream)

    def maximum(self, values, *, stream=None) -> array:
        """A copy with the index set to the maximum of itself and ``values``."""
        return _scatter(self._a, self._key, values, "maximum", "at.maximum", stream)

    def minimum(self, values, *, stream=None) -> array:
        """A copy with the index set to the minimum of itself and ``values``."""
        return _scatter(self._a, self._key, values, "minimum", "at.minimum", stream)
