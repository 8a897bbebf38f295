r"""The adversarial game (Eq. GAN-1…GAN-4) and Algorithm 1 of Goodfellow et al. (2014).

Two networks play

.. math:: \min_G\max_D V(D,G)=\mathbb E_{x\sim p_{data}}[\log D(x)]
          +\mathbb E_{z\sim p_z}[\log(1-D(G(z)))] .

Every discriminator here returns a **logit** :math:`\ell` with
:math:`D = \sigma(\ell)`, so the two logarithms are computed without ever
forming :math:`D` (which rounds to 0 or 1 in float32 long before the game is
over): :math:`\log D = -\mathrm{softplus}(-\ell)` and
:math:`\log(1-D) = -\mathrm{softplus}(\ell)`.

What lives here:

* :func:`value_function`, the losses of both players (the generator's
  saturating :math:`\log(1-D(G(z)))` of the slide, the non-saturating
  :math:`-\log D(G(z))` the paper recommends, and the Wasserstein critic's),
  gradient penalties (WGAN-GP, R1) built on ``create_graph=True``;
* the theory of Fig. 1 for distributions on a finite set:
  :func:`optimal_discriminator`, :func:`jensen_shannon`, :func:`expected_value`;
* :class:`GAN` — a generator, a discriminator and the noise prior in one module;
* :class:`AdversarialTraining` — Algorithm 1 line by line, usable as the
  Trainer's ``step_fn`` (and checkpointed with it).
"""
from __future__ import annotations

import math

import numpy as np

from ... import nn, ops
from ... import random as mg_random
from ...autograd import Tensor, grad, no_grad
from ..taxonomy import IMPLICIT

__all__ = ["LOSSES", "log_d", "log_one_minus_d", "value_function", "discriminator_loss", "generator_loss",
           "gradient_penalty", "optimal_discriminator", "jensen_shannon", "expected_value", "pack",
           "GAN", "ReplayBuffer", "CheckpointedStep", "AdversarialTraining"]

#: generator objectives: the slide's saturating one, the non-saturating one, the WGAN critic's
LOSSES = ("saturating", "non_saturating", "wasserstein")
PENALTIES = (None, "wgan-gp", "r1")


# --------------------------------------------------------------------------- the value function

def log_d(logits: Tensor) -> Tensor:
    r""":math:`\log D = \log\sigma(\ell) = -\mathrm{softplus}(-\ell)`, exact for any logit."""
    return -ops.softplus(-logits)


def log_one_minus_d(logits: Tensor) -> Tensor:
    r""":math:`\log(1-D) = \log\sigma(-\ell) = -\mathrm{softplus}(\ell)`."""
    return -ops.softplus(logits)


def value_function(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    r"""Eq. GAN-1 on a minibatch: :math:`\frac1m\sum_i\log D(x^{(i)}) + \frac1m\sum_i\log(1-D(G(z^{(i)})))`.

    At the game's equilibrium :math:`D=\tfrac12` everywhere and :math:`V=-\log 4`.
    """
    # BEGIN SOLUTION 5.1
    return log_d(real_logits).mean() + log_one_minus_d(fake_logits).mean()
    # END SOLUTION


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor, loss: str = "non_saturating") -> Tensor:
    r"""What the discriminator *descends* (Algorithm 1 ascends :math:`V`, Eq. GAN-2).

    For both GAN losses it is :math:`-V`; for ``"wasserstein"`` the critic's
    :math:`\mathbb E[\ell(G(z))]-\mathbb E[\ell(x)]` (Arjovsky et al. 2017).
    """
    _check_loss(loss)
    if loss == "wasserstein":
        return fake_logits.mean() - real_logits.mean()
    return -value_function(real_logits, fake_logits)


def generator_loss(fake_logits: Tensor, loss: str = "non_saturating") -> Tensor:
    r"""What the generator *descends* (Eq. GAN-3).

    * ``"saturating"`` — the slide's :math:`\frac1m\sum_i\log(1-D(G(z^{(i)})))`. Its
      gradient w.r.t. the logit is :math:`-D`, which vanishes exactly when D wins
      (early in training, :math:`D(G(z))\to 0`).
    * ``"non_saturating"`` — :math:`-\frac1m\sum_i\log D(G(z^{(i)}))`, same fixed point,
      gradient :math:`-(1-D)`: strongest where the saturating one dies.
    * ``"wasserstein"`` — :math:`-\frac1m\sum_i \ell(G(z^{(i)}))`.
    """
    _check_loss(loss)
    if loss == "saturating":
        return log_one_minus_d(fake_logits).mean()
    if loss == "non_saturating":
        # BEGIN SOLUTION 5.2
        return -log_d(fake_logits).mean()
        # END SOLUTION
    return -fake_logits.mean()


