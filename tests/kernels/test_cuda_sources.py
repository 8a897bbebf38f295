"""Every CUDA C++ source in ``kernels/gpu`` compiles for a Hopper GPU (sm_90) with ``nvcc`` — on a
machine without a GPU, where CuPy's NVRTC never runs, so a kernel with a syntax or type error would
otherwise wait for a lent device to be found out. Skipped where ``nvcc`` is not installed.

Each module is imported against the NumPy stand-in for CuPy (``cuda_on_cpu``), and the sources of its
``RawKernel`` and ``TemplateKernels`` objects are compiled with every kernel the module launches
instantiated (for the templates: float and double, as NVRTC instantiates them at run time).
(Element-wise kernels are bodies that CuPy wraps in code of its own; they are not covered here.)
"""
import shutil
import subprocess

import pytest

import cuda_on_cpu

MODULES = ("attention", "conv", "conv_implicit", "hopfield", "nade", "normalization")


def _sources(module):
    """(source, kernel names) of every CUDA module object in ``module``."""
    found = []
    for value in vars(module).values():
        if type(value).__name__ == "TemplateKernels":
            found.append((value.source, value.names))
        elif hasattr(value, "code") and hasattr(value, "name"):      # the stand-in's RawKernel
            found.append((value.code, [value.name]))
    return found


@pytest.mark.parametrize("name", MODULES)
def test_cuda_source_compiles_for_sm90(name, tmp_path, monkeypatch):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed")
    sources = _sources(cuda_on_cpu.load_gpu_module(name, monkeypatch))
    assert sources, f"kernels/gpu/{name}.py: no CUDA source found"
    for i, (source, names) in enumerate(sources):
        # taking each kernel's address makes nvcc instantiate (and compile) it
        uses = "\n".join(f"void* minigen_use_{j} = (void*)&{kernel};" for j, kernel in enumerate(names))
        cu = tmp_path / f"{name}_{i}.cu"
        cu.write_text(source + "\n" + uses + "\n", encoding="utf-8")
        done = subprocess.run([nvcc, "-std=c++11", "-arch=sm_90", "-c", str(cu), "-o", str(cu.with_suffix(".o"))],
                              capture_output=True, text=True)
        assert done.returncode == 0, f"{name} ({', '.join(names)}):\n{done.stderr[-4000:]}"
