"""Layers: outputs against NumPy formulas / the functional ops, finite-difference
gradient checks (float64) of the stateful layers, error messages."""
import math

import numpy as np
import pytest

import minigen as mg
import minigen.nn as nn
import minigen.nn.functional as F
from minigen.gradcheck import gradcheck
from minigen.nn.utils import functional_call


def arr(t):
    return t.detach().numpy()


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def check_module_gradients(module, *inputs, flatten=lambda out: out):
    """gradcheck w.r.t. the inputs *and* every parameter of ``module`` (float64),
    passing the parameters in as plain inputs through ``functional_call``."""
    module.double()
    names = [n for n, _ in module.named_parameters()]
    params = [mg.tensor(p.data, requires_grad=True) for p in module.parameters()]
    xs = [mg.tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in inputs]

    def fn(*args):
        ins, ps = args[:len(xs)], args[len(xs):]
        return flatten(functional_call(module, dict(zip(names, ps)), tuple(ins)))

    assert gradcheck(fn, xs + params)


# --------------------------------------------------------------------------- Linear
def test_linear_matches_numpy_and_handles_leading_dims(rng):
    lin = nn.Linear(4, 3)
    x = rng.standard_normal((2, 5, 4)).astype(np.float32)
    y = lin(mg.tensor(x))
    assert y.shape == (2, 5, 3)
    np.testing.assert_allclose(arr(y), x @ arr(lin.weight).T + arr(lin.bias), rtol=1e-5,
                               atol=1e-6)
    assert lin.weight.shape == (3, 4) and lin.bias.shape == (3,)


def test_linear_error_names_layer_argument_and_shapes():
    with pytest.raises(ValueError, match=r"Linear: input has 5 features but in_features is 4 "
                                         r"\(input shape \(2, 5\)\)"):
        nn.Linear(4, 3)(mg.randn(2, 5))
    with pytest.raises(TypeError, match="Linear: input must be a Tensor"):
        nn.Linear(4, 3)(np.zeros((2, 4)))


def test_flatten_unflatten_identity():
    x = mg.randn(2, 3, 4, 5)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 1)(x).shape == (6, 4, 5)
    assert nn.Unflatten(1, (3, 20))(nn.Flatten()(x)).shape == (2, 3, 20)
    assert nn.Identity(54, unused="x")(x) is x


# --------------------------------------------------------------------------- convolutions
def test_conv2d_matches_functional_and_layout(rng):
    conv = nn.Conv2d(4, 6, (3, 2), stride=2, padding=1, dilation=(1, 2), groups=2)
    assert conv.weight.shape == (6, 2, 3, 2) and conv.bias.shape == (6,)
    x = mg.tensor(rng.standard_normal((2, 4, 7, 8)).astype(np.float32))
    ref = F.conv2d(x, conv.weight, conv.bias, 2, 1, (1, 2), 2)
    np.testing.assert_allclose(arr(conv(x)), arr(ref), rtol=1e-5, atol=1e-6)
    # unbatched (C, H, W) input
    np.testing.assert_allclose(arr(conv(x[0])), arr(ref[0]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (4, 1), (3, 2), ((2, 5), (2, 1))])
