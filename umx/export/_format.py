"""The file format of exported functions, and the registry that rebuilds primitives from their names.

A file (see ``docs/export.md``) is the 8-byte magic ``UMXFUNC\\n``, an 8-byte little-endian header length, a
UTF-8 JSON header, and a safetensors blob holding the constants (named ``"0"``, ``"1"``...). The header lists the
traces, one per signature; each trace's steps name their primitive and its parameters in a tagged JSON encoding.
Reading evaluates no code: parameters are plain values (numbers, strings, tuples, slices, dtypes) and primitives
are looked up by name among umx's primitive classes; anything else is a ``ValueError``.
"""

from __future__ import annotations

import io
import json
import math
import struct
import sys

import numpy as np

from .. import dtypes as dt
from .. import primitives as _primitives
from ..io import _safetensors
from ..primitives.base import param_names, subclasses

MAGIC = b"UMXFUNC\n"
VERSION = 1
DEVICES = ("cpu", "gpu")

# Primitives that are never written: they would read a file (Load), call Python (Custom) or run the file's source
# code (CUDA kernels) when the imported function runs. (A Metal kernel can be: umx never runs one.)
NOT_EXPORTED = frozenset({"Load", "Custom", "CudaKernel"})


class Step:
    """One node of a trace: ``prim`` applied to the values numbered ``ins``, giving an array of ``shape`` and
    ``dtype`` on ``device`` ('cpu' or 'gpu'); ``group`` is nonzero on the last node of a sibling group (its
    size), as in a compile tape."""

    __slots__ = ("prim", "ins", "shape", "dtype", "device", "group")

    def __init__(self, prim, ins: tuple, shape: tuple, dtype, device: str, group: int):
        self.prim = prim
        self.ins = ins
        self.shape = shape
        self.dtype = dtype
        self.device = device
        self.group = group


class Trace:
    """One exported signature. Values are numbered: the trace's constants, then its inputs (the positional
    ones, then the keyword ones by sorted name), then its steps' results.

    Attributes:
        inputs: ``(shape, dtype)`` of each input.
        n_args: how many inputs are positional.
        kwargs: the keyword inputs' names, sorted.
        constants: each constant's index in the file's constant table.
        steps: the ``Step`` list, in topological order.
        outputs: the output values' numbers.
    """

    __slots__ = ("inputs", "n_args", "kwargs", "constants", "steps", "outputs")

    def __init__(self, inputs: list, n_args: int, kwargs: list, constants: list, steps: list, outputs: list):
        self.inputs = inputs
        self.n_args = n_args
        self.kwargs = kwargs
        self.constants = constants
        self.steps = steps
        self.outputs = outputs


# -- the registry ----------------------------------------------------------------------------------------------------

_REGISTRY: list = []  # [the registry], built on first use (after every primitives module is imported)


def registry() -> dict:
    """Primitive name -> ``(class, slots, shared instance or None)``, for every primitive class umx has (names
    that two classes share, and ``NOT_EXPORTED``, left out)."""
    if not _REGISTRY:  # (built whole, then published: a thread never sees part of it)
        seen: dict = {}
        for cls in subclasses():
            seen.setdefault(cls.__name__, set()).add(cls)
        shared = {}
        for value in _module_values():
            if isinstance(value, _primitives.Primitive) and not param_names(type(value)):
                shared[type(value)] = value
        table = {}
        for name, classes in seen.items():
            if len(classes) == 1 and name not in NOT_EXPORTED:
                (cls,) = classes
                table[name] = (cls, param_names(cls), shared.get(cls))
        _REGISTRY.append(table)
    return _REGISTRY[0]


def _module_values():
    """The module-level values of the primitives package (shared instances, and the tables that hold them)."""
    for name, mod in list(sys.modules.items()):
        if name.startswith(_primitives.__name__) and mod is not None:
            for v in vars(mod).values():
                yield v
                if isinstance(v, dict):
                    yield from v.values()


def name_of(prim) -> str:
    """The registry name of ``prim``, or a ValueError saying why it cannot be exported."""
    name = type(prim).__name__
    entry = registry().get(name)
    if entry is None or entry[0] is not type(prim):
        why = "it would run code or read files when imported" if name in NOT_EXPORTED else "it has no unique name"
        raise ValueError(f"export_function: primitive {name} cannot be exported: {why}")
    return name


def params_of(prim) -> dict:
    """``prim``'s parameters by slot name."""
    return {s: getattr(prim, s) for s in param_names(type(prim))}


# -- parameters: a tagged JSON encoding of plain values ----------------------------------------------------------------

