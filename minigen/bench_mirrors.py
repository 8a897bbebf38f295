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
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
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


def mlp(sizes, activation=nn.Tanh, last=False):
    """minigen.models.vae._mlp: linear layers with ``activation`` between them (and after the last one
    too when ``last``)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers += [nn.Linear(a, b)] + ([activation()] if last or i < len(sizes) - 2 else [])
    return nn.Sequential(*layers)


class VAE(nn.Module):
    """minigen.models.vae.VAE with the MLP encoder and decoder (Burda et al.'s 784-200-200-50, tanh,
    Bernoulli logits): ``loss(x)`` is the negative ELBO with the closed-form Gaussian KL."""

    def __init__(self, pixels=784, latent=50, hidden=(200, 200)):
        super().__init__()
        self.encoder = mlp([pixels, *hidden, 2 * latent])
        self.decoder = mlp([latent, *hidden, pixels])

    def loss(self, x):
        """The negative ELBO averaged over the batch (one reparameterized sample per image)."""
        mu, log_sigma = self.encoder(x.flatten(1)).chunk(2, dim=1)
        z = mu + log_sigma.exp() * torch.randn_like(mu)
        logits = self.decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="none").sum(1)
        kl = 0.5 * (mu ** 2 + (2 * log_sigma).exp() - 2 * log_sigma - 1).sum(1)
        return (kl - log_px).mean()


class MaskedConv2d(nn.Conv2d):
    """A causal convolution for one image channel: mask A hides the centre and everything after it,
    mask B only what follows the centre (the kernel is multiplied by the mask in every forward)."""

    def __init__(self, cin, cout, k, mask_type):
        super().__init__(cin, cout, k, padding=k // 2)
        mask = torch.ones_like(self.weight)
        mask[:, :, k // 2, k // 2 + (mask_type == "B"):] = 0
        mask[:, :, k // 2 + 1:] = 0
        self.register_buffer("mask", mask)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN(nn.Module):
    """minigen.models.pixelcnn.PixelCNN for binary 1-channel images: a 7×7 mask-A convolution,
    residual blocks (ReLU, 1×1 to h/2, ReLU, 3×3 mask B, ReLU, 1×1 to h, plus the input), and a head
    of two 1×1 layers giving Bernoulli logits; ``loss(x)`` is the NLL in nats per image."""

    def __init__(self, channels=64, blocks=7, head=64):
        super().__init__()
        half = channels // 2
        self.conv_in = MaskedConv2d(1, channels, 7, "A")
        self.blocks = nn.ModuleList([nn.ModuleList([nn.Conv2d(channels, half, 1), MaskedConv2d(half, half, 3, "B"),
                                                    nn.Conv2d(half, channels, 1)]) for _ in range(blocks)])
        self.head1, self.head2 = nn.Conv2d(channels, head, 1), nn.Conv2d(head, 1, 1)

    def loss(self, x):
        """The Bernoulli negative log-likelihood in nats per image."""
        h = self.conv_in(2 * x - 1)
        for reduce, conv, expand in self.blocks:
            h = h + expand(F.relu(conv(F.relu(reduce(F.relu(h))))))
        logits = self.head2(F.relu(self.head1(F.relu(h))))
        return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]


def rbm_cd1_epoch(x, n_hidden, batch, lr=0.01, momentum=0.9, weight_decay=2e-4):
    """A closure running one CD-1 epoch over ``x`` as minigen's ``ContrastiveDivergence`` does by
    default: a sampled hidden layer, a mean-field reconstruction, p(h|v⁻) statistics, momentum and
    weight decay on W, and the reconstruction error (five matrix products per batch)."""
    x = torch.from_numpy(x)
    n_visible = x.shape[1]
    generator = torch.Generator().manual_seed(0)
    W = 0.01 * torch.randn(n_visible, n_hidden, generator=generator)
    b, c = torch.zeros(n_visible), torch.zeros(n_hidden)
    velocity = [torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(c)]

    def epoch():
        for start in range(0, x.shape[0], batch):
            v = x[start:start + batch]
            ph = torch.sigmoid(v @ W + c)
            h = (torch.rand(ph.shape, generator=generator) < ph).to(v.dtype)
            pv = torch.sigmoid(h @ W.T + b)
            ph2 = torch.sigmoid(pv @ W + c)
            grads = ((v.T @ ph - pv.T @ ph2) / v.shape[0] - weight_decay * W, (v - pv).mean(0), (ph - ph2).mean(0))
            for param, vel, g in zip((W, b, c), velocity, grads):
                vel.mul_(momentum).add_(g, alpha=lr)
                param.add_(vel)
            ((v - pv) ** 2).mean().item()
    return epoch
