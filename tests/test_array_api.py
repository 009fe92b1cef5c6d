"""The array object as MLX's: construction, conversions, operators (in-place ones too), formatting, the array API
namespace and dtype helpers."""

from __future__ import annotations

import gc
import operator
import sys
import weakref

import numpy as np
import pytest
from conftest import assert_close

import umx as mx


# -- construction ------------------------------------------------------------------------------------------------
def test_from_bytes_like_keeps_their_type():
    assert mx.array(b"Hello").dtype == mx.uint8
    assert mx.array(b"Hello").tolist() == [72, 101, 108, 108, 111]
    assert mx.array(bytearray([1, 2, 3])).tolist() == [1, 2, 3]
    m = mx.array(memoryview(b"abcd"))
    assert m.dtype == mx.uint8 and m.tolist() == [97, 98, 99, 100]
    i16 = mx.array(memoryview(np.arange(3, dtype=np.int16)))
    assert i16.dtype == mx.int16 and i16.tolist() == [0, 1, 2]


def test_bytes_of_an_array_are_its_elements_in_row_major_order():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert bytes(mx.array(x).T) == x.T.tobytes()  # (a transposed view: its elements in the view's order)
    assert bytes(mx.array([1, 2], mx.uint8)) == b"\x01\x02"
    h = mx.array([1.5, -2.0], mx.bfloat16)
    assert bytes(h) == np.array([0x3FC0, 0xC000], np.uint16).tobytes()  # (bfloat16: its 16 bits)
    a = mx.array(x)
    assert_close(a.__div__(2), x / 2)
    assert_close(a.__rdiv__(1), 1 / np.where(x == 0, 1, x) + np.where(x == 0, np.inf, 0))


@pytest.mark.parametrize("kind", ["i4", "u2", "f4", "f8", "c8"])
def test_big_endian_numpy_is_converted(kind):
    src = np.arange(6).astype(">" + kind).reshape(2, 3)
    a = mx.array(src)
    assert_close(a, src.astype("=" + kind))
    assert a.dtype == mx.array(src.astype("=" + kind)).dtype


def test_ragged_and_non_numeric_lists_raise():
    for bad in ([[1, 2], [3]], [[0, 1], [[0, 1], 1]], [[[], []], [[1.0, 2.0], []]]):
        with pytest.raises(ValueError, match="non-uniform"):
            mx.array(bad)
    with pytest.raises(ValueError):
        mx.array([[0, 1], ["hello", 1]])
    with pytest.raises(ValueError):
        mx.array([1, None])


def test_lists_of_arrays_stack_lazily_and_differentiate(device):
    x = mx.add(mx.array([1.0, 2.0]), 0.0, stream=device)  # unevaluated
    z = mx.array([x, mx.array([3.0, 4.0], mx.float16), [5, 6]])
    assert z.shape == (3, 2) and z.dtype == mx.float32
    assert z._data is None  # stays in the graph
    assert z.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert mx.array([x, x], mx.int32).dtype == mx.int32
    g = mx.grad(lambda v: (mx.array([v, v * 3.0]) * 2.0).sum())(mx.array([1.0, 1.0]))
    assert g.tolist() == [8.0, 8.0]
    with pytest.raises(ValueError, match="non-uniform"):
        mx.array([x, 1.0])
    with pytest.raises(ValueError, match="non-uniform"):
        mx.array([1.0, x])


def test_from_array_shares_values_in_a_new_object(device):
    a = mx.add(mx.array([1, 2, 3]), 0, stream=device)
    for b in (mx.array(a), mx.asarray(a), a[...], a[:]):
        assert b is not a
        b[0] = 9  # rebinds b only
        assert b.tolist() == [9, 2, 3]
    assert a.tolist() == [1, 2, 3]
    c = mx.array(a, mx.float32)
    assert c.dtype == mx.float32 and c.tolist() == [1.0, 2.0, 3.0]


def test_shape_dimensions_are_32_bit():
    with pytest.raises(OverflowError, match="2147483648"):
        mx.array(np.empty(2**31, dtype=np.bool_))  # (np.empty touches no pages)
    with pytest.raises(OverflowError):
        mx.zeros((2**32, 2**32))
    with pytest.raises(OverflowError):
        mx.ones(2**31)
    with pytest.raises(TypeError):
        mx.zeros((2.5,))
    with pytest.raises(TypeError):
        mx.full((2, "3"), 1.0)
    assert mx.zeros((np.int64(2), mx.array(3))).shape == (2, 3)


