"""Activation functions and softmax: relu leaky_relu elu gelu silu sigmoid tanh
softplus softmax log_softmax.

Where the derivative is a function of the output (sigmoid, tanh, exp-like ops)
the backward reuses ``ctx.output`` instead of recomputing the forward pass.
"""
from __future__ import annotations

import math

from .. import backend
from ..autograd import Function, Tensor, is_grad_enabled
from ._util import check_tensor, normalize_dim, tensor_args


class ReLU(Function):
    """relu'(x) = 1 if x > 0 else 0."""

    @staticmethod
    def forward(ctx, a):
        xp = backend.array_module(a)
        return xp.maximum(a, 0)

    @staticmethod
    def backward(ctx, g):
        return g * (ctx.output.data > 0)


class LeakyReLU(Function):
    """leaky_relu'(x) = 1 if x > 0 else slope."""

    @staticmethod
    def forward(ctx, a, slope):
        # factor = 1 where a > 0, else slope — as arithmetic on the mask, in a's dtype: np.where with
        # scalar branches (float64 ones, first, then a cast) took 3 ms on a DCGAN activation, this 0.15 ms
        factor = (a > 0).astype(a.dtype)
        factor *= a.dtype.type(1 - slope)
        factor += a.dtype.type(slope)
        ctx.factor = factor
        return a * factor

    @staticmethod
    def backward(ctx, g):
        return g * ctx.factor, None


class ELU(Function):
    """elu(x) = x if x > 0 else alpha (e^x - 1); elu'(x) = 1 or elu(x) + alpha."""

    @staticmethod
    def forward(ctx, a, alpha):
        xp = backend.array_module(a)
        ctx.positive = a > 0
        return xp.where(ctx.positive, a, alpha * xp.expm1(xp.minimum(a, 0)))

    @staticmethod
    def backward(ctx, g):
        from .elementwise import where

        alpha = ctx.inputs[1]
        return where(ctx.positive, g, g * (ctx.output + alpha)), None


class Sigmoid(Function):
    """sigma(x) = 1/(1+e^{-x}), computed as (1 + tanh(x/2))/2 (stable); sigma' = sigma(1-sigma)."""

    @staticmethod
    def forward(ctx, a):
        xp = backend.array_module(a)
        return 0.5 * (1.0 + xp.tanh(0.5 * a))

    @staticmethod
    def backward(ctx, g):
        s = ctx.output
        return g * s * (1.0 - s)


class SiLU(Function):
    """silu(x) = x sigma(x); silu' = sigma(x)(1 + x(1 - sigma(x))). Under create_graph=True the
    backward is written with differentiable ops (the same formula), so second derivatives are exact."""

    @staticmethod
    def forward(ctx, a):
        return backend.get_kernel("silu", backend.device_of(a))(a)

    @staticmethod
    def backward(ctx, g):
        x = ctx.inputs[0]
        if is_grad_enabled():
            s = sigmoid(x)
            return g * s * (1.0 + x * (1.0 - s))
        return Tensor._wrap(x.xp.asarray(backend.get_kernel("silu_backward", x.device)(x.data, g.data)))


class Tanh(Function):
    """tanh' = 1 - tanh^2."""

    @staticmethod
    def forward(ctx, a):
        return backend.array_module(a).tanh(a)

    @staticmethod
    def backward(ctx, g):
        t = ctx.output
        return g * (1.0 - t * t)


class Softplus(Function):
    """softplus(x) = log(1 + e^{beta x}) / beta (a stable kernel); derivative sigma(beta x)."""

    @staticmethod
    def forward(ctx, a, beta):
        kernel = backend.get_kernel("softplus", backend.device_of(a))
        return kernel(a) if beta == 1 else (kernel(beta * a) / beta).astype(a.dtype)

    @staticmethod
    def backward(ctx, g):
        x, beta = ctx.inputs
        return g * sigmoid(x * beta), None


