"""Deep belief networks against the lecture's Eq. EBM-12.

Tiny DBNs are the ground truth: with a handful of units every layer can be
enumerated in float64, so the factorisation, the marginal log P(x), the
variational bound (and its gap, a KL divergence) and the distribution of
top-down samples are all checked against brute force. The issue's claim —
adding a layer does not lower the bound — is checked exactly on a small net.
"""
import itertools
from pathlib import Path

import numpy as np
import pytest

import minigen as mg
from minigen.data import DataLoader
from minigen.models.energy.dbn import DeepBeliefNet, GreedyLayer, dbn_figures
from minigen.models.energy.rbm import ContrastiveDivergence, base_rate_biases, exact_log_partition
from minigen.numerics import logsumexp
from minigen.train import Trainer


def states(n):
    """All 2^n binary vectors, float64 (2^n, n)."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def random_dbn(layer_sizes, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    dbn = DeepBeliefNet(layer_sizes)
    for rbm in dbn.rbms:
        rbm.W.data[...] = rng.normal(scale=scale, size=rbm.W.data.shape)
        rbm.b.data[...] = rng.normal(scale=0.5, size=rbm.n_visible)
        rbm.c.data[...] = rng.normal(scale=0.5, size=rbm.n_hidden)
    return dbn


def all_configurations(layer_sizes):
    """Every joint state (x, h1, …, hℓ), split into one (2^N, n_k) array per layer."""
    joint = states(sum(layer_sizes))
    edges = np.cumsum([0] + list(layer_sizes))
    return [joint[:, lo:hi] for lo, hi in zip(edges, edges[1:])]


def log_bernoulli(bits, p):
    return (bits * np.log(p) + (1 - bits) * np.log1p(-p)).sum(1)


def toy_data(n=200, n_visible=10, n_prototypes=4, noise=0.05, seed=0):
    """Noisy copies of a few random prototypes: a clearly non-factorized distribution."""
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((n_prototypes, n_visible)) < 0.5).astype(np.float32)
    x = prototypes[rng.integers(0, n_prototypes, n)]
    return np.where(rng.random(x.shape) < noise, 1 - x, x).astype(np.float32)


def train(layer, data, steps, batch=20):
    for step in range(steps):
        start = (step * batch) % len(data)
        layer.step(data[start:start + batch])


# --------------------------------------------------------------------------- the factorisation

@pytest.mark.equation("EBM-12")
def test_log_joint_is_the_factorisation_and_sums_to_one():
    # ℓ = 3: P(x, h1, h2, h3) = P(x|h1) P(h1|h2) P(h2, h3), each piece written out by hand
    dbn = random_dbn([3, 2, 3, 2], seed=1)
    x, h1, h2, h3 = all_configurations(dbn.layer_sizes)
    rbm1, rbm2, top = dbn.rbms
    top_states = all_configurations([3, 2])                            # every (h2, h3)
    log_z = logsumexp(-top.energy(*top_states))                        # Z of the top RBM by brute force
    by_hand = (log_bernoulli(x, rbm1.visible_mean(h1.astype(np.float32)).astype(np.float64))
               + log_bernoulli(h1, rbm2.visible_mean(h2.astype(np.float32)).astype(np.float64))
               - top.energy(h2, h3) - log_z)
    log_joint = dbn.log_joint(x, h1, h2, h3)
    np.testing.assert_allclose(log_joint, by_hand, rtol=1e-5, atol=1e-5)
    assert np.exp(log_joint).sum() == pytest.approx(1.0, abs=1e-10)


@pytest.mark.equation("EBM-12")
def test_log_prob_sums_out_every_latent_layer():
    dbn = random_dbn([3, 2, 3, 2], seed=2)
    layers = all_configurations(dbn.layer_sizes)
    log_joint = dbn.log_joint(*layers).reshape(8, -1)   # rows: x in counting order
    log_p = dbn.log_prob(states(3))
    np.testing.assert_allclose(log_p, logsumexp(log_joint, axis=1), atol=1e-10)
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-10)
    np.testing.assert_allclose(dbn.log_prob(states(3), chunk=3), log_p, atol=1e-10)


@pytest.mark.equation("EBM-12")
def test_a_one_rbm_dbn_is_the_rbm():
    dbn = random_dbn([5, 3], seed=3)
    x = states(5)
    rbm_log_p = dbn.top.log_prob(x, exact_log_partition(dbn.top))
    np.testing.assert_allclose(dbn.log_prob(x), rbm_log_p, atol=1e-10)
    np.testing.assert_allclose(dbn.variational_bound(x), rbm_log_p, atol=1e-10)   # no latents: no gap


# --------------------------------------------------------------------------- the variational bound

@pytest.mark.equation("EBM-12")
def test_bound_gap_is_the_kl_from_q_to_the_true_posterior():
    # log P(x) - bound = KL(Q(h1|x) || P(h1|x)) ≥ 0, with P(h1|x) from the enumerated joint
    dbn = random_dbn([4, 3, 4], seed=4)
    x = states(4)
    gap = dbn.log_prob(x) - dbn.variational_bound(x)
    log_p_x_h1 = logsumexp(dbn.log_joint(*all_configurations([4, 3, 4])).reshape(16, 8, 16), axis=2)
    log_posterior = log_p_x_h1 - dbn.log_prob(x)[:, None]                  # log P(h1|x), (x, h1)
    q = dbn.rbms[0].hidden_probs(x).astype(np.float64)
    log_q = np.stack([log_bernoulli(np.broadcast_to(h, q.shape), q) for h in states(3)], 1)
    kl = (np.exp(log_q) * (log_q - log_posterior)).sum(1)
    np.testing.assert_allclose(gap, kl, atol=1e-5)
    assert (gap > 1e-3).all()


@pytest.mark.equation("EBM-12")
def test_transposed_second_rbm_makes_the_dbn_the_first_rbm_and_the_bound_tight():
    # W2 = W1ᵀ: P(h1) is RBM 1's hidden marginal, so P(x) is RBM 1's and Q its exact posterior
    dbn = random_dbn([5, 4, 5], seed=5)
    dbn.init_from_below(1)
    x = states(5)
    rbm1_log_p = dbn.rbms[0].log_prob(x, exact_log_partition(dbn.rbms[0]))
    np.testing.assert_allclose(dbn.log_prob(x), rbm1_log_p, atol=1e-9)
    np.testing.assert_allclose(dbn.variational_bound(x), rbm1_log_p, atol=1e-9)


@pytest.mark.equation("EBM-12")
def test_sampled_bound_agrees_with_the_exact_one():
    mg.manual_seed(0)
    dbn = random_dbn([6, 4, 3, 5], seed=6)
    x = toy_data(8, n_visible=6)
    exact = dbn.variational_bound(x)
    sampled = dbn.variational_bound(x, exact=False, n_samples=4000, log_z=dbn.log_partition())
    np.testing.assert_allclose(sampled, exact, atol=0.15)              # 4000 draws: s.e. ~ 0.03 nats
    assert abs(sampled.mean() - exact.mean()) < 0.05
    with_ais = dbn.variational_bound(x, exact=False, n_samples=4000, n_chains=200, betas=np.linspace(0, 1, 500))
    assert abs(with_ais.mean() - exact.mean()) < 0.1


@pytest.mark.equation("EBM-12")
def test_adding_a_layer_does_not_lower_the_variational_bound():
    # Train RBM 1 (10x6) with plain CD-1; stack RBM 2 (6x10), initialised as RBM 1 transposed, so the
    # 2-layer bound starts *equal* to RBM 1's exact log-likelihood. Training RBM 2 on samples of
    # Q(h1|x) only changes log P(h1) and should raise the bound; CD-10 with a gentle lr, because
    # CD-1 at lr 0.1 / momentum 0.9 is far from maximum likelihood and can lower it.
    mg.manual_seed(0)
    data = toy_data()
    dbn = DeepBeliefNet([10, 6, 10])
    dbn.rbms[0].b.data[...] = base_rate_biases(data)
    layers = dbn.greedy_layers(lr=0.1)
    train(next(layers), data, 400)
    one_layer = float(dbn.rbms[0].log_prob(data, exact_log_partition(dbn.rbms[0])).mean())

    second = next(layers)
    assert np.array_equal(second.rbm.W.data, dbn.rbms[0].W.data.T)
    before = float(dbn.variational_bound(data).mean())
    assert before == pytest.approx(one_layer, abs=1e-9)
    second.cd = ContrastiveDivergence(second.rbm, lr=0.02, k=10, momentum=0.5, weight_decay=0.0)
    bounds = []
    for _ in range(4):
        train(second, data, 100)
        bounds.append(float(dbn.variational_bound(data).mean()))
    print(f"\nmean log p(x): RBM 1 {one_layer:.4f}; 2-layer bound at the tied start {before:.4f}, "
          f"after 100..400 steps of RBM 2 {[round(b, 4) for b in bounds]}; "
          f"2-layer log p(x) {dbn.log_prob(data).mean():.4f}")
    assert min(bounds) >= before and bounds[-1] > before + 0.1
    assert bounds[-1] <= dbn.log_prob(data).mean()


# --------------------------------------------------------------------------- top-down generation

@pytest.mark.equation("EBM-12")
def test_top_down_samples_follow_the_exact_marginal():
    mg.manual_seed(1)
    dbn = random_dbn([4, 3, 3], seed=7)
    samples = dbn.sample(20000, gibbs_steps=30, mean=False)
    codes = samples @ (2 ** np.arange(4)[::-1])            # row index in states(4)
    empirical = np.bincount(codes.astype(int), minlength=16) / len(codes)
    exact = np.exp(dbn.log_prob(states(4)))
    assert 0.5 * np.abs(empirical - exact).sum() < 0.02    # total variation
    pictures = dbn.sample(5, gibbs_steps=3)
    assert pictures.shape == (5, 4) and pictures.dtype == np.float32 and 0 < pictures.min() <= pictures.max() < 1


# --------------------------------------------------------------------------- greedy training

def test_fit_greedy_ties_each_new_layer_then_trains_it():
    mg.manual_seed(2)
    data = toy_data(100)
    dbn = DeepBeliefNet([10, 6, 10, 4])
    history = dbn.fit_greedy(data, [3, 0, 2], batch_size=25)
    assert [row["layer"] for row in history] == [0, 1, 2] and [row["steps"] for row in history] == [12, 0, 8]
    assert np.isfinite(history[0]["reconstruction_error"])
    np.testing.assert_array_equal(dbn.rbms[1].W.data, dbn.rbms[0].W.data.T)   # tied, then 0 epochs
    np.testing.assert_array_equal(dbn.rbms[1].b.data, dbn.rbms[0].c.data)
    assert not dbn.can_tie(2) and np.abs(dbn.rbms[2].W.data).max() > 0.05        # 10x4: trained from random
    assert {name for name, _ in dbn.named_parameters()} >= {"rbms.0.W", "rbms.2.c"}


def test_greedy_layers_drive_the_trainer(tmp_path):
    mg.manual_seed(3)
    dbn = DeepBeliefNet([10, 4, 3])
    loader = DataLoader(toy_data(40).reshape(40, 1, 2, 5), batch_size=10, shuffle=True)
    for layer in dbn.greedy_layers(propagate="mean", monitor_every=1):
        assert isinstance(layer, GreedyLayer)
        row = Trainer(str(tmp_path / f"layer{layer.index}"), layer.rbm, loader, steps=4, step_fn=layer.step,
                      state={"cd": layer.cd}, log_every=2, checkpoint_every=4, progress=False).fit()
        assert row["step"] == 4 and "pseudo_log_likelihood" in row and layer.cd.steps == 4


# --------------------------------------------------------------------------- errors and figures

def test_bad_input_is_a_clear_value_error():
    for sizes in ([], [784], [10, 0], [10, 2.5], "784,500", [10, True]):
        with pytest.raises(ValueError, match="layer_sizes must be a list of at least 2 positive integers"):
            DeepBeliefNet(sizes)
    dbn = DeepBeliefNet([6, 4, 3])
    with pytest.raises(ValueError, match=r"needs 2 hidden layers h1…h2 after x, got 1"):
        dbn.log_joint(np.zeros((1, 6)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"h2 must have shape \(B, 3\), got \(1, 4\)"):
        dbn.log_joint(np.zeros((1, 6)), np.zeros((1, 4)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"x must have 6 values per example.*\(2, 5\)"):
        dbn.variational_bound(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"RBM 1 is 4x3, RBM 0 transposed would be 4x6"):
        dbn.init_from_below(1)
    with pytest.raises(ValueError, match=r"propagate must be one of \('sample', 'mean'\), got 'probs'"):
        dbn.greedy_layers(propagate="probs")
    with pytest.raises(ValueError, match=r"epochs_per_layer must be a number or 2 numbers.*got 3"):
        dbn.fit_greedy(np.zeros((4, 6)), [1, 1, 1])
    with pytest.raises(ValueError, match=r"latent layers \[30\] is too many.*<= 20 units"):
        DeepBeliefNet([6, 30, 3]).log_prob(np.zeros((1, 6)))
    with pytest.raises(ValueError, match=r"latent layers \[500, 500\] is too many"):
        DeepBeliefNet([784, 500, 500, 2000]).variational_bound(np.zeros((1, 784)))
    with pytest.raises(ValueError, match="n_samples: expected an integer >= 1, got 0"):
        dbn.variational_bound(np.zeros((1, 6)), exact=False, n_samples=0, log_z=0.0)


def test_dbn_figures_write_pngs(tmp_path):
    mg.manual_seed(4)
    dbn = DeepBeliefNet([16, 8, 6])
    figures = dbn_figures(dbn, str(tmp_path), np.zeros((3, 1, 4, 4)), n=9, gibbs_steps=5)
    assert len(figures) == 2 and figures[0][0].startswith("top-down samples")
    for _, path in figures:
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"images of shape \(1, 5, 5\) have 25 pixels.*16 visible"):
        dbn_figures(dbn, str(tmp_path), np.zeros((3, 1, 5, 5)))


def test_greedy_training_resumes_exactly_and_ties_each_new_layer():
    """The command line's greedy schedule: layer switches at the same step after a resume."""
    from minigen.models.energy.recipes import GreedyTraining

    cfg = {"lr": 0.05, "cd_k": 1, "persistent": False, "momentum": 0.5, "momentum_warmup": 0, "weight_decay": 0.0}
    data = (np.random.default_rng(3).random((40, 6)) < 0.4).astype(np.float32)

    def fresh():
        mg.manual_seed(0)
        dbn = DeepBeliefNet([6, 4, 6])
        return dbn, GreedyTraining(dbn, total_steps=40, cfg=cfg)

    dbn, greedy = fresh()
    tied = None
    for step in range(40):
        metrics = greedy(data[step % 4 * 10:(step % 4 + 1) * 10])
        if step == 20:   # the first step of layer 1 starts from layer 0 transposed (then trains it)
            tied = metrics["layer"]
    assert tied == 1
    straight = {k: v.numpy().copy() for k, v in dbn.state_dict().items()}

    dbn, greedy = fresh()
    for step in range(25):
        greedy(data[step % 4 * 10:(step % 4 + 1) * 10])
    saved = (dbn.state_dict(), greedy.state_dict(), mg.random.get_rng_state())
    dbn, greedy = fresh()
    dbn.load_state_dict(saved[0])
    greedy.load_state_dict(saved[1])
    mg.random.set_rng_state(saved[2])
    for step in range(25, 40):
        greedy(data[step % 4 * 10:(step % 4 + 1) * 10])
    for name, value in dbn.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), straight[name], err_msg=name)
