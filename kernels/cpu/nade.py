"""Numba kernels for NADE's logits and their gradients (Eq. AR-1), with the
signatures of ``kernels/reference.py``.

The reference builds the running sums a_i = c + Σ_{j<i} x_j W_j for every image
and pixel at once: a (B, D, H) array (157 MB for a batch of 100 MNIST images
with 500 hidden units), swept a dozen times per step. Memory, not arithmetic,
sets its speed. These kernels keep one running sum of H values per image and
walk the pixels in order, as the slide's sequential picture suggests:

forward (``prange`` over images)::

    a = c
    for i in 0..D-1:   ℓ_i = b_i + V_i · σ(a);   a += x_i W_i     (skipped when x_i = 0)

backward (``prange`` over blocks of hidden units: every unit's gradients are
independent once g = ∂L/∂ℓ is known, so each thread owns its columns of dW, dV
and dc and nothing is reduced across threads). It runs the pixels backwards,
taking each W_i x_i off the full sum again to get back a_i, with
δ = Σ_{i'>i} g_{i'} V_{i'} ⊙ σ'(a_{i'}) accumulated on the way::

    a = c + Σ_i x_i W_i,  δ = 0
    for i in D-1..0:   a -= x_i W_i;   dW_i += x_i δ;   h = σ(a)
                       dV_i += g_i h;   δ += g_i V_i ⊙ h(1 - h)
    dc += δ

Undoing the additions instead of storing a_i rounds differently from the
reference by a few ulp of |a| per pixel (a random walk: ~1e-5 in float32 after
784 pixels, far below the gradient noise of a minibatch).

σ is the float32 rational tanh of ``kernels/cpu/gibbs.py`` (vectorised, 2-3 ulp)
and libm's tanh in float64, so the gradient checks run on exact arithmetic.
"""
import numba
import numpy as np
from numba import njit, prange

from .gibbs import _sigmoid

_JIT = dict(fastmath=True, error_model="numpy", cache=True, boundscheck=False)


@njit(parallel=True, **_JIT)
def _forward(x, W, c, V, b, out):
    n_img, d = x.shape
    hidden = c.shape[0]
    for n in prange(n_img):
        a = c.copy()
        for i in range(d):
            s = 0.0
            for k in range(hidden):
                s += V[i, k] * _sigmoid(a[k])
            out[n, i] = b[i] + s
            xi = x[n, i]
            if xi != 0:
                for k in range(hidden):
                    a[k] += xi * W[i, k]


@njit(**_JIT)
def _axpy(alpha, x, y):
    """y += alpha x, on 1-D slices."""
    for k in range(y.shape[0]):
        y[k] += alpha * x[k]


@njit(parallel=True, **_JIT)
def _backward(x, W, c, V, g, dW, dc, dV, blocks):
    n_img, d = x.shape
    hidden = c.shape[0]
    for blk in prange(blocks):
        lo = blk * hidden // blocks
        hi = (blk + 1) * hidden // blocks
        a = np.empty(hi - lo, dtype=W.dtype)
        delta = np.empty(hi - lo, dtype=W.dtype)
        h = np.empty(hi - lo, dtype=W.dtype)
        # One short loop per array update: each touches two or three arrays, few enough for
        # LLVM's run-time overlap checks, so every loop is vectorised (one fused loop was not: 4x slower).
        for n in range(n_img):
            a[:] = c[lo:hi]
            delta[:] = 0.0
            for i in range(d):
                xi = x[n, i]
                if xi != 0:
                    _axpy(xi, W[i, lo:hi], a)
            for i in range(d - 1, -1, -1):
                xi = x[n, i]
                if xi != 0:
                    _axpy(-xi, W[i, lo:hi], a)
                    _axpy(xi, delta, dW[i, lo:hi])
                gi = g[n, i]
                for k in range(hi - lo):
                    h[k] = _sigmoid(a[k])
                _axpy(gi, h, dV[i, lo:hi])
                v = V[i, lo:hi]
                for k in range(hi - lo):
                    delta[k] += gi * v[k] * h[k] * (1 - h[k])
            dc[lo:hi] += delta


def _same_dtype(dtype, *arrays):
    return [np.ascontiguousarray(a, dtype=dtype) for a in arrays]


def nade_forward(x, W, c, V, b):
    """The logits ℓ (B, D) of every conditional p(x_i = 1 | x_<i) = σ(ℓ_i), for x (B, D)."""
    x, W, c, V, b = _same_dtype(x.dtype, x, W, c, V, b)
    out = np.empty(x.shape, dtype=x.dtype)
    _forward(x, W, c, V, b, out)
    return out


def nade_backward(x, W, c, V, g):
    """Gradients ``(dW, dc, dV, db)`` of Σ_{n,i} g_{ni} ℓ_{ni}, for the upstream gradient g (B, D)."""
    x, W, c, V, g = _same_dtype(x.dtype, x, W, c, V, g)
    dW, dV, dc = np.zeros_like(W), np.zeros_like(V), np.zeros_like(c)
    # One block of hidden units per thread; at least 16 units a block, so tiny layers stay serial.
    blocks = max(1, min(numba.get_num_threads(), c.shape[0] // 16))
    _backward(x, W, c, V, g, dW, dc, dV, blocks)
    return dW, dc, dV, g.sum(axis=0)
