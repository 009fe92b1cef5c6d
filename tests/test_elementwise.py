"""Elementwise ops, table-driven over the names in umx/ops/elementwise.py, against NumPy in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_close, assert_stored

import umx as mx
from umx.ops.elementwise import _BINARY_NAMES, _UNARY_NAMES
from umx.primitives import BINARY, UNARY

_erf = np.vectorize(math.erf, otypes=[np.float64])

# name: (NumPy reference on float64, input domain (low, high))
UNARY_REF = {
    "abs": (np.abs, None), "negative": (np.negative, None), "sign": (np.sign, None),
    "square": (np.square, None),
    "floor": (np.floor, None), "ceil": (np.ceil, None), "trunc": (np.trunc, None),
    "conjugate": (np.conjugate, None), "exp": (np.exp, None), "expm1": (np.expm1, None),
    "log": (np.log, (0.1, 5)), "log2": (np.log2, (0.1, 5)), "log10": (np.log10, (0.1, 5)),
    "log1p": (np.log1p, (-0.5, 5)), "sqrt": (np.sqrt, (0, 5)), "rsqrt": (lambda x: 1 / np.sqrt(x), (0.1, 5)),
    "reciprocal": (np.reciprocal, (0.5, 5)), "sin": (np.sin, None), "cos": (np.cos, None),
    "tan": (np.tan, (-1.2, 1.2)), "arcsin": (np.arcsin, (-0.99, 0.99)), "arccos": (np.arccos, (-0.99, 0.99)),
    "arctan": (np.arctan, None), "sinh": (np.sinh, None), "cosh": (np.cosh, None), "tanh": (np.tanh, None),
    "arcsinh": (np.arcsinh, None), "arccosh": (np.arccosh, (1.01, 5)), "arctanh": (np.arctanh, (-0.95, 0.95)),
    "degrees": (np.degrees, None), "radians": (np.radians, None),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), None),
    "erf": (_erf, None), "erfinv": (None, (-0.99, 0.99)),
    "isnan": (np.isnan, None), "isinf": (np.isinf, None), "isfinite": (np.isfinite, None),
    "isposinf": (np.isposinf, None), "isneginf": (np.isneginf, None), "logical_not": (np.logical_not, None),
    "bitwise_invert": (np.invert, None),
}

# name: NumPy reference
BINARY_REF = {
    "add": np.add, "subtract": np.subtract, "multiply": np.multiply, "divide": np.true_divide,
    "floor_divide": np.floor_divide, "remainder": np.remainder, "power": np.power, "maximum": np.maximum,
    "minimum": np.minimum, "arctan2": np.arctan2, "logaddexp": np.logaddexp, "equal": np.equal,
    "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal, "greater": np.greater,
    "greater_equal": np.greater_equal, "logical_and": np.logical_and, "logical_or": np.logical_or,
    "logical_xor": np.logical_xor, "bitwise_and": np.bitwise_and, "bitwise_or": np.bitwise_or,
    "bitwise_xor": np.bitwise_xor, "left_shift": np.left_shift, "right_shift": np.right_shift,
}

SHAPES = [(), (0,), (7,), (3, 4), (2, 1, 3)]


def test_tables_cover_every_op():
    assert set(UNARY_REF) == set(_UNARY_NAMES)
    assert set(BINARY_REF) == set(_BINARY_NAMES)
    for name in list(_UNARY_NAMES) + list(_BINARY_NAMES):
        assert callable(getattr(mx, name)), name


def _inputs(rng, shape, domain, kind):
    if kind == "int":
        return rng.integers(-50, 50, shape).astype(np.int32)
    lo, hi = domain or (-3, 3)
    x = rng.uniform(lo, hi, shape)
    if kind == "bool":
        special = np.array([np.nan, np.inf, -np.inf])[rng.integers(0, 3, shape)]
        x = np.where(rng.random(shape) < 0.2, special, x)
    return x.astype(np.float32)


@pytest.mark.parametrize("name", sorted(_UNARY_NAMES))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_unary_float32(device, rng, name, shape):
    ref, domain = UNARY_REF[name]
    prim = UNARY[_UNARY_NAMES[name]]
    x = _inputs(rng, shape, domain, prim.kind)
    out = getattr(mx, name)(mx.array(x), stream=device)
    assert out.shape == shape
    if prim.kind == "bool":
        assert out.dtype == mx.bool_
        np.testing.assert_array_equal(np.asarray(out), ref(x))
    elif prim.kind == "int":
        assert out.dtype == mx.int32
        np.testing.assert_array_equal(np.asarray(out), ref(x))
    elif name == "erfinv":
        assert out.dtype == mx.float32
        assert_close(_erf(np.asarray(out).astype(np.float64)), x, rtol=1e-5, atol=1e-6)
    else:
        assert out.dtype == mx.float32
        assert_close(out, ref(x.astype(np.float64)), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name", sorted(n for n in _UNARY_NAMES if UNARY[_UNARY_NAMES[n]].kind != "int"))
def test_unary_other_dtypes(device, rng, name):
    ref, domain = UNARY_REF[name]
    prim = UNARY[_UNARY_NAMES[name]]
    lo, hi = domain or (-3, 3)
    xi = rng.integers(math.ceil(lo), math.floor(hi) + 1, (5,)).astype(np.int32)
    out = getattr(mx, name)(mx.array(xi), stream=device)
    want = {"float": mx.float32, "same": mx.int32, "bool": mx.bool_}[prim.kind]
    assert out.dtype == want
    if name != "erfinv":
        assert_close(out, ref(xi.astype(np.float64)), rtol=1e-6, atol=1e-6)
    xh = rng.uniform(lo, hi, (6,)).astype(np.float16)
    out = getattr(mx, name)(mx.array(xh), stream=device)
    assert out.dtype == (mx.bool_ if prim.kind == "bool" else mx.float16)
    if name != "erfinv":
        assert_close(out, ref(xh.astype(np.float64)), rtol=3e-3, atol=3e-3)
    xd = rng.uniform(lo, hi, (6,))
    out = getattr(mx, name)(mx.array(xd, dtype=mx.float64), stream=device)
    assert out.dtype == (mx.bool_ if prim.kind == "bool" else mx.float64)
    if name not in ("erfinv", "erf"):
        assert_close(out, ref(xd), rtol=1e-12, atol=1e-12)


def test_unary_complex(device, rng):
    z = (rng.standard_normal(5) + 1j * rng.standard_normal(5)).astype(np.complex64)
    a = mx.array(z)
    for name in ("exp", "sqrt", "negative", "square", "conjugate", "abs", "sin", "log"):
        out = getattr(mx, name)(a, stream=device)
        ref = getattr(np, {"conjugate": "conj", "abs": "abs"}.get(name, name))(z.astype(np.complex128))
        assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert_close(mx.real(a, stream=device), z.real, dtype=mx.float32)
    assert_close(mx.imag(a, stream=device), z.imag, dtype=mx.float32)
    assert_close(mx.imag(mx.array([1.0, 2.0]), stream=device), [0.0, 0.0])


def _binary_inputs(rng, name, prim, sa, sb):
    if prim.kind == "int":
        if name in ("left_shift", "right_shift"):
            return rng.integers(0, 1000, sa).astype(np.int32), rng.integers(0, 8, sb).astype(np.int32)
        return rng.integers(-100, 100, sa).astype(np.int32), rng.integers(-100, 100, sb).astype(np.int32)
    x = rng.uniform(-3, 3, sa).astype(np.float32)
    y = rng.uniform(-3, 3, sb).astype(np.float32)
    if name == "power":
        x = np.abs(x) + 0.1
    if name in ("floor_divide", "remainder", "divide"):
        y = np.where(np.abs(y) < 0.3, 1.0, y).astype(np.float32)
    if prim.kind == "bool":
        y = np.where(rng.random(sb) < 0.3, np.round(x.mean()) if x.size else 0.0, y).astype(np.float32)
        x = np.round(x)
        y = np.round(y)
    return x, y


@pytest.mark.parametrize("name", sorted(_BINARY_NAMES))
@pytest.mark.parametrize(("sa", "sb"), [((), ()), ((5,), (5,)), ((3, 1), (1, 4)), ((2, 3, 4), (4,)),
                                         ((0, 3), (1, 3)), ((), (2, 2))], ids=str)
def test_binary(device, rng, name, sa, sb):
    prim = BINARY[_BINARY_NAMES[name]]
    x, y = _binary_inputs(rng, name, prim, sa, sb)
    out = getattr(mx, name)(mx.array(x), mx.array(y), stream=device)
    ref = BINARY_REF[name](x.astype(np.float64) if prim.kind != "int" else x,
                           y.astype(np.float64) if prim.kind != "int" else y)
    assert out.shape == np.broadcast_shapes(sa, sb)
    if prim.kind == "bool":
        assert out.dtype == mx.bool_
        np.testing.assert_array_equal(np.asarray(out), ref)
    elif prim.kind == "int":
        assert out.dtype == mx.int32
        np.testing.assert_array_equal(np.asarray(out), ref)
    else:
        assert out.dtype == mx.float32
        assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "floor_divide", "remainder", "maximum",
                                  "minimum", "power", "equal", "less"])
def test_binary_integers(device, rng, name):
    x = rng.integers(1, 20, (4, 3)).astype(np.int32)
    y = rng.integers(1, 5, (3,)).astype(np.int32)
    out = getattr(mx, name)(mx.array(x), mx.array(y), stream=device)
    ref = BINARY_REF[name](x, y)
    assert out.dtype == (mx.bool_ if ref.dtype == bool else mx.int32)
    np.testing.assert_array_equal(np.asarray(out), ref)


def test_bitwise_refuses_floats(device):
    with pytest.raises(TypeError, match="bitwise_and"):
        mx.bitwise_and(mx.array([1.0]), mx.array([2.0]), stream=device)
    with pytest.raises(TypeError):
        mx.bitwise_invert(mx.array([1.0]), stream=device)
    out = mx.bitwise_and(mx.array([True, False]), mx.array([True, True]), stream=device)
    assert out.tolist() == [True, False]


def test_bool_inputs(device):
    t = mx.array([True, False])
    with pytest.raises(ValueError, match="negative"):
        mx.negative(t, stream=device)
    with pytest.raises(ValueError):
        _ = -t
    assert mx.sign(t, stream=device).tolist() == [True, False]
    assert mx.abs(t, stream=device).tolist() == [True, False]
    assert (t + t).tolist() == [True, False] and (t + t).dtype == mx.bool_
    # as MLX (NumPy refuses): a bool difference is the exclusive or
    assert mx.subtract(t, mx.array([True, True]), stream=device).tolist() == [False, True]
    assert (mx.array([False, True]) - t).dtype == mx.bool_
    with pytest.raises(ValueError, match="subtract"):  # MLX refuses it too: it scatters the negated values
        t.at[mx.array([0])].subtract(True)
    assert t.at[mx.array([1, 1])].subtract(-2.5).tolist() == [True, True]  # False + (2.5 != 0)
    assert t.at[mx.array([1])].subtract(0.0).tolist() == [True, False]
    assert mx.maximum(t, mx.array([False, True]), stream=device).tolist() == [True, True]


def test_compare_with_none():
    a = mx.array([1, 2])
    assert (a == None) is False  # noqa: E711 (what `==` with None gives)
    assert (a != None) is True  # noqa: E711
    assert a not in [None, "x"]


def test_aliases():
    assert mx.asin is mx.arcsin and mx.atan2 is mx.arctan2 and mx.pow is mx.power and mx.conj is mx.conjugate
    assert mx.bitwise_left_shift is mx.left_shift


OPS = [("+", np.add), ("-", np.subtract), ("*", np.multiply), ("/", np.true_divide), ("//", np.floor_divide),
       ("%", np.remainder), ("**", np.power)]


@pytest.mark.parametrize(("sym", "ref"), OPS, ids=[o[0] for o in OPS])
def test_python_operators(device, rng, sym, ref):
    x = rng.uniform(0.5, 3, (3, 4)).astype(np.float32)
    y = rng.uniform(0.5, 3, (4,)).astype(np.float32)
    a, b = mx.array(x), mx.array(y)
    f = eval(f"lambda p, q: p {sym} q")  # noqa: S307 (the operator under test)
    assert_close(f(a, b), ref(x.astype(np.float64), y.astype(np.float64)), rtol=1e-5, atol=1e-5)
    assert_close(f(a, 2), ref(x.astype(np.float64), 2), rtol=1e-5, atol=1e-5)
    assert_close(f(2, a), ref(2, x.astype(np.float64)), rtol=1e-5, atol=1e-5)
    assert_close(f(a, 1.5), ref(x.astype(np.float64), 1.5), rtol=1e-5, atol=1e-5)
    assert_close(f(1.5, a), ref(1.5, x.astype(np.float64)), rtol=1e-5, atol=1e-5)
    assert_close(f(a, y), ref(x.astype(np.float64), y.astype(np.float64)), rtol=1e-5, atol=1e-5)
    assert f(a, 2).dtype == mx.float32 and f(2, a).dtype == mx.float32


def test_integer_and_bitwise_operators(device):
    a = mx.array([12, 5, -3])
    assert (a & 6).tolist() == [4, 4, 4]
    assert (6 | a).tolist() == [14, 7, -1]
    assert (a ^ 3).tolist() == [15, 6, -2]
    assert (a << 1).tolist() == [24, 10, -6]
    assert (a >> 1).tolist() == [6, 2, -2]
    assert (1 << mx.array([1, 2])).tolist() == [2, 4]
    assert (~a).tolist() == [-13, -6, 2]
    assert (~mx.array([True, False])).tolist() == [False, True]
    assert (-a).tolist() == [-12, -5, 3]
    assert (+a).tolist() == [12, 5, -3]
    assert abs(a).tolist() == [12, 5, 3]
    q, r = divmod(a, 4)
    assert q.tolist() == [3, 1, -1] and r.tolist() == [0, 1, 1]
    assert (2 ** mx.array([1, 3])).tolist() == [2, 8]
    assert (a % 5).tolist() == [2, 0, 2]
    assert (7 % mx.array([4, -4])).tolist() == [3, -1]


def test_comparisons(device, rng):
    x = rng.integers(0, 4, (3, 4)).astype(np.float32)
    y = rng.integers(0, 4, (4,)).astype(np.float32)
    a, b = mx.array(x), mx.array(y)
    for sym in ("==", "!=", "<", "<=", ">", ">="):
        f = eval(f"lambda p, q: p {sym} q")  # noqa: S307
        out = f(a, b)
        assert out.dtype == mx.bool_
        np.testing.assert_array_equal(np.asarray(out), f(x, y))
        np.testing.assert_array_equal(np.asarray(f(a, 2)), f(x, 2))
        np.testing.assert_array_equal(np.asarray(f(2, a)), f(2, x))
    assert a.__hash__() == id(a)  # arrays stay hashable with == overloaded
    assert len({a, b}) == 2


def test_signed_zero_scalars(device):
    x = mx.array([1.0, -2.0])
    assert np.signbit(np.asarray(mx.multiply(x, 0.0, stream=device))).tolist() == [False, True]
    assert np.signbit(np.asarray(mx.multiply(x, -0.0, stream=device))).tolist() == [True, False]
    assert np.signbit(np.asarray(mx.full((1,), -0.0, stream=device))).tolist() == [True]


def test_nan_inf_handling(device):
    a = mx.array([0.0, 1.0, -1.0])
    out = mx.divide(a, 0.0, stream=device).tolist()
    assert math.isnan(out[0]) and out[1] == math.inf and out[2] == -math.inf
    assert mx.log(mx.array([0.0]), stream=device).item() == -math.inf
    assert mx.sigmoid(mx.array([-1000.0, 0.0, 1000.0]), stream=device).tolist() == [0.0, 0.5, 1.0]
    assert mx.maximum(mx.array([np.nan]), 1.0, stream=device).tolist()[0] != 1.0  # NaN propagates


@pytest.mark.parametrize(("sc", "sx", "sy"), [((4,), (4,), (4,)), ((2, 1), (1, 3), ()), ((), (2,), (2, 2))])
def test_where(device, rng, sc, sx, sy):
    c = rng.random(sc) > 0.5
    x = rng.standard_normal(sx).astype(np.float32)
    y = rng.integers(0, 5, sy).astype(np.int32)
    out = mx.where(mx.array(c), mx.array(x), mx.array(y), stream=device)
    assert out.dtype == mx.float32
    assert_close(out, np.where(c, x, y))
    out = mx.where(mx.array(c), mx.array(y), 2.5, stream=device)
    assert out.dtype == mx.float32
    assert_close(out, np.where(c, y, 2.5))
    out = mx.where(mx.array(c), 1, mx.array(y), stream=device)
    assert out.dtype == mx.int32
    assert_close(out, np.where(c, 1, y))
    assert_close(mx.where(mx.array([1, 0]), 1.0, 2.0, stream=device), [1.0, 2.0])
    with pytest.raises(ValueError, match="where"):
        mx.where(mx.array([True, False, True]), mx.ones(2), 0.0)


def test_clip(device, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    a = mx.array(x)
    assert_close(mx.clip(a, -0.5, 0.5, stream=device), np.clip(x, -0.5, 0.5))
    assert_close(mx.clip(a, None, 0.0, stream=device), np.minimum(x, 0.0))
    assert_close(mx.clip(a, 0.0, None, stream=device), np.maximum(x, 0.0))
    lo = rng.standard_normal(4).astype(np.float32) - 1
    assert_close(mx.clip(a, mx.array(lo), 1.0, stream=device), np.clip(x, lo, 1.0))
    assert mx.clip(mx.array([1, 5, 9], dtype=mx.int8), 2, 6, stream=device).dtype == mx.int8
    with pytest.raises(ValueError):
        mx.clip(a, None, None)


def test_round(device):
    x = np.array([0.5, 1.5, 2.5, -0.5, 1.234567, -2.675], np.float32)
    assert_close(mx.round(mx.array(x), stream=device), np.round(x))
    # to 2 places, -2.675 (not exact in float32) may round either way on the GPU
    assert_close(mx.round(mx.array(x), 2, stream=device), np.round(x, 2), atol=0.011 if device == mx.gpu else 1e-6)
    assert mx.round(mx.array([3, 4]), stream=device).dtype == mx.int32
    assert_close(mx.array(x).round(), np.round(x))


def test_methods(device, rng):
    x = rng.uniform(0.5, 2, (2, 3)).astype(np.float32)
    a = mx.array(x)
    for name in ("abs", "exp", "log", "sqrt", "square", "sin", "cos", "reciprocal", "floor", "ceil", "log1p"):
        ref = {"abs": np.abs, "reciprocal": np.reciprocal}.get(name, getattr(np, name))
        assert_close(getattr(a, name)(), ref(x.astype(np.float64)), rtol=1e-6, atol=1e-6)
    assert_close(a.rsqrt(), 1 / np.sqrt(x.astype(np.float64)), rtol=1e-6)


def test_scalar_and_list_operands(device):
    assert_close(mx.add(1.0, 2.0, stream=device), 3.0, dtype=mx.float32)
    assert mx.add(1, 2, stream=device).dtype == mx.int32
    assert_close(mx.multiply([1, 2], mx.array([3.0, 4.0]), stream=device), [3.0, 8.0])
    assert_close(mx.array([1.0, 2.0]) + np.array([1.0, 1.0]), [2.0, 3.0])
    assert_close(mx.exp(0.0, stream=device), 1.0)
    with pytest.raises(TypeError):
        mx.add(mx.array([1.0]), "a")


ALL_DTYPES = [mx.bool_, mx.uint8, mx.uint16, mx.uint32, mx.uint64, mx.int8, mx.int16, mx.int32, mx.int64,
              mx.float16, mx.bfloat16, mx.float32, mx.float64, mx.complex64]


def _eval_or_refuse(build):
    """Build an op: it either refuses at the call (TypeError/ValueError) or evaluates to data of its dtype."""
    try:
        out = build()
    except (TypeError, ValueError):
        return None
    data = np.asarray(out)  # a kernel error here is a bug: the call should have refused the dtypes
    assert_stored(out, f"result {out.dtype}")
    assert data.shape == out.shape, (out.dtype, data.shape, out.shape)
    return out


@pytest.mark.parametrize("name", sorted(_UNARY_NAMES))
def test_unary_every_dtype_refuses_or_runs(device, name):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", np.exceptions.ComplexWarning)
        for d in ALL_DTYPES:
            _eval_or_refuse(lambda d=d: getattr(mx, name)(mx.array([1, 0, 1], dtype=d), stream=device))


def test_binary_every_dtype_pair_refuses_or_runs(device):
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=400, deadline=None, derandomize=True)
    @given(name=st.sampled_from(sorted(_BINARY_NAMES)), a=st.sampled_from(ALL_DTYPES),
           b=st.sampled_from(ALL_DTYPES))
    def check(name, a, b):
        x, y = mx.array([1, 2, 3], dtype=a), mx.array([1, 1, 2], dtype=b)
        _eval_or_refuse(lambda: getattr(mx, name)(x, y, stream=device))

    check()


def test_complex_rules(device):
    z = mx.array([3 + 4j, -1j])
    a = mx.abs(z, stream=device)
    assert a.dtype == mx.float32
    assert_close(a, [5.0, 1.0])
    for f in (mx.floor, mx.ceil, mx.trunc, mx.erf, mx.erfinv, mx.expm1, mx.sigmoid):  # as MLX: ValueError
        with pytest.raises(ValueError, match="complex"):
            f(z, stream=device)
    for f in (mx.remainder, mx.arctan2):
        with pytest.raises(ValueError, match="complex"):
            f(z, 1.0, stream=device)


@pytest.mark.parametrize("name", sorted(_UNARY_NAMES))
def test_unary_fast_path_agrees_with_the_rules(name):
    """An op's fast path (a table of dtypes that need no cast or check) gives what the full rules give."""
    from umx.ops.elementwise import _unary, unary_fast_dtypes

    prim = UNARY[_UNARY_NAMES[name]]
    fast = unary_fast_dtypes(prim)
    for d in ALL_DTYPES:
        a = mx.array([1, 0, 1], dtype=d)
        try:
            out = _unary(prim, name, a, mx.cpu)
        except (TypeError, ValueError):
            out = None
        direct = out is not None and out._prim is prim and out._inputs[0] is a
        assert (d in fast) == direct, (name, d)
        if direct:
            assert fast[d] is out.dtype, (name, d)


