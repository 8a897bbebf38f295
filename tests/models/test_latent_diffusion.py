"""Latent diffusion (Eq. DIF-17): the KL autoencoder's reconstructions, captions, cross-attention that
depends on its condition, and the second stage training only the diffusion network."""
import numpy as np
import pytest

import minigen as mg
from minigen.gradcheck import gradcheck
from minigen.models.diffusion import NoiseSchedule
from minigen.models.diffusion.latent import (ConditionEncoder, KLAutoencoder, LatentDiffusion, caption, ink_thresholds,
                                             stroke_words, tokenize, VOCABULARY)
from minigen.models.unet import CrossAttentionBlock, UNet
from minigen.optim import Adam

from model_helpers import randomize


@pytest.mark.equation("DIF-17")
def test_cross_attention_output_depends_on_the_condition():
    block = randomize(CrossAttentionBlock(8, context_dim=6, heads=2, groups=4), seed=1, scale=0.3)
    rng = np.random.default_rng(0)
    x = mg.tensor(rng.standard_normal((2, 8, 3, 3)))
    c1, c2 = (mg.tensor(rng.standard_normal((2, 3, 6))) for _ in range(2))
    y1, y1_again, y2 = (block(x, c).detach().numpy() for c in (c1, c1, c2))
    np.testing.assert_array_equal(y1, y1_again)
    assert np.abs(y1 - y2).min() > 1e-6                        # every output element moves with the condition
    # softmax(QKᵀ/√d)V by hand, head by head
    d = 4
    q = block.q(block.norm(x)).detach().numpy().reshape(2, 2, d, 9).transpose(0, 1, 3, 2)
    kv = block.kv(c1).detach().numpy().reshape(2, 3, 2, 2, d)
    k, v = kv[:, :, 0].transpose(0, 2, 1, 3), kv[:, :, 1].transpose(0, 2, 1, 3)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    a = (p @ v).transpose(0, 1, 3, 2).reshape(2, 8, 3, 3)
    np.testing.assert_allclose(y1, x.detach().numpy() + block.out(mg.tensor(a)).detach().numpy(), rtol=1e-10)
    gradcheck(lambda x, c: block(x, c), [mg.tensor(x.detach().numpy(), requires_grad=True),
                                         mg.tensor(c1.detach().numpy(), requires_grad=True)])


@pytest.mark.equation("DIF-17")
def test_unet_with_context_reads_it_and_refuses_to_run_without():
    net = randomize(UNet(2, 4, (1,), 1, (0,), heads=2, groups=2, context_dim=5), seed=2, scale=0.3)
    rng = np.random.default_rng(1)
    z = mg.tensor(rng.standard_normal((2, 2, 7, 7)))
    a, b = (net(z, [10, 500], context=mg.tensor(rng.standard_normal((2, 3, 5)))).detach().numpy() for _ in range(2))
    assert a.shape == (2, 2, 7, 7) and np.abs(a - b).max() > 1e-3
    with pytest.raises(ValueError, match="needs a context"):
        net(z, [10, 500])
    with pytest.raises(ValueError, match=r"expected a context of shape \(2, L, 5\)"):
        net(z, [10, 500], context=mg.tensor(np.zeros((2, 3, 4))))


def test_captions_and_tokens():
    assert caption(7) == "a seven" and caption(2, "thin") == "a thin two"
    tokens = tokenize(["a thin seven", "A two", None])
    assert tokens.shape == (3, 3) and tokens.dtype == np.int64
    assert [VOCABULARY[i] for i in tokens[0]] == ["a", "thin", "seven"]
    assert [VOCABULARY[i] for i in tokens[1]] == ["a", "two", "<pad>"]
    assert tokens[2].tolist() == [0, 0, 0]                          # the empty caption: no condition
    with pytest.raises(ValueError, match=r"unknown: \['fat'\]"):
        tokenize(["a fat seven"])
    with pytest.raises(ValueError, match="up to 3 words"):
        tokenize(["a thin thick seven"])
    context = ConditionEncoder(8)(tokens)
    assert context.shape == (3, 3, 8)


def test_stroke_words_split_each_class_in_thirds():
    rng = np.random.default_rng(0)
    images = rng.random((300, 1, 4, 4)).astype(np.float32)
    labels = np.repeat([0, 1], 150)
    images[labels == 1] *= 0.5                                   # class 1 has less ink throughout
    words = np.array(stroke_words(images, labels, ink_thresholds(images, labels, classes=2)))
    for k in (0, 1):
        counts = [np.sum(words[labels == k] == w) for w in ("thin", "", "thick")]
        assert all(abs(c - 50) <= 1 for c in counts)


def _digits(n=None):
    from minigen.data import load_dataset
    return load_dataset("digits", "train"), load_dataset("digits", "test")


