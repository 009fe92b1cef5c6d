"""``Embedding``: a lookup table of vectors for integer tokens."""

from __future__ import annotations

import math

import umx as mx
from umx.nn.layers.base import Module
from umx.nn.layers.quantized import QuantizedEmbedding


class Embedding(Module):
    r"""Maps integer indices to vectors: row ``i`` of ``weight`` (shape ``[num_embeddings, dims]``), initialized
    from :math:`\mathcal{N}(0, 1/\text{dims})`.

    Args:
        num_embeddings (int): the number of vectors (the vocabulary size).
        dims (int): the size of each vector.
    """

    def __init__(self, num_embeddings: int, dims: int):
        super().__init__()
        scale = math.sqrt(1 / dims)
        self.weight = mx.random.normal(shape=(num_embeddings, dims), scale=scale)

    def _extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}"

    def __call__(self, x):
        return self.weight[x]

    def as_linear(self, x):
        """Use the table as a linear layer without bias, ``x @ weight.T`` (e.g. tied input and output
        embeddings)."""
        return x @ self.weight.T

    def to_quantized(self, group_size: int | None = None, bits: int | None = None, mode: str = "affine",
                     quantize_input: bool = False):
        """A ``QuantizedEmbedding`` copy of this layer (``quantize_input`` is not supported)."""

        if quantize_input:
            raise ValueError("Quantized input is not supported for Embedding layers.")
        return QuantizedEmbedding.from_embedding(self, group_size, bits, mode)
