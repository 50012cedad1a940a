"""Benchmark: the EDM training loss's elementwise work (forward + backward, the network excluded), and whole
training steps, fused against eager, side by side in one run.

Part 1, the loss around a given network output F (F requires grad; y the clean images; one noise level per sample,
drawn once from EDM's log-normal, P_mean -1.2, P_std 1.2; EDM preconditioning with sigma_data 0.5; one seed per
sample). Every implementation returns the network's input x_in and the elementwise loss, then runs
torch.autograd.grad(loss.sum(), F):

    EDM-style eager            NVlabs/edm's EDMLoss + EDMPrecond, written here from their formulas:
                               n = randn_like(y) * sigma; x_in = c_in (y + n); D = c_skip (y + n) + c_out F;
                               loss = weight (D - y)^2
    torch.compile(EDM-style)   the same function under torch.compile(fullgraph=True) (AOTAutograd compiles the
                               backward too); randn_like is Inductor's generator
    fastdiff reference         fastdiff.ops.loss_input + loss_error, backend="reference" (Philox noise from seeds,
                               as readable torch ops)
    fused (C++ cpu)            the same ops with backend="cpu"; on CUDA "fused (triton)" and "fused (C++ cuda)"
    device copy                buffer.copy_(y): the bandwidth yardstick (and y.clone(), the same into a new tensor)

It reports, per size, the median time per forward + backward, speedups against EDM-style eager and torch.compile,
bytes per element (measured with _harness.OpCounter for the eager paths, a model for the fused kernels and for
the compiled graph), achieved GB/s and the fraction of the copy's GB/s; the fused paths are also timed stage by
stage. It checks that the fused loss, its gradient and x_in equal the reference (max relative difference), so a
wrong kernel cannot look fast.

Part 2, whole training steps: fastdiff.training.Trainer with TrainConfig(backend="reference") against the fused
backend, on the 2-D mixture with the default MLP (batch 256) and on random 32x32 images with a small U-Net (batch 16).

    python3 benchmarks/bench_loss.py                 # default sizes, a few minutes on a 2-core CPU
    python3 benchmarks/bench_loss.py --quick         # smoke run, well under a minute
    python3 benchmarks/bench_loss.py --sizes 786432,8x3x64x64 --repeats 50 --device cuda

The tables are printed; CSV and JSON go to benchmarks/results/ (or --out). Nothing here asserts a timing.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (OpCounter, at_least, common_arguments, fmt, make_parser, model_bytes, parse_sizes,  # noqa: E402
                      relative_difference, run_meta, setup, sync, time_calls, timing_reasons, warn_if_busy, write_csv,
                      write_json)

import fastdiff  # noqa: E402
from fastdiff import ops  # noqa: E402
from fastdiff.data import Dataset  # noqa: E402
from fastdiff.rng import LOSS_NOISE_OFFSET  # noqa: E402
from fastdiff.training import Trainer, TrainConfig  # noqa: E402

DEFAULT_SHAPES = {
    786_432: (64, 3, 64, 64),  # 64x64 images, batch 64
    16_777_216: (16, 4, 512, 512),  # 4-channel 512x512 (latent-size-like) tensors, batch 16
}
QUICK_SHAPES = ((4, 3, 32, 32), (16, 3, 32, 32))  # 12,288 and 49,152 elements

SIGMA_DATA = 0.5
P_MEAN, P_STD = -1.2, 1.2  # EDM's training distribution of noise levels
TOLERANCE = 1e-4  # max relative difference accepted between fp32 implementations of the same function

# Stages of one forward + backward. "sum" (loss.sum(), 4 B/elem, the same in every implementation) is timed but
# left out of the bytes per element used for GB/s, so that the fused path's figure is its kernels' model.
STAGES = ("loss_input", "loss_error", "sum", "backward")
COUNTED_STAGES = ("loss_input", "loss_error", "backward")

# The fused path's memory traffic (fp32, full-size tensors only; per-sample values and seeds are ignored):
#   loss_input   reads y,                     writes x_in                        8 B/elem
#   loss_error   reads y, F,                  writes loss, dloss/dF (saved)     16 B/elem
#   backward     reads grad_loss, dloss/dF,   writes grad_F                     12 B/elem
# 36 B/elem. (With loss.sum() the upstream gradient is a stride-0 expansion of one value, so the measured backward
# reads 4 B less, but autograd writes a zero gradient for the non-differentiable dloss/dF output: 12 B again.)
FUSED_MODEL = {
    "loss_input": (("y",), ("x_in",)),
    "loss_error": (("y", "F"), ("loss", "dloss_dF")),
    "backward": (("grad_loss", "dloss_dF"), ("grad_F",)),
}
COPY_MODEL = (("y",), ("copy",))

FUSED_BACKENDS = {"cpu": "fused (C++ cpu)", "triton": "fused (triton)", "cuda": "fused (C++ cuda)"}
SHORT = {"cpu": "C++ cpu", "triton": "triton", "cuda": "C++ cuda"}
LABELS = {"edm": "EDM-style eager", "compile": "torch.compile(EDM-style eager)", "reference": "fastdiff reference",
          **FUSED_BACKENDS, "copy": "device copy", "copy_new": "device copy, new output"}
MAIN_ORDER = ("edm", "compile", "reference", "cpu", "triton", "cuda", "copy", "copy_new")
YARDSTICKS = (LABELS["copy"], LABELS["copy_new"])

# Part 2: the two training cases.
TRAIN_CASES = {
    "mixture MLP": dict(batch_size=256, net="mlp", net_kwargs={}),
    "images U-Net": dict(batch_size=16, net="unet", net_kwargs=dict(model_channels=32, channel_mult=(1, 2), num_blocks=1)),
}
IMAGE_SHAPE = (3, 32, 32)


def _unmarked(stage: str) -> None:
    pass


# ----------------------------------------------------------------------------------------------------------
# Part 1: the implementations. Each forward returns (x_in, loss); fwd_bwd adds loss.sum() and the gradient in F.
# ----------------------------------------------------------------------------------------------------------

def make_inputs(shape, device):
    """y in [-1, 1], F (requires grad), per-sample sigma and EDM's coefficients (fp32 [B]), seeds."""
    generator = torch.Generator().manual_seed(0)
    batch = shape[0]
    y = (torch.rand(shape, generator=generator) * 2 - 1).to(device)
    F = torch.randn(shape, generator=generator).to(device).requires_grad_(True)
    sigma = (torch.randn(batch, generator=generator, dtype=torch.float64) * P_STD + P_MEAN).exp()
    s2 = sigma**2 + SIGMA_DATA**2
    coefficients = dict(sigma=sigma, c_skip=SIGMA_DATA**2 / s2, c_out=sigma * SIGMA_DATA / s2.sqrt(), c_in=1 / s2.sqrt(),
                        weight=s2 / (sigma * SIGMA_DATA) ** 2)
    inputs = {k: v.to(device=device, dtype=torch.float32) for k, v in coefficients.items()}
    view = (batch,) + (1,) * (len(shape) - 1)
    inputs.update({f"{k}4": v.view(view) for k, v in list(inputs.items())})  # EDM's [B, 1, 1, 1] broadcasting
    inputs.update(y=y, F=F, seeds=torch.arange(batch, dtype=torch.int64, device=device) * 7919 + 1)
    return inputs


