"""The engine itself: graph walk, accumulation, freeing, higher-order gradients, modes."""
import numpy as np
import pytest

import minigen as mg
from minigen import autograd
from minigen.gradcheck import gradcheck, gradgradcheck


def leaf(*shape, dtype=np.float64, seed=0):
    return mg.tensor(np.random.default_rng(seed).standard_normal(shape), dtype=dtype,
                     requires_grad=True)


def test_tensor_defaults_and_conversion():
    x = mg.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert x.dtype == np.float32 and x.shape == (2, 2) and x.device == "cpu"
    assert mg.tensor([1, 2]).dtype == np.int64
    assert mg.tensor(np.zeros(3, np.float64)).dtype == np.float64
    assert mg.tensor(3.5).item() == 3.5
    np.testing.assert_array_equal(x.numpy(), [[1, 2], [3, 4]])
    assert x.to("cpu") is x
    with pytest.raises(ValueError, match="device must be one of"):
        x.to("tpu")


def test_chain_rule_simple_values():
    x = mg.tensor(2.0, requires_grad=True)
    y = x * x * 3 + x.exp()
    y.backward()
    assert np.isclose(x.grad.item(), 6 * 2 + np.exp(2.0))


def test_gradients_accumulate_into_leaves_like_pytorch():
    x = leaf(3)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 5.0)
    assert x.grad.requires_grad is False


def test_diamond_graph_visits_each_node_once():
    calls = []

    class Spy(mg.Function):
        @staticmethod
        def forward(ctx, a):
            return a * 1.0

        @staticmethod
        def backward(ctx, g):
            calls.append(1)
            return g

    x = leaf(4)
    h = Spy.apply(x)
    y = (h * 2 + h * 3 + h).sum()  # h feeds three branches
    y.backward()
    assert len(calls) == 1
    np.testing.assert_allclose(x.grad.numpy(), 6.0)


def test_ten_thousand_op_chain_is_iterative():
    x = mg.tensor(1.0, dtype=np.float64, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert np.isclose(x.grad.item(), 1.0001 ** 10_000)


def test_second_backward_through_freed_graph_raises():
    x = leaf(3)
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = leaf(3)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first)


def test_backward_on_non_scalar_needs_gradient():
    x = leaf(2, 3)
    y = x * 2
    with pytest.raises(RuntimeError, match="scalar outputs.*shape \\(2, 3\\).*gradient="):
        y.backward()
    y.backward(gradient=mg.ones(2, 3, dtype=np.float64))
    np.testing.assert_allclose(x.grad.numpy(), 2.0)
    with pytest.raises(ValueError, match="gradient has shape \\(3,\\)"):
        (x * 2).backward(gradient=mg.ones(3, dtype=np.float64))


def test_backward_without_requires_grad_is_explained():
    with pytest.raises(RuntimeError, match="does not require grad"):
        mg.ones(3).sum().backward()


def test_autograd_grad_does_not_touch_dot_grad():
    x = leaf(3)
    (g,) = autograd.grad((x * x).sum(), x)
    np.testing.assert_allclose(g.numpy(), 2 * x.detach().numpy())
    assert x.grad is None


def test_autograd_grad_unused_input():
    x, z = leaf(3), leaf(3, seed=1)
    with pytest.raises(RuntimeError, match="inputs\\[1\\].*not used"):
        autograd.grad((x * x).sum(), [x, z])
    gx, gz = autograd.grad((x * x).sum(), [x, z], allow_unused=True)
    assert gz is None


def test_gradient_penalty_oracle_double_backward():
    """d/dW of ||df/dx||^2 for f(x) = sum(w2 * tanh(W1 x)) against finite differences."""
    rng = np.random.default_rng(3)
    x = mg.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    w1 = mg.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    w2 = mg.tensor(rng.standard_normal(4), requires_grad=True)

    def penalty(w1, w2):
        f = ((x @ w1.T).tanh() * w2).sum()
        (gx,) = autograd.grad(f, x, create_graph=True)
        return (gx * gx).sum()

    p = penalty(w1, w2)
    p.backward()
    analytic = w1.grad.numpy().copy()
    eps, numeric = 1e-6, np.zeros_like(analytic)
    for idx in np.ndindex(*analytic.shape):
        for sign in (+1, -1):
            w = w1.detach().numpy().copy()
            w[idx] += sign * eps
            numeric[idx] += sign * penalty(mg.tensor(w, requires_grad=True), w2).item()
    numeric /= 2 * eps
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


