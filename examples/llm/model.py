"""Llama-family decoder models (Llama, Mistral, Qwen2) on ``umx.nn`` and ``mx.fast``.

The three share one architecture: RMSNorm before attention and before the MLP, rotary position embeddings,
grouped-query attention (fewer key/value heads than query heads), a SwiGLU MLP, and tied or separate input and
output embeddings. What differs is read from the Hugging Face ``config.json``:

=============  ================================  =========================================================
model_type     attention                          position encoding
=============  ================================  =========================================================
``llama``      no biases (``attention_bias``)     ``rope_theta``; ``rope_scaling`` of type ``llama3``
``mistral``    no biases; ``sliding_window``      ``rope_theta``
``qwen2``      biases on q, k, v (not o)          ``rope_theta`` (often 1e6); ``sliding_window`` if
                                                  ``use_sliding_window``
=============  ================================  =========================================================

Parameter names follow the Hugging Face layout (``model.layers.0.self_attn.q_proj.weight``), so checkpoints load
as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import umx as mx
import umx.nn as nn

from .cache import StaticKVCache, attention_mask

__all__ = ["ModelArgs", "Model", "SUPPORTED", "fuse_projections"]

SUPPORTED = ("llama", "mistral", "qwen2")


@dataclass
class ModelArgs:
    """The fields of a Hugging Face ``config.json`` that these models read (others are ignored)."""

    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    rms_norm_eps: float = 1e-5
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int | None = None
    rope_theta: float = 10000.0
    rope_traditional: bool = False
    rope_scaling: dict | None = None
    attention_bias: bool | None = None
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    use_sliding_window: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, config: dict) -> ModelArgs:
        """The arguments of ``config`` (a parsed ``config.json``); unknown keys go to ``extra``."""
        known = {f.name for f in fields(cls)} - {"extra"}
        args = cls(**{k: v for k, v in config.items() if k in known},
                   extra={k: v for k, v in config.items() if k not in known})
        if args.model_type not in SUPPORTED:
            raise ValueError(f"model_type {args.model_type!r} is not one of {SUPPORTED}")
        if args.num_key_value_heads is None:
            args.num_key_value_heads = args.num_attention_heads
        if args.head_dim is None:
            args.head_dim = args.hidden_size // args.num_attention_heads
        if args.attention_bias is None:
            args.attention_bias = args.model_type == "qwen2"
        if args.model_type == "qwen2" and not args.use_sliding_window:
            args.sliding_window = None
        return args

    @property
    def window(self) -> int | None:
        """The sliding window's length, or None for full attention."""
        return self.sliding_window if self.model_type != "llama" else None


def _llama3_frequencies(dims: int, base: float, scaling: dict) -> mx.array:
    """The rotation periods of Llama 3's rope scaling: long wavelengths are stretched by ``factor``, short ones
    kept, and those between interpolated smoothly."""
    factor = scaling["factor"]
    low, high = scaling.get("low_freq_factor", 1.0), scaling.get("high_freq_factor", 4.0)
    old_context = scaling.get("original_max_position_embeddings", 8192)
    periods = []
    for i in range(0, dims, 2):
        period = base ** (i / dims)  # 1 / inverse frequency
        wavelength = 2 * math.pi * period
        if wavelength > old_context / low:
            period *= factor
        elif wavelength >= old_context / high:
            smooth = (old_context / wavelength - low) / (high - low)
            period = period / ((1 - smooth) / factor + smooth)
        periods.append(period)
    return mx.array(periods, mx.float32)


