"""Long short-term memory: LSTMCell (one step) and LSTM (a stack unrolled over time).

One step, with gates stacked in PyTorch's order ``i, f, g, o`` along the rows of
``weight_ih (4H, input_size)`` and ``weight_hh (4H, H)``:

.. math::
    (i, f, g, o) &= x W_{ih}^\\top + b_{ih} + h W_{hh}^\\top + b_{hh} \\\\
    c' &= \\sigma(f) \\odot c + \\sigma(i) \\odot \\tanh(g) \\\\
    h' &= \\sigma(o) \\odot \\tanh(c')

Every weight and bias starts as :math:`U(-1/\\sqrt H, 1/\\sqrt H)`. Backpropagation
through time is simply the engine differentiating the unrolled loop.
"""
from __future__ import annotations

import math

from .. import ops
from ..autograd import Tensor
from . import init
from .linear import _check_input
from ..ops._util import check_int
from .module import Module, _new_parameter


def lstm_update(gates, c, dim: int = -1):
    """The cell update from all four gate pre-activations, stacked ``i, f, g, o`` along ``dim``.

    Returns ``(h', c')``. Shared by :func:`lstm_step` (gates along the last dim)
    and PixelRNN's Row LSTM (gates along the channels of a feature map).
    """
    i, f, g, o = gates.chunk(4, dim=dim)
    c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
    return ops.sigmoid(o) * ops.tanh(c), c


def lstm_step(x_gates, h, c, weight_hh, bias_hh=None):
    """One LSTM update from the input's gate pre-activations ``x W_ih^T + b_ih``.

    Returns ``(h', c')``. :class:`LSTM` computes ``x_gates`` for all time steps in
    one matrix product and calls this in the loop.
    """
    return lstm_update(x_gates + ops.linear(h, weight_hh, bias_hh), c)


def _check_state(name, arg, t, shape):
    if not isinstance(t, Tensor) or t.shape != tuple(shape):
        got = t.shape if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"{name}: {arg} must have shape {tuple(shape)}, got {got}")


