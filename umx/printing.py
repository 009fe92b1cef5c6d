"""Printing arrays as MLX does: ``array([1, 2.5, 0.333333], dtype=float32)``.

Values are written one by one, unaligned, floats with 6 significant digits (or ``precision`` digits after the
point once set). An axis longer than 6 shows its first and last 3 entries around ``...``; rows of a matrix start
on new lines, indented under the first bracket. An empty array of other than one dimension also gives its shape, as
NumPy does (``array([], shape=(0, 3), dtype=float32)``), which MLX's brackets lose.
"""

from __future__ import annotations

import math

import numpy as np

_EDGE = 3  # entries kept at each end of a summarised axis


class PrintOptions:
    """Global print options: ``precision``, the digits after the point for floats (-1: 6 significant digits)."""

    def __init__(self, precision: int = -1):
        self.precision = precision

    def __repr__(self) -> str:
        return f"PrintOptions(precision={self.precision})"

    def __getitem__(self, key: str):
        """``options["precision"]``: the options read as a mapping too."""
        if key != "precision":
            raise KeyError(key)
        return self.precision


_options = PrintOptions()


def _float(x) -> str:
    x = float(x)
    p = _options.precision
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if p is not None and p >= 0:
        return f"{x:.{p}f}"
    return f"{x:.6g}"


def _complex(z) -> str:
    re, im = float(z.real), float(z.imag)
    sign = "+" if im >= 0 or math.isnan(im) else "-"
    return f"{_float(re)}{sign}{_float(abs(im) if not math.isnan(im) else im)}j"


def _scalar_fmt(kind: str):
    if kind == "f":
        return _float
    if kind == "c":
        return _complex
    if kind == "b":
        return lambda b: "True" if b else "False"
    return lambda v: str(int(v))


def _block(data: np.ndarray, dim: int, fmt, out: list) -> None:
    n = data.shape[0]
    last = data.ndim == 1
    prefix = "" if last else " " * (7 + dim)
    sep = ", " if last else ",\n"
    out.append("[")
    idx = list(range(n)) if n <= 2 * _EDGE else [*range(_EDGE), -1, *range(n - _EDGE, n)]
    for j, i in enumerate(idx):
        if j:
            out.append(sep)
            out.append(prefix)
        if i < 0:
            out.append("...")
        elif last:
            out.append(fmt(data[i]))
        else:
            _block(data[i], dim + 1, fmt, out)
    out.append("]")


def _format(a) -> str:
    data = a._host()
    fmt = _scalar_fmt(a.dtype.kind)
    if data.ndim == 0:
        return fmt(data[()])
    out: list = []
    _block(data, 0, fmt, out)
    return "".join(out)


def array_repr(a) -> str:
    if a.ndim != 1 and 0 in a.shape:  # brackets alone would not show the shape (NumPy's form)
        return f"array([], shape={a.shape}, dtype={a.dtype.name})"
    return f"array({_format(a)}, dtype={a.dtype.name})"


def array_str(a) -> str:
    return array_repr(a)


def set_printoptions(precision: int | None = -1) -> None:
    """Set the global print precision.

    Args:
        precision (int): digits after the point for floats; -1 (default) or None prints 6 significant digits.
    """
    _options.precision = -1 if precision is None else int(precision)


def get_printoptions() -> PrintOptions:
    """The global print options.

    Returns:
        PrintOptions: an object with the ``precision`` in use.
    """
    return PrintOptions(_options.precision)


class printoptions:  # noqa: N801 (MLX's name)
    """``with mx.printoptions(precision=3):`` sets the print precision for the block.

    Args:
        precision (int): digits after the point for floats; -1 prints 6 significant digits.
    """

    def __init__(self, precision: int | None = -1):
        self._new = -1 if precision is None else int(precision)
        self._old = None

    def __enter__(self):
        self._old = _options.precision
        _options.precision = self._new
        return self

    def __exit__(self, *exc):
        _options.precision = self._old
        return False
