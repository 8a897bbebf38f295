"""Convolutions, pooling and upsampling on NCHW images.

Three ops close the convolution family under differentiation, so gradients of
any order are again convolutions:

* :class:`Conv2d`            ``y = conv(x, W)``
* :class:`ConvTranspose2d`   ``x̄ = conv^T(ȳ, W)``  — the adjoint of ``conv`` in ``x``
* :class:`Conv2dWeightGrad`  ``W̄ = conv_w(x, ȳ)``  — the adjoint of ``conv`` in ``W``

Each forward is a kernel picked by :func:`minigen.backend.get_kernel`
(Numba on the CPU, CuPy on the GPU, NumPy reference as the fallback), and each
backward is a combination of the other two ops.

The first two take the layer's bias too, added in place to the kernel's fresh output: as a separate
``y + b`` the engine's graph would keep the bias-free output alive until the backward (every op holds
its inputs), a whole activation per layer that PyTorch, whose graph holds only what backward reads,
frees at once. Its gradient is :math:`\\bar b_c = \\sum_{n,i,j} \\bar y_{ncij}`.
"""
from __future__ import annotations

import numbers

from .. import backend
from ..autograd import Function, Tensor
from ._util import check_tensor, pair, tensor_args


def _kernel(name, array):
    return backend.get_kernel(name, backend.device_of(array))


class Conv2d(Function):
    """:math:`\\bar x = \\mathrm{conv}^\\top(\\bar y, W)`, :math:`\\bar W = \\mathrm{conv}_w(x, \\bar y)`."""

    @staticmethod
    def forward(ctx, x, w, b, geometry):
        return _plus_bias(_kernel("conv2d_forward", x)(x, w, *geometry), b)

    @staticmethod
    def backward(ctx, g):
        x, w, b, geometry = ctx.inputs
        gx = ConvTranspose2d.apply(g, w, None, x.shape, geometry) if x.requires_grad else None
        gw = Conv2dWeightGrad.apply(x, g, w.shape, geometry) if w.requires_grad else None
        return gx, gw, _bias_grad(b, g), None


class ConvTranspose2d(Function):
    """``conv^T(y, W)``, linear in both arguments:
    its gradients are ``conv(ȳ', W)`` for ``y`` and ``conv_w(ȳ', y)`` for ``W``."""

    @staticmethod
    def forward(ctx, y, w, b, input_shape, geometry):
        return _plus_bias(_kernel("conv2d_input_grad", y)(y, w, input_shape, *geometry), b)

    @staticmethod
    def backward(ctx, g):
        y, w, b, _, geometry = ctx.inputs
        gy = Conv2d.apply(g, w, None, geometry) if y.requires_grad else None
        gw = Conv2dWeightGrad.apply(g, y, w.shape, geometry) if w.requires_grad else None
        return gy, gw, _bias_grad(b, g), None, None


class Conv2dWeightGrad(Function):
    """``conv_w(x, y)``, bilinear: :math:`\\langle \\mathrm{conv}_w(x,y), H\\rangle =
    \\langle \\mathrm{conv}(x,H), y\\rangle`, so its gradients are
    ``conv^T(y, H̄)`` for ``x`` and ``conv(x, H̄)`` for ``y``."""

    @staticmethod
    def forward(ctx, x, y, weight_shape, geometry):
        return _kernel("conv2d_weight_grad", x)(x, y, weight_shape, *geometry)

    @staticmethod
    def backward(ctx, g):
        x, y, _, geometry = ctx.inputs
        gx = ConvTranspose2d.apply(y, g, None, x.shape, geometry) if x.requires_grad else None
        gy = Conv2d.apply(x, g, None, geometry) if y.requires_grad else None
        return gx, gy, None, None


def _geometry(name, stride, padding, dilation, groups):
    stride, padding, dilation = (pair(name, stride, "stride"), pair(name, padding, "padding"),
                                 pair(name, dilation, "dilation"))
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"{name}: stride and dilation must be >= 1 and padding >= 0, got "
                         f"stride={stride}, padding={padding}, dilation={dilation}")
    if int(groups) < 1:
        raise ValueError(f"{name}: groups must be >= 1, got {groups}")
    return stride, padding, dilation, int(groups)


def _plus_bias(y, b):
    """The kernel's fresh output y, plus the per-channel bias ``b`` (an array or None) in place."""
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def _bias_grad(b, g):
    return g.sum(dim=(0, 2, 3)) if isinstance(b, Tensor) and b.requires_grad else None


def _check_bias(name, bias, channels, input):  # noqa: A002
    if bias is None:
        return
    if bias.shape != (channels,):
        raise ValueError(f"{name}: bias must have shape ({channels},), got {bias.shape}")
    if bias.dtype != input.dtype:
        raise TypeError(f"{name}: bias dtype {bias.dtype} != input dtype {input.dtype}")
    if bias.device != input.device:
        raise ValueError(f"{name}: input is on {input.device} but bias on {bias.device}")


