"""What the file formats share: where the bytes come from, how a tensor becomes an array, and the errors.

A file named by path is read lazily: ``load`` reads and checks its header, and each array is a ``Load`` node that
reads its bytes when evaluated. A file object is read at once (it may be closed before the arrays are used).
"""

from __future__ import annotations

import math
import os

import numpy as np

from .. import dtypes as dt
from ..array import DIM_MAX, array, dim_outside, from_data, node
from ..devices import cpu, default_stream, resolve_stream
from ..primitives import View
from ..primitives.io import Load

# NumPy dtype kind and size -> umx dtype: every dtype a file can hold that umx has (either byte order).
_FROM_NUMPY = {(d.np.kind, d.np.itemsize): d for d in (
    dt.bool_, dt.uint8, dt.uint16, dt.uint32, dt.uint64, dt.int8, dt.int16, dt.int32, dt.int64, dt.float16,
    dt.float32, dt.float64, dt.complex64)}
_MAX_DIM = np.iinfo(np.intp).max


def file_name(file) -> str:
    """The file as error messages name it."""
    if isinstance(file, (str, os.PathLike)):
        return repr(os.fspath(file))
    name = getattr(file, "name", None)
    return repr(name) if isinstance(name, (str, bytes)) else f"<{type(file).__name__}>"


def malformed(file, what: str, tensor: str | None = None) -> ValueError:
    """The error for a file that is not what its format says (``tensor``: the array it concerns)."""
    where = f"load: {file_name(file)}" + ("" if tensor is None else f", array {tensor!r}")
    return ValueError(f"{where}: {what}")


def umx_dtype(np_dtype: np.dtype, file, tensor: str) -> dt.Dtype:
    """The umx dtype of a file's NumPy dtype, or a ValueError naming it."""
    d = _FROM_NUMPY.get((np_dtype.kind, np_dtype.itemsize)) if np_dtype.fields is None else None
    if d is None or np_dtype.subdtype is not None:
        raise malformed(file, f"dtype {np_dtype} is not supported by umx", tensor)
    return d


class Source:
    """Where a file's bytes are: a path (read lazily, by ``Load`` nodes) or bytes read from a file object."""

    __slots__ = ("file", "path", "data", "size")

    def __init__(self, file, data: bytes | None = None):
        self.file = file
        self.path = os.fspath(file) if isinstance(file, (str, os.PathLike)) else None
        if self.path is not None:
            self.size = os.path.getsize(self.path)  # (a missing file raises FileNotFoundError naming it)
            self.data = None
        else:
            self.data = data if data is not None else read_all(file)
            self.size = len(self.data)

    def head(self, n: int) -> bytes:
        """The file's first ``n`` bytes (fewer if it is shorter)."""
        if self.data is not None:
            return self.data[:n]
        with open(self.path, "rb") as fh:
            return fh.read(n)

    def array(self, offset: int, shape: tuple, file_dtype: np.dtype, dtype: dt.Dtype, name: str, stream,
              order: str = "C") -> array:
        """The array stored at ``offset``: a ``Load`` node for a path, else decoded from the bytes now."""
        if dim_outside(shape) is not None:
            raise malformed(self.file, f"shape {shape} has a dimension past {DIM_MAX} (dimensions are 32-bit)", name)
        if math.prod(n for n in shape if n) * file_dtype.itemsize > _MAX_DIM:  # (NumPy's limit, zeros or not)
            raise malformed(self.file, f"shape {shape} is past NumPy's limit of {_MAX_DIM} bytes", name)
        prim = Load(self.path, offset, shape, file_dtype.str, order, dtype, name)
        if self.data is None:
            return node(prim, (), shape, dtype, stream)
        if offset + prim.nbytes > self.size:
            raise malformed(self.file, f"the file ends at byte {self.size}, before the data of shape {shape}, "
                            f"which end at byte {offset + prim.nbytes}", name)
        flat = np.frombuffer(self.data, file_dtype, math.prod(shape), offset)
        return from_data(prim.decode(flat), dtype)


def read_all(file) -> bytes:
    """The rest of a file object's bytes."""
    data = file.read()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"load: {file_name(file)} must be opened in binary mode ('rb'), got {type(data).__name__}")
    return bytes(data)


def read_up_to(file, n: int) -> bytes:
    """The next ``n`` bytes of a file object, or all that is left if fewer (read in pieces, so that a hostile
    size in a header never sizes an allocation)."""
    parts = []
    while n > 0:
        part = file.read(min(n, 1 << 24))
        if not isinstance(part, (bytes, bytearray, memoryview)):
            raise TypeError(f"load: {file_name(file)} must be opened in binary mode ('rb')")
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def load_stream(stream):
    """The stream loads run on: the one given, else the CPU's default (as MLX: files are read by the host)."""
    return default_stream(cpu) if stream is None else resolve_stream(stream)


def host_data(a, op: str) -> np.ndarray:
    """The evaluated host data of umx array ``a`` (C-contiguous), for saving: bfloat16 as the 16 bits it is stored
    in (``uint16``), which files hold too."""
    if not isinstance(a, array):
        raise TypeError(f"{op}: expected umx arrays, got {type(a).__name__}")
    if a.dtype is dt.bfloat16:
        a = node(View(dt.uint16), (a,), a.shape, dt.uint16, default_stream(cpu))
    return np.asarray(np.asarray(a), order="C")


def with_suffix(file, suffix: str):
    """``file`` with ``suffix`` appended to a path that lacks it (a file object as is)."""
    if isinstance(file, (str, os.PathLike)):
        name = os.fspath(file)
        return name if name.endswith(suffix) else name + suffix
    return file


__all__ = ["Source", "file_name", "host_data", "load_stream", "malformed", "read_all", "read_up_to", "umx_dtype",
           "with_suffix"]
