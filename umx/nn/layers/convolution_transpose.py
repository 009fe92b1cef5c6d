"""Transposed convolutions over 1, 2 or 3 spatial axes of channels-last inputs (``mx.conv_transpose1d``,
``mx.conv_transpose2d``, ``mx.conv_transpose3d``); weights are ``[out_channels, *kernel_size, in_channels]``."""

from __future__ import annotations

import math

import umx as mx
from umx.nn.layers.base import Module
from umx.nn.layers.convolution import _ntuple, _set_plain


class _ConvTranspose(Module):
    _ndim: int

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, output_padding, bias):
        super().__init__()
        n = self._ndim
        kernel_size = _ntuple(kernel_size, n)
        scale = math.sqrt(1 / (in_channels * math.prod(kernel_size)))
        self.weight = mx.random.uniform(low=-scale, high=scale, shape=(out_channels, *kernel_size, in_channels))
        if bias:
            self.bias = mx.zeros((out_channels,))
        if n == 1:
            self.padding, self.stride, self.output_padding = padding, stride, output_padding
        else:
            _set_plain(self, padding=_ntuple(padding, n), stride=_ntuple(stride, n),
                       output_padding=_ntuple(output_padding, n))
        self.dilation = dilation

    def _extra_repr(self) -> str:
        kernel = self.weight.shape[1:-1]
        return (f"{self.weight.shape[-1]}, {self.weight.shape[0]}, "
                f"kernel_size={kernel[0] if self._ndim == 1 else kernel}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, output_padding={self.output_padding}, "
                f"bias={'bias' in self}")

    def __call__(self, x):
        op = getattr(mx, f"conv_transpose{self._ndim}d")
        y = op(x, self.weight, self.stride, self.padding, self.dilation, self.output_padding)
        return y + self.bias if "bias" in self else y


def _doc(n: int) -> str:
    layout = {1: "``NLC``", 2: "``NHWC``", 3: "``NDHWC``"}[n]
    kind = "int" if n == 1 else "int | tuple"
    return (f"A {n}-dimensional transposed convolution over {layout} inputs.\n\n"
            "    Args:\n"
            "        in_channels (int): the input channels.\n"
            "        out_channels (int): the output channels.\n"
            f"        kernel_size ({kind}): the kernel's size.\n"
            f"        stride ({kind}): the step between input positions in the output. Default: ``1``.\n"
            f"        padding ({kind}): removed from both sides of the output. Default: ``0``.\n"
            f"        dilation ({kind}): the kernel's dilation. Default: ``1``.\n"
            f"        output_padding ({kind}): added to one side of the output. Default: ``0``.\n"
            "        bias (bool): learn a bias. Default: ``True``.\n")


class ConvTranspose1d(_ConvTranspose):
    __doc__ = _doc(1)
    _ndim = 1

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, output_padding: int = 0, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, output_padding, bias)


class ConvTranspose2d(_ConvTranspose):
    __doc__ = _doc(2)
    _ndim = 2

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple, stride: int | tuple = 1,
                 padding: int | tuple = 0, dilation: int | tuple = 1, output_padding: int | tuple = 0,
                 bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, output_padding, bias)


class ConvTranspose3d(_ConvTranspose):
    __doc__ = _doc(3)
    _ndim = 3

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple, stride: int | tuple = 1,
                 padding: int | tuple = 0, dilation: int | tuple = 1, output_padding: int | tuple = 0,
                 bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, output_padding, bias)
