"""Module and Parameter: registration, traversal, modes, state dicts, devices, printing."""
import copy
from collections import OrderedDict

import numpy as np
import pytest

import minigen as mg
import minigen.nn as nn
from minigen.nn.utils import (functional_call, parameters_to_vector,
                              vector_to_parameters)


def arr(t):
    return t.detach().numpy()


def small_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4, 2))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(mg.ones(3))
        self.register_buffer("count", mg.zeros(()))
        self.register_buffer("cache", mg.zeros(2), persistent=False)
        self.inner = nn.Linear(3, 3)
        self.plain = 5

    def forward(self, x):
        return self.inner(x) * self.scale


# --------------------------------------------------------------------------- Parameter
def test_parameter_is_a_tensor_that_requires_grad_and_shares_data():
    t = mg.randn(2, 3)
    p = nn.Parameter(t)
    assert isinstance(p, mg.Tensor) and p.requires_grad and p.is_leaf
    assert p.data is t.data
    assert nn.Parameter([1.0, 2.0]).dtype == np.float32
    assert nn.Parameter().shape == (0,)
    assert not nn.Parameter(t, requires_grad=False).requires_grad
    assert repr(nn.Parameter(mg.ones(2))).startswith("Parameter containing:\ntensor([1., 1.]")
    y = p * 2  # results of ops are plain tensors, not parameters
    assert type(y) is mg.Tensor


# --------------------------------------------------------------------------- registration
def test_setattr_registers_parameters_buffers_and_modules():
    b = Block()
    assert list(b._parameters) == ["scale"]
    assert list(b._buffers) == ["count", "cache"]
    assert list(b._modules) == ["inner"]
    assert "plain" in b.__dict__ and b.plain == 5
    assert [n for n, _ in b.named_parameters()] == ["scale", "inner.weight", "inner.bias"]
    assert [n for n, _ in b.named_buffers()] == ["count", "cache"]
    assert list(b.state_dict()) == ["scale", "count", "inner.weight", "inner.bias"]
    # assigning a tensor to a buffer name replaces the buffer
    b.count = mg.ones(())
    assert b._buffers["count"].item() == 1.0
    # a new Parameter under an existing plain attribute name moves it into the table
    b.plain = nn.Parameter(mg.zeros(1))
    assert "plain" in b._parameters and "plain" not in b.__dict__
    del b.plain
    assert "plain" not in b._parameters


def test_registration_errors_are_clear():
    b = Block()
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'scale'"):
        b.scale = mg.ones(3)
    with pytest.raises(TypeError, match="buffer 'count'"):
        b.count = 3.0
    with pytest.raises(TypeError, match="child module 'inner'"):
        b.inner = 1
    with pytest.raises(KeyError, match="contain"):
        b.register_buffer("a.b", mg.zeros(1))
    with pytest.raises(KeyError, match="already exists"):
        b.register_buffer("plain", mg.zeros(1))
    with pytest.raises(TypeError, match="Parameter or None"):
        b.register_parameter("w", mg.zeros(1))
    with pytest.raises(AttributeError, match="'Block' object has no attribute 'nope'"):
        b.nope

    class Forgot(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(mg.ones(1))

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Forgot()
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(mg.ones(1))


def test_none_parameters_are_declared_but_skipped():
    lin = nn.Linear(3, 2, bias=False)
    assert lin.bias is None and "bias" in lin._parameters
    assert [n for n, _ in lin.named_parameters()] == ["weight"]
    assert list(lin.state_dict()) == ["weight"]


def test_named_parameters_keys_match_pytorch_names():
    net = small_net()
    # The keys PyTorch gives the same Sequential(Conv2d, BatchNorm2d, ReLU, Flatten, Linear).
    assert [n for n, _ in net.named_parameters()] == [
        "0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"]
    assert [n for n, _ in net.named_buffers()] == [
        "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert list(net.state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
        "1.num_batches_tracked", "4.weight", "4.bias"]
    assert [n for n, _ in net.named_modules()] == ["", "0", "1", "2", "3", "4"]
    assert [n for n, _ in net.named_children()] == ["0", "1", "2", "3", "4"]
    assert net.num_parameters() == 4 * 3 * 9 + 4 + 4 + 4 + 2 * 4 + 2
    assert net.get_submodule("1") is net[1]
    with pytest.raises(AttributeError, match="no submodule '9'"):
        net.get_submodule("9")


def test_shared_parameters_and_modules_are_listed_once():
    lin = nn.Linear(2, 2)
    net = nn.Sequential(lin, nn.ReLU(), lin)
    assert len(list(net.parameters())) == 2
    assert len(list(net.modules())) == 3
    assert list(net.state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_train_eval_propagate_to_every_descendant():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.Dropout(), nn.BatchNorm1d(2)))
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(ValueError, match="bool"):
        net.train("no")


