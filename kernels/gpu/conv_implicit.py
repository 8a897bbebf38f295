"""Convolution as an *implicit* matrix product on the GPU: the product of ``conv.py`` without its column
buffer.

``conv.py`` writes the unrolled receptive fields (``im2col``) to memory and hands cuBLAS a product; for a
3x3 convolution that buffer is 9 times the input, and writing and reading it took two thirds of the
forward time on an H200. Here one tiled product reads its operands *through* the convolution's index
map instead, so the columns only ever exist as a tile in shared memory. All three products of a
convolution have that form, ``C (M x N) = A (M x K) @ B (K x N)`` per group:

============  ======================  ======================  ==========================  ==========
product       M (rows of C)           N (columns of C)        K (reduction)               A, B
============  ======================  ======================  ==========================  ==========
forward       output channels o       images x positions      taps (c, p, q)              W, x
input grad    input channels c        images x input pixels   taps (o, p, q)              W^T, g
weight grad   output channels o       taps (c, p, q)          images x positions          g, x
============  ======================  ======================  ==========================  ==========

The gathers divide nothing: for every tap and every position the launcher tabulates (once per
geometry, on the host) the offset and the two coordinates its share of an index needs — an input pixel
is ``x[position's offset + tap's offset]``, inside the image when ``row + tap row`` and
``column + tap column`` are. (Only the input gradient at a stride above 1 tests divisibility, and the
few A entries a thread loads per step locate themselves with one division.)

The tile loop is the textbook one (Volkov & Demmel 2008; the CUTLASS "implicit GEMM" of NVIDIA's
convolutions): a block of 128 threads owns a ``BM x 128`` tile of C, loads ``BM x 8`` of A and ``8 x 128``
of B into shared memory per step, and each thread accumulates a ``BM/8 x 8`` patch of C in registers.
The weight gradient's reduction (every image and position) is long and its C small, so it is split over
blocks (``split``), each writing its partial product, summed afterwards in a fixed order (deterministic).

Which of the two algorithms is faster depends on the shape and the GPU; ``conv.py`` times both once
per shape and keeps the winner, as cuDNN's benchmark mode does.
"""
from __future__ import annotations

import cupy
import numpy as np

from ._compile import TemplateKernels

THREADS = 128                   # per block: 8 rows x 16 columns of threads
BLOCK_ROWS = (32, 64)           # BM, the tile heights compiled (a thread's patch: 4 or 8 rows x 8 columns)
_TARGET_BLOCKS = 1024           # the weight gradient splits its reduction until about this many blocks run ...
_MIN_SPLIT = 256                # ... each share at least this long

