"""Every noise schedule and discretization of fastdiff, in one module: the place to change one.

- EDM's Karras schedule (karras_sigmas), the noise levels fastdiff.sample steps through.
- DDPM's beta schedules (ddpm_betas, ddpm_alphas_cumprod), for fastdiff.DDPM and DDPMLoss.
- The VP noise level sigma(t) and its inverse (vp_sigma, vp_sigma_inv), for VPPrecond, VPLoss and the general sampler.
- iDDPM's discrete levels u_j (iddpm_levels), for iDDPMPrecond and the iddpm discretization.
- The score SDEs' schedules: SMLD's sigma(t) and levels for VESDE, the linear beta(t) of VPSDE and sub-VP.
- EDM's general sampler (Table 1): the time variables sigma(t), s(t) and their derivatives and inverses
  (ode_schedule), and the four discretizations edm, vp, ve, iddpm (discretize).

Host side: numbers become float64 tensors, tensors keep their dtype. Only fastdiff._validate is imported, so
any module can import its schedule from here.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from ._validate import (as_float_tensor, check_below, check_choice, check_int, check_positive, check_real,
                        check_unit_interval)


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


# --------------------------------------------------------------------------------------------------------
# The VP noise level of Song et al. 2021 in EDM's terms (preconditioners, losses and the general sampler).
# --------------------------------------------------------------------------------------------------------

def vp_sigma(t, beta_d: float, beta_min: float) -> torch.Tensor:
    """The VP noise level sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), with expm1 for small t
    (docs/formulas.md#vp-noise-level)."""
    t = torch.as_tensor(t)
    return torch.expm1(0.5 * beta_d * (t**2) + beta_min * t).sqrt()


def vp_sigma_inv(sigma, beta_d: float, beta_min: float) -> torch.Tensor:
    """The inverse of vp_sigma: t(sigma) = (sqrt(beta_min^2 + 2 beta_d L) - beta_min) / beta_d, L = ln(1 + sigma^2).

    Computed as 2 L / (sqrt(beta_min^2 + 2 beta_d L) + beta_min), the same value without the cancellation
    that costs float32 several percent at sigma ~ 1e-3.
    """
    L = torch.log1p(torch.as_tensor(sigma) ** 2)
    return 2 * L / ((beta_min**2 + 2 * beta_d * L).sqrt() + beta_min)


# --------------------------------------------------------------------------------------------------------
# iDDPM's discrete noise levels (Nichol & Dhariwal 2021, in EDM Table 1's form).
# --------------------------------------------------------------------------------------------------------

def iddpm_alpha_bar(j, M: int, C_2: float) -> float:
    """alpha_bar(j) = sin(pi/2 * j / (M (C_2 + 1)))^2."""
    return math.sin(0.5 * math.pi * j / M / (C_2 + 1)) ** 2


def iddpm_levels(M: int, C_1: float, C_2: float) -> torch.Tensor:
    """u_M = 0; u_{j-1} = sqrt((u_j^2 + 1) / max(alpha_bar(j-1)/alpha_bar(j), C_1) - 1), as float64 [M+1]
    (docs/formulas.md#iddpm-levels)."""
    u = [0.0] * (M + 1)
    for j in range(M, 0, -1):
        ratio = iddpm_alpha_bar(j - 1, M, C_2) / iddpm_alpha_bar(j, M, C_2)
        u[j - 1] = math.sqrt((u[j] ** 2 + 1) / max(ratio, C_1) - 1)
    return torch.tensor(u, dtype=torch.float64)


# --------------------------------------------------------------------------------------------------------
# The score SDEs' schedules (Song et al. 2021): SMLD's geometric sigma(t) (VESDE) and the linear beta(t) of the
# VP family, with their N-level discretisations.
# --------------------------------------------------------------------------------------------------------

def smld_sigma(t, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """VESDE: sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
    return sigma_min * (sigma_max / sigma_min) ** as_float_tensor(t)


def smld_levels(N: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """VESDE's N levels sigma_i = sigma(i / (N - 1)), i = 0..N-1 (geometric), float64: the levels of SMLD's
    noise-conditional score network."""
    return torch.linspace(math.log(sigma_min), math.log(sigma_max), N, dtype=torch.float64).exp()


def linear_beta(t, beta_min: float, beta_max: float) -> torch.Tensor:
    """VPSDE, sub-VP: beta(t) = beta_min + t (beta_max - beta_min)."""
    return beta_min + as_float_tensor(t) * (beta_max - beta_min)


def linear_beta_integral(t, beta_min: float, beta_max: float) -> torch.Tensor:
    """int_0^t beta(s) ds = beta_min t + (beta_max - beta_min) t^2 / 2."""
    t = as_float_tensor(t)
    return beta_min * t + 0.5 * (beta_max - beta_min) * t**2


def linear_discrete_betas(N: int, beta_min: float, beta_max: float) -> torch.Tensor:
    """DDPM's betas of the N-level VP discretisation: beta_i = beta(i / (N - 1)) / N, float64."""
    return torch.linspace(beta_min / N, beta_max / N, N, dtype=torch.float64)


DISCRETIZATIONS = ("edm", "vp", "ve", "iddpm")
ODE_SCHEDULES = ("edm", "linear", "vp", "ve")  # sigma(t) of the general ODE; "edm" and "linear" are both t
SCALINGS = ("none", "vp")
# The VP betas of Song et al. 2021; they fix only the default noise range of the vp discretization, as in EDM.
VP_BETA_D, VP_BETA_MIN = 19.9, 0.1
DEFAULT_SIGMA_RANGE = {"edm": (0.002, 80.0), "ve": (0.02, 100.0), "iddpm": (0.002, 81.0)}  # vp: from epsilon_s


# --------------------------------------------------------------------------------------------------------
# sigma(t), sigma'(t), sigma^-1 and s(t), s'(t) (EDM Table 1). Numbers become float64 tensors; tensors keep dtype.
# --------------------------------------------------------------------------------------------------------

def vp_sigma_deriv(t, beta_d: float, beta_min: float) -> torch.Tensor:
    """VP: sigma'(t) = (beta_min + beta_d t) (sigma(t) + 1/sigma(t)) / 2."""
    t = as_float_tensor(t)
    sigma = vp_sigma(t, beta_d, beta_min)
    return 0.5 * (beta_min + beta_d * t) * (sigma + 1 / sigma)


def ve_sigma(t) -> torch.Tensor:
    """VE: sigma(t) = sqrt(t)."""
    return as_float_tensor(t).sqrt()


def ve_sigma_deriv(t) -> torch.Tensor:
    """VE: sigma'(t) = 1 / (2 sqrt(t))."""
    return 0.5 / as_float_tensor(t).sqrt()


def ve_sigma_inv(sigma) -> torch.Tensor:
    """VE: t(sigma) = sigma^2."""
    return as_float_tensor(sigma) ** 2


def linear_sigma(t) -> torch.Tensor:
    """EDM: sigma(t) = t."""
    return as_float_tensor(t)


def linear_sigma_deriv(t) -> torch.Tensor:
    """EDM: sigma'(t) = 1."""
    return torch.ones_like(as_float_tensor(t))


def vp_scale(sigma) -> torch.Tensor:
    """VP scaling in terms of the noise level: s = 1 / sqrt(1 + sigma^2)."""
    return 1 / (1 + as_float_tensor(sigma) ** 2).sqrt()


def vp_scale_deriv(sigma, sigma_deriv) -> torch.Tensor:
    """VP scaling's derivative: s'(t) = -sigma(t) sigma'(t) s(t)^3."""
    sigma = as_float_tensor(sigma)
    return -sigma * as_float_tensor(sigma_deriv) * vp_scale(sigma) ** 3


def vp_betas(sigma_min: float, sigma_max: float, epsilon_s: float = 1e-3) -> tuple[float, float]:
    """The VP betas with sigma(epsilon_s) = sigma_min and sigma(1) = sigma_max (docs/formulas.md#schedules-and-scalings):
    beta_d = 2 (ln(sigma_min^2 + 1)/epsilon_s - ln(sigma_max^2 + 1)) / (epsilon_s - 1), beta_min = ln(sigma_max^2 + 1) - beta_d/2.

    Raises ValueError when that schedule would not increase over [epsilon_s, 1] (beta_d <= 0 or sigma'(epsilon_s) <= 0).
    """
    sigma_min, sigma_max = check_positive("sigma_min", sigma_min), check_positive("sigma_max", sigma_max)
    check_below("sigma_min", sigma_min, "sigma_max", sigma_max)
    epsilon_s = check_unit_interval("epsilon_s", epsilon_s)
    log_min, log_max = math.log1p(sigma_min**2), math.log1p(sigma_max**2)
    beta_d = 2 * (log_min / epsilon_s - log_max) / (epsilon_s - 1)
    beta_min = log_max - 0.5 * beta_d
    if not (beta_d > 0 and beta_min + beta_d * epsilon_s > 0):
        raise ValueError(f"sigma_min: no increasing VP schedule has sigma(epsilon_s={epsilon_s}) = sigma_min={sigma_min} and "
                         f"sigma(1) = sigma_max={sigma_max} (it gives beta_d={beta_d:.6g}, beta_min={beta_min:.6g}); "
                         "lower sigma_min or raise epsilon_s")
    return beta_d, beta_min


class ODESchedule(NamedTuple):
    """The time variable of the general ODE: sigma(t), sigma'(t), sigma_inv(sigma), s(t), s'(t) as callables."""

    sigma: Callable
    sigma_deriv: Callable
    sigma_inv: Callable
    s: Callable
    s_deriv: Callable

    def coefficients(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) of dx/dt = A x - B D(x/s; sigma): A = sigma'/sigma + s'/s, B = sigma' s / sigma, at t > 0."""
        sigma, sigma_deriv, s = self.sigma(t), self.sigma_deriv(t), self.s(t)
        return sigma_deriv / sigma + self.s_deriv(t) / s, sigma_deriv * s / sigma

    def derivative(self, x: torch.Tensor, denoised: torch.Tensor, t) -> torch.Tensor:
        """dx/dt at time t (a number) given denoised = D(x / s(t); sigma(t))."""
        A, B = (float(c) for c in self.coefficients(t))
        return A * x - B * denoised


def ode_schedule(schedule: str = "edm", scaling: str = "none", beta_d: float = VP_BETA_D,
                 beta_min: float = VP_BETA_MIN) -> ODESchedule:
    """sigma(t) of `schedule` ("edm"/"linear": t, "vp": sqrt(exp(beta_d t^2/2 + beta_min t) - 1), "ve": sqrt(t)) and
    s(t) of `scaling` ("none": 1, "vp": 1/sqrt(1 + sigma(t)^2)); beta_d, beta_min are used by schedule "vp" only."""
    check_choice("schedule", schedule, ODE_SCHEDULES)
    check_choice("scaling", scaling, SCALINGS)
    if schedule == "vp":
        beta_d, beta_min = check_real("beta_d", beta_d), check_real("beta_min", beta_min)
        sigma = lambda t: vp_sigma(as_float_tensor(t), beta_d, beta_min)  # noqa: E731
        sigma_deriv = lambda t: vp_sigma_deriv(t, beta_d, beta_min)  # noqa: E731
        sigma_inv = lambda sigma: vp_sigma_inv(as_float_tensor(sigma), beta_d, beta_min)  # noqa: E731
    elif schedule == "ve":
        sigma, sigma_deriv, sigma_inv = ve_sigma, ve_sigma_deriv, ve_sigma_inv
    else:
        sigma, sigma_deriv, sigma_inv = linear_sigma, linear_sigma_deriv, linear_sigma
    if scaling == "vp":
        s = lambda t: vp_scale(sigma(t))  # noqa: E731
        s_deriv = lambda t: vp_scale_deriv(sigma(t), sigma_deriv(t))  # noqa: E731
    else:
        s = lambda t: torch.ones_like(as_float_tensor(t))  # noqa: E731
        s_deriv = lambda t: torch.zeros_like(as_float_tensor(t))  # noqa: E731
    return ODESchedule(sigma, sigma_deriv, sigma_inv, s, s_deriv)


# --------------------------------------------------------------------------------------------------------
# Discretizations: the N noise levels sigma_0 > ... > sigma_{N-1} (EDM Table 1, "time steps"), float64.
# --------------------------------------------------------------------------------------------------------

def default_sigma_range(discretization: str = "edm", epsilon_s: float = 1e-3) -> tuple[float, float]:
    """EDM's default (sigma_min, sigma_max) of a discretization; vp: (sigma(epsilon_s), sigma(1)) with beta_d=19.9, beta_min=0.1."""
    check_choice("discretization", discretization, DISCRETIZATIONS)
    if discretization == "vp":
        epsilon_s = check_unit_interval("epsilon_s", epsilon_s)
        ends = vp_sigma(torch.tensor([epsilon_s, 1.0], dtype=torch.float64), VP_BETA_D, VP_BETA_MIN)
        return float(ends[0]), float(ends[1])
    return DEFAULT_SIGMA_RANGE[discretization]


def vp_time_steps(num_steps: int, epsilon_s: float = 1e-3) -> torch.Tensor:
    """VP: t_i = 1 + i/(N-1) (epsilon_s - 1), i = 0..N-1 (t_0 = 1, t_{N-1} = epsilon_s)."""
    return 1 + _ramp(num_steps) * (check_unit_interval("epsilon_s", epsilon_s) - 1)


def vp_sigmas(num_steps: int, sigma_min: float, sigma_max: float, epsilon_s: float = 1e-3) -> torch.Tensor:
    """VP: sigma(t_i) at vp_time_steps, the betas from vp_betas(sigma_min, sigma_max, epsilon_s)."""
    beta_d, beta_min = vp_betas(sigma_min, sigma_max, epsilon_s)
    return vp_sigma(vp_time_steps(num_steps, epsilon_s), beta_d, beta_min)


def ve_sigmas(num_steps: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """VE: sigma_i = sqrt(t_i), t_i = sigma_max^2 (sigma_min^2 / sigma_max^2)^(i/(N-1)): geometric from sigma_max to sigma_min."""
    sigma_min, sigma_max = check_positive("sigma_min", sigma_min), check_positive("sigma_max", sigma_max)
    check_below("sigma_min", sigma_min, "sigma_max", sigma_max)
    return ve_sigma(sigma_max**2 * (sigma_min**2 / sigma_max**2) ** _ramp(num_steps))


def iddpm_sigmas(num_steps: int, sigma_min: float, sigma_max: float, C_1: float = 0.001, C_2: float = 0.008,
                 M: int = 1000) -> torch.Tensor:
    """iDDPM: u_{j(i)} with j(i) = floor(j_0 + (j_1 - j_0)/(N-1) i + 1/2), u_j = iddpm_levels(M, C_1, C_2);
    j_0 (j_1) is the first (last) index with sigma_min <= u_j <= sigma_max (EDM Table 1 has j_1 = M-1)."""
    u = iddpm_levels(check_int("M", M, minimum=2), check_positive("C_1", C_1), check_positive("C_2", C_2))
    sigma_min, sigma_max = check_positive("sigma_min", sigma_min), check_positive("sigma_max", sigma_max)
    inside = ((u >= sigma_min) & (u <= sigma_max)).nonzero().flatten().tolist()  # u decreases: a run of indices
    if not inside:
        raise ValueError(f"sigma_min: no iDDPM level u_j (M={M}, from {float(u[M - 1]):.6g} to {float(u[0]):.6g}) lies in "
                         f"[sigma_min, sigma_max] = [{sigma_min}, {sigma_max}]")
    j_0, j_1, n = inside[0], inside[-1], max(check_int("num_steps", num_steps, minimum=1) - 1, 1)
    # floor(j_0 + (j_1 - j_0) i / n + 1/2) in exact integer arithmetic.
    indices = [j_0 + (2 * (j_1 - j_0) * i + n) // (2 * n) for i in range(num_steps)]
    return u[indices]


def discretize(discretization: str, num_steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0,
               epsilon_s: float = 1e-3, C_1: float = 0.001, C_2: float = 0.008, M: int = 1000) -> torch.Tensor:
    """The N = num_steps noise levels of a discretization ("edm": Eq. 5 with rho, "vp", "ve", "iddpm"), float64,
    decreasing from sigma_max (iddpm: the largest level u_j <= sigma_max) without the final 0
    (docs/formulas.md#discretizations)."""
    check_choice("discretization", discretization, DISCRETIZATIONS)
    check_int("num_steps", num_steps, minimum=1)
    if discretization == "vp":
        return vp_sigmas(num_steps, sigma_min, sigma_max, epsilon_s)
    if discretization == "ve":
        return ve_sigmas(num_steps, sigma_min, sigma_max)
    if discretization == "iddpm":
        return iddpm_sigmas(num_steps, sigma_min, sigma_max, C_1, C_2, M)
    return karras_sigmas(num_steps, sigma_min, sigma_max, rho)[:-1]


def _ramp(num_steps: int) -> torch.Tensor:
    """i / (N - 1) for i = 0..N-1, float64 ([0] for N = 1)."""
    check_int("num_steps", num_steps, minimum=1)
    return torch.arange(num_steps, dtype=torch.float64) / max(num_steps - 1, 1)
