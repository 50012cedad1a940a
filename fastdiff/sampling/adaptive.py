"""solver="dpm_adaptive": DPM-Solver-12 and DPM-Solver-23 with adaptive step size (Lu et al. 2022, DPM-Solver,
Section 3.3), the algorithm of k-diffusion's sample_dpm_adaptive, written in EDM's variables with every update of the
state one fused `combine` op (docs/formulas.md#dpm-solver-adaptive).

Every other solver of fastdiff.sample runs a schedule fixed before its loop starts. This one chooses each step from
the error of the one before, so it runs its own loop, here, and that loop waits for the device once per attempted
step: the error norm is read back to the host, where the step size controller decides whether to accept the step
and how long the next one is. So it cannot be captured in a CUDA graph (sample(cuda_graph=True) refuses it), and
each attempt's coefficients are computed on the host and copied to the device as one small tensor, not read from
tables made before the loop.

One attempt, from lambda = s to s + h in lambda = -ln sigma (DPM-Solver's log-SNR for alpha = 1):
    D0 = D(x; sigma_s); a stage u1 = combine(x, D0) and D1 = D(u1; sigma_1) (order 3: a second stage u2, D2);
    x_low, x_high = the lower- and the higher-order solution at s + h, each one combine of x, D0, D1 (, D2);
    error = ||(x_low - x_high) / max(atol, rtol max(|x_low|, |x_prev|))||_2 / sqrt(numel)   (over the whole batch)
and the PID controller turns the error into "accept" (x = x_high, plus noise when eta > 0) or "reject", and the
next h. Each attempt costs `order` network evaluations, accepted or not.

What a run did is reported two ways: `callback` is called after every attempt, accepted or rejected, with
k-diffusion's keys; sample_dpm_adaptive returns (x, info) with info = {"steps", "nfe", "n_accept", "n_reject"},
k-diffusion's return_info=True. fastdiff.sample(solver="dpm_adaptive") returns x alone.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields

import torch

from .._nonfinite import check_nonfinite
from .._validate import check_output, check_positive, check_real
from ..ops.bound import bound
from ..rng import ADAPTIVE_OFFSET, MAX_STEPS, draw_seeds, seeds_tensor
from .extra import check_extra_args
from .loop import check_call, check_noise
from .plan import SampleOptions, clamp_to_net
from .programs import ancestral_step

END_TOLERANCE = 1e-5  # the loop stops once lambda is within this of lambda_end (k-diffusion's `t_end - 1e-5`)
ERROR_EPS = 1e-8  # the controller reads 1 / (error + ERROR_EPS): an exact step (error 0) gives a finite factor
NOISY_ORDER = 1.5  # the order the controller assumes with eta > 0 (k-diffusion's): the noise lowers the accuracy


@dataclass(frozen=True)
class AdaptiveSettings:
    """The error control of solver="dpm_adaptive", k-diffusion's names and defaults: fastdiff.sample's
    `adaptive=dict(...)`, sample_dpm_adaptive's keywords. Make it with check(), which validates every value.

    rtol, atol      the tolerances: a step's error is measured elementwise against max(atol, rtol |x|)
    h_init          the first attempt's length in lambda = -ln sigma
    pcoeff, icoeff, dcoeff  the PID controller's gains; the default (I only) is the classic h *= error^(-1/order)
    accept_safety   a step is accepted when the controller's factor for h is at least this (0.81 = 0.9^2)
    """

    rtol: float = 0.05
    atol: float = 0.0078
    h_init: float = 0.05
    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    accept_safety: float = 0.81

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def check(cls, values: Mapping | None = None, argument: str | None = "adaptive") -> "AdaptiveSettings":
        """The settings from a mapping of some of their names (None: every default), each value checked. Errors name
        `argument`'s entry (adaptive['rtol']), or the name alone when argument is None (keyword arguments)."""
        if values is None:
            return cls()
        names = cls.names()
        if not isinstance(values, Mapping):
            raise TypeError(f"{argument}: expected a dict of solver='dpm_adaptive''s step size settings (some of "
                            f"{', '.join(names)}), got {type(values).__name__}")
        unknown = [key for key in values if key not in names]
        if unknown:
            raise TypeError(f"{argument}: {unknown[0]!r} is not a setting of solver='dpm_adaptive' (got "
                            f"{unknown[0]!r}: {values[unknown[0]]!r}); the settings are {', '.join(names)}")
        label = (lambda name: name) if argument is None else (lambda name: f"{argument}[{name!r}]")  # noqa: E731
        checked = {}
        for name, value in values.items():
            if name == "atol":  # the tolerance where x is 0: max(atol, rtol |x|) divides the error
                checked[name] = check_positive(label(name), value)
            elif name == "h_init":
                checked[name] = check_positive(label(name), value)
            elif name == "rtol":
                checked[name] = check_real(label(name), value, minimum=0.0)
            else:
                checked[name] = check_real(label(name), value)
        settings = cls(**checked)
        if not settings.pcoeff + settings.icoeff + settings.dcoeff > 0:
            given = ", ".join(f"{label(n)}={getattr(settings, n)!r}" for n in ("pcoeff", "icoeff", "dcoeff"))
            raise ValueError(f"{label('icoeff')}: pcoeff + icoeff + dcoeff must be > 0 (the exponent of the current "
                             f"error: without it a large error would not shorten the step, and a rejected step would "
                             f"be tried again as it was, forever); got {given}")
        if not 0 < settings.accept_safety <= 1:
            raise ValueError(f"{label('accept_safety')}: expected a number in (0, 1] (a step is accepted when the "
                             f"controller's factor for h is at least this; above 1 steps within the tolerance would "
                             f"be rejected), got {settings.accept_safety!r}")
        return settings


