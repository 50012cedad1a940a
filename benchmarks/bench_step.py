"""Benchmark: the elementwise work of one EDM Heun step with churn (the network excluded), three ways side by side.

    eager reference      fastdiff.ops.churn / euler_step / heun_step with backend="reference", called as
                         fastdiff.sampling.loop.run_plan calls them (per-step values indexed from device tables,
                         noise from fastdiff's Philox generator keyed by per-sample seeds)
    k-diffusion          k-diffusion's own `sample_heun` (the installed 0.1.1.post1 sampling.py, loaded by
      sample_heun        fastdiff.testing.k_diffusion_sampling()), called on the two levels of this step so that
                         its loop runs once, with a stand-in network that returns the precomputed denoiser outputs
                         (so the network costs nothing): torch.randn_like noise, tensor-valued sigmas, Python `if`s
                         on them. What the function does around the step is part of its cost and is timed with it:
                         s_in = x.new_ones([B]) and the network's sigma arguments sigma * s_in ([B]-sized tensors),
                         its torch.no_grad() context, and a disabled tqdm trange
    fused (triton)       the same fastdiff.ops calls with backend="triton": three kernels; its launches and
                         bytes come from a model of the kernels' loads and stores (FUSED_MODEL), and it is
                         timed only when a CUDA device is present (the Triton interpreter is no speed test)

Part 1 (work per step) counts, with a TorchDispatchMode, the aten ops each eager implementation runs for each
op and for the whole step: kernel launches, host syncs and modelled bytes per element (rules in
benchmarks/_harness.py's OpCounter).
Part 2 (time per step) times, in the same run on the current device, the eager reference step, the
k-diffusion sample_heun call, torch.compile(eager reference step, fullgraph=True), a device copy (the bandwidth
yardstick) and, on CUDA, the fused step; it reports achieved GB/s (modelled bytes / time), the fraction of the copy's
GB/s, and speedups against the eager reference and torch.compile, all from this one run.
The checks compare every implementation's (x_hat, x_next, result) with the eager reference's; for k-diffusion,
whose noise is its own torch.randn_like draw, the checked call gets the reference's noise from torch.randn_like.

    python3 benchmarks/bench_step.py                 # default sizes, 1-2 minutes on a 2-core CPU
    python3 benchmarks/bench_step.py --quick         # smoke run, well under a minute
    python3 benchmarks/bench_step.py --sizes 786432,8x3x64x64 --repeats 50 --device cuda

The table is printed; CSV and JSON go to benchmarks/results/ (or --out). Nothing here asserts a timing.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastdiff  # noqa: E402
from fastdiff import backends, ops  # noqa: E402
from fastdiff.rng import SAMPLER_OFFSET  # noqa: E402
from fastdiff.sampling.plan import plan_steps  # noqa: E402
from fastdiff.testing import K_DIFFUSION_VERSION, k_diffusion_sampling  # noqa: E402
from _harness import (OpCounter, at_least, common_arguments, fmt, make_parser, model_bytes, parse_sizes,  # noqa: E402
                      randn_like_from, relative_difference, run_meta, setup, sync, time_calls, timing_reasons,
                      warn_if_busy, write_csv, write_json)

OPS = ("churn", "euler_step", "heun_step")
STEP = "step"  # the row that sums the three ops

# Element counts -> the batch each stands for (fp32, [B, C, H, W]).
DEFAULT_SHAPES = {
    12_288: (4, 3, 32, 32),  # CIFAR-10 32x32, batch 4
    786_432: (64, 3, 64, 64),  # ImageNet / FFHQ 64x64, batch 64
    6_291_456: (32, 3, 256, 256),  # 256x256 images, batch 32
    16_777_216: (16, 4, 512, 512),  # 4-channel 512x512, batch 16
}
QUICK_SHAPES = ((4, 3, 32, 32), (16, 3, 32, 32))  # 12,288 and 49,152 elements

# The sampler step benchmarked: EDM's stochastic settings (S_churn 40, S_min 0.05, S_max 50, S_noise 1.003),
# 18 Karras steps, step 9 (sigma 1.92 -> 1.09 via t_hat 2.72): churn is on and Heun's correction is taken.
SCHEDULE = dict(num_steps=18, S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003)
STEP_INDEX = 9

# k-diffusion's sample_heun is called on the 2-level slice (sigma_i, sigma_{i+1}), and it takes the churn from the
# length of the sigmas it is given: gamma = min(s_churn / (len(sigmas) - 1), sqrt(2) - 1) if s_tmin <= sigma_i <= s_tmax
# (else 0).
# Over the full 18-step schedule that is min(40 / 18, 0.4142) and over the slice min(40 / 1, 0.4142): both clamp to
# sqrt(2) - 1, and sigma_9 = 1.92 lies in [0.05, 50] either way, so S_churn is passed unchanged and the sliced call
# takes the same step (sigma_hat = t_hat[9] = 2.72) as step 9 of the full run. main() stops if SCHEDULE is changed
# so that they would differ; then s_churn = S_churn / num_steps would give the slice the full schedule's gamma.
KDIFFUSION_S_CHURN = SCHEDULE["S_churn"]

# The fused path's memory traffic, read off its kernels: the full-size tensors each one loads and stores
# (per-sample scalars, seeds and the offset are <= B elements, ignored as in the measurement). One launch each.
#   churn       fastdiff/ops/kernels/randn.py _noise_kernel (HAS_X):  loads x,                            stores x_hat
#   euler_step  fastdiff/ops/kernels/euler_step.py:                   loads x_hat, denoised,              stores x_next
#   heun_step   fastdiff/ops/kernels/heun_step.py:                    loads x_hat, denoised, denoised_next, stores out
#                                                        (x_next is recomputed, not read back)
FUSED_MODEL = {
    "churn": (("x",), ("x_hat",)),
    "euler_step": (("x_hat", "denoised"), ("x_next",)),
    "heun_step": (("x_hat", "denoised", "denoised_next"), ("out",)),
}
# torch.compile of the whole step is one graph; its modelled bytes are the graph's inputs and outputs
# (reads x, denoised, denoised_next; writes x_hat, x_next, out): a lower bound on what it moves.
COMPILE_MODEL = (("x", "denoised", "denoised_next"), ("x_hat", "x_next", "out"))
COPY_MODEL = (("x",), ("copy",))

LABELS = {
    "reference": "eager reference",
    "kdiffusion": "k-diffusion sample_heun",
    "fused": "fused (triton), out",
    "cpu": "fused (C++ cpu), out",
    "compile": "torch.compile(reference), out",
    "copy": "device copy",
    # The C++ step's ops one at a time (speedups are per step, so these rows carry bandwidth only).
    "cpu_churn": "  C++ cpu churn, out",
    "cpu_euler_step": "  C++ cpu euler_step, out",
    "cpu_heun_step": "  C++ cpu heun_step, out",
}


# ----------------------------------------------------------------------------------------------------------
# The three step implementations. Each returns (x_hat, x_next, out): what the two network calls around the
# step read (x_hat, x_next) and the step's result. `mark(op)` names the op that the following work belongs to.
# ----------------------------------------------------------------------------------------------------------

def _unmarked(op: str) -> None:
    pass


def fastdiff_step(x, denoised, denoised_next, seeds, offsets, t, t_hat, noise_std, i: int, *,
                  backend: str = "reference", mark=_unmarked, outs=(None, None, None)):
    """Step i of fastdiff.sampling.loop.run_plan with churn and Heun's correction, the denoiser outputs given;
    `outs` are preallocated buffers for (x_hat, x_next, out), as a loop on fixed buffers passes them."""
    mark("churn")
    x_hat = ops.churn(x, seeds, offsets[i], noise_std[i], out=outs[0], backend=backend)
    mark("euler_step")
    x_next = ops.euler_step(x_hat, denoised, t_hat[i], t[i + 1], out=outs[1], backend=backend)
    mark("heun_step")
    out = ops.heun_step(x_hat, denoised, denoised_next, t_hat[i], t[i + 1], out=outs[2], backend=backend)
    return x_hat, x_next, out


def fastdiff_step_into(outs, *args):
    """The eager reference step writing its three results into preallocated buffers (what torch.compile compiles)."""
    for buffer, result in zip(outs, fastdiff_step(*args)):
        buffer.copy_(result)
    return outs


def kdiffusion_step(sample_heun, x, denoised, denoised_2, sigmas, s_churn: float, s_tmin: float, s_tmax: float,
                    s_noise: float, *, mark=_unmarked):
    """One step of k-diffusion's own `sample_heun`: the function itself, called on sigmas = (sigma_i, sigma_{i+1})
    (a device tensor) so that its loop runs once.

    The network is a stand-in that returns `denoised` on its first call and `denoised_2` on its second, and keeps
    the x it is given each time: x_hat (after the churn) and k-diffusion's x_2 (the Euler step), which with the
    returned result make the same triple as fastdiff_step returns. The work is split into ops where the network
    calls fall: before the first call is churn (including s_in = x.new_ones([B]), the range test on the tensor sigma
    that decides the churn, and sigma_hat * s_in), between the calls euler_step (including `if sigmas[i + 1] == 0`
    and sigma_next * s_in), after the second call heun_step.
    """
    outputs = iter((("euler_step", denoised), ("heun_step", denoised_2)))
    seen = []

    def model(x_in, sigma):
        op, output = next(outputs)
        seen.append(x_in)
        mark(op)  # the work after this network call belongs to the next op
        return output

    mark("churn")
    out = sample_heun(model, x, sigmas, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise, disable=True)
    x_hat, x_next = seen  # a ValueError if sample_heun did not call the network exactly twice
    return x_hat, x_next, out


# ----------------------------------------------------------------------------------------------------------
# Counting launches, syncs and bytes (the rules: _harness.OpCounter)
# ----------------------------------------------------------------------------------------------------------

def counted_rows(counter: OpCounter, implementation: str, numel: int) -> list[dict]:
    """One row per op and one for the whole step (the sum: every op of the step ran under one of the marks)."""
    rows = []
    for op in OPS + (STEP,):
        pick = (lambda c: sum(c.values())) if op == STEP else (lambda c: c[op])
        rows.append(dict(implementation=implementation, op=op, launches=pick(counter.launches), syncs=pick(counter.syncs),
                         bytes_per_element=pick(counter.bytes) / numel, source="measured"))
    return rows


def modelled_rows(implementation: str, model: dict, element_size: int) -> list[dict]:
    """Rows of a fused path: one launch per op, no sync, bytes from the tensors each kernel loads and stores."""
    rows = [dict(implementation=implementation, op=op, launches=1, syncs=0,
                 bytes_per_element=model_bytes(reads_writes, element_size), source="model")
            for op, reads_writes in model.items()]
    rows.append(dict(implementation=implementation, op=STEP, launches=sum(r["launches"] for r in rows), syncs=0,
                     bytes_per_element=sum(r["bytes_per_element"] for r in rows), source="model"))
    return rows


# ----------------------------------------------------------------------------------------------------------
# One size
# ----------------------------------------------------------------------------------------------------------

def make_inputs(shape, device):
    """The state, both denoiser outputs, seeds and run_plan's per-step device tables for SCHEDULE."""
    generator = torch.Generator().manual_seed(0)
    plan = plan_steps(**SCHEDULE)
    table = lambda values: torch.tensor(values, dtype=torch.float64).to(device=device, dtype=torch.float32)  # noqa: E731
    batch = shape[0]
    x = (torch.randn(shape, generator=generator) * plan.t[STEP_INDEX]).to(device)
    denoised = torch.randn(shape, generator=generator).to(device)
    denoised_next = denoised + 0.01 * torch.randn(shape, generator=generator).to(device)
    return dict(
        x=x, denoised=denoised, denoised_next=denoised_next,
        seeds=torch.arange(batch, dtype=torch.int64, device=device) * 7919,
        offsets=SAMPLER_OFFSET + torch.arange(plan.num_steps, dtype=torch.int64, device=device),
        t=table(plan.t), t_hat=table(plan.t_hat), noise_std=table(plan.noise_std),
        outs=tuple(torch.empty_like(x) for _ in range(3)),
    )


