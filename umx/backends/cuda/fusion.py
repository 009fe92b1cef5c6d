"""Fused regions on the GPU: one generated CuPy ElementwiseKernel per region structure.

The planner (``umx.runtime.fusion``) hands a region as a small program over its leaves. Here each step becomes one line
of CUDA C++ in registers; the kernel is compiled once per program structure (primitives, wiring and dtypes) and
cached, so the seed's 500 exps are one launch after the first eval. CuPy's ElementwiseKernel broadcasts the
leaves to the output shape and takes NumPy scalars (our constants) as scalar arguments.
"""

from __future__ import annotations

from ...dtypes import bfloat16, float16
from ...primitives import AsType, Round, Where
from ...primitives.elementwise import Binary, Unary

C_TYPES = {
    "bool": "bool", "uint8": "unsigned char", "uint16": "unsigned short", "uint32": "unsigned int",
    "uint64": "unsigned long long", "int8": "signed char", "int16": "short", "int32": "int", "int64": "long long",
    "float16": "float16", "bfloat16": "float", "float32": "float", "float64": "double",
}

# Expressions over a (and b); {T} is the C type of the result. Integer and float forms differ where C's
# semantics differ from NumPy's (division, remainder, abs).
_FLOAT_UNARY = {
    "Abs": "fabs({a})", "Negative": "-{a}", "Square": "{a} * {a}", "Floor": "floor({a})", "Ceil": "ceil({a})",
    "Trunc": "trunc({a})", "Exp": "exp({a})", "Expm1": "expm1({a})", "Log": "log({a})", "Log2": "log2({a})",
    "Log10": "log10({a})", "Log1p": "log1p({a})", "Sqrt": "sqrt({a})", "Rsqrt": "rsqrt({a})",
    "Reciprocal": "({T})1 / {a}", "Sin": "sin({a})", "Cos": "cos({a})", "Tan": "tan({a})", "ArcSin": "asin({a})",
    "ArcCos": "acos({a})", "ArcTan": "atan({a})", "Sinh": "sinh({a})", "Cosh": "cosh({a})", "Tanh": "tanh({a})",
    "ArcSinh": "asinh({a})", "ArcCosh": "acosh({a})", "ArcTanh": "atanh({a})",
    "Degrees": "{a} * ({T})57.29577951308232", "Radians": "{a} * ({T})0.017453292519943295",
    # sigmoid as the CPU kernel computes it (in double here): its tails keep their relative precision (2e-9 at
    # -20, where the tanh form gives 0)
    "Sigmoid": "1.0 / (1.0 + exp(-(double){a}))",
    "Erf": "erf({a})", "ErfInv": "erfinv({a})",
    "Sign": "({T})(({a} > 0) - ({a} < 0))", "IsNan": "isnan({a})", "IsInf": "isinf({a})",
    "IsFinite": "isfinite({a})", "IsPosInf": "(isinf({a}) && {a} > 0)", "IsNegInf": "(isinf({a}) && {a} < 0)",
    "LogicalNot": "!{a}",
}
_INT_UNARY = {
    "Abs": "({a} < 0 ? ({T})-{a} : {a})", "Negative": "({T})-{a}", "Square": "({T})({a} * {a})", "Floor": "{a}",
    "Ceil": "{a}", "Trunc": "{a}", "Sign": "({T})(({a} > 0) - ({a} < 0))", "BitwiseInvert": "({T})~{a}",
    "LogicalNot": "!{a}", "IsNan": "false", "IsInf": "false", "IsFinite": "true", "IsPosInf": "false",
    "IsNegInf": "false",
}
_COMMON_BINARY = {
    "Add": "{a} + {b}", "Subtract": "{a} - {b}", "Multiply": "{a} * {b}", "Equal": "{a} == {b}",
    "NotEqual": "{a} != {b}", "Less": "{a} < {b}", "LessEqual": "{a} <= {b}", "Greater": "{a} > {b}",
    "GreaterEqual": "{a} >= {b}", "LogicalAnd": "({a} && {b})", "LogicalOr": "({a} || {b})",
    "LogicalXor": "((bool){a} != (bool){b})",
}
_FLOAT_BINARY = {
    **_COMMON_BINARY, "Divide": "{a} / {b}", "FloorDivide": "floor({a} / {b})",
    "Remainder": "({b} == 0 ? ({T})nan(\"\") : ({T})({a} - floor({a} / {b}) * {b}))", "Power": "pow({a}, {b})",
    "Maximum": "(({a} > {b} || isnan({a})) ? {a} : {b})", "Minimum": "(({a} < {b} || isnan({a})) ? {a} : {b})",
    "ArcTan2": "atan2({a}, {b})",
    "LogAddExp": "({a} == {b} ? {a} + ({T})0.6931471805599453 : "
                 "max({a}, {b}) + log1p(exp(-fabs({a} - {b}))))",
}
# float16's quotient is taken in float and floored before it is rounded (91.125 / 2.3984375 = 37.99, rounded
# first, floored to 38), as the shared kernel computes it
_HALF_BINARY = {
    "FloorDivide": "floor((float){a} / (float){b})",
    "Remainder": "({b} == 0 ? ({T})nan(\"\") : ({T})((float){a} - floor((float){a} / (float){b}) * (float){b}))",
}
_INT_BINARY = {
    **_COMMON_BINARY,
    "FloorDivide": "({b} == 0 ? ({T})0 : ({T})({a} / {b} - ((({a} % {b}) != 0) && (({a} < 0) != ({b} < 0)))))",
    "Remainder": "({b} == 0 ? {a} : ({T})((({a} % {b}) + {b}) % {b}))",
    "Maximum": "({a} > {b} ? {a} : {b})", "Minimum": "({a} < {b} ? {a} : {b})", "BitwiseAnd": "({T})({a} & {b})",
    "BitwiseOr": "({T})({a} | {b})", "BitwiseXor": "({T})({a} ^ {b})", "LeftShift": "({T})({a} << {b})",
    "RightShift": "({T})({a} >> {b})",
}

