"""Elementwise work with a short broadcast operand (a channel vector against NHWC activations), which the CPU
backend folds into long rows: the same bits as NumPy's broadcasting, in lone ops and fused regions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import umx as mx
from umx.backends.cpu import fold

pytestmark = pytest.mark.usefixtures("on_the_cpu")  # (the CPU backend's kernels)


def test_plan():
    assert fold.plan([(32, 32, 32, 8), (8,)], (32, 32, 32, 8)) == (32768 // 32, 32, 8)  # rows of 32 * 8
    assert fold.plan([(1, 1, 1, 8), (), (32, 32, 32, 8)], (32, 32, 32, 8)) == (1024, 32, 8)
    assert fold.plan([(64, 3, 5), (3, 5)], (64, 3, 5)) == (2, 32, 15)  # (a divisor of 64: 32 * 15 >= 256)
    assert fold.plan([(32768, 8), (8,)], (32768, 8)) == (1024, 32, 8)  # (not one row of the whole array)
    assert fold.plan([(4099, 8), (8,)], (4099, 8)) is None  # (a prime: rows would be the whole array)
    assert fold.plan([(6, 7, 2), (2,)], (6, 7, 2)) == (1, 42, 2)
    assert fold.plan([(4096, 128), (128,)], (4096, 128)) is None  # a long run: NumPy's loops are fine
    assert fold.plan([(8, 2, 8), (8, 1, 8)], (8, 2, 8)) is None  # broadcast inside: no rows to fold
    assert fold.plan([(8, 4, 3), (4, 3), (3,)], (8, 4, 3)) is None  # two different runs
    assert fold.plan([(8, 4, 3), (8, 4, 3)], (8, 4, 3)) is None  # nothing broadcast


def _case(draw_shape, run_axes: int, rng):
    x = rng.standard_normal(draw_shape).astype(np.float32)
    v = rng.standard_normal(draw_shape[len(draw_shape) - run_axes:]).astype(np.float32)
    return x, v


@settings(max_examples=60, deadline=None, derandomize=True)
@given(lead=st.lists(st.integers(1, 40), min_size=1, max_size=3), tail=st.lists(st.integers(1, 9), min_size=1,
                                                                                 max_size=2),
       op=st.sampled_from(["add", "subtract", "multiply", "divide", "maximum", "greater"]),
       swap=st.booleans(), ones=st.booleans(), seed=st.integers(0, 2**16))
def test_lone_ops_match_numpy(lead, tail, op, swap, ones, seed):
    rng = np.random.default_rng(seed)
    shape = (*lead, 64, *tail)  # (64 rows at least: big enough to fold where the run is short)
    x, v = _case(shape, len(tail), rng)
    if ones:
        v = v.reshape((1,) * (len(shape) - v.ndim) + v.shape)
    a, b = (v, x) if swap else (x, v)
    got = getattr(mx, op)(mx.array(a), mx.array(b), stream=mx.cpu)
    with np.errstate(all="ignore"):
        ref = getattr(np, op)(a, b)
    assert got.shape == ref.shape
    np.testing.assert_array_equal(np.asarray(got), ref)  # (bit for bit: the same values, the same order)


@pytest.mark.parametrize("shape", [(32, 32, 32, 8), (16, 9, 9, 3), (2, 64, 64, 1), (100, 300, 5),
                                   (64, 64, 64, 8)])  # (2M elements: blocks of rows on each core)
def test_fused_regions_match_numpy(rng, shape):
    # a batch norm's normalization and its gradient's terms: regions whose leaves are channel vectors
    x = rng.standard_normal(shape).astype(np.float32)
    c = shape[-1]
    mean, scale, w, b = (rng.standard_normal(c).astype(np.float32) for _ in range(4))
    mx_x, mx_mean, mx_scale, mx_w, mx_b = (mx.array(t) for t in (x, mean, scale, w, b))
    got = ((mx_x - mx_mean) * mx_scale * mx_w + mx_b)
    relu = mx.where(got > 0, got, 0.0)
    ref = (x - mean) * scale * w + b
    np.testing.assert_array_equal(np.asarray(got), ref)
    np.testing.assert_array_equal(np.asarray(relu), np.where(ref > 0, ref, np.float32(0)))


def test_non_contiguous_operand_is_not_folded(rng):
    x = rng.standard_normal((64, 64, 8)).astype(np.float32)
    t = mx.transpose(mx.array(x), (1, 0, 2))  # (a view where the backend keeps one: rows are no view of it)
    v = rng.standard_normal(8).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(t * mx.array(v)), x.transpose(1, 0, 2) * v)


def test_bfloat16_regions_split_by_rows_match_per_step_rounding(rng):
    x = mx.array(rng.standard_normal((64, 64, 64, 8)).astype(np.float32)).astype(mx.bfloat16)
    v = mx.array(rng.standard_normal(8).astype(np.float32)).astype(mx.bfloat16)
    got = (x - v) * v
    step = (x.astype(mx.float32) - v.astype(mx.float32)).astype(mx.bfloat16)  # (each step rounds to bfloat16)
    want = (step.astype(mx.float32) * v.astype(mx.float32)).astype(mx.bfloat16)
    assert got.dtype == mx.bfloat16
    np.testing.assert_array_equal(np.asarray(got.astype(mx.float32)), np.asarray(want.astype(mx.float32)))


def test_split_regions_in_uneven_chunks_match_numpy(rng, monkeypatch):
    # large regions are cut into threads.parts() chunks on the pool: flat ones by elements, folded ones by rows
    from umx.runtime import threads

    monkeypatch.setattr(threads, "CORES", 5)
    monkeypatch.setattr(threads, "CHUNK_BYTES", 1 << 10)
    assert threads.parts(1 << 22) == 5 and threads.parts(100) == 1
    x = rng.standard_normal((1031, 1029)).astype(np.float32)  # (over fusion.SPLIT_MIN_SIZE, odd sizes)
    y = rng.standard_normal((1031, 1029)).astype(np.float32)
    v = rng.standard_normal((1029 * 128, 8)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    got = (mx.array(x) * 2 - mx.array(y)) * mx.array(y)
    np.testing.assert_array_equal(np.asarray(got), (x * 2 - y) * y)
    folded = (mx.array(v) - mx.array(b)) * mx.array(b)  # (a short broadcast row: folded, split by rows)
    np.testing.assert_array_equal(np.asarray(folded), (v - b) * b)


@pytest.mark.parametrize("case", ["rows", "last axis", "outer", "second axis", "blocks", "bfloat16"])
def test_split_regions_with_broadcast_leaves_match_numpy(rng, monkeypatch, case):
    # regions whose leaves broadcast (a row's statistics, a mask over the batch, an outer comparison) are cut
    # along the first long axis of the result, the broadcast leaves read whole by every chunk
    from umx.backends.cpu import fused
    from umx.runtime import threads

    monkeypatch.setattr(threads, "CORES", 5)
    monkeypatch.setattr(threads, "CHUNK_BYTES", 1 << 10)
    if case == "blocks":
        monkeypatch.setattr(threads, "BLOCK_PER_CORE", 200)  # (chunks run in blocks of rows, uneven: 1000 elements)
    calls = []
    real = fused._run_split_axis
    monkeypatch.setattr(fused, "_run_split_axis", lambda *a: calls.append(a[-1]) or real(*a))
    shapes = {"rows": ((1031, 1029), (1031, 1)), "last axis": ((1031, 1029), (1029,)),
              "outer": ((1031, 1), (1, 1029)), "second axis": ((3, 1031, 400), (3, 1, 400)),
              "blocks": ((7, 130, 1200), (7, 130, 1)), "bfloat16": ((1031, 1029), (1031, 1))}[case]
    x = rng.standard_normal(shapes[0]).astype(np.float32)
    s = rng.standard_normal(shapes[1]).astype(np.float32)
    if case == "bfloat16":
        got = mx.exp(mx.array(x, mx.bfloat16) - mx.array(s, mx.bfloat16)) * 2
        xs = mx.array(x, mx.bfloat16).astype(mx.float32)
        ss = mx.array(s, mx.bfloat16).astype(mx.float32)
        want = (mx.exp((xs - ss).astype(mx.bfloat16).astype(mx.float32)).astype(mx.bfloat16).astype(mx.float32)
                * 2).astype(mx.bfloat16)
        np.testing.assert_array_equal(np.asarray(got.astype(mx.float32)), np.asarray(want.astype(mx.float32)))
    else:
        got = mx.exp(mx.array(x) - mx.array(s)) * mx.array(x)
        want = np.exp(x - s) * x
        np.testing.assert_array_equal(np.asarray(got), want)
    assert calls and set(calls) == {1 if case == "second axis" else 0}


def test_a_donating_region_with_a_broadcast_leaf_splits_along_an_axis(rng, monkeypatch):
    # the full-shape leaf that nothing holds takes the result (donate.py) while chunks along axis 0 read the
    # broadcast leaf whole: the result is NumPy's, and the region wrote into the leaf's buffer
    from umx.backends.cpu import fused
    from umx.runtime import threads

    monkeypatch.setattr(threads, "CORES", 5)
    monkeypatch.setattr(threads, "CHUNK_BYTES", 1 << 10)
    calls = []
    real = fused._run_split_axis
    monkeypatch.setattr(fused, "_run_split_axis", lambda *a: calls.append(a[3]) or real(*a))
    xn = rng.standard_normal((1031, 1029)).astype(np.float32)
    sn = rng.standard_normal((1031, 1)).astype(np.float32)
    box = [mx.multiply(mx.array(xn), 2, stream=mx.cpu)]
    mx.eval(box[0])
    address = np.asarray(box[0]).__array_interface__["data"][0]
    y = mx.exp(mx.subtract(box.pop(), mx.array(sn), stream=mx.cpu), stream=mx.cpu)
    mx.eval(y)
    np.testing.assert_array_equal(np.asarray(y), np.exp(xn * 2 - sn))
    assert calls
    assert np.asarray(y).__array_interface__["data"][0] == address  # (donated)


def test_folded_regions_cut_by_rows_run_in_blocks(rng, monkeypatch):
    # each core's chunk of a folded region runs a block of rows at a time, so that the steps' intermediates stay
    # in its cache (a whole chunk's would go to memory and back at every step)
    from umx.backends.cpu import fused, jit
    from umx.runtime import threads

    monkeypatch.setattr(jit, "ENABLED", False)  # (NumPy's passes: a compiled region has no blocks, see jit.py)
    monkeypatch.setattr(threads, "CORES", 2)
    monkeypatch.setattr(threads, "CHUNK_BYTES", 1 << 10)
    monkeypatch.setattr(threads, "BLOCK_PER_CORE", 1000)  # (blocks of 2000 elements at most)
    sizes = []
    real = fused._run_program
    monkeypatch.setattr(fused, "_run_program", lambda steps, values, out=None: sizes.append(out.size) or
                        real(steps, values, out=out))
    x = rng.standard_normal((64, 64, 64, 8)).astype(np.float32)
    mean, scale, b = (rng.standard_normal(8).astype(np.float32) for _ in range(3))
    got = (mx.array(x) - mx.array(mean)) * mx.array(scale) + mx.array(b)
    np.testing.assert_array_equal(np.asarray(got), (x - mean) * scale + b)
    assert len(sizes) > 2 and sum(sizes) == x.size and max(sizes) <= 2000
