"""``mx.random``: keys, splitting and samplers, MLX's API over the Threefry-2x32 generator.

Every sampler takes ``key=``; without one it draws from a global key, taken from the time at import as in MLX,
that :func:`seed` resets and that each draw advances (on the host, at once: keys are two words). The same key
gives the same values on every device.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np

from .. import dtypes as dt
from ..primitives.random import COVARIANCE_FACTOR, RandomBits
from ..primitives.sort import ArgSort
from . import elementwise as ew
from ._core import array, as_array, axis_of, broadcast_shapes, cast, node, resolve_stream, shape_of
from .creation import zeros
from .elementwise import add, erfinv, maximum, multiply, subtract
from .indexing import getitem
from .matmul import matmul
from .reduction import argmax
from .shape import expand_dims, squeeze

__all__ = ["seed", "key", "split", "uniform", "normal", "randint", "bernoulli", "truncated_normal", "gumbel",
           "categorical", "permutation", "laplace", "multivariate_normal"]

_M32 = 0xFFFFFFFF
_NOW_MS = time.time_ns() // 1_000_000
_lock = threading.RLock()  # MUST be held to advance the global key (reentrant: a signal handler may draw)
_global = [(_NOW_MS >> 32) & _M32, _NOW_MS & _M32]
#: threads on which ``compile`` is tracing (ident -> list): keys drawn from the global key there are recorded, so
#: that replays draw fresh ones
compile_draws: dict = {}


def _threefry_host(k0: int, k1: int, x0: int, x1: int) -> tuple:
    """One Threefry-2x32 block in Python ints (for advancing keys without building graph nodes)."""
    ks = (k0, k1, k0 ^ k1 ^ 0x1BD11BDA)
    x0, x1 = (x0 + ks[0]) & _M32, (x1 + ks[1]) & _M32
    rots = ((13, 15, 26, 6), (17, 29, 16, 24))
    for i in range(5):
        for r in rots[i % 2]:
            x0 = (x0 + x1) & _M32
            x1 = ((x1 << r) | (x1 >> (32 - r))) & _M32
            x1 ^= x0
        x0 = (x0 + ks[(i + 1) % 3]) & _M32
        x1 = (x1 + ks[(i + 2) % 3] + i + 1) & _M32
    return x0, x1


class _RandomState:
    """``mx.random.state``: the global key as MLX exposes it, one object whose only item is the current key
    (``state[0]``, a uint32 array of shape (2,), read afresh each time; no item assignment, as in MLX: reset the
    key with :func:`seed`). MLX's compiled training steps list it in ``inputs``/``outputs`` so that their draws
    advance the global key; umx's ``compile`` draws from the global key at every replay in any case, and treats
    this object as a constant."""

    __slots__ = ()

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> array:
        if i not in (0, -1):
            raise IndexError(f"random.state: index {i} out of range for its one key")
        with _lock:
            words = list(_global)
        return array(np.array(words, np.uint32), dt.uint32)

    def __iter__(self):
        yield self[0]

    def __repr__(self) -> str:
        return f"random.state([{self[0]!r}])"


state = _RandomState()


def seed(seed: int) -> None:
    """Reset the global key from the integer ``seed``."""
    s = seed
    with _lock:
        _global[:] = [(s >> 32) & _M32, s & _M32]


def key(seed: int) -> array:
    """A key (a uint32 array of shape (2,)) from the integer ``seed``."""
    return array(np.array([(seed >> 32) & _M32, seed & _M32], np.uint32), dt.uint32)




def _next_key() -> array:
    with _lock:
        k0, k1 = _global
        # split into (new global, subkey), as split(key, 2) does
        a0, b0 = _threefry_host(k0, k1, 0, 2)
        a1, b1 = _threefry_host(k0, k1, 1, 3)
        _global[:] = [a0, a1]
    k = array(np.array([b0, b1], np.uint32), dt.uint32)
    if compile_draws:
        drawn = compile_draws.get(threading.get_ident())
        if drawn is not None:
            drawn.append(k)
    return k


def _key(k) -> array:
    if k is None:
        return _next_key()
    k = as_array(k, "random")
    if k.shape != (2,) or k.dtype is not dt.uint32:
        raise ValueError(f"random: a key is a uint32 array of shape (2,), got {k.shape} {k.dtype.name}")
    return k


def bits(shape, key=None, stream=None) -> array:
    """Random uint32 words of ``shape``."""
    shape = shape_of(shape, "random.bits")
    return node(RandomBits(shape), (_key(key),), shape, dt.uint32, resolve_stream(stream))


def split(key, num: int = 2, *, stream=None) -> array:
    """``num`` new keys from ``key``, as an array of shape (num, 2)."""
    return bits((num, 2), _key(key), stream)


def _unit(shape, dtype, key, stream) -> array:
    """Uniform floats in [0, 1) of ``dtype``: random words over 2**32 - 1 in float32, rounded to ``dtype`` and
    kept below 1 (MLX's samples, bit for bit)."""
    st = resolve_stream(stream)
    u = ew.divide(cast(bits(shape, key, st), dt.float32, st), float(_M32), stream=st)
    return ew.minimum(cast(u, dtype, st), 1.0 - dt.finfo(dtype).eps / 2, stream=st)  # (the float below 1)


def uniform(low=0.0, high=1.0, shape=(), dtype=dt.float32, key=None, *, stream=None) -> array:
    """Uniform samples in ``[low, high)``.

    Args:
        low (scalar | array): lower bound (default 0).
        high (scalar | array): upper bound (default 1).
        shape (Sequence[int]): output shape (default ()).
        dtype (Dtype): float dtype (default float32).
        key (array, optional): a key; default: the global key.

    Returns:
        array: the samples.
    """
    d = _float_dtype(dtype, "uniform")

    shape = shape_of(shape, "uniform")
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low == 0 and high == 1:
        return _unit(shape, d, key, stream)
    lo, hi = as_array(low, "uniform", d), as_array(high, "uniform", d)
    _bounds_fit(shape, (lo, hi), "uniform")
    u = _unit(shape, d, key, stream)
    return add(multiply(u, subtract(hi, lo, stream=stream), stream=stream), lo, stream=stream)


def _bounds_fit(shape: tuple, bounds, op: str) -> None:
    """Bounds broadcast to the samples' ``shape``, never beyond it (as in MLX)."""
    full = broadcast_shapes(shape, *(b.shape for b in bounds), op=op)
    if full != shape:
        raise ValueError(f"{op}: cannot draw samples of shape {shape} for bounds of the broadcast shape {full}")


def normal(shape=(), dtype=dt.float32, loc=0.0, scale=1.0, key=None, *, stream=None) -> array:
    """Normal samples: ``sqrt(2) * erfinv(u)`` with u uniform in (-1, 1), times ``scale``, plus ``loc``.

    Args:
        shape (Sequence[int]): output shape (default ()).
        dtype (Dtype, optional): a float dtype or complex64 (default float32); complex samples have independent
            real and imaginary parts of variance 1/2 each (before ``scale``).
        loc (scalar | array): the mean (default 0).
        scale (scalar | array): the standard deviation (default 1).
        key (array, optional): a key; default: the global key.

    Returns:
        array: the samples.
    """
    d = dt.float32 if dtype is None else dt.to_dtype(dtype)
    if d.kind not in "fc":
        raise ValueError(f"normal: dtype must be a float type or complex64, got {d.name}")

    st = resolve_stream(stream)
    shape = shape_of(shape, "normal")
    lo = np.nextafter(np.float32(-1), np.float32(0)).item()
    if d.kind == "c":  # the two parts from one draw of twice the size: one key, as for a real draw
        u = uniform(lo, 1.0, (2,) + shape, dt.float32, key, stream=st)
        z = erfinv(maximum(u, lo, stream=st), stream=st)  # (sqrt(2) times the parts' sqrt(1/2): 1)
        z = add(cast(z[0], d, st), multiply(cast(z[1], d, st), 1j, stream=st), stream=st)
    else:
        u = uniform(lo, 1.0, shape, dt.float32, key, stream=st)
        z = multiply(erfinv(maximum(u, lo, stream=st), stream=st), math.sqrt(2.0), stream=st)
    # scaled and shifted in the result's dtype, so that normal(loc=l, scale=s) is s * normal() + l exactly
    z = cast(z, d, st)
    if not (isinstance(scale, (int, float)) and scale == 1.0):  # loc and scale may be arrays, cast to the dtype
        z = multiply(z, cast(as_array(scale, "normal", d), d, st), stream=st)
    if not (isinstance(loc, (int, float)) and loc == 0.0):
        z = add(z, cast(as_array(loc, "normal", d), d, st), stream=st)
    return z


def _float_dtype(dtype, op: str) -> dt.Dtype:
    """A sampler's real floating ``dtype`` (None: float32, as in MLX); ValueError naming ``op`` for others."""
    d = dt.float32 if dtype is None else dt.to_dtype(dtype)
    if d.kind != "f":
        raise ValueError(f"{op}: dtype must be a real floating type, got {d.name}")
    return d


def randint(low, high, shape=(), dtype=dt.int32, key=None, *, stream=None) -> array:
    """Random integers in ``[low, high)`` (``low`` where ``high <= low``); the bounds may be arrays that broadcast
    to ``shape``.

    Args:
        low (int | array): lower bound, included.
        high (int | array): upper bound, excluded.
        shape (Sequence[int]): output shape (default ()).
        dtype (Dtype, optional): an integer dtype or bool (default int32).
        key (array, optional): a key; default: the global key.

    Returns:
        array: the samples.
    """
    d = dt.int32 if dtype is None else dt.to_dtype(dtype)
    if d.kind not in "iub":
        raise ValueError(f"randint: dtype must be an integer type or bool, got {d.name}")
    st = resolve_stream(stream)
    shape = shape_of(shape, "randint")
    weak = dt.int64 if d is dt.bool_ else d
    lo, hi = as_array(low, "randint", weak), as_array(high, "randint", weak)
    _bounds_fit(shape, (lo, hi), "randint")
    if d is not dt.bool_:  # bounds beyond a narrow dtype wrap into it first, as in MLX (bool spans [low, high))
        lo, hi = cast(lo, d, st), cast(hi, d, st)
    # as in MLX: the floor of a float32 uniform sample in [low, high), so that a key gives MLX's integers
    u = uniform(cast(lo, dt.float32, st), cast(hi, dt.float32, st), shape, dt.float32, key, stream=st)
    r = ew.floor(u, stream=st)
    if d is dt.bool_:
        return cast(ew.maximum(r, cast(lo, dt.float32, st), stream=st), d, st)
    # below high where float32 rounds the bounds (2**24 + 2 becomes a sample's floor), and low where high <= low
    r = ew.minimum(cast(r, d, st), ew.subtract(hi, 1, stream=st), stream=st)
    return ew.maximum(r, lo, stream=st)


def bernoulli(p=0.5, shape=None, key=None, *, stream=None) -> array:
    """Booleans that are true with probability ``p``.

    Args:
        p (float | array): the probability of true (default 0.5).
        shape (Sequence[int], optional): output shape; default: that of ``p``.
        key (array, optional): a key; default: the global key.

    Returns:
        array: bool samples.
    """
    st = resolve_stream(stream)
    pa = as_array(p, "bernoulli", None if isinstance(p, (bool, int, np.integer)) else dt.float32)
    if pa.dtype.kind != "f":  # as in MLX: an integer p (bernoulli(0)) is refused, not taken as 0 or 1
        raise ValueError(f"bernoulli: the probability p must be of a float type, got {pa.dtype.name}")
    shape = pa.shape if shape is None else shape_of(shape, "bernoulli")
    if broadcast_shapes(shape, pa.shape, op="bernoulli") != shape:
        raise ValueError(f"bernoulli: p of shape {pa.shape} does not broadcast to shape {shape}")
    return ew.less(_unit(shape, dt.float32, key, st), pa, stream=st)


def truncated_normal(lower, upper, shape=None, dtype=dt.float32, key=None, *, stream=None) -> array:
    """Normal samples conditioned on ``[lower, upper]`` (by inverting the CDF).

    Args:
        lower (float | array): lower bound.
        upper (float | array): upper bound.
        shape (Sequence[int], optional): output shape; default: the broadcast shape of the bounds.
        dtype (Dtype): float dtype (default float32).
        key (array, optional): a key; default: the global key.

    Returns:
        array: the samples.
    """
    d = _float_dtype(dtype, "truncated_normal")
    st = resolve_stream(stream)
    lo, hi = as_array(lower, "truncated_normal", dt.float32), as_array(upper, "truncated_normal", dt.float32)
    bshape = broadcast_shapes(lo.shape, hi.shape, op="truncated_normal")
    shape = bshape if shape is None else broadcast_shapes(shape_of(shape, "truncated_normal"), bshape,
                                                          op="truncated_normal")
    lo, hi = cast(lo, d, st), cast(hi, d, st)  # computed in the result's dtype, as in MLX
    r2 = 1 / math.sqrt(2.0)
    a = ew.erf(ew.multiply(lo, r2, stream=st), stream=st)
    b = ew.erf(ew.multiply(hi, r2, stream=st), stream=st)
    u = ew.add(ew.multiply(_unit(shape, d, key, st), ew.subtract(b, a, stream=st), stream=st), a, stream=st)
    edge = 1.0 - dt.finfo(d).eps / 2
    u = ew.clip(u, -edge, edge, stream=st)
    z = ew.multiply(ew.erfinv(u, stream=st), math.sqrt(2.0), stream=st)
    return ew.maximum(ew.minimum(z, hi, stream=st), lo, stream=st)  # (where upper < lower, lower, as in MLX)


def gumbel(shape=(), dtype=dt.float32, key=None, *, stream=None) -> array:
    """Samples of the standard Gumbel distribution, ``-log(-log(u))``.

    Args:
        shape (Sequence[int]): output shape (default ()).
        dtype (Dtype): float dtype (default float32).
        key (array, optional): a key; default: the global key.

    Returns:
        array: the samples.
    """
    d = _float_dtype(dtype, "gumbel")
    st = resolve_stream(stream)
    # in the result's dtype, from float32's smallest normal (0 in float16): MLX's samples
    u = uniform(float(np.finfo(np.float32).tiny), 1.0, shape_of(shape, "gumbel"), d, key, stream=st)
    return ew.negative(ew.log(ew.negative(ew.log(u, stream=st), stream=st), stream=st), stream=st)


def laplace(shape=(), dtype=dt.float32, loc=0.0, scale=1.0, key=None, *, stream=None) -> array:
    """Samples of the Laplace distribution with ``loc`` and ``scale``.

    Args:
        shape (Sequence[int]): output shape (default ()).
        dtype (Dtype): float dtype (default float32).
        loc (float): the mean (default 0).
        scale (float): the scale (default 1).
        key (array, optional): a key; default: the global key.

    Returns:
        array: the samples.
    """
    d = _float_dtype(dtype, "laplace")
    st = resolve_stream(stream)
    lo = np.nextafter(np.float32(-1), np.float32(0)).item()
    u = uniform(lo, 1.0, shape_of(shape, "laplace"), dt.float32, key, stream=st)
    # inverse CDF, with the sign MLX gives it: loc + scale * sign(u) * log(1 - |u|)
    x = ew.multiply(ew.sign(u, stream=st), ew.log1p(ew.negative(ew.abs(u, stream=st), stream=st), stream=st),
                    stream=st)
    x = cast(x, d, st)  # (scaled in the result's dtype, as normal is)
    scale, loc = (cast(as_array(v, "laplace", d), d, st) for v in (scale, loc))
    return ew.add(ew.multiply(x, scale, stream=st), loc, stream=st)


def categorical(logits, axis: int = -1, shape=None, num_samples: int | None = None, key=None, *,
                stream=None) -> array:
    """Indices sampled from the categorical distribution with unnormalised log-probabilities ``logits``.

    Args:
        logits (array): log-probabilities (up to a constant) along ``axis``.
        axis (int): the axis of the categories (default -1).
        shape (Sequence[int], optional): output shape; must broadcast with the other axes of ``logits``.
        num_samples (int, optional): samples per distribution (appended as the last axis). Not with ``shape``.
        key (array, optional): a key; default: the global key.

    Returns:
        array: uint32 indices.
    """

    if shape is not None and num_samples is not None:
        raise ValueError("categorical: give at most one of shape and num_samples")
    st = resolve_stream(stream)
    lg = as_array(logits, "categorical")
    if lg.dtype.kind not in "f":
        lg = cast(lg, dt.float32, st)
    ax = axis_of(axis, lg.ndim, "categorical")
    k = lg.shape[ax]
    batch = lg.shape[:ax] + lg.shape[ax + 1:]
    if num_samples is not None:
        lg = expand_dims(lg, -1, stream=st)
        out_shape = batch + (int(num_samples),)
    elif shape is not None:
        out_shape = shape_of(shape, "categorical")
        if broadcast_shapes(out_shape, batch, op="categorical") != out_shape:
            raise ValueError(f"categorical: shape {out_shape} does not broadcast with the logits' batch "
                             f"shape {batch}")
    else:
        out_shape = batch
    if 0 in out_shape:  # no samples (num_samples=0): argmax refuses empty input

        return zeros(out_shape, dt.uint32, stream=st)
    # the categories lie where the logits' axis falls when the logits are aligned with the samples from the
    # right (MLX's layout of the noise, so that a key gives MLX's samples)
    at = ax + len(out_shape) - lg.ndim + 1
    g = gumbel(out_shape[:at] + (k,) + out_shape[at:], dt.float32, key, stream=st)  # (float32 noise, as MLX)
    return argmax(ew.add(g, lg, stream=st), axis=at, stream=st)


def permutation(x, axis: int = 0, key=None, *, stream=None) -> array:
    """A random permutation of ``range(x)`` (for an int), or ``x`` shuffled along ``axis``.

    Args:
        x (int | array): the length of the permutation, or the array to shuffle.
        axis (int): the axis to shuffle (default 0).
        key (array, optional): a key; default: the global key.

    Returns:
        array: the permuted values.
    """

    st = resolve_stream(stream)
    if isinstance(x, (int, np.integer)):  # the permutation itself, uint32 (as MLX)
        n = shape_of(int(x), "permutation")[0]
        return node(ArgSort(0), (bits((n,), key, st),), (n,), dt.uint32, st)
    a = as_array(x, "permutation")
    ax = axis_of(axis, a.ndim, "permutation")
    n = a.shape[ax]
    perm = node(ArgSort(0), (bits((n,), key, st),), (n,), dt.uint32, st)
    return getitem(a, (slice(None),) * ax + (perm,), stream=st)


def multivariate_normal(mean, cov, shape=(), dtype=dt.float32, key=None, *, stream=None) -> array:
    """Samples of the multivariate normal distribution with ``mean`` and covariance ``cov``.

    Args:
        mean (array): the means, of shape ``(..., n)``.
        cov (array): symmetric positive semi-definite covariances, of shape ``(..., n, n)``.
        shape (Sequence[int]): the batch shape of the samples; must broadcast with the batch shapes of
            ``mean`` and ``cov`` (default: their broadcast batch shape).
        dtype (Dtype): float dtype (default float32).
        key (array, optional): a key; default: the global key.

    Returns:
        array: samples of shape ``shape + (n,)``.
    """

    d = dt.float32 if dtype is None else dt.to_dtype(dtype)
    if d is not dt.float32:
        raise ValueError(f"multivariate_normal: dtype must be float32, got {d.name}")
    st = resolve_stream(stream)
    m = as_array(mean, "multivariate_normal")
    c = as_array(cov, "multivariate_normal")
    if m.ndim < 1 or c.ndim < 2 or c.shape[-1] != c.shape[-2] or c.shape[-1] != m.shape[-1]:
        raise ValueError("multivariate_normal: mean must have shape (..., n) and cov (..., n, n); "
                         f"got {m.shape} and {c.shape}")
    n = m.shape[-1]
    batch = broadcast_shapes(m.shape[:-1], c.shape[:-2], op="multivariate_normal")
    shape = shape_of(shape, "multivariate_normal")
    shape = broadcast_shapes(shape, batch, op="multivariate_normal") if shape else batch
    m, c = cast(m, dt.float32, st), cast(c, dt.float32, st)
    factor = node(COVARIANCE_FACTOR, (c,), c.shape, dt.float32, st)
    z = normal(shape + (n,), dt.float32, key=key, stream=st)
    x = squeeze(matmul(factor, expand_dims(z, -1, stream=st), stream=st), -1, stream=st)
    return cast(ew.add(x, m, stream=st), d, st)