def gradient_penalty(critic, real: Tensor, fake: Tensor, kind: str = "wgan-gp") -> Tensor:
    r"""Gradient penalties on the discriminator, differentiable through its input gradient.

    * ``"wgan-gp"`` (Gulrajani et al. 2017): :math:`\mathbb E_{\hat x}(\lVert\nabla_{\hat x}\ell(\hat x)\rVert_2-1)^2`
      at :math:`\hat x = \epsilon x + (1-\epsilon)G(z)`, :math:`\epsilon\sim U[0,1]` per example;
    * ``"r1"`` (Mescheder et al. 2018): :math:`\tfrac12\mathbb E_x\lVert\nabla_x\ell(x)\rVert_2^2` on real data.

    ``critic(x)`` returns one logit per (packed) example. The input gradient is
    taken with ``create_graph=True`` so that the penalty's own gradient reaches
    the critic's parameters (a double backward).
    """
    if kind not in PENALTIES[1:]:
        raise ValueError(f"gradient_penalty: kind must be one of {PENALTIES[1:]}, got {kind!r}")
    if kind == "r1":
        point = real.detach()
    else:
        eps = ops.rand(real.shape[0], *([1] * (real.ndim - 1)), device=real.device, dtype=real.dtype)
        point = eps * real.detach() + (1 - eps) * fake.detach()
    point.requires_grad = True
    (g,) = grad(critic(point).sum(), point, create_graph=True)
    sq_norm = (g * g).reshape(g.shape[0], -1).sum(dim=1)
    if kind == "r1":
        return 0.5 * sq_norm.mean()
    return ((ops.sqrt(sq_norm + 1e-12) - 1) ** 2).mean()


def _check_loss(loss):
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


# --------------------------------------------------------------------------- Fig. 1 on a finite set

def _distribution(name, p) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or p.size == 0 or (p < 0).any() or not math.isclose(p.sum(), 1.0, abs_tol=1e-9):
        raise ValueError(f"{name} must be a 1-D probability vector (non-negative, summing to 1), got {p!r}")
    return p


def optimal_discriminator(p_data, p_g) -> np.ndarray:
    r"""Eq. GAN-4: :math:`D^*(x)=\frac{p_{data}(x)}{p_{data}(x)+p_g(x)}` on a finite set
    (½ where both are 0: no example ever lands there, any value is optimal)."""
    p_data, p_g = _distribution("p_data", p_data), _distribution("p_g", p_g)
    # BEGIN SOLUTION 5.3
    total = p_data + p_g
    return np.divide(p_data, total, out=np.full_like(total, 0.5), where=total > 0)
    # END SOLUTION


def expected_value(d, p_data, p_g) -> float:
    r""":math:`V(D,G)=\sum_x p_{data}(x)\log D(x)+p_g(x)\log(1-D(x))` for a discriminator given by its
    values on a finite set (terms with zero probability count as 0)."""
    d = np.asarray(d, dtype=np.float64)
    p_data, p_g = _distribution("p_data", p_data), _distribution("p_g", p_g)
    with np.errstate(divide="ignore", invalid="ignore"):
        real = np.where(p_data > 0, p_data * np.log(d), 0.0)
        fake = np.where(p_g > 0, p_g * np.log1p(-d), 0.0)
    return float(real.sum() + fake.sum())


def jensen_shannon(p, q) -> float:
    r""":math:`\mathrm{JSD}(p\Vert q)=\tfrac12 KL(p\Vert m)+\tfrac12 KL(q\Vert m)`, :math:`m=\tfrac{p+q}2`, in nats.

    Goodfellow et al.'s Theorem 1: :math:`V(D^*,G) = -\log 4 + 2\,\mathrm{JSD}(p_{data}\Vert p_g)`.
    """
    p, q = _distribution("p", p), _distribution("q", q)
    m = (p + q) / 2

    def kl(a):
        return float(np.sum(np.where(a > 0, a * np.log(np.where(a > 0, a, 1) / np.where(m > 0, m, 1)), 0.0)))
    return 0.5 * kl(p) + 0.5 * kl(q)


