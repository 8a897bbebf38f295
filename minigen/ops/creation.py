"""Tensor constructors and random draws (all from the seeded generator).

The random draws carry no gradient themselves; reparameterised sampling is
written by the models as ``mu + sigma * randn_like(mu)``.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from ..autograd import DEFAULT_DTYPE, Tensor
from ..random import generator


def _shape(size):
    if len(size) == 1 and not isinstance(size[0], numbers.Integral):
        size = tuple(size[0])
    size = tuple(int(s) for s in size)
    if any(s < 0 for s in size):
        raise ValueError(f"negative dimension in size {size}")
    return size


def _new(array, requires_grad=False):
    t = Tensor._wrap(array)
    if requires_grad:
        t.requires_grad_(True)
    return t


def tensor(data, dtype=None, device=None, requires_grad=False) -> Tensor:
    """A new leaf tensor from Python data, an array or a tensor (always copies)."""
    if isinstance(data, Tensor):
        data = data.data
    array = Tensor(data, dtype=dtype, device=device).data
    if isinstance(data, np.ndarray) or backend.device_of(data) == "cuda":
        array = array.copy() if array is data else array
    return Tensor(array, requires_grad=requires_grad)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    """Like :func:`tensor` but shares memory when it can."""
    if isinstance(data, Tensor) and dtype is None and device is None:
        return data
    return Tensor(data, dtype=dtype, device=device)


def from_numpy(array) -> Tensor:
    """A tensor sharing ``array``'s memory and dtype (``torch.from_numpy``)."""
    return Tensor(array)


def _filled(fill, size, dtype, device, requires_grad):
    xp = backend.xp_for(device)
    return _new(fill(xp, _shape(size), np.dtype(dtype or DEFAULT_DTYPE)), requires_grad)


def zeros(*size, dtype=None, device="cpu", requires_grad=False):
    """Zeros of the given size (``zeros(2, 3)`` or ``zeros((2, 3))``); float32 unless ``dtype`` is given."""
    return _filled(lambda xp, s, d: xp.zeros(s, d), size, dtype, device, requires_grad)


def ones(*size, dtype=None, device="cpu", requires_grad=False):
    """Ones of the given size (``ones(2, 3)`` or ``ones((2, 3))``); float32 unless ``dtype`` is given."""
    return _filled(lambda xp, s, d: xp.ones(s, d), size, dtype, device, requires_grad)


def empty(*size, dtype=None, device="cpu", requires_grad=False):
    """Same as :func:`zeros`: minigen never hands out uninitialised memory."""
    return zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)


def full(size, fill_value, dtype=None, device="cpu", requires_grad=False):
    """A tensor of shape ``size`` (an int or a tuple) filled with ``fill_value``; float32 unless ``dtype`` is given."""
    return _filled(lambda xp, s, d: xp.full(s, fill_value, d), (size,), dtype, device,
                   requires_grad)


def zeros_like(x, dtype=None, requires_grad=False):
    """Zeros with ``x``'s shape, device and (unless ``dtype`` is given) dtype."""
    return zeros(x.shape, dtype=dtype or x.dtype, device=x.device, requires_grad=requires_grad)


def ones_like(x, dtype=None, requires_grad=False):
    """Ones with ``x``'s shape, device and (unless ``dtype`` is given) dtype."""
    return ones(x.shape, dtype=dtype or x.dtype, device=x.device, requires_grad=requires_grad)


def full_like(x, fill_value, dtype=None, requires_grad=False):
    """``fill_value`` everywhere, with ``x``'s shape, device and (unless ``dtype`` is given) dtype."""
    return full(x.shape, fill_value, dtype=dtype or x.dtype, device=x.device,
                requires_grad=requires_grad)


def empty_like(x, dtype=None, requires_grad=False):
    """Same as :func:`zeros_like`."""
    return zeros_like(x, dtype, requires_grad)


def arange(start, end=None, step=1, dtype=None, device="cpu", requires_grad=False):
    """Values from ``start`` up to ``end`` (excluded) in steps of ``step``; ``arange(n)`` counts from 0.

    The dtype is int64 when all three are ints, float32 otherwise, unless ``dtype`` is given.
    """
    if end is None:
        start, end = 0, start
    values = [start, end, step]
    if dtype is None:
        dtype = np.int64 if all(isinstance(v, numbers.Integral) for v in values) else DEFAULT_DTYPE
    return _new(backend.xp_for(device).arange(start, end, step, dtype=dtype), requires_grad)


def linspace(start, end, steps, dtype=None, device="cpu", requires_grad=False):
    """``steps`` evenly spaced values from ``start`` to ``end``, both included; float32 by default."""
    return _new(backend.xp_for(device).linspace(start, end, steps,
                                                dtype=dtype or DEFAULT_DTYPE), requires_grad)


def eye(n, m=None, dtype=None, device="cpu", requires_grad=False):
    """An ``n x m`` matrix (``n x n`` without ``m``) with ones on the diagonal; float32 by default."""
    return _new(backend.xp_for(device).eye(n, m, dtype=dtype or DEFAULT_DTYPE), requires_grad)


