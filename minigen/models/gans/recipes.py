"""``minigen train gan`` and ``minigen train cyclegan``: options, models, their training steps,
evaluation and figures."""
from __future__ import annotations

import os

import numpy as np

from ... import ops, optim
from .game import LOSSES, GAN, AdversarialTraining, ReplayBuffer
from .cyclegan import DOMAINS, CycleGAN, CycleGANTraining
from .dcgan import DCGANDiscriminator, DCGANGenerator, dcgan_init_
from .networks import mlp_discriminator, mlp_generator
from .style import StyleGenerator

__all__ = ["add_gan_arguments", "build_gan", "gan_trainer_step", "gan_examples_per_step", "evaluate_gan",
           "gan_figures", "SAMPLES_SCORED", "add_cyclegan_arguments", "build_cyclegan", "cyclegan_trainer_step",
           "cyclegan_examples_per_step", "evaluate_cyclegan", "cyclegan_figures"]

#: samples drawn to score a 2-D GAN (VEEGAN's and PacGAN's 2500)
SAMPLES_SCORED = 2500


def add_gan_arguments(parser) -> None:
    """The options of ``minigen train gan`` and its presets: the players and their sizes, Algorithm 1's k
    and loss, a gradient penalty, the remedies for mode collapse and the optimizers."""
    parser.add_argument("--arch", choices=["auto", "mlp", "dcgan", "stylegan"], default="auto",
                        help="players: MLPs for 2-D points, DCGAN for images (default: auto, by the data), "
                             "or a small StyleGAN generator against the DCGAN discriminator")
    parser.add_argument("--latent-dim", type=int, help="dimension of z ~ N(0, I) (default: 2 for MLPs, 100 for DCGAN)")
    parser.add_argument("--width", type=int, default=64, help="DCGAN: channels of D's first layer (2x in its second); "
                                                               "G mirrors D (default: 64)")
    parser.add_argument("--conditional", action="store_true",
                        help="class-conditional G(z|y) and D(x|y) (Eq. GAN-7; images with labels)")
    parser.add_argument("--g-hidden", type=int, default=400, help="MLP generator: width (default: 400)")
    parser.add_argument("--g-layers", type=int, default=4, help="MLP generator: hidden layers (default: 4)")
    parser.add_argument("--g-batchnorm", choices=["on", "off"], default="on",
                        help="MLP generator: batch normalisation in its hidden layers (default: on, as PacGAN)")
    parser.add_argument("--d-hidden", type=int, default=200, help="MLP discriminator: maxout width (default: 200)")
    parser.add_argument("--d-layers", type=int, default=3, help="MLP discriminator: maxout layers (default: 3)")
    parser.add_argument("--maxout", type=int, default=5, help="MLP discriminator: pieces per unit (default: 5)")
    parser.add_argument("--k", type=int, default=1, help="discriminator steps per generator step (default: 1)")
    parser.add_argument("--loss", choices=LOSSES, default="non_saturating",
                        help="generator objective (default: non_saturating)")
    parser.add_argument("--penalty", choices=["none", "wgan-gp", "r1"], default="none",
                        help="gradient penalty on D (default: none)")
    parser.add_argument("--penalty-weight", type=float, default=10.0, help="its weight (default: 10)")
    parser.add_argument("--packing", type=int, default=1,
                        help="PacGAN: samples per discriminator input (default: 1 = a plain GAN)")
    parser.add_argument("--minibatch-kernels", type=int, default=0,
                        help="minibatch discrimination: kernels B in D's last layer (default: 0 = off)")
    parser.add_argument("--replay", type=float, default=0.0,
                        help="experience replay: fraction of each fake minibatch drawn from past fakes "
                             "(default: 0 = off)")
    parser.add_argument("--replay-capacity", type=int, default=5000, help="past fakes kept (default: 5000)")
    parser.add_argument("--optimizer", choices=["adam", "sgd"], default="adam",
                        help="both players' optimizer: Adam, or SGD with momentum as in Algorithm 1 (default: adam)")
    parser.add_argument("--beta1", type=float, default=0.5, help="Adam's beta1 / SGD's momentum (default: 0.5)")
    parser.add_argument("--d-lr-ratio", type=float, default=1.0, help="D's learning rate / G's (default: 1)")


