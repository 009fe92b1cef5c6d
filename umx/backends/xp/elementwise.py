"""Elementwise kernels: the tables of ``umx.primitives.elementwise``, plus the functions NumPy lacks."""

from __future__ import annotations

import math

from ...primitives import elementwise as ew
from . import kernel, kernel_factory

# NumPy computes these in int8 for bool inputs; the result keeps the inputs' dtype (bool), as the op declared.
_INT8_FOR_BOOL = frozenset({"square", "conjugate", "power", "left_shift", "right_shift"})


def _keep_bool(xp, fn):
    def keep_bool(prim, *args):
        out = fn(*args)
        return out.astype(xp.bool_) if args[0].dtype == xp.bool_ else out

    return keep_bool


#: primitive classes whose kernel is exactly their NumPy ufunc (filled when a table is bound; a class with a
#: kernel of its own never gets here): fused CPU programs may call the ufunc directly, with ``out=``
PLAIN_UFUNC: set = set()


@kernel_factory(*(type(p) for p in ew.UNARY.values() if p.fn))
def _unary_ufunc(xp, cls):
    fn = getattr(xp, cls.fn)
    if cls.fn in _INT8_FOR_BOOL:
        return _keep_bool(xp, fn)
    PLAIN_UFUNC.add(cls)
    return lambda prim, x: fn(x)


@kernel_factory(*(type(p) for p in ew.BINARY.values()))
def _binary_ufunc(xp, cls):
    fn = getattr(xp, cls.fn)
    if cls.fn in _INT8_FOR_BOOL:
        return _keep_bool(xp, fn)
    PLAIN_UFUNC.add(cls)
    return lambda prim, x, y: fn(x, y)


def _widened(xp, x):
    """``x`` in float32 where it is float16, else ``x``: a kernel of several steps computes half precision there
    and rounds once, as MLX's CPU computes its half ops (each step rounded to float16 misses the nearest value)."""
    return x.astype(xp.float32) if x.dtype == xp.float16 else x


@kernel(type(ew.UNARY["Rsqrt"]))
def _rsqrt(xp, prim, x):
    # (float16 rounded twice, the root then its reciprocal, missed the nearest value for a quarter of inputs)
    return xp.reciprocal(xp.sqrt(_widened(xp, x))).astype(x.dtype, copy=False)


@kernel(type(ew.UNARY["Sigmoid"]))
def _sigmoid(xp, prim, x):
    # 1 / (1 + e^-x): both tails keep their relative precision (sigmoid(-20) is 2e-9, not 0 as the tanh form's);
    # e^-x overflows to inf below -88, giving the limit 0
    return xp.reciprocal(xp.exp(-_widened(xp, x)) + 1).astype(x.dtype, copy=False)


@kernel(type(ew.UNARY["Sign"]))
def _sign(xp, prim, x):
    out = xp.sign(x)
    if x.dtype.kind == "f":  # as in MLX (and umx's CUDA kernels): the sign of NaN is 0, not NaN
        out = xp.where(out != out, xp.zeros((), x.dtype), out)
    return out


@kernel(type(ew.UNARY["Erf"]))
def _erf(xp, prim, x):
    return erf(xp, x)


@kernel(type(ew.UNARY["ErfInv"]))
def _erfinv(xp, prim, x):
    return erfinv(xp, x)


@kernel(type(ew.BINARY["LogAddExp"]))
def _logaddexp(xp, prim, x, y):
    return logaddexp_complex(xp, x, y) if x.dtype.kind == "c" else xp.logaddexp(x, y)


def logaddexp_complex(xp, x, y):
    """``log(exp(x) + exp(y))`` of complex arrays (NumPy has no complex loop): the larger operand (by real part,
    then imaginary, as ``maximum`` orders complex numbers) factored out, the imaginary part wrapped to
    ``(-pi, pi]`` (the principal branch of ``log``)."""
    big = xp.maximum(x, y)
    small = xp.where(x == big, y, x)
    out = big + xp.log1p(xp.exp(small - big))
    # an infinite real part: exp(small - big) is NaN (inf - inf), but the sum is the larger term (-inf + -inf
    # too); only two +inf real parts leave the phase undefined (NaN, as MLX)
    edge = (big.real == -math.inf) | ((big.real == math.inf) & (small.real != math.inf))
    out = xp.where(edge, big, out)
    two_pi = 2 * math.pi
    imag = out.imag - two_pi * xp.ceil((out.imag - math.pi) / two_pi)
    return (out.real + 1j * imag).astype(x.dtype)