def step_functions(inputs, fused_reasons):
    """({name: step callable taking `mark`, or None when it cannot run here}, fastdiff_step's arguments)."""
    x, den, den2 = inputs["x"], inputs["denoised"], inputs["denoised_next"]
    args = (x, den, den2, inputs["seeds"], inputs["offsets"], inputs["t"], inputs["t_hat"], inputs["noise_std"], STEP_INDEX)
    sigmas = inputs["t"][STEP_INDEX:STEP_INDEX + 2]  # k-diffusion's sigmas: this step's two levels, a device tensor
    sample_heun = k_diffusion_sampling().sample_heun  # k-diffusion's own function, looked up here (not copied)
    s = SCHEDULE
    outs = inputs["outs"]  # the fused paths write into fixed buffers, as a sampler loop on buffers does
    return {
        "reference": lambda mark=_unmarked: fastdiff_step(*args, backend="reference", mark=mark),
        "kdiffusion": lambda mark=_unmarked: kdiffusion_step(sample_heun, x, den, den2, sigmas, KDIFFUSION_S_CHURN,
                                                             s["S_min"], s["S_max"], s["S_noise"], mark=mark),
        "fused": None if fused_reasons else (lambda mark=_unmarked: fastdiff_step(*args, backend="triton", mark=mark,
                                                                                  outs=outs)),
        "cpu": (lambda mark=_unmarked: fastdiff_step(*args, backend="cpu", mark=mark, outs=outs))
        if x.device.type == "cpu" and not backends.reasons("cpu", x, (x,)) else None,
    }, args


