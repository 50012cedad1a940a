"""`python -m fastdiff.check --out DIR`: every CUDA test and the GPU benchmarks in one run, with a JSON and a
Markdown report, in at most 8 minutes on one GPU.

The plan is data: `plan(out_dir)` returns the steps, each with a name, the exact command, what it covers and its
time budget (its timeout). The real run executes those commands one after the other as subprocesses, from the
source checkout (pytest.ini, tests/ and benchmarks/ must be beside the package); the dry run (`--dry-run`, the
only mode without a CUDA device) prints and reports the same commands without running them, and checks that
they could run: each pytest step is collected (`--collect-only`) and must find tests, each benchmark's `--help`
must list every flag the step passes. CI runs the dry run.

Steps, most GPU-specific first, so that a run cut short keeps what only a GPU can tell:
  tests-fused-ops     tests/test_fused_ops.py: on a GPU its Triton kernels run on CUDA tensors and the C++ CUDA
                      backend joins its matrix (every test of the file runs; its C++ CPU cases are cheap)
  tests-fused-loss    tests/test_fused_loss.py, likewise for the fused loss ops and the losses built on them
  tests-cuda-other    every other test that uses CUDA (real CUDA graphs in tests/test_graphed.py, ...), picked from
                      the rest of the suite by this module's pytest plugin (below); tests/test_check.py is left out
  bench-step          benchmarks/bench_step.py --quick at 12,288 and 6,291,456 elements (the size of issue 4's
                      targets) on CUDA
  bench-graph         benchmarks/bench_graph.py at batches 1 and 64, 5 repeats, on CUDA
  bench-loss          benchmarks/bench_loss.py --quick at 786,432 and 16,777,216 elements, on CUDA
  tests-codegen       tests/test_triton_ptx.py and tests/test_cuda_build.py: the kernels compiled for sm_80/sm_90
                      by Triton and nvcc (no GPU needed, so CI runs them too: they come last)
The budgets add up to 450 s, leaving 30 s of the 480 s for the environment probe and the reports; the runner
also stops at 480 s whatever the budgets say. They are estimates, not measurements on an H100: the report gives
each step's duration, to set them from.

Choosing the CUDA tests outside the two fused-op files: a pytest plugin, not marks or node ids. The test files
belong to their authors and carry no common mark, and a list of node ids goes stale silently when a test is added
or renamed. The plugin (`-p fastdiff.check --fastdiff-cuda-only`) keeps a collected test when
  - it has a `cuda` or `gpu` mark, or a skipif mark whose reason says it needs CUDA or a GPU; or
  - one of its parameters is or holds (in a list, tuple or dict) the string "cuda" or "cuda:N", or a torch.device
    of type cuda, or is a function (a lambda) whose code names cuda as below; or
  - its code names cuda: reads an attribute `cuda` (`x.cuda()`, `torch.cuda.is_available()`) or holds the constant
    "cuda" or "cuda:N" (`device="cuda"`, `backend="cuda"`).
The code, not the source text: a function's source includes its decorators, whose parameter lists would pull in
every parametrization of a test for the one that names cuda. Parametrizations that exist only on a GPU (backend
lists that gain "cuda" when a device is present) are chosen there by the second rule, and their empty stand-ins
here by the third. The rules err towards including: a test that names the "cuda" backend (as in an expected
message or the list of backend names) is chosen too; its outcome can change with a GPU, and it costs milliseconds.
Tests of the emulated graph (`cuda_graph=` on the CPU) name no device and are left to CI.

Per-test outcomes: the plugin (`--fastdiff-outcomes FILE`) appends one JSON line per test as it finishes (and one
as it starts), so a step killed at its timeout keeps the outcomes it had and names the test it was running;
pytest's `--junitxml` file is written beside it for CI tools (at the end of a run only).

Reports: DIR/report.json and DIR/report.md, written at the start and again after every step, so a killed run keeps
what it had; the schema is in benchmarks/README.md. Step logs go to DIR/<step>.log, benchmark files to DIR/<step>/.
Exit status: 0 when every step passed (dry run: every check passed), 1 when a step failed, timed out or could not
run (dry run: a check failed), 2 for bad arguments or a refused run (no CUDA device without --dry-run; an --out
directory that is not empty), 130 when interrupted.
"""
from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import types
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the source checkout: tests/, benchmarks/, pytest.ini
SCHEMA = "fastdiff.check/1"
TOTAL_BUDGET = 480.0  # seconds for the whole run: 8 minutes on one H100, compile time included
KILL_GRACE = 3.0  # seconds between SIGTERM and SIGKILL of a step that ran out of time
PROBE_TIMEOUT = 60.0
ENVIRONMENT_VARIABLES = ("CUDA_VISIBLE_DEVICES", "TRITON_INTERPRET", "FASTDIFF_BACKEND", "CUDA_HOME",
                         "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")  # recorded: each changes what a run does
REPORT_JSON, REPORT_MD = "report.json", "report.md"
BENCH_CHECK_TOLERANCE = 1e-4  # bench_step's own threshold for "disagrees with the eager reference"

# Not-run statuses start with "not run"; the others are final outcomes or a step in progress.
PASSED, FAILED, TIMED_OUT, ERROR, INTERRUPTED = "passed", "failed", "timed out", "error", "interrupted"
PENDING, RUNNING = "pending", "running"
DRY_NO_GPU, DRY = "not run (dry run: no CUDA device)", "not run (dry run)"
OUT_OF_TIME = f"not run (the {TOTAL_BUDGET:.0f} s total budget was used up)"
NOT_REACHED = "not run (interrupted before this step)"

