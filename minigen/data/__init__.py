"""Data for minigen: 2-D toy densities, image datasets and a resumable loader.

    from minigen.data import load_dataset, load_toy

    ds = load_dataset("mnist", "train", binarize="dynamic")   # Dataset, images (N, 1, 28, 28)
    for x, y in ds.loader(batch_size=128).batches(): ...      # endless, checkpointable
    x = load_toy("ring8", 1000)                               # (1000, 2) float32

Nothing here needs the network by default: toy densities are computed and the
digits ship with scikit-learn. MNIST-like datasets are read from a local folder
or downloaded once into a cache (see ``images``).
"""
from typing import Dict

from .images import (MIRRORS, Dataset, default_cache_dir, dynamic_binarize, load_dataset,
                     mirror_url, parse_amat, parse_idx)
from .images import DESCRIPTIONS as _IMAGE_DESCRIPTIONS
from .loader import DataError, DataLoader
from .toy import (TOY_DATASETS, Checkerboard, GaussianMixture2D, Grid25, Moons, NoisyCurve,
                  Ring8, Swissroll, ToyDensity, get_toy, load_toy, toy_dataset)

__all__ = [
    "DataError", "DataLoader", "Dataset", "load_dataset", "dynamic_binarize", "list_datasets",
    "MIRRORS", "default_cache_dir", "mirror_url", "parse_idx", "parse_amat",
    "TOY_DATASETS", "ToyDensity", "GaussianMixture2D", "NoisyCurve", "Ring8", "Grid25",
    "Moons", "Swissroll", "Checkerboard", "get_toy", "load_toy", "toy_dataset",
]


def list_datasets() -> Dict[str, str]:
    """Every dataset name with a one-line description: images first, then 2-D toys."""
    toys = {name: f"2-D toy: {cls.description}" for name, cls in TOY_DATASETS.items()}
    return {**_IMAGE_DESCRIPTIONS, **toys}
