"""The engine on a CUDA device (CuPy arrays): skipped cleanly without CuPy or a GPU.

Kernel-level GPU tests live beside the kernels' CPU tests in tests/kernels/.
"""
import numpy as np
import pytest

import minigen as mg
import minigen.nn.functional as F

pytestmark = pytest.mark.gpu


def pair(*shape, seed=0):
    """The same float64 leaf on the CPU and on the GPU."""
    a = np.random.default_rng(seed).standard_normal(shape)
    return mg.tensor(a, requires_grad=True), mg.tensor(a, device="cuda", requires_grad=True)


def test_tensor_lives_on_cuda():
    x = mg.randn(3, 4, device="cuda")
    assert x.device == "cuda" and x.to("cpu").device == "cpu"
    assert type(x.data).__module__.startswith("cupy")


def test_gradients_flow_across_devices():
    x_cpu, _ = pair(5)
    y = (x_cpu.to("cuda") * 3).sum()
    y.backward()
    assert x_cpu.grad.device == "cpu"
    np.testing.assert_allclose(x_cpu.grad.numpy(), 3.0)


def test_mixed_devices_raise():
    with pytest.raises(ValueError, match="different devices"):
        mg.randn(3) + mg.randn(3, device="cuda")


@pytest.mark.parametrize("op", [
    lambda x: (x.exp() * x.tanh()).sum(dim=1),
    lambda x: F.softmax(x, -1).log(),
    lambda x: F.layer_norm(x, (x.shape[-1],)),
    lambda x: x[:, ::2].logsumexp(-1),
    lambda x: F.gelu(x) @ x.T,
])
def test_ops_match_cpu(op):
    x_cpu, x_gpu = pair(4, 6)
    out_cpu, out_gpu = op(x_cpu), op(x_gpu)
    np.testing.assert_allclose(out_gpu.detach().numpy(), out_cpu.detach().numpy(), rtol=1e-10)
    out_cpu.sum().backward()
    out_gpu.sum().backward()
    np.testing.assert_allclose(x_gpu.grad.numpy(), x_cpu.grad.numpy(), rtol=1e-10)


def test_conv_and_attention_on_gpu_match_cpu():
    x_cpu, x_gpu = pair(2, 3, 9, 9)
    w_cpu, w_gpu = pair(4, 3, 3, 3, seed=1)
    y_cpu = F.conv2d(x_cpu, w_cpu, stride=2, padding=1)
    y_gpu = F.conv2d(x_gpu, w_gpu, stride=2, padding=1)
    np.testing.assert_allclose(y_gpu.detach().numpy(), y_cpu.detach().numpy(), rtol=1e-9)
    (y_cpu ** 2).sum().backward()
    (y_gpu ** 2).sum().backward()
    np.testing.assert_allclose(w_gpu.grad.numpy(), w_cpu.grad.numpy(), rtol=1e-9)
    q_cpu, q_gpu = pair(2, 2, 5, 4, seed=2)
    a_cpu = F.scaled_dot_product_attention(q_cpu, q_cpu, q_cpu, is_causal=True)
    a_gpu = F.scaled_dot_product_attention(q_gpu, q_gpu, q_gpu, is_causal=True)
    np.testing.assert_allclose(a_gpu.detach().numpy(), a_cpu.detach().numpy(), rtol=1e-9)


def test_manual_seed_on_gpu():
    mg.manual_seed(5)
    a = mg.randn(10, device="cuda").numpy()
    mg.manual_seed(5)
    np.testing.assert_array_equal(mg.randn(10, device="cuda").numpy(), a)
