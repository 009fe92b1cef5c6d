"""``mx.linalg``: norms, factorizations, inverses and solvers, batched over leading axes.

Results follow NumPy's semantics with MLX's conventions: ``svd`` returns ``(U, S, Vt)`` with full ``U`` and
``Vt``; ``lu`` returns ``(p, L, U)`` where ``p`` is a row-index vector with ``A = L[p] @ U``; ``lu_factor``
returns ``(LU, pivots)`` with LAPACK-style swaps. Factorizations take float32, float64 or complex64 matrices.
"""

from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt
from ..primitives import linalg as la
from . import elementwise as ew
from . import reduction as red
from . import shape as sh
from ._core import (
    array,
    as_array,
    axis_of,
    broadcast_node,
    broadcast_shapes,
    cast,
    describe,
    node,
    resolve_stream,
    sibling_nodes,
)
from .creation import zeros

__all__ = ["norm", "matrix_norm", "qr", "svd", "inv", "pinv", "tri_inv", "cholesky", "cholesky_inv", "eigh",
           "eigvalsh", "eig", "eigvals", "lu", "lu_factor", "solve", "solve_triangular", "cross", "det", "slogdet"]

_FACTOR_DTYPES = (dt.float32, dt.float64, dt.complex64)


def _matrix(a, op: str, square: bool = True, real: bool = False) -> array:
    """``a`` checked as a (batch of) matrices of a factorizable dtype."""
    a = as_array(a, op)
    if a.ndim < 2:
        raise ValueError(f"{op}: needs an array of at least 2 dimensions (a matrix or a batch), got {describe(a)}")
    if square and a._shape[-1] != a._shape[-2]:
        raise ValueError(f"{op}: needs square matrices in the last two axes, got {describe(a)}")
    ok = (dt.float32, dt.float64) if real else _FACTOR_DTYPES
    if a._dtype not in ok:
        names = ", ".join(d.name for d in ok)
        raise ValueError(f"{op}: needs {names} input, got {describe(a)}; cast it with astype first")
    return a


def _real_of(d: dt.Dtype) -> dt.Dtype:
    return dt.float32 if d is dt.complex64 else d


# -- norms -----------------------------------------------------------------------------------------------------
def _vector_norm(x: array, ordv, axes: tuple, keepdims: bool, st) -> array:
    out_dtype = _real_of(x._dtype) if x._dtype.kind in "fc" else dt.float32
    if ordv is None or ordv == 2:
        mag = ew.abs(x, stream=st) if x._dtype.kind == "c" else x
        mag = cast(mag, out_dtype, st)
        return ew.sqrt(red.sum(ew.square(mag, stream=st), axes, keepdims, stream=st), stream=st)
    mag = cast(ew.abs(x, stream=st), out_dtype, st)
    if ordv == math.inf:
        return red.max(mag, axes, keepdims, stream=st)
    if ordv == -math.inf:
        return red.min(mag, axes, keepdims, stream=st)
    if ordv == 0:
        return cast(red.sum(ew.not_equal(mag, 0, stream=st), axes, keepdims, stream=st), out_dtype, st)
    if ordv == 1:
        return red.sum(mag, axes, keepdims, stream=st)
    p = float(ordv)
    return ew.power(red.sum(ew.power(mag, p, stream=st), axes, keepdims, stream=st), 1.0 / p, stream=st)