def test_conv2d_same_padding_keeps_size(kernel, dilation, rng):
    conv = nn.Conv2d(2, 3, kernel, padding="same", dilation=dilation)
    x = mg.tensor(rng.standard_normal((1, 2, 9, 8)).astype(np.float32))
    y = conv(x)
    assert y.shape == (1, 3, 9, 8)
    # PyTorch's rule: total d(k-1), the extra one on the right / bottom
    kh, kw = conv.kernel_size
    dh, dw = conv.dilation
    th, tw = dh * (kh - 1), dw * (kw - 1)
    xp = F.pad(x, (tw // 2, tw - tw // 2, th // 2, th - th // 2))
    np.testing.assert_allclose(arr(y), arr(F.conv2d(xp, conv.weight, conv.bias,
                                                    dilation=conv.dilation)),
                               rtol=1e-5, atol=1e-6)
    assert nn.Conv2d(2, 3, kernel, padding="valid", dilation=dilation)(x).shape[2:] == \
        F.conv2d(x, conv.weight, dilation=conv.dilation).shape[2:]


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_conv2d_padding_modes_pad_first(mode, rng):
    conv = nn.Conv2d(2, 3, 3, padding=(1, 2), padding_mode=mode)
    x = mg.tensor(rng.standard_normal((2, 2, 5, 6)).astype(np.float32))
    ref = F.conv2d(F.pad(x, (2, 2, 1, 1), mode=mode), conv.weight, conv.bias)
    np.testing.assert_allclose(arr(conv(x)), arr(ref), rtol=1e-5, atol=1e-6)
    numpy_mode = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode]
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 1), (2, 2)), mode=numpy_mode)
    np.testing.assert_allclose(arr(F.pad(x, (2, 2, 1, 1), mode=mode)), padded)


def test_conv2d_argument_and_input_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2d(3, 4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"Conv2d: input has 5 channels but in_channels is 3 "
                                         r"\(input shape \(2, 5, 8, 8\)\)"):
        nn.Conv2d(3, 4, 3)(mg.randn(2, 5, 8, 8))
    with pytest.raises(ValueError, match="Conv2d: expected 3-d or 4-d input"):
        nn.Conv2d(3, 4, 3)(mg.randn(3, 8))


def test_conv_transpose2d_layout_size_and_output_size(rng):
    deconv = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    assert deconv.weight.shape == (4, 3, 3, 3)
    x = mg.tensor(rng.standard_normal((2, 4, 5, 5)).astype(np.float32))
    y = deconv(x)
    assert y.shape == (2, 6, 10, 10)  # (5-1)*2 - 2 + 2 + 1 + 1
    ref = F.conv_transpose2d(x, deconv.weight, deconv.bias, 2, 1, 1, 2)
    np.testing.assert_allclose(arr(y), arr(ref), rtol=1e-5, atol=1e-6)
    plain = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1)
    assert plain(x).shape == (2, 6, 9, 9)
    assert plain(x, output_size=(10, 10)).shape == (2, 6, 10, 10)
    assert plain(x, output_size=[2, 6, 9, 9]).shape == (2, 6, 9, 9)
    with pytest.raises(ValueError, match=r"dim 0 must lie in \[9, 10\]"):
        plain(x, output_size=(12, 10))
    with pytest.raises(ValueError, match="ConvTranspose2d: input has 3 channels but "
                                         "in_channels is 4"):
        plain(mg.randn(1, 3, 5, 5))


@pytest.mark.equation("GAN-6")
def test_conv_transpose_is_the_adjoint_of_conv(rng):
    """Eq. GAN-6: <conv(x), y> = <x, conv^T(y)> for the same weight and geometry."""
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=False).double()
    deconv = nn.ConvTranspose2d(5, 3, 3, stride=2, padding=1, output_padding=1,
                                bias=False).double()
    deconv.weight.data[...] = conv.weight.data
    x = mg.tensor(rng.standard_normal((2, 3, 8, 8)))
    y = mg.tensor(rng.standard_normal((2, 5, 4, 4)))
    lhs = float((conv(x) * y).sum().item())
    rhs = float((x * deconv(y)).sum().item())
    assert math.isclose(lhs, rhs, rel_tol=1e-10)


def test_pooling_and_upsample_modules(rng):
    x = mg.tensor(rng.standard_normal((2, 3, 6, 6)).astype(np.float32))
    np.testing.assert_array_equal(arr(nn.MaxPool2d(2)(x)), arr(F.max_pool2d(x, 2)))
    np.testing.assert_allclose(arr(nn.AvgPool2d(3, stride=1, padding=1)(x)),
                               arr(F.avg_pool2d(x, 3, 1, 1)), rtol=1e-6)
    up = nn.Upsample(scale_factor=2)(x)
    np.testing.assert_array_equal(arr(up), x.numpy().repeat(2, axis=2).repeat(2, axis=3))
    assert nn.Upsample(size=(9, 4))(x).shape == (2, 3, 9, 4)
    with pytest.raises(ValueError, match="nearest"):
        nn.Upsample(scale_factor=2, mode="bilinear")


