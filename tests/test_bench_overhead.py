"""benchmarks/bench_overhead.py --quick: every size, solver and implementation has a row, and fastdiff's results agree
with k-diffusion's own samplers fed the same noise. Never a timing.

k-diffusion is part of the test set-up (the README's test command installs it with --no-deps); without it these
tests fail with the install command, they do not skip.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from fastdiff.testing import K_DIFFUSION_VERSION, k_diffusion_sampling

ROOT = Path(__file__).resolve().parents[1]
SOLVERS = ("heun", "heun churn", "euler_ancestral", "dpmpp_2m")
IMPLEMENTATIONS = ("k-diffusion", "fastdiff reference", "fastdiff cpu", "fastdiff cpu reuse_buffers")


def test_k_diffusion_sampling_is_the_installed_file_without_its_package():
    """The loader runs the installed k_diffusion/sampling.py itself, and imports neither k-diffusion's package
    (its __init__ pulls torchvision and more) nor torchvision."""
    import importlib.metadata
    import importlib.util
    import inspect

    sampling = k_diffusion_sampling()
    assert importlib.metadata.version("k-diffusion") == K_DIFFUSION_VERSION
    installed = Path(importlib.util.find_spec("k_diffusion").origin).parent / "sampling.py"
    assert Path(sampling.__file__) == installed
    assert inspect.unwrap(sampling.sample_heun).__code__.co_filename == str(installed)  # under torch.no_grad()
    assert k_diffusion_sampling() is sampling  # loaded once
    x = torch.zeros(2, 3)
    assert sampling.utils.append_dims(torch.ones(2), 3).shape == (2, 1, 1)
    assert torch.equal(sampling.to_d(x + 2, torch.tensor([1.0, 2.0]), x), torch.tensor([[2.0] * 3, [1.0] * 3]))
    code = ("import sys; from fastdiff.testing import k_diffusion_sampling; k_diffusion_sampling(); "
            "print(sorted(m for m in ('k_diffusion', 'torchvision', 'wandb') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_quick_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FASTDIFF_BACKEND"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_overhead.py"), "--quick", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert run.returncode == 0, f"bench_overhead.py --quick failed:\n{run.stdout}\n{run.stderr}"
    result = json.loads((tmp_path / "bench_overhead.json").read_text())
    sizes = result["meta"]["quick"] and ["1x3x8x8", "2x4x16x16"]
    rows = {(r["size"], r["solver"], r["implementation"]): r for r in result["rows"]}
    assert set(rows) == {(s, solver, impl) for s in sizes for solver in SOLVERS for impl in IMPLEMENTATIONS}
    for (size, solver, impl), row in rows.items():
        assert row["seconds"] > 0 and row["n"] >= 3
        assert f"{size:<14} {solver:<16} {impl:<27}" in run.stdout
        if impl == "k-diffusion":
            assert row["max_relative_difference"] is None
        else:  # same schedule, same noise: float32 rounding apart
            assert row["agrees"] and row["max_relative_difference"] <= result["meta"]["agree"] == 1e-4, row
    assert {(r["size"], r["solver"]) for r in result["reuse"]} == {(s, solver) for s in sizes for solver in SOLVERS}
    assert "WARNING" not in run.stdout
