"""``minigen eval kill-resume``: training runs killed with SIGKILL at random moments, resumed each time,
must end exactly where an uninterrupted run ends.

For each family the experiment trains the same small run twice from the same seed: once straight
through, once under fire — started, SIGKILLed at a random moment (during start-up or mid-step; once a
checkpoint exists, every other kill waits for the next one's temp file and strikes in the middle of
writing it),
checked, restarted with ``--resume``, and so on ``--kills`` times before it may finish. After every kill the checkpoint on disk must load (atomic writes: a
kill mid-write leaves the previous one intact, and only a temp file behind). At the end every array
of the two final checkpoints — model, optimizer moments, EMA, schedule, the family's own state
(persistent chains, replay buffer) — and every row of ``metrics.jsonl`` must be equal, bit for bit.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

__all__ = ["FAMILIES", "add_kill_resume_arguments", "kill_resume_experiment", "kill_resume_trial"]

#: small runs of three families with different state to restore: EMA weights and a cosine schedule;
#: a GAN's k discriminator steps and its replay buffer; an RBM's persistent Gibbs chains.
FAMILIES = {
    "vae": ["vae", "--data", "digits", "--binarize", "dynamic", "--latent", "4", "--hidden", "32",
            "--batch-size", "32", "--schedule", "cosine", "--ema", "0.99", "--steps", "1500",
            "--checkpoint-every", "50"],
    "gan": ["gan", "--data", "ring8", "--g-hidden", "32", "--d-hidden", "32", "--maxout", "2", "--k", "2",
            "--replay", "0.5", "--batch-size", "64", "--steps", "1200", "--checkpoint-every", "50"],
    "rbm": ["rbm", "--data", "digits", "--binarize", "dynamic", "--hidden", "32", "--persistent",
            "--batch-size", "32", "--steps", "3000", "--checkpoint-every", "100"],
}


def add_kill_resume_arguments(parser) -> None:
    """The options of ``minigen eval kill-resume``."""
    parser.add_argument("--kills", type=int, default=10, help="kill-resume: SIGKILLs per run (default: 10)")
    parser.add_argument("--kill-families", default=",".join(FAMILIES),
                        help=f"kill-resume: families among {', '.join(FAMILIES)} (default: all)")


def _start(family: str, runs_dir: str, name: str, seed: int, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "minigen.cli", "train", *FAMILIES[family], "--seed", str(seed),
           "--runs-dir", runs_dir, "--name", name, "--log-every", "10", "--no-progress",
           *(["--resume"] if resume else [])]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)


def _finish(process: subprocess.Popen, what: str) -> None:
    _, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"kill-resume: the {what} run failed: {err.strip().splitlines()[-1:]}")


def _flatten(tree, prefix="") -> dict:
    """Every array (and number) of a checkpoint tree, by its path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flatten(sub, f"{prefix}/{key}").items()}
    if isinstance(tree, (list, tuple)):
        return {k: v for i, sub in enumerate(tree) for k, v in _flatten(sub, f"{prefix}/{i}").items()}
    return {prefix: np.asarray(getattr(tree, "data", tree))}


def _rows(run_dir: str) -> list:
    """The rows of a run's ``metrics.jsonl`` without their wall-clock ``time``."""
    from .viz import read_jsonl
    return [{k: v for k, v in row.items() if k != "time"} for row in read_jsonl(os.path.join(run_dir, "metrics.jsonl"))]


