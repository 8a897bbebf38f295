r"""``minigen train ddpm``: a U-Net denoiser trained by Algorithm 1, sampled by Algorithm 2 or DDIM.

Images in [0, 1] are mapped to [-1, 1] (the scale the forward process assumes: ᾱ_T x_0 + noise
is then close to N(0, I)); samples are mapped back and clipped.
"""
from __future__ import annotations

import numpy as np

from ... import nn, ops
from ...autograd import Tensor, no_grad
from ..unet import UNet
from ..taxonomy import APPROXIMATE
from .ddpm import PREDICTIONS, SIGMAS, ddim_sample, ddpm_loss, ddpm_sample, guided, hybrid_loss, uniform_steps
from .process import NoiseSchedule, interpolated_log_variance, predict_eps, q_sample, x0_from_v

__all__ = ["DiffusionModel", "add_ddpm_arguments", "build_unet", "build_ddpm", "evaluate_ddpm", "ddpm_figures"]

SAMPLERS = ("ddpm", "ddim")


class MLPDenoiser(nn.Module):
    """The ε-network for 2-D points: [x, sinusoid(t)] through SiLU layers (the U-Net's role for images)."""

    def __init__(self, dim: int = 2, width: int = 128, layers: int = 3):
        super().__init__()
        from ..unet import timestep_embedding
        self._embed = timestep_embedding
        self.in_channels = self.out_channels = int(dim)
        self.num_classes, self.time_dim = None, 32
        sizes = [dim + self.time_dim] + [width] * layers
        hidden = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.SiLU())]
        self.net = nn.Sequential(*hidden, nn.Linear(width, dim))

    def forward(self, x: Tensor, t, labels=None) -> Tensor:
        return self.net(ops.cat([x, self._embed(t, self.time_dim, dtype=x.dtype, device=x.device)], dim=1))


