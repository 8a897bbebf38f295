"""Element-wise Numba kernels (and the fused Bernoulli log-likelihood, an element-wise sum)."""
import math

import numba
import numpy as np

from ._compile import serial_and_parallel


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf(x):
    """The error function, compiled (NumPy has none)."""
    return math.erf(x)


def _softplus_body(x, out):
    for i in numba.prange(x.size):
        v = x[i]
        out[i] = max(v, 0.0) + math.log1p(math.exp(-abs(v)))


_softplus = serial_and_parallel(_softplus_body)


def softplus(x):
    """log(1 + e^x) as max(x, 0) + log1p(e^{-|x|}): never overflows; one pass, both cores for large arrays.

    NumPy's ``logaddexp(0, x)`` is about 18 ns per element here; this is ~10x less. Small arrays (a GAN's
    batch of logits) stay on one thread: Numba's parallel ufunc cost ~100 µs per call there.
    """
    x = np.asarray(x, dtype=x.dtype if x.dtype.kind == "f" else np.float64, order="C")   # 0-d stays 0-d
    out = np.empty(x.shape, x.dtype)
    _softplus[x.size >= PARALLEL_MIN_SIZE](x.reshape(-1), out.reshape(-1))
    return out


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
_momentum_ascent = serial_and_parallel(_momentum_ascent_body, fastmath=True)
PARALLEL_MIN_SIZE = 1 << 16


def momentum_ascent_step(param, velocity, grad, lr, momentum, weight_decay):
    """One pass over the parameters instead of five NumPy passes and two temporaries
    (an RBM's 784×500 weights: ~0.9 ms per step → ~0.08 ms)."""
    if not (param.flags.c_contiguous and velocity.flags.c_contiguous):
        raise ValueError("momentum_ascent_step: param and velocity must be C-contiguous (updated in place)")
    dt = param.dtype.type
    _momentum_ascent[param.size >= PARALLEL_MIN_SIZE](
        param.reshape(-1), velocity.reshape(-1), np.ascontiguousarray(grad, param.dtype).reshape(-1),
        dt(lr), dt(momentum), dt(weight_decay))


def _adam_body(param, exp_avg, exp_avg_sq, vmax, grad, b1c, b2, b2c, step_size, c, eps, amsgrad):
    for i in numba.prange(param.size):
        g = grad[i]
        m = exp_avg[i] + b1c * (g - exp_avg[i])
        v = b2 * exp_avg_sq[i] + b2c * (g * g)
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if amsgrad:
            v = max(vmax[i], v)
            vmax[i] = v
        param[i] -= step_size * (m / (np.sqrt(v) / c + eps))


# IEEE arithmetic, no fast-math: a NaN gradient must reach the parameters (the anomaly mode reports it
# there) instead of being assumed away, and 0/0 must give NaN rather than raise.
_adam = serial_and_parallel(_adam_body, error_model="numpy")


def adam_update(param, exp_avg, exp_avg_sq, grad, beta1, beta2, step_size, bias_correction2_sqrt, eps,
                max_exp_avg_sq=None):
    """One pass instead of the reference's eleven (see there); the scalars are cast to the parameter's
    dtype first, as NumPy does with Python floats. Arrays that are not C-contiguous (a parameter that is a
    view) take the reference, which updates views in place."""
    state = (param, exp_avg, exp_avg_sq) + (() if max_exp_avg_sq is None else (max_exp_avg_sq,))
    if not all(a.flags.c_contiguous for a in state):
        from .. import reference
        return reference.adam_update(param, exp_avg, exp_avg_sq, grad, beta1, beta2, step_size,
                                     bias_correction2_sqrt, eps, max_exp_avg_sq)
    dt = param.dtype.type
    amsgrad = max_exp_avg_sq is not None
    _adam[param.size >= PARALLEL_MIN_SIZE](
        param.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
        (max_exp_avg_sq if amsgrad else exp_avg_sq).reshape(-1),      # read only with AMSGrad
        np.ascontiguousarray(grad, param.dtype).reshape(-1), dt(1 - beta1), dt(beta2), dt(1 - beta2),
        dt(step_size), dt(bias_correction2_sqrt), dt(eps), amsgrad)


