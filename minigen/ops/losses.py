"""Loss functions: mse_loss l1_loss binary_cross_entropy(_with_logits) cross_entropy nll_loss,
and the fused per-example Bernoulli log-likelihood of latent-variable models.

Every loss takes PyTorch's ``reduction='mean'|'sum'|'none'``, applied by one helper.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..autograd import Function, Tensor
from .activations import log_softmax, sigmoid, softplus
from ._util import tensor_args


def _reduce(name, loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _check_same_shape(name, input, target):  # noqa: A002
    if not isinstance(target, Tensor):
        raise TypeError(f"{name}: target must be a Tensor, got {type(target).__name__}")
    if input.shape != target.shape:
        raise ValueError(f"{name}: input shape {input.shape} and target shape {target.shape} "
                         "must match")


@tensor_args("input", "target")
def mse_loss(input, target, reduction="mean"):  # noqa: A002
    """:math:`(x - y)^2`."""
    _check_same_shape("mse_loss", input, target)
    diff = input - target
    return _reduce("mse_loss", diff * diff, reduction)


@tensor_args("input", "target")
def l1_loss(input, target, reduction="mean"):  # noqa: A002
    """:math:`|x - y|`."""
    _check_same_shape("l1_loss", input, target)
    return _reduce("l1_loss", (input - target).abs(), reduction)


@tensor_args("input", "target", "weight")
def binary_cross_entropy(input, target, weight=None, reduction="mean"):  # noqa: A002
    """:math:`-[y\\log p + (1-y)\\log(1-p)]` with the logs clamped at -100 (as PyTorch),
    so p = 0 or 1 gives a finite loss."""
    name = "binary_cross_entropy"
    _check_same_shape(name, input, target)
    if input.xp.any((input.data < 0) | (input.data > 1)):
        raise ValueError(f"{name}: input must be probabilities in [0, 1]; for logits use "
                         "binary_cross_entropy_with_logits")
    loss = -(target * input.log().clamp(min=-100.0) + (1 - target) * (1 - input).log().clamp(min=-100.0))
    if weight is not None:
        loss = loss * weight
    return _reduce(name, loss, reduction)


@tensor_args("input", "target", "weight", "pos_weight")
def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",  # noqa: A002
                                     pos_weight=None):
    """BCE on logits x, stably: :math:`\\mathrm{softplus}(x) - xy`, with ``pos_weight`` w:
    :math:`(1-y)x + (1 + (w-1)y)\\,\\mathrm{softplus}(-x)`."""
    name = "binary_cross_entropy_with_logits"
    _check_same_shape(name, input, target)
    if pos_weight is None:
        loss = softplus(input) - input * target
    else:
        loss = (1 - target) * input + (1 + (pos_weight - 1) * target) * softplus(-input)
    if weight is not None:
        loss = loss * weight
    return _reduce(name, loss, reduction)


@tensor_args("input", "target", "weight")
def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):  # noqa: A002
    """Negative log-likelihood of class ``target`` under log-probabilities ``input``
    of shape (N, C) or (N, C, d1, ...). With class weights w, 'mean' divides by the
    summed weights of the non-ignored targets (PyTorch's rule)."""
    name = "nll_loss"
    if input.ndim < 2:
        raise ValueError(f"{name}: input must be (N, C) or (N, C, d1, ...), got shape {input.shape}")
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{name}: target must hold integer class indices, got dtype {t.dtype}")
    expected = (input.shape[0],) + input.shape[2:]
    if tuple(t.shape) != expected:
        raise ValueError(f"{name}: target shape {tuple(t.shape)} does not match input "
                         f"{input.shape} (expected {expected})")
    xp = input.xp
    c = input.shape[1]
    valid = t != ignore_index
    safe = xp.where(valid, t, 0)
    if xp.any(valid & ((t < 0) | (t >= c))):
        raise IndexError(f"{name}: target values must lie in [0, {c}) (or equal "
                         f"ignore_index={ignore_index})")
    picked = input.gather(1, xp.expand_dims(safe, 1)).squeeze(1)
    w = valid.astype(input.dtype)
    if weight is not None:
        if weight.shape != (c,):
            raise ValueError(f"{name}: weight must have shape ({c},), got {weight.shape}")
        w = weight.data[safe] * w
    loss = -picked * w
    if reduction == "mean":
        return loss.sum() / w.sum()
    return _reduce(name, loss, reduction)


@tensor_args("input", "target", "weight")
def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",  # noqa: A002
                  label_smoothing=0.0):
    """Cross-entropy of logits ``input`` (N, C, ...) against class indices, or
    against class probabilities of the same shape as ``input``.

    :math:`-\\sum_c y_c \\log \\mathrm{softmax}(x)_c`; with label smoothing ε the
    target is :math:`(1-\\varepsilon)y + \\varepsilon/C`.
    """
    name = "cross_entropy"
    if input.ndim < 2:
        raise ValueError(f"{name}: input must be (N, C) or (N, C, d1, ...), got shape {input.shape}")
    logp = log_softmax(input, dim=1)
    c = input.shape[1]
    if isinstance(target, Tensor) and target.dtype.kind == "f":
        _check_same_shape(name, input, target)
        y = target * (1 - label_smoothing) + label_smoothing / c
        w = 1.0 if weight is None else weight.reshape(1, c, *([1] * (input.ndim - 2)))
        return _reduce(name, -(logp * y * w).sum(dim=1), reduction)
    loss = nll_loss(logp, target, weight, ignore_index, reduction)
    if not label_smoothing:
        return loss
    # PyTorch's rule: the uniform part -sum_c w_c log p_c / C, over non-ignored targets,
    # with 'mean' normalised like the NLL term.
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    valid = (t != ignore_index)
    w = 1.0 if weight is None else weight.reshape(1, c, *([1] * (input.ndim - 2)))
    smooth = -(logp * w).sum(dim=1) * valid.astype(input.dtype)
    if reduction == "mean":
        safe = input.xp.where(valid, t, 0)
        total = valid.sum() if weight is None else (weight.data[safe] * valid).sum()
        smooth = smooth.sum() / total
    else:
        smooth = _reduce(name, smooth, reduction)
    return (1 - label_smoothing) * loss + (label_smoothing / c) * smooth