# The plan, in order: name, kind, arguments (paths relative to ROOT; a benchmark's also get --device cuda --out
# DIR/<name>), budget in seconds (the step's timeout), what it covers.
STEPS = (
    ("tests-fused-ops", "pytest", ("tests/test_fused_ops.py",), 100,
     "Triton kernels on CUDA tensors and the C++ CUDA kernels (when built) against the reference: churn, euler_step, "
     "heun_step, multistep_step, skip_mix, randn, every dtype, odd shapes; opcheck; torch.compile of a sampling step"),
    ("tests-fused-loss", "pytest", ("tests/test_fused_loss.py",), 65,
     "the fused loss ops (loss_input, loss_error) on Triton and C++ CUDA against the reference, their autograd, "
     "opcheck and torch.compile; EDM/VP/VE/DDPM losses fused end to end"),
    ("tests-cuda-other", "pytest", ("tests", "--fastdiff-cuda-only"), 40,
     "every other test that uses CUDA, chosen by the fastdiff.check plugin: real CUDA graphs (GraphedSampler, "
     "sample(cuda_graph=...)), and the tests whose parameters or code name the CUDA device"),
    ("bench-step", "benchmark", ("benchmarks/bench_step.py", "--quick", "--sizes", "12288,6291456"), 50,
     "one EDM Heun step with churn: eager reference, k-diffusion's sample_heun, torch.compile, fused Triton and "
     "C++ CUDA, device copy; GB/s, %copy and speedups"),
    ("bench-graph", "benchmark", ("benchmarks/bench_graph.py", "--batches", "1,64", "--repeats", "5"), 100,
     "whole sampling with a U-Net: k-diffusion's sample_heun, diffusers' Heun loop, eager, compiled net, "
     "CUDA-graphed; launches, syncs, samples/s and speedups"),
    ("bench-loss", "benchmark", ("benchmarks/bench_loss.py", "--quick", "--sizes", "786432,16777216"), 50,
     "the EDM loss forward + backward: EDM-style eager, torch.compile, fused Triton and C++ CUDA; two training steps "
     "per backend; GB/s and speedups"),
    ("tests-codegen", "pytest", ("tests/test_triton_ptx.py", "tests/test_cuda_build.py"), 45,
     "every Triton kernel compiled ahead of time for sm_80 and sm_90 (128-bit accesses, no local memory, no spills) "
     "and the CUDA kernels compiled with nvcc (no spills, 128-bit accesses)"),
)
STEP_NAMES = tuple(spec[0] for spec in STEPS)
# Test files with a step of their own, which the plugin's pass over the rest of the suite leaves out, and
# tests/test_check.py, which tests this command (its dry run inside a run would only spend the budget).
OWN_STEP_FILES = tuple(arg for _, kind, args, _, _ in STEPS if kind == "pytest" for arg in args if arg.endswith(".py"))
NOT_IN_A_RUN = OWN_STEP_FILES + ("tests/test_check.py",)
PYTEST_OPTIONS = ("-q", "--tb=short", "-rfEs", "-p", "no:cacheprovider", "-p", "fastdiff.check")


@dataclass(frozen=True)
class Step:
    """One step of the plan: `command` runs from ROOT with at most `budget` seconds; `check` is the dry run's
    verification that it could run (pytest: collect its tests; benchmark: its --help lists every flag given)."""

    name: str
    kind: str  # "pytest" or "benchmark"
    command: tuple[str, ...]
    covers: str
    budget: float
    check: tuple[str, ...] = ()


def plan(out_dir: Path, python: str = sys.executable) -> list[Step]:
    """The steps of a run writing into `out_dir`, in order."""
    out_dir = Path(out_dir).resolve()
    steps = []
    for name, kind, args, budget, covers in STEPS:
        if kind == "benchmark":
            command = (python, *args, "--device", "cuda", "--out", str(out_dir / name))
            steps.append(Step(name, kind, command, covers, budget, check=(python, args[0], "--help")))
            continue
        if "--fastdiff-cuda-only" in args:
            args = args + tuple(f"--ignore={path}" for path in NOT_IN_A_RUN)
        steps.append(_pytest_step(name, args, budget, covers, out_dir, python))
    return steps


def _pytest_step(name, args, budget, covers, out_dir: Path, python: str) -> Step:
    command = (python, "-m", "pytest", *PYTEST_OPTIONS, f"--fastdiff-outcomes={out_dir / (name + '.jsonl')}",
               f"--junitxml={out_dir / (name + '.junit.xml')}", *args)
    check = (python, "-m", "pytest", "--collect-only", *PYTEST_OPTIONS,
             f"--fastdiff-outcomes={out_dir / (name + '.collect.jsonl')}", *args)
    return Step(name, "pytest", command, covers, budget, check)


# ----------------------------------------------------------------------------------------------------------
# The pytest plugin: `-p fastdiff.check` (selection with --fastdiff-cuda-only, outcomes with --fastdiff-outcomes)
# ----------------------------------------------------------------------------------------------------------

CUDA_NAME = re.compile(r"cuda(:\d+)?")  # the whole string: "cuda", "cuda:0"
NEEDS_CUDA = re.compile(r"(?i)\bneeds?\b.*\b(cuda|gpu)\b")


def pytest_addoption(parser):
    group = parser.getgroup("fastdiff.check")
    group.addoption("--fastdiff-cuda-only", action="store_true",
                    help="keep only the tests that use CUDA (the rules are fastdiff.check's docstring)")
    group.addoption("--fastdiff-outcomes", metavar="FILE",
                    help="append one JSON line per test (start and outcome) to FILE as the run goes")


def pytest_configure(config):
    path = config.getoption("fastdiff_outcomes")
    if path:
        config.pluginmanager.register(OutcomeRecorder(path), "fastdiff-outcome-recorder")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("fastdiff_cuda_only"):
        return
    chosen = {item.nodeid: uses_cuda(item) for item in items}
    keep = [item for item in items if chosen[item.nodeid]]
    dropped = [item for item in items if not chosen[item.nodeid]]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


