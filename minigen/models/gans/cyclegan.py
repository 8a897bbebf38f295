r"""CycleGAN (Zhu et al. 2017, Eq. GAN-8): unpaired translation between two image domains.

Two generators :math:`G: X\to Y` and :math:`F: Y\to X`, two discriminators
:math:`D_Y` and :math:`D_X`, and the objective

.. math:: \mathcal L = \mathcal L_{GAN}(G, D_Y, X, Y) + \mathcal L_{GAN}(F, D_X, Y, X) + \lambda\,\mathcal L_{cyc}(G, F),
          \quad \mathcal L_{cyc} = \mathbb E_x\lVert F(G(x))-x\rVert_1 + \mathbb E_y\lVert G(F(y))-y\rVert_1 .

The adversarial terms make translated images look like the other domain; the
cycle term makes the translation keep what the image *is*, since it has to be
undone. :math:`\lVert\cdot\rVert_1` is averaged over pixels, as in the authors' code.

**Domains.** minigen makes its own pair from one labelled image set: X are the
images as they are, Y the same kind of images with a known transformation —
``thicken`` (a 3×3 grey-level dilation: bolder strokes) or ``invert``
(:math:`1-x`). Each training step splits its batch in two: the first half
serves as X, the second half, transformed, as Y — so no loss term ever sees an
image together with its own transformed copy, and the pairing stays hidden. At
evaluation the pairing is known, so the translation error
:math:`\lVert G(x) - T(x)\rVert_1` can be reported next to the cycle error.

Generators: a small ResNet (one stride-2 stage, residual blocks with instance
norm, a transposed convolution back up, tanh). Discriminators: PatchGAN — a
logit per patch, here a 7×7 map for 28×28 images. D sees fakes through a
history pool of past translations (the paper's 50-image buffer, our
:class:`~minigen.models.gans.ReplayBuffer`).
"""
from __future__ import annotations

import numpy as np

from ... import nn, ops
from ...autograd import Tensor, no_grad
from ..taxonomy import IMPLICIT
from .game import CheckpointedStep, ReplayBuffer, discriminator_loss, generator_loss, value_function

__all__ = ["DOMAINS", "thicken", "invert", "ResnetGenerator", "PatchDiscriminator", "CycleGAN",
           "CycleGANTraining"]


def thicken(images: np.ndarray) -> np.ndarray:
    """Grey-level dilation by a 3×3 square: every pixel becomes the maximum of its neighbourhood."""
    x = np.asarray(images, np.float32)
    padded = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)])
    h, w = x.shape[-2:]
    return np.max([padded[..., i:i + h, j:j + w] for i in range(3) for j in range(3)], axis=0)


def invert(images: np.ndarray) -> np.ndarray:
    """:math:`1 - x`: white digits on black become black digits on white."""
    return (1.0 - np.asarray(images, np.float32)).astype(np.float32)


#: name -> the hidden transformation T that makes domain Y from domain X
DOMAINS = {"thicken": thicken, "invert": invert}


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.InstanceNorm2d(channels), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1), nn.InstanceNorm2d(channels))

    def forward(self, x):
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Image → image of the same size: conv → stride-2 conv → ``blocks`` residual blocks → transposed
    conv → conv → tanh, instance norm throughout (Johnson et al. 2016, as CycleGAN uses it)."""

    def __init__(self, channels: int = 1, width: int = 32, blocks: int = 2):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.InstanceNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * width), nn.ReLU(),
            *[_Residual(2 * width) for _ in range(blocks)],
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.InstanceNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1), nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: two stride-2 convolutions and a 3×3 one; one logit per patch, (N, S/4 · S/4) logits."""

    def __init__(self, channels: int = 1, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.InstanceNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 1, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).reshape(x.shape[0], -1)


