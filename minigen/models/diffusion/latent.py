r"""Latent diffusion (Eq. DIF-17; Rombach et al. 2022, "Stable Diffusion"): diffuse in the latent space of a
pretrained autoencoder :math:`\mathcal E, \mathcal D`, and condition by cross-attention.

* :class:`KLAutoencoder` — the first stage: the VAE of the VAE section with a *spatial* latent
  (z_channels × H/4 × W/4: a 28×28 digit becomes 4×7×7 numbers) and its KL term down-weighted by β,
  LDM's "KL-reg" autoencoder: the KL keeps the latents near N(0, I) without the blur of a full VAE.
  ``minigen train autoencoder``.
* Conditions are short captions — "a seven", "a thin seven", "a thick two" — over a small vocabulary,
  embedded as a token sequence that every :class:`~minigen.models.unet.CrossAttentionBlock` of the U-Net
  attends to. A class label is the caption without an adjective; "thin" / "thick" are the lightest and
  heaviest thirds of each class by ink (thresholds measured on the training set, kept in the config).
* :class:`LatentDiffusion` — a :class:`~.recipes.DiffusionModel` whose data are the latents
  :math:`z = s\,\mathcal E(x)` (s scales them to unit variance) and whose samples are decoded by
  :math:`\mathcal D(z/s)`. ``minigen train latent_diffusion --autoencoder RUN``.
"""
from __future__ import annotations

import numpy as np

from ... import nn, ops
from ...autograd import Tensor, no_grad
from ..unet import UNet
from ..vae import VAE, _check_conv_shape
from .ddpm import ddpm_loss
from .process import NoiseSchedule
from .recipes import DiffusionModel

__all__ = ["KLAutoencoder", "VOCABULARY", "caption", "tokenize", "ink_thresholds", "stroke_words",
           "ConditionEncoder", "LatentDiffusion", "add_autoencoder_arguments", "build_autoencoder",
           "evaluate_autoencoder", "autoencoder_figures", "add_latent_diffusion_arguments", "build_latent_diffusion"]


# --------------------------------------------------------------------------- the first stage: E and D

class SpatialEncoder(nn.Module):
    """x → (μ, log σ), each (z_channels, H/4, W/4): a 3×3 convolution, two stride-2 4×4 ones, a 3×3 head."""

    def __init__(self, image_shape, z_channels: int = 4, width: int = 32):
        super().__init__()
        c = _check_conv_shape("SpatialEncoder", image_shape)[0]
        self.net = nn.Sequential(
            nn.Conv2d(c, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * z_channels, 3, padding=1))

    def forward(self, x: Tensor):
        mu, log_sigma = self.net(x).chunk(2, dim=1)
        return mu, log_sigma


