"""Graphed-sampling benchmark: whole-sampler samples/s, U-Net calls included, at small and large batches.

Side by side in one run, with the same EDM-preconditioned U-Net (fastdiff.nets.UNet.small: 9.6M parameters,
32x32x3, unconditional, random weights) and the same Heun schedule:

  k-diffusion sample_heun   k-diffusion's own sample_heun (its installed code; benchmarks/_peers.py)
  diffusers Heun        diffusers' HeunDiscreteScheduler step loop over the same sigmas (S_churn 0 only: it has no
                        churn; benchmarks/_peers.py)
  eager reference       fastdiff.sample(backend="reference")
  fastdiff eager        fastdiff.sample on the fastest fused backend, reuse_buffers=True
  compiled net          torch.compile(net, mode="reduce-overhead") inside fastdiff's eager sampler (CUDA only:
                        its outputs are cloned, as cudagraph-trees require when a caller keeps them)
  fastdiff graphed      fastdiff.GraphedSampler: one CUDA graph per sampling call (CUDA only)

For each it reports kernel launches per step and host syncs per call. On CUDA they come from torch.profiler: cudaLaunchKernel,
cuLaunchKernel (Triton) and cudaGraphLaunch calls, and synchronising calls, i.e. *Synchronize and blocking
cudaMemcpy. Without a GPU they come from a dispatch mode (benchmarks/_harness.py's OpCounter rules: ops
that would launch a kernel, and host syncs; fastdiff's host planning, on host tensors, is left out), and only
the eager modes are timed. That is a CPU measurement of
a network-bound loop, not the GPU claim this benchmark exists for.

    python3 benchmarks/bench_graph.py                       # CUDA: batches 1, 64, 512; CPU: batches 1, 8
    python3 benchmarks/bench_graph.py --batches 1,64 --steps 18 --repeats 10 --churn 0
    python3 benchmarks/bench_graph.py --quick               # counts only, tiny U-Net (a smoke run)
Writes benchmarks/results/bench_graph.json.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastdiff  # noqa: E402
from fastdiff import backends  # noqa: E402
from _peers import diffusers_heun, kdiffusion_heun  # noqa: E402
from _harness import OpCounter, common_arguments, make_parser, median_round_robin, setup, write_json  # noqa: E402

LAUNCH_EVENTS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaGraphLaunch")


def make_net(quick: bool, device) -> torch.nn.Module:
    """EDMPrecond(UNet.small()) with random (non-zero) weights; a tiny U-Net for --quick."""
    torch.manual_seed(0)
    if quick:
        unet = fastdiff.nets.UNet(img_resolution=8, in_channels=3, model_channels=8, channel_mult=(1, 2),
                                  num_blocks=1, attn_resolutions=(4,), channels_per_head=8)
    else:
        unet = fastdiff.nets.UNet.small(img_resolution=32, in_channels=3)
    for p in unet.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=(1.0 / p[0].numel()) ** 0.5)  # not zero: the net does real work
    return fastdiff.EDMPrecond(unet).to(device).eval()


def fused_backend(x: torch.Tensor) -> str | None:
    for name in ("cuda", "triton", "cpu"):
        if not backends.reasons(name, x, (x,)) and not (name == "triton" and x.device.type == "cpu"):
            return name
    return None


def modes(net, x0, seeds, settings, device) -> dict:
    """name -> a zero-argument function sampling one batch (what is timed)."""
    backend = fused_backend(x0)
    sigmas = fastdiff.karras_sigmas(settings["num_steps"]).to(device=device, dtype=torch.float32)
    net.backend = backend or "reference"
    runs = {"k-diffusion sample_heun": lambda run=kdiffusion_heun(net, sigmas, settings["S_churn"], settings["S_min"],
                                                                          settings["S_max"]): run(x0)}
    if settings["S_churn"] == 0:
        runs["diffusers Heun"] = lambda run=diffusers_heun(net, sigmas): run(x0)
    runs["eager reference"] = lambda: fastdiff.sample(net, x0, seeds=seeds, backend="reference", **settings)
    if backend is not None:
        runs["fastdiff eager"] = lambda: fastdiff.sample(net, x0, seeds=seeds, backend=backend, reuse_buffers=True,
                                                         **settings)
    if device.type == "cuda":
        compiled = torch.compile(net, mode="reduce-overhead")
        compiled_net = lambda x, sigma: compiled(x, sigma).clone()  # noqa: E731
        runs["compiled net"] = lambda: fastdiff.sample(compiled_net, x0, seeds=seeds, backend=backend, **settings)
        sampler = fastdiff.GraphedSampler(net, x0, backend=backend, **settings)
        runs["fastdiff graphed"] = lambda: sampler(x0, seeds=seeds)
    return runs


def device_work(net, x0, seeds, settings) -> dict:
    """For the dispatch-mode counts, the fastdiff modes without their host planning (plan_steps and argument checks
    work on host tensors, which a dispatch mode on a CPU-only machine cannot tell from device work): the loop and
    the non-finite report after it, as sample() runs them."""
    from fastdiff.sampling.loop import build_loop
    from fastdiff.sampling.plan import SampleOptions

    backend = fused_backend(x0)
    work = {}
    for name, kw in (("eager reference", dict(backend="reference")),
                     ("fastdiff eager", dict(backend=backend, reuse_buffers=True))):
        if kw["backend"] is None:
            continue
        loop, loop_seeds = build_loop(net, x0, None, seeds=seeds, options=SampleOptions(**kw, **settings))
        work[name] = lambda loop=loop, loop_seeds=loop_seeds: (loop.run(x0, loop_seeds), loop.report_nonfinite())
    if backend is not None:  # the kernels an emulated graph replays: on a GPU, one cudaGraphLaunch runs them all
        sampler = fastdiff.GraphedSampler(net, x0, graph="emulated", backend=backend, **settings)
        work["graphed (emulated)"] = lambda: sampler(x0, seeds=seeds)
        work["graph body"] = sampler._body  # what the graph holds, counted by the same rules as the eager modes
    return work


def count_cuda(fn, steps: int) -> tuple[float, int]:
    """(launches per step, syncs per call) of one warmed-up call, from the CUDA runtime calls the profiler records,
    less what the profiler itself records around an empty call (its exit synchronises)."""
    from torch.profiler import ProfilerActivity, profile

    def events(f):
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            f()
        names = [e.name for e in prof.events()]
        return (sum(n in LAUNCH_EVENTS for n in names),
                sum(("Synchronize" in n) or n == "cudaMemcpy" for n in names))

    fn()  # compilation, cudagraph-tree recording and Triton's first launch are not what a call costs
    launches, syncs = events(fn)
    _, baseline = events(lambda: None)
    return launches / steps, syncs - baseline


def count_dispatch(fn, batch: int, steps: int) -> tuple[float, float]:
    """(launches per step, syncs per call) of one call, from the ops a dispatch mode sees (no GPU needed)."""
    counter = OpCounter(batch)
    counter.mark("call")
    with counter:
        fn()
    return counter.launches["call"] / steps, counter.syncs["call"]


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--batches", help="comma-separated batch sizes (default: 1,64,512 on CUDA, 1,8 on CPU)")
    parser.add_argument("--steps", type=int, default=18)
    parser.add_argument("--churn", type=float, default=0.0, help="S_churn (0: the deterministic sampler)")
    common_arguments(parser, repeats=10, repeats_help="timed calls per sampler (default 10)",
                     quick="tiny U-Net, batch 2, 4 steps, counts only")
    a = parser.parse_args(argv)
    device = setup(a)
    cuda = device.type == "cuda"
    if a.quick:
        a.batches, a.steps = a.batches or "2", 4
    batches = [int(b) for b in (a.batches or ("1,64,512" if cuda else "1,8")).split(",")]
    settings = dict(num_steps=a.steps, S_churn=a.churn, S_min=0.05, S_max=50.0)
    net = make_net(a.quick, device)
    resolution = net.model.img_resolution if hasattr(net.model, "img_resolution") else 32
    nfe = fastdiff.plan_steps(net, **settings).nfe
    params = sum(p.numel() for p in net.parameters())
    print(f"EDMPrecond(UNet) with {params / 1e6:.2f}M parameters at {resolution}x{resolution}x3, {a.steps} Heun steps "
          f"(NFE {nfe}), S_churn {a.churn:g}, on {device} "
          f"({torch.cuda.get_device_name(device) if cuda else f'{torch.get_num_threads()} CPU threads'}), "
          f"torch {torch.__version__}")
    if not cuda:
        print("no CUDA device: counts come from a dispatch mode; the compiled net is not run, and the graphed sampler's"
              " kernels are counted in an emulated graph (on a GPU they are one graph launch per call), not timed"
              + ("" if a.quick else "; timings are of this CPU"))
    rows = []
    with torch.no_grad():
        for batch in batches:
            x0 = fastdiff.randn(list(range(batch)), (batch, 3, resolution, resolution), device=device)
            seeds = torch.arange(batch, device=device)
            runs = modes(net, x0, seeds, settings, device)
            if cuda:
                counts = {name: count_cuda(fn, a.steps) for name, fn in runs.items()}
            else:
                counted = dict(runs, **device_work(net, x0, seeds, settings))
                counts = {name: count_dispatch(counted[name], batch, a.steps) for name in counted}
                if "graphed (emulated)" in counted:  # kernels in the graph; syncs of a call (the replay's report)
                    counts["graphed (emulated)"] = (counts.pop("graph body")[0], counts["graphed (emulated)"][1])
                    runs["graphed (emulated)"] = None  # counted, not timed: an emulated graph is no faster
            seconds = {} if a.quick else median_round_robin({k: f for k, f in runs.items() if f is not None}, a.repeats,
                                                            device)
            base = seconds.get("k-diffusion sample_heun")
            compiled = seconds.get("compiled net")
            print(f"\nbatch {batch}")
            print(f"{'sampler':<24} {'launches/step':>14} {'syncs/call':>11} {'ms/call':>10} {'samples/s':>11} "
                  f"{'x k-diff':>9} {'x compiled':>11}")
            for name, fn in runs.items():
                launches, syncs = counts[name]
                t = seconds.get(name)
                cells = ("", "", "", "") if t is None else (
                    f"{t * 1e3:.2f}", f"{batch / t:,.1f}", f"{base / t:.2f}",
                    f"{compiled / t:.2f}" if compiled else "")
                print(f"{name:<24} {launches:>14.2f} {syncs:>11d} {cells[0]:>10} {cells[1]:>11} {cells[2]:>9} "
                      f"{cells[3]:>11}")
                rows.append(dict(batch=batch, sampler=name, launches_per_step=launches, syncs_per_call=syncs,
                                 seconds=t, counted_by="profiler" if cuda else "dispatch mode"))
    path = write_json(a.out / "bench_graph.json", dict(device=str(device), steps=a.steps, churn=a.churn,
                                                       parameters=params, nfe=nfe, quick=a.quick, rows=rows))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
