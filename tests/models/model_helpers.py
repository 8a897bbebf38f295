"""Helpers shared by the model tests (imported by name: pytest puts this folder on sys.path)."""
import numpy as np


def randomize(module, seed=0, scale=1.0):
    """``module`` in float64 with every parameter drawn from N(0, scale²): far from its
    initialisation, so exact identities are tested on a generic network."""
    rng = np.random.default_rng(seed)
    module = module.double()
    for p in module.parameters():
        p.data[...] = rng.normal(scale=scale, size=p.shape)
    return module
