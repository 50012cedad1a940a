"""Benchmark: a whole sampling call with a cheap net, fastdiff.sample against k-diffusion's real samplers, in one run.

With a net that costs little next to the step math, a sampling call costs what the sampler adds around the net:
its Python per step, its kernel launches and its passes over memory. This benchmark times one call of

    k-diffusion                  k-diffusion 0.1.1.post1's own sample_heun / sample_euler_ancestral / sample_dpmpp_2m,
                                 loaded from the installed package by fastdiff.testing.k_diffusion_sampling()
                                 (its code, unmodified; only its package's heavy imports are left out)
    fastdiff reference           fastdiff.sample(backend="reference")
    fastdiff cpu                 fastdiff.sample(backend="cpu"): the fused C++ CPU kernels
    fastdiff cpu reuse_buffers   the same with reuse_buffers=True (every step writes into fixed buffers)

for four solvers (heun; heun with EDM's churn S_churn 40, S_min 0.05, S_max 50, S_noise 1.003; euler_ancestral;
dpmpp_2m), each over the same 18-step Karras schedule (fastdiff.karras_sigmas: sigma 80 -> 0.002, then 0), at
each size (default 1x3x8x8, where the sampler's fixed costs dominate, and 16x4x256x256, where its memory traffic
does). The net is a fixed linear denoiser, D(x; sigma) = x / 2: one kernel, so that the table shows what each
sampler adds around the net (--net tanh: tanh(x), one kernel too; --net gaussian: the exact denoiser of unit
Gaussian data, x / (1 + sigma^2), three small kernels on sigma and one over x).

Timing: the implementations of one size and solver are measured in turn, one measurement of each per round
(so that load from other processes falls on all of them alike), each measurement running enough back-to-back
calls to last >= 20 ms; the table shows the median over the rounds, and `x kdiff` is k-diffusion's median over
the implementation's. Everything runs under torch.no_grad(), with tqdm's bars off (disable=True).

Agreement: before timing, each fastdiff implementation's result is compared with k-diffusion's for the same
latents and schedule: max |fastdiff - k-diffusion| / max |k-diffusion|. For the stochastic solvers both draw the
same noise, fastdiff's stream of each sample's seed at offset SAMPLER_OFFSET + i for step i: euler_ancestral gets
it through k-diffusion's noise_sampler argument; sample_heun draws its churn noise with torch.randn_like and has
no such argument, so for that one comparison call torch.randn_like is replaced by fastdiff's stream (and restored
after). A difference above AGREE (float32 rounding over 18 steps is far below it) marks the row as disagreeing.

    python3 benchmarks/bench_overhead.py                  # both default sizes (a few minutes on 2 CPU cores)
    python3 benchmarks/bench_overhead.py --quick          # smoke run: small sizes, 3 rounds (well under a minute)
    python3 benchmarks/bench_overhead.py --sizes 1x3x8x8 --repeats 30 --threads 1

Needs k-diffusion installed without its dependencies: pip install --no-deps "k-diffusion==0.1.1.post1" (its
imports scipy, torchdiffeq, torchsde and tqdm are in fastdiff's test extra). Prints the table and writes
benchmarks/results/bench_overhead.json (or --out). Nothing here asserts a timing.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

import fastdiff
from fastdiff.rng import SAMPLER_OFFSET, SUBSTEP_OFFSET
from fastdiff.testing import K_DIFFUSION_VERSION, k_diffusion_sampling

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared harness, beside this script
from _harness import parse_sizes, randn_like_from, time_calls  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SIZES = "1x3x8x8,16x4x256x256"
QUICK_SIZES = "1x3x8x8,2x4x16x16"
STEPS = 18
CHURN = dict(S_churn=40.0, S_min=0.05, S_max=50.0, S_noise=1.003)  # EDM's stochastic settings (ImageNet-64)
AGREE = 1e-4  # the largest relative difference from k-diffusion's result that counts as agreeing
MIN_MEASUREMENT = 0.02  # seconds: a measurement repeats calls until it lasts this long
K_DIFFUSION = "k-diffusion"
IMPLEMENTATIONS = {  # name -> fastdiff.sample's arguments (None: k-diffusion)
    K_DIFFUSION: None,
    "fastdiff reference": dict(backend="reference"),
    "fastdiff cpu": dict(backend="cpu"),
    "fastdiff cpu reuse_buffers": dict(backend="cpu", reuse_buffers=True),
}
# solver -> (k-diffusion's function, its keyword arguments, fastdiff.sample's keyword arguments)
SOLVERS = {
    "heun": ("sample_heun", {}, dict(solver="heun")),
    "heun churn": ("sample_heun", dict(s_churn=CHURN["S_churn"], s_tmin=CHURN["S_min"], s_tmax=CHURN["S_max"],
                                       s_noise=CHURN["S_noise"]), dict(solver="heun", **CHURN)),
    "euler_ancestral": ("sample_euler_ancestral", dict(eta=1.0, s_noise=1.0), dict(solver="euler_ancestral")),
    "dpmpp_2m": ("sample_dpmpp_2m", {}, dict(solver="dpmpp_2m")),
}
# k-diffusion's other samplers, fastdiff's solver programs (fastdiff.sampling.programs): on request (--solvers).
# k-diffusion times them with its own default_noise_sampler (torch.randn_like), the cheapest noise it has: its
# SDE samplers default to a Brownian tree, which would time torchsde rather than the sampler.
NOISY = ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde")
EXTRA_SOLVERS = {name: (f"sample_{name}", {}, dict(solver=name)) for name in
                 ("dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde", "lms")}
ALL_SOLVERS = {**SOLVERS, **EXTRA_SOLVERS}


def linear_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A fixed linear denoiser, D(x; sigma) = x / 2 whatever sigma: one kernel, the least a net can cost."""
    return x * 0.5