def uses_cuda(item) -> bool:
    """Whether a collected test uses CUDA by the rules of this module's docstring."""
    for mark in item.iter_markers():
        if mark.name in ("cuda", "gpu"):
            return True
        if mark.name == "skipif" and NEEDS_CUDA.search(str(mark.kwargs.get("reason", ""))):
            return True
    callspec = getattr(item, "callspec", None)
    if callspec is not None and any(_names_cuda(value) for value in callspec.params.values()):
        return True
    function = getattr(item, "function", None)
    return function is not None and _code_names_cuda(getattr(inspect.unwrap(function), "__code__", None))


def _names_cuda(value, depth: int = 0) -> bool:
    """A parameter value that is or holds the CUDA device's name, or a function whose code names it."""
    if depth > 4:
        return False
    if isinstance(value, str):
        return bool(CUDA_NAME.fullmatch(value))
    if isinstance(value, dict):
        return any(_names_cuda(v, depth + 1) for pair in value.items() for v in pair)
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_names_cuda(v, depth + 1) for v in value)
    if type(value).__name__ == "device" and getattr(value, "type", None) == "cuda":  # a torch.device
        return True
    return isinstance(value, types.FunctionType) and _code_names_cuda(value.__code__)


def _code_names_cuda(code) -> bool:
    """Code (with the lambdas and comprehensions inside it) that reads an attribute `cuda` (`x.cuda()`,
    `torch.cuda.*`) or holds the constant "cuda" / "cuda:N". The code, not the source: a function's source
    includes its decorators, whose parameter lists name cuda for the other parametrizations too."""
    if code is None:
        return False
    if "cuda" in code.co_names:
        return True
    return any(_names_cuda(const) or (isinstance(const, types.CodeType) and _code_names_cuda(const))
               for const in code.co_consts)


class OutcomeRecorder:
    """Writes, as a pytest run goes, {"event": "collected"|"collection error"|"start"|"result", ...} lines."""

    def __init__(self, path):
        self.file = open(path, "a", buffering=1)  # line-buffered: every line reaches the file when it is written
        self.phases: dict[str, list] = {}

    def write(self, **record) -> None:
        self.file.write(json.dumps(record) + "\n")

    def pytest_collectreport(self, report):
        if report.failed:
            self.write(event="collection error", nodeid=report.nodeid, message=_message(report))

    def pytest_collection_finish(self, session):
        self.write(event="collected", count=len(session.items))

    def pytest_runtest_logstart(self, nodeid, location):
        self.write(event="start", nodeid=nodeid)

    def pytest_runtest_logreport(self, report):
        self.phases.setdefault(report.nodeid, []).append(report)
        if report.when == "teardown":
            self.write(event="result", nodeid=report.nodeid, **_outcome(self.phases.pop(report.nodeid)))

    def pytest_unconfigure(self, config):
        self.file.close()


def _outcome(reports) -> dict:
    """One test's outcome from its setup, call and teardown reports: passed, failed, error (in setup or teardown),
    skipped, xfailed or xpassed, with its duration and, when it did not pass, a short message."""
    outcome, message = "passed", None
    for report in reports:
        expected_failure = hasattr(report, "wasxfail")
        if report.when == "call":
            if expected_failure:
                outcome = "xfailed" if report.skipped else "xpassed"
            else:
                outcome = report.outcome
            message = _message(report) if outcome != "passed" else None
        elif report.failed and outcome in ("passed", "skipped"):
            outcome, message = "error", f"error in {report.when}: {_message(report)}"
        elif report.skipped and report.when == "setup":
            outcome, message = "skipped", _message(report)
    return dict(outcome=outcome, duration=round(sum(r.duration for r in reports), 6), message=message)


def _message(report, limit: int = 2000) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (file, line, reason)
        return str(longrepr[2])
    crash = getattr(longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(longrepr)
    return text if len(text) <= limit else "..." + text[-limit:]


def read_outcomes(path: Path) -> dict:
    """The tests a run of the plugin recorded: collected count, outcome per test, the tests started and not
    finished (a killed run), collection errors. A missing file reads as nothing recorded."""
    collected, results, started, errors = None, {}, [], []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        event = record.pop("event", None)
        if event == "collected":
            collected = record["count"]
        elif event == "collection error":
            errors.append(record)
        elif event == "start":
            started.append(record["nodeid"])
        elif event == "result":
            results[record.pop("nodeid")] = record
    return dict(collected=collected, counts=dict(Counter(r["outcome"] for r in results.values())),
                results=[dict(nodeid=nodeid, **r) for nodeid, r in results.items()],
                unfinished=[nodeid for nodeid in dict.fromkeys(started) if nodeid not in results],
                collection_errors=errors)


# ----------------------------------------------------------------------------------------------------------
# The environment (probed in a subprocess: the runner itself never creates a CUDA context)
# ----------------------------------------------------------------------------------------------------------

def environment() -> dict:
    """Versions (python, torch, CUDA, cuDNN, triton, driver, nvcc, fastdiff and its git commit), the CUDA devices
    and fastdiff's backends with the reasons each cannot run."""
    import importlib.metadata
    import platform

    import torch

    import fastdiff
    from fastdiff import backends

    def package_version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    cuda = torch.cuda.is_available()
    devices = []
    for index in range(torch.cuda.device_count() if cuda else 0):
        p = torch.cuda.get_device_properties(index)
        devices.append(dict(index=index, name=p.name, capability=f"{p.major}.{p.minor}",
                            memory_gib=round(p.total_memory / 2**30, 1), multiprocessors=p.multi_processor_count))
    env = dict(
        python=platform.python_version(), python_executable=sys.executable, platform=platform.platform(),
        torch=torch.__version__, torch_cuda=torch.version.cuda, torch_hip=getattr(torch.version, "hip", None),
        cudnn=torch.backends.cudnn.version() if cuda and torch.backends.cudnn.is_available() else None,
        triton=package_version("triton"), fastdiff=fastdiff.__version__,
        fastdiff_path=str(Path(fastdiff.__file__).parent),
        git=_git_state(), cuda_available=cuda, device_count=len(devices), devices=devices,
        driver=_command_line(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]),
        nvcc=_command_line([_nvcc(), "--version"], pick="release"),
        variables={name: os.environ.get(name) for name in ENVIRONMENT_VARIABLES},
    )
    try:
        env["backends"] = backends.info()
        if cuda:
            x = torch.empty(1, device="cuda")
            env["auto_backend_for_cuda_tensors"] = backends.resolve("auto", x, (x,))
    except Exception as error:  # the report must still be written when a backend's import is broken
        env["backends_error"] = f"{type(error).__name__}: {error}"
    return env


