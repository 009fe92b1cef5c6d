"""Convolutions: conv1d, conv2d, conv3d, conv_general, the transposed convolutions and convolve.

Layouts are MLX's, channels last: input ``(N, *spatial, C_in)``, weight ``(C_out, *kernel, C_in / groups)``,
output ``(N, *spatial_out, C_out)``. Every op is one ``Convolution`` node; a transposed convolution is the
convolution of its input dilated by the stride with the kernel flipped, as in MLX.
"""

from __future__ import annotations

import operator

from .. import dtypes as dt
from ..primitives import Convolution
from ._core import array, as_array, cast, describe, node, reshape_node, resolve_stream

__all__ = ["conv1d", "conv2d", "conv3d", "conv_general", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
           "convolve"]


def _int(value, op: str, name: str) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{op}: {name} must be an int, got {value!r}") from None


def _ints(value, nd: int, op: str, name: str) -> tuple:
    """An int (the same for every spatial axis) or a sequence of ``nd`` ints, as a tuple."""
    if isinstance(value, (list, tuple)):
        if len(value) != nd:
            raise ValueError(f"{op}: {name} {tuple(value)} does not have one entry per spatial axis ({nd})")
        return tuple(_int(v, op, name) for v in value)
    return (_int(value, op, name),) * nd


def _padding(padding, nd: int, op: str) -> tuple:
    """``(low, high)`` paddings from an int, a sequence of ``nd`` ints, or a pair of such sequences."""
    if isinstance(padding, (list, tuple)) and len(padding) == 2 and all(isinstance(p, (list, tuple)) for p in padding):
        return _ints(padding[0], nd, op, "padding"), _ints(padding[1], nd, op, "padding")
    pad = _ints(padding, nd, op, "padding")
    return pad, pad


def _operands(op: str, input, weight, stream) -> tuple:
    """The input and the weight, cast to their common floating dtype, and the stream."""
    st = resolve_stream(stream)
    x = as_array(input, op)
    w = as_array(weight, op)
    d = dt.promote(x._dtype, w._dtype)
    if d.kind != "f":
        raise ValueError(f"{op}: convolutions take floating-point inputs, got {describe(x, w)}")
    return cast(x, d, st), cast(w, d, st), st


def _spatial_axes(op: str, x: array) -> int:
    nd = x.ndim - 2
    if not 1 <= nd <= 3:
        raise ValueError(f"{op}: the input must be (N, ..., C_in) with 1 to 3 spatial axes, got {describe(x)}")
    return nd


def _convolution(op: str, x: array, w: array, stride, lo, hi, kernel_dilation, input_dilation, groups, flip,
                 st) -> array:
    """A checked ``Convolution`` node of ``x`` and ``w`` (cast already); the spatial parameters are tuples."""
    nd = _spatial_axes(op, x)
    if w.ndim != x.ndim:
        raise ValueError(f"{op}: the weight must be (C_out, ..., C_in) with {nd} spatial axes like the input, got "
                         f"{describe(x, w)}")
    groups = _int(groups, op, "groups")
    for name, values in (("stride", stride), ("kernel dilation", kernel_dilation),
                         ("input dilation", input_dilation)):
        if any(v < 1 for v in values):
            raise ValueError(f"{op}: {name} must be positive, got {values}")
    c, o, cg = x._shape[-1], w._shape[0], w._shape[-1]
    if groups < 1:
        raise ValueError(f"{op}: groups must be positive, got {groups}")
    if c % groups:
        raise ValueError(f"{op}: the input's {c} channels do not split into {groups} groups ({describe(x, w)})")
    if cg * groups != c:
        raise ValueError(f"{op}: the weight takes {cg} channels per group, the input has {c} channels in {groups} "
                         f"group(s) ({describe(x, w)})")
    if o % groups:
        raise ValueError(f"{op}: the weight's {o} output channels do not split into {groups} groups "
                         f"({describe(x, w)})")
    prim = Convolution(stride, lo, hi, kernel_dilation, input_dilation, groups, bool(flip))
    out = []
    for a in range(nd):
        size, k = x._shape[1 + a], w._shape[1 + a]
        if prim.padded_size(a, size) < prim.kernel_extent(a, k):
            raise ValueError(f"{op}: along spatial axis {a} the input padded to {prim.padded_size(a, size)} is "
                             f"smaller than the kernel's extent {prim.kernel_extent(a, k)} (input {x.shape}, weight "
                             f"{w.shape}, padding {lo[a]} and {hi[a]}, kernel dilation {kernel_dilation[a]}, input "
                             f"dilation {input_dilation[a]})")
        out.append(prim.out_size(a, size, k))
    return node(prim, (x, w), (x._shape[0], *out, o), x._dtype, st)