def test_apply_requires_grad_and_zero_grad():
    net = small_net()
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Conv2d", "BatchNorm2d", "ReLU", "Flatten", "Linear", "Sequential"]
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())
    assert net.num_parameters(trainable_only=True) == 0
    net.requires_grad_()
    out = net(mg.randn(2, 3, 3, 3)).sum()
    out.backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad(set_to_none=False)
    assert all(np.all(p.grad.numpy() == 0) for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_forward_hooks():
    lin = nn.Linear(2, 2)
    calls = []
    h1 = lin.register_forward_pre_hook(lambda m, args: (args[0] * 0,))
    h2 = lin.register_forward_hook(lambda m, args, out: calls.append(out.shape))
    y = lin(mg.randn(3, 2))
    np.testing.assert_allclose(y.detach().numpy(), np.broadcast_to(lin.bias.detach().numpy(),
                                                                   (3, 2)))
    assert calls == [(3, 2)]
    h1.remove()
    h2.remove()
    lin(mg.randn(1, 2))
    assert calls == [(3, 2)]


# --------------------------------------------------------------------------- state dicts
def test_state_dict_values_are_detached_and_share_memory():
    net = small_net()
    sd = net.state_dict()
    assert isinstance(sd, OrderedDict)
    assert all(not v.requires_grad and type(v) is mg.Tensor for v in sd.values())
    assert sd["0.weight"].data is net[0].weight.data
    assert sd["1.num_batches_tracked"].dtype == np.int64
    assert net.state_dict(keep_vars=True)["0.weight"] is net[0].weight


def test_state_dict_round_trip_copies_in_place():
    src, dst = small_net(), small_net()
    src.train()
    src(mg.randn(4, 3, 3, 3))  # moves the running statistics
    ids = {n: (id(p), id(p.data)) for n, p in dst.named_parameters()}
    result = dst.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=k)
    assert dst[1].num_batches_tracked.item() == 1
    assert ids == {n: (id(p), id(p.data)) for n, p in dst.named_parameters()}
    x = mg.randn(2, 3, 3, 3)
    src.eval(), dst.eval()
    np.testing.assert_array_equal(arr(src(x)), arr(dst(x)))
    # plain NumPy arrays (e.g. from an .npz checkpoint) are accepted and cast
    arrays = {k: v.numpy().astype(np.float64) if v.dtype.kind == "f" else v.numpy()
              for k, v in src.state_dict().items()}
    dst.load_state_dict(arrays)
    assert dst[0].weight.dtype == np.float32


def test_load_state_dict_strict_errors_list_every_problem_and_copy_nothing():
    net = small_net()
    before = arr(net[0].weight).copy()
    sd = small_net().state_dict()
    del sd["0.bias"]
    sd["extra.weight"] = mg.zeros(1)
    sd["4.weight"] = mg.zeros(3, 4)
    sd["0.weight"] = mg.ones(4, 3, 3, 3)
    with pytest.raises(RuntimeError) as info:
        net.load_state_dict(sd)
    msg = str(info.value)
    assert "Error(s) in loading state_dict for Sequential" in msg
    assert 'Missing key(s) in state_dict: "0.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in msg
    assert ("size mismatch for 4.weight: copying a value with shape (3, 4) from the "
            "state_dict, the shape in the current model is (2, 4)") in msg
    np.testing.assert_array_equal(arr(net[0].weight), before)  # untouched
    # strict=False: key problems are reported, shape problems still raise
    del sd["4.weight"]
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["0.bias", "4.weight"]
    assert result.unexpected_keys == ["extra.weight"]
    np.testing.assert_array_equal(arr(net[0].weight), np.ones((4, 3, 3, 3)))
    sd["4.weight"] = mg.zeros(3, 4)
    with pytest.raises(RuntimeError, match="size mismatch for 4.weight"):
        net.load_state_dict(sd, strict=False)


