"""A hypothesis-driven fuzz of the public API (see ``fuzz_api.py``): every functional op and every
layer, called with damaged arguments, either answers correctly or raises a documented error from
minigen's own checks. ``MINIGEN_FUZZ_EXAMPLES`` sets the examples per op (default 50)."""
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuzz_api import FUNCTIONAL, LAYERS, ORACLES, judge, mutate

EXAMPLES = int(os.environ.get("MINIGEN_FUZZ_EXAMPLES", "50"))
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def _fuzz(name, case, data):
    fn, args, kwargs = case()
    args, kwargs, change = mutate(args, kwargs, lambda lo, hi: data.draw(st.integers(lo, hi)),
                                  lambda options: data.draw(st.sampled_from(options)))
    problem = judge(name, fn, args, kwargs, ORACLES.get(name))
    assert problem is None, f"{name}, {change}: {problem}"


@pytest.mark.parametrize("name", sorted(FUNCTIONAL))
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_functional_op_under_fuzz(name, data):
    _fuzz(name, FUNCTIONAL[name], data)


@pytest.mark.parametrize("name", sorted(LAYERS))
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_layer_under_fuzz(name, data):
    _fuzz(name, LAYERS[name], data)


@pytest.mark.parametrize("name", sorted(FUNCTIONAL))
def test_every_valid_call_passes_the_judge(name):
    """The unmutated calls are correct: the fuzz starts from working code, and the oracles agree."""
    fn, args, kwargs = FUNCTIONAL[name]()
    assert judge(name, fn, args, kwargs, ORACLES.get(name)) is None
