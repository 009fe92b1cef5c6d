"""Backends: one per device type, each a package that runs primitives on its device.

A backend module provides ``available()``, ``device_count()``, ``device_info(index)`` and
``make_executor(stream)``; the CUDA backend also ``nccl_available()``, ``nccl_unique_id()`` and
``nccl_communicator(...)`` for ``mx.distributed``. The core finds backends here by device type and never
imports a backend's libraries: the CUDA backend imports CuPy only when asked whether a GPU is available.
"""

from __future__ import annotations

import importlib

_MODULES = {"cpu": "umx.backends.cpu", "gpu": "umx.backends.cuda"}
_loaded: dict = {}
_executors: list = []  # every executor made, so that synchronize() can reach them


def get(device_type):
    """The backend module for ``device_type`` (mx.cpu or mx.gpu)."""
    key = device_type.value
    be = _loaded.get(key)
    if be is None:
        be = _loaded[key] = importlib.import_module(_MODULES[key])
    return be


def register_executor(ex) -> None:
    _executors.append(ex)


def executors() -> list:
    """All executors made so far (one per stream that has run work)."""
    return list(_executors)