def tanh_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A fixed tanh denoiser, D(x; sigma) = tanh(x): one kernel, pulling every value into (-1, 1) as image data."""
    return torch.tanh(x)


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The exact denoiser of unit Gaussian data, E[y | y + sigma n = x] = x / (1 + sigma^2), sigma of shape [B]:
    three small kernels on sigma, then one over x."""
    scale = 1.0 / (1.0 + sigma * sigma)
    return x * scale.reshape((-1,) + (1,) * (x.ndim - 1))


NETS = {"linear": linear_denoiser, "tanh": tanh_denoiser, "gaussian": gaussian_denoiser}
NET_FORMULAS = {"linear": "x / 2", "tanh": "tanh(x)", "gaussian": "x / (1 + sigma^2)"}


def fastdiff_stream(seeds: torch.Tensor, shape, dtype):
    """eps for step i, as fastdiff.sample(seeds=...) draws it: fastdiff.randn(seeds, shape, offset=SAMPLER_OFFSET+i)."""
    return lambda i: fastdiff.randn(seeds, shape, offset=SAMPLER_OFFSET + i, dtype=dtype)


def fastdiff_noise_sampler(seeds: torch.Tensor, shape, dtype, levels: list[float]):
    """A k-diffusion noise_sampler(sigma, sigma_next) that returns what fastdiff.sample(seeds=...) draws there: step
    i's noise (the draw that ends at levels[i + 1]) at SAMPLER_OFFSET + i, dpmpp_sde's substep draw (ending at the
    log-midpoint of step i, as k-diffusion computes it) at SUBSTEP_OFFSET + i."""
    from fastdiff.sampling.programs import k_diffusion_levels
    ends = {levels[i + 1]: SAMPLER_OFFSET + i for i in range(len(levels) - 1)}
    mids = {}
    for i in range(len(levels) - 1):
        if levels[i + 1] > 0:  # dpmpp_sde names its draws by levels it computes: exp(-t) of t = -log sigma
            (_, mid), (_, end) = k_diffusion_levels(levels[i], levels[i + 1], dtype)
            mids[mid], ends[end] = SUBSTEP_OFFSET + i, SAMPLER_OFFSET + i

    def noise(sigma, sigma_next):
        key = float(sigma_next)
        offset = ends[key] if key in ends else mids[key]
        return fastdiff.randn(seeds, shape, offset=offset, dtype=dtype)
    return noise


