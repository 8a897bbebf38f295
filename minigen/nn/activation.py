"""Activation functions as modules (so they can sit in a ``Sequential``).

``inplace`` is accepted where PyTorch has it, so ported code runs unchanged, but
minigen always computes out of place (in-place writes would corrupt the graph).
"""
from __future__ import annotations

import warnings

from .. import ops
from .linear import _check_input
from .module import Module


class _Activation(Module):
    """Shared forward: check the input, then apply ``self._fn``."""

    def forward(self, input):  # noqa: A002
        _check_input(type(self).__name__, input)
        return self._fn(input)


class ReLU(_Activation):
    """:math:`\\max(0, x)`."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def _fn(self, x):
        return ops.relu(x)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class LeakyReLU(_Activation):
    """:math:`x` for :math:`x \\ge 0`, ``negative_slope`` :math:`\\cdot x` otherwise."""

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def _fn(self, x):
        return ops.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class ELU(_Activation):
    """:math:`x` for :math:`x > 0`, :math:`\\alpha(e^x - 1)` otherwise."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__()
        self.alpha, self.inplace = alpha, inplace

    def _fn(self, x):
        return ops.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class GELU(_Activation):
    """:math:`x\\,\\Phi(x)` (``approximate='tanh'`` for the tanh approximation)."""

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _fn(self, x):
        return ops.gelu(x, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(_Activation):
    """:math:`x\\,\\sigma(x)` (swish)."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def _fn(self, x):
        return ops.silu(x)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class Sigmoid(_Activation):
    """:math:`1 / (1 + e^{-x})`."""

    def _fn(self, x):
        return ops.sigmoid(x)


class Tanh(_Activation):
    """:math:`\\tanh(x) = (e^x - e^{-x}) / (e^x + e^{-x})`."""

    def _fn(self, x):
        return ops.tanh(x)


class Softplus(_Activation):
    """:math:`\\frac1\\beta \\log(1 + e^{\\beta x})`, and :math:`x` itself where
    :math:`\\beta x > \\text{threshold}` (PyTorch's rule)."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        super().__init__()
        self.beta, self.threshold = beta, threshold

    def _fn(self, x):
        return ops.where(x * self.beta > self.threshold, x, ops.softplus(x, self.beta))

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


def _legacy_softmax_dim(name, ndim):
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. "
                  "Change the call to include dim=X as an argument.", stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(_Activation):
    """:math:`e^{x_i} / \\sum_j e^{x_j}` along ``dim``."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def _fn(self, x):
        dim = _legacy_softmax_dim("softmax", x.ndim) if self.dim is None else self.dim
        return ops.softmax(x, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Softmax):
    """:math:`x_i - \\log \\sum_j e^{x_j}` along ``dim``."""

    def _fn(self, x):
        dim = _legacy_softmax_dim("log_softmax", x.ndim) if self.dim is None else self.dim
        return ops.log_softmax(x, dim)
