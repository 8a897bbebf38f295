"""Element-wise arithmetic: + - * / ** neg exp log sqrt abs clamp where maximum minimum.

Each backward formula is the textbook derivative, written with these same ops
so that it can itself be differentiated. Broadcasting is undone by
:func:`~minigen.ops._util.sum_to_shape` in :func:`grad_for`.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from ._util import shape_of, sum_to_shape, tensor_args


def grad_for(x, make_grad):
    """Gradient for input ``x``: ``make_grad()`` summed back to ``x``'s shape,
    or ``None`` when ``x`` is a constant (then ``make_grad`` is never called)."""
    if isinstance(x, Tensor) and x.requires_grad:
        return sum_to_shape(make_grad(), x.shape)
    return None


def _promote(a, b):
    """PyTorch's promotion for mixed operands: an integer or bool tensor meeting a
    float tensor or a Python float takes the float's dtype (NumPy would pick float64)."""
    a_float = getattr(a, "dtype", None) is not None and a.dtype.kind == "f"
    b_float = getattr(b, "dtype", None) is not None and b.dtype.kind == "f"
    if hasattr(a, "dtype") and not a_float:
        if b_float:
            a = a.astype(b.dtype)
        elif isinstance(b, float):
            a = a.astype(np.float32)
    if hasattr(b, "dtype") and not b_float:
        if a_float:
            b = b.astype(a.dtype)
        elif isinstance(a, float):
            b = b.astype(np.float32)
    return a, b


_FAST_OPERANDS = (Tensor, float, int)  # skip the slower abstract-class check for these


def _check_devices(name, *operands):
    if backend.cupy is None:  # no GPU: everything is on the CPU
        return
    devices = {backend.device_of(x.data) for x in operands if isinstance(x, Tensor)}
    if len(devices) > 1:
        raise ValueError(f"{name}: operands are on different devices {sorted(devices)}")


def _operand(x, name, arg):
    """Accept Tensors, Python numbers and arrays (arrays become constant tensors); anything else is a
    ``TypeError`` naming the op and the argument."""
    if type(x) in _FAST_OPERANDS or isinstance(x, (Tensor, numbers.Number)):
        return x
    if not hasattr(x, "dtype"):
        raise TypeError(f"{name}: {arg} must be a Tensor, a number or an array, got {type(x).__name__}")
    return Tensor(x)


class Add(Function):
    """d(a+b)/da = 1, d(a+b)/db = 1."""

    @staticmethod
    def forward(ctx, a, b):
        a, b = _promote(a, b)
        return a + b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        return grad_for(a, lambda: g), grad_for(b, lambda: g)


class Sub(Function):
    """d(a-b)/da = 1, d(a-b)/db = -1."""

    @staticmethod
    def forward(ctx, a, b):
        a, b = _promote(a, b)
        return a - b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        return grad_for(a, lambda: g), grad_for(b, lambda: -g)


class Mul(Function):
    """d(ab)/da = b, d(ab)/db = a."""

    @staticmethod
    def forward(ctx, a, b):
        a, b = _promote(a, b)
        return a * b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        return grad_for(a, lambda: g * b), grad_for(b, lambda: g * a)


class Div(Function):
    """d(a/b)/da = 1/b, d(a/b)/db = -a/b^2."""

    @staticmethod
    def forward(ctx, a, b):
        a, b = _promote(a, b)
        out = a / b
        if out.dtype == np.float64 and not (
            getattr(a, "dtype", None) == np.float64 or getattr(b, "dtype", None) == np.float64
        ):
            out = out.astype(np.float32)  # int / int -> float32, as in PyTorch
        return out

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        return grad_for(a, lambda: g / b), grad_for(b, lambda: -g * a / (b * b))


class Pow(Function):
    """d(a^b)/da = b a^(b-1), d(a^b)/db = a^b log a (taken as 0 where a <= 0)."""

    @staticmethod
    def forward(ctx, a, b):
        a, b = _promote(a, b)
        return a ** b

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs

        def grad_b():
            a_t = a if isinstance(a, Tensor) else Tensor(a, dtype=g.dtype, device=g.device)
            positive = a_t.data > 0
            safe_a = where(positive, a_t, 1.0)
            return g * where(positive, ctx.output * log(safe_a), 0.0)

        return grad_for(a, lambda: g * b * a ** (b - 1)), grad_for(b, grad_b)


