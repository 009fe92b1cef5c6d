"""Exporting functions to files and importing them back: MLX's ``export_function``, ``import_function``,
``exporter`` and ``export_to_dot``.

Exporting traces the function as ``compile`` does (``transforms/_tape.py``): it runs once on stand-ins for the
example inputs, and the nodes it builds, with their primitives, parameters, shapes and dtypes, are written down
with the arrays it captured (constants). Random keys drawn from the global key during the trace are constants
too, so an imported function draws what the traced call drew. Importing rebuilds those nodes, by primitive name,
on the caller's inputs; it runs no code from the file. The format is described in ``docs/export.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..array import array, node
from ..devices import Device, DeviceType, default_stream, is_available, resolve_stream
from ..transforms import _tape
from . import _format, _shapes
from ._dot import export_to_dot, letters

__all__ = ["export_function", "import_function", "exporter", "FunctionExporter", "ImportedFunction",
           "export_to_dot"]

_INPUTS = ("Inputs can be either a variable number of positional and keyword arrays or a single tuple and/or "
           "dictionary of arrays")


def _inputs(args: tuple, kwargs: dict, where: str) -> tuple:
    """``(positional arrays, keyword arrays)`` from a call's arguments, as MLX reads them: arrays as positional
    and keyword arguments, or one list or tuple of arrays and/or one dict of them."""
    def arrays(xs):
        return isinstance(xs, (list, tuple)) and all(type(x) is array for x in xs)

    def named(d):
        return isinstance(d, dict) and all(isinstance(k, str) and type(v) is array for k, v in d.items())

    if not args or type(args[0]) is array:
        ok = arrays(args) and named(kwargs)
        pos, kw = list(args), dict(kwargs)
    elif len(args) == 1 and not kwargs:
        ok = arrays(args[0]) or named(args[0])
        pos, kw = (list(args[0]), {}) if arrays(args[0]) else ([], dict(args[0]) if ok else {})
    elif len(args) == 2 and not kwargs:
        ok = arrays(args[0]) and named(args[1])
        pos, kw = (list(args[0]), dict(args[1])) if ok else ([], {})
    else:
        ok = False
    if not ok:
        raise ValueError(f"{where}: {_INPUTS}.")
    return pos, kw


def _signature(pos: list, kw: dict, shapeless: bool) -> tuple:
    def spec(x):
        return (len(x._shape) if shapeless else x._shape, x._dtype)

    return tuple(spec(x) for x in pos), tuple((k, spec(kw[k])) for k in sorted(kw))


class _Constants:
    """The constants of the traces of one file, each array once (by identity; the arrays are kept alive, so an
    identity is never reused)."""

    def __init__(self):
        self.arrays: list = []
        self._index: dict = {}

    def index(self, a: array) -> int:
        i = self._index.get(id(a))
        if i is None:
            i = self._index[id(a)] = len(self.arrays)
            self.arrays.append(a)
        return i


def _trace(fun: Callable, pos: list, kw: dict, constants: _Constants, where: str) -> _format.Trace:
    """Trace ``fun(*pos, **kw)`` into a ``Trace`` whose constants are indices into ``constants``."""
    names = sorted(kw)
    leaves = pos + [kw[k] for k in names]
    tape, keys, out = _tape.record(fun, tuple(pos), {k: kw[k] for k in names}, leaves, len(leaves), None, None,
                                   fold=False)  # (the file keeps the graph as the function built it)
    if not (type(out) is array or isinstance(out, (list, tuple)) and all(type(o) is array for o in out)):
        raise ValueError(f"{where}: Outputs can be either a single array, a tuple, or a list of arrays; got "
                         f"{type(out).__name__}")
    if tape is None:
        raise ValueError(f"{where}: the function evaluated an array while it was traced (item(), print, eval, "
                         "NumPy conversion...); an exported function cannot depend on array values")
    n_c, n_i, n_k = len(tape.consts), tape.n_ins, tape.n_keys

    def renumber(r: int) -> int:  # tape: constants, inputs, keys, steps -> file: constants and keys, inputs, steps
        if r < n_c:
            return r
        if r < n_c + n_i:
            return r + n_k
        return r - n_i if r < n_c + n_i + n_k else r

    steps = [_format.Step(prim, tuple(renumber(r) for r in refs), shape, dtype, stream.device.type.value, group)
             for (prim, _, shape, dtype, stream, group), refs in zip(tape.steps, tape.refs)]
    for s in steps:
        _format.name_of(s.prim)  # (a primitive that cannot be exported fails here, before anything is written)
    consts = [constants.index(c) for c in tape.consts] + [constants.index(k) for k in keys]
    return _format.Trace([(x._shape, x._dtype) for x in leaves], len(pos), names, consts, steps,
                         [renumber(r) for r in tape.out_refs])


def export_function(file, fun: Callable, *args, shapeless: bool = False, metadata: str | None = None,
                    **kwargs) -> None:
    """Export a function to a file (or describe it to a callback).

    The function is traced once on the example inputs; the file holds its graph and the arrays it captured.
    :func:`import_function` reads it back, in this process or another. Example inputs are arrays as positional
    and keyword arguments, or one tuple of arrays and/or one dict of them; the imported function takes inputs
    of the same form.

    Args:
        file (str | os.PathLike | Callable): the file to write, or a callback that is called with a dict per
            part of the function (``type``: ``'inputs'``, ``'keyword_inputs'``, ``'outputs'``, ``'constants'``,
            then one ``'primitive'`` per node with its ``name``, ``arguments``, ``inputs`` and ``outputs``).
        fun (Callable): a function of arrays returning an array or a tuple or list of arrays.
        *args (array): example positional inputs.
        shapeless (bool): let the imported function take inputs of other shapes (same ranks and dtypes); shapes
            are then inferred per primitive. Default: ``False``.
        metadata (str, optional): a string stored with the function (e.g. a JSON configuration), given back by
            ``import_function(..., return_metadata=True)``. Files only.
        **kwargs (array): example keyword inputs.

    Raises:
        ValueError: invalid inputs or outputs, a function that evaluates an array while traced, a primitive
            that cannot be exported, or metadata with a callback.
        TypeError: metadata that is not a string.
    """
    where = "export_function"
    if metadata is not None and not isinstance(metadata, str):
        raise TypeError(f"{where}: metadata must be a string, got {type(metadata).__name__}")
    pos, kw = _inputs(args, kwargs, where)
    if isinstance(file, (str, os.PathLike)):
        ex = FunctionExporter(file, fun, shapeless=shapeless, metadata=metadata)
        ex(*pos, **kw)
        ex.close()
        return
    if not callable(file):
        raise TypeError(f"{where}: file must be a path or a callback, got {type(file).__name__}")
    if metadata is not None:
        raise ValueError(f"{where}: metadata can only be saved to a file, not given to a callback")
    constants = _Constants()
    _describe(file, _trace(fun, pos, kw, constants, where), constants.arrays)


class FunctionExporter:
    """Exports several signatures of one function to one file (what :func:`exporter` returns).

    Each call traces the function on its inputs and rewrites the file with every trace so far (constants that
    traces share are stored once). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, file, fun: Callable, *, shapeless: bool = False, metadata: str | None = None):
        if not isinstance(file, (str, os.PathLike)):
            raise TypeError(f"exporter: file must be a path, got {type(file).__name__}")
        if metadata is not None and not isinstance(metadata, str):
            raise TypeError(f"exporter: metadata must be a string, got {type(metadata).__name__}")
        self._path = os.fspath(file)
        self._fun = fun
        self._shapeless = bool(shapeless)
        self._metadata = metadata or ""
        self._constants = _Constants()
        self._traces: list = []
        self._signatures: set = set()
        self._closed = False

    def __call__(self, *args, **kwargs) -> None:
        """Trace the function on these inputs and add the trace to the file."""
        where = "exporter"
        if self._closed:
            raise RuntimeError(f"{where}: this exporter is closed; make a new one to export more")
        pos, kw = _inputs(args, kwargs, where)
        sig = _signature(pos, kw, self._shapeless)
        if sig in self._signatures:
            raise RuntimeError(f"{where}: a function was already exported with this signature")
        trace = _trace(self._fun, pos, kw, self._constants, where)
        _format.write(self._path, self._traces + [trace], self._constants.arrays, self._metadata, self._shapeless)
        self._traces.append(trace)
        self._signatures.add(sig)

    def close(self) -> None:
        """Stop exporting: the file keeps the traces made so far."""
        self._closed = True
        self._constants = _Constants()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def exporter(file, fun: Callable, *, shapeless: bool = False, metadata: str | None = None) -> FunctionExporter:
    """A :class:`FunctionExporter` writing ``fun`` to ``file``: call it with example inputs once per signature.

    Args:
        file (str | os.PathLike): the file to write.
        fun (Callable): the function.
        shapeless (bool): as for :func:`export_function`. Default: ``False``.
        metadata (str, optional): as for :func:`export_function`.

    Returns:
        FunctionExporter: a callable context manager.
    """
    return FunctionExporter(file, fun, shapeless=shapeless, metadata=metadata)


