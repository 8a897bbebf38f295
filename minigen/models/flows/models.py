"""Flow models: :class:`FlowDensity` for points and the multi-scale :class:`RealNVP` for images
(Eq. FLOW-1, FLOW-3)."""
from __future__ import annotations

import math

import numpy as np

from ... import nn, ops
from ...autograd import Tensor, no_grad
from ...checks import check_int
from ..taxonomy import TRACTABLE
from .layers import (ActNorm, AffineCoupling, FlowSequence, LogitTransform, PlanarFlow, Squeeze,
                     channel_mask, checkerboard_mask, standard_normal_log_prob)


class FlowDensity(nn.Module):
    """A density on vectors: a bijection to a standard-normal latent (Eq. FLOW-1), trained by maximum
    likelihood (Eq. FLOW-3). ``kind='realnvp'`` stacks affine couplings with alternating masks and
    actnorm; ``kind='planar'`` stacks planar flows (sampling then inverts them numerically)."""

    density = TRACTABLE        # Eq. TAX-1 (see minigen.models.taxonomy)

    def __init__(self, dim: int = 2, kind: str = "realnvp", layers: int = 8, hidden: int = 64):
        super().__init__()
        if kind not in ("realnvp", "planar"):
            raise ValueError(f"FlowDensity: kind must be 'realnvp' or 'planar', got {kind!r}")
        self.dim, self.kind = int(dim), kind
        self.image_shape = (self.dim,)
        if kind == "planar":
            self.flow = FlowSequence(*[PlanarFlow(dim) for _ in range(layers)])
        else:
            blocks = []
            for i in range(layers):
                mask = np.zeros((1, dim), np.float32)
                mask[0, i % 2::2] = 1                     # alternate which half passes through
                net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                    nn.Linear(hidden, 2 * dim))
                blocks += [AffineCoupling(net, mask, dim), ActNorm(dim, ndim=2)]
            self.flow = FlowSequence(*blocks)

    def _check(self, x) -> Tensor:
        if not isinstance(x, Tensor):
            weight = next(iter(self.parameters()))
            x = ops.tensor(np.asarray(x, dtype=weight.dtype), device=weight.device)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"FlowDensity: expected points of shape (B, {self.dim}), got {tuple(x.shape)}")
        return x

    def log_prob(self, x) -> Tensor:
        """Eq. FLOW-1: :math:`\\log p(x) = \\log\\mathcal N(f(x)) + \\log|\\det \\partial f/\\partial x|`."""
        z, log_det = self.flow(self._check(x))
        return standard_normal_log_prob(z) + log_det

    def loss(self, batch):
        """Negative log-likelihood averaged over the batch, and the metrics the trainer logs."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        nll = -self.log_prob(x).mean()
        return nll, {"loss": float(nll.item()), "nll": float(nll.item())}

    def sample(self, n: int) -> np.ndarray:
        """``n`` points :math:`f^{-1}(z)`, :math:`z\\sim\\mathcal N(0, I)`."""
        n = check_int("FlowDensity.sample: n", n, minimum=0)
        weight = next(iter(self.parameters()))
        with no_grad():
            return self.flow.inverse(ops.randn(n, self.dim, dtype=weight.dtype, device=weight.device)).numpy()


class _CouplingNet(nn.Module):
    """s and t of an image coupling: 3×3 conv, residual blocks of two 3×3 convs, 3×3 conv to 2C
    (zero-initialised: every coupling starts as the identity)."""

    def __init__(self, channels: int, hidden: int, blocks: int):
        super().__init__()
        self.conv_in = nn.Conv2d(channels, hidden, 3, padding=1)
        self.blocks = nn.ModuleList([nn.Sequential(nn.BatchNorm2d(hidden), nn.ReLU(),
                                                   nn.Conv2d(hidden, hidden, 3, padding=1),
                                                   nn.BatchNorm2d(hidden), nn.ReLU(),
                                                   nn.Conv2d(hidden, hidden, 3, padding=1))
                                     for _ in range(blocks)])
        self.conv_out = nn.Conv2d(hidden, 2 * channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv_in(x)
        for block in self.blocks:
            h = h + block(h)
        return self.conv_out(ops.relu(h))


class RealNVP(nn.Module):
    r"""RealNVP for images (Dinh et al. 2017) with the multi-scale architecture, Eq. FLOW-1/2.

    Each scale: 3 checkerboard couplings (alternating parity) → squeeze → 3
    channel couplings → half of the channels factored out as latents (they go
    straight to the Gaussian). The last scale: 4 checkerboard couplings. Every
    coupling is followed by actnorm. Pixels in [0, 1] are dequantized
    (:math:`y = (k + u)/256`, u uniform) and logit-transformed first, so

    .. math:: \text{bits/dim} = \frac{-\log p(y) + D\log 256}{D\log 2}

    bounds the discrete model's bits per dimension (Theis et al. 2016).
    """

    density = TRACTABLE        # Eq. TAX-1 (see minigen.models.taxonomy)

    def __init__(self, image_shape=(1, 28, 28), scales: int = 2, hidden: int = 64, blocks: int = 4,
                 alpha: float = 0.05):
        super().__init__()
        c, h, w = self.image_shape = tuple(int(s) for s in image_shape)
        for s in range(scales - 1):
            if (h >> s) % 2 or (w >> s) % 2:
                raise ValueError(f"RealNVP: {scales} scales need the image size to halve {scales - 1} times; "
                                 f"{h}x{w} does not")
        self.preprocess = LogitTransform(alpha)
        self.scales = nn.ModuleList()
        channels, height, width = c, h, w
        for s in range(scales):
            last = s == scales - 1
            layers = []
            for i in range(4 if last else 3):
                layers += [AffineCoupling(_CouplingNet(channels, hidden, blocks),
                                          checkerboard_mask(height, width, i % 2), channels), ActNorm(channels)]
            if not last:
                layers.append(Squeeze())
                channels, height, width = 4 * channels, height // 2, width // 2
                for i in range(3):
                    layers += [AffineCoupling(_CouplingNet(channels, hidden, blocks), channel_mask(channels, i % 2),
                                              channels), ActNorm(channels)]
            self.scales.append(FlowSequence(*layers))
            if not last:
                channels //= 2              # half of the channels leave as latents
        self.final_shape = (channels, height, width)

    def _check(self, x) -> Tensor:
        if not isinstance(x, Tensor):
            weight = next(iter(self.parameters()))
            x = ops.tensor(np.asarray(x, dtype=weight.dtype), device=weight.device)
        if tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"RealNVP: expected images of shape (B, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(x.shape)}")
        return x

    def encode(self, y: Tensor):
        """Continuous images y ∈ (0, 1) → (list of latents, one per scale; total log|det J|)."""
        h, log_det = self.preprocess(y)
        latents = []
        for i, scale in enumerate(self.scales):
            h, ld = scale(h)
            log_det = log_det + ld
            if i < len(self.scales) - 1:
                z, h = h.chunk(2, dim=1)       # factor out half: z goes to the prior as it is
                latents.append(z)
        latents.append(h)
        return latents, log_det

    def decode(self, latents) -> Tensor:
        """The inverse of :meth:`encode`: the latents, one per scale, → images in (0, 1)."""
        h = latents[-1]
        for i in reversed(range(len(self.scales))):
            if i < len(self.scales) - 1:
                h = ops.cat([latents[i], h], dim=1)
            h = self.scales[i].inverse(h)
        return self.preprocess.inverse(h)

    def log_prob_continuous(self, y) -> Tensor:
        """Eq. FLOW-1 for dequantized images y ∈ (0, 1): every latent under N(0, I), plus log|det J|."""
        latents, log_det = self.encode(self._check(y))
        return sum(standard_normal_log_prob(z) for z in latents) + log_det

    def dequantize(self, x: Tensor) -> Tensor:
        """Grey levels k/255 → (k + u)/256 with u ~ U[0, 1): a continuous density's data."""
        levels = ops.tensor(np.rint(x.numpy() * 255), device=x.device).to(dtype=x.dtype)
        return (levels + ops.rand(*x.shape, dtype=x.dtype, device=x.device)) / 256

    def log_prob(self, x) -> Tensor:
        """Dequantized log-likelihood of grey-level images (in nats), a lower bound on log P(x)."""
        x = self._check(x)
        dims = math.prod(self.image_shape)
        return self.log_prob_continuous(self.dequantize(x)) - dims * math.log(256)

    def loss(self, batch):
        """Dequantized negative log-likelihood averaged over the batch (nats), and the metrics the trainer logs,
        bits/dim among them."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        nll = -self.log_prob(x).mean()
        bpd = float(nll.item()) / (math.prod(self.image_shape) * math.log(2))
        return nll, {"loss": float(nll.item()), "nll": float(nll.item()), "bits_per_dim": bpd}

    def latent_shapes(self):
        """The shape (C, H, W) of each scale's latent, in the order :meth:`encode` returns them."""
        c, h, w = self.image_shape
        shapes = []
        for i in range(len(self.scales) - 1):
            c, h, w = 2 * c, h // 2, w // 2       # squeeze (×4), then half leaves
            shapes.append((c, h, w))
        shapes.append(self.final_shape)
        return shapes

    def sample(self, n: int, temperature: float = 1.0) -> np.ndarray:
        """Images from latents drawn from N(0, T² I), decoded and clipped to [0, 1]."""
        n = check_int("RealNVP.sample: n", n, minimum=0)
        weight = next(iter(self.parameters()))
        with no_grad():
            latents = [temperature * ops.randn(n, *shape, dtype=weight.dtype, device=weight.device)
                       for shape in self.latent_shapes()]
            return np.clip(self.decode(latents).numpy(), 0, 1)

    def interpolate(self, a, b, steps: int = 8) -> np.ndarray:
        """Decode the latents of images a and b mixed on a great circle (norm-preserving), a → b."""
        with no_grad():
            za, _ = self.encode(self._check(a) * (255 / 256) + 0.5 / 256)
            zb, _ = self.encode(self._check(b) * (255 / 256) + 0.5 / 256)
            frames = []
            for t in np.linspace(0, 1, steps):
                angle = t * math.pi / 2
                frames.append(self.decode([math.cos(angle) * p + math.sin(angle) * q for p, q in zip(za, zb)]).numpy())
            return np.clip(np.stack(frames, 1), 0, 1)      # (B, steps, C, H, W)
