"""The install: the C++ parts build against the torch that is installed, a part that cannot be built never fails the
install (and says why), and a part built against another torch is never loaded (`fastdiff build` makes one that is).

The recipe (fastdiff/_build.py) is tested on made-up toolkits and headers; the installed build, the failure path
and `fastdiff build` are tested for real, with pip and the compilers, in subprocesses.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import fastdiff
from fastdiff import _build, _ext, backends

ROOT = Path(__file__).resolve().parent.parent
TORCH_INCLUDE = Path(torch.__file__).parent / "include"
IN_CI = os.environ.get("CI") == "true"
REAL_CUDA_HOME, _ = _build.find_cuda_home(os.environ)


def run(cmd, timeout=900, **kwargs):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, cmd))} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


# ---------------------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header, expected", [
    ("#if !defined(_MSC_VER) && __cplusplus < 202002L\n#error C++20 or later compatible compiler is required\n#endif",
     "c++20"),
    ("#if !defined(_MSC_VER) && __cplusplus < 201703L\n#error C++17 or later compatible compiler is required\n#endif",
     "c++17"),
    ("#pragma once\n#include <c10/core/Device.h>\n", "c++17"),  # headers from before torch stated a standard
])
def test_cxx_standard_is_read_from_the_headers(tmp_path, header, expected):
    (tmp_path / "ATen").mkdir()
    (tmp_path / "ATen" / "ATen.h").write_text(header)
    assert _build.cxx_standard(tmp_path) == expected


def test_the_chosen_standard_passes_the_installed_torchs_own_check(tmp_path):
    """Preprocessing ATen.h with the chosen -std passes torch's #error check; one standard older fails it when torch
    requires more than C++17 (so a hard-coded -std=c++17 would fail there, as it did with torch 2.14)."""
    cxx = shutil.which("g++") or shutil.which("c++")
    standard = _build.cxx_standard(TORCH_INCLUDE)
    preprocess = lambda std: subprocess.run(  # noqa: E731
        [cxx, "-E", f"-std={std}", f"-I{TORCH_INCLUDE}", f"-I{TORCH_INCLUDE / 'torch' / 'csrc' / 'api' / 'include'}",
         str(TORCH_INCLUDE / "ATen" / "ATen.h"), "-o", str(tmp_path / "out.i")], capture_output=True, text=True)
    done = preprocess(standard)
    assert done.returncode == 0, done.stderr[-2000:]
    if standard != "c++17":
        older = preprocess("c++17")
        assert older.returncode != 0 and "C++20" in older.stderr


def test_cxx_compiles_only_with_the_preconditioner_codes_of_fastdiff_codes(tmp_path):
    """The C++ sources take the preconditioner codes from fastdiff/_codes.py, through compile_args: every compile
    (C++ and nvcc) gets them, the C++ constants then equal Python's, and a compile without them stops at #error."""
    from fastdiff import _codes

    for part in ("cpu", "cuda"):
        for flags in _build.compile_args(part, "c++17").values():
            assert set(_codes.compile_definitions()) <= set(flags), (part, flags)
    cxx = shutil.which("g++") or shutil.which("c++")
    probe = tmp_path / "probe.cpp"
    probe.write_text('#include "fastdiff_math.h"\n' + "".join(
        f'static_assert(fastdiff::k{name} == {code}, "k{name}");\n' for name, code in _codes.PRECOND_KINDS.items()))
    compile_probe = lambda flags: subprocess.run(  # noqa: E731
        [cxx, "-fsyntax-only", "-std=c++17", f"-I{ROOT / 'csrc'}", *flags, str(probe)], capture_output=True, text=True)
    done = compile_probe(_build.CODE_DEFINITIONS)
    assert done.returncode == 0, done.stderr[-2000:]
    without = compile_probe([])
    assert without.returncode != 0 and "FASTDIFF_PRECOND_EDM/VP/VE are not defined" in without.stderr


def test_the_sources_digest_covers_the_codes(tmp_path, monkeypatch):
    """A change of fastdiff/_codes.py changes the digest a build is stamped with, so a part compiled with other
    codes is refused (and rebuilt) like one compiled from other sources."""
    root = _build.source_root(_ext.PACKAGE_DIR)
    before = _build.sources_hash(root)
    other = tmp_path / "_codes.py"
    other.write_text(_build.CODES_FILE.read_text().replace("PRECOND_VE = 2", "PRECOND_VE = 3"))
    monkeypatch.setattr(_build, "CODES_FILE", other)
    assert _build.sources_hash(root) != before


def fake_toolkit(root: Path) -> Path:
    """A folder shaped like a CUDA toolkit whose nvcc reports its TOP folder on a dry run, as the real one does."""
    (root / "include").mkdir(parents=True)
    (root / "include" / "cuda_runtime.h").write_text("")
    (root / "bin").mkdir()
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho '#$ TOP={root}/bin/..'\n")
    nvcc.chmod(0o755)
    return root