class SpatialDecoder(nn.Module):
    """The mirror: z (z_channels, H/4, W/4) → per-pixel Bernoulli logits (C, H, W)."""

    def __init__(self, image_shape, z_channels: int = 4, width: int = 32):
        super().__init__()
        c = _check_conv_shape("SpatialDecoder", image_shape)[0]
        self.net = nn.Sequential(
            nn.Conv2d(z_channels, 2 * width, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(2 * width, 2 * width, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(width, c, 3, padding=1))

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class KLAutoencoder(VAE):
    r"""LDM's first stage: a Bernoulli-decoder VAE with a spatial latent, trained on
    :math:`-\log p_\theta(x\mid z) + \beta\, D_{KL}(q_\phi(z\mid x)\Vert\mathcal N(0, I))` (β = 1 is the VAE
    of Eq. VAE-4; a small β makes it an autoencoder whose latents stay near the prior's scale)."""

    def __init__(self, image_shape, z_channels: int = 4, width: int = 32, kl_weight: float = 1e-3):
        c, h, w = _check_conv_shape("KLAutoencoder", image_shape)
        if kl_weight < 0:
            raise ValueError(f"KLAutoencoder: kl_weight must be >= 0, got {kl_weight}")
        self.latent_shape = (int(z_channels), h // 4, w // 4)
        super().__init__(SpatialEncoder(image_shape, z_channels, width), SpatialDecoder(image_shape, z_channels, width),
                         int(np.prod(self.latent_shape)), likelihood="bernoulli")
        self.image_shape, self.kl_weight = (c, h, w), float(kl_weight)

    def prior(self, n: int):
        r""":math:`p(z) = \mathcal N(0, I)` over ``n`` spatial latents of shape ``latent_shape``."""
        from ...distributions import Normal
        zeros = ops.zeros(n, *self.latent_shape, device=self.device)
        return Normal(zeros, scale=ops.ones_like(zeros))

    def loss(self, batch):
        """The objective above averaged over the batch (``kl_weight`` · KL − reconstruction), and the metrics the
        trainer logs."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = x if isinstance(x, Tensor) else ops.tensor(np.asarray(x, np.float32), device=self.device)
        terms = self.elbo(x)
        loss = (self.kl_weight * terms["kl"] - terms["reconstruction"]).mean()
        return loss, {"loss": float(loss.item()), "reconstruction": float(terms["reconstruction"].mean().item()),
                      "kl": float(terms["kl"].mean().item())}

    def reconstruction_error(self, images: np.ndarray, batch_size: int = 500) -> dict:
        """decode(encode(x)) against x for images in [0, 1]: mean absolute and root-mean-square pixel error."""
        errors = []
        for i in range(0, len(images), batch_size):
            x = np.asarray(images[i:i + batch_size], np.float32)
            errors.append(self.reconstruct(ops.tensor(x, device=self.device)) - x)
        e = np.concatenate(errors)
        return {"mae": float(np.abs(e).mean()), "rmse": float(np.sqrt((e ** 2).mean()))}


def add_autoencoder_arguments(parser) -> None:
    """The options of ``minigen train autoencoder``: latent channels, base width and the KL weight β."""
    parser.add_argument("--z-channels", type=int, default=4, help="latent channels at H/4 x W/4 (default: 4)")
    parser.add_argument("--width", type=int, default=32, help="encoder/decoder base width (default: 32)")
    parser.add_argument("--kl-weight", type=float, default=1e-3, help="beta of the KL term (default: 1e-3)")


def build_autoencoder(cfg: dict, image_shape) -> KLAutoencoder:
    """The :class:`KLAutoencoder` ``minigen train autoencoder`` trains, from a run's config and the data's
    image shape."""
    return KLAutoencoder(image_shape, cfg["z_channels"], cfg["width"], cfg["kl_weight"])


def evaluate_autoencoder(model: KLAutoencoder, train, test, args, progress: bool = False) -> dict:
    """Held-out decode(encode(x)) error, and the (β = 1) ELBO of the test set in nats."""
    scores = {f"test_{k}": v for k, v in model.reconstruction_error(test.images).items()}
    with no_grad():
        elbo = np.concatenate([model.elbo(ops.tensor(np.asarray(test.images[i:i + 500], np.float32)))["elbo"].numpy()
                               for i in range(0, len(test.images), 500)])
    scores.update(test_elbo_nats=float(elbo.mean()), latent_shape=list(model.latent_shape))
    return scores


def autoencoder_figures(model: KLAutoencoder, run_dir: str, images: np.ndarray) -> list:
    """The first 32 of ``images`` and their reconstructions decode(encode(x)), side by side in one grid."""
    import os

    from ...viz import save_image_grid
    x = images[:32]
    pairs = np.stack([x, model.reconstruct(ops.tensor(np.asarray(x, np.float32)))], 1).reshape(-1, *x.shape[1:])
    return [("held-out inputs and decode(encode(x)), side by side",
             save_image_grid(pairs, os.path.join(run_dir, "reconstructions.png"), nrow=8))]


# --------------------------------------------------------------------------- conditions: captions as tokens

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOCABULARY = ("<pad>", "a", "thin", "thick") + DIGIT_NAMES
CAPTION_LENGTH = 3


def caption(label: int, stroke: str = "") -> str:
    """The caption of a digit: "a seven", or with a stroke word "a thin seven"."""
    return " ".join(["a"] + ([stroke] if stroke else []) + [DIGIT_NAMES[int(label)]])


def tokenize(captions) -> np.ndarray:
    """Captions → (N, 3) int64 word indices into :data:`VOCABULARY`, padded with "<pad>"; None is the empty
    caption (all padding: the "no condition" that classifier-free guidance needs)."""
    rows = []
    for text in captions:
        words = [] if text is None else str(text).lower().split()
        unknown = [w for w in words if w not in VOCABULARY]
        if unknown or len(words) > CAPTION_LENGTH:
            raise ValueError(f"tokenize: captions are up to {CAPTION_LENGTH} words from {VOCABULARY[1:]}; got "
                             f"{text!r}" + (f" (unknown: {unknown})" if unknown else ""))
        rows.append([VOCABULARY.index(w) for w in words] + [0] * (CAPTION_LENGTH - len(words)))
    return np.asarray(rows, np.int64).reshape(-1, CAPTION_LENGTH)


def ink_thresholds(images: np.ndarray, labels: np.ndarray, classes: int = 10) -> np.ndarray:
    """(classes, 2): the 1/3 and 2/3 quantiles of each class's ink (summed intensity)."""
    ink = np.asarray(images, np.float64).reshape(len(images), -1).sum(axis=1)
    return np.array([np.quantile(ink[labels == k], [1 / 3, 2 / 3]) if np.any(labels == k) else [0.0, np.inf]
                     for k in range(classes)])


def stroke_words(images: np.ndarray, labels: np.ndarray, thresholds: np.ndarray) -> list:
    """"thin", "" or "thick" per image: which third of its class's ink it falls in."""
    ink = np.asarray(images, np.float64).reshape(len(images), -1).sum(axis=1)
    low, high = thresholds[labels, 0], thresholds[labels, 1]
    return ["thin" if v < lo else "thick" if v > hi else "" for v, lo, hi in zip(ink, low, high)]


class ConditionEncoder(nn.Module):
    """Tokens (N, L) → the context (N, L, dim) the cross-attention reads: a word embedding plus a learned
    position embedding, layer-normalised."""

    def __init__(self, dim: int = 64, length: int = CAPTION_LENGTH):
        super().__init__()
        self.words = nn.Embedding(len(VOCABULARY), dim)
        self.positions = nn.Parameter(ops.randn(length, dim) * 0.02)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: np.ndarray) -> Tensor:
        return self.norm(self.words(ops.tensor(np.asarray(tokens, np.int64), dtype="int64", device=self.device))
                         + self.positions)


# --------------------------------------------------------------------------- the second stage

class LatentDiffusion(DiffusionModel):
    """DDPM on :math:`z = s\\,\\mathcal E(x)` (a posterior sample of the frozen autoencoder, s = 1/std of the
    training latents), ε-network conditioned on captions by cross-attention; samples are
    :math:`\\mathcal D(z/s)`'s pixel probabilities. ``labels`` wherever a sampler takes them may be class
    indices or caption strings."""

    def __init__(self, autoencoder: KLAutoencoder, net: UNet, schedule: NoiseSchedule, context_dim: int,
                 latent_scale: float, ink: np.ndarray, label_dropout: float = 0.1, stroke_dropout: float = 0.5,
                 sigma: str = "beta"):
        super().__init__(net, schedule, autoencoder.latent_shape, label_dropout=label_dropout, sigma=sigma)
        if not net.context_dim:
            raise ValueError("LatentDiffusion: the U-Net needs context_dim (cross-attention)")
        self.autoencoder = autoencoder.requires_grad_(False)      # pretrained, frozen
        self.condition = ConditionEncoder(context_dim)
        self.latent_scale, self.ink = float(latent_scale), np.asarray(ink, np.float64)
        self.stroke_dropout = float(stroke_dropout)

    @property
    def num_classes(self):
        """The ten digit classes; a sampler's class index y conditions on the caption of y."""
        return len(DIGIT_NAMES)

    def encode(self, images) -> Tensor:
        """:math:`z = s\\,\\mathcal E(x)`, one posterior sample per image."""
        x = images if isinstance(images, Tensor) else ops.tensor(np.asarray(images, np.float32), device=self.device)
        with no_grad():
            return self.autoencoder.posterior(x).sample() * self.latent_scale

    def decode(self, z: Tensor) -> np.ndarray:
        """:math:`\\mathcal D(z/s)` as pixel probabilities in [0, 1]."""
        with no_grad():
            return self.autoencoder.mean_image(z * (1.0 / self.latent_scale)).numpy()

    def condition_tokens(self, labels) -> np.ndarray | None:
        """Class indices or captions (or None: no condition) → tokens."""
        if labels is None:
            return None
        labels = list(labels.numpy() if isinstance(labels, Tensor) else labels)
        return tokenize([caption(v) if isinstance(v, (int, np.integer)) else v for v in labels])

    def eps(self, x_t: Tensor, t, labels=None):
        """The ε-network's prediction at latents ``x_t``, conditioned on ``labels``: class indices, captions or
        tokens (B, length); without labels, on the empty caption."""
        tokens = labels if labels is None or (isinstance(labels, np.ndarray) and labels.ndim == 2) \
            else self.condition_tokens(labels)
        if tokens is None:
            tokens = np.zeros((x_t.shape[0], CAPTION_LENGTH), np.int64)            # the empty caption
        return self.net(x_t, t, context=self.condition(tokens))

    def _guidance_labels(self, labels):
        return self.condition_tokens(labels)

    def loss(self, batch):
        """Algorithm 1 on the latents; each image's caption names its class, with its stroke word kept with
        probability 1 − stroke_dropout, and is emptied with probability label_dropout."""
        from ...random import generator
        images, labels = batch[0], np.asarray(batch[1].numpy() if isinstance(batch[1], Tensor) else batch[1])
        images = np.asarray(images.numpy() if isinstance(images, Tensor) else images, np.float32)
        rng = generator("cpu")
        strokes = stroke_words(images, labels, self.ink)
        texts = [None if rng.random() < self.label_dropout else
                 caption(y, "" if rng.random() < self.stroke_dropout else s) for y, s in zip(labels, strokes)]
        context = self.condition(tokenize(texts))
        loss = ddpm_loss(self.schedule, lambda z, t: self.net(z, t, context=context), self.encode(images),
                         prediction=self.prediction)
        return loss, {"loss": float(loss.item())}

    def variational_bound(self, images, batch_size: int = 100, progress: bool = False):
        """Refused (ValueError): a bound on the latents' likelihood gives none on the images', since the
        autoencoder is not invertible."""
        raise ValueError("latent_diffusion: --bound is the bound on the latents' likelihood, not the images'; "
                         "the autoencoder is not an invertible map, so no bits/dim on x follows from it")


#: Options of ``ddpm`` that latent diffusion fixes: it is always conditioned (on captions) and predicts ε.
LATENT_DEFAULTS = dict(channels=64, channel_mults="1", attention_levels="0", dropout=0.0)
_REFUSED = {"conditional": False, "learned_variance": False, "prediction": "eps", "loss": "simple"}


def add_latent_diffusion_arguments(parser) -> None:
    """The options of ``minigen train latent_diffusion``: those of ``ddpm`` with :data:`LATENT_DEFAULTS`, the
    autoencoder run, the caption embedding size and the stroke word's dropout."""
    from .recipes import add_ddpm_arguments
    add_ddpm_arguments(parser)
    parser.set_defaults(**LATENT_DEFAULTS)         # one U-Net level: a 7×7 latent has no factor 2 to pool
    parser.add_argument("--autoencoder", help="the run folder of a trained `minigen train autoencoder` (required)")
    parser.add_argument("--context-dim", type=int, default=64, help="caption token embedding size (default: 64)")
    parser.add_argument("--stroke-dropout", type=float, default=0.5,
                        help="probability of leaving the stroke word out of a training caption (default: 0.5)")


def build_latent_diffusion(cfg: dict, image_shape) -> LatentDiffusion:
    """At training time reads the autoencoder run, measures the latent scale and the ink thresholds on the
    training set and records them in the run's config; afterwards the run needs neither the autoencoder
    folder nor the data (its checkpoint holds the autoencoder's weights)."""
    from .recipes import build_unet
    changed = [f"--{k.replace('_', '-')}" for k, v in _REFUSED.items() if cfg.get(k, v) != v]
    if changed:
        raise ValueError(f"latent_diffusion: {', '.join(changed)} not supported (conditioning is by captions "
                         f"through cross-attention, the network predicts eps with L_simple)")
    autoencoder = _measure_first_stage(cfg) if "autoencoder_config" not in cfg else \
        build_autoencoder(cfg["autoencoder_config"], image_shape)
    net = build_unet(cfg, autoencoder.latent_shape, context_dim=cfg["context_dim"])
    make = NoiseSchedule.linear if cfg["noise_schedule"] == "linear" else NoiseSchedule.cosine
    return LatentDiffusion(autoencoder, net, make(cfg["timesteps"]), cfg["context_dim"], cfg["latent_scale"],
                           np.asarray(cfg["ink_thresholds"]), cfg["label_dropout"], cfg["stroke_dropout"], cfg["sigma"])


def _measure_first_stage(cfg: dict) -> KLAutoencoder:
    from ...runs import load_data, load_run
    if not cfg.get("autoencoder"):
        raise ValueError("latent_diffusion: --autoencoder RUN is required (train one with `minigen train autoencoder`)")
    spec, ae_cfg, autoencoder = load_run(cfg["autoencoder"])
    if spec.name != "autoencoder":
        raise ValueError(f"latent_diffusion: --autoencoder {cfg['autoencoder']} is a {spec.name!r} run, "
                         f"not an autoencoder")
    train = load_data(cfg, "train")
    if train.labels is None:
        raise ValueError("latent_diffusion: the captions need class labels; the data has none")
    if tuple(ae_cfg["image_shape"]) != tuple(train.image_shape):
        raise ValueError(f"latent_diffusion: the autoencoder was trained on images {ae_cfg['image_shape']}, "
                         f"the data are {list(train.image_shape)}")
    subset = np.random.default_rng(cfg["seed"]).choice(len(train), min(5000, len(train)), replace=False)
    with no_grad():
        z = autoencoder.posterior(ops.tensor(train.images[subset])).sample().numpy()
    cfg["autoencoder_config"] = {k: ae_cfg[k] for k in ("z_channels", "width", "kl_weight")}
    cfg["latent_scale"] = float(1.0 / z.std())
    cfg["ink_thresholds"] = ink_thresholds(train.images, train.labels).tolist()
    return autoencoder
