"""Element-wise kernels (erf, softplus) against the NumPy reference, on the CPU and (marked) the GPU."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minigen import backend
from minigen.kernels import reference as ref
from minigen.kernels.cpu import elementwise as cpu

TOL = {np.float64: dict(rtol=1e-12, atol=1e-300), np.float32: dict(rtol=2e-6, atol=1e-30)}
EXTREMES = np.array([-1e30, -100.0, -20.0, -1e-8, 0.0, 1e-8, 20.0, 100.0, 1e30])


@pytest.mark.parametrize("name", ["erf", "softplus"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, max_side=7),
                    elements=st.floats(-50, 50)))
def test_cpu_matches_reference(name, dtype, x):
    x = x.astype(dtype)
    got, want = getattr(cpu, name)(x), getattr(ref, name)(x)
    assert got.dtype == dtype and got.shape == x.shape
    np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softplus_never_overflows(dtype):
    x = EXTREMES.astype(dtype)
    got = cpu.softplus(x)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, ref.softplus(x), **TOL[dtype])
    view = np.arange(20, dtype=dtype).reshape(4, 5)[:, ::2]           # non-contiguous input
    np.testing.assert_allclose(cpu.softplus(view), ref.softplus(view), **TOL[dtype])


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["erf", "softplus"])
def test_gpu_matches_reference(name):
    import cupy

    from minigen.kernels.gpu import elementwise as gpu
    x = np.concatenate([EXTREMES, np.random.default_rng(0).normal(scale=10, size=1000)])
    for dtype in (np.float32, np.float64):
        got = cupy.asnumpy(getattr(gpu, name)(cupy.asarray(x.astype(dtype))))
        np.testing.assert_allclose(got, getattr(ref, name)(x.astype(dtype)), **TOL[dtype])
    assert backend.get_kernel(name, "cuda") is getattr(gpu, name)


# --------------------------------------------------------------------------- fused Bernoulli log-likelihood

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(k=st.integers(1, 4), m=st.integers(1, 5), d=st.integers(1, 40), seed=st.integers(0, 99))
def test_bernoulli_log_likelihood_cpu_matches_reference(dtype, k, m, d, seed):
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(k * m, d)) * 10).astype(dtype)
    x = rng.random((m, d)).astype(dtype)                       # grey levels are allowed too
    x[:, ::2] = x[:, ::2] > 0.5
    got, want = cpu.bernoulli_log_likelihood(logits, x), ref.bernoulli_log_likelihood(logits, x)
    assert got.shape == (k * m,) and got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4)
    # the definition, row by row
    rows = np.array([(x[n % m] * logits[n] - np.logaddexp(0, logits[n])).sum() for n in range(k * m)])
    np.testing.assert_allclose(want, rows, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4)


@pytest.mark.gpu
def test_bernoulli_log_likelihood_gpu_matches_reference():
    import cupy

    from minigen.kernels.gpu import elementwise as gpu
    rng = np.random.default_rng(0)
    logits, x = rng.normal(size=(12, 50)) * 10, (rng.random((4, 50)) < 0.3).astype(np.float64)
    got = cupy.asnumpy(gpu.bernoulli_log_likelihood(cupy.asarray(logits), cupy.asarray(x)))
    np.testing.assert_allclose(got, ref.bernoulli_log_likelihood(logits, x), rtol=1e-12)


def _momentum_operands(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape).astype(dtype) for _ in range(3)]     # param, velocity, grad


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=9), seed=st.integers(0, 99),
       lr=st.floats(0, 1), momentum=st.floats(0, 0.99), decay=st.floats(0, 1e-2))
def test_momentum_ascent_step_cpu_matches_reference(dtype, shape, seed, lr, momentum, decay):
    p, v, g = _momentum_operands(shape, dtype, seed)
    p2, v2 = p.copy(), v.copy()
    assert cpu.momentum_ascent_step(p, v, g, lr, momentum, decay) is None      # in place
    ref.momentum_ascent_step(p2, v2, g, lr, momentum, decay)
    np.testing.assert_allclose(v, v2, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    np.testing.assert_allclose(p, p2, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
    # the rule itself: Δ = μΔ + η(g - λθ), θ ← θ + Δ
    p0, v0, _ = _momentum_operands(shape, dtype, seed)
    np.testing.assert_allclose(v2, momentum * v0 + lr * (g - decay * p0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(p2, p0 + v2, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_momentum_ascent_step_gpu_matches_reference():
    import cupy

    from minigen.kernels.gpu import elementwise as gpu
    p, v, g = _momentum_operands((37, 11), np.float32, 0)
    pg, vg = cupy.asarray(p), cupy.asarray(v)
    gpu.momentum_ascent_step(pg, vg, cupy.asarray(g), 0.1, 0.9, 1e-3)
    ref.momentum_ascent_step(p, v, g, 0.1, 0.9, 1e-3)
    np.testing.assert_allclose(cupy.asnumpy(pg), p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cupy.asnumpy(vg), v, rtol=1e-5, atol=1e-6)


def _adam_operands(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    param, exp_avg, grad = (rng.normal(size=shape).astype(dtype) for _ in range(3))
    exp_avg_sq, vmax = (rng.random(shape).astype(dtype) for _ in range(2))
    return param, exp_avg, exp_avg_sq, vmax, grad


ADAM_SCALARS = dict(beta1=0.9, beta2=0.999, step_size=1e-3 / (1 - 0.9 ** 3), bias_correction2_sqrt=np.sqrt(1 - 0.999 ** 3),
                    eps=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=9), seed=st.integers(0, 99), amsgrad=st.booleans(),
       beta1=st.floats(0, 0.99), beta2=st.floats(0, 0.9999))
def test_adam_update_cpu_matches_reference(dtype, shape, seed, amsgrad, beta1, beta2):
    scalars = {**ADAM_SCALARS, "beta1": beta1, "beta2": beta2}
    mine, theirs = _adam_operands(shape, dtype, seed), _adam_operands(shape, dtype, seed)
    for (p, m, v, vmax, g), impl in ((mine, cpu), (theirs, ref)):
        assert impl.adam_update(p, m, v, g, **scalars, max_exp_avg_sq=vmax if amsgrad else None) is None
    tol = dict(rtol=2e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-15)
    for got, want in zip(mine, theirs):
        np.testing.assert_allclose(got, want, **tol)


def test_adam_update_reference_is_the_rule():
    """m ← β₁m + (1−β₁)g, v ← β₂v + (1−β₂)g², v_max ← max(v_max, v), θ ← θ − s·m/(√v̂/c + ε), in float64."""
    p, m, v, vmax, g = _adam_operands((5, 4), np.float64, 1)
    p0, m0, v0, vmax0 = p.copy(), m.copy(), v.copy(), vmax.copy()
    s, c, eps = ADAM_SCALARS["step_size"], ADAM_SCALARS["bias_correction2_sqrt"], ADAM_SCALARS["eps"]
    for amsgrad in (False, True):
        p, m, v, vmax = p0.copy(), m0.copy(), v0.copy(), vmax0.copy()
        ref.adam_update(p, m, v, g, **ADAM_SCALARS, max_exp_avg_sq=vmax if amsgrad else None)
        m_want, v_want = 0.9 * m0 + 0.1 * g, 0.999 * v0 + 0.001 * g * g
        v_hat = np.maximum(vmax0, v_want) if amsgrad else v_want
        np.testing.assert_allclose(m, m_want, rtol=1e-14)
        np.testing.assert_allclose(v, v_want, rtol=1e-14)
        np.testing.assert_allclose(p, p0 - s * m_want / (np.sqrt(v_hat) / c + eps), rtol=1e-13)
        np.testing.assert_array_equal(vmax, np.maximum(vmax0, v_want) if amsgrad else vmax0)


def test_adam_update_cpu_updates_a_strided_parameter_in_place():
    """A parameter that is a view (not C-contiguous) is still updated where it lives."""
    p, m, v, _, g = _adam_operands((6, 4), np.float32, 2)
    want = [a.copy() for a in (p.T, m.T, v.T)]
    ref.adam_update(*want, g.T.copy(), **ADAM_SCALARS)
    view = p.T
    cpu.adam_update(view, m.T, v.T, g.T, **ADAM_SCALARS)
    np.testing.assert_allclose(p.T, want[0], rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_update_gpu_matches_reference(amsgrad):
    import cupy

    from minigen.kernels.gpu import elementwise as gpu
    host = _adam_operands((37, 11), np.float32, 0)
    dev = [cupy.asarray(a) for a in host]
    for (p, m, v, vmax, g), impl in ((dev, gpu), (host, ref)):
        impl.adam_update(p, m, v, g, **ADAM_SCALARS, max_exp_avg_sq=vmax if amsgrad else None)
    for got, want in zip(dev, host):
        np.testing.assert_allclose(cupy.asnumpy(got), want, rtol=2e-6, atol=1e-7)
