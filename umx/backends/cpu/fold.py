"""Elementwise work whose broadcast operand repeats along a short last run, folded into long rows.

NumPy's loops run along the innermost axis its operands share. An operand broadcast along the leading axes (a
bias, a norm's scale or statistics: C channels) leaves rows of C elements, and NumPy pays a loop call's cost
every C elements, several times the arithmetic when C is a few channels. Folded, the full operands are viewed as
rows of ``k * C`` elements and the short operand tiled ``k`` times, so that each loop call covers at least ``ROW``
elements; the values and their order are the same, so the result is bit for bit NumPy's.
"""

from __future__ import annotations

import numpy as np

#: a folded row has at least this many elements
ROW = 256
#: repeating runs shorter than this are folded
SHORT = 64
#: a folded row has at most this many elements (the short operands are tiled this long)
LONGEST = 16 * ROW
#: results smaller than this are computed as they come (folding costs a few microseconds)
MIN_SIZE = 1 << 14


def plan(shapes: list, out_shape: tuple):
    """``(rows, k, run)`` to fold operands of ``shapes`` into a result of ``out_shape``: ``rows`` rows of
    ``k * run`` elements, the short operands' ``run`` elements tiled ``k`` times; or None. Each operand must be
    one element, the result's shape, or the result's last axes after leading ones (the same axes for all)."""
    nd = len(out_shape)
    first = None  # the first of the axes the short operands span
    for s in shapes:
        if s == out_shape:
            continue
        n = 1
        for d in s:
            n *= d
        if n == 1:
            continue
        lead = 0
        while lead < len(s) and s[lead] == 1:
            lead += 1
        j = nd - (len(s) - lead)
        if j <= 0 or s[lead:] != out_shape[j:] or (first is not None and j != first):
            return None
        first = j
    if first is None:
        return None
    run = 1
    for d in out_shape[first:]:
        run *= d
    if run >= SHORT:
        return None
    k = 1  # whole axes from the last leading one, and a divisor of the next axis: rows of ROW or a few more
    for d in reversed(out_shape[:first]):
        if k * run >= ROW:
            break
        need = -(-ROW // (k * run))
        if d <= need:
            k *= d
            continue
        q = next((q for q in range(need, min(d, 4 * need) + 1) if d % q == 0), None)
        if q is None and k * run * d <= LONGEST:
            q = d
        if q is not None:
            k *= q
        break
    if k * run < SHORT:
        return None
    rows = 1
    for d in out_shape:
        rows *= d
    return rows // (k * run), k, run


def operands(xs: list, out_shape: tuple, folding) -> list | None:
    """``xs`` (NumPy arrays and scalars) folded by ``folding`` (from :func:`plan`), or None where a full operand
    is not C-contiguous (its rows are no view)."""
    rows, k, run = folding
    out = []
    for x in xs:
        if x.__class__ is not np.ndarray or x.size == 1:
            out.append(x.reshape(()) if x.__class__ is np.ndarray else x)
        elif x.shape == out_shape:
            if not x.flags.c_contiguous:
                return None
            out.append(x.reshape(rows, k * run))
        else:
            out.append(np.tile(x.reshape(run), k))
    return out


def binary(ufunc, x, y):
    """``ufunc(x, y)`` computed on folded rows, or None where folding does not apply."""
    out_shape = x.shape if x.ndim >= y.ndim else y.shape
    if x.shape != out_shape and y.shape != out_shape:  # (both broadcast: no full operand gives the rows)
        return None
    folding = plan([x.shape, y.shape], out_shape)
    if folding is None:
        return None
    xs = operands([x, y], out_shape, folding)
    if xs is None:
        return None
    return ufunc(*xs).reshape(out_shape)
