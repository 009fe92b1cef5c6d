"""Data types, their categories and MLX's promotion rules.

A :class:`Dtype` names a storage type. ``bfloat16`` has no NumPy twin: umx stores it as its 16 bits (NumPy's and
CuPy's ``uint16``, two bytes as ``itemsize`` says, the bits ml_dtypes' and torch's bfloat16 hold). Kernels compute on
it in float32 (:func:`widen_bf16`, exact) and round each result back to bfloat16 (:func:`narrow_bf16`, nearest, ties
to even), as MLX does.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = [
    "Dtype", "DtypeCategory", "bool_", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
    "float16", "bfloat16", "float32", "float64", "complex64", "complexfloating", "floating", "inexact",
    "signedinteger", "unsignedinteger", "integer", "number", "generic", "issubdtype", "isdtype", "result_type",
    "can_cast", "finfo", "iinfo",
]


class DtypeCategory(enum.Enum):
    """The abstract kinds of dtype, as ``mx.floating``, ``mx.integer`` and the like."""

    complexfloating = "complexfloating"
    floating = "floating"
    inexact = "inexact"
    signedinteger = "signedinteger"
    unsignedinteger = "unsignedinteger"
    integer = "integer"
    number = "number"
    generic = "generic"

    def __repr__(self) -> str:
        return f"DtypeCategory.{self.name}"  # as MLX prints it


complexfloating = DtypeCategory.complexfloating
floating = DtypeCategory.floating
inexact = DtypeCategory.inexact
signedinteger = DtypeCategory.signedinteger
unsignedinteger = DtypeCategory.unsignedinteger
integer = DtypeCategory.integer
number = DtypeCategory.number
generic = DtypeCategory.generic

# Each category's parents, so that issubdtype is a walk up this tree.
_PARENT = {
    complexfloating: inexact, floating: inexact, inexact: number,
    signedinteger: integer, unsignedinteger: integer, integer: number, number: generic, generic: None,
}


class Dtype:
    """An array's element type. Compare with ``==``; ``size`` is the bytes per element."""

    __slots__ = ("name", "np", "compute", "size", "kind", "category", "rank")

    def __init__(self, name: str, np_type, size: int, kind: str, category, rank: int, compute=None):
        self.name = name
        self.np = np.dtype(np_type)  # storage type in NumPy/CuPy (uint16 for bfloat16: its bits)
        self.compute = np.dtype(compute or np_type)  # the type kernels make values in (float32 for bfloat16)
        self.size = size
        self.kind = kind  # 'b' bool, 'u' unsigned, 'i' signed, 'f' floating, 'c' complex
        self.category = category
        self.rank = rank  # order within the kind, for promotion

    def __repr__(self) -> str:
        # MLX's spelling, which code written for MLX compares and parses (``str(x.dtype).split(".")[-1]``)
        return f"mlx.core.{self.name}"

    def __reduce__(self):
        return (_by_name, (self.name,))

    @property
    def itemsize(self) -> int:
        return self.size


def _by_name(name: str) -> Dtype:
    return _NAMES[name]


bool_ = Dtype("bool", np.bool_, 1, "b", None, 0)
uint8 = Dtype("uint8", np.uint8, 1, "u", unsignedinteger, 0)
uint16 = Dtype("uint16", np.uint16, 2, "u", unsignedinteger, 1)
uint32 = Dtype("uint32", np.uint32, 4, "u", unsignedinteger, 2)
uint64 = Dtype("uint64", np.uint64, 8, "u", unsignedinteger, 3)
int8 = Dtype("int8", np.int8, 1, "i", signedinteger, 0)
int16 = Dtype("int16", np.int16, 2, "i", signedinteger, 1)
int32 = Dtype("int32", np.int32, 4, "i", signedinteger, 2)
int64 = Dtype("int64", np.int64, 8, "i", signedinteger, 3)
float16 = Dtype("float16", np.float16, 2, "f", floating, 0)
bfloat16 = Dtype("bfloat16", np.uint16, 2, "f", floating, 0, np.float32)
float32 = Dtype("float32", np.float32, 4, "f", floating, 1)
float64 = Dtype("float64", np.float64, 8, "f", floating, 2)
complex64 = Dtype("complex64", np.complex64, 8, "c", complexfloating, 0)

