"""Dense layers and reshaping plumbing: Identity, Linear, Flatten, Unflatten."""
from __future__ import annotations


from .. import ops
from ..autograd import Tensor
from . import init
from ..ops._util import check_int
from .module import Module, _new_parameter


def _check_input(layer, x, ndim=None):
    """Raise a clear error unless ``x`` is a Tensor (of one of the allowed ranks)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{layer}: input must be a Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim not in ndim:
        want = " or ".join(f"{n}-d" for n in ndim)
        raise ValueError(f"{layer}: expected {want} input, got shape {x.shape}")


class Identity(Module):
    """Return the input unchanged (arguments are accepted and ignored, as in PyTorch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):  # noqa: A002
        return input


class Linear(Module):
    """:math:`y = x W^\\top + b`, weight ``(out_features, in_features)``.

    Initialisation (PyTorch's): ``kaiming_uniform_(W, a=sqrt(5))``, i.e.
    :math:`W \\sim U(-1/\\sqrt{\\text{fan\\_in}}, 1/\\sqrt{\\text{fan\\_in}})`, and the same
    range for ``b``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None):
        super().__init__()
        self.in_features = check_int("Linear", "in_features", in_features, minimum=1)
        self.out_features = check_int("Linear", "out_features", out_features, minimum=1)
        self.weight = _new_parameter(out_features, in_features, device=device, dtype=dtype)
        if bias:
            self.bias = _new_parameter(out_features, device=device, dtype=dtype)
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw ``weight`` and ``bias`` from PyTorch's default :math:`U(-k, k)`,
        :math:`k = 1/\\sqrt{\\text{in\\_features}}`."""
        init.default_layer_init_(self.weight, self.bias)

    def forward(self, input):  # noqa: A002
        _check_input("Linear", input)
        features = input.shape[-1] if input.ndim else 0
        if features != self.in_features:
            raise ValueError(f"Linear: input has {features} features but in_features is "
                             f"{self.in_features} (input shape {input.shape})")
        return ops.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """Flatten dims ``start_dim..end_dim`` into one (by default all but the batch dim)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):  # noqa: A002
        _check_input("Flatten", input)
        return ops.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Split dim ``dim`` into ``unflattened_size`` (the inverse of :class:`Flatten`)."""

    def __init__(self, dim: int, unflattened_size):
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, input):  # noqa: A002
        _check_input("Unflatten", input)
        return ops.unflatten(input, self.dim, self.unflattened_size)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