class DiffusionModel(nn.Module):
    """A denoising network with its noise schedule: ``loss`` is Algorithm 1, ``sample`` Algorithm 2 (or DDIM).

    ``prediction`` says what the network outputs (ε, x_0 or v; :meth:`eps` converts any of them to ε).
    A class-conditional model (``net.num_classes``) is trained with each label replaced by the
    "no label" token with probability ``label_dropout``, so one network gives both the conditional
    and the unconditional ε that classifier-free guidance mixes.
    """

    density = APPROXIMATE        # Eq. TAX-1 (see minigen.models.taxonomy)

    def __init__(self, net: UNet, schedule: NoiseSchedule, image_shape: tuple, prediction: str = "eps",
                 weighting: str = "simple", label_dropout: float = 0.0, sigma: str = "beta",
                 hybrid_weight: float = 0.001):
        super().__init__()
        self.learned_variance = net.out_channels == 2 * net.in_channels
        if self.learned_variance and (prediction != "eps" or weighting != "simple"):
            raise ValueError("ddpm --learned-variance: trains with L_hybrid on eps-prediction "
                             "(--prediction eps --loss simple)")
        self.hybrid_weight = float(hybrid_weight)
        if prediction not in PREDICTIONS:
            raise ValueError(f"ddpm: prediction must be one of {PREDICTIONS}, got {prediction!r}")
        if sigma not in SIGMAS:
            raise ValueError(f"ddpm: sigma must be one of {SIGMAS}, got {sigma!r}")
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"ddpm: label_dropout must lie in [0, 1), got {label_dropout}")
        self.net, self.schedule, self.image_shape = net, schedule, tuple(image_shape)
        self.points = len(self.image_shape) == 1          # 2-D toys: the process runs on the points themselves
        self.data_name = None                               # a toy's name: its true density for the figures
        self.prediction, self.weighting, self.sigma = prediction, weighting, sigma
        self.label_dropout = float(label_dropout)

    @property
    def num_classes(self):
        """The classes the network is conditioned on; None for an unconditional model."""
        return self.net.num_classes

    def eps(self, x_t: Tensor, t, labels=None):
        """The network's prediction, as ε whatever it predicts — with a learned variance the pair
        (ε, log σ²) that Algorithm 2 then uses."""
        out = self.net(x_t, t, labels)
        if self.learned_variance:
            c = self.image_shape[0]
            return out[:, :c], interpolated_log_variance(self.schedule, t, (out[:, c:] + 1.0) * 0.5)
        if self.prediction == "eps":
            return out
        x0 = out if self.prediction == "x0" else x0_from_v(self.schedule, x_t, t, out)
        return predict_eps(self.schedule, x_t, t, x0)

    def loss(self, batch):
        """Algorithm 1 on one batch: (mean loss, {"loss": …})."""
        images, labels = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        x0 = self.to_process(images if isinstance(images, Tensor) else ops.tensor(np.asarray(images, np.float32),
                                                                                 device=self.device))
        if self.num_classes:
            labels = np.array(labels.numpy() if isinstance(labels, Tensor) else labels, dtype=np.int64)
            if self.label_dropout:
                from ...random import generator
                drop = generator("cpu").random(len(labels)) < self.label_dropout
                labels[drop] = self.num_classes                      # the "no label" token
        else:
            labels = None
        if self.learned_variance:                   # L_hybrid: the bound trains the variance channels
            t = uniform_steps(self.schedule.T, x0.shape[0])
            noise = ops.randn(*x0.shape, dtype=x0.dtype, device=x0.device)
            x_t = q_sample(self.schedule, x0, t, noise)
            out = self.net(x_t, t, labels)
            c = self.image_shape[0]
            loss, simple, vlb = hybrid_loss(self.schedule, out[:, :c], out[:, c:], x0, x_t, t, noise,
                                            self.hybrid_weight)
            return loss, {"loss": float(loss.item()), "simple": float(simple.item()), "vlb": float(vlb.item())}
        loss = ddpm_loss(self.schedule, lambda x, t: self.net(x, t, labels), x0, weighting=self.weighting,
                         prediction=self.prediction)
        return loss, {"loss": float(loss.item())}

    def variational_bound(self, images: np.ndarray, batch_size: int = 100, progress: bool = False,
                          terms: str = "all") -> np.ndarray:
        """Eq. DIF-7 for images in [0, 1] on 256 grey levels: the bound on −log p(x_0) in nats per image,
        with σ_t² the model's fixed choice and the discrete decoder L_0 (Eq. DIF-12). ``terms="all"`` sums
        all T terms (T network passes per batch); ``"sampled"`` is the unbiased one-term estimate
        (:func:`~.ddpm.variational_bound_estimate`, one pass)."""
        from .ddpm import reverse_variance, variational_bound, variational_bound_estimate
        from .process import coefficient, mean_from_eps
        if terms not in ("all", "sampled"):
            raise ValueError(f"ddpm: bound terms must be 'all' or 'sampled', got {terms!r}")
        variances = reverse_variance(self.schedule, self.sigma)

        def reverse(x_t, t):                               # t: one step for the batch, or one per example
            steps = np.broadcast_to(np.asarray(t), (x_t.shape[0],))
            eps = self.eps(x_t, steps)
            if isinstance(eps, tuple):                     # a learned variance
                return mean_from_eps(self.schedule, x_t, steps, eps[0]), ops.exp(eps[1])
            return mean_from_eps(self.schedule, x_t, steps, eps), coefficient(variances, steps, x_t)
        if self.points:      # continuous data: L_0 is a density, the bound one on −log p(x) in nats per point
            data, decoder = np.asarray(images, np.float32), "gaussian"
        else:
            data, decoder = (2 * np.round(np.asarray(images, np.float64) * 255) / 255 - 1).astype(np.float32), "discrete"
        totals = []
        was_training = self.training
        self.eval()
        try:
            for i in range(0, len(data), batch_size):
                x0 = ops.tensor(data[i:i + batch_size], device=self.device)
                totals.append(variational_bound_estimate(self.schedule, reverse, x0, decoder) if terms == "sampled"
                              else variational_bound(self.schedule, reverse, x0, decoder, progress)["total"])
        finally:
            self.train(was_training)
        return np.concatenate(totals)

    def sample(self, n: int, labels=None, progress: bool = False, sampler: str = "ddpm", steps: int | None = None,
               guidance: float | None = None, keep_every: int = 0):
        """``n`` images in [0, 1] (NumPy). ``sampler`` ddpm (Algorithm 2, all T steps) or ddim (``steps`` of
        them, 50 by default); a conditional model takes ``labels`` (default: uniform classes) and
        ``guidance`` w ≥ 0. With ``keep_every`` (ddpm only) also the strip of intermediate x_t."""
        if sampler not in SAMPLERS:
            raise ValueError(f"ddpm: sampler must be one of {SAMPLERS}, got {sampler!r}")
        guidance = 0.0 if guidance is None else float(guidance)
        if guidance < 0:
            raise ValueError(f"ddpm: guidance must be >= 0, got {guidance}")
        if self.num_classes:
            if labels is None:
                from ...random import generator
                labels = generator("cpu").integers(0, self.num_classes, n)
            eps_model = guided(self.eps, self._guidance_labels(labels), guidance)
        else:
            eps_model = self.eps
        shape = (n, *self.image_shape)
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                if sampler == "ddim":
                    x, kept = ddim_sample(self.schedule, eps_model, shape, steps or 50, device=self.device,
                                          progress=progress), []
                else:
                    out = ddpm_sample(self.schedule, eps_model, shape, self.sigma, device=self.device, progress=progress,
                                      keep_every=keep_every)
                    x, kept = out if keep_every else (out, [])
        finally:
            self.train(was_training)
        return (self.decode(x), [(t, self.decode(v)) for t, v in kept]) if keep_every else self.decode(x)

    def _guidance_labels(self, labels):
        """The condition as the network reads it (class indices here)."""
        return np.asarray(labels, np.int64)

    def to_process(self, images: Tensor) -> Tensor:
        """Data → the process's x_0: images in [0, 1] to [-1, 1] (points as they are)."""
        return images if self.points else 2.0 * images - 1.0

    def decode(self, x: Tensor) -> np.ndarray:
        """Samples of the process → data: x_0 ∈ [-1, 1] mapped back to images in [0, 1] and clipped."""
        return x.numpy() if self.points else np.clip((x.numpy() + 1.0) / 2.0, 0.0, 1.0)


