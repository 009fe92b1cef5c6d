"""Kernels written once against NumPy's API, bound to NumPy by the CPU backend and to CuPy by the CUDA backend.

CuPy mirrors NumPy's names and semantics, so most primitives need one kernel for both devices. A kernel is
registered per primitive class, as a function ``fn(xp, prim, *inputs)`` (``@kernel``) or as a factory
``make(xp, cls) -> fn(prim, *inputs)`` (``@kernel_factory``) for families where the factory looks the function up
once. A backend calls :func:`bind` with its array module and overrides what its library lacks.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

_FACTORIES: dict = {}


def kernel(*classes):
    """Register ``fn(xp, prim, *inputs)`` as the kernel of each primitive class in ``classes``."""

    def deco(fn):
        for cls in classes:
            _FACTORIES[cls] = lambda xp, cls, fn=fn: functools.partial(fn, xp)
        return fn

    return deco


def kernel_factory(*classes):
    """Register ``make(xp, cls)``, which returns the kernel ``fn(prim, *inputs)`` of each class in ``classes``."""

    def deco(make):
        for cls in classes:
            _FACTORIES[cls] = make
        return make

    return deco


def bind(xp) -> dict:
    """The kernel table for array module ``xp``: primitive class -> ``fn(prim, *inputs)``."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):  # every module here registers its kernels when imported
        importlib.import_module(f"{__name__}.{mod.name}")
    return {cls: make(xp, cls) for cls, make in _FACTORIES.items()}


def round_bf16(xp, x):
    """Round float32 values to bfloat16 precision (nearest, ties to even), in float32 storage.

    On the host, a small array is cast through ml_dtypes' bfloat16 when it is installed (two NumPy calls where the
    bit arithmetic takes seven: this runs after every bfloat16 op), and a large one that already holds bfloat16
    values (a view of a bfloat16 array, such as a weight's transpose) is returned as it is, not copied.
    """
    x = xp.asarray(x, dtype=xp.float32)
    if xp is np:
        if x.size <= _SMALL:
            if _ml_bfloat16 is not None:
                return x.astype(_ml_bfloat16).astype(np.float32)
        elif _holds_bf16(x):
            return x
    flat = x.reshape(-1)
    bits = flat.view(xp.uint32)
    r = bits >> xp.uint32(16)
    r &= xp.uint32(1)
    r += xp.uint32(0x7FFF)
    r += bits
    r &= xp.uint32(0xFFFF0000)
    return xp.where(flat != flat, flat, r.view(xp.float32)).reshape(x.shape)


_SMALL = 1 << 14  # elements: below, the cast's fixed cost wins; above, the in-place arithmetic's speed
try:  # optional (NumPy is umx's only dependency): a faster cast for small arrays
    from ml_dtypes import bfloat16 as _ml_bfloat16
except ImportError:
    _ml_bfloat16 = None


def _holds_bf16(x) -> bool:
    """Whether the float32 host array ``x`` holds bfloat16 values only (the low 16 bits of each are zero), read
    in place: a sample first, so that a computed result is told apart at once."""
    c = x if x.flags.c_contiguous else x.T
    if not c.flags.c_contiguous or sys.byteorder != "little":
        return False
    low = c.view(np.uint16)[..., 0::2]
    return not low.flat[:64].any() and not low.any()
