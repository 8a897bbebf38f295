"""Numba CPU kernels for conv2d: forward, input-gradient (= conv_transpose2d) and
weight-gradient, with the signatures of ``kernels/reference.py``.

Why not im2col + BLAS
---------------------
All three ops are matrix products behind an index map (im2col). The textbook
route -- build the im2col matrix, call ``np.matmul`` -- spends much of its time
building and transposing large buffers, and on the machine this project is
tuned on, OpenBLAS is held to its AVX2 kernels (``OPENBLAS_CORETYPE=Haswell``),
about half of what an AVX-512 core can do. Numba compiles for the host CPU, so a
small register-blocked loop of our own runs with AVX-512 and beats that GEMM;
it also means Numba's thread pool never competes with OpenBLAS's for the cores.

Three loops do all the arithmetic:

``_dot_block`` (dot form, a 4 x 4 block of dot products)
    ``out[t, m] = sum_k A[m, k] B[t, k]`` with both operands contiguous along
    the reduction index ``k``. Sixteen scalar accumulators become sixteen SIMD
    registers: LLVM vectorises the ``k`` loop (we allow it to reassociate sums).
    Eight loads feed sixteen FMAs, so the loop runs near the FMA peak -- with
    AVX-512's 32 registers. With AVX2's 16 the block is 2 x 4 (eight
    accumulators, six loads), which does not spill.

``_axpy_rows`` (axpy form, for few output channels)
    ``acc[e] += sum_k w[k] src[base_k + e]``: vectorised along output
    positions, for ops with fewer than ``_FEW`` output channels per group, where a
    4 x 4 block would mostly multiply padding.

Index maps
----------
* **forward, many output channels** (``_patch_gemm``): the input is copied once to
  a zero-padded channels-last array (N, H+2p, W+2p, C); a patch row
  ``B[t, (p, q, c)]`` is then ``kh*kw`` contiguous runs of ``C/groups`` values at
  fixed offsets from the position's base, packed 32 rows at a time and multiplied
  by the packed weight ``A[o, (p, q, c)]``. No bounds checks in the packing loop.
* **input gradient, many input channels** (the transposed convolution, also
  ``_patch_gemm``): input position ``h`` receives ``g[i] w[p]`` exactly when
  ``i*s + p*d - pad = h``. For a stride ``s > 1`` only taps with
  ``p*d = h + pad (mod s)`` contribute, so the input positions are split into
  ``s_h * s_w`` *phases* (``h mod s_h``, ``w mod s_w``); each phase is a
  gather-convolution of the zero-padded channels-last gradient with its own
  sub-kernel. Every ``dx`` element is written once: no scatter, no atomics, no
  multiplications by the zeros of a dilated gradient.
* **weight gradient** ``dw[o, k] = sum_r g[o, r] col[k, r]``: the reduction runs
  over positions. With the input in a *shifted layout* (below), the im2col row of
  tap ``(c, p, q)`` is a plain contiguous slice, so ``_dot_block`` reads it in
  place: nothing is packed per tap.
* **few output channels** (forward or input-gradient): ``_axpy_rows`` over the
  same shifted layouts (of the input, or of the zero-padded gradient).

The shifted layout (``_shifted_layout``): pad the image, split it by stride phase
(space-to-depth: ``xs[(rh, rw), c, n, u, v] = x_pad[n, c, u*s_h + rh, v*s_w + rw]``)
and store each (phase, channel) plane as one flat row over ``(n, u, v)``. Output
position ``(n, i, j)`` gets the flat index ``r = (n*hq + i)*wq + j`` and tap
``(p, q)`` reads ``row[r + (p*d_h // s_h)*wq + q*d_w // s_w]``: one shift per tap,
the same for every position. Neighbouring rows and images share their zero
padding (``_shifted_grid``). Positions with ``i >= out_h`` or ``j >= out_w`` are
padding of that flat index: computed (the gradient is zero there, or the result
is dropped) but not used -- 7 % extra work for a 28x28 image with a 3x3 kernel.

**1x1 convolutions** (stride 1, no padding, one group, and at least ``_FEW`` channels on
each side) skip all of the above: on NCHW arrays a pointwise convolution already *is* a
batch of matrix products, ``y[n] = W x[n]`` with ``x[n]`` a (C_in, H*W) view, so no
layout pass or packing is needed and ``np.matmul`` reads the arrays in place
(``_pointwise``). The layout passes cost more than the arithmetic of a 1x1
convolution with 32-64 channels: ~9 ms against ~2 ms with BLAS for forward and both
gradients at batch 32, 28x28, 64 -> 32 channels -- a PixelCNN residual block
has two of them.

Parallelism: one ``prange`` over the threads; each takes a contiguous, equal
share of output positions or reduced positions, so batch 1 uses every core too.
No BLAS call runs inside or beside a parallel region.
Arrays reach the compiled code C-contiguous and float32 or float64 (other
dtypes go to the reference), so each function compiles at most twice
(``cache=True`` keeps the machine code on disk). Internal layout buffers are
reused between calls (``_scratch``: fresh pages cost page faults) and start on a
cache line, as do packed weights and patch rows (a vector load that straddles two
lines made these loops ~20 % slower); the results are always fresh arrays.

Measured on 2 Zen 5 cores, float32, batch 64, forward + both gradients: about
1.4x PyTorch's time (oneDNN) on 3x3 convolutions with 64-128 channels, 1.5x on a
4x4 stride-2 transposed convolution, below PyTorch on single-channel inputs;
the kernel loops reach ~200 GFLOP/s per core (see ``minigen/bench_conv.py``).
"""
from __future__ import annotations

import threading

import llvmlite.binding
import numba
import numpy as np
from numba import njit, prange

from .. import reference as _reference

# Reassociation lets LLVM vectorise the reductions; no "no-NaN"/"no-Inf"
# assumptions, so non-finite inputs propagate as in the reference.
_FASTMATH = {"reassoc", "contract"}
_JIT = dict(cache=True, fastmath=_FASTMATH, boundscheck=False, error_model="numpy", nogil=True)

