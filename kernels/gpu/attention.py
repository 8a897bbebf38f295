"""Scaled dot-product attention for the GPU (CuPy), with the signatures of
``kernels/reference.py``:

.. math::
    S = \\frac{QK^\\top}{\\sqrt d} + M,\\qquad
    \\mathrm{lse}_i = \\log\\sum_j e^{S_{ij}},\\qquad
    P = e^{S - \\mathrm{lse}},\\qquad O = PV

    \\bar V = P^\\top \\bar O,\\quad \\bar P = \\bar O V^\\top,\\quad
    \\bar S = P \\odot (\\bar P - \\mathrm{rowsum}(\\bar O \\odot O)),\\quad
    \\bar Q = \\tfrac{1}{\\sqrt d}\\bar S K,\\quad \\bar K = \\tfrac{1}{\\sqrt d}\\bar S^\\top Q

The recipe is plain on purpose:

* the four kinds of matrix product are strided-batched cuBLAS calls (``_blas.matmul_strided``:
  one call per group of heads, the transposes read off the layout, the scale
  :math:`1/\\sqrt d` folded into the product);
* the forward's row softmax is one CUDA kernel (``_SOFTMAX_SOURCE``): one thread
  block per score row finds the row maximum, sums the exponentials, writes the
  probabilities in place and the row's log-sum-exp -- the causal limit is applied
  there, by index, and rows that see no key give ``P = 0`` and ``lse = -inf``;
* the backward rebuilds ``P`` from the saved ``lse`` and forms ``dS`` in one
  element-wise kernel (``_backward_ds``); it never needs the forward's ``P``.

Score matrices are materialised for a group of heads at a time, at most
``_SCORE_BYTES`` per buffer, so long sequences do not exhaust GPU memory.
Masks are reduced as on the CPU: broadcast (zero-stride) axes are collapsed and
a per-head index picks the mask of each head, so a ``broadcast_to`` view is never
expanded to ``(B, H, T_q, T_k)`` beyond one group of heads.
"""
from __future__ import annotations

import math

import cupy
import numpy as np

from ._blas import matmul_strided
from ._compile import TemplateKernels

__all__ = ["attention_forward", "attention_backward"]

_SCORE_BYTES = 256 * 1024 * 1024
_THREADS = 128  # threads per score row in the softmax kernel (a multiple of 32)

_NEG_INF = r"""
// -infinity of each floating type, from its bit pattern
__device__ inline float neg_inf(float) { return __int_as_float((int)0xff800000); }
__device__ inline double neg_inf(double) { return __longlong_as_double((long long)0xfff0000000000000ULL); }
"""

_SOFTMAX_SOURCE = _NEG_INF + r"""
// Row softmax of masked scores, in place, with the row's log-sum-exp.
// s: (rows, tk) scores, already scaled and masked (-inf = hidden);
// row r is query i = r % tq; causal keeps keys j <= i (top-left, as PyTorch).
template <typename T>
__device__ T block_reduce(T value, bool take_max, T* shared) {
    // within each warp ...
    for (int offset = 16; offset > 0; offset >>= 1) {
        T other = __shfl_xor_sync(0xffffffff, value, offset);
        value = take_max ? fmax(value, other) : value + other;
    }
    // ... then across the warps of the block
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int n_warps = blockDim.x / 32;
    __syncthreads();                      // `shared` may still be read by a previous call
    if (lane == 0) shared[warp] = value;
    __syncthreads();
    value = shared[0];
    for (int w = 1; w < n_warps; ++w) {
        value = take_max ? fmax(value, shared[w]) : value + shared[w];
    }
    return value;
}

template <typename T>
__global__ void masked_softmax_lse(T* s, T* lse, const int tq, const int tk,
                                   const int causal) {
    __shared__ T shared[32];
    const long long row = blockIdx.x;
    const int i = (int)(row % tq);
    const int limit = causal ? min(i + 1, tk) : tk;
    T* srow = s + row * (long long)tk;

    const T hidden = neg_inf((T)0);
    T m = hidden;
    for (int j = threadIdx.x; j < limit; j += blockDim.x) m = fmax(m, srow[j]);
    m = block_reduce(m, true, shared);

    if (m == hidden) {                 // no visible key: P = 0, lse = -inf
        for (int j = threadIdx.x; j < tk; j += blockDim.x) srow[j] = (T)0;
        if (threadIdx.x == 0) lse[row] = hidden;
        return;
    }
    T total = (T)0;
    for (int j = threadIdx.x; j < limit; j += blockDim.x) {
        const T e = exp(srow[j] - m);
        srow[j] = e;
        total += e;
    }
    total = block_reduce(total, false, shared);
    const T inv = (T)1 / total;
    for (int j = threadIdx.x; j < tk; j += blockDim.x) {
        srow[j] = j < limit ? srow[j] * inv : (T)0;
    }
    if (threadIdx.x == 0) lse[row] = m + log(total);
}
"""

