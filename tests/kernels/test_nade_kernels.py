"""NADE's fused kernels (Eq. AR-1) against the NumPy reference and the op-by-op formula,
on the CPU and (marked) the GPU; the op built on them is gradient-checked in float64."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigen as mg
from minigen import autograd
from minigen.gradcheck import gradcheck, gradgradcheck
from minigen.kernels import reference as ref
from minigen.kernels.cpu import nade as cpu
from minigen.models.autoregressive import NADE, NADELogits, nade_logits_by_running_sum

TOL = {np.float32: dict(rtol=2e-4, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}
shapes = st.tuples(st.integers(1, 6), st.integers(1, 30), st.integers(1, 40))   # batch, pixels, hidden


def _problem(dtype, batch, d, hidden, seed, density=0.4):
    rng = np.random.default_rng(seed)
    x = (rng.random((batch, d)) < density).astype(dtype)
    W = (rng.normal(size=(d, hidden)) * 2 / np.sqrt(d)).astype(dtype)
    V = rng.normal(size=(d, hidden)).astype(dtype)
    c, b = rng.normal(size=hidden).astype(dtype), rng.normal(size=d).astype(dtype)
    g = rng.normal(size=(batch, d)).astype(dtype)
    return x, W, c, V, b, g


def _direct_logits(x, W, c, V, b):
    """ℓ_i = b_i + V_i · σ(c + Σ_{j<i} x_j W_j), one conditional at a time (O(HD²))."""
    return np.stack([b[i] + (1 / (1 + np.exp(-(c + x[:, :i] @ W[:i]))) * V[i]).sum(1)
                     for i in range(x.shape[1])], 1)


@pytest.mark.equation("AR-1")
def test_reference_forward_is_the_direct_formula():
    x, W, c, V, b, _ = _problem(np.float64, 4, 12, 7, seed=0)
    np.testing.assert_allclose(ref.nade_forward(x, W, c, V, b), _direct_logits(x, W, c, V, b), atol=1e-12)


def test_reference_backward_is_the_gradient_of_the_direct_formula():
    """Central differences of Σ g ⊙ ℓ in every parameter entry (float64, tiny problem)."""
    x, W, c, V, b, g = _problem(np.float64, 3, 6, 4, seed=1)
    params = {"W": W, "c": c, "V": V, "b": b}
    grads = dict(zip("W c V b".split(), ref.nade_backward(x, W, c, V, g)))
    for name, p in params.items():
        numeric = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            saved = p[idx]
            p[idx] = saved + 1e-6
            up = (g * _direct_logits(x, W, c, V, b)).sum()
            p[idx] = saved - 1e-6
            down = (g * _direct_logits(x, W, c, V, b)).sum()
            p[idx] = saved
            numeric[idx] = (up - down) / 2e-6
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.equation("AR-1")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@given(shape=shapes, seed=st.integers(0, 999), density=st.sampled_from([0.0, 0.2, 1.0]))
@settings(max_examples=25, deadline=None)
def test_cpu_kernels_match_reference(dtype, shape, seed, density):
    x, W, c, V, b, g = _problem(dtype, *shape, seed, density)
    out = cpu.nade_forward(x, W, c, V, b)
    assert out.dtype == dtype and out.shape == x.shape
    np.testing.assert_allclose(out, ref.nade_forward(x, W, c, V, b), **TOL[dtype])
    for got, want in zip(cpu.nade_backward(x, W, c, V, g), ref.nade_backward(x, W, c, V, g)):
        assert got.dtype == dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, **TOL[dtype])


def test_cpu_kernels_at_mnist_size_in_float32():
    """784 pixels, 500 hidden units: undoing the running sum drifts by far less than the tolerance."""
    x, W, c, V, b, g = _problem(np.float32, 4, 784, 500, seed=3, density=0.2)
    np.testing.assert_allclose(cpu.nade_forward(x, W, c, V, b), ref.nade_forward(x, W, c, V, b), **TOL[np.float32])
    for got, want in zip(cpu.nade_backward(x, W, c, V, g), ref.nade_backward(x, W, c, V, g)):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def _tensors(x, W, c, V, b):
    return (mg.tensor(x),) + tuple(mg.tensor(p, requires_grad=True) for p in (W, c, V, b))


def test_fused_op_gradcheck_in_float64():
    x, W, c, V, b, _ = _problem(np.float64, 3, 9, 5, seed=4)
    xt, *params = _tensors(x, W, c, V, b)
    assert gradcheck(lambda *p: NADELogits.apply(xt, *p), params)


def test_fused_op_equals_the_op_by_op_formula_with_gradients():
    x, W, c, V, b, g = _problem(np.float64, 5, 20, 8, seed=5)
    fused_in, ops_in = _tensors(x, W, c, V, b), _tensors(x, W, c, V, b)
    fused, by_ops = NADELogits.apply(*fused_in), nade_logits_by_running_sum(*ops_in)
    np.testing.assert_allclose(fused.detach().numpy(), by_ops.detach().numpy(), atol=1e-12)
    fused.backward(mg.tensor(g))
    by_ops.backward(mg.tensor(g))
    for p, q in zip(fused_in[1:], ops_in[1:]):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), atol=1e-12)


def test_fused_op_second_derivatives():
    """create_graph=True differentiates the op-by-op formula: second derivatives are exact too."""
    x, W, c, V, b, _ = _problem(np.float64, 2, 6, 3, seed=6)
    xt, *params = _tensors(x, W, c, V, b)
    assert gradgradcheck(lambda *p: NADELogits.apply(xt, *p), params)


def test_nade_model_gradients_reach_the_pixels_when_asked():
    """A pixel tensor that requires grad takes the op path, so d log p / dx is computed, not dropped."""
    model = NADE((1, 2, 3), hidden=4).double()
    x = mg.tensor((np.random.default_rng(7).random((2, 1, 2, 3)) < 0.5).astype(np.float64), requires_grad=True)
    (gx,) = autograd.grad(model.log_prob(x).sum(), [x])
    assert gx.shape == x.shape and np.any(gx.numpy() != 0)


# --------------------------------------------------------------------------- GPU

@pytest.mark.gpu
@pytest.mark.equation("AR-1")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_kernels_match_reference(dtype):
    import cupy

    from minigen.kernels.gpu import nade as gpu
    for batch, d, hidden in [(1, 1, 1), (3, 10, 7), (5, 33, 300), (16, 784, 500)]:
        x, W, c, V, b, g = _problem(dtype, batch, d, hidden, seed=batch + d, density=0.2)
        args = [cupy.asarray(a) for a in (x, W, c, V)]
        out = cupy.asnumpy(gpu.nade_forward(*args, cupy.asarray(b)))
        np.testing.assert_allclose(out, ref.nade_forward(x, W, c, V, b), **TOL[dtype])
        for got, want in zip(gpu.nade_backward(*args, cupy.asarray(g)), ref.nade_backward(x, W, c, V, g)):
            np.testing.assert_allclose(cupy.asnumpy(got), want, rtol=1e-3 if dtype == np.float32 else 1e-9,
                                       atol=(1e-4 if dtype == np.float32 else 1e-11) * max(1, np.abs(want).max()))
