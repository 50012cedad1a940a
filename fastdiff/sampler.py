"""The EDM sampler (Karras et al. 2022, Algorithm 2; Algorithm 1 when S_churn = 0), a drop-in for edm_sampler.

Every per-step scalar (t_hat, gamma, the noise scale, whether to correct) is computed on the host from the
schedule before the loop, in float64: the loop itself never branches on a tensor value and never syncs.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from . import backends, ops
from .rng import SAMPLER_OFFSET, seeds_tensor
from ._validate import check_below, check_int, check_output, check_positive, check_real
from .schedules import karras_sigmas

SOLVERS = ("euler", "heun")
STATE_DTYPES = (torch.float32, torch.float64)
NONFINITE = ("warn", "raise", "ignore")


@dataclass(frozen=True)
class StepPlan:
    """The per-step scalars of one sampling run, host floats (float64): step i goes from t[i] via t_hat[i] to t[i+1]."""

    t: tuple[float, ...]  # N+1 noise levels, t[N] usually 0
    t_hat: tuple[float, ...]  # N: round_sigma(t_i + gamma_i t_i)
    gamma: tuple[float, ...]  # N: churn factor of each step
    noise_std: tuple[float, ...]  # N: sqrt(t_hat^2 - t^2) * S_noise, the std of the noise added at step i
    correct: tuple[bool, ...]  # N: whether step i takes Heun's second-order correction

    @property
    def num_steps(self) -> int:
        return len(self.gamma)

    @property
    def nfe(self) -> int:
        """Network evaluations per sampling call."""
        return self.num_steps + sum(self.correct)


SCHEDULE_DEFAULTS = dict(num_steps=18, sigma_min=0.002, sigma_max=80.0, rho=7.0)


def plan_steps(net=None, num_steps=18, sigma_min=0.002, sigma_max=80.0, rho=7.0, S_churn=0.0, S_min=0.0,
               S_max=float("inf"), S_noise=1.0, *, solver="heun", sigmas=None) -> StepPlan:
    """Build the schedule and every per-step scalar of the sampler on the host (FORMULAS.md section 4).

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
    round_sigma = getattr(net, "round_sigma", None)
    if sigmas is None:
        t = _karras_schedule(net, check_int("num_steps", num_steps, minimum=1), sigma_min, sigma_max, rho)
    else:
        _check_no_schedule_arguments(num_steps=num_steps, sigma_min=sigma_min, sigma_max=sigma_max, rho=rho)
        t = _check_sigmas("sigmas", sigmas)
    if round_sigma is not None:  # rounding may repeat a level (a zero-length step, as in EDM) but not reach 0 early
        t = _check_sigmas("net.round_sigma(sigmas)", torch.cat([_round(round_sigma, t[:-1]), t[-1:]]), strict=False)
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


def sample(net, latents, class_labels=None, randn_like=None, num_steps=18, sigma_min=0.002, sigma_max=80.0,
           rho=7.0, S_churn=0.0, S_min=0.0, S_max=float("inf"), S_noise=1.0, *, solver="heun", sigmas=None,
           seeds=None, dtype=None, backend="auto", callback=None, nonfinite="warn", reuse_buffers=False,
           cuda_graph=False):
    """Sample with EDM's stochastic sampler (Algorithm 2); drop-in for NVlabs/edm's `edm_sampler`.

    net(x, sigma[, class_labels]) returns the denoised D(x; sigma) with sigma of shape [B]. latents are
    unit-variance noise [B, ...]; the result has their shape and dtype. The state is float32 (float64 for
    float64 latents or dtype=torch.float64, which reproduces edm_sampler). Noise comes from randn_like(x)
    when given (called once per step, as edm_sampler does), else from fastdiff's generator keyed by
    `seeds` (one int per sample; drawn from torch's default generator when omitted). `backend` picks who
    runs the elementwise step math (fastdiff.ops). `nonfinite` says what to do if NaN or inf appear:
    "warn" (default), "raise" (FloatingPointError) or "ignore". `reuse_buffers=True` lets a fused backend write
    every step into two fixed buffers (no per-step allocation), which overwrites the tensors the net was given:
    only for nets that keep no reference to their inputs.

    `cuda_graph=True` runs the whole loop, net included, as one CUDA graph (fastdiff.GraphedSampler, captured on
    first use and cached by shape, dtype, schedule structure, solver and net); it raises fastdiff.CaptureError when
    that cannot be done. "auto" does so on CUDA when it can and otherwise samples eagerly, logging the reason once.
    A captured net's Python code runs only while capturing: see GraphedSampler for what that means.
    """
    if cuda_graph is not False:
        from .graphed import sample_graphed

        result = sample_graphed(cuda_graph, net, latents, class_labels, randn_like, num_steps, sigma_min, sigma_max,
                                rho, S_churn, S_min, S_max, S_noise, solver=solver, sigmas=sigmas, seeds=seeds,
                                dtype=dtype, backend=backend, callback=callback, nonfinite=nonfinite)
        if result is not None:
            return result
    loop, seeds = build_loop(net, latents, class_labels, randn_like, num_steps, sigma_min, sigma_max, rho, S_churn,
                             S_min, S_max, S_noise, solver=solver, sigmas=sigmas, seeds=seeds, dtype=dtype,
                             backend=backend, callback=callback, nonfinite=nonfinite, reuse_buffers=reuse_buffers)
    result = loop.run(latents, seeds, class_labels)
    loop.report_nonfinite(stacklevel=2)  # warnings name the caller of sample()
    return result


