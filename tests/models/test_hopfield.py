"""The Hopfield network against the lecture: Eq. EBM-1…EBM-5.

The slide example is reproduced exactly; the rest are properties over random
networks (hypothesis), the Numba kernel against its NumPy reference, and a
tiny version of the storage-capacity experiment.
"""
import itertools
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.kernels import reference as ref
from minigen.kernels.cpu import hopfield as cpu
from minigen.models.energy.hopfield import (SCHEMES, THEORETICAL_CRITICAL_LOAD, CapacityCurve,
                                            HopfieldNetwork, basin_of_attraction, capacity_curve,
                                            critical_load, crossing_load, extrapolate_critical_load, flip_bits,
                                            hebbian_weights, letter_patterns, plot_capacity, plot_recall,
                                            retrieval_overlap_theory)

P1, P2 = [-1, -1, -1, +1], [+1, +1, +1, +1]
P3, P4 = [-1, -1, -1, +1], [-1, +1, +1, +1]


def random_net(seed, n, thresholds=True):
    """A random symmetric network with zero diagonal (and random thresholds)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n))
    w = a + a.T
    np.fill_diagonal(w, 0.0)
    return HopfieldNetwork(w, rng.normal(size=n) if thresholds else None), rng


def spins(rng, *shape):
    return rng.choice(np.array([-1, 1]), size=shape)


def slide_rule(w, s):
    """The slide's update, ties to +1: s_i ← +1 if Σ_j w_ij s_j ≥ 0 (θ = 0), else −1; synchronous."""
    return np.where(w @ s >= 0, 1, -1)


# --------------------------------------------------------------------------- EBM-4: the slide example

@pytest.mark.equation("EBM-4")
def test_slide_weights_are_hebb_sum_and_the_network_zeroes_the_diagonal():
    # The slide prints the Hebb sum itself, diagonal K/N = 2/4 included.
    slide = np.array([[2, 2, 2, 0], [2, 2, 2, 0], [2, 2, 2, 0], [0, 0, 0, 2]]) / 4
    np.testing.assert_array_equal(hebbian_weights([P1, P2], zero_diagonal=False), slide)
    assert slide[0, 1] == (-1 * -1 + 1 * 1) / 4                     # the slide's worked w_12
    # The network uses w_ii = 0: the same matrix minus (K/N) I.
    net = HopfieldNetwork.from_patterns([P1, P2])
    np.testing.assert_array_equal(net.weights, slide - np.eye(4) * 2 / 4)


@pytest.mark.equation("EBM-4")
@pytest.mark.parametrize("scheme", SCHEMES)
def test_slide_recalls_p3_to_p1_and_p4_to_p2(scheme):
    net = HopfieldNetwork.from_patterns([P1, P2])
    np.testing.assert_array_equal(net.recall([P3, P4], scheme), [P1, P2])
    np.testing.assert_array_equal(net.recall(P4, scheme), P2)        # a single state works too


@pytest.mark.equation("EBM-4")
def test_slide_recall_holds_for_every_asynchronous_order_and_for_the_slides_own_matrix():
    net = HopfieldNetwork.from_patterns([P1, P2])
    for order in itertools.permutations(range(4)):
        s = np.array(P4)
        for i in order:
            s = net.update_unit(s, i)
        np.testing.assert_array_equal(s, P2)
        assert net.is_fixed_point(s) and net.is_fixed_point(P1)
    # Unit 4 has no connections once w_44 = 0, so its field is exactly zero and the
    # tie rule keeps it; with the slide's w_44 = 2/4 and its ≥ rule the answer is the same.
    slide = hebbian_weights([P1, P2], zero_diagonal=False)
    np.testing.assert_array_equal(net.fields([P3, P4])[:, 3], [0, 0])
    np.testing.assert_array_equal(slide_rule(slide, np.array(P3)), P1)
    np.testing.assert_array_equal(slide_rule(slide, np.array(P4)), P2)


# --------------------------------------------------------------------------- EBM-1: one update