@pytest.mark.parametrize("name", sorted(_BINARY_NAMES))
def test_binary_fast_path_agrees_with_the_rules(name):
    """A binary op's fast path (operands of one dtype, or a floating array and a Python float) builds the node that
    the full rules build: same dtype, same operands, same shape."""
    from umx.ops.elementwise import _LOGICAL, _binary, _logical

    prim = BINARY[_BINARY_NAMES[name]]
    op = getattr(mx, name)
    rules = _logical if name in _LOGICAL else _binary  # (the logical ops' scalar rule comes before the shared one)
    for d in ALL_DTYPES:
        a, b = mx.array([[1], [0]], dtype=d), mx.array([1, 0, 1], dtype=d)
        for x, y in ((a, b), (a, a), (a, 1.5), (1.5, b)):
            try:
                want = rules(prim, name, x, y, mx.cpu)
            except (TypeError, ValueError) as e:
                with pytest.raises(type(e)):
                    op(x, y, stream=mx.cpu)
                continue
            got = op(x, y, stream=mx.cpu)
            assert (got.dtype, got.shape, got._prim) == (want.dtype, want.shape, want._prim), (name, d)
            for i, j in zip(got._inputs, want._inputs):  # the same operands (scalars: the same cached constant),
                assert i is j or (i._prim == j._prim and i._inputs == j._inputs), (name, d)  # or the same cast


