"""2-D toy densities with known log-densities, for GANs, flows and energy models.

Each density can ``sample(n, rng)`` (float32, shape (n, 2)) and evaluate
``log_prob(x)`` (float64, shape (n,)), so a model's samples can be scored
against the truth and a density model's fit can be plotted next to it.

* ``ring8`` and ``grid25`` are the mode-collapse benchmarks of PacGAN
  (Lin et al., NeurIPS 2018, after Metz et al. 2017): 8 Gaussians on a circle
  of radius 1 with std 0.01, and 25 Gaussians at {-4,-2,0,2,4}^2 with std 0.05.
  ``mode_centers`` and ``mode_std`` support the usual scores: modes captured,
  and the share of "high-quality" samples within 3 std of some center.
* ``moons`` (two interleaving half circles, as in scikit-learn's make_moons)
  and ``swissroll`` (FFJORD's 2-D swiss roll: make_swiss_roll's (x, z) / 5)
  are a curve blurred by Gaussian noise. Their density is the integral over the
  curve parameter t of N(x; curve(t), noise^2 I); we evaluate it with
  composite 8-point Gauss-Legendre quadrature on panels at most half a noise
  std long along the curve: inside ``bounds`` log_prob is then accurate to
  ~1e-9 (a test checks this against 4x as many panels); far out in the tails
  (log p < -1000) the error grows, as the integrand becomes very peaked.
  Here t is drawn uniformly (make_moons spaces it evenly), so samples and
  log_prob describe exactly the same density.
* ``checkerboard``: uniform on the 8 black squares (side 2) of a 4x4 board
  covering [-4, 4]^2, as in FFJORD; log-density log(1/32) inside, -inf outside.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Sequence, Tuple, Type

import numpy as np

from ..checks import check_int
from ..numerics import logsumexp
from .loader import DataError

Bounds = Tuple[Tuple[float, float], Tuple[float, float]]


def _as_points(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 2:
        raise DataError(f"log_prob: x must have shape (n, 2), got {x.shape}")
    return x


class ToyDensity:
    """A 2-D density: ``sample(n, rng)``, ``log_prob(x)`` and ``bounds`` for plotting."""

    name = ""
    description = ""

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` points (float32, shape (n, 2)) drawn with ``rng``; ``n`` must be an integer >= 0 (``DataError``)."""
        n = check_int(f"{self.name}.sample: n", n, 0, DataError)
        return self._sample(n, rng).astype(np.float32)

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """The log-density (float64, shape (n,)) at the points ``x`` (n, 2)."""
        raise NotImplementedError

    @property
    def bounds(self) -> Bounds:
        """A box ((xmin, xmax), (ymin, ymax)) holding all but a negligible part of the mass."""
        raise NotImplementedError


class GaussianMixture2D(ToyDensity):
    """Equal-weight mixture of isotropic Gaussians N(center_k, std^2 I)."""

    def __init__(self, centers: np.ndarray, std: float) -> None:
        if std <= 0:
            raise DataError(f"{type(self).__name__}: std must be > 0, got {std}")
        self.mode_centers = np.asarray(centers, dtype=np.float64)
        self.mode_std = float(std)

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        k = rng.integers(len(self.mode_centers), size=n)
        return self.mode_centers[k] + self.mode_std * rng.standard_normal((n, 2))

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """The exact mixture log-density (float64, shape (n,)), by log-sum-exp over the modes."""
        x, s2 = _as_points(x), self.mode_std ** 2
        d2 = ((x[:, None, :] - self.mode_centers[None]) ** 2).sum(-1)  # (n, K)
        log_n = -d2 / (2 * s2) - math.log(2 * math.pi * s2)
        return logsumexp(log_n, axis=1) - math.log(len(self.mode_centers))

    @property
    def bounds(self) -> Bounds:
        """The box around all centres, widened by 6 std."""
        lo = self.mode_centers.min(0) - 6 * self.mode_std
        hi = self.mode_centers.max(0) + 6 * self.mode_std
        return (lo[0], hi[0]), (lo[1], hi[1])


