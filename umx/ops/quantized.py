"""Quantization: quantize, dequantize, products with quantized matrices, and float8 conversions.

The layout is MLX's (see ``umx.primitives.quantized``), so weights quantized by MLX load and run unchanged.
"""

from __future__ import annotations

from .. import dtypes as dt
from ..primitives.quantized import (
    TO_FP8,
    Dequantize,
    FromFP8,
    GatherQMM,
    Quantize,
    QuantizedMatmul,
)
from ._core import array, as_array, broadcast_shapes, cast, describe, node, reshape_node, resolve_stream, sibling_nodes
from .matmul import matmul
from .products import batch_index, gather_mm
from .shape import swapaxes

__all__ = ["quantize", "dequantize", "quantized_matmul", "gather_qmm", "qqmm", "gather_qqmm", "to_fp8", "from_fp8"]

# mode -> (group sizes, default group size, bits, default bits, scale dtype)
_MODES = {
    "affine": ((32, 64, 128), 64, (1, 2, 3, 4, 5, 6, 8), 4),
    "mxfp4": ((32,), 32, (4,), 4),
    "mxfp8": ((32,), 32, (8,), 8),
    "nvfp4": ((16,), 16, (4,), 4),
}


def _is_float(d: dt.Dtype) -> bool:
    return d.kind == "f"


def _mode_params(op: str, mode, group_size, bits) -> tuple:
    """``(group_size, bits)`` of ``mode``, defaults filled in, checked against what the mode supports."""
    if mode not in _MODES:
        raise ValueError(f"{op}: invalid quantization mode {mode!r}; the modes are 'affine', 'mxfp4', 'mxfp8' and "
                         "'nvfp4'")
    sizes, gs_default, bit_set, bits_default = _MODES[mode]
    gs = gs_default if group_size is None else group_size
    b = bits_default if bits is None else bits
    if gs not in sizes:
        raise ValueError(f"{op}: group size {gs} is not supported in mode {mode!r}; supported: "
                         f"{', '.join(map(str, sizes))}")
    if b not in bit_set:
        raise ValueError(f"{op}: {b} bits are not supported in mode {mode!r}; supported: "
                         f"{', '.join(map(str, bit_set))}")
    return int(gs), int(b)


def _global(op: str, mode: str, global_scale):
    if global_scale is None:
        return None
    if mode != "nvfp4":
        raise ValueError(f"{op}: a global scale is only supported in mode 'nvfp4', not {mode!r}")
    g = as_array(global_scale, op)
    if g._dtype is not dt.float32 or g.size != 1:
        raise ValueError(f"{op}: the global scale must be one float32 value, got {describe(g)}")
    return g


