"""Mini-batches over NumPy arrays, reproducible and resumable.

``DataLoader(x, y, batch_size=64, shuffle=True, seed=0)`` yields one epoch of
batches per ``for`` loop. Every random choice is derived from the position in
the data stream, never from history:

* the shuffle order of epoch ``e`` comes from ``default_rng([seed, e])``;
* the transform of batch ``b`` in epoch ``e`` gets ``default_rng([seed, e, b, 1])``.

So ``state_dict()`` (epoch, batches consumed, seed) is all a checkpoint needs:
a loader restored from it yields exactly the batches an uninterrupted run would
have seen. ``DataError`` lives here because this module is the bottom of the
``minigen.data`` package: every other data module imports it from here.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional

import numpy as np

from ..checks import check_int

Transform = Callable[[tuple, np.random.Generator], tuple]


class DataError(ValueError):
    """Bad data or a bad argument to a data function; the message says which and why."""



class DataLoader:
    """Batches over arrays that share their first dimension N.

    Iterating yields a tuple of arrays per batch, or the bare array when the
    loader holds one array. ``for batch in loader`` runs the rest of the
    current epoch (from the saved position) and then advances ``epoch``;
    ``loader.batches()`` runs epoch after epoch forever.
    """

    def __init__(self, *arrays: np.ndarray, batch_size: int, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False,
                 transform: Optional[Transform] = None) -> None:
        if not arrays:
            raise DataError("DataLoader: needs at least one array, got none")
        self.arrays = tuple(np.asarray(a) for a in arrays)
        n = len(self.arrays[0])
        for i, a in enumerate(self.arrays[1:], start=1):
            if len(a) != n:
                raise DataError(f"DataLoader: all arrays must have the same length; "
                                f"array 0 has {n} rows but array {i} has {len(a)}")
        self.batch_size = check_int("DataLoader: batch_size", batch_size, 1, DataError)
        self.seed = check_int("DataLoader: seed", seed, 0, DataError)
        self.shuffle, self.drop_last, self.transform = bool(shuffle), bool(drop_last), transform
        self.num_examples = n
        if len(self) == 0:
            raise DataError(f"DataLoader: 0 batches per epoch (N={n}, batch_size={batch_size}, "
                            f"drop_last={drop_last}); use more data or a smaller batch_size")
        self.epoch = 0
        self._batch = 0  # batches of the current epoch already handed out

    def __len__(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def set_epoch(self, epoch: int) -> None:
        """Jump to the start of ``epoch``."""
        self.epoch, self._batch = check_int("DataLoader: epoch", epoch, 0, DataError), 0

    def state_dict(self) -> dict:
        """The position in the data stream, ``{'epoch', 'batch', 'seed'}``: all a checkpoint needs."""
        return {"epoch": self.epoch, "batch": self._batch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a ``state_dict()``: the rest of its epoch, then the next epochs."""
        missing = {"epoch", "batch", "seed"} - set(state)
        if missing:
            raise DataError(f"DataLoader.load_state_dict: missing keys {sorted(missing)}; "
                            f"expected 'epoch', 'batch', 'seed', got {sorted(state)}")
        epoch = check_int("DataLoader: state['epoch']", int(state["epoch"]), 0, DataError)
        batch = check_int("DataLoader: state['batch']", int(state["batch"]), 0, DataError)
        if batch > len(self):
            raise DataError(f"DataLoader.load_state_dict: state['batch'] = {batch} but an epoch "
                            f"has only {len(self)} batches (N={self.num_examples}, "
                            f"batch_size={self.batch_size}); was the data or batch size changed?")
        self.seed = check_int("DataLoader: state['seed']", int(state["seed"]), 0, DataError)
        self.epoch, self._batch = epoch, batch

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_examples)
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

    def _make_batch(self, order: np.ndarray, epoch: int, b: int):
        idx = order[b * self.batch_size:(b + 1) * self.batch_size]
        batch = tuple(a[idx] for a in self.arrays)  # fancy indexing: copies, never views
        if self.transform is not None:
            batch = self.transform(batch, np.random.default_rng([self.seed, epoch, b, 1]))
            if not isinstance(batch, tuple):
                raise DataError(f"DataLoader: transform must return a tuple of arrays, "
                                f"got {type(batch).__name__}")
        return batch[0] if len(batch) == 1 else batch

    def __iter__(self) -> Iterator[Any]:
        epoch, order = self.epoch, self._order(self.epoch)
        while self._batch < len(self):
            b = self._batch
            self._batch += 1  # counted before the yield: a checkpoint taken now includes it
            yield self._make_batch(order, epoch, b)
        self.epoch, self._batch = epoch + 1, 0

    def batches(self) -> Iterator[Any]:
        """Endless stream of batches; ``epoch`` and ``state_dict()`` stay current."""
        while True:
            yield from self
