"""``mx.random``: random keys and samplers, as MLX's ``mlx.core.random``.

Every sampler takes ``key=`` (a key from :func:`key` or :func:`split`); without one it draws from a global key
that :func:`seed` resets and that ``state`` holds (compiled functions list it in their state). The ops live with
the other op families (``umx/ops/random.py``); this module is their public namespace.
"""

from .ops import random as _impl
from .ops.random import *  # noqa: F403
from .ops.random import bits, state

__all__ = [*_impl.__all__, "bits", "state"]
