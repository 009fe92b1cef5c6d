"""Reductions over axes: sums, extrema, logical reductions, arg-reductions and normalisations."""

from __future__ import annotations

from .base import Primitive


class Reduce(Primitive):
    """Reduce over ``axes`` (a sorted tuple of non-negative axes), keeping them if ``keepdims``."""

    __slots__ = ("axes", "keepdims")
    capture = True
    fn: str = ""

    def __init__(self, axes: tuple, keepdims: bool):
        self.axes = axes
        self.keepdims = keepdims


class Sum(Reduce):
    __slots__ = ()
    fn = "sum"


class Prod(Reduce):
    __slots__ = ()
    fn = "prod"


class Max(Reduce):
    __slots__ = ()
    fn = "max"


class Min(Reduce):
    __slots__ = ()
    fn = "min"


class All(Reduce):
    __slots__ = ()
    fn = "all"


class Any(Reduce):
    __slots__ = ()
    fn = "any"


class Mean(Reduce):
    __slots__ = ()
    fn = "mean"


class LogSumExp(Reduce):
    """``log(sum(exp(x)))`` computed stably (the maximum is subtracted first)."""

    __slots__ = ()


class Var(Primitive):
    """Variance over ``axes`` with ``ddof`` delta degrees of freedom."""

    __slots__ = ("axes", "keepdims", "ddof")
    capture = True

    def __init__(self, axes: tuple, keepdims: bool, ddof: int):
        self.axes = axes
        self.keepdims = keepdims
        self.ddof = ddof


class ArgReduce(Primitive):
    """Index of the extremum along one ``axis``; the result is uint32."""

    __slots__ = ("axis", "keepdims")
    fn: str = ""

    def __init__(self, axis: int, keepdims: bool):
        self.axis = axis
        self.keepdims = keepdims


class ArgMax(ArgReduce):
    __slots__ = ()
    fn = "argmax"
    capture = True


class ArgMin(ArgReduce):
    __slots__ = ()
    fn = "argmin"
    capture = True


class Softmax(Primitive):
    """``exp(x - max) / sum(exp(x - max))`` over ``axes``."""

    __slots__ = ("axes",)
    capture = True

    def __init__(self, axes: tuple):
        self.axes = axes


class SoftmaxVJP(Primitive):
    """Softmax's gradient from its output ``y`` and the output's cotangent ``c`` (the inputs, in that order):
    ``y * (c - sum(c * y))`` over ``axes``, one pass over each row where it is three kernels in plain ops."""

    __slots__ = ("axes",)
    capture = True

    def __init__(self, axes: tuple):
        self.axes = axes
