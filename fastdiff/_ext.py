"""Loading fastdiff's compiled parts, and building them again for the torch that is running.

A compiled part is loaded only when it was built against the exact torch build that is running (its stamp in
fastdiff/_build_info.json, written by setup.py): a part built against another torch would crash at import or
run with a wrong ABI. In its place fastdiff takes a build from its cache made by `fastdiff build` for this
torch, if there is one. Otherwise the part is unavailable, with one message that says how to get it.

Why an explicit `fastdiff build` and not a silent build on first use: compiling the CPU part takes about a
minute and the CUDA part two on two cores; a build that starts inside the first `sample()` call stalls it
without warning, and under torchrun every rank would start one. The cache is keyed by the torch build and
by a digest of the sources, so a cached build is never loaded into another torch. Setting FASTDIFF_BUILD=auto
opts into building on first use (torch's build tools lock the build folder, so concurrent ranks build once).
"""
from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch

from . import _build
from ._version import __version__

PACKAGE_DIR = Path(__file__).resolve().parent
BUILD_INFO = PACKAGE_DIR / "_build_info.json"
CACHE_ENV = "FASTDIFF_CACHE"  # where `fastdiff build` puts its builds (default ~/.cache/fastdiff)
BUILD_ENV = "FASTDIFF_BUILD"  # "auto": build a missing or mismatched part on first use
HOW_TO_BUILD = ("run `python -m fastdiff build` (compiles the C++ parts for the installed torch into a cache, with "
                "a C++ compiler and ninja), or reinstall from a source checkout with "
                "`pip install --no-build-isolation -e .`")


def build_info() -> dict | None:
    """What setup.py recorded about the installed compiled parts, or None when it recorded nothing."""
    try:
        return json.loads(BUILD_INFO.read_text())
    except (OSError, ValueError):
        return None


def cache_root() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                                     "fastdiff")
    return Path(base)


def cache_dir(part: str) -> Path | None:
    """The folder of `part`'s build for this torch and these sources; None when the sources are not shipped."""
    root = _build.source_root(PACKAGE_DIR)
    if root is None:
        return None
    now = _build.stamp(torch)
    key = f"torch-{now['torch']}-{(now['torch_git'] or 'unknown')[:10]}"
    return cache_root() / f"{__version__}-{_build.sources_hash(root)}" / key / part


def _module_name(part: str) -> str:
    return f"fastdiff{_build.PARTS[part]}_{__version__.replace('.', '_')}"  # unique per part, as PyInit_ needs


def prebuilt_problem(part: str) -> str | None:
    """Why the installed fastdiff.<part module> must not be loaded (None: it can be)."""
    info = build_info()
    if info is None:
        return "fastdiff was installed without running its build (no fastdiff/_build_info.json)"
    if part in info.get("not_built", {}):
        return info["not_built"][part]
    if part not in info.get("built", [part]):
        return "it was not built"
    mismatch = _build.stamp_mismatch(info, _build.stamp(torch))
    if mismatch:
        return f"fastdiff.{_build.PARTS[part]} {mismatch}"
    root = _build.source_root(PACKAGE_DIR)
    if info.get("sources") and root is not None and _build.sources_hash(root) != info["sources"]:
        # a source checkout whose csrc/ changed since its editable install built the parts
        return f"fastdiff.{_build.PARTS[part]} was built from other C++ sources than these in {root}"
    return None


def load(part: str):
    """Import `part` ("cpu" or "cuda"), which registers its ops; raise ImportError with every reason it cannot.

    The CPU part defines the `fastdiff` op library (every schema) and the CUDA part only adds CUDA kernels to it,
    so "cuda" loads "cpu" first, and is unavailable, with the CPU part's reason, when that cannot be loaded.
    """
    if part == "cuda" and torch.version.cuda is None:
        raise ImportError(f"torch {torch.__version__} is a CPU build")  # nothing to build: say only that
    if part == "cuda":
        require_cpu_part()
    problem = prebuilt_problem(part)
    if problem is None:
        return importlib.import_module(f".{_build.PARTS[part]}", __package__)
    cached = load_cached(part)
    if cached is not None:
        return cached
    if os.environ.get(BUILD_ENV) == "auto":
        return build(part)
    raise ImportError(f"{problem}; to get the {part} kernels, {HOW_TO_BUILD}")


def require_cpu_part() -> None:
    """Load the CPU part, which defines the ops the CUDA part implements; ImportError saying so when it cannot."""
    try:
        load("cpu")
    except ImportError as error:
        raise ImportError(f"the CUDA kernels implement the ops that the CPU part (fastdiff.{_build.PARTS['cpu']}) "
                          f"defines, and it cannot be loaded: {error}") from error


def load_cached(part: str):
    """The cached build of `part` for this torch, imported (after the CPU part, for "cuda"); None when there is none."""
    folder = cache_dir(part)
    if folder is None or not (folder / "stamp.json").is_file():
        return None
    name = _module_name(part)
    if name in sys.modules:
        return sys.modules[name]
    if part == "cuda":
        require_cpu_part()
    path = folder / f"{name}{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    if not path.is_file():
        path = folder / f"{name}.so"  # torch's build tools name the library plainly
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


def build(part: str, verbose: bool = False):
    """Compile `part` for the running torch into the cache (see cache_dir) and import it.

    Raises ImportError naming the reason when it cannot be built (no sources, no toolkit, a compiler error).
    """
    root = _build.source_root(PACKAGE_DIR)
    if root is None:
        raise ImportError("the C++ sources are not shipped with this fastdiff (no fastdiff/_csrc or csrc/)")
    folder = cache_dir(part)
    if part == "cuda":
        if torch.version.cuda is None:
            raise ImportError(f"torch {torch.__version__} is a CPU build: the CUDA part cannot be built")
        home, how = _build.find_cuda_home(os.environ)
        if home is None:
            raise ImportError(how)
        if "torch.utils.cpp_extension" in sys.modules:  # it fixed CUDA_HOME when imported
            sys.modules["torch.utils.cpp_extension"].CUDA_HOME = home
        os.environ["CUDA_HOME"] = home
        archs, _ = _build.cuda_arch_list(os.environ, torch.cuda.device_count())
        if archs:
            os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        require_cpu_part()  # the build is imported at its end: its op library must be defined by then
    from torch.utils import cpp_extension

    standard = _build.cxx_standard(Path(torch.__file__).parent / "include")
    flags = _build.compile_args(part, standard)
    if part == "cuda":
        extra = {"extra_cuda_cflags": flags["nvcc"], "with_cuda": True}
    else:
        extra = {"extra_ldflags": _build.CPU_LINK_FLAGS, "with_cuda": False}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stamp.json").unlink(missing_ok=True)
    try:
        module = cpp_extension.load(name=_module_name(part), sources=[str(p) for p in _build.sources(root, part)],
                                    extra_cflags=flags["cxx"], extra_include_paths=[str(root)],
                                    build_directory=str(folder), verbose=verbose, **extra)
    except Exception as error:  # noqa: BLE001 - a compiler, ninja or toolkit failure
        raise ImportError(f"building the {part} kernels in {folder} failed: {type(error).__name__}: {error}") from error
    (folder / "stamp.json").write_text(json.dumps(_build.stamp(torch), indent=1))
    sys.modules[_module_name(part)] = module
    return module
