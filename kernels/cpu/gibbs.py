"""Numba kernels for block Gibbs sampling in a Bernoulli-Bernoulli RBM (Eq. EBM-11),
with the signatures of ``kernels/reference.py``.

One sampling step of a layer is a matrix product followed by element-wise work::

    a = v @ W            # BLAS: ~2 B n_v n_h flops, almost all of the time
    p = sigma(a + c)     # bias, sigmoid ...
    h = [u < p]          # ... and the Bernoulli draw

The matrix product stays in OpenBLAS (``np.dot`` with ``out=``, so it writes into a
buffer we own). Everything after it is *one* Numba pass over that buffer: it adds
the bias, overwrites the pre-activation with ``p`` and writes the 0/1 sample, with
no temporaries (NumPy needs five array passes and four temporaries for the same).

Sigmoid: ``p = 0.5 + 0.5 tanh(x/2)``, the reference's formula, so both round alike
and nothing overflows (tanh saturates at +-1 for any |x|). Without Intel's SVML,
Numba calls ``math.tanh`` one element at a time (~8 ns each); for float32 we use a
rational approximation instead (Eigen's ``ptanh_float``: odd degree-13 over even
degree-6, within 2-3 ulp of tanh), which LLVM vectorises to AVX-512: ~0.3 ns per
element, half of NumPy's (already SIMD) ``tanh`` and the passes around it. float64
keeps ``math.tanh``: it is the precision for checking, not for speed.
Two details make the loop vectorise: ``error_model="numpy"`` (Numba's default
checks every division for zero, and that branch stops vectorisation), and
contiguous rows.

Threads: one pass over a (100, 500) layer takes ~15 us on one core, while waking
Numba's ``workqueue`` pool (see ``minigen.backend``) costs ~70 us here, so the
pass runs on one core below ``PARALLEL_MIN_SIZE`` elements and over rows with
``prange`` above it. OpenBLAS uses both cores for the matmuls either way.

Counter-based uniforms (an option; the reference signatures are unchanged)
---------------------------------------------------------------------------
The reference takes its uniforms ``u`` as an array, and NumPy's ``Generator``
needs ~1.2 ns per float32 to make them: 12.8 M per CD-1 epoch on MNIST-sized
layers, more than the sigmoid passes. The ``*_seeded`` functions draw their own:
element ``n`` (flat, C order) of a layer sample uses

    bits = mix64(key + (n + 1) * 0x9E3779B97F4A7C15),   key = mix64(mix64(seed) + stream)
    u    = (bits >> 40) * 2**-24  (float32)    or    (bits >> 11) * 2**-53  (float64)

i.e. the n-th output of the SplitMix64 generator (Steele, Lea & Flood 2014; passes
BigCrush) started at ``key``. It is a pure function of ``(seed, stream, n)``: no
state, any order, any thread count, the same on the GPU (``kernels/gpu/gibbs.py``).
``counter_uniforms`` builds the same ``u`` with NumPy, so the seeded kernels are
checked against the reference exactly like the others::

    rbm_sample_hidden_seeded(v, W, c, seed, stream)
        == reference.rbm_sample_hidden(v, W, c, counter_uniforms(seed, stream, (B, n_h), v.dtype))

Use a new ``stream`` for every layer sample (e.g. a step counter); streams with
different keys are SplitMix64 sequences at pseudo-random offsets (a 2^-64-scale
chance that two overlap within a few million draws).
"""
import math

import numba
import numpy as np
from numba import types
from numba.extending import overload

#: Below this many elements the fused pass runs on one core (see the module notes).
PARALLEL_MIN_SIZE = 1 << 20

_JIT = dict(fastmath=True, error_model="numpy", cache=True)

# --------------------------------------------------------------------------- sigmoid

# Eigen's ptanh_float: tanh(x) ~ x P(x^2) / Q(x^2) on [-7.9053, 7.9053]; beyond it the
# float32 tanh is within 2 ulp of +-1 (the clamped value), and exactly +-1 past 9.1.
_TANH_CLAMP = np.float32(7.90531110763549805)
_A1, _A3, _A5, _A7, _A9, _A11, _A13 = (np.float32(a) for a in (
    4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
    -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16))
_B0, _B2, _B4, _B6 = (np.float32(b) for b in (
    4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06))
_TANH_ONE = np.float32(9.1)          # tanh(9.1) = 1 - 2.5e-8 rounds to 1 in float32
_HALF32, _ONE32 = np.float32(0.5), np.float32(1.0)


def _sigmoid(x):
    """sigma(x) = 0.5 + 0.5 tanh(x/2), in the precision of ``x`` (compiled by the overload below)."""
    return 0.5 + 0.5 * math.tanh(0.5 * x)


