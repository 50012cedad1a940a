"""Build and install fastdiff.

Python package: `fastdiff` (its subpackages `fastdiff.ops`, with the Triton kernels in `fastdiff.ops.kernels`, and
`fastdiff.sampling`).
Compiled parts, with ninja through torch's build tools, from the recipe in fastdiff/_build.py (the same one
`fastdiff build` uses to rebuild them later):
  fastdiff._C       the `fastdiff` op library and its C++ CPU kernels (csrc/bindings.cpp, csrc/cpu): built whenever
                    torch is importable;
  fastdiff._C_cuda  the CUDA kernels of those ops (csrc/cuda), loaded after fastdiff._C: built whenever torch is a CUDA
                    build and a CUDA toolkit is found, GPU or not (with no visible GPU, for the architectures in
                    _build.DEFAULT_CUDA_ARCHS).
Install with `--no-build-isolation`, so that they are built against the torch they will run with. A part that cannot
be built is skipped with a warning and never fails the install: the package still works through Triton or the
reference path. What was built, against which torch, and why a part was not, goes to fastdiff/_build_info.json
(`fastdiff info` shows it); a part built against another torch than the one running is not loaded.
"""
import contextlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).parent
CSRC = ROOT / "csrc"


def load_recipe():
    """fastdiff/_build.py, loaded by path: the package cannot be imported before it is installed."""
    spec = importlib.util.spec_from_file_location("_fastdiff_build_recipe", ROOT / "fastdiff" / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


recipe = load_recipe()


def read_version():
    """The version string, read from fastdiff/_version.py without importing the package."""
    namespace = {}
    exec((ROOT / "fastdiff" / "_version.py").read_text(), namespace)
    return namespace["__version__"]


@contextlib.contextmanager
def captured_output():
    """Collect what the compilers print (file descriptors 1 and 2) and print it again afterwards, so that a failed
    part's reason can quote the compiler's errors while pip -v still shows everything."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        text = []
        try:
            yield text
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            log.seek(0)
            text.append(log.read().decode(errors="replace"))
            sys.stderr.write(text[0])


def failure_reason(error: Exception, output: str) -> str:
    """A short reason for `fastdiff info`: the exception and the first compiler error lines."""
    errors = [line.strip() for line in output.splitlines() if re.search(r"\berror\b", line, re.I)]
    reason = f"{type(error).__name__}: {error}".strip()
    if errors:
        reason += " | " + " | ".join(errors[:6])
    return reason[:2000]


def extensions():
    """(ext_modules, build_ext class, build configuration, reasons for parts not attempted)."""
    try:
        import torch
    except ImportError as error:
        reason = f"torch was not importable while building ({error}), as in pip's default isolated build"
        return [], None, {}, {"cpu": reason, "cuda": reason}

    standard = recipe.cxx_standard(Path(torch.__file__).parent / "include")
    config = {"cxx_standard": standard}
    skipped = {}
    if torch.version.cuda is None:
        skipped["cuda"] = f"torch {torch.__version__} is a CPU build"
    else:
        cuda_home, how = recipe.find_cuda_home(os.environ)
        if cuda_home is None:
            skipped["cuda"] = how
        else:
            os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension when it is first imported
            archs, why = recipe.cuda_arch_list(os.environ, torch.cuda.device_count())
            if archs:
                os.environ["TORCH_CUDA_ARCH_LIST"] = archs
            config.update(cuda_home=how, cuda_archs=why)
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    headers = [str(p.relative_to(ROOT)) for p in CSRC.rglob("*.h")]  # a header change rebuilds
    relative = lambda paths: [str(p.relative_to(ROOT)) for p in paths]  # noqa: E731
    ext_modules = [CppExtension("fastdiff._C", sources=relative(recipe.sources(CSRC, "cpu")), include_dirs=[str(CSRC)],
                                extra_compile_args=recipe.compile_args("cpu", standard),
                                extra_link_args=recipe.CPU_LINK_FLAGS, depends=headers)]
    if "cuda" not in skipped:
        ext_modules.append(CUDAExtension("fastdiff._C_cuda", sources=relative(recipe.sources(CSRC, "cuda")),
                                         include_dirs=[str(CSRC)], extra_compile_args=recipe.compile_args("cuda", standard),
                                         depends=headers))

    class OptionalBuildExt(BuildExtension.with_options(use_ninja=True)):
        """Builds each part on its own; a part that fails is left out with its reason, and the install goes on."""

        def build_extension(self, ext):
            part = "cuda" if ext.name.endswith("_cuda") else "cpu"
            with captured_output() as output:
                try:
                    super().build_extension(ext)
                    self.outcome[part] = None
                    return
                except Exception as error:  # noqa: BLE001 - any compiler or ninja failure
                    failed = error
            self.outcome[part] = "the build failed: " + failure_reason(failed, output[0])
            print(f"WARNING: fastdiff: building {ext.name} failed; continuing without it: {self.outcome[part]}",
                  file=sys.stderr)

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
            # What was not built must not be copied or listed as an output (setuptools would fail the install).
            self.extensions = [ext for ext in self.extensions if self.outcome.get(self.part(ext)) is None]

        def finalize_options(self):
            super().finalize_options()
            # Object files in a folder of the source tree per torch build, not in pip's throw-away temp folder: a
            # reinstall against the same torch recompiles only what changed (ninja tracks sources, headers and
            # flags), and objects of another torch are never mixed in.
            stamp = recipe.stamp(torch)
            persistent = ROOT / "build" / f"temp-torch-{stamp['torch']}-{(stamp['torch_git'] or 'unknown')[:10]}"
            if os.access(ROOT, os.W_OK):
                self.build_temp = str(persistent)

        @staticmethod
        def part(ext):
            return "cuda" if ext.name.endswith("_cuda") else "cpu"

        def run(self):
            self.outcome = dict(skipped)
            super().run()
            info = {**recipe.stamp(torch), **config, "sources": recipe.sources_hash(CSRC),
                    "built": sorted(self.part(ext) for ext in self.extensions),
                    "not_built": {k: v for k, v in self.outcome.items() if v}}
            targets = {Path(self.get_ext_fullpath("fastdiff._C")).parent}
            if self.inplace or getattr(self, "editable_mode", False):
                targets.add(ROOT / "fastdiff")
            for folder in targets:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "_build_info.json").write_text(json.dumps(info, indent=1))

    return ext_modules, OptionalBuildExt, config, {}


ext_modules, build_ext_class, build_config, not_attempted = extensions()


class BuildPyWithSources(build_py):
    """Ships csrc/ inside the package as fastdiff/_csrc, so that `fastdiff build` can rebuild the C++ parts of an
    installed (not editable) fastdiff after torch changed; records why nothing was compiled when torch was missing."""

    def run(self):
        super().run()
        if self.dry_run:
            return
        package = ROOT / "fastdiff" if getattr(self, "editable_mode", False) else Path(self.build_lib) / "fastdiff"
        if not getattr(self, "editable_mode", False):
            shutil.rmtree(package / "_csrc", ignore_errors=True)
            shutil.copytree(CSRC, package / "_csrc", ignore=shutil.ignore_patterns("*.o", "*.so"))
        if not_attempted:  # build_ext has nothing to build and writes no record: write it here
            package.mkdir(parents=True, exist_ok=True)
            (package / "_build_info.json").write_text(
                json.dumps({"torch": None, "built": [], "not_built": not_attempted}, indent=1))


cmdclass = {"build_py": BuildPyWithSources}
if build_ext_class is not None:
    cmdclass["build_ext"] = build_ext_class
if not_attempted:
    print("WARNING: fastdiff: the compiled kernels are not built: " + not_attempted["cpu"], file=sys.stderr)

setup(
    name="fastdiff",
    version=read_version(),
    description="Fast sampling and training of diffusion models (EDM, DDPM, score SDEs) "
    "on fused Triton and C++/CUDA kernels, with a pure-PyTorch reference path.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["fastdiff", "fastdiff.*"]),
    package_data={"fastdiff": ["weights/*.pt"]},  # the shipped digits model and classifier (fastdiff.pretrained)
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=["torch>=2.4", "numpy"],
    extras_require={
        "test": ["pytest>=7", "triton>=3.2", "pillow", "scikit-learn", "torchdiffeq", "scipy", "torchsde", "tqdm",
                 "diffusers"],
        # Triton: its interpreter on CPU; scipy, torchsde, tqdm (and torchdiffeq): what k-diffusion's sampling.py imports
        # (k-diffusion itself is installed with --no-deps: see the README); diffusers: the peer of fastdiff.from_diffusers
        "triton": ["triton>=3.0"],
        "data": ["pillow", "scikit-learn"],  # fastdiff.data.image_folder and fastdiff.data.digits
        "sde": ["torchdiffeq", "torchsde"],  # fastdiff.sde.ode_sample and likelihood; torchsde: fastdiff.BrownianNoise
        "build": ["ninja"],  # `fastdiff build`: compile the C++ parts for the installed torch
    },
    entry_points={"console_scripts": ["fastdiff=fastdiff.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
