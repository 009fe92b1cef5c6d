"""Ops without a family: NaN replacement, closeness tests, medians, divmod, traces, differences, the Hadamard
transform, window functions, min-max and explicit dependencies."""

from __future__ import annotations

import functools
import math

import numpy as np

from .. import dtypes as dt
from ..primitives import DEPENDS, Median, NanToNum, Window
from . import elementwise as ew
from ._core import alias, array, as_array, axes_of, axis_of, cast, node, reshape_node, resolve_stream
from .creation import full
from .indexing import getitem
from .layout import diagonal
from .matmul import matmul
from .reduction import all as all_
from .reduction import max as max_
from .reduction import min as min_
from .reduction import sum as sum_
from .shape import reshape, stack

__all__ = ["nan_to_num", "isclose", "allclose", "array_equal", "median", "divmod", "trace", "diff",
           "hadamard_transform", "bartlett", "blackman", "hamming", "hanning", "minmax", "depends"]


def nan_to_num(a, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None, *,
               stream=None) -> array:
    """Replace NaN, +inf and -inf with finite numbers. See ``numpy.nan_to_num``.

    Args:
        a (array): input.
        nan (float): the value for NaN (default 0).
        posinf (float, optional): the value for +inf; default: the dtype's largest finite value.
        neginf (float, optional): the value for -inf; default: the dtype's smallest finite value.

    Returns:
        array: same shape and dtype (integer and bool input is returned unchanged).
    """
    a = as_array(a, "nan_to_num")
    if a._dtype.kind not in "fc":
        return alias(a)
    info = dt.finfo(dt.float32 if a._dtype is dt.complex64 else a._dtype)
    posinf = float(info.max) if posinf is None else float(posinf)
    neginf = float(info.min) if neginf is None else float(neginf)
    return node(NanToNum(float(nan), posinf, neginf), (a,), a._shape, a._dtype, resolve_stream(stream))


def isclose(a, b, /, rtol: float = 1e-05, atol: float = 1e-08, *, equal_nan: bool = False,
            stream=None) -> array:
    """Whether ``|a - b| <= atol + rtol * |b|`` element-wise (infinities are close only to themselves). See
    ``numpy.isclose``.

    Args:
        a (array): first input.
        b (array): second input.
        rtol (float): relative tolerance (default 1e-5).
        atol (float): absolute tolerance (default 1e-8).
        equal_nan (bool): count NaNs as equal to each other (default False).

    Returns:
        array: bool, of the broadcast shape.
    """

    st = resolve_stream(stream)
    a = as_array(a, "isclose")
    b = as_array(b, "isclose")
    d = dt.promote(a._dtype, b._dtype)
    if d.kind not in "fc":
        d = dt.float32
    a, b = cast(a, d, st), cast(b, d, st)
    diff = ew.abs(ew.subtract(a, b, stream=st), stream=st)
    tol = ew.add(ew.multiply(ew.abs(b, stream=st), rtol, stream=st), atol, stream=st)
    finite = ew.logical_and(ew.isfinite(a, stream=st), ew.isfinite(b, stream=st), stream=st)
    within = ew.logical_and(finite, ew.less_equal(diff, tol, stream=st), stream=st)
    # infinities are close only to an equal infinity
    close = ew.logical_or(within, ew.equal(a, b, stream=st), stream=st)
    if equal_nan:
        both_nan = ew.logical_and(ew.isnan(a, stream=st), ew.isnan(b, stream=st), stream=st)
        close = ew.logical_or(close, both_nan, stream=st)
    return close


def allclose(a, b, /, rtol: float = 1e-05, atol: float = 1e-08, *, equal_nan: bool = False,
             stream=None) -> array:
    """Whether every element pair is close (see :func:`isclose`). See ``numpy.allclose``.

    Returns:
        array: a 0-d bool array.
    """

    return all_(isclose(a, b, rtol, atol, equal_nan=equal_nan, stream=stream), stream=stream)


def array_equal(a, b, /, equal_nan: bool = False, *, stream=None) -> array:
    """Whether ``a`` and ``b`` have the same shape and equal values (dtypes may differ). See
    ``numpy.array_equal``.

    Args:
        a (array): first input.
        b (array): second input.
        equal_nan (bool): count NaNs as equal to each other (default False).

    Returns:
        array: a 0-d bool array.
    """

    st = resolve_stream(stream)
    a = as_array(a, "array_equal")
    b = as_array(b, "array_equal")
    if a._shape != b._shape:
        return full((), False, stream=st)
    eq = ew.equal(a, b, stream=st)
    if equal_nan and dt.promote(a._dtype, b._dtype).kind in "fc":
        eq = ew.logical_or(eq, ew.logical_and(ew.isnan(a, stream=st), ew.isnan(b, stream=st), stream=st),
                           stream=st)
    return all_(eq, stream=st)


