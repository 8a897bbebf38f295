r"""Diffusion models — the lecture's last section, Eq. DIF-3 … DIF-17.

* :mod:`.process` — schedules (linear, cosine, any SNR), the forward process
  q(x_t | x_{t-1}) and q(x_t | x_0), the posterior q(x_{t-1} | x_t, x_0), the
  ε / x_0 / v parameterisations, the Gaussian KL terms of the bound, their
  weights λ_t, the prior term L_T and the discrete decoder L_0;
* :mod:`.ddpm` — Algorithm 1's loss and Algorithm 2's sampler, line by line; DDIM and
  classifier-free guidance;
* :mod:`.recipes` — ``minigen train ddpm``: the model (network + schedule), its options, scores
  and figures;
* :mod:`minigen.models.unet` — the ε-network (Eq. DIF-15).
"""
from .ddpm import (SIGMAS, ddim_sample, ddim_timesteps, ddpm_loss, ddpm_sample, guided, p_sample_step,
                   reverse_variance, variational_bound, variational_bound_estimate, vlb_term)
from .process import (NoiseSchedule, coefficient, default_sigma2, discretized_gaussian_log_likelihood, gaussian_kl,
                      interpolated_log_variance, loss_weight, mean_from_eps, predict_eps, predict_v, predict_x0, prior_kl, q_posterior, q_sample,
                      q_step, x0_from_v)

__all__ = ["SIGMAS", "ddim_sample", "ddim_timesteps", "guided", "ddpm_loss", "ddpm_sample", "p_sample_step", "reverse_variance", "variational_bound", "variational_bound_estimate", "vlb_term", "NoiseSchedule", "coefficient", "default_sigma2", "discretized_gaussian_log_likelihood", "gaussian_kl",
           "interpolated_log_variance", "loss_weight", "mean_from_eps", "predict_eps", "predict_v", "predict_x0", "prior_kl", "q_posterior",
           "q_sample", "q_step", "x0_from_v"]
