r"""Multilayer-perceptron players for 2-D data, and the layers the remedies for mode collapse need.

The mode-collapse benchmark (Metz et al. 2017; VEEGAN; PacGAN, Lin et al. 2018)
uses small fully connected networks on points in the plane:

* generator: :math:`z\in\mathbb R^2\sim\mathcal N(0,I)`, hidden layers of ReLU
  units with batch normalisation, a linear output;
* discriminator: hidden layers of maxout units (Goodfellow et al. 2013) and one
  output logit.

:class:`MinibatchDiscrimination` (Salimans et al. 2016) is the slide's "batch
discrimination instead of individual discrimination": it lets D compare each
example with the rest of its minibatch, so a generator whose samples all look
alike is easy to spot.
"""
from __future__ import annotations

from ... import nn, ops
from ...autograd import Tensor

__all__ = ["Maxout", "MinibatchDiscrimination", "MinibatchStdDev", "mlp_generator", "mlp_discriminator"]


class Maxout(nn.Module):
    r"""Maxout units: :math:`h_j = \max_{p} (W_{pj}x + b_{pj})` over ``pieces`` linear pieces (row
    ``p * out_features + j`` of the linear layer is piece ``p`` of unit ``j``)."""

    def __init__(self, in_features: int, out_features: int, pieces: int = 5):
        super().__init__()
        self.out_features, self.pieces = int(out_features), int(pieces)
        self.linear = nn.Linear(in_features, out_features * pieces)

    def forward(self, x: Tensor) -> Tensor:
        # pieces-major (N, pieces, units): the max then runs along a strided axis over contiguous
        # rows of units, which NumPy vectorises (20x faster than a max over a trailing axis of 5)
        return self.linear(x).reshape(x.shape[0], self.pieces, self.out_features).amax(dim=1)


class MinibatchDiscrimination(nn.Module):
    r"""Minibatch discrimination (Salimans et al. 2016, §3.2).

    Features :math:`f(x_i)\in\mathbb R^A` are projected by a tensor :math:`T` to
    :math:`M_i\in\mathbb R^{B\times C}`; kernel ``b`` measures how close example ``i`` is
    to the others, :math:`o(x_i)_b=\sum_{j} \exp(-\lVert M_{i,b}-M_{j,b}\rVert_{L_1})`, and
    the layer returns :math:`[f(x_i), o(x_i)]` (A + B features). A batch of near
    copies has every :math:`o_b` near the batch size; real data has them spread.
    """

    def __init__(self, in_features: int, kernels: int = 5, kernel_dim: int = 3):
        super().__init__()
        self.kernels, self.kernel_dim = int(kernels), int(kernel_dim)
        self.T = nn.Linear(in_features, self.kernels * self.kernel_dim, bias=False)
        nn.init.normal_(self.T.weight, 0.0, 0.1)

    def forward(self, f: Tensor) -> Tensor:
        n = f.shape[0]
        m = self.T(f).reshape(n, 1, self.kernels, self.kernel_dim)
        l1 = (m - m.reshape(1, n, self.kernels, self.kernel_dim)).abs().sum(dim=3)     # (n, n, B)
        return ops.cat([f, ops.exp(-l1).sum(dim=1)], dim=1)


class MinibatchStdDev(nn.Module):
    r"""Minibatch standard deviation (Karras et al. 2018, ProGAN §3; StyleGAN's discriminator).

    The batch is split into groups of ``group_size`` examples; for each group the standard
    deviation of every feature (channel and pixel) across its members is averaged to one
    number, appended to each member as a constant extra channel. A batch of near-identical
    fakes shows a value near 0 that real batches never have — a cheaper, parameter-free
    cousin of minibatch discrimination.
    """

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = int(group_size)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:                        # the largest group size <= group_size that divides n
            g -= 1
        y = x.reshape(g, n // g, c, h, w)   # member k of group m is example k·(n/g) + m
        var = ((y - y.mean(dim=0, keepdim=True)) ** 2).mean(dim=0)
        s = ops.sqrt(var + 1e-8).mean(dim=(1, 2, 3), keepdim=True)                 # (n/g, 1, 1, 1)
        feature = s.reshape(1, n // g, 1, 1, 1).expand(g, n // g, 1, h, w).reshape(n, 1, h, w)
        return ops.cat([x, feature], dim=1)


def mlp_generator(latent_dim: int = 2, hidden: int = 400, layers: int = 4, out_features: int = 2,
                  batchnorm: bool = True) -> nn.Sequential:
    """``layers`` × (Linear → BatchNorm → ReLU) of width ``hidden``, then a linear output (PacGAN's 2-D G)."""
    mods, width = [], latent_dim
    for _ in range(layers):
        mods += [nn.Linear(width, hidden, bias=not batchnorm)]
        mods += [nn.BatchNorm1d(hidden)] if batchnorm else []
        mods += [nn.ReLU()]
        width = hidden
    return nn.Sequential(*mods, nn.Linear(width, out_features))


def mlp_discriminator(in_features: int = 2, hidden: int = 200, layers: int = 3, pieces: int = 5,
                      minibatch_kernels: int = 0, kernel_dim: int = 3) -> nn.Sequential:
    """``layers`` maxout layers of width ``hidden`` and a logit (PacGAN's 2-D D). With
    ``minibatch_kernels`` > 0, a :class:`MinibatchDiscrimination` layer reads the last hidden layer."""
    mods, width = [], in_features
    for _ in range(layers):
        mods.append(Maxout(width, hidden, pieces))
        width = hidden
    if minibatch_kernels:
        mods.append(MinibatchDiscrimination(width, minibatch_kernels, kernel_dim))
        width += minibatch_kernels
    return nn.Sequential(*mods, nn.Linear(width, 1))
