# %% [markdown]
# # 7 · Diffusion models
#
# A diffusion model learns to undo a fixed process that destroys data: T small steps, each adding
# a little Gaussian noise, until nothing of $x_0$ is left. Generation runs the learned reverse
# process from pure noise. This walk-through follows the slides: the forward process and its
# closed form, the marginal it produces, the posterior that makes the bound tractable, Algorithm 1
# (training) and Algorithm 2 (sampling) on a 2-D density, and the bound itself against the density's
# true entropy. Code: `minigen/models/diffusion/` (`process.py`, `ddpm.py`, `recipes.py`).

# %%
import numpy as np
from matplotlib.figure import Figure

import minigen as mg
from minigen.lecture import Lecture
from minigen.models.diffusion import NoiseSchedule, q_posterior, q_sample, q_step

lecture = Lecture("diffusion")
mg.manual_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## The forward process
#
# One step shrinks the signal by $\sqrt{1-\beta_t}$ and adds noise of variance $\beta_t$. Composing
# t steps is again Gaussian, with $\bar\alpha_t=\prod_{s\le t}(1-\beta_s)$ — so $x_t$ can be drawn
# from $x_0$ in one jump, which is what makes training cheap.

# %%
lecture.equation("DIF-3")
lecture.equation("DIF-4")
schedule = NoiseSchedule.linear()
x0 = mg.tensor(rng.normal(size=(20000, 1)).astype(np.float64) * 0.5 + 2.0)
every = np.ones(len(x0), np.int64)                          # t per example: here the same for all
x = x0
for t in range(1, 101):                                    # a hundred single steps …
    x = q_step(schedule, x, t * every, mg.randn(*x.shape, dtype="float64"))
jump = q_sample(schedule, x0, 100 * every, mg.randn(*x0.shape, dtype="float64"))   # … or one jump
print(f"after 100 steps: mean {x.numpy().mean():.3f}, std {x.numpy().std():.3f}; "
      f"one jump: mean {jump.numpy().mean():.3f}, std {jump.numpy().std():.3f}")
a = schedule.alpha_bars[99]
print(f"closed form: mean {np.sqrt(a) * 2.0:.3f}, std {np.sqrt(a * 0.25 + 1 - a):.3f}")

# %% [markdown]
# Schedules decide how fast the signal goes: the linear one of Ho et al. destroys most of it
# halfway, the cosine one of Nichol & Dhariwal more evenly. The signal-to-noise ratio
# $\bar\alpha_t/(1-\bar\alpha_t)$ (Kingma et al.'s view) falls monotonically for both.

# %%
lecture.equation("DIF-16")
fig = Figure(figsize=(8, 3), layout="constrained")
left, right = fig.subplots(1, 2)
for name in ("linear", "cosine"):
    s = getattr(NoiseSchedule, name)()
    left.plot(s.alpha_bars, label=name)
    right.semilogy(s.snr, label=name)
    assert np.all(np.diff(s.snr) < 0)
left.set(xlabel="t", title=r"$\bar\alpha_t$")
right.set(xlabel="t", title="SNR(t)")
left.legend()
lecture.save(fig, "schedules.png")

# %% [markdown]
# ## The marginal $q(x_t)$
#
# Diffusing data samples gives samples of $q(x_t)=\int q(x_0)q(x_t\mid x_0)dx_0$: for a mixture
# of Gaussians, every component is shrunk and widened, and the modes melt into one standard normal.

# %%
lecture.equation("DIF-5")
from minigen.data import get_toy  # noqa: E402

means, stds, weights = np.array([-2.0, 1.0, 3.0]), np.array([0.3, 0.5, 0.2]), np.array([0.3, 0.5, 0.2])
k = rng.choice(3, size=50000, p=weights)
data = mg.tensor((means[k] + stds[k] * rng.normal(size=k.size))[:, None])
fig = Figure(figsize=(10, 2.6), layout="constrained")
grid = np.linspace(-5, 5, 400)
for ax, t in zip(fig.subplots(1, 4), (1, 100, 300, 1000)):
    xt = q_sample(schedule, data, np.full(len(data), t), mg.randn(*data.shape, dtype="float64")).numpy()[:, 0]
    a = schedule.alpha_bars[t - 1]
    density = sum(w * np.exp(-(grid - np.sqrt(a) * m) ** 2 / (2 * (a * s ** 2 + 1 - a)))
                  / np.sqrt(2 * np.pi * (a * s ** 2 + 1 - a)) for m, s, w in zip(means, stds, weights))
    ax.hist(xt, bins=100, range=(-5, 5), density=True, alpha=0.5)
    ax.plot(grid, density, color="black")
    ax.set_title(f"t = {t}")