def kill_resume_trial(family: str, kills: int, out: str, seed: int = 0) -> dict:
    """Train ``family``'s run straight and under ``kills`` random SIGKILLs; returns what happened."""
    from .serialization import load
    rng = np.random.default_rng(seed)
    runs_dir = os.path.join(out, "runs")
    for name in ("straight", "killed"):
        shutil.rmtree(os.path.join(runs_dir, f"{family}-{name}"), ignore_errors=True)
    started = time.perf_counter()
    process = _start(family, runs_dir, f"{family}-straight", seed, resume=False)
    config = os.path.join(runs_dir, f"{family}-straight", "config.json")
    while not os.path.exists(config) and process.poll() is None:
        time.sleep(0.01)
    startup = time.perf_counter() - started                     # imports and data, before the first step
    _finish(process, f"uninterrupted {family}")
    wall = time.perf_counter() - started
    life = startup + 2.0 * (wall - startup) / kills             # the longest a life lasts before its kill

    run_dir = os.path.join(runs_dir, f"{family}-killed")
    checkpoint = os.path.join(run_dir, "checkpoint.npz")
    events, resume = [], False
    while len(events) < kills:
        process = _start(family, runs_dir, f"{family}-killed", seed, resume)
        resume = True
        deadline = time.perf_counter() + rng.uniform(0.0, life)
        if len(events) % 2 and os.path.exists(checkpoint):
            # every other kill aims at the worst moment: a checkpoint half written over the last one
            while time.perf_counter() < deadline + life and process.poll() is None:
                if glob.glob(os.path.join(glob.escape(run_dir), ".checkpoint.*.tmp*")):
                    break
                time.sleep(0.0005)
        else:                           # the others anywhere: start-up, a step, a write
            time.sleep(max(0.0, deadline - time.perf_counter()))
        if process.poll() is not None:                           # it finished first: start over, same seed
            _finish(process, f"killed {family}")
            shutil.rmtree(run_dir)
            events, resume = [], False
            continue
        process.send_signal(signal.SIGKILL)
        process.wait()
        temp_files = glob.glob(os.path.join(run_dir, ".checkpoint.*.tmp*"))
        step = int(load(checkpoint)["step"]) if os.path.exists(checkpoint) else None   # must load
        events.append({"checkpoint_step": step, "mid_write": bool(temp_files)})
    process = _start(family, runs_dir, f"{family}-killed", seed, resume=True)
    _finish(process, f"resumed {family}")

    a = _flatten(load(os.path.join(runs_dir, f"{family}-straight", "checkpoint.npz"))["state"])
    b = _flatten(load(checkpoint)["state"])
    differing = sorted(k for k in a.keys() | b.keys()
                       if k not in a or k not in b or a[k].shape != b[k].shape or not np.array_equal(a[k], b[k]))
    return {"family": family, "command": "minigen train " + " ".join(FAMILIES[family]),
            "kills": len(events), "kills_mid_checkpoint_write": sum(e["mid_write"] for e in events),
            "kills_before_the_first_checkpoint": sum(e["checkpoint_step"] is None for e in events),
            "checkpoint_steps_after_kills": [e["checkpoint_step"] for e in events],
            "arrays_compared": len(a), "arrays_differing": differing,
            "metrics_rows_equal": _rows(run_dir) == _rows(os.path.join(runs_dir, f"{family}-straight")),
            "temp_files_left": len(glob.glob(os.path.join(run_dir, ".*.tmp*"))),
            "uninterrupted_seconds": round(wall, 1), "startup_seconds": round(startup, 1)}


def kill_resume_experiment(args, out: str) -> dict:
    """``minigen eval kill-resume``: :func:`kill_resume_trial` for each family; prints a table, writes JSON."""
    from .train import write_json
    families = [f.strip() for f in args.kill_families.split(",") if f.strip()]
    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise ValueError(f"--kill-families: unknown {unknown}; choose among {sorted(FAMILIES)}")
    if args.kills < 1:
        raise ValueError(f"--kills must be at least 1, got {args.kills}")
    results = []
    print(f"{'family':<7} {'kills':>5} {'mid-write':>9} {'pre-ckpt':>8} {'arrays':>6} {'differ':>6} "
          f"{'metrics':>7} {'temp left':>9}")
    for family in families:
        r = kill_resume_trial(family, args.kills, out, seed=args.seed)
        results.append(r)
        print(f"{family:<7} {r['kills']:>5} {r['kills_mid_checkpoint_write']:>9} "
              f"{r['kills_before_the_first_checkpoint']:>8} {r['arrays_compared']:>6} "
              f"{len(r['arrays_differing']):>6} {'equal' if r['metrics_rows_equal'] else 'DIFFER':>7} "
              f"{r['temp_files_left']:>9}")
    write_json(os.path.join(out, "kill_resume.json"), results)
    failed = [r["family"] for r in results if r["arrays_differing"] or not r["metrics_rows_equal"]]
    if failed:
        raise RuntimeError(f"kill-resume: resumed runs differ from uninterrupted ones: {failed}")
    return {"families": results}