def _git_state() -> dict | None:
    commit = _command_line(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    if commit is None or not re.fullmatch(r"[0-9a-f]{40}", commit):
        return None
    status = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True).stdout
    return dict(commit=commit, modified_files=len(status.splitlines()))


def _nvcc() -> str:
    home = os.environ.get("CUDA_HOME")
    return str(Path(home) / "bin" / "nvcc") if home and (Path(home) / "bin" / "nvcc").exists() else "nvcc"


def _command_line(command, pick: str | None = None) -> str | None:
    """The first line of a command's output (the first containing `pick`), or None when it cannot run."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip() and (pick is None or pick in line)]
    return lines[0] if done.returncode == 0 and lines else None


def probe_environment(python: str = sys.executable) -> dict:
    """environment() from a child process; on failure {"cuda_available": False, "probe_error": why}."""
    code = "import json, fastdiff.check as c; print(json.dumps(c.environment()))"
    try:
        done = subprocess.run([python, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return dict(cuda_available=False, probe_error=f"the environment probe took more than {PROBE_TIMEOUT:.0f} s")
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return dict(cuda_available=False, probe_error=f"the environment probe exited {done.returncode}: "
                                                      f"{done.stderr.strip()[-2000:]}")


# ----------------------------------------------------------------------------------------------------------
# Benchmark results: the tables (with their ratios) and checks each benchmark wrote
# ----------------------------------------------------------------------------------------------------------

def _table(title: str, columns: list[tuple[str, str, str]], rows: list[dict]) -> dict:
    """columns: (key, header, format spec); rows keep only those keys."""
    return dict(title=title, columns=[c[0] for c in columns], headers=[c[1] for c in columns],
                formats=[c[2] for c in columns], rows=[{c[0]: row.get(c[0]) for c in columns} for row in rows])


def _ms(rows: list[dict], key: str = "seconds") -> list[dict]:
    """The rows with their time in ms and their fraction of the copy's bandwidth in percent, for display."""
    return [dict(row, ms=row[key] * 1e3 if row.get(key) is not None else None,
                 percent_of_copy=100 * row["fraction_of_copy"] if row.get("fraction_of_copy") is not None else None)
            for row in rows]


def read_bench_step(data: dict) -> dict:
    """bench_step.json: the time-per-step and noise tables, and its checks (each <= 1e-4 to pass)."""
    step = [r for r in data["timings"] if "speedup_vs_reference" in r]
    noise = [r for r in data["timings"] if "speedup_vs_reference" not in r]
    tables = [
        _table("Time per step (xref, xcomp: speedup vs the eager reference, vs torch.compile)", [
            ("size", "size", ","), ("shape", "shape", ""), ("implementation", "implementation", ""),
            ("ms", "ms/step", ".3f"), ("repeats", "n", "d"), ("bytes_per_element", "B/elem", ".1f"),
            ("gbps", "GB/s", ".1f"), ("percent_of_copy", "%copy", ".1f"), ("speedup_vs_reference", "xref", ".2f"),
            ("speedup_vs_compile", "xcomp", ".2f"), ("note", "note", "")], _ms(step)),
        _table("Noise injection x + s * eps (xeager, xcomp: speedup vs eager randn_like, vs its torch.compile)", [
            ("size", "size", ","), ("implementation", "implementation", ""), ("ms", "ms", ".3f"),
            ("gbps", "GB/s", ".1f"), ("speedup_vs_eager", "xeager", ".2f"), ("speedup_vs_compile", "xcomp", ".2f")],
            _ms(noise)),
    ]
    checks = data.get("checks", {})
    return dict(tables=tables, checks=checks,
                checks_passed=all(value <= BENCH_CHECK_TOLERANCE for value in checks.values()))


def _kdiffusion_seconds(batch: dict):
    """k-diffusion's time in one batch of bench_graph.json: its real sample_heun, or, in results written before the
    benchmark ran k-diffusion's own code, the "k-diffusion pattern" re-created from its formulas."""
    return batch.get("k-diffusion sample_heun", batch.get("k-diffusion pattern"))


def read_bench_graph(data: dict) -> dict:
    """bench_graph.json: one table, with samples/s and the speedups computed from its times (it has no checks)."""
    rows = []
    for row in data["rows"]:
        batch = {r["sampler"]: r["seconds"] for r in data["rows"] if r["batch"] == row["batch"]}
        t, kdiff, compiled = row["seconds"], _kdiffusion_seconds(batch), batch.get("compiled net")
        rows.append(dict(row, ms=t * 1e3 if t else None, samples_per_second=row["batch"] / t if t else None,
                         speedup_vs_kdiffusion=kdiff / t if t and kdiff else None,
                         speedup_vs_compiled=compiled / t if t and compiled else None))
    table = _table(f"Whole sampling, {data.get('steps')} Heun steps (NFE {data.get('nfe')}), "
                   f"{data.get('parameters', 0) / 1e6:.2f}M-parameter U-Net "
                   "(x k-diff, x compiled: speedup vs k-diffusion's sample_heun, vs the compiled net)", [
                       ("batch", "batch", "d"), ("sampler", "sampler", ""),
                       ("launches_per_step", "launches/step", ".2f"),
                       ("syncs_per_call", "syncs/call", "d"), ("ms", "ms/call", ".2f"),
                       ("samples_per_second", "samples/s", ",.1f"), ("speedup_vs_kdiffusion", "x k-diff", ".2f"),
                       ("speedup_vs_compiled", "x compiled", ".2f"), ("counted_by", "counted by", "")], rows)
    return dict(tables=[table], checks={}, checks_passed=None)


