"""Small array functions every model family needs, stable for any input and on NumPy or CuPy (``xp``).

Tensors have differentiable versions of these in ``minigen.ops``; the ones
here work on raw arrays, for code that writes its updates out by hand (the
energy-based models, the evaluation metrics).
"""
from __future__ import annotations

import numpy as np

__all__ = ["sigmoid", "softplus", "logsumexp", "binary_states"]


def sigmoid(x, xp=np):
    """:math:`\\sigma(x) = 1/(1+e^{-x}) = \\tfrac12(1 + \\tanh(x/2))`: the tanh form never overflows."""
    return 0.5 * (xp.tanh(0.5 * x) + 1.0)


def softplus(x, xp=np):
    """:math:`\\log(1 + e^x) = \\max(x, 0) + \\log(1 + e^{-|x|})`: no overflow, and
    3x faster than ``logaddexp(0, x)`` (which handles two general arguments)."""
    y = xp.exp(-xp.abs(x))
    return xp.log1p(y, out=y) + xp.maximum(x, 0)


def logsumexp(x, axis=None, xp=np):
    """:math:`\\log\\sum e^{x}` over ``axis`` (all axes when None, giving a 0-d array),
    shifted by the maximum so that nothing overflows; rows of -inf give -inf."""
    top = x.max(axis=axis, keepdims=True)
    top = xp.where(xp.isfinite(top), top, 0.0)
    out = top + xp.log(xp.exp(x - top).sum(axis=axis, keepdims=True))
    return out.reshape(()) if axis is None else out.squeeze(axis)


def binary_states(n: int, start: int = 0, stop: int | None = None, xp=np, dtype=np.float64):
    """Rows ``start…stop-1`` of the table of all :math:`2^n` binary vectors, in counting order
    with unit 0 the most significant bit (so with visible units first, the visible state picks
    the block). Exact enumeration walks this table in chunks."""
    stop = 2 ** n if stop is None else stop
    index = xp.arange(start, stop, dtype=xp.int64)[:, None]
    return ((index >> xp.arange(n - 1, -1, -1, dtype=xp.int64)) & 1).astype(dtype)
