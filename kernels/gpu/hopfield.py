"""CuPy kernel for asynchronous Hopfield dynamics (Eq. EBM-1, EBM-2).

One thread block per state. The updates of a state are sequential by nature,
so the block walks its list of units in lock step: every thread reads the
field of unit i, and on a flip each thread adds 2 s_i w_ij to its share of
the fields h_j (the same incremental update as the Numba kernel).
"""
import cupy
import numpy as np

from ..reference import hopfield_tie_tolerance

_THREADS = 256

_SOURCE = r"""
extern "C" __global__
void hopfield_async_sweeps(double* states, const double* weights, double* fields,
                           const double* tol, const long long* units,
                           const int n, const int n_sweeps, const int steps,
                           long long* sweeps, bool* converged)
{
    const long long b = blockIdx.x;
    double* s = states + b * n;
    double* h = fields + b * n;
    const long long* my_units = units + b * (long long)n_sweeps * steps;
    __shared__ int unstable;

    for (int t = 0; t <= n_sweeps; ++t) {
        // Fixed point? Every thread checks its share of the units.
        if (threadIdx.x == 0) unstable = 0;
        __syncthreads();
        for (int j = threadIdx.x; j < n; j += blockDim.x)
            if (s[j] * h[j] < -tol[j]) unstable = 1;
        __syncthreads();
        const int done = !unstable;
        __syncthreads();                       // everyone has read the flag before it is reset
        if (done) {
            if (threadIdx.x == 0) converged[b] = true;
            return;
        }
        if (t == n_sweeps) return;

        for (int k = 0; k < steps; ++k) {
            const long long i = my_units[(long long)t * steps + k];
            const bool flip = s[i] * h[i] < -tol[i];   // the same decision in every thread
            const double s_new = -s[i];
            __syncthreads();                   // everyone has read s[i] and h[i]
            if (flip) {
                for (int j = threadIdx.x; j < n; j += blockDim.x)
                    h[j] += 2.0 * s_new * weights[i * n + j];   // w symmetric: row i = column i
                if (threadIdx.x == 0) s[i] = s_new;
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) sweeps[b] = t + 1;
    }
}
"""
_kernel = cupy.RawKernel(_SOURCE, "hopfield_async_sweeps")


def hopfield_async_sweeps(states, weights, thresholds, units):
    """Same contract as the reference (CuPy arrays in and out)."""
    weights = cupy.ascontiguousarray(weights, dtype=cupy.float64)
    thresholds = cupy.asarray(thresholds, dtype=cupy.float64)
    out = cupy.array(states, dtype=cupy.float64, order="C")
    fields = cupy.ascontiguousarray(out @ weights.T - thresholds)
    tol = cupy.ascontiguousarray(hopfield_tie_tolerance(weights, thresholds))
    units = cupy.ascontiguousarray(units, dtype=cupy.int64)
    n_states, n_sweeps, steps = units.shape
    sweeps = cupy.zeros(n_states, dtype=cupy.int64)
    converged = cupy.zeros(n_states, dtype=cupy.bool_)
    if n_states:
        _kernel((n_states,), (_THREADS,),
                (out, weights, fields, tol, units, np.int32(out.shape[1]), np.int32(n_sweeps),
                 np.int32(steps), sweeps, converged))
    return out, sweeps, converged
