"""Command-line recipes of the flows: `minigen train realnvp` fits images (the multi-scale RealNVP) or
2-D toy points (a coupling stack); `minigen train planar` fits 2-D points. Both are scored by exact NLL."""
from __future__ import annotations

import math

import numpy as np

from ...autograd import no_grad
from .models import FlowDensity, RealNVP


def add_realnvp_arguments(parser) -> None:
    """The options of ``minigen train realnvp``: the multi-scale model's for images, the coupling stack's for
    2-D points."""
    parser.add_argument("--scales", type=int, default=2, help="images: multi-scale levels (default: 2)")
    parser.add_argument("--hidden", type=int, default=64, help="width of the s/t networks (default: 64)")
    parser.add_argument("--blocks", type=int, default=4, help="images: residual blocks per s/t network (default: 4)")
    parser.add_argument("--layers", type=int, default=8, help="2-D data: coupling layers (default: 8)")
    parser.add_argument("--alpha", type=float, default=0.05, help="images: logit transform's alpha (default: 0.05)")


def build_realnvp(cfg: dict, image_shape):
    """The model ``minigen train realnvp`` trains, from a run's config and the data's shape: a :class:`RealNVP`
    for images, a :class:`FlowDensity` of affine couplings for points (D,)."""
    if len(image_shape) == 1:
        return FlowDensity(image_shape[0], "realnvp", cfg["layers"], cfg["hidden"])
    return RealNVP(image_shape, cfg["scales"], cfg["hidden"], cfg["blocks"], cfg["alpha"])


def add_planar_arguments(parser) -> None:
    """The options of ``minigen train planar``: ``--layers``, the number K of planar flows."""
    parser.add_argument("--layers", type=int, default=16, help="planar flows K (default: 16)")


def build_planar(cfg: dict, image_shape):
    """The :class:`FlowDensity` of planar flows ``minigen train planar`` trains, for points (D,);
    a ValueError for images."""
    if len(image_shape) != 1:
        raise ValueError(f"planar flows model points (--data ring8, moons, ...), not images of shape "
                         f"{tuple(image_shape)}; use realnvp for images")
    return FlowDensity(image_shape[0], "planar", cfg["layers"])


def _batched_nll(model, data: np.ndarray, size: int = 500) -> np.ndarray:
    with no_grad():
        return np.concatenate([-model.log_prob(data[i:i + size]).numpy() for i in range(0, len(data), size)])


def evaluate_flow(model, train, test, args, progress: bool = True) -> dict:
    """Exact test NLL (Eq. FLOW-1). Images: dequantized NLL and bits/dim. 2-D toys: also the true
    density's NLL on the same points (an estimate of its entropy) and the gap, KL(p‖q) ≥ 0."""
    from ...data import TOY_DATASETS, get_toy
    from ...metrics import bits_per_dim, summarize
    nll = _batched_nll(model, test.images)
    stats = summarize(nll)
    out = {"test_nll": stats["mean"], "test_nll_sem": stats["sem"], "test_examples": stats["n"]}
    if test.images.ndim == 4:
        out["bits_per_dim"] = bits_per_dim(stats["mean"], math.prod(test.images.shape[1:]))
    elif test.name in TOY_DATASETS:
        true_nll = -get_toy(test.name).log_prob(test.images)
        gap = summarize(nll - true_nll)
        out.update(true_entropy=float(true_nll.mean()), true_entropy_sem=summarize(true_nll)["sem"],
                   gap_nats=gap["mean"], gap_sem=gap["sem"])
    return out


def periodic_flow_nll(model, test_images: np.ndarray, cfg: dict):
    """A curve point during training: the NLL of a fixed test subset."""
    def evaluate():
        model.eval()
        value = float(_batched_nll(model, test_images).mean())
        model.train()
        return {"test/nll": value}
    return evaluate


def flow_figures(model, run_dir: str, images: np.ndarray) -> list:
    """Images: samples and latent interpolations. 2-D: the learned density beside samples."""
    import os

    from ...viz import save_image_grid
    if images.ndim == 4:
        samples = model.sample(64)
        figures = [("samples, decoded from N(0, I) latents", save_image_grid(samples, os.path.join(run_dir, "flow_samples.png"), nrow=8))]
        frames = model.interpolate(images[:4], images[4:8], steps=8)
        figures.append(("latent interpolations between test images (one row each)",
                        save_image_grid(frames.reshape(-1, *frames.shape[2:]),
                                        os.path.join(run_dir, "flow_interpolation.png"), nrow=8)))
        return figures
    from ...viz import density_2d, scatter_2d
    lo, hi = np.percentile(images, 0.5), np.percentile(images, 99.5)      # one square box around the data
    lim = (lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo))

    def log_prob(points):
        with no_grad():
            return model.log_prob(points).numpy()
    density = density_2d(log_prob, os.path.join(run_dir, "flow_density.png"), lim=lim,
                         title="model density p(x) (Eq. FLOW-1)")
    samples = scatter_2d(model.sample(2000), os.path.join(run_dir, "flow_samples_2d.png"), lim=lim,
                         title="2000 samples: f⁻¹(z), z ~ N(0, I)")
    return [("the learned density", density), ("samples from the flow", samples)]
