"""CuPy kernels for block Gibbs sampling in a Bernoulli-Bernoulli RBM (Eq. EBM-11).

As on the CPU (``kernels/cpu/gibbs.py``): the matrix product goes to cuBLAS
(``cupy.matmul`` with ``out=``), then one element-wise kernel reads the product in
place, adds the bias, applies the sigmoid in the reference's form
``0.5 + 0.5 tanh(x/2)`` (no overflow for any x) and writes both ``p`` (over the
product) and the 0/1 sample ``[u < p]``.

The ``*_seeded`` variants draw ``u`` inside the kernel with the counter-based
SplitMix64 hash of the CPU module (same constants, same flat index), so for a given
``(seed, stream)`` they give the same uniforms as ``counter_uniforms`` and the
Numba kernels, up to the rounding of p.
"""
import cupy

from ..cpu.gibbs import stream_key

# p is an output that holds the matmul result on entry: CuPy passes out-params by
# reference, so the kernel reads the pre-activation and overwrites it with p.
_SIGMOID = "T y = p + bias; p = (T)0.5 + (T)0.5 * tanh((T)0.5 * y);"

_bias_sigmoid_sample = cupy.ElementwiseKernel(
    "T bias, T u", "T p, T s",
    _SIGMOID + " s = u < p ? (T)1 : (T)0;",
    "minigen_rbm_bias_sigmoid_sample")

# i is the flat (C-order) index of the element; the uniform is the (i+1)-th output of
# SplitMix64 started at key, with 24 (float) or 53 (double) random bits.
_bias_sigmoid_sample_seeded = cupy.ElementwiseKernel(
    "T bias, uint64 key", "T p, T s",
    _SIGMOID + """
    unsigned long long z = key + (unsigned long long)(i + 1) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    T u = sizeof(T) == 4 ? (T)(z >> 40) * (T)5.9604644775390625e-08    /* 2^-24 */
                         : (T)(z >> 11) * (T)1.1102230246251565e-16;   /* 2^-53 */
    s = u < p ? (T)1 : (T)0;
    """,
    "minigen_rbm_bias_sigmoid_sample_seeded")


def _sample(x, W, bias, u, transpose):
    dtype = x.dtype
    W, bias = W.astype(dtype, copy=False), bias.astype(dtype, copy=False).reshape(-1)
    p = cupy.matmul(x, W.T if transpose else W)        # cuBLAS, a fresh array we own
    s = cupy.empty_like(p)
    if isinstance(u, cupy.ndarray):
        _bias_sigmoid_sample(bias, u.astype(dtype, copy=False), p, s)
    else:                                              # a stream key (seeded variants)
        _bias_sigmoid_sample_seeded(bias, u, p, s)
    return p, s


def rbm_sample_hidden(v, W, c, u):
    """``p = sigma(vW + c)``, ``h = [u < p]``; returns ``(p, h)``, (B, n_h) in the dtype of ``v``."""
    return _sample(v, W, c, u, transpose=False)


def rbm_sample_visible(h, W, b, u):
    """``p = sigma(hW^T + b)``, ``v = [u < p]``; returns ``(p, v)``, (B, n_v) in the dtype of ``h``."""
    return _sample(h, W, b, u, transpose=True)


def _chain(h, W, b, c, k, uniforms):
    """k Gibbs steps into four buffers allocated once; ``uniforms(t, layer)`` gives step t's u."""
    if k == 0:                                         # as the reference
        return None, None, None, None
    dtype = h.dtype
    W = W.astype(dtype, copy=False)
    b, c = b.astype(dtype, copy=False).reshape(-1), c.astype(dtype, copy=False).reshape(-1)
    batch, (n_v, n_h) = h.shape[0], W.shape
    p_v, v = cupy.empty((batch, n_v), dtype), cupy.empty((batch, n_v), dtype)
    p_h, h_t = cupy.empty((batch, n_h), dtype), cupy.empty((batch, n_h), dtype)
    for t in range(k):
        cupy.matmul(h if t == 0 else h_t, W.T, out=p_v)
        u = uniforms(t, 0)
        if isinstance(u, cupy.ndarray):
            _bias_sigmoid_sample(b, u, p_v, v)
        else:
            _bias_sigmoid_sample_seeded(b, u, p_v, v)
        cupy.matmul(v, W, out=p_h)
        u = uniforms(t, 1)
        if isinstance(u, cupy.ndarray):
            _bias_sigmoid_sample(c, u, p_h, h_t)
        else:
            _bias_sigmoid_sample_seeded(c, u, p_h, h_t)
    return p_v, v, p_h, h_t


def rbm_gibbs_chain(h, W, b, c, u_v, u_h):
    """k steps of block Gibbs sampling from ``h`` (B, n_h) with uniforms ``u_v`` (k, B, n_v),
    ``u_h`` (k, B, n_h); returns ``(p_v, v, p_h, h)`` of the last step."""
    u_v, u_h = u_v.astype(h.dtype, copy=False), u_h.astype(h.dtype, copy=False)
    return _chain(h, W, b, c, u_v.shape[0], lambda t, layer: (u_v, u_h)[layer][t])


def rbm_sample_hidden_seeded(v, W, c, seed, stream):
    """``rbm_sample_hidden`` with in-kernel uniforms ``counter_uniforms(seed, stream, ...)``."""
    return _sample(v, W, c, stream_key(seed, stream), transpose=False)


def rbm_sample_visible_seeded(h, W, b, seed, stream):
    """``rbm_sample_visible`` with in-kernel uniforms ``counter_uniforms(seed, stream, ...)``."""
    return _sample(h, W, b, stream_key(seed, stream), transpose=True)


def rbm_gibbs_chain_seeded(h, W, b, c, k, seed, stream=0):
    """``rbm_gibbs_chain`` with in-kernel uniforms: step t uses streams ``stream + 2t`` (v)
    and ``stream + 2t + 1`` (h), as on the CPU."""
    return _chain(h, W, b, c, k, lambda t, layer: stream_key(seed, stream + 2 * t + layer))
