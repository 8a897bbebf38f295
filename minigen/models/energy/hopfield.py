r"""Hopfield networks — the lecture's associative memory, Eq. EBM-1…EBM-5.

N binary units :math:`s_i\in\{-1,+1\}` are joined by symmetric weights
:math:`w_{ij}=w_{ji}` with no self-connections (:math:`w_{ii}=0`) and have
thresholds :math:`\theta_i`. A unit looks at its *field* and takes its sign
(Eq. EBM-1)

.. math:: s_i \leftarrow \mathrm{sgn}\Big(\sum_j w_{ij}s_j - \theta_i\Big).

**Ties.** A field of exactly zero keeps the current state. (The slide writes
:math:`\ge`, i.e. a tie goes to +1; the two rules differ only on ties.)
Keeping the state is what makes Eq. EBM-3's promise exact: with one stored
pattern and N odd, a state that agrees with it on (N+1)/2 bits gives every
agreeing unit a zero field, and the :math:`\ge` rule would flip the agreeing
units with :math:`\mathcal P_i=-1` away from the pattern. It also treats s and
−s alike, and never moves a unit without lowering the energy.

The weights come from Hebb's rule (Eq. EBM-3 for one pattern, EBM-4 for K)

.. math:: w_{ij} = \frac1N\sum_{k=1}^K \mathcal P^k_i\mathcal P^k_j \quad (i\ne j),

and the network descends the energy (Eq. EBM-5)

.. math:: E = -\sum_i\sum_{j<i} w_{ij}s_is_j + \sum_i\theta_i s_i :

flipping unit i changes E by :math:`-\Delta s_i(\sum_j w_{ij}s_j-\theta_i)\le 0`,
so asynchronous dynamics stop at a local minimum — a fixed point.

What lives here, in lecture order:

* :class:`HopfieldNetwork` — fields, energy, the three update schemes of
  Eq. EBM-2 (``"synchronous"``, ``"async1"``, ``"async2"``), ``run`` to a
  fixed point (reporting convergence and synchronous 2-cycles), ``recall``;
* :func:`basin_of_attraction` — recall rate after flipping k bits of a pattern;
* :func:`capacity_curve`, :func:`critical_load`, :func:`crossing_load`, :func:`capacity_experiment` —
  the storage capacity :math:`\alpha_c\approx0.138` of Amit, Gutfreund &
  Sompolinsky (1985), measured; :func:`retrieval_overlap_theory` gives their
  zero-temperature prediction to compare with;
* :func:`plot_capacity`, :func:`plot_recall` — the figures.

``python -m minigen.models.energy.hopfield`` runs the capacity experiment.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ... import backend
from ...checks import check_int
from ...kernels.reference import hopfield_tie_tolerance
from ...random import as_generator

__all__ = ["SCHEMES", "LETTERS", "HopfieldNetwork", "RunResult", "hebbian_weights", "letter_patterns",
           "flip_bits", "basin_of_attraction", "CapacityCurve", "capacity_curve", "critical_load",
           "extrapolate_critical_load", "crossing_load", "CapacityExperiment",
           "capacity_experiment", "retrieval_overlap_theory",
           "THEORETICAL_CRITICAL_LOAD", "plot_capacity", "plot_recall"]

#: The update schemes of Eq. EBM-2: all units at once; one random unit at a
#: time (asynchronous I); each unit with probability ``rate`` per step (asynchronous II).
SCHEMES = ("synchronous", "async1", "async2")

#: α_c of Amit, Gutfreund & Sompolinsky (1985); :func:`retrieval_overlap_theory` recomputes it.
THEORETICAL_CRITICAL_LOAD = 0.138

#: The asynchronous kernel gets fresh random units for this many sweeps per call.
_SWEEPS_PER_CALL = 8

#: 8x8 letters with thick strokes: their overlaps are at most 0.31, so all five are fixed points.
LETTERS = {
    "H": ["#......#", "#......#", "#......#", "########", "########", "#......#", "#......#", "#......#"],
    "T": ["########", "########", "...##...", "...##...", "...##...", "...##...", "...##...", "...##..."],
    "O": [".######.", "##....##", "#......#", "#......#", "#......#", "#......#", "##....##", ".######."],
    "X": ["##....##", ".##..##.", "..####..", "...##...", "...##...", "..####..", ".##..##.", "##....##"],
    "L": ["##......", "##......", "##......", "##......", "##......", "##......", "########", "########"],
}


def letter_patterns(letters: str = "HTOXL") -> np.ndarray:
    """The given :data:`LETTERS` as ±1 patterns, shape (len(letters), 64); '#' is +1."""
    unknown = [c for c in letters if c not in LETTERS]
    if unknown or not letters:
        raise ValueError(f"letters: expected a non-empty string of {''.join(LETTERS)}, got {letters!r}")
    return np.array([[1 if c == "#" else -1 for row in LETTERS[ch] for c in row] for ch in letters])


# --------------------------------------------------------------------------- validation

def _check_spins(name, values, n_units=None):
    """``values`` as a float64 (B, N) array of ±1, plus whether the input was one state (N,)."""
    arr = np.asarray(values)
    if arr.ndim not in (1, 2) or arr.shape[-1] == 0 or (n_units is not None and arr.shape[-1] != n_units):
        want = "N ≥ 1" if n_units is None else f"N = {n_units}"
        raise ValueError(f"{name}: expected shape (N,) or (B, N) with {want}, got shape {arr.shape}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: expected numbers in {{-1, +1}}, got dtype {arr.dtype}")
    bad = arr[(arr != 1) & (arr != -1)]
    if bad.size:
        raise ValueError(f"{name}: expected values in {{-1, +1}}, got {np.unique(bad)[:5].tolist()}")
    single = arr.ndim == 1
    return np.atleast_2d(arr).astype(np.float64), single


def _check_weights(weights):
    w = np.array(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] == 0:
        raise ValueError(f"weights: expected a square (N, N) matrix, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights: expected finite values, got NaN or inf")
    asymmetry = np.abs(w - w.T).max()
    if asymmetry > 1e-12 * max(1.0, np.abs(w).max()):
        raise ValueError(f"weights: expected a symmetric matrix (w_ij = w_ji), got max |w_ij - w_ji| = {asymmetry:.3g}")
    diagonal = np.abs(np.diag(w)).max()
    if diagonal != 0:
        raise ValueError(f"weights: expected a zero diagonal (w_ii = 0), got max |w_ii| = {diagonal:.3g}")
    return (w + w.T) / 2                                 # exactly symmetric, as the kernels assume


def _check_thresholds(thresholds, n_units):
    if thresholds is None:
        return np.zeros(n_units)
    theta = np.array(thresholds, dtype=np.float64)
    if theta.ndim == 0:
        theta = np.full(n_units, float(theta))
    if theta.shape != (n_units,):
        raise ValueError(f"thresholds: expected a scalar or shape ({n_units},), got shape {theta.shape}")
    if not np.all(np.isfinite(theta)):
        raise ValueError("thresholds: expected finite values, got NaN or inf")
    return theta


def _check_scheme(scheme):
    if scheme not in SCHEMES:
        raise ValueError(f"scheme: expected one of {SCHEMES}, got {scheme!r}")
    return scheme


def _check_rate(rate):
    if not (isinstance(rate, (int, float, np.floating)) and 0 < rate <= 1):
        raise ValueError(f"rate: expected a probability in (0, 1], got {rate!r}")
    return float(rate)


# --------------------------------------------------------------------------- storage

def hebbian_weights(patterns, zero_diagonal: bool = True) -> np.ndarray:
    r"""Eq. EBM-3 / EBM-4, Hebb's rule: :math:`w_{ij} = \frac1N\sum_k \mathcal P^k_i\mathcal P^k_j`.

    ``patterns`` is one pattern (N,) or K patterns (K, N) of ±1. The sum itself
    has :math:`w_{ii} = K/N` on the diagonal — that is the matrix the slide
    prints — and the network zeroes it (``zero_diagonal=True``): a
    self-coupling only adds the constant :math:`w_{ii}s_i^2` to the energy,
    which Eq. EBM-5 leaves out (j < i), but in the dynamics it pulls every unit
    towards its current state, making spurious states stable.
    """
    p, _ = _check_spins("patterns", patterns)
    # BEGIN SOLUTION 6.1
    w = p.T @ p / p.shape[1]
    # END SOLUTION
    if zero_diagonal:
        np.fill_diagonal(w, 0.0)
    return w


# --------------------------------------------------------------------------- the network

@dataclass
class RunResult:
    """What :meth:`HopfieldNetwork.run` returns (scalars for a single input state).

    ``states`` the final states (±1 ints); ``steps`` the steps taken (sweeps for
    ``"async1"``); ``converged`` whether each ended at a fixed point; ``cycled``
    whether synchronous updates fell into a 2-cycle s(t+1) = s(t−1) ≠ s(t).
    """

    states: np.ndarray
    steps: np.ndarray
    converged: np.ndarray
    cycled: np.ndarray


class HopfieldNetwork:
    """A Hopfield network: symmetric weights with w_ii = 0 and thresholds θ (Eq. EBM-1…EBM-5).

    Every method takes one state (N,) or a batch (B, N) of ±1 values and
    answers in kind. Build one from patterns with :meth:`from_patterns`.
    """

    def __init__(self, weights, thresholds=None):
        self.weights = _check_weights(weights)
        self.thresholds = _check_thresholds(thresholds, self.n_units)
        self.patterns = None
        self._tie = hopfield_tie_tolerance(self.weights, self.thresholds)

    @classmethod
    def from_patterns(cls, patterns, thresholds=None) -> "HopfieldNetwork":
        """Store ``patterns`` (N,) or (K, N) with Hebb's rule, Eq. EBM-3 / EBM-4 (diagonal zeroed)."""
        net = cls(hebbian_weights(patterns), thresholds)
        net.patterns = np.atleast_2d(np.asarray(patterns)).astype(np.int64)
        return net

    @property
    def n_units(self) -> int:
        """The number of units N."""
        return self.weights.shape[0]

    def __repr__(self):
        stored = "" if self.patterns is None else f", patterns={len(self.patterns)}"
        return f"HopfieldNetwork(n_units={self.n_units}{stored})"

    # ----------------------------------------------------------------------- Eq. EBM-1, EBM-5

    def fields(self, states) -> np.ndarray:
        r"""The input of every unit, :math:`h_i = \sum_j w_{ij}s_j - \theta_i` (Eq. EBM-1)."""
        s, single = _check_spins("states", states, self.n_units)
        h = s @ self.weights.T - self.thresholds
        return h[0] if single else h

    def energy(self, states):
        r"""Eq. EBM-5: :math:`E = -\sum_i\sum_{j<i} w_{ij}s_is_j + \sum_i\theta_is_i`, one value per state."""
        s, single = _check_spins("states", states, self.n_units)
        # BEGIN SOLUTION 6.2
        lower = np.tril(self.weights, k=-1)                   # the pairs j < i, each once
        e = -np.einsum("bi,ij,bj->b", s, lower, s) + s @ self.thresholds
        # END SOLUTION
        return e[0] if single else e

    def _sign(self, h, s):
        """Eq. EBM-1's sgn with the tie rule: a (numerically) zero field keeps the state."""
        return np.where(h > self._tie, 1.0, np.where(h < -self._tie, -1.0, s))

    def update_unit(self, states, unit: int):
        """Eq. EBM-1 for the one unit ``unit`` of every state; returns new states."""
        s, single = _check_spins("states", states, self.n_units)
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < self.n_units:
            raise ValueError(f"unit: expected an int in [0, {self.n_units}), got {unit!r}")
        h = s @ self.weights[unit] - self.thresholds[unit]
        s[:, unit] = np.where(h > self._tie[unit], 1.0, np.where(h < -self._tie[unit], -1.0, s[:, unit]))
        return _as_output(s, single)

    def _would_change(self, s):
        return s * (s @ self.weights.T - self.thresholds) < -self._tie

    def is_fixed_point(self, states):
        """True where no unit would change under Eq. EBM-1 (a local minimum of the energy)."""
        s, single = _check_spins("states", states, self.n_units)
        fixed = ~self._would_change(s).any(axis=1)
        return bool(fixed[0]) if single else fixed

    # ----------------------------------------------------------------------- Eq. EBM-2

    def step(self, states, scheme: str = "async1", rng=None, rate: float = 0.5):
        """One unit of time of an Eq. EBM-2 scheme; returns new states.

        * ``"synchronous"``: every unit at once, from the same old state;
        * ``"async1"``: one *sweep* — N time steps, each updating one unit
          drawn uniformly at random (with replacement);
        * ``"async2"``: each unit independently updates with probability
          ``rate``; the chosen ones update together. Small rates approach
          ``"async1"``, ``rate=1`` is synchronous.
        """
        s, single = _check_spins("states", states, self.n_units)
        return _as_output(self._stepper(_check_scheme(scheme), as_generator(rng), _check_rate(rate))(s), single)

    def _stepper(self, scheme, rng, rate):
        """A function: (B, N) float states → the states one step later."""
        if scheme == "synchronous":
            return lambda s: self._sign(s @ self.weights.T - self.thresholds, s)
        if scheme == "async2":
            def update_some(s):
                chosen = rng.random(s.shape) < rate
                return np.where(chosen, self._sign(s @ self.weights.T - self.thresholds, s), s)
            return update_some
        kernel = backend.get_kernel("hopfield_async_sweeps", "cpu")
        return lambda s: kernel(s, self.weights, self.thresholds, self._random_units(rng, len(s), 1))[0]

    def _random_units(self, rng, n_states, n_sweeps):
        """Asynchronous I's random units: (B, sweeps, N) draws from [0, N)."""
        return rng.integers(0, self.n_units, size=(n_states, n_sweeps, self.n_units))

    def run(self, states, scheme: str = "async1", max_steps: int = 100, rng=None, rate: float = 0.5,
            device: str = "cpu") -> RunResult:
        """Update until a fixed point (Eq. EBM-2), at most ``max_steps`` steps (see :meth:`step`).

        Synchronous updates of a symmetric net end at a fixed point or in a
        2-cycle; a 2-cycle is reported in ``cycled`` and stops that state.
        ``device="cuda"`` runs ``"async1"`` with the CuPy kernel (same random units).
        """
        s, single = _check_spins("states", states, self.n_units)
        scheme, rng = _check_scheme(scheme), as_generator(rng)
        max_steps, rate = check_int("max_steps", max_steps, 0), _check_rate(rate)
        if scheme == "async1":
            s, steps, converged = self._run_async(s, max_steps, rng, backend.check_device(device))
            cycled = np.zeros(len(s), dtype=bool)
        else:
            s, steps, converged, cycled = self._run_parallel(
                s, self._stepper(scheme, rng, rate), max_steps, detect_cycles=scheme == "synchronous")
        if single:
            return RunResult(_as_output(s, True), int(steps[0]), bool(converged[0]), bool(cycled[0]))
        return RunResult(_as_output(s, False), steps, converged, cycled)

    def _run_async(self, s, max_sweeps, rng, device):
        """Asynchronous I with the compiled kernel, a few sweeps of fresh random units per call."""
        kernel = backend.get_kernel("hopfield_async_sweeps", device)
        xp = backend.xp_for(device)
        weights, thresholds = backend.to_device(self.weights, device), backend.to_device(self.thresholds, device)
        steps = np.zeros(len(s), dtype=np.int64)
        converged = ~self._would_change(s).any(axis=1)
        active, swept = np.flatnonzero(~converged), 0        # the active states have all run `swept` sweeps
        while active.size and swept < max_sweeps:
            sweeps = min(_SWEEPS_PER_CALL, max_sweeps - swept)
            units = xp.asarray(self._random_units(rng, active.size, sweeps))
            new, ran, done = (backend.to_device(a, "cpu") for a in
                              kernel(backend.to_device(s[active], device), weights, thresholds, units))
            s[active], steps[active], converged[active] = new, steps[active] + ran, done
            active, swept = active[~done], swept + sweeps
        return s, steps, converged

    def _run_parallel(self, s, update, max_steps, detect_cycles):
        """Synchronous or asynchronous II: step the unfinished states, watch for fixed points and 2-cycles."""
        steps = np.zeros(len(s), dtype=np.int64)
        converged = ~self._would_change(s).any(axis=1)
        cycled = np.zeros(len(s), dtype=bool)
        before = s.copy()                                     # s(t−1), to spot s(t+1) = s(t−1)
        for _ in range(max_steps):
            active = np.flatnonzero(~(converged | cycled))
            if active.size == 0:
                break
            new = update(s[active])
            if detect_cycles:                                 # s(t) is not fixed, so s(t+1) ≠ s(t)
                cycled[active] = np.all(new == before[active], axis=1)
            before[active], s[active] = s[active], new
            steps[active] += 1
            converged[active] = ~self._would_change(new).any(axis=1)
        return s, steps, converged, cycled

    def recall(self, states, scheme: str = "async1", max_steps: int = 100, rng=None, rate: float = 0.5):
        """The state(s) :meth:`run` ends in: what the memory recalls from the cue ``states``."""
        return self.run(states, scheme, max_steps, rng, rate).states


