"""``mx.fft``: discrete Fourier transforms (see ``numpy.fft``), with complex64 spectra and float32 real outputs.

Every transform takes ``n``/``s`` (sizes: the input is zero-padded or cut to them) and ``axis``/``axes``, as
MLX's and NumPy's do, and the usual ``stream=``.
"""

from __future__ import annotations

import operator

import numpy as np

from .. import dtypes as dt
from ..primitives import FFT, ISTFT, STFT, FFTFreq, FFTShift
from ._core import alias, array, as_array, axis_of, cast, check_dims, describe, node, resolve_stream
from .creation import ones

__all__ = ["fft", "ifft", "fft2", "ifft2", "fftn", "ifftn", "rfft", "irfft", "rfft2", "irfft2", "rfftn", "irfftn",
           "fftshift", "ifftshift", "fftfreq", "rfftfreq", "stft", "istft"]


def _plan(a: array, s, axes, op: str) -> tuple:
    """The checked axes and sizes of a transform, NumPy's defaults filled in (no axes: the last ``len(s)``, or
    all of them; for the 2-d transforms too, as NumPy's)."""
    if axes is None:
        if s is None:
            axes = tuple(range(a.ndim))
        else:
            axes = tuple(range(a.ndim - len(s), a.ndim))
    axes = tuple(axis_of(x, a.ndim, op) for x in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"{op}: repeated axes {axes}")
    if s is None:
        sizes = tuple(a._shape[x] for x in axes)
    else:
        sizes = tuple(_size(n, op) for n in s)
        if len(sizes) != len(axes):
            raise ValueError(f"{op}: s {tuple(s)} and axes {axes} must have the same length")
    if any(n <= 0 for n in sizes):
        raise ValueError(f"{op}: transform sizes must be positive, got {sizes} for {describe(a)}")
    return axes, sizes


def _size(n, op: str, what: str = "sizes") -> int:
    """A transform or output size: an int (TypeError for floats, infinities included) of at most 32 bits."""
    if isinstance(n, (float, np.floating)) or not hasattr(n, "__index__"):
        raise TypeError(f"{op}: {what} must be {'an integer' if what == 'n' else 'integers'}, got {n!r}")
    return check_dims((operator.index(n),), op)[0]


_NORMS = ("backward", "ortho", "forward")


def _norm(norm, op: str) -> str:
    if norm not in _NORMS:
        raise ValueError(f"{op}: norm must be 'backward', 'ortho' or 'forward', got {norm!r}")
    return norm


def _complex(a, op: str, st) -> array:
    a = as_array(a, op)
    return cast(a, dt.complex64, st)


def _transform(a, s, axes, inverse: bool, op: str, norm, stream) -> array:
    st = resolve_stream(stream)
    a = _complex(a, op, st)
    norm = _norm(norm, op)
    axes, sizes = _plan(a, s, axes, op)
    shape = list(a._shape)
    for x, n in zip(axes, sizes):
        shape[x] = n
    return node(FFT(axes, sizes, inverse, False, norm), (a,), tuple(shape), dt.complex64, st)


def _real_forward(a, s, axes, op: str, norm, stream) -> array:
    st = resolve_stream(stream)
    a = as_array(a, op)
    norm = _norm(norm, op)
    if a._dtype.kind != "f" or a._dtype is dt.bfloat16 or a._dtype is dt.float16:
        a = cast(a, dt.float32, st)  # complex input is taken by its real part, as in MLX
    axes, sizes = _plan(a, s, axes, op)
    if not axes:
        raise ValueError(f"{op}: needs at least one axis")
    shape = list(a._shape)
    for x, n in zip(axes, sizes):
        shape[x] = n
    shape[axes[-1]] = sizes[-1] // 2 + 1
    return node(FFT(axes, sizes, False, True, norm), (a,), tuple(shape), dt.complex64, st)