# --------------------------------------------------------------------------- random
def _float_dtype(dtype):
    dtype = np.dtype(dtype or DEFAULT_DTYPE)
    if dtype.kind != "f":
        raise TypeError(f"random floats need a floating dtype, got {dtype}")
    return dtype


def randn(*size, dtype=None, device="cpu", requires_grad=False):
    """Standard normal samples."""
    dtype = _float_dtype(dtype)
    return _new(generator(backend.check_device(device)).standard_normal(_shape(size),
                                                                       dtype=dtype), requires_grad)


def rand(*size, dtype=None, device="cpu", requires_grad=False):
    """Uniform samples on [0, 1)."""
    dtype = _float_dtype(dtype)
    return _new(generator(backend.check_device(device)).random(_shape(size), dtype=dtype),
                requires_grad)


def randint(low, high=None, size=(), dtype=np.int64, device="cpu"):
    """Integers uniform on [low, high) (``randint(high, size)`` also accepted)."""
    if high is None:
        low, high = 0, low
    if high <= low:
        raise ValueError(f"randint: need low < high, got low={low}, high={high}")
    g = generator(backend.check_device(device))
    return Tensor._wrap(g.integers(low, high, size=_shape((size,)), dtype=dtype))


def randn_like(x, dtype=None):
    """Standard normal samples with ``x``'s shape, device and (unless ``dtype`` is given) dtype."""
    return randn(x.shape, dtype=dtype or x.dtype, device=x.device)


def rand_like(x, dtype=None):
    """Uniform samples on [0, 1) with ``x``'s shape, device and (unless ``dtype`` is given) dtype."""
    return rand(x.shape, dtype=dtype or x.dtype, device=x.device)


def randint_like(x, low, high=None):
    """int64 integers uniform on [low, high) with ``x``'s shape and device (or on [0, high) with one bound)."""
    return randint(low, high, x.shape, device=x.device)


def randperm(n, device="cpu"):
    """A random permutation of 0, ..., n-1 as an int64 tensor, from the seeded generator of ``device``."""
    return Tensor._wrap(generator(backend.check_device(device)).permutation(n).astype(np.int64))


def normal(mean=0.0, std=1.0, size=None, dtype=None, device=None):
    """Samples of N(mean, std^2); ``mean``/``std`` may be tensors (broadcast)."""
    ref = mean if isinstance(mean, Tensor) else std if isinstance(std, Tensor) else None
    if size is None:
        size = np.broadcast_shapes(getattr(mean, "shape", ()), getattr(std, "shape", ()))
    device = device or (ref.device if ref is not None else "cpu")
    dtype = dtype or (ref.dtype if ref is not None else None)
    eps = randn(size, dtype=dtype, device=device)
    return (eps * std + mean).detach()


def bernoulli(p):
    """Binary samples with P(1) = p (``p`` a tensor of probabilities)."""
    probs = p.data if isinstance(p, Tensor) else np.asarray(p)
    xp = backend.array_module(probs)
    if xp.any((probs < 0) | (probs > 1)):
        raise ValueError("bernoulli: probabilities must lie in [0, 1]")
    u = generator(backend.device_of(probs)).random(probs.shape, dtype=probs.dtype
                                                   if probs.dtype.kind == "f" else np.float32)
    return Tensor._wrap((u < probs).astype(probs.dtype if probs.dtype.kind == "f" else np.float32))


def multinomial(probs, num_samples=1, replacement=False):
    """Draw category indices from the rows of ``probs`` (unnormalised weights allowed).

    Uses the Gumbel-top-k trick without replacement and inverse-CDF sampling with it.
    """
    w = probs.data if isinstance(probs, Tensor) else np.asarray(probs)
    xp = backend.array_module(w)
    if xp.any(w < 0) or not xp.all(xp.isfinite(w)):
        raise ValueError("multinomial: probabilities must be finite and non-negative")
    if xp.any(w.sum(axis=-1) <= 0):
        raise ValueError("multinomial: every row needs a positive total probability")
    if not replacement and num_samples > w.shape[-1]:
        raise ValueError(f"multinomial: cannot draw {num_samples} samples without replacement "
                         f"from {w.shape[-1]} categories")
    g = generator(backend.device_of(w))
    if replacement:
        cdf = xp.cumsum(w / w.sum(axis=-1, keepdims=True), axis=-1)
        u = g.random(w.shape[:-1] + (num_samples,))
        idx = (u[..., :, None] >= cdf[..., None, :]).sum(axis=-1)  # inverse CDF
        idx = xp.minimum(idx, w.shape[-1] - 1)
    else:
        with np.errstate(divide="ignore"):
            keys = xp.log(w) - xp.log(-xp.log(g.random(w.shape)))
        idx = xp.argsort(-keys, axis=-1)[..., :num_samples]
    return Tensor._wrap(idx.astype(np.int64))


def categorical(logits, num_samples=None):
    """Sample indices from unnormalised log-probabilities along the last dim (Gumbel-max)."""
    z = logits.data if isinstance(logits, Tensor) else np.asarray(logits)
    xp = backend.array_module(z)
    shape = z.shape if num_samples is None else (num_samples,) + z.shape
    gumbel = -xp.log(-xp.log(generator(backend.device_of(z)).random(shape)))
    return Tensor._wrap((z + gumbel).argmax(axis=-1).astype(np.int64))
