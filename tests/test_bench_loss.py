"""benchmarks/bench_loss.py --quick: every row of its tables is there, its JSON has the expected fields, the fused loss
agrees with the reference, and the fused path's bytes per element are the model's 36.

Properties of rows, checks and byte counts only, never of timings.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastdiff import backends

ROOT = Path(__file__).resolve().parents[1]
TIMED = ("EDM-style eager", "torch.compile(EDM-style eager)", "fastdiff reference", "fused (C++ cpu)", "device copy",
         "device copy, new output")
STAGES = ("  C++ cpu: loss_input", "  C++ cpu: loss_error", "  C++ cpu: sum", "  C++ cpu: backward")
SKIPPED = ("fused (triton)", "fused (C++ cuda)")  # no CUDA device in these tests' runs: rows that say why
COUNTED = ("EDM-style eager", "fastdiff reference", "fused (C++ cpu)", "fused kernels (model)")
CASES = ("mixture MLP", "images U-Net")
FUSED_BYTES = 36.0  # loss_input 8 + loss_error 16 + backward 12 (fp32)

pytestmark = [
    pytest.mark.skipif(bool(backends.reasons("cpu", torch.empty(1), (torch.empty(1),))),
                       reason="the C++ CPU backend is not built here"),
    pytest.mark.skipif(torch.cuda.is_available(), reason="the expected rows are those of a CPU run"),
]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """(stdout, parsed JSON, output directory) of one --quick run writing into a temporary directory."""
    out = tmp_path_factory.mktemp("bench_loss")
    env = {k: v for k, v in os.environ.items() if k != "FASTDIFF_BACKEND"}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_loss.py"), "--quick", "--out", str(out)],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert run.returncode == 0, f"bench_loss.py --quick failed:\n{run.stdout}\n{run.stderr}"
    for name in ("bench_loss_work.csv", "bench_loss_time.csv", "bench_loss_train.csv", "bench_loss.json"):
        assert (out / name).is_file(), f"{name} was not written"
    return run.stdout, json.loads((out / "bench_loss.json").read_text()), out


def _row_line(lines, size: int, label: str) -> str | None:
    """The table line of `label` at `size` (labels are matched as whole columns, stage rows with their indent)."""
    for line in lines:
        if line.split()[:1] == [f"{size:,}"] and f" {label} " in line:
            return line
    return None


def test_table_has_every_row(quick_run):
    stdout, result, _ = quick_run
    sizes = sorted({row["size"] for row in result["timings"]})
    assert sizes == [12_288, 49_152]  # --quick: 4x3x32x32 and 16x3x32x32
    lines = stdout.splitlines()
    for size in sizes:
        for label in TIMED + STAGES + SKIPPED + COUNTED:
            assert _row_line(lines, size, label) is not None, f"no row for {label!r} at {size:,} in:\n{stdout}"
        for label in SKIPPED:
            assert "skipped:" in _row_line(lines, size, label)  # and it says why
    for case in CASES:
        for backend in ("reference", "cpu (fused)"):
            assert any(line.startswith(case) and backend in line for line in lines), \
                f"no training row for {case} / {backend} in:\n{stdout}"
    assert "checks passed: True" in stdout


def test_json_has_the_expected_fields(quick_run):
    _, result, out = quick_run
    meta = result["meta"]
    for key in ("torch", "fastdiff", "python", "device", "device_name", "cpu_count", "cpu_threads", "load_average_at_start",
                "date", "repeats", "budget_seconds", "shapes", "fused_backends", "skipped_backends", "fused_model",
                "fused_model_bytes_per_element", "tolerance", "checks_passed", "total_seconds", "train"):
        assert key in meta, f"meta has no {key!r}"
    assert meta["device"] == "cpu" and meta["fused_backends"] == ["cpu"]
    assert set(meta["skipped_backends"]) == {"triton", "cuda"} and all(meta["skipped_backends"].values())
    timings = {(row["size"], row["implementation"]): row for row in result["timings"]}
    for size in {row["size"] for row in result["timings"]}:
        for label in TIMED + STAGES:
            row = timings[size, label]
            assert row["seconds"] is not None and row["repeats"] >= 1, row  # measured (its value is not checked)
            for key in ("min_seconds", "number", "bytes_per_element", "bytes_source", "gbps", "fraction_of_copy",
                        "speedup_vs_eager", "speedup_vs_compile", "shape"):
                assert key in row, f"{label} @ {size} has no {key!r}"
        for label in SKIPPED:
            assert timings[size, label]["seconds"] is None and timings[size, label]["note"].startswith("skipped")
        for label in ("EDM-style eager", "torch.compile(EDM-style eager)", "fastdiff reference", "fused (C++ cpu)"):
            assert timings[size, label]["speedup_vs_eager"] is not None and timings[size, label]["speedup_vs_compile"] is not None
        assert timings[size, "torch.compile(EDM-style eager)"]["compile_seconds"] is not None
    training = {(row["case"], row["backend"]): row for row in result["training"]}
    assert set(training) == {(case, backend) for case in CASES for backend in ("reference", "cpu")}
    for row in training.values():
        for key in ("seconds", "repeats", "batch", "shape", "parameters", "images_per_second", "speedup_vs_reference"):
            assert row[key] is not None, f"training row {row['case']} / {row['backend']} has no {key!r}"
    assert result["work"] and all(row["bytes_per_element"] > 0 for row in result["work"])


def test_fused_agrees_with_the_reference(quick_run):
    _, result, _ = quick_run
    checks, tolerance = result["checks"], result["meta"]["tolerance"]
    assert tolerance <= 1e-4
    assert result["meta"]["checks_passed"] is True
    for size in (12_288, 49_152):
        for name in ("fused (C++ cpu) vs fastdiff reference", "EDM-style eager on fastdiff's noise vs fastdiff reference",
                     "torch.compile vs EDM-style eager on the noise it drew"):
            assert checks[f"{name} @ {size}"] <= tolerance, (name, size, checks)
    for case in CASES:
        assert checks[f"training loss at step 1, cpu vs reference: {case}"] <= tolerance


def test_fused_bytes_are_the_model(quick_run):
    _, result, _ = quick_run
    assert result["meta"]["fused_model_bytes_per_element"] == FUSED_BYTES
    work = {(row["size"], row["implementation"]): row for row in result["work"]}
    for row in result["timings"]:
        if row["implementation"] in ("fused (C++ cpu)",) + SKIPPED:
            assert row["bytes_per_element"] == FUSED_BYTES and row["bytes_source"] == "model", row
        if row["implementation"] == "fused (C++ cpu)":
            # The op-by-op count of the fused calls (their kernels, the sum left out) is the model less the upstream
            # gradient's 4 B: after loss.sum() it is a stride-0 expansion of one value, read for free.
            assert row["measured_bytes_per_element"] == FUSED_BYTES - 4, row
            measured = work[row["size"], "fused (C++ cpu)"]
            assert (measured["bytes_loss_input"], measured["bytes_loss_error"]) == (8.0, 16.0)
            assert measured["launches_loss_input"] == measured["launches_loss_error"] == 1
            assert measured["syncs"] == 0
            eager = work[row["size"], "EDM-style eager"]
            assert eager["bytes_per_element"] > FUSED_BYTES  # the unfused formula moves more
