"""Reading a tensor's bytes from a file: the node ``mx.load`` builds for each array of a file named by path.

The file's header is read and checked when ``load`` is called; the data are read when the node is evaluated, as
MLX does, so that loading a large file costs nothing until its arrays are used, and each array is read on the
stream ``load`` was given. A ``Load`` node has no inputs, so the transforms never reach it (it is a constant to
them, as ``Full`` is) and it needs no derivative or batching rule.
"""

from __future__ import annotations

import math

import numpy as np

from .base import NO_INPUTS, Primitive


class FileReadError(ValueError, RuntimeError):
    """A file's data could not be read as its header describes (it is shorter, or it changed or went away since
    ``load``). A ``ValueError``, umx's error for malformed files, and a ``RuntimeError``, MLX's error for a failure
    at evaluation."""


class Load(Primitive):
    """The array stored at byte ``offset`` of the file at ``path``: ``shape`` elements of NumPy dtype
    ``file_dtype`` (a dtype string with its byte order, e.g. ``'<f4'``), in ``order`` (``'C'`` or ``'F'``),
    converted to the umx ``dtype`` (bfloat16's 16 bits, ``'<u2'``, are its storage). ``name`` names
    the tensor in error messages."""

    __slots__ = ("path", "offset", "shape", "file_dtype", "order", "dtype", "name")
    capture = False  # reads a file on the host
    no_grad = no_vmap = NO_INPUTS

    def __init__(self, path: str, offset: int, shape: tuple, file_dtype: str, order: str, dtype, name: str):
        self.path = path
        self.offset = offset
        self.shape = shape
        self.file_dtype = file_dtype
        self.order = order
        self.dtype = dtype
        self.name = name

    @property
    def nbytes(self) -> int:
        """How many bytes of the file the tensor takes."""
        return math.prod(self.shape) * np.dtype(self.file_dtype).itemsize

    def decode(self, flat: np.ndarray) -> np.ndarray:
        """The array, C-contiguous, of this tensor's shape and umx dtype, from its elements as stored (a flat
        array of ``file_dtype``)."""
        data = flat.astype(self.dtype.np, copy=flat.dtype != self.dtype.np or flat.base is not None)
        if self.order == "F":
            return np.array(data.reshape(self.shape[::-1]).T, order="C")
        return data.reshape(self.shape)