class Ring8(GaussianMixture2D):
    """``modes`` Gaussians evenly spaced on a circle of ``radius`` (default 8, radius 1, std 0.01;
    PacGAN's 2D-ring)."""

    name, description = "ring8", "8 Gaussians on a circle (radius 1, std 0.01; PacGAN 2D-ring)"

    def __init__(self, radius: float = 1.0, std: float = 0.01, modes: int = 8) -> None:
        angle = 2 * np.pi * np.arange(modes) / modes
        super().__init__(radius * np.stack([np.cos(angle), np.sin(angle)], 1), std)


class Grid25(GaussianMixture2D):
    """``side`` x ``side`` Gaussians on a grid of step ``spacing`` centred at 0 (default 5x5 on {-4..4}^2,
    std 0.05; PacGAN's 2D-grid)."""

    name, description = "grid25", "25 Gaussians on a 5x5 grid {-4..4}^2 (std 0.05; PacGAN 2D-grid)"

    def __init__(self, spacing: float = 2.0, std: float = 0.05, side: int = 5) -> None:
        ticks = spacing * (np.arange(side) - (side - 1) / 2)
        gx, gy = np.meshgrid(ticks, ticks, indexing="ij")
        super().__init__(np.stack([gx.ravel(), gy.ravel()], 1), std)


# A piece of curve: (weight, curve(t) -> (m, 2), t0, t1, max speed |curve'(t)| on [t0, t1]).
Piece = Tuple[float, Callable[[np.ndarray], np.ndarray], float, float, float]


class NoisyCurve(ToyDensity):
    """x = curve(t) + noise * eps, t uniform on its interval, eps ~ N(0, I)."""

    def __init__(self, pieces: Sequence[Piece], noise: float) -> None:
        if noise <= 0:
            raise DataError(f"{type(self).__name__}: noise must be > 0, got {noise}")
        self.pieces, self.noise = list(pieces), float(noise)
        self.quadrature_scale = 1.0  # multiplies the number of quadrature panels

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        weights = np.array([p[0] for p in self.pieces])
        which = rng.choice(len(self.pieces), size=n, p=weights / weights.sum())
        u = rng.random(n)
        out = self.noise * rng.standard_normal((n, 2))
        for i, (_, curve, t0, t1, _) in enumerate(self.pieces):
            sel = which == i
            out[sel] += curve(t0 + (t1 - t0) * u[sel])
        return out

    def _nodes(self) -> Tuple[np.ndarray, np.ndarray]:
        """Points on the curves (m, 2) and log of their mixture weights (m,)."""
        total = sum(p[0] for p in self.pieces)
        points, logw = [], []
        nodes, w = np.polynomial.legendre.leggauss(8)  # on [-1, 1], weights sum to 2
        for weight, curve, t0, t1, speed in self.pieces:
            # composite rule: panels at most half a noise std long along the curve
            panels = math.ceil(2 * self.quadrature_scale * (t1 - t0) * speed / self.noise)
            edges = np.linspace(t0, t1, panels + 1)
            half = (edges[1] - edges[0]) / 2
            t = ((edges[:-1] + edges[1:]) / 2)[:, None] + half * nodes[None]
            points.append(curve(t.ravel()))
            logw.append(np.log(np.tile(w, panels) * half / (t1 - t0) * weight / total))
        return np.concatenate(points), np.concatenate(logw)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """The log-density (float64, shape (n,)) by Gauss-Legendre quadrature over the curve parameter
        (see the module docstring), in chunks of points that bound the memory used."""
        x, s2 = _as_points(x), self.noise ** 2
        centers, logw = self._nodes()
        out = np.empty(len(x))
        step = max(1, 2 ** 21 // len(centers))  # bound the (points, nodes, 2) buffer to ~32 MB
        for i in range(0, len(x), step):
            d2 = ((x[i:i + step, None, :] - centers[None]) ** 2).sum(-1)
            out[i:i + step] = logsumexp(logw - d2 / (2 * s2), axis=1)
        return out - math.log(2 * math.pi * s2)

    @property
    def bounds(self) -> Bounds:
        """The box around the curves' quadrature nodes, widened by 6 noise std."""
        pts = self._nodes()[0]
        lo, hi = pts.min(0) - 6 * self.noise, pts.max(0) + 6 * self.noise
        return (lo[0], hi[0]), (lo[1], hi[1])


class Moons(NoisyCurve):
    """Two interleaving half circles (scikit-learn's make_moons, t drawn uniformly) plus Gaussian
    noise of std ``noise``."""

    name, description = "moons", "two interleaving half circles with Gaussian noise 0.1"

    def __init__(self, noise: float = 0.1) -> None:
        upper = lambda t: np.stack([np.cos(t), np.sin(t)], 1)  # noqa: E731
        lower = lambda t: np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)  # noqa: E731
        super().__init__([(0.5, upper, 0.0, np.pi, 1.0), (0.5, lower, 0.0, np.pi, 1.0)], noise)


