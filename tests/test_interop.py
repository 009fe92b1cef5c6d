"""Arrays with NumPy and other libraries: DLPack, ``__array__``, Python protocols, pickling, printing, and the
dtype helpers (finfo, iinfo, issubdtype, result_type, can_cast) checked against NumPy and MLX."""

from __future__ import annotations

import copy
import pickle
import sys

import numpy as np
import pytest
from conftest import assert_close

import umx as mx


# -- DLPack and NumPy ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [mx.bool_, mx.uint8, mx.int16, mx.int32, mx.int64, mx.float16, mx.float32,
                                   mx.float64, mx.complex64])
def test_dlpack_roundtrip(rng, dtype):
    a = mx.array(rng.standard_normal((3, 4)) * 10, dtype)
    n = np.from_dlpack(a)
    assert n.shape == (3, 4) and n.dtype == dtype.np
    np.testing.assert_array_equal(n, np.asarray(a))
    b = mx.from_dlpack(a)
    assert b.dtype == dtype
    np.testing.assert_array_equal(np.asarray(b), np.asarray(a))
    assert a.__dlpack_device__() == (1, 0)


def test_dlpack_views_and_lazy(device, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    t = mx.transpose(mx.array(x), stream=device)  # unevaluated, a view once computed
    np.testing.assert_array_equal(np.from_dlpack(t), x.T)
    b = mx.broadcast_to(mx.array([1.0, 2.0]), (3, 2), stream=device)
    np.testing.assert_array_equal(np.from_dlpack(b), np.broadcast_to([1.0, 2.0], (3, 2)))


def test_from_dlpack_keeps_dtype_and_copies():
    src = np.arange(4, dtype=np.int16)
    a = mx.from_dlpack(src)
    assert a.dtype == mx.int16
    assert mx.from_dlpack(np.arange(4.0)).dtype == mx.float32  # float64 narrows, as in MLX (and mx.array)
    src[0] = 99
    assert a.tolist() == [0.0, 1.0, 2.0, 3.0]
    with pytest.raises(TypeError, match="from_dlpack"):
        mx.from_dlpack([1, 2])


def test_from_dlpack_torch():
    torch = pytest.importorskip("torch")
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    a = mx.from_dlpack(t)
    assert a.dtype == mx.float32 and a.shape == (2, 3)
    assert_close(a, np.arange(6.0).reshape(2, 3))
    assert torch.from_dlpack(a).tolist() == t.tolist()


def test_numpy_conversion_without_copy():
    a = mx.array([1.0, 2.0])
    mx.eval(a)
    assert np.shares_memory(np.asarray(a), np.asarray(a))
    assert np.array(a).tolist() == [1.0, 2.0]
    assert np.array(a, dtype=np.float64).dtype == np.float64
    if sys.version_info >= (3, 12):  # the buffer protocol from Python classes (__buffer__) is 3.12+
        assert bytes(memoryview(a)) == np.array([1.0, 2.0], np.float32).tobytes()


# -- Python protocols ------------------------------------------------------------------------------------------
def test_properties():
    a = mx.zeros((2, 3, 4), mx.int16)
    assert (a.shape, a.ndim, a.size, a.itemsize, a.nbytes, a.dtype) == ((2, 3, 4), 3, 24, 2, 48, mx.int16)
    assert a.T.shape == (4, 3, 2)
    assert mx.ones(3, mx.bfloat16).itemsize == 2
    assert mx.array(2.5).item() == 2.5 and isinstance(mx.array(3).item(), int)
    assert mx.array([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    assert mx.array(True).tolist() is True


def test_len_iter_hash_bool():
    a = mx.array([[1, 2], [3, 4]])
    assert len(a) == 2
    rows = list(a)
    assert [r.tolist() for r in rows] == [[1, 2], [3, 4]]
    with pytest.raises(TypeError):
        len(mx.array(1))
    with pytest.raises(TypeError):
        iter(mx.array(1)).__next__()
    assert hash(a) == hash(a) and hash(a) != hash(mx.array([[1, 2], [3, 4]]))
    assert {a: 1}[a] == 1
    with pytest.raises(ValueError):
        mx.array([1, 2]).item()
    with pytest.raises(ValueError):
        bool(mx.array([1, 2]))
    assert bool(mx.array([3])) and float(mx.array(2)) == 2.0 and int(mx.array(2.7)) == 2
    assert complex(mx.array(1 + 2j)) == 1 + 2j
    assert [0, 1, 2][mx.array(1)] == 1


def test_pickle_and_copy(device):
    a = mx.exp(mx.arange(3), stream=device)  # unevaluated: pickling evaluates
    b = pickle.loads(pickle.dumps(a))
    assert b.dtype == mx.float32 and np.array_equal(np.asarray(b), np.asarray(a))
    h = pickle.loads(pickle.dumps(mx.array([1.5, 3.0], mx.bfloat16)))
    assert h.dtype == mx.bfloat16 and h.tolist() == [1.5, 3.0]
    c = copy.copy(a)
    d = copy.deepcopy(a)
    a[0] = 7.0  # rebinds a only
    assert np.asarray(c)[0] == 1.0 and np.asarray(d)[0] == 1.0 and np.asarray(a)[0] == 7.0


# -- printing ---------------------------------------------------------------------------------------------------
def test_print_like_mlx():
    assert repr(mx.array([1, 2.5, 1 / 3])) == "array([1, 2.5, 0.333333], dtype=float32)"
    assert repr(mx.array(3)) == "array(3, dtype=int32)"
    assert repr(mx.array([True, False])) == "array([True, False], dtype=bool)"
    assert repr(mx.arange(10)) == "array([0, 1, 2, ..., 7, 8, 9], dtype=int32)"
    assert repr(mx.arange(6)) == "array([0, 1, 2, 3, 4, 5], dtype=int32)"
    assert repr(mx.array([[1, 2], [3, 4]])) == "array([[1, 2],\n       [3, 4]], dtype=int32)"
    big = repr(mx.arange(40).reshape(10, 4))
    assert big.splitlines()[3] == "       ..." + ","
    assert big.endswith("[36, 37, 38, 39]], dtype=int32)")
    assert repr(mx.arange(8).reshape(2, 2, 2)) == ("array([[[0, 1],\n        [2, 3]],\n       [[4, 5],\n"
                                                    "        [6, 7]]], dtype=int32)")
    assert repr(mx.array([1 + 2j, 1 - 1j])) == "array([1+2j, 1-1j], dtype=complex64)"
    assert repr(mx.array([np.nan, np.inf, -np.inf, 1e-5, 1234567.0])) == \
        "array([nan, inf, -inf, 1e-05, 1.23457e+06], dtype=float32)"
    assert repr(mx.zeros((0,))) == "array([], dtype=float32)"
    assert str(mx.array([1, 2])) == repr(mx.array([1, 2]))


def test_printoptions():
    x = mx.array([1.0, 2.123456])
    with mx.printoptions(precision=2):
        assert repr(x) == "array([1.00, 2.12], dtype=float32)"
        assert mx.get_printoptions().precision == 2
    assert mx.get_printoptions().precision == -1
    mx.set_printoptions(precision=3)
    try:
        assert repr(x) == "array([1.000, 2.123], dtype=float32)"
    finally:
        mx.set_printoptions(precision=-1)
    assert repr(x) == "array([1, 2.12346], dtype=float32)"
    assert isinstance(mx.get_printoptions(), mx.PrintOptions)
    assert mx.get_printoptions()["precision"] == -1  # MLX's default; readable as a mapping too


# -- dtype helpers -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("d", [mx.float16, mx.float32, mx.float64])
def test_finfo_matches_numpy(d):
    f, n = mx.finfo(d), np.finfo(d.np)
    assert (f.bits, f.eps, f.max, f.min, f.tiny) == (n.bits, float(n.eps), float(n.max), float(n.min),
                                                    float(n.tiny))
    assert f.dtype == d


def test_finfo_special():
    b = mx.finfo(mx.bfloat16)
    assert (b.bits, b.eps, b.max) == (16, 2.0**-7, 3.3895313892515355e38)
    c = mx.finfo(mx.complex64)
    assert c.dtype == mx.float32 and c.eps == float(np.finfo(np.float32).eps)
    with pytest.raises(ValueError, match="finfo"):
        mx.finfo(mx.int32)


@pytest.mark.parametrize("d", [mx.uint8, mx.uint16, mx.uint32, mx.uint64, mx.int8, mx.int16, mx.int32, mx.int64])
def test_iinfo_matches_numpy(d):
    i, n = mx.iinfo(d), np.iinfo(d.np)
    assert (i.bits, i.min, i.max) == (n.bits, int(n.min), int(n.max))
    with pytest.raises(ValueError, match="iinfo"):
        mx.iinfo(mx.float32)


def test_issubdtype_and_categories():
    pairs = [(mx.float32, mx.floating, True), (mx.float16, mx.inexact, True), (mx.complex64, mx.floating, False),
             (mx.complex64, mx.complexfloating, True), (mx.int8, mx.signedinteger, True),
             (mx.uint8, mx.signedinteger, False), (mx.uint32, mx.integer, True), (mx.int64, mx.number, True),
             (mx.bool_, mx.number, False), (mx.bool_, mx.generic, True), (mx.floating, mx.inexact, True),
             (mx.inexact, mx.floating, False), (mx.float32, mx.float32, True), (mx.float32, mx.float64, False),
             (mx.bfloat16, mx.floating, True)]
    for a, b, want in pairs:
        assert mx.issubdtype(a, b) is want, (a, b)
    npmap = {mx.floating: np.floating, mx.inexact: np.inexact, mx.complexfloating: np.complexfloating,
             mx.signedinteger: np.signedinteger, mx.unsignedinteger: np.unsignedinteger, mx.integer: np.integer,
             mx.number: np.number, mx.generic: np.generic}
    for d in (mx.bool_, mx.uint8, mx.int32, mx.float16, mx.float32, mx.float64, mx.complex64):
        for cat, ncat in npmap.items():
            assert mx.issubdtype(d, cat) == np.issubdtype(d.np, ncat), (d, cat)


def test_result_type_and_can_cast():
    assert mx.result_type(mx.int8, mx.uint8) == mx.int16
    assert mx.result_type(mx.uint32, mx.int32) == mx.int64
    assert mx.result_type(mx.int64, mx.float16) == mx.float16
    assert mx.result_type(mx.float16, mx.bfloat16) == mx.float32
    assert mx.result_type(mx.array([1], mx.int8), 1) == mx.int8
    assert mx.result_type(mx.array([1], mx.int8), 1.5) == mx.float32
    assert mx.result_type(mx.zeros(2, mx.float16), 1.5) == mx.float16
    for a in (mx.bool_, mx.uint8, mx.int8, mx.int32, mx.uint32, mx.float16, mx.float32, mx.float64):
        for b in (mx.bool_, mx.uint8, mx.int8, mx.int32, mx.uint32, mx.float16, mx.float32, mx.float64):
            assert mx.can_cast(a, b) == np.can_cast(a.np, b.np), (a, b)
    assert mx.can_cast(mx.bfloat16, mx.float32) and not mx.can_cast(mx.float32, mx.bfloat16)
    assert mx.can_cast(mx.uint8, mx.bfloat16) and not mx.can_cast(mx.bfloat16, mx.float16)


@pytest.mark.skipif(not mx.is_available(mx.gpu), reason="no CUDA GPU (CuPy and a device)")
def test_cupy_and_torch_share_gpu_results():
    import cupy

    x = np.random.default_rng(3).standard_normal((64, 8)).astype(np.float32)
    y = mx.exp(mx.array(x), stream=mx.gpu)
    got = cupy.asarray(y)  # through __cuda_array_interface__: the device memory itself
    np.testing.assert_allclose(cupy.asnumpy(got), np.exp(x), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(mx.from_dlpack(got)), np.exp(x), rtol=1e-6)
    host = mx.exp(mx.array(x), stream=mx.cpu)
    assert not hasattr(host, "__cuda_array_interface__")