class Attention(nn.Module):
    """Grouped-query self-attention with rotary embeddings and a key-value cache."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads = args.num_attention_heads
        self.n_kv_heads = args.num_key_value_heads
        self.head_dim = args.head_dim
        self.scale = args.head_dim ** -0.5
        dim, bias = args.hidden_size, args.attention_bias
        self.q_proj = nn.Linear(dim, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, dim, bias=args.attention_bias and
                                args.model_type != "qwen2")
        self.rope_traditional = args.rope_traditional
        scaling = args.rope_scaling or {}
        kind = scaling.get("rope_type", scaling.get("type"))
        self.rope_base: float | None = args.rope_theta
        self.rope_scale = 1.0
        self._rope_freqs = None
        if kind == "llama3":
            self._rope_freqs = _llama3_frequencies(self.head_dim, args.rope_theta, scaling)
            self.rope_base = None
        elif kind == "linear":
            self.rope_scale = 1 / scaling["factor"]
        elif kind not in (None, "default"):
            raise ValueError(f"rope_scaling of type {kind!r} is not supported")

    def _heads(self, x: mx.array, heads: int) -> mx.array:
        """``[B, L, heads * head_dim]`` as ``[B, heads, L, head_dim]``."""
        b, n, _ = x.shape
        return x.reshape(b, n, heads, self.head_dim).transpose(0, 2, 1, 3)

    def _rope(self, x: mx.array, offset) -> mx.array:
        return mx.fast.rope(x, self.head_dim, traditional=self.rope_traditional, base=self.rope_base,
                            scale=self.rope_scale, offset=offset, freqs=self._rope_freqs)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        b, n, _ = x.shape
        offset = 0 if cache is None else cache.offset
        if "qkv_proj" in self:  # (see fuse_projections)
            heads = self.n_heads + self.n_kv_heads
            # every head at once, then slices (views, where split would be one node of three outputs)
            qkv = self._heads(self.qkv_proj(x), heads + self.n_kv_heads)
            qk = self._rope(qkv[:, :heads], offset)  # (q and k in one call)
            q, k = qk[:, :self.n_heads], qk[:, self.n_heads:]
            v = qkv[:, heads:]
        else:
            q = self._rope(self._heads(self.q_proj(x), self.n_heads), offset)
            k = self._rope(self._heads(self.k_proj(x), self.n_kv_heads), offset)
            v = self._heads(self.v_proj(x), self.n_kv_heads)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return self.o_proj(out.transpose(0, 2, 1, 3).reshape(b, n, -1))


class MLP(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        dim, hidden, bias = args.hidden_size, args.intermediate_size, args.mlp_bias
        self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)

    def __call__(self, x: mx.array) -> mx.array:
        if "gate_up_proj" in self:  # (see fuse_projections)
            gate_up = self.gate_up_proj(x)
            half = gate_up.shape[-1] // 2
            gate, up = gate_up[..., :half], gate_up[..., half:]
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        return self.down_proj(nn.silu(gate) * up)


class TransformerBlock(nn.Module):
    """Pre-norm attention and MLP, each added to the residual stream."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = MLP(args)
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, mask=None, cache=None) -> mx.array:
        h = x + self.self_attn(self.input_layernorm(x), mask, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    """The embedding, the blocks and the final norm (``model.*`` in the checkpoint)."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = [TransformerBlock(args) for _ in range(args.num_hidden_layers)]
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)


class Model(nn.Module):
    """A decoder-only language model: token ids ``[B, L]`` to logits ``[B, L, vocab]``.

    Args:
        args (ModelArgs | dict): the configuration (a ``config.json`` dict is converted).
    """

    def __init__(self, args: ModelArgs | dict):
        super().__init__()
        self.args = args if isinstance(args, ModelArgs) else ModelArgs.from_dict(args)
        self.model_type = self.args.model_type
        self.model = LlamaModel(self.args)
        if not self.args.tie_word_embeddings:
            self.lm_head = nn.Linear(self.args.hidden_size, self.args.vocab_size, bias=False)

    @property
    def layers(self) -> list:
        """The transformer blocks (mlx-lm's name)."""
        return self.model.layers

    def _mask(self, n: int, cache):
        """None, ``"causal"`` or a boolean array: what attention of ``n`` new positions needs."""
        window = self.args.window
        c = None if cache is None else cache[0]
        if c is None or (isinstance(c, StaticKVCache) and c.keys is None):
            # (no cache, or a static cache's first write: the prompt attends to itself, see StaticKVCache)
            if window is not None and n > window:
                return attention_mask(n, 0, n, window)
            return "causal" if n > 1 else None
        if hasattr(c, "make_mask"):
            return c.make_mask(n, window)
        return attention_mask(n, c.offset, c.max_size, window)  # a static cache: mask the unwritten positions

    def __call__(self, inputs: mx.array, cache: list | None = None) -> mx.array:
        """Logits for the token ids ``inputs`` (``[B, L]``), appending to ``cache`` (one per layer) if given.

        Args:
            inputs (array): int token ids, ``[B, L]``.
            cache (list, optional): per-layer caches (``make_cache``); without one, every position attends
                to the earlier ones of ``inputs`` only.

        Returns:
            array: ``[B, L, vocab_size]`` logits.
        """
        h = self.model.embed_tokens(inputs)
        mask = self._mask(inputs.shape[1], cache)
        for i, layer in enumerate(self.model.layers):
            h = layer(h, mask, None if cache is None else cache[i])
        h = self.model.norm(h)
        if self.args.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(h)
        return self.lm_head(h)

    @staticmethod
    def sanitize(weights: dict) -> dict:
        """Drop checkpoint entries that are not parameters (precomputed rotary frequencies)."""
        return {k: v for k, v in weights.items() if "rotary_emb.inv_freq" not in k}


def _joined(layers: list) -> nn.Module:
    """The first of ``layers`` (linear layers of one kind, float or quantized, reading the same input) made to
    compute all their outputs side by side: each parameter joined along the output axis."""
    first = layers[0]
    first.update({k: mx.concatenate([layer[k] for layer in layers], axis=0) for k in first})
    return first


def fuse_projections(model: Model) -> Model:
    """Join each layer's query, key and value projections into one (``qkv_proj``) and its MLP's gate and up
    projections into one (``gate_up_proj``), in place: one product of the shared input instead of three (two),
    its output split again, the same values up to the products' summation order. A decode step then reads the
    same weights in fewer, larger matrix-vector products (a GPU reads the small key and value projections' weights
    far below its bandwidth). Float and quantized layers alike; call it after loading and quantizing (a model
    saved afterwards has the joined names, not the checkpoint's).

    Args:
        model (Model): the model to change.

    Returns:
        Model: ``model``.
    """
    for layer in model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        if "q_proj" in attn:
            attn.qkv_proj = _joined([attn.q_proj, attn.k_proj, attn.v_proj])
            del attn.q_proj, attn.k_proj, attn.v_proj
        if "gate_proj" in mlp:
            mlp.gate_up_proj = _joined([mlp.gate_proj, mlp.up_proj])
            del mlp.gate_proj, mlp.up_proj
    mx.eval(model.parameters())
    return model
