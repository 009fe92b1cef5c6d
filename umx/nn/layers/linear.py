"""``Identity``, ``Linear`` and ``Bilinear``."""

from __future__ import annotations

import math
from typing import Any

import umx as mx
from umx.nn.layers.base import Module
from umx.nn.layers.quantized import QQLinear, QuantizedLinear


class Identity(Module):
    """A placeholder that returns its input unchanged; it accepts and ignores any constructor arguments."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __call__(self, x: mx.array) -> mx.array:
        return x


class Linear(Module):
    r"""Applies an affine transformation :math:`y = x W^\top + b` to the input.

    ``weight`` (shape ``[output_dims, input_dims]``) and ``bias`` are initialized from
    :math:`\mathcal{U}(-k, k)` with :math:`k = 1 / \sqrt{\text{input\_dims}}`.

    Args:
        input_dims (int): the size of the input's last axis.
        output_dims (int): the size of the output's last axis.
        bias (bool, optional): add a learned bias. Default: ``True``.
    """

    def __init__(self, input_dims: int, output_dims: int, bias: bool = True) -> None:
        super().__init__()
        scale = math.sqrt(1.0 / input_dims)
        self.weight = mx.random.uniform(low=-scale, high=scale, shape=(output_dims, input_dims))
        if bias:
            self.bias = mx.random.uniform(low=-scale, high=scale, shape=(output_dims,))

    def _extra_repr(self) -> str:
        return f"input_dims={self.weight.shape[1]}, output_dims={self.weight.shape[0]}, bias={'bias' in self}"

    def __call__(self, x: mx.array) -> mx.array:
        if "bias" in self:
            return mx.addmm(self["bias"], x, self["weight"].T)
        return x @ self["weight"].T

    def to_quantized(self, group_size: int | None = None, bits: int | None = None, mode: str = "affine",
                     quantize_input: bool = False):
        """A quantized copy of this layer: ``QuantizedLinear``, or ``QQLinear`` with ``quantize_input``."""

        if quantize_input:
            return QQLinear.from_linear(self, group_size, bits, mode)
        return QuantizedLinear.from_linear(self, group_size, bits, mode)


class Bilinear(Module):
    r"""Applies a bilinear transformation :math:`y_i = x_1^\top W_i x_2 + b_i` to two inputs.

    ``weight`` (shape ``[output_dims, input2_dims, input1_dims]``) and ``bias`` are initialized from
    :math:`\mathcal{U}(-k, k)` with :math:`k = 1 / \sqrt{\text{input1\_dims}}`.

    Args:
        input1_dims (int): the size of the first input's last axis.
        input2_dims (int): the size of the second input's last axis.
        output_dims (int): the size of the output's last axis.
        bias (bool, optional): add a learned bias. Default: ``True``.
    """

    def __init__(self, input1_dims: int, input2_dims: int, output_dims: int, bias: bool = True) -> None:
        super().__init__()
        scale = math.sqrt(1.0 / input1_dims)
        self.weight = mx.random.uniform(low=-scale, high=scale, shape=(output_dims, input2_dims, input1_dims))
        if bias:
            self.bias = mx.random.uniform(low=-scale, high=scale, shape=(output_dims,))

    def _extra_repr(self) -> str:
        out, in2, in1 = self.weight.shape
        return f"input1_dims={in1}, input2_dims={in2}, output_dims={out}, bias={'bias' in self}"

    def __call__(self, x1: mx.array, x2: mx.array) -> mx.array:
        out, in2, in1 = self.weight.shape
        lead = x1.shape[:-1]
        x1 = x1.reshape(-1, in1)
        x2 = x2.reshape(-1, 1, in2)
        # (x1 W^T) first: one matmul with all outputs' matrices stacked, then a batched product with x2
        y = (x1 @ self.weight.reshape(out * in2, in1).T).reshape(-1, out, in2).swapaxes(-2, -1)
        y = (x2 @ y).squeeze(1)
        if "bias" in self:
            y = y + self.bias
        return y.reshape(*lead, out)