lecture.save(fig, "marginals.png")

# %% [markdown]
# ## The posterior and the bound
#
# The reverse conditional $q(x_{t-1}\mid x_t)$ is intractable, but conditioned on $x_0$ it is a
# Gaussian with a closed form — Bayes' rule for the product of two Gaussians. Each term of the
# variational bound compares the model's reverse step with it; with the noise parameterisation
# that comparison becomes the squared error between the true and the predicted noise.

# %%
lecture.equation("DIF-8")
lecture.equation("DIF-10")
x0 = mg.tensor(np.array([[0.7]]))
noise = mg.tensor(np.array([[0.3]]))
t = 400
x_t = q_sample(schedule, x0, np.array([t]), noise)
mean, var = q_posterior(schedule, x0, x_t, np.array([t]))
a_prev, beta, a = schedule.alpha_bars[t - 2], schedule.betas[t - 1], schedule.alpha_bars[t - 1]
# Bayes: prior N(√ᾱ_{t-1} x0, 1 − ᾱ_{t-1}) for x_{t-1}, likelihood N(x_t; √(1 − β_t) x_{t-1}, β_t)
precision = 1 / (1 - a_prev) + (1 - beta) / beta
bayes_mean = (np.sqrt(a_prev) * 0.7 / (1 - a_prev) + np.sqrt(1 - beta) * x_t.item() / beta) / precision
print(f"posterior mean {mean.item():.6f} (Bayes {bayes_mean:.6f}), variance {var.item():.6f} "
      f"(Bayes {1 / precision:.6f})")

# %% [markdown]
# ## Algorithm 1 and Algorithm 2 on the two moons
#
# Training (Algorithm 1) draws a data point, a step t and noise, jumps to $x_t$ and regresses the
# noise. `lecture.train` is `minigen train ddpm --data moons …`: the same training loop as every
# other family, with a small MLP as the noise network for 2-D points.

# %%
lecture.equation("DIF-13")
steps = lecture.size(6000, 500)
model = lecture.train("ddpm", data="moons", steps=steps, batch_size=256, lr=1e-3, schedule="cosine",
                      ema=lecture.size(0.995, 0.0))        # an average of weights needs a long run

# %% [markdown]
# Sampling (Algorithm 2) starts from $x_T\sim\mathcal N(0,I)$ and applies the learned reverse step
# T times — with no noise at the last step. The fused kernel `diffusion_p_sample` does the update
# in one pass (`kernels/cpu/diffusion.py`). We keep the points every 200 steps to watch the noise
# turn into the two moons.

# %%
lecture.equation("DIF-14")
toy = get_toy("moons")
n = lecture.size(2000, 300)
samples, strip = model.sample(n, keep_every=200)
fig = Figure(figsize=(3 * len(strip), 3), layout="constrained")
for ax, (t, points) in zip(fig.subplots(1, len(strip)), strip):
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
    ax.set(title=f"t = {t}", xlim=(-3, 3), ylim=(-3, 3), aspect="equal", xticks=[], yticks=[])
lecture.save(fig, "moons_strip.png")

# %% [markdown]
# ## How good is it? The bound against the truth
#
# The bound is an upper bound on $-\log p_\theta(x)$ (in nats per point here: the data are
# continuous, so its last term is a density). On held-out points it can only exceed the true
# density's entropy $H=\mathbb E[-\log p(x)]$; the gap is the KL from the data to the model plus the
# bound's own slack.

# %%
lecture.equation("DIF-7")
held_out = toy.sample(lecture.size(2000, 50), np.random.default_rng(1)).astype(np.float32)
bound = model.variational_bound(held_out)                      # all T terms
entropy = -toy.log_prob(held_out.astype(np.float64))
print(f"held-out bound {bound.mean():.3f} ± {bound.std() / np.sqrt(len(bound)):.3f} nats/point; "
      f"true entropy {entropy.mean():.3f}")
print(f"mean log density of the samples under the true moons: {toy.log_prob(samples.astype(np.float64)).mean():.3f} "
      f"(of held-out data: {-entropy.mean():.3f})")
