"""The CPU backend: NumPy kernels, run by one worker thread per stream."""

from __future__ import annotations

import os
import platform

from ...runtime.memory import get_memory_limit
from .executor import CpuExecutor


def available() -> bool:
    return True


def device_count() -> int:
    return 1


def device_info(index: int = 0) -> dict:
    return {
        "architecture": platform.machine(),
        "device_name": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count() or 1,
        "memory_size": _physical_memory(),
    }


def make_executor(stream) -> CpuExecutor:
    return CpuExecutor(stream)


def _physical_memory() -> int:

    return get_memory_limit()