def _real_inverse(a, s, axes, op: str, norm, stream) -> array:
    st = resolve_stream(stream)
    a = _complex(a, op, st)
    norm = _norm(norm, op)
    if s is None:
        axes, sizes = _plan(a, None, axes, op)
        if not axes:
            raise ValueError(f"{op}: needs at least one axis")
        sizes = sizes[:-1] + (2 * (sizes[-1] - 1),)
        if sizes[-1] <= 0:
            raise ValueError(f"{op}: the last axis of {describe(a)} is too short to invert; pass its output size")
    else:
        axes, sizes = _plan(a, s, axes, op)
    shape = list(a._shape)
    for x, n in zip(axes, sizes):
        shape[x] = n
    return node(FFT(axes, sizes, True, True, norm), (a,), tuple(shape), dt.float32, st)


def _one(n, axis) -> tuple:
    return (None if n is None else (n,)), (axis,)





def fft(a, n: int | None = None, axis: int = -1, norm: str = "backward", *, stream=None) -> array:
    """The one-dimensional discrete Fourier transform. See ``numpy.fft.fft``.

    Args:
        a (array): input.
        n (int, optional): the transform length: ``a`` is cut or zero-padded along ``axis`` to it. Default:
            ``a.shape[axis]``.
        axis (int): the axis to transform. Default: -1.
        norm (str): the scaling: ``'backward'`` (default: 1/n on the inverse), ``'ortho'`` (1/sqrt(n) both ways)
            or ``'forward'`` (1/n on the forward transform), as ``numpy.fft``'s.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the complex64 spectrum.
    """
    return _transform(a, *_one(n, axis), False, "fft.fft", norm, stream)


def ifft(a, n: int | None = None, axis: int = -1, norm: str = "backward", *, stream=None) -> array:
    """The one-dimensional inverse discrete Fourier transform. See ``numpy.fft.ifft``; arguments as :func:`fft`.

    Returns:
        array: complex64.
    """
    return _transform(a, *_one(n, axis), True, "fft.ifft", norm, stream)


def fft2(a, s=None, axes=(-2, -1), norm: str = "backward", *, stream=None) -> array:
    """The two-dimensional discrete Fourier transform. See ``numpy.fft.fft2``.

    Args:
        a (array): input.
        s (Sequence[int], optional): the sizes along ``axes`` (cut or zero-padded). Default: ``a``'s.
        axes (Sequence[int]): the axes to transform. Default: the last two.
        norm (str): the scaling, as :func:`fft`'s.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: complex64.
    """
    return _transform(a, s, axes, False, "fft.fft2", norm, stream)


def ifft2(a, s=None, axes=(-2, -1), norm: str = "backward", *, stream=None) -> array:
    """The two-dimensional inverse discrete Fourier transform. See ``numpy.fft.ifft2``; arguments as
    :func:`fft2`.

    Returns:
        array: complex64.
    """
    return _transform(a, s, axes, True, "fft.ifft2", norm, stream)


def fftn(a, s=None, axes=None, norm: str = "backward", *, stream=None) -> array:
    """The n-dimensional discrete Fourier transform. See ``numpy.fft.fftn``.

    Args:
        a (array): input.
        s (Sequence[int], optional): the sizes along ``axes`` (cut or zero-padded). Default: ``a``'s.
        axes (Sequence[int], optional): the axes; default: the last ``len(s)`` axes, or all of them.
        norm (str): the scaling, as :func:`fft`'s.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: complex64.
    """
    return _transform(a, s, axes, False, "fft.fftn", norm, stream)


def ifftn(a, s=None, axes=None, norm: str = "backward", *, stream=None) -> array:
    """The n-dimensional inverse discrete Fourier transform. See ``numpy.fft.ifftn``; arguments as :func:`fftn`.

    Returns:
        array: complex64.
    """
    return _transform(a, s, axes, True, "fft.ifftn", norm, stream)


