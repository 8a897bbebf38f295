"""GANs: the value function, Algorithm 1, both generator losses, the optimal discriminator, remedies."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigen as mg
from minigen import nn, ops, optim
from minigen.gradcheck import gradcheck, gradgradcheck
from minigen.metrics import mode_coverage
from minigen.models.gans import (GAN, AdversarialTraining, Maxout, MinibatchDiscrimination, ReplayBuffer,
                                 discriminator_loss, expected_value, generator_loss, gradient_penalty,
                                 jensen_shannon, log_d, log_one_minus_d, mlp_discriminator, mlp_generator,
                                 optimal_discriminator, pack, value_function)

from model_helpers import randomize


def sigmoid(v):
    return 1 / (1 + np.exp(-np.asarray(v, np.float64)))


def snapshot(module):
    """Copies of the parameters (running batch-norm statistics move in every forward pass in
    training mode, in either player's step, as in PyTorch)."""
    return {k: v.detach().numpy().copy() for k, v in module.named_parameters()}


def tiny_gan(packing=1, k_features=0, seed=0):
    mg.manual_seed(seed)
    g = mlp_generator(latent_dim=2, hidden=8, layers=2)
    d = mlp_discriminator(2 * packing, hidden=8, layers=2, pieces=2, minibatch_kernels=k_features)
    return GAN(g, d, latent_dim=2, packing=packing)


# --------------------------------------------------------------------------- Eq. GAN-1


@pytest.mark.equation("GAN-1")
def test_value_function_equals_hand_computation():
    real, fake = np.array([2.0, -0.5, 0.3]), np.array([-1.0, 0.7])
    hand = np.mean(np.log(sigmoid(real))) + np.mean(np.log(1 - sigmoid(fake)))
    v = value_function(mg.tensor(real), mg.tensor(fake)).item()
    assert v == pytest.approx(hand, rel=1e-12)
    # at D = 1/2 everywhere the value is -log 4
    assert value_function(mg.zeros(5, dtype="float64"), mg.zeros(7, dtype="float64")).item() == \
        pytest.approx(-math.log(4), rel=1e-12)


@pytest.mark.equation("GAN-1")
def test_log_d_is_exact_where_sigmoid_rounds_off():
    big = mg.tensor(np.array([-200.0, 200.0], np.float32))
    np.testing.assert_allclose(log_d(big).numpy(), [-200.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(log_one_minus_d(big).numpy(), [0.0, -200.0], atol=1e-6)


def test_discriminator_loss_is_minus_v_and_the_critic_loss():
    real, fake = mg.tensor(np.array([1.5, -0.2])), mg.tensor(np.array([0.4, -2.0, 0.1]))
    v = value_function(real, fake).item()
    for loss in ("saturating", "non_saturating"):
        assert discriminator_loss(real, fake, loss).item() == pytest.approx(-v, rel=1e-12)
    assert discriminator_loss(real, fake, "wasserstein").item() == pytest.approx(fake.numpy().mean() -
                                                                                  real.numpy().mean())


# --------------------------------------------------------------------------- Eq. GAN-3


@pytest.mark.equation("GAN-3")
def test_generator_losses_equal_hand_computation():
    fake = np.array([-3.0, 0.5, 1.0])
    t = mg.tensor(fake)
    assert generator_loss(t, "saturating").item() == pytest.approx(np.mean(np.log(1 - sigmoid(fake))))
    assert generator_loss(t, "non_saturating").item() == pytest.approx(-np.mean(np.log(sigmoid(fake))))
    assert generator_loss(t, "wasserstein").item() == pytest.approx(-fake.mean())


@pytest.mark.equation("GAN-3")
@pytest.mark.parametrize("loss", ["saturating", "non_saturating"])
def test_generator_gradients_match_finite_differences(loss):
    """Gradient of each generator objective w.r.t. G's weights, through a fixed random D."""
    rng = np.random.default_rng(0)
    disc = randomize(mlp_discriminator(2, hidden=6, layers=2, pieces=3), seed=1, scale=0.7)
    z = mg.tensor(rng.standard_normal((5, 3)))
    a = mg.tensor(rng.standard_normal((3, 2)), requires_grad=True)
    b = mg.tensor(rng.standard_normal(2), requires_grad=True)

    def objective(a, b):                    # G(z) = tanh(z A) + b
        return generator_loss(disc(ops.tanh(z @ a) + b).reshape(-1), loss)
    gradcheck(objective, [a, b])


@pytest.mark.equation("GAN-3")
def test_non_saturating_gradient_is_larger_when_d_rejects_the_fakes():
    for logit in (-8.0, -4.0, -1.0):        # D(G(z)) = sigmoid(logit) -> 0: D wins
        grads = {}
        for loss in ("saturating", "non_saturating"):
            t = mg.tensor(np.array([logit]), requires_grad=True)
            generator_loss(t, loss).backward()
            grads[loss] = abs(t.grad.item())
        d = sigmoid(logit)
        assert grads["saturating"] == pytest.approx(d) and grads["non_saturating"] == pytest.approx(1 - d)
        assert grads["non_saturating"] > grads["saturating"]


# --------------------------------------------------------------------------- Eq. GAN-2: Algorithm 1


class CountingOptimizer(optim.SGD):
    def __init__(self, params, **kw):
        super().__init__(params, **kw)
        self.steps = 0

    def step(self):
        self.steps += 1
        super().step()


@pytest.mark.equation("GAN-2")
@pytest.mark.parametrize("k", [1, 3])
def test_algorithm_1_takes_k_discriminator_steps_on_k_minibatches(k):
    gan = tiny_gan()
    og = CountingOptimizer(gan.generator.parameters(), lr=0.01, momentum=0.9)
    od = CountingOptimizer(gan.discriminator.parameters(), lr=0.01, momentum=0.9)
    algo = AdversarialTraining(gan, og, od, k=k)
    seen = []
    real_discriminate = gan.discriminate

    def spy(x, labels=None):
        seen.append(x.detach().numpy().copy())
        return real_discriminate(x, labels)
    gan.discriminate = spy
    m = 4
    data = np.arange(2 * k * m, dtype=np.float32).reshape(k * m, 2)
    for it in range(1, 3):
        seen.clear()
        algo(mg.tensor(data))
        assert od.steps == k * it and og.steps == it
        assert algo.d_updates == k * it and algo.g_updates == it
        # D saw, in order: (real minibatch i, m fakes) for i < k, then m fakes in G's step
        reals = seen[0:2 * k:2]
        for i, r in enumerate(reals):
            np.testing.assert_array_equal(r, data[i * m:(i + 1) * m])
        assert all(s.shape == (m, 2) for s in seen) and len(seen) == 2 * k + 1


@pytest.mark.equation("GAN-2")
def test_generator_step_leaves_the_discriminator_unchanged():
    gan = tiny_gan()
    og = optim.Adam(gan.generator.parameters(), lr=0.1)
    od = optim.SGD(gan.discriminator.parameters(), lr=0.1, momentum=0.9)
    algo = AdversarialTraining(gan, og, od)
    algo(mg.randn(6, 2))                    # D now has momentum that a stray step() would apply
    d_before = snapshot(gan.discriminator)
    g_before = snapshot(gan.generator)
    gan.discriminator.zero_grad()
    algo.generator_step(6)
    for name, value in snapshot(gan.discriminator).items():
        np.testing.assert_array_equal(value, d_before[name], err_msg=name)
    assert all(p.grad is None for p in gan.discriminator.parameters())
    assert all(p.requires_grad for p in gan.discriminator.parameters())
    assert any(not np.array_equal(v, g_before[k]) for k, v in snapshot(gan.generator).items())


def test_discriminator_step_leaves_the_generator_unchanged():
    gan = tiny_gan()
    algo = AdversarialTraining(gan, optim.Adam(gan.generator.parameters(), lr=0.1),
                               optim.Adam(gan.discriminator.parameters(), lr=0.1))
    before = snapshot(gan.generator)
    algo.discriminator_step(mg.randn(6, 2))
    for name, value in snapshot(gan.generator).items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)


# --------------------------------------------------------------------------- Eq. GAN-4: Fig. 1


P_DATA = np.array([0.1, 0.4, 0.2, 0.3, 0.0])
P_G = np.array([0.3, 0.1, 0.1, 0.2, 0.3])


@pytest.mark.equation("GAN-4")
def test_optimal_discriminator_and_theorem_1_on_a_finite_set():
    d_star = optimal_discriminator(P_DATA, P_G)
    np.testing.assert_allclose(d_star, P_DATA / (P_DATA + P_G))
    v_star = expected_value(d_star, P_DATA, P_G)
    assert v_star == pytest.approx(-math.log(4) + 2 * jensen_shannon(P_DATA, P_G), rel=1e-12)
    # D* beats every other discriminator; at p_g = p_data, D* = 1/2 and V = -log 4
    rng = np.random.default_rng(0)
    for _ in range(20):
        assert expected_value(rng.uniform(0.01, 0.99, 5), P_DATA, P_G) < v_star
    np.testing.assert_allclose(optimal_discriminator(P_DATA, P_DATA)[:4], 0.5)
    assert expected_value(optimal_discriminator(P_DATA, P_DATA), P_DATA, P_DATA) == pytest.approx(-math.log(4))


@pytest.mark.equation("GAN-4")
def test_training_d_to_convergence_reaches_d_star():
    """A tabular discriminator (one logit per point) trained by Algorithm 1's D step on samples of two
    fixed distributions converges to D* = p_data / (p_data + p_g), and V to -log 4 + 2 JSD."""
    mg.manual_seed(0)
    k = len(P_DATA)

    class FixedGenerator(nn.Module):     # G(z) = a one-hot draw from p_g, whatever z is
        def __init__(self):
            super().__init__()
            self.unused = nn.Linear(1, 1)

        def forward(self, z):
            idx = mg.random.generator().choice(k, size=z.shape[0], p=P_G)
            return mg.tensor(np.eye(k)[idx], dtype=z.dtype)

    table = nn.Linear(k, 1, bias=False)
    nn.init.zeros_(table.weight)
    gan = GAN(FixedGenerator(), table, latent_dim=1)
    od = optim.Adam(table.parameters(), lr=0.05)
    algo = AdversarialTraining(gan, optim.SGD(gan.generator.parameters(), lr=0.0), od)
    sched = optim.CosineAnnealingLR(od, T_max=1500)
    rng = np.random.default_rng(1)
    for _ in range(1500):
        real = np.eye(k)[rng.choice(k, size=2000, p=P_DATA)].astype(np.float32)
        algo.discriminator_step(mg.tensor(real))
        sched.step()
    d = sigmoid(table.weight.detach().numpy()[0])
    seen = (P_DATA + P_G) > 0.05
    np.testing.assert_allclose(d[seen], optimal_discriminator(P_DATA, P_G)[seen], atol=0.02)
    v = expected_value(np.clip(d, 1e-6, 1 - 1e-6), P_DATA, P_G)
    assert v == pytest.approx(-math.log(4) + 2 * jensen_shannon(P_DATA, P_G), abs=2e-3)


def test_jensen_shannon_bounds_and_errors():
    assert jensen_shannon(P_DATA, P_DATA) == pytest.approx(0.0, abs=1e-15)
    assert jensen_shannon([1.0, 0.0], [0.0, 1.0]) == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match="p_data must be a 1-D probability vector"):
        optimal_discriminator([0.5, 0.6], [0.5, 0.5])


# --------------------------------------------------------------------------- gradient penalties


def test_gradient_penalties_of_a_linear_critic():
    w = np.array([[0.6, -1.2, 0.3]])
    critic = nn.Linear(3, 1).double()
    critic.weight.data[...] = w
    real, fake = mg.randn(4, 3, dtype="float64"), mg.randn(4, 3, dtype="float64")
    norm = np.linalg.norm(w)
    assert gradient_penalty(critic, real, fake, "wgan-gp").item() == pytest.approx((norm - 1) ** 2)
    assert gradient_penalty(critic, real, fake, "r1").item() == pytest.approx(0.5 * norm ** 2)


@pytest.mark.parametrize("kind", ["wgan-gp", "r1"])
def test_gradient_penalty_gradient_matches_finite_differences(kind):
    """The penalty's gradient w.r.t. the critic's weights needs a double backward."""
    rng = np.random.default_rng(2)
    real, fake = mg.tensor(rng.standard_normal((4, 3))), mg.tensor(rng.standard_normal((4, 3)))
    w1 = mg.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    w2 = mg.tensor(rng.standard_normal(5), requires_grad=True)

    def penalty(w1, w2):
        mg.manual_seed(0)                   # the same interpolation points every call
        return gradient_penalty(lambda x: (ops.tanh(x @ w1.T) * w2).sum(dim=1), real, fake, kind)
    gradcheck(penalty, [w1, w2])


def test_penalized_training_step_runs():
    gan = tiny_gan()
    algo = AdversarialTraining(gan, optim.Adam(gan.generator.parameters(), lr=1e-3),
                               optim.Adam(gan.discriminator.parameters(), lr=1e-3), loss="wasserstein",
                               penalty="wgan-gp", k=2)
    metrics = algo(mg.randn(8, 2))
    assert {"d_loss", "g_loss", "penalty"} <= set(metrics) and np.isfinite(metrics["penalty"])


# --------------------------------------------------------------------------- remedies


@given(m=st.integers(1, 5), packing=st.integers(1, 4), d=st.integers(1, 3))
@settings(max_examples=25, deadline=None)
def test_pack_concatenates_consecutive_examples(m, packing, d):
    x = np.arange(m * packing * d * 2, dtype=np.float32).reshape(m * packing, d, 2)
    out = pack(mg.tensor(x), packing).numpy()
    assert out.shape == (m, packing * d, 2)
    for i in range(m):
        np.testing.assert_array_equal(out[i], np.concatenate(x[i * packing:(i + 1) * packing], axis=0))


def test_pacgan_discriminator_judges_packs():
    gan = tiny_gan(packing=3)
    assert gan.discriminate(mg.randn(12, 2)).shape == (4,)
    with pytest.raises(ValueError, match="multiple of the packing degree"):
        gan.discriminate(mg.randn(10, 2))
    algo = AdversarialTraining(gan, optim.Adam(gan.generator.parameters(), lr=1e-3),
                               optim.Adam(gan.discriminator.parameters(), lr=1e-3))
    assert np.isfinite(algo(mg.randn(12, 2))["g_loss"])


def test_minibatch_discrimination_features():
    layer = MinibatchDiscrimination(4, kernels=3, kernel_dim=2).double()
    same = mg.tensor(np.tile(np.random.default_rng(0).standard_normal(4), (5, 1)))
    out = layer(same).detach().numpy()
    np.testing.assert_allclose(out[:, :4], same.numpy())
    np.testing.assert_allclose(out[:, 4:], 5.0)          # every example is identical to all 5
    spread = layer(mg.tensor(np.random.default_rng(1).standard_normal((5, 4)) * 100)).detach().numpy()[:, 4:]
    assert (spread < 2.0).all() and (spread >= 1.0).all()  # only itself is close
    x = mg.tensor(np.random.default_rng(2).standard_normal((4, 4)), requires_grad=True)
    gradcheck(lambda x: layer(x), [x])


def test_maxout_is_the_max_of_its_pieces_and_differentiable():
    layer = randomize(Maxout(3, 4, pieces=2))
    x = mg.tensor(np.random.default_rng(0).standard_normal((5, 3)), requires_grad=True)
    pieces = layer.linear(x).detach().numpy().reshape(5, 2, 4)
    np.testing.assert_allclose(layer(x).detach().numpy(), pieces.max(axis=1))
    gradcheck(lambda x: layer(x), [x])


def test_replay_buffer_mixes_old_fakes_and_round_trips():
    mg.manual_seed(0)
    buf = ReplayBuffer(capacity=6, fraction=0.5)
    first = buf.mix(mg.tensor(np.full((4, 2), 1.0, np.float32))).numpy()
    np.testing.assert_array_equal(first, 1.0)             # nothing stored yet
    second = buf.mix(mg.tensor(np.full((4, 2), 2.0, np.float32))).numpy()
    np.testing.assert_array_equal(second[:2], 1.0)        # half from the store
    np.testing.assert_array_equal(second[2:], 2.0)
    assert buf.size == 6
    copy = ReplayBuffer(capacity=6, fraction=0.5)
    copy.load_state_dict(buf.state_dict())
    np.testing.assert_array_equal(copy.items, buf.items)
    with pytest.raises(ValueError, match="fraction"):
        ReplayBuffer(10, fraction=1.0)


def test_adversarial_training_state_resumes_exactly():
    def run(steps, state=None):
        gan = tiny_gan(k_features=2)
        algo = AdversarialTraining(gan, optim.Adam(gan.generator.parameters(), lr=1e-2),
                                   optim.SGD(gan.discriminator.parameters(), lr=1e-2, momentum=0.9),
                                   replay=ReplayBuffer(20))
        if state is not None:
            gan.load_state_dict(state[0])
            algo.load_state_dict(state[1])
            mg.random.set_rng_state(state[2])
        for s in steps:
            algo(mg.tensor(np.random.default_rng(s).standard_normal((8, 2)).astype(np.float32)))
        return gan, algo
    full, _ = run(range(6))
    half, algo = run(range(3))
    saved = (half.state_dict(), algo.state_dict(), mg.random.get_rng_state())
    resumed, _ = run(range(3, 6), saved)
    for name, value in snapshot(full).items():
        np.testing.assert_array_equal(snapshot(resumed)[name], value, err_msg=name)


def test_gan_errors_name_the_argument():
    gan = tiny_gan()
    opts = (optim.SGD(gan.generator.parameters(), lr=0.1), optim.SGD(gan.discriminator.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="k .*must be >= 1"):
        AdversarialTraining(gan, *opts, k=0)
    with pytest.raises(ValueError, match="loss must be one of"):
        AdversarialTraining(gan, *opts, loss="hinge")
    with pytest.raises(ValueError, match="must hold k = 2 minibatches"):
        AdversarialTraining(gan, *opts, k=2)(mg.randn(5, 2))
    with pytest.raises(ValueError, match="packing and class labels"):
        GAN(gan.generator, gan.discriminator, 2, packing=2, num_classes=10)


# --------------------------------------------------------------------------- mode coverage


def test_mode_coverage_metrics():
    centers = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    collapsed = mode_coverage(np.zeros((100, 2)), centers, std=0.01)
    assert collapsed["modes"] == 1 and collapsed["high_quality"] == 1.0
    assert collapsed["reverse_kl"] == pytest.approx(math.log(4))
    balanced = mode_coverage(np.repeat(centers, 25, axis=0) + 0.02, centers, std=0.01)   # 2.8 sigma away
    assert balanced["modes"] == 4 and balanced["reverse_kl"] == pytest.approx(0.0, abs=1e-12)
    far = mode_coverage(np.array([[0.5, 0.5], [0.0, 0.0]]), centers, std=0.01)
    assert far["high_quality"] == 0.5 and far["counts"] == [1, 0, 0, 0]


# --------------------------------------------------------------------------- DCGAN and the conditional GAN

from minigen.metrics import frechet_distance  # noqa: E402
from minigen.models.gans import dcgan  # noqa: E402


@pytest.mark.equation("GAN-6")
def test_dcgan_follows_every_guideline():
    g, d = dcgan.DCGANGenerator(latent_dim=10, width=8), dcgan.DCGANDiscriminator(width=8)
    for net in (g, d):
        kinds = [type(m) for m in net.modules()]
        assert nn.MaxPool2d not in kinds and nn.AvgPool2d not in kinds        # no pooling
        assert nn.Linear not in kinds                                        # no fully connected hidden layers
        assert nn.BatchNorm2d in kinds                                       # batchnorm in both
    g_layers, d_layers = list(g.net), list(d.features) + [d.out]
    # G: fractional-strided convolutions only, ReLU inside, Tanh at the output, no BN on the output
    assert [type(m) for m in g_layers if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))] == [nn.ConvTranspose2d] * 3
    assert all(m.stride == (2, 2) for m in g_layers[3:] if isinstance(m, nn.ConvTranspose2d))
    assert isinstance(g_layers[-1], nn.Tanh) and isinstance(g_layers[-2], nn.ConvTranspose2d)
    assert {type(m) for m in g_layers if not isinstance(m, (nn.ConvTranspose2d, nn.BatchNorm2d))} == {nn.ReLU, nn.Tanh}
    # D: strided convolutions downsample, LeakyReLU everywhere, no BN on the input layer
    convs = [m for m in d_layers if isinstance(m, nn.Conv2d)]
    assert [m.stride for m in convs[:2]] == [(2, 2), (2, 2)]
    assert not isinstance(d_layers[1], nn.BatchNorm2d)
    assert all(m.negative_slope == 0.2 for m in d_layers if isinstance(m, nn.LeakyReLU))
    assert not any(isinstance(m, (nn.ReLU, nn.Tanh)) for m in d_layers)
    mg.manual_seed(0)
    z = mg.randn(3, 10)
    x = g(z)
    assert x.shape == (3, 1, 28, 28) and float(x.abs().max().item()) <= 1.0
    assert d(x).shape == (3,)


