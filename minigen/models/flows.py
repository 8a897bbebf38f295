r"""Normalizing flows — exact likelihoods through an invertible change of variables, Eq. FLOW-1…FLOW-4.

A flow maps data x to a latent z with an invertible, differentiable f and
scores x by the change-of-variables formula (Eq. FLOW-1)

.. math:: \log p_\theta(x) = \log p_z(f_\theta(x)) + \log\left|\det \frac{\partial f_\theta(x)}{\partial x}\right| ,

so it is trained by plain maximum likelihood (Eq. FLOW-3) and samples by
running :math:`f^{-1}` on :math:`z\sim\mathcal N(0, I)`. The art is choosing
layers whose inverse and Jacobian determinant are cheap.

Every layer here is a :class:`Bijection`: ``forward(x) -> (y, log|det J|)``
per example, and ``inverse(y) -> x``. In lecture order:

* :class:`PlanarFlow` (Rezende & Mohamed 2015, Eq. FLOW-4),
  :math:`f(z) = z + u\,\tanh(w^\top z + b)`, invertible because u is
  reparameterized so that :math:`w^\top u \ge -1`; its inverse is a 1-D root
  find. :func:`planar_potential_figure` redraws the paper's figures.
* :class:`AffineCoupling` (RealNVP, Dinh et al. 2017, Eq. FLOW-2): the masked
  half of the input passes unchanged and sets a scale and shift for the other
  half, so the Jacobian is triangular and :math:`\log|\det| = \sum s`.
* RealNVP's other layers: :class:`ActNorm` (per-channel affine, initialised
  from the first batch), :class:`Squeeze` (2×2 space to channels) and the
  multi-scale architecture that factors half the variables out after each
  scale (:class:`RealNVP`), with dequantization and the logit transform for
  8-bit images.
* :class:`FlowDensity` — a stack of bijections over vectors (2-D toys).
"""
from __future__ import annotations

import math

import numpy as np

from .. import nn, ops
from ..autograd import Tensor, no_grad
from ..distributions import sum_except_batch

__all__ = ["Bijection", "FlowSequence", "PlanarFlow", "AffineCoupling", "ActNorm", "Squeeze", "LogitTransform",
           "checkerboard_mask", "channel_mask", "FlowDensity", "RealNVP", "standard_normal_log_prob",
           "numerical_log_det_jacobian"]

_LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """:math:`\\log\\mathcal N(z; 0, I)` summed per example."""
    return sum_except_batch(-0.5 * (z * z + _LOG_2PI))


class Bijection(nn.Module):
    """An invertible layer: ``forward(x) -> (y, log|det ∂y/∂x|)`` per example, ``inverse(y) -> x``."""

    def inverse(self, y: Tensor) -> Tensor:
        raise NotImplementedError


class FlowSequence(Bijection):
    """Bijections applied in order; log-determinants add up (the chain rule for Jacobians)."""

    def __init__(self, *layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor):
        total = 0.0
        for layer in self.layers:
            x, log_det = layer(x)
            total = total + log_det
        return x, total

    def inverse(self, y: Tensor) -> Tensor:
        for layer in reversed(list(self.layers)):
            y = layer.inverse(y)
        return y


# --------------------------------------------------------------------------- planar flow (FLOW-4)

