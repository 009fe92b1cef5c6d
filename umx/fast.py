"""TEMPORARY stand-in for ``mx.fast`` (another branch builds the real one; the lead replaces this file at merge).

Compositions of public ops with the signatures and semantics of MLX's ``mlx.core.fast`` functions that
``umx.nn`` calls: ``rms_norm``, ``layer_norm``, ``rope`` and ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import math

import umx as mx


def _stats_dtype(x):
    return mx.float32 if x.dtype in (mx.float16, mx.bfloat16) else x.dtype


def rms_norm(x, weight, eps: float, *, stream=None):
    """Root-mean-square normalization over the last axis, times ``weight`` (or not, when None)."""
    xs = x.astype(_stats_dtype(x))
    y = (xs * mx.rsqrt(mx.mean(mx.square(xs), axis=-1, keepdims=True) + eps)).astype(x.dtype)
    return y if weight is None else y * weight


def layer_norm(x, weight, bias, eps: float, *, stream=None):
    """Layer normalization over the last axis, times ``weight`` and plus ``bias`` (each optional)."""
    xs = x.astype(_stats_dtype(x))
    mean = mx.mean(xs, axis=-1, keepdims=True)
    y = ((xs - mean) * mx.rsqrt(mx.var(xs, axis=-1, keepdims=True) + eps)).astype(x.dtype)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def rope(a, dims: int, *, traditional: bool, base, scale: float, offset, freqs=None, stream=None):
    """Rotary positional encoding of the first ``dims`` features of ``a`` (shape ``[B, *, T, D]``); positions
    start at ``offset`` (an int, or an array of one offset per batch entry)."""
    if (base is None) == (freqs is None):
        raise ValueError("rope: exactly one of base and freqs must be None")
    half = dims // 2
    inv_freqs = (1 / freqs) if freqs is not None else mx.exp(-mx.arange(0, dims, 2) / dims * math.log(base))
    positions = mx.arange(a.shape[-2]).astype(mx.float32)
    if isinstance(offset, mx.array) and offset.ndim == 1:
        positions = offset.reshape(-1, *(1,) * (a.ndim - 1)) + positions[:, None]
    else:
        positions = (positions + offset)[:, None]
    theta = positions * scale * inv_freqs
    cos, sin = mx.cos(theta), mx.sin(theta)
    x = a[..., :dims].astype(_stats_dtype(a))
    if traditional:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        rotated = mx.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).reshape(*x.shape)
    else:
        x1, x2 = x[..., :half], x[..., half:]
        rotated = mx.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)
    rotated = rotated.astype(a.dtype)
    return rotated if dims == a.shape[-1] else mx.concatenate([rotated, a[..., dims:]], axis=-1)


def scaled_dot_product_attention(q, k, v, *, scale: float, mask=None, sinks=None, stream=None):
    """``softmax(q @ k.T * scale + mask) @ v`` over heads ``[B, N, T, D]``, with grouped-query keys and values
    (fewer heads, repeated), a boolean or additive ``mask`` or ``'causal'``, and optional per-head ``sinks``."""
    n_q, n_kv = q.shape[1], k.shape[1]
    if n_q != n_kv:
        k = mx.repeat(k, n_q // n_kv, axis=1)
        v = mx.repeat(v, n_q // n_kv, axis=1)
    scores = ((q * scale) @ k.swapaxes(-1, -2)).astype(_stats_dtype(q))
    t_q, t_kv = q.shape[-2], k.shape[-2]
    if isinstance(mask, str):
        if mask != "causal":
            raise ValueError(f"scaled_dot_product_attention: unknown mask {mask!r}")
        mask = mx.arange(t_q)[:, None] + (t_kv - t_q) >= mx.arange(t_kv)[None]
    if mask is not None:
        scores = mx.where(mask, scores, -mx.inf) if mask.dtype == mx.bool_ else scores + mask
    if sinks is not None:
        sink = mx.broadcast_to(sinks.astype(scores.dtype).reshape(1, -1, 1, 1), (*scores.shape[:-1], 1))
        probs = mx.softmax(mx.concatenate([sink, scores], axis=-1), axis=-1)[..., 1:]
    else:
        probs = mx.softmax(scores, axis=-1)
    return probs.astype(v.dtype) @ v