def wrapper(folder: Path, target: Path) -> Path:
    """An `nvcc` that is a script running another one, like /usr/local/bin/nvcc on some machines."""
    folder.mkdir(parents=True)
    script = folder / "nvcc"
    script.write_text(f'#!/bin/sh\nexec {target} "$@"\n')
    script.chmod(0o755)
    return script


def test_cuda_home_is_found_through_a_wrapper_script(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-99.0")
    wrapper(tmp_path / "wrap", toolkit / "bin" / "nvcc")
    home, how = _build.find_cuda_home({"PATH": str(tmp_path / "wrap")})
    assert Path(home).resolve() == toolkit.resolve(), how
    assert "wrap" in how  # says which nvcc led there


def test_cuda_home_is_found_through_a_symlink_and_a_named_one_is_kept(tmp_path):
    toolkit = fake_toolkit(tmp_path / "cuda-99.0")
    (tmp_path / "links").mkdir()
    (tmp_path / "links" / "nvcc").symlink_to(toolkit / "bin" / "nvcc")
    home, _ = _build.find_cuda_home({"PATH": str(tmp_path / "links")})
    assert Path(home) == toolkit.resolve()
    assert _build.find_cuda_home({"CUDA_HOME": str(toolkit), "PATH": ""})[0] == str(toolkit)
    home, why = _build.find_cuda_home({"CUDA_HOME": str(tmp_path / "nothing"), "PATH": str(tmp_path / "links")})
    assert home is None and "CUDA_HOME=" in why and "nvcc" in why  # a named toolkit is never replaced by a guess


@pytest.mark.skipif(REAL_CUDA_HOME is None and not IN_CI, reason="no CUDA toolkit on this machine; CI has one")
def test_the_real_toolkit_is_found_through_a_wrapper(tmp_path):
    assert REAL_CUDA_HOME is not None, "CI has the CUDA toolkit"
    wrapper(tmp_path / "wrap", Path(REAL_CUDA_HOME) / "bin" / "nvcc")
    home, how = _build.find_cuda_home({"PATH": str(tmp_path / "wrap")})
    assert home is not None and Path(home).resolve() == Path(REAL_CUDA_HOME).resolve(), how


def test_arch_list_without_a_gpu_is_explicit_and_a_users_is_kept():
    archs, _ = _build.cuda_arch_list({}, visible_gpus=0)
    assert archs == _build.DEFAULT_CUDA_ARCHS and "8.0" in archs and "9.0" in archs and archs.endswith("+PTX")
    assert _build.cuda_arch_list({"TORCH_CUDA_ARCH_LIST": "8.6"}, visible_gpus=0)[0] is None
    assert _build.cuda_arch_list({}, visible_gpus=1)[0] is None  # torch builds for the visible GPU


def test_a_stamp_from_another_torch_is_refused():
    now = _build.stamp(torch)
    assert _build.stamp_mismatch(now, now) is None
    assert "9.9.9" in _build.stamp_mismatch({**now, "torch": "9.9.9"}, now)
    assert "another build" in _build.stamp_mismatch({**now, "torch_git": "0" * 40}, now)
    assert _build.stamp_mismatch({"torch": None}, now) is not None


# ---------------------------------------------------------------------------------------------------------
# The installed build
# ---------------------------------------------------------------------------------------------------------


def test_the_installed_parts_are_built_for_this_torch():
    """What setup.py built matches the running torch; CI (which has a compiler and, with a CUDA torch, a toolkit)
    must have built every part it could: the CPU part always, the CUDA part whenever torch is a CUDA build."""
    info = _ext.build_info()
    assert info is not None, "no fastdiff/_build_info.json: the install did not run setup.py's build"
    assert _build.stamp_mismatch(info, _build.stamp(torch)) is None
    for part in info["built"]:
        assert backends.install_reasons(part) == (), backends.install_reasons(part)
    for part, reason in info["not_built"].items():
        assert reason and backends.install_reasons(part), part  # a part not built says why, and is unavailable
    if IN_CI:
        assert "cpu" in info["built"], info["not_built"]
        if torch.version.cuda is not None:
            assert "cuda" in info["built"], info["not_built"]


def fastdiff_ops() -> set[str]:
    """The ops of the one C++ op library, `fastdiff` (defined by the CPU part), as the dispatcher lists them."""
    return {name.split("::")[1] for name in torch._C._dispatch_get_all_op_names() if name.startswith("fastdiff::")}


@pytest.mark.skipif(torch.version.cuda is None, reason="the CUDA part exists only with a CUDA build of torch")
def test_the_cuda_part_imports_and_registers_every_op_without_a_gpu():
    """The CUDA part loads (after the CPU part, which defines the ops) and gives every op of the `fastdiff` library
    a CUDA kernel beside its CPU kernel, so the dispatcher picks one by device; stream_words is a CPU-only test op."""
    assert backends.install_reasons("cuda") == ()
    names = fastdiff_ops()
    assert {"euler_step", "heun_step", "multistep_step", "combine", "churn", "skip_mix", "randn", "loss_input", "loss_error",
            "churn_out", "euler_step_out", "heun_step_out", "multistep_step_out", "combine_out", "skip_mix_out",
            "stream_words"} <= names
    for name in sorted(names):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastdiff::{name}", "CPU"), name
        if name != "stream_words":
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastdiff::{name}", "CUDA"), name


@pytest.mark.skipif(torch.version.cuda is None, reason="the CUDA part exists only with a CUDA build of torch")
def test_without_the_cpu_part_the_cuda_part_is_unavailable_and_says_why(tmp_path):
    """The CUDA part only implements the ops the CPU part defines: when the CPU part cannot be loaded, the cuda
    backend is unavailable too, with the CPU part's reason, and nothing of the CUDA part is loaded."""
    code = """
import json, sys, torch
from fastdiff import _ext, backends
installed = _ext.prebuilt_problem
_ext.prebuilt_problem = lambda part: "forced by the fastdiff test" if part == "cpu" else installed(part)
print(json.dumps({"cpu": backends.info()["cpu"], "cuda": backends.info()["cuda"],
                  "loaded": sorted(name for name in sys.modules if name.startswith("fastdiff._C"))}))
"""
    env = dict(os.environ, FASTDIFF_CACHE=str(tmp_path / "cache"))
    env.pop("FASTDIFF_BUILD", None)
    done = run([sys.executable, "-c", code], env=env)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["cpu"]) == 1 and "forced by the fastdiff test" in result["cpu"][0]
    assert len(result["cuda"]) == 1 and "forced by the fastdiff test" in result["cuda"][0], result["cuda"]
    assert "CPU part" in result["cuda"][0] and "fastdiff._C_cuda" in result["cuda"][0]
    assert result["loaded"] == []


