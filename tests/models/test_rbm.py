"""Restricted Boltzmann machines against the lecture's Eq. EBM-11.

Tiny RBMs are the ground truth: with a handful of units every sum over
configurations can be done by enumeration in float64, so the free energy,
the conditionals, the partition function and the exact log-likelihood
gradient are all checked against brute force, and the Monte Carlo pieces
(Gibbs sampling, CD/PCD, AIS) against those within their sampling error.
"""
import itertools
from pathlib import Path
import math

import numpy as np
import pytest

import minigen as mg
from minigen.data import DataLoader
from minigen.models.energy.rbm import (MAX_ENUMERATED_UNITS, AISEstimate, BernoulliRBM, ContrastiveDivergence,
                                       GaussianBernoulliRBM, ais_log_partition, ais_schedule, ais_vs_exact,
                                       base_rate_biases, exact_log_partition, plot_filters)
from minigen.train import Trainer

pytestmark = pytest.mark.equation("EBM-11")


def states(n):
    """All 2^n binary vectors, float64 (2^n, n)."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def random_rbm(n_visible, n_hidden, seed=0, scale=1.0, cls=BernoulliRBM, **kwargs):
    rng = np.random.default_rng(seed)
    rbm = cls(n_visible, n_hidden, **kwargs)
    rbm.W.data[...] = rng.normal(scale=scale, size=(n_visible, n_hidden))
    rbm.b.data[...] = rng.normal(scale=0.5, size=n_visible)
    rbm.c.data[...] = rng.normal(scale=0.5, size=n_hidden)
    return rbm


def exact_log_probs(rbm):
    """log p(v) of every visible configuration (float64, by enumeration)."""
    v = states(rbm.n_visible)
    return v, -rbm.free_energy(v) - exact_log_partition(rbm)


def exact_gradient(rbm, data):
    """The exact gradient of the mean log-likelihood: data statistics minus model expectations,
    the model side summed over all 2^n_v visible states weighted by p(v)."""
    v, log_p = exact_log_probs(rbm)
    weights = np.exp(log_p)
    p_v, p_data = rbm.hidden_probs(v).astype(np.float64), rbm.hidden_probs(data).astype(np.float64)
    return {"W": data.T @ p_data / len(data) - (v * weights[:, None]).T @ p_v,
            "b": data.mean(0) - weights @ v, "c": p_data.mean(0) - weights @ p_v}


def toy_data(n_visible=8, n=64, seed=0):
    """Two noisy prototype patterns: an easy, clearly non-factorized distribution."""
    rng = np.random.default_rng(seed)
    prototypes = np.array([[1, 1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 1]], np.float32)[:, :n_visible]
    x = prototypes[rng.integers(0, 2, n)]
    flips = rng.random(x.shape) < 0.05
    return np.where(flips, 1 - x, x).astype(np.float32)


def mean_log_likelihood(rbm, data):
    return float(rbm.log_prob(data, exact_log_partition(rbm)).mean())


# --------------------------------------------------------------------------- energy and free energy

def test_free_energy_sums_out_the_hidden_units():
    # F(v) = -log Σ_h e^{-E(v,h)}, by enumerating h
    rbm = random_rbm(5, 4)
    v, h = states(5), states(4)
    energies = np.stack([rbm.energy(v, np.broadcast_to(row, (len(v), 4))) for row in h], 1)
    brute = -np.log(np.exp(-energies).sum(1))
    np.testing.assert_allclose(rbm.free_energy(v), brute, rtol=1e-10, atol=1e-10)


def test_free_energy_identity_p_v_is_exp_minus_f_over_z():
    # p(v) = e^{-F(v)}/Z: summing the joint e^{-E}/Z over h gives the same numbers, and they sum to 1
    rbm = random_rbm(6, 5, seed=1)
    v, h = states(6), states(5)
    log_z = exact_log_partition(rbm)
    joint = np.exp(-np.stack([rbm.energy(v, np.broadcast_to(row, (len(v), 5))) for row in h], 1) - log_z)
    np.testing.assert_allclose(np.exp(rbm.log_prob(v, log_z)), joint.sum(1), rtol=1e-10)
    assert joint.sum() == pytest.approx(1.0, abs=1e-12)


def test_log_partition_is_the_same_enumerating_either_layer():
    # A 6x9 RBM enumerates its 6 visibles, its transpose (9x6, W^T, biases swapped) its 6 hiddens.
    rbm = random_rbm(6, 9, seed=2)
    transposed = BernoulliRBM(9, 6)
    transposed.W.data[...] = rbm.W.data.T
    transposed.b.data[...], transposed.c.data[...] = rbm.c.data, rbm.b.data
    assert exact_log_partition(rbm) == pytest.approx(exact_log_partition(transposed), abs=1e-10)
    assert exact_log_partition(rbm, chunk=7) == pytest.approx(exact_log_partition(rbm), abs=1e-10)


def test_exact_log_partition_refuses_large_layers():
    with pytest.raises(ValueError, match=r"<= 25 units.*n_hidden=26"):
        exact_log_partition(BernoulliRBM(30, MAX_ENUMERATED_UNITS + 1))


# --------------------------------------------------------------------------- conditionals and sampling

def test_conditionals_are_the_normalized_joint():
    # p(h_j=1|v) and p(v_i=1|h) from Bayes' rule on the enumerated joint
    rbm = random_rbm(4, 3, seed=3)
    v, h = states(4), states(3)
    joint = np.exp(-np.stack([rbm.energy(v, np.broadcast_to(row, (len(v), 3))) for row in h], 1))  # (v, h)
    p_h_given_v = (joint / joint.sum(1, keepdims=True)) @ h
    p_v_given_h = (joint / joint.sum(0, keepdims=True)).T @ v
    np.testing.assert_allclose(rbm.hidden_probs(v), p_h_given_v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rbm.visible_mean(h.astype(np.float32)), p_v_given_h, rtol=1e-5, atol=1e-6)


def test_block_gibbs_chains_reach_the_model_distribution():
    mg.manual_seed(0)
    rbm = random_rbm(4, 3, seed=4)
    samples = rbm.sample(20000, steps=30, mean=False)
    codes = samples @ (2 ** np.arange(4)[::-1])           # row index in states(4)
    empirical = np.bincount(codes.astype(int), minlength=16) / len(codes)
    _, log_p = exact_log_probs(rbm)
    assert 0.5 * np.abs(empirical - np.exp(log_p)).sum() < 0.02   # total variation


def test_sample_shapes_and_chains_started_from_data():
    mg.manual_seed(0)
    rbm = random_rbm(8, 4, seed=5)
    means = rbm.sample(5, steps=3, init=toy_data(8, 5))
    assert means.shape == (5, 8) and means.dtype == np.float32 and (0 <= means).all() and (means <= 1).all()


# --------------------------------------------------------------------------- Gaussian-Bernoulli

def test_gaussian_free_energy_integrates_to_the_partition_function():
    # One visible unit: ∫ e^{-F(v)} dv by quadrature = Z by enumerating h
    rbm = random_rbm(1, 3, seed=6, cls=GaussianBernoulliRBM, sigma=0.7)
    v = np.linspace(-15, 15, 60001)[:, None]
    z = np.trapezoid(np.exp(-rbm.free_energy(v)), v[:, 0])
    assert math.log(z) == pytest.approx(exact_log_partition(rbm), abs=1e-8)


def test_gaussian_conditionals():
    mg.manual_seed(1)
    rbm = random_rbm(3, 4, seed=7, cls=GaussianBernoulliRBM, sigma=[0.5, 1.0, 2.0])
    v, h = np.random.default_rng(0).normal(size=(5, 3)), states(4)
    # p(h|v) from the enumerated joint
    joint = np.exp(-np.stack([rbm.energy(v, np.broadcast_to(row, (len(v), 4))) for row in h], 1))
    np.testing.assert_allclose(rbm.hidden_probs(v), (joint / joint.sum(1, keepdims=True)) @ h, rtol=1e-5)
    # p(v|h) = N(b + σ W h, σ²): moments of many draws
    h_one = np.ones((200000, 4), np.float32)
    mean, draws = rbm.sample_visible(h_one)
    np.testing.assert_allclose(draws.mean(0), mean[0], atol=0.02)
    np.testing.assert_allclose(draws.std(0), [0.5, 1.0, 2.0], rtol=0.01)


@pytest.mark.parametrize("cls, kwargs", [(BernoulliRBM, {}),
                                         (GaussianBernoulliRBM, {"sigma": [0.5, 1.5, 1.0], "learn_sigma": True})])
def test_log_likelihood_gradient_is_minus_the_free_energy_gradient(cls, kwargs):
    # the estimate is -<∂F/∂θ>_data + <∂F/∂θ>_model: check against finite differences of F
    rbm = random_rbm(3, 2, seed=8, cls=cls, **kwargs)
    rbm.to(np.float64)
    rng = np.random.default_rng(1)
    v_data, v_model = rng.random((4, 3)) < 0.5, rng.random((6, 3)) < 0.5
    v_data, v_model = v_data.astype(np.float64), v_model.astype(np.float64)
    grads = rbm.log_likelihood_gradient(v_data, rbm.hidden_probs(v_data), v_model, rbm.hidden_probs(v_model))

    def objective():
        return rbm.free_energy(v_model).mean() - rbm.free_energy(v_data).mean()
    for name, param in rbm.named_parameters():
        numeric = np.zeros_like(param.data)
        for index in np.ndindex(param.data.shape):
            saved = param.data[index]
            param.data[index] = saved + 1e-6
            up = objective()
            param.data[index] = saved - 1e-6
            numeric[index] = (up - objective()) / 2e-6
            param.data[index] = saved
        np.testing.assert_allclose(grads[name], numeric, atol=1e-6, err_msg=name)


# --------------------------------------------------------------------------- learning

def test_exact_gradient_is_the_derivative_of_the_exact_log_likelihood():
    rbm = random_rbm(5, 3, seed=9, scale=0.5)
    rbm.to(np.float64)
    data = toy_data(5, 20).astype(np.float64)
    grads = exact_gradient(rbm, data)
    for name, param in rbm.named_parameters():
        index = (1, 2) if param.data.ndim == 2 else (1,)
        saved = param.data[index]
        param.data[index] = saved + 1e-6
        up = mean_log_likelihood(rbm, data)
        param.data[index] = saved - 1e-6
        numeric = (up - mean_log_likelihood(rbm, data)) / 2e-6
        param.data[index] = saved
        assert grads[name][index] == pytest.approx(numeric, abs=1e-6), name


def cd_gradient(rbm, data, **kwargs):
    """The update of one CD step with lr 1, no momentum and no decay: the gradient estimate itself."""
    before = {name: p.data.astype(np.float64) for name, p in rbm.named_parameters()}
    cd = ContrastiveDivergence(rbm, lr=1.0, momentum=0.0, initial_momentum=0.0, weight_decay=0.0,
                               monitor_every=0, **kwargs)
    cd.cd_step(data)
    grads = {name: p.data - before[name] for name, p in rbm.named_parameters()}
    for name, p in rbm.named_parameters():
        p.data[...] = before[name]
    return grads


@pytest.mark.parametrize("persistent", [False, True])
def test_cd_k_with_long_chains_matches_the_exact_gradient(persistent):
    mg.manual_seed(2)
    rbm = random_rbm(6, 4, seed=10, scale=0.7)
    data = toy_data(6, 8)
    exact = exact_gradient(rbm, data.astype(np.float64))
    # 4000 copies of 8 examples: the positive phase is exact in expectation, the negative
    # chains run 100 sweeps (mixing is fast for weights this small); MC error ~ 0.5/sqrt(32000).
    # PCD's first step starts its chains at the data, so it is the same estimate.
    sampled = cd_gradient(rbm, np.tile(data, (4000, 1)), k=100, sample_reconstruction=True, persistent=persistent)
    for name in exact:
        np.testing.assert_allclose(sampled[name], exact[name], atol=0.015, err_msg=name)


def test_cd_1_points_uphill():
    # CD-1 is biased, but its update still has a clearly positive inner product with the exact gradient.
    mg.manual_seed(3)
    rbm = random_rbm(8, 6, seed=11, scale=0.3)
    data = toy_data(8, 64)
    exact = np.concatenate([g.ravel() for g in exact_gradient(rbm, data.astype(np.float64)).values()])
    cd = cd_gradient(rbm, np.tile(data, (50, 1)))
    cd = np.concatenate([cd[name].ravel() for name in ("W", "b", "c")])
    assert cd @ exact / (np.linalg.norm(cd) * np.linalg.norm(exact)) > 0.8


@pytest.mark.parametrize("persistent", [False, True])
def test_training_increases_the_exact_log_likelihood(persistent):
    mg.manual_seed(4)
    rbm = BernoulliRBM(8, 6)
    data = toy_data(8, 200)
    rbm.b.data[...] = base_rate_biases(data)
    # PCD with momentum 0.9 oscillates on two modes (see ContrastiveDivergence): 0.5, 100 chains
    cd = ContrastiveDivergence(rbm, lr=0.05, persistent=persistent, momentum=0.5, n_chains=100, weight_decay=1e-4)
    before = mean_log_likelihood(rbm, data)
    for step in range(300):
        cd.cd_step(data[(step % 10) * 20:(step % 10 + 1) * 20])
    after = mean_log_likelihood(rbm, data)
    # the factorized start scores 8·H(0.5) ≈ -5.5 nats; two prototypes with 5% noise ≈ -2.2
    assert before < -5.0 and after > before + 1.5


def test_gaussian_rbm_learns_real_valued_data():
    # Two well-separated 2-D clusters of standardized data: the GB-RBM's p(v) is a mixture of
    # 2^n_h Gaussians (Eq. EBM-11 with Gaussian visibles), and CD-1 fits it. log Z is exact
    # (the hidden layer is enumerated, each term a Gaussian integral), so this is the real
    # log-likelihood, which must end well above the single-Gaussian start.
    mg.manual_seed(5)
    rng = np.random.default_rng(5)
    centres = np.array([[1.0, 1.0], [-1.0, -1.0]])
    data = (centres[rng.integers(0, 2, 400)] + 0.3 * rng.normal(size=(400, 2))).astype(np.float32)
    rbm = GaussianBernoulliRBM(2, 4, sigma=0.5)
    cd = ContrastiveDivergence(rbm, lr=0.05, momentum=0.5, weight_decay=0.0)
    before = mean_log_likelihood(rbm, data)
    for step in range(600):
        cd.cd_step(data[(step % 20) * 20:(step % 20 + 1) * 20])
    after = mean_log_likelihood(rbm, data)
    # the start, N(0, 0.5² I), scores -4.8 nats; the true density -1.1 (σ stays 0.5, wider than
    # the clusters' 0.3, so the model cannot quite reach it); CD-1 gets to about -1.6
    assert before < -4.0 and after > -2.0, (before, after)


def test_cd_step_metrics_and_checkpointed_state(tmp_path):
    data = toy_data(8, 40)
    validation = toy_data(8, 20, seed=1)

    def run(steps, state=None):
        mg.manual_seed(5)
        rbm = BernoulliRBM(8, 4)
        cd = ContrastiveDivergence(rbm, persistent=True, n_chains=7, monitor_every=2, validation=validation)
        if state is not None:
            rbm.load_state_dict(state["model"])
            cd.load_state_dict(state["cd"])
            mg.random.set_rng_state(state["rng"])
        metrics = [cd.cd_step((data[i * 10:(i + 1) * 10], None)) for i in steps]
        return rbm, cd, metrics

    rbm, cd, metrics = run(range(4))
    assert set(metrics[1]) == {"reconstruction_error", "pseudo_log_likelihood", "free_energy_gap"}
    assert metrics[0] == {} and cd.chains.shape == (7, 4)
    # Stop after 2 steps, save everything with mg.save, resume: the same parameters as straight through.
    first, first_cd, _ = run(range(2))
    mg.save({"model": first.state_dict(), "cd": first_cd.state_dict(), "rng": mg.random.get_rng_state()},
            tmp_path / "ckpt.npz")
    resumed, resumed_cd, _ = run(range(2, 4), mg.load(tmp_path / "ckpt.npz"))
    for name, p in rbm.named_parameters():
        np.testing.assert_array_equal(dict(resumed.named_parameters())[name].data, p.data)
    np.testing.assert_array_equal(resumed_cd.chains, cd.chains)


def test_lr_schedule_sets_the_rate_of_each_update():
    # Without momentum or decay an update moves W by lr_t * g, so a schedule that returns
    # the constant rate changes nothing and one that returns 0 after step 1 freezes the net.
    data = toy_data(8, 40)

    def train(**kwargs):
        mg.manual_seed(7)
        rbm = BernoulliRBM(8, 4)
        cd = ContrastiveDivergence(rbm, lr=0.1, momentum=0.0, initial_momentum=0.0, weight_decay=0.0, **kwargs)
        snapshots = []
        for i in range(4):
            cd.cd_step(data[i * 10:(i + 1) * 10])
            snapshots.append(rbm.W.data.copy())
        return snapshots

    constant = train()
    np.testing.assert_array_equal(train(lr_schedule=lambda t: 0.1)[-1], constant[-1])
    frozen = train(lr_schedule=lambda t: 0.1 if t < 2 else 0.0)
    np.testing.assert_array_equal(frozen[1], constant[1])
    np.testing.assert_array_equal(frozen[3], frozen[1])
    assert not np.array_equal(constant[3], constant[1])


def test_cd_step_runs_in_the_trainer(tmp_path):
    mg.manual_seed(6)
    rbm = BernoulliRBM(8, 4)
    cd = ContrastiveDivergence(rbm, monitor_every=1)
    loader = DataLoader(toy_data(8, 40).reshape(40, 1, 2, 4), batch_size=10, shuffle=True)
    row = Trainer(str(tmp_path / "run"), rbm, loader, steps=6, step_fn=cd.cd_step, state={"cd": cd},
                  log_every=3, checkpoint_every=3, progress=False).fit()
    assert row["step"] == 6 and "reconstruction_error" in row and "pseudo_log_likelihood" in row


# --------------------------------------------------------------------------- AIS

def test_ais_schedule_has_salakhutdinov_and_murrays_14500_steps():
    betas = ais_schedule()
    assert len(betas) - 1 == 14500 and betas[0] == 0 and betas[-1] == 1
    assert np.diff(betas)[[0, 600, -1]] == pytest.approx([1e-3, 1e-4, 1e-5])


def test_ais_agrees_with_exact_log_partition():
    mg.manual_seed(7)
    rbm = BernoulliRBM(40, 14)
    data = (np.random.default_rng(0).random((500, 40)) < np.linspace(0.05, 0.6, 40)).astype(np.float32)
    data[:250, :20] = 1 - data[:250, :20]               # two clusters: the weights must do something
    rbm.b.data[...] = base_rate_biases(data)
    cd = ContrastiveDivergence(rbm, lr=0.1, momentum_warmup=50)
    for step in range(150):
        cd.cd_step(data[(step % 5) * 100:(step % 5 + 1) * 100])
    report = ais_vs_exact(rbm, data, n_chains=100, betas=ais_schedule(scale=0.1))
    assert report["agrees"], report
    assert report["lower"] - 0.05 <= report["exact"] <= report["upper"] + 0.05
    assert report["mean_log_prob_exact"] > -40 * math.log(2)   # better than uniform


def test_ais_from_a_matching_base_is_exact():
    # with zero weights and the base biases equal to b, every importance weight is 1
    rbm = BernoulliRBM(10, 3)
    rbm.W.data[...] = 0
    rbm.b.data[...] = np.linspace(-2, 2, 10)
    estimate = ais_log_partition(rbm, base_biases=np.linspace(-2, 2, 10), betas=np.linspace(0, 1, 5), n_chains=4)
    assert isinstance(estimate, AISEstimate)
    np.testing.assert_allclose(estimate.log_weights, 0, atol=1e-5)
    assert estimate.log_z == pytest.approx(exact_log_partition(rbm), abs=1e-5)


def test_ais_for_gaussian_visibles_agrees_with_exact_log_partition():
    # 12 hidden units: log Z is a sum of 2^12 Gaussian integrals; AIS anneals only W and c.
    mg.manual_seed(8)
    rbm = random_rbm(6, 12, seed=12, scale=0.4, cls=GaussianBernoulliRBM, sigma=np.linspace(0.5, 1.5, 6))
    exact = exact_log_partition(rbm)
    estimate = ais_log_partition(rbm, betas=ais_schedule(scale=0.1), n_chains=200)
    assert abs(estimate.log_z - exact) < 0.05 and estimate.lower - 0.02 <= exact <= estimate.upper + 0.02
    uncoupled = random_rbm(6, 3, seed=1, cls=GaussianBernoulliRBM, sigma=0.8)
    uncoupled.W.data[...] = 0            # zero couplings: the base model is the model, every weight is 1
    uncoupled.c.data[...] = 0
    flat = ais_log_partition(uncoupled, betas=np.linspace(0, 1, 5), n_chains=4)
    np.testing.assert_allclose(flat.log_weights, 0, atol=1e-6)
    assert flat.log_z == pytest.approx(exact_log_partition(uncoupled), abs=1e-5)
    with pytest.raises(ValueError, match="base_biases are for binary visibles"):
        ais_log_partition(rbm, base_biases=np.zeros(6))


# --------------------------------------------------------------------------- errors and figures

def test_bad_input_is_a_clear_value_error():
    rbm = BernoulliRBM(8, 4)
    with pytest.raises(ValueError, match=r"v must have 8 values per example.*\(3, 7\)"):
        rbm.free_energy(np.zeros((3, 7)))
    with pytest.raises(ValueError, match="n_hidden: expected an integer >= 1, got 0"):
        BernoulliRBM(8, 0)
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        GaussianBernoulliRBM(3, 2, sigma=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="betas must increase from 0 to 1"):
        ais_log_partition(rbm, betas=[0.0, 0.5])
    with pytest.raises(ValueError, match=r"base_biases must have shape \(8,\)"):
        ais_log_partition(rbm, base_biases=np.zeros(3))
    with pytest.raises(ValueError, match="batch must have 8 values"):
        ContrastiveDivergence(rbm).cd_step(np.zeros((2, 9), np.float32))
    with pytest.raises(ValueError, match=r"image_shape \(28, 28\) has 784 pixels.*n_visible=8"):
        plot_filters(rbm, "unused.png")


def test_plot_filters_writes_a_png(tmp_path):
    rbm = BernoulliRBM(16, 6)
    path = plot_filters(rbm, str(tmp_path / "filters.png"), image_shape=(4, 4))
    assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
