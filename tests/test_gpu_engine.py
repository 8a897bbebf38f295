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


def test_modules_report_and_change_their_device():
    net = mg.nn.Linear(3, 2)
    assert net.device == "cpu" and net.to("cuda").device == "cuda"
    assert net(mg.randn(4, 3, device="cuda")).device == "cuda"


def test_unet_step_on_gpu_matches_cpu():
    """The whole U-Net (convolutions, group norm, attention, up/down sampling, time embedding) on CuPy:
    the loss and every parameter's gradient equal the CPU's in float64."""
    import copy

    from minigen.models.unet import UNet
    net = UNet(1, 8, (1, 2), 1, (1,), heads=2, groups=4).to(np.float64)
    rng = np.random.default_rng(1)
    for p in net.parameters():              # the output layer starts at zero: no gradient would reach the rest
        p.data[...] = 0.3 * rng.standard_normal(p.shape)
    twin = copy.deepcopy(net).to("cuda")
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    t = np.array([3, 700])
    losses = []
    for model, device in ((net, "cpu"), (twin, "cuda")):
        loss = (model(mg.tensor(x, device=device), t) ** 2).mean()
        loss.backward()
        losses.append(loss.item())
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-9)
    for (name, p), q in zip(net.named_parameters(), twin.parameters()):
        np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-7, atol=1e-12, err_msg=name)


def test_ddpm_trains_samples_and_scores_on_the_gpu(tmp_path, capsys):
    """`minigen train/sample/eval --device cuda`: the run's checkpoint holds CuPy arrays, and a CPU load of it
    gives the same model."""
    import json

    from minigen.cli import main
    from minigen.runs import load_run
    run = str(tmp_path / "g")
    assert main(["train", "ddpm", "--data", "moons", "--steps", "30", "--batch-size", "64", "--device", "cuda",
                 "--runs-dir", str(tmp_path), "--name", "g", "--no-progress"]) == 0
    assert json.loads((tmp_path / "g" / "config.json").read_text())["device"] == "cuda"
    assert main(["sample", run, "-n", "16", "--device", "cuda", "--sampler", "ddim", "--steps", "10"]) == 0
    _, _, on_gpu = load_run(run, "cuda")
    _, _, on_cpu = load_run(run)
    assert on_gpu.device == "cuda" and on_cpu.device == "cpu"
    for p, q in zip(on_cpu.parameters(), on_gpu.parameters()):
        np.testing.assert_array_equal(q.detach().numpy(), p.detach().numpy())