def conv_general(input, weight, /, stride=1, padding=0, kernel_dilation=1, input_dilation=1, groups: int = 1,
                 flip: bool = False, *, stream=None) -> array:
    """General convolution over an input with several channels.

    Args:
        input (array): input of shape ``(N, ..., C_in)`` with 1 to 3 spatial axes.
        weight (array): weight of shape ``(C_out, ..., C_in / groups)``.
        stride (int | Sequence[int]): kernel strides, one per spatial axis or one for all. Default: ``1``.
        padding (int | Sequence[int] | tuple[Sequence[int], Sequence[int]]): zeros added to both ends of each
            spatial axis, or a pair ``(low, high)`` of per-axis paddings; negative values crop. Default: ``0``.
        kernel_dilation (int | Sequence[int]): kernel dilation. Default: ``1``.
        input_dilation (int | Sequence[int]): input dilation (``d - 1`` zeros between input elements). Default:
            ``1``.
        groups (int): input feature groups. Default: ``1``.
        flip (bool): flip the kernel (a true convolution rather than a cross-correlation). Default: ``False``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the convolved array, ``(N, ..., C_out)``.
    """
    x, w, st = _operands("conv_general", input, weight, stream)
    nd = _spatial_axes("conv_general", x)
    lo, hi = _padding(padding, nd, "conv_general")
    return _convolution("conv_general", x, w, _ints(stride, nd, "conv_general", "stride"), lo, hi,
                        _ints(kernel_dilation, nd, "conv_general", "kernel_dilation"),
                        _ints(input_dilation, nd, "conv_general", "input_dilation"), groups, flip, st)


def _checked_axes(op: str, nd: int, x: array) -> int:
    """The input's spatial axes: ``nd``, or for the 1D ops (``nd`` None) any of 1 to 3, whose ints then apply to
    every spatial axis (as in MLX)."""
    if nd is None:
        return _spatial_axes(op, x)
    if x.ndim != nd + 2:
        raise ValueError(f"{op}: the input must have {nd + 2} dimensions (N, {_SPATIAL[nd]}, C_in), got "
                         f"{describe(x)}")
    return nd


def _conv_nd(op: str, nd: int | None, input, weight, stride, padding, dilation, groups, stream) -> array:
    x, w, st = _operands(op, input, weight, stream)
    nd = _checked_axes(op, nd, x)
    pad = _ints(padding, nd, op, "padding")
    return _convolution(op, x, w, _ints(stride, nd, op, "stride"), pad, pad, _ints(dilation, nd, op, "dilation"),
                        (1,) * nd, groups, False, st)


_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}


def conv1d(input, weight, /, stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1, *,
           stream=None) -> array:
    """1D convolution over an input with several channels.

    Args:
        input (array): input of shape ``(N, L, C_in)`` (an input with 2 or 3 spatial axes, as in MLX, takes the
            same stride, padding and dilation along each).
        weight (array): weight of shape ``(C_out, K, C_in / groups)``.
        stride (int): kernel stride. Default: ``1``.
        padding (int): input padding at both ends. Default: ``0``.
        dilation (int): kernel dilation. Default: ``1``.
        groups (int): input feature groups. Default: ``1``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the convolved array, ``(N, L_out, C_out)``.
    """
    return _conv_nd("conv1d", None, input, weight, stride, padding, dilation, groups, stream)


