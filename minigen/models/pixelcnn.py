r"""PixelCNN and Gated PixelCNN: the conditionals of Eq. AR-1 computed by masked convolutions (Eq. AR-2, AR-5).

A convolution sees a whole neighbourhood; masking its kernel hides every tap
at or after the current pixel in raster order, so stacking masked layers
keeps the output at pixel i a function of pixels j < i only (Eq. AR-2):

* **mask A** (first layer) also hides the centre tap — the pixel being predicted;
* **mask B** (every later layer) keeps it: the feature at i already depends
  only on pixels before i.

For C > 1 image channels the centre tap is split by channel groups (R, G, B):
under mask A channel group g sees groups < g of the same pixel, under mask B
groups ≤ g — so within a pixel, channels are predicted in order.

Plain PixelCNN's stacked 3×3 masks have a **blind spot**: pixels above and
to the right never reach the output. The Gated PixelCNN (Eq. AR-5) removes
it by splitting the network into a *vertical* stack (everything above) and
a *horizontal* stack (the current row, to the left), and swaps ReLU for a
gated unit :math:`\tanh(W_f * x)\odot\sigma(W_g * x)`.

**Row windows.** Every layer here can also run on a window of image rows
``[top, r]`` (``forward_rows``): a layer that reaches ``up`` rows above its
output returns the rows ``[top + up, r]`` (or ``[0, r]`` when ``top = 0``, where
the true zero padding starts). Row r of the network output needs only
``reach`` rows above it, so the sampler recomputes a band of ``reach + 1`` rows
per pixel instead of the whole image — and the full forward pass is the
same code with ``top = 0`` over all rows.
"""
from __future__ import annotations

import numpy as np

from .. import nn, ops
from ..autograd import Tensor
from .autoregressive import AutoregressiveModel, pixel_likelihood

__all__ = ["causal_mask", "MaskedConv2d", "PixelCNN", "GatedPixelCNN", "down_shift", "crop_rows"]


def causal_mask(out_channels: int, in_channels: int, kernel_size, centre, mask_type: str | None,
                image_channels: int = 1) -> np.ndarray:
    """The 0/1 mask of a causal kernel (Eq. AR-2): taps after ``centre`` in raster order are 0.

    ``mask_type`` 'A' also hides the centre tap from channel groups ≥ the output's,
    'B' from groups > the output's; ``None`` masks nothing (the vertical stack,
    made causal by a shift instead).
    """
    kh, kw = kernel_size
    ci, cj = centre
    mask = np.ones((out_channels, in_channels, kh, kw), dtype=np.float32)
    if mask_type is None:
        return mask
    if mask_type not in ("A", "B"):
        raise ValueError(f"causal_mask: mask_type must be 'A', 'B' or None, got {mask_type!r}")
    for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
        if channels % image_channels:
            raise ValueError(f"causal_mask: {name} ({channels}) must be a multiple of image_channels "
                             f"({image_channels}) so that each channel group has its own features")
    # BEGIN SOLUTION 2.1
    mask[:, :, ci, cj + 1:] = 0          # right of the centre, same row
    mask[:, :, ci + 1:, :] = 0           # rows below
    group_out = np.arange(out_channels) // (out_channels // image_channels)
    group_in = np.arange(in_channels) // (in_channels // image_channels)
    sees = group_in[None, :] < group_out[:, None] if mask_type == "A" else group_in[None, :] <= group_out[:, None]
    mask[:, :, ci, cj] = sees
    # END SOLUTION
    return mask


def crop_rows(x: Tensor, top: int, new_top: int) -> Tensor:
    """The rows ``[new_top, …)`` of a window that starts at image row ``top``."""
    return x if new_top == top else x[:, :, new_top - top:]


def down_shift(x: Tensor, top: int):
    """Move a feature map one row down (row r gets row r-1; row 0 gets zeros): the vertical
    stack then sees only rows strictly above. Returns ``(shifted, its top row)``."""
    if top == 0:
        return ops.pad(x, (0, 0, 1, 0))[:, :, :-1], 0
    return x[:, :, :-1], top + 1


