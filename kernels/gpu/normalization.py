"""Group normalisation on the GPU: the reference is written with array methods only, so CuPy runs
the same code (its reductions and element-wise ops are already GPU kernels); one code path."""
from minigen.kernels.reference import group_norm_backward, group_norm_forward  # noqa: F401
