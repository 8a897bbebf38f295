r"""DDPM's two algorithms, line by line (Ho et al. 2020; Eq. DIF-6, DIF-13, DIF-14).

``eps_model(x_t, t)`` is any callable that predicts the noise ε from a noisy batch
and its steps t (an (N,) integer array in 1 … T): a U-Net, a small MLP, or — in
the tests — the analytically optimal predictor for Gaussian data.

Algorithm 1 (training)::

    repeat
        x_0 ~ q(x_0);  t ~ Uniform({1, …, T});  ε ~ N(0, I)
        gradient step on ∇_θ ‖ε − ε_θ(√ᾱ_t x_0 + √(1−ᾱ_t) ε, t)‖²

Algorithm 2 (sampling)::

    x_T ~ N(0, I)
    for t = T, …, 1:
        z ~ N(0, I) if t > 1 else z = 0
        x_{t−1} = 1/√α_t (x_t − (1−α_t)/√(1−ᾱ_t) ε_θ(x_t, t)) + σ_t z
    return x_0
"""
from __future__ import annotations

import numpy as np

from ... import backend, ops
from ...autograd import Tensor, no_grad
from .process import NoiseSchedule, coefficient, default_sigma2, loss_weight, predict_v, q_sample

__all__ = ["SIGMAS", "PREDICTIONS", "reverse_variance", "ddpm_loss", "p_sample_step", "ddpm_sample", "ddim_timesteps",
           "ddim_sample", "guided", "vlb_term", "variational_bound", "variational_bound_estimate", "hybrid_loss",
           "uniform_steps"]

#: the two fixed choices of σ_t² in Algorithm 2: β_t (optimal for x_0 ~ N(0, I)) and β̃_t (optimal for
#: a point mass x_0); Ho et al. found both give similar samples
SIGMAS = ("beta", "beta_tilde")


def reverse_variance(schedule: NoiseSchedule, sigma: str = "beta") -> np.ndarray:
    r"""Eq. DIF-16: :math:`\sigma_t^2=\beta_t` or :math:`\tilde\beta_t` (the latter with :math:`\beta_1` at
    t = 1, where :math:`\tilde\beta_1 = 0`), t = 1 … T."""
    if sigma not in SIGMAS:
        raise ValueError(f"diffusion: sigma must be one of {SIGMAS}, got {sigma!r}")
    return schedule.betas.copy() if sigma == "beta" else default_sigma2(schedule)


#: what the network predicts from (x_t, t): the noise (Ho et al.), the clean image, or v (Salimans & Ho)
PREDICTIONS = ("eps", "x0", "v")


def ddpm_loss(schedule: NoiseSchedule, model, x0: Tensor, t=None, noise: Tensor | None = None,
              weighting: str = "simple", prediction: str = "eps") -> Tensor:
    r"""Eq. DIF-13, Algorithm 1's loss on a batch: :math:`\lVert\epsilon-\epsilon_\theta(\sqrt{\bar\alpha_t}x_0+
    \sqrt{1-\bar\alpha_t}\epsilon,t)\rVert^2`, averaged over the batch and the dimensions.

    ``t`` and ``noise`` are drawn when not given (t uniform on 1 … T, ε standard normal).
    ``weighting="simple"`` is :math:`L_{simple}` (λ_t = 1); ``"kl"`` multiplies each example's term by
    λ_t of Eq. DIF-11 (σ_t² = β̃_t), which makes it the bound's :math:`L_{t-1}` up to a constant (for
    ε-prediction). With ``prediction="x0"`` or ``"v"`` the network's output is compared with
    :math:`x_0` or :math:`v=\sqrt{\bar\alpha_t}\epsilon-\sqrt{1-\bar\alpha_t}x_0` instead.
    """
    if weighting not in ("simple", "kl"):
        raise ValueError(f"ddpm_loss: weighting must be 'simple' or 'kl', got {weighting!r}")
    if prediction not in PREDICTIONS:
        raise ValueError(f"ddpm_loss: prediction must be one of {PREDICTIONS}, got {prediction!r}")
    if weighting == "kl" and prediction != "eps":
        raise ValueError("ddpm_loss: the lambda_t weighting is for eps-prediction")
    n = x0.shape[0]
    if t is None:
        t = uniform_steps(schedule.T, n)
    if noise is None:
        noise = ops.randn(*x0.shape, dtype=x0.dtype, device=x0.device)
    # BEGIN SOLUTION 7.3
    x_t = q_sample(schedule, x0, t, noise)                                  # line 5's argument
    target = noise if prediction == "eps" else x0 if prediction == "x0" else predict_v(schedule, x0, t, noise)
    squared = (target - model(x_t, t)) ** 2
    # END SOLUTION
    if weighting == "kl":
        squared = squared * coefficient(loss_weight(schedule), t, x0)
    return squared.mean()