def test_create_graph_gives_differentiable_grad():
    x = leaf(4)
    (x ** 3).sum().backward(create_graph=True)
    assert x.grad.requires_grad
    (g2,) = autograd.grad(x.grad.sum(), x)
    np.testing.assert_allclose(g2.numpy(), 6 * x.detach().numpy())


def test_no_grad_and_enable_grad():
    x = leaf(3)
    with mg.no_grad():
        y = x * 2
        with mg.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad

    @mg.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad
    assert mg.is_grad_enabled()


def test_detach_and_retain_grad():
    x = leaf(3)
    h = (x * 2).retain_grad()
    d = h.detach()
    assert d.grad_fn is None and not d.requires_grad
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * h.detach().numpy())


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="floating-point"):
        mg.tensor([1, 2], requires_grad=True)


def test_comparisons_carry_no_gradient():
    x = leaf(3)
    m = x > 0
    assert m.dtype == np.bool_ and not m.requires_grad


def test_numpy_on_grad_tensor_explains_detach():
    with pytest.raises(RuntimeError, match="detach"):
        leaf(2).numpy()


def test_setitem_is_refused_with_alternatives():
    x = mg.zeros(3)
    with pytest.raises(TypeError, match="item assignment.*mg.where"):
        x[0] = 1.0


def test_float32_grad_dtype_matches_input():
    x = mg.randn(3, requires_grad=True)
    (x * mg.tensor(np.ones(3))).sum().backward()  # float64 constant promotes the output
    assert x.grad.dtype == np.float32


def test_manual_seed_determinism():
    mg.manual_seed(7)
    a = (mg.randn(4), mg.rand(3), mg.randint(0, 10, (5,)), mg.randperm(6))
    mg.manual_seed(7)
    b = (mg.randn(4), mg.rand(3), mg.randint(0, 10, (5,)), mg.randperm(6))
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u.numpy(), v.numpy())
    mg.manual_seed(8)
    assert not np.array_equal(mg.randn(4).numpy(), a[0].numpy())


def test_rng_state_round_trip():
    mg.manual_seed(3)
    mg.randn(2)
    state = mg.get_rng_state()
    first = mg.randn(5).numpy()
    mg.set_rng_state(state)
    np.testing.assert_array_equal(mg.randn(5).numpy(), first)


def test_gradcheck_catches_a_wrong_backward():
    class WrongSquare(mg.Function):
        @staticmethod
        def forward(ctx, a):
            return a * a

        @staticmethod
        def backward(ctx, g):
            return g * ctx.inputs[0]  # missing factor 2

    with pytest.raises(AssertionError, match="gradcheck failed"):
        gradcheck(lambda x: WrongSquare.apply(x), [leaf(3)])


def test_gradgradcheck_catches_a_detached_backward():
    class DetachedSquare(mg.Function):
        @staticmethod
        def forward(ctx, a):
            return a * a

        @staticmethod
        def backward(ctx, g):
            return g * 2 * ctx.inputs[0].detach()  # right first derivative, no second

    x = leaf(3)
    gradcheck(lambda x: DetachedSquare.apply(x), [x])
    with pytest.raises(AssertionError):
        gradgradcheck(lambda x: DetachedSquare.apply(x), [x])


def test_leaf_gradients_are_fresh_writable_arrays():
    a, b = leaf(3), leaf(3, seed=1)
    (a + b).sum().backward()  # both receive the same broadcast gradient
    assert a.grad.data.flags.writeable and a.grad.data.flags.c_contiguous
    assert not np.shares_memory(a.grad.data, b.grad.data)
    a.grad.data *= 2
    np.testing.assert_allclose(b.grad.numpy(), 1.0)
