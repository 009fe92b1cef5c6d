"""Elementwise ops: every unary and binary function of MLX, made from the primitive tables, plus ``where``,
``clip``, ``round`` and the compositions (``isclose``-style helpers live with their families)."""

from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..array import _created, _new, alias
from ..devices import _thread
from ..primitives import BINARY, STOP_GRADIENT, UNARY, WHERE, Full, Round
from ._core import _const_cache as _consts
from ._core import array, as_array, broadcast_shapes, cast, describe, node, resolve_stream, scalar

_promote = dt._PROMOTE
_weak = dt.weak_scalar_dtype
_float32 = dt.float32
_bool = dt.bool_
_SCALARS = (bool, int, float, complex)
# Real-only functions (MLX has no complex form): refused at the call, with MLX's ValueError, rather than by the
# kernel.
_REAL_ONLY = frozenset({"Floor", "Ceil", "Trunc", "Erf", "ErfInv", "Expm1", "Sigmoid", "Remainder", "ArcTan2"})
# Functions whose complex form MLX defines through other ops; the complex inputs take _COMPLEX_FORMS below.
_COMPOSED_FOR_COMPLEX = frozenset({"IsPosInf", "IsNegInf", "Degrees", "Radians", "FloorDivide"})
_SHIFTS = ("left_shift", "right_shift")


def _refuse_complex(name: str, *arrays):
    raise ValueError(f"{name}: not supported for complex64, got {describe(*arrays)}")


def _unary(prim, name: str, a, stream):
    if type(a) is not array:
        a = as_array(a, name)
    d = a._dtype
    kind = prim.kind
    st = _thread.resolved.get(id(stream)) or resolve_stream(stream)
    if d.kind == "c":
        if prim.name in _REAL_ONLY:
            _refuse_complex(name, a)
        if prim.name in _COMPOSED_FOR_COMPLEX:
            return _COMPLEX_FORMS[prim.name](a, st)
    if kind == "float":
        if d.kind not in "fc":
            a = cast(a, _float32, st)
            d = _float32
    elif kind == "bool":
        d = _bool
    elif kind == "int" and d.kind not in "iub":
        raise TypeError(f"{name}: needs an integer or bool array, got {describe(a)}")
    elif d.kind == "c" and prim.fn == "absolute":
        d = _float32  # |z| is real, as in MLX
    elif d is _bool and prim.fn in ("negative", "sign"):
        if prim.fn == "sign":
            return a  # 0 and 1 are their own signs (NumPy has no bool loop)
        raise ValueError(f"{name}: not supported for bool arrays, use logical_not; got {describe(a)}")
    return node(prim, (a,), a._shape, d, st)


def _binary(prim, name: str, a, b, stream):
    ta, tb = a.__class__, b.__class__
    if ta is array:
        if tb is array:
            da, db = a._dtype, b._dtype
            d = da if da is db else _promote[(da, db)]
        elif tb is float and a._dtype.kind in "fc":  # the commonest mixed case: array op Python float
            d = a._dtype
            c = _consts.get((b, d))
            b = c if c is not None else scalar(b, d)
        elif tb in _SCALARS:
            d = _weak(b, a._dtype)
            b = scalar(b, d)
        else:
            b = as_array(b, name)
            d = _promote[(a._dtype, b._dtype)]
    elif tb is array:
        if ta in _SCALARS:
            d = _weak(a, b._dtype)
            a = scalar(a, d)
        else:
            a = as_array(a, name)
            d = _promote[(a._dtype, b._dtype)]
    else:
        a = as_array(a, name)
        b = as_array(b, name)
        d = _promote[(a._dtype, b._dtype)]
    st = _thread.resolved.get(id(stream)) or resolve_stream(stream)
    kind = prim.kind
    if kind == "float" and d.kind not in "fc":
        d = _float32
    elif kind == "int" and d.kind not in "iub":
        raise TypeError(f"{name}: needs integer or bool arrays, got {describe(a, b)}")
    elif d.kind == "c" and prim.name in _REAL_ONLY:
        _refuse_complex(name, a, b)
    elif d.kind == "c" and prim.name in _COMPOSED_FOR_COMPLEX:
        prim = BINARY["Divide"]  # MLX's complex floor_divide is the plain quotient: complex numbers have no floor
    elif d is _bool and prim.fn == "subtract":
        prim = BINARY["LogicalXor"]  # as in MLX: True - True is False, False - True is True
    elif d is _bool and prim.fn in _SHIFTS:
        d = dt.uint8  # as in MLX: a shifted bool is a number (True << True is 2)
    if a._dtype is not d:
        a = cast(a, d, st)
    if b._dtype is not d:
        b = cast(b, d, st)
    return node(prim, (a, b), _shape2(a._shape, b._shape, name), _bool if kind == "bool" else d, st)


