"""Reductions: sum mean var std max min amax amin logsumexp argmax argmin, and the scan cumsum.

All accept PyTorch's ``dim=``/``keepdim=`` and NumPy's ``axis=``/``keepdims=``.
A reduction's backward puts the reduced axes back (as size 1) and broadcasts.
"""
from __future__ import annotations

import builtins
import math
from collections import namedtuple

import numpy as np

from ..autograd import Function, Tensor
from ._util import reduction_dims, tensor_args


def _restore_dims(g: Tensor, axes, keepdim) -> Tensor:
    """Re-insert reduced axes as size-1 dims so ``g`` broadcasts against the input."""
    if keepdim or not axes:
        return g
    shape = list(g.shape)
    for ax in sorted(axes):
        shape.insert(ax, 1)
    return g.reshape(shape)


class Sum(Function):
    """d(sum x)/dx_i = 1: the gradient is broadcast back over the summed axes."""

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.axes, ctx.keepdim = axes, keepdim
        return a.sum(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        x = ctx.inputs[0]
        return _restore_dims(g, ctx.axes, ctx.keepdim).expand(*x.shape), None, None


class Mean(Function):
    """d(mean x)/dx_i = 1/n."""

    @staticmethod
    def forward(ctx, a, axes, keepdim):
        ctx.axes, ctx.keepdim = axes, keepdim
        return a.mean(axis=axes, keepdims=keepdim)

    @staticmethod
    def backward(ctx, g):
        x = ctx.inputs[0]
        n = math.prod(x.shape[ax] for ax in ctx.axes)
        return _restore_dims(g, ctx.axes, ctx.keepdim).expand(*x.shape) / n, None, None


class Extreme(Function):
    """max (``largest``) or min over ``axes``: the gradient goes to the extreme entries (shared evenly
    between ties). Computed as such, not as −max(−x), which would wrap around for unsigned integers."""

    @staticmethod
    def forward(ctx, a, axes, keepdim, largest=True):
        ctx.axes, ctx.keepdim = axes, keepdim
        out = a.max(axis=axes, keepdims=True) if largest else a.min(axis=axes, keepdims=True)
        winners = (a == out).astype(a.dtype)
        ctx.share = winners / winners.sum(axis=axes, keepdims=True)
        return out if keepdim else out.squeeze(axis=axes)

    @staticmethod
    def backward(ctx, g):
        return _restore_dims(g, ctx.axes, ctx.keepdim) * ctx.share, None, None, None


def _check_nonempty(name, x, axes):
    if builtins.any(x.shape[ax] == 0 for ax in axes):
        raise ValueError(f"{name}: cannot reduce over an empty dimension (shape {x.shape})")


@tensor_args("x")
def sum(x, dim=None, keepdim=False, *, axis=None, keepdims=None, dtype=None):  # noqa: A001
    """Sum over ``dim`` (an int or a tuple; all dims by default).

    Booleans are summed as int64 (counting the True entries); ``dtype`` casts the result.
    """
    axes, keepdim = reduction_dims("sum", x.ndim, dim, keepdim, axis, keepdims)
    if x.dtype.kind == "b":
        x = x.long()
    out = Sum.apply(x, axes, keepdim)
    return out if dtype is None else out.to(dtype=dtype)


@tensor_args("x")
def mean(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """Mean over ``dim`` (an int or a tuple; all dims by default); raises ``TypeError`` for a non-floating tensor."""
    axes, keepdim = reduction_dims("mean", x.ndim, dim, keepdim, axis, keepdims)
    if x.dtype.kind != "f":
        raise TypeError(f"mean: expected a floating-point tensor, got dtype {x.dtype}")
    return Mean.apply(x, axes, keepdim)


@tensor_args("x")
def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None, keepdims=None):
    """Variance :math:`\\frac{1}{n-c}\\sum_i (x_i-\\bar x)^2` with ``correction`` c (default 1).

    ``unbiased=False`` is the same as ``correction=0`` (PyTorch's older spelling).
    """
    axes, keepdim = reduction_dims("var", x.ndim, dim, keepdim, axis, keepdims)
    if correction is None:
        correction = 0 if unbiased is False else 1
    n = math.prod(x.shape[ax] for ax in axes)
    centred = x - Mean.apply(x, axes, True)
    return Sum.apply(centred * centred, axes, keepdim) / builtins.max(n - correction, 0)


@tensor_args("x")
def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None, axis=None, keepdims=None):
    """Standard deviation: the square root of :func:`var`, with the same arguments (``correction`` defaults to 1)."""
    return var(x, dim, unbiased, keepdim, correction=correction, axis=axis,
               keepdims=keepdims).sqrt()


MaxResult = namedtuple("MaxResult", ["values", "indices"])


