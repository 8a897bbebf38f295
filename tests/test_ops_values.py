"""Forward values of the ops against NumPy formulas written out in the test."""
import math

import numpy as np
import pytest

import minigen as mg
import minigen.nn.functional as F
from minigen.kernels import reference


def arr(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_activations_match_formulas():
    x = arr(50)
    t = mg.tensor(x)
    erf = np.vectorize(math.erf)
    expected = {
        "relu": np.maximum(x, 0),
        "leaky_relu": np.where(x > 0, x, 0.01 * x),
        "elu": np.where(x > 0, x, np.exp(x) - 1),
        "sigmoid": 1 / (1 + np.exp(-x)),
        "tanh": np.tanh(x),
        "softplus": np.log1p(np.exp(x)),
        "gelu": 0.5 * x * (1 + erf(x / np.sqrt(2))),
        "silu": x / (1 + np.exp(-x)),
    }
    for name, want in expected.items():
        np.testing.assert_allclose(getattr(F, name)(t).numpy(), want, rtol=1e-12, atol=1e-12,
                                   err_msg=name)


def test_softmax_logsumexp_are_stable():
    x = mg.tensor(np.array([[1000.0, 1001.0, -1000.0], [0.0, 0.0, 0.0]]))
    s = F.softmax(x, dim=1).numpy()
    np.testing.assert_allclose(s.sum(1), 1.0)
    np.testing.assert_allclose(F.log_softmax(x, 1).numpy()[0, :2], np.log([1 / (1 + np.e), np.e / (1 + np.e)]))
    np.testing.assert_allclose(mg.logsumexp(x, 1).numpy(), [1001 + np.log1p(np.exp(-1)), np.log(3)])
    inf = mg.tensor(np.array([-np.inf, -np.inf]))
    assert mg.logsumexp(inf, 0).item() == -np.inf
    assert F.softplus(mg.tensor(np.array([800.0]))).item() == 800.0
    assert F.sigmoid(mg.tensor(np.array([-800.0]))).item() == 0.0


def test_var_std_corrections():
    x = arr(4, 5)
    t = mg.tensor(x)
    np.testing.assert_allclose(t.var(dim=1).numpy(), x.var(1, ddof=1))
    np.testing.assert_allclose(t.var(dim=1, unbiased=False).numpy(), x.var(1))
    np.testing.assert_allclose(t.std(correction=0).numpy(), x.std())


def test_conv2d_matches_direct_loops():
    x, w = arr(2, 4, 7, 6), arr(6, 2, 3, 2, seed=1)
    stride, pad, dil, groups = (2, 1), (1, 2), (2, 1), 2
    y = F.conv2d(mg.tensor(x), mg.tensor(w), stride=stride, padding=pad, dilation=dil,
                 groups=groups).numpy()
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0],) * 2, (pad[1],) * 2))
    out_h = (7 + 2 * pad[0] - dil[0] * 2 - 1) // stride[0] + 1
    out_w = (6 + 2 * pad[1] - dil[1] * 1 - 1) // stride[1] + 1
    want = np.zeros((2, 6, out_h, out_w))
    for n in range(2):
        for o in range(6):
            g = o // 3
            for i in range(out_h):
                for j in range(out_w):
                    for c in range(2):
                        for p in range(3):
                            for q in range(2):
                                want[n, o, i, j] += (xp[n, g * 2 + c, i * stride[0] + p * dil[0],
                                                        j * stride[1] + q * dil[1]] * w[o, c, p, q])
    np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10)


@pytest.mark.equation("GAN-6")
def test_conv_transpose_is_the_adjoint_of_conv():
    """<conv(x, W), y> = <x, conv^T(y, W)> for every x, y: the defining property."""
    x, w = arr(2, 3, 9, 8), arr(4, 3, 3, 3, seed=1)
    kw = dict(stride=2, padding=1, dilation=1)
    y = arr(*F.conv2d(mg.tensor(x), mg.tensor(w), **kw).shape, seed=2)
    lhs = (F.conv2d(mg.tensor(x), mg.tensor(w), **kw).numpy() * y).sum()
    back = F.conv_transpose2d(mg.tensor(y), mg.tensor(w), output_padding=(0, 1), **kw).numpy()
    assert back.shape == x.shape
    np.testing.assert_allclose(lhs, (x * back).sum(), rtol=1e-10)


def test_pooling_values():
    x = arr(2, 3, 5, 7)
    mp = F.max_pool2d(mg.tensor(x), 2).numpy()
    want = x[:, :, :4, :6].reshape(2, 3, 2, 2, 3, 2).max(axis=(3, 5))
    np.testing.assert_array_equal(mp, want)
    ap = F.avg_pool2d(mg.tensor(x), 2).numpy()
    np.testing.assert_allclose(ap, x[:, :, :4, :6].reshape(2, 3, 2, 2, 3, 2).mean(axis=(3, 5)))
    up = F.interpolate(mg.tensor(x), scale_factor=2).numpy()
    np.testing.assert_array_equal(up, x.repeat(2, axis=2).repeat(2, axis=3))


