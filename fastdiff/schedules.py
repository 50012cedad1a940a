"""Noise-level schedules (host side, float64)."""
from __future__ import annotations

import torch

from ._validate import check_below, check_int, check_positive


def karras_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """EDM Eq. 5: t_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, then t_N = 0.

    Returns a float64 CPU tensor of num_steps + 1 descending sigmas ending in 0. With num_steps = 1 the
    schedule is [sigma_max, 0].
    """
    check_int("num_steps", num_steps, minimum=1)
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    check_positive("rho", rho)
    check_below("sigma_min", sigma_min, "sigma_max", sigma_max)
    step_indices = torch.arange(num_steps, dtype=torch.float64)
    ramp = step_indices / max(num_steps - 1, 1)
    t_steps = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t_steps, torch.zeros(1, dtype=torch.float64)])
