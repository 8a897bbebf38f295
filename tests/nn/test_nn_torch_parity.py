"""Same weights, same outputs as PyTorch's layers (skipped where PyTorch is absent).

Each test builds a minigen layer and the PyTorch layer with the same arguments,
copies the weights through ``state_dict`` (so the keys must match exactly, in
both directions) and compares outputs — and for the recurrent and attention
layers the parameter gradients too — in float64.
"""
import numpy as np
import pytest

import minigen as mg
import minigen.nn as nn

torch = pytest.importorskip("torch")
tnn = torch.nn


def arr(t):
    return t.detach().numpy()


def copy_weights(ours, theirs):
    """minigen -> PyTorch through state_dict (strict), then check the reverse trip too."""
    ours.double()
    theirs.double()
    state = {k: torch.from_numpy(np.array(v.numpy())) for k, v in ours.state_dict().items()}
    theirs.load_state_dict(state, strict=True)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()}, strict=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())


def compare(ours, theirs, *inputs, rtol=1e-10, atol=1e-10, **kwargs):
    out = ours(*(mg.tensor(x) for x in inputs), **kwargs)
    ref = theirs(*(torch.from_numpy(x) for x in inputs), **kwargs)
    np.testing.assert_allclose(arr(out), ref.detach().numpy(), rtol=rtol, atol=atol)
    return out, ref


def test_linear(rng):
    ours, theirs = nn.Linear(4, 3), tnn.Linear(4, 3)
    copy_weights(ours, theirs)
    compare(ours, theirs, rng.standard_normal((2, 5, 4)))


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, stride=2, padding=1, dilation=2, groups=2),
    dict(kernel_size=(4, 3), padding="same", dilation=(1, 2)),
    dict(kernel_size=3, padding="valid", bias=False),
    dict(kernel_size=3, padding=(2, 1), padding_mode="reflect"),
    dict(kernel_size=(2, 3), padding="same", padding_mode="circular"),
    dict(kernel_size=3, stride=(1, 2), padding=1, padding_mode="replicate"),
])
def test_conv2d(kwargs, rng):
    ours, theirs = nn.Conv2d(4, 6, **kwargs), tnn.Conv2d(4, 6, **kwargs)
    assert repr(ours) == repr(theirs)
    copy_weights(ours, theirs)
    compare(ours, theirs, rng.standard_normal((2, 4, 9, 8)))


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, stride=2, padding=1, output_padding=1, groups=2),
    dict(kernel_size=(4, 3), stride=(2, 3), dilation=2, bias=False),
])
def test_conv_transpose2d(kwargs, rng):
    ours, theirs = nn.ConvTranspose2d(4, 6, **kwargs), tnn.ConvTranspose2d(4, 6, **kwargs)
    assert repr(ours) == repr(theirs)
    copy_weights(ours, theirs)
    compare(ours, theirs, rng.standard_normal((2, 4, 5, 4)))
    x = rng.standard_normal((1, 4, 5, 4))
    size = theirs(torch.from_numpy(x)).shape[2:]
    largest = tuple(n - op + st - 1 for n, op, st in zip(size, ours.output_padding, ours.stride))
    out = ours(mg.tensor(x), output_size=largest)
    ref = theirs(torch.from_numpy(x), output_size=largest)
    np.testing.assert_allclose(arr(out), ref.detach().numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm2d_train_eval_and_running_stats(momentum, rng):
    ours = nn.BatchNorm2d(3, momentum=momentum)
    theirs = tnn.BatchNorm2d(3, momentum=momentum)
    assert repr(ours) == repr(theirs)
    ours.weight.data[...] = rng.standard_normal(3)
    copy_weights(ours, theirs)
    for step in range(3):
        compare(ours, theirs, rng.standard_normal((4, 3, 5, 5)) * 2 + step)
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        np.testing.assert_allclose(getattr(ours, name).numpy(),
                                   getattr(theirs, name).numpy(), rtol=1e-10, err_msg=name)
    ours.eval(), theirs.eval()
    compare(ours, theirs, rng.standard_normal((2, 3, 4, 4)))


def test_batchnorm1d(rng):
    ours, theirs = nn.BatchNorm1d(3), tnn.BatchNorm1d(3)
    copy_weights(ours, theirs)
    compare(ours, theirs, rng.standard_normal((8, 3)))
    compare(ours, theirs, rng.standard_normal((4, 3, 6)))
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-10)


def test_group_layer_instance_norm(rng):
    x = rng.standard_normal((2, 6, 4, 5)) * 3 + 1
    for ours, theirs in [(nn.GroupNorm(3, 6), tnn.GroupNorm(3, 6)),
                         (nn.LayerNorm((4, 5)), tnn.LayerNorm((4, 5))),
                         (nn.InstanceNorm2d(6), tnn.InstanceNorm2d(6))]:
        assert repr(ours) == repr(theirs)
        for p in ours.parameters():
            p.data[...] = rng.standard_normal(p.shape)
        copy_weights(ours, theirs)
        compare(ours, theirs, x)
    ours = nn.InstanceNorm2d(6, affine=True, track_running_stats=True)
    theirs = tnn.InstanceNorm2d(6, affine=True, track_running_stats=True)
    copy_weights(ours, theirs)
    compare(ours, theirs, x)
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-10)
    ours.eval(), theirs.eval()
    compare(ours, theirs, x)