def _matrix_norm(x: array, ordv, axes: tuple, keepdims: bool, st, op: str) -> array:
    r, c = axes
    out_dtype = _real_of(x._dtype) if x._dtype.kind in "fc" else dt.float32
    if ordv is None or ordv in ("fro", "f"):
        return _vector_norm(x, None, axes, keepdims, st)
    if ordv in (1, -1, math.inf, -math.inf):
        mag = cast(ew.abs(x, stream=st), out_dtype, st)
        summed, other = (r, c) if ordv in (1, -1) else (c, r)
        sums = red.sum(mag, summed, True, stream=st)
        pick = red.max if ordv in (1, math.inf) else red.min
        out = pick(sums, other, True, stream=st)
        return out if keepdims else sh.squeeze(out, axes, stream=st)
    if ordv in (2, -2, "nuc"):
        nd = x.ndim
        rest = [i for i in range(nd) if i not in (r, c)]
        m = sh.transpose(x, rest + [r, c], stream=st)
        if m._dtype not in _FACTOR_DTYPES:
            m = cast(m, dt.float32, st)
        s = svd(m, compute_uv=False, stream=st)
        out = {2: red.max, -2: red.min, "nuc": red.sum}[ordv](s, -1, stream=st)
        if keepdims:
            out = sh.expand_dims(out, sorted(axes), stream=st)
        return cast(out, out_dtype, st)
    raise ValueError(f"{op}: invalid norm order {ordv!r} for matrices")


def _order(ordv, op: str):
    """A norm order: None, a str, or a Python or NumPy number; arrays and others refused with a TypeError naming
    ``op`` (an array would have to be evaluated at the call)."""
    if ordv is None or isinstance(ordv, str) or (isinstance(ordv, (int, float, np.integer, np.floating))
                                                 and not isinstance(ordv, bool)):
        return ordv
    hint = " (pass a Python number, e.g. ord.item())" if isinstance(ordv, array) else ""
    raise TypeError(f"{op}: ord must be a number, a str or None, got {type(ordv).__name__}{hint}")


def norm(a, /, ord=None, axis=None, keepdims: bool = False, *, stream=None) -> array:  # noqa: A002
    """Matrix or vector norm. See ``numpy.linalg.norm``.

    With ``axis=None``, ``a`` must be 1-d or 2-d unless ``ord`` is None (then the 2-norm of the flattened array is
    returned). An int ``axis`` gives vector norms, a pair of axes matrix norms.

    Args:
        a (array): input array.
        ord (int | float | str, optional): the order: for vectors any number, ``inf``, ``-inf``; for matrices
            ``'fro'``, ``'nuc'``, ``1``, ``-1``, ``2``, ``-2``, ``inf``, ``-inf``. Default: the 2-norm (Frobenius
            for matrices).
        axis (int | Sequence[int], optional): the axis or the two axes to take the norm over.
        keepdims (bool): keep the normed axes as size 1. Default: False.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the norms, float32 for integer input, real for complex input.
    """
    a = as_array(a, "linalg.norm")
    ord = _order(ord, "linalg.norm")  # noqa: A001
    st = resolve_stream(stream)
    if axis is None:
        if ord is None:
            axes = tuple(range(a.ndim))
            return _vector_norm(a, None, axes, keepdims, st)
        if a.ndim not in (1, 2):
            raise ValueError(f"linalg.norm: with ord={ord!r} and no axis, needs a 1-d or 2-d array, got {describe(a)}")
        axes = tuple(range(a.ndim))
    else:
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        axes = tuple(axis_of(x, a.ndim, "linalg.norm") for x in axes)
        if len(set(axes)) != len(axes):
            raise ValueError(f"linalg.norm: repeated axis in {axis}")
    if len(axes) == 1:
        if isinstance(ord, str):
            raise ValueError(f"linalg.norm: norm {ord!r} is only defined for matrices (two axes)")
        return _vector_norm(a, ord, axes, keepdims, st)
    if len(axes) == 2:
        return _matrix_norm(a, ord, axes, keepdims, st, "linalg.norm")
    raise ValueError(f"linalg.norm: takes one or two axes, got {axes}")


def matrix_norm(a, /, ord="fro", axis=(-2, -1), keepdims: bool = False, *, stream=None) -> array:  # noqa: A002
    """The matrix norm over two axes (the last two by default). See ``numpy.linalg.matrix_norm``.

    Args:
        a (array): input array, at least 2-d.
        ord (int | float | str): ``'fro'`` (default), ``'nuc'``, ``1``, ``-1``, ``2``, ``-2``, ``inf``, ``-inf``.
        axis (Sequence[int]): the two axes holding the matrices. Default: ``(-2, -1)``.
        keepdims (bool): keep the normed axes as size 1. Default: False.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the norms.
    """
    a = as_array(a, "linalg.matrix_norm")
    ord = _order(ord, "linalg.matrix_norm")  # noqa: A001
    if a.ndim < 2 or len(tuple(axis)) != 2:
        raise ValueError(f"linalg.matrix_norm: needs two axes of an array of at least 2 dimensions, got "
                         f"{describe(a)}")
    return norm(a, ord, tuple(axis), keepdims, stream=stream)