_KPAD = 16          # packed reduction lengths are zero-padded to a multiple of this
_TILE = 32          # patch rows packed per _dot_block call (forward, input-gradient)
_FEW = 8            # fewer output channels per group than this: the axpy form
_AXPY_TILE = 1024   # output positions per _axpy_rows accumulator
_WG_BYTES = 512 * 1024  # weight-gradient chunk: og x rchunk gradient values (in L2)


def _round_up(n, m):
    return -(-n // m) * m


_workspace = threading.local()


def _scratch(name, shape, dtype):
    """A scratch array of ``shape`` whose contents the caller overwrites.

    Kept per thread and reused across calls: on the virtual machines these kernels
    are tuned on, first-touching fresh pages costs about as much as the arithmetic
    of a layout pass (a 14 MB buffer: ~15 ms of page faults). Freshly allocated
    buffers start zeroed, so stale entries are always ordinary floats.
    """
    size = max(1, int(np.prod(shape)))
    bufs = getattr(_workspace, "bufs", None)
    if bufs is None:
        bufs = _workspace.bufs = {}
    key = (name, np.dtype(dtype).str)
    buf = bufs.get(key)
    if buf is None or buf.size < size:
        buf = bufs[key] = _aligned_zeros(size, dtype)
    return buf[:size].reshape(shape)


def _aligned_zeros(shape, dtype, align=64):
    """Zeros whose data starts on a cache line, so that rows of a multiple of 64 bytes
    are whole vector loads (a vector load straddling two lines costs two)."""
    dtype = np.dtype(dtype)
    size = max(1, int(np.prod(shape)))
    raw = np.zeros(size * dtype.itemsize + align, dtype=np.uint8)
    start = -raw.ctypes.data % align
    return raw[start:start + size * dtype.itemsize].view(dtype).reshape(shape)


def release_workspace():
    """Free the scratch buffers kept by the calling thread."""
    _workspace.bufs = {}


# --------------------------------------------------------------------------- dot form


@njit(**_JIT)
def _dot_block_4x4(A, a0, lda, B, boff, nrows, K, out, off, stride, mvalid, accumulate):
    """``out[off[t] + m*stride] (+)= sum_{k<K} A[a0 + m*lda + k] * B[boff[t] + k]``
    for ``t < nrows`` and ``m < mvalid`` (``A``, ``B``, ``out`` flat).

    Works on 4 x 4 blocks; the rows up to ``round_up(mvalid, 4)`` of ``A`` and the
    entries up to ``round_up(nrows, 4)`` of ``boff`` must be readable (they are
    computed, never stored).
    """
    zero = np.zeros(1, dtype=A.dtype)[0]
    for t in range(0, nrows, 4):
        # slices, not offsets: indices known to be >= 0 let LLVM use plain vector loads
        b0 = B[boff[t]:boff[t] + K]
        b1 = B[boff[t + 1]:boff[t + 1] + K]
        b2 = B[boff[t + 2]:boff[t + 2] + K]
        b3 = B[boff[t + 3]:boff[t + 3] + K]
        for m in range(0, mvalid, 4):
            q = a0 + m * lda
            r0 = A[q:q + K]
            r1 = A[q + lda:q + lda + K]
            r2 = A[q + 2 * lda:q + 2 * lda + K]
            r3 = A[q + 3 * lda:q + 3 * lda + K]
            s00 = s01 = s02 = s03 = zero
            s10 = s11 = s12 = s13 = zero
            s20 = s21 = s22 = s23 = zero
            s30 = s31 = s32 = s33 = zero
            for k in range(K):
                x0 = r0[k]
                x1 = r1[k]
                x2 = r2[k]
                x3 = r3[k]
                y0 = b0[k]
                y1 = b1[k]
                y2 = b2[k]
                y3 = b3[k]
                s00 += x0 * y0
                s01 += x0 * y1
                s02 += x0 * y2
                s03 += x0 * y3
                s10 += x1 * y0
                s11 += x1 * y1
                s12 += x1 * y2
                s13 += x1 * y3
                s20 += x2 * y0
                s21 += x2 * y1
                s22 += x2 * y2
                s23 += x2 * y3
                s30 += x3 * y0
                s31 += x3 * y1
                s32 += x3 * y2
                s33 += x3 * y3
            if t + 4 <= nrows and m + 4 <= mvalid:
                o0 = off[t] + m * stride
                o1 = off[t + 1] + m * stride
                o2 = off[t + 2] + m * stride
                o3 = off[t + 3] + m * stride
                if accumulate:
                    out[o0] += s00
                    out[o0 + stride] += s10
                    out[o0 + 2 * stride] += s20
                    out[o0 + 3 * stride] += s30
                    out[o1] += s01
                    out[o1 + stride] += s11
                    out[o1 + 2 * stride] += s21
                    out[o1 + 3 * stride] += s31
                    out[o2] += s02
                    out[o2 + stride] += s12
                    out[o2 + 2 * stride] += s22
                    out[o2 + 3 * stride] += s32
                    out[o3] += s03
                    out[o3 + stride] += s13
                    out[o3 + 2 * stride] += s23
                    out[o3 + 3 * stride] += s33
                else:
                    out[o0] = s00
                    out[o0 + stride] = s10
                    out[o0 + 2 * stride] = s20
                    out[o0 + 3 * stride] = s30
                    out[o1] = s01
                    out[o1 + stride] = s11
                    out[o1 + 2 * stride] = s21
                    out[o1 + 3 * stride] = s31
                    out[o2] = s02
                    out[o2 + stride] = s12
                    out[o2 + 2 * stride] = s22
                    out[o2 + 3 * stride] = s32
                    out[o3] = s03
                    out[o3 + stride] = s13
                    out[o3 + 2 * stride] = s23
                    out[o3 + 3 * stride] = s33
            else:
                _store_edge(out, off, stride, t, m, nrows, mvalid, accumulate,
                            s00, s01, s02, s03, s10, s11, s12, s13,
                            s20, s21, s22, s23, s30, s31, s32, s33)


@njit(**_JIT)
def _store_edge(out, off, stride, t, m, nrows, mvalid, accumulate,
                s00, s01, s02, s03, s10, s11, s12, s13,
                s20, s21, s22, s23, s30, s31, s32, s33):
    """Store (or add) the valid part of a 4 x 4 block at the edge of the output."""
    for c in range(min(4, nrows - t)):
        for r in range(min(4, mvalid - m)):
            if r == 0:
                v = s00 if c == 0 else (s01 if c == 1 else (s02 if c == 2 else s03))
            elif r == 1:
                v = s10 if c == 0 else (s11 if c == 1 else (s12 if c == 2 else s13))
            elif r == 2:
                v = s20 if c == 0 else (s21 if c == 1 else (s22 if c == 2 else s23))
            else:
                v = s30 if c == 0 else (s31 if c == 1 else (s32 if c == 2 else s33))
            idx = off[t + c] + (m + r) * stride
            if accumulate:
                out[idx] += v
            else:
                out[idx] = v


@njit(**_JIT)
def _dot_block_2x4(A, a0, lda, B, boff, nrows, K, out, off, stride, mvalid, accumulate):
    """:func:`_dot_block_4x4` on 2 x 4 blocks, for CPUs with 16 vector registers (AVX2):
    eight accumulators and six loads fit them, where the 4 x 4 block's sixteen spill."""
    zero = np.zeros(1, dtype=A.dtype)[0]
    for t in range(0, nrows, 4):
        b0 = B[boff[t]:boff[t] + K]
        b1 = B[boff[t + 1]:boff[t + 1] + K]
        b2 = B[boff[t + 2]:boff[t + 2] + K]
        b3 = B[boff[t + 3]:boff[t + 3] + K]
        for m in range(0, mvalid, 2):
            q = a0 + m * lda
            r0 = A[q:q + K]
            r1 = A[q + lda:q + lda + K]
            s00 = s01 = s02 = s03 = zero
            s10 = s11 = s12 = s13 = zero
            for k in range(K):
                x0 = r0[k]
                x1 = r1[k]
                y0 = b0[k]
                y1 = b1[k]
                y2 = b2[k]
                y3 = b3[k]
                s00 += x0 * y0
                s01 += x0 * y1
                s02 += x0 * y2
                s03 += x0 * y3
                s10 += x1 * y0
                s11 += x1 * y1
                s12 += x1 * y2
                s13 += x1 * y3
            _store_edge(out, off, stride, t, m, nrows, min(mvalid, m + 2), accumulate,
                        s00, s01, s02, s03, s10, s11, s12, s13,
                        zero, zero, zero, zero, zero, zero, zero, zero)


def _wide_simd():
    """Whether the compiled code may use AVX-512's 32 vector registers (Numba compiles for
    the host CPU, or for ``NUMBA_CPU_FEATURES`` when set)."""
    features = numba.config.CPU_FEATURES or llvmlite.binding.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


# The block that fills the register file without spilling: 4 x 4 with 32 vector registers
# (~200 GFLOP/s per Zen 5 core), 2 x 4 with 16 (AVX2: 4 x 4 spills and runs at ~32 GFLOP/s
# per Zen 3 core, 2 x 4 at ~50, as fast as OpenBLAS there). Numba's cache is keyed by CPU,
# so each machine keeps the code compiled with its own choice.
_dot_block = _dot_block_4x4 if _wide_simd() else _dot_block_2x4


# --------------------------------------------------------------------------- axpy form


@njit(**_JIT)
def _axpy_rows(src, base, w, K, pos, acc, T):
    """``acc[e] = sum_{k<K} w[k] * src[base[k] + pos + e]`` for ``e < T``."""
    for e in range(T):
        acc[e] = 0
    k = 0
    while k + 4 <= K:
        c0 = w[k]
        c1 = w[k + 1]
        c2 = w[k + 2]
        c3 = w[k + 3]
        # slices, not offsets: indices known to be >= 0 let LLVM use plain vector loads
        s0 = src[base[k] + pos:base[k] + pos + T]
        s1 = src[base[k + 1] + pos:base[k + 1] + pos + T]
        s2 = src[base[k + 2] + pos:base[k + 2] + pos + T]
        s3 = src[base[k + 3] + pos:base[k + 3] + pos + T]
        for e in range(T):
            acc[e] += c0 * s0[e] + c1 * s1[e] + c2 * s2[e] + c3 * s3[e]
        k += 4
    while k < K:
        c0 = w[k]
        s0 = src[base[k] + pos:base[k] + pos + T]
        for e in range(T):
            acc[e] += c0 * s0[e]
        k += 1


@njit(parallel=True, **_JIT)
def _axpy_impl(src, wk, base, kcount, items, geo, out, nthr):
    """Few-output-channel convolution over a shifted layout.

    ``src``: flat shifted layout; ``wk[f, m, :kcount[f]]``: weights of output channel
    ``m`` in phase ``f``; ``base[f, grp, k]``: flat offset of tap ``k`` for group
    ``grp``; ``items[i] = (f, n, m, a0, a1)``: compute rows ``[a0, a1)`` of image ``n``,
    channel ``m``, phase ``f``; ``geo[f] = (img_stride, pitch, ncols, dn, dm, da, db,
    d0, cg)``: position ``(a, b)`` of image ``n`` is ``n*img_stride + a*pitch + b`` in
    the source and ``n*dn + m*dm + a*da + b*db + d0`` in the output, for ``b < ncols``;
    channel ``m`` belongs to group ``m // cg``.
    """
    nitems = items.shape[0]
    max_len = 0
    for f in range(geo.shape[0]):
        max_len = max(max_len, geo[f, 1])
    for t in prange(nthr):
        acc = np.empty(max(_AXPY_TILE, max_len), dtype=src.dtype)
        lo = nitems * t // nthr
        hi = nitems * (t + 1) // nthr
        for it in range(lo, hi):
            f = items[it, 0]
            n = items[it, 1]
            m = items[it, 2]
            a0 = items[it, 3]
            a1 = items[it, 4]
            pitch = geo[f, 1]
            ncols = geo[f, 2]
            _axpy_rows(src, base[f, m // geo[f, 8]], wk[f, m], kcount[f],
                       n * geo[f, 0] + a0 * pitch, acc, (a1 - a0) * pitch)
            dst0 = n * geo[f, 3] + m * geo[f, 4] + geo[f, 7]
            da = geo[f, 5]
            db = geo[f, 6]
            for a in range(a0, a1):
                row = acc[(a - a0) * pitch:(a - a0) * pitch + ncols]
                d = dst0 + a * da
                if db == 1:
                    dst = out[d:d + ncols]
                    for b in range(ncols):
                        dst[b] = row[b]
                else:
                    for b in range(ncols):
                        out[d + b * db] = row[b]


def _axpy_items(n_img, m_count, rows, pitch):
    """Work items ``(f, n, m, a0, a1)`` covering rows ``[0, rows[f])`` of every phase."""
    step = max(1, _AXPY_TILE // pitch)
    items = []
    for f, nrow in enumerate(rows):
        a0 = np.arange(0, nrow, step)
        nn, mm, tt = np.meshgrid(np.arange(n_img), np.arange(m_count), np.arange(len(a0)),
                                 indexing="ij")
        items.append(np.stack([np.full(nn.size, f), nn.ravel(), mm.ravel(), a0[tt.ravel()],
                               np.minimum(a0[tt.ravel()] + step, nrow)], axis=1))
    return np.ascontiguousarray(np.concatenate(items), dtype=np.int64)


# --------------------------------------------------------------------------- layouts


@njit(parallel=True, **_JIT)
def _channels_last_padded(x, top, left, out):
    """``out[n, top + h, left + w, c] = x[n, c, h, w]``, zero elsewhere in ``out``."""
    n_img, n_ch, h_in, w_in = x.shape
    for n in prange(n_img):
        img = out[n]
        img[:top] = 0
        img[top + h_in:] = 0
        for h in range(h_in):
            row = img[top + h]
            row[:left] = 0
            row[left + w_in:] = 0
            # contiguous reads along w, strided writes into the cache-resident output row
            d = row[left:left + w_in].reshape(-1)
            for c in range(n_ch):
                s = x[n, c, h]
                for w in range(w_in):
                    d[w * n_ch + c] = s[w]


@njit(parallel=True, **_JIT)
def _shifted_fill(x, sh, sw, ph, pw, hq, wq, xs):
    """``xs[rh*sw + rw, c, (n*hq + u)*wq + v] = x[n, c, u*sh + rh - ph, v*sw + rw - pw]``
    (zero outside ``x``, and zero in the tail of each row)."""
    n_img, n_ch, h_in, w_in = x.shape
    nph = sh * sw
    ltot = xs.shape[2]
    for idx in prange(nph * n_ch):
        f = idx // n_ch
        c = idx - f * n_ch
        rh = f // sw
        rw = f - rh * sw
        row = xs[f, c]
        # columns v whose source column v*sw + rw - pw lies inside the image
        v_lo = min(wq, max(0, (pw - rw + sw - 1) // sw))
        v_hi = min(wq, (w_in - 1 + pw - rw) // sw + 1) if w_in - 1 + pw - rw >= 0 else 0
        v_hi = max(v_lo, v_hi)
        col = v_lo * sw + rw - pw
        for n in range(n_img):
            for u in range(hq):
                d = (n * hq + u) * wq
                dst = row[d:d + wq]
                hh = u * sh + rh - ph
                if hh < 0 or hh >= h_in:
                    dst[:] = 0
                    continue
                dst[:v_lo] = 0
                dst[v_hi:] = 0
                src = x[n, c, hh]
                if sw == 1:
                    s = src[col:col + v_hi - v_lo]
                    d2 = dst[v_lo:v_hi]
                    for v in range(v_hi - v_lo):
                        d2[v] = s[v]
                else:
                    for v in range(v_hi - v_lo):
                        dst[v_lo + v] = src[col + v * sw]
        row[n_img * hq * wq:ltot] = 0


def _shifted_layout(x, stride, padding, hq, wq, tail):
    """The shifted layout of ``x`` (see the module docstring): shape
    ``(s_h*s_w, C, N*hq*wq + tail)``."""
    n, c = x.shape[:2]
    xs = _scratch("shifted", (stride[0] * stride[1], c, n * hq * wq + tail), x.dtype)
    _shifted_fill(x, stride[0], stride[1], padding[0], padding[1], hq, wq, xs)
    return xs


def _shifted_grid(size, padding, stride, out_size, ah, aw):
    """Rows ``hq`` and columns ``wq`` per image plane of a shifted layout, and the
    zero tail each flat row needs beyond its ``N*hq*wq`` values.

    Neighbouring images share their zero padding: a plane holds the top/left
    padding and the image (``ceil((h + p)/s)`` phase rows), and a read that runs past
    the plane's right or bottom edge lands in the left or top padding of the next
    row or image -- zeros, exactly the bottom/right padding it stands for. (Such a
    read would be at padded column ``c < w + 2p``, and ``c - wq*s < p``.)
    """
    hq = max(-(-(size[0] + padding[0]) // stride[0]), out_size[0])
    wq = max(-(-(size[1] + padding[1]) // stride[1]), out_size[1])
    tail = (int(ah.max()) + 1) * wq + int(aw.max()) + _KPAD
    return hq, wq, tail


def _forward_taps(kh, kw, stride, dilation):
    """Phase index and row/column shift (in the phase's grid) of every tap (p, q)."""
    (sh, sw), (dh, dw) = stride, dilation
    p, q = np.meshgrid(np.arange(kh) * dh, np.arange(kw) * dw, indexing="ij")
    phase = (p % sh) * sw + (q % sw)
    return phase.ravel(), (p // sh).ravel(), (q // sw).ravel()


# --------------------------------------------------------------------------- dot form driver


@njit(parallel=True, **_JIT)
def _patch_gemm(src, wp, shifts, ntaps, clen, grid, out, groups, mvalid, bufs):
    """Pack patch rows from a padded channels-last source and multiply them by packed
    weights -- the forward and the input gradient with many output channels.

    ``src``: flat channels-last source; group ``g`` uses its channels
    ``[g*clen, (g+1)*clen)``. Phases ``f`` (one for the forward, ``s_h*s_w`` for the
    input gradient) each have a position grid ``(n, i, j)`` and their own taps:
    ``grid[f] = (nn, ni, nj, b_n, b_i, b_j, b_0, o_n, o_i, o_j, o_0, o_g, o_m)``.
    Patch row of ``(n, i, j)``: ``concat_k src[base + shifts[f, k] : ... + clen]``
    for ``k < ntaps[f]`` with ``base = n*b_n + i*b_i + j*b_j + b_0 + g*clen``; its
    results go to ``out[n*o_n + i*o_i + j*o_j + o_0 + g*o_g + m*o_m]`` for
    ``m < mvalid``. ``wp[g, f]``: packed weights (Mp, Kp) with the tap-major layout
    of the patch rows. ``bufs[t]``: thread ``t``'s patch tile (``_TILE * Kp`` values);
    one thread per row of ``bufs``.
    """
    nph, mp, kp = wp.shape[1], wp.shape[2], wp.shape[3]
    a_flat = wp.reshape(-1)
    starts = np.zeros(nph + 1, dtype=np.int64)
    for f in range(nph):
        starts[f + 1] = starts[f] + grid[f, 0] * grid[f, 1] * grid[f, 2]
    total = starts[nph]
    nthr = bufs.shape[0]
    for t in prange(nthr):
        buf = bufs[t]
        boff = np.arange(_TILE) * kp
        off = np.zeros(_TILE, dtype=np.int64)
        r_lo = total * t // nthr
        r_hi = total * (t + 1) // nthr
        for g in range(groups):
            for f in range(nph):
                lo = max(r_lo, starts[f])
                hi = min(r_hi, starts[f + 1])
                if lo >= hi:
                    continue
                ni = grid[f, 1]
                nj = grid[f, 2]
                nt = ntaps[f]
                k_used = nt * clen
                kk = (k_used + _KPAD - 1) // _KPAD * _KPAD
                sf = shifts[f]
                for r0 in range(lo, hi, _TILE):
                    nrows = min(_TILE, hi - r0)
                    u = r0 - starts[f]
                    n = u // (ni * nj)
                    i = (u - n * ni * nj) // nj
                    j = u - n * ni * nj - i * nj
                    for row in range(nrows):
                        base = (n * grid[f, 3] + i * grid[f, 4] + j * grid[f, 5] + grid[f, 6]
                                + g * clen)
                        off[row] = (n * grid[f, 7] + i * grid[f, 8] + j * grid[f, 9]
                                    + grid[f, 10] + g * grid[f, 11])
                        dst = buf[row * kp:(row + 1) * kp]
                        if clen == 1:
                            for k in range(nt):
                                dst[k] = src[base + sf[k]]
                        else:
                            for k in range(nt):
                                s = src[base + sf[k]:base + sf[k] + clen]
                                d = dst[k * clen:(k + 1) * clen]
                                for c in range(clen):
                                    d[c] = s[c]
                        dst[k_used:kk] = 0  # stale columns of a longer phase
                        j += 1
                        if j == nj:
                            j = 0
                            i += 1
                            if i == ni:
                                i = 0
                                n += 1
                    _dot_block(a_flat, (g * nph + f) * mp * kp, kp, buf, boff, nrows, kk,
                               out, off, grid[f, 12], mvalid, False)


# --------------------------------------------------------------------------- forward


def conv2d_forward(x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Cross-correlation without bias (see :func:`kernels.reference.conv2d_forward`)."""
    dtype = _common_dtype(x, w)
    if dtype is None:
        return _reference.conv2d_forward(x, w, stride, padding, dilation, groups)
    x = np.ascontiguousarray(x, dtype=dtype)
    w = np.ascontiguousarray(w, dtype=dtype)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    n, c_in, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h = _reference.conv_output_size(h, kh, sh, ph, dh)
    out_w = _reference.conv_output_size(wd, kw, sw, pw, dw)
    y = np.empty((n, c_out, out_h, out_w), dtype=dtype)
    if y.size == 0:
        return y
    og = c_out // groups
    if cg * kh * kw == 0:
        y[...] = 0
        return y
    if _pointwise(w.shape, stride, padding, groups):
        return np.matmul(w.reshape(c_out, c_in), x.reshape(n, c_in, h * wd), out=y.reshape(n, c_out, -1)
                         ).reshape(y.shape)
    if _whole_input((h, wd), w.shape, padding, dilation, groups):
        return np.matmul(x.reshape(n, -1), w.reshape(c_out, -1).T).reshape(y.shape)
    if _short_reduction(w.shape, groups, _SHORT_FORWARD):
        col = _unrolled_patches(x, kh, kw, stride, padding, dilation, out_h, out_w)
        np.matmul(w.reshape(c_out, -1), col, out=y.reshape(n, c_out, -1))
        return y
    nthr = _threads(y.size)
    if og < _FEW:
        return _forward_few(x, w, y, stride, padding, dilation, groups, nthr)
    k_used = kh * kw * cg
    # packed weight: wp[g, 0, o, (p*kw + q)*cg + c] = w[g*og + o, c, p, q]
    wp = _aligned_zeros((groups, 1, _round_up(og, 4), _round_up(k_used, _KPAD)), dtype)
    wp[:, 0, :og, :k_used] = (w.reshape(groups, og, cg, kh, kw)
                              .transpose(0, 1, 3, 4, 2).reshape(groups, og, k_used))
    hp, wpad = h + 2 * ph, wd + 2 * pw
    xh = _scratch("channels_last", (n, hp, wpad, c_in), dtype)
    _channels_last_padded(x, ph, pw, xh)
    p, q = np.meshgrid(np.arange(kh) * dh, np.arange(kw) * dw, indexing="ij")
    shifts = ((p * wpad + q) * c_in).reshape(1, -1).astype(np.int64)
    npos = out_h * out_w
    grid = np.array([[n, out_h, out_w, hp * wpad * c_in, sh * wpad * c_in, sw * c_in, 0,
                      c_out * npos, out_w, 1, 0, og * npos, npos]], dtype=np.int64)
    _patch_gemm(xh.reshape(-1), wp, shifts, np.array([kh * kw], dtype=np.int64), cg, grid,
                y.reshape(-1), groups, og, _scratch("tiles", (nthr, _TILE * wp.shape[3]), dtype))
    return y


def _forward_few(x, w, y, stride, padding, dilation, groups, nthr):
    """Forward with few output channels per group: axpy form over the shifted input."""
    n, c_in = x.shape[:2]
    c_out, cg, kh, kw = w.shape
    out_h, out_w = y.shape[2:]
    phase, ah, aw = _forward_taps(kh, kw, stride, dilation)
    hq, wq, tail = _shifted_grid(x.shape[2:], padding, stride, (out_h, out_w), ah, aw)
    xs = _shifted_layout(x, stride, padding, hq, wq, tail)
    ltot = xs.shape[2]
    # base[0, grp, (c, p, q)] = offset of tap (p, q) of channel grp*cg + c
    chan = np.arange(groups)[:, None] * cg + np.arange(cg)[None, :]          # (G, cg)
    tap = phase * c_in * ltot + ah * wq + aw                                   # (kh*kw,)
    base = (chan[:, :, None] * ltot + tap[None, None, :]).reshape(1, groups, -1)
    wk = w.reshape(1, c_out, cg * kh * kw)
    kcount = np.array([cg * kh * kw], dtype=np.int64)
    geo = np.array([[hq * wq, wq, out_w, c_out * out_h * out_w, out_h * out_w, out_w, 1, 0,
                     c_out // groups]], dtype=np.int64)
    items = _axpy_items(n, c_out, [out_h], wq)
    _axpy_impl(xs.reshape(-1), wk, np.ascontiguousarray(base, dtype=np.int64), kcount, items,
               geo, y.reshape(-1), min(nthr, len(items)))
    return y


# --------------------------------------------------------------------------- input gradient


def _phase_taps(k, s, pad, d):
    """For each residue r = h mod s: the taps p with (r + pad - p*d) divisible by s,
    and the offsets e = (r + pad - p*d) / s of the gradient rows they read."""
    taps = [np.array([p for p in range(k) if (r + pad - p * d) % s == 0], dtype=np.int64)
            for r in range(s)]
    return taps, [(r + pad - t * d) // s for r, t in enumerate(taps)]


def conv2d_input_grad(g, w, input_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                      groups=1):
    """Gradient of conv2d w.r.t. its input = conv_transpose2d
    (see :func:`kernels.reference.conv2d_input_grad`)."""
    dtype = _common_dtype(g, w)
    if dtype is None:
        return _reference.conv2d_input_grad(g, w, input_shape, stride, padding, dilation, groups)
    g = np.ascontiguousarray(g, dtype=dtype)
    w = np.ascontiguousarray(w, dtype=dtype)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    n, c_in, h, wd = (int(v) for v in input_shape)
    c_out, cg, kh, kw = w.shape
    _, _, out_h, out_w = g.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    og = c_out // groups
    dx = np.empty((n, c_in, h, wd), dtype=dtype)
    if dx.size == 0:
        return dx
    if g.size == 0 or og * kh * kw == 0:
        dx[...] = 0
        return dx
    if _pointwise(w.shape, stride, padding, groups):
        np.matmul(w.reshape(c_out, c_in).T, g.reshape(n, c_out, -1), out=dx.reshape(n, c_in, -1))
        return dx
    if _whole_input((h, wd), w.shape, padding, dilation, groups):
        np.matmul(g.reshape(n, c_out), w.reshape(c_out, -1), out=dx.reshape(n, -1))
        return dx
    nthr = _threads(dx.size)
    # Phase (rh, rw) holds the input positions h = rh + sh*a, w = rw + sw*b; its taps
    # th[rh] x tw[rw] read the gradient at (a + eh, b + ew).
    th, eh = _phase_taps(kh, sh, ph, dh)
    tw, ew = _phase_taps(kw, sw, pw, dw)
    ha = [len(range(r, h, sh)) for r in range(sh)]
    wb = [len(range(r, wd, sw)) for r in range(sw)]
    # pad the gradient so that every read (a + e, b + e') of a phase is in the array
    top = max([0] + [int(-e.min()) for e in eh if e.size])
    left = max([0] + [int(-e.min()) for e in ew if e.size])
    hg = top + max([out_h] + [ha[r] + int(e.max()) for r, e in enumerate(eh) if e.size])
    wg_ = left + max([out_w] + [wb[r] + int(e.max()) for r, e in enumerate(ew) if e.size])
    nph = sh * sw
    phases = [divmod(f, sw) for f in range(nph)]
    ntaps = np.array([len(th[rh]) * len(tw[rw]) for rh, rw in phases], dtype=np.int64)
    wgrp = w.reshape(groups, og, cg, kh, kw)
    if cg < _FEW:
        return _input_grad_few(g, wgrp, dx, stride, phases, th, tw, eh, ew, ha, wb, top, left,
                               hg, wg_, ntaps, nthr)
    k_max = max(1, int(ntaps.max())) * og
    wt = _aligned_zeros((groups, nph, _round_up(cg, 4), _round_up(k_max, _KPAD)), dtype)
    shifts = np.zeros((nph, max(1, int(ntaps.max()))), dtype=np.int64)
    grid = np.zeros((nph, 13), dtype=np.int64)
    for f, (rh, rw) in enumerate(phases):
        grid[f] = (n, ha[rh], wb[rw], hg * wg_ * c_out, wg_ * c_out, c_out,
                   (top * wg_ + left) * c_out,
                   c_in * h * wd, sh * wd, sw, rh * wd + rw, cg * h * wd, h * wd)
        if ntaps[f] == 0:
            continue
        # patch row of phase f: taps (ta, tb) major, then the group's og channels
        sub = wgrp[:, :, :, th[rh]][:, :, :, :, tw[rw]]            # (G, og, cg, nth, ntw)
        wt[:, f, :cg, :ntaps[f] * og] = sub.transpose(0, 2, 3, 4, 1).reshape(groups, cg, -1)
        shifts[f, :ntaps[f]] = ((eh[rh][:, None] * wg_ + ew[rw][None, :]) * c_out).ravel()
    gh = _scratch("channels_last", (n, hg, wg_, c_out), dtype)
    _channels_last_padded(g, top, left, gh)
    _patch_gemm(gh.reshape(-1), wt, shifts, ntaps, og, grid, dx.reshape(-1), groups, cg,
                _scratch("tiles", (nthr, _TILE * wt.shape[3]), dtype))
    return dx


def _input_grad_few(g, wgrp, dx, stride, phases, th, tw, eh, ew, ha, wb, top, left, hg, wg_,
                    ntaps, nthr):
    """Input gradient with few input channels per group: axpy form, phase by phase,
    over the zero-padded gradient (a shifted layout with stride 1)."""
    n, c_in, h, wd = dx.shape
    groups, og, cg = wgrp.shape[:3]
    sh, sw = stride
    nph = len(phases)
    gs = _shifted_layout(g, (1, 1), (top, left), hg, wg_, tail=hg * wg_)
    ltot = gs.shape[2]
    k_max = max(1, int(ntaps.max()) * og)
    wk = np.zeros((nph, c_in, k_max), dtype=dx.dtype)
    base = np.zeros((nph, groups, k_max), dtype=np.int64)
    geo = np.zeros((nph, 9), dtype=np.int64)
    chan = np.arange(groups)[:, None] * og + np.arange(og)[None, :]
    for f, (rh, rw) in enumerate(phases):
        geo[f] = (hg * wg_, wg_, wb[rw], c_in * h * wd, h * wd, sh * wd, sw, rh * wd + rw, cg)
        k_used = ntaps[f] * og
        if k_used == 0:
            continue
        # k = (o, ta, tb): weight w[grp*og + o, c, th[ta], tw[tb]] on a shifted gradient row
        sub = wgrp[:, :, :, th[rh]][:, :, :, :, tw[rw]]                # (G, og, cg, nth, ntw)
        wk[f, :, :k_used] = sub.transpose(0, 2, 1, 3, 4).reshape(c_in, k_used)
        shift = ((eh[rh] + top)[:, None] * wg_ + (ew[rw] + left)[None, :]).ravel()
        base[f, :, :k_used] = (chan[:, :, None] * ltot + shift[None, None, :]).reshape(groups, -1)
    items = _axpy_items(n, c_in, [ha[rh] for rh, _ in phases], wg_)
    _axpy_impl(gs.reshape(-1), wk, base, ntaps * og, items, geo, dx.reshape(-1),
               min(nthr, len(items)))
    return dx


# --------------------------------------------------------------------------- weight gradient


@njit(parallel=True, **_JIT)
def _weight_grad_impl(xs, gs, koff, dwp, og, kg, groups, total, rchunk, nthr):
    """``dw[grp*og + o, k] = sum_r gs[grp*og + o, r] * xs[koff[grp, k] + r]``, ``r < total``.

    ``xs``: flat shifted input; ``gs``: (C_out + 3, total) gradient on the same flat
    positions (zero at padding positions); ``dwp[t]``: thread ``t``'s partial result,
    flat (C_out * kg)."""
    lda = gs.shape[1]
    g_flat = gs.reshape(-1)
    for t in prange(nthr):
        boff = np.zeros(4, dtype=np.int64)
        off = np.zeros(4, dtype=np.int64)
        out = dwp[t]
        r_lo = (total * t // nthr) // _KPAD * _KPAD
        r_hi = total if t == nthr - 1 else (total * (t + 1) // nthr) // _KPAD * _KPAD
        for c0 in range(r_lo, r_hi, rchunk):
            c1 = min(r_hi, c0 + rchunk)
            for grp in range(groups):
                for k0 in range(0, kg, 4):
                    nk = min(4, kg - k0)
                    for kr in range(4):
                        k = min(k0 + kr, kg - 1)
                        boff[kr] = koff[grp, k] + c0
                        off[kr] = grp * og * kg + k
                    _dot_block(g_flat, grp * og * lda + c0, lda, xs, boff, nk, c1 - c0, out,
                               off, kg, og, True)


@njit(parallel=True, **_JIT)
def _gradient_rows(g, hq, wq, gs):
    """``gs[o, (n*hq + i)*wq + j] = g[n, o, i, j]``, zero elsewhere (rows >= C_out too)."""
    n_img, c_out, out_h, out_w = g.shape
    rows = gs.shape[0]
    for o in prange(rows):
        row = gs[o]
        if o >= c_out:
            row[:] = 0
            continue
        row[n_img * hq * wq:] = 0
        for n in range(n_img):
            for i in range(hq):
                d = (n * hq + i) * wq
                dst = row[d:d + wq]
                if i < out_h:
                    src = g[n, o, i]
                    for j in range(out_w):
                        dst[j] = src[j]
                    dst[out_w:] = 0
                else:
                    dst[:] = 0


def conv2d_weight_grad(x, g, weight_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                       groups=1):
    """Gradient of conv2d w.r.t. its weight (see :func:`kernels.reference.conv2d_weight_grad`)."""
    dtype = _common_dtype(x, g)
    if dtype is None:
        return _reference.conv2d_weight_grad(x, g, weight_shape, stride, padding, dilation,
                                             groups)
    x = np.ascontiguousarray(x, dtype=dtype)
    g = np.ascontiguousarray(g, dtype=dtype)
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    c_out, cg, kh, kw = (int(v) for v in weight_shape)
    n, c_in = x.shape[:2]
    _, _, out_h, out_w = g.shape
    kg = cg * kh * kw
    if g.size == 0 or c_out * kg == 0:
        return np.zeros((c_out, cg, kh, kw), dtype=dtype)
    if _pointwise((c_out, cg, kh, kw), stride, padding, groups):
        # dw = sum_n g[n] x[n]^T: a (C_out, C_in) product per image, summed over the batch
        per_image = np.matmul(g.reshape(n, c_out, -1), x.reshape(n, c_in, -1).transpose(0, 2, 1))
        return per_image.sum(axis=0).reshape(c_out, cg, kh, kw)
    if _whole_input(x.shape[2:], (c_out, cg, kh, kw), padding, dilation, groups):
        return np.matmul(g.reshape(n, c_out).T, x.reshape(n, -1)).reshape(c_out, cg, kh, kw)
    if _short_reduction((c_out, cg, kh, kw), groups, _SHORT_WEIGHT_GRAD):
        # dw = Σ_n g[n] col[n]^T: a (C_out, K) product per image, summed over the batch
        col = _unrolled_patches(x, kh, kw, stride, padding, dilation, out_h, out_w)
        per_image = np.matmul(g.reshape(n, c_out, -1), col.transpose(0, 2, 1))
        return per_image.sum(axis=0).reshape(c_out, cg, kh, kw)
    og = c_out // groups
    phase, ah, aw = _forward_taps(kh, kw, stride, dilation)
    hq, wq, tail = _shifted_grid(x.shape[2:], padding, stride, (out_h, out_w), ah, aw)
    total = n * hq * wq
    xs = _shifted_layout(x, stride, padding, hq, wq, tail)
    ltot = xs.shape[2]
    # rows padded to whole cache lines: the streamed operand of _dot_block stays aligned
    gs = _scratch("gradient_rows", (c_out + 3, _round_up(total, _KPAD)), dtype)
    _gradient_rows(g, hq, wq, gs)
    # koff[grp, (c, p, q)]: flat offset of the shifted row that tap (p, q) of channel c reads
    chan = np.arange(groups)[:, None] * cg + np.arange(cg)[None, :]
    tap = phase * c_in * ltot + ah * wq + aw
    koff = (chan[:, :, None] * ltot + tap[None, None, :]).reshape(groups, kg).astype(np.int64)
    nthr = _threads(total)
    rchunk = _round_up(max(256, min(4096, _WG_BYTES // (dtype.itemsize * _round_up(og, 4)))),
                       _KPAD)
    dwp = np.zeros((nthr, c_out * kg), dtype=dtype)
    _weight_grad_impl(xs.reshape(-1), gs, koff, dwp, og, kg, groups, total, rchunk, nthr)
    dw = dwp[0] if nthr == 1 else dwp.sum(axis=0)
    return dw.reshape(c_out, cg, kh, kw)


# --------------------------------------------------------------------------- helpers


def _pointwise(weight_shape, stride, padding, groups):
    """A 1x1 convolution that is a plain matrix product over channels (see the module notes);
    with fewer than ``_FEW`` channels on a side, the product is too thin for BLAS to pay."""
    c_out, cg, kh, kw = weight_shape
    return (kh, kw) == (1, 1) and stride == (1, 1) and padding == (0, 0) and groups == 1 \
        and min(c_out, cg) >= _FEW


def _whole_input(size, weight_shape, padding, dilation, groups):
    """A kernel that covers the whole unpadded input: one output pixel per image, and the convolution
    is a dense layer, ``y[n] = W x[n]`` with W the (C_out, C_in*kh*kw) weight -- DCGAN's first
    (1x1 -> 7x7, as a transposed convolution) and last (7x7 -> 1) layers. The patch form would pad a
    1x1 gradient to kh x kw and multiply mostly zeros (50x the work for a 7x7 kernel)."""
    c_out, cg, kh, kw = weight_shape
    return tuple(int(v) for v in size) == (kh, kw) and kh * kw > 1 and padding == (0, 0) \
        and dilation == (1, 1) and groups == 1


# A first layer reads one or a few channels: with C_in·kh·kw this short, the packed kernels' register
# blocks are mostly padding and the patch layout costs more than the arithmetic, while the unrolled
# patches are small and one BLAS product over them runs near the machine's peak. Measured on a 2-core
# AVX-512 EPYC, (64, 1, 28, 28): k4 s2 → 64 channels forward 2.0 → 0.4 ms and weight gradient
# 0.86 → 0.42 ms; k3 → 32 channels 3.7 → 0.5 ms and 1.9 → 0.5 ms. Beyond these lengths the packed
# kernels win again (C_in·kh·kw = 144: forward 8.3 vs 10.7 ms).
_SHORT_FORWARD, _SHORT_WEIGHT_GRAD = 64, 49


def _short_reduction(weight_shape, groups, limit):
    """A convolution whose reduction length C_in·kh·kw is at most ``limit`` (see above)."""
    c_out, cg, kh, kw = weight_shape
    return groups == 1 and cg * kh * kw <= limit and kh * kw > 1


def _unrolled_patches(x, kh, kw, stride, padding, dilation, out_h, out_w):
    """im2col: ``col[n, (c, p, q), (i, j)] = x_padded[n, c, i*sh + p*dh, j*sw + q*dw]``, one strided
    slice copy per tap (kh·kw NumPy copies of N·C·out_h·out_w values each)."""
    n, c, h, w = x.shape
    ph, pw = padding
    xp = x
    if ph or pw:
        xp = _scratch("short_padded", (n, c, h + 2 * ph, w + 2 * pw), x.dtype)
        xp[:, :, :ph], xp[:, :, h + ph:], xp[:, :, :, :pw], xp[:, :, :, w + pw:] = 0, 0, 0, 0
        xp[:, :, ph:ph + h, pw:pw + w] = x
    col = _scratch("short_patches", (n, c, kh, kw, out_h, out_w), x.dtype)
    for p in range(kh):
        for q in range(kw):
            col[:, :, p, q] = _reference._window(xp, p, q, stride, dilation, out_h, out_w)
    return col.reshape(n, c * kh * kw, out_h * out_w)


def _pair(v):
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _common_dtype(a, b):
    """float32 or float64 for the compiled kernels; None sends other dtypes to the reference."""
    dtype = np.result_type(a, b)
    return dtype if dtype in (np.float32, np.float64) else None


_WORK_PER_THREAD = 256


def _threads(work):
    """Work shares (one per thread) for ``work`` output values; tiny problems stay serial."""
    return max(1, min(numba.get_num_threads(), work // _WORK_PER_THREAD))
