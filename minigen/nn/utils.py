"""Helpers around parameters: gradient clipping, flat vectors, functional calls.

``clip_grad_norm_`` and ``clip_grad_value_`` live in :mod:`minigen.optim` (with the
optimisers); they are re-exported here under PyTorch's ``nn.utils`` names.
"""
from __future__ import annotations

import contextlib

from .. import ops
from ..autograd import Tensor
from .module import Module


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale gradients so that their joint ``norm_type``-norm is at most ``max_norm``;
    returns the norm before clipping. See :func:`minigen.optim.clip_grad_norm_`."""
    from ..optim import clip_grad_norm_ as impl  # imported late: optim imports nothing of nn

    return impl(parameters, max_norm, norm_type, error_if_nonfinite=error_if_nonfinite)


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element to ``[-clip_value, clip_value]``.
    See :func:`minigen.optim.clip_grad_value_`."""
    from ..optim import clip_grad_value_ as impl

    return impl(parameters, clip_value)


def _as_list(parameters):
    return [parameters] if isinstance(parameters, Tensor) else list(parameters)


def parameters_to_vector(parameters) -> Tensor:
    """All parameters flattened and concatenated into one vector (differentiable)."""
    params = _as_list(parameters)
    if not params:
        raise ValueError("parameters_to_vector: got no parameters")
    devices = {p.device for p in params}
    if len(devices) > 1:
        raise ValueError(f"parameters_to_vector: parameters are on several devices {devices}")
    return ops.cat([p.reshape(-1) for p in params])


def vector_to_parameters(vec, parameters) -> None:
    """Copy consecutive slices of ``vec`` into the parameters, in place (their arrays and
    identities are kept)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"vector_to_parameters: expected vec to be a Tensor, got "
                        f"{type(vec).__name__}")
    params = _as_list(parameters)
    total = sum(p.numel() for p in params)
    if vec.ndim != 1 or vec.numel() != total:
        raise ValueError(f"vector_to_parameters: vec has shape {vec.shape} but the parameters "
                         f"hold {total} values")
    offset = 0
    for p in params:
        n = p.numel()
        p.data[...] = vec.data[offset:offset + n].reshape(p.shape).astype(p.dtype, copy=False)
        offset += n


@contextlib.contextmanager
def _swapped(module: Module, tensors: dict):
    """Temporarily put ``tensors`` (dotted names) in place of parameters/buffers."""
    saved = []
    try:
        for key, value in tensors.items():
            owner_name, _, leaf = key.rpartition(".")
            owner = module.get_submodule(owner_name)
            table = owner._parameters if leaf in owner._parameters else owner._buffers
            if leaf not in table:
                raise KeyError(f"functional_call: {type(module).__name__} has no parameter or "
                               f"buffer '{key}'")
            saved.append((table, leaf, table[leaf]))
            table[leaf] = value
        yield
    finally:
        for table, leaf, old in reversed(saved):
            table[leaf] = old


def functional_call(module: Module, parameters_and_buffers: dict, args=(), kwargs=None):
    """Run ``module(*args, **kwargs)`` with some parameters/buffers replaced by the given
    tensors (``{dotted_name: tensor}``), then restore them (PyTorch's
    ``torch.func.functional_call``). Handy to differentiate with respect to
    weights given as plain inputs, e.g. in :func:`minigen.gradcheck.gradcheck`."""
    args = args if isinstance(args, tuple) else (args,)
    with _swapped(module, parameters_and_buffers):
        return module(*args, **(kwargs or {}))
