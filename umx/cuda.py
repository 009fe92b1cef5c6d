"""``mx.cuda``: whether umx's CUDA backend can run here (CuPy and a CUDA device)."""

from .devices import gpu as _gpu
from .devices import is_available as _is_available

__all__ = ["is_available"]


def is_available() -> bool:
    """Whether a CUDA GPU is available to umx."""
    return _is_available(_gpu)
