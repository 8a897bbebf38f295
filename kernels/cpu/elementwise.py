"""Element-wise Numba kernels."""
import math

import numba


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def erf(x):
    """The error function, compiled (NumPy has none)."""
    return math.erf(x)