@pytest.mark.equation("DIF-17")
def test_autoencoder_reconstructs_held_out_digits():
    """decode(encode(x)) on held-out 8×8 digits (16 latent numbers for 64 pixels): mean absolute pixel error
    below 0.10 after 300 steps, half that of predicting every image by the mean image (0.195)."""
    train, test = _digits()
    mg.manual_seed(0)
    ae = KLAutoencoder((1, 8, 8), z_channels=4, width=16, kl_weight=1e-3)
    opt = Adam(ae.parameters(), 2e-3)
    rng = np.random.default_rng(0)
    for _ in range(300):
        batch = train.images[rng.choice(len(train), 64, replace=False)]
        loss, _ = ae.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    err = ae.reconstruction_error(test.images)
    baseline = np.abs(test.images - train.images.mean(0)).mean()
    assert err["mae"] < 0.10 and err["mae"] < baseline / 2, (err, baseline)
    assert ae.encode(mg.tensor(test.images[:3])).shape == (3, 4, 2, 2)
    assert ae.sample(5).shape == (5, 1, 8, 8)


@pytest.mark.equation("DIF-17")
def test_latent_diffusion_trains_only_the_second_stage_and_follows_its_caption():
    train, _ = _digits()
    mg.manual_seed(0)
    ae = KLAutoencoder((1, 8, 8), z_channels=2, width=8)
    frozen = [p.detach().numpy().copy() for p in ae.parameters()]
    net = UNet(2, 8, (1,), 1, (0,), heads=2, groups=2, context_dim=8)
    model = LatentDiffusion(ae, net, NoiseSchedule.linear(20), 8, latent_scale=2.0,
                            ink=ink_thresholds(train.images, train.labels))
    rng = np.random.default_rng(3)
    for p in list(net.parameters()) + list(model.condition.parameters()):   # a generic network, not the identity start
        p.data[...] = rng.normal(scale=0.3, size=p.shape)
    opt = Adam(model.parameters(), 1e-3)
    loss, metrics = model.loss((train.images[:16], train.labels[:16]))
    opt.zero_grad()
    loss.backward()
    assert all(p.grad is None for p in ae.parameters())
    assert all(p.grad is not None for p in net.parameters()) and model.condition.words.weight.grad is not None
    opt.step()
    for p, before in zip(ae.parameters(), frozen):
        np.testing.assert_array_equal(p.detach().numpy(), before)
    assert np.isfinite(metrics["loss"])
    images = model.sample(4, ["a thin seven"] * 4, sampler="ddim", steps=5, guidance=1.0)
    assert images.shape == (4, 1, 8, 8) and 0 <= images.min() and images.max() <= 1
    model.decode = lambda z: z.numpy()                  # compare the latents (the untrained decoder is ~constant)
    draws = {}
    for text in ("a thin seven", "a thick two"):
        mg.manual_seed(5)
        draws[text] = model.sample(4, [text] * 4, sampler="ddim", steps=5, guidance=1.0)
    assert draws["a thin seven"].shape == (4, 2, 2, 2)
    assert np.abs(draws["a thin seven"] - draws["a thick two"]).max() > 1e-2     # same noise, other caption
    z = mg.tensor(rng.standard_normal((2, 2, 2, 2)).astype(np.float32))
    eps = {text: model.eps(z, [7, 7], [text] * 2).detach().numpy() for text in ("a thin seven", "a seven", None)}
    assert np.abs(eps["a thin seven"] - eps["a seven"]).min() > 0 and np.abs(eps["a seven"] - eps[None]).min() > 0
    np.testing.assert_array_equal(model.eps(z, [7, 7], [7, 7]).detach().numpy(), eps["a seven"])  # label = caption
    with pytest.raises(ValueError, match="not the images'"):
        model.variational_bound(train.images[:2])


# --------------------------------------------------------------------------- DDPM on 2-D points (the toys)

@pytest.mark.equation("DIF-7")
def test_ddpm_on_points_bounds_the_held_out_nll_above_the_true_entropy():
    """A DDPM on 2-D points (MLP ε-network, Gaussian decoder L_0): its bound on −log p_θ(x) of held-out points
    can only exceed the density's entropy (cross-entropy ≥ entropy, bound ≥ −log p_θ); samples are points."""
    from types import SimpleNamespace

    from minigen.data import toy_dataset
    from minigen.models.diffusion.recipes import MLPDenoiser, build_ddpm, evaluate_ddpm
    cfg = dict(channels=8, noise_schedule="linear", timesteps=100, prediction="eps", loss="simple", label_dropout=0.1,
               sigma="beta", data="moons")
    mg.manual_seed(0)
    model = build_ddpm(cfg, (2,))
    assert isinstance(model.net, MLPDenoiser) and model.points and model.data_name == "moons"
    train, test = toy_dataset("moons", "train"), toy_dataset("moons", "test")
    opt = Adam(model.parameters(), 3e-3)
    rng = np.random.default_rng(0)
    for _ in range(200):
        loss, _ = model.loss(train.images[rng.choice(len(train), 128)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    test.images = test.images[:64]
    scores = evaluate_ddpm(model, train, test, SimpleNamespace(sampler=None, steps=None, guidance=None))
    assert np.isfinite(scores["test_bound_nats"]) and scores["bound_minus_entropy"] > 0
    assert model.sample(5).shape == (5, 2)
    with pytest.raises(ValueError, match="for images"):
        build_ddpm({**cfg, "conditional": True, "num_classes": 2}, (2,))
