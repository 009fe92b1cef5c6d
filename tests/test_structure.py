"""The package's shape: imports point one way (no cycle among umx's modules, counting imports inside functions too),
and no module imports inside a function, except an optional dependency (CuPy, mpi4py, gguf, matplotlib...) or a
module that needs one (the CUDA backend, which the core reaches only once a GPU is asked for)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "umx"

#: third-party packages umx may use but never requires (imported where they are needed, with a clear error)
OPTIONAL = {"cupy", "cupyx", "cupy_backends", "mpi4py", "gguf", "matplotlib", "safetensors", "ml_dtypes", "torch",
            "scipy", "numba"}
#: umx modules that import an optional dependency at their top (reached lazily)
NEEDS_OPTIONAL = ("umx.backends.cuda.",)


def _modules() -> dict:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _target(mod: str, is_pkg: bool, node: ast.ImportFrom, modules: dict) -> list:
    """The umx modules an ``import from`` statement in ``mod`` loads."""
    if not node.level:
        base = node.module or ""
    else:
        parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
        parts = parts[: len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    found = []
    for a in node.names:
        full = f"{base}.{a.name}"
        found.append(full if full in modules else base)
    return [t for t in found if t in modules]


def _imports(modules: dict):
    """Yield ``(module, targets, node, inside_function)`` for every import statement."""
    for mod, path in modules.items():
        tree = ast.parse(path.read_text())
        is_pkg = path.name == "__init__.py"
        inner = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                yield mod, _target(mod, is_pkg, node, modules), node, id(node) in inner
            elif isinstance(node, ast.Import):
                yield mod, [a.name for a in node.names if a.name in modules], node, id(node) in inner


def test_no_import_inside_a_function_but_of_an_optional_dependency():
    modules = _modules()
    bad = []
    for mod, targets, node, inside in _imports(modules):
        if not inside:
            continue
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and node.level:
            allowed = all(t.startswith(NEEDS_OPTIONAL) for t in targets) and targets
        else:
            allowed = all(n.split(".")[0] in OPTIONAL for n in names)
        if not allowed:
            bad.append(f"{modules[mod].relative_to(PACKAGE.parent)}:{node.lineno} {ast.unparse(node)}")
    assert not bad, "imports inside functions:\n  " + "\n  ".join(bad)


def test_no_import_cycle():
    modules = _modules()
    edges: dict = {m: set() for m in modules}
    for mod, targets, _, _ in _imports(modules):
        edges[mod].update(t for t in targets if t != mod)
    # A package's own __init__ importing its submodules is its layout, not a cycle with them.
    for m in modules:
        edges[m] = {t for t in edges[m] if not (m.startswith(t + ".") and modules[t].name == "__init__.py")}
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in modules:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_executors_and_locations_implement_the_declared_interfaces():
    import umx as mx
    from umx.runtime import memory
    from umx.runtime.interfaces import Executor, Location, Traits

    streams = [mx.new_stream(mx.cpu)] + ([mx.new_stream(mx.gpu)] if mx.is_available(mx.gpu) else [])
    for s in streams:
        ex = s.executor
        assert isinstance(ex, Executor), type(ex)
        assert type(ex.traits) is Traits
    for location in memory._locations.values():
        assert isinstance(location, Location), type(location)
