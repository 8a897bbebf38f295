"""Distributions: densities against their formulas, stability at extreme logits, entropies, KL."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
from minigen.distributions import Bernoulli, Normal, kl_divergence, sum_except_batch


@given(mu=st.floats(-5, 5), log_sigma=st.floats(-3, 3), x=st.floats(-10, 10))
def test_normal_log_prob_is_the_gaussian_density(mu, log_sigma, x):
    d = Normal(mg.tensor([mu], dtype=mg.float64), log_scale=mg.tensor([log_sigma], dtype=mg.float64))
    sigma = math.exp(log_sigma)
    expected = -0.5 * ((x - mu) / sigma) ** 2 - math.log(sigma * math.sqrt(2 * math.pi))
    assert d.log_prob(mg.tensor([x], dtype=mg.float64)).item() == pytest.approx(expected, rel=1e-9, abs=1e-9)
    same = Normal(mg.tensor([mu], dtype=mg.float64), scale=mg.tensor([sigma], dtype=mg.float64))
    assert same.log_prob(mg.tensor([x], dtype=mg.float64)).item() == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_bernoulli_log_prob_is_stable_and_normalized():
    logits = mg.tensor(np.array([-200.0, -3.0, 0.0, 3.0, 200.0], np.float32))
    d = Bernoulli(logits=logits)
    one, zero = d.log_prob(mg.ones(5)).numpy(), d.log_prob(mg.zeros(5)).numpy()
    assert np.isfinite(one).all() and np.isfinite(zero).all()
    np.testing.assert_allclose(np.exp(one) + np.exp(zero), 1.0, rtol=1e-6)
    np.testing.assert_allclose(one[1:4], np.log(1 / (1 + np.exp(-np.array([-3.0, 0.0, 3.0])))), rtol=1e-6)
    assert one[0] == pytest.approx(-200.0) and zero[-1] == pytest.approx(-200.0)


def test_entropies_match_monte_carlo():
    n = Normal(mg.tensor([0.3]), log_scale=mg.tensor([0.5]))
    z = n.sample((200_000,))
    assert n.entropy().item() == pytest.approx(-n.log_prob(z).numpy().mean(), abs=0.01)
    b = Bernoulli(logits=mg.tensor([0.7]))
    p = 1 / (1 + math.exp(-0.7))
    assert b.entropy().item() == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)), rel=1e-5)


def test_kl_is_zero_for_identical_and_positive_otherwise():
    q = Normal(mg.tensor([0.5, -1.0]), scale=mg.tensor([0.3, 2.0]))
    np.testing.assert_allclose(kl_divergence(q, q).numpy(), 0.0, atol=1e-6)
    p = Normal(mg.zeros(2), scale=mg.ones(2))
    # against N(0, 1): (mu^2 + sigma^2 - 1)/2 - log sigma
    expected = 0.5 * (np.array([0.25, 1.0]) + np.array([0.09, 4.0]) - 1) - np.log([0.3, 2.0])
    np.testing.assert_allclose(kl_divergence(q, p).numpy(), expected, rtol=1e-5)


def test_sum_except_batch_and_errors():
    t = mg.ones(2, 3, 4)
    np.testing.assert_array_equal(sum_except_batch(t).numpy(), [12.0, 12.0])
    np.testing.assert_array_equal(sum_except_batch(t, batch_dims=2).numpy(), np.full((2, 3), 4.0))
    with pytest.raises(ValueError, match="exactly one of scale= or log_scale="):
        Normal(mg.zeros(2))
    with pytest.raises(TypeError, match="Normal and Normal"):
        kl_divergence(Bernoulli(mg.zeros(2)), Normal(mg.zeros(2), scale=1.0))


def test_fused_bernoulli_log_likelihood_op():
    from minigen.gradcheck import gradcheck, gradgradcheck
    rng = np.random.default_rng(0)
    logits = mg.tensor(rng.normal(size=(6, 2, 3)) * 3, dtype=mg.float64, requires_grad=True)
    x = mg.tensor(rng.random((3, 2, 3)), dtype=mg.float64, requires_grad=True)
    per_example = mg.bernoulli_log_likelihood(logits, x)
    expected = Bernoulli(logits).log_prob(x.unsqueeze(0).expand(2, 3, 2, 3).reshape(6, 2, 3))
    np.testing.assert_allclose(per_example.detach().numpy(), sum_except_batch(expected).detach().numpy(),
                               rtol=1e-12)
    assert gradcheck(mg.bernoulli_log_likelihood, (logits, x))
    assert gradgradcheck(mg.bernoulli_log_likelihood, (logits, x))
    with pytest.raises(ValueError, match=r"logits must be \(k\*B, ...\)"):
        mg.bernoulli_log_likelihood(mg.zeros(5, 4), mg.zeros(2, 4))
    with pytest.raises(ValueError, match="same trailing"):
        mg.bernoulli_log_likelihood(mg.zeros(4, 4), mg.zeros(2, 3))
