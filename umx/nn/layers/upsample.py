"""``Upsample``: nearest, linear and cubic resampling of the spatial axes of channels-last inputs.

Each spatial axis is resampled in turn. An output position is a weighted sum of a few input positions (its
taps): one for nearest, two for linear, four for cubic, and the whole filter footprint with ``antialias``. The
tap tables are small host constants computed here in float32, with PyTorch's ``interpolate`` conventions
(``scale_factor`` given: the source position of output ``i`` is ``(i + 0.5) / scale - 0.5``, or
``i * (N - 1) / (M - 1)`` with ``align_corners``), so results match it; the resampling itself is a gather
and a weighted sum, which every transform handles.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

import umx as mx
from umx.nn.layers.base import Module

_F32 = np.float32
_CUBIC_A = -0.75  # the Keys kernel's parameter of PyTorch's bicubic (-0.5 with antialias)


def _source_scale(n_in: int, n_out: int, scale: float, align_corners: bool):
    if align_corners:
        return _F32((n_in - 1) / (n_out - 1)) if n_out > 1 else _F32(0)
    return _F32(1.0 / scale)


def _nearest_taps(n_in: int, n_out: int, scale: float):
    if n_in == n_out:
        idx = np.arange(n_out)
    else:
        idx = np.floor(np.arange(n_out, dtype=_F32) * _F32(1.0 / scale)).astype(np.int64)
    return np.minimum(idx, n_in - 1)[:, None], np.ones((n_out, 1), _F32)


def _source_positions(n_in, n_out, scale, align_corners):
    step = _source_scale(n_in, n_out, scale, align_corners)
    i = np.arange(n_out, dtype=_F32)
    return step * i if align_corners else step * (i + _F32(0.5)) - _F32(0.5)


def _linear_taps(n_in: int, n_out: int, scale: float, align_corners: bool):
    src = np.maximum(_source_positions(n_in, n_out, scale, align_corners), _F32(0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    t = np.clip(src - i0, 0, 1).astype(_F32)
    return np.stack([i0, i1], 1), np.stack([1 - t, t], 1)


def _cubic_kernel(x, a):
    """The Keys cubic convolution kernel at distances ``x``."""
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0)).astype(_F32)


def _cubic_taps(n_in: int, n_out: int, scale: float, align_corners: bool):
    src = _source_positions(n_in, n_out, scale, align_corners)
    base = np.minimum(np.floor(src), n_in - 1)
    t = np.clip(src - base, 0, 1).astype(_F32)
    offsets = np.arange(-1, 3)
    idx = np.clip(base.astype(np.int64)[:, None] + offsets, 0, n_in - 1)
    return idx, _cubic_kernel(t[:, None] - offsets, _F32(_CUBIC_A))


def _antialias_taps(n_in: int, n_out: int, scale: float, align_corners: bool, mode: str):
    """Taps of PyTorch's antialiased resampling: the filter is stretched by the downscaling ratio so that every
    input position contributes, and each output's weights are normalized to sum to one."""
    # in float64: where the filter's footprint meets whole pixels the weights come out exactly 0 and 1, so an
    # upscale by linear filtering equals plain linear interpolation
    if align_corners:
        step = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    else:
        step = 1.0 / scale
    half = 1.0 if mode == "linear" else 2.0
    support = half * step if step >= 1 else half
    invscale = 1 / step if step >= 1 else 1.0
    centers = step * (np.arange(n_out) + 0.5)
    lo = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centers + support + 0.5).astype(np.int64), n_in)
    width = int(np.max(hi - lo))
    idx = lo[:, None] + np.arange(width)
    dist = (idx - centers[:, None] + 0.5) * invscale
    if mode == "linear":
        w = np.maximum(1 - np.abs(dist), 0)
    else:
        w = _cubic_kernel(dist, -0.5)
    w = np.where(idx < hi[:, None], w, 0)
    total = w.sum(1, keepdims=True)
    w = np.where(total != 0, w / np.where(total != 0, total, 1), 0)
    return np.minimum(idx, n_in - 1), w.astype(_F32)


def _resample_axis(x: mx.array, axis: int, idx: np.ndarray, weights: np.ndarray) -> mx.array:
    """Output position ``i`` along ``axis`` is ``sum_t x[idx[i, t]] * weights[i, t]``."""
    n_out, taps = idx.shape
    if taps == 1 and np.all(weights == 1):
        return mx.take(x, mx.array(idx[:, 0].astype(np.int32)), axis=axis)
    gathered = mx.take(x, mx.array(idx.reshape(-1).astype(np.int32)), axis=axis)
    gathered = gathered.reshape(*x.shape[:axis], n_out, taps, *x.shape[axis + 1:])
    w = mx.array(weights.reshape(n_out, taps, *(1,) * (x.ndim - axis - 1)))
    return (gathered * w).sum(axis=axis + 1)


