"""Indexing: ``a[key]``, ``a[key] = v`` and ``a.at[key].add(v)`` with NumPy's rules for ints, slices, None,
Ellipsis and integer arrays. Reading through a boolean mask is refused, as in MLX (the result's shape would depend on
the data); assigning through one is a ``where`` over the array, so it stays lazy.

Indexing always returns a new array object (``a[...]`` too, sharing the data): ``b[i] = v`` rebinds only ``b``.
"""

from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..array import _created, alias
from ..primitives import ARRAY, Gather, Scatter
from ..runtime.node import rebind
from ._core import array, as_array, broadcast_node, cast, node, reshape_node, resolve_stream
from .elementwise import clip, subtract, where
from .scan import cumsum

__all__ = ["getitem", "setitem", "ArrayAt"]

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_BIG_INDEX = "Slice indices must be 32-bit integers."  # MLX's message


def _int_key(k, op: str) -> int:
    k = int(k)
    if not _INT32_MIN <= k <= _INT32_MAX:
        raise ValueError(f"{op}: {_BIG_INDEX} Got {k}")
    return k


def _slice_key(k: slice, op: str) -> slice:
    for v in (k.start, k.stop, k.step):
        if v is not None and not _INT32_MIN <= v <= _INT32_MAX:
            raise ValueError(f"{op}: {_BIG_INDEX} Got {k}")
    return k


def _parse(a: array, key, op: str):
    """(template, index arrays, result shape) for ``a[key]``."""
    if type(key) is not tuple:
        key = (key,)
    template, arrays = [], []
    for k in key:
        tk = type(k)
        if tk is slice:
            template.append(_slice_key(k, op))
        elif k is None or k is Ellipsis:
            template.append(k)
        elif tk is bool or tk is np.bool_:
            raise ValueError(f"{op}: boolean indices are not yet supported")
        elif tk is int or isinstance(k, np.integer):
            template.append(_int_key(k, op))
        else:
            idx = k if tk is array else _index_array(k, op)
            if idx.dtype is dt.bool_:
                raise ValueError(f"{op}: boolean indices are not yet supported")
            if idx.dtype.kind not in "iu":
                raise TypeError(f"{op}: index arrays must be integers, got {idx.dtype.name}")
            template.append(ARRAY)
            arrays.append(idx)
    n_ellipsis = sum(1 for k in template if k is Ellipsis)
    if n_ellipsis > 1:
        raise ValueError(f"{op}: an index can only have a single ellipsis")
    ndim = len(a._shape)
    n_used = sum(1 for k in template if k is not None and k is not Ellipsis)
    if n_used > ndim:
        raise ValueError(f"{op}: too many indices ({n_used}) for an array of shape {a.shape}")
    template = tuple(template)
    if arrays:
        return template, arrays, _advanced_shape(a, template, arrays, n_used, op)
    return template, arrays, _basic_shape(a._shape, template, n_used, op)


def _index_array(k, op: str) -> array:
    if isinstance(k, (list, tuple, np.ndarray)) or hasattr(k, "__array__") or hasattr(k, "__dlpack__"):
        return as_array(k, op)
    raise TypeError(f"{op}: cannot index an array with {type(k).__name__}")


def _basic_shape(shape: tuple, template: tuple, n_used: int, op: str) -> tuple:
    """The shape of ``a[key]`` for ints, slices, None and Ellipsis, with int indices checked against the bounds."""
    out, d = [], 0
    for k in template:
        if k is None:
            out.append(1)
        elif k is Ellipsis:
            span = len(shape) - n_used
            out.extend(shape[d:d + span])
            d += span
        elif type(k) is int:
            n = shape[d]
            if not -n <= k < n:
                raise IndexError(f"{op}: index {k} is out of bounds for axis {d} with size {n}")
            d += 1
        else:
            if k is not ARRAY:  # (an index array's axes are placed by _advanced_shape)
                out.append(len(range(*k.indices(shape[d]))))
            d += 1
    out.extend(shape[d:])
    return tuple(out)


#: ``_advanced_shape``'s results by (shape, key with slices as tuples, index arrays' shapes): the stand-in's
#: indexing writes an array of the result's size (an embedding lookup's, at every step of a language model)
_ADVANCED_SHAPES: dict = {}
_ADVANCED_SHAPES_MAX = 1024


def _advanced_shape(a: array, template: tuple, arrays: list, n_used: int, op: str) -> tuple:
    """The shape of ``a[key]`` with integer arrays in the key, by NumPy's placement rules (read off a stand-in;
    remembered for the shapes and key, which give the same shape, or the same error, each time)."""
    memo = (a._shape, tuple([(k.start, k.stop, k.step) if type(k) is slice else k for k in template]),
            tuple([i._shape for i in arrays]))
    try:
        got = _ADVANCED_SHAPES.get(memo)
    except TypeError:  # (a key item that does not hash)
        return _advanced_shape_of(a, template, arrays, n_used, op)
    if got is None:
        got = _advanced_shape_of(a, template, arrays, n_used, op)
        if len(_ADVANCED_SHAPES) >= _ADVANCED_SHAPES_MAX:
            _ADVANCED_SHAPES.clear()
        _ADVANCED_SHAPES[memo] = got
    return got