# -- factorizations ------------------------------------------------------------------------------------------------
def qr(a, /, *, stream=None) -> tuple:
    """The reduced QR factorization of the matrices in the last two axes of ``a``. See ``numpy.linalg.qr``.

    Args:
        a (array): input, shape ``(..., M, N)``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        tuple(array, array): ``Q`` ``(..., M, K)`` with orthonormal columns and upper-triangular ``R``
        ``(..., K, N)``, ``K = min(M, N)``, with ``a = Q @ R``.
    """
    a = _matrix(a, "linalg.qr", square=False)
    *b, m, n = a._shape
    k = min(m, n)
    q, r = sibling_nodes(la.QR_DECOMP, (a,), [((*b, m, k), a._dtype), ((*b, k, n), a._dtype)], resolve_stream(stream))
    return q, r


def svd(a, /, compute_uv: bool = True, *, stream=None):
    """The singular value decomposition. See ``numpy.linalg.svd`` (with ``full_matrices=True``).

    Args:
        a (array): input, shape ``(..., M, N)``.
        compute_uv (bool): return ``U`` and ``Vt`` too. Default: True.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        tuple(array, array, array) | array: ``U`` ``(..., M, M)``, ``S`` ``(..., K)`` in descending order and
        ``Vt`` ``(..., N, N)``, such that ``a = U[..., :K] @ diag(S) @ Vt[..., :K, :]``; only ``S`` when
        ``compute_uv`` is False.
    """
    a = _matrix(a, "linalg.svd", square=False)
    *b, m, n = a._shape
    st = resolve_stream(stream)
    sd = _real_of(a._dtype)
    s_shape = (*b, min(m, n))
    if not compute_uv:
        return node(la.SVD(False), (a,), s_shape, sd, st)
    u, s, vt = sibling_nodes(la.SVD(True), (a,), [((*b, m, m), a._dtype), (s_shape, sd), ((*b, n, n), a._dtype)], st)
    return u, s, vt


def inv(a, /, *, stream=None) -> array:
    """The inverse of square matrices. See ``numpy.linalg.inv``.

    Args:
        a (array): input, shape ``(..., N, N)``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: ``ainv`` with ``a @ ainv = ainv @ a = eye(N)``.
    """
    a = _matrix(a, "linalg.inv")
    return node(la.INV, (a,), a._shape, a._dtype, resolve_stream(stream))


def pinv(a, /, *, stream=None) -> array:
    """The Moore-Penrose pseudo-inverse, from the SVD. See ``numpy.linalg.pinv``.

    Args:
        a (array): input, shape ``(..., M, N)``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: ``aplus``, shape ``(..., N, M)``, with ``a @ aplus @ a = a``.
    """
    a = _matrix(a, "linalg.pinv", square=False)
    shape = a._shape[:-2] + (a._shape[-1], a._shape[-2])
    return node(la.PINV, (a,), shape, a._dtype, resolve_stream(stream))


def tri_inv(a, /, upper: bool = False, *, stream=None) -> array:
    """The inverse of triangular matrices; only the given triangle of ``a`` is read.

    Args:
        a (array): input, shape ``(..., N, N)``.
        upper (bool): ``a`` is upper (True) or lower (False, default) triangular.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the inverse, triangular like ``a`` (the other triangle is exactly zero).
    """
    a = _matrix(a, "linalg.tri_inv")
    return node(la.TriInv(bool(upper)), (a,), a._shape, a._dtype, resolve_stream(stream))


