"""Quantized layers (``QuantizedLinear``, ``QuantizedEmbedding``, ``QQLinear``) and ``quantize``, which swaps a
model's layers for them. Weights are packed by ``mx.quantize`` and used through ``mx.quantized_matmul``,
``mx.dequantize`` and ``mx.qqmm``."""

from __future__ import annotations

import math
from collections.abc import Callable

import umx as mx
from umx.nn.layers.base import Module
from umx.utils import tree_map_with_path

# mode -> (default group size, default bits), as mx.quantize
_DEFAULTS = {"affine": (64, 4), "mxfp4": (32, 4), "mxfp8": (32, 8), "nvfp4": (16, 4)}


def _defaults(mode: str, group_size: int | None, bits: int | None) -> tuple[int, int]:
    if mode not in _DEFAULTS:
        raise ValueError(f"Unknown quantization mode {mode!r}; expected one of {list(_DEFAULTS)}")
    default_group, default_bits = _DEFAULTS[mode]
    return group_size or default_group, bits or default_bits


def _set_quantized(layer: Module, weight: mx.array) -> None:
    """Quantize ``weight`` into the layer's ``weight``, ``scales`` and (affine mode) ``biases``."""
    layer.weight, layer.scales, *biases = mx.quantize(weight, layer.group_size, layer.bits, mode=layer.mode)
    if biases:
        layer.biases = biases[0]
    elif "biases" in layer:
        del layer.biases


def _init_quantized_linear(layer: Module, input_dims: int, shape: tuple, bias_dims: int | None,
                           group_size: int | None, bits: int | None, mode: str) -> None:
    """Set up a quantized linear layer (``QuantizedLinear`` and the sharded ones): a random weight of ``shape``
    for ``input_dims`` inputs, quantized, a zero bias of ``bias_dims`` (None: no bias), all frozen."""
    layer.group_size, layer.bits = _defaults(mode, group_size, bits)
    layer.mode = mode
    scale = math.sqrt(1 / input_dims)
    _set_quantized(layer, mx.random.uniform(low=-scale, high=scale, shape=shape))
    if bias_dims is not None:
        layer.bias = mx.zeros((bias_dims,))
    layer.freeze()


class QuantizedLinear(Module):
    """:class:`Linear` with a quantized weight (frozen: not in ``trainable_parameters``).

    Args:
        input_dims (int): the size of the input's last axis.
        output_dims (int): the size of the output's last axis.
        bias (bool): add a bias. Default: ``True``.
        group_size (int, optional): elements per scale; default the mode's (64 for ``'affine'``).
        bits (int, optional): bits per element; default the mode's (4 for ``'affine'``).
        mode (str): ``'affine'``, ``'mxfp4'``, ``'mxfp8'`` or ``'nvfp4'`` (see ``mx.quantize``).
            Default: ``'affine'``.
    """

    def __init__(self, input_dims: int, output_dims: int, bias: bool = True, group_size: int | None = None,
                 bits: int | None = None, mode: str = "affine"):
        super().__init__()
        _init_quantized_linear(self, input_dims, (output_dims, input_dims), output_dims if bias else None,
                               group_size, bits, mode)

    def _extra_repr(self) -> str:
        out_dims, packed = self.weight.shape
        return (f"input_dims={packed * 32 // self.bits}, output_dims={out_dims}, bias={'bias' in self}, "
                f"group_size={self.group_size}, bits={self.bits}, mode={self.mode}")

    def __call__(self, x):
        x = mx.quantized_matmul(x, self["weight"], scales=self["scales"], biases=self.get("biases"), transpose=True,
                                group_size=self.group_size, bits=self.bits, mode=self.mode)
        return x + self["bias"] if "bias" in self else x

    @classmethod
    def from_linear(cls, linear_layer: Module, group_size: int | None = None, bits: int | None = None,
                    mode: str = "affine") -> QuantizedLinear:
        """A :class:`QuantizedLinear` with ``linear_layer``'s weight quantized (and its bias)."""
        output_dims, input_dims = linear_layer.weight.shape
        layer = cls(input_dims, output_dims, False, group_size, bits, mode)
        _set_quantized(layer, linear_layer.weight)
        if "bias" in linear_layer:
            layer.bias = linear_layer.bias
        return layer


class QuantizedEmbedding(Module):
    """:class:`Embedding` with a quantized table (frozen).

    Args:
        num_embeddings (int): the number of vectors.
        dims (int): the size of each vector.
        group_size, bits, mode: as :class:`QuantizedLinear`.
    """

    def __init__(self, num_embeddings: int, dims: int, group_size: int | None = None, bits: int | None = None,
                 mode: str = "affine"):
        super().__init__()
        self.group_size, self.bits = _defaults(mode, group_size, bits)
        self.mode = mode
        self.num_embeddings = num_embeddings
        self.dims = dims
        _set_quantized(self, mx.random.normal(shape=(num_embeddings, dims), scale=math.sqrt(1 / dims)))
        self.freeze()

    def _extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.dims}, group_size={self.group_size}, bits={self.bits}, "
                f"mode={self.mode}")

    def __call__(self, x):
        rows = x.flatten()
        biases = self.get("biases")
        out = mx.dequantize(self["weight"][rows], scales=self["scales"][rows],
                            biases=None if biases is None else biases[rows], group_size=self.group_size,
                            bits=self.bits, mode=self.mode)
        return out.reshape(*x.shape, -1)

    def as_linear(self, x):
        """Use the quantized table as a linear layer without bias, ``x @ weight.T``."""
        return mx.quantized_matmul(x, self["weight"], scales=self["scales"], biases=self.get("biases"),
                                   transpose=True, group_size=self.group_size, bits=self.bits, mode=self.mode)

    @classmethod
    def from_embedding(cls, embedding_layer: Module, group_size: int | None = None, bits: int | None = None,
                       mode: str = "affine") -> QuantizedEmbedding:
        """A :class:`QuantizedEmbedding` with ``embedding_layer``'s table quantized."""
        num_embeddings, dims = embedding_layer.weight.shape
        layer = cls(num_embeddings, dims, group_size, bits, mode)
        _set_quantized(layer, embedding_layer.weight)
        return layer