def read_bench_loss(data: dict) -> dict:
    """bench_loss.json: the forward + backward and training-step tables, and its checks with its own verdict."""
    tables = [
        _table("Loss forward + backward (xeager, xcomp: speedup vs EDM-style eager, vs torch.compile)", [
            ("size", "size", ","), ("shape", "shape", ""), ("implementation", "implementation", ""),
            ("ms", "ms", ".3f"), ("repeats", "n", "d"), ("bytes_per_element", "B/elem", ".1f"), ("gbps", "GB/s", ".1f"),
            ("percent_of_copy", "%copy", ".1f"), ("speedup_vs_eager", "xeager", ".2f"),
            ("speedup_vs_compile", "xcomp", ".2f"), ("note", "note", "")], _ms(data["timings"])),
        _table("Training steps (xref: speedup vs the reference backend)", [
            ("case", "case", ""), ("shape", "batch shape", ""), ("label", "backend", ""), ("ms", "ms/step", ".2f"),
            ("images_per_second", "img/s", ",.0f"), ("speedup_vs_reference", "xref", ".2f")],
            _ms(data.get("training", []))),
    ]
    return dict(tables=tables, checks=data.get("checks", {}), checks_passed=data.get("meta", {}).get("checks_passed"))


BENCH_READERS = {  # step -> the JSON file the benchmark writes into DIR/<step>/, and its reader
    "bench-step": ("bench_step.json", read_bench_step),
    "bench-graph": ("bench_graph.json", read_bench_graph),
    "bench-loss": ("bench_loss.json", read_bench_loss),
}


# ----------------------------------------------------------------------------------------------------------
# Running the plan
# ----------------------------------------------------------------------------------------------------------

class Interrupted(Exception):
    """SIGTERM (or SIGINT) arrived: stop the step that runs, report, exit."""


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def child_environment() -> dict:
    """The steps' environment: Triton compiles for the GPU (no interpreter) and nothing overrides the backends."""
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTDIFF_BACKEND")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def new_report(steps: list[Step], out_dir: Path, mode: str, env: dict, argv: list[str]) -> dict:
    """The report before anything ran: every step pending (or not run, in a dry run)."""
    status = PENDING if mode == "run" else (DRY_NO_GPU if not env.get("cuda_available") else DRY)
    return dict(
        schema=SCHEMA, mode=mode, status="running" if mode == "run" else "dry run",
        started=_now(), finished=None, duration_seconds=None, total_budget_seconds=TOTAL_BUDGET,
        command=["python", "-m", "fastdiff.check", *argv], out_dir=str(Path(out_dir).resolve()), cwd=str(ROOT),
        environment=env,
        steps=[dict(name=s.name, kind=s.kind, covers=s.covers, command=list(s.command),
                    command_line=shlex.join(s.command), budget_seconds=s.budget, status=status, returncode=None,
                    duration_seconds=None, log=f"{s.name}.log") for s in steps],
        summary={},
    )


def run_plan(steps: list[Step], out_dir: Path, report: dict, *, total_budget: float = TOTAL_BUDGET,
             echo=print) -> dict:
    """Run every step in order, each within its budget (and all within `total_budget`), recording each outcome
    and rewriting the reports after every step. A failed or timed-out step never stops the ones after it."""
    out_dir = Path(out_dir)
    started = time.monotonic()
    write_reports(report, out_dir)
    try:
        for index, (step, record) in enumerate(zip(steps, report["steps"])):
            remaining = total_budget - (time.monotonic() - started) - KILL_GRACE
            if remaining < 1:
                record["status"] = OUT_OF_TIME
                continue
            record["status"], record["timeout_seconds"] = RUNNING, round(min(step.budget, remaining), 1)
            write_reports(report, out_dir)
            echo(f"[{index + 1}/{len(steps)}] {step.name} (at most {record['timeout_seconds']:.0f} s): "
                 f"{record['command_line']}")
            run_step(step, record, out_dir, record["timeout_seconds"])
            echo(f"    {record['status']} in {record['duration_seconds']:.1f} s" + _step_summary(record))
            write_reports(report, out_dir)
        report["status"] = PASSED if all(r["status"] == PASSED for r in report["steps"]) else FAILED
    except (Interrupted, KeyboardInterrupt):
        report["status"] = INTERRUPTED
        for record in report["steps"]:
            if record["status"] == PENDING:
                record["status"] = NOT_REACHED
    report["finished"] = _now()
    report["duration_seconds"] = round(time.monotonic() - started, 1)
    write_reports(report, out_dir)
    return report