def test_deepcopy_gives_independent_parameters():
    net = small_net()
    twin = copy.deepcopy(net)
    assert isinstance(twin[0].weight, nn.Parameter)
    assert twin[0].weight is not net[0].weight
    twin[0].weight.data[...] = 0
    assert np.any(arr(net[0].weight) != 0)
    assert list(twin.state_dict()) == list(net.state_dict())


# --------------------------------------------------------------------------- devices, dtypes
def test_double_and_float_keep_parameter_identity():
    net = small_net()
    params = list(net.parameters())
    net(mg.randn(2, 3, 3, 3)).sum().backward()
    assert net.double() is net
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in params)
    assert net[1].running_mean.dtype == np.float64
    assert net[1].num_batches_tracked.dtype == np.int64  # integer buffers keep their dtype
    assert net(mg.randn(2, 3, 3, 3, dtype=np.float64)).dtype == np.float64
    net.float()
    assert all(p.dtype == np.float32 for p in params)
    net.to(np.float64)
    assert params[0].dtype == np.float64
    net.to("cpu", np.float32)
    assert params[0].dtype == np.float32 and params[0].device == "cpu"
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    with pytest.raises(TypeError, match="floating"):
        net.to(np.int64)
    with pytest.raises(ValueError, match="device"):
        net.to("tpu")


def test_layers_accept_dtype_and_device_arguments():
    lin = nn.Linear(3, 2, dtype=np.float64, device="cpu")
    assert lin.weight.dtype == np.float64 and lin.bias.dtype == np.float64


@pytest.mark.gpu
def test_cuda_moves_parameters_in_place():
    net = small_net()
    params = list(net.parameters())
    net.cuda()
    assert all(p.device == "cuda" for p in net.parameters())
    assert [id(p) for p in net.parameters()] == [id(p) for p in params]
    y = net(mg.randn(2, 3, 3, 3, device="cuda"))
    assert y.device == "cuda"
    net.cpu()
    assert net[1].running_var.device == "cpu"


# --------------------------------------------------------------------------- printing
def test_repr_matches_pytorch_layout():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                        nn.LeakyReLU(0.2), nn.Sequential(nn.Flatten(), nn.Linear(8, 2)))
    assert repr(net) == (
        "Sequential(\n"
        "  (0): Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)\n"
        "  (1): BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, bias=True, "
        "track_running_stats=True)\n"
        "  (2): LeakyReLU(negative_slope=0.2)\n"
        "  (3): Sequential(\n"
        "    (0): Flatten(start_dim=1, end_dim=-1)\n"
        "    (1): Linear(in_features=8, out_features=2, bias=True)\n"
        "  )\n"
        ")")
    assert repr(nn.ReLU()) == "ReLU()"
    assert repr(nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1, groups=2)) == (
        "ConvTranspose2d(4, 2, kernel_size=(4, 4), stride=(2, 2), padding=(1, 1), groups=2)")
    assert repr(nn.Conv2d(1, 1, 3, padding="same", padding_mode="reflect")) == (
        "Conv2d(1, 1, kernel_size=(3, 3), stride=(1, 1), padding=same, padding_mode=reflect)")
    assert repr(nn.Dropout(0.1)) == "Dropout(p=0.1, inplace=False)"
    assert repr(nn.Upsample(scale_factor=2)) == "Upsample(scale_factor=2.0, mode='nearest')"
    assert repr(nn.LayerNorm(4)) == "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)"
    assert repr(nn.GroupNorm(2, 4)) == "GroupNorm(2, 4, eps=1e-05, affine=True, bias=True)"
    assert repr(nn.Embedding(10, 3, padding_idx=0)) == "Embedding(10, 3, padding_idx=0)"
    assert repr(nn.LSTM(3, 4, batch_first=True)) == "LSTM(3, 4, batch_first=True)"
    assert repr(nn.LSTMCell(3, 4)) == "LSTMCell(3, 4)"
    assert repr(nn.MultiheadAttention(4, 2)) == (
        "MultiheadAttention(\n  (out_proj): Linear(in_features=4, out_features=4, bias=True)\n)")


