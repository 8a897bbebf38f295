"""RBM block-Gibbs kernels (Eq. EBM-11) against the NumPy reference, on the CPU and (marked) the GPU.

The samples are compared exactly, except where ``u`` lies within rounding of ``p``:
there ``u < p`` may legitimately differ between two correct implementations, so
those entries are masked out -- and the mask is asserted to be tiny.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen import backend
from minigen.kernels import reference as ref
from minigen.kernels.cpu import gibbs as cpu

TOL = {np.float32: dict(rtol=1e-5, atol=3e-7), np.float64: dict(rtol=1e-12, atol=1e-15)}
# |u - p| below this may round either way (a few ulp of 1: p is within 2-3 ulp of the reference)
NEAR = {np.float32: 1e-6, np.float64: 1e-14}

shapes = st.tuples(st.integers(1, 9), st.integers(1, 40), st.integers(1, 40))   # batch, n_v, n_h


def _problem(dtype, batch, n_v, n_h, seed, scale=3.0):
    """A random RBM and layer states; weights large enough that p spans (0, 1)."""
    rng = np.random.default_rng(seed)
    W = (rng.normal(size=(n_v, n_h)) * scale / np.sqrt(n_v)).astype(dtype)
    b, c = rng.normal(size=n_v).astype(dtype), rng.normal(size=n_h).astype(dtype)
    v = (rng.random((batch, n_v)) < 0.5).astype(dtype)
    h = (rng.random((batch, n_h)) < 0.5).astype(dtype)
    return rng, W, b, c, v, h


def _check_sample(p, s, p_ref, s_ref, u, dtype):
    """p close to the reference; s exactly 0/1 and equal to the reference away from u ~ p."""
    assert p.dtype == dtype and s.dtype == dtype and p.shape == p_ref.shape == s.shape
    np.testing.assert_allclose(p, p_ref, **TOL[dtype])
    assert np.isin(s, (0, 1)).all()
    ambiguous = np.abs(u - p_ref) <= NEAR[dtype]
    assert ambiguous.mean() <= 0.01
    np.testing.assert_array_equal(s[~ambiguous], s_ref[~ambiguous])
    return ambiguous


# --------------------------------------------------------------------------- CPU against the reference

@pytest.mark.equation("EBM-11")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(shape=shapes, seed=st.integers(0, 999))
@settings(max_examples=25)
def test_cpu_sample_hidden_and_visible_match_reference(dtype, shape, seed):
    batch, n_v, n_h = shape
    rng, W, b, c, v, h = _problem(dtype, batch, n_v, n_h, seed)
    u_h, u_v = rng.random((batch, n_h)).astype(dtype), rng.random((batch, n_v)).astype(dtype)
    _check_sample(*cpu.rbm_sample_hidden(v, W, c, u_h), *ref.rbm_sample_hidden(v, W, c, u_h), u_h, dtype)
    _check_sample(*cpu.rbm_sample_visible(h, W, b, u_v), *ref.rbm_sample_visible(h, W, b, u_v), u_v, dtype)


@pytest.mark.equation("EBM-11")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_hidden_probability_is_the_formula(dtype):
    """p(h_j = 1 | v) = sigma(c_j + sum_i v_i W_ij), element by element in float64."""
    rng, W, b, c, v, h = _problem(dtype, 3, 7, 5, seed=1)
    p, _ = cpu.rbm_sample_hidden(v, W, c, rng.random((3, 5)).astype(dtype))
    want = [[1 / (1 + np.exp(-(float(c[j]) + sum(float(v[n, i]) * float(W[i, j]) for i in range(7)))))
             for j in range(5)] for n in range(3)]
    np.testing.assert_allclose(p, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=3e-7)
    p_v, _ = cpu.rbm_sample_visible(h, W, b, rng.random((3, 7)).astype(dtype))
    np.testing.assert_allclose(p_v, 1 / (1 + np.exp(-(h.astype(np.float64) @ W.T.astype(np.float64) + b))),
                               rtol=1e-5 if dtype == np.float32 else 1e-12, atol=3e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(shape=shapes, k=st.integers(1, 5), seed=st.integers(0, 999))
@settings(max_examples=25)
def test_cpu_gibbs_chain_matches_reference(dtype, shape, k, seed):
    batch, n_v, n_h = shape
    rng, W, b, c, v, h = _problem(dtype, batch, n_v, n_h, seed)
    u_v, u_h = rng.random((k, batch, n_v)).astype(dtype), rng.random((k, batch, n_h)).astype(dtype)
    h_in = h.copy()
    got, want = cpu.rbm_gibbs_chain(h, W, b, c, u_v, u_h), ref.rbm_gibbs_chain(h, W, b, c, u_v, u_h)
    np.testing.assert_array_equal(h, h_in)                       # the input state is not overwritten
    assert all(g.shape == w.shape and g.dtype == dtype for g, w in zip(got, want))
    # A flip at u ~ p in an early step changes everything after it: compare the chains
    # whose every step was unambiguous (nearly all of them), and check the rest is 0/1.
    if not _any_ambiguous_step(h, W, b, c, u_v, u_h, dtype):
        _check_sample(got[0], got[1], want[0], want[1], u_v[-1], dtype)
        _check_sample(got[2], got[3], want[2], want[3], u_h[-1], dtype)
    else:
        assert all(np.isin(x, (0, 1)).all() for x in (got[1], got[3]))


def _any_ambiguous_step(h, W, b, c, u_v, u_h, dtype):
    """Whether some u of the reference chain lies within rounding of its p."""
    for t in range(u_v.shape[0]):
        p_v, v = ref.rbm_sample_visible(h, W, b, u_v[t])
        p_h, h = ref.rbm_sample_hidden(v, W, c, u_h[t])
        if (np.abs(u_v[t] - p_v) <= NEAR[dtype]).any() or (np.abs(u_h[t] - p_h) <= NEAR[dtype]).any():
            return True
    return False


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_large_pre_activations_do_not_overflow(dtype):
    """|x| up to 1e30: p is exactly 0 or 1 (as in the reference), never NaN, no warnings."""
    x = np.array([-1e30, -1e4, -1000.0, -100.0, -30.0, 0.0, 30.0, 100.0, 1000.0, 1e4, 1e30], dtype)
    W, c, u = x[None, :], np.zeros(x.size, dtype), np.full((1, x.size), 0.5, dtype)
    with np.errstate(all="raise"):
        p, s = cpu.rbm_sample_hidden(np.ones((1, 1), dtype), W, c, u)
    p_ref, s_ref = ref.rbm_sample_hidden(np.ones((1, 1), dtype), W, c, u)
    assert np.isfinite(p).all()
    np.testing.assert_array_equal(p[0, [0, 1, 2, 3, -4, -3, -2, -1]], [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(p, p_ref, **TOL[dtype])
    np.testing.assert_array_equal(s, s_ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_sample_frequencies_match_p(dtype):
    """Each unit is on with probability p: count over 4000 draws, within 5 binomial sigmas."""
    rng = np.random.default_rng(7)
    n_v, n_h, draws = 3, 6, 4000
    W = np.zeros((n_v, n_h), dtype)
    c = np.array([-3.0, -1.0, 0.0, 0.5, 2.0, 4.0], dtype)         # p from 0.047 to 0.982
    v = np.zeros((draws, n_v), dtype)
    p, h = cpu.rbm_sample_hidden(v, W, c, rng.random((draws, n_h)).astype(dtype))
    p0 = 1 / (1 + np.exp(-c.astype(np.float64)))
    np.testing.assert_allclose(p, np.broadcast_to(p0, p.shape), rtol=1e-5)
    sigma = np.sqrt(draws * p0 * (1 - p0))
    assert (np.abs(h.sum(axis=0) - draws * p0) < 5 * sigma).all()
    # the same for the counter-based uniforms
    _, h = cpu.rbm_sample_hidden_seeded(v, W, c, seed=3, stream=0)
    assert (np.abs(h.sum(axis=0) - draws * p0) < 5 * sigma).all()


def test_parallel_pass_matches_serial(monkeypatch):
    """Above PARALLEL_MIN_SIZE the pass runs over rows with prange: same result."""
    rng, W, b, c, v, h = _problem(np.float32, 64, 30, 50, seed=3)
    u = rng.random((64, 50)).astype(np.float32)
    serial = cpu.rbm_sample_hidden(v, W, c, u)
    serial_seeded = cpu.rbm_sample_hidden_seeded(v, W, c, 1, 2)
    monkeypatch.setattr(cpu, "PARALLEL_MIN_SIZE", 0)
    for a, b_ in zip(cpu.rbm_sample_hidden(v, W, c, u) + cpu.rbm_sample_hidden_seeded(v, W, c, 1, 2),
                     serial + serial_seeded):
        np.testing.assert_array_equal(a, b_)


def test_backend_dispatches_to_numba():
    for name in ("rbm_sample_hidden", "rbm_sample_visible", "rbm_gibbs_chain"):
        assert backend.get_kernel(name, "cpu") is getattr(cpu, name)


# --------------------------------------------------------------------------- counter-based uniforms (the option)

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(shape=shapes, k=st.integers(1, 5), seed=st.integers(0, 2**64 - 1), stream=st.integers(0, 10**6))
@settings(max_examples=15)
def test_cpu_seeded_kernels_equal_reference_with_counter_uniforms(dtype, shape, k, seed, stream):
    batch, n_v, n_h = shape
    _, W, b, c, v, h = _problem(dtype, batch, n_v, n_h, seed % 1000)
    u = cpu.counter_uniforms(seed, stream, (batch, n_h), dtype)
    assert u.dtype == dtype and (u >= 0).all() and (u < 1).all()
    _check_sample(*cpu.rbm_sample_hidden_seeded(v, W, c, seed, stream),
                  *ref.rbm_sample_hidden(v, W, c, u), u, dtype)
    u = cpu.counter_uniforms(seed, stream, (batch, n_v), dtype)
    _check_sample(*cpu.rbm_sample_visible_seeded(h, W, b, seed, stream),
                  *ref.rbm_sample_visible(h, W, b, u), u, dtype)
    u_v = np.stack([cpu.counter_uniforms(seed, stream + 2 * t, (batch, n_v), dtype) for t in range(k)])
    u_h = np.stack([cpu.counter_uniforms(seed, stream + 2 * t + 1, (batch, n_h), dtype) for t in range(k)])
    got = cpu.rbm_gibbs_chain_seeded(h, W, b, c, k, seed, stream)
    want = cpu.rbm_gibbs_chain(h, W, b, c, u_v, u_h)               # checked against the reference above
    for a, b_ in zip(got, want):
        np.testing.assert_array_equal(a, b_)


def test_counter_uniforms_look_uniform():
    """Moments, range and independence of neighbours and of streams (a smoke test, not BigCrush)."""
    u = cpu.counter_uniforms(0, 0, (200_000,), np.float64)
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / u.size)
    assert abs(u.var() - 1 / 12) < 0.002
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01
    w = cpu.counter_uniforms(0, 1, (200_000,), np.float64)
    assert abs(np.corrcoef(u, w)[0, 1]) < 0.01
    counts = np.bincount((u * 10).astype(int), minlength=10)
    assert ((counts - u.size / 10) ** 2 / (u.size / 10)).sum() < 30      # chi^2, 9 dof
    f32 = cpu.counter_uniforms(0, 0, (1000,), np.float32)
    np.testing.assert_allclose(f32, u[:1000], atol=2**-24)              # the top 24 of the same bits


# --------------------------------------------------------------------------- GPU

@pytest.mark.gpu
@pytest.mark.equation("EBM-11")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_matches_reference(dtype):
    import cupy

    from minigen.kernels import gpu as gpu_pkg
    from minigen.kernels.gpu import gibbs as gpu
    g = cupy.asarray
    for batch, n_v, n_h, k in [(1, 1, 1, 1), (1, 7, 3, 2), (5, 33, 17, 3), (100, 784, 500, 5)]:
        rng, W, b, c, v, h = _problem(dtype, batch, n_v, n_h, seed=batch + n_v)
        u_h, u_v = rng.random((batch, n_h)).astype(dtype), rng.random((batch, n_v)).astype(dtype)
        got = [cupy.asnumpy(x) for x in gpu.rbm_sample_hidden(g(v), g(W), g(c), g(u_h))]
        _check_sample(*got, *ref.rbm_sample_hidden(v, W, c, u_h), u_h, dtype)
        got = [cupy.asnumpy(x) for x in gpu.rbm_sample_visible(g(h), g(W), g(b), g(u_v))]
        _check_sample(*got, *ref.rbm_sample_visible(h, W, b, u_v), u_v, dtype)
        # the chain and the seeded kernels against the (already checked) CPU kernels
        uk_v, uk_h = rng.random((k, batch, n_v)).astype(dtype), rng.random((k, batch, n_h)).astype(dtype)
        pairs = [(gpu.rbm_gibbs_chain(g(h), g(W), g(b), g(c), g(uk_v), g(uk_h)),
                  cpu.rbm_gibbs_chain(h, W, b, c, uk_v, uk_h)),
                 (gpu.rbm_gibbs_chain_seeded(g(h), g(W), g(b), g(c), k, 5, 11),
                  cpu.rbm_gibbs_chain_seeded(h, W, b, c, k, 5, 11)),
                 (gpu.rbm_sample_hidden_seeded(g(v), g(W), g(c), 5, 11),
                  cpu.rbm_sample_hidden_seeded(v, W, c, 5, 11))]
        for gpu_out, cpu_out in pairs:
            gpu_out = [cupy.asnumpy(x) for x in gpu_out]
            for x in gpu_out[1::2]:
                assert np.isin(x, (0, 1)).all()
            for a, b_ in zip(gpu_out[0::2], cpu_out[0::2]):
                np.testing.assert_allclose(a, b_, **TOL[dtype])
            for a, b_ in zip(gpu_out[1::2], cpu_out[1::2]):          # a flip at u ~ p may propagate
                assert (a != b_).mean() <= 0.01
    x = np.array([[-1e30, -1000.0, 0.0, 1000.0, 1e30]], dtype)
    p, s = gpu.rbm_sample_hidden(g(np.ones((1, 1), dtype)), g(x), g(np.zeros(5, dtype)),
                                 g(np.full((1, 5), 0.5, dtype)))
    np.testing.assert_array_equal(cupy.asnumpy(p), [[0, 0, 0.5, 1, 1]])
    np.testing.assert_array_equal(cupy.asnumpy(s), [[0, 0, 0, 1, 1]])
    assert backend.get_kernel("rbm_sample_hidden", "cuda") is gpu_pkg.rbm_sample_hidden
