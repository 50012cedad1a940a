"""Build and install fastdiff.

Python packages: `fastdiff` and `fastdiff.kernels` (the Triton kernels, kept in the top-level `kernels/`).
Compiled parts, with ninja through torch's build tools (install with `--no-build-isolation`, so that the
extension is built against the torch it will run with):
  fastdiff._C       the C++ CPU kernels (csrc/cpu, csrc/bindings.cpp): built whenever torch is importable;
  fastdiff._C_cuda  the CUDA kernels (csrc/cuda): built when torch is a CUDA build and a CUDA toolkit is found.
A part that cannot be built is skipped with a warning, and the package still works through Triton or the
reference path; what was built and why not is written to fastdiff/_build_info.json (`fastdiff info` shows it).
"""
import json
import os
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
CSRC = ROOT / "csrc"
CXX_FLAGS = ["-O3", "-std=c++17", "-fopenmp", "-ffp-contract=off", "-fno-math-errno"]  # see csrc/cpu/kernels.cpp


def read_version():
    """The version string, read from fastdiff/_version.py without importing the package."""
    namespace = {}
    exec((ROOT / "fastdiff" / "_version.py").read_text(), namespace)
    return namespace["__version__"]


def extensions():
    """(ext_modules, cmdclass, reasons for parts not attempted)."""
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
    except ImportError as error:
        reason = (f"torch was not importable while building ({error}); install torch first and build with "
                  "pip install --no-build-isolation")
        return [], {}, {"cpu": reason, "cuda": reason}

    skipped = {}
    ext_modules = [CppExtension(
        "fastdiff._C",
        sources=[str(p.relative_to(ROOT)) for p in (CSRC / "bindings.cpp", CSRC / "cpu" / "kernels.cpp")],
        include_dirs=[str(CSRC)],
        extra_compile_args={"cxx": CXX_FLAGS},
        extra_link_args=["-fopenmp"],
        depends=[str(p.relative_to(ROOT)) for p in CSRC.rglob("*.h")],  # a header change rebuilds
    )]
    cuda_sources = sorted((CSRC / "cuda").glob("*.cu")) + sorted((CSRC / "cuda").glob("*.cpp"))
    if torch.version.cuda is None:
        skipped["cuda"] = f"torch {torch.__version__} is a CPU build"
    elif CUDA_HOME is None:
        skipped["cuda"] = "no CUDA toolkit found (set CUDA_HOME)"
    elif not cuda_sources:
        skipped["cuda"] = "csrc/cuda has no sources"
    else:
        ext_modules.append(CUDAExtension(
            "fastdiff._C_cuda",
            sources=[str(p.relative_to(ROOT)) for p in cuda_sources],
            include_dirs=[str(CSRC)],
            extra_compile_args={"cxx": ["-O3", "-std=c++17"], "nvcc": ["-O3", "--fmad=false", "-std=c++17"]},
        ))

    class OptionalBuildExt(BuildExtension.with_options(use_ninja=True)):
        """Builds each extension on its own; a failure warns and is recorded instead of failing the install."""

        def build_extension(self, ext):
            part = "cuda" if ext.name.endswith("_cuda") else "cpu"
            try:
                super().build_extension(ext)
                self.outcome[part] = None
            except Exception as error:  # noqa: BLE001 - any compiler or ninja failure
                self.outcome[part] = f"the build failed: {type(error).__name__}: {error}".strip()[:2000]
                print(f"WARNING: fastdiff: building {ext.name} failed; continuing without it: {error}", file=sys.stderr)

        def build_extensions(self):
            # torch checks the CUDA toolchain (versions, host compiler) for all extensions before building any: a
            # failing check must cost only the CUDA part, so retry without it.
            try:
                super().build_extensions()
            except Exception as error:  # noqa: BLE001
                cuda = [ext for ext in self.extensions if ext.name.endswith("_cuda")]
                if not cuda:
                    raise
                self.outcome["cuda"] = f"the CUDA toolchain check failed: {type(error).__name__}: {error}".strip()[:2000]
                print(f"WARNING: fastdiff: not building the CUDA kernels: {error}", file=sys.stderr)
                self.extensions = [ext for ext in self.extensions if ext not in cuda]
                super().build_extensions()

        def run(self):
            self.outcome = dict(skipped)
            super().run()
            info_dir = Path(self.get_ext_fullpath("fastdiff._C")).parent
            info_dir.mkdir(parents=True, exist_ok=True)
            (info_dir / "_build_info.json").write_text(json.dumps(
                {"torch": torch.__version__, "not_built": {k: v for k, v in self.outcome.items() if v}}, indent=1))

    return ext_modules, {"build_ext": OptionalBuildExt}, {}


ext_modules, cmdclass, not_attempted = extensions()
if not_attempted:
    print("WARNING: fastdiff: the compiled kernels are not built: " + not_attempted["cpu"], file=sys.stderr)
    info = ROOT / "fastdiff" / "_build_info.json"
    if os.access(info.parent, os.W_OK):
        info.write_text(json.dumps({"torch": None, "not_built": not_attempted}, indent=1))

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
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=["torch>=2.4", "numpy"],
    extras_require={
        "test": ["pytest>=7", "triton>=3.2", "pillow", "scikit-learn", "torchdiffeq"],  # Triton: its interpreter on CPU
        "triton": ["triton>=3.0"],
        "data": ["pillow", "scikit-learn"],  # fastdiff.data.image_folder and fastdiff.data.digits
        "sde": ["torchdiffeq"],  # fastdiff.sde.ode_sample and likelihood
    },
    entry_points={"console_scripts": ["fastdiff=fastdiff.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
