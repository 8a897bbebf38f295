"""nn.init: gains, fans, bounds and sample statistics, PyTorch's default layer
initialisations, and determinism under mg.manual_seed."""
import math

import numpy as np
import pytest

import minigen as mg
import minigen.nn as nn
from minigen.nn import init


def arr(t):
    return t.detach().numpy()


def std_tolerance(n):
    """Relative sampling error of a sample standard deviation, 5 sigma (~ 1/sqrt(2n))."""
    return 5 / math.sqrt(2 * n)


def test_calculate_gain_table():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("conv2d") == 1
    assert init.calculate_gain("sigmoid") == 1
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))
    assert init.calculate_gain("selu") == 0.75
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        init.calculate_gain("swish")


def test_fans():
    assert init._calculate_fan_in_and_fan_out(mg.zeros(5, 3)) == (3, 5)
    assert init._calculate_fan_in_and_fan_out(mg.zeros(8, 4, 3, 2)) == (24, 48)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        init._calculate_fan_in_and_fan_out(mg.zeros(3))


def test_fills_are_in_place():
    t = mg.zeros(3, 4)
    data = t.data
    assert init.constant_(t, 2.5) is t and t.data is data
    assert np.all(t.numpy() == 2.5)
    init.ones_(t)
    assert np.all(t.numpy() == 1)
    init.zeros_(t)
    assert np.all(t.numpy() == 0)
    init.eye_(t)
    np.testing.assert_array_equal(t.numpy(), np.eye(3, 4))
    init.normal_(t)
    assert t.data is data and t.dtype == np.float32
    with pytest.raises(TypeError, match="floating-point"):
        init.normal_(mg.zeros(3, dtype=np.int64))


def test_uniform_and_normal_statistics():
    t = mg.zeros(200, 300, dtype=np.float64)
    init.uniform_(t, -2.0, 3.0)
    x = t.numpy()
    assert x.min() >= -2 and x.max() < 3
    assert x.mean() == pytest.approx(0.5, abs=0.05)
    init.normal_(t, 1.0, 2.0)
    assert t.numpy().mean() == pytest.approx(1.0, abs=0.05)
    assert t.numpy().std() == pytest.approx(2.0, rel=std_tolerance(t.numel()))


@pytest.mark.parametrize("shape", [(256, 128), (64, 32, 3, 3)])
def test_xavier_bounds_and_std(shape):
    t = mg.zeros(*shape)
    fan_in, fan_out = init._calculate_fan_in_and_fan_out(t)
    std = 1.5 * math.sqrt(2 / (fan_in + fan_out))
    init.xavier_uniform_(t, gain=1.5)
    bound = math.sqrt(3) * std
    assert np.abs(t.numpy()).max() <= bound and np.abs(t.numpy()).max() > 0.99 * bound
    assert t.numpy().std() == pytest.approx(std, rel=std_tolerance(t.numel()))
    init.xavier_normal_(t, gain=1.5)
    assert t.numpy().std() == pytest.approx(std, rel=std_tolerance(t.numel()))


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_bounds_and_std(mode):
    t = mg.zeros(128, 64, 3, 3)
    fan = 64 * 9 if mode == "fan_in" else 128 * 9
    init.kaiming_uniform_(t, mode=mode, nonlinearity="relu")
    bound = math.sqrt(2) * math.sqrt(3 / fan)
    assert np.abs(t.numpy()).max() <= bound and np.abs(t.numpy()).max() > 0.99 * bound
    init.kaiming_normal_(t, a=0.2, mode=mode)  # leaky_relu with slope 0.2
    std = math.sqrt(2 / (1 + 0.2 ** 2)) / math.sqrt(fan)
    assert t.numpy().std() == pytest.approx(std, rel=std_tolerance(t.numel()))
    assert abs(t.numpy().mean()) < 5 * std / math.sqrt(t.numel())
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_uniform_(t, mode="fan_avg")


def test_orthogonal_rows_and_columns():
    wide = mg.zeros(4, 10, dtype=np.float64)
    init.orthogonal_(wide, gain=2.0)
    np.testing.assert_allclose(wide.numpy() @ wide.numpy().T, 4 * np.eye(4), atol=1e-10)
    tall = mg.zeros(6, 2, 2, dtype=np.float64)  # viewed as (6, 4)
    init.orthogonal_(tall)
    flat = tall.numpy().reshape(6, 4)
    np.testing.assert_allclose(flat.T @ flat, np.eye(4), atol=1e-10)


