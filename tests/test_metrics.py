"""The evaluation helpers of ``minigen.metrics`` on inputs whose answers are known."""
import math

import numpy as np
import pytest

from minigen.metrics import bits_per_dim, latent_activity, linear_probe, summarize


def test_bits_per_dim_converts_nats_per_image():
    # 784 ln 2 nats is exactly one bit per pixel of a 28x28 image
    assert bits_per_dim(784 * math.log(2.0), 784) == pytest.approx(1.0)


def test_summarize_reports_mean_and_standard_error():
    out = summarize([1.0, 2.0, 3.0, 4.0])
    assert out["mean"] == 2.5 and out["n"] == 4
    assert out["sem"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2.0)


def test_latent_activity_is_the_variance_of_posterior_means():
    rng = np.random.default_rng(0)
    means = np.stack([rng.normal(0, 1.0, 20000), rng.normal(0, 0.01, 20000), np.full(20000, 0.3)], 1)
    activity = latent_activity(means)
    assert activity[0] == pytest.approx(1.0, rel=0.05)
    assert (activity > 1e-2).tolist() == [True, False, False]   # Burda et al.'s active-unit count: 1


@pytest.mark.parametrize("shape", [(5,), (1, 3), (2, 3, 4)])
def test_latent_activity_names_a_bad_shape(shape):
    with pytest.raises(ValueError, match=r"posterior_means must be .*got shape"):
        latent_activity(np.zeros(shape))


def test_linear_probe_separates_separable_classes_and_is_deterministic():
    rng = np.random.default_rng(1)
    centers = rng.normal(0, 4, (3, 5))
    labels = rng.integers(0, 3, 600)
    features = centers[labels] + rng.normal(0, 0.5, (600, 5))
    args = (features[:400], labels[:400], features[400:], labels[400:])
    first = linear_probe(*args, steps=200)
    assert first > 0.97
    assert linear_probe(*args, steps=200) == first


def test_linear_probe_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="same width"):
        linear_probe(np.zeros((4, 3)), np.zeros(4), np.zeros((4, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="differ in length"):
        linear_probe(np.zeros((4, 3)), np.zeros(3), np.zeros((4, 3)), np.zeros(4))
