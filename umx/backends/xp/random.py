"""Threefry-2x32 (Salmon et al., 2011), written with array ops so that NumPy and CuPy give the same bits."""

from __future__ import annotations

from ...primitives.random import CovarianceFactor, RandomBits
from . import kernel

ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
PARITY = 0x1BD11BDA


def threefry2x32(xp, k0, k1, x0, x1):
    """Encrypt counter pairs ``(x0, x1)`` (uint32 arrays) under key ``(k0, k1)`` (uint32 0-d arrays): 20 rounds."""
    u32 = xp.uint32
    ks = (k0, k1, k0 ^ k1 ^ u32(PARITY))
    x0 = x0 + ks[0]
    x1 = x1 + ks[1]
    for i in range(5):
        for r in ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = (x1 << u32(r)) | (x1 >> u32(32 - r))
            x1 = x1 ^ x0
        x0 = x0 + ks[(i + 1) % 3]
        x1 = x1 + ks[(i + 2) % 3] + u32(i + 1)
    return x0, x1


@kernel(RandomBits)
def _random_bits(xp, prim, key):
    n = 1
    for s in prim.shape:
        n *= s
    half = (n + 1) // 2
    key = key.reshape(-1)
    counters = xp.arange(half, dtype=xp.uint32)
    # word i and word i + half come from one block of counters (i, i + half); an odd count's middle word is the
    # first word of block (half - 1, 0): MLX's layout, so that a key gives MLX's bits
    second = counters + xp.uint32(half)
    if n % 2:
        second = xp.where(counters == half - 1, xp.uint32(0), second)
    a, b = threefry2x32(xp, key[0], key[1], counters, second)
    return xp.concatenate([a, b])[:n].reshape(prim.shape)


@kernel(CovarianceFactor)
def _covariance_factor(xp, prim, cov):
    # the symmetric square root V sqrt(W) V^T, as MLX's (from its SVD): it does not depend on the signs or the
    # order of the eigenvectors, so a key gives MLX's samples
    w, v = xp.linalg.eigh(cov)
    return (v * xp.sqrt(xp.maximum(w, 0))[..., None, :]) @ xp.swapaxes(v, -1, -2)