class ImportedFunction:
    """A function read by :func:`import_function`: call it with arrays as the exported function was called
    (positional and keyword arrays, or a tuple and/or a dict of arrays); returns a tuple of arrays."""

    def __init__(self, traces: list, constants: list, shapeless: bool, path: str):
        self._traces = traces
        self._constants = constants
        self._shapeless = shapeless
        self._path = path
        self._groups = [_group_sizes(t) for t in traces]
        self._traced = [[constants[c]._shape for c in t.constants] + [s for s, _ in t.inputs]
                        + [s.shape for s in t.steps] for t in traces]
        for i, t in enumerate(traces):
            self._check_shapes(i, t)

    def _check_shapes(self, i: int, trace) -> None:
        """Check each step's shapes against its primitive's rule where it has one: a file whose shapes
        disagree with its primitives would give arrays whose data disagree with their shapes."""
        shapes, steps = self._traced[i], trace.steps
        dtypes = ([self._constants[c]._dtype for c in trace.constants] + [d for _, d in trace.inputs]
                  + [s.dtype for s in steps])
        n0 = len(shapes) - len(steps)
        for j, size in self._groups[i]:
            first = steps[j]
            ins = [(shapes[r], dtypes[r]) for r in first.ins]
            want = [shapes[n0 + j + k] for k in range(size)]
            try:
                _, got = _shapes.infer(first.prim, ins, [s for s, _ in ins], want)
            except _shapes.NoRule:
                continue
            except ValueError as e:
                raise ValueError(f"import_function: {self._path!r}, trace {i}, step {j}: {e}") from None
            if got != want:
                raise ValueError(f"import_function: {self._path!r}, trace {i}, step {j}: "
                                 f"{type(first.prim).__name__} of shapes {[s for s, _ in ins]} gives {got}, but "
                                 f"the file says {want}")

    def __call__(self, *args, **kwargs) -> tuple:
        where = "import_function"
        pos, kw = _inputs(args, kwargs, f"{where} (call)")
        i = self._match(pos, kw)
        trace = self._traces[i]
        env = [self._constants[c] for c in trace.constants] + pos + [kw[k] for k in trace.kwargs]
        streams = {d.value: _stream_on(d) for d in DeviceType}
        traced = self._traced[i]
        for j, size in self._groups[i]:
            members = trace.steps[j:j + size]
            first = members[0]
            ins = tuple(env[r] for r in first.ins)
            prim, shapes = first.prim, [m.shape for m in members]
            if self._shapeless and any(x._shape != traced[r] for x, r in zip(ins, first.ins)):
                try:
                    prim, shapes = _shapes.infer(prim, [(x._shape, x._dtype) for x in ins],
                                                 [traced[r] for r in first.ins], shapes)
                except ValueError as e:
                    raise ValueError(f"{where}: {self._path!r} (exported shapeless), step {j}: {e}") from None
            made = [node(prim, ins, s, m.dtype, streams[m.device]) for m, s in zip(members, shapes)]
            if size > 1:
                group = tuple(made)
                for m in made:
                    m._siblings = group
            env.extend(made)
        return tuple(env[r] for r in trace.outputs)

    def _match(self, pos: list, kw: dict) -> int:
        """The index of the trace that takes these inputs, or a ValueError listing the traces there are."""
        positional, named = _signature(pos, kw, self._shapeless)
        wanted = list(positional) + [spec for _, spec in named]
        for i, t in enumerate(self._traces):
            specs = [(len(s) if self._shapeless else s, d) for s, d in t.inputs]
            if t.n_args == len(pos) and t.kwargs == sorted(kw) and specs == wanted:
                return i
        have = "\n".join(f"  {i + 1}. {_describe_inputs(t.inputs[:t.n_args], dict(zip(t.kwargs, t.inputs[t.n_args:])))}"
                         for i, t in enumerate(self._traces))
        got = _describe_inputs([(x._shape, x._dtype) for x in pos], {k: (v._shape, v._dtype) for k, v in kw.items()})
        rule = " (shapeless: ranks and dtypes must match)" if self._shapeless else ""
        raise ValueError(f"import_function: no function in {self._path!r} matches the arguments{rule}. It has:\n"
                         f"{have}\nCalled with: {got}")


