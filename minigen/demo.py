"""``minigen demo``: a small model of every implemented family, trained on the digits, in one gallery.

Each entry of :data:`DEMOS` is an ordinary ``minigen train`` command line
(so the demo exercises exactly what a user runs) plus the evaluation that
goes into the gallery's metrics table. The data are scikit-learn's bundled
8×8 digits: no network, a few minutes on 2 cores. Later families add their
entries here.
"""
from __future__ import annotations

import os

__all__ = ["DEMOS", "FIGURES", "TABLE_COLUMNS", "run_demo"]

# Where a demo needs an earlier demo's run folder (latent diffusion: the autoencoder), the most recent one.
AUTOENCODER = "<the autoencoder run above>"

# (section title, what it shows, `minigen train` arguments); entries without --data train on the digits
DEMOS = [
    ("FVSBN — a logistic regression per pixel (Eq. AR-1)",
     "The chain rule with the simplest conditionals: p(x_i | x_<i) = σ(b_i + Σ_{j<i} W_ij x_j). "
     "Test NLL is exact; samples are drawn one pixel at a time (Eq. AR-4).",
     ["fvsbn", "--steps", "1500", "--batch-size", "64", "--lr", "3e-3", "--schedule", "cosine"]),
    ("NADE — conditionals sharing one hidden layer (Eq. AR-1)",
     "h_i = σ(c + W_{:,<i} x_<i), computed for all i by one running sum.",
     ["nade", "--hidden", "100", "--steps", "1500", "--batch-size", "64", "--lr", "3e-3", "--schedule", "cosine"]),
    ("PixelCNN — masked convolutions (Eq. AR-2)",
     "A 5x5 mask-A convolution, residual blocks of 3x3 mask-B convolutions and a 1x1 head; sampled with the "
     "row-window sampler.",
     ["pixelcnn", "--channels", "32", "--blocks", "3", "--first-kernel", "5", "--head-channels", "32",
      "--steps", "800", "--batch-size", "64", "--schedule", "cosine"]),
    ("Class-conditional Gated PixelCNN (Eq. AR-5)",
     "Vertical and horizontal stacks with tanh ⊙ σ gates (no blind spot); each row of samples is one digit class.",
     ["gated_pixelcnn", "--channels", "16", "--layers", "4", "--first-kernel", "5", "--conditional",
      "--steps", "800", "--batch-size", "64", "--schedule", "cosine"]),
    ("PixelRNN — Row LSTM (Eq. AR-3)",
     "A mask-A convolution and a Row LSTM that carries a state from row to row.",
     ["pixelrnn", "--channels", "16", "--layers", "1", "--first-kernel", "5", "--head-channels", "32",
      "--steps", "500", "--batch-size", "64", "--schedule", "cosine"]),
    ("VAE — MLP encoder and decoder",
     "A 64-200-200-8 VAE with a Bernoulli decoder on dynamically binarized digits, trained on the "
     "ELBO (Eq. VAE-4) with reparameterized samples (Eq. VAE-5). Test NLL is the IWAE bound with "
     "k = 1000 (Eq. VAE-1 by importance sampling); the traversal varies one latent at a time (Eq. VAE-6).",
     ["vae", "--latent", "8", "--hidden", "200,200", "--steps", "4000", "--batch-size", "64",
      "--schedule", "cosine"]),
    ("IWAE — the same networks, trained on the k = 5 importance-weighted bound",
     "Training on L_5 instead of the ELBO: a tighter bound, used by more latents.",
     ["vae", "--latent", "8", "--hidden", "200,200", "--steps", "2000", "--batch-size", "64",
      "--schedule", "cosine", "--k", "5"]),
    ("Convolutional VAE",
     "Two stride-2 convolutions in the encoder and two transposed convolutions in the decoder.",
     ["vae", "--arch", "conv", "--latent", "8", "--steps", "2000", "--batch-size", "64", "--schedule", "cosine"]),
    ("Hierarchical VAE (Eq. DIF-2)",
     "Two stochastic layers x → z1 → z2, the Markovian hierarchy the diffusion section grows from; "
     "the bound is computed from its five factors.",
     ["hvae", "--latents", "16,8", "--hidden", "200,200", "--hidden2", "64,64", "--steps", "4000",
      "--batch-size", "64", "--schedule", "cosine"]),
    ("RealNVP on grey-level digits (Eq. FLOW-1, FLOW-2)",
     "Two scales of affine couplings (checkerboard, squeeze, channel masks, actnorm) on dequantized, "
     "logit-transformed pixels; bits/dim is exact up to the dequantization bound.",
     ["realnvp", "--data", "digits", "--binarize", "none", "--hidden", "32", "--blocks", "2", "--steps", "1000",
      "--batch-size", "64", "--schedule", "cosine"]),
    ("Planar flows on two moons (Eq. FLOW-4)",
     "16 planar maps f(z) = z + û tanh(wᵀz + b) with wᵀû ≥ -1, fitted by maximum likelihood (Eq. FLOW-3); "
     "test NLL against the true density's entropy.",
     ["planar", "--data", "moons", "--steps", "1500", "--schedule", "cosine"]),

    ("Restricted Boltzmann machine (Eq. EBM-11)",
     "64 visible and 64 hidden units trained by persistent contrastive divergence; the test "
     "log-probability needs log Z, estimated by annealed importance sampling over 14,500 temperatures. "
     "Samples are 1000 block-Gibbs sweeps from test images.",
     ["rbm", "--hidden", "64", "--steps", "3000", "--batch-size", "64", "--persistent", "--momentum", "0.5",
      "--lr", "0.02"]),
    ("Deep belief net (Eq. EBM-12)",
     "Two RBMs trained greedily, bottom first, the second starting from the first transposed; samples "
     "come from Gibbs sampling in the top RBM and one pass down. Scored by its variational bound.",
     ["dbn", "--hidden", "64,64", "--steps", "4000", "--batch-size", "64", "--cd-k", "5", "--momentum", "0.5",
      "--lr", "0.02"]),

    ("The judge: a small digit classifier",
     "Two stages of 3x3 convolutions, batch norm and max-pooling, and a 128-unit feature layer. The GANs "
     "below are scored with it: Fréchet distance on its features, class accuracy of G(z | y).",
     ["classifier", "--data", "digits", "--binarize", "none", "--steps", "1500", "--batch-size", "64",
      "--lr", "2e-3", "--schedule", "cosine"]),
    ("PacGAN2 on a ring of 8 Gaussians (Eq. GAN-2, GAN-5)",
     "Algorithm 1 with MLP players, the discriminator judging packs of two samples; modes captured and "
     "high-quality samples (within 3σ of a mode) as in PacGAN's Table 1 (`minigen eval gan-modes` has all remedies).",
     ["gan", "--data", "ring8", "--packing", "2", "--g-hidden", "128", "--d-hidden", "128", "--steps", "3000",
      "--schedule", "cosine"]),
    ("Conditional DCGAN (Eq. GAN-6, GAN-7)",
     "Transposed convolutions in G, strided ones in D, batch norm, ReLU/Tanh and LeakyReLU; G reads [z, onehot(y)], "
     "D projects a class embedding onto its features. Each row of samples is one class.",
     ["cgan", "--data", "digits", "--binarize", "none", "--width", "32", "--steps", "3000"]),
    ("A small StyleGAN (Eq. GAN-9, GAN-10)",
     "Mapping network z → w, AdaIN styles A(w) per block, per-pixel noise B, R1 penalty on D. Style mixing: "
     "the first block(s) from one w, the rest from another; noise variation: one w, fresh noise.",
     ["stylegan", "--data", "digits", "--binarize", "none", "--width", "32", "--steps", "3000"]),
    ("CycleGAN: digits ↔ thickened digits (Eq. GAN-8)",
     "Two generators and two PatchGAN discriminators, L_GAN both ways + λ L_cyc on unpaired halves of each "
     "batch; the hidden pairing gives the true translation error.",
     ["cyclegan", "--data", "digits", "--binarize", "none", "--domain", "thicken", "--width", "16",
      "--steps", "1000"]),
    ("DDPM: a small U-Net denoiser (Eq. DIF-13, DIF-14, DIF-15)",
     "Algorithm 1 (L_simple on ε) with T = 100 linear steps and averaged weights; samples by Algorithm 2, and "
     "the denoising strip from x_T to x_0; scored by the classifier above.",
     ["ddpm", "--data", "digits", "--binarize", "none", "--channels", "16", "--channel-mults", "1,2",
      "--attention-levels", "1", "--groups", "4", "--timesteps", "100", "--steps", "3000", "--ema", "0.995",
      "--schedule", "cosine", "--lr", "1e-3"]),
    ("DDPM on two moons (Eq. DIF-7)",
     "The same Algorithm 1 with an MLP ε-network on 2-D points; the variational bound on held-out points' "
     "−log p(x) (Gaussian decoder L_0) stands beside the density's true entropy, samples over the density.",
     ["ddpm", "--data", "moons", "--timesteps", "200", "--steps", "3000", "--batch-size", "256", "--lr", "1e-3",
      "--schedule", "cosine", "--ema", "0.995"]),
    ("The first stage of latent diffusion: a KL autoencoder (Eq. DIF-17)",
     "A conv VAE whose latent is a 4×2×2 map (4× fewer numbers than pixels) and whose KL weight is small: "
     "held-out reconstructions and their pixel error.",
     ["autoencoder", "--data", "digits", "--binarize", "none", "--width", "16", "--steps", "1500", "--lr", "2e-3"]),
    ("Latent diffusion with captions (Eq. DIF-17)",
     "DDPM on the autoencoder's latents, its ε-network reading captions such as \"a thin seven\" through "
     "cross-attention; each row of samples is one class (guided), decoded by the autoencoder.",
     ["latent_diffusion", "--data", "digits", "--binarize", "none", "--autoencoder", AUTOENCODER, "--channels", "32",
      "--timesteps", "100", "--steps", "3000", "--ema", "0.995", "--schedule", "cosine"]),
]