@kernel(type(ew.BINARY["Power"]))
def _power(xp, prim, x, y):
    if x.dtype.kind not in "iu" or y.dtype.kind == "u":
        return xp.power(x, y)
    # NumPy refuses negative integer exponents; MLX gives 0 for every one (even 1 ** -1)
    neg = y < 0
    out = xp.power(x, xp.where(neg, 0, y).astype(y.dtype))
    return xp.where(neg, xp.zeros_like(out), out)


@kernel(type(ew.BINARY["FloorDivide"]))
def _floor_divide(xp, prim, x, y):
    if x.dtype.kind == "f":
        # MLX's floor of the quotient (1 // 0.1 is 10, inf // 4 is inf), not NumPy's divmod (9 and nan); float16's
        # quotient floored before it is rounded (91.125 / 2.3984375 = 37.99 rounded first gave 38)
        return xp.floor(_widened(xp, x) / _widened(xp, y)).astype(x.dtype, copy=False)
    out = xp.floor_divide(x, y)
    return out.astype(x.dtype, copy=False)  # (bool: NumPy computes in int8)


@kernel(type(ew.BINARY["Remainder"]))
def _remainder(xp, prim, x, y):
    out = xp.remainder(x, y)
    if x.dtype.kind in "iub":
        # as in MLX, an integer x % 0 is x (and x // 0 is 0): x == (x // y) * y + x % y still holds
        out = xp.where(y == 0, x, out)
    return out.astype(x.dtype, copy=False)


@kernel(ew.Round)
def _round(xp, prim, x):
    return xp.round(x, prim.decimals)


@kernel(ew.Where)
def _where(xp, prim, c, x, y):
    return xp.where(c, x, y)


def erf(xp, x):
    """erf within 3 float32 ulps: the Maclaurin series below 1 (exact 0 at 0, full relative precision for tiny
    arguments), ``1 - erfc`` above, erfc from Numerical Recipes' Chebyshev fit (relative error below 1.2e-7).
    Computed in float32 for inputs of at most 32 bits, else in float64; the branches are blended arithmetically
    (NumPy's ``where`` costs as much as the rest)."""
    dt = x.dtype
    w = x.astype(xp.float32 if dt.itemsize <= 4 else xp.float64)
    z = xp.abs(w)
    t = 1 / (1 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    large = xp.copysign(1 - t * xp.exp(poly), w)
    s = xp.minimum(z, 1) ** 2
    series = _ERF_SERIES[-1]
    for c in _ERF_SERIES[-2::-1]:  # Horner's rule in s = x^2
        series = series * s + c
    return (large + (z < 1) * (xp.copysign(xp.minimum(z, 1), w) * series - large)).astype(dt)


# erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1)): 12 terms reach 1e-10 for |x| <= 1
_ERF_SERIES = [2.0 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(12)]


def erfinv(xp, y):
    """Inverse of erf: Giles' single-precision approximation refined by two Newton steps in float64."""
    dt = y.dtype
    y64 = y.astype(xp.float64)
    w = -xp.log((1.0 - y64) * (1.0 + y64))
    small = w < 5.0
    ws = w - 2.5
    p_small = 2.81022636e-08
    for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503, -0.00417768164,
              0.246640727, 1.50140941):
        p_small = c + p_small * ws
    wl = xp.sqrt(xp.maximum(w, 5.0)) - 3.0
    p_large = -0.000200214257
    for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613, 0.00943887047,
              1.00167406, 2.83297682):
        p_large = c + p_large * wl
    x = xp.where(small, p_small, p_large) * y64
    two_over_sqrt_pi = 2.0 / math.sqrt(math.pi)
    for _ in range(2):
        err = erf(xp, x) - y64
        x = x - err / (two_over_sqrt_pi * xp.exp(-x * x))
    x = xp.where(y64 >= 1.0, xp.inf, xp.where(y64 <= -1.0, -xp.inf, x))
    x = xp.where(xp.abs(y64) > 1.0, xp.nan, x)
    return x.astype(dt)


@kernel(type(ew.BINARY["LogicalAnd"]), type(ew.BINARY["LogicalOr"]), type(ew.BINARY["LogicalXor"]))
def _logical(xp, prim, x, y):
    if x.dtype.kind == "c":  # CuPy's logical ufuncs refuse complex: compare with zero first
        x, y = x != 0, y != 0
    return getattr(xp, prim.fn)(x, y)


@kernel(type(ew.UNARY["LogicalNot"]))
def _logical_not(xp, prim, x):
    return x == 0 if x.dtype.kind == "c" else xp.logical_not(x)  # CuPy's logical_not refuses complex
