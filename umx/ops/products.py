"""Products: einsum, tensordot, inner, outer, kron, addmm, vecdot and the gathered and masked matrix products."""

from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..primitives import GATHER_MM, Einsum
from . import elementwise as ew
from ._core import array, as_array, broadcast_shapes, cast, check_dims, describe, int_of, node, resolve_stream
from .creation import arange
from .elementwise import add, conjugate, multiply
from .layout import repeat
from .matmul import matmul
from .reduction import sum as sum_
from .shape import expand_dims, reshape

__all__ = ["einsum", "einsum_path", "tensordot", "inner", "outer", "kron", "addmm", "vecdot", "gather_mm",
           "segmented_mm", "block_masked_mm"]

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _promoted(name: str, operands, st) -> list:
    xs = [as_array(x, name) for x in operands]
    d = xs[0]._dtype
    for x in xs[1:]:
        d = dt.promote(d, x._dtype)
    return [cast(x, d, st) for x in xs]


def _parse_einsum(subscripts: str, shapes: list) -> tuple:
    """(explicit subscripts, output shape) for ``subscripts`` over operands of ``shapes``, checked."""
    if not isinstance(subscripts, str):
        raise TypeError(f"einsum: subscripts must be a string, got {type(subscripts).__name__}")
    s = subscripts.replace(" ", "")
    ins, arrow, out = s.partition("->")
    terms = ins.split(",")
    if len(terms) != len(shapes):
        raise ValueError(f"einsum: {len(terms)} subscript terms for {len(shapes)} operands")
    sizes: dict = {}
    ell_shapes = []
    for term, shape in zip(terms, shapes):
        labels = term.replace("...", "")
        if not all(c in _LETTERS for c in labels) or term.count("...") > 1:
            raise ValueError(f"einsum: invalid subscripts {subscripts!r}")
        n_ell = len(shape) - len(labels)
        if n_ell < 0 or (n_ell and "..." not in term):
            raise ValueError(f"einsum: term {term!r} does not match an operand of shape {shape}")
        pre, _, post = term.partition("...")
        ell_shapes.append(shape[len(pre):len(pre) + n_ell] if "..." in term else ())
        dims = shape[:len(pre)] + (shape[len(shape) - len(post):] if post else ())
        for c, n in zip(pre + post, dims):
            if sizes.get(c, n) != n and 1 not in (n, sizes[c]):
                raise ValueError(f"einsum: label {c!r} has sizes {sizes[c]} and {n} in {subscripts!r}")
            sizes[c] = n if sizes.get(c, 1) == 1 else sizes[c]
    ell = broadcast_shapes(*ell_shapes, op="einsum") if ell_shapes else ()
    has_ell = any("..." in t for t in terms)
    if not arrow:
        counts = {c: ins.count(c) for c in sizes}
        out = ("..." if has_ell else "") + "".join(sorted(c for c in sizes if counts[c] == 1))
    labels = out.replace("...", "")
    if any(c not in sizes for c in labels) or len(set(labels)) != len(labels) or out.count("...") > 1:
        raise ValueError(f"einsum: invalid output subscripts in {subscripts!r}")
    pre, _, post = out.partition("...")
    shape = tuple(sizes[c] for c in pre) + (ell if "..." in out else ()) + tuple(sizes[c] for c in post)
    return ",".join(terms) + "->" + out, shape


def einsum(subscripts: str, *operands, stream=None) -> array:
    """Einstein summation over ``operands``. See ``numpy.einsum``.

    Args:
        subscripts (str): e.g. ``'ij,jk->ik'``; ``...`` and the implicit form (no ``->``) work as in NumPy.
        *operands (array): the inputs, promoted to one dtype.

    Returns:
        array: the contraction.
    """
    if not isinstance(subscripts, str):
        raise TypeError(f"einsum: subscripts must be a str, got {type(subscripts).__name__}")
    st = resolve_stream(stream)
    xs = _promoted("einsum", operands, st)
    subs, shape = _parse_einsum(subscripts, [x._shape for x in xs])
    return node(Einsum(subs), tuple(xs), shape, xs[0]._dtype, st)


