"""The transform rules written to fill the gaps tests/test_primitives.py found: derivatives against central
finite differences (float64), batching rules against a loop over the slices (replayed, never looped)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import umx as mx
from tests.conftest import assert_close

F64 = mx.float64
EPS = 1e-6


def a64(x) -> mx.array:
    return mx.array(np.asarray(x, np.float64), dtype=F64)


def _value(fn, xs: list) -> np.ndarray:
    return np.asarray(fn(*(a64(x) for x in xs)), np.float64)


def check_derivatives(fn, xs: list, rng, rtol=1e-6, atol=1e-7) -> None:
    """``fn``'s vjp and jvp at ``xs`` against central differences of ``fn`` itself."""
    y = _value(fn, xs)
    c = rng.standard_normal(y.shape)
    ts = [rng.standard_normal(np.shape(x)) for x in xs]
    _, grads = mx.vjp(fn, [a64(x) for x in xs], [a64(c)])
    for i, (x, g) in enumerate(zip(xs, grads)):
        want = np.zeros(np.shape(x))
        for j in np.ndindex(*np.shape(x)):
            up, down = [np.array(v, np.float64) for v in xs], [np.array(v, np.float64) for v in xs]
            up[i][j] += EPS
            down[i][j] -= EPS
            want[j] = np.sum(c * (_value(fn, up) - _value(fn, down))) / (2 * EPS)
        assert_close(g, want, rtol=rtol, atol=atol)
    _, (t,) = mx.jvp(fn, [a64(x) for x in xs], [a64(t) for t in ts])
    up = _value(fn, [x + EPS * t for x, t in zip(xs, ts)])
    down = _value(fn, [x - EPS * t for x, t in zip(xs, ts)])
    assert_close(t, (up - down) / (2 * EPS), rtol=rtol, atol=atol)


def _spd(rng, n: int) -> np.ndarray:
    m = rng.standard_normal((n, n))
    return m @ m.T + n * np.eye(n)


def _triangular(rng, n: int, upper: bool) -> np.ndarray:
    m = rng.standard_normal((n, n)) + 3 * np.eye(n)
    return np.triu(m) if upper else np.tril(m)


GRADS = {  # name: (function, input shapes or a maker of inputs from rng)
    "fftshift": (lambda x: mx.fft.fftshift(x, axes=(0, 1)), [(3, 4)]),
    "ifftshift": (lambda x: mx.fft.ifftshift(x), [(5,)]),
    "as_strided windows": (lambda x: mx.as_strided(x, (3, 4), (2, 1), 1), [(10,)]),
    "as_strided of a matrix": (lambda x: mx.as_strided(x, (2, 2, 2), (3, 0, 1), 0), [(2, 3)]),
    "cross": (lambda a, b: mx.linalg.cross(a, b), [(2, 3), (2, 3)]),
    "cross of 2-vectors, broadcast": (lambda a, b: mx.linalg.cross(a, b, axis=0), [(2, 4), (2, 1)]),
    "median, odd": (lambda x: mx.median(x, axis=1), [(2, 5)]),
    "median, even, two axes": (lambda x: mx.median(x, axis=(0, 2), keepdims=True), [(2, 3, 2)]),
    "median of all": (lambda x: mx.median(x), [(3, 2)]),
    "tri_inv lower": (lambda a: mx.linalg.tri_inv(a), lambda r: [_triangular(r, 3, False)]),
    "tri_inv upper": (lambda a: mx.linalg.tri_inv(a, upper=True), lambda r: [r.standard_normal((2, 3, 3))
                                                                              + 3 * np.eye(3)]),
    "solve_triangular, vector": (lambda a, b: mx.linalg.solve_triangular(a, b),
                                 lambda r: [_triangular(r, 3, False), r.standard_normal(3)]),
    "solve_triangular upper, matrices": (lambda a, b: mx.linalg.solve_triangular(a, b, upper=True),
                                         lambda r: [r.standard_normal((3, 3)) + 3 * np.eye(3),
                                                    r.standard_normal((2, 3, 2))]),
    "slogdet": (lambda a: mx.linalg.slogdet(a)[1], lambda r: [r.standard_normal((2, 3, 3))]),
    # (the gradients' own primitives, SoftmaxVJP and NormVJP, as functions of their inputs)
    "softmax's gradient": (lambda x, c: mx.vjp(lambda x: mx.softmax(x, axis=-1), [x], [c])[1][0], [(2, 5), (2, 5)]),
    "layer_norm's gradient": (lambda x, w, c: sum(mx.vjp(lambda x, w: mx.fast.layer_norm(x, w, None, 1e-3), [x, w],
                                                         [c])[1][i].sum(axis=0) for i in (0, 1)),
                              [(3, 4), (4,), (3, 4)]),
    "rms_norm's gradient": (lambda x, c: mx.vjp(lambda x: mx.fast.rms_norm(x, None, 1e-3), [x], [c])[1][0],
                            [(2, 6), (2, 6)]),
    "slogdet times its sign": (lambda a: mx.linalg.slogdet(a)[0] * mx.linalg.slogdet(a)[1],
                               lambda r: [_spd(r, 3) - 5 * np.eye(3)]),
}