def edm_forward(y, F, sigma, c_skip, c_out, c_in, weight, noise=None, mark=_unmarked):
    """EDM's loss around a given network output F (coefficients shaped [B, 1, ..., 1]); noise given or randn_like."""
    mark("loss_input")
    n = (torch.randn_like(y) if noise is None else noise) * sigma
    yn = y + n
    x_in = c_in * yn
    mark("loss_error")
    D = c_skip * yn + c_out * F
    return x_in, weight * (D - y) ** 2


def edm_args(inputs):
    return tuple(inputs[k] for k in ("y", "F", "sigma4", "c_skip4", "c_out4", "c_in4", "weight4"))


def fastdiff_forward(inputs, backend: str, mark=_unmarked):
    """fastdiff.ops.loss_input then loss_error on `backend`, the noise drawn from the per-sample seeds."""
    y, F, seeds = inputs["y"], inputs["F"], inputs["seeds"]
    mark("loss_input")
    x_in = ops.loss_input(y, inputs["sigma"], inputs["c_in"], seeds=seeds, backend=backend)
    mark("loss_error")
    loss = ops.loss_error(y, F, inputs["sigma"], inputs["c_skip"], inputs["c_out"], inputs["weight"], seeds=seeds,
                          backend=backend)
    return x_in, loss