@overload(_sigmoid, inline="always", jit_options=dict(fastmath=True, error_model="numpy"))
def _sigmoid_typed(x):
    if x == types.float32:
        def sigmoid32(x):
            y = _HALF32 * x
            t = min(max(y, -_TANH_CLAMP), _TANH_CLAMP)
            t2 = t * t
            num = t * (_A1 + t2 * (_A3 + t2 * (_A5 + t2 * (_A7 + t2 * (_A9 + t2 * (_A11 + t2 * _A13))))))
            den = _B0 + t2 * (_B2 + t2 * (_B4 + t2 * _B6))
            r = num / den
            r = _ONE32 if y > _TANH_ONE else r       # where float32 tanh rounds to +-1,
            r = -_ONE32 if y < -_TANH_ONE else r     # so p is exactly 0 or 1 there, as in the reference
            return _HALF32 + _HALF32 * r
        return sigmoid32
    return lambda x: 0.5 + 0.5 * math.tanh(0.5 * x)  # float64: libm's tanh


# --------------------------------------------------------------------------- counter-based uniforms

_GOLDEN = 0x9E3779B97F4A7C15       # SplitMix64's increment: 2^64 / golden ratio, odd
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK64 = 2**64 - 1


def _mix64_numpy(z):
    """SplitMix64's finaliser on a uint64 array (wraps modulo 2^64, as intended)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
    return z ^ (z >> np.uint64(31))


def _mix64_int(z):
    """SplitMix64's finaliser on a Python int (for the one key per call; cheaper than NumPy)."""
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def stream_key(seed, stream):
    """The 64-bit key of ``(seed, stream)``: ``mix64(mix64(seed) + stream)``, as a ``np.uint64``."""
    return np.uint64(_mix64_int((_mix64_int(seed & _MASK64) + stream) & _MASK64))


