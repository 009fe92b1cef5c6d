"""Matrix kernels, batched over leading axes, written against ``numpy.linalg`` (CuPy mirrors it).

Where CuPy has no routine (``eig``), the kernel computes on the host with NumPy and returns an array of the
caller's module; LU is written here in array operations, so it runs on either device.
"""

from __future__ import annotations

import math

import numpy as np

from ...primitives import linalg as la
from . import kernel


def _host(xp, x) -> np.ndarray:
    return x if xp is np else xp.asnumpy(x)


def _tri(xp, a, upper: bool):
    return xp.triu(a) if upper else xp.tril(a)


def _adjoint(xp, a):
    return xp.conj(xp.swapaxes(a, -1, -2))


@kernel(la.Matmul)
def _matmul(xp, prim, a, b):
    return matmul(xp, *la.matmul_operands(prim, a, b))


def matmul(xp, a, b, mm=None):
    """Matmul's kernel with product ``mm(a, b)`` (default ``xp.matmul``; the CPU's splits large ones over its
    cores)."""
    mm = mm or xp.matmul
    if xp is np and a.dtype == np.float16:
        # NumPy has no BLAS for float16 (a naive loop, thousands of times slower): a float32 product, rounded
        # once, as MLX's CPU and torch compute it
        return matmul(xp, a.astype(np.float32), b.astype(np.float32), mm).astype(np.float16)
    if a.ndim > 2 and b.ndim == 2 and a.flags.c_contiguous:
        # a stack of matrices times one matrix (a Linear layer on [batch, length, features]) is one product of
        # all the stack's rows: one large GEMM instead of one per matrix
        rows = math.prod(a.shape[:-1])
        return mm(a.reshape(rows, a.shape[-1]), b).reshape(*a.shape[:-1], b.shape[-1])
    return mm(a, b)


def _singular(fn):
    """``fn`` with NumPy's LinAlgError (a singular matrix) raised as umx's, a RuntimeError as MLX's."""

    def checked(xp, prim, *args):
        try:
            return fn(xp, prim, *args)
        except Exception as e:
            if type(e).__name__ != "LinAlgError" or isinstance(e, la.LinAlgError):
                raise
            raise la.LinAlgError(f"{prim.name}: {e}") from None

    return checked


@kernel(la.Inv)
@_singular
def _inv(xp, prim, a):
    return xp.linalg.inv(a)


@kernel(la.Pinv)
def _pinv(xp, prim, a):
    return xp.linalg.pinv(a).astype(a.dtype, copy=False)


@kernel(la.TriInv)
def _tri_inv(xp, prim, a):
    return _tri(xp, xp.linalg.inv(_tri(xp, a, prim.upper)), prim.upper)


@kernel(la.Cholesky)
def _cholesky(xp, prim, a):
    try:
        low = xp.linalg.cholesky(a)
        # NumPy raises on failure; CuPy reports none by default (a refused pivot stays non-positive on the
        # diagonal), so only CuPy pays for the check's read
        failed = xp is not np and not bool(xp.all(xp.diagonal(low, 0, -2, -1).real > 0))
    except Exception as e:  # NumPy's LinAlgError: not positive definite, numerically
        if type(e).__name__ != "LinAlgError":
            raise
        failed = True
    if failed:
        low = _cholesky_unchecked(xp, a)
    return _adjoint(xp, low) if prim.upper else low


def _cholesky_unchecked(xp, a):
    """Cholesky without the positive-definiteness check, as MLX's (which ignores LAPACK's report): a pivot that
    rounding made negative counts as 0, so semi-definite matrices still factor (``L @ L^H`` gives them back) and
    the results for others are undefined but finite. Column by column; only for matrices LAPACK refused."""
    n = a.shape[-1]
    low = xp.zeros_like(a)
    for j in range(n):
        s = a[..., j:, j] - xp.matmul(low[..., j:, :j], xp.conj(low[..., j, :j])[..., None])[..., 0]
        d = xp.sqrt(xp.maximum(s[..., 0].real, 0))
        low[..., j, j] = d
        low[..., j + 1:, j] = xp.where(d[..., None] > 0, s[..., 1:] / xp.where(d > 0, d, 1)[..., None], 0)
    return low


