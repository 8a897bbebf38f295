r"""Autoregressive models — the lecture's first family: exact likelihoods by the chain rule, Eq. AR-1, AR-4, AR-6.

Order the pixels (raster order: row by row, left to right, and channel by
channel inside a pixel) and factor the joint exactly (Eq. AR-1)

.. math:: p(\mathbf x) = \prod_{i=1}^{n} p_\theta(x_i \mid x_1, \dots, x_{i-1}).

Every model of the family is a network that reads a whole image and returns,
at every pixel i, the parameters of :math:`p_\theta(x_i\mid x_{<i})` — computed
only from the pixels before i. Training evaluates all n conditionals in one
pass ("teacher forcing"); sampling must go one pixel at a time (Eq. AR-4).

What lives here:

* the three **pixel likelihoods** a conditional can be: Bernoulli (binary
  images), a 256-way softmax (grey levels), and PixelCNN++'s discretized
  logistic mixture (Eq. AR-6);
* :class:`AutoregressiveModel` — log p(x), the training loss and the
  sequential sampler every model shares, with an incremental variant for
  networks that can compute one row from a window of rows above it;
* the two fully visible belief networks of the slide: :class:`FVSBN`
  (logistic regressions on the previous pixels) and :class:`NADE` (one hidden
  layer with weights shared across the conditionals, O(HD) per image).

The convolutional and recurrent members (PixelCNN, Gated PixelCNN, PixelRNN)
are in :mod:`minigen.models.pixelcnn` and :mod:`minigen.models.pixelrnn`.
"""
from __future__ import annotations

import math

import numpy as np

from .. import autograd, backend, nn, ops
from ..autograd import Function, Tensor, enable_grad, is_grad_enabled, no_grad
from ..checks import check_int
from ..distributions import sum_except_batch
from .taxonomy import TRACTABLE

__all__ = ["BernoulliPixels", "CategoricalPixels", "DiscretizedLogisticMixture", "pixel_likelihood",
           "AutoregressiveModel", "FVSBN", "NADE", "LEVELS"]

LEVELS = 256   # grey levels of an 8-bit image


# --------------------------------------------------------------------------- pixel likelihoods
#
# A network's output at one pixel and channel is P numbers; a likelihood turns
# them into log p(x_i | x_<i) (for training) and into a sample (for generation).
# Parameters are laid out (B, C, P, H, W); images are (B, C, H, W) in [0, 1].
# Sampling is by inverse CDF from uniforms drawn up front, so two samplers that
# see the same uniforms and the same parameters draw the same image.

def _levels(x: Tensor) -> Tensor:
    """Grey values in [0, 1] as integer levels k = round(255 x)."""
    return Tensor._wrap(x.xp.rint(x.data * (LEVELS - 1)).astype(np.int64))


