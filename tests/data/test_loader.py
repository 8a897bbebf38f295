"""DataLoader: every example once per epoch, reproducible shuffles and transforms,
and a loader restored from ``state_dict()`` mid-epoch continues exactly."""
import itertools
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigen.data import DataError, DataLoader


def raises(exc, *fragments):
    return pytest.raises(exc, match="(?s)" + ".*".join(re.escape(f) for f in fragments))


def noisy(batch, rng):
    """A transform whose output depends on its rng."""
    x, y = batch
    return x + rng.standard_normal(x.shape), y


@given(n=st.integers(1, 40), bs=st.integers(1, 12), shuffle=st.booleans(),
       drop_last=st.booleans(), epoch=st.integers(0, 3))
def test_every_example_once_per_epoch(n, bs, shuffle, drop_last, epoch):
    if drop_last and n < bs:
        return  # no batch at all: covered by test_errors
    loader = DataLoader(np.arange(n), batch_size=bs, shuffle=shuffle, drop_last=drop_last)
    loader.set_epoch(epoch)
    batches = list(loader)
    assert len(batches) == len(loader) == (n // bs if drop_last else -(-n // bs))
    assert all(len(b) == bs for b in batches[:n // bs])
    seen = np.concatenate(batches)
    assert len(set(seen.tolist())) == len(seen)
    assert len(seen) == (n // bs * bs if drop_last else n)
    if not shuffle:
        assert seen.tolist() == list(range(len(seen)))
    assert loader.epoch == epoch + 1


def test_tuples_and_single_arrays():
    x, y = np.arange(10.0).reshape(5, 2), np.arange(5)
    xb, yb = next(iter(DataLoader(x, y, batch_size=2)))
    assert xb.tolist() == [[0, 1], [2, 3]] and yb.tolist() == [0, 1]
    single = next(iter(DataLoader(y, batch_size=3)))
    assert isinstance(single, np.ndarray) and single.tolist() == [0, 1, 2]


def test_batches_are_copies():
    x = np.zeros(4)
    next(iter(DataLoader(x, batch_size=2)))[:] = 7
    assert not x.any()


def test_shuffle_is_reproducible_per_epoch():
    def epochs(loader, k):
        return [np.concatenate(list(loader)).tolist() for _ in range(k)]

    a = epochs(DataLoader(np.arange(50), batch_size=8, shuffle=True, seed=3), 3)
    assert a == epochs(DataLoader(np.arange(50), batch_size=8, shuffle=True, seed=3), 3)
    assert a[0] != a[1] != a[2]
    assert a[0] != epochs(DataLoader(np.arange(50), batch_size=8, shuffle=True, seed=4), 1)[0]
    jump = DataLoader(np.arange(50), batch_size=8, shuffle=True, seed=3)
    jump.set_epoch(2)  # independent of history
    assert np.concatenate(list(jump)).tolist() == a[2]


@given(n=st.integers(1, 30), bs=st.integers(1, 8), drop_last=st.booleans(),
       stop=st.integers(0, 40), seed=st.integers(0, 2 ** 31))
def test_resume_equals_uninterrupted(n, bs, drop_last, stop, seed):
    if drop_last and n < bs:
        return
    x, y = np.arange(n, dtype=np.float64), np.arange(n)

    def make():
        return DataLoader(x, y, batch_size=bs, shuffle=True, seed=seed, drop_last=drop_last,
                          transform=noisy)

    total = stop + 2 * len(make())
    reference = list(itertools.islice(make().batches(), total))
    first = make()
    stream = first.batches()
    head = [next(stream) for _ in range(stop)]
    state = first.state_dict()
    assert state["epoch"] * len(first) + state["batch"] == stop
    resumed = DataLoader(x, y, batch_size=bs, shuffle=True, seed=0, drop_last=drop_last,
                         transform=noisy)  # the seed comes from the state
    resumed.load_state_dict(state)
    tail = list(itertools.islice(resumed.batches(), total - stop))
    assert len(head + tail) == len(reference)
    for (xa, ya), (xb, yb) in zip(reference, head + tail):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_for_loop_resumes_the_current_epoch_then_advances():
    loader = DataLoader(np.arange(10), batch_size=3)
    for b in loader:
        break
    assert loader.state_dict() == {"epoch": 0, "batch": 1, "seed": 0}
    assert [b.tolist() for b in loader] == [[3, 4, 5], [6, 7, 8], [9]]
    assert loader.state_dict() == {"epoch": 1, "batch": 0, "seed": 0}
    end = DataLoader(np.arange(10), batch_size=3)
    end.load_state_dict({"epoch": 4, "batch": 4, "seed": 0})  # epoch 4 fully consumed
    assert next(end.batches()).tolist() == [0, 1, 2] and end.epoch == 5


def test_transform_gets_position_seeded_rng():
    calls = []

    def record(batch, rng):
        calls.append(rng.integers(2 ** 62))
        return batch

    loader = DataLoader(np.arange(6), batch_size=2, seed=5, transform=record)
    list(loader), list(loader)
    expected = [np.random.default_rng([5, e, b, 1]).integers(2 ** 62)
                for e in range(2) for b in range(3)]
    assert calls == expected


def test_errors():
    with raises(DataError, "array 0 has 3 rows but array 1 has 4"):
        DataLoader(np.zeros(3), np.zeros(4), batch_size=1)
    with raises(DataError, "at least one array"):
        DataLoader(batch_size=1)
    for bad in (0, -2, 2.5, True, "8"):
        with raises(DataError, "batch_size: expected an integer >= 1", repr(bad)):
            DataLoader(np.zeros(3), batch_size=bad)
    with raises(DataError, "seed: expected an integer >= 0, got -1"):
        DataLoader(np.zeros(3), batch_size=1, seed=-1)
    with raises(DataError, "0 batches per epoch", "N=3, batch_size=4, drop_last=True"):
        DataLoader(np.zeros(3), batch_size=4, drop_last=True)
    loader = DataLoader(np.zeros(6), batch_size=2)
    with raises(DataError, "missing keys ['seed']"):
        loader.load_state_dict({"epoch": 0, "batch": 0})
    with raises(DataError, "state['batch'] = 5", "only 3 batches"):
        loader.load_state_dict({"epoch": 0, "batch": 5, "seed": 0})
    with raises(DataError, "epoch: expected an integer >= 0"):
        loader.set_epoch(-1)
    bad = DataLoader(np.zeros(6), batch_size=2, transform=lambda b, rng: b[0])
    with raises(DataError, "transform must return a tuple", "ndarray"):
        next(iter(bad))