def quantize(w, /, group_size: int | None = None, bits: int | None = None, mode: str = "affine", *,
             global_scale=None, stream=None) -> tuple:
    """Quantize the rows of ``w``: every ``group_size`` consecutive elements of the last axis share a scale
    (and, in the ``"affine"`` mode, a bias), and each element becomes a ``bits``-bit code, packed into uint32
    words lowest bits first.

    ============  ===================  =================  ==========================  =====
    mode          group size           bits               scale                       bias
    ============  ===================  =================  ==========================  =====
    ``affine``    32, 64 (default),    1, 2, 3, 4         ``w``'s dtype               yes
                  128                  (default), 5, 6, 8
    ``mxfp4``     32                   4 (E2M1)           uint8 E8M0 (power of two)   no
    ``mxfp8``     32                   8 (E4M3)           uint8 E8M0                  no
    ``nvfp4``     16                   4 (E2M1)           uint8 E4M3                  no
    ============  ===================  =================  ==========================  =====

    In the affine mode a group with maximum ``a`` and minimum ``b`` gets ``scale = (a - b) / (2**bits - 1)``
    (nudged so that the edge of larger magnitude is exact) and ``bias`` the edge; ``q = round((w - bias) /
    scale)``.

    Args:
        w (array): floating matrix (or batch of matrices) whose last axis is a multiple of ``group_size``.
        group_size (int, optional): elements per scale; the mode's default if None.
        bits (int, optional): bits per element; the mode's default if None.
        mode (str): ``"affine"`` (default), ``"mxfp4"``, ``"mxfp8"`` or ``"nvfp4"``.
        global_scale (array, optional): one float32 value (``"nvfp4"`` only), the tensor's largest magnitude:
            the scales are then stored relative to ``global_scale / (448 * 6)``.

    Returns:
        tuple[array, ...]: ``(w_q, scales, biases)`` in the affine mode, ``(w_q, scales)`` otherwise.
    """
    gs, b = _mode_params("quantize", mode, group_size, bits)
    w = as_array(w, "quantize")
    if not _is_float(w._dtype):
        raise ValueError(f"quantize: only floating arrays can be quantized, got {describe(w)}")
    if w.ndim < 2:
        raise ValueError(f"quantize: needs an array of at least 2 dimensions, got {describe(w)}")
    if w._shape[-1] % gs:
        raise ValueError(f"quantize: the last axis ({w._shape[-1]}) must be a multiple of the group size {gs}")
    st = resolve_stream(stream)
    g = _global("quantize", mode, global_scale)
    lead, n = w._shape[:-1], w._shape[-1]
    specs = [(lead + (n * b // 32,), dt.uint32)]
    if mode == "affine":
        specs += [(lead + (n // gs,), w._dtype)] * 2
    else:
        specs.append((lead + (n // gs,), dt.uint8))
    inputs = (w,) if g is None else (w, g)
    return tuple(sibling_nodes(Quantize(gs, b, mode, g is not None, w._dtype), inputs, specs, st))


def _check_packed(op: str, mode: str, w: array, scales: array, biases, gs: int, bits: int) -> int:
    """Check the packed matrix and its scales (and biases) against each other; the unpacked row length."""
    if w._dtype is not dt.uint32:
        raise ValueError(f"{op}: the quantized matrix must be uint32, got {describe(w)}")
    if w.ndim < 2:
        raise ValueError(f"{op}: the quantized matrix must have at least 2 dimensions, got {describe(w)}")
    if mode == "affine":
        if biases is None:
            raise ValueError(f"{op}: the affine mode needs biases")
    elif biases is not None:
        raise ValueError(f"{op}: biases must be None in mode {mode!r}")
    n = w._shape[-1] * 32 // bits
    want = w._shape[:-1] + (n // gs,)
    for name, a in (("scales", scales), ("biases", biases)):
        if a is not None and a._shape != want:
            raise ValueError(f"{op}: {name} of shape {a._shape} do not match the quantized matrix {w._shape} with "
                             f"group_size={gs} and bits={bits} (expected {want})")
    if mode == "affine" and not (_is_float(scales._dtype) and _is_float(biases._dtype)):
        raise ValueError(f"{op}: affine scales and biases must be floating, got {describe(scales, biases)}")
    if mode != "affine" and scales._dtype is not dt.uint8:
        raise ValueError(f"{op}: {mode} scales must be uint8, got {describe(scales)}")
    return n


def dequantize(w, /, scales, biases=None, group_size: int | None = None, bits: int | None = None,
               mode: str = "affine", global_scale=None, dtype: dt.Dtype | None = None, *, stream=None) -> array:
    """The matrix that :func:`quantize`'s outputs stand for: ``scale * q + bias`` per group (affine, computed in
    the result's dtype), or the float code times its group's scale.

    Args:
        w (array): the packed uint32 codes.
        scales (array): one scale per group.
        biases (array, optional): one bias per group (affine mode only).
        group_size (int, optional): elements per scale; the mode's default if None.
        bits (int, optional): bits per element; the mode's default if None.
        mode (str): the quantization mode (default ``"affine"``).
        global_scale (array, optional): the float32 global scale ``quantize`` was given (``"nvfp4"``).
        dtype (Dtype, optional): the result's floating dtype; default: that of the scales and biases (affine),
            else ``bfloat16``.

    Returns:
        array: ``w``'s shape with the last axis unpacked.
    """
    gs, b = _mode_params("dequantize", mode, group_size, bits)
    w, scales = as_array(w, "dequantize"), as_array(scales, "dequantize")
    biases = None if biases is None else as_array(biases, "dequantize")
    n = _check_packed("dequantize", mode, w, scales, biases, gs, b)
    if dtype is None:
        dtype = dt.promote(scales._dtype, biases._dtype) if mode == "affine" else dt.bfloat16
    if not _is_float(dtype):
        raise ValueError(f"dequantize: the result must be a floating dtype, got {dtype.name}")
    g = _global("dequantize", mode, global_scale)
    st = resolve_stream(stream)
    inputs = (w, scales) + ((biases,) if biases is not None else ()) + ((g,) if g is not None else ())
    return node(Dequantize(gs, b, mode, g is not None, dtype), inputs, w._shape[:-1] + (n,), dtype, st)


def _product_dtypes(op: str, mode: str, x: array, scales: array, biases) -> tuple:
    """(result dtype, dtype of the dequantized weight)."""
    if mode == "affine":
        wd = dt.promote(scales._dtype, biases._dtype)
        out = dt.promote(x._dtype, wd)
    else:
        wd = dt.float32
        out = x._dtype
    if not _is_float(out):
        raise ValueError(f"{op}: the input and the scales must promote to a floating type, got "
                         f"{describe(x, scales)}")
    return out, wd


def _product_args(op: str, x, w, scales, biases, mode, group_size, bits) -> tuple:
    gs, b = _mode_params(op, mode, group_size, bits)
    x, w, scales = as_array(x, op), as_array(w, op), as_array(scales, op)
    biases = None if biases is None else as_array(biases, op)
    n = _check_packed(op, mode, w, scales, biases, gs, b)
    if x.ndim == 0:
        raise ValueError(f"{op}: the input must have at least 1 dimension, got {describe(x)}")
    return x, w, scales, biases, gs, b, n


def _inner_and_out(op: str, x: array, w: array, n: int, transpose: bool) -> int:
    k = n if transpose else w._shape[-2]
    if x._shape[-1] != k:
        raise ValueError(f"{op}: the input's last axis ({x._shape[-1]}) does not match the quantized matrix of "
                         f"shape {w._shape} (unpacked ({w._shape[-2]}, {n}), transpose={transpose})")
    return w._shape[-2] if transpose else n


def quantized_matmul(x, w, /, scales, biases=None, transpose: bool = True, group_size: int | None = None,
                     bits: int | None = None, mode: str = "affine", *, stream=None) -> array:
    """``x @ dequantize(w).T`` (``transpose``, the default) or ``x @ dequantize(w)``, without materializing the
    dequantized matrix: it is dequantized a block at a time.

    Args:
        x (array): the input, ``(..., K)``.
        w (array): the packed matrix, ``(..., N, K packed)`` if ``transpose`` else ``(..., K, N packed)``; batch
            axes broadcast with ``x``'s.
        scales (array): its scales.
        biases (array, optional): its biases (affine mode).
        transpose (bool): multiply by the transposed matrix (default True).
        group_size (int, optional): elements per scale; the mode's default if None.
        bits (int, optional): bits per element; the mode's default if None.
        mode (str): the quantization mode (default ``"affine"``).

    Returns:
        array: ``(..., N)``, of the input's dtype promoted with the scales' (affine) or of the input's dtype.
    """
    op = "quantized_matmul"
    x, w, scales, biases, gs, b, n = _product_args(op, x, w, scales, biases, mode, group_size, bits)
    out_dtype, wd = _product_dtypes(op, mode, x, scales, biases)
    cols = _inner_and_out(op, x, w, n, transpose)
    st = resolve_stream(stream)
    x = cast(x, out_dtype, st)
    vector = x.ndim == 1
    if vector:
        x = reshape_node(x, (1,) + x._shape, st)
    batch = broadcast_shapes(x._shape[:-2], w._shape[:-2], op=op) if w.ndim > 2 else x._shape[:-2]
    shape = batch + (x._shape[-2], cols)
    inputs = (x, w, scales) + ((biases,) if biases is not None else ())
    out = node(QuantizedMatmul(bool(transpose), gs, b, mode, out_dtype, wd), inputs, shape, out_dtype, st)
    return reshape_node(out, shape[:-2] + (cols,), st) if vector else out


def gather_qmm(x, w, /, scales, biases=None, lhs_indices=None, rhs_indices=None, transpose: bool = True,
               group_size: int | None = None, bits: int | None = None, mode: str = "affine", global_scale=None, *,
               sorted_indices: bool = False, stream=None) -> array:
    """:func:`quantized_matmul` with matrix-level gather: ``x_flat[lhs_indices] @ dequantize(w_flat[rhs_indices])
    (.T)`` for each pair of indices, where ``_flat`` merges the batch axes (all but the last two). Each
    quantized matrix is dequantized once for all the products that pick it.

    Args:
        x (array): the inputs, ``(..., M, K)``.
        w (array): the packed matrices; ``scales`` and ``biases`` have its batch axes.
        scales (array): the scales.
        biases (array, optional): the biases (affine mode).
        lhs_indices (array, optional): flat batch indices into ``x``; default: ``x``'s batch as it is.
        rhs_indices (array, optional): flat batch indices into ``w``; default: ``w``'s batch as it is.
        transpose (bool): multiply by the transposed matrices (default True).
        group_size (int, optional): elements per scale; the mode's default if None.
        bits (int, optional): bits per element; the mode's default if None.
        mode (str): the quantization mode (default ``"affine"``).
        global_scale (array, optional): not supported (MLX takes it on the GPU only).
        sorted_indices (bool): accepted for MLX compatibility (the kernel groups by matrix anyway).

    Returns:
        array: the indices' broadcast shape, then ``(M, N)``.
    """
    op = "gather_qmm"
    x, w, scales, biases, gs, b, n = _product_args(op, x, w, scales, biases, mode, group_size, bits)
    if global_scale is not None:
        raise ValueError(f"{op}: a global scale is not supported")
    out_dtype, wd = _product_dtypes(op, mode, x, scales, biases)
    if x.ndim < 2:
        raise ValueError(f"{op}: the input must have at least 2 dimensions, got {describe(x)}")
    cols = _inner_and_out(op, x, w, n, transpose)
    st = resolve_stream(stream)
    x = cast(x, out_dtype, st)
    lhs = batch_index(op, lhs_indices, x._shape[:-2], "lhs_indices", st)
    rhs = batch_index(op, rhs_indices, w._shape[:-2], "rhs_indices", st)
    batch = broadcast_shapes(lhs._shape, rhs._shape, op=op)
    inputs = (x, w, scales) + ((biases,) if biases is not None else ()) + (lhs, rhs)
    prim = GatherQMM(bool(transpose), gs, b, mode, out_dtype, wd)
    return node(prim, inputs, batch + (x._shape[-2], cols), out_dtype, st)


def _dequantized(op, a, scales, group_size, bits, mode, global_scale, st) -> array:
    """``a`` as float32: dequantized if it is packed, else quantized and dequantized (what a product of
    quantized operands sees)."""
    if a._dtype is dt.uint32:
        if scales is None:
            raise ValueError(f"{op}: a quantized matrix needs its scales")
        return dequantize(a, scales, None, group_size, bits, mode, global_scale, dt.float32, stream=st)
    if not _is_float(a._dtype):
        raise ValueError(f"{op}: operands must be floating or packed uint32, got {describe(a)}")
    q = quantize(a, group_size, bits, mode, global_scale=global_scale, stream=st)
    return dequantize(*q, None, group_size, bits, mode, global_scale, dt.float32, stream=st)


def _qq_operands(op, x, w, scales, group_size, bits, mode, global_scale_x, global_scale_w, st) -> tuple:
    if mode not in ("nvfp4", "mxfp8"):
        raise ValueError(f"{op}: mode must be 'nvfp4' or 'mxfp8', got {mode!r}")
    x, w = as_array(x, op), as_array(w, op)
    scales = None if scales is None else as_array(scales, op)
    xq = _dequantized(op, x, None, group_size, bits, mode, global_scale_x, st)
    wq = _dequantized(op, w, scales, group_size, bits, mode, global_scale_w, st)
    return x, xq, wq


def qqmm(x, w, scales=None, group_size: int | None = None, bits: int | None = None, mode: str = "nvfp4",
         global_scale_x=None, global_scale_w=None, *, stream=None) -> array:
    """``x @ w.T`` with both operands quantized: ``x`` on the fly, ``w`` unless it is packed already (then
    ``scales`` are its scales). Computed as the product of the dequantized operands.

    Args:
        x (array): floating input ``(..., M, K)``.
        w (array): floating ``(N, K)``, or packed uint32 codes.
        scales (array, optional): ``w``'s scales, if it is packed.
        group_size (int, optional): elements per scale; the mode's default if None.
        bits (int, optional): bits per element; the mode's default if None.
        mode (str): ``"nvfp4"`` (default) or ``"mxfp8"``.
        global_scale_x (array, optional): ``x``'s float32 global scale (``"nvfp4"``).
        global_scale_w (array, optional): ``w``'s float32 global scale (``"nvfp4"``).

    Returns:
        array: ``(..., M, N)`` of ``x``'s dtype.
    """

    st = resolve_stream(stream)
    x, xq, wq = _qq_operands("qqmm", x, w, scales, group_size, bits, mode, global_scale_x, global_scale_w, st)
    return cast(matmul(xq, swapaxes(wq, -1, -2, stream=st), stream=st), x._dtype, st)


def gather_qqmm(x, w, /, scales=None, lhs_indices=None, rhs_indices=None, group_size: int | None = None,
                bits: int | None = None, mode: str = "nvfp4", global_scale_x=None, global_scale_w=None, *,
                sorted_indices: bool = False, stream=None) -> array:
    """:func:`qqmm` with matrix-level gather (see :func:`gather_qmm` for the indices).

    Args:
        x (array): floating input ``(..., M, K)``.
        w (array): floating ``(..., N, K)``, or packed uint32 codes.
        scales (array, optional): ``w``'s scales, if it is packed.
        lhs_indices (array, optional): flat batch indices into ``x``.
        rhs_indices (array, optional): flat batch indices into ``w``.
        group_size (int, optional): elements per scale; the mode's default if None.
        bits (int, optional): bits per element; the mode's default if None.
        mode (str): ``"nvfp4"`` (default) or ``"mxfp8"``.
        global_scale_x (array, optional): ``x``'s float32 global scale (``"nvfp4"``).
        global_scale_w (array, optional): ``w``'s float32 global scale (``"nvfp4"``).
        sorted_indices (bool): accepted for MLX compatibility.

    Returns:
        array: the indices' broadcast shape, then ``(M, N)``, of ``x``'s dtype.
    """

    st = resolve_stream(stream)
    x, xq, wq = _qq_operands("gather_qqmm", x, w, scales, group_size, bits, mode, global_scale_x, global_scale_w,
                             st)
    out = gather_mm(xq, swapaxes(wq, -1, -2, stream=st), lhs_indices, rhs_indices, stream=st)
    return cast(out, x._dtype, st)


def to_fp8(x, *, stream=None) -> array:
    """Floating values as float8 E4M3 bytes: saturated to +-448 (NaN becomes 448), rounded to nearest even.

    Args:
        x (array): floating input.

    Returns:
        array: uint8 codes of ``x``'s shape.
    """
    x = as_array(x, "to_fp8")
    if not _is_float(x._dtype):
        raise ValueError(f"to_fp8: only floating arrays convert to fp8, got {describe(x)}")
    return node(TO_FP8, (x,), x._shape, dt.uint8, resolve_stream(stream))


def from_fp8(x, dtype: dt.Dtype = dt.bfloat16, *, stream=None) -> array:
    """Float8 E4M3 bytes as floating values.

    Args:
        x (array): uint8 codes.
        dtype (Dtype): the result's floating dtype (default ``bfloat16``).

    Returns:
        array: the values, of ``x``'s shape.
    """
    x = as_array(x, "from_fp8")
    if x._dtype is not dt.uint8:
        raise ValueError(f"from_fp8: the input must be uint8 codes, got {describe(x)}")
    if not isinstance(dtype, dt.Dtype) or not _is_float(dtype):
        raise ValueError(f"from_fp8: the result must be a floating dtype, got {dtype!r}")
    return node(FromFP8(dtype), (x,), x._shape, dtype, resolve_stream(stream))