def _as_output(s, single):
    """Internal float64 (B, N) states → the caller's shape, as ±1 ints."""
    out = s.astype(np.int64)
    return out[0] if single else out


# --------------------------------------------------------------------------- basins of attraction

def flip_bits(states, k: int, rng=None) -> np.ndarray:
    """Copies of ``states`` (N,) or (B, N) with ``k`` distinct random bits of each row flipped."""
    s, single = _check_spins("states", states)
    k = check_int("k", k, 0)
    if k > s.shape[1]:
        raise ValueError(f"k: expected at most N = {s.shape[1]} bits to flip, got {k}")
    which = as_generator(rng).random(s.shape).argsort(axis=1)[:, :k]   # a random k-subset per row
    np.put_along_axis(s, which, -np.take_along_axis(s, which, axis=1), axis=1)
    return _as_output(s, single)


def basin_of_attraction(net: HopfieldNetwork, patterns, flips, trials: int = 20, scheme: str = "async1",
                        rng=None, max_steps: int = 100) -> np.ndarray:
    """Recall rate against the number of flipped bits: one rate per entry of ``flips``.

    For each k, every pattern is corrupted ``trials`` times by flipping k random
    bits and run to a fixed point; the rate is the fraction that ends exactly
    on the pattern.
    """
    p, _ = _check_spins("patterns", patterns, net.n_units)
    trials, rng = check_int("trials", trials, 1), as_generator(rng)
    targets = np.repeat(p, trials, axis=0)
    rates = []
    for k in flips:
        recalled = net.recall(flip_bits(targets, k, rng), scheme, max_steps, rng)
        rates.append(np.mean(np.all(recalled == targets, axis=1)))
    return np.array(rates)


