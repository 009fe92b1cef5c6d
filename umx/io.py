"""Saving and loading arrays: NumPy's ``.npy``/``.npz`` and the safetensors format (written and read here).

Saving evaluates the arrays. Loaded arrays are evaluated host arrays that keep the file's dtype (float64 stays
float64, unlike ``mx.array`` of a NumPy float64 array).

A safetensors file is an 8-byte little-endian header length, a JSON header mapping each name to its ``dtype``,
``shape`` and ``data_offsets`` (start and end in the data section) plus an optional ``__metadata__`` dict of
strings, then the raw little-endian data.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

from . import dtypes as dt
from .array import array, from_data

__all__ = ["save", "savez", "savez_compressed", "load", "save_safetensors", "save_gguf"]

# safetensors dtype code <-> umx dtype; bfloat16 travels as its 16 high bits (umx stores it in float32).
_ST_CODES = {
    "BOOL": dt.bool_, "U8": dt.uint8, "I8": dt.int8, "U16": dt.uint16, "I16": dt.int16, "U32": dt.uint32,
    "I32": dt.int32, "U64": dt.uint64, "I64": dt.int64, "F16": dt.float16, "BF16": dt.bfloat16, "F32": dt.float32,
    "F64": dt.float64, "C64": dt.complex64,
}
_ST_NAMES = {d: code for code, d in _ST_CODES.items()}


def _host(a, op: str) -> np.ndarray:
    if not isinstance(a, array):
        raise TypeError(f"{op}: expected umx arrays, got {type(a).__name__}")
    return np.asarray(a)


def _npy_data(a, op: str) -> np.ndarray:
    if isinstance(a, array) and a.dtype is dt.bfloat16:
        raise ValueError(f"{op}: NumPy files cannot hold bfloat16; cast to float32 or use save_safetensors")
    return _host(a, op)


def _with_suffix(file, suffix: str):
    if isinstance(file, (str, os.PathLike)):
        name = os.fspath(file)
        return name if name.endswith(suffix) else name + suffix
    return file


def save(file, arr: array) -> None:
    """Save one array to a NumPy ``.npy`` file (``.npy`` is appended to a name without it).

    Args:
        file (str | os.PathLike | file): where to write.
        arr (array): the array.
    """
    data = _npy_data(arr, "save")
    target = _with_suffix(file, ".npy")
    if isinstance(target, str):
        with open(target, "wb") as fh:
            np.save(fh, data, allow_pickle=False)
    else:
        np.save(target, data, allow_pickle=False)


def savez(file, *args, **kwargs) -> None:
    """Save arrays to an uncompressed NumPy ``.npz`` archive. See ``numpy.savez``.

    Args:
        file (str | os.PathLike | file): where to write (``.npz`` is appended to a name without it).
        *args (array): arrays stored as ``arr_0``, ``arr_1``, ...
        **kwargs (array): arrays stored under their keyword.
    """
    _savez(np.savez, "savez", file, args, kwargs)


def savez_compressed(file, *args, **kwargs) -> None:
    """Save arrays to a compressed NumPy ``.npz`` archive. See ``numpy.savez_compressed``; arguments as
    :func:`savez`."""
    _savez(np.savez_compressed, "savez_compressed", file, args, kwargs)


def _savez(fn, op: str, file, args, kwargs) -> None:
    named = {f"arr_{i}": _npy_data(a, op) for i, a in enumerate(args)}
    for k, a in kwargs.items():
        if k in named:
            raise ValueError(f"{op}: name {k!r} is used twice")
        named[k] = _npy_data(a, op)
    fn(_with_suffix(file, ".npz"), **named)


def _wrap(data: np.ndarray) -> array:
    data = np.asarray(data, order="C")
    return from_data(data, dt.from_numpy(data.dtype))


def _format_of(file, fmt: str | None) -> str:
    if fmt is not None:
        return fmt.lower().lstrip(".")
    name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else getattr(file, "name", "")
    ext = os.path.splitext(str(name))[1].lower().lstrip(".")
    if not ext:
        raise ValueError(f"load: cannot tell the format of {file!r}; pass format='npy', 'npz' or 'safetensors'")
    return ext


def load(file, /, format: str | None = None, return_metadata: bool = False, *, stream=None):  # noqa: A002
    """Load arrays from a ``.npy``, ``.npz`` or ``.safetensors`` file.

    Args:
        file (str | os.PathLike | file): the file.
        format (str, optional): ``'npy'``, ``'npz'`` or ``'safetensors'``; default: from the file's extension.
        return_metadata (bool): also return the safetensors metadata dict. Default: False.
        stream (Stream | Device | DeviceType, optional): accepted for MLX compatibility; loaded arrays are
            evaluated and have no location.

    Returns:
        array | dict[str, array]: one array for ``.npy``, a dict of arrays otherwise; with
        ``return_metadata``, a pair ``(arrays, metadata)``.
    """
    fmt = _format_of(file, format)
    if fmt == "npy":
        out, meta = _wrap(np.load(file, allow_pickle=False)), {}
    elif fmt == "npz":
        with np.load(file, allow_pickle=False) as z:
            out, meta = {k: _wrap(z[k]) for k in z.files}, {}
    elif fmt == "safetensors":
        out, meta = _load_safetensors(file)
    elif fmt == "gguf":
        raise NotImplementedError("load: GGUF files are not supported by umx yet")
    else:
        raise ValueError(f"load: unknown format {fmt!r}; expected 'npy', 'npz' or 'safetensors'")
    if return_metadata:
        if fmt == "npy":
            raise ValueError("load: return_metadata needs a safetensors (or gguf) file, not .npy")
        return out, meta
    return out


def save_safetensors(file, arrays: dict, metadata: dict | None = None) -> None:
    """Save a dict of arrays in the safetensors format (``.safetensors`` is appended to a name without it).

    Args:
        file (str | os.PathLike | file): where to write.
        arrays (dict[str, array]): the arrays by name.
        metadata (dict[str, str], optional): strings stored in the header's ``__metadata__``.
    """
    if not isinstance(arrays, dict):
        raise TypeError(f"save_safetensors: arrays must be a dict of name to array, got {type(arrays).__name__}")
    header: dict = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("save_safetensors: metadata keys and values must all be strings")
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name in sorted(arrays):
        a = arrays[name]
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"save_safetensors: invalid array name {name!r}")
        data = _host(a, "save_safetensors")
        if a.dtype is dt.bfloat16:
            data = (np.asarray(data, np.float32, order="C").view(np.uint32) >> 16).astype("<u2")
        else:
            data = np.asarray(data, a.dtype.np.newbyteorder("<"), order="C")
        raw = data.tobytes()
        header[name] = {"dtype": _ST_NAMES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data section starts 8-byte aligned, as the reference writer does
    target = _with_suffix(file, ".safetensors")
    fh = open(target, "wb") if isinstance(target, str) else target
    try:
        fh.write(struct.pack("<Q", len(text)))
        fh.write(text)
        for raw in blobs:
            fh.write(raw)
    finally:
        if fh is not target:
            fh.close()


def _load_safetensors(file) -> tuple:
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as fh:
            buf = fh.read()
    else:
        buf = file.read()
    if len(buf) < 8:
        raise ValueError("load: not a safetensors file (shorter than its 8-byte header length)")
    (n,) = struct.unpack("<Q", buf[:8])
    if 8 + n > len(buf):
        raise ValueError(f"load: corrupt safetensors file (header of {n} bytes, file of {len(buf)})")
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    start = 8 + n
    out = {}
    for name, info in header.items():
        code = info["dtype"]
        d = _ST_CODES.get(code)
        if d is None:
            raise ValueError(f"load: safetensors dtype {code!r} of {name!r} is not supported by umx")
        shape = tuple(info["shape"])
        lo, hi = info["data_offsets"]
        raw = buf[start + lo:start + hi]
        if d is dt.bfloat16:
            bits = np.frombuffer(raw, "<u2").astype(np.uint32) << 16
            data = bits.view(np.float32).reshape(shape)
        else:
            data = np.frombuffer(raw, d.np.newbyteorder("<")).astype(d.np).reshape(shape)
        out[name] = from_data(np.asarray(data, order="C"), d)
    return out, meta


def save_gguf(file, arrays: dict, metadata: dict | None = None) -> None:
    """Save arrays in the GGUF format: not supported by umx yet.

    Raises:
        NotImplementedError: always.
    """
    raise NotImplementedError("save_gguf: the GGUF format is not supported by umx yet; use save_safetensors")
