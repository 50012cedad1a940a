"""benchmarks/bench_solvers.py in a small run: every solver and budget has a row within its NFE budget, the
deterministic solvers an ODE error, and more evaluations bring the samples closer to the mixture. Never a timing."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_solvers_rows(tmp_path):
    solvers = ["heun", "euler_ancestral", "dpm_2", "dpmpp_sde", "dpmpp_3m_sde", "lms"]
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_solvers.py"), "--solvers", ",".join(solvers),
                    "--nfe", "8,32", "--samples", "512", "--out", str(tmp_path)], check=True, cwd=tmp_path)
    rows = json.loads((tmp_path / "bench_solvers.json").read_text())["rows"]
    assert [r["solver"] for r in rows] == [s for s in solvers for _ in (8, 32)]
    assert all(r["nfe"] <= budget for r, budget in zip(rows, [8, 32] * len(solvers)))
    for solver in solvers:
        few, many = [r for r in rows if r["solver"] == solver]
        assert many["ring_sw_over_floor"] < few["ring_sw_over_floor"], (solver, few, many)
        assert (few["ode_error"] is None) == (solver not in ("heun", "dpm_2", "lms"))
        if few["ode_error"] is not None:
            assert many["ode_error"] < few["ode_error"]
