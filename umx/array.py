"""The lazy array: a node of the computation graph, and once evaluated, the holder of its data.

An unevaluated array records its primitive, its inputs, its stream, its shape and its dtype. Evaluation (see
``umx.runtime``) fills ``_data`` with the result on the device that computed it and then detaches the node from its
inputs, so that the graph behind it can be freed. Copies of the data at other locations are kept in
``_copies`` (see ``umx.runtime.memory``): arrays are immutable, so a copy never goes stale.

Arrays are immutable, but the Python object is not: ``a[i] = v`` and ``a += b`` make the object ``a`` another node
(:func:`rebind`), and nodes that already read ``a`` keep its old value. Indexing and conversions therefore always
return a new object (:func:`alias` shares the data), so that updating one never changes another.
"""

from __future__ import annotations

import itertools
import sys
from math import prod

import numpy as np

from . import dtypes as _dt
from .devices import resolve_stream
from .primitives import COPY, AsType, Gather
from .printing import array_repr, array_str
from .runtime import memory

__all__ = ["array", "from_dlpack"]

# MLX keeps shape dimensions in 32-bit integers; larger ones are refused where they enter (here and in the ops).
DIM_MIN, DIM_MAX = -(2**31), 2**31 - 1

_FROM_NP = _dt._FROM_NP  # NumPy dtype -> umx dtype, native byte order
_SLOTS = ("_prim", "_inputs", "_shape", "_dtype", "_stream", "_data", "_copies", "_exec", "_seq", "_siblings")


def _host_data(a, d):
    """The data ``d`` of evaluated array ``a`` on the host; a failed kernel's error raised, as seen by this reader
    (``Failure.reraise``: ``synchronize`` then does not raise it again)."""
    reraise = getattr(d, "reraise", None)
    if reraise is not None:
        reraise()
    return memory.host_copy(a)