def einsum_path(subscripts: str, *operands):
    """The contraction order NumPy's greedy optimiser picks for :func:`einsum`, and a report. Nothing is
    evaluated: only the operands' shapes are read.

    Args:
        subscripts (str): the einsum subscripts.
        *operands (array): the inputs.

    Returns:
        tuple[list[tuple[int, ...]], str]: the pairs of operands contracted in turn, and NumPy's report.
    """
    xs = [as_array(x, "einsum_path") for x in operands]
    _parse_einsum(subscripts, [x._shape for x in xs])
    dummies = [np.broadcast_to(np.zeros((), np.float32), x._shape) for x in xs]  # shapes only, no memory
    path, report = np.einsum_path(subscripts, *dummies, optimize="greedy")
    return [tuple(p) for p in path[1:]], report


def tensordot(a, b, /, axes=2, *, stream=None) -> array:
    """Sum products over the last ``axes`` axes of ``a`` and the first of ``b``, or over the axes given as two
    lists. See ``numpy.tensordot``.

    Args:
        a (array): left input.
        b (array): right input.
        axes (int | tuple[Sequence[int], Sequence[int]]): the number of axes, or the axes of each input.

    Returns:
        array: ``a``'s free axes, then ``b``'s.
    """
    st = resolve_stream(stream)
    a, b = _promoted("tensordot", (a, b), st)
    if isinstance(axes, (int, np.integer)):
        if axes < 0 or axes > min(a.ndim, b.ndim):
            raise ValueError(f"tensordot: cannot contract {axes} axes of {describe(a, b)}")
        ax_a = list(range(a.ndim - axes, a.ndim))
        ax_b = list(range(axes))
    else:
        try:
            ax_a, ax_b = ([x] if isinstance(x, (int, np.integer)) else list(x) for x in axes)
        except (TypeError, ValueError):
            raise ValueError(f"tensordot: axes must be an int or two lists of ints, got {axes!r}") from None
        if len(ax_a) != len(ax_b):
            raise ValueError(f"tensordot: {len(ax_a)} axes of a and {len(ax_b)} of b")
        for x, arr in ((ax_a, a), (ax_b, b)):
            for i in x:
                if not -arr.ndim <= i < arr.ndim:
                    raise ValueError(f"tensordot: axis {i} is out of range for shape {arr.shape}")
        ax_a = [i % a.ndim for i in ax_a]
        ax_b = [i % b.ndim for i in ax_b]
    for i, j in zip(ax_a, ax_b):
        if a._shape[i] != b._shape[j]:
            raise ValueError(f"tensordot: contracted axes {i} and {j} differ in size for {describe(a, b)}")
    if a.ndim + b.ndim - len(ax_b) > len(_LETTERS):
        raise ValueError("tensordot: too many dimensions")
    la = list(_LETTERS[:a.ndim])
    lb = list(_LETTERS[a.ndim:a.ndim + b.ndim])
    for i, j in zip(ax_a, ax_b):
        lb[j] = la[i]
    out = [c for i, c in enumerate(la) if i not in ax_a] + [c for j, c in enumerate(lb) if j not in ax_b]
    shape = tuple(s for i, s in enumerate(a._shape) if i not in ax_a) + \
        tuple(s for j, s in enumerate(b._shape) if j not in ax_b)
    return node(Einsum(f"{''.join(la)},{''.join(lb)}->{''.join(out)}"), (a, b), shape, a._dtype, st)


def inner(a, b, /, *, stream=None) -> array:
    """Sum products over the last axes of ``a`` and ``b`` (a product for 0-d input). See ``numpy.inner``."""

    st = resolve_stream(stream)
    a, b = _promoted("inner", (a, b), st)
    if a.ndim == 0 or b.ndim == 0:
        return multiply(a, b, stream=st)
    if a._shape[-1] != b._shape[-1]:
        raise ValueError(f"inner: last dimensions differ for {describe(a, b)}")
    return tensordot(a, b, ([-1], [-1]), stream=st)


def outer(a, b, /, *, stream=None) -> array:
    """The outer product of the flattened ``a`` and ``b``. See ``numpy.outer``."""

    st = resolve_stream(stream)
    a, b = _promoted("outer", (a, b), st)
    return multiply(reshape(a, (-1, 1), stream=st), reshape(b, (1, -1), stream=st), stream=st)


