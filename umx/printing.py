"""Printing arrays as MLX does: ``array([1, 2.5, 0.333333], dtype=float32)``."""

from __future__ import annotations

import numpy as np

_options = {"precision": None, "threshold": 1000, "edgeitems": 3, "linewidth": 80}


def _float_fmt(x) -> str:
    p = _options["precision"]
    if p is not None:
        return f"{x:.{p}f}"
    if np.isnan(x):
        return "nan"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{float(x):.6g}"


def _format(a) -> str:
    data = np.asarray(a)
    kind = a.dtype.kind
    fmt: dict = {}
    if kind == "f":
        fmt = {"float_kind": _float_fmt}
    elif kind == "c":
        fmt = {"complex_kind": lambda z: f"{_float_fmt(z.real)}{'+' if z.imag >= 0 else '-'}{_float_fmt(abs(z.imag))}j"}
    elif kind in "iu":
        fmt = {"int": str}  # MLX does not pad integers to a common width
    elif kind == "b":
        fmt = {"bool": lambda b: "True" if b else "False"}
    return np.array2string(data, separator=", ", prefix="array(", formatter=fmt,
                           threshold=_options["threshold"], edgeitems=_options["edgeitems"],
                           max_line_width=_options["linewidth"])


def array_repr(a) -> str:
    return f"array({_format(a)}, dtype={a.dtype.name})"


def array_str(a) -> str:
    return array_repr(a)


def set_printoptions(precision: int | None = None, threshold: int | None = None, edgeitems: int | None = None,
                     linewidth: int | None = None) -> None:
    """Set how arrays print: float ``precision`` (digits after the point), the element count past which the
    middle is elided (``threshold``), ``edgeitems`` kept each side, and the ``linewidth``."""
    for k, v in (("precision", precision), ("threshold", threshold), ("edgeitems", edgeitems),
                 ("linewidth", linewidth)):
        if v is not None:
            _options[k] = v


def get_printoptions() -> dict:
    """The current print options, as a dict."""
    return dict(_options)


class printoptions:
    """``with mx.printoptions(precision=3):`` sets print options for the block."""

    def __init__(self, **kwargs):
        self._new = kwargs
        self._old = None

    def __enter__(self):
        self._old = get_printoptions()
        set_printoptions(**self._new)
        return self

    def __exit__(self, *exc):
        _options.update(self._old)
        return False
