r"""DCGAN (Radford et al. 2016, Eq. GAN-6) and its class-conditional form (Eq. GAN-7).

The slide's guidelines, each visible below:

* no pooling: the discriminator downsamples with **strided convolutions**, the
  generator upsamples with **fractional-strided (transposed) convolutions**;
* **batch normalisation** in both networks, except the generator's output and
  the discriminator's input layer;
* no fully connected hidden layers: the generator's first layer is a transposed
  convolution of the 1×1 noise "image" to a 7×7 map, the discriminator's last a
  convolution over its whole 7×7 map;
* **ReLU** in the generator, **Tanh** at its output; **LeakyReLU** (slope 0.2) in the
  discriminator.

For 28×28 images (MNIST, Fashion-MNIST) the maps go 1 → 7 → 14 → 28 in G and
28 → 14 → 7 → 1 in D. Images are in [0, 1] in minigen; the GAN shows them to D
as :math:`2x-1`, the range of G's tanh (:class:`~minigen.models.gans.GAN` ``tanh_images``).

Conditioning (Mirza & Osindero 2014): G reads :math:`[z, \mathrm{onehot}(y)]`;
D adds a projection term :math:`\langle e_y, \sum_{ij} h_{ij}\rangle` of a class embedding
onto its pooled features (Miyato & Koyama 2018), so D judges "is this a real *y*".
"""
from __future__ import annotations

from ... import nn, ops
from ...autograd import Tensor
from .networks import MinibatchStdDev

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "dcgan_init_"]


def _check_size(name, image_size):
    if image_size % 4:
        raise ValueError(f"{name}: image_size must be divisible by 4 (two stride-2 layers), got {image_size}")


class DCGANGenerator(nn.Module):
    """z (and a class) → a (C, S, S) image in [-1, 1]: three transposed convolutions, 2·width and
    width channels on the way (the discriminator's maps, mirrored)."""

    def __init__(self, latent_dim: int = 100, width: int = 64, channels: int = 1, image_size: int = 28,
                 num_classes: int | None = None):
        super().__init__()
        _check_size("DCGANGenerator", image_size)
        self.latent_dim, self.num_classes = int(latent_dim), num_classes
        start = image_size // 4
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent_dim + (num_classes or 0), 2 * width, start, 1, 0, bias=False),
            nn.BatchNorm2d(2 * width), nn.ReLU(),                                  # S/4
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(width), nn.ReLU(),                                      # S/2
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh())               # S

    def forward(self, z: Tensor, labels=None) -> Tensor:
        if self.num_classes:
            z = ops.cat([z, ops.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        return self.net(z.reshape(z.shape[0], -1, 1, 1))


class DCGANDiscriminator(nn.Module):
    """A (C, S, S) image (and a class) → one logit: two strided convolutions and a whole-map one."""

    def __init__(self, width: int = 64, channels: int = 1, image_size: int = 28, num_classes: int | None = None,
                 minibatch_std: bool = False):
        super().__init__()
        _check_size("DCGANDiscriminator", image_size)
        self.num_classes = num_classes
        # StyleGAN's D reads the minibatch standard deviation as one more channel before its logit
        self.minibatch_std = MinibatchStdDev() if minibatch_std else None
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),                # S/2, no BN on the input
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False),
            nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2))                           # S/4
        self.out = nn.Conv2d(2 * width + bool(minibatch_std), 1, image_size // 4)    # the logit
        self.embed = nn.Embedding(num_classes, 2 * width) if num_classes else None

    def forward(self, x: Tensor, labels=None) -> Tensor:
        h = self.features(x)
        logit = self.out(h if self.minibatch_std is None else self.minibatch_std(h)).reshape(-1)
        if self.embed is not None:
            logit = logit + (self.embed(labels) * h.sum(dim=(2, 3))).sum(dim=1)
        return logit


def dcgan_init_(module: nn.Module) -> nn.Module:
    """DCGAN's initialisation: convolution weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02), shifts 0
    (and class embeddings ~ N(0, 0.02))."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):       # the projection term starts small, like the rest of D
            nn.init.normal_(m.weight, 0.0, 0.02)
    return module
