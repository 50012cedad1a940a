"""How fastdiff's C++ parts are built: one recipe for setup.py (at install) and for `fastdiff build` (after torch
changed under an installed fastdiff).

The parts: "cpu" (fastdiff._C: csrc/bindings.cpp, which defines the `fastdiff` op library, and csrc/cpu/) and "cuda"
(fastdiff._C_cuda: csrc/cuda/, CUDA kernels for those ops, loaded after the CPU part); both bind their kernels
through csrc/binding.h. This module decides their sources and flags, the C++ standard the installed torch requires,
where the CUDA toolkit is, which GPU architectures to build for, and the stamp that records which torch a build is for.

Only the standard library is imported at module level: setup.py loads this file by path, before fastdiff exists.
For the same reason the preconditioner codes that the C++ sources are compiled with are read from fastdiff/_codes.py
(beside this file) by path.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

PARTS = {"cpu": "_C", "cuda": "_C_cuda"}  # part -> extension module name inside the fastdiff package
# Built for when no GPU is visible (CI, build hosts): A100 and H100 machine code, plus sm_90 PTX that the driver
# compiles for newer GPUs. torch's own default with no visible GPU is an empty list, which fails the build.
DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"
# -ffp-contract=off / --fmad=false: no fused multiply-adds, so every backend rounds like the reference path
# (csrc/cpu/kernels.cpp says why); OpenMP for the CPU loops.
CXX_FLAGS = ["-O3", "-fopenmp", "-ffp-contract=off", "-fno-math-errno"]
NVCC_FLAGS = ["-O3", "--fmad=false"]
CPU_LINK_FLAGS = ["-fopenmp"]
CPP_STANDARDS = {201703: "c++17", 202002: "c++20", 202302: "c++23"}  # __cplusplus value -> -std= name
CODES_FILE = Path(__file__).resolve().with_name("_codes.py")  # the preconditioner codes, for Python and C++ alike


def _load_codes():
    """fastdiff/_codes.py as a module, loaded by path (this file may run before the fastdiff package exists)."""
    spec = importlib.util.spec_from_file_location("_fastdiff_codes", CODES_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CODE_DEFINITIONS = _load_codes().compile_definitions()  # -DFASTDIFF_PRECOND_EDM=0 ... for g++ and nvcc


def source_root(package_dir: Path) -> Path | None:
    """The csrc/ folder: shipped inside the package as fastdiff/_csrc (wheels), or beside it (a source checkout)."""
    for candidate in (package_dir / "_csrc", package_dir.parent / "csrc"):
        if (candidate / "bindings.cpp").is_file():
            return candidate
    return None


def sources(root: Path, part: str) -> list[Path]:
    """The files compiled for `part`, in a fixed order."""
    if part == "cpu":
        return [root / "bindings.cpp", root / "cpu" / "kernels.cpp"]
    if part == "cuda":
        return sorted((root / "cuda").glob("*.cu")) + sorted((root / "cuda").glob("*.cpp"))
    raise ValueError(f"part: expected one of {', '.join(map(repr, PARTS))}, got {part!r}")


def sources_hash(root: Path) -> str:
    """A digest of every file under csrc/ and of the codes they are compiled with (fastdiff/_codes.py), so a build
    made from other sources or other codes is never reused."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".h", ".cpp", ".cu")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(CODES_FILE.name.encode() + b"\0" + CODES_FILE.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def cxx_standard(torch_include: Path) -> str:
    """The -std= value the installed torch's headers require (torch 2.4-2.x: c++17; newer: c++20).

    torch states it in ATen/ATen.h as `#if ... __cplusplus < 202002L` followed by an #error; headers that state
    nothing are from before the check existed and build as C++17.
    """
    try:
        text = (torch_include / "ATen" / "ATen.h").read_text(errors="replace")
    except OSError:
        return "c++17"
    required = [int(v) for v in re.findall(r"__cplusplus\s*<\s*(\d{6})L", text)]
    known = [v for v in required if v in CPP_STANDARDS]
    return CPP_STANDARDS[max(known)] if known else "c++17"