def conv2d(input, weight, /, stride=1, padding=0, dilation=1, groups: int = 1, *, stream=None) -> array:
    """2D convolution over an input with several channels.

    Args:
        input (array): input of shape ``(N, H, W, C_in)``.
        weight (array): weight of shape ``(C_out, KH, KW, C_in / groups)``.
        stride (int | tuple[int, int]): kernel strides; one int for both axes. Default: ``1``.
        padding (int | tuple[int, int]): symmetric input padding; one int for both axes. Default: ``0``.
        dilation (int | tuple[int, int]): kernel dilation; one int for both axes. Default: ``1``.
        groups (int): input feature groups. Default: ``1``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the convolved array, ``(N, H_out, W_out, C_out)``.
    """
    return _conv_nd("conv2d", 2, input, weight, stride, padding, dilation, groups, stream)


def conv3d(input, weight, /, stride=1, padding=0, dilation=1, groups: int = 1, *, stream=None) -> array:
    """3D convolution over an input with several channels.

    Args:
        input (array): input of shape ``(N, D, H, W, C_in)``.
        weight (array): weight of shape ``(C_out, KD, KH, KW, C_in / groups)``.
        stride (int | tuple[int, int, int]): kernel strides; one int for all axes. Default: ``1``.
        padding (int | tuple[int, int, int]): symmetric input padding; one int for all axes. Default: ``0``.
        dilation (int | tuple[int, int, int]): kernel dilation; one int for all axes. Default: ``1``.
        groups (int): input feature groups (umx, unlike MLX, takes any). Default: ``1``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the convolved array, ``(N, D_out, H_out, W_out, C_out)``.
    """
    return _conv_nd("conv3d", 3, input, weight, stride, padding, dilation, groups, stream)


def _conv_transpose_nd(op: str, nd: int | None, input, weight, stride, padding, dilation, output_padding, groups,
                       stream) -> array:
    x, w, st = _operands(op, input, weight, stream)
    nd = _checked_axes(op, nd, x)
    if w.ndim != nd + 2:
        raise ValueError(f"{op}: the weight must have {nd + 2} dimensions (C_out, ..., C_in), got {describe(w)}")
    stride = _ints(stride, nd, op, "stride")
    if any(s < 1 for s in stride):
        raise ValueError(f"{op}: stride must be positive, got {stride}")
    pad = _ints(padding, nd, op, "padding")
    dil = _ints(dilation, nd, op, "dilation")
    extra = _ints(output_padding, nd, op, "output_padding")
    # The transpose of a convolution (stride s, padding p, dilation d) convolves the input dilated by s with the
    # flipped kernel, padded by d * (K - 1) - p on both ends (plus output_padding at the high end).
    lo = tuple(d * (k - 1) - p for d, k, p in zip(dil, w._shape[1:-1], pad))
    hi = tuple(a + e for a, e in zip(lo, extra))
    return _convolution(op, x, w, (1,) * nd, lo, hi, dil, stride, groups, True, st)


def conv_transpose1d(input, weight, /, stride: int = 1, padding: int = 0, dilation: int = 1,
                     output_padding: int = 0, groups: int = 1, *, stream=None) -> array:
    """1D transposed convolution over an input with several channels.

    Args:
        input (array): input of shape ``(N, L, C_in)`` (an input with 2 or 3 spatial axes, as in MLX, takes the
            same stride, padding, dilation and output padding along each).
        weight (array): weight of shape ``(C_out, K, C_in / groups)``.
        stride (int): kernel stride. Default: ``1``.
        padding (int): input padding. Default: ``0``.
        dilation (int): kernel dilation. Default: ``1``.
        output_padding (int): extra length at the output's high end. Default: ``0``.
        groups (int): input feature groups. Default: ``1``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the convolved array, ``(N, (L - 1) * stride - 2 * padding + dilation * (K - 1) + 1 +
        output_padding, C_out)``.
    """
    return _conv_transpose_nd("conv_transpose1d", None, input, weight, stride, padding, dilation, output_padding,
                              groups, stream)


