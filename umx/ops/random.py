"""``mx.random``: keys, splitting and samplers, MLX's API over the Threefry-2x32 generator.

Every sampler takes ``key=``; without one it draws from a global key that :func:`seed` resets and that each draw
advances (on the host, at once: keys are two words). The same key gives the same values on every device.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from .. import dtypes as dt
from ..primitives.random import RandomBits
from ._core import array, as_array, node, resolve_stream, shape_of

__all__ = ["seed", "key", "split", "uniform", "normal", "randint", "bernoulli", "truncated_normal", "gumbel",
           "categorical", "permutation", "laplace", "multivariate_normal"]

_M32 = 0xFFFFFFFF
_lock = threading.Lock()  # MUST be held to advance the global key: samplers may run on several threads
_global = [0, 0]


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


def seed(s: int) -> None:
    """Reset the global key from the integer ``s``."""
    with _lock:
        _global[:] = [(s >> 32) & _M32, s & _M32]


def key(s: int) -> array:
    """A key (a uint32 array of shape (2,)) from the integer seed ``s``."""
    return array(np.array([(s >> 32) & _M32, s & _M32], np.uint32), dt.uint32)


def _next_key() -> array:
    with _lock:
        k0, k1 = _global
        # split into (new global, subkey), as split(key, 2) does
        a0, b0 = _threefry_host(k0, k1, 0, 2)
        a1, b1 = _threefry_host(k0, k1, 1, 3)
        _global[:] = [a0, a1]
    return array(np.array([b0, b1], np.uint32), dt.uint32)


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
    k = _key(key)
    b = bits((2, num), k, stream)
    from .shape import transpose

    return transpose(b, stream=stream)


def _unit(shape, dtype, key, stream) -> array:
    """Uniform floats in [0, 1): 23 random mantissa bits under exponent 0, minus 1."""
    from .elementwise import bitwise_or, right_shift, subtract
    from .shape import astype

    st = resolve_stream(stream)
    b = bits(shape, key, st)
    m = bitwise_or(right_shift(b, 9, stream=st), 0x3F800000, stream=st)
    from .shape import view

    f = subtract(view(m, dt.float32, stream=st), 1.0, stream=st)
    return f if dtype is dt.float32 else astype(f, dtype, stream=st)


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
    d = dt.to_dtype(dtype)
    if d.kind != "f":
        raise ValueError(f"uniform: dtype must be a float type, got {d.name}")
    from .elementwise import add, multiply, subtract

    u = _unit(shape, d, key, stream)
    if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low == 0 and high == 1:
        return u
    lo, hi = as_array(low, "uniform", d), as_array(high, "uniform", d)
    return add(multiply(u, subtract(hi, lo, stream=stream), stream=stream), lo, stream=stream)


def normal(shape=(), dtype=dt.float32, loc=0.0, scale=1.0, key=None, *, stream=None) -> array:
    """Standard normal samples (times ``scale``, plus ``loc``): ``sqrt(2) * erfinv(u)`` with u uniform in (-1, 1)."""
    d = dt.to_dtype(dtype)
    if d.kind != "f":
        raise ValueError(f"normal: dtype must be a float type, got {d.name}")
    from .elementwise import add, erfinv, maximum, multiply

    lo = np.nextafter(np.float32(-1), np.float32(0)).item()
    u = uniform(lo, 1.0, shape, dt.float32, key, stream=stream)
    u = maximum(u, lo, stream=stream)
    z = multiply(erfinv(u, stream=stream), math.sqrt(2.0), stream=stream)
    if scale != 1.0:
        z = multiply(z, scale, stream=stream)
    if loc != 0.0:
        z = add(z, loc, stream=stream)
    from .shape import astype

    return z if d is dt.float32 else astype(z, d, stream=stream)
