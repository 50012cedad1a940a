"""EDM's generalized sampler (Karras et al. 2022, Algorithms 1-2 over any sigma(t) and s(t); Table 1, Section 3).

The sampler integrates the general probability-flow ODE of docs/formulas.md#general-ode-sampler,
    dx/dt = (sigma'(t)/sigma(t) + s'(t)/s(t)) x - sigma'(t) s(t)/sigma(t) D(x/s(t); sigma(t)),
whose state is x = s(t) x~ with x~ the EDM state at noise level sigma(t). The time steps come from one of
four discretizations (edm, vp, ve, iddpm), the time variable from a noise-level schedule sigma(t) (edm/linear,
vp, ve) and the scale from a scaling s(t) (none, vp), so VP-, VE- and iDDPM-preconditioned models sample with
the ODEs they were trained for. With discretization "edm", schedule "edm" (= "linear"), scaling "none" and
alpha = 1 it is fastdiff.sample. The discretizations, sigma(t) and s(t) themselves live in fastdiff/schedules.py.

Every per-step scalar is computed on the host, in float64, before the loop (plan_general); the loop never reads
a device value. Noise comes from a user's randn_like (called once per step, as EDM does) or fastdiff's
per-sample generator at offset SAMPLER_OFFSET + i (ops.churn), drawn only on steps that add noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import ops
from .._memory import require_memory
from .._nonfinite import NonfiniteCheck, steps_where
from ..ops import backends
from ..rng import SAMPLER_OFFSET, draw_seeds, seeds_tensor
from .loop import call_net, check_inputs, check_noise, require_loop_memory
from .plan import check_sigmas, clamp_to_net, round_levels
from ..schedules import (DISCRETIZATIONS, ODE_SCHEDULES, SCALINGS, VP_BETA_D, VP_BETA_MIN, ODESchedule,
                         default_sigma_range, discretize, ode_schedule, vp_betas)
from .._validate import check_choice, check_int, check_positive, check_real, check_unit_interval

SOLVERS = ("heun", "euler")
PLAN_BYTES_PER_STEP = 480  # at least, on the host: GeneralPlan's 15 per-step tuples of Python floats (measured 488)


# --------------------------------------------------------------------------------------------------------
# The plan: every per-step scalar of one run, on the host.
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GeneralPlan:
    """The per-step scalars of one general sampling run, host floats computed in float64.

    Step i goes from time t[i] via t_hat[i] (churn) to t[i+1], with the derivative d = A x - B D(x/s; sigma)
    evaluated at t_hat[i] and, when correct[i], at t_prime[i] = t_hat[i] + alpha h[i], h[i] = t[i+1] - t_hat[i].
    """

    t: tuple[float, ...]  # N+1 times, t[N] = 0 unless the user's sigmas end above 0
    t_hat: tuple[float, ...]  # N: sigma_inv(round_sigma(sigma(t_i) (1 + gamma_i))), t_i when gamma_i = 0
    t_prime: tuple[float, ...]  # N: t_hat + alpha h (t[i+1] for alpha = 1); nan where correct[i] is False
    gamma: tuple[float, ...]  # N: churn factor
    sigma_hat: tuple[float, ...]  # N: sigma(t_hat), what the net sees
    sigma_prime: tuple[float, ...]  # N: sigma(t_prime); nan where correct[i] is False
    scale_ratio: tuple[float, ...]  # N: s(t_hat) / s(t_i)
    noise_std: tuple[float, ...]  # N: sqrt(sigma(t_hat)^2 - sigma(t_i)^2) s(t_hat) S_noise
    inv_s_hat: tuple[float, ...]  # N: 1 / s(t_hat), the net's input is x_hat / s(t_hat)
    inv_s_prime: tuple[float, ...]  # N: 1 / s(t_prime); nan where correct[i] is False
    A_hat: tuple[float, ...]  # N: sigma'/sigma + s'/s at t_hat
    B_hat: tuple[float, ...]  # N: sigma' s / sigma at t_hat
    A_prime: tuple[float, ...]  # N: the same at t_prime; nan where correct[i] is False
    B_prime: tuple[float, ...]
    h: tuple[float, ...]  # N: t[i+1] - t_hat[i]
    correct: tuple[bool, ...]  # N: whether step i takes the second-order correction (never the last step)
    alpha: float
    x0_scale: float  # sigma(t_0) s(t_0): x_0 = latents * x0_scale
    schedule: ODESchedule  # the sigma(t), s(t) the plan was made with

    @property
    def num_steps(self) -> int:
        return len(self.h)

    @property
    def nfe(self) -> int:
        """Network evaluations per sampling call."""
        return self.num_steps + sum(self.correct)

    @property
    def sigma(self) -> tuple[float, ...]:
        """sigma(t_i) of the N+1 times."""
        return tuple(self.schedule.sigma(torch.tensor(self.t, dtype=torch.float64)).tolist())


def plan_general(net=None, num_steps=18, sigma_min=None, sigma_max=None, rho=7.0, solver="heun", discretization="edm",
                 schedule="edm", scaling="none", epsilon_s=1e-3, C_1=0.001, C_2=0.008, M=1000, alpha=1.0, S_churn=0.0,
                 S_min=0.0, S_max=float("inf"), S_noise=1.0, *, sigmas=None) -> GeneralPlan:
    """Build every per-step scalar of sample_general on the host, in float64 (see sample_general for the arguments;
    churn: docs/formulas.md#general-churn, second-order step: docs/formulas.md#second-order-step)."""
    solver = check_choice("solver", solver, SOLVERS)
    discretization = check_choice("discretization", discretization, DISCRETIZATIONS)
    check_choice("schedule", schedule, ODE_SCHEDULES)
    check_choice("scaling", scaling, SCALINGS)
    alpha = check_real("alpha", alpha)
    if not alpha > 0:
        raise ValueError(f"alpha: must be > 0 (1 is Heun's method, 0.5 the midpoint method), got {alpha}")
    if solver == "euler" and alpha != 1:
        raise ValueError(f"alpha: sets the second-order step of solver='heun'; solver='euler' takes none, got alpha={alpha}")
    S_churn = check_real("S_churn", S_churn, minimum=0.0)
    S_min = check_real("S_min", S_min, minimum=0.0)
    S_max = check_real("S_max", S_max, minimum=0.0, allow_inf=True)
    S_noise = check_real("S_noise", S_noise, minimum=0.0)
    if S_min > S_max:
        raise ValueError(f"S_min: must not exceed S_max (churn applies to S_min <= sigma <= S_max), got S_min={S_min} and S_max={S_max}")
    epsilon_s = check_unit_interval("epsilon_s", epsilon_s)
    sigma_min, sigma_max = _sigma_range(net, discretization, sigma_min, sigma_max, epsilon_s)
    needs_betas = schedule == "vp" or (discretization == "vp" and sigmas is None)
    beta_d, beta_min = vp_betas(sigma_min, sigma_max, epsilon_s) if needs_betas else (VP_BETA_D, VP_BETA_MIN)
    sched = ode_schedule(schedule, scaling, beta_d, beta_min)

    # Noise levels: the discretization's (or the user's), rounded by the net, then as times of the schedule.
    if sigmas is None:
        num_steps = check_int("num_steps", num_steps, minimum=1)
        require_memory("num_steps", str(num_steps), {torch.device("cpu"): num_steps * PLAN_BYTES_PER_STEP},
                       "the sampler's per-step plan", "use fewer steps")
        levels = discretize(discretization, num_steps, sigma_min, sigma_max,
                            check_positive("rho", rho), epsilon_s, C_1, C_2, M)
        levels = torch.cat([levels, torch.zeros(1, dtype=torch.float64)])  # t_N = 0
    else:
        if num_steps != 18 or rho != 7.0:
            raise ValueError(f"sigmas: replaces the discretization, so num_steps={num_steps!r} and rho={rho!r} would be "
                             "ignored; pass either sigmas or those")
        levels = check_sigmas("sigmas", sigmas)
    positive = levels > 0
    round_sigma = getattr(net, "round_sigma", None)
    if round_sigma is not None:
        levels = levels.clone()
        levels[positive] = round_levels(round_sigma, levels[positive])
        levels = check_sigmas("net.round_sigma(sigmas)", levels, strict=False)
    t = torch.where(positive, sched.sigma_inv(levels.clamp(min=1e-300)), torch.zeros_like(levels))  # sigma_inv(0) = 0
    N = t.numel() - 1
    t_cur, t_next = t[:-1], t[1:]
    sigma_cur = sched.sigma(t_cur)

    # Churn: t_hat = sigma_inv(round_sigma(sigma(t) + gamma sigma(t))), measured and decided in sigma.
    gamma = torch.tensor([min(S_churn / N, math.sqrt(2) - 1) if S_min <= s <= S_max else 0.0 for s in sigma_cur.tolist()],
                         dtype=torch.float64)
    sigma_raised = sigma_cur + gamma * sigma_cur
    if round_sigma is not None and bool((gamma > 0).any()):
        sigma_raised = torch.where(gamma > 0, round_levels(round_sigma, sigma_raised), sigma_raised)
    # Without churn t_hat is t itself, not sigma_inv(sigma(t)), which may differ by a rounding and add noise.
    t_hat = torch.where(gamma > 0, sched.sigma_inv(sigma_raised), t_cur)
    sigma_hat = sched.sigma(t_hat)
    if not bool((sigma_hat >= sigma_cur).all()):
        raise ValueError(f"net.round_sigma: must not lower a noise level, but it maps sigma {sigma_cur.tolist()} with churn "
                         f"to {sigma_hat.tolist()}")
    s_cur, s_hat = sched.s(t_cur), sched.s(t_hat)
    noise_std = (sigma_hat**2 - sigma_cur**2).clamp(min=0).sqrt() * s_hat * S_noise
    h = t_next - t_hat

    # Second-order point: t' = t_hat + alpha h (exactly t_next for alpha = 1), never on the last step.
    correct = [solver == "heun" and i < N - 1 for i in range(N)]
    t_prime = t_next.clone() if alpha == 1 else t_hat + alpha * h
    mask = torch.tensor(correct, dtype=torch.bool)
    if bool((t_prime[mask] <= 0).any()):
        i = int(((t_prime <= 0) & mask).nonzero()[0])
        raise ValueError(f"alpha: the second-order point t_hat + alpha (t_next - t_hat) must stay above 0, but alpha={alpha} "
                         f"puts it at {float(t_prime[i]):.6g} on step {i} (t_hat={float(t_hat[i]):.6g}, t_next="
                         f"{float(t_next[i]):.6g}); use alpha <= 1 or more steps")
    t_prime = torch.where(mask, t_prime, torch.full_like(t_prime, math.nan))
    A_hat, B_hat = sched.coefficients(t_hat)
    A_prime, B_prime = sched.coefficients(t_prime)
    t0 = t[:1]
    return GeneralPlan(
        t=_floats(t), t_hat=_floats(t_hat), t_prime=_floats(t_prime), gamma=_floats(gamma), sigma_hat=_floats(sigma_hat),
        sigma_prime=_floats(sched.sigma(t_prime)), scale_ratio=_floats(s_hat / s_cur), noise_std=_floats(noise_std),
        inv_s_hat=_floats(1 / s_hat), inv_s_prime=_floats(1 / sched.s(t_prime)), A_hat=_floats(A_hat), B_hat=_floats(B_hat),
        A_prime=_floats(A_prime), B_prime=_floats(B_prime), h=_floats(h), correct=tuple(correct), alpha=alpha,
        x0_scale=float(sched.sigma(t0) * sched.s(t0)), schedule=sched)


# --------------------------------------------------------------------------------------------------------
# The sampler.
# --------------------------------------------------------------------------------------------------------

def sample_general(net, latents, class_labels=None, randn_like=None, num_steps=18, sigma_min=None, sigma_max=None,
                   rho=7.0, solver="heun", discretization="edm", schedule="edm", scaling="none", epsilon_s=1e-3,
                   C_1=0.001, C_2=0.008, M=1000, alpha=1.0, S_churn=0.0, S_min=0.0, S_max=float("inf"), S_noise=1.0,
                   seeds=None, dtype=None, *, sigmas=None, backend="auto", nonfinite="warn"):
    """Sample with EDM's generalized sampler; NVlabs/edm's `ablation_sampler` arguments, plus seeds/dtype/sigmas/backend.

    net(x, sigma[, class_labels]) returns D(x; sigma) (sigma of shape [B]); latents are unit-variance noise [B, ...];
    the result has their shape and dtype (state float32, or float64 for float64 latents or dtype=torch.float64).
    discretization ("edm", "vp", "ve", "iddpm") picks the noise levels, between sigma_min and sigma_max (defaults per
    discretization: edm 0.002..80, vp sigma(epsilon_s)..sigma(1), ve 0.02..100, iddpm 0.002..81, clamped to the net's
    sigma_min/sigma_max, then net.round_sigma); schedule ("edm" = "linear", "vp", "ve") is sigma(t) and scaling
    ("none", "vp") s(t), the VP betas derived from sigma_min, sigma_max and epsilon_s. The solver is Euler or the
    second-order step with alpha (1 = Heun), Euler on the last step; churn as EDM Algorithm 2, decided in sigma.
    Noise: randn_like(x) once per step when given, else fastdiff's generator keyed by `seeds` (one int per sample,
    drawn from torch's default generator when omitted). `sigmas` replaces the discretization by given noise levels
    (a last 0 is the step to t = 0; without it the run stops at the last level, x = s(t) x~). `backend` runs the noise
    injection (fastdiff.ops.churn). `nonfinite` says what to do if NaN or inf appear, as in fastdiff.sample: "warn"
    (default), "raise" (FloatingPointError) or "ignore".
    """
    state_dtype = check_inputs(net, latents, class_labels, randn_like, seeds, dtype, None, nonfinite)
    require_loop_memory(num_steps, sigmas, latents.shape[0], latents.device, state_dtype,
                        plan_bytes_per_step=PLAN_BYTES_PER_STEP, step_tables=1)
    backend = backends.resolve(backend, torch.empty(0, dtype=state_dtype, device=latents.device), (latents,))
    plan = plan_general(net, num_steps, sigma_min, sigma_max, rho, solver, discretization, schedule, scaling, epsilon_s,
                        C_1, C_2, M, alpha, S_churn, S_min, S_max, S_noise, sigmas=sigmas)
    if randn_like is None:
        if seeds is not None:
            seeds = seeds_tensor(seeds, latents.shape[0], latents.device)
        elif any(std > 0 for std in plan.noise_std):  # a deterministic run leaves torch's generator untouched
            seeds = draw_seeds(latents.shape[0], latents.device)
    with torch.no_grad():  # sampling records no autograd graph (docs/sampling.md#no-autograd)
        return run_general(net, latents, plan, class_labels, randn_like, seeds, state_dtype, backend, nonfinite,
                           stacklevel=2)


def run_general(net, latents: torch.Tensor, plan: GeneralPlan, class_labels=None, randn_like=None, seeds=None,
                state_dtype: torch.dtype = torch.float32, backend: str = "auto", nonfinite: str = "warn", *,
                stacklevel: int = 1) -> torch.Tensor:
    """The loop of sample_general for a plan: device work only, the host decides nothing from device values until
    the loop has ended, when NaN or inf in the state are reported per `nonfinite` (one host sync, none for "ignore";
    warnings name the caller `stacklevel` frames up).

    seeds is an int64 tensor [B] on latents' device when the plan adds noise and randn_like is None.
    """
    batch, device, N = latents.shape[0], latents.device, plan.num_steps
    finite_check = NonfiniteCheck(nonfinite, N, state_dtype, device)
    # What ops.churn and the net take as tensors lives in device tables made once; the rest are host floats.
    noise_std = torch.tensor(plan.noise_std, dtype=torch.float64).to(device=device, dtype=state_dtype)
    offsets = SAMPLER_OFFSET + torch.arange(N, dtype=torch.int64, device=device)
    sigma_hat, sigma_prime = (torch.tensor(values, dtype=torch.float64).to(device=device, dtype=state_dtype)[:, None]
                              .expand(N, batch).contiguous() for values in (plan.sigma_hat, plan.sigma_prime))  # [N, B]
    alpha = plan.alpha

    def denoise(x, inv_s, sigma):
        x_in = x if inv_s == 1 else x * inv_s
        return call_net(net, x_in, sigma, class_labels).to(state_dtype)

    x_next = latents.to(state_dtype) * plan.x0_scale
    finite_check.record(-1, x_next)
    for i in range(N):
        x_cur = x_next

        # Increase noise temporarily, moving the state to the scale s(t_hat).
        x_scaled = x_cur if plan.scale_ratio[i] == 1 else x_cur * plan.scale_ratio[i]
        if randn_like is not None:
            x_hat = x_scaled + noise_std[i] * check_noise(randn_like(x_cur), x_cur)
        elif plan.noise_std[i] > 0:
            x_hat = ops.churn(x_scaled, seeds, offsets[i], noise_std[i], backend=backend)
        else:
            x_hat = x_scaled

        # Euler step.
        h = plan.h[i]
        d_cur = plan.A_hat[i] * x_hat - plan.B_hat[i] * denoise(x_hat, plan.inv_s_hat[i], sigma_hat[i])
        if not plan.correct[i]:
            x_next = x_hat + h * d_cur
        else:
            # Apply the second-order correction at t' = t_hat + alpha h.
            x_prime = x_hat + (alpha * h) * d_cur
            d_prime = plan.A_prime[i] * x_prime - plan.B_prime[i] * denoise(x_prime, plan.inv_s_prime[i],
                                                                             sigma_prime[i])
            x_next = x_hat + h * ((1 - 1 / (2 * alpha)) * d_cur + (1 / (2 * alpha)) * d_prime)
        finite_check.record(i, x_next)
    where = steps_where(N, lambda i: "sigma {:.6g} -> {:.6g}".format(*plan.sigma[i:i + 2]))
    finite_check.report(where, "check the net's output at that noise level", stacklevel=stacklevel + 1)
    return x_next.to(latents.dtype)


# --------------------------------------------------------------------------------------------------------
# Helpers.
# --------------------------------------------------------------------------------------------------------

def _sigma_range(net, discretization: str, sigma_min, sigma_max, epsilon_s: float) -> tuple[float, float]:
    """sigma_min/sigma_max (the discretization's defaults for None), clamped to the net's supported range."""
    default_min, default_max = default_sigma_range(discretization, epsilon_s)
    sigma_min = default_min if sigma_min is None else sigma_min
    sigma_max = default_max if sigma_max is None else sigma_max
    return clamp_to_net(net, sigma_min, sigma_max, what="noise range")


def _floats(values: torch.Tensor) -> tuple[float, ...]:
    return tuple(values.reshape(-1).tolist())
