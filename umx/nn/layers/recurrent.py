"""Recurrent layers: ``RNN`` (Elman), ``GRU`` and ``LSTM``, over inputs ``[N, L, D]`` or ``[L, D]``."""

from __future__ import annotations

import math
from collections.abc import Callable

import umx as mx
from umx.nn.layers.base import Module


def _uniform(scale: float, *shape: int) -> mx.array:
    return mx.random.uniform(low=-scale, high=scale, shape=shape)


def _project(x, weight, bias):
    return x @ weight.T if bias is None else mx.addmm(bias, x, weight.T)


class RNN(Module):
    r"""An Elman recurrent layer: :math:`h_{t + 1} = \sigma(W_{xh} x_t + W_{hh} h_t + b)`.

    Weights are initialized from :math:`\mathcal{U}(-k, k)`, :math:`k = 1/\sqrt{\text{hidden\_size}}`.

    Args:
        input_size (int): the size of the input features.
        hidden_size (int): the size of the hidden state.
        bias (bool): learn a bias :math:`b`. Default: ``True``.
        nonlinearity (Callable, optional): :math:`\sigma`; default ``mx.tanh``.

    Call ``layer(x, hidden=None)`` with ``x`` of shape ``[N, L, D]`` or ``[L, D]`` and an initial hidden state
    of shape ``[N, H]`` or ``[H]``; it returns the hidden states of every step, ``[N, L, H]`` or ``[L, H]``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: Callable | None = None):
        super().__init__()
        self.nonlinearity = nonlinearity or mx.tanh
        if not callable(self.nonlinearity):
            raise ValueError(f"Nonlinearity must be callable. Current value: {nonlinearity}.")
        scale = 1.0 / math.sqrt(hidden_size)
        self.hidden_size = hidden_size
        self.Wxh = _uniform(scale, hidden_size, input_size)
        self.Whh = _uniform(scale, hidden_size, hidden_size)
        if bias:
            self.bias = _uniform(scale, hidden_size)

    def _extra_repr(self) -> str:
        return (f"input_dims={self.Wxh.shape[1]}, hidden_size={self.hidden_size}, "
                f"nonlinearity={self.nonlinearity}, bias={'bias' in self}")

    def __call__(self, x, hidden=None):
        x = _project(x, self.Wxh, self.get("bias"))
        states = []
        for t in range(x.shape[-2]):
            h = x[..., t, :]
            if hidden is not None:
                h = mx.addmm(h, hidden, self.Whh.T)
            hidden = self.nonlinearity(h)
            states.append(hidden)
        return mx.stack(states, axis=-2)


class GRU(Module):
    r"""A gated recurrent unit layer:

    .. math::
        r_t = \sigma(W_{xr} x_t + W_{hr} h_t + b_r), \quad z_t = \sigma(W_{xz} x_t + W_{hz} h_t + b_z) \\
        n_t = \tanh(W_{xn} x_t + b_n + r_t \odot (W_{hn} h_t + b_{hn})), \quad
        h_{t + 1} = (1 - z_t) \odot n_t + z_t \odot h_t

    The ``r``, ``z`` and ``n`` weights are stacked in ``Wx`` (``[3H, D]``), ``Wh`` (``[3H, H]``) and ``b``;
    ``bhn`` is :math:`b_{hn}`. A missing initial hidden state is zeros.

    Args:
        input_size (int): the size of the input features.
        hidden_size (int): the size of the hidden state.
        bias (bool): learn the biases. Default: ``True``.

    Call ``layer(x, hidden=None)`` as :class:`RNN`.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        self.hidden_size = hidden_size
        scale = 1.0 / math.sqrt(hidden_size)
        self.Wx = _uniform(scale, 3 * hidden_size, input_size)
        self.Wh = _uniform(scale, 3 * hidden_size, hidden_size)
        if bias:
            self.b = _uniform(scale, 3 * hidden_size)
            self.bhn = _uniform(scale, hidden_size)

    def _extra_repr(self) -> str:
        return f"input_dims={self.Wx.shape[1]}, hidden_size={self.hidden_size}, bias={'b' in self}"

    def __call__(self, x, hidden=None):
        h_size = self.hidden_size
        x = _project(x, self.Wx, self.get("b"))
        x_rz, x_n = x[..., :-h_size], x[..., -h_size:]
        if hidden is None:
            hidden = mx.zeros((*x.shape[:-2], h_size), x.dtype)
        states = []
        for t in range(x.shape[-2]):
            h_proj = hidden @ self.Wh.T
            h_rz, h_n = h_proj[..., :-h_size], h_proj[..., -h_size:]
            if "bhn" in self:
                h_n = h_n + self.bhn
            r, z = mx.split(mx.sigmoid(x_rz[..., t, :] + h_rz), 2, axis=-1)
            n = mx.tanh(x_n[..., t, :] + r * h_n)
            hidden = (1 - z) * n + z * hidden
            states.append(hidden)
        return mx.stack(states, axis=-2)


class LSTM(Module):
    r"""A long short-term memory layer:

    .. math::
        i_t, f_t, o_t = \sigma(W_{x\cdot} x_t + W_{h\cdot} h_t + b_\cdot), \quad
        g_t = \tanh(W_{xg} x_t + W_{hg} h_t + b_g) \\
        c_{t + 1} = f_t \odot c_t + i_t \odot g_t, \quad h_{t + 1} = o_t \odot \tanh(c_{t + 1})

    The ``i``, ``f``, ``g`` and ``o`` weights are stacked in ``Wx`` (``[4H, D]``), ``Wh`` (``[4H, H]``) and
    ``bias``.

    Args:
        input_size (int): the size of the input features.
        hidden_size (int): the size of the hidden and cell states.
        bias (bool): learn the bias. Default: ``True``.

    Call ``layer(x, hidden=None, cell=None)``; it returns the hidden and cell states of every step, each of
    shape ``[N, L, H]`` or ``[L, H]``.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        self.hidden_size = hidden_size
        scale = 1.0 / math.sqrt(hidden_size)
        self.Wx = _uniform(scale, 4 * hidden_size, input_size)
        self.Wh = _uniform(scale, 4 * hidden_size, hidden_size)
        if bias:
            self.bias = _uniform(scale, 4 * hidden_size)

    def _extra_repr(self) -> str:
        return f"input_dims={self.Wx.shape[1]}, hidden_size={self.hidden_size}, bias={'bias' in self}"

    def __call__(self, x, hidden=None, cell=None):
        x = _project(x, self.Wx, self.get("bias"))
        hiddens, cells = [], []
        for t in range(x.shape[-2]):
            gates = x[..., t, :]
            if hidden is not None:
                gates = mx.addmm(gates, hidden, self.Wh.T)
            i, f, g, o = mx.split(gates, 4, axis=-1)
            i, f, g, o = mx.sigmoid(i), mx.sigmoid(f), mx.tanh(g), mx.sigmoid(o)
            cell = i * g if cell is None else f * cell + i * g
            hidden = o * mx.tanh(cell)
            hiddens.append(hidden)
            cells.append(cell)
        return mx.stack(hiddens, axis=-2), mx.stack(cells, axis=-2)