def _describe_inputs(pos: list, kw: dict) -> str:
    def spec(s):
        return f"{tuple(s[0])} {s[1].name}"

    parts = [spec(s) for s in pos] + [f"{k}={spec(s)}" for k, s in sorted(kw.items())]
    return "(" + ", ".join(parts) + ")"


def _group_sizes(trace) -> list:
    """``(first step, size)`` of each group of sibling steps, in order (a lone step is a group of 1)."""
    out, j, steps = [], 0, trace.steps
    ends = {k - s.group + 1: s.group for k, s in enumerate(steps) if s.group}
    while j < len(steps):
        size = ends.get(j, 1)
        out.append((j, size))
        j += size
    return out


def _stream_on(kind: DeviceType):
    """The stream an imported node of device ``kind`` runs on: that device's default stream, or the default
    stream where the device is missing (a function exported on a GPU machine, imported on a CPU one)."""
    dev = Device(kind, 0)
    return default_stream(dev) if is_available(dev) else resolve_stream(None)


def import_function(file, return_metadata: bool = False):
    """Import a function written by :func:`export_function` or :func:`exporter`.

    Args:
        file (str | os.PathLike): the file.
        return_metadata (bool): also return the metadata string given at export (``""`` when none). Default:
            ``False``.

    Returns:
        ImportedFunction | tuple[ImportedFunction, str]: the function (called like the exported one, it
        returns a tuple of arrays), and the metadata when asked for.

    Raises:
        ValueError: the file is not a valid export.
    """
    if not isinstance(file, (str, os.PathLike)):
        raise TypeError(f"import_function: file must be a path, got {type(file).__name__}")
    path = os.fspath(file)
    traces, constants, metadata, shapeless = _format.read(path)
    fn = ImportedFunction(traces, constants, shapeless, path)
    return (fn, metadata) if return_metadata else fn


