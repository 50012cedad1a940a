"""benchmarks/bench_step.py --quick: its table has every row, and the work it reports has the model's properties.

These are properties of counts and models, never of timings: the eager reference does real work and never
syncs, k-diffusion's pattern syncs on its `if`s, and the fused step is at most 3 launches and 40 bytes/element.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMPLEMENTATIONS = ("eager reference", "k-diffusion pattern", "fused (triton), out", "fused (C++ cpu), out")
TIMED = ("eager reference", "k-diffusion pattern", "fused (C++ cpu), out", "torch.compile(reference), out", "device copy")
NOISE = ("eager x + s * randn_like(x)", "torch.compile(eager)", "fastdiff reference churn", "fastdiff C++ cpu churn")
OPS = ("churn", "euler_step", "heun_step", "step")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """(stdout, parsed JSON) of one --quick run writing into a temporary directory."""
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if k != "FASTDIFF_BACKEND"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_step.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, f"bench_step.py --quick failed:\n{run.stdout}\n{run.stderr}"
    for name in ("bench_step_work.csv", "bench_step_time.csv", "bench_step.json"):
        assert (out / name).is_file(), f"{name} was not written"
    return run.stdout, json.loads((out / "bench_step.json").read_text())


def test_table_has_every_row(quick_run):
    stdout, result = quick_run
    sizes = sorted({row["size"] for row in result["timings"]})
    assert len(sizes) >= 1
    lines = stdout.splitlines()
    for implementation in IMPLEMENTATIONS:
        for op in OPS:
            assert any(line.startswith(implementation) and line.split()[len(implementation.split())] == op for line in lines), \
                f"no work row for {implementation} / {op} in:\n{stdout}"
    for size in sizes:
        for implementation in TIMED + ("fused (triton), out",) + NOISE:
            assert any(line.split()[:1] == [f"{size:,}"] and implementation in line for line in lines), \
                f"no time row for {implementation} at {size:,} elements in:\n{stdout}"
    timed = {(row["size"], row["implementation"]) for row in result["timings"] if row["seconds"] is not None}
    assert {(size, implementation) for size in sizes for implementation in TIMED} <= timed


def test_work_counts_have_the_model_properties(quick_run):
    _, result = quick_run
    work = {(row["size"], row["implementation"], row["op"]): row for row in result["work"]}
    for size in {row["size"] for row in result["work"]}:
        reference = work[size, "eager reference", "step"]
        assert reference["source"] == "measured"
        assert reference["launches"] > 0 and reference["bytes_per_element"] > 0
        assert reference["syncs"] == 0  # the sampler's step never waits for the device
        assert work[size, "k-diffusion pattern", "step"]["syncs"] >= 1  # its Python `if`s on tensor sigmas
        for fused in (work[size, "fused (triton), out", "step"], work[size, "fused (C++ cpu), out", "step"]):
            assert fused["source"] == "model"
            assert fused["launches"] <= 3 and fused["bytes_per_element"] <= 40
        for implementation in IMPLEMENTATIONS:
            parts = [work[size, implementation, op] for op in OPS[:-1]]
            step = work[size, implementation, "step"]
            assert step["launches"] == sum(p["launches"] for p in parts)
            assert step["bytes_per_element"] == pytest.approx(sum(p["bytes_per_element"] for p in parts))