ALL = (bool_, uint8, uint16, uint32, uint64, int8, int16, int32, int64,
       float16, bfloat16, float32, float64, complex64)
_NAMES = {d.name: d for d in ALL}
_FROM_NP = {d.np: d for d in ALL if d is not bfloat16}


def from_numpy(np_dtype) -> Dtype:
    """The umx dtype for a NumPy dtype, as ``mx.array`` converts it (float64 stays float64)."""
    d = _FROM_NP.get(np.dtype(np_dtype))
    if d is None:
        if np.dtype(np_dtype).kind == "c":
            return complex64
        raise TypeError(f"dtype {np.dtype(np_dtype)} is not supported by umx")
    return d


def to_dtype(x) -> Dtype:
    """Accept a Dtype, a NumPy dtype or type, or a dtype name."""
    if isinstance(x, Dtype):
        return x
    if isinstance(x, str) and x in _NAMES:
        return _NAMES[x]
    if x is float:
        return float32
    if x is int:
        return int32
    if x is bool:
        return bool_
    if x is complex:
        return complex64
    try:
        return from_numpy(x)
    except TypeError:
        raise TypeError(f"{x!r} is not a umx dtype") from None


def _promote_pair(a: Dtype, b: Dtype) -> Dtype:
    if a is b:
        return a
    ka, kb = a.kind, b.kind
    if ka == "b":
        return b
    if kb == "b":
        return a
    if ka == "c" or kb == "c":
        return complex64
    if ka == "f" and kb == "f":
        if {a, b} == {float16, bfloat16}:
            return float32
        return a if a.rank > b.rank else b
    if ka == "f":
        return a  # a float beats any integer, whatever their sizes (int64 with float16 gives float16)
    if kb == "f":
        return b
    if ka == kb:
        return a if a.rank > b.rank else b
    u, s = (a, b) if ka == "u" else (b, a)
    if u is uint64:
        return float32
    # The smallest signed type that holds both.
    need = max(u.size * 2, s.size)
    return {2: int16, 4: int32, 8: int64}[need]


_PROMOTE = {(a, b): _promote_pair(a, b) for a in ALL for b in ALL}
_INT_BOUNDS = {d: (int(np.iinfo(d.np).min), int(np.iinfo(d.np).max)) for d in ALL if d.kind in "iu"}


def promote(a: Dtype, b: Dtype) -> Dtype:
    """MLX's promotion of two array dtypes."""
    return _PROMOTE[(a, b)]


def weak_scalar_dtype(value, other: Dtype) -> Dtype:
    """The dtype a Python scalar takes next to an array of dtype ``other`` (Python scalars are weak)."""
    if isinstance(value, bool):
        return other
    if isinstance(value, int):
        d = int32 if other is bool_ else other
        bounds = _INT_BOUNDS.get(d)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:  # (MLX's check: NumPy would wrap it)
            raise ValueError(f"Converting {value} to {d.name} would result in overflow.")
        return d
    if isinstance(value, float):
        return other if other.kind in "fc" else float32
    if isinstance(value, complex):
        return complex64
    raise TypeError(f"unsupported scalar {value!r}")


def issubdtype(arg1, arg2) -> bool:
    """Whether ``arg1`` is ``arg2`` or falls under category ``arg2``. See numpy.issubdtype."""
    a, b = arg1, arg2
    if isinstance(a, Dtype) and isinstance(b, Dtype):
        return a is b
    if isinstance(b, Dtype):
        return False
    cat = a.category if isinstance(a, Dtype) else a
    if isinstance(a, Dtype) and a is bool_:
        return b is generic
    while cat is not None:
        if cat is b:
            return True
        cat = _PARENT[cat]
    return False


