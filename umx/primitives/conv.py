"""The convolution primitive: every convolution op (conv1d to conv3d, conv_general, the transposed convolutions,
convolve) and every convolution gradient is one ``Convolution`` node."""

from __future__ import annotations

from .base import Primitive


class Convolution(Primitive):
    """A convolution in MLX's layouts: input ``(N, *spatial, C)``, weight ``(O, *kernel, C / groups)``, output
    ``(N, *out, O)``.

    Per spatial axis, the input is dilated (``input_dilation - 1`` zeros between its elements), padded with
    ``padding_lo`` and ``padding_hi`` zeros (a negative padding crops), and the kernel, dilated by
    ``kernel_dilation``, slides over it in steps of ``stride``: ``out[i] = sum_k padded[i * stride + k *
    kernel_dilation] * w[k]`` (cross-correlation; ``flip`` reverses the kernel, a true convolution). Input channels
    and output channels split into ``groups`` groups, each convolved with its own block of the weight.
    """

    __slots__ = ("stride", "padding_lo", "padding_hi", "kernel_dilation", "input_dilation", "groups", "flip")
    capture = False  # products through CuPy's cuBLAS, which refuses capture (the CUDA backend's own capture)

    def __init__(self, stride: tuple, padding_lo: tuple, padding_hi: tuple, kernel_dilation: tuple,
                 input_dilation: tuple, groups: int, flip: bool):
        self.stride = stride
        self.padding_lo = padding_lo
        self.padding_hi = padding_hi
        self.kernel_dilation = kernel_dilation
        self.input_dilation = input_dilation
        self.groups = groups
        self.flip = flip

    def out_size(self, axis: int, size: int, kernel: int) -> int:
        """The output's length along spatial ``axis`` for an input of ``size`` and a kernel of ``kernel`` taps
        (below 1 where the kernel does not fit)."""
        return (self.padded_size(axis, size) - self.kernel_extent(axis, kernel)) // self.stride[axis] + 1

    def padded_size(self, axis: int, size: int) -> int:
        """The input's length along spatial ``axis`` once dilated and padded."""
        dilated = (size - 1) * self.input_dilation[axis] + 1 if size else 0
        return dilated + self.padding_lo[axis] + self.padding_hi[axis]

    def kernel_extent(self, axis: int, kernel: int) -> int:
        """The span of a kernel of ``kernel`` taps along spatial ``axis`` once dilated."""
        return (kernel - 1) * self.kernel_dilation[axis] + 1