def run_step(step: Step, record: dict, out_dir: Path, timeout: float) -> None:
    """Run one step's command, its output to DIR/<step>.log, killing its process group at `timeout` seconds;
    then read what it produced (per-test outcomes, benchmark tables) into `record`, however it ended."""
    start = time.monotonic()
    with open(out_dir / record["log"], "w") as log:
        try:
            process = subprocess.Popen(step.command, cwd=ROOT, env=child_environment(), stdout=log,
                                       stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as error:
            record.update(status=ERROR, note=f"could not start: {error}", duration_seconds=0.0)
            return
        try:
            record["returncode"] = process.wait(timeout=timeout)
            record["status"] = PASSED if record["returncode"] == 0 else FAILED
        except subprocess.TimeoutExpired:
            _kill(process)
            record.update(status=TIMED_OUT, returncode=process.returncode,
                          note=f"killed after its {timeout:.0f} s budget")
        except BaseException as why:  # interrupted: stop the step, keep what it wrote, let the run report and exit
            _kill(process)
            record.update(status=INTERRUPTED, returncode=process.returncode, note=f"interrupted ({why or 'SIGINT'})")
            raise
        finally:
            record["duration_seconds"] = round(time.monotonic() - start, 1)
            if step.kind == "pytest":
                _read_tests(step, record, out_dir)
            elif step.name in BENCH_READERS:
                _read_benchmark(step, record, out_dir)


def _kill(process: subprocess.Popen) -> None:
    """SIGTERM to the step's whole process group (pytest's subprocesses, compilers), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def _read_tests(step: Step, record: dict, out_dir: Path) -> None:
    tests = read_outcomes(out_dir / f"{step.name}.jsonl")
    tests.update(outcomes=f"{step.name}.jsonl", junit=f"{step.name}.junit.xml")
    record["tests"] = tests
    if record["status"] == FAILED and record["returncode"] == 5:
        record["note"] = "pytest collected no tests"
    elif record["status"] == FAILED and tests["collection_errors"]:
        record["note"] = f"{len(tests['collection_errors'])} collection error(s)"
    elif record["status"] == TIMED_OUT and tests["unfinished"]:
        record["note"] += f", while running {tests['unfinished'][-1]}"


def _read_benchmark(step: Step, record: dict, out_dir: Path) -> None:
    filename, reader = BENCH_READERS[step.name]
    path = out_dir / step.name / filename
    bench = dict(results_dir=step.name, files=sorted(p.name for p in (out_dir / step.name).glob("*")))
    record["benchmark"] = bench
    if not path.exists():
        if record["status"] == PASSED:
            record.update(status=FAILED, note=f"exited 0 but wrote no {step.name}/{filename}")
        return
    try:
        bench.update(reader(json.loads(path.read_text())))
    except (ValueError, KeyError, TypeError) as error:
        record.update(status=FAILED if record["status"] == PASSED else record["status"],
                      note=f"could not read {step.name}/{filename}: {type(error).__name__}: {error}")
        return
    if record["status"] == PASSED and bench["checks_passed"] is False:
        record.update(status=FAILED, note="a correctness check of the benchmark failed (see its checks)")


def check_step(step: Step, out_dir: Path) -> dict:
    """The dry run's check that `step` could run: a pytest step collects tests, a benchmark's --help lists every
    flag (and choice) the step passes. {"command", "ok", "detail"}, and "collected" for pytest steps."""
    try:
        done = subprocess.run(step.check, cwd=ROOT, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as error:
        return dict(command=list(step.check), ok=False, detail=f"could not run: {error}")
    if step.kind == "pytest":
        found = read_outcomes(out_dir / f"{step.name}.collect.jsonl")
        ok = done.returncode == 0 and bool(found["collected"])
        detail = (f"collects {found['collected']} tests here" if ok else
                  f"pytest --collect-only exited {done.returncode}, collected {found['collected']}, "
                  f"{len(found['collection_errors'])} collection error(s): {done.stdout.strip()[-1500:]}")
        return dict(command=list(step.check), ok=ok, collected=found["collected"], detail=detail)
    problems = flag_problems(step.command[2:], done.stdout)
    ok = done.returncode == 0 and not problems
    detail = (f"{step.command[1]} accepts {' '.join(step.command[2:])}" if ok else
              f"--help exited {done.returncode}: {'; '.join(problems)} {done.stderr.strip()[-1500:]}")
    return dict(command=list(step.check), ok=ok, detail=detail)


def dry_run(steps: list[Step], out_dir: Path, argv: list[str], echo=print) -> dict:
    """The dry run's report: the environment and every step's check, run side by side (subprocesses, one per
    core), nothing run on a GPU."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        probe = pool.submit(probe_environment)
        checks = list(pool.map(lambda step: check_step(step, out_dir), steps))
        env = probe.result()
    report = new_report(steps, out_dir, "dry run", env, argv)
    echo(_plan_text(steps, report))
    for step, record, result in zip(steps, report["steps"], checks):
        record["dry_run_check"] = result
        echo(f"  {'ok  ' if result['ok'] else 'FAIL'} {step.name}: {result['detail']}")
    if not all(result["ok"] for result in checks):
        report["status"] = "dry run: a check failed"
    return report


def flag_problems(args, help_text: str) -> list[str]:
    """What in `args` an argparse `--help` text does not accept: flags it does not list, and values outside the
    choices it shows as `--flag {a,b}`."""
    listed = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))
    choices = {flag: set(values.split(","))
               for flag, values in re.findall(r"(--[a-z][a-z0-9-]*) \{([^}]*)\}", help_text)}
    problems = []
    for index, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        if arg not in listed:
            problems.append(f"{arg} is not in its --help")
        elif arg in choices and (index + 1 >= len(args) or args[index + 1] not in choices[arg]):
            given = args[index + 1] if index + 1 < len(args) else "nothing"
            problems.append(f"{arg} takes one of {sorted(choices[arg])}, given {given}")
    return problems


