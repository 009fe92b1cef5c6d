"""Derivative rules of the elementwise primitives, declared as data, registered on the primitive classes.

``UNARY_D[name](x, y)`` is ``dy/dx`` for ``y = f(x)``; ``BINARY_D[name]`` is the pair of functions of ``(a, b,
y)`` giving ``dy/da`` and ``dy/db`` (apart: an input that needs no gradient costs no node). A derivative may be a
Python number (1 and -1 cost no node). ``abs``, ``real``, ``imag`` and ``conj`` have rules of their own, declared
at the end. Other primitives in neither table (predicates, bitwise and logical ops) have no gradient: their vjp
gives None, which the walk treats as zero, and their jvp zeros of the output's shape in the tangent's dtype (as
MLX's). As in MLX, rules apply to integer arrays too, and for complex inputs a vjp is the cotangent times the
conjugate derivative (``c * conj(f'(z))``).
"""

from __future__ import annotations

import math

from .. import dtypes as dt
from .. import ops as m
from ..array import array
from ..primitives import BINARY, UNARY, Binary, Round, Unary, Where
from ._registry import rules
from .autodiff import needs_gradient

_LN2 = math.log(2.0)
_LN10 = math.log(10.0)
_ZERO = 0  # piecewise-constant functions: the derivative is zero almost everywhere

UNARY_D = {
    "Negative": lambda x, y: -1,
    "Sign": lambda x, y: _ZERO,
    "Floor": lambda x, y: _ZERO,
    "Ceil": lambda x, y: _ZERO,
    "Trunc": lambda x, y: _ZERO,
    "Square": lambda x, y: 2 * x,
    "Exp": lambda x, y: y,
    "Expm1": lambda x, y: y + 1,
    "Log": lambda x, y: m.reciprocal(x),
    "Log2": lambda x, y: m.reciprocal(x * _LN2),
    "Log10": lambda x, y: m.reciprocal(x * _LN10),
    "Log1p": lambda x, y: m.reciprocal(x + 1),
    "Sqrt": lambda x, y: 0.5 / y,
    "Rsqrt": lambda x, y: -0.5 * y / x,
    "Reciprocal": lambda x, y: -(y * y),
    "Sin": lambda x, y: m.cos(x),
    "Cos": lambda x, y: -m.sin(x),
    "Tan": lambda x, y: 1 + y * y,
    "ArcSin": lambda x, y: m.rsqrt(1 - x * x),
    "ArcCos": lambda x, y: -m.rsqrt(1 - x * x),
    "ArcTan": lambda x, y: m.reciprocal(1 + x * x),
    "Sinh": lambda x, y: m.cosh(x),
    "Cosh": lambda x, y: m.sinh(x),
    "Tanh": lambda x, y: 1 - y * y,
    "ArcSinh": lambda x, y: m.rsqrt(x * x + 1),
    "ArcCosh": lambda x, y: m.rsqrt(x * x - 1),
    "ArcTanh": lambda x, y: m.reciprocal(1 - x * x),
    "Degrees": lambda x, y: 180.0 / math.pi,
    "Radians": lambda x, y: math.pi / 180.0,
    "Sigmoid": lambda x, y: y * (1 - y),
    "Erf": lambda x, y: (2.0 / math.sqrt(math.pi)) * m.exp(-(x * x)),
    "ErfInv": lambda x, y: (math.sqrt(math.pi) / 2.0) * m.exp(y * y),
}

BINARY_D = {
    "Add": (lambda a, b, y: 1, lambda a, b, y: 1),
    "Subtract": (lambda a, b, y: 1, lambda a, b, y: -1),
    "Multiply": (lambda a, b, y: b, lambda a, b, y: a),
    "Divide": (lambda a, b, y: m.reciprocal(b), lambda a, b, y: -y / b),
    # d/db is y * log(a), taken as 0 where a is 0 (the limit for b > 0): log(0) would make it nan.
    "Power": (lambda a, b, y: b * m.power(a, b - 1), lambda a, b, y: y * m.log(m.where(a == 0, 1, a))),
    # Ties send the whole gradient to the second argument, as in MLX (relu's maximum(x, 0) has slope 0 at 0).
    "Maximum": (lambda a, b, y: m.greater(a, b), lambda a, b, y: m.less_equal(a, b)),
    "Minimum": (lambda a, b, y: m.less(a, b), lambda a, b, y: m.greater_equal(a, b)),
    "ArcTan2": (lambda a, b, y: b / (a * a + b * b), lambda a, b, y: -a / (a * a + b * b)),
    "LogAddExp": (lambda a, b, y: m.exp(a - y), lambda a, b, y: m.exp(b - y)),
    "FloorDivide": (lambda a, b, y: _ZERO, lambda a, b, y: _ZERO),
    "Remainder": (lambda a, b, y: 1, lambda a, b, y: -m.floor_divide(a, b)),
}


def unbroadcast(c: array, shape: tuple) -> array:
    """``c`` summed over the axes that broadcasting added to reach its shape from ``shape``."""
    if c._shape == shape:
        return c
    lead = c.ndim - len(shape)
    stretched = tuple(lead + i for i, s in enumerate(shape) if s == 1 and c._shape[lead + i] != 1)
    if not stretched:  # only leading axes added (a bias's gradient): the sum drops them, no reshape after it
        return m.sum(c, axis=tuple(range(lead)))
    c = m.sum(c, axis=tuple(range(lead)) + stretched, keepdims=True)
    return c if c._shape == shape else m.reshape(c, shape)  # (a public reshape to its own shape: an alias node)


