"""CUDA C++ sources written once as templates and compiled for float32 and float64."""
import cupy
import numpy as np


class TemplateKernels:
    """The kernels ``<prefix>_<step><float|double>`` of one CUDA C++ source: ``kernels(step, dtype)`` is
    the compiled function for that dtype. The whole source is compiled once, on first use (NVRTC takes
    about a second; importing minigen on a machine without a GPU compiles nothing)."""

    def __init__(self, source: str, prefix: str, steps):
        self.source, self.prefix = source, prefix
        self.names = [f"{prefix}_{step}<{ctype}>" for step in steps for ctype in ("float", "double")]
        self._module = None
        self._functions = {}        # (step, dtype) -> function: a launch looks it up, not the driver

    def __call__(self, step: str, dtype):
        key = (step, np.dtype(dtype))
        if key not in self._functions:
            if self._module is None:
                self._module = cupy.RawModule(code=self.source, options=("-std=c++11",),
                                              name_expressions=self.names)
            ctype = "float" if key[1] == np.float32 else "double"
            self._functions[key] = self._module.get_function(f"{self.prefix}_{step}<{ctype}>")
        return self._functions[key]