def test_trunc_normal_stays_in_bounds_with_the_right_spread():
    t = mg.zeros(100_000, dtype=np.float64)
    init.trunc_normal_(t, mean=1.0, std=2.0, a=0.0, b=3.0)
    x = t.numpy()
    assert x.min() >= 0.0 and x.max() <= 3.0
    # N(1, 4) truncated to [1 - 0.5 sigma, 1 + sigma]: compare with the exact moments
    alpha, beta = -0.5, 1.0
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    Z = cdf(beta) - cdf(alpha)
    mean = 1.0 + 2.0 * (pdf(alpha) - pdf(beta)) / Z
    var = 4.0 * (1 + (alpha * pdf(alpha) - beta * pdf(beta)) / Z
                 - ((pdf(alpha) - pdf(beta)) / Z) ** 2)
    assert x.mean() == pytest.approx(mean, abs=0.02)
    assert x.std() == pytest.approx(math.sqrt(var), rel=0.02)
    with pytest.raises(ValueError, match="closer to the mean"):
        init.trunc_normal_(t, a=10.0, b=11.0)


def test_default_layer_initialisations_follow_pytorch():
    lin = nn.Linear(400, 300)
    bound = 1 / math.sqrt(400)  # kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), ..)
    w = arr(lin.weight)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert np.abs(arr(lin.bias)).max() <= bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=std_tolerance(w.size))
    conv = nn.Conv2d(16, 32, 3)
    bound = 1 / math.sqrt(16 * 9)
    assert np.abs(arr(conv.weight)).max() <= bound
    assert np.abs(arr(conv.weight)).max() > 0.98 * bound
    assert np.abs(arr(conv.bias)).max() <= bound
    deconv = nn.ConvTranspose2d(16, 8, 4)  # PyTorch's fan_in uses weight.shape[1] = 8
    bound = 1 / math.sqrt(8 * 16)
    assert np.abs(arr(deconv.weight)).max() <= bound
    assert np.abs(arr(deconv.weight)).max() > 0.98 * bound
    bn = nn.BatchNorm2d(4)
    assert np.all(arr(bn.weight) == 1) and np.all(arr(bn.bias) == 0)
    assert np.all(arr(bn.running_var) == 1) and np.all(arr(bn.running_mean) == 0)
    emb = nn.Embedding(1000, 50)
    assert arr(emb.weight).std() == pytest.approx(1.0, rel=std_tolerance(50_000))
    mha = nn.MultiheadAttention(16, 4)
    bound = math.sqrt(6 / (16 + 48))  # xavier on the packed (3E, E) matrix
    assert np.abs(arr(mha.in_proj_weight)).max() <= bound
    assert np.all(arr(mha.in_proj_bias) == 0) and np.all(arr(mha.out_proj.bias) == 0)


def test_reset_parameters_and_seeds_make_initialisation_repeat():
    def build():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                             nn.Linear(4, 3), nn.LSTM(3, 2), nn.MultiheadAttention(4, 2),
                             nn.Embedding(5, 2))

    mg.manual_seed(7)
    a = build()
    mg.manual_seed(7)
    b = build()
    mg.manual_seed(8)
    c = build()
    for (k, x), y, z in zip(a.state_dict().items(), b.state_dict().values(),
                            c.state_dict().values()):
        np.testing.assert_array_equal(x.numpy(), y.numpy(), err_msg=k)
        if "weight" in k and not k.startswith("1."):  # BatchNorm weights start at 1
            assert not np.array_equal(x.numpy(), z.numpy()), k
    mg.manual_seed(3)
    first = nn.Dropout(0.5)(mg.ones(50)).numpy()
    mg.manual_seed(3)
    np.testing.assert_array_equal(nn.Dropout(0.5)(mg.ones(50)).numpy(), first)
    lin = nn.Linear(3, 2)
    mg.manual_seed(11)
    lin.reset_parameters()
    w = arr(lin.weight).copy()
    mg.manual_seed(11)
    lin.reset_parameters()
    np.testing.assert_array_equal(arr(lin.weight), w)
