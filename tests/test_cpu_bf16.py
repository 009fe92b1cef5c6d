"""bfloat16 products on the CPU that read the weight's storage a block of rows at a time (a decode step's linear
layers): the same values as the product of the widened operands, on one core and split across cores."""

from __future__ import annotations

import numpy as np
import pytest

import umx as mx
from umx.backends.cpu import bf16 as bf16_kernels
from umx.backends.cpu import executor
from umx.primitives.linalg import matmul_operands

pytestmark = pytest.mark.usefixtures("on_the_cpu")  # (the CPU backend's kernels)


@pytest.fixture
def small_thresholds(monkeypatch):
    # the blocked path at test sizes: blocks of a few rows, weights split from a few thousand elements
    monkeypatch.setattr(bf16_kernels, "WEIGHT_MIN", 1 << 10)
    monkeypatch.setattr(bf16_kernels, "BLOCK", 1 << 9)
    monkeypatch.setattr(bf16_kernels, "SPLIT_MIN", 1 << 11)
    calls = []
    real = bf16_kernels.matmul

    def counted(x, y):
        out = real(x, y)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(bf16_kernels, "matmul", counted)
    monkeypatch.setitem(executor.BF16_STORAGE, next(iter(executor.BF16_STORAGE)),
                        lambda prim, x, y: counted(*matmul_operands(prim, x, y)))
    return calls


@pytest.mark.parametrize("lead", [(1,), (1, 1), (8,), (2, 3), (9,), (8, 8), (65,)], ids=str)
@pytest.mark.parametrize("n, k", [(300, 64), (77, 130), (1000, 8)])
def test_products_read_in_blocks_match_widened(rng, small_thresholds, lead, n, k):
    w = mx.array(rng.standard_normal((n, k)).astype(np.float32)).astype(mx.bfloat16)
    x = mx.array(rng.standard_normal((*lead, k)).astype(np.float32)).astype(mx.bfloat16)
    got = x @ w.T
    wide = np.asarray(x.astype(mx.float32)).astype(np.float64) @ np.asarray(w.astype(mx.float32)).astype(np.float64).T
    assert got.dtype == mx.bfloat16 and got.shape == (*lead, n)
    # (float32 accumulation, rounded once to bfloat16: within bfloat16's half step of the exact product)
    np.testing.assert_allclose(np.asarray(got.astype(mx.float32)), wide, rtol=2 ** -8, atol=1e-5 * np.sqrt(k))
    assert small_thresholds == [int(np.prod(lead)) <= bf16_kernels.ROWS_MAX]  # (65 rows: the widened product)


def test_other_layouts_take_the_widened_product(rng, small_thresholds):
    w = mx.array(rng.standard_normal((64, 300)).astype(np.float32)).astype(mx.bfloat16)  # (K, N), row-major
    x = mx.array(rng.standard_normal((1, 64)).astype(np.float32)).astype(mx.bfloat16)
    got = x @ w
    ref = (x.astype(mx.float32) @ w.astype(mx.float32)).astype(mx.bfloat16)
    np.testing.assert_array_equal(np.asarray(got.astype(mx.float32)), np.asarray(ref.astype(mx.float32)))
    assert small_thresholds == [False]


def test_a_compiled_program_of_small_steps_reads_the_weight_in_blocks(rng, small_thresholds):
    # (a small model's compiled decode step runs as a program, step by step: its products take the blocked path
    # too, not a widened copy of every weight at every call)
    w = mx.array(rng.standard_normal((300, 64)).astype(np.float32)).astype(mx.bfloat16)
    mx.eval(w)

    def step(x):
        for _ in range(4):
            x = mx.tanh((x @ w.T)[..., :64] * 0.5 + 0.1)
        return x

    x = mx.array(rng.standard_normal((1, 64)).astype(np.float32)).astype(mx.bfloat16)
    expected = np.asarray(step(x).astype(mx.float32))
    compiled = mx.compile(step)
    for _ in range(3):
        got = compiled(x)
        np.testing.assert_array_equal(np.asarray(got.astype(mx.float32)), expected)
    assert _program_of(compiled) and small_thresholds.count(True) >= 3 * 4 + 4


def _program_of(compiled) -> bool:
    """Whether ``compiled``'s trace replays as one program (see transforms._tape.program_for)."""
    return any(getattr(t, "program", None) for t in compiled._cache.values())
