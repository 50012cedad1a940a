"""benchmarks/bench_quality.py in a small run (two solvers, tiny n): every setting has a row within its NFE budget,
the printed table, the CSV, the markdown and the JSON agree, the numbers are in range, and the plot is a valid PNG.
Never a timing (the throughput is only checked to be there and positive)."""
import csv
import json
import subprocess
import sys
from pathlib import Path

from fastdiff.imagefiles import read_png

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quality_small_run(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_quality.py"), "--solvers", "heun,dpmpp_2m",
                          "--nfe", "4,8", "--num-samples", "12", "--guidance", "1,2", "--churn", "40",
                          "--throughput-nfe", "4", "--throughput-batch", "4", "--quick", "--out", str(tmp_path)],
                         check=True, cwd=tmp_path, capture_output=True, text=True)
    data = json.loads((tmp_path / "bench_quality.json").read_text())
    rows, throughput = data["rows"], data["throughput"]
    assert [(r["series"], r["steps"]) for r in rows] == [
        ("heun", 2), ("heun", 4), ("dpmpp_2m", 4), ("dpmpp_2m", 8), ("heun+churn 40", 2), ("heun+churn 40", 4),
        ("heun w=1", 4), ("heun w=2", 4)]
    budgets = [4, 8, 4, 8, 4, 8, 8, 8]  # the guided rows run at the middle budget
    for row, budget in zip(rows, budgets):
        assert 1 <= row["nfe"] <= budget
        assert row["fd"] >= 0 and row["floor"] > 0 and 0 <= row["accuracy"] <= 1
        assert abs(row["fd_over_floor"] - row["fd"] / row["floor"]) <= 1e-9 * row["fd_over_floor"]
    assert len({r["floor"] for r in rows}) == 1  # one n, one floor
    assert [r["nfe"] for r in rows[:4]] == [3, 7, 4, 8]  # heun: 2N - 1; dpmpp_2m: N
    assert [t["solver"] for t in throughput] == ["heun", "dpmpp_2m"] and throughput[0]["ratio"] == 1.0
    assert all(t["images_per_s"] > 0 for t in throughput)

    lines = run.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("series")) + 1
    printed = lines[start:lines.index("", start)]  # the table: series in 22 columns, then the numbers
    assert len(printed) == len(rows)
    for line, row in zip(printed, rows):
        nfe, steps, fd, floor, spread, ratio, accuracy = line[22:].split()
        assert line[:22].strip() == row["series"] and int(nfe) == row["nfe"] and int(steps) == row["steps"]
        assert abs(float(fd) - row["fd"]) <= 1e-3 and abs(float(floor) - row["floor"]) <= 1e-3
        assert abs(float(ratio) - row["fd_over_floor"]) <= 0.01 and abs(float(accuracy) - row["accuracy"]) <= 1e-3
    with open(tmp_path / "bench_quality.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["series"] for r in table] == [r["series"] for r in rows]
    assert all(float(c["fd"]) == r["fd"] for c, r in zip(table, rows))
    markdown = (tmp_path / "bench_quality.md").read_text().splitlines()
    assert markdown[0].startswith("| series | solver | nfe")
    assert [m.split(" | ")[0][2:] for m in markdown[2:2 + len(rows)]] == [r["series"] for r in rows]
    assert markdown[2 + len(rows)] == "" and "images/s" in "\n".join(markdown[2 + len(rows):])
    image = read_png(tmp_path / "bench_quality.png")
    assert image.shape[2] == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert len({tuple(p) for p in image.reshape(-1, 3)}) > 3  # axes, floor and coloured lines were drawn