class array:  # noqa: N801 (MLX's name)
    """An N-dimensional array, evaluated lazily.

    ``mx.array(val, dtype=None)`` makes an array from a Python scalar, a (nested) list or tuple (which may hold
    umx arrays: they are stacked lazily and stay in the graph), a NumPy array, another umx array (sharing its data),
    a bytes-like object (``bytes``, ``bytearray``, ``memoryview``: uint8 for bytes) or any object with
    ``__array__``, ``__dlpack__`` or a DLPack capsule. Python floats become float32, ints int32 (int64 when they do
    not fit), and NumPy float64 arrays become float32, as in MLX.

    Args:
        val: the values.
        dtype (Dtype, optional): the element type; by default inferred as above.
    """

    __slots__ = (*_SLOTS, "__weakref__")

    def __init__(self, val, dtype=None):
        dt = None if dtype is None else _dt.to_dtype(dtype)
        if isinstance(val, array):
            _take(self, alias(val) if dt is None or dt is val._dtype else _astype_node(val, dt))
            return
        if type(val) in (list, tuple) and _contains_umx(val):
            _take(self, _from_nested(val, dt))
            return
        data, src = _to_numpy(val, dt)
        if dt is not None and dt is not src:
            data = _cast_host(data, src, dt)
            src = dt
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
        """The evaluated values as a NumPy array (evaluating and copying to the host if needed); bfloat16's as
        float32, which holds them exactly (NumPy has no bfloat16)."""
        if self._data is None:
            _read_eval(self)
        d = self._data
        if type(d) is not np.ndarray:
            d = np.asarray(_host_data(self, d))
        return d if self._dtype is not _dt.bfloat16 else np.asarray(_dt.widen_bf16(np, d))

    def item(self):
        """The value of a one-element array as a Python scalar."""
        shape = self._shape
        if shape and prod(shape) != 1:  # (a 0-d array, the commonest, skips the product)
            raise ValueError("item: only length-1 arrays can be converted to Python scalars; "
                             f"this one has shape {shape}")
        if self._data is None:  # (_host, inline: this is the path of every loss and count read in a loop)
            _read_eval(self)
        d = self._data
        if type(d) is not np.ndarray:
            d = np.asarray(_host_data(self, d))
        return d.item() if self._dtype is not _dt.bfloat16 else _dt.widen_bf16(np, d).item()

    def tolist(self):
        """The values as nested Python lists (a scalar for a 0-d array)."""
        return self._host().tolist()

    def __array__(self, dtype=None, copy=None):
        """NumPy's conversion (evaluates). ``copy=True`` gives a copy of its own, ``copy=None`` the data itself,
        ``copy=False`` a view of it whose ``base`` keeps this array alive, as MLX's views do. The data is writeable
        when the kernel's result was: writing to it changes this array's values behind umx's back, as in MLX."""
        d = self._host()
        if dtype is not None and np.dtype(dtype) != d.dtype:
            if copy is False:
                raise ValueError(f"__array__: converting {self._dtype.name} to {np.dtype(dtype)} needs a copy")
            return d.astype(dtype)
        if copy:
            return d.copy()
        if copy is None or d.ndim == 0:
            return d
        return np.asarray(_HostView(self, d))  # copy=False: a view that keeps this array alive

    def __buffer__(self, flags):
        """The buffer protocol (Python 3.12 and later: ``memoryview(a)``, ``bytes(a)``): a view of the data that keeps
        this array alive, as ``np.array(a, copy=False)`` is."""
        return memoryview(self.__array__(copy=False))

    def __array_namespace__(self, api_version=None):
        """The array API namespace: the ``umx`` module (array API functions such as ``asarray``, ``isdtype``,
        ``can_cast`` and ``vecdot`` are among its names).

        Args:
            api_version (str, optional): must be None (asking for a version is not supported, as in MLX).

        Returns:
            module: ``umx``.
        """
        if api_version is not None:
            raise ValueError("__array_namespace__: asking for an api_version is not supported")
        return sys.modules[__package__]

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
        unless ``dl_device`` asks for the device the data lives on; bfloat16 leaves as float32, which holds its values
        exactly (NumPy has no bfloat16)."""
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
        # TypeError for anything but one integer (as NumPy's): callers such as bytes() then try other protocols
        if self._dtype.kind not in "iub":
            raise TypeError(f"only integer arrays can be used as an index, not {self._dtype.name}")
        if self._shape and prod(self._shape) != 1:
            raise TypeError(f"only one-element integer arrays can be used as an index; this one has shape "
                            f"{self._shape}")
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
        return array_repr(self)

    def __str__(self) -> str:
        return array_str(self)

    def __format__(self, spec: str) -> str:
        """``f"{a}"`` is ``str(a)``; a format spec (``f"{a:.2f}"``) formats the value of a 0-d array, as MLX does."""
        if not self._shape:
            return format(self.item(), spec)
        if spec:
            raise TypeError(f"unsupported format string passed to array.__format__ (an array of shape {self._shape} "
                            "has no single value to format)")
        return str(self)


class _HostView:
    """What a NumPy view of an array's data is made from: its ``base``, which keeps the array and the buffer alive
    (the array may be rebound to another node later; the buffer stays)."""

    __slots__ = ("__array_interface__", "_owner")

    def __init__(self, owner: array, data: np.ndarray):
        iface = dict(data.__array_interface__)
        iface["data"] = (iface["data"][0], not data.flags.writeable)
        self.__array_interface__ = iface
        self._owner = (owner, data)


def _eval(arrays, host: bool = False) -> None:
    """Evaluate for a reader that then waits for the data itself (host_copy, or an explicit wait): a GPU result
    need not have finished when this returns. ``host``: the reader reads the data on the host."""
    _eval_arrays(arrays, False, host)


def _not_installed(*args, **kwargs):
    raise RuntimeError("umx: the runtime is not installed (import umx, not umx.array alone)")


# Evaluation, installed by the runtime when it is imported (runtime/scheduler.py): this module sits below it and
# does not import it. ``_eval_arrays(arrays, finished, host)``; ``_read_eval(a)``: evaluate ``a`` for a host read.
_eval_arrays = _read_eval = _not_installed
# Stacking a list of arrays (``mx.array([a, b])``), installed by the ops (ops/shape.py).
_stack = _not_installed


def install(eval_arrays=None, read_eval=None, stack=None) -> None:
    """Give this module the runtime's evaluation and the ops' stack (called once each, at import)."""
    global _eval_arrays, _read_eval, _stack
    if eval_arrays is not None:
        _eval_arrays, _read_eval = eval_arrays, read_eval
    if stack is not None:
        _stack = stack


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


def view_of(a: array, data) -> array:
    """An evaluated array around ``data``, a view of evaluated ``a``'s device data made without a node: readers
    are ordered after ``a``'s producer as they are for ``a`` (on a GPU, its kernel may still be running)."""
    v = from_data(data, a._dtype)
    # (with _seq: the producer's task, which a reader on another stream waits for)
    v._stream, v._exec, v._seq = a._stream, a._exec, a._seq
    return v