class Erf(Function):
    """erf'(x) = 2/sqrt(pi) e^{-x^2}. The forward is a kernel (NumPy has no erf)."""

    @staticmethod
    def forward(ctx, a):
        return backend.get_kernel("erf", backend.device_of(a))(a)

    @staticmethod
    def backward(ctx, g):
        x = ctx.inputs[0]
        return g * (2.0 / math.sqrt(math.pi)) * (-(x * x)).exp()


class Softmax(Function):
    """s = softmax(x); the Jacobian-vector product is s * (g - sum(g * s))."""

    @staticmethod
    def forward(ctx, a, dim):
        xp = backend.array_module(a)
        e = xp.exp(a - a.max(axis=dim, keepdims=True))
        return e / e.sum(axis=dim, keepdims=True)

    @staticmethod
    def backward(ctx, g):
        dim = ctx.inputs[1]
        s = ctx.output
        return s * (g - (g * s).sum(dim=dim, keepdim=True)), None


class LogSoftmax(Function):
    """y = x - logsumexp(x); the vector-Jacobian product is g - e^y * sum(g)."""

    @staticmethod
    def forward(ctx, a, dim):
        xp = backend.array_module(a)
        shifted = a - a.max(axis=dim, keepdims=True)
        return shifted - xp.log(xp.exp(shifted).sum(axis=dim, keepdims=True))

    @staticmethod
    def backward(ctx, g):
        dim = ctx.inputs[1]
        return g - ctx.output.exp() * g.sum(dim=dim, keepdim=True), None


# --------------------------------------------------------------------------- public API
@tensor_args("x")
def relu(x):
    """max(x, 0), element-wise."""
    return ReLU.apply(x)


@tensor_args("x")
def leaky_relu(x, negative_slope=0.01):
    """``x`` where x > 0, else ``negative_slope * x`` (floating-point x: a fractional slope of integers
    would round)."""
    check_tensor("leaky_relu", "x", x, floating=True)
    return LeakyReLU.apply(x, float(negative_slope))


@tensor_args("x")
def elu(x, alpha=1.0):
    """ELU: ``x`` where x > 0, else ``alpha * (e^x - 1)``."""
    return ELU.apply(x, float(alpha))


@tensor_args("x")
def sigmoid(x):
    """The logistic function 1/(1+e^{-x}), computed stably (no overflow for large ``|x|``)."""
    return Sigmoid.apply(x)


@tensor_args("x")
def tanh(x):
    """Hyperbolic tangent, element-wise."""
    return Tanh.apply(x)


@tensor_args("x")
def softplus(x, beta=1.0):
    """log(1 + e^{beta x}) / beta, a smooth ReLU (computed stably)."""
    return Softplus.apply(x, float(beta))


@tensor_args("x")
def erf(x):
    """The Gauss error function, element-wise."""
    return Erf.apply(x)


@tensor_args("x")
def gelu(x, approximate="none"):
    """GELU: x Phi(x). ``approximate='tanh'`` uses Hendrycks & Gimpel's tanh form."""
    if approximate == "tanh":
        inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)
        return 0.5 * x * (1.0 + tanh(inner))
    if approximate != "none":
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return 0.5 * x * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))


@tensor_args("x")
def silu(x):
    """SiLU / swish: x sigma(x), one fused kernel each way."""
    return SiLU.apply(x)


@tensor_args("x")
def softmax(x, dim=-1, *, axis=None):
    """Softmax along ``dim`` (default the last; ``axis=`` also accepted), with the maximum subtracted first so
    large inputs do not overflow."""
    d = normalize_dim("softmax", dim if axis is None else axis, x.ndim)
    if x.ndim == 0 or x.numel() == 0:     # one outcome has probability 1 (gradient 0); empty stays empty
        return x * 0 + 1
    return Softmax.apply(x, d)


@tensor_args("x")
def log_softmax(x, dim=-1, *, axis=None):
    """log(softmax(x)) along ``dim`` (default the last; ``axis=`` also accepted), computed stably as
    x - logsumexp(x)."""
    d = normalize_dim("log_softmax", dim if axis is None else axis, x.ndim)
    if x.ndim == 0 or x.numel() == 0:     # log 1 = 0, as softmax above
        return x * 0
    return LogSoftmax.apply(x, d)