def kron(a, b, /, *, stream=None) -> array:
    """The Kronecker product: blocks of ``b`` scaled by each element of ``a``. See ``numpy.kron``."""

    st = resolve_stream(stream)
    a, b = _promoted("kron", (a, b), st)
    if not a.size or not b.size:
        raise ValueError(f"kron: the inputs cannot be empty, got {describe(a, b)}")
    nd = max(a.ndim, b.ndim)
    sa = (1,) * (nd - a.ndim) + a._shape
    sb = (1,) * (nd - b.ndim) + b._shape
    ia = tuple(x for s in sa for x in (s, 1))
    ib = tuple(x for s in sb for x in (1, s))
    shape = check_dims(tuple(x * y for x, y in zip(sa, sb)), "kron")
    p = multiply(reshape(a, ia, stream=st), reshape(b, ib, stream=st), stream=st)
    return reshape(p, shape, stream=st)


def addmm(c, a, b, /, alpha: float = 1.0, beta: float = 1.0, *, stream=None) -> array:
    """``alpha * (a @ b) + beta * c``.

    Args:
        c (array): the addend, broadcast to the product's shape.
        a (array): left matrix operand.
        b (array): right matrix operand.
        alpha (float): scale of the product (default 1).
        beta (float): scale of ``c`` (default 1).

    Returns:
        array: the result.
    """

    st = resolve_stream(stream)
    p = matmul(a, b, stream=st)
    c = as_array(c, "addmm")
    if broadcast_shapes(c._shape, p._shape, op="addmm") != p._shape:
        raise ValueError(f"addmm: c must broadcast to the product's shape {p.shape}, got {describe(c)}")
    if alpha != 1:
        p = multiply(p, alpha, stream=st)
    if beta != 1:
        c = multiply(c, beta, stream=st)
    return add(p, c, stream=st)


def vecdot(a, b, /, axis: int = -1, *, stream=None) -> array:
    """The dot product of vectors along ``axis``, conjugating ``a``: ``sum(conj(a) * b, axis)``. See
    ``numpy.vecdot``.

    Args:
        a (array): first input.
        b (array): second input, broadcast with ``a``.
        axis (int): the axis of the vectors (default -1).

    Returns:
        array: the broadcast shape without ``axis``.
    """

    st = resolve_stream(stream)
    a, b = _promoted("vecdot", (a, b), st)
    if not a.ndim or not b.ndim:
        raise ValueError(f"vecdot: the inputs must be at least 1-d, got {describe(a, b)}")
    axis = int_of(axis, "vecdot", "axis")
    if not (-a.ndim <= axis < a.ndim and -b.ndim <= axis < b.ndim):
        raise ValueError(f"vecdot: axis {axis} is out of range for {describe(a, b)}")
    if a._shape[axis] != b._shape[axis]:
        raise ValueError(f"vecdot: the vectors along axis {axis} differ in length for {describe(a, b)}")
    if a._dtype is dt.complex64:
        a = conjugate(a, stream=st)
    return sum_(multiply(a, b, stream=st), axis, stream=st)


def _matrices(name: str, a, b, st):
    a, b = _promoted(name, (a, b), st)
    if a.ndim < 2 or b.ndim < 2 or a._shape[-1] != b._shape[-2]:
        raise ValueError(f"{name}: needs matrices (..., M, K) and (..., K, N), got {describe(a, b)}")
    return a, b


def batch_index(op: str, idx, batch: tuple, name: str, st) -> array:
    """The index array, or, for None, each batch entry's own flat index (shaped as the batch)."""

    if idx is None:
        return reshape(arange(int(np.prod(batch)), dtype=dt.uint32, stream=st), batch, stream=st)
    idx = as_array(idx, op)
    if idx._dtype.kind not in "iu":
        raise ValueError(f"{op}: {name} must be integers, got {describe(idx)}")
    return idx


def gather_mm(a, b, /, lhs_indices=None, rhs_indices=None, *, sorted_indices: bool = False,
              stream=None) -> array:
    """Matrix products of matrices picked from the batches of ``a`` and ``b``: ``a_flat[lhs_indices] @
    b_flat[rhs_indices]``, where ``a_flat`` is ``a`` with its batch axes (all but the last two) merged. Each
    matrix of ``b`` is read once for all the products that pick it (no gathered copy of ``b`` is made).

    Args:
        a (array): ``(A1, ..., AS, M, K)``.
        b (array): ``(B1, ..., BS, K, N)``.
        lhs_indices (array, optional): flat batch indices into ``a``; default: ``a``'s batches as they are.
        rhs_indices (array, optional): flat batch indices into ``b``; default: ``b``'s batches as they are.
        sorted_indices (bool): accepted for MLX compatibility.

    Returns:
        array: the indices' broadcast shape, then ``(M, N)``.
    """
    st = resolve_stream(stream)
    a, b = _matrices("gather_mm", a, b, st)
    lhs = batch_index("gather_mm", lhs_indices, a._shape[:-2], "lhs_indices", st)
    rhs = batch_index("gather_mm", rhs_indices, b._shape[:-2], "rhs_indices", st)
    batch = broadcast_shapes(lhs._shape, rhs._shape, op="gather_mm")
    return node(GATHER_MM, (a, b, lhs, rhs), batch + (a._shape[-2], b._shape[-1]), a._dtype, st)


