"""Every primitive is declared whole: a kernel on each device, a CUDA graph capture decision, and each transform
rule (vjp, jvp, vmap) or the stated reason it has none. A primitive added without one of these fails here, not
silently later (no CUDA graph, vmap's loop, an error only when grad runs)."""

from __future__ import annotations

import ast
import gc
import pathlib

import pytest

import umx  # noqa: F401 (imports every module that defines primitives or registers their rules)
import umx.distributed  # noqa: F401
import umx.fast  # noqa: F401
import umx.io  # noqa: F401
import umx.transforms  # noqa: F401
from umx.backends import xp
from umx.backends.cpu.kernels import make_table
from umx.primitives.base import Primitive, subclasses
from umx.transforms._registry import rules

CUDA = pathlib.Path(xp.__file__).parent.parent / "cuda"
#: primitives whose op refuses CPU streams (a user's CUDA kernel)
GPU_ONLY = {"CudaKernel"}
#: the declarations that excuse a missing rule of each kind
REASONS = {"vjp": ("no_grad", "no_vjp"), "jvp": ("no_grad", "no_jvp"), "vmap": ("no_vmap",)}


def _names(expr: ast.AST) -> set:
    """Class names a table key spells: ``Cls``, ``module.Cls`` or ``type(ew.UNARY["Cls"])``."""
    out = set()
    for n in ast.walk(expr):
        if isinstance(n, ast.Name):
            out.add(n.id)
        elif isinstance(n, ast.Attribute):
            out.add(n.attr)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            out.add(n.value)
    return out


def _cuda_overrides() -> set:
    """The class names the CUDA backend's ``make_table`` adds to the shared kernels, read from its source (CuPy
    need not be installed): ``table[key] = ...`` lines and ``table.update(module.KERNELS)`` dicts."""
    tree = ast.parse((CUDA / "kernels.py").read_text())
    make = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "make_table")
    names: set = set()
    for n in ast.walk(make):
        if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Subscript):
            names |= _names(n.targets[0].slice)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "update":
            module, table = n.args[0].value.id, n.args[0].attr
            src = ast.parse((CUDA / f"{module}.py").read_text())
            value = next(a.value for a in src.body if isinstance(a, ast.Assign) and a.targets[0].id == table)
            for key in value.keys:
                names |= _names(key)
    return names


CPU_TABLE = make_table()
CUDA_OVERRIDES = _cuda_overrides()


def missing(cls: type) -> list:
    """What primitive class ``cls`` lacks, in words (empty when it is declared whole)."""
    out = []
    shared = cls in xp._FACTORIES  # bound to NumPy on the CPU and to CuPy on the GPU
    if not (shared or cls in CPU_TABLE or cls.__name__ in GPU_ONLY):
        out.append("a CPU kernel (backends/xp or backends/cpu)")
    if not (shared or cls.__name__ in CUDA_OVERRIDES):
        out.append("a GPU kernel (backends/xp or backends/cuda/kernels.py)")
    if not isinstance(cls.capture, bool):
        out.append("a capture decision (capture = True or False)")
    for kind, excuses in REASONS.items():
        has_rule = getattr(cls, kind) is not getattr(Primitive, kind)
        reasons = [getattr(cls, e) for e in excuses if getattr(cls, e) is not None]
        if not has_rule and not reasons:
            out.append(f"a {kind} rule or a reason for none ({' or '.join(excuses)})")
        if has_rule and reasons:
            out.append(f"a {kind} rule and a reason for none ({reasons[0]!r}) at once")
        if any(not isinstance(r, str) or not r for r in reasons):
            out.append(f"a reason in words for no {kind} rule")
    return out


def concrete() -> list:
    """umx's primitive classes that nodes hold: those no other class derives from (family bases such as
    ``Unary`` or ``Reduce`` only share declarations)."""
    return [c for c in subclasses(Primitive) if c.__module__.startswith("umx.") and not c.__subclasses__()]


def test_every_primitive_is_declared_whole():
    classes = concrete()
    assert len(classes) > 150  # every family module was imported
    gaps = [f"{c.__module__}.{c.__name__} lacks {', '.join(missing(c))}" for c in classes if missing(c)]
    assert not gaps, "\n".join(gaps)


def test_the_cuda_table_is_read():
    # (the static read finds what the CUDA backend adds: the custom kernel and the collectives)
    assert {"CudaKernel", "Scatter", "AllReduce", "Recv"} <= CUDA_OVERRIDES
    assert all(isinstance(c, type) and issubclass(c, Primitive) for c in xp._FACTORIES)


def test_a_forgotten_primitive_fails():
    forgotten = type("Forgotten", (Primitive,), {"__slots__": (), "__module__": "umx.primitives.misc"})
    declared = type("Declared", (Primitive,), {"__slots__": (), "__module__": "umx.primitives.misc",
                                               "capture": False, "no_grad": "a test", "no_vmap": "a test"})
    try:
        assert forgotten in concrete()
        gaps = missing(forgotten)
        assert len(gaps) == 6 and all(any(w in g for g in gaps) for w in ("CPU", "GPU", "capture", "vjp", "jvp",
                                                                              "vmap"))
        assert [g for g in missing(declared) if "kernel" not in g] == []
        with pytest.raises(NotImplementedError, match="Declared has no vjp rule: a test"):
            declared().vjp([], [], [])
        with pytest.raises(NotImplementedError, match="Forgotten has no vmap rule yet"):
            forgotten().vmap([], [], [])
    finally:
        del forgotten, declared
        gc.collect()  # (a class holds cycles: it leaves __subclasses__ only once collected)
    assert not any(c.__name__ in ("Forgotten", "Declared") for c in subclasses(Primitive))


def test_rules_are_registered_once_and_never_against_a_reason():
    def rule(self, *args):
        return []

    cls = type("Ruled", (Primitive,), {"__slots__": (), "__module__": __name__, "no_vmap": "a test"})
    try:
        rules(cls, vjp=rule)
        assert cls.vjp is rule
        with pytest.raises(ValueError, match="already has a vjp rule"):
            rules(cls, vjp=rule)
        with pytest.raises(ValueError, match="no_vmap"):
            rules(cls, vmap=rule)
        with pytest.raises(TypeError, match="not a primitive class"):
            rules(int, jvp=rule)
    finally:
        del cls
        gc.collect()
