"""Dropout of elements (``Dropout``) and of whole channels (``Dropout2d``, ``Dropout3d``), active in training."""

from __future__ import annotations

import umx as mx
from umx.nn.layers.base import Module


class _DropoutBase(Module):
    def __init__(self, p: float = 0.5):
        super().__init__()
        if p < 0 or p >= 1:
            raise ValueError(f"The dropout probability {p} is not in [0, 1)")
        self._p_1 = 1 - p

    def _extra_repr(self) -> str:
        return f"p={1 - self._p_1}"

    def _drop(self, x: mx.array, mask_shape) -> mx.array:
        if self._p_1 == 1 or not self.training:
            return x
        keep = mx.random.bernoulli(self._p_1, mask_shape)
        return (keep * x) * (1 / self._p_1)


class Dropout(_DropoutBase):
    r"""Randomly zeroes elements with probability ``p`` in training, scaling the rest by :math:`1/(1-p)`.

    Args:
        p (float): the probability of zeroing an element. Default: ``0.5``.
    """

    def __call__(self, x: mx.array) -> mx.array:
        return self._drop(x, x.shape)


class Dropout2d(_DropoutBase):
    r"""Randomly zeroes whole channels with probability ``p`` in training, scaling the rest by :math:`1/(1-p)`.

    The input is ``NWHC`` or ``WHC`` (channels last); a channel is one ``[..., :, :, c]`` map.

    Args:
        p (float): the probability of zeroing a channel. Default: ``0.5``.
    """

    def __call__(self, x: mx.array) -> mx.array:
        if x.ndim not in (3, 4):
            raise ValueError(f"Received input with {x.ndim} dimensions. Expected 3 or 4 dimensions.")
        return self._drop(x, (*x.shape[:-3], 1, 1, x.shape[-1]))


class Dropout3d(_DropoutBase):
    r"""Randomly zeroes whole channels of volumes with probability ``p`` in training, scaling the rest by
    :math:`1/(1-p)`.

    The input is ``NDHWC`` or ``DHWC`` (channels last).

    Args:
        p (float): the probability of zeroing a channel. Default: ``0.5``.
    """

    def __call__(self, x: mx.array) -> mx.array:
        if x.ndim not in (4, 5):
            raise ValueError(f"Received input with {x.ndim} dimensions. Expected 4 or 5 dimensions.")
        return self._drop(x, (*x.shape[:-4], 1, 1, 1, x.shape[-1]))
