"""NumPy's ``.npy`` and ``.npz`` files.

A ``.npy`` header is read with NumPy's own parser (``numpy.lib.format``, which evaluates no code); the data are
read as ``load`` reads every file (lazily for a path). An ``.npz`` archive is read at once through ``numpy.load``,
with pickles refused.
"""

from __future__ import annotations

import math
import os

import numpy as np
import numpy.lib.format as npformat

from ..array import from_data
from ._common import Source, malformed, read_up_to, umx_dtype


def _header(fh, file) -> tuple:
    """``(shape, fortran_order, dtype)`` from the header of the ``.npy`` data at ``fh``'s position."""
    try:
        version = npformat.read_magic(fh)
    except Exception:
        raise malformed(file, "not a .npy file (it does not start with NumPy's magic string)") from None
    if version not in ((1, 0), (2, 0), (3, 0)):
        raise malformed(file, f".npy format version {version} is not supported (1.0 to 3.0 are)")
    try:  # version 3.0 only allows UTF-8 in field names, which umx's dtypes never have
        read = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        shape, fortran_order, dtype = read(fh)
    except Exception as e:
        raise malformed(file, f"invalid .npy header: {e}") from None
    if any(n < 0 for n in shape):
        raise malformed(file, f"invalid .npy header: negative dimension in shape {shape}")
    return tuple(int(n) for n in shape), fortran_order, dtype


def load_npy(file, stream):
    """The array of a ``.npy`` file: a path (read lazily) or a file object at the start of the data (read now)."""
    if isinstance(file, (str, os.PathLike)):
        src = Source(file)
        with open(src.path, "rb") as fh:
            shape, fortran_order, np_dtype = _header(fh, file)
            offset = fh.tell()
    else:
        shape, fortran_order, np_dtype = _header(file, file)
        src, offset = Source(file, read_up_to(file, math.prod(shape) * np_dtype.itemsize)), 0
    d = umx_dtype(np_dtype, file, None)
    return src.array(offset, shape, _stored(np_dtype), d, "", stream, "F" if fortran_order else "C")


def _stored(np_dtype: np.dtype) -> np.dtype:
    """The dtype to read the bytes as: bools as bytes (so that any nonzero byte reads as True)."""
    return np.dtype(np.uint8) if np_dtype.kind == "b" else np_dtype


def load_npz(file) -> dict:
    """The arrays of an ``.npz`` archive, read now."""
    try:
        z = np.load(file, allow_pickle=False)
    except Exception as e:
        raise malformed(file, f"not a valid .npz archive: {e}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise malformed(file, "a .npy file, not an .npz archive; pass format='npy'")
    out = {}
    with z:
        for name in z.files:
            try:
                data = z[name]
            except Exception as e:
                raise malformed(file, f"cannot read it from the archive: {e}", name) from None
            d = umx_dtype(data.dtype, file, name)
            if d.np.kind == "b":
                data = data.view(np.uint8) != 0
            out[name] = from_data(np.array(data, d.np, order="C"), d)
    return out


__all__ = ["load_npy", "load_npz"]
