"""Finite-difference gradient checks (float64) for every differentiable op.

Hypothesis draws the shapes: broadcasting pairs, size-1 dims, scalars, and
non-contiguous inputs (transposed or strided views). Ops that claim double
backward — all of them here — also pass a second-order check.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigen as mg
import minigen.nn.functional as F
from minigen.gradcheck import gradcheck, gradgradcheck

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)


def make(data, shape, low=-2.0, high=2.0, layout="contiguous", salt=0):
    """A float64 leaf with values in [low, high]; optionally a non-contiguous view.
    ``salt`` keeps two operands apart even when hypothesis draws the same seed."""
    rng = np.random.default_rng([data.draw(st.integers(0, 2 ** 16), label="seed"), salt])
    if layout == "strided" and len(shape) >= 1:
        big = rng.uniform(low, high, shape[:-1] + (2 * shape[-1],))
        array = big[..., ::2]
    elif layout == "transposed" and len(shape) >= 2:
        array = rng.uniform(low, high, shape[::-1]).T
    else:
        array = rng.uniform(low, high, shape)
    t = mg.Tensor(array, requires_grad=True)
    assert t.data.shape == tuple(shape)
    return t


def check(fn, *inputs, second_order=True):
    gradcheck(fn, list(inputs))
    if second_order:
        gradgradcheck(fn, list(inputs))


layouts = st.sampled_from(["contiguous", "strided", "transposed"])

# name -> (function, low, high): domains keep ops away from kinks and poles
UNARY = {
    "neg": (lambda x: -x, -2, 2),
    "exp": (lambda x: x.exp(), -2, 2),
    "sin": (lambda x: x.sin(), -4, 4),
    "cos": (lambda x: x.cos(), -4, 4),
    "log": (lambda x: x.log(), 0.2, 3),
    "sqrt": (lambda x: x.sqrt(), 0.2, 3),
    "abs": (lambda x: x.abs(), 0.1, 2),
    "square": (lambda x: mg.square(x), -2, 2),
    "rsqrt": (lambda x: mg.rsqrt(x), 0.3, 3),
    "pow_scalar": (lambda x: x ** 3, -2, 2),
    "rpow": (lambda x: 2.0 ** x, -2, 2),
    "clamp": (lambda x: x.clamp(-1.0, 1.0), -0.9, 0.9),
    "relu": (lambda x: F.relu(x), 0.1, 2),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2) * x, -2, 2),
    "elu": (lambda x: F.elu(x, 0.7), -2, 2),
    "gelu": (lambda x: F.gelu(x), -2, 2),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), -2, 2),
    "silu": (lambda x: F.silu(x), -2, 2),
    "sigmoid": (lambda x: F.sigmoid(x), -3, 3),
    "tanh": (lambda x: F.tanh(x), -2, 2),
    "softplus": (lambda x: F.softplus(x, beta=2.0), -2, 2),
    "erf": (lambda x: F.erf(x), -2, 2),
    "scalar_arith": (lambda x: (3.0 - x) / 2.0 + 1.0 * x - (x + 1.0) * 2.0, -2, 2),
    "rdiv": (lambda x: 1.0 / x, 0.5, 2),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data(), shape=shapes, layout=layouts)
def test_unary(name, data, shape, layout):
    fn, low, high = UNARY[name]
    check(fn, make(data, shape, low, high, layout))


BINARY = {
    "add": (lambda a, b: a + b, (-2, 2), (-2, 2)),
    "sub": (lambda a, b: a - b, (-2, 2), (-2, 2)),
    "mul": (lambda a, b: a * b, (-2, 2), (-2, 2)),
    "div": (lambda a, b: a / b, (-2, 2), (0.5, 2)),
    "pow": (lambda a, b: a ** b, (0.5, 2), (-1.5, 1.5)),
    "maximum": (lambda a, b: mg.maximum(a, b), (-2, 2), (-2, 2)),
    "minimum": (lambda a, b: mg.minimum(a, b), (-2, 2), (-2, 2)),
    "where": (lambda a, b: mg.where(a.detach() > 0, a, b), (-2, 2), (-2, 2)),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data(), pair=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=3,
                                                              max_side=4))
def test_binary_broadcasting(name, data, pair):
    fn, (la, ha), (lb, hb) = BINARY[name]
    a = make(data, pair.input_shapes[0], la, ha)
    b = make(data, pair.input_shapes[1], lb, hb, salt=1)
    assert fn(a, b).shape == pair.result_shape
    check(fn, a, b)


reduced_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4)


def _dims(data, ndim):
    return data.draw(st.one_of(
        st.none(), st.integers(-ndim, ndim - 1),
        st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)))


REDUCTIONS = {
    "sum": lambda x, d, k: x.sum(dim=d, keepdim=k),
    "mean": lambda x, d, k: x.mean(dim=d, keepdim=k),
    "var": lambda x, d, k: x.var(dim=d, keepdim=k, correction=0),
    "std": lambda x, d, k: (x.var(dim=d, keepdim=k, correction=0) + 0.5).sqrt(),
    "amax": lambda x, d, k: x.amax(dim=d, keepdim=k),
    "amin": lambda x, d, k: x.amin(dim=d, keepdim=k),
    "logsumexp": lambda x, d, k: x.logsumexp(dim=d, keepdim=k),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(data=st.data(), shape=reduced_shapes, keepdim=st.booleans(), layout=layouts)
def test_reductions(name, data, shape, keepdim, layout):
    dims = _dims(data, len(shape))
    x = make(data, shape, layout=layout)
    check(lambda t: REDUCTIONS[name](t, dims, keepdim), x)


@given(data=st.data(), shape=reduced_shapes, layout=layouts)
def test_cumsum(data, shape, layout):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    x = make(data, shape, layout=layout)
    np.testing.assert_allclose(x.cumsum(dim).detach().numpy(), np.cumsum(x.detach().numpy(), axis=dim))
    check(lambda t: t.cumsum(dim), x)


def test_numpy_style_reduction_arguments():
    x = mg.tensor(np.arange(6.0).reshape(2, 3))
    assert x.sum(axis=1, keepdims=True).shape == (2, 1)
    np.testing.assert_allclose(mg.logsumexp(x, axis=0).numpy(),
                               np.log(np.exp(np.arange(6.0).reshape(2, 3)).sum(0)), rtol=1e-6)
    np.testing.assert_allclose(F.softmax(x, axis=0).numpy().sum(0), 1.0, rtol=1e-6)
    with pytest.raises(TypeError, match="either dim= or axis="):
        x.sum(dim=0, axis=0)


@given(data=st.data(), shape=reduced_shapes)
def test_max_min_along_dim(data, shape):
    x = make(data, shape)
    dim = data.draw(st.integers(0, len(shape) - 1))
    values, indices = x.max(dim=dim)
    np.testing.assert_array_equal(indices.numpy(), x.detach().numpy().argmax(dim))
    check(lambda t: t.max(dim=dim).values, x)
    check(lambda t: t.min(dim=dim, keepdim=True).values, x)
    check(lambda t: t.max() * 1.0, x)


@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=4))
def test_softmax_family(data, shape):
    x = make(data, shape)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    check(lambda t: F.softmax(t, dim), x)
    check(lambda t: F.log_softmax(t, dim), x)


# ---------------------------------------------------------------------------- shapes
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=3),
       layout=layouts)
def test_shape_ops(data, shape, layout):
    x = make(data, shape, layout=layout)
    n = len(shape)
    perm = data.draw(st.permutations(range(n)))
    d0, d1 = data.draw(st.integers(0, n - 1)), data.draw(st.integers(0, n - 1))
    check(lambda t: t.reshape(-1), x)
    check(lambda t: t.permute(*perm), x)
    check(lambda t: t.transpose(d0, d1), x)
    check(lambda t: t.flatten(), x)
    check(lambda t: t.unsqueeze(d0).squeeze(d0), x)
    check(lambda t: t.unsqueeze(0).expand(2, *shape), x)
    check(lambda t: t.flip(d0), x)
    check(lambda t: t.repeat(*([2] + [1] * (n - 1))), x)
    check(lambda t: t.repeat_interleave(2, dim=d1), x)
    check(lambda t: t.clone() * 2, x)
    check(lambda t: t.movedim(d0, d1), x)
    check(lambda t: t.swapaxes(d0, d1), x)
    check(lambda t: t.unbind(d0), x)
    check(lambda t: t.unflatten(d0, (1, shape[d0])), x)
    check(lambda t: t.masked_fill(t.detach() > 0, 0.5), x)


@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=4))
def test_indexing(data, shape):
    x = make(data, shape)
    check(lambda t: t[1:], x)
    check(lambda t: t[..., ::-1][::2], x)
    check(lambda t: t[None, 0], x)
    idx = mg.tensor(np.array([0, 1, 1, 0]))
    check(lambda t: t[idx], x)  # repeated positions accumulate
    check(lambda t: t[t.detach() > 0], x)  # boolean mask


@given(data=st.data(), shape=hnp.array_shapes(min_dims=2, max_dims=3, min_side=1, max_side=4))
def test_gather(data, shape):
    x = make(data, shape)
    dim = data.draw(st.integers(0, len(shape) - 1))
    rng = np.random.default_rng(0)
    index = list(shape)
    index[dim] = 5
    idx = mg.tensor(rng.integers(0, shape[dim], index))
    out = F.gather(x, dim, idx)
    np.testing.assert_array_equal(out.detach().numpy(),
                                  np.take_along_axis(x.detach().numpy(), idx.numpy(), dim))
    check(lambda t: F.gather(t, dim, idx), x)


@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
def test_cat_stack_split_chunk(data, shape):
    a, b = make(data, shape), make(data, shape, salt=1)
    dim = data.draw(st.integers(0, len(shape) - 1))
    check(lambda u, v: mg.cat([u, v * 2], dim), a, b)
    check(lambda u, v: mg.stack([u, v], dim), a, b)
    check(lambda u: mg.split(u, 2, dim), a)
    check(lambda u: mg.chunk(u, 3, dim), a)
    pieces = mg.split(a, 2, dim)
    assert sum(p.shape[dim] for p in pieces) == shape[dim]


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_modes(mode):
    rng = np.random.default_rng(0)
    x = mg.Tensor(rng.standard_normal((2, 3, 4, 5)), requires_grad=True)
    widths = (1, 2, 3, 0)
    out = F.pad(x, widths, mode=mode, value=0.5) if mode == "constant" else F.pad(x, widths, mode)
    np_mode = {"constant": "constant", "reflect": "reflect", "replicate": "edge",
               "circular": "wrap"}[mode]
    kwargs = {"constant_values": 0.5} if mode == "constant" else {}
    np.testing.assert_allclose(out.detach().numpy(), np.pad(
        x.detach().numpy(), ((0, 0), (0, 0), (3, 0), (1, 2)), mode=np_mode, **kwargs))
    check(lambda t: F.pad(t, widths, mode=mode), x)


# ---------------------------------------------------------------------------- linear algebra
@given(data=st.data(), dims=st.tuples(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
       batch=hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3),
       vector=st.sampled_from(["none", "left", "right"]))
def test_matmul(data, dims, batch, vector):
    m, k, n = dims
    a_shape = (k,) if vector == "left" else batch.input_shapes[0] + (m, k)
    b_shape = (k,) if vector == "right" else batch.input_shapes[1] + (k, n)
    a, b = make(data, a_shape), make(data, b_shape, salt=1)
    out = a @ b
    np.testing.assert_allclose(out.detach().numpy(), a.detach().numpy() @ b.detach().numpy())
    check(lambda u, v: u @ v, a, b)


@given(data=st.data(), lead=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3),
       fin=st.integers(1, 4), fout=st.integers(1, 4), bias=st.booleans())
def test_linear(data, lead, fin, fout, bias):
    x, w = make(data, lead + (fin,)), make(data, (fout, fin), salt=1)
    b = make(data, (fout,), salt=2) if bias else None
    args = [x, w] + ([b] if bias else [])
    check(lambda *t: F.linear(*t), *args)


@pytest.mark.parametrize("equation, shapes", [
    ("ij,jk->ik", [(2, 3), (3, 4)]),
    ("bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]),
    ("ij->j", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("i,j->ij", [(3,), (2,)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (4, 2)]),
    ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]),
    ("ab,cb", [(2, 3), (4, 3)]),
])
def test_einsum(equation, shapes):
    rng = np.random.default_rng(0)
    xs = [mg.Tensor(rng.standard_normal(s), requires_grad=True) for s in shapes]
    out = mg.einsum(equation, *xs)
    np.testing.assert_allclose(out.detach().numpy(),
                               np.einsum(equation, *[x.detach().numpy() for x in xs]))
    check(lambda *t: mg.einsum(equation, *t), *xs)


# ---------------------------------------------------------------------------- nn ops
def _image(shape, seed=0):
    return mg.Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


@pytest.mark.parametrize("kwargs", [
    dict(), dict(stride=2, padding=1), dict(dilation=2, padding=2), dict(groups=2),
    dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
])
def test_conv2d(kwargs):
    groups = kwargs.get("groups", 1)
    x, w, b = _image((2, 4, 6, 5)), _image((6, 4 // groups, 3, 3), 1), _image((6,), 2)
    check(lambda *t: F.conv2d(*t, **kwargs), x, w, b)


@pytest.mark.parametrize("kwargs", [
    dict(), dict(stride=2, padding=1, output_padding=1), dict(groups=2, dilation=2),
    dict(stride=(2, 3), padding=(1, 0), output_padding=(0, 2)),
])
def test_conv_transpose2d(kwargs):
    groups = kwargs.get("groups", 1)
    x, w, b = _image((2, 4, 3, 4)), _image((4, 6 // groups, 3, 3), 1), _image((6,), 2)
    check(lambda *t: F.conv_transpose2d(*t, **kwargs), x, w, b)


def test_pooling_and_upsampling():
    x = _image((2, 3, 5, 6))
    check(lambda t: F.max_pool2d(t, 2), x)
    check(lambda t: F.max_pool2d(t, 3, stride=2, padding=1), x)
    check(lambda t: F.avg_pool2d(t, 2, stride=1), x)
    check(lambda t: F.interpolate(t, scale_factor=2), x)
    check(lambda t: F.interpolate(t, size=(15, 12)), x)          # unequal integer factors (3, 2)
    check(lambda t: F.interpolate(t, size=(7, 4)), x)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_attention(causal, mask):
    q, k, v = _image((2, 2, 4, 3)), _image((2, 2, 5, 3), 1), _image((2, 2, 5, 2), 2)
    m = None
    if mask == "bool":
        m = mg.tensor(np.random.default_rng(4).random((4, 5)) > 0.3)
        m = mg.tensor(m.numpy() | np.eye(4, 5, k=1, dtype=bool))  # no fully masked row
    elif mask == "float":
        m = mg.tensor(np.random.default_rng(4).standard_normal((2, 1, 4, 5)))
    check(lambda *t: F.scaled_dot_product_attention(*t, attn_mask=m, is_causal=causal), q, k, v)


def test_normalization_layers():
    x, w, b = _image((3, 4, 2, 3)), _image((4,), 1), _image((4,), 2)
    rm, rv = mg.zeros(4, dtype=np.float64), mg.ones(4, dtype=np.float64)
    check(lambda *t: F.batch_norm(t[0], rm, rv, t[1], t[2], training=True), x, w, b)
    check(lambda *t: F.batch_norm(t[0], rm, rv, t[1], t[2], training=False), x, w, b)
    check(lambda *t: F.group_norm(t[0], 2, t[1], t[2]), x, w, b)
    check(lambda *t: F.instance_norm(t[0], weight=t[1], bias=t[2]), x, w, b)
    check(lambda t: F.layer_norm(t, (2, 3)), x)
    check(lambda t: F.normalize(t, dim=1), x)


def test_losses():
    logits = _image((5, 4))
    target = mg.tensor(np.array([0, 3, 1, -100, 2]))
    probs = mg.tensor(np.random.default_rng(3).random((5, 4)))
    weight = mg.tensor(np.array([1.0, 2.0, 0.5, 1.5]))
    check(lambda t: F.cross_entropy(t, target), logits)
    check(lambda t: F.cross_entropy(t, target, weight=weight, label_smoothing=0.2), logits)
    check(lambda t: F.cross_entropy(t, F.softmax(probs, 1)), logits)
    check(lambda t: F.nll_loss(F.log_softmax(t, 1), target, reduction="sum"), logits)
    check(lambda t: F.binary_cross_entropy_with_logits(t, probs, pos_weight=weight), logits)
    check(lambda t: F.binary_cross_entropy(F.sigmoid(t), probs), logits)
    check(lambda t: F.mse_loss(t, probs), logits)
    check(lambda t: F.l1_loss(t, probs, reduction="sum"), logits)
    check(lambda t: F.kl_div(F.log_softmax(t, 1), F.softmax(probs, 1), reduction="batchmean"),
          logits)
    spatial = _image((2, 3, 4, 4))
    check(lambda t: F.cross_entropy(t, mg.tensor(np.random.default_rng(1).integers(0, 3, (2, 4, 4)))),
          spatial)


def test_embedding_and_dropout():
    weight = _image((6, 3))
    idx = mg.tensor(np.array([[0, 2], [5, 2]]))
    check(lambda w: F.embedding(idx, w), weight)
    out = F.embedding(idx, weight, padding_idx=2)
    out.sum().backward()
    np.testing.assert_array_equal(weight.grad.numpy()[2], 0.0)
    np.testing.assert_array_equal(weight.grad.numpy()[0], 1.0)
    x = _image((4, 5))
    mg.manual_seed(0)
    fixed = F.dropout(x, 0.3).detach().numpy()
    mask = fixed != 0

    def with_fixed_mask(t):
        return t * mg.tensor(mask / 0.7)

    check(with_fixed_mask, x)
    assert F.dropout(x, 0.3, training=False) is x