_softmax = TemplateKernels(_SOFTMAX_SOURCE, "masked_softmax", ("lse",))     # compiled on first use

_backward_ds = cupy.ElementwiseKernel(
    "T s, T dp, raw T lse, raw T rowdot, int64 tq, int64 tk, bool causal",
    "T p, T ds",
    r"""
    // element (row, j) of the score matrix; row = (head, query i)
    const long long row = i / tk;
    const long long j = i % tk;
    const long long qi = row % tq;
    const T l = lse[row];
    const bool visible = !causal || j <= qi;
    // P = exp(S - lse), rebuilt; masked scores are -inf and give 0, as do dead rows
    p = (visible && l != neg_inf(l)) ? exp(s - l) : (T)0;
    ds = p * (dp - rowdot[row]);
    """,
    "minigen_attention_backward_ds",
    preamble=_NEG_INF,
)


def _softmax_kernel(dtype):
    return _softmax("lse", dtype)


def _compute_dtype(dtype):
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _fold(q, k, v, dt):
    """``(..., T, d)`` arrays -> contiguous ``(heads, T, d)`` arrays in the compute dtype."""
    lead = q.shape[:-2]
    nh = int(np.prod(lead, dtype=np.int64))
    fold = [cupy.ascontiguousarray(a, dtype=dt).reshape((nh,) + a.shape[-2:]) for a in (q, k, v)]
    return lead, nh, fold


def _compact_mask(mask, lead, tq, tk, dt):
    """(additive mask with broadcast axes collapsed, per-head index into it) or (None, None)."""
    if mask is None:
        return None, None
    mask = cupy.broadcast_to(cupy.asarray(mask), lead + (tq, tk))
    compact = mask[tuple(slice(0, 1) if st == 0 else slice(None) for st in mask.strides[:-2])]
    if compact.dtype == np.bool_:
        add = cupy.where(compact, dt.type(0), dt.type(-np.inf))
    else:
        add = compact.astype(dt)
    lead_c = add.shape[:-2]
    n_c = int(np.prod(lead_c, dtype=np.int64))
    index = np.broadcast_to(np.arange(n_c).reshape(lead_c), lead).ravel()
    add = cupy.ascontiguousarray(cupy.broadcast_to(add, lead_c + (tq, tk))).reshape(n_c, tq, tk)
    return add, index


def _scores(q, k, mask_add, mask_index, h0, h1, scale):
    """Masked, scaled scores of heads ``h0:h1`` (causal is applied by the kernels)."""
    (tq, d), tk = q.shape[1:], k.shape[1]
    s = cupy.empty((h1 - h0, tq, tk), q.dtype)
    matmul_strided(q[h0:], k[h0:], s, tq, tk, d, h1 - h0, tq * d, tk * d, tq * tk, trans_b=True, alpha=scale)
    if mask_add is not None:
        s += mask_add[cupy.asarray(mask_index[h0:h1])]
    return s