def _rebuild(data: np.ndarray, dtype_name: str) -> array:
    dtype = _dt.to_dtype(dtype_name)
    if dtype is _dt.bfloat16 and data.dtype != np.uint16:  # (pickled as its values: see __reduce__)
        data = _dt.narrow_bf16(np, data)
    return from_data(data, dtype)


def from_dlpack(x, /, *, copy: bool | None = None) -> array:
    """An array from any object with ``__dlpack__`` (a NumPy array, a CPU PyTorch tensor...) or a DLPack capsule.

    The values are copied, so later writes to ``x`` do not show through (umx arrays are immutable). The dtype is
    kept, except that float64 and complex128 from other libraries become float32 and complex64, as in MLX.

    Args:
        x: the object to import.
        copy (bool, optional): True or None copy; False (never copy) raises ValueError, as umx cannot adopt
            another library's buffer.

    Returns:
        array: an evaluated array.
    """
    if copy is False:
        raise ValueError("from_dlpack: cannot import the data without a copy (copy=False); umx always copies")
    if isinstance(x, array):
        return alias(x)  # umx's own: every dtype kept
    if not hasattr(x, "__dlpack__") and not _is_capsule(x):
        raise TypeError(f"from_dlpack: {type(x).__name__} does not support the DLPack protocol")
    data, dt = _to_numpy(x, None)
    return from_data(data, dt)


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


# -- new objects for old values ---------------------------------------------------------------------------------


def _copy_state(dst: array, src: array) -> None:
    """Make ``dst`` the same node as ``src`` (every field of ``_SLOTS``)."""
    # (the ten stores written out: this runs on every alias and twice per rebind, a += b among them)
    dst._prim, dst._inputs, dst._shape = src._prim, src._inputs, src._shape
    dst._dtype, dst._stream, dst._data = src._dtype, src._stream, src._data
    dst._copies, dst._exec, dst._seq, dst._siblings = src._copies, src._exec, src._seq, src._siblings


#: host data up to this size shares one record of device copies among its aliases (see ``alias``)
_SHARED_COPIES_MAX_BYTES = 64 << 10


def alias(a: array) -> array:
    """A new array object with the value of ``a``: what ``a[...]``, ``mx.array(a)`` and ``mx.asarray(a)`` return.

    Host data is shared (arrays are immutable); anything else becomes a view node of ``a``, so that the new object
    has its own place in the graph. Either way, rebinding one object (``b[0] = 1``) leaves the other alone.
    """
    d = a._data
    if d is not None and (type(d) is np.ndarray or isinstance(d, np.generic)):
        if a._copies is None and type(d) is np.ndarray and d.nbytes <= _SHARED_COPIES_MAX_BYTES:
            # One record of device copies for every alias of this small data: an optimizer's ``lr.astype(dtype)``
            # per parameter, each read on a GPU, then uploads it once, not once per alias. (Large data keeps a
            # record per object: a device's memory pressure drops such copies through the object that made them.)
            a._copies = {}
        b = _new(array)
        _copy_state(b, a)
        b._siblings = None
        return b
    return node(Gather((Ellipsis,)), (a,), a._shape, a._dtype, resolve_stream(None))