def build_loop(net, latents, class_labels=None, randn_like=None, num_steps=18, sigma_min=0.002, sigma_max=80.0,
               rho=7.0, S_churn=0.0, S_min=0.0, S_max=float("inf"), S_noise=1.0, *, solver="heun", sigmas=None,
               seeds=None, dtype=None, backend="auto", callback=None, nonfinite="warn", reuse_buffers=False):
    """Check sample()'s arguments and build its loop: (SamplingLoop, seeds), seeds an int64 tensor [B] on latents'
    device (drawn from torch's default generator when omitted and the plan adds noise) or None."""
    state_dtype = _check_inputs(net, latents, class_labels, randn_like, seeds, dtype, callback, nonfinite)
    if not isinstance(reuse_buffers, bool):
        raise TypeError(f"reuse_buffers: expected True or False, got {reuse_buffers!r}")
    plan = plan_steps(net, num_steps, sigma_min, sigma_max, rho, S_churn, S_min, S_max, S_noise, solver=solver, sigmas=sigmas)
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
    only the plan's structure (which steps add noise, which take Heun's correction). So the same code runs
    eagerly, under fastdiff.check_capture, and captured in a CUDA graph (fastdiff.GraphedSampler).

    With in_place (a fused backend, no callback), every step writes into two fixed buffers, the state and the
    Euler point, and run() allocates nothing but what the net returns; otherwise each step makes new tensors.
    """

    def __init__(self, net, plan: StepPlan, latents_like: torch.Tensor, state_dtype: torch.dtype, *, randn_like=None,
                 callback=None, nonfinite="warn", backend="reference", in_place=False):
        self.net, self.plan, self.randn_like, self.callback = net, plan, randn_like, callback
        self.nonfinite, self.backend, self.state_dtype = nonfinite, backend, state_dtype
        self.shape, self.device = tuple(latents_like.shape), latents_like.device
        batch, N = self.shape[0], plan.num_steps
        # With reuse_buffers, a fused backend runs on two buffers: the state, into which churn and Heun's step write in
        # place (every op is elementwise), and the Euler point. Otherwise, and on the reference path or with a callback
        # (whose tensors must not change after it has seen them), every step makes new tensors.
        self.in_place = in_place and backend != "reference" and callback is None

        # Per-step values live in device tensors made once; the loop only indexes them.
        self.t, self.t_hat, self.noise_std = (self._device_table(v) for v in (plan.t, plan.t_hat, plan.noise_std))
        self.sigma_hat_batch = self.t_hat[:, None].expand(-1, batch).contiguous()  # [N, B], what the net sees
        self.sigma_next_batch = self.t[1:, None].expand(-1, batch).contiguous()
        self.offsets = SAMPLER_OFFSET + torch.arange(N, dtype=torch.int64, device=self.device)  # step i's noise stream
        # Each step's smallest and largest state value: NaN or inf in the state shows in one of them (NaN propagates).
        self.minima = torch.zeros(N, dtype=state_dtype, device=self.device)
        self.maxima = torch.zeros(N, dtype=state_dtype, device=self.device)
        self.state = torch.empty(self.shape, dtype=state_dtype, device=self.device)  # contiguous, whatever the latents' layout
        self.euler_point = torch.empty_like(self.state) if self.in_place and any(plan.correct) else None
        self.on_step = None  # on_step(i), when set, is called on the host as step i begins, and with i = N after the
        #                     last step (fastdiff.check_capture)

    def _device_table(self, values) -> torch.Tensor:
        """float64 host values, rounded once to the state dtype, on the device."""
        return torch.tensor(values, dtype=torch.float64).to(device=self.device, dtype=self.state_dtype)

    def set_plan(self, plan: StepPlan) -> None:
        """Load another plan of the same structure into the tables (host-to-device copies, outside any loop)."""
        if structure(plan) != structure(self.plan):
            raise ValueError("plan: expected a schedule with the same structure as the one this loop was built for "
                             f"(steps, which steps add noise, which correct): {structure(self.plan)}, got {structure(plan)}")
        for table, values in ((self.t, plan.t), (self.t_hat, plan.t_hat), (self.noise_std, plan.noise_std)):
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

        # Main sampling loop.
        for i in range(plan.num_steps):
            if on_step is not None:
                on_step(i)
            offset, noise_std, t_hat, t_next, sigma_hat, sigma_next = self.step_values(i)
            x_cur = x_next

            # Increase noise temporarily.
            if self.randn_like is not None:
                x_hat = x_cur + noise_std * _check_noise(self.randn_like(x_cur), x_cur)
            elif plan.noise_std[i] > 0:
                x_hat = ops.churn(x_cur, seeds, offset, noise_std, out=x_cur if in_place else None, backend=backend)
            else:
                x_hat = x_cur

            # Euler step.
            denoised = denoise(x_hat, sigma_hat)
            write_over_x_hat = in_place and not ops.overlaps_differently(denoised, x_hat)
            euler_out = (self.euler_point if plan.correct[i] else x_hat) if write_over_x_hat else None
            x_next = ops.euler_step(x_hat, denoised, t_hat, t_next, out=euler_out, backend=backend)
            if self.callback is not None:
                self.callback({"x": x_hat, "i": i, "sigma": plan.t[i], "sigma_hat": plan.t_hat[i], "denoised": denoised})

            # Apply 2nd order correction.
            if plan.correct[i]:
                denoised_next = denoise(x_next, sigma_next)
                heun_out = x_hat if write_over_x_hat and not ops.overlaps_differently(denoised_next, x_hat) else None
                x_next = ops.heun_step(x_hat, denoised, denoised_next, t_hat, t_next, out=heun_out, backend=backend)

            if self.nonfinite != "ignore" and x_next.numel() > 0:  # (aminmax refuses empty tensors)
                torch.aminmax(x_next.detach(), out=(self.minima[i], self.maxima[i]))

        if on_step is not None:
            on_step(plan.num_steps)  # the loop has ended: what follows happens once per call
        if out is not None:
            return out.copy_(x_next)
        return x_next.to(latents.dtype)

    def step_values(self, i: int):
        """Step i's values, as views of the device tables: (noise offset, noise std, t_hat, t_next, the sigma [B]
        the net sees at t_hat, and at t_next)."""
        return (self.offsets[i], self.noise_std[i], self.t_hat[i], self.t[i + 1], self.sigma_hat_batch[i],
                self.sigma_next_batch[i])

    def report_nonfinite(self, stacklevel: int = 1) -> None:
        """After run(): warn or raise (per `nonfinite`) if the state held NaN or inf; one host sync.
        stacklevel is warnings.warn's, counted from the caller of this method."""
        if self.nonfinite != "ignore":
            finite = self.minima.isfinite() & self.maxima.isfinite()
            _report_nonfinite(finite, self.plan, self.nonfinite, stacklevel + 2)


