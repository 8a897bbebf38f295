r"""The ε-network of DDPM: a U-Net with ResNet blocks, a sinusoidal time embedding and self-attention
(Eq. DIF-15; Ho et al. 2020, Appendix B; Nichol & Dhariwal 2021 for the scale-shift norm).

Shape of the network, for ``channel_mults=(1, 2, 2)`` at 28×28::

    x ─ conv ─ [Res ×B] 28² ─ down ─ [Res ×B] 14² ─ down ─ [Res ×B (+Attn)] 7² ─┐
                  │ skip               │ skip                 │ skip              middle: Res, Attn, Res
    ε ─ conv ─ [Res ×(B+1)] 28² ─ up ─ [Res ×(B+1)] 14² ─ up ─ [Res ×(B+1)] 7² ──┘

Every ResNet block reads the time embedding — a sinusoidal code of t through a
two-layer MLP (plus a class embedding for a conditional model) — either added to
its feature maps after the first convolution, or as a per-channel scale and shift
of its second group norm (``scale_shift=True``, "adaptive group norm"). Any input
whose side is divisible by 2^(levels − 1) works: the convolutions are padded,
downsampling is a stride-2 convolution and upsampling nearest-neighbour ×2.
"""
from __future__ import annotations

import math

import numpy as np

from .. import nn, ops
from ..autograd import Tensor

__all__ = ["timestep_embedding", "ResBlock", "AttentionBlock", "CrossAttentionBlock", "UNet"]


def timestep_embedding(t, dim: int, max_period: float = 10000.0, dtype="float32", device="cpu") -> Tensor:
    r"""Eq. DIF-15, the sinusoidal code of the step (Vaswani et al.'s positions, as in DDPM):
    :math:`[\cos(t\,\omega_k),\ \sin(t\,\omega_k)]_{k<d/2}`, :math:`\omega_k=\text{max\_period}^{-k/(d/2)}`.
    ``t`` (N,) integers (or reals) → (N, dim)."""
    if dim < 2 or dim % 2:
        raise ValueError(f"timestep_embedding: dim must be an even number >= 2, got {dim}")
    t = np.asarray(t.numpy() if isinstance(t, Tensor) else t, dtype=np.float64).reshape(-1)
    freqs = np.exp(-math.log(max_period) * np.arange(dim // 2) / (dim // 2))
    angles = t[:, None] * freqs[None]
    return ops.tensor(np.concatenate([np.cos(angles), np.sin(angles)], axis=1), dtype=dtype, device=device)


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv 3×3 → (+ time) → GroupNorm (× (1 + scale) + shift) → SiLU → dropout →
    conv 3×3, plus the input (through a 1×1 convolution when the channel count changes)."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, groups: int = 32,
                 dropout: float = 0.0, scale_shift: bool = True):
        super().__init__()
        self.scale_shift = bool(scale_shift)
        self.norm1, self.conv1 = _norm(in_channels, groups), nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels if scale_shift else out_channels)
        self.norm2, self.conv2 = _norm(out_channels, groups), nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.dropout = nn.Dropout(dropout) if dropout else None
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None
        nn.init.zeros_(self.conv2.weight)           # each block starts as the identity: a stable deep net
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(ops.silu(self.norm1(x)))
        e = self.emb(ops.silu(emb))
        n, c = h.shape[:2]
        if self.scale_shift:                        # adaptive group norm: GN(h)·(1 + s) + b
            scale, shift = e[:, :c].reshape(n, c, 1, 1), e[:, c:].reshape(n, c, 1, 1)
            h = self.norm2(h) * (1.0 + scale) + shift
        else:                                       # the time added to every pixel
            h = self.norm2(h + e.reshape(n, c, 1, 1))
        h = ops.silu(h)
        if self.dropout is not None:
            h = self.dropout(h)
        return (x if self.skip is None else self.skip(x)) + self.conv2(h)


