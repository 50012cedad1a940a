"""Noise-level schedules (host side, float64)."""
from __future__ import annotations

import math

import torch


def karras_sigmas(num_steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """EDM Eq. 5: t_i = (sigma_max^(1/rho) + i/(N-1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, then t_N = 0.

    Returns a float64 CPU tensor of num_steps + 1 descending sigmas ending in 0. With num_steps = 1 the
    schedule is [sigma_max, 0].
    """
    check_int("num_steps", num_steps, minimum=1)
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    check_positive("rho", rho)
    if not sigma_min < sigma_max:
        raise ValueError(f"sigma_min: must be below sigma_max, got sigma_min={sigma_min} and sigma_max={sigma_max}")
    step_indices = torch.arange(num_steps, dtype=torch.float64)
    ramp = step_indices / max(num_steps - 1, 1)
    t_steps = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([t_steps, torch.zeros(1, dtype=torch.float64)])


def check_int(name: str, value, minimum: int | None = None) -> int:
    """Raise unless value is an int (not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {value!r} of type {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return value


def check_real(name: str, value, *, minimum: float | None = None, allow_inf: bool = False) -> float:
    """Raise unless value is a real number (not NaN; +inf only if allowed) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
            value = float(value)
        else:
            raise TypeError(f"{name}: expected a real number, got {value!r} of type {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not (allow_inf and value > 0)):
        accepted = "a finite number or +inf" if allow_inf else "a finite number"
        raise ValueError(f"{name}: expected {accepted}, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return value


def check_positive(name: str, value, allow_inf: bool = False) -> float:
    """Raise unless value is a real number > 0."""
    value = check_real(name, value, allow_inf=allow_inf)
    if not value > 0:
        raise ValueError(f"{name}: must be > 0, got {value}")
    return value
