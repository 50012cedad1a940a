"""Whole-sampler benchmark: 65,536 points of a 2-D Gaussian mixture, a small MLP denoiser, 18 Heun steps.

Side by side in one run, with the same network and the same sigmas (benchmarks/_peers.py):
  fastdiff.sample on each backend that can run here (the C++ CPU kernels, the reference path, ...);
  k-diffusion's own sample_heun (its installed sampling.py, via fastdiff.testing.k_diffusion_sampling());
  diffusers' HeunDiscreteScheduler step loop (S_churn 0 only: diffusers' Heun has no churn).
Prints samples/s, the ratio to k-diffusion's time, the mean log-density of the samples under the mixture and, at
S_churn 0 (no noise drawn), each sampler's largest difference from fastdiff's reference path; writes JSON to
benchmarks/results/.

    python3 benchmarks/bench_sampler.py [--points 65536] [--steps 18] [--churn 0] [--repeats 5] [--threads N]
    python3 benchmarks/bench_sampler.py --quick     # 1,024 points, 4 steps, one timed call each (a smoke run)
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastdiff  # noqa: E402
from fastdiff import backends  # noqa: E402
from _peers import diffusers_heun, kdiffusion_heun  # noqa: E402
from _harness import common_arguments, make_parser, median_round_robin, setup, write_json  # noqa: E402


class MLPDenoiser(torch.nn.Module):
    """A small EDM-preconditioned MLP for 2-D points: F(c_in x, c_noise) with two hidden layers of 128."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
                                       torch.nn.SiLU(), torch.nn.Linear(hidden, 2))

    def forward(self, x, c_noise):
        return self.net(torch.cat([x, c_noise.reshape(-1, 1).to(x.dtype)], dim=1))


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--points", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=18)
    parser.add_argument("--churn", type=float, default=0.0, help="S_churn (0: the deterministic sampler)")
    common_arguments(parser, repeats=5, repeats_help="timed calls per sampler (default 5)", device=False,
                     quick="1,024 points, 4 steps, one timed call per sampler")
    a = parser.parse_args(argv)
    if a.quick:
        a.points, a.steps, a.repeats = 1024, 4, 1
    setup(a)  # the CPU: the points and the network stay on it

    mixture = fastdiff.GaussianMixture.ring()
    net = fastdiff.EDMPrecond(MLPDenoiser()).eval()
    seeds = list(range(a.points))
    latents = fastdiff.randn(seeds, (a.points, 2))
    sigmas = fastdiff.karras_sigmas(a.steps).float()
    settings = dict(num_steps=a.steps, S_churn=a.churn, seeds=seeds)

    runs = {}
    with torch.inference_mode():
        for name in ("cpu", "triton", "cuda", "reference"):
            if backends.reasons(name, latents, (latents,)):
                continue
            net.backend = name  # the skip mix runs on the same backend as the sampler's steps
            runs[f"fastdiff.sample, backend {name}"] = lambda name=name: fastdiff.sample(net, latents, backend=name, **settings)
        net.backend = "reference"  # the peers get a plain eager network
        try:
            runs["k-diffusion sample_heun"] = lambda run=kdiffusion_heun(net, sigmas, a.churn): run(latents)
        except ImportError as error:
            raise SystemExit(f"bench_sampler.py compares against k-diffusion's own sample_heun: {error}") from None
        if a.churn == 0:
            runs["diffusers HeunDiscreteScheduler"] = lambda run=diffusers_heun(net, sigmas): run(latents)
        else:
            print(f"S_churn {a.churn:g}: no diffusers row (diffusers' HeunDiscreteScheduler has no churn)")
        outputs = {name: fn() for name, fn in runs.items()}
        quality = {name: float(mixture.log_prob(x).mean()) for name, x in outputs.items()}
        reference = outputs["fastdiff.sample, backend reference"]
        difference = {name: float((x - reference).abs().max()) for name, x in outputs.items()} if a.churn == 0 else {}
        nfe = fastdiff.plan_steps(num_steps=a.steps).nfe
        sigma = torch.full((a.points,), 1.0)
        runs[f"the network alone ({nfe} calls)"] = lambda: [net(latents, sigma) for _ in range(nfe)]
        seconds = median_round_robin(runs, a.repeats)

    base = seconds["k-diffusion sample_heun"]
    print(f"{a.points:,} points of the 2-D ring mixture, EDMPrecond(MLP 3-128-128-2), {a.steps} Heun steps (NFE {nfe}), "
          f"S_churn {a.churn:g}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print(f"{'sampler':<42} {'seconds':>9} {'samples/s':>11} {'x k-diff':>9} {'mean log p':>11} {'max |diff|':>11}")
    for name, t in seconds.items():
        print(f"{name:<42} {t:>9.4f} {a.points / t:>11,.0f} {base / t:>9.2f} {quality.get(name, float('nan')):>11.4f} "
              f"{difference.get(name, float('nan')):>11.2e}")
    print("x k-diff: k-diffusion's time / this time; max |diff|: largest difference from fastdiff's reference path")
    path = write_json(a.out / "bench_sampler.json", dict(points=a.points, steps=a.steps, churn=a.churn,
                                                         threads=torch.get_num_threads(), quick=a.quick,
                                                         seconds=seconds, mean_log_prob=quality,
                                                         max_abs_difference_vs_reference=difference))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
