"""CuPy GPU kernels for conv2d: forward, input-gradient (= conv_transpose2d) and
weight-gradient, with the signatures of ``kernels/reference.py``.

The classic GPU recipe, kept deliberately plain:

* ``im2col`` (an element-wise CUDA kernel, one thread per column entry) unrolls
  the receptive fields into ``col[n, g, (c, p, q), (i, j)]``;
* the contraction is one batched matrix product through cuBLAS (``cupy.matmul``),
  laid out so that its result is already NCHW (no transpose afterwards);
* the input gradient is the transposed product ``col = W^T g`` followed by
  ``col2im`` written as a *gather*: each thread owns one input element and sums the
  column entries that read it, so no atomics are needed and the result is
  deterministic.

Column buffers can be large (``N * C * kh * kw * out_h * out_w`` values), so the
batch is processed in chunks that keep one buffer under ``_COL_BYTES``.
"""
from __future__ import annotations

import cupy

_COL_BYTES = 256 * 1024 * 1024

# Indices are 64-bit: column buffers can exceed 2**31 entries.
_GEOMETRY = ("int64 C, int64 H, int64 W, int64 kh, int64 kw, int64 out_h, int64 out_w, "
             "int64 sh, int64 sw, int64 ph, int64 pw, int64 dh, int64 dw")

_im2col = cupy.ElementwiseKernel(
    "raw T x, " + _GEOMETRY,
    "T col",
    r"""
    // col has shape (N, C, kh, kw, out_h, out_w); i is the flat index of this entry
    long long t = i;
    const long long j = t % out_w;  t /= out_w;
    const long long r = t % out_h;  t /= out_h;
    const long long q = t % kw;     t /= kw;
    const long long p = t % kh;     t /= kh;
    const long long c = t % C;
    const long long n = t / C;
    const long long hh = r * sh + p * dh - ph;   // input row read by tap p
    const long long ww = j * sw + q * dw - pw;   // input column read by tap q
    if (0 <= hh && hh < H && 0 <= ww && ww < W) {
        col = x[((n * C + c) * H + hh) * W + ww];
    } else {
        col = (T)0;                               // zero padding
    }
    """,
    "minigen_conv_im2col",
)

_col2im = cupy.ElementwiseKernel(
    "raw T col, " + _GEOMETRY,
    "T dx",
    r"""
    // dx has shape (N, C, H, W); gather every column entry that read dx[n, c, h, w]:
    // tap (p, q) at output (r, j) read it when r*sh + p*dh - ph == h (same for w)
    long long t = i;
    const long long w = t % W;  t /= W;
    const long long h = t % H;  t /= H;
    const long long c = t % C;
    const long long n = t / C;
    T acc = (T)0;
    for (long long p = 0; p < kh; ++p) {
        const long long hs = h + ph - p * dh;
        if (hs < 0 || hs % sh != 0) continue;
        const long long r = hs / sh;
        if (r >= out_h) continue;
        for (long long q = 0; q < kw; ++q) {
            const long long ws = w + pw - q * dw;
            if (ws < 0 || ws % sw != 0) continue;
            const long long j = ws / sw;
            if (j >= out_w) continue;
            acc += col[((((n * C + c) * kh + p) * kw + q) * out_h + r) * out_w + j];
        }
    }
    dx = acc;
    """,
    "minigen_conv_col2im",
)