@pytest.mark.equation("EBM-1")
def test_update_unit_matches_the_formula():
    net, rng = random_net(0, 7)
    s = spins(rng, 5, 7)
    for i in range(7):
        new = net.update_unit(s, i)
        field = s @ net.weights[i] - net.thresholds[i]
        np.testing.assert_array_equal(new[:, i], np.sign(field))
        np.testing.assert_array_equal(np.delete(new, i, axis=1), np.delete(s, i, axis=1))
    np.testing.assert_allclose(net.fields(s), s @ net.weights.T - net.thresholds)


@pytest.mark.equation("EBM-1")
def test_zero_field_keeps_the_state_where_the_slides_rule_would_flip():
    # One pattern, N = 5 odd, 3 bits agree: each agreeing unit sees a zero field.
    pattern = np.array([-1, -1, 1, 1, -1])
    net = HopfieldNetwork.from_patterns(pattern)
    s = pattern * np.array([1, 1, 1, -1, -1])
    assert net.fields(s)[0] == 0
    np.testing.assert_array_equal(net.update_unit(s, 0), s)          # tie: keep
    assert slide_rule(net.weights, s)[0] == +1 != pattern[0]          # ≥ rule: leaves the pattern
    np.testing.assert_array_equal(net.recall(s), pattern)


# --------------------------------------------------------------------------- EBM-5: energy

@pytest.mark.equation("EBM-5")
def test_energy_matches_the_double_sum():
    net, rng = random_net(1, 6)
    s = spins(rng, 4, 6)
    w, theta = net.weights, net.thresholds
    for b in range(4):
        e = -sum(w[i, j] * s[b, i] * s[b, j] for i in range(6) for j in range(i)) + theta @ s[b]
        assert net.energy(s)[b] == pytest.approx(e, abs=1e-12)
        assert net.energy(s[b]) == pytest.approx(-0.5 * s[b] @ w @ s[b] + theta @ s[b], abs=1e-12)


@pytest.mark.equation("EBM-5")
@given(seed=st.integers(0, 2**31), n=st.integers(2, 12), units=st.lists(st.integers(0, 11), max_size=60))
def test_energy_never_increases_under_asynchronous_updates(seed, n, units):
    net, rng = random_net(seed, n)
    s = spins(rng, 3, n)
    energy = net.energy(s)
    for i in units:
        s = net.update_unit(s, i % n)
        new = net.energy(s)
        assert np.all(new <= energy + 1e-12)
        energy = new


# --------------------------------------------------------------------------- EBM-3 / EBM-4: stored patterns

@pytest.mark.equation("EBM-3")
@given(seed=st.integers(0, 2**31), n=st.integers(1, 40))
def test_a_single_stored_pattern_is_a_fixed_point(seed, n):
    pattern = spins(np.random.default_rng(seed), n)
    net = HopfieldNetwork.from_patterns(pattern)
    assert net.is_fixed_point(pattern) and net.is_fixed_point(-pattern)
    for scheme in SCHEMES:
        np.testing.assert_array_equal(net.run(pattern, scheme).states, pattern)


