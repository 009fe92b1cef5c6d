"""The array's operators and method forms of ops, attached to ``umx.array`` once the ops exist.

Operators are the public ops themselves, or call them (they are the hottest entry points: one call to the op's fast
path); methods forward to the public op of the same name, so each has one definition and one docstring.
"""

from __future__ import annotations

from ..array import array
from . import elementwise as ew
from . import indexing, layout, matmul, reduction, scan, shape


def _binop(name: str):
    op = getattr(ew, name)  # the public op: its fast path, and errors that name it

    def rev(self, other):
        return op(other, self)

    return op, rev


# primitive name -> the op's public name, for the messages of errors raised by operators
_PUBLIC_NAME = {p: name for name, p in ew._BINARY_NAMES.items()}


def _install() -> None:
    ops = {
        "add": "Add", "sub": "Subtract", "mul": "Multiply", "truediv": "Divide", "floordiv": "FloorDivide",
        "mod": "Remainder", "pow": "Power", "and": "BitwiseAnd", "or": "BitwiseOr", "xor": "BitwiseXor",
        "lshift": "LeftShift", "rshift": "RightShift",
    }
    for dunder, pname in ops.items():
        fwd, rev = _binop(_PUBLIC_NAME[pname])
        setattr(array, f"__{dunder}__", fwd)
        setattr(array, f"__r{dunder}__", rev)
    for dunder, pname in {"eq": "Equal", "ne": "NotEqual", "lt": "Less", "le": "LessEqual", "gt": "Greater",
                          "ge": "GreaterEqual"}.items():
        setattr(array, f"__{dunder}__", _binop(_PUBLIC_NAME[pname])[0])
    for dunder in ("eq", "ne"):  # `a == None` falls back to identity (False), as in MLX, instead of raising
        setattr(array, f"__{dunder}__", _or_not_implemented(getattr(array, f"__{dunder}__")))
    array.__hash__ = lambda self: id(self)
    array.__neg__ = ew.negative  # the op itself: its fast path, one call
    array.__pos__ = lambda self: self
    array.__abs__ = lambda self: ew.abs(self)
    array.__invert__ = lambda self: ew.logical_not(self) if self.dtype.kind == "b" else ew.bitwise_invert(self)
    array.__matmul__ = lambda self, other: matmul.matmul(self, other)
    array.__rmatmul__ = lambda self, other: matmul.matmul(other, self)
    array.__getitem__ = lambda self, key: indexing.getitem(self, key)
    array.__setitem__ = lambda self, key, value: indexing.setitem(self, key, value)
    array.__divmod__ = lambda self, other: (ew.floor_divide(self, other), ew.remainder(self, other))
    array.at = property(lambda self: indexing.ArrayAt(self), doc="Functional updates: ``a.at[idx].add(v)``.")
    array.T = property(lambda self: shape.transpose(self), doc="The array with its axes reversed.")
    array.real = property(lambda self: ew.real(self), doc="The real part.")
    array.imag = property(lambda self: ew.imag(self), doc="The imaginary part.")

    def reshape(self, *shape_, stream=None):
        """``reshape(self, shape)``; the shape may also be given as separate ints."""
        s = shape_[0] if len(shape_) == 1 and not isinstance(shape_[0], int) else shape_
        return shape.reshape(self, s, stream=stream)

    def transpose(self, *axes, stream=None):
        """``transpose(self, axes)``; the axes may also be given as separate ints."""
        a = None if not axes else (axes[0] if len(axes) == 1 and not isinstance(axes[0], int) else axes)
        return shape.transpose(self, a, stream=stream)

    array.reshape = reshape
    array.transpose = transpose
    for name in ("abs", "exp", "log", "log1p", "log2", "log10", "sin", "cos", "sqrt", "rsqrt", "square",
                 "reciprocal", "round", "conj", "sigmoid", "isnan", "isinf", "floor", "ceil"):
        _forward(ew, name)
    for name in ("sum", "prod", "max", "min", "all", "any", "mean", "var", "std", "logsumexp", "argmax",
                 "argmin", "softmax"):
        _forward(reduction, name)
    for name in ("astype", "flatten", "squeeze", "swapaxes", "moveaxis", "split", "view", "unflatten"):
        _forward(shape, name)
    for name in ("cumsum", "cumprod", "cummax", "cummin", "logcumsumexp"):
        _forward(scan, name)
    for name in ("diag", "diagonal"):
        _forward(layout, name)
    array.conjugate = array.conj
    indexing.calibrate()  # setitem's reference baseline, through the operator just installed


def _or_not_implemented(op):
    def cmp(self, other):
        try:
            return op(self, other)
        except TypeError:  # `other` is not array-like: let Python compare identities
            return NotImplemented

    return cmp


def _forward(module, name: str) -> None:
    fn = getattr(module, name)

    def method(self, *args, **kwargs):
        return fn(self, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = fn.__doc__
    setattr(array, name, method)


_install()
