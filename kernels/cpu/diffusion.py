"""Fused diffusion steps (Eq. DIF-4, DIF-14): one pass over the batch instead of three to five
NumPy passes, each allocating a temporary of the batch's size."""
import numba
import numpy as np

from ._compile import serial_and_parallel


def _q_sample_body(x0, noise, a, b, out):
    n, d = x0.shape
    for i in numba.prange(n):
        ai, bi = a[i], b[i]
        for j in range(d):
            out[i, j] = ai * x0[i, j] + bi * noise[i, j]


def _p_sample_body(x, eps, noise, c1, c2, sigma, out):
    t = out.dtype.type                # float64 coefficients cast once, so the loop stays in the data's dtype
    a, b, s = t(c1), t(c1 * c2), t(sigma)   # c1 (x − c2 ε) + σ z as three fused multiply-adds
    for i in numba.prange(out.size):
        out[i] = a * x[i] - b * eps[i] + s * noise[i]


def _p_sample_in_place_body(x, eps, noise, c1, c2, sigma):
    # The sampler's case: x_{t−1} overwrites x_t. A quarter less memory traffic than a separate output
    # (its cache lines need no read-for-ownership), and LLVM vectorises it without an aliasing check.
    t = x.dtype.type
    a, b, s = t(c1), t(c1 * c2), t(sigma)
    for i in numba.prange(x.size):
        x[i] = a * x[i] - b * eps[i] + s * noise[i]


def _p_mean_body(x, eps, c1, c2, out):
    t = out.dtype.type
    a, b = t(c1), t(c1 * c2)
    for i in numba.prange(out.size):
        out[i] = a * x[i] - b * eps[i]


# Waking Numba's worker threads costs more than a (64, 1, 28, 28) update itself; batches of
# diffusion images are memory-bound streams, so the parallel versions start at larger sizes.
PARALLEL_MIN_SIZE = 1 << 18
_BODIES = {"q": _q_sample_body, "p": _p_sample_body, "p_in_place": _p_sample_in_place_body, "mean": _p_mean_body}
_VERSIONS = {name: serial_and_parallel(body, fastmath=True) for name, body in _BODIES.items()}


def _pick(name, size):
    return _VERSIONS[name][size >= PARALLEL_MIN_SIZE]


def diffusion_q_sample(x0, noise, a, b):
    """See the reference; one pass, coefficients cast to the data's dtype."""
    dt = x0.dtype
    n = x0.shape[0]
    out = np.empty(x0.shape, dtype=dt)
    _pick("q", x0.size)(np.ascontiguousarray(x0).reshape(n, -1), np.ascontiguousarray(noise, dtype=dt).reshape(n, -1),
                        np.ascontiguousarray(a, dtype=dt), np.ascontiguousarray(b, dtype=dt), out.reshape(n, -1))
    return out


def diffusion_p_sample(x_t, eps, noise, c1, c2, sigma, out=None):
    """See the reference; one pass, into ``out`` when given (``out=x_t``: in place, the sampler's case).

    The update takes ~8 µs on a (64, 1, 28, 28) batch, so this wrapper counts every attribute lookup:
    ``ravel`` is a free view of a C-contiguous array (a copy otherwise, still correct), the coefficients
    travel as floats (cast to the data's dtype inside the kernel), and inputs of another dtype than x_t
    get their own compiled specialisation rather than a converted copy."""
    shape = x_t.shape
    if out is None:
        out = np.empty(shape, dtype=x_t.dtype)
    elif out.shape != shape or out.dtype != x_t.dtype or not out.flags.c_contiguous:
        raise ValueError(f"diffusion_p_sample: out must be a C-contiguous {x_t.dtype} array of shape {shape}, "
                         f"got {out.dtype} {out.shape}")
    if eps.shape != shape or (noise is not None and noise.shape != shape):
        raise ValueError(f"diffusion_p_sample: eps and noise must have x_t's shape {shape}, got {eps.shape} "
                         f"and {None if noise is None else noise.shape}")
    if noise is None:
        _pick("mean", out.size)(x_t.ravel(), eps.ravel(), c1, c2, out.ravel())
    elif out is x_t:
        _pick("p_in_place", out.size)(out.ravel(), eps.ravel(), noise.ravel(), c1, c2, sigma)
    else:
        _pick("p", out.size)(x_t.ravel(), eps.ravel(), noise.ravel(), c1, c2, sigma, out.ravel())
    return out
