"""Anomaly mode: find the operation where NaN or ±inf first appears.

A NaN loss says that something went wrong, not where. Inside ::

    with mg.autograd.detect_anomaly():
        loss, _ = model.loss(batch)
        loss.backward()

every op checks what it computes. A forward that returns NaN from NaN-free inputs, or ±inf from
finite inputs, raises :class:`AnomalyError` naming the op, the shapes, the range of its inputs and
where it was called (the model's line, and the line of your code that led there). A backward
formula that turns a finite incoming gradient of an op with finite inputs into a non-finite
gradient raises likewise, naming where the op was called in the forward pass (recorded while the
mode is on). Values already non-finite on the way in
are not the op's fault and pass: the error points at the origin, not at everything downstream.

It costs one ``isfinite`` pass per op and per gradient, so it is a debugging switch:
``minigen train ... --detect-anomaly`` turns it on for a whole run, and the trainer stops at the
first non-finite metric anyway and suggests it.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys

import numpy as np

from .autograd import _state  # (autograd imports this module at its end, after defining _state)
from .backend import array_module

__all__ = ["AnomalyError", "detect_anomaly", "is_anomaly_enabled", "set_detect_anomaly"]

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


class AnomalyError(RuntimeError):
    """An op produced NaN or ±inf from inputs (or an incoming gradient) that had none."""


def is_anomaly_enabled() -> bool:
    """Whether ops check their results for NaN/inf in this thread."""
    return getattr(_state, "anomaly", False)


def set_detect_anomaly(mode: bool) -> None:
    """Turn anomaly checks on or off for this thread (see :class:`detect_anomaly`)."""
    _state.anomaly = bool(mode)


class detect_anomaly(contextlib.ContextDecorator):
    """Context manager / decorator: every op inside checks its outputs and gradients for NaN/inf."""

    def __init__(self, mode: bool = True):
        self.mode = bool(mode)

    def __enter__(self):
        self._previous = is_anomaly_enabled()
        set_detect_anomaly(self.mode)
        return self

    def __exit__(self, *exc):
        set_detect_anomaly(self._previous)
        return False


# --------------------------------------------------------------------------- the checks
def call_site() -> str:
    """Where the op was called: the innermost frame outside the engine (``autograd``, ``ops/``, ``nn/``,
    ``kernels/``) — a model's line — and, when that is inside minigen, the innermost frame of your own
    code that led there."""
    root = os.path.dirname(_PACKAGE)
    engine = tuple(os.path.join(root, *part) + end for part, end in (
        (("minigen", "autograd.py"), ""), (("minigen", "anomaly.py"), ""), (("minigen", "ops"), os.sep),
        (("minigen", "nn"), os.sep), (("kernels",), os.sep)))
    package = (_PACKAGE + os.sep, os.path.join(root, "kernels") + os.sep)
    frame, model_line = sys._getframe(1), None
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        where = f"{os.path.relpath(path)}:{frame.f_lineno} in {frame.f_code.co_name}"
        if model_line is None and not path.startswith(engine):
            model_line = where
        if not path.startswith(package):
            return where if model_line == where else f"{model_line}, reached from {where}"
        frame = frame.f_back
    return model_line or "inside minigen"


def _floats(values):
    """The floating-point arrays and Python floats among ``values`` (Tensors unwrapped)."""
    for v in values:
        v = getattr(v, "data", v)
        if isinstance(v, float) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") == "f"):
            yield v


def _count(a, test) -> int:
    """How many entries of ``a`` (an array or a float) pass ``test`` (``np.isnan``, ``np.isinf``)."""
    return int(test(np.asarray(a)).sum()) if isinstance(a, float) else int(test(a).sum())


def _what(a) -> str:
    """``"nan"``, ``"inf"`` or ``"nan and inf"``: what non-finite values ``a`` holds."""
    kinds = [name for name, test in (("nan", np.isnan), ("inf", np.isinf)) if _count(a, test)]
    return " and ".join(kinds)


def _range(values) -> str:
    parts = []
    for v in _floats(values):
        if isinstance(v, float):
            parts.append(f"{v:g}")
        elif v.size:
            parts.append(f"{tuple(v.shape)} in [{float(v.min()):.4g}, {float(v.max()):.4g}]")
    return "; ".join(parts) or "none"


def _all_finite(values) -> bool:
    return all(math.isfinite(v) if isinstance(v, float) else bool(_finite(v).all()) for v in _floats(values))


def _finite(a):
    return array_module(a).isfinite(a)


def check_forward(fn, inputs, out, ctx) -> None:
    """Raise :class:`AnomalyError` when ``fn``'s output ``out`` is non-finite but its inputs were not;
    remember the call site on ``ctx`` for the backward check.

    Ops that run inside a backward formula are not checked here: :func:`checked_backward` judges the
    formula's result as a whole and names the forward call it belongs to.
    """
    within = getattr(_state, "anomaly_backward", None)
    if within is not None:
        ctx.anomaly_site = f"the backward of {within.fn.__name__} ({getattr(within, 'anomaly_site', '?')})"
        return
    ctx.anomaly_site = site = call_site()
    data = out.data
    if data.dtype.kind != "f" or bool(_finite(data).all()):
        return
    produced_nan = _count(data, np.isnan) > 0
    inputs_have_nan = any(_count(v, np.isnan) for v in _floats(inputs))
    if (produced_nan and not inputs_have_nan) or _all_finite(inputs):
        bad = data.size - int(_finite(data).sum())
        raise AnomalyError(
            f"{fn.__name__}.forward produced {_what(data)} ({bad} of {data.size} values of a "
            f"{tuple(data.shape)} output) from inputs without it (inputs: {_range(inputs)}), "
            f"called at {site}")


def checked_backward(ctx, grad):
    """Run the backward formula of ``ctx``'s op; raise :class:`AnomalyError` when, from a finite ``grad``
    and finite forward inputs, it returned a non-finite gradient for one of the op's inputs."""
    outer, _state.anomaly_backward = getattr(_state, "anomaly_backward", None), ctx
    try:
        input_grads = ctx.fn.backward(ctx, grad)
    finally:
        _state.anomaly_backward = outer
    if not _all_finite([grad, *ctx.inputs]):      # non-finite on the way in: not this formula's doing
        return input_grads
    for index, g in enumerate(input_grads if isinstance(input_grads, tuple) else (input_grads,)):
        if g is None or _all_finite([g]):
            continue
        site = getattr(ctx, "anomaly_site", "a call made before anomaly mode was on")
        raise AnomalyError(
            f"{ctx.fn.__name__}.backward returned {_what(g.data)} in the gradient of input {index} "
            f"(shape {tuple(g.shape)}) from a finite incoming gradient and finite inputs ("
            f"{_range(ctx.inputs)}); the op was called at {site}")
    return input_grads
