"""Autoregressive models against the lecture: Eq. AR-1, AR-2, AR-4, AR-5, AR-6.

Small models in float64 make the checks exact: probabilities are summed over
every binary image of 10 pixels, causality is read off the gradient of one
output pixel with respect to every input pixel, and two samplers are compared
draw for draw.
"""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigen as mg
from model_helpers import randomize
from minigen.gradcheck import gradcheck
from minigen.models.autoregressive import (FVSBN, NADE, BernoulliPixels, CategoricalPixels,
                                           DiscretizedLogisticMixture, LEVELS)
from minigen.models.pixelcnn import GatedPixelCNN, MaskedConv2d, PixelCNN, causal_mask


def small_models(shape=(1, 2, 5)):
    """One of each model on ``shape`` images, float64, random weights."""
    c = shape[0]
    return {
        "fvsbn": randomize(FVSBN(shape)),
        "nade": randomize(NADE(shape, hidden=7)),
        "pixelcnn": randomize(PixelCNN(shape, channels=8 * c, blocks=2, first_kernel_size=3, head_channels=8 * c),
                              scale=0.5),
        "gated": randomize(GatedPixelCNN(shape, channels=4 * c, layers=3, first_kernel_size=3, head_channels=8 * c),
                           scale=0.5),
    }


def all_binary_images(shape):
    n = math.prod(shape)
    return np.array(list(itertools.product([0.0, 1.0], repeat=n))).reshape(-1, *shape)


def output_depends_on_input(model, x, pixel, channel=0):
    """(C, H, W) boolean: which input entries the parameters of (pixel, channel) have a nonzero gradient for."""
    x = mg.tensor(x, requires_grad=True)
    r, c = divmod(pixel, x.shape[-1])
    model(x)[0, channel, :, r, c].sum().backward()
    return np.abs(x.grad.numpy()[0]) > 0


# --------------------------------------------------------------------------- AR-1

@pytest.mark.equation("AR-1")
@pytest.mark.parametrize("name", ["fvsbn", "nade", "pixelcnn", "gated"])
def test_probabilities_of_all_2_to_the_10_images_sum_to_one(name):
    model = small_models()[name]
    images = all_binary_images((1, 2, 5))
    with mg.no_grad():
        total = np.exp(model.log_prob(images).numpy()).sum()
    assert total == pytest.approx(1.0, abs=1e-12)


@pytest.mark.equation("AR-1")
@pytest.mark.parametrize("name", ["fvsbn", "nade", "pixelcnn", "gated"])
def test_log_likelihood_is_the_sum_of_per_pixel_conditionals(name):
    """Chain rule: log p(x) = Σ_i log p(x_i | x_<i), each conditional computed from x_<i alone
    (the pixels from i on replaced by noise, which must not matter)."""
    model = small_models()[name]
    rng = np.random.default_rng(3)
    x = (rng.random((4, 1, 2, 5)) < 0.5).astype(np.float64)
    total = np.zeros(4)
    with mg.no_grad():
        for i in range(10):
            r, c = divmod(i, 5)
            seen = x.copy().reshape(4, -1)
            seen[:, i:] = rng.random((4, 10 - i)) < 0.5          # the future, scrambled
            logits = model(mg.tensor(seen.reshape(x.shape))).numpy()[:, 0, 0, r, c]
            total += x[:, 0, r, c] * logits - np.logaddexp(0, logits)
        np.testing.assert_allclose(model.log_prob(x).numpy(), total, atol=1e-10)


@pytest.mark.equation("AR-1")
def test_nade_running_sum_equals_the_direct_formula():
    """h_i = σ(c + W_{:,<i} x_<i) computed directly, one conditional at a time (O(HD²))."""
    model = small_models()["nade"]
    x = (np.random.default_rng(0).random((3, 1, 2, 5)) < 0.5).astype(np.float64)
    W, c, V, b = (p.data for p in (model.W, model.c, model.V, model.b))
    flat = x.reshape(3, -1)
    logits = np.stack([b[i] + (1 / (1 + np.exp(-(c + flat[:, :i] @ W[:i]))) * V[i]).sum(1) for i in range(10)], 1)
    with mg.no_grad():
        np.testing.assert_allclose(model(mg.tensor(x)).numpy().reshape(3, -1), logits, atol=1e-12)


