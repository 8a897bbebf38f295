"""CuPy GPU kernels for conv2d: forward, input-gradient (= conv_transpose2d) and
weight-gradient, with the signatures of ``kernels/reference.py``.

The classic GPU recipe, kept deliberately plain:

* ``im2col`` (a CUDA kernel, ``_SOURCE``) unrolls the receptive fields into
  ``col[n, g, (c, p, q), (i, j)]``: a thread owns one output position of one unrolled row
  and walks the images, so the integer divisions that locate an entry are made once per
  thread, not once per entry;
* the contraction is one strided-batched cuBLAS product per group (``_blas.matmul_strided``:
  the filter bank repeated with stride 0 for every image), written straight into the NCHW
  output — no transpose afterwards, no copy of the filters;
* the input gradient is the transposed product ``col = W^T g`` followed by
  ``col2im`` written as a *gather*: each thread owns one input position of a
  channel and sums the column entries that read it, so no atomics are needed and the
  result is deterministic;
* the weight gradient sums over images *and* positions, so its columns are unrolled
  tap-major, ``col[(c, p, q), n, (i, j)]``, and the output gradient is transposed to
  ``(o, n, (i, j))``: then it is one product per group, reduction length ``n * out_h * out_w``.

A 1x1 convolution with stride 1 and no padding needs no unrolling at all: the input is its own
column matrix (forward) and the product lands directly in the input gradient.

Column buffers can be large (``N * C * kh * kw * out_h * out_w`` values), so the
batch is processed in chunks that keep one buffer under ``_COL_BYTES``.

``conv_implicit.py`` computes the same three products without the column buffer (an implicit GEMM).
Which is faster depends on the shape and the GPU, so each public function times both the first time
it meets a shape and keeps the faster one for it (``ALGORITHM = "auto"``, like cuDNN's benchmark
mode); ``MINIGEN_GPU_CONV=columns`` (or ``implicit32``/``implicit64``) fixes the choice. The algorithms
sum in different orders, so as with cuDNN's benchmark mode two processes can differ in the last bits;
a fixed choice makes a GPU run bit-reproducible.
"""
from __future__ import annotations

import functools
import os
import warnings
from typing import NamedTuple

import cupy
import numpy as np

from . import conv_implicit
from ._blas import matmul_strided
from ._compile import TemplateKernels

#: "auto" (time every algorithm once per shape, keep the fastest), "columns", "implicit32", "implicit64"
ALGORITHM = os.environ.get("MINIGEN_GPU_CONV", "auto")
ALGORITHMS = ("columns", *(f"implicit{bm}" for bm in conv_implicit.BLOCK_ROWS))

_COL_BYTES = 256 * 1024 * 1024
_THREADS = 128
_TARGET_THREADS = 1 << 18       # enough threads in flight to fill a large GPU

# One thread per output position (i, j) of one unrolled row (c, p, q), walking a share of the images:
# the integer divisions that locate a column entry are done once per thread, not once per entry (as an
# element-wise kernel over the flat index had to: six 64-bit divisions per entry, where it wrote its
# columns at a tenth of an H200's bandwidth). Offsets are 64-bit, everything that is divided is 32-bit.
_SOURCE = r"""
template <typename T>
__global__ void conv_im2col(const T* x, T* col, const int N, const int C, const int H, const int W,
                            const int kh, const int kw, const int out_h, const int out_w,
                            const int sh, const int sw, const int ph, const int pw, const int dh,
                            const int dw, const int taps_first)
{
    // col is (N, C*kh*kw, out_h*out_w), or with taps_first (C*kh*kw, N, out_h*out_w)
    const int positions = out_h * out_w, rows = C * kh * kw;
    const int pos = blockIdx.x * blockDim.x + threadIdx.x;
    if (pos >= positions) return;
    const int i = pos / out_w, j = pos - i * out_w;
    const long long image = (long long)C * H * W;
    for (int row = blockIdx.y; row < rows; row += gridDim.y) {
        const int q = row % kw, p = (row / kw) % kh, c = row / (kw * kh);
        const int hh = i * sh + p * dh - ph;         // the input row read by tap p
        const int ww = j * sw + q * dw - pw;         // the input column read by tap q
        const bool inside = 0 <= hh && hh < H && 0 <= ww && ww < W;
        const long long src = ((long long)c * H + hh) * W + ww;
        for (int n = blockIdx.z; n < N; n += gridDim.z) {
            const long long dst = taps_first ? ((long long)row * N + n) * positions + pos
                                             : ((long long)n * rows + row) * positions + pos;
            col[dst] = inside ? x[n * image + src] : (T)0;     // outside: zero padding
        }
    }
}

template <typename T>
__global__ void conv_col2im(const T* col, T* dx, const int N, const int C, const int H, const int W,
                            const int kh, const int kw, const int out_h, const int out_w,
                            const int sh, const int sw, const int ph, const int pw, const int dh,
                            const int dw)
{
    // dx[n, c, h, w] gathers every column entry that read it: tap (p, q) at output (i, j) read
    // (h, w) when i*sh + p*dh - ph == h and j*sw + q*dw - pw == w. A thread owns one (h, w) of a
    // channel and walks a share of the images: no atomics, a deterministic sum.
    const int pos = blockIdx.x * blockDim.x + threadIdx.x;
    if (pos >= H * W) return;
    const int h = pos / W, w = pos - h * W;
    const int positions = out_h * out_w;
    for (int c = blockIdx.y; c < C; c += gridDim.y) {
        for (int n = blockIdx.z; n < N; n += gridDim.z) {
            const T* taps = col + ((long long)n * C + c) * kh * kw * positions;
            T acc = (T)0;
            for (int p = 0; p < kh; ++p) {
                int i = h + ph - p * dh;
                if (i < 0) continue;
                if (sh != 1) {                       // stride 1, the usual case, divides nothing
                    if (i % sh != 0) continue;
                    i /= sh;
                }
                if (i >= out_h) continue;
                for (int q = 0; q < kw; ++q) {
                    int j = w + pw - q * dw;
                    if (j < 0) continue;
                    if (sw != 1) {
                        if (j % sw != 0) continue;
                        j /= sw;
                    }
                    if (j >= out_w) continue;
                    acc += taps[(p * kw + q) * positions + i * out_w + j];
                }
            }
            dx[((long long)n * C + c) * H * W + pos] = acc;
        }
    }
}
"""
_kernels = TemplateKernels(_SOURCE, "conv", ("im2col", "col2im"))


