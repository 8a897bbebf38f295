"""Run the GPU kernels' own code on a machine without a GPU: a NumPy stand-in for the few CuPy and cuBLAS
calls they make, and their CUDA C++ sources compiled by the host's C++ compiler.

A kernel that uses no shared memory and no barrier — every thread reads what no other thread writes —
computes the same thing when its threads run one after another, so ``EMULATE`` below loops over the
grid and the block and calls the ``__global__`` function once per thread, with ``blockIdx`` and
``threadIdx`` set. A kernel with ``__syncthreads()`` runs each block's threads as host threads that
wait for each other at a barrier (``EMULATE_THREADED``), one block at a time, so a ``static`` array
stands for the block's ``__shared__`` memory. The stand-in ``cupy`` makes host arrays whose ``.data.ptr`` is their real address, so
``matmul_strided``'s cuBLAS call is carried out by :func:`_gemm_strided_batched` on the very pointers,
leading dimensions and strides the kernel passes (column-major, as cuBLAS reads them). What this checks
is everything but the GPU: the index arithmetic of the CUDA sources, the launch grids, and the layout
arguments of every product — against the NumPy reference. (The @gpu tests check the rest on a GPU.)
"""
from __future__ import annotations

import ctypes
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import types
import weakref

import numpy as np

GPU_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "kernels", "gpu")

_HEADER = r"""
// CUDA's launch variables, and launches that run a grid's blocks one after another.
#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
using std::max;
using std::min;
struct dim3_ { unsigned x, y, z; };
static thread_local dim3_ blockIdx, threadIdx;
static dim3_ blockDim, gridDim;
#define __global__
#define __device__
#define __shared__ static            /* one block runs at a time: a static array is its shared memory */
#define __align__(n) __attribute__((aligned(n)))
struct float4 { float x, y, z, w; };
struct double2 { double x, y; };
// A barrier-free kernel: the block's threads one after another.
#define EMULATE(kernel, gx, gy, gz, bx, ...) do {                                                   \
    gridDim = {(unsigned)(gx), (unsigned)(gy), (unsigned)(gz)}; blockDim = {(unsigned)(bx), 1, 1}; \
    for (unsigned bz_ = 0; bz_ < gridDim.z; ++bz_)                                                 \
    for (unsigned by_ = 0; by_ < gridDim.y; ++by_)                                                 \
    for (unsigned bx_ = 0; bx_ < gridDim.x; ++bx_)                                                 \
    for (unsigned t_ = 0; t_ < blockDim.x; ++t_) {                                                 \
        blockIdx = {bx_, by_, bz_}; threadIdx = {t_, 0, 0}; kernel(__VA_ARGS__); }                \
} while (0)
// A kernel with __syncthreads(): the block's threads as host threads that meet at a barrier.
struct Barrier_ {
    std::mutex m; std::condition_variable cv; unsigned count, waiting = 0, generation = 0;
    void wait() {
        std::unique_lock<std::mutex> lock(m);
        const unsigned gen = generation;
        if (++waiting == count) { waiting = 0; ++generation; cv.notify_all(); }
        else cv.wait(lock, [&] { return gen != generation; });
    }
};
static Barrier_ barrier_;
static void __syncthreads() { barrier_.wait(); }
#define EMULATE_THREADED(kernel, gx, gy, gz, bx, ...) do {                                          \
    gridDim = {(unsigned)(gx), (unsigned)(gy), (unsigned)(gz)}; blockDim = {(unsigned)(bx), 1, 1}; \
    barrier_.count = blockDim.x;                                                                   \
    for (unsigned bz_ = 0; bz_ < gridDim.z; ++bz_)                                                 \
    for (unsigned by_ = 0; by_ < gridDim.y; ++by_)                                                 \
    for (unsigned bx_ = 0; bx_ < gridDim.x; ++bx_) {                                               \
        std::vector<std::thread> threads_;                                                         \
        for (unsigned t_ = 0; t_ < blockDim.x; ++t_)                                               \
            threads_.emplace_back([&, t_] {                                                        \
                blockIdx = {bx_, by_, bz_}; threadIdx = {t_, 0, 0}; kernel(__VA_ARGS__); });        \
        for (auto& thread_ : threads_) thread_.join();                                             \
    }                                                                                              \
} while (0)
"""