def rfft(a, n: int | None = None, axis: int = -1, norm: str = "backward", *, stream=None) -> array:
    """The one-dimensional transform of real input: the ``n // 2 + 1`` non-negative frequencies.
    See ``numpy.fft.rfft``; complex input is taken by its real part.

    Args:
        a (array): input.
        n (int, optional): the transform length (cut or zero-padded). Default: ``a.shape[axis]``.
        axis (int): the axis to transform. Default: -1.
        norm (str): the scaling: ``'backward'`` (default: 1/n on the inverse), ``'ortho'`` (1/sqrt(n) both ways)
            or ``'forward'`` (1/n on the forward transform), as ``numpy.fft``'s.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: complex64.
    """
    return _real_forward(a, *_one(n, axis), "fft.rfft", norm, stream)


def irfft(a, n: int | None = None, axis: int = -1, norm: str = "backward", *, stream=None) -> array:
    """The inverse of :func:`rfft`. See ``numpy.fft.irfft``.

    Args:
        a (array): a half spectrum.
        n (int, optional): the output length along ``axis``. Default: ``2 * (a.shape[axis] - 1)``.
        axis (int): the axis to transform. Default: -1.
        norm (str): the scaling: ``'backward'`` (default: 1/n on the inverse), ``'ortho'`` (1/sqrt(n) both ways)
            or ``'forward'`` (1/n on the forward transform), as ``numpy.fft``'s.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: float32.
    """
    return _real_inverse(a, *_one(n, axis), "fft.irfft", norm, stream)


def rfft2(a, s=None, axes=(-2, -1), norm: str = "backward", *, stream=None) -> array:
    """The two-dimensional transform of real input (half spectrum along the last axis). See
    ``numpy.fft.rfft2``; arguments as :func:`fft2`.

    Returns:
        array: complex64.
    """
    return _real_forward(a, s, axes, "fft.rfft2", norm, stream)


def irfft2(a, s=None, axes=(-2, -1), norm: str = "backward", *, stream=None) -> array:
    """The inverse of :func:`rfft2`. See ``numpy.fft.irfft2``; ``s`` gives the real output's sizes.

    Returns:
        array: float32.
    """
    return _real_inverse(a, s, axes, "fft.irfft2", norm, stream)


def rfftn(a, s=None, axes=None, norm: str = "backward", *, stream=None) -> array:
    """The n-dimensional transform of real input (half spectrum along the last axis). See
    ``numpy.fft.rfftn``; arguments as :func:`fftn`.

    Returns:
        array: complex64.
    """
    return _real_forward(a, s, axes, "fft.rfftn", norm, stream)


def irfftn(a, s=None, axes=None, norm: str = "backward", *, stream=None) -> array:
    """The inverse of :func:`rfftn`. See ``numpy.fft.irfftn``; ``s`` gives the real output's sizes.

    Returns:
        array: float32.
    """
    return _real_inverse(a, s, axes, "fft.irfftn", norm, stream)


def _shift(a, axes, inverse: bool, op: str, stream) -> array:
    a = as_array(a, op)
    if axes is None:
        axes = tuple(range(a.ndim))
    elif isinstance(axes, int):
        axes = (axes,)
    axes = tuple(axis_of(x, a.ndim, op) for x in axes)
    if not axes:
        return alias(a)
    return node(FFTShift(axes, inverse), (a,), a._shape, a._dtype, resolve_stream(stream))


def fftshift(a, axes=None, *, stream=None) -> array:
    """Move the zero-frequency term to the centre of ``axes`` (all by default). See ``numpy.fft.fftshift``.

    Args:
        a (array): a spectrum.
        axes (int | Sequence[int], optional): the axes to shift.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the shifted array.
    """
    return _shift(a, axes, False, "fft.fftshift", stream)


def ifftshift(a, axes=None, *, stream=None) -> array:
    """The inverse of :func:`fftshift`. See ``numpy.fft.ifftshift``.

    Returns:
        array: the shifted array.
    """
    return _shift(a, axes, True, "fft.ifftshift", stream)


