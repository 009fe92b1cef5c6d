"""Indexing against NumPy: ints, slices, None, Ellipsis, integer arrays; updates with ``[]=`` and ``.at``."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

KEYS = [
    0, -1, slice(None), slice(1, 3), slice(None, None, -1), slice(-3, None, 2), (1, 2), (slice(None), 0),
    (None, 1), (Ellipsis, 0), (0, Ellipsis, None), (slice(1, None), None, slice(None, 2)), (-2, -1, -3),
    (Ellipsis,), (), (slice(5, 10),), (1, slice(None), slice(None, None, 3)),
]


@pytest.mark.parametrize("key", KEYS, ids=str)
def test_basic_indexing(device, rng, key):
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    out = mx.array(x)[key]
    assert_close(out, x[key])


ARRAY_KEYS = [
    [1, 3], [[0, 1], [2, 3]], ([0, 2], [1, 0]), (slice(None), [2, 0, 2]), ([3, -1], slice(1, 3)),
    (0, [1, 2]), ([[1], [2]], [0, 2]), (Ellipsis, [4, 0]), ([0, 1], slice(None), [1, 2]), (None, [1, 1]),
    (np.array([2, 0]),), ([], ),
]


@pytest.mark.parametrize("key", ARRAY_KEYS, ids=str)
def test_integer_array_indexing(device, rng, key):
    x = rng.standard_normal((4, 3, 5)).astype(np.float32)
    np_key = tuple(np.array(k, dtype=np.int64) if isinstance(k, list) else k for k in key) \
        if isinstance(key, tuple) else np.array(key)
    mx_key = tuple(mx.array(k, dtype=mx.int32) if isinstance(k, list) else k for k in key) \
        if isinstance(key, tuple) else mx.array(key)
    assert_close(mx.array(x)[mx_key], x[np_key])


def test_index_array_dtypes(device):
    a = mx.arange(10)
    for d in (mx.int8, mx.uint8, mx.int16, mx.uint32, mx.int64):
        assert a[mx.array([1, 9], dtype=d)].tolist() == [1, 9]
    assert a[np.array([2, 3])].tolist() == [2, 3]
    assert a[mx.array(4)].item() == 4
    with pytest.raises(TypeError):
        a[mx.array([1.0])]


def test_indexing_0d_and_empty(device):
    s = mx.array(3.0)
    assert s[()].item() == 3.0
    assert s[None].shape == (1,)
    assert s[...].item() == 3.0
    e = mx.zeros((0, 3))
    assert e[:, 1].shape == (0,)
    assert mx.arange(5)[3:1].shape == (0,)


def test_boolean_masks_raise(device):
    a = mx.arange(4)
    with pytest.raises(ValueError, match="boolean"):
        a[mx.array([True, False, True, False])]
    with pytest.raises(ValueError, match="boolean"):
        a[np.array([True, False, True, False])]
    with pytest.raises(ValueError, match="boolean"):
        a[True]


def test_index_errors_at_call(device):
    a = mx.zeros((2, 3))
    with pytest.raises(IndexError):
        a[2]
    with pytest.raises(IndexError):
        a[0, -4]
    with pytest.raises(ValueError):  # MLX's error (NumPy's is an IndexError)
        a[0, 0, 0]
    with pytest.raises(ValueError):
        a[..., 0, ...]
    with pytest.raises(TypeError):
        a["x"]


def test_iterate_rows(device):
    a = mx.array([[1, 2], [3, 4]])
    assert [r.tolist() for r in a] == [[1, 2], [3, 4]]
    with pytest.raises(TypeError):
        iter(mx.array(1)).__next__()


@pytest.mark.parametrize("key", [0, -1, slice(1, 3), (1, 2), (slice(None), 0), (Ellipsis, 1), (None, 2)],
                         ids=str)
def test_setitem_basic(device, rng, key):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    a = mx.array(x)
    a[key] = 7.0
    x[key] = 7.0
    assert_close(a, x)


def test_setitem_values_broadcast_and_cast(device, rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    a = mx.array(x)
    a[1:3] = mx.array([1, 2, 3])
    x[1:3] = [1, 2, 3]
    assert_close(a, x)
    a[:, 0] = np.array([9.0, 8.0, 7.0, 6.0])
    x[:, 0] = [9.0, 8.0, 7.0, 6.0]
    assert_close(a, x)
    i = mx.array([1, 2, 3], dtype=mx.int32)
    i[0] = 2.7
    assert i.dtype == mx.int32 and i.tolist() == [2, 2, 3]
    with pytest.raises(ValueError, match="setitem"):
        a[0] = mx.ones(5)


def test_setitem_integer_arrays(device):
    a = mx.zeros(5)
    a[mx.array([0, 3])] = mx.array([1.0, 2.0])
    assert a.tolist() == [1.0, 0.0, 0.0, 2.0, 0.0]
    b = mx.zeros((3, 3), dtype=mx.int32)
    b[mx.array([0, 2]), mx.array([1, 1])] = 5
    assert b.tolist() == [[0, 5, 0], [0, 0, 0], [0, 5, 0]]


def test_setitem_keeps_old_value_for_earlier_readers(device):
    a = mx.array([1, 2, 3])
    b = mx.add(a, 1, stream=device)  # lazy: reads a's current value
    c = a[1:]
    a[0] = 5
    assert a.tolist() == [5, 2, 3]
    assert b.tolist() == [2, 3, 4]
    assert c.tolist() == [2, 3]
    d = mx.add(a, 1, stream=device)
    a[1] = 0
    assert d.tolist() == [6, 3, 4] and a.tolist() == [5, 0, 3]


def test_setitem_after_eval_and_lazy_base(device):
    a = mx.multiply(mx.arange(4), 2, stream=device)
    b = a * 1
    mx.eval(b)
    a[2] = -1
    assert a.tolist() == [0, 2, -1, 6] and b.tolist() == [0, 2, 4, 6]
    c = mx.exp(mx.zeros(3), stream=device)
    keep = c
    c[1] = 3.0
    assert keep is c  # the same Python object, rebound to the update
    assert c.tolist() == [1.0, 3.0, 1.0]


AT_CASES = [("add", np.add), ("subtract", np.subtract), ("multiply", np.multiply), ("divide", np.divide),
            ("maximum", np.maximum), ("minimum", np.minimum)]


@pytest.mark.parametrize(("name", "ufunc"), AT_CASES, ids=[c[0] for c in AT_CASES])
def test_at_updates_repeated_indices(device, rng, name, ufunc):
    x = rng.uniform(1, 2, (5, 2)).astype(np.float32)
    v = rng.uniform(1, 2, (4, 2)).astype(np.float32)
    idx = np.array([0, 3, 0, 0])
    out = getattr(mx.array(x).at[mx.array(idx)], name)(mx.array(v), stream=device)
    ref = x.astype(np.float64).copy()
    ufunc.at(ref, idx, v.astype(np.float64))
    assert_close(out, ref, rtol=1e-5)


def test_complex_scatter_add_and_its_gradient(device, rng):
    """Complex sums into repeated indices, and the gradient of a complex take_along_axis, which scatters one."""
    x = (rng.standard_normal((5, 3)) + 1j * rng.standard_normal((5, 3))).astype(np.complex64)
    v = (rng.standard_normal((4, 3)) + 1j * rng.standard_normal((4, 3))).astype(np.complex64)
    idx = np.array([0, 3, 0, 0])
    out = mx.array(x).at[mx.array(idx)].add(mx.array(v), stream=device)
    ref = x.astype(np.complex128)
    np.add.at(ref, idx, v.astype(np.complex128))
    np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-6)
    take = np.array([[0, 2], [1, 1], [2, 0]])
    cot = (rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2))).astype(np.complex64)
    _, (g,) = mx.vjp(lambda a: mx.take_along_axis(a, mx.array(take), axis=1, stream=device),
                     [mx.array(x[:3])], [mx.array(cot)])
    gref = np.zeros((3, 3), np.complex128)
    for r in range(3):
        np.add.at(gref[r], take[r], cot[r])
    np.testing.assert_allclose(np.asarray(g), gref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
@pytest.mark.parametrize("spread", ["uniform", "one hot index", "negative"])
def test_sums_into_rows_match_numpy(device, rng, dtype, spread):
    # an embedding's gradient: many rows summed into a table's rows, repeated indices accumulating (the CPU adds
    # them a level of repetition at a time); NumPy's add.at in float64 is the reference
    table = rng.standard_normal((300, 3, 4)).astype(dtype) if dtype != np.int32 else \
        rng.integers(-5, 5, (300, 3, 4)).astype(dtype)
    idx = rng.integers(0, 300, (40, 25))
    if spread == "one hot index":
        idx[:, :20] = 7  # 800 rows into row 7, the rest spread
    elif spread == "negative":
        idx = idx - 300
    vals = (rng.standard_normal((40, 25, 3, 4)) * 4).astype(dtype)
    want = table.astype(np.float64)
    np.add.at(want, idx, vals.astype(np.float64))
    as_mx = dict(dtype=mx.float64) if dtype == np.float64 else {}  # (MLX's default makes float64 data float32)
    got = mx.array(table, **as_mx).at[mx.array(idx.astype(np.int32))].add(mx.array(vals, **as_mx), stream=device)
    tol = 1e-4 if dtype == np.float32 else 1e-12
    assert_close(got, want, rtol=tol, atol=tol)
    if device != mx.cpu:  # (out-of-range indices on a GPU are undefined, as in MLX: no check costs a sync)
        return
    with pytest.raises((IndexError, ValueError)):
        mx.eval(mx.array(table).at[mx.array(np.full(100, 300, np.int32))].add(mx.array(vals[0, :4].repeat(25, 0)),
                                                                           stream=device))


def test_at_scalars_and_slices(device):
    z = mx.zeros(3)
    assert z.at[mx.array([0, 0])].add(1).tolist() == [2.0, 0.0, 0.0]
    assert z.tolist() == [0.0, 0.0, 0.0]  # .at is functional
    a = mx.arange(6).reshape(2, 3)
    assert a.at[:, 1].multiply(10).tolist() == [[0, 10, 2], [3, 40, 5]]
    assert a.at[1].add(mx.array([1, 1, 1])).tolist() == [[0, 1, 2], [4, 5, 6]]
    assert mx.array([7, 9]).at[mx.array([1, 1])].divide(3).tolist() == [7, 1]  # integer: floor division
    assert mx.ones(2).at[0].maximum(5.0).tolist() == [5.0, 1.0]


def test_index_out_of_bounds_raises_from_eval(device):
    if device == mx.gpu:
        pytest.skip("GPU gathers are not bounds-checked (CuPy's, like MLX's)")
    a = mx.arange(3, stream=device)
    with mx.stream(device):
        out = a[mx.array([0, 3])]
    with pytest.raises(IndexError):
        mx.eval(out)
    with pytest.raises(IndexError):
        out.tolist()


def test_setitem_on_array_being_computed():
    """``a[i] = v`` while ``a`` is scheduled (async_eval) must not hand its worker a different node."""
    import threading

    from umx.backends.cpu import executor as cpu_ex
    from umx.primitives import UNARY

    gate = threading.Event()
    cls = type(UNARY["Exp"])
    real = cpu_ex.KERNELS[cls]
    cpu_ex.KERNELS[cls] = lambda p, x: (gate.wait(10), real(p, x))[1]
    try:
        s = mx.new_stream(mx.cpu)
        a = mx.exp(mx.zeros(3), stream=s)
        b = mx.add(a, 1.0, stream=s)
        c = mx.sin(a, stream=mx.new_stream(mx.cpu))
        mx.async_eval(c)
        threading.Timer(0.05, gate.set).start()  # release the kernel while setitem waits (or is about to)
        a[0] = 5.0
    finally:
        gate.set()
        cpu_ex.KERNELS[cls] = real
    assert a.tolist() == [5.0, 1.0, 1.0]
    assert b.tolist() == [2.0, 2.0, 2.0]
    assert_close(c, np.sin(np.ones(3)))


def _keys():
    from hypothesis import strategies as st

    bound = st.one_of(st.none(), st.integers(-6, 6))
    slices = st.builds(slice, bound, bound, st.one_of(st.none(), st.integers(-3, 3).filter(bool)))
    arrays = st.lists(st.integers(-3, 2), min_size=0, max_size=3).map(lambda v: np.array(v, np.int32))
    entry = st.one_of(st.integers(-3, 2), slices, st.none(), st.just(Ellipsis), arrays)
    return st.lists(entry, max_size=4).filter(lambda k: sum(e is Ellipsis for e in k) <= 1
                                              and sum(e is not None and e is not Ellipsis for e in k) <= 3)


def test_getitem_setitem_match_numpy_hypothesis():
    from hypothesis import given, settings

    x = np.arange(60, dtype=np.float32).reshape(4, 3, 5)

    @settings(max_examples=150, deadline=None, derandomize=True)
    @given(key=_keys())
    def check(key):
        key = tuple(key)
        np_key = tuple(k.astype(np.int64) if isinstance(k, np.ndarray) else k for k in key)
        mx_key = tuple(mx.array(k) if isinstance(k, np.ndarray) else k for k in key)
        try:
            want = x[np_key]
        except IndexError:  # out of bounds: umx raises it too, at the call or from eval
            with pytest.raises(IndexError):
                mx.eval(mx.array(x)[mx_key])
            return
        assert_close(mx.array(x)[mx_key], want)
        if not any(isinstance(k, np.ndarray) for k in key):  # repeated indices: NumPy leaves the order open
            a, y = mx.array(x), x.copy()
            y[np_key] = -1.0
            a[mx_key] = -1.0
            assert_close(a, y)

    check()


def test_setitem_while_a_reader_is_in_flight():
    """A reader scheduled before ``a[i] = v`` (here waiting for another stream) still sees the old value."""
    import threading

    from umx.backends.cpu import executor as cpu_ex
    from umx.primitives import UNARY

    gate = threading.Event()
    cls = type(UNARY["Exp"])
    real = cpu_ex.KERNELS[cls]
    cpu_ex.KERNELS[cls] = lambda p, x: (gate.wait(10), real(p, x))[1]
    try:
        s1, s2 = mx.new_stream(mx.cpu), mx.new_stream(mx.cpu)
        a = mx.array([1.0, 2.0, 3.0])
        b = mx.exp(mx.zeros(3), stream=s1)  # held by the gate
        r = mx.add(a, b, stream=s2)  # its worker takes `a` and then waits for b
        mx.async_eval(r)
        threading.Timer(0.05, gate.set).start()
        a[0] = 5.0
    finally:
        gate.set()
        cpu_ex.KERNELS[cls] = real
    assert r.tolist() == [2.0, 3.0, 4.0]
    assert a.tolist() == [5.0, 2.0, 3.0]


def test_setitem_readers_found_wherever_the_array_lives(device):
    """However the updated array is held (variable, attribute, list, dict, argument), earlier readers keep the
    old value: the reader search must not be skipped when readers exist."""

    class Holder:
        pass

    h = Holder()
    h.x = mx.zeros(3)
    r1 = mx.add(h.x, 1, stream=device)
    h.x[0] = 5
    items = [mx.zeros(3)]
    r2 = mx.add(items[0], 1, stream=device)
    items[0][1] = 5
    table = {"k": mx.zeros(3)}
    r3 = mx.add(table["k"], 1, stream=device)
    table["k"][2] = 5

    def update(arr):
        arr[0] = 9

    a = mx.zeros(3)
    r4 = mx.add(a, 1, stream=device)
    update(a)
    for r in (r1, r2, r3, r4):
        assert r.tolist() == [1.0, 1.0, 1.0]
    assert h.x.tolist() == [5, 0, 0] and items[0].tolist() == [0, 5, 0] and table["k"].tolist() == [0, 0, 5]
    assert a.tolist() == [9, 0, 0]
    b = mx.zeros(4)
    for i in range(4):  # a chain of updates, each reading the previous value
        b[i] = b[i - 1] + 1 if i else 1
    assert b.tolist() == [1, 2, 3, 4]


def test_full_slices_are_new_objects(device):
    # mlx-lm's YarnRoPE: y = x[...]; y[..., :2] = 0 must leave the caller's x alone.
    x = mx.reshape(mx.arange(12, stream=device), (3, 4), stream=device)
    for key in (Ellipsis, slice(None), (), (slice(None), slice(None)), (Ellipsis, slice(None))):
        y = x[key]
        assert y is not x
        y[..., :2] = 0
        assert y[:, :2].tolist() == [[0, 0]] * 3
        assert x.tolist() == np.arange(12).reshape(3, 4).tolist()
    mx.eval(x)
    y = x[...]  # of evaluated data: shares it
    y += 1
    assert x[0, 0].item() == 0 and y[0, 0].item() == 1


def test_large_indices_raise(device):
    x = mx.array([0, 1, 2])
    for key in (slice(None, 2**32), 2**32, slice(-(2**31) - 1, None), slice(None, None, 2**31), np.int64(2**40)):
        with pytest.raises(ValueError, match="32-bit"):
            x[key]
    with pytest.raises(ValueError, match="32-bit"):
        x[2**32] = 1
    assert x[: 2**31 - 1].tolist() == [0, 1, 2]
    with pytest.raises(IndexError):
        x[3]


MASK_CASES = [
    # (array shape, mask, values)
    ((3,), [True, False, True], [5.0, 6.0]),
    ((3,), [True, False, True], 7.0),
    ((2, 3), [[True, False, True], [False, True, False]], [7.0, 8.0, 9.0]),
    ((2, 3), [[True, False, True], [False, True, False]], [7.0, 8.0, 9.0, 10.0]),
    ((2, 3), [True, False], [7.0, 8.0, 9.0]),
    ((2, 3), [True, True], [[7.0, 8.0, 9.0], [1.0, 2.0, 3.0]]),
    ((2, 3), [True, False], [[7.0, 8.0, 9.0]]),
    ((2, 3), [False, False], 3.0),
    ((2, 3, 2), [[True, False, True], [False, True, False]], [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
]


@pytest.mark.parametrize(("shape", "mask", "values"), MASK_CASES, ids=str)
def test_setitem_boolean_mask(device, rng, shape, mask, values):
    x = rng.standard_normal(shape).astype(np.float32)
    m, v = np.array(mask), np.array(values, np.float32)
    want = x.copy()
    n = int(m.sum())
    # NumPy takes exactly the values it needs; MLX (and umx) also take the first of a longer run
    want[m] = v[:n] if v.ndim == 1 + x.ndim - m.ndim and len(v) != 1 else v
    with mx.stream(device):
        for mask_form in (mask, np.array(mask), mx.array(mask), mx.logical_not(mx.array(np.logical_not(mask)))):
            a = mx.array(x)
            a[mask_form] = mx.array(values)
            assert_close(a, want)


def test_setitem_boolean_mask_scalars_and_errors(device):
    with mx.stream(device):
        for mask in (True, mx.array(True), np.bool_(True)):
            a = mx.array([1.0, 2.0, 3.0])
            a[mask] = 5.0
            assert a.tolist() == [5.0, 5.0, 5.0]
        a = mx.array([1.0, 2.0])
        a[False] = 5.0
        assert a.tolist() == [1.0, 2.0]
        big = mx.reshape(mx.arange(1000), (10, 10, 10))
        for shape in ((1, 10, 10), (10, 10, 1), (10, 11)):
            with pytest.raises(ValueError, match="mask"):
                big[np.zeros(shape, dtype=bool)] = 0
        with pytest.raises(ValueError, match="selects 3"):
            a = mx.array([1.0, 2.0, 3.0])
            a[[True, True, True]] = mx.array([1.0, 2.0])
        with pytest.raises(ValueError, match="mask"):
            a[mx.array([[True, True, True]])] = 1.0


def test_setitem_boolean_mask_differentiates():
    def f(v):
        a = mx.zeros((3,))
        a[mx.array([True, False, True])] = v
        return (a * mx.array([1.0, 2.0, 3.0])).sum()

    assert mx.grad(f)(mx.array([1.0, 1.0])).tolist() == [1.0, 3.0]


def test_setitem_values_drop_leading_ones(device):
    with mx.stream(device):
        a = mx.array([1, 2, 3])
        a[0] = mx.array([[[7]]])
        assert a.tolist() == [7, 2, 3]
        a[:] = mx.array([[[[1, 1, 1]]]])
        assert a.tolist() == [1, 1, 1]
        s = mx.array(0)
        s[None, None] = mx.array([[[3]]])
        assert s.item() == 3
        z = mx.zeros((2, 2, 2))
        z[:, None, :] = mx.ones((2, 1, 2, 2))
        z[:, None, 0] = mx.ones((1, 2))
        for shape, key, values in (((3,), slice(0, 1), [2, 3]), ((2, 2, 2), (slice(None), None), np.ones((2, 2, 2))),
                                   ((5, 4, 3), (slice(None), 0), np.ones((5, 1, 3)))):
            t = mx.zeros(shape)
            with pytest.raises(ValueError, match="cannot assign"):
                t[key] = mx.array(values)
    for key in ((Ellipsis, Ellipsis), (0, 0, 0)):
        with pytest.raises(ValueError):
            w = mx.zeros((2, 2))
            w[key] = 1


def test_at_needs_an_index():
    a = mx.array([1, 2])
    with pytest.raises(ValueError, match="index"):
        a.at.add(1)
    assert mx.array(1).at[None].add(1).item() == 2  # None is an index (a new axis)


def test_scattered_python_ints_must_fit_the_dtype(device):
    # MLX's check (NumPy would wrap -3 into 253)
    x = mx.array([1, 2, 3], dtype=mx.uint8)
    for update in (lambda: x.at[mx.array([0])].add(-3), lambda: x.at[0].minimum(-1),
                   lambda: x.__setitem__(0, 300), lambda: x.__setitem__(mx.array([True, False, True]), -1)):
        with pytest.raises(ValueError, match="overflow"):
            update()
    assert x.at[mx.array([0, 0])].add(200, stream=device).tolist() == [145, 2, 3]  # (wraps in the array: 401)
    with pytest.raises(ValueError, match="at.subtract: bool values have no negative"):
        mx.array([True, False]).at[0].subtract(True)


@pytest.mark.parametrize("op", ["add", "subtract", "multiply", "maximum", "minimum"])
@pytest.mark.parametrize("key", [np.s_[1:3], np.s_[::-2, 1], np.s_[..., 0], np.s_[1, 2], np.s_[None, :, ::3],
                                 np.s_[()]])
def test_scatter_with_basic_keys_matches_ufunc_at(device, rng, op, key):
    # basic keys take a path of their own (each element selected once: no unbuffered ufunc.at)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    v = rng.standard_normal(x[key].shape).astype(np.float32)
    want = x.copy()
    getattr(np, op).at(want, key, v)
    got = getattr(mx.array(x).at[key], op)(mx.array(v), stream=device)
    assert_close(got, want, rtol=0, atol=0)
    # a scalar value broadcast over the selection
    want = x.copy()
    getattr(np, op).at(want, key, np.float32(0.5))
    assert_close(getattr(mx.array(x).at[key], op)(0.5, stream=device), want, rtol=0, atol=0)
