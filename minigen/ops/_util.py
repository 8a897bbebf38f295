"""Helpers shared by every op: undoing broadcasting, argument normalisation, errors.

Broadcasting is undone in exactly one place, :func:`sum_to_shape`.
"""
from __future__ import annotations

import numbers

import numpy as np

from ..autograd import Tensor


def sum_to_shape(grad: Tensor, shape: tuple) -> Tensor:
    """Undo broadcasting: sum ``grad`` down to ``shape``.

    If ``x`` of shape ``shape`` was broadcast to ``grad.shape`` in the forward
    pass, every copy of an element contributed to the output, so its gradient is
    the sum over the copies: over the leading axes broadcasting prepended, and
    over each axis where ``x`` had size 1.
    """
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1
    )
    if axes:
        grad = grad.sum(dim=axes, keepdim=True)
    return grad.reshape(shape)


def shape_of(x) -> tuple:
    """Shape of a tensor, array or Python scalar."""
    return tuple(x.shape) if hasattr(x, "shape") else ()


def is_scalar(x) -> bool:
    return isinstance(x, numbers.Number) or (isinstance(x, np.ndarray) and x.ndim == 0)


def reduction_dims(name, ndim, dim=None, keepdim=False, axis=None, keepdims=None):
    """Resolve PyTorch-style ``dim``/``keepdim`` and NumPy-style ``axis``/``keepdims``.

    Returns ``(axes, keepdim)`` with ``axes`` a tuple of non-negative ints
    (all axes when no dimension is given).
    """
    if axis is not None:
        if dim is not None:
            raise TypeError(f"{name}: pass either dim= or axis=, not both")
        dim = axis
    if keepdims is not None:
        keepdim = keepdims
    if dim is None:
        return tuple(range(ndim)), bool(keepdim)
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    return tuple(normalize_dim(name, d, ndim) for d in dims), bool(keepdim)


def normalize_dim(name, dim, ndim, extra=0):
    """Turn a possibly negative ``dim`` into a valid axis of an ``ndim``-d tensor.

    ``extra`` allows one past the end (for ``unsqueeze``/``stack``).
    """
    size = max(ndim + extra, 1)
    if type(dim) is int and -size <= dim < size:  # the common case, checked cheaply
        return dim % size
    if not isinstance(dim, numbers.Integral) or not -size <= dim < size:
        raise IndexError(
            f"{name}: dim {dim} is out of range for a tensor with {ndim} dimensions "
            f"(expected an int in [{-size}, {size - 1}])"
        )
    return int(dim) % size


def pair(name, value, arg="argument"):
    """An int or a 2-sequence of ints, as a tuple of two ints (conv/pool arguments)."""
    if isinstance(value, numbers.Integral):
        return (int(value), int(value))
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, numbers.Integral) for v in value):
        raise ValueError(f"{name}: {arg} must be an int or a pair of ints, got {value!r}")
    return tuple(int(v) for v in value)


def check_tensor(name, arg, x, ndim=None, floating=False):
    """Raise a clear error unless ``x`` is a Tensor of the expected rank/dtype."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: {arg} must be a Tensor, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(f"{n}-d" for n in allowed)
            raise ValueError(f"{name}: {arg} must be {want}, got shape {x.shape}")
    if floating and x.dtype.kind != "f":
        raise TypeError(f"{name}: {arg} must be a floating-point tensor, got dtype {x.dtype}")
    return x
