"""Functional ops against PyTorch itself, when it happens to be installed (never in CI:
PyTorch is not a dependency). The NumPy-formula tests in test_ops_values.py always run."""
import numpy as np
import pytest

import minigen as mg
import minigen.nn.functional as F

torch = pytest.importorskip("torch")
TF = torch.nn.functional


def both(*shape, seed=0):
    a = np.random.default_rng(seed).standard_normal(shape)
    return mg.tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)


def assert_same(mine, theirs, *pairs, rtol=1e-9):
    np.testing.assert_allclose(mine.detach().numpy(), theirs.detach().numpy(), rtol=rtol,
                               atol=1e-12)
    g = np.random.default_rng(9).standard_normal(mine.shape)
    mine.backward(mg.tensor(g))
    theirs.backward(torch.tensor(g))
    for m, t in pairs:
        np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("tq, tk", [(4, 4), (3, 6), (6, 3)])
def test_causal_attention_alignment(tq, tk):
    (q, tq_), (k, tk_), (v, tv_) = both(2, 2, tq, 5), both(2, 2, tk, 5, seed=1), both(2, 2, tk, 3, seed=2)
    assert_same(F.scaled_dot_product_attention(q, k, v, is_causal=True),
                TF.scaled_dot_product_attention(tq_, tk_, tv_, is_causal=True),
                (q, tq_), (k, tk_), (v, tv_))


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1), dict(dilation=2, groups=2, padding=2)])
def test_conv2d(kw):
    (x, tx), (w, tw) = both(2, 4, 9, 8), both(6, 4 // kw.get("groups", 1), 3, 3, seed=1)
    assert_same(F.conv2d(x, w, **kw), TF.conv2d(tx, tw, **kw), (x, tx), (w, tw))


def test_conv_transpose2d():
    (x, tx), (w, tw) = both(2, 4, 5, 5), both(4, 3, 4, 4, seed=1)
    kw = dict(stride=2, padding=1, output_padding=1)
    assert_same(F.conv_transpose2d(x, w, **kw), TF.conv_transpose2d(tx, tw, **kw),
                (x, tx), (w, tw))


@pytest.mark.parametrize("name, kw", [("gelu", {}), ("silu", {}), ("elu", {"alpha": 0.5}),
                                      ("softplus", {"beta": 2.0}), ("leaky_relu", {}),
                                      ("log_softmax", {"dim": 1}), ("softmax", {"dim": 0})])
def test_activations(name, kw):
    x, tx = both(5, 6)
    assert_same(getattr(F, name)(x, **kw), getattr(TF, name)(tx, **kw), (x, tx))


def test_pooling_and_interpolate():
    x, tx = both(2, 3, 7, 6)
    assert_same(F.max_pool2d(x, 3, stride=2, padding=1), TF.max_pool2d(tx, 3, stride=2, padding=1),
                (x, tx))
    x, tx = both(2, 3, 7, 6)
    assert_same(F.interpolate(x, size=(10, 9)), TF.interpolate(tx, size=(10, 9)), (x, tx))
    for size in [(14, 12), (21, 6)]:                       # integer factors: the broadcast path
        x, tx = both(2, 3, 7, 6)
        assert_same(F.interpolate(x, size=size), TF.interpolate(tx, size=size), (x, tx))


def test_losses():
    (z, tz), target = both(6, 5), np.array([0, 4, 2, -100, 1, 3])
    assert_same(F.cross_entropy(z, mg.tensor(target), label_smoothing=0.1),
                TF.cross_entropy(tz, torch.tensor(target), label_smoothing=0.1), (z, tz))
    (z, tz), y = both(6, 5), np.random.default_rng(3).random((6, 5))
    assert_same(F.binary_cross_entropy_with_logits(z, mg.tensor(y)),
                TF.binary_cross_entropy_with_logits(tz, torch.tensor(y)), (z, tz))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_label_smoothing_with_weights_and_ignore(reduction):
    (z, tz), target = both(6, 5), np.array([0, 4, 2, -100, 1, 3])
    w = np.array([1.0, 2.0, 0.5, 1.5, 3.0])
    kw = dict(label_smoothing=0.2, reduction=reduction)
    assert_same(F.cross_entropy(z, mg.tensor(target), weight=mg.tensor(w), **kw),
                TF.cross_entropy(tz, torch.tensor(target), weight=torch.tensor(w), **kw), (z, tz))


def test_unet_matches_its_pytorch_twin_with_the_same_weights():
    """`minigen bench` times minigen's U-Net against ``bench_mirrors.UNet``: same state-dict keys, and with the
    same weights the same output (so the two steps do the same arithmetic)."""
    from minigen.bench_mirrors import UNet as TorchUNet
    from minigen.models.unet import UNet
    net = UNet(1, 8, (1, 2), 1, (1,), heads=2, groups=4)
    twin = TorchUNet(1, 8, (1, 2), 1, (1,), heads=2, groups=4)
    assert set(net.state_dict()) == set(twin.state_dict())
    rng = np.random.default_rng(0)
    weights = {k: rng.normal(0, 0.3, np.shape(v)).astype(np.float32) for k, v in net.state_dict().items()}
    net.load_state_dict(weights)
    twin.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    ours = net(mg.tensor(x), [3, 700]).detach().numpy()
    theirs = twin(torch.tensor(x), torch.tensor([3, 700])).detach().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