# -- the callback form ------------------------------------------------------------------------------------------------

# umx primitives that MLX reports under another name or with arguments umx does not keep (its Log takes a base)
_MLX_VIEW = {"Log": ("Log", [2]), "Log2": ("Log", [0]), "Log10": ("Log", [1])}


def _describe(callback: Callable, trace, constants: list) -> None:
    """Describe ``trace`` to ``callback`` as MLX does: inputs, keyword inputs, outputs, constants, then each
    primitive with its arguments."""
    shapes = [constants[c]._shape for c in trace.constants] + [s for s, _ in trace.inputs]
    dtypes = [constants[c]._dtype for c in trace.constants] + [d for _, d in trace.inputs]
    for s in trace.steps:
        shapes.append(s.shape)
        dtypes.append(s.dtype)
    n_c = len(trace.constants)

    def value(r: int) -> tuple:
        return letters(r), shapes[r], dtypes[r]

    inputs = [value(n_c + k) for k in range(len(trace.inputs))]
    callback({"type": "inputs", "inputs": inputs})
    callback({"type": "keyword_inputs",
              "keywords": [(k, inputs[trace.n_args + i][0]) for i, k in enumerate(trace.kwargs)]})
    callback({"type": "outputs", "outputs": [value(r) for r in trace.outputs]})
    callback({"type": "constants",
              "constants": [(letters(i), constants[c]) for i, c in enumerate(trace.constants)]})
    base = n_c + len(trace.inputs)
    for j, size in _group_sizes(trace):
        prim = trace.steps[j].prim
        name, args = _MLX_VIEW.get(type(prim).__name__, (type(prim).__name__, None))
        if args is None:
            args = list(_format.params_of(prim).values())
        callback({"type": "primitive", "name": name, "arguments": args,
                  "inputs": [value(r) for r in trace.steps[j].ins],
                  "outputs": [value(base + j + k) for k in range(size)]})