def bench_size(shape, device, repeats, budget_s, fused_reasons, show_ops) -> tuple[list, list, dict]:
    """Part 1's rows, Part 2's rows and the agreement checks for one shape."""
    numel, batch = math.prod(shape), shape[0]
    inputs = make_inputs(shape, device)
    element_size = inputs["x"].element_size()
    functions, args = step_functions(inputs, fused_reasons)
    work, checks, timed, extra = [], {}, {}, {}
    bytes_per_element = {}

    # Eager implementations: one counted run, which is also their warm-up.
    for name in ("reference", "kdiffusion"):
        counter = OpCounter(batch)
        with counter:
            result = functions[name](counter.mark)
        sync(device)
        if name == "reference":
            expected = result
        rows = counted_rows(counter, LABELS[name], numel)
        work += rows
        bytes_per_element[name] = rows[-1]["bytes_per_element"]
        if show_ops:
            for op in OPS:
                listed = ", ".join(f"{n} x{c}" for n, c in sorted(counter.names.get(op, {}).items()))
                print(f"  [{LABELS[name]} / {op} @ {numel:,}] launches: {listed}")
        del result
        timed[name] = functions[name]

    # k-diffusion against the reference: the same step given the same noise (its torch.randn_like returns the
    # reference's Philox draw for this one untimed, uncounted call), so that all three outputs must agree.
    i = STEP_INDEX
    noise = ops.randn(inputs["seeds"], shape, offset=inputs["offsets"][i], device=device, backend="reference")
    with randn_like_from(lambda _, noise=noise: noise):  # one churn draw, the reference's
        result = functions["kdiffusion"]()
    sync(device)
    checks["k-diffusion sample_heun (same noise) vs eager reference"] = relative_difference(result, expected)
    del result, noise

    # The fused path: its model everywhere, its timing on CUDA only.
    work += modelled_rows(LABELS["fused"], FUSED_MODEL, element_size)
    bytes_per_element["fused"] = work[-1]["bytes_per_element"]
    if functions["fused"] is not None:
        result = functions["fused"]()
        sync(device)
        checks["fused vs eager reference"] = relative_difference(result, expected)
        del result
        timed["fused"] = functions["fused"]

    # The C++ CPU kernels (same traffic model as the Triton kernels: one pass per op), timed on CPU tensors.
    if functions["cpu"] is not None:
        work += modelled_rows(LABELS["cpu"], FUSED_MODEL, element_size)
        bytes_per_element["cpu"] = work[-1]["bytes_per_element"]
        result = functions["cpu"]()
        checks["C++ cpu vs eager reference"] = relative_difference(result, expected)
        del result
        timed["cpu"] = functions["cpu"]
        x_hat, x_next, out = inputs["outs"]
        t, t_hat, i = inputs["t"], inputs["t_hat"], STEP_INDEX
        timed["cpu_churn"] = lambda: ops.churn(inputs["x"], inputs["seeds"], inputs["offsets"][i], inputs["noise_std"][i],
                                               out=x_hat, backend="cpu")
        timed["cpu_euler_step"] = lambda: ops.euler_step(x_hat, inputs["denoised"], t_hat[i], t[i + 1], out=x_next,
                                                         backend="cpu")
        timed["cpu_heun_step"] = lambda: ops.heun_step(x_hat, inputs["denoised"], inputs["denoised_next"], t_hat[i],
                                                       t[i + 1], out=out, backend="cpu")
        for op in OPS:
            bytes_per_element[f"cpu_{op}"] = model_bytes(FUSED_MODEL[op], element_size)

    # torch.compile of the whole eager reference step (its three ops, both denoiser outputs as inputs), writing into
    # preallocated buffers like the fused paths.
    torch._dynamo.reset()
    compiled_into = torch.compile(fastdiff_step_into, fullgraph=True, dynamic=False)
    compile_outs = tuple(torch.empty_like(inputs["x"]) for _ in range(3))
    compiled = lambda *a: compiled_into(compile_outs, *a)  # noqa: E731
    start = time.perf_counter()
    result = compiled(*args)
    sync(device)
    extra["compile"] = dict(compile_seconds=time.perf_counter() - start)
    checks["torch.compile vs eager reference"] = relative_difference(result, expected)
    del result, expected
    bytes_per_element["compile"] = model_bytes(COMPILE_MODEL, element_size)
    timed["compile"] = lambda: compiled(*args)

    # The bandwidth yardstick: copy x into a preallocated buffer.
    buffer = torch.empty_like(inputs["x"])
    buffer.copy_(inputs["x"])
    bytes_per_element["copy"] = model_bytes(COPY_MODEL, element_size)
    timed["copy"] = lambda: buffer.copy_(inputs["x"])

    measured = time_calls(timed, device, repeats, budget_s)
    timings = []
    for name in ("reference", "kdiffusion", "fused", "cpu", "cpu_churn", "cpu_euler_step", "cpu_heun_step", "compile", "copy"):
        if name.startswith("cpu") and functions["cpu"] is None:
            continue
        if name in measured:
            timings.append(dict(implementation=LABELS[name], **measured[name], **extra.get(name, {})))
        else:
            timings.append(dict(implementation=LABELS[name], seconds=None, note="not timed here (needs CUDA): model only"))
    finish_timings(timings, bytes_per_element, numel)
    for row in work + timings:
        row.update(size=numel, shape="x".join(map(str, shape)))
    return work, timings, checks


