"""Fourier transform kernels on ``numpy.fft`` / ``cupy.fft``; results are complex64 or float32 as in MLX."""

from __future__ import annotations

from ...primitives import fft as f
from . import kernel


@kernel(f.FFT)
def _fft(xp, prim, a):
    if not prim.axes:
        return a.astype(xp.float32 if prim.real and prim.inverse else xp.complex64)
    if prim.real:
        fn = xp.fft.irfftn if prim.inverse else xp.fft.rfftn
    else:
        fn = xp.fft.ifftn if prim.inverse else xp.fft.fftn
    out = fn(a, s=prim.sizes, axes=prim.axes)
    return out.astype(xp.float32 if prim.real and prim.inverse else xp.complex64, copy=False)


@kernel(f.FFTShift)
def _fftshift(xp, prim, a):
    fn = xp.fft.ifftshift if prim.inverse else xp.fft.fftshift
    return fn(a, axes=prim.axes)


@kernel(f.FFTFreq)
def _fftfreq(xp, prim):
    fn = xp.fft.rfftfreq if prim.real else xp.fft.fftfreq
    return fn(prim.n, prim.d).astype(xp.float32)
