"""Noise-level schedules (host side, float64)."""
from __future__ import annotations

import torch

from ._validate import check_below, check_choice, check_int, check_positive


def karras_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """EDM Eq. 5: t_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, then t_N = 0.

    Returns a float64 CPU tensor of num_steps + 1 descending sigmas ending in 0. With num_steps = 1 the
    schedule is [sigma_max, 0] (docs/formulas.md#karras-schedule).
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


BETA_SCHEDULES = ("linear", "cosine")


def ddpm_betas(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
               beta_schedule: str = "linear") -> torch.Tensor:
    """DDPM's beta_t, t = 0..T-1, float64 (docs/formulas.md#beta-schedules).

    "linear": evenly spaced from beta_start to beta_end (Ho et al. 2020). "cosine" (Nichol & Dhariwal 2021):
    beta_t = min(1 - alpha_bar(t+1) / alpha_bar(t), 0.999), alpha_bar(t) = cos^2(pi/2 (t/T + s) / (1 + s)), s = 0.008;
    beta_start and beta_end are not used.
    """
    check_int("num_timesteps", num_timesteps, minimum=1)
    check_choice("beta_schedule", beta_schedule, BETA_SCHEDULES)
    if beta_schedule == "linear":
        check_positive("beta_start", beta_start)
        check_positive("beta_end", beta_end)
        if not beta_start <= beta_end < 1:
            raise ValueError(f"beta_end: expected beta_start <= beta_end < 1, got beta_start={beta_start!r}, beta_end={beta_end!r}")
        return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    s = 0.008  # "cosine"
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    alpha_bar = torch.cos((steps + s) / (1 + s) * torch.pi / 2) ** 2
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)


def ddpm_alphas_cumprod(num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                        beta_schedule: str = "linear") -> torch.Tensor:
    """alpha_bar_t = prod_{s <= t} (1 - beta_s), t = 0..T-1, float64."""
    return torch.cumprod(1 - ddpm_betas(num_timesteps, beta_start, beta_end, beta_schedule), dim=0)
