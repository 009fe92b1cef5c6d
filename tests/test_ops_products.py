"""Products against NumPy: einsum, einsum_path, tensordot, inner, outer, kron, addmm, vecdot, convolve."""

import numpy as np
import pytest
from conftest import assert_close

import umx as mx


def _r(rng, *shape, dtype=np.float32):
    if np.dtype(dtype).kind in "iu":
        return rng.integers(-3, 4, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


EINSUMS = [
    ("ij,jk->ik", [(3, 4), (4, 5)]), ("ij,jk", [(3, 4), (4, 5)]), ("ii->i", [(4, 4)]), ("ii", [(4, 4)]),
    ("ij->ji", [(2, 3)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 2)]),
    ("i,i->", [(6,), (6,)]), ("i,j->ij", [(3,), (4,)]), ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    ("i...->...", [(3, 2, 2)]), ("ba", [(2, 3)]), ("ij,ij->ij", [(0, 3), (0, 3)]),
]


@pytest.mark.parametrize("subs,shapes", EINSUMS)
def test_einsum(device, rng, subs, shapes):
    xs = [_r(rng, *s) for s in shapes]
    got = mx.einsum(subs, *map(mx.array, xs), stream=device)
    exp = np.einsum(subs, *[x.astype(np.float64) for x in xs])
    assert_close(got, exp, rtol=1e-4, atol=1e-4)


def test_einsum_dtypes_and_errors(device, rng):
    a, b = _r(rng, 3, 4, dtype=np.int32), _r(rng, 4, dtype=np.int32)
    assert_close(mx.einsum("ij,j->i", mx.array(a), mx.array(b), stream=device), a @ b, dtype=mx.int32)
    got = mx.einsum("ij,j->i", mx.array(a), mx.array(b.astype(np.float32)), stream=device)
    assert got.dtype == mx.float32
    with pytest.raises(ValueError, match="einsum"):
        mx.einsum("ij,jk->ik", mx.zeros((2, 3)), mx.zeros((4, 5)))
    with pytest.raises(ValueError, match="einsum"):
        mx.einsum("ij->i", mx.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="einsum"):
        mx.einsum("ij,jk->ik", mx.zeros((2, 3)))
    with pytest.raises(ValueError, match="einsum"):
        mx.einsum("ij->k", mx.zeros((2, 3)))


def test_einsum_path(rng):
    xs = [_r(rng, 2, 3), _r(rng, 3, 40), _r(rng, 40, 2)]
    path, report = mx.einsum_path("ij,jk,kl->il", *map(mx.array, xs))
    exp = np.einsum_path("ij,jk,kl->il", *xs, optimize="greedy")
    assert path == [tuple(p) for p in exp[0][1:]]
    assert isinstance(report, str) and "ij,jk,kl->il" in report


@pytest.mark.parametrize("axes", [0, 1, 2, ([1, 0], [0, 1]), ([-1], [0]), (2, 0)])
def test_tensordot(device, rng, axes):
    a, b = _r(rng, 3, 4, 5), _r(rng, 4, 3, 5) if axes == ([1, 0], [0, 1]) else _r(rng, 5, 3, 2)
    if axes == 2:
        b = _r(rng, 4, 5, 2)
    if axes == (2, 0):
        b = _r(rng, 5, 2)
    assert_close(mx.tensordot(mx.array(a), mx.array(b), axes, stream=device), np.tensordot(a, b, axes),
                 rtol=1e-4, atol=1e-4)


def test_tensordot_errors():
    with pytest.raises(ValueError, match="tensordot"):
        mx.tensordot(mx.zeros((2, 3)), mx.zeros((4, 5)), 1)
    with pytest.raises(ValueError, match="tensordot"):
        mx.tensordot(mx.zeros((2, 3)), mx.zeros((3,)), 3)
    with pytest.raises(ValueError, match="tensordot"):
        mx.tensordot(mx.zeros((2, 3)), mx.zeros((3,)), ([1, 0], [0]))


@pytest.mark.parametrize("sa,sb", [((4,), (4,)), ((2, 4), (3, 4)), ((), (3,)), ((2, 3, 4), (4,))])
def test_inner_outer_kron(device, rng, sa, sb):
    a, b = _r(rng, *sa), _r(rng, *sb)
    A, B = mx.array(a), mx.array(b)
    assert_close(mx.inner(A, B, stream=device), np.inner(a, b), rtol=1e-4, atol=1e-5)
    assert_close(mx.outer(A, B, stream=device), np.outer(a, b))
    assert_close(mx.kron(A, B, stream=device), np.kron(a, b))
    with pytest.raises(ValueError, match="inner"):
        mx.inner(mx.zeros((2, 3)), mx.zeros(4))


def test_kron_int(device, rng):
    a, b = _r(rng, 2, 3, dtype=np.int32), _r(rng, 3, 1, 2, dtype=np.int32)
    assert_close(mx.kron(mx.array(a), mx.array(b), stream=device), np.kron(a, b), dtype=mx.int32)


