"""Run MLX packages on umx: an alias package named ``mlx``.

Code written for MLX imports ``mlx.core``, ``mlx.nn``, ``mlx.optimizers`` and ``mlx.utils``. :func:`install` puts
umx's modules in ``sys.modules`` under those names (and as attributes of an ``mlx`` package object), so that such
code, mlx-lm for instance, runs on umx unchanged:

- ``mlx.core`` is ``umx``, and ``mlx.core.X`` is ``umx.X`` (``fast``, ``random``, ``linalg``, ``fft``,
  ``distributed``...);
- ``mlx.nn``, ``mlx.optimizers`` and ``mlx.utils`` are ``umx.nn``, ``umx.optimizers`` and ``umx.utils``, and their
  submodules are umx's of the same path (``mlx.nn.layers.distributed`` is ``umx.nn.layers.distributed``).

The alias must be installed before anything imports the real ``mlx`` (a process cannot hold both under one name).
From the command line::

    python -m umx.mlx_compat script.py args...        # runs script.py with the alias installed
    python -m umx.mlx_compat -m mlx_lm.generate ...    # runs a module, as python -m does
    umx-mlx script.py args...                          # the same, as a console script

or in code, first thing: ``import umx.mlx_compat; umx.mlx_compat.install()``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import runpy
import sys
import types

import umx
import umx.nn
import umx.optimizers
import umx.utils

__all__ = ["install", "installed", "main"]

_PACKAGE = "mlx"
# MLX's top-level modules other than core, each umx's module of the same name
_TOP_LEVEL = ("nn", "optimizers", "utils")


def _target(name: str) -> str | None:
    """The umx module that the MLX module ``name`` stands for (None if ``name`` has no umx counterpart)."""
    parts = name.split(".")
    if parts[0] != _PACKAGE or len(parts) < 2:
        return None
    if parts[1] == "core":
        return ".".join(["umx", *parts[2:]])
    if parts[1] in _TOP_LEVEL:
        return ".".join(["umx", *parts[1:]])
    return None


class _AliasLoader(importlib.abc.Loader):
    """Hands out an existing umx module under an MLX name; the module itself is not changed."""

    def __init__(self, module: types.ModuleType):
        self.module = module
        self.spec = getattr(module, "__spec__", None)

    def create_module(self, spec):
        return self.module

    def exec_module(self, module):
        module.__spec__ = self.spec  # the import system set the alias's spec: umx's module keeps its own


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds ``mlx.X.Y`` as umx's module of the same path, imported on first use."""

    def find_spec(self, fullname, path=None, target=None):
        umx_name = _target(fullname)
        if umx_name is None:
            return None
        try:
            module = importlib.import_module(umx_name)
        except ModuleNotFoundError as e:
            if e.name != umx_name:  # the umx module exists but fails to import: that error is the news
                raise
            return None
        is_package = hasattr(module, "__path__")
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(module), is_package=is_package)


def installed() -> bool:
    """Whether ``import mlx`` gives the alias (True) rather than the real MLX or nothing."""
    return getattr(sys.modules.get(_PACKAGE), "__umx_alias__", False)


def install() -> types.ModuleType:
    """Make ``import mlx.core``, ``mlx.nn``, ``mlx.optimizers`` and ``mlx.utils`` give umx's modules.

    Installing twice is harmless. Raises ``RuntimeError`` when the real ``mlx`` is already imported.

    Returns:
        module: the ``mlx`` alias package.
    """
    if installed():
        return sys.modules[_PACKAGE]
    if any(name == _PACKAGE or name.startswith(_PACKAGE + ".") for name in sys.modules):
        raise RuntimeError("umx.mlx_compat.install: the real mlx is already imported; install the alias before "
                           "anything imports mlx")

    package = types.ModuleType(_PACKAGE, "MLX's package name, aliased to umx by umx.mlx_compat.")
    package.__path__ = []  # a package, so that the import system asks the finder for its submodules
    package.__spec__ = importlib.machinery.ModuleSpec(_PACKAGE, None, is_package=True)
    package.__umx_alias__ = True
    package.core = umx
    sys.modules[_PACKAGE] = package
    sys.modules[_PACKAGE + ".core"] = umx
    for name in _TOP_LEVEL:
        module = sys.modules["umx." + name]
        setattr(package, name, module)
        sys.modules[f"{_PACKAGE}.{name}"] = module
    sys.meta_path.insert(0, _AliasFinder())
    return package


def main(argv: list[str] | None = None) -> None:
    """Run a script (``script.py args...``) or a module (``-m name args...``) with the alias installed."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or (argv[0] == "-m" and len(argv) < 2):
        print("usage: python -m umx.mlx_compat script.py [args...] | -m module [args...]")
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    install()
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