@tensor_args("input", "weight", "bias")
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):  # noqa: A002
    """2-D cross-correlation (PyTorch's ``conv2d``); weight ``(C_out, C_in/groups, kh, kw)``."""
    name = "conv2d"
    check_tensor(name, "input", input, ndim=4)
    check_tensor(name, "weight", weight, ndim=4)
    geometry = _geometry(name, stride, padding, dilation, groups)
    (sh, sw), (ph, pw), (dh, dw), groups = geometry
    n, c, h, w = input.shape
    c_out, c_g, kh, kw = weight.shape
    if c != c_g * groups:
        raise ValueError(f"{name}: input has {c} channels but weight expects {c_g * groups} "
                         f"(weight shape {weight.shape}, groups={groups})")
    if c_out % groups:
        raise ValueError(f"{name}: out channels {c_out} are not divisible by groups={groups}")
    if h + 2 * ph < dh * (kh - 1) + 1 or w + 2 * pw < dw * (kw - 1) + 1:
        raise ValueError(f"{name}: input {h}x{w} (padded {h + 2 * ph}x{w + 2 * pw}) is smaller "
                         f"than the dilated kernel {dh * (kh - 1) + 1}x{dw * (kw - 1) + 1}")
    if input.dtype != weight.dtype:
        raise TypeError(f"{name}: input dtype {input.dtype} != weight dtype {weight.dtype}")
    if input.device != weight.device:
        raise ValueError(f"{name}: input is on {input.device} but weight on {weight.device}")
    _check_bias(name, bias, c_out, input)
    return Conv2d.apply(input, weight, bias, geometry)


@tensor_args("input", "weight", "bias")
def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0,  # noqa: A002
                     groups=1, dilation=1):
    """Transposed convolution (PyTorch's ``conv_transpose2d``); weight ``(C_in, C_out/groups, kh, kw)``.

    It is the input-gradient of ``conv2d`` with the same weight, stride, padding
    and dilation; the output size is
    :math:`(h-1)s - 2p + d(k-1) + \\text{output\\_padding} + 1`.
    """
    name = "conv_transpose2d"
    check_tensor(name, "input", input, ndim=4)
    check_tensor(name, "weight", weight, ndim=4)
    geometry = _geometry(name, stride, padding, dilation, groups)
    (sh, sw), (ph, pw), (dh, dw), groups = geometry
    oph, opw = pair(name, output_padding, "output_padding")
    if oph >= max(sh, dh) or opw >= max(sw, dw):
        raise ValueError(f"{name}: output_padding {(oph, opw)} must be smaller than stride "
                         f"{(sh, sw)} or dilation {(dh, dw)}")
    n, c, h, w = input.shape
    c_in, c_out_g, kh, kw = weight.shape
    if c != c_in:
        raise ValueError(f"{name}: input has {c} channels but weight expects {c_in} "
                         f"(weight shape {weight.shape})")
    if c_in % groups:
        raise ValueError(f"{name}: in channels {c_in} are not divisible by groups={groups}")
    if input.dtype != weight.dtype:
        raise TypeError(f"{name}: input dtype {input.dtype} != weight dtype {weight.dtype}")
    if input.device != weight.device:
        raise ValueError(f"{name}: input is on {input.device} but weight on {weight.device}")
    out_h = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    out_w = (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"{name}: the output size {out_h}x{out_w} is not positive")
    out_shape = (n, c_out_g * groups, out_h, out_w)
    _check_bias(name, bias, out_shape[1], input)
    return ConvTranspose2d.apply(input, weight, bias, out_shape, geometry)


# --------------------------------------------------------------------------- pooling
class MaxPool2d(Function):
    """Max over each window; the gradient goes to the (first) arg-max of each window."""

    @staticmethod
    def forward(ctx, x, kernel, stride, padding):
        xp = backend.array_module(x)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
        x_pad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-xp.inf)
        out_h = (h + 2 * ph - kh) // sh + 1
        out_w = (w + 2 * pw - kw) // sw + 1
        # windows: (n, c, out_h, out_w, kh*kw) built from kh*kw strided slices
        taps = [x_pad[:, :, p:p + sh * (out_h - 1) + 1:sh, q:q + sw * (out_w - 1) + 1:sw]
                for p in range(kh) for q in range(kw)]
        windows = xp.stack(taps, axis=-1)
        best = windows.argmax(axis=-1)
        ctx.best = best
        return xp.take_along_axis(windows, best[..., None], axis=-1)[..., 0]

    @staticmethod
    def backward(ctx, g):
        x, kernel, stride, padding = ctx.inputs
        return _max_pool_scatter(g, ctx.best, x.shape, kernel, stride, padding), None, None, None


def _max_pool_scatter(g, best, shape, kernel, stride, padding):
    """Route each pooled gradient to the input position its max came from
    (integer-array indexing, so the op is differentiable again)."""
    xp = g.xp
    n, c, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    out_h, out_w = g.shape[2:]
    rows = xp.arange(out_h)[:, None] * sh + best // kw - ph
    cols = xp.arange(out_w)[None, :] * sw + best % kw - pw
    nn_ = xp.arange(n)[:, None, None, None]
    cc = xp.arange(c)[None, :, None, None]
    from .shape import index_add_to

    return index_add_to(g, (nn_, cc, rows, cols), shape)