def compile_args(part: str, standard: str) -> dict[str, list[str]]:
    """extra_compile_args for `part` with the C++ standard `standard` (e.g. "c++20"); every compile gets the
    preconditioner codes (CODE_DEFINITIONS), which csrc/fastdiff_math.h requires."""
    if part == "cpu":
        return {"cxx": CXX_FLAGS + [f"-std={standard}"] + CODE_DEFINITIONS}
    return {"cxx": ["-O3", f"-std={standard}"] + CODE_DEFINITIONS,
            "nvcc": NVCC_FLAGS + [f"-std={standard}"] + CODE_DEFINITIONS}


def _toolkit_at(home: str | os.PathLike | None) -> bool:
    return bool(home) and (Path(home) / "bin" / "nvcc").is_file() and (Path(home) / "include" / "cuda_runtime.h").is_file()


def find_cuda_home(environ=os.environ) -> tuple[str | None, str]:
    """(the CUDA toolkit's root, how it was found) or (None, why none was found).

    CUDA_HOME or CUDA_PATH when set (a user who names one gets that one or an error, never a guess); otherwise the
    toolkit of the `nvcc` on PATH, found through symlinks and through wrapper scripts (nvcc itself reports its
    TOP folder with --dryrun); otherwise /usr/local/cuda. torch's own guess, the parent of the folder of the
    nvcc on PATH, is wrong for a wrapper in /usr/local/bin.
    """
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if environ.get(name):
            home = environ[name]
            if _toolkit_at(home):
                return home, f"{name}={home}"
            return None, f"{name}={home} has no bin/nvcc and include/cuda_runtime.h"
    nvcc = shutil.which("nvcc", path=environ.get("PATH"))
    if nvcc:
        resolved = Path(os.path.realpath(nvcc)).parent.parent
        if _toolkit_at(resolved):
            return str(resolved), f"the nvcc on PATH ({nvcc})"
        top = _nvcc_top(nvcc)
        if top and _toolkit_at(top):
            return top, f"the toolkit the nvcc on PATH runs ({nvcc} -> {top})"
    if _toolkit_at("/usr/local/cuda"):
        return "/usr/local/cuda", "/usr/local/cuda"
    return None, "no CUDA toolkit found (no nvcc on PATH, no /usr/local/cuda; set CUDA_HOME)"


def _nvcc_top(nvcc: str) -> str | None:
    """The toolkit root an nvcc (or a script that runs one) uses: its `#$ TOP=` line of a dry run."""
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.cu"
        probe.write_text("")
        try:
            done = subprocess.run([nvcc, "--dryrun", "-c", str(probe), "-o", str(Path(tmp) / "probe.o")],
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
    match = re.search(r"^#\$ TOP=(.+)$", done.stdout + done.stderr, re.M)
    return os.path.normpath(match.group(1).strip()) if match else None


def cuda_arch_list(environ, visible_gpus: int) -> tuple[str | None, str]:
    """(the TORCH_CUDA_ARCH_LIST to set, or None to leave torch's choice; why).

    A user's TORCH_CUDA_ARCH_LIST is kept; with visible GPUs torch builds for them; with none, DEFAULT_CUDA_ARCHS.
    """
    if environ.get("TORCH_CUDA_ARCH_LIST"):
        return None, f"TORCH_CUDA_ARCH_LIST={environ['TORCH_CUDA_ARCH_LIST']}"
    if visible_gpus:
        return None, f"the {visible_gpus} visible GPU(s)"
    return DEFAULT_CUDA_ARCHS, f"{DEFAULT_CUDA_ARCHS} (no GPU visible, no TORCH_CUDA_ARCH_LIST)"


def stamp(torch) -> dict:
    """What a compiled part must match to be loaded: the exact torch build it was compiled against."""
    return {"torch": torch.__version__, "torch_git": getattr(torch.version, "git_version", None),
            "torch_cuda": torch.version.cuda}


def stamp_mismatch(built: dict | None, current: dict) -> str | None:
    """Why a part stamped `built` must not be loaded into the torch stamped `current` (None: it may)."""
    if not built or not built.get("torch"):
        return "records no torch version"
    if built.get("torch") != current["torch"]:
        return f"was built against torch {built.get('torch')} and this is torch {current['torch']}"
    if built.get("torch_git") != current["torch_git"]:
        return (f"was built against another build of torch {current['torch']} (git {built.get('torch_git')}, "
                f"this one {current['torch_git']})")
    return None