def test_like_ops_take_a_dtype(device):
    a = mx.array([1, 2], mx.int32)
    for fn in (mx.zeros_like, mx.ones_like, mx.empty_like):
        out = fn(a, mx.float16, stream=device)
        assert out.dtype == mx.float16 and out.shape == (2,)
        assert fn(a, stream=device).dtype == mx.int32
    assert mx.ones_like(a, dtype=mx.bool_).tolist() == [True, True]


def test_torch_and_ml_dtypes_bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.array([1.5, 2.5, -3.0], dtype=ml_dtypes.bfloat16)
    a = mx.array(x)
    assert a.dtype == mx.bfloat16 and a.tolist() == [1.5, 2.5, -3.0]
    assert mx.asarray(x[0]).shape == () and mx.array(x[0], mx.float32).item() == 1.5
    torch = pytest.importorskip("torch")
    t = torch.tensor([1.0, 2.0, 3.0], dtype=torch.bfloat16)
    assert mx.array(t).dtype == mx.bfloat16 and mx.array(t).tolist() == [1.0, 2.0, 3.0]


def test_dlpack_capsules_and_copies():
    torch = pytest.importorskip("torch")
    t = torch.arange(4, dtype=torch.float32)
    a = mx.array(torch.utils.dlpack.to_dlpack(t))
    assert a.dtype == mx.float32 and a.tolist() == [0, 1, 2, 3]
    b = mx.from_dlpack(torch.utils.dlpack.to_dlpack(t))
    t += 10  # copies: later writes do not show through
    assert a.tolist() == b.tolist() == [0, 1, 2, 3]
    assert mx.from_dlpack(torch.arange(3, dtype=torch.float64)).dtype == mx.float32  # MLX's mapping
    with pytest.raises(ValueError):
        mx.from_dlpack(np.arange(3, dtype=np.float32), copy=False)
    x = mx.array([1.5], mx.bfloat16)
    assert mx.from_dlpack(x).dtype == mx.bfloat16  # umx's own arrays keep every dtype


def test_asarray_copy_argument():
    a = mx.array([1, 2, 3])
    assert mx.asarray(a, copy=True).tolist() == [1, 2, 3]
    assert mx.asarray(a, mx.float32, copy=True).dtype == mx.float32
    for src in (a, [1, 2, 3], np.arange(3, dtype=np.int32)):
        with pytest.raises(ValueError, match="copy"):
            mx.asarray(src, copy=False)
    src = np.arange(3, dtype=np.int32)
    b = mx.asarray(src)
    src[0] = 7
    assert b.tolist() == [0, 1, 2]


# -- conversions -------------------------------------------------------------------------------------------------
def test_numpy_views_keep_the_array_alive(device):
    a = mx.arange(3, stream=device)
    ref = weakref.ref(a)
    view = np.array(a, copy=False)
    assert not view.flags.owndata
    del a
    gc.collect()
    assert ref() is not None and view.tolist() == [0, 1, 2]
    del view
    gc.collect()
    assert ref() is None


def test_numpy_conversion_copies_by_default(device):
    a = mx.ones((2, 2), stream=device)
    out = np.array(a)
    assert out.flags.owndata and out.flags.writeable
    b = mx.broadcast_to(mx.ones((2, 2)), (5, 2, 2), stream=device)
    view = np.array(b, copy=False)
    assert view.shape == (5, 2, 2) and (view == 1).all()
    if device == mx.cpu:
        assert view.strides == (0, 8, 4)  # the broadcast itself, not a copy


@pytest.mark.skipif(sys.version_info < (3, 12), reason="Python classes export buffers from 3.12 (__buffer__)")
def test_buffer_protocol():
    a = mx.array([[1, 2], [3, 4]], mx.int16)
    m = memoryview(a)
    assert m.format == "h" and m.shape == (2, 2) and m.tolist() == [[1, 2], [3, 4]]
    assert bytes(mx.array([1, 2], mx.uint8)) == b"\x01\x02"


