r"""Restricted Boltzmann machines — the lecture's Eq. EBM-11.

An RBM is a Boltzmann machine with connections between the visible layer v
and the hidden layer h only (Smolensky's harmonium). Its joint distribution is
a bipartite energy model

.. math:: p(v, h) = \frac{e^{-E(v,h)}}{Z}, \qquad
          E(v, h) = -b^\top v - c^\top h - v^\top W h ,

and because no two units of one layer interact, both conditionals factorize
(Eq. EBM-11, "block Gibbs"):

.. math:: p(h_j = 1\mid v) = \sigma(c_j + v^\top W_{:,j}), \qquad
          p(v_i = 1\mid h) = \sigma(b_i + W_{i,:} h).

Summing the hidden units out gives the *free energy*

.. math:: F(v) = -b^\top v - \sum_j \operatorname{softplus}(c_j + v^\top W_{:,j}),
          \qquad p(v) = \frac{e^{-F(v)}}{Z},

so :math:`\log p(v) = -F(v) - \log Z` and everything hard about an RBM is the
partition function Z. What lives here, in lecture order:

* :class:`BernoulliRBM` and :class:`GaussianBernoulliRBM` — energy, free
  energy, conditionals, block Gibbs sampling through the ``rbm_*`` kernels;
* :class:`ContrastiveDivergence` — CD-k and persistent CD (Tieleman 2008) with
  momentum and weight decay (Hinton's practical guide), a Trainer ``step_fn``;
* :func:`exact_log_partition` — log Z by enumerating the smaller layer (≤ 25 units);
* :func:`ais_log_partition` — annealed importance sampling (Salakhutdinov &
  Murray 2008) for RBMs too big to enumerate, and :func:`ais_vs_exact`, the check
  that both agree;
* :func:`plot_filters` — the weight columns as images.

Parameters are :class:`minigen.nn.Parameter` so ``state_dict`` and checkpoints
work, but training does not use autograd: the CD update is written out, as in
the papers. All array math goes through the parameters' array module, so the
same code runs on ``"cpu"`` (NumPy) and ``"cuda"`` (CuPy).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ... import backend, nn
from ... import random as mg_random
from ...autograd import Tensor
from ...checks import check_int
from ...numerics import binary_states, logsumexp, sigmoid, softplus
from ..taxonomy import APPROXIMATE

__all__ = ["RBM", "BernoulliRBM", "GaussianBernoulliRBM", "ContrastiveDivergence", "base_rate_biases",
           "exact_log_partition", "ais_schedule", "ais_log_partition", "AISEstimate", "ais_vs_exact",
           "plot_filters"]

#: Enumerating 2^25 configurations is the most :func:`exact_log_partition` will do.
MAX_ENUMERATED_UNITS = 25


# --------------------------------------------------------------------------- the models

class RBM(nn.Module):
    """What both RBMs share: the parameters W (n_visible, n_hidden), b, c, the hidden
    conditional, Gibbs sampling and the log-likelihood gradient. A subclass defines the
    visible units: :meth:`free_energy`, :meth:`visible_mean`, :meth:`sample_visible`."""

    density = APPROXIMATE        # Eq. TAX-1 (see minigen.models.taxonomy)

    def __init__(self, n_visible: int, n_hidden: int, device: str = "cpu", weight_scale: float = 0.01):
        super().__init__()
        self.n_visible = check_int(f"{type(self).__name__}: n_visible", n_visible)
        self.n_hidden = check_int(f"{type(self).__name__}: n_hidden", n_hidden)
        xp = backend.xp_for(device)
        g = mg_random.generator(backend.check_device(device))
        # Hinton's guide: small random weights N(0, 0.01²) break the symmetry between hidden units.
        self.W = nn.Parameter(xp.asarray(weight_scale * g.standard_normal((self.n_visible, self.n_hidden)),
                                         dtype=xp.float32))
        self.b = nn.Parameter(xp.zeros(self.n_visible, dtype=xp.float32))
        self.c = nn.Parameter(xp.zeros(self.n_hidden, dtype=xp.float32))

    def extra_repr(self) -> str:
        return f"n_visible={self.n_visible}, n_hidden={self.n_hidden}"

    # ---------------------------------------------------------------- plumbing
    @property
    def device(self) -> str:
        """The device the parameters live on."""
        return self.W.device

    @property
    def xp(self):
        """The array module of the parameters: NumPy, or CuPy on the GPU."""
        return backend.array_module(self.W.data)

    def _uniform(self, *shape):
        return mg_random.generator(self.device).random(shape, dtype=self.W.data.dtype)

    def as_visible(self, v, name: str = "v"):
        """``v`` as a float (B, n_visible) array on the model's device; images are flattened."""
        data = self.xp.asarray(backend.to_device(v.data if isinstance(v, Tensor) else v, self.device))
        per_example = data.size if data.ndim == 1 else math.prod(data.shape[1:])
        if data.ndim == 0 or per_example != self.n_visible:
            raise ValueError(f"{type(self).__name__}: {name} must have {self.n_visible} values per example "
                             f"(shape (B, {self.n_visible}) or images of that size), got shape {tuple(data.shape)}")
        return data.reshape(-1, self.n_visible).astype(self.W.data.dtype, copy=False)

    def _hidden_input(self, v):
        """What the hidden units see of v: v itself (v/σ for Gaussian units)."""
        return v

    # ---------------------------------------------------------------- Eq. EBM-11: conditionals
    def hidden_probs(self, v):
        """:math:`p(h_j = 1\\mid v) = \\sigma(c_j + v^\\top W_{:,j})`, shape (B, n_hidden)."""
        v = self.as_visible(v)
        return sigmoid(self._hidden_input(v) @ self.W.data + self.c.data, self.xp)

    def sample_hidden(self, v):
        """One draw :math:`h\\sim p(h\\mid v)`; returns ``(p, h)`` (the kernel ``rbm_sample_hidden``)."""
        v = self.as_visible(v)
        kernel = backend.get_kernel("rbm_sample_hidden", self.device)
        return kernel(self._hidden_input(v), self.W.data, self.c.data, self._uniform(len(v), self.n_hidden))

    def gibbs(self, h, steps: int):
        """``steps`` sweeps of block Gibbs sampling :math:`v\\sim p(v\\mid h)`, :math:`h\\sim p(h\\mid v)`
        from hidden states ``h``; returns ``(visible mean, v, p(h|v), h)`` of the last sweep."""
        p_v = v = p_h = None
        for _ in range(check_int("gibbs: steps", steps)):
            p_v, v = self.sample_visible(h)
            p_h, h = self.sample_hidden(v)
        return p_v, v, p_h, h

    def sample(self, n: int, steps: int = 1000, init=None, mean: bool = True) -> np.ndarray:
        """``n`` samples from the model by running ``steps`` Gibbs sweeps (one long chain each).

        Chains start from ``init`` (visible vectors, e.g. data: the chain then
        shows what the model "dreams" from there) or from random hidden states.
        Returns the visible means of the last sweep (the usual picture) or, with
        ``mean=False``, the sampled visibles — a NumPy (n, n_visible) array.
        """
        n = check_int("sample: n", n)
        if init is None:
            h = (self._uniform(n, self.n_hidden) < 0.5).astype(self.W.data.dtype)
        else:
            h = self.sample_hidden(self.as_visible(init, "init")[:n])[1]
        p_v, v, _, _ = self.gibbs(h, steps)
        return backend.to_device(p_v if mean else v, "cpu")

    def reconstruct(self, v):
        """One deterministic up-down pass :math:`\\mathbb E[v\\mid h = p(h\\mid v)]`, what "reconstruction error" measures."""
        return self.visible_mean(self.hidden_probs(v))

    # ---------------------------------------------------------------- Eq. EBM-11: learning
    def log_likelihood_gradient(self, v_data, p_data, v_model, p_model) -> dict:
        r"""The gradient of the mean log-likelihood, as a difference of two expectations:

        .. math:: \frac{\partial \log p(v)}{\partial\theta}
                  = -\Big\langle\frac{\partial F}{\partial\theta}\Big\rangle_{\text{data}}
                  + \Big\langle\frac{\partial F}{\partial\theta}\Big\rangle_{\text{model}},
                  \qquad \frac{\partial \log p}{\partial W_{ij}}
                  = \langle v_i h_j\rangle_{\text{data}} - \langle v_i h_j\rangle_{\text{model}} .

        ``p_*`` are :math:`p(h=1\mid v)` of the rows of ``v_*``; with samples from
        the model (CD, PCD) this is the stochastic estimate, with exact model
        expectations (see the tests) the exact gradient. Returns ``{name: array}``.
        """
        xp = self.xp
        # One matmul for both phases: [v⁺; v⁻]ᵀ [p⁺/B; -p⁻/M] = <v h>⁺ - <v h>⁻.
        # BEGIN SOLUTION 6.4
        inputs = xp.concatenate([self._hidden_input(v_data), self._hidden_input(v_model)])
        weights = xp.concatenate([p_data / len(v_data), p_model / -len(v_model)])
        grads = {"W": inputs.T @ weights, "c": weights.sum(0)}
        # END SOLUTION
        grads.update(self._visible_gradient(v_data, p_data, v_model, p_model))
        return grads

    def _visible_gradient(self, v_data, p_data, v_model, p_model) -> dict:
        return {"b": v_data.mean(0) - v_model.mean(0)}

    # ---------------------------------------------------------------- for subclasses
    def free_energy(self, v):
        r"""The free energy :math:`F(v) = -\log\sum_h e^{-E(v,h)}` per row (float64), defined by each subclass."""
        raise NotImplementedError

    def visible_mean(self, h):
        r""":math:`\mathbb E[v\mid h]` per row of hidden states ``h``, defined by each subclass."""
        raise NotImplementedError

    def sample_visible(self, h):
        r"""One draw :math:`v\sim p(v\mid h)`, returned as ``(mean, v)``, defined by each subclass."""
        raise NotImplementedError

    def _log_partition_terms(self, h):
        """:math:`\\log\\sum_v e^{-E(v,h)}` for each row of hidden states ``h`` (float64)."""
        raise NotImplementedError

    def log_prob(self, v, log_z: float):
        """:math:`\\log p(v) = -F(v) - \\log Z` per example (float64); ``log_z`` from
        :func:`exact_log_partition` or :func:`ais_log_partition`."""
        return -self.free_energy(v) - float(log_z)

    def _params64(self):
        return tuple(p.data.astype(self.xp.float64) for p in (self.W, self.b, self.c))


