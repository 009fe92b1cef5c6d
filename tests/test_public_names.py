"""Public modules expose MLX's names and umx's documented additions only: helpers (NumPy as ``np``, ``node``,
``describe``...) are private, so that ``dir(mx.random)`` and ``from umx import *`` read like MLX's."""

from __future__ import annotations
import __future__

import types
from pathlib import Path

import pytest

import umx as mx

_REL = Path("shared") / "reference" / "mlx_core_names.txt"
NAMES_FILE = next((p / _REL for p in Path(__file__).resolve().parents if (p / _REL).exists()), None)

# umx's own public names beyond MLX's, each documented where it is defined.
ADDITIONS = {
    "": {"memory_report", "true_divide"},
    "random": {"bits", "state"},
    "linalg": {"matrix_norm"},
    "fft": set(),
    "cuda": set(),
    "metal": set(),
}

# MLX's own names that the reference list leaves out (it lists no function of mx.metal): MLX 0.32.4's Metal
# capture calls, which umx keeps as no-ops, as MLX's are without Metal.
MLX_UNLISTED = {"metal": {"start_capture", "stop_capture"}}


def _mlx_names() -> set:
    if NAMES_FILE is None:
        pytest.skip(f"MLX's name list ({_REL}) is not beside the repository")
    lines = NAMES_FILE.read_text().splitlines()
    return {s.strip() for s in lines if s.strip() and not s.startswith("#")}


def _public(module) -> list:
    """Non-underscore names, leaving out umx's own submodules (the package's structure, not its API) and
    ``from __future__`` directives."""
    out = []
    for name in dir(module):
        value = getattr(module, name)
        if name.startswith("_") or isinstance(value, __future__._Feature):
            continue
        if module is mx and isinstance(value, types.ModuleType) and name not in ADDITIONS:
            continue  # a module of umx's own making (ops, backends...)
        out.append(name)
    return out


@pytest.mark.parametrize("sub", sorted(ADDITIONS), ids=lambda s: s or "umx")
def test_public_names_are_mlx_names_or_documented_additions(sub):
    names = _mlx_names()
    module = getattr(mx, sub) if sub else mx
    prefix = f"{sub}." if sub else ""
    unknown = [n for n in _public(module) if f"{prefix}{n}" not in names and n not in names and n not in ADDITIONS[sub]
               and n not in MLX_UNLISTED.get(sub, ())]
    assert not unknown, f"umx.{sub or ''} exposes names that are neither MLX's nor listed additions: {unknown}"
    for name in ADDITIONS[sub]:
        assert getattr(module, name).__doc__, f"umx.{prefix}{name} is an addition without a docstring"


@pytest.mark.parametrize("sub", sorted(ADDITIONS), ids=lambda s: s or "umx")
def test_all_lists_the_public_names(sub):
    module = getattr(mx, sub) if sub else mx
    assert hasattr(module, "__all__")
    public = set(_public(module))
    assert set(module.__all__) <= set(dir(module))
    assert public <= set(module.__all__), sorted(public - set(module.__all__))


def test_star_import_gives_the_api_only():
    scope: dict = {}
    exec("from umx import *", scope)
    assert "array" in scope and "random" in scope and "linalg" in scope
    for helper in ("np", "ops", "scheduler", "backends", "creation", "elementwise", "node"):
        assert helper not in scope, helper
