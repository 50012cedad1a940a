"""fastdiff.sample: EDM's sampler (Karras et al. 2022, Algorithm 2; Algorithm 1 when S_churn = 0), a drop-in for
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
import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from . import backends, ops
from ._memory import on_devices, require_memory
from ._nonfinite import NONFINITE, NonfiniteCheck, check_nonfinite, steps_where  # noqa: F401 (NONFINITE: kept)
from .rng import SAMPLER_OFFSET, seeds_tensor
from ._validate import check_below, check_int, check_output, check_positive, check_real
from .schedules import karras_sigmas

SOLVERS = ("euler", "heun", "euler_ancestral", "dpmpp_2m", "ddim")
CHURN_SOLVERS = ("euler", "heun")  # EDM's: the only solvers that take S_churn, S_min and S_max
DEFAULT_ETA = 1.0  # euler_ancestral's, as k-diffusion's: the full ancestral (DDPM-like) noise
STATE_DTYPES = (torch.float32, torch.float64)


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
                                   t_down=scale(self.t_down))


SCHEDULE_DEFAULTS = dict(num_steps=18, sigma_min=0.002, sigma_max=80.0, rho=7.0)


def plan_steps(net=None, num_steps=18, sigma_min=0.002, sigma_max=80.0, rho=7.0, S_churn=0.0, S_min=0.0,
               S_max=float("inf"), S_noise=1.0, *, solver="heun", sigmas=None, eta=None) -> StepPlan:
    """Build the schedule and every per-step scalar of the sampler on the host (docs/formulas.md#edm-sampler).

    The schedule is EDM's (clamped to net.sigma_min/sigma_max) unless `sigmas` is given; either way its
    noise levels, and every t_hat, go through net.round_sigma when the net has one.
    """
    S_churn = check_real("S_churn", S_churn, minimum=0.0)
    S_min = check_real("S_min", S_min, minimum=0.0)
    S_max = check_real("S_max", S_max, minimum=0.0, allow_inf=True)
    S_noise = check_real("S_noise", S_noise, minimum=0.0)
    if S_min > S_max:
        raise ValueError(f"S_min: must not exceed S_max (churn applies to S_min <= t <= S_max), got S_min={S_min} and S_max={S_max}")
    if solver not in SOLVERS:
        raise ValueError(f"solver: expected one of {', '.join(map(repr, SOLVERS))}, got {solver!r}")
    eta = _check_eta(solver, eta)
    _check_no_churn(solver, S_churn=S_churn, S_min=S_min, S_max=S_max, S_noise=S_noise)
    round_sigma = getattr(net, "round_sigma", None)
    if sigmas is None:
        num_steps = check_int("num_steps", num_steps, minimum=1)
        require_memory("num_steps", str(num_steps), {torch.device("cpu"): num_steps * PLAN_BYTES_PER_STEP},
                       "the sampler's per-step plan", "use fewer steps")
        t = _karras_schedule(net, num_steps, sigma_min, sigma_max, rho)
    else:
        _check_no_schedule_arguments(num_steps=num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
        t = _check_sigmas("sigmas", sigmas)
        require_memory("sigmas", f"a schedule of {t.numel() - 1} steps",
                       {torch.device("cpu"): (t.numel() - 1) * PLAN_BYTES_PER_STEP}, "the sampler's per-step plan",
                       "use fewer steps")
    if round_sigma is not None:  # rounding may repeat a level (a zero-length step, as in EDM) but not reach 0 early
        t = _check_sigmas("net.round_sigma(sigmas)", torch.cat([_round(round_sigma, t[:-1]), t[-1:]]), strict=False)
    if solver == "euler_ancestral":
        return _ancestral_plan(t.tolist(), eta, S_noise)
    if solver == "dpmpp_2m":
        return _dpmpp_2m_plan(t.tolist())
    N = t.numel() - 1
    t_cur = t[:-1]
    gamma = tuple(min(S_churn / N, math.sqrt(2) - 1) if S_min <= float(t_i) <= S_max else 0.0 for t_i in t_cur)
    t_hat = t_cur + torch.tensor(gamma, dtype=torch.float64) * t_cur
    if round_sigma is not None:
        t_hat = _round(round_sigma, t_hat)
        if not bool((t_hat >= t_cur).all()):
            raise ValueError(f"net.round_sigma: must not lower a noise level, but it maps t_cur {t_cur.tolist()} "
                             f"with churn to t_hat {t_hat.tolist()}")
    noise_std = (t_hat**2 - t_cur**2).sqrt() * S_noise
    correct = tuple(solver == "heun" and i < N - 1 for i in range(N))  # the step to t_N is Euler, by index
    return StepPlan(t=tuple(t.tolist()), t_hat=tuple(t_hat.tolist()), gamma=gamma, noise_std=tuple(noise_std.tolist()), correct=correct)


def _ancestral_plan(t: list[float], eta: float, S_noise: float) -> StepPlan:
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

    The first and last steps are first order (c = 0, a DDIM step), and so is a step after a zero-length one (its
    D_{i-1} is D_i at the same point: no slope to extrapolate).
    """
    N = len(t) - 1
    h = [math.log(t[i] / t[i + 1]) for i in range(N - 1)]  # the last step, to t_N (usually 0), needs no h
    multistep = tuple(h[i] / (2 * h[i - 1]) if 0 < i < N - 1 and h[i - 1] > 0 else 0.0 for i in range(N))
    return StepPlan(t=tuple(t), t_hat=tuple(t[:-1]), gamma=(0.0,) * N, noise_std=(0.0,) * N, correct=(False,) * N,
                    multistep=multistep)


def _check_eta(solver: str, eta) -> float | None:
    """eta is euler_ancestral's (default 1): a real >= 0; any other solver refuses it rather than ignore it."""
    if solver == "euler_ancestral":
        return DEFAULT_ETA if eta is None else check_real("eta", eta, minimum=0.0)
    if eta is not None:
        hint = (" (DDIM's eta = 0); DDIM with eta > 0 is solver='euler_ancestral' with that eta, the same update in "
                "EDM form" if solver == "ddim" else "")
        raise ValueError(f"eta: only solver='euler_ancestral' takes eta (the amount of noise its steps add); "
                         f"solver={solver!r} adds none{hint}; got eta={eta!r}")
    return None


def _check_no_churn(solver: str, **given) -> None:
    """S_churn, S_min and S_max (and S_noise, but for euler_ancestral, which scales its noise by it) belong to EDM's
    churn: a non-default one with another solver would be ignored, so it is an error."""
    defaults = dict(S_churn=0.0, S_min=0.0, S_max=float("inf"), S_noise=1.0)
    if solver in CHURN_SOLVERS:
        return
    churn = ("S_churn", "S_min", "S_max") if solver == "euler_ancestral" else ("S_churn", "S_min", "S_max", "S_noise")
    changed = [name for name in churn if given[name] != defaults[name]]
    if not changed:
        return
    name = changed[0]
    why = {"euler_ancestral": "it adds its own noise after each step, set by eta and scaled by S_noise",
           "dpmpp_2m": "it is a deterministic multistep solver",
           "ddim": "it is deterministic DDIM; EDM's stochastic sampler with the same update is solver='euler'"}[solver]
    raise ValueError(f"{name}: solver={solver!r} takes no churn ({why}); {', '.join(churn)} set EDM's churn, for "
                     f"solver='euler' or 'heun'; got {name}={given[name]!r}")


def sample(net, latents, class_labels=None, randn_like=None, num_steps=18, sigma_min=0.002, sigma_max=80.0,
           rho=7.0, S_churn=0.0, S_min=0.0, S_max=float("inf"), S_noise=1.0, *, solver="heun", sigmas=None,
           seeds=None, dtype=None, backend="auto", callback=None, nonfinite="warn", reuse_buffers=False,
           cuda_graph=False, eta=None, guidance=None):
    """Sample with EDM's stochastic sampler (Algorithm 2); drop-in for NVlabs/edm's `edm_sampler`.

    net(x, sigma[, class_labels]) returns the denoised D(x; sigma) with sigma of shape [B]. latents are
    unit-variance noise [B, ...]; the result has their shape and dtype. The state is float32 (float64 for
    float64 latents or dtype=torch.float64, which reproduces edm_sampler). Noise comes from randn_like(x)
    when given (called once per step by every solver, as edm_sampler does), else from fastdiff's generator keyed by
    `seeds` (one int per sample; drawn from torch's default generator when omitted and the plan adds noise): step i
    draws at offset SAMPLER_OFFSET + i, and only if it adds noise.

    solver: "heun" (EDM's, NFE 2N - 1) or "euler" (NFE N), both with EDM's churn (S_churn, S_min, S_max, S_noise);
    "ddim": deterministic DDIM, x_next = D + (t_next / t) (x - D), which is exactly "euler" without churn;
    "euler_ancestral": an Euler step to sigma_down, then noise of std S_noise * sigma_up (k-diffusion's; `eta`,
    default 1, sets sigma_up; eta = 0 is "ddim", and eta is DDIM's eta); "dpmpp_2m": DPM-Solver++(2M), second order
    from one network evaluation per step (first order on the first and last step). All take one network evaluation
    per step but "heun". Only "euler" and "heun" take churn, and only "euler_ancestral" takes eta: elsewhere they
    are errors, not ignored. `backend` picks who
    runs the elementwise step math (fastdiff.ops). `nonfinite` says what to do if NaN or inf appear:
    "warn" (default), "raise" (FloatingPointError) or "ignore". `reuse_buffers=True` lets a fused backend write
    every step into fixed buffers (no per-step allocation), which overwrites the tensors the net was given:
    only for nets that keep no reference to their inputs.

    `cuda_graph=True` runs the whole loop, net included, as one CUDA graph (fastdiff.GraphedSampler, captured on
    first use and cached by shape, dtype, schedule structure, solver and net); it raises fastdiff.CaptureError when
    that cannot be done. "auto" does so on CUDA when it can and otherwise samples eagerly, logging the reason once.
    A captured net's Python code runs only while capturing: see GraphedSampler for what that means.

    `guidance=w`: classifier-free guidance, D_w = D(x; sigma, null) + w (D(x; sigma, y) - D(x; sigma, null)) from
    one batched network call of 2B per evaluation (fastdiff.ClassifierFreeGuidance; w = 1 is plain conditional
    sampling, w is diffusers' guidance_scale); needs class_labels.
    """
    if guidance is not None:
        net = _guided(net, guidance, class_labels)
    if cuda_graph is not False:
        from .graphed import sample_graphed

        result = sample_graphed(cuda_graph, net, latents, class_labels, randn_like, num_steps, sigma_min, sigma_max,
                                rho, S_churn, S_min, S_max, S_noise, solver=solver, sigmas=sigmas, seeds=seeds,
                                dtype=dtype, backend=backend, callback=callback, nonfinite=nonfinite, eta=eta)
        if result is not None:
            return result
    loop, seeds = build_loop(net, latents, class_labels, randn_like, num_steps, sigma_min, sigma_max, rho, S_churn,
                             S_min, S_max, S_noise, solver=solver, sigmas=sigmas, seeds=seeds, dtype=dtype,
                             backend=backend, callback=callback, nonfinite=nonfinite, reuse_buffers=reuse_buffers,
                             eta=eta)
    result = loop.run(latents, seeds, class_labels)
    loop.report_nonfinite(stacklevel=2)  # warnings name the caller of sample()
    return result


_GUIDED: OrderedDict = OrderedDict()  # (id(net), w) -> (net, its ClassifierFreeGuidance): one wrapper per pair, so
# sample(cuda_graph=...), whose graphs are cached by the net's identity, reuses its capture across calls
_GUIDED_LOCK = threading.Lock()


def _guided(net, guidance, class_labels):
    """net wrapped in classifier-free guidance with weight `guidance` (the same wrapper for the same net and w)."""
    from .guidance import ClassifierFreeGuidance  # imported here: guidance imports the sampler

    if class_labels is None:
        raise ValueError(f"guidance: classifier-free guidance (guidance={guidance!r}) needs class_labels, got None")
    key = (id(net), check_real("guidance", guidance))
    with _GUIDED_LOCK:  # sample() may be called from several threads
        entry = _GUIDED.get(key)
        if entry is None or entry[0] is not net:
            entry = _GUIDED[key] = (net, ClassifierFreeGuidance(net, guidance))
            while len(_GUIDED) > 8:
                _GUIDED.popitem(last=False)
        _GUIDED.move_to_end(key)
    return entry[1]


def build_loop(net, latents, class_labels=None, randn_like=None, num_steps=18, sigma_min=0.002, sigma_max=80.0,
               rho=7.0, S_churn=0.0, S_min=0.0, S_max=float("inf"), S_noise=1.0, *, solver="heun", sigmas=None,
               seeds=None, dtype=None, backend="auto", callback=None, nonfinite="warn", reuse_buffers=False, eta=None):
    """Check sample()'s arguments and build its loop: (SamplingLoop, seeds), seeds an int64 tensor [B] on latents'
    device (drawn from torch's default generator when omitted and the plan adds noise) or None."""
    state_dtype = _check_inputs(net, latents, class_labels, randn_like, seeds, dtype, callback, nonfinite)
    if not isinstance(reuse_buffers, bool):
        raise TypeError(f"reuse_buffers: expected True or False, got {reuse_buffers!r}")
    require_loop_memory(num_steps, sigmas, latents.shape[0], latents.device, state_dtype)
    plan = plan_steps(net, num_steps, sigma_min, sigma_max, rho, S_churn, S_min, S_max, S_noise, solver=solver,
                      sigmas=sigmas, eta=eta)
    backend = backends.resolve(backend, torch.empty(0, dtype=state_dtype, device=latents.device), (latents,))
    if randn_like is None:
        batch, device = latents.shape[0], latents.device
        if seeds is not None:
            seeds = seeds_tensor(seeds, batch, device)
        elif any(std > 0 for std in plan.noise_std):  # a deterministic run leaves torch's generator untouched
            seeds = _draw_seeds(batch, device)
    loop = SamplingLoop(net, plan, latents, state_dtype, randn_like=randn_like, callback=callback,
                        nonfinite=nonfinite, backend=backend, in_place=reuse_buffers)
    return loop, seeds


# What a sampling run allocates per step, at least, before its first step (counted from plan_steps and
# SamplingLoop): the plan's Python floats on the host (96 bytes per step for DPM-Solver++(2M), the smallest plan;
# Heun's is 136), and on the latents' device the tables t, t_hat, noise_std, the per-step minima and maxima (five
# state-dtype values), the step's noise offset (int64) and the noise levels the net sees, sigma_hat and sigma_next
# for every sample ([num_steps, B] each).
PLAN_BYTES_PER_STEP = 96
STEP_TABLES = 5


def loop_table_bytes(num_steps: int, batch: int, state_dtype: torch.dtype, step_tables: int = STEP_TABLES) -> int:
    """Bytes of a loop's per-step device tables: num_steps ((2 B + step_tables) itemsize + 8) for two [num_steps, B]
    tables of noise levels, step_tables [num_steps] tables in the state dtype and the int64 noise offsets."""
    itemsize = torch.empty((), dtype=state_dtype).element_size()
    return num_steps * ((2 * batch + step_tables) * itemsize + 8)


def require_loop_memory(num_steps, sigmas, batch: int, device, state_dtype: torch.dtype, *,
                        plan_bytes_per_step: int = PLAN_BYTES_PER_STEP, step_tables: int = STEP_TABLES,
                        name: str = "num_steps") -> None:
    """Refuse, before planning anything, a number of steps (num_steps, or the length of sigmas) whose plan and tables
    cannot fit (NotEnoughMemoryError, naming the argument, the bytes needed and the bytes available). `name` is what
    errors call num_steps."""
    if sigmas is None:
        steps = check_int(name, num_steps, minimum=1)
        given = str(steps)
    elif hasattr(sigmas, "__len__"):
        name, steps = "sigmas", max(len(sigmas) - 1, 0)
        given = f"a schedule of {steps} steps"
    else:
        return  # the plan says what is wrong with it
    needs = on_devices(steps * plan_bytes_per_step, device, loop_table_bytes(steps, batch, state_dtype, step_tables))
    require_memory(name, given, needs, f"the sampler's per-step plan and tables (the noise levels of the batch's {batch} "
                   f"samples at every step, in {str(state_dtype).replace('torch.', '')})",
                   "use fewer steps, or a smaller batch")


def run_plan(net, latents, plan: StepPlan, class_labels, randn_like, seeds, state_dtype, callback, nonfinite,
             backend="reference", reuse_buffers=False):
    """The sampling loop of `sample` for a checked plan: device work only, no host sync until the loop ends.

    seeds is an int64 tensor [B] on latents' device when randn_like is None; backend is a resolved name.
    """
    loop = SamplingLoop(net, plan, latents, state_dtype, randn_like=randn_like, callback=callback,
                        nonfinite=nonfinite, backend=backend, in_place=reuse_buffers)
    result = loop.run(latents, seeds, class_labels)
    loop.report_nonfinite(stacklevel=3)  # warnings name the caller of sample()
    return result


class SamplingLoop:
    """The loop of one plan for one batch shape: tables and buffers are made once, then run() as often as wanted.

    run() is the sampler: device work only. It never reads a device value on the host, and every per-step
    value it hands to an op is a view of a device table made here, never a Python number; the host decides
    only the plan's structure (which steps add noise, which take Heun's correction, which extrapolate the
    denoised). So the same code runs eagerly, under fastdiff.check_capture, and captured in a CUDA graph
    (fastdiff.GraphedSampler).

    With in_place (a fused backend, no callback), every step writes into fixed buffers (the state, and the Euler
    point for Heun or the extrapolated denoised for DPM-Solver++(2M)), and run() allocates nothing but what the net
    returns; otherwise each step makes new tensors. A multistep plan keeps the net's previous result until the next
    step, as Heun keeps D(x_hat) over its second evaluation.
    """

    def __init__(self, net, plan: StepPlan, latents_like: torch.Tensor, state_dtype: torch.dtype, *, randn_like=None,
                 callback=None, nonfinite="warn", backend="reference", in_place=False):
        self.net, self.plan, self.randn_like, self.callback = net, plan, randn_like, callback
        self.nonfinite, self.backend, self.state_dtype = nonfinite, backend, state_dtype
        self.shape, self.device = tuple(latents_like.shape), latents_like.device
        batch, N = self.shape[0], plan.num_steps
        # With reuse_buffers, a fused backend runs on fixed buffers: the state, into which churn, the Euler step and
        # Heun's step write in place (every op is elementwise), the Euler point and the extrapolated denoised.
        # Otherwise, and on the reference path or with a callback (whose tensors must not change after it has seen
        # them), every step makes new tensors.
        self.in_place = in_place and backend != "reference" and callback is None

        # Per-step values live in device tensors made once; the loop only indexes them.
        self.t, self.t_hat, self.noise_std = (self._device_table(v) for v in (plan.t, plan.t_hat, plan.noise_std))
        self.t_down = None if plan.t_down is None else self._device_table(plan.t_down)  # else the step goes to t[i+1]
        self.multistep = None if plan.multistep is None else self._device_table(plan.multistep)
        self.sigma_hat_batch = self.t_hat[:, None].expand(-1, batch).contiguous()  # [N, B], what the net sees
        self.sigma_next_batch = self.t[1:, None].expand(-1, batch).contiguous()
        self.offsets = SAMPLER_OFFSET + torch.arange(N, dtype=torch.int64, device=self.device)  # step i's noise stream
        # The state's extremes at the start and after each step, for the non-finite report (fastdiff._nonfinite).
        self.finite_check = NonfiniteCheck(nonfinite, N, state_dtype, self.device)
        self.state = torch.empty(self.shape, dtype=state_dtype, device=self.device)  # contiguous, whatever the latents' layout
        self.euler_point = torch.empty_like(self.state) if self.in_place and any(plan.correct) else None
        self.extrapolated = torch.empty_like(self.state) if self.in_place and _extrapolates(plan) else None
        self.on_step = None  # on_step(i), when set, is called on the host as step i begins, and with i = N after the
        #                     last step (fastdiff.check_capture)

    def _device_table(self, values) -> torch.Tensor:
        """float64 host values, rounded once to the state dtype, on the device."""
        return torch.tensor(values, dtype=torch.float64).to(device=self.device, dtype=self.state_dtype)

    def set_plan(self, plan: StepPlan) -> None:
        """Load another plan of the same structure into the tables (host-to-device copies, outside any loop)."""
        if structure(plan) != structure(self.plan):
            raise ValueError("plan: expected a schedule with the same structure as the one this loop was built for "
                             f"(steps, which steps add noise and where, which correct or extrapolate): "
                             f"{structure(self.plan)}, got {structure(plan)}")
        tables = [(self.t, plan.t), (self.t_hat, plan.t_hat), (self.noise_std, plan.noise_std),
                  (self.t_down, plan.t_down), (self.multistep, plan.multistep)]
        for table, values in tables:
            if table is not None:
                table.copy_(torch.tensor(values, dtype=torch.float64))
        self.sigma_hat_batch.copy_(self.t_hat[:, None].expand_as(self.sigma_hat_batch))
        self.sigma_next_batch.copy_(self.t[1:, None].expand_as(self.sigma_next_batch))
        self.plan = plan

    def run(self, latents: torch.Tensor, seeds=None, class_labels=None, *, out=None) -> torch.Tensor:
        """Sample from latents (and seeds [B] int64 on the device, when the plan adds noise and there is no
        randn_like); the result goes into `out` when given, else it is returned in latents' dtype."""
        plan, backend, in_place, on_step = self.plan, self.backend, self.in_place, self.on_step

        def denoise(x, sigma):
            return _call_net(self.net, x, sigma, class_labels)

        x_next = self.state
        torch.mul(latents, self.t[0], out=x_next)
        self.finite_check.record(-1, x_next)
        denoised_prev = None  # D_{i-1}, for a multistep plan

        # Main sampling loop.
        for i in range(plan.num_steps):
            if on_step is not None:
                on_step(i)
            offset, noise_std, t_hat, t_next, sigma_hat, sigma_next = self.step_values(i)
            x_cur = x_next

            # Increase noise temporarily (churn; an ancestral step adds its noise after the update instead).
            if plan.noise_after:
                x_hat = x_cur
            elif self.randn_like is not None:
                x_hat = x_cur + noise_std * _check_noise(self.randn_like(x_cur), x_cur)
            elif plan.noise_std[i] > 0:
                x_hat = ops.churn(x_cur, seeds, offset, noise_std, out=x_cur if in_place else None, backend=backend)
            else:
                x_hat = x_cur

            # Euler step (to sigma_down on an ancestral step), from D extrapolated with D_{i-1} on a multistep step.
            denoised = denoise(x_hat, sigma_hat)
            extrapolate = plan.multistep is not None and plan.multistep[i] != 0
            denoised_step = self._extrapolate(i, denoised, denoised_prev, x_hat) if extrapolate else denoised
            write_over_x_hat = in_place and not ops.overlaps_differently(denoised_step, x_hat) and not (
                plan.multistep is not None and _shares_memory(denoised, x_hat))  # a multistep plan reads D again
            euler_out = (self.euler_point if plan.correct[i] else x_hat) if write_over_x_hat else None
            t_down = t_next if self.t_down is None else self.t_down[i]
            x_next = ops.euler_step(x_hat, denoised_step, t_hat, t_down, out=euler_out, backend=backend)
            if self.callback is not None:
                self.callback({"x": x_hat, "i": i, "sigma": plan.t[i], "sigma_hat": plan.t_hat[i], "denoised": denoised})

            # Apply 2nd order correction.
            if plan.correct[i]:
                denoised_next = denoise(x_next, sigma_next)
                heun_out = x_hat if write_over_x_hat and not ops.overlaps_differently(denoised_next, x_hat) else None
                x_next = ops.heun_step(x_hat, denoised, denoised_next, t_hat, t_next, out=heun_out, backend=backend)

            # Add an ancestral step's noise, from sigma_down back up to t_next.
            if plan.noise_after:
                if self.randn_like is not None:
                    x_next = x_next + noise_std * _check_noise(self.randn_like(x_next), x_next)
                elif plan.noise_std[i] > 0:
                    x_next = ops.churn(x_next, seeds, offset, noise_std, out=x_next if in_place else None,
                                       backend=backend)
            denoised_prev = denoised

            self.finite_check.record(i, x_next)

        if on_step is not None:
            on_step(plan.num_steps)  # the loop has ended: what follows happens once per call
        if out is not None:
            return out.copy_(x_next)
        return x_next.to(latents.dtype)

    def _extrapolate(self, i: int, denoised, denoised_prev, x_hat) -> torch.Tensor:
        """D_i + c_i (D_i - D_{i-1}) in the state's dtype: into the fixed buffer when in place, else a new tensor."""
        out = self.extrapolated if self.in_place else torch.empty_like(x_hat)
        torch.sub(denoised, denoised_prev, out=out)
        return torch.addcmul(denoised, out, self.multistep[i], out=out)

    def step_values(self, i: int):
        """Step i's values, as views of the device tables: (noise offset, noise std, t_hat, t_next, the sigma [B]
        the net sees at t_hat, and at t_next)."""
        return (self.offsets[i], self.noise_std[i], self.t_hat[i], self.t[i + 1], self.sigma_hat_batch[i],
                self.sigma_next_batch[i])

    def report_nonfinite(self, stacklevel: int = 1) -> None:
        """After run(): warn or raise (per `nonfinite`) if the state held NaN or inf; one host sync.
        stacklevel is warnings.warn's, counted from the caller of this method."""
        t = self.plan.t
        where = steps_where(self.plan.num_steps, lambda i: f"sigma {t[i]:.6g} -> {t[i + 1]:.6g}")
        self.finite_check.report(where, "check the net's output at that noise level", stacklevel=stacklevel + 1)


def _extrapolates(plan: StepPlan) -> bool:
    """Whether some step of the plan extrapolates the denoised (DPM-Solver++(2M)'s second-order steps)."""
    return plan.multistep is not None and any(c != 0 for c in plan.multistep)


def _shares_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two tensors use the same storage (host metadata only)."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def structure(plan: StepPlan) -> tuple:
    """What a captured loop fixes about a plan: the number of steps, which add noise and which correct; then, for
    the other solvers' plans, where the noise goes, whether there are t_down and multistep tables and which steps
    extrapolate."""
    edm = plan.num_steps, tuple(std > 0 for std in plan.noise_std), plan.correct
    if not plan.noise_after and plan.t_down is None and plan.multistep is None:
        return edm
    extrapolates = None if plan.multistep is None else tuple(c != 0 for c in plan.multistep)
    return edm + (plan.noise_after, plan.t_down is not None, extrapolates)


def _check_inputs(net, latents, class_labels, randn_like, seeds, dtype, callback, nonfinite) -> torch.dtype:
    """Validate sample()'s arguments other than the schedule's; return the state dtype."""
    if not callable(net):
        raise TypeError(f"net: expected a callable denoiser net(x, sigma[, class_labels]), got {type(net).__name__}")
    if not isinstance(latents, torch.Tensor):
        raise TypeError(f"latents: expected a floating-point tensor of shape [B, ...], got {type(latents).__name__}")
    if not latents.is_floating_point():
        raise TypeError(f"latents: expected a floating-point tensor (unit-variance noise), got dtype {latents.dtype}")
    if latents.ndim < 1 or latents.shape[0] < 1:
        raise ValueError(f"latents: expected shape [B, ...] with B >= 1, got {tuple(latents.shape)}")
    if class_labels is not None:
        if not isinstance(class_labels, torch.Tensor) or class_labels.ndim < 1 or class_labels.shape[0] != latents.shape[0]:
            got = tuple(class_labels.shape) if isinstance(class_labels, torch.Tensor) else type(class_labels).__name__
            raise ValueError(f"class_labels: expected a tensor with one row per sample ({latents.shape[0]}), got {got}")
    if randn_like is not None and not callable(randn_like):
        raise TypeError(f"randn_like: expected a callable like torch.randn_like, got {type(randn_like).__name__}")
    if randn_like is not None and seeds is not None:
        raise ValueError("seeds: pass either randn_like or seeds, not both (seeds key fastdiff's own generator)")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback: expected a callable taking a dict, got {type(callback).__name__}")
    check_nonfinite(nonfinite)
    if dtype is None:
        return torch.float64 if latents.dtype == torch.float64 else torch.float32
    if dtype not in STATE_DTYPES:
        raise ValueError(f"dtype: expected torch.float32 or torch.float64 for the sampler state, got {dtype}")
    return dtype


def _karras_schedule(net, num_steps, sigma_min, sigma_max, rho) -> torch.Tensor:
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


def _check_no_schedule_arguments(**given) -> None:
    """With sigmas=, the Karras schedule's arguments are unused: a non-default one is a mistake, not a wish."""
    changed = {name: value for name, value in given.items() if value != SCHEDULE_DEFAULTS[name]}
    if changed:
        listed = ", ".join(f"{name}={value!r}" for name, value in changed.items())
        raise ValueError(f"sigmas: replaces the Karras schedule, so {listed} would be ignored; pass either sigmas or those")


def _round(round_sigma, t: torch.Tensor) -> torch.Tensor:
    """net.round_sigma applied to a float64 host tensor, returned as float64 on the host."""
    return torch.as_tensor(round_sigma(t)).to(device="cpu", dtype=torch.float64).reshape(t.shape)


def _check_sigmas(name: str, sigmas, strict: bool = True) -> torch.Tensor:
    """A schedule: 1-D, >= 2 values, finite, decreasing (strictly unless strict=False), positive but for a last 0;
    returned as float64 on the host."""
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
    if not all(a > b or (a == b and not strict) for a, b in zip(values, values[1:])):
        raise ValueError(f"{name}: expected a {'strictly ' if strict else ''}decreasing schedule, got {values}")
    return t


def _draw_seeds(batch: int, device) -> torch.Tensor:
    """Per-sample seeds from torch's default generator, so torch.manual_seed makes runs repeatable."""
    return torch.randint(0, 2**62, (batch,), dtype=torch.int64).to(device)


def _call_net(net, x, sigma, class_labels) -> torch.Tensor:
    """D(x; sigma) from the user's net, checked (the step ops read it in its own dtype)."""
    denoised = net(x, sigma) if class_labels is None else net(x, sigma, class_labels)
    return check_output("net", denoised, x, "net(x, sigma)")


def _check_noise(eps, x: torch.Tensor) -> torch.Tensor:
    """randn_like's output must be one value per element of x: broadcasting would give every sample the same noise."""
    return check_output("randn_like", eps, x, "randn_like(x)")
