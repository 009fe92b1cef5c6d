"""The rules of ``Convolution``: derivatives (``vjp``, ``jvp``) and batching (``vmap``).

A convolution is linear in each input, and both transposes are convolutions again (so gradients of any order
are convolution nodes). Per spatial axis, with stride ``s``, kernel dilation ``d``, input dilation ``e``, low
padding ``p``, kernel size ``K``, input length ``L`` and output length ``M``:

- input gradient: the cotangent dilated by ``s``, convolved with the kernel flipped (channel axes swapped per
  group), stride ``e``, kernel dilation ``d``, padding ``d * (K - 1) - p`` low and ``(L - 1) * e + p - (M - 1) * s``
  high (either may be negative: a crop);
- weight gradient: the input dilated by ``e`` (batch and channels swapped) convolved with the cotangent as the
  kernel (likewise swapped), stride ``d``, kernel dilation ``s``, padding ``p`` low and
  ``(M - 1) * s + (K - 1) * d - (L - 1) * e - p`` high, then flipped back where the forward kernel was flipped.
  A depthwise kernel's (one input channel per group, 1 or 2 spatial axes) takes the batch as an outer spatial
  axis instead, which the cotangent spans whole: no operand is transposed.
"""

from __future__ import annotations

from .. import ops as m
from ..primitives import Convolution
from ._registry import rules
from ._rules import multilinear_jvp
from .autodiff import needs_gradient


def _conv(prim: Convolution, x, w, groups: int):
    """``prim``'s convolution of ``x`` and ``w`` with ``groups`` groups."""
    return m.conv_general(x, w, stride=prim.stride, padding=(prim.padding_lo, prim.padding_hi),
                          kernel_dilation=prim.kernel_dilation, input_dilation=prim.input_dilation, groups=groups,
                          flip=prim.flip)


def _vjp(self, primals, cotangents, outputs):
    x, w = primals
    c = cotangents[0]
    nd = x.ndim - 2
    g = self.groups
    n, spatial, ch = x.shape[0], x.shape[1:-1], x.shape[-1]
    o, kernel, cg = w.shape[0], w.shape[1:-1], w.shape[-1]
    og = o // g
    out = c.shape[1:-1]
    axes = range(nd)
    s, d, e, p = self.stride, self.kernel_dilation, self.input_dilation, self.padding_lo
    dx = dw = None
    if needs_gradient(x):
        # (O, *K, Cg) -> (C, *K, Og): per group, output and input channels swap (one group: one transpose, the
        # very view the reshapes around it would give)
        if g == 1:
            w_t = m.transpose(w, (nd + 1, *range(1, nd + 1), 0))
        else:
            w_t = m.reshape(m.transpose(m.reshape(w, (g, og, *kernel, cg)), (0, nd + 2, *range(2, nd + 2), 1)),
                            (ch, *kernel, og))
        lo = tuple(d[a] * (kernel[a] - 1) - p[a] for a in axes)
        hi = tuple((spatial[a] - 1) * e[a] + p[a] - (out[a] - 1) * s[a] for a in axes)
        dx = m.conv_general(c, w_t, stride=e, padding=(lo, hi), kernel_dilation=d, input_dilation=s, groups=g,
                            flip=not self.flip)
    if needs_gradient(w):
        hi_w = tuple((out[a] - 1) * s[a] + (kernel[a] - 1) * d[a] - (spatial[a] - 1) * e[a] - p[a] for a in axes)
        if g > 1 and cg == 1 and nd < 3:
            # depthwise: the batch becomes an outer spatial axis, which the kernel (the cotangent) spans whole, so
            # neither operand is transposed, each keeping its channels last: (1, N, *L, C) and (O, N, *M, 1)
            dw = m.conv_general(m.reshape(x, (1, n, *spatial, ch)),
                                m.expand_dims(m.transpose(c, (nd + 1, *range(nd + 1))), -1),
                                stride=(1, *d), padding=((0, *p), (0, *hi_w)), kernel_dilation=(1, *s),
                                input_dilation=(1, *e), groups=g)[0]  # (1, *K, O)
        else:
            # (N, *L, C) -> (Cg, *L, G * N) and (N, *M, O) -> (O, *M, N): the batch becomes the contracted channel
            # axis
            if g == 1:
                x_t = m.transpose(x, (nd + 1, *range(1, nd + 1), 0))
            else:
                x_t = m.reshape(m.transpose(m.reshape(x, (n, *spatial, g, cg)),
                                            (nd + 2, *range(1, nd + 1), nd + 1, 0)), (cg, *spatial, g * n))
            c_t = m.transpose(c, (nd + 1, *range(1, nd + 1), 0))
            dw = m.conv_general(x_t, c_t, stride=d, padding=(p, hi_w), kernel_dilation=s, input_dilation=e,
                                groups=g)  # (Cg, *K, O)
        dw = m.transpose(dw, (nd + 1, *range(1, nd + 1), 0))
        if self.flip:
            dw = dw[(slice(None),) + (slice(None, None, -1),) * nd]
    return [dx, dw]


def _vmap(self, inputs, axes, outputs):
    """The batch folds into the input's batch axis (weight unbatched), into each group's output channels (input
    unbatched), or into the groups (both batched)."""
    x, w = inputs
    g = self.groups
    if axes[1] is None:
        b, n = x.shape[:2]
        y = _conv(self, m.reshape(x, (b * n, *x.shape[2:])), w, g)
        return [m.reshape(y, (b, n, *y.shape[1:]))]
    b, o = w.shape[:2]
    og = o // g
    if axes[0] is None:
        # output channels ordered (group, batch, channel): each group's block holds every batch's filters
        w_b = m.reshape(m.swapaxes(m.reshape(w, (b, g, og, *w.shape[2:])), 0, 1), (g * b * og, *w.shape[2:]))
        y = _conv(self, x, w_b, g)
        y = m.moveaxis(m.reshape(y, (*y.shape[:-1], g, b, og)), -2, 0)
        return [m.reshape(y, (*y.shape[:-2], o))]
    x_b = m.moveaxis(x, 0, -2)
    x_b = m.reshape(x_b, (*x_b.shape[:-2], b * x_b.shape[-1]))
    y = _conv(self, x_b, m.reshape(w, (b * o, *w.shape[2:])), b * g)
    return [m.moveaxis(m.reshape(y, (*y.shape[:-1], b, o)), -2, 0)]


rules(Convolution, vjp=_vjp, jvp=multilinear_jvp, vmap=_vmap)
