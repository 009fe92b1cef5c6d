"""``mx.fast``'s normalization and rotary embedding as one kernel each on the GPU (``sources.py`` has their
text), for float32 data (bfloat16 arrives widened; other dtypes and the frequencies-as-input form of rope take the
shared kernels of ``backends/xp/fast.py``, several CuPy calls each)."""

from __future__ import annotations

import functools
import math

import numpy as np

from ...primitives import fast as fp
from ._probe import _cupy
from .sources import BLOCK, rms_norm_source, rope_source

cp = _cupy()


@functools.cache
def _kernel(which: str):
    source = {"rms_norm": rms_norm_source, "rope": rope_source}[which]
    return cp.RawKernel(source(f"umx_{which}"), f"umx_{which}")


def rms_norm(fallback):
    """RMSNorm's kernel: one block per row where ``x`` (and the weight) are float32, else ``fallback``."""

    def run(prim, x, *weight):
        if x.dtype != np.float32 or any(w.dtype != np.float32 for w in weight) or x.size == 0 or x.ndim == 0:
            return fallback(prim, x, *weight)
        d = x.shape[-1]
        x = cp.ascontiguousarray(x)
        out = cp.empty_like(x)
        w = cp.ascontiguousarray(weight[0]) if prim.has_weight else x  # (any pointer: not read)
        _kernel("rms_norm")((x.size // d,), (BLOCK,), (x, w, out, np.int32(d), np.float32(prim.eps),
                                                        np.int32(1 if prim.has_weight else 0)))
        return out

    return run


def rope(fallback):
    """RoPE's kernel: one thread per element where ``x`` is float32 and the frequencies come from ``base``, else
    ``fallback``."""

    def run(prim, x, *rest):
        if x.dtype != np.float32 or prim.base is None or x.size == 0 or x.ndim < 2:
            return fallback(prim, x, *rest)
        b, t, d = x.shape[0], x.shape[-2], x.shape[-1]
        heads = x.size // max(b * t * d, 1)
        if prim.offset is not None:
            offsets = cp.full((1,), prim.offset, dtype=cp.float32)
        else:
            offsets = cp.ascontiguousarray(rest[0].astype(cp.float32).reshape(-1))
        x = cp.ascontiguousarray(x)
        out = cp.empty_like(x)
        half = prim.dims // 2
        blocks = -(-x.size // BLOCK)
        _kernel("rope")((blocks,), (BLOCK,), (
            x, out, offsets, np.int32(offsets.size), np.int64(x.size), np.int32(t), np.int32(d),
            np.int32(prim.dims), np.int32(heads), np.float32(prim.scale),
            np.float32(-math.log(prim.base) / half), np.int32(1 if prim.traditional else 0),
            np.int32(1 if prim.inverse else 0)))
        return out

    return run


def install(table: dict) -> None:
    """Put the kernels above in front of the shared ones in the CUDA kernel table."""
    table[fp.RMSNorm] = rms_norm(table[fp.RMSNorm])
    table[fp.RoPE] = rope(table[fp.RoPE])
