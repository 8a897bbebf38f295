"""Convolutional layers on NCHW images: Conv2d, ConvTranspose2d, pooling, Upsample.

Weight layouts are PyTorch's: ``Conv2d.weight`` is ``(out, in/groups, kh, kw)``,
``ConvTranspose2d.weight`` is ``(in, out/groups, kh, kw)`` — the transposed
convolution is the input-gradient of a convolution with that same weight.
Both are initialised as PyTorch does: ``kaiming_uniform_(W, a=sqrt(5))`` and
:math:`b \\sim U(-1/\\sqrt{\\text{fan\\_in}}, 1/\\sqrt{\\text{fan\\_in}})`, with
``fan_in = weight.shape[1] * kh * kw``.
"""
from __future__ import annotations


from .. import ops
from ..ops._util import check_int, pair
from . import init
from .linear import _check_input
from .module import Module, _new_parameter

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvBase(Module):
    """Shared bookkeeping of Conv2d and ConvTranspose2d (arguments, init, repr)."""

    def __init__(self, name, in_channels, out_channels, kernel_size, stride, padding, dilation,
                 groups, bias, padding_mode, output_padding, weight_shape, device, dtype):
        super().__init__()
        in_channels = check_int(name, "in_channels", in_channels, minimum=1)
        out_channels = check_int(name, "out_channels", out_channels, minimum=1)
        groups = check_int(name, "groups", groups, minimum=1)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"{name}: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"{name}: padding_mode must be one of {_PADDING_MODES}, "
                             f"got {padding_mode!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair(name, kernel_size, "kernel_size", minimum=1)
        self.stride = pair(name, stride, "stride", minimum=1)
        self.padding = padding if isinstance(padding, str) else pair(name, padding, "padding", minimum=0)
        self.dilation = pair(name, dilation, "dilation", minimum=1)
        self.output_padding = pair(name, output_padding, "output_padding", minimum=0)
        self.groups, self.padding_mode = int(groups), padding_mode
        self.weight = _new_parameter(*weight_shape, *self.kernel_size, device=device,
                                     dtype=dtype)
        if bias:
            self.bias = _new_parameter(out_channels, device=device, dtype=dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.default_layer_init_(self.weight, self.bias)

    def _check(self, name, x):
        """Accept (N, C, H, W) or unbatched (C, H, W); return a 4-d tensor and whether
        to squeeze the batch dim off the result."""
        _check_input(name, x, ndim=(3, 4))
        if x.shape[-3] != self.in_channels:
            raise ValueError(f"{name}: input has {x.shape[-3]} channels but in_channels is "
                             f"{self.in_channels} (input shape {x.shape})")
        return (x.unsqueeze(0), True) if x.ndim == 3 else (x, False)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


class Conv2d(_ConvBase):
    """2-D convolution (cross-correlation), PyTorch's ``nn.Conv2d``.

    ``padding`` is an int, a pair, ``'valid'`` (none) or ``'same'`` (output size =
    input size; stride 1 only; an odd total is padded one more on the right and
    bottom, as PyTorch does). Non-zero ``padding_mode`` pads with ``F.pad`` first.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None):
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2d: padding must be an int, a pair, 'same' or 'valid', "
                                 f"got {padding!r}")
            if padding == "same" and pair("Conv2d", stride, "stride") != (1, 1):
                raise ValueError("Conv2d: padding='same' is not supported for strided "
                                 f"convolutions (stride={stride})")
        super().__init__("Conv2d", in_channels, out_channels, kernel_size, stride, padding,
                         dilation, groups, bias, padding_mode, 0,
                         (out_channels, in_channels // max(groups, 1)), device, dtype)
        # F.pad order: (left, right, top, bottom)
        if self.padding == "valid":
            self._pad_lrtb = (0, 0, 0, 0)
        elif self.padding == "same":
            widths = []
            for d, k in zip(reversed(self.dilation), reversed(self.kernel_size)):
                total = d * (k - 1)
                widths += [total // 2, total - total // 2]
            self._pad_lrtb = tuple(widths)
        else:
            ph, pw = self.padding
            self._pad_lrtb = (pw, pw, ph, ph)

    def forward(self, input):  # noqa: A002
        x, squeeze = self._check("Conv2d", input)
        left, right, top, bottom = self._pad_lrtb
        if self.padding_mode != "zeros" or left != right or top != bottom:
            if any(self._pad_lrtb):
                mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
                x = ops.pad(x, self._pad_lrtb, mode=mode)
            padding = 0
        else:
            padding = (top, left)
        y = ops.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation,
                       self.groups)
        return y.squeeze(0) if squeeze else y


class ConvTranspose2d(_ConvBase):
    """Transposed ("fractionally strided") convolution, PyTorch's ``nn.ConvTranspose2d``;
    weight ``(in, out/groups, kh, kw)``.

    Eq. GAN-6 (the DCGAN generator's upsampling layer): it is the adjoint of the
    convolution ``A`` with the same weight and geometry,
    :math:`\\langle A x, y \\rangle = \\langle x, A^\\top y \\rangle`.
    Output size per dim: :math:`(h-1)s - 2p + d(k-1) + \\text{output\\_padding} + 1`;
    ``forward(x, output_size)`` picks ``output_padding`` to hit a requested size.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1,
                 padding_mode: str = "zeros", device=None, dtype=None):
        if padding_mode != "zeros":
            raise ValueError(f"ConvTranspose2d: only padding_mode='zeros' is supported, "
                             f"got {padding_mode!r}")
        if isinstance(padding, str):
            raise ValueError(f"ConvTranspose2d: padding must be an int or a pair, "
                             f"got {padding!r}")
        super().__init__("ConvTranspose2d", in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, padding_mode, output_padding,
                         (in_channels, out_channels // max(groups, 1)), device, dtype)

    def _output_padding(self, x, output_size):
        if output_size is None:
            return self.output_padding
        output_size = tuple(output_size)[-2:]
        if len(output_size) != 2:
            raise ValueError(f"ConvTranspose2d: output_size must give (H, W), got {output_size}")
        result = []
        for i in range(2):
            smallest = ((x.shape[2 + i] - 1) * self.stride[i] - 2 * self.padding[i]
                        + self.dilation[i] * (self.kernel_size[i] - 1) + 1)
            largest = smallest + self.stride[i] - 1
            if not smallest <= output_size[i] <= largest:
                raise ValueError(f"ConvTranspose2d: requested output size {output_size} is "
                                 f"not reachable from input shape {x.shape}: dim {i} must lie "
                                 f"in [{smallest}, {largest}]")
            result.append(output_size[i] - smallest)
        return tuple(result)

    def forward(self, input, output_size=None):  # noqa: A002
        x, squeeze = self._check("ConvTranspose2d", input)
        y = ops.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                 self._output_padding(x, output_size), self.groups,
                                 self.dilation)
        return y.squeeze(0) if squeeze else y


class MaxPool2d(Module):
    """Max over ``kernel_size`` windows (stride defaults to the kernel size)."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding

    def forward(self, input):  # noqa: A002
        _check_input("MaxPool2d", input, ndim=(4,))
        return ops.max_pool2d(input, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    """Mean over ``kernel_size`` windows (zero padding counted, PyTorch's default)."""

    def forward(self, input):  # noqa: A002
        _check_input("AvgPool2d", input, ndim=(4,))
        return ops.avg_pool2d(input, self.kernel_size, self.stride, self.padding)


class Upsample(Module):
    """Nearest-neighbour upsampling of NCHW images by ``scale_factor`` or to ``size``."""

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest"):
        super().__init__()
        if mode != "nearest":
            raise ValueError(f"Upsample: only mode='nearest' is supported, got {mode!r}")
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample: give exactly one of size and scale_factor")
        self.size = size
        self.scale_factor = (None if scale_factor is None else
                             tuple(float(f) for f in scale_factor)
                             if isinstance(scale_factor, (tuple, list)) else float(scale_factor))
        self.mode = mode

    def forward(self, input):  # noqa: A002
        _check_input("Upsample", input, ndim=(4,))
        return ops.interpolate(input, self.size, self.scale_factor, self.mode)

    def extra_repr(self) -> str:
        info = (f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None
                else f"size={self.size!r}")
        return info + f", mode={self.mode!r}"
