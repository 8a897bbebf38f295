"""PixelRNN's Row LSTM against Eq. AR-3: causal through the whole network, a distribution, a
correct LSTM cell, and a state that depends only on the rows above and the pixels to the left."""
import itertools

import numpy as np
import pytest

import minigen as mg
from minigen.gradcheck import gradcheck
from minigen.models.pixelrnn import PixelRNN, RowLSTM


def small(shape=(1, 5, 5), seed=0):
    model = PixelRNN(shape, channels=4 * shape[0], layers=2, first_kernel_size=3, head_channels=8 * shape[0],
                     likelihood="bernoulli" if shape[0] == 1 else "categorical").double()
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = rng.normal(scale=0.7, size=p.shape)
    return model


@pytest.mark.equation("AR-3")
@pytest.mark.parametrize("channels", [1, 3])
def test_row_lstm_pixelrnn_is_causal(channels):
    model = small((channels, 5, 5))
    x0 = np.random.default_rng(1).random((1, channels, 5, 5))
    reached = np.zeros((channels, 25), bool)
    for i in range(25):
        for g in range(channels):
            x = mg.tensor(x0, requires_grad=True)
            r, c = divmod(i, 5)
            model(x)[0, g, :, r, c].sum().backward()
            seen = np.abs(x.grad.numpy()[0]).reshape(channels, 25) > 0
            allowed = np.zeros((channels, 25), bool)
            allowed[:, :i] = True
            allowed[:g, i] = True
            assert not np.any(seen & ~allowed), (i, g, np.argwhere(seen & ~allowed))
            reached |= seen
    assert reached[:, :24].all()


@pytest.mark.equation("AR-3")
def test_row_state_reaches_a_widening_triangle_of_rows_above():
    """The state of row r, column c depends on row r at columns <= c (masked input-to-state) and on
    row r - d at columns within c ± d (d steps of the 1x3 state-to-state convolution)."""
    layer = RowLSTM(1, 3, kernel_size=3).double()
    rng = np.random.default_rng(0)
    for p in layer.parameters():
        p.data[...] = rng.normal(size=p.shape)
    x = mg.tensor(rng.normal(size=(1, 1, 6, 9)), requires_grad=True)
    layer(x)[0, :, 5, 4].sum().backward()
    seen = np.abs(x.grad.numpy()[0, 0]) > 0
    expected = np.zeros((6, 9), bool)
    expected[5, 3:5] = True                     # current row: the 1x3 mask B reads columns c-1, c
    for d in range(1, 6):
        expected[5 - d, max(0, 3 - d):min(9, 5 + d)] = True
    np.testing.assert_array_equal(seen, expected)


@pytest.mark.equation("AR-3")
def test_lstm_cell_gradients_match_finite_differences():
    """One row step — gates from both convolutions, the cell update — w.r.t. its inputs, the
    state-to-state kernel and bias; then the whole layer unrolled over rows w.r.t. its input."""
    from minigen.nn.recurrent import lstm_update
    import minigen.nn.functional as F
    layer = RowLSTM(2, 3, kernel_size=3).double()
    rng = np.random.default_rng(0)
    x_gates = mg.tensor(rng.normal(size=(2, 12, 1, 5)), requires_grad=True)
    h = mg.tensor(rng.normal(size=(2, 3, 1, 5)), requires_grad=True)
    c = mg.tensor(rng.normal(size=(2, 3, 1, 5)), requires_grad=True)
    gradcheck(lambda a, b, d: mg.cat(layer.step(a, b, d), dim=1), [x_gates, h, c])
    weight = mg.tensor(rng.normal(size=(12, 3, 1, 3)), requires_grad=True)
    bias = mg.tensor(rng.normal(size=12), requires_grad=True)
    gradcheck(lambda w, b: mg.cat(lstm_update(x_gates.detach() + F.conv2d(h.detach(), w, b, padding=(0, 1)),
                                              c.detach(), dim=1), dim=1), [weight, bias])
    gradcheck(lambda inp: layer(inp), [mg.tensor(rng.normal(size=(1, 2, 3, 4)), requires_grad=True)])


@pytest.mark.equation("AR-1")
def test_pixelrnn_probabilities_sum_to_one():
    model = small((1, 2, 5))
    images = np.array(list(itertools.product([0.0, 1.0], repeat=10))).reshape(-1, 1, 2, 5)
    with mg.no_grad():
        assert np.exp(model.log_prob(images).numpy()).sum() == pytest.approx(1.0, abs=1e-12)
    samples = model.sample(3)
    assert samples.shape == (3, 1, 2, 5) and set(np.unique(samples)) <= {0.0, 1.0}
