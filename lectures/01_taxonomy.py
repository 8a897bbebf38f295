# %% [markdown]
# # 1 · A taxonomy of generative models
#
# A generative model is trained on samples of an unknown distribution $p_{data}$ and should then
# produce new ones. The lecture sorts the families by one question: **does the model write its
# density $p_\theta(x)$ down?**
#
# - *Explicit, tractable*: yes, and $\log p_\theta(x)$ can be computed exactly — autoregressive
#   models (a product of conditionals) and normalizing flows (a change of variables).
# - *Explicit, approximate*: yes, but $\log p_\theta(x)$ can only be bounded or estimated — VAEs and
#   diffusion models (a variational bound), Boltzmann machines (a partition function no one can sum).
# - *Implicit*: no density at all, only a way to sample — GANs.
#
# Run it with `minigen lecture taxonomy` (or open it in Jupyter through jupytext).

# %%
from minigen.lecture import Lecture

lecture = Lecture("taxonomy")
lecture.equation("TAX-1")

# %% [markdown]
# Every generative model class in minigen declares where it stands, in a class attribute `density`
# (`minigen/models/taxonomy.py`). Build each family as `minigen train NAME` would (untrained, for 8×8
# images) and ask it — and ask which density methods it has: `log_prob` for an exact
# log-likelihood, `elbo` / `iwae_bound` / `variational_bound` for a bound on it.

# %%
from minigen.models import build_default, registry
from minigen.models.taxonomy import KINDS, density_kind, density_methods

rows = []
for name in registry():
    if name in ("classifier", "latent_diffusion"):      # a helper model; one that needs a trained autoencoder
        continue
    model = build_default(name, (2,) if name == "planar" else (1, 8, 8))
    rows.append((name, density_kind(model), ", ".join(density_methods(model)) or "—"))
print(f"{'model':16s} {'density':24s} methods")
for name, kind, methods in rows:
    print(f"{name:16s} {kind:24s} {methods}")

# %% [markdown]
# The pattern the lecture predicts: every implicit model exposes none of the density methods, every
# tractable one exposes `log_prob`. A Boltzmann machine has a `log_prob`, but only because the
# small machines it is trained as here can be enumerated — in general its $Z$ is out of reach, which
# is why it sits on the approximate branch (an RBM's `log_prob` takes $\log Z$ as an argument, exact
# or estimated by annealed importance sampling).

# %%
for kind in KINDS:
    print(f"{kind}: {', '.join(name for name, k, _ in rows if k == kind)}")
assert all(methods == "—" for _, kind, methods in rows if kind == "implicit")
assert all("log_prob" in methods for _, kind, methods in rows if kind == "explicit, tractable")

# %% [markdown]
# The tree as a figure.

# %%
from matplotlib.figure import Figure

fig = Figure(figsize=(9, 3.6), layout="constrained")
ax = fig.subplots()
ax.set_axis_off()
nodes = {"generative models": (0.5, 0.9), "explicit density": (0.3, 0.6), "implicit density": (0.8, 0.6),
         "tractable": (0.15, 0.3), "approximate": (0.45, 0.3)}
edges = [("generative models", "explicit density"), ("generative models", "implicit density"),
         ("explicit density", "tractable"), ("explicit density", "approximate")]
members = {"tractable": "explicit, tractable", "approximate": "explicit, approximate", "implicit density": "implicit"}
for label, (x, y) in nodes.items():
    ax.text(x, y, label, ha="center", va="center", bbox=dict(boxstyle="round", fc="white"))
    if label in members:
        ax.text(x, y - 0.1, "\n".join(name for name, k, _ in rows if k == members[label]), ha="center", va="top",
                fontsize="small")
for a, b in edges:
    (xa, ya), (xb, yb) = nodes[a], nodes[b]
    ax.annotate("", (xb, yb + 0.06), (xa, ya - 0.06), arrowprops=dict(arrowstyle="->"))
ax.set_xlim(0, 1)
ax.set_ylim(-0.45, 1.0)
lecture.save(fig, "taxonomy.png")
