"""The energy family on the command line: ``minigen train rbm|dbn`` and ``minigen eval`` of their runs.

Like ``vae.py``'s recipes, these turn a run's config into a model, plug the
family's own update into the one training loop (an RBM learns by contrastive
divergence, not by backpropagating a loss) and score a run — here with
annealed importance sampling, since an RBM's likelihood needs log Z.
"""
from __future__ import annotations

import math
import os

import numpy as np

from .dbn import DeepBeliefNet, GreedyLayer, dbn_figures
from .rbm import (MAX_ENUMERATED_UNITS, BernoulliRBM, ContrastiveDivergence, ais_log_partition, ais_schedule,
                  base_rate_biases, exact_log_partition, plot_filters)


def add_rbm_arguments(parser) -> None:
    parser.add_argument("--hidden", type=int, default=500, help="hidden units (default: 500)")
    _add_cd_arguments(parser)


def _add_cd_arguments(parser) -> None:
    parser.add_argument("--cd-k", type=int, default=1,
                        help="Gibbs sweeps of the negative phase: CD-k (default: 1)")
    parser.add_argument("--persistent", action="store_true",
                        help="persistent CD (Tieleman 2008): the negative chains carry over between steps")
    parser.add_argument("--momentum", type=float, default=0.9,
                        help="SGD momentum after the first --momentum-warmup steps (default: 0.9)")
    parser.add_argument("--momentum-warmup", type=int, default=500,
                        help="steps at momentum 0.5 while the weights change fast (default: 500)")
    parser.add_argument("--weight-decay", type=float, default=2e-4, help="L2 decay of W (default: 2e-4)")


def build_rbm(cfg: dict, image_shape) -> BernoulliRBM:
    return BernoulliRBM(math.prod(image_shape), cfg["hidden"])


def _contrastive_divergence(rbm: BernoulliRBM, cfg: dict) -> ContrastiveDivergence:
    return ContrastiveDivergence(rbm, lr=cfg["lr"], k=cfg["cd_k"], persistent=cfg["persistent"],
                                 momentum=cfg["momentum"], momentum_warmup=cfg["momentum_warmup"],
                                 weight_decay=cfg["weight_decay"])


def rbm_trainer_step(model: BernoulliRBM, cfg: dict, train_images: np.ndarray):
    """Contrastive divergence as the Trainer's ``step_fn``; the visible biases start at the
    data's log-odds (Hinton's guide §8) and the updater is checkpointed with the model."""
    model.b.data[...] = base_rate_biases(train_images.reshape(len(train_images), -1))
    cd = _contrastive_divergence(model, cfg)
    return cd.cd_step, {"cd": cd}


# --------------------------------------------------------------------------- deep belief nets

def add_dbn_arguments(parser) -> None:
    parser.add_argument("--hidden", default="500,500",
                        help="hidden layer sizes, bottom to top (default: 500,500; Hinton et al. 2006: 500,500,2000)")
    _add_cd_arguments(parser)


def build_dbn(cfg: dict, image_shape) -> DeepBeliefNet:
    from ..vae import _sizes
    return DeepBeliefNet([math.prod(image_shape), *_sizes(cfg["hidden"])])


