"""Matrix primitives: products, factorizations, inverses and solvers.

Every factorization works on the last two axes and batches over the leading ones. Those with several results
(``QR``, ``SVD``, ``Eigh``...) make one node per result, tied together as siblings (see ``ops.shape.split``).

CUDA graphs capture ``Matmul`` alone (its kernel calls cuBLAS directly): the others go through CuPy's cuSOLVER and
cuBLAS wrappers (CuPy refuses cuBLAS calls under capture) or the host (``Eig``; ``Cholesky`` checks its pivots
there).
"""

from __future__ import annotations

import numpy as np

from .base import Primitive

_NOT_WRITTEN = "not written yet (MLX has none either)"


class LinAlgError(RuntimeError, np.linalg.LinAlgError):
    """A factorization or solve that cannot be done (a singular matrix): a RuntimeError at eval, as MLX's, and
    NumPy's ``LinAlgError`` (a ValueError)."""


class Matmul(Primitive):
    """``a @ b`` with NumPy's batching and broadcasting rules. With ``ta`` (``tb``) the product reads ``a``
    (``b``) with its last two axes exchanged (only where both operands are at least 2-d): ``x @ w.T`` is one node
    that reads ``w`` where it lies, not a product of a transpose node (every kernel gets the same transposed view
    of the data)."""

    __slots__ = ("ta", "tb")
    capture = True

    def __init__(self, ta: bool = False, tb: bool = False):
        self.ta = ta
        self.tb = tb

    def __repr__(self) -> str:  # (in traces: Matmul, or which operand it reads transposed)
        flags = [s for s, on in (("a.T", self.ta), ("b.T", self.tb)) if on]
        return f"Matmul({', '.join(flags)})" if flags else "Matmul"


MATMUL = Matmul()
#: Matmul's four primitives, by ``(ta, tb)``
MATMULS = {(False, False): MATMUL, (False, True): Matmul(False, True), (True, False): Matmul(True, False),
           (True, True): Matmul(True, True)}


def matmul_operands(prim: Matmul, a, b) -> tuple:
    """The operands of a Matmul kernel as the product reads them (``ta``/``tb`` applied, as views)."""
    if prim.ta:
        a = a.swapaxes(-1, -2)
    if prim.tb:
        b = b.swapaxes(-1, -2)
    return a, b


def matmul_shapes(prim: Matmul, a: tuple, b: tuple) -> tuple:
    """The shapes of a Matmul's operands as the product reads them (:func:`matmul_operands`, for shapes)."""
    if prim.ta:
        a = a[:-2] + (a[-1], a[-2])
    if prim.tb:
        b = b[:-2] + (b[-1], b[-2])
    return a, b


class Inv(Primitive):
    """The inverse of square matrices."""

    __slots__ = ()
    capture = False


class Pinv(Primitive):
    """The Moore-Penrose pseudo-inverse, from the SVD."""

    __slots__ = ()
    capture = False
    no_grad = _NOT_WRITTEN


class TriInv(Primitive):
    """The inverse of triangular matrices (``upper`` or lower); the other triangle of the result is zero."""

    __slots__ = ("upper",)
    capture = False

    def __init__(self, upper: bool):
        self.upper = upper


class Cholesky(Primitive):
    """The Cholesky factor of symmetric positive definite matrices: lower ``L`` or, if ``upper``, ``U = L^H``."""

    __slots__ = ("upper",)
    capture = False
    no_grad = _NOT_WRITTEN

    def __init__(self, upper: bool):
        self.upper = upper


class CholeskyInv(Primitive):
    """The inverse of ``A`` from its Cholesky factor (``upper`` or lower)."""

    __slots__ = ("upper",)
    capture = False
    no_grad = _NOT_WRITTEN

    def __init__(self, upper: bool):
        self.upper = upper


class QR(Primitive):
    """The reduced QR factorization; two outputs, ``Q`` and ``R``."""

    __slots__ = ()
    n_outputs = 2
    capture = False
    no_grad = _NOT_WRITTEN


class SVD(Primitive):
    """The singular value decomposition: ``U, S, Vt`` (full matrices) or, without ``compute_uv``, ``S`` only."""

    __slots__ = ("compute_uv",)
    n_outputs = 0
    capture = False
    no_grad = _NOT_WRITTEN

    def __init__(self, compute_uv: bool):
        self.compute_uv = compute_uv


class Eigh(Primitive):
    """Eigenvalues (ascending) and, with ``vectors``, eigenvectors of Hermitian matrices, read from triangle
    ``uplo`` (``'L'`` or ``'U'``)."""

    __slots__ = ("uplo", "vectors")
    n_outputs = 0
    capture = False
    no_grad = _NOT_WRITTEN

    def __init__(self, uplo: str, vectors: bool):
        self.uplo = uplo
        self.vectors = vectors


class Eig(Primitive):
    """Eigenvalues and, with ``vectors``, right eigenvectors of general square matrices (complex results)."""

    __slots__ = ("vectors",)
    n_outputs = 0
    capture = False
    no_grad = _NOT_WRITTEN

    def __init__(self, vectors: bool):
        self.vectors = vectors


class LUFactor(Primitive):
    """LU with partial pivoting, compact: ``LU`` (unit-lower ``L`` below the diagonal, ``U`` on and above it) and
    the LAPACK-style pivots (row ``i`` was swapped with row ``pivots[i]``, in order)."""

    __slots__ = ()
    n_outputs = 2
    capture = False
    no_grad = _NOT_WRITTEN


class LU(Primitive):
    """LU with partial pivoting, expanded: the row indices ``p``, ``L`` and ``U`` with ``A = L[p] @ U``."""

    __slots__ = ()
    n_outputs = 3
    capture = False
    no_grad = _NOT_WRITTEN


class Solve(Primitive):
    """The solution ``x`` of ``a @ x = b`` (NumPy's rules: ``b`` is a vector only when it is 1-d)."""

    __slots__ = ()
    capture = False


class SolveTriangular(Primitive):
    """The solution of ``a @ x = b`` for triangular ``a`` (``upper`` or lower; the other triangle is ignored)."""

    __slots__ = ("upper",)
    capture = False

    def __init__(self, upper: bool):
        self.upper = upper


class Det(Primitive):
    """The determinant of square matrices."""

    __slots__ = ()
    capture = False


class SlogDet(Primitive):
    """The sign and the log of the absolute value of the determinant; two outputs."""

    __slots__ = ()
    n_outputs = 2
    capture = False


class Cross(Primitive):
    """The cross product of 3-vectors along ``axis`` (inputs already broadcast and padded to size 3)."""

    __slots__ = ("axis",)
    capture = False

    def __init__(self, axis: int):
        self.axis = axis


INV = Inv()
PINV = Pinv()
QR_DECOMP = QR()
LU_FACTOR = LUFactor()
LU_DECOMP = LU()
SOLVE = Solve()
DET = Det()
SLOGDET = SlogDet()
