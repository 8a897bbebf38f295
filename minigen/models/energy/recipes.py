"""The energy family on the command line: ``minigen train rbm|dbn|bm`` and ``minigen eval`` of their runs.

Like ``vae.py``'s recipes, these turn a run's config into a model, plug the
family's own update into the one training loop (an RBM learns by contrastive
divergence, not by backpropagating a loss) and score a run — here with
annealed importance sampling, since an RBM's likelihood needs log Z.
"""
from __future__ import annotations

import functools
import math
import os

import numpy as np

from ... import nn
from ...checks import check_int, parse_sizes
from ...optim import cosine_annealing
from ..taxonomy import APPROXIMATE
from .boltzmann import MAX_EXACT_UNITS, BoltzmannMachine, state_index
from .dbn import DeepBeliefNet, GreedyLayer, dbn_figures  # noqa: F401  (dbn_figures: the registry reads it here)
from .rbm import (MAX_ENUMERATED_UNITS, RBM, BernoulliRBM, ContrastiveDivergence, GaussianBernoulliRBM,
                  ais_log_partition, ais_schedule, base_rate_biases, exact_log_partition, plot_filters)


def add_rbm_arguments(parser) -> None:
    """The options of ``minigen train rbm``: hidden units, the kind of visible units and contrastive divergence's
    settings."""
    parser.add_argument("--hidden", type=int, default=500, help="hidden units (default: 500)")
    parser.add_argument("--visible", choices=["bernoulli", "gaussian"], default="bernoulli",
                        help="visible units: binary, or Gaussian for real-valued data (mean and σ per pixel "
                             "from the training data; they want a ~10x smaller --lr, e.g. 0.001; "
                             "default: bernoulli)")
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


#: The smallest σ a Gaussian visible unit gets: pixels that never vary in the training set
#: (MNIST's border) would otherwise have a zero-width Gaussian.
MIN_PIXEL_SIGMA = 0.05


def build_rbm(cfg: dict, image_shape) -> RBM:
    """The RBM ``minigen train rbm`` trains, one visible unit per pixel: Bernoulli, or Gaussian with
    ``--visible gaussian``."""
    cls = GaussianBernoulliRBM if cfg.get("visible") == "gaussian" else BernoulliRBM
    return cls(math.prod(image_shape), cfg["hidden"])


def _contrastive_divergence(rbm: RBM, cfg: dict, steps: int) -> ContrastiveDivergence:
    """The run's CD updater; ``--schedule cosine`` decays its rate over its ``steps`` updates."""
    schedule = None
    if cfg.get("schedule") == "cosine":
        schedule = functools.partial(cosine_annealing, cfg["lr"], T_max=steps,
                                     eta_min=cfg["lr"] * cfg.get("min_lr_ratio", 0.0))
    return ContrastiveDivergence(rbm, lr=cfg["lr"], k=cfg["cd_k"], persistent=cfg["persistent"],
                                 momentum=cfg["momentum"], momentum_warmup=cfg["momentum_warmup"],
                                 weight_decay=cfg["weight_decay"], lr_schedule=schedule)


def rbm_trainer_step(model: RBM, cfg: dict, train_images: np.ndarray):
    """Contrastive divergence as the Trainer's ``step_fn``; the visible biases start at the
    data's log-odds (Hinton's guide §8) — for Gaussian visibles at the pixel means, with σ
    the pixel standard deviations — and the updater is checkpointed with the model."""
    pixels = train_images.reshape(len(train_images), -1)
    if isinstance(model, GaussianBernoulliRBM):      # start as the per-pixel Gaussian of the data
        model.b.data[...] = pixels.mean(0)
        model.log_sigma.data[...] = np.log(np.maximum(pixels.std(0), MIN_PIXEL_SIGMA))
    else:
        model.b.data[...] = base_rate_biases(pixels)
    cd = _contrastive_divergence(model, cfg, cfg["total_steps"])
    return cd.cd_step, {"cd": cd}


# --------------------------------------------------------------------------- deep belief nets