def test_format(device):
    x = mx.multiply(mx.array(0.35487), 1.0, stream=device)
    assert f"{x:.1f}" == "0.4"
    assert f"{mx.arange(3)[0]:.2f}" == "0.00"
    assert f"{mx.array(7)}" == "7"
    v = mx.array([1, 2, 3])
    assert f"{v}" == "array([1, 2, 3], dtype=int32)" == str(v)
    with pytest.raises(TypeError):
        f"{v:.2f}"


def test_array_namespace():
    ns = mx.array(1.0).__array_namespace__()
    assert ns is mx
    for name in ("array", "asarray", "add", "result_type", "can_cast", "isdtype", "vecdot"):
        assert hasattr(ns, name), name
    assert ns.asarray([1, 2], dtype=mx.float32).dtype == mx.float32
    with pytest.raises(ValueError):
        mx.array(1.0).__array_namespace__(api_version="2023.12")


def test_astype_takes_the_stream_positionally(device):
    a = mx.array([1.5, -2.5])
    out = a.astype(mx.int32, device)
    assert out.dtype == mx.int32 and out.tolist() == [1, -2]
    assert a.astype(mx.float64, stream=mx.cpu).dtype == mx.float64


# -- operators ---------------------------------------------------------------------------------------------------
def test_equality_with_non_arrays_is_identity():
    a = mx.array([1, 2, 3])
    for other in ([1, 2, 3], (1, 2, 3), "abc", None, object()):
        assert (a == other) is False
        assert (a != other) is True
        assert (other == a) is False
    assert (a == np.array([1, 2, 3])).tolist() == [True, True, True]


@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv,
                                operator.mod, operator.pow, operator.lt, operator.le, operator.gt, operator.ge])
def test_operators_refuse_sequences_and_strings(op):
    a = mx.array([1.0, 2.0, 3.0])
    for other in ([1, 2, 3], (1, 2, 3), "abc"):
        with pytest.raises(ValueError):
            op(a, other)
        if not isinstance(other, str):  # (a string on the left is Python's own: "%s" % a formats a)
            with pytest.raises(ValueError):
                op(other, a)
    assert op(a, mx.array([1.0, 1.0, 1.0])).shape == (3,)  # arrays and scalars still work
    assert op(a, 2).shape == (3,)


def test_bitwise_operators_refuse_floats():
    with pytest.raises(ValueError):
        mx.array(1.0) & mx.array(1)
    with pytest.raises(ValueError):
        mx.array(1) | 1.5
    assert (mx.array(True) & True).item() is True
    assert (mx.array(False) ^ True).item() is True
    assert (mx.array(6) & 3).item() == 2


@pytest.mark.parametrize(("dtype", "value"), [(mx.int32, 3_000_000_000), (mx.int8, 300), (mx.uint8, -1),
                                              (mx.uint32, -1), (mx.int32, -(2**31) - 1)])
def test_python_ints_that_overflow_the_dtype_raise(device, dtype, value):
    a = mx.array([1, 2], dtype)
    with pytest.raises(ValueError, match="overflow"):
        mx.add(a, value, stream=device)
    with pytest.raises(ValueError, match="overflow"):
        a * value


def test_python_ints_that_fit_keep_the_dtype(device):
    assert (mx.array([3], mx.uint8) - 1).tolist() == [2]
    assert (mx.array([2], mx.int8) + 127).dtype == mx.int8
    assert (mx.array([1], mx.int32) >> 40).dtype == mx.int32


INPLACE = [("__iadd__", np.add), ("__isub__", np.subtract), ("__imul__", np.multiply),
           ("__ifloordiv__", np.floor_divide), ("__imod__", np.mod), ("__ipow__", np.power),
           ("__ixor__", np.bitwise_xor), ("__iand__", np.bitwise_and), ("__ior__", np.bitwise_or),
           ("__ilshift__", np.left_shift), ("__irshift__", np.right_shift)]


@pytest.mark.parametrize(("name", "ref"), INPLACE)
def test_inplace_operators_keep_the_object(device, name, ref):
    x = np.array([5, 6, 7], np.int32)
    a = mx.add(mx.array(x), 0, stream=device)
    alias = a
    out = getattr(a, name)(mx.array([1, 2, 3]))
    assert out is a is alias
    assert_close(a, ref(x, np.array([1, 2, 3], np.int32)), dtype=mx.int32)


