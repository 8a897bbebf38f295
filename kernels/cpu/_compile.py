"""One loop body, compiled twice: serial for small arrays, parallel for large ones."""
import types

import numba


def serial_and_parallel(body, **flags):
    """``(serial, parallel)`` njit versions of ``body``, each cached on disk under its own name.

    Numba's cache keys a function by module, qualified name, line and bytecode — not by its flags. Two
    ``njit(cache=True)`` wrappers of one function share an entry, so the parallel version can silently
    load the serial machine code (or the reverse): it happened here, and SiLU ran on one core. Each
    version therefore compiles a copy of the function renamed ``<name>_serial`` / ``<name>_parallel``.
    """
    versions = []
    for parallel in (False, True):
        copy = types.FunctionType(body.__code__, body.__globals__, body.__name__, body.__defaults__,
                                  body.__closure__)
        copy.__qualname__ = f"{body.__qualname__}_{'parallel' if parallel else 'serial'}"
        copy.__doc__ = body.__doc__
        versions.append(numba.njit(parallel=parallel, cache=True, **flags)(copy))
    return tuple(versions)
