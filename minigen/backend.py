"""Devices, array modules and kernel dispatch — the one place that knows about NumPy vs CuPy.

A tensor lives on a *device*: ``"cpu"`` (a NumPy array) or ``"cuda"`` (a CuPy array).
Model code never imports numpy or cupy for tensor math; it asks the tensor, and
the ops ask this module which array module (``xp``) and which kernel to use.

Kernel dispatch picks, per device, the fastest implementation that is available:

==========  ==========================  ==============================
device      preferred                   fallback
==========  ==========================  ==============================
``cpu``     ``minigen.kernels.cpu``     ``minigen.kernels.reference``
``cuda``    ``minigen.kernels.gpu``     (none: CuPy is required there)
==========  ==========================  ==============================

Set ``MINIGEN_KERNELS=reference`` to force the NumPy reference everywhere on the
CPU (slow, but the specification itself — handy when reading or debugging).
"""
from __future__ import annotations

import importlib
import os

import numpy as np

try:  # CuPy is optional (the [gpu] extra); everything works without it.
    import cupy as _cupy

    try:
        _cupy.cuda.runtime.getDeviceCount()
        cupy = _cupy
    except Exception:  # CuPy installed, but no usable GPU or driver
        cupy = None
except ImportError:
    cupy = None

DEVICES = ("cpu", "cuda")


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one GPU."""
    return cupy is not None


def check_device(device) -> str:
    """Normalise a device name ('cpu', 'cuda', 'cuda:0') and check it can be used."""
    name = str(device).split(":")[0]
    if name not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if name == "cuda" and cupy is None:
        raise RuntimeError(
            "device 'cuda' requested but CuPy or a GPU is not available; "
            "install the GPU extra with `pip install minigen[gpu]`"
        )
    return name


def device_of(array) -> str:
    """'cuda' for a CuPy array, 'cpu' for anything else."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return "cuda"
    return "cpu"


def xp_for(device: str):
    """The array module (numpy or cupy) of a device."""
    return cupy if check_device(device) == "cuda" else np


def array_module(array):
    """The array module an array belongs to (Chainer's ``get_array_module``)."""
    return cupy if device_of(array) == "cuda" else np


def to_device(array, device: str):
    """Copy an array to ``device`` (no copy if it is already there)."""
    device = check_device(device)
    if device_of(array) == device:
        return array
    if device == "cuda":
        return cupy.asarray(array)
    return cupy.asnumpy(array)


# --------------------------------------------------------------------------- kernels
_KERNEL_PACKAGES = {"cpu": "minigen.kernels.cpu", "cuda": "minigen.kernels.gpu"}
_kernel_cache: dict = {}


def get_kernel(name: str, device: str):
    """Return the kernel function ``name`` for ``device``.

    Looks in the device's kernel package first; on the CPU falls back to the NumPy
    reference when Numba is missing or ``MINIGEN_KERNELS=reference`` is set.
    """
    key = (name, device, os.environ.get("MINIGEN_KERNELS", ""))
    fn = _kernel_cache.get(key)
    if fn is not None:
        return fn
    force_reference = os.environ.get("MINIGEN_KERNELS", "") == "reference"
    fn = None
    if not (device == "cpu" and force_reference):
        try:
            fn = getattr(importlib.import_module(_KERNEL_PACKAGES[device]), name, None)
        except ImportError:
            if device == "cuda":
                raise
            fn = None
    if fn is None and device == "cpu":
        fn = getattr(importlib.import_module("minigen.kernels.reference"), name)
    if fn is None:
        raise NotImplementedError(f"no kernel {name!r} for device {device!r}")
    _kernel_cache[key] = fn
    return fn


# --------------------------------------------------------------------------- threads
def configure_threads(num_threads: int | None = None) -> dict:
    """Use one thread pool size for BLAS and Numba, and report the configuration.

    On a 2-core machine, threads that spin after their work is done steal the
    cores the next parallel region needs: OpenBLAS workers after a matmul slowed
    the next Numba convolution 3x until ``OPENBLAS_THREAD_TIMEOUT`` was set (in
    ``minigen/__init__.py``, before NumPy loads OpenBLAS), and Numba's OpenMP
    workers do the same to OpenBLAS, so ``minigen.kernels.cpu`` selects Numba's
    ``workqueue`` layer unless the user chose one.
    """
    info = {"cpu_count": os.cpu_count()}
    try:
        import numba

        select_numba_threading_layer()  # before get_num_threads() starts the workers

        if num_threads is not None:
            numba.set_num_threads(num_threads)
        info["numba_threads"] = numba.get_num_threads()
        info["numba_threading_layer"] = numba.config.THREADING_LAYER
    except ImportError:
        info["numba_threads"] = None
    info["blas"] = _blas_name()
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    info["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    info["OPENBLAS_THREAD_TIMEOUT"] = os.environ.get("OPENBLAS_THREAD_TIMEOUT")
    return info


def keep_freed_memory() -> bool:
    """Ask glibc's ``malloc`` to keep freed activation buffers instead of giving them back.

    A training step allocates and frees the same few-MB activation arrays
    hundreds of times. By default glibc serves blocks this large with fresh
    ``mmap`` pages and unmaps them on free (or trims the heap top), so every
    new array pays a page fault per 4 KiB on first touch: a PixelCNN step spent
    a quarter of its time in the kernel (10 s of system time in 30 s). Raising
    the mmap and trim thresholds keeps the memory in the heap for reuse (0.72 ->
    0.51 s per step). Returns whether the allocator took the settings (False
    off glibc, e.g. macOS or musl, where nothing changes)."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # 32 MiB is glibc's ceiling for the mmap threshold on 64-bit; larger blocks stay mmap'ed.
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def select_numba_threading_layer() -> None:
    """Use Numba's ``workqueue`` threads (they sleep when idle) unless the user chose
    a layer with ``NUMBA_THREADING_LAYER``. The OpenMP layer's spinning workers
    slowed PyTorch's next call 200x in the benchmark; call this before Numba's
    first parallel region, which is when it picks the layer."""
    if "NUMBA_THREADING_LAYER" not in os.environ:
        import numba

        numba.config.THREADING_LAYER = "workqueue"


def _blas_name() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version', '')}".strip()
    except Exception:  # older NumPy: no dict mode
        return "unknown"