def _freq(n: int, d: float, real: bool, op: str, stream) -> array:
    n = _size(n, op, "n")  # (a bool is an int here, as in MLX: fftfreq(True) is fftfreq(1))
    if n <= 0:
        raise ValueError(f"{op}: n must be positive, got {n}")
    try:
        d = float(d)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: the sample spacing d must be a number, got {d!r}") from None
    if d == 0:
        raise ValueError(f"{op}: the sample spacing d must not be zero")
    size = n // 2 + 1 if real else n
    return node(FFTFreq(n, d, real), (), (size,), dt.float32, resolve_stream(stream))


def fftfreq(n: int, d: float = 1.0, *, stream=None) -> array:
    """The sample frequencies of an ``n``-point :func:`fft` with sample spacing ``d``. See
    ``numpy.fft.fftfreq``.

    Returns:
        array: float32, shape ``(n,)``: ``[0, 1, ..., n//2 - 1 (or n//2), -(n//2), ..., -1] / (d * n)``.
    """
    return _freq(n, d, False, "fft.fftfreq", stream)


def rfftfreq(n: int, d: float = 1.0, *, stream=None) -> array:
    """The sample frequencies of an ``n``-point :func:`rfft`. See ``numpy.fft.rfftfreq``.

    Returns:
        array: float32, shape ``(n // 2 + 1,)``.
    """
    return _freq(n, d, True, "fft.rfftfreq", stream)


def _window(window, win_length: int, n_fft: int, op: str, st) -> array:
    if window is None:
        return ones((win_length,), dt.float32, stream=st)
    w = as_array(window, op)
    if w.ndim != 1 or w._shape[0] != win_length:
        raise ValueError(f"{op}: window must be 1-d of win_length {win_length}, got {describe(w)}")
    return cast(w, dt.float32, st)


def _frame_args(n_fft: int, hop_length, win_length, norm: str, op: str) -> tuple:
    if n_fft <= 0:
        raise ValueError(f"{op}: n_fft must be positive, got {n_fft}")
    hop = n_fft // 4 if hop_length is None else int(hop_length)
    win = n_fft if win_length is None else int(win_length)
    if hop <= 0:
        raise ValueError(f"{op}: hop_length must be positive, got {hop}")
    if not 0 < win <= n_fft:
        raise ValueError(f"{op}: win_length must be in [1, n_fft={n_fft}], got {win}")
    _norm(norm, op)
    return hop, win