class AttentionBlock(nn.Module):
    """Self-attention over the pixels of a feature map, with a residual connection: GroupNorm, a 1×1
    convolution to queries, keys and values per head, the engine's fused scaled-dot-product
    attention, and a 1×1 output projection (zero-initialised: the block starts as the identity)."""

    def __init__(self, channels: int, heads: int = 4, groups: int = 32):
        super().__init__()
        if channels % heads:
            raise ValueError(f"AttentionBlock: channels ({channels}) must be divisible by heads ({heads})")
        self.heads = int(heads)
        self.norm = _norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _qkv(self, x: Tensor) -> tuple:
        n, c, h, w = x.shape
        d = c // self.heads
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, d, h * w).transpose(3, 4)   # (N, 3, H, HW, d)
        return qkv[:, 0], qkv[:, 1], qkv[:, 2]

    def attention_weights(self, x: Tensor) -> Tensor:
        r"""The (N, heads, HW, HW) matrix :math:`\mathrm{softmax}(QK^\top/\sqrt d)` the fused kernel applies
        (for inspection and tests; the forward pass never builds it this way)."""
        q, k, _ = self._qkv(x)
        return ops.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(q.shape[-1])), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self._qkv(x)
        a = ops.scaled_dot_product_attention(q, k, v)                   # (N, heads, HW, d)
        return x + self.out(a.transpose(2, 3).reshape(n, c, h, w))


class CrossAttentionBlock(nn.Module):
    r"""Eq. DIF-17, conditioning by cross-attention (Rombach et al. 2022): the pixels of a feature map
    ask (queries, from GroupNorm and a 1×1 convolution) and the condition's tokens answer (keys and
    values, linear maps of a (N, L, context_dim) sequence),
    :math:`\mathrm{softmax}\big(Q K^\top/\sqrt d\big)V` per head through the engine's fused attention,
    then a zero-initialised 1×1 projection added to the input."""

    def __init__(self, channels: int, context_dim: int, heads: int = 4, groups: int = 32):
        super().__init__()
        if channels % heads:
            raise ValueError(f"CrossAttentionBlock: channels ({channels}) must be divisible by heads ({heads})")
        self.heads, self.context_dim = int(heads), int(context_dim)
        self.norm = _norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.kv = nn.Linear(context_dim, 2 * channels)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        n, c, h, w = x.shape
        if context is None or context.ndim != 3 or context.shape[0] != n or context.shape[2] != self.context_dim:
            raise ValueError(f"CrossAttentionBlock: expected a context of shape ({n}, L, {self.context_dim}), got "
                             f"{None if context is None else tuple(context.shape)}")
        d, tokens = c // self.heads, context.shape[1]
        q = self.q(self.norm(x)).reshape(n, self.heads, d, h * w).transpose(2, 3)        # (N, heads, HW, d)
        kv = self.kv(context).reshape(n, tokens, 2, self.heads, d)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)                  # (N, heads, L, d)
        a = ops.scaled_dot_product_attention(q, k, v)
        return x + self.out(a.transpose(2, 3).reshape(n, c, h, w))


