"""Max and average pooling over 1, 2 or 3 spatial axes of channels-last inputs (``NLC``, ``NHWC``, ``NDHWC``).

Windows that tile the input (stride equal to the kernel, MLX's default) are a reshape of the (padded, cropped)
input and one reduction over the window's axes: one op forward and one backward. Other windows are the strided
slices of the padded input, one per position in the window, stacked on a last axis and reduced over it. Either
way the pooling is made of ops every transform handles, and the elements that tie for a window's max share its
gradient, as in MLX.
"""

from __future__ import annotations

import itertools
import math

import umx as mx
from umx.nn.layers.base import Module


def _tuple(value, n: int, name: str) -> tuple:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{name} must be an int or a tuple of {n} ints, got {value}")
    return value


class _Pool(Module):
    _ndim: int
    _reduce = None  # the reduction of a window's elements, over axes

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        n = self._ndim
        kernel_size = _tuple(kernel_size, n, "kernel_size")
        padding = _tuple(padding, n, "padding")
        if any(p < 0 for p in padding):
            raise ValueError(f"padding must be non-negative, got {padding}")
        # plain attributes, not dict entries: the module's tree holds arrays only
        object.__setattr__(self, "_kernel_size", kernel_size)
        object.__setattr__(self, "_stride", kernel_size if stride is None else _tuple(stride, n, "stride"))
        object.__setattr__(self, "_padding", padding)

    def _extra_repr(self) -> str:
        return f"kernel_size={self._kernel_size}, stride={self._stride}, padding={self._padding}"

    def _pad_value(self, dtype):
        return 0

    def _padded(self, x: mx.array):
        """``(x padded, output sizes)`` after checking the input's rank and the window's fit."""
        n = self._ndim
        if x.ndim != n + 2:
            raise ValueError(f"{type(self).__name__} expects inputs with {n + 2} dimensions (batch, {n} spatial, "
                             f"channels), got shape {x.shape}")
        if any(self._padding):
            pads = [(0, 0)] + [(p, p) for p in self._padding] + [(0, 0)]
            x = mx.pad(x, pads, constant_values=self._pad_value(x.dtype))
        sizes = x.shape[1:-1]
        outs = [(size - k) // s + 1 for size, k, s in zip(sizes, self._kernel_size, self._stride)]
        if any(o <= 0 for o in outs):
            raise ValueError(f"{type(self).__name__}: the window {self._kernel_size} does not fit the padded "
                             f"spatial shape {sizes}")
        return x, outs

    def _tiled(self, x: mx.array, outs: list):
        """The windows' reduction when they tile the input: a reshape that gives each window axes of its own."""
        kernel = self._kernel_size
        if any(o * k != size for o, k, size in zip(outs, kernel, x.shape[1:-1])):  # a remainder no window reads
            x = x[(slice(None), *(slice(0, o * k) for o, k in zip(outs, kernel)))]
        shape = [x.shape[0]]
        for o, k in zip(outs, kernel):
            shape += [o, k]
        x = x.reshape(*shape, x.shape[-1])
        return type(self)._reduce(x, axis=tuple(range(2, 2 * self._ndim + 1, 2)))

    def _windows(self, x: mx.array, outs: list):
        """The padded input's strided slices, one per position in the window."""
        for offset in itertools.product(*(range(k) for k in self._kernel_size)):
            index = tuple(slice(o, o + s * (m - 1) + 1, s) for o, s, m in zip(offset, self._stride, outs))
            yield x[(slice(None), *index)]

    def __call__(self, x):
        x, outs = self._padded(x)
        if self._stride == self._kernel_size:
            return self._finish(self._tiled(x, outs))
        return self._finish(type(self)._reduce(mx.stack(list(self._windows(x, outs)), axis=-1), axis=-1))

    def _finish(self, total):
        return total


class _MaxPool(_Pool):
    _reduce = staticmethod(mx.max)

    def _pad_value(self, dtype):
        if mx.issubdtype(dtype, mx.inexact):
            return -float("inf")
        return False if dtype == mx.bool_ else mx.iinfo(dtype).min


class _AvgPool(_Pool):
    _reduce = staticmethod(mx.sum)

    def __call__(self, x):
        # integer inputs average to float32; the sum is taken in that type so that it cannot overflow
        if not mx.issubdtype(x.dtype, mx.inexact):
            x = x.astype(mx.float32)
        return super().__call__(x)

    def _finish(self, total):
        # padded positions count in the window's size, as PyTorch's default (count_include_pad)
        return total / math.prod(self._kernel_size)


def _pool_class(name: str, base: type, ndim: int, what: str) -> type:
    layout = {1: "``NLC``", 2: "``NHWC``", 3: "``NDHWC``"}[ndim]
    doc = (f"Applies {ndim}-dimensional {what} pooling to a {layout} input.\n\n"
           "    Args:\n"
           f"        kernel_size (int | tuple[int, ...]): the window's size along the {ndim} spatial axes.\n"
           "        stride (int | tuple[int, ...], optional): the step between windows; default ``kernel_size``.\n"
           f"        padding (int | tuple[int, ...]): added on both sides of each spatial axis (with "
           f"{'-inf' if base is _MaxPool else 'zeros'}). Default: ``0``.\n")
    return type(name, (base,), {"_ndim": ndim, "__doc__": doc, "__module__": __name__})


MaxPool1d = _pool_class("MaxPool1d", _MaxPool, 1, "max")
MaxPool2d = _pool_class("MaxPool2d", _MaxPool, 2, "max")
MaxPool3d = _pool_class("MaxPool3d", _MaxPool, 3, "max")
AvgPool1d = _pool_class("AvgPool1d", _AvgPool, 1, "average")
AvgPool2d = _pool_class("AvgPool2d", _AvgPool, 2, "average")
AvgPool3d = _pool_class("AvgPool3d", _AvgPool, 3, "average")