def _advanced_shape_of(a: array, template: tuple, arrays: list, n_used: int, op: str) -> tuple:
    """:func:`_advanced_shape`, worked out."""
    _basic_shape(a._shape, template, n_used, op)  # (its int indices checked against the bounds)
    probe = iter([np.zeros(i._shape, np.intp) for i in arrays])
    key = tuple(next(probe) if k is ARRAY else k for k in template)
    stand_in = np.lib.stride_tricks.as_strided(np.zeros(1, np.int8), a._shape, (0,) * a.ndim)
    if any(s == 0 for s in a._shape):
        stand_in = np.zeros(a._shape, np.int8)
    try:
        return stand_in[key].shape
    except IndexError as e:
        raise IndexError(f"{op}: {e} (array of shape {a.shape})") from None


def _is_full(template: tuple) -> bool:
    return all(k is Ellipsis or (type(k) is slice and k == slice(None)) for k in template)


_FULL = slice(None)


def _parse_basic(shape: tuple, key: tuple, op: str):
    """``(template, result shape, whether it takes everything)`` for a key of slices, ints, None and one Ellipsis
    (what a model's slicing is), with :func:`_parse`'s checks in one pass over the key; None for any other key
    (:func:`_parse` takes it, and raises what it raises)."""
    used = 0
    ellipsis = False
    full = True
    for k in key:
        tk = type(k)
        if tk is slice:
            used += 1
            if k != _FULL:
                full = False
                _slice_key(k, op)
        elif tk is int:
            used += 1
            full = False
            _int_key(k, op)
        elif k is Ellipsis:
            if ellipsis:
                return None
            ellipsis = True
        elif k is None:
            full = False
        else:
            return None
    if used > len(shape):
        return None
    return key, _basic_shape(shape, key, used, op), full


def getitem(a: array, key, stream=None) -> array:
    """``a[key]``: NumPy basic and integer-array indexing. A new array object even for ``a[...]`` and ``a[:]``."""
    basic = _parse_basic(a._shape, key if type(key) is tuple else (key,), "getitem")
    if basic is not None:
        template, shape, full = basic
        if full:
            return alias(a)
        return node(Gather(template), (a,), shape, a._dtype, resolve_stream(stream))
    template, arrays, shape = _parse(a, key, "getitem")
    if not arrays and _is_full(template):
        return alias(a)
    st = resolve_stream(stream)
    return node(Gather(template), (a, *arrays), shape, a._dtype, st)


def _fit_values(v: array, shape: tuple, a: array, name: str, st) -> array:
    """``v`` ready to be written into an index of ``shape``: NumPy drops the values' leading 1s, and what is left
    must broadcast to ``shape``."""
    vs = v._shape
    lead = 0
    while len(vs) - lead > len(shape) and vs[lead] == 1:
        lead += 1
    rest = vs[lead:]
    if len(rest) > len(shape) or any(r != 1 and r != s for r, s in zip(rest[::-1], shape[::-1])):
        raise ValueError(f"{name}: cannot assign values of shape {vs} to an index of shape {shape} "
                         f"(array of shape {a.shape})")
    return reshape_node(v, rest, st)


def _values_of(values, a: array, name: str) -> array:
    """The values written into ``a``, as an array; a Python int must fit ``a``'s dtype (MLX's check: -3 does
    not go into uint8, where NumPy would wrap it)."""
    if type(values) is array:
        return values
    if isinstance(values, int) and not isinstance(values, bool):
        dt.weak_scalar_dtype(values, a._dtype)
    return as_array(values, name, a._dtype)


def _scatter(a: array, key, values, op: str | None, name: str, stream=None) -> array:
    template, arrays, shape = _parse(a, key, name)
    st = resolve_stream(stream)
    v = _values_of(values, a, name)
    v = _fit_values(cast(v, a._dtype, st), shape, a, name, st)
    return node(Scatter(template, op), (a, v, *arrays), a._shape, a._dtype, st)


def _mask_of(key):
    """The boolean mask array if ``key`` is one (a bool, or a bool array), else None."""
    if type(key) is bool or type(key) is np.bool_:
        return as_array(key, "setitem")
    if type(key) is array:
        return key if key._dtype is dt.bool_ else None
    return None