def upsample(x: mx.array, scale_factor, mode: str = "nearest", align_corners: bool = False,
             antialias: bool = False) -> mx.array:
    """Resample the spatial axes of ``x`` (shape ``[N, *spatial, C]``), as :class:`Upsample`.

    Args:
        x (array): the input.
        scale_factor (float | tuple[float, ...]): the scale of every spatial axis, or one per axis.
        mode (str): ``'nearest'``, ``'linear'`` or ``'cubic'``. Default: ``'nearest'``.
        align_corners (bool): align the corner positions (linear and cubic modes). Default: ``False``.
        antialias (bool): widen the filter when downsampling (linear and cubic modes). Default: ``False``.

    Returns:
        array: the resampled input.
    """
    spatial = x.ndim - 2
    if spatial < 1:
        raise ValueError("[Upsample] The input should have at least 1 spatial dimension which means it should be "
                         f"at least 3D but {x.ndim}D was provided")
    scales = scale_factor if isinstance(scale_factor, tuple) else (scale_factor,) * spatial
    if len(scales) != spatial:
        raise ValueError(f"[Upsample] One scale per spatial dimension is required but scale_factor={scales} and "
                         f"the number of spatial dimensions were {spatial}")
    for d, scale in enumerate(scales):
        axis = d + 1
        n_in = x.shape[axis]
        n_out = int(n_in * scale)
        if n_out < 1:
            raise ValueError(f"[Upsample] scale {scale} makes axis {axis} of size {n_in} empty")
        if mode == "nearest":
            taps = _nearest_taps(n_in, n_out, scale)
        elif antialias:
            taps = _antialias_taps(n_in, n_out, scale, align_corners, mode)
        elif mode == "linear":
            taps = _linear_taps(n_in, n_out, scale, align_corners)
        else:
            taps = _cubic_taps(n_in, n_out, scale, align_corners)
        x = _resample_axis(x, axis, *taps)
    return x


class Upsample(Module):
    r"""Upsample (or downsample) the spatial axes of a channels-last input ``[N, *spatial, C]``.

    An axis of size :math:`n` becomes :math:`\lfloor n \cdot s \rfloor` long, its values interpolated from
    the input's. ``'nearest'`` keeps the input's dtype; ``'linear'`` and ``'cubic'`` (bilinear/bicubic and
    beyond, one axis after the other) give float32 or wider.

    Args:
        scale_factor (float | tuple[float, ...]): the scale of every spatial axis, or one per axis.
        mode (str): ``'nearest'``, ``'linear'`` or ``'cubic'``. Default: ``'nearest'``.
        align_corners (bool): for linear and cubic modes, align the first and last input and output
            positions instead of the pixel areas' edges. Default: ``False``.
        antialias (bool): for linear and cubic modes, widen the filter when downsampling so that every input
            contributes (as PyTorch's ``antialias=True``). Default: ``False``.
    """

    def __init__(self, scale_factor: float | tuple, mode: Literal["nearest", "linear", "cubic"] = "nearest",
                 align_corners: bool = False, antialias: bool = False):
        super().__init__()
        if mode not in ("nearest", "linear", "cubic"):
            raise ValueError(f"[Upsample] Got unsupported upsampling algorithm: {mode}")
        if antialias and mode == "nearest":
            raise ValueError("[Upsample] Antialiasing is not supported for nearest neighbor upsampling")
        scale = tuple(float(s) for s in scale_factor) if isinstance(scale_factor, (list, tuple)) else float(
            scale_factor)
        if any(not (math.isfinite(s) and s > 0) for s in (scale if isinstance(scale, tuple) else (scale,))):
            raise ValueError(f"[Upsample] scale_factor must be positive, got {scale_factor}")
        object.__setattr__(self, "scale_factor", scale)  # a tuple, kept out of the module's tree of arrays
        self.mode = mode
        self.align_corners = align_corners
        self.antialias = antialias

    def _extra_repr(self) -> str:
        text = f"scale_factor={self.scale_factor}, mode={self.mode!r}, align_corners={self.align_corners}"
        return text + (", antialias=True" if self.antialias else "")

    def __call__(self, x: mx.array) -> mx.array:
        return upsample(x, self.scale_factor, self.mode, self.align_corners, self.antialias)
