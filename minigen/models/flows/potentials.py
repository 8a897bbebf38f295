"""Rezende & Mohamed's (2015) figures with planar flows (Eq. FLOW-4): the four potentials, the reverse-KL
fit and ``minigen eval planar``."""
from __future__ import annotations

import math

import numpy as np

from ... import ops
from ...autograd import Tensor, no_grad
from ...numerics import logsumexp
from .layers import _LOG_2PI, FlowSequence, PlanarFlow, standard_normal_log_prob

POTENTIALS = ("U1", "U2", "U3", "U4")


def potential(name: str, z) -> Tensor:
    r"""U(z) of Rezende & Mohamed (2015), Table 1: the target density is :math:`p(z)\propto e^{-U(z)}`.

    ``z`` is (n, 2), a Tensor (differentiable: the flow is trained through it) or an array."""
    if name not in POTENTIALS:
        raise ValueError(f"potential: name must be one of {', '.join(POTENTIALS)}, got {name!r}")
    z = z if isinstance(z, Tensor) else ops.tensor(np.asarray(z, dtype=np.float64))
    z1, z2 = z[:, 0], z[:, 1]

    def log_add_exp(a, b):
        return ops.stack([a, b], dim=1).logsumexp(dim=1)

    def bump(t, width):
        return -0.5 * (t / width) ** 2

    w1 = (z1 * (math.pi / 2)).sin()
    if name == "U1":
        radius = (z1 * z1 + z2 * z2).sqrt()
        return -bump(radius - 2, 0.4) - log_add_exp(bump(z1 - 2, 0.6), bump(z1 + 2, 0.6))
    if name == "U2":
        return -bump(z2 - w1, 0.4)
    if name == "U3":
        w2 = 3 * bump(z1 - 1, 0.6).exp()
        return -log_add_exp(bump(z2 - w1, 0.35), bump(z2 - w1 + w2, 0.35))
    w3 = 3 * ops.sigmoid((z1 - 1) / 0.3)
    return -log_add_exp(bump(z2 - w1, 0.4), bump(z2 - w1 + w3, 0.35))


def flow_log_density(flow: FlowSequence, base_log_prob, y: np.ndarray) -> np.ndarray:
    """log q_K(y) of points pushed through ``flow`` (generative direction z₀ → y) from a base
    density: invert layer by layer, :math:`\\log q_K(y) = \\log q_0(z_0) - \\sum_k \\log|\\det J_k(z_{k-1})|`."""
    with no_grad():
        z = ops.tensor(np.asarray(y, dtype=np.float64))
        total = np.zeros(len(y))
        for layer in reversed(list(flow.layers)):
            z = layer.inverse(z)
            total += layer(z)[1].numpy()
        return base_log_prob(z.numpy()) - total