_broadcasts: dict = {}  # (shape, shape) -> their broadcast shape: a model's ops see few pairs, over and over


def _shape2(sa: tuple, sb: tuple, name: str) -> tuple:
    """The broadcast shape of two operands' shapes; ValueError naming op ``name`` if there is none."""
    if sa == sb or not sb:
        return sa
    if not sa:
        return sb
    shape = _broadcasts.get((sa, sb))
    if shape is None:
        shape = broadcast_shapes(sa, sb, op=name)  # raises for shapes that do not broadcast: never cached
        if len(_broadcasts) > 1024:
            _broadcasts.clear()
        _broadcasts[(sa, sb)] = shape
    return shape


def unary_fast_dtypes(prim) -> dict:
    """Input dtype -> result dtype, for the inputs on which :func:`_unary` passes every check and casts nothing:
    there an op builds its node at once. Mirrors :func:`_unary`'s rules (tests check that the two agree)."""
    out = {}
    for d in dt.ALL:
        if d.kind == "c" and (prim.name in _REAL_ONLY or prim.name in _COMPOSED_FOR_COMPLEX):
            continue
        if prim.kind == "float":
            if d.kind in "fc":
                out[d] = d
        elif prim.kind == "bool":
            out[d] = _bool
        elif prim.kind == "int":
            if d.kind in "iub":
                out[d] = d
        elif d.kind == "c" and prim.fn == "absolute":
            out[d] = _float32
        elif not (d is _bool and prim.fn in ("negative", "sign")):
            out[d] = d
    return out


def _make_unary(pname: str, name: str, np_name: str):
    prim = UNARY[pname]
    fast = unary_fast_dtypes(prim)

    def op(a, /, *, stream=None) -> array:
        # The common case (an array whose dtype needs no cast) in one call: the seed builds 500 of these. The node
        # is made here, as array.node makes it: a call less per op is 5-8% of building a chain.
        if a.__class__ is array:
            d = fast.get(a._dtype)
            if d is not None:
                o = _new(array)
                o._prim = prim
                o._inputs = (a,)
                o._shape = a._shape
                o._dtype = d
                o._stream = _thread.resolved.get(id(stream)) or resolve_stream(stream)
                o._data = o._copies = o._exec = o._siblings = None
                o._seq = next(_created)
                return o
        return _unary(prim, name, a, stream)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"""Element-wise ``{name}``. See ``numpy.{np_name}``.

    Args:
        a (array): input array or scalar.
        stream (Stream | Device | DeviceType, optional): where the op runs; default: the default stream.

    Returns:
        array: the result, with ``a``'s shape.
    """
    return op


def binary_fast_dtypes(prim) -> dict:
    """Operand dtype -> result dtype, for two operands of one dtype on which :func:`_binary` passes every check and
    casts nothing: there an op builds its node at once. Mirrors :func:`_binary`'s rules (tests check that the two
    agree)."""
    out = {}
    for d in dt.ALL:
        if ((prim.kind == "float" and d.kind not in "fc") or (prim.kind == "int" and d.kind not in "iub")
                or (d.kind == "c" and (prim.name in _REAL_ONLY or prim.name in _COMPOSED_FOR_COMPLEX))
                or (d is _bool and prim.fn in ("subtract",) + _SHIFTS)):
            continue
        out[d] = _bool if prim.kind == "bool" else d
    return out


def _make_binary(pname: str, name: str, np_name: str, slow=None):
    """The public op ``name``; ``slow`` (default :func:`_binary`) takes the operands the fast path does not (the
    array's operators pass one that checks them as MLX's operators do)."""
    prim = BINARY[pname]
    slow = slow or _binary
    fast = binary_fast_dtypes(prim)
    # A Python float next to a floating array takes the array's dtype (MLX's weak scalars): no cast either. Not for
    # the logical ops, which read a scalar by its truth value (1e-8 is true, though float16 would round it to 0).
    fast_float = {d: o for d, o in fast.items() if d.kind in "fc"} if slow is not _logical else {}

    def op(a, b, /, *, stream=None) -> array:
        # The common cases in one call: two arrays of one dtype, or a floating array and a Python float.
        ta, tb = a.__class__, b.__class__
        if ta is array:
            if tb is array:
                d = a._dtype
                o = fast.get(d) if d is b._dtype else None
            elif tb is float:
                d = a._dtype
                o = fast_float.get(d)
                if o is not None:
                    c = _consts.get((b, d))  # (zeros are keyed apart, see scalar: a miss, which scalar answers)
                    b = c if c is not None else scalar(b, d)
            else:
                o = None
            if o is not None:  # (the node made as array.node makes it, see _make_unary)
                n = _new(array)
                n._prim = prim
                n._inputs = (a, b)
                n._shape = _shape2(a._shape, b._shape, name)
                n._dtype = o
                n._stream = _thread.resolved.get(id(stream)) or resolve_stream(stream)
                n._data = n._copies = n._exec = n._siblings = None
                n._seq = next(_created)
                return n
        elif ta is float and tb is array:
            d = b._dtype
            o = fast_float.get(d)
            if o is not None:
                c = _consts.get((a, d))
                a = c if c is not None else scalar(a, d)
                st = _thread.resolved.get(id(stream)) or resolve_stream(stream)
                return node(prim, (a, b), _shape2(a._shape, b._shape, name), o, st)
        return slow(prim, name, a, b, stream)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = f"""Element-wise ``{name}`` with NumPy broadcasting and MLX's type promotion. See ``numpy.{np_name}``.

    Args:
        a (array | scalar): first input.
        b (array | scalar): second input.
        stream (Stream | Device | DeviceType, optional): where the op runs; default: the default stream.

    Returns:
        array: the result, of the broadcast shape.
    """
    return op