def test_a_part_built_from_other_sources_is_not_loaded(monkeypatch):
    """In a source checkout whose csrc/ changed since the editable install built it, the part is stale: refused."""
    info = _ext.build_info()
    monkeypatch.setattr(_ext, "build_info", lambda: {**info, "sources": "0" * 16})
    assert "was built from other C++ sources" in _ext.prebuilt_problem("cpu")
    monkeypatch.setattr(_ext, "build_info", lambda: {**info, "sources": _build.sources_hash(_build.source_root(_ext.PACKAGE_DIR))})
    assert _ext.prebuilt_problem("cpu") is None


def python_with_torch_patched(code: str, patch: str, env=None, cwd=None):
    """Run `code` in a fresh interpreter after `patch` changed what torch says it is, before fastdiff loads."""
    return subprocess.run([sys.executable, "-c", f"import torch\n{patch}\n{code}"], capture_output=True, text=True,
                          timeout=900, env=env, cwd=cwd)


CHECK_CPU_BACKEND = """
import fastdiff, json
from fastdiff import backends
x = torch.linspace(-1, 1, 37)
result = {"reasons": backends.info()["cpu"]}
try:
    fastdiff.ops.euler_step(x, 0.5 * x, 2.0, 1.0, backend="cpu")
    result["named"] = "ran"
except backends.BackendUnavailableError as error:
    result["named"] = str(error)
result["auto"] = float(fastdiff.ops.euler_step(x, 0.5 * x, 2.0, 1.0).sum())
print(json.dumps(result))
"""