class StepSizeController:
    """The PID step size controller (Söderlind 2003's digital filter, as k-diffusion's PIDStepSizeController):
    with e_n = 1 / (error_n + ERROR_EPS) for the current attempt and e_(n-1), e_(n-2) for the last two accepted steps,

        factor = limiter(e_n^b1 e_(n-1)^b2 e_(n-2)^b3),   limiter(v) = 1 + atan(v - 1)   (Söderlind and Wang 2006)
        b1 = (p + i + d) / k,  b2 = -(p + 2 d) / k,  b3 = d / k    (k: the order the error scales with)

    the step is accepted when factor >= accept_safety, and h *= factor either way. The limiter keeps each change of
    h within (1 - pi/4, 1 + pi/2)."""

    def __init__(self, h: float, settings: AdaptiveSettings, order: float):
        p, i, d = settings.pcoeff, settings.icoeff, settings.dcoeff
        self.h = h
        self.b1, self.b2, self.b3 = (p + i + d) / order, -(p + 2 * d) / order, d / order
        self.accept_safety = settings.accept_safety
        self.inverse_errors: list[float] | None = None  # [e_n, e_(n-1), e_(n-2)]; all e_0 on the first attempt

    def propose(self, error: float) -> bool:
        """Whether the attempt with this error norm is accepted; sets self.h to the next attempt's length."""
        inverse = 1 / (error + ERROR_EPS)
        if self.inverse_errors is None:
            self.inverse_errors = [inverse] * 3
        self.inverse_errors[0] = inverse
        e0, e1, e2 = self.inverse_errors
        try:
            product = e0 ** self.b1 * e1 ** self.b2 * e2 ** self.b3
        except OverflowError:  # huge gains: the same product in logarithms, saturated (the limiter is flat there)
            product = math.exp(min(self.b1 * math.log(e0) + self.b2 * math.log(e1) + self.b3 * math.log(e2), 700.0))
        factor = 1 + math.atan(product - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.inverse_errors = [e0, e0, e1]
        self.h *= factor
        return accept


def _phi(z: float) -> float:
    """(e^z - 1) / z - 1 = z/2 + z^2/6 + ...: the weight of the first divided difference in DPM-Solver's steps."""
    return math.expm1(z) / z - 1


def _to(rho: float, h: float) -> tuple[float, float]:
    """(e^(-rho h), 1 - e^(-rho h)): the weights of x and D0 in DPM-Solver-1 (DDIM) from lambda s to s + rho h."""
    return math.exp(-rho * h), -math.expm1(-rho * h)


@dataclass(frozen=True)
class Attempt:
    """The host side of one attempt of length h: the stages' positions (fractions r of h, each evaluated at
    lambda = s + r h) and the combine coefficients (a, w0, w1, w2, w3, n) over (x; D0, D1, D2), for the stages
    (rows[0], rows[1] for order 3), x_low and x_high. docs/formulas.md#dpm-solver-adaptive derives them."""

    fractions: tuple[float, ...]
    stages: tuple[tuple[float, ...], ...]
    low: tuple[float, ...]
    high: tuple[float, ...]


def attempt(order: int, h: float) -> Attempt:
    """DPM-Solver-12 (order 2: x_low DPM-Solver-1, x_high DPM-Solver-2 with r1 = 1/2) or DPM-Solver-23 (order 3:
    x_low DPM-Solver-2 with r1 = 1/3, x_high DPM-Solver-3 with r1 = 1/3, r2 = 2/3; they share the stage at r1)."""
    a, b = _to(1.0, h)  # x_next's DPM-Solver-1 part: a x + b D0
    if order == 2:
        r1 = 0.5
        c = b * math.exp(r1 * h) / (2 * r1)  # weight of D1 - D0
        return Attempt((r1,), ((*_to(r1, h), 0.0, 0.0, 0.0, 0.0),),
                       (a, b, 0.0, 0.0, 0.0, 0.0), (a, b - c, c, 0.0, 0.0, 0.0))
    r1, r2 = 1 / 3, 2 / 3
    c = b * math.exp(r1 * h) / (2 * r1)
    k = math.exp(-(r2 - r1) * h) * (r2 / r1) * _phi(r2 * h)  # u2's weight of D1 - D0
    a2, b2 = _to(r2, h)
    m = math.exp(-(1 - r2) * h) * _phi(h) / r2  # x_high's weight of D2 - D0 - k (D1 - D0)
    return Attempt((r1, r2), ((*_to(r1, h), 0.0, 0.0, 0.0, 0.0), (a2, b2 - k, k, 0.0, 0.0, 0.0)),
                   (a, b - c, c, 0.0, 0.0, 0.0), (a, b - m * (1 - k), -m * k, m, 0.0, 0.0))


def sample_dpm_adaptive(net, latents, class_labels=None, randn_like=None, *, sigma_min=0.002, sigma_max=80.0,
                        order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0,
                        accept_safety=0.81, eta=0.0, S_noise=1.0, seeds=None, noise_sampler=None, callback=None,
                        dtype=None, backend="auto", nonfinite="warn", extra_args=None, start_scale=None):
    """DPM-Solver-12 (order=2) or DPM-Solver-23 (order=3) with adaptive step size from sigma_max down to sigma_min
    (clamped to the net's range), k-diffusion's sample_dpm_adaptive: returns (x, info), info = {"steps": attempts,
    "nfe": network evaluations, "n_accept": accepted steps, "n_reject": rejected ones}.

    The state starts at latents * sigma_max (latents * start_scale when given), as fastdiff.sample's. rtol, atol,
    h_init, pcoeff, icoeff, dcoeff and accept_safety set the error control (AdaptiveSettings); eta > 0 adds noise
    of std S_noise sigma_up after each accepted step (the ancestral variant), from fastdiff's generator keyed by
    `seeds` (the k-th accepted step at offset ADAPTIVE_OFFSET + k), or randn_like(x), or noise_sampler(sigma,
    sigma_next) as k-diffusion's. The step size is one for the whole batch (the error norm is the batch's), so a
    sample's result depends on the batch it is sampled in, as in k-diffusion. callback(dict) is called after every
    attempt, accepted or not, with k-diffusion's keys: x (the state after it), i (the attempt's index), sigma and
    sigma_hat (the level reached), t and t_up (-ln of it), denoised (D at the attempt's start), error, h (the
    next attempt's length), steps, nfe, n_accept, n_reject, and fastdiff's `accepted`; numbers are Python floats.
    One host sync per attempt (the error norm). The other arguments are fastdiff.sample's.
    """
    options = SampleOptions(sigma_min=sigma_min, sigma_max=sigma_max, S_noise=S_noise, solver="dpm_adaptive",
                            eta=eta, dtype=dtype, backend=backend, nonfinite=nonfinite, start_scale=start_scale,
                            order=order)
    settings = AdaptiveSettings.check(dict(rtol=rtol, atol=atol, h_init=h_init, pcoeff=pcoeff, icoeff=icoeff,
                                           dcoeff=dcoeff, accept_safety=accept_safety), argument=None)
    with torch.no_grad():  # sampling never records autograd (docs/sampling.md#no-autograd)
        return run_adaptive(net, latents, class_labels, randn_like, seeds, callback, options, settings,
                            noise_sampler, check_extra_args(extra_args))


def run_adaptive(net, latents, class_labels, randn_like, seeds, callback, options: SampleOptions,
                 settings: AdaptiveSettings, noise_sampler=None, extra_args=None, stacklevel: int = 2):
    """The loop of solver="dpm_adaptive" for checked options and settings, to be called under torch.no_grad():
    (x in latents' dtype, info). Warnings name the frame `stacklevel` above this one (2: its caller's caller)."""
    from ..ops import backends

    check_call(net, latents, class_labels, randn_like, seeds, callback)
    if noise_sampler is not None:
        if isinstance(noise_sampler, str):
            raise ValueError(f"noise_sampler: {noise_sampler!r} is not available with solver='dpm_adaptive' (its levels "
                             f"are not known before it runs); pass a callable, e.g. fastdiff.BrownianNoise(seeds, "
                             f"latents.shape, sigma_min, sigma_max, device=latents.device)")
        if not callable(noise_sampler):
            raise TypeError(f"noise_sampler: expected a callable noise_sampler(sigma, sigma_next) -> a tensor like x "
                            f"(k-diffusion's), got {type(noise_sampler).__name__}")
        if randn_like is not None or seeds is not None:
            given = "randn_like" if randn_like is not None else "seeds"
            raise ValueError(f"noise_sampler: it gives every noise draw, so {given} would be unused; pass one of "
                             f"noise_sampler, randn_like or seeds")
        if not (options.eta > 0 and options.S_noise > 0):
            raise ValueError(f"noise_sampler: solver='dpm_adaptive' draws no noise with eta={options.eta} and "
                             f"S_noise={options.S_noise} (its default eta is 0), so the noise_sampler would be unused; "
                             f"pass eta > 0, or leave noise_sampler out")
    sigma_min, sigma_max = clamp_to_net(net, options.sigma_min, options.sigma_max)
    order, eta, S_noise = options.order or 3, options.eta, options.S_noise
    state_dtype, device, shape = options.state_dtype(latents), latents.device, latents.shape
    backend = backends.resolve(options.backend, torch.empty(0, dtype=state_dtype, device=device), (latents,))
    combine = bound(backend).combine
    kwargs = extra_args or {}
    draws = eta > 0 and S_noise > 0
    if randn_like is None and noise_sampler is None and draws:
        seeds = seeds_tensor(seeds, shape[0], device) if seeds is not None else draw_seeds(shape[0], device)
    elif seeds is not None:
        seeds_tensor(seeds, shape[0], device)  # checked, though no noise is drawn from them
        seeds = None

    def denoise(x, sigma: float):
        sigmas = torch.full((shape[0],), sigma, dtype=state_dtype, device=device)
        denoised = net(x, sigmas, **kwargs) if class_labels is None else net(x, sigmas, class_labels, **kwargs)
        if type(denoised) is not torch.Tensor or denoised.shape != shape or denoised.device != device or \
                not denoised.is_floating_point():
            check_output("net", denoised, x, "net(x, sigma)")
        return denoised.to(state_dtype).contiguous()

    start = sigma_max if options.start_scale is None else options.start_scale
    x = (latents.to(state_dtype) * start).contiguous()
    x_prev = x
    lam, lam_end = -math.log(sigma_max), -math.log(sigma_min)
    controller = StepSizeController(settings.h_init, settings, NOISY_ORDER if eta > 0 else order)
    norm_scale = max(x.numel(), 1) ** 0.5
    info = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}
    last = None  # (sigma, sigma_next) of the last accepted step that added noise
    while lam < lam_end - END_TOLERANCE:
        lam_next = min(lam_end, lam + controller.h)
        if not lam_next > lam:
            raise RuntimeError(f"solver='dpm_adaptive': the step size fell to {controller.h:.3g}, too small to "
                               f"move from sigma {math.exp(-lam):.6g} ({info['n_reject']} of {info['steps']} "
                               f"attempts rejected): the error estimate does not shrink with the step, as for a net "
                               f"whose output is random (dropout left on: call net.eval()) or not continuous")
        sigma, sigma_next = math.exp(-lam), math.exp(-lam_next)
        if eta > 0:  # the step goes to sigma_down, then noise of std sigma_up brings it to sigma_next
            down, _ = ancestral_step(sigma, sigma_next, eta)
            lam_down = lam_end if down == 0 else min(lam_end, -math.log(down))
            noise_std = S_noise * math.sqrt(sigma_next ** 2 - math.exp(-lam_down) ** 2)
        else:
            lam_down, noise_std = lam_next, 0.0
        h = lam_down - lam
        plan = attempt(order, h)
        rows = [*plan.stages, plan.low, plan.high, (1.0, 0.0, 0.0, 0.0, 0.0, noise_std)]
        table = torch.tensor(rows, dtype=torch.float64).to(device=device, dtype=state_dtype).unbind(0)

        denoised = [denoise(x, sigma)]
        for fraction, row in zip(plan.fractions, table):
            stage = combine(x, *denoised, *(None,) * (4 - len(denoised)), row, None, None, None)
            denoised.append(denoise(stage, math.exp(-(lam + fraction * h))))
        history = (*denoised, *(None,) * (4 - len(denoised)))
        low_row, high_row, noise_row = table[-3], table[-2], table[-1]
        x_low = combine(x, *history, low_row, None, None, None)
        x_high = combine(x, *history, high_row, None, None, None)
        delta = torch.clamp_min(torch.maximum(x_low.abs(), x_prev.abs()) * settings.rtol, settings.atol)
        error = float(torch.linalg.vector_norm((x_low - x_high) / delta) / norm_scale)  # the host sync

        info["steps"] += 1
        info["nfe"] += order
        if not math.isfinite(error):
            info["n_reject"] += 1
            _report_stop(options.nonfinite, latents, x, last, info, sigma, math.exp(-lam_down), error,
                         stacklevel + 1)
            return x_high.to(latents.dtype), info
        accept = controller.propose(error)
        if accept:
            x_prev = x_low
            x = x_high
            if noise_std > 0:
                x = combine(x_high, None, None, None, None, noise_row, *_noise(x_high, info["n_accept"], seeds,
                                                                                randn_like, noise_sampler, sigma,
                                                                                sigma_next, state_dtype))
                last = (sigma, sigma_next)
            lam = lam_next
            info["n_accept"] += 1
        else:
            info["n_reject"] += 1
        if callback is not None:
            reached = math.exp(-lam)
            callback({"x": x, "i": info["steps"] - 1, "sigma": reached, "sigma_hat": reached, "t": lam, "t_up": lam,
                      "denoised": denoised[0], "error": error, "h": controller.h, "accepted": accept, **info})
    if last is not None and options.nonfinite != "ignore" and not bool(torch.isfinite(x).all()):
        _report(options.nonfinite, f"non-finite values (NaN or inf) in solver='dpm_adaptive''s state after the noise "
                f"of its last steps (the last from sigma {last[0]:.6g} to {last[1]:.6g}); check the noise "
                f"(randn_like or noise_sampler)", stacklevel + 1)
    return x.to(latents.dtype), info


