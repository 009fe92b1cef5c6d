"""Convolutions over 1, 2 or 3 spatial axes of channels-last inputs (``mx.conv1d``, ``mx.conv2d``,
``mx.conv3d``); weights are ``[out_channels, *kernel_size, in_channels / groups]``."""

from __future__ import annotations

import math

import umx as mx
from umx.nn.layers.base import Module


def _ntuple(value, n: int) -> tuple:
    return (value,) * n if isinstance(value, int) else tuple(value)


def _set_plain(module: Module, **values) -> None:
    # tuples kept as plain attributes, out of the module's tree of arrays
    for name, value in values.items():
        object.__setattr__(module, name, value)


class _Conv(Module):
    _ndim: int

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias):
        super().__init__()
        if groups <= 0 or in_channels % groups != 0:
            raise ValueError(f"The number of input channels ({in_channels}) must be divisible by the number of "
                             f"groups ({groups})")
        n = self._ndim
        kernel_size = _ntuple(kernel_size, n)
        scale = math.sqrt(1 / (in_channels * math.prod(kernel_size)))
        self.weight = mx.random.uniform(low=-scale, high=scale,
                                        shape=(out_channels, *kernel_size, in_channels // groups))
        if bias:
            self.bias = mx.zeros((out_channels,))
        if n == 1:
            self.padding, self.stride, self.dilation = padding, stride, dilation
        else:
            _set_plain(self, padding=_ntuple(padding, n), stride=_ntuple(stride, n))
            self.dilation = dilation
        self.groups = groups

    def _extra_repr(self) -> str:
        kernel = self.weight.shape[1:-1]
        text = (f"{self.weight.shape[-1] * self.groups}, {self.weight.shape[0]}, "
                f"kernel_size={kernel[0] if self._ndim == 1 else kernel}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, ")
        if self._ndim < 3:
            text += f"groups={self.groups}, "
        return text + f"bias={'bias' in self}"


class Conv1d(_Conv):
    """A 1-dimensional convolution over ``NLC`` inputs.

    Args:
        in_channels (int): the input channels.
        out_channels (int): the output channels.
        kernel_size (int): the kernel's size.
        stride (int): the step between positions. Default: ``1``.
        padding (int): zeros added on both sides. Default: ``0``.
        dilation (int): the kernel's dilation. Default: ``1``.
        groups (int): split the channels into this many independent groups. Default: ``1``.
        bias (bool): learn a bias. Default: ``True``.
    """

    _ndim = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)

    def __call__(self, x):
        y = mx.conv1d(x, self.weight, self.stride, self.padding, self.dilation, self.groups)
        return y + self.bias if "bias" in self else y


class Conv2d(_Conv):
    """A 2-dimensional convolution over ``NHWC`` inputs.

    Args:
        in_channels (int): the input channels.
        out_channels (int): the output channels.
        kernel_size (int | tuple): the kernel's size.
        stride (int | tuple): the step between positions. Default: ``1``.
        padding (int | tuple): zeros added on both sides. Default: ``0``.
        dilation (int | tuple): the kernel's dilation. Default: ``1``.
        groups (int): split the channels into this many independent groups. Default: ``1``.
        bias (bool): learn a bias. Default: ``True``.
    """

    _ndim = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple, stride: int | tuple = 1,
                 padding: int | tuple = 0, dilation: int | tuple = 1, groups: int = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)

    def __call__(self, x):
        y = mx.conv2d(x, self.weight, self.stride, self.padding, self.dilation, self.groups)
        return y + self.bias if "bias" in self else y


class Conv3d(_Conv):
    """A 3-dimensional convolution over ``NDHWC`` inputs.

    Args:
        in_channels (int): the input channels.
        out_channels (int): the output channels.
        kernel_size (int | tuple): the kernel's size.
        stride (int | tuple): the step between positions. Default: ``1``.
        padding (int | tuple): zeros added on both sides. Default: ``0``.
        dilation (int | tuple): the kernel's dilation. Default: ``1``.
        bias (bool): learn a bias. Default: ``True``.
    """

    _ndim = 3

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple, stride: int | tuple = 1,
                 padding: int | tuple = 0, dilation: int | tuple = 1, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, 1, bias)

    def __call__(self, x):
        y = mx.conv3d(x, self.weight, self.stride, self.padding, self.dilation)
        return y + self.bias if "bias" in self else y
