"""The plan of a sampling run (the leaf of fastdiff.sampling): EDM's sampler (Karras et al. 2022, Algorithm 2; Algorithm 1 when S_churn = 0), a drop-in for
edm_sampler, and k-diffusion's euler_ancestral and dpmpp_2m and DDIM, in the same loop.

Every solver takes steps of one form, in EDM's parameterisation (x at noise level sigma, D the denoiser):

    x_hat  = x_i + noise_std_i eps_i                         churn (euler, heun), before the net call
    D_i    = D(x_hat; t_hat_i)
    D'_i   = D_i + c_i (D_i - D_{i-1})                        DPM-Solver++(2M)'s extrapolation (c_i = 0 otherwise)
    x_next = D'_i + (t_down_i / t_hat_i) (x_hat - D'_i)       the Euler step, to t_down_i (t_{i+1} but for ancestral)
    x_next = Heun's correction, when it corrects
    x_next = x_next + noise_std_i eps_i                       ancestral noise (euler_ancestral), after the update

The Euler step written as x_next = D + (t_next / t) (x - D) is DDIM's deterministic update (eta = 0) for
x = x_VP / sqrt(alpha_bar), sigma = sqrt((1 - alpha_bar) / alpha_bar): solver="ddim" is the same plan as "euler".
Every per-step scalar (t_hat, gamma, the noise scales, t_down, c_i, whether to correct) is computed on the host from
the schedule before the loop, in float64: the loop itself never branches on a tensor value and never syncs.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from .._memory import require_memory
from .._nonfinite import check_nonfinite
from .._validate import check_below, check_int, check_positive, check_real
from ..ops.backends import check_name as check_backend_name
from ..schedules import karras_sigmas
from .programs import ETA_SOLVERS, LMS_ORDERS, PROGRAM_SOLVERS, SOLVER_TYPES, UNIPC_ORDERS, Program, solver_program

ADAPTIVE_SOLVERS = ("dpm_adaptive",)  # choose their steps while they run (fastdiff.sampling.adaptive): no plan
SOLVERS = ("euler", "heun", "euler_ancestral", "dpmpp_2m", "ddim") + PROGRAM_SOLVERS + ADAPTIVE_SOLVERS
CHURN_SOLVERS = ("euler", "heun", "dpm_2")  # EDM's churn (S_churn, S_min, S_max), as k-diffusion's samplers take it
NOISY_SOLVERS = ("euler_ancestral",) + ETA_SOLVERS + ADAPTIVE_SOLVERS  # their noise is set by eta, scaled by S_noise
DEFAULT_ETA = 1.0  # as k-diffusion's: the full ancestral (DDPM-like) noise, and the SDE solvers' noise
ADAPTIVE_ETA = 0.0  # k-diffusion's sample_dpm_adaptive default: the ODE solver, no noise
ADAPTIVE_ORDERS = (2, 3)  # dpm_adaptive: DPM-Solver-12 (order 2) or DPM-Solver-23 (order 3, the default)
ORDERS = {"lms": LMS_ORDERS, "unipc": UNIPC_ORDERS, **{name: ADAPTIVE_ORDERS for name in ADAPTIVE_SOLVERS}}  # who takes `order`
STATE_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True, eq=False)
class SampleOptions:
    """fastdiff.sample's settings, as one object: checked once, when made, and then passed whole from the front door
    (fastdiff.sample, fastdiff.GraphedSampler, fastdiff.check_capture) to the plan (make_plan) and the loop
    (fastdiff.sampling.loop.build_loop), which read them and check them no more.

    The fields are sample()'s keyword arguments of the same names and defaults, normalised (numbers as Python ints
    and floats). What is not here is per call or chooses a feature: the tensors (latents, class_labels, seeds), the
    functions (net, randn_like, callback) and the front door's own cuda_graph and guidance. Two checks need more
    than the settings and are left to the plan: sigma_min/sigma_max against the net's range, and `sigmas`, which is
    kept as given until the memory its plan needs has been checked (a huge schedule is refused before it is
    converted).
    """

    num_steps: int = 18
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    S_churn: float = 0.0
    S_min: float = 0.0
    S_max: float = float("inf")
    S_noise: float = 1.0
    solver: str = "heun"
    sigmas: object = None  # the schedule as given (a sequence or tensor), or None for the Karras schedule
    eta: float | None = None  # euler_ancestral's (its default, DEFAULT_ETA, is filled in); None for the others
    dtype: torch.dtype | None = None  # the state's; None: float64 for float64 latents, else float32
    backend: str = "auto"
    nonfinite: str = "warn"
    reuse_buffers: bool = False
    start_scale: float | None = None  # the state starts at latents * start_scale; None: at latents * the first level
    solver_type: str | None = None  # dpmpp_2m_sde's second-order term: "midpoint" (default) or "heun"
    order: int | None = None  # lms's: 1 to 4 (default 4); unipc's: 1 to 3 (default 2); dpm_adaptive's: 2 or 3 (3)

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731  (a frozen dataclass)
        for name in ("S_churn", "S_min", "S_noise"):
            set_(name, check_real(name, getattr(self, name), minimum=0.0))
        set_("S_max", check_real("S_max", self.S_max, minimum=0.0, allow_inf=True))
        if self.S_min > self.S_max:
            raise ValueError(f"S_min: must not exceed S_max (churn applies to S_min <= t <= S_max), got "
                             f"S_min={self.S_min} and S_max={self.S_max}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver: expected one of {', '.join(map(repr, SOLVERS))}, got {self.solver!r}")
        set_("eta", _check_eta(self.solver, self.eta))
        if self.solver_type is not None and self.solver != "dpmpp_2m_sde":
            raise ValueError(f"solver_type: only solver='dpmpp_2m_sde' takes solver_type (its second-order term), "
                             f"got solver_type={self.solver_type!r} with solver={self.solver!r}")
        if self.solver_type is not None and self.solver_type not in SOLVER_TYPES:
            raise ValueError(f"solver_type: expected one of {', '.join(map(repr, SOLVER_TYPES))}, got {self.solver_type!r}")
        if self.order is not None:
            if self.solver not in ORDERS:
                raise ValueError(f"order: only solver='lms', 'unipc' (how many earlier results a step uses) and "
                                 f"'dpm_adaptive' (2: DPM-Solver-12, 3: DPM-Solver-23) take order, got "
                                 f"order={self.order!r} with solver={self.solver!r}")
            set_("order", check_int("order", self.order, minimum=1))
            if self.order not in ORDERS[self.solver]:
                *first, last = map(str, ORDERS[self.solver])
                accepted = ("2 (DPM-Solver-12) or 3 (DPM-Solver-23)" if self.solver in ADAPTIVE_SOLVERS
                            else f"{', '.join(first)} or {last}")
                raise ValueError(f"order: expected {accepted} for solver={self.solver!r}, got {self.order}")
        _check_no_churn(self.solver, S_churn=self.S_churn, S_min=self.S_min, S_max=self.S_max, S_noise=self.S_noise)
        if self.solver in ADAPTIVE_SOLVERS:
            _check_adaptive_schedule(self.solver, self.sigmas, num_steps=self.num_steps, rho=self.rho)
        if self.sigmas is None:
            set_("num_steps", check_int("num_steps", self.num_steps, minimum=1))
        else:
            _check_no_schedule_arguments(num_steps=self.num_steps, sigma_min=self.sigma_min,
                                         sigma_max=self.sigma_max, rho=self.rho)
        if self.dtype is not None and self.dtype not in STATE_DTYPES:
            raise ValueError(f"dtype: expected torch.float32 or torch.float64 for the sampler state, got {self.dtype}")
        check_backend_name(self.backend)
        check_nonfinite(self.nonfinite)
        if not isinstance(self.reuse_buffers, bool):
            raise TypeError(f"reuse_buffers: expected True or False, got {self.reuse_buffers!r}")
        if self.start_scale is not None:  # e.g. a diffusers scheduler's init_noise_sigma, a 0-d tensor
            set_("start_scale", check_positive("start_scale", self.start_scale))

    def state_dtype(self, latents: torch.Tensor) -> torch.dtype:
        """The dtype of the sampler's state for these latents."""
        if self.dtype is not None:
            return self.dtype
        return torch.float64 if latents.dtype == torch.float64 else torch.float32

    def replace(self, **changes) -> "SampleOptions":
        """These options with some fields changed (and checked again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def split(cls, kwargs: dict, others: tuple[str, ...] = ()) -> tuple["SampleOptions", dict]:
        """SampleOptions of the names in kwargs that are fields, and a dict of those in `others`; any other name is a
        TypeError naming it."""
        fields = [f.name for f in dataclasses.fields(cls)]
        unknown = [name for name in kwargs if name not in fields and name not in others]
        if unknown:
            raise TypeError(f"{unknown[0]}: not a sampler setting (got {unknown[0]}={kwargs[unknown[0]]!r}); the "
                            f"settings are {', '.join(fields + list(others))}")
        return (cls(**{k: v for k, v in kwargs.items() if k in fields}),
                {k: v for k, v in kwargs.items() if k not in fields})
@dataclass(frozen=True)
class StepPlan:
    """The per-step scalars of one sampling run, host floats (float64): step i goes from t[i] via t_hat[i] to t[i+1].

    The optional fields describe the steps of the solvers beyond EDM's (see the module docstring); their defaults
    give EDM's steps, so a plan made with only the first five fields is an EDM plan.
    """

    t: tuple[float, ...]  # N+1 noise levels, t[N] usually 0
    t_hat: tuple[float, ...]  # N: round_sigma(t_i + gamma_i t_i)
    gamma: tuple[float, ...]  # N: churn factor of each step
    noise_std: tuple[float, ...]  # N: the std of the noise added at step i (sqrt(t_hat^2 - t^2) * S_noise for churn)
    correct: tuple[bool, ...]  # N: whether step i takes Heun's second-order correction
    t_down: tuple[float, ...] | None = None  # N: where step i's Euler step lands (ancestral: sigma_down); None: t[i+1]
    noise_after: bool = False  # noise_std is added after the update (ancestral), not before the net call (churn)
    multistep: tuple[float, ...] | None = None  # N: c_i = 1 / (2 r_i), the weight of D_i - D_{i-1} (DPM-Solver++(2M))
    start_scale: float | None = None  # the state starts at latents * start_scale; None: t[0] (EDM's x = sigma_max z).
    #   A VP chain (DDPM) starts at x_T = z, which is x = z / sqrt(alpha_bar_T) = z sqrt(1 + t[0]^2) in EDM's variables.

    @property
    def num_steps(self) -> int:
        return len(self.gamma)

    @property
    def nfe(self) -> int:
        """Network evaluations per sampling call."""
        return self.num_steps + sum(self.correct)

    def scaled(self, factor: float) -> "StepPlan":
        """The plan with every noise level (and noise std) times factor: the same structure, other values (the
        multistep weights are ratios of log-steps, which scaling leaves as they are)."""
        scale = lambda values: None if values is None else tuple(v * factor for v in values)  # noqa: E731
        return dataclasses.replace(self, t=scale(self.t), t_hat=scale(self.t_hat), noise_std=scale(self.noise_std),
                                   t_down=scale(self.t_down),
                                   start_scale=None if self.start_scale is None else self.start_scale * factor)


SCHEDULE_DEFAULTS = dict(num_steps=18, sigma_min=0.002, sigma_max=80.0, rho=7.0)


def plan_steps(net=None, num_steps=18, sigma_min=0.002, sigma_max=80.0, rho=7.0, S_churn=0.0, S_min=0.0,
               S_max=float("inf"), S_noise=1.0, *, solver="heun", sigmas=None, eta=None) -> StepPlan:
    """Build the schedule and every per-step scalar of the sampler on the host (docs/formulas.md#edm-sampler).

    The schedule is EDM's (clamped to net.sigma_min/sigma_max) unless `sigmas` is given; either way its
    noise levels, and every t_hat, go through net.round_sigma when the net has one.
    """
    return make_plan(net, SampleOptions(num_steps=num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho,
                                        S_churn=S_churn, S_min=S_min, S_max=S_max, S_noise=S_noise, solver=solver,
                                        sigmas=sigmas, eta=eta))


def make_plan(net, options: SampleOptions, state_dtype: torch.dtype = torch.float32,
              program: bool = False) -> "StepPlan | Program":
    """plan_steps for checked options: the schedule (after checking the memory its plan needs), then the plan, with
    the options' start_scale when given. The solvers of fastdiff.sampling.programs get a Program (their noise levels
    for a noise_sampler are computed in state_dtype, as k-diffusion computes them in the sigmas' dtype); so does
    euler_ancestral with program=True (its noise from a noise_sampler). An adaptive solver has no plan: an error."""
    if options.solver in ADAPTIVE_SOLVERS:
        raise ValueError(f"solver: {options.solver!r} chooses its steps while it runs (each from the error of the one "
                         f"before), so it has no plan made in advance and no fixed loop to capture; sample it eagerly "
                         f"with fastdiff.sample (or fastdiff.sampling.adaptive.sample_dpm_adaptive)")
    if options.solver in PROGRAM_SOLVERS or program:
        churn = _make_plan(net, options.replace(solver="euler")) if options.solver == "dpm_2" else None
        base = churn if churn is not None else _make_plan(net, options.replace(solver="euler", S_noise=1.0, eta=None,
                                                                                   solver_type=None, order=None))
        program = solver_program(options.solver, list(base.t), eta=options.eta, S_noise=options.S_noise,
                                 churn=None if churn is None else list(zip(churn.t_hat, churn.noise_std)),
                                 solver_type=options.solver_type, order=options.order, state_dtype=state_dtype)
        if options.start_scale is not None:
            program = dataclasses.replace(program, start_scale=options.start_scale)
        return program
    plan = _make_plan(net, options)
    if options.start_scale is not None:
        plan = dataclasses.replace(plan, start_scale=options.start_scale)
    return plan


def _make_plan(net, options: SampleOptions) -> StepPlan:
    solver, S_churn, S_min, S_max, S_noise = options.solver, options.S_churn, options.S_min, options.S_max, options.S_noise
    round_sigma = getattr(net, "round_sigma", None)
    if options.sigmas is None:
        num_steps = options.num_steps
        require_memory("num_steps", str(num_steps), {torch.device("cpu"): num_steps * PLAN_BYTES_PER_STEP},
                       "the sampler's per-step plan", "use fewer steps")
        t = karras_schedule(net, num_steps, options.sigma_min, options.sigma_max, options.rho)
    else:
        t = check_sigmas("sigmas", options.sigmas, heun_pairs=solver == "heun")
        require_memory("sigmas", f"a schedule of {t.numel() - 1} steps",
                       {torch.device("cpu"): (t.numel() - 1) * PLAN_BYTES_PER_STEP}, "the sampler's per-step plan",
                       "use fewer steps")
    if round_sigma is not None:  # rounding may repeat a level (a zero-length step, as in EDM) but not reach 0 early
        t = check_sigmas("net.round_sigma(sigmas)", torch.cat([round_levels(round_sigma, t[:-1]), t[-1:]]), strict=False)
    if solver == "euler_ancestral":
        return ancestral_plan(t.tolist(), options.eta, S_noise)
    if solver == "dpmpp_2m":
        return _dpmpp_2m_plan(t.tolist())
    # Host floats, not tensors: a plan is made on every sampling call. Each value is what float64 tensor arithmetic
    # gives (products, sums and differences are correctly rounded either way), but for the square root of noise_std,
    # taken by torch, whose float64 sqrt may differ from math.sqrt in the last bit, unless every step's is exactly 0.
    N = t.numel() - 1
    t_list = t.tolist()
    t_cur = t_list[:-1]
    gamma = tuple(min(S_churn / N, math.sqrt(2) - 1) if S_min <= t_i <= S_max else 0.0 for t_i in t_cur)
    t_hat = [t_i + g * t_i for t_i, g in zip(t_cur, gamma)]
    if round_sigma is not None:
        t_hat = round_levels(round_sigma, torch.tensor(t_hat, dtype=torch.float64)).tolist()
        if not all(th >= tc for th, tc in zip(t_hat, t_cur)):
            raise ValueError(f"net.round_sigma: must not lower a noise level, but it maps t_cur {t_cur} "
                             f"with churn to t_hat {t_hat}")
    if t_hat == t_cur:  # no churn anywhere: sqrt(t_hat^2 - t_cur^2) S_noise is exactly 0 at every step
        noise_std = (0.0,) * N
    else:
        squares = torch.tensor([th * th - tc * tc for th, tc in zip(t_hat, t_cur)], dtype=torch.float64)
        noise_std = tuple(root * S_noise for root in squares.sqrt().tolist())
    correct = tuple(solver == "heun" and i < N - 1 for i in range(N))  # the step to t_N is Euler, by index
    return StepPlan(t=tuple(t_list), t_hat=tuple(t_hat), gamma=gamma, noise_std=noise_std, correct=correct)


def ancestral_plan(t: list[float], eta: float, S_noise: float = 1.0) -> StepPlan:
    """euler_ancestral: an Euler step from t_i to sigma_down, then noise of std S_noise * sigma_up (k-diffusion's
    get_ancestral_step; with eta, DDIM's eta in EDM form)."""
    N = len(t) - 1
    up = [_sigma_up(t[i], t[i + 1], eta) for i in range(N)]
    down = [math.sqrt(max(t[i + 1] ** 2 - up[i] ** 2, 0.0)) if up[i] > 0 else t[i + 1] for i in range(N)]
    return StepPlan(t=tuple(t), t_hat=tuple(t[:-1]), gamma=(0.0,) * N, noise_std=tuple(S_noise * u for u in up),
                    correct=(False,) * N, t_down=tuple(down), noise_after=True)


def _sigma_up(sigma: float, sigma_next: float, eta: float) -> float:
    """sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)): the noise an ancestral
    step adds back (eta = 1: the posterior's, as in DDPM), so that sigma_down^2 + sigma_up^2 = sigma_next^2."""
    return min(sigma_next, eta * sigma_next * math.sqrt(sigma**2 - sigma_next**2) / sigma)


def _dpmpp_2m_plan(t: list[float]) -> StepPlan:
    """DPM-Solver++(2M) (Lu et al. 2022) in sigma: with lambda = -log sigma and h_i = lambda_{i+1} - lambda_i,
    x_{i+1} = (t_{i+1}/t_i) x_i + (1 - t_{i+1}/t_i) (D_i + c_i (D_i - D_{i-1})), c_i = 1/(2 r_i) = h_i / (2 h_{i-1}).

    The first step is first order (c = 0, a DDIM step), and so is a step to 0 (h is infinite: the step lands on D_i
    itself) and a step after a zero-length one (its D_{i-1} is D_i at the same point: no slope to extrapolate). A last
    step to t_N > 0 is second order, as in k-diffusion's sample_dpmpp_2m (docs/formulas.md#other-solvers).
    """
    N = len(t) - 1
    h = [math.log(t[i] / t[i + 1]) if t[i + 1] > 0 else math.inf for i in range(N)]
    multistep = tuple(h[i] / (2 * h[i - 1]) if i > 0 and math.isfinite(h[i]) and h[i - 1] > 0 else 0.0
                      for i in range(N))
    return StepPlan(t=tuple(t), t_hat=tuple(t[:-1]), gamma=(0.0,) * N, noise_std=(0.0,) * N, correct=(False,) * N,
                    multistep=multistep)


def _check_eta(solver: str, eta) -> float | None:
    """eta belongs to the ancestral and SDE solvers (default 1): a real >= 0; any other solver refuses it rather
    than ignore it."""
    if solver in NOISY_SOLVERS:
        default = ADAPTIVE_ETA if solver in ADAPTIVE_SOLVERS else DEFAULT_ETA
        return default if eta is None else check_real("eta", eta, minimum=0.0)
    if eta is not None:
        hint = (" (DDIM's eta = 0); DDIM with eta > 0 is solver='euler_ancestral' with that eta, the same update in "
                "EDM form" if solver == "ddim" else "")
        raise ValueError(f"eta: only the ancestral and SDE solvers ({', '.join(map(repr, NOISY_SOLVERS))}) take "
                         f"eta (the amount of noise their steps add); "
                         f"solver={solver!r} adds none{hint}; got eta={eta!r}")
    return None


def _check_no_churn(solver: str, **given) -> None:
    """S_churn, S_min and S_max (and S_noise, but for euler_ancestral, which scales its noise by it) belong to EDM's
    churn: a non-default one with another solver would be ignored, so it is an error."""
    defaults = dict(S_churn=0.0, S_min=0.0, S_max=float("inf"), S_noise=1.0)
    if solver in CHURN_SOLVERS:
        return
    churn = ("S_churn", "S_min", "S_max") if solver in NOISY_SOLVERS else ("S_churn", "S_min", "S_max", "S_noise")
    changed = [name for name in churn if given[name] != defaults[name]]
    if not changed:
        return
    name = changed[0]
    why = {"euler_ancestral": "it adds its own noise after each step, set by eta and scaled by S_noise",
           "dpmpp_2m": "it is a deterministic multistep solver", "lms": "it is a deterministic multistep solver",
           "unipc": "it is a deterministic multistep predictor-corrector solver",
           **{name: "its noise is its own, set by eta and scaled by S_noise"
              for name in ETA_SOLVERS + ADAPTIVE_SOLVERS},
           "ddim": "it is deterministic DDIM; EDM's stochastic sampler with the same update is solver='euler'"}[solver]
    raise ValueError(f"{name}: solver={solver!r} takes no churn ({why}); {', '.join(churn)} set EDM's churn, for "
                     f"solver='euler', 'heun' or 'dpm_2'; got {name}={given[name]!r}")


# What a plan holds per step, at least: its Python floats on the host (96 bytes per step for DPM-Solver++(2M), the
# smallest plan; Heun's is 136). fastdiff.sampling.loop adds the loop's device tables to this.
PLAN_BYTES_PER_STEP = 96


def extrapolates(plan: StepPlan) -> bool:
    """Whether some step of the plan extrapolates the denoised (DPM-Solver++(2M)'s second-order steps)."""
    return plan.multistep is not None and any(c != 0 for c in plan.multistep)


def structure(plan: StepPlan) -> tuple:
    """What a captured loop fixes about a plan: the number of steps, which add noise and which correct; then, for
    the other plans, where the noise goes, whether there are t_down and multistep tables, which steps extrapolate,
    and whether the start has a scale of its own (start_scale, a value of the loop's table)."""
    edm = plan.num_steps, tuple(std > 0 for std in plan.noise_std), plan.correct
    if not plan.noise_after and plan.t_down is None and plan.multistep is None and plan.start_scale is None:
        return edm
    extrapolating = None if plan.multistep is None else tuple(c != 0 for c in plan.multistep)
    return edm + (plan.noise_after, plan.t_down is not None, extrapolating, plan.start_scale is not None)


def karras_schedule(net, num_steps, sigma_min, sigma_max, rho) -> torch.Tensor:
    """karras_sigmas with sigma_min/sigma_max first clamped to the net's supported range (sigma_max may be inf
    when the net bounds it)."""
    return karras_sigmas(num_steps, *clamp_to_net(net, sigma_min, sigma_max), rho)


def clamp_to_net(net, sigma_min, sigma_max, what: str = "schedule") -> tuple[float, float]:
    """(sigma_min, sigma_max) checked and clamped to net.sigma_min / net.sigma_max when the net has them (EDM's rule,
    docs/formulas.md#karras-schedule); sigma_max may be inf when the net bounds it. `what` names the range in errors."""
    sigma_min = check_positive("sigma_min", sigma_min)
    sigma_max = check_positive("sigma_max", sigma_max, allow_inf=True)
    check_below("sigma_min", sigma_min, "sigma_max", sigma_max)
    net_min, net_max = getattr(net, "sigma_min", None), getattr(net, "sigma_max", None)
    if net_min is not None:
        sigma_min = max(sigma_min, float(net_min))
    if net_max is not None:
        sigma_max = min(sigma_max, float(net_max))
    if math.isinf(sigma_max):
        raise ValueError("sigma_max: expected a finite number, or a net with a finite sigma_max to clamp it to, got inf")
    if not sigma_min < sigma_max:
        raise ValueError(
            f"sigma_min: after clamping to the net's range [{net_min}, {net_max}] the {what} is empty "
            f"(sigma_min={sigma_min}, sigma_max={sigma_max}); choose sigma_min/sigma_max inside that range")
    return sigma_min, sigma_max


def _check_adaptive_schedule(solver: str, sigmas, **given) -> None:
    """An adaptive solver chooses its own steps between sigma_min and sigma_max: a schedule (sigmas, or num_steps
    and rho of the Karras schedule) would be ignored, so giving one is an error."""
    if sigmas is not None:
        raise ValueError(f"sigmas: solver={solver!r} chooses its own steps while it runs, from sigma_max down to "
                         f"sigma_min, by its error control; pass sigma_min and sigma_max instead of a schedule "
                         f"(got sigmas={sigmas!r})")
    changed = {name: value for name, value in given.items() if value != SCHEDULE_DEFAULTS[name]}
    if changed:
        name, value = next(iter(changed.items()))
        raise ValueError(f"{name}: solver={solver!r} chooses its own steps while it runs (their number and spacing "
                         f"follow its error control: adaptive=dict(rtol=..., atol=...)), so {name}={value!r} would "
                         f"be ignored; leave {name} out")


def _check_no_schedule_arguments(**given) -> None:
    """With sigmas=, the Karras schedule's arguments are unused: a non-default one is a mistake, not a wish."""
    changed = {name: value for name, value in given.items() if value != SCHEDULE_DEFAULTS[name]}
    if changed:
        listed = ", ".join(f"{name}={value!r}" for name, value in changed.items())
        raise ValueError(f"sigmas: replaces the Karras schedule, so {listed} would be ignored; pass either sigmas or those")


def round_levels(round_sigma, t: torch.Tensor) -> torch.Tensor:
    """net.round_sigma applied to a float64 host tensor, returned as float64 on the host."""
    return torch.as_tensor(round_sigma(t)).to(device="cpu", dtype=torch.float64).reshape(t.shape)


def check_sigmas(name: str, sigmas, strict: bool = True, heun_pairs: bool = False) -> torch.Tensor:
    """A schedule: 1-D, >= 2 values, finite, decreasing (strictly unless strict=False), positive but for a last 0;
    returned as float64 on the host. With heun_pairs, the schedule of diffusers' HeunDiscreteScheduler, whose sigmas
    list every inner level twice (s0, s1, s1, ..., s_(N-1), s_(N-1), s_N), is taken as the N-step schedule
    s0, s1, ..., s_N it stands for."""
    try:
        t = sigmas.detach() if isinstance(sigmas, torch.Tensor) else torch.as_tensor(sigmas, dtype=torch.float64)
        t = t.to(device="cpu", dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name}: expected a 1-D sequence of noise levels, got {sigmas!r} ({error})") from None
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"{name}: expected a 1-D schedule of at least 2 noise levels, got shape {tuple(t.shape)}")
    values = t.tolist()
    if not all(math.isfinite(v) for v in values) or not all(v > 0 for v in values[:-1]) or values[-1] < 0:
        raise ValueError(f"{name}: expected finite noise levels > 0 (the last may be 0), got {values}")
    if heun_pairs and strict and _heun_pairs(values):
        return t[[0, *range(1, len(values) - 1, 2), len(values) - 1]]
    if not all(a > b or (a == b and not strict) for a, b in zip(values, values[1:])):
        hint = ""
        if strict and any(a == b for a, b in zip(values, values[1:])):
            hint = ("; a level is repeated. diffusers' HeunDiscreteScheduler.sigmas (every inner level twice: s0, s1, "
                    "s1, ..., s_(N-1), s_(N-1), s_N) are accepted as they are with solver='heun'; for any other "
                    "schedule drop the repeats (torch.unique_consecutive(sigmas))")
        raise ValueError(f"{name}: expected a {'strictly ' if strict else ''}decreasing schedule, got {values}{hint}")
    return t


def _heun_pairs(values: list[float]) -> bool:
    """Whether values are s0, s1, s1, ..., s_(N-1), s_(N-1), s_N with s0 > s1 > ... > s_N (N >= 2): the sigmas of
    diffusers' HeunDiscreteScheduler after set_timesteps, the Euler point and the corrector sharing each inner level."""
    if len(values) < 4 or len(values) % 2:
        return False
    inner = values[1:-1]
    if any(a != b for a, b in zip(inner[0::2], inner[1::2])):
        return False
    levels = [values[0], *inner[0::2], values[-1]]
    return all(a > b for a, b in zip(levels, levels[1:]))
