"""Placeholder: gpu conv kernels are being written; the reference serves meanwhile."""
