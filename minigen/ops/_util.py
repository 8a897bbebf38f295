"""Helpers shared by every op: undoing broadcasting, argument normalisation, errors.

Broadcasting is undone in exactly one place, :func:`sum_to_shape`.
"""
from __future__ import annotations

import functools
import inspect
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
    keepdim = check_flag(name, "keepdim", keepdim)
    if dim is None:
        return tuple(range(ndim)), keepdim
    if not isinstance(dim, (numbers.Integral, tuple, list)):
        raise TypeError(f"{name}: dim must be an int or a tuple of ints, got {dim!r}")
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    axes = tuple(normalize_dim(name, d, ndim) for d in dims)
    return (axes if ndim else ()), keepdim          # a 0-d tensor accepts dim 0 or -1, as in PyTorch


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


def pair(name, value, arg="argument", minimum=None):
    """An int or a 2-sequence of ints, as a tuple of two ints (conv/pool arguments), each at least
    ``minimum`` when given."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value):
        value = tuple(int(v) for v in value)
    else:
        raise ValueError(f"{name}: {arg} must be an int or a pair of ints, got {value!r}")
    if minimum is not None and min(value) < minimum:
        raise ValueError(f"{name}: {arg} must be >= {minimum}, got {value}")
    return value


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


def tensor_args(*names):
    """Decorator: the op's parameters ``names`` must be Tensors — or ``None`` where that is the
    parameter's default (an optional bias) — else a ``TypeError`` naming the op, the argument and what
    it got, instead of an ``AttributeError`` from deep inside. (Arithmetic takes numbers and arrays
    as constants: ``minigen.ops.elementwise._operand``.)"""
    def decorate(fn):
        parameters = inspect.signature(fn).parameters
        checks = [(list(parameters).index(name), name, parameters[name].default is None) for name in names]

        @functools.wraps(fn)
        def checked(*args, **kwargs):
            n = len(args)
            for position, name, optional in checks:
                value = args[position] if position < n else kwargs.get(name)
                if value.__class__ is not Tensor and not isinstance(value, Tensor) and not (optional and value is None):
                    hint = " (wrap data with mg.tensor(...))" if isinstance(value, (list, tuple, np.ndarray)) else ""
                    raise TypeError(f"{fn.__name__}: {name} must be a Tensor, got {_describe(value)}{hint}")
            return fn(*args, **kwargs)
        return checked
    return decorate


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"a NumPy array of shape {value.shape}"
    return "None" if value is None else type(value).__name__


def check_int(name, arg, value, minimum=None):
    """``value`` as an int (``bool`` is not one), at least ``minimum``; else a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: {arg} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: {arg} must be >= {minimum}, got {value}")
    return int(value)


def check_flag(name, arg, value) -> bool:
    """``value`` as a bool (``True``/``False``, or a 0/1 int); else a ``TypeError``."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name}: {arg} must be True or False, got {value!r}")
