"""``MultiHeadAttention`` and the transformer of "Attention Is All You Need": encoder and decoder layers, their
stacks, and ``Transformer``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import umx as mx
from umx.nn.layers.activations import relu
from umx.nn.layers.base import Module
from umx.nn.layers.dropout import Dropout
from umx.nn.layers.linear import Linear
from umx.nn.layers.normalization import LayerNorm
from umx.nn.utils import checkpoint


class MultiHeadAttention(Module):
    r"""Multi-head attention: queries, keys and values are projected, split into ``num_heads`` heads, attended
    with ``mx.fast.scaled_dot_product_attention`` (scale :math:`1/\sqrt{d_{head}}`), joined and projected.

    Args:
        dims (int): the size of the projected queries and keys (and the number of heads times their size).
        num_heads (int): the number of heads; must divide ``dims``.
        query_input_dims (int, optional): the queries' input size; default ``dims``.
        key_input_dims (int, optional): the keys' input size; default ``dims``.
        value_input_dims (int, optional): the values' input size; default ``key_input_dims``.
        value_dims (int, optional): the size of the projected values; default ``dims``.
        value_output_dims (int, optional): the output size; default ``dims``.
        bias (bool): projections with biases. Default: ``False``.

    Call ``attention(queries, keys, values, mask=None)``; ``mask`` is an additive or boolean array that
    broadcasts to ``[B, heads, L_q, L_k]`` (or ``'causal'``).
    """

    def __init__(self, dims: int, num_heads: int, query_input_dims: int | None = None,
                 key_input_dims: int | None = None, value_input_dims: int | None = None,
                 value_dims: int | None = None, value_output_dims: int | None = None, bias: bool = False):
        super().__init__()
        if dims % num_heads != 0:
            raise ValueError("The input feature dimensions should be divisible by the number of heads "
                             f"({dims} % {num_heads}) != 0")
        query_input_dims = query_input_dims or dims
        key_input_dims = key_input_dims or dims
        value_input_dims = value_input_dims or key_input_dims
        value_dims = value_dims or dims
        value_output_dims = value_output_dims or dims
        self.num_heads = num_heads
        self.query_proj = Linear(query_input_dims, dims, bias=bias)
        self.key_proj = Linear(key_input_dims, dims, bias=bias)
        self.value_proj = Linear(value_input_dims, value_dims, bias=bias)
        self.out_proj = Linear(value_dims, value_output_dims, bias=bias)

    def __call__(self, queries, keys, values, mask=None):
        heads = self.num_heads

        def split(x):  # [B, L, heads * d] -> [B, heads, L, d]
            return mx.unflatten(x, -1, (heads, -1)).swapaxes(-3, -2)

        queries = split(self.query_proj(queries))
        keys = split(self.key_proj(keys))
        values = split(self.value_proj(values))
        scale = math.sqrt(1 / queries.shape[-1])
        out = mx.fast.scaled_dot_product_attention(queries, keys, values, scale=scale, mask=mask)
        return self.out_proj(out.swapaxes(-3, -2).flatten(-2, -1))

    @staticmethod
    def create_additive_causal_mask(N: int, dtype: mx.Dtype = mx.float32):
        """An ``[N, N]`` additive mask that hides later positions: 0 on and below the diagonal, the dtype's most
        negative finite value above it."""
        indices = mx.arange(N)
        mask = indices[:, None] < indices[None]
        return mask.astype(dtype) * mx.finfo(dtype).min


class TransformerEncoderLayer(Module):
    """Self-attention and a two-layer MLP, each in a residual branch with layer normalization (before the
    branch with ``norm_first``, after the sum otherwise).

    Args:
        dims (int): the model's feature size.
        num_heads (int): the number of attention heads.
        mlp_dims (int, optional): the MLP's hidden size; default ``4 * dims``.
        dropout (float): dropout after attention and in the MLP. Default: ``0.0``.
        activation (Callable): the MLP's activation. Default: :func:`relu`.
        norm_first (bool): normalize before each branch. Default: ``True``.
    """

    def __init__(self, dims: int, num_heads: int, mlp_dims: int | None = None, dropout: float = 0.0,
                 activation: Callable[[Any], Any] = relu, norm_first: bool = True):
        super().__init__()
        mlp_dims = mlp_dims or dims * 4
        self.attention = MultiHeadAttention(dims, num_heads)
        self.ln1 = LayerNorm(dims)
        self.ln2 = LayerNorm(dims)
        self.linear1 = Linear(dims, mlp_dims)
        self.linear2 = Linear(mlp_dims, dims)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = activation
        self.norm_first = norm_first

    def _mlp(self, x):
        return self.linear2(self.dropout2(self.activation(self.linear1(x))))

    def __call__(self, x, mask):
        if self.norm_first:
            y = self.ln1(x)
            x = x + self.dropout1(self.attention(y, y, y, mask))
            return x + self._mlp(self.ln2(x))
        x = self.ln1(x + self.dropout1(self.attention(x, x, x, mask)))
        return self.ln2(x + self._mlp(x))


class TransformerEncoder(Module):
    """A stack of :class:`TransformerEncoderLayer` followed by a layer normalization.

    Args:
        num_layers (int): the number of layers.
        dims, num_heads, mlp_dims, dropout, activation, norm_first: as :class:`TransformerEncoderLayer`.
        checkpoint (bool): recompute each layer in the backward pass instead of keeping its intermediates
            (``nn.utils.checkpoint``). Default: ``False``.
    """

    def __init__(self, num_layers: int, dims: int, num_heads: int, mlp_dims: int | None = None,
                 dropout: float = 0.0, activation=relu, norm_first: bool = True, checkpoint: bool = False):
        super().__init__()
        self.layers = [TransformerEncoderLayer(dims, num_heads, mlp_dims, dropout, activation, norm_first)
                       for _ in range(num_layers)]
        self.ln = LayerNorm(dims)
        self.checkpoint = checkpoint

    def __call__(self, x, mask):
        for layer in self.layers:
            x = (checkpoint(layer) if self.checkpoint else layer)(x, mask)
        return self.ln(x)


class TransformerDecoderLayer(Module):
    """Self-attention, attention to the encoder's output (``memory``) and a two-layer MLP, each in a residual
    branch with layer normalization.

    Args:
        dims, num_heads, mlp_dims, dropout, activation, norm_first: as :class:`TransformerEncoderLayer`.
    """

    def __init__(self, dims: int, num_heads: int, mlp_dims: int | None = None, dropout: float = 0.0,
                 activation: Callable[[Any], Any] = relu, norm_first: bool = True):
        super().__init__()
        mlp_dims = mlp_dims or dims * 4
        self.self_attention = MultiHeadAttention(dims, num_heads)
        self.cross_attention = MultiHeadAttention(dims, num_heads)
        self.ln1 = LayerNorm(dims)
        self.ln2 = LayerNorm(dims)
        self.ln3 = LayerNorm(dims)
        self.linear1 = Linear(dims, mlp_dims)
        self.linear2 = Linear(mlp_dims, dims)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = activation
        self.norm_first = norm_first

    def _mlp(self, x):
        return self.linear2(self.dropout3(self.activation(self.linear1(x))))

    def __call__(self, x, memory, x_mask, memory_mask):
        if self.norm_first:
            y = self.ln1(x)
            x = x + self.dropout1(self.self_attention(y, y, y, x_mask))
            y = self.ln2(x)
            x = x + self.dropout2(self.cross_attention(y, memory, memory, memory_mask))
            return x + self._mlp(self.ln3(x))
        x = self.ln1(x + self.dropout1(self.self_attention(x, x, x, x_mask)))
        x = self.ln2(x + self.dropout2(self.cross_attention(x, memory, memory, memory_mask)))
        return self.ln3(x + self._mlp(x))


class TransformerDecoder(Module):
    """A stack of :class:`TransformerDecoderLayer` followed by a layer normalization.

    Args:
        num_layers (int): the number of layers.
        dims, num_heads, mlp_dims, dropout, activation, norm_first, checkpoint: as :class:`TransformerEncoder`.
    """

    def __init__(self, num_layers: int, dims: int, num_heads: int, mlp_dims: int | None = None,
                 dropout: float = 0.0, activation=relu, norm_first: bool = True, checkpoint: bool = False):
        super().__init__()
        self.layers = [TransformerDecoderLayer(dims, num_heads, mlp_dims, dropout, activation, norm_first)
                       for _ in range(num_layers)]
        self.ln = LayerNorm(dims)
        self.checkpoint = checkpoint

    def __call__(self, x, memory, x_mask, memory_mask):
        for layer in self.layers:
            x = (checkpoint(layer) if self.checkpoint else layer)(x, memory, x_mask, memory_mask)
        return self.ln(x)


class Transformer(Module):
    """An encoder-decoder transformer: ``decoder(tgt, encoder(src, src_mask), tgt_mask, memory_mask)``.

    Args:
        dims (int): the model's feature size. Default: ``512``.
        num_heads (int): the number of attention heads. Default: ``8``.
        num_encoder_layers (int): encoder layers. Default: ``6``.
        num_decoder_layers (int): decoder layers. Default: ``6``.
        mlp_dims (int, optional): the MLPs' hidden size; default ``4 * dims``.
        dropout (float): dropout in every layer. Default: ``0.0``.
        activation (Callable): the MLPs' activation. Default: :func:`relu`.
        custom_encoder (Module, optional): used instead of a :class:`TransformerEncoder`.
        custom_decoder (Module, optional): used instead of a :class:`TransformerDecoder`.
        norm_first (bool): normalize before each branch. Default: ``True``.
        checkpoint (bool): recompute layers in the backward pass. Default: ``False``.
    """

    def __init__(self, dims: int = 512, num_heads: int = 8, num_encoder_layers: int = 6,
                 num_decoder_layers: int = 6, mlp_dims: int | None = None, dropout: float = 0.0,
                 activation: Callable[[Any], Any] = relu, custom_encoder: Any | None = None,
                 custom_decoder: Any | None = None, norm_first: bool = True, checkpoint: bool = False):
        super().__init__()
        if custom_encoder is None:
            custom_encoder = TransformerEncoder(num_encoder_layers, dims, num_heads, mlp_dims, dropout, activation,
                                                norm_first, checkpoint)
        if custom_decoder is None:
            custom_decoder = TransformerDecoder(num_decoder_layers, dims, num_heads, mlp_dims, dropout, activation,
                                                norm_first, checkpoint)
        self.encoder = custom_encoder
        self.decoder = custom_decoder

    def __call__(self, src, tgt, src_mask, tgt_mask, memory_mask):
        memory = self.encoder(src, src_mask)
        return self.decoder(tgt, memory, tgt_mask, memory_mask)
