r"""The forward process, its posterior and the terms of the variational bound (Eq. DIF-3 … DIF-12, DIF-16).

Time runs t = 1 … T as in the lecture and in Ho et al. (2020); a schedule stores
its per-step numbers in arrays indexed ``[t - 1]``. Everything here is closed-form
Gaussian algebra — no network. The model's side (ε-prediction, the samplers)
builds on it.

Notation (one line each, as on the slides):

* :math:`\beta_t` the variance added at step t; :math:`\alpha_t = 1-\beta_t`;
  :math:`\bar\alpha_t=\prod_{s\le t}\alpha_s`, so :math:`\bar\alpha_0 = 1`;
* :math:`\mathrm{SNR}(t)=\bar\alpha_t/(1-\bar\alpha_t)`, the signal-to-noise ratio of
  :math:`x_t` (Kingma et al. 2021): a schedule is any decreasing SNR;
* :math:`\tilde\beta_t=\frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t` the variance of the
  posterior :math:`q(x_{t-1}\mid x_t,x_0)`.

Per-example coefficients are gathered by :func:`coefficient`, which shapes them
(N, 1, …, 1) to broadcast against a batch of any rank.
"""
from __future__ import annotations

import math

import numpy as np

from ... import backend, ops
from ...autograd import Tensor

__all__ = ["NoiseSchedule", "coefficient", "q_step", "q_sample", "q_posterior", "predict_x0", "predict_eps",
           "predict_v", "x0_from_v", "mean_from_eps", "gaussian_kl", "loss_weight", "default_sigma2", "interpolated_log_variance", "prior_kl",
           "discretized_gaussian_log_likelihood"]