def fit_planar_flow(name: str, length: int, steps: int = 3000, batch: int = 256, lr: float = 5e-3,
                    seed: int = 0) -> tuple:
    """Fit K planar flows to :math:`p\\propto e^{-U}` (on the window: :func:`confined_potential`) by
    minimising the reverse KL as Rezende & Mohamed:
    :math:`\\mathbb E_{z_0}[\\log q_0(z_0) - \\sum_k\\log|\\det J_k| + \\beta\\,U(z_K)]`, with β annealed
    from 0.01 to 1 over the first half (the target is sharpened slowly). Returns (flow, losses)."""
    from ... import random as mg_random
    from ...optim import Adam
    mg_random.manual_seed(seed)
    flow = FlowSequence(*[PlanarFlow(2) for _ in range(length)]).double()
    optimizer = Adam(flow.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        beta = min(1.0, 0.01 + step / (steps / 2))
        z0 = ops.randn(batch, 2, dtype=np.float64)
        z, log_det = flow(z0)
        loss = (standard_normal_log_prob(z0) - log_det + beta * confined_potential(name, z)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    return flow, losses


WINDOW, WALL_WIDTH = 4.0, 0.05   # the figures' window [-4, 4]², and how sharply the targets end there


def confined_potential(name: str, z) -> Tensor:
    r"""The fitting target: U(z) plus a steep quadratic wall beyond the window [-4, 4]²,

    .. math:: U_\text{fit}(z) = U(z) + \sum_i \tfrac12\big(\max(|z_i| - 4, 0)/0.05\big)^2 .

    U2–U4 are bands that never decay along z₁, so e^{-U} is not integrable on the plane: reverse KL
    to it has no minimum (q lowers E_q[log q] by spreading along the band forever; an unconfined
    32-layer fit put 98 % of its mass outside the plotted window and its "KL" came out negative).
    With the wall the target is a proper density, e^{-U} on the window as the figures show it; inside
    the window nothing changes, and U1 (which decays in every direction) is unaffected."""
    z = z if isinstance(z, Tensor) else ops.tensor(np.asarray(z, dtype=np.float64))
    beyond = ops.relu(z.abs() - WINDOW) / WALL_WIDTH
    return potential(name, z) + 0.5 * (beyond * beyond).sum(dim=1)


def log_normaliser(name: str, half_width: float = WINDOW + 1, points: int = 1001) -> float:
    """log ∫ e^{-U_fit} on a grid over [-5, 5]²: the wall leaves no mass beyond 4.5 (spacing 0.01,
    five points per wall width)."""
    grid = np.linspace(-half_width, half_width, points)
    xx, yy = np.meshgrid(grid, grid)
    with no_grad():
        u = confined_potential(name, np.stack([xx.ravel(), yy.ravel()], 1)).numpy()
    return float(logsumexp(-u) + 2 * np.log(grid[1] - grid[0]))


def reverse_kl(flow: FlowSequence, name: str, log_z: float, n: int = 20000) -> float:
    r""":math:`\mathrm{KL}(q\|p) = \mathbb E_{z_0}[\log q_0(z_0) - \sum_k \log|\det J_k| + U_\text{fit}(z_K)] + \log Z`
    for p = e^{-U_fit}/Z (Monte Carlo over ``n`` base samples; ≥ 0 up to its noise)."""
    with no_grad():
        z0 = ops.randn(n, 2, dtype=np.float64)
        z, log_det = flow(z0)
        log_q = (standard_normal_log_prob(z0) - log_det).numpy()
        return float(np.mean(log_q + confined_potential(name, z).numpy()) + log_z)


def planar_potentials_experiment(out: str, lengths=(2, 8, 32), steps: int = 3000, seed: int = 0) -> dict:
    """Rezende & Mohamed's figures with planar flows (Eq. FLOW-4): (1) a Gaussian and a uniform density
    pushed through K = 1, 2, 10 random planar maps ("effect of normalizing flow on two distributions");
    (2) the four potentials (confined to the window, :func:`confined_potential`) fitted by K = 2, 8, 32
    flows, with their reverse KL."""
    import os

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.linspace(-WINDOW, WINDOW, 161)
    xx, yy = np.meshgrid(grid, grid)
    points = np.stack([xx.ravel(), yy.ravel()], 1)
    result = {"kl": {}, "seconds": {}}

    # (1) the effect of random planar maps on two base densities
    def gaussian(z):
        return -0.5 * (z * z).sum(1) - _LOG_2PI

    def uniform(z):
        inside = np.all(np.abs(z) <= 1.5, axis=1)
        return np.where(inside, -math.log(9.0), -np.inf)
    fig, axes = plt.subplots(2, 4, figsize=(10, 5))
    for row, (base_name, base) in enumerate((("unit Gaussian", gaussian), ("uniform", uniform))):
        rng = np.random.default_rng(seed)             # the same ten maps for both bases
        layers = [PlanarFlow(2).double() for _ in range(10)]
        for layer in layers:                          # visible bends: |w| ~ 2, |u| ~ 1
            layer.w.data[...] = rng.normal(scale=2.0, size=2)
            layer.u.data[...] = rng.normal(scale=1.0, size=2)
            layer.b.data[...] = rng.normal(scale=0.5, size=1)
        for col, k in enumerate((0, 1, 2, 10)):
            density = np.exp(flow_log_density(FlowSequence(*layers[:k]), base, points)).reshape(xx.shape)
            axes[row, col].imshow(density, origin="lower", extent=(-4, 4, -4, 4), cmap="viridis")
            axes[row, col].set_title(f"{base_name}: q0" if k == 0 else f"K = {k}", fontsize=9)
            axes[row, col].axis("off")
    fig.suptitle("Effect of planar flows on two distributions (Rezende & Mohamed 2015, Fig. 1)")
    os.makedirs(out, exist_ok=True)
    result["effect_figure"] = os.path.join(out, "planar_effect.png")
    fig.savefig(result["effect_figure"], dpi=100, bbox_inches="tight")
    plt.close(fig)

    # (2) the four potentials
    import time
    fig, axes = plt.subplots(len(POTENTIALS), len(lengths) + 1, figsize=(2.5 * (len(lengths) + 1), 10))
    for row, name in enumerate(POTENTIALS):
        u = potential(name, points).numpy()
        log_z = log_normaliser(name)
        axes[row, 0].imshow(np.exp(-u).reshape(xx.shape), origin="lower", extent=(-4, 4, -4, 4), cmap="viridis")
        axes[row, 0].set_title(f"exp(-{name})", fontsize=9)
        for col, k in enumerate(lengths, start=1):
            start = time.perf_counter()
            flow, _ = fit_planar_flow(name, k, steps=steps, seed=seed)
            result["seconds"][f"{name}/K={k}"] = round(time.perf_counter() - start, 1)
            kl = reverse_kl(flow, name, log_z)
            result["kl"][f"{name}/K={k}"] = round(kl, 4)
            density = np.exp(flow_log_density(flow, gaussian, points)).reshape(xx.shape)
            axes[row, col].imshow(density, origin="lower", extent=(-4, 4, -4, 4), cmap="viridis")
            axes[row, col].set_title(f"K = {k}: KL {kl:.2f}", fontsize=9)
            print(f"{name} K = {k}: KL(q || p) = {kl:.3f} nats ({result['seconds'][f'{name}/K={k}']} s)")
        for ax in axes[row]:
            ax.axis("off")
    fig.suptitle("Planar flows fitted to Rezende & Mohamed's potentials (reverse KL)")
    result["potentials_figure"] = os.path.join(out, "planar_potentials.png")
    fig.savefig(result["potentials_figure"], dpi=100, bbox_inches="tight")
    plt.close(fig)
    return result
