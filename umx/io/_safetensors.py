"""The safetensors format, written and read here, with the reference implementation's checks.

A file is an 8-byte little-endian header length ``N``, ``N`` bytes of JSON (an object mapping each name to its
``dtype``, ``shape`` and ``data_offsets``, plus an optional ``__metadata__`` object of strings), then the data.
A header is accepted only if, as the ``safetensors`` package requires, it is a JSON object of objects of at most
100 MB; every dtype is known; shapes are lists of non-negative integers; and the tensors, sorted by offset, tile
the data section exactly (the first starts at 0, each starts where the previous ends, the last ends at the end
of the file), each spanning exactly its shape's bytes. Anything else raises a ``ValueError`` naming the tensor.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np

from .. import dtypes as dt
from ._common import Source, host_data, malformed

MAX_HEADER = 100_000_000  # the reference implementation's limit

# code -> (bytes per element, how the bytes are read, umx dtype). bfloat16 is its 16 high bits; float8 E4M3 is
# read as its uint8 codes (as MLX does: ``mx.from_fp8`` converts them); bools as bytes, any nonzero one True.
_CODES = {
    "BOOL": (1, "|u1", dt.bool_), "U8": (1, "|u1", dt.uint8), "I8": (1, "|i1", dt.int8),
    "F8_E4M3": (1, "|u1", dt.uint8), "U16": (2, "<u2", dt.uint16), "I16": (2, "<i2", dt.int16),
    "F16": (2, "<f2", dt.float16), "BF16": (2, "<u2", dt.bfloat16), "U32": (4, "<u4", dt.uint32),
    "I32": (4, "<i4", dt.int32), "F32": (4, "<f4", dt.float32), "U64": (8, "<u8", dt.uint64),
    "I64": (8, "<i8", dt.int64), "F64": (8, "<f8", dt.float64), "C64": (8, "<c8", dt.complex64),
}
# codes the format defines that umx cannot hold
_UNSUPPORTED = {"F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C128"}
_WRITE = {d: code for code, (_, _, d) in _CODES.items() if code not in ("F8_E4M3",)}


def _no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for k in keys if keys.count(k) > 1)!r}")
    return dict(pairs)


def _is_count(x) -> bool:
    return type(x) is int and x >= 0


def parse_header(src: Source) -> tuple:
    """``(entries, metadata, data_start)`` of a safetensors file: entries ``(name, code, shape, begin)`` in
    header order, begin relative to the data section; every check of the module docstring applied."""
    file = src.file
    head = src.head(8)
    if len(head) < 8:
        raise malformed(file, f"not a safetensors file: {len(head)} bytes, fewer than the 8 of its header length")
    (n,) = struct.unpack("<Q", head)
    if n > MAX_HEADER:
        raise malformed(file, f"safetensors header of {n} bytes, more than the {MAX_HEADER} allowed")
    if 8 + n > src.size:
        raise malformed(file, f"safetensors header of {n} bytes in a file of {src.size}")
    text = src.head(8 + n)[8:]
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise malformed(file, f"safetensors header is not valid JSON: {e}") from None
    if type(header) is not dict:
        raise malformed(file, f"safetensors header must be a JSON object, got {type(header).__name__}")
    meta = header.pop("__metadata__", None)
    if meta is None:  # (absent, or null: MLX writes null where there is none)
        meta = {}
    if type(meta) is not dict or not all(type(v) is str for v in meta.values()):
        raise malformed(file, "safetensors __metadata__ must be an object of strings")
    entries = []
    for name, info in header.items():
        entries.append(_entry(file, name, info))
    start, last = 0, None
    for name, _, _, (begin, end) in sorted(entries, key=lambda e: e[3]):
        if begin != start:
            what = "overlaps the previous one" if begin < start else f"leaves a gap (bytes {start} to {begin})"
            raise malformed(file, f"data_offsets [{begin}, {end}] {what}", name)
        start, last = end, name
    if 8 + n + start != src.size:
        raise malformed(file, f"the tensors' data end at byte {start} of the data section, which has "
                        f"{src.size - 8 - n} bytes", last)
    return [(name, code, shape, begin) for name, code, shape, (begin, _) in entries], meta, 8 + n


def _entry(file, name: str, info) -> tuple:
    if type(info) is not dict:
        raise malformed(file, f"safetensors entry must be an object, got {type(info).__name__}", name)
    code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if code in _UNSUPPORTED:
        raise malformed(file, f"safetensors dtype {code} is not supported by umx", name)
    if code not in _CODES:
        raise malformed(file, f"unknown safetensors dtype {code!r}", name)
    if type(shape) is not list or not all(_is_count(x) for x in shape):
        raise malformed(file, f"shape must be a list of non-negative integers, got {shape!r}", name)
    if type(offsets) is not list or len(offsets) != 2 or not all(_is_count(x) for x in offsets):
        raise malformed(file, f"data_offsets must be two non-negative integers, got {offsets!r}", name)
    begin, end = offsets
    if end < begin:
        raise malformed(file, f"data_offsets [{begin}, {end}] end before they begin", name)
    nbytes = math.prod(shape) * _CODES[code][0]
    if end - begin != nbytes:
        raise malformed(file, f"data_offsets [{begin}, {end}] span {end - begin} bytes, but shape {shape} of "
                        f"{code} takes {nbytes}", name)
    return name, code, tuple(shape), (begin, end)


def load_safetensors(file, stream) -> tuple:
    """``(arrays, metadata)`` of a safetensors file (a path, read lazily, or a file object, read now)."""
    src = Source(file)
    entries, meta, data_start = parse_header(src)
    out = {}
    for name, code, shape, begin in entries:
        _, stored, d = _CODES[code]
        out[name] = src.array(data_start + begin, shape, np.dtype(stored), d, name, stream)
    return out, meta


def save_safetensors(file, arrays: dict, metadata: dict | None) -> None:
    """Write ``arrays`` (checked by the caller) and ``metadata`` to ``file`` (a path or a binary file object)."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name in sorted(arrays):
        a = arrays[name]
        data = host_data(a, "save_safetensors")
        data = data.astype(a.dtype.np.newbyteorder("<"), copy=False)  # (bfloat16: its bits, '<u2')
        raw = data.tobytes()
        header[name] = {"dtype": _WRITE[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned, as the reference writer does
    fh = open(file, "wb") if isinstance(file, str) else file
    try:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for raw in blobs:
            fh.write(raw)
    finally:
        if fh is not file:
            fh.close()


__all__ = ["load_safetensors", "parse_header", "save_safetensors"]