def isdtype(dtype: Dtype, kind) -> bool:
    """Array API ``isdtype``: ``kind`` is a Dtype, a kind name such as ``'real floating'``, or a tuple of them."""
    if isinstance(kind, tuple):
        return any(isdtype(dtype, k) for k in kind)
    if isinstance(kind, Dtype):
        return dtype is kind
    table = {
        "bool": dtype.kind == "b", "signed integer": dtype.kind == "i", "unsigned integer": dtype.kind == "u",
        "integral": dtype.kind in "iu", "real floating": dtype.kind == "f", "complex floating": dtype.kind == "c",
        "numeric": dtype.kind in "iufc",
    }
    if kind not in table:
        raise ValueError(f"isdtype: unknown kind {kind!r}")
    return table[kind]


def result_type(*arrays_and_dtypes) -> Dtype:
    """The dtype that an op over these arrays, dtypes and scalars gives, by MLX's promotion rules."""
    strong = [x if isinstance(x, Dtype) else x.dtype for x in arrays_and_dtypes
              if isinstance(x, Dtype) or hasattr(x, "dtype")]
    weak = [x for x in arrays_and_dtypes
            if isinstance(x, (bool, int, float, complex)) and not hasattr(x, "dtype")]
    if not strong:
        if not weak:
            raise ValueError("result_type: needs at least one argument")
        strong = [_scalar_dtype(weak[0])]
        weak = weak[1:]
    out = to_dtype(strong[0])
    for d in strong[1:]:
        out = promote(out, to_dtype(d))
    for w in weak:
        out = weak_scalar_dtype(w, out)
    return out


def _scalar_dtype(value) -> Dtype:
    if isinstance(value, bool):
        return bool_
    if isinstance(value, int):
        return int32 if -(2**31) <= value < 2**31 else int64
    if isinstance(value, float):
        return float32
    return complex64


def can_cast(from_, to) -> bool:
    """Whether values of ``from_`` convert to ``to`` without loss, as numpy.can_cast with 'safe'.

    Args:
        from_ (Dtype | array): the source dtype, or an array of it.
        to (Dtype): the target dtype.

    Returns:
        bool: True if every value of ``from_`` is exactly representable in ``to``.
    """
    if not isinstance(from_, (Dtype, type, str, np.dtype)) and hasattr(from_, "dtype"):
        from_ = from_.dtype  # an array
    a, b = to_dtype(from_), to_dtype(to)
    if a is bfloat16 or b is bfloat16:
        # bfloat16 holds 8 significant bits: every 8-bit integer, and itself within the wider floats.
        return a is b or a in (bool_, int8, uint8) or (b in (float32, float64, complex64) and a.kind in "bf")
    return bool(np.can_cast(a.np, b.np, "safe"))


class finfo:
    """Machine limits of a floating dtype: ``min``, ``max``, ``eps``, ``tiny``, ``bits``. See numpy.finfo."""

    def __init__(self, dtype):
        d = to_dtype(dtype)
        if d.kind not in "fc":
            raise ValueError(f"finfo: {d} is not an inexact dtype")
        self.dtype = float32 if d is complex64 else d  # the limits of a complex type are its parts' (NumPy, MLX)
        if d is bfloat16:
            self.bits, self.eps, self.max, self.tiny = 16, 2.0**-7, 3.3895313892515355e38, 1.1754943508222875e-38
        else:
            info = np.finfo(d.np if d.kind == "f" else np.float32)
            self.bits, self.eps, self.max, self.tiny = info.bits, float(info.eps), float(info.max), float(info.tiny)
        self.min = -self.max
        self.smallest_normal = self.tiny
        self.resolution = 10.0 ** -int(-np.log10(self.eps))

    def __repr__(self) -> str:
        return f"finfo(min={self.min:g}, max={self.max:g}, dtype={self.dtype.name})"