def fwd_bwd(forward, F, mark=_unmarked):
    """(x_in, loss, grad_F) of one forward and loss.sum()'s backward to F."""
    x_in, loss = forward(mark)
    mark("sum")
    total = loss.sum()
    mark("backward")
    (grad,) = torch.autograd.grad(total, F)
    return x_in, loss.detach(), grad


def fused_backends(device: torch.device) -> tuple[list[str], dict[str, str]]:
    """(fused backends timed on this device, {backend: why it is skipped})."""
    timed, skipped = [], {}
    for name in FUSED_BACKENDS:
        found = timing_reasons(name, device)
        if found:
            skipped[name] = "; ".join(found)
        else:
            timed.append(name)
    return timed, skipped


def compiled_bytes(compiled, inputs, element_size: int) -> tuple[float, int]:
    """(modelled bytes per element, full-size tensors saved for backward) of the compiled graph, excluding the sum.

    Forward reads y and F and writes x_in and loss; each full-size tensor AOTAutograd saves for the backward is read
    there, and written by the forward unless it is an input or output; the backward writes grad_F. (What Inductor's
    kernels move inside the graph is not visible: this is a lower bound.)
    """
    y, F, batch = inputs["y"], inputs["F"], inputs["y"].shape[0]
    saved = []

    def pack(t):
        if t.numel() > batch:
            saved.append(t.data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        x_in, loss = compiled(*edm_args(inputs))
    known = {y.data_ptr(), F.data_ptr(), x_in.data_ptr(), loss.data_ptr()}
    per_element = 2 + 2 + 1  # reads y, F; writes x_in, loss; backward writes grad_F (upstream grad: one value)
    per_element += sum(1 if ptr in known else 2 for ptr in saved)
    return float(per_element * element_size), len(saved)


def bench_size(shape, device, repeats, budget_s, fused: list[str], skipped: dict[str, str]):
    """(work rows, timing rows, checks) for one shape."""
    numel, batch = math.prod(shape), shape[0]
    inputs = make_inputs(shape, device)
    F, element_size = inputs["F"], inputs["y"].element_size()
    forwards = {
        "edm": lambda mark=_unmarked: edm_forward(*edm_args(inputs), mark=mark),
        "reference": lambda mark=_unmarked: fastdiff_forward(inputs, "reference", mark),
        **{name: (lambda mark=_unmarked, name=name: fastdiff_forward(inputs, name, mark)) for name in fused},
    }
    work, checks, timed, extra, bytes_per_element, source = [], {}, {}, {}, {}, {}
    results = {}

    # Eager paths (fused ones included): one run under OpCounter, which is also the warm-up.
    for name, forward in forwards.items():
        counter = OpCounter(batch)
        with counter:
            results[name] = fwd_bwd(forward, F, counter.mark)
        sync(device)
        row = dict(implementation=LABELS[name], source="measured")
        for stage in STAGES:
            row[f"launches_{stage}"] = counter.launches[stage]
            row[f"bytes_{stage}"] = counter.bytes[stage] / numel
        row["syncs"] = sum(counter.syncs.values())
        row["bytes_per_element"] = sum(row[f"bytes_{s}"] for s in COUNTED_STAGES)
        work.append(row)
        bytes_per_element[name], source[name] = row["bytes_per_element"], "measured"
        timed[name] = lambda forward=forward: fwd_bwd(forward, F)
    fused_model = sum(model_bytes(m, element_size) for m in FUSED_MODEL.values())
    for name in fused:
        extra[name] = dict(measured_bytes_per_element=bytes_per_element[name])
        bytes_per_element[name], source[name] = fused_model, "model"
    work.append(dict(implementation="fused kernels (model)", source="model",
                     **{f"bytes_{s}": model_bytes(FUSED_MODEL[s], element_size) for s in COUNTED_STAGES},
                     bytes_sum=float(element_size), bytes_per_element=fused_model))

    # Correctness: the fused paths and the EDM-style formula (on fastdiff's noise) against the reference.
    expected = results["reference"]
    for name in fused:
        checks[f"{LABELS[name]} vs fastdiff reference"] = relative_difference(results[name], expected)
    noise = ops.randn(inputs["seeds"], shape, offset=LOSS_NOISE_OFFSET, device=device, backend="reference")
    on_same_noise = fwd_bwd(lambda mark, noise=noise: edm_forward(*edm_args(inputs), noise=noise), F)
    checks["EDM-style eager on fastdiff's noise vs fastdiff reference"] = relative_difference(on_same_noise, expected)
    del results, expected, on_same_noise, noise

    # torch.compile of the EDM-style forward (its backward compiled by AOTAutograd at the first backward).
    torch._dynamo.reset()
    compiled = torch.compile(edm_forward, fullgraph=True, dynamic=False)
    start = time.perf_counter()
    x_in, loss, grad = fwd_bwd(lambda mark: compiled(*edm_args(inputs)), F)
    sync(device)
    extra["compile"] = dict(compile_seconds=time.perf_counter() - start)
    # Its noise is Inductor's: recover the noise it drew from x_in and recompute the loss eagerly from it.
    y, c_in4, sigma4 = inputs["y"], inputs["c_in4"], inputs["sigma4"]
    drawn = (x_in / c_in4 - y) / sigma4
    eager = fwd_bwd(lambda mark, drawn=drawn: edm_forward(*edm_args(inputs), noise=drawn), F)
    checks["torch.compile vs EDM-style eager on the noise it drew"] = relative_difference((loss, grad), eager[1:])
    del x_in, loss, grad, drawn, eager
    bytes_per_element["compile"], saved = compiled_bytes(compiled, inputs, element_size)
    source["compile"] = "graph I/O model"
    extra["compile"]["saved_full_size_tensors"] = saved
    timed["compile"] = lambda: fwd_bwd(lambda mark: compiled(*edm_args(inputs)), F)

    # The yardstick: copy y into a preallocated buffer.
    buffer = torch.empty_like(inputs["y"])
    buffer.copy_(inputs["y"])
    bytes_per_element["copy"], source["copy"] = model_bytes(COPY_MODEL, element_size), "model"
    timed["copy"] = lambda: buffer.copy_(inputs["y"])
    # ... and into a new tensor, as every op without out= writes: on the CPU a large fresh allocation comes from
    # the OS and its first touch page-faults, which the copy into a reused buffer does not pay.
    bytes_per_element["copy_new"], source["copy_new"] = model_bytes(COPY_MODEL, element_size), "model"
    timed["copy_new"] = lambda: inputs["y"].clone()

    # The fused paths stage by stage: where a forward + backward spends its time.
    stage_rows = {}
    for name in fused:
        x_in, loss = fastdiff_forward(inputs, name)
        total = loss.sum()
        torch.autograd.grad(total, F, retain_graph=True)
        stages = {
            "loss_input": (lambda name=name: ops.loss_input(inputs["y"], inputs["sigma"], inputs["c_in"],
                                                            seeds=inputs["seeds"], backend=name), FUSED_MODEL["loss_input"]),
            "loss_error": (lambda name=name: ops.loss_error(inputs["y"], F, inputs["sigma"], inputs["c_skip"], inputs["c_out"],
                                                            inputs["weight"], seeds=inputs["seeds"], backend=name),
                           FUSED_MODEL["loss_error"]),
            "sum": (lambda loss=loss: loss.sum(), (("loss",), ())),
            "backward": (lambda total=total: torch.autograd.grad(total, F, retain_graph=True), FUSED_MODEL["backward"]),
        }
        for stage, (fn, model) in stages.items():
            key = f"{name}:{stage}"
            timed[key] = fn
            stage_rows[key] = dict(label=f"  {SHORT[name]}: {stage}", bytes=model_bytes(model, element_size))

    measured = time_calls(timed, device, repeats, budget_s)
    timings = []
    for name in MAIN_ORDER:
        if name in skipped:
            timings.append(dict(implementation=LABELS[name], seconds=None, bytes_per_element=fused_model,
                                bytes_source="model", note=f"skipped: {skipped[name]}"))
            continue
        if name not in measured:
            continue
        timings.append(dict(implementation=LABELS[name], **measured[name], bytes_per_element=bytes_per_element[name],
                            bytes_source=source[name], **extra.get(name, {})))
        if name in fused:
            for stage in STAGES:
                key = f"{name}:{stage}"
                timings.append(dict(implementation=stage_rows[key]["label"], stage=stage, **measured[key],
                                    bytes_per_element=stage_rows[key]["bytes"], bytes_source="model"))
    finish_timings(timings, numel)
    for row in work + timings:
        row.update(size=numel, shape="x".join(map(str, shape)))
    return work, timings, checks


def finish_timings(timings: list[dict], numel: int) -> None:
    """GB/s, fraction of the copy's GB/s and speedups (all from this run)."""
    by_label = {r["implementation"]: r for r in timings}
    copy_gbps = by_label[LABELS["copy"]]["bytes_per_element"] * numel / by_label[LABELS["copy"]]["seconds"] / 1e9
    edm, compiled = by_label[LABELS["edm"]]["seconds"], by_label[LABELS["compile"]]["seconds"]
    for row in timings:
        t = row["seconds"]
        row["gbps"] = row["bytes_per_element"] * numel / t / 1e9 if t else None
        row["fraction_of_copy"] = row["gbps"] / copy_gbps if t else None
        whole = t is not None and "stage" not in row and row["implementation"] not in YARDSTICKS
        row["speedup_vs_eager"] = edm / t if whole else None
        row["speedup_vs_compile"] = compiled / t if whole else None


# ----------------------------------------------------------------------------------------------------------
# Part 2: training steps
# ----------------------------------------------------------------------------------------------------------

def make_trainer(case: str, backend: str, device: torch.device, images: int) -> Trainer:
    spec = TRAIN_CASES[case]
    if spec["net"] == "mlp":
        dataset = fastdiff.data.load("mixture")
    else:
        generator = torch.Generator().manual_seed(0)
        dataset = Dataset(torch.rand((images,) + IMAGE_SHAPE, generator=generator) * 2 - 1, name="random images")
    config = TrainConfig(data=dataset.name, net=spec["net"], net_kwargs=dict(spec["net_kwargs"]),
                         batch_size=spec["batch_size"], backend=backend, device=str(device), progress=False,
                         seed=0).check()
    return Trainer(config, dataset)


def bench_training(device, fused_backend: str, warmup: int, steps: int, budget_s: float, images: int):
    """(rows, checks): ms per train_step for each case, reference loss against the fused one, interleaved."""
    rows, checks = [], {}
    for case, spec in TRAIN_CASES.items():
        started = time.perf_counter()
        trainers = {b: make_trainer(case, b, device, images) for b in ("reference", fused_backend)}
        # Same seed, same initial weights, same batch and per-sample seeds: step 1's loss must agree.
        first = {}
        for b, trainer in trainers.items():
            trainer.train_step()
            first[b] = float(trainer._loss_sum) / trainer._loss_count
        checks[f"training loss at step 1, {fused_backend} vs reference: {case}"] = \
            abs(first[fused_backend] - first["reference"]) / abs(first["reference"])
        for _ in range(max(warmup - 1, 0)):
            for trainer in trainers.values():
                trainer.train_step()
        sync(device)
        measured = time_calls({b: t.train_step for b, t in trainers.items()}, device, steps, budget_s, min_repeats=min(3, steps))
        parameters = sum(p.numel() for p in trainers["reference"].net.parameters())
        shape = (spec["batch_size"],) + (trainers["reference"].dataset.shape)
        for b in trainers:
            m = measured[b]
            rows.append(dict(case=case, backend=b, label="reference" if b == "reference" else f"{b} (fused)",
                             batch=spec["batch_size"], shape="x".join(map(str, shape)), parameters=parameters,
                             net_kwargs=spec["net_kwargs"], warmup_steps=warmup, **m,
                             images_per_second=spec["batch_size"] / m["seconds"],
                             speedup_vs_reference=measured["reference"]["seconds"] / m["seconds"],
                             seconds_total=time.perf_counter() - started))
        del trainers
    return rows, checks


# ----------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------

def print_work(work: list[dict], device: torch.device) -> None:
    print(f"\nWork per forward + backward: kernel launches and bytes per element by stage (eager paths and the fused "
          f"ops' calls: measured with _harness.OpCounter on {device.type}; B/elem = loss_input + loss_error + backward, "
          f"the sum left out)")
    print(f"{'size':>11} {'implementation':<32} {'source':<8} {'launches in/err/sum/bwd':>24} {'syncs':>5} "
          f"{'B in':>7} {'B err':>7} {'B sum':>6} {'B bwd':>7} {'B/elem':>8}")
    for r in work:
        launches = "/".join(str(r[f"launches_{s}"]) for s in STAGES) if f"launches_{STAGES[0]}" in r else "-"
        print(f"{r['size']:>11,} {r['implementation']:<32} {r['source']:<8} {launches:>24} {fmt(r.get('syncs'), 'd', 5)} "
              f"{r['bytes_loss_input']:>7.1f} {r['bytes_loss_error']:>7.1f} {r['bytes_sum']:>6.1f} "
              f"{r['bytes_backward']:>7.1f} {r['bytes_per_element']:>8.1f}")


def print_timings(timings: list[dict], device: torch.device) -> None:
    print(f"\nTime per forward + backward on {device} (loss_input, loss_error, loss.sum(), grad to F; median of n "
          f"measurements; GB/s = B/elem x elements / time; %copy = GB/s / copy GB/s; xeager, xcomp = speedup vs "
          f"EDM-style eager, vs torch.compile)")
    print(f"{'size':>11} {'shape':<14} {'implementation':<32} {'ms':>10} {'n':>3} {'B/elem':>7} {'source':<15} "
          f"{'GB/s':>8} {'%copy':>6} {'xeager':>7} {'xcomp':>7}")
    for r in timings:
        if r["seconds"] is None:
            print(f"{r['size']:>11,} {r['shape']:<14} {r['implementation']:<32} {'-':>10} {'':>3} "
                  f"{r['bytes_per_element']:>7.1f} {r['bytes_source']:<15} {r.get('note', '')}")
            continue
        pct = None if r["fraction_of_copy"] is None else 100 * r["fraction_of_copy"]
        print(f"{r['size']:>11,} {r['shape']:<14} {r['implementation']:<32} {r['seconds'] * 1e3:>10.3f} "
              f"{r['repeats']:>3} {r['bytes_per_element']:>7.1f} {r['bytes_source']:<15} {fmt(r['gbps'], '.2f', 8)} "
              f"{fmt(pct, '.1f', 6)} {fmt(r['speedup_vs_eager'], '.2f', 7)} {fmt(r['speedup_vs_compile'], '.2f', 7)}")


def print_training(rows: list[dict], device: torch.device) -> None:
    print(f"\nTraining step on {device}: fastdiff.training.Trainer.train_step (batch, loss, backward, Adam, EMA), "
          f"TrainConfig(backend=...) reference vs fused; median of n steps after warm-up")
    print(f"{'case':<14} {'batch shape':<14} {'params':>9} {'backend':<16} {'ms/step':>10} {'n':>3} {'img/s':>10} {'xref':>6}")
    for r in rows:
        print(f"{r['case']:<14} {r['shape']:<14} {r['parameters']:>9,} {r['label']:<16} {r['seconds'] * 1e3:>10.2f} "
              f"{r['repeats']:>3} {r['images_per_second']:>10,.0f} {r['speedup_vs_reference']:>6.2f}")


def write_results(out_dir: Path, meta: dict, work, timings, training, checks) -> list[Path]:
    return [write_csv(out_dir / "bench_loss_work.csv", work), write_csv(out_dir / "bench_loss_time.csv", timings),
            write_csv(out_dir / "bench_loss_train.csv", training),
            write_json(out_dir / "bench_loss.json", dict(meta=meta, work=work, timings=timings, training=training,
                                                         checks=checks))]


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--sizes", help="comma-separated element counts or shapes like 4x3x32x32 "
                        f"(default: {','.join(map(str, DEFAULT_SHAPES))})")
    common_arguments(parser, repeats=None, repeats_help="measurements per timing (default 25; --quick 5)",
                     quick="smoke run: two small sizes, few repeats and steps",
                     budget="seconds one timing may take before it stops repeating (it still takes 3 measurements; "
                     "default 8, --quick 1)")
    parser.add_argument("--train-steps", type=int, help="timed training steps per backend and case (default 30; --quick 2)")
    parser.add_argument("--warmup", type=int, help="training steps before timing (default 3; --quick 1)")
    parser.add_argument("--no-train", action="store_true", help="skip Part 2 (training steps)")
    a = parser.parse_args(argv)

    device = setup(a)
    shapes = parse_sizes(a.sizes, DEFAULT_SHAPES) if a.sizes else list(QUICK_SHAPES if a.quick else DEFAULT_SHAPES.values())
    repeats = a.repeats or (5 if a.quick else 25)
    budget = a.budget if a.budget is not None else (1.0 if a.quick else 8.0)
    train_steps = a.train_steps or (2 if a.quick else 30)
    warmup = a.warmup if a.warmup is not None else (1 if a.quick else 3)
    for name, value in (("repeats", repeats), ("train-steps", train_steps), ("warmup", warmup)):
        at_least(name, value, 1)

    fused, skipped = fused_backends(device)
    meta = run_meta(
        device, argv, dtype="float32", repeats=repeats, budget_seconds=budget,
        shapes=["x".join(map(str, s)) for s in shapes], sigma_data=SIGMA_DATA, P_mean=P_MEAN, P_std=P_STD,
        fused_backends=fused, skipped_backends=skipped, tolerance=TOLERANCE,
        fused_model={stage: dict(reads=list(r), writes=list(w)) for stage, (r, w) in FUSED_MODEL.items()},
        fused_model_bytes_per_element=sum(model_bytes(m, 4) for m in FUSED_MODEL.values()),
        train=None if a.no_train else dict(steps=train_steps, warmup=warmup, cases=TRAIN_CASES),
    )
    print(f"fastdiff {fastdiff.__version__} bench_loss: EDM loss forward + backward around a given network output "
          f"(sigma_data {SIGMA_DATA}, per-sample sigma and seeds), float32, network excluded")
    print(f"device {device} ({meta['device_name']}), {meta['cpu_threads']} CPU threads, torch {torch.__version__}; "
          f"sizes {', '.join(f'{math.prod(s):,} ({name})' for s, name in zip(shapes, meta['shapes']))}")
    for name, why in skipped.items():
        print(f"{LABELS[name]}: skipped ({why})")
    warn_if_busy(device, meta["load_average_at_start"])

    work, timings, checks = [], [], {}
    started = time.perf_counter()
    for shape in shapes:
        size_started = time.perf_counter()
        w, t, c = bench_size(shape, device, repeats, budget, fused, skipped)
        work += w
        timings += t
        checks.update({f"{k} @ {math.prod(shape)}": v for k, v in c.items()})
        print(f"  {math.prod(shape):>11,} elements done in {time.perf_counter() - size_started:.1f} s", flush=True)

    training, train_checks = [], {}
    if not a.no_train:
        fused_backend = next((b for b in ("cuda", "triton", "cpu") if b in fused), None)
        if fused_backend is None:
            print("Part 2 skipped: no fused backend runs here")
        else:
            train_started = time.perf_counter()
            training, train_checks = bench_training(device, fused_backend, warmup, train_steps, budget * 2,
                                                    images=64 if a.quick else 1024)
            print(f"  training steps done in {time.perf_counter() - train_started:.1f} s", flush=True)
    meta["total_seconds"] = time.perf_counter() - started

    print_work(work, device)
    print_timings(timings, device)
    if training:
        print_training(training, device)
    compile_times = [(r["size"], r["compile_seconds"]) for r in timings if "compile_seconds" in r]
    print("\ntorch.compile time (first forward + backward, s): " + ", ".join(f"{n:,}: {t:.1f}" for n, t in compile_times))

    all_checks = {**checks, **train_checks}
    passed = all(v <= TOLERANCE for v in all_checks.values())
    meta["checks_passed"] = passed
    print(f"\nChecks (max relative difference; pass at <= {TOLERANCE:g}):")
    for name, value in all_checks.items():
        print(f"  {'ok  ' if value <= TOLERANCE else 'FAIL'} {value:.2e}  {name}")
    print(f"checks passed: {passed}")
    if not passed:
        print("WARNING: an implementation disagrees with the reference; its timing measures something else")
    paths = write_results(a.out, meta, work, timings, training, all_checks)
    print(f"wrote {', '.join(str(p) for p in paths)} ({meta['total_seconds']:.0f} s)")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