def _extreme(name, x, dim, keepdim, axis, keepdims, sign):
    """max/min: over everything (a tensor) or along one dim (values, indices)."""
    by_dim = dim is not None or axis is not None
    axes, keepdim = reduction_dims(name, x.ndim, dim, keepdim, axis, keepdims)
    _check_nonempty(name, x, axes)
    values = Extreme.apply(x, axes, keepdim, sign > 0)
    if not by_dim or len(axes) != 1:
        return values
    pick = x.xp.argmax if sign > 0 else x.xp.argmin
    indices = pick(x.data, axis=axes[0])
    if keepdim:
        indices = x.xp.expand_dims(indices, axes[0])
    return MaxResult(values, Tensor._wrap(indices))


@tensor_args("x")
def max(x, dim=None, keepdim=False, *, axis=None, keepdims=None):  # noqa: A001
    """max over all elements, or ``(values, indices)`` along ``dim`` like PyTorch."""
    if isinstance(dim, Tensor):  # torch.max(a, b) is the element-wise maximum
        from .elementwise import maximum

        return maximum(x, dim)
    return _extreme("max", x, dim, keepdim, axis, keepdims, +1)


@tensor_args("x")
def min(x, dim=None, keepdim=False, *, axis=None, keepdims=None):  # noqa: A001
    """min over all elements, or ``(values, indices)`` along ``dim`` like PyTorch; ``min(a, b)`` with a tensor ``b``
    is the element-wise :func:`minimum`."""
    if isinstance(dim, Tensor):
        from .elementwise import minimum

        return minimum(x, dim)
    return _extreme("min", x, dim, keepdim, axis, keepdims, -1)


@tensor_args("x")
def amax(x, dim=None, keepdim=False):
    """Maximum over ``dim`` (an int or a tuple; all dims by default), values only (``torch.amax``); ties share
    the gradient evenly."""
    axes, keepdim = reduction_dims("amax", x.ndim, dim, keepdim)
    _check_nonempty("amax", x, axes)
    return Extreme.apply(x, axes, keepdim, True)


@tensor_args("x")
def amin(x, dim=None, keepdim=False):
    """Minimum over ``dim`` (an int or a tuple; all dims by default), values only (``torch.amin``); ties share
    the gradient evenly."""
    axes, keepdim = reduction_dims("amin", x.ndim, dim, keepdim)
    _check_nonempty("amin", x, axes)
    return Extreme.apply(x, axes, keepdim, False)


@tensor_args("x")
def logsumexp(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
    """:math:`\\log\\sum_i e^{x_i} = m + \\log\\sum_i e^{x_i-m}` with m = max x (stable).

    The shift m is a constant (detached): the result does not depend on it.
    """
    axes, keepdim = reduction_dims("logsumexp", x.ndim, dim, keepdim, axis, keepdims)
    _check_nonempty("logsumexp", x, axes)
    m = x.xp.max(x.data, axis=axes, keepdims=True)
    m = x.xp.where(x.xp.isfinite(m), m, 0.0).astype(x.dtype)
    with np.errstate(divide="ignore"):  # all -inf: log(0) = -inf is the right answer
        out = (x - m).exp().sum(dim=axes, keepdim=True).log() + m
    return out if keepdim else out.squeeze(axes)


class Cumsum(Function):
    """:math:`y_i = \\sum_{j \\le i} x_j`; each :math:`x_j` feeds every later :math:`y_i`, so the
    gradient is the *reversed* cumulative sum :math:`\\partial L/\\partial x_j = \\sum_{i \\ge j} g_i`."""

    @staticmethod
    def forward(ctx, a, axis):
        ctx.axis = axis
        return a.cumsum(axis=axis)

    @staticmethod
    def backward(ctx, g):
        return Cumsum.apply(g.flip(ctx.axis), ctx.axis).flip(ctx.axis), None


@tensor_args("x")
def cumsum(x, dim):
    """Cumulative sum along ``dim`` (PyTorch's ``torch.cumsum``)."""
    from ._util import normalize_dim
    if x.ndim == 0:
        raise ValueError("cumsum: expected a tensor with at least one dimension, got a scalar")
    return Cumsum.apply(x, normalize_dim("cumsum", dim, x.ndim))


@tensor_args("x")
def argmax(x, dim=None, keepdim=False):
    """Indices of the maxima along ``dim`` (the first one on ties), or the index into the flattened tensor
    (a 0-d tensor) when ``dim`` is None; no gradient."""
    if dim is None:
        return Tensor._wrap(x.xp.asarray(x.xp.argmax(x.data)))
    idx = x.xp.argmax(x.data, axis=dim)
    return Tensor._wrap(x.xp.expand_dims(idx, dim) if keepdim else idx)


@tensor_args("x")
def argmin(x, dim=None, keepdim=False):
    """Indices of the minima along ``dim``, or into the flattened tensor; see :func:`argmax`."""
    return argmax(-x, dim, keepdim)


@tensor_args("x")
def all(x):  # noqa: A001
    """Whether every element is true (non-zero), as a Python bool."""
    return bool(x.xp.all(x.data))


@tensor_args("x")
def any(x):  # noqa: A001
    """Whether any element is true (non-zero), as a Python bool."""
    return bool(x.xp.any(x.data))