@tensor_args("input")
def max_pool2d(input, kernel_size, stride=None, padding=0):  # noqa: A002
    """Max over each ``kernel_size`` window of an ``(N, C, H, W)`` input (PyTorch's ``max_pool2d``).

    ``stride`` defaults to the kernel size; ``padding`` (at most half the kernel) pads with -inf.
    """
    name = "max_pool2d"
    check_tensor(name, "input", input, ndim=4, floating=True)
    kernel = pair(name, kernel_size, "kernel_size", minimum=1)
    stride = kernel if stride is None else pair(name, stride, "stride", minimum=1)
    padding = pair(name, padding, "padding", minimum=0)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{name}: padding {padding} must be at most half the kernel {kernel}")
    if input.shape[2] + 2 * padding[0] < kernel[0] or input.shape[3] + 2 * padding[1] < kernel[1]:
        raise ValueError(f"{name}: input {input.shape[2:]} is smaller than the kernel {kernel}")
    return MaxPool2d.apply(input, kernel, stride, padding)


@tensor_args("input")
def avg_pool2d(input, kernel_size, stride=None, padding=0):  # noqa: A002
    """Average over each window (zero padding counted, as PyTorch's default):
    a depthwise convolution with weight 1/(kh kw)."""
    name = "avg_pool2d"
    check_tensor(name, "input", input, ndim=4, floating=True)
    kernel = pair(name, kernel_size, "kernel_size", minimum=1)
    stride = kernel if stride is None else pair(name, stride, "stride", minimum=1)
    c = input.shape[1]
    weight = Tensor._wrap(input.xp.full((c, 1) + kernel, 1.0 / (kernel[0] * kernel[1]),
                                        dtype=input.dtype))
    return conv2d(input, weight, stride=stride, padding=padding, groups=c)


class UpsampleNearest(Function):
    """Each pixel becomes an fh×fw block; the gradient is the block sum (:class:`BlockSum`), whose own
    gradient is this op again, so derivatives of any order stay two cheap passes."""

    @staticmethod
    def forward(ctx, a, factors):
        fh, fw = factors
        return a.repeat(fh, axis=2).repeat(fw, axis=3)

    @staticmethod
    def backward(ctx, g):
        return BlockSum.apply(g, ctx.inputs[1]), None


class BlockSum(Function):
    """Sum over non-overlapping fh×fw blocks. Written as slice additions: NumPy's ``sum`` over the two
    interleaved block axes walks the last one two elements at a time and is 15× slower."""

    @staticmethod
    def forward(ctx, g, factors):
        fh, fw = factors
        n, c, out_h, out_w = g.shape
        blocks = g.reshape(n, c, out_h // fh, fh, out_w // fw, fw)
        rows = sum(blocks[:, :, :, i] for i in range(1, fh)) + blocks[:, :, :, 0]      # contiguous adds
        return sum(rows[..., j] for j in range(1, fw)) + rows[..., 0]

    @staticmethod
    def backward(ctx, gg):
        return UpsampleNearest.apply(gg, ctx.inputs[1]), None


@tensor_args("input")
def interpolate(input, size=None, scale_factor=None, mode="nearest"):  # noqa: A002
    """Nearest-neighbour resizing of NCHW images (PyTorch's index rule
    ``src = floor(dst * in / out)``): blocks for integer factors, integer-array indexing otherwise."""
    name = "interpolate"
    check_tensor(name, "input", input, ndim=4)
    if mode != "nearest":
        raise ValueError(f"{name}: only mode='nearest' is supported, got {mode!r}")
    h, w = input.shape[2:]
    if size is not None:
        out_h, out_w = pair(name, size, "size", minimum=1)
    elif scale_factor is not None:
        fh, fw = (scale_factor, scale_factor) if not isinstance(scale_factor, (tuple, list)) \
            else scale_factor
        if not all(isinstance(f, numbers.Real) and not isinstance(f, bool) and f > 0 for f in (fh, fw)):
            raise ValueError(f"{name}: scale_factor must be a positive number (or a pair), got {scale_factor!r}")
        out_h, out_w = int(h * fh), int(w * fw)
        if min(out_h, out_w) < 1:
            raise ValueError(f"{name}: scale_factor {scale_factor!r} shrinks {h}x{w} to nothing")
    else:
        raise ValueError(f"{name}: give either size or scale_factor")
    if out_h % h == 0 and out_w % w == 0:
        # integer factors: blocks (the indexing below would scatter the gradient element by element
        # with np.add.at, 20× slower)
        return UpsampleNearest.apply(input, (out_h // h, out_w // w))
    xp = input.xp
    rows = (xp.arange(out_h) * h // out_h)[:, None]
    cols = (xp.arange(out_w) * w // out_w)[None, :]
    return input[:, :, rows, cols]
