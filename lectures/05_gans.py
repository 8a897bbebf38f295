# %% [markdown]
# # 5 · Generative adversarial networks
#
# A GAN gives up on the density altogether (the implicit branch of the taxonomy): a generator G
# maps noise to samples, a discriminator D learns to tell them from data, and G learns to fool D.
# This walk-through checks the game's algebra on a finite set — where the optimal discriminator
# and the value at equilibrium are known in closed form — then plays it on a ring of eight
# Gaussians, where mode collapse can be counted, and ends with AdaIN, the style operation of
# StyleGAN. Code: `minigen/models/gans/`.

# %%
import numpy as np
from matplotlib.figure import Figure

import minigen as mg
from minigen.lecture import Lecture
from minigen.models.gans.game import expected_value, jensen_shannon, optimal_discriminator, value_function

lecture = Lecture("gans")
mg.manual_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## The value of the game, and its optimal discriminator
#
# $V(D,G)$ rewards D for saying "real" to data and "fake" to samples. For a fixed G the best D is
# $p_{data}/(p_{data}+p_g)$; plugged in, V becomes $-\log 4+2\,\mathrm{JSD}(p_{data}\Vert p_g)$, so
# the game's minimum over G is at $p_g=p_{data}$, where $D^*=\tfrac12$ everywhere.

# %%
lecture.equation("GAN-1")
lecture.equation("GAN-4")
real_logits, fake_logits = mg.tensor(np.array([2.0, -0.5])), mg.tensor(np.array([-1.0, 0.3]))
d_real, d_fake = 1 / (1 + np.exp(-real_logits.numpy())), 1 / (1 + np.exp(-fake_logits.numpy()))
print(f"V on a tiny batch: {value_function(real_logits, fake_logits).item():.6f} "
      f"(by hand {np.mean(np.log(d_real)) + np.mean(np.log(1 - d_fake)):.6f})")
p_data = np.array([0.5, 0.3, 0.2, 0.0])
p_g = np.array([0.1, 0.2, 0.3, 0.4])
d_star = optimal_discriminator(p_data, p_g)
print(f"D* = {np.round(d_star, 3)}; V(D*, G) = {expected_value(d_star, p_data, p_g):.6f} "
      f"= −log 4 + 2 JSD = {-np.log(4) + 2 * jensen_shannon(p_data, p_g):.6f}")
print(f"at p_g = p_data: D* = {optimal_discriminator(p_data, p_data)}, "
      f"V = {expected_value(optimal_discriminator(p_data, p_data), p_data, p_data):.6f} (−log 4 = {-np.log(4):.6f})")

# %% [markdown]
# ## Algorithm 1 on a ring of eight Gaussians, and mode collapse
#
# Training alternates k discriminator steps with one generator step; the generator uses the
# non-saturating loss $-\log D(G(z))$, whose gradient does not vanish when D wins. A plain GAN
# often drops some of the eight modes (mode collapse); PacGAN's packing — D judges two samples at
# once — is one of the remedies the slides list (`minigen eval gan-modes` runs the full table:
# plain GAN, minibatch discrimination, experience replay and PacGAN over ten seeds).

# %%
lecture.equation("GAN-2")
lecture.equation("GAN-3")
lecture.equation("GAN-5")
from minigen.data import get_toy  # noqa: E402
from minigen.metrics import mode_coverage  # noqa: E402

toy = get_toy("ring8")
steps = lecture.size(8000, 200)
players = {} if not lecture.fast else {"g_hidden": 64, "d_hidden": 32, "maxout": 2}   # PacGAN's sizes, or tiny
fig = Figure(figsize=(8, 4), layout="constrained")
for ax, (name, options) in zip(fig.subplots(1, 2), [("gan", {}), ("pacgan2", {"packing": 2})]):
    gan = lecture.train("gan", name=name, data="ring8", steps=steps, schedule="cosine", **players, **options)
    points = gan.sample(2500)
    score = mode_coverage(points, toy.mode_centers, toy.mode_std)
    print(f"{name}: {score['modes']} of 8 modes, {100 * score['high_quality']:.1f} % high-quality samples")
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.4)
    ax.scatter(toy.mode_centers[:, 0], toy.mode_centers[:, 1], marker="x", color="red")
    ax.set(title=f"{name}: {score['modes']}/8 modes", aspect="equal", xticks=[], yticks=[])
lecture.save(fig, "ring8.png")

# %% [markdown]
# ## AdaIN: style as channel statistics
#
# Instance normalisation removes each channel's mean and spread; AdaIN puts back those of a style
# input y. StyleGAN's generator does this at every layer, with the statistics computed from its
# mapped latent w (the "A" boxes) — so the output's channel statistics are exactly the style's.

# %%
lecture.equation("GAN-9")
from minigen.models.gans.style import adain, channel_stats  # noqa: E402

x = mg.tensor(rng.normal(size=(2, 3, 8, 8)))
y = mg.tensor(3.0 + 2.0 * rng.normal(size=(2, 3, 5, 5)))
out = adain(x, y)
(mean_out, std_out), (mean_y, std_y) = channel_stats(out), channel_stats(y)
print(f"largest |μ(AdaIN(x, y)) − μ(y)| = {np.abs(mean_out.numpy() - mean_y.numpy()).max():.2e}, "
      f"|σ − σ(y)| = {np.abs(std_out.numpy() - std_y.numpy()).max():.2e} (σ carries a small ε for stability)")