def uniform_steps(T: int, n: int) -> np.ndarray:
    """t ~ Uniform({1, …, T}) per example, from minigen's seeded generator."""
    from ...random import generator
    return generator("cpu").integers(1, T + 1, n)


def p_sample_step(schedule: NoiseSchedule, eps_model, x_t: Tensor, t: int, noise: Tensor | None = None,
                  sigma: str = "beta", out=None) -> Tensor:
    r"""Eq. DIF-14, Algorithm 2's line 4 for one step t (the same for the whole batch):
    :math:`x_{t-1}=\frac1{\sqrt{\alpha_t}}\big(x_t-\frac{1-\alpha_t}{\sqrt{1-\bar\alpha_t}}\epsilon_\theta(x_t,t)\big)
    +\sigma_tz`, with z = 0 at t = 1. ``eps_model`` may return (ε, log σ²): a learned variance per element
    (Nichol & Dhariwal) replaces the fixed ``sigma``. ``out``: an array for x_{t−1}; ``x_t.data`` updates in
    place (the sampler's case)."""
    if not 1 <= int(t) <= schedule.T:
        raise ValueError(f"p_sample_step: t must lie in 1..{schedule.T}, got {t}")
    t = int(t)
    prediction = eps_model(x_t, np.full(x_t.shape[0], t))
    eps, log_var = prediction if isinstance(prediction, tuple) else (prediction, None)   # learned: (ε, log σ²)
    alpha, alpha_bar = schedule.alphas[t - 1], schedule.alpha_bars[t - 1]
    c1, c2 = float(1 / np.sqrt(alpha)), float((1 - alpha) / np.sqrt(1 - alpha_bar))
    # the whole line in one fused pass (the engine's ops would make four passes and three temporaries)
    fused = backend.get_kernel("diffusion_p_sample", x_t.device)
    if t > 1 and noise is None:
        noise = ops.randn(*x_t.shape, dtype=x_t.dtype, device=x_t.device)
    if t == 1 or log_var is not None:
        mean = Tensor._wrap(fused(x_t.data, eps.data, None, c1, c2, 0.0))
        return mean if t == 1 else mean + ops.exp(0.5 * log_var) * noise     # no noise at the last step
    sigma_t = float(np.sqrt(reverse_variance(schedule, sigma)[t - 1]))
    return Tensor._wrap(fused(x_t.data, eps.data, noise.data, c1, c2, sigma_t, out))


def ddpm_sample(schedule: NoiseSchedule, eps_model, shape: tuple, sigma: str = "beta", dtype: str = "float32",
                device: str = "cpu", progress: bool = False, keep_every: int = 0) -> Tensor | tuple:
    r"""Algorithm 2: :math:`x_T\sim\mathcal N(0,I)`, then ``p_sample_step`` for t = T … 1 (Eq. DIF-6: ancestral
    sampling of :math:`p_\theta(x_{0:T})`). With ``keep_every`` > 0 also returns the list of
    (t, x_t) every ``keep_every`` steps (the denoising strip)."""
    from tqdm.auto import tqdm
    x = ops.randn(*shape, dtype=dtype, device=device)
    kept = [(schedule.T, x.clone())] if keep_every else []
    with no_grad():
        for t in tqdm(range(schedule.T, 0, -1), total=schedule.T, disable=not progress, desc="DDPM", unit="step"):
            # in place: x_{t-1} overwrites x_t, which nothing reads again (no allocation per step)
            x = p_sample_step(schedule, eps_model, x, t, sigma=sigma, out=x.data)
            if keep_every and ((t - 1) % keep_every == 0):
                kept.append((t - 1, x.clone()))
    return (x, kept) if keep_every else x


# --------------------------------------------------------------------------- the variational bound (Eq. DIF-7)