class LSTMCell(Module):
    """A single LSTM step: ``forward(input, (h, c)) -> (h', c')`` — the cell of the
    Row LSTM in PixelRNN (Eq. AR-3):
    :math:`c' = \\sigma(f) \\odot c + \\sigma(i) \\odot \\tanh(g)`,
    :math:`h' = \\sigma(o) \\odot \\tanh(c')` (gates as in the module docstring).

    ``input`` is ``(N, input_size)`` or unbatched ``(input_size,)``; the state
    defaults to zeros.
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None):
        super().__init__()
        self.input_size = check_int("LSTMCell", "input_size", input_size, minimum=1)
        self.hidden_size = check_int("LSTMCell", "hidden_size", hidden_size, minimum=1)
        self.bias = bias
        kw = dict(device=device, dtype=dtype)
        self.weight_ih = _new_parameter(4 * hidden_size, input_size, **kw)
        self.weight_hh = _new_parameter(4 * hidden_size, hidden_size, **kw)
        if bias:
            self.bias_ih = _new_parameter(4 * hidden_size, **kw)
            self.bias_hh = _new_parameter(4 * hidden_size, **kw)
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw every weight and bias from :math:`U(-1/\\sqrt H, 1/\\sqrt H)`, H = ``hidden_size``."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def forward(self, input, hx=None):  # noqa: A002
        name = "LSTMCell"
        _check_input(name, input, ndim=(1, 2))
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input has {input.shape[-1]} features but input_size is "
                             f"{self.input_size} (input shape {input.shape})")
        unbatched = input.ndim == 1
        x = input.unsqueeze(0) if unbatched else input
        shape = (x.shape[0], self.hidden_size)
        if hx is None:
            h = c = ops.zeros(shape, dtype=x.dtype, device=x.device)
        else:
            h, c = hx
            if unbatched:
                h, c = (h.unsqueeze(0) if isinstance(h, Tensor) else h,
                        c.unsqueeze(0) if isinstance(c, Tensor) else c)
            _check_state(name, "h", h, shape)
            _check_state(name, "c", c, shape)
        h, c = lstm_step(ops.linear(x, self.weight_ih, self.bias_ih), h, c, self.weight_hh,
                         self.bias_hh)
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class LSTM(Module):
    """A stack of ``num_layers`` LSTMs unrolled over a sequence (PyTorch's ``nn.LSTM``).

    ``input`` is ``(L, N, input_size)`` (``(N, L, input_size)`` with ``batch_first``)
    or unbatched ``(L, input_size)``. Returns ``output, (h_n, c_n)``: ``output`` holds
    the last layer's ``h`` at every step (both directions concatenated when
    ``bidirectional``), ``h_n``/``c_n`` are ``(num_layers * D, N, H)``. ``dropout``
    is applied to the outputs of every layer but the last, in training.
    Parameters are named ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``,
    ``bias_hh_l{k}`` (suffix ``_reverse`` for the backward direction).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, device=None, dtype=None):
        super().__init__()
        for arg, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            check_int("LSTM", arg, value, minimum=1)
        if not 0 <= dropout <= 1:
            raise ValueError(f"LSTM: dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers, self.bias, self.batch_first = int(num_layers), bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        directions = 2 if bidirectional else 1
        kw = dict(device=device, dtype=dtype)
        for layer in range(num_layers):
            layer_in = input_size if layer == 0 else hidden_size * directions
            for suffix in ["", "_reverse"][:directions]:
                setattr(self, f"weight_ih_l{layer}{suffix}",
                        _new_parameter(4 * hidden_size, layer_in, **kw))
                setattr(self, f"weight_hh_l{layer}{suffix}",
                        _new_parameter(4 * hidden_size, hidden_size, **kw))
                if bias:
                    setattr(self, f"bias_ih_l{layer}{suffix}", _new_parameter(4 * hidden_size,
                                                                              **kw))
                    setattr(self, f"bias_hh_l{layer}{suffix}", _new_parameter(4 * hidden_size,
                                                                              **kw))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw every weight and bias from :math:`U(-1/\\sqrt H, 1/\\sqrt H)`, H = ``hidden_size``."""
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def _weights(self, layer, suffix):
        get = lambda kind: self._parameters.get(f"{kind}_l{layer}{suffix}")  # noqa: E731
        return get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")

    def forward(self, input, hx=None):  # noqa: A002
        name = "LSTM"
        _check_input(name, input, ndim=(2, 3))
        if input.shape[-1] != self.input_size:
            raise ValueError(f"{name}: input has {input.shape[-1]} features but input_size is "
                             f"{self.input_size} (input shape {input.shape})")
        unbatched = input.ndim == 2
        x = input.unsqueeze(1) if unbatched else (input.transpose(0, 1) if self.batch_first
                                                  else input)  # now (L, N, F)
        directions = 2 if self.bidirectional else 1
        state_shape = (self.num_layers * directions, x.shape[1], self.hidden_size)
        if hx is None:
            h0 = c0 = ops.zeros(state_shape, dtype=x.dtype, device=x.device)
        else:
            h0, c0 = hx
            if unbatched:
                h0, c0 = (t.unsqueeze(1) if isinstance(t, Tensor) else t for t in (h0, c0))
            _check_state(name, "h_0", h0, state_shape)
            _check_state(name, "c_0", c0, state_shape)

        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outputs = []
            for d, suffix in enumerate(["", "_reverse"][:directions]):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, suffix)
                x_gates = ops.linear(x, w_ih, b_ih)  # all time steps in one product
                h, c = h0[layer * directions + d], c0[layer * directions + d]
                steps = range(x.shape[0]) if d == 0 else reversed(range(x.shape[0]))
                hs = []
                for t in steps:
                    h, c = lstm_step(x_gates[t], h, c, w_hh, b_hh)
                    hs.append(h)
                outputs.append(ops.stack(hs if d == 0 else hs[::-1]))
                h_n.append(h)
                c_n.append(c)
            x = outputs[0] if directions == 1 else ops.cat(outputs, dim=2)
            if self.dropout and layer < self.num_layers - 1:
                x = ops.dropout(x, self.dropout, self.training)

        h_n, c_n = ops.stack(h_n), ops.stack(c_n)
        if unbatched:
            return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return (x.transpose(0, 1) if self.batch_first else x), (h_n, c_n)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s
