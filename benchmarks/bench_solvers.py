"""Benchmark: sample quality against network evaluations (NFE) for every solver of fastdiff.sample, on the
Gaussian-mixture oracle, where the exact answer is known.

Two measures, for each solver at each NFE budget (the largest number of steps whose NFE fits the budget):

    ring SW / floor   the ring mixture (fastdiff.GaussianMixture.ring(), 8 modes): sliced Wasserstein-1 distance of
                      the solver's samples to an exact draw from the mixture, over the distance between two exact
                      draws of the same size (the noise floor; 1.0 = as close as exact sampling gets)
    ODE error         deterministic solvers only: max |x - x_exact| over 64 samples of a 3-D mixture, x_exact the
                      probability-flow ODE's solution (RK4, 2000 steps) from the same latents and schedule range
                      (sigma 80 -> 0.002; the solvers' schedules end at sigma_min, no step to 0)

Stochastic solvers are seeded (fastdiff's generator), so every run prints the same table. dpm_adaptive chooses its
own steps: it runs at the tolerances ADAPTIVE_RTOLS instead of budgets (atol 1e-3), and its rows show the NFE it took.

    python3 benchmarks/bench_solvers.py                  # NFE 8, 16, 32, 64; 8,192 ring samples (a few minutes)
    python3 benchmarks/bench_solvers.py --quick          # NFE 8 and 16, 1,024 samples
    python3 benchmarks/bench_solvers.py --solvers heun,dpmpp_2m,lms --nfe 10,20

Prints the table and writes benchmarks/results/bench_solvers.json (or --out). Nothing here asserts anything.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fastdiff  # noqa: E402
from fastdiff import testing  # noqa: E402
from fastdiff.metrics import sliced_wasserstein  # noqa: E402
from fastdiff.sampling.plan import SOLVERS  # noqa: E402
from _harness import common_arguments, make_parser, run_meta, setup, write_json  # noqa: E402

TWO_EVALUATIONS = ("heun", "dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde")  # 2N - 1 for N steps
DETERMINISTIC = ("euler", "heun", "ddim", "dpmpp_2m", "dpm_2", "lms", "unipc", "dpm_adaptive")
ADAPTIVE_RTOLS = (0.2, 0.05, 0.01, 0.002)  # dpm_adaptive's settings, in place of NFE budgets (--quick: the first two)
ODE_MIXTURE = dict(means=[[1.5, 0.5, 0.0], [-1.0, 0.0, 1.0], [0.0, -1.2, -0.5]], stds=[0.4, 0.3, 0.5],
                   weights=[5.0, 3.0, 2.0])


def steps_for(solver: str, nfe: int) -> int:
    """The most steps whose NFE (schedule to 0) fits the budget."""
    return max((nfe + 1) // 2, 1) if solver in TWO_EVALUATIONS else nfe


def main(argv=None) -> None:
    parser = make_parser(__doc__)
    common_arguments(parser, repeats=None, repeats_help="unused (the samples are seeded: one run)",
                     quick="NFE 8 and 16, 1,024 ring samples")
    parser.add_argument("--solvers", default=",".join(SOLVERS), help="comma-separated solvers (default: all)")
    parser.add_argument("--nfe", default=None, help="comma-separated NFE budgets (default 8,16,32,64; --quick 8,16)")
    parser.add_argument("--samples", type=int, default=None, help="ring samples (default 8192; --quick 1024)")
    parser.add_argument("--backend", default="auto", help="fastdiff backend (default auto)")
    a = parser.parse_args(argv)
    device = setup(a)
    solvers = [s.strip() for s in a.solvers.split(",") if s.strip()]
    unknown = [s for s in solvers if s not in SOLVERS]
    if unknown:
        parser.error(f"--solvers: unknown {unknown}; choose from {', '.join(SOLVERS)}")
    budgets = [int(n) for n in (a.nfe or ("8,16" if a.quick else "8,16,32,64")).split(",")]
    samples = a.samples or (1024 if a.quick else 8192)

    ring = testing.ring_problem(samples, 1234)
    mix3 = fastdiff.GaussianMixture(**ODE_MIXTURE)
    ode_latents = torch.randn(64, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    exact = testing.rk4_probability_flow(mix3.denoise, ode_latents * 80.0, 80.0, 0.002, 2000)

    rows = []
    print(f"fastdiff {fastdiff.__version__} bench_solvers: ring of {samples:,} samples (noise floor SW "
          f"{ring.floor:.4f}), backend {a.backend}")
    print(f"{'solver':<20} {'NFE':>4} {'steps':>10} {'ring SW/floor':>14} {'ODE error':>10}")
    for solver in solvers:
        adaptive = solver == "dpm_adaptive"
        for budget in (ADAPTIVE_RTOLS[:2] if a.quick else ADAPTIVE_RTOLS) if adaptive else budgets:
            n = steps_for(solver, budget) if not adaptive else None
            schedule = dict(adaptive=dict(rtol=budget, atol=1e-3)) if adaptive else dict(num_steps=n)
            latents, seeds = ring.latents.to(device), ring.seeds.to(device)
            counted = []

            def net(x, sigma, _calls=counted):
                _calls.append(1)
                return ring.mix(x, sigma)

            x = fastdiff.sample(net, latents, solver=solver, seeds=seeds, backend=a.backend, **schedule)
            distance = sliced_wasserstein(x.cpu(), ring.reference) / ring.floor
            ode_error = None
            if solver in DETERMINISTIC:
                levels = schedule if adaptive else dict(sigmas=fastdiff.karras_sigmas(n + 1)[:-1])  # 80 -> 0.002
                out = fastdiff.sample(mix3, ode_latents, solver=solver, dtype=torch.float64, backend="reference",
                                      **levels)
                ode_error = float((out - exact).abs().max())
            rows.append(dict(solver=solver, nfe=len(counted), steps=n, rtol=budget if adaptive else None,
                             ring_sw_over_floor=distance, ode_error=ode_error))
            steps = f"rtol {budget}" if adaptive else str(n)
            print(f"{solver:<20} {len(counted):>4} {steps:>10} {distance:>14.2f} "
                  f"{'' if ode_error is None else f'{ode_error:.2e}':>10}")
    path = Path(a.out) / "bench_solvers.json"
    write_json(path, dict(meta=run_meta(device, argv), rows=rows))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
