"""Fused scaled-dot-product attention for the CPU (Numba).

Same functions, signatures and results as ``kernels/reference.py``:

.. math::
    S = \\frac{QK^\\top}{\\sqrt d} + M,\\qquad
    \\mathrm{lse}_i = \\log\\sum_j e^{S_{ij}},\\qquad
    P = e^{S - \\mathrm{lse}},\\qquad O = PV

    \\bar V = P^\\top \\bar O,\\quad \\bar P = \\bar O V^\\top,\\quad
    \\bar S = P \\odot (\\bar P - \\mathrm{rowsum}(\\bar O \\odot O)),\\quad
    \\bar Q = \\tfrac{1}{\\sqrt d}\\bar S K,\\quad \\bar K = \\tfrac{1}{\\sqrt d}\\bar S^\\top Q

How it is organised
-------------------
* Parallel over (batch, head).  Each Numba thread pulls the next head from a
  shared atomic counter (``_fetch_add``), so a core that another process slows
  down simply does fewer heads instead of holding up a fixed half.  Nothing
  else runs threads: no BLAS is called, so Numba's and OpenBLAS's thread pools
  never compete.
* Inside a head the queries are walked in blocks of ``RB = 4`` rows, the way
  FlashAttention-2 walks them: the block's four score rows ``S[i:i+4, :]``
  are computed, masked, turned into probabilities and consumed right away, so
  the ``T x T`` matrix never exists -- not in the forward, and not in the
  backward either, which rebuilds ``P`` from the saved ``lse``.  Per head the
  working set is ``K^T, V^T`` (and ``dK^T, dV^T``), a few tens of KiB, which
  stays in the core's caches.
* Every matrix product is one of three small loop nests whose innermost loop
  runs over a *contiguous* axis, so LLVM turns it into AVX-512/AVX2 code:

  - ``_rows_times``:  ``C[r, :] = sum_k A[r, k] B[k, :]``   (``Q K^T``, ``dO V^T``; and
    ``P V``, ``dS K`` for short rows)
  - ``_rows_dot``:    ``C[r, k] = sum_j X[r, j] Y[k, j]``   (``P V``, ``dS K`` once a row
    has ``LONG`` keys or more: long dot products beat short output rows of ``d = 32``)
  - ``_accumulate``:  ``C[k, :] += sum_r A[r, k] X[r, :]``  (``dV^T += dO^T P``,
    ``dK^T += Q^T dS``)

  Each handles four query rows at once and ``_rows_times`` also unrolls ``k``
  by four, so a load feeds several fused multiply-adds and the store port is
  not the limit.  Keys are kept transposed (``K^T`` is ``d x T_k``) so that the
  long axis ``T_k`` is the vector axis.
* ``exp`` in float32 is a Cephes-style polynomial (about 1 ulp) that LLVM
  vectorises; libm's scalar ``expf`` would cost more than the matrix products.
  float64 (used by the gradient checks) calls ``math.exp``.  Row maxima use
  ``llvm.maxnum`` (``_fmax``) under full fast-math, the one reduction LLVM will
  not vectorise otherwise; the scores are finite there by construction.

Masks
-----
The Python wrappers reduce any mask to an additive mask in the compute dtype
with its broadcast (zero-stride) axes collapsed, plus a per-head index into
it, so a ``np.broadcast_to`` view costs nothing and the Numba functions are
compiled once per dtype.  Masked scores are clamped to ``NEG = -max/4`` (a
finite stand-in for ``-inf``, so no infinities reach the fast-math loops); a
row whose scores are all ``NEG`` is fully masked: output 0, ``lse = -inf``.
A finite additive mask value below ``NEG`` (about ``-8.5e37`` in float32)
is therefore treated as "masked" -- the only departure from the reference.
``causal`` is not a mask array at all: row ``i`` simply stops at key
``i`` (PyTorch's top-left alignment), which also skips the hidden half of the work.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .. import reference as _reference

__all__ = ["attention_forward", "attention_backward"]

RB = 4  # query rows per block: each K^T / V^T load feeds RB multiply-adds
LONG = 128  # from this many keys on, P V and dS K are computed as dot products (_rows_dot)

# Fast-math without 'nnan'/'ninf': reductions may be reassociated (and so
# vectorised), but comparisons with -inf / NaN keep their IEEE meaning.
_FM = {"nsz", "arcp", "contract", "reassoc", "afn"}

# --------------------------------------------------------------------------- exp


@intrinsic
def _pow2(typingctx, n):
    """``2.0 ** n`` for an integral float32 ``n`` in [-126, 127], by writing the exponent bits."""
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        e = builder.fptosi(args[0], i32)
        e = builder.add(e, ir.Constant(i32, 127))
        e = builder.shl(e, ir.Constant(i32, 23))
        return builder.bitcast(e, ir.FloatType())

    return sig, codegen


@intrinsic
def _fmax(typingctx, a, b):
    """``llvm.maxnum``: a max that LLVM can vectorise as a reduction without assuming no NaNs."""
    sig = a(a, a)

    def codegen(context, builder, signature, args):
        ft = args[0].type
        name = "llvm.maxnum.f32" if isinstance(ft, ir.FloatType) else "llvm.maxnum.f64"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ft, [ft, ft]), name)
        return builder.call(fn, args)

    return sig, codegen


_F_LOG2E = np.float32(1.4426950408889634)
_F_LN2_HI = np.float32(0.693359375)  # ln 2 split in two (Cody-Waite) so that
_F_LN2_LO = np.float32(-2.12194440e-4)  # x - n ln2 is exact for |n| <= 127
_F_HALF = np.float32(0.5)
_F_ONE = np.float32(1.0)
_F_LO = np.float32(-87.0)  # below: exp underflows to (nearly) 0 -> return exactly 0
_F_HI = np.float32(88.0)
_F_ZERO = np.float32(0.0)
_F_P0 = np.float32(1.9875691500e-4)  # Cephes expf minimax polynomial on |r| <= ln2/2
_F_P1 = np.float32(1.3981999507e-3)
_F_P2 = np.float32(8.3334519073e-3)
_F_P3 = np.float32(4.1665795894e-2)
_F_P4 = np.float32(1.6666665459e-1)
_F_P5 = np.float32(5.0000001201e-1)


def _exp(x):
    """exp in the dtype of ``x``; compiled through the overload below."""
    return math.exp(x)


@overload(_exp, jit_options={"fastmath": _FM})
def _exp_overload(x):
    if x == types.float32:
        def expf(x):
            # x = n ln2 + r, |r| <= ln2/2;  e^x = 2^n e^r
            xc = min(max(x, _F_LO), _F_HI)
            n = np.floor(xc * _F_LOG2E + _F_HALF)  # float32 (math.floor would give int64)
            r = xc - n * _F_LN2_HI - n * _F_LN2_LO
            p = ((((_F_P0 * r + _F_P1) * r + _F_P2) * r + _F_P3) * r + _F_P4) * r + _F_P5
            p = p * r * r + r + _F_ONE
            y = p * _pow2(n)
            return y if x > _F_LO else _F_ZERO
        return expf
    return lambda x: math.exp(x)


# --------------------------------------------------------------------------- products
# All three take RB = 4 rows and touch columns [0, n) of their long arrays.


@njit(cache=True, fastmath=_FM)
def _rows_times(a, b, c, kn, n):
    """``c[r, :n] = sum_{k<kn} a[r, k] * b[k, :n]`` for the 4 rows of ``a``.

    The k loop is unrolled by four, so each pass over a row of ``c`` does 16
    multiply-adds per 4 loads and 4 stores -- enough to keep the FMA units, not
    the store port, the limit.
    """
    c0, c1, c2, c3 = c[0], c[1], c[2], c[3]
    a0, a1, a2, a3 = a[0], a[1], a[2], a[3]
    zero = c.dtype.type(0)
    for j in range(n):
        c0[j] = zero
        c1[j] = zero
        c2[j] = zero
        c3[j] = zero
    k = 0
    while k + 4 <= kn:
        b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
        x00, x01, x02, x03 = a0[k], a0[k + 1], a0[k + 2], a0[k + 3]
        x10, x11, x12, x13 = a1[k], a1[k + 1], a1[k + 2], a1[k + 3]
        x20, x21, x22, x23 = a2[k], a2[k + 1], a2[k + 2], a2[k + 3]
        x30, x31, x32, x33 = a3[k], a3[k + 1], a3[k + 2], a3[k + 3]
        for j in range(n):
            y0, y1, y2, y3 = b0[j], b1[j], b2[j], b3[j]
            c0[j] += x00 * y0 + x01 * y1 + x02 * y2 + x03 * y3
            c1[j] += x10 * y0 + x11 * y1 + x12 * y2 + x13 * y3
            c2[j] += x20 * y0 + x21 * y1 + x22 * y2 + x23 * y3
            c3[j] += x30 * y0 + x31 * y1 + x32 * y2 + x33 * y3
        k += 4
    while k < kn:
        bk = b[k]
        x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
        for j in range(n):
            y = bk[j]
            c0[j] += x0 * y
            c1[j] += x1 * y
            c2[j] += x2 * y
            c3[j] += x3 * y
        k += 1


@njit(cache=True, fastmath=_FM)
def _rows_dot(x, y, c, n):
    """``c[r, k] = sum_{j<n} x[r, j] * y[k, j]``: dot products along the long axis.

    Two ``y`` rows at a time, so 8 independent sums share each load.  Better than
    ``_rows_times`` when ``c`` is narrow (``d = 32``) and ``n`` long; LLVM unrolls the
    sums 4 x 16 wide, so for short ``n`` (< 64) ``_rows_times`` wins.
    """
    x0, x1, x2, x3 = x[0], x[1], x[2], x[3]
    zero = c.dtype.type(0)
    m = y.shape[0]
    for k in range(0, m - 1, 2):
        ya = y[k]
        yb = y[k + 1]
        s0 = zero
        s1 = zero
        s2 = zero
        s3 = zero
        t0 = zero
        t1 = zero
        t2 = zero
        t3 = zero
        for j in range(n):
            a = ya[j]
            b = yb[j]
            u0, u1, u2, u3 = x0[j], x1[j], x2[j], x3[j]
            s0 += u0 * a
            s1 += u1 * a
            s2 += u2 * a
            s3 += u3 * a
            t0 += u0 * b
            t1 += u1 * b
            t2 += u2 * b
            t3 += u3 * b
        c[0, k], c[1, k], c[2, k], c[3, k] = s0, s1, s2, s3
        c[0, k + 1], c[1, k + 1], c[2, k + 1], c[3, k + 1] = t0, t1, t2, t3
    if m % 2:
        k = m - 1
        yk = y[k]
        s0 = zero
        s1 = zero
        s2 = zero
        s3 = zero
        for j in range(n):
            a = yk[j]
            s0 += x0[j] * a
            s1 += x1[j] * a
            s2 += x2[j] * a
            s3 += x3[j] * a
        c[0, k], c[1, k], c[2, k], c[3, k] = s0, s1, s2, s3


@njit(cache=True, fastmath=_FM)
def _accumulate(a, x, c, n):
    """``c[k, :n] += sum_r a[r, k] * x[r, :n]``: rank-4 update of a transposed gradient,
    two rows of ``c`` per pass so that each load of ``x`` feeds eight multiply-adds."""
    a0, a1, a2, a3 = a[0], a[1], a[2], a[3]
    x0, x1, x2, x3 = x[0], x[1], x[2], x[3]
    m = c.shape[0]
    for k in range(0, m - 1, 2):
        ck = c[k]
        cl = c[k + 1]
        w0, w1, w2, w3 = a0[k], a1[k], a2[k], a3[k]
        v0, v1, v2, v3 = a0[k + 1], a1[k + 1], a2[k + 1], a3[k + 1]
        for j in range(n):
            y0, y1, y2, y3 = x0[j], x1[j], x2[j], x3[j]
            ck[j] += w0 * y0 + w1 * y1 + w2 * y2 + w3 * y3
            cl[j] += v0 * y0 + v1 * y1 + v2 * y2 + v3 * y3
    if m % 2:
        k = m - 1
        ck = c[k]
        w0, w1, w2, w3 = a0[k], a1[k], a2[k], a3[k]
        for j in range(n):
            ck[j] += w0 * x0[j] + w1 * x1[j] + w2 * x2[j] + w3 * x3[j]


# --------------------------------------------------------------------------- masking


@njit(cache=True, fastmath=_FM)
def _mask_row(srow, mrow, lim, has_mask, neg):
    """Add the additive mask to the first ``lim`` scores and clamp them at ``neg``."""
    if has_mask:
        for j in range(lim):
            srow[j] = _fmax(srow[j] + mrow[j], neg)


@njit(cache=True, fastmath=True)
def _row_max(srow, n, neg):
    """``max(neg, srow[:n])``.  Full fast-math (no NaN/inf assumed) lets LLVM vectorise the
    reduction; safe because the scores were clamped to ``[neg, ...)`` by the caller."""
    m = neg
    for j in range(n):
        m = _fmax(m, srow[j])
    return m


@njit(cache=True)
def _row_limit(i, tq, tk, causal):
    """Keys ``j < limit`` are visible to query row ``i`` (causal: ``j <= i``, PyTorch's
    top-left alignment)."""
    if not causal:
        return tk
    return min(i + 1, tk)


@njit(cache=True)
def _load_rows(src, i0, nr, dst):
    """Copy ``nr`` rows of ``src`` from ``i0`` into the RB-row block ``dst`` (zero padded)."""
    for r in range(RB):
        for c in range(dst.shape[1]):
            dst[r, c] = src[i0 + r, c] if r < nr else 0


# --------------------------------------------------------------------------- per head


@njit(cache=True, fastmath=_FM)
def _forward_head(q, k, v, mask, has_mask, causal, scale, neg, out, lse):
    """One head: ``q (Tq, d), k (Tk, d), v (Tk, dv), mask (Tq or 1, Tk)`` -> ``out, lse``."""
    tq, d = q.shape
    tk = k.shape[0]
    dv = v.shape[1]
    dt = q.dtype
    zero = dt.type(0)
    one = dt.type(1)
    kt = np.empty((d, tk), dt)  # scale * K^T
    for j in range(tk):
        for c in range(d):
            kt[c, j] = k[j, c] * scale
    vt = np.empty((dv, tk if tk >= LONG else 0), dt)  # V^T, for the dot-product form of P V
    for j in range(vt.shape[1]):
        for c in range(dv):
            vt[c, j] = v[j, c]
    s = np.empty((RB, tk), dt)
    qb = np.empty((RB, d), dt)
    ob = np.empty((RB, dv), dt)
    inv = np.empty(RB, dt)
    mrow_bcast = mask.shape[0] == 1
    for i0 in range(0, tq, RB):
        nr = min(RB, tq - i0)
        n = _row_limit(i0 + nr - 1, tq, tk, causal)  # widest row of the block
        if n == 0:  # every row of the block is fully masked (causal, Tq > Tk)
            for r in range(nr):
                lse[i0 + r] = -np.inf
                for c in range(dv):
                    out[i0 + r, c] = zero
            continue
        if nr == RB:
            _rows_times(q[i0:i0 + RB], kt, s, d, n)
        else:
            _load_rows(q, i0, nr, qb)
            _rows_times(qb, kt, s, d, n)
        for r in range(RB):
            srow = s[r]
            lim = _row_limit(i0 + r, tq, tk, causal) if r < nr else n
            _mask_row(srow, mask[0 if mrow_bcast else min(i0 + r, tq - 1)], lim, has_mask, neg)
            m = _row_max(srow, lim, neg)
            if m <= neg:  # nothing visible: out = 0, lse = -inf
                for j in range(n):
                    srow[j] = zero
                inv[r] = zero
                if r < nr:
                    lse[i0 + r] = -np.inf
                continue
            total = zero
            for j in range(lim):
                e = _exp(srow[j] - m)
                srow[j] = e
                total += e
            for j in range(lim, n):
                srow[j] = zero
            inv[r] = one / total
            if r < nr:
                lse[i0 + r] = m + math.log(total)
        if n >= LONG:  # (unnormalised P) V
            _rows_dot(s, vt, ob, n)
        else:
            _rows_times(s, v, ob, n, dv)
        for r in range(nr):
            w = inv[r]
            for c in range(dv):
                out[i0 + r, c] = ob[r, c] * w


@njit(cache=True, fastmath=_FM)
def _backward_head(q, k, v, o, lse, go, mask, has_mask, causal, scale, neg, dq, dk, dv_out):
    """One head of the backward pass; ``P`` is rebuilt block by block from ``lse``."""
    tq, d = q.shape
    tk = k.shape[0]
    dv = v.shape[1]
    dt = q.dtype
    zero = dt.type(0)
    kt = np.empty((d, tk), dt)  # scale * K^T
    for j in range(tk):
        for c in range(d):
            kt[c, j] = k[j, c] * scale
    vt = np.empty((dv, tk), dt)  # V^T
    for j in range(tk):
        for c in range(dv):
            vt[c, j] = v[j, c]
    dkt = np.zeros((d, tk), dt)  # (dS^T Q)^T, scaled at the end
    dvt = np.zeros((dv, tk), dt)  # (P^T dO)^T
    p = np.empty((RB, tk), dt)
    ds = np.empty((RB, tk), dt)
    qb = np.empty((RB, d), dt)
    gb = np.empty((RB, dv), dt)
    dqb = np.empty((RB, d), dt)
    mrow_bcast = mask.shape[0] == 1
    for i0 in range(0, tq, RB):
        nr = min(RB, tq - i0)
        n = _row_limit(i0 + nr - 1, tq, tk, causal)
        if n == 0:
            for r in range(nr):
                for c in range(d):
                    dq[i0 + r, c] = zero
            continue
        if nr == RB:
            qr = q[i0:i0 + RB]
            gr = go[i0:i0 + RB]
        else:  # last, partial block: zero-padded copies (dO = 0 rows add nothing)
            _load_rows(q, i0, nr, qb)
            _load_rows(go, i0, nr, gb)
            qr = qb
            gr = gb
        _rows_times(qr, kt, p, d, n)  # scores S
        _rows_times(gr, vt, ds, dv, n)  # dP = dO V^T
        for r in range(RB):
            prow = p[r]
            dsrow = ds[r]
            if r >= nr or not (lse[i0 + r] > -np.inf):  # padding, or fully masked row
                for j in range(n):
                    prow[j] = zero
                    dsrow[j] = zero
                continue
            i = i0 + r
            lim = _row_limit(i, tq, tk, causal)
            _mask_row(prow, mask[0 if mrow_bcast else i], lim, has_mask, neg)
            acc = zero
            for c in range(dv):
                acc += go[i, c] * o[i, c]
            li = lse[i]
            for j in range(lim):
                pj = _exp(prow[j] - li)
                prow[j] = pj
                dsrow[j] = pj * (dsrow[j] - acc)
            for j in range(lim, n):
                prow[j] = zero
                dsrow[j] = zero
        _accumulate(gr, p, dvt, n)  # dV^T += dO^T P
        _accumulate(qr, ds, dkt, n)  # dK^T += Q^T dS  (times scale below)
        if n >= LONG:  # dQ = dS (scale K)
            _rows_dot(ds, kt, dqb, n)
            for r in range(nr):
                for c in range(d):
                    dq[i0 + r, c] = dqb[r, c]
        else:
            _rows_times(ds, k, dqb, n, d)
            for r in range(nr):
                for c in range(d):
                    dq[i0 + r, c] = dqb[r, c] * scale
    for j in range(tk):
        for c in range(d):
            dk[j, c] = dkt[c, j] * scale
        for c in range(dv):
            dv_out[j, c] = dvt[c, j]


# --------------------------------------------------------------------------- all heads


@intrinsic
def _fetch_add(typingctx, counter):
    """Atomically ``counter[0] += 1`` and return the old value (a shared work queue)."""
    sig = types.int64(counter)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.atomic_rmw("add", ary.data, ir.Constant(ir.IntType(64), 1), "monotonic")

    return sig, codegen


@njit(cache=True, parallel=True)
def _forward_all(q, k, v, mask, mask_index, has_mask, causal, scale, neg, out, lse, workers):
    # Heads are handed out one at a time from a shared counter rather than split in
    # fixed halves, so a core slowed down by another process simply takes fewer heads.
    counter = np.zeros(1, np.int64)
    nh = q.shape[0]
    for _ in prange(workers):
        h = _fetch_add(counter)
        while h < nh:
            _forward_head(q[h], k[h], v[h], mask[mask_index[h]], has_mask, causal, scale,
                          neg, out[h], lse[h])
            h = _fetch_add(counter)


@njit(cache=True, parallel=True)
def _backward_all(q, k, v, o, lse, go, mask, mask_index, has_mask, causal, scale, neg,
                  dq, dk, dv, workers):
    counter = np.zeros(1, np.int64)
    nh = q.shape[0]
    for _ in prange(workers):
        h = _fetch_add(counter)
        while h < nh:
            _backward_head(q[h], k[h], v[h], o[h], lse[h], go[h], mask[mask_index[h]],
                           has_mask, causal, scale, neg, dq[h], dk[h], dv[h])
            h = _fetch_add(counter)


# --------------------------------------------------------------------------- wrappers


def _prepare(q, k, v, mask, scale):
    """Fold leading dims into one head axis, make operands contiguous in one dtype, and
    reduce ``mask`` to (compact additive mask, per-head index into it, has_mask)."""
    dt = q.dtype
    lead = q.shape[:-2]
    tq, d = q.shape[-2:]
    tk, dv = k.shape[-2], v.shape[-1]
    nh = int(np.prod(lead, dtype=np.int64))
    q3 = np.ascontiguousarray(q, dtype=dt).reshape(nh, tq, d)
    k3 = np.ascontiguousarray(k, dtype=dt).reshape(nh, tk, d)
    v3 = np.ascontiguousarray(v, dtype=dt).reshape(nh, tk, dv)
    scale = dt.type(1.0 / math.sqrt(d) if scale is None else scale)
    if mask is None:
        return q3, k3, v3, np.zeros((1, 1, tk), dt), np.zeros(nh, np.int64), False, scale
    mask = np.broadcast_to(np.asarray(mask), lead + (tq, tk))
    # collapse broadcast (zero-stride) axes, except the key axis which stays dense
    compact = mask[tuple(slice(0, 1) if st == 0 else slice(None)
                         for st in mask.strides[:-1])]
    neg = _neg(dt)
    if compact.dtype == np.bool_:
        add = np.where(compact, dt.type(0), dt.type(neg))
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            add = np.maximum(compact.astype(dt), dt.type(neg))
    lead_c = add.shape[:-2]
    n_c = int(np.prod(lead_c, dtype=np.int64))
    index = np.broadcast_to(np.arange(n_c, dtype=np.int64).reshape(lead_c), lead).ravel()
    add = np.ascontiguousarray(add.reshape((n_c,) + add.shape[-2:]))
    return q3, k3, v3, add, np.ascontiguousarray(index), True, scale


def _workers(n_heads):
    """How many prange workers pull heads from the queue: one per Numba thread."""
    return max(1, min(numba.get_num_threads(), n_heads))


def _neg(dt):
    """The finite stand-in for -inf given to masked scores."""
    return dt.type(-np.finfo(dt).max / 4)


def _supported(*arrays):
    return all(a.dtype == arrays[0].dtype for a in arrays) and \
        arrays[0].dtype in (np.float32, np.float64) and arrays[0].ndim >= 2


def attention_forward(q, k, v, mask=None, causal=False, scale=None):
    """Scaled dot-product attention :math:`O = \\mathrm{softmax}(QK^\\top/\\sqrt d + M)\\,V`.

    Returns ``(out, lse)``; see :func:`minigen.kernels.reference.attention_forward`.
    """
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    if not _supported(q, k, v):
        return _reference.attention_forward(q, k, v, mask, causal, scale)
    q3, k3, v3, m3, mi, has_mask, sc = _prepare(q, k, v, mask, scale)
    nh, tq = q3.shape[:2]
    out = np.empty((nh, tq, v3.shape[2]), q.dtype)
    lse = np.empty((nh, tq), q.dtype)
    if nh and tq:
        _forward_all(q3, k3, v3, m3, mi, has_mask, bool(causal), sc, _neg(q.dtype), out, lse,
                     _workers(nh))
    lead = q.shape[:-2]
    return out.reshape(lead + out.shape[1:]), lse.reshape(lead + (tq,))


def attention_backward(q, k, v, out, lse, grad_out, mask=None, causal=False, scale=None):
    """Gradients ``(dq, dk, dv)`` of :func:`attention_forward`, rebuilding the softmax from
    ``lse`` (see :func:`minigen.kernels.reference.attention_backward`)."""
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    out, lse, grad_out = np.asarray(out), np.asarray(lse), np.asarray(grad_out)
    if not _supported(q, k, v, out, lse, grad_out):
        return _reference.attention_backward(q, k, v, out, lse, grad_out, mask, causal, scale)
    q3, k3, v3, m3, mi, has_mask, sc = _prepare(q, k, v, mask, scale)
    nh, tq, d = q3.shape
    tk, dv = v3.shape[1:]
    o3 = np.ascontiguousarray(out).reshape(nh, tq, dv)
    g3 = np.ascontiguousarray(grad_out).reshape(nh, tq, dv)
    l2 = np.ascontiguousarray(lse).reshape(nh, tq)
    dq = np.empty((nh, tq, d), q.dtype)
    dk = np.empty((nh, tk, d), q.dtype)
    dvv = np.empty((nh, tk, dv), q.dtype)
    if nh and tq:
        _backward_all(q3, k3, v3, o3, l2, g3, m3, mi, has_mask, bool(causal), sc, _neg(q.dtype),
                      dq, dk, dvv, _workers(nh))
    elif nh:
        dk[...] = 0
        dvv[...] = 0
    lead = q.shape[:-2]
    return (dq.reshape(q.shape), dk.reshape(lead + (tk, d)), dvv.reshape(lead + (tk, dv)))
