"""Shared test configuration: hypothesis profile, seeding, the GPU marker."""
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import minigen as mg

settings.register_profile(
    "minigen", deadline=None, max_examples=50, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("minigen")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    mg.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config, items):
    if mg.cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
