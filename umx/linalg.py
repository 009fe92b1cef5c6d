"""``mx.linalg``: linear algebra, as MLX's ``mlx.core.linalg`` (see ``numpy.linalg``).

The ops live with the other op families (``umx/ops/linalg.py``); this module is their public namespace.
"""

from .ops import linalg as _impl
from .ops.linalg import *  # noqa: F403

__all__ = list(_impl.__all__)