class BernoulliPixels:
    """Binary pixels: one logit ℓ per pixel, :math:`\\log p(x) = x\\ell - \\mathrm{softplus}(\\ell)`."""

    params = 1

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """``log p(x)`` of each pixel of ``x`` (B, C, H, W), from ``params`` (B, C, 1, H, W)."""
        logits = params[:, :, 0]
        return x * logits - ops.softplus(logits)

    def sample(self, params: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One value per row of ``params`` (B, 1), from uniforms ``u`` (B, 2)."""
        return (u[:, 0] < 1.0 / (1.0 + np.exp(-params[:, 0]))).astype(params.dtype)

    def mean(self, params: np.ndarray) -> np.ndarray:
        r"""The probability of a 1, :math:`\sigma(\ell)`, per row of ``params`` (B, 1)."""
        return 1.0 / (1.0 + np.exp(-params[:, 0]))


class CategoricalPixels:
    """Grey levels as 256 classes: a softmax over k ∈ {0…255}, pixel value k/255."""

    params = LEVELS

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """``log p(x)`` of each pixel of ``x`` (B, C, H, W): the log-softmax of ``params``
        (B, C, 256, H, W) at its level round(255 x)."""
        return ops.log_softmax(params, dim=2).gather(2, _levels(x)[:, :, None])[:, :, 0]

    def sample(self, params: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One grey value k/255 per row of ``params`` (B, 256), by the softmax's inverse CDF at ``u[:, 0]``."""
        p = np.exp(params - params.max(axis=1, keepdims=True))
        cdf = np.cumsum(p, axis=1)
        k = (cdf < u[:, :1] * cdf[:, -1:]).sum(axis=1)          # inverse CDF
        return (np.minimum(k, LEVELS - 1) / (LEVELS - 1)).astype(params.dtype)

    def mean(self, params: np.ndarray) -> np.ndarray:
        """The expected grey value per row of ``params`` (B, 256): k/255 averaged under the softmax."""
        p = np.exp(params - params.max(axis=1, keepdims=True))
        return (p / p.sum(axis=1, keepdims=True)) @ (np.arange(LEVELS) / (LEVELS - 1))


class DiscretizedLogisticMixture:
    r"""PixelCNN++'s likelihood (Eq. AR-6): a mixture of K logistics, integrated over each grey level's bin.

    Level k ∈ {0…255} sits at :math:`x_k = k/255` with half-width :math:`\delta = 1/510`;
    with :math:`\sigma` the logistic CDF,

    .. math:: P(k) = \sum_j \pi_j\Big[\sigma\big(\tfrac{x_k+\delta-\mu_j}{s_j}\big)
                                      - \sigma\big(\tfrac{x_k-\delta-\mu_j}{s_j}\big)\Big],

    except that the edge bins are open: level 0 takes all mass below
    :math:`x_0+\delta` and level 255 all mass above :math:`x_{255}-\delta`, so
    the 256 probabilities telescope to exactly 1. The middle bins use
    :math:`\sigma(a)-\sigma(b) = \sigma(a)\,\sigma(-b)\,(1-e^{-(a-b)})`, which
    stays accurate in log space however far a bin lies in a tail.
    Parameters per pixel: K mixture logits, K means, K log-scales.
    """

    MIN_LOG_SCALE = -7.0   # as PixelCNN++: s ≥ e^-7, far below one bin width

    def __init__(self, components: int = 5):
        if components < 1:
            raise ValueError(f"DiscretizedLogisticMixture: components must be >= 1, got {components}")
        self.components = int(components)
        self.params = 3 * self.components

    def _split(self, params):
        k = self.components
        return params[:, :, :k], params[:, :, k:2 * k], params[:, :, 2 * k:].clamp(min=self.MIN_LOG_SCALE)

    def log_prob(self, params: Tensor, x: Tensor) -> Tensor:
        """``log P(k)`` above of each pixel of ``x`` (B, C, H, W) at its level k = round(255 x), from
        ``params`` (B, C, 3K, H, W); log-scales are clamped below at ``MIN_LOG_SCALE``."""
        logit_pi, mu, log_s = self._split(params)
        inv_s = (-log_s).exp()
        half = 0.5 / (LEVELS - 1)
        x = x[:, :, None]
        upper = (x + half - mu) * inv_s                      # a: standardized upper edge of the bin
        lower = (x - half - mu) * inv_s                      # b: standardized lower edge
        log_cdf_upper = -ops.softplus(-upper)                # log σ(a)
        log_sf_lower = -ops.softplus(lower)                  # log (1 - σ(b)) = log σ(-b)
        width = 2 * half * inv_s                             # a - b > 0
        middle = log_cdf_upper + log_sf_lower + (1.0 - (-width).exp()).log()
        level = _levels(x).data
        log_p = ops.where(level == 0, log_cdf_upper,                    # level 0: open below
                          ops.where(level == LEVELS - 1, log_sf_lower, middle))   # 255: open above
        return (ops.log_softmax(logit_pi, dim=2) + log_p).logsumexp(dim=2)

    def sample(self, params: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One grey value per row of ``params`` (B, 3K): a component picked by ``u[:, 0]``, a logistic draw
        from it by ``u[:, 1]``, rounded to the nearest of the 256 levels."""
        k = self.components
        logit_pi, mu = params[:, :k], params[:, k:2 * k]
        log_s = np.maximum(params[:, 2 * k:], self.MIN_LOG_SCALE)
        pi = np.exp(logit_pi - logit_pi.max(axis=1, keepdims=True))
        cdf = np.cumsum(pi, axis=1)
        j = np.minimum((cdf < u[:, :1] * cdf[:, -1:]).sum(axis=1), k - 1)   # pick a component
        rows = np.arange(len(params))
        v = np.clip(u[:, 1], 1e-7, 1 - 1e-7)
        value = mu[rows, j] + np.exp(log_s[rows, j]) * np.log(v / (1 - v))   # logistic inverse CDF
        level = np.clip(np.rint(value * (LEVELS - 1)), 0, LEVELS - 1)
        return (level / (LEVELS - 1)).astype(params.dtype)

    def mean(self, params: np.ndarray) -> np.ndarray:
        r"""The mixture's mean :math:`\sum_j \pi_j\mu_j` per row of ``params`` (B, 3K), clipped to [0, 1]."""
        k = self.components
        pi = np.exp(params[:, :k] - params[:, :k].max(axis=1, keepdims=True))
        return np.clip((pi / pi.sum(axis=1, keepdims=True) * params[:, k:2 * k]).sum(axis=1), 0, 1)


LIKELIHOODS = ("bernoulli", "categorical", "logistic-mixture")


def pixel_likelihood(name: str, components: int = 5):
    """The likelihood named ``bernoulli``, ``categorical`` (256-way softmax) or ``logistic-mixture``."""
    if name == "bernoulli":
        return BernoulliPixels()
    if name == "categorical":
        return CategoricalPixels()
    if name == "logistic-mixture":
        return DiscretizedLogisticMixture(components)
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {name!r}")


# --------------------------------------------------------------------------- the shared model

class AutoregressiveModel(nn.Module):
    """What every autoregressive model shares: exact log p(x), the loss, sequential sampling.

    A subclass sets ``image_shape`` (C, H, W) and ``likelihood`` and implements
    ``forward(x, labels=None)`` → parameters (B, C, P, H, W) whose entry at
    pixel i depends only on the pixels before i. A network that can compute
    one row of parameters from a few rows above it also sets ``reach`` (how
    many rows above a row can influence it) and ``forward_rows``; the sampler
    then recomputes only that window.
    """

    density = TRACTABLE        # Eq. TAX-1 (see minigen.models.taxonomy)

    image_shape: tuple
    likelihood: object
    num_classes: int = 0
    reach: int | None = None     # rows above row r that row r's parameters can depend on

    def _check_images(self, x) -> Tensor:
        if not isinstance(x, Tensor):
            weight = next(iter(self.parameters()))
            x = ops.tensor(np.asarray(x, dtype=weight.dtype), device=weight.device)
        if x.ndim == 3 and self.image_shape[0] == 1:
            x = x.unsqueeze(1)
        if tuple(x.shape[1:]) != tuple(self.image_shape):
            raise ValueError(f"{type(self).__name__}: expected images of shape (B, {', '.join(map(str, self.image_shape))}),"
                             f" got {tuple(x.shape)}")
        return x

    def _check_labels(self, labels, n):
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError(f"{type(self).__name__}: this model is unconditional (num_classes=0) "
                                 f"but labels were given")
            return None
        if labels is None:
            raise ValueError(f"{type(self).__name__}: a class-conditional model needs labels "
                             f"(integers in [0, {self.num_classes}))")
        labels = np.asarray(labels.numpy() if isinstance(labels, Tensor) else labels).astype(np.int64).reshape(-1)
        if labels.shape != (n,) or (n and (labels.min() < 0 or labels.max() >= self.num_classes)):
            span = f", range [{labels.min()}, {labels.max()}]" if labels.size else ""
            raise ValueError(f"{type(self).__name__}: labels must be {n} integers in [0, {self.num_classes}), "
                             f"got shape {labels.shape}{span}")
        return labels

    def log_prob(self, x, labels=None) -> Tensor:
        r"""Exact :math:`\log p(\mathbf x) = \sum_i \log p_\theta(x_i\mid x_{<i})` per image (Eq. AR-1), in nats."""
        x = self._check_images(x)
        params = self(x, self._check_labels(labels, x.shape[0]))
        return sum_except_batch(self.likelihood.log_prob(params, x))

    def loss(self, batch):
        """Mean NLL in nats over the batch, and the metrics the trainer logs (nll, bits/dim)."""
        if isinstance(batch, (tuple, list)):
            x, labels = batch[0], (batch[1] if self.num_classes else None)
        else:
            x, labels = batch, None
        nll = -self.log_prob(x, labels).mean()
        value = float(nll.item())
        return nll, {"loss": value, "nll": value, "bits_per_dim": value / (math.log(2) * math.prod(self.image_shape))}

    # ---- Eq. AR-4: sequential generation
    def _params_at_row(self, x: Tensor, r: int, labels, incremental: bool) -> np.ndarray:
        """Parameters (B, C, P, W) of row ``r`` — from a window of rows when the network allows it."""
        if incremental and self.reach is not None:
            top = max(0, r - self.reach)
            params, _ = self.forward_rows(x[:, :, top:r + 1], top, labels)
            return params[:, :, :, -1].numpy()
        return self(x, labels)[:, :, :, r].numpy()

    def sample(self, n: int, labels=None, incremental: bool = True, progress: bool = False) -> np.ndarray:
        """``n`` images drawn pixel by pixel, channel by channel (Eq. AR-4).

        Each step runs the network once on the partly generated images and
        fills in one pixel-channel; pixel i is never touched again. With
        ``incremental=True`` (and a network that sets ``reach``) each step only
        recomputes the rows that can influence the current row — same
        uniforms, same parameters up to rounding, same samples, several times
        faster. ``labels`` (n,) picks the class of a class-conditional model (default: 0, 1, 2, …).
        """
        n = check_int(f"{type(self).__name__}.sample: n", n, minimum=0)
        c, h, w = self.image_shape
        if labels is None and self.num_classes:
            labels = np.arange(n) % self.num_classes       # a class-conditional model cycles through its classes
        labels = self._check_labels(labels, n)
        dtype = next(iter(self.parameters())).dtype
        u = ops.rand(n, c, h, w, 2, dtype=dtype).numpy()       # every uniform, drawn up front
        x = np.zeros((n, c, h, w), dtype=dtype)
        steps = [(r, col, ch) for r in range(h) for col in range(w) for ch in range(c)]
        if progress:
            from tqdm.auto import tqdm
            steps = tqdm(steps, desc=f"sampling {n} images", unit="pixel", leave=False)
        was_training = self.training
        self.eval()
        with no_grad():
            for r, col, ch in steps:
                params = self._params_at_row(ops.tensor(x, device=self.device), r, labels, incremental)
                x[:, ch, r, col] = self.likelihood.sample(params[:, ch, :, col], u[:, ch, r, col])
        self.train(was_training)
        return x


def _check_binary_image_shape(name, image_shape):
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ValueError(f"{name}: image_shape must be (C, H, W), got {image_shape!r}")
    return shape


# --------------------------------------------------------------------------- FVSBN and NADE

class FVSBN(AutoregressiveModel):
    r"""Fully visible sigmoid belief network: each conditional is a logistic regression (Eq. AR-1).

    .. math:: p(x_i = 1 \mid x_{<i}) = \sigma\Big(b_i + \sum_{j<i} W_{ij} x_j\Big)

    W is kept strictly lower-triangular by a fixed mask, so all n conditionals
    are one masked matrix product: n(n-1)/2 + n parameters.
    """

    def __init__(self, image_shape=(1, 28, 28)):
        super().__init__()
        self.image_shape = _check_binary_image_shape("FVSBN", image_shape)
        self.likelihood = BernoulliPixels()
        d = math.prod(self.image_shape)
        self.weight = nn.Parameter(np.zeros((d, d), dtype=np.float32))
        self.bias = nn.Parameter(np.zeros(d, dtype=np.float32))
        self.register_buffer("mask", ops.tensor(np.tril(np.ones((d, d), dtype=np.float32), k=-1)),
                             persistent=False)

    def forward(self, x: Tensor, labels=None) -> Tensor:
        flat = 2 * x.flatten(1) - 1
        # BEGIN SOLUTION 2.3
        logits = ops.linear(flat, self.weight * self.mask, self.bias)
        # END SOLUTION
        return logits.reshape(x.shape[0], self.image_shape[0], 1, *self.image_shape[1:])


def nade_logits_by_running_sum(x: Tensor, W: Tensor, c: Tensor, V: Tensor, b: Tensor) -> Tensor:
    """NADE's logits written with engine ops, exactly as the equation reads (the specification of
    the fused kernels; also the path for gradients w.r.t. the pixels and for double backward)."""
    contrib = x.unsqueeze(2) * W                          # (B, D, H): W[:, j] x_j
    a = c + contrib.cumsum(1) - contrib                   # exclusive running sum: Σ_{j<i} W[:, j] x_j
    return (ops.sigmoid(a) * V).sum(dim=2) + b


class NADELogits(Function):
    """NADE's logits from the fused kernels (``nade_forward`` / ``nade_backward``: reference, Numba,
    CuPy), which walk the pixels with one running sum per image instead of storing the (B, D, H)
    pre-activations. The pixels are data: their gradient is not computed (NADE.forward sends a
    ``requires_grad`` input down the op path instead)."""

    @staticmethod
    def forward(ctx, x, W, c, V, b):
        return backend.get_kernel("nade_forward", backend.device_of(x))(x, W, c, V, b)

    @staticmethod
    def backward(ctx, g):
        x, W, c, V, b = ctx.inputs
        params = (W, c, V, b)
        if is_grad_enabled():   # create_graph=True: differentiate the op-by-op formula instead
            with enable_grad():
                logits = nade_logits_by_running_sum(x, W, c, V, b)
            wanted = [p for p in params if p.requires_grad]
            grads = iter(autograd.grad(logits, wanted, grad_outputs=g, create_graph=True))
            return (None,) + tuple(next(grads) if p.requires_grad else None for p in params)
        kernel = backend.get_kernel("nade_backward", x.device)
        dW, dc, dV, db = kernel(x.data, W.data, c.data, V.data, g.data)
        return (None,) + tuple(Tensor._wrap(d) if p.requires_grad else None
                               for p, d in zip(params, (dW, dc, dV, db)))


class NADE(AutoregressiveModel):
    r"""Neural autoregressive distribution estimator (Larochelle & Murray, 2011), Eq. AR-1.

    One hidden layer per conditional, with the weights shared between them:

    .. math:: \mathbf h_i = \sigma\big(\mathbf c + W_{:,<i}\,\mathbf x_{<i}\big), \qquad
              p(x_i=1\mid x_{<i}) = \sigma(b_i + V_{i,:}\,\mathbf h_i).

    Sharing W makes all n pre-activations one running sum,
    :math:`\mathbf a_{i+1} = \mathbf a_i + W_{:,i}\,x_i` — a cumulative sum over
    pixels, O(HD) per image instead of O(HD²). :func:`nade_logits_by_running_sum`
    writes it with engine ops; training runs the fused kernels of :class:`NADELogits`
    (the same sums, one pixel after another, without the (B, D, H) intermediate).
    """

    def __init__(self, image_shape=(1, 28, 28), hidden: int = 500):
        super().__init__()
        self.image_shape = _check_binary_image_shape("NADE", image_shape)
        self.likelihood = BernoulliPixels()
        d = math.prod(self.image_shape)
        self.hidden = int(hidden)
        bound = 1.0 / math.sqrt(d)
        self.W = nn.Parameter(np.zeros((d, hidden), dtype=np.float32))   # row i is W[:, i]ᵀ of the equation
        self.c = nn.Parameter(np.zeros(hidden, dtype=np.float32))
        self.V = nn.Parameter(np.zeros((d, hidden), dtype=np.float32))
        self.b = nn.Parameter(np.zeros(d, dtype=np.float32))
        nn.init.uniform_(self.W, -bound, bound)
        nn.init.uniform_(self.V, -bound, bound)

    def forward(self, x: Tensor, labels=None) -> Tensor:
        flat = x.flatten(1).to(dtype=self.W.dtype)            # (B, D): NADE reads the 0/1 values
        fused = NADELogits.apply if not flat.requires_grad else nade_logits_by_running_sum
        logits = fused(flat, self.W, self.c, self.V, self.b)
        return logits.reshape(x.shape[0], self.image_shape[0], 1, *self.image_shape[1:])


# --------------------------------------------------------------------------- command-line recipes
#
# `minigen train fvsbn|nade|pixelcnn|gated_pixelcnn|pixelrnn`: the options of each model, how
# to build it from a run's config, its evaluation (exact test NLL) and its figures.

def _likelihood_for(cfg: dict) -> str:
    """``auto``: Bernoulli for binary data, a 256-way softmax for grey levels."""
    if cfg.get("likelihood", "auto") != "auto":
        return cfg["likelihood"]
    binary = cfg["data"] in ("binarized-mnist", "bars-and-stripes") or cfg.get("binarize", "none") != "none"
    return "bernoulli" if binary else "categorical"


def add_pixel_network_arguments(parser, channels: int, depth: str, depth_default: int, depth_help: str) -> None:
    """Options every convolutional pixel model has: width, depth, kernels, head and likelihood."""
    parser.add_argument("--channels", type=int, default=channels, help=f"feature maps (default: {channels})")
    parser.add_argument(f"--{depth}", type=int, default=depth_default, help=f"{depth_help} (default: {depth_default})")
    parser.add_argument("--kernel", type=int, default=3, help="kernel size after the first layer (default: 3)")
    parser.add_argument("--first-kernel", type=int, default=7, help="kernel size of the first, mask-A layer "
                                                                     "(default: 7)")
    parser.add_argument("--head-channels", type=int, default=64, help="width of the 1x1 output head (default: 64)")
    add_likelihood_arguments(parser)


def add_likelihood_arguments(parser) -> None:
    """The ``--likelihood`` and ``--components`` options of the pixel models (``auto``: Bernoulli for
    binary data, a 256-way softmax for grey levels)."""
    parser.add_argument("--likelihood", choices=("auto",) + LIKELIHOODS, default="auto",
                        help="each pixel's conditional: auto = bernoulli for binary data, categorical "
                             "(256-way softmax) for grey levels; logistic-mixture = PixelCNN++ (Eq. AR-6)")
    parser.add_argument("--components", type=int, default=5, help="logistic mixture components (default: 5)")


def add_fvsbn_arguments(parser) -> None:
    """FVSBN has no options: one logistic regression per pixel."""


def build_fvsbn(cfg: dict, image_shape) -> FVSBN:
    """The :class:`FVSBN` ``minigen train fvsbn`` trains, for the data's image shape."""
    return FVSBN(image_shape)


def add_nade_arguments(parser) -> None:
    """The options of ``minigen train nade``: ``--hidden``, the hidden units all conditionals share."""
    parser.add_argument("--hidden", type=int, default=500, help="hidden units shared by the conditionals "
                                                                 "(default: 500, as Larochelle & Murray)")


def build_nade(cfg: dict, image_shape) -> NADE:
    """The :class:`NADE` ``minigen train nade`` trains, from a run's config and the data's image shape."""
    return NADE(image_shape, cfg["hidden"])


def add_pixelcnn_arguments(parser) -> None:
    """The options of ``minigen train pixelcnn``: the pixel-network options, with ``--blocks`` of mask-B
    convolutions."""
    add_pixel_network_arguments(parser, 64, "blocks", 7, "residual blocks of mask-B convolutions")


def build_pixelcnn(cfg: dict, image_shape):
    """The :class:`~.pixelcnn.PixelCNN` ``minigen train pixelcnn`` trains, from a run's config and the data's
    image shape."""
    from .pixelcnn import PixelCNN
    return PixelCNN(image_shape, cfg["channels"], cfg["blocks"], cfg["kernel"], cfg["first_kernel"],
                    cfg["head_channels"], _likelihood_for(cfg), cfg["components"])


def add_gated_pixelcnn_arguments(parser) -> None:
    """The options of ``minigen train gated_pixelcnn``: the pixel-network options, with ``--layers`` of gated
    layers, and ``--conditional``."""
    add_pixel_network_arguments(parser, 32, "layers", 8, "gated layers")
    parser.add_argument("--conditional", action="store_true",
                        help="class-conditional: a label embedding biases every gate (needs labelled data)")


def build_gated_pixelcnn(cfg: dict, image_shape):
    """The :class:`~.pixelcnn.GatedPixelCNN` ``minigen train gated_pixelcnn`` trains, from a run's config and the
    data's image shape; ``--conditional`` conditions it on 10 classes."""
    from .pixelcnn import GatedPixelCNN
    return GatedPixelCNN(image_shape, cfg["channels"], cfg["layers"], cfg["kernel"], cfg["first_kernel"],
                         cfg["head_channels"], _likelihood_for(cfg), cfg["components"],
                         num_classes=10 if cfg["conditional"] else 0)


def add_pixelrnn_arguments(parser) -> None:
    """The options of ``minigen train pixelrnn``: the pixel-network options, with ``--layers`` of Row LSTM layers."""
    add_pixel_network_arguments(parser, 32, "layers", 2, "Row LSTM layers")


def build_pixelrnn(cfg: dict, image_shape):
    """The :class:`~.pixelrnn.PixelRNN` ``minigen train pixelrnn`` trains, from a run's config and the data's
    image shape."""
    from .pixelrnn import PixelRNN
    return PixelRNN(image_shape, cfg["channels"], cfg["layers"], cfg["kernel"], cfg["first_kernel"],
                    cfg["head_channels"], _likelihood_for(cfg), cfg["components"])


def _batched_log_prob(model, images, labels=None, size=500, progress=False) -> np.ndarray:
    starts = range(0, len(images), size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="exact log p(x)", unit="batch", leave=False)
    with no_grad():
        return np.concatenate([model.log_prob(images[i:i + size], None if labels is None else labels[i:i + size])
                               .numpy() for i in starts])


def evaluate_autoregressive(model, train, test, args, progress: bool = True) -> dict:
    """Exact test NLL (Eq. AR-1) in nats per image, its standard error, and bits/dim. A class-conditional
    model is scored given the true labels (-log p(x|y)) and with the label summed out (-log p(x))."""
    from ..metrics import bits_per_dim, summarize
    if model.num_classes and test.labels is None:
        raise ValueError(f"a class-conditional model needs test labels; dataset {test.name!r} has none")
    labels = test.labels if model.num_classes else None
    nll = summarize(-_batched_log_prob(model, test.images, labels, progress=progress))
    out = {"test_nll": nll["mean"], "test_nll_sem": nll["sem"], "test_examples": nll["n"],
           "bits_per_dim": bits_per_dim(nll["mean"], math.prod(test.images.shape[1:]))}
    if model.num_classes:
        out["test_nll_label_summed_out"] = float(-marginal_log_prob(model, test.images).mean())
    return out


def marginal_log_prob(model, images: np.ndarray) -> np.ndarray:
    r"""log p(x) of a class-conditional model with the label summed out under a uniform prior:
    :math:`\log \frac1K\sum_y p(x\mid y)`."""
    per_class = np.stack([_batched_log_prob(model, images, np.full(len(images), y)) for y in range(model.num_classes)])
    top = per_class.max(axis=0)
    return top + np.log(np.exp(per_class - top).mean(axis=0))


def periodic_nll(model, test_images: np.ndarray, cfg: dict):
    """A curve point during training: the exact NLL of a fixed test subset. A class-conditional model is scored with its label summed out."""
    def evaluate():
        model.eval()
        log_p = marginal_log_prob(model, test_images) if model.num_classes else _batched_log_prob(model, test_images)
        model.train()
        return {"test/nll": float(-log_p.mean())}
    return evaluate


def autoregressive_figures(model, run_dir: str, images: np.ndarray, progress: bool = True) -> list:
    """Samples drawn pixel by pixel (Eq. AR-4), with a progress bar unless ``progress`` is False; a
    class-conditional model draws one row per class."""
    import os

    from ..viz import save_image_grid
    n = 64 if not model.num_classes else 8 * model.num_classes
    labels = None if not model.num_classes else np.repeat(np.arange(model.num_classes), 8)
    samples = model.sample(n, labels=labels, progress=progress)
    caption = ("samples, one pixel at a time (Eq. AR-4)" if not model.num_classes else
               "class-conditional samples, one row per class (Eq. AR-4, AR-5)")
    return [(caption, save_image_grid(samples, os.path.join(run_dir, "ar_samples.png"), nrow=8))]
