"""The energy section's slide experiments: ``minigen eval hopfield`` and ``minigen eval bm``
(dispatched by :mod:`minigen.models.experiments`)."""
from __future__ import annotations

import os

import numpy as np

from ...checks import parse_sizes
from . import boltzmann, hopfield

def add_experiment_arguments(parser) -> None:
    """The options of ``minigen eval hopfield``: ``--capacity`` and the network ``--sizes`` it measures."""
    parser.add_argument("--capacity", action="store_true",
                        help="hopfield: measure the critical load at N = --sizes (theory: 0.138 N)")
    parser.add_argument("--sizes", default="100,200,500,1000", help="hopfield --capacity: network sizes")


def hopfield_experiment(args, out: str) -> dict:
    """``minigen eval hopfield``: the capacity experiment with ``--capacity``, else the slide example."""
    return hopfield_capacity(args, out) if args.capacity else hopfield_slide_example(out)


def bm_experiment(args, out: str) -> dict:
    """``minigen eval bm``: the Boltzmann machine slide example, seeded by ``--seed``."""
    return boltzmann_slide_example(out, seed=args.seed)


def hopfield_slide_example(out: str) -> dict:
    """Eq. EBM-4's slide example, a basin-of-attraction table and a recall figure on 8×8 letters."""
    p1, p2 = np.array([-1, -1, -1, 1]), np.array([1, 1, 1, 1])
    net = hopfield.HopfieldNetwork.from_patterns(np.stack([p1, p2]))
    p3, p4 = np.array([-1, -1, -1, 1]), np.array([-1, 1, 1, 1])    # the slide's P3 is P1 itself
    print("Hebbian weights (the slide's matrix, diagonal shown as stored: w_ii = K/N):")
    print(hopfield.hebbian_weights(np.stack([p1, p2]), zero_diagonal=False) * 4, "/ 4")
    result = {"recall": {}}
    for name, cue in (("P3", p3), ("P4", p4)):
        final = net.recall(cue)
        match = "P1" if np.array_equal(final, p1) else "P2" if np.array_equal(final, p2) else "neither"
        result["recall"][name] = {"cue": cue.tolist(), "recalled": np.asarray(final).tolist(), "equals": match}
        print(f"{name} = {cue.tolist()} -> {np.asarray(final).tolist()} ({match})")
    letters = hopfield.letter_patterns("HTOXL")
    letter_net = hopfield.HopfieldNetwork.from_patterns(letters)
    flips = list(range(0, 33, 4))
    rates = hopfield.basin_of_attraction(letter_net, letters, flips, trials=50, rng=0)
    result["basin"] = {"flipped_bits": flips, "recall_rate": np.asarray(rates).tolist()}
    print("letters H T O X L (N = 64): recall rate vs flipped bits",
          dict(zip(flips, np.round(np.asarray(rates), 2).tolist())))
    cues = hopfield.flip_bits(letters, 12, rng=1)
    result["figure"] = hopfield.plot_recall(letter_net, cues, os.path.join(out, "recall.png"), rng=2)
    return result


def hopfield_capacity(args, out: str) -> dict:
    """The capacity experiment: α_c at each N, its N → ∞ extrapolation, the recall-vs-load plot."""
    exp = hopfield.capacity_experiment(sizes=parse_sizes(args.sizes), seed=args.seed)
    for c in exp.curves:
        print(f"N = {c.n_units:>5}: alpha_c = {exp.critical_loads[c.n_units]:.4f} "
              f"(half of the stored patterns still retrieved with overlap >= 0.9), {c.seconds:.1f} s")
    theory = hopfield.THEORETICAL_CRITICAL_LOAD
    print(f"extrapolated: alpha_c(N -> inf) = {exp.extrapolated:.4f}, fit alpha_inf + {exp.slope:.3f}/sqrt(N)")
    for (a, b), load in exp.crossings.items():
        print(f"crossing of N = {a} and N = {b}: alpha_c = {load:.4f} (finite-size scaling)")
    # The estimate of the N -> inf load: where the two largest nets' curves cross.
    finite = [load for load in exp.crossings.values() if np.isfinite(load)]
    measured = finite[-1] if finite else exp.extrapolated
    print(f"measured critical load {measured:.4f}, theory {theory} (Amit, Gutfreund & Sompolinsky 1985): "
          f"{abs(measured - theory):.4f} apart")
    return {"critical_loads": {str(n): a for n, a in exp.critical_loads.items()},
            "extrapolated_critical_load": exp.extrapolated, "slope": exp.slope,
            "crossings": {f"{a}/{b}": x for (a, b), x in exp.crossings.items()},
            "measured_critical_load": measured,
            "theory": theory, "seconds": exp.seconds,
            "figure": hopfield.plot_capacity(exp, os.path.join(out, "capacity.png"))}


def boltzmann_slide_example(out: str, seed: int = 0) -> dict:
    """Eq. EBM-8's table, a chi-square test of Gibbs sampling against it, and an annealing run (EBM-9)."""
    machine = boltzmann.slide_example()
    rows = boltzmann.example_table(machine)
    print(boltzmann.format_table(rows))
    samples = machine.sample(4000, burn_in=50, n_samples=5, thin=10, rng=seed)
    counts = np.bincount(boltzmann.state_index(samples.reshape(-1, machine.n_units)), minlength=16)
    statistic, p_value = boltzmann.chi_square_test(counts, machine.joint())
    print(f"Gibbs sampling, {counts.sum()} states: chi-square = {statistic:.1f} on 15 dof, p = {p_value:.3f}")
    net = boltzmann.BoltzmannMachine.random(8, 4, weight_scale=1.0, bias_scale=1.0, rng=seed)
    trajectory = net.anneal(boltzmann.geometric_schedule(5.0, 0.05, 100), n_chains=8, rng=seed)
    figure = boltzmann.plot_annealing(trajectory, os.path.join(out, "annealing.png"),
                                      global_minimum=net.ground_state_energy())
    return {"Z": float(np.exp(machine.log_partition())),
            "p_visible": {f"{v >> 1}{v & 1}": round(float(p), 4)
                          for v, p in reversed(list(enumerate(machine.marginal_visible())))},
            "gibbs_chi_square": statistic, "gibbs_p_value": p_value, "figure": figure}