def median(a, /, axis=None, keepdims: bool = False, *, stream=None) -> array:
    """The median over ``axis`` (all axes by default); float32 for integer input, complex numbers ordered by real
    then imaginary part. See ``numpy.median``.

    Args:
        a (array): input.
        axis (int | Sequence[int], optional): the axes.
        keepdims (bool): keep the reduced axes as size 1 (default False).

    Returns:
        array: the medians.
    """
    a = as_array(a, "median")
    axes = axes_of(axis, a.ndim, "median")
    st = resolve_stream(stream)
    if a._dtype.kind not in "fc":
        a = cast(a, dt.float32, st)
    if any(a._shape[i] == 0 for i in axes):
        raise ValueError(f"median: cannot take the median of an empty axis (shape {a.shape})")
    shape = tuple(1 if i in axes else s for i, s in enumerate(a._shape)) if keepdims else \
        tuple(s for i, s in enumerate(a._shape) if i not in axes)
    return node(Median(axes, bool(keepdims)), (a,), shape, a._dtype, st)


def divmod(a, b, /, *, stream=None) -> tuple:  # noqa: A001 (MLX's name)
    """``(floor_divide(a, b), remainder(a, b))``. See ``numpy.divmod``. As in MLX, no gradient flows through
    either result.

    Returns:
        tuple[array, array]: the quotient and the remainder.
    """

    return (ew.floor_divide(a, b, stream=stream),
            ew.stop_gradient(ew.remainder(a, b, stream=stream), stream=stream))


def trace(a, /, offset: int = 0, axis1: int = 0, axis2: int = 1, dtype=None, *, stream=None) -> array:
    """The sum along a diagonal. See ``numpy.trace``.

    Args:
        a (array): input, at least 2-d.
        offset (int): the diagonal (default 0).
        axis1 (int): first axis of the planes (default 0).
        axis2 (int): second axis (default 1).
        dtype (Dtype, optional): the dtype to sum in.

    Returns:
        array: the traces, over the remaining axes.
    """

    st = resolve_stream(stream)
    d = diagonal(a, offset, axis1, axis2, stream=st)
    if dtype is not None:
        d = cast(d, dt.to_dtype(dtype), st)
    return sum_(d, -1, stream=st)


def diff(a, /, n: int = 1, axis: int = -1, *, stream=None) -> array:
    """The ``n``-th discrete difference along ``axis``. See ``numpy.diff``.

    Args:
        a (array): input, at least 1-d.
        n (int): how many times to difference (default 1).
        axis (int): the axis (default -1).

    Returns:
        array: ``a`` with ``axis`` shorter by ``n`` (bool input gives ``not_equal`` of neighbours).
    """

    a = as_array(a, "diff")
    if a.ndim == 0:
        raise ValueError("diff: needs at least 1 dimension, got a 0-d array")
    if n < 0:
        raise ValueError(f"diff: order n must be non-negative, got {n}")
    ax = axis_of(axis, a.ndim, "diff")
    st = resolve_stream(stream)
    lead = (slice(None),) * ax
    op = ew.not_equal if a._dtype is dt.bool_ else ew.subtract
    for _ in range(n):
        if a._shape[ax] == 0:
            break
        a = op(getitem(a, lead + (slice(1, None),), st), getitem(a, lead + (slice(None, -1),), st), stream=st)
    return a


# MLX's Hadamard matrices of orders 12, 20 and 28, as MLX computes with them: row i is a hex number whose bit j is
# set where entry (i, j) is -1. A size m * 2**k transforms by kron(H_m, the Sylvester matrix of order 2**k).
_HADAMARD_ROWS = {
    12: "002 aab 3c8 96e f20 5ba c8c 6e6 23c b96 8f0 e5a",
    20: "933de 2e3bd 5477b a0ef7 499ef 637c1 c6ba2 8d764 1aee8 359f0 0fa53 174a7 26d4e 45e9c 83d39 f7a6d ef4fa "
        "dedd5 bdf8b 7bf36",
    28: "cd69e7e 9ad7c7d 37ab8fb 6d571f7 d8ae3ef b3587df 66b4f3f b467f43 6acbe87 d593d8e ab27b9c 564f7b8 ac9aff0 "
        "5b31fe1 87fb325 0ff66ca 1decd95 39ddb2a 71bf654 e17eca9 c2fd9d2 fcf1299 fbe2532 f7c4ae4 ef8d549 df1ea13 "
        "be3d4a6 7e7a94c",
}


def _hadamard_order(n: int) -> int:
    """``m`` of a transform size ``n = m * 2**k`` (m in 1, 12, 20, 28), or 0 if ``n`` has no such form."""
    for m in (1, 28, 20, 12):
        if n % m == 0:
            p = n // m
            if p & (p - 1) == 0:
                return m
    return 0


@functools.cache
def _hadamard_signs(m: int) -> np.ndarray:
    """MLX's Hadamard matrix of order ``m`` (12, 20 or 28), as float32 (decoded once)."""
    rows = np.array([int(r, 16) for r in _HADAMARD_ROWS[m].split()], np.int64)
    return np.where((rows[:, None] >> np.arange(m)) & 1, -1.0, 1.0).astype(np.float32)