@pytest.mark.parametrize("name", list(GRADS))
def test_derivatives_match_finite_differences(on, rng, name):
    fn, shapes = GRADS[name]
    xs = shapes(rng) if callable(shapes) else [rng.standard_normal(s) for s in shapes]
    check_derivatives(fn, xs, rng)


INTEGER_RESULTS = [
    lambda x: mx.argmax(x, axis=1),
    lambda x: mx.argmin(x, axis=0, keepdims=True),
    lambda x: mx.argsort(x, axis=1),
    lambda x: mx.argpartition(x, 1, axis=1),
    lambda x: mx.searchsorted(mx.array([-1.0, 0.0, 1.0], dtype=F64), x),
    lambda x: mx.all(x > 0, axis=1),
    lambda x: mx.any(x, axis=0),
]


@pytest.mark.parametrize("case", range(len(INTEGER_RESULTS)))
def test_integer_and_bool_results_pass_no_gradient(on, rng, case):
    # as MLX: an index or truth value used as a number contributes nothing to the gradient (it was an error)
    g = INTEGER_RESULTS[case]
    x = rng.standard_normal((3, 4))
    check_derivatives(lambda a: g(a).astype(F64) * mx.sum(a * a), [x], rng)
    _, (t,) = mx.jvp(g, [a64(x)], [a64(np.ones_like(x))])
    assert not np.asarray(t).any()


# (function, in_axes, shapes or a maker of inputs from rng): the new batching rules, each replayed
BATCHED = {
    "partition": (lambda a: mx.partition(a, 2, axis=1), 0, [(4, 3, 5)]),
    "argpartition": (lambda a: mx.argpartition(a, 1, axis=0), 1, [(3, 4)]),
    "median": (lambda a: mx.median(a, axis=(0, 1), keepdims=True), 2, [(3, 4, 5)]),
    "view": (lambda a: mx.view(a, mx.uint32).astype(F64), 0, [(4, 3)]),
    "inv, pinv, tri_inv": (lambda a: mx.linalg.inv(a) + mx.linalg.pinv(a) + mx.linalg.tri_inv(a, upper=True), 0,
                           lambda r: [r.standard_normal((4, 3, 3)) + 3 * np.eye(3)]),
    "cholesky, cholesky_inv": (lambda a: mx.linalg.cholesky_inv(mx.linalg.cholesky(a)), 0,
                               lambda r: [np.stack([_spd(r, 3) for _ in range(4)])]),
    "det, slogdet": (lambda a: mx.linalg.det(a) + mx.linalg.slogdet(a)[0] * mx.linalg.slogdet(a)[1], 1,
                     [(2, 4, 3, 3)]),
    "qr": (lambda a: mx.linalg.qr(a)[0] @ mx.linalg.qr(a)[1], 0, [(4, 3, 2)]),
    # (singular and eigen vectors up to their signs, which a batched solver may choose otherwise: cuSOLVER's does)
    "svd": (lambda a: mx.linalg.svd(a, compute_uv=False)[..., :1] * mx.abs(mx.linalg.svd(a)[0]), 0, [(4, 3, 3)]),
    "eigh, eigvalsh": (lambda a: mx.abs(mx.linalg.eigh(a)[1]) * mx.linalg.eigvalsh(a), 0,
                       lambda r: [np.stack([_spd(r, 3) for _ in range(4)])]),
    "eig": (lambda a: mx.abs(mx.linalg.eigvals(a)) + mx.abs(mx.linalg.eig(a)[0]), 0,
            lambda r: [np.stack([_spd(r, 3) for _ in range(4)]).astype(np.float32)]),
    "lu, lu_factor": (lambda a: mx.linalg.lu(a)[1] @ mx.linalg.lu(a)[2] + mx.linalg.lu_factor(a)[0], 0,
                      [(4, 3, 3)]),
    "solve, batched matrices": (lambda a, b: mx.linalg.solve(a, b), (0, None), lambda r: [
        r.standard_normal((4, 3, 3)) + 3 * np.eye(3), r.standard_normal(3)]),
    "solve, batched vectors": (lambda a, b: mx.linalg.solve(a, b), (None, 1), lambda r: [
        r.standard_normal((3, 3)) + 3 * np.eye(3), r.standard_normal((3, 4))]),
    "solve_triangular": (lambda a, b: mx.linalg.solve_triangular(a, b), 0, lambda r: [
        r.standard_normal((4, 3, 3)) + 3 * np.eye(3), r.standard_normal((4, 3, 2))]),
    "cross": (lambda a, b: mx.linalg.cross(a, b, axis=0), (0, None), [(4, 3, 2), (3, 1)]),
    "diag": (lambda a: mx.diag(a) + mx.diag(a[:2], k=1) + mx.diag(a[2:], k=-2), 0, [(4, 3)]),
    "take_along_axis": (lambda a, i: mx.take_along_axis(a, i, axis=1), (0, None),
                        lambda r: [r.standard_normal((4, 3, 5)), mx.array(r.integers(0, 5, (3, 2)))]),
    "take_along_axis, batched indices": (lambda a, i: mx.take_along_axis(a, i, axis=0), (None, 0),
                                         lambda r: [r.standard_normal((5, 3)),
                                                    mx.array(r.integers(0, 5, (4, 2, 1)))]),
    "put_along_axis": (lambda a, i, v: mx.put_along_axis(a, i, v, axis=1), (0, None, 0),
                       lambda r: [r.standard_normal((4, 3, 5)), mx.array(r.integers(0, 5, (3, 1))),
                                  r.standard_normal((4, 1))]),
    "put_along_axis, unbatched array": (lambda a, i, v: mx.put_along_axis(a, i, v, axis=0), (None, 0, None),
                                        lambda r: [r.standard_normal((5, 3)), mx.array(r.integers(0, 5, (4, 1, 3))),
                                                   r.standard_normal(3)]),
    "slice": (lambda a: mx.slice(a, mx.array([1, 2]), (0, 1), (2, 2)), 0, [(4, 3, 5)]),
    "slice_update": (lambda a, u: mx.slice_update(a, u, mx.array([1]), (1,)), (0, None), [(4, 3, 5), (3, 2)]),
    "slice_update, batched update": (lambda a, u: mx.slice_update(a, u, mx.array([2]), (0,)), (None, 0),
                                     [(3, 5), (4, 1, 5)]),
    "as_strided": (lambda a: mx.as_strided(a, (3, 2), (1, 2), 1), 0, [(4, 2, 3)]),
    "softmax's gradient": (lambda x, c: mx.vjp(lambda x: mx.softmax(x, axis=1), [x], [c])[1][0], (0, None),
                           [(4, 3, 5), (3, 5)]),
    "layer_norm's gradient": (lambda x, w, c: mx.vjp(lambda x, w: mx.fast.layer_norm(x, w, w, 1e-3), [x, w],
                                                     [c])[1][1], (0, None, 0), [(4, 3, 5), (5,), (4, 3, 5)]),
    "rms_norm's gradient, batched weight": (lambda x, w: mx.vjp(lambda x, w: mx.fast.rms_norm(x, w, 1e-3), [x, w],
                                                                [x])[1][0], (None, 0), [(3, 5), (4, 5)]),
    "stft, istft": (lambda x: mx.fft.istft(mx.fft.stft(x, n_fft=8, hop_length=2), n_fft=8, hop_length=2,
                                           length=16).astype(F64) + mx.abs(mx.fft.stft(x, n_fft=4))[0, 0], 0,
                    lambda r: [r.standard_normal((3, 16)).astype(np.float32)]),
    "multivariate_normal's factor": (lambda c: mx.random.multivariate_normal(mx.zeros(3), c, (2,),
                                                                            key=mx.random.key(1)), 0,
                                     lambda r: [np.stack([_spd(r, 3) for _ in range(4)]).astype(np.float32)]),
}


