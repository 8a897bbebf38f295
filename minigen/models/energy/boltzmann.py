r"""Boltzmann machines — the lecture's Eq. EBM-6…EBM-10, exactly and by sampling.

A Boltzmann machine is a Hopfield net whose units are *stochastic*. Units
:math:`s_i \in \{0, 1\}` (visible first, then hidden) are joined by symmetric
weights :math:`w_{ij} = w_{ji}`, :math:`w_{ii} = 0`, and every global state
has an energy (Eq. EBM-5/6, with biases :math:`b_i`)

.. math:: E(\mathbf s) = -\sum_{i<j} w_{ij}\,s_i s_j - \sum_i b_i s_i
          = -\tfrac12\,\mathbf s^\top W \mathbf s - \mathbf b^\top \mathbf s .

The slide writes the bias term as :math:`+\sum_i \theta_i s_i` with a
*threshold* :math:`\theta_i = -b_i`; a positive bias here switches a unit on.

What lives here, in lecture order:

* EBM-6: the Boltzmann distribution :math:`p(\mathbf s) = e^{-E(\mathbf s)/T}/Z` by
  exact enumeration of all :math:`2^n` states (up to :data:`MAX_EXACT_UNITS`),
  the marginal :math:`p(\mathbf v)` and a stable :math:`\log Z`;
* EBM-7: one unit's switch-on probability :math:`\sigma(\Delta E_i/T)`;
* EBM-8: the slide's 2-visible/2-hidden example table (:func:`slide_example`,
  :func:`example_table`, :func:`format_table`);
* EBM-9: Gibbs sweeps over many chains at once, clamping, simulated annealing
  with geometric or linear cooling, and greedy zero-temperature descent;
* EBM-10: learning by a positive (clamped) and a negative (free) phase, with
  the exact gradient of :math:`G = D_{KL}(P^+(V)\Vert P^-(V))` for checking;
* a chi-square goodness-of-fit test (no SciPy) that the tests use to compare
  sample frequencies with exact probabilities, and :func:`plot_annealing`.

States are NumPy float arrays of 0.0/1.0 shaped ``(chains, n_units)``. States
are enumerated in binary counting order with unit 0 as the most significant
bit, so the visible units pick the *block* and the hidden units the position
inside it: ``joint.reshape(2**n_visible, 2**n_hidden)`` has one row per
visible state.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ... import numerics
from ...checks import check_int
from ...numerics import logsumexp, sigmoid
from ...random import as_generator

__all__ = ["MAX_EXACT_UNITS", "BoltzmannMachine", "AnnealingTrajectory", "PhaseStatistics",
           "geometric_schedule", "linear_schedule", "binary_states", "state_index",
           "chi_square_test", "chi_square_sf", "slide_example", "example_table", "TableRow",
           "format_table", "plot_annealing"]

#: Exact enumeration visits 2**n states; beyond this many units it is refused.
MAX_EXACT_UNITS = 20
#: Expected counts below this make the chi-square approximation unreliable.
MIN_EXPECTED_COUNT = 5.0


# --------------------------------------------------------------------------- small helpers

def _temperature(name: str, value, allow_zero: bool = False) -> float:
    t = float(value)
    if not math.isfinite(t) or t < 0 or (t == 0 and not allow_zero):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite temperature {expected}, got {value!r}")
    return t


def binary_states(n: int) -> np.ndarray:
    """All :math:`2^n` binary states, shape ``(2**n, n)``, in counting order (unit 0 = most significant bit)."""
    return numerics.binary_states(check_int("n", n, minimum=0))


@functools.lru_cache(maxsize=2)
def _state_table(n: int) -> np.ndarray:
    """:func:`binary_states` kept read-only between calls: training recomputes exact
    statistics every step, and rebuilding the 2**20-row table cost more than using it."""
    table = binary_states(n)
    table.flags.writeable = False
    return table


def state_index(states) -> np.ndarray:
    """The position of each state (last axis) in :func:`binary_states` — the inverse of that listing."""
    states = np.asarray(states)
    place_values = 2 ** np.arange(states.shape[-1] - 1, -1, -1)
    return (states.astype(np.int64) @ place_values).astype(np.int64)


# --------------------------------------------------------------------------- chi-square (no SciPy)

def chi_square_sf(statistic: float, dof: int) -> float:
    r"""P(χ²_dof ≥ statistic): the chi-square survival function, a regularized upper incomplete gamma.

    .. math:: P(\chi^2_k \ge x) = Q\!\left(\tfrac k2, \tfrac x2\right)
              = \frac{\Gamma(k/2,\, x/2)}{\Gamma(k/2)}

    computed as in Numerical Recipes (§6.2): the power series of the lower
    function P = 1 - Q when x < a + 1, where it converges fast, and Lentz's
    continued fraction for Q otherwise. Accurate to ~1e-12.
    """
    dof = check_int("dof", dof)
    x = float(statistic)
    if not x >= 0:
        raise ValueError(f"statistic: expected a chi-square value >= 0, got {statistic!r}")
    a, x = dof / 2.0, x / 2.0
    if x == 0:
        return 1.0
    log_prefactor = a * math.log(x) - x - math.lgamma(a)   # log(x^a e^{-x} / Γ(a))
    if x < a + 1:
        return 1.0 - math.exp(log_prefactor) * _lower_gamma_series(a, x)
    return math.exp(log_prefactor) * _upper_gamma_fraction(a, x)


def _lower_gamma_series(a: float, x: float) -> float:
    """Σ_k x^k / (a (a+1) … (a+k)), so that P(a, x) = x^a e^{-x}/Γ(a) · this sum."""
    term = total = 1.0 / a
    k = 0
    while abs(term) > 1e-16 * abs(total):
        k += 1
        term *= x / (a + k)
        total += term
    return total


def _upper_gamma_fraction(a: float, x: float) -> float:
    """The continued fraction 1/(x+1-a- 1·(1-a)/(x+3-a- …)) by Lentz's method: Q = x^a e^{-x}/Γ(a) · this."""
    tiny = 1e-300
    b = x + 1.0 - a
    c, d = 1.0 / tiny, 1.0 / b
    fraction = d
    for k in range(1, 10_000):
        an = -k * (k - a)
        b += 2.0
        d = an * d + b
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = b + an / c
        c = c if abs(c) > tiny else tiny
        fraction *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return fraction