def _hadamard_matrix(m: int, dtype, stream) -> array:
    return cast(array(_hadamard_signs(m)), dtype, stream)


def hadamard_transform(a, /, scale: float | None = None, *, stream=None) -> array:
    """The Hadamard transform along the last axis: ``y = H @ x * scale`` for each vector ``x`` along it, whose size
    ``n`` must be ``m * 2**k`` with ``m`` in 1, 12, 20 or 28 (``H`` is the Sylvester matrix for ``m = 1``, else
    MLX's ``H_m`` Kronecker the Sylvester matrix of order ``2**k``). A 0-d array counts as one element.

    Args:
        a (array): input; integer input is converted to float32.
        scale (float, optional): the scale; default ``1 / sqrt(n)``, which makes the transform orthonormal.

    Returns:
        array: same shape as ``a``.
    """

    a = as_array(a, "hadamard_transform")
    if a.ndim == 0:  # one element: the transform of size 1 is the identity, times the scale
        return hadamard_transform(reshape_node(a, (1,), resolve_stream(stream)), scale, stream=stream)[0]
    n = a._shape[-1]
    m = _hadamard_order(n) if n > 0 else 0
    if not m:
        raise ValueError(f"hadamard_transform: the last axis must have size m * 2**k with m in (1, 12, 20, 28), "
                         f"got shape {a.shape}")
    st = resolve_stream(stream)
    out_dtype = a._dtype if a._dtype.kind in "fc" else dt.float32
    if a._dtype.kind not in "fc" or a._dtype.size < 4:  # (half precision: in float32, rounded once, as MLX)
        a = cast(a, dt.float32, st)
    p = n // m
    batch = a._shape[:-1] + ((m,) if m > 1 else ())
    x = reshape(a, batch + (p,), stream=st) if m > 1 else a
    h = 1
    while h < p:  # one butterfly stage per bit: pairs (i, i + h) become (x + y, x - y)
        x = reshape(x, batch + (p // (2 * h), 2, h), stream=st)
        lo = x[..., 0, :]
        hi = x[..., 1, :]
        x = stack([ew.add(lo, hi, stream=st), ew.subtract(lo, hi, stream=st)], axis=-2, stream=st)
        h *= 2
    x = reshape(x, batch + (p,), stream=st)
    if m > 1:  # the order-m factor mixes the m blocks of size p
        x = matmul(_hadamard_matrix(m, a._dtype, st), x, stream=st)
    x = reshape(x, a._shape, stream=st)
    x = ew.multiply(x, 1 / math.sqrt(n) if scale is None else scale, stream=st)
    return x if out_dtype is x._dtype else cast(x, out_dtype, st)


def _window(kind: str, m: int, stream) -> array:
    if not isinstance(m, int) or isinstance(m, bool):
        raise TypeError(f"{kind}: M must be an int, got {type(m).__name__}")
    m = max(m, 0)
    return node(Window(kind, m, dt.float32), (), (m,), dt.float32, resolve_stream(stream))


def bartlett(M: int, *, stream=None) -> array:  # noqa: N803 (MLX's name)
    """The Bartlett (triangular) window of ``M`` points, float32. See ``numpy.bartlett``."""
    return _window("bartlett", M, stream)


def blackman(M: int, *, stream=None) -> array:  # noqa: N803
    """The Blackman window of ``M`` points, float32. See ``numpy.blackman``."""
    return _window("blackman", M, stream)


def hamming(M: int, *, stream=None) -> array:  # noqa: N803
    """The Hamming window of ``M`` points, float32. See ``numpy.hamming``."""
    return _window("hamming", M, stream)


def hanning(M: int, *, stream=None) -> array:  # noqa: N803
    """The Hann window of ``M`` points, float32. See ``numpy.hanning``."""
    return _window("hanning", M, stream)


def minmax(a, /, axis=None, keepdims: bool = False, *, stream=None) -> tuple:
    """The minimum and the maximum over ``axis`` (all axes by default).

    Returns:
        tuple[array, array]: the minima and the maxima.
    """

    return min_(a, axis, keepdims, stream=stream), max_(a, axis, keepdims, stream=stream)


def depends(inputs, dependencies):
    """``inputs``, unchanged, but evaluated only after ``dependencies``.

    Args:
        inputs (array | Sequence[array]): the arrays to pass through.
        dependencies (array | Sequence[array]): the arrays they must wait for.

    Returns:
        array | list[array]: new arrays equal to ``inputs``, in the same form.
    """
    single = isinstance(inputs, array)
    xs = [inputs] if single else [as_array(x, "depends") for x in inputs]
    deps = (dependencies,) if isinstance(dependencies, array) else \
        tuple(as_array(d, "depends") for d in dependencies)
    st = resolve_stream(None)
    out = [node(DEPENDS, (x, *deps), x._shape, x._dtype, st) for x in xs]
    return out[0] if single else out