@pytest.mark.parametrize("patch, says", [
    ("torch.__version__ = '9.9.9'", "was built against torch"),
    ("torch.version.git_version = 'f' * 40", "another build of torch"),
])
def test_a_part_built_for_another_torch_is_not_loaded(tmp_path, patch, says):
    """After a torch upgrade the installed part is not imported (no crash, no wrong ABI): the named backend refuses
    with one message that says how to rebuild, and auto runs on another backend."""
    env = dict(os.environ, FASTDIFF_CACHE=str(tmp_path / "cache"))
    env.pop("FASTDIFF_BUILD", None)
    done = python_with_torch_patched(CHECK_CPU_BACKEND, patch, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(result["reasons"]) == 1 and says in result["reasons"][0]
    assert "python -m fastdiff build" in result["reasons"][0]
    assert "cannot run" in result["named"] and "python -m fastdiff build" in result["named"]
    x = torch.linspace(-1, 1, 37)
    assert result["auto"] == pytest.approx(float(fastdiff.ops.euler_step(x, 0.5 * x, 2.0, 1.0, backend="reference").sum()))


def copy_tree(dest: Path) -> Path:
    """A copy of what a source checkout installs from, without anything built."""
    dest.mkdir(parents=True)
    for name in ("setup.py", "README.md"):
        shutil.copy(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("*.so", "_build_info.json", "__pycache__", "*.egg-info", "build")
    for name in ("fastdiff", "csrc"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    return dest


def python_in(site: Path, code: str, env=None):
    """Run `code` with `site` (a pip --target folder) first on sys.path."""
    return subprocess.run([sys.executable, "-c", f"import sys\nsys.path.insert(0, {str(site)!r})\n{code}"],
                          capture_output=True, text=True, timeout=900, env=env, cwd=site.parent)


def test_the_usual_pip_install_says_how_to_build_and_fastdiff_build_does(tmp_path):
    """`pip install .` with pip's default build isolation builds without the user's torch, so no C++ part: the cpu
    backend says so in one message naming `fastdiff build`; that command compiles the part from the sources the
    wheel ships, and the next process loads it and computes what the reference computes."""
    src = copy_tree(tmp_path / "src")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path / "dist"), "."], cwd=src)
    (wheel,) = (tmp_path / "dist").glob("fastdiff-*.whl")
    site = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), str(wheel)])
    env = dict(os.environ, FASTDIFF_CACHE=str(tmp_path / "cache"))
    env.pop("FASTDIFF_BUILD", None)
    before = python_in(site, "import torch\n" + CHECK_CPU_BACKEND, env=env)
    assert before.returncode == 0, before.stderr[-3000:]
    result = json.loads(before.stdout.strip().splitlines()[-1])
    assert len(result["reasons"]) == 1 and "isolated build" in result["reasons"][0], result["reasons"]
    assert "python -m fastdiff build" in result["named"]
    built = python_in(site, "from fastdiff.cli import main\nraise SystemExit(main(['build', '--part', 'cpu']))", env=env)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-3000:]
    assert "done in" in built.stdout and str(tmp_path / "cache") in built.stdout
    after = python_in(site, "import torch\n" + CHECK_CPU_BACKEND, env=env)
    assert after.returncode == 0, after.stderr[-3000:]
    result = json.loads(after.stdout.strip().splitlines()[-1])
    assert result["reasons"] == [] and result["named"] == "ran"
    info = python_in(site, "from fastdiff.cli import main\nmain(['info'])", env=env).stdout
    assert "cpu: loaded from the `fastdiff build` cache" in info


# ---------------------------------------------------------------------------------------------------------
# A part that fails to build never fails the install
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken_tree(tmp_path_factory):
    """A copy of the source tree whose every C++/CUDA source has a compile error."""
    src = copy_tree(tmp_path_factory.mktemp("broken") / "src")
    for source in [*(src / "csrc").rglob("*.cpp"), *(src / "csrc").rglob("*.cu")]:
        source.write_text(source.read_text() + "\n#error forced by the fastdiff test\n")
    return src


def assert_failure_recorded(info: dict):
    assert info["built"] == []
    assert "forced by the fastdiff test" in info["not_built"]["cpu"]
    if torch.version.cuda is not None and REAL_CUDA_HOME is not None:
        assert "forced by the fastdiff test" in info["not_built"]["cuda"]


def test_a_failed_build_still_installs_editable_and_says_why(broken_tree, tmp_path):
    run([sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-I", "-e", ".",
         "--prefix", str(tmp_path / "prefix")], cwd=broken_tree)
    assert_failure_recorded(json.loads((broken_tree / "fastdiff" / "_build_info.json").read_text()))
    assert not list((broken_tree / "fastdiff").glob("_C*.so"))
    info = run([sys.executable, "-m", "fastdiff", "info"], cwd=broken_tree).stdout  # the copy, first on sys.path
    assert "not built at install: cpu: the build failed" in info and "forced by the fastdiff test" in info
    assert "cpu        unavailable" in info


def test_a_failed_build_still_makes_a_wheel_that_says_why_and_ships_the_sources(broken_tree, tmp_path):
    run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "--no-index", "-w",
         str(tmp_path / "dist"), "."], cwd=broken_tree)
    (wheel,) = (tmp_path / "dist").glob("fastdiff-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert_failure_recorded(json.loads(archive.read("fastdiff/_build_info.json")))
    assert not [n for n in names if n.startswith("fastdiff/_C")]
    assert "fastdiff/_csrc/bindings.cpp" in names and "fastdiff/_csrc/cuda/kernels.cu" in names  # for `fastdiff build`
    assert "fastdiff/ops/kernels/euler_step.py" in names