# --------------------------------------------------------------------------- storage capacity

def retrieval_overlap_theory(alpha):
    r"""Amit, Gutfreund & Sompolinsky's zero-temperature overlap of the retrieval state at load α.

    With :math:`y = m/\sqrt{2\alpha r}` their replica-symmetric equations reduce to

    .. math:: \frac{\mathrm{erf}(y)}{y} - \frac{2}{\sqrt\pi}e^{-y^2} = \sqrt{2\alpha},\qquad m = \mathrm{erf}(y),

    whose left side has a maximum: above :math:`\alpha_c\approx0.138` no
    retrieval solution exists (returns NaN); just below it m ≈ 0.967.
    """
    lhs = lambda y: math.erf(y) / y - 2 / math.sqrt(math.pi) * math.exp(-y * y)  # noqa: E731
    peak = _argmax_unimodal(lhs, 0.1, 5.0)

    def overlap(a):
        target = math.sqrt(2 * a)
        if a <= 0:
            return 1.0
        if target > lhs(peak):
            return math.nan
        lo, hi = peak, 20.0                                    # lhs falls from its peak: bisect
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if lhs(mid) > target else (lo, mid)
        return math.erf(lo)

    return np.vectorize(overlap, otypes=[float])(alpha)


def _argmax_unimodal(f, lo, hi):
    """Golden-section search for the maximum of a unimodal f on [lo, hi]."""
    g = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        lo, hi = (a, hi) if f(a) < f(b) else (lo, b)
    return (lo + hi) / 2


