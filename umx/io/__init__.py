"""Saving and loading arrays: NumPy's ``.npy``/``.npz``, safetensors and GGUF.

Saving evaluates the arrays. Loading keeps the file's dtype (float64 stays float64, unlike ``mx.array`` of a
NumPy float64 array). As in MLX, loading a file named by path is lazy: ``load`` reads and checks the header
(raising a ``ValueError`` naming the file and the array for anything malformed) and returns arrays whose data are
read from the file when they are evaluated, on the stream ``load`` was given (by default the CPU's). A file whose
data turn out shorter than its header says (or that changed since ``load``) raises :class:`FileReadError` at
evaluation. A file object is read at once.
"""

from __future__ import annotations

import os

import numpy as np

from .. import dtypes as dt
from ..array import array
from ..primitives.io import FileReadError
from . import _gguf, _npy, _safetensors
from ._common import file_name, load_stream, with_suffix

__all__ = ["save", "savez", "savez_compressed", "load", "save_safetensors", "save_gguf", "FileReadError"]

_FORMATS = ("npy", "npz", "safetensors", "gguf")


def _npy_data(a, op: str) -> np.ndarray:
    if not isinstance(a, array):
        raise TypeError(f"{op}: expected umx arrays, got {type(a).__name__}")
    if a.dtype is dt.bfloat16:
        raise ValueError(f"{op}: NumPy files cannot hold bfloat16; cast to float32 or use save_safetensors")
    return np.asarray(a)


def save(file, arr: array) -> None:
    """Save one array to a NumPy ``.npy`` file (``.npy`` is appended to a name without it).

    Args:
        file (str | os.PathLike | file): where to write.
        arr (array): the array.
    """
    data = _npy_data(arr, "save")
    target = with_suffix(file, ".npy")
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
    fn(with_suffix(file, ".npz"), **named)


def _format_of(file, fmt) -> str:
    if fmt is not None:
        if not isinstance(fmt, str) or fmt.lower().lstrip(".") not in _FORMATS:
            raise ValueError(f"load: unknown format {fmt!r}; expected one of {', '.join(map(repr, _FORMATS))}")
        return fmt.lower().lstrip(".")
    name = os.fspath(file) if isinstance(file, (str, os.PathLike)) else getattr(file, "name", "")
    ext = os.path.splitext(str(name))[1].lower().lstrip(".")
    if not ext:
        raise ValueError(f"load: cannot tell the format of {file_name(file)}; pass format= one of "
                         f"{', '.join(map(repr, _FORMATS))}")
    if ext not in _FORMATS:
        raise ValueError(f"load: unknown format {ext!r} of {file_name(file)}; expected one of "
                         f"{', '.join(map(repr, _FORMATS))} (or pass format=)")
    return ext


def load(file, /, format: str | None = None, return_metadata: bool = False, *, stream=None):  # noqa: A002
    """Load arrays from a ``.npy``, ``.npz``, ``.safetensors`` or ``.gguf`` file.

    A file named by path is read lazily: its header now, each array's data when the array is evaluated, on
    ``stream``. A file object is read now. GGUF files need the ``gguf`` package and a path.

    Args:
        file (str | os.PathLike | file): the file (a file object opened in binary mode).
        format (str, optional): ``'npy'``, ``'npz'``, ``'safetensors'`` or ``'gguf'``; default: from the
            file's extension.
        return_metadata (bool): also return the file's metadata: a dict of strings for safetensors; strings,
            lists of strings and arrays for GGUF. Default: False.
        stream (Stream | Device | DeviceType, optional): where the data are read; default: the CPU's default
            stream.

    Returns:
        array | dict[str, array]: one array for ``.npy``, a dict of arrays otherwise; with
        ``return_metadata``, a pair ``(arrays, metadata)``.

    Raises:
        ValueError: the file is not a valid file of its format, or holds a dtype umx lacks.
    """
    fmt = _format_of(file, format)
    if return_metadata and fmt in ("npy", "npz"):
        raise ValueError(f"load: return_metadata needs a safetensors or GGUF file, not .{fmt}")
    st = load_stream(stream)
    if fmt == "npy":
        return _npy.load_npy(file, st)
    if fmt == "npz":
        return _npy.load_npz(file)
    if fmt == "safetensors":
        out, meta = _safetensors.load_safetensors(file, st)
    else:
        out, meta = _gguf.load_gguf(file, st, return_metadata)
    return (out, meta) if return_metadata else out


def _check_arrays(op: str, arrays) -> None:
    if not isinstance(arrays, dict):
        raise TypeError(f"{op}: arrays must be a dict of name to array, got {type(arrays).__name__}")
    for name, a in arrays.items():
        if not isinstance(name, str):
            raise TypeError(f"{op}: array names must be strings, got {name!r} ({type(name).__name__})")
        if not isinstance(a, array):
            raise TypeError(f"{op}: array {name!r} must be a umx array, got {type(a).__name__}")


def save_safetensors(file, arrays: dict, metadata: dict | None = None) -> None:
    """Save a dict of arrays in the safetensors format (``.safetensors`` is appended to a name without it).

    Args:
        file (str | os.PathLike | file): where to write.
        arrays (dict[str, array]): the arrays by name.
        metadata (dict[str, str], optional): strings stored in the header's ``__metadata__``.
    """
    _check_arrays("save_safetensors", arrays)
    if "__metadata__" in arrays:
        raise ValueError("save_safetensors: '__metadata__' is reserved for the metadata, not an array name")
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError("save_safetensors: metadata must be a dict whose keys and values are all strings")
    _safetensors.save_safetensors(with_suffix(file, ".safetensors"), arrays, metadata)


def save_gguf(file, arrays: dict, metadata: dict | None = None) -> None:
    """Save a dict of arrays in the GGUF format (``.gguf`` is appended to a name without it); needs the ``gguf``
    package.

    Args:
        file (str | os.PathLike): where to write.
        arrays (dict[str, array]): the arrays by name: float32, float16, bfloat16, float64, int8, int16, int32
            or int64.
        metadata (dict, optional): values by key: strings, lists of strings, or arrays of at most one dimension
            (integers, float32, float64 or bool).
    """
    _check_arrays("save_gguf", arrays)
    if metadata is not None and not isinstance(metadata, dict):
        raise TypeError(f"save_gguf: metadata must be a dict, got {type(metadata).__name__}")
    _gguf.save_gguf(with_suffix(file, ".gguf"), arrays, metadata)