class HostArray(np.ndarray):
    """A NumPy array that answers ``.data.ptr`` with its address, as a CuPy array does."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])


def host(a, dtype=None) -> HostArray:
    return np.asarray(a, dtype=dtype).view(HostArray)


def _block(ptr, dtype, rows, cols, ld):
    """The column-major (rows, cols) matrix with leading dimension ``ld`` that starts at ``ptr``."""
    item = np.dtype(dtype).itemsize
    count = ld * (cols - 1) + rows
    ctype = ctypes.c_float if np.dtype(dtype) == np.float32 else ctypes.c_double
    flat = np.frombuffer((ctype * count).from_address(ptr), dtype=dtype)
    return np.lib.stride_tricks.as_strided(flat, shape=(rows, cols), strides=(item, ld * item))


def _gemm_strided_batched(dtype):
    """cublas<t>gemmStridedBatched on host memory: C_i = alpha op(A_i) op(B_i) + beta C_i."""
    ctype = ctypes.c_float if dtype == np.float32 else ctypes.c_double

    def gemm(handle, transa, transb, m, n, k, alpha, a, lda, stride_a, b, ldb, stride_b, beta, c, ldc,
             stride_c, batch):
        alpha, beta = ctype.from_address(alpha).value, ctype.from_address(beta).value
        item = np.dtype(dtype).itemsize
        for i in range(batch):
            op_a = _block(a + i * stride_a * item, dtype, *((m, k) if transa == 0 else (k, m)), lda)
            op_b = _block(b + i * stride_b * item, dtype, *((k, n) if transb == 0 else (n, k)), ldb)
            out = _block(c + i * stride_c * item, dtype, m, n, ldc)
            product = alpha * ((op_a if transa == 0 else op_a.T) @ (op_b if transb == 0 else op_b.T))
            out[...] = product if beta == 0 else product + beta * out     # beta = 0 never reads C
    return gemm


def fake_cupy() -> types.ModuleType:
    """The calls of ``kernels/gpu/{_blas,_compile,conv,attention}.py`` on host arrays. Fresh buffers
    are filled with NaN, so a kernel that leaves an entry unwritten cannot pass."""
    cp = types.ModuleType("cupy")
    cp.ndarray = HostArray
    cp.float32, cp.float64 = np.float32, np.float64
    cp.result_type = np.result_type
    cp.empty = lambda shape, dtype=np.float64: host(np.full(shape, np.nan, dtype))
    cp.empty_like = lambda a, dtype=None: host(np.full_like(a, np.nan, dtype=dtype))
    cp.zeros = lambda shape, dtype=np.float64: host(np.zeros(shape, dtype))
    cp.ascontiguousarray = lambda a, dtype=None: host(np.ascontiguousarray(a, dtype=dtype))
    cp.asarray = lambda a, dtype=None: host(a, dtype)
    cp.broadcast_to = lambda a, shape: np.broadcast_to(a, shape).view(HostArray)
    cp.where = lambda *a: host(np.where(*a))
    cp.sum = lambda a, axis=None, out=None: np.sum(a, axis=axis, out=out)
    cp.ElementwiseKernel = cp.RawModule = lambda *args, **kwargs: None   # replaced per test
    cp.RawKernel = lambda code, name, **kwargs: types.SimpleNamespace(code=code, name=name)
    cublas = types.SimpleNamespace(
        sgemmStridedBatched=_gemm_strided_batched(np.float32),
        dgemmStridedBatched=_gemm_strided_batched(np.float64),
        CUBLAS_OP_N=0, CUBLAS_OP_T=1, CUBLAS_POINTER_MODE_HOST=0,
        getPointerMode=lambda handle: 0, setPointerMode=lambda handle, mode: None)
    cp.cuda = types.SimpleNamespace(cublas=cublas, device=types.SimpleNamespace(get_cublas_handle=lambda: 0))
    return cp


_PACKAGE = "minigen.kernels._gpu_on_cpu"     # beside the real kernels: ``..reference`` resolves


def load_gpu_module(name: str, monkeypatch):
    """``kernels/gpu/<name>.py`` imported against :func:`fake_cupy` (its package ``__init__``, which
    imports every GPU module, is skipped); ``monkeypatch`` undoes the ``sys.modules`` entries."""
    import minigen.kernels  # noqa: F401  (the parent of the stand-in package)
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    package = types.ModuleType(_PACKAGE)
    package.__path__ = [GPU_DIR]
    monkeypatch.setitem(sys.modules, _PACKAGE, package)
    for sub in dict.fromkeys(("_blas", "_compile", "conv_implicit", name)):   # what the modules import
        key = f"{_PACKAGE}.{sub}"
        monkeypatch.setitem(sys.modules, key, None)      # recorded as absent, so the undo removes it ...
        del sys.modules[key]                             # ... after the import below has added it
    return importlib.import_module(f"{_PACKAGE}.{name}")


def compiler() -> str | None:
    """The host's C++ compiler, or None."""
    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")