class BernoulliRBM(RBM):
    r"""An RBM with binary visible and hidden units (Eq. EBM-11).

    .. math:: E(v, h) = -b^\top v - c^\top h - v^\top W h, \qquad v\in\{0,1\}^{n_v},\ h\in\{0,1\}^{n_h}

    ``W`` is (n_visible, n_hidden), ``b`` the visible and ``c`` the hidden biases.
    :func:`base_rate_biases` gives the visible biases Hinton's guide recommends
    starting from, :math:`b_i = \log\frac{p_i}{1-p_i}` of the data marginals.
    """

    def energy(self, v, h):
        """:math:`E(v, h) = -b^\\top v - c^\\top h - v^\\top W h` per row (float64)."""
        v = self.as_visible(v).astype(self.xp.float64)
        h = self.xp.asarray(h, dtype=self.xp.float64)
        W, b, c = self._params64()
        return -(v @ b) - (h @ c) - ((v @ W) * h).sum(1)

    def free_energy(self, v):
        """:math:`F(v) = -b^\\top v - \\sum_j \\operatorname{softplus}(c_j + v^\\top W_{:,j})`,
        i.e. :math:`-\\log\\sum_h e^{-E(v,h)}`, per row (float64)."""
        v = self.as_visible(v).astype(self.xp.float64)
        W, b, c = self._params64()
        return -(v @ b) - softplus(v @ W + c, self.xp).sum(1)

    def visible_mean(self, h):
        """:math:`p(v_i = 1\\mid h) = \\sigma(b_i + W_{i,:} h)`."""
        return sigmoid(h @ self.W.data.T + self.b.data, self.xp)

    def sample_visible(self, h):
        """One draw :math:`v\\sim p(v\\mid h)`; returns ``(p, v)`` (the kernel ``rbm_sample_visible``)."""
        kernel = backend.get_kernel("rbm_sample_visible", self.device)
        return kernel(h, self.W.data, self.b.data, self._uniform(len(h), self.n_visible))

    def gibbs(self, h, steps: int):
        """``steps`` block-Gibbs sweeps from ``h``, fused in the kernel ``rbm_gibbs_chain``.

        The uniforms of a sweep are drawn up front, a block of sweeps at a time
        so that long chains need no more than ~16M of them in memory.
        """
        steps = check_int("gibbs: steps", steps)
        kernel = backend.get_kernel("rbm_gibbs_chain", self.device)
        block = max(1, 2 ** 24 // (len(h) * (self.n_visible + self.n_hidden)))
        W, b, c = self.W.data, self.b.data, self.c.data
        for done in range(0, steps, block):
            k = min(block, steps - done)
            p_v, v, p_h, h = kernel(h, W, b, c, self._uniform(k, len(h), self.n_visible),
                                    self._uniform(k, len(h), self.n_hidden))
        return p_v, v, p_h, h

    def pseudo_log_likelihood(self, v):
        r"""A stochastic pseudo-log-likelihood per example, as scikit-learn reports it:
        one random unit i per row, :math:`n_v \log\sigma(F(\tilde v) - F(v))` with
        :math:`\tilde v` = v with unit i flipped (:math:`\approx\sum_i \log p(v_i\mid v_{-i})`)."""
        v = self.as_visible(v)
        flipped = v.copy()
        rows = self.xp.arange(len(v))
        units = mg_random.generator(self.device).integers(0, self.n_visible, len(v))
        flipped[rows, units] = 1 - flipped[rows, units]
        return -self.n_visible * softplus(self.free_energy(v) - self.free_energy(flipped), self.xp)

    def _log_partition_terms(self, h):
        # Σ_v e^{-E(v,h)} = e^{c·h} Π_i (1 + e^{b_i + W_i h})
        W, b, c = self._params64()
        return h @ c + softplus(h @ W.T + b, self.xp).sum(1)


class GaussianBernoulliRBM(RBM):
    r"""An RBM with real-valued Gaussian visible units and binary hidden units.

    .. math:: E(v, h) = \sum_i \frac{(v_i - b_i)^2}{2\sigma_i^2} - c^\top h
              - \sum_{ij} \frac{v_i}{\sigma_i} W_{ij} h_j ,

    so :math:`p(v_i\mid h) = \mathcal N(b_i + \sigma_i W_{i,:}h,\ \sigma_i^2)`,
    :math:`p(h_j = 1\mid v) = \sigma(c_j + (v/\sigma)^\top W_{:,j})` and

    .. math:: F(v) = \sum_i \frac{(v_i - b_i)^2}{2\sigma_i^2}
              - \sum_j \operatorname{softplus}\big(c_j + (v/\sigma)^\top W_{:,j}\big).

    ``sigma`` is a number or one value per visible unit; with ``learn_sigma``
    the per-unit :math:`\log\sigma_i` is a parameter trained with the rest
    (Cho et al. 2011); otherwise it is a fixed buffer (σ = 1 for standardized
    data, Hinton's guide recommends this).
    """

    def __init__(self, n_visible: int, n_hidden: int, sigma=1.0, learn_sigma: bool = False,
                 device: str = "cpu", weight_scale: float = 0.01):
        super().__init__(n_visible, n_hidden, device, weight_scale)
        sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (self.n_visible,)) \
            if np.ndim(sigma) == 0 or np.shape(sigma) == (self.n_visible,) else None
        if sigma is None or not np.all(sigma > 0):
            raise ValueError(f"GaussianBernoulliRBM: sigma must be a positive number or {self.n_visible} "
                             f"positive values, got {sigma!r}")
        log_sigma = self.xp.asarray(np.log(sigma), dtype=self.xp.float32)
        self.learn_sigma = bool(learn_sigma)
        if self.learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", Tensor(log_sigma))

    @property
    def sigma(self):
        r"""σ of each visible unit, :math:`e^{\log\sigma}`, an array on the model's device."""
        return self.xp.exp(self.log_sigma.data)

    def _hidden_input(self, v):
        return v / self.sigma

    def energy(self, v, h):
        """:math:`E(v, h)` above, per row (float64)."""
        v = self.as_visible(v).astype(self.xp.float64)
        h = self.xp.asarray(h, dtype=self.xp.float64)
        W, b, c = self._params64()
        sigma = self.sigma.astype(self.xp.float64)
        return (((v - b) / sigma) ** 2 / 2).sum(1) - h @ c - (((v / sigma) @ W) * h).sum(1)

    def free_energy(self, v):
        """:math:`F(v)` above, per row (float64)."""
        v = self.as_visible(v).astype(self.xp.float64)
        W, b, c = self._params64()
        sigma = self.sigma.astype(self.xp.float64)
        return (((v - b) / sigma) ** 2 / 2).sum(1) - softplus((v / sigma) @ W + c, self.xp).sum(1)

    def visible_mean(self, h):
        """:math:`\\mathbb E[v\\mid h] = b + \\sigma\\odot W h`."""
        return self.b.data + self.sigma * (h @ self.W.data.T)

    def sample_visible(self, h):
        """One draw :math:`v\\sim\\mathcal N(b + \\sigma\\odot Wh, \\sigma^2)`; returns ``(mean, v)``."""
        mean = self.visible_mean(h)
        noise = mg_random.generator(self.device).standard_normal(mean.shape, dtype=mean.dtype)
        return mean, mean + self.sigma * noise

    def _visible_gradient(self, v_data, p_data, v_model, p_model) -> dict:
        sigma = self.sigma
        grads = {"b": (v_data.mean(0) - v_model.mean(0)) / sigma ** 2}      # -∂F/∂b = (v - b)/σ²
        if self.learn_sigma:
            # -∂F/∂log σ_i = (v_i - b_i)²/σ_i² - (v_i/σ_i) W_{i,:} p(h|v)
            def minus_dF(v, p):
                return (((v - self.b.data) / sigma) ** 2 - (v / sigma) * (p @ self.W.data.T)).mean(0)
            grads["log_sigma"] = minus_dF(v_data, p_data) - minus_dF(v_model, p_model)
        return grads

    def _log_partition_terms(self, h):
        # ∫ e^{-E(v,h)} dv = e^{c·h} Π_i √(2π) σ_i exp(b_i m_i / σ_i + m_i²/2), m = W h
        W, b, c = self._params64()
        sigma = self.sigma.astype(self.xp.float64)
        m = h @ W.T
        constant = self.n_visible * 0.5 * math.log(2 * math.pi) + float(self.xp.log(sigma).sum())
        return constant + h @ c + (b * m / sigma + m ** 2 / 2).sum(1)