@pytest.mark.equation("GAN-6")
def test_dcgan_discriminator_gradient_matches_finite_differences():
    d = randomize(dcgan.DCGANDiscriminator(width=2, image_size=8), seed=3, scale=0.5).eval()
    x = mg.tensor(np.random.default_rng(0).standard_normal((2, 1, 8, 8)), requires_grad=True)
    gradcheck(lambda x: d(x), [x])


@pytest.mark.equation("GAN-7")
def test_conditional_players_depend_on_the_label():
    mg.manual_seed(0)
    g = dcgan.dcgan_init_(dcgan.DCGANGenerator(latent_dim=4, width=4, image_size=8, num_classes=3))
    d = dcgan.dcgan_init_(dcgan.DCGANDiscriminator(width=4, image_size=8, num_classes=3))
    g.eval(), d.eval()
    z = mg.randn(1, 4).expand(3, 4)
    images = g(z, mg.tensor(np.array([0, 1, 2]), dtype="int64")).detach().numpy()
    assert not np.allclose(images[0], images[1]) and not np.allclose(images[1], images[2])
    judge = randomize(dcgan.DCGANDiscriminator(width=4, image_size=8, num_classes=3), seed=1, scale=0.5).eval()
    x = mg.tensor(np.repeat(images[:1], 3, axis=0).astype(np.float64))
    logits = judge(x, mg.tensor(np.array([0, 1, 2]), dtype="int64")).detach().numpy()
    assert np.abs(np.diff(logits)).min() > 1e-3        # same image, three classes, three verdicts
    gan = GAN(g, d, latent_dim=4, num_classes=3, tanh_images=True)
    algo = AdversarialTraining(gan, optim.Adam(g.parameters(), lr=1e-3), optim.Adam(d.parameters(), lr=1e-3))
    metrics = algo((np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float32), np.array([0, 1, 2] * 2)))
    assert np.isfinite(metrics["g_loss"])
    with pytest.raises(ValueError, match="needs \\(images, labels\\)"):
        algo(mg.randn(6, 1, 8, 8))
    samples = gan.sample(4)
    assert samples.shape == (4, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1


def test_frechet_distance_of_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    n, f = 200000, 3
    a = rng.standard_normal((n, f))
    scale = np.array([1.0, 2.0, 0.5])
    b = rng.standard_normal((n, f)) * scale + np.array([1.0, 0.0, -1.0])
    # diagonal covariances: d^2 = |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2
    expected = 2.0 + ((1 - scale) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, abs=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="same F"):
        frechet_distance(a, b[:, :2])


# --------------------------------------------------------------------------- AdaIN and StyleGAN

from minigen.models.gans import style  # noqa: E402


@pytest.mark.equation("GAN-9")
def test_batch_and_instance_norm_are_the_slide_formulas():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5, 5)) * 3 + 1
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    c = (1, 3, 1, 1)
    bn = ops.batch_norm(mg.tensor(x), None, None, mg.tensor(gamma), mg.tensor(beta), training=True).numpy()
    mu, var = x.mean(axis=(0, 2, 3), keepdims=True), x.var(axis=(0, 2, 3), keepdims=True)
    np.testing.assert_allclose(bn, gamma.reshape(c) * (x - mu) / np.sqrt(var + 1e-5) + beta.reshape(c), atol=1e-10)
    inn = ops.instance_norm(mg.tensor(x), weight=mg.tensor(gamma), bias=mg.tensor(beta)).numpy()
    mu, var = x.mean(axis=(2, 3), keepdims=True), x.var(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(inn, gamma.reshape(c) * (x - mu) / np.sqrt(var + 1e-5) + beta.reshape(c), atol=1e-10)


@pytest.mark.equation("GAN-9")
@given(seed=st.integers(0, 1000), hw=st.integers(2, 6), shw=st.integers(2, 6))
@settings(max_examples=20, deadline=None)
def test_adain_output_has_the_style_statistics(seed, hw, shw):
    rng = np.random.default_rng(seed)
    x = mg.tensor(rng.standard_normal((2, 3, hw, hw)) * rng.uniform(0.5, 3) + rng.uniform(-2, 2))
    y = mg.tensor(rng.standard_normal((2, 3, shw, shw)) * rng.uniform(0.5, 3, size=(1, 3, 1, 1)) + 1.5)
    out = style.adain(x, y, eps=1e-12).numpy()
    np.testing.assert_allclose(out.mean(axis=(2, 3)), y.numpy().mean(axis=(2, 3)), atol=1e-9)
    np.testing.assert_allclose(out.std(axis=(2, 3)), y.numpy().std(axis=(2, 3)), rtol=1e-8)


@pytest.mark.equation("GAN-9")
def test_adain_gradients_match_finite_differences():
    rng = np.random.default_rng(1)
    x = mg.tensor(rng.standard_normal((2, 2, 3, 3)), requires_grad=True)
    y = mg.tensor(rng.standard_normal((2, 2, 4, 4)), requires_grad=True)
    gradcheck(lambda x, y: style.adain(x, y), [x, y])
    ys, yb = mg.tensor(rng.standard_normal((2, 2)), requires_grad=True), mg.tensor(rng.standard_normal((2, 2)),
                                                                               requires_grad=True)
    gradcheck(lambda x, ys, yb: style.adain(x, ys, yb), [x, ys, yb])
    with pytest.raises(ValueError, match="style_shift must be \\(N, C\\)"):
        style.adain(x, ys, mg.zeros(2, 3, dtype="float64"))


def small_style_generator(seed=0):
    mg.manual_seed(seed)
    g = style.StyleGenerator(latent_dim=8, w_dim=8, width=8, image_size=8, mapping_layers=2).double()
    rng = np.random.default_rng(seed)
    for block in g.blocks:                          # away from the identity-style initialisation
        block.affine.weight.data[...] = rng.standard_normal(block.affine.weight.shape) * 0.5
        block.noise_weight.data[...] = rng.uniform(0.5, 1.5, block.noise_weight.shape)
    return g


def noises_for(g, n, seed):
    rng = np.random.default_rng(seed)
    assert g.noise_sizes() == [2, 2, 4, 4, 8, 8]     # image_size 8: 2x2 constant, two x2 upsamplings
    return [mg.tensor(rng.standard_normal((n, 1, s, s))) for s in g.noise_sizes()]


@pytest.mark.equation("GAN-10")
def test_noise_changes_detail_but_not_the_style_statistics():
    g = small_style_generator()
    w = g.mapping(mg.randn(3, 8, dtype="float64"))
    outputs = {}
    for seed in (1, 2):
        captured = []
        handles = [b.register_forward_hook(lambda m, inp, out: captured.append((inp, out.detach().numpy())))
                   for b in g.blocks]
        image = g.synthesize(w, noises_for(g, 3, seed)).detach().numpy()
        for h in handles:
            h.remove()
        outputs[seed] = (image, captured)
    assert np.abs(outputs[1][0] - outputs[2][0]).max() > 1e-3            # the detail moves
    for i, block in enumerate(g.blocks):
        c = block.channels
        y_s, y_b = np.split(block.affine(w).detach().numpy(), 2, axis=1)      # A(w): the same for both noises
        outs = []
        for seed in (1, 2):
            (x, _, noise), out = outputs[seed][1][i]
            h = ops.leaky_relu(block.conv(x) + block.noise_weight.reshape(1, c, 1, 1) * noise, 0.2)
            v = h.detach().numpy().var(axis=(2, 3))
            np.testing.assert_allclose(out.mean(axis=(2, 3)), y_b, atol=1e-8)                  # μ = y_b
            np.testing.assert_allclose(out.std(axis=(2, 3)), np.abs(y_s) * np.sqrt(v / (v + style.EPS)),
                                       rtol=1e-8)                                             # σ = |y_s| (ε aside)
            outs.append(out)
        assert np.abs(outs[0] - outs[1]).max() > 1e-6, i


@pytest.mark.equation("GAN-10")
def test_style_mixing_swaps_w_at_the_crossover():
    g = small_style_generator()
    z1, z2 = mg.randn(2, 8, dtype="float64"), mg.randn(2, 8, dtype="float64")
    noises = noises_for(g, 2, 0)
    w1, w2 = g.mapping(z1), g.mapping(z2)
    for crossover in range(g.num_layers + 1):
        mixed = g.mix(z1, z2, crossover, noises).detach().numpy()
        manual = g.synthesize([w1] * crossover + [w2] * (g.num_layers - crossover), noises).detach().numpy()
        np.testing.assert_array_equal(mixed, manual)
    np.testing.assert_allclose(g.mix(z1, z2, g.num_layers, noises).detach().numpy(),
                               g.synthesize(w1, noises).detach().numpy())
    assert not np.allclose(g.mix(z1, z2, 2, noises).detach().numpy(), g.synthesize(w1, noises).detach().numpy())


@pytest.mark.equation("GAN-5")
def test_minibatch_stddev_feature_is_the_group_deviation():
    from minigen.models.gans.networks import MinibatchStdDev
    layer = MinibatchStdDev(group_size=4)
    x = np.random.default_rng(0).standard_normal((6, 3, 2, 2))           # 6 examples: groups of 3
    out = layer(mg.tensor(x)).detach().numpy()
    assert out.shape == (6, 4, 2, 2)
    np.testing.assert_array_equal(out[:, :3], x)
    for m in range(2):                                                   # group m = examples m, m + 2, m + 4
        members = x[m::2]
        expected = np.sqrt(members.var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(out[m::2, 3], expected, rtol=1e-12)
    copies = layer(mg.tensor(np.repeat(x[:1], 4, axis=0))).detach().numpy()
    np.testing.assert_allclose(copies[:, 3], 1e-4, rtol=1e-6)           # a collapsed batch: sqrt(eps)
    xt = mg.tensor(x, requires_grad=True)
    gradcheck(lambda v: layer(v), [xt])
    d = dcgan.DCGANDiscriminator(width=4, image_size=8, minibatch_std=True)
    assert d.out.in_channels == 9 and d(mg.randn(4, 1, 8, 8)).shape == (4,)


@pytest.mark.equation("GAN-10")
def test_style_generator_starts_with_a_different_style_per_sample():
    """At initialisation w keeps z's scale and distinct z give distinct images (a collapsed start — every
    sample the same style — is where a StyleGAN run with a shrinking mapping network stayed)."""
    mg.manual_seed(0)
    g = style.StyleGenerator(latent_dim=32, w_dim=32, width=8, image_size=8).eval()
    z = mg.randn(64, 32)
    w = g.mapping(z).detach().numpy()
    assert 0.3 < w.std(axis=0).mean() < 3.0                         # z's per-coordinate scale is 1
    images = g(z).detach().numpy()
    assert images.std(axis=0).mean() > 0.3 * images.std(axis=(1, 2, 3)).mean()


def test_style_mapping_network_learns_a_hundred_times_slower():
    g = style.StyleGenerator(latent_dim=8, w_dim=8, width=8, image_size=8, mapping_layers=2)
    groups = g.parameter_groups(1e-3)
    assert [group["lr"] for group in groups] == [pytest.approx(1e-5), 1e-3]
    ids = [id(p) for group in groups for p in group["params"]]
    assert sorted(ids) == sorted(id(p) for p in g.parameters()) and len(set(ids)) == len(ids)
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in g.mapping.parameters()}
    from minigen.models.gans.recipes import gan_trainer_step
    cfg = {"optimizer": "adam", "beta1": 0.5, "lr": 2e-4, "d_lr_ratio": 1.0, "schedule": "cosine",
           "total_steps": 10, "k": 1, "min_lr_ratio": 0.0, "replay": 0.0, "replay_capacity": 1,
           "penalty": "r1", "penalty_weight": 1.0, "loss": "non_saturating"}
    game, _ = gan_trainer_step(GAN(g, dcgan.DCGANDiscriminator(width=4, image_size=8), 8, tanh_images=True), cfg, None)
    assert [group["lr"] for group in game.g_optimizer.param_groups] == [pytest.approx(2e-6), 2e-4]


def test_style_generator_trains_in_the_game():
    mg.manual_seed(0)
    g = style.StyleGenerator(latent_dim=8, w_dim=8, width=8, image_size=8, mapping_layers=2)
    gan = GAN(g, dcgan.DCGANDiscriminator(width=4, image_size=8), latent_dim=8, tanh_images=True)
    algo = AdversarialTraining(gan, optim.Adam(g.parameters(), lr=1e-3), optim.Adam(gan.discriminator.parameters(),
                                                                                   lr=1e-3), penalty="r1")
    before = g.const.detach().numpy().copy()
    metrics = algo(np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32))
    assert np.isfinite(metrics["penalty"]) and not np.array_equal(before, g.const.detach().numpy())