class MaskedConv2d(nn.Conv2d):
    """A convolution whose kernel is multiplied by a fixed causal mask (Eq. AR-2).

    ``centre`` (default: the middle tap) is the tap aligned with the output
    pixel; the input is zero-padded so that the output has the input's size.
    ``up`` (= centre row) is how many rows above the output the kernel reads.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, mask_type: str | None = "B",
                 image_channels: int = 1, centre=None, bias: bool = True):
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)
        kh, kw = self.kernel_size
        self.centre = (kh // 2, kw // 2) if centre is None else tuple(int(c) for c in centre)
        if not (0 <= self.centre[0] < kh and 0 <= self.centre[1] < kw):
            raise ValueError(f"MaskedConv2d: centre {self.centre} lies outside the {kh}x{kw} kernel")
        self.mask_type = mask_type
        self.register_buffer("mask", ops.tensor(causal_mask(out_channels, in_channels, (kh, kw), self.centre,
                                                            mask_type, image_channels)), persistent=False)
        self.up = self.centre[0]
        # Masks A and B zero every row below the centre: those taps are skipped, not multiplied by 0
        # (a 3x3 mask-B kernel runs as 2x3, a 7x7 mask A as 4x7: a third and 3/7 fewer products).
        self.rows = kh if mask_type is None else self.centre[0] + 1

    def forward_rows(self, x: Tensor, top: int):
        """Convolve a window of rows starting at image row ``top``; returns ``(y, y's top row)``."""
        kh, kw = self.kernel_size
        ci, cj = self.centre
        pad_top = ci if top == 0 else 0       # zeros above row 0 only: elsewhere the real rows are cut off
        pads = (cj, kw - 1 - cj, pad_top, self.rows - 1 - ci)   # (left, right, top, bottom)
        weight = self.weight * self.mask if self.rows == kh else \
            self.weight[:, :, :self.rows] * self.mask[:, :, :self.rows]
        if pads[0] == pads[1] and pads[2] == pads[3]:
            y = ops.conv2d(x, weight, self.bias, padding=(pads[2], pads[0]))
        else:
            y = ops.conv2d(ops.pad(x, pads), weight, self.bias)
        return y, top + ci - pad_top

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_rows(x, 0)[0]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mask={self.mask_type}, centre={self.centre}"


def _pointwise(in_channels, out_channels, image_channels):
    """A 1×1 convolution that keeps channel groups causal (mask B on its only tap)."""
    return MaskedConv2d(in_channels, out_channels, 1, "B", image_channels)


class _ResidualBlock(nn.Module):
    """van den Oord et al. (2016a) Fig. 5: ReLU → 1×1 (h → h/2) → ReLU → k×k mask B → ReLU → 1×1 (→ h), plus x."""

    def __init__(self, channels: int, kernel_size: int, image_channels: int):
        super().__init__()
        half = channels // 2
        self.reduce = _pointwise(channels, half, image_channels)
        self.conv = MaskedConv2d(half, half, kernel_size, "B", image_channels)
        self.expand = _pointwise(half, channels, image_channels)

    def forward_rows(self, x: Tensor, top: int):
        h = self.reduce(ops.relu(x))
        h, new_top = self.conv.forward_rows(ops.relu(h), top)
        return crop_rows(x, top, new_top) + self.expand(ops.relu(h)), new_top


class _PixelNet(AutoregressiveModel):
    """Shared plumbing of the convolutional models: input scaling, output reshaping, row windows."""

    def _setup(self, image_shape, likelihood, components):
        shape = tuple(int(s) for s in image_shape)
        if len(shape) != 3 or any(s <= 0 for s in shape):
            raise ValueError(f"{type(self).__name__}: image_shape must be (C, H, W), got {image_shape!r}")
        self.image_shape = shape
        self.likelihood = pixel_likelihood(likelihood, components)
        self.likelihood_name = likelihood
        return shape[0], shape[0] * self.likelihood.params

    def _params(self, out: Tensor) -> Tensor:
        b, _, h, w = out.shape
        return out.reshape(b, self.image_shape[0], self.likelihood.params, h, w)

    def forward(self, x: Tensor, labels=None) -> Tensor:
        """Parameters (B, C, P, H, W) of every conditional :math:`p(x_i\\mid x_{<i})`, in one pass."""
        return self.forward_rows(x, 0, labels)[0]


class PixelCNN(_PixelNet):
    """PixelCNN (van den Oord et al., 2016a), Eq. AR-2.

    A k×k mask-A convolution, ``blocks`` residual blocks of k×k mask-B
    convolutions, and a head of two 1×1 layers giving each pixel's likelihood
    parameters: Bernoulli logits for binary images, 256 logits (or a logistic
    mixture) for grey levels.
    """

    def __init__(self, image_shape=(1, 28, 28), channels: int = 64, blocks: int = 7, kernel_size: int = 3,
                 first_kernel_size: int = 7, head_channels: int = 64, likelihood: str = "bernoulli",
                 components: int = 5):
        super().__init__()
        c, out = self._setup(image_shape, likelihood, components)
        if channels % (2 * c) or head_channels % c:
            raise ValueError(f"PixelCNN: channels ({channels}) must be a multiple of 2 x image channels ({c}), "
                             f"head_channels ({head_channels}) a multiple of {c}")
        self.conv_in = MaskedConv2d(c, channels, first_kernel_size, "A", c)
        self.blocks = nn.ModuleList([_ResidualBlock(channels, kernel_size, c) for _ in range(blocks)])
        self.head1 = _pointwise(channels, head_channels, c)
        self.head2 = _pointwise(head_channels, out, c)
        self.reach = self.conv_in.up + sum(b.conv.up for b in self.blocks)

    def forward_rows(self, x: Tensor, top: int, labels=None):
        h, top = self.conv_in.forward_rows(2 * x - 1, top)
        for block in self.blocks:
            h, top = block.forward_rows(h, top)
        out = self.head2(ops.relu(self.head1(ops.relu(h))))
        return self._params(out), top


class _GatedLayer(nn.Module):
    """One layer of the Gated PixelCNN (van den Oord et al., 2016b, Fig. 2), Eq. AR-5.

    vertical:    v' = tanh(f) ⊙ σ(g),  [f, g] = V * v               (a (k/2+1)×k kernel: rows ≤ r)
    horizontal:  h' = h + W₁ₓ₁ (tanh(f) ⊙ σ(g)),  [f, g] = H * h + W₁ₓ₁ shift_down(V * v)
    The horizontal kernel is 1×(k/2+1) ending at the current pixel (mask A in the
    first layer); the vertical features reach it only after the one-row shift,
    so together they see every earlier pixel — no blind spot. A class
    embedding adds a per-channel bias to f and g (the conditional model).
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int, first: bool, image_channels: int,
                 num_classes: int = 0):
        super().__init__()
        k = kernel_size // 2
        c2 = 2 * channels
        self.first, self.groups = first, image_channels
        self.vertical = MaskedConv2d(in_channels, c2, (k + 1, kernel_size), None, image_channels, centre=(k, k))
        # the shifted vertical features lie strictly above the current row: past for every channel
        self.vertical_to_horizontal = nn.Conv2d(c2, c2, 1)
        self.horizontal = MaskedConv2d(in_channels, c2, (1, k + 1), "A" if first else "B", image_channels,
                                       centre=(0, k))
        self.horizontal_out = _pointwise(channels, channels, image_channels)
        self.condition = nn.Linear(num_classes, 2 * c2, bias=False) if num_classes else None

    def gate(self, x: Tensor) -> Tensor:
        """Eq. AR-5: :math:`\\tanh(W_f * x)\\odot\\sigma(W_g * x)`; f and g are the two halves of
        each channel group's features, so the gate never mixes colour channels."""
        b, n, h, w = x.shape
        fg = x.reshape(b, self.groups, 2, n // (2 * self.groups), h, w)
        # BEGIN SOLUTION 2.2
        return (ops.tanh(fg[:, :, 0]) * ops.sigmoid(fg[:, :, 1])).reshape(b, n // 2, h, w)
        # END SOLUTION

    def forward_rows(self, v: Tensor, h: Tensor, top_v: int, top_h: int, cond=None):
        v_pre, top_v2 = self.vertical.forward_rows(v, top_v)
        shifted, top_s = down_shift(v_pre, top_v2)
        h_pre, top_h2 = self.horizontal.forward_rows(h, top_h)
        top = max(top_s, top_h2)
        h_pre = crop_rows(h_pre, top_h2, top) + self.vertical_to_horizontal(crop_rows(shifted, top_s, top))
        if cond is not None:
            bias_v, bias_h = self.condition(cond).chunk(2, dim=1)
            v_pre = v_pre + bias_v[:, :, None, None]
            h_pre = h_pre + bias_h[:, :, None, None]
        h_out = self.horizontal_out(self.gate(h_pre))
        if not self.first:
            h_out = h_out + crop_rows(h, top_h, top)
        return self.gate(v_pre), h_out, top_v2, top


class GatedPixelCNN(_PixelNet):
    """Gated PixelCNN (van den Oord et al., 2016b), Eq. AR-5: vertical + horizontal stacks, gated units,
    no blind spot; class-conditional when ``num_classes > 0``.

    The first layer uses a ``first_kernel_size`` kernel (7, as the paper),
    the other ``layers - 1`` layers k×k; a two-layer 1×1 head reads the
    horizontal stack.
    """

    def __init__(self, image_shape=(1, 28, 28), channels: int = 64, layers: int = 8, kernel_size: int = 3,
                 first_kernel_size: int = 7, head_channels: int = 64, likelihood: str = "bernoulli",
                 components: int = 5, num_classes: int = 0):
        super().__init__()
        c, out = self._setup(image_shape, likelihood, components)
        if channels % c or head_channels % c:
            raise ValueError(f"GatedPixelCNN: channels ({channels}) and head_channels ({head_channels}) must be "
                             f"multiples of the image channels ({c})")
        if layers < 1:
            raise ValueError(f"GatedPixelCNN: layers must be >= 1, got {layers}")
        self.num_classes = int(num_classes)
        self.layers = nn.ModuleList([
            _GatedLayer(c if i == 0 else channels, channels, first_kernel_size if i == 0 else kernel_size,
                        first=i == 0, image_channels=c, num_classes=self.num_classes)
            for i in range(layers)])
        self.head1 = _pointwise(channels, head_channels, c)
        self.head2 = _pointwise(head_channels, out, c)
        # the horizontal output of the last layer reads the vertical stack of every layer, shifted once
        self.reach = sum(layer.vertical.up for layer in self.layers) + 1

    def forward_rows(self, x: Tensor, top: int, labels=None):
        cond = None
        if self.num_classes:
            cond = ops.one_hot(ops.tensor(labels, device=x.device), self.num_classes).to(dtype=x.dtype)
        v = h = 2 * x - 1
        top_v = top_h = top
        for layer in self.layers:
            v, h, top_v, top_h = layer.forward_rows(v, h, top_v, top_h, cond)
        out = self.head2(ops.relu(self.head1(ops.relu(h))))
        return self._params(out), top_h