# bfloat16: loaded from its 16-bit storage, computed in float, rounded after each step (a NaN to the quiet NaN of
# its sign, as on the host), stored as its 16 bits
PREAMBLE = r"""
__device__ inline float umx_round_bf16(float x) {
    unsigned int u = __float_as_uint(x);
    if (isnan(x)) return __uint_as_float((u & 0x80000000u) | 0x7FC00000u);
    u = (u + 0x7FFFu + ((u >> 16) & 1u)) & 0xFFFF0000u;
    return __uint_as_float(u);
}
__device__ inline float umx_bf16_load(unsigned short b) { return __uint_as_float(((unsigned int)b) << 16); }
__device__ inline unsigned short umx_bf16_bits(float x) {
    return (unsigned short)(__float_as_uint(umx_round_bf16(x)) >> 16);
}
"""


#: bfloat16's storage to and from float32, one ElementwiseKernel each (in params, out params, body, name)
BF16_CONVERSIONS = (("float32 x", "uint16 y", "y = umx_bf16_bits(x);", "umx_narrow_bf16"),
                    ("uint16 b", "float32 y", "y = umx_bf16_load(b);", "umx_widen_bf16"))


def expression(prim, in_dtypes: list, out_dtype) -> str | None:
    """The C++ expression template of a primitive over ``{a}``/``{b}``/``{c}``, or None if it cannot fuse."""
    if any(d.kind == "c" for d in in_dtypes) or out_dtype.kind == "c":
        return None
    name = type(prim).__name__
    is_float = in_dtypes[0].kind == "f"
    if isinstance(prim, Where):
        return "({a} ? {b} : {c})"
    if isinstance(prim, AsType):
        return "({a} != 0)" if out_dtype.kind == "b" else "({T}){a}"
    if isinstance(prim, Round):
        return "rint({a})" if prim.decimals == 0 and is_float else None
    if isinstance(prim, Unary):
        return (_FLOAT_UNARY if is_float else _INT_UNARY).get(name)
    if isinstance(prim, Binary):
        if in_dtypes[0] is float16 and name in _HALF_BINARY:
            return _HALF_BINARY[name]
        return (_FLOAT_BINARY if is_float else _INT_BINARY).get(name)
    return None


def steps(leaf_dtypes: list, program, node_dtypes: list, leaves: list | None = None) -> list | None:
    """The lines of CUDA C++ computing ``t0, t1, ...`` (one per step of ``program``) from ``x0, x1, ...`` (the
    leaves' values; ``leaves``: other expressions for them), or None if a step cannot be expressed."""
    dtypes = list(leaf_dtypes) + list(node_dtypes)
    names = (leaves or [f"x{i}" for i in range(len(leaf_dtypes))]) + [f"t{j}" for j in range(len(node_dtypes))]
    lines = []
    for j, ((prim, args), dtype) in enumerate(zip(program, node_dtypes)):
        expr = expression(prim, [dtypes[a] for a in args], dtype)
        if expr is None:
            return None
        t = C_TYPES[dtype.name]
        value = expr.format(T=t, **dict(zip("abc", (names[a] for a in args))))
        if dtype is bfloat16:
            value = f"umx_round_bf16((float)({value}))"
        lines.append(f"{t} t{j} = ({t})({value});")
    return lines


def source(f):
    """(in_params, out_params, body) of the ElementwiseKernel for Fused ``f``, or None if a step cannot fuse.
    Parameters are of the storage types (``uint16`` for bfloat16, read and written through its helpers)."""
    leaf_dtypes = [x._dtype for x in f.leaves]
    loads = [f"umx_bf16_load(x{i})" if d is bfloat16 else f"x{i}" for i, d in enumerate(leaf_dtypes)]
    lines = steps(leaf_dtypes, f.program, [n._dtype for n in f.nodes], loads)
    if lines is None:
        return None
    last = f"t{len(f.nodes) - 1}"
    lines.append(f"out0 = {f'umx_bf16_bits({last})' if f.root._dtype is bfloat16 else last};")
    in_params = ", ".join(f"{x._dtype.np.name} x{i}" for i, x in enumerate(f.leaves))
    out_params = f"{f.root._dtype.np.name} out0"
    for k, p in enumerate(f.sides):  # side outputs (see runtime.fusion.merge): out1, out2, ...
        d = f.nodes[p]._dtype
        lines.append(f"out{k + 1} = {f'umx_bf16_bits(t{p})' if d is bfloat16 else f't{p}'};")
        out_params += f", {d.np.name} out{k + 1}"
    return in_params, out_params, "\n".join(lines)


class KernelCache:
    """Compiled kernels by region structure; None remembers a structure that cannot fuse (or failed to compile:
    ElementwiseKernel compiles at its first call, so the executor reports that with :meth:`refuse`)."""

    def __init__(self, cupy):
        self._cupy = cupy
        self._kernels: dict = {}

    def get(self, f):
        k = self._kernels.get(f.key, False)
        if k is False:
            src = source(f)
            k = None
            if src is not None:
                k = self._cupy.ElementwiseKernel(*src, name=f"umx_fused_{len(self._kernels)}",
                                                 preamble=PREAMBLE)
            self._kernels[f.key] = k
        return k

    def refuse(self, f) -> None:
        """Run regions of ``f``'s structure step by step from now on."""
        self._kernels[f.key] = None