class Maximum(Function):
    """max(a, b) (or min, ``largest=False``): the gradient goes to the winning input; ties split it evenly."""

    @staticmethod
    def forward(ctx, a, b, largest=True):
        a, b = _promote(a, b)
        xp = backend.array_module(a if hasattr(a, "shape") else b)
        ctx.a_wins = xp.where(a > b if largest else a < b, 1.0, xp.where(a == b, 0.5, 0.0)).astype(
            np.result_type(a, b))
        return xp.maximum(a, b) if largest else xp.minimum(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.inputs
        return grad_for(a, lambda: g * ctx.a_wins), grad_for(b, lambda: g * (1.0 - ctx.a_wins))


class Neg(Function):
    """d(-x)/dx = -1."""

    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, g):
        return -g


class Exp(Function):
    """d e^x / dx = e^x (the saved output)."""

    @staticmethod
    def forward(ctx, a):
        return backend.array_module(a).exp(a)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.output


class Log(Function):
    """d log x / dx = 1/x."""

    @staticmethod
    def forward(ctx, a):
        return backend.array_module(a).log(a)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.inputs[0]


class Sin(Function):
    """d sin x / dx = cos x."""

    @staticmethod
    def forward(ctx, a):
        return backend.array_module(a).sin(a)

    @staticmethod
    def backward(ctx, g):
        return g * cos(ctx.inputs[0])


class Cos(Function):
    """d cos x / dx = -sin x."""

    @staticmethod
    def forward(ctx, a):
        return backend.array_module(a).cos(a)

    @staticmethod
    def backward(ctx, g):
        return -g * sin(ctx.inputs[0])


class Sqrt(Function):
    """d sqrt(x)/dx = 1 / (2 sqrt(x))."""

    @staticmethod
    def forward(ctx, a):
        return backend.array_module(a).sqrt(a)

    @staticmethod
    def backward(ctx, g):
        return g / (2.0 * ctx.output)


class Abs(Function):
    """d|x|/dx = sign(x) (0 at 0, as in PyTorch)."""

    @staticmethod
    def forward(ctx, a):
        xp = backend.array_module(a)
        ctx.sign = xp.sign(a)
        return xp.abs(a)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.sign


class Clamp(Function):
    """Gradient passes where min <= x <= max, else 0."""

    @staticmethod
    def forward(ctx, a, min=None, max=None):
        xp = backend.array_module(a)
        inside = xp.ones(a.shape, dtype=bool)
        if min is not None:
            inside &= a >= min
        if max is not None:
            inside &= a <= max
        ctx.inside = inside
        return xp.clip(a, min, max)

    @staticmethod
    def backward(ctx, g):
        return g * ctx.inside


class Where(Function):
    """where(c, a, b): gradient to ``a`` where ``c``, to ``b`` elsewhere."""

    @staticmethod
    def forward(ctx, cond, a, b):
        a, b = _promote(a, b)
        xp = backend.array_module(cond)
        ctx.cond = cond
        return xp.where(cond, a, b)

    @staticmethod
    def backward(ctx, g):
        _, a, b = ctx.inputs
        return (None, grad_for(a, lambda: where(ctx.cond, g, 0.0)),
                grad_for(b, lambda: where(ctx.cond, 0.0, g)))


class Cast(Function):
    """A dtype change; the gradient is cast back."""

    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return g.to(dtype=ctx.dtype), None


class ToDevice(Function):
    """A copy to another device; the gradient is copied back."""

    @staticmethod
    def forward(ctx, a, device):
        ctx.device = backend.device_of(a)
        return backend.to_device(a, device)

    @staticmethod
    def backward(ctx, g):
        return g.to(ctx.device), None


class Clone(Function):
    """A copy with its own memory; d copy(x)/dx = 1, so the gradient passes through unchanged."""

    @staticmethod
    def forward(ctx, a):
        return a.copy()

    @staticmethod
    def backward(ctx, g):
        return g


# --------------------------------------------------------------------------- public API
def _apply_binary(fn, name, a, b, **options):
    """``fn`` on two operands (Tensors, numbers or arrays) that broadcast together."""
    a, b = _operand(a, name, "a"), _operand(b, name, "b")
    _check_devices(name, a, b)
    try:
        return fn.apply(a, b, **options)
    except ValueError as err:  # NumPy's broadcasting error, restated for the op
        if "broadcast" not in str(err):
            raise
        raise ValueError(f"{name}: shapes {shape_of(a)} and {shape_of(b)} cannot be "
                         "broadcast together") from None


def _binary(fn, name):
    def op(a, b):
        return _apply_binary(fn, name, a, b)

    op.__name__ = name
    op.__doc__ = fn.__doc__
    return op


add = _binary(Add, "add")
sub = _binary(Sub, "sub")
mul = _binary(Mul, "mul")
div = _binary(Div, "div")
pow = _binary(Pow, "pow")
maximum = _binary(Maximum, "maximum")