@dataclass
class CapacityCurve:
    """Recall against load α = p/N at one network size (what :func:`capacity_curve` measures).

    Per load: ``n_patterns`` p, ``tests`` recalls tried, ``mean_overlap`` the
    final overlap m = s·P/N averaged over them, ``retrieved`` the fraction with
    m ≥ ``threshold``, ``unconverged`` how many hit ``max_sweeps``.
    """

    n_units: int
    loads: np.ndarray
    n_patterns: np.ndarray
    tests: np.ndarray
    mean_overlap: np.ndarray
    retrieved: np.ndarray
    unconverged: np.ndarray
    threshold: float
    seconds: float = 0.0


def capacity_curve(n_units: int, loads, trials=None, seed: int = 0, threshold: float = 0.9,
                   max_sweeps: int = 1000, device: str = "cpu") -> CapacityCurve:
    """Measure retrieval of p = round(αN) random patterns stored in N = ``n_units`` units.

    Eq. EBM-4 stores the patterns; asynchronous dynamics start *at* each stored
    pattern and run to a fixed point; the final overlap m tells whether a
    retrieval state (m ≈ 0.97 just below α_c) exists near it, or the state
    slid away (m ≲ 0.4). ``trials`` pattern sets per load, by default enough
    for about 1000 recalls per load.
    """
    n = check_int("n_units", n_units, 2)
    loads = np.asarray(loads, dtype=np.float64)
    if loads.ndim != 1 or loads.size == 0 or not np.all((loads > 0) & np.isfinite(loads)):
        raise ValueError(f"loads: expected a non-empty 1-D array of positive loads, got {loads!r}")
    rng, start = np.random.default_rng(check_int("seed", seed, 0)), time.perf_counter()
    rows = [_measure_load(n, max(1, round(a * n)), trials, rng, threshold, max_sweeps, device) for a in loads]
    p, tests, overlap, retrieved, unconverged = (np.array(col) for col in zip(*rows))
    return CapacityCurve(n, p / n, p, tests, overlap, retrieved, unconverged, threshold,
                         time.perf_counter() - start)


