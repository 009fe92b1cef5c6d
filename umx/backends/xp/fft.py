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
    out = fn(a, s=prim.sizes, axes=prim.axes, norm=prim.norm)
    return out.astype(xp.float32 if prim.real and prim.inverse else xp.complex64, copy=False)


@kernel(f.FFTShift)
def _fftshift(xp, prim, a):
    fn = xp.fft.ifftshift if prim.inverse else xp.fft.fftshift
    return fn(a, axes=prim.axes)


@kernel(f.FFTFreq)
def _fftfreq(xp, prim):  # (n and d are Python numbers, checked at the call)
    fn = xp.fft.rfftfreq if prim.real else xp.fft.fftfreq
    return fn(prim.n, prim.d).astype(xp.float32)


def _centred(xp, window, n_fft: int):
    left = (n_fft - window.shape[0]) // 2
    return xp.pad(window, (left, n_fft - window.shape[0] - left))


@kernel(f.STFT)
def _stft(xp, prim, x, window):
    n, hop = prim.n_fft, prim.hop
    if prim.center:
        widths = [(0, 0)] * (x.ndim - 1) + [(n // 2, n // 2)]
        x = xp.pad(x, widths, mode=prim.pad_mode)
    n_frames = 1 + (x.shape[-1] - n) // hop
    idx = xp.arange(n_frames)[:, None] * hop + xp.arange(n)[None, :]
    frames = x[..., idx] * _centred(xp, window, n)
    fn = xp.fft.rfft if prim.onesided else xp.fft.fft
    spec = fn(frames, n=n, axis=-1, norm=prim.norm)
    return xp.swapaxes(spec, -1, -2).astype(xp.complex64)


@kernel(f.ISTFT)
def _istft(xp, prim, spec, window):
    n, hop = prim.n_fft, prim.hop
    spec = xp.swapaxes(spec, -1, -2)
    if prim.onesided:
        frames = xp.fft.irfft(spec, n=n, axis=-1, norm=prim.norm)
    else:
        frames = xp.fft.ifft(spec, n=n, axis=-1, norm=prim.norm).real
    win = _centred(xp, window, n).astype(frames.dtype)
    frames = frames * win
    n_frames = frames.shape[-2]
    # Overlap-add in ceil(n / hop) shifted slabs rather than one add per frame.
    k = -(-n // hop)
    pad = k * hop - n
    slabs = xp.pad(frames, [(0, 0)] * (frames.ndim - 1) + [(0, pad)]).reshape(frames.shape[:-1] + (k, hop))
    wslabs = xp.pad(win * win, (0, pad)).reshape(k, hop)
    out = xp.zeros(frames.shape[:-2] + (n_frames + k - 1, hop), frames.dtype)
    env = xp.zeros((n_frames + k - 1, hop), frames.dtype)
    for j in range(k):
        out[..., j:j + n_frames, :] += slabs[..., :, j, :]
        env[j:j + n_frames, :] += wslabs[j]
    total = n + hop * (n_frames - 1)
    y = out.reshape(out.shape[:-2] + (-1,))[..., :total]
    env = env.reshape(-1)[:total]
    y = xp.where(env > 1e-11, y / xp.where(env > 1e-11, env, 1), y)
    start = n // 2 if prim.center else 0
    stop = start + prim.length
    y = y[..., start:stop]
    if y.shape[-1] < prim.length:
        y = xp.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, prim.length - y.shape[-1])])
    return y.astype(xp.float32)