def _times(c: array, d):
    """``d * c`` for a derivative ``d`` that may be a number or a bool mask; None for a zero derivative. (In
    that order: complex products round differently the other way round, and MLX's are ``d * c``.)"""
    if not isinstance(d, array):
        if d == 0:
            return None
        if d == 1:
            return c
        if d == -1:
            return -c
        return d * c
    if d._dtype is dt.bool_:
        return m.where(d, c, 0)
    return d * c


def _conj(d):
    """A derivative's conjugate, for the vjp of a complex input."""
    if isinstance(d, array):
        return m.conjugate(d) if d._dtype.kind == "c" else d
    return d.conjugate() if isinstance(d, complex) else d


def _zero_tangent(tangents, out: array) -> list:
    """A function without a derivative: zeros of the output's shape in the (first) tangent's dtype."""
    t = next(t for t in tangents if t is not None)
    return [m.zeros(out._shape, t._dtype)]


def _unary_vjp(self, primals, cotangents, outputs):
    x, = primals
    d = UNARY_D.get(self.name)
    if d is None or x._dtype is dt.bool_:
        return [None]
    dx = d(x, outputs[0])
    if x._dtype.kind == "c":
        dx = _conj(dx)
    g = _times(cotangents[0], dx)
    return [g if g is not None else m.zeros_like(x)]


def _unary_jvp(self, primals, tangents, outputs):
    x, = primals
    d = UNARY_D.get(self.name)
    if d is None or x._dtype is dt.bool_:
        return _zero_tangent(tangents, outputs[0])
    return [_times(tangents[0], d(x, outputs[0]))]


def _abs_vjp(self, primals, cotangents, outputs):
    x, = primals
    if x._dtype is dt.bool_:
        return [None]
    return [_times(cotangents[0], m.sign(x))]  # (|z| is real: its gradient is sign(z), not conjugated)


def _abs_jvp(self, primals, tangents, outputs):
    x, = primals
    if x._dtype is dt.bool_:
        return _zero_tangent(tangents, outputs[0])
    if x._dtype.kind == "c":  # d|z| = Re(conj(sign z) t)
        return [m.real(m.conjugate(m.sign(x)) * tangents[0])]
    return [_times(tangents[0], m.sign(x))]


def _binary_vjp(self, primals, cotangents, outputs):
    a, b = primals
    d = BINARY_D.get(self.name)
    y = outputs[0]
    if d is None or y._dtype is dt.bool_:
        return [None, None]
    c = cotangents[0]
    complex_ = y._dtype.kind == "c"
    out = []
    for x, dx in zip((a, b), d):
        if not needs_gradient(x):
            out.append(None)
            continue
        dx = dx(a, b, y)
        # (a - b's b, summed to a smaller shape: negate the sum, not the cotangent; negation is exact)
        if type(dx) is int and dx == -1 and x._shape != c._shape:
            out.append(-unbroadcast(c, x._shape))
            continue
        g = _times(c, _conj(dx) if complex_ else dx)
        out.append(m.zeros_like(x) if g is None else unbroadcast(g, x._shape))
    return out


def _binary_jvp(self, primals, tangents, outputs):
    a, b = primals
    d = BINARY_D.get(self.name)
    y = outputs[0]
    if d is None or y._dtype is dt.bool_:
        return _zero_tangent(tangents, y)
    total = None
    for t, dx in zip(tangents, d):
        if t is None:
            continue
        g = _times(t, dx(a, b, y))
        if g is not None:
            total = g if total is None else total + g
    return [None if total is None else m.broadcast_to(total, y._shape)]


def _real_vjp(self, primals, cotangents, outputs):
    return [m.astype(cotangents[0], primals[0]._dtype)]


def _imag_vjp(self, primals, cotangents, outputs):
    return [cotangents[0] * 1j]


def _part_jvp(self, primals, tangents, outputs):
    part = m.real if self.name == "Real" else m.imag
    return [part(tangents[0])]


def _round_vjp(self, primals, cotangents, outputs):
    return [m.zeros_like(primals[0])]


def _round_jvp(self, primals, tangents, outputs):
    return [m.zeros_like(outputs[0])]


def _where_vjp(self, primals, cotangents, outputs):
    cond, x, y = primals
    c = cotangents[0]
    dx = unbroadcast(m.where(cond, c, 0), x._shape) if needs_gradient(x) else None
    return [None, dx, unbroadcast(m.where(cond, 0, c), y._shape) if needs_gradient(y) else None]


def _where_jvp(self, primals, tangents, outputs):
    cond = primals[0]
    _, tx, ty = tangents
    out = outputs[0]
    tx = 0 if tx is None else tx
    ty = 0 if ty is None else ty
    return [m.broadcast_to(m.where(cond, tx, ty).astype(out.dtype), out.shape)]


def _conjugate_rule(self, primals, tangents_or_cotangents, outputs):
    # conj is linear over the reals but no multiplication: the (co)tangent is conjugated, as in MLX
    return [m.conjugate(tangents_or_cotangents[0])]


rules(Unary, vjp=_unary_vjp, jvp=_unary_jvp)
rules(type(UNARY["Abs"]), vjp=_abs_vjp, jvp=_abs_jvp)
rules(type(UNARY["Real"]), vjp=_real_vjp, jvp=_part_jvp)
rules(type(UNARY["Imag"]), vjp=_imag_vjp, jvp=_part_jvp)
rules(type(UNARY["Conjugate"]), vjp=_conjugate_rule, jvp=_conjugate_rule)
rules(Binary, vjp=_binary_vjp, jvp=_binary_jvp)
rules(Round, vjp=_round_vjp, jvp=_round_jvp)
rules(Where, vjp=_where_vjp, jvp=_where_jvp)

assert set(UNARY_D) <= set(UNARY) and set(BINARY_D) <= set(BINARY)