class GreedyTraining:
    r"""Greedy layer-wise training (Eq. EBM-12) as one Trainer ``step_fn``: the run's steps are
    split evenly between the RBMs, bottom first. When RBM k's turn comes it starts from RBM k-1
    transposed where the sizes allow (so adding it cannot start below the bound), and learns
    from samples of :math:`Q(h^k\mid x)` through the frozen layers below. The step counter and
    every layer's CD state are checkpointed, so a resumed run switches layers at the same step."""

    def __init__(self, dbn: DeepBeliefNet, total_steps: int, cfg: dict):
        self.dbn, self.step_count = dbn, 0
        self.steps_per_layer = max(1, total_steps // len(dbn.rbms))
        self.layers = [GreedyLayer(dbn, k, _contrastive_divergence(rbm, cfg)) for k, rbm in enumerate(dbn.rbms)]

    def __call__(self, batch) -> dict:
        k = min(self.step_count // self.steps_per_layer, len(self.layers) - 1)
        if k > 0 and self.step_count == k * self.steps_per_layer and self.dbn.can_tie(k):
            self.dbn.init_from_below(k)
        self.step_count += 1
        return {"layer": k, **self.layers[k].step(batch)}

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "layers": {str(k): layer.cd.state_dict()
                                                          for k, layer in enumerate(self.layers)}}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        for k, layer in enumerate(self.layers):
            layer.cd.load_state_dict(state["layers"][str(k)])


def dbn_trainer_step(model: DeepBeliefNet, cfg: dict, train_images: np.ndarray):
    model.rbms[0].b.data[...] = base_rate_biases(train_images.reshape(len(train_images), -1))
    greedy = GreedyTraining(model, cfg["total_steps"], cfg)
    return greedy, {"greedy": greedy}


def add_dbn_eval_arguments(parser) -> None:
    parser.add_argument("--bound-samples", type=int, default=10,
                        help="draws from Q per test image for the DBN's variational bound (default: 10)")


def evaluate_dbn(model: DeepBeliefNet, train, test, args, progress: bool = True) -> dict:
    """The variational lower bound on the test log-probability, with the top RBM's log Z by AIS."""
    train_images = train.images.reshape(len(train.images), -1)
    test_images = test.images.reshape(len(test.images), -1)
    top_input = model.propagate_up(train_images[:10000], len(model.rbms) - 1, "sample")
    estimate = ais_log_partition(model.top, base_rate_biases(top_input), ais_schedule(args.ais_scale),
                                 n_chains=args.ais_chains)
    bound = model.variational_bound(test_images, exact=False, n_samples=args.bound_samples, log_z=estimate.log_z)
    return {"test_bound_ais": float(np.mean(bound)), "log_z_top_ais": estimate.log_z,
            "log_z_top_lower": estimate.lower, "log_z_top_upper": estimate.upper,
            "bound_samples": args.bound_samples, "test_examples": len(test_images)}


def rbm_figures(model: BernoulliRBM, run_dir: str, images: np.ndarray) -> list:
    """Filters (weight columns) and samples of long Gibbs chains started from test images."""
    from ...viz import save_image_grid

    shape = images.shape[1:]
    figures = []
    if math.prod(shape[-2:]) == model.n_visible:
        figures.append(("filters: the weights into the first 100 hidden units (Eq. EBM-11)",
                        plot_filters(model, os.path.join(run_dir, "filters.png"), image_shape=shape[-2:])))
    samples = model.sample(64, steps=1000, init=images[:64])
    figures.append(("samples: 1000 Gibbs sweeps from test images (Eq. EBM-11)",
                    save_image_grid(samples.reshape(-1, *shape), os.path.join(run_dir, "gibbs_samples.png"),
                                    nrow=8)))
    return figures


def add_rbm_eval_arguments(parser) -> None:
    parser.add_argument("--ais-chains", type=int, default=100, help="AIS runs for log Z (default: 100)")
    parser.add_argument("--ais-scale", type=float, default=1.0,
                        help="AIS schedule length: 1 = Salakhutdinov & Murray's 14,500 temperatures (default: 1)")


def evaluate_rbm(model: BernoulliRBM, train, test, args, progress: bool = True) -> dict:
    """Test log-probability :math:`-F(v) - \\log Z` with log Z by AIS (and exactly when a layer is small)."""
    train_images = train.images.reshape(len(train.images), -1)
    test_images = test.images.reshape(len(test.images), -1)
    estimate = ais_log_partition(model, base_rate_biases(train_images), ais_schedule(args.ais_scale),
                                 n_chains=args.ais_chains)
    test_free_energy = float(model.free_energy(test_images).mean())
    out = {"test_log_prob_ais": -test_free_energy - estimate.log_z,
           # log Z's ±3 s.e. interval moves the average log-probability the other way
           "test_log_prob_lower": -test_free_energy - estimate.upper,
           "test_log_prob_upper": -test_free_energy - estimate.lower,
           "train_log_prob_ais": -float(model.free_energy(train_images[:10000]).mean()) - estimate.log_z,
           "log_z_ais": estimate.log_z, "log_z_lower": estimate.lower, "log_z_upper": estimate.upper,
           "ais_chains": len(estimate.log_weights), "ais_temperatures": estimate.n_betas,
           "test_examples": len(test_images)}
    if min(model.n_visible, model.n_hidden) <= MAX_ENUMERATED_UNITS:
        out["log_z_exact"] = exact_log_partition(model)
        out["test_log_prob_exact"] = -test_free_energy - out["log_z_exact"]
    return out
