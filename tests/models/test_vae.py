"""The VAE family against the lecture: Eq. VAE-1…VAE-6, DIF-1, DIF-2.

The linear-Gaussian model is the ground truth: its marginal, posterior and
the three terms of Eq. VAE-3 are known in closed form (float64 NumPy), and
the real VAE code (ELBO, IWAE bound, reparameterized sampling) runs on it.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigen as mg
from minigen import nn
from minigen.distributions import Normal, kl_divergence
from minigen.metrics import iwae_log_likelihood
from minigen.models.vae import (ConvDecoder, ConvEncoder, HierarchicalVAE, LinearGaussianVAE, MLPDecoder,
                                MLPEncoder, VAE, log_mean_exp)


def linear_model(seed, data_dim=4, latent_dim=2, obs_scale=0.7, posterior=False, wide=False):
    """A random linear-Gaussian VAE; with ``posterior=True`` (d = 1) q is the exact posterior,
    with ``wide=True`` q has the posterior mean and a variance above every posterior
    eigenvalue (bounded importance weights: the IS estimate converges fast)."""
    rng = np.random.default_rng(seed)
    m = LinearGaussianVAE(data_dim, latent_dim, obs_scale=obs_scale)
    m.decoder.weight.data[...] = rng.normal(size=(data_dim, latent_dim))
    m.decoder.bias.data[...] = rng.normal(size=data_dim)
    m.encoder.mean.weight.data[...] = rng.normal(scale=0.5, size=(latent_dim, data_dim))
    m.encoder.mean.bias.data[...] = rng.normal(scale=0.5, size=latent_dim)
    m.encoder.log_scale.data[...] = rng.normal(scale=0.3, size=latent_dim)
    if wide:
        w, b = m._w_b()
        cov = np.linalg.inv(np.eye(latent_dim) + w.T @ w / obs_scale ** 2)
        m.encoder.mean.weight.data[...] = (cov @ w.T / obs_scale ** 2).astype(np.float32)
        m.encoder.mean.bias.data[...] = (-(cov @ w.T @ b) / obs_scale ** 2).astype(np.float32)
        m.encoder.log_scale.data[...] = 0.5 * np.log(1.5 * np.linalg.eigvalsh(cov).max())
    if posterior:
        w, b = m._w_b()
        cov = np.linalg.inv(np.eye(latent_dim) + w.T @ w / obs_scale ** 2)
        assert latent_dim == 1, "a diagonal q equals the posterior only for one latent"
        m.encoder.mean.weight.data[...] = (cov @ w.T / obs_scale ** 2).astype(np.float32)
        m.encoder.mean.bias.data[...] = (-(cov @ w.T @ b) / obs_scale ** 2).astype(np.float32)
        m.encoder.log_scale.data[...] = 0.5 * np.log(np.diag(cov))
    x = rng.normal(size=(3, data_dim)).astype(np.float32) + m._w_b()[1].astype(np.float32)
    return m, x


# --------------------------------------------------------------------------- VAE-1 / VAE-2 / VAE-3

@pytest.mark.equation("VAE-1")
def test_importance_sampling_estimate_converges_to_exact_marginal():
    m, x = linear_model(0, wide=True)
    exact = m.exact_log_marginal(x)
    errors = []
    for k in (1, 100, 30000):
        mg.manual_seed(1)
        estimate = iwae_log_likelihood(m, x, k=k, chunk=1000)
        errors.append(np.abs(estimate - exact).max())
    assert errors[2] < 0.03
    assert errors[0] > errors[1] > errors[2]


@pytest.mark.equation("VAE-1")
def test_marginal_is_the_integral_of_prior_times_likelihood():
    # p(x) = ∫ p(z) p(x|z) dz by quadrature on a 1-D latent grid
    m, x = linear_model(1, data_dim=3, latent_dim=1)
    z = np.linspace(-10, 10, 20001)[:, None]
    for row in x:
        integrand = np.exp(m.log_joint(np.broadcast_to(row, (len(z), 3)), z))
        assert math.log(np.trapezoid(integrand, z[:, 0])) == pytest.approx(m.exact_log_marginal(row[None])[0], abs=1e-6)


@pytest.mark.equation("VAE-2")
def test_posterior_is_bayes_rule():
    # p(z|x) = p(x|z) p(z) / p(x): on a 2-D latent grid, Bayes' rule evaluated
    # pointwise equals the closed-form Gaussian posterior.
    m, x = linear_model(2, data_dim=5, latent_dim=2)
    mean, cov = m.exact_posterior(x)
    g = np.stack(np.meshgrid(np.linspace(-2, 2, 9), np.linspace(-2, 2, 9)), -1).reshape(-1, 2)
    for i, row in enumerate(x):
        z = mean[i] + g
        bayes = m.log_joint(np.broadcast_to(row, (len(z), 5)), z) - m.exact_log_marginal(row[None])[0]
        d = z - mean[i]
        closed = (-0.5 * np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
                  - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1])
        np.testing.assert_allclose(bayes, closed, rtol=1e-9, atol=1e-9)


@pytest.mark.equation("VAE-3")
@given(seed=st.integers(0, 10_000), dims=st.sampled_from([(3, 1), (4, 2), (6, 3)]),
       obs_scale=st.floats(0.2, 2.0))
@settings(max_examples=25)
def test_three_terms_add_up_to_log_marginal_for_any_q(seed, dims, obs_scale):
    m, x = linear_model(seed, *dims, obs_scale=obs_scale)
    t = m.exact_terms(x)
    assert (t["prior_kl"] >= -1e-9).all() and (t["posterior_kl"] >= -1e-9).all()
    np.testing.assert_allclose(t["reconstruction"] - t["prior_kl"] + t["posterior_kl"],
                               m.exact_log_marginal(x), rtol=1e-5, atol=1e-4)


@pytest.mark.equation("VAE-3")
def test_vae_code_computes_the_same_terms():
    # The ELBO code path (one reparameterized sample, closed-form KL) is an
    # unbiased estimate of the exact reconstruction term and exact in the KL.
    m, x = linear_model(3)
    t = m.exact_terms(x)
    xs = mg.tensor(np.repeat(x, 20000, axis=0))
    with mg.no_grad():
        terms = m.elbo(xs)
    recon = terms["reconstruction"].numpy().reshape(3, -1)
    np.testing.assert_allclose(recon.mean(1), t["reconstruction"], rtol=0.01)
    np.testing.assert_allclose(terms["kl"].numpy().reshape(3, -1)[:, 0], t["prior_kl"], rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- VAE-4 / DIF-1

@pytest.mark.equation("VAE-4")
@pytest.mark.equation("DIF-1")
@given(seed=st.integers(0, 10_000))
@settings(max_examples=20)
def test_elbo_is_below_log_marginal_and_tight_at_the_posterior(seed):
    m, x = linear_model(seed)
    t = m.exact_terms(x)
    assert (t["reconstruction"] - t["prior_kl"] <= m.exact_log_marginal(x) + 1e-6).all()
    m1, x1 = linear_model(seed, data_dim=3, latent_dim=1, posterior=True)
    t1 = m1.exact_terms(x1)
    np.testing.assert_allclose(t1["posterior_kl"], 0.0, atol=2e-5)
    np.testing.assert_allclose(t1["reconstruction"] - t1["prior_kl"], m1.exact_log_marginal(x1), atol=1e-4)


@pytest.mark.equation("VAE-4")
def test_closed_form_kl_matches_monte_carlo():
    rng = np.random.default_rng(0)
    q = Normal(mg.tensor(rng.normal(size=(4,))), log_scale=mg.tensor(rng.normal(scale=0.5, size=(4,))))
    p = Normal(mg.tensor(rng.normal(size=(4,))), scale=mg.tensor(rng.uniform(0.5, 2, size=(4,))))
    z = q.sample((200_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).numpy().mean(0)
    np.testing.assert_allclose(kl_divergence(q, p).numpy(), mc, atol=0.02)


@pytest.mark.equation("VAE-4")
def test_iwae_bound_increases_with_k():
    m, x = linear_model(4)
    xs = mg.tensor(np.repeat(x, 2000, axis=0))
    with mg.no_grad():
        bounds = [m.iwae_bound(xs, k).numpy().reshape(3, -1).mean(1) for k in (1, 5, 50)]
    exact = m.exact_log_marginal(x)
    assert (bounds[0] < bounds[1]).all() and (bounds[1] < bounds[2]).all()
    assert (bounds[2] <= exact + 0.01).all()


def test_log_mean_exp_is_stable():
    x = mg.tensor(np.array([[1000.0, 1000.0], [-1000.0, -1000.0 + math.log(3)]]))
    np.testing.assert_allclose(log_mean_exp(x, dim=1).numpy(), [1000.0, -1000.0 + math.log(2)], rtol=1e-6)


def test_iwae_log_likelihood_combines_chunks_exactly():
    class Fake:
        """log_weights draws from a fixed stream, so chunking must not change the answer."""
        def __init__(self):
            self.stream = iter(np.random.default_rng(0).normal(size=(10_000, 3)) * 50)
            self.param = mg.zeros(1)

        def parameters(self):
            return iter([self.param])

        def log_weights(self, x, k):
            return mg.tensor(np.stack([next(self.stream) for _ in range(k)]))

    all_w = np.random.default_rng(0).normal(size=(120, 3)) * 50
    expected = np.logaddexp.reduce(all_w, axis=0) - math.log(120)
    for chunk in (120, 7, 1):
        got = iwae_log_likelihood(Fake(), np.zeros((3, 1), np.float32), k=120, chunk=chunk)
        np.testing.assert_allclose(got, expected, rtol=1e-12)


# --------------------------------------------------------------------------- VAE-5

@pytest.mark.equation("VAE-5")
def test_reparameterized_gradient_matches_finite_differences():
    # d/dθ E[f(z)], z = μ + εσ, f(z) = exp(z/2) + z²: gradient through the
    # sample (common ε) equals central finite differences of the estimate,
    # and both approach the analytic derivative of the expectation.
    mu = mg.tensor(np.array([0.3, -0.7]), requires_grad=True)
    log_sigma = mg.tensor(np.array([-0.2, 0.4]), requires_grad=True)
    mg.manual_seed(5)
    z = Normal(mu, log_scale=log_sigma).rsample((100_000,))
    ((z * 0.5).exp() + z * z).mean(0).sum().backward()

    def estimate(m, ls):
        mg.manual_seed(5)
        zz = Normal(mg.tensor(m), log_scale=mg.tensor(ls)).rsample((100_000,)).numpy()
        return (np.exp(zz / 2) + zz ** 2).mean(0).sum()

    h = 1e-5
    m0, l0 = mu.detach().numpy().copy(), log_sigma.detach().numpy().copy()
    for i in range(2):
        e = np.eye(2)[i] * h
        assert mu.grad.numpy()[i] == pytest.approx((estimate(m0 + e, l0) - estimate(m0 - e, l0)) / (2 * h), rel=1e-5)
        assert log_sigma.grad.numpy()[i] == pytest.approx((estimate(m0, l0 + e) - estimate(m0, l0 - e)) / (2 * h),
                                                          rel=1e-5)
    sigma = np.exp(l0)
    # E[e^{z/2}] = e^{μ/2 + σ²/8}, E[z²] = μ² + σ²
    e = np.exp(m0 / 2 + sigma ** 2 / 8)
    d_mu = e / 2 + 2 * m0
    d_log_sigma = e * sigma ** 2 / 4 + 2 * sigma ** 2
    np.testing.assert_allclose(mu.grad.numpy(), d_mu, rtol=0.01)
    np.testing.assert_allclose(log_sigma.grad.numpy(), d_log_sigma, rtol=0.01)


@pytest.mark.equation("VAE-5")
def test_reparameterized_samples_have_the_stated_moments():
    q = Normal(mg.tensor(np.array([1.5, -2.0], np.float32)), scale=mg.tensor(np.array([0.5, 3.0], np.float32)))
    z = q.rsample((200_000,)).numpy()
    np.testing.assert_allclose(z.mean(0), [1.5, -2.0], atol=0.02)
    np.testing.assert_allclose(z.var(0), [0.25, 9.0], rtol=0.02)


# --------------------------------------------------------------------------- VAE-6

class Recorder(nn.Module):
    """A decoder that remembers the z it was given."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, z):
        self.seen.append(z.numpy().copy())
        return self.inner(z)


