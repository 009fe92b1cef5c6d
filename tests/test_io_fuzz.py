"""Fuzzing the file readers: damaged and hostile files either load what the format's reference reader reads or
raise a ValueError naming ``load`` and the file; never another exception, a hang or a silent wrong answer.

Each example saves a few random arrays in one format, damages the file (truncation, flipped bits, overwritten
bytes, or a hostile header: huge or negative shapes, offsets past the end, deeply nested JSON, wrong dtypes), and
loads it both by path (lazily: the arrays are then evaluated) and, except for GGUF, from a file object. The
reference readers (the ``safetensors`` package, NumPy, the ``gguf`` package) are the judges of what a damaged
file holds: whatever umx loads, the reference must load too, with the same names, shapes and bits. An intact
file must load exactly what was saved. ``UMX_IO_FUZZ_EXAMPLES`` sets the number of examples per format (``make
stress`` runs many).
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import umx as mx

EXAMPLES = int(os.environ.get("UMX_IO_FUZZ_EXAMPLES", "25"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 25,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

NPY_DTYPES = [mx.bool_, mx.uint8, mx.int16, mx.uint32, mx.int64, mx.float16, mx.float32, mx.float64, mx.complex64]
ST_DTYPES = NPY_DTYPES + [mx.bfloat16]
GGUF_DTYPES = [mx.float32, mx.float16, mx.bfloat16, mx.int8, mx.int32, mx.int64]


def _arrays(dtypes, min_dims: int = 0):
    shapes = st.lists(st.integers(0, 4), min_size=min_dims, max_size=3).map(tuple)
    one = st.tuples(st.sampled_from(dtypes), shapes, st.integers(0, 2**32 - 1))
    return st.dictionaries(st.text("abcxyz._", min_size=1, max_size=6), one, min_size=1, max_size=4)


def _make(spec) -> dict:
    out = {}
    for name, (dtype, shape, seed) in spec.items():
        x = np.random.default_rng(seed).standard_normal(shape) * 100
        out[name] = mx.array(x if dtype.kind in "fc" else np.abs(x), dtype)
    return out


def _bits(x: np.ndarray, dtype) -> bytes:
    """The bytes a reader's value stands for: bools as 0/1, bfloat16 as its 16 high bits."""
    if dtype is mx.bool_:
        return (np.asarray(x).view(np.uint8) != 0).tobytes()
    if dtype is mx.bfloat16:
        return (np.asarray(x, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    return np.ascontiguousarray(x).astype(dtype.np.newbyteorder("<")).tobytes()


# -- damage ----------------------------------------------------------------------------------------------------------

@st.composite
def _damage(draw, raw: bytes) -> bytes:
    kind = draw(st.sampled_from(["intact", "truncate", "flip", "overwrite", "extend"]))
    if kind == "intact" or not raw:
        return raw
    if kind == "truncate":
        return raw[:draw(st.integers(0, len(raw) - 1))]
    if kind == "extend":
        return raw + draw(st.binary(min_size=1, max_size=16))
    data = bytearray(raw)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    else:
        i = draw(st.integers(0, len(data) - 1))
        patch = draw(st.binary(min_size=1, max_size=16))
        data[i:i + len(patch)] = patch
    return bytes(data)


HOSTILE_INTS = st.sampled_from([-1, -(2**63), 2**31, 2**32, 2**40, 2**63 - 1, 2**64 - 1, 2**64, 10**30])


@st.composite
def _hostile_safetensors(draw, raw: bytes) -> bytes:
    """The file with its JSON header rewritten: a field of one entry replaced by a hostile value."""
    (n,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
    names = [k for k in header if k != "__metadata__"]
    how = draw(st.sampled_from(["shape", "offsets", "dtype", "entry", "metadata", "deep", "length"]))
    if how == "deep":
        depth = draw(st.integers(100, 200_000))
        text = "[" * depth + "]" * depth
    else:
        if how == "metadata":
            header["__metadata__"] = draw(st.sampled_from([[], 1, {"k": 1}, {"k": None}, "x", {"k": ["v"]}]))
        elif names:
            entry = header[draw(st.sampled_from(names))]
            if how == "shape":
                entry["shape"] = draw(st.lists(HOSTILE_INTS | st.integers(0, 8), min_size=0, max_size=3))
            elif how == "offsets":
                entry["data_offsets"] = draw(st.lists(HOSTILE_INTS | st.integers(0, len(data) + 8), max_size=3))
            elif how == "dtype":
                entry["dtype"] = draw(st.sampled_from(["F8_E5M2", "F24", "", "f32", "C128", 3, None, "U8", "I64"]))
            elif how == "entry":
                header[draw(st.sampled_from(names))] = draw(st.sampled_from([[], 0, "x", None, {}]))
        text = json.dumps(header)
    body = text.encode()
    length = draw(HOSTILE_INTS.filter(lambda v: 0 <= v < 2**64)) if how == "length" else len(body)
    return struct.pack("<Q", length) + body + data


@st.composite
def _hostile_npy(draw, raw: bytes) -> bytes:
    """The file with its header dict rewritten: a hostile shape, dtype or layout."""
    (n,) = struct.unpack("<H", raw[8:10])
    header = eval(raw[10:10 + n].decode("latin1"))  # noqa: S307 (NumPy's own header literal, written by us)
    how = draw(st.sampled_from(["shape", "descr", "order"]))
    if how == "shape":
        header["shape"] = tuple(draw(st.lists(HOSTILE_INTS | st.integers(0, 8), max_size=3)))
    elif how == "descr":
        header["descr"] = draw(st.sampled_from(["<c16", "|O", "<U4", "<f4", ">f8", "|b1", "<V8", "bogus"]))
    else:
        header["fortran_order"] = draw(st.sampled_from([True, False, 1, "yes"]))
    text = repr(header)
    text += " " * (-(10 + len(text) + 1) % 64) + "\n"
    return raw[:8] + struct.pack("<H", len(text)) + text.encode("latin1") + raw[10 + n:]


@st.composite
def _hostile_gguf(draw, raw: bytes) -> bytes:
    """The file with an 8-byte word of its header replaced by a hostile value (a count, a length, a dimension,
    an offset or a type, wherever it falls)."""
    end = min(len(raw), 256)
    i = draw(st.integers(4, max(4, end - 8)))
    value = draw(HOSTILE_INTS.filter(lambda v: 0 <= v < 2**64))
    return raw[:i] + struct.pack("<Q", value) + raw[i + 8:]


# -- the property ----------------------------------------------------------------------------------------------------

def _load_all(target, fmt: str):
    """umx's reading of the file: ``{name: (dtype, shape, bytes)}``, or the ValueError it raised."""
    try:
        out = mx.load(target, format=fmt)
        out = out if isinstance(out, dict) else {"": out}
        mx.eval(out)
        return {k: (a.dtype, a.shape, _bits(np.asarray(a), a.dtype)) for k, a in out.items()}
    except ValueError as e:  # (FileReadError is a ValueError)
        assert str(e).startswith("load: "), e
        return e


def _check(raw: bytes, fmt: str, saved: dict, reference, from_object: bool = True):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"f.{fmt}")
        with open(path, "wb") as f:
            f.write(raw)
        results = [_load_all(path, fmt)] + ([_load_all(io.BytesIO(raw), fmt)] if from_object else [])
        for got in results:
            if isinstance(got, ValueError):
                assert "f." + fmt in str(got) or "BytesIO" in str(got), got
                continue
            if raw == saved["raw"]:
                assert got == saved["arrays"]
            ref = reference(path)
            assert ref is not None, f"umx loaded a file the reference reader rejects: {got}"
            assert got == ref


def _saved(arrays: dict, raw: bytes) -> dict:
    return {"raw": raw, "arrays": {k: (a.dtype, a.shape, _bits(np.asarray(a), a.dtype)) for k, a in arrays.items()}}


def _reference_safetensors(path):
    safetensors = pytest.importorskip("safetensors")
    codes = {"BOOL": mx.bool_, "U8": mx.uint8, "I16": mx.int16, "U32": mx.uint32, "I64": mx.int64,
             "F16": mx.float16, "F32": mx.float32, "F64": mx.float64, "C64": mx.complex64, "BF16": mx.bfloat16,
             "I8": mx.int8, "U16": mx.uint16, "I32": mx.int32, "U64": mx.uint64, "F8_E4M3": mx.uint8}
    try:
        with open(path, "rb") as f:
            items = safetensors.deserialize(f.read())
    except Exception:
        return None
    out = {}
    for name, t in items:
        d = codes[t["dtype"]]
        data = bytes(t["data"])
        if d is mx.bool_:
            data = (np.frombuffer(data, np.uint8) != 0).tobytes()
        out[name] = (d, tuple(t["shape"]), data)
    return out


def _reference_numpy(path):
    try:
        with open(path, "rb") as f:
            x = np.load(f, allow_pickle=False)
            if isinstance(x, np.ndarray):
                return {"": _numpy_entry(x)}
            with x:
                return {k: _numpy_entry(x[k]) for k in x.files}
    except Exception:
        return None


def _numpy_entry(x: np.ndarray):
    d = mx.bool_ if x.dtype.kind == "b" else mx.dtypes.from_numpy(x.dtype.newbyteorder("="))
    return d, x.shape, _bits(x, d)


def _reference_gguf(path):
    gguf = pytest.importorskip("gguf")
    try:
        reader = gguf.GGUFReader(path)
    except Exception:
        return None
    kinds = {0: mx.float32, 1: mx.float16, 30: mx.bfloat16, 24: mx.int8, 26: mx.int32, 27: mx.int64,
             25: mx.int16, 28: mx.float64}
    out = {}
    for t in reader.tensors:
        d = kinds.get(int(t.tensor_type))
        if d is None:
            return None
        shape = tuple(int(n) for n in reversed(t.shape.tolist()))
        raw = np.asarray(t.data).tobytes()
        out[t.name] = (d, shape, raw)
    return out


@FUZZ
@given(spec=_arrays(ST_DTYPES), data=st.data())
def test_fuzz_safetensors(spec, data):
    arrays = _make(spec)
    buf = io.BytesIO()
    mx.save_safetensors(buf, arrays)
    raw = buf.getvalue()
    damaged = data.draw(st.one_of(_damage(raw), _hostile_safetensors(raw)))
    _check(damaged, "safetensors", _saved(arrays, raw), _reference_safetensors)


@FUZZ
@given(spec=_arrays(NPY_DTYPES), data=st.data())
def test_fuzz_npy(spec, data):
    name, a = next(iter(_make(spec).items()))
    buf = io.BytesIO()
    mx.save(buf, a)
    raw = buf.getvalue()
    damaged = data.draw(st.one_of(_damage(raw), _hostile_npy(raw)))
    _check(damaged, "npy", _saved({"": a}, raw), _reference_numpy)


@FUZZ
@given(spec=_arrays(NPY_DTYPES), data=st.data())
def test_fuzz_npz(spec, data):
    arrays = _make(spec)
    buf = io.BytesIO()
    mx.savez(buf, **arrays)
    raw = buf.getvalue()
    _check(data.draw(_damage(raw)), "npz", _saved(arrays, raw), _reference_numpy)


@FUZZ
@given(spec=_arrays(GGUF_DTYPES, min_dims=1), data=st.data())
def test_fuzz_gguf(spec, data):
    pytest.importorskip("gguf")
    arrays = _make(spec)
    with tempfile.TemporaryDirectory() as tmp:
        mx.save_gguf(os.path.join(tmp, "f.gguf"), arrays)
        with open(os.path.join(tmp, "f.gguf"), "rb") as f:
            raw = f.read()
    damaged = data.draw(st.one_of(_damage(raw), _hostile_gguf(raw)))
    _check(damaged, "gguf", _saved(arrays, raw), _reference_gguf, from_object=False)