#: ``minigen train dcgan|cgan|stylegan``: ``gan`` with the image players chosen (any option still overrides)
PRESETS = {
    "dcgan": {"arch": "dcgan"},
    "cgan": {"arch": "dcgan", "conditional": True},
    "stylegan": {"arch": "stylegan", "penalty": "r1", "penalty_weight": 1.0},
}


def gan_preset_arguments(name: str):
    """``add_gan_arguments`` with the defaults of preset ``name`` (:data:`PRESETS`)."""
    def add(parser) -> None:
        add_gan_arguments(parser)
        parser.set_defaults(**PRESETS[name])
    return add


def gan_examples_per_step(cfg: dict) -> int:
    """One Trainer step is one iteration of Algorithm 1: k minibatches of m (× packing) examples."""
    return cfg["k"] * cfg["batch_size"] * cfg["packing"]


def _arch(cfg, image_shape) -> str:
    arch = cfg.get("arch", "auto")
    return ("mlp" if len(image_shape) == 1 else "dcgan") if arch == "auto" else arch


def build_gan(cfg: dict, image_shape) -> GAN:
    """The :class:`GAN` ``minigen train gan`` trains, from a run's config and the data's shape: MLP players for
    points, DCGAN players (or a StyleGAN generator) for square images; a ValueError for options they lack."""
    arch = _arch(cfg, image_shape)
    latent = cfg.get("latent_dim") or (2 if arch == "mlp" else 100)
    for name in ("g_hidden", "g_layers", "d_hidden", "d_layers", "maxout", "k", "packing", "width"):
        if int(cfg.get(name, 1)) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {cfg[name]}")
    if latent < 1:
        raise ValueError(f"--latent-dim must be >= 1, got {latent}")
    classes = cfg.get("num_classes") if cfg.get("conditional") else None
    if cfg.get("conditional") and not classes:
        raise ValueError("--conditional needs data with class labels (e.g. --data mnist)")
    if arch == "mlp":
        if len(image_shape) != 1 or classes:
            raise ValueError(f"gan: the MLP players take unlabelled points (N, D); got data of shape "
                             f"{tuple(image_shape)} — use --arch dcgan for images")
        dim = int(image_shape[0])
        generator = mlp_generator(latent, cfg["g_hidden"], cfg["g_layers"], dim,
                                  batchnorm=cfg.get("g_batchnorm", "on") == "on")
        discriminator = mlp_discriminator(dim * cfg["packing"], cfg["d_hidden"], cfg["d_layers"], cfg["maxout"],
                                          minibatch_kernels=cfg["minibatch_kernels"])
        return GAN(generator, discriminator, latent, packing=cfg["packing"])
    if len(image_shape) != 3 or image_shape[1] != image_shape[2]:
        raise ValueError(f"gan --arch dcgan: needs square images (C, S, S), got data of shape {tuple(image_shape)}")
    if cfg["minibatch_kernels"] or cfg["packing"] > 1:
        raise ValueError("gan --arch dcgan: --minibatch-kernels and --packing are for the MLP players")
    c, size = int(image_shape[0]), int(image_shape[1])
    if arch == "stylegan":
        if classes:
            raise ValueError("gan --arch stylegan: --conditional is for DCGAN")
        generator = StyleGenerator(latent, latent, cfg["width"], c, size)
        discriminator = DCGANDiscriminator(cfg["width"], c, size, minibatch_std=True)      # as StyleGAN's D
        return GAN(generator, dcgan_init_(discriminator), latent, tanh_images=True)
    generator = dcgan_init_(DCGANGenerator(latent, cfg["width"], c, size, classes))
    discriminator = dcgan_init_(DCGANDiscriminator(cfg["width"], c, size, classes))
    return GAN(generator, discriminator, latent, num_classes=classes, tanh_images=True)


