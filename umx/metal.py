"""``mx.metal``: Apple's GPU API, never available on Linux (kept so that MLX programs that ask can run).

MLX's deprecated ``mx.metal`` memory functions forward to the top-level ones (``mx.get_active_memory`` and the
rest), with a DeprecationWarning, as MLX's do.
"""

import warnings as _warnings

from .runtime import memory as _memory

__all__ = ["is_available", "device_info", "start_capture", "stop_capture", "clear_cache", "get_active_memory",
           "get_cache_memory", "get_peak_memory", "reset_peak_memory", "set_cache_limit", "set_memory_limit",
           "set_wired_limit"]


def is_available() -> bool:
    """Whether a Metal GPU is available: never, on the machines umx runs on."""
    return False


def device_info() -> dict:
    """The Metal device's properties: none here (an empty dict, as MLX's without Metal).

    Returns:
        dict: empty.
    """
    _deprecated("device_info")
    return {}


def start_capture(path: str) -> None:
    """Start a Metal capture into ``path``: nothing to capture without Metal (does nothing, as MLX's without
    Metal). For a trace of what ran where, see ``mx.trace``.

    Args:
        path (str): where the capture would go.
    """


def stop_capture() -> None:
    """Stop a Metal capture: does nothing without Metal (as MLX's)."""


def _deprecated(name: str) -> None:
    _warnings.warn(f"mx.metal.{name} is deprecated; use mx.{name} instead", DeprecationWarning, stacklevel=3)


def clear_cache() -> None:
    """Deprecated: :func:`umx.clear_cache`."""
    _deprecated("clear_cache")
    _memory.clear_cache()


def get_active_memory() -> int:
    """Deprecated: :func:`umx.get_active_memory`."""
    _deprecated("get_active_memory")
    return _memory.get_active_memory()


def get_cache_memory() -> int:
    """Deprecated: :func:`umx.get_cache_memory`."""
    _deprecated("get_cache_memory")
    return _memory.get_cache_memory()


def get_peak_memory() -> int:
    """Deprecated: :func:`umx.get_peak_memory`."""
    _deprecated("get_peak_memory")
    return _memory.get_peak_memory()


def reset_peak_memory() -> None:
    """Deprecated: :func:`umx.reset_peak_memory`."""
    _deprecated("reset_peak_memory")
    _memory.reset_peak_memory()


def set_cache_limit(limit: int) -> int:
    """Deprecated: :func:`umx.set_cache_limit`."""
    _deprecated("set_cache_limit")
    return _memory.set_cache_limit(limit)


def set_memory_limit(limit: int) -> int:
    """Deprecated: :func:`umx.set_memory_limit`."""
    _deprecated("set_memory_limit")
    return _memory.set_memory_limit(limit)


def set_wired_limit(limit: int) -> int:
    """Deprecated: :func:`umx.set_wired_limit`."""
    _deprecated("set_wired_limit")
    return _memory.set_wired_limit(limit)