class PlanarFlow(Bijection):
    r"""Planar flow (Rezende & Mohamed 2015), Eq. FLOW-4: :math:`f(z) = z + \hat u\,\tanh(w^\top z + b)`.

    .. math:: \log\left|\det \frac{\partial f}{\partial z}\right|
              = \log\left|1 + \hat u^\top \psi(z)\right|, \quad \psi(z) = (1-\tanh^2(w^\top z+b))\,w .

    f is invertible iff :math:`w^\top\hat u \ge -1`; the free parameter u is mapped to
    :math:`\hat u = u + \big(m(w^\top u) - w^\top u\big)\,w/\lVert w\rVert^2` with
    :math:`m(a) = -1 + \mathrm{softplus}(a)`, so :math:`w^\top \hat u = m(w^\top u) > -1`
    always (the paper's appendix A).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = int(dim)
        bound = 1.0 / math.sqrt(self.dim)
        self.w = nn.Parameter(np.zeros(self.dim, dtype=np.float32))
        self.u = nn.Parameter(np.zeros(self.dim, dtype=np.float32))
        self.b = nn.Parameter(np.zeros(1, dtype=np.float32))
        nn.init.uniform_(self.w, -bound, bound)
        nn.init.uniform_(self.u, -bound, bound)

    def u_hat(self) -> Tensor:
        """The constrained u: :math:`w^\\top\\hat u = -1 + \\mathrm{softplus}(w^\\top u) > -1`."""
        wu = (self.w * self.u).sum()
        return self.u + (ops.softplus(wu) - 1 - wu) * self.w / ((self.w * self.w).sum() + 1e-12)

    def forward(self, z: Tensor):
        u = self.u_hat()
        a = ops.tanh(ops.matmul(z, self.w) + self.b)                    # (B,)
        y = z + a.unsqueeze(1) * u
        log_det = (1 + (1 - a * a) * (self.w * u).sum()).abs().log()  # 1 + ψ(z)ᵀ û
        return y, log_det

    def inverse(self, y: Tensor, iterations: int = 200) -> Tensor:
        """Solve :math:`\\alpha = w^\\top z` from :math:`w^\\top y = \\alpha + w^\\top\\hat u\\,\\tanh(\\alpha + b)`
        (strictly increasing in α when :math:`w^\\top\\hat u > -1`) by bisection, then
        :math:`z = y - \\hat u\\tanh(\\alpha + b)`. Not differentiable: for sampling."""
        with no_grad():
            u = self.u_hat().numpy().astype(np.float64)
            w, b = self.w.detach().numpy().astype(np.float64), float(self.b.detach().numpy()[0])
            yv = y.numpy().astype(np.float64)
            target, wu = yv @ w, float(w @ u)
            lo, hi = target - abs(wu) - 1e-9, target + abs(wu) + 1e-9     # tanh ∈ (-1, 1) brackets α
            for _ in range(iterations):
                mid = 0.5 * (lo + hi)
                above = mid + wu * np.tanh(mid + b) > target
                lo, hi = np.where(above, lo, mid), np.where(above, mid, hi)
            alpha = 0.5 * (lo + hi)
            z = yv - np.tanh(alpha + b)[:, None] * u
        return ops.tensor(z.astype(y.dtype), device=y.device)


# --------------------------------------------------------------------------- RealNVP layers (FLOW-2)

def checkerboard_mask(height: int, width: int, parity: int = 0) -> np.ndarray:
    """1 where (i + j + parity) is even: the checkerboard split of RealNVP, shape (1, 1, H, W)."""
    i, j = np.indices((height, width))
    return ((i + j + parity) % 2 == 0).astype(np.float32)[None, None]


def channel_mask(channels: int, parity: int = 0) -> np.ndarray:
    """1 on the first (parity 0) or second half of the channels: RealNVP's channel-wise split, (1, C, 1, 1)."""
    mask = np.zeros(channels, np.float32)
    mask[: channels // 2] = 1
    return (mask if parity == 0 else 1 - mask)[None, :, None, None]


class AffineCoupling(Bijection):
    r"""RealNVP's affine coupling layer, Eq. FLOW-2, with a binary mask m (1 = passes through):

    .. math:: y = m\odot x + (1-m)\odot\big(x\odot e^{s(m\odot x)} + t(m\odot x)\big),
              \qquad \log|\det J| = \sum (1-m)\odot s .

    ``net`` maps the masked input to 2× its channels (or features), read as
    (s, t). The scale is bounded, :math:`s = \gamma\tanh(\tilde s)` with a learned
    per-channel γ starting at 0, so early training cannot blow up through exp(s).
    Works on vectors (mask shape (1, D)) and on images (mask (1, C|1, H|1, W|1)).
    """

    def __init__(self, net: nn.Module, mask: np.ndarray, channels: int):
        super().__init__()
        self.net = net
        self.register_buffer("mask", ops.tensor(mask), persistent=False)
        shape = (channels,) + (1,) * (mask.ndim - 2)
        self.scale = nn.Parameter(np.zeros(shape, dtype=np.float32))

    def _scale_shift(self, x_masked: Tensor):
        s, t = self.net(x_masked).chunk(2, dim=1)
        free = 1 - self.mask
        return self.scale * ops.tanh(s) * free, t * free

    def forward(self, x: Tensor):
        s, t = self._scale_shift(x * self.mask)
        return x * s.exp() + t, sum_except_batch(s)      # masked entries: s = t = 0, y = x

    def inverse(self, y: Tensor) -> Tensor:
        s, t = self._scale_shift(y * self.mask)          # the masked half of y is the masked half of x
        return (y - t) * (-s).exp()


class ActNorm(Bijection):
    r"""Per-channel affine :math:`y = (x - \mu) \odot e^{-\log\sigma}` (Glow's actnorm), the flow's batch norm
    without batch statistics. μ and σ are set from the first batch it sees (the data then
    leaves it with zero mean and unit variance per channel) and are trained afterwards.
    :math:`\log|\det J| = -(\text{positions per channel})\sum_c \log\sigma_c`."""

    def __init__(self, channels: int, ndim: int = 4):
        super().__init__()
        shape = (1, channels) + (1,) * (ndim - 2)
        self.loc = nn.Parameter(np.zeros(shape, dtype=np.float32))
        self.log_scale = nn.Parameter(np.zeros(shape, dtype=np.float32))
        self.register_buffer("initialized", ops.tensor(np.zeros(1, dtype=np.float32)))

    def _initialize(self, x: Tensor) -> None:
        axes = tuple(i for i in range(x.ndim) if i != 1)
        self.loc.data[...] = x.data.mean(axis=axes, keepdims=True)
        self.log_scale.data[...] = x.xp.log(x.data.std(axis=axes, keepdims=True) + 1e-6)
        self.initialized.data[...] = 1

    def forward(self, x: Tensor):
        if not self.initialized.data[0]:
            self._initialize(x)
        positions = math.prod(x.shape[2:])
        y = (x - self.loc) * (-self.log_scale).exp()
        return y, ops.full((x.shape[0],), 1.0, dtype=x.dtype, device=x.device) * (-positions * self.log_scale.sum())

    def inverse(self, y: Tensor) -> Tensor:
        return y * self.log_scale.exp() + self.loc


class Squeeze(Bijection):
    """(B, C, H, W) → (B, 4C, H/2, W/2): each 2×2 block becomes 4 channels. A permutation: log|det| = 0."""

    def forward(self, x: Tensor):
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze: height and width must be even, got {h}x{w}")
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
        return y, ops.zeros(b, dtype=x.dtype, device=x.device)

    def inverse(self, y: Tensor) -> Tensor:
        b, c4, h, w = y.shape
        c = c4 // 4
        return y.reshape(b, c, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, 2 * h, 2 * w)


class LogitTransform(Bijection):
    r"""RealNVP's pre-processing of pixels in [0, 1]: :math:`y = \mathrm{logit}(\alpha + (1-2\alpha)x)`,
    :math:`\log|\det J| = \sum \log(1-2\alpha) - \log p - \log(1-p)` with :math:`p = \alpha + (1-2\alpha)x`.
    It maps the bounded cube onto all of :math:`\mathbb R^D`, where a Gaussian base lives."""

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: Tensor):
        p = self.alpha + (1 - 2 * self.alpha) * x
        log_p, log_q = p.log(), (1 - p).log()
        return log_p - log_q, sum_except_batch(math.log(1 - 2 * self.alpha) - log_p - log_q)

    def inverse(self, y: Tensor) -> Tensor:
        return (ops.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)