# --------------------------------------------------------------------------- normalisation
def test_batchnorm2d_train_and_eval_formulas(rng):
    bn = nn.BatchNorm2d(3, momentum=0.2)
    bn.weight.data[...] = [1.0, 2.0, 0.5]
    bn.bias.data[...] = [0.0, -1.0, 3.0]
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32) * 3 + 1
    y = bn(mg.tensor(x))
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    w, b = arr(bn.weight)[None, :, None, None], arr(bn.bias)[None, :, None, None]
    ref = (x - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5) * w + b
    np.testing.assert_allclose(arr(y), ref, rtol=1e-4, atol=1e-4)
    n = 4 * 5 * 5
    np.testing.assert_allclose(arr(bn.running_mean), 0.2 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arr(bn.running_var), 0.8 + 0.2 * var * n / (n - 1), rtol=1e-5)
    assert bn.num_batches_tracked.item() == 1
    bn.eval()
    y = bn(mg.tensor(x))
    rm, rv = arr(bn.running_mean), arr(bn.running_var)
    ref = (x - rm[None, :, None, None]) / np.sqrt(rv[None, :, None, None] + 1e-5) * w + b
    np.testing.assert_allclose(arr(y), ref, rtol=1e-4, atol=1e-4)
    assert bn.num_batches_tracked.item() == 1  # evaluation does not count batches


def test_batchnorm_cumulative_average_and_no_tracking(rng):
    bn = nn.BatchNorm1d(2, momentum=None)
    xs = [rng.standard_normal((8, 2)).astype(np.float32) + i for i in range(3)]
    for x in xs:
        bn(mg.tensor(x))
    np.testing.assert_allclose(arr(bn.running_mean), np.mean([x.mean(0) for x in xs], axis=0),
                               rtol=1e-5, atol=1e-6)
    free = nn.BatchNorm1d(2, affine=False, track_running_stats=False).eval()
    assert free.running_mean is None and list(free.state_dict()) == []
    y = free(mg.tensor(xs[0]))  # no running stats: batch statistics even in eval
    np.testing.assert_allclose(arr(y), (xs[0] - xs[0].mean(0)) / np.sqrt(xs[0].var(0) + 1e-5),
                               rtol=1e-4, atol=1e-5)
    assert nn.BatchNorm1d(2)(mg.randn(4, 2, 7)).shape == (4, 2, 7)


def test_batchnorm_errors():
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected input of shape \(N, C, H, W\), "
                                         r"got shape \(4, 3\)"):
        nn.BatchNorm2d(3)(mg.randn(4, 3))
    with pytest.raises(ValueError, match="BatchNorm1d: input has 5 channels but num_features "
                                         "is 3"):
        nn.BatchNorm1d(3)(mg.randn(4, 5))