class UNet(nn.Module):
    r"""Eq. DIF-15: the network :math:`\epsilon_\theta(x_t, t)` (or :math:`x_0` / v, or with
    ``learned_variance`` also the interpolation weights of the variance, by its output channels).

    ``channels`` base width; level i has ``channels × channel_mults[i]`` channels and ``blocks``
    ResNet blocks; ``attention_levels`` lists the levels (0 = full resolution) with self-attention
    (the middle always has one). ``num_classes`` adds a class embedding to the time embedding;
    label ``num_classes`` is the "no label" token classifier-free guidance needs. ``context_dim`` adds
    a :class:`CrossAttentionBlock` after every self-attention (latent diffusion's conditioning): the
    network then reads a (N, L, context_dim) token sequence.
    """

    def __init__(self, in_channels: int = 1, channels: int = 64, channel_mults=(1, 2, 2), blocks: int = 2,
                 attention_levels=(2,), heads: int = 4, groups: int = 32, dropout: float = 0.0,
                 scale_shift: bool = True, num_classes: int | None = None, learned_variance: bool = False,
                 context_dim: int | None = None):
        super().__init__()
        mults = tuple(int(m) for m in channel_mults)
        if not mults or min(mults) < 1 or blocks < 1 or channels < 1:
            raise ValueError(f"UNet: need channels >= 1, blocks >= 1 and positive channel_mults, got "
                             f"channels={channels}, blocks={blocks}, channel_mults={channel_mults}")
        bad = [lv for lv in attention_levels if not 0 <= lv < len(mults)]
        if bad:
            raise ValueError(f"UNet: attention_levels must lie in 0..{len(mults) - 1}, got {bad}")
        self.in_channels, self.levels, self.num_classes = int(in_channels), len(mults), num_classes
        self.context_dim = context_dim
        self.out_channels = self.in_channels * (2 if learned_variance else 1)
        emb_dim, self.time_dim = 4 * channels, channels
        self.time_mlp = nn.Sequential(nn.Linear(channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        block = dict(emb_dim=emb_dim, groups=groups, dropout=dropout, scale_shift=scale_shift)
        attend = dict(heads=heads, groups=groups, context_dim=context_dim)

        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.down, skips, width = nn.ModuleList(), [channels], channels
        for level, mult in enumerate(mults):
            for _ in range(blocks):
                self.down.append(self._stage(width, channels * mult, level in attention_levels, block, attend))
                width = channels * mult
                skips.append(width)
            if level < len(mults) - 1:
                self.down.append(nn.Conv2d(width, width, 3, stride=2, padding=1))   # downsample
                skips.append(width)
        self.middle = nn.ModuleList([ResBlock(width, width, **block), *self._attention(width, **attend),
                                     ResBlock(width, width, **block)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(mults))):
            for _ in range(blocks + 1):
                self.up.append(self._stage(width + skips.pop(), channels * mult, level in attention_levels,
                                           block, attend))
                width = channels * mult
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(width, width, 3, padding=1)))
        self.norm_out = _norm(width, groups)
        self.conv_out = nn.Conv2d(width, self.out_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @staticmethod
    def _attention(channels, heads, groups, context_dim) -> list:
        """Self-attention, and cross-attention to the condition's tokens when there is a context."""
        return [AttentionBlock(channels, heads, groups)] + \
            ([CrossAttentionBlock(channels, context_dim, heads, groups)] if context_dim else [])

    @classmethod
    def _stage(cls, in_ch, out_ch, attention, block, attend) -> nn.ModuleList:
        return nn.ModuleList([ResBlock(in_ch, out_ch, **block)] + (cls._attention(out_ch, **attend) if attention else []))

    @property
    def downsampling(self) -> int:
        """The factor every input side must be divisible by."""
        return 2 ** (self.levels - 1)

    def embed(self, t, labels=None, like: Tensor | None = None) -> Tensor:
        """The embedding every ResNet block reads: MLP(sinusoid(t)) [+ class embedding]."""
        dtype, device = (like.dtype, like.device) if like is not None else ("float32", "cpu")
        emb = self.time_mlp(timestep_embedding(t, self.time_dim, dtype=dtype, device=device))
        if self.class_emb is not None:
            if labels is None:
                labels = np.full(emb.shape[0], self.num_classes)          # the "no label" token
            labels = labels if isinstance(labels, Tensor) else ops.tensor(np.asarray(labels), dtype="int64",
                                                                           device=device)
            emb = emb + self.class_emb(labels)
        return emb

    def forward(self, x: Tensor, t, labels=None, context: Tensor | None = None) -> Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet: expected x of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[2] % self.downsampling or x.shape[3] % self.downsampling:
            raise ValueError(f"UNet: image sides must be divisible by {self.downsampling} "
                             f"({self.levels} levels), got {tuple(x.shape[2:])}")
        if (context is not None) != bool(self.context_dim):
            raise ValueError("UNet: a network built with context_dim needs a context (and one without refuses it); "
                             f"context_dim={self.context_dim}, context given: {context is not None}")
        emb = self.embed(t, labels, like=x)
        h = self.conv_in(x)
        skips = [h]
        for module in self.down:
            h = self._run(module, h, emb, context)
            skips.append(h)
        h = self._run(self.middle, h, emb, context)
        for module in self.up:
            if isinstance(module, nn.ModuleList):           # a stage: concatenate the skip first
                h = self._run(module, ops.cat([h, skips.pop()], dim=1), emb, context)
            else:
                h = module(h)
        return self.conv_out(ops.silu(self.norm_out(h)))

    @staticmethod
    def _run(module, h: Tensor, emb: Tensor, context) -> Tensor:
        if not isinstance(module, nn.ModuleList):           # a downsampling convolution
            return module(h)
        for layer in module:                                # each block reads what it needs
            h = layer(h, emb) if isinstance(layer, ResBlock) else \
                layer(h, context) if isinstance(layer, CrossAttentionBlock) else layer(h)
        return h