def test_inplace_readers_keep_the_old_value(device):
    a = mx.add(mx.array([1.0, 2.0]), 0.0, stream=device)
    before = a * 10  # reads a (unevaluated)
    same = a
    a += 1
    mx.eval(a)
    a += 1  # now a reads an evaluated value
    later = a * 10
    assert same is a
    assert before.tolist() == [10.0, 20.0]
    assert a.tolist() == [3.0, 4.0] and later.tolist() == [30.0, 40.0]


def test_inplace_changes_dtype_and_shape_as_mlx(device):
    a = mx.array([1], mx.int32)
    a += 1.5
    assert a.dtype == mx.float32 and a.tolist() == [2.5]
    b = mx.array([1.0])
    b += mx.array([1.0, 2.0])
    assert b.shape == (2,)
    m = mx.array([[1.0, 2.0], [3.0, 4.0]])
    n = m
    n @= m
    assert n is m and m.tolist() == [[7.0, 10.0], [15.0, 22.0]]
    with pytest.raises(ValueError):
        c = mx.array([1])
        c /= 1  # division cannot stay integer
    with pytest.raises(ValueError):
        d = mx.array([1.0])
        d += [1.0]


def test_inplace_on_an_aliased_array_updates_every_name(device):
    a = mx.zeros((3,), stream=device)
    b = a
    held = [a]
    b += 2
    assert a is b and held[0].tolist() == [2.0, 2.0, 2.0]


def test_inplace_in_a_loop_with_evals(device):
    # The same object with new data each step, read by an identical batch each step (a graph on a GPU).
    w = mx.zeros((16,), stream=device)
    m = mx.ones((16, 16), stream=device)
    for step in range(6):
        w -= 0.5
        mx.eval(w)
        y = mx.sum(m @ w, stream=device) + mx.max(w, stream=device) + mx.min(w, stream=device)
        assert y.item() == pytest.approx(-0.5 * (step + 1) * (16 * 16 + 2))


def test_inplace_costs_no_heap_scan_when_unaliased():
    from umx.ops import _methods

    x = mx.array([1.0]) * 1.0
    x += 1.0
    assert _methods._last_refs[0] <= _methods._inplace_refs[0]  # the baseline: no search of the heap


# -- dtypes ------------------------------------------------------------------------------------------------------
def test_dtype_and_category_reprs():
    assert str(mx.float32) == repr(mx.float32) == "mlx.core.float32"
    assert str(mx.bool_) == "mlx.core.bool"
    assert repr(mx.floating) == str(mx.floating) == "DtypeCategory.floating"


def test_can_cast_and_isdtype():
    assert mx.can_cast(mx.array([1, 2], mx.int8), mx.int32)
    assert not mx.can_cast(mx.int16, mx.int8)
    assert mx.can_cast(mx.uint8, mx.int16) and not mx.can_cast(mx.uint16, mx.int16)
    assert mx.isdtype(mx.float32, ("integral", "real floating"))
    assert not mx.isdtype(mx.bool_, "numeric")
    with pytest.raises(ValueError):
        mx.isdtype(mx.int32, "not a kind")


_NO_CHANGE = [
    lambda x: x.astype(x.dtype), lambda x: mx.reshape(x, x.shape), lambda x: mx.broadcast_to(x, x.shape),
    lambda x: mx.transpose(x, tuple(range(x.ndim))), lambda x: mx.squeeze(x), lambda x: mx.expand_dims(x, ()),
    lambda x: mx.moveaxis(x, 0, 0), lambda x: mx.swapaxes(x, 0, 0), lambda x: mx.real(x),
    lambda x: mx.roll(x, 1, axis=()), lambda x: mx.flip(x, axis=()), lambda x: mx.fft.fftshift(x, axes=()),
    lambda x: mx.atleast_1d(x), lambda x: mx.atleast_2d(x), lambda x: mx.concatenate([x]), lambda x: mx.round(x),
    lambda x: mx.nan_to_num(x),
]


@pytest.mark.parametrize("dtype", [mx.float32, mx.int32])
@pytest.mark.parametrize("op", _NO_CHANGE)
def test_an_op_that_changes_nothing_returns_a_new_object(device, op, dtype):
    with mx.stream(device):
        x = mx.array([[1, 2], [3, 4]], dtype=dtype)
        y = op(x)
        assert y is not x
        y[0] = 9  # rebinding the result leaves the input alone (as in MLX)
        assert x.tolist() == [[1, 2], [3, 4]] and y.tolist()[0] == [9, 9]