def test_group_layer_instance_norm_formulas(rng):
    x = rng.standard_normal((2, 6, 3, 4)).astype(np.float32) * 2 + 0.5
    gn = nn.GroupNorm(3, 6)
    gn.weight.data[...] = np.arange(1, 7)
    g = x.reshape(2, 3, -1)
    ref = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5)
           ).reshape(x.shape) * np.arange(1, 7)[None, :, None, None]
    np.testing.assert_allclose(arr(gn(mg.tensor(x))), ref, rtol=1e-4, atol=1e-4)

    ln = nn.LayerNorm((3, 4))
    assert ln.weight.shape == (3, 4)
    m, v = x.mean((-2, -1), keepdims=True), x.var((-2, -1), keepdims=True)
    np.testing.assert_allclose(arr(ln(mg.tensor(x))), (x - m) / np.sqrt(v + 1e-5),
                               rtol=1e-4, atol=1e-4)
    assert nn.LayerNorm(4, elementwise_affine=False).weight is None
    assert nn.LayerNorm(4, bias=False).bias is None

    inorm = nn.InstanceNorm2d(6)
    assert inorm.weight is None and inorm.running_mean is None
    m, v = x.mean((2, 3), keepdims=True), x.var((2, 3), keepdims=True)
    np.testing.assert_allclose(arr(inorm(mg.tensor(x))), (x - m) / np.sqrt(v + 1e-5),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(arr(inorm(mg.tensor(x[0]))), ((x - m) / np.sqrt(v + 1e-5))[0],
                               rtol=1e-4, atol=1e-4)
    tracked = nn.InstanceNorm2d(6, affine=True, track_running_stats=True)
    assert list(tracked.state_dict()) == ["weight", "bias", "running_mean", "running_var",
                                          "num_batches_tracked"]
    tracked(mg.tensor(x))
    tracked.eval()
    rm = arr(tracked.running_mean)[None, :, None, None]
    rv = arr(tracked.running_var)[None, :, None, None]
    np.testing.assert_allclose(arr(tracked(mg.tensor(x))), (x - rm) / np.sqrt(rv + 1e-5),
                               rtol=1e-4, atol=1e-4)


def test_norm_errors():
    with pytest.raises(ValueError, match=r"GroupNorm: num_channels \(6\) must be divisible"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="GroupNorm: input has 4 channels but num_channels is 6"):
        nn.GroupNorm(3, 6)(mg.randn(2, 4, 3, 3))
    with pytest.raises(ValueError, match=r"LayerNorm: input shape \(2, 5\) does not end with "
                                         r"normalized_shape \(4,\)"):
        nn.LayerNorm(4)(mg.randn(2, 5))


# --------------------------------------------------------------------------- embedding, dropout
def test_embedding_lookup_and_padding_idx():
    emb = nn.Embedding(10, 3, padding_idx=-1)
    assert emb.padding_idx == 9
    np.testing.assert_array_equal(arr(emb.weight)[9], np.zeros(3))
    idx = mg.tensor([[1, 9], [4, 4]])
    out = emb(idx)
    np.testing.assert_array_equal(arr(out), arr(emb.weight)[[[1, 9], [4, 4]]])
    out.sum().backward()
    grad = emb.weight.grad.numpy()
    np.testing.assert_array_equal(grad[9], np.zeros(3))  # padding row gets no gradient
    np.testing.assert_array_equal(grad[4], 2 * np.ones(3))
    frozen = nn.Embedding.from_pretrained(mg.eye(4))
    assert not frozen.weight.requires_grad
    np.testing.assert_array_equal(arr(frozen(mg.tensor([2]))), [[0, 0, 1, 0]])
    with pytest.raises(ValueError, match="padding_idx"):
        nn.Embedding(3, 2, padding_idx=5)


def test_dropout_train_and_eval():
    drop = nn.Dropout(0.25)
    x = mg.ones(200, 100)
    y = arr(drop(x))
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.02
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match="Dropout: p must be in"):
        nn.Dropout(1.5)