def conv_transpose2d(input, weight, /, stride=1, padding=0, dilation=1, output_padding=0, groups: int = 1, *,
                     stream=None) -> array:
    """2D transposed convolution over an input with several channels.

    Args:
        input (array): input of shape ``(N, H, W, C_in)``.
        weight (array): weight of shape ``(C_out, KH, KW, C_in / groups)``.
        stride (int | tuple[int, int]): kernel strides; one int for both axes. Default: ``1``.
        padding (int | tuple[int, int]): symmetric input padding. Default: ``0``.
        dilation (int | tuple[int, int]): kernel dilation. Default: ``1``.
        output_padding (int | tuple[int, int]): extra size at the output's high ends. Default: ``0``.
        groups (int): input feature groups. Default: ``1``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the convolved array, ``(N, H_out, W_out, C_out)``.
    """
    return _conv_transpose_nd("conv_transpose2d", 2, input, weight, stride, padding, dilation, output_padding,
                              groups, stream)


def conv_transpose3d(input, weight, /, stride=1, padding=0, dilation=1, output_padding=0, groups: int = 1, *,
                     stream=None) -> array:
    """3D transposed convolution over an input with several channels.

    Args:
        input (array): input of shape ``(N, D, H, W, C_in)``.
        weight (array): weight of shape ``(C_out, KD, KH, KW, C_in / groups)``.
        stride (int | tuple[int, int, int]): kernel strides; one int for all axes. Default: ``1``.
        padding (int | tuple[int, int, int]): symmetric input padding. Default: ``0``.
        dilation (int | tuple[int, int, int]): kernel dilation. Default: ``1``.
        output_padding (int | tuple[int, int, int]): extra size at the output's high ends. Default: ``0``.
        groups (int): input feature groups (umx, unlike MLX, takes any). Default: ``1``.
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the convolved array, ``(N, D_out, H_out, W_out, C_out)``.
    """
    return _conv_transpose_nd("conv_transpose3d", 3, input, weight, stride, padding, dilation, output_padding,
                              groups, stream)


def convolve(a, v, /, mode: str = "full", *, stream=None) -> array:
    """The discrete convolution of 1D arrays. See ``numpy.convolve``.

    If ``v`` is longer than ``a``, they are swapped. The kernel is flipped, following the signal processing
    convention.

    Args:
        a (array): 1D input.
        v (array): 1D input.
        mode (str): ``'full'`` (length ``n + m - 1``, default), ``'same'`` (``max(n, m)``) or ``'valid'``
            (``max(n, m) - min(n, m) + 1``).
        stream (Stream | Device | DeviceType, optional): where the op runs.

    Returns:
        array: the convolved array.
    """
    x, w, st = _operands("convolve", a, v, stream)
    if x.ndim != 1 or w.ndim != 1 or not x.size or not w.size:
        raise ValueError(f"convolve: inputs must be non-empty and 1-d, got {describe(x, w)}")
    if mode not in ("full", "same", "valid"):
        raise ValueError(f"convolve: mode must be 'full', 'same' or 'valid', got {mode!r}")
    if w.size > x.size:
        x, w = w, x
    n, m = x.size, w.size
    # 'same' is the middle of 'full', its start (m - 1) // 2 into it, as numpy.convolve takes it
    lo, hi = {"full": (m - 1, m - 1), "same": (m - 1 - (m - 1) // 2, (m - 1) // 2), "valid": (0, 0)}[mode]
    y = _convolution("convolve", reshape_node(x, (1, n, 1), st), reshape_node(w, (1, m, 1), st), (1,), (lo,),
                     (hi,), (1,), (1,), 1, True, st)
    return reshape_node(y, (y._shape[1],), st)
