"""Weight initialisation, in place, with the seeded generator (PyTorch's ``nn.init``).

Every function overwrites ``tensor.data`` element-wise (the array object is
kept, so views and optimisers stay valid) and returns the tensor. Randomness
comes from :func:`minigen.random.generator`, so ``mg.manual_seed`` makes
initialisation repeat.

The scaled schemes keep activation variance constant through depth. With
``fan_in`` = inputs per output unit (``in * kh * kw`` for a convolution) and
``fan_out`` = outputs per input unit:

* Glorot/Xavier: :math:`\\mathrm{Var}[W] = \\text{gain}^2 \\cdot 2/(\\text{fan\\_in}+\\text{fan\\_out})`
* He/Kaiming:    :math:`\\mathrm{Var}[W] = \\text{gain}^2 / \\text{fan}`

A uniform :math:`U(-b, b)` has variance :math:`b^2/3`, hence the
:math:`\\sqrt 3` in the uniform bounds.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..autograd import Tensor
from ..random import generator

__all__ = ["calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "eye_",
           "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
           "orthogonal_", "trunc_normal_"]


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended gain for a nonlinearity (PyTorch's table).

    linear / conv / sigmoid: 1; tanh: 5/3; relu: sqrt(2);
    leaky_relu: sqrt(2 / (1 + slope^2)) (slope ``param``, default 0.01); selu: 3/4.
    """
    linear_fns = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                  "conv_transpose2d", "conv_transpose3d"]
    if nonlinearity in linear_fns or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} is not a valid number")
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor):
    """``fan_in = size(1) * receptive``, ``fan_out = size(0) * receptive`` where
    ``receptive`` is the product of the dims after the first two (kernel size)."""
    if tensor.ndim < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than "
                         f"2 dimensions (got shape {tensor.shape})")
    receptive = int(np.prod(tensor.shape[2:])) if tensor.ndim > 2 else 1
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _calculate_correct_fan(tensor, mode):
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _check(name, tensor):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"init.{name}: expected a Tensor, got {type(tensor).__name__}")
    if tensor.dtype.kind != "f":
        raise TypeError(f"init.{name}: expected a floating-point tensor, got {tensor.dtype}")


def _write(tensor, values):
    tensor.data[...] = values.astype(tensor.dtype, copy=False)
    return tensor


def _draw_dtype(tensor):
    """NumPy's generators draw float32 or float64 only."""
    return tensor.dtype if tensor.dtype in (np.float32, np.float64) else np.float64


def _uniform(tensor, low, high):
    g = generator(tensor.device)
    return low + (high - low) * g.random(tensor.shape, dtype=_draw_dtype(tensor))


def _normal(tensor, mean, std):
    g = generator(tensor.device)
    return mean + std * g.standard_normal(tensor.shape, dtype=_draw_dtype(tensor))


# --------------------------------------------------------------------------- basic fills
def uniform_(tensor, a: float = 0.0, b: float = 1.0):
    """Fill with samples of :math:`U(a, b)`."""
    _check("uniform_", tensor)
    return _write(tensor, _uniform(tensor, a, b))


def normal_(tensor, mean: float = 0.0, std: float = 1.0):
    """Fill with samples of :math:`N(\\text{mean}, \\text{std}^2)`."""
    _check("normal_", tensor)
    return _write(tensor, _normal(tensor, mean, std))


def constant_(tensor, val: float):
    """Fill with the constant ``val``."""
    _check("constant_", tensor)
    tensor.data[...] = val
    return tensor


def zeros_(tensor):
    """Fill with zeros."""
    return constant_(tensor, 0.0)


def ones_(tensor):
    """Fill with ones."""
    return constant_(tensor, 1.0)


def eye_(tensor):
    """Fill a 2-d tensor with the identity (rectangular allowed)."""
    _check("eye_", tensor)
    if tensor.ndim != 2:
        raise ValueError(f"init.eye_: only 2-d tensors are supported, got shape {tensor.shape}")
    return _write(tensor, tensor.xp.eye(*tensor.shape))