def _masked(a: array, mask: array, values, name: str) -> array:
    """``a[mask] = values`` as MLX does it: ``mask`` covers the leading axes of ``a``; the values either broadcast
    to each selected element (or row), or, with one more leading axis than that, are taken one after another."""
    k = mask.ndim
    if mask._shape != a._shape[:k]:
        raise ValueError(f"{name}: a boolean mask must have the shape of the array's leading axes; got a mask of "
                         f"shape {mask.shape} for an array of shape {a.shape}")
    st = resolve_stream(None)
    trail = a._shape[k:]
    v = _values_of(values, a, name)
    v = cast(v, a._dtype, st)
    if v.size == 1:
        v = reshape_node(v, (), st)
    vs = v._shape
    if len(vs) <= len(trail):
        src = broadcast_node(_fit_values(v, trail, a, name, st), a._shape, st)
    elif len(vs) == len(trail) + 1:
        n = vs[0]
        v = broadcast_node(_fit_values(v, (n, *trail), a, name, st), (n, *trail), st)
        _check_count(mask, n, name)

        # each selected position's rank among the selected ones, in row-major order: its value's index
        rank = clip(subtract(cumsum(reshape_node(cast(mask, dt.int32, st), (mask.size,), st), stream=st), 1,
                             stream=st), 0, n - 1, stream=st)
        src = node(Gather((ARRAY,)), (v, rank), (mask.size, *trail), a._dtype, st)
        src = reshape_node(src, a._shape, st)
    else:
        raise ValueError(f"{name}: cannot assign values of shape {vs} through a mask of shape {mask.shape} "
                         f"(array of shape {a.shape})")

    return where(reshape_node(mask, mask._shape + (1,) * len(trail), st), src, a, stream=st)


def _check_count(mask: array, n: int, name: str) -> None:
    """Fewer values than selected places is an error; it is caught here when the mask's values are known (a list
    or NumPy mask, or an evaluated one), without evaluating anything."""
    d = mask._data
    if isinstance(d, (np.ndarray, np.generic)):
        selected = int(np.count_nonzero(d))
        if selected > n:
            raise ValueError(f"{name}: the mask selects {selected} places but only {n} values were given")


def setitem(a: array, key, values) -> None:
    """``a[key] = values``: ``a`` becomes a new graph node, its old value kept for the ops that already read it."""
    global _last_refs
    mark = next(_created)
    if isinstance(key, (list, np.ndarray)):
        key = as_array(key, "setitem")  # (once: a mask, or the index array the scatter's parse takes as it is)
    mask = _mask_of(key)
    if mask is not None:
        new = _masked(a, mask, values, "setitem")
    else:
        new = _scatter(a, key, values, None, "setitem")
    _last_refs = rebind(a, new, mark, _own_refs)


# References to `a` that the interpreter and umx's own frames hold while `a[key] = v` runs, when one variable holds
# `a`: measured by `calibrate`, as it varies with the Python version. More references mean other holders, maybe
# nodes that read `a`, and only then is the heap scanned for them (see array.rebind).
_own_refs = 5
_last_refs = 0


def calibrate() -> None:
    """Measure ``_own_refs`` through ``array.__setitem__`` (called once, when the operators are installed)."""
    global _own_refs
    _own_refs = 1 << 30  # no scan while measuring
    probe = array(np.zeros(1, np.int8))
    probe[0] = 0
    _own_refs = _last_refs


_NO_KEY = object()  # `a.at` before `[key]` (None is a key: a new axis)


class ArrayAt:
    """``a.at[key]``: functional updates that accumulate over repeated indices, e.g. ``a.at[idx].add(v)``."""

    __slots__ = ("_a", "_key")

    def __init__(self, a: array, key=_NO_KEY):
        self._a = a
        self._key = key

    def __getitem__(self, key) -> ArrayAt:
        return ArrayAt(self._a, key)

    def _indexed(self, name: str):
        if self._key is _NO_KEY:
            raise ValueError(f"{name}: give the index first, e.g. `x.at[0].add(4)`")
        return self._key

    def _update(self, values, op: str, name: str, stream) -> array:
        return _scatter(self._a, self._indexed(name), values, op, name, stream)

    def add(self, values, *, stream=None) -> array:
        """A copy of the array with ``values`` added at the index (repeated indices accumulate)."""
        return self._update(values, "add", "at.add", stream)

    def subtract(self, values, *, stream=None) -> array:
        """A copy with ``values`` subtracted at the index."""
        a = self._a
        op = "subtract"
        if a._dtype is dt.bool_:
            # As MLX, which adds the negated values: bool values have no negative; others are nonzero where their
            # negation is, so the sum in bool is the same with the values themselves.
            if isinstance(values, bool) or (type(values) is array and values._dtype is dt.bool_):
                raise ValueError(f"at.subtract: bool values have no negative, use logical_xor; got {a.shape} bool")
            op = "add"
        return self._update(values, op, "at.subtract", stream)

    def multiply(self, values, *, stream=None) -> array:
        """A copy with the index multiplied by ``values``."""
        return self._update(values, "multiply", "at.multiply", stream)

    def divide(self, values, *, stream=None) -> array:
        """A copy with the index divided by ``values``."""
        op = "divide" if self._a.dtype.kind in "fc" else "floor_divide"
        return self._update(values, op, "at.divide", stream)

    def maximum(self, values, *, stream=None) -> array:
        """A copy with the index set to the maximum of itself and ``values``."""
        return self._update(values, "maximum", "at.maximum", stream)

    def minimum(self, values, *, stream=None) -> array:
        """A copy with the index set to the minimum of itself and ``values``."""
        return self._update(values, "minimum", "at.minimum", stream)
