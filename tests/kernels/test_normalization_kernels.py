"""Fused group norm and SiLU kernels against the NumPy reference (CPU; GPU marked), and the fused
op's first-order backward against its differentiable twin used under create_graph=True."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigen as mg
import minigen.nn.functional as F
from minigen import autograd
from minigen.kernels import reference as ref
from minigen.kernels.cpu import elementwise as cpu_elementwise
from minigen.kernels.cpu import normalization as cpu

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}


def _case(seed, n, groups, per, spatial, dtype):
    rng = np.random.default_rng(seed)
    c = groups * per
    x = (rng.normal(size=(n, c) + spatial) * 3 + 5).astype(dtype)    # large mean: no cancellation allowed
    w, b = rng.normal(size=c).astype(dtype), rng.normal(size=c).astype(dtype)
    g = rng.normal(size=x.shape).astype(dtype)
    return x, w, b, g


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 99), n=st.integers(1, 3), groups=st.integers(1, 4), per=st.integers(1, 3),
       spatial=st.sampled_from([(), (5,), (3, 4), (2, 2, 3)]))
def test_group_norm_cpu_matches_reference(dtype, seed, n, groups, per, spatial):
    x, w, b, g = _case(seed, n, groups, per, spatial, dtype)
    y, mean, rstd = cpu.group_norm_forward(x, groups, w, b, 1e-5)
    y_ref, mean_ref, rstd_ref = ref.group_norm_forward(x, groups, w, b, 1e-5)
    assert y.dtype == dtype and y.shape == x.shape and mean.shape == (n, groups)
    np.testing.assert_allclose(y, y_ref, **TOL[dtype])
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-6)
    np.testing.assert_allclose(rstd, rstd_ref, rtol=1e-5)
    got = cpu.group_norm_backward(x, g, groups, w, mean, rstd)
    want = ref.group_norm_backward(x, g, groups, w, mean_ref, rstd_ref)
    for a, e in zip(got, want):
        assert a.dtype == dtype and a.shape == e.shape
        np.testing.assert_allclose(a, e, **TOL[dtype])


def test_group_norm_output_has_the_affine_statistics():
    """Each (example, group) of x̂ has mean 0 and variance 1/(1 + ε/σ²); y = γ x̂ + β per channel."""
    x, _, _, _ = _case(0, 2, 4, 2, (6, 6), np.float64)
    ones, zeros = np.ones(8), np.zeros(8)
    y, _, _ = cpu.group_norm_forward(x, 4, ones, zeros, 0.0)
    grouped = y.reshape(2, 4, -1)
    np.testing.assert_allclose(grouped.mean(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(grouped.var(axis=2), 1, rtol=1e-12)


def test_fused_backward_equals_the_differentiable_one():
    """The kernel path (plain backward) and the engine-ops path (create_graph) give the same gradients."""
    x, w, b, g = (mg.tensor(a, requires_grad=True) for a in _case(1, 2, 3, 2, (4, 5), np.float64))
    fused = autograd.grad(F.group_norm(x, 3, w, b), [x, w, b], grad_outputs=[g])
    twin = autograd.grad(F.group_norm(x, 3, w, b), [x, w, b], grad_outputs=[g], create_graph=True)
    for a, e in zip(fused, twin):
        np.testing.assert_allclose(a.numpy(), e.detach().numpy(), rtol=1e-10, atol=1e-12)
    z = mg.tensor(np.linspace(-30, 30, 41), requires_grad=True)
    fused = autograd.grad(F.silu(z), [z], grad_outputs=[mg.ones(41, dtype=np.float64)])[0]
    twin = autograd.grad(F.silu(z), [z], grad_outputs=[mg.ones(41, dtype=np.float64)], create_graph=True)[0]
    np.testing.assert_allclose(fused.numpy(), twin.detach().numpy(), rtol=1e-12, atol=1e-15)  # tanh-form σ: absolute error in the tails


def test_group_norm_without_affine_and_on_2d_input():
    x = mg.tensor(np.random.default_rng(3).normal(size=(4, 6)))
    y = F.group_norm(x, 3).numpy().reshape(4, 3, 2)
    np.testing.assert_allclose(y.mean(axis=2), 0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_kernels_match_reference(dtype):
    x = np.concatenate([[-1e4, -100.0, -88.5, -20.0, 0.0, 20.0, 100.0, 1e4],
                        np.random.default_rng(0).normal(scale=5, size=200)]).astype(dtype)
    g = np.random.default_rng(1).normal(size=x.shape).astype(dtype)
    y, dy = cpu_elementwise.silu(x), cpu_elementwise.silu_backward(x, g)
    assert np.isfinite(y).all() and np.isfinite(dy).all() and y.dtype == dtype
    np.testing.assert_allclose(y, ref.silu(x), rtol=TOL[dtype]["rtol"], atol=1e-6)
    np.testing.assert_allclose(dy, ref.silu_backward(x, g), rtol=TOL[dtype]["rtol"], atol=1e-6)
    view = x.reshape(4, -1)[:, ::3]                                   # non-contiguous input
    np.testing.assert_allclose(cpu_elementwise.silu(view), ref.silu(view), rtol=TOL[dtype]["rtol"], atol=1e-6)
    scalar = np.array(-1.5, dtype=dtype)                              # 0-d stays 0-d
    assert cpu_elementwise.silu(scalar).shape == () == cpu_elementwise.silu_backward(scalar, scalar).shape


@pytest.mark.parametrize("size", [1000, cpu_elementwise.PARALLEL_MIN_SIZE + 7], ids=["serial", "parallel"])
def test_float32_silu_exp_is_accurate_everywhere(size):
    """The vectorised float32 exp (Cephes' range reduction and polynomial) against float64 math, densely
    over the whole range where σ is representable: SiLU within 2e-6 relative, its derivative too
    (but for float32's cancellation near its root)."""
    x = np.linspace(-87.0, 88.0, size).astype(np.float32)
    x64 = x.astype(np.float64)
    s = 1.0 / (1.0 + np.exp(-x64))
    g = np.ones_like(x)
    np.testing.assert_allclose(cpu_elementwise.silu(x), x64 * s, rtol=2e-6, atol=1e-37)
    # the derivative crosses 0 at x ≈ -1.28, where 1 + x(1 − σ) cancels in float32: an absolute floor there
    np.testing.assert_allclose(cpu_elementwise.silu_backward(x, g), s * (1 + x64 * (1 - s)), rtol=2e-6, atol=1e-7)


@pytest.mark.gpu
def test_gpu_group_norm_and_silu_match_reference():
    import cupy

    from minigen import backend
    from minigen.kernels.gpu import elementwise as gpu_elementwise
    from minigen.kernels.gpu import normalization as gpu
    for dtype in (np.float32, np.float64):
        x, w, b, g = _case(5, 3, 4, 2, (7, 7), dtype)
        got = gpu.group_norm_forward(*(cupy.asarray(a) for a in (x,)), 4, cupy.asarray(w), cupy.asarray(b), 1e-5)
        want = ref.group_norm_forward(x, 4, w, b, 1e-5)
        for a, e in zip(got, want):
            np.testing.assert_allclose(cupy.asnumpy(a), e, **TOL[dtype])
        got = gpu.group_norm_backward(cupy.asarray(x), cupy.asarray(g), 4, cupy.asarray(w), got[1], got[2])
        for a, e in zip(got, ref.group_norm_backward(x, g, 4, w, want[1], want[2])):
            np.testing.assert_allclose(cupy.asnumpy(a), e, **TOL[dtype])
        z = np.linspace(-100, 100, 1001).astype(dtype)
        np.testing.assert_allclose(cupy.asnumpy(gpu_elementwise.silu(cupy.asarray(z))), ref.silu(z), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cupy.asnumpy(gpu_elementwise.silu_backward(cupy.asarray(z), cupy.asarray(z))),
                                   ref.silu_backward(z, z), rtol=1e-5, atol=1e-6)
    assert backend.get_kernel("group_norm_forward", "cuda") is gpu.group_norm_forward