# public name: primitive name (NumPy's name is the primitive's fn)
_UNARY_NAMES = {
    "abs": "Abs", "negative": "Negative", "sign": "Sign", "square": "Square", "floor": "Floor", "ceil": "Ceil",
    "trunc": "Trunc", "conjugate": "Conjugate", "bitwise_invert": "BitwiseInvert", "logical_not": "LogicalNot",
    "isnan": "IsNan", "isinf": "IsInf", "isfinite": "IsFinite", "isposinf": "IsPosInf", "isneginf": "IsNegInf",
    "exp": "Exp", "expm1": "Expm1", "log": "Log", "log2": "Log2", "log10": "Log10", "log1p": "Log1p",
    "sqrt": "Sqrt", "rsqrt": "Rsqrt", "reciprocal": "Reciprocal", "sin": "Sin", "cos": "Cos", "tan": "Tan",
    "arcsin": "ArcSin", "arccos": "ArcCos", "arctan": "ArcTan", "sinh": "Sinh", "cosh": "Cosh", "tanh": "Tanh",
    "arcsinh": "ArcSinh", "arccosh": "ArcCosh", "arctanh": "ArcTanh", "degrees": "Degrees", "radians": "Radians",
    "sigmoid": "Sigmoid", "erf": "Erf", "erfinv": "ErfInv",
}
_BINARY_NAMES = {
    "add": "Add", "subtract": "Subtract", "multiply": "Multiply", "divide": "Divide", "floor_divide": "FloorDivide",
    "remainder": "Remainder", "power": "Power", "maximum": "Maximum", "minimum": "Minimum", "arctan2": "ArcTan2",
    "logaddexp": "LogAddExp", "equal": "Equal", "not_equal": "NotEqual", "less": "Less", "less_equal": "LessEqual",
    "greater": "Greater", "greater_equal": "GreaterEqual", "logical_and": "LogicalAnd", "logical_or": "LogicalOr",
    "logical_xor": "LogicalXor", "bitwise_and": "BitwiseAnd", "bitwise_or": "BitwiseOr",
    "bitwise_xor": "BitwiseXor", "left_shift": "LeftShift", "right_shift": "RightShift",
}
# MLX's other names for the same functions
_ALIASES = {
    "conj": "conjugate", "arcsin": "asin", "arccos": "acos", "arctan": "atan", "arcsinh": "asinh",
    "arccosh": "acosh", "arctanh": "atanh", "arctan2": "atan2", "power": "pow", "left_shift": "bitwise_left_shift",
    "right_shift": "bitwise_right_shift",
}

_LOGICAL = frozenset({"logical_and", "logical_or"})


def _logical(prim, name: str, a, b, stream):
    """The slow path of ``logical_and`` and ``logical_or``: a scalar is taken as a truth value, as in MLX (no
    overflow check: x or -3 is True)."""
    if a.__class__ in _SCALARS:
        a = bool(a)
    if b.__class__ in _SCALARS:
        b = bool(b)
    return _binary(prim, name, a, b, stream)


__all__ = ["where", "clip", "round", "real", "imag", "positive", "stop_gradient", "true_divide"]
for _name, _p in _UNARY_NAMES.items():
    globals()[_name] = _make_unary(_p, _name, UNARY[_p].fn or _name)
    __all__.append(_name)
for _name, _p in _BINARY_NAMES.items():
    globals()[_name] = _make_binary(_p, _name, BINARY[_p].fn, _logical if _name in _LOGICAL else None)
    __all__.append(_name)
for _name, _alias in _ALIASES.items():
    if _name == "conj":
        globals()["conj"] = globals()["conjugate"]
        __all__.append("conj")
    else:
        globals()[_alias] = globals()[_name]
        __all__.append(_alias)
true_divide = globals()["divide"]