def test_fvsbn_weights_above_the_diagonal_are_unused():
    model = small_models()["fvsbn"]
    x = mg.tensor((np.random.default_rng(0).random((5, 1, 2, 5)) < 0.5).astype(np.float64))
    model.log_prob(x).sum().backward()
    assert np.all(np.triu(model.weight.grad.numpy()) == 0)
    assert np.any(np.tril(model.weight.grad.numpy(), -1) != 0)


# --------------------------------------------------------------------------- AR-2: masks and causality

@pytest.mark.equation("AR-2")
def test_masks_a_and_b_on_a_3x3_kernel():
    a = causal_mask(1, 1, (3, 3), (1, 1), "A")[0, 0]
    b = causal_mask(1, 1, (3, 3), (1, 1), "B")[0, 0]
    np.testing.assert_array_equal(a, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(b, [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    # RGB: at the centre, group g sees groups < g (A) or <= g (B)
    rgb_a = causal_mask(3, 3, (3, 3), (1, 1), "A", image_channels=3)[:, :, 1, 1]
    rgb_b = causal_mask(3, 3, (3, 3), (1, 1), "B", image_channels=3)[:, :, 1, 1]
    np.testing.assert_array_equal(rgb_a, np.tril(np.ones((3, 3)), -1))
    np.testing.assert_array_equal(rgb_b, np.tril(np.ones((3, 3))))


def test_masked_weights_get_no_gradient_and_never_matter():
    conv = randomize(MaskedConv2d(2, 4, 5, "A"))
    x = mg.tensor(np.random.default_rng(0).normal(size=(2, 2, 6, 6)))
    conv(x).sum().backward()
    hidden = conv.mask.numpy() == 0
    assert np.all(conv.weight.grad.numpy()[hidden] == 0)
    with mg.no_grad():
        before = conv(x).numpy()
        conv.weight.data[hidden] = 1e6
        np.testing.assert_array_equal(conv(x).numpy(), before)


@pytest.mark.equation("AR-2")
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", ["pixelcnn", "gated"])
def test_causality_through_the_whole_network(name, channels):
    """Output (pixel i, channel g) has zero gradient w.r.t. every input pixel j >= i, except the
    channels < g of pixel i itself — and w.r.t. pixel i's own channel g (mask A)."""
    shape = (channels, 5, 5)
    model = small_models(shape)[name]
    x = np.random.default_rng(1).random((1, *shape))
    reached_before = np.zeros((channels, 25), bool)
    for i in range(25):
        for g in range(channels):
            seen = output_depends_on_input(model, x, i, g).reshape(channels, 25)
            allowed = np.zeros((channels, 25), bool)
            allowed[:, :i] = True
            allowed[:g, i] = True
            assert not np.any(seen & ~allowed), f"{name}: output ({i}, {g}) sees {np.argwhere(seen & ~allowed)}"
            reached_before |= seen
    assert reached_before[:, :24].all()      # and the check is not vacuous: every input is used somewhere


@pytest.mark.equation("AR-2")
def test_plain_pixelcnn_is_causal_at_training_size():
    model = randomize(PixelCNN((1, 12, 12), channels=8, blocks=3, head_channels=4), scale=0.3)
    x = np.random.default_rng(2).random((1, 1, 12, 12))
    for i in (0, 13, 77, 143):
        seen = output_depends_on_input(model, x, i).reshape(-1)
        assert not seen[i:].any()
        assert i == 0 or seen[i - 1]


# --------------------------------------------------------------------------- AR-5: the blind spot

@pytest.mark.equation("AR-5")
def test_gated_pixelcnn_has_no_blind_spot_and_pixelcnn_has_one():
    """Same depth, same 3x3 kernels, 6x6 image. The last pixel of the Gated PixelCNN reads every
    earlier pixel; the plain PixelCNN misses pixels up and to the right of its outputs."""
    shape = (1, 6, 6)
    gated = randomize(GatedPixelCNN(shape, channels=4, layers=6, first_kernel_size=3, head_channels=8), scale=0.5)
    plain = randomize(PixelCNN(shape, channels=8, blocks=5, first_kernel_size=3, head_channels=8), scale=0.5)
    x = np.random.default_rng(0).random((1, *shape))
    last = 35
    assert output_depends_on_input(gated, x, last).reshape(-1)[:last].all()
    for i in range(36):      # every pixel, not just the last: all earlier pixels are reached
        assert output_depends_on_input(gated, x, i).reshape(-1)[:i].all(), i
    # plain PixelCNN: the pixel at (5, 1) cannot see (4, 3) two columns right of the row above, etc.
    seen = output_depends_on_input(plain, x, 31).reshape(6, 6)
    blind = [(r, c) for r in range(6) for c in range(6) if r * 6 + c < 31 and not seen[r, c]]
    assert (4, 3) in blind and (3, 5) in blind
    assert all(c > 1 for r, c in blind)      # the blind spot lies to the right


@pytest.mark.equation("AR-5")
def test_gate_is_tanh_times_sigmoid():
    layer = GatedPixelCNN((1, 4, 4), channels=3, layers=1).layers[0]
    x = np.random.default_rng(0).normal(size=(2, 6, 4, 4))
    out = layer.gate(mg.tensor(x)).numpy()
    np.testing.assert_allclose(out, np.tanh(x[:, :3]) / (1 + np.exp(-x[:, 3:])), rtol=1e-6)


def test_class_conditional_gated_pixelcnn_uses_the_label():
    model = randomize(GatedPixelCNN((1, 4, 4), channels=4, layers=2, head_channels=4, num_classes=10), scale=0.5)
    x = (np.random.default_rng(0).random((3, 1, 4, 4)) < 0.5).astype(np.float64)
    with mg.no_grad():
        a = model.log_prob(x, labels=[0, 1, 2]).numpy()
        b = model.log_prob(x, labels=[5, 1, 7]).numpy()
        assert a[1] == b[1] and a[0] != b[0] and a[2] != b[2]
        # still a distribution for every class
        images = all_binary_images((1, 2, 2))
        small = randomize(GatedPixelCNN((1, 2, 2), channels=2, layers=2, head_channels=2, num_classes=3))
        for label in range(3):
            total = np.exp(small.log_prob(images, labels=[label] * len(images)).numpy()).sum()
            assert total == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="needs labels"):
        model.log_prob(x)
    with pytest.raises(ValueError, match=r"labels must be 3 integers in \[0, 10\)"):
        model.log_prob(x, labels=[0, 1, 10])


# --------------------------------------------------------------------------- row windows

@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", ["pixelcnn", "gated"])
def test_a_window_of_reach_rows_gives_the_same_row_as_the_whole_image(name, channels):
    model = small_models((channels, 9, 7))[name]
    x = mg.tensor(np.random.default_rng(0).random((2, channels, 9, 7)))
    with mg.no_grad():
        full = model(x).numpy()
        for r in range(9):
            top = max(0, r - model.reach)
            rows, first = model.forward_rows(x[:, :, top:r + 1], top)
            assert first + rows.shape[-2] - 1 == r
            np.testing.assert_allclose(rows.numpy()[:, :, :, -1], full[:, :, :, r], atol=1e-12)
    # and the reach is not overestimated: the last row reads the row ``reach`` above it
    seen = output_depends_on_input(model, x.numpy()[:1], 9 * 7 - 4)
    assert seen[:, 8 - model.reach].any() and not seen[:, :8 - model.reach].any()


# --------------------------------------------------------------------------- AR-4: sampling

class CallCounter:
    def __init__(self, model):
        self.calls, self.inputs = 0, []
        model.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.calls += 1
        self.inputs.append(args[0].numpy().copy())


@pytest.mark.equation("AR-4")
@pytest.mark.parametrize("name,channels", [("fvsbn", 1), ("nade", 1), ("pixelcnn", 3), ("gated", 1)])
def test_sequential_sampling_one_network_call_per_pixel_and_channel(name, channels):
    shape = (channels, 3, 4)
    model = small_models(shape)[name]
    if channels == 3:
        model = randomize(PixelCNN(shape, channels=12, blocks=1, first_kernel_size=3, head_channels=6,
                                   likelihood="categorical"), scale=0.5)
    counter = CallCounter(model)
    samples = model.sample(5, incremental=False)
    assert counter.calls == math.prod(shape)                  # n pixels × C channels
    # pixel-channel k of the final sample is already in place at every later step
    order = [(c, r, w) for r in range(3) for w in range(4) for c in range(channels)]
    for step, seen in enumerate(counter.inputs):
        for k, (c, r, w) in enumerate(order):
            if k < step:
                np.testing.assert_array_equal(seen[:, c, r, w], samples[:, c, r, w])
            else:
                assert np.all(seen[:, c, r, w] == 0)           # not generated yet
    values = np.unique(samples)
    assert set(values) <= ({0.0, 1.0} if channels == 1 else set(np.arange(256) / 255))


@pytest.mark.equation("AR-4")
@pytest.mark.parametrize("name", ["pixelcnn", "gated"])
def test_incremental_sampler_draws_the_same_images_as_the_naive_loop(name):
    model = small_models((1, 10, 8))[name]
    mg.manual_seed(5)
    naive = model.sample(6, incremental=False)
    mg.manual_seed(5)
    fast = model.sample(6, incremental=True, progress=True)
    np.testing.assert_array_equal(naive, fast)
    assert 0 < naive.mean() < 1


def test_sampler_for_grey_levels_and_a_class_conditional_model():
    model = randomize(GatedPixelCNN((1, 3, 3), channels=2, layers=2, head_channels=2, likelihood="logistic-mixture",
                                    components=2, num_classes=4), scale=0.3)
    samples = model.sample(4, labels=[0, 1, 2, 3])
    assert samples.shape == (4, 1, 3, 3)
    assert np.all(np.isin(np.rint(samples * 255), np.arange(256)))
    with pytest.raises(ValueError, match="labels must be 2 integers"):
        model.sample(2, labels=[1, 2, 3])


# --------------------------------------------------------------------------- AR-6: discretized logistic mixture

grey_levels = mg.tensor((np.arange(LEVELS) / (LEVELS - 1)).reshape(1, 1, 16, 16))


def all_levels_probability(likelihood, params):
    """Σ_k P(k) with each pixel of a 16x16 image set to one of the 256 levels and the same parameters."""
    p = mg.tensor(np.broadcast_to(params.reshape(1, 1, -1, 1, 1), (1, 1, params.size, 16, 16)).copy())
    return np.exp(likelihood.log_prob(p, grey_levels).numpy()).reshape(-1)


@pytest.mark.equation("AR-6")
@settings(max_examples=40)
@given(seed=st.integers(0, 10 ** 6), components=st.integers(1, 4),
       loc=st.floats(-0.5, 1.5), log_scale=st.floats(-8, 2))
def test_discretized_logistic_mixture_sums_to_one_over_256_levels(seed, components, loc, log_scale):
    rng = np.random.default_rng(seed)
    params = np.concatenate([rng.normal(size=components), loc + 0.3 * rng.normal(size=components),
                             log_scale + 0.3 * rng.normal(size=components)])
    probs = all_levels_probability(DiscretizedLogisticMixture(components), params)
    assert np.all(probs >= 0)
    assert probs.sum() == pytest.approx(1.0, abs=1e-9)


@pytest.mark.equation("AR-6")
def test_edge_levels_take_the_open_tails():
    """One logistic (μ, s): P(0) = σ((0.5/255 - μ)/s) and P(255) = 1 - σ((254.5/255 - μ)/s);
    middle levels are the CDF differences over their bins."""
    mu, s = 0.3, 0.2
    probs = all_levels_probability(DiscretizedLogisticMixture(1), np.array([0.0, mu, math.log(s)]))
    sigma = lambda t: 1 / (1 + np.exp(-t))   # noqa: E731
    assert probs[0] == pytest.approx(sigma((0.5 / 255 - mu) / s), rel=1e-12)
    assert probs[255] == pytest.approx(1 - sigma((254.5 / 255 - mu) / s), rel=1e-12)
    k = np.arange(1, 255)
    np.testing.assert_allclose(probs[1:255], sigma(((k + 0.5) / 255 - mu) / s) - sigma(((k - 0.5) / 255 - mu) / s),
                               rtol=1e-9)
    # far in a tail, the middle bins stay finite and positive (no log 0, no cancellation to 0)
    tail = all_levels_probability(DiscretizedLogisticMixture(1), np.array([0.0, -3.0, math.log(0.01)]))
    assert np.all(tail[1:] > 0) and np.all(np.isfinite(np.log(tail)))


@pytest.mark.equation("AR-6")
def test_discretized_logistic_mixture_gradient():
    lik = DiscretizedLogisticMixture(2)
    x = mg.tensor((np.array([0, 3, 128, 254, 255]) / 255).reshape(1, 1, 1, 5))
    params = mg.tensor(np.random.default_rng(0).normal(scale=0.5, size=(1, 1, 6, 1, 5)), requires_grad=True)
    gradcheck(lambda p: lik.log_prob(p, x), [params])


def test_categorical_and_bernoulli_pixels_are_distributions():
    params = np.random.default_rng(0).normal(size=256)
    assert all_levels_probability(CategoricalPixels(), params).sum() == pytest.approx(1.0, abs=1e-12)
    logit = mg.tensor(np.array([0.7]).reshape(1, 1, 1, 1, 1))
    ones, zeros = mg.tensor(np.ones((1, 1, 1, 1))), mg.tensor(np.zeros((1, 1, 1, 1)))
    b = BernoulliPixels()
    assert np.exp(b.log_prob(logit, ones).numpy()) + np.exp(b.log_prob(logit, zeros).numpy()) == pytest.approx(1.0)


# --------------------------------------------------------------------------- errors and training

def test_wrong_image_shape_is_named():
    model = PixelCNN((1, 8, 8), channels=4, blocks=1, head_channels=2)
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 1, 8, 8\), got \(2, 1, 7, 8\)"):
        model.log_prob(np.zeros((2, 1, 7, 8), np.float32))
    with pytest.raises(ValueError, match="unconditional"):
        model.log_prob(np.zeros((2, 1, 8, 8), np.float32), labels=[0, 1])
    with pytest.raises(ValueError, match="likelihood must be one of"):
        PixelCNN((1, 8, 8), likelihood="gaussian")
    with pytest.raises(ValueError, match="multiple of 2 x image channels"):
        PixelCNN((3, 8, 8), channels=8)
    with pytest.raises(ValueError, match="mask_type must be 'A', 'B' or None"):
        MaskedConv2d(1, 1, 3, "C")
    with pytest.raises(ValueError, match=r"PixelCNN.sample: n: expected an integer >= 0, got -2"):
        model.sample(-2)
    assert model.sample(0).shape == (0, 1, 8, 8)


@pytest.mark.parametrize("name", ["nade", "pixelcnn", "gated"])
def test_a_few_adam_steps_lower_the_nll(name):
    from minigen.optim import Adam
    model = {"nade": NADE((1, 6, 6), hidden=16),
             "pixelcnn": PixelCNN((1, 6, 6), channels=8, blocks=1, head_channels=8, first_kernel_size=3),
             "gated": GatedPixelCNN((1, 6, 6), channels=4, layers=2, head_channels=8, first_kernel_size=3)}[name]
    x = np.zeros((16, 1, 6, 6), np.float32)
    x[:, :, :, 2:4] = 1           # a vertical bar: easy to predict from the row above
    opt = Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss, metrics = model.loss(x)
        first = first if first is not None else metrics["nll"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert metrics["nll"] < 0.5 * first
    assert metrics["bits_per_dim"] == pytest.approx(metrics["nll"] / (36 * math.log(2)))