# --------------------------------------------------------------------------- activations
def test_activation_modules_match_functional(rng):
    x = mg.tensor(rng.standard_normal((3, 4)).astype(np.float32) * 3)
    pairs = [(nn.ReLU(), F.relu(x)), (nn.LeakyReLU(0.2), F.leaky_relu(x, 0.2)),
             (nn.ELU(0.5), F.elu(x, 0.5)), (nn.GELU(), F.gelu(x)),
             (nn.GELU("tanh"), F.gelu(x, approximate="tanh")), (nn.SiLU(), F.silu(x)),
             (nn.Sigmoid(), F.sigmoid(x)), (nn.Tanh(), F.tanh(x)),
             (nn.Softplus(2.0), F.softplus(x, 2.0)), (nn.Softmax(dim=1), F.softmax(x, 1)),
             (nn.LogSoftmax(dim=0), F.log_softmax(x, 0))]
    for module, ref in pairs:
        np.testing.assert_allclose(arr(module(x)), arr(ref), rtol=1e-6, atol=1e-6,
                                   err_msg=repr(module))
    big = mg.tensor([30.0, -1.0])
    np.testing.assert_allclose(arr(nn.Softplus(threshold=20)(big)),
                               [30.0, np.log1p(np.exp(-1.0))], rtol=1e-6)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        s = nn.Softmax()(x)  # legacy rule: dim=1 for 2-d input
    np.testing.assert_allclose(arr(s).sum(axis=1), np.ones(3), rtol=1e-6)
    assert repr(nn.ReLU(inplace=True)) == "ReLU(inplace=True)"


# --------------------------------------------------------------------------- loss modules
def test_loss_modules_match_functional(rng):
    x = mg.tensor(rng.standard_normal((4, 3)).astype(np.float32))
    t = mg.tensor(rng.random((4, 3)).astype(np.float32))
    labels = mg.tensor([0, 2, 1, 2])
    cases = [(nn.MSELoss(), F.mse_loss(x, t)), (nn.L1Loss(reduction="sum"),
                                                F.l1_loss(x, t, reduction="sum")),
             (nn.BCEWithLogitsLoss(), F.binary_cross_entropy_with_logits(x, t)),
             (nn.BCELoss(), F.binary_cross_entropy(F.sigmoid(x), t))]
    for module, ref in cases:
        arg = F.sigmoid(x) if isinstance(module, nn.BCELoss) else x
        np.testing.assert_allclose(arr(module(arg, t)), arr(ref), rtol=1e-6)
    np.testing.assert_allclose(arr(nn.CrossEntropyLoss()(x, labels)),
                               arr(F.cross_entropy(x, labels)), rtol=1e-6)
    np.testing.assert_allclose(arr(nn.NLLLoss()(F.log_softmax(x, 1), labels)),
                               arr(F.cross_entropy(x, labels)), rtol=1e-6)
    logp = F.log_softmax(x, 1)
    q = F.softmax(mg.tensor(t.numpy()), 1)
    np.testing.assert_allclose(arr(nn.KLDivLoss(reduction="batchmean")(logp, q)),
                               arr(F.kl_div(logp, q, reduction="batchmean")), rtol=1e-6)
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")


