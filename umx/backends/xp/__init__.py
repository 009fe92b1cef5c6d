"""Kernels written once against NumPy's API, bound to NumPy by the CPU backend and to CuPy by the CUDA backend.

CuPy mirrors NumPy's names and semantics, so most primitives need one kernel for both devices. A kernel is
registered per primitive class, as a function ``fn(xp, prim, *inputs)`` (``@kernel``) or as a factory
``make(xp, cls) -> fn(prim, *inputs)`` (``@kernel_factory``) for families where the factory looks the function up
once. A backend calls :func:`bind` with its array module and overrides what its library lacks.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

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


def each(items: list, run, parallel, run_at_once=None) -> None:
    """``run(item)`` for each of ``items``, work on disjoint parts of one output; or, where ``parallel`` runs them
    (a backend's ``parallel(fn, n)``: ``fn(lo, hi)`` over chunks of ``range(n)`` at once, None where it cannot),
    ``run_at_once(item)`` (default ``run``) over runs of them at once."""
    at_once = run_at_once or run
    if len(items) < 2 or parallel is None or parallel(
            lambda lo, hi: [at_once(item) for item in items[lo:hi]], len(items)) is None:
        for item in items:
            run(item)


def bind(xp) -> dict:
    """The kernel table for array module ``xp``: primitive class -> ``fn(prim, *inputs)``."""

    for mod in pkgutil.iter_modules(__path__):  # every module here registers its kernels when imported
        importlib.import_module(f"{__name__}.{mod.name}")
    return {cls: make(xp, cls) for cls, make in _FACTORIES.items()}
