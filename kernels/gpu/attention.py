"""Placeholder: gpu attention kernels are being written; the reference serves meanwhile."""