def _measure_load(n, p, trials, rng, threshold, max_sweeps, device):
    """(p, recalls, mean overlap, retrieved fraction, unconverged) at p patterns in n units."""
    trials = max(1, math.ceil(1000 / p)) if trials is None else check_int("trials", trials, 1)
    overlaps, unconverged = [], 0
    for _ in range(trials):
        patterns = rng.choice(np.array([-1, 1]), size=(p, n))
        result = HopfieldNetwork.from_patterns(patterns).run(patterns, "async1", max_sweeps, rng, device=device)
        overlaps.append(np.mean(result.states * patterns, axis=1))
        unconverged += int(np.sum(~result.converged))
    m = np.concatenate(overlaps)
    return p, m.size, m.mean(), np.mean(m >= threshold), unconverged


def critical_load(curve: CapacityCurve, level: float = 0.5) -> float:
    """The load where the retrieved fraction first falls below ``level`` (linear interpolation)."""
    r, a = curve.retrieved, curve.loads
    below = np.flatnonzero(r < level)
    if below.size == 0 or below[0] == 0:
        raise ValueError(f"curve: expected the retrieved fraction to start above {level} and fall below it, "
                         f"got {np.round(r, 3).tolist()} at loads {np.round(a, 3).tolist()}; widen the loads")
    i = below[0]
    return float(a[i - 1] + (r[i - 1] - level) * (a[i] - a[i - 1]) / (r[i - 1] - r[i]))


