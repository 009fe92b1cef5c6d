"""The CUDA backend: CuPy kernels on non-blocking CUDA streams. The only place umx imports CuPy."""

from __future__ import annotations

import os
import socket

from ._probe import _cupy


def tf32_enabled() -> bool:
    """MLX's rule (its CUDA build's): float32 products run on TF32 tensor cores, float32 in and out and float32
    sums, unless ``MLX_ENABLE_TF32`` is 0. cuBLAS's calls read it once, at the first product, as MLX reads it (a
    program, or MLX's test harness, may set it after importing umx); GPUs before Ampere ignore it."""
    return os.environ.get("MLX_ENABLE_TF32", "1").strip().lstrip("0") != ""


def available() -> bool:
    return _cupy() is not None


def device_count() -> int:
    cp = _cupy()
    return cp.cuda.runtime.getDeviceCount() if cp is not None else 0


def device_info(index: int = 0) -> dict:
    cp = _cupy()
    props = cp.cuda.runtime.getDeviceProperties(index)
    free, total = cp.cuda.Device(index).mem_info
    return {
        "architecture": f"sm_{props['major']}{props['minor']}",
        "device_name": props["name"].decode() if isinstance(props["name"], bytes) else props["name"],
        "memory_size": total,
        "free_memory": free,
        "total_memory": total,
    }


def gpu_identity(index: int = 0) -> str:
    """A name of GPU ``index`` that no other GPU of the cluster has: this host's name and the GPU's PCI bus."""
    return f"{socket.gethostname()}/{_cupy().cuda.runtime.deviceGetPCIBusId(index)}"


def make_executor(stream):
    from .executor import CudaExecutor

    return CudaExecutor(stream)


def nccl_available() -> bool:
    """Whether the ``nccl`` distributed backend can run here (CuPy's NCCL bindings and a GPU)."""
    if _cupy() is None:
        return False
    from .collectives import available

    return available()


def nccl_unique_id():
    from .collectives import unique_id

    return unique_id()


def nccl_communicator(uid, size: int, rank: int, device_index: int, turns):
    """An NCCL communicator of ``size`` ranks on GPU ``device_index`` (see ``collectives.NcclComm``)."""
    from .collectives import NcclComm

    return NcclComm(uid, size, rank, device_index, turns)