@tensor_args("input", "target")
def kl_div(input, target, reduction="mean", log_target=False):  # noqa: A002
    """KL(target || p) with ``input`` = log p, pointwise :math:`y(\\log y - x)`."""
    if log_target:
        loss = target.exp() * (target - input)
    else:
        safe = target.clamp(min=1e-38)
        loss = target * (safe.log() - input)
    if reduction == "batchmean":
        return loss.sum() / input.shape[0]
    return _reduce("kl_div", loss, reduction)


class BernoulliLogLikelihood(Function):
    """Row sums of :math:`x\\ell - \\mathrm{softplus}(\\ell)`; d/dℓ = x − σ(ℓ), d/dx = ℓ (both differentiable)."""

    @staticmethod
    def forward(ctx, logits, x):
        return backend.get_kernel("bernoulli_log_likelihood", backend.device_of(logits))(logits, x)

    @staticmethod
    def backward(ctx, g):
        logits, x = ctx.inputs
        k, m, d = logits.shape[0] // x.shape[0], x.shape[0], x.shape[1]
        rows, gk = logits.reshape(k, m, d), g.reshape(k, m, 1)
        grad_logits = (gk * (x - sigmoid(rows))).reshape(k * m, d)
        grad_x = (gk * rows).sum(dim=0) if ctx.needs_input_grad[1] else None
        return grad_logits, grad_x


@tensor_args("logits", "target")
def bernoulli_log_likelihood(logits, target):
    r"""Per-example :math:`\log p(x\mid\ell) = \sum_d x_d\ell_d - \mathrm{softplus}(\ell_d)`, fused.

    ``logits`` (k·B, ...) holds k sample-major copies of a batch; ``target``
    (B, ...) is that batch (binary, or grey levels in [0, 1]). Row n is scored
    against ``target[n % B]``, so the batch is never copied k times. Returns
    (k·B,) — the decoder term of every importance weight in one kernel pass.
    """
    name = "bernoulli_log_likelihood"
    if not isinstance(logits, Tensor) or not isinstance(target, Tensor):
        raise TypeError(f"{name}: logits and target must be Tensors, got "
                        f"{type(logits).__name__} and {type(target).__name__}")
    if logits.ndim < 2 or logits.shape[1:] != target.shape[1:] or target.shape[0] == 0 \
            or logits.shape[0] % target.shape[0]:
        raise ValueError(f"{name}: logits must be (k*B, ...) for target (B, ...) with the same trailing "
                         f"shape, got logits {logits.shape} and target {target.shape}")
    return BernoulliLogLikelihood.apply(logits.reshape(logits.shape[0], -1),
                                        target.reshape(target.shape[0], -1).to(dtype=logits.dtype))
