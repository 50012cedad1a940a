"""Whole-sampler benchmark: 65,536 points of a 2-D Gaussian mixture, a small MLP denoiser, 18 Heun steps.

Side by side in one run, with the same network and the same schedule:
  fastdiff.sample on each backend that can run here (the C++ CPU kernels, the reference path, ...);
  k-diffusion's sample_heun pattern, written here from its formulas (eager PyTorch, torch.randn_like noise,
  tensor-valued sigmas and Python `if`s on them), and k-diffusion's own sample_heun when it is installed.
Prints samples/s and the ratio to the k-diffusion pattern; writes JSON to benchmarks/results/.

    python3 benchmarks/bench_sampler.py [--points 65536] [--steps 18] [--churn 0] [--repeats 5] [--threads N]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastdiff  # noqa: E402
from fastdiff import backends  # noqa: E402
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


def kdiffusion_pattern_heun(model, x, sigmas, s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0):
    """k-diffusion's sample_heun as eager PyTorch: x starts at sigma_max scale, sigmas is a tensor ending in 0."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        gamma = min(s_churn / (len(sigmas) - 1), 2**0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.0
        sigma_hat = sigmas[i] * (gamma + 1)
        if gamma > 0:
            eps = torch.randn_like(x) * s_noise
            x = x + eps * (sigma_hat**2 - sigmas[i] ** 2) ** 0.5
        denoised = model(x, sigma_hat * s_in)
        d = (x - denoised) / sigma_hat
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            denoised_2 = model(x_2, sigmas[i + 1] * s_in)
            d_2 = (x_2 - denoised_2) / sigmas[i + 1]
            x = x + (d + d_2) / 2 * dt
    return x


def main(argv=None) -> int:
    parser = make_parser(__doc__)
    parser.add_argument("--points", type=int, default=65536)
    parser.add_argument("--steps", type=int, default=18)
    parser.add_argument("--churn", type=float, default=0.0, help="S_churn (0: the deterministic sampler)")
    common_arguments(parser, repeats=5, repeats_help="timed calls per sampler (default 5)", device=False)
    a = parser.parse_args(argv)
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
        net.backend = "reference"  # k-diffusion's loop gets a plain eager network
        runs["k-diffusion sample_heun pattern (eager)"] = lambda: kdiffusion_pattern_heun(
            net, latents * sigmas[0], sigmas, s_churn=a.churn)
        try:
            import k_diffusion  # optional: measured when installed

            wrapped = lambda x, sigma: net(x, sigma)  # noqa: E731
            runs["k-diffusion sample_heun"] = lambda: k_diffusion.sampling.sample_heun(
                wrapped, latents * sigmas[0], sigmas, disable=True, s_churn=a.churn)
        except ImportError:
            pass
        quality = {name: float(mixture.log_prob(fn()).mean()) for name, fn in runs.items()}
        nfe = fastdiff.plan_steps(num_steps=a.steps).nfe
        sigma = torch.full((a.points,), 1.0)
        runs[f"the network alone ({nfe} calls)"] = lambda: [net(latents, sigma) for _ in range(nfe)]
        seconds = median_round_robin(runs, a.repeats)

    base = seconds["k-diffusion sample_heun pattern (eager)"]
    print(f"{a.points:,} points of the 2-D ring mixture, EDMPrecond(MLP 3-128-128-2), {a.steps} Heun steps (NFE {nfe}), "
          f"S_churn {a.churn:g}, {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print(f"{'sampler':<42} {'seconds':>9} {'samples/s':>11} {'x k-diff':>9} {'mean log p':>11}")
    for name, t in seconds.items():
        print(f"{name:<42} {t:>9.4f} {a.points / t:>11,.0f} {base / t:>9.2f} {quality.get(name, float('nan')):>11.4f}")
    path = write_json(a.out / "bench_sampler.json", dict(points=a.points, steps=a.steps, churn=a.churn,
                                                         threads=torch.get_num_threads(), seconds=seconds,
                                                         mean_log_prob=quality))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
