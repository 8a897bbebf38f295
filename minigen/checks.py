"""Argument checks shared by every module, so that bad input fails the same way everywhere:
a ``ValueError`` (or a subclass) naming the argument, what was expected and what came."""
from __future__ import annotations

import numbers

__all__ = ["check_int", "parse_sizes"]


def check_int(name: str, value, minimum: int = 1, error: type = ValueError) -> int:
    """``value`` as a Python int >= ``minimum``; bools (and NumPy bools) are refused, NumPy ints accepted."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise error(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def parse_sizes(text) -> tuple:
    """A command line's layer sizes: ``"200,200"`` → ``(200, 200)``, every size a positive integer."""
    try:
        sizes = tuple(int(s) for s in str(text).split(",") if s.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated layer sizes like 200,200, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"layer sizes must be positive integers, got {text!r}")
    return sizes