class NoiseSchedule:
    r"""A variance schedule :math:`\beta_1,\dots,\beta_T` and everything derived from it.

    Build one with :meth:`linear` (Ho et al.: :math:`10^{-4}\to 0.02`, T = 1000),
    :meth:`cosine` (Nichol & Dhariwal 2021) or :meth:`from_snr` (any decreasing
    signal-to-noise ratio, Kingma et al. 2021). Arrays are float64 NumPy; they are
    constants of the process, not parameters.
    """

    def __init__(self, betas):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 1:
            raise ValueError(f"NoiseSchedule: betas must be a non-empty 1-D sequence, got shape {betas.shape}")
        if not np.all((betas > 0) & (betas < 1)):
            bad = betas[~((betas > 0) & (betas < 1))][0]
            raise ValueError(f"NoiseSchedule: every beta_t must lie in (0, 1), got {bad}")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = np.cumprod(self.alphas)                                   # Eq. DIF-4
        self.alpha_bars_prev = np.concatenate([[1.0], self.alpha_bars[:-1]])       # ᾱ_{t-1}, ᾱ_0 = 1
        self.posterior_variance = (1 - self.alpha_bars_prev) / (1 - self.alpha_bars) * betas   # β̃_t, Eq. DIF-8
        # β̃_1 = 0 has no logarithm; where one is needed, t = 1 borrows β̃_2 (as in Nichol & Dhariwal's code)
        first = self.posterior_variance[1:2] if len(betas) > 1 else betas[:1]
        self.posterior_variance_clipped = np.concatenate([first, self.posterior_variance[1:]])

    @property
    def T(self) -> int:
        """The number of diffusion steps T."""
        return len(self.betas)

    @property
    def snr(self) -> np.ndarray:
        r"""Eq. DIF-16: :math:`\mathrm{SNR}(t)=\bar\alpha_t/(1-\bar\alpha_t)`, t = 1 … T."""
        return self.alpha_bars / (1.0 - self.alpha_bars)

    @classmethod
    def linear(cls, T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        r"""Ho et al.'s schedule: :math:`\beta_t` linear from ``beta_start`` to ``beta_end``."""
        _check_steps(T)
        return cls(np.linspace(beta_start, beta_end, T))

    @classmethod
    def cosine(cls, T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        r"""Nichol & Dhariwal's schedule: :math:`\bar\alpha_t=f(t)/f(0)`,
        :math:`f(t)=\cos^2\big(\frac{t/T+s}{1+s}\frac\pi2\big)`, with
        :math:`\beta_t=1-\bar\alpha_t/\bar\alpha_{t-1}` clipped at ``max_beta`` (the last
        steps would otherwise reach 1)."""
        _check_steps(T)
        f = np.cos((np.arange(T + 1) / T + s) / (1 + s) * np.pi / 2) ** 2
        return cls(np.minimum(1 - f[1:] / f[:-1], max_beta))

    @classmethod
    def from_snr(cls, snr) -> "NoiseSchedule":
        r"""The schedule with the given SNR(1) > … > SNR(T) > 0:
        :math:`\bar\alpha_t=\mathrm{SNR}/(1+\mathrm{SNR})`, :math:`\beta_t=1-\bar\alpha_t/\bar\alpha_{t-1}`."""
        snr = np.asarray(snr, dtype=np.float64)
        if snr.ndim != 1 or snr.size < 1 or not np.all(snr > 0) or np.any(np.diff(snr) >= 0):
            raise ValueError("NoiseSchedule.from_snr: snr must be a positive, strictly decreasing 1-D sequence")
        alpha_bars = snr / (1 + snr)
        return cls(1 - alpha_bars / np.concatenate([[1.0], alpha_bars[:-1]]))

    def __repr__(self):
        return f"NoiseSchedule(T={self.T}, beta_1={self.betas[0]:.3g}, beta_T={self.betas[-1]:.3g})"


def _check_steps(T) -> None:
    if int(T) != T or T < 1:
        raise ValueError(f"NoiseSchedule: T must be a positive integer, got {T}")


def coefficient(values: np.ndarray, t, like: Tensor) -> Tensor:
    """``values[t - 1]`` for a batch of steps ``t`` (N,), shaped (N, 1, …, 1) like ``like``'s rank, in its
    dtype and on its device."""
    t = np.asarray(t.numpy() if isinstance(t, Tensor) else t)
    if t.ndim != 1 or len(t) != like.shape[0]:
        raise ValueError(f"diffusion: t must hold one step per example, shape ({like.shape[0]},), got {t.shape}")
    if t.size and (t.min() < 1 or t.max() > len(values)):
        raise ValueError(f"diffusion: steps t must lie in 1..{len(values)}, got {t.min()}..{t.max()}")
    picked = values[t.astype(np.int64) - 1].reshape(-1, *([1] * (like.ndim - 1)))
    return ops.tensor(picked, dtype=like.dtype, device=like.device)


def q_step(schedule: NoiseSchedule, x_prev: Tensor, t, noise: Tensor) -> Tensor:
    r"""Eq. DIF-3, one forward step: :math:`x_t=\sqrt{1-\beta_t}\,x_{t-1}+\sqrt{\beta_t}\,\epsilon`,
    a sample of :math:`q(x_t\mid x_{t-1})=\mathcal N(\sqrt{1-\beta_t}x_{t-1},\beta_tI)`."""
    return coefficient(np.sqrt(schedule.alphas), t, x_prev) * x_prev + \
        coefficient(np.sqrt(schedule.betas), t, x_prev) * noise


def q_sample(schedule: NoiseSchedule, x0: Tensor, t, noise: Tensor) -> Tensor:
    r"""Eq. DIF-4, the diffusion kernel in one jump:
    :math:`x_t=\sqrt{\bar\alpha_t}\,x_0+\sqrt{1-\bar\alpha_t}\,\epsilon`. Applied to data
    samples :math:`x_0\sim q(x_0)` it samples the marginal (Eq. DIF-5)
    :math:`q(x_t)=\int q(x_0)\,q(x_t\mid x_0)\,dx_0`: ancestral sampling of a Gaussian convolution.

    When nothing needs a gradient (data and noise, as in training) it is one fused kernel
    (``diffusion_q_sample``); otherwise the same formula through the autograd ops."""
    # BEGIN SOLUTION 7.1
    a, b = coefficient(np.sqrt(schedule.alpha_bars), t, x0), coefficient(np.sqrt(1 - schedule.alpha_bars), t, x0)
    # END SOLUTION
    if not (x0.requires_grad or noise.requires_grad):
        fused = backend.get_kernel("diffusion_q_sample", x0.device)
        return Tensor._wrap(fused(x0.data, noise.data, a.data.reshape(-1), b.data.reshape(-1)))
    return a * x0 + b * noise


def q_posterior(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t) -> tuple:
    r"""Eq. DIF-8: :math:`q(x_{t-1}\mid x_t,x_0)=\mathcal N(\tilde\mu_t,\tilde\beta_tI)` with
    :math:`\tilde\mu_t=\frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t}x_0+\frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t}x_t`.
    Returns (mean, variance); the variance is (N, 1, …, 1)."""
    s = schedule
    # BEGIN SOLUTION 7.4
    c0 = np.sqrt(s.alpha_bars_prev) * s.betas / (1 - s.alpha_bars)
    ct = np.sqrt(s.alphas) * (1 - s.alpha_bars_prev) / (1 - s.alpha_bars)
    mean = coefficient(c0, t, x_t) * x0 + coefficient(ct, t, x_t) * x_t
    # END SOLUTION
    return mean, coefficient(s.posterior_variance, t, x_t)


def predict_x0(schedule: NoiseSchedule, x_t: Tensor, t, eps: Tensor) -> Tensor:
    r"""Eq. DIF-4 solved for :math:`x_0`: :math:`x_0=(x_t-\sqrt{1-\bar\alpha_t}\,\epsilon)/\sqrt{\bar\alpha_t}`."""
    return (x_t - coefficient(np.sqrt(1 - schedule.alpha_bars), t, x_t) * eps) / \
        coefficient(np.sqrt(schedule.alpha_bars), t, x_t)


def predict_eps(schedule: NoiseSchedule, x_t: Tensor, t, x0: Tensor) -> Tensor:
    r"""Eq. DIF-4 solved for ε: :math:`\epsilon=(x_t-\sqrt{\bar\alpha_t}\,x_0)/\sqrt{1-\bar\alpha_t}`."""
    return (x_t - coefficient(np.sqrt(schedule.alpha_bars), t, x_t) * x0) / \
        coefficient(np.sqrt(1 - schedule.alpha_bars), t, x_t)


def predict_v(schedule: NoiseSchedule, x0: Tensor, t, eps: Tensor) -> Tensor:
    r"""The v-parameterisation (Salimans & Ho 2022): :math:`v=\sqrt{\bar\alpha_t}\,\epsilon-\sqrt{1-\bar\alpha_t}\,x_0`."""
    return coefficient(np.sqrt(schedule.alpha_bars), t, x0) * eps - \
        coefficient(np.sqrt(1 - schedule.alpha_bars), t, x0) * x0


def x0_from_v(schedule: NoiseSchedule, x_t: Tensor, t, v: Tensor) -> Tensor:
    r""":math:`x_0=\sqrt{\bar\alpha_t}\,x_t-\sqrt{1-\bar\alpha_t}\,v` (a rotation: :math:`\bar\alpha+(1-\bar\alpha)=1`)."""
    return coefficient(np.sqrt(schedule.alpha_bars), t, x_t) * x_t - \
        coefficient(np.sqrt(1 - schedule.alpha_bars), t, x_t) * v


def mean_from_eps(schedule: NoiseSchedule, x_t: Tensor, t, eps: Tensor) -> Tensor:
    r"""Eq. DIF-10: :math:`\mu=\frac1{\sqrt{\alpha_t}}\big(x_t-\frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\epsilon\big)` —
    :math:`\tilde\mu_t` with :math:`x_0` written through ε, and :math:`\mu_\theta` with :math:`\epsilon_\theta`."""
    s = schedule
    return coefficient(1 / np.sqrt(s.alphas), t, x_t) * \
        (x_t - coefficient(s.betas / np.sqrt(1 - s.alpha_bars), t, x_t) * eps)


def gaussian_kl(mean1: Tensor, var1, mean2: Tensor, var2) -> Tensor:
    r"""Elementwise :math:`\mathrm{KL}(\mathcal N(\mu_1,\sigma_1^2)\,\|\,\mathcal N(\mu_2,\sigma_2^2))=
    \frac12\big(\log\frac{\sigma_2^2}{\sigma_1^2}+\frac{\sigma_1^2+(\mu_1-\mu_2)^2}{\sigma_2^2}-1\big)`.
    Variances may be tensors or numbers. With the posterior's fixed variance as the first and σ_t² as
    the second, only the mean term depends on θ: :math:`L_{t-1}=\frac1{2\sigma_t^2}\lVert\tilde\mu_t-
    \mu_\theta\rVert^2+C` (Eq. DIF-9)."""
    var1, var2 = _as_variance(var1, mean1), _as_variance(var2, mean1)
    return 0.5 * (ops.log(var2) - ops.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def _as_variance(v, like: Tensor) -> Tensor:
    return v if isinstance(v, Tensor) else ops.tensor(np.asarray(v, np.float64), dtype=like.dtype, device=like.device)


def loss_weight(schedule: NoiseSchedule, sigma2: np.ndarray | None = None) -> np.ndarray:
    r"""Eq. DIF-11: :math:`\lambda_t=\frac{\beta_t^2}{2\sigma_t^2\,\alpha_t\,(1-\bar\alpha_t)}`, the weight that
    turns :math:`\lVert\epsilon-\epsilon_\theta\rVert^2` into the bound's :math:`L_{t-1}` (per dimension);
    ``sigma2`` defaults to :math:`\sigma_t^2=\tilde\beta_t` (with :math:`\beta_1` at t = 1, where
    :math:`\tilde\beta_1=0`). :math:`L_{simple}` sets every :math:`\lambda_t` to 1."""
    s = schedule
    sigma2 = default_sigma2(s) if sigma2 is None else np.asarray(sigma2, np.float64)
    return s.betas ** 2 / (2 * sigma2 * s.alphas * (1 - s.alpha_bars))


def default_sigma2(schedule: NoiseSchedule) -> np.ndarray:
    r""":math:`\sigma_t^2=\tilde\beta_t`, except :math:`\sigma_1^2=\beta_1` (:math:`\tilde\beta_1=0` would make the
    decoder a point mass)."""
    return np.concatenate([[schedule.betas[0]], schedule.posterior_variance[1:]])


def interpolated_log_variance(schedule: NoiseSchedule, t, frac: Tensor) -> Tensor:
    r"""Eq. DIF-16, learned variances (Nichol & Dhariwal 2021): the network outputs ``frac`` ∈ [0, 1] per
    dimension and :math:`\log\sigma_t^2=\text{frac}\,\log\beta_t+(1-\text{frac})\,\log\tilde\beta_t`, so the
    learned variance always lies between the two fixed choices (:math:`\tilde\beta_1=0` is replaced by
    :math:`\tilde\beta_2`, as in their code)."""
    log_beta_tilde = np.log(schedule.posterior_variance_clipped)
    return frac * coefficient(np.log(schedule.betas), t, frac) + (1.0 - frac) * coefficient(log_beta_tilde, t, frac)


def prior_kl(schedule: NoiseSchedule, x0: Tensor) -> Tensor:
    r""":math:`L_T=\mathrm{KL}(q(x_T\mid x_0)\,\|\,\mathcal N(0,I))` per element: no parameter, ≈ 0 when
    :math:`\bar\alpha_T\approx0`."""
    t = np.full(x0.shape[0], schedule.T)
    mean = coefficient(np.sqrt(schedule.alpha_bars), t, x0) * x0
    return gaussian_kl(mean, coefficient(1 - schedule.alpha_bars, t, x0), ops.zeros_like(mean), 1.0)


def _standard_normal_cdf(z: Tensor) -> Tensor:
    return 0.5 * (1.0 + ops.erf(z * (1 / math.sqrt(2.0))))


def discretized_gaussian_log_likelihood(x: Tensor, mean: Tensor, log_scale: Tensor, bins: int = 256) -> Tensor:
    r"""Eq. DIF-12, the decoder :math:`L_0`: data in [-1, 1] on ``bins`` grey levels, each level the
    integral of :math:`\mathcal N(\mu,\sigma^2)` over its bin :math:`[x-\delta, x+\delta]`,
    :math:`\delta = 1/(\text{bins}-1)`, the first bin open to :math:`-\infty` and the last to
    :math:`+\infty` (Ho et al. eq. 13), so the ``bins`` probabilities sum to 1. Elementwise log-probabilities."""
    half_bin = 1.0 / (bins - 1)
    inv_scale = ops.exp(-log_scale)
    cdf_plus = _standard_normal_cdf((x - mean + half_bin) * inv_scale)
    cdf_minus = _standard_normal_cdf((x - mean - half_bin) * inv_scale)
    tiny = 1e-12                        # log of a probability that underflowed in float32
    middle = ops.log(ops.clamp(cdf_plus - cdf_minus, min=tiny))
    lowest = ops.log(ops.clamp(cdf_plus, min=tiny))
    highest = ops.log(ops.clamp(1.0 - cdf_minus, min=tiny))
    edge = 1.0 - half_bin               # the centres of the first and last bins are -1 and +1
    return ops.where(x < -edge, lowest, ops.where(x > edge, highest, middle))
