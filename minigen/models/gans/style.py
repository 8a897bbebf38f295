r"""AdaIN and a small StyleGAN (Eq. GAN-9, GAN-10).

The slide puts three normalisations side by side. All standardise a feature
map :math:`x` with a mean :math:`\mu(x)` and a deviation :math:`\sigma(x)` and then
re-scale it; they differ in *where the statistics come from* and *who sets
the scale*:

* BN — statistics over the batch and the pixels, per channel; learned :math:`\gamma,\beta`;
* IN — statistics over the pixels of one image, per channel; learned :math:`\gamma,\beta`;
* AdaIN (Huang & Belongie 2017) — IN's statistics, but the scale and shift are
  the *style's* own statistics: :math:`\mathrm{AdaIN}(x,y)=\sigma(y)\frac{x-\mu(x)}{\sigma(x)}+\mu(y)`.

StyleGAN (Karras et al. 2019) sets those per-channel scales and shifts from a
learned latent :math:`w` instead of from a style image: a **mapping network**
:math:`z\mapsto w`, a learned affine map "A" per layer turning :math:`w` into
:math:`(y_s, y_b)`, and per-pixel Gaussian **noise** broadcast to every channel
with a learned per-channel weight "B". The synthesis network starts from a
learned constant, so everything an image has comes through the styles and the
noise. Because every AdaIN *replaces* the channel statistics, noise added
before it changes the detail (where things are) but not the statistics the
style set — the test of Eq. GAN-10.
"""
from __future__ import annotations

import numpy as np

from ... import nn, ops
from ...autograd import Tensor

__all__ = ["channel_stats", "adain", "StyleMapping", "StyleBlock", "StyleGenerator"]

EPS = 1e-5


def channel_stats(x: Tensor, eps: float = EPS) -> tuple:
    r"""Per-image, per-channel :math:`\mu(x)` and :math:`\sigma(x)=\sqrt{\mathrm{Var}(x)+\epsilon}` over the
    spatial axes, shaped (N, C, 1, 1) for broadcasting."""
    if x.ndim != 4:
        raise ValueError(f"channel_stats: expected (N, C, H, W) feature maps, got shape {x.shape}")
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    return mean, ops.sqrt(var + eps)


def adain(x: Tensor, style_scale: Tensor, style_shift: Tensor | None = None, eps: float = EPS) -> Tensor:
    r"""Eq. GAN-9: :math:`\mathrm{AdaIN}(x,y)=\sigma(y)\,\frac{x-\mu(x)}{\sigma(x)}+\mu(y)`.

    Called as ``adain(x, y)`` with a style feature map ``y`` (N, C, H', W'), it takes
    :math:`\mu(y), \sigma(y)` from ``y``. Called as ``adain(x, y_s, y_b)`` with (N, C)
    scales and shifts, it is StyleGAN's form :math:`y_s\,\mathrm{IN}(x)+y_b`.
    """
    mean, std = channel_stats(x, eps)
    normalized = (x - mean) / std
    if style_shift is None:
        if style_scale.ndim != 4 or style_scale.shape[:2] != x.shape[:2]:
            raise ValueError(f"adain: the style map must be (N, C, H', W') with (N, C) = {tuple(x.shape[:2])}, "
                             f"got {style_scale.shape}")
        mu_y, sigma_y = channel_stats(style_scale, eps)
        return sigma_y * normalized + mu_y
    for name, t in (("style_scale", style_scale), ("style_shift", style_shift)):
        if t.shape != tuple(x.shape[:2]):
            raise ValueError(f"adain: {name} must be (N, C) = {tuple(x.shape[:2])}, got {t.shape}")
    n, c = x.shape[:2]
    return style_scale.reshape(n, c, 1, 1) * normalized + style_shift.reshape(n, c, 1, 1)


class StyleMapping(nn.Module):
    r"""The mapping network :math:`f: z\mapsto w`: normalise z, then ``layers`` × (Linear → LeakyReLU 0.2).

    He-initialised (std :math:`\sqrt{2/((1+0.2^2)\,\mathrm{fan_{in}})}`, zero biases) so that w keeps
    z's scale through the layers: with the default initialisation w shrinks ~3× per layer, every
    sample gets nearly the same style and the generator starts (and can stay) collapsed.
    """

    def __init__(self, latent_dim: int = 64, w_dim: int = 64, layers: int = 4):
        super().__init__()
        mods, width = [], latent_dim
        for _ in range(layers):
            linear = nn.Linear(width, w_dim)
            nn.init.normal_(linear.weight, 0.0, float(np.sqrt(2 / (1.04 * width))))
            nn.init.zeros_(linear.bias)
            mods += [linear, nn.LeakyReLU(0.2)]
            width = w_dim
        self.net = nn.Sequential(*mods)

    def forward(self, z: Tensor) -> Tensor:
        z = z * ops.rsqrt((z * z).mean(dim=1, keepdim=True) + 1e-8)     # pixel norm of z
        return self.net(z)


