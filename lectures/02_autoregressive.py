# %% [markdown]
# # 2 · Autoregressive models
#
# The chain rule of probability needs no assumption at all: any distribution over n pixels is a
# product of n conditionals, each pixel given the ones before it in some order. An autoregressive
# model learns those conditionals with one network whose output at pixel i may only look at pixels
# before i. The likelihood is then exact — the first branch of the taxonomy — and sampling is
# sequential: one network pass per pixel. Code: `minigen/models/autoregressive.py`, `pixelcnn.py`,
# `pixelrnn.py`.

# %%
import itertools

import numpy as np
from matplotlib.figure import Figure

import minigen as mg
from minigen.lecture import Lecture
from minigen.models.autoregressive import FVSBN, DiscretizedLogisticMixture
from minigen.models.pixelcnn import GatedPixelCNN, PixelCNN, causal_mask

lecture = Lecture("autoregressive")
mg.manual_seed(0)
rng = np.random.default_rng(0)

# %% [markdown]
# ## A fully visible belief network
#
# The simplest such model makes every conditional a logistic regression on the pixels before it.
# On 3×3 binary images we can check the two claims of the slide by brute force: the $2^9$
# probabilities sum to one, and $\log p(x)$ is the sum of the nine conditionals.

# %%
lecture.equation("AR-1")
fvsbn = FVSBN((1, 3, 3))
for p in fvsbn.parameters():                                # random weights, not the zeros it starts from
    p.data[...] = rng.normal(size=p.shape).astype(np.float32)
images = np.array(list(itertools.product([0, 1], repeat=9)), np.float32).reshape(-1, 1, 3, 3)
with mg.no_grad():
    log_p = fvsbn.log_prob(images).numpy().astype(np.float64)
    logits = fvsbn(mg.tensor(images)).numpy()[:, 0, 0].reshape(len(images), 9).astype(np.float64)
print(f"sum over all 512 images: {np.exp(log_p).sum():.6f}")
x = images.reshape(len(images), 9)
conditionals = x * -np.logaddexp(0, -logits) + (1 - x) * -np.logaddexp(0, logits)   # log σ(±logit)
print(f"largest |log p(x) − Σ_i log p(x_i | x_<i)|: {np.abs(log_p - conditionals.sum(1)).max():.2e}")

# %% [markdown]
# ## PixelCNN: causality by masking
#
# A convolution sees a neighbourhood on every side. PixelCNN zeroes the kernel taps at and after
# the centre (mask A, first layer: the pixel may not see itself) or after it (mask B, later layers,
# which may see the features computed at the centre from earlier pixels).

# %%
lecture.equation("AR-2")
for kind in "AB":
    print(f"mask {kind} (5×5):\n{causal_mask(1, 1, (5, 5), (2, 2), kind)[0, 0].astype(int)}")

# %% [markdown]
# Causality through a whole network, measured: the gradient of the network's output at one pixel
# with respect to every input pixel must vanish at and after that pixel. Stacked masked 3×3
# convolutions also miss a wedge of earlier pixels up and to the right — the *blind spot* — which the
# gated PixelCNN's vertical and horizontal stacks remove.

# %%
lecture.equation("AR-5")


def receptive_field(model, pixel=(5, 4), side=8):
    x = mg.tensor(rng.random((1, 1, side, side)).astype(np.float32), requires_grad=True)
    model(x)[0, 0, 0, pixel[0], pixel[1]].backward()
    return np.abs(x.grad.numpy()[0, 0]) > 0


fig = Figure(figsize=(6, 3), layout="constrained")
for ax, (name, model) in zip(fig.subplots(1, 2), [("PixelCNN", PixelCNN((1, 8, 8), 16, 4, 3, 3, 16)),
                                                  ("gated PixelCNN", GatedPixelCNN((1, 8, 8), 16, 5, 3, 3, 16))]):
    seen = receptive_field(model)
    before = np.arange(64).reshape(8, 8) < 5 * 8 + 4
    assert not (seen & ~before).any()                      # never at or after the pixel
    ax.imshow(seen, cmap="Blues", vmin=0, vmax=1.5)
    ax.scatter([4], [5], marker="x", color="red")
    ax.set(title=f"{name}: sees {seen.sum()} of {before.sum()}", xticks=[], yticks=[])
lecture.save(fig, "receptive_fields.png")

# %% [markdown]
# ## Training and sequential sampling
#
# `lecture.train` is `minigen train gated_pixelcnn --data digits …` (the digits are 8×8, binarized
# afresh each epoch). Sampling runs the network once per pixel; pixel i is fixed after step i. The
# sampler recomputes only the rows that can still influence the current one (`reach`), with the
# same result as the naive loop.

# %%
lecture.equation("AR-4")
model = lecture.train("gated_pixelcnn", data="digits", binarize="dynamic", steps=lecture.size(3000, 150),
                      channels=lecture.size(32, 16), layers=lecture.size(6, 3), batch_size=64)
from minigen.data import load_dataset  # noqa: E402

test = load_dataset("digits", "test", binarize="dynamic")
with mg.no_grad():
    nll = -model.log_prob(test.images[:lecture.size(360, 50)]).numpy().mean()
print(f"test negative log-likelihood: {nll:.2f} nats per 8×8 image (exact, not a bound)")
samples = model.sample(lecture.size(64, 8))
from minigen.viz import save_image_grid  # noqa: E402

lecture.save(save_image_grid(samples, lecture.out + "/_samples.png", nrow=8), "samples.png")

# %% [markdown]
# ## Grey levels: PixelCNN++'s discretized logistic mixture
#
# For 256 grey levels, a softmax per pixel ignores that level 200 is close to 201. PixelCNN++
# integrates a mixture of logistics over each level's bin, the two edge bins taking the open tails
# so the 256 probabilities telescope to exactly 1.

# %%
lecture.equation("AR-6")
likelihood = DiscretizedLogisticMixture(components=3)
params = mg.tensor(np.repeat(rng.normal(size=(1, 1, 9)), 256, axis=0))   # one pixel's parameters, 256 times
levels = mg.tensor((np.arange(256, dtype=np.float64) / 255).reshape(256, 1))
probs = np.exp(likelihood.log_prob(params, levels).numpy())
print(f"sum of the 256 level probabilities: {probs.sum():.12f}")
