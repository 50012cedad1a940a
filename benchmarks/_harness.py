"""What every benchmark in this folder shares, in one place: the common command line, the run's recorded settings,
the timers, the op counter and the writers. A benchmark script keeps only what it measures.

    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: this folder is not a package
    from _harness import (common_arguments, make_parser, median_round_robin, run_meta, setup, time_calls,
                          write_json)

    parser = make_parser(__doc__)
    common_arguments(parser, repeats=10, quick="a smoke run: ...")   # --device --threads --repeats --quick --out
    parser.add_argument("--batch", type=int, default=64)             # the benchmark's own flags
    a = parser.parse_args(argv)
    device = setup(a)                                                # threads set, --device checked, the device
    seconds = median_round_robin({"eager": f, "graphed": g}, a.repeats, device)
    write_json(a.out / "bench_x.json", dict(meta=run_meta(device, argv), seconds=seconds))

Command line (common_arguments): --device auto|cpu|cuda (auto: cuda when available), --threads N (torch's CPU
threads), --repeats N, --quick, --budget S (optional), --out DIR (default benchmarks/results/, which git ignores).
Timing: time_calls (interleaved, calibrated to >= 1 ms per measurement, a time budget per function) for short
calls; median_round_robin (one call of each function per round) for whole samplers. Counting: OpCounter, a
TorchDispatchMode that counts the kernel launches, host syncs and modelled bytes of eager code. Nothing here asserts
a timing.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import fastdiff
from fastdiff import backends

RESULTS = Path(__file__).resolve().parent / "results"
DEVICES = ("auto", "cpu", "cuda")
INTERPRETER_REASON = "on the CPU Triton runs only in its interpreter, which is not a speed measurement"


# ----------------------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------------------

def make_parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser whose description is the first paragraph of the benchmark's docstring (--help shows the
    rest of it as written)."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)


def common_arguments(parser: argparse.ArgumentParser, *, repeats: int | None, repeats_help: str | None = None,
                     quick: str | None = None, budget: str | None = None, device: bool = True,
                     threads: bool = True) -> argparse.ArgumentParser:
    """Add the flags every benchmark spells the same way: --device (unless device=False), --threads (unless
    threads=False), --repeats (default `repeats`; None leaves it to the benchmark, e.g. fewer with --quick),
    --quick (when `quick` says what it does), --budget (when `budget` says what it is) and --out."""
    if device:
        parser.add_argument("--device", default="auto", choices=DEVICES, help="auto: cuda when available")
    if threads:
        parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    parser.add_argument("--repeats", type=int, default=repeats,
                        help=repeats_help or f"measurements per timing (default {repeats})")
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help=quick)
    if budget is not None:
        parser.add_argument("--budget", type=float, help=budget)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"directory for the results (default {RESULTS})")
    return parser


def setup(args: argparse.Namespace) -> torch.device:
    """Apply the common flags: refuse a --repeats or --threads below 1 and --device cuda without CUDA, set torch's
    thread count; return the device to run on."""
    if getattr(args, "repeats", None) is not None:
        at_least("repeats", args.repeats, 1)
    if getattr(args, "threads", None) is not None:
        at_least("threads", args.threads, 1)
        torch.set_num_threads(args.threads)
    return pick_device(getattr(args, "device", "cpu"))


def pick_device(choice: str) -> torch.device:
    """--device: "cuda" (which must be available), "cpu", or "auto" (cuda when available)."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch.cuda.is_available() is False here")
    return torch.device("cuda" if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()) else "cpu")


def at_least(flag: str, value: int, minimum: int) -> None:
    """Stop with a message naming the flag when its value is below `minimum`."""
    if value < minimum:
        raise SystemExit(f"--{flag}: expected >= {minimum}, got {value}")