# The metrics table: each family's headline numbers (log-probabilities are in nats per image).
TABLE_COLUMNS = ("test_nll", "true_entropy", "test_nll_iwae1000", "test_elbo", "test_log_prob_ais", "test_bound_ais",
                 "bits_per_dim", "linear_probe_accuracy", "test_accuracy", "modes", "high_quality",
                 "frechet_distance", "frechet_distance_real", "class_accuracy", "cycle_error_x",
                 "translation_error_x2y", "label_agreement_x_gx", "test_bound_nats", "true_entropy_nats",
                 "test_mae")

# The pictures a run folder may hold, in gallery order, with their captions.
FIGURES = [("samples, one pixel at a time", "ar_samples.png"),
           ("flow samples", "flow_samples.png"),
           ("latent interpolations", "flow_interpolation.png"),
           ("learned density", "flow_density.png"),
           ("samples of the flow", "flow_samples_2d.png"),
           ("samples from the prior", "prior_samples.png"),
           ("inputs and reconstructions", "reconstructions.png"),
           ("latent traversal", "latent_traversal.png"),
           ("samples of long Gibbs chains", "gibbs_samples.png"),
           ("top-down samples", "dbn_samples.png"),
           ("filters: weights into the hidden units", "filters.png"),
           ("first-layer filters", "dbn_filters.png"),
           ("generator samples", "gan_samples_2d.png"),
           ("samples of G", "gan_samples.png"),
           ("style mixing", "style_mixing.png"),
           ("noise variation", "style_noise.png"),
           ("x, G(x), F(G(x)); y, F(y), G(F(y))", "cyclegan.png"),
           ("samples (Algorithm 2)", "ddpm_samples.png"),
           ("denoising x_T -> x_0", "ddpm_strip.png"),
           ("samples over the density", "ddpm_samples_2d.png"),
           ("training curves", "loss.png")]


