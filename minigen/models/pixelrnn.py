r"""PixelRNN's Row LSTM (van den Oord et al., 2016a), Eq. AR-3: an LSTM that runs down the image, one row per step.

Each layer keeps a hidden state :math:`h_r` and cell :math:`c_r` for a whole
row. Its four gates combine two convolutions:

.. math::
    [\mathbf o, \mathbf f, \mathbf i, \mathbf g] &= \sigma / \tanh\big(K^{ss} \circledast h_{r-1}
                                                    + K^{is} \circledast x_r\big) \\
    c_r &= \mathbf f \odot c_{r-1} + \mathbf i \odot \mathbf g, \qquad h_r = \mathbf o \odot \tanh(c_r)

* **input-to-state** :math:`K^{is}`: a 1×k convolution along row r, masked
  (mask B) so column c reads only columns ≤ c — computed for all rows at once;
* **state-to-state** :math:`K^{ss}`: a 1×k convolution of the *previous* row's
  state — the recurrence, so the state of row r reaches the rows above it
  through a triangle that widens by k/2 columns per row.

The network: a k×k mask-A convolution (as PixelCNN, it hides the current
pixel), Row LSTM layers with residual connections, a 1×1 head. Sampling is
the shared sequential loop of Eq. AR-4 (one full pass per pixel).
"""
from __future__ import annotations

from .. import nn, ops
from ..autograd import Tensor
from ..nn.recurrent import lstm_update
from .pixelcnn import MaskedConv2d, _PixelNet, _pointwise

__all__ = ["RowLSTM", "PixelRNN"]


class RowLSTM(nn.Module):
    """One Row LSTM layer: ``(B, C_in, H, W) -> (B, hidden, H, W)``, scanning rows top to bottom (Eq. AR-3)."""

    def __init__(self, in_channels: int, hidden: int, kernel_size: int = 3, image_channels: int = 1):
        super().__init__()
        k = kernel_size // 2
        self.hidden, self.groups = int(hidden), int(image_channels)
        self.input_to_state = MaskedConv2d(in_channels, 4 * hidden, (1, kernel_size), "B", image_channels,
                                           centre=(0, k))
        self.state_to_state = nn.Conv2d(hidden, 4 * hidden, (1, kernel_size), padding=(0, k))

    def step(self, x_gates: Tensor, h: Tensor, c: Tensor):
        """Row r from row r-1: ``x_gates`` (B, 4·hidden, 1, W) is :math:`K^{is}\\circledast x_r`."""
        return lstm_update(x_gates + self.state_to_state(h), c, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, rows, w = x.shape
        x_gates = self.input_to_state(x)                         # every row's input term, in one pass
        # the mask orders outputs by colour group, then gate; the cell wants gate, then group
        g = self.groups
        x_gates = x_gates.reshape(b, g, 4, self.hidden // g, rows, w).transpose(1, 2).reshape(b, -1, rows, w)
        h = c = ops.zeros(b, self.hidden, 1, w, dtype=x.dtype, device=x.device)
        states = []
        for r in range(rows):
            h, c = self.step(x_gates[:, :, r:r + 1], h, c)
            states.append(h)
        return ops.cat(states, dim=2)


class PixelRNN(_PixelNet):
    """A small Row-LSTM PixelRNN: k×k mask-A convolution → ``layers`` Row LSTMs (residual) → 1×1 head."""

    def __init__(self, image_shape=(1, 28, 28), channels: int = 32, layers: int = 2, kernel_size: int = 3,
                 first_kernel_size: int = 7, head_channels: int = 64, likelihood: str = "bernoulli",
                 components: int = 5):
        super().__init__()
        c, out = self._setup(image_shape, likelihood, components)
        if channels % c or head_channels % c:
            raise ValueError(f"PixelRNN: channels ({channels}) and head_channels ({head_channels}) must be "
                             f"multiples of the image channels ({c})")
        self.conv_in = MaskedConv2d(c, channels, first_kernel_size, "A", c)
        self.rnns = nn.ModuleList([RowLSTM(channels, channels, kernel_size, c) for _ in range(layers)])
        self.head1 = _pointwise(channels, head_channels, c)
        self.head2 = _pointwise(head_channels, out, c)

    def forward(self, x: Tensor, labels=None) -> Tensor:
        h = self.conv_in(2 * x - 1)
        for rnn in self.rnns:
            h = h + rnn(h)
        return self._params(self.head2(ops.relu(self.head1(ops.relu(h)))))
