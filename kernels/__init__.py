"""minigen.kernels: the hot loops, three times over.

* ``reference`` — plain NumPy, the specification
* ``cpu``       — Numba kernels for the CPU
* ``gpu``       — CuPy kernels (CUDA C kept readable in the source)

``minigen.backend.get_kernel(name, device)`` picks the implementation.
"""
