"""Diffusion: the forward process, its posterior, the parameterisations and the bound's terms."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minigen as mg
from minigen import nn, ops, optim
from minigen.models.diffusion import (NoiseSchedule, ddpm_loss, ddpm_sample, default_sigma2, p_sample_step,
                                      reverse_variance, discretized_gaussian_log_likelihood,
                                      gaussian_kl, loss_weight, mean_from_eps, predict_eps, predict_v, predict_x0,
                                      prior_kl, q_posterior, q_sample, q_step, x0_from_v)


def t64(a):
    return mg.tensor(np.asarray(a, np.float64))


schedules = st.lists(st.floats(1e-4, 0.6), min_size=2, max_size=30).map(NoiseSchedule)


# --------------------------------------------------------------------------- Eq. DIF-3, DIF-4, DIF-5


@pytest.mark.equation("DIF-3")
def test_one_forward_step_has_the_stated_mean_and_variance():
    s, n = NoiseSchedule.linear(), 200_000
    rng = np.random.default_rng(0)
    x_prev = np.full((n, 3), [-1.0, 0.2, 0.9])
    t = np.full(n, 700)
    x = q_step(s, t64(x_prev), t, t64(rng.standard_normal((n, 3)))).numpy()
    beta = s.betas[699]
    se = np.sqrt(beta / n)
    np.testing.assert_allclose(x.mean(0), np.sqrt(1 - beta) * x_prev[0], atol=5 * se)
    np.testing.assert_allclose(x.var(0), beta, rtol=5 * np.sqrt(2 / n))


@pytest.mark.equation("DIF-4")
@settings(max_examples=40, deadline=None)
@given(schedules, st.data())
def test_composing_single_steps_gives_the_closed_form_kernel(s, data):
    """x_t = a x_0 + (noise of variance v): each step maps a -> sqrt(alpha) a, v -> alpha v + beta."""
    t = data.draw(st.integers(1, s.T))
    a, v = 1.0, 0.0
    for step in range(t):
        a, v = np.sqrt(s.alphas[step]) * a, s.alphas[step] * v + s.betas[step]
    assert a == pytest.approx(np.sqrt(s.alpha_bars[t - 1]), rel=1e-12)
    assert v == pytest.approx(1 - s.alpha_bars[t - 1], rel=1e-9, abs=1e-15)


@pytest.mark.equation("DIF-4")
def test_sampled_chains_match_the_one_jump_kernel():
    s, n, t = NoiseSchedule.cosine(T=50), 100_000, 30
    rng = np.random.default_rng(1)
    x0 = t64(np.full((n, 1), 1.5))
    x = x0
    for step in range(1, t + 1):
        x = q_step(s, x, np.full(n, step), t64(rng.standard_normal((n, 1))))
    jump = q_sample(s, x0, np.full(n, t), t64(rng.standard_normal((n, 1)))).numpy()
    for sample in (x.numpy(), jump):
        assert sample.mean() == pytest.approx(np.sqrt(s.alpha_bars[t - 1]) * 1.5, abs=0.01)
        assert sample.var() == pytest.approx(1 - s.alpha_bars[t - 1], rel=0.02)
    for schedule in (NoiseSchedule.linear(), NoiseSchedule.cosine()):
        assert schedule.alpha_bars[-1] < 1e-4                       # x_T forgets x_0


@pytest.mark.equation("DIF-5")
def test_diffused_mixture_matches_the_analytic_mixture():
    """q(x_t) of a Gaussian mixture is the mixture of the diffused components:
    N(sqrt(abar) mu_k, abar sigma_k^2 + 1 - abar)."""
    from math import erf
    s, n = NoiseSchedule.linear(), 200_000
    rng = np.random.default_rng(2)
    means, stds = np.array([-2.0, 1.5]), np.array([0.3, 0.5])
    k = rng.integers(0, 2, n)
    x0 = means[k] + stds[k] * rng.standard_normal(n)
    for t in (1, 100, 400, 1000):
        xt = np.sort(q_sample(s, t64(x0[:, None]), np.full(n, t), t64(rng.standard_normal((n, 1)))).numpy().ravel())
        ab = s.alpha_bars[t - 1]
        m, sd = np.sqrt(ab) * means, np.sqrt(ab * stds ** 2 + 1 - ab)
        cdf = np.mean([[0.5 * (1 + erf((x - mk) / (sk * np.sqrt(2)))) for x in xt[::100]]
                       for mk, sk in zip(m, sd)], axis=0)
        empirical = (np.arange(0, n, 100) + 0.5) / n
        assert np.abs(cdf - empirical).max() < 0.006, t            # Kolmogorov-Smirnov distance


# --------------------------------------------------------------------------- Eq. DIF-8, DIF-10


@pytest.mark.equation("DIF-8")
@settings(max_examples=60, deadline=None)
@given(schedules, st.data())
def test_posterior_is_bayes_rule_for_the_gaussian_product(s, data):
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): precisions add, means average by them."""
    t = data.draw(st.integers(2, s.T))
    x0, xt = data.draw(st.floats(-3, 3)), data.draw(st.floats(-3, 3))
    mean, var = q_posterior(s, t64([[x0]]), t64([[xt]]), [t])
    alpha, beta, prior_var = s.alphas[t - 1], s.betas[t - 1], 1 - s.alpha_bars[t - 2]
    precision = alpha / beta + 1 / prior_var          # N(x_t; sqrt(a) x_{t-1}, b) as a function of x_{t-1}
    bayes_mean = (np.sqrt(alpha) * xt / beta + np.sqrt(s.alpha_bars[t - 2]) * x0 / prior_var) / precision
    assert var.item() == pytest.approx(1 / precision, rel=1e-9)
    assert mean.item() == pytest.approx(bayes_mean, rel=1e-8, abs=1e-10)