def run_demo(args) -> str:
    """Train every demo model, evaluate it, write ``<runs-dir>/demo/index.html``; returns its path."""
    from .cli import build_parser
    from .models import get_spec
    from .runs import evaluate, train
    from .viz import write_gallery

    root = os.path.join(args.runs_dir, "demo")
    parser = build_parser()
    sections, judge = [], []            # the classifier run, once trained, scores the image GANs
    autoencoder = None
    for i, (title, text, argv) in enumerate(DEMOS):
        name = f"{i + 1}-{argv[0]}"
        argv = [autoencoder if a is AUTOENCODER else a for a in argv]
        data = [] if "--data" in argv else ["--data", "digits", "--binarize", "dynamic"]
        argv = ["train", *argv, *data, "--runs-dir", root,
                "--name", name, "--seed", str(args.seed), "--checkpoint-every", "100000"]
        if args.steps:
            argv += ["--steps", str(args.steps)]
        if args.no_progress:
            argv.append("--no-progress")
        train_args = parser.parse_args(argv)
        cfg = {k: v for k, v in vars(train_args).items() if k != "command"}
        cfg.update(name=name, command="minigen " + " ".join(argv), resume=os.path.exists(
            os.path.join(root, name, "checkpoint.npz")))
        run_dir, _ = train(get_spec(train_args.model), cfg, progress=not args.no_progress)
        if argv[1] == "classifier":
            judge = ["--classifier", run_dir]
        if argv[1] == "autoencoder":
            autoencoder = run_dir
        # samples for the scores: 2000 per model; diffusion models draw theirs by 25 DDIM steps
        # (--limit: the digits' test split has 360 images; a toy's 10,000 points are subsampled)
        eval_args = parser.parse_args(["eval", run_dir, "--k", "1000", "--seed", str(args.seed), "--samples", "2000",
                                       "--limit", "2000",
                                       "--sampler", "ddim", "--steps", "25", *judge])
        metrics = evaluate(run_dir, eval_args, progress=False)
        images = [(caption, os.path.join(run_dir, png)) for caption, png in FIGURES
                  if os.path.exists(os.path.join(run_dir, png))]
        sections.append({"title": title, "text": f"{text}\n\nCommand: {cfg['command']}", "images": images,
                         "metrics": {k: v for k, v in metrics.items() if k in TABLE_COLUMNS}})
    return write_gallery(os.path.join(root, "index.html"), "minigen demo — deep generative models on the digits",
                         sections, intro="Every model below was trained by `minigen demo` on scikit-learn's "
                                         "8×8 digits; each section gives the command that reproduces it.")