def parse_sizes(text: str, default_shapes: dict) -> list[tuple[int, ...]]:
    """--sizes: '12288,786432' (element counts; default_shapes gives their shapes, else [4, n/4] or [1, n]) or
    '4x3x32x32'."""
    shapes = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        try:
            if "x" in item:
                shape = tuple(int(s) for s in item.split("x"))
            else:
                n = int(item.replace("_", ""))
                shape = default_shapes.get(n) or ((4, n // 4) if n % 4 == 0 else (1, n))
        except ValueError:
            raise SystemExit(f"--sizes: expected element counts or shapes like 4x3x32x32, got {item!r}")
        if len(shape) < 2 or min(shape) < 1:
            raise SystemExit(f"--sizes: expected a shape [B, ...] with positive sizes, got {item!r}")
        shapes.append(shape)
    if not shapes:
        raise SystemExit("--sizes: expected at least one size")
    return shapes


# ----------------------------------------------------------------------------------------------------------
# What a run records about itself
# ----------------------------------------------------------------------------------------------------------

def load_average() -> float | None:
    """The 1-minute load average (None where the OS does not tell)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()


def run_meta(device: torch.device, argv=None, **settings) -> dict:
    """The settings a result is read with: date, versions, device, threads, the load at the start, the command
    line (argv, or sys.argv's when None) and the benchmark's own `settings`."""
    return dict(load_average_at_start=load_average(), cpu_count=os.cpu_count(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                fastdiff=fastdiff.__version__, torch=torch.__version__, python=platform.python_version(),
                device=str(device), device_name=device_name(device), cpu_threads=torch.get_num_threads(),
                interop_threads=torch.get_num_interop_threads(), omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
                **settings, argv=sys.argv[1:] if argv is None else list(argv))


def warn_if_busy(device: torch.device, load: float | None, detail: str = "") -> None:
    """Say so when the CPUs were busy as a CPU run started: its timings will be noisy."""
    if device.type == "cpu" and load is not None and load >= 0.5 * (os.cpu_count() or 1):
        print(f"note: the CPUs were busy as this run started (1-minute load average {load:.2f} on {os.cpu_count()} "
              f"cores): timings will be noisy{detail}")


def timing_reasons(name: str, device: torch.device) -> list[str]:
    """Why backend `name` is not timed on `device` (empty: it is): it cannot run there, or it would run only in
    Triton's interpreter."""
    probe = torch.empty(1, device=device)
    found = backends.reasons(name, probe, (probe,))
    if name == "triton" and not found and device.type == "cpu":
        found = [INTERPRETER_REASON]
    return found


# ----------------------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------------------

def sync(device) -> None:
    """Wait for the device's queued work (nothing to wait for on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(functions: dict, device, repeats: int, budget_s: float, min_repeats: int = 3,
               min_measure_s: float = 1e-3) -> dict:
    """{name: median seconds per call of fn() and how it was measured} for every fn in `functions`.

    Measurements are interleaved (one of each function per round), so that load from other processes falls
    on all of them alike and their ratios stay fair. Each measurement runs `number` back-to-back calls to last
    >= min_measure_s, with the device synchronized around it; a function stops after `repeats` measurements,
    or once it has spent budget_s seconds and has min_repeats. Every fn has already run once (warm-up).
    """
    state = {}
    for name, fn in functions.items():
        once = _measure(fn, 1, device)
        number = max(1, min(10_000, math.ceil(min_measure_s / max(once, 1e-9))))
        samples = [once] if number == 1 else []  # a slow call's calibration run is already a valid sample
        state[name] = dict(number=number, samples=samples, spent=once)

    def wants_more(s):
        return len(s["samples"]) < repeats and (len(s["samples"]) < min_repeats or s["spent"] < budget_s)

    while any(wants_more(s) for s in state.values()):
        for name, fn in functions.items():
            s = state[name]
            if wants_more(s):
                seconds = _measure(fn, s["number"], device)
                s["samples"].append(seconds)
                s["spent"] += seconds * s["number"]
    return {name: dict(seconds=statistics.median(s["samples"]), min_seconds=min(s["samples"]),
                       repeats=len(s["samples"]), number=s["number"]) for name, s in state.items()}


def _measure(fn, number: int, device) -> float:
    """Seconds per call of `number` back-to-back calls of fn(), the device synchronized before and after."""
    sync(device)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    sync(device)
    return (time.perf_counter() - start) / number


def median_round_robin(functions: dict, repeats: int, device=None) -> dict:
    """{name: median seconds per call} of calls measured round-robin (one call of each function per round, after a
    warm-up round), so that a busy or slowing machine affects them all alike; the device is synchronized after each
    call when it is a CUDA device. For calls long enough to time one by one, e.g. a whole sampler."""
    device = torch.device("cpu") if device is None else torch.device(device)
    for fn in functions.values():
        fn()
    sync(device)
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def relative_difference(actual, expected) -> float:
    """max |actual - expected| / max |expected| over corresponding tensors of two sequences (0 when they agree bit
    for bit): how far an implementation's outputs are from the reference's."""
    worst = 0.0
    for a, e in zip(actual, expected):
        worst = max(worst, float((a.double() - e.double()).abs().max() / e.double().abs().max().clamp_min(1e-30)))
    return worst


# ----------------------------------------------------------------------------------------------------------
# Counting: launches, syncs and bytes of eager code
# ----------------------------------------------------------------------------------------------------------

SYNC_OPS = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "nonzero_static"}
LAUNCHING_SYNC_OPS = {"nonzero", "nonzero_static"}  # these run a kernel, then wait for its result
METADATA_OPS = {"_unsafe_view", "lift_fresh", "alias", "detach", "_reshape_alias", "set_", "resize_"}
ALLOCATION_OPS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
OVERWRITE_OPS = {"copy_", "fill_", "zero_", "normal_", "uniform_", "random_", "bernoulli_", "exponential_"}


class OpCounter(TorchDispatchMode):
    """Counts, per marked part of the work (mark(name) names the part that follows), the aten ops it executes:
    kernel launches, host syncs and modelled bytes. Used as a context manager around eager code.

    Rules, applied to every aten op that reaches this mode (composite ops arrive decomposed):
      host sync      _local_scalar_dense, item, is_nonzero, nonzero, nonzero_static: the host waits for the
                     device (bool(tensor) and float(tensor) arrive as _local_scalar_dense). nonzero also
                     runs a kernel and counts as a launch; the others are a device-to-host copy, not a launch.
      not a launch   view and metadata ops (OpOverload.is_view, _unsafe_view, lift_fresh, alias, detach, ...),
                     ops that return no tensor (size, promote_types, ...), allocation-only ops (empty,
                     empty_like, empty_strided, new_empty*: memory, no kernel), and factory ops on 0-d
                     scalars (no tensor input and only 0-d outputs, e.g. scalar_tensor, full([])).
      kernel launch  every other op, including ops on 0-d or [B] tensors (sigma arithmetic launches a kernel
                     on a GPU even though it moves no data), and factories of bigger tensors (arange, randn_like).
      bytes          for every op that is not a view: bytes of tensor inputs read plus tensor outputs written.
                     A tensor counts its distinct elements (stride-0 broadcast dims once) times its element
                     size, and not at all if it has <= B elements (B = batch): per-sample values are scalars.
                     Arguments an op only overwrites (out=, the self of copy_/fill_/normal_/...) and the
                     input of *_like and new_* factories (whose dtype and device they take) are not read.
                     Each distinct tensor counts once per op.
    bytes per element = the total divided by the number of elements of the state x.
    """

    def __init__(self, batch: int, op: str = "step"):
        super().__init__()
        self.batch = batch
        self.op = op  # what the work is counted under until the first mark()
        self.launches, self.syncs, self.bytes = Counter(), Counter(), Counter()
        self.names: dict[str, Counter] = {}

    def mark(self, op: str) -> None:
        self.op = op

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func._schema.name.split("::")[-1]
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        is_view = func.is_view or name in METADATA_OPS
        if name in SYNC_OPS:
            self.syncs[self.op] += 1
            launch = name in LAUNCHING_SYNC_OPS
        elif is_view or not outputs or name in ALLOCATION_OPS:
            launch = False
        elif not inputs and all(t.ndim == 0 for t in outputs):
            launch = False  # a factory op on a 0-d scalar
        else:
            launch = True
        if launch:
            self.launches[self.op] += 1
            self.names.setdefault(self.op, Counter())[name] += 1
        if not is_view:
            self.bytes[self.op] += self._bytes_read(func, name, args, kwargs) + self._bytes(outputs)
        return out

    def _bytes_read(self, func, name: str, args, kwargs) -> int:
        if name.endswith("_like") or name.startswith("new_"):
            return 0  # *_like and new_* factories (x.new_ones(...)) read only the input's metadata
        read = []
        for index, argument in enumerate(func._schema.arguments):
            value = args[index] if index < len(args) and not argument.kwarg_only else kwargs.get(argument.name)
            written = argument.alias_info is not None and argument.alias_info.is_write
            if written and (argument.kwarg_only or name in OVERWRITE_OPS):
                continue  # an out= argument, or the self an op overwrites without reading
            read += [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]
        return self._bytes(read)

    def _bytes(self, tensors) -> int:
        total, seen = 0, set()
        for t in tensors:
            key = (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype)
            elements = math.prod(s for s, st in zip(t.shape, t.stride()) if st != 0) if t.numel() else 0
            if key in seen or elements <= self.batch:
                continue
            seen.add(key)
            total += elements * t.element_size()
        return total


# ----------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------

def model_bytes(model: tuple, element_size: int) -> float:
    """Bytes per element of a (reads, writes) model: one element of each full-size tensor read or written."""
    reads, writes = model
    return float(element_size * (len(reads) + len(writes)))


def fmt(value, spec: str, width: int) -> str:
    """`value` formatted with `spec` in `width` columns, or '-' when there is none."""
    return f"{'-' if value is None else format(value, spec):>{width}}"


def write_csv(path: Path, rows: list[dict]) -> Path:
    """Rows as CSV, with the union of their keys as columns in first-seen order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_json(path: Path, data: dict) -> Path:
    """`data` as indented JSON (values JSON does not know, as strings)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path


@contextlib.contextmanager
def randn_like_from(stream):
    """Inside the block, torch.randn_like(x) returns stream(i) on its i-th call (from 0), in x's dtype and on its
    device; a tensor of another shape is a ValueError. This is how a check hands fastdiff's noise to k-diffusion's
    sample_heun, which draws its churn noise with torch.randn_like and takes no noise function."""
    real, calls = torch.randn_like, iter(range(1 << 62))

    def randn_like(x, *args, **kwargs):
        i = next(calls)
        noise = stream(i)
        if noise.shape != x.shape:
            raise ValueError(f"randn_like_from: call {i} asked for the shape {tuple(x.shape)}, the stream gave "
                             f"{tuple(noise.shape)}")
        return noise.to(dtype=x.dtype, device=x.device, copy=True)

    torch.randn_like = randn_like
    try:
        yield
    finally:
        torch.randn_like = real