def extrapolate_critical_load(sizes, critical_loads):
    r"""Least-squares fit :math:`\alpha_c(N) = \alpha_\infty + a/\sqrt N`; returns :math:`(\alpha_\infty, a)`.

    The finite-size shift of the 50 % point shrinks like :math:`N^{-1/2}` (the
    width of the overlap fluctuations), so the intercept estimates α_c.
    """
    x = 1 / np.sqrt(np.asarray(sizes, dtype=np.float64))
    y = np.asarray(critical_loads, dtype=np.float64)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"sizes, critical_loads: expected two equal-length lists of ≥ 2 values, "
                         f"got shapes {x.shape} and {y.shape}")
    slope, intercept = np.polyfit(x, y, 1)
    return float(intercept), float(slope)


def crossing_load(small: CapacityCurve, large: CapacityCurve) -> float:
    r"""The load where the retrieved fractions of two sizes cross (finite-size scaling's estimate of α_c).

    Near a transition the fraction depends on :math:`(\alpha-\alpha_c)N^{1/\nu}`
    only, so the curves of all sizes meet at α_c: below it the larger net
    retrieves more often, above it less. Returns the last sign change of
    ``small.retrieved - large.retrieved`` before its maximum (both measured on
    the same loads). Where the curves are flat the gap is mostly sampling
    noise, so this needs many recalls per load.
    """
    if small.loads.shape != large.loads.shape or not np.allclose(small.loads, large.loads):
        raise ValueError(f"small, large: expected curves on the same loads p/N, got {np.round(small.loads, 4)} "
                         f"and {np.round(large.loads, 4)}")
    gap = small.retrieved - large.retrieved
    widest = int(np.argmax(gap))                              # far above α_c both are 0 again: look left of here
    at_or_below = np.flatnonzero(gap[:widest] <= 0)
    if gap[widest] <= 0 or at_or_below.size == 0:
        raise ValueError(f"small, large: expected the curves to cross, "
                         f"got differences {np.round(gap, 3).tolist()}")
    i = at_or_below[-1]
    a = small.loads
    return float(a[i] + (a[i + 1] - a[i]) * -gap[i] / (gap[i + 1] - gap[i]))


