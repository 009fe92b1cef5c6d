"""The lazy array: a node of the computation graph, and once evaluated, the holder of its data.

An unevaluated array records its primitive, its inputs, its stream, its shape and its dtype. Evaluation (see
``umx.scheduler``) fills ``_data`` with the result on the device that computed it and then detaches the node from
its inputs, so that the graph behind it can be freed. Copies of the data at other locations are kept in
``_copies`` (see ``umx.memory``): arrays are immutable, so a copy never goes stale.
"""

from __future__ import annotations

import itertools
from math import prod

import numpy as np

from . import dtypes as _dt
from . import memory
from .backends.xp import round_bf16

__all__ = ["array", "from_dlpack"]



class array:  # noqa: N801 (MLX's name)
    """An N-dimensional array, evaluated lazily.

    ``mx.array(val, dtype=None)`` makes an array from a Python scalar, a (nested) list or tuple, a NumPy array,
    another umx array or any object with ``__array__`` or ``__dlpack__``. Python floats become float32, ints int32
    (int64 when they do not fit), and NumPy float64 arrays become float32, as in MLX.

    Args:
        val: the values.
        dtype (Dtype, optional): the element type; by default inferred as above.
    """

    __slots__ = ("_prim", "_inputs", "_shape", "_dtype", "_stream", "_data", "_copies", "_exec", "_seq",
                 "_siblings", "__weakref__")

    def __init__(self, val, dtype=None):
        dt = None if dtype is None else _dt.to_dtype(dtype)
        if isinstance(val, array):
            data = np.asarray(val)  # evaluates
            src = val.dtype
        elif dt is not None and _exact(val):
            data, src = np.array(val), None  # straight to dtype, not via float32 (MLX keeps float64)
        else:
            data, src = _to_numpy(val)
        if dt is not None and dt is not src:
            data = _cast_host(data, dt)
            src = dt
        elif src is _dt.bfloat16:
            data = round_bf16(np, data)
        _init_evaluated(self, data, src)

    # -- properties -------------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """The array's dimensions, a tuple of ints."""
        return self._shape

    @property
    def dtype(self) -> _dt.Dtype:
        """The element type."""
        return self._dtype

    @property
    def ndim(self) -> int:
        """The number of dimensions."""
        return len(self._shape)

    @property
    def size(self) -> int:
        """The number of elements."""
        n = 1
        for s in self._shape:
            n *= s
        return n

    @property
    def itemsize(self) -> int:
        """The bytes per element."""
        return self._dtype.size

    @property
    def nbytes(self) -> int:
        """The bytes of the whole array (``size * itemsize``)."""
        return self.size * self._dtype.size

    # -- evaluation -------------------------------------------------------------------------------------------
    def _host(self) -> np.ndarray:
        """The evaluated data as a NumPy array (evaluating and copying to the host if needed)."""
        if self._data is None:
            (_read_eval or _bind()[1])(self)
        d = self._data
        if type(d) is not np.ndarray:
            d = np.asarray(memory.host_copy(self))
        return d

    def item(self):
        """The value of a one-element array as a Python scalar."""
        shape = self._shape
        if shape and prod(shape) != 1:  # (a 0-d array, the commonest, skips the product)
            raise ValueError("item: only length-1 arrays can be converted to Python scalars; "
                             f"this one has shape {shape}")
        if self._data is None:  # (_host, inline: this is the path of every loss and count read in a loop)
            (_read_eval or _bind()[1])(self)
        d = self._data
        if type(d) is not np.ndarray:
            d = np.asarray(memory.host_copy(self))
        return d.item()

    def tolist(self):
        """The values as nested Python lists (a scalar for a 0-d array)."""
        return self._host().tolist()

    def __array__(self, dtype=None, copy=None):
        d = self._host()
        if dtype is not None:
            return d.astype(dtype)
        return d.copy() if copy else d

    def __buffer__(self, flags):
        return memoryview(self._host())

    @property
    def __cuda_array_interface__(self) -> dict:
        """CUDA's array interface, for data that lives on a GPU (evaluates, and waits for the kernel): CuPy's
        ``asarray`` and PyTorch's ``as_tensor`` then share the device memory without a copy. Host data has none
        (AttributeError), so such consumers go through ``__array__``."""
        if self._data is None:
            _eval((self,))
        d = self._data
        cai = getattr(d, "__cuda_array_interface__", None)
        if cai is None:
            raise AttributeError("this array's data lives on the host: it has no __cuda_array_interface__")
        if self._exec is not None:
            self._exec.wait(self._seq)  # the producing kernel has finished: consumers may read on any stream
        return cai

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """Export through DLPack (evaluates). Arrays have no location, so the export is of the host copy (made once)
        unless ``dl_device`` asks for the device the data lives on; bfloat16 leaves as its float32 storage."""
        if self._data is None:
            _eval((self,))
        d = self._data
        on_device = dl_device is not None and dl_device[0] != 1 and not isinstance(d, (np.ndarray, np.generic))
        if on_device and self._exec is not None:
            self._exec.wait(self._seq)  # the producing kernel has finished: the consumer may read on any stream
        d = d if on_device else self._host()
        # Only the arguments given: NumPy before 2.1 takes just ``stream``.
        kw = {k: v for k, v in (("stream", stream), ("max_version", max_version), ("dl_device", dl_device),
                                ("copy", copy)) if v is not None}
        try:
            return d.__dlpack__(**kw)
        except BufferError:  # old consumers cannot be told that a view is read-only: give them a copy
            if not isinstance(d, np.ndarray):
                raise
            return np.array(d).__dlpack__(**kw)

    def __dlpack_device__(self) -> tuple:
        return (1, 0)  # kDLCPU: consumers get the host copy (see __dlpack__)

    def __reduce__(self):
        # Pickle the values, never the graph: an unevaluated array is evaluated first.
        return (_rebuild, (np.array(self._host()), self._dtype.name))

    def __copy__(self):
        from .devices import resolve_stream
        from .primitives import COPY

        return node(COPY, (self,), self._shape, self._dtype, resolve_stream(None))

    def __deepcopy__(self, memo):
        return self.__copy__()

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError("The truth value of an array with more than one element is ambiguous; "
                             f"this one has shape {self._shape}")
        return bool(self._host())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if self._dtype.kind not in "iub":
            raise TypeError(f"only integer arrays can be used as an index, not {self._dtype.name}")
        return int(self.item())

    def __complex__(self) -> complex:
        return complex(self.item())

    def __len__(self) -> int:
        if not self._shape:
            raise TypeError("len() of unsized (0-d) array")
        return self._shape[0]

    def __iter__(self):
        if not self._shape:
            raise TypeError("iteration over a 0-d array")
        return ArrayIterator(self)

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        from .printing import array_repr

        return array_repr(self)

    def __str__(self) -> str:
        from .printing import array_str

        return array_str(self)