def cholesky(a, /, upper: bool = False, *, stream=None) -> array:
    """The Cholesky factor of symmetric (Hermitian) positive definite matrices. See ``numpy.linalg.cholesky``.

    Only the lower triangle of ``a`` is read; other input gives undefined results.

    Args:
        a (array): input, shape ``(..., N, N)``.
        upper (bool): return upper-triangular ``U`` with ``U^H @ U = a`` instead of lower ``L`` with
            ``L @ L^H = a``. Default: False.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the factor.
    """
    a = _matrix(a, "linalg.cholesky")
    return node(la.Cholesky(bool(upper)), (a,), a._shape, a._dtype, resolve_stream(stream))


def cholesky_inv(a, upper: bool = False, *, stream=None) -> array:
    """The inverse of a symmetric positive definite matrix ``A`` from its Cholesky factor.

    Args:
        a (array): the factor, shape ``(..., N, N)``: lower with ``A = L @ L^H``, or upper with ``A = U^H @ U``.
        upper (bool): ``a`` is the upper factor. Default: False.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: ``A^-1``.
    """
    f = _matrix(a, "linalg.cholesky_inv")
    return node(la.CholeskyInv(bool(upper)), (f,), f._shape, f._dtype, resolve_stream(stream))


def _uplo(UPLO: str, op: str) -> str:  # noqa: N803
    if UPLO not in ("L", "U"):
        raise ValueError(f"{op}: UPLO must be 'L' or 'U', got {UPLO!r}")
    return UPLO


def eigh(a, /, UPLO: str = "L", *, stream=None) -> tuple:  # noqa: N803 (NumPy's name)
    """Eigenvalues and eigenvectors of Hermitian (real symmetric) matrices. See ``numpy.linalg.eigh``.

    Only the triangle ``UPLO`` of ``a`` is read; symmetry is not checked.

    Args:
        a (array): input, shape ``(..., N, N)``.
        UPLO (str): ``'L'`` (default) or ``'U'``: the triangle to read.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        tuple(array, array): the eigenvalues ``(..., N)`` in ascending order (real) and the eigenvectors
        ``(..., N, N)``, column ``v[..., :, i]`` belonging to eigenvalue ``i``.
    """
    a = _matrix(a, "linalg.eigh")
    prim = la.Eigh(_uplo(UPLO, "linalg.eigh"), True)
    specs = [(a._shape[:-1], _real_of(a._dtype)), (a._shape, a._dtype)]
    w, v = sibling_nodes(prim, (a,), specs, resolve_stream(stream))
    return w, v


def eigvalsh(a, /, UPLO: str = "L", *, stream=None) -> array:  # noqa: N803
    """The eigenvalues of Hermitian (real symmetric) matrices, ascending. See ``numpy.linalg.eigvalsh``.

    Args:
        a (array): input, shape ``(..., N, N)``.
        UPLO (str): ``'L'`` (default) or ``'U'``: the triangle to read.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the eigenvalues, shape ``(..., N)``, real.
    """
    a = _matrix(a, "linalg.eigvalsh")
    prim = la.Eigh(_uplo(UPLO, "linalg.eigvalsh"), False)
    return node(prim, (a,), a._shape[:-1], _real_of(a._dtype), resolve_stream(stream))


def eig(a, /, *, stream=None) -> tuple:
    """Eigenvalues and right eigenvectors of general square matrices. See ``numpy.linalg.eig``.

    On a GPU stream the decomposition runs on the host (CuPy has no general eigensolver).

    Args:
        a (array): input, shape ``(..., N, N)``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        tuple(array, array): complex64 eigenvalues ``(..., N)`` and unit eigenvectors ``(..., N, N)`` (columns).
    """
    a = _matrix(a, "linalg.eig")
    c = dt.complex64
    w, v = sibling_nodes(la.Eig(True), (a,), [(a._shape[:-1], c), (a._shape, c)], resolve_stream(stream))
    return w, v


def eigvals(a, /, *, stream=None) -> array:
    """The eigenvalues of general square matrices, complex64. See ``numpy.linalg.eigvals``.

    Args:
        a (array): input, shape ``(..., N, N)``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the eigenvalues, shape ``(..., N)``.
    """
    a = _matrix(a, "linalg.eigvals")
    return node(la.Eig(False), (a,), a._shape[:-1], dt.complex64, resolve_stream(stream))


