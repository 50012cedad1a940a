"""Command-line options that several `fastdiff` commands share (sample, generate)."""
from __future__ import annotations

import math


def add_schedule_arguments(p) -> None:
    """The noise schedule's and EDM's churn options, as `fastdiff.sample` takes them (sample, generate)."""
    p.add_argument("--sigma-min", type=float, default=0.002, help="lowest noise level of the schedule (default 0.002)")
    p.add_argument("--sigma-max", type=float, default=80.0, help="highest noise level of the schedule (default 80)")
    p.add_argument("--rho", type=float, default=7.0, help="Karras schedule exponent (default 7)")
    p.add_argument("--S-churn", type=float, default=0.0, dest="S_churn", help="stochasticity (0 = deterministic ODE)")
    p.add_argument("--S-min", type=float, default=0.0, dest="S_min", help="lowest noise level that gets churn")
    p.add_argument("--S-max", type=float, default=math.inf, dest="S_max", help="highest noise level that gets churn")
    p.add_argument("--S-noise", type=float, default=1.0, dest="S_noise", help="scale of the churn noise (default 1)")