def _grid(plane, rows, n):
    """Blocks: x over the positions of one plane, y over its rows (or channels), z over shares of the
    ``n`` images — as many as keep about ``_TARGET_THREADS`` threads busy."""
    bx, by = -(-plane // _THREADS), min(rows, 65535)
    return bx, by, max(1, min(n, 65535, _TARGET_THREADS // (bx * by * _THREADS)))


def _geometry(n, c, h, w, kh, kw, out_h, out_w, stride, padding, dilation):
    """The kernels' int arguments after the two arrays."""
    return tuple(np.int32(v) for v in (n, c, h, w, kh, kw, out_h, out_w, *stride, *padding, *dilation))


def _pair(v):
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _batch_chunk(n, per_image_values, itemsize):
    """Images per chunk so that one column buffer stays under ``_COL_BYTES``."""
    return max(1, min(n, _COL_BYTES // max(1, per_image_values * itemsize)))


def _columns(x, kh, kw, out_h, out_w, stride, padding, dilation, taps_first=False):
    """``col[n, (c, p, q), (i, j)]`` for a contiguous ``x`` (N, C, H, W); with ``taps_first``
    ``col[(c, p, q), n, (i, j)]``."""
    n, c, h, w = x.shape
    shape = (c * kh * kw, n, out_h * out_w) if taps_first else (n, c * kh * kw, out_h * out_w)
    col = cupy.empty(shape, dtype=x.dtype)
    if col.size:
        _kernels("im2col", x.dtype)(
            _grid(out_h * out_w, c * kh * kw, n), (_THREADS,),
            (x, col, *_geometry(n, c, h, w, kh, kw, out_h, out_w, stride, padding, dilation),
             np.int32(taps_first)))
    return col


def _pointwise(kh, kw, stride, padding):
    """A 1x1 kernel at stride 1 without padding: every input pixel is its own receptive field."""
    return kh == kw == 1 and stride == (1, 1) and padding == (0, 0)


def _dtype(a, b):
    dtype = cupy.result_type(a.dtype, b.dtype)
    if dtype not in (cupy.float32, cupy.float64):
        raise TypeError(f"conv2d on the GPU computes in float32 or float64, got {a.dtype} and {b.dtype}")
    return dtype


class ConvGeometry(NamedTuple):
    """The shapes of one convolution, with stride, padding and dilation as (rows, columns) pairs."""
    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kh: int
    kw: int
    out_h: int
    out_w: int
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int


def _geometry_of(x_shape, w_shape, stride, padding, dilation, groups, out_hw=None) -> ConvGeometry:
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    n, c_in, h, w = (int(v) for v in x_shape)
    c_out, _, kh, kw = (int(v) for v in w_shape)
    out_h, out_w = out_hw or (_out_size(h, kh, stride[0], padding[0], dilation[0]),
                              _out_size(w, kw, stride[1], padding[1], dilation[1]))
    return ConvGeometry(n, c_in, h, w, c_out, kh, kw, int(out_h), int(out_w), stride, padding, dilation,
                        int(groups))


_chosen: dict = {}          # (product, geometry, dtype) -> the algorithm timed fastest


def _time_ms(algorithm, run) -> float:
    """GPU time of one ``run()`` of ``algorithm`` after a first (warm-up, compiling) call."""
    run()
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    run()
    stop.record()
    stop.synchronize()
    return cupy.cuda.get_elapsed_time(start, stop)


def _run(product, geo, dtype, operands):
    """Compute ``product`` of these operands with ``ALGORITHM``, or in "auto" mode with the algorithm that
    was fastest the first time this geometry was met (every algorithm writes the whole output)."""
    if ALGORITHM == "auto":
        key = (product, geo, np.dtype(dtype).str)
        algorithm = _chosen.get(key)
        if algorithm is None:
            algorithm = _chosen[key] = _fastest({name: functools.partial(_compute, name, product, operands, geo)
                                                 for name in _algorithms(operands)})
    elif ALGORITHM in ALGORITHMS:
        algorithm = ALGORITHM if ALGORITHM in _algorithms(operands) else "columns"
    else:
        raise ValueError(f"MINIGEN_GPU_CONV / conv.ALGORITHM: expected 'auto' or one of {ALGORITHMS}, "
                         f"got {ALGORITHM!r}")
    return _compute(algorithm, product, operands, geo)


def _algorithms(operands):
    """The algorithms that can take these operands (the implicit ones index with 32-bit ints)."""
    return ALGORITHMS if conv_implicit.fits(*operands) else ("columns",)


def _compute(algorithm, product, operands, geo):
    if algorithm == "columns":
        return _COLUMNS[product](*operands, geo)
    return getattr(conv_implicit, product)(*operands, geo, int(algorithm[len("implicit"):]))


def _fastest(runs) -> str:
    """The name in ``runs`` (name -> computation) with the least GPU time. One that fails to compile or
    launch on this GPU is left out with a warning (the column algorithm is the fallback and must work)."""
    times = {}
    for name, run in runs.items():
        try:
            times[name] = _time_ms(name, run)
        except Exception as exc:
            if name == "columns":
                raise
            warnings.warn(f"conv2d on the GPU: the {name} algorithm failed here and is not used "
                          f"({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=4)
    return min(times, key=times.get)


def conv2d_forward(x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Cross-correlation without bias (see :func:`kernels.reference.conv2d_forward`)."""
    dtype = _dtype(x, w)
    x = cupy.ascontiguousarray(x, dtype=dtype)
    w = cupy.ascontiguousarray(w, dtype=dtype)
    geo = _geometry_of(x.shape, w.shape, stride, padding, dilation, groups)
    y = cupy.empty((geo.n, geo.c_out, geo.out_h, geo.out_w), dtype=dtype)
    if y.size == 0:
        return y
    if w.shape[1] * geo.kh * geo.kw == 0:
        y.fill(0)
        return y
    return _run("forward", geo, dtype, (x, w, y))


def conv2d_input_grad(g, w, input_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                      groups=1):
    """Gradient of conv2d w.r.t. its input = conv_transpose2d
    (see :func:`kernels.reference.conv2d_input_grad`)."""
    dtype = _dtype(g, w)
    g = cupy.ascontiguousarray(g, dtype=dtype)
    w = cupy.ascontiguousarray(w, dtype=dtype)
    geo = _geometry_of(input_shape, w.shape, stride, padding, dilation, groups, out_hw=g.shape[2:])
    dx = cupy.empty((geo.n, geo.c_in, geo.h, geo.w), dtype=dtype)
    if dx.size == 0:
        return dx
    if g.size == 0 or w.shape[1] * geo.kh * geo.kw == 0:
        dx.fill(0)
        return dx
    return _run("input_grad", geo, dtype, (g, w, dx))


def conv2d_weight_grad(x, g, weight_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                       groups=1):
    """Gradient of conv2d w.r.t. its weight (see :func:`kernels.reference.conv2d_weight_grad`)."""
    dtype = _dtype(x, g)
    x = cupy.ascontiguousarray(x, dtype=dtype)
    g = cupy.ascontiguousarray(g, dtype=dtype)
    geo = _geometry_of(x.shape, weight_shape, stride, padding, dilation, groups, out_hw=g.shape[2:])
    c_out, cg, kh, kw = (int(v) for v in weight_shape)
    if g.size == 0 or c_out * cg * kh * kw == 0:
        return cupy.zeros((c_out, cg, kh, kw), dtype=dtype)
    dw = cupy.empty((c_out, cg, kh, kw), dtype=dtype)
    return _run("weight_grad", geo, dtype, (x, g, dw))


# --------------------------------------------------------------------------- the column algorithm


def _image_chunks(geo, itemsize, pointwise=False):
    """``(n0, n1)``: the images in chunks whose column buffer stays under ``_COL_BYTES`` (one chunk when
    nothing is unrolled)."""
    per_image = geo.c_in * geo.kh * geo.kw * geo.out_h * geo.out_w
    step = geo.n if pointwise else _batch_chunk(geo.n, per_image, itemsize)
    return [(n0, min(geo.n, n0 + step)) for n0 in range(0, geo.n, step)]


def _forward_columns(x, w, y, geo):
    """y = W @ columns(x), chunk by chunk of images."""
    c_out, groups, kh, kw, npos = geo.c_out, geo.groups, geo.kh, geo.kw, geo.out_h * geo.out_w
    og, kg = c_out // groups, w.shape[1] * kh * kw
    pointwise = _pointwise(kh, kw, geo.stride, geo.padding)
    yf, wf = y.reshape(-1), w.reshape(-1)
    for n0, n1 in _image_chunks(geo, x.itemsize, pointwise):
        col = x[n0:n1] if pointwise else _columns(x[n0:n1], kh, kw, geo.out_h, geo.out_w, geo.stride,
                                                  geo.padding, geo.dilation)
        colf = col.reshape(-1)
        for g in range(groups):
            # y[n, g] (og, P) = W[g] (og, kg) @ col[n, g] (kg, P) for every image n of the chunk
            matmul_strided(wf[g * og * kg:], colf[g * kg * npos:], yf[(n0 * c_out + g * og) * npos:],
                           og, npos, kg, n1 - n0, stride_a=0, stride_b=groups * kg * npos,
                           stride_out=c_out * npos)
    return y


def _input_grad_columns(g, w, dx, geo):
    """columns = W^T @ g, then col2im, chunk by chunk of images."""
    c_in, c_out, groups, kh, kw = geo.c_in, geo.c_out, geo.groups, geo.kh, geo.kw
    npos, dtype = geo.out_h * geo.out_w, dx.dtype
    og, kg = c_out // groups, w.shape[1] * kh * kw
    pointwise = _pointwise(kh, kw, geo.stride, geo.padding)
    gf, wf = g.reshape(-1), w.reshape(-1)
    for n0, n1 in _image_chunks(geo, g.itemsize, pointwise):
        # a 1x1 kernel's columns are the input gradient itself; otherwise col2im gathers them
        col = dx[n0:n1] if pointwise else cupy.empty((n1 - n0, c_in * kh * kw, npos), dtype=dtype)
        colf = col.reshape(-1)
        for grp in range(groups):
            # col[n, g] (kg, P) = W[g]^T (kg, og) @ g[n, g] (og, P); W[g] is stored (og, kg)
            matmul_strided(wf[grp * og * kg:], gf[(n0 * c_out + grp * og) * npos:], colf[grp * kg * npos:],
                           kg, npos, og, n1 - n0, stride_a=0, stride_b=c_out * npos,
                           stride_out=groups * kg * npos, trans_a=True)
        if not pointwise:
            _kernels("col2im", dtype)(
                _grid(geo.h * geo.w, c_in, n1 - n0), (_THREADS,),
                (col, dx[n0:n1], *_geometry(n1 - n0, c_in, geo.h, geo.w, kh, kw, geo.out_h, geo.out_w,
                                            geo.stride, geo.padding, geo.dilation)))
    return dx


def _weight_grad_columns(x, g, dw, geo):
    """dW = g @ columns(x)^T, accumulated over chunks of images."""
    c_out, groups, kh, kw, npos = geo.c_out, geo.groups, geo.kh, geo.kw, geo.out_h * geo.out_w
    og, kg = c_out // groups, dw.shape[1] * kh * kw
    for n0, n1 in _image_chunks(geo, x.itemsize):
        length = (n1 - n0) * npos                       # the reduction: every image and position
        col = _columns(x[n0:n1], kh, kw, geo.out_h, geo.out_w, geo.stride, geo.padding, geo.dilation,
                       taps_first=True)
        gt = cupy.ascontiguousarray(g[n0:n1].reshape(n1 - n0, c_out, npos).transpose(1, 0, 2))
        # dW[g] (og, kg) = g^T[g] (og, n*P) @ col[g]^T (n*P, kg), added to the chunks before
        matmul_strided(gt, col, dw, og, kg, length, groups, stride_a=og * length, stride_b=kg * length,
                       stride_out=og * kg, trans_b=True, beta=0.0 if n0 == 0 else 1.0)
    return dw


_COLUMNS = {"forward": _forward_columns, "input_grad": _input_grad_columns, "weight_grad": _weight_grad_columns}