class iinfo:
    """Machine limits of an integer dtype: ``min``, ``max``, ``bits``. See numpy.iinfo."""

    def __init__(self, dtype):
        d = to_dtype(dtype)
        if d.kind not in "iu":
            raise ValueError(f"iinfo: {d} is not an integer dtype")
        info = np.iinfo(d.np)
        self.dtype, self.bits, self.min, self.max = d, info.bits, int(info.min), int(info.max)

    def __repr__(self) -> str:
        return f"iinfo(min={self.min}, max={self.max}, dtype={self.dtype.name})"


def round_bf16(xp, x):
    """Float values rounded to bfloat16 precision (nearest, ties to even), as float32: a fused program's
    bfloat16 intermediates, which stay in float32 between its steps (``xp``: NumPy or CuPy)."""
    if x.__class__ is np.ndarray and _ml_bfloat16 is not None and x.size < _BITS_FROM:
        return x.astype(np.float32, copy=False).astype(_ml_bfloat16).astype(np.float32)  # (the common small case)
    return widen_bf16(xp, narrow_bf16(xp, x))


def narrow_bf16(xp, x):
    """bfloat16's storage (uint16 bits) of float values ``x`` (any float dtype; an array or a NumPy scalar):
    float32 rounded to nearest, ties to even; a NaN becomes the quiet NaN of its sign (as ml_dtypes rounds)."""
    if x.__class__ is not np.ndarray:
        if isinstance(x, np.generic):  # a constant: a NumPy scalar again
            return narrow_bf16(np, np.asarray(x))[()]
        if xp is not np:
            return _DEVICE_CONVERSIONS[xp][0](xp.asarray(x, dtype=xp.float32))
        x = np.asarray(x)
    x = x.astype(np.float32, copy=False)  # (float64 too: through float32 first, as MLX converts)
    if _ml_bfloat16 is not None and x.size < _BITS_FROM:
        return x.astype(_ml_bfloat16).view(np.uint16)
    bits = x.view(np.uint32)
    r = bits >> np.uint32(16)
    r &= np.uint32(1)
    r += np.uint32(0x7FFF)
    r += bits
    r >>= np.uint32(16)
    out = r.astype(np.uint16)
    nan = x != x
    if nan.any():  # (rare: a look skips the select)
        out = np.where(nan, ((bits >> np.uint32(16)) & np.uint32(0x8000) | np.uint32(0x7FC0)).astype(np.uint16), out)
    return out


def widen_bf16(xp, bits):
    """The float32 values (exact) of bfloat16 storage ``bits`` (uint16; an array or a NumPy scalar)."""
    if bits.__class__ is not np.ndarray:
        if isinstance(bits, np.generic):  # a constant: a NumPy scalar again
            return widen_bf16(np, np.asarray(bits))[()]
        if xp is not np:
            return _DEVICE_CONVERSIONS[xp][1](bits)
        bits = np.asarray(bits)
    if _ml_bfloat16 is not None and bits.size < _BITS_FROM:
        return bits.view(_ml_bfloat16).astype(np.float32)
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


# Host arrays from this size are converted by bit arithmetic, in fewer passes than ml_dtypes' casts take; smaller
# ones by ml_dtypes (when installed), in fewer calls. Both give the same bits.
_BITS_FROM = 1 << 14
try:  # optional (NumPy is umx's only dependency)
    from ml_dtypes import bfloat16 as _ml_bfloat16
except ImportError:
    _ml_bfloat16 = None

_DEVICE_CONVERSIONS: dict = {}  # a device backend's array module -> its (narrow, widen), see register_bf16_conversions


def register_bf16_conversions(xp, narrow, widen) -> None:
    """Give :func:`narrow_bf16` and :func:`widen_bf16` a device backend's own conversions for arrays of its array
    module ``xp`` (one kernel each, never waited for on the host), as ``narrow(float32 array) -> uint16 array``
    and ``widen(uint16 array) -> float32 array``."""
    _DEVICE_CONVERSIONS[xp] = (narrow, widen)
