"""The training loop — one for every model family.

A run lives in ``runs/<name>/``::

    config.json        what was asked for (the command line, as JSON)
    metrics.jsonl      one JSON object per logged step: {"step", "epoch", "time", ...}
    checkpoint.npz     model, optimizer, scheduler, data position and RNG state
    samples_<step>.png sample grids;  loss.png  the curves of metrics.jsonl

Most models only expose ``loss(batch) -> (loss, metrics)``; the default step
does ``zero_grad → backward → (clip) → step → scheduler → EMA``. Families
with their own loop (a GAN's k discriminator steps, an RBM's contrastive
divergence) pass ``step_fn(batch) -> metrics`` instead and list whatever they
keep between steps in ``state`` so that it is checkpointed too.

**Resuming is exact.** A checkpoint holds everything the next step depends
on: every ``state_dict``, minigen's RNG state, the loader's epoch and position
(its shuffles and transforms are seeded by (seed, epoch, batch), not by
history) and the half-filled logging window. A run killed at any moment —
even by SIGKILL between two checkpoints — and resumed with ``resume=True``
repeats the lost steps identically and ends with the parameters an
uninterrupted run would have had. Rows of ``metrics.jsonl`` written after the
checkpoint are dropped on resume, so the curve has no duplicates.

Checkpoints are ``mg.save`` archives (NumPy ``.npz``, no pickle), written
atomically: a crash mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import time
from typing import Callable

import numpy as np

from . import random as mg_random
from .files import atomic_write_text
from .serialization import load, save

__all__ = ["Trainer", "RunExistsError", "NonFiniteError", "write_json", "append_jsonl"]

CHECKPOINT = "checkpoint.npz"


class RunExistsError(RuntimeError):
    """A run folder already holds a checkpoint and ``resume`` was not asked for."""


class NonFiniteError(FloatingPointError, RuntimeError):
    """A training step produced a NaN or infinite metric (the message names the step and the tensors)."""


def write_json(path: str, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, default=_json_default) + "\n"
    atomic_write_text(path, text)


def append_jsonl(path: str, row: dict) -> None:
    """Append one JSON line and flush it to disk (a killed run loses at most a partial last line)."""
    with open(path, "a") as f:
        f.write(json.dumps(row, default=_json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


class Trainer:
    """Run ``steps`` optimisation steps of a model over a :class:`~minigen.data.DataLoader`.

    Parameters
    ----------
    run_dir : the run's folder (``runs/<name>``)
    model : the model; its ``loss(batch)`` is used unless ``step_fn`` is given
    loader : a DataLoader; the trainer iterates ``loader.batches()`` across epochs
    steps : total number of steps of the run (a resumed run continues to it)
    optimizer, scheduler, ema : for the default step (scheduler and EMA optional)
    step_fn : ``step_fn(batch) -> dict`` of float metrics, replacing the default step
    state : extra objects with ``state_dict``/``load_state_dict`` to checkpoint
        (the model, optimizer, scheduler and EMA are included automatically)
    config : JSON-able dict written to ``config.json``
    checkpoint_every, log_every : in steps
    sample_fn, sample_every : ``sample_fn() -> images (N, C, H, W)`` written as
        ``samples_<step>.png`` every ``sample_every`` steps and at the end
    eval_fn, eval_every : ``eval_fn() -> dict`` logged (as its own row) every ``eval_every`` steps
    clip_grad_norm : clip the global gradient norm in the default step
    time_limit : stop (with a checkpoint) once this many seconds of training have run
    progress : show a tqdm bar with the live loss
    detect_anomaly : run every step under :class:`minigen.autograd.detect_anomaly` (slow): the error
        names the op that first produced NaN/inf. Without it a non-finite metric still stops the run
        with :class:`NonFiniteError`, before the checkpoint could be overwritten.
    """

    def __init__(self, run_dir: str, model, loader, steps: int, *, optimizer=None, scheduler=None,
                 ema=None, step_fn: Callable | None = None, state: dict | None = None,
                 config: dict | None = None, checkpoint_every: int = 1000, log_every: int = 50,
                 sample_fn: Callable | None = None, sample_every: int | None = None,
                 eval_fn: Callable | None = None, eval_every: int | None = None,
                 clip_grad_norm: float | None = None, time_limit: float | None = None,
                 progress: bool = True, detect_anomaly: bool = False):
        for name, value in (("steps", steps), ("checkpoint_every", checkpoint_every),
                            ("log_every", log_every)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Trainer: {name} must be a positive integer, got {value!r}")
        if step_fn is None and optimizer is None:
            raise ValueError("Trainer: give an optimizer (for the default step) or a step_fn")
        self.run_dir, self.model, self.loader, self.steps = run_dir, model, loader, int(steps)
        self.optimizer, self.scheduler, self.ema = optimizer, scheduler, ema
        self.step_fn = step_fn or self.default_step
        self.state = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "ema": ema}
        self.state.update(state or {})
        self.state = {k: v for k, v in self.state.items() if v is not None}
        self.config = config or {}
        self.checkpoint_every, self.log_every = int(checkpoint_every), int(log_every)
        self.sample_fn, self.sample_every = sample_fn, sample_every
        self.eval_fn, self.eval_every = eval_fn, eval_every
        self.clip_grad_norm, self.time_limit, self.progress = clip_grad_norm, time_limit, progress
        self.detect_anomaly = detect_anomaly
        self.step, self.train_seconds = 0, 0.0
        self.checkpoint_step = None      # the step the checkpoint on disk holds
        self._window: dict = {}          # metric name -> [sum, count] since the last log row

    # ------------------------------------------------------------------ paths
    @property
    def metrics_path(self) -> str:
        """``<run_dir>/metrics.jsonl``: one JSON row per logged step or evaluation."""
        return os.path.join(self.run_dir, "metrics.jsonl")

    @property
    def checkpoint_path(self) -> str:
        """``<run_dir>/checkpoint.npz``."""
        return os.path.join(self.run_dir, CHECKPOINT)

    # ------------------------------------------------------------------ the step
    def default_step(self, batch) -> dict:
        """loss → backward → optional clip → optimizer step → scheduler → EMA."""
        loss, metrics = self.model.loss(batch)
        self.optimizer.zero_grad()
        loss.backward()
        if self.clip_grad_norm is not None:
            from .optim import clip_grad_norm_
            metrics["grad_norm"] = float(clip_grad_norm_(self.model.parameters(), self.clip_grad_norm))
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update()
        return metrics

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self) -> None:
        """Write the step, training time, loader position, RNG state, the half-filled logging window and
        every ``state_dict`` to :attr:`checkpoint_path`, atomically."""
        save({"step": self.step, "train_seconds": self.train_seconds,
              "loader": self.loader.state_dict(), "rng": mg_random.get_rng_state(),
              "window": {k: list(v) for k, v in self._window.items()},
              "state": {name: obj.state_dict() for name, obj in self.state.items()}},
             self.checkpoint_path)
        self.checkpoint_step = self.step

    def load_checkpoint(self) -> None:
        """Restore what :meth:`save_checkpoint` wrote and drop the metrics rows logged after it.

        Raises ``ValueError`` when the checkpoint has no state for one of the objects in ``state``.
        """
        ckpt = load(self.checkpoint_path)
        missing = set(self.state) - set(ckpt["state"])
        if missing:
            raise ValueError(f"checkpoint {self.checkpoint_path} has no state for {sorted(missing)}; "
                             f"it was written by a different model or trainer")
        for name, obj in self.state.items():
            obj.load_state_dict(ckpt["state"][name])
        self.loader.load_state_dict(ckpt["loader"])
        mg_random.set_rng_state(ckpt["rng"])
        self.step, self.train_seconds = int(ckpt["step"]), float(ckpt["train_seconds"])
        self.checkpoint_step = self.step
        self._window = {k: list(v) for k, v in ckpt["window"].items()}
        self._truncate_metrics(self.step)

    def _truncate_metrics(self, step: int) -> None:
        """Drop rows logged after the checkpoint (and a partial last line from a kill)."""
        if not os.path.exists(self.metrics_path):
            return
        kept = []
        with open(self.metrics_path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    break                      # a line cut short by the kill: nothing after it
                if row.get("step", 0) <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
        atomic_write_text(self.metrics_path, "".join(kept))

    # ------------------------------------------------------------------ logging
    def _accumulate(self, metrics: dict) -> None:
        for key, value in metrics.items():
            acc = self._window.setdefault(key, [0.0, 0])
            acc[0] += float(value)
            acc[1] += 1

    def _epoch(self) -> float:
        """Epochs done so far, fractional (from the loader's position)."""
        position = self.loader.state_dict()
        return round(position["epoch"] + position["batch"] / max(len(self.loader), 1), 4)

    def _log_row(self) -> dict:
        row = {"step": self.step, "epoch": self._epoch(),
               "time": round(self.train_seconds, 3)}
        row.update({k: s / n for k, (s, n) in self._window.items() if n})
        self._window = {}
        append_jsonl(self.metrics_path, row)
        return row

    def write_samples(self) -> str | None:
        """Save ``sample_fn()`` as the grid ``samples_<step>.png``; returns its path, or None without a
        ``sample_fn``."""
        if self.sample_fn is None:
            return None
        from .viz import save_image_grid
        return save_image_grid(self.sample_fn(), os.path.join(self.run_dir, f"samples_{self.step:07d}.png"))

    def write_curves(self) -> None:
        """Plot ``metrics.jsonl`` to ``loss.png``; nothing is written while no row has a metric yet."""
        from .viz import plot_curves, read_jsonl
        rows = read_jsonl(self.metrics_path) if os.path.exists(self.metrics_path) else []
        # A short run of a model that measures itself only now and then may have no curve yet.
        if any(key not in ("step", "epoch", "time") for row in rows for key in row):
            plot_curves(rows, os.path.join(self.run_dir, "loss.png"),
                        title=os.path.basename(os.path.abspath(self.run_dir)))

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> dict:
        """Train to ``steps`` (or ``time_limit``); returns the last logged row."""
        os.makedirs(self.run_dir, exist_ok=True)
        if os.path.exists(self.checkpoint_path) and not resume:
            raise RunExistsError(f"run folder {self.run_dir} already holds a checkpoint: "
                                 f"pass --resume to continue it, or choose another --name")
        for orphan in glob.glob(os.path.join(glob.escape(self.run_dir), ".*.tmp*")):
            os.unlink(orphan)                  # half-written files of a run killed mid-write
        if os.path.exists(self.checkpoint_path):
            self.load_checkpoint()
        elif os.path.exists(self.metrics_path):
            os.unlink(self.metrics_path)        # a run killed before its first checkpoint
        write_json(os.path.join(self.run_dir, "config.json"), self.config)

        from tqdm.auto import tqdm
        bar = tqdm(total=self.steps, initial=self.step, disable=not self.progress, dynamic_ncols=True,
                   desc=os.path.basename(os.path.abspath(self.run_dir)), leave=True)
        last_row: dict = {}
        batches = self.loader.batches()
        try:
            while self.step < self.steps:
                if self.time_limit is not None and self.train_seconds >= self.time_limit:
                    bar.write(f"time limit of {self.time_limit:.0f} s reached at step {self.step}")
                    break
                start = time.perf_counter()
                metrics = self._checked_step(next(batches))
                self.step += 1
                self.train_seconds += time.perf_counter() - start
                self._accumulate(metrics)
                bar.update(1)
                if self.step % self.log_every == 0 or self.step == self.steps:
                    last_row = self._log_row()
                    bar.set_postfix({k: f"{v:.4g}" for k, v in last_row.items()
                                     if k in ("loss", "elbo") or k.startswith("iwae")})
                if self.eval_every and self.eval_fn and self.step % self.eval_every == 0:
                    self._evaluate()
                if self.sample_every and self.step % self.sample_every == 0:
                    self.write_samples()
                if self.step % self.checkpoint_every == 0:
                    self.save_checkpoint()
                    self.write_curves()
        finally:
            bar.close()
        if self._window:
            last_row = self._log_row()
        self.save_checkpoint()
        self.write_samples()
        self.write_curves()
        return last_row

    def _checked_step(self, batch) -> dict:
        """One step; stops the run when a metric comes back NaN or infinite (see :class:`NonFiniteError`)."""
        from .anomaly import AnomalyError, detect_anomaly
        try:
            with detect_anomaly() if self.detect_anomaly else contextlib.nullcontext():
                metrics = self.step_fn(batch)
        except AnomalyError as err:
            raise AnomalyError(f"step {self.step + 1}: {err}") from err
        bad = {key: value for key, value in metrics.items() if not math.isfinite(float(value))}
        if bad:
            raise NonFiniteError(self._non_finite_report(bad))
        return metrics

    def _non_finite_report(self, bad: dict) -> str:
        """Which metrics, parameters and gradients are NaN/inf after step ``self.step + 1``, and what to do."""
        parts = [", ".join(f"{key} = {float(value)}" for key, value in bad.items())]
        named = list(self.model.named_parameters()) if hasattr(self.model, "named_parameters") else []
        for what, arrays in (("parameters", [(n, p.data) for n, p in named]),
                             ("gradients", [(n, p.grad.data) for n, p in named if p.grad is not None])):
            found = [f"{name} ({a.size - int(np.isfinite(a).sum())}/{a.size})" for name, a in arrays
                     if a.dtype.kind == "f" and not np.isfinite(a).all()]
            if found:
                more = f" and {len(found) - 4} more" if len(found) > 4 else ""
                parts.append(f"NaN/inf in the {what} {', '.join(found[:4])}{more}")
        saved = (f"the checkpoint of step {self.checkpoint_step} is intact (--resume restarts there)"
                 if self.checkpoint_step is not None else "no checkpoint was written yet")
        return (f"step {self.step + 1}: {'; '.join(parts)}; {saved}; run with --detect-anomaly (Trainer("
                f"detect_anomaly=True)) to find the operation that first produced it, then lower the "
                f"learning rate or clip gradients (--clip-grad-norm)")

    def _evaluate(self) -> None:
        # Evaluation may draw random numbers; it must not shift the training stream.
        rng_state = mg_random.get_rng_state()
        row = {"step": self.step, "epoch": self._epoch(), "time": round(self.train_seconds, 3)}
        row.update(self.eval_fn())
        mg_random.set_rng_state(rng_state)
        append_jsonl(self.metrics_path, row)


def parse_duration(text) -> float:
    """``"90"`` / ``"90s"`` / ``"45m"`` / ``"1.5h"`` → seconds."""
    text = str(text).strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], None)
    number = text[:-1] if scale else text
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise ValueError(f"expected a duration like 90, 90s, 45m or 1.5h, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a duration must be positive, got {text!r}")
    return value
