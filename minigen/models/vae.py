r"""Variational autoencoders — the lecture's latent-variable section, Eq. VAE-1…VAE-6, DIF-1, DIF-2.

A VAE models an image x through a latent code z (Eq. VAE-1)

.. math:: p_\theta(x) = \int p(z)\,p_\theta(x\mid z)\,dz ,

an integral no network can do. The encoder therefore *guesses* the posterior
with :math:`q_\phi(z\mid x)` and both networks are trained on the evidence
lower bound (ELBO, Eq. VAE-4 / DIF-1)

.. math:: \mathcal L = \mathbb E_{q_\phi(z\mid x)}[\log p_\theta(x\mid z)]
          - D_{KL}(q_\phi(z\mid x)\,\Vert\,p(z)) \;\le\; \log p_\theta(x).

What lives here, in lecture order:

* encoders and decoders, MLP (Burda et al.'s 784-200-200-50) and convolutional;
* :class:`VAE` — Bernoulli or Gaussian decoder, closed-form KL, the
  reparameterized sample (Eq. VAE-5), prior samples and latent traversals
  (Eq. VAE-6), and the importance-weighted bound of Burda et al. (2016) used
  for test log-likelihoods and, with ``k > 1``, for IWAE training;
* :class:`HierarchicalVAE` — the two-level Markovian hierarchical VAE (Eq. DIF-2)
  that the diffusion section grows out of;
* :class:`LinearGaussianVAE` — a model whose marginal, posterior and every term
  of Eq. VAE-3 are known in closed form, so tests can check the derivation.

Every model here implements :meth:`LatentVariableModel.log_weights`, the
log importance weight :math:`\log p(x, z) - \log q(z\mid x)` of k posterior
samples; the ELBO, the IWAE bound and the IWAE loss are all built on it.
"""
from __future__ import annotations

import math

import numpy as np

from .. import nn, ops
from ..autograd import Tensor, no_grad
from ..checks import parse_sizes
from ..distributions import Bernoulli, Normal, kl_divergence, sum_except_batch
from .taxonomy import APPROXIMATE

__all__ = ["MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder", "LatentVariableModel",
           "VAE", "HierarchicalVAE", "LinearGaussianVAE", "log_mean_exp"]

LIKELIHOODS = ("bernoulli", "gaussian")


def log_mean_exp(x: Tensor, dim: int = 0) -> Tensor:
    """:math:`\\log \\frac1k\\sum_i e^{x_i}` along ``dim``, computed stably with logsumexp."""
    # BEGIN SOLUTION 3.3
    return x.logsumexp(dim=dim) - math.log(x.shape[dim])
    # END SOLUTION


def _mlp(sizes, activation=nn.Tanh):
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def _check_image_shape(name, image_shape):
    shape = tuple(int(s) for s in image_shape)
    if not shape or any(s <= 0 for s in shape):
        raise ValueError(f"{name}: image_shape must be a tuple of positive sizes, got {image_shape!r}")
    return shape


# --------------------------------------------------------------------------- networks

class MLPEncoder(nn.Module):
    """x → (μ, log σ) of :math:`q_\\phi(z\\mid x)`: flatten, tanh hidden layers, one linear head."""

    def __init__(self, image_shape, latent_dim: int = 50, hidden=(200, 200)):
        super().__init__()
        self.image_shape = _check_image_shape("MLPEncoder", image_shape)
        self.net = _mlp([math.prod(self.image_shape), *hidden, 2 * latent_dim])

    def forward(self, x: Tensor):
        mu, log_sigma = self.net(x.flatten(1)).chunk(2, dim=1)
        return mu, log_sigma


class MLPDecoder(nn.Module):
    """z → the parameters of :math:`p_\\theta(x\\mid z)`, shaped ``(B, params·C, *rest)``.

    ``params_per_pixel`` is 1 for Bernoulli logits (or a Gaussian mean with a
    fixed σ) and 2 for a Gaussian with a learned per-pixel σ.
    """

    def __init__(self, image_shape, latent_dim: int = 50, hidden=(200, 200), params_per_pixel: int = 1):
        super().__init__()
        self.image_shape = _check_image_shape("MLPDecoder", image_shape)
        self.params_per_pixel = params_per_pixel
        self.net = _mlp([latent_dim, *hidden, params_per_pixel * math.prod(self.image_shape)])

    def forward(self, z: Tensor) -> Tensor:
        c, *rest = self.image_shape
        return self.net(z).reshape(z.shape[0], self.params_per_pixel * c, *rest)


