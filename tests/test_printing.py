"""Printing as MLX does: ``array([1, 2.5, 0.333333], dtype=float32)``."""

from __future__ import annotations

import numpy as np

import umx as mx


def test_mlx_examples(device):
    assert repr(mx.array([1, 2.5, 1 / 3])) == "array([1, 2.5, 0.333333], dtype=float32)"
    assert repr(mx.array(3)) == "array(3, dtype=int32)"
    assert repr(mx.array([True])) == "array([True], dtype=bool)"
    assert repr(mx.add(mx.array([1, 2]), 1, stream=device)) == "array([2, 3], dtype=int32)"
    assert str(mx.array([1.5])) == "array([1.5], dtype=float32)"


def test_two_d_multiline(device):
    out = repr(mx.reshape(mx.arange(6, stream=device), (2, 3), stream=device))
    assert out == "array([[0, 1, 2],\n       [3, 4, 5]], dtype=int32)"
    assert repr(mx.array([[1, 10], [100, 2]])) == "array([[1, 10],\n       [100, 2]], dtype=int32)"
    out = repr(mx.ones((2, 2), stream=device))
    assert out == "array([[1, 1],\n       [1, 1]], dtype=float32)"


def test_dtype_names_and_specials():
    assert repr(mx.array([1, 2], dtype=mx.uint8)) == "array([1, 2], dtype=uint8)"
    assert repr(mx.array([1.5], dtype=mx.float16)) == "array([1.5], dtype=float16)"
    assert repr(mx.array([1.5], dtype=mx.bfloat16)) == "array([1.5], dtype=bfloat16)"
    assert repr(mx.array([np.nan, np.inf, -np.inf])) == "array([nan, inf, -inf], dtype=float32)"
    assert repr(mx.array([True, False])) == "array([True, False], dtype=bool)"
    assert repr(mx.array(2.0)) == "array(2, dtype=float32)"
    assert repr(mx.array([])) == "array([], dtype=float32)"
    assert repr(mx.array([1e-7, 123456789.0])) == "array([1e-07, 1.23457e+08], dtype=float32)"
    assert repr(mx.array([1 + 2j])) == "array([1+2j], dtype=complex64)"


def test_large_arrays_are_elided():
    out = repr(mx.arange(10_000))
    assert "..." in out and out.startswith("array([0, 1, 2") and out.endswith("9999], dtype=int32)")


def test_printoptions():
    a = mx.array([1 / 3])
    with mx.printoptions(precision=2):
        assert repr(a) == "array([0.33], dtype=float32)"
    assert repr(a) == "array([0.333333], dtype=float32)"
    assert mx.get_printoptions()["precision"] == -1  # MLX: -1 means "as many digits as needed"


def test_empty_arrays_show_their_shape(device):
    assert repr(mx.zeros((0, 3), stream=device)) == "array([], shape=(0, 3), dtype=float32)"
    assert repr(mx.zeros((2, 0, 3), mx.int32, stream=device)) == "array([], shape=(2, 0, 3), dtype=int32)"
    assert repr(mx.zeros((0,), stream=device)) == "array([], dtype=float32)"  # the brackets say it all
    assert str(mx.array(np.zeros((3, 0)))) == "array([], shape=(3, 0), dtype=float32)"


def test_format_spec(device):
    x = mx.divide(mx.array(1.0), 3.0, stream=device)
    assert f"{x:.3f}" == "0.333" and f"{x:>8.2e}" == "3.33e-01"
    assert f"{mx.array([1.5])}" == "array([1.5], dtype=float32)"
    assert f"{mx.array(True)}" == "True"