@dataclass
class CapacityExperiment:
    """:func:`capacity_experiment`'s result: a curve and an α_c per size, their extrapolation,
    and the loads where the curves of consecutive sizes cross."""

    curves: list
    critical_loads: dict
    extrapolated: float
    slope: float
    crossings: dict
    seconds: float


def capacity_experiment(sizes=(100, 200, 500, 1000), loads=None, seed: int = 0, trials=None,
                        device: str = "cpu") -> CapacityExperiment:
    """:func:`capacity_curve` at every size, :func:`critical_load` of each, and the N → ∞ extrapolation."""
    loads = np.round(np.arange(0.06, 0.3001, 0.01), 3) if loads is None else loads
    start = time.perf_counter()
    curves = [capacity_curve(n, loads, trials, seed + i, device=device) for i, n in enumerate(sizes)]
    alpha_c = {c.n_units: critical_load(c) for c in curves}
    extrapolated, slope = extrapolate_critical_load(list(alpha_c), list(alpha_c.values()))
    crossings = {(a.n_units, b.n_units): _crossing_or_nan(a, b) for a, b in zip(curves[:-1], curves[1:])}
    return CapacityExperiment(curves, alpha_c, extrapolated, slope, crossings, time.perf_counter() - start)


def _crossing_or_nan(small, large) -> float:
    """:func:`crossing_load`, or NaN where the sizes' loads p/N differ or the curves do not cross."""
    try:
        return crossing_load(small, large)
    except ValueError:
        return math.nan


# --------------------------------------------------------------------------- figures