def add_ddpm_arguments(parser) -> None:
    """The options of ``minigen train ddpm``: the noise schedule, the U-Net, the network's target and loss,
    class conditioning, and Algorithm 2's σ_t² (fixed or learned)."""
    parser.add_argument("--timesteps", type=int, default=1000, help="diffusion steps T (default: 1000)")
    parser.add_argument("--noise-schedule", choices=["linear", "cosine"], default="linear",
                        help="beta_t: linear 1e-4 -> 0.02 (Ho et al.) or cosine (Nichol & Dhariwal) (default: linear)")
    parser.add_argument("--channels", type=int, default=32, help="U-Net base width (default: 32)")
    parser.add_argument("--channel-mults", default="1,2,2", help="width multiplier per level (default: 1,2,2)")
    parser.add_argument("--blocks", type=int, default=2, help="ResNet blocks per level (default: 2)")
    parser.add_argument("--attention-levels", default="2",
                        help="levels with self-attention, 0 = full resolution (default: 2; '' for none)")
    parser.add_argument("--heads", type=int, default=4, help="attention heads (default: 4)")
    parser.add_argument("--groups", type=int, default=8, help="GroupNorm groups (default: 8)")
    parser.add_argument("--dropout", type=float, default=0.1, help="dropout in the ResNet blocks (default: 0.1)")
    parser.add_argument("--time-embedding", choices=["scale-shift", "add"], default="scale-shift",
                        help="how blocks read t: adaptive group norm or addition (default: scale-shift)")
    parser.add_argument("--prediction", choices=PREDICTIONS, default="eps", help="network target (default: eps)")
    parser.add_argument("--loss", choices=["simple", "kl"], default="simple",
                        help="L_simple or the lambda_t-weighted bound term (default: simple)")
    parser.add_argument("--conditional", action="store_true", help="class-conditional (classifier-free guidance)")
    parser.add_argument("--label-dropout", type=float, default=0.1,
                        help="conditional: probability of training without the label (default: 0.1)")
    parser.add_argument("--sigma", choices=SIGMAS, default="beta", help="sigma_t^2 of Algorithm 2 (default: beta)")
    parser.add_argument("--learned-variance", action="store_true",
                        help="learn sigma_t^2 between beta~_t and beta_t, trained by L_hybrid (Nichol & Dhariwal)")
    parser.add_argument("--hybrid-weight", type=float, default=0.001, help="lambda of L_hybrid (default: 0.001)")