# --------------------------------------------------------------------------- scaled schemes
def xavier_uniform_(tensor, gain: float = 1.0):
    """Glorot uniform: :math:`U(-b, b)`, :math:`b = \\text{gain}\\sqrt{6/(\\text{fan\\_in}+\\text{fan\\_out})}`."""
    _check("xavier_uniform_", tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return _write(tensor, _uniform(tensor, -bound, bound))


def xavier_normal_(tensor, gain: float = 1.0):
    """Glorot normal: :math:`N(0, \\text{gain}^2 \\cdot 2/(\\text{fan\\_in}+\\text{fan\\_out}))`."""
    _check("xavier_normal_", tensor)
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return _write(tensor, _normal(tensor, 0.0, std))


def _kaiming_std(name, tensor, a, mode, nonlinearity):
    _check(name, tensor)
    if 0 in tensor.shape:
        warnings.warn(f"init.{name}: initializing a zero-element tensor is a no-op")
        return None
    fan = _calculate_correct_fan(tensor, mode)
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu"):
    """He uniform: :math:`U(-b, b)`, :math:`b = \\text{gain}\\sqrt{3/\\text{fan}}`.

    ``a`` is the negative slope of the leaky ReLU that follows (used only when
    ``nonlinearity='leaky_relu'``); ``mode`` picks ``fan_in`` (preserve forward
    variance) or ``fan_out`` (preserve backward variance).
    """
    std = _kaiming_std("kaiming_uniform_", tensor, a, mode, nonlinearity)
    if std is None:
        return tensor
    bound = math.sqrt(3.0) * std
    return _write(tensor, _uniform(tensor, -bound, bound))


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu"):
    """He normal: :math:`N(0, \\text{gain}^2/\\text{fan})`."""
    std = _kaiming_std("kaiming_normal_", tensor, a, mode, nonlinearity)
    if std is None:
        return tensor
    return _write(tensor, _normal(tensor, 0.0, std))


def orthogonal_(tensor, gain: float = 1.0):
    """A (semi-)orthogonal matrix times ``gain`` (Saxe et al. 2013).

    The tensor is viewed as ``(rows, numel/rows)``; a Gaussian matrix is
    QR-factorised and Q's columns are sign-corrected by ``diag(R)`` so that the
    result is uniformly (Haar) distributed.
    """
    _check("orthogonal_", tensor)
    if tensor.ndim < 2:
        raise ValueError(f"init.orthogonal_: only tensors with 2 or more dimensions are "
                         f"supported, got shape {tensor.shape}")
    if tensor.numel() == 0:
        return tensor
    xp = tensor.xp
    rows = tensor.shape[0]
    cols = tensor.numel() // rows
    flat = generator(tensor.device).standard_normal((rows, cols))
    if rows < cols:
        flat = flat.T
    q, r = xp.linalg.qr(flat)
    q = q * xp.sign(xp.diag(r))
    if rows < cols:
        q = q.T
    return _write(tensor, gain * q.reshape(tensor.shape))


def trunc_normal_(tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0,
                  b: float = 2.0):
    """Fill with :math:`N(\\text{mean}, \\text{std}^2)` truncated to ``[a, b]``
    (absolute bounds, as in PyTorch), by rejection: redraw values outside ``[a, b]``."""
    _check("trunc_normal_", tensor)
    if not a < b:
        raise ValueError(f"init.trunc_normal_: need a < b, got a={a}, b={b}")
    z = lambda v: (v - mean) / (std * math.sqrt(2.0))  # noqa: E731
    mass = 0.5 * (math.erf(z(b)) - math.erf(z(a)))
    if mass < 1e-4:
        raise ValueError(f"init.trunc_normal_: [a, b] = [{a}, {b}] holds only {mass:.2e} of "
                         f"N({mean}, {std}^2); choose bounds closer to the mean")
    xp = tensor.xp
    values = _normal(tensor, mean, std)
    bad = (values < a) | (values > b)
    while bool(bad.any()):
        count = int(bad.sum())
        values[bad] = mean + std * generator(tensor.device).standard_normal(
            count, dtype=values.dtype)
        bad = (values < a) | (values > b)
    return _write(tensor, xp.clip(values, a, b))


def default_layer_init_(weight, bias=None):
    """PyTorch's default for Linear and convolution layers: ``kaiming_uniform_(a=sqrt(5))``
    weights — i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) — and bias from the same range."""
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = _calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound)