class CycleGAN(nn.Module):
    r"""The four networks and the terms of Eq. GAN-8. Images enter and leave in [0, 1]; inside, the
    networks work in [-1, 1] (G's tanh range)."""

    density = IMPLICIT        # Eq. TAX-1 (see minigen.models.taxonomy)

    def __init__(self, channels: int = 1, width: int = 32, blocks: int = 2, cycle_weight: float = 10.0,
                 domain: str = "thicken"):
        super().__init__()
        if domain not in DOMAINS:
            raise ValueError(f"CycleGAN: domain must be one of {sorted(DOMAINS)}, got {domain!r}")
        self.G, self.F = ResnetGenerator(channels, width, blocks), ResnetGenerator(channels, width, blocks)
        self.D_X, self.D_Y = PatchDiscriminator(channels, width), PatchDiscriminator(channels, width)
        self.cycle_weight, self.domain = float(cycle_weight), domain

    def split(self, images) -> tuple:
        """A batch of 2m images → (x, y): the first half as X, the second half transformed into Y, both in
        [-1, 1]. No image meets its own transformed copy."""
        images = np.asarray(images.numpy() if isinstance(images, Tensor) else images, np.float32)
        if len(images) < 2 or len(images) % 2:
            raise ValueError(f"CycleGAN: a batch must hold an even number (>= 2) of images, got {len(images)}")
        m = len(images) // 2
        return (ops.tensor(2 * images[:m] - 1, device=self.device),
                ops.tensor(2 * DOMAINS[self.domain](images[m:]) - 1, device=self.device))

    def adversarial_value(self, D: nn.Module, real: Tensor, fake: Tensor) -> Tensor:
        r""":math:`\mathcal L_{GAN}(G, D_Y, X, Y)=\mathbb E_y[\log D_Y(y)]+\mathbb E_x[\log(1-D_Y(G(x)))]`, over patches."""
        return value_function(D(real), D(fake))

    def cycle_loss(self, x: Tensor, y: Tensor) -> Tensor:
        r""":math:`\mathcal L_{cyc}=\mathbb E_x\lVert F(G(x))-x\rVert_1+\mathbb E_y\lVert G(F(y))-y\rVert_1`."""
        return (self.F(self.G(x)) - x).abs().mean() + (self.G(self.F(y)) - y).abs().mean()

    def objective(self, x: Tensor, y: Tensor) -> dict:
        r"""Every term of :math:`\mathcal L(G, F, D_X, D_Y)` and their sum (what G, F minimise and D's maximise)."""
        gan_y = self.adversarial_value(self.D_Y, y, self.G(x))
        gan_x = self.adversarial_value(self.D_X, x, self.F(y))
        cyc = self.cycle_loss(x, y)
        return {"gan_y": gan_y, "gan_x": gan_x, "cycle": cyc, "total": gan_y + gan_x + self.cycle_weight * cyc}

    @no_grad()
    def translate(self, images, direction: str = "x2y") -> np.ndarray:
        """G (``x2y``) or F (``y2x``) of images in [0, 1], in evaluation mode; returns [0, 1] images."""
        net = {"x2y": self.G, "y2x": self.F}[direction]
        was_training = net.training
        net.eval()
        try:
            out = net(ops.tensor(2 * np.asarray(images, np.float32) - 1)).numpy()
        finally:
            net.train(was_training)
        return (out + 1) / 2


class CycleGANTraining(CheckpointedStep):
    """One step: both discriminators ascend their value on real images and pooled past translations,
    then both generators descend the non-saturating adversarial losses plus λ·L_cyc (D's frozen)."""

    _state = ("g_optimizer", "d_optimizer", "pool_x", "pool_y", "g_scheduler", "d_scheduler")

    def __init__(self, model: CycleGAN, g_optimizer, d_optimizer, pool_size: int = 50,
                 g_scheduler=None, d_scheduler=None):
        self.model, self.g_optimizer, self.d_optimizer = model, g_optimizer, d_optimizer
        self.pool_x, self.pool_y = ReplayBuffer(pool_size, 0.5), ReplayBuffer(pool_size, 0.5)
        self.g_scheduler, self.d_scheduler = g_scheduler, d_scheduler

    def __call__(self, batch) -> dict:
        model = self.model
        x, y = model.split(batch[0] if isinstance(batch, (tuple, list)) else batch)
        with no_grad():
            fake_y, fake_x = model.G(x), model.F(y)
        d_loss = (discriminator_loss(model.D_Y(y), model.D_Y(self.pool_y.mix(fake_y)))
                  + discriminator_loss(model.D_X(x), model.D_X(self.pool_x.mix(fake_x))))
        self.d_optimizer.zero_grad()
        d_loss.backward()
        self.d_optimizer.step()
        for net in (model.D_X, model.D_Y):
            net.requires_grad_(False)
        try:
            adv = generator_loss(model.D_Y(model.G(x))) + generator_loss(model.D_X(model.F(y)))
            cyc = model.cycle_loss(x, y)
            g_loss = adv + model.cycle_weight * cyc
            self.g_optimizer.zero_grad()
            g_loss.backward()
            self.g_optimizer.step()
        finally:
            for net in (model.D_X, model.D_Y):
                net.requires_grad_(True)
        for sched in (self.g_scheduler, self.d_scheduler):
            if sched is not None:
                sched.step()
        return {"d_loss": float(d_loss.item()), "g_adv": float(adv.item()), "cycle": float(cyc.item())}