# --------------------------------------------------------------------------- the players

def pack(x: Tensor, packing: int) -> Tensor:
    r"""PacGAN's packing (Lin et al. 2018): ``packing`` consecutive examples become one, concatenated
    along the first feature axis — (m·p, d) → (m, p·d), (m·p, C, H, W) → (m, p·C, H, W). The
    discriminator then judges *sets* of samples, and a generator that repeats itself is caught."""
    if packing == 1:
        return x
    n = x.shape[0]
    if n % packing:
        raise ValueError(f"pack: the batch ({n}) must be a multiple of the packing degree ({packing})")
    return x.reshape(n // packing, packing * x.shape[1], *x.shape[2:])


class GAN(nn.Module):
    r"""A generator :math:`G(z)` (or :math:`G(z\mid y)`), a discriminator returning logits, and the
    noise prior :math:`p_z = \mathcal N(0, I)`.

    ``packing`` > 1 makes it a PacGAN: the discriminator's input holds that many
    samples side by side (build it with ``packing``× the input features).
    ``num_classes`` makes it a conditional GAN (Eq. GAN-7): both networks are
    then called with the labels as a second argument. ``tanh_images``: data are
    images in [0, 1] and G ends in a tanh, so real images are shown to D as
    :math:`2x-1` (:meth:`prepare`) and samples are mapped back to [0, 1].
    """

    density = IMPLICIT        # Eq. TAX-1 (see minigen.models.taxonomy)

    def __init__(self, generator: nn.Module, discriminator: nn.Module, latent_dim: int, packing: int = 1,
                 num_classes: int | None = None, tanh_images: bool = False):
        super().__init__()
        if int(latent_dim) < 1 or int(packing) < 1:
            raise ValueError(f"GAN: latent_dim and packing must be >= 1, got {latent_dim}, {packing}")
        if num_classes and packing > 1:
            raise ValueError("GAN: packing and class labels do not combine (a pack would mix classes)")
        self.generator, self.discriminator = generator, discriminator
        self.latent_dim, self.packing, self.num_classes = int(latent_dim), int(packing), num_classes
        self.tanh_images = bool(tanh_images)

    def noise(self, n: int) -> Tensor:
        """``n`` draws of :math:`z\\sim\\mathcal N(0, I)`, on the generator's device."""
        return ops.randn(n, self.latent_dim, device=self.device)

    def random_labels(self, n: int):
        """Class labels for ``n`` conditional samples, uniform over the classes (None if unconditional)."""
        if not self.num_classes:
            return None
        return ops.tensor(mg_random.generator("cpu").integers(self.num_classes, size=n), dtype="int64",
                          device=self.device)

    def prepare(self, real: Tensor) -> Tensor:
        """Real data in the range of G's output (what D compares fakes with)."""
        return 2 * real - 1 if self.tanh_images else real

    def generate(self, z: Tensor, labels=None) -> Tensor:
        r""":math:`G(z)`, or :math:`G(z\mid y)` for a conditional GAN, in G's output range."""
        return self.generator(z, labels) if self.num_classes else self.generator(z)

    def discriminate(self, x: Tensor, labels=None) -> Tensor:
        """Logits, one per pack of ``packing`` examples (shape (m,))."""
        if self.num_classes:
            return self.discriminator(x, labels).reshape(-1)
        return self.discriminator(pack(x, self.packing)).reshape(-1)

    def sample(self, n: int, labels=None) -> np.ndarray:
        """``n`` samples :math:`G(z)` as a NumPy array, drawn in evaluation mode (a conditional GAN
        takes ``labels``, a sequence of ``n`` classes, or draws them uniformly)."""
        if labels is not None and not isinstance(labels, Tensor):
            labels = ops.tensor(np.asarray(labels), dtype="int64", device=self.device)
        was_training = self.generator.training
        self.generator.eval()
        try:
            with no_grad():
                if labels is None:
                    labels = self.random_labels(n)
                x = self.generate(self.noise(n), labels)
                return ((x + 1) / 2 if self.tanh_images else x).numpy()
        finally:
            self.generator.train(was_training)


class ReplayBuffer:
    r"""Experience replay for the discriminator (the slide's "show old fake images again"; Shrivastava
    et al. 2017): a store of past generator samples. Each discriminator step shows a ``fraction`` of
    its fake minibatch from the store, then writes the newest fakes into random slots, so D keeps
    remembering the modes G has visited and G cannot escape D by hopping between them."""

    def __init__(self, capacity: int = 5000, fraction: float = 0.5):
        if int(capacity) < 1 or not 0.0 < fraction < 1.0:
            raise ValueError(f"ReplayBuffer: capacity must be >= 1 and 0 < fraction < 1, got {capacity}, {fraction}")
        self.capacity, self.fraction = int(capacity), float(fraction)
        self.items: np.ndarray | None = None
        self.size = 0

    def mix(self, fake: Tensor) -> Tensor:
        """The fakes with their first ``fraction`` replaced by stored ones; stores the current fakes."""
        rng = mg_random.generator("cpu")
        current = fake.detach().numpy()
        if self.items is None:
            self.items = np.zeros((self.capacity, *current.shape[1:]), dtype=current.dtype)
        n_old = min(self.size, int(round(self.fraction * len(current))))
        out = current.copy()
        if n_old:
            out[:n_old] = self.items[rng.integers(self.size, size=n_old)]
        for row in current:          # fill the store, then overwrite random slots
            if self.size < self.capacity:
                self.items[self.size] = row
                self.size += 1
            else:
                self.items[rng.integers(self.capacity)] = row
        return ops.tensor(out, device=fake.device)

    def state_dict(self) -> dict:
        """The stored fakes and their count, as NumPy arrays."""
        items = self.items[:self.size] if self.items is not None else np.zeros((0,), np.float32)
        return {"items": items, "size": np.asarray(self.size)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the stored fakes of a :meth:`state_dict`, in a store of this buffer's capacity."""
        items, self.size = np.asarray(state["items"]), int(state["size"])
        self.items = None
        if self.size:
            self.items = np.zeros((self.capacity, *items.shape[1:]), dtype=items.dtype)
            self.items[:self.size] = items


class CheckpointedStep:
    """``state_dict``/``load_state_dict`` over the attributes a training step names in ``_state``
    (optimizers, schedulers, replay stores; ``None`` ones are skipped), so that the Trainer's
    checkpoint resumes the step exactly."""

    _state: tuple = ()

    def state_dict(self) -> dict:
        """``{name: state_dict()}`` of every attribute named in ``_state`` that is not None."""
        return {name: getattr(self, name).state_dict() for name in self._state if getattr(self, name) is not None}

    def load_state_dict(self, state: dict) -> None:
        """Restore every attribute named in ``_state`` that is not None from its entry of a :meth:`state_dict`."""
        for name in self._state:
            if getattr(self, name) is not None:
                getattr(self, name).load_state_dict(state[name])


class AdversarialTraining(CheckpointedStep):
    r"""Algorithm 1 (Eq. GAN-2): ``k`` discriminator steps, then one generator step.

    One call is one iteration of the outer loop. The batch it receives holds the
    ``k`` data minibatches of that iteration, ``k·m`` examples (``k·m·packing`` for
    a PacGAN), optionally with labels; each discriminator step draws its own ``m``
    noise samples. The discriminator ascends
    :math:`\frac1m\sum_i[\log D(x^{(i)}) + \log(1-D(G(z^{(i)})))]`, the generator descends
    its loss (``loss``, :func:`generator_loss`). During the generator step the
    discriminator's parameters take no gradient at all, so its optimizer cannot move
    them. Any optimizer works; the paper used momentum.

    ``penalty`` adds ``penalty_weight`` × :func:`gradient_penalty` to the
    discriminator's loss; ``replay`` is a :class:`ReplayBuffer`.
    ``state_dict`` holds both optimizers, the replay store and the update counts, so
    the Trainer's checkpoint resumes the game exactly.
    """

    _state = ("g_optimizer", "d_optimizer", "g_scheduler", "d_scheduler", "replay")

    def __init__(self, gan: GAN, g_optimizer, d_optimizer, *, k: int = 1, loss: str = "non_saturating",
                 penalty: str | None = None, penalty_weight: float = 10.0, replay: ReplayBuffer | None = None,
                 g_scheduler=None, d_scheduler=None):
        if int(k) < 1:
            raise ValueError(f"AdversarialTraining: k (discriminator steps per generator step) must be >= 1, got {k}")
        _check_loss(loss)
        if penalty not in PENALTIES:
            raise ValueError(f"AdversarialTraining: penalty must be one of {PENALTIES}, got {penalty!r}")
        self.gan, self.g_optimizer, self.d_optimizer = gan, g_optimizer, d_optimizer
        self.k, self.loss, self.penalty, self.penalty_weight = int(k), loss, penalty, float(penalty_weight)
        self.replay, self.g_scheduler, self.d_scheduler = replay, g_scheduler, d_scheduler
        self.d_updates = self.g_updates = 0

    # ---- one iteration of the outer loop
    def __call__(self, batch) -> dict:
        x, labels = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        x = x if isinstance(x, Tensor) else ops.tensor(x, device=self.gan.device)
        if not self.gan.num_classes:
            labels = None                   # an unconditional GAN ignores the data's labels
        elif labels is None:
            raise ValueError("AdversarialTraining: a conditional GAN needs (images, labels) batches")
        elif not isinstance(labels, Tensor):
            labels = ops.tensor(labels, dtype="int64", device=self.gan.device)
        n = x.shape[0]
        if n % self.k:
            raise ValueError(f"AdversarialTraining: the batch ({n} examples) must hold k = {self.k} minibatches")
        m = n // self.k
        metrics: dict = {}
        for i in range(self.k):
            part = slice(i * m, (i + 1) * m)
            metrics = self.discriminator_step(x[part], None if labels is None else labels[part])
        metrics.update(self.generator_step(m // self.gan.packing))
        return metrics

    def discriminator_step(self, real: Tensor, labels=None) -> dict:
        """One ascent step of D on a minibatch of real data and ``len(real)`` fresh fakes."""
        gan, n = self.gan, real.shape[0]
        real = gan.prepare(real)
        fake_labels = gan.random_labels(n) if labels is not None else None
        with no_grad():
            fake = gan.generate(gan.noise(n), fake_labels)
        if self.replay is not None:
            fake = self.replay.mix(fake)
        real_logits, fake_logits = gan.discriminate(real, labels), gan.discriminate(fake, fake_labels)
        loss = discriminator_loss(real_logits, fake_logits, self.loss)
        metrics = {"d_loss": float(loss.item()),
                   "d_real": float(ops.sigmoid(real_logits.detach()).mean().item()),
                   "d_fake": float(ops.sigmoid(fake_logits.detach()).mean().item())}
        if self.penalty is not None:
            def critic(v):
                return gan.discriminate(v, labels)
            penalty = gradient_penalty(critic, real, fake, self.penalty)
            metrics["penalty"] = float(penalty.item())
            loss = loss + self.penalty_weight * penalty
        self.d_optimizer.zero_grad()
        loss.backward()
        self.d_optimizer.step()
        if self.d_scheduler is not None:
            self.d_scheduler.step()
        self.d_updates += 1
        return metrics

    def generator_step(self, m: int) -> dict:
        """One descent step of G on ``m`` fresh noise samples (``m`` packs of them for a PacGAN);
        D is frozen throughout."""
        gan = self.gan
        count = m * gan.packing
        labels = gan.random_labels(count)
        gan.discriminator.requires_grad_(False)
        try:
            loss = generator_loss(gan.discriminate(gan.generate(gan.noise(count), labels), labels), self.loss)
            self.g_optimizer.zero_grad()
            loss.backward()
            self.g_optimizer.step()
        finally:
            gan.discriminator.requires_grad_(True)
        if self.g_scheduler is not None:
            self.g_scheduler.step()
        self.g_updates += 1
        return {"g_loss": float(loss.item())}

    # ---- checkpointing (the Trainer saves the GAN module itself)
    def state_dict(self) -> dict:
        """The optimizers, schedulers and replay store, and the counts of D and G updates."""
        return {**super().state_dict(), "updates": np.array([self.d_updates, self.g_updates])}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`, the counts of D and G updates included."""
        super().load_state_dict(state)
        self.d_updates, self.g_updates = (int(v) for v in np.asarray(state["updates"]))