def structure(plan: StepPlan) -> tuple:
    """What a captured loop fixes about a plan: the number of steps, which add noise and which correct."""
    return plan.num_steps, tuple(std > 0 for std in plan.noise_std), plan.correct


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
    if nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite: expected one of {', '.join(map(repr, NONFINITE))}, got {nonfinite!r}")
    if dtype is None:
        return torch.float64 if latents.dtype == torch.float64 else torch.float32
    if dtype not in STATE_DTYPES:
        raise ValueError(f"dtype: expected torch.float32 or torch.float64 for the sampler state, got {dtype}")
    return dtype


def _karras_schedule(net, num_steps, sigma_min, sigma_max, rho) -> torch.Tensor:
    """karras_sigmas with sigma_min/sigma_max first clamped to the net's supported range (sigma_max may be inf
    when the net bounds it)."""
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
            f"sigma_min: after clamping to the net's range [{net_min}, {net_max}] the schedule is empty "
            f"(sigma_min={sigma_min}, sigma_max={sigma_max}); choose sigma_min/sigma_max inside that range")
    return karras_sigmas(num_steps, sigma_min, sigma_max, rho)


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


def _report_nonfinite(finite: torch.Tensor, plan: StepPlan, mode: str, stacklevel: int) -> None:
    """One host sync after the loop: name the first step whose result held NaN or inf."""
    bad = (~finite).nonzero()
    if bad.numel() == 0:
        return
    i = int(bad[0])
    message = (f"non-finite values (NaN or inf) in the sampler state first appeared at step {i} of {plan.num_steps} "
               f"(sigma {plan.t[i]:.6g} -> {plan.t[i + 1]:.6g}); check the net's output at that noise level")
    if mode == "raise":
        raise FloatingPointError(message)
    warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)