def counter_uniforms(seed, stream, shape, dtype):
    """The uniforms the ``*_seeded`` kernels draw for ``(seed, stream)``, made with NumPy.

    The specification of the option (see the module notes); pass the result as ``u``
    to any ``rbm_sample_*`` to get the same sample as the seeded kernel.
    """
    n = np.arange(1, math.prod(shape) + 1, dtype=np.uint64)
    bits = _mix64_numpy(stream_key(seed, stream) + n * np.uint64(_GOLDEN))
    if np.dtype(dtype) == np.float32:
        u = (bits >> np.uint64(40)).astype(np.float32) * np.float32(2.0 ** -24)
    else:
        u = (bits >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
    return u.reshape(shape)


_G64, _M1, _M2 = np.uint64(_GOLDEN), np.uint64(_MIX1), np.uint64(_MIX2)
_S27, _S30, _S31, _S11, _S40 = (np.uint64(s) for s in (27, 30, 31, 11, 40))


@numba.njit(inline="always")
def _counter_bits(key, n):
    z = key + np.uint64(n + 1) * _G64          # all-uint64: int64 would mix to float64
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def _uniform_like(p, key, n):
    """Uniform number ``n`` of stream ``key`` in the dtype of ``p`` (compiled by the overload below)."""


@overload(_uniform_like, inline="always")
def _uniform_like_typed(p, key, n):
    if p == types.float32:
        return lambda p, key, n: np.float32(np.int64(_counter_bits(key, n) >> _S40)) * np.float32(2.0 ** -24)
    return lambda p, key, n: np.float64(np.int64(_counter_bits(key, n) >> _S11)) * 2.0 ** -53


# --------------------------------------------------------------------------- the fused passes
# ``a`` holds the matmul result on entry and p on return; ``s`` receives the sample.

@numba.njit(inline="always", fastmath=True, error_model="numpy")
def _row(a, bias, u, s):
    for j in range(a.shape[0]):
        p = _sigmoid(a[j] + bias[j])
        a[j] = p
        s[j] = u[j] < p


@numba.njit(inline="always", fastmath=True, error_model="numpy")
def _row_seeded(a, bias, key, first, s):
    for j in range(a.shape[0]):
        p = _sigmoid(a[j] + bias[j])
        a[j] = p
        s[j] = _uniform_like(p, key, first + j) < p


@numba.njit(**_JIT)
def _pass(a, bias, u, s):
    for i in range(a.shape[0]):
        _row(a[i], bias, u[i], s[i])


@numba.njit(parallel=True, **_JIT)
def _pass_parallel(a, bias, u, s):
    for i in numba.prange(a.shape[0]):
        _row(a[i], bias, u[i], s[i])


@numba.njit(**_JIT)
def _pass_seeded(a, bias, key, s):
    for i in range(a.shape[0]):
        _row_seeded(a[i], bias, key, i * a.shape[1], s[i])


@numba.njit(parallel=True, **_JIT)
def _pass_seeded_parallel(a, bias, key, s):
    for i in numba.prange(a.shape[0]):
        _row_seeded(a[i], bias, key, i * a.shape[1], s[i])


def _bias_sigmoid_sample(a, bias, u, s):
    """In place: ``a <- sigma(a + bias)``, ``s <- [u < a]``; ``u`` an array or a ``np.uint64`` key."""
    seeded = isinstance(u, np.uint64)
    if a.size >= PARALLEL_MIN_SIZE:
        (_pass_seeded_parallel if seeded else _pass_parallel)(a, bias, u, s)
    else:
        (_pass_seeded if seeded else _pass)(a, bias, u, s)


# --------------------------------------------------------------------------- public kernels

def _operands(x, W, bias):
    """Everything in the dtype of the layer input ``x``, contiguous (BLAS and Numba want both)."""
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    return (np.ascontiguousarray(x, dtype=dtype), np.asarray(W, dtype=dtype),
            np.ascontiguousarray(bias, dtype=dtype).reshape(-1))


def _sample(x, W, bias, u, transpose):
    x, W, bias = _operands(x, W, bias)
    p = np.dot(x, W.T if transpose else W)       # BLAS, a fresh (B, n) array we own
    s = np.empty_like(p)
    if not isinstance(u, np.uint64):
        u = np.ascontiguousarray(u, dtype=p.dtype)
    _bias_sigmoid_sample(p, bias, u, s)
    return p, s


def rbm_sample_hidden(v, W, c, u):
    """Eq. EBM-11: ``p = sigma(vW + c)``, ``h = [u < p]``. ``v`` (B, n_v), ``u`` (B, n_h).

    Returns ``(p, h)``, both (B, n_h) in the dtype of ``v``.
    """
    return _sample(v, W, c, u, transpose=False)


def rbm_sample_visible(h, W, b, u):
    """Eq. EBM-11: ``p = sigma(hW^T + b)``, ``v = [u < p]``. ``h`` (B, n_h), ``u`` (B, n_v).

    Returns ``(p, v)``, both (B, n_v) in the dtype of ``h``.
    """
    return _sample(h, W, b, u, transpose=True)


def _chain(h, W, b, c, k, uniforms):
    """k Gibbs steps into four buffers allocated once; ``uniforms(t, layer)`` gives step t's u."""
    h, W, b = _operands(h, W, b)
    c = np.ascontiguousarray(c, dtype=h.dtype).reshape(-1)
    if k == 0:                                   # as the reference: no step, nothing sampled
        return None, None, None, None
    batch, (n_v, n_h) = h.shape[0], W.shape
    p_v, v = np.empty((batch, n_v), h.dtype), np.empty((batch, n_v), h.dtype)
    p_h, h_t = np.empty((batch, n_h), h.dtype), np.empty((batch, n_h), h.dtype)
    for t in range(k):
        # h_t is read by the first matmul before the second pass overwrites it
        np.dot(h if t == 0 else h_t, W.T, out=p_v)
        _bias_sigmoid_sample(p_v, b, uniforms(t, 0), v)
        np.dot(v, W, out=p_h)
        _bias_sigmoid_sample(p_h, c, uniforms(t, 1), h_t)
    return p_v, v, p_h, h_t


def rbm_gibbs_chain(h, W, b, c, u_v, u_h):
    """k steps of block Gibbs sampling from hidden state ``h`` (B, n_h):
    ``v_t ~ p(v | h_{t-1})``, ``h_t ~ p(h | v_t)`` for t = 1..k, with ``u_v`` (k, B, n_v)
    and ``u_h`` (k, B, n_h) the uniforms of each step.

    Returns ``(p_v, v, p_h, h)`` of the last step. The k steps reuse four output
    buffers: the matmuls write into them and the fused passes update them in place.
    """
    dtype = h.dtype if h.dtype in (np.float32, np.float64) else np.float64
    u_v = np.ascontiguousarray(u_v, dtype=dtype)
    u_h = np.ascontiguousarray(u_h, dtype=dtype)
    return _chain(h, W, b, c, u_v.shape[0], lambda t, layer: (u_v, u_h)[layer][t])


# --------------------------------------------------------------------------- seeded variants (the option)

def rbm_sample_hidden_seeded(v, W, c, seed, stream):
    """``rbm_sample_hidden`` with ``u = counter_uniforms(seed, stream, (B, n_h), v.dtype)``,
    drawn inside the fused pass instead of passed in."""
    return _sample(v, W, c, stream_key(seed, stream), transpose=False)


def rbm_sample_visible_seeded(h, W, b, seed, stream):
    """``rbm_sample_visible`` with ``u = counter_uniforms(seed, stream, (B, n_v), h.dtype)``."""
    return _sample(h, W, b, stream_key(seed, stream), transpose=True)


def rbm_gibbs_chain_seeded(h, W, b, c, k, seed, stream=0):
    """``rbm_gibbs_chain`` for k steps with counter-based uniforms: step t (0-based) draws
    v with stream ``stream + 2t`` and h with stream ``stream + 2t + 1``; the next
    independent call should start at ``stream + 2k``."""
    return _chain(h, W, b, c, k, lambda t, layer: stream_key(seed, stream + 2 * t + layer))