NOISE_LABELS = {
    "eager": "eager x + s * randn_like(x)",
    "compile": "torch.compile(eager)",
    "reference": "fastdiff reference churn",
    "cpu": "fastdiff C++ cpu churn",
    "cpu_out": "fastdiff C++ cpu churn, out",
    "compile_out": "torch.compile(eager), out",
    "triton": "fastdiff triton churn",
}


def bench_noise(shape, device, repeats, budget_s, fused_reasons) -> list[dict]:
    """Noise injection x + s * eps alone: PyTorch's generator (eager and compiled) against fastdiff's in-kernel one.

    Modelled bytes are 8 per fp32 element for all (read x, write the result); eager PyTorch also writes and reads eps.
    """
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=generator).to(device)
    seeds = torch.arange(shape[0], device=device)
    offset, std = torch.tensor(SAMPLER_OFFSET, device=device), torch.tensor(0.7, device=device)

    def eager():
        return x + std * torch.randn_like(x)

    buffer = torch.empty_like(x)

    def eager_into():
        return buffer.copy_(x + std * torch.randn_like(x))

    torch._dynamo.reset()
    compiled = torch.compile(eager, fullgraph=True)
    compiled()
    compiled_into = torch.compile(eager_into, fullgraph=True)
    compiled_into()
    functions = {"eager": eager, "compile": compiled, "compile_out": compiled_into,
                 "reference": lambda: ops.churn(x, seeds, offset, std, backend="reference")}
    if device.type == "cpu" and not backends.reasons("cpu", x, (x,)):
        functions["cpu"] = lambda: ops.churn(x, seeds, offset, std, backend="cpu")
        functions["cpu_out"] = lambda: ops.churn(x, seeds, offset, std, out=buffer, backend="cpu")
    if device.type == "cuda" and not fused_reasons:
        functions["triton"] = lambda: ops.churn(x, seeds, offset, std, backend="triton")
    measured = time_calls(functions, device, repeats, budget_s)
    numel = x.numel()
    rows = []
    for name, m in measured.items():
        rows.append(dict(size=numel, shape="x".join(map(str, shape)), implementation=NOISE_LABELS[name], **m,
                         gbps=8 * numel / m["seconds"] / 1e9,
                         speedup_vs_eager=measured["eager"]["seconds"] / m["seconds"],
                         speedup_vs_compile=measured["compile"]["seconds"] / m["seconds"]))
    return rows


