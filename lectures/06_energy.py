# %% [markdown]
# # 6 · Energy-based models: Hopfield networks and Boltzmann machines
#
# An energy-based model assigns every state a number E and prefers low energy. A Hopfield network
# uses it as a memory: stored patterns are minima, and the update rule only ever goes downhill, so
# a corrupted pattern rolls back to the stored one. A Boltzmann machine turns the energy into a
# probability, $p\propto e^{-E/T}$, adds hidden units, and learns by matching statistics — with a
# partition function that only tiny machines can sum (the explicit-but-approximate branch). Code:
# `minigen/models/energy/` (`hopfield.py`, `boltzmann.py`, `rbm.py`, `dbn.py`).

# %%
import numpy as np
from matplotlib.figure import Figure

import minigen as mg
from minigen.lecture import Lecture
from minigen.models.energy.boltzmann import (BoltzmannMachine, example_table, format_table, geometric_schedule,
                                             slide_example)
from minigen.models.energy.hopfield import HopfieldNetwork, flip_bits, hebbian_weights, letter_patterns

lecture = Lecture("energy")
mg.manual_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## Hopfield networks: Hebb's rule stores, updates recall
#
# The slide's example first: two 4-unit patterns and the weights Hebb's rule gives them.

# %%
lecture.equation("EBM-4")
slide_patterns = np.array([[-1, -1, -1, 1], [1, 1, 1, 1]])
print(f"w = (1/4) ×\n{(4 * hebbian_weights(slide_patterns, zero_diagonal=False)).astype(int)}")

# %% [markdown]
# Five letters as 8×8 patterns of ±1. Each unit switches to the sign of its field
# $\sum_j w_{ij}s_j-\theta_i$, one unit at a time (asynchronous updates); the energy never rises, so
# the run ends at a fixed point — here the stored letter, from a version with an eighth of its bits
# flipped.

# %%
lecture.equation("EBM-1")
lecture.equation("EBM-5")
patterns = letter_patterns("HTOXL")
net = HopfieldNetwork.from_patterns(patterns)
noisy = flip_bits(patterns, 8, rng)
result = net.run(noisy, rng=rng)
print(f"recalled exactly: {[bool(np.array_equal(a, b)) for a, b in zip(result.states, patterns)]}")
print(f"energy of the noisy states {np.round(net.energy(noisy), 1)} → recalled {np.round(net.energy(result.states), 1)}")
fig = Figure(figsize=(7.5, 3), layout="constrained")
axes = fig.subplots(2, len(patterns))
for j in range(len(patterns)):
    for i, state in enumerate((noisy[j], result.states[j])):
        axes[i][j].imshow(state.reshape(8, 8), cmap="gray")
        axes[i][j].set_axis_off()
lecture.save(fig, "hopfield_recall.png")

# %% [markdown]
# ## The Boltzmann distribution, and the slide's table
#
# With two visible and two hidden units there are 16 states: we can write every probability down.
# The slide's machine reproduces its table, total 39.70 (the slide rounds each $e^{-E}$ to two
# decimals; the exact Z is 39.69).

# %%
lecture.equation("EBM-6")
lecture.equation("EBM-8")
machine = slide_example()
print(format_table(example_table(machine)))
print(f"exact Z = {np.exp(machine.log_partition()):.3f}")

# %% [markdown]
# ## A unit's probability of being on, and simulated annealing
#
# One unit's conditional is a logistic function of its energy gap — the ratio of two joint
# probabilities, which is what a Gibbs sweep samples from. At high temperature the chain moves
# freely; cooling slowly (simulated annealing) lets it settle into a deep minimum.

# %%
lecture.equation("EBM-7")
lecture.equation("EBM-9")
states = machine.all_states()
on = states[:, 2] == 1
joint = machine.joint()
pairs = {tuple(np.delete(s, 2)): p for s, p in zip(states[on], joint[on])}
ratio = [pairs[tuple(np.delete(s, 2))] / (pairs[tuple(np.delete(s, 2))] + p)
         for s, p in zip(states[~on], joint[~on])]
print(f"p(h1 = 1 | rest) from the gap: {np.round(machine.probability_on(states[~on], 2), 4)}")
print(f"                 from the joint: {np.round(ratio, 4)}")
big = BoltzmannMachine.random(8, 8, weight_scale=1.5, rng=np.random.default_rng(1))
trajectory = big.anneal(geometric_schedule(10.0, 0.1, lecture.size(200, 50)), n_chains=20, rng=rng)
print(f"annealed chains end at energies {np.round(np.sort(trajectory.final_energies)[:5], 2)} …; "
      f"the ground state is {big.ground_state_energy():.2f}")

# %% [markdown]
# ## Learning: match the data's statistics
#
# The gradient of the KL divergence G from the data's visible distribution to the machine's is the
# difference between pair statistics with the visible units clamped to data and running free.
# Exact statistics (enumeration) make G fall steadily.

# %%
lecture.equation("EBM-10")
learner = BoltzmannMachine.random(3, 2, weight_scale=0.1, rng=np.random.default_rng(2))
target = np.array([0.4, 0.05, 0.05, 0.0, 0.0, 0.05, 0.05, 0.4])      # p(v) over the 8 visible states
history = learner.fit(target, steps=lecture.size(300, 60), learning_rate=0.5)
print(f"G: {history[0]:.4f} → {history[-1]:.4f} nats")

# %% [markdown]
# ## Restricted Boltzmann machines and deep belief networks on the digits
#
# Without visible–visible and hidden–hidden connections, each layer's units are independent given
# the other's: block Gibbs sampling, and contrastive divergence (CD-k) as the learning rule.
# `lecture.train` is `minigen train rbm --data digits …`; its filters and samples are what the
# hidden units learned. A DBN stacks RBMs greedily, each trained on the previous one's hidden codes.

# %%
lecture.equation("EBM-11")
lecture.equation("EBM-12")
rbm = lecture.train("rbm", data="digits", binarize="dynamic", hidden=lecture.size(64, 16),
                    steps=lecture.size(3000, 100), batch_size=32)
from minigen.viz import save_image_grid  # noqa: E402

samples = rbm.sample(lecture.size(64, 16), steps=lecture.size(1000, 50)).reshape(-1, 1, 8, 8)
lecture.save(save_image_grid(samples, lecture.out + "/_r.png", nrow=8), "rbm_samples.png")

# %% [markdown]
# A small DBN (two hidden layers of 8 and 6 units, `minigen train dbn --hidden 8,6`) is small enough
# to enumerate: its exact log-likelihood sits above the variational bound that justifies greedy
# layer-wise training.

# %%
dbn = lecture.train("dbn", data="digits", binarize="dynamic", hidden="8,6", steps=lecture.size(2000, 100),
                    batch_size=32)
from minigen.data import load_dataset  # noqa: E402

test = load_dataset("digits", "test", binarize="dynamic").images[:lecture.size(200, 20)].reshape(-1, 64)
exact, bound = dbn.log_prob(test).mean(), dbn.variational_bound(test).mean()
print(f"DBN on held-out digits: exact log p(x) {exact:.4f} ≥ bound {bound:.4f} nats")