def plot_capacity(result, path) -> str:
    """Retrieved fraction and mean overlap against load for every N, with α_c = 0.138 and the theory.

    ``result`` is a :class:`CapacityExperiment`, a :class:`CapacityCurve` or a list of curves.
    """
    from matplotlib.figure import Figure                      # matplotlib only when drawing

    from ...viz import save_figure
    curves = result.curves if isinstance(result, CapacityExperiment) else \
        [result] if isinstance(result, CapacityCurve) else list(result)
    if not curves or not all(isinstance(c, CapacityCurve) for c in curves):
        raise ValueError(f"result: expected a CapacityExperiment, a CapacityCurve or a list of them, got {result!r}")
    fig = Figure(figsize=(11, 4.2))
    frac_ax, m_ax = fig.subplots(1, 2)
    for c in curves:
        frac_ax.plot(c.loads, c.retrieved, "o-", ms=3, label=f"N = {c.n_units}")
        m_ax.plot(c.loads, c.mean_overlap, "o-", ms=3, label=f"N = {c.n_units}")
    a = np.linspace(0.001, THEORETICAL_CRITICAL_LOAD, 200)
    m_ax.plot(a, retrieval_overlap_theory(a), "k-", lw=2, label="AGS theory (N → ∞)")
    for ax in (frac_ax, m_ax):
        ax.axvline(THEORETICAL_CRITICAL_LOAD, color="k", ls="--", lw=1)
        ax.set_xlabel("load α = p / N")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    frac_ax.set_ylabel(f"fraction retrieved (m ≥ {curves[0].threshold})")
    frac_ax.set_title("start at a stored pattern, run to a fixed point")
    m_ax.set_ylabel("mean final overlap m")
    m_ax.set_title("α_c = 0.138 (dashed)")
    fig.tight_layout()
    return save_figure(fig, path)


def _async_trajectory(net, state, rng, max_sweeps):
    """The states an asynchronous-I run passes through, one entry per flip (start included)."""
    s, path = np.asarray(state, dtype=np.int64), [np.asarray(state, dtype=np.int64)]
    for _ in range(max_sweeps):
        if net.is_fixed_point(s):
            break
        for unit in rng.integers(0, net.n_units, size=net.n_units):
            new = net.update_unit(s, int(unit))
            if not np.array_equal(new, s):
                s = new
                path.append(s)
    return path


def plot_recall(net: HopfieldNetwork, cues, path, image_shape=(8, 8), rng=None, max_sweeps: int = 50) -> str:
    """One row per cue: corrupted input → halfway (half of the flips done) → recalled → stored pattern.

    The last column is the stored pattern with the largest overlap with the
    recalled state (left empty when ``net`` has no ``patterns``).
    """
    from matplotlib.figure import Figure                      # matplotlib only when drawing

    from ...viz import save_figure
    s, _ = _check_spins("cues", cues, net.n_units)
    if math.prod(image_shape) != net.n_units:
        raise ValueError(f"image_shape: expected {net.n_units} pixels in all, got {tuple(image_shape)}")
    rng = as_generator(rng)
    fig = Figure(figsize=(6, 1.6 * len(s)))
    axes = np.atleast_2d(fig.subplots(len(s), 4))
    titles = ("corrupted input", "halfway", "recalled", "nearest stored")
    for row, cue in zip(axes, s):
        trajectory = _async_trajectory(net, cue, rng, max_sweeps)
        final = trajectory[-1]
        stored = None if net.patterns is None else net.patterns[np.argmax(net.patterns @ final)]
        for ax, title, img in zip(row, titles, (trajectory[0], trajectory[len(trajectory) // 2], final, stored)):
            ax.set_axis_off()
            if img is not None:
                ax.imshow(np.reshape(img, image_shape), cmap="gray_r", vmin=-1, vmax=1)
            ax.set_title(title if ax is not row[1] else f"halfway ({len(trajectory) // 2} flips)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


# --------------------------------------------------------------------------- the experiment, from the shell

def main() -> None:                                           # pragma: no cover - run by hand
    """Run :func:`capacity_experiment`, print its table and write ``hopfield_capacity.png``."""
    exp = capacity_experiment()
    print(f"{'N':>6} {'alpha_c (50% retrieved, m>=0.9)':>34} {'seconds':>8}")
    for c in exp.curves:
        print(f"{c.n_units:>6} {exp.critical_loads[c.n_units]:>34.4f} {c.seconds:>8.1f}")
    print(f"extrapolated alpha_c(N -> inf) = {exp.extrapolated:.4f}  "
          f"(fit alpha_c(N) = alpha_inf + {exp.slope:.3f}/sqrt(N)); theory 0.138; total {exp.seconds:.1f} s")
    for (a, b), load in exp.crossings.items():
        print(f"retrieved fractions of N = {a} and N = {b} cross at alpha = {load:.4f}")
    print("wrote", plot_capacity(exp, "hopfield_capacity.png"))


if __name__ == "__main__":                                    # pragma: no cover
    main()