def encode(value, where: str):
    """``value`` as JSON: None, bools, ints and strings as themselves; the rest as ``{tag: ...}``."""
    t = type(value)
    if value is None or t in (bool, int, str):
        return value
    if t is float:
        return {"float": value.hex()}
    if t is complex:
        return {"complex": [value.real.hex(), value.imag.hex()]}
    if t in (tuple, list):
        return {t.__name__: [encode(x, where) for x in value]}
    if t is slice:
        return {"slice": [encode(value.start, where), encode(value.stop, where), encode(value.step, where)]}
    if value is Ellipsis:
        return {"ellipsis": 0}
    if isinstance(value, dt.Dtype):
        return {"dtype": value.name}
    if isinstance(value, np.generic) and value.dtype.kind in "biufc":
        return {"scalar": [value.dtype.str, encode(value.item(), where)]}
    raise ValueError(f"export_function: {where} is a {t.__name__}, which cannot be exported")


def decode(value, where: str):
    """The value :func:`encode` wrote, or a ValueError naming ``where``."""
    if type(value) is str:  # interned: primitives may mark places with string constants compared by identity
        return sys.intern(value)
    if value is None or type(value) in (bool, int):
        return value
    if type(value) is not dict or len(value) != 1:
        raise ValueError(f"{where}: not an encoded value: {value!r:.80}")
    ((tag, body),) = value.items()
    try:
        if tag == "float":
            return float.fromhex(body)
        if tag == "complex":
            return complex(float.fromhex(body[0]), float.fromhex(body[1]))
        if tag in ("tuple", "list") and type(body) is list:
            items = [decode(x, where) for x in body]
            return tuple(items) if tag == "tuple" else items
        if tag == "slice" and type(body) is list and len(body) == 3:
            return slice(*(decode(x, where) for x in body))
        if tag == "ellipsis":
            return Ellipsis
        if tag == "dtype":
            return dtype_named(body, where)
        if tag == "scalar":
            np_dtype = np.dtype(body[0])
            if np_dtype.kind not in "biufc":
                raise ValueError(np_dtype)
            return np_dtype.type(decode(body[1], where))
    except (TypeError, ValueError, IndexError, OverflowError) as e:
        raise ValueError(f"{where}: invalid {tag} {body!r:.80} ({e})") from None
    raise ValueError(f"{where}: unknown value tag {tag!r}")


_DTYPES = {d.name: d for d in dt.ALL}


def dtype_named(name, where: str):
    """The umx dtype called ``name``, or a ValueError naming ``where``."""
    if not isinstance(name, str) or name not in _DTYPES:
        raise ValueError(f"{where}: unknown dtype {name!r:.40}")
    return _DTYPES[name]


#: parameters that primitives gained after files were written, with the value an older file means
_ADDED = {"Matmul": {"ta": False, "tb": False}}


def build(name, params, where: str):
    """The primitive ``name`` with ``params`` (decoded), or a ValueError naming ``where``."""
    entry = registry().get(name) if isinstance(name, str) else None
    if entry is None:
        raise ValueError(f"{where}: unknown primitive {name!r}")
    cls, names, instance = entry
    if type(params) is dict and name in _ADDED:  # (a file written before those parameters were)
        params = {**_ADDED[name], **params}
    if type(params) is not dict or set(params) != set(names):
        raise ValueError(f"{where}: {name} takes the parameters {list(names)}, got {params!r:.80}")
    if instance is not None:
        return instance
    prim = cls.__new__(cls)
    for s in names:
        setattr(prim, s, decode(params[s], f"{where} ({name}.{s})"))
    return prim


# -- writing and reading --------------------------------------------------------------------------------------------

def _shape_json(shape: tuple) -> list:
    return list(shape)


def header(traces: list, metadata: str, shapeless: bool) -> dict:
    """The JSON header of a file of ``traces``."""
    out = []
    for t in traces:
        steps = []
        for s in t.steps:
            name = name_of(s.prim)
            step = {"op": name, "in": list(s.ins), "shape": _shape_json(s.shape), "dtype": s.dtype.name,
                    "device": s.device}
            params = {k: encode(v, f"parameter {k!r} of {name}") for k, v in params_of(s.prim).items()}
            if params:
                step["params"] = params
            if s.group:
                step["group"] = s.group
            steps.append(step)
        out.append({"inputs": [{"shape": _shape_json(sh), "dtype": d.name} for sh, d in t.inputs],
                    "n_args": t.n_args, "kwargs": list(t.kwargs), "constants": list(t.constants),
                    "steps": steps, "outputs": list(t.outputs)})
    return {"format": "umx.export", "version": VERSION, "metadata": metadata, "shapeless": shapeless,
            "traces": out}


def write(path: str, traces: list, constants: list, metadata: str, shapeless: bool) -> None:
    """Write a file: ``constants`` are the arrays the traces' constant indices refer to."""
    text = json.dumps(header(traces, metadata, shapeless), separators=(",", ":")).encode()
    blob = io.BytesIO()
    _safetensors.save_safetensors(blob, {str(i): c for i, c in enumerate(constants)}, None)
    with open(path, "wb") as fh:
        fh.write(MAGIC + struct.pack("<Q", len(text)) + text)
        fh.write(blob.getvalue())


