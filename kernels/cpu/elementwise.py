"""Element-wise Numba kernels (and the fused Bernoulli log-likelihood, an element-wise sum)."""
import math

import numba
import numpy as np


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf(x):
    """The error function, compiled (NumPy has none)."""
    return math.erf(x)


@numba.vectorize(["float32(float32)", "float64(float64)"], target="parallel", cache=True)
def softplus(x):
    """log(1 + e^x) as max(x, 0) + log1p(e^{-|x|}): never overflows; one pass, both cores.

    NumPy's ``logaddexp(0, x)`` is about 18 ns per element here; this is ~10x less.
    """
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


@numba.njit(parallel=True, fastmath=True, cache=True)
def _bernoulli_rows(logits, x, out):
    n, d = logits.shape
    m = x.shape[0]
    for i in numba.prange(n):
        row = i % m
        acc = 0.0                       # float64 accumulator: 784 terms per image
        for j in range(d):
            v = logits[i, j]
            acc += x[row, j] * v - (max(v, 0.0) + math.log1p(math.exp(-abs(v))))
        out[i] = acc


def bernoulli_log_likelihood(logits, x):
    """One pass per row of logits instead of five array passes (multiply, softplus, subtract, copy, sum)."""
    out = np.empty(logits.shape[0], dtype=logits.dtype)
    _bernoulli_rows(np.ascontiguousarray(logits), np.ascontiguousarray(x, dtype=logits.dtype), out)
    return out


def _momentum_ascent_body(param, velocity, grad, lr, momentum, weight_decay):
    for i in numba.prange(param.size):
        step = momentum * velocity[i] + lr * (grad[i] - weight_decay * param[i])
        velocity[i] = step
        param[i] += step


# Starting the worker threads costs ~70 µs here: more than the whole update of a bias vector.
_momentum_ascent_serial = numba.njit(fastmath=True, cache=True)(_momentum_ascent_body)
_momentum_ascent_parallel = numba.njit(parallel=True, fastmath=True, cache=True)(_momentum_ascent_body)
PARALLEL_MIN_SIZE = 1 << 16


def momentum_ascent_step(param, velocity, grad, lr, momentum, weight_decay):
    """One pass over the parameters instead of five NumPy passes and two temporaries
    (an RBM's 784×500 weights: ~0.9 ms per step → ~0.08 ms)."""
    if not (param.flags.c_contiguous and velocity.flags.c_contiguous):
        raise ValueError("momentum_ascent_step: param and velocity must be C-contiguous (updated in place)")
    dt = param.dtype.type
    kernel = _momentum_ascent_parallel if param.size >= PARALLEL_MIN_SIZE else _momentum_ascent_serial
    kernel(param.reshape(-1), velocity.reshape(-1), np.ascontiguousarray(grad, param.dtype).reshape(-1),
           dt(lr), dt(momentum), dt(weight_decay))


@numba.vectorize(["float32(float32)", "float64(float64)"], target="parallel", cache=True)
def silu(x):
    """x σ(x) in one pass (the engine's x * sigmoid(x) makes five). exp(-x) may overflow to inf for
    x < -88 in float32: then σ = 0 and the result is the correct 0·x = -0, never NaN."""
    return x / (1.0 + math.exp(-x))


@numba.vectorize(["float32(float32, float32)", "float64(float64, float64)"], target="parallel", cache=True)
def silu_backward(x, g):
    """g σ(x)(1 + x(1 − σ(x))), σ recomputed rather than stored."""
    s = 1.0 / (1.0 + math.exp(-x))
    return g * s * (1.0 + x * (1.0 - s))