def _take(a: array, fresh: array) -> None:
    """Make ``a`` (being initialized) the node or value ``fresh``, which nothing else holds."""
    _copy_state(a, fresh)
    fresh._data = None  # (nothing to release: the data is a's now)


def _astype_node(x: array, dt: _dt.Dtype) -> array:
    return node(AsType(dt), (x,), x._shape, dt, resolve_stream(None))


# -- conversion from other values -------------------------------------------------------------------------------

_NON_UNIFORM = "Initialization encountered non-uniform length."


def dim_outside(shape: tuple) -> int | None:
    """The first dimension of ``shape`` outside the 32-bit range, or None: the one rule for every shape."""
    for s in shape:
        if not DIM_MIN <= s <= DIM_MAX:
            return s
    return None


def _check_shape(shape: tuple) -> None:
    s = dim_outside(shape)
    if s is not None:
        raise OverflowError(f"Shape dimension {s} is outside the supported range [{DIM_MIN}, {DIM_MAX}]. "
                            "MLX currently uses 32-bit integers for shape dimensions.")


def _to_numpy(val, dt: _dt.Dtype | None) -> tuple:
    """Host data and umx dtype for a value that is not a umx array, by MLX's inference rules. With ``dt`` given,
    the data keeps its precision for the caller's cast (float64 is not narrowed to float32 first)."""
    if isinstance(val, (np.ndarray, np.generic)):
        return _from_numpy(np.asarray(val), dt, copy=True)
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
        return (np.array(val, np.float32), _dt.float32) if dt is None else (np.array(val), _dt.float64)
    if isinstance(val, complex):
        return np.array(val, np.complex64), _dt.complex64
    if isinstance(val, (list, tuple)):
        return _from_sequence(val, dt)
    if isinstance(val, (bytes, bytearray, memoryview)):
        return _from_numpy(np.array(memoryview(val)), dt, copy=False)  # bytes are uint8, as in MLX
    if _is_capsule(val):
        val = _Capsule(val)
    if hasattr(val, "__cuda_array_interface__") and hasattr(val, "get"):
        return _from_numpy(np.asarray(val.get()), dt, copy=False)  # a CuPy array: copied to the host once
    if "bfloat16" in str(getattr(val, "dtype", "")) and hasattr(val, "float"):
        host = np.asarray(val.float())  # a PyTorch bfloat16 tensor: NumPy has no bfloat16, float32 holds it exactly
        return _dt.narrow_bf16(np, host), _dt.bfloat16
    if hasattr(val, "__dlpack__") and not hasattr(val, "__array__"):
        try:
            host = np.from_dlpack(val)
        except (RuntimeError, TypeError, BufferError) as e:
            raise ValueError(f"array: cannot import this DLPack data ({e})") from None
        return _from_numpy(host, dt, copy=True)
    try:
        host = np.asarray(val)  # __array__ and the buffer protocol
    except (ValueError, TypeError, RuntimeError) as e:
        raise ValueError(f"array: cannot convert {type(val).__name__} to an array ({e})") from None
    if host.dtype == object:
        raise ValueError(f"array: cannot make an array from {type(val).__name__}")
    return _from_numpy(host, dt, copy=True)


def _from_numpy(arr: np.ndarray, dt: _dt.Dtype | None, copy: bool) -> tuple:
    """Host data and umx dtype for typed data: its dtype is kept, except float64 and complex128 (without ``dt``),
    big-endian data (converted) and ml_dtypes' bfloat16. ``copy``: the data may be the caller's buffer, which the
    caller may write to later, so it is copied."""
    if arr.size > DIM_MAX:
        _check_shape(arr.shape)
    nd = arr.dtype
    d = _FROM_NP.get(nd)  # (native byte order only: a big-endian dtype is not equal to its native twin)
    if d is None:
        if nd.kind not in "biufc":
            if nd.name == "bfloat16" and nd.itemsize == 2:  # ml_dtypes' bfloat16: the same 16 bits
                return np.array(arr.view(np.uint16)), _dt.bfloat16
            raise ValueError(f"array: NumPy dtype {nd} has no umx counterpart")
        if not nd.isnative:
            return _from_numpy(arr.astype(nd.newbyteorder("=")), dt, copy=False)
        if nd.kind == "c":
            return arr.astype(np.complex64), _dt.complex64  # complex128 and longer: MLX's only complex type
        if nd.kind == "f":  # long double
            return (arr.astype(np.float32), _dt.float32) if dt is None else (arr.astype(np.float64), _dt.float64)
        raise ValueError(f"array: NumPy dtype {nd} has no umx counterpart")
    if d is _dt.float64 and dt is None:
        return arr.astype(np.float32), _dt.float32
    return (np.array(arr) if copy else arr), d


