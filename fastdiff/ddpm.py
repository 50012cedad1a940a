"""DDPM (Ho et al. 2020) and DDIM (Song et al. 2021): the discrete-time diffusion, its ancestral and DDIM samplers,
its loss, and an adapter that turns its eps-model into an EDM denoiser (docs/formulas.md#ddpm).

Time steps count from 0, as in fastdiff.DDPMLoss: t = 0..T-1 is the paper's 1..T, so alphas_cumprod[t] is the
paper's alpha_bar_{t+1}. eps_model(x_t, t[, class_labels]) takes t as a float tensor [B] of time steps in x_t's dtype.

The EDM view: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps = sqrt(a_t) (x_0 + sigma_t eps) with a_t = alphas_cumprod[t]
and sigma_t = sqrt((1 - a_t) / a_t). So x_edm = x_t / sqrt(a_t) is the data plus noise of std sigma_t, and
D(x_edm; sigma_t) = x_edm - sigma_t eps_model(sqrt(a_t) x_edm, t), with sqrt(a_t) = 1 / sqrt(1 + sigma_t^2).

Randomness: the samplers' noise at step i is fastdiff's normal stream of each sample's seed at offset
SAMPLER_OFFSET + i (the offsets of fastdiff.sample), so a seed gives the same sample in any batch and on any device.
Every per-step scalar is computed on the host, in float64, before the loop; the loop itself never syncs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from . import ops
from ._memory import require_memory
from ._nonfinite import check_nonfinite
from .ops.backends import check_name, resolve
from .loss import DDPMLoss
from .precond import Precond, nearest_level
from .ops.reference.skip_mix import compute_dtype, per_sample
from .rng import draw_seeds, seeds_tensor
from .sampling.loop import SamplingLoop
from .sampling.plan import StepPlan, ancestral_plan
from .schedules import BETA_SCHEDULES, ddpm_betas
from ._validate import as_float_tensor, check_int, check_output, check_real
from ._validate import check_floating as _check_state, check_like as _check_like

VARIANCES = ("fixedlarge", "fixedsmall")
TABLE_BYTES_PER_TIMESTEP = 64  # at least: DDPM's eight float64 tables of num_timesteps values
DEFAULT_BETAS = (1e-4, 0.02)


@dataclass(frozen=True)
class DDPMStepPlan:
    """One DDPM sampling run: the time steps it visits and its plan for the shared sampling loop.

    `steps` is a fastdiff.StepPlan in EDM's variables (x_edm = x_t / sqrt(a_t), sigma_t = sqrt((1 - a_t) / a_t)):
    t holds sigma at each visited time step, then 0; every step is x <- D + (t_down / t) (x - D) + noise_std z with
    D = x - sigma eps_model(sqrt(a_t) x, t), which is Ho et al.'s and Song et al.'s update written in those
    variables (docs/formulas.md#ddpm); start_scale = 1 / sqrt(a_{t_0}) turns the VP latents x_{t_0} into x_edm."""

    t: tuple[int, ...]  # the time steps, descending
    steps: "StepPlan"

    @property
    def num_steps(self) -> int:
        return len(self.t)


class DDPM:
    """The DDPM forward process q(x_t | x_0) = N(sqrt(a_t) x_0, (1 - a_t) I) with its tables (float64 host tensors).

    beta_schedule "linear": beta_t evenly spaced from beta_start to beta_end (Ho et al. 2020); "cosine" (Nichol &
    Dhariwal 2021): alpha_bar(t) = cos^2(pi/2 (t/T + s) / (1 + s)), s = 0.008, beta clipped at 0.999, which does
    not use beta_start/beta_end (giving them other values is an error, not a wish).
    """

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02,
                 beta_schedule: str = "linear"):
        self.num_timesteps = check_int("num_timesteps", num_timesteps, minimum=2)
        require_memory("num_timesteps", str(self.num_timesteps),
                       {torch.device("cpu"): self.num_timesteps * TABLE_BYTES_PER_TIMESTEP},
                       "the schedule's tables (betas, alphas_cumprod, the posterior's coefficients, ...)",
                       "use fewer time steps")
        if not isinstance(beta_schedule, str) or beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule: expected one of {', '.join(map(repr, BETA_SCHEDULES))}, got {beta_schedule!r}")
        if beta_schedule == "cosine" and (beta_start, beta_end) != DEFAULT_BETAS:
            raise ValueError(f"beta_start: the cosine schedule does not use beta_start/beta_end, got beta_start="
                             f"{beta_start!r}, beta_end={beta_end!r}; leave them at their defaults {DEFAULT_BETAS}")
        self.beta_start, self.beta_end, self.beta_schedule = beta_start, beta_end, beta_schedule
        T = self.num_timesteps
        self.betas = ddpm_betas(T, beta_start, beta_end, beta_schedule)
        self.alphas = 1 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        a, a_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        # q(x_{t-1} | x_t, x_0) = N(coef1 x_0 + coef2 x_t, beta_tilde_t), docs/formulas.md#posterior.
        self.posterior_variance = (1 - a_prev) / (1 - a) * self.betas
        self.posterior_mean_coef1 = a_prev.sqrt() * self.betas / (1 - a)
        self.posterior_mean_coef2 = self.alphas.sqrt() * (1 - a_prev) / (1 - a)
        # beta_tilde_0 = 0: its log is taken from beta_tilde_1, as Ho et al.'s code does.
        self.posterior_log_variance_clipped = torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]).log()
        self._levels = self.sigmas()  # what the samplers' denoiser looks time steps up in
        self._sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self._tables: dict = {}  # (name, device) -> a table q_sample, q_posterior or a sampler indexes, copied once
        self._losses: dict = {}  # backend -> DDPMLoss

    def __repr__(self) -> str:
        betas = "" if self.beta_schedule == "cosine" else f", beta_start={self.beta_start}, beta_end={self.beta_end}"
        return f"DDPM(num_timesteps={self.num_timesteps}{betas}, beta_schedule={self.beta_schedule!r})"

    # ---------------------------------------------------------------------------------------------------------
    # The forward process and its posterior.
    # ---------------------------------------------------------------------------------------------------------

    def sigmas(self) -> torch.Tensor:
        """The EDM noise levels sigma_t = sqrt((1 - a_t) / a_t), float64 [T], increasing in t."""
        return ((1 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise, per sample t ([B] ints); float32 (float64 for float64 input)."""
        _check_state("x0", x0)
        t = self._check_t(t, x0)
        _check_like("noise", noise, x0)
        dtype = compute_dtype(x0, noise)
        a = self._table("alphas_cumprod", x0.device)[t]
        return per_sample(a.sqrt().to(dtype), x0) * x0.to(dtype) + per_sample((1 - a).sqrt().to(dtype), x0) * noise.to(dtype)

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t):
        """(mean, variance) of q(x_{t-1} | x_t, x0): mean = coef1_t x0 + coef2_t x_t (x0's shape), variance =
        beta_tilde_t of shape [B, 1, ..., 1]; float32 (float64 for float64 input). At t = 0 the variance is 0."""
        _check_state("x0", x0)
        _check_like("x_t", x_t, x0)
        t = self._check_t(t, x0)
        dtype = compute_dtype(x0, x_t)
        coef1, coef2, variance = (self._table(name, x0.device)[t].to(dtype) for name in
                                  ("posterior_mean_coef1", "posterior_mean_coef2", "posterior_variance"))
        mean = per_sample(coef1, x0) * x0.to(dtype) + per_sample(coef2, x0) * x_t.to(dtype)
        return mean, per_sample(variance, x0)

    # ---------------------------------------------------------------------------------------------------------
    # Training.
    # ---------------------------------------------------------------------------------------------------------

    def loss(self, eps_model, x0: torch.Tensor, t=None, noise=None, seeds=None, class_labels=None, backend: str = "auto"):
        """L_simple elementwise, (noise - eps_model(x_t, t))^2: fastdiff.DDPMLoss with this schedule (see there)."""
        if check_name(backend) not in self._losses:
            self._losses[backend] = DDPMLoss(self.num_timesteps, self.beta_start, self.beta_end, self.beta_schedule,
                                             backend=backend)
        return self._losses[backend](eps_model, x0, class_labels, t=t, noise=noise, seeds=seeds)

    # ---------------------------------------------------------------------------------------------------------
    # Sampling.
    # ---------------------------------------------------------------------------------------------------------

    def timesteps(self, num_steps: int) -> torch.Tensor:
        """The time steps a sampler of num_steps steps visits, int64, descending: round(i (T-1) / (S-1)) for
        i = S-1..0 (evenly spaced from T-1 to 0, both included; all T steps when S = T; [T-1] when S = 1)."""
        T = self.num_timesteps
        S = check_int("num_steps", num_steps, minimum=1)
        if S > T:
            raise ValueError(f"num_steps: must be at most num_timesteps={T}, got {S}")
        if S == 1:
            return torch.tensor([T - 1], dtype=torch.int64)
        i = torch.arange(S, dtype=torch.int64)
        return ((2 * i * (T - 1) + (S - 1)) // (2 * (S - 1))).flip(0)  # round half up, in exact integer arithmetic

    def ancestral_plan(self, num_steps: int | None = None, variance: str = "fixedlarge") -> DDPMStepPlan:
        """The plan of ancestral sampling (Ho et al. 2020, Algorithm 2) over timesteps(num_steps).

        With fewer steps than T the chain is respaced as in improved DDPM: alpha_i = a_{t_i} / a_{t_{i+1}}, beta_i =
        1 - alpha_i between consecutive visited steps. The step is the posterior mean of x_0 = D, which in EDM's
        variables is x <- D + r (x - D) with 1 - r = beta_i / (1 - a_i), plus noise of variance sigma_i^2 = beta_i
        ("fixedlarge") or beta_tilde_i ("fixedsmall"), none at the last step, divided by a_prev (x_edm's scale).
        """
        if not isinstance(variance, str) or variance not in VARIANCES:
            raise ValueError(f"variance: expected one of {', '.join(map(repr, VARIANCES))}, got {variance!r}")
        t = self.timesteps(self.num_timesteps if num_steps is None else num_steps)
        a, a_prev = self._step_alphas(t)
        beta = self.betas[t] if t.numel() == self.num_timesteps else 1 - a / a_prev  # the paper's betas on the full chain
        beta_tilde = (1 - a_prev) / (1 - a) * beta
        noise_var = (beta if variance == "fixedlarge" else beta_tilde).clone()
        noise_var[-1] = 0.0  # no noise at the last step
        sigma = ((1 - a) / a).sqrt()
        t_down = (1 - beta / (1 - a)) * sigma  # r sigma: the weight of x - D, times sigma
        t_down[-1] = 0.0  # the last step lands on x_0 = D (a_prev = 1)
        levels = sigma.tolist()
        steps = StepPlan(t=tuple(levels) + (0.0,), t_hat=tuple(levels), gamma=(0.0,) * len(levels),
                         noise_std=tuple((noise_var / a_prev).sqrt().tolist()), correct=(False,) * len(levels),
                         t_down=tuple(t_down.tolist()), noise_after=True, start_scale=float((1 / a[0]).sqrt()))
        return DDPMStepPlan(t=tuple(t.tolist()), steps=steps)

    def ddim_plan(self, num_steps: int = 50, eta: float = 0.0) -> DDPMStepPlan:
        """The plan of DDIM (Song et al. 2021, Eq. 12) over timesteps(num_steps). In EDM's variables Eq. 12 is
        k-diffusion's ancestral Euler step with the same eta (docs/formulas.md#ddim), so this is the plan of
        fastdiff.sample(solver="euler_ancestral", eta=eta) on this DDPM's levels (solver="ddim" for eta = 0), started
        from the VP latents: one DDIM, whichever door it is reached by. eta = 1 is DDPM's "fixedsmall" ancestral step."""
        eta = check_real("eta", eta, minimum=0.0)
        if eta > 1:
            raise ValueError(f"eta: must be in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like), got {eta}")
        t = self.timesteps(num_steps)
        a = self.alphas_cumprod[t]
        levels = ((1 - a) / a).sqrt().tolist()
        steps = dataclasses.replace(ancestral_plan(levels + [0.0], eta), start_scale=float((1 / a[0]).sqrt()))
        return DDPMStepPlan(t=tuple(t.tolist()), steps=steps)

    def sample(self, eps_model, latents: torch.Tensor, randn_like=None, seeds=None, variance: str = "fixedlarge",
               clip_denoised: bool = False, class_labels=None, num_steps: int | None = None, *, backend: str = "auto",
               nonfinite: str = "warn"):
        """Ancestral sampling: x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - a_t) eps) + sigma_t z, no noise at
        the last step, from x_{T-1} = latents (unit-variance noise [B, ...]); see ancestral_plan.

        clip_denoised clips the predicted x_0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) to [-1, 1] and steps to the
        posterior mean coef1 x_0 + coef2 x_t. num_steps < T samples a respaced chain (timesteps). Noise z comes from
        randn_like(x) when given (called once per step, as by fastdiff.sample), else from fastdiff's generator keyed by `seeds`
        (one int per sample, drawn from torch's default generator when omitted). The state is float32 (float64 for
        float64 latents); the result has the latents' shape and dtype. `backend` runs the noise injection (ops.churn).
        `nonfinite` says what to do if NaN or inf appear, as in fastdiff.sample: "warn" (default), "raise"
        (FloatingPointError) or "ignore"; the report names the first step whose state held them, or the latents.
        """
        plan = self.ancestral_plan(num_steps, variance)
        with torch.no_grad():  # sampling records no autograd graph (docs/sampling.md#no-autograd)
            return self._run(plan, eps_model, latents, randn_like, seeds, clip_denoised, class_labels, backend,
                             nonfinite)

    def ddim_sample(self, eps_model, latents: torch.Tensor, num_steps: int = 50, eta: float = 0.0, seeds=None,
                    randn_like=None, class_labels=None, clip_denoised: bool = False, *, backend: str = "auto",
                    nonfinite: str = "warn"):
        """DDIM (Song et al. 2021) over timesteps(num_steps) (evenly spaced from T-1 to 0); see ddim_plan.

        eta = 0 is deterministic (Euler on the probability-flow ODE in the EDM variables x / sqrt(a_t) and sigma_t),
        eta = 1 with num_steps = T is DDPM's ancestral sampler with "fixedsmall" variance. Noise, state and result as
        in sample(); clip_denoised clips the predicted x_0 to [-1, 1] and recomputes eps from it; nonfinite as in
        sample().
        """
        plan = self.ddim_plan(num_steps, eta)
        with torch.no_grad():  # sampling records no autograd graph (docs/sampling.md#no-autograd)
            return self._run(plan, eps_model, latents, randn_like, seeds, clip_denoised, class_labels, backend,
                             nonfinite)

    def run_plan(self, plan: DDPMStepPlan, eps_model, latents: torch.Tensor, randn_like=None, seeds=None,
                 clip_denoised: bool = False, class_labels=None, *, backend: str = "auto",
                 nonfinite: str = "warn") -> torch.Tensor:
        """The sampling loop for a plan of this DDPM (ancestral_plan or ddim_plan); arguments as in sample()."""
        with torch.no_grad():  # sampling records no autograd graph (docs/sampling.md#no-autograd)
            return self._run(plan, eps_model, latents, randn_like, seeds, clip_denoised, class_labels, backend,
                             nonfinite)

    def _run(self, plan: DDPMStepPlan, eps_model, latents, randn_like, seeds, clip_denoised, class_labels, backend,
             nonfinite):
        """The shared sampling loop (fastdiff.sampling.loop) on plan.steps, with eps_model as its denoiser; warnings
        name the caller of the public method that called this one."""
        state_dtype = _check_sampling_inputs(eps_model, latents, randn_like, seeds, clip_denoised, class_labels)
        check_nonfinite(nonfinite)
        if not isinstance(plan, DDPMStepPlan):
            raise TypeError(f"plan: expected a DDPMStepPlan (from ancestral_plan or ddim_plan), got {type(plan).__name__}")
        if not all(0 <= t < self.num_timesteps for t in plan.t):
            raise ValueError(f"plan: its time steps must be in [0, {self.num_timesteps}), got {list(plan.t)}")
        batch, device = latents.shape[0], latents.device
        backend = resolve(backend, torch.empty(0, dtype=state_dtype, device=device), (latents,))  # named: it must run
        if seeds is not None:
            seeds = seeds_tensor(seeds, batch, device)
        elif randn_like is None and any(std > 0 for std in plan.steps.noise_std):  # a deterministic run draws none
            seeds = draw_seeds(batch, device)
        net = _EpsDenoiser(eps_model, self, clip_denoised, device, backend)
        loop = SamplingLoop(net, plan.steps, latents, state_dtype, randn_like=randn_like, nonfinite=nonfinite,
                            backend=backend)
        x = loop.run(latents, seeds, class_labels)
        t = plan.t
        loop.report_nonfinite(stacklevel=3, hint="check eps_model's output at that time step",
                              step_name=lambda i: f"time step {t[i]} -> " + (f"{t[i + 1]}" if i + 1 < len(t) else "x_0"))
        return x

    # ---------------------------------------------------------------------------------------------------------
    # EDM's samplers for DDPM models.
    # ---------------------------------------------------------------------------------------------------------

    def denoiser(self, eps_model, *, backend: str = "auto") -> "DDPMPrecond":
        """eps_model as an EDM denoiser D(x; sigma) = x - sigma eps_model(x / sqrt(1 + sigma^2), t(sigma)), t(sigma)
        the nearest time step; for fastdiff.sample (see DDPMPrecond)."""
        return DDPMPrecond(eps_model, self, backend=backend)

    # ---------------------------------------------------------------------------------------------------------

    def _step_alphas(self, t: torch.Tensor):
        """(a_t, a_prev) for descending time steps t, a_prev being a at the next visited step (1 after the last)."""
        a = self.alphas_cumprod[t]
        return a, torch.cat([a[1:], torch.ones(1, dtype=torch.float64)])

    def _table(self, name: str, device) -> torch.Tensor:
        """A float64 table on `device`, copied there once."""
        key = (name, torch.device(device))
        if key not in self._tables:
            self._tables[key] = getattr(self, name).to(device)
        return self._tables[key]

    def _check_t(self, t, like: torch.Tensor) -> torch.Tensor:
        """One integer time step in [0, T) per sample, as int64 on like's device (one host sync to check the range)."""
        batch = like.shape[0]
        if not isinstance(t, torch.Tensor):
            try:
                t = torch.as_tensor(t)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(f"t: expected one integer time step per sample, got {t!r}") from None
        if t.shape != (batch,) or t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise ValueError(f"t: expected one integer time step per sample (shape [{batch}]), got {t.dtype} of shape "
                             f"{tuple(t.shape)}")
        t = t.to(device=like.device, dtype=torch.int64)
        if not bool(((t >= 0) & (t < self.num_timesteps)).all()):
            raise ValueError(f"t: every time step must be in [0, {self.num_timesteps}), got {t.tolist()}")
        return t


class _EpsDenoiser:
    """eps_model as the sampling loop's denoiser at this DDPM's own levels:
    D(x; sigma_t) = x - sigma_t eps_model(sqrt(a_t) x, t), clipped to [-1, 1] when clip (x_0 = D is DDPM's
    predicted x_0). t is found from sigma on the device (the nearest level: exact, since the plan's levels are
    these), so the loop stays free of host syncs."""

    def __init__(self, eps_model, ddpm: "DDPM", clip: bool, device, backend: str):
        self.eps_model, self.clip, self.backend = eps_model, clip, backend
        self.levels = ddpm._table("_levels", device)  # sigma_t, ascending
        self.sqrt_a = ddpm._table("_sqrt_alphas_cumprod", device)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, class_labels=None) -> torch.Tensor:
        t = nearest_level(sigma, self.levels)
        x_t = per_sample(self.sqrt_a[t].to(x.dtype), x) * x
        steps = t.to(x.dtype)
        eps = self.eps_model(x_t, steps) if class_labels is None else self.eps_model(x_t, steps, class_labels)
        eps = check_output("eps_model", eps, x_t, "eps_model(x_t, t)").to(x.dtype)
        denoised = ops.skip_mix(x, eps, sigma, precond="iddpm", backend=self.backend)  # x - sigma eps
        return denoised.clamp(-1, 1) if self.clip else denoised


class DDPMPrecond(Precond):
    """A DDPM eps-model as an EDM denoiser: D(x; sigma) = x - sigma eps_model(x / sqrt(sigma^2 + 1), t(sigma)) with
    t(sigma) = argmin_t |sigma - sigma_t| over the DDPM's levels (EDM's iDDPM preconditioning with these levels).

    sigma_min = sigma_0, sigma_max = sigma_{T-1}, and round_sigma snaps to the nearest level, so fastdiff.sample
    clamps its schedule to the model's range and evaluates the model only at its own levels:

        fastdiff.sample(ddpm.denoiser(eps_model), latents, num_steps=18)

    takes the usual unit-variance latents, starts from x = latents * round_sigma(80) (EDM's default sigma_max, which
    it also used for iDDPM models) and returns data (x_0) space, since x_edm = x_t / sqrt(a_t) is x_0 at sigma = 0.
    sigma_max=float("inf") starts at the top level instead: fine for the linear schedule (157.4 at T = 1000), but the
    cosine schedule's top level (20291) spends most of a Karras schedule's steps at useless noise levels.
    DDPM's own start x_{T-1} = latents is x_edm = latents / sqrt(a_{T-1}) = latents * sqrt(1 + sigma_{T-1}^2),
    1 / sqrt(1 - a_{T-1}) times fastdiff.sample's latents * sigma_{T-1} (1 + 2e-5 for the linear T = 1000 schedule):
    pass latents / sqrt(1 - ddpm.alphas_cumprod[-1]) with sigma_max=inf for that exact start.
    """

    kind = "iddpm"  # skip mix c_skip = 1, c_out = -sigma

    def __init__(self, eps_model, ddpm: DDPM, *, backend: str = "auto"):
        super().__init__(eps_model, backend)
        if not isinstance(ddpm, DDPM):
            raise TypeError(f"ddpm: expected a fastdiff DDPM, got {type(ddpm).__name__}")
        self.ddpm = ddpm
        # A plain attribute, not a buffer: module.half() must not round the noise levels.
        self.levels = ddpm.sigmas()
        self._levels_on = {self.levels.device: self.levels}  # one copy per device: a forward copies nothing
        self.sigma_min = float(self.levels[0])
        self.sigma_max = float(self.levels[-1])

    def levels_on(self, device) -> torch.Tensor:
        """The levels sigma_t as float64 on `device`, copied there once."""
        if device not in self._levels_on:
            self._levels_on[device] = self.levels.to(device)
        return self._levels_on[device]

    def sigma_index(self, sigma: torch.Tensor) -> torch.Tensor:
        """t(sigma) = argmin_t |sigma - sigma_t| for every element of sigma (int64, sigma's shape; ties go to the
        lower level). A binary search between the two neighbouring levels: O(log T) per element, not O(T)."""
        return nearest_level(sigma, self.levels_on(sigma.device), ties="lower")

    def round_sigma(self, sigma):
        """Snap each sigma to the nearest level sigma_t (keeps the shape; float64 for non-float input)."""
        sigma = as_float_tensor(sigma)
        return self.levels_on(sigma.device)[self.sigma_index(sigma)].to(sigma.dtype)

    def input_coefficients(self, sigma):
        c_in = 1 / (sigma**2 + 1).sqrt()  # sqrt(a_t) at a level: x_t = sqrt(a_t) x_edm
        c_noise = self.sigma_index(sigma).to(sigma.dtype)  # the time step t, as eps_model takes it
        return c_in, c_noise


def _plan(t: torch.Tensor, a: torch.Tensor, **coefficients: torch.Tensor) -> DDPMStepPlan:
    """A DDPMStepPlan from float64 [S] coefficient tensors, adding the x_0 prediction's 1/sqrt(a) and sqrt(1/a - 1)."""
    values = {name: tuple(value.tolist()) for name, value in coefficients.items()}
    return DDPMStepPlan(t=tuple(t.tolist()), sqrt_recip_a=tuple((1 / a).sqrt().tolist()),
                        sqrt_recipm1_a=tuple((1 / a - 1).sqrt().tolist()), **values)


def _check_sampling_inputs(eps_model, latents, randn_like, seeds, clip_denoised, class_labels) -> torch.dtype:
    """Validate a sampler's arguments; return the state dtype (float64 for float64 latents, else float32)."""
    if not callable(eps_model):
        raise TypeError(f"eps_model: expected a callable eps_model(x_t, t[, class_labels]), got {type(eps_model).__name__}")
    _check_state("latents", latents)
    if latents.shape[0] < 1:
        raise ValueError(f"latents: expected shape [B, ...] with B >= 1, got {tuple(latents.shape)}")
    if randn_like is not None and not callable(randn_like):
        raise TypeError(f"randn_like: expected a callable like torch.randn_like, got {type(randn_like).__name__}")
    if randn_like is not None and seeds is not None:
        raise ValueError("seeds: pass either randn_like or seeds, not both (seeds key fastdiff's own generator)")
    if not isinstance(clip_denoised, bool):
        raise TypeError(f"clip_denoised: expected True or False, got {clip_denoised!r}")
    if class_labels is not None:
        if not isinstance(class_labels, torch.Tensor) or class_labels.ndim < 1 or class_labels.shape[0] != latents.shape[0]:
            got = tuple(class_labels.shape) if isinstance(class_labels, torch.Tensor) else type(class_labels).__name__
            raise ValueError(f"class_labels: expected a tensor with one row per sample ({latents.shape[0]}), got {got}")
    return torch.float64 if latents.dtype == torch.float64 else torch.float32