@pytest.mark.equation("VAE-6")
def test_latent_traversal_varies_only_the_chosen_latent():
    dec = Recorder(MLPDecoder((1, 8, 8), latent_dim=6, hidden=(16,)))
    m = VAE(MLPEncoder((1, 8, 8), 6, (16,)), dec, 6)
    base = np.random.default_rng(0).normal(size=6).astype(np.float32)
    values = np.linspace(-3, 3, 5)
    grid = m.latent_traversal(base, dims=[1, 4], values=values)
    assert grid.shape == (2, 5, 1, 8, 8)
    z = dec.seen[-1].reshape(2, 5, 6)
    for row, d in enumerate([1, 4]):
        np.testing.assert_allclose(z[row, :, d], values, rtol=1e-6)
        others = np.delete(z[row], d, axis=1)
        np.testing.assert_array_equal(others, np.broadcast_to(np.delete(base, d), others.shape))
    assert np.ptp(grid[0], axis=0).max() > 0   # the images do change along the row


@pytest.mark.equation("VAE-6")
def test_prior_samples_decode_to_images():
    m = VAE(ConvEncoder((1, 8, 8), 4), ConvDecoder((1, 8, 8), 4), 4)
    s = m.sample(5)
    assert s.shape == (5, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
    mg.manual_seed(3)
    binary = m.sample(5, mean=False)
    assert set(np.unique(binary)) <= {0.0, 1.0}


# --------------------------------------------------------------------------- training, variants

def digits(n=512):
    from sklearn.datasets import load_digits
    x = load_digits().images[:n].astype(np.float32)[:, None] / 16
    return (np.random.default_rng(0).random(x.shape) < x).astype(np.float32)


def train(model, x, steps=300, lr=3e-3):
    opt = mg.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    history = []
    for _ in range(steps):
        loss, metrics = model.loss((mg.tensor(x[rng.integers(0, len(x), 64)]),))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(metrics["loss"])
    return np.mean(history[:20]), np.mean(history[-20:])


@pytest.mark.parametrize("arch,likelihood,k", [("mlp", "bernoulli", 1), ("conv", "bernoulli", 1),
                                                ("mlp", "gaussian", 1), ("mlp", "bernoulli", 5)])
def test_vae_variants_train(arch, likelihood, k):
    x = digits()
    m_out = VAE.params_per_pixel(likelihood)
    if arch == "mlp":
        enc, dec = MLPEncoder((1, 8, 8), 8, (64,)), MLPDecoder((1, 8, 8), 8, (64,), params_per_pixel=m_out)
    else:
        enc, dec = ConvEncoder((1, 8, 8), 8, (8, 16)), ConvDecoder((1, 8, 8), 8, (8, 16), params_per_pixel=m_out)
    m = VAE(enc, dec, 8, likelihood=likelihood, k=k)
    first, last = train(m, x)
    assert last < first - 5, (first, last)
    loss, metrics = m.loss((mg.tensor(x[:10]),))
    assert (f"iwae{k}" if k > 1 else "kl") in metrics
    assert m.reconstruct(mg.tensor(x[:4])).shape == (4, 1, 8, 8)
    assert m.encode(mg.tensor(x[:4])).shape == (4, 8)


@pytest.mark.equation("DIF-2")
def test_hierarchical_bound_is_the_five_factors_and_it_trains():
    x = digits()
    m = HierarchicalVAE((1, 8, 8), latents=(8, 4), hidden=((64,), (32,)))
    xb = mg.tensor(x[:16])
    mg.manual_seed(7)
    with mg.no_grad():
        lw = m.log_weights(xb, 3).numpy()
    # recompute every factor by hand from the same noise
    mg.manual_seed(7)
    with mg.no_grad():
        factors = by_hand(m, xb)
    np.testing.assert_allclose(lw, factors, rtol=1e-4, atol=1e-3)
    first, last = train(m, x)
    assert last < first - 5, (first, last)
    assert m.sample(3).shape == (3, 1, 8, 8)


def by_hand(m, xb):
    """The five factors of Eq. DIF-2, from the networks, in NumPy."""
    flat = xb.flatten(1)
    mu1, ls1 = m.q_z1(flat).chunk(2, dim=-1)
    z1 = Normal(mu1, log_scale=ls1).rsample((3,))
    mu2, ls2 = m.q_z2(z1).chunk(2, dim=-1)
    z2 = Normal(mu2, log_scale=ls2).rsample()
    pm, pls = m.p_z1(z2).chunk(2, dim=-1)
    logits = m.p_x(z1).numpy()
    z1n, z2n, xn = z1.numpy(), z2.numpy(), flat.numpy()

    def gauss(v, mu, log_s):
        return (-0.5 * ((v - mu) / np.exp(log_s)) ** 2 - log_s - 0.5 * np.log(2 * np.pi)).sum(-1)
    log_p_z2 = gauss(z2n, 0.0, 0.0)
    log_p_z1 = gauss(z1n, pm.numpy(), pls.numpy())
    log_p_x = (xn * logits - np.logaddexp(0, logits)).sum(-1)
    log_q_z1 = gauss(z1n, mu1.numpy(), ls1.numpy())
    log_q_z2 = gauss(z2n, mu2.numpy(), ls2.numpy())
    return log_p_z2 + log_p_z1 + log_p_x - log_q_z1 - log_q_z2


# --------------------------------------------------------------------------- bad input

def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="likelihood must be one of"):
        VAE(MLPEncoder((1, 8, 8)), MLPDecoder((1, 8, 8)), 50, likelihood="poisson")
    with pytest.raises(ValueError, match="k .* must be >= 1"):
        VAE(MLPEncoder((1, 8, 8)), MLPDecoder((1, 8, 8)), 50, k=0)
    with pytest.raises(ValueError, match="divisible by 4"):
        ConvEncoder((1, 10, 10))
    m = VAE(MLPEncoder((1, 8, 8), 4, (8,)), MLPDecoder((1, 8, 8), 4, (8,)), 4)
    with pytest.raises(ValueError, match=r"dims must lie in \[0, 4\)"):
        m.latent_traversal(dims=[4])
    with pytest.raises(ValueError, match="z must have 4 entries"):
        m.latent_traversal(z=np.zeros(3))