# --------------------------------------------------------------------------- CycleGAN

from minigen.models.gans import cyclegan  # noqa: E402


def test_domain_transforms():
    x = np.zeros((1, 1, 5, 5), np.float32)
    x[0, 0, 2, 2] = 0.7
    t = cyclegan.thicken(x)
    np.testing.assert_array_equal(t[0, 0, 1:4, 1:4], np.float32(0.7))
    assert t.sum() == pytest.approx(9 * 0.7)
    np.testing.assert_array_equal(cyclegan.invert(cyclegan.invert(x)), x)


@pytest.mark.equation("GAN-8")
def test_cyclegan_terms_equal_hand_computation():
    mg.manual_seed(0)
    model = cyclegan.CycleGAN(width=2, blocks=1, cycle_weight=7.0, domain="invert").double()
    model.eval()
    rng = np.random.default_rng(0)
    x, y = mg.tensor(rng.uniform(-1, 1, (3, 1, 8, 8))), mg.tensor(rng.uniform(-1, 1, (3, 1, 8, 8)))
    terms = {k: v.item() for k, v in model.objective(x, y).items()}

    def out(net, v):
        return net(v).detach().numpy()
    gx, fy = out(model.G, x), out(model.F, y)
    logsig = lambda v: -np.logaddexp(0, -v)  # noqa: E731
    hand_y = logsig(out(model.D_Y, y)).mean() + logsig(-out(model.D_Y, mg.tensor(gx))).mean()
    hand_x = logsig(out(model.D_X, x)).mean() + logsig(-out(model.D_X, mg.tensor(fy))).mean()
    hand_cyc = (np.abs(out(model.F, mg.tensor(gx)) - x.numpy()).mean()
                + np.abs(out(model.G, mg.tensor(fy)) - y.numpy()).mean())
    assert terms["gan_y"] == pytest.approx(hand_y, rel=1e-10)
    assert terms["gan_x"] == pytest.approx(hand_x, rel=1e-10)
    assert terms["cycle"] == pytest.approx(hand_cyc, rel=1e-10)
    assert terms["total"] == pytest.approx(hand_y + hand_x + 7.0 * hand_cyc, rel=1e-10)


