"""Fused diffusion steps (Eq. DIF-4, DIF-14): one pass over the batch instead of three to five
NumPy passes, each allocating a temporary of the batch's size."""
import numba
import numpy as np


def _q_sample_body(x0, noise, a, b, out):
    n, d = x0.shape
    for i in numba.prange(n):
        ai, bi = a[i], b[i]
        for j in range(d):
            out[i, j] = ai * x0[i, j] + bi * noise[i, j]


def _p_sample_body(x, eps, noise, c1, c2, sigma, out):
    c1c2 = c1 * c2                    # c1 (x − c2 ε) + σ z as three fused multiply-adds
    for i in numba.prange(x.size):
        out[i] = c1 * x[i] - c1c2 * eps[i] + sigma * noise[i]


def _p_mean_body(x, eps, c1, c2, out):
    c1c2 = c1 * c2
    for i in numba.prange(x.size):
        out[i] = c1 * x[i] - c1c2 * eps[i]


# Waking Numba's worker threads costs more than a (64, 1, 28, 28) update itself; batches of
# diffusion images are memory-bound streams, so the parallel versions start at larger sizes.
PARALLEL_MIN_SIZE = 1 << 18
_serial = {name: numba.njit(fastmath=True, cache=True)(body)
           for name, body in (("q", _q_sample_body), ("p", _p_sample_body), ("mean", _p_mean_body))}
_parallel = {name: numba.njit(parallel=True, fastmath=True, cache=True)(body)
             for name, body in (("q", _q_sample_body), ("p", _p_sample_body), ("mean", _p_mean_body))}


def _pick(name, size):
    return (_parallel if size >= PARALLEL_MIN_SIZE else _serial)[name]


def _flat(x, dtype):
    """A 1-D view when x already is C-contiguous ``dtype`` (ravel: ~0.1 µs, a sizeable part of a ~11 µs
    step), a converted copy otherwise."""
    return x.ravel() if x.dtype == dtype and x.flags.c_contiguous else np.ascontiguousarray(x, dtype=dtype).ravel()


def diffusion_q_sample(x0, noise, a, b):
    """See the reference; one pass, coefficients cast to the data's dtype."""
    dt = x0.dtype
    n = x0.shape[0]
    out = np.empty(x0.shape, dtype=dt)
    _pick("q", x0.size)(np.ascontiguousarray(x0).reshape(n, -1), np.ascontiguousarray(noise, dtype=dt).reshape(n, -1),
                        np.ascontiguousarray(a, dtype=dt), np.ascontiguousarray(b, dtype=dt), out.reshape(n, -1))
    return out


def diffusion_p_sample(x_t, eps, noise, c1, c2, sigma, out=None):
    """See the reference; one pass (into ``out``, the sampler's other buffer, when given)."""
    dt = x_t.dtype
    if out is None:
        out = np.empty(x_t.shape, dtype=dt)
    elif out.shape != x_t.shape or out.dtype != dt or not out.flags.c_contiguous:
        raise ValueError(f"diffusion_p_sample: out must be a C-contiguous {dt} array of shape {x_t.shape}, "
                         f"got {out.dtype} {out.shape}")
    x, e = _flat(x_t, dt), _flat(eps, dt)
    if noise is None:
        _pick("mean", x.size)(x, e, dt.type(c1), dt.type(c2), out.ravel())
    else:
        _pick("p", x.size)(x, e, _flat(noise, dt), dt.type(c1), dt.type(c2), dt.type(sigma), out.ravel())
    return out