def print_noise(rows: list[dict], device: torch.device) -> None:
    print(f"\nNoise injection x + s * eps on {device} (eps generated inside; GB/s at 8 B/element; "
          f"xeager, xcomp = speedup vs eager x + s * randn_like(x) and vs its torch.compile)")
    print(f"{'size':>11} {'shape':<14} {'implementation':<30} {'ms':>10} {'n':>3} {'ns/elem':>8} {'GB/s':>8} {'xeager':>7} {'xcomp':>7}")
    for r in rows:
        print(f"{r['size']:>11,} {r['shape']:<14} {r['implementation']:<30} {r['seconds'] * 1e3:>10.3f} {r['repeats']:>3} "
              f"{r['seconds'] * 1e9 / r['size']:>8.3f} {r['gbps']:>8.2f} {r['speedup_vs_eager']:>7.2f} {r['speedup_vs_compile']:>7.2f}")


def finish_timings(timings: list[dict], bytes_per_element: dict, numel: int) -> None:
    """Add modelled bytes, GB/s, fraction of the copy's GB/s and speedups (all from this run) to each row."""
    key = {label: name for name, label in LABELS.items()}
    seconds = {key[r["implementation"]]: r["seconds"] for r in timings}
    for row in timings:
        name = key[row["implementation"]]
        row["bytes_per_element"] = bytes_per_element[name]
        row["bytes_source"] = {"reference": "measured", "kdiffusion": "measured", "fused": "model", "cpu": "model",
                               "cpu_churn": "model", "cpu_euler_step": "model", "cpu_heun_step": "model",
                               "compile": "graph I/O model", "copy": "model"}[name]
        t = row["seconds"]
        row["gbps"] = bytes_per_element[name] * numel / t / 1e9 if t else None
    copy_gbps = next(r["gbps"] for r in timings if r["implementation"] == LABELS["copy"])
    for row in timings:
        name, t = key[row["implementation"]], row["seconds"]
        timed = t is not None and name != "copy" and not name.startswith("cpu_")  # per-step speedups only
        row["fraction_of_copy"] = row["gbps"] / copy_gbps if row["gbps"] is not None else None
        row["speedup_vs_reference"] = seconds["reference"] / t if timed else None
        row["speedup_vs_compile"] = seconds["compile"] / t if timed else None


