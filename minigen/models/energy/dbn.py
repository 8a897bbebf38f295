r"""Deep belief networks — the lecture's Eq. EBM-12.

A DBN with layers :math:`x = h^0, h^1, \dots, h^\ell` is a stack of RBMs read
as one generative model: the top two layers form an undirected RBM and every
layer below is a directed *sigmoid belief* layer that generates the one under it,

.. math:: P(x, h^1, \dots, h^\ell) = \Big(\prod_{k=0}^{\ell-2} P(h^k\mid h^{k+1})\Big)\,
          P(h^{\ell-1}, h^\ell), \qquad
          P(h^k_i = 1\mid h^{k+1}) = \sigma\big(b^{(k+1)}_i + W^{(k+1)}_{i,:} h^{k+1}\big),

where RBM k+1 (weights :math:`W^{(k+1)}`, visible biases :math:`b^{(k+1)}`,
hidden biases :math:`c^{(k+1)}`) connects :math:`h^k` and :math:`h^{k+1}`; its
visible conditional becomes the directed layer, its hidden conditional the
recognition model :math:`Q(h^{k+1}\mid h^k) = \prod_j \sigma(c^{(k+1)}_j + h^{k\top} W^{(k+1)}_{:,j})`.

Greedy layer-wise training (Hinton, Osindero & Teh 2006) trains RBM 1 on the
data, then RBM 2 on :math:`h^1\sim Q(h^1\mid x)`, and so on. Why that is sound
is the variational bound, for any Q,

.. math:: \log P(x) \ge \sum_{h^1} Q(h^1\mid x)\big[\log P(h^1) + \log P(x\mid h^1)\big]
          + \mathcal H\big(Q(\cdot\mid x)\big).

With RBM 2 initialised as the transpose of RBM 1 the two-layer DBN *is* RBM 1
(its prior :math:`P(h^1)` is RBM 1's hidden marginal) and Q is its exact
posterior, so the bound equals RBM 1's log-likelihood. Training RBM 2 then only
changes :math:`\log P(h^1)`, and maximising its likelihood on samples of Q
raises the bound: adding a layer does not make the bound worse.

What lives here: :class:`DeepBeliefNet` (the factorisation, top-down sampling,
exact :math:`\log P(x)` and the bound, greedy training as a loop or a per-layer
iterator a Trainer can drive) and :func:`dbn_figures`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
import numpy as np

from ... import backend, nn
from ... import random as mg_random
from ...checks import check_int
from ...numerics import binary_states, logsumexp, softplus
from ..taxonomy import APPROXIMATE
from .rbm import (BernoulliRBM, ContrastiveDivergence, ais_log_partition, base_rate_biases,
                  exact_log_partition, plot_filters)

__all__ = ["DeepBeliefNet", "GreedyLayer", "MAX_ENUMERATED_LATENTS", "dbn_figures"]

#: The exact bound and log P(x) enumerate all 2^n states of the latent layers h^1…h^{ℓ-1}.
MAX_ENUMERATED_LATENTS = 20

PROPAGATE_MODES = ("sample", "mean")


def _log_bernoulli(bits, logits, xp):
    r""":math:`\log\prod_i \sigma(a_i)^{h_i}(1-\sigma(a_i))^{1-h_i} = h^\top a - \sum_i \operatorname{softplus}(a_i)`
    per row; rows of ``bits`` and ``logits`` broadcast (one x against many hidden states)."""
    return (bits * logits).sum(-1) - softplus(logits, xp).sum(-1)


@dataclass
class GreedyLayer:
    """One stage of greedy training: RBM ``index`` (0-based) and its CD trainer ``cd``.
    :meth:`step` is a Trainer ``step_fn`` (pass ``cd`` in its ``state``); assign a new
    ``cd`` to give this layer its own settings."""

    dbn: "DeepBeliefNet" = field(repr=False)
    index: int
    cd: ContrastiveDivergence
    propagate: str = "sample"

    @property
    def rbm(self) -> BernoulliRBM:
        """The RBM this stage trains (its CD trainer's)."""
        return self.cd.rbm

    def step(self, batch) -> dict:
        """Map a batch of *data* (array or ``(images, labels)``) up through the frozen RBMs
        below, then make one CD update of this one; returns its metrics."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.cd.cd_step(self.dbn.propagate_up(x, self.index, self.propagate))


class DeepBeliefNet(nn.Module):
    r"""A deep belief network over binary units, ``layer_sizes`` = :math:`[n_0, n_1, \dots, n_\ell]` (Eq. EBM-12).

    .. math:: P(x, h^1, \dots, h^\ell) = \Big(\prod_{k=0}^{\ell-2} P(h^k\mid h^{k+1})\Big)\, P(h^{\ell-1}, h^\ell)

    ``rbms[k]`` is a :class:`BernoulliRBM` (n_k, n_{k+1}); the last one is the
    undirected top, the others contribute their visible conditionals as directed
    layers. With two sizes the DBN is a single RBM.
    """

    density = APPROXIMATE        # Eq. TAX-1 (see minigen.models.taxonomy)

    def __init__(self, layer_sizes, device: str = "cpu", weight_scale: float = 0.01):
        super().__init__()
        sizes = list(layer_sizes) if isinstance(layer_sizes, (list, tuple)) else None
        if sizes is None or len(sizes) < 2 or not all(
                isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in sizes):
            raise ValueError(f"DeepBeliefNet: layer_sizes must be a list of at least 2 positive integers "
                             f"(visible first), got {layer_sizes!r}")
        self.layer_sizes = [int(n) for n in sizes]
        self.rbms = nn.ModuleList([BernoulliRBM(n_in, n_out, device, weight_scale)
                                   for n_in, n_out in zip(self.layer_sizes, self.layer_sizes[1:])])

    def extra_repr(self) -> str:
        return f"layer_sizes={self.layer_sizes}"

    # ---------------------------------------------------------------- plumbing
    @property
    def top(self) -> BernoulliRBM:
        """The top RBM, the undirected pair of layers."""
        return self.rbms[-1]

    @property
    def xp(self):
        """The array module of the parameters: NumPy, or CuPy on the GPU."""
        return self.top.xp

    @property
    def device(self) -> str:
        """The device the parameters live on."""
        return self.top.device

    def _as_layer(self, h, k: int, name: str):
        """Layer k's states as a float64 (B, n_k) array, or a ValueError naming ``name``."""
        data = self.xp.asarray(backend.to_device(h, self.device), dtype=self.xp.float64)
        if data.ndim == 1:
            data = data[None]
        if data.ndim != 2 or data.shape[1] != self.layer_sizes[k]:
            raise ValueError(f"DeepBeliefNet: {name} must have shape (B, {self.layer_sizes[k]}), "
                             f"got {tuple(data.shape)}")
        return data

    def _as_data(self, x, name: str = "x"):
        """x as a float64 (B, n_0) array on the model's device (images are flattened)."""
        return self.rbms[0].as_visible(x, name).astype(self.xp.float64)

    def _params64(self, k: int):
        return self.rbms[k]._params64()

    def log_partition(self, exact: bool = True, base_biases=None, **ais_options) -> float:
        """log Z of the top RBM: by enumeration, or (``exact=False``) by :func:`ais_log_partition`."""
        if exact:
            return exact_log_partition(self.top)
        return ais_log_partition(self.top, base_biases, **ais_options).log_z

    # ---------------------------------------------------------------- Eq. EBM-12: the factorisation
    def _log_directed(self, layers):
        r""":math:`\sum_{k=0}^{m-1}\log P(h^k\mid h^{k+1})` over the directed layers within ``layers``
        (:math:`h^0…h^m`, m ≤ ℓ-1), the sigmoid belief layers of the RBMs below the top."""
        total = 0.0
        for k, (below, above) in enumerate(zip(layers, layers[1:])):
            W, b, _ = self._params64(k)
            total = total + _log_bernoulli(below, above @ W.T + b, self.xp)
        return total

    def log_joint(self, x, *hidden, log_z: float | None = None):
        r"""Eq. EBM-12 exactly: :math:`\log P(x, h^1, \dots, h^\ell)` per row (float64).

        .. math:: \log P = \sum_{k=0}^{\ell-2}\log P(h^k\mid h^{k+1})
                  - E_{\text{top}}(h^{\ell-1}, h^\ell) - \log Z_{\text{top}}

        ``hidden`` are the ℓ arrays :math:`h^1…h^\ell`; rows broadcast. ``log_z``
        defaults to the top RBM's exact log partition function.
        """
        if len(hidden) != len(self.rbms):
            raise ValueError(f"DeepBeliefNet.log_joint: needs {len(self.rbms)} hidden layers h1…h{len(self.rbms)} "
                             f"after x, got {len(hidden)}")
        layers = [self._as_data(x)] + [self._as_layer(h, k, f"h{k}") for k, h in enumerate(hidden, 1)]
        log_z = self.log_partition() if log_z is None else float(log_z)
        return self._log_directed(layers[:-1]) - self.top.energy(layers[-2], layers[-1]) - log_z

    def _log_joint_top_summed(self, layers, log_z: float):
        r"""Eq. EBM-12 with the top layer summed out through the top RBM's free energy:

        .. math:: \log P(x, h^1, \dots, h^{\ell-1}) = \sum_{k=0}^{\ell-2}\log P(h^k\mid h^{k+1})
                  - F_{\text{top}}(h^{\ell-1}) - \log Z_{\text{top}}
        """
        return self._log_directed(layers) - self.top.free_energy(layers[-1]) - log_z

    def _log_posterior(self, layers):
        r""":math:`\log Q(h^1, \dots, h^{\ell-1}\mid x) = \sum_{k\ge1}\log Q(h^k\mid h^{k-1})`, the
        factorised recognition model: each RBM's hidden conditional, applied bottom-up."""
        total = 0.0
        for k, (below, above) in enumerate(zip(layers, layers[1:])):
            W, _, c = self._params64(k)
            total = total + _log_bernoulli(above, below @ W + c, self.xp)
        return total

    # ---------------------------------------------------------------- exact sums over the latent layers
    def _check_enumerable(self) -> None:
        sizes = self.layer_sizes[1:-1]
        if sum(sizes) > MAX_ENUMERATED_LATENTS:
            raise ValueError(f"DeepBeliefNet: enumerating 2^{sum(sizes)} states of the latent layers {sizes} is "
                             f"too many; they must have <= {MAX_ENUMERATED_LATENTS} units in all (use exact=False)")

    def _latent_states(self, chunk: int):
        """All joint states of :math:`h^1…h^{\\ell-1}`, ``chunk`` at a time, each as a list of per-layer arrays."""
        self._check_enumerable()
        sizes = self.layer_sizes[1:-1]
        n = sum(sizes)
        edges = np.cumsum([0] + sizes)
        for start in range(0, 2 ** n, chunk):
            states = binary_states(n, start, min(start + chunk, 2 ** n), self.xp, self.xp.float64)
            yield [states[:, lo:hi] for lo, hi in zip(edges, edges[1:])]

    def _per_example(self, x, reduce_chunk, combine, chunk: int):
        """For each row of x: ``combine`` over chunks of ``reduce_chunk(x_row, latents)``; a NumPy (B,) array.
        One row at a time keeps memory at chunk × layer width, whatever the batch."""
        return np.asarray([float(combine([reduce_chunk(row[None], latents) for latents in self._latent_states(chunk)]))
                           for row in self._as_data(x)])

    def log_prob(self, x, log_z: float | None = None, chunk: int = 2 ** 12) -> np.ndarray:
        r"""Exact :math:`\log P(x) = \log\sum_{h^1…h^{\ell-1}} P(x, h^1, \dots, h^{\ell-1})` per row,
        by enumerating the latent layers (≤ :data:`MAX_ENUMERATED_LATENTS` units) — small nets only."""
        self._check_enumerable()
        log_z = self.log_partition() if log_z is None else float(log_z)
        xp = self.xp

        def chunk_logsumexp(row, latents):
            return logsumexp(self._log_joint_top_summed([row] + latents, log_z), xp=xp)
        return self._per_example(x, chunk_logsumexp, lambda parts: logsumexp(xp.stack(parts), xp=xp), chunk)

    # ---------------------------------------------------------------- the variational bound
    def variational_bound(self, x, exact: bool = True, n_samples: int = 100, log_z: float | None = None,
                          chunk: int = 2 ** 12, **ais_options) -> np.ndarray:
        r"""The variational lower bound on :math:`\log P(x)` of Hinton, Osindero & Teh (2006), per row.

        .. math:: \log P(x) \ge \mathbb E_{Q}\big[\log P(x, h^1, \dots, h^{\ell-1})
                  - \log Q(h^1, \dots, h^{\ell-1}\mid x)\big],
                  \qquad Q = \prod_{k=1}^{\ell-1} Q(h^k\mid h^{k-1}),

        which for two layers is the lecture's
        :math:`\sum_{h^1} Q(h^1\mid x)[\log P(h^1) + \log P(x\mid h^1)] + \mathcal H(Q)` with
        :math:`\log P(h^1) = -F_2(h^1) - \log Z_2` from the top RBM. With ``exact`` the
        expectation is a sum over every latent state and log Z is exact (small nets);
        otherwise it is the mean over ``n_samples`` bottom-up draws from Q (an unbiased
        estimate, standard error ~ spread/√n_samples) and log Z comes from AIS
        (``ais_options``: ``betas``, ``n_chains``) unless ``log_z`` is given.
        """
        if exact:
            self._check_enumerable()
            log_z = self.log_partition() if log_z is None else float(log_z)
            return self._exact_bound(x, log_z, chunk)
        return self._sampled_bound(x, n_samples, log_z, ais_options)

    def _exact_bound(self, x, log_z: float, chunk: int) -> np.ndarray:
        def expected_log_ratio(row, latents):
            layers = [row] + latents
            log_q = self._log_posterior(layers)
            return (self.xp.exp(log_q) * (self._log_joint_top_summed(layers, log_z) - log_q)).sum()
        return self._per_example(x, expected_log_ratio, sum, chunk)

    def _sampled_bound(self, x, n_samples: int, log_z, ais_options) -> np.ndarray:
        n_samples = check_int("variational_bound: n_samples", n_samples)
        x = self._as_data(x)
        if log_z is None:
            # AIS starts from the base-rate model of what the top RBM actually sees
            base = base_rate_biases(backend.to_device(self.propagate_up(x, len(self.rbms) - 1, "mean"), "cpu"))
            log_z = self.log_partition(exact=False, base_biases=base, **ais_options)
        layers = [self.xp.repeat(x, n_samples, axis=0)]
        for rbm in self.rbms[:-1]:           # h^k ~ Q(h^k | h^{k-1}), bottom-up
            layers.append(rbm.sample_hidden(layers[-1])[1].astype(self.xp.float64))
        log_ratio = self._log_joint_top_summed(layers, float(log_z)) - self._log_posterior(layers)
        return backend.to_device(log_ratio.reshape(len(x), n_samples).mean(1), "cpu")

    # ---------------------------------------------------------------- top-down generation
    def sample(self, n: int, gibbs_steps: int = 1000, mean: bool = True) -> np.ndarray:
        r"""``n`` samples of x, top-down as Eq. EBM-12 factorises: ``gibbs_steps`` sweeps of block
        Gibbs sampling in the top RBM give :math:`h^{\ell-1}`, then one ancestral pass
        :math:`h^{k}\sim P(h^k\mid h^{k+1})` down the directed layers. Returns the
        probabilities :math:`P(x=1\mid h^1)` of the last step (pictures) or, with
        ``mean=False``, the binary x — a NumPy (n, n_0) array."""
        n = check_int("sample: n", n)
        top = self.top
        h_top = (top._uniform(n, top.n_hidden) < 0.5).astype(top.W.data.dtype)
        p, h, _, _ = top.gibbs(h_top, gibbs_steps)
        for rbm in reversed(self.rbms[:-1]):
            p, h = rbm.sample_visible(h)
        return backend.to_device(p if mean else h, "cpu")

    def propagate_up(self, x, n_layers: int, mode: str = "mean"):
        r"""x mapped through the first ``n_layers`` RBMs: each layer's :math:`Q(h^k = 1\mid h^{k-1})`
        (``mode="mean"``) or a binary draw from it (``"sample"``); an array on the model's device."""
        if mode not in PROPAGATE_MODES:
            raise ValueError(f"DeepBeliefNet: propagate must be one of {PROPAGATE_MODES}, got {mode!r}")
        h = self.rbms[0].as_visible(x, "x")
        for rbm in self.rbms[:n_layers]:
            h = rbm.hidden_probs(h) if mode == "mean" else rbm.sample_hidden(h)[1]
        return h

    # ---------------------------------------------------------------- greedy layer-wise training
    def can_tie(self, k: int) -> bool:
        """Whether RBM k (k ≥ 1) has the shape of RBM k-1 transposed (n_{k+1} = n_{k-1})."""
        return k >= 1 and self.layer_sizes[k + 1] == self.layer_sizes[k - 1]

    def init_from_below(self, k: int) -> None:
        r"""RBM k := RBM k-1 transposed (:math:`W^{(k+1)} = W^{(k)\top}`, biases swapped), so that the
        DBN's prior over :math:`h^k` is RBM k-1's hidden marginal and the bound starts tight."""
        if not self.can_tie(k):
            raise ValueError(f"DeepBeliefNet.init_from_below: RBM {k} is {self.layer_sizes[k]}x"
                             f"{self.layer_sizes[k + 1]}, RBM {k - 1} transposed would be "
                             f"{self.layer_sizes[k]}x{self.layer_sizes[k - 1]}")
        below, rbm = self.rbms[k - 1], self.rbms[k]
        rbm.W.data[...] = below.W.data.T
        rbm.b.data[...], rbm.c.data[...] = below.c.data, below.b.data

    def greedy_layers(self, propagate: str = "sample", tie_init: bool = True, **cd_options):
        r"""Greedy layer-wise training, one :class:`GreedyLayer` at a time (Hinton, Osindero & Teh 2006).

        Train each yielded layer (e.g. with a Trainer, ``step_fn=layer.step``) before
        asking for the next: RBM k is initialised from RBM k-1 transposed *when the
        next layer is requested* (``tie_init`` and sizes allowing), so it starts
        from the trained weights. ``step`` feeds RBM k with :math:`h^k` from
        :meth:`propagate_up` — by default binary samples of Q, fresh every batch, so that
        RBM k's likelihood objective is exactly the :math:`\mathbb E_Q[\log P(h^k)]` term
        of the bound (what the "not lower" guarantee needs); ``"mean"`` feeds the
        probabilities instead (less noise, the usual practice, a surrogate objective).
        ``cd_options`` go to :class:`ContrastiveDivergence` (lr, k, persistent…).

        The guarantee holds only as far as CD raises the likelihood: CD-1 at lr 0.1 with
        momentum 0.9 is far from it and can *lower* the bound of a freshly tied layer;
        CD-10 at lr 0.02, momentum 0.5 raised it in every case tried (see the tests).
        """
        if propagate not in PROPAGATE_MODES:
            raise ValueError(f"DeepBeliefNet: propagate must be one of {PROPAGATE_MODES}, got {propagate!r}")
        return self._greedy_layers(propagate, tie_init, cd_options)

    def _greedy_layers(self, propagate: str, tie_init: bool, cd_options: dict):
        for k, rbm in enumerate(self.rbms):
            if tie_init and self.can_tie(k):      # now: RBM k-1 has been trained
                self.init_from_below(k)
            yield GreedyLayer(self, k, ContrastiveDivergence(rbm, **cd_options), propagate)

    def fit_greedy(self, data, epochs_per_layer, batch_size: int = 100, propagate: str = "sample",
                   tie_init: bool = True, **cd_options) -> list:
        """Train the whole stack greedily: ``epochs_per_layer`` (one number, or one per RBM)
        shuffled epochs of ``batch_size`` for each RBM in turn, via :meth:`greedy_layers`.
        Returns one dict per RBM: ``layer``, ``steps`` and the mean ``reconstruction_error``
        of its last epoch (NaN when CD does not report it)."""
        data = self.rbms[0].as_visible(data, "data")
        epochs = [epochs_per_layer] * len(self.rbms) if np.ndim(epochs_per_layer) == 0 else list(epochs_per_layer)
        if len(epochs) != len(self.rbms):
            raise ValueError(f"DeepBeliefNet.fit_greedy: epochs_per_layer must be a number or {len(self.rbms)} "
                             f"numbers (one per RBM), got {len(epochs)}")
        epochs = [check_int("fit_greedy: epochs_per_layer", e, 0) for e in epochs]
        batch_size = check_int("fit_greedy: batch_size", batch_size)
        history = []
        for layer, n_epochs in zip(self.greedy_layers(propagate, tie_init, **cd_options), epochs):
            errors = []
            for _ in range(n_epochs):
                order = self.xp.asarray(mg_random.generator(self.device).permutation(len(data)))
                errors = [layer.step(data[order[i:i + batch_size]]).get("reconstruction_error", math.nan)
                          for i in range(0, len(data), batch_size)]
            history.append({"layer": layer.index, "steps": layer.cd.steps,
                            "reconstruction_error": float(np.mean(errors)) if errors else math.nan})
        return history


# --------------------------------------------------------------------------- figures

def dbn_figures(model: DeepBeliefNet, run_dir: str, images: np.ndarray, n: int = 64,
                gibbs_steps: int = 1000) -> list:
    """The DBN's pictures for a run folder: ``n`` top-down samples (Eq. EBM-12) and the first
    RBM's filters, shaped like ``images`` (N, C, H, W); returns ``[(caption, png path)]``."""
    from ...viz import save_image_grid

    image_shape = tuple(np.shape(images)[1:])
    if math.prod(image_shape) != model.layer_sizes[0]:
        raise ValueError(f"dbn_figures: images of shape {image_shape} have {math.prod(image_shape)} pixels, "
                         f"the DBN has {model.layer_sizes[0]} visible units")
    samples = model.sample(n, gibbs_steps).reshape(n, *image_shape)
    figures = [(f"top-down samples: {gibbs_steps} Gibbs sweeps in the top RBM, then one pass down (Eq. EBM-12)",
                save_image_grid(samples, os.path.join(run_dir, "dbn_samples.png"), nrow=math.isqrt(n)))]
    if math.prod(image_shape[-2:]) == model.layer_sizes[0]:       # grey images: filters are pictures too
        figures.append(("first-layer filters W[:, j] (what each unit of h1 looks for)",
                        plot_filters(model.rbms[0], os.path.join(run_dir, "dbn_filters.png"),
                                     image_shape=image_shape[-2:])))
    return figures
