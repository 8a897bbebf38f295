"""The Boltzmann machine against the lecture: Eq. EBM-6…EBM-10.

Exact enumeration of all 2^n states is the ground truth; Gibbs sampling,
annealing and the sampled learning phases are checked against it with a
chi-square goodness-of-fit test or a tolerance derived from the Monte-Carlo
standard error. Every sampler gets a fixed seed, so each test is deterministic.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigen.models.energy.boltzmann import (MAX_EXACT_UNITS, AnnealingTrajectory, BoltzmannMachine,
                                             binary_states, chi_square_sf, chi_square_test, example_table,
                                             format_table, geometric_schedule, linear_schedule, plot_annealing,
                                             slide_example, state_index)

# The slide's table (week 13, "Boltzmann Machines: An Example"), as printed.
SLIDE_TABLE = """\
11	11	2	7.39	.186	0.466
11	10	2	7.39	.186
11	01	1	2.72	.069
11	00	0	1	.025
10	11	1	2.72	.069	0.305
10	10	2	7.39	.186
10	01	0	1	.025
10	00	0	1	.025
01	11	0	1	.025	0.144
01	10	0	1	.025
01	01	1	2.72	.069
01	00	0	1	.025
00	11	-1	0.37	.009	0.084
00	10	0	1	.025
00	01	0	1	.025
00	00	0	1	.025
total = 39.70"""

# A 3-visible distribution with two modes (000 and 111): pairwise correlations to learn.
TWO_MODES = np.array([0.30, 0.02, 0.05, 0.13, 0.13, 0.05, 0.02, 0.30])


def random_machine(seed, n_visible=3, n_hidden=2, weight_scale=1.0, bias_scale=0.5, temperature=1.0):
    return BoltzmannMachine.random(n_visible, n_hidden, weight_scale=weight_scale, bias_scale=bias_scale,
                                   temperature=temperature, rng=seed)


def frequencies(states, n_units):
    """How often each of the 2^n states occurs among ``states`` (any leading axes)."""
    return np.bincount(state_index(states.reshape(-1, n_units)), minlength=2 ** n_units)


# --------------------------------------------------------------------------- EBM-6

@pytest.mark.equation("EBM-6")
@given(st.integers(0, 10_000))
def test_energy_is_minus_the_pair_sum_minus_the_biases(seed):
    m = random_machine(seed)
    s = np.random.default_rng(seed).integers(0, 2, size=m.n_units).astype(float)
    n = m.n_units
    by_hand = -sum(m.weights[i, j] * s[i] * s[j] for i in range(n) for j in range(i)) - m.biases @ s
    assert m.energy(s) == pytest.approx(by_hand, abs=1e-12)


@pytest.mark.equation("EBM-6")
@given(st.integers(0, 10_000), st.floats(0.2, 5.0))
def test_boltzmann_distribution_is_normalized_exp_of_minus_energy_over_t(seed, temperature):
    m = random_machine(seed, temperature=temperature)
    boltzmann_factors = np.exp(-m.energy(m.all_states()) / temperature)
    assert m.log_partition() == pytest.approx(math.log(boltzmann_factors.sum()), rel=1e-12)
    np.testing.assert_allclose(m.joint(), boltzmann_factors / boltzmann_factors.sum(), rtol=1e-12)
    assert m.joint().sum() == pytest.approx(1.0, abs=1e-12)


@pytest.mark.equation("EBM-6")
def test_log_partition_is_stable_for_huge_weights():
    # e^{-E/T} overflows float64 here; log Z = -E_min/T + log(1 + tiny) does not.
    m = BoltzmannMachine(2, 0, weights=[[0, 1e4], [1e4, 0]], temperature=0.5)
    assert m.log_partition() == pytest.approx(2e4)
    np.testing.assert_allclose(m.joint(), [0, 0, 0, 1], atol=1e-300)


@pytest.mark.equation("EBM-6")
def test_lower_temperature_concentrates_mass_on_the_minimum():
    m = random_machine(7, n_visible=4, n_hidden=2)
    ground = np.argmin(m.energy(m.all_states()))
    mass = [m.joint(temperature=t)[ground] for t in (10.0, 3.0, 1.0, 0.3, 0.05)]
    assert all(a < b for a, b in zip(mass, mass[1:]))
    assert mass[0] < 2.5 / 64 and mass[-1] > 0.99


@pytest.mark.equation("EBM-6")
def test_visible_marginal_sums_out_the_hidden_units():
    m = random_machine(3)
    states, joint = m.all_states(), m.joint()
    for k, v in enumerate(binary_states(m.n_visible)):
        same_visible = np.all(states[:, :m.n_visible] == v, axis=1)
        assert m.marginal_visible()[k] == pytest.approx(joint[same_visible].sum(), rel=1e-12)


def test_exact_enumeration_is_refused_beyond_max_units():
    m = BoltzmannMachine(MAX_EXACT_UNITS, 1)
    with pytest.raises(ValueError, match=rf"n_units must be <= {MAX_EXACT_UNITS}.*got {MAX_EXACT_UNITS + 1}"):
        m.log_partition()


# --------------------------------------------------------------------------- EBM-7

@pytest.mark.equation("EBM-7")
@given(st.integers(0, 10_000), st.integers(0, 4), st.floats(0.3, 4.0))
def test_switch_on_probability_is_the_ratio_of_exact_joint_probabilities(seed, unit, temperature):
    m = random_machine(seed, temperature=temperature)
    joint = m.joint()
    s = np.random.default_rng(seed).integers(0, 2, size=(6, m.n_units)).astype(float)
    on, off = s.copy(), s.copy()
    on[:, unit], off[:, unit] = 1, 0
    p_on, p_off = joint[state_index(on)], joint[state_index(off)]
    np.testing.assert_allclose(m.probability_on(s, unit), p_on / (p_on + p_off), rtol=1e-10)
    np.testing.assert_allclose(m.energy_gap(s, unit), m.energy(off) - m.energy(on), atol=1e-12)


@pytest.mark.equation("EBM-7")
def test_temperature_turns_the_sigmoid_into_a_step_or_a_coin():
    # The slide's cases: T -> 0 gives p ≈ 1 for ΔE > 0 and ≈ 0 for ΔE < 0; high T gives ≈ 1/2.
    m = BoltzmannMachine(2, 0, weights=[[0, 1], [1, 0]], biases=[-0.5, 0])
    s = np.array([[0.0, 1.0], [0.0, 0.0]])             # ΔE_0 = +0.5, then -0.5
    np.testing.assert_allclose(m.probability_on(s, 0, temperature=1e-3), [1, 0], atol=1e-12)
    np.testing.assert_allclose(m.probability_on(s, 0, temperature=1e3), [0.5, 0.5], atol=1e-3)


# --------------------------------------------------------------------------- EBM-8

@pytest.mark.equation("EBM-8")
def test_slide_example_table_numbers():
    rows = example_table(slide_example())
    assert [r.v + r.h for r in rows] == [line.split()[0] + line.split()[1] for line in SLIDE_TABLE.splitlines()[:-1]]
    assert [r.negative_energy for r in rows] == [2, 2, 1, 0, 1, 2, 0, 0, 0, 0, 1, 0, -1, 0, 0, 0]
    z = sum(r.boltzmann_factor for r in rows)
    assert z == pytest.approx(3 * math.e ** 2 + 3 * math.e + 9 + math.e ** -1)
    assert round(z, 2) == 39.69                        # exact; the slide's 39.70 adds rounded entries
    assert sum(r.p_joint for r in rows) == pytest.approx(1.0)
    p_visible = [r.p_visible for r in rows[::4]]
    np.testing.assert_allclose(p_visible, [0.46602, 0.30505, 0.14407, 0.08485], atol=5e-6)
    assert [round(p, 3) for p in p_visible[:3]] == [0.466, 0.305, 0.144]


@pytest.mark.equation("EBM-8")
def test_format_table_reproduces_the_slide_as_printed():
    text = format_table(example_table(slide_example()))
    lines = text.splitlines()
    assert lines[0].split() == ["v", "h", "-E", "e^{-E}", "p(v,h)", "p(v)"]
    assert [line.split() for line in lines[1:]] == [line.split() for line in SLIDE_TABLE.splitlines()]
    exact = format_table(example_table(slide_example()), as_printed=False).splitlines()
    assert exact[-1] == "total = 39.69" and exact[13].split()[-1] == "0.085"


@pytest.mark.equation("EBM-8")
def test_gibbs_sampling_frequencies_converge_to_the_table():
    # 4000 chains, 5 states each, 10 sweeps apart (the example mixes within a few sweeps):
    # 20 000 near-independent samples, expected counts >= 185 per state.
    m = slide_example()
    samples = m.sample(4000, burn_in=50, n_samples=5, thin=10, rng=1)
    counts = frequencies(samples, 4)
    statistic, p_value = chi_square_test(counts, m.joint())
    assert p_value > 0.01, (statistic, p_value)
    np.testing.assert_allclose(counts.reshape(4, 4)[::-1].sum(1) / counts.sum(),
                               [0.466, 0.305, 0.144, 0.085], atol=0.01)
    # the test has power: the same counts reject the distribution at T = 1.5
    assert chi_square_test(counts, m.joint(temperature=1.5))[1] < 1e-6


# --------------------------------------------------------------------------- the chi-square helper

@given(st.floats(0.0, 200.0))
def test_chi_square_sf_has_closed_forms_for_one_and_two_degrees_of_freedom(x):
    assert chi_square_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-10, abs=1e-300)
    assert chi_square_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-9, abs=1e-300)


def test_chi_square_sf_matches_table_quantiles():
    # 95% quantiles from any chi-square table
    for x, dof in ((3.841459, 1), (11.070498, 5), (18.307038, 10), (43.772972, 30), (124.342113, 100)):
        assert chi_square_sf(x, dof) == pytest.approx(0.05, abs=1e-6)


def test_chi_square_test_refuses_or_pools_too_small_expected_counts():
    with pytest.raises(ValueError, match="expected count must be >= 5"):
        chi_square_test([3, 7], [0.3, 0.7])
    pooled = chi_square_test([100, 90, 4, 6], [0.5, 0.46, 0.02, 0.02], pool_rare=True)
    assert pooled == pytest.approx(chi_square_test([100, 90, 10], [0.5, 0.46, 0.04]))


# --------------------------------------------------------------------------- EBM-9

@pytest.mark.equation("EBM-9")
def test_equilibrium_does_not_depend_on_the_start_state():
    m = random_machine(11, n_visible=3, n_hidden=2, weight_scale=1.5)
    p = m.joint()
    for seed, start in ((2, np.zeros(5)), (3, np.ones(5))):
        samples = m.sample(3000, burn_in=100, n_samples=4, thin=10, start=start, rng=seed)
        statistic, p_value = chi_square_test(frequencies(samples, 5), p, pool_rare=True)
        assert p_value > 0.01, (start, statistic, p_value)
    # ...while the first sweep still remembers the start
    first_sweep = frequencies(m.sample(3000, burn_in=0, start=np.zeros(5), rng=4), 5)
    assert chi_square_test(first_sweep, p, pool_rare=True)[1] < 1e-6
    # Fed the same random numbers, chains from the two extreme starts even coalesce into one.
    from_zeros = m.sample(3000, burn_in=100, start=np.zeros(5), rng=5)
    from_ones = m.sample(3000, burn_in=100, start=np.ones(5), rng=5)
    np.testing.assert_array_equal(from_zeros, from_ones)


@pytest.mark.equation("EBM-9")
def test_clamped_chains_sample_the_hidden_units_given_the_visible_ones():
    m = random_machine(5, n_visible=3, n_hidden=3, weight_scale=1.5)
    v = np.array([1.0, 0.0, 1.0])
    samples = m.sample(4000, burn_in=50, n_samples=3, thin=5, visible=v, rng=4)
    assert np.all(samples[..., :3] == v)
    block = m.joint().reshape(8, 8)[state_index(v)]
    counts = frequencies(samples[..., 3:], 3)
    assert chi_square_test(counts, block / block.sum())[1] > 0.01


@pytest.mark.equation("EBM-9")
@given(st.integers(0, 10_000))
def test_greedy_descent_stops_in_a_local_minimum(seed):
    m = random_machine(seed, n_visible=6, n_hidden=2)
    start = np.random.default_rng(seed).integers(0, 2, size=(10, 8)).astype(float)
    end = m.greedy_descent(start)
    assert np.all(m.energy(end) <= m.energy(start) + 1e-12)
    for unit in range(8):                          # no single flip lowers the energy
        flipped = end.copy()
        flipped[:, unit] = 1 - flipped[:, unit]
        assert np.all(m.energy(flipped) >= m.energy(end) - 1e-12)


@pytest.mark.equation("EBM-9")
def test_annealing_finds_the_global_minimum_more_often_than_greedy_descent():
    # 30 random 12-unit nets (weights and biases ~ N(0, 1)), 20 chains each, the same random starts
    # for both; measured rates: annealing 0.90, greedy descent 0.59.
    annealed = greedy = 0
    for seed in range(30):
        m = BoltzmannMachine.random(12, 0, weight_scale=1.0, bias_scale=1.0, rng=seed)
        start = np.random.default_rng(100 + seed).integers(0, 2, size=(20, 12)).astype(float)
        ground = m.ground_state_energy()
        trajectory = m.anneal(geometric_schedule(5.0, 0.05, 100), n_chains=20, start=start, rng=seed)
        annealed += np.sum(np.isclose(trajectory.final_energies, ground))
        greedy += np.sum(np.isclose(m.energy(m.greedy_descent(start)), ground))
    annealed_rate, greedy_rate = annealed / 600, greedy / 600
    assert annealed_rate > 0.85 and greedy_rate < 0.65, (annealed_rate, greedy_rate)


def test_cooling_schedules():
    g = geometric_schedule(8.0, 0.125, 7)
    np.testing.assert_allclose(g, [8, 4, 2, 1, 0.5, 0.25, 0.125])
    np.testing.assert_allclose(linear_schedule(2.0, 0.0, 5), [2, 1.5, 1, 0.5, 0])
    with pytest.raises(ValueError, match="t_end: expected a finite temperature > 0, got 0"):
        geometric_schedule(1.0, 0.0, 10)


@pytest.mark.equation("EBM-9")
def test_anneal_records_every_sweep_and_ends_in_a_local_minimum(tmp_path):
    m = random_machine(2, n_visible=5, n_hidden=3)
    trajectory = m.anneal(linear_schedule(3.0, 0.1, 40), n_chains=6, rng=0)
    assert isinstance(trajectory, AnnealingTrajectory)
    assert trajectory.energies.shape == (len(trajectory.temperatures) + 1, 6)
    np.testing.assert_allclose(trajectory.temperatures[:40], linear_schedule(3.0, 0.1, 40))
    assert np.all(trajectory.temperatures[40:] == 0)
    np.testing.assert_allclose(trajectory.final_energies, m.energy(trajectory.states))
    np.testing.assert_array_equal(m.greedy_descent(trajectory.states), trajectory.states)
    path = plot_annealing(trajectory, tmp_path / "figs" / "annealing.png", global_minimum=m.ground_state_energy())
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- EBM-10

@pytest.mark.equation("EBM-10")
def test_exact_gradient_is_the_derivative_of_G():
    m = random_machine(9, temperature=1.7)
    grad_weights, grad_biases = m.exact_gradient(TWO_MODES)
    eps = 1e-6
    for i, j in ((0, 1), (0, 4), (2, 3), (3, 4)):
        numeric = []
        for sign in (1, -1):
            shifted = BoltzmannMachine(3, 2, m.weights.copy(), m.biases, m.temperature)
            shifted.weights[i, j] += sign * eps       # w_ij = w_ji is one parameter
            shifted.weights[j, i] += sign * eps
            numeric.append(shifted.kl_divergence(TWO_MODES))
        assert grad_weights[i, j] == pytest.approx((numeric[0] - numeric[1]) / (2 * eps), abs=1e-7)
    for i in range(5):
        shifted = [BoltzmannMachine(3, 2, m.weights, m.biases + sign * eps * np.eye(5)[i], m.temperature)
                   for sign in (1, -1)]
        numeric = (shifted[0].kl_divergence(TWO_MODES) - shifted[1].kl_divergence(TWO_MODES)) / (2 * eps)
        assert grad_biases[i] == pytest.approx(numeric, abs=1e-7)


@pytest.mark.equation("EBM-10")
def test_sampled_phases_match_the_exact_statistics_within_monte_carlo_error():
    m = random_machine(3, weight_scale=1.0)
    stats = m.sampled_statistics(TWO_MODES, n_chains=20_000, n_sweeps=30, rng=5)
    exact_positive, exact_negative = m.exact_statistics(TWO_MODES)
    # one independent state per chain: 5 standard errors (per entry) leaves no room for luck
    assert stats.positive_error.max() < 0.004
    np.testing.assert_array_less(np.abs(stats.positive - exact_positive), 5 * stats.positive_error + 1e-12)
    np.testing.assert_array_less(np.abs(stats.negative - exact_negative), 5 * stats.negative_error + 1e-12)
    sampled_grad, _ = m.gradient(stats.positive, stats.negative)
    exact_grad, _ = m.exact_gradient(TWO_MODES)
    tolerance = 5 * np.hypot(stats.positive_error, stats.negative_error) / m.temperature
    np.testing.assert_array_less(np.abs(sampled_grad - exact_grad), tolerance + 1e-12)
    assert np.abs(exact_grad).max() > 10 * tolerance.max()      # the gradient is well resolved


@pytest.mark.equation("EBM-10")
@pytest.mark.parametrize("method, final_fraction", [("exact", 0.01), ("sampled", 0.03)])
def test_training_lowers_G(method, final_fraction):
    m = random_machine(0, n_visible=3, n_hidden=2, weight_scale=0.1, bias_scale=0.0)
    history = m.fit(TWO_MODES, steps=200, learning_rate=0.5, method=method, n_chains=500, n_sweeps=5, rng=1)
    assert len(history) == 201 and history[0] > 0.3
    assert history[-1] < final_fraction * history[0], history[::50]
    assert history[-1] == pytest.approx(m.kl_divergence(TWO_MODES))


@pytest.mark.equation("EBM-10")
def test_parity_needs_hidden_units():
    # 3-bit parity has uniform first and second moments: without hidden units the best
    # Boltzmann machine is uniform (G = ln 2); two hidden units learn it.
    parity = np.array([0.25 if bin(k).count("1") % 2 == 0 else 0.0 for k in range(8)])
    visible_only = BoltzmannMachine.random(3, 0, weight_scale=0.5, rng=0)
    with_hidden = BoltzmannMachine.random(3, 2, weight_scale=0.5, rng=0)
    assert visible_only.fit(parity, steps=500, learning_rate=1.0)[-1] > math.log(2) - 1e-3
    assert with_hidden.fit(parity, steps=2000, learning_rate=1.0)[-1] < 0.1


def test_training_vectors_become_their_empirical_distribution():
    m = BoltzmannMachine(2, 1)
    data = np.array([[1, 1], [1, 1], [0, 1], [1, 0]])
    np.testing.assert_allclose(m.data_distribution(data), [0, 0.25, 0.25, 0.5])
    assert m.kl_divergence(data) == pytest.approx(m.kl_divergence([0, 0.25, 0.25, 0.5]))


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("make, message", [
    (lambda: BoltzmannMachine(0, 2), r"n_visible: expected an integer >= 1, got 0"),
    (lambda: BoltzmannMachine(2, 1, weights=np.zeros((2, 2))), r"weights: expected shape \(3, 3\).*got \(2, 2\)"),
    (lambda: BoltzmannMachine(2, 0, weights=[[0, 1], [2, 0]]), r"weights: expected a symmetric matrix"),
    (lambda: BoltzmannMachine(2, 0, weights=[[1, 0], [0, 0]]), r"weights: expected a zero diagonal"),
    (lambda: BoltzmannMachine(2, 0, biases=[1, 2, 3]), r"biases: expected 2 finite values.*got shape \(3,\)"),
    (lambda: BoltzmannMachine(2, 0, temperature=0), r"temperature: expected a finite temperature > 0, got 0"),
    (lambda: slide_example().energy(np.ones(3)), r"states: expected shape \(\.\.\., 4\), got \(3,\)"),
    (lambda: slide_example().energy([0, 1, 2, 1]), r"states: expected binary units in \{0, 1\}"),
    (lambda: slide_example().gibbs_sweep(np.ones(4)), r"states: expected shape \(chains, 4\), got \(4,\)"),
    (lambda: slide_example().probability_on(np.ones(4), 4), r"unit: expected an index in \[0, 4\), got 4"),
    (lambda: slide_example().sample(10, visible=np.ones((3, 2))), r"visible: expected 1 or n_chains=10 rows, got 3"),
    (lambda: slide_example().anneal([1.0, -1.0]), r"schedule: expected a 1-D sequence of temperatures >= 0"),
    (lambda: slide_example().fit([0.5, 0.5]), r"data: expected a distribution of shape \(4,\).*got shape \(2,\)"),
    (lambda: slide_example().fit([0.5, 0.5, 0.5, 0.5]), r"data: a distribution needs entries >= 0 summing to 1"),
    (lambda: slide_example().fit(TWO_MODES[:4] * 2, method="cd"), r"method: expected 'exact' or 'sampled', got 'cd'"),
    (lambda: slide_example().sample(2, rng="seed"), r"rng: expected None, a non-negative int seed"),
])
def test_bad_input_raises_a_clear_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()
