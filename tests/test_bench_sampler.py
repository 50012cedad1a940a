"""benchmarks/bench_sampler.py --quick: fastdiff, k-diffusion's real sample_heun and diffusers' HeunDiscreteScheduler
loop sample the same points with the same net and sigmas (no timing is checked)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("k-diffusion sample_heun", "diffusers HeunDiscreteScheduler")


def test_quick_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FASTDIFF_BACKEND"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_sampler.py"), "--quick", "--out",
                          str(tmp_path)], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, f"bench_sampler.py --quick failed:\n{run.stdout}\n{run.stderr}"
    result = json.loads((tmp_path / "bench_sampler.json").read_text())
    assert result["quick"] and result["steps"] == 4 and result["points"] == 1024
    names = set(result["seconds"])
    assert {"fastdiff.sample, backend reference", *PEERS} <= names, names
    for name in PEERS:  # the same sampler on the same inputs: equal to float32 rounding
        assert result["max_abs_difference_vs_reference"][name] <= 1e-4, (name, result["max_abs_difference_vs_reference"])
        assert name in run.stdout
    assert "pattern" not in run.stdout  # no hand-written re-creation of a peer


def test_churn_has_no_diffusers_row(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_sampler.py"), "--quick", "--churn", "10",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={k: v for k, v in os.environ.items() if k != "FASTDIFF_BACKEND"})
    assert run.returncode == 0, run.stderr
    result = json.loads((tmp_path / "bench_sampler.json").read_text())
    assert "k-diffusion sample_heun" in result["seconds"]
    assert "diffusers HeunDiscreteScheduler" not in result["seconds"]
    assert "has no churn" in run.stdout
