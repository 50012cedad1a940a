"""`python -m fastdiff.check`: the dry run end to end (what CI runs), the plan's commands against the files and
flags that exist, the pytest plugin's choice of CUDA tests, and the runner on small fake steps: a failing step and
a timed-out one are recorded and the steps after them still run, the reports are rewritten after every step.
"""
import json
import os
import re
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from fastdiff import backends, check

ROOT = Path(__file__).resolve().parent.parent
PLAN = ["tests-fused-ops", "tests-fused-loss", "tests-cuda-other", "bench-step", "bench-graph", "bench-loss",
        "tests-codegen"]
# The test files the issue names as needing a GPU: each must be run whole or searched by the plugin.
GPU_TEST_FILES = ["test_fused_ops.py", "test_fused_loss.py", "test_graphed.py", "test_solvers.py", "test_ddpm.py",
                  "test_cli.py", "test_train.py", "test_triton_ptx.py", "test_cuda_build.py"]
PY = sys.executable


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """`python -m fastdiff.check --dry-run --out DIR`, run once: (the finished process, DIR, report.json, report.md)."""
    out = tmp_path_factory.mktemp("check") / "report"
    done = subprocess.run([PY, "-m", "fastdiff.check", "--dry-run", "--out", str(out)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, f"the dry run exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done, out, json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def test_dry_run_reports_the_plan_and_runs_nothing(dry_run):
    done, out, report, md = dry_run
    not_run = check.DRY if torch.cuda.is_available() else check.DRY_NO_GPU
    assert (report["schema"], report["mode"], report["status"]) == ("fastdiff.check/1", "dry run", "dry run")
    assert [s["name"] for s in report["steps"]] == PLAN
    assert sum(s["budget_seconds"] for s in report["steps"]) <= check.TOTAL_BUDGET - 30
    for step in report["steps"]:
        assert step["status"] == not_run, step
        assert step["returncode"] is None and step["duration_seconds"] is None
        assert step["dry_run_check"]["ok"], step["dry_run_check"]
        assert step["command_line"] in done.stdout  # the dry run prints exactly what a run would execute
        assert f"## {step['name']}: {not_run}" in md and step["command_line"] in md
    assert not list(out.glob("*.log")) and not [p for p in out.iterdir() if p.is_dir()]  # no step ran
    env = report["environment"]
    assert env["torch"] == torch.__version__ and env["cuda_available"] == torch.cuda.is_available()
    assert set(env["backends"]) == set(backends.BACKENDS) and env["fastdiff"] and env["python"]
    assert f"| torch | {torch.__version__}" in md and "## Environment" in md and "## Plan" in md
    assert report["summary"] == {"steps": {not_run: len(PLAN)}, "tests": {}}


def test_every_pytest_step_names_existing_tests_and_collects_some(dry_run):
    _, out, report, _ = dry_run
    searched, whole = False, set()
    for step in (s for s in report["steps"] if s["kind"] == "pytest"):
        command = step["command"]
        assert command[:3] == [PY, "-m", "pytest"] and "-p" in command and "fastdiff.check" in command
        assert f"--fastdiff-outcomes={out / (step['name'] + '.jsonl')}" in command
        assert f"--junitxml={out / (step['name'] + '.junit.xml')}" in command
        paths = [a for a in command[3:] if not a.startswith("-") and a not in ("no:cacheprovider", "fastdiff.check")]
        paths += [a.split("=", 1)[1] for a in command if a.startswith("--ignore=")]
        for path in paths:
            assert (ROOT / path).exists(), f"{step['name']}: {path} does not exist"
        whole |= {Path(p).name for p in paths if p.endswith(".py") and not any(a == f"--ignore={p}" for a in command)}
        searched |= "tests" in paths and "--fastdiff-cuda-only" in command
        assert step["dry_run_check"]["collected"] > 0
        collected = check.read_outcomes(out / f"{step['name']}.collect.jsonl")
        assert collected["collected"] == step["dry_run_check"]["collected"] and not collected["collection_errors"]
    assert searched and {"test_fused_ops.py", "test_fused_loss.py", "test_triton_ptx.py", "test_cuda_build.py"} <= whole
    assert all((ROOT / "tests" / name).exists() for name in GPU_TEST_FILES)


def help_options(scripts) -> dict:
    """script -> {--flag: its choices, or None when it takes no fixed set}, from `script --help`, run side by side."""
    running = {script: subprocess.Popen([PY, script, "--help"], cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True) for script in scripts}
    options = {}
    for script, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        options[script] = {flag: (set(choices.split(",")) if choices else None)
                           for flag, choices in re.findall(r"^\s+(--[\w-]+)(?: \{([^}]*)\})?", stdout, re.M)}
    return options


def test_every_benchmark_step_passes_flags_its_script_accepts(dry_run):
    _, out, report, _ = dry_run
    steps = {s["name"]: s["command"] for s in report["steps"] if s["kind"] == "benchmark"}
    assert set(steps) == {"bench-step", "bench-graph", "bench-loss"}
    accepted = help_options([command[1] for command in steps.values()])
    for name, command in steps.items():
        script = command[1]
        assert command[0] == PY and (ROOT / script).is_file()
        options = accepted[script]
        for index, arg in enumerate(command[2:], start=2):
            if arg.startswith("--"):
                assert arg in options, f"{name}: {script} has no {arg} (it has {sorted(options)})"
                if options[arg] is not None:
                    assert command[index + 1] in options[arg], f"{name}: {arg} {command[index + 1]}"
        assert command[command.index("--device") + 1] == "cuda"
        assert command[command.index("--out") + 1] == str(out / name)
    assert steps["bench-graph"][steps["bench-graph"].index("--batches") + 1] == "1,64"
    # The dry run's own flag check would catch a flag or a choice that its script does not take:
    help_text = "  --quick\n  --device {auto,cpu,cuda}\n"
    assert check.flag_problems(["--quick", "--device", "tpu", "--bogus"], help_text) == [
        "--device takes one of ['auto', 'cpu', 'cuda'], given tpu", "--bogus is not in its --help"]


def test_the_dry_run_check_fails_for_a_test_file_that_is_gone(tmp_path):
    """What keeps the plan honest in CI: a step whose tests were renamed away collects nothing, and fails its check."""
    [step] = check.select_steps(check.plan(tmp_path), "tests-fused-loss")
    gone = check.Step(step.name, "pytest", step.command, step.covers, step.budget,
                      tuple("tests/test_renamed_away.py" if a == "tests/test_fused_loss.py" else a for a in step.check))
    result = check.check_step(gone, tmp_path)
    assert not result["ok"] and "collected" in result["detail"] and not result["collected"]


def fake_item(function, params=None, marks=()):
    """What uses_cuda reads of a pytest item: its marks, its parametrization and its function."""
    item = types.SimpleNamespace(function=function, iter_markers=lambda: iter(marks))
    if params is not None:
        item.callspec = types.SimpleNamespace(params=params)
    return item


def mark(name, **kwargs):
    return types.SimpleNamespace(name=name, kwargs=kwargs)


def test_the_plugin_chooses_tests_that_name_cuda():
    def on_cpu(backend):
        return fastdiff_sample(cuda_graph=True, backend=backend, device="cpu")  # noqa: F821

    def to_device(x):
        return x.cuda()

    def on_device():
        return torch.zeros(1, device="cuda:1")

    def checks_availability():
        return torch.cuda.is_available()

    assert not check.uses_cuda(fake_item(on_cpu, {"backend": "cpu-1-thread"}))
    assert not check.uses_cuda(fake_item(on_cpu, {"argv": ["sample", "--backend", "cpu"], "kw": {"graph": "emulated"}}))
    assert not check.uses_cuda(fake_item(on_cpu, {"match": "graph: expected 'cuda' or 'emulated'"}))  # prose
    assert not check.uses_cuda(fake_item(on_cpu, marks=[mark("skipif", reason="the rows are those of a CPU run")]))
    assert not check.uses_cuda(fake_item(on_cpu, {"call": lambda: on_cpu("cpu")}))
    for function in (to_device, on_device, checks_availability):
        assert check.uses_cuda(fake_item(function)), function.__name__
    assert check.uses_cuda(fake_item(on_cpu, {"backend": "cuda"}))
    assert check.uses_cuda(fake_item(on_cpu, {"argv": ["sample", "--backend", "cuda"]}))
    assert check.uses_cuda(fake_item(on_cpu, {"kwargs": {"graph": "cuda"}}))
    assert check.uses_cuda(fake_item(on_cpu, {"device": torch.device("cuda", 0)}))
    assert check.uses_cuda(fake_item(on_cpu, {"call": lambda: on_cpu(backend="cuda")}))
    assert check.uses_cuda(fake_item(on_cpu, marks=[mark("skipif", reason="needs a CUDA device (real CUDA graphs)")]))
    assert check.uses_cuda(fake_item(on_cpu, marks=[mark("gpu")]))


def test_the_plugin_selection_collects_the_real_cuda_graph_tests():
    done = subprocess.run([PY, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-p", "fastdiff.check",
                           "--fastdiff-cuda-only", "tests/test_graphed.py", "tests/test_schedules.py"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    chosen = [line for line in done.stdout.splitlines() if "::" in line]
    counts = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", done.stdout)
    assert counts, done.stdout[-1000:]
    selected, total, deselected = map(int, counts.groups())
    assert selected == len(chosen) > 0 and deselected > 0 and selected + deselected == total
    assert not [n for n in chosen if n.startswith("tests/test_schedules.py")]  # no test there names CUDA
    source = (ROOT / "tests/test_graphed.py").read_text()
    real_graphs = re.findall(r"^@cuda\n(?:@.*\n)*def (test_\w+)", source, re.M)  # the file's skip-without-CUDA mark
    assert real_graphs, "tests/test_graphed.py no longer marks its real-CUDA-graph tests with @cuda: update this test"
    for name in real_graphs:
        assert [n for n in chosen if n.split("::")[1].split("[")[0] == name], f"{name} is not chosen"


def fake_step(name, code, budget=60.0, kind="benchmark"):
    return check.Step(name, kind, (PY, "-c", code), f"fake step {name}", budget)


def new_report(steps, out):
    return check.new_report(steps, out, "run", {"cuda_available": True, "devices": []}, ["--out", str(out)])


def test_failed_and_timed_out_steps_are_recorded_and_the_rest_still_run(tmp_path):
    report_path = tmp_path / check.REPORT_JSON
    so_far = ["passed", "failed", "timed out", "running"]
    reads_report = (f"import json, sys; r = json.load(open({str(report_path)!r})); "
                    f"sys.exit(0 if [s['status'] for s in r['steps']] == {so_far!r} else 7)")
    steps = [fake_step("ok", "print('hello')"),
             fake_step("fails", "import sys; print('boom'); sys.exit(3)"),
             fake_step("hangs", "import time; print('waiting', flush=True); time.sleep(60)", budget=1.5),
             fake_step("reads-the-report", reads_report)]  # the reports were rewritten after every step
    report = check.run_plan(steps, tmp_path, new_report(steps, tmp_path), echo=lambda *a: None)
    on_disk = json.loads(report_path.read_text())
    assert on_disk == json.loads(json.dumps(report))
    statuses = [s["status"] for s in on_disk["steps"]]
    assert statuses == ["passed", "failed", "timed out", "passed"], on_disk["steps"]
    ok, fails, hangs, last = on_disk["steps"]
    assert (ok["returncode"], fails["returncode"]) == (0, 3) and hangs["returncode"] == -signal.SIGTERM
    assert hangs["duration_seconds"] < 1.5 + check.KILL_GRACE + 5 and "killed after its 2 s budget" in hangs["note"]
    assert (tmp_path / "fails.log").read_text().strip() == "boom" and "waiting" in (tmp_path / "hangs.log").read_text()
    assert on_disk["status"] == "failed" and on_disk["finished"] is not None
    assert on_disk["summary"]["steps"] == {"passed": 2, "failed": 1, "timed out": 1}
    md = (tmp_path / check.REPORT_MD).read_text()
    assert md.startswith("# fastdiff GPU check: failed")
    assert "## fails: failed" in md and "## hangs: timed out" in md and "## reads-the-report: passed" in md


def test_the_total_budget_stops_the_run_and_says_so(tmp_path):
    steps = [fake_step("slow", "import time; time.sleep(60)", budget=30), fake_step("never", "print(1)")]
    report = check.run_plan(steps, tmp_path, new_report(steps, tmp_path), total_budget=check.KILL_GRACE + 2,
                            echo=lambda *a: None)
    assert [s["status"] for s in report["steps"]] == ["timed out", check.OUT_OF_TIME]
    assert report["steps"][0]["timeout_seconds"] == pytest.approx(2, abs=0.3)
    assert report["steps"][1]["returncode"] is None
    assert not (tmp_path / "never.log").exists()


def test_an_interrupted_run_stops_the_step_and_writes_the_reports(tmp_path):
    steps = [fake_step("first", "print(1)"),
             fake_step("kills-the-runner",
                       "import os, signal, time; os.kill(os.getppid(), signal.SIGTERM); time.sleep(60)"),
             fake_step("after", "print(2)")]
    previous = signal.signal(signal.SIGTERM, check._interrupt)
    try:
        report = check.run_plan(steps, tmp_path, new_report(steps, tmp_path), echo=lambda *a: None)
    finally:
        signal.signal(signal.SIGTERM, previous)
    on_disk = json.loads((tmp_path / check.REPORT_JSON).read_text())
    assert on_disk["status"] == report["status"] == "interrupted"
    assert [s["status"] for s in on_disk["steps"]] == ["passed", "interrupted", check.NOT_REACHED]
    assert "SIGTERM" in on_disk["steps"][1]["note"] and on_disk["steps"][1]["duration_seconds"] < 30


FAKE_TESTS = '''
import pytest

def test_passes():
    pass

def test_fails():
    assert 1 == 2, "one is not two"

@pytest.mark.skip(reason="not on this machine")
def test_skipped():
    pass

@pytest.fixture
def broken():
    raise RuntimeError("the fixture broke")

def test_errors(broken):
    pass

@pytest.mark.xfail(reason="known")
def test_expected_failure():
    assert False
'''


def test_a_pytest_step_records_each_tests_outcome(tmp_path):
    tests = tmp_path / "fake_tests.py"
    tests.write_text(FAKE_TESTS)
    out = tmp_path / "out"
    out.mkdir()
    [template] = [s for s in check.plan(out) if s.name == "tests-codegen"]
    command = tuple(a for a in template.command if not a.startswith("tests/")) + (str(tests),)
    step = check.Step("tests-codegen", "pytest", command, "fake tests", 120)
    report = check.run_plan([step], out, new_report([step], out), echo=lambda *a: None)
    [record] = report["steps"]
    assert record["status"] == "failed" and record["returncode"] == 1, (out / "tests-codegen.log").read_text()[-3000:]
    tests = record["tests"]
    assert tests["collected"] == 5 and not tests["unfinished"] and not tests["collection_errors"]
    assert tests["counts"] == {"passed": 1, "failed": 1, "skipped": 1, "error": 1, "xfailed": 1}
    results = {r["nodeid"].split("::")[-1]: r for r in tests["results"]}
    assert results["test_passes"]["message"] is None
    assert "one is not two" in results["test_fails"]["message"]
    assert "not on this machine" in results["test_skipped"]["message"]
    assert "setup" in results["test_errors"]["message"] and "the fixture broke" in results["test_errors"]["message"]
    assert (out / "tests-codegen.junit.xml").exists()
    md = (out / check.REPORT_MD).read_text()
    assert "one is not two" in md and "1 x Skipped: not on this machine" in md
    assert report["summary"]["tests"] == tests["counts"]


def test_outcomes_of_a_killed_pytest_run_are_kept(tmp_path):
    """A step killed mid-test: the finished tests' outcomes stay, the running test is named, a cut line is ignored."""
    path = tmp_path / "killed.jsonl"
    lines = [{"event": "collected", "count": 3}, {"event": "start", "nodeid": "t.py::a"},
             {"event": "result", "nodeid": "t.py::a", "outcome": "passed", "duration": 0.1, "message": None},
             {"event": "start", "nodeid": "t.py::b"}]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"event": "res')
    found = check.read_outcomes(path)
    assert found["collected"] == 3 and found["counts"] == {"passed": 1} and found["unfinished"] == ["t.py::b"]
    md = "\n".join(check._markdown_tests(found))
    assert "1 passed; 1 not reached" in md and "started, never finished: `t.py::b`" in md


def write_json_step(name, data):
    """A fake benchmark step that writes `data` where the real one writes its JSON."""
    def step(out):
        path = out / name / check.BENCH_READERS[name][0]
        return fake_step(name, f"import json, os; os.makedirs({str(path.parent)!r}, exist_ok=True); "
                               f"json.dump({data!r}, open({str(path)!r}, 'w'))")
    return step


def test_benchmark_tables_carry_their_ratios_and_checks_decide(tmp_path):
    graph = {"steps": 18, "nfe": 35, "parameters": 9.59e6, "rows": [
        {"batch": 1, "sampler": "k-diffusion sample_heun", "launches_per_step": 300.0, "syncs_per_call": 9, "seconds": 0.3},
        {"batch": 1, "sampler": "compiled net", "launches_per_step": 20.0, "syncs_per_call": 1, "seconds": 0.2},
        {"batch": 1, "sampler": "fastdiff graphed", "launches_per_step": 0.03, "syncs_per_call": 0, "seconds": 0.1}]}
    loss = {"meta": {"checks_passed": False}, "checks": {"fused (triton) vs fastdiff reference @ 786432": 0.5},
            "timings": [], "training": []}
    steps = [write_json_step("bench-graph", graph)(tmp_path), write_json_step("bench-loss", loss)(tmp_path),
             fake_step("bench-step", "print('wrote nothing')")]
    report = check.run_plan(steps, tmp_path, new_report(steps, tmp_path), echo=lambda *a: None)
    graph_step, loss_step, step_step = report["steps"]
    assert graph_step["status"] == "passed"
    [table] = graph_step["benchmark"]["tables"]
    graphed = table["rows"][2]
    assert graphed["speedup_vs_kdiffusion"] == pytest.approx(3.0)
    assert graphed["speedup_vs_compiled"] == pytest.approx(2.0)
    assert graphed["samples_per_second"] == pytest.approx(10.0) and graphed["ms"] == pytest.approx(100.0)
    assert loss_step["status"] == "failed" and "check" in loss_step["note"]
    assert step_step["status"] == "failed" and "wrote no bench-step/bench_step.json" in step_step["note"]
    md = (tmp_path / check.REPORT_MD).read_text()
    assert "| 1 | fastdiff graphed | 0.03 | 0 | 100.00 | 10.0 | 3.00 | 2.00 |" in md
    assert "Checks (max relative difference): FAILED" in md
    failing = {"timings": [], "checks": {"C++ cuda vs eager reference @ 12288": 2e-3}}
    assert check.read_bench_step(failing)["checks_passed"] is False


def test_refusals_name_the_problem_and_write_nothing(tmp_path, capsys, monkeypatch):
    used = tmp_path / "used"
    used.mkdir()
    (used / "report.json").write_text("{}")
    assert check.main(["--dry-run", "--out", str(used)]) == 2
    assert f"--out: expected a new or empty directory, got {str(used)!r}, which holds 1 entries (report.json)" in \
        capsys.readouterr().err
    assert (used / "report.json").read_text() == "{}"
    assert check.main(["--dry-run", "--out", str(used / "report.json")]) == 2
    assert "which is a file" in capsys.readouterr().err
    assert check.main(["--out", str(tmp_path / "new"), "--only", "tests-fused-ops,bench-gpu"]) == 2
    err = capsys.readouterr().err
    assert "--only: expected comma-separated step names from tests-fused-ops" in err and "'bench-gpu' unknown" in err
    with pytest.raises(SystemExit) as exit_:
        check.main(["--dry-run"])
    assert exit_.value.code == 2 and "--out" in capsys.readouterr().err
    # Without a CUDA device a run is refused, not pretended: nothing runs and nothing is written.
    monkeypatch.setattr(check, "probe_environment", lambda: {"cuda_available": False, "torch": "2.13.0+cpu",
                                                             "torch_cuda": None})
    assert check.main(["--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device here: torch 2.13.0+cpu sees no CUDA device (a CPU build of torch)" in err
    assert "add --dry-run" in err
    assert not (tmp_path / "new").exists()
