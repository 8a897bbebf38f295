"""Finite-difference checks of autograd, for tests and for students' own ops.

:func:`gradcheck` compares the vector-Jacobian product that ``backward`` computes
with central differences of the forward function, in float64, along random
directions (a random projection: for random ``u`` and ``v``,
:math:`u^\\top J v` must agree, which fails for any wrong entry of J with
probability 1). :func:`gradgradcheck` does the same for the gradient itself,
which tests double backward (``create_graph=True``).
"""
from __future__ import annotations

import numpy as np

from . import autograd
from .autograd import Tensor


def _as_outputs(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


def _scalar_projection(fn, inputs, cotangents):
    outs = _as_outputs(fn(*inputs))
    return sum(float((o.data.astype(np.float64) * u).sum()) for o, u in zip(outs, cotangents))


def gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, directions=3, seed=0) -> bool:
    """Raise ``AssertionError`` unless autograd's gradients of ``fn`` match finite differences.

    ``inputs`` are float64 tensors; those with ``requires_grad`` are checked.
    ``fn`` may return one tensor or a tuple of tensors.
    """
    rng = np.random.default_rng(seed)
    inputs = list(inputs)
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    for i in wrt:
        if inputs[i].dtype != np.float64:
            raise TypeError(f"gradcheck: input {i} must be float64, got {inputs[i].dtype}")
    outs = [o for o in _as_outputs(fn(*inputs))]
    cotangents = [rng.standard_normal(o.shape) for o in outs]
    grads = autograd.grad(
        [o for o in outs if o.requires_grad],
        [inputs[i] for i in wrt],
        [Tensor(u) for o, u in zip(outs, cotangents) if o.requires_grad],
        allow_unused=True,
    )
    for _ in range(directions):
        vs = {i: rng.standard_normal(inputs[i].shape) for i in wrt}
        analytic = sum(float((g.data * vs[i]).sum()) for i, g in zip(wrt, grads) if g is not None)

        def shifted(sign):
            moved = list(inputs)
            for i in wrt:  # requires_grad kept: fn may differentiate inside (gradgradcheck)
                moved[i] = Tensor(inputs[i].data + sign * eps * vs[i], requires_grad=True)
            return _scalar_projection(fn, moved, cotangents)

        numeric = (shifted(+1) - shifted(-1)) / (2 * eps)
        if not abs(analytic - numeric) <= atol + rtol * abs(numeric):
            raise AssertionError(
                f"gradcheck failed: autograd gives u^T J v = {analytic!r}, "
                f"finite differences give {numeric!r}")
    return True


def gradgradcheck(fn, inputs, **kwargs) -> bool:
    """Check second derivatives: :func:`gradcheck` of ``x -> (dfn/dx)^T u`` built with
    ``create_graph=True``, for a fixed random cotangent ``u``."""
    rng = np.random.default_rng(kwargs.get("seed", 0) + 1)
    inputs = list(inputs)
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    outs = _as_outputs(fn(*inputs))
    cotangents = [Tensor(rng.standard_normal(o.shape)) for o in outs]

    def first_derivative(*xs):
        outs = _as_outputs(fn(*xs))
        grads = autograd.grad(outs, [xs[i] for i in wrt], cotangents, create_graph=True,
                              allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return gradcheck(first_derivative, inputs, **kwargs)
