"""Normalisation layers as functions: batch_norm, layer_norm, group_norm, instance_norm.

All four standardise activations over some axes and then apply a per-channel
affine map,

.. math:: y = \\gamma \\, \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} + \\beta,

and differ only in the axes the statistics :math:`\\mu, \\sigma^2` are taken over.
Layer and instance norm (and batch norm in evaluation) are compositions of
differentiable ops, so their gradients (and second derivatives) come from the
engine; group norm, which a diffusion U-Net applies to every activation twice,
is one fused kernel each way, and batch norm in training one fused formula each
way, with the same formulas in engine ops for second derivatives.
"""
from __future__ import annotations

from .. import backend
from ..autograd import Function, Tensor, is_grad_enabled, no_grad
from ._util import check_int, check_tensor, tensor_args


def _standardize(x, axes, eps):
    """(x - mean) / sqrt(var + eps) over ``axes`` (biased variance, as every norm layer uses)."""
    mean = x.mean(dim=axes, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dim=axes, keepdim=True)
    return centred * (var + eps).rsqrt()


def _affine(y, weight, bias, channel_axis=1):
    """Apply per-channel scale and shift (channels on ``channel_axis``)."""
    shape = [1] * y.ndim
    shape[channel_axis] = -1
    if weight is not None:
        y = y * weight.reshape(*shape)
    if bias is not None:
        y = y + bias.reshape(*shape)
    return y


def _check_channels(name, arg, t, channels):
    """``t`` is None or a Tensor of shape ``(channels,)`` (a per-channel weight, bias or statistic)."""
    if t is not None and not isinstance(t, Tensor):
        raise TypeError(f"{name}: {arg} must be a Tensor or None, got {type(t).__name__}")
    if t is not None and t.shape != (channels,):
        raise ValueError(f"{name}: {arg} must have shape ({channels},) for an input with "
                         f"{channels} channels, got {t.shape}")


@tensor_args("input", "weight", "bias")
def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,  # noqa: A002
               momentum=0.1, eps=1e-5):
    """Batch normalisation over (N, *spatial) per channel (Ioffe & Szegedy 2015).

    In training the batch statistics are used and the running estimates are
    updated in place, :math:`\\hat\\mu \\leftarrow (1-m)\\hat\\mu + m\\mu_B` (the running
    variance uses the unbiased batch variance, as in PyTorch); in evaluation the
    running estimates are used.
    """
    name = "batch_norm"
    check_tensor(name, "input", input, ndim=(2, 3, 4, 5), floating=True)
    c = input.shape[1]
    for arg, t in (("running_mean", running_mean), ("running_var", running_var),
                   ("weight", weight), ("bias", bias)):
        _check_channels(name, arg, t, c)
    if (running_mean is None) != (running_var is None):
        raise ValueError(f"{name}: give both running_mean and running_var, or neither")
    axes = (0,) + tuple(range(2, input.ndim))
    if training:
        n = input.numel() // c
        if n <= 1:
            raise ValueError(f"{name}: expected more than 1 value per channel when training, "
                             f"got input shape {input.shape}")
        data = input.data
        mean = data.mean(axis=axes, keepdims=True)      # the batch statistics, once, for both uses
        centred = data - mean
        var = (centred * centred).mean(axis=axes, keepdims=True)
        if running_mean is not None:
            running_mean.data *= 1 - momentum
            running_mean.data += momentum * mean.reshape(c)
            running_var.data *= 1 - momentum
            running_var.data += (momentum * n / (n - 1)) * var.reshape(c)
        xp = input.xp
        weight = weight if weight is not None else Tensor._wrap(xp.ones(c, dtype=input.dtype))
        bias = bias if bias is not None else Tensor._wrap(xp.zeros(c, dtype=input.dtype))
        return BatchNorm.apply(input, weight, bias, centred, var, eps)
    else:
        if running_mean is None or running_var is None:
            raise ValueError(f"{name}: evaluation mode needs running_mean and running_var")
        shape = (1, c) + (1,) * (input.ndim - 2)
        y = (input - running_mean.reshape(*shape)) * (running_var.reshape(*shape) + eps).rsqrt()
    return _affine(y, weight, bias)