# --------------------------------------------------------------------------- containers
def test_sequential_indexing_slicing_and_editing():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    seq = nn.Sequential(a, b, c)
    assert len(seq) == 3 and seq[0] is a and seq[-1] is c
    assert list(seq) == [a, b, c]
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and list(head) == [a, b]
    x = mg.randn(4, 2)
    np.testing.assert_allclose(seq(x).detach().numpy(), c(b(a(x))).detach().numpy())
    seq.append(nn.Sigmoid())
    assert len(seq) == 4 and list(seq._modules) == ["0", "1", "2", "3"]
    del seq[1]
    assert list(seq._modules) == ["0", "1", "2"] and seq[1] is c
    seq.insert(1, b)
    assert seq[1] is b and len(seq) == 4
    seq[3] = nn.Tanh()
    assert isinstance(seq[3], nn.Tanh)
    with pytest.raises(IndexError, match="out of range"):
        seq[7]
    named = nn.Sequential(OrderedDict([("enc", a), ("act", b)]))
    assert list(named.state_dict()) == ["enc.weight", "enc.bias"]
    assert named[:1]._modules.keys() == {"enc"}


def test_module_list_and_dict():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(layers) == 3
    assert [n for n, _ in layers.named_parameters()][:2] == ["0.weight", "0.bias"]
    layers.append(nn.ReLU())
    layers += [nn.Tanh()]
    assert len(layers) == 5 and isinstance(layers[-1], nn.Tanh)
    assert isinstance(layers[1:3], nn.ModuleList) and len(layers[1:3]) == 2
    del layers[0]
    assert list(layers._modules) == ["0", "1", "2", "3"]
    layers.insert(0, nn.Identity())
    assert isinstance(layers[0], nn.Identity) and len(layers) == 5
    with pytest.raises(NotImplementedError, match="ModuleList"):
        layers(mg.ones(1))

    heads = nn.ModuleDict({"mu": nn.Linear(2, 1), "logvar": nn.Linear(2, 1)})
    assert list(heads) == ["mu", "logvar"] and "mu" in heads and len(heads) == 2
    assert list(heads.state_dict())[0] == "mu.weight"
    heads["extra"] = nn.ReLU()
    assert list(heads.keys()) == ["mu", "logvar", "extra"]
    assert isinstance(heads.pop("extra"), nn.ReLU) and len(heads) == 2


# --------------------------------------------------------------------------- utils
def test_parameters_to_vector_and_back():
    net = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    vec = parameters_to_vector(net.parameters())
    assert vec.shape == (net.num_parameters(),)
    ids = [id(p.data) for p in net.parameters()]
    vector_to_parameters(mg.arange(vec.shape[0]).float(), net.parameters())
    assert [id(p.data) for p in net.parameters()] == ids
    np.testing.assert_array_equal(parameters_to_vector(net.parameters()).detach().numpy(),
                                  np.arange(vec.shape[0]))
    with pytest.raises(ValueError, match="hold 11 values"):
        vector_to_parameters(mg.zeros(3), net.parameters())


def test_functional_call_swaps_and_restores():
    lin = nn.Linear(2, 1)
    w = mg.zeros(1, 2)
    b = mg.ones(1)
    y = functional_call(lin, {"weight": w, "bias": b}, (mg.randn(5, 2),))
    np.testing.assert_array_equal(y.numpy(), np.ones((5, 1)))
    assert isinstance(lin.weight, nn.Parameter)
    with pytest.raises(KeyError, match="no parameter or buffer 'nope'"):
        functional_call(lin, {"nope": w}, (mg.randn(5, 2),))


def test_clip_grad_reexports_work():
    optim = pytest.importorskip("minigen.optim")
    if not hasattr(optim, "clip_grad_norm_"):
        pytest.skip("minigen.optim has no clip_grad_norm_ yet")
    lin = nn.Linear(4, 1)
    (lin(mg.randn(8, 4)) * 100).sum().backward()
    before = np.sqrt(sum((p.grad.numpy() ** 2).sum() for p in lin.parameters()))
    total = nn.utils.clip_grad_norm_(lin.parameters(), 1.0)
    assert np.isclose(float(total.item()), before, rtol=1e-5)
    after = np.sqrt(sum((p.grad.numpy() ** 2).sum() for p in lin.parameters()))
    assert after <= 1.0 + 1e-5
    nn.utils.clip_grad_value_(lin.parameters(), 0.01)
    assert all(np.abs(p.grad.numpy()).max() <= 0.01 + 1e-8 for p in lin.parameters())


def test_a_module_reports_the_device_of_its_parameters():
    assert nn.Linear(2, 2).device == "cpu"
    assert nn.ReLU().device == "cpu"             # no parameters, no buffers: the default
