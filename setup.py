"""Packaging for minigen: the package itself plus the top-level ``kernels/`` folder,
installed as the sub-package ``minigen.kernels``."""
from setuptools import find_packages, setup

setup(
    name="minigen",
    version="0.1.0",
    description="Deep generative models from scratch: autograd on NumPy, Numba and CuPy kernels",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["minigen", "minigen.*"])
    + ["minigen.kernels", "minigen.kernels.cpu", "minigen.kernels.gpu"],
    package_dir={"minigen": "minigen", "minigen.kernels": "kernels"},
    install_requires=["numpy>=1.24", "numba>=0.59", "matplotlib>=3.7", "tqdm>=4.60"],
    extras_require={
        # the test suite trains on scikit-learn's bundled digits, so [dev] brings it too
        "dev": ["pytest>=7", "hypothesis>=6.80", "scikit-learn>=1.2"],
        # The registry serves CuPy wheels for CUDA 12 and CUDA 13; CUDA 12 drivers are
        # the most widely installed. Use cupy-cuda13x by hand on a CUDA 13-only machine.
        "gpu": ["cupy-cuda12x>=13"],
        "data": ["scikit-learn>=1.2"],
    },
    entry_points={"console_scripts": ["minigen=minigen.cli:main"]},
)
