"""Shared test configuration: hypothesis profile, seeding, the GPU marker, the assignment tasks' markers."""
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import minigen as mg
from minigen.assignments import TASKS, marker_name

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


def pytest_configure(config):
    """One marker per assignment task (``pytest -m task7_1``: that task's tests)."""
    for task in TASKS.values():
        config.addinivalue_line("markers", f"{marker_name(task.id)}: the tests of task {task.id}, {task.title}")


def pytest_collection_modifyitems(config, items):
    marks = {test: marker_name(task.id) for task in TASKS.values() for test in task.tests}
    for item in items:                       # before -m selects: conftest hooks run before pytest's own
        mark = marks.get(item.nodeid.split("[")[0])
        if mark:
            item.add_marker(getattr(pytest.mark, mark))
    if mg.cuda_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    """After a run that fuzzed the API (``test_fuzz.py``), one line of what the damaged calls did."""
    import sys
    fuzz = sys.modules.get("fuzz_api")
    if fuzz is not None and fuzz.OUTCOMES:
        counts = ", ".join(f"{n} {what}" for what, n in sorted(fuzz.OUTCOMES.items()))
        terminalreporter.write_line(f"API fuzz: {sum(fuzz.OUTCOMES.values())} calls: {counts}")