_SOURCE = r"""
#define BK 8                    // reduction step held in shared memory
#define BN 128                  // tile width = threads per block
#define THREADS 128

// MODE, the product a kernel computes: 0 forward, 1 input gradient, 2 weight gradient (the table above).
struct Geometry {               // what the three index maps need (all 32-bit: the launcher checks sizes)
    int M, N, K, k_split, H, W, out_h, out_w, sh, sw, taps, c_in, c_out, og, cg;
};

// A pixel of x read by a (position, tap) pair: position = (offset, top row, left column) of its
// receptive field, tap = (offset, row, column) within it; zero outside the image (padding).
template <typename T>
__device__ T gather_x(const T* x, const int* pos, const int* tap, const Geometry& g)
{
    const int h = pos[1] + tap[1], w = pos[2] + tap[2];
    return (0 <= h && h < g.H && 0 <= w && w < g.W) ? x[pos[0] + tap[0]] : (T)0;
}

// An entry of the output gradient read by input pixel `pix` = (offset, h + ph, w + pw) through tap
// = (offset, p*dh, q*dw): the output position (i, j) with i*sh = h + ph - p*dh, if it exists.
template <typename T>
__device__ T gather_g(const T* grad, const int* pix, const int* tap, const Geometry& g)
{
    int i = pix[1] - tap[1], j = pix[2] - tap[2];
    if (i < 0 || j < 0) return (T)0;
    if (g.sh != 1) { if (i % g.sh) return (T)0; i /= g.sh; }    // stride 1, the usual case, divides nothing
    if (g.sw != 1) { if (j % g.sw) return (T)0; j /= g.sw; }
    return (i < g.out_h && j < g.out_w) ? grad[pix[0] + tap[0] + i * g.out_w + j] : (T)0;
}

// Four consecutive values of a shared tile as one 16-byte load (float4; two double2): a quarter of
// the shared-memory instructions of four scalar loads. The tile layout keeps them 16-byte aligned.
template <typename T>
__device__ void load4(const T* p, T* r) { for (int i = 0; i < 4; ++i) r[i] = p[i]; }
template <>
__device__ void load4<float>(const float* p, float* r)
{
    const float4 v = *reinterpret_cast<const float4*>(p);
    r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
}
template <>
__device__ void load4<double>(const double* p, double* r)
{
    const double2 u = reinterpret_cast<const double2*>(p)[0], v = reinterpret_cast<const double2*>(p)[1];
    r[0] = u.x; r[1] = u.y; r[2] = v.x; r[3] = v.y;
}

// A[m, k] of group `grp`
template <typename T, int MODE>
__device__ T load_a(const T* a, int m, int k, int grp, const Geometry& g)
{
    if (MODE == 0)              // W (o, (c, p, q))
        return a[((long long)grp * g.M + m) * g.K + k];
    if (MODE == 1) {            // W^T: W[o, c, p, q] with k = (o, p, q), m = c
        const int o = k / g.taps, pq = k - o * g.taps;
        return a[(((long long)grp * g.og + o) * g.cg + m) * g.taps + pq];
    }
    const int P = g.out_h * g.out_w, n = k / P, pos = k - n * P;     // g[n, o, pos] with k = (n, pos)
    return a[((long long)n * g.c_out + grp * g.og + m) * P + pos];
}

// where C[0, col] of group `grp` (and reduction share `split`) goes; row m is m * row_stride<MODE> further
template <int MODE>
__device__ long long out_offset(int col, int grp, int split, int groups, const Geometry& g)
{
    if (MODE == 0) {            // y[n, o, pos], col = (n, pos)
        const int P = g.out_h * g.out_w, n = col / P;
        return ((long long)n * g.c_out + grp * g.og) * P + (col - n * P);
    }
    if (MODE == 1) {            // dx[n, c, pix], col = (n, pix)
        const int HW = g.H * g.W, n = col / HW;
        return ((long long)n * g.c_in + grp * g.cg) * HW + (col - n * HW);
    }
    return ((long long)split * groups + grp) * g.M * g.N + col;    // partial dW[split, grp, o, tap]
}

template <int MODE>
__device__ int row_stride(const Geometry& g)
{
    return MODE == 0 ? g.out_h * g.out_w : MODE == 1 ? g.H * g.W : g.N;
}

// One BM x BN tile of C = A @ B for group blockIdx.z % groups and reduction share blockIdx.z / groups.
// rows: the table of the reduction index (taps; positions for the weight gradient), cols: of C's columns.
template <typename T, int BM, int MODE>
__device__ void igemm_tile(const T* a, const T* b, T* out, const int* rows, const int* cols,
                           const Geometry& g, const int groups)
{
    const int TM = BM / 8;                              // a thread's patch: TM rows x 8 columns
    __shared__ __align__(16) T As[BK][BM];
    __shared__ __align__(16) T Bs[BK][BN];
    const int t = threadIdx.x, ty = t / 16, tx = t % 16;
    const int m0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int grp = blockIdx.z % groups, split = blockIdx.z / groups;
    const int k_begin = split * g.k_split, k_end = min(g.K, k_begin + g.k_split);
    // the operand that is gathered: x (forward, weight grad) or the output gradient (input grad)
    const long long b_group = MODE == 1 ? (long long)grp * g.og * g.out_h * g.out_w
                                        : (long long)grp * g.cg * g.H * g.W;
    T acc[TM][8];
    for (int i = 0; i < TM; ++i)
        for (int j = 0; j < 8; ++j) acc[i][j] = (T)0;

    for (int k0 = k_begin; k0 < k_end; k0 += BK) {
        // A tile, BM x BK: consecutive threads take consecutive k (W's rows and g's positions are contiguous)
        #pragma unroll
        for (int e = t; e < BM * BK; e += THREADS) {
            const int kk = e % BK, mm = e / BK, k = k0 + kk, m = m0 + mm;
            As[kk][mm] = (m < g.M && k < k_end) ? load_a<T, MODE>(a, m, k, grp, g) : (T)0;
        }
        // B tile, BK x BN, gathered. Forward and input grad: thread t owns column t (its table entry read
        // once), consecutive threads read consecutive pixels. Weight grad: consecutive threads take
        // consecutive k, which are the consecutive positions there.
        #pragma unroll
        for (int e = t; e < BK * BN; e += THREADS) {
            const int kk = MODE == 2 ? e % BK : e / BN, cc = MODE == 2 ? e / BK : e % BN;
            const int k = k0 + kk, col = col0 + cc;
            T v = (T)0;
            if (k < k_end && col < g.N) {
                if (MODE == 0) v = gather_x(b + b_group, cols + 3 * col, rows + 3 * k, g);
                else if (MODE == 1) v = gather_g(b + b_group, cols + 3 * col, rows + 3 * k, g);
                else v = gather_x(b + b_group, rows + 3 * k, cols + 3 * col, g);
            }
            Bs[kk][cc] = v;
        }
        __syncthreads();
        #pragma unroll
        for (int kk = 0; kk < BK; ++kk) {               // the product of the two tiles, from shared memory
            T a_frag[TM], b_frag[8];
            #pragma unroll
            for (int i = 0; i < TM; i += 4) load4(&As[kk][ty * TM + i], a_frag + i);
            load4(&Bs[kk][tx * 4], b_frag);             // columns tx*4 .. +3 and 64 + tx*4 .. +3
            load4(&Bs[kk][64 + tx * 4], b_frag + 4);
            for (int i = 0; i < TM; ++i)
                for (int j = 0; j < 8; ++j) acc[i][j] += a_frag[i] * b_frag[j];
        }
        __syncthreads();
    }
    // a thread's columns: two runs of 4, 64 apart, so a warp writes whole 64-byte segments
    #pragma unroll
    for (int j = 0; j < 8; ++j) {
        const int col = col0 + (j / 4) * 64 + tx * 4 + j % 4;
        if (col >= g.N) continue;
        T* dst = out + out_offset<MODE>(col, grp, split, groups, g);
        #pragma unroll
        for (int i = 0; i < TM; ++i) {
            const int m = m0 + ty * TM + i;
            if (m < g.M) dst[(long long)m * row_stride<MODE>(g)] = acc[i][j];
        }
    }
}

// The launchable kernels conv_igemm_<product><BM><T>; CuPy passes scalars, not structs.
#define CONV_IGEMM(NAME, BM, MODE)                                                                        \
template <typename T>                                                                                    \
__global__ void conv_igemm_##NAME##BM(const T* a, const T* b, T* out, const int* rows, const int* cols,  \
    int M, int N, int K, int k_split, int H, int W, int out_h, int out_w, int sh, int sw, int taps,     \
    int c_in, int c_out, int og, int cg, int groups)                                                     \
{                                                                                                        \
    const Geometry g = {M, N, K, k_split, H, W, out_h, out_w, sh, sw, taps, c_in, c_out, og, cg};        \
    igemm_tile<T, BM, MODE>(a, b, out, rows, cols, g, groups);                                           \
}
CONV_IGEMM(forward, 32, 0)
CONV_IGEMM(forward, 64, 0)
CONV_IGEMM(input_grad, 32, 1)
CONV_IGEMM(input_grad, 64, 1)
CONV_IGEMM(weight_grad, 32, 2)
CONV_IGEMM(weight_grad, 64, 2)
"""
_PRODUCTS = ("forward", "input_grad", "weight_grad")
_kernels = TemplateKernels(_SOURCE, "conv_igemm", [f"{p}{bm}" for p in _PRODUCTS for bm in BLOCK_ROWS])
_BN = 128
_MAX_TABLE_ENTRIES = 1 << 20    # index tables kept on the device, per geometry, for the last few shapes
_tables: dict = {}


