"""Elementwise primitives, declared as data.

Each entry makes one parameterless primitive class. ``fn`` names the NumPy function with the same meaning (CuPy
has the same names), or is None where backends supply their own kernel. ``kind`` is the dtype rule the public op
applies before building the node:

- ``float``: inexact results; integer and bool inputs are cast to float32 first.
- ``same``: the result has the input's (promoted) dtype.
- ``bool``: a predicate; the result is bool.
- ``int``: integer and bool inputs only.
"""

from __future__ import annotations

from .base import Primitive


class Unary(Primitive):
    """An elementwise function of one array."""

    __slots__ = ()
    capture = True
    fn: str | None = None
    kind = "same"


class Binary(Primitive):
    """An elementwise function of two arrays of one dtype, broadcast to one shape."""

    __slots__ = ()
    capture = True
    fn: str | None = None
    kind = "same"


# name: (NumPy function, dtype rule)
UNARY_TABLE = {
    "Abs": ("absolute", "same"),
    "Negative": ("negative", "same"),
    "Sign": ("sign", "same"),
    "Square": ("square", "same"),
    "Floor": ("floor", "same"),
    "Ceil": ("ceil", "same"),
    "Trunc": ("trunc", "same"),
    "Conjugate": ("conjugate", "same"),
    "BitwiseInvert": ("invert", "int"),
    "LogicalNot": ("logical_not", "bool"),
    "IsNan": ("isnan", "bool"),
    "IsInf": ("isinf", "bool"),
    "IsFinite": ("isfinite", "bool"),
    "IsPosInf": ("isposinf", "bool"),
    "IsNegInf": ("isneginf", "bool"),
    "Exp": ("exp", "float"),
    "Expm1": ("expm1", "float"),
    "Log": ("log", "float"),
    "Log2": ("log2", "float"),
    "Log10": ("log10", "float"),
    "Log1p": ("log1p", "float"),
    "Sqrt": ("sqrt", "float"),
    "Rsqrt": (None, "float"),
    "Reciprocal": ("reciprocal", "float"),
    "Sin": ("sin", "float"),
    "Cos": ("cos", "float"),
    "Tan": ("tan", "float"),
    "ArcSin": ("arcsin", "float"),
    "ArcCos": ("arccos", "float"),
    "ArcTan": ("arctan", "float"),
    "Sinh": ("sinh", "float"),
    "Cosh": ("cosh", "float"),
    "Tanh": ("tanh", "float"),
    "ArcSinh": ("arcsinh", "float"),
    "ArcCosh": ("arccosh", "float"),
    "ArcTanh": ("arctanh", "float"),
    "Degrees": ("degrees", "float"),
    "Radians": ("radians", "float"),
    "Sigmoid": (None, "float"),
    "Erf": (None, "float"),
    "ErfInv": (None, "float"),
    "Real": ("real", "same"),
    "Imag": ("imag", "same"),
}

BINARY_TABLE = {
    "Add": ("add", "same"),
    "Subtract": ("subtract", "same"),
    "Multiply": ("multiply", "same"),
    "Divide": ("true_divide", "float"),
    "FloorDivide": ("floor_divide", "same"),
    "Remainder": ("remainder", "same"),
    "Power": ("power", "same"),
    "Maximum": ("maximum", "same"),
    "Minimum": ("minimum", "same"),
    "ArcTan2": ("arctan2", "float"),
    "LogAddExp": ("logaddexp", "float"),
    "Equal": ("equal", "bool"),
    "NotEqual": ("not_equal", "bool"),
    "Less": ("less", "bool"),
    "LessEqual": ("less_equal", "bool"),
    "Greater": ("greater", "bool"),
    "GreaterEqual": ("greater_equal", "bool"),
    "LogicalAnd": ("logical_and", "bool"),
    "LogicalOr": ("logical_or", "bool"),
    "LogicalXor": ("logical_xor", "bool"),
    "BitwiseAnd": ("bitwise_and", "int"),
    "BitwiseOr": ("bitwise_or", "int"),
    "BitwiseXor": ("bitwise_xor", "int"),
    "LeftShift": ("left_shift", "int"),
    "RightShift": ("right_shift", "int"),
}


def _make(base, table) -> dict:
    out = {}
    for name, (fn, kind) in table.items():
        cls = type(name, (base,), {"__slots__": (), "fn": fn, "kind": kind, "__module__": __name__})
        out[name] = cls()  # parameterless: one shared instance
    return out


UNARY = _make(Unary, UNARY_TABLE)
BINARY = _make(Binary, BINARY_TABLE)
globals().update(UNARY)
globals().update(BINARY)


class Round(Unary):
    """Round half to even, to ``decimals`` places."""

    __slots__ = ("decimals",)

    def __init__(self, decimals: int):
        self.decimals = decimals


class Where(Primitive):
    """``where(cond, x, y)``: three inputs broadcast to one shape."""

    __slots__ = ()
    capture = True


WHERE = Where()
