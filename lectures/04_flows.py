# %% [markdown]
# # 4 · Normalizing flows
#
# A flow is an invertible map f between data x and a latent z with a simple density. The change
# of variables gives the exact likelihood: the latent's density at f(x), times how much f stretches
# volume there, $|\det \partial f/\partial x|$. Everything hinges on layers whose inverse and
# Jacobian determinant are cheap: planar flows (Rezende & Mohamed) and RealNVP's affine couplings.
# Code: `minigen/models/flows/`.

# %%
import numpy as np
from matplotlib.figure import Figure

import minigen as mg
from minigen.lecture import Lecture
from minigen.models.flows.layers import AffineCoupling, FlowSequence, PlanarFlow, standard_normal_log_prob
from minigen.models.flows.potentials import fit_planar_flow, potential

lecture = Lecture("flows")
mg.manual_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## The change of variables, checked against a numerical Jacobian
#
# A stack of layers adds up their log-determinants. We compare the flow's own log-det with the
# log |det| of a Jacobian measured by finite differences, and check that the density integrates to
# one on a grid.

# %%
lecture.equation("FLOW-1")
flow = FlowSequence(*[PlanarFlow(2) for _ in range(4)]).double()
for p in flow.parameters():
    p.data[...] = rng.normal(size=p.shape)
x = rng.normal(size=(5, 2))
h = 1e-6


def f(points):
    return flow(mg.tensor(points))[0].numpy()


with mg.no_grad():
    log_det = flow(mg.tensor(x))[1].numpy()
    for i in range(len(x)):
        jac = np.stack([(f(x[i:i + 1] + h * e) - f(x[i:i + 1] - h * e))[0] / (2 * h) for e in np.eye(2)], axis=1)
        print(f"log|det J|: flow {log_det[i]:+.6f}, finite differences {np.log(abs(np.linalg.det(jac))):+.6f}")
    side = np.linspace(-6, 6, lecture.size(400, 150))
    grid = np.stack(np.meshgrid(side, side), -1).reshape(-1, 2)
    z, log_det = flow(mg.tensor(grid))
    density = np.exp(standard_normal_log_prob(z).numpy() + log_det.numpy())
print(f"∫ p(x) dx on [-6, 6]² ≈ {density.sum() * (side[1] - side[0]) ** 2:.4f}")

# %% [markdown]
# ## Planar flows, fitted to the slide's target densities
#
# A planar flow bends space along one direction: $f(z)=z+u\,h(w^\top z+b)$, invertible when
# $w^\top u\ge-1$ (the code reparameterises u so that it always is). Rezende & Mohamed fit K of
# them to unnormalised targets $e^{-U(z)}$ by minimising the reverse KL; more layers, better fit.

# %%
lecture.equation("FLOW-4")
lengths = lecture.size((2, 8, 32), (2, 4))
fig = Figure(figsize=(3 * (len(lengths) + 1), 3), layout="constrained")
axes = fig.subplots(1, len(lengths) + 1)
side = np.linspace(-4, 4, 200)
grid = np.stack(np.meshgrid(side, -side), -1).reshape(-1, 2)
with mg.no_grad():
    axes[0].imshow(np.exp(-potential("U2", mg.tensor(grid)).numpy()).reshape(200, 200), extent=(-4, 4, -4, 4))
axes[0].set_title("target exp(−U2)")
for ax, k in zip(axes[1:], lengths):
    planar, losses = fit_planar_flow("U2", k, steps=lecture.size(3000, 200))
    with mg.no_grad():
        samples = planar(mg.randn(5000, 2, dtype="float64"))[0].numpy()
    ax.hist2d(samples[:, 0], samples[:, 1], bins=80, range=[[-4, 4], [-4, 4]])
    ax.set_title(f"K = {k}: final loss {np.mean(losses[-50:]):.2f}")
for ax in axes:
    ax.set(xticks=[], yticks=[], aspect="equal")
lecture.save(fig, "planar_flows.png")

# %% [markdown]
# ## RealNVP's affine coupling
#
# Half the coordinates pass unchanged and parameterise a scale and shift of the other half. The
# inverse needs no inversion of the network, and the Jacobian is triangular: its log-det is just
# the sum of the scales.

# %%
lecture.equation("FLOW-2")
net = mg.nn.Sequential(mg.nn.Linear(2, 16), mg.nn.ReLU(), mg.nn.Linear(16, 4))
coupling = AffineCoupling(net, np.array([[1.0, 0.0]], np.float32), 2).double()
for p in coupling.parameters():
    p.data[...] = rng.normal(size=p.shape)
x = mg.tensor(rng.normal(size=(1000, 2)))
with mg.no_grad():
    y, log_det = coupling(x)
    print(f"max |inverse(forward(x)) − x| = {np.abs(coupling.inverse(y).numpy() - x.numpy()).max():.2e}")

# %% [markdown]
# ## Maximum likelihood on the two moons
#
# Training is plain maximum likelihood, `minigen train realnvp --data moons` (couplings with
# alternating masks and actnorm). On held-out points the exact NLL falls toward the true density's
# entropy — the best any model can do.

# %%
lecture.equation("FLOW-3")
model = lecture.train("realnvp", data="moons", steps=lecture.size(4000, 200), batch_size=256, lr=1e-3,
                      schedule="cosine")
from minigen.data import get_toy  # noqa: E402

toy = get_toy("moons")
held_out = toy.sample(lecture.size(5000, 500), np.random.default_rng(1))
with mg.no_grad():
    nll = -model.log_prob(held_out.astype(np.float32)).numpy().mean()
print(f"held-out NLL {nll:.3f} nats/point; true entropy {-toy.log_prob(held_out).mean():.3f}")
points = model.sample(2000)
fig = Figure(figsize=(4, 4), layout="constrained")
ax = fig.subplots()
ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5)
(x0, x1), (y0, y1) = toy.bounds
ax.set(xlim=(x0, x1), ylim=(y0, y1), aspect="equal", title="RealNVP samples")
lecture.save(fig, "realnvp_moons.png")
