"""Scans: cumulative sums, products, extrema and log-sum-exps along an axis."""

from __future__ import annotations

from .base import Primitive


class Scan(Primitive):
    """The running ``op`` ('sum', 'prod', 'max', 'min' or 'logaddexp') along ``axis``, from the end when
    ``reverse``, each output including its own element when ``inclusive``."""

    __slots__ = ("op", "axis", "reverse", "inclusive")
    capture = True

    def __init__(self, op: str, axis: int, reverse: bool, inclusive: bool):
        self.op = op
        self.axis = axis
        self.reverse = reverse
        self.inclusive = inclusive