def add_dbn_arguments(parser) -> None:
    """The options of ``minigen train dbn``: the hidden layer sizes and contrastive divergence's settings."""
    parser.add_argument("--hidden", default="500,500",
                        help="hidden layer sizes, bottom to top (default: 500,500; Hinton et al. 2006: 500,500,2000)")
    _add_cd_arguments(parser)


def build_dbn(cfg: dict, image_shape) -> DeepBeliefNet:
    """The :class:`DeepBeliefNet` ``minigen train dbn`` trains: one visible unit per pixel, then the
    ``--hidden`` layers."""
    return DeepBeliefNet([math.prod(image_shape), *parse_sizes(cfg["hidden"])])


class GreedyTraining:
    r"""Greedy layer-wise training (Eq. EBM-12) as one Trainer ``step_fn``: the run's steps are
    split evenly between the RBMs, bottom first. When RBM k's turn comes it starts from RBM k-1
    transposed where the sizes allow (so adding it cannot start below the bound), and learns
    from samples of :math:`Q(h^k\mid x)` through the frozen layers below. The step counter and
    every layer's CD state are checkpointed, so a resumed run switches layers at the same step."""

    def __init__(self, dbn: DeepBeliefNet, total_steps: int, cfg: dict):
        self.dbn, self.step_count = dbn, 0
        self.steps_per_layer = max(1, total_steps // len(dbn.rbms))
        self.layers = [GreedyLayer(dbn, k, _contrastive_divergence(rbm, cfg, self.steps_per_layer))
                       for k, rbm in enumerate(dbn.rbms)]

    def __call__(self, batch) -> dict:
        k = min(self.step_count // self.steps_per_layer, len(self.layers) - 1)
        if k > 0 and self.step_count == k * self.steps_per_layer and self.dbn.can_tie(k):
            self.dbn.init_from_below(k)
        self.step_count += 1
        return {"layer": k, **self.layers[k].step(batch)}

    def state_dict(self) -> dict:
        """The step counter and every layer's CD state."""
        return {"step_count": self.step_count, "layers": {str(k): layer.cd.state_dict()
                                                          for k, layer in enumerate(self.layers)}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`, so that the run switches layers at the same step."""
        self.step_count = int(state["step_count"])
        for k, layer in enumerate(self.layers):
            layer.cd.load_state_dict(state["layers"][str(k)])


def dbn_trainer_step(model: DeepBeliefNet, cfg: dict, train_images: np.ndarray):
    """Greedy training as the Trainer's ``step_fn``; the bottom RBM's visible biases start at the data's
    log-odds, and the :class:`GreedyTraining` is checkpointed with the model."""
    model.rbms[0].b.data[...] = base_rate_biases(train_images.reshape(len(train_images), -1))
    greedy = GreedyTraining(model, cfg["total_steps"], cfg)
    return greedy, {"greedy": greedy}


def add_dbn_eval_arguments(parser) -> None:
    """The ``minigen eval`` options of a ``dbn`` run: ``--bound-samples`` for its variational bound."""
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
    """The ``minigen eval`` options of an ``rbm`` run (a ``dbn`` run's too): the AIS runs and schedule length
    for log Z."""
    parser.add_argument("--ais-chains", type=int, default=100, help="AIS runs for log Z (default: 100)")
    parser.add_argument("--ais-scale", type=float, default=1.0,
                        help="AIS schedule length: 1 = Salakhutdinov & Murray's 14,500 temperatures (default: 1)")


def evaluate_rbm(model: RBM, train, test, args, progress: bool = True) -> dict:
    """Test log-probability :math:`-F(v) - \\log Z` with log Z by AIS (and exactly when a layer is small);
    a log-density (nats, continuous) for Gaussian visibles."""
    train_images = train.images.reshape(len(train.images), -1)
    test_images = test.images.reshape(len(test.images), -1)
    base = None if isinstance(model, GaussianBernoulliRBM) else base_rate_biases(train_images)
    estimate = ais_log_partition(model, base, ais_schedule(args.ais_scale), n_chains=args.ais_chains)
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
    # An interval left open (too few AIS chains: mean - 3 s.e. <= 0) is null: JSON has no infinity.
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()}


# --------------------------------------------------------------------------- general Boltzmann machines

def add_bm_arguments(parser) -> None:
    """The options of ``minigen train bm``: hidden units, Gibbs chains and sweeps, and ``--exact-gradient``."""
    parser.add_argument("--hidden", type=int, default=4,
                        help=f"hidden units (default: 4; visible + hidden <= {MAX_EXACT_UNITS} "
                             f"allows the exact KL and --exact-gradient)")
    parser.add_argument("--chains", type=int, default=200,
                        help="Gibbs chains of each sampled phase (default: 200)")
    parser.add_argument("--sweeps", type=int, default=5,
                        help="Gibbs sweeps per phase and step; the free chains persist (default: 5)")
    parser.add_argument("--exact-gradient", action="store_true",
                        help="take both phases' statistics by enumerating every state instead of sampling")


class BoltzmannMachineModule(nn.Module):
    """A :class:`BoltzmannMachine` in the shape the training loop and run folders expect.

    The machine is NumPy and learns by its own update (Eq. EBM-10), so the module
    has no Tensor parameters: ``state_dict()`` holds its weights and biases as
    arrays, and ``sample(n)`` draws visible vectors by Gibbs sampling.
    """

    density = APPROXIMATE        # Eq. TAX-1 (see minigen.models.taxonomy)

    def __init__(self, machine: BoltzmannMachine):
        super().__init__()
        self.machine = machine

    def state_dict(self, *args, **kwargs) -> dict:
        """The machine's weights and biases as NumPy arrays (the arguments are ignored)."""
        return {"weights": self.machine.weights.copy(), "biases": self.machine.biases.copy()}

    def load_state_dict(self, state: dict, strict: bool = True):
        """Replace the machine by one with the stored weights and biases (its constructor checks their
        shape and symmetry); returns ``([], [])``: no missing and no unexpected keys."""
        m = self.machine       # a new machine, so its constructor checks shape and symmetry
        self.machine = BoltzmannMachine(m.n_visible, m.n_hidden, np.asarray(state["weights"]),
                                        np.asarray(state["biases"]), m.temperature)
        return [], []

    def log_prob(self, v) -> np.ndarray:
        """Exact :math:`\\log p(\\mathbf v)` per row of binary ``v`` (n, n_visible): the visible marginal of
        the Boltzmann distribution by enumerating every state (Eq. EBM-6; machines of at most
        ``MAX_EXACT_UNITS`` units, which is what this family trains)."""
        v = np.asarray(v)
        if v.ndim != 2 or v.shape[1] != self.machine.n_visible or not np.isin(v, (0, 1)).all():
            raise ValueError(f"BoltzmannMachineModule.log_prob: v must be binary of shape (n, "
                             f"{self.machine.n_visible}), got {v.dtype} {v.shape}")
        return self.machine.log_marginal_visible()[state_index(v)]

    def sample(self, n: int, burn_in: int = 200) -> np.ndarray:
        """``n`` visible vectors (n, n_visible), each the last state of its own chain of ``burn_in`` sweeps."""
        return self.machine.sample(n, burn_in=burn_in)[0, :, :self.machine.n_visible]


def build_bm(cfg: dict, image_shape) -> BoltzmannMachineModule:
    """Small random weights (symmetry breaking between hidden units), seeded by the run's seed."""
    for name, minimum in (("hidden", 0), ("chains", 1), ("sweeps", 1)):
        check_int(f"--{name}", cfg[name], minimum)
    n_visible = math.prod(image_shape)
    if cfg["exact_gradient"] and n_visible + cfg["hidden"] > MAX_EXACT_UNITS:
        raise ValueError(f"--exact-gradient: expected visible + hidden <= {MAX_EXACT_UNITS} units, "
                         f"got {n_visible} + {cfg['hidden']}; drop it to sample the phases")
    return BoltzmannMachineModule(BoltzmannMachine.random(n_visible, cfg["hidden"], weight_scale=0.1,
                                                          rng=np.random.default_rng([cfg["seed"], 7])))


class BoltzmannLearning:
    r"""One step of Eq. EBM-10 on a batch, as the Trainer's ``step_fn``:

    .. math:: w_{ij} \leftarrow w_{ij} + \frac{\eta}{T}\,(p^+_{ij} - p^-_{ij})

    with :math:`p^+` from the batch (visible units clamped) and :math:`p^-` from the
    free machine, both by Gibbs sampling (the free chains persist between steps and
    are checkpointed) or both exactly. Logs ``kl`` :math:`= G = D_{KL}(P^+\Vert P^-)`
    against the whole training set, exactly, while the net is small enough.
    """

    def __init__(self, model: BoltzmannMachineModule, cfg: dict, train_images: np.ndarray):
        self.model, self.lr, self.exact = model, float(cfg["lr"]), cfg["exact_gradient"]
        self.n_chains, self.n_sweeps = cfg["chains"], cfg["sweeps"]
        machine = model.machine
        self.target = machine.data_distribution(train_images.reshape(len(train_images), -1))
        self.chains = np.zeros((0, machine.n_units))   # none yet: the first step starts them at random

    def __call__(self, batch) -> dict:
        machine = self.model.machine       # looked up each step: resuming replaces the machine
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        data = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
        grad_weights, grad_biases, chains = machine.learning_step(
            data, self.lr, method="exact" if self.exact else "sampled", n_chains=self.n_chains,
            n_sweeps=self.n_sweeps, free_chains=self.chains if len(self.chains) else None)
        if chains is not None:
            self.chains = chains
        metrics = {"grad_norm": float(np.sqrt(np.sum(grad_weights ** 2) / 2 + np.sum(grad_biases ** 2)))}
        if machine.n_units <= MAX_EXACT_UNITS:
            metrics["kl"] = machine.kl_divergence(self.target)
        return metrics

    def state_dict(self) -> dict:
        """The persistent free chains."""
        return {"chains": self.chains.copy()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the free chains of a :meth:`state_dict`."""
        self.chains = np.asarray(state["chains"], dtype=np.float64).reshape(-1, self.model.machine.n_units)


def bm_trainer_step(model: BoltzmannMachineModule, cfg: dict, train_images: np.ndarray):
    """Boltzmann learning as the Trainer's ``step_fn``; its free chains are checkpointed with the model."""
    learning = BoltzmannLearning(model, cfg, train_images)
    return learning, {"learning": learning}


def evaluate_bm(model: BoltzmannMachineModule, train, test, args, progress: bool = True) -> dict:
    r"""Exact scores by enumeration: :math:`G = D_{KL}(P^+\Vert P^-)` of the test set (Eq. EBM-10), the
    mean :math:`\ln P^-(\mathbf v)` of the test vectors, and the model's mass on the patterns it saw."""
    machine = model.machine
    if machine.n_units > MAX_EXACT_UNITS:
        raise ValueError(f"eval of a bm run: expected visible + hidden <= {MAX_EXACT_UNITS} units for exact "
                         f"enumeration, got {machine.n_units}")
    test_vectors = test.images.reshape(len(test.images), -1)
    log_marginal = machine.log_marginal_visible()
    target = machine.data_distribution(test_vectors)
    seen = target > 0
    samples = model.sample(1000)
    return {"kl_exact": machine.kl_divergence(target),
            "test_log_likelihood_exact": float(log_marginal[state_index(test_vectors)].mean()),
            # the best any model can do is the data's own -entropy (ln 1/30 for bars and stripes)
            "test_neg_entropy": float(np.sum(target[seen] * np.log(target[seen]))),
            "model_mass_on_test_patterns": float(np.exp(log_marginal[seen]).sum()),
            "sample_fraction_in_test_patterns": float(seen[state_index(samples)].mean()),
            "log_z_exact": machine.log_partition(), "test_examples": len(test_vectors)}


def bm_figures(model: BoltzmannMachineModule, run_dir: str, images: np.ndarray) -> list:
    """64 samples, each the end of its own 200-sweep Gibbs chain."""
    from ...viz import save_image_grid

    samples = model.sample(64).reshape(-1, *images.shape[1:])
    return [("samples: 200 Gibbs sweeps per chain (Eq. EBM-9)",
             save_image_grid(samples, os.path.join(run_dir, "gibbs_samples.png"), nrow=8))]