def _ints(text: str, name: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name}: expected comma-separated integers, got {text!r}") from None


def build_unet(cfg: dict, shape, classes=None, context_dim=None) -> UNet:
    """The U-Net the options describe, for inputs of ``shape`` (C, H, W)."""
    mults = _ints(cfg["channel_mults"], "--channel-mults")
    side = 2 ** (len(mults) - 1)
    if shape[1] % side or shape[2] % side:
        raise ValueError(f"{cfg.get('model', 'ddpm')}: {len(mults)} U-Net levels need sides divisible by {side}, "
                         f"got {tuple(shape[1:])}; use fewer --channel-mults")
    return UNet(shape[0], cfg["channels"], mults, cfg["blocks"], _ints(cfg["attention_levels"], "--attention-levels"),
                cfg["heads"], cfg["groups"], cfg["dropout"], cfg["time_embedding"] == "scale-shift", classes,
                cfg.get("learned_variance", False), context_dim)


def build_ddpm(cfg: dict, image_shape) -> DiffusionModel:
    """The :class:`DiffusionModel` ``minigen train ddpm`` trains, from a run's config and the data's shape: a U-Net
    for images (C, H, W), an MLP for points (D,) (unconditional, with a fixed variance)."""
    if len(image_shape) not in (1, 3):
        raise ValueError(f"ddpm: needs images (C, H, W) or points (D,), got data of shape {tuple(image_shape)}")
    classes = cfg.get("num_classes") if cfg.get("conditional") else None
    if cfg.get("conditional") and not classes:
        raise ValueError("ddpm --conditional: the data has no class labels")
    if len(image_shape) == 1:
        if classes or cfg.get("learned_variance"):
            raise ValueError("ddpm on points: --conditional and --learned-variance are for images")
        net = MLPDenoiser(image_shape[0], 4 * cfg["channels"])
    else:
        net = build_unet(cfg, image_shape, classes)
    make = NoiseSchedule.linear if cfg["noise_schedule"] == "linear" else NoiseSchedule.cosine
    model = DiffusionModel(net, make(cfg["timesteps"]), image_shape, cfg["prediction"], cfg["loss"],
                           cfg["label_dropout"] if classes else 0.0, cfg["sigma"], cfg.get("hybrid_weight", 0.001))
    model.data_name = cfg.get("data") if len(image_shape) == 1 else None
    return model