# --------------------------------------------------------------------------- models

def numerical_log_det_jacobian(fn, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """log |det J| of ``fn`` (float64 arrays (B, ...) → same shape) at each example, by central
    differences — the ground truth the analytic log-determinants are tested against."""
    x = np.asarray(x, np.float64)
    b, d = x.shape[0], int(np.prod(x.shape[1:]))
    jac = np.zeros((b, d, d))
    with no_grad():
        for k in range(d):
            step = np.zeros(d)
            step[k] = eps
            step = step.reshape(x.shape[1:])
            jac[:, :, k] = (fn(x + step) - fn(x - step)).reshape(b, d) / (2 * eps)
    return np.linalg.slogdet(jac)[1]


class FlowDensity(nn.Module):
    """A density on vectors: a bijection to a standard-normal latent (Eq. FLOW-1), trained by maximum
    likelihood (Eq. FLOW-3). ``kind='realnvp'`` stacks affine couplings with alternating masks and
    actnorm; ``kind='planar'`` stacks planar flows (sampling then inverts them numerically)."""

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
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        nll = -self.log_prob(x).mean()
        return nll, {"loss": float(nll.item()), "nll": float(nll.item())}

    def sample(self, n: int) -> np.ndarray:
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
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        nll = -self.log_prob(x).mean()
        bpd = float(nll.item()) / (math.prod(self.image_shape) * math.log(2))
        return nll, {"loss": float(nll.item()), "nll": float(nll.item()), "bits_per_dim": bpd}

    def latent_shapes(self):
        c, h, w = self.image_shape
        shapes = []
        for i in range(len(self.scales) - 1):
            c, h, w = 2 * c, h // 2, w // 2       # squeeze (×4), then half leaves
            shapes.append((c, h, w))
        shapes.append(self.final_shape)
        return shapes

    def sample(self, n: int, temperature: float = 1.0) -> np.ndarray:
        """Images from latents drawn from N(0, T² I), decoded and clipped to [0, 1]."""
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


# --------------------------------------------------------------------------- Rezende & Mohamed's potentials

POTENTIALS = ("U1", "U2", "U3", "U4")


def potential(name: str, z) -> Tensor:
    r"""U(z) of Rezende & Mohamed (2015), Table 1: the target density is :math:`p(z)\propto e^{-U(z)}`.

    ``z`` is (n, 2), a Tensor (differentiable: the flow is trained through it) or an array."""
    if name not in POTENTIALS:
        raise ValueError(f"potential: name must be one of {', '.join(POTENTIALS)}, got {name!r}")
    z = z if isinstance(z, Tensor) else ops.tensor(np.asarray(z, dtype=np.float64))
    z1, z2 = z[:, 0], z[:, 1]

    def log_add_exp(a, b):
        return ops.stack([a, b], dim=1).logsumexp(dim=1)

    def bump(t, width):
        return -0.5 * (t / width) ** 2

    w1 = (z1 * (math.pi / 2)).sin()
    if name == "U1":
        radius = (z1 * z1 + z2 * z2).sqrt()
        return -bump(radius - 2, 0.4) - log_add_exp(bump(z1 - 2, 0.6), bump(z1 + 2, 0.6))
    if name == "U2":
        return -bump(z2 - w1, 0.4)
    if name == "U3":
        w2 = 3 * bump(z1 - 1, 0.6).exp()
        return -log_add_exp(bump(z2 - w1, 0.35), bump(z2 - w1 + w2, 0.35))
    w3 = 3 * ops.sigmoid((z1 - 1) / 0.3)
    return -log_add_exp(bump(z2 - w1, 0.4), bump(z2 - w1 + w3, 0.35))


def flow_log_density(flow: FlowSequence, base_log_prob, y: np.ndarray) -> np.ndarray:
    """log q_K(y) of points pushed through ``flow`` (generative direction z₀ → y) from a base
    density: invert layer by layer, :math:`\\log q_K(y) = \\log q_0(z_0) - \\sum_k \\log|\\det J_k(z_{k-1})|`."""
    with no_grad():
        z = ops.tensor(np.asarray(y, dtype=np.float64))
        total = np.zeros(len(y))
        for layer in reversed(list(flow.layers)):
            z = layer.inverse(z)
            total += layer(z)[1].numpy()
        return base_log_prob(z.numpy()) - total


def fit_planar_flow(name: str, length: int, steps: int = 3000, batch: int = 256, lr: float = 5e-3,
                    seed: int = 0) -> tuple:
    """Fit K planar flows to :math:`p\\propto e^{-U}` by minimising the reverse KL as Rezende & Mohamed:
    :math:`\\mathbb E_{z_0}[\\log q_0(z_0) - \\sum_k\\log|\\det J_k| + \\beta\\,U(z_K)]`, with β annealed
    from 0.01 to 1 over the first half (the target is sharpened slowly). Returns (flow, losses)."""
    from .. import random as mg_random
    from ..optim import Adam
    mg_random.manual_seed(seed)
    flow = FlowSequence(*[PlanarFlow(2) for _ in range(length)]).double()
    optimizer = Adam(flow.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        beta = min(1.0, 0.01 + step / (steps / 2))
        z0 = ops.randn(batch, 2, dtype=np.float64)
        z, log_det = flow(z0)
        loss = (standard_normal_log_prob(z0) - log_det + beta * potential(name, z)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    return flow, losses


def planar_potentials_experiment(out: str, lengths=(2, 8, 32), steps: int = 3000, seed: int = 0) -> dict:
    """Rezende & Mohamed's figures with planar flows (Eq. FLOW-4): (1) a Gaussian and a uniform density
    pushed through K = 1, 2, 10 random planar maps ("effect of normalizing flow on two distributions");
    (2) the four potentials fitted by K = 2, 8, 32 flows, with KL(q‖p) (p normalised on [-4, 4]²)."""
    import os

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-4, 4, 161)
    xx, yy = np.meshgrid(grid, grid)
    points = np.stack([xx.ravel(), yy.ravel()], 1)
    cell = (grid[1] - grid[0]) ** 2
    result = {"kl": {}, "seconds": {}}

    # (1) the effect of random planar maps on two base densities
    def gaussian(z):
        return -0.5 * (z * z).sum(1) - _LOG_2PI

    def uniform(z):
        inside = np.all(np.abs(z) <= 1.5, axis=1)
        return np.where(inside, -math.log(9.0), -np.inf)
    fig, axes = plt.subplots(2, 4, figsize=(10, 5))
    for row, (base_name, base) in enumerate((("unit Gaussian", gaussian), ("uniform", uniform))):
        rng = np.random.default_rng(seed)             # the same ten maps for both bases
        layers = [PlanarFlow(2).double() for _ in range(10)]
        for layer in layers:                          # visible bends: |w| ~ 2, |u| ~ 1
            layer.w.data[...] = rng.normal(scale=2.0, size=2)
            layer.u.data[...] = rng.normal(scale=1.0, size=2)
            layer.b.data[...] = rng.normal(scale=0.5, size=1)
        for col, k in enumerate((0, 1, 2, 10)):
            density = np.exp(flow_log_density(FlowSequence(*layers[:k]), base, points)).reshape(xx.shape)
            axes[row, col].imshow(density, origin="lower", extent=(-4, 4, -4, 4), cmap="viridis")
            axes[row, col].set_title(f"{base_name}: q0" if k == 0 else f"K = {k}", fontsize=9)
            axes[row, col].axis("off")
    fig.suptitle("Effect of planar flows on two distributions (Rezende & Mohamed 2015, Fig. 1)")
    os.makedirs(out, exist_ok=True)
    result["effect_figure"] = os.path.join(out, "planar_effect.png")
    fig.savefig(result["effect_figure"], dpi=100, bbox_inches="tight")
    plt.close(fig)

    # (2) the four potentials
    import time
    fig, axes = plt.subplots(len(POTENTIALS), len(lengths) + 1, figsize=(2.5 * (len(lengths) + 1), 10))
    for row, name in enumerate(POTENTIALS):
        u = potential(name, points).numpy()
        log_z = float(np.log(np.exp(-u).sum() * cell))      # normaliser on the plotted box
        axes[row, 0].imshow(np.exp(-u).reshape(xx.shape), origin="lower", extent=(-4, 4, -4, 4), cmap="viridis")
        axes[row, 0].set_title(f"exp(-{name})", fontsize=9)
        for col, k in enumerate(lengths, start=1):
            start = time.perf_counter()
            flow, _ = fit_planar_flow(name, k, steps=steps, seed=seed)
            result["seconds"][f"{name}/K={k}"] = round(time.perf_counter() - start, 1)
            with no_grad():
                z0 = ops.randn(20000, 2, dtype=np.float64)
                z, log_det = flow(z0)
                log_q = (standard_normal_log_prob(z0) - log_det).numpy()
                kl = float(np.mean(log_q + potential(name, z).numpy()) + log_z)
            result["kl"][f"{name}/K={k}"] = round(kl, 4)
            density = np.exp(flow_log_density(flow, gaussian, points)).reshape(xx.shape)
            axes[row, col].imshow(density, origin="lower", extent=(-4, 4, -4, 4), cmap="viridis")
            axes[row, col].set_title(f"K = {k}: KL {kl:.2f}", fontsize=9)
            print(f"{name} K = {k}: KL(q || p) = {kl:.3f} nats ({result['seconds'][f'{name}/K={k}']} s)")
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle("Planar flows fitted to Rezende & Mohamed's potentials (reverse KL)")
    result["potentials_figure"] = os.path.join(out, "planar_potentials.png")
    fig.savefig(result["potentials_figure"], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return result


# --------------------------------------------------------------------------- command-line recipes
#
# `minigen train realnvp` fits images (the multi-scale RealNVP) or 2-D toy points (a coupling stack);
# `minigen train planar` fits 2-D toy points with planar flows. Both are scored by exact NLL.

def add_realnvp_arguments(parser) -> None:
    parser.add_argument("--scales", type=int, default=2, help="images: multi-scale levels (default: 2)")
    parser.add_argument("--hidden", type=int, default=64, help="width of the s/t networks (default: 64)")
    parser.add_argument("--blocks", type=int, default=4, help="images: residual blocks per s/t network (default: 4)")
    parser.add_argument("--layers", type=int, default=8, help="2-D data: coupling layers (default: 8)")
    parser.add_argument("--alpha", type=float, default=0.05, help="images: logit transform's alpha (default: 0.05)")


def build_realnvp(cfg: dict, image_shape):
    if len(image_shape) == 1:
        return FlowDensity(image_shape[0], "realnvp", cfg["layers"], cfg["hidden"])
    return RealNVP(image_shape, cfg["scales"], cfg["hidden"], cfg["blocks"], cfg["alpha"])


def add_planar_arguments(parser) -> None:
    parser.add_argument("--layers", type=int, default=16, help="planar flows K (default: 16)")


def build_planar(cfg: dict, image_shape):
    if len(image_shape) != 1:
        raise ValueError(f"planar flows model points (--data ring8, moons, ...), not images of shape "
                         f"{tuple(image_shape)}; use realnvp for images")
    return FlowDensity(image_shape[0], "planar", cfg["layers"])


def _batched_nll(model, data: np.ndarray, size: int = 500) -> np.ndarray:
    with no_grad():
        return np.concatenate([-model.log_prob(data[i:i + size]).numpy() for i in range(0, len(data), size)])


def evaluate_flow(model, train, test, args, progress: bool = True) -> dict:
    """Exact test NLL (Eq. FLOW-1). Images: dequantized NLL and bits/dim. 2-D toys: also the true
    density's NLL on the same points (an estimate of its entropy) and the gap, KL(p‖q) ≥ 0."""
    from ..data import TOY_DATASETS, get_toy
    from ..metrics import bits_per_dim, summarize
    nll = _batched_nll(model, test.images)
    stats = summarize(nll)
    out = {"test_nll": stats["mean"], "test_nll_sem": stats["sem"], "test_examples": stats["n"]}
    if test.images.ndim == 4:
        out["bits_per_dim"] = bits_per_dim(stats["mean"], math.prod(test.images.shape[1:]))
    elif test.name in TOY_DATASETS:
        true_nll = -get_toy(test.name).log_prob(test.images)
        gap = summarize(nll - true_nll)
        out.update(true_entropy=float(true_nll.mean()), true_entropy_sem=summarize(true_nll)["sem"],
                   gap_nats=gap["mean"], gap_sem=gap["sem"])
    return out


def periodic_flow_nll(model, test_images: np.ndarray, k: int = 0):
    """A curve point during training: the NLL of a fixed test subset (``k`` unused)."""
    def evaluate():
        model.eval()
        value = float(_batched_nll(model, test_images).mean())
        model.train()
        return {"test/nll": value}
    return evaluate


def flow_figures(model, run_dir: str, images: np.ndarray) -> list:
    """Images: samples and latent interpolations. 2-D: the learned density beside samples."""
    import os

    from ..viz import save_image_grid
    if images.ndim == 4:
        samples = model.sample(64)
        figures = [("samples, decoded from N(0, I) latents", save_image_grid(samples, os.path.join(run_dir, "flow_samples.png"), nrow=8))]
        frames = model.interpolate(images[:4], images[4:8], steps=8)
        figures.append(("latent interpolations between test images (one row each)",
                        save_image_grid(frames.reshape(-1, *frames.shape[2:]),
                                        os.path.join(run_dir, "flow_interpolation.png"), nrow=8)))
        return figures
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    lo, hi = np.percentile(images, 0.5, axis=0), np.percentile(images, 99.5, axis=0)
    pad = 0.1 * (hi - lo)
    gx, gy = np.linspace(lo[0] - pad[0], hi[0] + pad[0], 200), np.linspace(lo[1] - pad[1], hi[1] + pad[1], 200)
    xx, yy = np.meshgrid(gx, gy)
    with no_grad():
        density = np.exp(model.log_prob(np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float32)).numpy())
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    extent = (gx[0], gx[-1], gy[0], gy[-1])
    axes[0].imshow(density.reshape(xx.shape), origin="lower", extent=extent, cmap="viridis", aspect="auto")
    axes[0].set_title("model density p(x) (Eq. FLOW-1)")
    samples = model.sample(2000)
    axes[1].scatter(images[:2000, 0], images[:2000, 1], s=2, alpha=0.3, label="data")
    axes[1].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.3, label="samples")
    axes[1].set_xlim(extent[:2])
    axes[1].set_ylim(extent[2:])
    axes[1].legend(markerscale=5)
    axes[1].set_title("data and samples")
    path = os.path.join(run_dir, "flow_density.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [("the learned density and its samples", path)]