def segmented_mm(a, b, /, segments, *, stream=None) -> array:
    """Products over segments of the inner axis: ``out[..., s, :, :] = a[..., :, k0:k1] @ b[..., k0:k1, :]``
    for each ``segments[..., s, :] = (k0, k1)``.

    Args:
        a (array): ``(M, K)``.
        b (array): ``(K, N)``.
        segments (array): integer ``(start, end)`` pairs of shape ``(..., 2)``.

    Returns:
        array: ``segments.shape[:-1]``, then ``(M, N)``.
    """

    st = resolve_stream(stream)
    a, b = _matrices("segmented_mm", a, b, st)
    if a.ndim != 2 or b.ndim != 2:  # as MLX: the batch comes from the segments alone
        raise ValueError(f"segmented_mm: a and b must be matrices (batched products are not supported), got "
                         f"{describe(a, b)}")
    seg = as_array(segments, "segmented_mm")
    if seg.ndim == 0 or seg._shape[-1] != 2 or seg._dtype.kind not in "iu":
        raise ValueError(f"segmented_mm: segments must be integer (start, end) pairs, got {describe(seg)}")
    k = arange(a._shape[-1], stream=st)
    lo, hi = expand_dims(seg[..., 0:1], -2, stream=st), expand_dims(seg[..., 1:2], -2, stream=st)
    mask = ew.logical_and(ew.greater_equal(k, lo, stream=st), ew.less(k, hi, stream=st), stream=st)
    return matmul(ew.multiply(a, cast(mask, a._dtype, st), stream=st), b, stream=st)


def _block_mask(name: str, mask, rows: int, cols: int, block: int, dtype, st):

    m = as_array(mask, "block_masked_mm")
    want = (-(-rows // block), -(-cols // block))
    if m.ndim < 2 or m._shape[-2:] != want:
        raise ValueError(f"block_masked_mm: {name} must end in {want} blocks, got {describe(m)}")
    m = repeat(repeat(cast(m, dtype, st), block, axis=-2, stream=st), block, axis=-1, stream=st)
    return m[..., :rows, :cols]


def block_masked_mm(a, b, /, block_size: int = 64, mask_out=None, mask_lhs=None, mask_rhs=None, *,
                    stream=None) -> array:
    """``a @ b`` with blocks of ``block_size`` by ``block_size`` masked (bool masks zero blocks; float masks
    scale them) in the operands and the result.

    Args:
        a (array): ``(..., M, K)``.
        b (array): ``(..., K, N)``.
        block_size (int): the block's side (default 64; MLX takes 32 or 64, umx any positive size).
        mask_out (array, optional): ``(..., ceil(M / bs), ceil(N / bs))``.
        mask_lhs (array, optional): ``(..., ceil(M / bs), ceil(K / bs))``.
        mask_rhs (array, optional): ``(..., ceil(K / bs), ceil(N / bs))``.

    Returns:
        array: the masked product.
    """

    st = resolve_stream(stream)
    a, b = _matrices("block_masked_mm", a, b, st)
    if not isinstance(block_size, (int, np.integer)) or block_size <= 0:
        raise ValueError(f"block_masked_mm: block_size must be a positive int, got {block_size!r}")
    m, k, n = a._shape[-2], a._shape[-1], b._shape[-1]
    if mask_lhs is not None:
        a = ew.multiply(a, _block_mask("mask_lhs", mask_lhs, m, k, block_size, a._dtype, st), stream=st)
    if mask_rhs is not None:
        b = ew.multiply(b, _block_mask("mask_rhs", mask_rhs, k, n, block_size, b._dtype, st), stream=st)
    out = matmul(a, b, stream=st)
    if mask_out is not None:
        out = ew.multiply(out, _block_mask("mask_out", mask_out, m, n, block_size, out._dtype, st), stream=st)
    return out
