"""Model families, in lecture order, and the registry the command line reads.

Each family module defines its models and a few *recipes*: how to add its
options to ``minigen train``, build a model from a run's config, evaluate it
and draw its figures. ``registry()`` maps the names ``minigen train NAME``
accepts to those recipes.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["ModelSpec", "registry", "get_spec", "build_default"]


@dataclass(frozen=True)
class ModelSpec:
    """What the command line needs to know about one trainable model."""

    name: str
    summary: str
    add_arguments: Callable           # (argparse parser) -> None: the model's own options
    build: Callable                   # (config dict, image_shape) -> Module
    default_data: str = "digits"
    add_eval_arguments: Callable | None = None
    evaluate: Callable | None = None  # (model, train Dataset, test Dataset, args) -> dict
    figures: Callable | None = None   # (model, run_dir, images) -> [(caption, png path)]
    periodic_eval: Callable | None = None   # (model, test images, cfg) -> (() -> dict) or None
    # Families that do not learn by backpropagating a loss (an RBM's contrastive divergence)
    # bring their own update: (model, config, train images) -> (step_fn, {name: checkpointed state}).
    trainer_step: Callable | None = None
    # Examples one Trainer step consumes, if not --batch-size (a GAN's k minibatches): (config) -> int.
    examples_per_step: Callable | None = None
    schedules: tuple = ("constant", "cosine")     # the --schedule values it honours
    defaults: dict = field(default_factory=dict)   # training defaults: lr, batch_size, steps...


def _specs():
    from . import autoregressive as ar
    from .flows import recipes as flows
    from . import vae
    from .energy import recipes as energy
    from .gans import recipes as gans
    from .diffusion import latent, recipes as diffusion
    from . import classifier
    exact = dict(default_data="binarized-mnist", evaluate=ar.evaluate_autoregressive,
                 figures=ar.autoregressive_figures, periodic_eval=ar.periodic_nll)
    game = dict(evaluate=gans.evaluate_gan, add_eval_arguments=classifier.add_sample_scoring_arguments, figures=gans.gan_figures,
                trainer_step=gans.gan_trainer_step, periodic_eval=gans.periodic_modes,
                examples_per_step=gans.gan_examples_per_step)     # every GAN preset is `gan` with other defaults
    return [
        ModelSpec("fvsbn", "fully visible sigmoid belief net (Eq. AR-1): a logistic regression per pixel on the "
                  "pixels before it", ar.add_fvsbn_arguments, ar.build_fvsbn, **exact,
                  defaults={"lr": 1e-3, "batch_size": 100}),
        ModelSpec("nade", "NADE (Eq. AR-1): one hidden layer shared by all conditionals, O(HD) per image",
                  ar.add_nade_arguments, ar.build_nade, **exact, defaults={"lr": 1e-3, "batch_size": 100}),
        ModelSpec("pixelcnn", "PixelCNN (Eq. AR-2): mask-A then residual mask-B convolutions, Bernoulli / "
                  "256-way softmax / logistic-mixture pixels", ar.add_pixelcnn_arguments, ar.build_pixelcnn,
                  **exact, defaults={"lr": 1e-3, "batch_size": 64}),
        ModelSpec("gated_pixelcnn", "Gated PixelCNN (Eq. AR-5): vertical + horizontal stacks, tanh*sigmoid gates, "
                  "no blind spot; --conditional for class labels", ar.add_gated_pixelcnn_arguments,
                  ar.build_gated_pixelcnn, **exact, defaults={"lr": 1e-3, "batch_size": 64}),
        ModelSpec("pixelrnn", "PixelRNN with Row LSTM layers (Eq. AR-3): masked input-to-state and row-to-row "
                  "state convolutions", ar.add_pixelrnn_arguments, ar.build_pixelrnn, **exact,
                  defaults={"lr": 1e-3, "batch_size": 64}),
        ModelSpec("realnvp", "RealNVP (Eq. FLOW-1/2): affine couplings; multi-scale with squeeze, checkerboard "
                  "and channel masks and actnorm for images, a coupling stack for 2-D points",
                  flows.add_realnvp_arguments, flows.build_realnvp, default_data="mnist",
                  evaluate=flows.evaluate_flow, figures=flows.flow_figures, periodic_eval=flows.periodic_flow_nll,
                  defaults={"lr": 1e-3, "batch_size": 64}),
        ModelSpec("planar", "planar flows (Eq. FLOW-4) f(z) = z + u tanh(w.z + b), w.u >= -1, fitted to 2-D "
                  "points by maximum likelihood", flows.add_planar_arguments, flows.build_planar,
                  default_data="moons", evaluate=flows.evaluate_flow, figures=flows.flow_figures,
                  periodic_eval=flows.periodic_flow_nll, defaults={"lr": 1e-2, "batch_size": 256}),
        ModelSpec("vae", "variational autoencoder (Eq. VAE-1..6): MLP or conv, Bernoulli/Gaussian decoder, "
                  "IWAE training with --k", vae.add_vae_arguments, vae.build_vae,
                  add_eval_arguments=vae.add_vae_eval_arguments, evaluate=vae.evaluate_vae,
                  figures=vae.vae_figures, periodic_eval=vae.periodic_iwae,
                  defaults={"lr": 1e-3, "batch_size": 100}),
        ModelSpec("hvae", "two-level Markovian hierarchical VAE x -> z1 -> z2 (Eq. DIF-2)",
                  vae.add_hvae_arguments, vae.build_hvae,
                  add_eval_arguments=vae.add_vae_eval_arguments, evaluate=vae.evaluate_vae,
                  figures=vae.vae_figures, periodic_eval=vae.periodic_iwae,
                  defaults={"lr": 1e-3, "batch_size": 100}),
        ModelSpec("rbm", "restricted Boltzmann machine (Eq. EBM-11) trained by CD-k or persistent CD; "
                  "eval by annealed importance sampling", energy.add_rbm_arguments, energy.build_rbm,
                  default_data="binarized-mnist", add_eval_arguments=energy.add_rbm_eval_arguments,
                  evaluate=energy.evaluate_rbm, figures=energy.rbm_figures, trainer_step=energy.rbm_trainer_step,
                  defaults={"lr": 0.01, "batch_size": 100}),
        ModelSpec("dbn", "deep belief net (Eq. EBM-12): RBMs stacked and trained greedily, bottom first; "
                  "eval by its variational bound", energy.add_dbn_arguments, energy.build_dbn,
                  default_data="binarized-mnist", add_eval_arguments=energy.add_dbn_eval_arguments,
                  evaluate=energy.evaluate_dbn, figures=energy.dbn_figures, trainer_step=energy.dbn_trainer_step,
                  defaults={"lr": 0.01, "batch_size": 100}),
        ModelSpec("bm", "general Boltzmann machine (Eq. EBM-10): positive and negative phases, by Gibbs "
                  "sampling or exactly; logs the exact KL G", energy.add_bm_arguments, energy.build_bm,
                  default_data="bars-and-stripes", evaluate=energy.evaluate_bm, figures=energy.bm_figures,
                  trainer_step=energy.bm_trainer_step, schedules=("constant",),
                  defaults={"lr": 0.5, "batch_size": 30}),
        ModelSpec("gan", "generative adversarial net (Eq. GAN-1..7) trained by Algorithm 1: MLP players on 2-D "
                  "points (--packing, --minibatch-kernels, --replay against mode collapse) or DCGAN on "
                  "images, --conditional for G(z|y), D(x|y)",
                  gans.add_gan_arguments, gans.build_gan, default_data="ring8", **game,
                  defaults={"lr": 1e-3, "batch_size": 100}),
        ModelSpec("dcgan", "DCGAN (Eq. GAN-6): `gan --arch dcgan`", gans.gan_preset_arguments("dcgan"),
                  gans.build_gan, default_data="mnist", **game, defaults={"lr": 2e-4, "batch_size": 64}),
        ModelSpec("cgan", "conditional DCGAN (Eq. GAN-7): `gan --arch dcgan --conditional`",
                  gans.gan_preset_arguments("cgan"), gans.build_gan, default_data="mnist", **game,
                  defaults={"lr": 2e-4, "batch_size": 64}),
        ModelSpec("stylegan", "small StyleGAN (Eq. GAN-9, GAN-10) against an R1-penalised DCGAN discriminator: "
                  "`gan --arch stylegan --penalty r1 --penalty-weight 1`", gans.gan_preset_arguments("stylegan"),
                  gans.build_gan, default_data="mnist", **game, defaults={"lr": 2e-4, "batch_size": 32}),
        ModelSpec("cyclegan", "CycleGAN (Eq. GAN-8): G: X -> Y, F: Y -> X, two PatchGAN discriminators, "
                  "L_GAN both ways + lambda L_cyc, on images X and their hidden transform Y (--domain)",
                  gans.add_cyclegan_arguments, gans.build_cyclegan, default_data="mnist",
                  add_eval_arguments=classifier.add_sample_scoring_arguments, evaluate=gans.evaluate_cyclegan,
                  figures=gans.cyclegan_figures,
                  trainer_step=gans.cyclegan_trainer_step, examples_per_step=gans.cyclegan_examples_per_step,
                  defaults={"lr": 2e-4, "batch_size": 16}),
        ModelSpec("ddpm", "denoising diffusion (Eq. DIF-3..16): a U-Net eps-network trained by Algorithm 1, sampled "
                  "by Algorithm 2 or DDIM; --conditional for classifier-free guidance",
                  diffusion.add_ddpm_arguments, diffusion.build_ddpm, default_data="mnist",
                  add_eval_arguments=classifier.add_sample_scoring_arguments, evaluate=diffusion.evaluate_ddpm,
                  figures=diffusion.ddpm_figures, defaults={"lr": 2e-4, "batch_size": 64}),
        ModelSpec("autoencoder", "KL-regularised autoencoder (Eq. DIF-17's E and D): a conv VAE with a 4x7x7 "
                  "latent and a small KL weight, the first stage of latent diffusion",
                  latent.add_autoencoder_arguments, latent.build_autoencoder, default_data="mnist",
                  evaluate=latent.evaluate_autoencoder, figures=latent.autoencoder_figures,
                  defaults={"lr": 1e-3, "batch_size": 64}),
        ModelSpec("latent_diffusion", "latent diffusion (Eq. DIF-17): DDPM on a trained autoencoder's latents, "
                  "conditioned on captions ('a thin seven') by cross-attention; --autoencoder RUN",
                  latent.add_latent_diffusion_arguments, latent.build_latent_diffusion, default_data="mnist",
                  add_eval_arguments=classifier.add_sample_scoring_arguments, evaluate=diffusion.evaluate_ddpm,
                  figures=diffusion.ddpm_figures, defaults={"lr": 1e-3, "batch_size": 64}),
        ModelSpec("classifier", "digit classifier (a CNN, over 99 percent right on MNIST): the judge of generated samples "
                  "(Frechet distance, class accuracy, classes covered)", classifier.add_classifier_arguments,
                  classifier.build_classifier, default_data="mnist", evaluate=classifier.evaluate_classifier,
                  defaults={"lr": 1e-3, "batch_size": 64}),
    ]


@functools.cache
def registry() -> dict:
    """``{name: ModelSpec}`` of every trainable model (family modules are imported on first use)."""
    return {spec.name: spec for spec in _specs()}


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of model ``name``; a ValueError listing the registry's names if it has none."""
    specs = registry()
    if name not in specs:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(specs)}")
    return specs[name]


def build_default(name: str, image_shape, num_classes: int = 10, **options):
    """The registry's model ``name`` as ``minigen train NAME [--option value …]`` would build it for data
    of ``image_shape`` (untrained): a quick way to inspect a family without a run folder."""
    from ..cli import build_parser, option_arguments, train_config
    argv = ["train", name, *option_arguments(options)]
    cfg = train_config(build_parser().parse_args(argv), argv)
    cfg.update(num_classes=num_classes, image_shape=list(image_shape), train_examples=0, total_steps=1)
    return get_spec(name).build(cfg, tuple(image_shape))