def _pair(v):
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _batch_chunk(n, per_image_values, itemsize):
    """Images per chunk so that one column buffer stays under ``_COL_BYTES``."""
    return max(1, min(n, _COL_BYTES // max(1, per_image_values * itemsize)))


def _geometry_args(c, h, w, kh, kw, out_h, out_w, stride, padding, dilation):
    return (c, h, w, kh, kw, out_h, out_w, stride[0], stride[1], padding[0], padding[1],
            dilation[0], dilation[1])


def _columns(x, kh, kw, out_h, out_w, stride, padding, dilation):
    """``col[n, (c, p, q), (i, j)]`` for a contiguous ``x`` (N, C, H, W)."""
    n, c, h, w = x.shape
    col = cupy.empty((n, c * kh * kw, out_h * out_w), dtype=x.dtype)
    if col.size:
        _im2col(x, *_geometry_args(c, h, w, kh, kw, out_h, out_w, stride, padding, dilation),
                col)
    return col


def _dtype(a, b):
    return cupy.result_type(a.dtype, b.dtype)


def conv2d_forward(x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Cross-correlation without bias (see :func:`kernels.reference.conv2d_forward`)."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    dtype = _dtype(x, w)
    x = cupy.ascontiguousarray(x, dtype=dtype)
    w = cupy.ascontiguousarray(w, dtype=dtype)
    n, c_in, h, wd = x.shape
    c_out, cg, kh, kw = w.shape
    out_h = _out_size(h, kh, stride[0], padding[0], dilation[0])
    out_w = _out_size(wd, kw, stride[1], padding[1], dilation[1])
    og, kg, npos = c_out // groups, cg * kh * kw, out_h * out_w
    y = cupy.empty((n, c_out, out_h, out_w), dtype=dtype)
    if y.size == 0:
        return y
    if kg == 0:
        y.fill(0)
        return y
    wg = w.reshape(1, groups, og, kg)
    step = _batch_chunk(n, c_in * kh * kw * npos, x.itemsize)
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        col = _columns(x[n0:n1], kh, kw, out_h, out_w, stride, padding, dilation)
        # (1, G, og, kg) @ (n, G, kg, P) -> (n, G, og, P): already NCHW
        y[n0:n1] = cupy.matmul(wg, col.reshape(n1 - n0, groups, kg, npos)).reshape(
            n1 - n0, c_out, out_h, out_w)
    return y


def conv2d_input_grad(g, w, input_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                      groups=1):
    """Gradient of conv2d w.r.t. its input = conv_transpose2d
    (see :func:`kernels.reference.conv2d_input_grad`)."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    dtype = _dtype(g, w)
    g = cupy.ascontiguousarray(g, dtype=dtype)
    w = cupy.ascontiguousarray(w, dtype=dtype)
    n, c_in, h, wd = (int(v) for v in input_shape)
    c_out, cg, kh, kw = w.shape
    out_h, out_w = g.shape[2], g.shape[3]
    og, kg, npos = c_out // groups, cg * kh * kw, out_h * out_w
    dx = cupy.empty((n, c_in, h, wd), dtype=dtype)
    if dx.size == 0:
        return dx
    if g.size == 0 or kg == 0:
        dx.fill(0)
        return dx
    wt = cupy.ascontiguousarray(w.reshape(groups, og, kg).transpose(0, 2, 1))[None]
    step = _batch_chunk(n, c_in * kh * kw * npos, g.itemsize)
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        # (1, G, kg, og) @ (n, G, og, P) -> col (n, G, kg, P) = (n, C_in, kh, kw, out_h, out_w)
        col = cupy.matmul(wt, g[n0:n1].reshape(n1 - n0, groups, og, npos))
        _col2im(col, *_geometry_args(c_in, h, wd, kh, kw, out_h, out_w, stride, padding,
                                     dilation), dx[n0:n1])
    return dx


def conv2d_weight_grad(x, g, weight_shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                       groups=1):
    """Gradient of conv2d w.r.t. its weight (see :func:`kernels.reference.conv2d_weight_grad`)."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    dtype = _dtype(x, g)
    x = cupy.ascontiguousarray(x, dtype=dtype)
    g = cupy.ascontiguousarray(g, dtype=dtype)
    c_out, cg, kh, kw = (int(v) for v in weight_shape)
    n = x.shape[0]
    out_h, out_w = g.shape[2], g.shape[3]
    og, kg, npos = c_out // groups, cg * kh * kw, out_h * out_w
    dw = cupy.zeros((groups, og, kg), dtype=dtype)
    if g.size == 0 or dw.size == 0:
        return dw.reshape(c_out, cg, kh, kw)
    step = _batch_chunk(n, x.shape[1] * kh * kw * npos, x.itemsize)
    for n0 in range(0, n, step):
        n1 = min(n, n0 + step)
        col = _columns(x[n0:n1], kh, kw, out_h, out_w, stride, padding, dilation)
        # contract over (image, position): (G, og, n*P) @ (G, n*P, kg)
        gt = cupy.ascontiguousarray(
            g[n0:n1].reshape(n1 - n0, groups, og, npos).transpose(1, 2, 0, 3))
        ct = cupy.ascontiguousarray(
            col.reshape(n1 - n0, groups, kg, npos).transpose(1, 0, 3, 2))
        dw += cupy.matmul(gt.reshape(groups, og, -1), ct.reshape(groups, -1, kg))
    return dw.reshape(c_out, cg, kh, kw)