def _eval(arrays, host: bool = False) -> None:
    """Evaluate for a reader that then waits for the data itself (host_copy, or an explicit wait): a GPU result
    need not have finished when this returns. ``host``: the reader reads the data on the host."""
    (_eval_arrays or _bind()[0])(arrays, False, host)


def _bind() -> tuple:
    """``scheduler.eval_arrays`` and ``scheduler.read_eval``, bound on first use: the scheduler imports this module
    (an import statement in ``_eval`` would cost a microsecond per item() or print)."""
    global _eval_arrays, _read_eval
    from .scheduler import eval_arrays as _eval_arrays
    from .scheduler import read_eval as _read_eval

    return _eval_arrays, _read_eval


_eval_arrays = _read_eval = None


def _init_evaluated(a: array, data, dtype: _dt.Dtype) -> None:
    """Make ``a`` an evaluated array holding host ``data``."""
    a._prim = None
    a._inputs = ()
    a._shape = data.shape
    a._dtype = dtype
    a._stream = None
    a._data = data
    a._copies = None
    a._exec = None
    a._seq = 0
    a._siblings = None
    memory.acquire(data)


def from_data(data, dtype: _dt.Dtype) -> array:
    """An evaluated array around backend ``data`` (NumPy or a device array), without copying."""
    a = array.__new__(array)
    a._prim = None
    a._inputs = ()
    a._shape = tuple(data.shape)
    a._dtype = dtype
    a._stream = None
    a._data = data
    a._copies = None
    a._exec = None
    a._seq = 0
    a._siblings = None
    memory.acquire(data)
    return a


def _rebuild(data: np.ndarray, dtype_name: str) -> array:
    return from_data(data, _dt.to_dtype(dtype_name))


def from_dlpack(x) -> array:
    """An array from any object with ``__dlpack__`` (a NumPy array, a CPU PyTorch tensor...), keeping its dtype.

    The values are copied, so later writes to ``x`` do not show through (umx arrays are immutable).

    Args:
        x: the object to import.

    Returns:
        array: an evaluated array.
    """
    if not hasattr(x, "__dlpack__"):
        raise TypeError(f"from_dlpack: {type(x).__name__} does not support the DLPack protocol")
    device = x.__dlpack_device__()[0] if hasattr(x, "__dlpack_device__") else 1
    if device == 1:
        host = np.array(np.from_dlpack(x))
    elif hasattr(x, "__cuda_array_interface__") and hasattr(x, "get"):
        host = np.asarray(x.get())  # a CuPy array: copied to the host once
    else:
        raise ValueError(f"from_dlpack: cannot import data on DLPack device type {device} yet; "
                         "move it to the host first")
    if host.dtype.kind == "c" and host.dtype != np.complex64:
        host = host.astype(np.complex64)
    return from_data(host, _dt.from_numpy(host.dtype))