def _optimizer(cfg, module, lr):
    """The player's optimizer; a module may define its own parameter groups (StyleGAN's mapping network)."""
    params = module.parameter_groups(lr) if hasattr(module, "parameter_groups") else module.parameters()
    if cfg["optimizer"] == "sgd":
        return optim.SGD(params, lr=lr, momentum=cfg["beta1"])
    return optim.Adam(params, lr=lr, betas=(cfg["beta1"], 0.999))


def gan_trainer_step(model: GAN, cfg: dict, train_images: np.ndarray):
    """Algorithm 1 as the Trainer's step; both optimizers and the replay store are checkpointed."""
    og = _optimizer(cfg, model.generator, cfg["lr"])
    od = _optimizer(cfg, model.discriminator, cfg["lr"] * cfg["d_lr_ratio"])
    schedulers = {}
    if cfg["schedule"] == "cosine":
        steps = cfg["total_steps"]
        schedulers = {"g_scheduler": optim.CosineAnnealingLR(og, steps, cfg["lr"] * cfg["min_lr_ratio"]),
                      "d_scheduler": optim.CosineAnnealingLR(od, steps * cfg["k"],
                                                             cfg["lr"] * cfg["d_lr_ratio"] * cfg["min_lr_ratio"])}
    replay = ReplayBuffer(cfg["replay_capacity"], cfg["replay"]) if cfg["replay"] > 0 else None
    penalty = None if cfg["penalty"] == "none" else cfg["penalty"]
    game = AdversarialTraining(model, og, od, k=cfg["k"], loss=cfg["loss"], penalty=penalty,
                               penalty_weight=cfg["penalty_weight"], replay=replay, **schedulers)
    return game, {"game": game}


def _toy(name: str):
    """The 2-D density ``name`` when it has known modes (ring8, grid25), else None."""
    from ...data import TOY_DATASETS, get_toy
    toy = get_toy(name) if name in TOY_DATASETS else None
    return toy if hasattr(toy, "mode_centers") else None


def _mode_scores(model: GAN, toy) -> dict:
    """PacGAN's scores of ``SAMPLES_SCORED`` samples: modes captured, high-quality share, reverse KL."""
    from ...metrics import mode_coverage
    return mode_coverage(model.sample(SAMPLES_SCORED), toy.mode_centers, toy.mode_std)


def evaluate_gan(model: GAN, train, test, args, progress: bool = False) -> dict:
    """2-D data with known modes: modes captured, high-quality samples and reverse KL of 2500 samples.
    Images: the classifier's Fréchet distance to the test set (and the same for held-out training images:
    the floor), classes covered, and for a conditional GAN the accuracy on the requested classes."""
    if test.images.ndim == 2:
        toy = _toy(test.name)
        if toy is None:
            raise ValueError(f"gan: 2-D evaluation needs data with known modes (ring8, grid25), not {test.name!r}")
        return _mode_scores(model, toy)
    from ..classifier import judge_samples
    return judge_samples(model.sample, model.num_classes, train, test, args)


def periodic_modes(model: GAN, test_points: np.ndarray, cfg: dict):
    """A curve point during training on 2-D data with known modes: the mode scores of
    ``SAMPLES_SCORED`` samples (the final evaluation's numbers, drawn from a fixed seed). Image GANs
    have none: their Fréchet distance needs 10,000 samples and the classifier (``minigen eval``)."""
    from ... import random as mg_random
    toy = _toy(cfg["data"])
    if test_points.ndim != 2 or toy is None:
        return None

    def evaluate():
        state = mg_random.get_rng_state()       # the training stream of random numbers stays untouched
        mg_random.manual_seed(cfg["seed"])
        scores = _mode_scores(model, toy)
        mg_random.set_rng_state(state)
        return {f"modes/{k}": v for k, v in scores.items() if k != "counts"}
    return evaluate