class BatchNorm(Function):
    r"""Batch norm in training mode with its affine map, fused: given the batch's centred input and
    variance per channel, :math:`y=\gamma\hat x+\beta` with :math:`\hat x=(x-\mu_B)/\sqrt{\sigma_B^2+\epsilon}`,
    and backward the whole chain rule through μ_B and σ_B² in one formula,

    .. math:: \bar x=\frac{\gamma}{\sqrt{\sigma_B^2+\epsilon}}\big(\bar y-\mathrm{mean}(\bar y)
              -\hat x\,\mathrm{mean}(\bar y\hat x)\big),\quad
              \bar\gamma=\textstyle\sum\bar y\hat x,\quad \bar\beta=\sum\bar y

    (means and sums over the batch and the positions of each channel). As a composition of engine
    ops batch norm took a dozen array passes each way, a tenth of a DCGAN step. Under
    ``create_graph=True`` the backward is the same formula in differentiable ops."""

    @staticmethod
    def forward(ctx, x, weight, bias, centred, var, eps):
        shape = (1, -1) + (1,) * (x.ndim - 2)
        xp = backend.array_module(x)
        ctx.rstd = 1.0 / xp.sqrt(var + eps)
        ctx.xhat = centred                                # batch_norm's own array: standardised in place,
        ctx.xhat *= ctx.rstd                              # and saved for the backward
        y = ctx.xhat * weight.reshape(shape)
        y += bias.reshape(shape)
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, bias, _, _, eps = ctx.inputs
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if is_grad_enabled():
            dx, dweight, dbias = _batch_norm_backward_differentiable(x, weight, g, axes, shape, eps)
        else:
            gd, xhat = g.data, ctx.xhat
            dbias = gd.sum(axis=axes)
            dweight = (gd * xhat).sum(axis=axes)
            m = gd.size // gd.shape[1]
            dx = gd - (dbias / m).reshape(shape)
            dx -= xhat * (dweight / m).reshape(shape)
            dx *= weight.data.reshape(shape) * ctx.rstd
            dx, dweight, dbias = (Tensor._wrap(a) for a in (dx, dweight, dbias))
        return (dx if x.requires_grad else None, dweight if weight.requires_grad else None,
                dbias if bias.requires_grad else None, None, None, None)


def _batch_norm_backward_differentiable(x, weight, g, axes, shape, eps):
    """:class:`BatchNorm`'s backward in engine ops, the statistics recomputed from x as tensors, so that
    differentiating it again is exact."""
    centred = x - x.mean(dim=axes, keepdim=True)
    rstd = ((centred * centred).mean(dim=axes, keepdim=True) + eps).rsqrt()
    xhat = centred * rstd
    dweight, dbias = (g * xhat).sum(dim=axes), g.sum(dim=axes)
    dx = (g - g.mean(dim=axes, keepdim=True) - xhat * (g * xhat).mean(dim=axes, keepdim=True)) \
        * (weight.reshape(*shape) * rstd)
    return dx, dweight, dbias


@tensor_args("input", "weight", "bias")
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):  # noqa: A002
    """Layer normalisation over the last ``len(normalized_shape)`` dims (Ba et al. 2016)."""
    name = "layer_norm"
    normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) \
        else tuple(normalized_shape)
    if input.shape[input.ndim - len(normalized_shape):] != normalized_shape:
        raise ValueError(f"{name}: input shape {input.shape} does not end with normalized_shape "
                         f"{normalized_shape}")
    for arg, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.shape != normalized_shape:
            raise ValueError(f"{name}: {arg} must have shape {normalized_shape}, got {t.shape}")
    axes = tuple(range(input.ndim - len(normalized_shape), input.ndim))
    y = _standardize(input, axes, eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


@tensor_args("input", "weight", "bias")
def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):  # noqa: A002
    """Group normalisation: channels split into ``num_groups`` groups, statistics per
    (sample, group) (Wu & He 2018)."""
    name = "group_norm"
    check_tensor(name, "input", input, ndim=(2, 3, 4, 5), floating=True)
    n, c = input.shape[:2]
    num_groups = check_int(name, "num_groups", num_groups, minimum=1)
    if c % num_groups:
        raise ValueError(f"{name}: {c} channels are not divisible by num_groups={num_groups}")
    for arg, t in (("weight", weight), ("bias", bias)):
        _check_channels(name, arg, t, c)
    if weight is None:
        weight = Tensor._wrap(input.xp.ones(c, dtype=input.dtype))
    if bias is None:
        bias = Tensor._wrap(input.xp.zeros(c, dtype=input.dtype))
    return GroupNorm.apply(input, weight, bias, num_groups, eps)