def test_embedding_and_activations(rng):
    ours, theirs = nn.Embedding(7, 3, padding_idx=2), tnn.Embedding(7, 3, padding_idx=2)
    copy_weights(ours, theirs)
    idx = np.array([[0, 2, 6], [1, 1, 3]])
    np.testing.assert_allclose(arr(ours(mg.tensor(idx))),
                               theirs(torch.from_numpy(idx)).detach().numpy())
    x = rng.standard_normal((3, 4)) * 10
    for name, args in [("ReLU", ()), ("LeakyReLU", (0.2,)), ("ELU", (0.7,)), ("GELU", ()),
                       ("SiLU", ()), ("Sigmoid", ()), ("Tanh", ()), ("Softplus", (2.0, 5.0)),
                       ("Softmax", (1,)), ("LogSoftmax", (0,))]:
        ours, theirs = getattr(nn, name)(*args), getattr(tnn, name)(*args)
        assert repr(ours) == repr(theirs)
        compare(ours, theirs, x, rtol=1e-7, atol=1e-9)


def test_lstm_cell(rng):
    ours, theirs = nn.LSTMCell(3, 4), tnn.LSTMCell(3, 4)
    copy_weights(ours, theirs)
    x, h, c = rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    h1, c1 = ours(mg.tensor(x), (mg.tensor(h), mg.tensor(c)))
    th, tc = theirs(torch.from_numpy(x), (torch.from_numpy(h), torch.from_numpy(c)))
    np.testing.assert_allclose(arr(h1), th.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(arr(c1), tc.detach().numpy(), rtol=1e-10, atol=1e-12)


def _compare_grads(ours, theirs):
    named = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), named[name].grad.numpy(), rtol=1e-8,
                                   atol=1e-10, err_msg=name)


@pytest.mark.parametrize("kwargs", [dict(num_layers=2),
                                    dict(num_layers=2, batch_first=True, bidirectional=True)])
def test_lstm_outputs_and_gradients(kwargs, rng):
    ours, theirs = nn.LSTM(3, 4, **kwargs), tnn.LSTM(3, 4, **kwargs)
    assert repr(ours) == repr(theirs)
    copy_weights(ours, theirs)
    d = 2 if kwargs.get("bidirectional") else 1
    x = rng.standard_normal((2, 5, 3) if kwargs.get("batch_first") else (5, 2, 3))  # N=2, L=5
    h0, c0 = rng.standard_normal((2 * d, 2, 4)), rng.standard_normal((2 * d, 2, 4))
    out, (h, c) = ours(mg.tensor(x), (mg.tensor(h0), mg.tensor(c0)))
    tout, (th, tc) = theirs(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
    for a, b in [(out, tout), (h, th), (c, tc)]:
        np.testing.assert_allclose(arr(a), b.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.standard_normal(out.shape)
    ((out * mg.tensor(g)).sum() + h.sum()).backward()
    ((tout * torch.from_numpy(g)).sum() + th.sum()).backward()
    _compare_grads(ours, theirs)


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_with_masks_and_gradients(need_weights, rng):
    ours, theirs = nn.MultiheadAttention(8, 2), tnn.MultiheadAttention(8, 2)
    ours.in_proj_bias.data[...] = rng.standard_normal(24) * 0.1
    copy_weights(ours, theirs)
    q, k = rng.standard_normal((4, 3, 8)), rng.standard_normal((6, 3, 8))
    v = rng.standard_normal((6, 3, 8))
    pad = np.zeros((3, 6), dtype=bool)
    pad[1, 4:] = True
    causal = np.triu(np.ones((4, 6), dtype=bool), 1)
    out, w = ours(mg.tensor(q), mg.tensor(k), mg.tensor(v), key_padding_mask=mg.tensor(pad),
                  attn_mask=mg.tensor(causal), need_weights=need_weights)
    tout, tw = theirs(*(torch.from_numpy(t) for t in (q, k, v)),
                      key_padding_mask=torch.from_numpy(pad), attn_mask=torch.from_numpy(causal),
                      need_weights=need_weights)
    np.testing.assert_allclose(arr(out), tout.detach().numpy(), rtol=1e-9, atol=1e-11)
    if need_weights:
        np.testing.assert_allclose(arr(w), tw.detach().numpy(), rtol=1e-9, atol=1e-12)
    else:
        assert w is None and tw is None
    g = rng.standard_normal(out.shape)
    (out * mg.tensor(g)).sum().backward()
    (tout * torch.from_numpy(g)).sum().backward()
    _compare_grads(ours, theirs)


def test_multihead_attention_kdim_vdim_batch_first(rng):
    kwargs = dict(kdim=5, vdim=3, batch_first=True)
    ours, theirs = nn.MultiheadAttention(4, 2, **kwargs), tnn.MultiheadAttention(4, 2, **kwargs)
    copy_weights(ours, theirs)
    q, k, v = (rng.standard_normal(s) for s in [(2, 3, 4), (2, 5, 5), (2, 5, 3)])
    out, w = ours(mg.tensor(q), mg.tensor(k), mg.tensor(v), average_attn_weights=False)
    tout, tw = theirs(*(torch.from_numpy(t) for t in (q, k, v)), average_attn_weights=False)
    np.testing.assert_allclose(arr(out), tout.detach().numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(arr(w), tw.detach().numpy(), rtol=1e-9, atol=1e-12)


def test_sequential_state_dict_keys_match(rng):
    ours = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4, 2))
    theirs = tnn.Sequential(tnn.Conv2d(3, 4, 3), tnn.BatchNorm2d(4), tnn.ReLU(), tnn.Flatten(),
                            tnn.Linear(4, 2))
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert repr(ours) == repr(theirs)
    copy_weights(ours, theirs)
    compare(ours, theirs, rng.standard_normal((2, 3, 3, 3)))
