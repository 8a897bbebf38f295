"""Fused diffusion steps on the GPU (Eq. DIF-4, DIF-14): one elementwise kernel each."""
import cupy

_q_sample = cupy.ElementwiseKernel(
    "T x0, T noise, raw T a, raw T b, int64 per_example", "T out",
    "const long long n = i / per_example; out = a[n] * x0 + b[n] * noise;", "minigen_diffusion_q_sample")

_p_sample = cupy.ElementwiseKernel(
    "T x, T eps, T noise, T c1, T c2, T sigma", "T out",
    "out = c1 * (x - c2 * eps) + sigma * noise;", "minigen_diffusion_p_sample")

_p_mean = cupy.ElementwiseKernel(
    "T x, T eps, T c1, T c2", "T out", "out = c1 * (x - c2 * eps);", "minigen_diffusion_p_mean")


def diffusion_q_sample(x0, noise, a, b):
    """See the reference: the example index of element i is i / (elements per example)."""
    dt = x0.dtype
    x0 = cupy.ascontiguousarray(x0)
    per_example = x0.size // max(1, x0.shape[0])
    return _q_sample(x0, cupy.ascontiguousarray(noise, dtype=dt), cupy.asarray(a, dtype=dt),
                     cupy.asarray(b, dtype=dt), per_example)


def diffusion_p_sample(x_t, eps, noise, c1, c2, sigma, out=None):
    """See the reference (``out``: CuPy's output argument)."""
    dt = x_t.dtype.type
    given = () if out is None else (out,)        # an ElementwiseKernel takes its output positionally, or none
    if noise is None:
        return _p_mean(x_t, eps.astype(x_t.dtype, copy=False), dt(c1), dt(c2), *given)
    return _p_sample(x_t, eps.astype(x_t.dtype, copy=False), noise.astype(x_t.dtype, copy=False),
                     dt(c1), dt(c2), dt(sigma), *given)