def _step_summary(record: dict) -> str:
    parts = []
    if record.get("tests"):
        counts = record["tests"]["counts"]
        parts.append(", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "no test finished")
    if record.get("benchmark", {}).get("checks"):
        parts.append("checks " + ("passed" if record["benchmark"]["checks_passed"] else "FAILED"))
    if record.get("note"):
        parts.append(record["note"])
    return (": " + "; ".join(parts)) if parts else ""


def summarize(report: dict) -> dict:
    steps = Counter(record["status"] for record in report["steps"])
    tests = Counter()
    for record in report["steps"]:
        tests.update(record.get("tests", {}).get("counts", {}))
    return dict(steps=dict(steps), tests=dict(tests))


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------

def write_reports(report: dict, out_dir: Path) -> None:
    """DIR/report.json and DIR/report.md, each replaced atomically (a reader never sees half a report)."""
    report["summary"] = summarize(report)
    for name, text in ((REPORT_JSON, json.dumps(report, indent=1) + "\n"), (REPORT_MD, markdown(report))):
        partial = Path(out_dir) / (name + ".partial")
        partial.write_text(text)
        os.replace(partial, Path(out_dir) / name)


def markdown(report: dict) -> str:
    """The report for people: environment, the plan with each step's outcome, failures, tables."""
    env = report["environment"]
    lines = [f"# fastdiff GPU check: {report['status']}", "",
             f"`{shlex.join(report['command'])}` ({report['mode']}), started {report['started']}"
             + (f", {report['duration_seconds']:.0f} s of at most {report['total_budget_seconds']:.0f} s"
                if report["duration_seconds"] is not None else ""), ""]
    summary = report["summary"]
    lines += ["Steps: " + ", ".join(f"{n} {status}" for status, n in summary["steps"].items())
              + (". Tests: " + ", ".join(f"{n} {outcome}" for outcome, n in sorted(summary["tests"].items()))
                 if summary["tests"] else ""), ""]
    for name, reasons in (env.get("backends") or {}).items():
        if env.get("cuda_available") and name in ("triton", "cuda") and reasons:  # a GPU run that cannot test it
            lines += [f"**Warning:** the {name} backend cannot run here, so its tests and benchmark rows are skipped: "
                      + _cell("; ".join(reasons)), ""]
    lines += ["## Environment", "", "| | |", "|---|---|"]
    for key, value in _environment_rows(env):
        lines.append(f"| {key} | {_cell(value)} |")
    lines += ["", "## Plan", "", "| step | status | time / budget (s) | tests | covers |", "|---|---|---|---|---|"]
    for record in report["steps"]:
        took = "-" if record["duration_seconds"] is None else f"{record['duration_seconds']:.1f}"
        lines.append(f"| {record['name']} | {record['status']} | {took} / {record['budget_seconds']:.0f} | "
                     f"{_tests_cell(record)} | {_cell(record['covers'])} |")
    for record in report["steps"]:
        lines += ["", f"## {record['name']}: {record['status']}", "", "```", record["command_line"], "```", ""]
        if record.get("note"):
            lines += [f"Note: {record['note']}", ""]
        if "dry_run_check" in record:
            check = record["dry_run_check"]
            lines += [f"Dry-run check: {'ok' if check['ok'] else 'FAILED'}: {_cell(check['detail'])}", ""]
        if record["returncode"] is not None:
            lines += [f"Exit status {record['returncode']}, log `{record['log']}`.", ""]
        elif record["status"] == RUNNING:
            lines += [f"Running (a report from the middle of a run), log `{record['log']}`.", ""]
        if record.get("tests"):
            lines += _markdown_tests(record["tests"])
        if record.get("benchmark"):
            lines += _markdown_benchmark(record["benchmark"])
    return "\n".join(lines) + "\n"


def _tests_cell(record: dict) -> str:
    """A step's test counts by outcome, or (dry run) how many tests it collects here."""
    if record.get("tests"):
        counts = sorted(record["tests"]["counts"].items())
        return ", ".join(f"{n} {outcome}" for outcome, n in counts) or "none finished"
    collected = record.get("dry_run_check", {}).get("collected")
    return f"{collected} collected here" if collected else ""


def _environment_rows(env: dict) -> list[tuple[str, object]]:
    if "probe_error" in env:
        return [("probe error", env["probe_error"])]
    git = env.get("git") or {}
    devices = "; ".join(f"cuda:{d['index']} {d['name']} (sm_{d['capability'].replace('.', '')}, {d['memory_gib']} GiB)"
                        for d in env.get("devices", [])) or "none"
    commit = f", commit {git['commit'][:12]}" if git else ""
    if git.get("modified_files"):
        commit += f" with {git['modified_files']} modified files"
    rows = [("fastdiff", f"{env.get('fastdiff')} at {env.get('fastdiff_path')}{commit}"), ("python", env.get("python")),
            ("torch", f"{env.get('torch')} (CUDA {env.get('torch_cuda')}, cuDNN {env.get('cudnn')})"),
            ("triton", env.get("triton")), ("NVIDIA driver", env.get("driver")), ("nvcc", env.get("nvcc")),
            ("devices", devices), ("platform", env.get("platform"))]
    for name, reasons in (env.get("backends") or {}).items():
        rows.append((f"backend {name}", "available" if not reasons else "unavailable: " + "; ".join(reasons)))
    if env.get("auto_backend_for_cuda_tensors"):
        rows.append(("auto backend for CUDA tensors", env["auto_backend_for_cuda_tensors"]))
    if env.get("backends_error"):
        rows.append(("backends", env["backends_error"]))
    rows += [(f"${name}", value) for name, value in (env.get("variables") or {}).items() if value is not None]
    return rows


def _markdown_tests(tests: dict) -> list[str]:
    finished = ", ".join(f"{n} {o}" for o, n in sorted(tests["counts"].items())) or "no test finished"
    not_reached = (tests["collected"] or 0) - len(tests["results"]) - len(tests["unfinished"])
    lines = [f"Collected {tests['collected']}; {finished}" + (f"; {not_reached} not reached" if not_reached > 0 else "")
             + ".", ""]
    for error in tests["collection_errors"]:
        lines.append(f"- collection error in `{error['nodeid']}`: {_cell(error['message'])}")
    for nodeid in tests["unfinished"]:
        lines.append(f"- started, never finished: `{nodeid}`")
    bad = [r for r in tests["results"] if r["outcome"] in ("failed", "error", "xpassed")]
    if bad:
        lines += ["", "| test | outcome | message |", "|---|---|---|"]
        lines += [f"| `{_cell(r['nodeid'])}` | {r['outcome']} | {_cell(r['message'] or '')} |" for r in bad]
    skipped = Counter(r["message"] for r in tests["results"] if r["outcome"] == "skipped")
    if skipped:
        lines += ["", "Skipped:"] + [f"- {n} x {_cell(reason)}" for reason, n in skipped.most_common()]
    if tests["results"]:
        lines += ["", "<details><summary>Every test's outcome</summary>", ""]
        lines += [f"- {r['outcome']} `{r['nodeid']}` ({r['duration']:.3f} s)" for r in tests["results"]]
        lines += ["", "</details>"]
    return lines + [""]


def _markdown_benchmark(bench: dict) -> list[str]:
    lines = [f"Files in `{bench['results_dir']}/`: {', '.join(bench['files']) or 'none'}.", ""]
    for table in bench.get("tables", []):
        if not table["rows"]:
            continue
        lines += [f"**{table['title']}**", "", "| " + " | ".join(table["headers"]) + " |",
                  "|" + "|".join("---:" if f else "---" for f in table["formats"]) + "|"]
        for row in table["rows"]:
            cells = [_format(row[key], spec) for key, spec in zip(table["columns"], table["formats"])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if bench.get("checks"):
        lines += ["Checks (max relative difference): " + ("passed" if bench["checks_passed"] else "FAILED"), ""]
        lines += [f"- {value:.2e} {name}" for name, value in bench["checks"].items()] + [""]
    return lines


def _format(value, spec: str) -> str:
    if value is None:
        return "-"
    try:
        return _cell(format(value, spec))
    except (TypeError, ValueError):
        return _cell(value)


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


# ----------------------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fastdiff.check",
        description="Run every CUDA test and the GPU benchmarks (short mode), and write DIR/report.json and "
                    "DIR/report.md; at most 8 minutes on one GPU. Without a CUDA device, only --dry-run runs: it "
                    "writes the plan, checks that each step could run, and runs nothing.")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="a new or empty directory for the reports, logs and benchmark files")
    parser.add_argument("--dry-run", action="store_true",
                        help="write the plan into the reports and check it, without running it")
    parser.add_argument("--only", metavar="STEP[,STEP]",
                        help=f"run only these steps (names as in the plan: {', '.join(STEP_NAMES)})")
    return parser