def base_rate_biases(data, pseudocount: float = 1.0) -> np.ndarray:
    r"""Visible biases of the *base-rate* model, :math:`b_i = \log\frac{p_i}{1-p_i}` with
    :math:`p_i` the (smoothed) fraction of examples with :math:`v_i = 1`.

    With zero weights this RBM is the best factorized model of the data: the
    initial visible biases of Hinton's guide and the AIS starting point of
    Salakhutdinov & Murray (2008). ``pseudocount`` keeps always-off pixels finite.
    """
    x = np.asarray(backend.to_device(data.data if isinstance(data, Tensor) else data, "cpu"), np.float64)
    x = x.reshape(len(x), -1)
    if len(x) == 0 or x.min() < 0 or x.max() > 1:
        raise ValueError(f"base_rate_biases: data must be a non-empty array of values in [0, 1], "
                         f"got shape {x.shape}" + (f" with range [{x.min()}, {x.max()}]" if len(x) else ""))
    p = (x.sum(0) + pseudocount) / (len(x) + 2 * pseudocount)
    return np.log(p) - np.log1p(-p)


# --------------------------------------------------------------------------- training

class ContrastiveDivergence:
    r"""CD-k and persistent CD (Tieleman 2008) for an RBM, as an explicit update.

    One step on a batch :math:`v^+` (Eq. EBM-11, contrastive divergence):

    1. positive phase: :math:`p^+ = p(h\mid v^+)` and a binary sample :math:`h^+`;
    2. negative phase: k Gibbs sweeps from :math:`h^+` (CD-k), or from the
       persistent chains left by the previous step (PCD), give :math:`v^-, p^-`;
    3. :math:`g = \langle v p\rangle^+ - \langle v p\rangle^-` (and the biases),
       then SGD with momentum and L2 weight decay on W (Hinton 2010, §9–10):

    .. math:: \Delta \leftarrow \mu\,\Delta + \eta\,(g - \lambda W), \qquad \theta \leftarrow \theta + \Delta .

    Following Hinton's guide, CD's last visible step uses the probabilities
    (no sampling noise in the reconstruction) and the negative statistics use
    :math:`p(h\mid v^-)`, not binary states. PCD's chains must stay a Markov
    chain, so they sample every unit; so does CD with ``sample_reconstruction``
    (unbiased as k → ∞: the mean-field last step is not). Momentum is ``initial_momentum`` for the
    first ``momentum_warmup`` steps (Hinton: 0.5 while the weights change fast)
    and ``momentum`` after. PCD wants gentler settings than CD: with momentum
    0.9 the weights outrun the chains' mixing and the likelihood oscillates
    (momentum 0.5 or a smaller ``lr``); ``n_chains`` sets how many fantasy
    particles it keeps (default: the batch size). ``lr_schedule(t)``, when given,
    is the learning rate of update t instead of the constant ``lr`` (e.g. a
    cosine decay: a small final rate averages out the gradient noise).

    ``cd_step(batch) -> metrics`` is a Trainer ``step_fn``; pass this object in
    the Trainer's ``state`` so the velocities and the persistent chains are
    checkpointed. Metrics: ``reconstruction_error`` (mean squared error of one
    up-down pass, free for CD) and, every ``monitor_every`` steps,
    ``pseudo_log_likelihood`` of the batch and, given ``validation`` data,
    ``free_energy_gap`` = mean F(validation) − mean F(batch) (a growing gap
    means overfitting, Hinton §6).
    """

    def __init__(self, rbm: RBM, lr: float = 0.1, k: int = 1, persistent: bool = False,
                 momentum: float = 0.9, initial_momentum: float = 0.5, momentum_warmup: int = 0,
                 weight_decay: float = 2e-4, n_chains: int | None = None, monitor_every: int = 100,
                 validation=None, sample_reconstruction: bool = False,
                 lr_schedule: Callable[[int], float] | None = None):
        if not isinstance(rbm, RBM):
            raise ValueError(f"ContrastiveDivergence: rbm must be an RBM, got {type(rbm).__name__}")
        for name, value in (("lr", lr), ("weight_decay", weight_decay)):
            if not value >= 0:
                raise ValueError(f"ContrastiveDivergence: {name} must be >= 0, got {value!r}")
        for name, value in (("momentum", momentum), ("initial_momentum", initial_momentum)):
            if not 0 <= value < 1:
                raise ValueError(f"ContrastiveDivergence: {name} must be in [0, 1), got {value!r}")
        self.rbm, self.lr, self.k, self.persistent = rbm, float(lr), check_int("k", k), bool(persistent)
        self.momentum, self.initial_momentum = float(momentum), float(initial_momentum)
        self.momentum_warmup = check_int("momentum_warmup", momentum_warmup, 0)
        self.weight_decay = float(weight_decay)
        self.sample_reconstruction = bool(sample_reconstruction)
        self.n_chains = None if n_chains is None else check_int("n_chains", n_chains)
        self.monitor_every = check_int("monitor_every", monitor_every, 0)
        self.validation = None if validation is None else rbm.as_visible(validation, "validation")[:1000]
        self.lr_schedule, self.steps = lr_schedule, 0
        self.velocity = {name: rbm.xp.zeros_like(p.data) for name, p in self._parameters().items()}
        self.chains = rbm.xp.zeros((0, rbm.n_hidden), rbm.W.data.dtype)   # PCD's hidden states

    def _parameters(self) -> dict:
        return dict(self.rbm.named_parameters())

    def cd_step(self, batch) -> dict:
        """One CD-k / PCD-k update on ``batch`` (array, Tensor or ``(images, labels)``); returns metrics."""
        rbm = self.rbm
        v_data = rbm.as_visible(batch[0] if isinstance(batch, (tuple, list)) else batch, "batch")
        p_data, h_data = rbm.sample_hidden(v_data)
        v_model, p_model = self._negative_phase(h_data)
        self._update(rbm.log_likelihood_gradient(v_data, p_data, v_model, p_model))
        self.steps += 1
        one_step = not self.persistent and self.k == 1     # then v_model *is* the reconstruction
        return self._metrics(v_data, v_model if one_step else None)

    __call__ = cd_step

    def _negative_phase(self, h_data):
        rbm = self.rbm
        if self.persistent:
            if len(self.chains) == 0:          # first step: start the chains at the data
                n = self.n_chains or len(h_data)
                self.chains = h_data[rbm.xp.arange(n) % len(h_data)]
            _, v, p_h, self.chains = rbm.gibbs(self.chains, self.k)
            return v, p_h
        if self.sample_reconstruction:
            _, v, p_h, _ = rbm.gibbs(h_data, self.k)
            return v, p_h
        h = h_data if self.k == 1 else rbm.gibbs(h_data, self.k - 1)[3]
        v = rbm.visible_mean(h)                # Hinton §3.2: probabilities, not samples
        return v, rbm.hidden_probs(v)

    def _update(self, grads: dict) -> None:
        mu = self.initial_momentum if self.steps < self.momentum_warmup else self.momentum
        lr = self.lr if self.lr_schedule is None else self.lr_schedule(self.steps)
        step = backend.get_kernel("momentum_ascent_step", self.rbm.device)    # the rule above, fused
        for name, param in self._parameters().items():
            decay = self.weight_decay if name == "W" else 0.0                 # biases are not decayed
            step(param.data, self.velocity[name], grads[name], lr, mu, decay)

    def _metrics(self, v_data, reconstruction) -> dict:
        rbm = self.rbm
        monitor = self.monitor_every and self.steps % self.monitor_every == 0
        metrics = {}
        if reconstruction is None and monitor:
            reconstruction = rbm.reconstruct(v_data)
        if reconstruction is not None:
            metrics["reconstruction_error"] = float(((v_data - reconstruction) ** 2).mean())
        if monitor and isinstance(rbm, BernoulliRBM):
            metrics["pseudo_log_likelihood"] = float(rbm.pseudo_log_likelihood(v_data).mean())
        if monitor and self.validation is not None:
            metrics["free_energy_gap"] = float(rbm.free_energy(self.validation).mean()
                                               - rbm.free_energy(v_data).mean())
        return metrics

    def state_dict(self) -> dict:
        """Velocities, persistent chains and the step count (NumPy arrays, for ``mg.save``)."""
        return {"steps": self.steps, "chains": backend.to_device(self.chains, "cpu"),
                "velocity": {k: backend.to_device(v, "cpu") for k, v in self.velocity.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` onto the RBM's device; a ValueError if a velocity is missing or has
        the wrong shape."""
        xp, dtype = self.rbm.xp, self.rbm.W.data.dtype
        missing = set(self.velocity) - set(state["velocity"])
        if missing:
            raise ValueError(f"ContrastiveDivergence.load_state_dict: no velocity for {sorted(missing)}")
        for name, velocity in self.velocity.items():
            new = np.asarray(state["velocity"][name])
            if new.shape != velocity.shape:
                raise ValueError(f"ContrastiveDivergence.load_state_dict: velocity {name!r} has shape "
                                 f"{new.shape}, expected {velocity.shape}")
            self.velocity[name] = xp.asarray(new, dtype=dtype)
        self.chains = xp.asarray(np.asarray(state["chains"]), dtype=dtype).reshape(-1, self.rbm.n_hidden)
        self.steps = int(state["steps"])


# --------------------------------------------------------------------------- log Z, exactly

def exact_log_partition(rbm: RBM, chunk: int = 2 ** 12) -> float:
    r"""log Z by brute force over the smaller layer, in float64 (Eq. EBM-11).

    .. math:: \log Z = \log\sum_h\sum_v e^{-E(v,h)}
              = \log\sum_{h\in\{0,1\}^{n_h}} e^{c^\top h}\prod_i(1 + e^{b_i + W_{i,:}h})
              \quad\text{or}\quad \log\sum_v e^{-F(v)} .

    The :math:`2^n` configurations are built and summed ``chunk`` rows at a
    time (a vectorized logsumexp per chunk, then over chunks), so 2^20 take
    seconds. A Gaussian-Bernoulli RBM always enumerates its hidden layer.
    Refuses layers above 25 units (:data:`MAX_ENUMERATED_UNITS`).
    """
    xp = rbm.xp
    over_hidden = isinstance(rbm, GaussianBernoulliRBM) or rbm.n_hidden <= rbm.n_visible
    n = rbm.n_hidden if over_hidden else rbm.n_visible
    if n > MAX_ENUMERATED_UNITS:
        layer = "hidden" if over_hidden else "visible"
        raise ValueError(f"exact_log_partition: enumerating 2^{n} states of the {layer} layer is too many; "
                         f"the smaller layer must have <= {MAX_ENUMERATED_UNITS} units, got "
                         f"n_visible={rbm.n_visible}, n_hidden={rbm.n_hidden} (use ais_log_partition)")
    parts = []
    for start in range(0, 2 ** n, chunk):
        states = binary_states(n, start, min(start + chunk, 2 ** n), xp, xp.float64)
        terms = rbm._log_partition_terms(states) if over_hidden else -rbm.free_energy(states)
        parts.append(logsumexp(terms, xp=xp))
    return float(logsumexp(xp.stack(parts), xp=xp))


# --------------------------------------------------------------------------- log Z, by AIS

def ais_schedule(scale: float = 1.0) -> np.ndarray:
    """The inverse temperatures of Salakhutdinov & Murray (2008): β in steps of 1e-3 up
    to 0.5, 1e-4 up to 0.9 and 1e-5 up to 1 — 14,500 intermediate distributions.
    ``scale`` < 1 makes every step larger (a shorter schedule for tests)."""
    pieces = [(0.0, 0.5, 1e-3), (0.5, 0.9, 1e-4), (0.9, 1.0, 1e-5)]
    betas = [np.linspace(lo, hi, max(1, round((hi - lo) / (step / scale))) + 1)[:-1] for lo, hi, step in pieces]
    return np.concatenate(betas + [np.ones(1)])


@dataclass
class AISEstimate:
    """An AIS estimate of log Z: ``log_z`` and the interval ``[lower, upper]`` (the mean
    importance weight ± ``n_std`` standard errors, in log space; ``lower`` is -inf
    when the interval reaches 0), plus the M log weights."""

    log_z: float
    lower: float
    upper: float
    log_weights: np.ndarray
    log_z_base: float
    n_betas: int

    def __str__(self) -> str:
        return f"log Z ≈ {self.log_z:.4f} [{self.lower:.4f}, {self.upper:.4f}] ({len(self.log_weights)} chains)"


def ais_log_partition(rbm: RBM, base_biases=None, betas=None, n_chains: int = 100,
                      n_std: float = 3.0) -> AISEstimate:
    r"""Annealed importance sampling estimate of log Z (Salakhutdinov & Murray 2008).

    AIS walks from a base model A with known :math:`Z_A` — here the base-rate RBM,
    zero weights and visible biases ``base_biases`` (:func:`base_rate_biases` of
    the training data; zeros if None) — to the RBM through the intermediate
    distributions, hidden units summed out,

    .. math:: p^*_\beta(v) = e^{(1-\beta) b_A^\top v + \beta b^\top v}
              \prod_j \big(1 + e^{\beta(c_j + v^\top W_{:,j})}\big),
              \qquad Z_0 = 2^{n_h}\prod_i(1 + e^{b_{A,i}}).

    Each of ``n_chains`` runs starts with :math:`v_1\sim p_A` and accumulates
    :math:`\log w = \sum_k \log p^*_{\beta_k}(v_k) - \log p^*_{\beta_{k-1}}(v_k)`,
    moving :math:`v_k\to v_{k+1}` by one Gibbs sweep that leaves
    :math:`p_{\beta_k}` invariant: :math:`h\sim\sigma(\beta_k(c + v^\top W))`,
    :math:`v\sim\sigma(\beta_k(b + Wh) + (1-\beta_k) b_A)` — the kernel
    ``rbm_sample_visible`` fed :math:`\beta_k h` and the mixed bias. Then
    :math:`\hat Z = Z_0\,\overline{w}` is unbiased and
    :math:`\log\hat Z = \log Z_0 + \operatorname{logmeanexp}(\log w)`.
    ``betas`` defaults to :func:`ais_schedule` ().

    For a :class:`GaussianBernoulliRBM` the Gaussian part stays and only the
    couplings are annealed (no ``base_biases``):
    :math:`p^*_\beta(v) = e^{-\sum_i (v_i-b_i)^2/2\sigma_i^2}\prod_j(1 + e^{\beta(c_j + (v/\sigma)^\top W_{:,j})})`,
    :math:`Z_0 = 2^{n_h}\prod_i\sqrt{2\pi}\,\sigma_i`, and the sweep draws
    :math:`v\sim\mathcal N(b + \beta\,\sigma\odot Wh,\ \sigma^2)`.
    """
    if not isinstance(rbm, RBM):
        raise ValueError(f"ais_log_partition: needs an RBM, got {type(rbm).__name__}")
    xp = rbm.xp
    betas = ais_schedule() if betas is None else np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or len(betas) < 2 or betas[0] != 0 or betas[-1] != 1 or np.any(np.diff(betas) <= 0):
        raise ValueError(f"ais_log_partition: betas must increase from 0 to 1 (at least 2 values), "
                         f"got {len(betas)} values from {betas[:1]} to {betas[-1:]}")
    m = check_int("ais_log_partition: n_chains", n_chains)
    path = (_GaussianPath(rbm, base_biases) if isinstance(rbm, GaussianBernoulliRBM)
            else _BernoulliPath(rbm, base_biases))
    W, c64 = rbm.W.data, rbm.c.data.astype(xp.float64)

    v = path.start(m)                                          # v_1 ~ p_A
    log_w = xp.zeros(m, xp.float64)
    for k in range(1, len(betas)):
        beta, previous = float(betas[k]), float(betas[k - 1])
        a = (rbm._hidden_input(v) @ W).astype(xp.float64) + c64   # c + vᵀW, shared by both terms and h
        log_w += ((beta - previous) * path.visible_slope(v)
                  + softplus(beta * a, xp).sum(1) - softplus(previous * a, xp).sum(1))
        if k < len(betas) - 1:                                # the transition T_k leaves p_{β_k} invariant
            h = (rbm._uniform(m, rbm.n_hidden) < sigmoid(beta * a, xp)).astype(W.dtype)
            v = path.sample_visible(h, beta)

    log_w = backend.to_device(log_w, "cpu")
    return AISEstimate(*_log_mean_with_interval(log_w, path.log_z_base, n_std), log_weights=log_w,
                       log_z_base=path.log_z_base, n_betas=len(betas))


class _BernoulliPath:
    """AIS from the base-rate RBM: the visible biases move from b_A to b along the way."""

    def __init__(self, rbm: RBM, base_biases):
        xp, dtype = rbm.xp, rbm.W.data.dtype
        base = np.zeros(rbm.n_visible) if base_biases is None else np.asarray(base_biases, np.float64).reshape(-1)
        if base.shape != (rbm.n_visible,):
            raise ValueError(f"ais_log_partition: base_biases must have shape ({rbm.n_visible},), got {base.shape}")
        self.rbm, self.b_base = rbm, xp.asarray(base, dtype=dtype)
        self.bias_gap = rbm.b.data.astype(xp.float64) - xp.asarray(base)          # d/dβ of the visible term
        self.log_z_base = rbm.n_hidden * math.log(2) + float(softplus(xp.asarray(base), xp).sum())
        self.kernel = backend.get_kernel("rbm_sample_visible", rbm.device)

    def start(self, m):
        rbm = self.rbm
        return (rbm._uniform(m, rbm.n_visible) < sigmoid(self.b_base, rbm.xp)).astype(rbm.W.data.dtype)

    def visible_slope(self, v):
        return v.astype(self.rbm.xp.float64) @ self.bias_gap

    def sample_visible(self, h, beta):
        rbm = self.rbm
        bias = beta * rbm.b.data + (1 - beta) * self.b_base
        return self.kernel(beta * h, rbm.W.data, bias, rbm._uniform(len(h), rbm.n_visible))[1]


class _GaussianPath:
    """AIS for Gaussian visibles: the Gaussian term is the same all the way, only W and c are annealed."""

    def __init__(self, rbm: GaussianBernoulliRBM, base_biases):
        if base_biases is not None:
            raise ValueError("ais_log_partition: base_biases are for binary visibles; a GaussianBernoulliRBM "
                             "starts from its own Gaussian (give None)")
        self.rbm = rbm
        self.log_z_base = (rbm.n_hidden * math.log(2) + rbm.n_visible * 0.5 * math.log(2 * math.pi)
                           + float(rbm.xp.log(rbm.sigma.astype(rbm.xp.float64)).sum()))

    def start(self, m):
        return self.rbm.sample_visible(self.rbm.xp.zeros((m, self.rbm.n_hidden), self.rbm.W.data.dtype))[1]

    def visible_slope(self, v):
        return 0.0

    def sample_visible(self, h, beta):
        return self.rbm.sample_visible(beta * h)[1]


def _log_mean_with_interval(log_w: np.ndarray, offset: float, n_std: float):
    """``offset + log mean(w)`` and ``offset + log(mean(w) ± n_std·sem(w))``, all from log w
    (the weights are rescaled by their largest before exp, so nothing overflows)."""
    top = float(log_w.max())
    r = np.exp(log_w - top)
    mean = float(r.mean())
    sem = float(r.std(ddof=1)) / math.sqrt(len(r)) if len(r) > 1 else 0.0
    lower = math.log(mean - n_std * sem) if mean > n_std * sem else -math.inf
    return offset + top + math.log(mean), offset + top + lower, offset + top + math.log(mean + n_std * sem)


def ais_vs_exact(rbm: BernoulliRBM, data=None, n_chains: int = 100, betas=None, tolerance: float = 0.1) -> dict:
    """The issue's check: AIS must agree with exact log Z within ``tolerance`` nats.

    ``data`` (training images) sets the base-rate biases. Returns a JSON-able
    dict: ``exact``, ``ais``, ``lower``/``upper`` (±3 s.e.), ``difference``,
    ``agrees``, the seconds each took, and — given ``data`` — its mean log-probability
    under both estimates of log Z.
    """
    start = time.perf_counter()
    exact = exact_log_partition(rbm)
    exact_seconds = time.perf_counter() - start
    start = time.perf_counter()
    estimate = ais_log_partition(rbm, None if data is None else base_rate_biases(data), betas, n_chains)
    ais_seconds = time.perf_counter() - start
    report = {"n_visible": rbm.n_visible, "n_hidden": rbm.n_hidden, "exact": exact, "ais": estimate.log_z,
              "lower": estimate.lower, "upper": estimate.upper, "difference": estimate.log_z - exact,
              "agrees": bool(abs(estimate.log_z - exact) <= tolerance), "tolerance": tolerance,
              "n_chains": len(estimate.log_weights), "n_betas": estimate.n_betas,
              "exact_seconds": exact_seconds, "ais_seconds": ais_seconds}
    if data is not None:
        mean_free_energy = float(rbm.free_energy(data).mean())
        report["mean_log_prob_exact"] = -mean_free_energy - exact
        report["mean_log_prob_ais"] = -mean_free_energy - estimate.log_z
    return report


# --------------------------------------------------------------------------- figures

def plot_filters(rbm: RBM, path, n: int = 100, image_shape=(28, 28)) -> str:
    """The first ``n`` weight columns :math:`W_{:,j}` as ``image_shape`` tiles, each
    scaled to [0, 1] on its own (what each hidden unit "looks for"); returns ``path``."""
    from ...viz import save_image_grid

    if math.prod(image_shape) != rbm.n_visible:
        raise ValueError(f"plot_filters: image_shape {tuple(image_shape)} has {math.prod(image_shape)} pixels, "
                         f"the RBM has n_visible={rbm.n_visible}")
    filters = backend.to_device(rbm.W.data[:, :n], "cpu").T.astype(np.float64)
    low, high = filters.min(1, keepdims=True), filters.max(1, keepdims=True)
    tiles = (filters - low) / np.maximum(high - low, 1e-12)
    return save_image_grid(tiles.reshape(-1, 1, *image_shape), path)
