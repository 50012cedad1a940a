"""benchmarks/bench_graph.py --quick: every sampler has a row, and the counts have the properties the design claims.

Counts, never timings: k-diffusion's own sample_heun syncs on its `if`s every step, fastdiff's loops only once per call
(the non-finite report after the loop), and the graph holds the eager loop's kernels.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FASTDIFF_BACKEND"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_graph.py"), "--quick", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, f"bench_graph.py --quick failed:\n{run.stdout}\n{run.stderr}"
    result = json.loads((tmp_path / "bench_graph.json").read_text())
    rows = {row["sampler"]: row for row in result["rows"]}
    assert {"k-diffusion sample_heun", "diffusers Heun", "eager reference", "fastdiff eager",
            "graphed (emulated)"} <= set(rows), rows
    steps = result["steps"]
    assert rows["k-diffusion sample_heun"]["syncs_per_call"] >= 2 * steps  # churn-range test and last-step test
    for name in ("eager reference", "fastdiff eager", "graphed (emulated)"):
        assert rows[name]["syncs_per_call"] == 1, rows[name]  # the non-finite report, after the loop
    eager, graph = rows["fastdiff eager"]["launches_per_step"], rows["graphed (emulated)"]["launches_per_step"]
    assert graph <= eager + 3 / steps, (graph, eager)  # at most randn, where and the output copy more per call
    assert rows["eager reference"]["launches_per_step"] > eager  # the fused step ops replace the reference's
    for row in result["rows"]:
        assert row["seconds"] is None  # --quick times nothing
        assert row["sampler"] in run.stdout