@pytest.mark.parametrize("name", list(BATCHED))
def test_batching_rules_match_a_loop(on, rng, monkeypatch, name):
    fn, in_axes, shapes = BATCHED[name]
    xs = shapes(rng) if callable(shapes) else [rng.standard_normal(s) for s in shapes]
    xs = [np.asarray(x) if isinstance(x, mx.array) else x for x in xs]
    axes = list(in_axes) if isinstance(in_axes, tuple) else [in_axes] * len(xs)
    size = next(x.shape[a] for x, a in zip(xs, axes) if a is not None)

    def arg(x):
        return mx.array(x) if x.dtype.kind in "iuf" and x.dtype != np.float64 else a64(x)

    want = np.stack([np.asarray(fn(*(arg(x if a is None else np.take(x, i, axis=a)) for x, a in zip(xs, axes))))
                     for i in range(size)])
    monkeypatch.setattr(sys.modules["umx.transforms.vmap"], "_stack", None)  # the rule replays: no loop
    got = mx.vmap(fn, in_axes=in_axes)(*(arg(x) for x in xs))
    assert_close(got, want, rtol=1e-5 if got.dtype == mx.float32 else 1e-9, atol=1e-5)


def test_what_the_new_rules_refuse_takes_the_loop(on, rng):
    x = rng.standard_normal((4, 3, 5))
    starts = mx.array([[0], [1], [2], [1]])  # a start per slice
    want = np.stack([x[i, :, s:s + 2] for i, s in enumerate([0, 1, 2, 1])])
    assert_close(mx.vmap(lambda a, s: mx.slice(a, s, (1,), (3, 2)))(a64(x), starts), want, rtol=1e-12)
    signal = rng.standard_normal(16).astype(np.float32)
    windows = rng.uniform(0.5, 1.0, (3, 8)).astype(np.float32)  # a window per slice
    want = np.stack([np.asarray(mx.fft.stft(mx.array(signal), n_fft=8, window=mx.array(w))) for w in windows])
    got = mx.vmap(lambda w: mx.fft.stft(mx.array(signal), n_fft=8, window=w))(mx.array(windows))
    assert_close(got, want, rtol=1e-5, atol=1e-5)
