"""The bijections of the flow section: planar flow (Eq. FLOW-4), and RealNVP's affine coupling
(Eq. FLOW-2), actnorm, squeeze and logit layers — each with ``forward(x) -> (y, log|det J|)``
and ``inverse(y)``; plus the numerical Jacobian the tests hold them to."""
from __future__ import annotations

import math

import numpy as np

from ... import nn, ops
from ...autograd import Tensor, no_grad
from ...distributions import sum_except_batch

_LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """:math:`\\log\\mathcal N(z; 0, I)` summed per example."""
    return sum_except_batch(-0.5 * (z * z + _LOG_2PI))


class Bijection(nn.Module):
    """An invertible layer: ``forward(x) -> (y, log|det ∂y/∂x|)`` per example, ``inverse(y) -> x``."""

    def inverse(self, y: Tensor) -> Tensor:
        """x from y = forward(x)[0]."""
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
        """The layers' inverses, applied in reverse order."""
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
        # BEGIN SOLUTION 4.3
        log_det = (1 + (1 - a * a) * (self.w * u).sum()).abs().log()  # 1 + ψ(z)ᵀ û
        # END SOLUTION
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
    per-channel γ, so early training cannot blow up through exp(s). γ starts at 1
    (as in Dinh et al.'s code): with a zero-initialised last layer of ``net`` the
    coupling starts as the identity either way, but γ = 0 *and* s̃ = 0 is a saddle
    that gradient descent never leaves (∂/∂γ ∝ tanh s̃ = 0, ∂/∂s̃ ∝ γ = 0): the
    scales stayed dead and the MNIST model learned like an additive (NICE) flow.
    Works on vectors (mask shape (1, D)) and on images (mask (1, C|1, H|1, W|1)).
    """

    def __init__(self, net: nn.Module, mask: np.ndarray, channels: int):
        super().__init__()
        self.net = net
        self.register_buffer("mask", ops.tensor(mask), persistent=False)
        shape = (channels,) + (1,) * (mask.ndim - 2)
        self.scale = nn.Parameter(np.ones(shape, dtype=np.float32))

    def _scale_shift(self, x_masked: Tensor):
        s, t = self.net(x_masked).chunk(2, dim=1)
        free = 1 - self.mask
        return self.scale * ops.tanh(s) * free, t * free

    def forward(self, x: Tensor):
        # BEGIN SOLUTION 4.1
        s, t = self._scale_shift(x * self.mask)
        return x * s.exp() + t, sum_except_batch(s)      # masked entries: s = t = 0, y = x
        # END SOLUTION

    def inverse(self, y: Tensor) -> Tensor:
        r"""x from y: the masked entries pass through and give s and t, the others are :math:`(y - t)\odot e^{-s}`."""
        # BEGIN SOLUTION 4.2
        s, t = self._scale_shift(y * self.mask)          # the masked half of y is the masked half of x
        return (y - t) * (-s).exp()
        # END SOLUTION


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
        r""":math:`x = y\odot e^{\log\sigma} + \mu`."""
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
        """(B, 4C, H/2, W/2) → (B, C, H, W): every 4 channels go back to their 2×2 blocks."""
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
        r""":math:`x = (\mathrm{sigmoid}(y) - \alpha) / (1-2\alpha)`."""
        return (ops.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)


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
