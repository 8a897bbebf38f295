"""CuPy kernels for NADE's logits and their gradients (Eq. AR-1).

The same sequential walk over pixels as the Numba kernels (``kernels/cpu/nade.py``):

* forward: one thread block per image; its threads share the H hidden units,
  keep the running sum a (in a global scratch row of the image) and reduce
  V_i · σ(a) in shared memory for every pixel i;
* backward: one thread per (image, hidden unit): it rebuilds the full sum, walks
  the pixels backwards taking x_i W_i off again, and adds its terms of dW, dV
  and dc with ``atomicAdd`` (images write the same entries).

σ(y) = 0.5 + 0.5 tanh(y/2), the reference's form. float32 and float64 are two
instantiations of one C++ template.
"""
import cupy
import numpy as np

from ._compile import TemplateKernels

_THREADS = 256      # a power of two: the forward's tree reduction halves it

_SOURCE = r"""
#define THREADS %d

template <typename T>
__device__ inline T sigmoid_(T y) { return (T)0.5 + (T)0.5 * tanh((T)0.5 * y); }

template <typename T>
__global__ void nade_forward(const T* x, const T* W, const T* c, const T* V, const T* b,
                             T* a, T* out, const int D, const int H)
{
    const long long n = blockIdx.x;
    T* an = a + n * H;
    __shared__ T part[THREADS];
    for (int k = threadIdx.x; k < H; k += blockDim.x) an[k] = c[k];
    for (int i = 0; i < D; ++i) {
        T s = 0;
        for (int k = threadIdx.x; k < H; k += blockDim.x) s += V[(long long)i * H + k] * sigmoid_(an[k]);
        part[threadIdx.x] = s;
        __syncthreads();
        for (int half = blockDim.x / 2; half > 0; half /= 2) {
            if (threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
            __syncthreads();
        }
        if (threadIdx.x == 0) out[n * D + i] = b[i] + part[0];
        const T xi = x[n * D + i];
        if (xi != (T)0)
            for (int k = threadIdx.x; k < H; k += blockDim.x) an[k] += xi * W[(long long)i * H + k];
        __syncthreads();                  // part[] is reused by the next pixel
    }
}

template <typename T>
__global__ void nade_backward(const T* x, const T* W, const T* c, const T* V, const T* g,
                              T* dW, T* dc, T* dV, const int D, const int H)
{
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    const long long n = blockIdx.y;
    if (k >= H) return;
    T a = c[k];
    for (int i = 0; i < D; ++i) a += x[n * D + i] * W[(long long)i * H + k];
    T delta = 0;
    for (int i = D - 1; i >= 0; --i) {
        const long long ik = (long long)i * H + k;
        const T xi = x[n * D + i];
        if (xi != (T)0) {
            a -= xi * W[ik];
            atomicAdd(&dW[ik], xi * delta);
        }
        const T h = sigmoid_(a), gi = g[n * D + i];
        atomicAdd(&dV[ik], gi * h);
        delta += gi * V[ik] * h * ((T)1 - h);
    }
    atomicAdd(&dc[k], delta);
}
""" % _THREADS

_kernel = TemplateKernels(_SOURCE, "nade", ("forward", "backward"))


def _same_dtype(dtype, *arrays):
    return [cupy.ascontiguousarray(a, dtype=dtype) for a in arrays]


def nade_forward(x, W, c, V, b):
    """Same contract as the reference (CuPy arrays in and out)."""
    x, W, c, V, b = _same_dtype(x.dtype, x, W, c, V, b)
    n, d = x.shape
    h = c.shape[0]
    out = cupy.empty((n, d), dtype=x.dtype)
    if n:
        scratch = cupy.empty((n, h), dtype=x.dtype)
        _kernel("forward", x.dtype)((n,), (_THREADS,), (x, W, c, V, b, scratch, out, np.int32(d), np.int32(h)))
    return out


def nade_backward(x, W, c, V, g):
    """Same contract as the reference (CuPy arrays in and out)."""
    x, W, c, V, g = _same_dtype(x.dtype, x, W, c, V, g)
    n, d = x.shape
    h = c.shape[0]
    dW, dV, dc = cupy.zeros_like(W), cupy.zeros_like(V), cupy.zeros_like(c)
    if n:
        grid = ((h + _THREADS - 1) // _THREADS, n)
        _kernel("backward", x.dtype)(grid, (_THREADS,), (x, W, c, V, g, dW, dc, dV, np.int32(d), np.int32(h)))
    return dW, dc, dV, g.sum(axis=0)
