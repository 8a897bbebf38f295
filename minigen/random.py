"""The seeded random generator behind every random op.

``mg.manual_seed(s)`` makes everything that draws randomness in minigen —
parameter initialisation, dropout, ``randn``, sampling from models — repeat
exactly. Each device has its own stream (NumPy's PCG64 on the CPU, CuPy's
generator on the GPU). ``get_rng_state``/``set_rng_state`` let a checkpoint
resume the stream where it stopped.
"""
from __future__ import annotations

import numpy as np

from . import backend

_DEFAULT_SEED = 0
_generators: dict = {}


def manual_seed(seed: int) -> None:
    """Reseed every device's generator."""
    global _DEFAULT_SEED
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative int, got {seed!r}")
    _DEFAULT_SEED = int(seed)
    _generators.clear()


seed = manual_seed


def generator(device: str = "cpu"):
    """The generator of a device (created from the current seed on first use)."""
    g = _generators.get(device)
    if g is None:
        if device == "cuda":
            g = backend.cupy.random.default_rng(_DEFAULT_SEED)
        else:
            g = np.random.Generator(np.random.PCG64(_DEFAULT_SEED))
        _generators[device] = g
    return g


def as_generator(rng=None) -> np.random.Generator:
    """``rng`` as a NumPy Generator: itself, a fresh one from an int seed, or (None) minigen's CPU stream.

    Functions that take an optional ``rng`` argument call this, so that a test
    can pass a seed while everyday use follows ``mg.manual_seed``.
    """
    if rng is None:
        return generator("cpu")
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng: expected None, a non-negative int seed or a numpy Generator, got {rng!r}")


def get_rng_state() -> dict:
    """The CPU generator's state, a JSON-serialisable dict."""
    return {"seed": _DEFAULT_SEED, "state": generator("cpu").bit_generator.state}


def set_rng_state(state: dict) -> None:
    """Restore the CPU generator and the current seed from a :func:`get_rng_state` dict."""
    global _DEFAULT_SEED
    _DEFAULT_SEED = int(state["seed"])
    generator("cpu").bit_generator.state = state["state"]