# ----------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------

def print_work(work: list[dict], device: torch.device) -> None:
    """One row per implementation and op; bytes per element for every size (per-sample tensors make it vary)."""
    sizes = sorted({r["size"] for r in work})
    rows: dict[tuple, dict] = {}
    for r in work:
        rows.setdefault((r["implementation"], r["op"]), {})[r["size"]] = r
    span = lambda values: f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"  # noqa: E731
    print(f"\nWork per step: kernel launches, host syncs, modelled bytes per element at each size "
          f"(eager: measured with a TorchDispatchMode on {device.type}; fused: model of its kernels' loads and stores)")
    print(f"{'implementation':<23} {'op':<11} {'launches':>8} {'syncs':>6}  source   "
          + " ".join(f"{'B/elem@' + format(n, ','):>17}" for n in sizes))
    for (implementation, op), by_size in rows.items():
        first = next(iter(by_size.values()))
        print(f"{implementation:<23} {op:<11} {span([r['launches'] for r in by_size.values()]):>8} "
              f"{span([r['syncs'] for r in by_size.values()]):>6}  {first['source']:<8} "
              + " ".join(f"{by_size[n]['bytes_per_element']:>17.1f}" for n in sizes))


def print_timings(timings: list[dict], device: torch.device) -> None:
    print(f"\nTime per step on {device} (median of n measurements after warm-up; GB/s = modelled bytes / time; "
          f"%copy = GB/s / copy GB/s; xref, xcomp = speedup vs eager reference, vs torch.compile)")
    header = (f"{'size':>11} {'shape':<14} {'implementation':<30} {'ms/step':>10} {'n':>3} {'B/elem':>7} "
              f"{'GB/s':>8} {'%copy':>6} {'xref':>7} {'xcomp':>7}")
    print(header)
    for r in timings:
        if r["seconds"] is None:
            print(f"{r['size']:>11,} {r['shape']:<14} {r['implementation']:<30} {'-':>10} {'':>3} "
                  f"{r['bytes_per_element']:>7.1f}  {r.get('note', '')}")
            continue
        pct = None if r["fraction_of_copy"] is None else 100 * r["fraction_of_copy"]
        print(f"{r['size']:>11,} {r['shape']:<14} {r['implementation']:<30} {r['seconds'] * 1e3:>10.3f} {r['repeats']:>3} "
              f"{r['bytes_per_element']:>7.1f} {fmt(r['gbps'], '.2f', 8)} {fmt(pct, '.1f', 6)} "
              f"{fmt(r['speedup_vs_reference'], '.2f', 7)} {fmt(r['speedup_vs_compile'], '.2f', 7)}")