def test_attention_matches_softmax_formula():
    q, k, v = arr(2, 3, 4, 5), arr(2, 3, 6, 5, seed=1), arr(2, 3, 6, 2, seed=2)
    out = F.scaled_dot_product_attention(mg.tensor(q), mg.tensor(k), mg.tensor(v)).numpy()
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(5)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, p @ v, rtol=1e-10)
    causal = F.scaled_dot_product_attention(mg.tensor(q), mg.tensor(k[:, :, :4]),
                                            mg.tensor(v[:, :, :4]), is_causal=True).numpy()
    np.testing.assert_allclose(causal[..., 0, :], v[:, :, 0], rtol=1e-10)  # first query sees key 0


def test_batch_norm_running_statistics():
    x = arr(8, 3, 4, 4)
    rm, rv = mg.zeros(3, dtype=np.float64), mg.ones(3, dtype=np.float64)
    y = F.batch_norm(mg.tensor(x), rm, rv, training=True, momentum=0.1).numpy()
    mean, var = x.mean((0, 2, 3)), x.var((0, 2, 3))
    np.testing.assert_allclose(y, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5))
    np.testing.assert_allclose(rm.numpy(), 0.1 * mean)
    np.testing.assert_allclose(rv.numpy(), 0.9 + 0.1 * x.var((0, 2, 3), ddof=1))


def test_cross_entropy_matches_formula():
    z, t = arr(6, 5), np.array([0, 4, 2, 2, 1, 3])
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    np.testing.assert_allclose(F.cross_entropy(mg.tensor(z), mg.tensor(t)).item(),
                               -logp[np.arange(6), t].mean())
    w = np.array([1.0, 2.0, 3.0, 0.5, 1.0])
    np.testing.assert_allclose(
        F.cross_entropy(mg.tensor(z), mg.tensor(t), weight=mg.tensor(w)).item(),
        -(w[t] * logp[np.arange(6), t]).sum() / w[t].sum())


def test_bce_with_logits_is_stable():
    z = mg.tensor(np.array([-1000.0, 0.0, 1000.0]))
    y = mg.tensor(np.array([0.0, 1.0, 1.0]))
    np.testing.assert_allclose(F.binary_cross_entropy_with_logits(z, y, reduction="none").numpy(),
                               [0.0, np.log(2), 0.0])


def test_random_draws_statistics():
    mg.manual_seed(1)
    x = mg.randn(200_000, dtype=np.float64).numpy()
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    p = mg.tensor(np.full(100_000, 0.3))
    assert abs(mg.bernoulli(p).numpy().mean() - 0.3) < 0.01
    probs = np.array([0.1, 0.2, 0.7])
    draws = mg.multinomial(mg.tensor(np.tile(probs, (30_000, 1))), 1, replacement=True).numpy()
    np.testing.assert_allclose(np.bincount(draws.ravel(), minlength=3) / 30_000, probs, atol=0.01)
    cats = mg.categorical(mg.tensor(np.log(probs)), num_samples=30_000).numpy()
    np.testing.assert_allclose(np.bincount(cats, minlength=3) / 30_000, probs, atol=0.01)
    without = mg.multinomial(mg.tensor(np.tile(probs, (5, 1))), 3).numpy()
    assert all(sorted(row) == [0, 1, 2] for row in without)


def test_erf_kernel_matches_math_erf():
    x = np.linspace(-4, 4, 101)
    np.testing.assert_allclose(reference.erf(x), [math.erf(v) for v in x], rtol=1e-15)
    from minigen import backend

    np.testing.assert_allclose(backend.get_kernel("erf", "cpu")(x.astype(np.float32)),
                               [math.erf(v) for v in x], rtol=1e-6)


@pytest.mark.parametrize("mode", ["reference", ""])
def test_kernel_dispatch_respects_environment(monkeypatch, mode):
    from minigen import backend

    monkeypatch.setenv("MINIGEN_KERNELS", mode)
    fn = backend.get_kernel("conv2d_forward", "cpu")
    module = fn.__module__
    if mode == "reference":
        assert module.endswith("kernels.reference")
    x, w = arr(1, 2, 5, 5), arr(3, 2, 3, 3)
    np.testing.assert_allclose(fn(x, w, (1, 1), (1, 1), (1, 1), 1),
                               reference.conv2d_forward(x, w, (1, 1), (1, 1), (1, 1), 1),
                               rtol=1e-10, atol=1e-12)