def lu(a, /, *, stream=None) -> tuple:
    """The LU factorization with partial pivoting (NumPy's array operations; SciPy's ``lu`` returns a permutation
    matrix instead of indices).

    Args:
        a (array): input, shape ``(..., M, N)``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        tuple(array, array, array): row indices ``p`` (uint32, ``(..., M)``), unit lower-triangular ``L``
        ``(..., M, K)`` and upper-triangular ``U`` ``(..., K, N)`` with ``a = L[p] @ U`` (for batches,
        ``take_along_axis(L, p[..., None], -2) @ U``).
    """
    a = _matrix(a, "linalg.lu", square=False)
    *b, m, n = a._shape
    k = min(m, n)
    specs = [((*b, m), dt.uint32), ((*b, m, k), a._dtype), ((*b, k, n), a._dtype)]
    p, low, up = sibling_nodes(la.LU_DECOMP, (a,), specs, resolve_stream(stream))
    return p, low, up


def lu_factor(a, /, *, stream=None) -> tuple:
    """The compact LU factorization with partial pivoting, as ``scipy.linalg.lu_factor``.

    Args:
        a (array): input, shape ``(..., M, N)``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        tuple(array, array): ``LU`` (``L`` below the diagonal, its unit diagonal implied; ``U`` on and above) and
        the pivots (uint32, ``(..., K)``): row ``i`` was swapped with row ``pivots[i]``, for ``i = 0, 1, ...``.
    """
    a = _matrix(a, "linalg.lu_factor", square=False)
    k = min(a._shape[-2:])
    specs = [(a._shape, a._dtype), (a._shape[:-2] + (k,), dt.uint32)]
    f, piv = sibling_nodes(la.LU_FACTOR, (a,), specs, resolve_stream(stream))
    return f, piv


def _solve(prim, a, b, op: str, stream) -> array:
    a = _matrix(a, op)
    b = as_array(b, op)
    if b.ndim == 0:
        raise ValueError(f"{op}: b must be at least 1-d, got {describe(b)}")
    st = resolve_stream(stream)
    d = dt.promote(a._dtype, b._dtype)
    if d not in _FACTOR_DTYPES:
        raise ValueError(f"{op}: needs float32, float64 or complex64 inputs, got {describe(a, b)}")
    a, b = cast(a, d, st), cast(b, d, st)
    n = a._shape[-1]
    vector = b.ndim == 1
    if vector:
        b = sh.expand_dims(b, -1, stream=st)
    if b._shape[-2] != n:
        raise ValueError(f"{op}: b's rows ({b._shape[-2]}) must match a's size ({n}); got {describe(a, b)}")
    batch = broadcast_shapes(a._shape[:-2], b._shape[:-2], op=op)
    a = broadcast_node(a, batch + a._shape[-2:], st)
    b = broadcast_node(b, batch + b._shape[-2:], st)
    x = node(prim, (a, b), b._shape, d, st)
    return sh.squeeze(x, -1, stream=st) if vector else x


def solve(a, b, /, *, stream=None) -> array:
    """The solution ``x`` of ``a @ x = b``. See ``numpy.linalg.solve``.

    Args:
        a (array): square matrices, shape ``(..., N, N)``.
        b (array): right-hand sides: a vector ``(N,)`` or matrices ``(..., N, K)``; batch axes broadcast.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: ``x``, shaped like the broadcast ``b``.
    """
    return _solve(la.SOLVE, a, b, "linalg.solve", stream)


def solve_triangular(a, b, /, *, upper: bool = False, stream=None) -> array:
    """The solution ``x`` of ``a @ x = b`` for triangular ``a``; only the given triangle of ``a`` is read.

    Args:
        a (array): triangular matrices, shape ``(..., N, N)``.
        b (array): right-hand sides: a vector ``(N,)`` or matrices ``(..., N, K)``; batch axes broadcast.
        upper (bool): ``a`` is upper (True) or lower (False, default) triangular.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: ``x``, shaped like the broadcast ``b``.
    """
    return _solve(la.SolveTriangular(bool(upper)), a, b, "linalg.solve_triangular", stream)