class QQLinear(Module):
    """A linear layer without bias that quantizes its input as well as its weight (``mx.qqmm``).

    In training mode the weight is kept in full precision and quantized on the fly, so it gets gradients; in
    evaluation mode (``eval()``) it is stored quantized, with its ``scales``.

    Args:
        input_dims (int): the size of the input's last axis.
        output_dims (int): the size of the output's last axis.
        group_size (int, optional): elements per scale; default the mode's.
        bits (int, optional): bits per element; default the mode's.
        mode (str): ``'nvfp4'`` or ``'mxfp8'``. Default: ``'nvfp4'``.
    """

    def __init__(self, input_dims: int, output_dims: int, group_size: int | None = None, bits: int | None = None,
                 mode: str = "nvfp4"):
        super().__init__()
        if mode not in ("nvfp4", "mxfp8"):
            raise ValueError(f"QQLinear supports the modes 'nvfp4' and 'mxfp8', got {mode!r}")
        self.group_size, self.bits = _defaults(mode, group_size, bits)
        self.mode = mode
        scale = math.sqrt(1 / input_dims)
        self.weight = mx.random.uniform(low=-scale, high=scale, shape=(output_dims, input_dims))

    def _extra_repr(self) -> str:
        out_dims, in_dims = self.weight.shape
        if "scales" in self:
            in_dims = in_dims * 32 // self.bits
        return (f"input_dims={in_dims}, output_dims={out_dims}, group_size={self.group_size}, bits={self.bits}, "
                f"mode={self.mode}")

    def quantize(self) -> None:
        """Store the weight quantized, with its ``scales`` (what ``eval()`` does); nothing if it already is."""
        if "scales" not in self:
            _set_quantized(self, self.weight)

    def dequantize(self) -> None:
        """Store the weight in full precision again (what ``train()`` does); nothing if it already is."""
        if "scales" in self:
            self.weight = mx.dequantize(self.weight, self.scales, group_size=self.group_size, bits=self.bits,
                                        mode=self.mode)
            del self.scales

    def _set_training_mode(self, mode: bool) -> None:
        super()._set_training_mode(mode)
        if mode:
            self.dequantize()
        else:
            self.quantize()

    def __call__(self, x):
        return mx.qqmm(x, self["weight"], scales=self.get("scales"), group_size=self.group_size, bits=self.bits,
                       mode=self.mode)

    @classmethod
    def from_linear(cls, linear_layer: Module, group_size: int | None = None, bits: int | None = None,
                    mode: str = "nvfp4") -> QQLinear:
        """A :class:`QQLinear` with ``linear_layer``'s weight (which must have no bias)."""
        if "bias" in linear_layer:
            raise ValueError("QQLinear does not support a bias; quantize a Linear layer made with bias=False")
        output_dims, input_dims = linear_layer.weight.shape
        layer = cls(input_dims, output_dims, group_size, bits, mode)
        layer.weight = linear_layer.weight
        if not linear_layer.training:
            layer.eval()
        return layer


def quantize(model: Module, group_size: int | None = None, bits: int | None = None, *, mode: str = "affine",
             quantize_input: bool = False,
             class_predicate: Callable[[str, Module], bool | dict] | None = None) -> None:
    """Replace, in place, the leaf modules of ``model`` that have a ``to_quantized`` method (``Linear`` and
    ``Embedding``) by their quantized versions.

    Args:
        model (Module): the model.
        group_size (int, optional): elements per scale; default the mode's.
        bits (int, optional): bits per element; default the mode's.
        mode (str): the quantization mode (see ``mx.quantize``). Default: ``'affine'``.
        quantize_input (bool): quantize activations too (``QQLinear``; ``'nvfp4'`` and ``'mxfp8'`` modes and
            linear layers only). Default: ``False``.
        class_predicate (Callable, optional): ``class_predicate(path, module)`` returns whether to quantize
            the module, or a dict of arguments for its ``to_quantized``; default: every module with a
            ``to_quantized`` method.
    """
    predicate = class_predicate or (lambda _, m: hasattr(m, "to_quantized"))

    def maybe_quantize(path, module):
        chosen = predicate(path, module)
        if not chosen:
            return module
        if not hasattr(module, "to_quantized"):
            raise ValueError(f"Unable to quantize model of type {type(module)}")
        if isinstance(chosen, bool):
            kwargs = {"group_size": group_size, "bits": bits, "mode": mode, "quantize_input": quantize_input}
        elif isinstance(chosen, dict):
            kwargs = chosen
        else:
            raise ValueError("class_predicate must return a bool or a dict of parameters for to_quantized")
        return module.to_quantized(**kwargs)

    leaves = tree_map_with_path(maybe_quantize, model.leaf_modules(), is_leaf=Module.is_module)
    model.update_modules(leaves)
