"""Quantization primitives, in MLX's packed layout.

A quantized matrix packs the codes of each row along its last axis into uint32 words, lowest bits first (a row
of codes is one little-endian bit stream, so 3, 5 and 6 bits straddle words). Every ``group_size`` consecutive
elements of a row share a scale (and, in the ``"affine"`` mode, a bias). Modes: ``"affine"`` (``w = scale * q +
bias``), ``"mxfp4"``/``"mxfp8"`` (E2M1/E4M3 codes, a power-of-two E8M0 scale byte per 32) and ``"nvfp4"`` (E2M1
codes, an E4M3 scale byte per 16, optionally times a global float32 scale).
"""

from __future__ import annotations

from .base import Primitive


class Quantize(Primitive):
    """The packed codes, the scales and (``"affine"``) the biases of the input, of umx ``dtype`` (inputs: the
    matrix, then the global scale, for ``"nvfp4"`` with ``has_global``)."""

    __slots__ = ("group_size", "bits", "mode", "has_global", "dtype")
    n_outputs = 0
    capture = False  # not tried under capture yet

    def __init__(self, group_size: int, bits: int, mode: str, has_global: bool, dtype):
        self.group_size = group_size
        self.bits = bits
        self.mode = mode
        self.has_global = has_global
        self.dtype = dtype


class Dequantize(Primitive):
    """The matrix of ``dtype`` that packed codes, scales and (``"affine"``) biases stand for. Inputs: ``w``,
    scales, the biases if affine, the global scale if ``has_global``."""

    __slots__ = ("group_size", "bits", "mode", "has_global", "dtype")
    capture = False  # some modes copy host constants per call (the CUDA backend captures the others)

    def __init__(self, group_size: int, bits: int, mode: str, has_global: bool, dtype):
        self.group_size = group_size
        self.bits = bits
        self.mode = mode
        self.has_global = has_global
        self.dtype = dtype


class QuantizedMatmul(Primitive):
    """``x @ dequantize(w).T`` (``transpose``) or ``x @ dequantize(w)``, batch axes broadcast, result of
    ``dtype``; the weight's values are those of ``dequantize`` to ``wdtype``. Inputs: ``x``, ``w``, scales, the
    biases if affine."""

    __slots__ = ("transpose", "group_size", "bits", "mode", "dtype", "wdtype")
    capture = False  # products through CuPy's cuBLAS, which refuses capture (the CUDA backend's kernel for a few
    # rows captures)

    def __init__(self, transpose: bool, group_size: int, bits: int, mode: str, dtype, wdtype):
        self.transpose = transpose
        self.group_size = group_size
        self.bits = bits
        self.mode = mode
        self.dtype = dtype
        self.wdtype = wdtype


class GatherQMM(Primitive):
    """``x_flat[lhs] @ dequantize(w_flat[rhs])(.T)`` for each entry of the index arrays (the last two inputs,
    broadcast to one shape), where ``_flat`` merges the batch axes; parameters as ``QuantizedMatmul``'s.
    Inputs: ``x``, ``w``, scales, the biases if affine, ``lhs``, ``rhs``."""

    __slots__ = ("transpose", "group_size", "bits", "mode", "dtype", "wdtype")
    capture = False  # products through CuPy's cuBLAS, which refuses capture
    no_vmap = "its indices address flattened batches"

    def __init__(self, transpose: bool, group_size: int, bits: int, mode: str, dtype, wdtype):
        self.transpose = transpose
        self.group_size = group_size
        self.bits = bits
        self.mode = mode
        self.dtype = dtype
        self.wdtype = wdtype


class GatherMM(Primitive):
    """``a_flat[lhs] @ b_flat[rhs]`` for each entry of the index arrays (inputs three and four, broadcast to one
    shape), where ``_flat`` merges the batch axes."""

    __slots__ = ()
    capture = False  # products through CuPy's cuBLAS, which refuses capture
    no_vmap = "its indices address flattened batches"


class ToFP8(Primitive):
    """Float values as E4M3 bytes (uint8): saturated to +-448, rounded to nearest even."""

    __slots__ = ()
    capture = False  # not tried under capture yet


class FromFP8(Primitive):
    """E4M3 bytes (uint8) as values of ``dtype``."""

    __slots__ = ("dtype",)
    capture = False  # not tried under capture yet

    def __init__(self, dtype):
        self.dtype = dtype


GATHER_MM = GatherMM()
TO_FP8 = ToFP8()
