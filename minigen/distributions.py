"""Probability distributions over Tensors: what a latent-variable model samples and scores.

Every distribution here is *elementwise* (like ``torch.distributions`` without
an event shape): ``log_prob(x)`` has the shape of ``x`` and a model sums it
over the dimensions of one example with :func:`sum_except_batch`. Parameters
are Tensors, so densities, samples drawn by reparameterization and KL
divergences all carry gradients back to the networks that produced them.

All randomness comes from minigen's seeded generator (``mg.manual_seed``).
"""
from __future__ import annotations

import math

from . import ops
from .autograd import Tensor

__all__ = ["Normal", "Bernoulli", "kl_divergence", "sum_except_batch"]

_LOG_2PI = math.log(2.0 * math.pi)


def sum_except_batch(t: Tensor, batch_dims: int = 1) -> Tensor:
    """Sum over every dimension after the first ``batch_dims``: per-example log-densities."""
    if t.ndim <= batch_dims:
        return t
    return t.reshape(*t.shape[:batch_dims], -1).sum(dim=-1)


def _as_tensor(value, like: Tensor | None = None) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if like is not None:
        return ops.full_like(like, float(value))
    return ops.tensor(value)


class Normal:
    """Diagonal Gaussian :math:`\\mathcal N(\\mu, \\sigma^2)`, elementwise.

    Build it from ``loc`` and either ``scale`` (σ) or ``log_scale`` (log σ, the
    form an encoder network outputs: any real number is a valid log σ).
    """

    def __init__(self, loc, scale=None, *, log_scale=None):
        if (scale is None) == (log_scale is None):
            raise ValueError("Normal: give exactly one of scale= or log_scale=")
        self.loc = _as_tensor(loc)
        if log_scale is not None:
            self.log_scale = _as_tensor(log_scale, self.loc)
            self.scale = self.log_scale.exp()
        else:
            self.scale = _as_tensor(scale, self.loc)
            self.log_scale = self.scale.log()

    @property
    def mean(self) -> Tensor:
        """The mean :math:`\\mu` (``loc``)."""
        return self.loc

    @property
    def variance(self) -> Tensor:
        """The variance :math:`\\sigma^2`."""
        return self.scale * self.scale

    def log_prob(self, x) -> Tensor:
        """:math:`\\log\\mathcal N(x;\\mu,\\sigma^2) = -\\tfrac12\\big((x-\\mu)/\\sigma\\big)^2 - \\log\\sigma - \\tfrac12\\log 2\\pi`."""
        z = (x - self.loc) / self.scale
        return -0.5 * z * z - self.log_scale - 0.5 * _LOG_2PI

    def rsample(self, sample_shape: tuple = ()) -> Tensor:
        """Eq. VAE-5 (reparameterization): :math:`z = \\mu + \\epsilon\\,\\sigma,\\ \\epsilon\\sim\\mathcal N(0, I)`.

        The noise ε carries no parameters, so the sample is a differentiable
        function of μ and σ and gradients of :math:`\\mathbb E_z[f(z)]` flow
        through it. ``sample_shape`` prepends dimensions (k samples per example).
        """
        shape = tuple(sample_shape) + tuple(self.loc.shape)
        # BEGIN SOLUTION 3.1
        eps = ops.randn(*shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc + eps * self.scale
        # END SOLUTION

    def sample(self, sample_shape: tuple = ()) -> Tensor:
        """A sample cut from the graph: :meth:`rsample`, detached (no gradient flows)."""
        return self.rsample(sample_shape).detach()

    def log_prob_per_example(self, x) -> Tensor:
        """``log_prob`` summed over each example; the parameters' batch may be k sample-major copies of x's."""
        k = self.loc.shape[0] // x.shape[0]
        return sum_except_batch(self.log_prob(x.unsqueeze(0).expand(k, *x.shape).reshape(self.loc.shape)))

    def entropy(self) -> Tensor:
        """Elementwise entropy in nats, :math:`\\log\\sigma + \\tfrac12(1 + \\log 2\\pi)`."""
        return self.log_scale + 0.5 * (1.0 + _LOG_2PI)

    def __repr__(self):
        return f"Normal(shape={tuple(self.loc.shape)})"


class Bernoulli:
    """Bernoulli with ``logits`` ℓ (the decoder's pre-sigmoid output), elementwise.

    :math:`\\log p(x) = x\\,\\ell - \\mathrm{softplus}(\\ell)`, which is
    :math:`x\\log\\sigma(\\ell) + (1-x)\\log(1-\\sigma(\\ell))` without ever
    forming σ(ℓ) — stable for any logit. It is also defined for x in [0, 1]
    (grey levels), where it is the negative binary cross-entropy.
    """

    def __init__(self, logits):
        self.logits = _as_tensor(logits)

    @property
    def probs(self) -> Tensor:
        """The probability of a 1, :math:`\\sigma(\\ell)`."""
        return self.logits.sigmoid()

    @property
    def mean(self) -> Tensor:
        """The mean, equal to :attr:`probs`."""
        return self.probs

    def log_prob(self, x) -> Tensor:
        """:math:`x\\,\\ell - \\mathrm{softplus}(\\ell)`, elementwise (x in {0, 1} or a grey level in [0, 1])."""
        return x * self.logits - ops.softplus(self.logits)

    def log_prob_per_example(self, x) -> Tensor:
        """``log_prob`` summed over each example, in one fused kernel pass.

        The logits' batch may be k sample-major copies of x's batch (the k
        importance samples of a VAE): x is never copied k times.
        """
        return ops.bernoulli_log_likelihood(self.logits, x)

    def sample(self, sample_shape: tuple = ()) -> Tensor:
        """0/1 draws with probability :attr:`probs`, no gradient; ``sample_shape`` prepends dimensions."""
        probs = self.probs.detach()
        if sample_shape:
            probs = probs.expand(*tuple(sample_shape), *probs.shape)
        return ops.bernoulli(probs)

    def entropy(self) -> Tensor:
        """Elementwise entropy in nats, :math:`\\mathrm{softplus}(\\ell) - \\sigma(\\ell)\\,\\ell`."""
        p = self.probs
        return ops.softplus(self.logits) - p * self.logits

    def __repr__(self):
        return f"Bernoulli(shape={tuple(self.logits.shape)})"


def kl_divergence(q, p) -> Tensor:
    """Closed-form elementwise :math:`D_{KL}(q\\Vert p)` between two diagonal Gaussians.

    .. math:: D_{KL} = \\log\\frac{\\sigma_p}{\\sigma_q}
              + \\frac{\\sigma_q^2 + (\\mu_q-\\mu_p)^2}{2\\sigma_p^2} - \\frac12

    With p = N(0, 1) this is the prior-matching term of the ELBO (Eq. VAE-4):
    :math:`\\tfrac12(\\mu^2 + \\sigma^2 - 1) - \\log\\sigma`.
    """
    if not (isinstance(q, Normal) and isinstance(p, Normal)):
        raise TypeError(f"kl_divergence: closed form is implemented for Normal and Normal, "
                        f"got {type(q).__name__} and {type(p).__name__}")
    # BEGIN SOLUTION 3.2
    var_ratio = (q.scale / p.scale) ** 2
    mean_term = ((q.loc - p.loc) / p.scale) ** 2
    return 0.5 * (var_ratio + mean_term - 1.0) - (q.log_scale - p.log_scale)
    # END SOLUTION
