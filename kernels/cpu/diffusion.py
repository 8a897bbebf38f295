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
    for i in numba.prange(x.size):
        out[i] = c1 * (x[i] - c2 * eps[i]) + sigma * noise[i]


def _p_mean_body(x, eps, c1, c2, out):
    for i in numba.prange(x.size):
        out[i] = c1 * (x[i] - c2 * eps[i])


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
    return np.ascontiguousarray(x, dtype=dtype).reshape(-1)


def diffusion_q_sample(x0, noise, a, b):
    """See the reference; one pass, coefficients cast to the data's dtype."""
    dt = x0.dtype
    n = x0.shape[0]
    out = np.empty(x0.shape, dtype=dt)
    _pick("q", x0.size)(np.ascontiguousarray(x0).reshape(n, -1), np.ascontiguousarray(noise, dtype=dt).reshape(n, -1),
                        np.ascontiguousarray(a, dtype=dt), np.ascontiguousarray(b, dtype=dt), out.reshape(n, -1))
    return out


def diffusion_p_sample(x_t, eps, noise, c1, c2, sigma):
    """See the reference; one pass."""
    dt = x_t.dtype
    out = np.empty(x_t.shape, dtype=dt)
    x, e = _flat(x_t, dt), _flat(eps, dt)
    if noise is None:
        _pick("mean", x.size)(x, e, dt.type(c1), dt.type(c2), out.reshape(-1))
    else:
        _pick("p", x.size)(x, e, _flat(noise, dt), dt.type(c1), dt.type(c2), dt.type(sigma), out.reshape(-1))
    return out