class EmulatedKernels:
    """A stand-in for :class:`kernels.gpu._compile.TemplateKernels`: ``kernels(step, dtype)`` returns a
    launcher ``(grid, block, args)`` that runs ``<prefix>_<step><float|double>`` of ``source`` on the
    host. ``signatures`` maps each step to its argument kinds: a tuple of ``"ptr"`` (an array of the
    kernel's dtype), ``"iptr"`` (an int32 array) and ``"int"``."""

    def __init__(self, source: str, prefix: str, signatures: dict):
        self.prefix, self.signatures = prefix, signatures
        wrappers = []
        emulate = "EMULATE_THREADED" if "__syncthreads" in source else "EMULATE"
        for step, kinds in signatures.items():
            for ctype, suffix in (("float", "f"), ("double", "d")):
                params = ", ".join(f"{ {'ptr': ctype + '*', 'iptr': 'int*', 'int': 'int'}[kind]} a{i}"
                                   for i, kind in enumerate(kinds))
                args = ", ".join(f"a{i}" for i in range(len(kinds)))
                wrappers.append(f'extern "C" void {step}_{suffix}(int gx, int gy, int gz, int bx, {params}) '
                                f'{{ {emulate}({prefix}_{step}<{ctype}>, gx, gy, gz, bx, {args}); }}')
        self._dir = tempfile.mkdtemp(prefix="cuda_on_cpu_")
        weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        cpp, lib = os.path.join(self._dir, "kernels.cpp"), os.path.join(self._dir, "kernels.so")
        with open(cpp, "w", encoding="utf-8") as fh:
            fh.write(_HEADER + source + "\n" + "\n".join(wrappers) + "\n")
        subprocess.run([compiler(), "-std=c++11", "-O1", "-pthread", "-shared", "-fPIC", "-o", lib, cpp], check=True,
                       capture_output=True, text=True)
        self._lib = ctypes.CDLL(lib)
        self.launches = []

    def __call__(self, step: str, dtype):
        fn = getattr(self._lib, f"{step}_{'f' if np.dtype(dtype) == np.float32 else 'd'}")
        kinds = self.signatures[step]

        def launch(grid, block, args):
            assert len(args) == len(kinds), (step, len(args), len(kinds))
            self.launches.append((step, tuple(grid), tuple(block)))
            converted = [ctypes.c_void_p(a.__array_interface__["data"][0]) if kind != "int"
                         else ctypes.c_int(int(a)) for a, kind in zip(args, kinds)]
            for kind, a in zip(kinds, args):
                if kind != "int":
                    expected = dtype if kind == "ptr" else np.int32
                    assert isinstance(a, np.ndarray) and a.dtype == expected, (step, type(a), a.dtype, expected)
                    assert a.flags.c_contiguous, (step, "a kernel reads its arrays as contiguous")
                else:
                    assert isinstance(a, np.int32), (step, type(a))     # CUDA's int: 32 bits
            fn(*(ctypes.c_int(int(v)) for v in (*grid, *block)), *converted)
        return launch
