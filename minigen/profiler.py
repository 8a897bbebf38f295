"""Where a step's time goes, op by op: ``mg.autograd.profile``.

Every operation of the engine is a :class:`~minigen.autograd.Function`, so the
engine can time each one without touching model code::

    with mg.autograd.profile() as prof:
        loss, _ = model.loss(batch)
        loss.backward()
        optimizer.step()
    print(prof.table())

The table ranks the ops by their total time, forward plus backward, with the
number of calls and the megabytes their forwards allocated (fresh output arrays:
allocation churn shows up here). What no op accounts for — the optimizer,
data handling, Python between the ops — is the last line. An op's backward that
runs other ops is charged once, to the op itself.

On a GPU the host only *launches* kernels, so by default the times are what the
Python side costs (the quantity a launch-bound step is made of); ``sync=True``
waits for the device around every op, which gives each op its kernels' own time
instead (and slows the step). ``minigen bench --profile CASE [--device cuda]``
prints the table for one training step of a benchmark case.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

from .autograd import _state  # (autograd imports this module at its end, after defining _state)

__all__ = ["OpStats", "profile"]


@dataclass
class OpStats:
    """Calls, seconds and allocated bytes of one op over a profile."""
    calls: int = 0
    forward_s: float = 0.0
    backward_s: float = 0.0
    allocated_bytes: int = 0

    @property
    def total_s(self) -> float:
        """Forward plus backward seconds."""
        return self.forward_s + self.backward_s


class profile(contextlib.ContextDecorator):
    """Context manager: time every op's forward and backward inside it (see the module docstring).

    ``sync``: on a GPU, wait for the device around each op (kernel time instead of launch time).
    After the block, :attr:`ops` maps op names to :class:`OpStats`, :attr:`wall_s` is the block's
    wall time, and :meth:`table` formats both.
    """

    def __init__(self, sync: bool = False):
        self.sync = bool(sync)
        self.ops: dict[str, OpStats] = {}
        self.wall_s = 0.0
        self._depth = 0

    # ---------------------------------------------------------------- the context
    def __enter__(self):
        if getattr(_state, "profiler", None) is not None:
            raise RuntimeError("mg.autograd.profile: a profile is already running in this thread")
        _state.profiler = self
        self._start = self._clock()
        return self

    def __exit__(self, *exc):
        self.wall_s += self._clock() - self._start
        _state.profiler = None
        return False

    # ---------------------------------------------------------------- the hooks (autograd calls these)
    def _clock(self) -> float:
        if self.sync:
            from . import backend
            if backend.cuda_available():
                backend.cupy.cuda.Device().synchronize()
        return time.perf_counter()

    def enter(self) -> float:
        """An op starts: its start time (ops it runs itself are not counted twice)."""
        self._depth += 1
        return self._clock() if self._depth == 1 else 0.0

    def exit(self, name: str, phase: str, start: float, output=None) -> None:
        """An op ends: charge the time since ``start`` (and the bytes of ``output``) to ``name``."""
        self._depth -= 1
        if self._depth:
            return
        stats = self.ops.setdefault(name, OpStats())
        elapsed = self._clock() - start
        if phase == "forward":
            stats.calls += 1
            stats.forward_s += elapsed
            stats.allocated_bytes += int(getattr(output, "nbytes", 0))
        else:
            stats.backward_s += elapsed

    # ---------------------------------------------------------------- the report
    def table(self, top: int = 15, per: int = 1) -> str:
        """The ``top`` ops by total time, the rest summed, and the time no op accounts for; with ``per``
        = the number of identical steps profiled, calls, times and megabytes are per step."""
        rows = sorted(self.ops.items(), key=lambda item: -item[1].total_s)
        if per != 1:
            rows = [(name, OpStats(s.calls // per, s.forward_s / per, s.backward_s / per,
                                   s.allocated_bytes // per)) for name, s in rows]
        wall = max(self.wall_s / per, 1e-12)
        lines = [f"{'op':<24} {'calls':>7} {'forward ms':>11} {'backward ms':>12} {'total ms':>9} "
                 f"{'share':>6} {'MB out':>8}"]

        def line(name, s: OpStats):
            lines.append(f"{name:<24} {s.calls:>7} {1e3 * s.forward_s:>11.2f} {1e3 * s.backward_s:>12.2f} "
                         f"{1e3 * s.total_s:>9.2f} {100 * s.total_s / wall:>5.1f}% {s.allocated_bytes / 2**20:>8.1f}")
        for name, s in rows[:top]:
            line(name, s)
        if len(rows) > top:
            rest = OpStats()
            for _, s in rows[top:]:
                rest.calls += s.calls
                rest.forward_s += s.forward_s
                rest.backward_s += s.backward_s
                rest.allocated_bytes += s.allocated_bytes
            line(f"({len(rows) - top} other ops)", rest)
        in_ops = sum(s.total_s for _, s in rows)
        lines.append(f"{'outside the ops':<24} {'':>7} {'':>11} {'':>12} {1e3 * (wall - in_ops):>9.2f} "
                     f"{100 * (wall - in_ops) / wall:>5.1f}%   (optimizer, data, Python between ops)")
        lines.append(f"{'wall':<24} {'':>7} {'':>11} {'':>12} {1e3 * wall:>9.2f}")
        return "\n".join(lines)
