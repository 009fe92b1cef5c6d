"""Matrix products: ``matmul`` and ``@`` with NumPy's rules for 1-d operands and broadcast batch axes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

CASES = [((3, 4), (4, 5)), ((4,), (4, 2)), ((3, 4), (4,)), ((4,), (4,)), ((2, 3, 4), (4, 5)),
         ((2, 1, 3, 4), (5, 4, 2)), ((1, 4), (3, 4, 1)), ((0, 4), (4, 3)), ((3, 0), (0, 2))]


@pytest.mark.parametrize(("sa", "sb"), CASES, ids=str)
def test_matmul(device, rng, sa, sb):
    x = rng.standard_normal(sa).astype(np.float32)
    y = rng.standard_normal(sb).astype(np.float32)
    ref = x.astype(np.float64) @ y.astype(np.float64)
    out = mx.matmul(mx.array(x), mx.array(y), stream=device)
    assert out.shape == ref.shape and out.dtype == mx.float32
    assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert_close(mx.array(x) @ mx.array(y), ref, rtol=1e-4, atol=1e-5)


def test_matmul_dtypes(device, rng):
    x = rng.integers(-5, 5, (3, 4)).astype(np.int32)
    y = rng.integers(-5, 5, (4, 2)).astype(np.int32)
    out = mx.matmul(mx.array(x), mx.array(y), stream=device)
    assert out.dtype == mx.int32
    np.testing.assert_array_equal(np.asarray(out), x @ y)
    out = mx.matmul(mx.array(x), mx.array(y.astype(np.float32)), stream=device)
    assert out.dtype == mx.float32
    h = mx.matmul(mx.array(x, dtype=mx.float16), mx.array(y, dtype=mx.float16), stream=device)
    assert h.dtype == mx.float16
    assert_close(h, x @ y)
    assert_close(mx.array(x.astype(np.float32)) @ np.ones((4, 1), np.float32), x.sum(1, keepdims=True))


@pytest.mark.parametrize(("sa", "sb"), [((5, 64), (64, 3)), ((2, 3, 64), (64, 4)), ((2, 1, 3, 64), (5, 64, 2))],
                         ids=str)
def test_float16_products_accumulate_in_float32_and_round_once(device, rng, sa, sb):
    x = rng.standard_normal(sa).astype(np.float16)
    y = rng.standard_normal(sb).astype(np.float16)
    out = mx.matmul(mx.array(x), mx.array(y), stream=device)
    ref = (x.astype(np.float64) @ y.astype(np.float64)).astype(np.float16)
    # within one float16 rounding of the exact product (a float16 accumulator would be far off at K = 64)
    assert_close(out, ref.astype(np.float64), rtol=2e-3, atol=2e-3, dtype=mx.float16)


def test_matmul_errors(device):
    with pytest.raises(ValueError, match=r"matmul.*\(3, 4\).*\(5, 2\)"):
        mx.matmul(mx.zeros((3, 4)), mx.zeros((5, 2)), stream=device)
    with pytest.raises(ValueError, match="matmul"):
        mx.matmul(mx.array(1.0), mx.zeros((1,)), stream=device)
    with pytest.raises(ValueError, match="matmul"):
        mx.matmul(mx.zeros((2, 3, 4)), mx.zeros((3, 4, 2)), stream=device)
