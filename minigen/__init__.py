"""minigen — deep generative models from scratch, for people who learn them.

The public surface mirrors PyTorch's names::

    import minigen as mg
    import minigen.nn as nn
    import minigen.nn.functional as F

    x = mg.randn(8, 3, requires_grad=True)
    loss = (x ** 2).sum()
    loss.backward()          # x.grad == 2 x
"""
import os as _os

# OpenBLAS workers spin for a long time after each matmul and starve the Numba
# kernels that run next (a 3x slowdown on 2 cores); a short timeout lets them
# sleep. It only takes effect if set before NumPy loads OpenBLAS.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


def _checkout_kernels():
    """A source checkout on ``sys.path`` without installation (an assignment copy, a clone): load
    ``minigen.kernels`` from the checkout's ``kernels/``, as setup.py's ``package_dir`` maps it when installed
    (an installed package has ``minigen/kernels/`` itself, and then nothing happens here)."""
    import importlib.util
    import sys

    here = _os.path.dirname(_os.path.abspath(__file__))
    init = _os.path.join(_os.path.dirname(here), "kernels", "__init__.py")
    if _os.path.isdir(_os.path.join(here, "kernels")) or not _os.path.exists(init) or "minigen.kernels" in sys.modules:
        return
    spec = importlib.util.spec_from_file_location("minigen.kernels", init,
                                                  submodule_search_locations=[_os.path.dirname(init)])
    sys.modules["minigen.kernels"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sys.modules["minigen.kernels"])


_checkout_kernels()

from . import backend, random  # noqa: E402
from .autograd import (Function, Tensor, enable_grad, is_grad_enabled, no_grad,
                       set_grad_enabled)
from . import autograd
from .ops import *  # noqa: F401,F403 - tensor constructors and ops under PyTorch's names
from .ops import (abs, all, any, max, min, pow, sum)  # noqa: A004 - shadowing is the point
from .random import get_rng_state, manual_seed, set_rng_state
from .backend import cuda_available

backend.keep_freed_memory()

import numpy as _np  # noqa: E402

float32, float64, int64, bool_ = _np.float32, _np.float64, _np.int64, _np.bool_

__version__ = "0.1.0"


def __getattr__(name):
    # Import the heavier sub-packages on first use (mg.nn, mg.optim, mg.save, ...).
    import importlib

    if name in ("nn", "optim"):
        return importlib.import_module(f".{name}", __name__)
    if name in ("save", "load"):
        return getattr(importlib.import_module(".serialization", __name__), name)
    raise AttributeError(f"module 'minigen' has no attribute {name!r}")