class ConvEncoder(nn.Module):
    """Two stride-2 4×4 convolutions (H → H/4) and a linear head to (μ, log σ)."""

    def __init__(self, image_shape, latent_dim: int = 50, channels=(32, 64)):
        super().__init__()
        c, h, w = _check_conv_shape("ConvEncoder", image_shape)
        c1, c2 = channels
        self.net = nn.Sequential(
            nn.Conv2d(c, c1, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(c2 * (h // 4) * (w // 4), 2 * latent_dim))

    def forward(self, x: Tensor):
        mu, log_sigma = self.net(x).chunk(2, dim=1)
        return mu, log_sigma


class ConvDecoder(nn.Module):
    """The mirror of :class:`ConvEncoder`: linear to (C₂, H/4, W/4), two stride-2 transposed convolutions."""

    def __init__(self, image_shape, latent_dim: int = 50, channels=(32, 64), params_per_pixel: int = 1):
        super().__init__()
        c, h, w = _check_conv_shape("ConvDecoder", image_shape)
        c1, c2 = channels
        self.start = (c2, h // 4, w // 4)
        self.fc = nn.Linear(latent_dim, math.prod(self.start))
        self.net = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            nn.ReLU(), nn.ConvTranspose2d(c1, params_per_pixel * c, 4, stride=2, padding=1))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(self.fc(z).reshape(z.shape[0], *self.start))


def _check_conv_shape(name, image_shape):
    shape = _check_image_shape(name, image_shape)
    if len(shape) != 3 or shape[1] % 4 or shape[2] % 4:
        raise ValueError(f"{name}: image_shape must be (C, H, W) with H and W divisible by 4 "
                         f"(two stride-2 layers), got {shape}")
    return shape


# --------------------------------------------------------------------------- the common machinery

class LatentVariableModel(nn.Module):
    """What every model in this file shares: importance weights, the IWAE bound, the loss.

    A subclass implements :meth:`log_weights` (k samples from q, one log weight
    each) and :meth:`sample`; ``k`` is the number of importance samples used
    by :meth:`loss` (k = 1 is the plain VAE objective).
    """

    density = APPROXIMATE        # Eq. TAX-1 (see minigen.models.taxonomy)

    k: int = 1

    def log_weights(self, x: Tensor, k: int) -> Tensor:
        """``(k, B)`` log importance weights :math:`\\log p_\\theta(x, z_i) - \\log q_\\phi(z_i\\mid x)`, z_i ~ q."""
        raise NotImplementedError

    def elbo(self, x: Tensor) -> dict:
        """Per-example ELBO (Monte Carlo, one sample): ``{"elbo": (B,)}``."""
        return {"elbo": self.log_weights(x, 1)[0]}

    def iwae_bound(self, x: Tensor, k: int) -> Tensor:
        r"""The importance-weighted bound of Burda et al. (2016), per example:

        .. math:: \mathcal L_k = \mathbb E\Big[\log \frac1k \sum_{i=1}^k
                  \frac{p_\theta(x, z_i)}{q_\phi(z_i\mid x)}\Big] \le \log p_\theta(x)

        :math:`\mathcal L_1` is the ELBO; :math:`\mathcal L_k` grows with k and
        tends to :math:`\log p_\theta(x)` (Eq. VAE-1 by importance sampling).
        Differentiable, so ``-iwae_bound(x, k).mean()`` is the IWAE loss.
        """
        return log_mean_exp(self.log_weights(x, k), dim=0)

    def loss(self, batch):
        """Negative bound averaged over the batch, and the metrics the trainer logs."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = x if isinstance(x, Tensor) else ops.tensor(x, device=self.device)
        if self.k == 1:
            terms = self.elbo(x)
            loss = -terms["elbo"].mean()
            metrics = {name: float(v.mean().item()) for name, v in terms.items()}
        else:
            bound = self.iwae_bound(x, self.k)
            loss = -bound.mean()
            metrics = {f"iwae{self.k}": float(-loss.item())}
        metrics["loss"] = float(loss.item())
        return loss, metrics


# --------------------------------------------------------------------------- the VAE

class VAE(LatentVariableModel):
    r"""A VAE with a standard-normal prior and a diagonal-Gaussian encoder.

    Parameters
    ----------
    encoder : module mapping x to (μ, log σ) of :math:`q_\phi(z\mid x)`
    decoder : module mapping z to the parameters of :math:`p_\theta(x\mid z)`
    latent_dim : size of z
    likelihood : ``"bernoulli"`` (logits; binary or grey data in [0, 1]) or ``"gaussian"``
    obs_scale : fixed σ of a Gaussian decoder; ``None`` learns a per-pixel σ
        (the decoder then outputs 2 parameters per pixel)
    k : importance samples per example in :meth:`loss` (1 = VAE, > 1 = IWAE training)
    """

    def __init__(self, encoder, decoder, latent_dim: int, likelihood: str = "bernoulli",
                 obs_scale: float | None = None, k: int = 1):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"VAE: likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        if int(k) < 1:
            raise ValueError(f"VAE: k (importance samples) must be >= 1, got {k}")
        self.encoder, self.decoder = encoder, decoder
        self.latent_dim, self.likelihood, self.obs_scale, self.k = latent_dim, likelihood, obs_scale, int(k)

    @staticmethod
    def params_per_pixel(likelihood: str, obs_scale=None) -> int:
        """How many decoder outputs one pixel needs: 2 for a Gaussian with learned σ, else 1."""
        return 2 if likelihood == "gaussian" and obs_scale is None else 1

    # the three distributions of the model
    def posterior(self, x: Tensor) -> Normal:
        """:math:`q_\\phi(z\\mid x) = \\mathcal N(\\mu_{z\\mid x}, \\sigma^2_{z\\mid x})`."""
        mu, log_sigma = self.encoder(x)
        return Normal(mu, log_scale=log_sigma)

    def prior(self, n: int) -> Normal:
        """:math:`p(z) = \\mathcal N(0, I)`."""
        zeros = ops.zeros(n, self.latent_dim, device=self.device)
        return Normal(zeros, scale=ops.ones_like(zeros))

    def decode(self, z: Tensor):
        """:math:`p_\\theta(x\\mid z)`: a Bernoulli over logits, or a Gaussian."""
        params = self.decoder(z)
        if self.likelihood == "bernoulli":
            return Bernoulli(logits=params)
        if self.obs_scale is not None:
            return Normal(params, scale=self.obs_scale)
        loc, raw = params.chunk(2, dim=1)
        # A soft floor at σ = 0.01: constant pixels (MNIST's border) would
        # otherwise drive σ → 0 and the density to infinity.
        return Normal(loc, log_scale=math.log(0.01) + ops.softplus(raw - math.log(0.01)))

    def elbo(self, x: Tensor) -> dict:
        r"""Eq. VAE-4 and Eq. DIF-1, the ELBO per example: closed-form KL, one reparameterized sample.

        .. math:: \mathcal L = \underbrace{\log p_\theta(x\mid z)}_{\text{reconstruction}}
                  - \underbrace{D_{KL}(q_\phi(z\mid x)\Vert p(z))}_{\text{prior matching}},
                  \quad z = \mu + \epsilon\sigma .
        """
        q = self.posterior(x)
        z = q.rsample()                                       # Eq. VAE-5
        reconstruction = self.decode(z).log_prob_per_example(x)
        kl = sum_except_batch(kl_divergence(q, self.prior(x.shape[0])))
        return {"elbo": reconstruction - kl, "reconstruction": reconstruction, "kl": kl}

    def log_weights(self, x: Tensor, k: int) -> Tensor:
        r"""``(k, B)`` log importance weights :math:`\log p_\theta(x\mid z_i) + \log p(z_i) - \log q_\phi(z_i\mid x)`,
        k reparameterized :math:`z_i \sim q_\phi(z\mid x)` per example."""
        q = self.posterior(x)
        z = q.rsample((k,))                                   # (k, B, latent)
        b = x.shape[0]
        log_px_z = self.decode(z.reshape(k * b, *z.shape[2:])).log_prob_per_example(x).reshape(k, b)
        log_pz = sum_except_batch(self.prior(1).log_prob(z), batch_dims=2)
        log_qz = sum_except_batch(q.log_prob(z), batch_dims=2)
        return log_px_z + log_pz - log_qz

    # what a student looks at
    def encode(self, x: Tensor) -> Tensor:
        """The posterior mean :math:`\\mu_{z\\mid x}`: the features a linear probe reads."""
        return self.encoder(x)[0]

    def mean_image(self, z: Tensor) -> Tensor:
        """:math:`\\mathbb E[x\\mid z]`: probabilities for a Bernoulli decoder, the mean for a Gaussian."""
        return self.decode(z).mean

    def sample(self, n: int, mean: bool = True) -> np.ndarray:
        """Eq. VAE-6: :math:`z\\sim p(z)`, :math:`x\\sim p_\\theta(x\\mid z)` (or its mean, the usual picture)."""
        with no_grad():
            px = self.decode(self.prior(n).sample())
            return (px.mean if mean else px.sample()).numpy()

    def reconstruct(self, x: Tensor) -> np.ndarray:
        """Decode the posterior mean of each input: :math:`\\mathbb E[x\\mid z=\\mu_{z\\mid x}]`."""
        with no_grad():
            return self.mean_image(self.encode(x)).numpy()

    def latent_traversal(self, z: Tensor | None = None, dims=None, values=None) -> np.ndarray:
        r"""Eq. VAE-6: vary one latent :math:`z_d` at a time over ``values``, the others held at ``z``.

        Returns images of shape ``(len(dims), len(values), C, H, W)``: row d is
        what the decoder draws as :math:`z_d` sweeps (the slide's "degree of
        smile" axis). Defaults: ``z = 0`` (the prior mean), the first 8 dims,
        9 values in [-2.5, 2.5].
        """
        dims = list(range(min(8, self.latent_dim))) if dims is None else [int(d) for d in dims]
        values = np.linspace(-2.5, 2.5, 9) if values is None else np.asarray(values, dtype=np.float64)
        bad = [d for d in dims if not 0 <= d < self.latent_dim]
        if bad:
            raise ValueError(f"latent_traversal: dims must lie in [0, {self.latent_dim}), got {bad}")
        base = np.zeros(self.latent_dim, np.float32) if z is None else np.asarray(
            z.numpy() if isinstance(z, Tensor) else z, np.float32).reshape(-1)
        if base.shape != (self.latent_dim,):
            raise ValueError(f"latent_traversal: z must have {self.latent_dim} entries, got shape {base.shape}")
        grid = np.repeat(base[None, None], len(dims), 0).repeat(len(values), 1)
        for row, d in enumerate(dims):
            grid[row, :, d] = values
        with no_grad():
            images = self.mean_image(ops.tensor(grid.reshape(-1, self.latent_dim), device=self.device))
        return images.numpy().reshape(len(dims), len(values), *images.shape[1:])


# --------------------------------------------------------------------------- two levels (Eq. DIF-2)

class HierarchicalVAE(LatentVariableModel):
    r"""Eq. DIF-2 with T = 2: a Markovian hierarchical VAE x → z₁ → z₂.

    .. math:: p(x, z_1, z_2) = p(z_2)\,p_\theta(z_1\mid z_2)\,p_\theta(x\mid z_1), \qquad
              q(z_1, z_2\mid x) = q_\phi(z_1\mid x)\,q_\phi(z_2\mid z_1)

    and the bound is :math:`\mathbb E_q[\log p(x,z_1,z_2) - \log q(z_1,z_2\mid x)]`,
    computed from exactly these five factors (:meth:`log_factors`). Every
    conditional is a diagonal Gaussian from an MLP, the decoder Bernoulli.
    Default sizes follow Burda et al.'s two-layer model (100 and 50 latents).
    """

    def __init__(self, image_shape, latents=(100, 50), hidden=((200, 200), (100, 100)), k: int = 1):
        super().__init__()
        self.image_shape = _check_image_shape("HierarchicalVAE", image_shape)
        d, (z1, z2), (h1, h2) = math.prod(self.image_shape), latents, hidden
        self.latents, self.k = tuple(latents), int(k)
        self.q_z1 = _mlp([d, *h1, 2 * z1])           # q(z1 | x)
        self.q_z2 = _mlp([z1, *h2, 2 * z2])          # q(z2 | z1)
        self.p_z1 = _mlp([z2, *h2[::-1], 2 * z1])    # p(z1 | z2)
        self.p_x = _mlp([z1, *h1[::-1], d])          # p(x | z1), Bernoulli logits

    @staticmethod
    def _gaussian(net, h) -> Normal:
        mu, log_sigma = net(h).chunk(2, dim=-1)
        return Normal(mu, log_scale=log_sigma)

    def log_factors(self, x: Tensor, k: int = 1) -> dict:
        """The five log-densities of Eq. DIF-2 at z ~ q, each ``(k, B)``."""
        b = x.shape[0]
        flat_x = x.flatten(1)
        q1 = self._gaussian(self.q_z1, flat_x)
        z1 = q1.rsample((k,))                                       # (k, B, z1)
        q2 = self._gaussian(self.q_z2, z1)
        z2 = q2.rsample()                                           # (k, B, z2)
        p1 = self._gaussian(self.p_z1, z2)
        logits = self.p_x(z1)                                       # (k, B, D)
        standard = Normal(ops.zeros_like(z2), scale=ops.ones_like(z2))

        def total(t):
            return t.sum(dim=-1)
        return {"log p(z2)": total(standard.log_prob(z2)),
                "log p(z1|z2)": total(p1.log_prob(z1)),
                "log p(x|z1)": Bernoulli(logits=logits.reshape(k * b, -1)).log_prob_per_example(flat_x).reshape(k, b),
                "log q(z1|x)": total(q1.log_prob(z1)),
                "log q(z2|z1)": total(q2.log_prob(z2))}

    def log_weights(self, x: Tensor, k: int) -> Tensor:
        r"""``(k, B)`` log importance weights :math:`\log p(x, z_1, z_2) - \log q(z_1, z_2\mid x)`,
        from :meth:`log_factors`."""
        f = self.log_factors(x, k)
        return (f["log p(z2)"] + f["log p(z1|z2)"] + f["log p(x|z1)"]
                - f["log q(z1|x)"] - f["log q(z2|z1)"])

    def elbo(self, x: Tensor) -> dict:
        r"""The one-sample bound above per example, with its reconstruction term :math:`\log p_\theta(x\mid z_1)`."""
        f = {name: v[0] for name, v in self.log_factors(x, 1).items()}
        elbo = f["log p(z2)"] + f["log p(z1|z2)"] + f["log p(x|z1)"] - f["log q(z1|x)"] - f["log q(z2|z1)"]
        return {"elbo": elbo, "reconstruction": f["log p(x|z1)"]}

    def sample(self, n: int, mean: bool = True) -> np.ndarray:
        """Ancestral sampling down the chain: z₂ ~ p(z₂), z₁ ~ p(z₁|z₂), x ~ p(x|z₁)."""
        with no_grad():
            z2 = ops.randn(n, self.latents[1], device=self.device)
            z1 = self._gaussian(self.p_z1, z2).sample()
            px = Bernoulli(logits=self.p_x(z1))
            images = px.mean if mean else px.sample()
            return images.numpy().reshape(n, *self.image_shape)

    def encode(self, x: Tensor) -> Tensor:
        """Mean of :math:`q(z_1\\mid x)`."""
        return self.q_z1(x.flatten(1)).chunk(2, dim=-1)[0]


# --------------------------------------------------------------------------- the tractable model

class LinearGaussianVAE(VAE):
    r"""A VAE whose every quantity is known exactly: the checking ground for Eq. VAE-1…VAE-4.

    Generative model: :math:`p(z) = \mathcal N(0, I_d)`,
    :math:`p(x\mid z) = \mathcal N(Wz + b, \sigma^2 I_D)`, hence

    .. math:: p(x) = \mathcal N(b,\ WW^\top + \sigma^2 I), \qquad
              p(z\mid x) = \mathcal N\big(\Sigma W^\top (x-b)/\sigma^2,\ \Sigma\big),\
              \Sigma = (I + W^\top W/\sigma^2)^{-1}.

    The encoder is linear, :math:`q(z\mid x) = \mathcal N(Ax + c, \mathrm{diag}(s^2))`
    with a free log s: any q, so the decomposition tests hold "for any q".
    It runs through the same :class:`VAE` code (ELBO, IWAE bound) as the
    real models; the ``exact_*`` methods are the NumPy float64 closed forms.
    """

    def __init__(self, data_dim: int, latent_dim: int, obs_scale: float = 0.5):
        enc = _LinearEncoder(data_dim, latent_dim)
        dec = nn.Linear(latent_dim, data_dim)
        super().__init__(enc, dec, latent_dim, likelihood="gaussian", obs_scale=float(obs_scale))
        self.data_dim = data_dim

    def _w_b(self):
        return (self.decoder.weight.detach().numpy().astype(np.float64),
                self.decoder.bias.detach().numpy().astype(np.float64))

    def exact_log_marginal(self, x) -> np.ndarray:
        """Eq. VAE-1 in closed form: :math:`\\log\\mathcal N(x; b, WW^\\top+\\sigma^2 I)`, per row of x."""
        w, b = self._w_b()
        cov = w @ w.T + self.obs_scale ** 2 * np.eye(self.data_dim)
        return _mvn_log_prob(np.asarray(x, np.float64), b, cov)

    def exact_posterior(self, x):
        """Eq. VAE-2 in closed form: mean ``(B, d)`` and shared covariance ``(d, d)`` of :math:`p(z\\mid x)`."""
        w, b = self._w_b()
        s2 = self.obs_scale ** 2
        cov = np.linalg.inv(np.eye(self.latent_dim) + w.T @ w / s2)
        mean = (np.asarray(x, np.float64) - b) @ w @ cov.T / s2
        return mean, cov

    def log_joint(self, x, z) -> np.ndarray:
        """:math:`\\log p(x\\mid z) + \\log p(z)` in float64, for rows of x and z (Bayes' numerator)."""
        w, b = self._w_b()
        x, z = np.asarray(x, np.float64), np.asarray(z, np.float64)
        s2, d = self.obs_scale ** 2, self.data_dim
        log_px_z = -0.5 * ((x - z @ w.T - b) ** 2).sum(-1) / s2 - 0.5 * d * math.log(2 * math.pi * s2)
        log_pz = -0.5 * (z ** 2).sum(-1) - 0.5 * self.latent_dim * math.log(2 * math.pi)
        return log_px_z + log_pz

    def exact_terms(self, x) -> dict:
        r"""The three terms of Eq. VAE-3 in closed form (float64), per row of x:

        expected reconstruction :math:`\mathbb E_q[\log p(x\mid z)]`, prior KL
        :math:`D_{KL}(q\Vert p(z))` and posterior gap :math:`D_{KL}(q\Vert p(z\mid x))`.
        Then ``reconstruction - prior_kl + posterior_kl == exact_log_marginal(x)``.
        """
        x = np.asarray(x, np.float64)
        w, b = self._w_b()
        with no_grad():
            mu_q, log_s = self.encoder(ops.tensor(x.astype(np.float32), device=self.device))
        mu_q, var_q = mu_q.numpy().astype(np.float64), np.exp(2 * log_s.numpy().astype(np.float64))
        s2, d = self.obs_scale ** 2, self.data_dim
        resid = x - mu_q @ w.T - b
        # E_q ||x - Wz - b||^2 = ||x - W mu - b||^2 + tr(W diag(s^2) W^T)
        recon = (-0.5 * ((resid ** 2).sum(-1) + (var_q * (w ** 2).sum(0)).sum(-1)) / s2
                 - 0.5 * d * math.log(2 * math.pi * s2))
        prior_kl = 0.5 * (var_q + mu_q ** 2 - 1.0 - np.log(var_q)).sum(-1)
        mu_p, cov_p = self.exact_posterior(x)
        prec_p = np.linalg.inv(cov_p)
        diff = mu_p - mu_q
        posterior_kl = 0.5 * ((np.diag(prec_p) * var_q).sum(-1) + np.einsum("bi,ij,bj->b", diff, prec_p, diff)
                              - self.latent_dim + np.linalg.slogdet(cov_p)[1] - np.log(var_q).sum(-1))
        return {"reconstruction": recon, "prior_kl": prior_kl, "posterior_kl": posterior_kl}


class _LinearEncoder(nn.Module):
    """q(z|x) = N(Ax + c, diag(s²)) with s a free parameter (independent of x)."""

    def __init__(self, data_dim, latent_dim):
        super().__init__()
        self.mean = nn.Linear(data_dim, latent_dim)
        self.log_scale = nn.Parameter(ops.zeros(latent_dim))

    def forward(self, x):
        mu = self.mean(x)
        return mu, self.log_scale.expand(*mu.shape)


def _mvn_log_prob(x, mean, cov):
    """log N(x; mean, cov) for rows of x (float64, via Cholesky)."""
    chol = np.linalg.cholesky(cov)
    sol = np.linalg.solve(chol, (x - mean).T)
    return (-0.5 * (sol ** 2).sum(0) - np.log(np.diag(chol)).sum()
            - 0.5 * cov.shape[0] * math.log(2 * math.pi))


# --------------------------------------------------------------------------- command-line recipes

def add_vae_arguments(parser) -> None:
    """The options of ``minigen train vae``: the networks, the latent size, the decoder's likelihood and k
    (IWAE for k > 1)."""
    parser.add_argument("--arch", choices=["mlp", "conv"], default="mlp",
                        help="encoder/decoder networks (default: mlp, Burda et al.'s 200-200 tanh)")
    parser.add_argument("--latent", type=int, default=50, help="latent dimensions (default: 50)")
    parser.add_argument("--hidden", default="200,200", help="MLP hidden sizes (default: 200,200)")
    parser.add_argument("--likelihood", choices=LIKELIHOODS, default="bernoulli",
                        help="decoder p(x|z) (default: bernoulli)")
    parser.add_argument("--k", type=int, default=1,
                        help="importance samples in the training bound: 1 = VAE, >1 = IWAE (default: 1)")


def build_vae(cfg: dict, image_shape) -> VAE:
    """The :class:`VAE` ``minigen train vae`` trains, from a run's config and the data's image shape: MLP or
    convolutional encoder and decoder."""
    m = VAE.params_per_pixel(cfg["likelihood"])
    if cfg["arch"] == "mlp":
        hidden = parse_sizes(cfg["hidden"])
        enc, dec = (MLPEncoder(image_shape, cfg["latent"], hidden),
                    MLPDecoder(image_shape, cfg["latent"], hidden[::-1], params_per_pixel=m))
    else:
        enc, dec = ConvEncoder(image_shape, cfg["latent"]), ConvDecoder(image_shape, cfg["latent"], params_per_pixel=m)
    return VAE(enc, dec, cfg["latent"], likelihood=cfg["likelihood"], k=cfg["k"])


def add_hvae_arguments(parser) -> None:
    """The options of ``minigen train hvae``: the sizes of z₁ and z₂, the hidden layers of both networks
    and k."""
    parser.add_argument("--latents", default="100,50", help="sizes of z1,z2 (default: 100,50)")
    parser.add_argument("--hidden", default="200,200", help="hidden sizes of the x<->z1 networks (default: 200,200)")
    parser.add_argument("--hidden2", default="100,100", help="hidden sizes of the z1<->z2 networks (default: 100,100)")
    parser.add_argument("--k", type=int, default=1, help="importance samples in the training bound (default: 1)")


def build_hvae(cfg: dict, image_shape) -> HierarchicalVAE:
    """The :class:`HierarchicalVAE` ``minigen train hvae`` trains, from a run's config and the data's image shape."""
    return HierarchicalVAE(image_shape, parse_sizes(cfg["latents"]), (parse_sizes(cfg["hidden"]), parse_sizes(cfg["hidden2"])),
                           k=cfg["k"])


def vae_figures(model, run_dir: str, images: np.ndarray) -> list:
    """The pictures of the lecture's VAE slides: prior samples, reconstructions, a latent traversal."""
    import os

    from ..metrics import latent_activity
    from ..viz import save_image_grid
    figures = [("samples from the prior (Eq. VAE-6)",
                save_image_grid(model.sample(64), os.path.join(run_dir, "prior_samples.png"), nrow=8))]
    if isinstance(model, VAE):
        x = images[:32]
        recon = model.reconstruct(ops.tensor(x, device=model.device))
        pairs = np.stack([x, recon], 1).reshape(-1, *x.shape[1:])   # input, reconstruction, ...
        figures.append(("inputs and reconstructions, side by side",
                        save_image_grid(pairs, os.path.join(run_dir, "reconstructions.png"), nrow=8)))
        # Most of 50 latents end up inactive (posterior collapse), so show the most used ones.
        with no_grad():
            activity = latent_activity(model.encode(ops.tensor(images, device=model.device)).numpy())
        dims = np.argsort(activity)[::-1][: min(8, model.latent_dim)]
        traversal = model.latent_traversal(dims=dims)
        figures.append(("latent traversal of the 8 most active latents: one row each, z_d from -2.5 to 2.5 "
                        "(Eq. VAE-6)",
                        save_image_grid(traversal.reshape(-1, *traversal.shape[2:]),
                                        os.path.join(run_dir, "latent_traversal.png"), nrow=traversal.shape[1])))
    return figures


def add_vae_eval_arguments(parser) -> None:
    """The ``minigen eval`` options of ``vae`` and ``hvae`` runs: importance samples k for the test
    log-likelihood, how many are drawn at once, and ``--no-probe``."""
    parser.add_argument("--k", type=int, default=5000,
                        help="importance samples for the test log-likelihood (default: 5000, as Burda et al.)")
    parser.add_argument("--chunk", type=int, default=500, help="importance samples drawn at once (memory)")
    parser.add_argument("--no-probe", action="store_true", help="skip the linear probe on q(z|x) features")


def evaluate_vae(model, train, test, args, progress: bool = True) -> dict:
    """Test NLL by the IWAE bound (k samples), ELBO, bits/dim and a linear-probe accuracy."""
    from ..metrics import bits_per_dim, iwae_log_likelihood, latent_activity, linear_probe, summarize

    def batched(fn, images, size=500):
        with no_grad():
            return np.concatenate([fn(ops.tensor(images[i:i + size], device=model.device)).numpy()
                                   for i in range(0, len(images), size)])

    log_px = iwae_log_likelihood(model, test.images, k=args.k, chunk=args.chunk, progress=progress)
    elbo = batched(lambda x: model.elbo(x)["elbo"], test.images)
    nll = summarize(-log_px)
    out = {f"test_nll_iwae{args.k}": nll["mean"], "test_nll_sem": nll["sem"], "test_examples": nll["n"],
           "test_elbo": float(elbo.mean()),
           "bits_per_dim": bits_per_dim(nll["mean"], math.prod(test.images.shape[1:]))}
    # Burda et al.'s count of latents the model uses (A_u > 1e-2).
    test_features = batched(model.encode, test.images)
    out["active_units"] = int((latent_activity(test_features) > 1e-2).sum())
    if not args.no_probe and train.labels is not None and test.labels is not None:
        out["linear_probe_accuracy"] = linear_probe(batched(model.encode, train.images), train.labels,
                                                    test_features, test.labels)
    return out


def periodic_iwae(model, test_images: np.ndarray, cfg: dict):
    """A cheap curve point during training: mean IWAE-k bound (k = ``cfg["eval_k"]``) on a fixed test subset."""
    from ..metrics import iwae_log_likelihood
    k = int(cfg["eval_k"])

    def evaluate():
        model.eval()
        value = float(iwae_log_likelihood(model, test_images, k=k, chunk=k).mean())
        model.train()
        return {f"test/iwae{k}": value}
    return evaluate