def write_results(out_dir: Path, meta: dict, work: list[dict], timings: list[dict], checks: dict) -> list[Path]:
    return [write_csv(out_dir / "bench_step_work.csv", work), write_csv(out_dir / "bench_step_time.csv", timings),
            write_json(out_dir / "bench_step.json", dict(meta=meta, work=work, timings=timings, checks=checks))]


# ----------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--sizes", help="comma-separated element counts or shapes like 4x3x32x32 "
                        f"(default: {','.join(map(str, DEFAULT_SHAPES))})")
    common_arguments(parser, repeats=None, repeats_help="measurements per timing (default 25; --quick 5)",
                     quick="smoke run: two small sizes, few repeats",
                     budget="seconds one timing may take before it stops repeating (it still takes 3 measurements; "
                     "default 8, --quick 1)")
    parser.add_argument("--show-ops", action="store_true", help="list the aten ops counted as launches per op")
    a = parser.parse_args(argv)

    device = setup(a)
    shapes = parse_sizes(a.sizes, DEFAULT_SHAPES) if a.sizes else list(QUICK_SHAPES if a.quick else DEFAULT_SHAPES.values())
    repeats = a.repeats or (5 if a.quick else 25)
    budget = a.budget if a.budget is not None else (1.0 if a.quick else 8.0)
    at_least("repeats", repeats, 1)
    fused_reasons = timing_reasons("triton", device)
    try:
        kd = k_diffusion_sampling()
    except ImportError as error:
        raise SystemExit(f"bench_step.py times k-diffusion's own sample_heun: {error}") from None

    plan = plan_steps(**SCHEDULE)
    # The sliced sample_heun call must churn as step STEP_INDEX of the full schedule does (see KDIFFUSION_S_CHURN):
    # k-diffusion's formula with len(sigmas) - 1 = 1, against fastdiff's plan of the full schedule.
    in_range = SCHEDULE["S_min"] <= plan.t[STEP_INDEX] <= SCHEDULE["S_max"]
    sliced_gamma = min(KDIFFUSION_S_CHURN / (2 - 1), 2**0.5 - 1) if in_range else 0.0
    if sliced_gamma != plan.gamma[STEP_INDEX]:
        raise SystemExit(f"k-diffusion's gamma on the 2-level slice ({sliced_gamma}) differs from step {STEP_INDEX}'s "
                         f"of the full schedule ({plan.gamma[STEP_INDEX]}): set KDIFFUSION_S_CHURN to "
                         "S_churn / num_steps")
    meta = run_meta(
        device, argv, dtype="float32", repeats=repeats, budget_seconds=budget,
        schedule=SCHEDULE, step_index=STEP_INDEX, sigma=plan.t[STEP_INDEX], t_hat=plan.t_hat[STEP_INDEX],
        sigma_next=plan.t[STEP_INDEX + 1], shapes=["x".join(map(str, s)) for s in shapes],
        fused_model={op: dict(reads=list(r), writes=list(w)) for op, (r, w) in FUSED_MODEL.items()},
        compile_model=dict(reads=list(COMPILE_MODEL[0]), writes=list(COMPILE_MODEL[1])),
        fused_not_timed=fused_reasons or None,
        k_diffusion=dict(version=K_DIFFUSION_VERSION, function="sample_heun", file=kd.__file__,
                         sigmas=[plan.t[STEP_INDEX], plan.t[STEP_INDEX + 1]], s_churn=KDIFFUSION_S_CHURN,
                         gamma=sliced_gamma),
    )
    print(f"fastdiff {fastdiff.__version__} bench_step: one EDM Heun step with churn (step {STEP_INDEX} of "
          f"{SCHEDULE['num_steps']}, sigma {plan.t[STEP_INDEX]:.4g} -> t_hat {plan.t_hat[STEP_INDEX]:.4g} -> "
          f"{plan.t[STEP_INDEX + 1]:.4g}), float32, network excluded")
    print(f"device {device} ({meta['device_name']}), {meta['cpu_threads']} CPU threads, torch {torch.__version__}, "
          f"k-diffusion {K_DIFFUSION_VERSION} ({kd.__file__}); "
          f"sizes {', '.join(f'{math.prod(s):,} ({meta_shape})' for s, meta_shape in zip(shapes, meta['shapes']))}")
    warn_if_busy(device, meta["load_average_at_start"],
                 f", worst when {torch.get_num_threads()} OpenMP threads wait for a descheduled one "
                 "(--threads 1 is steadier)")

    work, timings, checks, noise = [], [], {}, []
    started = time.perf_counter()
    for shape in shapes:
        size_started = time.perf_counter()
        w, t, c = bench_size(shape, device, repeats, budget, fused_reasons, a.show_ops)
        work += w
        timings += t
        noise += bench_noise(shape, device, repeats, budget, fused_reasons)
        checks.update({f"{k} @ {math.prod(shape)}": v for k, v in c.items()})
        print(f"  {math.prod(shape):>11,} elements done in {time.perf_counter() - size_started:.1f} s", flush=True)
    meta["total_seconds"] = time.perf_counter() - started

    print_work(work, device)
    print_timings(timings, device)
    print_noise(noise, device)
    compile_times = [(r["size"], r["compile_seconds"]) for r in timings if "compile_seconds" in r]
    print("torch.compile time (first call, s): " + ", ".join(f"{n:,}: {t:.1f}" for n, t in compile_times))
    worst = max(checks.values(), default=0.0)
    print(f"\nChecks: max relative difference of the step's outputs vs the eager reference over all sizes: "
          f"{worst:.2e} ({', '.join(sorted({k.split(' @ ')[0] for k in checks}))})")
    if worst > 1e-4:
        print("WARNING: an implementation disagrees with the eager reference; its timing measures something else")
    paths = write_results(a.out, meta, work, timings + noise, checks)
    print(f"wrote {', '.join(str(p) for p in paths)} ({meta['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