@pytest.mark.equation("EBM-4")
@given(seed=st.integers(0, 2**31), n=st.integers(100, 300), data=st.data())
def test_several_random_patterns_at_low_load_are_fixed_points(seed, n, data):
    # Crosstalk noise has std ≈ sqrt(p/N) ≤ 0.14 against a signal of 1: a failing
    # bit is a 7-sigma event.
    p = data.draw(st.integers(1, n // 50))
    patterns = spins(np.random.default_rng(seed), p, n)
    assert np.all(HopfieldNetwork.from_patterns(patterns).is_fixed_point(patterns))


@pytest.mark.equation("EBM-4")
@pytest.mark.parametrize("n", [4, 16, 64])
def test_orthogonal_patterns_are_fixed_points_up_to_n_minus_one(n):
    # Rows of a Hadamard matrix: W P^k = (N − p)/N · P^k exactly, so any p < N are fixed points.
    h = np.array([[1]])
    while len(h) < n:
        h = np.block([[h, h], [h, -h]])
    patterns = h[1:]                                                 # N − 1 patterns
    assert np.all(HopfieldNetwork.from_patterns(patterns).is_fixed_point(patterns))


@pytest.mark.equation("EBM-3")
@given(seed=st.integers(0, 2**31), n=st.integers(1, 40), data=st.data())
def test_more_than_half_the_bits_right_recalls_the_single_pattern(seed, n, data):
    k = data.draw(st.integers(0, (n - 1) // 2))                       # flipped bits < N/2
    scheme = data.draw(st.sampled_from(SCHEMES))
    rng = np.random.default_rng(seed)
    pattern = spins(rng, n)
    cues = flip_bits(np.tile(pattern, (4, 1)), k, rng)
    assert np.all((cues != pattern).sum(axis=1) == k)
    result = HopfieldNetwork.from_patterns(pattern).run(cues, scheme, rng=rng)
    assert np.all(result.converged)
    np.testing.assert_array_equal(result.states, np.tile(pattern, (4, 1)))


# --------------------------------------------------------------------------- EBM-2: update schemes

@pytest.mark.equation("EBM-2")
@given(seed=st.integers(0, 2**31), n=st.integers(1, 12))
def test_asynchronous_i_stops_at_a_fixed_point(seed, n):
    net, rng = random_net(seed, n)
    result = net.run(spins(rng, 5, n), "async1", max_steps=1000, rng=rng)
    assert np.all(result.converged) and not np.any(result.cycled)
    assert np.all(net.is_fixed_point(result.states))
    for i in range(n):                                                # no unit would change
        np.testing.assert_array_equal(net.update_unit(result.states, i), result.states)


@pytest.mark.equation("EBM-2")
def test_synchronous_updates_can_two_cycle_and_it_is_reported():
    net = HopfieldNetwork([[0.0, 1.0], [1.0, 0.0]])                   # two units that want to agree
    result = net.run([[1, -1], [1, 1]], "synchronous")
    np.testing.assert_array_equal(result.cycled, [True, False])
    np.testing.assert_array_equal(result.converged, [False, True])
    np.testing.assert_array_equal(result.states, [[1, -1], [1, 1]])   # back where it started
    np.testing.assert_array_equal(result.steps, [2, 0])
    assert net.run([1, -1], "async1").converged                      # one unit at a time: no cycle


@pytest.mark.equation("EBM-2")
def test_asynchronous_ii_with_rate_one_is_synchronous_and_small_rates_converge():
    net, rng = random_net(3, 10)
    s = spins(rng, 6, 10)
    np.testing.assert_array_equal(net.step(s, "async2", rate=1.0), net.step(s, "synchronous"))
    result = net.run(s, "async2", max_steps=2000, rate=0.1, rng=rng)
    assert np.all(result.converged) and np.all(net.is_fixed_point(result.states))


@pytest.mark.equation("EBM-2")
def test_max_steps_guards_the_run():
    net, rng = random_net(4, 30)
    s = spins(rng, 8, 30)
    for scheme in SCHEMES:
        result = net.run(s, scheme, max_steps=0)
        np.testing.assert_array_equal(result.states, s)
        assert np.all(result.steps == 0) and not np.any(result.converged)
    result = net.run(s, "async1", max_steps=1)
    assert np.all(result.steps <= 1)


# --------------------------------------------------------------------------- the kernel

@pytest.mark.equation("EBM-2")
@given(seed=st.integers(0, 2**31), n=st.integers(1, 24), b=st.integers(1, 5), sweeps=st.integers(0, 6),
       hebbian=st.booleans())
@settings(max_examples=40)
def test_numba_sweeps_match_the_reference_exactly(seed, n, b, sweeps, hebbian):
    rng = np.random.default_rng(seed)
    if hebbian:                                  # many exact ties: fields are multiples of 1/N
        w, theta = hebbian_weights(spins(rng, int(rng.integers(1, 6)), n)), np.zeros(n)
    else:
        net, _ = random_net(seed, n)
        w, theta = net.weights, net.thresholds
    s = spins(rng, b, n).astype(np.float64)
    units = rng.integers(0, n, size=(b, sweeps, n))
    want = ref.hopfield_async_sweeps(s, w, theta, units)
    got = cpu.hopfield_async_sweeps(s, w, theta, units)
    for a, g in zip(want, got):
        np.testing.assert_array_equal(g, a)
    assert np.all(want[1] <= sweeps)


@pytest.mark.gpu
def test_gpu_sweeps_match_the_reference_exactly():
    import cupy

    from minigen.kernels.gpu import hopfield as gpu
    rng = np.random.default_rng(0)
    for n, b in [(7, 3), (300, 20)]:
        w, theta = hebbian_weights(spins(rng, max(1, n // 10), n)), rng.normal(size=n) * 0.01
        s = spins(rng, b, n).astype(np.float64)
        units = rng.integers(0, n, size=(b, 5, n))
        want = ref.hopfield_async_sweeps(s, w, theta, units)
        got = gpu.hopfield_async_sweeps(*(cupy.asarray(a) for a in (s, w, theta, units)))
        for a, g in zip(want, got):
            np.testing.assert_array_equal(cupy.asnumpy(g), a)


# --------------------------------------------------------------------------- basins and capacity

@pytest.mark.equation("EBM-4")
def test_basin_of_attraction_of_the_letters():
    letters = letter_patterns()
    net = HopfieldNetwork.from_patterns(letters)
    rates = basin_of_attraction(net, letters, [0, 4, 40, 64], trials=10)
    assert rates[0] == 1.0 and rates[1] >= 0.9
    assert rates[2] == 0.0 and rates[3] == 0.0                        # −P is an attractor too


@pytest.mark.equation("EBM-4")
def test_theory_puts_the_critical_load_at_0138_with_overlap_0967():
    m = retrieval_overlap_theory([0.05, 0.1379, 0.1381])
    assert m[0] > 0.999 and m[1] == pytest.approx(0.967, abs=0.003) and np.isnan(m[2])
    assert THEORETICAL_CRITICAL_LOAD == 0.138


@pytest.mark.equation("EBM-4")
def test_tiny_capacity_curve_falls_across_the_critical_load():
    curve = capacity_curve(100, [0.05, 0.1, 0.3], trials=4, seed=0)
    np.testing.assert_array_equal(curve.n_patterns, [5, 10, 30])
    np.testing.assert_array_equal(curve.tests, [20, 40, 120])
    assert curve.retrieved[0] == 1.0 and curve.retrieved[2] < 0.3
    assert np.all(np.diff(curve.mean_overlap) < 0) and not curve.unconverged.any()
    assert critical_load(curve) == pytest.approx(0.1 + (curve.retrieved[1] - 0.5) * 0.2
                                                 / (curve.retrieved[1] - curve.retrieved[2]))


@pytest.mark.equation("EBM-4")
def test_measured_critical_load_extrapolates_to_0138():
    # A small version of `python -m minigen.models.energy.hopfield` (~0.1 s per size):
    # the 50 % point drifts down like 1/sqrt(N) towards the theory. From these small
    # sizes the intercept lands at 0.124–0.130 over seeds; N up to 1000 gives 0.133.
    loads = np.round(np.arange(0.12, 0.2801, 0.02), 3)
    alpha_c = [critical_load(capacity_curve(n, loads, trials=3000 // n, seed=n)) for n in (100, 200, 400)]
    assert alpha_c[0] > alpha_c[1] > alpha_c[2] > THEORETICAL_CRITICAL_LOAD
    extrapolated, _ = extrapolate_critical_load([100, 200, 400], alpha_c)
    assert abs(extrapolated - THEORETICAL_CRITICAL_LOAD) < 0.02


def test_critical_load_and_extrapolation_on_known_numbers():
    curve = CapacityCurve(100, np.array([0.1, 0.2, 0.3]), np.array([10, 20, 30]), np.ones(3),
                          np.ones(3), np.array([1.0, 0.8, 0.2]), np.zeros(3), 0.9)
    assert critical_load(curve) == pytest.approx(0.25)
    sizes = np.array([100, 400, 1600])
    assert extrapolate_critical_load(sizes, 0.138 + 0.9 / np.sqrt(sizes)) == pytest.approx((0.138, 0.9))
    small = CapacityCurve(100, curve.loads, curve.n_patterns, np.ones(3), np.ones(3),
                          np.array([0.9, 0.7, 0.3]), np.zeros(3), 0.9)
    large = CapacityCurve(400, curve.loads, curve.n_patterns, np.ones(3), np.ones(3),
                          np.array([1.0, 0.6, 0.0]), np.zeros(3), 0.9)
    assert crossing_load(small, large) == pytest.approx(0.15)         # gaps −0.1 → +0.1


# --------------------------------------------------------------------------- figures

def test_figures_are_written_as_png(tmp_path):
    import matplotlib.image

    curve = capacity_curve(50, [0.05, 0.3], trials=2, seed=0)
    letters = letter_patterns("HTO")
    net = HopfieldNetwork.from_patterns(letters)
    for path in (plot_capacity([curve], tmp_path / "capacity.png"),
                 plot_recall(net, flip_bits(letters, 12, 0), tmp_path / "recall.png", (8, 8), rng=0)):
        assert matplotlib.image.imread(path).ndim == 3
    assert sorted(os.listdir(tmp_path)) == ["capacity.png", "recall.png"]   # no temp files left


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize("call, match", [
    (lambda net: net.run([1, 1, 1]), r"states: expected shape .* N = 4, got shape \(3,\)"),
    (lambda net: net.run(np.ones((2, 2, 4))), r"states: .* got shape \(2, 2, 4\)"),
    (lambda net: net.energy([1, 0, 1, 1]), r"states: expected values in \{-1, \+1\}, got \[0\]"),
    (lambda net: net.fields([True, False, True, True]), r"states: expected numbers .* got dtype bool"),
    (lambda net: net.run([1, 1, 1, 1], scheme="random"), r"scheme: expected one of"),
    (lambda net: net.run([1, 1, 1, 1], "async2", rate=0), r"rate: expected a probability"),
    (lambda net: net.run([1, 1, 1, 1], max_steps=-1), r"max_steps: expected an integer >= 0, got -1"),
    (lambda net: net.update_unit([1, 1, 1, 1], 4), r"unit: expected an int in \[0, 4\), got 4"),
    (lambda net: net.run([1, 1, 1, 1], rng="seed"), r"rng: expected"),
    (lambda net: flip_bits([1, 1, 1, 1], 5), r"k: expected at most N = 4 bits to flip, got 5"),
])
def test_bad_arguments_raise_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(HopfieldNetwork.from_patterns([P1, P2]))


@pytest.mark.parametrize("weights, thresholds, match", [
    (np.zeros((3, 4)), None, r"weights: expected a square \(N, N\) matrix, got shape \(3, 4\)"),
    ([[0, 1], [2, 0]], None, r"weights: expected a symmetric matrix .* = 1"),
    (np.outer(P1, P1) / 4 + np.outer(P2, P2) / 4, None, r"weights: expected a zero diagonal .* = 0.5"),   # Hebb's sum
    ([[0, np.nan], [np.nan, 0]], None, r"weights: expected finite values"),
    (np.zeros((4, 4)), np.zeros(3), r"thresholds: expected a scalar or shape \(4,\), got shape \(3,\)"),
])
def test_bad_networks_raise_clear_errors(weights, thresholds, match):
    with pytest.raises(ValueError, match=match):
        HopfieldNetwork(weights, thresholds)


def test_bad_patterns_and_loads_raise_clear_errors():
    with pytest.raises(ValueError, match=r"patterns: expected values in \{-1, \+1\}, got \[0, 2\]"):
        HopfieldNetwork.from_patterns([[1, 0, 2]])
    with pytest.raises(ValueError, match=r"loads: expected a non-empty 1-D array of positive loads"):
        capacity_curve(50, [0.1, -0.1])
    flat = CapacityCurve(50, np.array([0.1, 0.2]), np.array([5, 10]), np.ones(2), np.ones(2),
                         np.ones(2), np.zeros(2), 0.9)
    with pytest.raises(ValueError, match=r"curve: expected the retrieved fraction .* widen the loads"):
        critical_load(flat)
    with pytest.raises(ValueError, match=r"letters: expected"):
        letter_patterns("Q")