# --------------------------------------------------------------------------- recurrent
def numpy_lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    gates = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = np.split(gates, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def test_lstm_cell_matches_numpy_gates(rng):
    cell = nn.LSTMCell(3, 5)
    assert cell.weight_ih.shape == (20, 3) and cell.weight_hh.shape == (20, 5)
    assert cell.bias_ih.shape == (20,) and cell.bias_hh.shape == (20,)
    x, h, c = (rng.standard_normal(s).astype(np.float32) for s in [(4, 3), (4, 5), (4, 5)])
    h1, c1 = cell(mg.tensor(x), (mg.tensor(h), mg.tensor(c)))
    rh, rc = numpy_lstm_cell(x, h, c, *(arr(p) for p in (cell.weight_ih, cell.weight_hh,
                                                         cell.bias_ih, cell.bias_hh)))
    np.testing.assert_allclose(arr(h1), rh, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arr(c1), rc, rtol=1e-5, atol=1e-6)
    h0, c0 = cell(mg.tensor(x[0]))  # unbatched, zero state
    rh, rc = numpy_lstm_cell(x[0], np.zeros(5), np.zeros(5), *(arr(p) for p in cell.parameters()))
    np.testing.assert_allclose(arr(h0), rh, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"LSTMCell: input has 4 features but input_size is 3"):
        cell(mg.randn(2, 4))
    with pytest.raises(ValueError, match=r"LSTMCell: c must have shape \(4, 5\)"):
        cell(mg.tensor(x), (mg.tensor(h), mg.zeros(4, 6)))


def lstm_by_cells(lstm, x, h0, c0):
    """Reference LSTM: loop an LSTMCell-equivalent NumPy step per layer and direction."""
    d = 2 if lstm.bidirectional else 1
    seq = x
    hn, cn = [], []
    for layer in range(lstm.num_layers):
        outs = []
        for k, suffix in enumerate(["", "_reverse"][:d]):
            ws = [arr(getattr(lstm, f"{n}_l{layer}{suffix}"))
                  for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            h, c = h0[layer * d + k], c0[layer * d + k]
            order = range(len(seq)) if k == 0 else reversed(range(len(seq)))
            hs = {}
            for t in order:
                h, c = numpy_lstm_cell(seq[t], h, c, *ws)
                hs[t] = h
            outs.append(np.stack([hs[t] for t in range(len(seq))]))
            hn.append(h)
            cn.append(c)
        seq = np.concatenate(outs, axis=-1)
    return seq, np.stack(hn), np.stack(cn)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_matches_stepwise_reference(bidirectional, rng):
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=bidirectional)
    d = 2 if bidirectional else 1
    assert lstm.weight_ih_l1.shape == (16, 4 * d)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)  # (L, N, F)
    h0 = rng.standard_normal((2 * d, 2, 4)).astype(np.float32)
    c0 = rng.standard_normal((2 * d, 2, 4)).astype(np.float32)
    out, (hn, cn) = lstm(mg.tensor(x), (mg.tensor(h0), mg.tensor(c0)))
    ref_out, ref_h, ref_c = lstm_by_cells(lstm, x, h0, c0)
    assert out.shape == (5, 2, 4 * d) and hn.shape == (2 * d, 2, 4)
    np.testing.assert_allclose(arr(out), ref_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(arr(hn), ref_h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(arr(cn), ref_c, rtol=1e-5, atol=1e-5)


def test_lstm_batch_first_unbatched_and_errors(rng):
    lstm = nn.LSTM(3, 4)
    x = mg.tensor(rng.standard_normal((5, 2, 3)).astype(np.float32))
    out, (hn, cn) = lstm(x)
    lstm.batch_first = True
    out_bf, (hn_bf, _) = lstm(x.transpose(0, 1))
    np.testing.assert_allclose(arr(out_bf), arr(out.transpose(0, 1)), rtol=1e-6)
    np.testing.assert_allclose(arr(hn_bf), arr(hn), rtol=1e-6)
    lstm.batch_first = False
    out1, (h1, _) = lstm(x[:, 0])
    assert out1.shape == (5, 4) and h1.shape == (1, 4)
    np.testing.assert_allclose(arr(out1), arr(out[:, 0]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(arr(out[-1]), arr(hn[0]), rtol=1e-6)
    with pytest.raises(ValueError, match="LSTM: input has 2 features but input_size is 3"):
        lstm(mg.randn(5, 2, 2))
    with pytest.raises(ValueError, match=r"LSTM: h_0 must have shape \(1, 2, 4\)"):
        lstm(x, (mg.zeros(2, 2, 4), mg.zeros(1, 2, 4)))


def test_lstm_init_range_and_dropout_between_layers():
    lstm = nn.LSTM(3, 16, num_layers=2, dropout=0.5)
    for p in lstm.parameters():
        assert np.abs(arr(p)).max() <= 0.25
    x = mg.randn(4, 2, 3)
    lstm.eval()
    a, _ = lstm(x)
    b, _ = lstm(x)
    np.testing.assert_array_equal(arr(a), arr(b))
    lstm.train()
    c, _ = lstm(x)
    assert not np.allclose(arr(a), arr(c))


@pytest.mark.equation("AR-3")
def test_lstm_cell_and_lstm_gradients_float64(rng):
    """Eq. AR-3: LSTM cell (and unrolled LSTM) gradients match finite differences."""
    check_module_gradients(nn.LSTMCell(3, 2), rng.standard_normal((2, 3)),
                           flatten=lambda out: out)
    lstm = nn.LSTM(2, 2, num_layers=2, bidirectional=True)
    check_module_gradients(lstm, rng.standard_normal((3, 2, 2)),
                           flatten=lambda out: (out[0], out[1][0], out[1][1]))


# --------------------------------------------------------------------------- attention
def numpy_mha(mha, q, k, v, mask=None):
    """Reference multi-head attention on (N, L, E) arrays; ``mask`` additive (N|1, h|1, L, S)."""
    sd = {name: arr(t) for name, t in mha.state_dict().items()}
    E, h = mha.embed_dim, mha.num_heads
    d = E // h
    w, b = sd["in_proj_weight"], sd["in_proj_bias"]

    def split(x, rows):
        y = x @ w[rows].T + b[rows]
        return y.reshape(y.shape[0], y.shape[1], h, d).transpose(0, 2, 1, 3)

    Q, K, V = split(q, slice(0, E)), split(k, slice(E, 2 * E)), split(v, slice(2 * E, 3 * E))
    scores = Q @ K.transpose(0, 1, 3, 2) / np.sqrt(d)
    if mask is not None:
        scores = scores + mask
    P = softmax(scores)
    out = (P @ V).transpose(0, 2, 1, 3).reshape(q.shape[0], q.shape[1], E)
    return out @ sd["out_proj.weight"].T + sd["out_proj.bias"], P


def test_mha_matches_numpy_reference(rng):
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    assert mha.in_proj_weight.shape == (24, 8) and mha.in_proj_bias.shape == (24,)
    assert list(mha.state_dict()) == ["in_proj_weight", "in_proj_bias", "out_proj.weight",
                                      "out_proj.bias"]
    mha.in_proj_bias.data[...] = rng.standard_normal(24)
    q = rng.standard_normal((3, 4, 8)).astype(np.float32)
    kv = rng.standard_normal((3, 6, 8)).astype(np.float32)
    out, weights = mha(mg.tensor(q), mg.tensor(kv), mg.tensor(kv))
    ref, P = numpy_mha(mha, q, kv, kv)
    np.testing.assert_allclose(arr(out), ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(arr(weights), P.mean(axis=1), rtol=1e-4, atol=1e-6)
    _, per_head = mha(mg.tensor(q), mg.tensor(kv), mg.tensor(kv), average_attn_weights=False)
    np.testing.assert_allclose(arr(per_head), P, rtol=1e-4, atol=1e-6)
    fast, none = mha(mg.tensor(q), mg.tensor(kv), mg.tensor(kv), need_weights=False)
    assert none is None
    np.testing.assert_allclose(arr(fast), ref, rtol=1e-4, atol=1e-5)


def test_mha_masks_follow_pytorch_conventions(rng):
    mha = nn.MultiheadAttention(4, 2)  # (L, N, E) layout
    x = rng.standard_normal((5, 2, 4)).astype(np.float32)
    xb = x.transpose(1, 0, 2)
    pad = np.array([[False] * 5, [False, False, False, True, True]])  # True = ignore key
    causal = np.triu(np.ones((5, 5), dtype=bool), 1)  # True = not allowed
    mask = np.where(causal, -np.inf, 0.0)[None, None] + np.where(pad, -np.inf, 0.0)[:, None,
                                                                                       None]
    ref, P = numpy_mha(mha, xb, xb, xb, mask)
    for need_weights in (True, False):
        out, w = mha(mg.tensor(x), mg.tensor(x), mg.tensor(x), key_padding_mask=mg.tensor(pad),
                     attn_mask=mg.tensor(causal), need_weights=need_weights)
        np.testing.assert_allclose(arr(out).transpose(1, 0, 2), ref, rtol=1e-4, atol=1e-5)
        out2, _ = mha(mg.tensor(x), mg.tensor(x), mg.tensor(x), key_padding_mask=pad,
                      is_causal=True, need_weights=need_weights)
        np.testing.assert_allclose(arr(out2), arr(out), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(arr(w if w is not None else mha(
        mg.tensor(x), mg.tensor(x), mg.tensor(x), key_padding_mask=pad,
        attn_mask=causal)[1]), P.mean(axis=1), rtol=1e-4, atol=1e-6)
    # float masks are added; a per-head (N*h, L, S) mask is accepted
    additive = rng.standard_normal((4, 5, 5)).astype(np.float32)
    out, _ = mha(mg.tensor(x), mg.tensor(x), mg.tensor(x), attn_mask=mg.tensor(additive))
    ref, _ = numpy_mha(mha, xb, xb, xb, additive.reshape(2, 2, 5, 5))
    np.testing.assert_allclose(arr(out).transpose(1, 0, 2), ref, rtol=1e-4, atol=1e-5)


def test_mha_unbatched_kdim_vdim_and_errors(rng):
    mha = nn.MultiheadAttention(4, 2, kdim=3, vdim=5, bias=False)
    assert mha.in_proj_weight is None and mha.k_proj_weight.shape == (4, 3)
    assert [n for n, _ in mha.named_parameters()] == ["q_proj_weight", "k_proj_weight",
                                                      "v_proj_weight", "out_proj.weight"]
    q, k, v = mg.randn(2, 4), mg.randn(6, 3), mg.randn(6, 5)
    out, w = mha(q, k, v)
    assert out.shape == (2, 4) and w.shape == (2, 6)
    np.testing.assert_allclose(arr(w).sum(-1), np.ones(2), rtol=1e-5)
    with pytest.raises(ValueError, match=r"MultiheadAttention: key has 4 features but "
                                         r"expected 3"):
        mha(q, mg.randn(6, 4), v)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        nn.MultiheadAttention(5, 2)
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(2, 6\)"):
        nn.MultiheadAttention(4, 2)(mg.randn(3, 2, 4), mg.randn(6, 2, 4), mg.randn(6, 2, 4),
                                    key_padding_mask=np.zeros((2, 5), dtype=bool))


def test_mha_gradients_float64(rng):
    mha = nn.MultiheadAttention(4, 2, batch_first=True)
    x = rng.standard_normal((2, 3, 4))
    check_module_gradients(mha, x, x[:, ::-1].copy(), x + 1.0,
                           flatten=lambda out: out)
    mha = nn.MultiheadAttention(4, 2, batch_first=True).double()
    names = [n for n, _ in mha.named_parameters()]

    def fast(q, *params):  # the fused scaled_dot_product_attention path
        out, _ = functional_call(mha, dict(zip(names, params)), (q, q, q),
                                 {"need_weights": False, "is_causal": True})
        return out

    gradcheck(fast, [mg.tensor(x, requires_grad=True)]
              + [mg.tensor(p.data, requires_grad=True) for p in mha.parameters()])


def test_conv_module_gradients_float64(rng):
    check_module_gradients(nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2),
                           rng.standard_normal((2, 2, 5, 5)))
    check_module_gradients(nn.Conv2d(2, 3, 2, padding="same", padding_mode="reflect"),
                           rng.standard_normal((1, 2, 4, 4)))
    check_module_gradients(nn.ConvTranspose2d(2, 4, 3, stride=2, padding=1, output_padding=1,
                                              groups=2, dilation=1),
                           rng.standard_normal((2, 2, 3, 3)))


def test_norm_module_gradients_float64(rng):
    check_module_gradients(nn.BatchNorm2d(3), rng.standard_normal((4, 3, 2, 2)))
    check_module_gradients(nn.GroupNorm(2, 4), rng.standard_normal((2, 4, 3, 3)))
    check_module_gradients(nn.LayerNorm(5), rng.standard_normal((3, 5)))
