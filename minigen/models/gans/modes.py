r"""Mode collapse, measured: ``minigen eval gan-modes`` (Eq. GAN-5).

The benchmark of Metz et al. (2017), VEEGAN and PacGAN (Lin et al. 2018, Table 1):
a GAN with MLP players learns a ring of 8 or a grid of 25 Gaussians; 2500 of its
samples are scored by :func:`minigen.metrics.mode_coverage` (modes captured,
high-quality samples within 3σ of a mode, reverse KL of the mode histogram),
averaged over seeds. Every cell of the table is one ``minigen train gan`` run,
with the same options, budget and seeds for every method; only the remedy
differs:

* ``gan`` — Algorithm 1 as it is;
* ``minibatch`` — minibatch discrimination in D (Salimans et al. 2016);
* ``replay`` — experience replay of past fakes (the slide's remedy);
* ``pacgan2`` — packing two samples per discriminator input (Lin et al. 2018).

Runs live in ``OUT/runs/<data>-<method>-s<seed>``. Each run is scored as soon as
it finishes: ``modes.json`` (its scores) and ``samples.npy`` (the scored points)
are all the table and the figure need, so an interrupted experiment picks up
where it stopped (scored runs are kept, unfinished ones resumed), and the two
small files of a run are enough to rebuild its cell without the checkpoint.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["DEFAULT_METHODS", "METHODS", "add_gan_modes_arguments", "gan_modes_experiment"]

#: the remedies, as ``minigen train gan`` options
METHODS = {
    "gan": [],
    "minibatch": ["--minibatch-kernels", "5"],
    "replay": ["--replay", "0.5"],
    "pacgan2": ["--packing", "2"],
    "pacgan4": ["--packing", "4"],      # PacGAN's Table 1 packs up to 4 (the batch of 100 must divide)
}
#: the table's rows by default: the plain GAN, the slide's two remedies and PacGAN2
DEFAULT_METHODS = ("gan", "minibatch", "replay", "pacgan2")


def add_gan_modes_arguments(parser) -> None:
    """The options of ``minigen eval gan-modes``: datasets, methods, seeds, iterations and extra options of
    its runs, and how many are trained at once."""
    parser.add_argument("--gan-data", default="ring8,grid25", help="gan-modes: datasets (default: ring8,grid25)")
    parser.add_argument("--gan-methods", default=",".join(DEFAULT_METHODS),
                        help=f"gan-modes: methods among {', '.join(METHODS)} (default: "
                             f"{','.join(DEFAULT_METHODS)})")
    parser.add_argument("--gan-seeds", type=int, default=10, help="gan-modes: seeds per cell (default: 10)")
    parser.add_argument("--gan-steps", type=int, default=20000,
                        help="gan-modes: iterations of Algorithm 1 per run (default: 20000)")
    parser.add_argument("--gan-options", default="--schedule cosine",
                        help="gan-modes: extra `minigen train gan` options for every run (default: "
                             "\"--schedule cosine\": the learning rate decays to 0 over the run)")
    parser.add_argument("--jobs", type=int, default=2, help="gan-modes: runs trained at once, one thread each "
                                                            "(default: 2)")
    parser.add_argument("--gan-merge", metavar="DIR", help="gan-modes: a folder of scored runs shared across machines "
                                                          "and sessions: each DIR/<run>/modes.json, with its samples.npy, "
                                                          "is taken as that run finished, and each run scored here is "
                                                          "added to DIR as soon as it is scored (samples of seed 0 only, "
                                                          "which the figure uses)")


def _train_command(data, method, seed, steps, runs_dir, extra, resume) -> list:
    return [sys.executable, "-m", "minigen.cli", "train", "gan", "--data", data, "--steps", str(steps),
            "--seed", str(seed), "--runs-dir", runs_dir, "--name", f"{data}-{method}-s{seed}",
            "--checkpoint-every", str(max(1, steps // 4)), "--eval-every", str(max(1, steps // 10)),
            "--log-every", "250", "--no-progress",
            *METHODS[method], *shlex.split(extra), *(["--resume"] if resume else [])]


def _train_and_score(job) -> None:
    """Train one run (a fresh process, one thread), then score it into its ``modes.json`` and ``samples.npy``
    (and copy the scores into the shared folder, when there is one)."""
    cmd, run_dir, seed, shared = job
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        raise RuntimeError(f"gan-modes: `{shlex.join(cmd[2:])}` failed: {done.stderr.strip()[-500:]}")
    _score(run_dir, seed)
    if shared:
        _copy_scores(run_dir, os.path.join(shared, os.path.basename(run_dir)), samples=seed == 0)


def _score(run_dir, seed) -> None:
    """Score a trained run on :data:`~.recipes.SAMPLES_SCORED` samples drawn with seed ``1000 + seed``:
    writes ``modes.json`` last, so a run with that file is complete."""
    from ... import random as mg_random
    from ...data import get_toy
    from ...metrics import mode_coverage
    from ...runs import load_run
    from ...train import write_json
    from .recipes import SAMPLES_SCORED
    _, cfg, model = load_run(run_dir)
    mg_random.manual_seed(1000 + seed)
    samples = np.asarray(model.sample(SAMPLES_SCORED), np.float32)
    toy = get_toy(cfg["data"])
    np.save(os.path.join(run_dir, "samples.npy"), samples)
    write_json(os.path.join(run_dir, "modes.json"), mode_coverage(samples, toy.mode_centers, toy.mode_std))


def _copy_scores(src: str, dst: str, samples: bool = True) -> None:
    """Copy a scored run's ``samples.npy`` (when present and wanted) and ``modes.json`` from ``src`` to
    ``dst``; ``modes.json`` last, so a folder holding it is complete."""
    import shutil
    os.makedirs(dst, exist_ok=True)
    if samples and os.path.exists(os.path.join(src, "samples.npy")):
        shutil.copyfile(os.path.join(src, "samples.npy"), os.path.join(dst, "samples.npy"))
    shutil.copyfile(os.path.join(src, "modes.json"), os.path.join(dst, "modes.json"))


def _merge_scored(source: str, runs_dir: str, cells) -> int:
    """Copy the scores (``modes.json``, ``samples.npy``) of the cells' runs found in ``source`` into
    ``runs_dir`` where that run is not scored yet; returns how many were taken."""
    taken = 0
    for d, m, s in cells:
        name = f"{d}-{m}-s{s}"
        src, dst = os.path.join(source, name), os.path.join(runs_dir, name)
        if os.path.exists(os.path.join(src, "modes.json")) and not os.path.exists(os.path.join(dst, "modes.json")):
            _copy_scores(src, dst)
            taken += 1
    return taken


def gan_modes_experiment(args, out: str) -> dict:
    """``minigen eval gan-modes``: trains the runs not scored yet (``--jobs`` at a time, interrupted ones
    resumed), scores each, prints the table of means and standard deviations over seeds and plots the
    seed-0 samples; returns the table, every run's scores and the figure."""
    datasets = [n.strip() for n in args.gan_data.split(",") if n.strip()]
    methods = [n.strip() for n in args.gan_methods.split(",") if n.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"--gan-methods: unknown {unknown}; choose among {list(METHODS)}")
    if args.gan_seeds < 1 or args.gan_steps < 1 or args.jobs < 1:
        raise ValueError("--gan-seeds, --gan-steps and --jobs must be >= 1")
    runs_dir = os.path.join(out, "runs")
    cells = [(d, m, s) for d in datasets for m in methods for s in range(args.gan_seeds)]
    if getattr(args, "gan_merge", None):
        print(f"gan-modes: {_merge_scored(args.gan_merge, runs_dir, cells)} scored runs taken from {args.gan_merge}")
    todo = []
    for d, m, s in sorted(cells, key=lambda cell: cell[2]):   # seed by seed: a whole table early, then spread
        run_dir = os.path.join(runs_dir, f"{d}-{m}-s{s}")
        if not os.path.exists(os.path.join(run_dir, "modes.json")):
            todo.append((_train_command(d, m, s, args.gan_steps, runs_dir, args.gan_options,
                                        resume=os.path.exists(os.path.join(run_dir, "checkpoint.npz"))), run_dir, s,
                         getattr(args, "gan_merge", None)))
    print(f"gan-modes: {len(cells)} runs, {len(todo)} to train ({args.jobs} at a time)", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        for i, _ in enumerate(pool.map(_train_and_score, todo), 1):
            if i % max(1, len(todo) // 20) == 0 or i == len(todo):
                print(f"  trained {i}/{len(todo)}", flush=True)

    per_run, figure_samples = {}, {}
    for d, m, s in cells:
        run_dir = os.path.join(runs_dir, f"{d}-{m}-s{s}")
        with open(os.path.join(run_dir, "modes.json"), encoding="utf-8") as fh:
            per_run[f"{d}-{m}-s{s}"] = json.load(fh)
        if s == 0:
            points = os.path.join(run_dir, "samples.npy")
            figure_samples[(d, m)] = np.load(points, allow_pickle=False)
    table = {}
    for d in datasets:
        for m in methods:
            rows = [per_run[f"{d}-{m}-s{s}"] for s in range(args.gan_seeds)]
            cell = {}
            for key in ("modes", "high_quality", "reverse_kl"):
                v = np.array([r[key] for r in rows], np.float64)
                v = v[np.isfinite(v)]       # the reverse KL is undefined for a run with no high-quality sample
                cell[key] = {"mean": float(v.mean()) if v.size else float("nan"),
                             "std": float(v.std()) if v.size else float("nan"), "runs": int(v.size)}
            table[f"{d}/{m}"] = cell
    _print_table(table, datasets, methods, args.gan_seeds)
    figure = _plot(figure_samples, datasets, methods, os.path.join(out, "gan_modes.png"))
    return {"steps": args.gan_steps, "seeds": args.gan_seeds, "options": args.gan_options, "table": table,
            "runs": per_run, "figure": figure}


def _print_table(table, datasets, methods, seeds) -> None:
    from ...data import get_toy
    print(f"\n| data | method | modes (of K) | high-quality samples | reverse KL |   ({seeds} seeds, mean ± std)")
    print("|---|---|---|---|---|")
    for d in datasets:
        k = len(get_toy(d).mode_centers)
        for m in methods:
            c = table[f"{d}/{m}"]
            print(f"| {d} | {m} | {c['modes']['mean']:.1f} ± {c['modes']['std']:.1f} / {k} "
                  f"| {100 * c['high_quality']['mean']:.1f} ± {100 * c['high_quality']['std']:.1f} % "
                  f"| {c['reverse_kl']['mean']:.2f} ± {c['reverse_kl']['std']:.2f} |")


def _plot(samples, datasets, methods, path) -> str:
    from matplotlib.figure import Figure

    from ...data import get_toy
    from ...viz import save_figure
    fig = Figure(figsize=(3 * len(methods), 3 * len(datasets)), layout="constrained")
    axes = fig.subplots(len(datasets), len(methods), squeeze=False)
    for i, d in enumerate(datasets):
        toy = get_toy(d)
        (x0, x1), (y0, y1) = toy.bounds
        for j, m in enumerate(methods):
            ax = axes[i][j]
            pts = samples[(d, m)]
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4, linewidths=0)
            ax.scatter(toy.mode_centers[:, 0], toy.mode_centers[:, 1], marker="x", s=30, color="tab:red")
            ax.set_xlim(x0 - 0.5, x1 + 0.5)
            ax.set_ylim(y0 - 0.5, y1 + 0.5)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{d}: {m}", fontsize="small")
    return save_figure(fig, path)
