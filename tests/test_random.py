"""mx.random: keys and splitting, samplers with explicit keys (reproducible, distinct, right moments), the
global key and seed."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import assert_close

import umx as mx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

N = 20_000


def test_key_and_split(device):
    k = mx.random.key(0)
    assert k.shape == (2,) and k.dtype == mx.uint32
    assert mx.random.key(0).tolist() == k.tolist()
    assert mx.random.key(1).tolist() != k.tolist()
    ks = mx.random.split(k, stream=device)
    assert ks.shape == (2, 2) and ks.dtype == mx.uint32
    k3 = mx.random.split(k, num=3, stream=device)
    assert k3.shape == (3, 2)
    rows = [tuple(r) for r in np.asarray(k3).tolist()]
    assert len(set(rows)) == 3
    assert mx.random.split(k, 3, stream=device).tolist() == k3.tolist()
    sub = mx.random.uniform(shape=(4,), key=ks[0], stream=device)
    assert sub.shape == (4,)
    with pytest.raises(ValueError):
        mx.random.uniform(key=mx.array([1, 2, 3], dtype=mx.uint32))


SAMPLERS = {
    "uniform": lambda key, s: mx.random.uniform(shape=(N,), key=key, stream=s),
    "normal": lambda key, s: mx.random.normal((N,), key=key, stream=s),
    "randint": lambda key, s: mx.random.randint(0, 10, (N,), key=key, stream=s),
    "bernoulli": lambda key, s: mx.random.bernoulli(0.3, (N,), key=key, stream=s),
    "truncated_normal": lambda key, s: mx.random.truncated_normal(-1.0, 2.0, (N,), key=key, stream=s),
    "gumbel": lambda key, s: mx.random.gumbel((N,), key=key, stream=s),
    "laplace": lambda key, s: mx.random.laplace((N,), key=key, stream=s),
    "categorical": lambda key, s: mx.random.categorical(mx.log(mx.array([0.2, 0.5, 0.3])), num_samples=N,
                                                        key=key, stream=s),
    "permutation": lambda key, s: mx.random.permutation(N, key=key, stream=s),
    "bits": lambda key, s: mx.random.bits((N,), key=key, stream=s),
    "multivariate_normal": lambda key, s: mx.random.multivariate_normal(mx.zeros(2), mx.eye(2), (N,), key=key,
                                                                        stream=s),
}


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_same_key_same_values_different_keys_differ(device, name):
    f = SAMPLERS[name]
    k0, k1 = mx.random.key(7), mx.random.key(8)
    a, b, c = f(k0, device), f(k0, mx.new_stream(device)), f(k1, device)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    assert a.shape[0] == N


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_global_key_and_seed(name):
    f = SAMPLERS[name]
    mx.random.seed(3)
    a, b = np.asarray(f(None, None)), np.asarray(f(None, None))
    assert not np.array_equal(a, b)  # each draw advances the global key
    mx.random.seed(3)
    np.testing.assert_array_equal(np.asarray(f(None, None)), a)
    np.testing.assert_array_equal(np.asarray(f(None, None)), b)


def test_uniform(device):
    x = np.asarray(mx.random.uniform(shape=(N,), key=mx.random.key(1), stream=device)).astype(np.float64)
    assert x.min() >= 0 and x.max() < 1
    assert abs(x.mean() - 0.5) < 0.01 and abs(x.var() - 1 / 12) < 0.005
    y = mx.random.uniform(-2, 3, (100, 200), key=mx.random.key(2), stream=device)
    assert y.shape == (100, 200) and y.dtype == mx.float32
    y = np.asarray(y)
    assert y.min() >= -2 and y.max() < 3 and abs(y.mean() - 0.5) < 0.05
    lo = mx.array([0.0, 10.0])
    z = np.asarray(mx.random.uniform(lo, lo + 1, (1000, 2), key=mx.random.key(3), stream=device))
    assert (z[:, 1] >= 10).all() and (z[:, 0] < 1).all()
    assert mx.random.uniform(shape=(3,), dtype=mx.float16, stream=device).dtype == mx.float16
    assert mx.random.uniform(stream=device).shape == ()
    with pytest.raises(ValueError):
        mx.random.uniform(shape=(2,), dtype=mx.int32)


def test_normal(device):
    x = np.asarray(mx.random.normal((N,), key=mx.random.key(4), stream=device)).astype(np.float64)
    assert abs(x.mean()) < 0.03 and abs(x.std() - 1) < 0.03
    assert abs((np.abs(x) < 1).mean() - 0.6827) < 0.015
    assert np.isfinite(x).all()
    y = np.asarray(mx.random.normal((N,), loc=3.0, scale=2.0, key=mx.random.key(5), stream=device))
    assert abs(y.mean() - 3) < 0.06 and abs(y.std() - 2) < 0.06
    assert mx.random.normal((2,), dtype=mx.bfloat16, stream=device).dtype == mx.bfloat16
    z = mx.random.normal((3, 2), loc=mx.array([0.0, 10.0]), scale=mx.array([1.0, 0.0]), key=mx.random.key(1),
                         stream=device)
    assert np.asarray(z)[:, 1].tolist() == [10.0] * 3 and np.abs(np.asarray(z)[:, 0]).max() < 10


def test_randint(device):
    x = mx.random.randint(-3, 5, (N,), key=mx.random.key(6), stream=device)
    assert x.dtype == mx.int32
    v = np.asarray(x)
    assert v.min() == -3 and v.max() == 4
    counts = np.bincount(v + 3) / N
    assert np.abs(counts - 1 / 8).max() < 0.015
    lo, hi = mx.array([0, 100]), mx.array([2, 103])
    y = np.asarray(mx.random.randint(lo, hi, (500, 2), key=mx.random.key(1), stream=device))
    assert set(y[:, 0]) == {0, 1} and set(y[:, 1]) == {100, 101, 102}
    assert mx.random.randint(0, 3, (4,), dtype=mx.uint8, stream=device).dtype == mx.uint8
    with pytest.raises(ValueError):
        mx.random.randint(0, 3, (2,), dtype=mx.float32)


def test_bernoulli(device):
    x = mx.random.bernoulli(0.3, (N,), key=mx.random.key(9), stream=device)
    assert x.dtype == mx.bool_
    assert abs(np.asarray(x).mean() - 0.3) < 0.015
    p = mx.array([0.0, 1.0, 0.5])
    y = np.asarray(mx.random.bernoulli(p, (1000, 3), key=mx.random.key(10), stream=device))
    assert not y[:, 0].any() and y[:, 1].all() and abs(y[:, 2].mean() - 0.5) < 0.06
    assert mx.random.bernoulli(p, stream=device).shape == (3,)
    assert mx.random.bernoulli(stream=device).shape == ()
    with pytest.raises(ValueError):
        mx.random.bernoulli(p, (2,))


def test_truncated_normal(device):
    x = np.asarray(mx.random.truncated_normal(-1.0, 2.0, (N,), key=mx.random.key(11), stream=device))
    x = x.astype(np.float64)
    assert x.min() >= -1 and x.max() <= 2
    # mean of N(0,1) truncated to [a, b]: (phi(a) - phi(b)) / (Phi(b) - Phi(a))
    from math import erf, exp, pi, sqrt

    phi = lambda t: exp(-t * t / 2) / sqrt(2 * pi)  # noqa: E731
    Phi = lambda t: 0.5 * (1 + erf(t / sqrt(2)))  # noqa: E731, N806
    mean = (phi(-1) - phi(2)) / (Phi(2) - Phi(-1))
    assert abs(x.mean() - mean) < 0.02
    lo, hi = mx.array([0.0, -5.0]), mx.array([0.5, -4.0])
    y = np.asarray(mx.random.truncated_normal(lo, hi, (100, 2), key=mx.random.key(12), stream=device))
    assert (y[:, 0] >= 0).all() and (y[:, 0] <= 0.5).all() and (y[:, 1] >= -5).all() and (y[:, 1] <= -4).all()
    assert mx.random.truncated_normal(lo, hi, stream=device).shape == (2,)


def test_gumbel(device):
    x = np.asarray(mx.random.gumbel((N,), key=mx.random.key(13), stream=device)).astype(np.float64)
    assert np.isfinite(x).all()
    assert abs(x.mean() - 0.5772) < 0.03 and abs(x.var() - np.pi**2 / 6) < 0.1


def test_laplace(device):
    x = np.asarray(mx.random.laplace((N,), key=mx.random.key(14), stream=device)).astype(np.float64)
    assert np.isfinite(x).all()
    assert abs(x.mean()) < 0.04 and abs(x.var() - 2) < 0.15
    y = np.asarray(mx.random.laplace((N,), loc=1.0, scale=0.5, key=mx.random.key(15), stream=device))
    assert abs(np.median(y) - 1) < 0.03 and abs(y.var() - 0.5) < 0.05


def test_categorical(device):
    p = np.array([0.2, 0.5, 0.3])
    lg = mx.log(mx.array(p))
    x = mx.random.categorical(lg, num_samples=N, key=mx.random.key(16), stream=device)
    assert x.dtype == mx.uint32 and x.shape == (N,)
    freq = np.bincount(np.asarray(x), minlength=3) / N
    assert np.abs(freq - p).max() < 0.015
    batch = mx.array([[0.0, -np.inf, -np.inf], [-np.inf, -np.inf, 0.0]])
    assert mx.random.categorical(batch, stream=device).tolist() == [0, 2]
    assert mx.random.categorical(batch, shape=(4, 2), stream=device).tolist() == [[0, 2]] * 4
    assert mx.random.categorical(batch, num_samples=3, stream=device).tolist() == [[0, 0, 0], [2, 2, 2]]
    assert mx.random.categorical(mx.transpose(batch), axis=0, stream=device).tolist() == [0, 2]
    with pytest.raises(ValueError):
        mx.random.categorical(batch, shape=(2,), num_samples=2)


def test_permutation(device):
    p = mx.random.permutation(50, key=mx.random.key(17), stream=device)
    assert p.dtype == mx.uint32  # as MLX
    v = np.asarray(p)
    assert sorted(v.tolist()) == list(range(50)) and v.tolist() != list(range(50))
    x = np.arange(24).reshape(4, 6)
    for axis in (0, 1, -1):
        y = np.asarray(mx.random.permutation(mx.array(x), axis=axis, key=mx.random.key(18), stream=device))
        assert y.shape == x.shape
        assert_close(np.sort(y, axis=axis), np.sort(x, axis=axis))
        other = 1 - (axis % 2)
        assert_close(np.sort(y, axis=other), y)  # whole rows/columns move together
    # every position is hit roughly uniformly
    firsts = [mx.random.permutation(4, key=k)[0].item() for k in mx.random.split(mx.random.key(19), 400)]
    assert np.abs(np.bincount(firsts, minlength=4) / 400 - 0.25).max() < 0.1


def test_samplers_are_lazy(device):
    s = mx.new_stream(device)
    a = mx.random.normal((3,), key=mx.random.key(0), stream=s)
    assert a._data is None and a._stream is s


def test_multivariate_normal(device):
    cov = np.array([[2.0, 0.8, 0.0], [0.8, 1.0, -0.3], [0.0, -0.3, 0.5]])
    mean = np.array([1.0, -2.0, 0.5])
    x = mx.random.multivariate_normal(mx.array(mean), mx.array(cov), (N,), key=mx.random.key(20),
                                      stream=device)
    assert x.shape == (N, 3) and x.dtype == mx.float32
    v = np.asarray(x).astype(np.float64)
    assert np.abs(v.mean(0) - mean).max() < 0.04
    assert np.abs(np.cov(v.T) - cov).max() < 0.06
    batch = mx.random.multivariate_normal(mx.zeros((4, 3)), mx.array(cov), stream=device)
    assert batch.shape == (4, 3)
    assert mx.random.multivariate_normal(mx.zeros(3), mx.array(cov), (5, 1), stream=device).shape == (5, 1, 3)
    singular = mx.array([[1.0, 1.0], [1.0, 1.0]])  # semi-definite: samples lie on the diagonal
    s = np.asarray(mx.random.multivariate_normal(mx.zeros(2), singular, (100,), stream=device))
    np.testing.assert_allclose(s[:, 0], s[:, 1], atol=1e-5 if device == mx.cpu else 1e-2)  # GPU eigh: float32 rounding
    with pytest.raises(ValueError, match="multivariate_normal"):
        mx.random.multivariate_normal(mx.zeros(2), mx.eye(3))


_FLOAT_SAMPLERS = {
    "uniform": lambda **k: mx.random.uniform(shape=(3,), **k),
    "normal": lambda **k: mx.random.normal((3,), **k),
    "gumbel": lambda **k: mx.random.gumbel((3,), **k),
    "laplace": lambda **k: mx.random.laplace((3,), **k),
    "truncated_normal": lambda **k: mx.random.truncated_normal(-1.0, 1.0, (3,), **k),
    "multivariate_normal": lambda **k: mx.random.multivariate_normal(mx.zeros(2), mx.eye(2), **k),
}


@pytest.mark.parametrize("name", sorted(_FLOAT_SAMPLERS))
def test_dtype_none_is_float32(device, name):
    assert _FLOAT_SAMPLERS[name](dtype=None, stream=device).dtype == mx.float32
    with pytest.raises(ValueError, match=name):
        _FLOAT_SAMPLERS[name](dtype=mx.int32, stream=device)
    assert mx.random.randint(0, 3, dtype=None, stream=device).dtype == mx.int32


def test_complex_normal(device):
    z = mx.random.normal((20000,), dtype=mx.complex64, key=mx.random.key(1), stream=device)
    assert z.dtype == mx.complex64
    v = np.asarray(z)
    assert abs(v.real.var() - 0.5) < 0.03 and abs(v.imag.var() - 0.5) < 0.03  # each part: variance 1/2
    assert abs(np.corrcoef(v.real, v.imag)[0, 1]) < 0.05
    shifted = np.asarray(mx.random.normal((20000,), mx.complex64, 3 + 1j, 2.0, mx.random.key(1), stream=device))
    np.testing.assert_allclose(shifted, 2 * v + (3 + 1j), rtol=1e-5, atol=1e-5)


def test_half_precision_loc_and_scale_keep_the_dtype(device):
    b = mx.random.normal((3, 1, 2), key=mx.random.key(2))
    s = mx.random.normal((3, 4, 2), dtype=mx.float16, loc=b, scale=b, stream=device)
    assert s.dtype == mx.float16 and s.shape == (3, 4, 2)
    k = mx.random.key(3)
    for f in (mx.random.normal, mx.random.laplace):
        a = f((50,), mx.float16, 1.0, 2.0, k, stream=device)
        assert np.array_equal(np.asarray(a), np.asarray(2.0 * f((50,), mx.float16, key=k, stream=device) + 1.0))


def test_randint_as_mlx(device):
    k = mx.random.key(4)
    b = mx.random.randint(0, 2, (1000,), dtype=mx.bool_, key=k, stream=device)
    assert b.dtype == mx.bool_ and sorted(set(b.tolist())) == [False, True]
    assert not mx.any(mx.random.randint(0, 1, (100,), dtype=mx.bool_, key=k, stream=device)).item()
    assert mx.all(mx.random.randint(10, -10, (100,), key=k, stream=device) == 10).item()  # high <= low: low
    lo, hi = -(2**40), 2**40
    wide = np.asarray(mx.random.randint(lo, hi, (2000,), dtype=mx.int64, key=k, stream=device))
    assert wide.min() >= lo and wide.max() < hi and np.abs(wide).max() > 2**33  # spans beyond 32 bits
    full = np.asarray(mx.random.randint(-(2**31), 2**31 - 1, (2000,), key=k, stream=device))
    assert full.min() < -(2**30) and full.max() > 2**30
    assert sorted(set(mx.random.randint(-5, 5, (5000,), key=k, stream=device).tolist())) == list(range(-5, 5))
    with pytest.raises(ValueError, match="randint"):
        mx.random.randint(mx.array([0, 1]), 5)  # bounds of shape (2,) for samples of shape ()


def test_sampler_errors_as_mlx():
    with pytest.raises(ValueError, match="bernoulli"):
        mx.random.bernoulli(0, [2])  # an integer p
    with pytest.raises(ValueError, match="bernoulli"):
        mx.random.bernoulli(mx.array([1, 0]))
    with pytest.raises(ValueError, match="uniform"):
        mx.random.uniform(mx.array([0.0, 1.0]), 2.0)
    for d in (mx.float16, mx.float64):
        with pytest.raises(ValueError, match="multivariate_normal"):
            mx.random.multivariate_normal(mx.zeros(2), mx.eye(2), dtype=d)


def test_truncated_normal_with_crossed_bounds_gives_the_lower(device):
    assert mx.all(mx.random.truncated_normal(2.0, -2.0, (5,), stream=device) == 2.0).item()


def test_categorical_without_samples(device):
    out = mx.random.categorical(mx.zeros((20,)), num_samples=0, stream=device)
    assert out.shape == (0,) and out.dtype == mx.uint32


# -- MLX's bits: with a key, umx draws the values MLX 0.32.4 draws (these lists are MLX's) ------------------------
def test_split_rows_are_mlx_keys(device):
    k = mx.random.key(7)
    assert mx.random.split(k, num=2, stream=device).tolist() == [[966301609, 989289821], [1948237315, 1058547403]]
    assert mx.random.split(k, num=3, stream=device).tolist() == [[276534068, 861967409], [1905761346, 1641862660],
                                                                 [2900896126, 1402713516]]


def test_uniform_is_words_over_the_largest_word(device):
    # an odd count of words: the middle one comes from its own counter block (MLX's layout)
    key = mx.random.key(3)
    assert mx.random.uniform(shape=(3,), key=key, stream=device).tolist() == np.float32(
        [0.23853768408298492, 0.021006975322961807, 0.6062433123588562]).tolist()
    words = np.asarray(mx.random.bits((1001,), key=key, stream=device))
    want = np.minimum(words.astype(np.float32) / np.float32(2**32 - 1), np.nextafter(np.float32(1), np.float32(0)))
    np.testing.assert_array_equal(np.asarray(mx.random.uniform(shape=(1001,), key=key, stream=device)), want)
    half = mx.random.uniform(-2, 3.5, shape=(5,), dtype=mx.float16, key=key, stream=device)
    assert half.tolist() == [-0.876953125, 0.068359375, 3.30078125, 2.4140625, 1.615234375]


def test_integer_and_discrete_samplers_give_mlx_values(device):
    key = mx.random.key(3)
    assert mx.random.randint(-5, 3, shape=(6,), key=key, stream=device).tolist() == [-4, -2, -2, 1, 0, 1]
    assert mx.random.randint(0, 100, (5,), mx.uint8, key=key, stream=device).tolist() == [20, 37, 96, 80, 65]
    assert mx.random.permutation(7, key=key, stream=device).tolist() == [5, 4, 0, 2, 1, 6, 3]
    assert mx.random.bernoulli(0.5, (7,), key=key, stream=device).tolist() == [True, False, False, False, True,
                                                                                True, False]
    probs = mx.log(mx.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))
    assert mx.random.categorical(probs, num_samples=5, key=key, stream=device).tolist() == [[1, 1, 0, 1, 0],
                                                                                             [2, 0, 0, 0, 0]]
    by_column = mx.log(mx.array([[0.2, 0.5], [0.6, 0.1], [0.3, 0.3]]))
    assert mx.random.categorical(by_column, axis=0, shape=(4, 2), key=key, stream=device).tolist() == [
        [0, 0], [2, 0], [1, 2], [2, 2]]


def test_continuous_samplers_give_mlx_values(device):
    key = mx.random.key(3)
    # (up to the last digits of the transcendental functions, which MLX approximates)
    assert_close(mx.random.normal((3,), key=key, stream=device), [-0.7110142111778259, -2.033381462097168,
                                                                   0.2695411145687103], rtol=1e-6)
    assert_close(mx.random.laplace((3,), loc=1.5, scale=0.5, key=key, stream=device),
                 [1.8700402975082397, 3.08487606048584, 1.3805625438690186], rtol=1e-6)
    assert_close(mx.random.gumbel((4,), mx.float16, key=key, stream=device),
                 [-0.360107421875, -1.50390625, 0.693359375, -0.09051513671875], rtol=1e-3, atol=1e-3)
    assert_close(mx.random.truncated_normal(-1.0, 2.5, (4,), mx.float16, key=key, stream=device),
                 [-0.36376953125, -0.9619140625, 0.42626953125, -0.1553955078125], rtol=1e-3, atol=1e-3)
    # the covariance's symmetric square root scales the normals (no choice of eigenvector signs)
    cov = mx.array([[2.0, 0.5], [0.5, 1.0]])
    got = mx.random.multivariate_normal(mx.array([1.0, 2.0]), cov, (3,), key=mx.random.key(1), stream=device)
    assert_close(got, [[2.134662628173828, 1.2532360553741455], [2.485410213470459, 2.569908857345581],
                       [1.3030824661254883, 2.3208019733428955]], rtol=1e-5)


def test_global_key_starts_from_the_time_as_in_mlx():
    # Two processes draw different values until they seed (MLX seeds its global key from the clock); after
    # mx.random.seed both draw the same.
    code = ("import time, umx as mx; time.sleep(0.002); a = mx.random.uniform(shape=(4,)).tolist(); "
            "mx.random.seed(3); print(a, mx.random.uniform(shape=(4,)).tolist())")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    outs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            .stdout.split("] [") for _ in range(2)]
    assert outs[0][0] != outs[1][0]
    assert outs[0][1] == outs[1][1]


@pytest.mark.parametrize("dtype,low,high", [(mx.int32, 2**24, 2**24 + 2), (mx.uint32, 2**24 + 1, 2**24 + 3),
                                            (mx.int32, -(2**31), -(2**31) + 3), (mx.int32, 7, -(2**31))])
def test_randint_stays_below_high_where_float32_rounds_the_bounds(device, dtype, low, high):
    # samples are floors of float32 uniforms (MLX's bits), and float32 rounds 2**24 + 2 up to a sample's floor
    a = np.asarray(mx.random.randint(low, high, (20000,), dtype=dtype, key=mx.random.key(0), stream=device))
    assert a.min() >= low
    assert a.max() < max(high, low + 1)
