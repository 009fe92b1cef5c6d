"""Fourier transform primitives. CUDA graphs capture none of them: cuFFT through CuPy was not tried under
capture."""

from __future__ import annotations

from .base import NO_INPUTS, Primitive


class FFT(Primitive):
    """The n-dimensional discrete Fourier transform over ``axes``, each padded or cut to ``sizes`` first.

    ``real`` selects the real-input forward transform (``rfftn``, a half spectrum along the last axis) or, with
    ``inverse``, its inverse (``irfftn``, ``sizes`` being those of the real output). ``norm`` scales as
    ``numpy.fft``'s: 'backward' (1/n on the inverse), 'ortho' (1/sqrt(n) both ways) or 'forward' (1/n on the
    forward transform).
    """

    __slots__ = ("axes", "sizes", "inverse", "real", "norm")
    capture = False

    def __init__(self, axes: tuple, sizes: tuple, inverse: bool, real: bool, norm: str = "backward"):
        self.axes = axes
        self.sizes = sizes
        self.inverse = inverse
        self.real = real
        self.norm = norm


class FFTShift(Primitive):
    """Roll the zero frequency to the middle of ``axes`` (``inverse``: back to the front)."""

    __slots__ = ("axes", "inverse")
    capture = False

    def __init__(self, axes: tuple, inverse: bool):
        self.axes = axes
        self.inverse = inverse


class FFTFreq(Primitive):
    """The sample frequencies of a length-``n`` transform with sample spacing ``d`` (``real``: ``rfft``'s)."""

    __slots__ = ("n", "d", "real")
    capture = False
    no_grad = no_vmap = NO_INPUTS

    def __init__(self, n: int, d: float, real: bool):
        self.n = n
        self.d = d
        self.real = real


class STFT(Primitive):
    """The short-time Fourier transform of the last axis (inputs: the signal and a window of ``win_length``).

    Frames of ``n_fft`` samples, ``hop`` apart, after padding ``n_fft // 2`` on each side with ``pad_mode`` when
    ``center``; the window is centred in the frame; output ``(..., n_freq, n_frames)``.
    """

    __slots__ = ("n_fft", "hop", "center", "pad_mode", "norm", "onesided")
    capture = False
    no_grad = "not written yet (linear: its adjoint is an overlap-add)"

    def __init__(self, n_fft: int, hop: int, center: bool, pad_mode: str, norm: str, onesided: bool):
        self.n_fft = n_fft
        self.hop = hop
        self.center = center
        self.pad_mode = pad_mode
        self.norm = norm
        self.onesided = onesided


class ISTFT(Primitive):
    """The inverse of :class:`STFT` by windowed overlap-add, normalised by the summed squared window; the output
    is cut or zero-padded to ``length``."""

    __slots__ = ("n_fft", "hop", "center", "norm", "onesided", "length")
    capture = False
    no_grad = "not written yet (linear in the spectrum, not in the window)"

    def __init__(self, n_fft: int, hop: int, center: bool, norm: str, onesided: bool, length: int):
        self.n_fft = n_fft
        self.hop = hop
        self.center = center
        self.norm = norm
        self.onesided = onesided
        self.length = length