def test_posterior_at_the_first_step_is_the_data_point():
    s = NoiseSchedule.linear(T=10)
    mean, var = q_posterior(s, t64([[0.3, -0.7]]), t64([[5.0, 2.0]]), [1])
    np.testing.assert_allclose(mean.numpy(), [[0.3, -0.7]], atol=1e-12)
    assert var.item() == 0.0


@pytest.mark.equation("DIF-10")
@settings(max_examples=60, deadline=None)
@given(schedules, st.data())
def test_eps_form_of_the_posterior_mean_equals_the_x0_form(s, data):
    t = data.draw(st.integers(1, s.T), label="t")
    rng = np.random.default_rng(data.draw(st.integers(0, 1000), label="seed"))
    x0, eps = t64(rng.standard_normal((4, 3))), t64(rng.standard_normal((4, 3)))
    steps = np.full(4, t)
    xt = q_sample(s, x0, steps, eps)
    mean, _ = q_posterior(s, x0, xt, steps)
    np.testing.assert_allclose(mean_from_eps(s, xt, steps, eps).numpy(), mean.numpy(), rtol=1e-7, atol=1e-8)
    # the three parameterisations carry the same information
    np.testing.assert_allclose(predict_x0(s, xt, steps, eps).numpy(), x0.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(predict_eps(s, xt, steps, x0).numpy(), eps.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(x0_from_v(s, xt, steps, predict_v(s, x0, steps, eps)).numpy(), x0.numpy(),
                               atol=1e-9)


# --------------------------------------------------------------------------- Eq. DIF-9, DIF-11, DIF-7


@pytest.mark.equation("DIF-9")
@pytest.mark.equation("DIF-11")
def test_weighted_eps_loss_is_the_kl_up_to_a_constant():
    """KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t)) = ||mu~ - mu_theta||^2 / (2 sigma^2) + C(t), and with
    mu written through eps the first term is lambda_t ||eps - eps_theta||^2 (per dimension)."""
    s = NoiseSchedule.linear(T=100)
    sigma2 = default_sigma2(s)
    lam = loss_weight(s)
    rng = np.random.default_rng(3)
    x0, eps = t64(rng.standard_normal((5, 4))), t64(rng.standard_normal((5, 4)))
    for t in (2, 17, 60, 100):
        steps = np.full(5, t)
        xt = q_sample(s, x0, steps, eps)
        true_mean, true_var = q_posterior(s, x0, xt, steps)
        constants = []
        for trial in range(3):                              # three different networks' predictions
            eps_theta = t64(rng.standard_normal((5, 4)))
            mu_theta = mean_from_eps(s, xt, steps, eps_theta)
            kl = gaussian_kl(true_mean, true_var, mu_theta, sigma2[t - 1]).numpy()
            quadratic = ((true_mean - mu_theta) ** 2).numpy() / (2 * sigma2[t - 1])
            np.testing.assert_allclose(quadratic, lam[t - 1] * ((eps - eps_theta) ** 2).numpy(), rtol=1e-7)
            constants.append(kl - quadratic)
        np.testing.assert_allclose(constants[0], constants[1], atol=1e-10)     # C(t): no theta in it
        np.testing.assert_allclose(constants[0], constants[2], atol=1e-10)
        ratio = true_var.numpy()[0, 0] / sigma2[t - 1]
        np.testing.assert_allclose(constants[0], 0.5 * (ratio - 1 - np.log(ratio)), atol=1e-10)


def test_gaussian_kl_matches_monte_carlo_and_vanishes_on_equal_arguments():
    rng = np.random.default_rng(4)
    m1, v1, m2, v2 = 0.3, 0.5, -0.4, 1.7
    x = m1 + np.sqrt(v1) * rng.standard_normal(400_000)
    log_ratio = -0.5 * (x - m1) ** 2 / v1 - 0.5 * np.log(v1) + 0.5 * (x - m2) ** 2 / v2 + 0.5 * np.log(v2)
    assert gaussian_kl(t64([m1]), v1, t64([m2]), v2).item() == pytest.approx(log_ratio.mean(), abs=0.005)
    assert gaussian_kl(t64([m1]), v1, t64([m1]), v1).item() == pytest.approx(0.0, abs=1e-15)


@pytest.mark.equation("DIF-7")
def test_prior_term_has_no_parameter_and_vanishes_for_the_default_schedules():
    x0 = t64(np.random.default_rng(5).uniform(-1, 1, (8, 10)))
    for s in (NoiseSchedule.linear(), NoiseSchedule.cosine()):
        assert prior_kl(s, x0).numpy().max() < 1e-4
    short = NoiseSchedule.linear(T=10)                       # a short chain does not reach N(0, I)
    assert prior_kl(short, x0).numpy().mean() > 0.01


# --------------------------------------------------------------------------- Eq. DIF-12


@pytest.mark.equation("DIF-12")
@settings(max_examples=30, deadline=None)
@given(st.floats(-1.5, 1.5), st.floats(-7.0, 0.5))
def test_decoder_probabilities_over_256_bins_sum_to_one(mean, log_scale):
    levels = np.linspace(-1, 1, 256)[:, None]                 # every grey level, one per row
    log_p = discretized_gaussian_log_likelihood(t64(levels), t64(np.full_like(levels, mean)),
                                                t64(np.full_like(levels, log_scale))).numpy()
    assert np.exp(log_p).sum() == pytest.approx(1.0, abs=1e-9)
    assert np.all(log_p <= 1e-12)


def test_decoder_edge_bins_are_open():
    """Far outside [-1, 1] the mean still gives the edge level all the mass (Ho et al. eq. 13)."""
    x = t64([[-1.0], [1.0]])
    log_p = discretized_gaussian_log_likelihood(x, t64([[-5.0], [5.0]]), t64([[-2.0], [-2.0]])).numpy()
    np.testing.assert_allclose(log_p, 0.0, atol=1e-9)


# --------------------------------------------------------------------------- Eq. DIF-16


@pytest.mark.equation("DIF-16")
def test_snr_decreases_for_every_schedule_and_defines_it():
    snr = np.exp(np.linspace(8, -8, 200))
    for s in (NoiseSchedule.linear(), NoiseSchedule.cosine(), NoiseSchedule.linear(T=10, beta_end=0.5),
              NoiseSchedule.from_snr(snr)):
        assert np.all(np.diff(s.snr) < 0)
        assert np.all(s.posterior_variance <= s.betas)            # beta~_t <= beta_t: the two sigma^2 choices
    np.testing.assert_allclose(NoiseSchedule.from_snr(snr).snr, snr, rtol=1e-9)
    linear = NoiseSchedule.linear()
    np.testing.assert_allclose(NoiseSchedule.from_snr(linear.snr).betas, linear.betas, rtol=1e-7)


def test_bad_schedules_and_steps_are_refused():
    with pytest.raises(ValueError, match="beta_t must lie in"):
        NoiseSchedule([0.1, 1.0])
    with pytest.raises(ValueError, match="T must be a positive integer"):
        NoiseSchedule.linear(T=0)
    with pytest.raises(ValueError, match="strictly decreasing"):
        NoiseSchedule.from_snr([1.0, 2.0])
    s = NoiseSchedule.linear(T=10)
    with pytest.raises(ValueError, match="steps t must lie in 1..10"):
        q_sample(s, t64(np.zeros((2, 3))), [0, 3], t64(np.zeros((2, 3))))
    with pytest.raises(ValueError, match=r"one step per example, shape \(2,\)"):
        q_sample(s, t64(np.zeros((2, 3))), [1, 2, 3], t64(np.zeros((2, 3))))


# --------------------------------------------------------------------------- Algorithms 1 and 2 (DIF-6, 13, 14)



def gaussian_oracle(s, mean, var):
    """The optimal eps-predictor for x_0 ~ N(mean, diag var): E[eps | x_t] =
    sqrt(1 - abar) (x_t - sqrt(abar) mean) / (abar var + 1 - abar)."""
    def eps_model(x_t, t):
        ab = s.alpha_bars[np.asarray(t) - 1][:, None]
        x = x_t.numpy()
        return mg.tensor(np.sqrt(1 - ab) * (x - np.sqrt(ab) * mean) / (ab * var + 1 - ab), dtype=x_t.dtype)
    return eps_model


@pytest.mark.equation("DIF-13")
def test_algorithm_1_loss_line_by_line():
    s = NoiseSchedule.linear(T=50)
    rng = np.random.default_rng(6)
    x0, noise = t64(rng.standard_normal((6, 3))), t64(rng.standard_normal((6, 3)))
    t = np.array([1, 5, 17, 30, 49, 50])
    net = nn.Linear(3, 3).double()

    def eps_model(x_t, steps):
        return net(x_t) * mg.tensor(steps[:, None] / 50.0, dtype="float64")
    ab = s.alpha_bars[t - 1][:, None]
    x_t = np.sqrt(ab) * x0.numpy() + np.sqrt(1 - ab) * noise.numpy()                 # line 5's argument
    manual = ((noise.numpy() - eps_model(t64(x_t), t).detach().numpy()) ** 2)
    assert ddpm_loss(s, eps_model, x0, t, noise).item() == pytest.approx(manual.mean(), rel=1e-12)
    weighted = (manual * loss_weight(s)[t - 1][:, None]).mean()
    assert ddpm_loss(s, eps_model, x0, t, noise, weighting="kl").item() == pytest.approx(weighted, rel=1e-12)
    mg.manual_seed(0)
    first = ddpm_loss(s, eps_model, x0).item()
    mg.manual_seed(0)
    assert ddpm_loss(s, eps_model, x0).item() == first                              # t and eps come from the seed
    with pytest.raises(ValueError, match="weighting must be"):
        ddpm_loss(s, eps_model, x0, weighting="vlb")


@pytest.mark.equation("DIF-13")
def test_algorithm_1_lowers_the_loss_on_toy_data():
    mg.manual_seed(0)
    s = NoiseSchedule.linear(T=100)
    net = nn.Sequential(nn.Linear(3, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2))

    def eps_model(x_t, t):
        return net(ops.cat([x_t, mg.tensor((t / s.T)[:, None], dtype=x_t.dtype)], dim=1))
    opt = optim.Adam(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(7)
    losses = []
    for step in range(300):
        x0 = mg.tensor(rng.choice([-1.0, 1.0], (128, 2)).astype(np.float32) * 0.8)
        loss = ddpm_loss(s, eps_model, x0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-50:]) < 0.8 * np.mean(losses[:20])
    assert np.mean(losses[-50:]) < 0.65          # predicting eps = 0 scores 1; large t keep the optimum high


@pytest.mark.equation("DIF-14")
@pytest.mark.equation("DIF-6")
@pytest.mark.parametrize("sigma", ["beta", "beta_tilde"])
def test_algorithm_2_with_the_oracle_recovers_gaussian_data(sigma):
    s = NoiseSchedule.linear()
    mean, var = np.array([1.5, -0.5]), np.array([0.25, 0.04])
    mg.manual_seed(1)
    x = ddpm_sample(s, gaussian_oracle(s, mean, var), (20_000, 2), sigma=sigma, dtype="float64").numpy()
    np.testing.assert_allclose(x.mean(0), mean, atol=0.02)
    np.testing.assert_allclose(x.var(0), var, rtol=0.06)
    assert abs(np.corrcoef(x.T)[0, 1]) < 0.03


@pytest.mark.equation("DIF-14")
def test_the_last_step_adds_no_noise_and_strips_are_kept():
    s = NoiseSchedule.linear(T=20)
    oracle = gaussian_oracle(s, np.zeros(2), np.ones(2))
    x = t64(np.random.default_rng(8).standard_normal((4, 2)))
    a = p_sample_step(s, oracle, x, 1, noise=t64(np.ones((4, 2)))).numpy()
    b = p_sample_step(s, oracle, x, 1, noise=t64(-np.ones((4, 2)))).numpy()
    np.testing.assert_array_equal(a, b)
    c = p_sample_step(s, oracle, x, 2, noise=t64(np.ones((4, 2)))).numpy()
    d = p_sample_step(s, oracle, x, 2, noise=t64(np.zeros((4, 2)))).numpy()
    np.testing.assert_allclose(c - d, np.sqrt(reverse_variance(s)[1]))
    _, strip = ddpm_sample(s, oracle, (3, 2), keep_every=5)
    assert [t for t, _ in strip] == [20, 15, 10, 5, 0]
    with pytest.raises(ValueError, match="t must lie in 1..20"):
        p_sample_step(s, oracle, x, 21)
    with pytest.raises(ValueError, match="sigma must be one of"):
        reverse_variance(s, "learned")


def test_ddim_with_the_oracle_converges_to_gaussian_data_as_steps_grow():
    from minigen.models.diffusion import ddim_sample, ddim_timesteps
    s = NoiseSchedule.linear()
    taus = ddim_timesteps(1000, 50)
    assert taus[0] == 1000 and taus[-1] == 1 and len(taus) == 50 and np.all(np.diff(taus) < 0)
    mean, var = np.array([1.5, -0.5]), np.array([0.25, 0.04])
    errors = []
    for steps in (50, 200, 1000):
        for eta in (0.0, 1.0):
            mg.manual_seed(2)
            x = ddim_sample(s, gaussian_oracle(s, mean, var), (20_000, 2), steps=steps, eta=eta,
                            dtype="float64").numpy()
            np.testing.assert_allclose(x.mean(0), mean, atol=0.02)
            if eta == 0.0:
                errors.append(np.abs(x.var(0) / var - 1).max())
            if steps == 1000:                   # all steps: the exact sampler, deterministic or not
                np.testing.assert_allclose(x.var(0), var, rtol=0.06)
    assert errors[0] > errors[1] > errors[2]    # fewer steps, coarser ODE steps: the variance error shrinks
    assert errors[1] < 0.1
    mg.manual_seed(3)
    a = ddim_sample(s, gaussian_oracle(s, mean, var), (4, 2), steps=10, dtype="float64")
    with pytest.raises(ValueError, match="steps must lie in 1..1000"):
        ddim_timesteps(1000, 0)
    assert a.shape == (4, 2)


def test_classifier_free_guidance_extrapolates_from_the_unconditional_prediction():
    from minigen.models.diffusion import guided
    calls = []

    def model(x, t, labels):
        calls.append(labels)
        return x * (2.0 if labels is not None else 1.0)
    x = t64(np.ones((2, 3)))
    np.testing.assert_allclose(guided(model, [0, 1], 3.0)(x, [5, 5]).numpy(), 4 * 2.0 - 3 * 1.0)
    np.testing.assert_allclose(guided(model, [0, 1], 0.0)(x, [5, 5]).numpy(), 2.0)
    assert calls == [[0, 1], None, [0, 1]]


# --------------------------------------------------------------------------- the bound (DIF-7) and learned variances


@pytest.mark.equation("DIF-7")
def test_bound_is_tight_with_the_true_reverse_process_and_loose_otherwise():
    """Gaussian data N(m, s^2): the true reverse conditionals are Gaussian, with the oracle's mean and variance
    v b / (alpha v + b), v = abar_{t-1} s^2 + 1 - abar_{t-1}. With them the bound equals -log p(x_0) on
    average (up to L_T); with sigma_t^2 = beta_t it is a strict upper bound."""
    from minigen.models.diffusion import mean_from_eps, variational_bound
    s = NoiseSchedule.linear(T=200, beta_start=5e-4, beta_end=0.1)
    m, sd = 0.5, 0.3
    oracle = gaussian_oracle(s, np.array([m]), np.array([sd ** 2]))
    x = np.random.default_rng(9).normal(m, sd, (4000, 1))
    nll = 0.5 * np.log(2 * np.pi * sd ** 2) + 0.5 * ((x[:, 0] - m) / sd) ** 2
    v_prev = s.alpha_bars_prev * sd ** 2 + 1 - s.alpha_bars_prev
    true_var = v_prev * s.betas / (s.alphas * v_prev + s.betas)
    totals = {}
    for name, variances in (("true", true_var), ("beta", s.betas), ("beta_tilde", reverse_variance(s, "beta_tilde"))):
        def reverse(x_t, t, variances=variances):
            eps = oracle(x_t, np.full(x_t.shape[0], t))
            return mean_from_eps(s, x_t, np.full(x_t.shape[0], t), eps), float(variances[t - 1])
        mg.manual_seed(4)                                       # the same x_t draws for every variance
        bound = variational_bound(s, reverse, t64(x), decoder="gaussian")
        assert bound["terms"].shape == (200,) and np.all(bound["prior"] < 1e-3)
        totals[name] = bound["total"]
    gap = totals["true"] - nll
    assert abs(gap.mean()) < 4 * gap.std() / np.sqrt(len(x)) + 1e-3           # tight at the optimum
    for name in ("beta", "beta_tilde"):
        # the excess of a fixed variance sigma^2 over the true v: sum_t KL(N(0, v_t) || N(0, sigma_t^2)), exactly
        sigma2 = s.betas if name == "beta" else reverse_variance(s, "beta_tilde")
        expected = (0.5 * (np.log(sigma2 / true_var) + true_var / sigma2 - 1)).sum()
        excess = totals[name] - totals["true"]
        assert expected > 0.01
        assert excess.mean() == pytest.approx(expected, abs=4 * excess.std() / np.sqrt(len(x))), name


@pytest.mark.equation("DIF-7")
def test_one_term_estimate_of_the_bound_is_unbiased():
    """L_T + T L_{t-1} with one random t per example has the full bound's mean (the same Gaussian setup, σ_t² = β_t):
    the estimate that scores a whole test set with one network pass per image."""
    from minigen.models.diffusion import mean_from_eps, variational_bound, variational_bound_estimate
    from minigen.models.diffusion.process import coefficient
    s = NoiseSchedule.linear(T=200, beta_start=5e-4, beta_end=0.1)
    oracle = gaussian_oracle(s, np.array([0.5]), np.array([0.09]))

    def reverse(x_t, t):
        steps = np.broadcast_to(np.asarray(t), (x_t.shape[0],))
        return mean_from_eps(s, x_t, steps, oracle(x_t, steps)), coefficient(s.betas, steps, x_t)
    x = t64(np.random.default_rng(9).normal(0.5, 0.3, (20000, 1)))
    mg.manual_seed(1)
    full = variational_bound(s, reverse, x[:2000], decoder="gaussian")["total"]
    sampled = variational_bound_estimate(s, reverse, x, decoder="gaussian")
    assert sampled.shape == (20000,) and sampled.std() > 3 * full.std()      # noisier per example …
    se = np.sqrt(sampled.var() / len(sampled) + full.var() / len(full))
    assert abs(sampled.mean() - full.mean()) < 4 * se                         # … with the same mean


@pytest.mark.equation("DIF-16")
def test_learned_variance_lies_between_the_two_fixed_choices():
    from minigen.models.diffusion.process import interpolated_log_variance
    s = NoiseSchedule.cosine(T=100)
    t = np.array([1, 2, 50, 100])
    frac = t64(np.random.default_rng(10).random((4, 3)))
    var = np.exp(interpolated_log_variance(s, t, frac).numpy())
    low = np.concatenate([s.posterior_variance[1:2], s.posterior_variance[1:]])[t - 1][:, None]
    assert np.all(var >= low * (1 - 1e-9)) and np.all(var <= s.betas[t - 1][:, None] * (1 + 1e-9))
    ends = [np.exp(interpolated_log_variance(s, t, t64(np.full((4, 1), f))).numpy())[:, 0] for f in (0.0, 1.0)]
    np.testing.assert_allclose(ends[0], low[:, 0], rtol=1e-12)
    np.testing.assert_allclose(ends[1], s.betas[t - 1], rtol=1e-12)


@pytest.mark.equation("DIF-12")
def test_decoder_term_of_the_bound_is_the_discrete_likelihood():
    from minigen.models.diffusion.ddpm import vlb_term
    s = NoiseSchedule.linear(T=10)
    x0 = t64(np.array([[-1.0, 1.0, 2 * 100 / 255 - 1]]))
    mean = t64(np.array([[-0.9, 0.95, 2 * 100 / 255 - 1]]))
    nll = vlb_term(s, x0, x0, 1, mean, 0.01).numpy()
    expected = -discretized_gaussian_log_likelihood(x0, mean, t64(np.full((1, 3), 0.5 * np.log(0.01)))).numpy().sum()
    np.testing.assert_allclose(nll, [expected], rtol=1e-12)


@pytest.mark.equation("DIF-16")
def test_hybrid_loss_trains_the_variance_by_the_bound_and_the_mean_by_l_simple():
    from minigen.models.diffusion.ddpm import hybrid_loss
    s = NoiseSchedule.linear(T=20)
    rng = np.random.default_rng(11)
    x0 = t64(np.round(rng.uniform(-1, 1, (6, 5)) * 127.5) / 127.5)
    noise = t64(rng.standard_normal((6, 5)))
    t = np.array([1, 2, 3, 10, 19, 20])                        # t = 1 takes the decoder branch
    grads = {}
    for part in (1, 2):                                        # d simple, d vlb
        eps_pred = mg.tensor(rng.standard_normal((6, 5)), requires_grad=True)
        var_out = mg.tensor(rng.uniform(-1, 1, (6, 5)), requires_grad=True)
        total, simple, vlb = hybrid_loss(s, eps_pred, var_out, x0, q_sample(s, x0, t, noise), t, noise, weight=0.5)
        assert np.isfinite(total.item()) and total.item() == pytest.approx(simple.item() + 0.5 * vlb.item())
        (simple if part == 1 else vlb).backward()
        grads[part] = (eps_pred.grad, var_out.grad)
    assert grads[1][1] is None or np.all(grads[1][1].numpy() == 0)          # L_simple: mean only
    assert grads[2][0] is None or np.all(grads[2][0].numpy() == 0)          # L_vlb: variance only (mean stopped)
    assert np.abs(grads[2][1].numpy()).min() > 0


def test_a_learned_variance_sets_each_elements_noise():
    s = NoiseSchedule.linear(T=20)
    x = t64(np.random.default_rng(12).standard_normal((3, 4)))
    log_var = t64(np.log(np.full((3, 4), 0.04)))

    def model(x_t, t):
        return x_t * 0.1, log_var
    z = t64(np.ones((3, 4)))
    with_noise = p_sample_step(s, model, x, 5, noise=z).numpy()
    without = p_sample_step(s, model, x, 5, noise=t64(np.zeros((3, 4)))).numpy()
    np.testing.assert_allclose(with_noise - without, 0.2, rtol=1e-12)          # sqrt(0.04)
    np.testing.assert_array_equal(p_sample_step(s, model, x, 1, noise=z).numpy(),
                                  p_sample_step(s, model, x, 1, noise=-z).numpy())
