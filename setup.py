"""Build and install fastdiff.

The package is pure Python today: the Triton kernels live in `kernels/` (installed as `fastdiff.kernels`);
the C++/CUDA extension of `csrc/` will be built here too.
"""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent


def read_version():
    """The version string, read from fastdiff/_version.py without importing the package."""
    namespace = {}
    exec((ROOT / "fastdiff" / "_version.py").read_text(), namespace)
    return namespace["__version__"]


setup(
    name="fastdiff",
    version=read_version(),
    description="Fast sampling and training of diffusion models (EDM, DDPM, score SDEs) "
    "on fused Triton and C++/CUDA kernels, with a pure-PyTorch reference path.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["fastdiff", "fastdiff.*"]) + ["fastdiff.kernels"],
    package_dir={"fastdiff.kernels": "kernels"},  # the Triton kernels keep their top-level folder
    install_requires=["torch>=2.4", "numpy"],
    extras_require={
        "test": ["pytest>=7", "triton>=3.2"],  # the Triton kernels are tested in its interpreter on CPU
        "triton": ["triton>=3.0"],
    },
    entry_points={"console_scripts": ["fastdiff=fastdiff.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
