"""PyTorch twins of minigen's reference networks, for ``minigen bench`` only.

Imported only when PyTorch is installed (it is never a dependency). Each twin has
the same layers, shapes and parameter count as the minigen module it mirrors, so
that a training step times the same arithmetic in both libraries.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResBlock(nn.Module):
    """minigen.models.unet.ResBlock with the scale-shift time input."""

    def __init__(self, cin, cout, emb_dim, groups):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, emb):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.conv2(F.silu(self.norm2(h) * (1 + scale) + shift))
        return (x if self.skip is None else self.skip(x)) + h


class AttentionBlock(nn.Module):
    """minigen.models.unet.AttentionBlock: multi-head self-attention over the pixels, with a residual
    connection (PyTorch's default initialisation: the output projection is not zeroed)."""

    def __init__(self, channels, heads, groups):
        super().__init__()
        self.heads = heads
        self.norm, self.qkv, self.out = _norm(channels, groups), nn.Conv2d(channels, 3 * channels, 1), \
            nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).transpose(3, 4)
        a = F.scaled_dot_product_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2])
        return x + self.out(a.transpose(2, 3).reshape(n, c, h, w))


class UNet(nn.Module):
    """minigen.models.unet.UNet (scale-shift time input, no class embedding, no dropout)."""

    def __init__(self, in_channels=1, channels=32, mults=(1, 2, 2), blocks=2, attention_levels=(2,), heads=4,
                 groups=8):
        super().__init__()
        emb_dim, self.time_dim = 4 * channels, channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down, skips, width = nn.ModuleList(), [channels], channels

        def stage(cin, cout, attention):
            return nn.ModuleList([ResBlock(cin, cout, emb_dim, groups)] +
                                 ([AttentionBlock(cout, heads, groups)] if attention else []))
        for level, mult in enumerate(mults):
            for _ in range(blocks):
                self.down.append(stage(width, channels * mult, level in attention_levels))
                width = channels * mult
                skips.append(width)
            if level < len(mults) - 1:
                self.down.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skips.append(width)
        self.middle = nn.ModuleList([ResBlock(width, width, emb_dim, groups), AttentionBlock(width, heads, groups),
                                     ResBlock(width, width, emb_dim, groups)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for _ in range(blocks + 1):
                self.up.append(stage(width + skips.pop(), channels * mult, level in attention_levels))
                width = channels * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(width, width, 3, padding=1)))
        self.norm_out, self.conv_out = _norm(width, groups), nn.Conv2d(width, in_channels, 3, padding=1)

    def embed(self, t):
        """minigen's ``UNet.embed`` without labels: the time MLP of the sinusoidal code of ``t``."""
        half = self.time_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        angles = t.float()[:, None] * freqs[None]
        return self.time_mlp(torch.cat([torch.cos(angles), torch.sin(angles)], dim=1))

    @staticmethod
    def _run(module, h, emb):
        if not isinstance(module, nn.ModuleList):
            return module(h)
        for layer in module:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x, t):
        emb = self.embed(t)
        h = self.conv_in(x)
        skips = [h]
        for module in self.down:
            h = self._run(module, h, emb)
            skips.append(h)
        for module in self.middle:
            h = module(h, emb) if isinstance(module, ResBlock) else module(h)
        for module in self.up:
            h = self._run(module, torch.cat([h, skips.pop()], dim=1), emb) if isinstance(module, nn.ModuleList) \
                else module(h)
        return self.conv_out(F.silu(self.norm_out(h)))
