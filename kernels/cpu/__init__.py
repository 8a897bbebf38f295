"""Numba CPU kernels; each has the signature of its twin in ``kernels/reference.py``.

Names missing here fall back to the NumPy reference (see ``minigen.backend``).
"""
import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    # Workers that sleep when idle (no OpenMP spin-wait stealing cores from BLAS);
    # read by Numba when it launches its first parallel region.
    numba.config.THREADING_LAYER = "workqueue"

from .attention import attention_backward, attention_forward  # noqa: F401
from .conv import conv2d_forward, conv2d_input_grad, conv2d_weight_grad  # noqa: F401
from .elementwise import erf  # noqa: F401