def chi_square_test(counts, probabilities, *, pool_rare: bool = False) -> tuple[float, float]:
    r"""Pearson's goodness-of-fit test of observed ``counts`` against exact ``probabilities``.

    .. math:: X^2 = \sum_k \frac{(O_k - N p_k)^2}{N p_k}, \qquad
              \text{p-value} = P(\chi^2_{K-1} \ge X^2)

    Returns ``(statistic, p_value)``. The samples behind ``counts`` must be
    independent (thin a Markov chain, or take one state per chain), and every
    expected count :math:`N p_k` must be at least 5 for the χ² law to hold.
    """
    counts = np.asarray(counts, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if counts.ndim != 1 or counts.shape != probabilities.shape or len(counts) < 2:
        raise ValueError(f"counts, probabilities: expected two 1-D arrays of the same length >= 2, "
                         f"got shapes {counts.shape} and {probabilities.shape}")
    if np.any(counts < 0) or not np.isclose(probabilities.sum(), 1.0) or np.any(probabilities < 0):
        raise ValueError(f"counts must be >= 0 and probabilities a distribution summing to 1, "
                         f"got min count {counts.min()}, probabilities summing to {probabilities.sum()}")
    expected = counts.sum() * probabilities
    if pool_rare and expected.min() < MIN_EXPECTED_COUNT:
        counts, expected = _pool_rare_cells(counts, expected)
    if expected.min() < MIN_EXPECTED_COUNT or len(expected) < 2:
        raise ValueError(f"probabilities: every expected count must be >= {MIN_EXPECTED_COUNT} for the "
                         f"chi-square law, got {expected.min():.3g}; draw more samples or pool rare states")
    statistic = float(np.sum((counts - expected) ** 2 / expected))
    return statistic, chi_square_sf(statistic, len(counts) - 1)


def _pool_rare_cells(counts: np.ndarray, expected: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge the cells with the smallest expected counts into one, until every cell expects >= 5."""
    order = np.argsort(expected)
    counts, expected = counts[order], expected[order]
    k = 1
    while k < len(expected) and (expected[:k].sum() < MIN_EXPECTED_COUNT or expected[k] < MIN_EXPECTED_COUNT):
        k += 1
    return np.append(counts[k:], counts[:k].sum()), np.append(expected[k:], expected[:k].sum())


# --------------------------------------------------------------------------- cooling schedules

def geometric_schedule(t_start: float, t_end: float, n_sweeps: int) -> np.ndarray:
    r"""Exponential cooling :math:`T_k = T_0\,(T_\text{end}/T_0)^{k/(K-1)}`, k = 0…K-1: one factor per sweep."""
    t_start, t_end = _temperature("t_start", t_start), _temperature("t_end", t_end)
    n_sweeps = check_int("n_sweeps", n_sweeps, minimum=2)
    return t_start * (t_end / t_start) ** (np.arange(n_sweeps) / (n_sweeps - 1))


def linear_schedule(t_start: float, t_end: float, n_sweeps: int) -> np.ndarray:
    r""":math:`T_k = T_0 + (T_\text{end} - T_0)\,k/(K-1)`; ``t_end = 0`` ends with greedy (T = 0) sweeps."""
    t_start, t_end = _temperature("t_start", t_start), _temperature("t_end", t_end, allow_zero=True)
    return np.linspace(t_start, t_end, check_int("n_sweeps", n_sweeps, minimum=2))


# --------------------------------------------------------------------------- results

@dataclass
class AnnealingTrajectory:
    """What :meth:`BoltzmannMachine.anneal` did, sweep by sweep.

    ``temperatures[k]`` is the temperature of sweep k (0 for the final greedy
    quench); ``energies[k]`` the energy of every chain *before* sweep k, so
    ``energies`` has one more row than ``temperatures``; ``states`` are the
    chains' final states.
    """

    temperatures: np.ndarray     # (sweeps,)
    energies: np.ndarray         # (sweeps + 1, chains)
    states: np.ndarray           # (chains, n_units)

    @property
    def final_energies(self) -> np.ndarray:
        """The energy of every chain after the final quench: the last row of ``energies``."""
        return self.energies[-1]


@dataclass
class PhaseStatistics:
    r"""Sampled co-activations :math:`\langle s_i s_j\rangle` of the two learning phases (Eq. EBM-10).

    The diagonal holds :math:`\langle s_i\rangle` (as :math:`s_i^2 = s_i`), the
    statistic of the bias. ``*_error`` are the Monte-Carlo standard errors,
    one independent sample per chain; ``negative_states`` are the free chains'
    final states, for the next step of persistent learning.
    """

    positive: np.ndarray
    negative: np.ndarray
    positive_error: np.ndarray
    negative_error: np.ndarray
    negative_states: np.ndarray


# --------------------------------------------------------------------------- the machine

class BoltzmannMachine:
    r"""A fully connected Boltzmann machine over binary units, visible first, then hidden.

    Parameters
    ----------
    n_visible, n_hidden : number of visible (≥ 1) and hidden (≥ 0) units
    weights : symmetric ``(n, n)`` matrix with a zero diagonal, n = n_visible + n_hidden
        (default: no connections; :meth:`random` draws small random ones)
    biases : ``(n,)`` biases :math:`b_i` (default zeros); the slide's threshold is :math:`\theta_i = -b_i`
    temperature : T > 0 of the Boltzmann distribution (k = 1 units)
    """

    def __init__(self, n_visible: int, n_hidden: int, weights=None, biases=None, temperature: float = 1.0):
        self.n_visible = check_int("n_visible", n_visible)
        self.n_hidden = check_int("n_hidden", n_hidden, minimum=0)
        n = self.n_units
        self.weights = np.zeros((n, n)) if weights is None else _check_weights(weights, n)
        self.biases = np.zeros(n) if biases is None else _check_biases(biases, n)
        self.temperature = _temperature("temperature", temperature)

    @classmethod
    def random(cls, n_visible: int, n_hidden: int, *, weight_scale: float = 1.0, bias_scale: float = 0.0,
               temperature: float = 1.0, rng=None) -> "BoltzmannMachine":
        """Weights ~ N(0, weight_scale²) (symmetrised, zero diagonal) and biases ~ N(0, bias_scale²).

        Random weights also break the symmetry between hidden units: from zero
        weights every hidden unit gets the same gradient and they stay twins.
        """
        n = check_int("n_visible", n_visible) + check_int("n_hidden", n_hidden, minimum=0)
        rng = as_generator(rng)
        upper = np.triu(rng.normal(0.0, weight_scale, size=(n, n)), k=1)
        return cls(n_visible, n_hidden, upper + upper.T, rng.normal(0.0, bias_scale, size=n), temperature)

    @property
    def n_units(self) -> int:
        """The number of units, n_visible + n_hidden."""
        return self.n_visible + self.n_hidden

    def __repr__(self) -> str:
        return (f"BoltzmannMachine(n_visible={self.n_visible}, n_hidden={self.n_hidden}, "
                f"temperature={self.temperature:g})")

    # ----------------------------------------------------------------------- energy (EBM-5/6/7)

    def energy(self, states) -> np.ndarray:
        r"""Eq. EBM-6's energy of each state (last axis = units):

        .. math:: E(\mathbf s) = -\sum_{i<j} w_{ij}\,s_i s_j - \sum_i b_i s_i
        """
        s = self._check_states(states, "states", ndim=None)
        # ½ sᵀWs counts each pair i<j once, because W is symmetric with a zero diagonal.
        return -0.5 * np.sum((s @ self.weights) * s, axis=-1) - s @ self.biases

    def energy_gap(self, states, unit: int) -> np.ndarray:
        r"""Eq. EBM-7's :math:`\Delta E_i = E(s_i{=}0) - E(s_i{=}1) = \sum_j w_{ij}s_j + b_i`, per state.

        The energy a unit *saves* by switching on; :math:`w_{ii} = 0`, so it
        does not depend on the unit's own current value.
        """
        s = self._check_states(states, "states", ndim=None)
        unit = self._check_unit(unit)
        return s @ self.weights[unit] + self.biases[unit]

    def probability_on(self, states, unit: int, temperature: float | None = None) -> np.ndarray:
        r"""Eq. EBM-7: :math:`p(s_i = 1 \mid \text{the other units}) = 1/(1 + e^{-\Delta E_i/T})`."""
        t = self.temperature if temperature is None else _temperature("temperature", temperature)
        # BEGIN SOLUTION 6.3
        return sigmoid(self.energy_gap(states, unit) / t)
        # END SOLUTION

    # ----------------------------------------------------------------------- exact distribution (EBM-6)

    def all_states(self) -> np.ndarray:
        """Every global state, ``(2**n, n)``, in the order the exact probabilities use."""
        if self.n_units > MAX_EXACT_UNITS:
            raise ValueError(f"exact enumeration: n_units must be <= {MAX_EXACT_UNITS} (2**n states), "
                             f"got {self.n_units}; use sampling (sample, sampled_statistics) instead")
        return _state_table(self.n_units)

    def log_joint(self, temperature: float | None = None) -> np.ndarray:
        r""":math:`\log p(\mathbf s) = -E(\mathbf s)/T - \log Z` for every state of :meth:`all_states`."""
        t = self.temperature if temperature is None else _temperature("temperature", temperature)
        negative_energy = -self.energy(self.all_states()) / t
        return negative_energy - logsumexp(negative_energy)

    def log_partition(self, temperature: float | None = None) -> float:
        r""":math:`\log Z = \log \sum_{\mathbf s} e^{-E(\mathbf s)/T}`, by logsumexp (stable for any weight size)."""
        t = self.temperature if temperature is None else _temperature("temperature", temperature)
        return float(logsumexp(-self.energy(self.all_states()) / t))

    def joint(self, temperature: float | None = None) -> np.ndarray:
        r"""Eq. EBM-6, the Boltzmann distribution over :meth:`all_states`:

        .. math:: p(\mathbf s) = \frac{e^{-E(\mathbf s)/T}}{\sum_{\mathbf s'} e^{-E(\mathbf s')/T}}
        """
        return np.exp(self.log_joint(temperature))

    def log_marginal_visible(self, temperature: float | None = None) -> np.ndarray:
        r""":math:`\log p(\mathbf v) = \log \sum_{\mathbf h} p(\mathbf v, \mathbf h)`, one entry per visible state."""
        blocks = self.log_joint(temperature).reshape(2 ** self.n_visible, 2 ** self.n_hidden)
        return logsumexp(blocks, axis=1)

    def marginal_visible(self, temperature: float | None = None) -> np.ndarray:
        r"""The model's :math:`P^-(\mathbf v)` over :func:`binary_states` ``(n_visible)``."""
        return np.exp(self.log_marginal_visible(temperature))

    # ----------------------------------------------------------------------- sampling (EBM-9)

    def gibbs_sweep(self, states, temperature: float | None = None, *, clamp_visible: bool = False,
                    rng=None) -> np.ndarray:
        r"""One sequential sweep (Eq. EBM-9): each unit in turn is set on with Eq. EBM-7's probability

        .. math:: p(s_i = 1) = \frac{1}{1 + e^{-\Delta E_i/T}} .

        Units are updated one at a time (each sees its neighbours' newest
        values), all chains at once. ``clamp_visible`` leaves the visible
        units as they are (the positive phase). At ``temperature=0`` a unit
        takes the state of lower energy (a tie keeps it): a greedy Hopfield
        update. Returns new states; the input is not changed.
        """
        t = self.temperature if temperature is None else _temperature("temperature", temperature, allow_zero=True)
        rng = as_generator(rng)
        s = self._check_states(states, "states").copy()
        first = self.n_visible if clamp_visible else 0
        for unit in range(first, self.n_units):
            gap = s @ self.weights[unit] + self.biases[unit]
            if t == 0:
                s[:, unit] = np.where(gap > 0, 1.0, np.where(gap < 0, 0.0, s[:, unit]))
            else:
                s[:, unit] = rng.random(len(s)) < sigmoid(gap / t)
        return s

    def sample(self, n_chains: int, *, burn_in: int = 100, n_samples: int = 1, thin: int = 1, start=None,
               visible=None, temperature: float | None = None, rng=None) -> np.ndarray:
        """Run ``n_chains`` Gibbs chains; ``(n_samples, n_chains, n_units)`` states taken every ``thin`` sweeps.

        ``burn_in`` sweeps come first, so the chains forget ``start`` (random
        by default) and reach thermal equilibrium. ``visible`` (one row per
        chain, or one row for all) clamps the visible units: the chains then
        sample :math:`p(\\mathbf h\\mid \\mathbf v)`.
        """
        n_chains = check_int("n_chains", n_chains)
        burn_in = check_int("burn_in", burn_in, minimum=0)
        n_samples, thin = check_int("n_samples", n_samples), check_int("thin", thin)
        rng = as_generator(rng)
        s = self._start_states(n_chains, start, rng)
        if visible is not None:
            s[:, :self.n_visible] = self._check_visible(visible, n_chains)
        clamp = visible is not None
        for _ in range(burn_in):
            s = self.gibbs_sweep(s, temperature, clamp_visible=clamp, rng=rng)
        samples = []
        for _ in range(n_samples):
            for _ in range(thin):
                s = self.gibbs_sweep(s, temperature, clamp_visible=clamp, rng=rng)
            samples.append(s)
        return np.stack(samples)

    def greedy_descent(self, states) -> np.ndarray:
        """Zero-temperature sweeps until no unit changes: each chain stops in a local minimum (a Hopfield net)."""
        s = self._check_states(states, "states")
        for s in self._zero_temperature_sweeps(s):
            pass                                    # s ends as the last, stable state
        return s

    def _zero_temperature_sweeps(self, s):
        """Yield the states after each greedy sweep that changed something.

        It stops: every flip lowers E strictly (a tie flips nothing) and
        there are finitely many states.
        """
        while True:
            new = self.gibbs_sweep(s, 0.0)
            if np.array_equal(new, s):
                return
            s = new
            yield s

    def anneal(self, schedule, *, n_chains: int = 1, start=None, quench: bool = True,
               rng=None) -> AnnealingTrajectory:
        """Simulated annealing (Eq. EBM-9): one Gibbs sweep per temperature of ``schedule``, hot to cold.

        Early hot sweeps cross energy barriers; as T falls the chains settle
        into deep minima. With ``quench`` a greedy descent finishes the run,
        so every chain ends in a local minimum (recorded as T = 0 sweeps).
        """
        temperatures = _check_schedule(schedule)
        rng = as_generator(rng)
        s = self._start_states(check_int("n_chains", n_chains), start, rng)
        energies = [self.energy(s)]
        for t in temperatures:
            s = self.gibbs_sweep(s, t, rng=rng)
            energies.append(self.energy(s))
        temperatures = list(temperatures)
        for s in (self._zero_temperature_sweeps(s) if quench else ()):    # s ends in a local minimum
            temperatures.append(0.0)
            energies.append(self.energy(s))
        return AnnealingTrajectory(np.array(temperatures), np.stack(energies), s)

    def ground_state_energy(self) -> float:
        """The global minimum of E, by enumeration."""
        return float(self.energy(self.all_states()).min())

    # ----------------------------------------------------------------------- learning (EBM-10)

    def kl_divergence(self, data) -> float:
        r"""Eq. EBM-10's objective, the KL divergence of the model's visible marginal from the data:

        .. math:: G = D_{KL}(P^+(V)\Vert P^-(V))
                  = \sum_{\mathbf v} P^+(\mathbf v)\ln\frac{P^+(\mathbf v)}{P^-(\mathbf v)}

        ``data``: a distribution over the visible states, or binary samples (see :meth:`data_distribution`).
        """
        target = self.data_distribution(data)
        seen = target > 0                          # 0 · ln 0 = 0
        return float(np.sum(target[seen] * (np.log(target[seen]) - self.log_marginal_visible()[seen])))

    def exact_statistics(self, data) -> tuple[np.ndarray, np.ndarray]:
        r"""The exact :math:`p^+_{ij}` and :math:`p^-_{ij}` of Eq. EBM-10, as matrices :math:`\langle s_i s_j\rangle`.

        Positive phase: visible units clamped to :math:`P^+`, hidden units at
        equilibrium, :math:`q^+(\mathbf v, \mathbf h) = P^+(\mathbf v)\,p(\mathbf h\mid\mathbf v)`;
        negative phase: the free model :math:`p(\mathbf v, \mathbf h)`. The
        diagonal is :math:`\langle s_i\rangle`.
        """
        target = self.data_distribution(data)
        joint = self.joint().reshape(2 ** self.n_visible, 2 ** self.n_hidden)
        hidden_given_visible = joint / joint.sum(axis=1, keepdims=True)
        clamped = (target[:, None] * hidden_given_visible).ravel()
        s = self.all_states()
        return (s.T * clamped) @ s, (s.T * joint.ravel()) @ s

    def gradient(self, positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r"""Eq. EBM-10: :math:`\partial G/\partial w_{ij} = -(p^+_{ij} - p^-_{ij})/T`, and the same for biases.

        A bias is a weight to a unit that is always on, so its statistic is
        the diagonal :math:`\langle s_i\rangle`. Returns ``(dG/dW, dG/db)``;
        dG/dW has a zero diagonal, like W.
        """
        difference = -(positive - negative) / self.temperature
        return difference - np.diag(np.diag(difference)), np.diag(difference).copy()

    def exact_gradient(self, data) -> tuple[np.ndarray, np.ndarray]:
        """``(dG/dW, dG/db)`` from :meth:`exact_statistics`: the reference for the sampled gradient."""
        return self.gradient(*self.exact_statistics(data))

    def sampled_statistics(self, data, *, n_chains: int = 1000, n_sweeps: int = 20, negative_start=None,
                           rng=None) -> PhaseStatistics:
        """The two phases of Eq. EBM-10 by Gibbs sampling, one final state per chain.

        Positive phase: each chain's visible units are clamped to a vector
        drawn from :math:`P^+` and its hidden units run ``n_sweeps`` sweeps.
        Negative phase: free chains (from ``negative_start``, random by
        default) run ``n_sweeps`` sweeps.
        """
        rng = as_generator(rng)
        n_chains, n_sweeps = check_int("n_chains", n_chains), check_int("n_sweeps", n_sweeps)
        target = self.data_distribution(data)
        visible = binary_states(self.n_visible)[rng.choice(len(target), size=n_chains, p=target)]
        clamped = self.sample(n_chains, burn_in=n_sweeps - 1, visible=visible, rng=rng)[0]
        free = self.sample(n_chains, burn_in=n_sweeps - 1, start=negative_start, rng=rng)[0]
        (positive, positive_error), (negative, negative_error) = _mean_outer(clamped), _mean_outer(free)
        return PhaseStatistics(positive, negative, positive_error, negative_error, free)

    def fit(self, data, *, steps: int = 200, learning_rate: float = 0.5, method: str = "exact",
            n_chains: int = 500, n_sweeps: int = 5, rng=None) -> np.ndarray:
        r"""Gradient descent on :math:`G` (Eq. EBM-10), biases alike:

        .. math:: w_{ij} \leftarrow w_{ij} - \eta\,\frac{\partial G}{\partial w_{ij}}
                  = w_{ij} + \frac{\eta}{T}\,(p^+_{ij} - p^-_{ij})

        ``data``: a distribution over visible states or binary samples.
        ``method="exact"`` takes the statistics by enumeration; ``"sampled"``
        runs the two phases with ``n_chains`` chains of ``n_sweeps`` sweeps;
        the free chains persist from step to step (persistent contrastive
        divergence, Tieleman 2008), so a few sweeps per step keep them near
        equilibrium. Returns G before each step and after the last (exact).
        """
        if method not in ("exact", "sampled"):
            raise ValueError(f"method: expected 'exact' or 'sampled', got {method!r}")
        steps = check_int("steps", steps)
        learning_rate = float(learning_rate)
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"learning_rate: expected a finite value > 0, got {learning_rate!r}")
        target, rng = self.data_distribution(data), as_generator(rng)
        history, free_chains = [self.kl_divergence(target)], None
        for _ in range(steps):
            *_, free_chains = self.learning_step(target, learning_rate, method=method, n_chains=n_chains,
                                                 n_sweeps=n_sweeps, free_chains=free_chains, rng=rng)
            history.append(self.kl_divergence(target))
        return np.array(history)

    def learning_step(self, data, learning_rate: float, *, method: str = "exact", n_chains: int = 500,
                      n_sweeps: int = 5, free_chains=None, rng=None):
        """One update of :meth:`fit` on ``data``; ``free_chains`` (the sampled negative phase's
        states, None at first) are carried by the caller. Returns ``(grad_weights, grad_biases,
        free_chains)``, the gradient of G that was stepped against."""
        if method == "exact":
            positive, negative = self.exact_statistics(data)
        else:
            stats = self.sampled_statistics(data, n_chains=n_chains, n_sweeps=n_sweeps,
                                            negative_start=free_chains, rng=rng)
            positive, negative, free_chains = stats.positive, stats.negative, stats.negative_states
        grad_weights, grad_biases = self.gradient(positive, negative)
        self.weights -= learning_rate * grad_weights
        self.biases -= learning_rate * grad_biases
        return grad_weights, grad_biases, free_chains

    def data_distribution(self, data) -> np.ndarray:
        r""":math:`P^+(\mathbf v)` over :func:`binary_states` ``(n_visible)``.

        ``data`` is either that distribution itself (1-D, ``2**n_visible``
        non-negative entries summing to 1) or binary training vectors
        ``(N, n_visible)``, whose empirical frequencies are returned.
        """
        data = np.asarray(data, dtype=np.float64)
        n_states = 2 ** self.n_visible
        if data.ndim == 2:
            samples = self._check_states(data, "data", n=self.n_visible)
            if len(samples) == 0:
                raise ValueError("data: expected at least one training vector, got 0 rows")
            return np.bincount(state_index(samples), minlength=n_states) / len(samples)
        if data.shape != (n_states,):
            raise ValueError(f"data: expected a distribution of shape ({n_states},) over the visible states "
                             f"or samples of shape (N, {self.n_visible}), got shape {data.shape}")
        if np.any(data < 0) or not np.isclose(data.sum(), 1.0):
            raise ValueError(f"data: a distribution needs entries >= 0 summing to 1, got sum {data.sum():.6g}, "
                             f"min {data.min():.3g}")
        return data / data.sum()

    # ----------------------------------------------------------------------- checks

    def _check_states(self, states, name: str, ndim: int | None = 2, n: int | None = None) -> np.ndarray:
        """``states`` as float 0/1, last axis of length n (default n_units), ``ndim`` axes if given."""
        n = self.n_units if n is None else n
        s = np.asarray(states, dtype=np.float64)
        if s.ndim == 0 or s.shape[-1] != n or (ndim is not None and s.ndim != ndim):
            expected = f"(chains, {n})" if ndim == 2 else f"(..., {n})"
            raise ValueError(f"{name}: expected shape {expected}, got {s.shape}")
        if not np.all((s == 0) | (s == 1)):
            raise ValueError(f"{name}: expected binary units in {{0, 1}}, got values {np.unique(s)[:6]}")
        return s

    def _check_unit(self, unit) -> int:
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= unit < self.n_units:
            raise ValueError(f"unit: expected an index in [0, {self.n_units}), got {unit!r}")
        return int(unit)

    def _check_visible(self, visible, n_chains: int) -> np.ndarray:
        v = self._check_states(np.atleast_2d(visible), "visible", n=self.n_visible)
        if len(v) not in (1, n_chains):
            raise ValueError(f"visible: expected 1 or n_chains={n_chains} rows, got {len(v)}")
        return v

    def _start_states(self, n_chains: int, start, rng) -> np.ndarray:
        """``start`` broadcast to ``(n_chains, n_units)``; uniformly random bits when None."""
        if start is None:
            return rng.integers(0, 2, size=(n_chains, self.n_units)).astype(np.float64)
        s = self._check_states(np.atleast_2d(start), "start")
        if len(s) not in (1, n_chains):
            raise ValueError(f"start: expected 1 or n_chains={n_chains} rows, got {len(s)}")
        return np.broadcast_to(s, (n_chains, self.n_units)).copy()


def _check_weights(weights, n: int) -> np.ndarray:
    w = np.array(weights, dtype=np.float64)
    if w.shape != (n, n):
        raise ValueError(f"weights: expected shape ({n}, {n}) (visible + hidden units), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weights: expected finite values, got inf or nan")
    if not np.allclose(w, w.T):
        i, j = np.unravel_index(np.argmax(np.abs(w - w.T)), w.shape)
        raise ValueError(f"weights: expected a symmetric matrix, "
                         f"got w[{i},{j}]={w[i, j]:g} != w[{j},{i}]={w[j, i]:g}")
    if np.any(np.diag(w) != 0):
        raise ValueError(f"weights: expected a zero diagonal (no self-connections), got {np.diag(w)}")
    return 0.5 * (w + w.T)      # exactly symmetric, so ½ sᵀWs is the pair sum


def _check_biases(biases, n: int) -> np.ndarray:
    b = np.array(biases, dtype=np.float64)
    if b.shape != (n,) or not np.all(np.isfinite(b)):
        raise ValueError(f"biases: expected {n} finite values, shape ({n},), got shape {b.shape}")
    return b


def _check_schedule(schedule) -> np.ndarray:
    t = np.asarray(schedule, dtype=np.float64)
    if t.ndim != 1 or len(t) == 0 or not np.all(np.isfinite(t)) or np.any(t < 0):
        raise ValueError(f"schedule: expected a 1-D sequence of temperatures >= 0, got shape {t.shape}"
                         + (f", min {t.min():g}" if t.size else ""))
    return t


def _mean_outer(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """⟨s sᵀ⟩ over the chains, and its standard error √(p(1−p)/N) (each entry is a 0/1 average)."""
    mean = states.T @ states / len(states)
    return mean, np.sqrt(mean * (1.0 - mean) / len(states))


# --------------------------------------------------------------------------- the slide's example (EBM-8)

class TableRow(NamedTuple):
    """One row of the example table: a state (v, h) as bit strings and its numbers."""

    v: str
    h: str
    negative_energy: float        # -E(v, h)
    boltzmann_factor: float       # e^{-E/T}
    p_joint: float                # p(v, h)
    p_visible: float              # p(v), the sum of its block's p(v, h)


def slide_example() -> BoltzmannMachine:
    """The slide's example: v1–h1 = 2, v2–h2 = 1, h1–h2 = −1, no biases, T = 1 (units v1, v2, h1, h2)."""
    w = np.zeros((4, 4))
    for i, j, value in ((0, 2, 2.0), (1, 3, 1.0), (2, 3, -1.0)):
        w[i, j] = w[j, i] = value
    return BoltzmannMachine(2, 2, weights=w)


def example_table(machine: BoltzmannMachine) -> list[TableRow]:
    """Eq. EBM-8: each state's −E, e^{−E/T}, p(v, h) and p(v), in the slide's order (v, then h, all-on first)."""
    states = machine.all_states()
    joint = machine.joint()
    p_visible = np.repeat(machine.marginal_visible(), 2 ** machine.n_hidden)
    negative_energy = -machine.energy(states)
    bits = ["".join(str(int(b)) for b in s) for s in states]
    rows = [TableRow(code[:machine.n_visible], code[machine.n_visible:], float(e),
                     float(np.exp(e / machine.temperature)), float(p), float(pv))
            for code, e, p, pv in zip(bits, negative_energy, joint, p_visible)]
    return rows[::-1]


def format_table(rows: list[TableRow], as_printed: bool = True) -> str:
    """The example table as text, one state per line, p(v) on the first line of each v block.

    ``as_printed=True`` redoes the slide's spreadsheet arithmetic: e^{−E} is
    rounded to 2 decimals, the total is the sum of those (39.70), p(v, h) is
    a rounded entry over that total, rounded to 3 decimals (2.72/39.70 =
    .069), and p(v) adds the rounded p(v, h) (.009 + 3 × .025 = 0.084). The
    exact values differ in the last digit: Z = 39.690, p(v, h) = e/Z = .068,
    p(v=00) = 0.0849. ``as_printed=False`` prints the exact values, rounded.
    """
    if as_printed:
        factors = [round(r.boltzmann_factor, 2) for r in rows]
        total = sum(factors)
        p_joint = [round(f / total, 3) for f in factors]
    else:
        factors, p_joint = [r.boltzmann_factor for r in rows], [r.p_joint for r in rows]
        total = sum(factors)
    lines = ["v\th\t-E\te^{-E}\tp(v,h)\tp(v)"]
    for k, row in enumerate(rows):
        cells = [row.v, row.h, f"{row.negative_energy:.4g}", _two_decimals(factors[k]),
                 f"{p_joint[k]:.3f}".lstrip("0")]
        if k == 0 or rows[k - 1].v != row.v:      # p(v) once per block of equal v
            block = sum(p for r, p in zip(rows, p_joint) if r.v == row.v)
            cells.append(f"{block if as_printed else row.p_visible:.3f}")
        lines.append("\t".join(cells))
    lines.append(f"total = {total:.2f}")
    return "\n".join(lines)


def _two_decimals(x: float) -> str:
    """7.39, 0.37 — and 1 rather than 1.00, as the slide prints e^0."""
    text = f"{x:.2f}"
    return text[:-3] if text.endswith(".00") else text


# --------------------------------------------------------------------------- figure

def plot_annealing(trajectory: AnnealingTrajectory, path, *, global_minimum: float | None = None,
                   max_chains: int = 8, title: str | None = None) -> str:
    """Energy (top) and temperature (bottom) against the sweep for up to ``max_chains`` chains, as a PNG.

    Written atomically (:func:`minigen.viz.save_figure`).

    ``global_minimum`` (e.g. :meth:`BoltzmannMachine.ground_state_energy`)
    is drawn as a dashed line, so one sees which chains reached it.
    """
    from matplotlib.figure import Figure

    from ...viz import save_figure
    if not isinstance(trajectory, AnnealingTrajectory):
        raise ValueError(f"trajectory: expected an AnnealingTrajectory, got {type(trajectory).__name__}")
    max_chains = check_int("max_chains", max_chains)
    sweeps = np.arange(len(trajectory.energies))
    fig = Figure(figsize=(7, 5), layout="constrained")
    energy_axes, temperature_axes = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    for chain in trajectory.energies[:, :max_chains].T:
        energy_axes.plot(sweeps, chain, lw=0.9, alpha=0.8)
    if global_minimum is not None:
        energy_axes.axhline(global_minimum, color="k", ls="--", lw=1, label="global minimum")
        energy_axes.legend(loc="upper right")
    energy_axes.set_ylabel("energy E(s)")
    energy_axes.set_title(title or f"simulated annealing, {min(max_chains, trajectory.energies.shape[1])} chains")
    temperature_axes.step(sweeps[1:], trajectory.temperatures, where="pre", color="tab:red")
    temperature_axes.set_ylabel("temperature T")
    temperature_axes.set_xlabel("sweep")
    return save_figure(fig, path)