def runners(kd, net, solver: str, latents: torch.Tensor, seeds: torch.Tensor, sigmas: torch.Tensor) -> dict:
    """implementation -> a zero-argument function that samples one batch (what is timed)."""
    name, k_kwargs, f_kwargs = ALL_SOLVERS[solver]
    k_sampler = getattr(kd, name)
    if solver in NOISY:
        k_kwargs = dict(k_kwargs, noise_sampler=kd.default_noise_sampler(latents))
    k_sigmas = sigmas.to(latents.dtype)
    runs = {}
    for impl, settings in IMPLEMENTATIONS.items():
        if settings is None:
            runs[impl] = lambda: k_sampler(net, latents * k_sigmas[0], k_sigmas, disable=True, **k_kwargs)
        else:
            runs[impl] = lambda settings=settings: fastdiff.sample(net, latents, sigmas=sigmas, seeds=seeds,
                                                                   **f_kwargs, **settings)
    return runs


def agreement(kd, net, solver: str, latents: torch.Tensor, seeds: torch.Tensor, sigmas: torch.Tensor,
              runs: dict) -> dict:
    """implementation -> max |its result - k-diffusion's| / max |k-diffusion's|, k-diffusion fed fastdiff's noise."""
    name, k_kwargs, _ = ALL_SOLVERS[solver]
    k_sampler, k_sigmas = getattr(kd, name), sigmas.to(latents.dtype)
    stream = fastdiff_stream(seeds, latents.shape, latents.dtype)
    x = latents * k_sigmas[0]
    if solver in NOISY:
        noise = fastdiff_noise_sampler(seeds, latents.shape, latents.dtype, k_sigmas.tolist())
        want = k_sampler(net, x, k_sigmas, disable=True, noise_sampler=noise, **k_kwargs)
    elif k_kwargs.get("s_churn", 0) > 0:
        with randn_like_from(stream):
            want = k_sampler(net, x, k_sigmas, disable=True, **k_kwargs)
    else:
        want = k_sampler(net, x, k_sigmas, disable=True, **k_kwargs)
    scale = want.abs().max().item()
    return {impl: (run() - want).abs().max().item() / scale for impl, run in runs.items() if impl != K_DIFFUSION}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", help=f"comma-separated shapes (default {DEFAULT_SIZES}; --quick {QUICK_SIZES})")
    parser.add_argument("--repeats", type=int, help="rounds of measurements (default 15; --quick 3)")
    parser.add_argument("--budget", type=float, help="seconds of rounds per size and solver before it stops repeating "
                        "(at least 3 rounds are taken; default 60, --quick 2)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch (default 2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: two small sizes, 3 rounds")
    parser.add_argument("--net", choices=tuple(NETS), default="linear", help="the denoiser both samplers call: "
                        + "; ".join(f"{name}: {formula}" for name, formula in NET_FORMULAS.items()) + " (default linear)")
    parser.add_argument("--solvers", help=f"comma-separated subset of {', '.join(ALL_SOLVERS)} (default: "
                        f"{', '.join(SOLVERS)})")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"directory for the JSON (default {RESULTS})")
    a = parser.parse_args(argv)
    shapes = parse_sizes(a.sizes or (QUICK_SIZES if a.quick else DEFAULT_SIZES), {})
    repeats = a.repeats or (3 if a.quick else 15)
    budget = a.budget if a.budget is not None else (2.0 if a.quick else 60.0)
    solvers = [s.strip() for s in a.solvers.split(",")] if a.solvers else list(SOLVERS)
    if repeats < 1:
        raise SystemExit(f"--repeats: expected >= 1, got {repeats}")
    if a.threads < 1:
        raise SystemExit(f"--threads: expected >= 1, got {a.threads}")
    unknown = [s for s in solvers if s not in ALL_SOLVERS]
    if unknown:
        raise SystemExit(f"--solvers: expected some of {', '.join(ALL_SOLVERS)}, got {', '.join(unknown)}")
    torch.set_num_threads(a.threads)
    net = NETS[a.net]
    try:
        kd = k_diffusion_sampling()
    except ImportError as error:
        raise SystemExit(f"bench_overhead.py compares against k-diffusion's own samplers: {error}") from None

    sigmas = fastdiff.karras_sigmas(STEPS)  # float64 on the host, ending in 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                fastdiff=fastdiff.__version__, torch=torch.__version__, k_diffusion=K_DIFFUSION_VERSION,
                python=platform.python_version(), cpu=platform.processor() or platform.machine(),
                cpu_count=os.cpu_count(), cpu_threads=torch.get_num_threads(), load_average_at_start=load,
                dtype="float32", steps=STEPS, sigmas=sigmas.tolist(), churn=CHURN, repeats=repeats,
                budget_seconds=budget, agree=AGREE, net=a.net, net_formula=NET_FORMULAS[a.net], quick=a.quick,
                argv=sys.argv[1:] if argv is None else list(argv))
    print(f"fastdiff {fastdiff.__version__} bench_overhead: one sampling call, {STEPS} steps, {a.net} net "
          f"D(x; sigma) = {NET_FORMULAS[a.net]}, "
          f"float32, on the CPU with {torch.get_num_threads()} threads (torch {torch.__version__}, k-diffusion "
          f"{K_DIFFUSION_VERSION})")
    if load is not None and load >= 0.5 * (os.cpu_count() or 1):
        print(f"note: the CPUs were busy as this run started (1-minute load average {load:.2f} on {os.cpu_count()} "
              "cores): timings will be noisy")

    rows = []
    started = time.perf_counter()
    with torch.no_grad():
        for shape in shapes:
            size = "x".join(map(str, shape))
            latents = fastdiff.randn(list(range(shape[0])), shape)
            seeds = torch.arange(100, 100 + shape[0], dtype=torch.int64)
            for solver in solvers:
                runs = runners(kd, net, solver, latents, seeds, sigmas)
                differences = agreement(kd, net, solver, latents, seeds, sigmas, runs)
                # --budget is per size and solver; time_calls spends it per implementation
                times = time_calls(runs, "cpu", repeats, budget / len(runs), min_measure_s=MIN_MEASUREMENT)
                base = times[K_DIFFUSION]["seconds"]
                for impl in runs:
                    seconds = times[impl]["seconds"]
                    diff = differences.get(impl)
                    rows.append(dict(size=size, solver=solver, implementation=impl, seconds=seconds,
                                     n=times[impl]["repeats"], speedup_vs_k_diffusion=base / seconds,
                                     max_relative_difference=diff, agrees=None if diff is None else diff <= AGREE))
                print(f"  {size} {solver}: done", flush=True)
    meta["total_seconds"] = time.perf_counter() - started

    print(f"\nms per call (median of n rounds); x kdiff = k-diffusion's time / this time; diff = max relative "
          f"difference of the result from k-diffusion's, same noise (agrees: <= {AGREE:g})")
    print(f"{'size':<14} {'solver':<16} {'implementation':<27} {'ms/call':>10} {'n':>3} {'x kdiff':>8} {'diff':>9}")
    for r in rows:
        diff = "" if r["max_relative_difference"] is None else f"{r['max_relative_difference']:.1e}" + (
            "" if r["agrees"] else " !")
        print(f"{r['size']:<14} {r['solver']:<16} {r['implementation']:<27} {r['seconds'] * 1e3:>10.3f} {r['n']:>3} "
              f"{r['speedup_vs_k_diffusion']:>8.2f} {diff:>9}")
    reuse = []
    for size in dict.fromkeys(r["size"] for r in rows):
        for solver in solvers:
            by = {r["implementation"]: r["seconds"] for r in rows if r["size"] == size and r["solver"] == solver}
            reuse.append(dict(size=size, solver=solver,
                              reuse_over_plain=by["fastdiff cpu reuse_buffers"] / by["fastdiff cpu"]))
    print("\nreuse_buffers=True time / reuse_buffers=False time (fastdiff cpu; > 1 means reuse_buffers is slower): "
          + ", ".join(f"{r['size']} {r['solver']} {r['reuse_over_plain']:.2f}" for r in reuse))
    disagreeing = [r for r in rows if r["agrees"] is False]
    if disagreeing:
        print("WARNING: results disagree with k-diffusion's: "
              + ", ".join(f"{r['size']} {r['solver']} {r['implementation']}" for r in disagreeing))
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / "bench_overhead.json"
    path.write_text(json.dumps(dict(meta=meta, rows=rows, reuse=reuse), indent=1) + "\n")
    print(f"wrote {path} ({meta['total_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
