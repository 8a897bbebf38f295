# %% [markdown]
# # 3 · Variational autoencoders
#
# A latent-variable model explains each image by a hidden code z: draw $z\sim p(z)$, then
# $x\sim p_\theta(x\mid z)$. Its likelihood is an integral over every code that could have produced
# x — intractable for a neural decoder. The VAE trains an encoder $q_\phi(z\mid x)$ alongside and
# maximises a lower bound, the ELBO: explicit density, approximate branch. To see every term of the
# slides exactly, we first use a *linear-Gaussian* VAE, where all of them have closed forms, then
# train a real one on the digits. Code: `minigen/models/vae.py`.

# %%
import numpy as np
from matplotlib.figure import Figure

import minigen as mg
from minigen.lecture import Lecture
from minigen.models.vae import LinearGaussianVAE

lecture = Lecture("vae")
mg.manual_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## The marginal likelihood, estimated by importance sampling
#
# $p(x)=\int p(z)p(x\mid z)dz$: averaging $p(x\mid z)p(z)/q(z\mid x)$ over K codes drawn from the
# encoder estimates it without bias, and the log of the average (the IWAE bound) approaches
# $\log p(x)$ from below as K grows.

# %%
lecture.equation("VAE-1")
model = LinearGaussianVAE(data_dim=4, latent_dim=2).double()
for p in model.parameters():
    p.data[...] = 0.5 * rng.normal(size=p.shape)
x = rng.normal(size=(lecture.size(500, 100), 4))
exact = model.exact_log_marginal(x).mean()
with mg.no_grad():
    for k in (1, 10, 100, lecture.size(1000, 300)):
        bound = model.iwae_bound(mg.tensor(x), k).numpy().mean()
        print(f"K = {k:5d}: IWAE bound {bound:8.4f}   (exact log p(x) = {exact:.4f})")

# %% [markdown]
# ## Bayes' rule, and the decomposition behind the ELBO
#
# The true posterior $p(z\mid x)=p(x\mid z)p(z)/p(x)$ is Gaussian here. For *any* encoder q,
# $\log p(x)$ splits into the expected reconstruction, minus the KL from q to the prior, plus the
# KL from q to the true posterior. The last term is ≥ 0 and unknown in general; dropping it leaves
# the ELBO. (This encoder is random, so the gap is wide; training q narrows it.)

# %%
lecture.equation("VAE-2")
lecture.equation("VAE-3")
lecture.equation("VAE-4")
terms = model.exact_terms(x)
rebuilt = terms["reconstruction"] - terms["prior_kl"] + terms["posterior_kl"]
print(f"reconstruction − KL(q‖p(z)) + KL(q‖p(z|x)) = {rebuilt.mean():.6f};  log p(x) = {exact:.6f}")
print(f"posterior gap KL(q‖p(z|x)): {terms['posterior_kl'].mean():.4f} nats ≥ 0, "
      f"so the ELBO {(terms['reconstruction'] - terms['prior_kl']).mean():.4f} ≤ log p(x)")

# %% [markdown]
# ## The reparameterisation trick
#
# To differentiate an expectation over $q_\phi$ with respect to φ, write the sample as a
# deterministic function of φ and independent noise: $z=\mu+\sigma\epsilon$. The gradient of a
# Monte-Carlo average through z then matches the gradient of the exact expectation — here
# $\mathbb E[z^2]=\mu^2+\sigma^2$, whose derivatives are $2\mu$ and $2\sigma$.

# %%
lecture.equation("VAE-5")
mu = mg.tensor(np.array(0.7), requires_grad=True)
sigma = mg.tensor(np.array(0.4), requires_grad=True)
eps = mg.tensor(rng.normal(size=lecture.size(200000, 20000)))
z = mu + sigma * eps
(z ** 2).mean().backward()
print(f"d/dmu E[z²]: {mu.grad.item():.4f} (exact {2 * 0.7:.4f});  d/dsigma: {sigma.grad.item():.4f} (exact {2 * 0.4:.4f})")

# %% [markdown]
# ## A VAE on the digits
#
# `lecture.train` is `minigen train vae --data digits …` (binarized afresh every epoch, MLP encoder
# and decoder). Then: samples from the prior through the decoder, and a latent traversal — one
# latent varied at a time, the others held at the prior mean.

# %%
lecture.equation("VAE-6")
vae = lecture.train("vae", data="digits", binarize="dynamic", latent=lecture.size(8, 4),
                    hidden=lecture.size("200,200", "64"), steps=lecture.size(4000, 200), batch_size=64)
from minigen.data import load_dataset  # noqa: E402
from minigen.viz import make_grid, save_image_grid  # noqa: E402

test = load_dataset("digits", "test", binarize="dynamic")
with mg.no_grad():
    elbo = vae.elbo(mg.tensor(test.images)).get("elbo").numpy().mean()
    iwae = vae.iwae_bound(mg.tensor(test.images), lecture.size(500, 20)).numpy().mean()
print(f"test ELBO {elbo:.2f} ≤ IWAE bound {iwae:.2f} nats per 8×8 image (both bound log p(x) from below)")
lecture.save(save_image_grid(vae.sample(64), lecture.out + "/_s.png", nrow=8), "prior_samples.png")
traversal = vae.latent_traversal(dims=range(min(4, vae.latent_dim)))
fig = Figure(figsize=(6, 3), layout="constrained")
ax = fig.subplots()
ax.imshow(make_grid(traversal.reshape(-1, *traversal.shape[2:]), nrow=traversal.shape[1]), cmap="gray")
ax.set(xlabel="z_d from −2.5 to 2.5", ylabel="latent d", xticks=[], yticks=[])
lecture.save(fig, "traversal.png")
