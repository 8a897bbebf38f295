"""Experiments run as commands: ``minigen eval hopfield | bm | planar | gan-modes | kill-resume``.

These are not trained runs but small self-contained experiments, so ``eval``
takes their name in place of a run folder. Each prints its numbers, writes
them as JSON and draws its figures in ``--out`` (default ``runs/<name>``).
"""
from __future__ import annotations

import os

__all__ = ["EXPERIMENTS", "add_experiment_arguments", "run_experiment"]


def _hopfield(args, out):
    from .energy.experiments import hopfield_experiment
    return hopfield_experiment(args, out)


def _bm(args, out):
    from .energy.experiments import bm_experiment
    return bm_experiment(args, out)


def _planar(args, out):
    from ..checks import parse_sizes
    from .flows import planar_potentials_experiment
    return planar_potentials_experiment(out, lengths=parse_sizes(args.flow_lengths), steps=args.flow_steps,
                                        seed=args.seed)


def _gan_modes(args, out):
    from .gans.modes import gan_modes_experiment
    return gan_modes_experiment(args, out)


def _kill_resume(args, out):
    from ..reliability import kill_resume_experiment
    return kill_resume_experiment(args, out)


EXPERIMENTS = {"hopfield": _hopfield, "bm": _bm, "planar": _planar, "gan-modes": _gan_modes,
               "kill-resume": _kill_resume}


def add_experiment_arguments(parser) -> None:
    """The options of ``minigen eval hopfield | bm | planar | gan-modes | kill-resume``, and ``--out``."""
    from .energy.experiments import add_experiment_arguments as add_energy_arguments
    add_energy_arguments(parser)
    parser.add_argument("--flow-lengths", default="2,8,32", help="planar: numbers of planar flows K to fit")
    parser.add_argument("--flow-steps", type=int, default=4000, help="planar: Adam steps per fit (default: 4000)")
    from .gans.modes import add_gan_modes_arguments
    add_gan_modes_arguments(parser)
    from ..reliability import add_kill_resume_arguments
    add_kill_resume_arguments(parser)
    parser.add_argument("--out", help="folder for the JSON and figures (default: runs/<name>)")


def run_experiment(name: str, args) -> dict:
    """Run experiment ``name`` (a key of :data:`EXPERIMENTS`) into ``--out`` (default ``runs/<name>``, created
    if missing); returns its results."""
    out = args.out or os.path.join("runs", name)
    os.makedirs(out, exist_ok=True)
    return EXPERIMENTS[name](args, out)