class StyleBlock(nn.Module):
    r"""3×3 conv → + B·noise → LeakyReLU → AdaIN with :math:`(y_s, y_b)=A(w)`.

    "A" is a learned affine map of w (its scale part centred on 1, weights ~ N(0, 1/w_dim) as in
    StyleGAN: zero weights would start every sample with the same style); "B" a learned per-channel
    weight on one noise image per sample, broadcast to all channels.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.noise_weight = nn.Parameter(ops.zeros(out_channels))                # B
        self.affine = nn.Linear(w_dim, 2 * out_channels)                          # A
        nn.init.normal_(self.affine.weight, 0.0, 1.0 / np.sqrt(w_dim))
        self.affine.bias.data[...] = np.concatenate([np.ones(out_channels), np.zeros(out_channels)])
        self.channels = out_channels

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None = None) -> Tensor:
        h = self.conv(x)
        n, c, hh, ww = h.shape
        if noise is None:
            noise = ops.randn(n, 1, hh, ww, device=h.device, dtype=h.dtype)
        h = ops.leaky_relu(h + self.noise_weight.reshape(1, c, 1, 1) * noise, 0.2)
        style = self.affine(w)
        return adain(h, style[:, :c], style[:, c:])


class StyleGenerator(nn.Module):
    r"""A small StyleGAN synthesis network for (C, S, S) images, S divisible by 4.

    Learned constant (S/4 × S/4) → 2 style blocks → ×2 upsample → 2 blocks → ×2 → 2 blocks
    → 1×1 "toRGB" → tanh. Each block reads its own w (``num_layers`` of them), so
    :meth:`synthesize` can mix styles: ``ws[i]`` for block i.
    """

    def __init__(self, latent_dim: int = 64, w_dim: int = 64, width: int = 64, channels: int = 1,
                 image_size: int = 28, mapping_layers: int = 4):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"StyleGenerator: image_size must be divisible by 4, got {image_size}")
        self.latent_dim, self.w_dim = int(latent_dim), int(w_dim)
        self.mapping = StyleMapping(latent_dim, w_dim, mapping_layers)
        self.const = nn.Parameter(ops.ones(1, width, image_size // 4, image_size // 4))
        widths = [width, width, width, width // 2, width // 2, width // 4]
        ins = [width] + widths[:-1]
        self.blocks = nn.ModuleList([StyleBlock(i, o, w_dim) for i, o in zip(ins, widths)])
        self.to_image = nn.Conv2d(widths[-1], channels, 1)
        self.upsample_before = (2, 4)           # blocks preceded by a x2 nearest-neighbour upsampling

    @property
    def num_layers(self) -> int:
        """The number of style blocks, each reading its own w."""
        return len(self.blocks)

    def noise_sizes(self) -> list:
        """The side of each block's noise image."""
        side, sizes = self.const.shape[-1], []
        for i in range(self.num_layers):
            side *= 2 if i in self.upsample_before else 1
            sizes.append(side)
        return sizes

    def synthesize(self, ws, noises=None) -> Tensor:
        """Images from one w per block (``ws``: a list of (N, w_dim), or one (N, w_dim) for all) and
        optional fixed noise images (a list of (N, 1, H, W) per block)."""
        if isinstance(ws, Tensor):
            ws = [ws] * self.num_layers
        if len(ws) != self.num_layers:
            raise ValueError(f"StyleGenerator.synthesize: need {self.num_layers} styles, got {len(ws)}")
        n = ws[0].shape[0]
        x = self.const.expand(n, *self.const.shape[1:])
        for i, block in enumerate(self.blocks):
            if i in self.upsample_before:
                x = ops.interpolate(x, scale_factor=2, mode="nearest")
            x = block(x, ws[i], None if noises is None else noises[i])
        return ops.tanh(self.to_image(x))

    def forward(self, z: Tensor) -> Tensor:
        return self.synthesize(self.mapping(z))

    #: the mapping network's learning rate relative to the synthesis network's (StyleGAN's 0.01: a
    #: fast mapping network can learn to send every z to the same w, and the generator collapses)
    mapping_lr_ratio = 0.01

    def parameter_groups(self, lr: float) -> list:
        """Optimizer groups: the mapping network at ``mapping_lr_ratio × lr``, the rest at ``lr``."""
        mapping = {id(p) for p in self.mapping.parameters()}
        return [{"params": list(self.mapping.parameters()), "lr": lr * self.mapping_lr_ratio},
                {"params": [p for p in self.parameters() if id(p) not in mapping], "lr": lr}]

    def mix(self, z1: Tensor, z2: Tensor, crossover: int, noises=None) -> Tensor:
        """Style mixing: blocks before ``crossover`` take :math:`w_1=f(z_1)`, the rest :math:`w_2=f(z_2)`."""
        if not 0 <= crossover <= self.num_layers:
            raise ValueError(f"StyleGenerator.mix: crossover must be in [0, {self.num_layers}], got {crossover}")
        w1, w2 = self.mapping(z1), self.mapping(z2)
        return self.synthesize([w1 if i < crossover else w2 for i in range(self.num_layers)], noises)
