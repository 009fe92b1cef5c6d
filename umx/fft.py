"""``mx.fft``: discrete Fourier transforms, as MLX's ``mlx.core.fft`` and NumPy's ``numpy.fft``.

The ops live with the other op families (``umx/ops/fft.py``); this module is their public namespace.
"""

from .ops import fft as _impl
from .ops.fft import *  # noqa: F403

__all__ = list(_impl.__all__)
