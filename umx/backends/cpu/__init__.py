"""The CPU backend: NumPy kernels, run by one worker thread per stream."""

from __future__ import annotations

import platform

from ...runtime.memory import physical_memory
from ...runtime.threads import CORES
from .executor import CpuExecutor


def available() -> bool:
    return True


def device_count() -> int:
    return 1


def device_info(index: int = 0) -> dict:
    return {
        "architecture": platform.machine(),
        "device_name": platform.processor() or platform.machine(),
        "cpu_count": CORES,
        "memory_size": physical_memory(),  # (the machine's, whatever limit is set)
    }


def make_executor(stream) -> CpuExecutor:
    return CpuExecutor(stream)
