"""Fused diffusion steps (Eq. DIF-4, DIF-14) against the NumPy reference, on the CPU and (marked) the GPU,
and the reference against the line-by-line formulas of the diffusion module."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minigen import backend
from minigen.kernels import reference as ref
from minigen.kernels.cpu import diffusion as cpu

TOL = {np.float64: dict(rtol=1e-12, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}
batches = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6)


def arrays(shape, seed, dtype):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(3)], rng


@pytest.mark.equation("DIF-4")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=40, deadline=None)
@given(shape=batches, seed=st.integers(0, 99))
def test_q_sample_cpu_matches_reference(dtype, shape, seed):
    (x0, noise, _), rng = arrays(shape, seed, dtype)
    a, b = rng.random(shape[0]), rng.random(shape[0])           # float64 coefficients, as the schedule keeps them
    got, want = cpu.diffusion_q_sample(x0, noise, a, b), ref.diffusion_q_sample(x0, noise, a, b)
    assert got.dtype == dtype and got.shape == x0.shape
    np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.equation("DIF-14")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=40, deadline=None)
@given(shape=batches, seed=st.integers(0, 99), last=st.booleans())
def test_p_sample_cpu_matches_reference(dtype, shape, seed, last):
    (x, eps, noise), _ = arrays(shape, seed, dtype)
    noise = None if last else noise
    got, want = cpu.diffusion_p_sample(x, eps, noise, 1.01, 0.3, 0.1), ref.diffusion_p_sample(x, eps, noise, 1.01,
                                                                                              0.3, 0.1)
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("impl", [cpu, ref], ids=["numba", "reference"])
def test_p_sample_writes_into_a_given_buffer(impl):
    """The sampler's second buffer: the result lands in ``out`` (returned), the inputs are untouched."""
    (x, eps, noise), _ = arrays((4, 3, 5), 3, np.float32)
    keep = x.copy()
    out = np.full_like(x, np.nan)
    for z in (noise, None):
        got = impl.diffusion_p_sample(x, eps, z, 1.1, 0.2, 0.3, out=out)
        assert got is out
        np.testing.assert_allclose(out, ref.diffusion_p_sample(x, eps, z, 1.1, 0.2, 0.3), **TOL[np.float32])
    np.testing.assert_array_equal(x, keep)


@pytest.mark.parametrize("impl", [cpu, ref], ids=["numba", "reference"])
@pytest.mark.parametrize("size", [7, cpu.PARALLEL_MIN_SIZE + 5], ids=["serial", "parallel"])
def test_p_sample_in_place(impl, size):
    """``out=x_t``: the sampler overwrites x_t with x_{t−1}; the same numbers as a separate output."""
    (x, eps, noise), _ = arrays((size,), 4, np.float32)
    want = ref.diffusion_p_sample(x, eps, noise, 1.1, 0.2, 0.3)
    keep_eps, keep_noise = eps.copy(), noise.copy()
    assert impl.diffusion_p_sample(x, eps, noise, 1.1, 0.2, 0.3, out=x) is x
    np.testing.assert_allclose(x, want, **TOL[np.float32])
    np.testing.assert_array_equal(eps, keep_eps)
    np.testing.assert_array_equal(noise, keep_noise)


def test_p_sample_mixed_dtypes_keep_x_t_dtype():
    """A float64 ε with float32 x_t (another compiled specialisation, no converted copy): float32 out."""
    (x, eps, noise), _ = arrays((3, 4), 5, np.float32)
    got = cpu.diffusion_p_sample(x, eps.astype(np.float64), noise, 1.1, 0.2, 0.3)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref.diffusion_p_sample(x, eps, noise, 1.1, 0.2, 0.3), **TOL[np.float32])


def test_p_sample_refuses_a_wrong_buffer():
    (x, eps, noise), _ = arrays((4, 6), 3, np.float32)
    for bad in (np.empty((4, 5), np.float32), np.empty((4, 6), np.float64), np.empty((6, 4), np.float32).T):
        with pytest.raises(ValueError, match="out must be a C-contiguous float32 array of shape"):
            cpu.diffusion_p_sample(x, eps, noise, 1.1, 0.2, 0.3, out=bad)
    with pytest.raises(ValueError, match=r"eps and noise must have x_t's shape \(4, 6\), got \(6, 4\)"):
        cpu.diffusion_p_sample(x, eps.reshape(6, 4), noise, 1.1, 0.2, 0.3)