@pytest.mark.equation("GAN-8")
def test_cyclegan_training_lowers_the_cycle_error():
    mg.manual_seed(0)
    model = cyclegan.CycleGAN(width=4, blocks=1, domain="thicken")
    step = cyclegan.CycleGANTraining(model, optim.Adam(list(model.G.parameters()) + list(model.F.parameters()),
                                                       lr=2e-3, betas=(0.5, 0.999)),
                                     optim.Adam(list(model.D_X.parameters()) + list(model.D_Y.parameters()),
                                                lr=2e-3, betas=(0.5, 0.999)), pool_size=8)
    images = np.random.default_rng(0).random((64, 1, 8, 8)).astype(np.float32) ** 3
    held_out = images[:8]

    def cycle_error():
        return float(np.abs(model.translate(model.translate(held_out, "x2y"), "y2x") - held_out).mean())
    before = cycle_error()
    d_before = {k: v.detach().numpy().copy() for k, v in model.D_X.named_parameters()}
    for i in range(60):
        metrics = step(images[(i * 16) % 64:(i * 16) % 64 + 16])
    assert cycle_error() < 0.8 * before
    assert {"d_loss", "g_adv", "cycle"} <= set(metrics)
    assert any(not np.array_equal(v.detach().numpy(), d_before[k]) for k, v in model.D_X.named_parameters())
    with pytest.raises(ValueError, match="even number"):
        step(images[:3])
