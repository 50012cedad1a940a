"""benchmarks/bench_step.py --quick: its table has every row, and the work it reports has the model's properties.

These are properties of counts and models, never of timings: the eager reference does real work and never
syncs, k-diffusion's sample_heun syncs on its `if`s, and the fused step is at most 3 launches and 40 bytes/element.
The k-diffusion row is k-diffusion's own sample_heun (not a re-creation), and it agrees with the eager reference
when given the reference's noise.
"""
import importlib.util
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastdiff.testing import K_DIFFUSION_VERSION, k_diffusion_sampling

ROOT = Path(__file__).resolve().parents[1]
KDIFFUSION = "k-diffusion sample_heun"
IMPLEMENTATIONS = ("eager reference", KDIFFUSION, "fused (triton), out", "fused (C++ cpu), out")
TIMED = ("eager reference", KDIFFUSION, "fused (C++ cpu), out", "torch.compile(reference), out", "device copy")
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
        # its Python `if`s on tensor sigmas: the chained range test of the churn (2) and `if sigmas[i + 1] == 0`
        assert work[size, KDIFFUSION, "step"]["syncs"] == 3
        for fused in (work[size, "fused (triton), out", "step"], work[size, "fused (C++ cpu), out", "step"]):
            assert fused["source"] == "model"
            assert fused["launches"] <= 3 and fused["bytes_per_element"] <= 40
        for implementation in IMPLEMENTATIONS:
            parts = [work[size, implementation, op] for op in OPS[:-1]]
            step = work[size, implementation, "step"]
            assert step["launches"] == sum(p["launches"] for p in parts)
            assert step["bytes_per_element"] == pytest.approx(sum(p["bytes_per_element"] for p in parts))


def test_k_diffusion_row_is_checked_against_the_reference(quick_run):
    _, result = quick_run
    sizes = {row["size"] for row in result["work"]}
    for size in sizes:
        difference = result["checks"][f"k-diffusion sample_heun (same noise) vs eager reference @ {size}"]
        assert difference <= 1e-4
    meta = result["meta"]["k_diffusion"]
    assert meta["version"] == K_DIFFUSION_VERSION and meta["function"] == "sample_heun"
    assert meta["file"] == k_diffusion_sampling().__file__
    assert meta["gamma"] == pytest.approx(2**0.5 - 1)  # S_churn 40 clamps both over 18 steps and over the slice


@pytest.fixture(scope="module")
def bench_step():
    """benchmarks/bench_step.py imported as a module."""
    spec = importlib.util.spec_from_file_location("bench_step_under_test", ROOT / "benchmarks" / "bench_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_k_diffusion_row_calls_k_diffusions_own_sample_heun(bench_step, monkeypatch):
    """The row's step function calls k_diffusion_sampling().sample_heun (the installed file's function) once, on this
    step's two sigma levels with the schedule's churn settings, and returns what it computes."""
    assert bench_step.LABELS["kdiffusion"] == KDIFFUSION
    sampling = k_diffusion_sampling()
    real = sampling.sample_heun
    installed = Path(importlib.util.find_spec("k_diffusion").origin).parent / "sampling.py"
    assert Path(inspect.getsourcefile(inspect.unwrap(real))) == installed
    calls = []

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_heun", spy)
    inputs = bench_step.make_inputs((2, 3, 4, 4), torch.device("cpu"))
    functions, _ = bench_step.step_functions(inputs, ["fused path not wanted here"])
    x_hat, x_next, out = functions["kdiffusion"]()
    assert len(calls) == 1
    (model, x, sigmas), kwargs = calls[0]
    i, schedule = bench_step.STEP_INDEX, bench_step.SCHEDULE
    assert x is inputs["x"]
    assert torch.equal(sigmas, inputs["t"][i:i + 2])
    assert kwargs == dict(s_churn=schedule["S_churn"], s_tmin=schedule["S_min"], s_tmax=schedule["S_max"],
                          s_noise=schedule["S_noise"], disable=True)
    # The result is Heun's step from the x_hat k-diffusion made, with the stand-in network's two outputs.
    t_hat, t_next = inputs["t_hat"][i], inputs["t"][i + 1]
    d = (x_hat - inputs["denoised"]) / t_hat
    torch.testing.assert_close(x_next, x_hat + d * (t_next - t_hat))
    d_2 = (x_next - inputs["denoised_next"]) / t_next
    torch.testing.assert_close(out, x_hat + (d + d_2) / 2 * (t_next - t_hat))