def test_addmm(device, rng):
    a, b, c = _r(rng, 3, 4), _r(rng, 4, 5), _r(rng, 3, 5)
    A, B, C = map(mx.array, (a, b, c))
    assert_close(mx.addmm(C, A, B, stream=device), a @ b + c, rtol=1e-4, atol=1e-5)
    assert_close(mx.addmm(C, A, B, alpha=2.0, beta=-0.5, stream=device), 2 * (a @ b) - 0.5 * c, rtol=1e-4,
                 atol=1e-5)
    assert_close(mx.addmm(mx.array(c[0]), A, B, stream=device), a @ b + c[0], rtol=1e-4, atol=1e-5)


def test_vecdot(device, rng):
    a, b = _r(rng, 3, 4), _r(rng, 2, 1, 4)
    assert_close(mx.vecdot(mx.array(a), mx.array(b), stream=device), np.vecdot(a, b), rtol=1e-4, atol=1e-5)
    a2, b2 = _r(rng, 4, 3), _r(rng, 4, 3)
    assert_close(mx.vecdot(mx.array(a2), mx.array(b2), axis=0, stream=device), np.vecdot(a2, b2, axis=0),
                 rtol=1e-4, atol=1e-5)
    c = (rng.standard_normal(4) + 1j * rng.standard_normal(4)).astype(np.complex64)
    assert_close(mx.vecdot(mx.array(c), mx.array(c[::-1].copy()), stream=device), np.vecdot(c, c[::-1]),
                 rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="vecdot"):
        mx.vecdot(mx.zeros(3), mx.zeros(4))
    with pytest.raises(ValueError, match="vecdot"):
        mx.vecdot(mx.zeros(3), mx.zeros(3), axis=1)


@pytest.mark.parametrize("mode", ["full", "same", "valid"])
@pytest.mark.parametrize("n,m", [(7, 3), (3, 7), (5, 5), (1, 4)])
def test_convolve(device, rng, mode, n, m):
    a, v = _r(rng, n), _r(rng, m)
    assert_close(mx.convolve(mx.array(a), mx.array(v), mode, stream=device), np.convolve(a, v, mode),
                 rtol=1e-4, atol=1e-5)


def test_convolve_errors():
    with pytest.raises(ValueError, match="convolve"):
        mx.convolve(mx.zeros((2, 2)), mx.zeros(2))
    with pytest.raises(ValueError, match="convolve"):
        mx.convolve(mx.zeros(0), mx.zeros(2))
    with pytest.raises(ValueError, match="convolve"):
        mx.convolve(mx.zeros(3), mx.zeros(2), mode="circular")


def test_gather_mm(device, rng):
    a, b = _r(rng, 4, 3, 5), _r(rng, 2, 3, 5, 2)
    li = np.array([[0, 3], [1, 1]], np.uint32)
    ri = np.array([5, 0], np.uint32)
    got = mx.gather_mm(mx.array(a), mx.array(b), mx.array(li), mx.array(ri), stream=device)
    exp = a[li] @ b.reshape(-1, 5, 2)[ri]
    assert_close(got, exp, rtol=1e-4, atol=1e-5)
    got = mx.gather_mm(mx.array(a[0]), mx.array(b), rhs_indices=mx.array(ri), stream=device)
    assert_close(got, a[0] @ b.reshape(-1, 5, 2)[ri], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="gather_mm"):
        mx.gather_mm(mx.zeros((2, 3)), mx.zeros((4, 2)))


def test_segmented_mm(device, rng):
    a, b = _r(rng, 3, 10), _r(rng, 10, 4)
    segs = np.array([[0, 4], [4, 10], [2, 2], [0, 10]], np.uint32)
    exp = np.stack([a[:, s:e] @ b[s:e] for s, e in segs])
    got = mx.segmented_mm(mx.array(a), mx.array(b), mx.array(segs), stream=device)
    assert_close(got, exp, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="segmented_mm"):
        mx.segmented_mm(mx.array(a), mx.array(b), mx.array([1, 2, 3]))


def test_block_masked_mm(device, rng):
    bs = 2
    a, b = _r(rng, 2, 5, 4), _r(rng, 2, 4, 3)
    ml = rng.random((2, 3, 2)) > 0.4
    mr = rng.random((2, 2, 2)) > 0.4
    mo = rng.random((2, 3, 2)) > 0.4

    def expand(m, r, c):
        return np.repeat(np.repeat(m, bs, -2), bs, -1)[..., :r, :c]

    exp = ((a * expand(ml, 5, 4)) @ (b * expand(mr, 4, 3))) * expand(mo, 5, 3)
    got = mx.block_masked_mm(mx.array(a), mx.array(b), bs, mx.array(mo), mx.array(ml), mx.array(mr),
                             stream=device)
    assert_close(got, exp, rtol=1e-4, atol=1e-5)
    assert_close(mx.block_masked_mm(mx.array(a), mx.array(b), stream=device), a @ b, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="block_masked_mm"):
        mx.block_masked_mm(mx.array(a), mx.array(b), bs, mask_rhs=mx.array(ml))