def test_parallel_versions_and_strided_inputs():
    size = cpu.PARALLEL_MIN_SIZE
    (x, eps, noise), rng = arrays((4, size // 4 + 3), 0, np.float32)          # above the threshold
    np.testing.assert_allclose(cpu.diffusion_p_sample(x, eps, noise, 1.2, 0.5, 0.3),
                               ref.diffusion_p_sample(x, eps, noise, 1.2, 0.5, 0.3), **TOL[np.float32])
    a, b = rng.random(4), rng.random(4)
    np.testing.assert_allclose(cpu.diffusion_q_sample(x, noise, a, b), ref.diffusion_q_sample(x, noise, a, b),
                               **TOL[np.float32])
    view = x[:, ::2]                                                            # non-contiguous
    np.testing.assert_allclose(cpu.diffusion_q_sample(view, view, a, b), ref.diffusion_q_sample(view, view, a, b),
                               **TOL[np.float32])


@pytest.mark.equation("DIF-14")
def test_reference_is_algorithm_2_line_4():
    from minigen.models.diffusion import NoiseSchedule, reverse_variance
    s = NoiseSchedule.linear()
    (x, eps, z), _ = arrays((3, 5), 1, np.float64)
    t = 400
    alpha, alpha_bar = s.alphas[t - 1], s.alpha_bars[t - 1]
    sigma = np.sqrt(reverse_variance(s)[t - 1])
    line_by_line = 1 / np.sqrt(alpha) * (x - (1 - alpha) / np.sqrt(1 - alpha_bar) * eps) + sigma * z
    got = ref.diffusion_p_sample(x, eps, z, 1 / np.sqrt(alpha), (1 - alpha) / np.sqrt(1 - alpha_bar), sigma)
    np.testing.assert_allclose(got, line_by_line, rtol=1e-14)


@pytest.mark.gpu
def test_gpu_matches_reference():
    import cupy

    from minigen.kernels.gpu import diffusion as gpu
    for dtype in (np.float32, np.float64):
        for shape in [(1,), (3, 5), (64, 3, 32, 32)]:
            (x, eps, noise), rng = arrays(shape, 2, dtype)
            a, b = rng.random(shape[0]), rng.random(shape[0])
            got = cupy.asnumpy(gpu.diffusion_q_sample(cupy.asarray(x), cupy.asarray(noise), a, b))
            np.testing.assert_allclose(got, ref.diffusion_q_sample(x, noise, a, b), **TOL[dtype])
            for z in (noise, None):
                got = cupy.asnumpy(gpu.diffusion_p_sample(cupy.asarray(x), cupy.asarray(eps),
                                                          None if z is None else cupy.asarray(z), 1.1, 0.2, 0.3))
                np.testing.assert_allclose(got, ref.diffusion_p_sample(x, eps, z, 1.1, 0.2, 0.3), **TOL[dtype])
                out = cupy.empty(shape, dtype)
                assert gpu.diffusion_p_sample(cupy.asarray(x), cupy.asarray(eps), None if z is None else
                                              cupy.asarray(z), 1.1, 0.2, 0.3, out=out) is out
                np.testing.assert_allclose(cupy.asnumpy(out), ref.diffusion_p_sample(x, eps, z, 1.1, 0.2, 0.3),
                                           **TOL[dtype])
    assert backend.get_kernel("diffusion_p_sample", "cuda") is gpu.diffusion_p_sample


def test_serial_and_parallel_versions_are_cached_apart():
    """Numba's disk cache ignores flags: one function jitted serial and parallel would share an entry
    and one version would run the other's code. Each version is a copy under its own name."""
    serial, parallel = cpu._VERSIONS["p"]
    assert serial.py_func.__qualname__ == "_p_sample_body_serial"
    assert parallel.py_func.__qualname__ == "_p_sample_body_parallel"
    assert not serial.targetoptions.get("parallel") and parallel.targetoptions["parallel"]
    x = np.ones(8, np.float32)
    for version in (serial, parallel):                 # same numbers from both
        out = np.empty_like(x)
        version(x, x, x, 2.0, 0.5, 1.0, out)
        np.testing.assert_allclose(out, 2.0)