def check_out_dir(out: Path) -> None:
    """Refuse anything but a new or an empty directory: earlier reports are never overwritten."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: expected a new or empty directory, got {str(out)!r}, which is a file")
    if out.is_dir() and any(out.iterdir()):
        entries = sorted(p.name for p in out.iterdir())
        raise ValueError(f"--out: expected a new or empty directory, got {str(out)!r}, which holds "
                         f"{len(entries)} entries ({', '.join(entries[:5])}{', ...' if len(entries) > 5 else ''}); "
                         "earlier reports are never overwritten: give another directory")


def select_steps(steps: list[Step], only: str | None) -> list[Step]:
    if only is None:
        return steps
    names = [name.strip() for name in only.split(",") if name.strip()]
    known = [s.name for s in steps]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"--only: expected comma-separated step names from {', '.join(known)}, got {only!r}"
                         + (f" ({', '.join(map(repr, unknown))} unknown)" if unknown else ""))
    return [s for s in steps if s.name in names]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if not (ROOT / "tests").is_dir() or not (ROOT / "benchmarks").is_dir():
            raise ValueError(f"fastdiff.check runs the tests and benchmarks of a source checkout, and {ROOT} has no "
                             "tests/ or benchmarks/ (install fastdiff from a git clone with `pip install -e .`)")
        out = args.out.resolve()
        steps = select_steps(plan(out), args.only)
        check_out_dir(out)
    except ValueError as error:
        print(f"fastdiff.check: error: {error}", file=sys.stderr)
        return 2
    start = time.monotonic()
    if args.dry_run:
        out.mkdir(parents=True, exist_ok=True)
        print("fastdiff.check: dry run: probing the environment and checking that each step could run...", flush=True)
        report = dry_run(steps, out, argv)
        report.update(finished=_now(), duration_seconds=round(time.monotonic() - start, 1))
        write_reports(report, out)
        ok = report["status"] == "dry run"
        print(f"wrote {out / REPORT_JSON} and {out / REPORT_MD}" + ("" if ok else "; a check FAILED"))
        return 0 if ok else 1
    print("fastdiff.check: probing the environment (python, torch, CUDA devices, backends)...", flush=True)
    env = probe_environment()
    if not env.get("cuda_available"):
        why = env.get("probe_error") or (f"torch {env.get('torch')} sees no CUDA device"
                                         + (" (a CPU build of torch)" if env.get("torch_cuda") is None else ""))
        print(f"fastdiff.check: error: no CUDA device here: {why}. Nothing was run and nothing was written. Run on a "
              f"machine with an NVIDIA GPU, or add --dry-run to write the plan to {out} and check it without running "
              "it.", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    report = new_report(steps, out, "run", env, argv)
    print(_plan_text(steps, report), flush=True)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        run_plan(steps, out, report, total_budget=TOTAL_BUDGET - (time.monotonic() - start))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"{report['status']}: wrote {out / REPORT_JSON} and {out / REPORT_MD}")
    return {PASSED: 0, INTERRUPTED: 130}.get(report["status"], 1)


def _plan_text(steps: list[Step], report: dict) -> str:
    env = report["environment"]
    device = "; ".join(f"{d['name']} (sm_{d['capability'].replace('.', '')})" for d in env.get("devices", [])) or "none"
    lines = [f"fastdiff.check ({report['mode']}): fastdiff {env.get('fastdiff')}, torch {env.get('torch')}, "
             f"CUDA device: {device}", f"plan: {len(steps)} steps, budgets {sum(s.budget for s in steps):.0f} s of "
             f"{TOTAL_BUDGET:.0f} s, from {ROOT}"]
    for step, record in zip(steps, report["steps"]):
        lines.append(f"  {step.name:<17} {step.budget:>4.0f} s  {record['status']}\n      {record['command_line']}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