def stft(x, n_fft: int = 2048, hop_length: int | None = None, win_length: int | None = None, window=None,
         center: bool = True, pad_mode: str = "reflect", norm: str = "backward", onesided: bool | None = None, *,
         stream=None) -> array:
    """The short-time Fourier transform of the last axis of ``x`` (PyTorch's ``stft`` conventions).

    Args:
        x (array): the signal, ``(..., T)``.
        n_fft (int): the frame and transform size. Default: 2048.
        hop_length (int, optional): samples between frames. Default: ``n_fft // 4``.
        win_length (int, optional): the window size, at most ``n_fft``. Default: ``n_fft``.
        window (array, optional): a 1-d window of ``win_length``, centred and zero-padded to ``n_fft``.
            Default: rectangular.
        center (bool): pad ``n_fft // 2`` samples at both ends so frames are centred. Default: True.
        pad_mode (str): ``'reflect'`` (default), ``'constant'`` or ``'edge'``, used when ``center``.
        norm (str): ``'backward'`` (default), ``'ortho'`` or ``'forward'``, as in ``numpy.fft``.
        onesided (bool, optional): keep only the ``n_fft // 2 + 1`` non-negative frequencies. Default: True for
            real input, False for complex input.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: complex64, ``(..., n_freq, n_frames)``.
    """
    op = "fft.stft"
    st = resolve_stream(stream)
    x = as_array(x, op)
    if x.ndim == 0:
        raise ValueError(f"{op}: needs at least a 1-d signal, got {describe(x)}")
    hop, win = _frame_args(int(n_fft), hop_length, win_length, norm, op)
    if pad_mode not in ("reflect", "constant", "edge"):
        raise ValueError(f"{op}: pad_mode must be 'reflect', 'constant' or 'edge', got {pad_mode!r}")
    is_complex = x._dtype.kind == "c"
    onesided = not is_complex if onesided is None else bool(onesided)
    if onesided and is_complex:
        raise ValueError(f"{op}: a one-sided transform needs real input, got {describe(x)}")
    x = cast(x, dt.complex64 if is_complex else dt.float32, st)
    padded = x._shape[-1] + (2 * (n_fft // 2) if center else 0)
    if padded < n_fft:
        raise ValueError(f"{op}: the signal ({x._shape[-1]} samples) is shorter than n_fft={n_fft}")
    if center and pad_mode == "reflect" and x._shape[-1] <= n_fft // 2:
        raise ValueError(f"{op}: reflect padding of {n_fft // 2} needs more than that many samples, got {describe(x)}")
    w = _window(window, win, n_fft, op, st)
    n_frames = 1 + (padded - n_fft) // hop
    n_freq = n_fft // 2 + 1 if onesided else n_fft
    prim = STFT(int(n_fft), hop, bool(center), pad_mode, norm, onesided)
    return node(prim, (x, w), x._shape[:-1] + (n_freq, n_frames), dt.complex64, st)


def istft(stft_matrix, n_fft: int | None = None, hop_length: int | None = None, win_length: int | None = None,
          window=None, center: bool = True, norm: str = "backward", onesided: bool | None = None,
          length: int | None = None, *, stream=None) -> array:
    """The inverse of :func:`stft`: windowed overlap-add of the inverse transforms of the frames, normalised by
    the summed squared window.

    Args:
        stft_matrix (array): the STFT, ``(..., n_freq, n_frames)``.
        n_fft (int, optional): the transform size. Default: ``2 * (n_freq - 1)`` if one-sided, else ``n_freq``.
        hop_length (int, optional): samples between frames. Default: ``n_fft // 4``.
        win_length (int, optional): the window size. Default: ``n_fft``.
        window (array, optional): the window used by :func:`stft`. Default: rectangular.
        center (bool): whether the STFT was centred. Default: True.
        norm (str): the ``norm`` used by :func:`stft`. Default: ``'backward'``.
        onesided (bool, optional): whether the STFT holds only non-negative frequencies. Default: True.
        length (int, optional): cut or zero-pad the output to this many samples.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the float32 signal, ``(..., length)``.
    """
    op = "fft.istft"
    st = resolve_stream(stream)
    s = as_array(stft_matrix, op)
    if s.ndim < 2:
        raise ValueError(f"{op}: needs (..., n_freq, n_frames), got {describe(s)}")
    onesided = True if onesided is None else bool(onesided)
    n_freq, n_frames = s._shape[-2:]
    if n_fft is None:
        n_fft = 2 * (n_freq - 1) if onesided else n_freq
    n_fft = int(n_fft)
    hop, win = _frame_args(n_fft, hop_length, win_length, norm, op)
    want = n_fft // 2 + 1 if onesided else n_fft
    if n_freq != want:
        raise ValueError(f"{op}: {n_freq} frequencies do not fit n_fft={n_fft} (onesided={onesided})")
    if n_frames < 1:
        raise ValueError(f"{op}: needs at least one frame, got {describe(s)}")
    if length is None:
        length = n_fft + hop * (n_frames - 1) - (2 * (n_fft // 2) if center else 0)
    if length < 0:
        raise ValueError(f"{op}: length must be non-negative, got {length}")
    s = cast(s, dt.complex64, st)
    w = _window(window, win, n_fft, op, st)
    prim = ISTFT(n_fft, hop, bool(center), norm, onesided, int(length))
    return node(prim, (s, w), s._shape[:-2] + (int(length),), dt.float32, st)