class GroupNorm(Function):
    """Group norm with its affine map as one fused kernel each way (``group_norm_forward`` /
    ``group_norm_backward`` in ``kernels/``): a U-Net's ResNet blocks normalise every activation
    twice, and as a composition of engine ops that is a dozen passes forward and more backward.
    Under ``create_graph=True`` the backward is the same formula in differentiable ops."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups, eps):
        kernel = backend.get_kernel("group_norm_forward", backend.device_of(x))
        y, ctx.mean, ctx.rstd = kernel(x, groups, weight, bias, eps)
        return y

    @staticmethod
    def backward(ctx, g):
        x, weight, bias, groups, eps = ctx.inputs
        if is_grad_enabled():
            dx, dweight, dbias = _group_norm_backward_differentiable(x, weight, g, groups, eps)
        else:
            kernel = backend.get_kernel("group_norm_backward", x.device)
            dx, dweight, dbias = (Tensor._wrap(a) for a in kernel(x.data, g.data, groups, weight.data,
                                                                   ctx.mean, ctx.rstd))
        return (dx if x.requires_grad else None, dweight if weight.requires_grad else None,
                dbias if bias.requires_grad else None, None, None)


def _group_norm_backward_differentiable(x, weight, g, groups, eps):
    """``kernels.reference.group_norm_backward`` in engine ops: the statistics are recomputed from x
    as tensors, so differentiating this again is exact."""
    n, c = x.shape[:2]
    grouped = x.reshape(n, groups, -1)
    centred = grouped - grouped.mean(dim=2, keepdim=True)
    rstd = ((centred * centred).mean(dim=2, keepdim=True) + eps).rsqrt()
    xhat = centred * rstd
    gw = (g * weight.reshape(*((1, c) + (1,) * (x.ndim - 2)))).reshape(n, groups, -1)
    dx = rstd * (gw - gw.mean(dim=2, keepdim=True) - xhat * (gw * xhat).mean(dim=2, keepdim=True))
    axes = (0,) + tuple(range(2, x.ndim))
    return dx.reshape(*x.shape), (g * xhat.reshape(*x.shape)).sum(dim=axes), g.sum(dim=axes)


@tensor_args("input", "running_mean", "running_var", "weight", "bias")
def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,  # noqa: A002
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Instance normalisation: statistics per (sample, channel) over the spatial dims
    (Ulyanov et al. 2016); the normalisation inside AdaIN and CycleGAN."""
    name = "instance_norm"
    check_tensor(name, "input", input, ndim=(3, 4, 5), floating=True)
    c = input.shape[1]
    for arg, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                   ("running_var", running_var)):
        _check_channels(name, arg, t, c)
    axes = tuple(range(2, input.ndim))
    if use_input_stats:
        y = _standardize(input, axes, eps)
        if running_mean is not None and running_var is not None:
            with no_grad():
                n = input.numel() // (input.shape[0] * c)
                mean = input.data.mean(axis=axes).mean(axis=0)
                var = (input.data.var(axis=axes) * (n / max(n - 1, 1))).mean(axis=0)
                running_mean.data *= 1 - momentum
                running_mean.data += momentum * mean
                running_var.data *= 1 - momentum
                running_var.data += momentum * var
    else:
        shape = (1, c) + (1,) * (input.ndim - 2)
        y = (input - running_mean.reshape(*shape)) * (running_var.reshape(*shape) + eps).rsqrt()
    return _affine(y, weight, bias)


@tensor_args("input")
def normalize(input, p=2.0, dim=1, eps=1e-12):  # noqa: A002
    """Divide by the L_p norm along ``dim`` (at least ``eps``)."""
    norm = (input.abs() ** p).sum(dim=dim, keepdim=True) ** (1.0 / p)
    return input / norm.clamp(min=eps)



