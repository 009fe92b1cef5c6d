"""mx.linalg against NumPy (float64 references) on random, well-conditioned, batched inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

RTOL, ATOL = 2e-4, 2e-4
SHAPES = [(3, 3), (2, 4, 4), (2, 1, 5, 5)]


def _wc(rng, shape, dtype=np.float32):
    """Well-conditioned square matrices: random plus a dominant diagonal."""
    n = shape[-1]
    return (rng.standard_normal(shape) + n * np.eye(n)).astype(dtype)


def _spd(rng, shape):
    a = rng.standard_normal(shape)
    return (a @ np.swapaxes(a, -1, -2) + shape[-1] * np.eye(shape[-1])).astype(np.float32)


def _f64(x):
    return np.asarray(x).astype(np.float64)


# -- norms -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ord_", [None, 0, 1, 2, 3, 0.5, -1, math.inf, -math.inf])
@pytest.mark.parametrize("axis", [0, -1, 1])
def test_vector_norm(device, rng, ord_, axis):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    for keepdims in (False, True):
        got = mx.linalg.norm(mx.array(x), ord_, axis, keepdims, stream=device)
        assert_close(got, np.linalg.norm(_f64(x), ord_, axis, keepdims), RTOL, ATOL, dtype=mx.float32)


@pytest.mark.parametrize("ord_", [None, "fro", "nuc", 1, -1, 2, -2, math.inf, -math.inf])
@pytest.mark.parametrize("axis", [(0, 1), (1, 0), (-1, 0), (1, 2)])
def test_matrix_norm(device, rng, ord_, axis):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    for keepdims in (False, True):
        got = mx.linalg.norm(mx.array(x), ord_, axis, keepdims, stream=device)
        assert_close(got, np.linalg.norm(_f64(x), ord_, axis, keepdims), RTOL, ATOL, dtype=mx.float32)


def test_norm_defaults_and_dtypes(device):
    a = mx.arange(9) - 4
    b = a.reshape(3, 3)
    an, bn = np.arange(9.0) - 4, (np.arange(9.0) - 4).reshape(3, 3)
    assert_close(mx.linalg.norm(a, stream=device), np.linalg.norm(an), dtype=mx.float32)
    assert_close(mx.linalg.norm(b, stream=device), np.linalg.norm(bn), dtype=mx.float32)
    assert_close(mx.linalg.norm(b, 1, stream=device), np.linalg.norm(bn, 1))
    assert_close(mx.linalg.norm(a, math.inf, stream=device), 4.0)
    x3 = mx.arange(24).reshape(2, 3, 4)
    assert_close(mx.linalg.norm(x3, keepdims=True, stream=device), np.linalg.norm(np.arange(24.0)).reshape(1, 1, 1))
    z = np.array([3 + 4j, 1 - 1j], np.complex64)
    assert_close(mx.linalg.norm(mx.array(z), stream=device), np.linalg.norm(z), dtype=mx.float32)
    d = mx.linalg.norm(mx.array(np.ones((2, 2)), mx.float64), stream=device)
    assert d.dtype == mx.float64
    assert_close(mx.matrix_norm(mx.array(bn), "nuc", stream=device), np.linalg.norm(bn, "nuc"), RTOL, ATOL)


def test_norm_errors():
    with pytest.raises(ValueError, match="linalg.norm"):
        mx.linalg.norm(mx.zeros((2, 2, 2)), 1)
    with pytest.raises(ValueError, match="linalg.norm"):
        mx.linalg.norm(mx.zeros(3), "fro")
    with pytest.raises(ValueError, match="linalg.norm"):
        mx.linalg.norm(mx.zeros((2, 2)), 3, axis=(0, 1))
    with pytest.raises(ValueError, match="linalg.norm"):
        mx.linalg.norm(mx.zeros((2, 2, 2)), axis=(0, 1, 2))


# -- factorizations ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5), (2, 4, 3)])
def test_qr(device, rng, shape):
    a = rng.standard_normal(shape).astype(np.float32)
    q, r = mx.linalg.qr(mx.array(a), stream=device)
    k = min(shape[-2:])
    assert q.shape == shape[:-1] + (k,) and r.shape == shape[:-2] + (k, shape[-1])
    assert q.dtype == r.dtype == mx.float32
    assert_close(q @ r, a, RTOL, ATOL)
    assert_close(np.swapaxes(_f64(q), -1, -2) @ _f64(q), np.broadcast_to(np.eye(k), shape[:-2] + (k, k)), RTOL, ATOL)
    assert np.allclose(np.tril(_f64(r), -1), 0)


@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5), (2, 3, 4, 2)])
def test_svd(device, rng, shape):
    a = rng.standard_normal(shape).astype(np.float32)
    u, s, vt = mx.linalg.svd(mx.array(a), stream=device)
    m, n = shape[-2:]
    k = min(m, n)
    assert u.shape == shape[:-1] + (m,) and vt.shape == shape[:-2] + (n, n) and s.shape == shape[:-2] + (k,)
    recon = (_f64(u)[..., :, :k] * _f64(s)[..., None, :]) @ _f64(vt)[..., :k, :]
    np.testing.assert_allclose(recon, a, rtol=RTOL, atol=ATOL)
    assert_close(s, np.linalg.svd(_f64(a), compute_uv=False), RTOL, ATOL)
    only = mx.linalg.svd(mx.array(a), compute_uv=False, stream=device)
    assert isinstance(only, mx.array)
    assert_close(only, np.linalg.svd(_f64(a), compute_uv=False), RTOL, ATOL, dtype=mx.float32)


@pytest.mark.parametrize("shape", SHAPES)
def test_inv_det_slogdet(device, rng, shape):
    a = _wc(rng, shape)
    x = mx.array(a)
    assert_close(mx.linalg.inv(x, stream=device), np.linalg.inv(_f64(a)), RTOL, ATOL, dtype=mx.float32)
    assert_close(mx.linalg.det(x, stream=device), np.linalg.det(_f64(a)), 1e-4, 1e-3, dtype=mx.float32)
    sign, logdet = mx.linalg.slogdet(x, stream=device)
    es, el = np.linalg.slogdet(_f64(a))
    assert_close(sign, es)
    assert_close(logdet, el, RTOL, ATOL)


def test_float64_and_complex(device, rng):
    a = _wc(rng, (3, 3), np.float64)
    got = mx.linalg.inv(mx.array(a, mx.float64), stream=device)
    assert got.dtype == mx.float64
    np.testing.assert_allclose(np.asarray(got), np.linalg.inv(a), rtol=1e-12)
    c = (_wc(rng, (3, 3)) + 1j * rng.standard_normal((3, 3))).astype(np.complex64)
    assert_close(mx.linalg.inv(mx.array(c), stream=device), np.linalg.inv(c.astype(np.complex128)), RTOL, ATOL,
                 dtype=mx.complex64)


@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 2, 5)])
def test_pinv(device, rng, shape):
    a = rng.standard_normal(shape).astype(np.float32)
    got = mx.linalg.pinv(mx.array(a), stream=device)
    assert got.shape == shape[:-2] + (shape[-1], shape[-2])
    assert_close(got, np.linalg.pinv(_f64(a)), 1e-3, 1e-3, dtype=mx.float32)


@pytest.mark.parametrize("upper", [False, True])
def test_tri_inv(device, rng, upper):
    a = _wc(rng, (2, 4, 4))
    t = np.triu(a) if upper else np.tril(a)
    got = mx.linalg.tri_inv(mx.array(a), upper=upper, stream=device)
    assert_close(got, np.linalg.inv(_f64(t)), RTOL, ATOL)
    g = np.asarray(got)
    assert np.all(g == (np.triu(g) if upper else np.tril(g)))


@pytest.mark.parametrize("shape", SHAPES)
def test_cholesky_and_inverse(device, rng, shape):
    a = _spd(rng, shape)
    low = mx.linalg.cholesky(mx.array(a), stream=device)
    assert_close(low, np.linalg.cholesky(_f64(a)), RTOL, ATOL)
    up = mx.linalg.cholesky(mx.array(a), upper=True, stream=device)
    assert_close(np.swapaxes(_f64(up), -1, -2) @ _f64(up), a, RTOL, 1e-3)
    assert np.allclose(np.tril(np.asarray(up), -1), 0)
    ainv = np.linalg.inv(_f64(a))
    assert_close(mx.linalg.cholesky_inv(low, stream=device), ainv, 1e-3, 1e-4)
    assert_close(mx.linalg.cholesky_inv(up, upper=True, stream=device), ainv, 1e-3, 1e-4)


@pytest.mark.parametrize("uplo", ["L", "U"])
def test_eigh(device, rng, uplo):
    a = rng.standard_normal((3, 5, 5)).astype(np.float32)
    sym = (a + np.swapaxes(a, -1, -2)) / 2
    w, v = mx.linalg.eigh(mx.array(sym), UPLO=uplo, stream=device)
    ew = np.linalg.eigvalsh(_f64(sym))
    assert_close(w, ew, RTOL, ATOL, dtype=mx.float32)
    np.testing.assert_allclose(_f64(sym) @ _f64(v), _f64(w)[..., None, :] * _f64(v), rtol=1e-3, atol=1e-3)
    assert_close(mx.linalg.eigvalsh(mx.array(sym), uplo, stream=device), ew, RTOL, ATOL)
    # Only the chosen triangle is read.
    junk = np.triu(sym, 1) * 5 + sym if uplo == "L" else np.tril(sym, -1) * 5 + sym
    assert_close(mx.linalg.eigvalsh(mx.array(junk), uplo, stream=device), ew, RTOL, ATOL)


def test_eig(device, rng):
    a = rng.standard_normal((2, 4, 4)).astype(np.float32)
    w, v = mx.linalg.eig(mx.array(a), stream=device)
    assert w.dtype == v.dtype == mx.complex64 and w.shape == (2, 4) and v.shape == (2, 4, 4)
    wc, vc = np.asarray(w).astype(np.complex128), np.asarray(v).astype(np.complex128)
    np.testing.assert_allclose(_f64(a) @ vc, wc[..., None, :] * vc, rtol=1e-3, atol=1e-3)
    ev = mx.linalg.eigvals(mx.array(a), stream=device)
    key = lambda z: np.sort_complex(np.round(z, 4))  # noqa: E731
    np.testing.assert_allclose(key(np.asarray(ev)), key(np.linalg.eigvals(_f64(a))), rtol=1e-3, atol=1e-3)
    sym = mx.array([[2.0, 0.0], [0.0, 3.0]])
    assert_close(mx.linalg.eigvals(sym, stream=device), np.array([2, 3], np.complex64))


@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5), (2, 3, 4, 4)])
def test_lu(device, rng, shape):
    a = rng.standard_normal(shape).astype(np.float32)
    p, low, up = mx.linalg.lu(mx.array(a), stream=device)
    m, n = shape[-2:]
    k = min(m, n)
    assert p.dtype == mx.uint32 and p.shape == shape[:-1]
    assert low.shape == shape[:-1] + (k,) and up.shape == shape[:-2] + (k, n)
    pl = np.take_along_axis(_f64(low), np.asarray(p).astype(np.int64)[..., None], axis=-2)
    np.testing.assert_allclose(pl @ _f64(up), a, rtol=RTOL, atol=ATOL)
    assert np.allclose(np.triu(np.asarray(low)[..., :k, :k], 1), 0)
    assert np.allclose(np.diagonal(np.asarray(low)[..., :k, :k], axis1=-2, axis2=-1), 1)
    assert np.allclose(np.tril(np.asarray(up), -1), 0)
    assert np.all(np.abs(np.asarray(low)) <= 1 + 1e-6)  # partial pivoting bounds L
    if len(shape) == 2:
        assert_close((low[p] @ up), a, RTOL, ATOL)


def test_lu_factor(device, rng):
    a = rng.standard_normal((2, 5, 5)).astype(np.float32)
    f, piv = mx.linalg.lu_factor(mx.array(a), stream=device)
    assert piv.dtype == mx.uint32 and piv.shape == (2, 5)
    for b in range(2):
        perm = list(range(5))
        for i, j in enumerate(np.asarray(piv[b]).tolist()):
            perm[i], perm[j] = perm[j], perm[i]
        lu = _f64(f[b])
        low, up = np.tril(lu, -1) + np.eye(5), np.triu(lu)
        np.testing.assert_allclose(low @ up, a[b][perm], rtol=RTOL, atol=ATOL)
    try:
        import scipy.linalg
    except ImportError:
        return
    ref, rpiv = scipy.linalg.lu_factor(_f64(a[0]))
    assert_close(f[0], ref, RTOL, ATOL)
    assert np.asarray(piv[0]).tolist() == rpiv.tolist()


def test_lu_singular_does_not_fail(device):
    p, low, up = mx.linalg.lu(mx.zeros((3, 3)), stream=device)
    assert_close(low[p] @ up, np.zeros((3, 3)))


@pytest.mark.parametrize("bshape", [(4,), (4, 1), (4, 3), (2, 4, 3), (3, 1, 4, 2)])
def test_solve(device, rng, bshape):
    a = _wc(rng, (2, 4, 4)) if len(bshape) > 1 else _wc(rng, (4, 4))
    b = rng.standard_normal(bshape).astype(np.float32)
    got = mx.linalg.solve(mx.array(a), mx.array(b), stream=device)
    ref = np.linalg.solve(_f64(a), _f64(b)) if len(bshape) > 1 else np.linalg.solve(_f64(a), _f64(b))
    assert_close(got, ref, RTOL, ATOL, dtype=mx.float32)


@pytest.mark.parametrize("upper", [False, True])
def test_solve_triangular(device, rng, upper):
    a = _wc(rng, (3, 4, 4))
    t = np.triu(a) if upper else np.tril(a)
    b = rng.standard_normal((3, 4, 2)).astype(np.float32)
    got = mx.linalg.solve_triangular(mx.array(a), mx.array(b), upper=upper, stream=device)
    assert_close(got, np.linalg.solve(_f64(t), _f64(b)), RTOL, ATOL)
    v = rng.standard_normal(4).astype(np.float32)
    got = mx.linalg.solve_triangular(mx.array(t[0]), mx.array(v), upper=upper, stream=device)
    assert_close(got, np.linalg.solve(_f64(t[0]), _f64(v)), RTOL, ATOL)


def test_cross(device, rng):
    a = rng.standard_normal((2, 1, 3)).astype(np.float32)
    b = rng.standard_normal((1, 4, 3)).astype(np.float32)
    assert_close(mx.linalg.cross(mx.array(a), mx.array(b), stream=device), np.cross(a, b), RTOL, ATOL)
    a2 = rng.standard_normal((3, 5)).astype(np.float32)
    b2 = rng.standard_normal((3, 5)).astype(np.float32)
    assert_close(mx.linalg.cross(mx.array(a2), mx.array(b2), axis=0, stream=device), np.cross(a2, b2, axis=0),
                 RTOL, ATOL)
    got = mx.linalg.cross(mx.array([1, 2, 3]), mx.array([4, 5, 6]), stream=device)
    assert_close(got, np.cross([1, 2, 3], [4, 5, 6]), dtype=mx.int32)
    two = mx.linalg.cross(mx.array([1.0, 2.0]), mx.array([3.0, 4.0, 5.0]), stream=device)
    assert_close(two, np.cross([1.0, 2.0, 0.0], [3.0, 4.0, 5.0]))
    with pytest.raises(ValueError, match="linalg.cross"):
        mx.linalg.cross(mx.array([1.0]), mx.array([4.0]))


def test_errors_name_the_op():
    with pytest.raises(ValueError, match="linalg.inv"):
        mx.linalg.inv(mx.zeros((2, 3)))
    with pytest.raises(ValueError, match="linalg.inv"):
        mx.linalg.inv(mx.zeros(3))
    with pytest.raises(ValueError, match="linalg.qr"):
        mx.linalg.qr(mx.array([[0, 1], [1, 0]]))
    with pytest.raises(ValueError, match="linalg.eigh"):
        mx.linalg.eigh(mx.zeros((3, 2)))
    with pytest.raises(ValueError, match="linalg.eigh"):
        mx.linalg.eigh(mx.eye(2), UPLO="X")
    with pytest.raises(ValueError, match="linalg.solve"):
        mx.linalg.solve(mx.eye(3), mx.ones(4))
    with pytest.raises(ValueError, match="linalg.lu"):
        mx.linalg.lu(mx.array(0.0))
    with pytest.raises(ValueError, match="linalg.cholesky"):
        mx.linalg.cholesky(mx.zeros((2, 2), mx.float16))


def test_singular_inverse_raises_at_eval(device):
    if device == mx.gpu:
        pytest.skip("cuSOLVER's inverse reports no singular matrix (CuPy returns non-finite values)")
    singular = mx.array([[1.0, 2.0], [2.0, 4.0]])
    for make in (lambda: mx.linalg.inv(singular, stream=device),
                 lambda: mx.linalg.solve(singular, mx.ones((2,)), stream=device)):
        with pytest.raises(np.linalg.LinAlgError):  # NumPy's type (a ValueError)
            mx.eval(make())
        with pytest.raises(RuntimeError):  # and MLX's
            mx.eval(make())


def test_empty_batch(device):
    x = mx.zeros((0, 3, 3))
    assert mx.linalg.inv(x, stream=device).shape == (0, 3, 3)
    q, r = mx.linalg.qr(mx.zeros((0, 3, 2)), stream=device)
    mx.eval(q, r)
    assert q.shape == (0, 3, 2) and r.shape == (0, 2, 2)


@pytest.mark.parametrize("shape", [(0, 3, 3), (3, 0), (0, 2), (2, 0, 4)])
def test_lu_empty(device, shape):
    p, low, up = mx.linalg.lu(mx.zeros(shape), stream=device)
    f, piv = mx.linalg.lu_factor(mx.zeros(shape), stream=device)
    mx.eval(p, low, up, f, piv)
    k = min(shape[-2:])
    assert low.shape == shape[:-1] + (k,) and up.shape == shape[:-2] + (k, shape[-1]) and piv.shape == shape[:-2] + (k,)


def test_lu_property(device):
    hyp = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    @hyp.settings(max_examples=10, deadline=None)
    @hyp.given(st.integers(1, 6), st.integers(1, 6), st.integers(0, 2**31 - 1))
    def check(m, n, seed):
        a = np.random.default_rng(seed).standard_normal((2, m, n))
        p, low, up = mx.linalg.lu(mx.array(a, mx.float64), stream=device)
        pl = np.take_along_axis(np.asarray(low), np.asarray(p).astype(np.int64)[..., None], axis=-2)
        np.testing.assert_allclose(pl @ np.asarray(up), a, atol=1e-12)
        assert sorted(np.asarray(p)[0].tolist()) == list(range(m))

    check()


def test_det_and_slogdet_dtypes_as_mlx(device):
    ints = mx.array([[1, 2], [3, 4]])
    d = mx.linalg.det(ints, stream=device)
    assert d.dtype == mx.float32 and abs(d.item() + 2.0) < 1e-5
    sign, logabs = mx.linalg.slogdet(ints, stream=device)
    assert sign.dtype == logabs.dtype == mx.float32 and sign.item() == -1.0
    half = mx.linalg.det(ints.astype(mx.float16), stream=device)
    assert half.dtype == mx.float16 and half.item() == -2.0
    for f in (mx.linalg.det, mx.linalg.slogdet):  # complex is refused, as MLX
        with pytest.raises(ValueError, match="complex"):
            f(mx.eye(2).astype(mx.complex64), stream=device)


def test_cholesky_of_a_semidefinite_matrix(device):
    # rank 2: LAPACK finds it numerically indefinite in float32; MLX (and umx) still factor it
    root = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], np.float32)
    a = root.T @ root / 81
    low = mx.linalg.cholesky(mx.array(a), stream=device)
    np.testing.assert_allclose(np.asarray(low @ low.T), a, rtol=1e-5, atol=1e-6)
    assert np.allclose(np.triu(np.asarray(low), 1), 0)
    up = mx.linalg.cholesky(mx.array(np.stack([a, a + np.eye(3, dtype=np.float32)])), upper=True, stream=device)
    np.testing.assert_allclose(np.asarray(mx.swapaxes(up, -1, -2) @ up)[1], a + np.eye(3), rtol=1e-5, atol=1e-6)


def test_norm_order_must_be_a_number():
    a = mx.ones((2, 2))
    for f in (mx.linalg.matrix_norm, mx.linalg.norm):
        with pytest.raises(TypeError, match=r"linalg\.(matrix_)?norm: ord must be a number"):
            f(a, ord=mx.array(2.0))
    assert abs(mx.linalg.norm(a, ord=np.float64(2.0), stream=mx.cpu).item() - 2.0) < 1e-5