def _from_sequence(val, dt: _dt.Dtype | None) -> tuple:
    """Host data and umx dtype for nested lists and tuples of Python numbers."""
    try:
        arr = np.array(val)
    except ValueError:  # NumPy's "inhomogeneous shape"
        raise ValueError(_NON_UNIFORM) from None
    except OverflowError:
        raise ValueError("array: a Python int in the sequence does not fit in 64 bits") from None
    kind = arr.dtype.kind
    if kind == "O":
        raise ValueError(f"{_NON_UNIFORM} (or the sequence holds values other than numbers, or ints beyond 64 bits)")
    if kind not in "biufc":
        raise ValueError(f"array: sequences of {arr.dtype} (e.g. strings) are not supported")
    _check_shape(arr.shape)
    if dt is not None:
        return arr, _dt.from_numpy(arr.dtype)
    if kind == "f":
        return arr.astype(np.float32), _dt.float32
    if kind in "iu" and arr.dtype != np.uint64:
        if arr.size and (arr.min() < -(2**31) or arr.max() >= 2**31):
            return arr.astype(np.int64), _dt.int64
        return arr.astype(np.int32), _dt.int32
    if kind == "c":
        return arr.astype(np.complex64), _dt.complex64
    return arr, _dt.from_numpy(arr.dtype)


def _from_nested(val, dt: _dt.Dtype | None) -> array:
    """Nested lists holding umx arrays, stacked lazily (the arrays stay in the graph, so gradients flow through)."""
    def build(v) -> array:
        if isinstance(v, array):
            return v
        if type(v) in (list, tuple) and _contains_umx(v):
            parts = [build(x) for x in v]
            if any(p._shape != parts[0]._shape for p in parts):
                raise ValueError(_NON_UNIFORM)
            return _stack(parts)
        return array(v)

    out = build(val)
    if dt is not None and dt is not out._dtype:
        out = _astype_node(out, dt)
    return out


class _Capsule:
    """A bare DLPack capsule (``torch.utils.dlpack.to_dlpack``) in the protocol NumPy's from_dlpack reads."""

    __slots__ = ("_capsule",)

    def __init__(self, capsule):
        self._capsule = capsule

    def __dlpack__(self, **kwargs):
        return self._capsule

    def __dlpack_device__(self) -> tuple:
        return (1, 0)  # NumPy refuses a capsule of another device itself


def _is_capsule(x) -> bool:
    return type(x).__name__ == "PyCapsule"


def _contains_umx(val) -> bool:
    for v in val:
        if isinstance(v, array):
            return True
        if isinstance(v, (list, tuple)) and _contains_umx(v):
            return True
    return False


def _cast_host(data: np.ndarray, src: _dt.Dtype, dt: _dt.Dtype) -> np.ndarray:
    """Host ``data`` of umx dtype ``src`` (as stored) converted to ``dt``."""
    if src is _dt.bfloat16:
        data = _dt.widen_bf16(np, data)
    if data.dtype.kind == "c" and dt.kind != "c":
        data = data.real
    with np.errstate(all="ignore"):
        return data.astype(dt.np) if dt is not _dt.bfloat16 else _dt.narrow_bf16(np, data)


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
ArrayLike = array | bool | int | float | complex | list | tuple | np.ndarray