def read(path: str) -> tuple:
    """``(traces, constants, metadata, shapeless)`` of the file at ``path``; any malformation is a ValueError
    naming the file."""
    where = f"import_function: {path!r}"
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:  # (the same class, e.g. FileNotFoundError, with the op and the path in its message)
        raise type(e)(e.errno, f"{where}: cannot read the file: {e.strerror}") from None
    if raw[:8] != MAGIC:
        raise ValueError(f"{where}: not a function exported by umx (it does not start with {MAGIC!r})")
    if len(raw) < 16:
        raise ValueError(f"{where}: the file ends inside its header")
    (n,) = struct.unpack("<Q", raw[8:16])
    if 16 + n > len(raw):
        raise ValueError(f"{where}: a header of {n} bytes in a file of {len(raw)}")
    try:
        head = json.loads(raw[16:16 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"{where}: the header is not valid JSON: {e}") from None
    if type(head) is not dict or head.get("format") != "umx.export":
        raise ValueError(f"{where}: the header is not that of an exported function")
    if head.get("version") != VERSION:
        raise ValueError(f"{where}: format version {head.get('version')!r}; this umx reads version {VERSION}")
    try:
        arrays, _ = _safetensors.load_safetensors(io.BytesIO(raw[16 + n:]), None)
    except ValueError as e:
        raise ValueError(f"{where}: invalid constants: {e}") from None
    constants = []
    for i in range(len(arrays)):
        if str(i) not in arrays:
            raise ValueError(f"{where}: constant {i} is missing")
        constants.append(arrays[str(i)])
    metadata, shapeless = head.get("metadata", ""), head.get("shapeless", False)
    if type(metadata) is not str or type(shapeless) is not bool or type(head.get("traces")) is not list:
        raise ValueError(f"{where}: invalid metadata, shapeless flag or trace list")
    traces = [_trace(t, len(constants), f"{where}, trace {i}") for i, t in enumerate(head["traces"])]
    return traces, constants, metadata, shapeless


def _count(x) -> bool:
    return type(x) is int and x >= 0


def _shape(x, where: str) -> tuple:
    if type(x) is not list or not all(_count(n) for n in x) or math.prod(n for n in x if n) > 2**62:
        raise ValueError(f"{where}: invalid shape {x!r:.80}")
    return tuple(x)


def _trace(t, n_constants: int, where: str) -> Trace:
    if type(t) is not dict:
        raise ValueError(f"{where}: not an object")
    keys = ("inputs", "n_args", "kwargs", "constants", "steps", "outputs")
    if any(type(t.get(k)) is not (int if k == "n_args" else list) for k in keys):
        raise ValueError(f"{where}: needs the fields {', '.join(keys)}")
    inputs = []
    for spec in t["inputs"]:
        if type(spec) is not dict:
            raise ValueError(f"{where}: invalid input {spec!r:.80}")
        inputs.append((_shape(spec.get("shape"), where), dtype_named(spec.get("dtype"), where)))
    kwargs = t["kwargs"]
    if not all(type(k) is str for k in kwargs) or sorted(set(kwargs)) != kwargs:
        raise ValueError(f"{where}: keyword names must be distinct sorted strings")
    if not 0 <= t["n_args"] == len(inputs) - len(kwargs):
        raise ValueError(f"{where}: {t['n_args']} positional and {len(kwargs)} keyword inputs for {len(inputs)}")
    if not all(_count(c) and c < n_constants for c in t["constants"]):
        raise ValueError(f"{where}: a constant index is out of range")
    n_values = len(t["constants"]) + len(inputs)
    steps = []
    for j, s in enumerate(t["steps"]):
        at = f"{where}, step {j}"
        if type(s) is not dict:
            raise ValueError(f"{at}: not an object")
        ins = s.get("in")
        if type(ins) is not list or not all(_count(r) and r < n_values for r in ins):
            raise ValueError(f"{at}: inputs must be numbers of earlier values, got {ins!r:.80}")
        group = s.get("group", 0)
        if not _count(group) or group == 1 or group > j + 1:
            raise ValueError(f"{at}: invalid sibling group {group!r}")
        if s.get("device") not in DEVICES:
            raise ValueError(f"{at}: unknown device {s.get('device')!r}")
        prim = build(s.get("op"), s.get("params", {}), at)
        if group and any(x.prim != prim or x.ins != tuple(ins) for x in steps[j + 1 - group:]):
            raise ValueError(f"{at}: the members of a sibling group must share their primitive and inputs")
        steps.append(Step(prim, tuple(ins), _shape(s.get("shape"), at), dtype_named(s.get("dtype"), at),
                          s["device"], group))
        n_values += 1
    if not all(_count(r) and r < n_values for r in t["outputs"]):
        raise ValueError(f"{where}: an output number is out of range")
    return Trace(inputs, t["n_args"], kwargs, t["constants"], steps, t["outputs"])


__all__ = ["MAGIC", "VERSION", "Step", "Trace", "build", "decode", "encode", "name_of", "params_of", "read",
           "registry", "write"]