def _gaussian_nll(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    return 0.5 * (ops.log(var) + (x - mean) ** 2 / var + float(np.log(2 * np.pi)))


def _sum_dims(v: Tensor) -> Tensor:
    return v.reshape(v.shape[0], -1).sum(dim=1)


def vlb_term(schedule: NoiseSchedule, x0: Tensor, x_t: Tensor, t, mean: Tensor, var, decoder: str = "discrete",
             bins: int = 256) -> Tensor:
    r"""One term of Eq. DIF-7 per example (nats, summed over dimensions), for the reverse step
    :math:`p_\theta(x_{t-1}\mid x_t)=\mathcal N(\text{mean},\text{var})`: for t > 1 the KL
    :math:`L_{t-1}` from the true posterior (Eq. DIF-8/9); for t = 1 the decoder's
    :math:`L_0=-\log p_\theta(x_0\mid x_1)`, over ``bins`` grey levels (Eq. DIF-12, data in [-1, 1]) or,
    with ``decoder="gaussian"``, as a density (continuous data). ``t`` is one step for the batch or
    one per example."""
    from .process import discretized_gaussian_log_likelihood, gaussian_kl, q_posterior
    steps = np.broadcast_to(np.asarray(t), (x0.shape[0],))
    var = var if isinstance(var, Tensor) else ops.full_like(mean, float(var))
    kl = decoder_nll = None
    if np.any(steps > 1):
        true_mean, _ = q_posterior(schedule, x0, x_t, steps)
        # the clipped variance only differs at t = 1, where the decoder's term is taken instead
        kl = _sum_dims(gaussian_kl(true_mean, coefficient(schedule.posterior_variance_clipped, steps, x0), mean, var))
    if np.any(steps == 1):
        decoder_nll = _sum_dims(_gaussian_nll(x0, mean, var)) if decoder == "gaussian" else \
            -_sum_dims(discretized_gaussian_log_likelihood(x0, mean, 0.5 * ops.log(var), bins))
    if kl is None or decoder_nll is None:
        return decoder_nll if kl is None else kl
    return ops.where(ops.tensor(steps == 1, dtype="bool", device=x0.device), decoder_nll, kl)


def variational_bound(schedule: NoiseSchedule, reverse, x0: Tensor, decoder: str = "discrete",
                      progress: bool = False) -> dict:
    r"""Eq. DIF-7 per example: :math:`L=L_T+\sum_{t=2}^{T}L_{t-1}+L_0` (nats), every term evaluated with
    its own draw :math:`x_t\sim q(x_t\mid x_0)` — an unbiased estimate of the bound on −log p(x_0), whose
    KL terms are exact given :math:`x_t`. ``reverse(x_t, t)`` returns the model's (mean, variance) of
    :math:`p_\theta(x_{t-1}\mid x_t)` for a step t shared by the batch. Returns {"total", "prior",
    "decoder", "terms"} (the last: (T,) means over the batch, t = 1 … T, the decoder at t = 1)."""
    from tqdm.auto import tqdm

    from .process import prior_kl
    terms = np.zeros(schedule.T)
    total = _sum_dims(prior_kl(schedule, x0)).numpy().astype(np.float64)
    prior = total.copy()
    with no_grad():
        for t in tqdm(range(schedule.T, 0, -1), total=schedule.T, disable=not progress, desc="bound", unit="step"):
            noise = ops.randn(*x0.shape, dtype=x0.dtype, device=x0.device)
            x_t = q_sample(schedule, x0, np.full(x0.shape[0], t), noise)
            mean, var = reverse(x_t, t)
            term = vlb_term(schedule, x0, x_t, t, mean, var, decoder).numpy().astype(np.float64)
            terms[t - 1] = term.mean()
            total += term
            if t == 1:
                decoder_nll = term
    return {"total": total, "prior": prior, "decoder": decoder_nll, "terms": terms}


def variational_bound_estimate(schedule: NoiseSchedule, reverse, x0: Tensor, decoder: str = "discrete") -> np.ndarray:
    r"""Eq. DIF-7 estimated with one term per example: :math:`L_T + T\,L_{t-1}` for :math:`t\sim U\{1..T\}`
    (the decoder's :math:`L_0` at t = 1), whose expectation over t is the bound itself. One network pass
    per example instead of T — averaged over a test set its mean estimates the bound's, with a standard
    error that shrinks as 1/√N. ``reverse(x_t, t)`` must take one step per example."""
    from .process import prior_kl
    t = uniform_steps(schedule.T, x0.shape[0])
    with no_grad():
        x_t = q_sample(schedule, x0, t, ops.randn(*x0.shape, dtype=x0.dtype, device=x0.device))
        mean, var = reverse(x_t, t)
        term = vlb_term(schedule, x0, x_t, t, mean, var, decoder)
        prior = _sum_dims(prior_kl(schedule, x0))
    return prior.numpy().astype(np.float64) + schedule.T * term.numpy().astype(np.float64)


# --------------------------------------------------------------------------- learned variances (Nichol & Dhariwal)


def hybrid_loss(schedule: NoiseSchedule, eps_pred: Tensor, var_out: Tensor, x0: Tensor, x_t: Tensor, t,
                noise: Tensor, weight: float = 0.001, decoder: str = "discrete") -> tuple:
    r"""Improved DDPM's :math:`L_{hybrid}=L_{simple}+\lambda L_{vlb}` for a network that read ``x_t`` (drawn
    from ``x0`` with ``noise`` at steps ``t``) and output ε and, per dimension, v ∈ [−1, 1] whose
    (v + 1)/2 interpolates log σ_t² (Eq. DIF-16). :math:`L_{vlb}` is the bound's term for each example's
    t (:func:`vlb_term`, in bits per dimension) with the mean's gradient stopped: the bound trains only
    the variance, :math:`L_{simple}` only the mean. Returns (loss, simple, vlb)."""
    from .process import interpolated_log_variance, mean_from_eps
    t = np.asarray(t)
    simple = ((noise - eps_pred) ** 2).mean()
    mean = mean_from_eps(schedule, x_t, t, eps_pred.detach())
    var = ops.exp(interpolated_log_variance(schedule, t, (var_out + 1.0) * 0.5))
    nats = vlb_term(schedule, x0, x_t, t, mean, var, decoder)
    vlb = (nats * (1.0 / float(np.prod(x0.shape[1:]) * np.log(2.0)))).mean()
    return simple + weight * vlb, simple, vlb


# --------------------------------------------------------------------------- DDIM and guidance (named extras)


def ddim_timesteps(T: int, steps: int) -> np.ndarray:
    """``steps`` evenly spaced steps of 1 … T, decreasing, ending at 1 (and starting at T)."""
    if not 1 <= steps <= T:
        raise ValueError(f"ddim: steps must lie in 1..{T}, got {steps}")
    return np.unique(np.round(np.linspace(1, T, steps)).astype(np.int64))[::-1]


def ddim_sample(schedule: NoiseSchedule, eps_model, shape: tuple, steps: int = 50, eta: float = 0.0,
                dtype: str = "float32", device: str = "cpu", progress: bool = False) -> Tensor:
    r"""DDIM (Song et al. 2021) on a subsequence :math:`\tau` of the steps, reusing the trained ε-model:

    :math:`x_{\tau_{i-1}}=\sqrt{\bar\alpha_{\tau_{i-1}}}\,\hat x_0+\sqrt{1-\bar\alpha_{\tau_{i-1}}-\sigma_i^2}\;\hat\epsilon
    +\sigma_i z`, with :math:`\hat x_0` from Eq. DIF-4 solved for :math:`x_0` and
    :math:`\sigma_i=\eta\sqrt{\frac{1-\bar\alpha_{\tau_{i-1}}}{1-\bar\alpha_{\tau_i}}\big(1-\frac{\bar\alpha_{\tau_i}}{\bar\alpha_{\tau_{i-1}}}\big)}`.
    η = 0 is deterministic; η = 1 with all T steps is DDPM with :math:`\sigma_t^2=\tilde\beta_t`. The last jump
    goes to :math:`\bar\alpha = 1` and returns :math:`\hat x_0`."""
    from tqdm.auto import tqdm
    taus = ddim_timesteps(schedule.T, steps)
    x = ops.randn(*shape, dtype=dtype, device=device)
    with no_grad():
        for i, t in enumerate(tqdm(taus, disable=not progress, desc="DDIM", unit="step")):
            ab = schedule.alpha_bars[t - 1]
            ab_prev = schedule.alpha_bars[taus[i + 1] - 1] if i + 1 < len(taus) else 1.0
            eps = eps_model(x, np.full(shape[0], t))
            eps = eps[0] if isinstance(eps, tuple) else eps          # DDIM sets its own variance
            x0 = (x - float(np.sqrt(1 - ab)) * eps) * float(1 / np.sqrt(ab))
            sigma = eta * np.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
            x = float(np.sqrt(ab_prev)) * x0 + float(np.sqrt(max(1 - ab_prev - sigma ** 2, 0.0))) * eps
            if sigma > 0:
                x = x + float(sigma) * ops.randn(*shape, dtype=dtype, device=device)
    return x


def guided(eps_model, labels, scale: float):
    r"""Classifier-free guidance (Ho & Salimans 2022): an ε-model of (x, t) from a conditional one of
    (x, t, labels), :math:`\tilde\epsilon=(1+w)\,\epsilon_\theta(x,t,y)-w\,\epsilon_\theta(x,t,\varnothing)`;
    the model reads ``labels=None`` as "no label" (trained with labels dropped at random). w = 0 is the
    conditional model itself."""
    def eps(x, t):
        conditional = eps_model(x, t, labels)
        if scale == 0:
            return conditional
        unconditional = eps_model(x, t, None)
        if isinstance(conditional, tuple):          # a learned variance: the conditional model's
            return (1.0 + scale) * conditional[0] - scale * unconditional[0], conditional[1]
        return (1.0 + scale) * conditional - scale * unconditional
    return eps
