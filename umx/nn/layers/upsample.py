"""``Upsample``: nearest, linear and cubic resampling of the spatial axes of channels-last inputs.

Each spatial axis is resampled in turn. An output position is a weighted sum of a few input positions (its
taps): one for nearest, two for linear, four for cubic, and the whole filter footprint with ``antialias``. The
tap tables are small host constants computed here in float32 with MLX's conventions, so results match MLX's for
any scale: an axis of ``N`` becomes ``M = floor(N * scale)`` long, and output ``i`` sits at input position
``i * (N - 1) / (M - 1)`` with ``align_corners``, else ``(i - (M - 1) / 2) / scale + (N - 1) / 2`` (centres
aligned; for an integer scale that is PyTorch's ``(i + 0.5) / scale - 0.5``). The resampling itself is a gather
and a weighted sum, which every transform handles.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

import umx as mx
from umx.nn.layers.base import Module

_F32 = np.float32
_CUBIC_A = _F32(-0.75)  # the Keys kernel's parameter (OpenCV's); -0.5 with antialias (Pillow's), as MLX


def _positions(n_in: int, n_out: int, scale: float, align_corners: bool) -> np.ndarray:
    """Where each output position sits on the input axis, float32."""
    i = np.arange(n_out, dtype=_F32)
    if align_corners:
        return i * _F32((n_in - 1) / max(n_out - 1, 1))
    step = 1 / scale
    return i * _F32(step) - _F32(((n_out - 1) * step - n_in + 1) / 2)


def _nearest_taps(n_in: int, n_out: int, scale: float):
    if float(scale).is_integer():  # (each input repeated: output i reads i // scale)
        idx = np.arange(n_out) // int(scale)
    elif n_out > n_in:  # (the nearest input centre, ties to even)
        idx = np.round((np.arange(n_out, dtype=_F32) + _F32(0.5)) * _F32(n_in / n_out) - _F32(0.5))
    else:
        idx = np.floor(np.arange(n_out, dtype=_F32) * _F32(n_in / n_out))
    idx = np.clip(idx.astype(np.int64), 0, n_in - 1)
    return idx[:, None], np.ones((n_out, 1), _F32)


def _linear_taps(n_in: int, n_out: int, scale: float, align_corners: bool):
    src = np.clip(_positions(n_in, n_out, scale, align_corners), _F32(0), _F32(n_in - 1))
    lo, hi = np.floor(src), np.ceil(src)
    t = src - lo
    return np.stack([lo, hi], 1).astype(np.int64), np.stack([1 - t, t], 1).astype(_F32)


def _keys_near(x, a):
    """The Keys cubic kernel of parameter ``a`` on ``[0, 1]``."""
    return (((a + 2) * x - (a + 3)) * x * x + 1).astype(_F32)


def _keys_far(x, a):
    """The Keys cubic kernel of parameter ``a`` on ``[1, 2]``."""
    return ((((x - 5) * x + 8) * x - 4) * a).astype(_F32)


def _cubic_taps(n_in: int, n_out: int, scale: float, align_corners: bool):
    # The two nearest inputs weigh by the kernel's inner piece and the two beyond by its outer one, as MLX's
    # (the second is floor(src + 1), which float32 may round past floor(src) + 1).
    src = _positions(n_in, n_out, scale, align_corners)
    first, second = np.floor(src), np.floor(src + _F32(1))
    idx = np.stack([first, second, first - 1, second + 1], 1)
    dist = np.abs(src[:, None] - idx)
    w = np.concatenate([_keys_near(dist[:, :2], _CUBIC_A), _keys_far(dist[:, 2:], _CUBIC_A)], 1)
    return np.clip(idx, 0, n_in - 1).astype(np.int64), w


def _antialias_taps(n_in: int, n_out: int, scale: float, mode: str):
    """Taps of antialiased resampling: when downscaling, the filter widens by ``1 / scale`` so that every input
    contributes; taps outside the input weigh nothing, and each output's weights are normalized to sum to one."""
    src = _positions(n_in, n_out, scale, False)
    widen = 1 / scale if scale < 1 else 1.0
    radius = 1.0 if mode == "linear" else 2.0
    reach = math.ceil(radius * widen) + 1
    idx = np.floor(src)[:, None] + np.arange(-reach + 1, reach, dtype=_F32)
    dist = np.abs(src[:, None] - idx) / _F32(widen)
    if mode == "linear":
        w = np.maximum(1 - dist, 0).astype(_F32)
    else:
        a = _F32(-0.5)
        w = np.where(dist <= 1, _keys_near(dist, a), np.where(dist <= 2, _keys_far(dist, a), _F32(0)))
    w = np.where((idx >= 0) & (idx < n_in), w, _F32(0))
    total = w.sum(1, keepdims=True)
    w = w / np.where(total > 0, total, _F32(1))
    return np.clip(idx, 0, n_in - 1).astype(np.int64), w.astype(_F32)


def _check_antialias(antialias: bool, align_corners: bool) -> None:
    if antialias and align_corners:
        raise ValueError("[Upsample] antialias=True with align_corners=True is not supported; use "
                         "align_corners=False for antialiased interpolation")


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
        antialias (bool): widen the filter when downsampling (linear and cubic modes; not with
            ``align_corners``). Default: ``False``.

    Returns:
        array: the resampled input.
    """
    spatial = x.ndim - 2
    if spatial < 1:
        raise ValueError("[Upsample] The input should have at least 1 spatial dimension which means it should be "
                         f"at least 3D but {x.ndim}D was provided")
    _check_antialias(antialias, align_corners)
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
            taps = _antialias_taps(n_in, n_out, scale, mode)
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
            contributes; the cubic kernel's parameter is then -0.5 rather than -0.75. Not with
            ``align_corners``. Default: ``False``.
    """

    def __init__(self, scale_factor: float | tuple, mode: Literal["nearest", "linear", "cubic"] = "nearest",
                 align_corners: bool = False, antialias: bool = False):
        super().__init__()
        if mode not in ("nearest", "linear", "cubic"):
            raise ValueError(f"[Upsample] Got unsupported upsampling algorithm: {mode}")
        if antialias and mode == "nearest":
            raise ValueError("[Upsample] Antialiasing is not supported for nearest neighbor upsampling")
        _check_antialias(antialias, align_corners)
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