@kernel(la.CholeskyInv)
def _cholesky_inv(xp, prim, f):
    t = xp.linalg.inv(_tri(xp, f, prim.upper))
    # A = L L^H gives A^-1 = L^-H L^-1; A = U^H U gives A^-1 = U^-1 U^-H.
    return xp.matmul(t, _adjoint(xp, t)) if prim.upper else xp.matmul(_adjoint(xp, t), t)


@kernel(la.QR)
def _qr(xp, prim, a):
    q, r = xp.linalg.qr(a)
    return q, r


@kernel(la.SVD)
def _svd(xp, prim, a):
    if not prim.compute_uv:
        return xp.linalg.svd(a, compute_uv=False)
    u, s, vt = xp.linalg.svd(a, full_matrices=True)
    return u, s, vt


@kernel(la.Eigh)
def _eigh(xp, prim, a):
    if not prim.vectors:
        return xp.linalg.eigvalsh(a, UPLO=prim.uplo)
    w, v = xp.linalg.eigh(a, UPLO=prim.uplo)
    return w, v


@kernel(la.Eig)
def _eig(xp, prim, a):
    h = _host(xp, a)
    if not prim.vectors:
        return xp.asarray(np.linalg.eigvals(h).astype(np.complex64))
    w, v = np.linalg.eig(h)
    return xp.asarray(w.astype(np.complex64)), xp.asarray(v.astype(np.complex64))


def _lu_in_place(xp, lu):
    """Factor the stack ``lu`` (B, M, N) in place by Gaussian elimination with partial pivoting; return the
    LAPACK-style pivots (B, K) and the row permutation (B, M) with ``a[perm] = L @ U``."""
    nb, m, n = lu.shape
    k_max = min(m, n)
    rows = xp.arange(nb)
    pivots = xp.zeros((nb, k_max), dtype=xp.int64)
    perm = xp.broadcast_to(xp.arange(m), (nb, m)).copy()
    for k in range(k_max):
        p = xp.argmax(xp.abs(lu[:, k:, k]), axis=1) + k
        pivots[:, k] = p
        top, pick = lu[rows, k].copy(), lu[rows, p].copy()
        lu[rows, k], lu[rows, p] = pick, top
        pt, pp = perm[rows, k].copy(), perm[rows, p].copy()
        perm[rows, k], perm[rows, p] = pp, pt
        piv = lu[:, k, k]
        # A zero pivot leaves its column unscaled (LAPACK's getrf does the same and reports singularity).
        piv = xp.where(piv == 0, xp.ones((), lu.dtype), piv)
        lu[:, k + 1:, k] /= piv[:, None]
        lu[:, k + 1:, k + 1:] -= lu[:, k + 1:, k:k + 1] * lu[:, k:k + 1, k + 1:]
    return pivots, perm


def _lu(xp, a):
    *batch, m, n = a.shape
    nb = 1
    for b in batch:
        nb *= b
    lu = xp.array(a, copy=True).reshape((nb, m, n))
    pivots, perm = _lu_in_place(xp, lu)
    k = min(m, n)
    return lu.reshape(a.shape), pivots.reshape((*batch, k)), perm.reshape((*batch, m))


@kernel(la.LUFactor)
def _lu_factor(xp, prim, a):
    lu, pivots, _ = _lu(xp, a)
    return lu, pivots.astype(xp.uint32)


@kernel(la.LU)
def _lu_full(xp, prim, a):
    lu, _, perm = _lu(xp, a)
    m, n = a.shape[-2:]
    k = min(m, n)
    low = xp.tril(lu[..., :, :k], -1) + xp.eye(m, k, dtype=a.dtype)
    up = xp.triu(lu[..., :k, :])
    # perm lists, for each row of L @ U, the row of A it came from; A = L[p] @ U needs the inverse.
    return xp.argsort(perm, axis=-1).astype(xp.uint32), low, up


@kernel(la.Solve)
@_singular
def _solve(xp, prim, a, b):
    return xp.linalg.solve(a, b)


@kernel(la.SolveTriangular)
def _solve_triangular(xp, prim, a, b):
    return xp.linalg.solve(_tri(xp, a, prim.upper), b)


@kernel(la.Det)
def _det(xp, prim, a):
    return xp.linalg.det(a)


@kernel(la.SlogDet)
def _slogdet(xp, prim, a):
    sign, logdet = xp.linalg.slogdet(a)
    return sign, logdet


@kernel(la.Cross)
def _cross(xp, prim, a, b):
    return xp.cross(a, b, axis=prim.axis)
