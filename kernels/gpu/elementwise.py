"""Element-wise CuPy kernels."""
import cupy
import cupyx.scipy.special


def erf(x):
    """The error function (CuPy ships it in cupyx.scipy.special)."""
    return cupyx.scipy.special.erf(x)


# max(x, 0) + log1p(exp(-|x|)): the stable form, as on the CPU.
softplus = cupy.ElementwiseKernel(
    "T x", "T y", "y = max(x, (T)0) + log1p(exp(-abs(x)))", "minigen_softplus")


def bernoulli_log_likelihood(logits, x):
    """Row n of logits (N, D) against x[n % M]; the same broadcasting sum as the reference."""
    n, d = logits.shape
    rows = logits.reshape(n // x.shape[0], x.shape[0], d)
    return (x * rows - softplus(rows)).sum(axis=2, dtype=cupy.float64).astype(logits.dtype).reshape(n)


_momentum_ascent = cupy.ElementwiseKernel(
    "T grad, T lr, T momentum, T weight_decay", "T param, T velocity",
    """
    T step = momentum * velocity + lr * (grad - weight_decay * param);
    velocity = step;
    param += step;
    """, "minigen_momentum_ascent")


def momentum_ascent_step(param, velocity, grad, lr, momentum, weight_decay):
    """In place, one fused pass (see the reference)."""
    dt = param.dtype.type
    _momentum_ascent(grad.astype(param.dtype, copy=False), dt(lr), dt(momentum), dt(weight_decay), param, velocity)


silu = cupy.ElementwiseKernel("T x", "T y", "y = x / ((T)1 + exp(-x))", "minigen_silu")

silu_backward = cupy.ElementwiseKernel(
    "T x, T g", "T dx", "T s = (T)1 / ((T)1 + exp(-x)); dx = g * s * ((T)1 + x * ((T)1 - s))",
    "minigen_silu_backward")
