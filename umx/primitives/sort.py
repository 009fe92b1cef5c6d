"""Sorting primitives."""

from __future__ import annotations

from .base import Primitive


class ArgSort(Primitive):
    """The indices that sort the input along ``axis`` (stable), as uint32."""

    __slots__ = ("axis",)

    def __init__(self, axis: int):
        self.axis = axis