def gan_figures(model: GAN, run_dir: str, images: np.ndarray) -> list:
    """Images: a sample grid (one row per class for a conditional GAN). 2-D: samples in the data's box."""
    from ...viz import save_image_grid, scatter_2d
    if images.ndim == 4:
        if model.num_classes:
            labels = np.repeat(np.arange(model.num_classes), 10)
            grid = model.sample(len(labels), labels)
            caption = "samples G(z | y), one row per class y"
        else:
            grid, caption = model.sample(100), "samples G(z), z ~ N(0, I)"
        figures = [(caption, save_image_grid(grid, os.path.join(run_dir, "gan_samples.png"), nrow=10))]
        if isinstance(model.generator, StyleGenerator):
            figures += style_figures(model.generator, run_dir)
        return figures
    samples = np.asarray(model.sample(SAMPLES_SCORED))
    lo, hi = np.percentile(images, 0.5), np.percentile(images, 99.5)
    pad = 0.15 * (hi - lo)
    path = scatter_2d(samples, os.path.join(run_dir, "gan_samples_2d.png"), lim=(lo - pad, hi + pad),
                      title=f"{SAMPLES_SCORED} samples G(z), z ~ N(0, I)")
    return [("generator samples", path)]


def style_figures(g: StyleGenerator, run_dir: str) -> list:
    """StyleGAN's two grids: style mixing (a pair A, B per row; column j hands the last j layers to B)
    and noise variation (one w per row; columns: fresh per-pixel noise)."""
    from ...autograd import no_grad
    from ...viz import save_image_grid
    was_training = g.training
    g.eval()
    try:
        with no_grad():
            n = 6
            za, zb = ops.randn(n, g.latent_dim), ops.randn(n, g.latent_dim)
            noises = [ops.randn(n, 1, s, s) for s in g.noise_sizes()]        # the same noise in every column
            cols = [g.mix(za, zb, c, noises) for c in range(g.num_layers, -1, -1)]    # all A ... all B
            mixing = ops.stack(cols, dim=1).reshape(-1, *cols[0].shape[1:])
            w = g.mapping(ops.randn(n, g.latent_dim))
            noisy = ops.stack([g.synthesize(w) for _ in range(8)], dim=1).reshape(-1, *cols[0].shape[1:])
    finally:
        g.train(was_training)
    mix_path = save_image_grid((mixing.numpy() + 1) / 2, os.path.join(run_dir, "style_mixing.png"),
                               nrow=g.num_layers + 1)
    noise_path = save_image_grid((noisy.numpy() + 1) / 2, os.path.join(run_dir, "style_noise.png"), nrow=8)
    return [("style mixing: column j draws the first L-j layers with A's w and the last j with B's "
             "(left: all A, right: all B)", mix_path),
            ("noise variation: one w per row, fresh per-pixel noise B in each column", noise_path)]


# --------------------------------------------------------------------------- CycleGAN

def add_cyclegan_arguments(parser) -> None:
    """The options of ``minigen train cyclegan``: the hidden domain transform, the networks' sizes, λ of the
    cycle loss, the pool of past translations and Adam's β1."""
    parser.add_argument("--domain", choices=sorted(DOMAINS), default="thicken",
                        help="how domain Y is made from the images X (hidden from training; default: thicken)")
    parser.add_argument("--width", type=int, default=32, help="channels of the first layers (default: 32)")
    parser.add_argument("--blocks", type=int, default=2, help="residual blocks per generator (default: 2)")
    parser.add_argument("--cycle-weight", type=float, default=10.0, help="lambda of L_cyc (default: 10)")
    parser.add_argument("--pool", type=int, default=50, help="past translations D sees (default: 50)")
    parser.add_argument("--beta1", type=float, default=0.5, help="Adam's beta1 (default: 0.5)")


