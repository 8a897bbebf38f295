"""Normalisation layers: BatchNorm1d/2d, GroupNorm, LayerNorm, InstanceNorm2d.

Each standardises activations over some axes and applies a learned per-channel
affine map :math:`y = \\gamma \\hat x + \\beta` (``weight`` = :math:`\\gamma`, initialised
to 1; ``bias`` = :math:`\\beta`, initialised to 0). The arithmetic lives in
``F.batch_norm`` etc.; the layers own the parameters and the running statistics.
"""
from __future__ import annotations

import numbers

import numpy as np

from .. import ops
from ..autograd import Tensor
from . import init
from .linear import _check_input
from ..ops._util import check_int
from .module import Module, _new_parameter, _new_tensor


def _affine_parameters(module, affine, bias, shape, device, dtype):
    """Register ``weight`` (and ``bias`` unless ``bias=False``) of ``shape``, or ``None``s."""
    module.register_parameter("weight", _new_parameter(*shape, device=device, dtype=dtype)
                              if affine else None)
    module.register_parameter("bias", _new_parameter(*shape, device=device, dtype=dtype)
                              if affine and bias else None)


def _reset_affine(module):
    """gamma = 1, beta = 0: the layer starts as a pure standardisation."""
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)


class _NormBase(Module):
    """Parameters and running-statistics buffers shared by BatchNorm and InstanceNorm."""

    def __init__(self, num_features, eps, momentum, affine, track_running_stats, device,
                 dtype, bias=True):
        super().__init__()
        num_features = check_int(type(self).__name__, "num_features", num_features, minimum=1)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        _affine_parameters(self, affine, bias, (num_features,), device, dtype)
        if track_running_stats:
            self.register_buffer("running_mean", _new_tensor(num_features, device=device,
                                                             dtype=dtype))
            self.register_buffer("running_var", _new_tensor(num_features, device=device,
                                                            dtype=dtype))
            self.register_buffer("num_batches_tracked", _new_tensor(device=device,
                                                                    dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            init.zeros_(self.running_mean)
            init.ones_(self.running_var)
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        _reset_affine(self)

    def _check_channels(self, name, x):
        if x.shape[1] != self.num_features:
            raise ValueError(f"{name}: input has {x.shape[1]} channels but num_features is "
                             f"{self.num_features} (input shape {x.shape})")

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class _BatchNorm(_NormBase):
    """Batch statistics in training (updating the running estimates), running
    estimates in evaluation. ``momentum=None`` gives a cumulative average."""

    _ndims: tuple = ()
    _layout: str = ""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *,
                 bias: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, bias)

    def forward(self, input):  # noqa: A002
        name = type(self).__name__
        if not isinstance(input, Tensor) or input.ndim not in self._ndims:
            _check_input(name, input)
            raise ValueError(f"{name}: expected input of shape {self._layout}, got shape "
                             f"{input.shape}")
        self._check_channels(name, input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked.item())
        use_batch_stats = self.training or self.running_mean is None
        track = not self.training or self.track_running_stats
        return ops.batch_norm(input, self.running_mean if track else None,
                              self.running_var if track else None, self.weight, self.bias,
                              use_batch_stats, factor, self.eps)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)`` inputs, per channel C."""

    _ndims, _layout = (2, 3), "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of ``(N, C, H, W)`` images, per channel C."""

    _ndims, _layout = (4,), "(N, C, H, W)"


class InstanceNorm2d(_NormBase):
    """Instance normalisation: statistics per sample and channel over (H, W).

    PyTorch's defaults: ``affine=False``, ``track_running_stats=False``. With
    tracking, evaluation uses the running estimates.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 affine: bool = False, track_running_stats: bool = False, device=None,
                 dtype=None, *, bias: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, bias)

    def forward(self, input):  # noqa: A002
        _check_input("InstanceNorm2d", input, ndim=(3, 4))
        x = input.unsqueeze(0) if input.ndim == 3 else input
        self._check_channels("InstanceNorm2d", x)
        y = ops.instance_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                              self.training or not self.track_running_stats,
                              0.0 if self.momentum is None else self.momentum, self.eps)
        return y.squeeze(0) if input.ndim == 3 else y


class GroupNorm(Module):
    """Group normalisation: the C channels are split into ``num_groups`` groups and each
    (sample, group) is standardised; the affine map is per channel."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, device=None, dtype=None, *, bias: bool = True):
        super().__init__()
        num_groups = check_int("GroupNorm", "num_groups", num_groups, minimum=1)
        num_channels = check_int("GroupNorm", "num_channels", num_channels, minimum=1)
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by "
                             f"num_groups ({num_groups})")
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        self.eps, self.affine = eps, affine
        _affine_parameters(self, affine, bias, (num_channels,), device, dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reset the affine map to the identity: ``weight`` to 1, ``bias`` to 0 (those present)."""
        _reset_affine(self)

    def forward(self, input):  # noqa: A002
        _check_input("GroupNorm", input, ndim=(2, 3, 4, 5))
        if input.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm: input has {input.shape[1]} channels but "
                             f"num_channels is {self.num_channels} (input shape {input.shape})")
        return ops.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None}")


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` dims, with an
    element-wise affine map of that shape."""

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(check_int("LayerNorm", "normalized_shape", n, minimum=1)
                                      for n in normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        _affine_parameters(self, elementwise_affine, bias, self.normalized_shape, device,
                           dtype)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reset the affine map to the identity: ``weight`` to 1, ``bias`` to 0 (those present)."""
        _reset_affine(self)

    def forward(self, input):  # noqa: A002
        _check_input("LayerNorm", input)
        k = len(self.normalized_shape)
        if input.shape[input.ndim - k:] != self.normalized_shape or input.ndim < k:
            raise ValueError(f"LayerNorm: input shape {input.shape} does not end with "
                             f"normalized_shape {self.normalized_shape}")
        return ops.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")