def fits(*arrays) -> bool:
    """The kernels index with 32-bit ints: every operand must have fewer than 2**31 entries."""
    return all(a.size < 2 ** 31 for a in arrays)


def _table(kind, *key):
    """A cached device table of (offset, row, column) triples, one per tap or position (see the module
    docstring); built on the host once per geometry."""
    if (kind, key) not in _tables:
        if sum(t.shape[0] for t in _tables.values()) > _MAX_TABLE_ENTRIES:
            _tables.clear()
        _tables[(kind, key)] = cupy.asarray(_BUILDERS[kind](*key))
    return _tables[(kind, key)]


def _x_taps(cg, kh, kw, h, w, dh, dw):
    """Tap (c, p, q) of x's receptive field: offset c*H*W + p*dh*W + q*dw, row p*dh, column q*dw."""
    c, p, q = np.meshgrid(np.arange(cg), np.arange(kh) * dh, np.arange(kw) * dw, indexing="ij")
    return _triples(c * h * w + p * w + q, p, q)


def _x_positions(n, c_in, h, w, out_h, out_w, sh, sw, ph, pw):
    """Output position (b, i, j): its receptive field's top-left pixel (i*sh - ph, j*sw - pw) of image b."""
    b, top, left = np.meshgrid(np.arange(n), np.arange(out_h) * sh - ph, np.arange(out_w) * sw - pw,
                               indexing="ij")
    return _triples(b * c_in * h * w + top * w + left, top, left)


