"""The kernel that reads a loaded array's bytes from its file."""

from __future__ import annotations

import math
import os

import numpy as np

from ...primitives.io import FileReadError, Load
from . import kernel


def read(prim: Load) -> np.ndarray:
    """The host array of a ``Load`` node, read from its file."""
    count = math.prod(prim.shape)
    where = f"load: {prim.path!r}" + (f", array {prim.name!r}" if prim.name else "")
    try:
        with open(prim.path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if prim.offset + prim.nbytes > size:  # (checked first: a hostile count must not size an allocation)
                raise FileReadError(f"{where}: the file has {size} bytes, but its header puts the {count} "
                                    f"elements of shape {prim.shape} at bytes {prim.offset} to "
                                    f"{prim.offset + prim.nbytes} (truncated, or changed since load?)")
            fh.seek(prim.offset)
            flat = np.fromfile(fh, np.dtype(prim.file_dtype), count) if count else np.empty(0, prim.file_dtype)
    except OSError as e:
        raise FileReadError(f"{where}: cannot read the data: {e}") from None
    if flat.size != count:
        raise FileReadError(f"{where}: read {flat.size} of the {count} elements of shape {prim.shape}")
    return prim.decode(flat)


@kernel(Load)
def _load(xp, prim):
    return xp.asarray(read(prim))