def det(a, /, *, stream=None) -> array:
    """The determinant of square matrices. See ``numpy.linalg.det``.

    Args:
        a (array): input, shape ``(..., N, N)``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the determinants, shape ``(...)``: float32 for integer input; complex input is refused, as in MLX.
    """
    st = resolve_stream(stream)
    a, out = _det_input(a, "linalg.det", st)
    return cast(node(la.DET, (a,), a._shape[:-2], a._dtype, st), out, st)


def _det_input(a, op: str, st) -> tuple:
    """(``a`` ready for the kernel, the result's dtype): as MLX, integers give float32, half precision is computed
    in float32 and given back in its own dtype, and complex input is refused."""
    a = as_array(a, op)
    if a._dtype.kind == "c":
        raise ValueError(f"{op}: complex inputs are not supported, got {describe(a)}")
    out = a._dtype if a._dtype.kind == "f" else dt.float32
    if a._dtype not in _FACTOR_DTYPES:
        a = cast(a, dt.float32, st)
    return _matrix(a, op), out


def slogdet(a, /, *, stream=None) -> tuple:
    """The sign and log absolute value of the determinant. See ``numpy.linalg.slogdet``.

    Args:
        a (array): input, shape ``(..., N, N)``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        tuple(array, array): ``sign`` (0 for singular matrices) and ``logabsdet`` (``-inf`` for them), with
        ``det = sign * exp(logabsdet)``.
    """
    st = resolve_stream(stream)
    a, out = _det_input(a, "linalg.slogdet", st)
    shape = a._shape[:-2]
    sign, logdet = sibling_nodes(la.SLOGDET, (a,), [(shape, a._dtype), (shape, a._dtype)], st)
    return cast(sign, out, st), cast(logdet, out, st)


def cross(a, b, /, axis: int = -1, *, stream=None) -> array:
    """The cross product of 3-vectors (or 2-vectors, taken with a zero third component) along ``axis``.
    See ``numpy.cross``; unlike NumPy, 2-vectors give 3-vectors.

    Args:
        a (array): input.
        b (array): input; broadcasts with ``a``.
        axis (int): the axis holding the vectors. Default: -1.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the cross products, with 3 along ``axis``.
    """
    a = as_array(a, "linalg.cross")
    b = as_array(b, "linalg.cross")
    st = resolve_stream(stream)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"linalg.cross: inputs must be at least 1-d, got {describe(a, b)}")
    ax_a = axis_of(axis, a.ndim, "linalg.cross")
    ax_b = axis_of(axis, b.ndim, "linalg.cross")
    for x, ax in ((a, ax_a), (b, ax_b)):
        if x._shape[ax] not in (2, 3):
            raise ValueError(f"linalg.cross: vectors along axis {axis} must have 2 or 3 components, "
                             f"got {describe(a, b)}")
    d = dt.promote(a._dtype, b._dtype)
    a, b = cast(a, d, st), cast(b, d, st)
    a, b = _pad3(a, ax_a, st), _pad3(b, ax_b, st)
    a, b = sh.moveaxis(a, ax_a, -1, stream=st), sh.moveaxis(b, ax_b, -1, stream=st)
    shape = broadcast_shapes(a._shape, b._shape, op="linalg.cross")
    a, b = broadcast_node(a, shape, st), broadcast_node(b, shape, st)
    out = node(la.Cross(-1), (a, b), shape, d, st)
    return sh.moveaxis(out, -1, axis_of(axis, len(shape), "linalg.cross"), stream=st)


def _pad3(x: array, ax: int, st) -> array:
    if x._shape[ax] == 3:
        return x
    zshape = x._shape[:ax] + (1,) + x._shape[ax + 1:]
    return sh.concatenate([x, zeros(zshape, x._dtype, stream=st)], ax, stream=st)