def _g_taps(og, kh, kw, positions, dh, dw):
    """Tap (o, p, q) of the input gradient: offset o*out_h*out_w, row p*dh, column q*dw."""
    o, p, q = np.meshgrid(np.arange(og), np.arange(kh) * dh, np.arange(kw) * dw, indexing="ij")
    return _triples(o * positions, p, q)


def _g_pixels(n, c_out, positions, h, w, ph, pw):
    """Input pixel (b, h, w): image b's offset in the output gradient, and (h + ph, w + pw)."""
    b, rows, cols = np.meshgrid(np.arange(n), np.arange(h) + ph, np.arange(w) + pw, indexing="ij")
    return _triples(b * c_out * positions, rows, cols)


def _triples(offset, row, col):
    return np.ascontiguousarray(np.stack([offset, row, col], -1).reshape(-1, 3), dtype=np.int32)


_BUILDERS = {"x_taps": _x_taps, "x_positions": _x_positions, "g_taps": _g_taps, "g_pixels": _g_pixels}


def _launch(product, block_rows, a, b, out, rows, cols, m, n, k, geo, split=1):
    """C (m x n) = A (m x k) @ B (k x n) for every group (and share of the reduction) of ``geo``."""
    k_split = -(-k // split)
    grid = (-(-n // _BN), -(-m // block_rows), geo.groups * split)
    ints = (m, n, k, k_split, geo.h, geo.w, geo.out_h, geo.out_w, *geo.stride, geo.kh * geo.kw, geo.c_in,
            geo.c_out, geo.c_out // geo.groups, geo.c_in // geo.groups, geo.groups)
    _kernels(f"{product}{block_rows}", out.dtype)(grid, (THREADS,), (a, b, out, rows, cols,
                                                                      *(np.int32(v) for v in ints)))


def forward(x, w, y, geo, block_rows):
    """y = conv2d(x, w) into ``y``: M = output channels of a group, N = images x positions, K = taps."""
    og, cg = geo.c_out // geo.groups, geo.c_in // geo.groups
    taps = _table("x_taps", cg, geo.kh, geo.kw, geo.h, geo.w, *geo.dilation)
    positions = _table("x_positions", geo.n, geo.c_in, geo.h, geo.w, geo.out_h, geo.out_w, *geo.stride,
                       *geo.padding)
    _launch("forward", block_rows, w, x, y, taps, positions, og, geo.n * geo.out_h * geo.out_w,
            cg * geo.kh * geo.kw, geo)
    return y


def input_grad(g, w, dx, geo, block_rows):
    """dx = conv2d's input gradient into ``dx``: M = input channels of a group, N = images x pixels,
    K = (output channel, tap)."""
    og, cg, positions = geo.c_out // geo.groups, geo.c_in // geo.groups, geo.out_h * geo.out_w
    taps = _table("g_taps", og, geo.kh, geo.kw, positions, *geo.dilation)
    pixels = _table("g_pixels", geo.n, geo.c_out, positions, geo.h, geo.w, *geo.padding)
    _launch("input_grad", block_rows, w, g, dx, taps, pixels, cg, geo.n * geo.h * geo.w,
            og * geo.kh * geo.kw, geo)
    return dx


def weight_grad(x, g, dw, geo, block_rows):
    """dW = conv2d's weight gradient into ``dw`` (c_out, cg, kh, kw): M = output channels of a group,
    N = taps, K = images x positions, split over blocks and the partial products summed."""
    og, cg = geo.c_out // geo.groups, geo.c_in // geo.groups
    m, n, k = og, cg * geo.kh * geo.kw, geo.n * geo.out_h * geo.out_w
    tiles = -(-n // _BN) * -(-m // block_rows) * geo.groups
    split = int(max(1, min(-(-k // _MIN_SPLIT), _TARGET_BLOCKS // tiles, 65535 // geo.groups)))
    positions = _table("x_positions", geo.n, geo.c_in, geo.h, geo.w, geo.out_h, geo.out_w, *geo.stride,
                       *geo.padding)
    taps = _table("x_taps", cg, geo.kh, geo.kw, geo.h, geo.w, *geo.dilation)
    partial = dw.reshape(1, geo.groups, m, n) if split == 1 else cupy.empty((split, geo.groups, m, n), dw.dtype)
    _launch("weight_grad", block_rows, g, x, partial, positions, taps, m, n, k, geo, split)
    if split > 1:
        cupy.sum(partial, axis=0, out=dw.reshape(geo.groups, m, n))
    return dw
