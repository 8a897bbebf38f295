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


_ADAM_MOMENTS = """
    exp_avg += b1c * (grad - exp_avg);
    exp_avg_sq = b2 * exp_avg_sq + b2c * (grad * grad);
"""
_ADAM_STEP = "param -= step_size * (exp_avg / (sqrt(v) / c + eps));"
_adam = cupy.ElementwiseKernel(
    "T grad, T b1c, T b2, T b2c, T step_size, T c, T eps", "T param, T exp_avg, T exp_avg_sq",
    _ADAM_MOMENTS + "T v = exp_avg_sq;" + _ADAM_STEP, "minigen_adam")
_adam_amsgrad = cupy.ElementwiseKernel(
    "T grad, T b1c, T b2, T b2c, T step_size, T c, T eps", "T param, T exp_avg, T exp_avg_sq, T max_exp_avg_sq",
    _ADAM_MOMENTS + "T v = max(max_exp_avg_sq, exp_avg_sq); max_exp_avg_sq = v;" + _ADAM_STEP,
    "minigen_adam_amsgrad")


def adam_update(param, exp_avg, exp_avg_sq, grad, beta1, beta2, step_size, bias_correction2_sqrt, eps,
                max_exp_avg_sq=None):
    """In place, one kernel launch instead of eleven (see the reference); scalars in the parameter's dtype."""
    dt = param.dtype.type
    scalars = (dt(1 - beta1), dt(beta2), dt(1 - beta2), dt(step_size), dt(bias_correction2_sqrt), dt(eps))
    state = (param, exp_avg, exp_avg_sq) + (() if max_exp_avg_sq is None else (max_exp_avg_sq,))
    kernel = _adam if max_exp_avg_sq is None else _adam_amsgrad
    kernel(grad.astype(param.dtype, copy=False), *scalars, *state)


silu = cupy.ElementwiseKernel("T x", "T y", "y = x / ((T)1 + exp(-x))", "minigen_silu")

silu_backward = cupy.ElementwiseKernel(
    "T x, T g", "T dx", "T s = (T)1 / ((T)1 + exp(-x)); dx = g * s * ((T)1 + x * ((T)1 - s))",
    "minigen_silu_backward")