def evaluate_ddpm(model: DiffusionModel, train, test, args, progress: bool = False) -> dict:
    """Samples scored by the data's classifier run, as for GANs (:func:`~minigen.models.classifier.judge_samples`):
    Fréchet distance against the test set and its floor, classes covered and — conditional — the class
    accuracy of (guided) samples. ``--sampler``, ``--steps`` and ``--guidance`` choose the sampler;
    ``--bound`` adds the variational bound on the (``--limit``) test images in bits/dim (``--samples 0``:
    the bound alone)."""
    from ...cli import sampler_options
    from ..classifier import judge_samples
    options = sampler_options(args)
    if model.points:
        return _evaluate_points(model, test, options, progress)

    def draw(count, labels):
        return model.sample(count, labels, **options)
    scores = {}
    if int(getattr(args, "samples", 10000)) > 0:                  # --samples 0: only the bound
        scores = judge_samples(draw, model.num_classes, train, test, args)
        scores.update(sampler=options.get("sampler", "ddpm"), steps=options.get("steps"),
                      guidance=options.get("guidance", 0.0))
    if getattr(args, "bound", False):
        terms = getattr(args, "bound_terms", "all")
        nats = model.variational_bound(test.images, progress=progress, terms=terms)
        dims = int(np.prod(model.image_shape))
        scores.update(bound_terms=terms, test_bound_nats=float(nats.mean()), test_bound_nats_se=float(nats.std() / np.sqrt(len(nats))),
                      bits_per_dim=float(nats.mean() / (dims * np.log(2))), bound_examples=int(len(nats)))
    return scores


def _evaluate_points(model: DiffusionModel, test, options: dict, progress: bool) -> dict:
    """2-D toys: the bound (Eq. DIF-7) on the held-out points' −log p_θ(x) against the density's true entropy
    H = E[−log p(x)] on the same points (the bound can only exceed it: by the KL from the data to the model
    plus the bound's own gap), and how likely the samples are under the true density."""
    from ...data import get_toy
    toy = get_toy(test.name)
    nats = model.variational_bound(test.images, progress=progress)
    entropy = -toy.log_prob(test.images.astype(np.float64))
    samples = model.sample(len(test.images), **options)
    return {"test_bound_nats": float(nats.mean()), "test_bound_nats_se": float(nats.std() / np.sqrt(len(nats))),
            "true_entropy_nats": float(entropy.mean()), "bound_minus_entropy": float(nats.mean() - entropy.mean()),
            "sample_log_density": float(toy.log_prob(samples.astype(np.float64)).mean()),
            "test_log_density": float(-entropy.mean()), "points": int(len(nats)),
            "sampler": options.get("sampler", "ddpm")}


def ddpm_figures(model: DiffusionModel, run_dir: str, images: np.ndarray, progress: bool = False) -> list:
    """A grid of Algorithm 2's samples (one row per class when conditional) and the denoising strip
    x_T → x_0 of its first rows; for 2-D points, samples over the true density."""
    import os

    from ...viz import save_image_grid
    if model.points:
        from ...data import get_toy
        from ...viz import scatter_2d
        lo, hi = np.percentile(images, 0.5), np.percentile(images, 99.5)
        lim = (lo - 0.15 * (hi - lo), hi + 0.15 * (hi - lo))
        return [("2000 samples of Algorithm 2 over the data's density",
                 scatter_2d(model.sample(2000, progress=progress), os.path.join(run_dir, "ddpm_samples_2d.png"),
                            lim=lim, density=get_toy(model.data_name).log_prob if model.data_name else None))]
    labels = np.repeat(np.arange(model.num_classes), 8) if model.num_classes else None
    n = len(labels) if labels is not None else 64
    every = max(1, model.schedule.T // 10)
    x, strip = model.sample(n, labels, progress=progress, keep_every=every)
    grid = save_image_grid(x, os.path.join(run_dir, "ddpm_samples.png"), nrow=8)
    rows = [v[:8] for _, v in strip]                       # 8 samples, 11 moments from x_T to x_0
    frames = np.stack(rows, axis=1).reshape(-1, *rows[0].shape[1:])     # decoded: images, also for latents
    strip_path = save_image_grid(frames, os.path.join(run_dir, "ddpm_strip.png"), nrow=len(rows))
    return [("samples (Algorithm 2)", grid), (f"denoising x_T -> x_0, every {every} steps", strip_path)]