def _groups(nh, tq, tk, itemsize):
    step = max(1, _SCORE_BYTES // max(1, tq * tk * itemsize))
    return [(h0, min(nh, h0 + step)) for h0 in range(0, nh, step)]


def attention_forward(q, k, v, mask=None, causal=False, scale=None):
    """Scaled dot-product attention :math:`O = \\mathrm{softmax}(QK^\\top/\\sqrt d + M)\\,V`;
    returns ``(out, lse)`` (see :func:`minigen.kernels.reference.attention_forward`)."""
    dt = _compute_dtype(q.dtype)
    tq, d = q.shape[-2:]
    tk, dv = k.shape[-2], v.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    lead, nh, (q3, k3, v3) = _fold(q, k, v, dt)
    mask_add, mask_index = _compact_mask(mask, lead, tq, tk, dt)
    out = cupy.empty((nh, tq, dv), dt)
    lse = cupy.empty((nh, tq), dt)
    softmax = _softmax_kernel(dt)
    for h0, h1 in _groups(nh, tq, tk, dt.itemsize):
        s = _scores(q3, k3, mask_add, mask_index, h0, h1, scale)
        rows = (h1 - h0) * tq
        if rows and tk:
            softmax((rows,), (_THREADS,), (s, lse[h0:h1], np.int32(tq), np.int32(tk),
                                            np.int32(bool(causal))))
        else:
            lse[h0:h1] = -np.inf
        matmul_strided(s, v3[h0:], out[h0:], tq, dv, tk, h1 - h0, tq * tk, tk * dv, tq * dv)
    out = out.reshape(lead + (tq, dv)).astype(q.dtype, copy=False)
    lse = lse.reshape(lead + (tq,)).astype(q.dtype, copy=False)
    return cupy.ascontiguousarray(out), cupy.ascontiguousarray(lse)


def attention_backward(q, k, v, out, lse, grad_out, mask=None, causal=False, scale=None):
    """Gradients ``(dq, dk, dv)`` of :func:`attention_forward`, rebuilding the softmax from
    ``lse`` (see :func:`minigen.kernels.reference.attention_backward`)."""
    dt = _compute_dtype(q.dtype)
    tq, d = q.shape[-2:]
    tk, dv = k.shape[-2], v.shape[-1]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    lead, nh, (q3, k3, v3) = _fold(q, k, v, dt)
    o3 = cupy.ascontiguousarray(out, dtype=dt).reshape(nh, tq, dv)
    g3 = cupy.ascontiguousarray(grad_out, dtype=dt).reshape(nh, tq, dv)
    l2 = cupy.ascontiguousarray(lse, dtype=dt).reshape(nh, tq)
    rowdot = (g3 * o3).sum(axis=-1)  # rowsum(dO * O), one per query
    mask_add, mask_index = _compact_mask(mask, lead, tq, tk, dt)
    dq = cupy.empty((nh, tq, d), dt)
    dk = cupy.empty((nh, tk, d), dt)
    dvv = cupy.empty((nh, tk, dv), dt)
    for h0, h1 in _groups(nh, tq, tk, dt.itemsize):
        s = _scores(q3, k3, mask_add, mask_index, h0, h1, scale)
        heads = h1 - h0
        dp = cupy.empty_like(s)
        matmul_strided(g3[h0:], v3[h0:], dp, tq, tk, dv, heads, tq * dv, tk * dv, tq * tk, trans_b=True)
        p, ds = _backward_ds(s, dp, l2[h0:h1].ravel(), rowdot[h0:h1].ravel(), tq, tk,
                             bool(causal))
        # dV = P^T dO, dQ = scale dS K, dK = scale dS^T Q (P and dS are stored (tq, tk))
        matmul_strided(p, g3[h0:], dvv[h0:], tk, dv, tq, heads, tq * tk, tq * dv, tk * dv, trans_a=True)
        matmul_strided(ds, k3[h0:], dq[h0:], tq, d, tk, heads, tq * tk, tk * d, tq * d, alpha=scale)
        matmul_strided(ds, q3[h0:], dk[h0:], tk, d, tq, heads, tq * tk, tq * d, tk * d, trans_a=True,
                       alpha=scale)
    return tuple(cupy.ascontiguousarray(a.reshape(lead + a.shape[1:]).astype(q.dtype, copy=False))
                 for a in (dq, dk, dvv))
