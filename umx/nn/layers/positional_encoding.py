"""Positional encodings: ``RoPE`` (rotary), ``SinusoidalPositionalEncoding`` and ``ALiBi`` (linear biases)."""

from __future__ import annotations

import math

import umx as mx
from umx.nn.layers.base import Module


class RoPE(Module):
    """Rotary positional encoding (``mx.fast.rope``): rotates pairs of features by angles proportional to the
    position along the second-to-last axis.

    Args:
        dims (int): the number of features (from the start of the last axis) to rotate; the rest pass through.
        traditional (bool): rotate consecutive pairs ``(x[2i], x[2i+1])`` instead of the two halves
            ``(x[i], x[i + dims/2])``. Default: ``False``.
        base (float): the base of the frequencies ``base ** (-2i / dims)``. Default: ``10000``.
        scale (float): multiplies the positions. Default: ``1.0``.
    """

    def __init__(self, dims: int, traditional: bool = False, base: float = 10000, scale: float = 1.0):
        super().__init__()
        self.dims = dims
        self.traditional = traditional
        self.base = base
        self.scale = scale

    def _extra_repr(self) -> str:
        return f"{self.dims}, traditional={self.traditional}"

    def __call__(self, x, offset: int = 0):
        """Encode ``x`` (shape ``[..., L, D]``), its first row at position ``offset``."""
        return mx.fast.rope(x, self.dims, traditional=self.traditional, base=self.base, scale=self.scale,
                            offset=offset)


class SinusoidalPositionalEncoding(Module):
    r"""Sinusoidal positional encoding: position :math:`p` becomes :math:`[\sin(p\,\sigma_i), \cos(p\,\sigma_i)]`
    with frequencies :math:`\sigma_i` spaced geometrically from ``max_freq`` down to ``min_freq``, times
    ``scale``.

    Args:
        dims (int): the size of the encoding (positive and even).
        min_freq (float): the lowest frequency. Default: ``0.0001``.
        max_freq (float): the highest frequency. Default: ``1``.
        scale (float, optional): multiplies the encoding; default :math:`\sqrt{2 / \text{dims}}` (unit norm).
        cos_first (bool): put the cosines first. Default: ``False``.
        full_turns (bool): multiply the frequencies by :math:`2\pi`. Default: ``False``.
    """

    def __init__(self, dims: int, min_freq: float = 0.0001, max_freq: float = 1, scale: float | None = None,
                 cos_first: bool = False, full_turns: bool = False):
        super().__init__()
        if dims <= 0 or dims % 2:
            raise ValueError(f"[SinusoidalPositionalEncoding] dims must be positive and even but got {dims}.")
        half = dims // 2
        # from 1 down to 0; a single pair takes the highest frequency
        one_zero = 1 - mx.arange(0, half) / (half - 1) if half > 1 else mx.ones((1,))
        low = math.log(min_freq)
        self._sigmas = mx.exp(one_zero * (math.log(max_freq) - low) + low)
        if full_turns:
            self._sigmas = self._sigmas * (2 * math.pi)
        self.scale = math.sqrt(2 / dims) if scale is None else scale
        self.cos_first = cos_first

    def __call__(self, x):
        y = x[..., None] * self._sigmas
        sin, cos = mx.sin(y), mx.cos(y)
        y = mx.concatenate([cos, sin] if self.cos_first else [sin, cos], axis=-1)
        if self.scale != 1:
            y = y * self.scale
        return y


class ALiBi(Module):
    """Attention with linear biases (Press et al., "Train Short, Test Long"): adds ``-slope_h * |i - j|`` to the
    attention scores of head ``h``. For ``n`` heads, ``n`` a power of two, the slopes are ``2 ** (-8 (h + 1) /
    n)``; otherwise those of the power of two below ``n``, then every other slope of the power of two above, as
    the paper (and MLX) takes them.
    """

    @staticmethod
    def create_alibi_slope(num_heads: int, dtype=mx.float32) -> mx.array:
        """The per-head slopes, shape ``[num_heads, 1, 1]``.

        Args:
            num_heads (int): the number of attention heads.
            dtype (Dtype): the slopes' dtype. Default: ``mx.float32``.

        Returns:
            array: the slopes, shaped to broadcast over a head's scores.
        """

        def geometric(n: int) -> list:
            return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

        below = 2 ** math.floor(math.log2(num_heads))
        slopes = geometric(below) + geometric(2 * below)[0::2][:num_heads - below]
        return mx.expand_dims(mx.array(slopes, dtype=dtype), axis=(1, 2))

    @classmethod
    def create_alibi_matrix(cls, q_sequence_length: int, k_sequence_length: int, num_heads: int, offset: int = 0,
                            dtype=mx.float32) -> mx.array:
        """The bias, shape ``[1, num_heads, q_sequence_length - offset, k_sequence_length]``.

        Args:
            q_sequence_length (int): the queries' sequence length (``offset`` included).
            k_sequence_length (int): the keys' sequence length.
            num_heads (int): the number of attention heads.
            offset (int): the first query's position. Default: ``0``.
            dtype (Dtype): the bias's dtype. Default: ``mx.float32``.

        Returns:
            array: the bias.
        """
        queries = mx.arange(offset, q_sequence_length)
        keys = mx.arange(0, k_sequence_length)
        distance = -mx.abs(queries[:, None] - keys[None, :])[None, None]
        return (distance * cls.create_alibi_slope(num_heads, dtype)).astype(dtype)

    def __call__(self, attention_scores, offset: int = 0, mask=None):
        """Add the biases to ``attention_scores`` (shape ``[B, heads, L_q, L_k]``), queries starting at
        ``offset``; an additive ``mask`` is added too."""
        bias = self.create_alibi_matrix(attention_scores.shape[-2] + offset, attention_scores.shape[-1],
                                        attention_scores.shape[1], offset, attention_scores.dtype)
        if mask is not None:
            bias = bias + mask
        return attention_scores + bias
