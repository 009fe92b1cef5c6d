"""The CPU attention kernel's batch split over the cores (``backends/cpu/blas.py``): against the shared kernel
(unsplit) and float64 NumPy, with the BLAS's thread count put back."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import umx as mx
from umx.backends.cpu import blas
from umx.backends.xp import bind
from umx.primitives import ScaledDotProductAttention

needs_blas = pytest.mark.skipif(blas._BLAS is None, reason="no OpenBLAS found, or one core")
SHARED = bind(np)


@needs_blas
@pytest.mark.parametrize("mask", ["none", "causal", "bool", "additive", "per-example", "sinks"])
def test_attention_split_over_the_batch(rng, monkeypatch, mask):
    q = rng.standard_normal((4, 8, 9, 16)).astype(np.float32)
    k = rng.standard_normal((4, 2, 11, 16)).astype(np.float32)  # (grouped-query heads)
    v = rng.standard_normal((4, 2, 11, 16)).astype(np.float32)
    rest = []
    kind = mask
    if mask in ("bool", "additive"):
        rest = [rng.standard_normal((9, 11)) > -1 if mask == "bool" else rng.standard_normal((1, 8, 9, 11))]
    elif mask == "per-example":
        kind, rest = "additive", [rng.standard_normal((4, 1, 9, 11)).astype(np.float32)]
    elif mask == "sinks":
        kind, rest = "none", [rng.standard_normal(8).astype(np.float32)]
    prim = ScaledDotProductAttention(0.25, kind, mask == "sinks")
    want = SHARED[ScaledDotProductAttention](prim, q, k, v, *rest)
    threads_before = blas._BLAS[1]()
    got = blas.batched_attention(SHARED[ScaledDotProductAttention], prim, q, k, v, *rest)
    assert blas._BLAS[1]() == threads_before
    assert got is not None and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert blas.batched_attention(SHARED[ScaledDotProductAttention], prim, q[:1], k[:1], v[:1], *rest) is None


def test_attention_through_the_op_on_the_cpu(rng):
    q, k, v = (rng.standard_normal((3, 4, 10, 8)).astype(np.float32) for _ in range(3))
    got = mx.fast.scaled_dot_product_attention(mx.array(q), mx.array(k), mx.array(v), scale=0.3, mask="causal",
                                               stream=mx.cpu)
    s = (q.astype(np.float64) @ np.swapaxes(k, -1, -2)) * 0.3
    s = np.where(np.tril(np.ones((10, 10), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    assert_close(got, (p / p.sum(-1, keepdims=True)) @ v, 1e-5, 1e-5)