_created = itertools.count(1)
_new = array.__new__  # bound once: node() is the hot path of every op


def node(prim, inputs: tuple, shape: tuple, dtype: _dt.Dtype, stream) -> array:
    """A new unevaluated array: ``prim`` applied to ``inputs`` on ``stream``. The hot path of every op.

    Until it is scheduled, ``_seq`` holds the node's creation number: the scheduler orders nodes by it.
    """
    a = _new(array)
    a._prim = prim
    a._inputs = inputs
    a._shape = shape
    a._dtype = dtype
    a._stream = stream
    a._data = None
    a._copies = None
    a._exec = None
    a._seq = next(_created)
    a._siblings = None
    return a


def _to_numpy(val):
    """Host data and umx dtype for a Python or NumPy value, by MLX's inference rules."""
    if isinstance(val, np.ndarray) or isinstance(val, np.generic):
        arr = np.asarray(val)
        if arr.dtype == np.float64:
            return arr.astype(np.float32), _dt.float32
        if arr.dtype.kind == "c" and arr.dtype != np.complex64:
            return arr.astype(np.complex64), _dt.complex64
        return np.array(arr), _dt.from_numpy(arr.dtype)  # a copy: the caller may write to its buffer later
    if isinstance(val, bool):
        return np.array(val), _dt.bool_
    if isinstance(val, int):
        if -(2**31) <= val < 2**31:
            return np.array(val, np.int32), _dt.int32
        if -(2**63) <= val < 2**63:
            return np.array(val, np.int64), _dt.int64
        if 0 <= val < 2**64:
            return np.array(val, np.uint64), _dt.uint64
        raise ValueError(f"array: the Python int {val} does not fit in 64 bits")
    if isinstance(val, float):
        return np.array(val, np.float32), _dt.float32
    if isinstance(val, complex):
        return np.array(val, np.complex64), _dt.complex64
    if hasattr(val, "__dlpack__") and not isinstance(val, (list, tuple)) and not hasattr(val, "__array__"):
        return _to_numpy(np.from_dlpack(val))
    if hasattr(val, "__cuda_array_interface__"):
        return _to_numpy(val.get())  # a CuPy array: copied to the host once
    arr = np.array(val)
    if arr.dtype == object:
        raise ValueError("array: could not make an array from a ragged or mixed sequence "
                         f"(got {type(val).__name__})")
    if isinstance(val, (list, tuple)) and _contains_umx(val):
        dts = _umx_dtypes(val)
        dt = dts[0]
        for d in dts[1:]:
            dt = _dt.promote(dt, d)
        return arr.astype(dt.np), dt
    if arr.dtype.kind == "f":
        return arr.astype(np.float32), _dt.float32
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < -(2**31) or arr.max() >= 2**31):
            return arr.astype(np.int64), _dt.int64
        return arr.astype(np.int32), _dt.int32
    if arr.dtype.kind == "c":
        return arr.astype(np.complex64), _dt.complex64
    return arr, _dt.from_numpy(arr.dtype)


def _exact(val) -> bool:
    """Whether NumPy converts ``val`` exactly (no umx arrays inside, no Python ints past int64)."""
    if isinstance(val, (np.ndarray, np.generic, float, complex)):
        return True
    if isinstance(val, (list, tuple)) and not _contains_umx(val):
        try:
            return np.array(val).dtype != object
        except (ValueError, OverflowError):
            return False
    return False


def _contains_umx(val) -> bool:
    for v in val:
        if isinstance(v, array):
            return True
        if isinstance(v, (list, tuple)) and _contains_umx(v):
            return True
    return False


def _umx_dtypes(val) -> list:
    out = []
    for v in val:
        if isinstance(v, array):
            out.append(v.dtype)
        elif isinstance(v, (list, tuple)):
            out.extend(_umx_dtypes(v))
    return out


def _cast_host(data: np.ndarray, dt: _dt.Dtype) -> np.ndarray:
    with np.errstate(all="ignore"):
        out = data.astype(dt.np)
    return round_bf16(np, out) if dt is _dt.bfloat16 else out


class ArrayIterator:
    """Iterates over the first axis of an array, yielding its rows as arrays (what ``iter(a)`` returns)."""

    __slots__ = ("_a", "_i")

    def __init__(self, a: array):
        self._a = a
        self._i = 0

    def __iter__(self):
        return self

    def __next__(self) -> array:
        if self._i >= self._a._shape[0]:
            raise StopIteration
        self._i += 1
        return self._a[self._i - 1]


#: what ops accept where they take an array: umx arrays, Python scalars and sequences, NumPy arrays
ArrayLike = "array | bool | int | float | complex | list | tuple | numpy.ndarray"