def minimum(a, b):
    """min(a, b), element-wise; the gradient goes to the smaller input (ties split it evenly)."""
    return _apply_binary(Maximum, "minimum", a, b, largest=False)


@tensor_args("x")
def neg(x):
    """Element-wise negation ``-x``."""
    return Neg.apply(x)


@tensor_args("x")
def exp(x):
    """Element-wise exponential e^x."""
    return Exp.apply(x)


@tensor_args("x")
def log(x):
    """Element-wise natural logarithm."""
    return Log.apply(x)


@tensor_args("x")
def sin(x):
    """Element-wise sine."""
    return Sin.apply(x)


@tensor_args("x")
def cos(x):
    """Element-wise cosine."""
    return Cos.apply(x)


@tensor_args("x")
def sqrt(x):
    """Element-wise square root."""
    return Sqrt.apply(x)


@tensor_args("x")
def abs(x):  # noqa: A001 - PyTorch's name
    """Element-wise absolute value (its gradient at 0 is 0, as in PyTorch)."""
    return Abs.apply(x)


@tensor_args("x")
def square(x):
    """Element-wise ``x * x``."""
    return mul(x, x)


@tensor_args("x")
def rsqrt(x):
    """Element-wise ``1 / sqrt(x)``."""
    return div(1.0, sqrt(x))


@tensor_args("x")
def reciprocal(x):
    """Element-wise ``1 / x``."""
    return div(1.0, x)


@tensor_args("x")
def clamp(x, min=None, max=None):  # noqa: A002 - PyTorch's names
    """Clip to [min, max]; tensor bounds are handled as maximum/minimum."""
    if isinstance(min, Tensor):
        x, min = maximum(x, min), None
    if isinstance(max, Tensor):
        x, max = minimum(x, max), None
    if min is None and max is None:
        return x
    return Clamp.apply(x, min=min, max=max)


clip = clamp


def where(condition, a, b):
    """Element-wise ``a if condition else b`` (all three broadcast)."""
    cond = condition.data if isinstance(condition, Tensor) else condition
    if not hasattr(cond, "dtype"):
        raise TypeError(f"where: condition must be a Tensor or an array, got {type(condition).__name__}")
    if getattr(cond, "dtype", None) != np.bool_:
        cond = backend.array_module(cond).asarray(cond).astype(bool)
    a, b = _operand(a, "where", "a"), _operand(b, "where", "b")
    _check_devices("where", a, b)
    return Where.apply(cond, a, b)


@tensor_args("x")
def cast(x, dtype):
    """``x`` converted to ``dtype``; the gradient is cast back to ``x``'s dtype (see :meth:`Tensor.to`)."""
    return Cast.apply(x, dtype)


@tensor_args("x")
def to_device(x, device):
    """A copy of ``x`` on ``device``; the gradient is copied back to ``x``'s device."""
    return ToDevice.apply(x, device)


@tensor_args("x")
def clone(x):
    """A copy with its own memory that stays in the graph (gradients flow back to the original)."""
    return Clone.apply(x)


@tensor_args("x")
def sign(x):
    """Element-wise sign (no gradient: the derivative is 0 almost everywhere)."""
    return Tensor._wrap(x.xp.sign(x.data))


def compare(name, a, b):
    """Comparisons and logical ops return boolean tensors and carry no gradient."""
    xp = backend.array_module(a.data if isinstance(a, Tensor) else b.data)
    a = a.data if isinstance(a, Tensor) else a
    b = b.data if isinstance(b, Tensor) else b
    return Tensor._wrap(getattr(xp, name)(a, b))


@tensor_args("x")
def logical_not(x):
    """Element-wise logical not (``~x``) as a boolean tensor; no gradient."""
    return Tensor._wrap(x.xp.logical_not(x.data))


@tensor_args("x")
def isnan(x):
    """A boolean tensor, True where ``x`` is NaN."""
    return Tensor._wrap(x.xp.isnan(x.data))


@tensor_args("x")
def isinf(x):
    """A boolean tensor, True where ``x`` is +inf or -inf."""
    return Tensor._wrap(x.xp.isinf(x.data))


@tensor_args("x")
def isfinite(x):
    """A boolean tensor, True where ``x`` is neither NaN nor infinite."""
    return Tensor._wrap(x.xp.isfinite(x.data))


def eq(a, b):
    """Element-wise ``a == b`` as a boolean tensor; no gradient."""
    return compare("equal", a, b)


def allclose(a, b, rtol=1e-5, atol=1e-8):
    """Whether ``|a - b| <= atol + rtol * |b|`` everywhere (NumPy's ``allclose``), as a Python bool."""
    xp = a.xp
    return bool(xp.allclose(a.data, b.data if isinstance(b, Tensor) else b, rtol=rtol, atol=atol))
