"""Derivative rules of the triangular inverses and solves, ``slogdet`` and the cross product.

Each is the matrix identity of its function (``d(T^-1) = -T^-1 dT T^-1``, ``d log|det A| = tr(A^-1 dA)``...),
built from ops. Backward rules use the conjugate transpose, so a complex input gets the cotangent times the
conjugate derivative (umx's convention). A triangular primitive reads one triangle of its matrix, so the
other triangle gets no gradient.
"""

from __future__ import annotations

from .. import ops as m
from ..array import array, node
from ..devices import resolve_stream
from ..primitives import Cross, SlogDet, SolveTriangular, TriInv
from ._registry import rules
from ._rules import multilinear_jvp


def _adjoint(x: array) -> array:
    t = m.swapaxes(x, -1, -2)
    return m.conjugate(t) if t._dtype.kind == "c" else t


def _triangle(self, x: array) -> array:
    """The triangle of ``x`` that the primitive reads."""
    return m.triu(x) if self.upper else m.tril(x)


def _tri_inv_vjp(self, primals, cotangents, outputs):
    y = _adjoint(outputs[0])
    return [_triangle(self, -(y @ cotangents[0] @ y))]


def _tri_inv_jvp(self, primals, tangents, outputs):
    y = outputs[0]
    return [-(y @ _triangle(self, tangents[0]) @ y)]


def _solve_triangular_vjp(self, primals, cotangents, outputs):
    # (the op hands the primitive matrices a and b of one batch shape: no vector b, nothing to unbroadcast)
    a, _ = primals
    db = m.linalg.solve_triangular(_adjoint(a), cotangents[0], upper=not self.upper)
    return [_triangle(self, -(db @ _adjoint(outputs[0]))), db]


def _solve_triangular_jvp(self, primals, tangents, outputs):
    a, _ = primals
    ta, tb = tangents
    x = outputs[0]
    rhs = m.zeros_like(x) if tb is None else tb
    if ta is not None:
        rhs = rhs - _triangle(self, ta) @ x
    return [m.linalg.solve_triangular(a, rhs, upper=self.upper)]


def _slogdet_vjp(self, primals, cotangents, outputs):
    # the sign is piecewise constant; d log|det A| / dA = A^-T
    c = cotangents[1]
    return [m.expand_dims(c, (-1, -2)) * m.swapaxes(m.linalg.inv(primals[0]), -1, -2)]


def _slogdet_jvp(self, primals, tangents, outputs):
    inv = m.linalg.inv(primals[0])
    return [None, m.sum(m.swapaxes(inv, -1, -2) * tangents[0], axis=(-1, -2))]


def _cross_vjp(self, primals, cotangents, outputs):
    # <c, a x b> = <b x c, a> = <c x a, b>; the op broadcast a and b to the output's shape
    a, b = primals
    c = cotangents[0]
    if c._dtype.kind == "c":
        a, b = m.conjugate(a), m.conjugate(b)
    st = resolve_stream(None)
    return [node(self, (b, c), c._shape, c._dtype, st), node(self, (c, a), c._shape, c._dtype, st)]


rules(TriInv, vjp=_tri_inv_vjp, jvp=_tri_inv_jvp)
rules(SolveTriangular, vjp=_solve_triangular_vjp, jvp=_solve_triangular_jvp)
rules(SlogDet, vjp=_slogdet_vjp, jvp=_slogdet_jvp)
rules(Cross, vjp=_cross_vjp, jvp=multilinear_jvp)
