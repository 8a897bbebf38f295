"""Eq. TAX-1: every generative model of the registry says where it stands in the taxonomy (explicit
tractable, explicit approximate, implicit), and only the explicit-density ones expose a log-likelihood
or a bound on it."""
import itertools

import numpy as np
import pytest

import minigen as mg
from minigen.models import build_default, registry
from minigen.models.autoregressive import FVSBN
from minigen.models.diffusion.latent import LatentDiffusion
from minigen.models.energy.boltzmann import BoltzmannMachine
from minigen.models.energy.recipes import BoltzmannMachineModule
from minigen.models.taxonomy import APPROXIMATE, IMPLICIT, TRACTABLE, density_kind, density_methods
from minigen.models.vae import LinearGaussianVAE

#: The lecture's tree, family by family (the classifier is no generative model).
EXPECTED = {**dict.fromkeys(["fvsbn", "nade", "pixelcnn", "gated_pixelcnn", "pixelrnn", "realnvp", "planar"],
                            TRACTABLE),
            **dict.fromkeys(["vae", "hvae", "autoencoder", "ddpm", "latent_diffusion", "rbm", "dbn", "bm"],
                            APPROXIMATE),
            **dict.fromkeys(["gan", "dcgan", "cgan", "stylegan", "cyclegan"], IMPLICIT)}


def build(name):
    """The registry's model with its command-line defaults, for 8×8 images (points for the planar flow)."""
    return build_default(name, (2,) if name == "planar" else (1, 8, 8))


def test_the_expected_table_names_every_generative_model():
    assert set(EXPECTED) == set(registry()) - {"classifier"}


@pytest.mark.equation("TAX-1")
@pytest.mark.parametrize("name", sorted(set(EXPECTED) - {"latent_diffusion"}))   # that one needs a trained AE
def test_every_model_reports_its_kind_and_only_explicit_ones_a_density(name):
    model = build(name)
    kind = density_kind(model)
    assert kind == EXPECTED[name]
    methods = density_methods(model)
    if kind == IMPLICIT:
        assert methods == []                        # a GAN only samples
    else:
        assert methods                              # a log-likelihood or a bound on it
    if kind == TRACTABLE:
        assert "log_prob" in methods


@pytest.mark.equation("TAX-1")
def test_latent_diffusion_and_non_generative_models():
    assert density_kind(LatentDiffusion) == APPROXIMATE
    with pytest.raises(TypeError, match="DigitClassifier is not a generative model of the taxonomy"):
        density_kind(build("classifier"))


@pytest.mark.equation("TAX-1")
def test_tractable_is_exact_and_approximate_is_a_bound():
    """Tractable: a 2×2 binary FVSBN's exp(log_prob) sums to 1 over all 16 images. Approximate: a
    linear-Gaussian VAE's ELBO lies below its exact log-likelihood; a Boltzmann machine's exact
    log_prob needs the partition function, which only enumeration (or AIS) gives."""
    fvsbn = FVSBN((1, 2, 2))
    images = np.array(list(itertools.product([0, 1], repeat=4)), np.float32).reshape(16, 1, 2, 2)
    with mg.no_grad():
        total = np.exp(fvsbn.log_prob(images).numpy().astype(np.float64)).sum()
    assert total == pytest.approx(1.0, abs=1e-5)
    vae = LinearGaussianVAE(3, 2).double()
    x = np.random.default_rng(0).normal(size=(200, 3))
    with mg.no_grad():
        elbo = vae.elbo(mg.tensor(x)).get("elbo").numpy()
    assert (elbo.mean() < vae.exact_log_marginal(x).mean())
    bm = BoltzmannMachineModule(BoltzmannMachine.random(3, 2, weight_scale=1.0, rng=np.random.default_rng(0)))
    visible = np.array(list(itertools.product([0, 1], repeat=3)))
    assert np.exp(bm.log_prob(visible)).sum() == pytest.approx(1.0, abs=1e-9)