class Swissroll(NoisyCurve):
    """FFJORD's 2-D swiss roll ``scale`` * t (cos t, sin t), t uniform on [1.5pi, 4.5pi], plus Gaussian
    noise of std ``noise``."""

    name = "swissroll"
    description = "2-D swiss roll t(cos t, sin t)/5, t in [1.5pi, 4.5pi], noise 0.2"

    def __init__(self, noise: float = 0.2, scale: float = 0.2) -> None:
        t0, t1 = 1.5 * np.pi, 4.5 * np.pi
        roll = lambda t: scale * np.stack([t * np.cos(t), t * np.sin(t)], 1)  # noqa: E731
        super().__init__([(1.0, roll, t0, t1, scale * math.hypot(1.0, t1))], noise)


class Checkerboard(ToyDensity):
    """Uniform on the 8 black squares (side 2) of a 4x4 board covering [-4, 4]^2, as in FFJORD."""

    name, description = "checkerboard", "uniform on the 8 black squares of a 4x4 board on [-4, 4]^2"

    def __init__(self) -> None:
        # lower-left corners of the squares (i, j) with i + j even, side 2
        self.corners = np.array([(-4 + 2 * i, -4 + 2 * j) for i in range(4) for j in range(4)
                                 if (i + j) % 2 == 0], dtype=np.float64)

    def _sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.corners[rng.integers(len(self.corners), size=n)] + 2 * rng.random((n, 2))

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        """log(1/32) on the black squares (edges included), -inf elsewhere; float64, shape (n,)."""
        x = _as_points(x)
        rel = x[:, None, :] - self.corners[None]  # closed squares: edges count as inside
        inside = ((rel >= 0) & (rel <= 2)).all(-1).any(-1)
        return np.where(inside, -math.log(4.0 * len(self.corners)), -np.inf)

    @property
    def bounds(self) -> Bounds:
        """The board itself, ((-4, 4), (-4, 4))."""
        return (-4.0, 4.0), (-4.0, 4.0)


TOY_DATASETS: Dict[str, Type[ToyDensity]] = {
    cls.name: cls for cls in (Ring8, Grid25, Moons, Swissroll, Checkerboard)}


def get_toy(name: str) -> ToyDensity:
    """The toy density ``name`` with its default parameters."""
    if name not in TOY_DATASETS:
        raise DataError(f"unknown toy dataset {name!r}; expected one of {sorted(TOY_DATASETS)}")
    return TOY_DATASETS[name]()


def load_toy(name: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` samples (float32, shape (n, 2)) of the toy density ``name``, seeded."""
    return get_toy(name).sample(n, np.random.default_rng(seed))


TOY_SPLITS = {"train": (50000, 0), "test": (10000, 1)}   # split -> (points, seed): disjoint draws


def toy_dataset(name: str, split: str = "train"):
    """A toy density's fixed sample as a :class:`~minigen.data.Dataset` of points (N, 2), so that
    ``minigen train`` can fit density models to it: 50,000 training and 10,000 test points."""
    from .images import Dataset
    if split not in TOY_SPLITS:
        raise DataError(f"{name}: unknown split {split!r}; expected one of {sorted(TOY_SPLITS)}")
    n, seed = TOY_SPLITS[split]
    return Dataset(name, load_toy(name, n, seed=seed), None, None)

