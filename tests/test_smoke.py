"""Runs first: the package imports, an op evaluates, the result matches NumPy."""

import numpy as np
from conftest import assert_close

import umx as mx


def test_import_and_add(device):
    a = mx.array([1.0, 2.0, 3.0])
    b = mx.add(a, 1, stream=device)
    assert_close(b, np.array([2.0, 3.0, 4.0]), dtype=mx.float32)