def _noise(x, k: int, seeds, randn_like, noise_sampler, sigma: float, sigma_next: float, state_dtype):
    """combine's (seeds, offset, noise) for the noise after the k-th accepted step."""
    if randn_like is not None:
        return None, None, check_noise(randn_like(x), x).contiguous()
    if noise_sampler is not None:
        level = lambda value: torch.tensor(value, dtype=state_dtype, device=x.device)  # noqa: E731
        drawn = noise_sampler(level(sigma), level(sigma_next))
        return None, None, check_output("noise_sampler", drawn, x, "noise_sampler(sigma, sigma_next)").contiguous()
    if k >= MAX_STEPS:
        raise RuntimeError(f"solver='dpm_adaptive': more than {MAX_STEPS} accepted steps, beyond its noise stream")
    return seeds, torch.tensor(ADAPTIVE_OFFSET + k, dtype=torch.int64, device=x.device), None


def _report_stop(nonfinite: str, latents, x, last, info: dict, sigma: float, sigma_to: float, error: float,
                 stacklevel: int) -> None:
    """A non-finite error norm: no step size can follow, so the loop stops; say why, per `nonfinite`. An accepted
    state passed a finite error, so a non-finite state x at the attempt's start comes from the latents (no step
    accepted yet) or from the noise added after the last accepted step; otherwise the net's output is the cause."""
    if check_nonfinite(nonfinite) == "ignore":
        return
    if info["n_accept"] == 0 and not bool(torch.isfinite(latents).all()):
        message = ("non-finite values (NaN or inf) were already in the latents given to the sampler, before its "
                   "first step, so the network is not the cause; check how they were made")
    elif last is not None and not bool(torch.isfinite(x).all()):
        message = (f"non-finite values (NaN or inf) in solver='dpm_adaptive''s state after the noise of its accepted "
                   f"step from sigma {last[0]:.6g} to {last[1]:.6g}; sampling stopped there. Check the noise "
                   f"(randn_like or noise_sampler)")
    else:
        accepted = f"{info['n_accept']} accepted step{'' if info['n_accept'] == 1 else 's'}"
        message = (f"non-finite values (NaN or inf) in solver='dpm_adaptive''s attempt {info['steps'] - 1} (after "
                   f"{accepted}), from sigma {sigma:.6g} to {sigma_to:.6g}: its error norm is "
                   f"{error}, so no step size can follow and sampling stopped there, returning that attempt's state; "
                   f"check the net's output at those noise levels")
    _report(nonfinite, message, stacklevel + 1)


def _report(nonfinite: str, message: str, stacklevel: int) -> None:
    if nonfinite == "raise":
        raise FloatingPointError(message)
    if nonfinite == "warn":
        warnings.warn(message, RuntimeWarning, stacklevel=stacklevel + 1)


__all__ = ["AdaptiveSettings", "StepSizeController", "attempt", "run_adaptive", "sample_dpm_adaptive"]