_COMPLEX_INF = complex(np.inf, 0)
_COMPLEX_FORMS = {  # primitive name -> the complex form, fn(a, stream), as MLX computes it
    "IsPosInf": lambda a, st: _binary(BINARY["Equal"], "isposinf", a, _COMPLEX_INF, st),
    "IsNegInf": lambda a, st: _binary(BINARY["Equal"], "isneginf", a, -_COMPLEX_INF, st),
    "Degrees": lambda a, st: _binary(BINARY["Multiply"], "degrees", a, 180 / np.pi, st),
    "Radians": lambda a, st: _binary(BINARY["Multiply"], "radians", a, np.pi / 180, st),
}


def real(a, /, *, stream=None) -> array:
    """The real part of ``a`` (``a`` itself for real dtypes). See ``numpy.real``."""
    a = as_array(a, "real")
    if a._dtype is not dt.complex64:
        return alias(a)
    return node(UNARY["Real"], (a,), a._shape, dt.float32, resolve_stream(stream))


def imag(a, /, *, stream=None) -> array:
    """The imaginary part of ``a`` (zeros for real dtypes). See ``numpy.imag``."""
    a = as_array(a, "imag")
    st = resolve_stream(stream)
    if a._dtype is not dt.complex64:  # exact zeros, also where a is infinite or NaN (as in MLX and NumPy)
        return node(Full(a._shape, 0, a._dtype), (), a._shape, a._dtype, st)
    return node(UNARY["Imag"], (a,), a._shape, dt.float32, st)


def positive(a, /, *, stream=None) -> array:
    """``+a``: the input unchanged."""
    return as_array(a, "positive")


def stop_gradient(a, /, *, stream=None) -> array:
    """``a``, with no gradient flowing through it under the function transforms.

    Args:
        a (array): input.

    Returns:
        array: the same values.
    """
    a = as_array(a, "stop_gradient")
    return node(STOP_GRADIENT, (a,), a._shape, a._dtype, resolve_stream(stream))


def round(a, /, decimals: int = 0, *, stream=None) -> array:  # noqa: A001 (MLX's name)
    """Round to ``decimals`` places, halves to even. See ``numpy.round``.

    Args:
        a (array): input array.
        decimals (int): number of decimal places (default 0).

    Returns:
        array: ``a`` rounded, same dtype.
    """
    a = as_array(a, "round")
    if not isinstance(decimals, (int, np.integer)) or isinstance(decimals, bool):
        raise TypeError(f"round: decimals must be an int, got {type(decimals).__name__}")
    if not -(2**31) <= decimals < 2**31:
        raise ValueError(f"round: decimals {decimals} is out of range")
    if a._dtype.kind in "iub" and decimals >= 0:
        return alias(a)
    if a._dtype is _bool:  # 0 and 1 round to 0 at tens and beyond (as in MLX)
        return node(Full(a._shape, 0, _bool), (), a._shape, _bool, resolve_stream(stream))
    return node(Round(int(decimals)), (a,), a._shape, a._dtype, resolve_stream(stream))


def where(condition, x, y, /, *, stream=None) -> array:
    """Elements of ``x`` where ``condition`` holds, else of ``y``, broadcast together. See ``numpy.where``.

    Args:
        condition (array): a bool array (other dtypes are compared with zero).
        x (array | scalar): values where true.
        y (array | scalar): values where false.

    Returns:
        array: of the broadcast shape and the promoted dtype of ``x`` and ``y``.
    """
    st = resolve_stream(stream)
    c = as_array(condition, "where")
    if type(x) is not array and type(y) is not array:
        x = as_array(x, "where")
    if type(x) is array:
        y = scalar(y, _weak(y, x._dtype)) if type(y) in _SCALARS else as_array(y, "where")
    else:
        x = scalar(x, _weak(x, y._dtype)) if type(x) in _SCALARS else as_array(x, "where")
    d = _promote[(x._dtype, y._dtype)]
    x, y = cast(x, d, st), cast(y, d, st)
    if c._dtype is not _bool:
        c = cast(c, _bool, st)
    shape = broadcast_shapes(c._shape, x._shape, y._shape, op="where")
    return node(WHERE, (c, x, y), shape, d, st)


def clip(a, /, a_min, a_max, *, stream=None) -> array:
    """Limit values to ``[a_min, a_max]``; either bound may be None. See ``numpy.clip``.

    Args:
        a (array): input.
        a_min (array | scalar | None): lower bound.
        a_max (array | scalar | None): upper bound.

    Returns:
        array: the clipped values.
    """
    if a_min is None and a_max is None:
        raise ValueError("clip: a_min and a_max cannot both be None")
    out = as_array(a, "clip")
    if a_min is not None:
        out = _binary(BINARY["Maximum"], "clip", out, a_min, stream)
    if a_max is not None:
        out = _binary(BINARY["Minimum"], "clip", out, a_max, stream)
    return out