# --------------------------------------------------------------------------- SiLU, with a vectorised exp
# Numba calls libm's scalar ``expf`` per element (LLVM vectorises it only with Intel's SVML, which
# pip's llvmlite lacks): SiLU ran at ~3 ns per element, a tenth of a U-Net step. Cephes' expf spelled
# out in arithmetic vectorises (8 float32 lanes with AVX2): ~4x faster, within 1e-6 relative.
_LOG2E = np.float32(1.4426950408889634)
_LN2_HI, _LN2_LO = np.float32(0.693359375), np.float32(-2.12194440e-4)     # ln 2 = hi + lo, exactly
_P0, _P1, _P2 = np.float32(1.9875691500e-4), np.float32(1.3981999507e-3), np.float32(8.3334519073e-3)
_P3, _P4, _P5 = np.float32(4.1665795894e-2), np.float32(1.6666665459e-1), np.float32(5.0000001201e-1)
_BLOCK = 2048                                   # scratch per block stays in L1
# Contraction into FMAs only: reassociation would merge ln 2's two halves and lose the reduction's accuracy.
_EXACT_ENOUGH = {"contract", "arcp"}


@numba.njit(fastmath=_EXACT_ENOUGH, cache=True, inline="always")
def _exp_neg_block(x, lo, hi, e, bits):
    """e[j] = exp(-x[lo + j]) for float32, j < hi − lo: exp(v) = p(r)·2^k with k = round(v log₂e),
    r = v − k ln 2 and p Cephes' degree-6 polynomial; 2^k is built in the exponent bits (int32 scratch)."""
    for i in range(lo, hi):
        v = min(max(-x[i], np.float32(-87.0)), np.float32(88.0))    # e^-87 > smallest normal float32
        k = np.floor(v * _LOG2E + np.float32(0.5))
        r = v - k * _LN2_HI - k * _LN2_LO
        p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
        e[i - lo] = p * r * r + r + np.float32(1.0)
        bits[i - lo] = (np.int32(k) + np.int32(127)) << np.int32(23)
    scale = bits.view(np.float32)
    for j in range(hi - lo):
        e[j] *= scale[j]


def _silu_f32_body(x, out):
    for b in numba.prange((x.size + _BLOCK - 1) // _BLOCK):
        lo, hi = b * _BLOCK, min(x.size, (b + 1) * _BLOCK)
        e, bits = np.empty(_BLOCK, np.float32), np.empty(_BLOCK, np.int32)
        _exp_neg_block(x, lo, hi, e, bits)
        for i in range(lo, hi):
            out[i] = x[i] / (np.float32(1.0) + e[i - lo])


def _silu_backward_f32_body(x, g, out):
    for b in numba.prange((x.size + _BLOCK - 1) // _BLOCK):
        lo, hi = b * _BLOCK, min(x.size, (b + 1) * _BLOCK)
        e, bits = np.empty(_BLOCK, np.float32), np.empty(_BLOCK, np.int32)
        _exp_neg_block(x, lo, hi, e, bits)
        for i in range(lo, hi):
            s = np.float32(1.0) / (np.float32(1.0) + e[i - lo])
            out[i] = g[i] * s * (np.float32(1.0) + x[i] * (np.float32(1.0) - s))


_silu_f32 = serial_and_parallel(_silu_f32_body, fastmath=_EXACT_ENOUGH)
_silu_backward_f32 = serial_and_parallel(_silu_backward_f32_body, fastmath=_EXACT_ENOUGH)


@numba.vectorize(["float64(float64)"], target="parallel", cache=True)
def _silu_f64(x):
    return x / (1.0 + math.exp(-x))


@numba.vectorize(["float64(float64, float64)"], target="parallel", cache=True)
def _silu_backward_f64(x, g):
    s = 1.0 / (1.0 + math.exp(-x))
    return g * s * (1.0 + x * (1.0 - s))


def silu(x):
    """x σ(x) in one pass (the engine's x * sigmoid(x) makes five). Large negative x gives the correct
    -0 (float64: exp overflows to inf, σ = 0; float32: exp clamped at e^87), never NaN."""
    if x.dtype != np.float32:
        return _silu_f64(x).astype(x.dtype, copy=False)
    x = np.asarray(x, order="C")
    out = np.empty(x.shape, np.float32)
    _silu_f32[x.size >= PARALLEL_MIN_SIZE](x.reshape(-1), out.reshape(-1))
    return out


def silu_backward(x, g):
    """g σ(x)(1 + x(1 − σ(x))), σ recomputed rather than stored."""
    if x.dtype != np.float32:
        return _silu_backward_f64(x, g).astype(x.dtype, copy=False)
    x, g = np.asarray(x, order="C"), np.asarray(g, dtype=np.float32, order="C")
    out = np.empty(x.shape, np.float32)
    _silu_backward_f32[x.size >= PARALLEL_MIN_SIZE](x.reshape(-1), g.reshape(-1), out.reshape(-1))
    return out