def test_fast_paths_make_the_node_that_array_node_makes():
    """The unary and binary fast paths build their nodes inline (the hot path): every field as ``node`` sets it,
    and creation numbers still increase with creation order."""
    from umx.array import array, node

    a = mx.array([1.0, 2.0])
    for got, prim, inputs in ((mx.exp(a, stream=mx.cpu), UNARY["Exp"], (a,)),
                              (mx.add(a, a, stream=mx.cpu), BINARY["Add"], (a, a))):
        want = node(prim, inputs, (2,), mx.float32, mx.default_stream(mx.cpu))
        for slot in array.__slots__:
            if slot in ("__weakref__", "_seq"):
                continue
            assert getattr(got, slot) == getattr(want, slot) if slot != "_inputs" else got._inputs == inputs, slot
        assert got._seq < want._seq
    first, second = mx.exp(a, stream=mx.cpu), mx.add(a, 1.0, stream=mx.cpu)
    assert first._seq < second._seq


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8", "uint16", "int64", "bool"])
@pytest.mark.parametrize("other", ["zero", "array", "scalar"])
def test_large_selects_keep_numpys_bits(rng, monkeypatch, dtype, other):
    # the CPU selects large inputs on their bits (kernels._where), alone and as a fused region's last step that
    # writes its chunk in place: NaNs, infinities and signed zeros come through as numpy.where gives them
    from umx.backends.cpu import fused
    from umx.runtime import threads

    monkeypatch.setattr(threads, "CORES", 3)  # (the region cut into chunks, each written in place)
    monkeypatch.setattr(threads, "CHUNK_BYTES", 1 << 10)
    monkeypatch.setattr(fused, "SPLIT_MIN_SIZE", 0)
    shape = (64, 65, 8)  # (over the CPU's least fused region)
    special = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, 1.5, -2.0])
    if dtype == "bool":
        x = rng.random(shape) > 0.5
    elif np.dtype(dtype).kind == "f":
        x = rng.choice(special, shape).astype(dtype)
    else:
        x = rng.integers(-100, 100, shape).astype(dtype)
    c = rng.random(shape) > 0.5
    y = {"zero": np.zeros((), dtype), "scalar": np.asarray(x.flat[5], dtype),
         "array": x[::-1].copy()}[other]
    want = np.where(c, x, y)
    lone = mx.where(mx.array(c), mx.array(x), mx.array(y), stream=mx.cpu)
    fused = mx.where(mx.array(c) & (mx.array(x) == mx.array(x)), mx.array(x), mx.array(y), stream=mx.cpu)
    for got, ref in ((lone, want), (fused, np.where(c & (x == x), x, y))):
        got = np.asarray(got)
        assert got.dtype == ref.dtype
        assert got.tobytes() == ref.tobytes()


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_floor_divide_floors_the_quotient_before_rounding_it(device, rng, dtype):
    """A float16 quotient just under an integer that float16 rounds up to it (91.125 / 2.3984375 = 37.99) floors
    to the integer below, as NumPy's and MLX's CPU do, alone and inside a fused region (the remainder too), and
    divmod's parts then put ``a`` back together."""
    a = np.concatenate([[91.125, 27.328125, 60.3125], rng.uniform(1, 100, 4000)]).astype(dtype)
    b = np.concatenate([[2.3984375, 3.037109375, 1.67578125], rng.uniform(1, 100, 4000)]).astype(dtype)
    want = np.floor(a.astype(np.float64) / b.astype(np.float64))
    exact = want == np.floor(np.float32(a) / np.float32(b))  # (float32 itself rounds a few quotients up)
    with mx.stream(device):
        q, r = mx.divmod(mx.array(a), mx.array(b))
        fused = mx.floor_divide(mx.array(a), mx.array(b)) * 1 + 0
        fused_rest = mx.remainder(mx.array(a), mx.array(b)) * 1 + 0
        got, rest, got_fused = np.asarray(q), np.asarray(r), np.asarray(fused)
        got_fused_rest = np.asarray(fused_rest)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got[exact], want[exact].astype(dtype))
    np.testing.assert_array_equal(got_fused[exact], want[exact].astype(dtype))
    if dtype == "float16":  # (float32's a - q * b rounds its product: an ulp of it off)
        np.testing.assert_array_equal(got_fused_rest[exact], np.remainder(a, b)[exact])
    np.testing.assert_allclose(got_fused_rest[exact], np.remainder(a, b)[exact], rtol=0, atol=1e-4)
    if dtype == "float16":
        assert got[:3].tolist() == [37.0, 8.0, 35.0]
        np.testing.assert_allclose(np.float32(got) * np.float32(b) + np.float32(rest), np.float32(a), rtol=2e-3)


def test_float16_rsqrt_is_the_nearest_float16(rng):
    """A float16 rsqrt is computed in float32 and rounded once, so it is the float16 nearest the exact value (its
    root rounded to float16, then its reciprocal, missed by an ulp for about a quarter of inputs)."""
    x = rng.uniform(0.01, 1000, 20000).astype(np.float16)
    want = (1 / np.sqrt(x.astype(np.float64))).astype(np.float16)
    got = np.asarray(mx.rsqrt(mx.array(x), stream=mx.cpu))
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, want)