def build_cyclegan(cfg: dict, image_shape) -> CycleGAN:
    """The :class:`CycleGAN` ``minigen train cyclegan`` trains, for images with sides divisible by 4."""
    if len(image_shape) != 3 or image_shape[1] % 4 or image_shape[2] % 4:
        raise ValueError(f"cyclegan: needs images with sides divisible by 4, got data of shape {tuple(image_shape)}")
    return CycleGAN(int(image_shape[0]), cfg["width"], cfg["blocks"], cfg["cycle_weight"], cfg["domain"])


def cyclegan_examples_per_step(cfg: dict) -> int:
    """Half of each batch is domain X, the other half (transformed) domain Y."""
    return 2 * cfg["batch_size"]


def cyclegan_trainer_step(model: CycleGAN, cfg: dict, train_images):
    """CycleGAN's step (:class:`CycleGANTraining`) as the Trainer's ``step_fn``: Adam for the generators and
    for the discriminators (cosine-annealed with ``--schedule cosine``), checkpointed with the model."""
    params_g = list(model.G.parameters()) + list(model.F.parameters())
    params_d = list(model.D_X.parameters()) + list(model.D_Y.parameters())
    og = optim.Adam(params_g, lr=cfg["lr"], betas=(cfg["beta1"], 0.999))
    od = optim.Adam(params_d, lr=cfg["lr"], betas=(cfg["beta1"], 0.999))
    scheds = {}
    if cfg["schedule"] == "cosine":
        scheds = {name: optim.CosineAnnealingLR(o, cfg["total_steps"], cfg["lr"] * cfg["min_lr_ratio"])
                  for name, o in (("g_scheduler", og), ("d_scheduler", od))}
    step = CycleGANTraining(model, og, od, cfg["pool"], **scheds)
    return step, {"game": step}


def evaluate_cyclegan(model: CycleGAN, train, test, args, progress: bool = False) -> dict:
    """On test images x with their hidden pair T(x): cycle errors both ways, translation error
    |G(x) - T(x)| and |F(T(x)) - x| (L1 per pixel), and — with a classifier run — how often the
    classifier gives x and G(x) the same label."""
    x = test.images[:int(getattr(args, "samples", 10000))]
    y = DOMAINS[model.domain](x)
    gx, fy = model.translate(x, "x2y"), model.translate(y, "y2x")
    out = {"domain": model.domain, "test_examples": int(len(x)),
           "cycle_error_x": float(np.abs(model.translate(gx, "y2x") - x).mean()),
           "cycle_error_y": float(np.abs(model.translate(fy, "x2y") - y).mean()),
           "translation_error_x2y": float(np.abs(gx - y).mean()),
           "translation_error_y2x": float(np.abs(fy - x).mean()),
           "identity_baseline_x2y": float(np.abs(x - y).mean())}
    path = getattr(args, "classifier", None) or os.path.join("runs", f"{train.name}-classifier")
    if os.path.exists(os.path.join(path, "config.json")):
        from ..classifier import load_classifier
        judge = load_classifier(path)
        px, pgx = judge.predict(x)[0], judge.predict(gx)[0]
        out["label_agreement_x_gx"] = float((px == pgx).mean())
        if test.labels is not None:
            out["classifier_accuracy_on_gx"] = float((pgx == test.labels[:len(x)]).mean())
            out["classifier_accuracy_on_true_y"] = float((judge.predict(y)[0] == test.labels[:len(x)]).mean())
    return out


def cyclegan_figures(model: CycleGAN, run_dir: str, images: np.ndarray) -> list:
    """Rows x, G(x), F(G(x)), then y, F(y), G(F(y)) for 10 test images."""
    from ...viz import save_image_grid
    x = images[:10]
    y = DOMAINS[model.domain](images[10:20])
    gx, fy = model.translate(x, "x2y"), model.translate(y, "y2x")
    rows = [x, gx, model.translate(gx, "y2x"), y, fy, model.translate(fy, "x2y")]
    path = save_image_grid(np.concatenate(rows), os.path.join(run_dir, "cyclegan.png"), nrow=len(x))
    return [("rows: x, G(x), F(G(x)); y, F(y), G(F(y)) on test images", path)]
