"""Placeholder: cpu conv kernels are being written; the reference serves meanwhile."""
from ..reference import conv2d_forward, conv2d_input_grad, conv2d_weight_grad  # noqa: F401,E402
